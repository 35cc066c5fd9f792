// cpu::Linear with bfloat16 activations and bfloat16 weights on AVX512-BF16: the activations are
// rounded to bfloat16 (to nearest, ties to even) and packed once per product; every output is 16
// float32 lanes of `vdpbf16ps` partial sums (each step adds two products per lane, 32 elements of
// k), summed like the float32 tiles. 4 weight rows x 6 activation rows per tile.
//
// The per-element operations do not depend on how the weights are read (in place for a few
// activation rows, packed per task for more) nor on the split over threads: the k tail is zero
// in both, so decode gives prefill's bits here too.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/cpu/linear_block.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma")

#include "kernels/cpu/avx512_sum.h"

namespace fluxattn::cpu::internal {
namespace {

constexpr int kStep = kBf16Step;
constexpr int kRows = 4;  // weight rows per tile
constexpr int kCols = kBf16GroupRows;

inline int64_t MinI(int64_t a, int64_t b) { return a < b ? a : b; }

inline float Sum(__m512 v) { return cpu_simd::SumLanes16(v); }

// 32 bfloat16 of row `w` from element p, zeros past k.
inline __m512i LoadRow(const uint16_t* w, int64_t p, int64_t k) {
  if (p + kStep <= k) return _mm512_loadu_si512(w + p);
  const __mmask32 mask = static_cast<__mmask32>((uint64_t{1} << (k - p)) - 1);
  return _mm512_maskz_loadu_epi16(mask, w + p);
}

// R weight rows x C packed activation rows over `steps` steps of 32; load(r, s) gives step s of
// weight row r. Output (r, c) goes to y[c * ldy + r * ys], plus bias[r * ys].
template <int R, int C, typename LoadW>
inline void TileBody(const uint16_t* xp, int64_t steps, const LoadW& load, const float* bias,
                     int64_t ys, float* y, int64_t ldy) {
  __m512 acc[R][C];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  }
  for (int64_t s = 0; s < steps; ++s) {
    __m512i wv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) wv[r] = load(r, s);
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const __m512i xv = _mm512_loadu_si512(xp + (s * C + c) * kStep);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        acc[r][c] = _mm512_dpbf16_ps(acc[r][c], (__m512bh)wv[r], (__m512bh)xv);
      }
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < C; ++c) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const float v = Sum(acc[r][c]);
      y[c * ldy + r * ys] = bias != nullptr ? v + bias[r * ys] : v;
    }
  }
}

// Weight row r at w + r * wrs, read in place.
template <int R, int C>
void TileInPlace(const uint16_t* xp, const uint16_t* w, int64_t wrs, int64_t k, const float* bias,
                 int64_t ys, float* y, int64_t ldy) {
  TileBody<R, C>(
      xp, (k + kStep - 1) / kStep,
      [&](int r, int64_t s) { return LoadRow(w + r * wrs, s * kStep, k); }, bias, ys, y, ldy);
}

// Weight rows packed [step][row][32].
template <int R, int C>
void TilePacked(const uint16_t* xp, const uint16_t* wp, int64_t steps, const float* bias, float* y,
                int64_t ldy) {
  TileBody<R, C>(
      xp, steps, [&](int r, int64_t s) { return _mm512_loadu_si512(wp + (s * R + r) * kStep); },
      bias, 1, y, ldy);
}

using InPlaceFn = void (*)(const uint16_t*, const uint16_t*, int64_t, int64_t, const float*,
                           int64_t, float*, int64_t);
using PackedFn = void (*)(const uint16_t*, const uint16_t*, int64_t, const float*, float*, int64_t);

template <template <int, int> class Pick, typename Fn, int R>
Fn ByCols(int c) {
  switch (c) {
    case 1:
      return Pick<R, 1>::fn;
    case 2:
      return Pick<R, 2>::fn;
    case 3:
      return Pick<R, 3>::fn;
    case 4:
      return Pick<R, 4>::fn;
    case 5:
      return Pick<R, 5>::fn;
    default:
      return Pick<R, 6>::fn;
  }
}

template <template <int, int> class Pick, typename Fn>
Fn ByShape(int r, int c) {
  switch (r) {
    case 1:
      return ByCols<Pick, Fn, 1>(c);
    case 2:
      return ByCols<Pick, Fn, 2>(c);
    case 3:
      return ByCols<Pick, Fn, 3>(c);
    default:
      return ByCols<Pick, Fn, 4>(c);
  }
}

template <int R, int C>
struct PickInPlace {
  static constexpr InPlaceFn fn = &TileInPlace<R, C>;
};
template <int R, int C>
struct PickPacked {
  static constexpr PackedFn fn = &TilePacked<R, C>;
};

}  // namespace

void PackBf16ActivationsAvx512(const float* x, int64_t ldx, int64_t m, int64_t k, uint16_t* out) {
  const int64_t steps = (k + kStep - 1) / kStep;
  for (int64_t i0 = 0, g = 0; i0 < m; i0 += kCols, ++g) {
    const int64_t c = MinI(kCols, m - i0);
    uint16_t* dst = out + g * kCols * steps * kStep;
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t p = s * kStep;
      const int64_t n = MinI(kStep, k - p);
      for (int64_t cc = 0; cc < c; ++cc) {
        const float* src = x + (i0 + cc) * ldx + p;
        const __mmask16 lo = static_cast<__mmask16>(n >= 16 ? 0xFFFF : (1u << n) - 1);
        const __mmask16 hi =
            static_cast<__mmask16>(n >= 32 ? 0xFFFF : (n > 16 ? (1u << (n - 16)) - 1 : 0));
        const __m512 a = _mm512_maskz_loadu_ps(lo, src);
        const __m512 b = _mm512_maskz_loadu_ps(hi, src + 16);
        // Element 2i and 2i + 1 of the 32 are a pair of one lane: b's values go high.
        const __m512bh pairs = _mm512_cvtne2ps_pbh(b, a);
        _mm512_storeu_si512(dst + (s * c + cc) * kStep, (__m512i)pairs);
      }
    }
  }
}

void LinearBlockAvx512Bf16(const uint16_t* xpacked, int64_t m, const uint16_t* w, int64_t n0,
                           int64_t n1, int64_t k, const float* bias, float* y, int64_t ldy,
                           void* scratch) {
  const int64_t steps = (k + kStep - 1) / kStep;
  auto row = [&](int64_t j) { return w + j * k; };
  if (m <= kCols || scratch == nullptr) {
    int64_t j0 = n0;
    if (m <= kCols) {
      // One group of activation rows: tiles take rows j, j + q, j + 2q, j + 3q (four long
      // sequential streams), as the float32 blocks do.
      const InPlaceFn fn = ByShape<PickInPlace, InPlaceFn>(kRows, static_cast<int>(m));
      const int64_t q = (n1 - n0) / kRows;
      for (int64_t j = n0; j < n0 + q; ++j) {
        fn(xpacked, row(j), q * k, k, bias != nullptr ? bias + j : nullptr, q, y + j, ldy);
      }
      j0 = n0 + q * kRows;
    }
    for (int64_t i = 0, g = 0; i < m; i += kCols, ++g) {
      const int c = static_cast<int>(MinI(kCols, m - i));
      for (int64_t j = j0; j < n1; j += kRows) {
        const int r = static_cast<int>(MinI(kRows, n1 - j));
        ByShape<PickInPlace, InPlaceFn>(r, c)(xpacked + g * kCols * steps * kStep, row(j), k, k,
                                              bias != nullptr ? bias + j : nullptr, 1,
                                              y + i * ldy + j, ldy);
      }
    }
    return;
  }
  // Pack this task's weight rows tile by tile: [step][row][32], zero-padded.
  uint16_t* wp = static_cast<uint16_t*>(scratch);
  for (int64_t j = n0; j < n1; j += kRows) {
    const int64_t r = MinI(kRows, n1 - j);
    uint16_t* dst = wp + (j - n0) * steps * kStep;
    for (int64_t s = 0; s < steps; ++s) {
      for (int64_t rr = 0; rr < r; ++rr) {
        _mm512_storeu_si512(dst + (s * r + rr) * kStep, LoadRow(row(j + rr), s * kStep, k));
      }
    }
  }
  const PackedFn full = ByShape<PickPacked, PackedFn>(kRows, kCols);
  for (int64_t i = 0, g = 0; i < m; i += kCols, ++g) {
    const int c = static_cast<int>(MinI(kCols, m - i));
    const uint16_t* xg = xpacked + g * kCols * steps * kStep;
    for (int64_t j = n0; j < n1; j += kRows) {
      const int r = static_cast<int>(MinI(kRows, n1 - j));
      const PackedFn fn = (r == kRows && c == kCols) ? full : ByShape<PickPacked, PackedFn>(r, c);
      fn(xg, wp + (j - n0) * steps * kStep, steps, bias != nullptr ? bias + j : nullptr,
         y + i * ldy + j, ldy);
    }
  }
}

}  // namespace fluxattn::cpu::internal

#pragma GCC pop_options
#endif
