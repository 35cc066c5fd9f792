// `fluxattn plugins` end to end: the real binary, the fixture plugins, its JSON output.
#include <sys/wait.h>

#include <cstdio>
#include <string>

#include "gtest/gtest.h"
#include "test_util.h"

namespace fluxattn {
namespace {

struct Result {
  int exit_code = -1;
  std::string out;
};

Result RunCli(const std::string& args) {
  Result r;
  const std::string command = testing_util::CliPath() + " " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return r;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) r.out.append(buffer, n);
  int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(CliPluginsTest, ListsFixturePluginsWithCapabilitiesParametersAndFailures) {
  Result r = RunCli("plugins --path " + testing_util::FixtureDir());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("  fixture_backend 0.3.1  (ABI 2.0)  "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("    capabilities: devices cpu; dtypes f32; head dims 64,128; prefill yes; "
                       "decode yes; layout shape-only\n"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("      block_size (integer, default 64, [1, 4096]): KV block size in "
                       "tokens\n"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("      mode (string, default \"dense\", one of \"dense\", \"banded\"): "),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("      seed (integer, required, >= 0): required, no default\n"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("capabilities: unavailable (plugin 'fixture_create_fails' ("),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("load failures:\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("libfluxattn_fixture_abi99.so: expected plugin ABI major version 2"),
            std::string::npos)
      << r.out;
}

TEST(CliPluginsTest, JsonOutput) {
  Result r = RunCli("plugins --json --path " + testing_util::FixtureDir());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(r.out.front(), '{');
  EXPECT_NE(r.out.find("\"name\": \"fixture_router\",\n      \"kind\": \"routing policy\""),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("\"head_dims\": [\n          64,\n          128\n        ]"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("\"error\": \""), std::string::npos) << r.out;
}

TEST(CliPluginsTest, MissingDirectoryIsOneErrorLine) {
  Result r = RunCli("plugins --path /nonexistent/dir");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out,
            "fluxattn: error: plugin directory '/nonexistent/dir': expected an existing "
            "directory, found nothing\n");
}

}  // namespace
}  // namespace fluxattn
