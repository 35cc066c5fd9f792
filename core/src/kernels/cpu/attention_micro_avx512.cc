// AVX-512 versions of the attention micro-kernels Gemm and GemmAT (attention_micro_kernels.h):
// 8 x 32 tiles of C in 16 registers (4 x 16 at the edges). Every element is accumulated in the
// same order with the same fused multiply-adds as the portable versions built for x86-64-v4, so
// results do not change with the tile shape.
#include "kernels/cpu/attention_micro_avx512.h"

#include <immintrin.h>

#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")

namespace fluxattn::cpu_kernels {
namespace {

// A[i][p] at a[i * ars + p * acs]: row-major A has (lda, 1), transposed A has (1, ldat).
template <int MR, int NV>
inline void Tile(int k, const float* __restrict a, int64_t ars, int64_t acs,
                 const float* __restrict b, int ldb, float* __restrict c, int ldc,
                 bool accumulate) {
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      acc[r][v] = accumulate ? _mm512_loadu_ps(c + static_cast<int64_t>(r) * ldc + 16 * v)
                             : _mm512_setzero_ps();
    }
  }
  for (int p = 0; p < k; ++p) {
    const float* bp = b + static_cast<int64_t>(p) * ldb;
    __m512 bv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_ps(bp + 16 * v);
    const float* ap = a + p * acs;
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512 x = _mm512_set1_ps(ap[r * ars]);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(x, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      _mm512_storeu_ps(c + static_cast<int64_t>(r) * ldc + 16 * v, acc[r][v]);
    }
  }
}

void RunTiles(int m, int n, int k, const float* a, int64_t ars, int64_t acs, const float* b,
              int ldb, float* c, int ldc, bool accumulate) {
  for (int i = 0; i < m;) {
    const int mr = m - i >= 8 ? 8 : 4;
    const float* ai = a + i * ars;
    float* ci = c + static_cast<int64_t>(i) * ldc;
    int j = 0;
    if (mr == 8) {
      for (; j + 32 <= n; j += 32) Tile<8, 2>(k, ai, ars, acs, b + j, ldb, ci + j, ldc, accumulate);
      for (; j < n; j += 16) Tile<8, 1>(k, ai, ars, acs, b + j, ldb, ci + j, ldc, accumulate);
    } else {
      for (; j + 32 <= n; j += 32) Tile<4, 2>(k, ai, ars, acs, b + j, ldb, ci + j, ldc, accumulate);
      for (; j < n; j += 16) Tile<4, 1>(k, ai, ars, acs, b + j, ldb, ci + j, ldc, accumulate);
    }
    i += mr;
  }
}

// B rows far apart (keys and values read in place from KV pages, a few KiB apart) fall into the
// same L1 sets; such a B is copied in chunks of kKc x kNc into a contiguous buffer first. Splitting
// k into chunks stores and reloads C between them, which changes no result.
constexpr int kKc = 64;
constexpr int kNc = 256;

void Run(int m, int n, int k, const float* a, int64_t ars, int64_t acs, const float* b, int ldb,
         float* c, int ldc, bool accumulate) {
  if (ldb <= n + 16 || m < 8) {
    RunTiles(m, n, k, a, ars, acs, b, ldb, c, ldc, accumulate);
    return;
  }
  alignas(64) static thread_local float packed[kKc * kNc];
  for (int p0 = 0; p0 < k; p0 += kKc) {
    const int kc = k - p0 < kKc ? k - p0 : kKc;
    for (int j0 = 0; j0 < n; j0 += kNc) {
      const int nc = n - j0 < kNc ? n - j0 : kNc;  // a multiple of 16, as n is
      for (int p = 0; p < kc; ++p) {
        const float* src = b + static_cast<int64_t>(p0 + p) * ldb + j0;
        float* dst = packed + p * nc;
        for (int j = 0; j < nc; j += 16) _mm512_store_ps(dst + j, _mm512_loadu_ps(src + j));
      }
      RunTiles(m, nc, kc, a + p0 * acs, ars, acs, packed, nc, c + j0, ldc, accumulate || p0 > 0);
    }
  }
}

}  // namespace

void GemmAvx512(int m, int n, int k, const float* a, int lda, const float* b, int ldb, float* c,
                int ldc, bool accumulate) {
  Run(m, n, k, a, lda, 1, b, ldb, c, ldc, accumulate);
}

void GemmATAvx512(int m, int n, int k, const float* at, int ldat, const float* b, int ldb, float* c,
                  int ldc, bool accumulate) {
  Run(m, n, k, at, 1, ldat, b, ldb, c, ldc, accumulate);
}

// TokenScores (attention_micro_kernels.h) on AVX-512: one load of a key chunk serves the up to
// eight query heads of its group, and each sum is the same 16 lanes reduced by the same tree
// (the upper half of every width onto the lower).
void TokenScoresAvx512(const float* kt, int hkv, int group, int d, const float* q, int ldq,
                       float* s) {
  const __mmask16 tail = static_cast<__mmask16>((1u << (d % 16)) - 1);
  for (int h = 0; h < hkv; ++h) {
    const float* k = kt + static_cast<int64_t>(h) * d;
    for (int g0 = 0; g0 < group; g0 += 8) {
      const int gn = group - g0 < 8 ? group - g0 : 8;
      const float* q0 = q + static_cast<int64_t>(h * group + g0) * ldq;
      __m512 acc[8];
#pragma GCC unroll 8
      for (int g = 0; g < 8; ++g) acc[g] = _mm512_setzero_ps();
      int p = 0;
      for (; p + 16 <= d; p += 16) {
        const __m512 kv = _mm512_loadu_ps(k + p);
#pragma GCC unroll 8
        for (int g = 0; g < 8; ++g) {
          if (g < gn) acc[g] = _mm512_fmadd_ps(kv, _mm512_loadu_ps(q0 + g * ldq + p), acc[g]);
        }
      }
      if (p < d) {
        const __m512 kv = _mm512_maskz_loadu_ps(tail, k + p);
        for (int g = 0; g < gn; ++g) {
          acc[g] = _mm512_mask3_fmadd_ps(kv, _mm512_maskz_loadu_ps(tail, q0 + g * ldq + p), acc[g],
                                         tail);
        }
      }
      for (int g = 0; g < gn; ++g) {
        const __m256 s8 =
            _mm256_add_ps(_mm512_castps512_ps256(acc[g]),
                          _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[g]), 1)));
        const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
        const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        const __m128 s1 = _mm_add_ss(s2, _mm_movehdup_ps(s2));
        s[h * group + g0 + g] = _mm_cvtss_f32(s1);
      }
    }
  }
}

// TokenValues on AVX-512: a value chunk is loaded once for every query head of its group.
void TokenValuesAvx512(const float* vt, int hkv, int group, int d, const float* w, float* acc,
                       int ldacc) {
  const __mmask16 tail = static_cast<__mmask16>((1u << (d % 16)) - 1);
  for (int h = 0; h < hkv; ++h) {
    const float* v = vt + static_cast<int64_t>(h) * d;
    float* a0 = acc + static_cast<int64_t>(h * group) * ldacc;
    const float* w0 = w + h * group;
    int c = 0;
    for (; c + 16 <= d; c += 16) {
      const __m512 vv = _mm512_loadu_ps(v + c);
      for (int g = 0; g < group; ++g) {
        float* a = a0 + static_cast<int64_t>(g) * ldacc + c;
        _mm512_storeu_ps(a, _mm512_fmadd_ps(_mm512_set1_ps(w0[g]), vv, _mm512_loadu_ps(a)));
      }
    }
    if (c < d) {
      const __m512 vv = _mm512_maskz_loadu_ps(tail, v + c);
      for (int g = 0; g < group; ++g) {
        float* a = a0 + static_cast<int64_t>(g) * ldacc + c;
        _mm512_mask_storeu_ps(
            a, tail, _mm512_fmadd_ps(_mm512_set1_ps(w0[g]), vv, _mm512_maskz_loadu_ps(tail, a)));
      }
    }
  }
}

}  // namespace fluxattn::cpu_kernels

#pragma GCC pop_options
#endif
