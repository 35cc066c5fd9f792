// Sink + local window attention, the rule behind `streaming` (and the streaming part of
// `triangle`'s prefill).
//
// With block size B, a query at absolute position p reads key j iff j <= p and
//   j/B < ceil(sink_tokens/B)  or  p/B - j/B < ceil(window_tokens/B)      (integer division),
// in prefill and decode alike; B = 1 gives a token-level window. Equivalently j < sink_end() or
// j >= window_start(p).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fluxattn/block_sparse_layout.h"
#include "fluxattn/kv_cache.h"
#include "fluxattn/params.h"

namespace fluxattn {

struct StreamingRule {
  int64_t sink_tokens = 128;
  int64_t window_tokens = 2048;
  int64_t block_size = 128;

  int64_t sink_blocks() const { return (sink_tokens + block_size - 1) / block_size; }
  int64_t window_blocks() const { return (window_tokens + block_size - 1) / block_size; }
  // Keys below this position are sinks.
  int64_t sink_end() const { return sink_blocks() * block_size; }
  // First key of the local window of a query at `p` (may exceed p when the window is empty).
  int64_t window_start(int64_t p) const {
    const int64_t start = (p / block_size - window_blocks() + 1) * block_size;
    return start < 0 ? 0 : start;
  }
  // The rule itself, written exactly as stated above (tests compare builders against it).
  bool Allows(int64_t p, int64_t j) const {
    return j <= p &&
           (j / block_size < sink_blocks() || p / block_size - j / block_size < window_blocks());
  }
  // KV that queries at positions >= next_query_pos still read: the sinks and the window of
  // next_query_pos onwards.
  KvRetention Retention(int64_t next_query_pos) const;
};

// Parameter specs of a streaming rule, names prefixed by `prefix` ("" for the plain names;
// a plugin with more than one rule tells them apart by prefix).
std::vector<ParamSpec> StreamingParamSpecs(const std::string& prefix);
// Reads and cross-checks the rule from validated parameters declared by StreamingParamSpecs.
absl::StatusOr<StreamingRule> StreamingRuleFromParams(const ParamValues& params,
                                                      const std::string& prefix);

// Layout for queries whose readable keys are [0, sink_end) plus [window_start(p), p]. The
// window start must be given per absolute query position; it need not be monotonic (triangle
// makes the last queries dense by returning 0). Uses 64x64 tiles and element masks where a tile
// is only partly read.
BlockSparseLayout BuildSinkWindowLayout(int64_t q_pos0, int64_t num_queries, int64_t kv_length,
                                        int64_t sink_end,
                                        const std::function<int64_t(int64_t)>& window_start,
                                        int q_block_tokens = 64, int kv_block_tokens = 64);

// BuildSinkWindowLayout for a StreamingRule.
BlockSparseLayout BuildStreamingLayout(const StreamingRule& rule, int64_t q_pos0,
                                       int64_t num_queries, int64_t kv_length);

}  // namespace fluxattn
