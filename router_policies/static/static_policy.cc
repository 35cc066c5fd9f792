#include "static_policy.h"

#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "fluxattn/status.h"

namespace fluxattn::routing {
namespace {

constexpr const char* kWhere = "static";

std::string Key(const std::string& key) { return absl::StrCat(kWhere, ": ", key); }

}  // namespace

std::vector<ParamSpec> StaticPolicy::Params() {
  std::vector<ParamSpec> specs;
  {
    ParamSpec spec;
    spec.name = "full_layers";
    spec.type = ParamType::kIntList;
    spec.description = "Indices of the layers that use full attention (one form of three)";
    spec.default_value = ParamValue(std::vector<int64_t>{});
    spec.min_value = 0;
    specs.push_back(spec);
  }
  {
    specs.push_back(StringParamSpec(
        "pattern", "",
        "One letter per layer, F = full, S = sparse, repeated over the layers, e.g. \"FSSS\" "
        "(one form of three)"));
  }
  {
    specs.push_back(FloatParamSpec(
        "full_ratio", 0.0, 0.0, 1.0,
        "Fraction of the layers that use full attention, rounded to the nearest count "
        "(one form of three)"));
  }
  {
    specs.push_back(ChoiceParamSpec(
        "placement", "spread", {"first", "last", "spread"},
        "Where full_ratio puts the full layers: first, last, or spread evenly over the depth"));
  }
  return specs;
}

absl::StatusOr<std::unique_ptr<StaticPolicy>> StaticPolicy::Create(const ParamValues& params) {
  std::unique_ptr<StaticPolicy> policy(new StaticPolicy());
  std::vector<std::string> given;
  for (const char* key : {"full_layers", "pattern", "full_ratio"}) {
    if (params.is_explicit(key)) given.push_back(key);
  }
  if (given.size() != 1) {
    std::string found = given.empty() ? "none" : "";
    for (size_t i = 0; i < given.size(); ++i) absl::StrAppend(&found, i ? " and " : "", given[i]);
    return InvalidInput(kWhere, "exactly one of full_layers, pattern, full_ratio", found);
  }
  if (params.is_explicit("placement") && given[0] != "full_ratio") {
    return InvalidInput(Key("placement"), "placement only together with full_ratio",
                        absl::StrCat("placement with ", given[0]));
  }

  if (given[0] == "full_layers") {
    policy->form_ = Form::kList;
    policy->full_layers_ = params.GetIntList("full_layers");
    std::set<int64_t> seen;
    for (size_t i = 0; i < policy->full_layers_.size(); ++i) {
      const int64_t layer = policy->full_layers_[i];
      if (layer < 0) {
        return InvalidInput(Key(absl::StrCat("full_layers[", i, "]")), "a layer index >= 0",
                            absl::StrCat(layer));
      }
      if (!seen.insert(layer).second) {
        return InvalidInput(Key(absl::StrCat("full_layers[", i, "]")), "each layer at most once",
                            absl::StrCat("layer ", layer, " again"));
      }
    }
  } else if (given[0] == "pattern") {
    policy->form_ = Form::kPattern;
    policy->pattern_ = params.GetString("pattern");
    if (policy->pattern_.empty()) {
      return InvalidInput(Key("pattern"), "at least one letter F or S", "an empty string");
    }
    for (size_t i = 0; i < policy->pattern_.size(); ++i) {
      const char c = policy->pattern_[i];
      if (c != 'F' && c != 'S') {
        return InvalidInput(Key("pattern"), "only the letters F (full) and S (sparse)",
                            absl::StrCat("'", std::string(1, c), "' at position ", i, " of \"",
                                         policy->pattern_, "\""));
      }
    }
  } else {
    policy->form_ = Form::kRatio;
    policy->full_ratio_ = params.GetFloat("full_ratio");
    if (!(policy->full_ratio_ >= 0.0 && policy->full_ratio_ <= 1.0)) {
      return InvalidInput(Key("full_ratio"), "a number in [0, 1]",
                          absl::StrCat(policy->full_ratio_));
    }
    const std::string& placement = params.GetString("placement");
    if (placement == "first") {
      policy->placement_ = Placement::kFirst;
    } else if (placement == "last") {
      policy->placement_ = Placement::kLast;
    } else if (placement == "spread") {
      policy->placement_ = Placement::kSpread;
    } else {
      return InvalidInput(Key("placement"), "one of \"first\", \"last\", \"spread\"",
                          absl::StrCat("\"", placement, "\""));
    }
  }
  return policy;
}

absl::Status StaticPolicy::Prepare(const RoutingSetup& setup) {
  if (setup.model == nullptr || setup.model->num_layers <= 0) {
    return InvalidInput(
        kWhere, "a model with at least one layer",
        setup.model == nullptr ? "no model" : absl::StrCat(setup.model->num_layers, " layers"));
  }
  const int num_layers = setup.model->num_layers;
  std::vector<bool> full(num_layers, false);
  switch (form_) {
    case Form::kList:
      for (size_t i = 0; i < full_layers_.size(); ++i) {
        if (full_layers_[i] >= num_layers) {
          return InvalidInput(Key(absl::StrCat("full_layers[", i, "]")),
                              absl::StrCat("a layer index in [0, ", num_layers - 1,
                                           "] (the model has ", num_layers, " layers)"),
                              absl::StrCat(full_layers_[i]));
        }
        full[full_layers_[i]] = true;
      }
      break;
    case Form::kPattern:
      if (static_cast<int64_t>(pattern_.size()) > num_layers) {
        return InvalidInput(Key("pattern"),
                            absl::StrCat("at most ", num_layers, " letters (the model has ",
                                         num_layers, " layers)"),
                            absl::StrCat(pattern_.size(), " letters in \"", pattern_, "\""));
      }
      for (int layer = 0; layer < num_layers; ++layer) {
        full[layer] = pattern_[layer % pattern_.size()] == 'F';
      }
      break;
    case Form::kRatio: {
      // Halves round up (std::lround), so 0.5 of 3 layers is 2.
      const int count = static_cast<int>(std::lround(full_ratio_ * num_layers));
      for (int k = 0; k < count; ++k) {
        int layer = 0;
        switch (placement_) {
          case Placement::kFirst:
            layer = k;
            break;
          case Placement::kLast:
            layer = num_layers - count + k;
            break;
          case Placement::kSpread:
            // Strictly increasing in k because num_layers / count >= 1.
            layer = static_cast<int>(static_cast<int64_t>(k) * num_layers / count);
            break;
        }
        full[layer] = true;
      }
      break;
    }
  }
  full_by_layer_ = std::move(full);
  return absl::OkStatus();
}

absl::StatusOr<RoutingDecision> StaticPolicy::Decide(const RoutingInput& input) {
  const int num_layers = static_cast<int>(full_by_layer_.size());
  if (num_layers == 0) {
    return absl::FailedPreconditionError("static: Decide called before Prepare");
  }
  if (input.layer < 0 || input.layer >= num_layers) {
    return InvalidInput(Key("layer"), absl::StrCat("a layer index in [0, ", num_layers - 1, "]"),
                        absl::StrCat(input.layer));
  }
  RoutingDecision decision;
  decision.choice = full_by_layer_[input.layer] ? AttentionChoice::kFull : AttentionChoice::kSparse;
  return decision;
}

}  // namespace fluxattn::routing
