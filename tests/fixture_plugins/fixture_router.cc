// A minimal valid routing policy: full attention on the listed layers, sparse elsewhere. Its
// `seed` parameter has no default, so configs must give it.
#include <algorithm>
#include <memory>
#include <vector>

#include "fluxattn/plugin_abi.h"
#include "fluxattn/routing_policy.h"

namespace fluxattn::fixtures {
namespace {

class FixtureRouter final : public RoutingPolicy {
 public:
  static std::vector<ParamSpec> Params() {
    return {
        {"seed", ParamType::kInt, "required, no default", std::nullopt, 0.0, std::nullopt, {}},
        {"full_layers",
         ParamType::kIntList,
         "layers that use full attention",
         ParamValue(std::vector<int64_t>{}),
         0.0,
         std::nullopt,
         {}},
    };
  }
  static absl::StatusOr<std::unique_ptr<FixtureRouter>> Create(const ParamValues& params) {
    return std::make_unique<FixtureRouter>(params.GetIntList("full_layers"));
  }
  explicit FixtureRouter(std::vector<int64_t> full_layers) : full_layers_(std::move(full_layers)) {}

  absl::Status Prepare(const RoutingSetup&) override { return absl::OkStatus(); }
  absl::StatusOr<RoutingDecision> Decide(const RoutingInput& input) override {
    RoutingDecision decision;
    bool full =
        std::find(full_layers_.begin(), full_layers_.end(), input.layer) != full_layers_.end();
    decision.choice = full ? AttentionChoice::kFull : AttentionChoice::kSparse;
    return decision;
  }

 private:
  std::vector<int64_t> full_layers_;
};

}  // namespace
}  // namespace fluxattn::fixtures

FLUXATTN_DEFINE_ROUTING_PLUGIN(fluxattn::fixtures::FixtureRouter, "fixture_router", "1.0.0",
                               "test fixture: full attention on listed layers")
