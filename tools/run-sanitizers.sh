#!/usr/bin/env bash
# Builds the whole test suite with AddressSanitizer + UndefinedBehaviorSanitizer (CUDA off,
# -O1 -g) into ${ASAN_BUILD_DIR:-build-asan} and runs it with CTest. Any memory error, leak or
# undefined behaviour aborts the test that hit it.
#   JOBS (default: all cores) limits parallelism; SANITIZER_TEST_TIMEOUT (default 300) is the
#   per-test limit in seconds; SANITIZER_EXCLUDE (CTest label regex, default "cuda") skips suites.
#   Extra arguments go to CTest (e.g. -R tokenizer).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${ASAN_BUILD_DIR:-$root/build-asan}"
jobs="${JOBS:-$(nproc)}"

start=$SECONDS
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DFLUXATTN_SANITIZE=ON -DFLUXATTN_CUDA=OFF \
  -DFLUXATTN_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build "$build" -j "$jobs"
echo "run-sanitizers: build took $((SECONDS - start)) s"

# Plugins are dlopen'ed and unloaded; keep their symbols for reports. Leaks fail the test.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:fast_unwind_on_malloc=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
start=$SECONDS
status=0
ctest --test-dir "$build" --output-on-failure -j "$jobs" \
  --timeout "${SANITIZER_TEST_TIMEOUT:-300}" -LE "${SANITIZER_EXCLUDE:-cuda}" "$@" || status=$?
echo "run-sanitizers: tests took $((SECONDS - start)) s"
exit $status
