// Strategy-specific properties of xattention, quest and triangle, each against an independent
// evaluation (brute-force rules, naive double-precision scores).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "../../plugins/xattention/xattention_backend.h"
#include "absl/strings/str_cat.h"
#include "attention_test_util.h"
#include "backend_factory.h"
#include "fluxattn/attention/layout_builder.h"
#include "fluxattn/attention/sink_window.h"

namespace fluxattn::testing {
namespace {

BackendPtr Make(const std::string& plugin, const std::map<std::string, ParamValue>& params) {
  auto made = MakeBackend(plugin, params);
  EXPECT_TRUE(made.ok()) << made.status();
  return made.ok() ? std::move(*made) : nullptr;
}

// The KV blocks of each layout row.
std::vector<std::set<int32_t>> Rows(const BlockSparseLayout& layout) {
  std::vector<std::set<int32_t>> rows(layout.num_rows());
  for (int64_t r = 0; r < layout.num_rows(); ++r) {
    for (int64_t e = layout.row_begin[r]; e < layout.row_begin[r + 1]; ++e) {
      rows[r].insert(layout.kv_block[e]);
    }
  }
  return rows;
}

// ---- xattention ----

TEST(XAttention, ThresholdOneKeepsEveryCausalBlock) {
  auto backend =
      Make("xattention", {{"block_size", int64_t{32}}, {"stride", int64_t{8}}, {"threshold", 1.0}});
  for (int64_t len : {1, 31, 32, 100, 333}) {
    RandomAttention in(4, 2, 64, 0, len, len, 16, FreshSeed());
    BlockSparseLayout layout;
    ASSERT_TRUE(backend->BuildLayout(in.problem, &layout).ok());
    for (int h = 0; h < 2; ++h) {
      EXPECT_EQ(ExpandLayoutToDenseMask(layout, h),
                ExpandLayoutToDenseMask(DenseCausalLayout(0, len, len), 0))
          << "length " << len << " head " << h;
    }
  }
}

TEST(XAttention, KeepsSinkAndDiagonalAndGrowsWithThreshold) {
  const uint64_t seed = FreshSeed();
  RandomAttention in(4, 2, 32, 0, 400, 400, 64, seed);
  std::vector<std::vector<std::set<int32_t>>> by_threshold;
  for (double tau : {0.0, 0.3, 0.7, 0.95}) {
    auto backend = Make("xattention", {{"block_size", int64_t{16}},
                                       {"stride", int64_t{4}},
                                       {"threshold", tau},
                                       {"sink_blocks", int64_t{2}}});
    BlockSparseLayout layout;
    ASSERT_TRUE(backend->BuildLayout(in.problem, &layout).ok());
    ASSERT_EQ(layout.num_layout_heads, 2);
    by_threshold.push_back(Rows(layout));
    for (int64_t qb = 0; qb < layout.num_q_blocks(); ++qb) {
      for (int h = 0; h < 2; ++h) {
        const auto& row = by_threshold.back()[qb * 2 + h];
        EXPECT_TRUE(row.count(static_cast<int32_t>(qb))) << "diagonal of " << qb;
        for (int32_t b = 0; b < std::min<int64_t>(2, qb + 1); ++b) EXPECT_TRUE(row.count(b));
        if (tau == 0.0) EXPECT_EQ(row.size(), std::min<size_t>(qb + 1, 3));
      }
    }
  }
  for (size_t t = 1; t < by_threshold.size(); ++t) {
    for (size_t r = 0; r < by_threshold[t].size(); ++r) {
      EXPECT_TRUE(std::includes(by_threshold[t][r].begin(), by_threshold[t][r].end(),
                                by_threshold[t - 1][r].begin(), by_threshold[t - 1][r].end()))
          << "row " << r;
    }
  }
  // Something was actually skipped at 0.7 on a 25-block causal prompt.
  size_t kept = 0;
  for (const auto& row : by_threshold[2]) kept += row.size();
  EXPECT_LT(kept, 2u * (25 * 26 / 2));
}

// Block scores against a direct double-precision evaluation of the antidiagonal definition.
TEST(XAttention, BlockScoresMatchNaiveAntidiagonalScores) {
  const int bsz = 16, s = 4, hq = 4, hkv = 2, d = 32;
  const int64_t q_pos0 = 5, nq = 70, len = 75;
  RandomAttention in(hq, hkv, d, q_pos0, nq, len, 16, FreshSeed());
  auto made = plugins::XAttentionBackend::Create(*ParamsWithDefaults(
      plugins::XAttentionBackend::Params(),
      {{"block_size", int64_t{bsz}}, {"stride", int64_t{s}}, {"threshold", 0.5}}));
  ASSERT_TRUE(made.ok());
  const int group = hq / hkv;
  for (int h = 0; h < hkv; ++h) {
    auto scores = (*made)->ScoreBlocks(in.problem, h);
    ASSERT_TRUE(scores.ok());
    const int64_t q_blocks = (nq + bsz - 1) / bsz;
    for (int64_t qb = 0; qb < q_blocks; ++qb) {
      std::vector<double> want((len + bsz - 1) / bsz, 0.0);
      const int64_t r0 = qb * bsz, r1 = std::min<int64_t>(r0 + bsz, nq);
      for (int g = 0; g < group; ++g) {
        for (int64_t u0 = r0; u0 < r1; u0 += s) {
          const int64_t last = q_pos0 + std::min<int64_t>(u0 + s, r1) - 1;
          std::vector<double> logit;
          for (int64_t v = 0; v * s <= last && v * s < len; ++v) {
            double sum = 0;
            for (int k = 0; k < s; ++k) {
              const int64_t r = u0 + s - 1 - k, j = v * s + k;
              if (r >= r1 || j >= len) continue;
              for (int i = 0; i < d; ++i) {
                sum += static_cast<double>(in.q[(r * hq + h * group + g) * d + i]) *
                       in.k[(j * hkv + h) * d + i];
              }
            }
            logit.push_back(sum * in.problem.scale / s);
          }
          const double mx = *std::max_element(logit.begin(), logit.end());
          double total = 0;
          for (double x : logit) total += std::exp(x - mx);
          for (size_t v = 0; v < logit.size(); ++v) {
            want[v * s / bsz] += std::exp(logit[v] - mx) / total;
          }
        }
      }
      for (size_t b = 0; b < want.size(); ++b) {
        EXPECT_NEAR((*scores)[qb][b], want[b], 1e-4) << "qb " << qb << " block " << b;
      }
    }
  }
}

// Decode is dense causal and all KV stays (a streaming decode is another instance's job).
TEST(XAttention, DecodeIsDenseAndKeepsAllKv) {
  auto xattention = Make("xattention", {{"block_size", int64_t{64}}, {"threshold", 0.5}});
  EXPECT_TRUE(xattention->RetainedKv(10000).keeps_all());
  RandomAttention in(2, 1, 16, 999, 1, 1000, 64, 1);
  in.problem.phase = AttentionPhase::kDecode;
  BlockSparseLayout layout;
  ASSERT_TRUE(xattention->BuildLayout(in.problem, &layout).ok());
  std::vector<uint8_t> mask = ExpandLayoutToDenseMask(layout, 0);
  for (int64_t j = 0; j < 1000; ++j) EXPECT_NE(mask[j], 0) << j;
}

TEST(XAttention, RejectsInconsistentParameters) {
  auto bad = MakeBackend("xattention", {{"block_size", int64_t{30}}, {"stride", int64_t{8}}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("stride"), std::string::npos) << bad.status();
  EXPECT_FALSE(MakeBackend("xattention", {{"threshold", 1.5}}).ok());
}

// The phase modes quest (`prefill`), xattention and triangle (`decode`) once had are unknown
// keys; the message names the key and says what serves a phase now.
TEST(PhaseModes, OldKeysAreRefusedNamingKeyAndDelegation) {
  struct OldKey {
    std::string plugin, key;
    ParamValue value;
    std::string use;
  };
  const std::vector<OldKey> cases = {
      {"xattention", "decode", std::string("streaming"), "decode_with"},
      {"xattention", "decode", std::string("full"), "decode_with"},
      {"xattention", "decode_window_tokens", int64_t{256}, "decode_with"},
      {"xattention", "decode_sink_tokens", int64_t{64}, "decode_with"},
      {"xattention", "decode_block_size", int64_t{64}, "decode_with"},
      {"triangle", "decode", std::string("streaming"), "decode_with"},
      {"quest", "prefill", std::string("streaming"), "prefill_with"},
      {"quest", "prefill_window_tokens", int64_t{64}, "prefill_with"},
  };
  for (const OldKey& c : cases) {
    SCOPED_TRACE(absl::StrCat(c.plugin, ".", c.key));
    absl::StatusOr<BackendPtr> made = MakeBackend(c.plugin, {{c.key, c.value}});
    ASSERT_FALSE(made.ok());
    const std::string message(made.status().message());
    EXPECT_EQ(message.rfind(absl::StrCat("test:1:1: key 'backends.", c.plugin, ".", c.key,
                                         "': expected a parameter of plugin '", c.plugin, "' ("),
                            0),
              0u)
        << message;
    EXPECT_NE(message.find(absl::StrCat("found unknown key '", c.key,
                                        "' (to have another backend "
                                        "serve the ",
                                        c.use.substr(0, c.use.find('_')), ", use ", c.use,
                                        " = \"<its [backends.<name>] name>\"")),
              std::string::npos)
        << message;
  }
  // Other unknown keys get no such hint.
  absl::StatusOr<BackendPtr> typo = MakeBackend("xattention", {{"strid", int64_t{8}}});
  ASSERT_FALSE(typo.ok());
  EXPECT_EQ(std::string(typo.status().message()).find("_with"), std::string::npos) << typo.status();
}

// ---- quest ----

TEST(Quest, BudgetCoveringTheContextEqualsFullExactly) {
  auto quest = Make("quest", {{"page_size", int64_t{16}}, {"budget_tokens", int64_t{4096}}});
  auto full = Make("full", {});
  for (int64_t len : {1, 17, 500, 4096}) {
    RandomAttention in(8, 2, 64, len - 1, 1, len, 32, FreshSeed());
    in.problem.phase = AttentionPhase::kDecode;
    auto state = quest->CreateState(8, 2, 64);
    in.problem.state = state.get();
    std::vector<float> a(8 * 64), b(8 * 64);
    ASSERT_TRUE(RunSingleProblem(*quest, in.problem, a.data()).ok());
    ASSERT_TRUE(RunSingleProblem(*full, in.problem, b.data()).ok());
    EXPECT_EQ(a, b) << "length " << len;
  }
}

// Selected pages against a brute-force ranking from the raw keys in double precision, with the
// bounds kept in the state across growing decode steps.
TEST(Quest, SelectsTopPagesByUpperBound) {
  const int hq = 4, hkv = 2, d = 16, page = 8;
  const int64_t budget = 64, total = 300;
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  RandomAttention all(hq, hkv, d, 0, total, total, 24, seed);
  auto backend = Make("quest", {{"page_size", int64_t{page}},
                                {"budget_tokens", int64_t{budget}},
                                {"sink_pages", int64_t{1}},
                                {"recent_pages", int64_t{2}}});
  auto state = backend->CreateState(hq, hkv, d);
  for (int64_t pos : {100, 101, 150, 299}) {
    AttentionProblem p = all.problem;
    p.phase = AttentionPhase::kDecode;
    p.q_pos0 = pos;
    p.num_queries = 1;
    p.q = testing::HostQueries(all.q.data() + pos * hq * d, 1, hq, d);
    p.kv.length = pos + 1;
    p.state = state.get();
    BlockSparseLayout layout;
    ASSERT_TRUE(backend->BuildLayout(p, &layout).ok());
    ASSERT_EQ(layout.num_layout_heads, hkv);
    ASSERT_EQ(layout.kv_block_tokens, page);
    const int64_t pages = (pos + 1 + page - 1) / page;
    for (int h = 0; h < hkv; ++h) {
      std::vector<std::pair<double, int>> bounds;
      for (int64_t b = 1; b < pages - 2; ++b) {
        double best = -INFINITY;
        for (int g = 0; g < hq / hkv; ++g) {
          const float* q = p.host_q() + (h * (hq / hkv) + g) * d;
          double bound = 0;
          for (int i = 0; i < d; ++i) {
            double lo = INFINITY, hi = -INFINITY;
            for (int64_t j = b * page; j < std::min<int64_t>((b + 1) * page, pos + 1); ++j) {
              lo = std::min<double>(lo, all.k[(j * hkv + h) * d + i]);
              hi = std::max<double>(hi, all.k[(j * hkv + h) * d + i]);
            }
            bound += std::max(q[i] * lo, q[i] * hi);
          }
          best = std::max(best, bound);
        }
        bounds.emplace_back(best, static_cast<int>(b));
      }
      std::sort(bounds.begin(), bounds.end(), [](auto x, auto y) { return x.first > y.first; });
      const size_t free_pages = budget / page - 3;
      std::set<int32_t> want = {0, static_cast<int32_t>(pages - 2),
                                static_cast<int32_t>(pages - 1)};
      for (size_t i = 0; i < free_pages; ++i) want.insert(bounds[i].second);
      EXPECT_EQ(Rows(layout)[h], want) << "position " << pos << " head " << h;
    }
  }
}

TEST(Quest, RejectsABudgetBelowTheFixedPages) {
  auto bad = MakeBackend("quest", {{"page_size", int64_t{16}},
                                   {"budget_tokens", int64_t{40}},
                                   {"sink_pages", int64_t{2}},
                                   {"recent_pages", int64_t{2}}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("budget_tokens"), std::string::npos) << bad.status();
}

// ---- triangle ----

TEST(Triangle, PrefillLayoutEqualsBruteForce) {
  std::mt19937_64 rng(FreshSeed());
  for (int trial = 0; trial < 12; ++trial) {
    StreamingRule rule{static_cast<int64_t>(rng() % 40), 1 + static_cast<int64_t>(rng() % 90),
                       std::vector<int64_t>{1, 8, 16, 64}[trial % 4]};
    const int64_t last_n = rng() % 150, len = 1 + rng() % 400;
    const int64_t q_pos0 = trial % 2 ? 0 : rng() % len;
    auto backend = Make("triangle", {{"sink_tokens", rule.sink_tokens},
                                     {"window_tokens", rule.window_tokens},
                                     {"block_size", rule.block_size},
                                     {"last_n", last_n}});
    RandomAttention in(2, 1, 8, q_pos0, len - q_pos0, len, 16, 1);
    BlockSparseLayout layout;
    ASSERT_TRUE(backend->BuildLayout(in.problem, &layout).ok());
    std::vector<uint8_t> mask = ExpandLayoutToDenseMask(layout, 0);
    for (int64_t r = 0; r < len - q_pos0; ++r) {
      const int64_t p = q_pos0 + r;
      for (int64_t j = 0; j < len; ++j) {
        const bool want = j <= p && (p >= len - last_n || rule.Allows(p, j));
        ASSERT_EQ(mask[r * len + j] != 0, want) << "trial " << trial << " p " << p << " j " << j;
      }
    }
    EXPECT_TRUE(backend->RetainedKv(len).keeps_all());
  }
}

}  // namespace
}  // namespace fluxattn::testing
