#include "fluxattn/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/cuda_layer_runner.h"
#include "engine/device_router.h"
#include "fluxattn/attention_backend.h"
#include "fluxattn/env_switch.h"
#include "fluxattn/kv_cache.h"
#include "fluxattn/kv_pool.h"
#include "fluxattn/status.h"
#if defined(FLUXATTN_WITH_CUDA)
#include "fluxattn/kernels/cuda_model_ops.h"
#endif

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

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// The reason `backend` cannot serve a (request, layer) of this model in both phases, or "".
std::string SupportGap(const AttentionBackend& backend, const ModelInfo& info, DeviceType device,
                       DType dtype) {
  ProblemDesc desc;
  desc.device = device;
  desc.dtype = dtype;
  desc.head_dim = info.head_dim;
  desc.num_q_heads = info.num_q_heads;
  desc.num_kv_heads = info.num_kv_heads;
  for (AttentionPhase phase : {AttentionPhase::kPrefill, AttentionPhase::kDecode}) {
    desc.phase = phase;
    absl::Status st = backend.Supports(desc);
    if (!st.ok()) return std::string(st.message());
  }
  return "";
}

absl::Status ValidateOptions(const GenerationOptions& options) {
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
  if (options.logprobs < -1 || options.logprobs > kMaxTopLogprobs) {
    return InvalidInput("logprobs",
                        absl::StrCat("-1 (none) or a number in [0, ", kMaxTopLogprobs, "]"),
                        absl::StrCat(options.logprobs));
  }
  return absl::OkStatus();
}

// The log probability of `token` under the log-softmax of `row`, and the `top` most likely
// tokens (most likely first, ties by id).
float LogProbabilities(std::span<const float> row, int64_t token, int top,
                       std::vector<TokenLogprob>* most_likely) {
  double max_logit = -INFINITY;
  for (float x : row) max_logit = std::max(max_logit, static_cast<double>(x));
  double total = 0.0;
  for (float x : row) total += std::exp(static_cast<double>(x) - max_logit);
  const double log_z = max_logit + std::log(total);
  most_likely->clear();
  if (top > 0) {
    std::vector<int64_t> ids(row.size());
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>(i);
    const size_t n = std::min(static_cast<size_t>(top), ids.size());
    std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), [&](int64_t a, int64_t b) {
      return row[a] != row[b] ? row[a] > row[b] : a < b;
    });
    for (size_t i = 0; i < n; ++i) {
      most_likely->push_back({ids[i], static_cast<float>(row[ids[i]] - log_z)});
    }
  }
  return static_cast<float>(row[token] - log_z);
}

}  // namespace

struct Engine::Impl : public LayerAttention {
  struct LayerState {
    bool decided = false;
    // The backend of the layer's decode steps (it also decides which KV stays) and of its
    // prompt; they differ when the routed instance delegates a phase (prefill_with /
    // decode_with). prefill_state is set only when they differ.
    AttentionBackend* backend = nullptr;
    std::unique_ptr<AttentionState> state;
    AttentionBackend* prefill_backend = nullptr;
    std::unique_ptr<AttentionState> prefill_state;
    std::optional<LayerKvCache> kv;
    LayerRouting routing;
  };
  // kQueued: waiting for admission; kPrefilling: admitted (pages of the whole prompt reserved),
  // its prompt run chunk by chunk; kRunning: decoding.
  enum class Phase : uint8_t { kQueued, kPrefilling, kRunning };
  struct Request {
    uint64_t id = 0;
    RequestSpec spec;
    std::string policy_name;
    RoutingPolicy* policy = nullptr;
    std::vector<LayerState> layers;
    std::mt19937_64 rng;
    Phase phase = Phase::kQueued;
    int64_t length = 0;  // positions whose K/V are in the cache
    std::vector<int64_t> stops;
    size_t kv_after_prefill = 0;
    GenerationResult result;
  };

  LanguageModel* model = nullptr;
  Composition composition;
  EngineOptions options;
  AllFullPolicy all_full;
  RoutingPolicy* router = nullptr;
  std::string full_name;
  AttentionBackend* full = nullptr;
  std::unique_ptr<KvPagePool> pool;
  uint64_t next_request_id = 1;
  std::map<uint64_t, std::unique_ptr<Request>> requests;  // by id = the order they were added

  // The step in progress: sequence index -> request, whether it is prefilling and how many of
  // its tokens the step runs (1 for a decode step).
  std::vector<Request*> active;
  std::vector<uint8_t> active_prefill;
  std::vector<int64_t> active_tokens;

  // Per-layer scratch reused by every call.
  std::vector<AttentionProblem> problems;
  std::vector<int> order;
  std::vector<PlannedLayout> group_plans;
  PlannedLayout combined_plan;
  AttentionWorkspace workspace;
  // Attention on a GPU (null on the CPU), and the host copy of the queries a routing policy
  // reads there.
  std::unique_ptr<CudaLayerRunner> cuda;
  DeviceBuffer query_f32;
  std::vector<float> host_queries;
  // Router networks the policies offered, run on the GPU (null on the CPU).
  std::unique_ptr<DeviceRouterNetworks> device_networks;
  std::vector<RoutingInput> routing_inputs;
  std::vector<RoutingDecision> routing_decisions;
  // The step's logits (kept: vocab floats per sequence are not allocated again every step) or
  // its greedy tokens.
  std::vector<float> logits;
  std::vector<int64_t> greedy_tokens;
  std::vector<LanguageModel::SampleParams> sample_params;  // ForwardSample, per sequence
  // Whether sampled steps may draw on the device (FLUXATTN_DEVICE_SAMPLING=0: on the host, from
  // the copied logits, for A/B).
  bool device_sampling = true;

  absl::StatusOr<RoutingPolicy*> PolicyFor(const std::string& name) {
    if (name.empty()) return router;
    auto it = composition.routers.find(name);
    if (it == composition.routers.end()) {
      std::vector<std::string> known = {"\"\" (the [router])"};
      for (const auto& [n, p] : composition.routers) known.push_back(absl::StrCat("\"", n, "\""));
      return InvalidInput("routing", absl::StrCat("one of ", absl::StrJoin(known, ", ")),
                          absl::StrCat("\"", name, "\""));
    }
    return it->second.get();
  }

  AttentionBackend* BackendNamed(const std::string& name) {
    if (name == full_name) return full;
    auto it = composition.backends.find(name);
    return it == composition.backends.end() ? nullptr : it->second.get();
  }

  std::string PluginOf(const std::string& name) const {
    auto it = composition.backend_plugins.find(name);
    return it == composition.backend_plugins.end() ? name : it->second;
  }

  absl::Status ApplyDecision(Request& req, int layer, const RoutingDecision& decision) {
    LayerState& L = req.layers[layer];
    const ModelInfo& info = model->info();
    LayerRouting& r = L.routing;
    r.layer = layer;
    r.choice = decision.choice;
    r.logits = decision.logits;
    r.decided_by = "router";
    std::string name = r.choice == AttentionChoice::kFull ? full_name : composition.sparse_backend;
    if (r.choice == AttentionChoice::kSparse && name.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "router chose sparse attention for layer ", layer,
          " but the configuration names no sparse backend ([router] sparse = \"...\")"));
    }
    auto override_it = composition.layer_backends.find(layer);
    if (override_it != composition.layer_backends.end()) {
      name = override_it->second;
      r.decided_by = "override";
    }
    AttentionBackend* backend = BackendNamed(name);
    if (backend == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", layer, ": backend \"", name, "\" is not configured"));
    }
    const DeviceType device = model->device()->type();
    const DType dtype = model->activation_dtype();
    const std::string gap = SupportGap(*backend, info, device, dtype);
    if (!gap.empty()) {
      r.fallback =
          absl::StrCat("backend \"", name, "\" skipped: ", gap, "; using \"", full_name, "\"");
      backend = full;
      name = full_name;
      const std::string full_gap = SupportGap(*full, info, device, dtype);
      if (!full_gap.empty()) {
        return absl::FailedPreconditionError(absl::StrCat("layer ", layer, ": full backend \"",
                                                          full_name, "\" cannot run: ", full_gap));
      }
    }
    r.backend = name;
    r.plugin = PluginOf(name);
    // The instances that serve each phase (the routed one unless it delegates the phase).
    auto phase_backend = [&](const std::map<std::string, std::string>& with, const char* phase,
                             std::string* phase_name) -> absl::StatusOr<AttentionBackend*> {
      auto it = with.find(name);
      *phase_name = name;
      if (it == with.end()) return backend;
      AttentionBackend* other = BackendNamed(it->second);
      if (other == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": backend \"", name, "\" ",
                                                       phase, " \"", it->second,
                                                       "\", which is not configured"));
      }
      const std::string other_gap = SupportGap(*other, info, device, dtype);
      if (!other_gap.empty()) {
        r.fallback = absl::StrCat(r.fallback, r.fallback.empty() ? "" : "; ", "backend \"",
                                  it->second, "\" (", phase, " of \"", name,
                                  "\") skipped: ", other_gap, "; \"", name, "\" serves it");
        return backend;
      }
      *phase_name = it->second;
      return other;
    };
    FLUXATTN_ASSIGN_OR_RETURN(
        AttentionBackend * prefill,
        phase_backend(composition.prefill_with, "prefill_with", &r.prefill_backend));
    FLUXATTN_ASSIGN_OR_RETURN(
        AttentionBackend * decode,
        phase_backend(composition.decode_with, "decode_with", &r.decode_backend));
    L.backend = decode;
    L.state = decode->CreateState(info.num_q_heads, info.num_kv_heads, info.head_dim);
    L.prefill_backend = prefill;
    L.prefill_state = prefill == decode ? nullptr
                                        : prefill->CreateState(info.num_q_heads, info.num_kv_heads,
                                                               info.head_dim);
    L.decided = true;
    return absl::OkStatus();
  }

  // Decisions for every prefilling sequence of this layer that has none yet, one DecideBatch
  // per routing policy.
  absl::Status RouteLayer(const LayerAttentionBatch& in) {
    const ModelInfo& info = model->info();
    std::vector<RoutingPolicy*> policies;
    for (size_t s = 0; s < in.seqs.size(); ++s) {
      Request& req = *active[s];
      if (req.layers[in.layer].decided) continue;
      if (!active_prefill[s]) {
        return absl::InternalError(
            absl::StrCat("layer ", in.layer, " reached decode without a prefill decision"));
      }
      if (std::find(policies.begin(), policies.end(), req.policy) == policies.end()) {
        policies.push_back(req.policy);
      }
    }
    for (RoutingPolicy* policy : policies) {
      // On a GPU, the queries a policy reads are copied out once the work queued before them
      // has run; the clock starts when they exist, so that the time is the routing's own (the
      // copy, the policy's call), not the wait for the layers before.
      if (policy->NeedsQueries() && in.q_pre_rope.device == DeviceType::kCuda) {
        FLUXATTN_RETURN_IF_ERROR(model->device()->default_stream()->Synchronize());
      }
      const auto route_start = std::chrono::steady_clock::now();
      routing_inputs.clear();
      std::vector<Request*> asked;
      for (size_t s = 0; s < in.seqs.size(); ++s) {
        Request& req = *active[s];
        if (req.layers[in.layer].decided || req.policy != policy) continue;
        RoutingInput rin;
        rin.request_id = req.id;
        rin.request_seed = req.spec.options.sampling.seed;
        rin.layer = in.layer;
        rin.num_layers = info.num_layers;
        rin.query_rows = in.seqs[s].num_tokens;
        rin.prompt_tokens = static_cast<int64_t>(req.spec.prompt.size());
        rin.num_q_heads = in.num_q_heads;
        rin.head_dim = in.head_dim;
        rin.hints = &req.spec.hints;
        routing_inputs.push_back(rin);
        asked.push_back(&req);
      }
      if (policy->NeedsQueries()) {
        std::vector<const SequenceRows*> rows;
        // The policy's network runs on the device when it offered one for this layer and each
        // asking sequence runs its whole prompt now.
        bool on_device = device_networks != nullptr && device_networks->Has(policy, in.layer);
        for (size_t s = 0; s < in.seqs.size(); ++s) {
          Request& req = *active[s];
          if (req.layers[in.layer].decided || req.policy != policy) continue;
          rows.push_back(&in.seqs[s]);
          on_device = on_device && in.seqs[s].pos0 == 0 &&
                      in.seqs[s].num_tokens == static_cast<int64_t>(req.spec.prompt.size());
        }
        if (on_device) {
          FLUXATTN_RETURN_IF_ERROR(device_networks->Run(policy, in, rows, routing_inputs));
        } else {
          FLUXATTN_RETURN_IF_ERROR(
              HostQueries(in.q_pre_rope, rows, policy->QueriesRead(), routing_inputs));
        }
      }
      RoutingBatch batch;
      batch.layer = in.layer;
      batch.num_layers = info.num_layers;
      batch.requests = routing_inputs;
      absl::Status st = policy->DecideBatch(batch, &routing_decisions);
      if (!st.ok()) {
        return Annotate(
            st, absl::StrCat("routing policy \"",
                             asked[0]->policy_name.empty() ? "router" : asked[0]->policy_name,
                             "\", layer ", in.layer));
      }
      if (routing_decisions.size() != asked.size()) {
        return absl::InternalError(absl::StrCat("routing policy returned ",
                                                routing_decisions.size(), " decisions for ",
                                                asked.size(), " requests"));
      }
      const double route_seconds = Seconds(route_start, std::chrono::steady_clock::now());
      for (size_t i = 0; i < asked.size(); ++i) {
        FLUXATTN_RETURN_IF_ERROR(ApplyDecision(*asked[i], in.layer, routing_decisions[i]));
        asked[i]->layers[in.layer].routing.route_seconds = route_seconds;
      }
    }
    return absl::OkStatus();
  }

  // Points inputs[i].queries at float32 host rows of the pre-RoPE queries of rows[i]: the
  // model's own array on the CPU; from a GPU a converted copy of the rows the policy reads
  // (its window, when the prompt is longer than it).
  absl::Status HostQueries(const TensorView& q_pre_rope, std::span<const SequenceRows* const> rows,
                           const QueryWindow& window, std::span<RoutingInput> inputs) {
    const int64_t row_elems = q_pre_rope.numel() / std::max<int64_t>(q_pre_rope.shape[0], 1);
    if (q_pre_rope.is_host_f32()) {
      for (size_t i = 0; i < rows.size(); ++i) {
        inputs[i].queries = q_pre_rope.as<const float>() + q_pre_rope.offset(rows[i]->row0);
      }
      return absl::OkStatus();
    }
#if defined(FLUXATTN_WITH_CUDA)
    const bool f32_rows = q_pre_rope.dtype == DType::kF32;
    if (q_pre_rope.device == DeviceType::kCuda && (f32_rows || q_pre_rope.dtype == DType::kBF16)) {
      // Row ranges [begin, end) to copy per sequence: the window's two ends, or everything.
      struct Range {
        int64_t begin, count;
      };
      std::vector<std::vector<Range>> ranges(rows.size());
      int64_t total = 0;
      for (size_t i = 0; i < rows.size(); ++i) {
        const SequenceRows& r = *rows[i];
        if (!window.all() && r.num_tokens > window.head + window.tail) {
          ranges[i] = {{r.row0, window.head}, {r.row0 + r.num_tokens - window.tail, window.tail}};
          inputs[i].window_head = window.head;
          inputs[i].window_tail = window.tail;
        } else {
          ranges[i] = {{r.row0, r.num_tokens}};
        }
        for (const Range& g : ranges[i]) total += g.count * row_elems;
      }
      host_queries.resize(total);
      Device* device = model->device();
      query_f32.Bind(device);
      FLUXATTN_ASSIGN_OR_RETURN(void* f32, query_f32.Ensure(total * sizeof(float)));
      Stream* stream = device->default_stream();
      int64_t at = 0;
      for (const auto& seq : ranges) {
        for (const Range& g : seq) {
          float* dst = static_cast<float*>(f32) + at;
          if (f32_rows) {
            FLUXATTN_RETURN_IF_ERROR(device->Copy(
                dst, q_pre_rope.as<const float>() + g.begin * row_elems,
                g.count * row_elems * sizeof(float), CopyKind::kDeviceToDevice, stream));
          } else {
            FLUXATTN_RETURN_IF_ERROR(
                kernels::cuda::Bf16ToF32(q_pre_rope.as<const uint16_t>() + g.begin * row_elems, dst,
                                         g.count * row_elems, stream->native_handle()));
          }
          at += g.count * row_elems;
        }
      }
      FLUXATTN_RETURN_IF_ERROR(device->Copy(host_queries.data(), f32, total * sizeof(float),
                                            CopyKind::kDeviceToHost, stream));
      FLUXATTN_RETURN_IF_ERROR(stream->Synchronize());
      at = 0;
      for (size_t i = 0; i < rows.size(); ++i) {
        inputs[i].queries = host_queries.data() + at;
        for (const Range& g : ranges[i]) at += g.count * row_elems;
      }
      return absl::OkStatus();
    }
#endif
    return absl::UnimplementedError(absl::StrCat("routing queries of dtype ",
                                                 DTypeName(q_pre_rope.dtype), " on ",
                                                 DeviceTypeName(q_pre_rope.device)));
  }

  absl::Status Attend(const LayerAttentionBatch& in, const TensorView& out) override {
    const int layer = in.layer;
    if (in.seqs.size() != active.size()) {
      return absl::InternalError(
          absl::StrCat("attention: ", in.seqs.size(), " sequences, expected ", active.size()));
    }
    FLUXATTN_RETURN_IF_ERROR(RouteLayer(in));
    const size_t k_row = static_cast<size_t>(in.num_kv_heads) * in.head_dim;
    const float scale = 1.0f / std::sqrt(static_cast<float>(in.head_dim));
    const DeviceType device = model->device()->type();
    const DType dtype = model->activation_dtype();
    // K/V of the new rows into every sequence's pages (reserved before the step); on a GPU the
    // runner's kernel writes them, the caches only count them here.
    for (size_t s = 0; s < in.seqs.size(); ++s) {
      LayerState& L = active[s]->layers[layer];
      const SequenceRows& rows = in.seqs[s];
      if (L.kv->length() != rows.pos0) {
        return absl::InternalError(absl::StrCat("layer ", layer, ": KV cache holds ",
                                                L.kv->length(), " positions, new tokens start at ",
                                                rows.pos0));
      }
      if (cuda) {
        FLUXATTN_RETURN_IF_ERROR(L.kv->MarkWritten(rows.num_tokens));
      } else {
        FLUXATTN_RETURN_IF_ERROR(L.kv->Append(in.k.as<const float>() + rows.row0 * k_row,
                                              in.v.as<const float>() + rows.row0 * k_row,
                                              rows.num_tokens));
      }
    }
    // Sequences grouped by backend, groups in order of first appearance.
    std::vector<AttentionBackend*> group_backend;
    std::vector<int> group_of(in.seqs.size());
    for (size_t s = 0; s < in.seqs.size(); ++s) {
      const LayerState& L = active[s]->layers[layer];
      AttentionBackend* b = active_prefill[s] ? L.prefill_backend : L.backend;
      auto it = std::find(group_backend.begin(), group_backend.end(), b);
      group_of[s] = static_cast<int>(it - group_backend.begin());
      if (it == group_backend.end()) group_backend.push_back(b);
    }
    const size_t groups = group_backend.size();
    order.clear();
    std::vector<size_t> group_begin(groups + 1, 0);
    for (size_t g = 0; g < groups; ++g) {
      group_begin[g] = order.size();
      for (size_t s = 0; s < in.seqs.size(); ++s) {
        if (group_of[s] == static_cast<int>(g)) order.push_back(static_cast<int>(s));
      }
    }
    group_begin[groups] = order.size();
    problems.resize(order.size());
    for (size_t i = 0; i < order.size(); ++i) {
      const int s = order[i];
      Request& req = *active[s];
      LayerState& L = req.layers[layer];
      const SequenceRows& rows = in.seqs[s];
      AttentionProblem& p = problems[i];
      p = AttentionProblem{};
      p.num_q_heads = in.num_q_heads;
      p.num_kv_heads = in.num_kv_heads;
      p.head_dim = in.head_dim;
      p.scale = scale;
      p.phase = active_prefill[s] ? AttentionPhase::kPrefill : AttentionPhase::kDecode;
      p.q_pos0 = rows.pos0;
      p.num_queries = rows.num_tokens;
      p.q_row0 = rows.row0;
      p.q = in.q.Rows(rows.row0, rows.num_tokens);
      p.k_new = in.k.Rows(rows.row0, rows.num_tokens);
      p.v_new = in.v.Rows(rows.row0, rows.num_tokens);
      p.kv = L.kv->view();
      p.device = device;
      p.dtype = dtype;
      p.layer = layer;
      p.request_id = req.id;
      p.state = active_prefill[s] && L.prefill_state ? L.prefill_state.get() : L.state.get();
    }
    AttentionBatch all;
    all.layer = layer;
    all.num_q_heads = in.num_q_heads;
    all.num_kv_heads = in.num_kv_heads;
    all.head_dim = in.head_dim;
    all.scale = scale;
    all.device = device;
    all.dtype = dtype;
    all.q = in.q;
    all.out = out;
    all.kv = pool->view();
    if (group_plans.size() < groups) group_plans.resize(groups);
    bool shared_launch = true;
    for (size_t g = 0; g < groups; ++g) {
      AttentionBatch sub = all;
      sub.seqs = std::span<const AttentionProblem>(problems.data() + group_begin[g],
                                                   group_begin[g + 1] - group_begin[g]);
      absl::Status st = group_backend[g]->Plan(sub, &group_plans[g]);
      if (st.ok() && group_plans[g].layouts.size() != sub.seqs.size()) {
        st = absl::InternalError(absl::StrCat("Plan wrote ", group_plans[g].layouts.size(),
                                              " layouts for ", sub.seqs.size(), " sequences"));
      }
      if (!st.ok()) {
        const Request& req = *active[order[group_begin[g]]];
        return Annotate(
            st, absl::StrCat("backend \"", req.layers[layer].routing.backend, "\", layer ", layer));
      }
      shared_launch = shared_launch && !group_backend[g]->capabilities().custom_run;
    }
    if (shared_launch) {
      // One launch of the core kernel for every sequence of the layer.
      combined_plan.layouts.resize(order.size());
      for (size_t g = 0; g < groups; ++g) {
        for (size_t i = group_begin[g]; i < group_begin[g + 1]; ++i) {
          std::swap(combined_plan.layouts[i], group_plans[g].layouts[i - group_begin[g]]);
        }
      }
      all.seqs = problems;
      absl::Status st = cuda ? cuda->Run(all, in.k, in.v, combined_plan.layouts)
                             : RunBlockSparseAttention(all, combined_plan, &workspace);
      if (!st.ok()) return Annotate(st, absl::StrCat("attention, layer ", layer));
    } else {
      if (cuda) {
        return absl::UnimplementedError(absl::StrCat(
            "layer ", layer, ": backends with their own kernel do not run on cuda yet"));
      }
      for (size_t g = 0; g < groups; ++g) {
        AttentionBatch sub = all;
        sub.seqs = std::span<const AttentionProblem>(problems.data() + group_begin[g],
                                                     group_begin[g + 1] - group_begin[g]);
        absl::Status st = group_backend[g]->Run(sub, group_plans[g], &workspace);
        if (!st.ok()) {
          const Request& req = *active[order[group_begin[g]]];
          return Annotate(st, absl::StrCat("backend \"", req.layers[layer].routing.backend,
                                           "\", layer ", layer));
        }
      }
    }
    // What the backends will no longer read goes back to the pool.
    // A prompt with chunks still to come keeps all of its KV (its pages are reserved from
    // admission anyway): RetainedKv speaks of the queries after next_query_pos, and the next
    // chunk's queries are prompt rows, which a backend's prefill may read in full where its
    // decode would not (any decode_with: xattention's prefill with a streaming decode, say).
    for (size_t s = 0; s < in.seqs.size(); ++s) {
      LayerState& L = active[s]->layers[layer];
      const int64_t next = in.seqs[s].pos0 + in.seqs[s].num_tokens;
      if (next < static_cast<int64_t>(active[s]->spec.prompt.size())) continue;
      L.kv->Release(L.backend->RetainedKv(next),
                    cuda ? model->device()->default_stream() : nullptr);
    }
    return absl::OkStatus();
  }

  // The prompt tokens `req` runs next within `budget`. Chunking never changes a routing
  // decision: a policy that reads the queries of the prompt's last rows (or of every row) sees
  // them only when the prompt runs whole, and one that reads its first rows gets them all in the
  // first chunk.
  int64_t NextChunk(const Request& req, int64_t budget) const {
    const int64_t left = static_cast<int64_t>(req.spec.prompt.size()) - req.length;
    if (req.policy->NeedsQueries()) {
      const QueryWindow window = req.policy->QueriesRead();
      if (window.all() || window.tail > 0) return left;
      if (req.length == 0) return std::min(left, std::max(budget, window.head));
    }
    return std::min(left, budget);
  }

  // Pages for positions [0, length) in every layer of `req`, all or nothing per layer.
  absl::Status Reserve(Request& req, int64_t length) {
    for (LayerState& L : req.layers) {
      if (!L.kv) L.kv.emplace(pool.get());
      absl::Status st = L.kv->Reserve(length);
      if (!st.ok()) {
        return Annotate(st, absl::StrCat("request ", req.id, " (", length, " positions x ",
                                         req.layers.size(), " layers)"));
      }
    }
    return absl::OkStatus();
  }

  // Returns every page of `req` to the pool and forgets its page tables.
  void ReleaseAll(Request& req) {
    for (LayerState& L : req.layers) L.kv.reset();
  }

  size_t KvBytes(const Request& req) const {
    size_t held = 0;
    for (const LayerState& L : req.layers) held += L.kv ? L.kv->bytes_held() : 0;
    return held;
  }

  // Moves the result out of a finished request, with its trace.
  GenerationResult Finish(Request& req) {
    const ModelInfo& info = model->info();
    GenerationResult result = std::move(req.result);
    result.request_id = req.id;
    RequestTrace& trace = result.trace;
    trace.request_id = req.id;
    trace.prompt_tokens = static_cast<int64_t>(req.spec.prompt.size());
    trace.routing = req.policy_name.empty() ? "router" : req.policy_name;
    trace.kv_bytes_after_prefill = req.kv_after_prefill;
    int sparse = 0;
    for (LayerState& L : req.layers) {
      L.routing.kv_bytes = L.kv ? L.kv->bytes_held() : 0;
      trace.kv_bytes += L.routing.kv_bytes;
      if (L.kv) {
        const int64_t pages = (L.kv->length() + L.kv->page_tokens() - 1) / L.kv->page_tokens();
        trace.kv_bytes_full_cache += static_cast<size_t>(pages) * pool->page_bytes();
      }
      if (L.routing.backend != full_name) ++sparse;
      trace.layers.push_back(L.routing);
    }
    trace.sa_ratio = info.num_layers > 0 ? static_cast<double>(sparse) / info.num_layers : 0.0;
    ReleaseAll(req);
    return result;
  }
};

Engine::Engine(std::unique_ptr<Impl> impl, std::unique_ptr<LanguageModel> model)
    : impl_(std::move(impl)), model_(std::move(model)) {
  impl_->model = model_.get();
  full_backend_ = impl_->full_name;
}

Engine::~Engine() {
  // Requests hold pages of the pool: they go first.
  if (impl_) impl_->requests.clear();
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(std::unique_ptr<LanguageModel> model,
                                                       Composition composition,
                                                       EngineOptions options) {
  if (model == nullptr) return absl::InvalidArgumentError("Engine::Create: no model");
  if (options.kv_page_tokens <= 0 || options.kv_page_tokens > 65536) {
    return InvalidInput("kv page_tokens", "a number in [1, 65536]",
                        absl::StrCat(options.kv_page_tokens));
  }
  if (options.prefill_chunk_tokens < 0) {
    return InvalidInput("scheduler prefill_chunk_tokens", "0 (whole prompts) or more",
                        absl::StrCat(options.prefill_chunk_tokens));
  }
  if (options.max_step_tokens < 0 || options.max_batch < 0) {
    return InvalidInput("scheduler max_step_tokens / max_batch", "0 (no limit) or more",
                        absl::StrCat(options.max_step_tokens, " / ", options.max_batch));
  }
  auto impl = std::make_unique<Impl>();
  FLUXATTN_ASSIGN_OR_RETURN(impl->device_sampling, EnvSwitch("FLUXATTN_DEVICE_SAMPLING", true));
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
  const ModelInfo& info = model->info();
  for (const auto& [layer, name] : c.layer_backends) {
    if (layer < 0 || layer >= info.num_layers) {
      return InvalidInput(absl::StrCat("[layers.", layer, "]"),
                          absl::StrCat("a layer in [0, ", info.num_layers, ")"),
                          absl::StrCat(layer));
    }
    if (!c.backends.count(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("[layers.", layer, "] backend \"", name, "\" is not configured"));
    }
  }

  // The KV page pool of the model's device.
  Device* device = model->device();
  KvPoolOptions pool_options;
  pool_options.dtype = model->activation_dtype();
  pool_options.page_tokens = impl->options.kv_page_tokens;
  pool_options.num_kv_heads = info.num_kv_heads;
  pool_options.head_dim = info.head_dim;
  if (device->type() == DeviceType::kCuda) {
    // The CUDA kernels read heads of 64 or 128: smaller heads are stored padded with zeros.
    if (info.head_dim > 128) {
      return InvalidInput("model head_dim", "at most 128 for attention on cuda",
                          absl::StrCat(info.head_dim));
    }
    pool_options.head_dim = info.head_dim <= 64 ? 64 : 128;
  }
  if (impl->options.kv_pool_bytes > 0) {
    pool_options.capacity_pages = KvPoolPagesForBytes(impl->options.kv_pool_bytes, pool_options);
    if (pool_options.capacity_pages < 1) {
      return InvalidInput("[kv] pool_mib",
                          absl::StrCat("room for at least one page (",
                                       2 * pool_options.page_tokens * info.num_kv_heads *
                                           info.head_dim * DTypeSize(pool_options.dtype),
                                       " bytes)"),
                          absl::StrCat(impl->options.kv_pool_bytes, " bytes"));
    }
  } else {
    const int64_t max_pos =
        static_cast<int64_t>(info.ConfigNumber("max_position_embeddings").value_or(32768));
    const int64_t per_sequence = (std::max<int64_t>(max_pos, 1) + pool_options.page_tokens - 1) /
                                 pool_options.page_tokens * std::max(info.num_layers, 1);
    // 1 GiB on the CPU, 16 GiB on a GPU at most.
    const size_t cap_bytes =
        device->type() == DeviceType::kCpu ? size_t{1} << 30 : size_t{16} << 30;
    const int64_t cap = KvPoolPagesForBytes(cap_bytes, pool_options);
    pool_options.capacity_pages = std::max<int64_t>(1, std::min(16 * per_sequence, cap));
  }
  FLUXATTN_ASSIGN_OR_RETURN(impl->pool, KvPagePool::Create(device, pool_options));
  if (device->type() == DeviceType::kCuda) {
    FLUXATTN_ASSIGN_OR_RETURN(impl->cuda,
                              CudaLayerRunner::Create(device, impl->options.dense_prefill));
  } else if (impl->options.dense_prefill != "auto" && impl->options.dense_prefill != "fluxattn") {
    return InvalidInput("attention.dense_prefill", "\"auto\" or \"fluxattn\" on the cpu",
                        absl::StrCat("\"", impl->options.dense_prefill, "\""));
  }
  // The activations of the largest step, asked for once with the weights and the KV pool.
  if (impl->options.max_step_tokens > 0) {
    const int64_t rows = impl->options.max_step_tokens;
    const int64_t seqs =
        impl->options.max_batch > 0 ? std::min(impl->options.max_batch, rows) : rows;
    absl::Status st = model->ReserveSteps(rows, seqs);
    if (st.ok() && impl->cuda != nullptr) {
      st = impl->cuda->ReserveScratch(rows, static_cast<int32_t>(seqs), info.num_q_heads,
                                      info.num_kv_heads, info.head_dim, pool_options.head_dim,
                                      model->activation_dtype());
    }
    if (!st.ok()) {
      return Annotate(st, absl::StrCat("[scheduler] max_step_tokens = ", rows,
                                       ", max_batch = ", impl->options.max_batch));
    }
  }

  RoutingSetup setup;
  setup.model = &model->info();
  setup.weights = &model->weights();
  if (impl->options.open_weights) {
    setup.open_weights = impl->options.open_weights;
  } else {
    setup.open_weights =
        [](const std::string& path) -> absl::StatusOr<std::unique_ptr<WeightSource>> {
      return absl::UnimplementedError(
          absl::StrCat(path, ": opening separate weight files is not available here"));
    };
  }
  Impl* raw = impl.get();
  setup.policy = [raw](const std::string& name) -> absl::StatusOr<RoutingPolicy*> {
    auto it = raw->composition.routers.find(name);
    if (it == raw->composition.routers.end()) {
      return absl::NotFoundError(
          absl::StrCat("routing policy \"", name, "\" is not configured as [routers.", name, "]"));
    }
    return it->second.get();
  };
  // FLUXATTN_DEVICE_ROUTER=0 keeps router networks on the host (the queries copied out), for A/B.
  FLUXATTN_ASSIGN_OR_RETURN(const bool device_router, EnvSwitch("FLUXATTN_DEVICE_ROUTER", true));
  if (device_router && device->type() == DeviceType::kCuda &&
      model->activation_dtype() == DType::kBF16 &&
      DeviceRouterNetworks::Supported(model->info().head_dim)) {
    impl->device_networks = std::make_unique<DeviceRouterNetworks>(device, model->info().num_layers,
                                                                   model->info().head_dim);
  }
  // Each policy's setup offers its networks as its own.
  auto setup_for = [&](const RoutingPolicy* policy) {
    RoutingSetup own = setup;
    if (raw->device_networks != nullptr) {
      own.offer_network = [raw, policy](const RouterNetwork& network) {
        return raw->device_networks->Offer(policy, network);
      };
    }
    return own;
  };
  for (auto& [name, policy] : c.routers) {
    absl::Status st = policy->Prepare(setup_for(policy.get()));
    if (!st.ok()) return Annotate(st, absl::StrCat("[routers.", name, "]"));
  }
  if (c.router) {
    impl->router = c.router.get();
    absl::Status st = impl->router->Prepare(setup_for(impl->router));
    if (!st.ok()) return Annotate(st, "[router]");
  } else {
    impl->router = &impl->all_full;
  }
  return std::unique_ptr<Engine>(new Engine(std::move(impl), std::move(model)));
}

EngineOptions EngineOptionsFor(const EngineConfig& config) {
  EngineOptions options;
  options.kv_page_tokens = config.kv.page_tokens;
  options.kv_pool_bytes = static_cast<size_t>(config.kv.pool_mib) << 20;
  options.dense_prefill = config.attention.dense_prefill;
  options.prefill_chunk_tokens = config.scheduler.prefill_chunk_tokens;
  options.max_step_tokens = config.scheduler.max_step_tokens;
  options.max_batch = config.scheduler.max_batch;
  return options;
}

std::string Engine::dense_prefill_kernel() const {
  return impl_->cuda ? impl_->cuda->dense_prefill_kernel() : std::string();
}

std::vector<std::string> Engine::routing_policies() const {
  std::vector<std::string> names = {""};
  for (const auto& [name, policy] : impl_->composition.routers) names.push_back(name);
  return names;
}

absl::StatusOr<uint64_t> Engine::Add(RequestSpec spec) {
  FLUXATTN_RETURN_IF_ERROR(ValidateOptions(spec.options));
  const ModelInfo& info = model_->info();
  if (spec.prompt.empty()) return InvalidInput("prompt", "at least one token", "an empty prompt");
  for (size_t t = 0; t < spec.prompt.size(); ++t) {
    if (spec.prompt[t] < 0 || spec.prompt[t] >= info.vocab_size) {
      return InvalidInput(absl::StrCat("prompt token ", t),
                          absl::StrCat("a token id in [0, ", info.vocab_size, ")"),
                          absl::StrCat(spec.prompt[t]));
    }
  }
  FLUXATTN_ASSIGN_OR_RETURN(RoutingPolicy * policy, impl_->PolicyFor(spec.routing));
  auto req = std::make_unique<Impl::Request>();
  req->id = impl_->next_request_id++;
  req->policy = policy;
  req->policy_name = spec.routing;
  req->layers.resize(info.num_layers);
  req->rng.seed(spec.options.sampling.seed);
  req->stops = spec.options.stop_tokens;
  if (!spec.options.ignore_eos) {
    for (int64_t id : model_->stop_token_ids()) req->stops.push_back(id);
  }
  req->spec = std::move(spec);
  const uint64_t id = req->id;
  impl_->requests.emplace(id, std::move(req));
  return id;
}

bool Engine::Cancel(uint64_t request_id) {
  auto it = impl_->requests.find(request_id);
  if (it == impl_->requests.end()) return false;
  impl_->ReleaseAll(*it->second);
  impl_->requests.erase(it);
  return true;
}

int64_t Engine::num_queued() const {
  int64_t n = 0;
  for (const auto& [id, r] : impl_->requests) n += r->phase == Impl::Phase::kQueued;
  return n;
}

int64_t Engine::num_running() const {
  return static_cast<int64_t>(impl_->requests.size()) - num_queued();
}

int64_t Engine::kv_pages_used() const { return impl_->pool->pages_used(); }
int64_t Engine::kv_pages_total() const { return impl_->pool->capacity_pages(); }
size_t Engine::kv_page_bytes() const { return impl_->pool->page_bytes(); }

absl::StatusOr<StepResult> Engine::Step() {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  Impl& I = *impl_;
  StepResult out;
  std::vector<uint64_t> dropped;
  auto fail = [&](Impl::Request& req, absl::Status status) {
    I.ReleaseAll(req);
    out.failed.push_back({req.id, std::move(status)});
    dropped.push_back(req.id);
  };
  // Admission: running requests need one more position; prefilling ones go on with their
  // prompt; queued ones are admitted (the pages of their whole prompt reserved here, so that the
  // forward pass never allocates) while the step's prompt-token budget lasts.
  I.active.clear();
  I.active_prefill.clear();
  I.active_tokens.clear();
  for (auto& [id, req] : I.requests) {
    if (req->phase != Impl::Phase::kRunning) continue;
    absl::Status st = I.Reserve(*req, req->length + 1);
    if (!st.ok()) {
      fail(*req, st);
      continue;
    }
    I.active.push_back(req.get());
    I.active_prefill.push_back(0);
    I.active_tokens.push_back(1);
  }
  // [scheduler] max_step_tokens and max_batch bound the step's rows and requests (admission
  // keeps the running requests within both, so their decode rows always fit).
  constexpr int64_t kNoLimit = std::numeric_limits<int64_t>::max();
  const int64_t step_tokens = I.options.max_step_tokens > 0 ? I.options.max_step_tokens : kNoLimit;
  const int64_t batch_cap =
      std::min(I.options.max_batch > 0 ? I.options.max_batch : kNoLimit, step_tokens);
  int64_t rows_left =
      step_tokens == kNoLimit ? kNoLimit : step_tokens - static_cast<int64_t>(I.active.size());
  int64_t budget = std::min(
      I.options.prefill_chunk_tokens > 0 ? I.options.prefill_chunk_tokens : kNoLimit, rows_left);
  for (auto& [id, req] : I.requests) {
    if (budget <= 0) break;
    if (req->phase == Impl::Phase::kRunning) continue;
    const int64_t len = static_cast<int64_t>(req->spec.prompt.size());
    if (req->phase == Impl::Phase::kQueued && static_cast<int64_t>(I.active.size()) >= batch_cap) {
      break;  // waits in the queue, in order
    }
    const int64_t chunk = I.NextChunk(*req, budget);
    if (chunk > rows_left) {
      if (chunk <= step_tokens) break;  // fits an emptier step: waits, in order
      // No later step can run it either: a permanent refusal (OutOfRange), not "retry later".
      fail(*req, absl::OutOfRangeError(absl::StrCat(
                     "request ", req->id, ": its prompt runs ", chunk,
                     " tokens in one step (its routing policy reads the prompt's ",
                     req->policy->QueriesRead().tail > 0 ? "last rows" : "first rows",
                     "), expected at most [scheduler] max_step_tokens = ", step_tokens)));
      continue;
    }
    if (req->phase == Impl::Phase::kQueued) {
      absl::Status st = I.Reserve(*req, len);
      if (!st.ok()) {
        if (req->spec.wait_for_kv && absl::IsResourceExhausted(st)) {
          I.ReleaseAll(*req);  // waits in the queue, in order
          break;
        }
        fail(*req, st);
        continue;
      }
      req->phase = Impl::Phase::kPrefilling;
    }
    budget -= std::min(chunk, budget);
    if (rows_left != kNoLimit) rows_left -= chunk;
    I.active.push_back(req.get());
    I.active_prefill.push_back(1);
    I.active_tokens.push_back(chunk);
  }
  if (!I.active.empty()) {
    std::vector<SequenceChunk> batch(I.active.size());
    for (size_t s = 0; s < I.active.size(); ++s) {
      Impl::Request& req = *I.active[s];
      if (I.active_prefill[s]) {
        batch[s].tokens =
            std::span<const int64_t>(req.spec.prompt).subspan(req.length, I.active_tokens[s]);
      } else {
        batch[s].tokens = std::span<const int64_t>(&req.result.tokens.back(), 1);
      }
      batch[s].pos0 = req.length;
    }
    // Every request greedy and none recording logits: only the chosen ids leave the model
    // (on a GPU the argmax runs there, instead of copying vocab floats per sequence back).
    // Sampled requests on a model that samples where its logits are (a GPU): the same, with
    // each request's parameters and its (seed, step) draw.
    bool greedy = true, ids_only = true;
    for (const Impl::Request* req : I.active) {
      const GenerationOptions& o = req->spec.options;
      ids_only = ids_only && !o.record_logits && o.logprobs < 0;
      greedy = greedy && (o.sampling.temperature <= 0.0 || o.sampling.top_k == 1);
    }
    greedy = greedy && ids_only;
    const bool device_sampling =
        !greedy && ids_only && model_->SamplesOnDevice() && I.device_sampling;
    std::vector<float>& logits = I.logits;
    std::vector<int64_t>& greedy_tokens = I.greedy_tokens;
    absl::Status st;
    if (greedy) {
      st = model_->ForwardGreedy(batch, I, &greedy_tokens);
    } else if (device_sampling) {
      std::vector<LanguageModel::SampleParams>& params = I.sample_params;
      params.resize(I.active.size());
      for (size_t s = 0; s < I.active.size(); ++s) {
        const Impl::Request& req = *I.active[s];
        const SamplingOptions& o = req.spec.options.sampling;
        params[s] = {o.temperature, o.top_k, o.top_p, o.seed,
                     static_cast<uint64_t>(req.result.tokens.size())};
      }
      st = model_->ForwardSample(batch, I, params, &greedy_tokens);
    } else {
      st = model_->Forward(batch, I, false, &logits);
    }
    if (!st.ok()) {
      // A failure inside the batch's forward pass: every request of the step is dropped.
      for (Impl::Request* req : I.active) fail(*req, st);
    } else {
      const int64_t vocab = model_->info().vocab_size;
      for (size_t s = 0; s < I.active.size(); ++s) {
        Impl::Request& req = *I.active[s];
        GenerationResult& r = req.result;
        const GenerationOptions& o = req.spec.options;
        if (I.active_prefill[s]) {
          req.length += I.active_tokens[s];
          out.prefill_tokens += I.active_tokens[s];
          // A chunk before the prompt's last one samples nothing.
          if (req.length < static_cast<int64_t>(req.spec.prompt.size())) continue;
          req.phase = Impl::Phase::kRunning;
          req.kv_after_prefill = I.KvBytes(req);
        } else {
          ++req.length;
          ++out.decode_tokens;
        }
        bool done = false;
        if (o.max_new_tokens == 0) {
          r.finish_reason = "length";
          done = true;
        } else {
          StepToken t{req.id, 0};
          if (greedy || device_sampling) {
            t.token = greedy_tokens[s];
          } else {
            std::span<const float> row(&logits[s * vocab], vocab);
            if (o.record_logits) r.step_logits.emplace_back(row.begin(), row.end());
            t.token = SampleToken(row, o.sampling, req.rng);
            if (o.logprobs >= 0) {
              t.logprob = LogProbabilities(row, t.token, o.logprobs, &t.top_logprobs);
              r.logprobs.push_back(t.logprob);
              r.top_logprobs.push_back(t.top_logprobs);
            }
          }
          const int64_t token = t.token;
          r.tokens.push_back(token);
          out.tokens.push_back(std::move(t));
          if (std::find(req.stops.begin(), req.stops.end(), token) != req.stops.end()) {
            r.finish_reason = "stop";
            done = true;
          } else if (static_cast<int>(r.tokens.size()) >= o.max_new_tokens) {
            r.finish_reason = "length";
            done = true;
          }
        }
        if (done) {
          out.finished.push_back(I.Finish(req));
          dropped.push_back(req.id);
        }
      }
    }
  }
  for (uint64_t id : dropped) I.requests.erase(id);
  I.active.clear();
  I.active_prefill.clear();
  I.active_tokens.clear();
  out.seconds = Seconds(t0, Clock::now());
  return out;
}

absl::StatusOr<BatchResult> Engine::Generate(const std::vector<std::vector<int64_t>>& prompts,
                                             const GenerationOptions& options,
                                             const TokenCallback& on_token) {
  FLUXATTN_RETURN_IF_ERROR(ValidateOptions(options));
  std::vector<RequestSpec> requests(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    requests[i].prompt = prompts[i];
    requests[i].options = options;
  }
  return Generate(std::move(requests), on_token);
}

absl::StatusOr<BatchResult> Engine::Generate(std::vector<RequestSpec> requests,
                                             const TokenCallback& on_token) {
  BatchResult result;
  const size_t n = requests.size();
  result.requests.resize(n);
  std::unordered_map<uint64_t, int> index;
  std::vector<uint64_t> ids;
  for (size_t i = 0; i < n; ++i) {
    absl::StatusOr<uint64_t> id = Add(std::move(requests[i]));
    if (!id.ok()) {
      for (uint64_t added : ids) Cancel(added);
      return Annotate(id.status(), absl::StrCat("prompt ", i));
    }
    index[*id] = static_cast<int>(i);
    ids.push_back(*id);
  }
  while (!ids.empty() && !idle()) {
    absl::StatusOr<StepResult> step = Step();
    if (!step.ok() || !step->failed.empty()) {
      for (uint64_t id : ids) Cancel(id);
      return step.ok() ? step->failed[0].status : step.status();
    }
    // Steps that ran prompt tokens count as prefill (with chunked prefill, several).
    if (step->prefill_tokens > 0) {
      result.timing.prefill_seconds += step->seconds;
      result.timing.prefill_tokens += step->prefill_tokens;
    } else {
      result.timing.decode_seconds += step->seconds;
      result.timing.decode_tokens += step->decode_tokens;
      ++result.timing.decode_steps;
    }
    if (on_token) {
      for (const StepToken& t : step->tokens) on_token(index[t.request_id], t.token);
    }
    for (GenerationResult& r : step->finished) {
      result.requests[index[r.request_id]] = std::move(r);
    }
  }
  return result;
}

}  // namespace fluxattn
