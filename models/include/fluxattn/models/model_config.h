// config.json of a Hugging Face decoder checkpoint, parsed into the model's shape (ModelInfo)
// plus what the forward pass needs (norm epsilon, biases, RoPE, tied embeddings, stop tokens).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fluxattn/model_info.h"

namespace fluxattn::models {

// Rotary position embedding settings, from either `rope_theta` + `rope_scaling` (transformers 4
// and published checkpoints) or `rope_parameters` (transformers 5).
struct RopeConfig {
  std::string type = "default";  // "default", "linear" or "llama3"
  double theta = 10000.0;
  double factor = 1.0;                               // linear, llama3
  double low_freq_factor = 1.0;                      // llama3
  double high_freq_factor = 4.0;                     // llama3
  double original_max_position_embeddings = 8192.0;  // llama3
};

// The inverse frequencies of the rotated pairs, [head_dim / 2], computed in float32 like the
// reference implementation so that angles match bit for bit at small positions.
std::vector<float> RopeInverseFrequencies(const RopeConfig& rope, int head_dim);

enum class ModelFamily : uint8_t { kLlama, kQwen2, kQwen3 };

struct ModelSpec {
  ModelInfo info;
  ModelFamily family = ModelFamily::kLlama;
  bool flux = false;  // Paw* architecture: the checkpoint also carries layer-router weights
  int64_t intermediate_size = 0;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;
  bool o_bias = false;
  bool mlp_bias = false;
  bool qk_norm = false;  // per-head RMSNorm of queries and keys (Qwen3)
  RopeConfig rope;
  int64_t max_position_embeddings = 0;
  std::vector<int64_t> eos_token_ids;  // config.json and generation_config.json, deduplicated
  std::optional<int64_t> bos_token_id;
};

// Architectures this build can run.
std::vector<std::string> SupportedArchitectures();

// Parses config.json text; `source` names the file in errors. generation_config.json text, when
// non-empty, adds its eos ids.
absl::StatusOr<ModelSpec> ParseModelConfig(const std::string& config_json, const std::string& source,
                                           const std::string& generation_config_json = "",
                                           const std::string& generation_source = "");

// Reads <dir>/config.json (and <dir>/generation_config.json when present).
absl::StatusOr<ModelSpec> LoadModelConfig(const std::string& dir);

}  // namespace fluxattn::models
