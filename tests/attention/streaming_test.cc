// Streaming attention: layouts against a brute-force evaluation of the rule, retention against
// what later queries read, and a window covering everything against `full`.
#include <gtest/gtest.h>

#include <random>

#include "absl/strings/str_cat.h"
#include "attention_test_util.h"
#include "backend_factory.h"
#include "fluxattn/attention/layout_builder.h"
#include "fluxattn/attention/sink_window.h"

namespace fluxattn::testing {
namespace {

// The rule exactly as DESIGN.md states it, with its own arithmetic.
bool RuleAllows(int64_t sink, int64_t window, int64_t b, int64_t p, int64_t j) {
  const int64_t sink_blocks = (sink + b - 1) / b;
  const int64_t window_blocks = (window + b - 1) / b;
  return j <= p && (j / b < sink_blocks || p / b - j / b < window_blocks);
}

TEST(StreamingLayout, EqualsBruteForceRule) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> len_dist(1, 700), small(0, 300);
  const int64_t block_sizes[] = {1, 2, 7, 16, 64, 100, 128, 256};
  for (int trial = 0; trial < 60; ++trial) {
    StreamingRule rule;
    rule.block_size = block_sizes[trial % 8];
    rule.sink_tokens = small(rng);
    rule.window_tokens = 1 + small(rng);
    const int64_t len = len_dist(rng);
    const int64_t q_pos0 =
        trial % 3 == 0 ? 0 : std::uniform_int_distribution<int64_t>(0, len - 1)(rng);
    const int64_t nq = len - q_pos0;
    SCOPED_TRACE(absl::StrCat("sink ", rule.sink_tokens, " window ", rule.window_tokens, " block ",
                              rule.block_size, " q_pos0 ", q_pos0, " len ", len));
    BlockSparseLayout layout = BuildStreamingLayout(rule, q_pos0, nq, len);
    ASSERT_TRUE(ValidateLayout(layout).ok());
    std::vector<uint8_t> mask = ExpandLayoutToDenseMask(layout, 0);
    int64_t mismatches = 0;
    for (int64_t r = 0; r < nq; ++r) {
      for (int64_t j = 0; j < len; ++j) {
        const bool want =
            RuleAllows(rule.sink_tokens, rule.window_tokens, rule.block_size, q_pos0 + r, j);
        EXPECT_EQ(want, rule.Allows(q_pos0 + r, j));
        mismatches += (mask[r * len + j] != 0) != want;
      }
    }
    ASSERT_EQ(mismatches, 0);
  }
}

TEST(StreamingRetention, KeepsEverythingLaterQueriesRead) {
  std::mt19937_64 rng(FreshSeed());
  std::uniform_int_distribution<int64_t> small(0, 300);
  for (int trial = 0; trial < 40; ++trial) {
    StreamingRule rule;
    rule.block_size = std::vector<int64_t>{1, 16, 128}[trial % 3];
    rule.sink_tokens = small(rng);
    rule.window_tokens = 1 + small(rng);
    const int64_t next = small(rng) * 3;
    const KvRetention keep = rule.Retention(next);
    auto kept = [&](int64_t j) {
      return keep.keeps_all() || j < keep.keep_prefix || j >= keep.keep_from;
    };
    for (int64_t j = 0; j < next + 400; ++j) {
      bool read = false;
      for (int64_t p = std::max(next, j); p < next + 400 && !read; ++p) read = rule.Allows(p, j);
      if (read) EXPECT_TRUE(kept(j)) << "position " << j << " is read but released";
      // Nothing is kept that no later query reads (apart from the sink prefix).
      if (!read && j < next && j >= keep.keep_prefix) EXPECT_FALSE(kept(j)) << j;
    }
  }
}

TEST(StreamingBackend, WindowCoveringEverythingEqualsFullExactly) {
  auto streaming = MakeBackend("streaming", {{"sink_tokens", int64_t{0}},
                                             {"window_tokens", int64_t{1 << 20}},
                                             {"block_size", int64_t{128}}});
  auto full = MakeBackend("full", {});
  ASSERT_TRUE(streaming.ok() && full.ok());
  for (int64_t len : {1, 100, 129, 777}) {
    RandomAttention in(8, 2, 64, 0, len, len, 48, FreshSeed());
    std::vector<float> a(len * 8 * 64), b(len * 8 * 64);
    ASSERT_TRUE(RunSingleProblem(**streaming, in.problem, a.data()).ok());
    ASSERT_TRUE(RunSingleProblem(**full, in.problem, b.data()).ok());
    EXPECT_EQ(a, b) << "length " << len;
  }
}

TEST(StreamingBackend, ReleasesKvOutsideSinkAndWindow) {
  auto backend = MakeBackend("streaming", {{"sink_tokens", int64_t{128}},
                                           {"window_tokens", int64_t{256}},
                                           {"block_size", int64_t{128}}});
  ASSERT_TRUE(backend.ok());
  const KvRetention keep = (*backend)->RetainedKv(1000);
  EXPECT_EQ(keep.keep_prefix, 128);
  EXPECT_EQ(keep.keep_from, 768);  // blocks 6 and 7 are the window of position 1000
  EXPECT_TRUE((*backend)->RetainedKv(300).keeps_all());
}

TEST(StreamingBackend, ParametersAreDeclaredAndChecked) {
  absl::StatusOr<std::vector<ParamSpec>> specs = BackendParams("streaming");
  ASSERT_TRUE(specs.ok()) << specs.status();
  for (const ParamSpec& spec : *specs) {
    EXPECT_TRUE(spec.default_value.has_value()) << spec.name;
    EXPECT_TRUE(spec.min_value.has_value()) << spec.name;
    EXPECT_FALSE(spec.description.empty()) << spec.name;
  }
  auto bad = MakeBackend("streaming", {{"block_size", int64_t{0}}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("block_size"), std::string::npos);
  EXPECT_FALSE(MakeBackend("streaming", {{"window_tokens", std::string("big")}}).ok());
}

}  // namespace
}  // namespace fluxattn::testing
