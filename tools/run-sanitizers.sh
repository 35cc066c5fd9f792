#!/usr/bin/env bash
# Builds the whole test suite with AddressSanitizer + UndefinedBehaviorSanitizer (CUDA off,
# -O1 -g) into ${ASAN_BUILD_DIR:-build-asan} and runs it with CTest. Any memory error, leak or
# undefined behaviour aborts the test that hit it.
# To fit CI, only the suites that read user input are built and run by default: core (config,
# plugin loader), tokenizer, models (safetensors, config.json, engine), hardening (malformed
# inputs, long generation) and the fuzz corpus replays.
#   SANITIZER_LABELS (CTest label regex; "" = every suite), SANITIZER_TARGETS (regex of the
#   targets to build; "" = all), JOBS (default: all cores), SANITIZER_TEST_TIMEOUT (default 300 s
#   per test).
#   SANITIZER_EXCLUDE (CTest -E regex; default: the fixture comparison on 6000- and 8000-token
#   prompts, minutes of float32 prefill under the sanitizers, through the same code the shorter
#   fixture prompts of the other PluginEngine tests cover).
#   Extra arguments go to CTest (e.g. -R tokenizer).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${ASAN_BUILD_DIR:-$root/build-asan}"
jobs="${JOBS:-$(nproc)}"

start=$SECONDS
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DFLUXATTN_SANITIZE=ON -DFLUXATTN_CUDA=OFF \
  -DFLUXATTN_BUILD_BENCHMARKS=OFF >/dev/null
labels="${SANITIZER_LABELS-core|tokenizer|models|hardening|fuzz}"
# The test executables of those suites (their dependencies bring the plugins and the CLI).
default_targets='^(fluxattn_core_tests|tokenizer_test|models_.*|fuzz_replay_.*|hardening_.*)$'
pattern="${SANITIZER_TARGETS-$default_targets}"
targets=()
if [ -n "$pattern" ]; then
  mapfile -t targets < <(cmake --build "$build" -- -t targets all | sed -n 's/: .*//p' |
    grep -E "$pattern" || true)
fi
cmake --build "$build" -j "$jobs" ${targets[@]:+--target "${targets[@]}"}
echo "run-sanitizers: build took $((SECONDS - start)) s"

# Plugins are dlopen'ed and unloaded; keep their symbols for reports. Leaks fail the test.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:fast_unwind_on_malloc=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
start=$SECONDS
status=0
exclude="${SANITIZER_EXCLUDE-LongPromptFixturesMatchTransformers}"
ctest --test-dir "$build" --output-on-failure -j "$jobs" \
  --timeout "${SANITIZER_TEST_TIMEOUT:-300}" ${labels:+-L "$labels"} -LE cuda \
  ${exclude:+-E "$exclude"} "$@" || status=$?
echo "run-sanitizers: tests took $((SECONDS - start)) s"
exit $status
