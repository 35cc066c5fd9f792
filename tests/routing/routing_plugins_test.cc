// The four routing plugins as shared libraries: loaded by the registry, parameters validated
// from TOML by the config loader, composed (including [routers.<name>] delegation) and asked.
#include <map>
#include <string>
#include <vector>

#include "fluxattn/config.h"
#include "fluxattn/plugin_registry.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "routing_test_support.h"

namespace fluxattn::routing {
namespace {

using ::testing::HasSubstr;
using testing::TinyModel;

constexpr const char* kBackends = R"(
[backends.full]
plugin = "full"
[backends.sparse]
plugin = "streaming"
sink_tokens = 128
window_tokens = 256
block_size = 128
)";

class RoutingPluginsTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(registry_.ScanDirectory(FLUXATTN_PLUGIN_DIR).ok()); }

  absl::StatusOr<Composition> ComposeToml(const std::string& router_tables) {
    FLUXATTN_ASSIGN_OR_RETURN(config_,
                              ParseEngineConfig(std::string(kBackends) + router_tables, "ab.toml"));
    return Compose(config_, registry_);
  }

  // Prepares the composed router the way the engine does and returns its letters per layer.
  absl::StatusOr<std::string> Letters(Composition& composition, const ModelInfo& model,
                                      int64_t prompt_tokens, uint64_t request_id = 0) {
    RoutingSetup setup;
    setup.model = &model;
    setup.policy = [&](const std::string& name) -> absl::StatusOr<RoutingPolicy*> {
      auto it = composition.routers.find(name);
      if (it == composition.routers.end()) {
        return absl::NotFoundError(absl::StrCat("no [routers.", name, "]"));
      }
      FLUXATTN_RETURN_IF_ERROR(it->second->Prepare(setup));
      return it->second.get();
    };
    FLUXATTN_RETURN_IF_ERROR(composition.router->Prepare(setup));
    std::string letters;
    for (int layer = 0; layer < model.num_layers; ++layer) {
      RoutingInput input;
      input.request_id = request_id;
      input.layer = layer;
      input.num_layers = model.num_layers;
      input.prompt_tokens = prompt_tokens;
      FLUXATTN_ASSIGN_OR_RETURN(RoutingDecision decision, composition.router->Decide(input));
      letters += decision.choice == AttentionChoice::kFull ? 'F' : 'S';
    }
    return letters;
  }

  PluginRegistry registry_;
  EngineConfig config_;
};

TEST_F(RoutingPluginsTest, AllPoliciesLoadWithDocumentedParameters) {
  for (const char* name : {"static", "flux", "random", "length"}) {
    absl::StatusOr<const PluginInfo*> info = registry_.Find(name, PluginKind::kRoutingPolicy);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_FALSE((*info)->summary.empty()) << name;
    EXPECT_FALSE((*info)->params.empty()) << name;
    for (const ParamSpec& spec : (*info)->params) {
      EXPECT_FALSE(spec.description.empty()) << name << "." << spec.name;
    }
  }
}

TEST_F(RoutingPluginsTest, StaticFormsFromToml) {
  const ModelInfo model = TinyModel(8);
  for (const auto& [table, want] : std::vector<std::pair<std::string, std::string>>{
           {"pattern = \"FSSS\"", "FSSSFSSS"},
           {"full_layers = [1, 6]", "SFSSSSFS"},
           {"full_ratio = 0.25\nplacement = \"last\"", "SSSSSSFF"}}) {
    absl::StatusOr<Composition> composition = ComposeToml(
        "[router]\nplugin = \"static\"\nfull = \"full\"\nsparse = \"sparse\"\n" + table + "\n");
    ASSERT_TRUE(composition.ok()) << composition.status();
    EXPECT_EQ(*Letters(*composition, model, 100), want) << table;
  }
}

TEST_F(RoutingPluginsTest, BadStaticParametersNameTheKey) {
  absl::StatusOr<Composition> composition = ComposeToml(
      "[router]\nplugin = \"static\"\nfull = \"full\"\nsparse = \"sparse\"\n"
      "pattern = \"FS\"\nfull_ratio = 0.5\n");
  ASSERT_FALSE(composition.ok());
  EXPECT_THAT(std::string(composition.status().message()),
              HasSubstr("exactly one of full_layers, pattern, full_ratio"));
  EXPECT_THAT(std::string(composition.status().message()), HasSubstr("ab.toml"));

  composition = ComposeToml(
      "[router]\nplugin = \"static\"\nfull = \"full\"\nsparse = \"sparse\"\n"
      "placement = \"middle\"\nfull_ratio = 0.5\n");
  ASSERT_FALSE(composition.ok());
  EXPECT_THAT(std::string(composition.status().message()), HasSubstr("placement"));

  composition = ComposeToml(
      "[router]\nplugin = \"static\"\nfull = \"full\"\nsparse = \"sparse\"\n"
      "full_layers = [0, 9]\n");
  ASSERT_TRUE(composition.ok()) << composition.status();
  absl::StatusOr<std::string> letters = Letters(*composition, TinyModel(4), 10);
  ASSERT_FALSE(letters.ok());
  EXPECT_EQ(letters.status().message(),
            "static: full_layers[1]: expected a layer index in [0, 3] (the model has 4 layers), "
            "found 9");
}

TEST_F(RoutingPluginsTest, LengthDelegatesToNamedRouter) {
  absl::StatusOr<Composition> composition = ComposeToml(R"(
[router]
plugin = "length"
full = "full"
sparse = "sparse"
min_tokens = 1000
above = "hybrid"
[routers.hybrid]
plugin = "static"
pattern = "FS"
)");
  ASSERT_TRUE(composition.ok()) << composition.status();
  const ModelInfo model = TinyModel(4);
  EXPECT_EQ(*Letters(*composition, model, 999), "FFFF");
  EXPECT_EQ(*Letters(*composition, model, 1000), "FSFS");
}

TEST_F(RoutingPluginsTest, RandomFromTomlIsReproducible) {
  const std::string table =
      "[router]\nplugin = \"random\"\nfull = \"full\"\nsparse = \"sparse\"\n"
      "seed = 5\nfull_ratio = 0.5\nexact = true\n";
  const ModelInfo model = TinyModel(10);
  absl::StatusOr<Composition> a = ComposeToml(table);
  absl::StatusOr<Composition> b = ComposeToml(table);
  ASSERT_TRUE(a.ok() && b.ok());
  for (uint64_t request = 0; request < 5; ++request) {
    const std::string letters = *Letters(*a, model, 10, request);
    EXPECT_EQ(letters, *Letters(*b, model, 10, request));
    EXPECT_EQ(std::count(letters.begin(), letters.end(), 'F'), 5);
  }
}

}  // namespace
}  // namespace fluxattn::routing
