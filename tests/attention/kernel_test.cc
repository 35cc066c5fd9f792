// The core CPU block-sparse kernel against the double-precision oracle, over dense causal and
// random sparse layouts (shared and per KV head, with element masks), GQA ratios, head dims,
// unaligned query blocks, paged KV and released pages.
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "attention_test_util.h"
#include "fluxattn/attention/layout_builder.h"
#include "fluxattn/attention/parallel_for.h"
#include "fluxattn/attention_backend.h"

namespace fluxattn::testing {
namespace {

struct Shape {
  int hq, hkv, dim;
  int64_t q_pos0, num_queries, kv_length;
  int page_tokens;
};

std::string ShapeName(const ::testing::TestParamInfo<Shape>& info) {
  const Shape& s = info.param;
  return absl::StrCat("hq", s.hq, "_hkv", s.hkv, "_d", s.dim, "_pos", s.q_pos0, "_n", s.num_queries,
                      "_len", s.kv_length, "_page", s.page_tokens);
}

class KernelTest : public ::testing::TestWithParam<Shape> {};

// A random layout and, built alongside it by a different route, the set of pairs it allows.
struct RandomLayout {
  BlockSparseLayout layout;
  std::vector<std::vector<uint8_t>> truth;  // [layout head][r * kv_length + j]
};

RandomLayout MakeRandomLayout(const Shape& s, int q_block, int kv_block, int heads,
                              std::mt19937_64& rng) {
  LayoutBuilder builder(q_block, kv_block, s.q_pos0, s.num_queries, s.kv_length, heads);
  RandomLayout out;
  out.truth.assign(heads, std::vector<uint8_t>(s.num_queries * s.kv_length, 0));
  std::bernoulli_distribution take(0.6), masked(0.3), bit(0.7);
  const int64_t q_blocks = (s.num_queries + q_block - 1) / q_block;
  const int64_t kv_blocks = (s.kv_length + kv_block - 1) / kv_block;
  for (int64_t qb = 0; qb < q_blocks; ++qb) {
    for (int h = 0; h < heads; ++h) {
      builder.StartRow();
      const int64_t r0 = qb * q_block;
      const int64_t r1 = std::min<int64_t>(r0 + q_block, s.num_queries);
      for (int64_t b = 0; b < kv_blocks; ++b) {
        if (!take(rng)) continue;
        uint64_t* mask = masked(rng) ? builder.AddMaskedBlock(static_cast<int32_t>(b)) : nullptr;
        if (mask == nullptr) builder.AddBlock(static_cast<int32_t>(b));
        for (int64_t r = r0; r < r1; ++r) {
          for (int64_t j = b * kv_block; j < std::min<int64_t>((b + 1) * kv_block, s.kv_length);
               ++j) {
            bool allowed = true;
            if (mask != nullptr) {
              allowed = bit(rng);
              if (allowed) {
                LayoutBuilder::SetMaskBit(mask, kv_block, static_cast<int>(r - r0),
                                          static_cast<int>(j - b * kv_block));
              }
            }
            if (allowed && j <= s.q_pos0 + r) out.truth[h][r * s.kv_length + j] = 1;
          }
        }
      }
    }
  }
  out.layout = builder.Finish();
  return out;
}

void ExpectMatches(RandomAttention& in, const BlockSparseLayout& layout,
                   const std::vector<std::vector<uint8_t>>& truth, const std::string& what) {
  SCOPED_TRACE(what);
  const AttentionProblem& p = in.problem;
  std::vector<float> out(p.num_queries * p.num_q_heads * p.head_dim, -7.0f);
  ASSERT_TRUE(RunLayoutCpu(p, layout, out.data()).ok());
  const int group = p.num_q_heads / p.num_kv_heads;
  const int64_t len = p.kv.length;
  std::vector<double> want = ReferenceAttention(in, [&](int64_t r, int h, int64_t j) {
    const int lh = truth.size() == 1 ? 0 : h / group;
    return truth[lh][r * len + j] != 0;
  });
  EXPECT_LT(RelativeError(out, want), 1e-5);
}

TEST_P(KernelTest, DenseCausalMatchesReference) {
  const Shape s = GetParam();
  RandomAttention in(s.hq, s.hkv, s.dim, s.q_pos0, s.num_queries, s.kv_length, s.page_tokens,
                     /*seed=*/FreshSeed());
  std::vector<uint8_t> causal(s.num_queries * s.kv_length, 0);
  for (int64_t r = 0; r < s.num_queries; ++r) {
    for (int64_t j = 0; j <= s.q_pos0 + r && j < s.kv_length; ++j) causal[r * s.kv_length + j] = 1;
  }
  for (auto [qb, kb] : {std::pair{64, 64}, {16, 32}, {128, 128}, {7, 5}, {1, 256}}) {
    BlockSparseLayout layout = DenseCausalLayout(s.q_pos0, s.num_queries, s.kv_length, qb, kb);
    EXPECT_EQ(ExpandLayoutToDenseMask(layout, 0), causal);
    ExpectMatches(in, layout, {causal}, absl::StrCat("dense causal ", qb, "x", kb));
  }
}

TEST_P(KernelTest, RandomSparseLayoutsMatchReference) {
  const Shape s = GetParam();
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  RandomAttention in(s.hq, s.hkv, s.dim, s.q_pos0, s.num_queries, s.kv_length, s.page_tokens, seed);
  std::mt19937_64 rng(seed + 1);
  for (auto [qb, kb] : {std::pair{64, 64}, {32, 16}, {3, 11}}) {
    for (int heads : {1, s.hkv}) {
      RandomLayout random = MakeRandomLayout(s, qb, kb, heads, rng);
      ASSERT_TRUE(ValidateLayout(random.layout, s.hkv).ok());
      for (int h = 0; h < heads; ++h) {
        EXPECT_EQ(ExpandLayoutToDenseMask(random.layout, h), random.truth[h]);
        int64_t pairs = 0;
        for (uint8_t t : random.truth[h]) pairs += t;
        EXPECT_EQ(CountAttendedPairs(random.layout, h), pairs);
      }
      ExpectMatches(in, random.layout, random.truth,
                    absl::StrCat("random ", qb, "x", kb, " heads ", heads));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, KernelTest,
    ::testing::Values(Shape{1, 1, 64, 0, 1, 1, 16}, Shape{2, 1, 64, 0, 37, 37, 16},
                      Shape{4, 2, 128, 0, 130, 130, 48}, Shape{8, 2, 80, 0, 200, 200, 64},
                      Shape{8, 1, 96, 0, 150, 150, 100}, Shape{8, 8, 64, 0, 129, 129, 128},
                      Shape{4, 4, 128, 1000, 1, 1001, 256}, Shape{32, 4, 128, 2999, 1, 3000, 64},
                      Shape{4, 2, 64, 2500, 41, 2541, 33}, Shape{2, 1, 17, 5, 50, 60, 7}),
    ShapeName);

// The decode of one query (the last position) on the decode path: one unit over every KV head
// where the layout row is shared, one per KV head where each head has its own row. Shapes with
// head dims off the 16-lane width (17, 40, 80), group sizes 1 to 16 and more query heads than
// one narrow unit takes (72, the tile path), dense and random sparse layouts with element
// masks, short and split KV ranges.
TEST(KernelDecode, OneQueryOnTheDecodePathMatchesReference) {
  const Shape shapes[] = {{1, 1, 64, 0, 1, 1, 16},     {2, 1, 17, 0, 1, 60, 7},
                          {8, 2, 80, 0, 1, 700, 64},   {16, 1, 40, 0, 1, 301, 16},
                          {8, 8, 128, 0, 1, 129, 256}, {32, 8, 128, 0, 1, 2100, 64},
                          {72, 8, 32, 0, 1, 500, 32},  {4, 2, 96, 0, 1, 1000, 100}};
  for (Shape s : shapes) {
    s.q_pos0 = s.kv_length - 1;
    const uint64_t seed = FreshSeed();
    SCOPED_TRACE(absl::StrCat("hq ", s.hq, " hkv ", s.hkv, " d ", s.dim, " len ", s.kv_length,
                              " seed ", seed));
    RandomAttention in(s.hq, s.hkv, s.dim, s.q_pos0, 1, s.kv_length, s.page_tokens, seed);
    in.problem.phase = AttentionPhase::kDecode;
    std::vector<uint8_t> causal(s.kv_length, 1);
    for (int kb : {64, 16, 5, 256}) {
      ExpectMatches(in, DenseCausalLayout(s.q_pos0, 1, s.kv_length, 64, kb), {causal},
                    absl::StrCat("dense causal, kv blocks of ", kb));
    }
    std::mt19937_64 rng(seed + 1);
    for (int kb : {32, 11}) {
      for (int heads : {1, s.hkv}) {
        RandomLayout random = MakeRandomLayout(s, 16, kb, heads, rng);
        ExpectMatches(in, random.layout, random.truth,
                      absl::StrCat("random, kv blocks of ", kb, ", layout heads ", heads));
      }
    }
  }
}

TEST(KernelThreads, SameResultWithOneThreadAndMany) {
  RandomAttention in(8, 2, 64, 0, 300, 300, 64, 7);
  BlockSparseLayout layout = DenseCausalLayout(0, 300, 300);
  std::vector<float> a(300 * 8 * 64), b(300 * 8 * 64);
  SetCpuAttentionThreads(1);
  ASSERT_TRUE(RunLayoutCpu(in.problem, layout, a.data()).ok());
  SetCpuAttentionThreads(4);
  ASSERT_TRUE(RunLayoutCpu(in.problem, layout, b.data()).ok());
  SetCpuAttentionThreads(0);
  EXPECT_EQ(a, b);
}

// Decode rows long enough to be split into several KV ranges (and merged): the split points
// depend on the layout only, so 1, 2, 3 and 8 threads give the same bits.
TEST(KernelThreads, SplitDecodeIsIndependentOfTheThreadCount) {
  const int64_t len = 3000;  // 47 blocks of 64: 6 ranges of at most 8 blocks
  RandomAttention in(8, 2, 64, len - 1, 1, len, 64, FreshSeed());
  in.problem.phase = AttentionPhase::kDecode;
  BlockSparseLayout layout = DenseCausalLayout(len - 1, 1, len);
  ASSERT_GT(layout.row_begin[1] - layout.row_begin[0], 16);
  std::vector<std::vector<float>> outs;
  for (int threads : {1, 2, 3, 8}) {
    SetCpuAttentionThreads(threads);
    outs.emplace_back(8 * 64);
    ASSERT_TRUE(RunLayoutCpu(in.problem, layout, outs.back().data()).ok());
  }
  SetCpuAttentionThreads(0);
  for (size_t i = 1; i < outs.size(); ++i) EXPECT_EQ(outs[0], outs[i]) << i;
  std::vector<double> want =
      ReferenceAttention(in, [&](int64_t r, int, int64_t j) { return j <= in.problem.q_pos0 + r; });
  EXPECT_LT(RelativeError(outs[0], want), 1e-5);
}

// Misusing LayoutBuilder is an error from Build(), naming what was wrong, not a crash.
// Bits of fresh random words (sparse, dense and empty ones, the top bit included) come out as
// their indices, ascending, after what *out held.
TEST(LayoutBuilder, AppendSetBitsListsEverySetBitInOrder) {
  std::mt19937_64 rng(FreshSeed());
  for (int64_t num_words : {int64_t{0}, int64_t{1}, int64_t{3}, int64_t{37}}) {
    std::vector<uint32_t> words(num_words);
    for (size_t w = 0; w < words.size(); ++w) {
      const uint32_t r = static_cast<uint32_t>(rng());
      words[w] = w % 4 == 0   ? r
                 : w % 4 == 1 ? (r & static_cast<uint32_t>(rng()))
                 : w % 4 == 2 ? 0u
                              : ~0u;
    }
    std::vector<int32_t> want = {-7};
    for (int64_t i = 0; i < 32 * num_words; ++i) {
      if (((words[i / 32] >> (i % 32)) & 1u) != 0) want.push_back(static_cast<int32_t>(i));
    }
    std::vector<int32_t> got = {-7};
    LayoutBuilder::AppendSetBits(words.data(), num_words, &got);
    EXPECT_EQ(got, want) << num_words << " words";
  }
}

TEST(LayoutBuilderErrors, MisuseIsReportedByBuild) {
  auto message = [](LayoutBuilder& b) {
    absl::StatusOr<BlockSparseLayout> l = b.Build();
    EXPECT_FALSE(l.ok());
    return l.ok() ? std::string() : std::string(l.status().message());
  };
  {
    LayoutBuilder b(0, 64, 0, 100, 100, 1);
    b.StartRow();
    b.AddBlock(0);
    EXPECT_NE(message(b).find("expected integers > 0, found 0 / 64 / 1"), std::string::npos);
  }
  {
    LayoutBuilder b(64, 64, 0, 64, 128, 1);
    b.StartRow();
    b.AddBlock(1);
    b.AddBlock(0);
    // The first error sticks; a masked block after it gets a writable scratch mask.
    uint64_t* mask = b.AddMaskedBlock(5);
    LayoutBuilder::SetMaskBit(mask, 64, 63, 63);
    EXPECT_NE(message(b).find("block 0 after block 1"), std::string::npos) << b.status();
  }
  {
    LayoutBuilder b(64, 64, 0, 100, 100, 1);  // two query blocks, one head: two rows
    b.StartRow();
    b.StartRow();
    b.StartRow();
    EXPECT_NE(message(b).find("expected at most 2"), std::string::npos) << b.status();
  }
  {
    LayoutBuilder b(64, 64, 0, 100, 100, 2);  // four rows
    b.StartRow();
    b.AddBlock(0);
    EXPECT_NE(message(b).find("expected 4 (query blocks x layout heads), found 1 rows started"),
              std::string::npos)
        << b.status();
  }
  {
    LayoutBuilder b(64, 64, 0, 64, 64, 1);
    b.AddBlock(0);
    EXPECT_NE(message(b).find("StartRow() before the first block"), std::string::npos);
  }
  {
    LayoutBuilder b(64, 64, 0, 100, 100, 1);
    b.StartRow();
    b.AddBlock(0);
    b.StartRow();
    b.AddBlock(0);
    b.AddBlock(1);
    absl::StatusOr<BlockSparseLayout> ok = b.Build();
    ASSERT_TRUE(ok.ok()) << ok.status();
    EXPECT_EQ(ok->row_begin, (std::vector<int64_t>{0, 1, 3}));
    EXPECT_TRUE(ValidateLayout(*ok).ok());
  }
}

TEST(KernelErrors, ReadingAReleasedPageIsAnError) {
  RandomAttention in(2, 1, 64, 0, 1, 1, 1, 3);
  RandomAttention big(2, 1, 64, 199, 1, 200, 16, 3);
  KvRetention retention;
  retention.keep_prefix = 16;
  retention.keep_from = 160;
  EXPECT_GT(big.kv.Release(retention), 0);
  big.problem.kv = big.kv.view();
  std::vector<float> out(2 * 64);
  absl::Status status = RunLayoutCpu(big.problem, DenseCausalLayout(199, 1, 200), out.data());
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  // Which released position is reported first depends on how the KV range is split across
  // threads; any position of the released range [16, 160) is right.
  const std::string message(status.message());
  const size_t at = message.find("position ");
  ASSERT_NE(at, std::string::npos) << message;
  const long reported = std::strtol(message.c_str() + at + 9, nullptr, 10);
  EXPECT_GE(reported, 16) << message;
  EXPECT_LT(reported, 160) << message;
  EXPECT_NE(message.find("released"), std::string::npos) << message;
  // The decode path reports it the same way.
  big.problem.phase = AttentionPhase::kDecode;
  status = RunLayoutCpu(big.problem, DenseCausalLayout(199, 1, 200), out.data());
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(status.message()).find("released"), std::string::npos) << status;
  big.problem.phase = AttentionPhase::kPrefill;
  // A layout that skips the released pages runs.
  LayoutBuilder builder(64, 16, 199, 1, 200, 1);
  builder.StartRow();
  builder.AddBlock(0);
  for (int b = 10; b < 13; ++b) builder.AddBlock(b);
  EXPECT_TRUE(RunLayoutCpu(big.problem, builder.Finish(), out.data()).ok());
}

TEST(KernelErrors, MismatchedShapesAreRejected) {
  RandomAttention in(4, 2, 64, 0, 10, 10, 16, 5);
  std::vector<float> out(10 * 4 * 64);
  BlockSparseLayout layout = DenseCausalLayout(0, 10, 10);
  AttentionProblem bad = in.problem;
  bad.num_kv_heads = 3;
  EXPECT_FALSE(RunLayoutCpu(bad, layout, out.data()).ok());
  bad = in.problem;
  bad.head_dim = 32;
  EXPECT_FALSE(RunLayoutCpu(bad, layout, out.data()).ok());
  EXPECT_FALSE(RunLayoutCpu(in.problem, DenseCausalLayout(1, 10, 11), out.data()).ok());
  BlockSparseLayout broken = layout;
  broken.kv_block.push_back(0);
  EXPECT_FALSE(RunLayoutCpu(in.problem, broken, out.data()).ok());
  broken = layout;
  broken.num_layout_heads = 3;
  EXPECT_FALSE(ValidateLayout(broken, 2).ok());
}

}  // namespace
}  // namespace fluxattn::testing
