// The model's element-wise and row kernels in float32 (kernels::cuda::f32): the same operations
// and signatures as the bf16 ones of model_ops.cu, every tensor f32 and nothing rounded between
// steps, for the model's f32 compute (the reference-precision path, checked against the CPU).
// Plain scalar loops: correctness first, speed is the bf16 path's business.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "cuda_check.cuh"
#include "fluxattn/kernels/cuda_model_ops.h"
#include "pdl.cuh"

namespace fluxattn::kernels::cuda::f32 {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 132 * 32;

unsigned BlocksFor(int64_t work, int per_block = kThreads) {
  return static_cast<unsigned>(
      std::clamp<int64_t>((work + per_block - 1) / per_block, 1, kMaxBlocks));
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffff, v, off);
  return v;
}

// One warp per output row r (source row q_indptr[r + 1] - 1 when given). kAdd: residual[r] +=
// x[r] first.
template <bool kAdd>
__global__ void RmsNormKernel(float* residual, const float* x, const int32_t* q_indptr,
                              const float* weight, float* y, int64_t rows, int32_t dim, float eps,
                              float weight_offset) {
  PdlLaunchDependents();
  PdlWait();
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32; r < rows;
       r += warps) {
    const int64_t src_row = q_indptr != nullptr ? q_indptr[r + 1] - 1 : r;
    float* res = kAdd ? residual + r * dim : nullptr;
    const float* in = kAdd ? res : x + src_row * dim;
    float ss = 0.f;
    for (int c = lane; c < dim; c += 32) {
      float f = in[c];
      if constexpr (kAdd) {
        f += x[r * dim + c];
        res[c] = f;
      }
      ss = fmaf(f, f, ss);
    }
    ss = WarpSum(ss);
    const float inv = rsqrtf(ss / static_cast<float>(dim) + eps);
    __syncwarp();
    for (int c = lane; c < dim; c += 32) y[r * dim + c] = in[c] * inv * (weight_offset + weight[c]);
  }
}

// One warp per (row, head) of qkv [rows, (hq + 2 hkv) * d]: as the bf16 SplitQkvKernel, in f32.
__global__ void SplitQkvKernel(const float* qkv, int64_t rows, int32_t hq, int32_t hkv, int32_t d,
                               int32_t half, const float* q_norm, const float* k_norm, float eps,
                               const int32_t* positions, const float* inv_freq, float factor,
                               float* q_pre, float* q, float* k, float* v) {
  PdlLaunchDependents();
  PdlWait();
  const int lane = threadIdx.x % 32;
  const int32_t heads = hq + 2 * hkv;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t w = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32;
       w < rows * heads; w += warps) {
    const int64_t r = w / heads;
    const int32_t h = static_cast<int32_t>(w - r * heads);
    const float* src = qkv + w * d;
    if (h >= hq + hkv) {
      float* dst = v + (r * hkv + (h - hq - hkv)) * d;
      for (int32_t c = lane; c < d; c += 32) dst[c] = src[c];
      continue;
    }
    const bool is_q = h < hq;
    const float* norm = is_q ? q_norm : k_norm;
    float* out = is_q ? q + (r * hq + h) * d : k + (r * hkv + (h - hq)) * d;
    float scale = 1.f;
    if (norm != nullptr) {
      float ss = 0.f;
      for (int32_t c = lane; c < d; c += 32) ss = fmaf(src[c], src[c], ss);
      scale = rsqrtf(WarpSum(ss) / static_cast<float>(d) + eps);
    }
    float* pre = is_q ? q_pre + (r * hq + h) * d : nullptr;
    for (int32_t c = lane; c < d; c += 32) {
      const float x = norm != nullptr ? src[c] * scale * norm[c] : src[c];
      out[c] = x;
      if (pre != nullptr) pre[c] = x;
    }
    __syncwarp();
    const float pos = static_cast<float>(positions[r]);
    for (int32_t j = lane; j < half; j += 32) {
      float sn, cs;
      sincosf(pos * inv_freq[j], &sn, &cs);
      cs *= factor;
      sn *= factor;
      const float x1 = out[j], x2 = out[j + half];
      out[j] = x1 * cs - x2 * sn;
      out[j + half] = x2 * cs + x1 * sn;
    }
    __syncwarp();
  }
}

__global__ void SwiGluKernel(const float* gate, const float* up, int64_t stride, float* out,
                             int64_t rows, int32_t cols) {
  PdlLaunchDependents();
  PdlWait();
  const int64_t total = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    const float g = gate[r * stride + c];
    out[i] = g / (1.f + expf(-g)) * up[r * stride + c];
  }
}

__global__ void EmbeddingKernel(const int32_t* ids, int64_t n, const float* table, int64_t vocab,
                                int32_t hidden, float* out, int32_t* error_flag) {
  PdlLaunchDependents();
  PdlWait();
  for (int64_t t = blockIdx.x; t < n; t += gridDim.x) {
    const int32_t id = ids[t];
    const bool ok = id >= 0 && id < vocab;
    if (!ok && threadIdx.x == 0 && error_flag != nullptr) *error_flag = 1;
    const float* src = table + static_cast<int64_t>(ok ? id : 0) * hidden;
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) out[t * hidden + c] = ok ? src[c] : 0.f;
  }
}

__global__ void AddKernel(const float* a, const float* b, float* y, int64_t n) {
  PdlLaunchDependents();
  PdlWait();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] = a[i] + b[i];
  }
}

__global__ void AddBiasKernel(float* y, const float* bias, int64_t rows, int32_t cols,
                              int64_t row_stride) {
  PdlLaunchDependents();
  PdlWait();
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols;
    const int32_t c = static_cast<int32_t>(i - r * cols);
    y[r * row_stride + c] += bias[c];
  }
}

__global__ void CopyColumnsKernel(const float* src, int64_t rows, int32_t src_cols, float* dst,
                                  int32_t dst_cols) {
  PdlLaunchDependents();
  PdlWait();
  const int64_t n = rows * dst_cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / dst_cols;
    const int32_t c = static_cast<int32_t>(i - r * dst_cols);
    dst[i] = c < src_cols ? src[r * src_cols + c] : 0.f;
  }
}

absl::Status CheckRows(const char* where, int64_t rows, int32_t dim) {
  if (rows < 0 || dim <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, " (f32): rows / dim: expected >= 0 / > 0, found ", rows, " / ", dim));
  }
  return absl::OkStatus();
}

const float* F(const void* p) { return static_cast<const float*>(p); }
float* F(void* p) { return static_cast<float*>(p); }

}  // namespace

absl::Status RmsNorm(const void* x, const void* weight, void* y, int64_t rows, int32_t dim,
                     float eps, float weight_offset, void* stream) {
  FLUXATTN_RETURN_IF_ERROR(CheckRows("RmsNorm", rows, dim));
  if (rows == 0) return absl::OkStatus();
  FLUXATTN_RETURN_IF_CUDA(
      LaunchPdl(RmsNormKernel<false>, BlocksFor(rows, kThreads / 32), kThreads, 0, AsStream(stream),
                nullptr, F(x), nullptr, F(weight), F(y), rows, dim, eps, weight_offset),
      "RmsNorm (f32)", "kernel launch");
  return LaunchStatus("RmsNorm (f32)");
}

absl::Status AddRmsNorm(void* residual, const void* x, const void* weight, void* y, int64_t rows,
                        int32_t dim, float eps, float weight_offset, void* stream) {
  FLUXATTN_RETURN_IF_ERROR(CheckRows("AddRmsNorm", rows, dim));
  if (rows == 0) return absl::OkStatus();
  FLUXATTN_RETURN_IF_CUDA(
      LaunchPdl(RmsNormKernel<true>, BlocksFor(rows, kThreads / 32), kThreads, 0, AsStream(stream),
                F(residual), F(x), nullptr, F(weight), F(y), rows, dim, eps, weight_offset),
      "AddRmsNorm (f32)", "kernel launch");
  return LaunchStatus("AddRmsNorm (f32)");
}

absl::Status RmsNormLastRows(const void* x, const int32_t* q_indptr, int32_t num_seqs,
                             const void* weight, void* y, int32_t dim, float eps,
                             float weight_offset, void* stream) {
  FLUXATTN_RETURN_IF_ERROR(CheckRows("RmsNormLastRows", num_seqs, dim));
  if (num_seqs == 0) return absl::OkStatus();
  FLUXATTN_RETURN_IF_CUDA(LaunchPdl(RmsNormKernel<false>, BlocksFor(num_seqs, kThreads / 32),
                                    kThreads, 0, AsStream(stream), nullptr, F(x), q_indptr,
                                    F(weight), F(y), int64_t{num_seqs}, dim, eps, weight_offset),
                          "RmsNormLastRows (f32)", "kernel launch");
  return LaunchStatus("RmsNormLastRows (f32)");
}

absl::Status SplitQkvNormRope(const void* qkv, int64_t rows, int32_t num_q_heads,
                              int32_t num_kv_heads, int32_t head_dim, int32_t rotary_dim,
                              const void* q_norm, const void* k_norm, float eps,
                              const int32_t* positions, const float* inv_freq,
                              float attention_factor, void* q_pre, void* q, void* k, void* v,
                              void* stream) {
  if (rows < 0 || num_q_heads <= 0 || num_kv_heads <= 0 || head_dim <= 0 || rotary_dim <= 0 ||
      rotary_dim > head_dim || rotary_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SplitQkvNormRope (f32): rows / heads / head_dim / rotary_dim: expected >= 0 / > 0 / > 0 / "
        "even and <= head_dim, found ",
        rows, " / ", num_q_heads, "+", num_kv_heads, " / ", head_dim, " / ", rotary_dim));
  }
  if (rows == 0) return absl::OkStatus();
  const int64_t warps = rows * (num_q_heads + 2 * num_kv_heads);
  FLUXATTN_RETURN_IF_CUDA(
      LaunchPdl(SplitQkvKernel, BlocksFor(warps, kThreads / 32), kThreads, 0, AsStream(stream),
                F(qkv), rows, num_q_heads, num_kv_heads, head_dim, rotary_dim / 2, F(q_norm),
                F(k_norm), eps, positions, inv_freq, attention_factor, F(q_pre), F(q), F(k), F(v)),
      "SplitQkvNormRope (f32)", "kernel launch");
  return LaunchStatus("SplitQkvNormRope (f32)");
}

absl::Status SwiGlu(const void* gate, const void* up, int64_t in_row_stride, void* out,
                    int64_t rows, int32_t cols, void* stream) {
  FLUXATTN_RETURN_IF_ERROR(CheckRows("SwiGlu", rows, cols));
  if (rows == 0) return absl::OkStatus();
  FLUXATTN_RETURN_IF_CUDA(
      LaunchPdl(SwiGluKernel, BlocksFor(rows * cols), kThreads, 0, AsStream(stream), F(gate), F(up),
                in_row_stride, F(out), rows, cols),
      "SwiGlu (f32)", "kernel launch");
  return LaunchStatus("SwiGlu (f32)");
}

absl::Status EmbeddingGather(const int32_t* ids, int64_t num_ids, const void* table, int64_t vocab,
                             int32_t hidden, void* out, int32_t* maybe_error_flag, void* stream) {
  if (num_ids < 0 || vocab <= 0 || hidden <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("EmbeddingGather (f32): ids / vocab / hidden: expected >= 0 / > 0 / > 0, "
                     "found ",
                     num_ids, " / ", vocab, " / ", hidden));
  }
  if (num_ids == 0) return absl::OkStatus();
  FLUXATTN_RETURN_IF_CUDA(
      LaunchPdl(EmbeddingKernel, static_cast<unsigned>(std::min<int64_t>(num_ids, kMaxBlocks)),
                kThreads, 0, AsStream(stream), ids, num_ids, F(table), vocab, hidden, F(out),
                maybe_error_flag),
      "EmbeddingGather (f32)", "kernel launch");
  return LaunchStatus("EmbeddingGather (f32)");
}

absl::Status Add(const void* a, const void* b, void* y, int64_t n, void* stream) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("Add (f32): n: found ", n));
  if (n == 0) return absl::OkStatus();
  FLUXATTN_RETURN_IF_CUDA(
      LaunchPdl(AddKernel, BlocksFor(n), kThreads, 0, AsStream(stream), F(a), F(b), F(y), n),
      "Add (f32)", "kernel launch");
  return LaunchStatus("Add (f32)");
}

absl::Status AddBias(void* y, const void* bias, int64_t rows, int32_t cols, int64_t row_stride,
                     void* stream) {
  FLUXATTN_RETURN_IF_ERROR(CheckRows("AddBias", rows, cols));
  if (rows == 0) return absl::OkStatus();
  FLUXATTN_RETURN_IF_CUDA(LaunchPdl(AddBiasKernel, BlocksFor(rows * cols), kThreads, 0,
                                    AsStream(stream), F(y), F(bias), rows, cols, row_stride),
                          "AddBias (f32)", "kernel launch");
  return LaunchStatus("AddBias (f32)");
}

absl::Status CopyColumns(const void* src, int64_t rows, int32_t src_cols, void* dst,
                         int32_t dst_cols, void* stream) {
  FLUXATTN_RETURN_IF_ERROR(CheckRows("CopyColumns", rows, dst_cols));
  if (src_cols <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("CopyColumns (f32): src_cols: expected > 0, found ", src_cols));
  }
  if (rows == 0) return absl::OkStatus();
  FLUXATTN_RETURN_IF_CUDA(LaunchPdl(CopyColumnsKernel, BlocksFor(rows * dst_cols), kThreads, 0,
                                    AsStream(stream), F(src), rows, src_cols, F(dst), dst_cols),
                          "CopyColumns (f32)", "kernel launch");
  return LaunchStatus("CopyColumns (f32)");
}

}  // namespace fluxattn::kernels::cuda::f32
