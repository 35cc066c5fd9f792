#include "flux_policy.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "fluxattn/status.h"

namespace fluxattn::routing {
namespace {

// The defaults of the reference implementation, used when neither the parameters nor
// config.json say otherwise.
constexpr int64_t kDefaultPoolSize = 100;
constexpr const char* kPoolingMode = "ctx_q";

std::string Quoted(const std::string& s) { return absl::StrCat("\"", s, "\""); }

std::string ConfigScalarToString(const ConfigScalar& value) {
  if (const bool* b = std::get_if<bool>(&value)) return *b ? "true" : "false";
  if (const int64_t* i = std::get_if<int64_t>(&value)) return absl::StrCat(*i);
  if (const double* d = std::get_if<double>(&value)) return absl::StrCat(*d);
  return Quoted(std::get<std::string>(value));
}

// config.json key `key`, where present, as the reader expects it; the error quotes what it found.
absl::StatusOr<std::optional<int64_t>> ConfigPositiveInt(const ModelInfo& model,
                                                         const std::string& key) {
  auto it = model.config.find(key);
  if (it == model.config.end()) return std::optional<int64_t>();
  const ConfigScalar& value = it->second;
  if (const int64_t* i = std::get_if<int64_t>(&value); i != nullptr && *i > 0) {
    return std::optional<int64_t>(*i);
  }
  if (const double* d = std::get_if<double>(&value);
      d != nullptr && *d >= 1.0 && *d <= 1e12 && std::floor(*d) == *d) {
    return std::optional<int64_t>(static_cast<int64_t>(*d));
  }
  return InvalidInput(absl::StrCat("flux: config.json ", key), "a positive integer",
                      ConfigScalarToString(value));
}

absl::StatusOr<std::optional<bool>> ConfigBoolean(const ModelInfo& model, const std::string& key) {
  auto it = model.config.find(key);
  if (it == model.config.end()) return std::optional<bool>();
  if (const bool* b = std::get_if<bool>(&it->second)) return std::optional<bool>(*b);
  return InvalidInput(absl::StrCat("flux: config.json ", key), "true or false",
                      ConfigScalarToString(it->second));
}

}  // namespace

std::vector<ParamSpec> FluxPolicy::Params() {
  std::vector<ParamSpec> specs;
  {
    specs.push_back(StringParamSpec(
        "weights", "",
        "Safetensors file with the router tensors (same names as in Flux checkpoints); empty: "
        "read them from the model checkpoint"));
  }
  {
    ParamSpec spec;
    spec.name = "pool_size";
    spec.type = ParamType::kInt;
    spec.description =
        "Prompt rows pooled from each end (first and last pool_size); default: config.json "
        "pool_size, else 100";
    spec.default_value = ParamValue(kDefaultPoolSize);
    spec.min_value = 1;
    specs.push_back(spec);
  }
  {
    specs.push_back(BoolParamSpec(
        "use_softmax", true,
        "Two logits, FA iff argmax is 1 (true), or one logit, FA iff positive (false); "
        "default: config.json use_softmax, else true"));
  }
  {
    specs.push_back(ChoiceParamSpec(
        "pooling_mode", kPoolingMode, {kPoolingMode},
        "How queries are pooled; only ctx_q (first and last pool_size rows) is implemented; "
        "default: config.json pooling_mode"));
  }
  {
    specs.push_back(FloatParamSpec(
        "bias", 0.0, -1e6, 1e6,
        "Added to the FA-minus-SA logit margin (or the single logit) before deciding: > 0 "
        "routes more layers to full attention, < 0 more to sparse"));
  }
  return specs;
}

absl::StatusOr<std::unique_ptr<FluxPolicy>> FluxPolicy::Create(const ParamValues& params) {
  std::unique_ptr<FluxPolicy> policy(new FluxPolicy());
  policy->params_ = params;
  policy->weights_path_ = params.GetString("weights");
  policy->bias_ = params.GetFloat("bias");
  if (!std::isfinite(policy->bias_)) {
    return InvalidInput("flux: bias", "a finite number", absl::StrCat(policy->bias_));
  }
  if (params.GetInt("pool_size") < 1) {
    return InvalidInput("flux: pool_size", "an integer >= 1",
                        absl::StrCat(params.GetInt("pool_size")));
  }
  if (params.GetString("pooling_mode") != kPoolingMode) {
    return InvalidInput("flux: pooling_mode", Quoted(kPoolingMode),
                        Quoted(params.GetString("pooling_mode")));
  }
  return policy;
}

absl::Status FluxPolicy::Prepare(const RoutingSetup& setup) {
  if (setup.model == nullptr) return InvalidInput("flux", "a model", "none");
  const ModelInfo& model = *setup.model;
  if (model.num_layers <= 0 || model.head_dim <= 0 || model.num_q_heads <= 0) {
    return InvalidInput("flux", "a model with layers, query heads and a head dimension",
                        absl::StrCat(model.num_layers, " layers, ", model.num_q_heads,
                                     " query heads, head_dim ", model.head_dim));
  }

  // Explicit parameters win over config.json, which wins over the reference defaults.
  if (params_.is_explicit("pooling_mode")) {
    // Validated in Create.
  } else if (std::optional<std::string> mode = model.ConfigString("pooling_mode")) {
    if (*mode != kPoolingMode) {
      return InvalidInput("flux: config.json pooling_mode",
                          absl::StrCat(Quoted(kPoolingMode), " (the only pooling implemented)"),
                          Quoted(*mode));
    }
  } else if (model.config.count("pooling_mode") != 0) {
    return InvalidInput("flux: config.json pooling_mode", Quoted(kPoolingMode),
                        ConfigScalarToString(model.config.at("pooling_mode")));
  }

  pool_size_ = params_.GetInt("pool_size");
  if (!params_.is_explicit("pool_size")) {
    FLUXATTN_ASSIGN_OR_RETURN(std::optional<int64_t> from_config,
                              ConfigPositiveInt(model, "pool_size"));
    pool_size_ = from_config.value_or(kDefaultPoolSize);
  }
  use_softmax_ = params_.GetBool("use_softmax");
  if (!params_.is_explicit("use_softmax")) {
    FLUXATTN_ASSIGN_OR_RETURN(std::optional<bool> from_config, ConfigBoolean(model, "use_softmax"));
    use_softmax_ = from_config.value_or(true);
  }

  const WeightSource* weights = setup.weights;
  std::unique_ptr<WeightSource> separate;
  if (!weights_path_.empty()) {
    if (!setup.open_weights) {
      return InvalidInput("flux: weights", "an engine that can open safetensors files",
                          "no file opener");
    }
    absl::StatusOr<std::unique_ptr<WeightSource>> opened = setup.open_weights(weights_path_);
    if (!opened.ok()) {
      return Annotate(opened.status(), absl::StrCat("flux: weights = ", Quoted(weights_path_)));
    }
    separate = std::move(*opened);
    weights = separate.get();
  }
  if (weights == nullptr) {
    return InvalidInput("flux: weights",
                        "router tensors in the checkpoint or a file named by `weights`",
                        "no tensors");
  }

  const int num_outputs = use_softmax_ ? 2 : 1;
  std::vector<FluxLayerRouter> routers;
  routers.reserve(model.num_layers);
  for (int layer = 0; layer < model.num_layers; ++layer) {
    absl::StatusOr<FluxLayerRouter> router =
        FluxLayerRouter::Load(*weights, layer, model.head_dim, num_outputs);
    if (!router.ok()) {
      if (!weights_path_.empty()) {
        return Annotate(router.status(), absl::StrCat("flux: weights = ", Quoted(weights_path_)));
      }
      return router.status();
    }
    routers.push_back(std::move(*router));
  }
  // The routers hold copies of their tensors, so `separate` may close now.
  if (setup.offer_network) {
    for (int layer = 0; layer < model.num_layers; ++layer) {
      const std::array<RouterLinear, 5> linears = routers[layer].Network();
      RouterNetwork network;
      network.layer = layer;
      network.pool_size = pool_size_;
      network.linears = linears;
      FLUXATTN_RETURN_IF_ERROR(setup.offer_network(network));
    }
  }
  routers_ = std::move(routers);
  num_q_heads_ = model.num_q_heads;
  head_dim_ = model.head_dim;
  return absl::OkStatus();
}

absl::StatusOr<RoutingDecision> FluxPolicy::Decide(const RoutingInput& input) {
  if (routers_.empty()) {
    return absl::FailedPreconditionError("flux: Decide called before Prepare");
  }
  const int num_layers = static_cast<int>(routers_.size());
  if (input.layer < 0 || input.layer >= num_layers) {
    return InvalidInput("flux: layer", absl::StrCat("a layer index in [0, ", num_layers - 1, "]"),
                        absl::StrCat(input.layer));
  }
  if (input.prompt_tokens < 1) {
    return InvalidInput("flux: prompt_tokens", "at least 1", absl::StrCat(input.prompt_tokens));
  }
  const FluxLayerRouter& router = routers_[input.layer];
  std::vector<double> logits;
  if (input.network_outputs != nullptr) {
    // The engine ran this layer's network (offered in Prepare) on its device.
    if (input.num_network_outputs != router.num_outputs()) {
      return InvalidInput("flux: network_outputs", absl::StrCat(router.num_outputs(), " logits"),
                          absl::StrCat(input.num_network_outputs));
    }
    logits.assign(input.network_outputs, input.network_outputs + input.num_network_outputs);
  } else {
    FLUXATTN_ASSIGN_OR_RETURN(logits, LogitsFromQueries(router, input));
  }
  const double margin = (use_softmax_ ? logits[1] - logits[0] : logits[0]) + bias_;

  RoutingDecision decision;
  // Not `>=`: argmax picks index 0 (SA) on a tie, and sigmoid(0) > 0.5 is false.
  decision.choice = margin > 0.0 ? AttentionChoice::kFull : AttentionChoice::kSparse;
  decision.logits.assign(logits.begin(), logits.end());
  return decision;
}

absl::StatusOr<std::vector<double>> FluxPolicy::LogitsFromQueries(const FluxLayerRouter& router,
                                                                  const RoutingInput& input) const {
  if (input.queries == nullptr) {
    return InvalidInput("flux: queries", "the layer's prompt queries", "none");
  }
  if (input.num_q_heads != num_q_heads_ || input.head_dim != head_dim_) {
    return InvalidInput("flux: queries", absl::StrCat("[T, ", num_q_heads_, ", ", head_dim_, "]"),
                        absl::StrCat("[T, ", input.num_q_heads, ", ", input.head_dim, "]"));
  }
  // The whole prompt, or (from a GPU) only its first and last rows.
  int64_t tail_row = -1;
  if (input.window_head != 0 || input.window_tail != 0) {
    if (input.window_head < std::min(pool_size_, input.prompt_tokens) ||
        input.window_tail < std::min(pool_size_, input.prompt_tokens)) {
      return InvalidInput("flux: queries",
                          absl::StrCat("the first and last ", pool_size_, " prompt rows"),
                          absl::StrCat(input.window_head, " and ", input.window_tail));
    }
    tail_row = input.window_head + input.window_tail - std::min(pool_size_, input.prompt_tokens);
  }
  const std::vector<double> pooled = FluxLayerRouter::Pool(
      input.queries, input.prompt_tokens, input.num_q_heads, input.head_dim, pool_size_, tail_row);
  return router.Logits(pooled);
}

}  // namespace fluxattn::routing
