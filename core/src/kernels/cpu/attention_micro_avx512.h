// AVX-512 builds of Gemm, GemmAT, TokenScores and TokenValues (same contracts as
// attention_micro_kernels.h); call only where the CPU runs x86-64-v4.
#pragma once

namespace fluxattn::cpu_kernels {

void GemmAvx512(int m, int n, int k, const float* a, int lda, const float* b, int ldb, float* c,
                int ldc, bool accumulate);
void GemmATAvx512(int m, int n, int k, const float* at, int ldat, const float* b, int ldb, float* c,
                  int ldc, bool accumulate);

void TokenScoresAvx512(const float* kt, int hkv, int group, int d, const float* q, int ldq,
                       float* s);
void TokenValuesAvx512(const float* const* v, const float* const* w, int n, int hkv, int group,
                       int d, float* acc, int ldacc);

}  // namespace fluxattn::cpu_kernels
