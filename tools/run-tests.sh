#!/usr/bin/env bash
# Everything needed to go from a fresh Debian machine to a full test run: installs the build
# dependencies, builds every target (Release; CUDA code too when nvcc is present) and runs every
# test, then the SDK path (tools/test-sdk.sh: install, out-of-tree examples, check-plugin). GPU
# tests skip themselves where no GPU is visible.
#   BUILD_DIR (default build/), JOBS (default: all cores) are honoured.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
jobs="${JOBS:-$(nproc)}"
"$root/tools/install-deps.sh"
BUILD_DIR="$build" JOBS="$jobs" "$root/tools/build.sh"
ctest --test-dir "$build" --output-on-failure -j "$jobs" --timeout 600
# Install, build the out-of-tree examples against the install, check and load them.
BUILD_DIR="$build" JOBS="$jobs" "$root/tools/test-sdk.sh"
