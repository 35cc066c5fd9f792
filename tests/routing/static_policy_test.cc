// `static`: every form against hand-written expectations, and every bad parameter.
#include "static_policy.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "routing_test_support.h"

namespace fluxattn::routing {
namespace {

using ::testing::HasSubstr;
using testing::MakeParams;
using testing::MakePolicy;
using testing::TinyModel;

// The per-layer decisions of a static policy, as a string of F/S letters, via Decide.
absl::StatusOr<std::string> Letters(const std::map<std::string, ParamValue>& given,
                                    int num_layers) {
  const ModelInfo model = TinyModel(num_layers);
  RoutingSetup setup;
  setup.model = &model;
  FLUXATTN_ASSIGN_OR_RETURN(auto policy, MakePolicy<StaticPolicy>(given, setup));
  std::string letters;
  // Several request ids: the answer must not depend on the request.
  for (uint64_t request : {0ULL, 7ULL}) {
    std::string per_request;
    for (int layer = 0; layer < num_layers; ++layer) {
      RoutingInput input;
      input.request_id = request;
      input.layer = layer;
      input.num_layers = num_layers;
      input.prompt_tokens = 100;
      FLUXATTN_ASSIGN_OR_RETURN(RoutingDecision decision, policy->Decide(input));
      EXPECT_TRUE(decision.logits.empty());
      per_request += decision.choice == AttentionChoice::kFull ? 'F' : 'S';
    }
    if (!letters.empty() && letters != per_request) {
      return absl::InternalError("decisions differ between requests");
    }
    letters = per_request;
  }
  return letters;
}

TEST(StaticPolicyTest, FullLayersList) {
  EXPECT_EQ(*Letters({{"full_layers", std::vector<int64_t>{0, 3, 7}}}, 8), "FSSFSSSF");
  EXPECT_EQ(*Letters({{"full_layers", std::vector<int64_t>{5, 1}}}, 6), "SFSSSF");
  // An explicit empty list is a valid choice: every layer sparse.
  EXPECT_EQ(*Letters({{"full_layers", std::vector<int64_t>{}}}, 3), "SSS");
}

TEST(StaticPolicyTest, PatternRepeatsOverLayers) {
  EXPECT_EQ(*Letters({{"pattern", std::string("FSSS")}}, 8), "FSSSFSSS");
  EXPECT_EQ(*Letters({{"pattern", std::string("FSS")}}, 7), "FSSFSSF");
  EXPECT_EQ(*Letters({{"pattern", std::string("SF")}}, 5), "SFSFS");
  EXPECT_EQ(*Letters({{"pattern", std::string("F")}}, 3), "FFF");
  EXPECT_EQ(*Letters({{"pattern", std::string("SFFS")}}, 4), "SFFS");
}

TEST(StaticPolicyTest, RatioWithPlacement) {
  const auto ratio = [](double r, const char* placement, int layers) {
    return *Letters({{"full_ratio", r}, {"placement", std::string(placement)}}, layers);
  };
  EXPECT_EQ(ratio(0.25, "first", 8), "FFSSSSSS");
  EXPECT_EQ(ratio(0.25, "last", 8), "SSSSSSFF");
  EXPECT_EQ(ratio(0.25, "spread", 8), "FSSSFSSS");  // the same as pattern "FSSS"
  EXPECT_EQ(ratio(0.5, "spread", 6), "FSFSFS");
  EXPECT_EQ(ratio(0.4, "spread", 10), "FSFSSFSFSS");  // k * 10 / 4 = 0, 2, 5, 7
  EXPECT_EQ(ratio(0.5, "first", 3), "FFS");           // 1.5 rounds up to 2
  EXPECT_EQ(ratio(0.0, "spread", 4), "SSSS");
  EXPECT_EQ(ratio(1.0, "last", 4), "FFFF");
  EXPECT_EQ(ratio(1.0, "spread", 5), "FFFFF");
  // Default placement is spread.
  EXPECT_EQ(*Letters({{"full_ratio", 0.5}}, 4), "FSFS");
}

TEST(StaticPolicyTest, SpreadPlacesExactCountWithoutRepeats) {
  for (int layers = 1; layers <= 40; ++layers) {
    for (int count = 0; count <= layers; ++count) {
      const double ratio = static_cast<double>(count) / layers;
      absl::StatusOr<std::string> letters = Letters({{"full_ratio", ratio}}, layers);
      ASSERT_TRUE(letters.ok()) << letters.status();
      EXPECT_EQ(std::count(letters->begin(), letters->end(), 'F'), count)
          << layers << " layers, ratio " << ratio << ": " << *letters;
    }
  }
}

void ExpectError(const std::map<std::string, ParamValue>& given, int num_layers,
                 const std::vector<std::string>& fragments) {
  absl::StatusOr<std::string> letters = Letters(given, num_layers);
  ASSERT_FALSE(letters.ok()) << "accepted, gave " << *letters;
  EXPECT_EQ(letters.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(letters.status().message());
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  for (const std::string& fragment : fragments) EXPECT_THAT(message, HasSubstr(fragment));
}

TEST(StaticPolicyTest, RejectsPatternWithOtherLetters) {
  ExpectError({{"pattern", std::string("FSXS")}}, 4,
              {"static: pattern", "F (full) and S (sparse)", "'X' at position 2"});
  ExpectError({{"pattern", std::string("fsss")}}, 4, {"pattern", "'f' at position 0"});
  ExpectError({{"pattern", std::string("")}}, 4, {"pattern", "empty"});
  ExpectError({{"pattern", std::string("FSSSF")}}, 4,
              {"pattern", "at most 4 letters", "found 5 letters"});
}

TEST(StaticPolicyTest, RejectsLayerOutOfRange) {
  ExpectError({{"full_layers", std::vector<int64_t>{0, 4}}}, 4,
              {"static: full_layers[1]", "[0, 3]", "found 4"});
  ExpectError({{"full_layers", std::vector<int64_t>{-1}}}, 4, {"full_layers[0]", "found -1"});
  ExpectError({{"full_layers", std::vector<int64_t>{2, 1, 2}}}, 4,
              {"full_layers[2]", "at most once", "layer 2 again"});
}

TEST(StaticPolicyTest, RejectsNoneOrSeveralForms) {
  ExpectError({}, 4, {"exactly one of full_layers, pattern, full_ratio", "found none"});
  ExpectError({{"pattern", std::string("FS")}, {"full_layers", std::vector<int64_t>{1}}}, 4,
              {"exactly one of", "full_layers and pattern"});
  ExpectError({{"pattern", std::string("FS")},
               {"full_ratio", 0.5},
               {"full_layers", std::vector<int64_t>{1}}},
              4, {"full_layers and pattern and full_ratio"});
  ExpectError({{"pattern", std::string("FS")}, {"placement", std::string("first")}}, 4,
              {"static: placement", "only together with full_ratio"});
}

TEST(StaticPolicyTest, RejectsRatioOutsideUnitInterval) {
  ExpectError({{"full_ratio", 1.5}}, 4, {"static: full_ratio", "[0, 1]", "1.5"});
}

TEST(StaticPolicyTest, RejectsLayerOutsideModelInDecide) {
  const ModelInfo model = TinyModel(3);
  RoutingSetup setup;
  setup.model = &model;
  auto policy = MakePolicy<StaticPolicy>({{"pattern", std::string("FS")}}, setup);
  ASSERT_TRUE(policy.ok()) << policy.status();
  RoutingInput input;
  input.layer = 3;
  absl::StatusOr<RoutingDecision> decision = (*policy)->Decide(input);
  ASSERT_FALSE(decision.ok());
  EXPECT_THAT(std::string(decision.status().message()), HasSubstr("[0, 2]"));
}

TEST(StaticPolicyTest, ParamSpecsAreDocumented) {
  for (const ParamSpec& spec : StaticPolicy::Params()) {
    EXPECT_FALSE(spec.description.empty()) << spec.name;
    EXPECT_TRUE(spec.default_value.has_value()) << spec.name;
  }
}

}  // namespace
}  // namespace fluxattn::routing
