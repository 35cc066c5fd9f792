#include "fluxattn/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "fluxattn/attention_backend.h"
#include "fluxattn/kv_cache.h"
#include "fluxattn/status.h"

namespace fluxattn {
namespace {

// The router of a composition without one: every layer full attention. Going through the same
// routing path keeps the all-FA case an ordinary router choice.
class AllFullPolicy : public RoutingPolicy {
 public:
  absl::Status Prepare(const RoutingSetup&) override { return absl::OkStatus(); }
  absl::StatusOr<RoutingDecision> Decide(const RoutingInput&) override {
    return RoutingDecision{AttentionChoice::kFull, {}};
  }
};

// Empty when `caps` allow running (request, layer) problems of this model on the CPU in both
// phases; else the reason.
std::string CapabilityGap(const AttentionCapabilities& caps, int head_dim) {
  if (std::find(caps.devices.begin(), caps.devices.end(), DeviceType::kCpu) ==
      caps.devices.end()) {
    return "it does not run on the cpu";
  }
  if (std::find(caps.dtypes.begin(), caps.dtypes.end(), DType::kF32) == caps.dtypes.end()) {
    return "it does not support f32";
  }
  if (!caps.head_dims.empty() &&
      std::find(caps.head_dims.begin(), caps.head_dims.end(), head_dim) == caps.head_dims.end()) {
    return absl::StrCat("it does not support head_dim ", head_dim);
  }
  if (!caps.prefill) return "it does not support prefill";
  if (!caps.decode) return "it does not support decode";
  return "";
}

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

struct Engine::Impl : public LayerAttention {
  struct LayerState {
    bool decided = false;
    AttentionBackend* backend = nullptr;
    std::unique_ptr<AttentionState> state;
    std::optional<LayerKvCache> kv;
    LayerRouting routing;
  };
  struct Request {
    uint64_t id = 0;
    int64_t prompt_tokens = 0;
    std::vector<LayerState> layers;
  };

  LanguageModel* model = nullptr;
  Composition composition;
  EngineOptions options;
  AllFullPolicy all_full;
  RoutingPolicy* router = nullptr;
  std::string full_name;
  AttentionBackend* full = nullptr;
  uint64_t next_request_id = 1;

  // The batch of the Forward call in progress: sequence index -> request.
  std::vector<Request*> active;
  AttentionPhase phase = AttentionPhase::kPrefill;

  absl::Status Decide(Request& req, LayerState& L, const LayerAttentionInput& in) {
    const ModelInfo& info = model->info();
    RoutingInput rin;
    rin.request_id = req.id;
    rin.layer = in.layer;
    rin.num_layers = info.num_layers;
    rin.prompt_tokens = in.num_tokens;
    rin.num_q_heads = in.num_q_heads;
    rin.head_dim = in.head_dim;
    if (router->NeedsQueries()) rin.queries = in.q_pre_rope;
    auto decision = router->Decide(rin);
    if (!decision.ok()) {
      return Annotate(decision.status(), absl::StrCat("router, layer ", in.layer));
    }
    LayerRouting& r = L.routing;
    r.layer = in.layer;
    r.choice = decision->choice;
    r.logits = decision->logits;
    r.decided_by = "router";
    std::string name = r.choice == AttentionChoice::kFull ? full_name : composition.sparse_backend;
    if (r.choice == AttentionChoice::kSparse && name.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "router chose sparse attention for layer ", in.layer,
          " but the configuration names no sparse backend ([router] sparse = \"...\")"));
    }
    auto override_it = composition.layer_backends.find(in.layer);
    if (override_it != composition.layer_backends.end()) {
      name = override_it->second;
      r.decided_by = "override";
    }
    AttentionBackend* backend = nullptr;
    if (name == full_name) {
      backend = full;
    } else {
      auto it = composition.backends.find(name);
      if (it == composition.backends.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("layer ", in.layer, ": backend \"", name, "\" is not configured"));
      }
      backend = it->second.get();
    }
    const std::string gap = CapabilityGap(backend->capabilities(), in.head_dim);
    if (!gap.empty()) {
      r.fallback = absl::StrCat("backend \"", name, "\" skipped: ", gap, "; using \"", full_name,
                                "\"");
      backend = full;
      name = full_name;
      const std::string full_gap = CapabilityGap(full->capabilities(), in.head_dim);
      if (!full_gap.empty()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "layer ", in.layer, ": full backend \"", full_name, "\" cannot run: ", full_gap));
      }
    }
    r.backend = name;
    L.backend = backend;
    L.state = backend->CreateState(in.num_q_heads, in.num_kv_heads, in.head_dim);
    L.decided = true;
    return absl::OkStatus();
  }

  absl::Status Attend(const LayerAttentionInput& in, float* out) override {
    Request& req = *active[in.sequence];
    LayerState& L = req.layers[in.layer];
    if (!L.decided) {
      if (phase != AttentionPhase::kPrefill) {
        return absl::InternalError(
            absl::StrCat("layer ", in.layer, " reached decode without a prefill decision"));
      }
      FLUXATTN_RETURN_IF_ERROR(Decide(req, L, in));
    }
    if (!L.kv) L.kv.emplace(CpuDevice(), in.num_kv_heads, in.head_dim, options.kv_page_tokens);
    if (L.kv->length() != in.pos0) {
      return absl::InternalError(absl::StrCat("layer ", in.layer, ": KV cache holds ",
                                              L.kv->length(), " positions, new tokens start at ",
                                              in.pos0));
    }
    FLUXATTN_RETURN_IF_ERROR(L.kv->Append(in.k, in.v, in.num_tokens));
    AttentionProblem p;
    p.num_q_heads = in.num_q_heads;
    p.num_kv_heads = in.num_kv_heads;
    p.head_dim = in.head_dim;
    p.scale = 1.0f / std::sqrt(static_cast<float>(in.head_dim));
    p.phase = phase;
    p.q_pos0 = in.pos0;
    p.num_queries = in.num_tokens;
    p.q = in.q;
    p.kv = L.kv->view();
    p.device = DeviceType::kCpu;
    p.layer = in.layer;
    p.request_id = req.id;
    p.state = L.state.get();
    absl::Status st = L.backend->Forward(p, out);
    if (!st.ok()) {
      return Annotate(st, absl::StrCat("backend \"", L.routing.backend, "\", layer ", in.layer));
    }
    L.kv->Release(L.backend->RetainedKv(in.pos0 + in.num_tokens));
    return absl::OkStatus();
  }
};

Engine::Engine(std::unique_ptr<Impl> impl, std::unique_ptr<LanguageModel> model)
    : impl_(std::move(impl)), model_(std::move(model)) {
  impl_->model = model_.get();
  full_backend_ = impl_->full_name;
}

Engine::~Engine() = default;

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(std::unique_ptr<LanguageModel> model,
                                                       Composition composition,
                                                       EngineOptions options) {
  if (model == nullptr) return absl::InvalidArgumentError("Engine::Create: no model");
  if (options.kv_page_tokens <= 0) {
    return InvalidInput("engine kv_page_tokens", "a positive number",
                        absl::StrCat(options.kv_page_tokens));
  }
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  impl->composition = std::move(composition);
  Composition& c = impl->composition;
  if (c.backends.empty()) {
    return absl::InvalidArgumentError("the configuration defines no attention backend");
  }
  std::string full_name = c.full_backend;
  if (full_name.empty()) {
    if (c.backends.count("full")) {
      full_name = "full";
    } else if (c.backends.size() == 1) {
      full_name = c.backends.begin()->first;
    } else {
      return absl::InvalidArgumentError(
          "the configuration names no full backend ([router] full = \"...\") and has no "
          "backend called \"full\"");
    }
  }
  auto full_it = c.backends.find(full_name);
  if (full_it == c.backends.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("full backend \"", full_name, "\" is not configured"));
  }
  impl->full_name = full_name;
  impl->full = full_it->second.get();
  for (const auto& [layer, name] : c.layer_backends) {
    if (layer < 0 || layer >= model->info().num_layers) {
      return InvalidInput(absl::StrCat("[layers.", layer, "]"),
                          absl::StrCat("a layer in [0, ", model->info().num_layers, ")"),
                          absl::StrCat(layer));
    }
    if (!c.backends.count(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("[layers.", layer, "] backend \"", name, "\" is not configured"));
    }
  }

  RoutingSetup setup;
  setup.model = &model->info();
  setup.weights = &model->weights();
  if (impl->options.open_weights) {
    setup.open_weights = impl->options.open_weights;
  } else {
    setup.open_weights = [](const std::string& path)
        -> absl::StatusOr<std::unique_ptr<WeightSource>> {
      return absl::UnimplementedError(
          absl::StrCat(path, ": opening separate weight files is not available here"));
    };
  }
  Impl* raw = impl.get();
  setup.policy = [raw](const std::string& name) -> absl::StatusOr<RoutingPolicy*> {
    auto it = raw->composition.routers.find(name);
    if (it == raw->composition.routers.end()) {
      return absl::NotFoundError(absl::StrCat("routing policy \"", name,
                                              "\" is not configured as [routers.", name, "]"));
    }
    return it->second.get();
  };
  for (auto& [name, policy] : c.routers) {
    absl::Status st = policy->Prepare(setup);
    if (!st.ok()) return Annotate(st, absl::StrCat("[routers.", name, "]"));
  }
  if (c.router) {
    impl->router = c.router.get();
    absl::Status st = impl->router->Prepare(setup);
    if (!st.ok()) return Annotate(st, "[router]");
  } else {
    impl->router = &impl->all_full;
  }
  return std::unique_ptr<Engine>(new Engine(std::move(impl), std::move(model)));
}

absl::StatusOr<BatchResult> Engine::Generate(const std::vector<std::vector<int64_t>>& prompts,
                                             const GenerationOptions& options,
                                             const TokenCallback& on_token) {
  using Clock = std::chrono::steady_clock;
  if (options.max_new_tokens < 0) {
    return InvalidInput("max_new_tokens", "a non-negative number",
                        absl::StrCat(options.max_new_tokens));
  }
  if (options.sampling.temperature < 0 || !std::isfinite(options.sampling.temperature)) {
    return InvalidInput("temperature", "a finite number >= 0",
                        absl::StrCat(options.sampling.temperature));
  }
  if (!(options.sampling.top_p > 0 && options.sampling.top_p <= 1)) {
    return InvalidInput("top_p", "a number in (0, 1]", absl::StrCat(options.sampling.top_p));
  }
  if (options.sampling.top_k < 0) {
    return InvalidInput("top_k", "a number >= 0 (0: off)", absl::StrCat(options.sampling.top_k));
  }
  const ModelInfo& info = model_->info();
  const int64_t vocab = info.vocab_size;
  std::vector<int64_t> stops = options.stop_tokens;
  if (!options.ignore_eos) {
    for (int64_t id : model_->stop_token_ids()) stops.push_back(id);
  }
  auto is_stop = [&](int64_t t) { return std::find(stops.begin(), stops.end(), t) != stops.end(); };

  const size_t n = prompts.size();
  BatchResult result;
  result.requests.resize(n);
  std::vector<Impl::Request> requests(n);
  std::vector<std::mt19937_64> rngs;
  for (size_t i = 0; i < n; ++i) {
    if (prompts[i].empty()) {
      return InvalidInput(absl::StrCat("prompt ", i), "at least one token", "an empty prompt");
    }
    for (size_t t = 0; t < prompts[i].size(); ++t) {
      if (prompts[i][t] < 0 || prompts[i][t] >= vocab) {
        return InvalidInput(absl::StrCat("prompt ", i, ", token ", t),
                            absl::StrCat("a token id in [0, ", vocab, ")"),
                            absl::StrCat(prompts[i][t]));
      }
    }
    requests[i].id = impl_->next_request_id++;
    requests[i].prompt_tokens = static_cast<int64_t>(prompts[i].size());
    requests[i].layers.resize(info.num_layers);
    rngs.emplace_back(options.sampling.seed + i);
  }
  if (n == 0) return result;

  std::vector<float> logits;
  std::vector<int> live;  // indices of unfinished requests
  std::vector<int64_t> length(n);
  auto take_token = [&](int i, std::span<const float> row) {
    GenerationResult& r = result.requests[i];
    if (options.record_logits) r.step_logits.emplace_back(row.begin(), row.end());
    const int64_t token = SampleToken(row, options.sampling, rngs[i]);
    r.tokens.push_back(token);
    if (on_token) on_token(i, token);
    if (is_stop(token)) {
      r.finish_reason = "stop";
    } else if (static_cast<int>(r.tokens.size()) >= options.max_new_tokens) {
      r.finish_reason = "length";
    } else {
      live.push_back(i);
    }
  };

  // Prefill: every prompt in one forward pass.
  const auto t0 = Clock::now();
  {
    std::vector<SequenceChunk> batch(n);
    impl_->active.resize(n);
    for (size_t i = 0; i < n; ++i) {
      batch[i].tokens = prompts[i];
      batch[i].pos0 = 0;
      impl_->active[i] = &requests[i];
      length[i] = static_cast<int64_t>(prompts[i].size());
      result.timing.prefill_tokens += length[i];
    }
    impl_->phase = AttentionPhase::kPrefill;
    FLUXATTN_RETURN_IF_ERROR(model_->Forward(batch, *impl_, false, &logits));
    for (size_t i = 0; i < n; ++i) {
      size_t held = 0;
      for (const auto& L : requests[i].layers) held += L.kv ? L.kv->bytes_held() : 0;
      result.requests[i].trace.kv_bytes_after_prefill = held;
    }
    if (options.max_new_tokens == 0) {
      for (size_t i = 0; i < n; ++i) result.requests[i].finish_reason = "length";
    } else {
      for (size_t i = 0; i < n; ++i) {
        take_token(static_cast<int>(i), std::span<const float>(&logits[i * vocab], vocab));
      }
    }
  }
  const auto t1 = Clock::now();
  result.timing.prefill_seconds = Seconds(t0, t1);

  // Decode: one token per unfinished request per step.
  impl_->phase = AttentionPhase::kDecode;
  while (!live.empty()) {
    std::vector<int> step = std::move(live);
    live.clear();
    std::vector<SequenceChunk> batch(step.size());
    impl_->active.resize(step.size());
    for (size_t s = 0; s < step.size(); ++s) {
      const int i = step[s];
      batch[s].tokens = std::span<const int64_t>(&result.requests[i].tokens.back(), 1);
      batch[s].pos0 = length[i];
      impl_->active[s] = &requests[i];
    }
    FLUXATTN_RETURN_IF_ERROR(model_->Forward(batch, *impl_, false, &logits));
    ++result.timing.decode_steps;
    for (size_t s = 0; s < step.size(); ++s) {
      const int i = step[s];
      ++length[i];
      ++result.timing.decode_tokens;
      take_token(i, std::span<const float>(&logits[s * vocab], vocab));
    }
    std::sort(live.begin(), live.end());
  }
  result.timing.decode_seconds = Seconds(t1, Clock::now());
  impl_->active.clear();

  for (size_t i = 0; i < n; ++i) {
    RequestTrace& trace = result.requests[i].trace;
    trace.request_id = requests[i].id;
    trace.prompt_tokens = requests[i].prompt_tokens;
    int sparse = 0;
    for (auto& L : requests[i].layers) {
      L.routing.kv_bytes = L.kv ? L.kv->bytes_held() : 0;
      trace.kv_bytes += L.routing.kv_bytes;
      if (L.kv) {
        const int64_t pages = (L.kv->length() + L.kv->page_tokens() - 1) / L.kv->page_tokens();
        trace.kv_bytes_written += static_cast<size_t>(pages) * 2 * L.kv->page_tokens() *
                                  info.num_kv_heads * info.head_dim * sizeof(float);
      }
      if (L.routing.backend != impl_->full_name) ++sparse;
      trace.layers.push_back(L.routing);
    }
    trace.sa_ratio = info.num_layers > 0 ? static_cast<double>(sparse) / info.num_layers : 0.0;
  }
  return result;
}

int64_t SampleToken(std::span<const float> logits, const SamplingOptions& options,
                    std::mt19937_64& rng) {
  const int64_t v = static_cast<int64_t>(logits.size());
  FLUXATTN_CHECK(v > 0);
  if (options.temperature <= 0.0 || options.top_k == 1) {
    int64_t best = 0;
    for (int64_t i = 1; i < v; ++i) {
      if (logits[i] > logits[best]) best = i;
    }
    return best;
  }
  // Candidates in descending logit order (ties: lower id first), cut by top-k.
  std::vector<int64_t> order(v);
  for (int64_t i = 0; i < v; ++i) order[i] = i;
  int64_t keep = options.top_k > 0 ? std::min<int64_t>(options.top_k, v) : v;
  auto by_logit = [&](int64_t a, int64_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::partial_sort(order.begin(), order.begin() + keep, order.end(), by_logit);
  order.resize(keep);
  std::vector<double> probs(keep);
  const double max_logit = logits[order[0]];
  double total = 0.0;
  for (int64_t j = 0; j < keep; ++j) {
    probs[j] = std::exp((logits[order[j]] - max_logit) / options.temperature);
    total += probs[j];
  }
  // Nucleus: the shortest prefix whose probability reaches top_p.
  if (options.top_p < 1.0) {
    double cumulative = 0.0;
    int64_t cut = keep;
    for (int64_t j = 0; j < keep; ++j) {
      cumulative += probs[j] / total;
      if (cumulative >= options.top_p) {
        cut = j + 1;
        break;
      }
    }
    keep = cut;
    total = 0.0;
    for (int64_t j = 0; j < keep; ++j) total += probs[j];
  }
  // 53 random bits -> uniform in [0, 1); the same on every standard library.
  const double u = static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0) * total;
  double acc = 0.0;
  for (int64_t j = 0; j < keep; ++j) {
    acc += probs[j];
    if (u < acc) return order[j];
  }
  return order[keep - 1];
}

}  // namespace fluxattn
