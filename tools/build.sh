#!/usr/bin/env bash
# Configures and builds FluxAttn into ${BUILD_DIR:-build} (${BUILD_TYPE:-Release}) with Ninja.
# CUDA is used when nvcc is found (FLUXATTN_CUDA=AUTO); pass -DFLUXATTN_CUDA=OFF to skip it.
# JOBS limits parallelism (default: all cores). Extra arguments go to CMake.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" "$@" >/dev/null
cmake --build "$build" -j "${JOBS:-$(nproc)}"
