// The plugin conformance checks, as a library: `fluxattn check-plugin` runs them on a plugin
// file, and a plugin's own tests can call them on instances built in code. Every check compares
// with an independent oracle (reference_attention.h) on fresh random inputs; none needs a model.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fluxattn/attention_backend.h"
#include "fluxattn/params.h"
#include "fluxattn/routing_policy.h"

namespace fluxattn::testing {

enum class CheckOutcome : uint8_t { kPass, kFail, kSkip };

const char* CheckOutcomeName(CheckOutcome outcome);  // "PASS", "FAIL", "SKIP"

struct CheckResult {
  std::string name;
  CheckOutcome outcome = CheckOutcome::kPass;
  std::string detail;  // what was covered, or the first failure (shape, seed, values)
};

// True when no result is kFail.
bool AllPassed(const std::vector<CheckResult>& results);

struct ConformanceOptions {
  uint64_t seed = 1;        // every random input derives from it, so a failure can be replayed
  double tolerance = 1e-5;  // max |got - want| / max |want| against the double oracle
  // Layer counts of the synthetic models routing policies are checked on.
  std::vector<int> routing_layers = {1, 6, 13};
};

// Makes a fresh, independent instance (with whatever parameters the caller chose).
using AttentionBackendMaker = std::function<absl::StatusOr<std::shared_ptr<AttentionBackend>>()>;
using RoutingPolicyMaker = std::function<absl::StatusOr<std::shared_ptr<RoutingPolicy>>()>;

// Names unique and non-empty, descriptions present, defaults of the declared type, within the
// declared range and among the declared choices.
std::vector<CheckResult> CheckParamSpecs(const std::vector<ParamSpec>& specs);

// On the CPU in float32, over GQA ratios, head dims and odd lengths with paged KV: layouts are
// valid; prefill, chunked prefill and decode match the oracle applied to the backend's own
// layout; decode equals the last prefill row when both read the same keys; decode after
// releasing what RetainedKv() says is unneeded never reads a released page; several requests
// with their own states interleave; results are deterministic.
std::vector<CheckResult> CheckAttentionBackend(const AttentionBackendMaker& make,
                                               const ConformanceOptions& options);

// On synthetic models without weights (a [routers.<name>] the policy delegates to is a stand-in
// that alternates full and sparse by layer): Prepare succeeds; Decide answers every layer with a
// valid decision for prompts of 1 and more tokens, with and without hints; the same inputs give the
// same decisions on the same and on a fresh instance.
std::vector<CheckResult> CheckRoutingPolicy(const RoutingPolicyMaker& make,
                                            const ConformanceOptions& options);

}  // namespace fluxattn::testing
