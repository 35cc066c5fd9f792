// The inference engine: runs a LanguageModel with a composition of attention backends and
// routing policies. It works in steps: requests join (Add) and leave (finish, Cancel) between
// steps, and every Step() runs ONE forward pass over prompt tokens of admitted requests (whole
// prompts, or with EngineOptions::prefill_chunk_tokens at most that many, so that a long prompt
// is run chunk by chunk over several steps and never stalls the decodes for longer than one
// chunk) and one decode token of every running request. At prefill, for every (request, layer), the
// engine asks the request's routing policy (with the layer's pre-RoPE queries when the policy reads
// them), applies [layers.N] overrides, checks the chosen backend's support for the problem
// (falling back to the full backend, and saying so in the trace), and keeps that decision for
// every decode step of the request. Each layer's attention is one call per backend for the whole
// batch (one shared kernel launch when the backends use the core kernel). K/V live in one page
// pool per device; pages are reserved before a step, and released as soon as the backend no
// longer reads them. Requests never depend on one another: lengths, routing policies and
// decisions may differ, and each one's sampling and random routing draw from its own seed.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
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
#include "fluxattn/sampling.h"

namespace fluxattn {

struct GenerationOptions {
  int max_new_tokens = 64;
  SamplingOptions sampling;
  bool ignore_eos = false;           // ignore the model's eos ids (explicit stop_tokens still stop)
  std::vector<int64_t> stop_tokens;  // in addition to the model's eos ids
  bool record_logits = false;        // keep each step's logits in GenerationResult::step_logits
  // -1: none. N in [0, kMaxTopLogprobs]: every new token's log probability under the model (the
  // log-softmax of its raw logits, before temperature, top-k and top-p), with the N most likely
  // tokens of that step and theirs. Logits then come back to the host every step.
  int logprobs = -1;
};

inline constexpr int kMaxTopLogprobs = 20;

struct TokenLogprob {
  int64_t token = 0;
  float logprob = 0.0f;
};

// How one layer of one request was run.
struct LayerRouting {
  int layer = 0;
  AttentionChoice choice = AttentionChoice::kFull;  // the policy's answer
  std::string decided_by;                           // "router" or "override"
  std::string backend;                              // backend instance the layer was routed to
  std::string plugin;                               // the plugin behind that instance
  std::string prefill_backend;  // instance that ran its prompt (differs with prefill_with)
  std::string decode_backend;   // instance that runs its decode steps (differs with decode_with)
  std::vector<float> logits;    // the router's raw outputs (may be empty)
  std::string fallback;         // non-empty: why the chosen backend was replaced by the full one
  size_t kv_bytes = 0;          // KV bytes this layer holds at the end (pool pages held)
  // Wall time of the layer's routing decision, from the moment its queries exist (on a GPU, once
  // the work queued before them has run): the queries brought to the policy (from a GPU, a copy)
  // and the policy's call, shared by the requests decided in one call. 0 where the layer was not
  // decided by a policy call.
  double route_seconds = 0.0;
};

struct RequestTrace {
  uint64_t request_id = 0;
  int64_t prompt_tokens = 0;
  std::string routing;  // the routing policy of the request ("router" or a [routers.<name>])
  std::vector<LayerRouting> layers;
  double sa_ratio = 0.0;  // fraction of layers run by a backend other than the full one
  size_t kv_bytes = 0;    // KV bytes held at the end (pool pages held by the request)
  size_t kv_bytes_after_prefill = 0;
  size_t kv_bytes_full_cache = 0;  // what a cache keeping every position would hold at the end
};

struct GenerationResult {
  uint64_t request_id = 0;
  std::vector<int64_t> tokens;  // generated tokens (the stop token included when it ended)
  std::string finish_reason;    // "stop" or "length"
  RequestTrace trace;
  std::vector<std::vector<float>> step_logits;  // with record_logits: one row per new token
  // With options.logprobs >= 0, one entry per new token: its log probability, and the most
  // likely tokens of its step (most likely first).
  std::vector<float> logprobs;
  std::vector<std::vector<TokenLogprob>> top_logprobs;
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
  // Bytes of the KV page pool (K and V together); 0: sized automatically (on the CPU the
  // smaller of 1 GiB and 16 sequences of max_position_embeddings tokens).
  size_t kv_pool_bytes = 0;
  // [attention] dense_prefill: "auto", "cudnn" or "fluxattn" (see AttentionConfig).
  std::string dense_prefill = "auto";
  // [scheduler] prefill_chunk_tokens: the most prompt tokens one step runs (over all prefilling
  // requests); 0: every admitted prompt whole in one step. Chunks never change a result: the
  // routing decisions are made on a request's first chunk and hold for its later chunks and its
  // decode, so a request whose policy reads the queries of the prompt's last rows (the flux
  // router) or of all of them runs its prompt whole, and one that reads its first rows gets
  // them all in its first chunk.
  int64_t prefill_chunk_tokens = 0;
  // [scheduler] max_step_tokens / max_batch: the most tokens (decode rows and prompt tokens)
  // and requests of one step; 0: no limit. With max_step_tokens > 0 the engine asks the model
  // to reserve the device memory of such steps when it starts (LanguageModel::ReserveSteps),
  // and a prompt that must run whole but is longer fails alone.
  int64_t max_step_tokens = 0;
  int64_t max_batch = 0;
  // Opens a separate safetensors file for routers that ship their weights apart.
  std::function<absl::StatusOr<std::unique_ptr<WeightSource>>(const std::string& path)>
      open_weights;
};

// The engine options a configuration asks for ([kv], [attention], [scheduler]).
EngineOptions EngineOptionsFor(const EngineConfig& config);

// One request for the step API.
struct RequestSpec {
  std::vector<int64_t> prompt;  // token ids, used exactly as given
  GenerationOptions options;    // sampling.seed is this request's own seed
  // The routing policy: "" for the configuration's [router], else a [routers.<name>].
  std::string routing;
  std::map<std::string, std::string> hints;  // free-form, passed to the routing policy
  // When the KV pool cannot hold the prompt now: wait in the queue (true) or fail (false).
  bool wait_for_kv = false;
};

// A token produced by a step.
struct StepToken {
  uint64_t request_id = 0;
  int64_t token = 0;
  // With the request's options.logprobs >= 0 (else 0 and empty).
  float logprob = 0.0f;
  std::vector<TokenLogprob> top_logprobs;
};

// A request that could not go on (the others of the batch did).
struct FailedRequest {
  uint64_t request_id = 0;
  absl::Status status;
};

struct StepResult {
  std::vector<StepToken> tokens;           // in the order requests were added
  std::vector<GenerationResult> finished;  // requests that ended in this step
  std::vector<FailedRequest> failed;       // requests dropped in this step, with the reason
  int64_t prefill_tokens = 0;              // prompt tokens run in this step
  int64_t decode_tokens = 0;               // decode rows run in this step
  double seconds = 0.0;
};

class Engine {
 public:
  // Prepares the routing policies against the model and sets up the KV page pool. A composition
  // without a router routes every layer to the full backend (the built-in `all-full` policy).
  // The full backend is composition.full_backend, else the backend named "full", else the only
  // backend.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(std::unique_ptr<LanguageModel> model,
                                                        Composition composition,
                                                        EngineOptions options = {});
  ~Engine();

  LanguageModel& model() { return *model_; }
  const std::string& full_backend() const { return full_backend_; }
  // Routing policies a request may name (RequestSpec::routing); "" is the default one.
  std::vector<std::string> routing_policies() const;

  // --- The step API ---
  // Queues a request; it is prefilled by the next Step. Errors (bad ids, options, unknown routing
  // policy) name the field.
  absl::StatusOr<uint64_t> Add(RequestSpec request);
  // Runs one step: admits queued requests (reserving the KV pages of their whole prompt), then
  // one forward pass over prompt tokens (a chunk of each, within prefill_chunk_tokens) and one
  // decode token of every running request. A request's first token comes with its last chunk.
  absl::StatusOr<StepResult> Step();
  // Drops a queued or running request and returns its KV pages to the pool. False when unknown.
  bool Cancel(uint64_t request_id);
  // Requests queued or running.
  int64_t num_queued() const;
  int64_t num_running() const;
  bool idle() const { return num_queued() == 0 && num_running() == 0; }
  // KV pool occupancy.
  int64_t kv_pages_used() const;
  int64_t kv_pages_total() const;
  size_t kv_page_bytes() const;
  // On a GPU, the kernel dense causal prefill runs on ("cudnn (cuDNN 9.19.0 ...)" or
  // "fluxattn (...)"); "" on the CPU.
  std::string dense_prefill_kernel() const;

  // Adds every prompt (each with `options`, so with the same seed), then steps until all finish.
  // A request that fails fails the call. Prompt ids are used exactly as given.
  absl::StatusOr<BatchResult> Generate(const std::vector<std::vector<int64_t>>& prompts,
                                       const GenerationOptions& options,
                                       const TokenCallback& on_token = {});
  // The same for requests of their own (each its options, seed, routing policy and hints);
  // on_token's index is the request's position in `requests`.
  absl::StatusOr<BatchResult> Generate(std::vector<RequestSpec> requests,
                                       const TokenCallback& on_token = {});

 private:
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl, std::unique_ptr<LanguageModel> model);
  std::unique_ptr<Impl> impl_;
  std::unique_ptr<LanguageModel> model_;
  std::string full_backend_;
};

}  // namespace fluxattn
