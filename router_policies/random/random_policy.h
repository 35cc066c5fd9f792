// `random`: the baseline a learned router is compared against. Each (request, layer) is FA with
// probability `full_ratio`, drawn from a hash of (seed, the request's own seed, layer): the same
// seeds give the same decisions in any order, batch position or process. With
// `exact = true` every request gets exactly round(full_ratio * num_layers) FA layers (the layers
// with the smallest hashes), so the realized ratio carries no sampling noise.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fluxattn/params.h"
#include "fluxattn/routing_policy.h"

namespace fluxattn::routing {

class RandomPolicy final : public RoutingPolicy {
 public:
  static std::vector<ParamSpec> Params();
  static absl::StatusOr<std::unique_ptr<RandomPolicy>> Create(const ParamValues& params);

  absl::Status Prepare(const RoutingSetup& setup) override;
  absl::StatusOr<RoutingDecision> Decide(const RoutingInput& input) override;

  // Uniform in [0, 1), a pure function of its arguments.
  static double UnitDraw(uint64_t seed, uint64_t request_seed, int layer);

 private:
  RandomPolicy() = default;

  uint64_t seed_ = 0;
  double full_ratio_ = 0.5;
  bool exact_ = false;
  int num_layers_ = 0;
};

}  // namespace fluxattn::routing
