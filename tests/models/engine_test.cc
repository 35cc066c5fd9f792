// The engine's routing, KV retention, fallback, overrides and sampling, on random-weight models.
#include "fluxattn/engine.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "fluxattn/models/decoder_model.h"
#include "fluxattn/status.h"
#include "test_support.h"

namespace fluxattn {
namespace {

using testing::NaiveAttention;
using testing::Own;

models::ModelSpec SmallSpec(models::ModelFamily family = models::ModelFamily::kLlama) {
  models::ModelSpec spec;
  spec.family = family;
  spec.info.architecture = "LlamaForCausalLM";
  spec.info.num_layers = 3;
  spec.info.hidden_size = 32;
  spec.info.num_q_heads = 4;
  spec.info.num_kv_heads = 2;
  spec.info.head_dim = 8;
  spec.info.vocab_size = 97;
  spec.intermediate_size = 40;
  spec.rms_norm_eps = 1e-5;
  spec.eos_token_ids = {3};
  spec.qk_norm = family == models::ModelFamily::kQwen3;
  return spec;
}

std::unique_ptr<LanguageModel> SmallModel(uint64_t seed = 5, models::ModelSpec spec = SmallSpec()) {
  auto weights = models::RandomWeights(spec, seed);
  FLUXATTN_CHECK(weights.ok());
  auto model = models::CreateLanguageModel(spec, std::move(*weights), {.threads = 2});
  FLUXATTN_CHECK(model.ok());
  return std::move(*model);
}

// Sparse for layers whose index has the parity of the prompt length; records what it saw.
class ParityPolicy : public RoutingPolicy {
 public:
  absl::Status Prepare(const RoutingSetup& setup) override {
    prepared = setup.model != nullptr && setup.weights != nullptr;
    return absl::OkStatus();
  }
  bool NeedsQueries() const override { return true; }
  absl::StatusOr<RoutingDecision> Decide(const RoutingInput& in) override {
    ++calls[{in.request_id, in.layer}];
    queries_seen += in.queries != nullptr;
    if (in.layer == 0)
      first_queries.assign(in.queries,
                           in.queries + in.prompt_tokens * in.num_q_heads * in.head_dim);
    const bool sparse = (in.layer % 2) == (in.prompt_tokens % 2);
    return RoutingDecision{sparse ? AttentionChoice::kSparse : AttentionChoice::kFull,
                           {static_cast<float>(in.layer), -1.0f}};
  }
  bool prepared = false;
  int queries_seen = 0;
  std::map<std::pair<uint64_t, int>, int> calls;
  std::vector<float> first_queries;
};

Composition RoutedComposition(ParityPolicy** policy, NaiveAttention** sparse) {
  Composition c;
  c.backends["full"] = Own(new NaiveAttention());
  auto* s = new NaiveAttention(/*sink=*/2, /*window=*/4);
  c.backends["stream"] = Own(s);
  auto* p = new ParityPolicy();
  c.router = Own(p);
  c.full_backend = "full";
  c.sparse_backend = "stream";
  if (policy) *policy = p;
  if (sparse) *sparse = s;
  return c;
}

std::vector<int64_t> Prompt(int n, int offset = 0) {
  std::vector<int64_t> ids;
  for (int i = 0; i < n; ++i) ids.push_back(10 + (i * 7 + offset) % 80);
  return ids;
}

TEST(Engine, RoutesOncePerRequestAndLayerWithMixedDecisions) {
  ParityPolicy* policy;
  EngineOptions engine_options;
  engine_options.kv_page_tokens = 4;  // small pages so that streaming layers can free some
  auto engine = Engine::Create(SmallModel(), RoutedComposition(&policy, nullptr), engine_options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_TRUE(policy->prepared);
  GenerationOptions options;
  options.max_new_tokens = 5;
  options.ignore_eos = true;
  options.record_logits = true;
  // Lengths 12 (even) and 11 (odd): opposite decisions per layer within one batch.
  auto result = (*engine)->Generate({Prompt(12), Prompt(11, 3)}, options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(policy->calls.size(), 6u);
  for (const auto& [key, count] : policy->calls) EXPECT_EQ(count, 1);
  EXPECT_EQ(policy->queries_seen, 6);
  for (int r = 0; r < 2; ++r) {
    const RequestTrace& t = result->requests[r].trace;
    ASSERT_EQ(t.layers.size(), 3u);
    int sparse = 0;
    for (const auto& L : t.layers) {
      const bool expect_sparse = (L.layer % 2) == (t.prompt_tokens % 2);
      EXPECT_EQ(L.backend, expect_sparse ? "stream" : "full");
      EXPECT_EQ(L.choice, expect_sparse ? AttentionChoice::kSparse : AttentionChoice::kFull);
      EXPECT_EQ(L.logits, (std::vector<float>{static_cast<float>(L.layer), -1.0f}));
      EXPECT_EQ(L.decided_by, "router");
      sparse += expect_sparse;
    }
    EXPECT_DOUBLE_EQ(t.sa_ratio, sparse / 3.0);
    // Streaming layers dropped KV outside sink + window.
    EXPECT_LT(t.kv_bytes, t.kv_bytes_full_cache);
  }
  // Each request equals the same request run alone (decisions depend on the prompt only).
  for (int r = 0; r < 2; ++r) {
    auto alone = (*engine)->Generate({r == 0 ? Prompt(12) : Prompt(11, 3)}, options);
    ASSERT_TRUE(alone.ok());
    EXPECT_EQ(alone->requests[0].tokens, result->requests[r].tokens);
    std::vector<double> ref(result->requests[r].step_logits.back().begin(),
                            result->requests[r].step_logits.back().end());
    EXPECT_LT(testing::RelativeError(alone->requests[0].step_logits.back(), ref), 1e-5);
  }
}

TEST(Engine, RouterGetsPreRopeQueries) {
  // Layer 0 queries from the weights, computed here in double: RMSNorm(embedding) Wq^T.
  const auto spec = SmallSpec();
  auto weights = models::RandomWeights(spec, 9);
  ASSERT_TRUE(weights.ok());
  const Tensor embed = *(*weights)->GetF32("model.embed_tokens.weight", {});
  const Tensor norm = *(*weights)->GetF32("model.layers.0.input_layernorm.weight", {});
  const Tensor wq = *(*weights)->GetF32("model.layers.0.self_attn.q_proj.weight", {});
  auto model = models::CreateLanguageModel(spec, std::move(*weights), {.threads = 1});
  ASSERT_TRUE(model.ok());
  ParityPolicy* policy;
  auto engine = Engine::Create(std::move(*model), RoutedComposition(&policy, nullptr));
  ASSERT_TRUE(engine.ok());
  const auto prompt = Prompt(5);
  GenerationOptions options;
  options.max_new_tokens = 1;
  ASSERT_TRUE((*engine)->Generate({prompt}, options).ok());
  const int h = spec.info.hidden_size, qd = spec.info.num_q_heads * spec.info.head_dim;
  ASSERT_EQ(policy->first_queries.size(), prompt.size() * qd);
  for (size_t t = 0; t < prompt.size(); ++t) {
    const float* x = embed.data<float>() + prompt[t] * h;
    double ss = 0;
    for (int i = 0; i < h; ++i) ss += double{x[i]} * x[i];
    const double inv = 1.0 / std::sqrt(ss / h + spec.rms_norm_eps);
    for (int o = 0; o < qd; ++o) {
      double acc = 0;
      for (int i = 0; i < h; ++i) {
        acc += x[i] * inv * norm.data<float>()[i] * wq.data<float>()[o * h + i];
      }
      EXPECT_NEAR(policy->first_queries[t * qd + o], acc, 1e-5 * (1 + std::abs(acc)));
    }
  }
}

TEST(Engine, OverridesAndCapabilityFallback) {
  Composition c;
  c.backends["full"] = Own(new NaiveAttention());
  auto* gpu_only = new NaiveAttention(2, 4);
  gpu_only->caps_.devices = {DeviceType::kCuda};
  c.backends["gpu"] = Own(gpu_only);
  c.backends["stream"] = Own(new NaiveAttention(2, 4));
  c.full_backend = "full";
  c.sparse_backend = "gpu";
  c.layer_backends[2] = "stream";
  ParityPolicy* policy = new ParityPolicy();
  c.router = Own(policy);
  auto engine = Engine::Create(SmallModel(), std::move(c));
  ASSERT_TRUE(engine.ok()) << engine.status();
  GenerationOptions options;
  options.max_new_tokens = 2;
  auto result = (*engine)->Generate({Prompt(9)}, options);  // odd: layers 1 sparse
  ASSERT_TRUE(result.ok()) << result.status();
  const auto& layers = result->requests[0].trace.layers;
  EXPECT_EQ(layers[0].backend, "full");
  EXPECT_EQ(layers[1].backend, "full");  // sparse was chosen, but "gpu" cannot run on the cpu
  EXPECT_NE(layers[1].fallback.find("gpu"), std::string::npos) << layers[1].fallback;
  EXPECT_EQ(layers[2].backend, "stream");
  EXPECT_EQ(layers[2].decided_by, "override");
  EXPECT_EQ(gpu_only->calls, 0);
}

TEST(Engine, AllFullWithoutRouterEqualsFullRouterChoice) {
  Composition plain = testing::NaiveComposition();
  auto a = Engine::Create(SmallModel(4), std::move(plain));
  ASSERT_TRUE(a.ok());
  GenerationOptions options;
  options.max_new_tokens = 4;
  options.ignore_eos = true;
  auto ra = (*a)->Generate({Prompt(6)}, options);
  ASSERT_TRUE(ra.ok());
  EXPECT_EQ(ra->requests[0].trace.kv_bytes, ra->requests[0].trace.kv_bytes_full_cache);
  EXPECT_EQ(ra->requests[0].tokens.size(), 4u);
  EXPECT_EQ(ra->timing.prefill_tokens, 6);
  EXPECT_EQ(ra->timing.decode_tokens, 3);
}

TEST(Engine, StopTokensAndLimits) {
  auto engine = Engine::Create(SmallModel(), testing::NaiveComposition());
  ASSERT_TRUE(engine.ok());
  GenerationOptions options;
  options.max_new_tokens = 6;
  options.ignore_eos = true;
  auto free_run = (*engine)->Generate({Prompt(4)}, options);
  ASSERT_TRUE(free_run.ok());
  const auto& tokens = free_run->requests[0].tokens;
  ASSERT_EQ(tokens.size(), 6u);
  options.stop_tokens = {tokens[2]};
  auto stopped = (*engine)->Generate({Prompt(4)}, options);
  ASSERT_TRUE(stopped.ok());
  const auto& s = stopped->requests[0];
  EXPECT_EQ(s.finish_reason, "stop");
  // Stops at the first occurrence of that token.
  size_t first = 0;
  while (tokens[first] != tokens[2]) ++first;
  EXPECT_EQ(s.tokens, std::vector<int64_t>(tokens.begin(), tokens.begin() + first + 1));
  options.stop_tokens.clear();
  options.max_new_tokens = 0;
  auto none = (*engine)->Generate({Prompt(4)}, options);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->requests[0].tokens.empty());
  options.max_new_tokens = 3;
  options.sampling.top_p = 0;
  EXPECT_FALSE((*engine)->Generate({Prompt(4)}, options).ok());
  options.sampling.top_p = 1;
  EXPECT_FALSE((*engine)->Generate({{}}, options).ok());
}

TEST(Engine, SeededSamplingIsReproducible) {
  auto engine = Engine::Create(SmallModel(), testing::NaiveComposition());
  ASSERT_TRUE(engine.ok());
  GenerationOptions options;
  options.max_new_tokens = 12;
  options.ignore_eos = true;
  options.sampling.temperature = 1.5;
  options.sampling.seed = 42;
  auto a = (*engine)->Generate({Prompt(5)}, options);
  auto b = (*engine)->Generate({Prompt(5)}, options);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->requests[0].tokens, b->requests[0].tokens);
  int differing = 0;
  for (uint64_t seed = 43; seed < 48; ++seed) {
    options.sampling.seed = seed;
    auto c = (*engine)->Generate({Prompt(5)}, options);
    ASSERT_TRUE(c.ok());
    differing += c->requests[0].tokens != a->requests[0].tokens;
  }
  EXPECT_GT(differing, 0);
}

// Sampling frequencies against the filtered softmax computed here.
TEST(Sampling, MatchesFilteredSoftmax) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 0.5f, 2.5f, -1.0f};
  auto expected = [&](double temperature, int top_k, double top_p) {
    std::vector<int> order = {1, 4, 2, 0, 3, 5};  // descending
    if (top_k > 0) order.resize(top_k);
    std::vector<double> p;
    double total = 0;
    for (int i : order) total += std::exp(logits[i] / temperature);
    double cum = 0;
    std::vector<int> kept;
    for (int i : order) {
      kept.push_back(i);
      cum += std::exp(logits[i] / temperature) / total;
      if (cum >= top_p) break;
    }
    std::vector<double> probs(logits.size(), 0.0);
    double kept_total = 0;
    for (int i : kept) kept_total += std::exp(logits[i] / temperature);
    for (int i : kept) probs[i] = std::exp(logits[i] / temperature) / kept_total;
    return probs;
  };
  struct Case {
    double t;
    int k;
    double p;
  };
  for (Case c : {Case{1.0, 0, 1.0}, Case{0.7, 3, 1.0}, Case{1.3, 0, 0.8}, Case{1.0, 4, 0.6}}) {
    SamplingOptions o{c.t, c.k, c.p, 0};
    std::mt19937_64 rng(123);
    const int draws = 40000;
    std::vector<int> counts(logits.size(), 0);
    for (int i = 0; i < draws; ++i) ++counts[SampleToken(logits, o, rng)];
    const auto probs = expected(c.t, c.k, c.p);
    for (size_t i = 0; i < logits.size(); ++i) {
      const double f = static_cast<double>(counts[i]) / draws;
      const double sigma = std::sqrt(probs[i] * (1 - probs[i]) / draws);
      EXPECT_NEAR(f, probs[i], 5 * sigma + 1e-9) << "token " << i << " t=" << c.t;
    }
  }
  std::mt19937_64 rng(1);
  EXPECT_EQ(SampleToken(logits, SamplingOptions{}, rng), 1);  // greedy
}

TEST(Engine, ConfigurationErrors) {
  Composition none;
  EXPECT_FALSE(Engine::Create(SmallModel(), std::move(none)).ok());
  Composition bad_layer = testing::NaiveComposition();
  bad_layer.layer_backends[7] = "full";
  auto e = Engine::Create(SmallModel(), std::move(bad_layer));
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("layers.7"), std::string::npos) << e.status();
}

TEST(DefaultConfig, FluxCheckpointsUseRouterAndStreaming) {
  ModelInfo info;
  info.architecture = "PawQwen3ForCausalLM";
  info.config["sink_size"] = int64_t{64};
  info.config["local_window_size"] = int64_t{1024};
  EngineConfig c = DefaultEngineConfig(info);
  EXPECT_EQ(c.router.plugin, "flux");
  EXPECT_EQ(c.router_full, "full");
  EXPECT_EQ(c.router_sparse, "sparse");
  ASSERT_EQ(c.backends.count("sparse"), 1u);
  EXPECT_EQ(c.backends["sparse"].plugin, "streaming");
  EXPECT_EQ(std::get<int64_t>(c.backends["sparse"].raw_params["sink_tokens"].value), 64);
  EXPECT_EQ(std::get<int64_t>(c.backends["sparse"].raw_params["window_tokens"].value), 1024);
  EXPECT_EQ(std::get<int64_t>(c.backends["sparse"].raw_params["block_size"].value), 128);
  info.architecture = "Qwen3ForCausalLM";
  c = DefaultEngineConfig(info);
  EXPECT_TRUE(c.router.plugin.empty());
  EXPECT_EQ(c.backends.size(), 1u);
}

}  // namespace
}  // namespace fluxattn
