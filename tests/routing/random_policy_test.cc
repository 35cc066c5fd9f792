// `random`: reproducible per (seed, request, layer), independent of call order, close to the
// requested ratio, and exact in exact mode.
#include "random_policy.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "routing_test_support.h"

namespace fluxattn::routing {
namespace {

using ::testing::HasSubstr;
using testing::MakePolicy;
using testing::TinyModel;

class RandomPolicyTest : public ::testing::Test {
 protected:
  std::unique_ptr<RandomPolicy> Make(const std::map<std::string, ParamValue>& given,
                                     int num_layers) {
    model_ = TinyModel(num_layers);
    RoutingSetup setup;
    setup.model = &model_;
    auto policy = MakePolicy<RandomPolicy>(given, setup);
    EXPECT_TRUE(policy.ok()) << policy.status();
    return policy.ok() ? std::move(*policy) : nullptr;
  }
  static bool Full(RandomPolicy& policy, uint64_t request, int layer) {
    RoutingInput input;
    input.request_seed = request;
    input.layer = layer;
    input.prompt_tokens = 10;
    absl::StatusOr<RoutingDecision> decision = policy.Decide(input);
    EXPECT_TRUE(decision.ok()) << decision.status();
    return decision.ok() && decision->choice == AttentionChoice::kFull;
  }
  ModelInfo model_;
};

TEST_F(RandomPolicyTest, SameSeedSameDecisionsInAnyOrder) {
  constexpr int kLayers = 12;
  auto a = Make({{"seed", int64_t{42}}, {"full_ratio", 0.3}}, kLayers);
  auto b = Make({{"seed", int64_t{42}}, {"full_ratio", 0.3}}, kLayers);
  std::map<std::pair<uint64_t, int>, bool> forward;
  for (uint64_t request = 0; request < 20; ++request) {
    for (int layer = 0; layer < kLayers; ++layer) {
      forward[{request, layer}] = Full(*a, request, layer);
    }
  }
  // Another instance, asked in reverse order and twice, answers the same.
  for (int pass = 0; pass < 2; ++pass) {
    for (int64_t request = 19; request >= 0; --request) {
      for (int layer = kLayers - 1; layer >= 0; --layer) {
        EXPECT_EQ(Full(*b, request, layer), (forward[{request, layer}]));
      }
    }
  }
}

TEST_F(RandomPolicyTest, DifferentSeedsDiffer) {
  constexpr int kLayers = 16;
  auto a = Make({{"seed", int64_t{1}}}, kLayers);
  auto b = Make({{"seed", int64_t{2}}}, kLayers);
  int differ = 0;
  for (uint64_t request = 0; request < 10; ++request) {
    for (int layer = 0; layer < kLayers; ++layer) {
      differ += Full(*a, request, layer) != Full(*b, request, layer);
    }
  }
  // 160 fair coin pairs differ about 80 times; 40 is > 6 standard deviations away.
  EXPECT_GT(differ, 40);
}

TEST_F(RandomPolicyTest, RatioIsCloseToTarget) {
  constexpr int kLayers = 32;
  for (double ratio : {0.0, 0.1, 0.5, 0.85, 1.0}) {
    auto policy = Make({{"seed", int64_t{7}}, {"full_ratio", ratio}}, kLayers);
    int full = 0;
    constexpr int kRequests = 500;
    std::vector<int> per_layer(kLayers, 0);
    for (uint64_t request = 0; request < kRequests; ++request) {
      for (int layer = 0; layer < kLayers; ++layer) {
        const bool f = Full(*policy, request, layer);
        full += f;
        per_layer[layer] += f;
      }
    }
    const double n = kRequests * kLayers;
    const double sigma = std::sqrt(ratio * (1 - ratio) / n);
    EXPECT_NEAR(full / n, ratio, 5 * sigma + 1e-12) << "ratio " << ratio;
    // No layer is systematically favoured (each layer sees 500 draws).
    const double layer_sigma = std::sqrt(ratio * (1 - ratio) / kRequests);
    for (int layer = 0; layer < kLayers; ++layer) {
      EXPECT_NEAR(per_layer[layer] / static_cast<double>(kRequests), ratio, 6 * layer_sigma + 1e-12)
          << "layer " << layer << " ratio " << ratio;
    }
  }
}

TEST_F(RandomPolicyTest, ExactModeGivesExactCountPerRequest) {
  for (int layers : {1, 5, 36}) {
    for (double ratio : {0.0, 0.25, 0.5, 0.7, 1.0}) {
      auto policy = Make({{"seed", int64_t{3}}, {"full_ratio", ratio}, {"exact", true}}, layers);
      const int expected = static_cast<int>(std::lround(ratio * layers));
      std::vector<int> per_layer(layers, 0);
      for (uint64_t request = 0; request < 60; ++request) {
        int full = 0;
        for (int layer = 0; layer < layers; ++layer) {
          const bool f = Full(*policy, request, layer);
          full += f;
          per_layer[layer] += f;
        }
        EXPECT_EQ(full, expected) << layers << " layers, ratio " << ratio;
      }
      // Which layers are FA varies between requests unless all or none are.
      if (expected > 0 && expected < layers) {
        EXPECT_LT(*std::max_element(per_layer.begin(), per_layer.end()), 60);
      }
    }
  }
}

TEST_F(RandomPolicyTest, RejectsBadParametersAndLayers) {
  auto made =
      RandomPolicy::Create(testing::MakeParams(RandomPolicy::Params(), {{"full_ratio", 1.25}}));
  ASSERT_FALSE(made.ok());
  EXPECT_THAT(std::string(made.status().message()),
              HasSubstr("random: full_ratio: expected a number in [0, 1], found 1.25"));
  made = RandomPolicy::Create(testing::MakeParams(RandomPolicy::Params(), {{"seed", int64_t{-1}}}));
  ASSERT_FALSE(made.ok());
  EXPECT_THAT(std::string(made.status().message()), HasSubstr("random: seed"));

  auto policy = Make({}, 4);
  RoutingInput input;
  input.layer = 4;
  absl::StatusOr<RoutingDecision> decision = policy->Decide(input);
  ASSERT_FALSE(decision.ok());
  EXPECT_THAT(std::string(decision.status().message()), HasSubstr("[0, 3], found 4"));
}

}  // namespace
}  // namespace fluxattn::routing
