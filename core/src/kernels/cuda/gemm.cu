// y = x W^T on cuBLASLt (bf16 operands, f32 accumulation). Row-major y [m, n] is column-major
// y^T [n, m] = W (column-major [k, n], transposed) times x^T (column-major [k, m]), so the
// checkpoint's [out, in] weights are used as stored. Descriptors and the heuristic's algorithm
// are cached per shape, so a step's GEMMs ask the heuristic once.
//
// Decode batches (m <= 8 rows) take a bandwidth kernel instead: there the product is a read of W
// (every weight once), and cuBLASLt's tiles are built for larger m. One warp per output column
// streams its row of W in 16-byte loads (several in flight per lane, no L1 allocation: weights are
// read once) and multiplies it with every row of x (small, cached); a warp reduction ends it.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <tuple>

#include "cuda_check.cuh"
#include "fluxattn/kernels/cuda_model_ops.h"
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
constexpr int kGemvUnroll = 4;

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

// y[r, col] = sum_t x[r, t] * w[col, t] for r < M; k % 8 == 0, rows 16-byte aligned. Launched
// with programmatic dependent launch (pdl.cuh) like the model's other decode kernels.
template <int M>
__global__ void __launch_bounds__(256)
    GemvKernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, void* y,
               int64_t n, int64_t k, bool f32_out) {
  PdlLaunchDependents();
  PdlWait();
  const int lane = threadIdx.x % 32;
  const int64_t col = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32;
  if (col >= n) return;
  const int64_t chunks = k / 8;
  const uint4* wr = reinterpret_cast<const uint4*>(w + col * k);
  const uint4* xr = reinterpret_cast<const uint4*>(x);
  float acc[M];
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = 0.f;
  int64_t c = lane;
  for (; c + 32 * (kGemvUnroll - 1) < chunks; c += 32 * kGemvUnroll) {
    uint4 wv[kGemvUnroll];
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) wv[u] = LoadStreaming(wr + c + 32 * u);
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
#pragma unroll
      for (int r = 0; r < M; ++r) acc[r] += Dot8(wv[u], __ldg(xr + r * chunks + c + 32 * u));
    }
  }
  for (; c < chunks; c += 32) {
    const uint4 wv = LoadStreaming(wr + c);
#pragma unroll
    for (int r = 0; r < M; ++r) acc[r] += Dot8(wv, __ldg(xr + r * chunks + c));
  }
#pragma unroll
  for (int r = 0; r < M; ++r) {
#pragma unroll
    for (int off = 16; off > 0; off /= 2) acc[r] += __shfl_xor_sync(0xffffffff, acc[r], off);
  }
  if (lane == 0) {
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

template <int M>
cudaError_t LaunchGemv(const void* x, const void* w, void* y, int64_t n, int64_t k, bool f32,
                       cudaStream_t stream) {
  constexpr int kWarps = 8;
  const unsigned blocks = static_cast<unsigned>((n + kWarps - 1) / kWarps);
  return LaunchPdl(GemvKernel<M>, blocks, kWarps * 32, 0, stream,
                   static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(w), y, n,
                   k, f32);
}

absl::Status Gemv(const void* x, const void* w, void* y, int64_t m, int64_t n, int64_t k, bool f32,
                  cudaStream_t stream) {
  cudaError_t err = cudaSuccess;
  switch (m) {
    case 1:
      err = LaunchGemv<1>(x, w, y, n, k, f32, stream);
      break;
    case 2:
      err = LaunchGemv<2>(x, w, y, n, k, f32, stream);
      break;
    case 3:
      err = LaunchGemv<3>(x, w, y, n, k, f32, stream);
      break;
    case 4:
      err = LaunchGemv<4>(x, w, y, n, k, f32, stream);
      break;
    case 5:
      err = LaunchGemv<5>(x, w, y, n, k, f32, stream);
      break;
    case 6:
      err = LaunchGemv<6>(x, w, y, n, k, f32, stream);
      break;
    case 7:
      err = LaunchGemv<7>(x, w, y, n, k, f32, stream);
      break;
    default:
      err = LaunchGemv<8>(x, w, y, n, k, f32, stream);
      break;
  }
  FLUXATTN_RETURN_IF_CUDA(err, "Gemm (small batch)", "kernel launch");
  return LaunchStatus("Gemm (small batch)");
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

class LtGemm final : public Gemm {
 public:
  LtGemm(cublasLtHandle_t handle, void* workspace, size_t bytes, bool small_batch_kernel)
      : handle_(handle),
        workspace_(workspace),
        workspace_bytes_(bytes),
        small_batch_kernel_(small_batch_kernel) {}
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
    const bool small = m == 1 || (m <= kGemvMaxRows && n * k <= (int64_t{4} << 20));
    if (small_batch_kernel_ && small && k % 8 == 0 && Aligned16(x) && Aligned16(w)) {
      return Gemv(x, w, y, m, n, k, out_type == OutputType::kF32, AsStream(stream));
    }
    const Plan* plan = nullptr;
    FLUXATTN_RETURN_IF_ERROR(GetPlan(m, n, k, out_type, &plan));
    const float alpha = 1.f, beta = 0.f;
    FLUXATTN_RETURN_IF_LT(
        cublasLtMatmul(handle_, plan->op, &alpha, w, plan->a, x, plan->b, &beta, y, plan->c, y,
                       plan->c, &plan->algo, workspace_, workspace_bytes_, AsStream(stream)),
        "cublasLtMatmul");
    return absl::OkStatus();
  }

 private:
  absl::Status GetPlan(int64_t m, int64_t n, int64_t k, OutputType out_type, const Plan** out) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto key = std::make_tuple(m, n, k, static_cast<int>(out_type));
    auto it = plans_.find(key);
    if (it != plans_.end()) {
      *out = &it->second;
      return absl::OkStatus();
    }
    Plan plan;
    const cudaDataType_t yt = out_type == OutputType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
    FLUXATTN_RETURN_IF_LT(cublasLtMatmulDescCreate(&plan.op, CUBLAS_COMPUTE_32F, CUDA_R_32F),
                          "cublasLtMatmulDescCreate");
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    FLUXATTN_RETURN_IF_LT(
        cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)),
        "set TRANSA");
    FLUXATTN_RETURN_IF_LT(
        cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)),
        "set TRANSB");
    FLUXATTN_RETURN_IF_LT(cublasLtMatrixLayoutCreate(&plan.a, CUDA_R_16BF, k, n, k), "layout W");
    FLUXATTN_RETURN_IF_LT(cublasLtMatrixLayoutCreate(&plan.b, CUDA_R_16BF, k, m, k), "layout x");
    FLUXATTN_RETURN_IF_LT(cublasLtMatrixLayoutCreate(&plan.c, yt, n, m, n), "layout y");
    cublasLtMatmulPreference_t pref = nullptr;
    FLUXATTN_RETURN_IF_LT(cublasLtMatmulPreferenceCreate(&pref), "preference");
    FLUXATTN_RETURN_IF_LT(
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                             &workspace_bytes_, sizeof(workspace_bytes_)),
        "preference workspace");
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(
        handle_, plan.op, plan.a, plan.b, plan.c, plan.c, pref, 1, &result, &found);
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
    plan.algo = result.algo;
    auto [pos, inserted] = plans_.emplace(key, plan);
    *out = &pos->second;
    return absl::OkStatus();
  }

  cublasLtHandle_t handle_;
  void* workspace_;
  size_t workspace_bytes_;
  bool small_batch_kernel_;
  std::mutex mu_;
  std::map<std::tuple<int64_t, int64_t, int64_t, int>, Plan> plans_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Gemm>> Gemm::Create(size_t workspace_bytes,
                                                   bool small_batch_kernel) {
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
  return std::unique_ptr<Gemm>(new LtGemm(handle, workspace, workspace_bytes, small_batch_kernel));
}

}  // namespace fluxattn::kernels::cuda
