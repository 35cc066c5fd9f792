// Parameter validation: every value is checked against the plugin's spec before the plugin
// sees it, and every refusal names the file, line, key, what was expected and what was found.
#include "fluxattn/params.h"

#include "fluxattn/config.h"
#include "gtest/gtest.h"

namespace fluxattn {
namespace {

std::vector<ParamSpec> Specs() {
  return {
      {"window", ParamType::kInt, "window in tokens", ParamValue(int64_t{2048}), 1.0, 1e6, {}},
      {"ratio", ParamType::kFloat, "kept fraction", ParamValue(0.5), 0.0, 1.0, {}},
      {"mode",
       ParamType::kString,
       "how",
       ParamValue(std::string("fast")),
       std::nullopt,
       std::nullopt,
       {"fast", "exact"}},
      {"trace", ParamType::kBool, "trace it", ParamValue(false), std::nullopt, std::nullopt, {}},
      {"layers",
       ParamType::kIntList,
       "which layers",
       ParamValue(std::vector<int64_t>{1, 2}),
       0.0,
       63.0,
       {}},
      {"names",
       ParamType::kStringList,
       "labels",
       ParamValue(std::vector<std::string>{}),
       std::nullopt,
       std::nullopt,
       {}},
      {"seed", ParamType::kInt, "random seed", std::nullopt, 0.0, std::nullopt, {}},
  };
}

PluginInstanceConfig Instance(std::map<std::string, ParamValue> values) {
  PluginInstanceConfig instance;
  instance.name = "sparse";
  instance.plugin = "streaming";
  instance.table = "backends.sparse";
  instance.where = {"x.toml", 4, 1};
  int line = 5;
  for (auto& [k, v] : values) instance.raw_params[k] = RawParam{v, {"x.toml", line++, 9}};
  return instance;
}

std::string Error(std::map<std::string, ParamValue> values) {
  PluginInstanceConfig instance = Instance(std::move(values));
  absl::Status status = ValidatePluginParams(Specs(), instance);
  return status.ok() ? "OK" : std::string(status.message());
}

TEST(ParamsTest, DefaultsFillInAndExplicitValuesAreMarked) {
  PluginInstanceConfig instance =
      Instance({{"seed", int64_t{7}}, {"ratio", int64_t{1}}, {"names", std::vector<int64_t>{}}});
  ASSERT_TRUE(ValidatePluginParams(Specs(), instance).ok());
  const ParamValues& p = instance.params;
  EXPECT_EQ(p.GetInt("seed"), 7);
  EXPECT_TRUE(p.is_explicit("seed"));
  EXPECT_EQ(p.GetInt("window"), 2048);
  EXPECT_FALSE(p.is_explicit("window"));
  EXPECT_EQ(p.GetFloat("ratio"), 1.0);  // an integer is accepted where a float is declared
  EXPECT_EQ(p.GetString("mode"), "fast");
  EXPECT_FALSE(p.GetBool("trace"));
  EXPECT_EQ(p.GetIntList("layers"), (std::vector<int64_t>{1, 2}));
  EXPECT_TRUE(p.GetStringList("names").empty());  // `[]` fits a string list too
}

TEST(ParamsTest, UnknownKey) {
  EXPECT_EQ(Error({{"seed", int64_t{1}}, {"windw", int64_t{5}}}),
            "x.toml:6:9: key 'backends.sparse.windw': expected a parameter of plugin 'streaming' "
            "(window, ratio, mode, trace, layers, names, seed), found unknown key 'windw'");
}

// An unknown key of one phase ("decode", "prefill_*") in a backend's table says how a phase is
// handed to another instance; not where the plugin declares parameters of that phase (the key
// is then more likely a typo of one of them), and not in a router's table.
TEST(ParamsTest, UnknownPhaseKeyPointsToDelegation) {
  const std::string listed =
      "expected a parameter of plugin 'streaming' (window, ratio, mode, trace, layers, names, "
      "seed)";
  EXPECT_EQ(Error({{"decode", std::string("streaming")}, {"seed", int64_t{1}}}),
            "x.toml:5:9: key 'backends.sparse.decode': " + listed +
                ", found unknown key 'decode' (to have another backend serve the decode, use "
                "decode_with = \"<its [backends.<name>] name>\", e.g. a \"streaming\" instance)");
  EXPECT_EQ(Error({{"prefill_window_tokens", int64_t{64}}, {"seed", int64_t{1}}}),
            "x.toml:5:9: key 'backends.sparse.prefill_window_tokens': " + listed +
                ", found unknown key 'prefill_window_tokens' (to have another backend serve the "
                "prefill, use prefill_with = \"<its [backends.<name>] name>\", e.g. a "
                "\"streaming\" instance)");
  // Neither a prefix that only looks alike nor a key of a phase the plugin has parameters of.
  EXPECT_EQ(
      Error({{"decoder", int64_t{1}}, {"seed", int64_t{1}}}),
      "x.toml:5:9: key 'backends.sparse.decoder': " + listed + ", found unknown key 'decoder'");
  std::vector<ParamSpec> specs = Specs();
  specs.push_back(IntParamSpec("decode_budget", 64, 1, 1e6, "tokens read per decode step"));
  PluginInstanceConfig typo = Instance({{"decode_budgt", int64_t{8}}, {"seed", int64_t{1}}});
  absl::Status status = ValidatePluginParams(specs, typo);
  EXPECT_EQ(status.message(),
            "x.toml:5:9: key 'backends.sparse.decode_budgt': expected a parameter of plugin "
            "'streaming' (window, ratio, mode, trace, layers, names, seed, decode_budget), found "
            "unknown key 'decode_budgt'");
  PluginInstanceConfig router = Instance({{"decode", std::string("x")}, {"seed", int64_t{1}}});
  router.table = "router";
  status = ValidatePluginParams(Specs(), router);
  EXPECT_EQ(status.message(),
            "x.toml:5:9: key 'router.decode': " + listed + ", found unknown key 'decode'");
}

TEST(ParamsTest, WrongTypes) {
  EXPECT_EQ(Error({{"seed", int64_t{1}}, {"window", std::string("big")}}),
            "x.toml:6:9: key 'backends.sparse.window': expected an integer in [1, 1000000], "
            "found string \"big\"");
  EXPECT_EQ(Error({{"seed", int64_t{1}}, {"window", 3.5}}),
            "x.toml:6:9: key 'backends.sparse.window': expected an integer in [1, 1000000], "
            "found float 3.5");
  EXPECT_EQ(Error({{"seed", int64_t{1}}, {"trace", int64_t{1}}}),
            "x.toml:6:9: key 'backends.sparse.trace': expected a bool, found integer 1");
  EXPECT_EQ(Error({{"names", std::vector<int64_t>{3}}, {"seed", int64_t{1}}}),
            "x.toml:5:9: key 'backends.sparse.names': expected a string list, found integer list "
            "[3]");
}

TEST(ParamsTest, OutOfRangeAndChoices) {
  EXPECT_EQ(Error({{"seed", int64_t{1}}, {"window", int64_t{0}}}),
            "x.toml:6:9: key 'backends.sparse.window': expected an integer in [1, 1000000], "
            "found integer 0");
  EXPECT_EQ(Error({{"ratio", 1.5}, {"seed", int64_t{1}}}),
            "x.toml:5:9: key 'backends.sparse.ratio': expected a float in [0.0, 1.0], found float "
            "1.5");
  EXPECT_EQ(Error({{"seed", int64_t{-3}}}),
            "x.toml:5:9: key 'backends.sparse.seed': expected an integer >= 0, found integer -3");
  EXPECT_EQ(Error({{"layers", std::vector<int64_t>{1, 64}}, {"seed", int64_t{1}}}),
            "x.toml:5:9: key 'backends.sparse.layers': expected every element in [0, 63], found "
            "element 64 in [1, 64]");
  EXPECT_EQ(Error({{"mode", std::string("slow")}, {"seed", int64_t{1}}}),
            "x.toml:5:9: key 'backends.sparse.mode': expected one of \"fast\", \"exact\", found "
            "string \"slow\"");
}

TEST(ParamsTest, RequiredParameterMissing) {
  EXPECT_EQ(Error({}),
            "x.toml:4:1: key 'backends.sparse.seed': expected a value (integer, required by "
            "plugin 'streaming': random seed), found none");
}

TEST(ParamsTest, ValueToString) {
  EXPECT_EQ(ParamValueToString(ParamValue(true)), "true");
  EXPECT_EQ(ParamValueToString(ParamValue(int64_t{-4})), "-4");
  EXPECT_EQ(ParamValueToString(ParamValue(2.0)), "2.0");
  EXPECT_EQ(ParamValueToString(ParamValue(0.1)), "0.1");
  EXPECT_EQ(ParamValueToString(ParamValue(std::string("a"))), "\"a\"");
  EXPECT_EQ(ParamValueToString(ParamValue(std::vector<int64_t>{1, 2})), "[1, 2]");
  EXPECT_EQ(ParamValueToString(ParamValue(std::vector<std::string>{"x", "y"})), "[\"x\", \"y\"]");
  EXPECT_STREQ(ParamTypeName(ParamType::kIntList), "integer list");
}

}  // namespace
}  // namespace fluxattn
