// The example plugins do what their documentation says: the dilated window's layout equals a
// brute-force evaluation of its rule and its retention keeps every key a later query reads; the
// hint router follows hints, falls back to its ratio and refuses malformed hints. Both are
// loaded from their plugin files through the registry, as the engine loads them.
#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "fluxattn/attention/layout_builder.h"
#include "fluxattn/config.h"
#include "fluxattn/plugin_registry.h"
#include "fluxattn/testing/reference_attention.h"
#include "gtest/gtest.h"

namespace fluxattn {
namespace {

class ExamplesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : {"dilated_window", "hint"}) {
      const std::string path = absl::StrCat(FLUXATTN_SDK_PLUGIN_DIR, "/libfluxattn_", name, ".so");
      absl::StatusOr<const PluginInfo*> info = registry_.LoadFile(path);
      ASSERT_TRUE(info.ok()) << info.status();
    }
  }

  // Parameters as a config would give them, validated against the plugin's specs.
  absl::StatusOr<ParamValues> Params(const std::string& plugin,
                                     const std::map<std::string, ParamValue>& values) {
    PluginInstanceConfig instance;
    instance.name = plugin;
    instance.plugin = plugin;
    instance.table = "backends.x";
    for (const auto& [key, value] : values) instance.raw_params[key] = RawParam{value, {}};
    absl::StatusOr<const PluginInfo*> info = registry_.Find(
        plugin, plugin == "hint" ? PluginKind::kRoutingPolicy : PluginKind::kAttentionBackend);
    if (!info.ok()) return info.status();
    absl::Status status = ValidatePluginParams((*info)->params, instance);
    if (!status.ok()) return status;
    return instance.params;
  }

  PluginRegistry registry_;
};

// The rule of examples/dilated_window_backend, stated independently.
bool DilatedReads(int64_t sink, int64_t window, int64_t span, int64_t stride, int64_t p,
                  int64_t j) {
  if (j > p) return false;
  const bool is_sink = j < sink;
  const bool in_window = j > p - window;
  const bool on_stride = j > p - span && j % stride == 0;
  return is_sink || in_window || on_stride;
}

TEST_F(ExamplesTest, DilatedWindowLayoutEqualsTheRule) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  std::mt19937_64 rng(seed);
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  for (int trial = 0; trial < 40; ++trial) {
    const int64_t sink = uniform(0, 70), window = uniform(1, 150);
    const int64_t span = window + uniform(0, 400), stride = uniform(1, 40);
    absl::StatusOr<ParamValues> params = Params("dilated_window", {{"sink_tokens", sink},
                                                                   {"window_tokens", window},
                                                                   {"span_tokens", span},
                                                                   {"stride", stride}});
    ASSERT_TRUE(params.ok()) << params.status();
    absl::StatusOr<PluginPtr<AttentionBackend>> backend =
        registry_.CreateBackend("dilated_window", *params);
    ASSERT_TRUE(backend.ok()) << backend.status();
    const int64_t len = uniform(1, 600);
    const int64_t q_pos0 = trial % 3 == 0 ? 0 : uniform(0, len - 1);
    SCOPED_TRACE(absl::StrCat("sink ", sink, " window ", window, " span ", span, " stride ", stride,
                              " q_pos0 ", q_pos0, " len ", len));
    testing::RandomAttention in(2, 1, 16, q_pos0, len - q_pos0, len, 32, seed + trial);
    BlockSparseLayout layout;
    ASSERT_TRUE((*backend)->BuildLayout(in.problem, &layout).ok());
    ASSERT_TRUE(ValidateLayout(layout, 1).ok());
    const std::vector<uint8_t> mask = ExpandLayoutToDenseMask(layout, 0);
    int64_t mismatches = 0;
    for (int64_t r = 0; r < len - q_pos0; ++r) {
      for (int64_t j = 0; j < len; ++j) {
        mismatches +=
            (mask[r * len + j] != 0) != DilatedReads(sink, window, span, stride, q_pos0 + r, j);
      }
    }
    EXPECT_EQ(mismatches, 0);

    // Everything a query at or after `next` reads is kept.
    const int64_t next = uniform(0, 900);
    const KvRetention keep = (*backend)->RetainedKv(next);
    for (int64_t j = 0; j < next + 500; ++j) {
      bool read = false;
      for (int64_t p = std::max(next, j); p < next + 500 && !read; ++p) {
        read = DilatedReads(sink, window, span, stride, p, j);
      }
      const bool kept = keep.keeps_all() || j < keep.keep_prefix || j >= keep.keep_from;
      if (read) EXPECT_TRUE(kept) << "position " << j << " is read after " << next;
    }
  }
}

TEST_F(ExamplesTest, DilatedWindowRefusesASpanShorterThanItsWindow) {
  absl::StatusOr<ParamValues> params =
      Params("dilated_window", {{"window_tokens", int64_t{100}}, {"span_tokens", int64_t{50}}});
  ASSERT_TRUE(params.ok()) << params.status();
  absl::StatusOr<PluginPtr<AttentionBackend>> backend =
      registry_.CreateBackend("dilated_window", *params);
  ASSERT_FALSE(backend.ok());
  EXPECT_NE(backend.status().message().find("span_tokens: expected >= window_tokens (100), "
                                            "found 50"),
            std::string::npos)
      << backend.status();
  EXPECT_FALSE(Params("dilated_window", {{"stride", int64_t{0}}}).ok());
}

// FA layers for a request, asked the way the engine asks.
absl::StatusOr<std::vector<bool>> Decisions(RoutingPolicy& policy, int layers,
                                            const std::map<std::string, std::string>* hints) {
  std::vector<bool> full;
  for (int layer = 0; layer < layers; ++layer) {
    RoutingInput input;
    input.layer = layer;
    input.num_layers = layers;
    input.prompt_tokens = 10;
    input.hints = hints;
    absl::StatusOr<RoutingDecision> decision = policy.Decide(input);
    if (!decision.ok()) return decision.status();
    full.push_back(decision->choice == AttentionChoice::kFull);
  }
  return full;
}

int Count(const std::vector<bool>& v) {
  return static_cast<int>(std::count(v.begin(), v.end(), true));
}

TEST_F(ExamplesTest, HintRouterFollowsHintsAndFallsBackToItsRatio) {
  absl::StatusOr<ParamValues> params =
      Params("hint", {{"hint_key", std::string("mode")}, {"full_ratio", 0.25}});
  ASSERT_TRUE(params.ok()) << params.status();
  absl::StatusOr<PluginPtr<RoutingPolicy>> policy = registry_.CreatePolicy("hint", *params);
  ASSERT_TRUE(policy.ok()) << policy.status();
  for (int layers : {1, 4, 7, 28, 36}) {
    SCOPED_TRACE(absl::StrCat(layers, " layers"));
    ModelInfo model;
    model.num_layers = layers;
    RoutingSetup setup;
    setup.model = &model;
    ASSERT_TRUE((*policy)->Prepare(setup).ok());
    const std::map<std::string, std::string> full = {{"mode", "full"}},
                                             sparse = {{"mode", "sparse"}},
                                             half = {{"mode", "0.5"}}, other = {{"x", "full"}};
    EXPECT_EQ(Count(*Decisions(**policy, layers, &full)), layers);
    EXPECT_EQ(Count(*Decisions(**policy, layers, &sparse)), 0);
    EXPECT_EQ(Count(*Decisions(**policy, layers, &half)), layers / 2);
    EXPECT_EQ(Count(*Decisions(**policy, layers, nullptr)), layers / 4);
    EXPECT_EQ(Count(*Decisions(**policy, layers, &other)), layers / 4);
    // FA layers are spread: no two adjacent at ratio 0.5.
    std::vector<bool> spread = *Decisions(**policy, layers, &half);
    for (int i = 1; i < layers; ++i) EXPECT_FALSE(spread[i] && spread[i - 1]) << i;
  }
  const std::map<std::string, std::string> bad = {{"mode", "fast"}};
  absl::StatusOr<std::vector<bool>> refused = Decisions(**policy, 36, &bad);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("hint 'mode'"), std::string::npos);
  EXPECT_NE(refused.status().message().find("found \"fast\""), std::string::npos);
  EXPECT_FALSE(Params("hint", {{"full_ratio", 1.5}}).ok());
}

}  // namespace
}  // namespace fluxattn
