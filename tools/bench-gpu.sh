#!/usr/bin/env bash
# Runs on the GPU machine: bench_cuda from a bundle (tools/bundle-cuda-kernels.sh), then the torch
# peers (tools/bench_gpu_peers.py) on the same GPU, and writes both JSON files into OUTDIR.
#   tools/bench-gpu.sh BUNDLE OUTDIR [bench_cuda args]
set -uo pipefail
bundle="$(cd "${1:?usage: bench-gpu.sh BUNDLE OUTDIR}" && pwd)"
out="${2:?usage: bench-gpu.sh BUNDLE OUTDIR}"
shift 2
mkdir -p "$out"
export LD_LIBRARY_PATH="$bundle/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
status=0
"$bundle/bench_cuda" --json "$out/bench_cuda.json" "$@" 2>&1 | tee "$out/bench_cuda.txt" || status=1
PYTHONUNBUFFERED=1 python3 "$bundle/bench_gpu_peers.py" --json "$out/peers.json" 2>&1 |
  tee "$out/peers.txt" || status=1
exit "$status"
