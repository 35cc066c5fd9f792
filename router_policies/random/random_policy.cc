#include "random_policy.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "fluxattn/status.h"

namespace fluxattn::routing {
namespace {

// SplitMix64 finalizer: a bijective mix with good avalanche, so nearby request ids and layers
// give unrelated draws.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

std::vector<ParamSpec> RandomPolicy::Params() {
  std::vector<ParamSpec> specs;
  {
    ParamSpec spec;
    spec.name = "seed";
    spec.type = ParamType::kInt;
    spec.description =
        "Seed of the draws; decisions are a function of (seed, the request's own seed, layer)";
    spec.default_value = ParamValue(int64_t{0});
    spec.min_value = 0;
    specs.push_back(spec);
  }
  {
    specs.push_back(FloatParamSpec("full_ratio", 0.5, 0.0, 1.0,
                                   "Probability that a layer uses full attention"));
  }
  {
    specs.push_back(BoolParamSpec(
        "exact", false,
        "Give every request exactly round(full_ratio * layers) full layers instead of "
        "independent draws"));
  }
  return specs;
}

absl::StatusOr<std::unique_ptr<RandomPolicy>> RandomPolicy::Create(const ParamValues& params) {
  std::unique_ptr<RandomPolicy> policy(new RandomPolicy());
  const int64_t seed = params.GetInt("seed");
  if (seed < 0) return InvalidInput("random: seed", "an integer >= 0", absl::StrCat(seed));
  policy->seed_ = static_cast<uint64_t>(seed);
  policy->full_ratio_ = params.GetFloat("full_ratio");
  if (!(policy->full_ratio_ >= 0.0 && policy->full_ratio_ <= 1.0)) {
    return InvalidInput("random: full_ratio", "a number in [0, 1]",
                        absl::StrCat(policy->full_ratio_));
  }
  policy->exact_ = params.GetBool("exact");
  return policy;
}

double RandomPolicy::UnitDraw(uint64_t seed, uint64_t request_seed, int layer) {
  const uint64_t h = Mix(Mix(Mix(seed) ^ request_seed) ^ static_cast<uint64_t>(layer));
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

absl::Status RandomPolicy::Prepare(const RoutingSetup& setup) {
  if (setup.model == nullptr || setup.model->num_layers <= 0) {
    return InvalidInput(
        "random", "a model with at least one layer",
        setup.model == nullptr ? "no model" : absl::StrCat(setup.model->num_layers, " layers"));
  }
  num_layers_ = setup.model->num_layers;
  return absl::OkStatus();
}

absl::StatusOr<RoutingDecision> RandomPolicy::Decide(const RoutingInput& input) {
  if (num_layers_ == 0) {
    return absl::FailedPreconditionError("random: Decide called before Prepare");
  }
  if (input.layer < 0 || input.layer >= num_layers_) {
    return InvalidInput("random: layer",
                        absl::StrCat("a layer index in [0, ", num_layers_ - 1, "]"),
                        absl::StrCat(input.layer));
  }
  const double draw = UnitDraw(seed_, input.request_seed, input.layer);
  bool full = false;
  if (!exact_) {
    full = draw < full_ratio_;
  } else {
    // FA for the `count` layers with the smallest draws (ties broken by layer index): this
    // layer's rank among all layers of the request decides, without any per-request state.
    const int count = static_cast<int>(std::lround(full_ratio_ * num_layers_));
    int rank = 0;
    for (int other = 0; other < num_layers_; ++other) {
      const double other_draw = UnitDraw(seed_, input.request_seed, other);
      if (other_draw < draw || (other_draw == draw && other < input.layer)) ++rank;
    }
    full = rank < count;
  }
  RoutingDecision decision;
  decision.choice = full ? AttentionChoice::kFull : AttentionChoice::kSparse;
  return decision;
}

}  // namespace fluxattn::routing
