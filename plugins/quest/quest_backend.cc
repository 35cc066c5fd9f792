#include "quest_backend.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "fluxattn/attention/layout_builder.h"
#include "fluxattn/attention/parallel_for.h"
#include "fluxattn/attention/param_reader.h"
#include "fluxattn/status.h"

namespace fluxattn::plugins {
absl::Status QuestState::Update(const KvView& kv) {
  if (kv.length < covered_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "quest: expected the KV to grow, found length ", kv.length, " after ", covered_));
  }
  const int64_t pages = (kv.length + page_size_ - 1) / page_size_;
  const size_t size = static_cast<size_t>(pages) * num_kv_heads_ * head_dim_;
  min_.resize(size, std::numeric_limits<float>::infinity());
  max_.resize(size, -std::numeric_limits<float>::infinity());
  for (int64_t pos = covered_; pos < kv.length; ++pos) {
    const int64_t page = pos / page_size_;
    for (int h = 0; h < num_kv_heads_; ++h) {
      const float* key = kv.key(pos, h);
      if (key == nullptr) {
        return absl::FailedPreconditionError(absl::StrCat("quest: expected KV position ", pos,
                                                          " to be resident, found it released"));
      }
      float* lo = &min_[(page * num_kv_heads_ + h) * head_dim_];
      float* hi = &max_[(page * num_kv_heads_ + h) * head_dim_];
      for (int d = 0; d < head_dim_; ++d) {
        lo[d] = std::min(lo[d], key[d]);
        hi[d] = std::max(hi[d], key[d]);
      }
    }
  }
  covered_ = kv.length;
  return absl::OkStatus();
}

std::vector<ParamSpec> QuestBackend::Params() {
  std::vector<ParamSpec> specs;
  specs.push_back(IntParamSpec("page_size", 16, 1, 4096, "Tokens per selection page."));
  specs.push_back(IntParamSpec("budget_tokens", 2048, 1, 1e9,
                               "Tokens read per decode step (rounded up to whole pages), sink and "
                               "recent pages included."));
  specs.push_back(IntParamSpec("sink_pages", 1, 0, 1 << 20, "First pages always read."));
  specs.push_back(IntParamSpec("recent_pages", 1, 1, 1 << 20,
                               "Last pages (the query's own included) always read."));
  return specs;
}

absl::StatusOr<std::unique_ptr<QuestBackend>> QuestBackend::Create(const ParamValues& params) {
  QuestConfig config;
  FLUXATTN_ASSIGN_OR_RETURN(int64_t page, ReadParam<int64_t>(params, "page_size"));
  FLUXATTN_ASSIGN_OR_RETURN(config.budget_tokens, ReadParam<int64_t>(params, "budget_tokens"));
  FLUXATTN_ASSIGN_OR_RETURN(int64_t sinks, ReadParam<int64_t>(params, "sink_pages"));
  FLUXATTN_ASSIGN_OR_RETURN(int64_t recent, ReadParam<int64_t>(params, "recent_pages"));
  if (page < 1 || page > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: expected an integer in [1, 4096], found ", page));
  }
  if (sinks < 0 || sinks > (1 << 20) || recent < 1 || recent > (1 << 20)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sink_pages/recent_pages: expected >= 0 and >= 1, found ", sinks, " and ", recent));
  }
  config.page_size = static_cast<int>(page);
  config.sink_pages = static_cast<int>(sinks);
  config.recent_pages = static_cast<int>(recent);
  if (config.budget_tokens < 1 || config.budget_pages() < sinks + recent) {
    return absl::InvalidArgumentError(
        absl::StrCat("budget_tokens: expected at least (sink_pages + recent_pages) * page_size = ",
                     (sinks + recent) * page, " tokens, found ", config.budget_tokens));
  }
  return std::make_unique<QuestBackend>(config);
}

AttentionCapabilities QuestBackend::capabilities() const {
  AttentionCapabilities caps;
  caps.data_dependent_layout = true;
  return caps;
}

std::unique_ptr<AttentionState> QuestBackend::CreateState(int /*num_q_heads*/, int num_kv_heads,
                                                          int head_dim) const {
  return std::make_unique<QuestState>(num_kv_heads, head_dim, config_.page_size);
}

absl::Status QuestBackend::BuildLayout(const AttentionProblem& problem, BlockSparseLayout* layout) {
  // Bounds come from the request's state when the engine keeps one, else from scratch.
  QuestState* state = dynamic_cast<QuestState*>(problem.state);
  std::unique_ptr<QuestState> scratch;
  if (state == nullptr || !state->Matches(problem.num_kv_heads, problem.head_dim)) {
    if (problem.phase == AttentionPhase::kDecode) {
      scratch =
          std::make_unique<QuestState>(problem.num_kv_heads, problem.head_dim, config_.page_size);
      state = scratch.get();
    }
  }
  if (state != nullptr) FLUXATTN_RETURN_IF_ERROR(state->Update(problem.kv));
  if (problem.phase == AttentionPhase::kDecode) return BuildDecodeLayout(problem, *state, layout);
  *layout = DenseCausalLayout(problem.q_pos0, problem.num_queries, problem.kv.length);
  return absl::OkStatus();
}

absl::Status QuestBackend::BuildDecodeLayout(const AttentionProblem& p, const QuestState& state,
                                             BlockSparseLayout* layout) const {
  const int page = config_.page_size;
  const int64_t len = p.kv.length;
  const int64_t pages = (len + page - 1) / page;
  const int heads = p.num_kv_heads;
  const int group = p.num_q_heads / p.num_kv_heads;
  const int d = p.head_dim;
  const int q_block = static_cast<int>(std::max<int64_t>(1, p.num_queries));
  if (pages <= config_.budget_pages() || p.num_queries == 0) {
    // Everything fits the budget: exactly what `full` does.
    *layout = DenseCausalLayout(p.q_pos0, p.num_queries, len);
    return absl::OkStatus();
  }
  std::vector<std::vector<int32_t>> selected(heads);
  ParallelFor(heads, [&](int64_t h) {
    std::vector<int32_t>& keep = selected[h];
    const int64_t sink_end = std::min<int64_t>(config_.sink_pages, pages);
    const int64_t recent_begin = std::max<int64_t>(sink_end, pages - config_.recent_pages);
    std::vector<std::pair<float, int32_t>> bounds;
    for (int64_t b = sink_end; b < recent_begin; ++b) {
      const float* lo = state.min_key(b, static_cast<int>(h));
      const float* hi = state.max_key(b, static_cast<int>(h));
      float best = -std::numeric_limits<float>::infinity();
      for (int64_t r = 0; r < p.num_queries; ++r) {
        for (int g = 0; g < group; ++g) {
          const float* q =
              p.host_q() + (r * p.num_q_heads + h * group + g) * static_cast<int64_t>(d);
          float bound = 0;
          for (int i = 0; i < d; ++i) bound += std::max(q[i] * lo[i], q[i] * hi[i]);
          best = std::max(best, bound);
        }
      }
      bounds.emplace_back(best, static_cast<int32_t>(b));
    }
    const int64_t free_pages = config_.budget_pages() - sink_end - (pages - recent_begin);
    const int64_t take = std::clamp<int64_t>(free_pages, 0, static_cast<int64_t>(bounds.size()));
    // Highest bounds first; ties broken by position so the choice is deterministic.
    std::partial_sort(bounds.begin(), bounds.begin() + take, bounds.end(),
                      [](const auto& x, const auto& y) {
                        return x.first > y.first || (x.first == y.first && x.second < y.second);
                      });
    for (int64_t b = 0; b < sink_end; ++b) keep.push_back(static_cast<int32_t>(b));
    for (int64_t i = 0; i < take; ++i) keep.push_back(bounds[i].second);
    for (int64_t b = recent_begin; b < pages; ++b) keep.push_back(static_cast<int32_t>(b));
    std::sort(keep.begin(), keep.end());
  });
  LayoutBuilder builder(q_block, page, p.q_pos0, p.num_queries, len, heads);
  for (int h = 0; h < heads; ++h) {
    builder.StartRow();
    for (int32_t b : selected[h]) builder.AddBlock(b);
  }
  FLUXATTN_ASSIGN_OR_RETURN(*layout, builder.Build());
  return absl::OkStatus();
}

}  // namespace fluxattn::plugins
