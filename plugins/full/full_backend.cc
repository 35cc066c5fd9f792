#include "full_backend.h"

#include "fluxattn/attention/layout_builder.h"

namespace fluxattn::plugins {

std::vector<ParamSpec> FullBackend::Params() { return {}; }

absl::StatusOr<std::unique_ptr<FullBackend>> FullBackend::Create(const ParamValues& /*params*/) {
  return std::make_unique<FullBackend>();
}

AttentionCapabilities FullBackend::capabilities() const { return ShapeLayoutCapabilities(); }

absl::Status FullBackend::BuildLayout(const AttentionProblem& problem, BlockSparseLayout* layout) {
  *layout = DenseCausalLayout(problem.q_pos0, problem.num_queries, problem.kv.length);
  return absl::OkStatus();
}

}  // namespace fluxattn::plugins
