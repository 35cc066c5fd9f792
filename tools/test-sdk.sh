#!/usr/bin/env bash
# The third-party plugin path, end to end: installs the build into a temporary prefix, builds
# both examples/ against that prefix only (find_package(FluxAttn)), installs them next to the
# bundled plugins, runs `fluxattn check-plugin` on each, lists them with `fluxattn plugins`, and
# runs the engine with both loaded from the examples' config when `generate` exists.
#   BUILD_DIR (default build/), JOBS (default: all cores) are honoured; SDK_KEEP=1 keeps the
#   temporary folder.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
jobs="${JOBS:-$(nproc)}"
work="$(mktemp -d "${TMPDIR:-/tmp}/fluxattn-sdk.XXXXXX")"
[ "${SDK_KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"

echo "== cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
fluxattn="$prefix/bin/fluxattn"
unset FLUXATTN_PLUGIN_PATH

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
for example in dilated_window_backend hint_router; do
  echo "== build examples/$example against $prefix"
  cmake -S "$root/examples/$example" -B "$work/$example" "${generator[@]}" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
  cmake --build "$work/$example" -j "$jobs" >/dev/null
done

echo "== fluxattn check-plugin (examples)"
"$fluxattn" check-plugin "$work/dilated_window_backend/libfluxattn_dilated_window.so"
"$fluxattn" check-plugin "$work/dilated_window_backend/libfluxattn_dilated_window.so" \
  --param sink_tokens=1 --param window_tokens=5 --param span_tokens=300 --param stride=7
"$fluxattn" check-plugin "$work/hint_router/libfluxattn_hint.so" --param full_ratio=0.5

echo "== fluxattn plugins --path <example builds>"
listing="$("$fluxattn" plugins --path "$work/dilated_window_backend" --path "$work/hint_router")"
for name in dilated_window hint full streaming; do
  if ! grep -q "^  $name " <<<"$listing"; then
    echo "test-sdk: '$name' missing from:"
    echo "$listing"
    exit 1
  fi
done
if grep -q "^load failures" <<<"$listing"; then echo "$listing"; exit 1; fi

# Installed into FluxAttn's prefix, the plugins are found with no path given.
for example in dilated_window_backend hint_router; do
  cmake --install "$work/$example" --prefix "$prefix" >/dev/null
done
listing="$("$fluxattn" plugins)"
for name in dilated_window hint; do
  if ! grep -q "^  $name .*$prefix/" <<<"$listing"; then
    echo "test-sdk: installed '$name' not found in $prefix:"
    echo "$listing"
    exit 1
  fi
done

if grep -qE '^  generate ' <<<"$("$fluxattn" --help)"; then
  echo "== fluxattn generate with the examples loaded from examples/hint_router/hint_router.toml"
  config="$work/hint_router.toml"
  model="$root/tests/fixtures/models/qwen3_f32"
  sed "s|^path = .*|path = \"$model\"|" "$root/examples/hint_router/hint_router.toml" >"$config"
  out="$("$fluxattn" generate --config "$config" --prompt-ids 1,2,3,4,5,6,7 --max-new-tokens 4 \
    --json)"
  echo "$out"
  # full_ratio = 0.5 routes some layers to each backend; both example plugins did real work.
  for backend in full dilated; do
    if ! grep -q "\"backend\": *\"$backend\"" <<<"$out"; then
      echo "test-sdk: no layer ran on backend '$backend'"
      exit 1
    fi
  done
else
  echo "test-sdk: no 'generate' command in this build; skipped the engine run"
fi
echo "test-sdk: OK"
