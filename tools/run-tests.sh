#!/usr/bin/env bash
# Everything needed to go from a fresh Debian machine to a full test run: installs the build
# dependencies, builds every target (Release; CUDA code too when nvcc is present) and runs every
# test, then the SDK path (tools/test-sdk.sh: install, out-of-tree examples, check-plugin) and the
# Python package (tools/test-python.sh: wheel built with pip, pytest from outside the tree). GPU
# tests skip themselves where no GPU is visible.
#   BUILD_DIR (default build/), JOBS (default: all cores) are honoured; FLUXATTN_CI_HARDENING=0
#   skips the sanitizer and fuzz stages, FLUXATTN_FUZZ_SECONDS (default 30) is the time per target.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
jobs="${JOBS:-$(nproc)}"
"$root/tools/install-deps.sh"
# Formatting first: it takes seconds and says exactly which files to fix.
"$root/tools/check-format.sh"
BUILD_DIR="$build" JOBS="$jobs" "$root/tools/build.sh"
ctest --test-dir "$build" --output-on-failure -j "$jobs" --timeout 600
# Install, build the out-of-tree examples against the install, check and load them.
BUILD_DIR="$build" JOBS="$jobs" "$root/tools/test-sdk.sh"
# The `fluxattn` Python package: built with pip (reusing the objects above through ccache),
# installed from its wheel, tested with pytest against the CLI (docs/python.md).
BUILD_DIR="$build" JOBS="$jobs" "$root/tools/test-python.sh"
# Hardening (docs/hardening.md): the input-facing suites under ASan + UBSan, then every fuzz
# target for FLUXATTN_FUZZ_SECONDS each; FLUXATTN_CI_HARDENING=0 skips both.
if [ "${FLUXATTN_CI_HARDENING:-1}" != "0" ]; then
  JOBS="$jobs" "$root/tools/run-sanitizers.sh"
  JOBS="$jobs" "$root/tools/run-fuzz.sh" --all "${FLUXATTN_FUZZ_SECONDS:-30}"
fi
