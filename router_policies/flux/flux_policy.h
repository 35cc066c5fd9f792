// `flux`: the learned layer router of Flux Attention. At prefill, each layer's router reads the
// layer's queries (after q_proj and q_norm, before RoPE) and picks full attention (FA) or sparse
// attention (SA) for that request; see flux_router.h for the arithmetic.
//
// Settings come from the checkpoint's config.json (`pool_size`, `use_softmax`, `pooling_mode`)
// unless the parameter of the same name is given explicitly. Decisions:
//   softmax variant (2 logits): FA iff logits[1] - logits[0] + bias > 0  (argmax == 1 at bias 0)
//   sigmoid variant (1 logit):  FA iff logits[0] + bias > 0               (sigmoid > 1/2 at 0)
// A positive `bias` sends more layers to FA (accuracy), a negative one more to SA (speed).
// RoutingDecision::logits holds the router's raw logits, without the bias.
//
// Where the engine can run router networks on its device (RoutingSetup::offer_network), each
// layer's pooling and linears are offered to it in Prepare, and Decide then receives the logits
// computed there instead of the queries.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "flux_router.h"
#include "fluxattn/params.h"
#include "fluxattn/routing_policy.h"

namespace fluxattn::routing {

class FluxPolicy final : public RoutingPolicy {
 public:
  static std::vector<ParamSpec> Params();
  static absl::StatusOr<std::unique_ptr<FluxPolicy>> Create(const ParamValues& params);

  absl::Status Prepare(const RoutingSetup& setup) override;
  bool NeedsQueries() const override { return true; }
  // ctx_q pooling reads the first and last pool_size rows.
  QueryWindow QueriesRead() const override { return {pool_size_, pool_size_}; }
  absl::StatusOr<RoutingDecision> Decide(const RoutingInput& input) override;

  // Settings in effect after Prepare (from the parameters or config.json).
  int64_t pool_size() const { return pool_size_; }
  bool use_softmax() const { return use_softmax_; }
  double bias() const { return bias_; }

 private:
  FluxPolicy() = default;
  absl::StatusOr<std::vector<double>> LogitsFromQueries(const FluxLayerRouter& router,
                                                        const RoutingInput& input) const;

  // Parameters as given.
  std::string weights_path_;
  ParamValues params_;
  double bias_ = 0.0;

  // Resolved in Prepare.
  int64_t pool_size_ = 0;
  bool use_softmax_ = true;
  int num_q_heads_ = 0;
  int head_dim_ = 0;
  std::vector<FluxLayerRouter> routers_;
};

}  // namespace fluxattn::routing
