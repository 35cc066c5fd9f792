// Routing policies written in Python: a RoutingPolicy that holds a Python object and calls its
// `prepare(model_info)` and `decide(batch)` with the GIL held, registered in a PluginRegistry
// under "python:<name>" so that a TOML [router] or [routers.<name>] table can name it.
#pragma once

#include <nanobind/nanobind.h>

#include <string>

#include "absl/status/status.h"
#include "fluxattn/config.h"
#include "fluxattn/plugin_registry.h"

namespace fluxattn::python {

inline constexpr char kPythonPluginPrefix[] = "python:";

// One request of a layer, as `decide` sees it.
struct PolicyRequest {
  uint64_t request_id = 0;
  uint64_t seed = 0;
  int64_t prompt_tokens = 0;
  int64_t query_rows = 0;
  nanobind::dict hints;
  nanobind::object queries;         // float32 [query_rows, num_q_heads, head_dim] or None
  nanobind::object pooled_queries;  // float32 [num_q_heads, head_dim] (mean over rows) or None
};

// The argument of `decide`: every request of one layer that needs a decision at this step.
struct PolicyBatch {
  int layer = 0;
  int num_layers = 0;
  nanobind::list requests;
};

// Sets the Python callable that turns "<name>" (of "python:<name>") into a class.
void SetPolicyResolver(nanobind::object resolver);

// Registers every "python:<name>" plugin that `config`'s [router] and [routers.*] name and
// `registry` does not know yet. Takes the GIL.
absl::Status RegisterPythonPolicies(const EngineConfig& config, PluginRegistry& registry);

// Binds PolicyRequest and PolicyBatch.
void BindPolicyTypes(nanobind::module_& m);

// Times `iterations` DecideBatch calls of `policy_object` (an instance, not a class) over a
// synthetic batch; returns seconds per call. For measuring the per-call overhead.
double TimeDecideBatch(nanobind::object policy_object, int requests, int64_t rows, int heads,
                       int head_dim, int iterations);

}  // namespace fluxattn::python
