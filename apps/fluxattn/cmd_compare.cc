// `fluxattn compare`: the same eval and bench on several configs, one side-by-side table
// (accuracy per task, SA ratio, speed-ups against the first config, KV memory), CSV, JSON and
// an SVG of accuracy against prefill time. With --server URL: the eval's generation tasks sent
// to a running `fluxattn serve` once per routing policy, on live traffic.
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "command.h"
#include "eval/csv.h"
#include "eval/lengths.h"
#include "fluxattn/models/tokenizer.h"
#if defined(FLUXATTN_WITH_SERVE)
#include "serve/remote_compare.h"
#endif
#include "eval/progress.h"
#include "eval/reports.h"
#include "eval/runner.h"
#include "eval/svg_plot.h"
#include "eval/tasks.h"
#include "nlohmann/json.hpp"

namespace fluxattn::cli {
namespace {

struct CompareArgs {
  std::vector<std::string> configs;
  std::string tasks = "all";
  std::string lengths = "1k";
  int samples = 3;
  uint64_t seed = 0;
  int decode_tokens = 16;
  int repeats = 3;
  int threads = -1;
  std::string device;  // empty: each config's [model] device
  std::string out = "compare-out";
  // --server: a running server, the served model's folder (its tokenizer) and the policies.
  std::string server;
  std::string model;
  std::string routing = "default";
  std::string api_key;
  int concurrency = 8;
  std::string json;
};

int RunRemoteCompareCommand(const CompareArgs& args, const std::vector<eval::TaskKind>& tasks,
                            const std::vector<int64_t>& lengths) {
#if defined(FLUXATTN_WITH_SERVE)
  if (!args.configs.empty()) {
    PrintError("compare: expected either configs or --server, found both");
    return kExitUsage;
  }
  if (args.model.empty()) {
    PrintError(
        "compare --server: expected --model DIR (the served checkpoint's folder, for its "
        "tokenizer), found none");
    return kExitUsage;
  }
  auto tokenizer = models::Tokenizer::FromModelDir(args.model);
  if (!tokenizer.ok()) {
    PrintError(std::string(tokenizer.status().message()));
    return kExitFailure;
  }
  serve::RemoteCompareOptions options;
  options.url = args.server;
  options.api_key = args.api_key;
  options.policies = absl::StrSplit(args.routing, ',', absl::SkipEmpty());
  options.tasks = tasks;
  options.lengths = lengths;
  options.samples = args.samples;
  options.seed = args.seed;
  options.concurrency = args.concurrency;
  auto report = serve::RunRemoteCompare(options, **tokenizer, std::cout);
  if (!report.ok()) {
    PrintError(std::string(report.status().message()));
    return kExitFailure;
  }
  if (!args.json.empty()) {
    if (!WriteOutputFile(args.json, report->dump(2) + "\n")) return kExitFailure;
    std::cout << "\nwrote " << args.json << "\n";
  }
  return kExitOk;
#else
  (void)tasks;
  (void)lengths;
  PrintError(absl::StrCat("compare --server ", args.server,
                          ": this build has no HTTP client (cpp-httplib was not found)"));
  return kExitUsage;
#endif
}

int RunCompareCommand(const CompareArgs& args) {
  auto tasks = eval::ParseTaskList(args.tasks, "--tasks");
  if (!tasks.ok()) {
    PrintError(std::string(tasks.status().message()));
    return kExitUsage;
  }
  auto lengths = eval::ParseLengthList(args.lengths, "--lengths");
  if (!lengths.ok()) {
    PrintError(std::string(lengths.status().message()));
    return kExitUsage;
  }
  if (!args.server.empty()) return RunRemoteCompareCommand(args, *tasks, *lengths);
  if (args.configs.empty()) {
    PrintError("compare: expected at least one config (or --server URL), found none");
    return kExitUsage;
  }
  auto names = eval::CompareNames(args.configs);
  if (!names.ok()) {
    PrintError(std::string(names.status().message()));
    return kExitUsage;
  }
  std::error_code ec;
  std::filesystem::create_directories(args.out, ec);
  if (ec) {
    PrintError(absl::StrCat(args.out, ": expected a writable folder, found ", ec.message()));
    return kExitFailure;
  }

  eval::CompareOptions options;
  options.tasks = *tasks;
  options.lengths = *lengths;
  options.samples = args.samples;
  options.seed = args.seed;
  options.decode_tokens = args.decode_tokens;
  options.repeats = args.repeats;
  options.session.threads = args.threads;
  options.session.device = args.device;
  eval::Progress progress(std::cerr, "compare", eval::CompareSteps(options, args.configs.size()),
                          eval::StderrIsTerminal());
  auto suite = eval::RunCompareSuite(args.configs, options,
                                     [&](const std::string& detail) { progress.Next(detail); });
  progress.Finish();
  if (!suite.ok()) {
    PrintError(std::string(suite.status().message()));
    return kExitFailure;
  }
  const std::vector<eval::CompareRow>& rows = suite->rows;
  std::cout << eval::CompareTable(rows).Render();
  std::cout << "\nspeed-ups (x) are against " << names->front()
            << " at the same length; accuracy is exact match over " << args.samples
            << " samples per task and length; ppl is lm_ppl's perplexity.\n";

  const std::filesystem::path dir(args.out);
  const std::string csv_path = (dir / "compare.csv").string();
  const std::string json_path = (dir / "compare.json").string();
  const std::string svg_path = (dir / "compare.svg").string();
  const nlohmann::ordered_json json = eval::CompareReportJson(*suite, options);
  for (const auto& [path, text] :
       {std::pair{csv_path, eval::FormatCsv(eval::CompareCsvHeader(suite->task_names),
                                            eval::CompareCsvRows(rows))},
        std::pair{json_path, json.dump(2) + "\n"},
        std::pair{svg_path, eval::RenderScatterSvg(eval::ComparePlot(rows))}}) {
    if (!WriteOutputFile(path, text)) return kExitFailure;
  }
  std::cout << "\nwrote " << csv_path << "\n      " << json_path << "\n      " << svg_path
            << "  (accuracy against prefill time; open it in a browser)\n";
  return kExitOk;
}

std::function<int()> SetupCompare(CLI::App& app) {
  auto args = std::make_shared<CompareArgs>();
  app.description(
      "Run the same eval and bench on several configs and print one side-by-side table; "
      "write CSV, JSON and an SVG of accuracy against prefill time");
  app.add_option("configs", args->configs,
                 "Engine configs (TOML); the first is the baseline of the speed-ups")
      ->check(CLI::ExistingFile);
  app.add_option("--tasks", args->tasks, "Comma-separated eval tasks, or all")
      ->capture_default_str();
  app.add_option("--lengths", args->lengths,
                 "Comma-separated lengths in tokens, for both eval prompts and bench contexts")
      ->capture_default_str();
  app.add_option("--samples", args->samples, "Eval samples per task and length")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  app.add_option("--seed", args->seed, "Seed of the eval samples and bench prompts")
      ->capture_default_str();
  app.add_option("--decode-tokens", args->decode_tokens, "Bench decode steps")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--repeats", args->repeats, "Bench runs per point (median)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_option(
      "--device", args->device,
      "Where the model runs: cpu, cuda or cuda:N (default: the config's [model] device)");
  app.add_option("--threads", args->threads,
                 "Worker threads for the model (0: all cores; default: each config's)")
      ->check(CLI::Range(0, 4096));
  app.add_option("--out", args->out, "Folder for compare.csv, compare.json and compare.svg")
      ->capture_default_str();
  app.add_option("--server", args->server,
                 "A running OpenAI-compatible server (http://HOST:PORT): compare its routing "
                 "policies on live traffic instead of configs");
  app.add_option("--model", args->model, "With --server: the served checkpoint's folder");
  app.add_option("--routing", args->routing,
                 "With --server: comma-separated routing policies (default: the server's "
                 "[router])")
      ->capture_default_str();
  app.add_option("--concurrency", args->concurrency, "With --server: requests in flight")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--api-key", args->api_key, "With --server: sent as Authorization: Bearer");
  app.add_option("--json", args->json, "With --server: write the report as JSON to this file");
  app.footer(
      "Examples:\n"
      "  fluxattn compare models/demo/configs/*.toml --lengths 512,1k --samples 2\n"
      "  fluxattn compare fa.toml flux.toml --tasks passkey,niah_multikey,lm_ppl \\\n"
      "      --lengths 4k,16k --samples 20 --decode-tokens 64 --out results/\n"
      "  fluxattn compare --server http://127.0.0.1:8000 --model models/demo/flux-tiny \\\n"
      "      --routing default,all_full --tasks passkey --lengths 1k --samples 10\n"
      "Exit codes: 0 ok, 1 runtime failure, 2 usage error.");
  return [args] { return RunCompareCommand(*args); };
}

}  // namespace
}  // namespace fluxattn::cli

FLUXATTN_REGISTER_COMMAND(compare, fluxattn::cli::SetupCompare);
