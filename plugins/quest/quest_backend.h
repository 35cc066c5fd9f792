// `quest`: query-aware page selection for decode (Tang et al., 2024). Keys are grouped in pages
// of `page_size` positions; per page and KV head the element-wise minimum and maximum key are
// kept (in the request's AttentionState, extended as the KV grows). A query's largest possible
// logit on a page is bounded by sum_d max(q_d * min_d, q_d * max_d); each decode step reads the
// pages with the highest bounds within `budget_tokens`, always including `sink_pages` first and
// `recent_pages` last pages. With grouped-query attention a KV head's pages are ranked by the
// largest bound over its query heads. Prefill is dense; a config that wants another prefill hands
// it to another instance (`prefill_with`).
//
// On CUDA (bf16; page_size a multiple or a divisor of 64, the kernels' key tile: smaller pages
// become mask bits of their tile) the bounds are folded on the
// device from the KV pool (the keys of the positions before the step's queries, which are in the
// pool when the layout is planned; the newest page is always read anyway), the page bounds are
// computed there, and only those scores come to the host, which picks the pages by the same
// rule.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "fluxattn/attention_backend.h"
#include "fluxattn/params.h"

namespace fluxattn::plugins {

struct QuestConfig {
  int page_size = 16;
  int64_t budget_tokens = 2048;
  int sink_pages = 1;
  int recent_pages = 1;
  int64_t budget_pages() const { return (budget_tokens + page_size - 1) / page_size; }
};

// Per-page key bounds of one (request, layer), extended incrementally (on the host, or for CUDA
// problems on the device).
class QuestState : public AttentionState {
 public:
  QuestState(int num_kv_heads, int head_dim, int page_size);
  ~QuestState() override;
  // Folds positions [covered(), kv.length) into the bounds.
  absl::Status Update(const KvView& kv);
  int64_t covered() const { return covered_; }
  // Bounds of page `page`, head `h`: head_dim floats each.
  const float* min_key(int64_t page, int h) const {
    return &min_[(page * num_kv_heads_ + h) * head_dim_];
  }
  const float* max_key(int64_t page, int h) const {
    return &max_[(page * num_kv_heads_ + h) * head_dim_];
  }
  bool Matches(int num_kv_heads, int head_dim) const {
    return num_kv_heads == num_kv_heads_ && head_dim == head_dim_;
  }
  // CUDA problems: folds the pool's keys before the problem's first query into the device
  // bounds, scores every page of the problem's KV for each KV head and picks the pages by
  // `config`'s rule there; *keep gets the choice as bits ([num_kv_heads][ceil(pages / 32)]
  // words, bit p of page p; host).
  absl::Status DevicePages(const AttentionProblem& problem, const QuestConfig& config,
                           std::vector<uint32_t>* keep);

 private:
  struct Device;
  int num_kv_heads_, head_dim_, page_size_;
  int64_t covered_ = 0;
  std::vector<float> min_, max_;  // [page][head][dim]
  std::unique_ptr<Device> device_;
};

class QuestBackend : public AttentionBackend {
 public:
  static std::vector<ParamSpec> Params();
  static absl::StatusOr<std::unique_ptr<QuestBackend>> Create(const ParamValues& params);
  explicit QuestBackend(const QuestConfig& config) : config_(config) {}

  AttentionCapabilities capabilities() const override;
  // The CPU in f32; CUDA in bf16 with page_size a multiple of 64.
  absl::Status Supports(const ProblemDesc& problem) const override;
  std::unique_ptr<AttentionState> CreateState(int num_q_heads, int num_kv_heads,
                                              int head_dim) const override;
  absl::Status BuildLayout(const AttentionProblem& problem, BlockSparseLayout* layout) override;

 private:
  absl::Status BuildDecodeLayout(const AttentionProblem& problem, QuestState& state,
                                 BlockSparseLayout* layout) const;
  QuestConfig config_;
};

}  // namespace fluxattn::plugins
