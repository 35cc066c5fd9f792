#!/usr/bin/env bash
# Runs the CUDA kernel suites on a GPU machine from a bundle made by tools/bundle-cuda-kernels.sh
# and fails if they failed or skipped (a skipped GPU test proves nothing there).
#   tools/test-gpu-kernels.sh BUNDLE [gtest args]
set -uo pipefail
bundle="$(cd "${1:?usage: test-gpu-kernels.sh BUNDLE}" && pwd)"
shift
export LD_LIBRARY_PATH="$bundle/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
log="$(mktemp)"
"$bundle/fluxattn_cuda_kernel_tests" --gtest_color=no "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if grep -q "SKIPPED" "$log"; then
  echo "test-gpu-kernels: error: expected the CUDA kernel tests to run on this machine, found them skipped" >&2
  status=1
fi
echo "test-gpu-kernels: $([ "$status" -eq 0 ] && echo PASSED || echo FAILED)"
exit "$status"
