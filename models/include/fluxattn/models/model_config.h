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

// The Flux Attention keys of a Paw* config.json, as PawQwen3Config / PawLlamaConfig define them
// (a key left out takes that class's default). ParseModelConfig refuses values FluxAttn does
// not run; keys that only matter for training are accepted and ignored (docs/models.md).
struct FluxSettings {
  std::string toggle_type = "streaming";  // SA side: "streaming", "triangle" or "xattn"
  std::string retrieval_mode = "full";    // FA side: "full" or "xattn"
  int64_t sink_size = 128;                // tokens, rounded up to 128-token blocks
  int64_t local_window_size = 1024;       // tokens, rounded up to 128-token blocks
  int64_t triangle_n_last = 128;          // dense tail of the triangle pattern
  std::string pooling_mode = "ctx_q";     // router pooling; the only one implemented
  int64_t pool_size = 100;                // router: rows pooled from each end of the prompt
  bool use_softmax = false;               // router: two logits (argmax) or one (sign)
};

struct ModelSpec {
  ModelInfo info;
  ModelFamily family = ModelFamily::kLlama;
  bool flux = false;  // Paw* architecture: the checkpoint also carries layer-router weights
  FluxSettings flux_settings;  // with `flux`: the validated Flux Attention keys
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
absl::StatusOr<ModelSpec> ParseModelConfig(const std::string& config_json,
                                           const std::string& source,
                                           const std::string& generation_config_json = "",
                                           const std::string& generation_source = "");

// Reads <dir>/config.json (and <dir>/generation_config.json when present).
absl::StatusOr<ModelSpec> LoadModelConfig(const std::string& dir);

}  // namespace fluxattn::models
