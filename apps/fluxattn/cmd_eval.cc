// `fluxattn eval`: the built-in long-context suite (passkey, multi-key needle, key-value
// retrieval, variable tracking, frequent words, long-document perplexity) on one config.
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
#include "eval/tasks.h"
#include "nlohmann/json.hpp"

namespace fluxattn::cli {
namespace {

struct EvalArgs {
  std::string config;
  std::string tasks = "all";
  std::string lengths = "1k";
  int samples = 5;
  uint64_t seed = 0;
  int threads = -1;
  std::string device;  // empty: each config's [model] device
  bool details = false;
  std::string json;
  std::string csv;
};

int RunEvalCommand(const EvalArgs& args) {
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
  auto session = eval::OpenSession(args.config, args.threads, /*need_tokenizer=*/true, args.device);
  if (!session.ok()) {
    PrintError(std::string(session.status().message()));
    return kExitFailure;
  }
  eval::Progress progress(std::cerr, "eval",
                          static_cast<int64_t>(tasks->size() * lengths->size()) * args.samples,
                          eval::StderrIsTerminal());
  auto results = eval::RunEvalSuite(**session, *tasks, *lengths, args.samples, args.seed,
                                    [&](const std::string& detail) { progress.Next(detail); });
  if (!results.ok()) {
    progress.Finish();
    PrintError(std::string(results.status().message()));
    return kExitFailure;
  }
  progress.Finish();
  std::cout << eval::EvalTable(*results).Render();
  if (!args.json.empty()) {
    nlohmann::ordered_json out = {
        {"config", args.config}, {"seed", args.seed}, {"results", nlohmann::ordered_json::array()}};
    for (const eval::EvalResult& r : *results) {
      out["results"].push_back(eval::EvalJson(r, args.details));
    }
    if (!WriteOutputFile(args.json, out.dump(2) + "\n")) return kExitFailure;
  }
  if (!args.csv.empty()) {
    if (!WriteOutputFile(args.csv,
                         eval::FormatCsv(eval::EvalCsvHeader(), eval::EvalCsvRows(*results))))
      return kExitFailure;
  }
  return kExitOk;
}

std::function<int()> SetupEval(CLI::App& app) {
  auto args = std::make_shared<EvalArgs>();
  app.description(
      "Long-context accuracy of one config on a built-in, seeded suite in the spirit of RULER "
      "(samples written with the model's own tokenizer); exact match of greedy output");
  app.add_option("--config", args->config, "Engine config (TOML)")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--tasks", args->tasks,
                 "Comma-separated tasks: passkey, niah_multikey, kv_retrieval, "
                 "variable_tracking, frequent_words, lm_ppl, or all")
      ->capture_default_str();
  app.add_option("--lengths", args->lengths,
                 "Comma-separated prompt lengths in the model's tokens: 512, 4k, ...")
      ->capture_default_str();
  app.add_option("--samples", args->samples, "Samples per task and length")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  app.add_option("--seed", args->seed, "Seed of the first sample (then seed + 1, ...)")
      ->capture_default_str();
  app.add_option(
      "--device", args->device,
      "Where the model runs: cpu, cuda or cuda:N (default: the config's [model] device)");
  app.add_option("--threads", args->threads,
                 "Worker threads for the model (0: all cores; default: the config's)")
      ->check(CLI::Range(0, 4096));
  app.add_flag("--details", args->details,
               "In --json, every sample's prompt length, expected answer and output");
  app.add_option("--json", args->json, "Also write the results as JSON to this file");
  app.add_option("--csv", args->csv, "Also write the results as CSV to this file");
  app.footer(
      "Examples:\n"
      "  fluxattn eval --config models/demo/configs/flux_router.toml --tasks passkey,lm_ppl "
      "--lengths 1k\n"
      "  fluxattn eval --config flux.toml --tasks all --lengths 1k,4k --samples 20 --seed 7 \\\n"
      "      --json eval.json --details\n"
      "Accuracy is the fraction of samples whose first output line equals the answer after "
      "whitespace\nnormalization; lm_ppl reports the perplexity of a document's last tokens.\n"
      "Exit codes: 0 ok, 1 runtime failure, 2 usage error.");
  return [args] { return RunEvalCommand(*args); };
}

}  // namespace
}  // namespace fluxattn::cli

FLUXATTN_REGISTER_COMMAND(eval, fluxattn::cli::SetupEval);
