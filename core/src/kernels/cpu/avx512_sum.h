// The sum of the 16 lanes of a __m512 by a fixed tree (the upper half of every width added onto
// the lower), shared by the AVX-512 kernels. Include it inside a region compiled for AVX-512
// (after `#pragma GCC target(...)`); every includer is such a translation unit.
#pragma once

#include <immintrin.h>

namespace fluxattn::cpu_simd {

inline float SumLanes16(__m512 v) {
  const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v),
                                  _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  const __m128 s1 = _mm_add_ss(s2, _mm_movehdup_ps(s2));
  return _mm_cvtss_f32(s1);
}

}  // namespace fluxattn::cpu_simd
