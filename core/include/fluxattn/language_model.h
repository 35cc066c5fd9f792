// The interface a model architecture implements for the engine. A model owns its weights and
// the dense math (embeddings, projections, norms, RoPE, MLP, logits); attention is not its
// business: for every layer and sequence it hands the projected queries, keys and values to a
// LayerAttention supplied by the engine, which routes, caches KV and runs a backend.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "fluxattn/model_info.h"

namespace fluxattn {

// One layer's attention work for one sequence of a batch.
struct LayerAttentionInput {
  int layer = 0;
  int sequence = 0;        // index into the batch passed to LanguageModel::Forward
  int64_t pos0 = 0;        // absolute position of the first new token
  int64_t num_tokens = 0;  // new tokens of this sequence in this call
  int num_q_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  // All arrays are contiguous float32 on the CPU, one row per new token.
  // Queries after q_proj (and q_norm where the model has it), before RoPE: what the learned
  // layer router reads. [num_tokens, num_q_heads, head_dim].
  const float* q_pre_rope = nullptr;
  const float* q = nullptr;  // after RoPE, [num_tokens, num_q_heads, head_dim]
  const float* k = nullptr;  // after RoPE, [num_tokens, num_kv_heads, head_dim]
  const float* v = nullptr;  // [num_tokens, num_kv_heads, head_dim]
};

// Supplied by the engine: computes attention for one (sequence, layer).
class LayerAttention {
 public:
  virtual ~LayerAttention() = default;
  // Writes out[num_tokens, num_q_heads, head_dim].
  virtual absl::Status Attend(const LayerAttentionInput& input, float* out) = 0;
};

// New tokens of one sequence: ids at absolute positions pos0, pos0 + 1, ...
struct SequenceChunk {
  std::span<const int64_t> tokens;
  int64_t pos0 = 0;
};

class LanguageModel {
 public:
  virtual ~LanguageModel() = default;

  virtual const ModelInfo& info() const = 0;
  // The checkpoint's tensors (the learned router reads its weights from here).
  virtual const WeightSource& weights() const = 0;
  // Tokens that end a generation (eos ids of config.json and generation_config.json).
  virtual const std::vector<int64_t>& stop_token_ids() const = 0;
  // Worker threads for the dense math; 0 = hardware concurrency.
  virtual void SetThreads(int threads) = 0;
  virtual int threads() const = 0;

  // Runs the new tokens of every sequence through the model; sequences are independent and may
  // have different lengths and positions. Writes logits as rows of vocab_size floats: one row
  // per sequence (its last token), or one per token of every sequence when `all_positions`.
  // Errors: token ids out of range (naming the id and the vocabulary size), attention failures.
  virtual absl::Status Forward(std::span<const SequenceChunk> batch, LayerAttention& attention,
                               bool all_positions, std::vector<float>* logits) = 0;
};

}  // namespace fluxattn
