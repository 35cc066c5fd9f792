#!/usr/bin/env bash
# The main job on the bundled defaults, from a fresh Debian machine: installs the build
# dependencies, builds, lists every plugin found, then runs the engine on the bundled demo
# config (configs/demo.toml, a small fixture model) when that config and the `generate` command
# are part of the build.
# Finally it compares FA-only, a static hybrid, a random hybrid and the learned Flux router on
# the bundled demo model (models/demo/configs/) with `fluxattn compare`: accuracy on the built-in
# long-context tasks, SA ratio, speed-ups and KV memory in one table, plus an SVG.
#   DEMO_CONFIG (default configs/demo.toml), DEMO_ARGS (extra `generate` arguments),
#   COMPARE_ARGS (default: --lengths 1k,2k --samples 2), BUILD_DIR, JOBS are honoured.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
"$root/tools/install-deps.sh"
BUILD_DIR="$build" "$root/tools/build.sh"
fluxattn="$build/bin/fluxattn"

echo "== fluxattn plugins"
"$fluxattn" plugins

demo_config="${DEMO_CONFIG:-$root/configs/demo.toml}"
if [ -f "$demo_config" ] && "$fluxattn" generate --help >/dev/null 2>&1; then
  echo "== fluxattn generate --config $demo_config ${DEMO_ARGS:-}"
  # shellcheck disable=SC2086  # DEMO_ARGS is a list of arguments
  "$fluxattn" generate --config "$demo_config" ${DEMO_ARGS:-}
else
  echo "run-demo: no demo model run yet (needs $demo_config and the 'generate' command)"
fi

compare_configs=("$root"/models/demo/configs/{fa_only,static_hybrid,random_hybrid,flux_router}.toml)
if [ -f "${compare_configs[0]}" ] && "$fluxattn" compare --help >/dev/null 2>&1; then
  echo "== fluxattn compare (bundled demo model: FA-only, static, random, learned router)"
  # shellcheck disable=SC2086  # COMPARE_ARGS is a list of arguments
  "$fluxattn" compare "${compare_configs[@]}" ${COMPARE_ARGS:---lengths 1k,2k --samples 2} \
    --out "$build/compare-demo"
fi
