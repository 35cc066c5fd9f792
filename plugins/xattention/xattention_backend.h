// `xattention`: XAttention block selection for prefill (Xu et al., 2025). Each (query block,
// KV block) pair is scored by the softmax mass of its strided antidiagonals: with stride S, the
// query at offset S-1-k of a group of S queries is paired with the key at offset k of a group
// of S keys, so every group pair contributes one S-term antidiagonal. Per query block and KV
// head, blocks are taken in decreasing score until their share of the row's mass reaches
// `threshold`; sink blocks and the diagonal block(s) are always kept. Decode is dense causal and
// all KV is kept; a config that wants another decode (the sink + window rule of the Flux
// checkpoints, say) hands it to another instance (`decode_with`). On CUDA the scores come from
// the device (fluxattn/kernels/cuda_xattention.h: strided operands, one GEMM per KV head and
// slab of query blocks, the soft-maxed block sums), and the blocks are picked there by the same
// rule (on the host from the scores when a row has more blocks than one CTA sorts).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fluxattn/attention_backend.h"
#include "fluxattn/params.h"

namespace fluxattn::plugins {

struct XAttentionConfig {
  int block_size = 128;
  int stride = 8;
  double threshold = 0.9;
  int sink_blocks = 1;
};

class XAttentionBackend : public AttentionBackend {
 public:
  static std::vector<ParamSpec> Params();
  static absl::StatusOr<std::unique_ptr<XAttentionBackend>> Create(const ParamValues& params);
  explicit XAttentionBackend(const XAttentionConfig& config);
  ~XAttentionBackend() override;

  AttentionCapabilities capabilities() const override;
  absl::Status Supports(const ProblemDesc& problem) const override;
  absl::Status BuildLayout(const AttentionProblem& problem, BlockSparseLayout* layout) override;

  // Block scores of one KV head for the prefill problem: [query block][KV block], each query
  // block's scores summing to the number of (query head, strided query row) pairs it holds.
  // Exposed for tests.
  absl::StatusOr<std::vector<std::vector<double>>> ScoreBlocks(const AttentionProblem& problem,
                                                               int kv_head) const;

 private:
  struct Cuda;  // the device scratch of CUDA problems, made on the first
  absl::Status BuildPrefillLayout(const AttentionProblem& problem, BlockSparseLayout* layout);
  // The block scores of every KV head of a CUDA problem, computed on its device, and where a
  // row fits the device's sort (kXAttentionSelectMaxBlocks) the blocks the rule keeps, picked
  // there too: keep[(h * q_blocks + qb) * words + b / 32] bit b % 32, scores left empty.
  // Otherwise keep is empty and scores[(h * q_blocks + qb) * kv_blocks + b] come back.
  absl::Status DeviceScores(const AttentionProblem& problem, std::vector<float>* scores,
                            std::vector<uint32_t>* keep);
  XAttentionConfig config_;
  std::unique_ptr<Cuda> cuda_;
};

}  // namespace fluxattn::plugins
