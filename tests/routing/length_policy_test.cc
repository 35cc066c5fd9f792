// `length`: full attention below min_tokens, the named delegate at and above it.
#include "length_policy.h"

#include <map>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "routing_test_support.h"
#include "static_policy.h"

namespace fluxattn::routing {
namespace {

using ::testing::HasSubstr;
using testing::MakePolicy;
using testing::TinyModel;

// Answers SA and remembers what it was asked.
class RecordingPolicy final : public RoutingPolicy {
 public:
  absl::Status Prepare(const RoutingSetup&) override { return absl::OkStatus(); }
  bool NeedsQueries() const override { return needs_queries; }
  absl::StatusOr<RoutingDecision> Decide(const RoutingInput& input) override {
    asked.push_back(input);
    RoutingDecision decision;
    decision.choice = AttentionChoice::kSparse;
    decision.logits = {static_cast<float>(input.layer), 0.5f};
    return decision;
  }
  bool needs_queries = false;
  std::vector<RoutingInput> asked;
};

class LengthPolicyTest : public ::testing::Test {
 protected:
  LengthPolicyTest() : model_(TinyModel(4)) {
    setup_.model = &model_;
    setup_.policy = [this](const std::string& name) -> absl::StatusOr<RoutingPolicy*> {
      if (name == "recorder") return &recorder_;
      return absl::NotFoundError(absl::StrCat("no [routers.", name, "] in the config"));
    };
  }
  ModelInfo model_;
  RoutingSetup setup_;
  RecordingPolicy recorder_;
};

TEST_F(LengthPolicyTest, FullBelowThresholdDelegateFromThresholdOn) {
  auto policy = MakePolicy<LengthPolicy>(
      {{"min_tokens", int64_t{1000}}, {"above", std::string("recorder")}}, setup_);
  ASSERT_TRUE(policy.ok()) << policy.status();
  const float queries[4] = {1, 2, 3, 4};
  for (int64_t tokens : {1, 999, 1000, 5000}) {
    for (int layer = 0; layer < 4; ++layer) {
      recorder_.asked.clear();
      RoutingInput input;
      input.request_id = 17;
      input.layer = layer;
      input.num_layers = 4;
      input.prompt_tokens = tokens;
      input.queries = queries;
      absl::StatusOr<RoutingDecision> decision = (*policy)->Decide(input);
      ASSERT_TRUE(decision.ok()) << decision.status();
      if (tokens < 1000) {
        EXPECT_EQ(decision->choice, AttentionChoice::kFull);
        EXPECT_TRUE(decision->logits.empty());
        EXPECT_TRUE(recorder_.asked.empty());
      } else {
        EXPECT_EQ(decision->choice, AttentionChoice::kSparse);
        EXPECT_EQ(decision->logits, (std::vector<float>{static_cast<float>(layer), 0.5f}));
        ASSERT_EQ(recorder_.asked.size(), 1u);
        EXPECT_EQ(recorder_.asked[0].request_id, 17u);
        EXPECT_EQ(recorder_.asked[0].layer, layer);
        EXPECT_EQ(recorder_.asked[0].prompt_tokens, tokens);
        EXPECT_EQ(recorder_.asked[0].queries, queries);
      }
    }
  }
}

TEST_F(LengthPolicyTest, NeedsQueriesFollowsDelegate) {
  auto policy = MakePolicy<LengthPolicy>(
      {{"min_tokens", int64_t{10}}, {"above", std::string("recorder")}}, setup_);
  ASSERT_TRUE(policy.ok()) << policy.status();
  recorder_.needs_queries = false;
  EXPECT_FALSE((*policy)->NeedsQueries());
  recorder_.needs_queries = true;
  EXPECT_TRUE((*policy)->NeedsQueries());
}

TEST_F(LengthPolicyTest, DelegatesToARealPolicy) {
  auto inner = MakePolicy<StaticPolicy>({{"pattern", std::string("SF")}}, setup_);
  ASSERT_TRUE(inner.ok()) << inner.status();
  setup_.policy = [&](const std::string& name) -> absl::StatusOr<RoutingPolicy*> {
    return inner->get();
  };
  auto policy = MakePolicy<LengthPolicy>(
      {{"min_tokens", int64_t{0}}, {"above", std::string("static_sf")}}, setup_);
  ASSERT_TRUE(policy.ok()) << policy.status();
  std::string letters;
  for (int layer = 0; layer < 4; ++layer) {
    RoutingInput input;
    input.layer = layer;
    input.prompt_tokens = 1;
    letters += (*policy)->Decide(input)->choice == AttentionChoice::kFull ? 'F' : 'S';
  }
  EXPECT_EQ(letters, "SFSF");
}

TEST_F(LengthPolicyTest, UnknownDelegateIsAnErrorNamingIt) {
  auto policy = MakePolicy<LengthPolicy>(
      {{"min_tokens", int64_t{10}}, {"above", std::string("missing")}}, setup_);
  ASSERT_FALSE(policy.ok());
  const std::string message(policy.status().message());
  EXPECT_THAT(message, HasSubstr("length: above = \"missing\""));
  EXPECT_THAT(message, HasSubstr("no [routers.missing]"));

  setup_.policy = nullptr;
  policy = MakePolicy<LengthPolicy>(
      {{"min_tokens", int64_t{10}}, {"above", std::string("recorder")}}, setup_);
  ASSERT_FALSE(policy.ok());
  EXPECT_THAT(std::string(policy.status().message()), HasSubstr("[routers.recorder]"));
}

TEST_F(LengthPolicyTest, RejectsBadParameters) {
  auto made = LengthPolicy::Create(testing::MakeParams(
      LengthPolicy::Params(), {{"min_tokens", int64_t{-5}}, {"above", std::string("x")}}));
  ASSERT_FALSE(made.ok());
  EXPECT_THAT(std::string(made.status().message()), HasSubstr("length: min_tokens"));
  made = LengthPolicy::Create(testing::MakeParams(
      LengthPolicy::Params(), {{"min_tokens", int64_t{5}}, {"above", std::string()}}));
  ASSERT_FALSE(made.ok());
  EXPECT_THAT(std::string(made.status().message()), HasSubstr("length: above"));
}

TEST_F(LengthPolicyTest, RequiredParametersHaveNoDefault) {
  for (const ParamSpec& spec : LengthPolicy::Params()) {
    EXPECT_FALSE(spec.default_value.has_value()) << spec.name;
    EXPECT_FALSE(spec.description.empty()) << spec.name;
  }
}

}  // namespace
}  // namespace fluxattn::routing
