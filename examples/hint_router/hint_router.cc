// `hint`: a routing policy built outside the FluxAttn tree. Each request may carry a hint
// (RoutingInput::hints[hint_key]): "full" or "sparse" for every layer, or a number in [0, 1],
// the fraction of layers that get full attention. Without a hint the configured full_ratio
// applies. A fraction r gives FA to layer i when floor((i + 1) * r) > floor(i * r), which spreads
// floor(num_layers * r) FA layers evenly.
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "fluxattn/attention/param_reader.h"
#include "fluxattn/plugin_abi.h"
#include "fluxattn/routing_policy.h"

namespace hint {

using fluxattn::AttentionChoice;
using fluxattn::ParamSpec;
using fluxattn::ParamType;

class HintRouter : public fluxattn::RoutingPolicy {
 public:
  static std::vector<ParamSpec> Params() {
    return {
        {"hint_key",
         ParamType::kString,
         "Request hint read by this policy.",
         std::string("attention"),
         std::nullopt,
         std::nullopt,
         {}},
        {"full_ratio",
         ParamType::kFloat,
         "Fraction of layers given full attention when a request has no hint.",
         0.25,
         0.0,
         1.0,
         {}},
    };
  }

  static absl::StatusOr<std::unique_ptr<HintRouter>> Create(const fluxattn::ParamValues& params) {
    auto router = std::make_unique<HintRouter>();
    absl::StatusOr<std::string> key = fluxattn::ReadParam<std::string>(params, "hint_key");
    absl::StatusOr<double> ratio = fluxattn::ReadParam<double>(params, "full_ratio");
    if (!key.ok()) return key.status();
    if (!ratio.ok()) return ratio.status();
    if (key->empty() || !(*ratio >= 0.0 && *ratio <= 1.0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "hint_key, full_ratio: expected a non-empty key and a ratio in [0, 1], found '", *key,
          "', ", *ratio));
    }
    router->key_ = *key;
    router->default_ratio_ = *ratio;
    return router;
  }

  absl::Status Prepare(const fluxattn::RoutingSetup& setup) override {
    if (setup.model == nullptr || setup.model->num_layers <= 0) {
      return absl::InvalidArgumentError("hint: expected a model with at least one layer");
    }
    num_layers_ = setup.model->num_layers;
    return absl::OkStatus();
  }

  absl::StatusOr<fluxattn::RoutingDecision> Decide(const fluxattn::RoutingInput& input) override {
    if (input.layer < 0 || input.layer >= num_layers_) {
      return absl::OutOfRangeError(absl::StrCat("hint: layer ", input.layer, " outside [0, ",
                                                num_layers_, "); was Prepare called?"));
    }
    double ratio = default_ratio_;
    if (input.hints != nullptr) {
      auto it = input.hints->find(key_);
      if (it != input.hints->end()) {
        absl::StatusOr<double> parsed = ParseHint(it->second);
        if (!parsed.ok()) return parsed.status();
        ratio = *parsed;
      }
    }
    const bool full = std::floor((input.layer + 1) * ratio) > std::floor(input.layer * ratio);
    fluxattn::RoutingDecision decision;
    decision.choice = full ? AttentionChoice::kFull : AttentionChoice::kSparse;
    return decision;
  }

 private:
  // "full" -> 1, "sparse" -> 0, or a number in [0, 1].
  absl::StatusOr<double> ParseHint(const std::string& value) const {
    if (value == "full") return 1.0;
    if (value == "sparse") return 0.0;
    double ratio = 0;
    if (absl::SimpleAtod(value, &ratio) && ratio >= 0.0 && ratio <= 1.0) return ratio;
    return absl::InvalidArgumentError(
        absl::StrCat("hint '", key_, "': expected \"full\", \"sparse\" or a number in [0, 1], ",
                     "found \"", value, "\""));
  }

  std::string key_;
  double default_ratio_ = 0.25;
  int num_layers_ = 0;
};

}  // namespace hint

FLUXATTN_DEFINE_ROUTING_PLUGIN(hint::HintRouter, "hint", "0.1.0",
                               "FA/SA per request from a hint (full, sparse, or a ratio)")
