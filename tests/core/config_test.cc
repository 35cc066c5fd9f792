// Config loading and composition. Each bad-input case asserts the whole one-line error: file,
// line, column, key, what was expected and what was found.
#include "fluxattn/config.h"

#include <unistd.h>

#include <filesystem>

#include "fluxattn/engine.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace fluxattn {
namespace {

using testing_util::FixtureDir;
using testing_util::FixturePath;
using testing_util::MakeTempDir;
using testing_util::WriteFile;

std::string Canonical(const std::string& path) {
  return std::filesystem::weakly_canonical(path).string();
}

// Where this test writes its config: known before the call, so expected messages can use it.
std::string ConfigPath() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return (std::filesystem::path(::testing::TempDir()) /
          (std::string("fluxattn_cfg_") + info->name() + "_" + std::to_string(getpid())) /
          "engine.toml")
      .string();
}

std::string WriteConfig(const std::string& text) {
  const std::string path = ConfigPath();
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  WriteFile(path, text);
  return path;
}

std::string LoadError(const std::string& text, const std::string* = nullptr) {
  const std::string path = WriteConfig(text);
  absl::StatusOr<EngineConfig> config = LoadEngineConfig(path);
  return config.ok() ? "OK" : std::string(config.status().message());
}

// Loads, prepares the registry (plugins.paths = the fixture folder) and composes.
std::string ComposeError(const std::string& body, const std::string* = nullptr) {
  const std::string text = "[plugins]\npaths = [\"" + FixtureDir() + "\"]\n" + body;
  const std::string path = WriteConfig(text);
  absl::StatusOr<EngineConfig> config = LoadEngineConfig(path);
  if (!config.ok()) return std::string(config.status().message());
  PluginRegistry registry;
  absl::Status prepared = PrepareRegistry(*config, registry);
  if (!prepared.ok()) return std::string(prepared.message());
  absl::StatusOr<Composition> composition = Compose(*config, registry);
  return composition.ok() ? "OK" : std::string(composition.status().message());
}

constexpr char kValidBody[] = R"([model]
path = "models/tiny"
device = "cpu"
dtype = "bf16"
threads = 2

[backends.full]
plugin = "fixture_backend"

[backends.sparse]
plugin = "fixture_backend"
block_size = 16
temperature = 2
mode = "banded"
layers = [1, 3]
tags = ["a", "b"]

[router]
plugin = "fixture_router"
full = "full"
sparse = "sparse"
seed = 5
full_layers = [0]

[layers.3]
backend = "full"
)";

TEST(ConfigTest, ValidConfigComposes) {
  const std::string text = "[plugins]\npaths = [\"" + FixtureDir() + "\"]\n" + kValidBody;
  const std::string path = WriteConfig(text);
  absl::StatusOr<EngineConfig> config = LoadEngineConfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->source_path, path);
  // model.path is resolved against the config file's folder, not the working directory.
  EXPECT_EQ(config->model.path,
            (std::filesystem::path(path).parent_path() / "models/tiny").string());
  EXPECT_EQ(config->model.device, "cpu");
  EXPECT_EQ(config->model.dtype, "bf16");
  EXPECT_EQ(config->model.threads, 2);
  EXPECT_EQ(config->plugin_paths, std::vector<std::string>{FixtureDir()});
  ASSERT_EQ(config->backends.size(), 2u);
  EXPECT_EQ(config->backends.at("sparse").raw_params.size(), 5u);
  EXPECT_EQ(config->backends.at("sparse").raw_params.at("block_size").where.line, 14);
  EXPECT_EQ(config->router.plugin, "fixture_router");
  EXPECT_EQ(config->router_full, "full");
  EXPECT_EQ(config->router_sparse, "sparse");
  EXPECT_EQ(config->layer_backends, (std::map<int, std::string>{{3, "full"}}));

  PluginRegistry registry;
  ASSERT_TRUE(PrepareRegistry(*config, registry).ok());
  absl::StatusOr<Composition> composition = Compose(*config, registry);
  ASSERT_TRUE(composition.ok()) << composition.status();
  EXPECT_EQ(composition->backends.size(), 2u);
  ASSERT_NE(composition->router, nullptr);
  EXPECT_EQ(composition->full_backend, "full");
  EXPECT_EQ(composition->sparse_backend, "sparse");
  EXPECT_EQ(composition->layer_backends.at(3), "full");
  const ParamValues& sparse = config->backends.at("sparse").params;
  EXPECT_EQ(sparse.GetInt("block_size"), 16);
  EXPECT_EQ(sparse.GetFloat("temperature"), 2.0);
  EXPECT_EQ(sparse.GetStringList("tags"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(config->backends.at("full").params.GetInt("block_size"), 64);  // default
  RoutingInput input;
  input.layer = 0;
  absl::StatusOr<RoutingDecision> decision = composition->router->Decide(input);
  ASSERT_TRUE(decision.ok());
  EXPECT_EQ(decision->choice, AttentionChoice::kFull);
  input.layer = 1;
  EXPECT_EQ(composition->router->Decide(input)->choice, AttentionChoice::kSparse);
  EXPECT_STREQ(AttentionChoiceName(AttentionChoice::kSparse), "sparse");
}

TEST(ConfigTest, SingleBackendNeedsNoRouter) {
  absl::StatusOr<EngineConfig> config =
      ParseEngineConfig("[backends.only]\nplugin = \"fixture_backend\"\n", "inline.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->router_full, "only");
  EXPECT_EQ(config->router_sparse, "only");
  EXPECT_TRUE(config->router.plugin.empty());
}

TEST(ConfigTest, MalformedToml) {
  const std::string path = ConfigPath();
  std::string error = LoadError("[model]\npath = \"a\"\ndevice = cpu\n", &path);
  EXPECT_EQ(error.rfind(path + ":3:10: expected valid TOML, found a syntax error: ", 0), 0u)
      << error;
  error = LoadError("[model\n", &path);
  EXPECT_EQ(error.rfind(path + ":1:7: expected valid TOML, found a syntax error: ", 0), 0u)
      << error;
}

TEST(ConfigTest, MissingFile) {
  absl::StatusOr<EngineConfig> config = LoadEngineConfig("/nonexistent/engine.toml");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().message(),
            "/nonexistent/engine.toml: expected a TOML config file, found no such file");
}

TEST(ConfigTest, UnknownKeysInEverySection) {
  const std::string path = ConfigPath();
  EXPECT_EQ(LoadError("[modle]\npath = \"x\"\n", &path),
            path +
                ":1:2: key 'modle': expected one of the keys of the config (model, kv, attention, "
                "scheduler, plugins, backends, router, routers, layers, server), found unknown "
                "key 'modle'");
  EXPECT_EQ(LoadError("[model]\npath = \"x\"\ndtpye = \"f32\"\n", &path),
            path +
                ":3:1: key 'model.dtpye': expected one of the keys of [model] (path, device, "
                "dtype, threads), found unknown key 'dtpye'");
  EXPECT_EQ(LoadError("[plugins]\npath = []\n", &path),
            path +
                ":2:1: key 'plugins.path': expected one of the keys of [plugins] (paths), "
                "found unknown key 'path'");
  EXPECT_EQ(
      LoadError("[backends.a]\nplugin = \"x\"\n[layers.2]\nbackend = \"a\"\nbakend = 1\n", &path),
      path +
          ":5:1: key 'layers.2.bakend': expected one of the keys of [layers.2] "
          "(backend), found unknown key 'bakend'");
  // Unknown plugin parameters are refused by the owning plugin's spec at composition.
  EXPECT_EQ(ComposeError("[backends.a]\nplugin = \"fixture_backend\"\nblok_size = 3\n", &path),
            path +
                ":5:13: key 'backends.a.blok_size': expected a parameter of plugin "
                "'fixture_backend' (block_size, temperature, mode, verbose, layers, tags), "
                "found unknown key 'blok_size'");
}

// [backends.<name>] prefill_with / decode_with: core keys (never passed to the plugin), another
// configured backend each, one that serves the phase itself; configs built in code get the
// same checks at composition.
TEST(ConfigTest, PhaseDelegation) {
  const std::string path = ConfigPath();
  const std::string two =
      "[backends.a]\nplugin = \"fixture_backend\"\ndecode_with = \"b\"\n"
      "[backends.b]\nplugin = \"fixture_backend\"\nprefill_with = \"a\"\n"
      "[router]\nplugin = \"r\"\nfull = \"a\"\nsparse = \"b\"\n";
  {
    const std::string text =
        "[backends.a]\nplugin = \"x\"\nprefill_with = \"b\"\n"
        "[backends.b]\nplugin = \"y\"\n";
    absl::StatusOr<EngineConfig> config = ParseEngineConfig(text, "inline.toml");
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->backends.at("a").prefill_with, "b");
    EXPECT_EQ(config->backends.at("a").decode_with, "");
    EXPECT_EQ(config->backends.at("a").raw_params.count("prefill_with"), 0u);
  }
  EXPECT_EQ(ComposeError("[backends.a]\nplugin = \"fixture_backend\"\ndecode_with = \"b\"\n"
                         "[backends.b]\nplugin = \"fixture_backend\"\n",
                         &path),
            "OK");
  EXPECT_EQ(LoadError("[backends.a]\nplugin = \"x\"\ndecode_with = \"c\"\n"
                      "[backends.b]\nplugin = \"y\"\n",
                      &path),
            path +
                ":3:15: key 'backends.a.decode_with': expected the name of another "
                "[backends.<name>] table (b), found \"c\"");
  EXPECT_EQ(LoadError("[backends.a]\nplugin = \"x\"\nprefill_with = \"a\"\n", &path),
            path +
                ":3:16: key 'backends.a.prefill_with': expected the name of another "
                "[backends.<name>] table (none defined), found \"a\"");
  EXPECT_EQ(LoadError("[backends.a]\nplugin = \"x\"\nprefill_with = 3\n", &path),
            path +
                ":3:16: key 'backends.a.prefill_with': expected the name of another "
                "[backends.<name>] table, found integer 3");
  EXPECT_EQ(LoadError("[backends.a]\nplugin = \"x\"\ndecode_with = \"b\"\n"
                      "[backends.b]\nplugin = \"y\"\ndecode_with = \"c\"\n"
                      "[backends.c]\nplugin = \"z\"\n",
                      &path),
            path +
                ":3:15: key 'backends.a.decode_with': expected a backend that serves its decode "
                "itself, found \"b\", whose decode_with is \"c\"");
  EXPECT_EQ(LoadError(two, &path), "OK");  // each delegates the other phase: no chain
  // A router's table does not take them: they go to its plugin as parameters and are refused.
  EXPECT_NE(ComposeError("[backends.a]\nplugin = \"fixture_backend\"\n"
                         "[router]\nplugin = \"fixture_router\"\nfull = \"a\"\nsparse = \"a\"\n"
                         "decode_with = \"a\"\n",
                         &path)
                .find("key 'router.decode_with': expected a parameter of plugin"),
            std::string::npos);
  // Built in code: the same check when composing.
  absl::StatusOr<EngineConfig> config = ParseEngineConfig(
      "[plugins]\npaths = [\"" + FixtureDir() + "\"]\n[backends.a]\nplugin = \"fixture_backend\"\n",
      "inline.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  config->backends.at("a").decode_with = "nowhere";
  PluginRegistry registry;
  ASSERT_TRUE(PrepareRegistry(*config, registry).ok());
  absl::StatusOr<Composition> composition = Compose(*config, registry);
  ASSERT_FALSE(composition.ok());
  EXPECT_NE(composition.status().message().find(
                "key 'backends.a.decode_with': expected the name of another [backends.<name>] "
                "table (none defined), found \"nowhere\""),
            std::string::npos)
      << composition.status();
}

TEST(ConfigTest, WrongValueTypes) {
  const std::string path = ConfigPath();
  EXPECT_EQ(LoadError("[model]\nthreads = \"4\"\n", &path),
            path +
                ":2:11: key 'model.threads': expected an integer in [0, 4096], found string "
                "\"4\"");
  EXPECT_EQ(LoadError("model = 3\n", &path),
            path + ":1:9: key 'model': expected a table, found integer 3");
  EXPECT_EQ(LoadError("[backends]\nfull = \"full\"\n", &path),
            path + ":2:8: key 'backends.full': expected a table, found string \"full\"");
  EXPECT_EQ(LoadError("[backends.a]\nplugin = 7\n", &path),
            path + ":2:10: key 'backends.a.plugin': expected a plugin name, found integer 7");
  EXPECT_EQ(LoadError("[backends.a]\nplugin = \"x\"\nwhen = 1979-05-27\n", &path),
            path +
                ":3:8: key 'backends.a.when': expected a boolean, integer, float, string or "
                "list of integers/strings, found date/time");
  EXPECT_EQ(LoadError("[backends.a]\nplugin = \"x\"\nmix = [1, \"b\"]\n", &path),
            path +
                ":3:7: key 'backends.a.mix': expected a list of only integers or only "
                "strings, found a mixed array or an array of other values");
  EXPECT_EQ(ComposeError("[backends.a]\nplugin = \"fixture_backend\"\nverbose = \"yes\"\n", &path),
            path + ":5:11: key 'backends.a.verbose': expected a bool, found string \"yes\"");
}

TEST(ConfigTest, OutOfRangeValues) {
  const std::string path = ConfigPath();
  EXPECT_EQ(LoadError("[model]\nthreads = -1\n", &path),
            path +
                ":2:11: key 'model.threads': expected an integer in [0, 4096], found integer "
                "-1");
  EXPECT_EQ(LoadError("[model]\ndtype = \"fp8\"\n", &path),
            path + ":2:9: key 'model.dtype': expected \"f32\" or \"bf16\", found string \"fp8\"");
  EXPECT_EQ(LoadError("[model]\ndevice = \"cuda:-1\"\n", &path),
            path +
                ":2:10: key 'model.device': expected \"cpu\", \"cuda\" or \"cuda:N\" (N >= 0), "
                "found string \"cuda:-1\"");
  EXPECT_EQ(ComposeError("[backends.a]\nplugin = \"fixture_backend\"\nblock_size = 0\n", &path),
            path +
                ":5:14: key 'backends.a.block_size': expected an integer in [1, 4096], found "
                "integer 0");
  EXPECT_EQ(ComposeError("[backends.a]\nplugin = \"fixture_backend\"\ntemperature = 10.5\n", &path),
            path +
                ":5:15: key 'backends.a.temperature': expected a float in [0.0, 10.0], found "
                "float 10.5");
  EXPECT_EQ(LoadError("[backends.a]\nplugin = \"x\"\n[layers.x]\nbackend = \"a\"\n", &path),
            path + ":3:9: key 'layers.x': expected a layer index (0, 1, 2, ...), found 'x'");
}

TEST(ConfigTest, KvSection) {
  const std::string path = ConfigPath();
  EXPECT_EQ(
      LoadError("[kv]\npage_tokens = 0\n", &path),
      path + ":2:15: key 'kv.page_tokens': expected an integer in [1, 65536], found integer 0");
  EXPECT_EQ(LoadError("[kv]\npool_mib = \"big\"\n", &path),
            path +
                ":2:12: key 'kv.pool_mib': expected an integer in [0, 1073741824], found string "
                "\"big\"");
  EXPECT_EQ(LoadError("[kv]\npages = 3\n", &path).find(path + ":2:1: key 'kv.pages'"), 0u)
      << LoadError("[kv]\npages = 3\n", &path);
  auto config = ParseEngineConfig("[kv]\npage_tokens = 16\npool_mib = 8\n", "x.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->kv.page_tokens, 16);
  EXPECT_EQ(config->kv.pool_mib, 8);
  EngineOptions options = EngineOptionsFor(*config);
  EXPECT_EQ(options.kv_page_tokens, 16);
  EXPECT_EQ(options.kv_pool_bytes, size_t{8} << 20);
}

TEST(ConfigTest, AttentionSection) {
  const std::string path = ConfigPath();
  EXPECT_EQ(LoadError("[attention]\ndense_prefill = \"flash\"\n", &path),
            path +
                ":2:17: key 'attention.dense_prefill': expected one of \"auto\", \"cudnn\", "
                "\"fluxattn\", found string \"flash\"");
  EXPECT_EQ(
      LoadError("[attention]\nkernel = 1\n", &path).find(path + ":2:1: key 'attention.kernel'"), 0u)
      << LoadError("[attention]\nkernel = 1\n", &path);
  auto config = ParseEngineConfig("[attention]\ndense_prefill = \"cudnn\"\n", "x.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->attention.dense_prefill, "cudnn");
  EXPECT_EQ(EngineOptionsFor(*config).dense_prefill, "cudnn");
  EXPECT_EQ(ParseEngineConfig("", "x.toml")->attention.dense_prefill, "auto");
}

TEST(ConfigTest, SchedulerSection) {
  const std::string path = ConfigPath();
  EXPECT_EQ(LoadError("[scheduler]\nprefill_chunk_tokens = -1\n", &path),
            path +
                ":2:24: key 'scheduler.prefill_chunk_tokens': expected an integer in [0, 16777216] "
                "(0: whole prompts), found integer -1");
  EXPECT_EQ(LoadError("[scheduler]\nprefill_chunk_tokens = \"512\"\n", &path),
            path +
                ":2:24: key 'scheduler.prefill_chunk_tokens': expected an integer in [0, 16777216] "
                "(0: whole prompts), found string \"512\"");
  EXPECT_EQ(LoadError("[scheduler]\nmax_step_tokens = -3\n", &path),
            path +
                ":2:19: key 'scheduler.max_step_tokens': expected an integer in [0, 16777216] "
                "(0: no limit), found integer -3");
  EXPECT_EQ(LoadError("[scheduler]\nmax_batch = 1.5\n", &path),
            path +
                ":2:13: key 'scheduler.max_batch': expected an integer in [0, 65536] (0: no "
                "limit), found float 1.5");
  {
    auto parsed =
        ParseEngineConfig("[scheduler]\nmax_step_tokens = 4096\nmax_batch = 16\n", "x.toml");
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(EngineOptionsFor(*parsed).max_step_tokens, 4096);
    EXPECT_EQ(EngineOptionsFor(*parsed).max_batch, 16);
  }
  EXPECT_EQ(LoadError("[scheduler]\nchunk = 4\n", &path).find(path + ":2:1: key 'scheduler.chunk'"),
            0u)
      << LoadError("[scheduler]\nchunk = 4\n", &path);
  auto config = ParseEngineConfig("[scheduler]\nprefill_chunk_tokens = 2048\n", "x.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->scheduler.prefill_chunk_tokens, 2048);
  EXPECT_EQ(EngineOptionsFor(*config).prefill_chunk_tokens, 2048);
  EXPECT_EQ(config->locations.count("scheduler.prefill_chunk_tokens"), 1u);
  EXPECT_EQ(ParseEngineConfig("", "x.toml")->scheduler.prefill_chunk_tokens, 0);
}

TEST(ConfigTest, RouterNamingAMissingBackend) {
  const std::string path = ConfigPath();
  EXPECT_EQ(LoadError("[backends.full]\nplugin = \"a\"\n[backends.sparse]\nplugin = \"b\"\n"
                      "[router]\nplugin = \"r\"\nfull = \"full\"\nsparse = \"sprase\"\n",
                      &path),
            path +
                ":8:10: key 'router.sparse': expected the name of a [backends.<name>] table "
                "(full, sparse), found \"sprase\"");
  EXPECT_EQ(LoadError("[backends.full]\nplugin = \"a\"\n[router]\nplugin = \"r\"\nsparse = "
                      "\"full\"\n",
                      &path),
            path +
                ":3:1: key 'router.full': expected the name of the backend used when the "
                "router picks full attention, found no 'full' key");
  EXPECT_EQ(LoadError("[backends.full]\nplugin = \"a\"\n[layers.7]\nbackend = \"sparse\"\n", &path),
            path +
                ":4:11: key 'layers.7.backend': expected the name of a [backends.<name>] "
                "table (full), found \"sparse\"");
  EXPECT_EQ(LoadError("[backends.a]\nplugin = \"a\"\n[backends.b]\nplugin = \"b\"\n", &path),
            path +
                ": key 'router': expected a [router] table (required with more than one "
                "backend that is not another's prefill_with / decode_with), found none");
  // One backend that only serves another's phase leaves exactly one to route to.
  absl::StatusOr<EngineConfig> one = ParseEngineConfig(
      "[backends.a]\nplugin = \"a\"\ndecode_with = \"b\"\n[backends.b]\nplugin = \"b\"\n",
      "inline.toml");
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->router_full, "a");
  EXPECT_EQ(one->router_sparse, "a");
}

TEST(ConfigTest, UnknownPluginName) {
  // Only the fixture folder is scanned, so the list of known names is exact.
  const std::string path = WriteConfig("[backends.a]\nplugin = \"streeming\"\n");
  absl::StatusOr<EngineConfig> config = LoadEngineConfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  PluginRegistry registry;
  ASSERT_TRUE(registry.ScanDirectory(FixtureDir()).ok());
  absl::StatusOr<Composition> composition = Compose(*config, registry);
  ASSERT_FALSE(composition.ok());
  EXPECT_EQ(composition.status().message(),
            path +
                ":2:10: key 'backends.a.plugin': plugin 'streeming': expected one of the "
                "attention backend plugins found (fixture_backend, fixture_create_fails), "
                "found no plugin named so (searched " +
                Canonical(FixtureDir()) + ")");
}

TEST(ConfigTest, RouterUsedAsBackend) {
  const std::string path = ConfigPath();
  EXPECT_EQ(ComposeError("[backends.a]\nplugin = \"fixture_router\"\n", &path),
            path +
                ":4:10: key 'backends.a.plugin': plugin 'fixture_router': expected an "
                "attention backend plugin, found a routing policy (" +
                Canonical(FixturePath("fixture_router")) + ")");
}

TEST(ConfigTest, AbiMismatchThroughConfig) {
  const std::string path = ConfigPath();
  EXPECT_EQ(ComposeError("[backends.a]\nplugin = \"fixture_abi99\"\n", &path),
            path + ":4:10: key 'backends.a.plugin': plugin 'fixture_abi99': " +
                Canonical(FixturePath("fixture_abi99")) +
                ": expected plugin ABI major version 2 (core 0.1.0), found 99.0");
}

TEST(ConfigTest, PluginGivenByPath) {
  const std::string path = ConfigPath();
  // Missing file.
  EXPECT_EQ(
      ComposeError("[backends.a]\nplugin = \"./plugins/libfluxattn_gone.so\"\n", &path),
      path + ":4:10: key 'backends.a.plugin': " +
          (std::filesystem::path(path).parent_path() / "plugins/libfluxattn_gone.so").string() +
          ": expected a plugin shared library, found no such file");
  // A shared library that is not a plugin.
  EXPECT_EQ(
      ComposeError("[backends.a]\nplugin = \"" + FixturePath("fixture_no_descriptor") + "\"\n",
                   &path),
      path + ":4:10: key 'backends.a.plugin': " + Canonical(FixturePath("fixture_no_descriptor")) +
          ": expected a FluxAttn plugin exporting 'fluxattn_plugin_descriptor', found a "
          "shared library without it");
  // A valid one, loaded by path and then used by its name.
  EXPECT_EQ(ComposeError("[backends.a]\nplugin = \"" + FixturePath("fixture_backend") + "\"\n"),
            "OK");
}

TEST(ConfigTest, MissingPluginDirectory) {
  const std::string path = ConfigPath();
  EXPECT_EQ(LoadError("[plugins]\npaths = [\"does/not/exist\"]\n", &path),
            path +
                ":2:10: key 'plugins.paths': expected an existing plugin directory, found "
                "\"does/not/exist\" (" +
                (std::filesystem::path(path).parent_path() / "does/not/exist").string() +
                " does not exist)");
}

TEST(ConfigTest, RequiredRouterParameterAndCreateFailure) {
  const std::string path = ConfigPath();
  EXPECT_EQ(ComposeError("[backends.a]\nplugin = \"fixture_backend\"\n[router]\nplugin = "
                         "\"fixture_router\"\nfull = \"a\"\nsparse = \"a\"\n",
                         &path),
            path +
                ":5:1: key 'router.seed': expected a value (integer, required by plugin "
                "'fixture_router': required, no default), found none");
  EXPECT_EQ(ComposeError("[backends.a]\nplugin = \"fixture_create_fails\"\n", &path),
            path + ":3:1: table 'backends.a': plugin 'fixture_create_fails' (" +
                Canonical(FixturePath("fixture_create_fails")) +
                "): fixture refuses to be created");
}

}  // namespace
}  // namespace fluxattn
