// The register-blocked float32 matrix product the CPU attention kernel is built on, for layout
// builders that score blocks with matrix products (XAttention). Compiled for baseline x86-64,
// AVX2+FMA and AVX-512, chosen at load time.
#pragma once

namespace fluxattn {

// C[m x n] = (accumulate ? C : 0) + A[m x k] B[k x n], all row-major with leading dimensions
// lda, ldb, ldc. Any m, n, k >= 0.
void GemmF32(int m, int n, int k, const float* a, int lda, const float* b, int ldb, float* c,
             int ldc, bool accumulate);

}  // namespace fluxattn
