// The inference engine: runs a LanguageModel with a composition of attention backends and a
// routing policy. At prefill, for every (request, layer), the engine asks the router (with the
// layer's pre-RoPE queries when the router reads them), applies [layers.N] overrides, checks the
// chosen backend's capabilities (falling back to the full backend, and saying so in the trace),
// and keeps that decision for every decode step of the request. K/V go to a paged cache per
// (request, layer); after each call the engine releases what the backend no longer reads.
// Requests of one batch are independent: lengths and decisions may differ.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fluxattn/config.h"
#include "fluxattn/default_composition.h"
#include "fluxattn/language_model.h"
#include "fluxattn/routing_policy.h"

namespace fluxattn {

struct SamplingOptions {
  double temperature = 0.0;  // 0: greedy (argmax, lowest id on ties)
  int top_k = 0;             // 0: no top-k filter
  double top_p = 1.0;        // 1: no nucleus filter
  uint64_t seed = 0;         // request i of a batch draws from seed + i
};

struct GenerationOptions {
  int max_new_tokens = 64;
  SamplingOptions sampling;
  bool ignore_eos = false;          // ignore the model's eos ids (explicit stop_tokens still stop)
  std::vector<int64_t> stop_tokens;  // in addition to the model's eos ids
  bool record_logits = false;       // keep each step's logits in GenerationResult::step_logits
};

// How one layer of one request was run.
struct LayerRouting {
  int layer = 0;
  AttentionChoice choice = AttentionChoice::kFull;  // the router's answer
  std::string decided_by;                           // "router" or "override"
  std::string backend;                              // backend instance that ran the layer
  std::vector<float> logits;                        // the router's raw outputs (may be empty)
  std::string fallback;  // non-empty: why the chosen backend was replaced by the full one
  size_t kv_bytes = 0;   // KV bytes this layer holds at the end
};

struct RequestTrace {
  uint64_t request_id = 0;
  int64_t prompt_tokens = 0;
  std::vector<LayerRouting> layers;
  double sa_ratio = 0.0;           // fraction of layers run by a backend other than the full one
  size_t kv_bytes = 0;             // KV bytes held at the end
  size_t kv_bytes_after_prefill = 0;
  size_t kv_bytes_written = 0;     // what a cache keeping every position would hold at the end
};

struct GenerationResult {
  std::vector<int64_t> tokens;  // generated tokens (the stop token included when it ended)
  std::string finish_reason;    // "stop" or "length"
  RequestTrace trace;
  std::vector<std::vector<float>> step_logits;  // with record_logits: one row per new token
};

struct GenerationTiming {
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;
  int64_t prefill_tokens = 0;
  int64_t decode_tokens = 0;  // tokens produced by decode steps (after the first)
  int decode_steps = 0;
};

struct BatchResult {
  std::vector<GenerationResult> requests;
  GenerationTiming timing;
};

// Called for every new token as soon as it is sampled.
using TokenCallback = std::function<void(int request, int64_t token)>;

struct EngineOptions {
  int kv_page_tokens = 64;
  // Opens a separate safetensors file for routers that ship their weights apart.
  std::function<absl::StatusOr<std::unique_ptr<WeightSource>>(const std::string& path)>
      open_weights;
};

class Engine {
 public:
  // Prepares the routing policies against the model. A composition without a router routes
  // every layer to the full backend (the built-in `all-full` policy). The full backend is
  // composition.full_backend, else the backend named "full", else the only backend.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(std::unique_ptr<LanguageModel> model,
                                                        Composition composition,
                                                        EngineOptions options = {});
  ~Engine();

  LanguageModel& model() { return *model_; }
  const std::string& full_backend() const { return full_backend_; }

  // Prefills every prompt together, then decodes all unfinished requests one token per step.
  // Prompt ids are used exactly as given.
  absl::StatusOr<BatchResult> Generate(const std::vector<std::vector<int64_t>>& prompts,
                                       const GenerationOptions& options,
                                       const TokenCallback& on_token = {});

 private:
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl, std::unique_ptr<LanguageModel> model);
  std::unique_ptr<Impl> impl_;
  std::unique_ptr<LanguageModel> model_;
  std::string full_backend_;
};

// One token from `logits` under `options` (greedy when temperature is 0).
int64_t SampleToken(std::span<const float> logits, const SamplingOptions& options,
                    std::mt19937_64& rng);

}  // namespace fluxattn
