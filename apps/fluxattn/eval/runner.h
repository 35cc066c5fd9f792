// Runs behind `fluxattn bench`, `eval` and `compare`: a config opened into an engine with its
// tokenizer, synthetic-prompt benchmarks, and the long-context tasks scored on greedy output.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "eval/results.h"
#include "eval/tasks.h"
#include "fluxattn/config.h"
#include "fluxattn/engine.h"
#include "fluxattn/models/tokenizer.h"

namespace fluxattn::eval {

struct Session {
  std::string config_path;
  std::string name;  // the config file's name without folder and extension
  std::string model_dir;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<models::Tokenizer> tokenizer;  // null when the checkpoint has none
};

// Loads the TOML config, its checkpoint and plugins, and creates the engine. `threads` < 0
// keeps the config's [model] threads. `need_tokenizer`: fail when the checkpoint has no
// tokenizer.json (eval needs one; bench does not). `device` (e.g. "cuda") overrides the config's
// [model] device when not empty.
absl::StatusOr<std::unique_ptr<Session>> OpenSession(const std::string& config_path, int threads,
                                                     bool need_tokenizer,
                                                     const std::string& device = "");

// Called before each unit of work with a short description ("4k, run 2/3").
using StepCallback = std::function<void(const std::string& detail)>;

// Prefill of `context` synthetic tokens (uniform over the vocabulary, seeded) then
// `decode_tokens` decode steps, `repeats` times; medians of the times.
absl::StatusOr<BenchResult> RunBench(Session& session, int64_t context, int decode_tokens,
                                     int repeats, uint64_t seed, const StepCallback& on_step);

// `samples` samples of `kind` at `length` tokens, seeds seed, seed + 1, ...; greedy decoding,
// exact match (or perplexity for lm_ppl).
absl::StatusOr<EvalResult> RunEvalTask(Session& session, TaskKind kind, int64_t length, int samples,
                                       uint64_t seed, const StepCallback& on_step);

}  // namespace fluxattn::eval
