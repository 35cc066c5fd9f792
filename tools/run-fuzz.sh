#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz, clang + ASan + UBSan) into ${FUZZ_BUILD_DIR:-build-fuzz}
# and runs them for a bounded time, one at a time, at low priority.
#   tools/run-fuzz.sh TARGET SECONDS     one target (engine_config, tokenizer_json, ...)
#   tools/run-fuzz.sh --all SECONDS      every target, SECONDS each
#   tools/run-fuzz.sh --list             the targets
# The growing corpus lives in <build>/fuzz-corpus/TARGET (seeded from tests/fuzz/corpus/TARGET
# and tests/fuzz/regressions/TARGET); crashes go to <build>/fuzz-artifacts/TARGET/, logs to
# <build>/fuzz-logs/. Exit status: non-zero when a target crashed, leaked, hung or ran out of
# memory. JOBS (default 2) limits build parallelism; FUZZ_ARGS adds libFuzzer flags.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${FUZZ_BUILD_DIR:-$root/build-fuzz}"
fuzz_dir="$root/tests/fuzz"

usage() {
  echo "usage: tools/run-fuzz.sh TARGET SECONDS | --all SECONDS | --list" >&2
  exit 2
}

list_targets() {
  sed -n 's/^set(_fuzz_targets \(.*\))$/\1/p' "$fuzz_dir/CMakeLists.txt" | tr ' ' '\n'
}

[ $# -ge 1 ] || usage
if [ "$1" = "--list" ]; then
  list_targets
  exit 0
fi
[ $# -eq 2 ] || usage
seconds="$2"
[[ "$seconds" =~ ^[0-9]+$ ]] || usage
if [ "$1" = "--all" ]; then
  mapfile -t targets < <(list_targets)
else
  list_targets | grep -qx "$1" || {
    echo "run-fuzz: error: expected one of: $(list_targets | tr '\n' ' '), found '$1'" >&2
    exit 2
  }
  targets=("$1")
fi

for cxx in clang++ clang++-14; do
  command -v "$cxx" >/dev/null && break
done
command -v "$cxx" >/dev/null || {
  echo "run-fuzz: error: expected clang++ (libFuzzer), found none (apt-get install clang)" >&2
  exit 2
}
cc="${cxx/++/}"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DFLUXATTN_FUZZ=ON -DFLUXATTN_CUDA=OFF -DFLUXATTN_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build "$build" -j "${JOBS:-2}" --target "${targets[@]/#/fuzz_}"

mkdir -p "$build/fuzz-logs"
status=0
for t in "${targets[@]}"; do
  corpus="$build/fuzz-corpus/$t"
  artifacts="$build/fuzz-artifacts/$t/"
  log="$build/fuzz-logs/$t.log"
  mkdir -p "$corpus" "$artifacts"
  started=$SECONDS
  seeds=("$fuzz_dir/corpus/$t")
  [ -d "$fuzz_dir/regressions/$t" ] && seeds+=("$fuzz_dir/regressions/$t")
  dict=()
  [ -f "$fuzz_dir/dict/$t.dict" ] && dict=("-dict=$fuzz_dir/dict/$t.dict")
  # -rss_limit_mb also bounds single allocations (malloc_limit_mb defaults to it): a parser
  # that believes a declared size and allocates gigabytes is reported, not tolerated.
  # shellcheck disable=SC2086  # FUZZ_ARGS is a list of flags
  if nice -n 10 "$build/bin/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="$artifacts" "${dict[@]}" \
    ${FUZZ_ARGS:-} "$corpus" "${seeds[@]}" >"$log" 2>&1; then
    result="ok"
  else
    result="FAILED (see $log and $artifacts)"
    status=1
  fi
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  files="$(find "$corpus" -type f | wc -l)"
  echo "fuzz $t: $((SECONDS - started))s, ${runs:-?} inputs, corpus $files files: $result"
  if [ "$result" != "ok" ]; then
    grep -m 5 -E "ERROR|property violated|SUMMARY" "$log" >&2 || tail -20 "$log" >&2
  fi
done
exit $status
