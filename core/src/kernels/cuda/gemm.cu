// y = x W^T on cuBLASLt (bf16 operands, f32 accumulation). Row-major y [m, n] is column-major
// y^T [n, m] = W (column-major [k, n], transposed) times x^T (column-major [k, m]), so the
// checkpoint's [out, in] weights are used as stored. Descriptors and the heuristic's algorithm
// are cached per shape, so a step's GEMMs ask the heuristic once.
//
// Decode batches take this library's kernels instead (the skinny tensor-core kernel below for
// 2..32 rows when FLUXATTN_CUDA_SKINNY=1; one row, and up to 8 rows on small weights, a
// bandwidth kernel): there the product is a read of W
// (every weight once), and cuBLASLt's tiles are built for larger m. One warp per output column
// streams its row of W in 16-byte loads (several in flight per lane, no L1 allocation: weights are
// read once) and multiplies it with every row of x (small, cached); a warp reduction ends it.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "cuda_check.cuh"
#include "fluxattn/env_switch.h"
#include "fluxattn/kernels/cuda_model_ops.h"
#include "mma_util.cuh"
#include "pdl.cuh"

namespace fluxattn::kernels::cuda {
namespace {

absl::Status LtStatus(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(
      "Gemm: ", what, ": expected success, found cuBLAS status ", static_cast<int>(status)));
}

#define FLUXATTN_RETURN_IF_LT(expr, what)                               \
  do {                                                                  \
    const cublasStatus_t _fa_lt = (expr);                               \
    if (_fa_lt != CUBLAS_STATUS_SUCCESS) return LtStatus(_fa_lt, what); \
  } while (false)

constexpr int kGemvMaxRows = 8;

__device__ __forceinline__ uint4 LoadStreaming(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

__device__ __forceinline__ float Dot8(const uint4& a, const uint4& b) {
  const __nv_bfloat162* ha = reinterpret_cast<const __nv_bfloat162*>(&a);
  const __nv_bfloat162* hb = reinterpret_cast<const __nv_bfloat162*>(&b);
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 fa = __bfloat1622float2(ha[i]);
    const float2 fb = __bfloat1622float2(hb[i]);
    s = fmaf(fa.x, fb.x, s);
    s = fmaf(fa.y, fb.y, s);
  }
  return s;
}

// y[r, col] = sum_t x[r, t] * w[col, t] for r < M; k % 8 == 0, rows 16-byte aligned. A block
// of 8 warps holds 8 / S columns; the S warps of a column split its k into S parts, and each lane
// issues U 16-byte loads of W before it multiplies any (U * 512 bytes in flight per warp), so
// that short products (a few MB of weights) keep enough reads in flight to stream at the HBM's
// rate and long rows (down_proj) spread over more warps than there are columns. Launched with
// programmatic dependent launch (pdl.cuh) like the model's other decode kernels.
template <int M, int S, int U>
__global__ void __launch_bounds__(256)
    GemvKernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, void* y,
               int64_t n, int64_t k, bool f32_out, bool early) {
  static_assert(S == 1 || S == 2 || S == 4 || S == 8, "k splits: a divisor of the block's warps");
  constexpr int kCols = 8 / S;
  PdlLaunchDependents();
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t col = blockIdx.x * static_cast<int64_t>(kCols) + warp / S;
  const int part = warp % S;
  const int64_t chunks = k / 8;
  // Part p reads chunks [c0, c1): whole 32-chunk rounds, the last part the rest.
  const int64_t per = (chunks + 32 * S - 1) / (32 * S) * 32;
  const int64_t c0 = part * per, c1 = c0 + per < chunks ? c0 + per : chunks;
  const uint4* wr = reinterpret_cast<const uint4*>(w + (col < n ? col : 0) * k);
  uint4 wv[U];
  auto load_round = [&](int64_t c) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      wv[u] = c + 32 * u < c1 ? LoadStreaming(wr + c + 32 * u) : make_uint4(0, 0, 0, 0);
    }
  };
  // The first round of W may be read before the wait (no kernel writes the weights).
  early = early && col < n;
  if (early) load_round(c0 + lane);
  PdlWait();
  float acc[M];
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = 0.f;
  if (col < n) {
    const uint4* xr = reinterpret_cast<const uint4*>(x);
    for (int64_t c = c0 + lane; c < c1; c += 32 * U) {
      if (!early || c != c0 + lane) load_round(c);
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (c + 32 * u < c1) {
#pragma unroll
          for (int r = 0; r < M; ++r) acc[r] += Dot8(wv[u], __ldg(xr + r * chunks + c + 32 * u));
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < M; ++r) {
#pragma unroll
    for (int off = 16; off > 0; off /= 2) acc[r] += __shfl_xor_sync(0xffffffff, acc[r], off);
  }
  if constexpr (S > 1) {
    __shared__ float parts[8][M];
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < M; ++r) parts[warp][r] = acc[r];
    }
    __syncthreads();
    if (part != 0) return;
#pragma unroll
    for (int r = 0; r < M; ++r) {
      float sum = 0.f;
#pragma unroll
      for (int p = 0; p < S; ++p) sum += parts[warp + p][r];
      acc[r] = sum;
    }
  }
  if (lane == 0 && col < n) {
#pragma unroll
    for (int r = 0; r < M; ++r) {
      if (f32_out) {
        static_cast<float*>(y)[r * n + col] = acc[r];
      } else {
        static_cast<__nv_bfloat16*>(y)[r * n + col] = __float2bfloat16(acc[r]);
      }
    }
  }
}

// Whether the first round of W loads goes before the wait for the kernel before:
// FLUXATTN_CUDA_GEMV_EARLY=0 turns it off (a benchmark's A/B); read once per process.
bool EarlyWeightLoads() {
  static const bool early = [] {
    const char* v = std::getenv("FLUXATTN_CUDA_GEMV_EARLY");
    return v == nullptr || std::string(v) != "0";
  }();
  return early;
}

template <int M, int S, int U>
cudaError_t LaunchGemv(const void* x, const void* w, void* y, int64_t n, int64_t k, bool f32,
                       cudaStream_t stream) {
  constexpr int kCols = 8 / S;
  const unsigned blocks = static_cast<unsigned>((n + kCols - 1) / kCols);
  return LaunchPdl(GemvKernel<M, S, U>, blocks, 256, 0, stream,
                   static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(w), y, n,
                   k, f32, EarlyWeightLoads());
}

// One row: every (splits, loads) pair the kernel is built for. More rows: one split, four loads.
template <int S>
cudaError_t LaunchGemvRow(const void* x, const void* w, void* y, int64_t n, int64_t k, bool f32,
                          int loads, cudaStream_t stream) {
  switch (loads) {
    case 16:
      return LaunchGemv<1, S, 16>(x, w, y, n, k, f32, stream);
    case 8:
      return LaunchGemv<1, S, 8>(x, w, y, n, k, f32, stream);
    default:
      return LaunchGemv<1, S, 4>(x, w, y, n, k, f32, stream);
  }
}

// FLUXATTN_CUDA_GEMV="SxU" (a benchmark's A/B): every one-row product with S k splits and U
// loads per lane. Read once per process; {0, 0} when unset.
GemvConfig EnvGemvConfig() {
  static const GemvConfig config = [] {
    GemvConfig c;
    const char* v = std::getenv("FLUXATTN_CUDA_GEMV");
    if (v != nullptr && std::sscanf(v, "%dx%d", &c.k_splits, &c.loads) != 2) c = GemvConfig{};
    return c;
  }();
  return config;
}

absl::Status Gemv(const void* x, const void* w, void* y, int64_t m, int64_t n, int64_t k, bool f32,
                  GemvConfig config, cudaStream_t stream) {
  if (m == 1) {
    if (config.k_splits == 0) config = EnvGemvConfig();
    if (config.k_splits == 0) config = ChooseGemvConfig(m, n, k);
  }
  cudaError_t err = cudaSuccess;
  switch (m) {
    case 1:
      switch (config.k_splits) {
        case 8:
          err = LaunchGemvRow<8>(x, w, y, n, k, f32, config.loads, stream);
          break;
        case 4:
          err = LaunchGemvRow<4>(x, w, y, n, k, f32, config.loads, stream);
          break;
        case 2:
          err = LaunchGemvRow<2>(x, w, y, n, k, f32, config.loads, stream);
          break;
        default:
          err = LaunchGemvRow<1>(x, w, y, n, k, f32, config.loads, stream);
          break;
      }
      break;
    case 2:
      err = LaunchGemv<2, 1, 4>(x, w, y, n, k, f32, stream);
      break;
    case 3:
      err = LaunchGemv<3, 1, 4>(x, w, y, n, k, f32, stream);
      break;
    case 4:
      err = LaunchGemv<4, 1, 4>(x, w, y, n, k, f32, stream);
      break;
    case 5:
      err = LaunchGemv<5, 1, 4>(x, w, y, n, k, f32, stream);
      break;
    case 6:
      err = LaunchGemv<6, 1, 4>(x, w, y, n, k, f32, stream);
      break;
    case 7:
      err = LaunchGemv<7, 1, 4>(x, w, y, n, k, f32, stream);
      break;
    default:
      err = LaunchGemv<8, 1, 4>(x, w, y, n, k, f32, stream);
      break;
  }
  FLUXATTN_RETURN_IF_CUDA(err, "Gemm (small batch)", "kernel launch");
  return LaunchStatus("Gemm (small batch)");
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The skinny tensor-core product for 2..32 rows: y^T = W x^T as m16n8k16 mma.sync tiles whose
// 16 "rows" are 16 columns of y (16 rows of W, streamed from HBM once) and whose n8 are 8 rows
// of x, so a decode batch of 8 fills the tile with no padding. A block of 8 warps takes 16
// columns; its warps split k into 8 parts of whole 32-key chunks and their partial sums are added
// in shared memory in warp order (the result does not depend on timing). The dot product's order
// over k is free, so each lane loads 16 bytes (8 keys) of a W row and of an x row per 32-key
// chunk and feeds them to two mma as the fragments' k slots, the same permutation for both
// operands: W comes in 16-byte streaming loads, U chunks ahead, with no shared-memory staging.
constexpr int kSkinnyWarps = 8;
constexpr int kSkinnyMaxRows = 32;

template <int MT, int U>
__global__ void __launch_bounds__(kSkinnyWarps * 32)
    SkinnyMmaKernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w,
                    void* y, int32_t m, int64_t n, int64_t k, bool f32_out, bool early) {
  PdlLaunchDependents();
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, c = lane % 4;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * 16;
  const int64_t chunks = k / 32;
  const int64_t per = (chunks + kSkinnyWarps - 1) / kSkinnyWarps;
  const int64_t c0 = min(chunks, warp * per), c1 = min(chunks, c0 + per);
  const int64_t ra = col0 + g, rb = col0 + g + 8;
  const bool va = ra < n, vb = rb < n;
  // 16-byte pieces: chunk ch of a row is pieces [4 ch, 4 ch + 4); lane c takes piece 4 ch + c.
  const uint4* wa = reinterpret_cast<const uint4*>(w + (va ? ra : 0) * k) + c;
  const uint4* wb = reinterpret_cast<const uint4*>(w + (vb ? rb : 0) * k) + c;
  const uint4 zero = make_uint4(0, 0, 0, 0);
  uint4 la[U], lb[U];
  auto load = [&](int64_t ch) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const bool ok = ch + u < c1;
      la[u] = ok && va ? LoadStreaming(wa + (ch + u) * 4) : zero;
      lb[u] = ok && vb ? LoadStreaming(wb + (ch + u) * 4) : zero;
    }
  };
  if (early) load(c0);  // no kernel writes the weights
  PdlWait();
  if (!early) load(c0);
  const uint4* xr[MT];
#pragma unroll
  for (int t = 0; t < MT; ++t) {
    const int row = t * 8 + g;
    xr[t] =
        row < m ? reinterpret_cast<const uint4*>(x + static_cast<int64_t>(row) * k) + c : nullptr;
  }
  float acc[MT][4];
#pragma unroll
  for (int t = 0; t < MT; ++t) {
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[t][i] = 0.f;
  }
  for (int64_t ch = c0; ch < c1; ch += U) {
    uint4 ca[U], cb[U], xb[U][MT];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      ca[u] = la[u];
      cb[u] = lb[u];
#pragma unroll
      for (int t = 0; t < MT; ++t) {
        xb[u][t] = xr[t] != nullptr && ch + u < c1 ? __ldg(xr[t] + (ch + u) * 4) : zero;
      }
    }
    if (ch + U < c1) load(ch + U);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const uint32_t a0[4] = {ca[u].x, cb[u].x, ca[u].y, cb[u].y};
      const uint32_t a1[4] = {ca[u].z, cb[u].z, ca[u].w, cb[u].w};
#pragma unroll
      for (int t = 0; t < MT; ++t) {
        Mma16816(acc[t], a0, xb[u][t].x, xb[u][t].y);
        Mma16816(acc[t], a1, xb[u][t].z, xb[u][t].w);
      }
    }
  }
  __shared__ float red[kSkinnyWarps][MT][4][32];
#pragma unroll
  for (int t = 0; t < MT; ++t) {
#pragma unroll
    for (int i = 0; i < 4; ++i) red[warp][t][i][lane] = acc[t][i];
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < MT * 128; idx += kSkinnyWarps * 32) {
    const int t = idx / 128, i = (idx / 32) % 4, l = idx % 32;
    float sum = 0.f;
#pragma unroll
    for (int wp = 0; wp < kSkinnyWarps; ++wp) sum += red[wp][t][i][l];
    // Accumulator i of lane l: W row l / 4 (+ 8 for i >= 2), x row 2 (l % 4) + (i % 2).
    const int64_t col = col0 + l / 4 + (i >= 2 ? 8 : 0);
    const int row = t * 8 + (l % 4) * 2 + (i % 2);
    if (row < m && col < n) {
      if (f32_out) {
        static_cast<float*>(y)[row * n + col] = sum;
      } else {
        static_cast<__nv_bfloat16*>(y)[row * n + col] = __float2bfloat16(sum);
      }
    }
  }
}

template <int MT, int U>
cudaError_t LaunchSkinny(const void* x, const void* w, void* y, int64_t m, int64_t n, int64_t k,
                         bool f32, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((n + 15) / 16);
  return LaunchPdl(SkinnyMmaKernel<MT, U>, blocks, kSkinnyWarps * 32, 0, stream,
                   static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(w), y,
                   static_cast<int32_t>(m), n, k, f32, EarlyWeightLoads());
}

absl::Status Skinny(const void* x, const void* w, void* y, int64_t m, int64_t n, int64_t k,
                    bool f32, cudaStream_t stream) {
  cudaError_t err;
  if (m <= 8) {
    err = LaunchSkinny<1, 4>(x, w, y, m, n, k, f32, stream);
  } else if (m <= 16) {
    err = LaunchSkinny<2, 4>(x, w, y, m, n, k, f32, stream);
  } else {
    err = LaunchSkinny<4, 2>(x, w, y, m, n, k, f32, stream);
  }
  FLUXATTN_RETURN_IF_CUDA(err, "Gemm (skinny)", "kernel launch");
  return LaunchStatus("Gemm (skinny)");
}

// FLUXATTN_CUDA_SKINNY=1 sends products of 2..32 rows to the skinny kernel; unset or anything
// else keeps the measured rule (the one-warp-per-column kernel for up to 8 rows on small weights,
// cuBLASLt otherwise) until the skinny kernel's timings on the GPU decide the default.
bool SkinnyEnabled() {
  static const bool on = [] {
    const char* v = std::getenv("FLUXATTN_CUDA_SKINNY");
    return v != nullptr && std::string(v) == "1";
  }();
  return on;
}

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

// Products of at least this many rows choose their algorithm by timing (GetPlan).
constexpr int64_t kTuneMinRows = 1024;
constexpr int kTuneCandidates = 12;

// The tuning bucket of a row count: the power of two at or below it. One timing per bucket; the
// other row counts of the bucket reuse its winner where cuBLASLt accepts it for their shape.
int64_t RowBucket(int64_t m) {
  int64_t b = 1;
  while (b * 2 <= m) b *= 2;
  return b;
}

class LtGemm final : public Gemm {
 public:
  LtGemm(cublasLtHandle_t handle, void* workspace, size_t bytes, bool small_batch_kernel,
         bool autotune)
      : handle_(handle),
        workspace_(workspace),
        workspace_bytes_(bytes),
        small_batch_kernel_(small_batch_kernel),
        autotune_(autotune) {}
  ~LtGemm() override {
    for (auto& [key, plan] : plans_) {
      cublasLtMatrixLayoutDestroy(plan.a);
      cublasLtMatrixLayoutDestroy(plan.b);
      cublasLtMatrixLayoutDestroy(plan.c);
      cublasLtMatmulDescDestroy(plan.op);
    }
    cudaFree(workspace_);
    cublasLtDestroy(handle_);
  }

  absl::Status Linear(const void* x, const void* w, void* y, int64_t m, int64_t n, int64_t k,
                      OutputType out_type, void* stream) override {
    if (m < 0 || n <= 0 || k <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Gemm: m / n / k: expected >= 0 / > 0 / > 0, found ", m, " / ", n, " / ", k));
    }
    if (m == 0) return absl::OkStatus();
    // Measured on an H200 (bench_cuda --only gemm): the kernel beats cuBLASLt for one row at
    // every Qwen3-4B shape (up to 2.6x on the small projections) and for up to 8 rows only on
    // small weights (cuBLASLt's tiles win from about 4M weights at 8 rows).
    const bool f32_inputs = out_type == OutputType::kF32Inputs;
    if (small_batch_kernel_ && m >= 2 && m <= kSkinnyMaxRows && !f32_inputs && k % 32 == 0 &&
        Aligned16(x) && Aligned16(w) && SkinnyEnabled()) {
      return Skinny(x, w, y, m, n, k, out_type == OutputType::kF32, AsStream(stream));
    }
    const bool small = m == 1 || (m <= kGemvMaxRows && n * k <= (int64_t{4} << 20));
    if (small_batch_kernel_ && small && !f32_inputs && k % 8 == 0 && Aligned16(x) && Aligned16(w)) {
      return Gemv(x, w, y, m, n, k, out_type == OutputType::kF32, GemvConfig{}, AsStream(stream));
    }
    const Plan* plan = nullptr;
    FLUXATTN_RETURN_IF_ERROR(GetPlan(m, n, k, out_type, x, w, y, stream, &plan));
    const float alpha = 1.f, beta = 0.f;
    FLUXATTN_RETURN_IF_LT(
        cublasLtMatmul(handle_, plan->op, &alpha, w, plan->a, x, plan->b, &beta, y, plan->c, y,
                       plan->c, &plan->algo, workspace_, workspace_bytes_, AsStream(stream)),
        "cublasLtMatmul");
    return absl::OkStatus();
  }

 private:
  // The plan of a shape: its descriptors and algorithm. The algorithm is cuBLASLt's first
  // heuristic choice, except for products of kTuneMinRows rows and more (prefill), where the
  // heuristic's candidates are timed once per row bucket on the call's own operands and the
  // fastest is kept (y is written by the timing runs and then by the call itself). Measured on
  // an H200 (bench_cuda --only gemm): 820 against 678 TFLOP/s at 8192^3, 723 against 676 for
  // Qwen3-4B's q/k/v at 32K rows; in a whole 32K prefill nothing (0.97 s either way), where the
  // GPU runs at its power limit and lowers its clocks.
  absl::Status GetPlan(int64_t m, int64_t n, int64_t k, OutputType out_type, const void* x,
                       const void* w, void* y, void* stream, const Plan** out) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto key = std::make_tuple(m, n, k, static_cast<int>(out_type));
    auto it = plans_.find(key);
    if (it != plans_.end()) {
      *out = &it->second;
      return absl::OkStatus();
    }
    Plan plan;
    const cudaDataType_t yt = out_type == OutputType::kBf16 ? CUDA_R_16BF : CUDA_R_32F;
    // CUBLAS_COMPUTE_32F with f32 operands is the full-precision product (TF32 would be
    // CUBLAS_COMPUTE_32F_FAST_TF32).
    const cudaDataType_t xt = out_type == OutputType::kF32Inputs ? CUDA_R_32F : CUDA_R_16BF;
    FLUXATTN_RETURN_IF_LT(cublasLtMatmulDescCreate(&plan.op, CUBLAS_COMPUTE_32F, CUDA_R_32F),
                          "cublasLtMatmulDescCreate");
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    FLUXATTN_RETURN_IF_LT(
        cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)),
        "set TRANSA");
    FLUXATTN_RETURN_IF_LT(
        cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)),
        "set TRANSB");
    FLUXATTN_RETURN_IF_LT(cublasLtMatrixLayoutCreate(&plan.a, xt, k, n, k), "layout W");
    FLUXATTN_RETURN_IF_LT(cublasLtMatrixLayoutCreate(&plan.b, xt, k, m, k), "layout x");
    FLUXATTN_RETURN_IF_LT(cublasLtMatrixLayoutCreate(&plan.c, yt, n, m, n), "layout y");
    cublasLtMatmulPreference_t pref = nullptr;
    FLUXATTN_RETURN_IF_LT(cublasLtMatmulPreferenceCreate(&pref), "preference");
    FLUXATTN_RETURN_IF_LT(
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                             &workspace_bytes_, sizeof(workspace_bytes_)),
        "preference workspace");
    const bool tune = autotune_ && m >= kTuneMinRows && !Capturing(stream);
    cublasLtMatmulHeuristicResult_t results[kTuneCandidates] = {};
    int found = 0;
    const cublasStatus_t hs =
        cublasLtMatmulAlgoGetHeuristic(handle_, plan.op, plan.a, plan.b, plan.c, plan.c, pref,
                                       tune ? kTuneCandidates : 1, results, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (hs != CUBLAS_STATUS_SUCCESS || found == 0) {
      cublasLtMatrixLayoutDestroy(plan.a);
      cublasLtMatrixLayoutDestroy(plan.b);
      cublasLtMatrixLayoutDestroy(plan.c);
      cublasLtMatmulDescDestroy(plan.op);
      return absl::InternalError(absl::StrCat("Gemm: heuristic for m=", m, " n=", n, " k=", k,
                                              ": expected an algorithm, found none (status ",
                                              static_cast<int>(hs), ")"));
    }
    plan.algo = results[0].algo;
    if (tune) {
      const auto bucket = std::make_tuple(RowBucket(m), n, k, static_cast<int>(out_type));
      auto known = tuned_.find(bucket);
      cublasLtMatmulHeuristicResult_t check{};
      if (known != tuned_.end() &&
          cublasLtMatmulAlgoCheck(handle_, plan.op, plan.a, plan.b, plan.c, plan.c, &known->second,
                                  &check) == CUBLAS_STATUS_SUCCESS &&
          check.workspaceSize <= workspace_bytes_) {
        plan.algo = known->second;
      } else if (known == tuned_.end()) {
        FLUXATTN_RETURN_IF_ERROR(Fastest(plan, results, found, x, w, y, stream, &plan.algo));
        tuned_.emplace(bucket, plan.algo);
      }
    }
    auto [pos, inserted] = plans_.emplace(key, plan);
    *out = &pos->second;
    return absl::OkStatus();
  }

  static bool Capturing(void* stream) {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    return cudaStreamIsCapturing(AsStream(stream), &status) == cudaSuccess &&
           status != cudaStreamCaptureStatusNone;
  }

  // The candidate of `results` with the shortest time (median of three runs after one warm-up)
  // on the given operands; candidates that fail to run are skipped.
  absl::Status Fastest(const Plan& plan, const cublasLtMatmulHeuristicResult_t* results, int found,
                       const void* x, const void* w, void* y, void* stream,
                       cublasLtMatmulAlgo_t* best) {
    cudaStream_t s = AsStream(stream);
    cudaEvent_t start = nullptr, stop = nullptr;
    FLUXATTN_RETURN_IF_CUDA(cudaEventCreate(&start), "Gemm (tuning)", "cudaEventCreate");
    FLUXATTN_RETURN_IF_CUDA(cudaEventCreate(&stop), "Gemm (tuning)", "cudaEventCreate");
    const float alpha = 1.f, beta = 0.f;
    float best_ms = 0;
    bool have = false;
    for (int i = 0; i < found; ++i) {
      if (results[i].state != CUBLAS_STATUS_SUCCESS ||
          results[i].workspaceSize > workspace_bytes_) {
        continue;
      }
      float times[3];
      bool ok = true;
      for (int r = -1; r < 3 && ok; ++r) {
        ok = cudaEventRecord(start, s) == cudaSuccess &&
             cublasLtMatmul(handle_, plan.op, &alpha, w, plan.a, x, plan.b, &beta, y, plan.c, y,
                            plan.c, &results[i].algo, workspace_, workspace_bytes_,
                            s) == CUBLAS_STATUS_SUCCESS &&
             cudaEventRecord(stop, s) == cudaSuccess && cudaEventSynchronize(stop) == cudaSuccess;
        if (ok && r >= 0) ok = cudaEventElapsedTime(&times[r], start, stop) == cudaSuccess;
      }
      if (!ok) {
        (void)cudaGetLastError();
        continue;
      }
      std::sort(times, times + 3);
      if (!have || times[1] < best_ms) {
        best_ms = times[1];
        *best = results[i].algo;
        have = true;
      }
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    if (!have) *best = results[0].algo;
    return absl::OkStatus();
  }

  cublasLtHandle_t handle_;
  void* workspace_;
  size_t workspace_bytes_;
  bool small_batch_kernel_;
  bool autotune_;
  std::mutex mu_;
  std::map<std::tuple<int64_t, int64_t, int64_t, int>, Plan> plans_;
  // Per row bucket (RowBucket), n, k and output type: the algorithm timing chose.
  std::map<std::tuple<int64_t, int64_t, int64_t, int>, cublasLtMatmulAlgo_t> tuned_;
};

}  // namespace

GemvConfig ChooseGemvConfig(int64_t m, int64_t n, int64_t k) {
  // Measured on an H200 (bench_cuda --only gemv, products back to back as in a decode step):
  // four loads per lane in flight beat eight or sixteen at every Qwen3-4B shape but gate_up
  // (within 3%); splitting k pays where the columns alone leave the GPU short of warps (o_proj
  // 2560 x 4096: 7.9 against 10.0 us; down_proj 2560 x 9728: 15.4 against 20.2 us) and costs
  // where they do not (lm_head 151936 columns: 172 us unsplit, 190 at four splits). So: double
  // the splits until there are 6144 warps, while each part keeps two 32-chunk rounds.
  GemvConfig c{1, 4};
  if (m != 1) return c;
  const int64_t chunks = k / 8;
  while (c.k_splits < 8 && n * c.k_splits < 6144 && chunks / (2 * c.k_splits) >= 64) {
    c.k_splits *= 2;
  }
  return c;
}

absl::Status SmallBatchLinear(const void* x, const void* w, void* y, int64_t m, int64_t n,
                              int64_t k, bool f32_out, GemvConfig config, void* stream) {
  if (m < 1 || m > kGemvMaxRows || n <= 0 || k <= 0 || k % 8 != 0 || !Aligned16(x) ||
      !Aligned16(w)) {
    return absl::InvalidArgumentError(absl::StrCat("SmallBatchLinear: m / n / k: expected 1..",
                                                   kGemvMaxRows,
                                                   " / > 0 / a multiple of 8 "
                                                   "(16-byte aligned operands), found ",
                                                   m, " / ", n, " / ", k));
  }
  return Gemv(x, w, y, m, n, k, f32_out, config, AsStream(stream));
}

absl::Status SkinnyLinear(const void* x, const void* w, void* y, int64_t m, int64_t n, int64_t k,
                          bool f32_out, void* stream) {
  if (m < 1 || m > kSkinnyMaxRows || n <= 0 || k <= 0 || k % 32 != 0 || !Aligned16(x) ||
      !Aligned16(w)) {
    return absl::InvalidArgumentError(absl::StrCat("SkinnyLinear: m / n / k: expected 1..",
                                                   kSkinnyMaxRows,
                                                   " / > 0 / a multiple of 32 "
                                                   "(16-byte aligned operands), found ",
                                                   m, " / ", n, " / ", k));
  }
  return Skinny(x, w, y, m, n, k, f32_out, AsStream(stream));
}

absl::StatusOr<bool> GemmAutotuneFromEnvironment() {
  return EnvSwitch("FLUXATTN_CUDA_GEMM_TUNE", false);
}

absl::StatusOr<std::unique_ptr<Gemm>> Gemm::Create(size_t workspace_bytes, bool small_batch_kernel,
                                                   bool autotune) {
  cublasLtHandle_t handle = nullptr;
  FLUXATTN_RETURN_IF_LT(cublasLtCreate(&handle), "cublasLtCreate");
  void* workspace = nullptr;
  if (workspace_bytes > 0) {
    const cudaError_t err = cudaMalloc(&workspace, workspace_bytes);
    if (err != cudaSuccess) {
      cublasLtDestroy(handle);
      return CudaStatus(err, "Gemm::Create", "cudaMalloc(workspace)");
    }
  }
  return std::unique_ptr<Gemm>(
      new LtGemm(handle, workspace, workspace_bytes, small_batch_kernel, autotune));
}

}  // namespace fluxattn::kernels::cuda
