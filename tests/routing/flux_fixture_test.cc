// `flux` against router outputs recorded by an independent PyTorch implementation
// (tools/make_router_fixtures.py -> tests/fixtures/router/router_cases.json): softmax and sigmoid
// routers, prompts of one token, shorter than 2 * pool_size, exactly 2 * pool_size, and longer.
#include <cmath>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "flux_policy.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "routing_test_support.h"

namespace fluxattn::routing {
namespace {

using testing::InMemoryWeights;
using testing::MakePolicy;
using testing::TinyModel;

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  return in.good() ? nlohmann::json::parse(in) : nlohmann::json();
}

TEST(FluxFixtureTest, MatchesPyTorchRouterCases) {
  const nlohmann::json fixture =
      ReadJson(std::string(FLUXATTN_ROUTER_FIXTURE_DIR) + "/router_cases.json");
  ASSERT_TRUE(fixture.is_object());
  const int head_dim = fixture.at("head_dim").get<int>();
  std::map<std::string, InMemoryWeights> routers;
  for (const auto& [name, tensors] : fixture.at("routers").items()) {
    for (const auto& [key, tensor] : tensors.items()) {
      routers[name].Add(key, tensor.at("shape").get<std::vector<int64_t>>(),
                        tensor.at("data").get<std::vector<float>>());
    }
  }
  const nlohmann::json& cases = fixture.at("cases");
  ASSERT_GE(cases.size(), 6u);
  int full = 0;
  for (const nlohmann::json& c : cases) {
    const std::string router = c.at("router").get<std::string>();
    const int heads = c.at("num_heads").get<int>();
    const int64_t tokens = c.at("tokens").get<int64_t>();
    SCOPED_TRACE(router + " T=" + std::to_string(tokens) + " H=" + std::to_string(heads));
    ModelInfo model = TinyModel(1, heads, head_dim);
    // Settings come from config.json as they would for a checkpoint.
    model.config["pool_size"] = c.at("pool_size").get<int64_t>();
    model.config["use_softmax"] = router == "softmax";
    model.config["pooling_mode"] = std::string("ctx_q");
    RoutingSetup setup;
    setup.model = &model;
    setup.weights = &routers.at(router);
    auto policy = MakePolicy<FluxPolicy>({}, setup);
    ASSERT_TRUE(policy.ok()) << policy.status();

    const std::vector<float> queries = c.at("queries").get<std::vector<float>>();
    ASSERT_EQ(queries.size(), static_cast<size_t>(tokens * heads * head_dim));
    RoutingInput input;
    input.layer = 0;
    input.num_layers = 1;
    input.prompt_tokens = tokens;
    input.queries = queries.data();
    input.num_q_heads = heads;
    input.head_dim = head_dim;
    absl::StatusOr<RoutingDecision> got = (*policy)->Decide(input);
    ASSERT_TRUE(got.ok()) << got.status();

    const std::vector<double> want = c.at("logits").get<std::vector<double>>();
    ASSERT_EQ(got->logits.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_NEAR(got->logits[i], want[i], 1e-5 * std::abs(want[i]) + 1e-6) << "logit " << i;
    }
    const std::string decision = c.at("decision").get<std::string>();
    EXPECT_EQ(AttentionChoiceName(got->choice), decision);
    full += decision == "full";
  }
  // Both answers occur, so the comparison exercises the decision rule.
  EXPECT_GT(full, 0);
  EXPECT_LT(full, static_cast<int>(cases.size()));
}

}  // namespace
}  // namespace fluxattn::routing
