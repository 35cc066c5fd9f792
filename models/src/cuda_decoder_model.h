// The decoder of decoder_model.h on a CUDA device: weights converted to bfloat16 once at load
// (one device allocation per tensor, gate and up fused), bfloat16 activations and residual
// stream (or, with f32 compute, all of it in float32), f32 accumulation in cuBLASLt GEMMs and in
// the fused norm / RoPE / SwiGLU kernels of fluxattn/kernels/cuda_model_ops.h. Attention goes
// through the engine's LayerAttention with device views, as on the CPU.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "fluxattn/device.h"
#include "fluxattn/language_model.h"
#include "fluxattn/models/model_config.h"

namespace fluxattn::models {

// Fails with a clear error when the core was built without CUDA or `device` is not a GPU.
// `compute` is kBF16 (the default path) or kF32 (weights, activations and arithmetic in float32).
absl::StatusOr<std::unique_ptr<LanguageModel>> CreateCudaLanguageModel(
    ModelSpec spec, std::unique_ptr<WeightSource> weights, Device* device, int threads,
    DType compute = DType::kBF16);

}  // namespace fluxattn::models
