#include "length_policy.h"

#include "absl/strings/str_cat.h"
#include "fluxattn/status.h"

namespace fluxattn::routing {

std::vector<ParamSpec> LengthPolicy::Params() {
  std::vector<ParamSpec> specs;
  {
    ParamSpec spec;
    spec.name = "min_tokens";
    spec.type = ParamType::kInt;
    spec.description =
        "Prompts with fewer tokens use full attention in every layer; longer ones go to `above`";
    spec.min_value = 0;
    specs.push_back(spec);  // required
  }
  {
    ParamSpec spec;
    spec.name = "above";
    spec.type = ParamType::kString;
    spec.description =
        "Name of the [routers.<name>] policy that routes prompts of at least min_tokens tokens";
    specs.push_back(spec);  // required
  }
  return specs;
}

absl::StatusOr<std::unique_ptr<LengthPolicy>> LengthPolicy::Create(const ParamValues& params) {
  std::unique_ptr<LengthPolicy> policy(new LengthPolicy());
  policy->min_tokens_ = params.GetInt("min_tokens");
  if (policy->min_tokens_ < 0) {
    return InvalidInput("length: min_tokens", "an integer >= 0", absl::StrCat(policy->min_tokens_));
  }
  policy->above_ = params.GetString("above");
  if (policy->above_.empty()) {
    return InvalidInput("length: above", "the name of a [routers.<name>] policy",
                        "an empty string");
  }
  return policy;
}

absl::Status LengthPolicy::Prepare(const RoutingSetup& setup) {
  if (setup.model == nullptr || setup.model->num_layers <= 0) {
    return InvalidInput(
        "length", "a model with at least one layer",
        setup.model == nullptr ? "no model" : absl::StrCat(setup.model->num_layers, " layers"));
  }
  num_layers_ = setup.model->num_layers;
  if (!setup.policy) {
    return InvalidInput("length: above",
                        absl::StrCat("a [routers.", above_, "] policy to delegate to"),
                        "no other routing policies configured");
  }
  absl::StatusOr<RoutingPolicy*> delegate = setup.policy(above_);
  if (!delegate.ok()) {
    return Annotate(delegate.status(), absl::StrCat("length: above = \"", above_, "\""));
  }
  if (*delegate == nullptr || *delegate == this) {
    return InvalidInput("length: above", "a routing policy other than this one",
                        absl::StrCat("\"", above_, "\" resolves to ",
                                     *delegate == nullptr ? "nothing" : "this policy"));
  }
  delegate_ = *delegate;
  return absl::OkStatus();
}

QueryWindow LengthPolicy::QueriesRead() const {
  return delegate_ != nullptr ? delegate_->QueriesRead() : QueryWindow{};
}

bool LengthPolicy::NeedsQueries() const {
  return delegate_ != nullptr && delegate_->NeedsQueries();
}

absl::StatusOr<RoutingDecision> LengthPolicy::Decide(const RoutingInput& input) {
  if (delegate_ == nullptr) {
    return absl::FailedPreconditionError("length: Decide called before Prepare");
  }
  if (input.layer < 0 || input.layer >= num_layers_) {
    return InvalidInput("length: layer",
                        absl::StrCat("a layer index in [0, ", num_layers_ - 1, "]"),
                        absl::StrCat(input.layer));
  }
  if (input.prompt_tokens < min_tokens_) {
    RoutingDecision decision;
    decision.choice = AttentionChoice::kFull;
    return decision;
  }
  return delegate_->Decide(input);
}

}  // namespace fluxattn::routing
