#include "streaming_backend.h"

namespace fluxattn::plugins {

std::vector<ParamSpec> StreamingBackend::Params() { return StreamingParamSpecs(""); }

absl::StatusOr<std::unique_ptr<StreamingBackend>> StreamingBackend::Create(
    const ParamValues& params) {
  absl::StatusOr<StreamingRule> rule = StreamingRuleFromParams(params, "");
  if (!rule.ok()) return rule.status();
  return std::make_unique<StreamingBackend>(*rule);
}

AttentionCapabilities StreamingBackend::capabilities() const { return ShapeLayoutCapabilities(); }

KvRetention StreamingBackend::RetainedKv(int64_t next_query_pos) const {
  return rule_.Retention(next_query_pos);
}

absl::Status StreamingBackend::BuildLayout(const AttentionProblem& problem,
                                           BlockSparseLayout* layout) {
  *layout = BuildStreamingLayout(rule_, problem.q_pos0, problem.num_queries, problem.kv.length);
  return absl::OkStatus();
}

}  // namespace fluxattn::plugins
