// y = x W^T on cuBLASLt (bf16 operands, f32 accumulation). Row-major y [m, n] is column-major
// y^T [n, m] = W (column-major [k, n], transposed) times x^T (column-major [k, m]), so the
// checkpoint's [out, in] weights are used as stored. Descriptors and the heuristic's algorithm
// are cached per shape, so a step's GEMMs ask the heuristic once.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <tuple>

#include "cuda_check.cuh"
#include "fluxattn/kernels/cuda_model_ops.h"

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

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

class LtGemm final : public Gemm {
 public:
  LtGemm(cublasLtHandle_t handle, void* workspace, size_t bytes)
      : handle_(handle), workspace_(workspace), workspace_bytes_(bytes) {}
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
  std::mutex mu_;
  std::map<std::tuple<int64_t, int64_t, int64_t, int>, Plan> plans_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Gemm>> Gemm::Create(size_t workspace_bytes) {
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
  return std::unique_ptr<Gemm>(new LtGemm(handle, workspace, workspace_bytes));
}

}  // namespace fluxattn::kernels::cuda
