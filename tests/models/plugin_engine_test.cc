// The engine with the real attention plugins loaded through the registry: `full` reproduces the
// transformers fixtures, and `streaming` layers match the windowed double-precision oracle.
#include <gtest/gtest.h>

#include "fluxattn/config.h"
#include "fluxattn/engine.h"
#include "fluxattn/models/decoder_model.h"
#include "fluxattn/plugin_registry.h"
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

void RequirePlugin(const std::string& name) {
  if (!Registry().Find(name, PluginKind::kAttentionBackend).ok()) {
    GTEST_SKIP() << "plugin " << name << " is not built";
  }
}

TEST(PluginEngine, DefaultCompositionMatchesTransformers) {
  RequirePlugin("full");
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

// Layer 1 on `streaming` (token-level sinks + window) through an override; the oracle is the
// same composition with NaiveAttention(sink, window) in that layer.
TEST(PluginEngine, StreamingLayersMatchWindowedOracle) {
  RequirePlugin("full");
  RequirePlugin("streaming");
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
  EXPECT_LT(long_trace.kv_bytes, long_trace.kv_bytes_written);
}

}  // namespace
}  // namespace fluxattn
