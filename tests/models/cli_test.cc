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
#include "fluxattn/models/decoder_model.h"
#include "fluxattn/models/model_config.h"
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
  CliRun r =
      Cli(absl::StrCat("generate --model ", dir, " --prompt-ids ", absl::StrJoin(prompt, ","),
                       " --max-new-tokens 10 --ignore-eos --threads 2 --json --trace ", trace));
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

TEST(Cli, LogitsOfTheLastPositionMatchTransformers) {
  const std::string dir = FixturePath("llama3_bf16_tied_sharded");
  const auto ref = ReadJson(dir + "/reference.json");
  const auto prompt = ref["prompts"][1].get<std::vector<int64_t>>();
  CliRun r =
      Cli(absl::StrCat("generate --model ", dir, " --prompt-ids ", absl::StrJoin(prompt, ","),
                       " --max-new-tokens 1 --threads 2 --json --logits"));
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  const auto got = j["logits"].get<std::vector<float>>();
  const auto want = ref["last_logits"][1].get<std::vector<double>>();
  ASSERT_EQ(got.size(), want.size());
  EXPECT_LT(testing::RelativeError(got, want), 1e-4);
  EXPECT_TRUE(r.err.empty()) << r.err;
}

TEST(Cli, PositionsPastTheTrainedRangeAreAWarning) {
  const std::string dir = FixturePath("llama3_bf16_tied_sharded");  // max_position_embeddings 256
  CliRun r = Cli(absl::StrCat("generate --model ", dir,
                              " --prompt-ids 5,6,7 --max-new-tokens 260 --ignore-eos --json"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: prompt 0: 3 tokens + 260 new reach position 263, past "
                       "max_position_embeddings 256"),
            std::string::npos)
      << r.err;
}

TEST(Cli, StreamsTokenIdsWithoutTokenizer) {
  const std::string dir = FixturePath("qwen3_f32");
  const auto ref = ReadJson(dir + "/reference.json");
  const auto prompt = ref["prompts"][0].get<std::vector<int64_t>>();
  CliRun r = Cli(absl::StrCat("generate --model ", dir, " --prompt-ids ",
                              absl::StrJoin(prompt, ","), " --max-new-tokens 10 --ignore-eos"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out,
            absl::StrCat(absl::StrJoin(ref["greedy"][0].get<std::vector<int64_t>>(), " "), " \n"));
}

TEST(Cli, ErrorsAreOneLineWithExitCodes) {
  CliRun usage = Cli("generate --prompt-ids 1,2");
  EXPECT_EQ(usage.code, 2);
  EXPECT_NE(usage.err.find("--model"), std::string::npos) << usage.err;
  CliRun bad_ids =
      Cli(absl::StrCat("generate --model ", FixturePath("qwen3_f32"), " --prompt-ids 1,x"));
  EXPECT_EQ(bad_ids.code, 2) << bad_ids.err;
  CliRun range =
      Cli(absl::StrCat("generate --model ", FixturePath("qwen3_f32"), " --prompt-ids 1,100000"));
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

// Writes `weights` as one F32 safetensors file.
void WriteSafetensors(const WeightSource& weights, const std::string& path) {
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const std::string& name : weights.Names()) {
    Tensor t = *weights.GetF32(name, {});
    header[name] = {{"dtype", "F32"},
                    {"shape", t.shape()},
                    {"data_offsets", {data.size(), data.size() + t.nbytes()}}};
    data.append(static_cast<const char*>(t.raw_data()), t.nbytes());
  }
  const std::string text = header.dump();
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((text.size() >> (8 * i)) & 0xff);
  testing::WriteFile(path, bytes + text + data);
}

// --prompt-file goes through the checkpoint's tokenizer.json: the ids equal those recorded with
// the tokenizers library (special tokens added), so the generation equals --prompt-ids.
TEST(Cli, PromptTextUsesTheTokenizer) {
  const std::string tok = absl::StrCat(FLUXATTN_MODEL_FIXTURES, "/../tokenizer/qwen2");
  const auto cases = ReadJson(tok + "/cases.json");
  const std::string dir = testing::TempDir("cli_tokenizer");
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    std::filesystem::copy_file(tok + "/" + f, dir + "/" + f);
  }
  auto config = ReadJson(FixturePath("qwen2_f32") + "/config.json");
  config["vocab_size"] = cases["vocab_size"];
  testing::WriteFile(dir + "/config.json", config.dump());
  auto spec = models::LoadModelConfig(dir);
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto weights = models::RandomWeights(*spec, 3);
  ASSERT_TRUE(weights.ok());
  WriteSafetensors(**weights, dir + "/model.safetensors");
  int checked = 0;
  for (const auto& c : cases["tricky"]) {
    const auto ids = c["ids_with_special_tokens"].get<std::vector<int64_t>>();
    if (ids.empty() || checked == 3) continue;
    ++checked;
    testing::WriteFile(dir + "/prompt.txt", c["text"].get<std::string>());
    const std::string common =
        absl::StrCat("generate --model ", dir, " --max-new-tokens 4 --ignore-eos --json ");
    CliRun text = Cli(common + "--prompt-file " + dir + "/prompt.txt");
    CliRun given = Cli(common + "--prompt-ids " + absl::StrJoin(ids, ","));
    ASSERT_EQ(text.code, 0) << text.err;
    ASSERT_EQ(given.code, 0) << given.err;
    auto a = nlohmann::json::parse(text.out), b = nlohmann::json::parse(given.out);
    EXPECT_EQ(a["tokens"], b["tokens"]) << c["text"];
    EXPECT_TRUE(a["text"].is_string());
    EXPECT_EQ(a["text"], b["text"]);
  }
  EXPECT_EQ(checked, 3);
}

}  // namespace
}  // namespace fluxattn
