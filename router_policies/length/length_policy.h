// `length`: short prompts gain nothing from sparse attention (the window already covers them),
// so every layer uses full attention when the prompt has fewer than `min_tokens` tokens; longer
// prompts are routed by the policy configured as [routers.<above>].
//
//   [router]
//   plugin = "length"
//   min_tokens = 4096
//   above = "learned"
//   [routers.learned]
//   plugin = "flux"
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fluxattn/params.h"
#include "fluxattn/routing_policy.h"

namespace fluxattn::routing {

class LengthPolicy final : public RoutingPolicy {
 public:
  static std::vector<ParamSpec> Params();
  static absl::StatusOr<std::unique_ptr<LengthPolicy>> Create(const ParamValues& params);

  absl::Status Prepare(const RoutingSetup& setup) override;
  // The delegate's answer once prepared: queries are copied only when it reads them.
  bool NeedsQueries() const override;
  QueryWindow QueriesRead() const override;
  absl::StatusOr<RoutingDecision> Decide(const RoutingInput& input) override;

 private:
  LengthPolicy() = default;

  int64_t min_tokens_ = 0;
  std::string above_;
  RoutingPolicy* delegate_ = nullptr;  // owned by the engine, outlives this policy's use
  int num_layers_ = 0;
};

}  // namespace fluxattn::routing
