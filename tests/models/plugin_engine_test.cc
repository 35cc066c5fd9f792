// The engine with the real attention plugins loaded through the registry: `full` reproduces the
// transformers fixtures, `streaming` layers match the windowed double-precision oracle, and a
// phase handed to another instance (prefill_with / decode_with) matches an oracle that switches
// rules by phase itself.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fluxattn/config.h"
#include "fluxattn/engine.h"
#include "fluxattn/models/decoder_model.h"
#include "fluxattn/plugin_registry.h"
#include "fluxattn/status.h"
#include "test_support.h"

namespace fluxattn {
namespace {

using testing::FixturePath;
using testing::ReadJson;

PluginRegistry& Registry() {
  static PluginRegistry* registry = [] {
    auto* r = new PluginRegistry();
    (void)r->ScanDirectory(FLUXATTN_PLUGIN_DIR);
    return r;
  }();
  return *registry;
}

bool Built(const std::string& name, PluginKind kind = PluginKind::kAttentionBackend) {
  return Registry().Find(name, kind).ok();
}

// A macro, so that the skip returns from the test body itself (GTEST_SKIP in a helper function
// only returns from the helper and the test would go on without the plugin).
#define REQUIRE_PLUGIN(...)                                                                \
  do {                                                                                     \
    if (!Built(__VA_ARGS__)) GTEST_SKIP() << "plugin " << #__VA_ARGS__ << " is not built"; \
  } while (0)

TEST(PluginEngine, DefaultCompositionMatchesTransformers) {
  REQUIRE_PLUGIN("full");
  const std::string dir = FixturePath("qwen2_f32");
  const auto ref = ReadJson(dir + "/reference.json");
  auto model = models::LoadLanguageModel(dir, {.threads = 2});
  ASSERT_TRUE(model.ok()) << model.status();
  EngineConfig config = DefaultEngineConfig((*model)->info());
  auto composition = Compose(config, Registry());
  ASSERT_TRUE(composition.ok()) << composition.status();
  auto engine = Engine::Create(std::move(*model), std::move(*composition));
  ASSERT_TRUE(engine.ok()) << engine.status();
  GenerationOptions options;
  options.max_new_tokens = 10;
  options.ignore_eos = true;
  options.record_logits = true;
  const auto prompts = ref["prompts"].get<std::vector<std::vector<int64_t>>>();
  auto result = (*engine)->Generate(prompts, options);
  ASSERT_TRUE(result.ok()) << result.status();
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(result->requests[i].tokens, ref["greedy"][i].get<std::vector<int64_t>>()) << i;
    EXPECT_LT(testing::RelativeError(result->requests[i].step_logits[0],
                                     ref["last_logits"][i].get<std::vector<double>>()),
              1e-4);
  }
}

// The fixtures with prompts of thousands of tokens (head dim 128, Qwen3 and Llama 3.1 with llama3
// RoPE scaling) through the full plugin's CPU kernel: last-position logits and greedy tokens of
// transformers.
TEST(PluginEngine, LongPromptFixturesMatchTransformers) {
  REQUIRE_PLUGIN("full");
  int checked = 0;
  for (const std::string& name : testing::FixtureNames()) {
    const std::string dir = FixturePath(name);
    const auto ref = ReadJson(dir + "/reference.json");
    const auto prompts = ref["prompts"].get<std::vector<std::vector<int64_t>>>();
    size_t longest = 0;
    for (const auto& p : prompts) longest = std::max(longest, p.size());
    if (longest <= 4096) continue;
    auto model = models::LoadLanguageModel(dir, {.threads = 2});
    ASSERT_TRUE(model.ok()) << model.status();
    EngineConfig config = DefaultEngineConfig((*model)->info());
    auto composition = Compose(config, Registry());
    ASSERT_TRUE(composition.ok()) << composition.status();
    auto engine = Engine::Create(std::move(*model), std::move(*composition));
    ASSERT_TRUE(engine.ok()) << engine.status();
    const auto greedy = ref["greedy"].get<std::vector<std::vector<int64_t>>>();
    GenerationOptions options;
    options.max_new_tokens = static_cast<int>(greedy[0].size());
    options.ignore_eos = true;
    options.record_logits = true;
    auto result = (*engine)->Generate(prompts, options);
    ASSERT_TRUE(result.ok()) << name << ": " << result.status();
    for (size_t i = 0; i < prompts.size(); ++i) {
      EXPECT_EQ(result->requests[i].tokens, greedy[i]) << name << " prompt " << i;
      EXPECT_LT(testing::RelativeError(result->requests[i].step_logits[0],
                                       ref["last_logits"][i].get<std::vector<double>>()),
                1e-4)
          << name << " prompt " << i;
    }
    ++checked;
  }
  EXPECT_GE(checked, 2);
}

// Layer 1 on `streaming` (token-level sinks + window) through an override; the oracle is the
// same composition with NaiveAttention(sink, window) in that layer.
TEST(PluginEngine, StreamingLayersMatchWindowedOracle) {
  REQUIRE_PLUGIN("full");
  REQUIRE_PLUGIN("streaming");
  const std::string dir = FixturePath("llama3_f32");
  const int64_t sink = 3, window = 5;
  EngineConfig config;
  config.backends["full"].name = "full";
  config.backends["full"].plugin = "full";
  config.backends["full"].table = "backends.full";
  auto& s = config.backends["sparse"];
  s.name = "sparse";
  s.plugin = "streaming";
  s.table = "backends.sparse";
  s.raw_params["sink_tokens"] = RawParam{ParamValue(sink), {}};
  s.raw_params["window_tokens"] = RawParam{ParamValue(window), {}};
  s.raw_params["block_size"] = RawParam{ParamValue(int64_t{1}), {}};
  config.router_full = "full";
  config.router_sparse = "sparse";
  config.layer_backends[1] = "sparse";
  auto composition = Compose(config, Registry());
  ASSERT_TRUE(composition.ok()) << composition.status();
  auto model = models::LoadLanguageModel(dir, {.threads = 2});
  ASSERT_TRUE(model.ok());
  EngineOptions engine_options;
  engine_options.kv_page_tokens = 4;
  auto engine = Engine::Create(std::move(*model), std::move(*composition), engine_options);
  ASSERT_TRUE(engine.ok()) << engine.status();

  Composition oracle;
  oracle.backends["full"] = testing::Own(new testing::NaiveAttention());
  oracle.backends["sparse"] = testing::Own(new testing::NaiveAttention(sink, window));
  oracle.full_backend = "full";
  oracle.sparse_backend = "sparse";
  oracle.layer_backends[1] = "sparse";
  auto oracle_model = models::LoadLanguageModel(dir, {.threads = 2});
  ASSERT_TRUE(oracle_model.ok());
  auto reference = Engine::Create(std::move(*oracle_model), std::move(oracle), engine_options);
  ASSERT_TRUE(reference.ok());

  const auto ref = ReadJson(dir + "/reference.json");
  std::vector<std::vector<int64_t>> prompts = {ref["prompts"][2].get<std::vector<int64_t>>(),
                                               ref["prompts"][0].get<std::vector<int64_t>>()};
  GenerationOptions options;
  options.max_new_tokens = 8;
  options.ignore_eos = true;
  options.record_logits = true;
  auto got = (*engine)->Generate(prompts, options);
  auto want = (*reference)->Generate(prompts, options);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(want.ok()) << want.status();
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(got->requests[i].tokens, want->requests[i].tokens);
    for (size_t step = 0; step < got->requests[i].step_logits.size(); ++step) {
      const auto& w = want->requests[i].step_logits[step];
      EXPECT_LT(testing::RelativeError(got->requests[i].step_logits[step],
                                       std::vector<double>(w.begin(), w.end())),
                1e-4)
          << "request " << i << " step " << step;
    }
    const RequestTrace& t = got->requests[i].trace;
    EXPECT_EQ(t.layers[1].backend, "sparse");
    EXPECT_EQ(t.layers[1].decided_by, "override");
    EXPECT_DOUBLE_EQ(t.sa_ratio, 1.0 / 2);
  }
  // The 23-token prompt plus 8 tokens: the streaming layer keeps sinks and window only.
  const RequestTrace& long_trace = got->requests[0].trace;
  EXPECT_LT(long_trace.layers[1].kv_bytes, long_trace.layers[0].kv_bytes);
  EXPECT_LT(long_trace.kv_bytes, long_trace.kv_bytes_full_cache);
}

// The double-precision oracle of one rule in prefill and another in decode, in one backend:
// independent of the engine's phase delegation. The decode rule decides which KV stays.
class PhaseOracle : public AttentionBackend {
 public:
  PhaseOracle(int64_t prefill_sink, int64_t prefill_window, int64_t decode_sink,
              int64_t decode_window)
      : prefill_(prefill_sink, prefill_window), decode_(decode_sink, decode_window) {}
  AttentionCapabilities capabilities() const override { return decode_.capabilities(); }
  KvRetention RetainedKv(int64_t next_query_pos) const override {
    return decode_.RetainedKv(next_query_pos);
  }
  absl::Status BuildLayout(const AttentionProblem&, BlockSparseLayout*) override {
    return absl::OkStatus();
  }
  absl::Status Run(const AttentionBatch& batch, const PlannedLayout&,
                   AttentionWorkspace*) override {
    for (const AttentionProblem& p : batch.seqs) {
      testing::NaiveAttention& rule = p.phase == AttentionPhase::kPrefill ? prefill_ : decode_;
      FLUXATTN_RETURN_IF_ERROR(
          rule.RunOne(p, batch.out.as<float>() + p.q_row0 * int64_t{p.num_q_heads} * p.head_dim));
    }
    return absl::OkStatus();
  }

 private:
  testing::NaiveAttention prefill_, decode_;
};

// Layer 1 on a sparse plugin whose own rule is dense here (xattention with threshold 1, quest
// with a budget covering the context), one phase of it served by `streaming` (token-level sinks
// + window): the tokens and every step's logits of the oracle with the window in that phase,
// the KV bytes it keeps, and far from the same plugins without the delegation.
TEST(PluginEngine, PhaseDelegationMatchesAPhaseSwitchingOracle) {
  REQUIRE_PLUGIN("full");
  REQUIRE_PLUGIN("streaming");
  REQUIRE_PLUGIN("xattention");
  REQUIRE_PLUGIN("quest");
  const std::string dir = FixturePath("llama3_f32");
  const int64_t sink = 3, window = 5;
  const auto ref = ReadJson(dir + "/reference.json");
  const std::vector<std::vector<int64_t>> prompts = {ref["prompts"][2].get<std::vector<int64_t>>(),
                                                     ref["prompts"][0].get<std::vector<int64_t>>()};
  GenerationOptions options;
  options.max_new_tokens = 8;
  options.ignore_eos = true;
  options.record_logits = true;
  EngineOptions engine_options;
  engine_options.kv_page_tokens = 4;
  auto run = [&](Composition composition) -> absl::StatusOr<BatchResult> {
    FLUXATTN_ASSIGN_OR_RETURN(std::unique_ptr<LanguageModel> model,
                              models::LoadLanguageModel(dir, {.threads = 2}));
    FLUXATTN_ASSIGN_OR_RETURN(
        std::unique_ptr<Engine> engine,
        Engine::Create(std::move(model), std::move(composition), engine_options));
    return engine->Generate(prompts, options);
  };
  auto instance = [](EngineConfig& config, const std::string& name, const std::string& plugin,
                     std::map<std::string, ParamValue> params) -> PluginInstanceConfig& {
    PluginInstanceConfig& b = config.backends[name];
    b.name = name;
    b.plugin = plugin;
    b.table = "backends." + name;
    for (auto& [key, value] : params) b.raw_params[key] = RawParam{value, {}};
    return b;
  };
  struct Case {
    std::string plugin;
    std::map<std::string, ParamValue> params;
    bool decode;  // decode_with, else prefill_with
  };
  const std::vector<Case> cases = {
      {"xattention",
       {{"block_size", int64_t{4}}, {"stride", int64_t{2}}, {"threshold", 1.0}},
       true},
      {"quest", {{"page_size", int64_t{4}}, {"budget_tokens", int64_t{4096}}}, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.plugin);
    auto config_for = [&](bool delegate) {
      EngineConfig config;
      instance(config, "full", "full", {});
      instance(config, "s", "streaming",
               {{"sink_tokens", sink}, {"window_tokens", window}, {"block_size", int64_t{1}}});
      PluginInstanceConfig& x = instance(config, "x", c.plugin, c.params);
      if (delegate) (c.decode ? x.decode_with : x.prefill_with) = "s";
      config.router_full = "full";
      config.router_sparse = "full";
      config.layer_backends[1] = "x";
      return config;
    };
    EngineConfig delegated = config_for(true);
    auto composition = Compose(delegated, Registry());
    ASSERT_TRUE(composition.ok()) << composition.status();
    absl::StatusOr<BatchResult> got = run(std::move(*composition));
    ASSERT_TRUE(got.ok()) << got.status();
    EngineConfig own = config_for(false);
    composition = Compose(own, Registry());
    ASSERT_TRUE(composition.ok()) << composition.status();
    absl::StatusOr<BatchResult> undelegated = run(std::move(*composition));
    ASSERT_TRUE(undelegated.ok()) << undelegated.status();

    Composition oracle;
    oracle.backends["full"] = testing::Own(new testing::NaiveAttention());
    oracle.backends["x"] = testing::Own(c.decode ? new PhaseOracle(0, 0, sink, window)
                                                 : new PhaseOracle(sink, window, 0, 0));
    oracle.full_backend = "full";
    oracle.sparse_backend = "full";
    oracle.layer_backends[1] = "x";
    absl::StatusOr<BatchResult> want = run(std::move(oracle));
    ASSERT_TRUE(want.ok()) << want.status();

    double farthest = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      const GenerationResult& g = got->requests[i];
      const GenerationResult& w = want->requests[i];
      EXPECT_EQ(g.tokens, w.tokens) << "request " << i;
      ASSERT_EQ(g.step_logits.size(), w.step_logits.size());
      for (size_t step = 0; step < g.step_logits.size(); ++step) {
        const auto& wl = w.step_logits[step];
        EXPECT_LT(
            testing::RelativeError(g.step_logits[step], std::vector<double>(wl.begin(), wl.end())),
            1e-4)
            << "request " << i << " step " << step;
        const auto& ul = undelegated->requests[i].step_logits[step];
        farthest = std::max(
            farthest,
            testing::RelativeError(g.step_logits[step], std::vector<double>(ul.begin(), ul.end())));
      }
      EXPECT_EQ(g.trace.layers[1].kv_bytes, w.trace.layers[1].kv_bytes) << "request " << i;
      EXPECT_EQ(g.trace.layers[1].backend, "x");
      EXPECT_EQ(c.decode ? g.trace.layers[1].decode_backend : g.trace.layers[1].prefill_backend,
                "s");
      EXPECT_EQ(c.decode ? g.trace.layers[1].prefill_backend : g.trace.layers[1].decode_backend,
                "x");
    }
    // The 23-token prompt reaches past sinks + window: the delegated phase changed the result ...
    EXPECT_GT(farthest, 1e-3);
    // ... and, for decode, what stays: sinks and window only.
    const RequestTrace& long_trace = got->requests[0].trace;
    if (c.decode) {
      EXPECT_LT(long_trace.layers[1].kv_bytes, long_trace.layers[0].kv_bytes);
    } else {
      EXPECT_EQ(long_trace.layers[1].kv_bytes, long_trace.layers[0].kv_bytes);
    }
  }
}

// A Flux checkpoint with no configuration: the `flux` router choosing between `full` and
// `streaming` (sink_size / local_window_size from config.json, 128-token blocks), against an
// independent float64 PyTorch forward recorded in tests/fixtures/router.
TEST(PluginEngine, FluxCheckpointDefaultCompositionMatchesPyTorch) {
  REQUIRE_PLUGIN("full");
  REQUIRE_PLUGIN("streaming");
  REQUIRE_PLUGIN("flux", PluginKind::kRoutingPolicy);
  const std::string root = FLUXATTN_ROUTER_FIXTURES;
  const auto expected = ReadJson(root + "/flux_tiny_expected.json");
  auto model = models::LoadLanguageModel(root + "/flux_tiny", {.threads = 2});
  ASSERT_TRUE(model.ok()) << model.status();
  EngineConfig config = DefaultEngineConfig((*model)->info());
  auto composition = Compose(config, Registry());
  ASSERT_TRUE(composition.ok()) << composition.status();
  auto engine = Engine::Create(std::move(*model), std::move(*composition));
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::vector<std::vector<int64_t>> prompts;
  for (const auto& p : expected["prompts"]) {
    prompts.push_back(p["prompt_ids"].get<std::vector<int64_t>>());
  }
  GenerationOptions options;
  options.max_new_tokens = static_cast<int>(expected["prompts"][0]["greedy_tokens"].size());
  options.ignore_eos = true;
  options.record_logits = true;
  auto result = (*engine)->Generate(prompts, options);  // the prompts as one batch
  ASSERT_TRUE(result.ok()) << result.status();
  bool any_sparse = false, any_full = false;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto& want = expected["prompts"][i];
    const GenerationResult& got = result->requests[i];
    ASSERT_EQ(got.trace.layers.size(), want["decisions"].size());
    for (size_t l = 0; l < got.trace.layers.size(); ++l) {
      const LayerRouting& L = got.trace.layers[l];
      const std::string choice = want["decisions"][l];
      EXPECT_EQ(AttentionChoiceName(L.choice), choice) << "prompt " << i << " layer " << l;
      EXPECT_EQ(L.backend, choice == "full" ? "full" : "sparse");
      any_sparse |= choice != "full";
      any_full |= choice == "full";
      const auto logits = want["router_logits"][l].get<std::vector<double>>();
      ASSERT_EQ(L.logits.size(), logits.size());
      EXPECT_LT(testing::RelativeError(L.logits, logits), 1e-5) << "prompt " << i << " layer " << l;
    }
    EXPECT_LT(
        testing::RelativeError(got.step_logits[0], want["last_logits"].get<std::vector<double>>()),
        1e-4)
        << "prompt " << i;
    EXPECT_EQ(got.tokens, want["greedy_tokens"].get<std::vector<int64_t>>()) << "prompt " << i;
    // Beyond sink + window (64 + 256, in 128-token blocks) streaming layers free KV pages.
    if (got.trace.sa_ratio > 0 && prompts[i].size() >= 400) {
      EXPECT_LT(got.trace.kv_bytes, got.trace.kv_bytes_full_cache) << "prompt " << i;
    }
  }
  EXPECT_TRUE(any_sparse && any_full);
}

}  // namespace
}  // namespace fluxattn
