// The learned layer router of one layer, exactly as in published Flux Attention checkpoints
// (`AttentionRouter` with pooling_mode "ctx_q"). With D the head dimension:
//   pooled = mean over the first and the last `pool_size` prompt rows, concatenated (rows are
//            counted twice when the prompt is shorter than 2 * pool_size), then over heads: [D]
//   f      = W2 silu(W0 pooled + b0) + b2                          D -> 8D -> 2D
//   logits = W4 silu(W2' silu(W0' f + b0') + b2') + b4'            2D -> 4D -> D -> 2 (or 1)
// Arithmetic is in double over float32 weights, so results do not depend on summation order to
// within float32 rounding of the output.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fluxattn/model_info.h"
#include "fluxattn/routing_policy.h"

namespace fluxattn::routing {

// Tensor names of layer `layer`'s router, in evaluation order: feature extractor 0 and 2, head
// 0, 2 and 4; weight then bias.
std::array<std::string, 10> FluxRouterTensorNames(int layer);

class FluxLayerRouter {
 public:
  // Loads and shape-checks the ten tensors of `layer` from `weights`. `num_outputs` is 2 for the
  // softmax variant and 1 for the sigmoid variant.
  static absl::StatusOr<FluxLayerRouter> Load(const WeightSource& weights, int layer, int head_dim,
                                              int num_outputs);

  int head_dim() const { return head_dim_; }
  int num_outputs() const { return num_outputs_; }

  // The pooled query vector [D] of `queries` [num_tokens, num_heads, D] (ctx_q pooling).
  // `tail_row`: the row of `queries` where the last min(pool_size, num_tokens) rows begin
  // (num_tokens - n for the whole prompt, n for an array of its first and last rows only; -1:
  // the former).
  static std::vector<double> Pool(const float* queries, int64_t num_tokens, int num_heads,
                                  int head_dim, int64_t pool_size, int64_t tail_row = -1);
  // Router logits for a pooled vector of length head_dim().
  std::vector<double> Logits(const std::vector<double>& pooled) const;
  // The five linears as a RouterNetwork describes them (pointing into this router's copies).
  std::array<RouterLinear, 5> Network() const;

 private:
  // Copied out of the weight source so the router never depends on the source's lifetime.
  struct Linear {
    std::vector<float> weight;  // [out, in], row-major
    std::vector<float> bias;    // [out]
    int64_t in = 0;
    int64_t out = 0;
  };
  static std::vector<double> Apply(const Linear& linear, const std::vector<double>& x,
                                   bool silu_after);

  int head_dim_ = 0;
  int num_outputs_ = 0;
  std::array<Linear, 5> linears_;
};

}  // namespace fluxattn::routing
