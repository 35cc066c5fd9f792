// cpu::Linear blocks for baseline x86-64 (SSE2) and other architectures: GCC vector types of 4
// lanes, multiply then add (no FMA).
#include <cstdint>

#include "kernels/cpu/linear_block.h"

namespace fluxattn {
float F16ToFloat(uint16_t bits);  // fluxattn/tensor.h
}

namespace fluxattn::cpu::internal {
namespace {

inline float F16BitsToFloat(uint16_t h) { return F16ToFloat(h); }

struct Ops {
  typedef float V __attribute__((vector_size(16)));
  static constexpr int kLanes = 4;
  static V Zero() { return V{0.0f, 0.0f, 0.0f, 0.0f}; }
  static V Load(const float* p) {
    V v;
    __builtin_memcpy(&v, p, sizeof(v));
    return v;
  }
  template <int T>
  static V LoadW(const void* w, int64_t i);
  static V Fma(V a, V b, V c) { return c + a * b; }
  static float Sum(V v) { return (v[0] + v[2]) + (v[1] + v[3]); }
};

constexpr int kTileRows = 4;
constexpr int kTileCols = 2;

#include "kernels/cpu/linear_block_impl.inc"

template <int T>
Ops::V Ops::LoadW(const void* w, int64_t i) {
  if constexpr (T == 0) {
    return Load(static_cast<const float*>(w) + i);
  } else {
    return V{LoadScalar(w, T, i), LoadScalar(w, T, i + 1), LoadScalar(w, T, i + 2),
             LoadScalar(w, T, i + 3)};
  }
}

}  // namespace

void LinearBlockBaseline(const float* x, int64_t ldx, int64_t m, const void* w, int w_type,
                         int64_t n0, int64_t n1, int64_t k, const float* bias, float* y,
                         int64_t ldy, const float* xpacked, void* scratch) {
  BlockAnyType(x, ldx, m, w, w_type, n0, n1, k, bias, y, ldy, xpacked, scratch);
}

LinearTileShape LinearShapeBaseline() { return kShape; }

}  // namespace fluxattn::cpu::internal
