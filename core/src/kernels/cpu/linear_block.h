// Per-ISA blocks of cpu::Linear (kernels/cpu_dense.h): each computes y[0:m, n0:n1] for a range of
// weight rows. Declared here, defined in linear_<isa>.cc, each compiled for its level.
#pragma once

#include <cstdint>

namespace fluxattn::cpu::internal {

// `w_type`: 0 float32, 1 bfloat16, 2 float16 (the values of fluxattn::DType).
using LinearBlockFn = void (*)(const float* x, int64_t ldx, int64_t m, const void* w, int w_type,
                               int64_t n0, int64_t n1, int64_t k, const float* bias, float* y,
                               int64_t ldy);

void LinearBlockBaseline(const float* x, int64_t ldx, int64_t m, const void* w, int w_type,
                         int64_t n0, int64_t n1, int64_t k, const float* bias, float* y,
                         int64_t ldy);
void LinearBlockAvx2(const float* x, int64_t ldx, int64_t m, const void* w, int w_type, int64_t n0,
                     int64_t n1, int64_t k, const float* bias, float* y, int64_t ldy);
void LinearBlockAvx512(const float* x, int64_t ldx, int64_t m, const void* w, int w_type,
                       int64_t n0, int64_t n1, int64_t k, const float* bias, float* y, int64_t ldy);

}  // namespace fluxattn::cpu::internal
