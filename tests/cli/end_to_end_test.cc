// The bench, eval and compare commands run as a user runs them, on the bundled demo configs
// (the small trained Flux checkpoint models/demo/flux-tiny), at lengths small enough to take
// seconds. What is checked is what the commands must get right whatever the model answers: exit
// codes, exact prompt lengths, KV sizes, SA ratios of fixed routers, and files that read back.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "eval/csv.h"
#include "eval/tasks.h"
#include "fluxattn/models/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace fluxattn::eval {
namespace {

using ::testing::HasSubstr;

const std::string kConfigs = absl::StrCat(FLUXATTN_SOURCE_DIR, "/models/demo/configs/");

struct RunResult {
  int code = -1;
  std::string out;
  std::string err;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// `env`: assignments put before the command ("NAME=value ...").
RunResult RunCli(const std::string& args, const std::string& env = "") {
  static int calls = 0;
  const std::string err_path =
      absl::StrCat(::testing::TempDir(), "/cli_stderr_", getpid(), "_", ++calls, ".txt");
  const std::string cmd =
      absl::StrCat(env.empty() ? "" : env + " ", FLUXATTN_CLI_BINARY, " ", args, " 2>", err_path);
  RunResult r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) r.out.append(buf, n);
  const int status = pclose(pipe);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = ReadFile(err_path);
  std::filesystem::remove(err_path);
  return r;
}

std::string Fresh(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/fluxattn_cli_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Bytes of a full KV cache of the demo model: 8 layers, 2 KV heads of 32 floats, K and V,
// pages of 64 positions.
size_t FullKvBytes(int64_t positions) {
  const int64_t pages = (positions + 63) / 64;
  return static_cast<size_t>(8 * pages * 64 * 2 * 2 * 32 * 4);
}

// --batch runs requests together, each with its own seed: the random router then decides per
// request, and the throughput counts every request's tokens.
TEST(Bench, BatchOfSeededRequests) {
  const std::string dir = Fresh("bench_batch");
  RunResult r = RunCli(absl::StrCat("bench --config ", kConfigs,
                                    "random_hybrid.toml --context 300 --decode-tokens 3 --batch 3 "
                                    "--threads 1 --json ",
                                    dir, "/b.json"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("decode tok/s"));
  auto json = nlohmann::json::parse(ReadFile(dir + "/b.json"));
  ASSERT_EQ(json["bench"].size(), 1u);
  const auto& row = json["bench"][0];
  EXPECT_EQ(row["batch"].get<int>(), 3);
  const double step_ms = row["decode_ms_per_token"].get<double>();
  const double tok_s = row["decode_tokens_per_second"].get<double>();
  ASSERT_GT(step_ms, 0.0);
  // Three tokens per step: the throughput is about 3000 / (ms per step); the median step and
  // the mean differ a little.
  EXPECT_GT(tok_s, 0.5 * 3000.0 / step_ms);
  EXPECT_LT(tok_s, 2.0 * 3000.0 / step_ms);
  EXPECT_EQ(row["kv_bytes_full_cache"].get<size_t>(), FullKvBytes(300 + 3));
  RunResult bad = RunCli(absl::StrCat("bench --config ", kConfigs, "fa_only.toml --batch 0"));
  EXPECT_EQ(bad.code, 2) << bad.err;
  EXPECT_THAT(bad.err, HasSubstr("--batch"));
}

// --temperature / --top-k / --top-p sample every request (on the CPU from the host's logits);
// values outside their ranges are usage errors naming the flag, and FLUXATTN_DEVICE_SAMPLING
// takes 0 or 1 only.
TEST(Bench, SampledRequestsAndTheirRanges) {
  RunResult r = RunCli(absl::StrCat("bench --config ", kConfigs,
                                    "fa_only.toml --context 64 --decode-tokens 3 --batch 2 "
                                    "--threads 1 --temperature 0.8 --top-k 20 --top-p 0.9"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("decode tok/s"));
  for (const char* flag : {"--temperature -1", "--top-p 0", "--top-p 1.5", "--top-k -2"}) {
    SCOPED_TRACE(flag);
    RunResult bad = RunCli(absl::StrCat("bench --config ", kConfigs, "fa_only.toml ", flag));
    EXPECT_EQ(bad.code, 2) << bad.err;
    EXPECT_THAT(bad.err, HasSubstr(std::string(flag).substr(0, std::string(flag).find(' '))));
  }
  RunResult env = RunCli(
      absl::StrCat("bench --config ", kConfigs, "fa_only.toml --context 64 --decode-tokens 1"),
      "FLUXATTN_DEVICE_SAMPLING=yes");
  EXPECT_EQ(env.code, 1) << env.err;
  EXPECT_THAT(env.err, HasSubstr("FLUXATTN_DEVICE_SAMPLING"));
}

TEST(Bench, ExactLengthsKvAndFixedRoutersSaRatios) {
  const std::string dir = Fresh("bench");
  RunResult r =
      RunCli(absl::StrCat("bench --config ", kConfigs, "fa_only.toml --config ", kConfigs,
                          "static_hybrid.toml --context 600,1k --decode-tokens 3 --threads 1",
                          " --json ", dir, "/b.json --csv ", dir, "/b.csv"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("prefill tok/s"));
  auto json = nlohmann::json::parse(ReadFile(dir + "/b.json"));
  ASSERT_EQ(json["bench"].size(), 4u);
  std::map<std::pair<std::string, int64_t>, nlohmann::json> by;
  for (const auto& row : json["bench"]) {
    by[{row["config"].get<std::string>(), row["context"].get<int64_t>()}] = row;
    // The cache holds the prompt and every decoded token but the last: context + 3 positions.
    EXPECT_EQ(row["kv_bytes_full_cache"].get<size_t>(),
              FullKvBytes(row["context"].get<int64_t>() + 3));
    EXPECT_GT(row["prefill_seconds"].get<double>(), 0.0);
    EXPECT_GT(row["decode_ms_per_token"].get<double>(), 0.0);
  }
  for (int64_t ctx : {600, 1024}) {
    const auto& fa = by[{"fa_only", ctx}];
    const auto& hybrid = by[{"static_hybrid", ctx}];
    EXPECT_EQ(fa["sa_ratio"].get<double>(), 0.0);
    EXPECT_EQ(hybrid["sa_ratio"].get<double>(), 0.75);  // pattern "FSSS" on 8 layers
    EXPECT_EQ(fa["kv_bytes"].get<size_t>(), fa["kv_bytes_full_cache"].get<size_t>());
    // Streaming layers (sink 64, window 256, block 128) drop the middle of the prompt.
    EXPECT_LT(hybrid["kv_bytes"].get<size_t>(), fa["kv_bytes"].get<size_t>());
  }
  auto csv = ParseCsv(ReadFile(dir + "/b.csv"));
  ASSERT_TRUE(csv.ok());
  ASSERT_EQ(csv->size(), 5u);
  EXPECT_EQ((*csv)[0][0], "config");
}

TEST(Eval, UsesTheTasksOfTheGeneratorAndScoresEverySample) {
  const std::string dir = Fresh("eval");
  RunResult r = RunCli(absl::StrCat("eval --config ", kConfigs,
                                    "static_hybrid.toml --tasks passkey,kv_retrieval,lm_ppl "
                                    "--lengths 300 --samples 2 --seed 4 --details --json ",
                                    dir, "/e.json"));
  ASSERT_EQ(r.code, 0) << r.err;
  auto json = nlohmann::json::parse(ReadFile(dir + "/e.json"));
  ASSERT_EQ(json["results"].size(), 3u);
  auto tok =
      models::Tokenizer::FromModelDir(absl::StrCat(FLUXATTN_SOURCE_DIR, "/models/demo/flux-tiny"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  TaskGenerator gen(**tok);
  for (const auto& res : json["results"]) {
    const std::string task = res["task"];
    EXPECT_EQ(res["samples"], 2);
    EXPECT_EQ(res["sa_ratio"].get<double>(), 0.75);  // static_hybrid: "FSSS" on 8 layers
    ASSERT_EQ(res["details"].size(), 2u);
    int correct = 0;
    for (size_t i = 0; i < 2; ++i) {
      const auto& d = res["details"][i];
      EXPECT_EQ(d["seed"], 4 + i);
      TaskKind kind = (*ParseTaskList(task, "task"))[0];
      auto sample = gen.Generate(kind, 300, 4 + i);
      ASSERT_TRUE(sample.ok());
      EXPECT_EQ(d["prompt_tokens"].get<int64_t>(), static_cast<int64_t>(sample->prompt_ids.size()));
      EXPECT_LE(d["prompt_tokens"].get<int64_t>(), 300);
      if (task == "lm_ppl") {
        EXPECT_GT(d["nll"].get<double>(), 0.0);
      } else {
        EXPECT_EQ(d["expected"], sample->answer);
        correct += d["correct"].get<bool>() ? 1 : 0;
      }
    }
    if (task == "lm_ppl") {
      EXPECT_TRUE(res["accuracy"].is_null());
      EXPECT_GT(res["perplexity"].get<double>(), 1.0);
    } else {
      EXPECT_EQ(res["correct"].get<int>(), correct);
      EXPECT_DOUBLE_EQ(res["accuracy"].get<double>(), correct / 2.0);
    }
  }
}

TEST(Compare, TableCsvJsonAndSvg) {
  const std::string dir = Fresh("compare");
  RunResult r = RunCli(absl::StrCat("compare ", kConfigs, "fa_only.toml ", kConfigs,
                                    "flux_router.toml --tasks passkey,lm_ppl --lengths 256,600 "
                                    "--samples 1 --decode-tokens 2 --threads 1 --out ",
                                    dir));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("prefill x"));
  EXPECT_THAT(r.out, HasSubstr(dir + "/compare.svg"));
  auto csv = ParseCsv(ReadFile(dir + "/compare.csv"));
  ASSERT_TRUE(csv.ok());
  ASSERT_EQ(csv->size(), 5u);  // header + 2 configs x 2 lengths
  const CsvRow& header = (*csv)[0];
  const size_t speedup =
      std::find(header.begin(), header.end(), "prefill_speedup") - header.begin();
  ASSERT_LT(speedup, header.size());
  EXPECT_EQ((*csv)[1][0], "fa_only");
  EXPECT_EQ((*csv)[1][speedup], "1.0000");
  auto json = nlohmann::json::parse(ReadFile(dir + "/compare.json"));
  EXPECT_EQ(json["rows"].size(), 4u);
  EXPECT_EQ(json["baseline"], "fa_only");
  for (const auto& row : json["rows"]) {
    if (row["config"] == "fa_only") EXPECT_EQ(row["sa_ratio"].get<double>(), 0.0);
  }
  const std::string svg = ReadFile(dir + "/compare.svg");
  const std::regex point("<circle class=\"point\"");
  EXPECT_EQ(
      std::distance(std::sregex_iterator(svg.begin(), svg.end(), point), std::sregex_iterator()),
      4);
  EXPECT_THAT(svg, HasSubstr(">flux_router</text>"));
}

// A phase served by another backend instance ([backends.<name>] prefill_with / decode_with),
// every layer routed to `x`. Each phase is what its instance gives alone: the prompt logits of
// quest with prefill_with = "s" are those of `s` alone (and not quest's dense prefill), those of
// xattention with decode_with = "s" are xattention's; the KV that stays is the decode
// instance's (`s`: sinks + window, as `s` alone keeps). Chunked prefill changes nothing, and the
// trace names who ran each phase. (Every decode step against an oracle: PluginEngine.
// PhaseDelegationMatchesAPhaseSwitchingOracle.)
TEST(Generate, PhaseDelegationRunsEachPhaseOnItsInstance) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/delegation_", getpid());
  std::filesystem::create_directories(dir);
  const std::string model = absl::StrCat(FLUXATTN_SOURCE_DIR, "/models/demo/flux-tiny");
  auto write = [&](const std::string& name, const std::string& body) {
    const std::string path = absl::StrCat(dir, "/", name);
    std::ofstream(path) << "[model]\npath = \"" << model << "\"\n\n" << body;
    return path;
  };
  const std::string s =
      "[backends.s]\nplugin = \"streaming\"\nsink_tokens = 32\nwindow_tokens = 64\n"
      "block_size = 32\n\n";
  const std::string on_x =
      "[router]\nplugin = \"static\"\nfull = \"s\"\nsparse = \"x\"\npattern = \"S\"\n\n";
  const std::string quest =
      "[backends.x]\nplugin = \"quest\"\npage_size = 16\nbudget_tokens = 64\n";
  const std::string xattn = "[backends.x]\nplugin = \"xattention\"\nblock_size = 32\n";
  const std::string chunked = "[scheduler]\nprefill_chunk_tokens = 64\n\n";
  const std::string s_alone = write("s_alone.toml", s);
  const std::string quest_alone = write("quest_alone.toml", quest);
  const std::string quest_delegated =
      write("quest_delegated.toml", s + on_x + quest + "prefill_with = \"s\"\n");
  const std::string xattn_alone = write("xattn_alone.toml", xattn);
  const std::string xattn_delegated =
      write("xattn_delegated.toml", s + on_x + xattn + "decode_with = \"s\"\n");
  const std::string xattn_delegated_chunked =
      write("xattn_delegated_chunked.toml", chunked + s + on_x + xattn + "decode_with = \"s\"\n");
  std::string ids;
  for (int i = 0; i < 300; ++i) absl::StrAppend(&ids, i == 0 ? "" : ",", (i * 37 + 11) % 500);
  auto generate = [&](const std::string& config, int tokens) {
    RunResult r =
        RunCli(absl::StrCat("generate --config ", config, " --prompt-ids ", ids,
                            " --max-new-tokens ", tokens, " --ignore-eos --json --logits"));
    EXPECT_EQ(r.code, 0) << config << "\n" << r.err;
    return r.code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json();  // one prompt: one object
  };
  // The prompt: one new token, sampled from the prompt's last logits.
  {
    const nlohmann::json delegated = generate(quest_delegated, 1);
    const nlohmann::json alone = generate(s_alone, 1);
    ASSERT_TRUE(delegated.contains("logits") && alone.contains("logits"));
    EXPECT_EQ(delegated["tokens"], alone["tokens"]);
    EXPECT_EQ(delegated["logits"], alone["logits"]);
    EXPECT_NE(delegated["logits"], generate(quest_alone, 1)["logits"]);
    const nlohmann::json x = generate(xattn_delegated, 1);
    const nlohmann::json x_alone = generate(xattn_alone, 1);
    ASSERT_TRUE(x.contains("logits") && x_alone.contains("logits"));
    EXPECT_EQ(x["tokens"], x_alone["tokens"]);
    EXPECT_EQ(x["logits"], x_alone["logits"]);
  }
  // Prompt and 12 decode steps: the KV that stays.
  const nlohmann::json s_run = generate(s_alone, 12);
  const nlohmann::json x_run = generate(xattn_delegated, 12);
  const nlohmann::json x_alone_run = generate(xattn_alone, 12);
  const nlohmann::json q_run = generate(quest_delegated, 12);
  const nlohmann::json q_alone_run = generate(quest_alone, 12);
  ASSERT_TRUE(s_run.contains("kv_bytes") && x_run.contains("kv_bytes"));
  EXPECT_EQ(x_run["kv_bytes"], s_run["kv_bytes"]);
  EXPECT_LT(x_run["kv_bytes"].get<size_t>(), x_alone_run["kv_bytes"].get<size_t>());
  EXPECT_EQ(q_run["kv_bytes"], q_alone_run["kv_bytes"]);
  // Until the prompt's last chunk the KV that xattention's prefill reads stays, though the decode
  // instance would keep only sink + window.
  const nlohmann::json x_chunked = generate(xattn_delegated_chunked, 12);
  EXPECT_EQ(x_chunked["tokens"], x_run["tokens"]);
  EXPECT_EQ(x_chunked["logits"], x_run["logits"]);
  EXPECT_EQ(x_chunked["kv_bytes"], x_run["kv_bytes"]);
  for (const auto& [run, phase] :
       {std::pair{&x_run, "decode_backend"}, std::pair{&x_chunked, "decode_backend"},
        std::pair{&q_run, "prefill_backend"}}) {
    ASSERT_FALSE((*run)["routing"].empty());
    for (const nlohmann::json& layer : (*run)["routing"]) {
      EXPECT_EQ(layer["backend"], "x");
      EXPECT_EQ(layer[phase], "s") << layer.dump();
    }
  }
  for (const nlohmann::json* run : {&x_alone_run, &q_alone_run}) {
    for (const nlohmann::json& layer : (*run)["routing"]) {
      EXPECT_FALSE(layer.contains("decode_backend") || layer.contains("prefill_backend"))
          << layer.dump();
    }
  }
}

// The phase modes quest (`prefill`), xattention and triangle (`decode`) once had inside
// themselves: one line naming the file, line and key, and what to write instead.
TEST(Generate, RetiredPhaseModesNameTheKeyAndTheDelegation) {
  const std::string dir = Fresh("retired_modes");
  const std::string model = absl::StrCat(FLUXATTN_SOURCE_DIR, "/models/demo/flux-tiny");
  struct Retired {
    std::string table, key, use;
  };
  for (const Retired& c : std::vector<Retired>{
           {"plugin = \"xattention\"\ndecode = \"streaming\"\n", "decode", "decode_with"},
           {"plugin = \"xattention\"\ndecode_window_tokens = 64\n", "decode_window_tokens",
            "decode_with"},
           {"plugin = \"triangle\"\ndecode = \"streaming\"\n", "decode", "decode_with"},
           {"plugin = \"quest\"\nprefill = \"streaming\"\n", "prefill", "prefill_with"}}) {
    SCOPED_TRACE(c.table);
    const std::string config = absl::StrCat(dir, "/", c.key, "_", c.table.size(), ".toml");
    std::ofstream(config) << "[model]\npath = \"" << model << "\"\n\n[backends.x]\n" << c.table;
    RunResult r = RunCli(absl::StrCat("generate --config ", config, " --prompt-ids 1,2,3"));
    EXPECT_NE(r.code, 0);
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    // Line 6, at the value.
    EXPECT_THAT(r.err, HasSubstr(absl::StrCat(config, ":6:", c.key.size() + 4, ": key 'backends.x.",
                                              c.key, "': expected a parameter of plugin ")));
    EXPECT_THAT(r.err, HasSubstr(absl::StrCat("found unknown key '", c.key, "'")));
    EXPECT_THAT(r.err, HasSubstr(absl::StrCat("use ", c.use, " = ")));
  }
}

TEST(Usage, BadFlagsAreExitCodeTwoWithOneLine) {
  for (const std::string& args :
       {absl::StrCat("bench --config ", kConfigs, "fa_only.toml --context 4q"),
        absl::StrCat("eval --config ", kConfigs, "fa_only.toml --tasks nope"),
        absl::StrCat("eval --config ", kConfigs, "fa_only.toml --lengths 1k,,2k"),
        absl::StrCat("compare ", kConfigs, "fa_only.toml --samples 0"),
        std::string("eval --lengths 1k"), std::string("compare"),
        std::string("bench --config /nonexistent.toml")}) {
    RunResult r = RunCli(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.err;
    EXPECT_FALSE(r.err.empty()) << args;
  }
  RunResult bad = RunCli(absl::StrCat("bench --config ", kConfigs, "fa_only.toml --context 4q"));
  EXPECT_THAT(bad.err, HasSubstr("\"4q\""));
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1);
}

// compare --server: configs and --server exclude each other, --model is required, and a URL
// with no server behind it is one line naming it.
TEST(Usage, CompareServerErrorsNameTheFlag) {
  RunResult both = RunCli(absl::StrCat("compare ", kConfigs, "fa_only.toml --server http://x"));
  EXPECT_EQ(both.code, 2) << both.err;
  EXPECT_THAT(both.err, HasSubstr("either configs or --server"));
  RunResult no_model = RunCli("compare --server http://127.0.0.1:1");
  EXPECT_EQ(no_model.code, 2) << no_model.err;
  EXPECT_THAT(no_model.err, HasSubstr("--model"));
  RunResult down = RunCli(absl::StrCat("compare --server http://127.0.0.1:1 --model ", kConfigs,
                                       "../flux-tiny --tasks passkey --lengths 256 --samples 1"));
  EXPECT_NE(down.code, 0);
  EXPECT_THAT(down.err, HasSubstr("http://127.0.0.1:1"));
  EXPECT_EQ(std::count(down.err.begin(), down.err.end(), '\n'), 1) << down.err;
}

TEST(Usage, HelpHasExamples) {
  for (const char* cmd : {"bench", "eval", "compare"}) {
    RunResult r = RunCli(absl::StrCat(cmd, " --help"));
    EXPECT_EQ(r.code, 0) << cmd;
    EXPECT_THAT(r.out, HasSubstr("Examples:")) << cmd;
  }
}

TEST(Failure, UnloadableModelIsExitCodeOne) {
  const std::string dir = Fresh("failure");
  const std::string config = dir + "/broken.toml";
  std::ofstream(config) << "[model]\npath = \"no-such-model\"\n[backends.full]\nplugin = "
                           "\"full\"\n";
  RunResult r = RunCli(absl::StrCat("eval --config ", config, " --tasks passkey --lengths 300"));
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("no-such-model"));
  r = RunCli(absl::StrCat("compare ", kConfigs, "fa_only.toml ", config,
                          " --tasks passkey --lengths 300 --samples 1 --out ", dir));
  EXPECT_EQ(r.code, 1) << r.err;
}

// cuDNN's attention on a CPU run is one error naming the key, not a silently ignored setting.
TEST(Failure, CudnnPrefillOnTheCpuNamesTheKey) {
  const std::string dir = Fresh("cudnn_cpu");
  const std::string config = dir + "/cudnn.toml";
  std::ofstream(config) << "[model]\npath = \"" << FLUXATTN_SOURCE_DIR
                        << "/models/demo/flux-tiny\"\ndevice = \"cpu\"\n[attention]\n"
                           "dense_prefill = \"cudnn\"\n[backends.full]\nplugin = \"full\"\n";
  RunResult r = RunCli(absl::StrCat("bench --config ", config, " --context 64 --decode-tokens 1"));
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("attention.dense_prefill"));
  EXPECT_THAT(r.err, HasSubstr("\"auto\" or \"fluxattn\" on the cpu"));
  EXPECT_THAT(r.err, HasSubstr("found \"cudnn\""));
}

}  // namespace
}  // namespace fluxattn::eval
