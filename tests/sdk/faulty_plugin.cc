// Plugins that each break one conformance rule, so the tests can show that
// `fluxattn check-plugin` notices. The build compiles this file once per FAULT value:
//   1  a sink + window backend whose RetainedKv() forgets the sinks it still reads
//   2  a backend whose Forward() output is off by a little in one element
//   3  a routing policy whose decisions depend on how often it was asked
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "fluxattn/attention/sink_window.h"
#include "fluxattn/attention_backend.h"
#include "fluxattn/plugin_abi.h"
#include "fluxattn/routing_policy.h"

namespace faulty {

using fluxattn::ParamSpec;
using fluxattn::ParamValues;

class Backend : public fluxattn::AttentionBackend {
 public:
  static std::vector<ParamSpec> Params() { return {}; }
  static absl::StatusOr<std::unique_ptr<Backend>> Create(const ParamValues&) {
    return std::make_unique<Backend>();
  }
  fluxattn::KvRetention RetainedKv(int64_t next_query_pos) const override {
    fluxattn::KvRetention keep = rule_.Retention(next_query_pos);
    if (FAULT == 1) keep.keep_prefix = 0;  // the sinks are still read
    return keep;
  }

  absl::Status BuildLayout(const fluxattn::AttentionProblem& p,
                           fluxattn::BlockSparseLayout* layout) override {
    *layout = fluxattn::BuildStreamingLayout(rule_, p.q_pos0, p.num_queries, p.kv.length);
    return absl::OkStatus();
  }

  fluxattn::AttentionCapabilities capabilities() const override {
    fluxattn::AttentionCapabilities caps;
    caps.custom_run = FAULT == 2;
    return caps;
  }

  absl::Status Run(const fluxattn::AttentionBatch& batch, const fluxattn::PlannedLayout& plan,
                   fluxattn::AttentionWorkspace* workspace) override {
    absl::Status status = AttentionBackend::Run(batch, plan, workspace);
    if (FAULT == 2 && status.ok()) {
      float* out = batch.out.as<float>();
      for (const fluxattn::AttentionProblem& p : batch.seqs) {
        out[(p.q_row0 * p.num_q_heads * p.head_dim) +
            p.num_queries * p.num_q_heads * p.head_dim / 2] += 1e-3f;
      }
    }
    return status;
  }

 private:
  fluxattn::StreamingRule rule_{/*sink_tokens=*/16, /*window_tokens=*/32, /*block_size=*/16};
};

class Router : public fluxattn::RoutingPolicy {
 public:
  static std::vector<ParamSpec> Params() { return {}; }
  static absl::StatusOr<std::unique_ptr<Router>> Create(const ParamValues&) {
    return std::make_unique<Router>();
  }
  absl::Status Prepare(const fluxattn::RoutingSetup&) override { return absl::OkStatus(); }
  absl::StatusOr<fluxattn::RoutingDecision> Decide(const fluxattn::RoutingInput&) override {
    fluxattn::RoutingDecision decision;
    decision.choice =
        ++calls_ % 3 == 0 ? fluxattn::AttentionChoice::kFull : fluxattn::AttentionChoice::kSparse;
    return decision;
  }

 private:
  int calls_ = 0;
};

}  // namespace faulty

#if FAULT == 1
FLUXATTN_DEFINE_ATTENTION_PLUGIN(faulty::Backend, "sdk_forgets_sinks", "0.0.1",
                                 "Test plugin: releases sink KV it still reads")
#elif FAULT == 2
FLUXATTN_DEFINE_ATTENTION_PLUGIN(faulty::Backend, "sdk_wrong_output", "0.0.1",
                                 "Test plugin: one output element is off")
#else
FLUXATTN_DEFINE_ROUTING_PLUGIN(faulty::Router, "sdk_flaky_router", "0.0.1",
                               "Test plugin: decisions depend on the call count")
#endif
