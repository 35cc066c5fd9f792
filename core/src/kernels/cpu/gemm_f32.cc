#include <cstdint>

#include "fluxattn/attention/cpu_gemm.h"
#include "kernels/cpu/attention_micro_kernels.h"

namespace fluxattn {

void GemmF32(int m, int n, int k, const float* a, int lda, const float* b, int ldb, float* c,
             int ldc, bool accumulate) {
  const int m4 = m / 4 * 4;
  const int n16 = n / 16 * 16;
  if (m4 > 0 && n16 > 0) cpu_kernels::Gemm(m4, n16, k, a, lda, b, ldb, c, ldc, accumulate);
  // Edges the micro-kernel does not cover: plain loops.
  auto edge = [&](int i0, int i1, int j0, int j1) {
    for (int i = i0; i < i1; ++i) {
      for (int j = j0; j < j1; ++j) {
        float sum = accumulate ? c[static_cast<int64_t>(i) * ldc + j] : 0.0f;
        for (int p = 0; p < k; ++p) {
          sum += a[static_cast<int64_t>(i) * lda + p] * b[static_cast<int64_t>(p) * ldb + j];
        }
        c[static_cast<int64_t>(i) * ldc + j] = sum;
      }
    }
  };
  edge(0, m4, n16, n);
  edge(m4, m, 0, n);
}

}  // namespace fluxattn
