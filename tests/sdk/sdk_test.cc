// The third-party plugin tooling end to end: `fluxattn check-plugin` passes the bundled plugins
// and fails plugins that each break one rule, naming the rule; docs/configuration.md is what
// `fluxattn plugins --markdown` generates; every core key the reference documents is accepted
// by the config parser.
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "fluxattn/config.h"
#include "gtest/gtest.h"

namespace fluxattn {
namespace {

struct Result {
  int exit_code = -1;
  std::string out;
};

// Runs the CLI with FLUXATTN_PLUGIN_PATH cleared, so only the build's plugins are found.
Result RunCli(const std::string& args) {
  Result r;
  const std::string command =
      std::string("env -u FLUXATTN_PLUGIN_PATH ") + FLUXATTN_SDK_CLI + " " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return r;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) r.out.append(buffer, n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string Bundled(const std::string& name) {
  return std::string(FLUXATTN_SDK_BUNDLED_PLUGIN_DIR) + "/libfluxattn_" + name + ".so";
}
std::string Faulty(const std::string& name) {
  return std::string(FLUXATTN_SDK_PLUGIN_DIR) + "/libfluxattn_" + name + ".so";
}

bool Has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(CheckPlugin, BundledAttentionBackendsPass) {
  for (const std::string name : {"full", "streaming"}) {
    Result r = RunCli("check-plugin " + Bundled(name));
    EXPECT_EQ(r.exit_code, 0) << r.out;
    EXPECT_FALSE(Has(r.out, "\nFAIL")) << r.out;
    for (const char* check :
         {"PASS  load: descriptor found; ABI 2.0", "PASS  parameter specs",
          "PASS  prefill matches the oracle: 7 shapes", "PASS  chunked prefill matches the oracle",
          "PASS  decode matches the oracle", "PASS  decode equals the last prefill row",
          "PASS  RetainedKv honoured by decode", "PASS  interleaved requests with their own state",
          "PASS  deterministic"}) {
      EXPECT_TRUE(Has(r.out, check)) << name << ": no '" << check << "' in\n" << r.out;
    }
  }
}

TEST(CheckPlugin, BundledRoutingPoliciesPass) {
  for (const std::string args : {"random", "static --param full_ratio=0.5",
                                 "static --param pattern=FSS --layers 6 --layers 13",
                                 "length --param min_tokens=5 --param above=other"}) {
    const std::string name = args.substr(0, args.find(' '));
    Result r = RunCli("check-plugin " + Bundled(name) + args.substr(name.size()));
    EXPECT_EQ(r.exit_code, 0) << r.out;
    for (const char* check :
         {"PASS  Prepare on synthetic models", "PASS  decisions valid", "PASS  deterministic"}) {
      EXPECT_TRUE(Has(r.out, check)) << args << ": no '" << check << "' in\n" << r.out;
    }
  }
}

TEST(CheckPlugin, ParametersFromTheCommandLineAreValidated) {
  Result r = RunCli("check-plugin " + Bundled("streaming") +
                    " --param sink_tokens=3 --param window_tokens=20 --param block_size=1");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  r = RunCli("check-plugin " + Bundled("streaming") + " --param block_size=0");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_TRUE(Has(r.out, "block_size")) << r.out;
  r = RunCli("check-plugin " + Bundled("streaming") + " --param window=big");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_TRUE(Has(r.out, "window")) << r.out;
}

TEST(CheckPlugin, ReleasingKvThatIsStillReadFails) {
  Result r = RunCli("check-plugin --seed 7 " + Faulty("sdk_forgets_sinks"));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(Has(r.out, "FAIL  RetainedKv honoured by decode: ")) << r.out;
  EXPECT_TRUE(Has(r.out, "whose page was released")) << r.out;
  EXPECT_TRUE(Has(r.out, "PASS  prefill matches the oracle")) << r.out;
}

TEST(CheckPlugin, WrongOutputFailsAgainstTheOracle) {
  Result r = RunCli("check-plugin " + Faulty("sdk_wrong_output") + " --json");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(Has(r.out, "\"name\": \"prefill matches the oracle\",\n      \"result\": \"FAIL\""))
      << r.out;
  EXPECT_TRUE(Has(r.out, "\"passed\": false")) << r.out;
}

TEST(CheckPlugin, RouterDecidingDifferentlyOnTheSameInputFails) {
  Result r = RunCli("check-plugin " + Faulty("sdk_flaky_router"));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(Has(r.out, "PASS  decisions valid")) << r.out;
  EXPECT_TRUE(Has(r.out, "FAIL  deterministic: ")) << r.out;
}

TEST(CheckPlugin, FilesThatAreNotPluginsFailToLoad) {
  Result r = RunCli("check-plugin /nonexistent/libfluxattn_none.so");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(Has(r.out, "FAIL  load: ")) << r.out;
  const std::string text = std::string(FLUXATTN_SDK_SOURCE_DIR) + "/CMakeLists.txt";
  r = RunCli("check-plugin " + text);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(Has(r.out, "FAIL  load: ")) << r.out;
}

TEST(ConfigurationDoc, IsWhatPluginsMarkdownGenerates) {
  Result r = RunCli("plugins --markdown");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  std::ifstream in(std::string(FLUXATTN_SDK_SOURCE_DIR) + "/docs/configuration.md");
  std::stringstream doc;
  doc << in.rdbuf();
  EXPECT_EQ(doc.str(), r.out)
      << "docs/configuration.md is out of date: run tools/update-config-doc.sh";
}

// Every core key in the reference, with a value of the documented type, parses.
TEST(ConfigurationDoc, DocumentedCoreKeysAreAccepted) {
  const std::string toml = R"(
[model]
path = "model"
device = "cuda:1"
dtype = "bf16"
threads = 3

[kv]
page_tokens = 32
pool_mib = 64

[attention]
dense_prefill = "fluxattn"

[scheduler]
prefill_chunk_tokens = 128
max_step_tokens = 4096
max_batch = 16

[plugins]
paths = ["plugins"]

[backends.a]
plugin = "full"

[backends.b]
plugin = "streaming"
prefill_with = "a"

[backends.c]
plugin = "xattention"
decode_with = "b"

[router]
plugin = "static"
full = "a"
sparse = "b"

[routers.other]
plugin = "random"

[layers.0]
backend = "a"
)";
  // Ties this config to the document: every key of a core section's table appears above.
  std::ifstream in(std::string(FLUXATTN_SDK_SOURCE_DIR) + "/docs/configuration.md");
  std::string line;
  bool in_core = false;
  int keys = 0;
  while (std::getline(in, line)) {
    if (line.rfind("## ", 0) == 0) in_core = line == "## Core sections";
    if (!in_core || line.rfind("| `", 0) != 0) continue;
    const std::string key = line.substr(3, line.find('`', 3) - 3);
    EXPECT_TRUE(Has(toml, "\n" + key + " = ")) << "documented key '" << key << "' not covered";
    ++keys;
  }
  EXPECT_GE(keys, 10);
  absl::StatusOr<EngineConfig> config = ParseEngineConfig(toml, "doc.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->model.device, "cuda:1");
  EXPECT_EQ(config->model.threads, 3);
  EXPECT_EQ(config->kv.page_tokens, 32);
  EXPECT_EQ(config->kv.pool_mib, 64);
  EXPECT_EQ(config->attention.dense_prefill, "fluxattn");
  EXPECT_EQ(config->scheduler.prefill_chunk_tokens, 128);
  EXPECT_EQ(config->scheduler.max_step_tokens, 4096);
  EXPECT_EQ(config->scheduler.max_batch, 16);
  EXPECT_EQ(config->router_sparse, "b");
  EXPECT_EQ(config->layer_backends.at(0), "a");
  EXPECT_EQ(config->backends.at("b").prefill_with, "a");
  EXPECT_EQ(config->backends.at("c").decode_with, "b");
  EXPECT_EQ(config->routers.count("other"), 1u);
  EXPECT_FALSE(ParseEngineConfig("[model]\nundocumented = 1\n", "doc.toml").ok());
}

}  // namespace
}  // namespace fluxattn
