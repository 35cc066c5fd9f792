#!/usr/bin/env bash
# Regenerates docs/configuration.md from the built `fluxattn` and the bundled plugins next to it
# (tests/sdk fails while the committed file differs). BUILD_DIR (default build/) is honoured.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
env -u FLUXATTN_PLUGIN_PATH "$build/bin/fluxattn" plugins --markdown > "$root/docs/configuration.md"
echo "wrote $root/docs/configuration.md"
