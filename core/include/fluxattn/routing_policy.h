// The interface every routing plugin implements: per request and per layer, at prefill, pick
// full attention (FA) or sparse attention (SA). The engine asks once per (request, layer) and
// keeps the answer for every decode step of that request.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fluxattn/model_info.h"

namespace fluxattn {

enum class AttentionChoice : uint8_t { kFull = 0, kSparse = 1 };

const char* AttentionChoiceName(AttentionChoice choice);  // "full" / "sparse"

class RoutingPolicy;

// One layer of a router network: y = W x + b, then SiLU where `silu` is set. W [out, in]
// row-major float32.
struct RouterLinear {
  const float* weight = nullptr;
  const float* bias = nullptr;
  int64_t in = 0;
  int64_t out = 0;
  bool silu = false;
};

// A learned router of one layer in a form an engine can run on its device for a whole batch:
// the layer's prompt queries [T, num_q_heads, head_dim] pooled as Flux's ctx_q does (with
// n = min(pool_size, T), the mean over heads of the sum of rows [0, n) and rows [T - n, T),
// divided by 2 n; a row in both halves counts twice), then `linears` in order. linears[0].in is
// head_dim; the last linear's outputs reach Decide as RoutingInput::network_outputs.
struct RouterNetwork {
  uint32_t struct_size = sizeof(RouterNetwork);
  int layer = 0;
  int64_t pool_size = 0;
  std::span<const RouterLinear> linears;
};

// Everything a policy may use when it is set up for one model.
struct RoutingSetup {
  const ModelInfo* model = nullptr;
  // Tensors of the checkpoint (router weights of Flux checkpoints live here).
  const WeightSource* weights = nullptr;
  // Opens another safetensors file (for router weights shipped separately).
  std::function<absl::StatusOr<std::unique_ptr<WeightSource>>(const std::string& path)>
      open_weights;
  // Another routing policy configured as [routers.<name>], already set up (for composing
  // policies, e.g. `length` delegating above a threshold).
  std::function<absl::StatusOr<RoutingPolicy*>(const std::string& name)> policy;
  // Set when the engine can run router networks on the model's device (null otherwise). A
  // policy may offer one network per layer during Prepare (the engine copies the weights; the
  // spans need not outlive the call). For a layer with a network, the engine may then hand
  // Decide the network's outputs (RoutingInput::network_outputs, queries null) instead of the
  // queries, so Decide must accept either.
  std::function<absl::Status(const RouterNetwork& network)> offer_network;
};

struct RoutingInput {
  uint32_t struct_size = sizeof(RoutingInput);
  uint64_t request_id = 0;
  // The request's own seed (random policies draw from it, never from its place in a batch).
  uint64_t request_seed = 0;
  int layer = 0;
  int num_layers = 0;
  // Rows of `queries`: the prompt being prefilled.
  int64_t query_rows = 0;
  // Length of the whole prompt.
  int64_t prompt_tokens = 0;
  // Queries of the prompt after q_proj (and q_norm where the model has it), before RoPE:
  // [query_rows, num_q_heads, head_dim], float32 on the CPU. Null when NeedsQueries() is false.
  const float* queries = nullptr;
  int num_q_heads = 0;
  int head_dim = 0;
  // Free-form per-request hints (e.g. from the CLI, a request file or an HTTP request).
  const std::map<std::string, std::string>* hints = nullptr;
  // Rows `queries` holds when the policy declared a QueryWindow and the prompt is longer than
  // it: the window's first `head` rows then its last `tail` rows of the prompt
  // ([window_head + window_tail, num_q_heads, head_dim]). Both 0: every row (query_rows).
  int64_t window_head = 0;
  int64_t window_tail = 0;
  // The outputs of the network the policy offered for this layer (RoutingSetup::offer_network),
  // computed by the engine on its device from the whole prompt's queries; null otherwise.
  const float* network_outputs = nullptr;
  int64_t num_network_outputs = 0;
};

// The prompt rows a policy reads: the first `head` and the last `tail` (both 0: all of them).
// From a GPU the engine copies only these.
struct QueryWindow {
  int64_t head = 0;
  int64_t tail = 0;
  bool all() const { return head == 0 && tail == 0; }
};

// Every request of one layer that needs a decision at this step (one call per layer).
struct RoutingBatch {
  uint32_t struct_size = sizeof(RoutingBatch);
  int layer = 0;
  int num_layers = 0;
  std::span<const RoutingInput> requests;
};

struct RoutingDecision {
  AttentionChoice choice = AttentionChoice::kFull;
  // Raw router outputs for the trace (empty for policies without logits).
  std::vector<float> logits;
};

class RoutingPolicy {
 public:
  virtual ~RoutingPolicy() = default;
  // Validates the policy against the model (layer counts, weight shapes) and loads what it
  // needs. Called once before any Decide.
  virtual absl::Status Prepare(const RoutingSetup& setup) = 0;
  // Whether Decide reads RoutingInput::queries (lets the engine skip copying them).
  virtual bool NeedsQueries() const { return false; }
  // Which rows of the queries Decide reads (when NeedsQueries()); default: every row.
  virtual QueryWindow QueriesRead() const { return {}; }
  virtual absl::StatusOr<RoutingDecision> Decide(const RoutingInput& input) = 0;
  // Decisions for every request of `batch`, in order. Default: Decide per request. Policies that
  // batch their work (a router MLP over all requests at once, on a device) override it.
  virtual absl::Status DecideBatch(const RoutingBatch& batch,
                                   std::vector<RoutingDecision>* decisions);
};

}  // namespace fluxattn
