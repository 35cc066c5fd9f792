#!/usr/bin/env bash
# The Python package's stage of tools/run-tests.sh: builds the wheel with pip (scikit-build-core
# over the top-level CMake project, in build-python/ beside the C++ build so that ccache reuses
# its objects), installs it into the venv of tools/python-venv.sh, and runs tests/python with
# pytest from outside the source tree, against the CLI of the C++ build as the oracle.
#   BUILD_DIR (default build/): the C++ build whose bin/fluxattn the tests compare with.
#   JOBS (default: all cores); FLUXATTN_PYTHON_BUILD_DIR (default build-python/).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
py_build="${FLUXATTN_PYTHON_BUILD_DIR:-$root/build-python}"
start=$(date +%s)
python="$("$root/tools/python-venv.sh" "$build/python-venv" | tail -n 1)"
wheels="$build/python-wheels"
rm -rf "$wheels"
# The C++ build's compilers and system plugin folder, so that the compile commands are the same
# and ccache answers them from that build's objects.
cache_value() { sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt" | head -n 1; }
defines=()
for var in CMAKE_C_COMPILER CMAKE_CXX_COMPILER CMAKE_CUDA_COMPILER CMAKE_CUDA_HOST_COMPILER \
  CMAKE_CUDA_ARCHITECTURES FLUXATTN_CUDA; do
  value="$(cache_value "$var")"
  if [ -n "$value" ]; then defines+=(-C "cmake.define.$var=$value"); fi
done
defines+=(-C "cmake.define.FLUXATTN_SYSTEM_PLUGIN_DIR=$(cache_value CMAKE_INSTALL_PREFIX)/$(
  cache_value CMAKE_INSTALL_LIBDIR)/fluxattn/plugins")
# --no-build-isolation: the venv already has the build requirements (no download per build).
CMAKE_BUILD_PARALLEL_LEVEL="${JOBS:-$(nproc)}" "$python" -m pip wheel -q --no-deps \
  --disable-pip-version-check --no-build-isolation -C build-dir="$py_build" "${defines[@]}" \
  -w "$wheels" "$root"
"$python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps \
  "$wheels"/fluxattn-*.whl
built=$(date +%s)
echo "test-python: wheel built and installed in $((built - start)) s"
# From an empty folder, so that `import fluxattn` can only find the installed wheel.
cwd="$(mktemp -d)"
trap 'rm -rf "$cwd"' EXIT
cd "$cwd"
FLUXATTN_CLI="$build/bin/fluxattn" FLUXATTN_SOURCE_DIR="$root" \
  "$python" -m pytest -q -p no:cacheprovider "$root/tests/python"
echo "test-python: $(($(date +%s) - start)) s in all"
