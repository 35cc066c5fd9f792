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

#include "kernels/cpu/avx512_sum.h"

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

// One KV head's key against G query rows q0 + g * ldq (G known at compile time, or up to 8
// given by gn when G is 0).
template <int G>
inline void HeadScores(const float* k, int d, const float* q0, int ldq, int gn, __mmask16 tail,
                       float* s) {
  constexpr int kMax = G > 0 ? G : 8;
  const int count = G > 0 ? G : gn;
  __m512 acc[kMax];
#pragma GCC unroll 8
  for (int g = 0; g < kMax; ++g) acc[g] = _mm512_setzero_ps();
  int p = 0;
  for (; p + 16 <= d; p += 16) {
    const __m512 kv = _mm512_loadu_ps(k + p);
#pragma GCC unroll 8
    for (int g = 0; g < kMax; ++g) {
      if (G > 0 || g < count) {
        acc[g] = _mm512_fmadd_ps(kv, _mm512_loadu_ps(q0 + g * ldq + p), acc[g]);
      }
    }
  }
  if (p < d) {
    const __m512 kv = _mm512_maskz_loadu_ps(tail, k + p);
    for (int g = 0; g < count; ++g) {
      acc[g] =
          _mm512_mask3_fmadd_ps(kv, _mm512_maskz_loadu_ps(tail, q0 + g * ldq + p), acc[g], tail);
    }
  }
  for (int g = 0; g < count; ++g) s[g] = cpu_simd::SumLanes16(acc[g]);
}

// TokenScores (attention_micro_kernels.h) on AVX-512: one load of a key chunk serves the query
// heads of its group (specialized for groups of 1, 2, 4 and 8), and each sum is the same 16
// lanes reduced by the same tree (the upper half of every width onto the lower).
void TokenScoresAvx512(const float* kt, int hkv, int group, int d, const float* q, int ldq,
                       float* s) {
  const __mmask16 tail = static_cast<__mmask16>((1u << (d % 16)) - 1);
  using HeadFn = void (*)(const float*, int, const float*, int, int, __mmask16, float*);
  const HeadFn fixed = group == 1   ? &HeadScores<1>
                       : group == 2 ? &HeadScores<2>
                       : group == 4 ? &HeadScores<4>
                       : group == 8 ? &HeadScores<8>
                                    : nullptr;
  for (int h = 0; h < hkv; ++h) {
    const float* k = kt + static_cast<int64_t>(h) * d;
    const float* qh = q + static_cast<int64_t>(h * group) * ldq;
    float* sh = s + h * group;
    if (fixed != nullptr) {
      fixed(k, d, qh, ldq, group, tail, sh);
      continue;
    }
    for (int g0 = 0; g0 < group; g0 += 8) {
      HeadScores<0>(k, d, qh + static_cast<int64_t>(g0) * ldq, ldq, group - g0 < 8 ? group - g0 : 8,
                    tail, sh + g0);
    }
  }
}

// TokenValues on AVX-512: blocks of up to 8 positions; per (head, 16-column chunk, up to 8 query
// heads) the outputs stay in registers over the block's positions, and each position's value
// chunk is loaded once for the heads of its group.
void TokenValuesAvx512(const float* const* v, const float* const* w, int n, int hkv, int group,
                       int d, float* acc, int ldacc) {
  constexpr int kBlock = 8;
  const __mmask16 tail = static_cast<__mmask16>((1u << (d % 16)) - 1);
  for (int j0 = 0; j0 < n; j0 += kBlock) {
    const int jn = n - j0 < kBlock ? n - j0 : kBlock;
    for (int h = 0; h < hkv; ++h) {
      const int64_t voff = static_cast<int64_t>(h) * d;
      for (int g0 = 0; g0 < group; g0 += 8) {
        const int gn = group - g0 < 8 ? group - g0 : 8;
        const int hq0 = h * group + g0;
        for (int c = 0; c < d; c += 16) {
          const __mmask16 m = c + 16 <= d ? static_cast<__mmask16>(0xffff) : tail;
          __m512 a[8];
          for (int g = 0; g < gn; ++g) {
            a[g] = _mm512_maskz_loadu_ps(m, acc + static_cast<int64_t>(hq0 + g) * ldacc + c);
          }
          for (int j = j0; j < j0 + jn; ++j) {
            const __m512 vv = _mm512_maskz_loadu_ps(m, v[j] + voff + c);
            const float* wj = w[j] + hq0;
            for (int g = 0; g < gn; ++g) a[g] = _mm512_fmadd_ps(_mm512_set1_ps(wj[g]), vv, a[g]);
          }
          for (int g = 0; g < gn; ++g) {
            _mm512_mask_storeu_ps(acc + static_cast<int64_t>(hq0 + g) * ldacc + c, m, a[g]);
          }
        }
      }
    }
  }
}

}  // namespace fluxattn::cpu_kernels

#pragma GCC pop_options
#endif
