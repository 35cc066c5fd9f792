// config.json parsing: shapes, RoPE in both forms (checked against the published formulas
// evaluated in double here), tied embeddings, stop tokens, and clear errors.
#include "fluxattn/models/model_config.h"

#include <gtest/gtest.h>

#include <cmath>

#include "nlohmann/json.hpp"

namespace fluxattn::models {
namespace {

using nlohmann::json;

json BaseLlama() {
  return json{{"architectures", {"LlamaForCausalLM"}},
              {"hidden_size", 64},
              {"num_hidden_layers", 2},
              {"num_attention_heads", 4},
              {"num_key_value_heads", 2},
              {"intermediate_size", 96},
              {"vocab_size", 300},
              {"rms_norm_eps", 1e-5},
              {"eos_token_id", 2},
              {"tie_word_embeddings", false}};
}

absl::StatusOr<ModelSpec> Parse(const json& j, const std::string& gen = "") {
  return ParseModelConfig(j.dump(), "dir/config.json", gen, "dir/generation_config.json");
}

std::string Error(const json& j) {
  auto spec = Parse(j);
  EXPECT_FALSE(spec.ok());
  return spec.ok() ? "" : std::string(spec.status().message());
}

TEST(ModelConfig, LlamaShapesAndDefaults) {
  auto spec = Parse(BaseLlama());
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->info.num_layers, 2);
  EXPECT_EQ(spec->info.head_dim, 16);
  EXPECT_EQ(spec->info.num_kv_heads, 2);
  EXPECT_EQ(spec->family, ModelFamily::kLlama);
  EXPECT_FALSE(spec->qkv_bias);
  EXPECT_FALSE(spec->qk_norm);
  EXPECT_EQ(spec->rope.type, "default");
  EXPECT_EQ(spec->rope.theta, 10000.0);
  EXPECT_EQ(spec->eos_token_ids, std::vector<int64_t>{2});
  EXPECT_EQ(std::get<int64_t>(spec->info.config.at("vocab_size")), 300);
}

TEST(ModelConfig, Qwen3HeadDimIndependentOfHidden) {
  json j = BaseLlama();
  j["architectures"] = {"Qwen3ForCausalLM"};
  j["head_dim"] = 24;
  auto spec = Parse(j);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->info.head_dim, 24);
  EXPECT_TRUE(spec->qk_norm);
  j["architectures"] = {"Qwen2ForCausalLM"};
  spec = Parse(j);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_TRUE(spec->qkv_bias);
  EXPECT_FALSE(spec->o_bias);
}

TEST(ModelConfig, FluxArchitecturesKeepRouterSettings) {
  json j = BaseLlama();
  j["architectures"] = {"PawQwen3ForCausalLM"};
  j["pooling_mode"] = "ctx_q";  // the only pooling implemented; required for Paw* configs
  j["sink_size"] = 128;
  j["local_window_size"] = 2048;
  auto spec = Parse(j);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_TRUE(spec->flux);
  EXPECT_EQ(spec->family, ModelFamily::kQwen3);
  EXPECT_EQ(spec->info.ConfigNumber("local_window_size").value_or(0), 2048);
}

// Llama 3.1 frequency adjustment written from its definition, in double.
std::vector<double> Llama3Reference(double theta, int dim, double factor, double low, double high,
                                    double old_len) {
  std::vector<double> out;
  for (int i = 0; i < dim / 2; ++i) {
    const double f = 1.0 / std::pow(theta, 2.0 * i / dim);
    const double wavelen = 2 * M_PI / f;
    if (wavelen < old_len / high) {
      out.push_back(f);
    } else if (wavelen > old_len / low) {
      out.push_back(f / factor);
    } else {
      const double s = (old_len / wavelen - low) / (high - low);
      out.push_back((1 - s) * f / factor + s * f);
    }
  }
  return out;
}

TEST(ModelConfig, RopeBothFormsAgree) {
  json legacy = BaseLlama();
  legacy["rope_theta"] = 500000.0;
  legacy["rope_scaling"] = {{"rope_type", "llama3"},
                            {"factor", 8.0},
                            {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0},
                            {"original_max_position_embeddings", 64}};
  json modern = BaseLlama();
  modern["rope_parameters"] = legacy["rope_scaling"];
  modern["rope_parameters"]["rope_theta"] = 500000.0;
  auto a = Parse(legacy);
  auto b = Parse(modern);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  const auto fa = RopeInverseFrequencies(a->rope, 16);
  const auto fb = RopeInverseFrequencies(b->rope, 16);
  EXPECT_EQ(fa, fb);
  const auto ref = Llama3Reference(500000.0, 16, 8.0, 1.0, 4.0, 64);
  ASSERT_EQ(fa.size(), ref.size());
  int low = 0, high = 0, medium = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    EXPECT_NEAR(fa[i], ref[i], 1e-6 * ref[i]) << i;
    const double base = 1.0 / std::pow(500000.0, 2.0 * i / 16);
    if (std::abs(ref[i] - base) < 1e-12 * base) {
      ++high;
    } else if (std::abs(ref[i] - base / 8) < 1e-12 * base) {
      ++low;
    } else {
      ++medium;
    }
  }
  // The case covers all three bands.
  EXPECT_GT(low, 0);
  EXPECT_GT(high, 0);
  EXPECT_GT(medium, 0);
  // The legacy `type` key and linear scaling.
  json linear = BaseLlama();
  linear["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  auto c = Parse(linear);
  ASSERT_TRUE(c.ok()) << c.status();
  const auto fc = RopeInverseFrequencies(c->rope, 16);
  for (int i = 0; i < 8; ++i) {
    EXPECT_NEAR(fc[i], 1.0 / std::pow(10000.0, 2.0 * i / 16) / 2, 1e-6 * fc[i]);
  }
}

TEST(ModelConfig, StopTokensFromBothFiles) {
  json j = BaseLlama();
  j["eos_token_id"] = {2, 5};
  auto spec = Parse(j, R"({"eos_token_id": [5, 9], "bos_token_id": 1})");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->eos_token_ids, (std::vector<int64_t>{2, 5, 9}));
}

TEST(ModelConfig, ClearErrors) {
  json j = BaseLlama();
  j["architectures"] = {"MistralForCausalLM"};
  std::string m = Error(j);
  EXPECT_NE(m.find("unsupported architecture"), std::string::npos) << m;
  EXPECT_NE(m.find("MistralForCausalLM"), std::string::npos) << m;
  EXPECT_NE(m.find("dir/config.json"), std::string::npos) << m;

  j = BaseLlama();
  j.erase("hidden_size");
  m = Error(j);
  EXPECT_NE(m.find("hidden_size"), std::string::npos) << m;

  j = BaseLlama();
  j["num_key_value_heads"] = 3;
  EXPECT_NE(Error(j).find("num_key_value_heads"), std::string::npos);

  j = BaseLlama();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  m = Error(j);
  EXPECT_NE(m.find("rope_scaling.rope_type"), std::string::npos) << m;
  EXPECT_NE(m.find("yarn"), std::string::npos) << m;

  j = BaseLlama();
  j["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 1e4}, {"factor", 8.0}};
  m = Error(j);
  EXPECT_NE(m.find("low_freq_factor"), std::string::npos) << m;

  j = BaseLlama();
  j["eos_token_id"] = 300;
  EXPECT_NE(Error(j).find("eos_token_id"), std::string::npos);

  m = std::string(ParseModelConfig("{not json", "x/config.json").status().message());
  EXPECT_NE(m.find("x/config.json"), std::string::npos) << m;
  EXPECT_NE(m.find("valid JSON"), std::string::npos) << m;
}

}  // namespace
}  // namespace fluxattn::models
