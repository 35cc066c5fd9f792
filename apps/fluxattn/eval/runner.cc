#include "eval/runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "eval/lengths.h"
#include "eval/reports.h"
#include "eval/scoring.h"
#include "eval/words.h"
#include "fluxattn/models/decoder_model.h"
#include "fluxattn/models/model_config.h"
#include "fluxattn/models/safetensors.h"
#include "fluxattn/plugin_registry.h"
#include "fluxattn/status.h"

namespace fluxattn::eval {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double Median(std::vector<double> v) {
  if (v.empty()) return kNaN;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> CreateEngine(EngineConfig config,
                                                     std::unique_ptr<LanguageModel> model,
                                                     const EngineSetup& setup) {
  PluginRegistry registry;
  for (const std::string& dir : setup.plugin_paths) config.plugin_paths.push_back(dir);
  FLUXATTN_RETURN_IF_ERROR(PrepareRegistry(config, registry));
  if (setup.extend_registry) FLUXATTN_RETURN_IF_ERROR(setup.extend_registry(config, registry));
  FLUXATTN_ASSIGN_OR_RETURN(Composition composition, Compose(config, registry));
  EngineOptions options = EngineOptionsFor(config);
  options.open_weights = [](const std::string& path) {
    return models::OpenSafetensorsWeights(path);
  };
  if (setup.adjust_options) setup.adjust_options(options);
  return Engine::Create(std::move(model), std::move(composition), options);
}

absl::StatusOr<std::string> ResolveModelDir(const std::string& config_path,
                                            const EngineConfig& config,
                                            const std::string& model_flag) {
  if (!model_flag.empty()) return model_flag;
  if (config.model.path.empty()) {
    return InvalidInput(absl::StrCat(config_path, ": [model] path"), "a checkpoint folder",
                        "nothing");
  }
  return config.model.path;
}

absl::StatusOr<std::unique_ptr<Session>> OpenSession(const std::string& config_path, int threads,
                                                     bool need_tokenizer,
                                                     const std::string& device) {
  SessionOptions options;
  options.threads = threads;
  options.need_tokenizer = need_tokenizer;
  options.device = device;
  return OpenSession(config_path, options);
}

absl::StatusOr<std::unique_ptr<Session>> OpenSession(const std::string& config_path,
                                                     const SessionOptions& options) {
  FLUXATTN_ASSIGN_OR_RETURN(EngineConfig config, LoadEngineConfig(config_path));
  config.source_path = config_path;
  return OpenSession(std::move(config), options);
}

absl::StatusOr<std::unique_ptr<Session>> OpenSession(EngineConfig config,
                                                     const SessionOptions& session_options) {
  const int threads = session_options.threads;
  const bool need_tokenizer = session_options.need_tokenizer;
  const std::string config_path = config.source_path;
  // "<file>: [model] path", or "[model] path" for a configuration built in code.
  auto key = [&](const char* name) {
    return config_path.empty() ? std::string(name) : absl::StrCat(config_path, ": ", name);
  };
  auto session = std::make_unique<Session>();
  session->config_path = config_path;
  session->name =
      std::filesystem::path(config_path.empty() ? config.model.path : config_path).stem().string();
  if (config.model.path.empty()) {
    return InvalidInput(key("[model] path"), "a checkpoint folder", "nothing");
  }
  FLUXATTN_ASSIGN_OR_RETURN(
      models::ModelLoadOptions load,
      models::ModelLoadOptionsFromConfig(config, config_path, session_options.device, threads));
  session->model_dir = config.model.path;
  const bool has_tokenizer =
      std::filesystem::exists(std::filesystem::path(session->model_dir) / "tokenizer.json");
  if (need_tokenizer && !has_tokenizer) {
    return InvalidInput(absl::StrCat(key("[model] path"), " ", session->model_dir),
                        "a checkpoint with tokenizer.json (the tasks are written in text)",
                        "no tokenizer.json");
  }
  if (has_tokenizer) {
    FLUXATTN_ASSIGN_OR_RETURN(session->tokenizer,
                              models::Tokenizer::FromModelDir(session->model_dir));
  }
  FLUXATTN_ASSIGN_OR_RETURN(std::unique_ptr<LanguageModel> model,
                            models::LoadLanguageModel(session->model_dir, load));
  if (session->tokenizer && session->tokenizer->vocab_size() > model->info().vocab_size) {
    return InvalidInput(
        absl::StrCat(session->model_dir, "/tokenizer.json"),
        absl::StrCat("at most ", model->info().vocab_size, " ids (config.json vocab_size)"),
        absl::StrCat(session->tokenizer->vocab_size(), " ids"));
  }
  EngineSetup setup;
  setup.plugin_paths = session_options.plugin_paths;
  setup.extend_registry = session_options.extend_registry;
  FLUXATTN_ASSIGN_OR_RETURN(session->engine,
                            CreateEngine(std::move(config), std::move(model), setup));
  return session;
}

namespace {

// Runs `prompts` as one batch, request i with sampling seed options.sampling.seed + i; the
// first step (every prefill) is timed apart from the decode steps.
absl::StatusOr<BatchResult> RunSeededBatch(Engine& engine,
                                           const std::vector<std::vector<int64_t>>& prompts,
                                           const GenerationOptions& options) {
  std::vector<RequestSpec> requests(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    requests[i].prompt = prompts[i];
    requests[i].options = options;
    requests[i].options.sampling.seed = options.sampling.seed + i;
  }
  return engine.Generate(std::move(requests));
}

}  // namespace

absl::StatusOr<BenchResult> RunBench(Session& session, int64_t context, int decode_tokens,
                                     int repeats, uint64_t seed, const StepCallback& on_step,
                                     int warmup, int batch, const SamplingOptions& sampling) {
  const ModelInfo& info = session.engine->model().info();
  if (batch < 1) return InvalidInput("bench batch", "an integer >= 1", absl::StrCat(batch));
  if (!session.engine->idle()) {
    return absl::FailedPreconditionError("bench: the engine has requests in flight");
  }
  std::mt19937_64 rng(seed ^ (static_cast<uint64_t>(context) * 0x9E3779B97F4A7C15ull));
  std::vector<std::vector<int64_t>> prompts(batch, std::vector<int64_t>(context));
  for (auto& prompt : prompts) {
    for (int64_t& id : prompt) id = static_cast<int64_t>(PickIndex(rng, info.vocab_size));
  }

  GenerationOptions options;
  // The first new token comes from the prefill; every further one is a decode step.
  options.max_new_tokens = decode_tokens + 1;
  options.ignore_eos = true;
  options.sampling = sampling;
  BenchResult r;
  r.config = session.name;
  r.context = context;
  r.decode_tokens = decode_tokens;
  r.repeats = repeats;
  r.warmup = warmup;
  r.batch = batch;
  for (int w = 0; w < warmup; ++w) {
    if (on_step) on_step(absl::StrCat(FormatLength(context), ", warm-up ", w + 1, "/", warmup));
    FLUXATTN_ASSIGN_OR_RETURN(BatchResult ignored,
                              RunSeededBatch(*session.engine, prompts, options));
    (void)ignored;
  }
  std::vector<double> prefill, decode, route_mean, route_max;
  double sa = 0.0, decode_seconds = 0.0;
  int64_t decoded = 0;
  for (int rep = 0; rep < repeats; ++rep) {
    if (on_step) on_step(absl::StrCat(FormatLength(context), ", run ", rep + 1, "/", repeats));
    FLUXATTN_ASSIGN_OR_RETURN(BatchResult out, RunSeededBatch(*session.engine, prompts, options));
    prefill.push_back(out.timing.prefill_seconds);
    if (out.timing.decode_steps > 0) {
      decode.push_back(1e3 * out.timing.decode_seconds /
                       static_cast<double>(out.timing.decode_steps));
    }
    decode_seconds += out.timing.decode_seconds;
    decoded += out.timing.decode_tokens;
    for (const GenerationResult& g : out.requests) sa += g.trace.sa_ratio;
    const RequestTrace& trace = out.requests[0].trace;
    double route_sum = 0.0, route_top = 0.0;
    int routed = 0;
    for (const LayerRouting& L : trace.layers) {
      if (L.route_seconds <= 0.0) continue;
      route_sum += L.route_seconds;
      route_top = std::max(route_top, L.route_seconds);
      ++routed;
    }
    route_mean.push_back(routed > 0 ? 1e3 * route_sum / routed : 0.0);
    route_max.push_back(1e3 * route_top);
    r.kv_bytes_after_prefill = trace.kv_bytes_after_prefill;
    r.kv_bytes = trace.kv_bytes;
    r.kv_bytes_full_cache = trace.kv_bytes_full_cache;
  }
  r.prefill_samples = prefill;
  r.decode_samples = decode;
  r.prefill_seconds = Median(prefill);
  r.prefill_tokens_per_second = static_cast<double>(context) * batch / r.prefill_seconds;
  r.decode_ms_per_token = Median(decode);
  r.route_ms_per_layer = route_mean.empty() ? 0.0 : Median(route_mean);
  r.route_ms_max = route_max.empty() ? 0.0 : Median(route_max);
  r.decode_tokens_per_second = decode_seconds > 0 ? decoded / decode_seconds : kNaN;
  r.sa_ratio = repeats > 0 ? sa / (repeats * batch) : kNaN;
  r.dense_prefill_kernel = session.engine->dense_prefill_kernel();
  return r;
}

namespace {

// Perplexity of the last `scored_tokens` document tokens: one prefill per scored position, each
// reading the next token's logits from the prefill (the engine exposes last-position logits).
absl::Status ScorePerplexity(Session& session, const TaskSample& sample, uint64_t seed,
                             SampleResult& out) {
  GenerationOptions options;
  // The sample's own seed: a seeded routing policy draws its layers per sample.
  options.sampling.seed = seed;
  options.max_new_tokens = 1;
  options.record_logits = true;
  options.ignore_eos = true;
  const int64_t n = static_cast<int64_t>(sample.prompt_ids.size());
  double nll = 0.0, sa = 0.0, prefill = 0.0;
  for (int64_t pos = n - sample.scored_tokens; pos < n; ++pos) {
    std::vector<int64_t> prefix(sample.prompt_ids.begin(), sample.prompt_ids.begin() + pos);
    FLUXATTN_ASSIGN_OR_RETURN(BatchResult result, session.engine->Generate({prefix}, options));
    const GenerationResult& g = result.requests[0];
    if (g.step_logits.empty()) return absl::InternalError("lm_ppl: the engine returned no logits");
    nll += NegativeLogLikelihood(g.step_logits[0], sample.prompt_ids[pos]);
    sa += g.trace.sa_ratio;
    prefill += result.timing.prefill_seconds;
  }
  const double k = static_cast<double>(sample.scored_tokens);
  out.nll = nll / k;
  out.sa_ratio = sa / k;
  out.prefill_seconds = prefill / k;
  return absl::OkStatus();
}

// Token ids that end an answer line: the encodings of "\n" variants that are single tokens.
std::vector<int64_t> NewlineTokens(const models::Tokenizer& tok) {
  std::vector<int64_t> ids;
  for (const char* text : {"\n", "\n\n", ".\n"}) {
    auto enc = tok.Encode(text, /*add_special_tokens=*/false);
    if (enc.ok() && enc->size() == 1) ids.push_back((*enc)[0]);
  }
  return ids;
}

}  // namespace

absl::StatusOr<EvalResult> RunEvalTask(Session& session, TaskKind kind, int64_t length, int samples,
                                       uint64_t seed, const StepCallback& on_step) {
  if (!session.tokenizer) {
    return absl::FailedPreconditionError(
        absl::StrCat(session.model_dir, ": eval needs the checkpoint's tokenizer.json"));
  }
  const auto start = std::chrono::steady_clock::now();
  TaskGenerator generator(*session.tokenizer);
  EvalResult r;
  r.config = session.name;
  r.task = TaskName(kind);
  r.length = length;
  r.samples = samples;
  const std::vector<int64_t> newline = NewlineTokens(*session.tokenizer);
  double nll = 0.0, tokens = 0.0, sa = 0.0, prefill = 0.0;
  for (int i = 0; i < samples; ++i) {
    if (on_step) {
      on_step(absl::StrCat(r.task, " ", FormatLength(length), ", sample ", i + 1, "/", samples));
    }
    const uint64_t sample_seed = seed + static_cast<uint64_t>(i);
    FLUXATTN_ASSIGN_OR_RETURN(TaskSample sample, generator.Generate(kind, length, sample_seed));
    SampleResult s;
    s.seed = sample_seed;
    s.prompt_tokens = static_cast<int64_t>(sample.prompt_ids.size());
    if (kind == TaskKind::kLmPerplexity) {
      FLUXATTN_RETURN_IF_ERROR(ScorePerplexity(session, sample, sample_seed, s));
      nll += s.nll;
    } else {
      FLUXATTN_ASSIGN_OR_RETURN(std::vector<int64_t> answer_ids,
                                generator.Encode(absl::StrCat(" ", sample.answer)));
      GenerationOptions options;
      // Each sample is its own request with its own seed (decoding is greedy; a seeded routing
      // policy such as `random` draws its layers per sample, as it would per user request).
      options.sampling.seed = sample_seed;
      // Room for the answer plus a few tokens of spacing or punctuation; a longer output could
      // not match anyway.
      options.max_new_tokens = static_cast<int>(answer_ids.size()) + 6;
      options.stop_tokens = newline;
      FLUXATTN_ASSIGN_OR_RETURN(BatchResult result,
                                session.engine->Generate({sample.prompt_ids}, options));
      const GenerationResult& g = result.requests[0];
      std::vector<int32_t> out_ids(g.tokens.begin(), g.tokens.end());
      FLUXATTN_ASSIGN_OR_RETURN(s.output, session.tokenizer->Decode(out_ids, true));
      s.expected = sample.answer;
      s.correct = ExactMatch(s.output, sample.answer);
      s.sa_ratio = g.trace.sa_ratio;
      s.prefill_seconds = result.timing.prefill_seconds;
      r.correct += s.correct ? 1 : 0;
    }
    tokens += static_cast<double>(s.prompt_tokens);
    sa += s.sa_ratio;
    prefill += s.prefill_seconds;
    r.details.push_back(std::move(s));
  }
  const double n = std::max(1, samples);
  if (kind == TaskKind::kLmPerplexity) {
    r.accuracy = kNaN;
    r.perplexity = std::exp(nll / n);
  } else {
    r.accuracy = static_cast<double>(r.correct) / n;
    r.perplexity = kNaN;
  }
  r.mean_prompt_tokens = tokens / n;
  r.sa_ratio = sa / n;
  r.prefill_seconds = prefill / n;
  r.seconds = Seconds(start, std::chrono::steady_clock::now());
  return r;
}

absl::StatusOr<std::vector<EvalResult>> RunEvalSuite(Session& session,
                                                     const std::vector<TaskKind>& tasks,
                                                     const std::vector<int64_t>& lengths,
                                                     int samples, uint64_t seed,
                                                     const StepCallback& on_step) {
  std::vector<EvalResult> results;
  for (int64_t length : lengths) {
    for (TaskKind kind : tasks) {
      absl::StatusOr<EvalResult> result =
          RunEvalTask(session, kind, length, samples, seed, on_step);
      if (!result.ok()) {
        return absl::Status(result.status().code(),
                            absl::StrCat(session.config_path, ": ", result.status().message()));
      }
      results.push_back(std::move(*result));
    }
  }
  return results;
}

absl::StatusOr<std::vector<std::string>> CompareNames(const std::vector<std::string>& configs) {
  std::vector<std::string> names;
  for (const std::string& path : configs) {
    const std::string name = std::filesystem::path(path).stem().string();
    if (std::find(names.begin(), names.end(), name) != names.end()) {
      return absl::InvalidArgumentError(absl::StrCat("compare: two configs are both called \"",
                                                     name, "\"; give the files different names"));
    }
    names.push_back(name);
  }
  return names;
}

int64_t CompareSteps(const CompareOptions& options, size_t configs) {
  return static_cast<int64_t>(options.lengths.size()) *
         (options.repeats + static_cast<int64_t>(options.tasks.size()) * options.samples) *
         static_cast<int64_t>(configs);
}

absl::StatusOr<CompareSuite> RunCompareSuite(const std::vector<std::string>& configs,
                                             const CompareOptions& options,
                                             const StepCallback& on_step) {
  CompareSuite suite;
  suite.configs = configs;
  FLUXATTN_ASSIGN_OR_RETURN(suite.names, CompareNames(configs));
  for (TaskKind kind : options.tasks) suite.task_names.push_back(TaskName(kind));
  SessionOptions session_options = options.session;
  session_options.need_tokenizer = true;
  for (const std::string& path : configs) {
    FLUXATTN_ASSIGN_OR_RETURN(std::unique_ptr<Session> session, OpenSession(path, session_options));
    const std::string& name = session->name;
    auto step = [&](const std::string& detail) {
      if (on_step) on_step(name + ": " + detail);
    };
    auto fail = [&](const absl::Status& st) {
      return absl::Status(st.code(), absl::StrCat(path, ": ", st.message()));
    };
    for (int64_t length : options.lengths) {
      for (TaskKind kind : options.tasks) {
        auto r = RunEvalTask(*session, kind, length, options.samples, options.seed, step);
        if (!r.ok()) return fail(r.status());
        suite.evals.push_back(std::move(*r));
      }
      auto b = RunBench(*session, length, options.decode_tokens, options.repeats, options.seed,
                        [&](const std::string& detail) { step("bench " + detail); });
      if (!b.ok()) return fail(b.status());
      suite.bench.push_back(std::move(*b));
    }
  }
  suite.rows =
      BuildCompareRows(suite.names, options.lengths, suite.task_names, suite.bench, suite.evals);
  return suite;
}

nlohmann::ordered_json CompareReportJson(const CompareSuite& suite, const CompareOptions& options) {
  nlohmann::ordered_json json = {
      {"configs", suite.configs},
      {"tasks", suite.task_names},
      {"lengths", options.lengths},
      {"samples", options.samples},
      {"seed", options.seed},
      {"decode_tokens", options.decode_tokens},
      {"baseline", suite.names.empty() ? std::string() : suite.names.front()},
      {"rows", CompareJson(suite.rows)},
      {"bench", nlohmann::ordered_json::array()},
      {"eval", nlohmann::ordered_json::array()},
  };
  for (const BenchResult& b : suite.bench) json["bench"].push_back(BenchJson(b));
  for (const EvalResult& e : suite.evals) json["eval"].push_back(EvalJson(e, true));
  return json;
}

}  // namespace fluxattn::eval
