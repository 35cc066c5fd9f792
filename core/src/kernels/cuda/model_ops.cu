// The model's element-wise and row kernels on CUDA: RMSNorm (plain, fused with the residual
// add, last rows only), RoPE from an inv_freq table, SwiGLU, embedding gather, add, and the
// flux router's pooling. bf16 storage (the row kernels also in float32, namespace f32, for the
// model's f32 compute), f32 arithmetic; 16-byte accesses where rows allow.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "cuda_check.cuh"
#include "fluxattn/kernels/cuda_model_ops.h"
#include "pdl.cuh"

namespace fluxattn::kernels::cuda {
namespace {

using bf16 = __nv_bfloat16;

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

__device__ __forceinline__ void Load8(const bf16* p, float* f) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 x = __bfloat1622float2(h[i]);
    f[2 * i] = x.x;
    f[2 * i + 1] = x.y;
  }
}

__device__ __forceinline__ void Store8(bf16* p, const float* f) {
  uint4 raw;
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
  *reinterpret_cast<uint4*>(p) = raw;
}

// The same for eight floats (two 16-byte accesses): the f32 instantiations of the kernels below.
__device__ __forceinline__ void Load8(const float* p, float* f) {
  const float4 a = reinterpret_cast<const float4*>(p)[0];
  const float4 b = reinterpret_cast<const float4*>(p)[1];
  f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}

__device__ __forceinline__ void Store8(float* p, const float* f) {
  reinterpret_cast<float4*>(p)[0] = make_float4(f[0], f[1], f[2], f[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(f[4], f[5], f[6], f[7]);
}

// Element conversions: the kernels are templates over the stored type T (bf16, or float for the
// model's f32 compute), with f32 arithmetic inside either way.
__device__ __forceinline__ float ToF(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float ToF(float x) { return x; }
template <typename T>
__device__ __forceinline__ T FromF(float x);
template <>
__device__ __forceinline__ bf16 FromF<bf16>(float x) {
  return __float2bfloat16(x);
}
template <>
__device__ __forceinline__ float FromF<float>(float x) {
  return x;
}

// One warp per row; dim % 8 == 0. kAdd: residual += x first (rounded to T: bf16 rounds, float
// keeps it).
template <typename T, bool kAdd>
__global__ void RmsNormKernel(T* residual, const T* x, const int32_t* q_indptr, const T* weight,
                              T* y, int64_t rows, int32_t dim, float eps, float weight_offset) {
  PdlLaunchDependents();
  PdlWait();
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32; r < rows;
       r += warps) {
    const int64_t src_row = q_indptr != nullptr ? q_indptr[r + 1] - 1 : r;
    const T* in = (kAdd ? residual : x) + src_row * dim;
    float ss = 0.f;
    for (int c = lane * 8; c < dim; c += 256) {
      float f[8];
      Load8(in + c, f);
      if constexpr (kAdd) {
        float g[8];
        Load8(x + r * dim + c, g);
#pragma unroll
        for (int i = 0; i < 8; ++i) f[i] = ToF(FromF<T>(f[i] + g[i]));
        Store8(residual + r * dim + c, f);
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) ss = fmaf(f[i], f[i], ss);
    }
    ss = WarpSum(ss);
    const float inv = rsqrtf(ss / static_cast<float>(dim) + eps);
    for (int c = lane * 8; c < dim; c += 256) {
      float f[8], w[8];
      Load8(in + c, f);
      Load8(weight + c, w);
#pragma unroll
      for (int i = 0; i < 8; ++i) f[i] = f[i] * inv * (weight_offset + w[i]);
      Store8(y + r * dim + c, f);
    }
  }
}

// The same for a few rows (decode): one block per row, every load of the row issued before the
// first store (a warp walking a 2560-wide row in dependent steps takes about ten L2 round trips),
// the row kept in registers, the norm's weights read before waiting for the kernel before (they
// are constant). dim <= kRowKernelMaxDim.
constexpr int kRowChunks = 4;  // 16-byte pieces per thread
constexpr int32_t kRowKernelMaxDim = kThreads * 8 * kRowChunks;
constexpr int64_t kRowKernelMaxRows = 264;

template <typename T, bool kAdd>
__global__ void __launch_bounds__(kThreads)
    RmsNormRowKernel(T* residual, const T* x, const int32_t* q_indptr, const T* weight, T* y,
                     int32_t dim, float eps, float weight_offset) {
  PdlLaunchDependents();
  float w[kRowChunks][8], f[kRowChunks][8];
#pragma unroll
  for (int j = 0; j < kRowChunks; ++j) {
    const int c = (threadIdx.x + j * kThreads) * 8;
    if (c < dim) Load8(weight + c, w[j]);
  }
  PdlWait();
  const int64_t r = blockIdx.x;
  const int64_t src_row = q_indptr != nullptr ? q_indptr[r + 1] - 1 : r;
  const T* in = (kAdd ? residual : x) + src_row * dim;
#pragma unroll
  for (int j = 0; j < kRowChunks; ++j) {
    const int c = (threadIdx.x + j * kThreads) * 8;
    if (c < dim) Load8(in + c, f[j]);
  }
  if constexpr (kAdd) {
    float g[kRowChunks][8];
#pragma unroll
    for (int j = 0; j < kRowChunks; ++j) {
      const int c = (threadIdx.x + j * kThreads) * 8;
      if (c < dim) Load8(x + r * dim + c, g[j]);
    }
#pragma unroll
    for (int j = 0; j < kRowChunks; ++j) {
      const int c = (threadIdx.x + j * kThreads) * 8;
      if (c >= dim) continue;
#pragma unroll
      for (int i = 0; i < 8; ++i) f[j][i] = ToF(FromF<T>(f[j][i] + g[j][i]));
      Store8(residual + r * dim + c, f[j]);
    }
  }
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < kRowChunks; ++j) {
    if ((threadIdx.x + j * kThreads) * 8 >= dim) continue;
#pragma unroll
    for (int i = 0; i < 8; ++i) ss = fmaf(f[j][i], f[j][i], ss);
  }
  __shared__ float warp_sums[kThreads / 32];
  ss = WarpSum(ss);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = ss;
  __syncthreads();
  float total = 0.f;
#pragma unroll
  for (int i = 0; i < kThreads / 32; ++i) total += warp_sums[i];
  const float inv = rsqrtf(total / static_cast<float>(dim) + eps);
#pragma unroll
  for (int j = 0; j < kRowChunks; ++j) {
    const int c = (threadIdx.x + j * kThreads) * 8;
    if (c >= dim) continue;
#pragma unroll
    for (int i = 0; i < 8; ++i) f[j][i] = f[j][i] * inv * (weight_offset + w[j][i]);
    Store8(y + r * dim + c, f[j]);
  }
}

// RMSNorm of `rows` rows on whichever kernel suits the count.
template <typename T, bool kAdd>
cudaError_t LaunchRmsNorm(T* residual, const T* x, const int32_t* q_indptr, const T* weight, T* y,
                          int64_t rows, int32_t dim, float eps, float weight_offset,
                          cudaStream_t stream) {
  if (rows <= kRowKernelMaxRows && dim <= kRowKernelMaxDim) {
    return LaunchPdl(RmsNormRowKernel<T, kAdd>, static_cast<unsigned>(rows), kThreads, 0, stream,
                     residual, x, q_indptr, weight, y, dim, eps, weight_offset);
  }
  return LaunchPdl(RmsNormKernel<T, kAdd>, BlocksFor(rows, kThreads / 32), kThreads, 0, stream,
                   residual, x, q_indptr, weight, y, rows, dim, eps, weight_offset);
}

// One thread per (row, 8 consecutive frequencies) when half % 8 == 0 (16-byte accesses), else
// per (row, frequency): the sines and cosines are computed once and applied to that part of
// every q and k head of the row.
template <int kVec>
__global__ void RopeKernel(bf16* q, bf16* k, int64_t rows, int32_t hq, int32_t hkv, int32_t d,
                           int32_t half, const int32_t* positions, const float* inv_freq,
                           float factor) {
  PdlLaunchDependents();
  PdlWait();
  const int32_t groups = half / kVec;
  const int64_t total = rows * groups;
  const int32_t heads = hq + (k != nullptr ? hkv : 0);
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t i0 = static_cast<int32_t>(idx % groups) * kVec;
    const int64_t r = idx / groups;
    const float pos = static_cast<float>(positions[r]);
    float c[kVec], s[kVec];
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      sincosf(pos * inv_freq[i0 + j], &s[j], &c[j]);
      c[j] *= factor;
      s[j] *= factor;
    }
    for (int32_t h = 0; h < heads; ++h) {
      bf16* base = h < hq ? q + (r * hq + h) * d : k + (r * hkv + (h - hq)) * d;
      float x1[kVec], x2[kVec];
      if constexpr (kVec == 8) {
        Load8(base + i0, x1);
        Load8(base + i0 + half, x2);
      } else {
        x1[0] = __bfloat162float(base[i0]);
        x2[0] = __bfloat162float(base[i0 + half]);
      }
      float y1[kVec], y2[kVec];
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        y1[j] = x1[j] * c[j] - x2[j] * s[j];
        y2[j] = x2[j] * c[j] + x1[j] * s[j];
      }
      if constexpr (kVec == 8) {
        Store8(base + i0, y1);
        Store8(base + i0 + half, y2);
      } else {
        base[i0] = __float2bfloat16(y1[0]);
        base[i0 + half] = __float2bfloat16(y2[0]);
      }
    }
  }
}

template <typename T>
__global__ void SwiGluKernel(const T* gate, const T* up, int64_t stride, T* out, int64_t rows,
                             int32_t cols, bool vec) {
  PdlLaunchDependents();
  PdlWait();
  const int64_t per_row = vec ? cols / 8 : cols;
  const int64_t total = rows * per_row;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = idx / per_row;
    const int64_t c = idx % per_row;
    if (vec) {
      float g[8], u[8];
      Load8(gate + r * stride + c * 8, g);
      Load8(up + r * stride + c * 8, u);
#pragma unroll
      for (int i = 0; i < 8; ++i) g[i] = g[i] / (1.f + __expf(-g[i])) * u[i];
      Store8(out + r * cols + c * 8, g);
    } else {
      const float g = ToF(gate[r * stride + c]);
      const float u = ToF(up[r * stride + c]);
      out[r * cols + c] = FromF<T>(g / (1.f + __expf(-g)) * u);
    }
  }
}

template <typename T>
__global__ void EmbeddingKernel(const int32_t* ids, int64_t n, const T* table, int64_t vocab,
                                int32_t hidden, T* out, int32_t* error_flag) {
  PdlLaunchDependents();
  PdlWait();
  for (int64_t t = blockIdx.x; t < n; t += gridDim.x) {
    const int32_t id = ids[t];
    const bool ok = id >= 0 && id < vocab;
    if (!ok && threadIdx.x == 0 && error_flag != nullptr) *error_flag = 1;
    T* dst = out + t * hidden;
    const T* src = table + static_cast<int64_t>(ok ? id : 0) * hidden;
    constexpr int kPer = 16 / sizeof(T);  // elements per 16-byte copy
    if (hidden % kPer == 0) {
      for (int c = threadIdx.x * kPer; c < hidden; c += blockDim.x * kPer) {
        uint4 v = ok ? *reinterpret_cast<const uint4*>(src + c) : make_uint4(0, 0, 0, 0);
        *reinterpret_cast<uint4*>(dst + c) = v;
      }
    } else {
      for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
        dst[c] = ok ? src[c] : FromF<T>(0.f);
      }
    }
  }
}

template <typename T>
__global__ void AddKernel(const T* a, const T* b, T* y, int64_t n) {
  PdlLaunchDependents();
  PdlWait();
  const int64_t n8 = n / 8;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  for (int64_t i = first; i < n8; i += stride) {
    float f[8], g[8];
    Load8(a + i * 8, f);
    Load8(b + i * 8, g);
#pragma unroll
    for (int j = 0; j < 8; ++j) f[j] += g[j];
    Store8(y + i * 8, f);
  }
  for (int64_t i = n8 * 8 + first; i < n; i += stride) {
    y[i] = FromF<T>(ToF(a[i]) + ToF(b[i]));
  }
}

// y[r, c] += bias[c] over rows of `cols` (row stride `row_stride` elements).
template <typename T>
__global__ void AddBiasKernel(T* y, const T* bias, int64_t rows, int32_t cols, int64_t row_stride) {
  PdlLaunchDependents();
  PdlWait();
  const int64_t n = rows * cols;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += stride) {
    const int64_t r = i / cols;
    const int32_t c = static_cast<int32_t>(i - r * cols);
    T* p = y + r * row_stride + c;
    *p = FromF<T>(ToF(*p) + ToF(bias[c]));
  }
}

// One warp per (row, head) of the fused projection [rows, (hq + 2 hkv) * d]: a query head is
// normed (when q_norm is given), written to q_pre, then rotated into q; a key head normed and
// rotated into k; a value head copied into v. Each lane holds columns lane, lane + 32, ...; the
// rotation pairs (j, j + half) are read back from the warp's own output after __syncwarp.
template <typename T>
__global__ void SplitQkvKernel(const T* qkv, int64_t rows, int32_t hq, int32_t hkv, int32_t d,
                               int32_t half, const T* q_norm, const T* k_norm, float eps,
                               const int32_t* positions, const float* inv_freq, float factor,
                               T* q_pre, T* q, T* k, T* v) {
  PdlLaunchDependents();
  PdlWait();
  const int lane = threadIdx.x % 32;
  const int32_t heads = hq + 2 * hkv;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t w = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32;
       w < rows * heads; w += warps) {
    const int64_t r = w / heads;
    const int32_t h = static_cast<int32_t>(w - r * heads);
    const T* src = qkv + w * d;
    if (h >= hq + hkv) {
      T* dst = v + (r * hkv + (h - hq - hkv)) * d;
      for (int32_t c = lane; c < d; c += 32) dst[c] = src[c];
      continue;
    }
    const bool is_q = h < hq;
    const T* norm = is_q ? q_norm : k_norm;
    T* out = is_q ? q + (r * hq + h) * d : k + (r * hkv + (h - hq)) * d;
    float x[8];
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int32_t c = lane + 32 * i;
      x[i] = c < d ? ToF(src[c]) : 0.f;
      ss = fmaf(x[i], x[i], ss);
    }
    if (norm != nullptr) {
      ss = WarpSum(ss);
      const float inv = rsqrtf(ss / static_cast<float>(d) + eps);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int32_t c = lane + 32 * i;
        if (c < d) x[i] = x[i] * inv * ToF(norm[c]);
      }
    }
    T* pre = is_q ? q_pre + (r * hq + h) * d : nullptr;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int32_t c = lane + 32 * i;
      if (c < d) {
        const T b = FromF<T>(x[i]);
        out[c] = b;
        if (pre != nullptr) pre[c] = b;
      }
    }
    __syncwarp();
    const float pos = static_cast<float>(positions[r]);
    for (int32_t j = lane; j < half; j += 32) {
      float sn, cs;
      sincosf(pos * inv_freq[j], &sn, &cs);
      cs *= factor;
      sn *= factor;
      const float x1 = ToF(out[j]);
      const float x2 = ToF(out[j + half]);
      out[j] = FromF<T>(x1 * cs - x2 * sn);
      out[j + half] = FromF<T>(x2 * cs + x1 * sn);
    }
    __syncwarp();
  }
}

template <typename T>
__global__ void CopyColumnsKernel(const T* src, int64_t rows, int32_t src_cols, T* dst,
                                  int32_t dst_cols) {
  PdlLaunchDependents();
  PdlWait();
  const int64_t n = rows * dst_cols;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += stride) {
    const int64_t r = i / dst_cols;
    const int32_t c = static_cast<int32_t>(i - r * dst_cols);
    dst[i] = c < src_cols ? src[r * src_cols + c] : FromF<T>(0.f);
  }
}

__global__ void Bf16ToF32Kernel(const bf16* x, float* y, int64_t n) {
  PdlLaunchDependents();
  PdlWait();
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += stride) {
    y[i] = __bfloat162float(x[i]);
  }
}

// Pooling in two launches with a fixed summation order. RouterPoolPartialKernel: grid
// (num_seqs, kPoolChunks), block (head_dim, kPoolSlices); the (row, head) pairs of sequence b's
// 2n pooled rows are dealt out over the chunks' slices, and each block writes its sum to
// partial[b][chunk][col]. RouterPoolFinishKernel: one block of head_dim threads per sequence sums
// the chunks in order and divides by 2 n heads.
constexpr int kPoolSlices = 8;
constexpr int kPoolChunks = 32;
static_assert(kRouterPoolMaxHeadDim * kPoolSlices <= 1024, "a pooling block is head_dim x slices");
// Sequence b's rows are [rows[b * stride], rows[b * stride + 1]): stride 1 reads an indptr,
// stride 2 (begin, end) pairs.
__global__ void RouterPoolPartialKernel(const bf16* q, const int32_t* rows, int32_t stride,
                                        int32_t heads, int32_t d, int32_t pool_size,
                                        float* partial) {
  PdlLaunchDependents();
  PdlWait();
  extern __shared__ float slice_sum[];  // [kPoolSlices][d]
  const int b = blockIdx.x;
  const int32_t begin = rows[b * stride];
  const int32_t t = rows[b * stride + 1] - begin;
  const int32_t n = min(pool_size, t);
  const int col = threadIdx.x;
  const int64_t pairs = 2 * static_cast<int64_t>(n) * heads;
  float sum = 0.f;
  for (int64_t p = static_cast<int64_t>(blockIdx.y) * kPoolSlices + threadIdx.y; p < pairs;
       p += kPoolChunks * kPoolSlices) {
    const int32_t j = static_cast<int32_t>(p / heads);
    const int32_t h = static_cast<int32_t>(p - static_cast<int64_t>(j) * heads);
    const int32_t row = begin + (j < n ? j : t - n + (j - n));
    sum += __bfloat162float(q[(static_cast<int64_t>(row) * heads + h) * d + col]);
  }
  slice_sum[threadIdx.y * d + col] = sum;
  __syncthreads();
  if (threadIdx.y == 0) {
    float total = 0.f;
    for (int s = 0; s < kPoolSlices; ++s) total += slice_sum[s * d + col];
    partial[(static_cast<int64_t>(b) * kPoolChunks + blockIdx.y) * d + col] = total;
  }
}

__global__ void RouterPoolFinishKernel(const float* partial, const int32_t* rows, int32_t stride,
                                       int32_t heads, int32_t d, int32_t pool_size, float* pooled) {
  PdlLaunchDependents();
  PdlWait();
  const int b = blockIdx.x;
  const int col = threadIdx.x;
  const int32_t n = min(pool_size, rows[b * stride + 1] - rows[b * stride]);
  float total = 0.f;
  for (int c = 0; c < kPoolChunks; ++c) {
    total += partial[(static_cast<int64_t>(b) * kPoolChunks + c) * d + col];
  }
  pooled[static_cast<int64_t>(b) * d + col] =
      n > 0 ? total / (2.f * static_cast<float>(n) * heads) : 0.f;
}

// One warp per output column o (grid-stride) of every row: y[b, o] = sum_i W[o, i] x[b, i] +
// bias[o], then SiLU when asked. Each lane reads W's row with stride 32 once per row of x (W stays
// in L1/L2).
__global__ void RouterLinearKernel(const float* x, int32_t batch, const float* w, const float* bias,
                                   int32_t in, int32_t out, bool silu, float* y) {
  PdlLaunchDependents();
  PdlWait();
  const int lane = threadIdx.x % 32;
  const int32_t warps = gridDim.x * (blockDim.x / 32);
  for (int32_t o = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; o < out; o += warps) {
    const float* w_row = w + static_cast<int64_t>(o) * in;
    for (int32_t b = 0; b < batch; ++b) {
      const float* x_row = x + static_cast<int64_t>(b) * in;
      float acc = 0.f;
      for (int32_t i = lane; i < in; i += 32) acc = fmaf(w_row[i], x_row[i], acc);
      acc = WarpSum(acc);
      if (lane == 0) {
        acc += bias[o];
        y[static_cast<int64_t>(b) * out + o] = silu ? acc / (1.f + __expf(-acc)) : acc;
      }
    }
  }
}

absl::Status CheckRows(const char* where, int64_t rows, int32_t dim) {
  if (rows < 0 || dim <= 0 || dim % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": rows / dim: expected rows >= 0 and dim a positive multiple of 8, found ", rows,
        " / ", dim));
  }
  return absl::OkStatus();
}

}  // namespace

namespace {

// The launches of the kernels above for stored type T; `where` names the operation in errors
// ("RmsNorm", "RmsNorm (f32)").
template <typename T>
absl::Status RmsNormOf(const char* where, T* residual, const void* x, const int32_t* q_indptr,
                       const void* weight, void* y, int64_t rows, int32_t dim, float eps,
                       float weight_offset, void* stream) {
  FLUXATTN_RETURN_IF_ERROR(CheckRows(where, rows, dim));
  if (rows == 0) return absl::OkStatus();
  const T* xt = static_cast<const T*>(x);
  const T* wt = static_cast<const T*>(weight);
  T* yt = static_cast<T*>(y);
  const cudaError_t launched =
      residual != nullptr ? LaunchRmsNorm<T, true>(residual, xt, q_indptr, wt, yt, rows, dim, eps,
                                                   weight_offset, AsStream(stream))
                          : LaunchRmsNorm<T, false>(nullptr, xt, q_indptr, wt, yt, rows, dim, eps,
                                                    weight_offset, AsStream(stream));
  FLUXATTN_RETURN_IF_CUDA(launched, where, "kernel launch");
  return LaunchStatus(where);
}

template <typename T>
absl::Status SwiGluOf(const char* where, const void* gate, const void* up, int64_t in_row_stride,
                      void* out, int64_t rows, int32_t cols, void* stream) {
  if (rows < 0 || cols <= 0 || in_row_stride < cols) {
    return absl::InvalidArgumentError(
        absl::StrCat(where,
                     ": rows / cols / in_row_stride: expected rows >= 0, cols > 0, stride >= "
                     "cols, found ",
                     rows, " / ", cols, " / ", in_row_stride));
  }
  if (rows == 0) return absl::OkStatus();
  const bool vec = cols % 8 == 0 && in_row_stride % 8 == 0 &&
                   reinterpret_cast<uintptr_t>(gate) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(up) % 16 == 0;
  const int64_t work = rows * (vec ? cols / 8 : cols);
  FLUXATTN_RETURN_IF_CUDA(LaunchPdl(SwiGluKernel<T>, BlocksFor(work), kThreads, 0, AsStream(stream),
                                    static_cast<const T*>(gate), static_cast<const T*>(up),
                                    in_row_stride, static_cast<T*>(out), rows, cols, vec),
                          where, "kernel launch");
  return LaunchStatus(where);
}

template <typename T>
absl::Status EmbeddingGatherOf(const char* where, const int32_t* ids, int64_t num_ids,
                               const void* table, int64_t vocab, int32_t hidden, void* out,
                               int32_t* maybe_error_flag, void* stream) {
  if (num_ids < 0 || vocab <= 0 || hidden <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": num_ids / vocab / hidden: expected >= 0 / > 0 / > 0, found ",
                     num_ids, " / ", vocab, " / ", hidden));
  }
  if (num_ids == 0) return absl::OkStatus();
  FLUXATTN_RETURN_IF_CUDA(
      LaunchPdl(EmbeddingKernel<T>, static_cast<unsigned>(std::min<int64_t>(num_ids, 65535)), 128,
                0, AsStream(stream), ids, num_ids, static_cast<const T*>(table), vocab, hidden,
                static_cast<T*>(out), maybe_error_flag),
      where, "kernel launch");
  return LaunchStatus(where);
}

template <typename T>
absl::Status AddOf(const char* where, const void* a, const void* b, void* y, int64_t n,
                   void* stream) {
  if (n < 0) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": n: expected >= 0, found ", n));
  }
  if (n == 0) return absl::OkStatus();
  FLUXATTN_RETURN_IF_CUDA(
      LaunchPdl(AddKernel<T>, BlocksFor(std::max<int64_t>(n / 8, 1)), kThreads, 0, AsStream(stream),
                static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(y), n),
      where, "kernel launch");
  return LaunchStatus(where);
}

template <typename T>
absl::Status AddBiasOf(const char* where, void* y, const void* bias, int64_t rows, int32_t cols,
                       int64_t row_stride, void* stream) {
  if (rows < 0 || cols <= 0 || row_stride < cols) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": rows / cols / row_stride: expected rows >= 0, cols > 0, stride >= cols, found ",
        rows, " / ", cols, " / ", row_stride));
  }
  if (rows == 0) return absl::OkStatus();
  FLUXATTN_RETURN_IF_CUDA(
      LaunchPdl(AddBiasKernel<T>, BlocksFor(rows * cols), kThreads, 0, AsStream(stream),
                static_cast<T*>(y), static_cast<const T*>(bias), rows, cols, row_stride),
      where, "kernel launch");
  return LaunchStatus(where);
}

template <typename T>
absl::Status SplitQkvNormRopeOf(const char* where, const void* qkv, int64_t rows,
                                int32_t num_q_heads, int32_t num_kv_heads, int32_t head_dim,
                                int32_t rotary_dim, const void* q_norm, const void* k_norm,
                                float eps, const int32_t* positions, const float* inv_freq,
                                float attention_factor, void* q_pre, void* q, void* k, void* v,
                                void* stream) {
  if (rows < 0 || num_q_heads <= 0 || num_kv_heads <= 0 || head_dim <= 0 || head_dim > 256 ||
      rotary_dim <= 0 || rotary_dim % 2 != 0 || rotary_dim > head_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        where,
        ": rows / heads / head_dim / rotary_dim: expected rows >= 0, positive heads, head_dim "
        "in [1, 256] and an even rotary_dim <= head_dim, found ",
        rows, " / ", num_q_heads, "+", num_kv_heads, " / ", head_dim, " / ", rotary_dim));
  }
  if (rows == 0) return absl::OkStatus();
  const int64_t warps = rows * (num_q_heads + 2 * int64_t{num_kv_heads});
  FLUXATTN_RETURN_IF_CUDA(
      LaunchPdl(SplitQkvKernel<T>, BlocksFor(warps, kThreads / 32), kThreads, 0, AsStream(stream),
                static_cast<const T*>(qkv), rows, num_q_heads, num_kv_heads, head_dim,
                rotary_dim / 2, static_cast<const T*>(q_norm), static_cast<const T*>(k_norm), eps,
                positions, inv_freq, attention_factor, static_cast<T*>(q_pre), static_cast<T*>(q),
                static_cast<T*>(k), static_cast<T*>(v)),
      where, "kernel launch");
  return LaunchStatus(where);
}

template <typename T>
absl::Status CopyColumnsOf(const char* where, const void* src, int64_t rows, int32_t src_cols,
                           void* dst, int32_t dst_cols, void* stream) {
  if (rows < 0 || src_cols <= 0 || dst_cols <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": rows / src_cols / dst_cols: expected >= 0 / > 0 / > 0, found ", rows,
                     " / ", src_cols, " / ", dst_cols));
  }
  if (rows == 0) return absl::OkStatus();
  FLUXATTN_RETURN_IF_CUDA(
      LaunchPdl(CopyColumnsKernel<T>, BlocksFor(rows * dst_cols), kThreads, 0, AsStream(stream),
                static_cast<const T*>(src), rows, src_cols, static_cast<T*>(dst), dst_cols),
      where, "kernel launch");
  return LaunchStatus(where);
}

}  // namespace

// The functions of both element types: bf16 (declared in the header), and float32 in namespace
// f32 (the same kernels instantiated for float, reached through RowKernelsFor).
#define FLUXATTN_ROW_OPS(T, SUFFIX)                                                                \
  absl::Status RmsNorm(const void* x, const void* weight, void* y, int64_t rows, int32_t dim,      \
                       float eps, float weight_offset, void* stream) {                             \
    return RmsNormOf<T>("RmsNorm" SUFFIX, nullptr, x, nullptr, weight, y, rows, dim, eps,          \
                        weight_offset, stream);                                                    \
  }                                                                                                \
  absl::Status AddRmsNorm(void* residual, const void* x, const void* weight, void* y,              \
                          int64_t rows, int32_t dim, float eps, float weight_offset,               \
                          void* stream) {                                                          \
    return RmsNormOf<T>("AddRmsNorm" SUFFIX, static_cast<T*>(residual), x, nullptr, weight, y,     \
                        rows, dim, eps, weight_offset, stream);                                    \
  }                                                                                                \
  absl::Status RmsNormLastRows(const void* x, const int32_t* q_indptr, int32_t num_seqs,           \
                               const void* weight, void* y, int32_t dim, float eps,                \
                               float weight_offset, void* stream) {                                \
    return RmsNormOf<T>("RmsNormLastRows" SUFFIX, nullptr, x, q_indptr, weight, y, num_seqs, dim,  \
                        eps, weight_offset, stream);                                               \
  }                                                                                                \
  absl::Status SwiGlu(const void* gate, const void* up, int64_t in_row_stride, void* out,          \
                      int64_t rows, int32_t cols, void* stream) {                                  \
    return SwiGluOf<T>("SwiGlu" SUFFIX, gate, up, in_row_stride, out, rows, cols, stream);         \
  }                                                                                                \
  absl::Status EmbeddingGather(const int32_t* ids, int64_t num_ids, const void* table,             \
                               int64_t vocab, int32_t hidden, void* out,                           \
                               int32_t* maybe_error_flag, void* stream) {                          \
    return EmbeddingGatherOf<T>("EmbeddingGather" SUFFIX, ids, num_ids, table, vocab, hidden, out, \
                                maybe_error_flag, stream);                                         \
  }                                                                                                \
  absl::Status Add(const void* a, const void* b, void* y, int64_t n, void* stream) {               \
    return AddOf<T>("Add" SUFFIX, a, b, y, n, stream);                                             \
  }                                                                                                \
  absl::Status AddBias(void* y, const void* bias, int64_t rows, int32_t cols, int64_t row_stride,  \
                       void* stream) {                                                             \
    return AddBiasOf<T>("AddBias" SUFFIX, y, bias, rows, cols, row_stride, stream);                \
  }                                                                                                \
  absl::Status SplitQkvNormRope(                                                                   \
      const void* qkv, int64_t rows, int32_t num_q_heads, int32_t num_kv_heads, int32_t head_dim,  \
      int32_t rotary_dim, const void* q_norm, const void* k_norm, float eps,                       \
      const int32_t* positions, const float* inv_freq, float attention_factor, void* q_pre,        \
      void* q, void* k, void* v, void* stream) {                                                   \
    return SplitQkvNormRopeOf<T>("SplitQkvNormRope" SUFFIX, qkv, rows, num_q_heads, num_kv_heads,  \
                                 head_dim, rotary_dim, q_norm, k_norm, eps, positions, inv_freq,   \
                                 attention_factor, q_pre, q, k, v, stream);                        \
  }                                                                                                \
  absl::Status CopyColumns(const void* src, int64_t rows, int32_t src_cols, void* dst,             \
                           int32_t dst_cols, void* stream) {                                       \
    return CopyColumnsOf<T>("CopyColumns" SUFFIX, src, rows, src_cols, dst, dst_cols, stream);     \
  }

FLUXATTN_ROW_OPS(bf16, "")
namespace f32 {
FLUXATTN_ROW_OPS(float, " (f32)")
}  // namespace f32
#undef FLUXATTN_ROW_OPS

const RowKernels& RowKernelsFor(bool f32) {
  static const RowKernels kBf16 = {
      &RmsNorm,         &AddRmsNorm, &RmsNormLastRows, &SplitQkvNormRope, &SwiGlu,
      &EmbeddingGather, &Add,        &AddBias,         &CopyColumns};
  static const RowKernels kF32 = {&f32::RmsNorm,
                                  &f32::AddRmsNorm,
                                  &f32::RmsNormLastRows,
                                  &f32::SplitQkvNormRope,
                                  &f32::SwiGlu,
                                  &f32::EmbeddingGather,
                                  &f32::Add,
                                  &f32::AddBias,
                                  &f32::CopyColumns};
  return f32 ? kF32 : kBf16;
}

absl::Status RopeInPlace(void* q, void* k, int64_t rows, int32_t num_q_heads, int32_t num_kv_heads,
                         int32_t head_dim, int32_t rotary_dim, const int32_t* positions,
                         const float* inv_freq, float attention_factor, void* stream) {
  if (rotary_dim <= 0 || rotary_dim % 2 != 0 || rotary_dim > head_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RopeInPlace: rotary_dim: expected an even number in [2, head_dim = ", head_dim,
        "], found ", rotary_dim));
  }
  if (rows < 0 || num_q_heads <= 0 || (k != nullptr && num_kv_heads <= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("RopeInPlace: rows / heads: expected rows >= 0 and positive heads, found ",
                     rows, " / ", num_q_heads, " / ", num_kv_heads));
  }
  if (rows == 0) return absl::OkStatus();
  const int32_t half = rotary_dim / 2;
  if (half % 8 == 0 && head_dim % 8 == 0) {
    FLUXATTN_RETURN_IF_CUDA(
        LaunchPdl(RopeKernel<8>, BlocksFor(rows * (half / 8)), kThreads, 0, AsStream(stream),
                  static_cast<bf16*>(q), static_cast<bf16*>(k), rows, num_q_heads, num_kv_heads,
                  head_dim, half, positions, inv_freq, attention_factor),
        "RopeInPlace", "kernel launch");
  } else {
    FLUXATTN_RETURN_IF_CUDA(
        LaunchPdl(RopeKernel<1>, BlocksFor(rows * half), kThreads, 0, AsStream(stream),
                  static_cast<bf16*>(q), static_cast<bf16*>(k), rows, num_q_heads, num_kv_heads,
                  head_dim, half, positions, inv_freq, attention_factor),
        "RopeInPlace", "kernel launch");
  }
  return LaunchStatus("RopeInPlace");
}

absl::Status RouterLinear(const float* x, int32_t batch, const float* weight, const float* bias,
                          int32_t in, int32_t out, bool silu, float* y, void* stream) {
  if (batch < 0 || in <= 0 || out <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("RouterLinear: batch / in / out: expected >= 0 / > 0 / > 0, found ", batch,
                     " / ", in, " / ", out));
  }
  if (batch == 0) return absl::OkStatus();
  constexpr int kWarps = kThreads / 32;
  FLUXATTN_RETURN_IF_CUDA(LaunchPdl(RouterLinearKernel, BlocksFor(out, kWarps), kThreads, 0,
                                    AsStream(stream), x, batch, weight, bias, in, out, silu, y),
                          "RouterLinear", "kernel launch");
  return LaunchStatus("RouterLinear");
}

absl::Status Bf16ToF32(const void* x, float* y, int64_t n, void* stream) {
  if (n < 0) {
    return absl::InvalidArgumentError(absl::StrCat("Bf16ToF32: n: expected >= 0, found ", n));
  }
  if (n == 0) return absl::OkStatus();
  FLUXATTN_RETURN_IF_CUDA(LaunchPdl(Bf16ToF32Kernel, BlocksFor(n), kThreads, 0, AsStream(stream),
                                    static_cast<const bf16*>(x), y, n),
                          "Bf16ToF32", "kernel launch");
  return LaunchStatus("Bf16ToF32");
}

namespace {

absl::Status LaunchRouterPool(const char* where, const void* q, const int32_t* rows, int32_t stride,
                              int32_t num_seqs, int32_t num_heads, int32_t head_dim,
                              int32_t pool_size, float* pooled, float* scratch, void* stream) {
  if (num_seqs < 0 || num_heads <= 0 || head_dim <= 0 || head_dim > kRouterPoolMaxHeadDim ||
      pool_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": num_seqs / num_heads / head_dim / pool_size: expected >= 0 / > 0 / 1..",
        kRouterPoolMaxHeadDim, " / >= 1, found ", num_seqs, " / ", num_heads, " / ", head_dim,
        " / ", pool_size));
  }
  if (num_seqs == 0) return absl::OkStatus();
  FLUXATTN_RETURN_IF_CUDA(
      LaunchPdl(RouterPoolPartialKernel, dim3(num_seqs, kPoolChunks), dim3(head_dim, kPoolSlices),
                kPoolSlices * head_dim * sizeof(float), AsStream(stream),
                static_cast<const bf16*>(q), rows, stride, num_heads, head_dim, pool_size, scratch),
      where, "kernel launch");
  FLUXATTN_RETURN_IF_CUDA(LaunchPdl(RouterPoolFinishKernel, num_seqs, head_dim, 0, AsStream(stream),
                                    static_cast<const float*>(scratch), rows, stride, num_heads,
                                    head_dim, pool_size, pooled),
                          where, "kernel launch");
  return LaunchStatus(where);
}

}  // namespace

size_t RouterPoolScratchBytes(int32_t num_seqs, int32_t head_dim) {
  return static_cast<size_t>(std::max(num_seqs, 0)) * kPoolChunks * std::max(head_dim, 0) *
         sizeof(float);
}

absl::Status RouterPool(const void* q, const int32_t* q_indptr, int32_t num_seqs, int32_t num_heads,
                        int32_t head_dim, int32_t pool_size, float* pooled, float* scratch,
                        void* stream) {
  return LaunchRouterPool("RouterPool", q, q_indptr, 1, num_seqs, num_heads, head_dim, pool_size,
                          pooled, scratch, stream);
}

absl::Status RouterPoolRows(const void* q, const int32_t* row_ranges, int32_t num_seqs,
                            int32_t num_heads, int32_t head_dim, int32_t pool_size, float* pooled,
                            float* scratch, void* stream) {
  return LaunchRouterPool("RouterPoolRows", q, row_ranges, 2, num_seqs, num_heads, head_dim,
                          pool_size, pooled, scratch, stream);
}

}  // namespace fluxattn::kernels::cuda
