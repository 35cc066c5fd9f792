// The micro-kernels of the CPU attention kernel: register-blocked float32 products on tiles and
// the exponential of the online softmax. Each is compiled for baseline x86-64, AVX2+FMA and
// AVX-512; the loader picks the best the CPU runs.
#pragma once

namespace fluxattn::cpu_kernels {

// C[m x n] = (accumulate ? C : 0) + A[m x k] B[k x n], with m % 4 == 0 and n % 16 == 0. The 4x16
// block of C stays in registers while k runs.
void Gemm(int m, int n, int k, const float* __restrict a, int lda, const float* __restrict b,
          int ldb, float* __restrict c, int ldc, bool accumulate);

// Like Gemm, with A given transposed: A[i][p] = at[p * ldat + i].
void GemmAT(int m, int n, int k, const float* __restrict at, int ldat, const float* __restrict b,
            int ldb, float* __restrict c, int ldc, bool accumulate);

// x[i] = exp(x[i]) for x[i] <= 0 (including -inf, which gives exactly 0), within ~2 ulp.
void ExpNonPositiveInPlace(float* __restrict x, int n);

// One online-softmax step over a tile of transposed scores st[n][rows] (rows <= 64; the tiles
// pass a multiple of 16, the decode path its query heads): per row i the new maximum m[i] over the
// tile and the old m[i], the correction exp(old m - new m) of the earlier sum l[i] and of the first
// rows4 output rows acc[i][0:d] (stride dp), and the probabilities exp(s - m) in place of the
// scores. A row that has seen only -inf keeps m = -inf and probabilities 0.
void SoftmaxStep(float* __restrict st, int n, int rows, int rows4, float* __restrict m,
                 float* __restrict l, float* __restrict acc, int dp, int d);

// One key position against the queries of every head (decode): s[hq] = sum_p k_h[p] q_hq[p] for
// hq < hkv * group, with k_h = kt + h * d the key of KV head h = hq / group (the heads of a
// position are contiguous in the pool) and q_hq = q + hq * ldq. Each sum runs in 16 partial
// lanes over p in steps of 16, then a fixed tree: the order never depends on the caller.
void TokenScores(const float* __restrict kt, int hkv, int group, int d, const float* __restrict q,
                 int ldq, float* __restrict s);

// Positions j = 0 .. n-1 added to the outputs of every head: acc[hq * ldacc + c] += w_j[hq] *
// v_jh[c] for c < d, with w_j = w[j], v_jh = v[j] + h * d, h = hq / group; one fused
// multiply-add per position in ascending j for each element, whatever the ISA level blocks.
void TokenValues(const float* const* v, const float* const* w, int n, int hkv, int group, int d,
                 float* __restrict acc, int ldacc);

}  // namespace fluxattn::cpu_kernels
