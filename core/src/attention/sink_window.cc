#include "fluxattn/attention/sink_window.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "fluxattn/attention/layout_builder.h"
#include "fluxattn/attention/param_reader.h"
#include "fluxattn/status.h"

namespace fluxattn {

KvRetention StreamingRule::Retention(int64_t next_query_pos) const {
  KvRetention retention;
  retention.keep_prefix = sink_end();
  // window_start is non-decreasing in p, so later queries never reach further back.
  retention.keep_from = std::max(window_start(next_query_pos), retention.keep_prefix);
  if (retention.keep_from <= retention.keep_prefix) return KvRetention{};
  return retention;
}

std::vector<ParamSpec> StreamingParamSpecs(const std::string& prefix) {
  std::vector<ParamSpec> specs(3);
  specs[0].name = prefix + "sink_tokens";
  specs[0].type = ParamType::kInt;
  specs[0].description =
      "Attention sinks: keys in the first ceil(sink_tokens/block_size) blocks are always read.";
  specs[0].default_value = int64_t{128};
  specs[0].min_value = 0;
  specs[0].max_value = 1e9;
  specs[1].name = prefix + "window_tokens";
  specs[1].type = ParamType::kInt;
  specs[1].description =
      "Local window: a query in block b reads the ceil(window_tokens/block_size) blocks ending "
      "at b.";
  specs[1].default_value = int64_t{2048};
  specs[1].min_value = 1;
  specs[1].max_value = 1e9;
  specs[2].name = prefix + "block_size";
  specs[2].type = ParamType::kInt;
  specs[2].description = "Granularity of sinks and window in tokens (1 = token-level window).";
  specs[2].default_value = int64_t{128};
  specs[2].min_value = 1;
  specs[2].max_value = 65536;
  return specs;
}

absl::StatusOr<StreamingRule> StreamingRuleFromParams(const ParamValues& params,
                                                      const std::string& prefix) {
  StreamingRule rule;
  FLUXATTN_ASSIGN_OR_RETURN(rule.sink_tokens, ReadParam<int64_t>(params, prefix + "sink_tokens"));
  FLUXATTN_ASSIGN_OR_RETURN(rule.window_tokens,
                            ReadParam<int64_t>(params, prefix + "window_tokens"));
  FLUXATTN_ASSIGN_OR_RETURN(rule.block_size, ReadParam<int64_t>(params, prefix + "block_size"));
  if (rule.sink_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "sink_tokens: expected an integer >= 0, found ", rule.sink_tokens));
  }
  if (rule.window_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix, "window_tokens: expected an integer >= 1, found ", rule.window_tokens));
  }
  if (rule.block_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "block_size: expected an integer >= 1, found ", rule.block_size));
  }
  return rule;
}

BlockSparseLayout BuildSinkWindowLayout(int64_t q_pos0, int64_t num_queries, int64_t kv_length,
                                        int64_t sink_end,
                                        const std::function<int64_t(int64_t)>& window_start,
                                        int q_block_tokens, int kv_block_tokens) {
  LayoutBuilder builder(q_block_tokens, kv_block_tokens, q_pos0, num_queries, kv_length, 1);
  const int64_t q_blocks = (num_queries + q_block_tokens - 1) / q_block_tokens;
  const int64_t bk = kv_block_tokens;
  std::vector<int64_t> starts(q_block_tokens);
  for (int64_t qb = 0; qb < q_blocks; ++qb) {
    builder.StartRow();
    const int64_t r0 = qb * q_block_tokens;
    const int64_t rows = std::min<int64_t>(q_block_tokens, num_queries - r0);
    const int64_t p_first = q_pos0 + r0;
    // Causality and the KV length bound every key this block can read.
    const int64_t key_end = std::min(p_first + rows, kv_length);
    int64_t min_start = std::numeric_limits<int64_t>::max();
    int64_t max_start = 0;
    for (int64_t i = 0; i < rows; ++i) {
      starts[i] = std::max<int64_t>(0, window_start(p_first + i));
      min_start = std::min(min_start, starts[i]);
      max_start = std::max(max_start, starts[i]);
    }
    const int64_t sink_blocks_end = std::min((sink_end + bk - 1) / bk, (key_end + bk - 1) / bk);
    const int64_t window_first = min_start / bk;
    const int64_t last_block = (key_end + bk - 1) / bk;  // exclusive
    auto emit = [&](int64_t b) {
      const int64_t k0 = b * bk;
      const int64_t k1 = k0 + bk;
      if (k1 <= sink_end || k0 >= max_start) {
        builder.AddBlock(static_cast<int32_t>(b));  // every row reads all of it (causality aside)
        return;
      }
      if (k0 >= sink_end && k1 <= min_start) return;  // no row reads any of it
      uint64_t* mask = builder.AddMaskedBlock(static_cast<int32_t>(b));
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t j = k0; j < k1; ++j) {
          if (j < sink_end || j >= starts[i]) {
            LayoutBuilder::SetMaskBit(mask, kv_block_tokens, static_cast<int>(i),
                                      static_cast<int>(j - k0));
          }
        }
      }
    };
    for (int64_t b = 0; b < sink_blocks_end; ++b) emit(b);
    for (int64_t b = std::max(window_first, sink_blocks_end); b < last_block; ++b) emit(b);
  }
  return builder.Finish();
}

BlockSparseLayout BuildStreamingLayout(const StreamingRule& rule, int64_t q_pos0,
                                       int64_t num_queries, int64_t kv_length) {
  return BuildSinkWindowLayout(q_pos0, num_queries, kv_length, rule.sink_end(),
                               [&rule](int64_t p) { return rule.window_start(p); });
}

}  // namespace fluxattn
