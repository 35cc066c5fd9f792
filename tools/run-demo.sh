#!/usr/bin/env bash
# The main job on the bundled default, from a fresh Debian machine: installs the build
# dependencies, builds, lists every plugin found, generates with the learned Flux router on the
# bundled demo model (models/demo/flux-tiny, a small Qwen3 model with a trained Flux router; see
# docs/demo-model.md) and then compares FA-only, streaming-only, a static hybrid, a random hybrid
# and the learned router on it with `fluxattn compare`: accuracy on the built-in long-context
# tasks, SA ratio, speed-ups and KV memory in one table, plus CSV, JSON and an SVG picture.
#   COMPARE_ARGS (default: --lengths 1k --samples 2 --threads 2), BUILD_DIR, JOBS are honoured.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
"$root/tools/install-deps.sh"
BUILD_DIR="$build" "$root/tools/build.sh"
fluxattn="$build/bin/fluxattn"
configs="$root/models/demo/configs"

echo "== fluxattn plugins"
"$fluxattn" plugins

echo "== fluxattn generate --config models/demo/configs/flux_router.toml"
"$fluxattn" generate --config "$configs/flux_router.toml" --prompt "The passkey is 4127." \
  --max-new-tokens 16 --temperature 0 --ignore-eos --json

echo "== fluxattn compare (FA-only, streaming-only, static hybrid, random hybrid, learned router)"
# shellcheck disable=SC2086  # COMPARE_ARGS is a list of arguments
"$fluxattn" compare "$configs"/{fa_only,streaming_only,static_hybrid,random_hybrid,flux_router}.toml \
  ${COMPARE_ARGS:---lengths 1k --samples 2 --threads 2} --out "$build/compare-demo"
