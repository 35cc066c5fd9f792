// `fluxattn generate` end to end: tokens against the transformers fixture, JSON and trace
// output, exit codes and one-line errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "test_support.h"

namespace fluxattn {
namespace {

using testing::FixturePath;
using testing::ReadJson;

struct CliRun {
  int code = 0;
  std::string out;
  std::string err;
};

CliRun Cli(const std::string& args) {
  const std::string dir = testing::TempDir("cli");
  const std::string err_path = dir + "/stderr";
  const std::string cmd = absl::StrCat(FLUXATTN_CLI, " ", args, " 2>", err_path);
  CliRun run;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) run.out.append(buf.data(), n);
  const int status = ::pclose(pipe);
  run.code = WEXITSTATUS(status);
  std::ifstream in(err_path);
  run.err.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return run;
}

TEST(Cli, GenerateJsonMatchesFixture) {
  const std::string dir = FixturePath("llama3_bf16_tied_sharded");
  const auto ref = ReadJson(dir + "/reference.json");
  const auto prompt = ref["prompts"][2].get<std::vector<int64_t>>();
  const std::string trace = testing::TempDir("cli_trace") + "/trace.json";
  CliRun r = Cli(absl::StrCat("generate --model ", dir, " --prompt-ids ", absl::StrJoin(prompt, ","),
                           " --max-new-tokens 10 --ignore-eos --threads 2 --json --trace ",
                           trace));
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["tokens"], ref["greedy"][2]);
  ASSERT_EQ(j["routing"].size(), 3u);
  EXPECT_EQ(j["routing"][0]["backend"], "full");
  EXPECT_GT(j["timing"]["prefill_tokens_per_second"].get<double>(), 0);
  EXPECT_GT(j["kv_bytes"].get<int64_t>(), 0);
  auto t = ReadJson(trace);
  EXPECT_EQ(t["requests"][0]["prompt_tokens"], prompt.size());
  EXPECT_EQ(t["requests"][0]["layers"].size(), 3u);
}

TEST(Cli, StreamsTokenIdsWithoutTokenizer) {
  const std::string dir = FixturePath("qwen3_f32");
  const auto ref = ReadJson(dir + "/reference.json");
  const auto prompt = ref["prompts"][0].get<std::vector<int64_t>>();
  CliRun r = Cli(absl::StrCat("generate --model ", dir, " --prompt-ids ",
                           absl::StrJoin(prompt, ","), " --max-new-tokens 10 --ignore-eos"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, absl::StrCat(absl::StrJoin(ref["greedy"][0].get<std::vector<int64_t>>(), " "),
                                " \n"));
}

TEST(Cli, ErrorsAreOneLineWithExitCodes) {
  CliRun usage = Cli("generate --prompt-ids 1,2");
  EXPECT_EQ(usage.code, 2);
  EXPECT_NE(usage.err.find("--model"), std::string::npos) << usage.err;
  CliRun bad_ids = Cli(absl::StrCat("generate --model ", FixturePath("qwen3_f32"),
                                 " --prompt-ids 1,x"));
  EXPECT_EQ(bad_ids.code, 2) << bad_ids.err;
  CliRun range = Cli(absl::StrCat("generate --model ", FixturePath("qwen3_f32"),
                               " --prompt-ids 1,100000"));
  EXPECT_EQ(range.code, 1);
  EXPECT_NE(range.err.find("100000"), std::string::npos) << range.err;
  EXPECT_EQ(std::count(range.err.begin(), range.err.end(), '\n'), 1) << range.err;
  CliRun text = Cli(absl::StrCat("generate --model ", FixturePath("qwen3_f32"), " --prompt hi"));
  EXPECT_EQ(text.code, 1);
  EXPECT_NE(text.err.find("tokenizer"), std::string::npos) << text.err;
  CliRun missing = Cli("generate --model /nonexistent/dir --prompt-ids 1");
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.err.find("/nonexistent/dir"), std::string::npos) << missing.err;
}

}  // namespace
}  // namespace fluxattn
