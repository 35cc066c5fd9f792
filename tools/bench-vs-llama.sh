#!/usr/bin/env bash
# FluxAttn's CPU path against llama.cpp on the same machine, in one run (docs/benchmarks.md).
#
# 1. Builds llama.cpp's `llama-bench` (only that target, native flags) from the llama-cpp-python
#    source distribution on PyPI, which vendors llama.cpp; nothing of it is kept in the repo.
# 2. Writes one random-weight Hugging Face checkpoint of the Qwen3-0.6B shape (hidden 1024, 28
#    layers, 16/8 heads, head dim 128, intermediate 3072, vocabulary 151936, tied embeddings) in
#    float32 and bfloat16, and the same weights as GGUF through the vendored gguf-py package
#    (tools/make_bench_checkpoint.py; no torch needed).
# 3. Runs `llama-bench` and `bench_model` interleaved, ROUNDS times: prefill tok/s at PROMPTS
#    tokens and decode tok/s over DECODE tokens, at each of THREADS, f32 and bf16; then a GEMM
#    of the prefill's shape through numpy's BLAS (OpenBLAS) and through FluxAttn's kernel, and
#    the machine's memory read bandwidth (`bench_model --read-bandwidth`), decode's ceiling.
# 4. Prints one markdown table of medians (and the spread over rounds) and writes the raw results
#    to $WORK/results.json.
#
# Environment: WORK (default build/bench-llama), BUILD_DIR (FluxAttn build, default build),
# ROUNDS (2), REPEATS (3, per point and program), PROMPTS (128,512,2048), DECODE (32),
# THREADS (1,2), DTYPES (f32,bf16), LLAMA_CPP_PYTHON_VERSION (0.3.36), JOBS (2). bf16 runs
# FluxAttn with float32 activations and with bfloat16 ones (`--activations bf16`).
# DECODE_ONLY=1 measures decode alone, as close to llama-bench's tg as FluxAttn gets: llama-bench
# with no prompt (-p 0), bench_model after a 16-token prompt, no GEMM rows.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${WORK:-$root/build/bench-llama}"
build="${BUILD_DIR:-$root/build}"
rounds="${ROUNDS:-2}"
repeats="${REPEATS:-3}"
prompts="${PROMPTS:-128,512,2048}"
decode="${DECODE:-32}"
threads="${THREADS:-1,2}"
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
jobs="${JOBS:-2}"
dtypes="$(echo "${DTYPES:-f32,bf16}" | tr , ' ')"
decode_only="${DECODE_ONLY:-0}"
llama_prompts="$prompts"
flux_contexts="$prompts"
if [ "$decode_only" = 1 ]; then
  llama_prompts=0
  flux_contexts=16
fi
mkdir -p "$work"

# Python with numpy (and gguf-py's other dependencies) in a venv of its own.
if [ ! -x "$work/venv/bin/python" ]; then
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install -q numpy pyyaml tqdm requests
fi
py="$work/venv/bin/python"

# llama.cpp from the sdist.
src="$work/llama_cpp_python-$version/vendor/llama.cpp"
if [ ! -d "$src" ]; then
  "$work/venv/bin/pip" download -q --no-deps --no-binary :all: "llama-cpp-python==$version" \
    -d "$work"
  tar -xzf "$work/llama_cpp_python-$version.tar.gz" -C "$work"
fi
llama_bench="$work/llama-build/bin/llama-bench"
if [ ! -x "$llama_bench" ]; then
  cmake -S "$src" -B "$work/llama-build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF >/dev/null
  cmake --build "$work/llama-build" --target llama-bench -j "$jobs"
fi

# FluxAttn's benchmark.
cmake --build "$build" --target bench_model fluxattn_full -j "$jobs" >/dev/null
bench_model="$build/bin/bench_model"

# The checkpoints (same random weights in all four).
if [ ! -f "$work/ckpt/done" ]; then
  PYTHONPATH="$src/gguf-py" "$py" "$root/tools/make_bench_checkpoint.py" --out "$work/ckpt"
  touch "$work/ckpt/done"
fi

# The JSON lines of standard input, each with "program" and "round" added.
tag_lines() {
  "$py" -c 'import json,sys
for line in sys.stdin:
    if line.startswith("{"):
        r = json.loads(line); r["program"] = sys.argv[1]; r["round"] = int(sys.argv[2])
        print(json.dumps(r))' "$1" "$2"
}

results="$work/results.jsonl"
: >"$results"
IFS=, read -r -a thread_list <<<"$threads"
for round in $(seq 1 "$rounds"); do
  for dtype in $dtypes; do
    for t in "${thread_list[@]}"; do
      echo "round $round: $dtype, $t threads: llama-bench" >&2
      "$llama_bench" -m "$work/ckpt/gguf-$dtype.gguf" -p "$llama_prompts" -n "$decode" -t "$t" \
        -r "$repeats" -o jsonl |
        "$py" -c 'import json,sys
for line in sys.stdin:
    line = line.strip()
    if line.startswith("{"):
        r = json.loads(line); r["program"] = "llama.cpp"; r["round"] = '"$round"'
        r["dtype"] = "'"$dtype"'"; print(json.dumps(r))' >>"$results"
      # bf16 checkpoints twice: float32 activations (the default) and bfloat16 ones
      # (`[model] dtype = "bf16"`, llama.cpp's numerics for bf16 weights).
      acts=f32
      [ "$dtype" = bf16 ] && acts="f32 bf16"
      for act in $acts; do
        echo "round $round: $dtype, $t threads: bench_model ($act activations)" >&2
        "$bench_model" --model "$work/ckpt/hf-$dtype" --contexts "$flux_contexts" --threads "$t" \
          --decode-tokens "$decode" --repeats "$repeats" --activations "$act" \
          --json "$work/bench_model.json" >/dev/null
        "$py" -c 'import json,sys
d = json.load(open(sys.argv[1]))
d["program"] = "fluxattn"; d["round"] = '"$round"'; d["dtype"] = "'"$dtype"'"
print(json.dumps(d))' "$work/bench_model.json" >>"$results"
      done
    done
  done
  # The machine's read bandwidth in this round: the ceiling of decode, which streams the weights.
  for t in "${thread_list[@]}"; do
    "$bench_model" --read-bandwidth 1024 --threads "$t" --repeats 5 |
      tag_lines read-bandwidth "$round" >>"$results"
  done
  # Prefill GEMM (512 tokens x 1024 -> 3072, the MLP's up projection): numpy's BLAS vs FluxAttn.
  [ "$decode_only" = 1 ] && continue
  for t in "${thread_list[@]}"; do
    OPENBLAS_NUM_THREADS="$t" OMP_NUM_THREADS="$t" "$py" -c 'import json,time,numpy as np
m, n, k = 512, 3072, 1024
a = np.random.rand(m, k).astype(np.float32); b = np.random.rand(n, k).astype(np.float32)
best = []
for _ in range(7):
    t0 = time.perf_counter(); a @ b.T; best.append(time.perf_counter() - t0)
best.sort()
print(json.dumps({"program": "numpy-blas", "round": '"$round"', "threads": '"$t"',
                  "m": m, "n": n, "k": k, "gflops": 2 * m * n * k / best[len(best) // 2] / 1e9}))' \
      >>"$results"
    for act in f32 bf16; do
      "$bench_model" --gemm 512,3072,1024 --threads "$t" --repeats 7 --activations "$act" |
        tag_lines fluxattn-gemm "$round" >>"$results"
    done
  done
done
cp "$results" "$work/results.json"
"$py" "$root/tools/make_bench_checkpoint.py" --summarize "$results"
