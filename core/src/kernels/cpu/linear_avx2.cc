// cpu::Linear blocks for AVX2 + FMA + F16C (x86-64-v3): 3 weight rows x 4 activation rows of
// 8-lane partial sums per tile (12 accumulators of the 16 registers).
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/linear_block.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

namespace fluxattn::cpu::internal {
namespace {

inline float F16BitsToFloat(uint16_t h) {
  return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

struct Ops {
  using V = __m256;
  static constexpr int kLanes = 8;
  static V Zero() { return _mm256_setzero_ps(); }
  static V Load(const float* p) { return _mm256_loadu_ps(p); }
  template <int T>
  static V LoadW(const void* w, int64_t i) {
    if constexpr (T == 0) {
      return _mm256_loadu_ps(static_cast<const float*>(w) + i);
    } else {
      const __m128i h =
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + i));
      if constexpr (T == 1) {
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
      } else {
        return _mm256_cvtph_ps(h);
      }
    }
  }
  static V Fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static float Sum(V v) {
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    const __m128 s1 = _mm_add_ss(s2, _mm_movehdup_ps(s2));
    return _mm_cvtss_f32(s1);
  }
};

constexpr int kTileRows = 3;
constexpr int kTileCols = 4;

#include "kernels/cpu/linear_block_impl.inc"

}  // namespace

void LinearBlockAvx2(const float* x, int64_t ldx, int64_t m, const void* w, int w_type, int64_t n0,
                     int64_t n1, int64_t k, const float* bias, float* y, int64_t ldy,
                     const float* xpacked, void* scratch) {
  BlockAnyType(x, ldx, m, w, w_type, n0, n1, k, bias, y, ldy, xpacked, scratch);
}

LinearTileShape LinearShapeAvx2() { return kShape; }

}  // namespace fluxattn::cpu::internal

#pragma GCC pop_options
#endif
