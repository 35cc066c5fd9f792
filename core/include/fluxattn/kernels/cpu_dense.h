// Dense CPU kernels of the model's forward pass: matrix products with weights as stored (float32,
// bfloat16 or float16; float32 activations and accumulation) and the vectorized element-wise
// steps (RMSNorm, RoPE from a table, SwiGLU). Every kernel is built for several x86-64 levels
// (baseline, AVX2+FMA, AVX-512) and picks the best the CPU runs when first called.
//
// Reproducibility: each output element is computed by one thread in a fixed order, so results do
// not depend on the thread count, on the number of rows in the call (a decode step gives the bits
// a prefill gives for the same row) or on timing. They do depend on the ISA level (the width of
// the partial sums differs), i.e. on the machine.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fluxattn/tensor.h"

namespace fluxattn::cpu {

// The instruction set the kernels run with on this CPU: "avx512", "avx2" or "baseline".
// FLUXATTN_CPU_ISA=avx2|baseline in the environment caps it (for tests and comparisons).
const char* DenseIsa();

// One weight matrix of a Linear call and where its outputs go: w [n, k] row-major in `type`
// (kF32, kBF16 or kF16) as stored in the checkpoint, an optional float32 bias [n], and y [m, n]
// float32 with row stride ldy.
struct LinearPart {
  const void* w = nullptr;
  DType type = DType::kF32;
  int64_t n = 0;
  const float* bias = nullptr;
  float* y = nullptr;
  int64_t ldy = 0;
};

// For every part: y[i, j] = sum_p x[i, p] w[j, p] (+ bias[j]) for i < m, j < n, with x [m, k]
// float32 with row stride ldx. The parts share x and one hand-off to the process-wide pool
// (q, k and v projections in one call).
//
// `activations` kBF16 rounds x to bfloat16 (to nearest, ties to even) before the products, the
// numerics of a bfloat16 model (llama.cpp's for bf16 weights): parts with bfloat16 weights then
// run on AVX512-BF16 dot products where the CPU has them (Bf16DotProducts), at twice the float32
// rate; other parts, or every part without AVX512-BF16, run the float32 kernels on the rounded
// activations. Accumulation stays float32; results keep the reproducibility above.
void Linear(const float* x, int64_t ldx, int64_t m, int64_t k, const LinearPart* parts,
            int num_parts, DType activations = DType::kF32);

// Whether Linear with bfloat16 activations uses AVX512-BF16 dot products on this CPU
// (FLUXATTN_CPU_ISA=avx512 leaves them out).
bool Bf16DotProducts();

// y[r, :] = w * x[r, :] / sqrt(mean(x[r, :]^2) + eps) for `rows` rows of `dim`; y may be x.
void RmsNorm(const float* x, int64_t rows, int64_t dim, const float* w, float eps, float* y);

// Rotates `heads` vectors of `head_dim` per row (rotate-half convention): for row t,
// v[i], v[i + half] = v[i] c - v[i + half] s, v[i + half] c + v[i] s with c = cos_sin[t][i] and
// s = cos_sin[t][half + i], where cos_sin[t] points to the table row of row t's position.
void Rope(float* x, int64_t rows, int heads, int head_dim, const float* const* cos_sin);

// out[r, i] = silu(gate_up[r, i]) * gate_up[r, inter + i] for rows of 2 * inter.
void SwiGlu(const float* gate_up, int64_t rows, int64_t inter, float* out);

// x[i] += y[i].
void AddInPlace(float* x, const float* y, int64_t n);

// Row `row` of a [rows, dim] matrix in `type` (kF32, kBF16, kF16), converted to float32.
void ConvertRow(const void* data, DType type, int64_t row, int64_t dim, float* out);

}  // namespace fluxattn::cpu
