// The engine's step API: requests joining and leaving between steps, one attention call per
// (layer, backend) for a batch with mixed decisions, per-request routing policies and seeds, and
// the KV page pool running out for one request while the others go on.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "fluxattn/attention/layout_builder.h"
#include "fluxattn/attention/sink_window.h"
#include "fluxattn/engine.h"
#include "fluxattn/models/decoder_model.h"
#include "fluxattn/status.h"
#include "test_support.h"

namespace fluxattn {
namespace {

using testing::Own;

std::unique_ptr<LanguageModel> Model(uint64_t seed = 9) {
  models::ModelSpec spec;
  spec.family = models::ModelFamily::kQwen3;
  spec.info.architecture = "Qwen3ForCausalLM";
  spec.info.num_layers = 4;
  spec.info.hidden_size = 32;
  spec.info.num_q_heads = 4;
  spec.info.num_kv_heads = 2;
  spec.info.head_dim = 16;
  spec.info.vocab_size = 101;
  spec.intermediate_size = 48;
  spec.rms_norm_eps = 1e-6;
  spec.qk_norm = true;
  auto weights = models::RandomWeights(spec, seed);
  FLUXATTN_CHECK(weights.ok());
  auto model = models::CreateLanguageModel(spec, std::move(*weights), {.threads = 2});
  FLUXATTN_CHECK(model.ok());
  return std::move(*model);
}

// Records every Plan call: (layer, number of sequences); layouts from the core builders, so the
// engine runs all of them in its shared launch.
struct PlanLog {
  std::map<std::pair<std::string, int>, int> plans_per_step_layer;  // (backend, layer) -> calls
  std::vector<int> sequences;
  void Clear() { plans_per_step_layer.clear(); }
};

class CountingDense : public AttentionBackend {
 public:
  CountingDense(std::string name, PlanLog* log) : name_(std::move(name)), log_(log) {}
  AttentionCapabilities capabilities() const override { return {}; }
  absl::Status BuildLayout(const AttentionProblem& p, BlockSparseLayout* layout) override {
    *layout = DenseCausalLayout(p.q_pos0, p.num_queries, p.kv.length);
    return absl::OkStatus();
  }
  absl::Status Plan(const AttentionBatch& batch, PlannedLayout* plan) override {
    ++log_->plans_per_step_layer[{name_, batch.layer}];
    log_->sequences.push_back(static_cast<int>(batch.seqs.size()));
    return AttentionBackend::Plan(batch, plan);
  }

 protected:
  std::string name_;
  PlanLog* log_;
};

class CountingStreaming : public CountingDense {
 public:
  using CountingDense::CountingDense;
  KvRetention RetainedKv(int64_t next) const override { return rule_.Retention(next); }
  absl::Status BuildLayout(const AttentionProblem& p, BlockSparseLayout* layout) override {
    *layout = BuildStreamingLayout(rule_, p.q_pos0, p.num_queries, p.kv.length);
    return absl::OkStatus();
  }

 private:
  StreamingRule rule_{/*sink_tokens=*/4, /*window_tokens=*/8, /*block_size=*/4};
};

// Sparse where (layer + first prompt token) is odd: requests of one batch differ per layer.
class TokenParityPolicy : public RoutingPolicy {
 public:
  absl::Status Prepare(const RoutingSetup&) override { return absl::OkStatus(); }
  absl::StatusOr<RoutingDecision> Decide(const RoutingInput& in) override {
    const bool sparse = (in.layer + static_cast<int>(in.hints->count("odd"))) % 2 == 1;
    return RoutingDecision{sparse ? AttentionChoice::kSparse : AttentionChoice::kFull, {}};
  }
};

// Reads the queries of the prompt's last rows, so that its prompts run whole (never in chunks).
class ReadsLastRows : public RoutingPolicy {
 public:
  absl::Status Prepare(const RoutingSetup&) override { return absl::OkStatus(); }
  bool NeedsQueries() const override { return true; }
  QueryWindow QueriesRead() const override { return {0, 4}; }
  absl::StatusOr<RoutingDecision> Decide(const RoutingInput&) override {
    return RoutingDecision{AttentionChoice::kFull, {}};
  }
};

class AlwaysSparse : public RoutingPolicy {
 public:
  absl::Status Prepare(const RoutingSetup&) override { return absl::OkStatus(); }
  absl::StatusOr<RoutingDecision> Decide(const RoutingInput&) override {
    return RoutingDecision{AttentionChoice::kSparse, {}};
  }
};

std::unique_ptr<Engine> MakeEngine(PlanLog* log, EngineOptions options = {}) {
  Composition c;
  c.backends["full"] = Own(new CountingDense("full", log));
  c.backends["stream"] = Own(new CountingStreaming("stream", log));
  c.backend_plugins = {{"full", "counting_dense"}, {"stream", "counting_streaming"}};
  c.router = Own(new TokenParityPolicy());
  c.routers["all_sparse"] = Own(new AlwaysSparse());
  c.routers["last_rows"] = Own(new ReadsLastRows());
  c.full_backend = "full";
  c.sparse_backend = "stream";
  if (options.kv_page_tokens == 64) options.kv_page_tokens = 4;
  auto engine = Engine::Create(Model(), std::move(c), options);
  FLUXATTN_CHECK(engine.ok());
  return std::move(*engine);
}

std::vector<int64_t> Prompt(int n, int salt) {
  std::vector<int64_t> ids;
  for (int i = 0; i < n; ++i) ids.push_back(5 + (i * 13 + salt * 7) % 90);
  return ids;
}

RequestSpec Spec(int n, int salt, int new_tokens, bool odd, std::string routing = "") {
  RequestSpec spec;
  spec.prompt = Prompt(n, salt);
  spec.options.max_new_tokens = new_tokens;
  spec.options.ignore_eos = true;
  if (odd) spec.hints["odd"] = "1";
  spec.routing = std::move(routing);
  return spec;
}

// Runs `spec` alone on a fresh engine.
GenerationResult Alone(const RequestSpec& spec) {
  PlanLog log;
  std::unique_ptr<Engine> engine = MakeEngine(&log);
  auto id = engine->Add(spec);
  FLUXATTN_CHECK(id.ok());
  while (!engine->idle()) {
    auto step = engine->Step();
    FLUXATTN_CHECK(step.ok());
    FLUXATTN_CHECK(step->failed.empty());
    if (!step->finished.empty()) return std::move(step->finished[0]);
  }
  return {};
}

std::vector<std::string> Backends(const RequestTrace& trace) {
  std::vector<std::string> names;
  for (const LayerRouting& L : trace.layers) names.push_back(L.backend);
  return names;
}

TEST(StepApi, MixedDecisionsRunOneCallPerLayerAndBackendAndMatchRunningAlone) {
  PlanLog log;
  std::unique_ptr<Engine> engine = MakeEngine(&log);
  const std::vector<RequestSpec> specs = {Spec(23, 1, 6, false), Spec(9, 2, 4, true),
                                          Spec(31, 3, 7, true, "all_sparse")};
  std::map<uint64_t, size_t> index;
  for (size_t i = 0; i < specs.size(); ++i) {
    auto id = engine->Add(specs[i]);
    ASSERT_TRUE(id.ok()) << id.status();
    index[*id] = i;
  }
  std::vector<GenerationResult> results(specs.size());
  int steps = 0;
  while (!engine->idle()) {
    log.Clear();
    auto step = engine->Step();
    ASSERT_TRUE(step.ok()) << step.status();
    ASSERT_TRUE(step->failed.empty());
    ++steps;
    // Every (backend, layer) was planned at most once in this step, whatever the mix.
    for (const auto& [key, calls] : log.plans_per_step_layer) {
      EXPECT_EQ(calls, 1) << key.first << " layer " << key.second << " step " << steps;
    }
    // With three live requests whose decisions differ, both backends run in every layer.
    if (steps == 1) {
      for (int layer = 0; layer < 4; ++layer) {
        EXPECT_EQ(log.plans_per_step_layer.count({"full", layer}), 1u) << layer;
        EXPECT_EQ(log.plans_per_step_layer.count({"stream", layer}), 1u) << layer;
      }
    }
    for (GenerationResult& r : step->finished) results[index[r.request_id]] = std::move(r);
  }
  EXPECT_EQ(steps, 7);
  for (size_t i = 0; i < specs.size(); ++i) {
    GenerationResult alone = Alone(specs[i]);
    EXPECT_EQ(results[i].tokens, alone.tokens) << "request " << i;
    EXPECT_EQ(Backends(results[i].trace), Backends(alone.trace)) << "request " << i;
    EXPECT_EQ(results[i].tokens.size(), static_cast<size_t>(specs[i].options.max_new_tokens));
  }
  EXPECT_EQ(results[2].trace.routing, "all_sparse");
  EXPECT_EQ(results[2].trace.sa_ratio, 1.0);
  EXPECT_EQ(results[0].trace.routing, "router");
  EXPECT_EQ(results[0].trace.layers[1].plugin, "counting_streaming");
  EXPECT_EQ(engine->kv_pages_used(), 0);
}

TEST(StepApi, RequestsJoinAndLeaveBetweenSteps) {
  PlanLog log;
  std::unique_ptr<Engine> engine = MakeEngine(&log);
  const RequestSpec a = Spec(17, 4, 8, false), b = Spec(12, 5, 3, true);
  auto id_a = engine->Add(a);
  ASSERT_TRUE(id_a.ok());
  std::map<uint64_t, GenerationResult> done;
  for (int s = 0; s < 3; ++s) {
    auto step = engine->Step();
    ASSERT_TRUE(step.ok());
    EXPECT_EQ(step->tokens.size(), 1u);
  }
  auto id_b = engine->Add(b);
  ASSERT_TRUE(id_b.ok());
  auto mixed = engine->Step();  // a decodes while b is prefilled
  ASSERT_TRUE(mixed.ok());
  EXPECT_EQ(mixed->prefill_tokens, 12);
  EXPECT_EQ(mixed->decode_tokens, 1);
  EXPECT_EQ(mixed->tokens.size(), 2u);
  while (!engine->idle()) {
    auto step = engine->Step();
    ASSERT_TRUE(step.ok());
    for (GenerationResult& r : step->finished) done[r.request_id] = std::move(r);
  }
  EXPECT_EQ(done[*id_a].tokens, Alone(a).tokens);
  EXPECT_EQ(done[*id_b].tokens, Alone(b).tokens);
}

// Prompts run in chunks of 6 tokens beside a running decode: the decode gets its token in every
// step, no step runs more prompt tokens than the chunk, chunks start mid-block (streaming blocks
// of 4) and mid-page, and every request ends as it does when run alone with whole prompts.
TEST(StepApi, ChunkedPrefillNeverStallsTheRunningDecodes) {
  PlanLog log;
  EngineOptions options;
  options.prefill_chunk_tokens = 6;
  std::unique_ptr<Engine> engine = MakeEngine(&log, options);
  RequestSpec a = Spec(5, 11, 30, false), b = Spec(40, 12, 5, true), c = Spec(9, 13, 4, false);
  for (RequestSpec* spec : {&a, &b, &c}) spec->options.record_logits = true;
  std::map<uint64_t, GenerationResult> done;
  auto id_a = engine->Add(a);
  ASSERT_TRUE(id_a.ok());
  auto first = engine->Step();
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->prefill_tokens, 5);
  ASSERT_EQ(first->tokens.size(), 1u);
  auto id_b = engine->Add(b);
  auto id_c = engine->Add(c);
  ASSERT_TRUE(id_b.ok() && id_c.ok());
  int steps = 0;
  int64_t prompt_tokens = 0;
  std::map<uint64_t, int> first_token_step = {{*id_a, 0}};
  while (!engine->idle()) {
    auto step = engine->Step();
    ASSERT_TRUE(step.ok()) << step.status();
    ASSERT_TRUE(step->failed.empty());
    ++steps;
    EXPECT_LE(step->prefill_tokens, 6) << "step " << steps;
    prompt_tokens += step->prefill_tokens;
    // Every request past its prompt decodes in every step until it ends; the first one has no
    // step without its token.
    int64_t decoding = 0;
    for (const auto& [rid, at] : first_token_step) decoding += !done.count(rid);
    EXPECT_EQ(step->decode_tokens, decoding) << "step " << steps;
    if (!done.count(*id_a)) {
      bool a_token = false;
      for (const StepToken& t : step->tokens) a_token = a_token || t.request_id == *id_a;
      EXPECT_TRUE(a_token) << "step " << steps;
    }
    for (const StepToken& t : step->tokens) first_token_step.emplace(t.request_id, steps);
    for (GenerationResult& r : step->finished) done[r.request_id] = std::move(r);
  }
  EXPECT_EQ(prompt_tokens, 49);
  // 40 prompt tokens in chunks of 6: b's first token comes with its 7th chunk (4 tokens), and
  // c's 9 tokens take the 2 left in that step and 6 + 1 of the next two.
  EXPECT_EQ(first_token_step[*id_b], 7);
  EXPECT_EQ(first_token_step[*id_c], 9);
  for (const auto& [id, spec] : {std::pair{*id_a, &a}, {*id_b, &b}, {*id_c, &c}}) {
    const GenerationResult alone = Alone(*spec);
    const GenerationResult& got = done[id];
    EXPECT_EQ(got.tokens, alone.tokens) << "request " << id;
    EXPECT_EQ(Backends(got.trace), Backends(alone.trace)) << "request " << id;
    ASSERT_EQ(got.step_logits.size(), alone.step_logits.size());
    for (size_t t = 0; t < got.step_logits.size(); ++t) {
      const auto& w = alone.step_logits[t];
      EXPECT_LT(testing::RelativeError(got.step_logits[t], std::vector<double>(w.begin(), w.end())),
                1e-5)
          << "request " << id << " token " << t;
    }
    EXPECT_EQ(got.trace.kv_bytes, alone.trace.kv_bytes) << "request " << id;
  }
  EXPECT_NE(Backends(done[*id_b].trace), Backends(done[*id_a].trace));
  EXPECT_EQ(engine->kv_pages_used(), 0);
}

// [scheduler] max_step_tokens and max_batch: no step runs more than 12 tokens (decode rows and
// prompt tokens) or more than 2 requests; a prompt that may be chunked is, one that must run
// whole (its policy reads its last rows) and is longer than 12 tokens fails alone with an error
// naming the key, and every other request ends as it does alone.
TEST(StepApi, MaxStepTokensAndMaxBatchBoundEveryStep) {
  PlanLog log;
  EngineOptions options;
  options.max_step_tokens = 12;
  options.max_batch = 2;
  std::unique_ptr<Engine> engine = MakeEngine(&log, options);
  const std::vector<RequestSpec> specs = {
      Spec(10, 21, 6, false), Spec(30, 22, 3, false, "last_rows"), Spec(25, 23, 4, true),
      Spec(5, 24, 3, false), Spec(11, 25, 2, false, "last_rows")};
  std::map<uint64_t, size_t> index;
  for (size_t i = 0; i < specs.size(); ++i) {
    auto id = engine->Add(specs[i]);
    ASSERT_TRUE(id.ok()) << id.status();
    index[*id] = i;
  }
  std::map<size_t, GenerationResult> done;
  std::vector<std::pair<size_t, absl::Status>> failed;
  int steps = 0;
  while (!engine->idle()) {
    log.sequences.clear();
    auto step = engine->Step();
    ASSERT_TRUE(step.ok()) << step.status();
    ++steps;
    ASSERT_LT(steps, 200);
    EXPECT_LE(step->prefill_tokens + step->decode_tokens, 12) << "step " << steps;
    for (int n : log.sequences) EXPECT_LE(n, 2) << "step " << steps;
    for (auto& f : step->failed) failed.emplace_back(index[f.request_id], f.status);
    for (GenerationResult& r : step->finished) done[index[r.request_id]] = std::move(r);
  }
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].first, 1u);
  EXPECT_TRUE(absl::IsOutOfRange(failed[0].second)) << failed[0].second;
  const std::string message(failed[0].second.message());
  EXPECT_NE(message.find("30 tokens in one step"), std::string::npos) << message;
  EXPECT_NE(message.find("last rows"), std::string::npos) << message;
  EXPECT_NE(message.find("[scheduler] max_step_tokens = 12"), std::string::npos) << message;
  ASSERT_EQ(done.size(), specs.size() - 1);
  for (const auto& [i, result] : done) {
    EXPECT_EQ(result.tokens, Alone(specs[i]).tokens) << "request " << i;
  }
  EXPECT_EQ(engine->kv_pages_used(), 0);
}

// The engine asks the model for the memory of its largest step once, when it starts, and a
// refusal is one error naming the scheduler keys.
TEST(StepApi, TheLargestStepIsReservedWhenTheEngineStarts) {
  class Reserving : public LanguageModel {
   public:
    explicit Reserving(std::unique_ptr<LanguageModel> inner) : inner_(std::move(inner)) {}
    const ModelInfo& info() const override { return inner_->info(); }
    const WeightSource& weights() const override { return inner_->weights(); }
    const std::vector<int64_t>& stop_token_ids() const override { return inner_->stop_token_ids(); }
    void SetThreads(int threads) override { inner_->SetThreads(threads); }
    int threads() const override { return inner_->threads(); }
    absl::Status Forward(std::span<const SequenceChunk> batch, LayerAttention& attention,
                         bool all_positions, std::vector<float>* logits) override {
      return inner_->Forward(batch, attention, all_positions, logits);
    }
    absl::Status ReserveSteps(int64_t rows, int64_t seqs) override {
      asked.emplace_back(rows, seqs);
      if (rows > 1000) return absl::ResourceExhaustedError("1000 rows at most here");
      return absl::OkStatus();
    }
    std::vector<std::pair<int64_t, int64_t>> asked;

   private:
    std::unique_ptr<LanguageModel> inner_;
  };
  PlanLog log;
  auto compose = [&log] {
    Composition c;
    c.backends["full"] = Own(new CountingDense("full", &log));
    c.full_backend = "full";
    return c;
  };
  for (const auto& [step_tokens, batch, rows, seqs] : std::vector<std::array<int64_t, 4>>{
           {0, 0, -1, -1}, {64, 0, 64, 64}, {64, 8, 64, 8}, {4, 8, 4, 4}, {5000, 2, 5000, 2}}) {
    auto model = std::make_unique<Reserving>(Model());
    Reserving* raw = model.get();
    EngineOptions options;
    options.max_step_tokens = step_tokens;
    options.max_batch = batch;
    auto engine = Engine::Create(std::move(model), compose(), options);
    SCOPED_TRACE(absl::StrCat(step_tokens, " tokens, batch ", batch));
    if (rows < 0) {
      ASSERT_TRUE(engine.ok()) << engine.status();
      EXPECT_TRUE(raw->asked.empty());
      continue;
    }
    if (rows > 1000) {
      ASSERT_FALSE(engine.ok());
      EXPECT_TRUE(absl::IsResourceExhausted(engine.status())) << engine.status();
      EXPECT_NE(engine.status().message().find("[scheduler] max_step_tokens = 5000, max_batch = 2"),
                std::string::npos)
          << engine.status();
      EXPECT_NE(engine.status().message().find("1000 rows at most"), std::string::npos);
      continue;
    }
    ASSERT_TRUE(engine.ok()) << engine.status();
    ASSERT_EQ(raw->asked.size(), 1u);
    EXPECT_EQ(raw->asked[0], std::make_pair(rows, seqs));
  }
}

// A request cancelled between two of its chunks gives back the pages of its whole prompt.
TEST(StepApi, CancellingARequestInTheMiddleOfItsPrefillReturnsItsPages) {
  PlanLog log;
  EngineOptions options;
  options.prefill_chunk_tokens = 8;
  std::unique_ptr<Engine> engine = MakeEngine(&log, options);
  auto id = engine->Add(Spec(50, 14, 3, false));
  ASSERT_TRUE(id.ok());
  for (int s = 0; s < 2; ++s) {
    auto step = engine->Step();
    ASSERT_TRUE(step.ok());
    EXPECT_EQ(step->prefill_tokens, 8);
    EXPECT_TRUE(step->tokens.empty());
  }
  EXPECT_EQ(engine->num_running(), 1);
  EXPECT_GT(engine->kv_pages_used(), 0);
  EXPECT_TRUE(engine->Cancel(*id));
  EXPECT_EQ(engine->kv_pages_used(), 0);
  EXPECT_TRUE(engine->idle());
}

// Reads the pre-RoPE queries of a window of the prompt: sparse where their sum is positive.
class WindowReader : public RoutingPolicy {
 public:
  explicit WindowReader(QueryWindow window) : window_(window) {}
  absl::Status Prepare(const RoutingSetup&) override { return absl::OkStatus(); }
  bool NeedsQueries() const override { return true; }
  QueryWindow QueriesRead() const override { return window_; }
  absl::StatusOr<RoutingDecision> Decide(const RoutingInput& in) override {
    // On the CPU `queries` holds every row of the prompt: the window's rows are picked here.
    const int64_t row = int64_t{in.num_q_heads} * in.head_dim;
    double sum = 0;
    for (int64_t r = 0; r < in.query_rows; ++r) {
      const bool read = window_.all() || r < window_.head || r >= in.query_rows - window_.tail;
      for (int64_t i = 0; read && i < row; ++i) sum += in.queries[r * row + i];
    }
    return RoutingDecision{sum > 0 ? AttentionChoice::kSparse : AttentionChoice::kFull, {}};
  }

 private:
  QueryWindow window_;
};

// A policy reading the queries of the prompt's last rows decides only on whole prompts: such a
// request runs its prompt in one step whatever the chunk; one reading the first 8 rows gets
// them in its first chunk. Either way the result is the one of a run with whole prompts.
TEST(StepApi, ChunkingNeverChangesWhatAQueryReadingPolicySees) {
  for (const QueryWindow window : {QueryWindow{3, 3}, QueryWindow{}, QueryWindow{8, 0}}) {
    std::vector<int64_t> prefill_per_step;
    std::vector<std::string> backends[2];
    std::vector<int64_t> tokens[2];
    for (int chunked = 0; chunked < 2; ++chunked) {
      PlanLog log;
      Composition c;
      c.backends["full"] = Own(new CountingDense("full", &log));
      c.backends["stream"] = Own(new CountingStreaming("stream", &log));
      c.router = Own(new WindowReader(window));
      c.full_backend = "full";
      c.sparse_backend = "stream";
      EngineOptions options;
      options.kv_page_tokens = 4;
      options.prefill_chunk_tokens = chunked ? 5 : 0;
      auto engine = Engine::Create(Model(), std::move(c), options);
      ASSERT_TRUE(engine.ok()) << engine.status();
      ASSERT_TRUE((*engine)->Add(Spec(21, 15, 4, false)).ok());
      while (!(*engine)->idle()) {
        auto step = (*engine)->Step();
        ASSERT_TRUE(step.ok()) << step.status();
        if (chunked && step->prefill_tokens > 0) prefill_per_step.push_back(step->prefill_tokens);
        for (GenerationResult& r : step->finished) {
          backends[chunked] = Backends(r.trace);
          tokens[chunked] = r.tokens;
        }
      }
    }
    const std::vector<int64_t> want_steps =
        window.head == 8 ? std::vector<int64_t>{8, 5, 5, 3} : std::vector<int64_t>{21};
    EXPECT_EQ(prefill_per_step, want_steps) << window.head << "/" << window.tail;
    EXPECT_EQ(backends[1], backends[0]) << window.head << "/" << window.tail;
    EXPECT_EQ(tokens[1], tokens[0]) << window.head << "/" << window.tail;
  }
}

// Log probabilities against a double log-softmax of the recorded logits, the alternatives
// against a sort of the row; asking for them changes no sampled token.
TEST(StepApi, LogprobsAreTheLogSoftmaxOfTheRawLogits) {
  RequestSpec spec = Spec(13, 16, 6, false);
  spec.options.sampling.temperature = 0.9;
  spec.options.sampling.seed = 77;
  const GenerationResult plain = Alone(spec);
  spec.options.logprobs = 4;
  spec.options.record_logits = true;
  const GenerationResult got = Alone(spec);
  EXPECT_EQ(got.tokens, plain.tokens);
  ASSERT_EQ(got.logprobs.size(), got.tokens.size());
  ASSERT_EQ(got.top_logprobs.size(), got.tokens.size());
  for (size_t t = 0; t < got.tokens.size(); ++t) {
    const std::vector<float>& row = got.step_logits[t];
    double m = -INFINITY, z = 0;
    for (float x : row) m = std::max(m, static_cast<double>(x));
    for (float x : row) z += std::exp(x - m);
    const double log_z = m + std::log(z);
    EXPECT_NEAR(got.logprobs[t], row[got.tokens[t]] - log_z, 1e-5) << "token " << t;
    std::vector<int64_t> ids(row.size());
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>(i);
    std::stable_sort(ids.begin(), ids.end(), [&](int64_t a, int64_t b) { return row[a] > row[b]; });
    ASSERT_EQ(got.top_logprobs[t].size(), 4u);
    for (size_t k = 0; k < 4; ++k) {
      EXPECT_EQ(got.top_logprobs[t][k].token, ids[k]) << "token " << t << " rank " << k;
      EXPECT_NEAR(got.top_logprobs[t][k].logprob, row[ids[k]] - log_z, 1e-5);
    }
  }
  PlanLog log;
  std::unique_ptr<Engine> engine = MakeEngine(&log);
  spec.options.logprobs = kMaxTopLogprobs + 1;
  EXPECT_EQ(engine->Add(spec).status().message(),
            "logprobs: expected -1 (none) or a number in [0, 20], found 21");
}

TEST(StepApi, CancelReturnsPagesAndTheOthersGoOn) {
  PlanLog log;
  std::unique_ptr<Engine> engine = MakeEngine(&log);
  const RequestSpec keep = Spec(20, 6, 5, false);
  auto id_keep = engine->Add(keep);
  auto id_drop = engine->Add(Spec(40, 7, 50, true));
  ASSERT_TRUE(id_keep.ok() && id_drop.ok());
  ASSERT_TRUE(engine->Step().ok());
  const int64_t used = engine->kv_pages_used();
  EXPECT_TRUE(engine->Cancel(*id_drop));
  EXPECT_FALSE(engine->Cancel(*id_drop));
  EXPECT_LT(engine->kv_pages_used(), used);
  GenerationResult got;
  while (!engine->idle()) {
    auto step = engine->Step();
    ASSERT_TRUE(step.ok());
    for (GenerationResult& r : step->finished) {
      EXPECT_EQ(r.request_id, *id_keep);
      got = std::move(r);
    }
  }
  EXPECT_EQ(got.tokens, Alone(keep).tokens);
  EXPECT_EQ(engine->kv_pages_used(), 0);
}

TEST(StepApi, PoolExhaustionFailsOnlyTheRequestThatCannotGetPages) {
  PlanLog log;
  EngineOptions options;
  options.kv_page_tokens = 4;
  // 4 layers x (2 KV heads x 16 dims x 4 bytes x 2) = 256 bytes per page and layer position
  // group; 60 pages in all: room for two short requests, not for a long one besides them.
  options.kv_pool_bytes = 60 * size_t{2 * 4 * 2 * 16 * 4};
  std::unique_ptr<Engine> engine = MakeEngine(&log, options);
  EXPECT_EQ(engine->kv_pages_total(), 60);
  const RequestSpec small1 = Spec(10, 8, 3, false), small2 = Spec(11, 9, 3, true);
  const RequestSpec big = Spec(120, 10, 2, false);  // 30 pages per layer: 120 pages
  auto a = engine->Add(small1);
  auto b = engine->Add(big);
  auto c = engine->Add(small2);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  std::map<uint64_t, GenerationResult> done;
  std::vector<FailedRequest> failed;
  while (!engine->idle()) {
    auto step = engine->Step();
    ASSERT_TRUE(step.ok()) << step.status();
    for (GenerationResult& r : step->finished) done[r.request_id] = std::move(r);
    for (FailedRequest& f : step->failed) failed.push_back(f);
  }
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].request_id, *b);
  EXPECT_TRUE(absl::IsResourceExhausted(failed[0].status)) << failed[0].status;
  EXPECT_NE(failed[0].status.message().find("KV page pool on cpu exhausted: needed"),
            std::string::npos)
      << failed[0].status;
  EXPECT_NE(failed[0].status.message().find(absl::StrCat("request ", *b)), std::string::npos)
      << failed[0].status;
  EXPECT_EQ(done[*a].tokens, Alone(small1).tokens);
  EXPECT_EQ(done[*c].tokens, Alone(small2).tokens);
  EXPECT_EQ(engine->kv_pages_used(), 0);
}

TEST(StepApi, ARequestThatAsksToWaitRunsOncePagesAreFree) {
  PlanLog log;
  EngineOptions options;
  options.kv_page_tokens = 4;
  options.kv_pool_bytes = 40 * size_t{2 * 4 * 2 * 16 * 4};  // 40 pages
  std::unique_ptr<Engine> engine = MakeEngine(&log, options);
  const RequestSpec first = Spec(60, 11, 4, false);  // 16 pages per layer... 64 > 40: too big
  RequestSpec fits = Spec(30, 12, 4, true);          // 8 per layer: 32 pages (+4 while decoding)
  RequestSpec waits = Spec(28, 13, 3, false);
  waits.wait_for_kv = true;
  auto too_big = engine->Add(first);
  auto a = engine->Add(fits);
  auto b = engine->Add(waits);
  ASSERT_TRUE(too_big.ok() && a.ok() && b.ok());
  std::map<uint64_t, GenerationResult> done;
  int failures = 0;
  bool b_waited = false;
  while (!engine->idle()) {
    auto step = engine->Step();
    ASSERT_TRUE(step.ok());
    failures += static_cast<int>(step->failed.size());
    for (const FailedRequest& f : step->failed) EXPECT_EQ(f.request_id, *too_big);
    if (done.count(*a) == 0 && engine->num_queued() == 1) b_waited = true;
    for (GenerationResult& r : step->finished) done[r.request_id] = std::move(r);
  }
  EXPECT_EQ(failures, 1);
  EXPECT_TRUE(b_waited);
  EXPECT_EQ(done[*a].tokens, Alone(fits).tokens);
  EXPECT_EQ(done[*b].tokens, Alone(waits).tokens);
  EXPECT_EQ(engine->kv_pages_used(), 0);
}

TEST(StepApi, SamplingDependsOnTheRequestsOwnSeedOnly) {
  PlanLog log;
  std::unique_ptr<Engine> engine = MakeEngine(&log);
  RequestSpec spec = Spec(15, 14, 8, false);
  spec.options.sampling.temperature = 0.9;
  spec.options.sampling.top_k = 40;
  spec.options.sampling.seed = 1234;
  RequestSpec other = Spec(25, 15, 8, true);
  other.options.sampling = spec.options.sampling;
  other.options.sampling.seed = 99;
  // The same request in second and fourth place of one batch, after another one.
  ASSERT_TRUE(engine->Add(other).ok());
  auto x = engine->Add(spec);
  ASSERT_TRUE(engine->Add(other).ok());
  auto y = engine->Add(spec);
  std::map<uint64_t, GenerationResult> done;
  while (!engine->idle()) {
    auto step = engine->Step();
    ASSERT_TRUE(step.ok());
    for (GenerationResult& r : step->finished) done[r.request_id] = std::move(r);
  }
  EXPECT_EQ(done[*x].tokens, done[*y].tokens);
  EXPECT_EQ(done[*x].tokens, Alone(spec).tokens);
}

TEST(StepApi, BadRequestsAreRefusedNamingTheField) {
  PlanLog log;
  std::unique_ptr<Engine> engine = MakeEngine(&log);
  RequestSpec unknown = Spec(5, 1, 2, false, "no_such_policy");
  auto r = engine->Add(unknown);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("routing"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("\"all_sparse\""), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("\"no_such_policy\""), std::string::npos) << r.status();
  RequestSpec empty;
  EXPECT_FALSE(engine->Add(empty).ok());
  RequestSpec bad_token = Spec(5, 1, 2, false);
  bad_token.prompt[2] = 101;
  auto bt = engine->Add(bad_token);
  ASSERT_FALSE(bt.ok());
  EXPECT_NE(bt.status().message().find("prompt token 2"), std::string::npos) << bt.status();
  RequestSpec bad_p = Spec(5, 1, 2, false);
  bad_p.options.sampling.top_p = 0;
  EXPECT_FALSE(engine->Add(bad_p).ok());
  EXPECT_TRUE(engine->idle());
}

}  // namespace
}  // namespace fluxattn
