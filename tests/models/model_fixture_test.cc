// Every architecture and dtype against reference outputs recorded with Hugging Face
// transformers (tools/make_model_fixtures.py): logits at every position of one prompt, logits at
// the last position of prompts of several lengths, and greedy continuations.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "fluxattn/engine.h"
#include "fluxattn/models/decoder_model.h"
#include "test_support.h"

namespace fluxattn::models {
namespace {

using testing::FixtureNames;
using testing::FixturePath;
using testing::ReadJson;
using testing::RelativeError;

constexpr double kTolerance = 1e-4;

// Dense causal attention over the new tokens only (the whole prompt in one call), in double.
class PromptAttention : public LayerAttention {
 public:
  absl::Status Attend(const LayerAttentionBatch& batch, const TensorView& out_view) override {
    const int group = batch.num_q_heads / batch.num_kv_heads;
    const int d = batch.head_dim;
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    for (const SequenceRows& in : batch.seqs) {
      if (in.pos0 != 0) return absl::InternalError("PromptAttention handles prefill only");
      const float* qs = batch.q.as<const float>() + in.row0 * batch.num_q_heads * d;
      const float* ks = batch.k.as<const float>() + in.row0 * batch.num_kv_heads * d;
      const float* vs = batch.v.as<const float>() + in.row0 * batch.num_kv_heads * d;
      float* out = out_view.as<float>() + in.row0 * batch.num_q_heads * d;
      for (int64_t r = 0; r < in.num_tokens; ++r) {
        for (int h = 0; h < batch.num_q_heads; ++h) {
          const float* q = qs + (r * batch.num_q_heads + h) * d;
          std::vector<double> w(r + 1);
          double max_s = -INFINITY, total = 0;
          for (int64_t j = 0; j <= r; ++j) {
            const float* k = ks + (j * batch.num_kv_heads + h / group) * d;
            double s = 0;
            for (int i = 0; i < d; ++i) s += static_cast<double>(q[i]) * k[i];
            w[j] = s * scale;
            max_s = std::max(max_s, w[j]);
          }
          for (auto& x : w) total += (x = std::exp(x - max_s));
          for (int i = 0; i < d; ++i) {
            double acc = 0;
            for (int64_t j = 0; j <= r; ++j) {
              acc += w[j] * vs[(j * batch.num_kv_heads + h / group) * d + i];
            }
            out[(r * batch.num_q_heads + h) * d + i] = static_cast<float>(acc / total);
          }
        }
      }
    }
    return absl::OkStatus();
  }
};

std::vector<double> Row(const nlohmann::json& j) { return j.get<std::vector<double>>(); }

class FixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(FixtureTest, LogitsAtEveryPositionMatchTransformers) {
  const std::string dir = FixturePath(GetParam());
  const auto ref = ReadJson(dir + "/reference.json");
  auto model = LoadLanguageModel(dir, {.threads = 2});
  ASSERT_TRUE(model.ok()) << model.status();
  const auto prompt = ref["prompts"][0].get<std::vector<int64_t>>();
  PromptAttention attention;
  std::vector<float> logits;
  SequenceChunk chunk{prompt, 0};
  ASSERT_TRUE((*model)->Forward({&chunk, 1}, attention, true, &logits).ok());
  const int64_t vocab = (*model)->info().vocab_size;
  ASSERT_EQ(logits.size(), prompt.size() * vocab);
  for (size_t t = 0; t < prompt.size(); ++t) {
    std::vector<float> row(logits.begin() + t * vocab, logits.begin() + (t + 1) * vocab);
    EXPECT_LT(RelativeError(row, Row(ref["all_logits"][t])), kTolerance) << "position " << t;
  }
}

// All prompts of the fixture in one batch through the engine; with prefill_chunk_tokens > 0 the
// prompts run chunk by chunk, several of them sharing a step's chunk budget.
void CheckEngineBatch(const std::string& name, int64_t prefill_chunk_tokens) {
  const std::string dir = FixturePath(name);
  const auto ref = ReadJson(dir + "/reference.json");
  auto model = LoadLanguageModel(dir, {.threads = 2});
  ASSERT_TRUE(model.ok()) << model.status();
  EngineOptions engine_options;
  engine_options.prefill_chunk_tokens = prefill_chunk_tokens;
  auto engine = Engine::Create(std::move(*model), testing::NaiveComposition(), engine_options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  // Prompts up to kNaivePromptTokens: the double-precision oracle is quadratic (the long prompts
  // of the *_d128_* fixtures go through the full plugin's kernel in plugin_engine_test).
  constexpr size_t kNaivePromptTokens = 4096;
  std::vector<std::vector<int64_t>> prompts;
  std::vector<size_t> index;
  const auto all_prompts = ref["prompts"].get<std::vector<std::vector<int64_t>>>();
  for (size_t i = 0; i < all_prompts.size(); ++i) {
    if (all_prompts[i].size() > kNaivePromptTokens) continue;
    prompts.push_back(all_prompts[i]);
    index.push_back(i);
  }
  ASSERT_FALSE(prompts.empty());
  const auto greedy = ref["greedy"].get<std::vector<std::vector<int64_t>>>();
  GenerationOptions options;
  options.max_new_tokens = static_cast<int>(greedy[0].size());
  options.ignore_eos = true;
  options.record_logits = true;
  // All prompts (e.g. lengths 7, 1, 23) in one batch.
  auto result = (*engine)->Generate(prompts, options);
  ASSERT_TRUE(result.ok()) << result.status();
  for (size_t j = 0; j < prompts.size(); ++j) {
    const size_t i = index[j];
    const GenerationResult& r = result->requests[j];
    EXPECT_LT(RelativeError(r.step_logits[0], Row(ref["last_logits"][i])), kTolerance)
        << "prompt " << i;
    EXPECT_EQ(r.tokens, greedy[i]) << "prompt " << i;
    EXPECT_EQ(r.finish_reason, "length");
    ASSERT_EQ(r.trace.layers.size(), static_cast<size_t>((*engine)->model().info().num_layers));
    for (const auto& layer : r.trace.layers) EXPECT_EQ(layer.backend, "full");
    EXPECT_EQ(r.trace.sa_ratio, 0.0);
  }
  int64_t prompt_tokens = 0;
  for (const auto& p : prompts) prompt_tokens += static_cast<int64_t>(p.size());
  EXPECT_EQ(result->timing.prefill_tokens, prompt_tokens);
}

TEST_P(FixtureTest, EngineBatchMatchesTransformers) { CheckEngineBatch(GetParam(), 0); }

// Prompts of 7, 1, 23, ... tokens in chunks of 5: chunks that start mid-prompt, prompts shorter
// than a chunk sharing a step with the tail of a longer one.
TEST_P(FixtureTest, ChunkedPrefillMatchesTransformers) { CheckEngineBatch(GetParam(), 5); }

INSTANTIATE_TEST_SUITE_P(Models, FixtureTest, ::testing::ValuesIn(FixtureNames()),
                         [](const auto& info) { return info.param; });

// `[model] dtype = "bf16"` on the cpu: the products take activations rounded to bfloat16. The
// logits stay near transformers' (float32 activations) within what that rounding costs, and
// differ from the float32 path (the mode is in effect).
TEST(Fixtures, Bf16ActivationsOnTheCpuStayNearTransformers) {
  for (const std::string name : {"qwen3_bf16_tied", "llama31_d128_bf16"}) {
    SCOPED_TRACE(name);
    const std::string dir = FixturePath(name);
    const auto ref = ReadJson(dir + "/reference.json");
    const auto prompt = ref["prompts"][0].get<std::vector<int64_t>>();
    auto run = [&](DType act) {
      auto model = LoadLanguageModel(dir, {.threads = 2, .cpu_activations = act});
      EXPECT_TRUE(model.ok()) << model.status();
      PromptAttention attention;
      std::vector<float> logits;
      SequenceChunk chunk{prompt, 0};
      EXPECT_TRUE((*model)->Forward({&chunk, 1}, attention, true, &logits).ok());
      return logits;
    };
    const std::vector<float> f32 = run(DType::kF32), bf16 = run(DType::kBF16);
    ASSERT_EQ(f32.size(), bf16.size());
    const int64_t vocab = static_cast<int64_t>(f32.size() / prompt.size());
    double worst = 0, differs = 0;
    for (size_t t = 0; t < prompt.size(); ++t) {
      const std::vector<float> row(bf16.begin() + t * vocab, bf16.begin() + (t + 1) * vocab);
      const std::vector<float> exact(f32.begin() + t * vocab, f32.begin() + (t + 1) * vocab);
      worst = std::max(worst, RelativeError(row, Row(ref["all_logits"][t])));
      differs =
          std::max(differs, RelativeError(row, std::vector<double>(exact.begin(), exact.end())));
    }
    EXPECT_LT(worst, 3e-2);
    EXPECT_GT(differs, 1e-6);
  }
}

// The CPU model computes from a huge-page copy of its matrices (FLUXATTN_CPU_HUGEPAGES=1) or
// from the checkpoint's mapping (the default): the same bits either way, for float32 and bfloat16
// weights, tied and untied heads. A value other than 0 or 1 is refused naming the variable.
TEST(Fixtures, WeightArenaGivesTheMappingsBits) {
  for (const std::string name : {"qwen3_bf16_tied", "llama3_f32", "qwen2_f16_tied"}) {
    SCOPED_TRACE(name);
    const std::string dir = FixturePath(name);
    const auto ref = ReadJson(dir + "/reference.json");
    const auto prompt = ref["prompts"][0].get<std::vector<int64_t>>();
    auto run = [&](const char* hugepages) {
      ::setenv("FLUXATTN_CPU_HUGEPAGES", hugepages, 1);
      auto model = LoadLanguageModel(dir, {.threads = 2});
      ::unsetenv("FLUXATTN_CPU_HUGEPAGES");
      EXPECT_TRUE(model.ok()) << model.status();
      std::vector<float> logits;
      if (!model.ok()) return logits;
      PromptAttention attention;
      SequenceChunk chunk{prompt, 0};
      EXPECT_TRUE((*model)->Forward({&chunk, 1}, attention, true, &logits).ok());
      return logits;
    };
    const std::vector<float> mapped = run("0"), arena = run("1");
    ASSERT_FALSE(mapped.empty());
    ASSERT_EQ(mapped.size(), arena.size());
    EXPECT_EQ(std::memcmp(mapped.data(), arena.data(), mapped.size() * sizeof(float)), 0);
  }
  ::setenv("FLUXATTN_CPU_HUGEPAGES", "yes", 1);
  auto bad = LoadLanguageModel(FixturePath("llama3_f32"), {.threads = 1});
  ::unsetenv("FLUXATTN_CPU_HUGEPAGES");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("FLUXATTN_CPU_HUGEPAGES"), std::string::npos)
      << bad.status();
  EXPECT_NE(bad.status().message().find("\"yes\""), std::string::npos) << bad.status();
}

TEST(Fixtures, CpuDtypeIsF32OrBf16) {
  auto bf16 = ModelLoadOptionsFor("x.toml: [model]", "cpu", "bf16", 0);
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  EXPECT_EQ(bf16->cpu_activations, DType::kBF16);
  auto f32 = ModelLoadOptionsFor("x.toml: [model]", "cpu", "", 0);
  ASSERT_TRUE(f32.ok());
  EXPECT_EQ(f32->cpu_activations, DType::kF32);
  auto bad = ModelLoadOptionsFor("x.toml: [model]", "cpu", "f16", 0);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("x.toml: [model] dtype"), std::string::npos)
      << bad.status();
  EXPECT_NE(bad.status().message().find("\"f32\" or \"bf16\" on the cpu"), std::string::npos)
      << bad.status();
  EXPECT_NE(bad.status().message().find("\"f16\""), std::string::npos) << bad.status();
}

TEST(Fixtures, CoverEveryArchitectureAndDtype) {
  std::set<std::string> archs, dtypes;
  bool sharded = false, tied = false, legacy_rope = false;
  for (const auto& name : FixtureNames()) {
    const std::string dir = FixturePath(name);
    const auto config = ReadJson(dir + "/config.json");
    archs.insert(config["architectures"][0].get<std::string>());
    dtypes.insert(ReadJson(dir + "/reference.json")["dtype"].get<std::string>());
    sharded |= std::filesystem::exists(dir + "/model.safetensors.index.json");
    tied |= config.value("tie_word_embeddings", false);
    legacy_rope |= config.contains("rope_scaling") && !config["rope_scaling"].is_null();
  }
  EXPECT_EQ(archs, (std::set<std::string>{"LlamaForCausalLM", "Qwen2ForCausalLM",
                                          "Qwen3ForCausalLM", "PawQwen3ForCausalLM"}));
  EXPECT_EQ(dtypes, (std::set<std::string>{"f32", "bf16", "f16"}));
  EXPECT_TRUE(sharded);
  EXPECT_TRUE(tied);
  EXPECT_TRUE(legacy_rope);
}

TEST(Fixtures, BatchEqualsIndividualRuns) {
  const std::string dir = FixturePath("qwen3_f32");
  const auto ref = ReadJson(dir + "/reference.json");
  const auto prompts = ref["prompts"].get<std::vector<std::vector<int64_t>>>();
  auto model = LoadLanguageModel(dir, {.threads = 2});
  ASSERT_TRUE(model.ok()) << model.status();
  auto engine = Engine::Create(std::move(*model), testing::NaiveComposition());
  ASSERT_TRUE(engine.ok()) << engine.status();
  GenerationOptions options;
  options.max_new_tokens = 6;
  options.ignore_eos = true;
  options.record_logits = true;
  options.sampling.temperature = 0.8;
  options.sampling.top_k = 50;
  options.sampling.seed = 11;
  auto batch = (*engine)->Generate(prompts, options);
  ASSERT_TRUE(batch.ok()) << batch.status();
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerationOptions single = options;
    // A request draws from its own seed only, never from its place in the batch.
    single.sampling.seed = options.sampling.seed;
    auto alone = (*engine)->Generate({prompts[i]}, single);
    ASSERT_TRUE(alone.ok()) << alone.status();
    EXPECT_EQ(alone->requests[0].tokens, batch->requests[i].tokens) << i;
    for (size_t s = 0; s < alone->requests[0].step_logits.size(); ++s) {
      const auto& a = alone->requests[0].step_logits[s];
      std::vector<double> b(batch->requests[i].step_logits[s].begin(),
                            batch->requests[i].step_logits[s].end());
      EXPECT_LT(RelativeError(a, b), 1e-5) << i << " step " << s;
    }
  }
}

TEST(Fixtures, OutOfRangeTokenIdsAreRejected) {
  auto model = LoadLanguageModel(FixturePath("llama3_f32"), {.threads = 1});
  ASSERT_TRUE(model.ok()) << model.status();
  const int64_t vocab = (*model)->info().vocab_size;
  auto engine = Engine::Create(std::move(*model), testing::NaiveComposition());
  ASSERT_TRUE(engine.ok());
  for (int64_t bad : {vocab, int64_t{-1}}) {
    auto r = (*engine)->Generate({{1, 2, bad}}, GenerationOptions{});
    ASSERT_FALSE(r.ok());
    const std::string m(r.status().message());
    EXPECT_NE(m.find(std::to_string(bad)), std::string::npos) << m;
    EXPECT_NE(m.find(std::to_string(vocab)), std::string::npos) << m;
  }
  PromptAttention attention;
  std::vector<int64_t> ids = {5, vocab + 7};
  SequenceChunk chunk{ids, 0};
  std::vector<float> logits;
  auto direct = LoadLanguageModel(FixturePath("llama3_f32"), {.threads = 1});
  ASSERT_TRUE(direct.ok());
  absl::Status st = (*direct)->Forward({&chunk, 1}, attention, false, &logits);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find(std::to_string(vocab + 7)), std::string::npos) << st;
}

TEST(Fixtures, MissingAndMisshapenTensorsAreNamed) {
  auto spec = LoadModelConfig(FixturePath("qwen3_f32"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  // Missing k_norm of layer 1.
  {
    auto weights = RandomWeights(*spec, 1);
    ASSERT_TRUE(weights.ok());
    auto full = std::make_unique<InMemoryWeights>();
    for (const auto& name : (*weights)->Names()) {
      if (name != "model.layers.1.self_attn.k_norm.weight") {
        full->Add(name, *(*weights)->GetF32(name, {}));
      }
    }
    auto model = CreateLanguageModel(*spec, std::move(full));
    ASSERT_FALSE(model.ok());
    EXPECT_NE(model.status().message().find("model.layers.1.self_attn.k_norm.weight"),
              std::string::npos)
        << model.status();
  }
  // v_proj of layer 0 with the shape of q_proj.
  {
    auto weights = RandomWeights(*spec, 2);
    ASSERT_TRUE(weights.ok());
    auto q = (*weights)->GetF32("model.layers.0.self_attn.q_proj.weight", {});
    ASSERT_TRUE(q.ok());
    (*weights)->Add("model.layers.0.self_attn.v_proj.weight", *q);
    auto model = CreateLanguageModel(*spec, std::move(*weights));
    ASSERT_FALSE(model.ok());
    const std::string m(model.status().message());
    EXPECT_NE(m.find("model.layers.0.self_attn.v_proj.weight"), std::string::npos) << m;
    EXPECT_NE(m.find("expected shape [48, 64], found [96, 64]"), std::string::npos) << m;
  }
}

TEST(Fixtures, UnsupportedArchitectureFolder) {
  const std::string dir = testing::TempDir("unsupported");
  auto config = ReadJson(FixturePath("llama3_f32") + "/config.json");
  config["architectures"] = {"GPT2LMHeadModel"};
  testing::WriteFile(dir + "/config.json", config.dump());
  std::filesystem::copy_file(FixturePath("llama3_f32") + "/model.safetensors",
                             dir + "/model.safetensors");
  auto model = LoadLanguageModel(dir);
  ASSERT_FALSE(model.ok());
  const std::string m(model.status().message());
  EXPECT_NE(m.find("GPT2LMHeadModel"), std::string::npos) << m;
  EXPECT_NE(m.find("config.json"), std::string::npos) << m;
}

}  // namespace
}  // namespace fluxattn::models
