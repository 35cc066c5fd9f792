// Default behaviour of AttentionBackend: keep all KV, no state, Forward = layout + core kernel.
#include "fluxattn/attention_backend.h"

namespace fluxattn {

KvRetention AttentionBackend::RetainedKv(int64_t /*next_query_pos*/) const { return KvRetention{}; }

std::unique_ptr<AttentionState> AttentionBackend::CreateState(int /*num_q_heads*/,
                                                              int /*num_kv_heads*/,
                                                              int /*head_dim*/) const {
  return nullptr;
}

absl::Status AttentionBackend::Forward(const AttentionProblem& problem, float* out) {
  BlockSparseLayout layout;
  absl::Status built = BuildLayout(problem, &layout);
  if (!built.ok()) return built;
  if (problem.device == DeviceType::kCpu) return RunBlockSparseAttentionCpu(problem, layout, out);
  return absl::UnimplementedError(
      "attention: expected a block-sparse kernel for the problem's device, found only the CPU "
      "kernel");
}

}  // namespace fluxattn
