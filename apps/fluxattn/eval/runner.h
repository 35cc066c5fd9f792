// Runs behind `fluxattn bench`, `eval` and `compare`: a config opened into an engine with its
// tokenizer, synthetic-prompt benchmarks, and the long-context tasks scored on greedy output.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "eval/results.h"
#include "eval/tasks.h"
#include "fluxattn/config.h"
#include "fluxattn/engine.h"
#include "fluxattn/models/tokenizer.h"
#include "fluxattn/plugin_registry.h"
#include "fluxattn/sampling.h"
#include "nlohmann/json.hpp"

namespace fluxattn::eval {

struct Session {
  std::string config_path;
  std::string name;  // the config file's name without folder and extension
  std::string model_dir;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<models::Tokenizer> tokenizer;  // null when the checkpoint has none
};

struct SessionOptions {
  int threads = -1;             // < 0: the config's [model] threads
  bool need_tokenizer = false;  // fail when the checkpoint has no tokenizer.json
  std::string device;           // non-empty: overrides the config's [model] device
  // Plugin directories searched after the config's [plugins] paths, before the default ones.
  std::vector<std::string> plugin_paths;
  // Called once the registry has scanned the plugin directories, before composing: adds
  // in-process plugins (the Python package's routing policies).
  std::function<absl::Status(EngineConfig& config, PluginRegistry& registry)> extend_registry;
};

// How CreateEngine composes: plugin directories searched after the config's [plugins] paths
// (before the default ones), in-process plugins added once the registry has scanned them (the
// Python package's routing policies), and changes to EngineOptionsFor(config) (a server's
// prefill chunks, say).
struct EngineSetup {
  std::vector<std::string> plugin_paths;
  std::function<absl::Status(EngineConfig& config, PluginRegistry& registry)> extend_registry;
  std::function<void(EngineOptions& options)> adjust_options;
};

// The engine of `config` over a loaded `model`: registry, composition, options (learned
// policies' weights opened from safetensors). What every subcommand and the Python package
// build their engine with.
absl::StatusOr<std::unique_ptr<Engine>> CreateEngine(EngineConfig config,
                                                     std::unique_ptr<LanguageModel> model,
                                                     const EngineSetup& setup);

// The checkpoint folder of a command: `model_flag` when given, else the config's [model] path;
// an error naming "<config_path>: [model] path" when neither is set.
absl::StatusOr<std::string> ResolveModelDir(const std::string& config_path,
                                            const EngineConfig& config,
                                            const std::string& model_flag);

// Loads the TOML config, its checkpoint and plugins, and creates the engine. `threads` < 0
// keeps the config's [model] threads. `need_tokenizer`: fail when the checkpoint has no
// tokenizer.json (eval needs one; bench does not). `device` (e.g. "cuda") overrides the config's
// [model] device when not empty.
absl::StatusOr<std::unique_ptr<Session>> OpenSession(const std::string& config_path, int threads,
                                                     bool need_tokenizer,
                                                     const std::string& device = "");
absl::StatusOr<std::unique_ptr<Session>> OpenSession(const std::string& config_path,
                                                     const SessionOptions& options);
// The same for a configuration built in code (DefaultEngineConfig of a checkpoint, say): errors
// name config.source_path when it is set.
absl::StatusOr<std::unique_ptr<Session>> OpenSession(EngineConfig config,
                                                     const SessionOptions& options);

// Called before each unit of work with a short description ("4k, run 2/3").
using StepCallback = std::function<void(const std::string& detail)>;

// Prefill of `context` synthetic tokens (uniform over the vocabulary, seeded) then
// `decode_tokens` decode steps, `repeats` times; medians of the times.
// `warmup` untimed runs come first (GPU: lazy module loading, GEMM heuristics, allocations).
// `batch` requests run together (each its own prompt and its own sampling seed, seed + i, so
// that seeded routing policies decide per request and one batch mixes decisions); decode times
// are per step of the whole batch, KV bytes those of request 0.
// `sampling` is every request's (greedy by default; its seed is the base of the requests' seeds).
absl::StatusOr<BenchResult> RunBench(Session& session, int64_t context, int decode_tokens,
                                     int repeats, uint64_t seed, const StepCallback& on_step,
                                     int warmup = 0, int batch = 1,
                                     const SamplingOptions& sampling = {});

// `samples` samples of `kind` at `length` tokens, seeds seed, seed + 1, ...; greedy decoding,
// exact match (or perplexity for lm_ppl).
absl::StatusOr<EvalResult> RunEvalTask(Session& session, TaskKind kind, int64_t length, int samples,
                                       uint64_t seed, const StepCallback& on_step);

// What `fluxattn eval` runs: every task at every length (lengths outer), one step per sample.
// Errors name the session's config.
absl::StatusOr<std::vector<EvalResult>> RunEvalSuite(Session& session,
                                                     const std::vector<TaskKind>& tasks,
                                                     const std::vector<int64_t>& lengths,
                                                     int samples, uint64_t seed,
                                                     const StepCallback& on_step);

struct CompareOptions {
  std::vector<TaskKind> tasks;
  std::vector<int64_t> lengths;
  int samples = 3;
  uint64_t seed = 0;
  int decode_tokens = 16;
  int repeats = 3;
  SessionOptions session;  // need_tokenizer is implied
};

struct CompareSuite {
  std::vector<std::string> configs;
  std::vector<std::string> names;  // the configs' file names without folder and extension
  std::vector<std::string> task_names;
  std::vector<BenchResult> bench;
  std::vector<EvalResult> evals;
  std::vector<CompareRow> rows;
};

// The configs' names; two configs of the same name are a usage error.
absl::StatusOr<std::vector<std::string>> CompareNames(const std::vector<std::string>& configs);
// Progress steps RunCompareSuite reports for `configs` configs.
int64_t CompareSteps(const CompareOptions& options, size_t configs);
// What `fluxattn compare` runs: per config, the eval suite and the bench at every length. The
// steps' details start with the config's name.
absl::StatusOr<CompareSuite> RunCompareSuite(const std::vector<std::string>& configs,
                                             const CompareOptions& options,
                                             const StepCallback& on_step);
// compare.json.
nlohmann::ordered_json CompareReportJson(const CompareSuite& suite, const CompareOptions& options);

}  // namespace fluxattn::eval
