// Per-ISA blocks of cpu::Linear (kernels/cpu_dense.h): each computes y[0:m, n0:n1] for a range of
// weight rows. Declared here, defined in linear_<isa>.cc, each compiled for its level.
#pragma once

#include <cstdint>

namespace fluxattn::cpu::internal {

// `w_type`: 0 float32, 1 bfloat16, 2 float16 (the values of fluxattn::DType). With more than
// `cols` activation rows and `xpacked` set (the activations packed by PackLinearInput for this
// level's shape), the block packs its weight rows into `scratch` (LinearScratchBytes) and runs
// on the packed copies; otherwise it reads x and w in place. Both give the same bits.
using LinearBlockFn = void (*)(const float* x, int64_t ldx, int64_t m, const void* w, int w_type,
                               int64_t n0, int64_t n1, int64_t k, const float* bias, float* y,
                               int64_t ldy, const float* xpacked, void* scratch);

// The tile of a level: `lanes` partial sums per output, `rows` weight rows x `cols` activation
// rows.
struct LinearTileShape {
  int lanes, rows, cols;
};

#define FLUXATTN_LINEAR_LEVEL(Name)                                                         \
  void LinearBlock##Name(const float* x, int64_t ldx, int64_t m, const void* w, int w_type, \
                         int64_t n0, int64_t n1, int64_t k, const float* bias, float* y,    \
                         int64_t ldy, const float* xpacked, void* scratch);                 \
  LinearTileShape LinearShape##Name();

// bfloat16 activations x bfloat16 weights on AVX512-BF16 (linear_avx512bf16.cc). The
// activations are rounded to bfloat16 and packed by PackBf16ActivationsAvx512 into groups of 6
// rows, [step of 32][row][32], zero-padded (m rows take Bf16PackedElems(m, k) elements); with
// more than 6 rows and `scratch` set (Bf16ScratchBytes) the block packs its weight rows too.
void PackBf16ActivationsAvx512(const float* x, int64_t ldx, int64_t m, int64_t k, uint16_t* out);
void LinearBlockAvx512Bf16(const uint16_t* xpacked, int64_t m, const uint16_t* w, int64_t n0,
                           int64_t n1, int64_t k, const float* bias, float* y, int64_t ldy,
                           void* scratch);
constexpr int kBf16GroupRows = 6;  // activation rows per tile (and per packed group)
constexpr int kBf16Step = 32;      // elements of k per dot-product step
inline int64_t Bf16PackedElems(int64_t m, int64_t k) {
  return (m + kBf16GroupRows - 1) / kBf16GroupRows * kBf16GroupRows *
         ((k + kBf16Step - 1) / kBf16Step) * kBf16Step;
}
inline int64_t Bf16ScratchBytes(int64_t rows, int64_t k) {
  return rows * ((k + kBf16Step - 1) / kBf16Step) * kBf16Step * 2;
}

FLUXATTN_LINEAR_LEVEL(Baseline)
FLUXATTN_LINEAR_LEVEL(Avx2)
FLUXATTN_LINEAR_LEVEL(Avx512)
#undef FLUXATTN_LINEAR_LEVEL

}  // namespace fluxattn::cpu::internal
