#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, with .device-bundle/ (made here by
# tools/bundle-for-device.sh) carried along: prints the GPU, runs the CUDA device test, the core
# tests (loader, config, tensors: the same build as CI, on the target's glibc) and
# `fluxattn plugins` from the bundle. Exit status: non-zero if any of them failed.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bundle="${BUNDLE:-$root/.device-bundle}"
# Copying the folder onto an existing one nests it (.device-bundle/.device-bundle); use the copy.
[ -d "$bundle/.device-bundle/bin" ] && bundle="$bundle/.device-bundle"
if [ ! -x "$bundle/bin/fluxattn_cuda_device_test" ]; then
  echo "device-test: error: expected $bundle/bin/fluxattn_cuda_device_test, found none (run tools/bundle-for-device.sh and carry .device-bundle)" >&2
  exit 2
fi
cuda_lib=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib; do [ -d "$d" ] && cuda_lib="$cuda_lib:$d"; done
export LD_LIBRARY_PATH="$bundle/lib:$bundle/deps$cuda_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export FLUXATTN_FIXTURE_PLUGIN_DIR="$bundle/fixture_plugins"
export FLUXATTN_CLI="$bundle/bin/fluxattn"
cd "$root"
# Extra gtest arguments for the CUDA suites, e.g. GTEST_FILTER=CudaEngine.* in the environment.
GTEST_ARGS=()

status=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
echo "== fluxattn_cuda_device_test"
log="$(mktemp)"
"$bundle/bin/fluxattn_cuda_device_test" --gtest_color=no 2>&1 | tee "$log" || status=1
# A run where the tests skipped would prove nothing on a GPU machine.
if grep -q "SKIPPED" "$log"; then
  echo "device-test: error: expected the CUDA tests to run on this machine, found them skipped" >&2
  status=1
fi
# The kernel and engine suites; the engine tests read the fixtures and plugins of this checkout
# and bundle.
export FLUXATTN_MODEL_FIXTURES="$root/tests/fixtures/models"
export FLUXATTN_PLUGIN_DIR="$bundle/lib/fluxattn/plugins"
export FLUXATTN_DEMO_MODEL="$root/models/demo/flux-tiny"
for suite in fluxattn_cuda_kernel_tests fluxattn_cuda_conformance_tests fluxattn_cuda_engine_tests; do
  [ -x "$bundle/bin/$suite" ] || { echo "device-test: error: expected $bundle/bin/$suite, found none" >&2; status=1; continue; }
  echo "== $suite"
  "$bundle/bin/$suite" --gtest_color=no --gtest_brief=1 "${GTEST_ARGS[@]}" 2>&1 | tee "$log" || status=1
  if grep -q "SKIPPED" "$log"; then
    echo "device-test: error: expected $suite to run on this machine, found tests skipped" >&2
    status=1
  fi
done
# The engine once more with decode batches on the skinny tensor-core GEMM (FLUXATTN_CUDA_SKINNY=1):
# batched requests against the CPU's tokens.
if [ -x "$bundle/bin/fluxattn_cuda_engine_tests" ]; then
  echo "== fluxattn_cuda_engine_tests, FLUXATTN_CUDA_SKINNY=1"
  FLUXATTN_CUDA_SKINNY=1 "$bundle/bin/fluxattn_cuda_engine_tests" --gtest_color=no --gtest_brief=1 \
    --gtest_filter='CudaEngine.HybridBatchMatchesCpu:CudaEngine.StepApiJoinAndCancelMatchesCpu:CudaEngine.FixtureModelsMatchTransformersAndCpu' \
    2>&1 | tee "$log" || status=1
  if grep -q "SKIPPED" "$log"; then
    echo "device-test: error: expected the skinny engine run to run on this machine, found tests skipped" >&2
    status=1
  fi
fi
echo "== fluxattn_core_tests"
"$bundle/bin/fluxattn_core_tests" --gtest_color=no --gtest_brief=1 || status=1
echo "== fluxattn plugins"
"$bundle/bin/fluxattn" plugins || status=1
echo "device-test: $([ $status -eq 0 ] && echo PASSED || echo FAILED)"
exit $status
