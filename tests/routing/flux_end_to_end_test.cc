// The whole path on a Flux checkpoint: the engine with its default configuration for Paw*
// checkpoints (the `flux` router choosing between `full` and `streaming` set from the
// checkpoint's sink_size / local_window_size, block 128) against an independent float64 PyTorch
// forward (tools/make_router_fixtures.py -> tests/fixtures/router/flux_tiny_expected.json).
// Required: identical decisions, router logits within 1e-5 relative, last-position logits within
// 1e-4, identical greedy tokens.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "fluxattn/config.h"
#include "fluxattn/engine.h"
#include "fluxattn/models/decoder_model.h"
#include "fluxattn/plugin_registry.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace fluxattn::routing {
namespace {

const std::string kFixtureDir = FLUXATTN_ROUTER_FIXTURE_DIR;

nlohmann::json Expected() {
  std::ifstream in(kFixtureDir + "/flux_tiny_expected.json");
  EXPECT_TRUE(in.good()) << "cannot open flux_tiny_expected.json in " << kFixtureDir;
  return in.good() ? nlohmann::json::parse(in) : nlohmann::json();
}

class FluxEndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    expected_ = Expected();
    ASSERT_TRUE(expected_.is_object());
    ASSERT_TRUE(registry_.ScanDirectory(FLUXATTN_PLUGIN_DIR).ok());
    for (const nlohmann::json& prompt : expected_.at("prompts")) {
      prompts_.push_back(prompt.at("prompt_ids").get<std::vector<int64_t>>());
    }
  }

  // An engine on the fixture checkpoint; `edit` may change the default configuration.
  std::unique_ptr<Engine> MakeEngine(const std::function<void(EngineConfig&)>& edit = {}) {
    absl::StatusOr<std::unique_ptr<LanguageModel>> model = models::LoadLanguageModel(
        kFixtureDir + "/" + expected_.at("checkpoint").get<std::string>(), {.threads = 2});
    EXPECT_TRUE(model.ok()) << model.status();
    if (!model.ok()) return nullptr;
    EngineConfig config = DefaultEngineConfig((*model)->info());
    if (edit) edit(config);
    absl::StatusOr<Composition> composition = Compose(config, registry_);
    EXPECT_TRUE(composition.ok()) << composition.status();
    if (!composition.ok()) return nullptr;
    absl::StatusOr<std::unique_ptr<Engine>> engine =
        Engine::Create(std::move(*model), std::move(*composition));
    EXPECT_TRUE(engine.ok()) << engine.status();
    return engine.ok() ? std::move(*engine) : nullptr;
  }

  GenerationOptions Options() const {
    GenerationOptions options;
    options.max_new_tokens =
        static_cast<int>(expected_.at("prompts")[0].at("greedy_tokens").size());
    options.ignore_eos = true;
    options.record_logits = true;
    return options;
  }

  static void ExpectLogitsNear(const std::vector<float>& got, const std::vector<double>& want,
                               double tolerance) {
    ASSERT_EQ(got.size(), want.size());
    double worst = 0.0;
    for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]));
    EXPECT_LE(worst, tolerance);
    ::testing::Test::RecordProperty("max_abs_logit_error", absl::StrCat(worst));
  }

  nlohmann::json expected_;
  PluginRegistry registry_;
  std::vector<std::vector<int64_t>> prompts_;
};

TEST_F(FluxEndToEndTest, DefaultFluxConfigurationMatchesPyTorch) {
  std::unique_ptr<Engine> engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  // All prompts in one batch: their decisions differ at some layers.
  absl::StatusOr<BatchResult> result = engine->Generate(prompts_, Options());
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->requests.size(), prompts_.size());
  for (size_t r = 0; r < prompts_.size(); ++r) {
    const nlohmann::json& want = expected_.at("prompts")[r];
    const GenerationResult& got = result->requests[r];
    SCOPED_TRACE(absl::StrCat("prompt ", r, " (", prompts_[r].size(), " tokens)"));
    const auto decisions = want.at("decisions").get<std::vector<std::string>>();
    const auto router_logits = want.at("router_logits").get<std::vector<std::vector<double>>>();
    ASSERT_EQ(got.trace.layers.size(), decisions.size());
    int sparse = 0;
    for (size_t layer = 0; layer < decisions.size(); ++layer) {
      const LayerRouting& routing = got.trace.layers[layer];
      EXPECT_EQ(AttentionChoiceName(routing.choice), decisions[layer]) << "layer " << layer;
      EXPECT_EQ(routing.decided_by, "router");
      // The decision's wall time is measured, and it is a fraction of a second here.
      EXPECT_GT(routing.route_seconds, 0.0) << "layer " << layer;
      EXPECT_LT(routing.route_seconds, 1.0) << "layer " << layer;
      EXPECT_TRUE(routing.fallback.empty()) << routing.fallback;
      EXPECT_EQ(routing.backend, decisions[layer] == "full" ? "full" : "sparse");
      sparse += decisions[layer] == "sparse";
      ASSERT_EQ(routing.logits.size(), router_logits[layer].size()) << "layer " << layer;
      for (size_t i = 0; i < routing.logits.size(); ++i) {
        const double w = router_logits[layer][i];
        EXPECT_NEAR(routing.logits[i], w, 1e-5 * std::max(1.0, std::abs(w)))
            << "layer " << layer << " logit " << i;
      }
    }
    EXPECT_DOUBLE_EQ(got.trace.sa_ratio, static_cast<double>(sparse) / decisions.size());
    ASSERT_FALSE(got.step_logits.empty());
    ExpectLogitsNear(got.step_logits[0], want.at("last_logits").get<std::vector<double>>(), 1e-4);
    EXPECT_EQ(got.tokens, want.at("greedy_tokens").get<std::vector<int64_t>>());
  }
}

TEST_F(FluxEndToEndTest, AllFullAttentionDiffersFromRoutedResult) {
  // With every layer on the full backend the engine must reproduce the dense reference, which
  // differs from the routed one: proof that the SA layers of the routed run were really sparse.
  std::unique_ptr<Engine> engine = MakeEngine([](EngineConfig& config) {
    config.router.plugin = "static";
    config.router.raw_params.clear();  // the built-in flux parameters
    config.router.raw_params["pattern"] = RawParam{ParamValue(std::string("F")), {}};
  });
  ASSERT_NE(engine, nullptr);
  absl::StatusOr<BatchResult> result = engine->Generate({prompts_[0]}, Options());
  ASSERT_TRUE(result.ok()) << result.status();
  const nlohmann::json& want = expected_.at("prompts")[0];
  const auto dense = want.at("full_attention_last_logits").get<std::vector<double>>();
  const auto routed = want.at("last_logits").get<std::vector<double>>();
  ExpectLogitsNear(result->requests[0].step_logits[0], dense, 1e-4);
  double difference = 0.0;
  for (size_t i = 0; i < dense.size(); ++i) {
    difference = std::max(difference, std::abs(dense[i] - routed[i]));
  }
  EXPECT_GT(difference, 1e-2);
}

TEST_F(FluxEndToEndTest, StaticPolicyWithTheSameDecisionsGivesTheSameLogits) {
  // The routed result depends only on the decisions: a static pattern equal to the learned
  // router's decisions for a prompt reproduces its logits.
  const nlohmann::json& want = expected_.at("prompts")[1];
  std::string pattern;
  for (const auto& d : want.at("decisions")) pattern += d.get<std::string>() == "full" ? 'F' : 'S';
  std::unique_ptr<Engine> engine = MakeEngine([&](EngineConfig& config) {
    config.router.plugin = "static";
    config.router.raw_params.clear();
    config.router.raw_params["pattern"] = RawParam{ParamValue(pattern), {}};
  });
  ASSERT_NE(engine, nullptr);
  absl::StatusOr<BatchResult> result = engine->Generate({prompts_[1]}, Options());
  ASSERT_TRUE(result.ok()) << result.status();
  ExpectLogitsNear(result->requests[0].step_logits[0],
                   want.at("last_logits").get<std::vector<double>>(), 1e-4);
  EXPECT_EQ(result->requests[0].tokens, want.at("greedy_tokens").get<std::vector<int64_t>>());
  for (const LayerRouting& routing : result->requests[0].trace.layers) {
    EXPECT_TRUE(routing.logits.empty());
  }
}

// Runs `command` and returns its standard output; the exit status goes to `status`.
std::string RunCommand(const std::string& command, int* status) {
  std::string output;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    *status = -1;
    return output;
  }
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) output.append(buffer.data(), n);
  *status = pclose(pipe);
  return output;
}

TEST_F(FluxEndToEndTest, GenerateCommandPrintsRoutingAndWritesTrace) {
  const std::string trace_path = ::testing::TempDir() + "flux_tiny_trace.json";
  std::remove(trace_path.c_str());
  std::string command =
      absl::StrCat(FLUXATTN_CLI, " generate --model ", kFixtureDir, "/",
                   expected_.at("checkpoint").get<std::string>(), " --plugin-path ",
                   FLUXATTN_PLUGIN_DIR, " --threads 2 --ignore-eos --json --trace ", trace_path,
                   " --max-new-tokens ", Options().max_new_tokens);
  for (const std::vector<int64_t>& prompt : prompts_) {
    absl::StrAppend(&command, " --prompt-ids ", absl::StrJoin(prompt, ","));
  }
  int status = 0;
  const std::string output = RunCommand(command, &status);
  ASSERT_EQ(status, 0) << command << "\n" << output;
  const nlohmann::json printed = nlohmann::json::parse(output);
  std::ifstream trace_in(trace_path);
  ASSERT_TRUE(trace_in.good()) << trace_path;
  const nlohmann::json trace = nlohmann::json::parse(trace_in);

  ASSERT_EQ(printed.at("requests").size(), prompts_.size());
  ASSERT_EQ(trace.at("requests").size(), prompts_.size());
  for (size_t r = 0; r < prompts_.size(); ++r) {
    SCOPED_TRACE(absl::StrCat("prompt ", r));
    const nlohmann::json& want = expected_.at("prompts")[r];
    const nlohmann::json& got = printed.at("requests")[r];
    const nlohmann::json& traced = trace.at("requests")[r];
    EXPECT_EQ(got.at("tokens").get<std::vector<int64_t>>(),
              want.at("greedy_tokens").get<std::vector<int64_t>>());
    EXPECT_EQ(traced.at("prompt_tokens").get<int64_t>(), static_cast<int64_t>(prompts_[r].size()));
    const auto decisions = want.at("decisions").get<std::vector<std::string>>();
    const auto router_logits = want.at("router_logits").get<std::vector<std::vector<double>>>();
    ASSERT_EQ(got.at("routing").size(), decisions.size());
    ASSERT_EQ(traced.at("layers").size(), decisions.size());
    int64_t full_kv = -1;
    int64_t sparse_kv = -1;
    int sparse = 0;
    for (size_t layer = 0; layer < decisions.size(); ++layer) {
      for (const nlohmann::json* entry : {&got.at("routing")[layer], &traced.at("layers")[layer]}) {
        EXPECT_EQ(entry->at("layer").get<size_t>(), layer);
        EXPECT_EQ(entry->at("choice").get<std::string>(), decisions[layer]);
        EXPECT_EQ(entry->at("backend").get<std::string>(),
                  decisions[layer] == "full" ? "full" : "sparse");
        const auto logits = entry->at("logits").get<std::vector<double>>();
        ASSERT_EQ(logits.size(), router_logits[layer].size());
        for (size_t i = 0; i < logits.size(); ++i) {
          const double w = router_logits[layer][i];
          EXPECT_NEAR(logits[i], w, 1e-5 * std::max(1.0, std::abs(w)));
        }
      }
      const int64_t kv = traced.at("layers")[layer].at("kv_bytes").get<int64_t>();
      (decisions[layer] == "full" ? full_kv : sparse_kv) = kv;
      sparse += decisions[layer] == "sparse";
    }
    EXPECT_DOUBLE_EQ(got.at("sa_ratio").get<double>(),
                     static_cast<double>(sparse) / decisions.size());
    // Streaming layers keep only sink + window: on prompts longer than that, less KV than a
    // full layer of the same request.
    const int64_t span =
        expected_.at("sink_size").get<int64_t>() + expected_.at("local_window_size").get<int64_t>();
    if (full_kv >= 0 && sparse_kv >= 0 && static_cast<int64_t>(prompts_[r].size()) > span) {
      EXPECT_LT(sparse_kv, full_kv);
    }
  }
}

TEST_F(FluxEndToEndTest, ConfigFileWithSeparateRouterWeightsAndBias) {
  // The same router read from a separate safetensors file through a TOML composition gives the
  // same decisions; a large negative bias then sends every layer to the sparse backend.
  const std::string checkpoint =
      absl::StrCat(kFixtureDir, "/", expected_.at("checkpoint").get<std::string>());
  const nlohmann::json& want = expected_.at("prompts")[0];
  for (const double bias : {0.0, -100.0}) {
    SCOPED_TRACE(absl::StrCat("bias ", bias));
    const std::string config_path = ::testing::TempDir() + "flux_ab.toml";
    {
      std::ofstream config(config_path);
      config << "[model]\npath = \"" << checkpoint << "\"\n"
             << "[backends.full]\nplugin = \"full\"\n"
             << "[backends.sparse]\nplugin = \"streaming\"\nsink_tokens = "
             << expected_.at("sink_size").get<int64_t>()
             << "\nwindow_tokens = " << expected_.at("local_window_size").get<int64_t>()
             << "\nblock_size = " << expected_.at("block_size").get<int64_t>() << "\n"
             << "[router]\nplugin = \"flux\"\nfull = \"full\"\nsparse = \"sparse\"\n"
             << "weights = \"" << checkpoint << "/model.safetensors\"\nbias = " << bias << "\n";
    }
    const std::string command = absl::StrCat(
        FLUXATTN_CLI, " generate --config ", config_path, " --plugin-path ", FLUXATTN_PLUGIN_DIR,
        " --threads 2 --ignore-eos --json --max-new-tokens 2 --prompt-ids ",
        absl::StrJoin(prompts_[0], ","));
    int status = 0;
    const std::string output = RunCommand(command, &status);
    ASSERT_EQ(status, 0) << command << "\n" << output;
    const nlohmann::json routing = nlohmann::json::parse(output).at("routing");
    const auto decisions = want.at("decisions").get<std::vector<std::string>>();
    ASSERT_EQ(routing.size(), decisions.size());
    for (size_t layer = 0; layer < decisions.size(); ++layer) {
      EXPECT_EQ(routing[layer].at("choice").get<std::string>(),
                bias == 0.0 ? decisions[layer] : "sparse")
          << "layer " << layer;
      // The bias moves the decision, not the reported logits.
      const auto logits = routing[layer].at("logits").get<std::vector<double>>();
      const auto router_logits = want.at("router_logits")[layer].get<std::vector<double>>();
      ASSERT_EQ(logits.size(), router_logits.size());
      if (bias == 0.0 || layer == 0) {
        for (size_t i = 0; i < logits.size(); ++i) {
          EXPECT_NEAR(logits[i], router_logits[i],
                      1e-5 * std::max(1.0, std::abs(router_logits[i])));
        }
      }
    }
  }
}

}  // namespace
}  // namespace fluxattn::routing
