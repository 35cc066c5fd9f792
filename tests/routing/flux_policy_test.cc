// `flux`: logits and decisions against the naive double-precision oracle in flux_reference.h on
// fresh random routers and queries (awkward lengths included), the settings from config.json and
// parameters, the bias, and every error path.
#include "flux_policy.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "flux_reference.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "routing_test_support.h"

namespace fluxattn::routing {
namespace {

using testing::AddRouterTensors;
using ::testing::HasSubstr;
using testing::InMemoryWeights;
using testing::MakeParams;
using testing::MakePolicy;
using testing::RandomReferenceRouter;
using testing::ReferenceLogits;
using testing::ReferenceRouter;
using testing::TinyModel;

std::vector<float> RandomQueries(int64_t tokens, int heads, int head_dim, std::mt19937_64& rng) {
  std::normal_distribution<double> normal(0.0, 1.0);
  // A per-dimension offset so pooled vectors are not all near zero.
  std::vector<double> offset(head_dim);
  for (double& o : offset) o = normal(rng);
  std::vector<float> q(tokens * heads * head_dim);
  for (size_t i = 0; i < q.size(); ++i) {
    q[i] = static_cast<float>(offset[i % head_dim] + normal(rng));
  }
  return q;
}

// A model of `layers` layers with one random router per layer in `weights`.
struct Fixture {
  ModelInfo model;
  InMemoryWeights weights;
  std::vector<ReferenceRouter> routers;
  RoutingSetup setup;

  Fixture(int layers, int heads, int head_dim, int num_outputs, uint64_t seed) {
    model = TinyModel(layers, heads, head_dim);
    std::mt19937_64 rng(seed);
    for (int layer = 0; layer < layers; ++layer) {
      routers.push_back(RandomReferenceRouter(head_dim, num_outputs, rng));
      AddRouterTensors(routers.back(), layer, weights);
    }
    setup.model = &model;
    setup.weights = &weights;
  }
};

absl::StatusOr<RoutingDecision> Decide(FluxPolicy& policy, const ModelInfo& model, int layer,
                                       const std::vector<float>& queries, int64_t tokens) {
  RoutingInput input;
  input.request_id = 1;
  input.layer = layer;
  input.num_layers = model.num_layers;
  input.prompt_tokens = tokens;
  input.queries = queries.data();
  input.num_q_heads = model.num_q_heads;
  input.head_dim = model.head_dim;
  return policy.Decide(input);
}

void ExpectLogitsNear(const std::vector<float>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    // float32 rounding of the output is the only expected difference.
    EXPECT_NEAR(got[i], want[i], 1e-6 * std::max(1.0, std::abs(want[i]))) << "logit " << i;
  }
}

struct Shape {
  int heads;
  int head_dim;
  int64_t pool_size;
  std::vector<int64_t> lengths;
};

std::string ShapeName(const ::testing::TestParamInfo<Shape>& info) {
  return absl::StrCat("H", info.param.heads, "_D", info.param.head_dim, "_P", info.param.pool_size);
}

class FluxAgainstReferenceTest : public ::testing::TestWithParam<Shape> {};

TEST_P(FluxAgainstReferenceTest, SoftmaxAndSigmoidMatchOracle) {
  const Shape shape = GetParam();
  for (int num_outputs : {2, 1}) {
    Fixture fx(3, shape.heads, shape.head_dim, num_outputs, 1000 + shape.head_dim + num_outputs);
    fx.model.config["pool_size"] = shape.pool_size;
    fx.model.config["use_softmax"] = num_outputs == 2;
    fx.model.config["pooling_mode"] = std::string("ctx_q");
    auto policy = MakePolicy<FluxPolicy>({}, fx.setup);
    ASSERT_TRUE(policy.ok()) << policy.status();
    EXPECT_TRUE((*policy)->NeedsQueries());
    EXPECT_EQ((*policy)->pool_size(), shape.pool_size);
    EXPECT_EQ((*policy)->use_softmax(), num_outputs == 2);
    std::mt19937_64 rng(shape.pool_size * 31 + num_outputs);
    for (int64_t tokens : shape.lengths) {
      for (int layer = 0; layer < 3; ++layer) {
        const std::vector<float> q = RandomQueries(tokens, shape.heads, shape.head_dim, rng);
        const std::vector<double> want = ReferenceLogits(fx.routers[layer], q, tokens, shape.heads,
                                                         shape.head_dim, shape.pool_size);
        absl::StatusOr<RoutingDecision> got = Decide(**policy, fx.model, layer, q, tokens);
        ASSERT_TRUE(got.ok()) << got.status();
        SCOPED_TRACE(absl::StrCat("T=", tokens, " layer=", layer, " outputs=", num_outputs));
        ExpectLogitsNear(got->logits, want);
        const double margin = num_outputs == 2 ? want[1] - want[0] : want[0];
        if (std::abs(margin) > 1e-9) {
          EXPECT_EQ(got->choice, margin > 0 ? AttentionChoice::kFull : AttentionChoice::kSparse);
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, FluxAgainstReferenceTest,
    ::testing::Values(Shape{4, 8, 3, {1, 2, 3, 5, 6, 7, 40}},          // T = 1, T < 2P, T = 2P
                      Shape{2, 16, 100, {1, 50, 199, 200, 201, 450}},  // published pool size
                      Shape{1, 4, 1, {1, 2, 9}},                       // single head, P = 1
                      Shape{8, 32, 7, {13, 14, 15, 64}}),
    ShapeName);

// The networks offered to an engine (RoutingSetup::offer_network), run in double the way
// RouterNetwork documents them, give the oracle's logits; handed back as network_outputs they
// give Decide's logits and choice.
TEST(FluxPolicyTest, OfferedNetworksAreTheRouter) {
  const int layers = 3, heads = 4, head_dim = 16;
  for (int num_outputs : {2, 1}) {
    Fixture fx(layers, heads, head_dim, num_outputs, 77 + num_outputs);
    fx.model.config["pool_size"] = int64_t{5};
    fx.model.config["use_softmax"] = num_outputs == 2;
    struct Captured {
      int64_t pool_size = 0;
      std::vector<std::vector<float>> w, b;
      std::vector<bool> silu;
    };
    std::map<int, Captured> offered;
    fx.setup.offer_network = [&](const RouterNetwork& net) -> absl::Status {
      Captured& c = offered[net.layer];
      c.pool_size = net.pool_size;
      for (const RouterLinear& l : net.linears) {
        c.w.emplace_back(l.weight, l.weight + l.in * l.out);
        c.b.emplace_back(l.bias, l.bias + l.out);
        c.silu.push_back(l.silu);
      }
      return absl::OkStatus();
    };
    auto policy = MakePolicy<FluxPolicy>({}, fx.setup);
    ASSERT_TRUE(policy.ok()) << policy.status();
    ASSERT_EQ(offered.size(), static_cast<size_t>(layers));
    std::mt19937_64 rng(900 + num_outputs);
    for (int64_t tokens : {1, 7, 10, 23}) {
      for (int layer = 0; layer < layers; ++layer) {
        const Captured& c = offered[layer];
        ASSERT_EQ(c.pool_size, 5);
        const std::vector<float> q = RandomQueries(tokens, heads, head_dim, rng);
        // Pooling as RouterNetwork states it.
        const int64_t n = std::min<int64_t>(c.pool_size, tokens);
        std::vector<double> x(head_dim, 0.0);
        for (int64_t t = 0; t < tokens; ++t) {
          const int times = (t < n ? 1 : 0) + (t >= tokens - n ? 1 : 0);
          for (int h = 0; h < heads; ++h) {
            for (int j = 0; j < head_dim; ++j) x[j] += times * q[(t * heads + h) * head_dim + j];
          }
        }
        for (double& v : x) v /= 2.0 * n * heads;
        for (size_t l = 0; l < c.w.size(); ++l) {
          std::vector<double> y(c.b[l].size());
          for (size_t o = 0; o < y.size(); ++o) {
            double acc = c.b[l][o];
            for (size_t i = 0; i < x.size(); ++i) acc += double{c.w[l][o * x.size() + i]} * x[i];
            y[o] = c.silu[l] ? acc / (1.0 + std::exp(-acc)) : acc;
          }
          x = std::move(y);
        }
        SCOPED_TRACE(absl::StrCat("T=", tokens, " layer=", layer, " outputs=", num_outputs));
        const std::vector<double> want =
            ReferenceLogits(fx.routers[layer], q, tokens, heads, head_dim, 5);
        ASSERT_EQ(x.size(), want.size());
        for (size_t i = 0; i < x.size(); ++i) {
          EXPECT_NEAR(x[i], want[i], 1e-9 * std::max(1.0, std::abs(want[i])));
        }
        const std::vector<float> outputs(x.begin(), x.end());
        RoutingInput input;
        input.layer = layer;
        input.num_layers = layers;
        input.prompt_tokens = tokens;
        input.network_outputs = outputs.data();
        input.num_network_outputs = static_cast<int64_t>(outputs.size());
        absl::StatusOr<RoutingDecision> from_network = (*policy)->Decide(input);
        absl::StatusOr<RoutingDecision> from_queries = Decide(**policy, fx.model, layer, q, tokens);
        ASSERT_TRUE(from_network.ok()) << from_network.status();
        ASSERT_TRUE(from_queries.ok()) << from_queries.status();
        EXPECT_EQ(from_network->logits, outputs);
        ExpectLogitsNear(from_queries->logits, x);
        const double margin = num_outputs == 2 ? want[1] - want[0] : want[0];
        if (std::abs(margin) > 1e-6) {
          EXPECT_EQ(from_network->choice, from_queries->choice);
          EXPECT_EQ(from_network->choice,
                    margin > 0 ? AttentionChoice::kFull : AttentionChoice::kSparse);
        }
        // A count that is not the router's is refused, naming the field.
        input.num_network_outputs = num_outputs + 1;
        absl::StatusOr<RoutingDecision> wrong = (*policy)->Decide(input);
        ASSERT_FALSE(wrong.ok());
        EXPECT_THAT(std::string(wrong.status().message()), HasSubstr("network_outputs"));
      }
    }
  }
}

TEST(FluxPolicyTest, DecisionsAreMixedOnRandomRouters) {
  // Guards the oracle comparison against a rule that is never exercised: over many random
  // routers both decisions must occur, for both variants.
  for (int num_outputs : {2, 1}) {
    int full = 0;
    constexpr int kTrials = 40;
    for (int trial = 0; trial < kTrials; ++trial) {
      Fixture fx(1, 2, 8, num_outputs, 77 + trial * 3 + num_outputs);
      fx.model.config["use_softmax"] = num_outputs == 2;
      auto policy = MakePolicy<FluxPolicy>({{"pool_size", int64_t{4}}}, fx.setup);
      ASSERT_TRUE(policy.ok()) << policy.status();
      std::mt19937_64 rng(trial);
      const std::vector<float> q = RandomQueries(10, 2, 8, rng);
      full += Decide(**policy, fx.model, 0, q, 10)->choice == AttentionChoice::kFull;
    }
    EXPECT_GT(full, 0) << num_outputs;
    EXPECT_LT(full, kTrials) << num_outputs;
  }
}

TEST(FluxPolicyTest, OnlyFirstAndLastPoolRowsMatter) {
  Fixture fx(1, 2, 8, 2, 5);
  auto policy = MakePolicy<FluxPolicy>({{"pool_size", int64_t{3}}}, fx.setup);
  ASSERT_TRUE(policy.ok()) << policy.status();
  std::mt19937_64 rng(9);
  std::vector<float> q = RandomQueries(10, 2, 8, rng);
  const std::vector<float> base = Decide(**policy, fx.model, 0, q, 10)->logits;
  // Rows 3..6 are outside the first 3 and the last 3.
  for (int64_t row = 3; row <= 6; ++row) {
    std::vector<float> changed = q;
    for (int i = 0; i < 16; ++i) changed[row * 16 + i] += 5.0f;
    EXPECT_EQ(Decide(**policy, fx.model, 0, changed, 10)->logits, base) << row;
  }
  for (int64_t row : {0, 2, 7, 9}) {
    std::vector<float> changed = q;
    for (int i = 0; i < 16; ++i) changed[row * 16 + i] += 5.0f;
    EXPECT_NE(Decide(**policy, fx.model, 0, changed, 10)->logits, base) << row;
  }
}

TEST(FluxPolicyTest, BiasShiftsTheMargin) {
  for (int num_outputs : {2, 1}) {
    Fixture fx(2, 4, 8, num_outputs, 300 + num_outputs);
    fx.model.config["use_softmax"] = num_outputs == 2;
    std::mt19937_64 rng(4);
    for (int layer = 0; layer < 2; ++layer) {
      const std::vector<float> q = RandomQueries(33, 4, 8, rng);
      const std::vector<double> want = ReferenceLogits(fx.routers[layer], q, 33, 4, 8, 5);
      const double margin = num_outputs == 2 ? want[1] - want[0] : want[0];
      for (double delta : {-1e-3, 1e-3}) {
        auto policy = MakePolicy<FluxPolicy>({{"pool_size", int64_t{5}}, {"bias", -margin + delta}},
                                             fx.setup);
        ASSERT_TRUE(policy.ok()) << policy.status();
        absl::StatusOr<RoutingDecision> got = Decide(**policy, fx.model, layer, q, 33);
        ASSERT_TRUE(got.ok()) << got.status();
        EXPECT_EQ(got->choice, delta > 0 ? AttentionChoice::kFull : AttentionChoice::kSparse)
            << "margin " << margin << " delta " << delta;
        // The reported logits are the router's own, without the bias.
        ExpectLogitsNear(got->logits, want);
      }
    }
    // Large biases force one answer everywhere.
    for (double bias : {-1e4, 1e4}) {
      auto policy = MakePolicy<FluxPolicy>({{"bias", bias}}, fx.setup);
      ASSERT_TRUE(policy.ok()) << policy.status();
      for (int layer = 0; layer < 2; ++layer) {
        const std::vector<float> q = RandomQueries(20, 4, 8, rng);
        EXPECT_EQ(Decide(**policy, fx.model, layer, q, 20)->choice,
                  bias > 0 ? AttentionChoice::kFull : AttentionChoice::kSparse);
      }
    }
  }
}

TEST(FluxPolicyTest, SettingsComeFromConfigUnlessGiven) {
  Fixture fx(1, 2, 8, 1, 8);
  // Defaults of the reference implementation when config.json says nothing.
  {
    Fixture plain(1, 2, 8, 2, 8);
    auto policy = MakePolicy<FluxPolicy>({}, plain.setup);
    ASSERT_TRUE(policy.ok()) << policy.status();
    EXPECT_EQ((*policy)->pool_size(), 100);
    EXPECT_TRUE((*policy)->use_softmax());
  }
  fx.model.config["pool_size"] = int64_t{12};
  fx.model.config["use_softmax"] = false;
  auto from_config = MakePolicy<FluxPolicy>({}, fx.setup);
  ASSERT_TRUE(from_config.ok()) << from_config.status();
  EXPECT_EQ((*from_config)->pool_size(), 12);
  EXPECT_FALSE((*from_config)->use_softmax());
  // A number written as 12.0 in config.json is still an integer.
  fx.model.config["pool_size"] = 12.0;
  from_config = MakePolicy<FluxPolicy>({}, fx.setup);
  ASSERT_TRUE(from_config.ok()) << from_config.status();
  EXPECT_EQ((*from_config)->pool_size(), 12);

  auto overridden = MakePolicy<FluxPolicy>({{"pool_size", int64_t{2}}}, fx.setup);
  ASSERT_TRUE(overridden.ok()) << overridden.status();
  EXPECT_EQ((*overridden)->pool_size(), 2);

  // Overriding use_softmax to true needs two-logit weights: the error names the tensor.
  auto wrong_variant = MakePolicy<FluxPolicy>({{"use_softmax", true}}, fx.setup);
  ASSERT_FALSE(wrong_variant.ok());
  const std::string message(wrong_variant.status().message());
  EXPECT_THAT(message, HasSubstr("cls_router_head_agnostic.4.weight"));
  EXPECT_THAT(message, HasSubstr("[2, 8]"));
  EXPECT_THAT(message, HasSubstr("[1, 8]"));
}

void ExpectPrepareError(Fixture& fx, const std::map<std::string, ParamValue>& given,
                        const std::vector<std::string>& fragments) {
  auto policy = MakePolicy<FluxPolicy>(given, fx.setup);
  ASSERT_FALSE(policy.ok());
  const std::string message(policy.status().message());
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  for (const std::string& fragment : fragments) EXPECT_THAT(message, HasSubstr(fragment));
}

TEST(FluxPolicyTest, RefusesUnsupportedConfig) {
  Fixture fx(2, 2, 8, 2, 11);
  fx.model.config["pooling_mode"] = std::string("mean");
  ExpectPrepareError(fx, {}, {"config.json pooling_mode", "\"ctx_q\"", "found \"mean\""});
  // An explicit parameter overrides what config.json says.
  EXPECT_TRUE(MakePolicy<FluxPolicy>({{"pooling_mode", std::string("ctx_q")}}, fx.setup).ok());
  fx.model.config["pooling_mode"] = std::string("ctx_q");

  fx.model.config["pool_size"] = 2.5;
  ExpectPrepareError(fx, {}, {"config.json pool_size", "a positive integer", "found 2.5"});
  fx.model.config["pool_size"] = int64_t{0};
  ExpectPrepareError(fx, {}, {"config.json pool_size", "found 0"});
  fx.model.config["pool_size"] = std::string("many");
  ExpectPrepareError(fx, {}, {"config.json pool_size", "found \"many\""});
  fx.model.config.erase("pool_size");

  fx.model.config["use_softmax"] = int64_t{1};
  ExpectPrepareError(fx, {}, {"config.json use_softmax", "true or false", "found 1"});
}

TEST(FluxPolicyTest, MissingOrMisshapenTensorsAreNamed) {
  {
    Fixture fx(3, 2, 8, 2, 12);
    fx.weights.Remove("model.layers.2.self_attn.mask_allocator.cls_feat_extractor.2.bias");
    ExpectPrepareError(
        fx, {},
        {"model.layers.2.self_attn.mask_allocator.cls_feat_extractor.2.bias", "no such tensor"});
  }
  {
    Fixture fx(2, 2, 8, 2, 13);
    fx.weights.Add("model.layers.1.self_attn.mask_allocator.cls_router_head_agnostic.0.weight",
                   {32, 15}, std::vector<float>(32 * 15, 0.0f));
    ExpectPrepareError(fx, {},
                       {"model.layers.1.self_attn.mask_allocator.cls_router_head_agnostic.0."
                        "weight",
                        "[32, 16]", "[32, 15]"});
  }
  {
    // Weights made for head_dim 8 on a model with head_dim 16.
    Fixture fx(1, 2, 8, 2, 14);
    fx.model.head_dim = 16;
    ExpectPrepareError(fx, {}, {"cls_feat_extractor.0.weight", "[128, 16]", "[64, 8]"});
  }
  {
    Fixture fx(1, 2, 8, 2, 15);
    fx.setup.weights = nullptr;
    ExpectPrepareError(fx, {}, {"flux: weights", "no tensors"});
  }
}

TEST(FluxPolicyTest, ReadsSeparateWeightsFile) {
  Fixture fx(2, 2, 8, 2, 16);
  // The checkpoint itself has no router tensors; a separate file does.
  InMemoryWeights empty;
  fx.setup.weights = &empty;
  std::vector<std::string> opened;
  fx.setup.open_weights =
      [&](const std::string& path) -> absl::StatusOr<std::unique_ptr<WeightSource>> {
    opened.push_back(path);
    if (path != "router.safetensors") {
      return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    }
    auto copy = std::make_unique<InMemoryWeights>();
    for (int layer = 0; layer < 2; ++layer) AddRouterTensors(fx.routers[layer], layer, *copy);
    return std::unique_ptr<WeightSource>(std::move(copy));
  };
  ExpectPrepareError(fx, {}, {"cls_feat_extractor.0.weight", "no such tensor"});

  auto policy = MakePolicy<FluxPolicy>(
      {{"weights", std::string("router.safetensors")}, {"pool_size", int64_t{2}}}, fx.setup);
  ASSERT_TRUE(policy.ok()) << policy.status();
  EXPECT_EQ(opened, std::vector<std::string>{"router.safetensors"});
  // The file is closed after Prepare; the routers still answer like the oracle.
  std::mt19937_64 rng(3);
  for (int layer = 0; layer < 2; ++layer) {
    const std::vector<float> q = RandomQueries(6, 2, 8, rng);
    ExpectLogitsNear(Decide(**policy, fx.model, layer, q, 6)->logits,
                     ReferenceLogits(fx.routers[layer], q, 6, 2, 8, 2));
  }

  ExpectPrepareError(fx, {{"weights", std::string("other.safetensors")}},
                     {"flux: weights = \"other.safetensors\"", "no such file"});
  fx.setup.open_weights = nullptr;
  ExpectPrepareError(fx, {{"weights", std::string("router.safetensors")}}, {"flux: weights"});
}

TEST(FluxPolicyTest, RejectsBadInputs) {
  Fixture fx(2, 4, 8, 2, 17);
  auto policy = MakePolicy<FluxPolicy>({}, fx.setup);
  ASSERT_TRUE(policy.ok()) << policy.status();
  std::mt19937_64 rng(1);
  const std::vector<float> q = RandomQueries(4, 4, 8, rng);

  absl::StatusOr<RoutingDecision> got = Decide(**policy, fx.model, 2, q, 4);
  ASSERT_FALSE(got.ok());
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("flux: layer"));

  got = Decide(**policy, fx.model, 0, q, 0);
  ASSERT_FALSE(got.ok());
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("prompt_tokens"));

  RoutingInput input;
  input.layer = 0;
  input.prompt_tokens = 4;
  input.num_q_heads = 4;
  input.head_dim = 8;
  got = (*policy)->Decide(input);
  ASSERT_FALSE(got.ok());
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("flux: queries"));

  input.queries = q.data();
  input.num_q_heads = 2;
  input.head_dim = 16;
  got = (*policy)->Decide(input);
  ASSERT_FALSE(got.ok());
  EXPECT_THAT(std::string(got.status().message()),
              HasSubstr("expected [T, 4, 8], found [T, 2, 16]"));
}

TEST(FluxPolicyTest, ParamSpecsAreDocumented) {
  for (const ParamSpec& spec : FluxPolicy::Params()) {
    EXPECT_FALSE(spec.description.empty()) << spec.name;
    EXPECT_TRUE(spec.default_value.has_value()) << spec.name;
  }
}

}  // namespace
}  // namespace fluxattn::routing
