// Shared helpers of the CUDA kernel library: error conversion and launch checks.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "fluxattn/kernels/cuda_attention.h"
#include "fluxattn/status.h"

namespace fluxattn::kernels::cuda {

// "RunPrefill: kernel launch: expected success, found invalid argument (cudaErrorInvalidValue)"
inline absl::Status CudaStatus(cudaError_t error, const char* where, const char* what) {
  if (error == cudaSuccess) return absl::OkStatus();
  (void)cudaGetLastError();  // reset, so the next call starts clean
  return absl::InternalError(absl::StrCat(where, ": ", what, ": expected success, found ",
                                          cudaGetErrorString(error), " (", cudaGetErrorName(error),
                                          ")"));
}

// Returns early with a CudaStatus error when `expr` is not cudaSuccess.
#define FLUXATTN_RETURN_IF_CUDA(expr, where, what)                             \
  do {                                                                         \
    const cudaError_t _fa_cuda_err = (expr);                                   \
    if (_fa_cuda_err != cudaSuccess) {                                         \
      return ::fluxattn::kernels::cuda::CudaStatus(_fa_cuda_err, where, what); \
    }                                                                          \
  } while (false)

inline absl::Status LaunchStatus(const char* where) {
  return CudaStatus(cudaGetLastError(), where, "kernel launch");
}

inline cudaStream_t AsStream(void* stream) { return static_cast<cudaStream_t>(stream); }

inline bool IsPowerOfTwo(int64_t x) { return x > 0 && (x & (x - 1)) == 0; }

inline int Log2(int64_t x) {
  int r = 0;
  while ((int64_t{1} << r) < x) ++r;
  return r;
}

constexpr float kLog2e = 1.4426950408889634f;

// head_dim 64/128, GQA ratio, positive finite scale; errors are prefixed with `where`.
absl::Status ValidateAttentionShape(const AttentionShape& shape, const char* where);

}  // namespace fluxattn::kernels::cuda
