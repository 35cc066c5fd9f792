// What bench and eval measure, and the side-by-side rows compare builds from them. Plain data:
// the writers (reports.h) and tests use these without an engine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace fluxattn::eval {

// One (config, context length) of `fluxattn bench`. Times are medians over the repeats.
struct BenchResult {
  std::string config;
  int64_t context = 0;
  int decode_tokens = 0;
  int repeats = 0;
  double prefill_seconds = 0.0;
  double prefill_tokens_per_second = 0.0;
  double decode_ms_per_token = 0.0;  // NaN when no token was decoded
  double sa_ratio = 0.0;             // mean over repeats (random routers differ per request)
  size_t kv_bytes_after_prefill = 0;
  size_t kv_bytes = 0;                    // held at the end of the request
  size_t kv_bytes_full_cache = 0;         // what a cache keeping every position would hold
  int warmup = 0;                         // untimed runs before the repeats
  std::vector<double> prefill_samples;    // seconds, one per repeat (the spread of the median)
  std::vector<double> decode_samples;     // ms per token, one per repeat
  std::string dense_prefill_kernel;       // on a GPU, what dense causal prefill ran on
  int batch = 1;                          // requests run together
  double decode_tokens_per_second = 0.0;  // every request's decode tokens / decode time
  // Request 0's routing decisions: wall ms per routed layer (LayerRouting::route_seconds), mean
  // and most over its layers, medians over the repeats; 0 when no layer was routed by a call.
  double route_ms_per_layer = 0.0;
  double route_ms_max = 0.0;
};

// One generated sample of `fluxattn eval`.
struct SampleResult {
  uint64_t seed = 0;
  int64_t prompt_tokens = 0;
  std::string expected;  // empty for lm_ppl
  std::string output;    // greedy output text (empty for lm_ppl)
  bool correct = false;
  double nll = 0.0;  // lm_ppl: mean negative log-likelihood of the scored tokens
  double sa_ratio = 0.0;
  double prefill_seconds = 0.0;
};

// One (config, task, length) of `fluxattn eval`.
struct EvalResult {
  std::string config;
  std::string task;
  int64_t length = 0;  // target length in tokens
  int samples = 0;
  int correct = 0;
  double accuracy = 0.0;    // NaN for lm_ppl
  double perplexity = 0.0;  // NaN except for lm_ppl
  double mean_prompt_tokens = 0.0;
  double sa_ratio = 0.0;         // mean over samples
  double prefill_seconds = 0.0;  // mean over samples
  double seconds = 0.0;          // wall time of the whole task at this length
  std::vector<SampleResult> details;
};

// One (config, length) line of `fluxattn compare`.
struct CompareRow {
  std::string config;
  int64_t length = 0;
  std::vector<std::string> tasks;    // same order in every row
  std::vector<double> accuracy;      // per task; NaN where not measured (lm_ppl)
  double mean_accuracy = 0.0;        // over the exact-match tasks; NaN when there are none
  double perplexity = 0.0;           // NaN without lm_ppl
  double sa_ratio = 0.0;             // mean over the eval tasks at this length, else bench
  double prefill_seconds = 0.0;      // bench
  double prefill_speedup = 0.0;      // first config's prefill time / this one's, same length
  double decode_ms_per_token = 0.0;  // bench
  double decode_speedup = 0.0;
  size_t kv_bytes = 0;  // bench, held after the run
  size_t kv_bytes_full_cache = 0;
};

// Joins bench and eval results by (config, length) in the order of `configs` and `lengths`;
// speed-ups are against configs[0] at the same length.
std::vector<CompareRow> BuildCompareRows(const std::vector<std::string>& configs,
                                         const std::vector<int64_t>& lengths,
                                         const std::vector<std::string>& tasks,
                                         const std::vector<BenchResult>& bench,
                                         const std::vector<EvalResult>& eval);

}  // namespace fluxattn::eval
