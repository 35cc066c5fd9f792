// `fluxattn bench`: prefill and decode speed, SA-layer ratio and KV memory of one or more
// configs at several context lengths, on synthetic prompts of exact length.
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "command.h"
#include "eval/csv.h"
#include "eval/lengths.h"
#include "eval/progress.h"
#include "eval/reports.h"
#include "eval/runner.h"
#include "nlohmann/json.hpp"

namespace fluxattn::cli {
namespace {

struct BenchArgs {
  std::vector<std::string> configs;
  std::string context = "4k";
  int decode_tokens = 64;
  int repeats = 1;
  int warmup = 0;
  int batch = 1;
  int threads = -1;
  std::string device;  // empty: each config's [model] device
  uint64_t seed = 0;
  SamplingOptions sampling;  // of every request; greedy by default
  std::string json;
  std::string csv;
};

int RunBenchCommand(const BenchArgs& args) {
  auto contexts = eval::ParseLengthList(args.context, "--context");
  if (!contexts.ok()) {
    PrintError(std::string(contexts.status().message()));
    return kExitUsage;
  }
  eval::Progress progress(
      std::cerr, "bench",
      static_cast<int64_t>(args.configs.size() * contexts->size()) * (args.repeats + args.warmup),
      eval::StderrIsTerminal());
  std::vector<eval::BenchResult> results;
  for (const std::string& path : args.configs) {
    auto session = eval::OpenSession(path, args.threads, /*need_tokenizer=*/false, args.device);
    if (!session.ok()) {
      progress.Finish();
      PrintError(std::string(session.status().message()));
      return kExitFailure;
    }
    for (int64_t context : *contexts) {
      auto result = eval::RunBench(
          **session, context, args.decode_tokens, args.repeats, args.seed,
          [&](const std::string& detail) { progress.Next((*session)->name + " " + detail); },
          args.warmup, args.batch, args.sampling);
      if (!result.ok()) {
        progress.Finish();
        PrintError(absl::StrCat(path, ": ", result.status().message()));
        return kExitFailure;
      }
      results.push_back(*result);
    }
  }
  progress.Finish();
  std::cout << eval::BenchTable(results).Render();
  if (!args.json.empty()) {
    nlohmann::ordered_json out = {{"bench", nlohmann::ordered_json::array()}};
    for (const eval::BenchResult& r : results) out["bench"].push_back(eval::BenchJson(r));
    if (!WriteOutputFile(args.json, out.dump(2) + "\n")) return kExitFailure;
  }
  if (!args.csv.empty()) {
    if (!WriteOutputFile(args.csv,
                         eval::FormatCsv(eval::BenchCsvHeader(), eval::BenchCsvRows(results))))
      return kExitFailure;
  }
  return kExitOk;
}

std::function<int()> SetupBench(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  app.description(
      "Prefill time and tokens/s, decode ms/token, SA-layer ratio and KV memory per config and "
      "context length, on seeded synthetic prompts of exact length");
  app.add_option("--config", args->configs, "Engine config (TOML); repeat to compare several")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--context", args->context,
                 "Comma-separated context lengths in tokens: 512, 4k (4096), 1m")
      ->capture_default_str();
  app.add_option("--decode-tokens", args->decode_tokens, "Decode steps after the prefill")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--repeats", args->repeats, "Runs per point; times are medians")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_option(
      "--device", args->device,
      "Where the model runs: cpu, cuda or cuda:N (default: the config's [model] device)");
  app.add_option("--batch", args->batch,
                 "Requests run together per point, each with its own prompt and seed (seeded "
                 "routers then decide per request); decode ms/tok is per step of the batch")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--warmup", args->warmup, "Untimed runs per point before the repeats")
      ->capture_default_str()
      ->check(CLI::Range(0, 100));
  app.add_option("--threads", args->threads,
                 "Worker threads for the model (0: all cores; default: the config's)")
      ->check(CLI::Range(0, 4096));
  app.add_option("--seed", args->seed, "Seed of the synthetic prompts")->capture_default_str();
  app.add_option("--temperature", args->sampling.temperature,
                 "Sampling temperature of every request (0: greedy)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 100.0));
  app.add_option("--top-k", args->sampling.top_k, "Top-k filter of the sampling (0: off)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 30));
  app.add_option("--top-p", args->sampling.top_p, "Top-p (nucleus) filter of the sampling (1: off)")
      ->capture_default_str()
      ->check(CLI::Range(1e-9, 1.0));
  app.add_option("--json", args->json, "Also write the results as JSON to this file");
  app.add_option("--csv", args->csv, "Also write the results as CSV to this file");
  app.footer(
      "Examples:\n"
      "  fluxattn bench --config models/demo/configs/fa_only.toml --context 1k,4k\n"
      "  fluxattn bench --config fa.toml --config flux.toml --context 4k,16k,32k \\\n"
      "      --decode-tokens 64 --repeats 3 --threads 2 --json bench.json --csv bench.csv\n"
      "Progress goes to stderr (a bar on a terminal, plain lines otherwise); the table to "
      "stdout.\nExit codes: 0 ok, 1 runtime failure, 2 usage error.");
  return [args] { return RunBenchCommand(*args); };
}

}  // namespace
}  // namespace fluxattn::cli

FLUXATTN_REGISTER_COMMAND(bench, fluxattn::cli::SetupBench);
