// The published Flux checkpoint variants, each run from its config.json alone: the built-in
// composition (DefaultEngineConfig) must compose the backends toggle_type and retrieval_mode
// name and reproduce an independent float64 PyTorch forward that follows the original modeling
// code (tools/make_router_fixtures.py):
//   flux_tiny_triangle: toggle_type "triangle" (triangle_n_last 96), retrieval_mode "full";
//   flux_tiny_xattn:    toggle_type "streaming", retrieval_mode "xattn" (stride 16, threshold 0.9).
// Required: identical decisions, router logits within 1e-5 relative, prompt and last-step logits
// within 1e-4, identical greedy tokens. Each variant also shows that running another method
// (plain streaming, dense FA layers, dense decode) is caught. Config keys FluxAttn does not run
// are refused with one line naming key and value, by the parser and by `fluxattn generate`.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "fluxattn/config.h"
#include "fluxattn/default_composition.h"
#include "fluxattn/engine.h"
#include "fluxattn/models/decoder_model.h"
#include "fluxattn/models/model_config.h"
#include "fluxattn/plugin_registry.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace fluxattn::routing {
namespace {

namespace fs = std::filesystem;

const std::string kFixtureDir = FLUXATTN_ROUTER_FIXTURE_DIR;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

double MaxAbsDifference(const std::vector<float>& got, const std::vector<double>& want) {
  EXPECT_EQ(got.size(), want.size());
  double worst = 0.0;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    worst = std::max(worst, std::abs(got[i] - want[i]));
  }
  return worst;
}

// Runs `command`; returns its standard output, the exit status goes to `status`.
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

class FluxVariantTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::ifstream in(kFixtureDir + "/" + GetParam());
    ASSERT_TRUE(in.good()) << "cannot open " << GetParam() << " in " << kFixtureDir;
    expected_ = nlohmann::json::parse(in);
    checkpoint_ = kFixtureDir + "/" + expected_.at("checkpoint").get<std::string>();
    ASSERT_TRUE(registry_.ScanDirectory(FLUXATTN_PLUGIN_DIR).ok());
    for (const nlohmann::json& prompt : expected_.at("prompts")) {
      prompts_.push_back(prompt.at("prompt_ids").get<std::vector<int64_t>>());
    }
  }

  // The built-in configuration for the checkpoint; `edit` may change it.
  EngineConfig Config(const std::function<void(EngineConfig&)>& edit = {}) {
    absl::StatusOr<models::ModelSpec> spec = models::LoadModelConfig(checkpoint_);
    EXPECT_TRUE(spec.ok()) << spec.status();
    EngineConfig config = spec.ok() ? DefaultEngineConfig(spec->info) : EngineConfig{};
    if (edit) edit(config);
    return config;
  }

  std::unique_ptr<Engine> MakeEngine(EngineConfig config) {
    absl::StatusOr<std::unique_ptr<LanguageModel>> model =
        models::LoadLanguageModel(checkpoint_, {.threads = 2});
    EXPECT_TRUE(model.ok()) << model.status();
    if (!model.ok()) return nullptr;
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

  // Prompt indices whose result depends on the variant's sparse method (an SA layer for
  // triangle, an FA layer for XAttention, and a prompt longer than sink + window).
  std::vector<size_t> SensitivePrompts(const std::string& key) const {
    std::vector<size_t> out;
    for (size_t r = 0; r < prompts_.size(); ++r) {
      if (expected_.at("prompts")[r].contains(key)) out.push_back(r);
    }
    return out;
  }

  std::string Variant() const { return expected_.at("variant").get<std::string>(); }

  nlohmann::json expected_;
  std::string checkpoint_;
  PluginRegistry registry_;
  std::vector<std::vector<int64_t>> prompts_;
};

TEST_P(FluxVariantTest, BuiltInCompositionFollowsConfigJson) {
  EngineConfig config = Config();
  ASSERT_EQ(config.router.plugin, "flux");
  ASSERT_EQ(config.backends.count("full"), 1u);
  ASSERT_EQ(config.backends.count("sparse"), 1u);
  const PluginInstanceConfig& full = config.backends["full"];
  const PluginInstanceConfig& sparse = config.backends["sparse"];
  auto raw_int = [](const PluginInstanceConfig& c, const std::string& key) {
    return std::get<int64_t>(c.raw_params.at(key).value);
  };
  auto expect_streaming_rule = [&](const PluginInstanceConfig& c) {
    EXPECT_EQ(raw_int(c, "sink_tokens"), expected_.at("sink_size").get<int64_t>()) << c.name;
    EXPECT_EQ(raw_int(c, "window_tokens"), expected_.at("local_window_size").get<int64_t>())
        << c.name;
    EXPECT_EQ(raw_int(c, "block_size"), 128) << c.name;
  };
  expect_streaming_rule(sparse);
  if (expected_.at("toggle_type") == "triangle") {
    EXPECT_EQ(sparse.plugin, "triangle");
    EXPECT_EQ(raw_int(sparse, "last_n"), expected_.at("triangle_n_last").get<int64_t>());
    // The sink + window decode: a streaming instance with the same rule serves it.
    EXPECT_EQ(sparse.raw_params.size(), 4u);
    EXPECT_EQ(sparse.decode_with, "sparse_decode");
    ASSERT_EQ(config.backends.count("sparse_decode"), 1u);
    const PluginInstanceConfig& decode = config.backends["sparse_decode"];
    EXPECT_EQ(decode.plugin, "streaming");
    EXPECT_EQ(decode.raw_params.size(), 3u);
    expect_streaming_rule(decode);
    EXPECT_EQ(config.backends.size(), 3u);
  } else {
    EXPECT_EQ(sparse.plugin, "streaming");
    EXPECT_EQ(sparse.decode_with, "");
    EXPECT_EQ(config.backends.size(), 2u);
  }
  EXPECT_EQ(sparse.prefill_with, "");
  if (expected_.at("retrieval_mode") == "xattn") {
    EXPECT_EQ(full.plugin, "xattention");
    EXPECT_EQ(raw_int(full, "stride"), expected_.at("xattn_stride").get<int64_t>());
    EXPECT_EQ(std::get<double>(full.raw_params.at("threshold").value),
              expected_.at("xattn_threshold").get<double>());
    EXPECT_EQ(raw_int(full, "block_size"), 128);
    EXPECT_EQ(raw_int(full, "sink_blocks"), 1);
    EXPECT_EQ(full.raw_params.size(), 4u);  // its own (dense) decode
  } else {
    EXPECT_EQ(full.plugin, "full");
  }
  EXPECT_EQ(full.prefill_with, "");
  EXPECT_EQ(full.decode_with, "");
}

TEST_P(FluxVariantTest, MatchesTheOriginalSemantics) {
  std::unique_ptr<Engine> engine = MakeEngine(Config());
  ASSERT_NE(engine, nullptr);
  absl::StatusOr<BatchResult> result = engine->Generate(prompts_, Options());
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->requests.size(), prompts_.size());
  int sparse_layers = 0;
  for (size_t r = 0; r < prompts_.size(); ++r) {
    const nlohmann::json& want = expected_.at("prompts")[r];
    const GenerationResult& got = result->requests[r];
    SCOPED_TRACE(absl::StrCat(Variant(), " prompt ", r, " (", prompts_[r].size(), " tokens)"));
    const auto decisions = want.at("decisions").get<std::vector<std::string>>();
    const auto router_logits = want.at("router_logits").get<std::vector<std::vector<double>>>();
    ASSERT_EQ(got.trace.layers.size(), decisions.size());
    for (size_t layer = 0; layer < decisions.size(); ++layer) {
      const LayerRouting& routing = got.trace.layers[layer];
      EXPECT_EQ(AttentionChoiceName(routing.choice), decisions[layer]) << "layer " << layer;
      EXPECT_TRUE(routing.fallback.empty()) << routing.fallback;
      EXPECT_EQ(routing.backend, decisions[layer] == "full" ? "full" : "sparse");
      sparse_layers += decisions[layer] == "sparse";
      ASSERT_EQ(routing.logits.size(), router_logits[layer].size());
      for (size_t i = 0; i < routing.logits.size(); ++i) {
        const double w = router_logits[layer][i];
        // f32 through several layers: the dense kernels' summation order moves the last bits.
        EXPECT_NEAR(routing.logits[i], w, 5e-5 * std::max(1.0, std::abs(w))) << "layer " << layer;
      }
    }
    ASSERT_EQ(got.step_logits.size(), want.at("greedy_tokens").size());
    EXPECT_LE(MaxAbsDifference(got.step_logits.front(),
                               want.at("last_logits").get<std::vector<double>>()),
              1e-4);
    EXPECT_LE(MaxAbsDifference(got.step_logits.back(),
                               want.at("final_step_logits").get<std::vector<double>>()),
              1e-4);
    EXPECT_EQ(got.tokens, want.at("greedy_tokens").get<std::vector<int64_t>>());
  }
  EXPECT_GT(sparse_layers, 0);
}

TEST_P(FluxVariantTest, AnotherMethodIsCaught) {
  // What a composition that ignored the variant keys would run: plain streaming for the SA
  // layers (triangle) or dense FA layers (XAttention), with the fixture's decisions fixed by a
  // static pattern. Its prompt logits must be far from the fixture's, so the matching test above
  // really checks the variant's method.
  const bool triangle = expected_.at("toggle_type") == "triangle";
  const std::string other = triangle ? "streaming_last_logits" : "dense_full_last_logits";
  const std::vector<size_t> sensitive = SensitivePrompts(other);
  ASSERT_FALSE(sensitive.empty());
  for (size_t r : sensitive) {
    SCOPED_TRACE(absl::StrCat(Variant(), " prompt ", r));
    const nlohmann::json& want = expected_.at("prompts")[r];
    std::string pattern;
    for (const auto& d : want.at("decisions")) pattern += d == "full" ? 'F' : 'S';
    std::unique_ptr<Engine> engine = MakeEngine(Config([&](EngineConfig& config) {
      PluginInstanceConfig& backend = config.backends[triangle ? "sparse" : "full"];
      backend.plugin = triangle ? "streaming" : "full";
      if (triangle) {
        backend.raw_params.erase("last_n");
        backend.decode_with.clear();
      } else {
        backend.raw_params.clear();
      }
      config.router.plugin = "static";
      config.router.raw_params.clear();
      config.router.raw_params["pattern"] = RawParam{ParamValue(pattern), {}};
    }));
    ASSERT_NE(engine, nullptr);
    absl::StatusOr<BatchResult> result = engine->Generate({prompts_[r]}, Options());
    ASSERT_TRUE(result.ok()) << result.status();
    const std::vector<float>& got = result->requests[0].step_logits.front();
    // The other method is what the fixture says it is ...
    EXPECT_LE(MaxAbsDifference(got, want.at(other).get<std::vector<double>>()), 1e-4);
    // ... and far from the variant's result.
    EXPECT_GT(MaxAbsDifference(got, want.at("last_logits").get<std::vector<double>>()), 1e-3);
  }
}

TEST_P(FluxVariantTest, DenseDecodeOnSparseLayersIsCaught) {
  // Triangle SA layers decode with the sink + window rule in the original (the built-in
  // composition hands their decode to a streaming instance); triangle decoding them itself
  // (densely) changes the last step's logits of a prompt longer than sink + window.
  if (expected_.at("toggle_type") != "triangle") GTEST_SKIP() << "streaming decode is fixed";
  std::unique_ptr<Engine> engine = MakeEngine(Config([](EngineConfig& config) {
    ASSERT_EQ(config.backends["sparse"].decode_with, "sparse_decode");
    config.backends["sparse"].decode_with.clear();
  }));
  ASSERT_NE(engine, nullptr);
  const int64_t span =
      expected_.at("sink_size").get<int64_t>() + expected_.at("local_window_size").get<int64_t>();
  int checked = 0;
  for (size_t r = 0; r < prompts_.size(); ++r) {
    const nlohmann::json& want = expected_.at("prompts")[r];
    const auto decisions = want.at("decisions").get<std::vector<std::string>>();
    if (static_cast<int64_t>(prompts_[r].size()) <= span ||
        std::count(decisions.begin(), decisions.end(), "sparse") == 0) {
      continue;
    }
    absl::StatusOr<BatchResult> result = engine->Generate({prompts_[r]}, Options());
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_GT(MaxAbsDifference(result->requests[0].step_logits.back(),
                               want.at("final_step_logits").get<std::vector<double>>()),
              1e-3)
        << Variant() << " prompt " << r;
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

TEST_P(FluxVariantTest, ExplainPrintsTomlThatRunsTheSameComposition) {
  const std::string base =
      absl::StrCat(FLUXATTN_CLI, " generate --plugin-path ", FLUXATTN_PLUGIN_DIR, " --threads 2");
  int status = 0;
  const std::string toml =
      RunCommand(absl::StrCat(base, " --model ", checkpoint_, " --explain 2>/dev/null"), &status);
  ASSERT_EQ(status, 0) << toml;
  absl::StatusOr<EngineConfig> parsed = ParseEngineConfig(toml, "explained.toml");
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << toml;
  EngineConfig built_in = Config();
  ASSERT_EQ(parsed->backends.size(), built_in.backends.size()) << toml;
  for (const auto& [name, backend] : built_in.backends) {
    ASSERT_EQ(parsed->backends.count(name), 1u) << toml;
    EXPECT_EQ(parsed->backends[name].plugin, backend.plugin);
    EXPECT_EQ(parsed->backends[name].prefill_with, backend.prefill_with) << name;
    EXPECT_EQ(parsed->backends[name].decode_with, backend.decode_with) << name;
    for (const auto& [key, raw] : backend.raw_params) {
      ASSERT_EQ(parsed->backends[name].raw_params.count(key), 1u) << name << "." << key;
      EXPECT_EQ(parsed->backends[name].raw_params[key].value, raw.value) << name << "." << key;
    }
  }
  EXPECT_EQ(parsed->router.plugin, "flux");
  EXPECT_EQ(parsed->router_full, "full");
  EXPECT_EQ(parsed->router_sparse, "sparse");

  // Saved and passed back with --config, it generates what the checkpoint alone generates.
  const std::string path = ::testing::TempDir() + "explained_" + Variant() + ".toml";
  {
    std::ofstream out(path);
    out << toml;
  }
  const size_t r = prompts_.size() - 1;
  const std::string run =
      absl::StrCat(base, " --config ", path, " --ignore-eos --json --max-new-tokens ",
                   Options().max_new_tokens, " --prompt-ids ", absl::StrJoin(prompts_[r], ","));
  const std::string output = RunCommand(run, &status);
  ASSERT_EQ(status, 0) << run << "\n" << output;
  EXPECT_EQ(nlohmann::json::parse(output).at("tokens").get<std::vector<int64_t>>(),
            expected_.at("prompts")[r].at("greedy_tokens").get<std::vector<int64_t>>());
}

INSTANTIATE_TEST_SUITE_P(Variants, FluxVariantTest,
                         ::testing::Values("flux_tiny_triangle_expected.json",
                                           "flux_tiny_xattn_expected.json"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param.find("triangle") != std::string::npos ? "Triangle"
                                                                                   : "XAttention";
                         });

// ---- keys FluxAttn does not run ----

std::string FixtureConfigWith(const std::string& key, const nlohmann::json& value) {
  nlohmann::json config =
      nlohmann::json::parse(ReadFile(kFixtureDir + "/flux_tiny_triangle/config.json"));
  if (value.is_null()) {
    config.erase(key);
  } else {
    config[key] = value;
  }
  return config.dump();
}

struct BadKey {
  std::string key;
  nlohmann::json value;  // null: the key left out
  std::string found;     // what the message must quote
};

TEST(FluxConfigKeys, UnsupportedValuesAreRefusedNamingKeyAndValue) {
  const std::vector<BadKey> cases = {
      {"toggle_type", "local", "\"local\""},
      {"toggle_type", "topk", "\"topk\""},
      {"toggle_type", "head", "\"head\" (unknown value)"},
      {"toggle_type", 3, "3"},
      {"retrieval_mode", "dense", "\"dense\" (unknown value)"},
      {"retrieval_mode", "triangle", "\"triangle\""},
      {"pooling_mode", "first_token", "\"first_token\""},
      {"pooling_mode", "mean", "\"mean\" (unknown value)"},
      {"pooling_mode", nullptr, "nothing (key missing: the original then uses \"first_token\")"},
      {"sink_size", -1, "-1"},
      {"local_window_size", 0, "0"},
      {"triangle_n_last", "last", "\"last\""},
      {"pool_size", 0, "0"},
      {"use_softmax", "yes", "\"yes\""},
      {"enable_ada_sparsity", 1, "1"},
  };
  for (const BadKey& c : cases) {
    SCOPED_TRACE(absl::StrCat(c.key, " = ", c.value.dump()));
    absl::StatusOr<models::ModelSpec> spec =
        models::ParseModelConfig(FixtureConfigWith(c.key, c.value), "config.json");
    ASSERT_FALSE(spec.ok());
    const std::string message(spec.status().message());
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    EXPECT_EQ(message.rfind(absl::StrCat("config.json: ", c.key, ": expected "), 0), 0u) << message;
    EXPECT_NE(message.find(absl::StrCat("found ", c.found)), std::string::npos) << message;
  }
}

TEST(FluxConfigKeys, SupportedValuesAndTrainingOnlyKeysAreAccepted) {
  nlohmann::json config =
      nlohmann::json::parse(ReadFile(kFixtureDir + "/flux_tiny_triangle/config.json"));
  config["enable_ada_sparsity"] = true;
  config["enable_lambda_task"] = false;
  config["use_task_emb_for_mask"] = false;
  config["suggested_sparsity"] = 0.5;
  for (const char* toggle : {"streaming", "triangle", "xattn"}) {
    for (const char* retrieval : {"full", "xattn"}) {
      config["toggle_type"] = toggle;
      config["retrieval_mode"] = retrieval;
      absl::StatusOr<models::ModelSpec> spec =
          models::ParseModelConfig(config.dump(), "config.json");
      ASSERT_TRUE(spec.ok()) << spec.status();
      EXPECT_EQ(spec->flux_settings.toggle_type, toggle);
      EXPECT_EQ(spec->flux_settings.retrieval_mode, retrieval);
      EXPECT_EQ(spec->flux_settings.triangle_n_last, config["triangle_n_last"].get<int64_t>());
      EXPECT_EQ(spec->flux_settings.sink_size, config["sink_size"].get<int64_t>());
      EXPECT_EQ(spec->flux_settings.pool_size, config["pool_size"].get<int64_t>());
    }
  }
  // Left out: PawQwen3Config's defaults.
  for (const char* key : {"toggle_type", "retrieval_mode", "sink_size", "local_window_size",
                          "triangle_n_last", "pool_size", "use_softmax"}) {
    config.erase(key);
  }
  absl::StatusOr<models::ModelSpec> spec = models::ParseModelConfig(config.dump(), "config.json");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->flux_settings.toggle_type, "streaming");
  EXPECT_EQ(spec->flux_settings.retrieval_mode, "full");
  EXPECT_EQ(spec->flux_settings.sink_size, 128);
  EXPECT_EQ(spec->flux_settings.local_window_size, 1024);
  EXPECT_EQ(spec->flux_settings.triangle_n_last, 128);
  EXPECT_EQ(spec->flux_settings.pool_size, 100);
  EXPECT_FALSE(spec->flux_settings.use_softmax);
  // Non-Flux architectures ignore the keys.
  config["architectures"] = {"Qwen3ForCausalLM"};
  config["toggle_type"] = "local";
  EXPECT_TRUE(models::ParseModelConfig(config.dump(), "config.json").ok());
}

// Every toggle_type / retrieval_mode pair composes with the bundled plugins; where the SA side
// decodes with the sink + window rule (triangle, xattn) a streaming instance serves it.
TEST(FluxConfigKeys, EveryVariantComposes) {
  PluginRegistry registry;
  ASSERT_TRUE(registry.ScanDirectory(FLUXATTN_PLUGIN_DIR).ok());
  nlohmann::json config =
      nlohmann::json::parse(ReadFile(kFixtureDir + "/flux_tiny_triangle/config.json"));
  for (const char* toggle : {"streaming", "triangle", "xattn"}) {
    for (const char* retrieval : {"full", "xattn"}) {
      SCOPED_TRACE(absl::StrCat(toggle, " / ", retrieval));
      config["toggle_type"] = toggle;
      config["retrieval_mode"] = retrieval;
      absl::StatusOr<models::ModelSpec> spec =
          models::ParseModelConfig(config.dump(), "config.json");
      ASSERT_TRUE(spec.ok()) << spec.status();
      EngineConfig built_in = DefaultEngineConfig(spec->info);
      absl::StatusOr<Composition> composition = Compose(built_in, registry);
      ASSERT_TRUE(composition.ok()) << composition.status();
      EXPECT_EQ(composition->backend_plugins.at("sparse"),
                std::string(toggle) == "xattn" ? "xattention" : toggle);
      EXPECT_EQ(composition->backend_plugins.at("full"),
                std::string(retrieval) == "xattn" ? "xattention" : "full");
      EXPECT_TRUE(composition->prefill_with.empty());
      if (std::string(toggle) == "streaming") {
        EXPECT_TRUE(composition->decode_with.empty());
        EXPECT_EQ(composition->backends.size(), 2u);
        continue;
      }
      ASSERT_EQ(composition->decode_with.size(), 1u);
      EXPECT_EQ(composition->decode_with.at("sparse"), "sparse_decode");
      EXPECT_EQ(composition->backend_plugins.at("sparse_decode"), "streaming");
      const ParamValues& rule = built_in.backends.at("sparse_decode").params;
      EXPECT_EQ(rule.GetInt("sink_tokens"), config["sink_size"].get<int64_t>());
      EXPECT_EQ(rule.GetInt("window_tokens"), config["local_window_size"].get<int64_t>());
      EXPECT_EQ(rule.GetInt("block_size"), 128);
    }
  }
}

TEST(FluxConfigKeys, GenerateRefusesWithOneLine) {
  const fs::path dir = fs::path(::testing::TempDir()) / "flux_bad_toggle";
  fs::create_directories(dir);
  {
    std::ofstream out(dir / "config.json");
    out << FixtureConfigWith("toggle_type", "topk");
  }
  fs::remove(dir / "model.safetensors");
  fs::create_symlink(fs::path(kFixtureDir) / "flux_tiny_triangle" / "model.safetensors",
                     dir / "model.safetensors");
  const std::string stderr_path = (dir / "stderr.txt").string();
  for (const char* extra : {"--explain", "--prompt-ids 1,2,3"}) {
    SCOPED_TRACE(extra);
    int status = 0;
    const std::string output =
        RunCommand(absl::StrCat(FLUXATTN_CLI, " generate --model ", dir.string(), " --plugin-path ",
                                FLUXATTN_PLUGIN_DIR, " ", extra, " 2>", stderr_path),
                   &status);
    EXPECT_NE(status, 0);
    EXPECT_TRUE(output.empty()) << output;
    std::string message = ReadFile(stderr_path);
    ASSERT_FALSE(message.empty());
    ASSERT_EQ(message.back(), '\n');
    message.pop_back();
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    EXPECT_NE(message.find("config.json: toggle_type: expected one of \"streaming\", "
                           "\"triangle\", \"xattn\""),
              std::string::npos)
        << message;
    EXPECT_NE(message.find("found \"topk\""), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace fluxattn::routing
