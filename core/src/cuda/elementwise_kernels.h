// Launchers of the element-wise CUDA kernels (kept free of Abseil so nvcc sees plain C++).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace fluxattn::cuda_kernels {

cudaError_t LaunchFillF32(float* dst, float value, int64_t n, cudaStream_t stream);
cudaError_t LaunchAxpyF32(float alpha, const float* x, float* y, int64_t n, cudaStream_t stream);

}  // namespace fluxattn::cuda_kernels
