// `static`: the same choice for every request, fixed per layer. Exactly one form says which
// layers use full attention (FA); every other layer uses sparse attention (SA):
//   full_layers = [0, 3, 7]          the FA layers by index
//   pattern = "FSSS"                 one letter per layer (F = FA, S = SA), repeated over layers
//   full_ratio = 0.25                round(ratio * num_layers) FA layers (halves round up), placed
//                                    by `placement`: "first", "last", or "spread", which puts FA
//                                    layer k at floor(k * num_layers / count), so a ratio of 1/m
//                                    matches the pattern "FS...S" (m letters) when m divides the
//                                    layer count.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fluxattn/params.h"
#include "fluxattn/routing_policy.h"

namespace fluxattn::routing {

class StaticPolicy final : public RoutingPolicy {
 public:
  static std::vector<ParamSpec> Params();
  static absl::StatusOr<std::unique_ptr<StaticPolicy>> Create(const ParamValues& params);

  absl::Status Prepare(const RoutingSetup& setup) override;
  absl::StatusOr<RoutingDecision> Decide(const RoutingInput& input) override;

  // One entry per layer, true for FA; empty before Prepare.
  const std::vector<bool>& full_by_layer() const { return full_by_layer_; }

 private:
  enum class Form { kList, kPattern, kRatio };
  enum class Placement { kFirst, kLast, kSpread };

  StaticPolicy() = default;

  Form form_ = Form::kList;
  std::vector<int64_t> full_layers_;
  std::string pattern_;
  double full_ratio_ = 0.0;
  Placement placement_ = Placement::kSpread;
  std::vector<bool> full_by_layer_;
};

}  // namespace fluxattn::routing
