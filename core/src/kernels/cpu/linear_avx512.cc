// cpu::Linear blocks for AVX-512 (F, BW, DQ, VL): 4 weight rows x 6 activation rows of 16-lane
// partial sums per tile.
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/linear_block.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")

#include "kernels/cpu/avx512_sum.h"

namespace fluxattn::cpu::internal {
namespace {

inline float F16BitsToFloat(uint16_t h) {
  return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

struct Ops {
  using V = __m512;
  static constexpr int kLanes = 16;
  static V Zero() { return _mm512_setzero_ps(); }
  static V Load(const float* p) { return _mm512_loadu_ps(p); }
  template <int T>
  static V LoadW(const void* w, int64_t i) {
    if constexpr (T == 0) {
      return _mm512_loadu_ps(static_cast<const float*>(w) + i);
    } else {
      const __m256i h =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(w) + i));
      if constexpr (T == 1) {
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
      } else {
        return _mm512_cvtph_ps(h);
      }
    }
  }
  static V Fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static float Sum(V v) { return cpu_simd::SumLanes16(v); }
};

constexpr int kTileRows = 4;
constexpr int kTileCols = 6;

#include "kernels/cpu/linear_block_impl.inc"

}  // namespace

void LinearBlockAvx512(const float* x, int64_t ldx, int64_t m, const void* w, int w_type,
                       int64_t n0, int64_t n1, int64_t k, const float* bias, float* y, int64_t ldy,
                       const float* xpacked, void* scratch) {
  BlockAnyType(x, ldx, m, w, w_type, n0, n1, k, bias, y, ldy, xpacked, scratch);
}

LinearTileShape LinearShapeAvx512() { return kShape; }

}  // namespace fluxattn::cpu::internal

#pragma GCC pop_options
#endif
