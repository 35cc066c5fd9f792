// Decoder-only transformer on the CPU covering Llama 3.x, Qwen2, Qwen3 and their Flux (Paw*)
// variants: RMSNorm, GQA attention with optional q/k/v/o biases and per-head q/k norms, RoPE,
// SwiGLU MLP, tied or untied output embeddings. Weight matrices are used as stored (float32,
// bfloat16 or float16, read in place from the memory-mapped checkpoint; no float32 copy) with
// float32 activations and accumulation, through the CPU kernels of fluxattn/kernels/cpu_dense.h on
// the process-wide thread pool (fluxattn/thread_pool.h), which attention shares.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fluxattn/config.h"
#include "fluxattn/language_model.h"
#include "fluxattn/models/model_config.h"

namespace fluxattn::models {

struct ModelLoadOptions {
  int threads = 0;  // the process-wide CPU pool's size; 0: hardware concurrency
  // "cpu" (float32 activations, weights as stored) or "cuda" / "cuda:N" (weights converted to
  // bfloat16 on the device, bfloat16 activations, f32 accumulation).
  std::string device = "cpu";
  // On the cpu: the activations the matrix products take. kBF16 rounds them to bfloat16 (the
  // numerics of a bfloat16 model, llama.cpp's for bf16 weights), with AVX512-BF16 dot products
  // for bf16 weights where the CPU has them; norms, attention and the residual stay float32.
  DType cpu_activations = DType::kF32;
  // On cuda: kBF16 (weights converted to bfloat16, bfloat16 activations, f32 accumulation) or
  // kF32 (weights converted to float32, float32 activations and arithmetic throughout: the
  // reference-precision path, slower, for checking the GPU against the CPU).
  DType cuda_compute = DType::kBF16;
};

// Load options for a model on `device` ("cpu", "cuda", "cuda:N") with activations of `dtype`
// ("f32" or "bf16" on either; empty: the device's own, f32 on the cpu and bf16 on cuda). `where`
// prefixes errors (e.g. "x.toml: [model]"), which name the key, what this build supports and what
// was given.
absl::StatusOr<ModelLoadOptions> ModelLoadOptionsFor(const std::string& where,
                                                     const std::string& device,
                                                     const std::string& dtype, int threads);

// The same from a configuration's [model] section (`config_path` names it in errors), with the
// command line's --device (`device_flag`, empty: the config's; it then also picks the dtype)
// and --threads (`threads_flag` < 0: the config's).
absl::StatusOr<ModelLoadOptions> ModelLoadOptionsFromConfig(const EngineConfig& config,
                                                            const std::string& config_path,
                                                            const std::string& device_flag,
                                                            int threads_flag);

// A tensor the architecture needs, with the shape the config implies.
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
};

// Every tensor `spec` requires (router tensors of Flux checkpoints are not among them: the
// router reads them itself).
std::vector<ExpectedTensor> ExpectedTensors(const ModelSpec& spec);

// Loads config.json (+ generation_config.json) and the safetensors weights of `dir`.
absl::StatusOr<std::unique_ptr<LanguageModel>> LoadLanguageModel(
    const std::string& dir, const ModelLoadOptions& options = {});

// A model from an already parsed spec and a weight source (e.g. random weights in memory).
absl::StatusOr<std::unique_ptr<LanguageModel>> CreateLanguageModel(
    ModelSpec spec, std::unique_ptr<WeightSource> weights, const ModelLoadOptions& options = {});

// Named tensors held in memory.
class InMemoryWeights : public WeightSource {
 public:
  void Add(const std::string& name, Tensor tensor) { tensors_[name] = std::move(tensor); }
  bool Has(const std::string& name) const override { return tensors_.count(name) != 0; }
  std::vector<std::string> Names() const override;
  absl::StatusOr<Tensor> GetF32(const std::string& name,
                                const std::vector<int64_t>& expected_shape) const override;
  absl::StatusOr<Tensor> GetRaw(const std::string& name,
                                const std::vector<int64_t>& expected_shape) const override;

 private:
  std::map<std::string, Tensor> tensors_;
};

// Random weights of the right shapes for `spec` (normal, std 0.02; norms near 1), seeded.
absl::StatusOr<std::unique_ptr<InMemoryWeights>> RandomWeights(const ModelSpec& spec,
                                                               uint64_t seed);

}  // namespace fluxattn::models
