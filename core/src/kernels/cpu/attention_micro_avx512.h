// AVX-512 builds of Gemm and GemmAT (same contracts as attention_micro_kernels.h); call only
// where the CPU runs x86-64-v4.
#pragma once

namespace fluxattn::cpu_kernels {

void GemmAvx512(int m, int n, int k, const float* a, int lda, const float* b, int ldb, float* c,
                int ldc, bool accumulate);
void GemmATAvx512(int m, int n, int k, const float* at, int ldat, const float* b, int ldb, float* c,
                  int ldc, bool accumulate);

}  // namespace fluxattn::cpu_kernels
