// The interface every routing plugin implements: per request and per layer, at prefill, pick
// full attention (FA) or sparse attention (SA). The engine asks once per (request, layer) and
// keeps the answer for every decode step of that request.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fluxattn/model_info.h"

namespace fluxattn {

enum class AttentionChoice : uint8_t { kFull = 0, kSparse = 1 };

const char* AttentionChoiceName(AttentionChoice choice);  // "full" / "sparse"

class RoutingPolicy;

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
};

struct RoutingInput {
  uint64_t request_id = 0;
  int layer = 0;
  int num_layers = 0;
  int64_t prompt_tokens = 0;
  // Queries of the prompt after q_proj (and q_norm where the model has it), before RoPE:
  // [prompt_tokens, num_q_heads, head_dim], float32 on the CPU. Null when NeedsQueries() is
  // false.
  const float* queries = nullptr;
  int num_q_heads = 0;
  int head_dim = 0;
  // Free-form per-request hints (e.g. from the CLI or a request file).
  const std::map<std::string, std::string>* hints = nullptr;
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
  virtual absl::StatusOr<RoutingDecision> Decide(const RoutingInput& input) = 0;
};

}  // namespace fluxattn
