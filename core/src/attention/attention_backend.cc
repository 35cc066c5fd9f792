// Default behaviour of AttentionBackend: keep all KV, no state, Plan = BuildLayout per sequence,
// Run = the core kernel of the batch's device.
#include "fluxattn/attention_backend.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "fluxattn/status.h"

namespace fluxattn {

const char* AttentionPhaseName(AttentionPhase phase) {
  return phase == AttentionPhase::kPrefill ? "prefill" : "decode";
}

absl::Status AttentionBackend::Supports(const ProblemDesc& problem) const {
  const AttentionCapabilities caps = capabilities();
  if (std::find(caps.devices.begin(), caps.devices.end(), problem.device) == caps.devices.end()) {
    return absl::UnimplementedError(
        absl::StrCat("it does not run on a ", DeviceTypeName(problem.device), " device"));
  }
  if (std::find(caps.dtypes.begin(), caps.dtypes.end(), problem.dtype) == caps.dtypes.end()) {
    return absl::UnimplementedError(absl::StrCat("it does not support ", DTypeName(problem.dtype)));
  }
  if (!caps.head_dims.empty() && std::find(caps.head_dims.begin(), caps.head_dims.end(),
                                           problem.head_dim) == caps.head_dims.end()) {
    return absl::UnimplementedError(
        absl::StrCat("it does not support head_dim ", problem.head_dim));
  }
  if (problem.phase == AttentionPhase::kPrefill && !caps.prefill) {
    return absl::UnimplementedError("it does not support prefill");
  }
  if (problem.phase == AttentionPhase::kDecode && !caps.decode) {
    return absl::UnimplementedError("it does not support decode");
  }
  return absl::OkStatus();
}

KvRetention AttentionBackend::RetainedKv(int64_t /*next_query_pos*/) const { return KvRetention{}; }

std::unique_ptr<AttentionState> AttentionBackend::CreateState(int /*num_q_heads*/,
                                                              int /*num_kv_heads*/,
                                                              int /*head_dim*/) const {
  return nullptr;
}

absl::Status AttentionBackend::Plan(const AttentionBatch& batch, PlannedLayout* plan) {
  plan->layouts.resize(batch.seqs.size());
  for (size_t i = 0; i < batch.seqs.size(); ++i) {
    FLUXATTN_RETURN_IF_ERROR(BuildLayout(batch.seqs[i], &plan->layouts[i]));
  }
  return absl::OkStatus();
}

absl::Status AttentionBackend::Run(const AttentionBatch& batch, const PlannedLayout& plan,
                                   AttentionWorkspace* workspace) {
  return RunBlockSparseAttention(batch, plan, workspace);
}

absl::Status RunBlockSparseAttention(const AttentionBatch& batch, const PlannedLayout& plan,
                                     AttentionWorkspace* workspace) {
  if (batch.device == DeviceType::kCpu) {
    return RunBlockSparseAttentionCpu(batch, plan, workspace);
  }
  return absl::UnimplementedError(absl::StrCat("attention: expected a block-sparse kernel for ",
                                               DeviceTypeName(batch.device),
                                               ", found only the cpu kernel in this build"));
}

namespace {

AttentionBatch SingleBatch(const AttentionProblem& seq, float* out) {
  AttentionBatch batch;
  batch.layer = seq.layer;
  batch.num_q_heads = seq.num_q_heads;
  batch.num_kv_heads = seq.num_kv_heads;
  batch.head_dim = seq.head_dim;
  batch.scale = seq.scale;
  batch.device = seq.device;
  batch.dtype = seq.dtype;
  batch.seqs = std::span<const AttentionProblem>(&seq, 1);
  batch.q = seq.q;
  if (!batch.q.defined()) {
    batch.q = TensorView::Contiguous(nullptr, DType::kF32, DeviceType::kCpu,
                                     {seq.num_queries, seq.num_q_heads, seq.head_dim});
  }
  batch.out = TensorView::Contiguous(out, DType::kF32, DeviceType::kCpu,
                                     {seq.num_queries, seq.num_q_heads, seq.head_dim});
  return batch;
}

}  // namespace

absl::Status RunLayoutCpu(const AttentionProblem& problem, const BlockSparseLayout& layout,
                          float* out) {
  AttentionProblem seq = problem;
  seq.q_row0 = 0;
  const AttentionBatch batch = SingleBatch(seq, out);
  PlannedLayout plan;
  plan.layouts.push_back(layout);
  AttentionWorkspace workspace;
  return RunBlockSparseAttentionCpu(batch, plan, &workspace);
}

absl::Status RunSingleProblem(AttentionBackend& backend, const AttentionProblem& problem,
                              float* out) {
  AttentionProblem seq = problem;
  seq.q_row0 = 0;
  const AttentionBatch batch = SingleBatch(seq, out);
  PlannedLayout plan;
  FLUXATTN_RETURN_IF_ERROR(backend.Plan(batch, &plan));
  AttentionWorkspace workspace;
  return backend.Run(batch, plan, &workspace);
}

}  // namespace fluxattn
