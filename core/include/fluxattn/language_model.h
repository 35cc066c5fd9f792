// The interface a model architecture implements for the engine. A model owns its weights and
// the dense math (embeddings, projections, norms, RoPE, MLP, logits); attention is not its
// business: for every layer it hands the projected queries, keys and values of the WHOLE batch
// to a LayerAttention supplied by the engine, which routes, caches KV and runs the backends
// (one call per layer, whatever the batch holds).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "fluxattn/model_info.h"
#include "fluxattn/tensor_view.h"

namespace fluxattn {

// The rows of one sequence of the batch in a layer's arrays.
struct SequenceRows {
  int64_t row0 = 0;        // first row in the layer arrays
  int64_t num_tokens = 0;  // new tokens of this sequence in this call
  int64_t pos0 = 0;        // absolute position of the first new token
};

// One layer's attention work for the whole batch passed to LanguageModel::Forward.
struct LayerAttentionBatch {
  uint32_t struct_size = sizeof(LayerAttentionBatch);
  int layer = 0;
  int num_q_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  std::span<const SequenceRows> seqs;  // seqs[i] is sequence i of the Forward batch
  // Rows of every sequence, one per new token, on the model's device:
  // Queries after q_proj (and q_norm where the model has it), before RoPE: what the learned
  // layer router reads. [rows, num_q_heads, head_dim].
  TensorView q_pre_rope;
  TensorView q;  // after RoPE, [rows, num_q_heads, head_dim]
  TensorView k;  // after RoPE, [rows, num_kv_heads, head_dim]
  TensorView v;  // [rows, num_kv_heads, head_dim]
};

// Supplied by the engine: computes attention for one layer of the batch.
class LayerAttention {
 public:
  virtual ~LayerAttention() = default;
  // Writes out[rows, num_q_heads, head_dim].
  virtual absl::Status Attend(const LayerAttentionBatch& batch, const TensorView& out) = 0;
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
  // Where the activations live, and so the engine's KV pool and attention (the CPU unless the
  // model was loaded onto a GPU).
  virtual Device* device() const { return CpuDevice(); }
  // The element type of activations, queries, keys and values (float32 on the CPU, bfloat16 on
  // CUDA).
  virtual DType activation_dtype() const { return DType::kF32; }
  // Asks now for the memory of forward passes of up to `max_rows` token rows over up to
  // `max_seqs` sequences (one logits row each), so that such passes allocate nothing; an error
  // names the bytes needed and free. Default: nothing to reserve.
  virtual absl::Status ReserveSteps(int64_t max_rows, int64_t max_seqs) {
    (void)max_rows;
    (void)max_seqs;
    return absl::OkStatus();
  }
  // The checkpoint's tensors (the learned router reads its weights from here).
  virtual const WeightSource& weights() const = 0;
  // Tokens that end a generation (eos ids of config.json and generation_config.json).
  virtual const std::vector<int64_t>& stop_token_ids() const = 0;
  // Worker threads for the dense math and CPU attention; 0 = hardware concurrency.
  virtual void SetThreads(int threads) = 0;
  virtual int threads() const = 0;

  // Runs the new tokens of every sequence through the model; sequences are independent and may
  // have different lengths and positions. Writes logits as rows of vocab_size floats: one row
  // per sequence (its last token), or one per token of every sequence when `all_positions`.
  // Errors: token ids out of range (naming the id and the vocabulary size), attention failures.
  virtual absl::Status Forward(std::span<const SequenceChunk> batch, LayerAttention& attention,
                               bool all_positions, std::vector<float>* logits) = 0;

  // The greedy next token of every sequence (the argmax of its last row, the lowest id among
  // equal maxima) without handing back the logits: on a GPU only the ids leave the device.
  // Default: Forward, then the argmax on the host.
  virtual absl::Status ForwardGreedy(std::span<const SequenceChunk> batch,
                                     LayerAttention& attention, std::vector<int64_t>* tokens) {
    std::vector<float> logits;
    absl::Status st = Forward(batch, attention, false, &logits);
    if (!st.ok()) return st;
    const size_t vocab = static_cast<size_t>(info().vocab_size);
    tokens->resize(batch.size());
    for (size_t s = 0; s < batch.size(); ++s) {
      const float* row = logits.data() + s * vocab;
      size_t best = 0;
      for (size_t i = 1; i < vocab; ++i) {
        if (row[i] > row[best]) best = i;
      }
      (*tokens)[s] = static_cast<int64_t>(best);
    }
    return absl::OkStatus();
  }

  // One sampled token per sequence, drawn where the logits are (on a GPU only the ids leave the
  // device), for models that say so in SamplesOnDevice(). The rule is that of
  // kernels::cuda::Sample (fluxattn/kernels/cuda_model_ops.h): temperature, then top-k and
  // top-p with ties at the edge kept, then the first token in id order whose running sum of
  // kept probabilities reaches u times the kept mass, u the counter-based draw of
  // (seed, step); temperature <= 0 or top_k == 1 is the argmax. Default: Unimplemented (the
  // engine then samples on the host from Forward's logits).
  struct SampleParams {
    double temperature = 0.0;
    int top_k = 0;
    double top_p = 1.0;
    uint64_t seed = 0;
    uint64_t step = 0;  // which token of the request this is (0 = the one after the prompt)
  };
  virtual bool SamplesOnDevice() const { return false; }
  virtual absl::Status ForwardSample(std::span<const SequenceChunk> batch,
                                     LayerAttention& attention,
                                     std::span<const SampleParams> params,
                                     std::vector<int64_t>* tokens) {
    (void)batch;
    (void)attention;
    (void)params;
    (void)tokens;
    return absl::UnimplementedError("ForwardSample: this model samples on the host");
  }
};

}  // namespace fluxattn
