// `fluxattn generate`: loads a checkpoint (and optionally a TOML composition), prefills the
// prompts and decodes, streaming tokens to stdout; --json prints tokens, text, routing and
// timing; --trace writes the per-request routing trace.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "command.h"
#include "eval/runner.h"
#include "fluxattn/config.h"
#include "fluxattn/default_composition.h"
#include "fluxattn/engine.h"
#include "fluxattn/models/decoder_model.h"
#include "fluxattn/models/model_config.h"
#include "fluxattn/plugin_registry.h"
#include "fluxattn/status.h"
#include "nlohmann/json.hpp"
#if defined(FLUXATTN_HAS_TOKENIZER)
#include "fluxattn/models/tokenizer.h"
#endif

namespace fluxattn::cli {
namespace {

using nlohmann::json;

struct GenerateArgs {
  std::string model;
  std::string config;
  std::vector<std::string> prompts;
  std::vector<std::string> prompt_files;
  std::vector<std::string> prompt_ids;
  int max_new_tokens = 64;
  double temperature = 0.0;
  int top_k = 0;
  double top_p = 1.0;
  uint64_t seed = 0;
  bool ignore_eos = false;
  int threads = -1;
  std::string device;  // empty: the config's [model] device
  bool json = false;
  std::string trace;
  std::vector<std::string> plugin_paths;
  bool explain = false;
  bool logits = false;
};

// A TOML basic string.
std::string TomlString(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          char buffer[8];
          std::snprintf(buffer, sizeof(buffer), "\\u%04x", static_cast<unsigned char>(c));
          out += buffer;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string TomlValue(const ParamValue& value) {
  if (const auto* s = std::get_if<std::string>(&value)) return TomlString(*s);
  if (const auto* list = std::get_if<std::vector<std::string>>(&value)) {
    std::vector<std::string> items;
    for (const std::string& item : *list) items.push_back(TomlString(item));
    return absl::StrCat("[", absl::StrJoin(items, ", "), "]");
  }
  return ParamValueToString(value);
}

std::string AbsolutePath(const std::string& path) {
  return path.empty() ? path : std::filesystem::absolute(path).lexically_normal().string();
}

// One [table] of a validated instance: its plugin, then every parameter; those left at their
// defaults are written commented out, since a plugin may read something else (config.json) when
// a parameter is not given.
void AppendInstanceToml(const PluginInstanceConfig& instance,
                        const std::vector<std::pair<std::string, std::string>>& leading,
                        std::string* out) {
  absl::StrAppend(out, "\n[", instance.table, "]\n");
  absl::StrAppend(out, "plugin = ",
                  TomlString(instance.plugin_file.empty() ? instance.plugin
                                                          : AbsolutePath(instance.plugin_file)),
                  "\n");
  for (const auto& [key, value] : leading) absl::StrAppend(out, key, " = ", value, "\n");
  for (const auto& [key, value] : instance.params.values()) {
    absl::StrAppend(out, instance.params.is_explicit(key) ? "" : "# ", key, " = ", TomlValue(value),
                    instance.params.is_explicit(key) ? "" : "  # default", "\n");
  }
}

// The composition as a TOML file `fluxattn generate --config` reads back unchanged.
std::string ExplainToml(const EngineConfig& config, const std::string& model_dir) {
  std::string out =
      absl::StrCat("# The composition fluxattn generate runs for this checkpoint",
                   config.source_path.empty() ? " (built in for its config.json)"
                                              : absl::StrCat(" (from ", config.source_path, ")"),
                   ".\n# Save it, change what you need, and pass it with --config.\n");
  absl::StrAppend(&out, "\n[model]\npath = ", TomlString(AbsolutePath(model_dir)), "\n",
                  "device = ", TomlString(config.model.device), "\n",
                  "dtype = ", TomlString(config.model.dtype), "\n");
  if (config.model.threads != 0) absl::StrAppend(&out, "threads = ", config.model.threads, "\n");
  if (!config.plugin_paths.empty()) {
    std::vector<std::string> paths;
    for (const std::string& path : config.plugin_paths) {
      paths.push_back(TomlString(AbsolutePath(path)));
    }
    absl::StrAppend(&out, "\n[plugins]\npaths = [", absl::StrJoin(paths, ", "), "]\n");
  }
  for (const auto& [name, backend] : config.backends) {
    std::vector<std::pair<std::string, std::string>> phases;
    if (!backend.prefill_with.empty()) {
      phases.emplace_back("prefill_with", TomlString(backend.prefill_with));
    }
    if (!backend.decode_with.empty()) {
      phases.emplace_back("decode_with", TomlString(backend.decode_with));
    }
    AppendInstanceToml(backend, phases, &out);
  }
  if (!config.router.plugin.empty()) {
    AppendInstanceToml(
        config.router,
        {{"full", TomlString(config.router_full)}, {"sparse", TomlString(config.router_sparse)}},
        &out);
  }
  for (const auto& [name, router] : config.routers) AppendInstanceToml(router, {}, &out);
  for (const auto& [layer, backend] : config.layer_backends) {
    absl::StrAppend(&out, "\n[layers.", layer, "]\nbackend = ", TomlString(backend), "\n");
  }
  return out;
}

// Thin wrapper so the command works (ids only) when the tokenizer is not built in.
class TextCodec {
 public:
  static absl::StatusOr<std::unique_ptr<TextCodec>> Open(const std::string& dir, bool required) {
    auto codec = std::make_unique<TextCodec>();
#if defined(FLUXATTN_HAS_TOKENIZER)
    const bool present = std::filesystem::exists(std::filesystem::path(dir) / "tokenizer.json");
    if (!present) {
      if (required) {
        return InvalidInput(dir, "tokenizer.json for --prompt/--prompt-file", "none");
      }
      return codec;
    }
    FLUXATTN_ASSIGN_OR_RETURN(codec->tokenizer_, models::Tokenizer::FromModelDir(dir));
#else
    if (required) {
      return absl::UnimplementedError(
          "--prompt/--prompt-file: the tokenizer is unavailable in this build; use --prompt-ids");
    }
#endif
    return codec;
  }

  bool has_text() const {
#if defined(FLUXATTN_HAS_TOKENIZER)
    return tokenizer_ != nullptr;
#else
    return false;
#endif
  }

  absl::StatusOr<std::vector<int64_t>> Encode(const std::string& text) const {
#if defined(FLUXATTN_HAS_TOKENIZER)
    FLUXATTN_ASSIGN_OR_RETURN(auto ids, tokenizer_->Encode(text, /*add_special_tokens=*/true));
    return std::vector<int64_t>(ids.begin(), ids.end());
#else
    return absl::UnimplementedError("the tokenizer is unavailable in this build");
#endif
  }

  absl::StatusOr<std::string> Decode(const std::vector<int64_t>& ids) const {
#if defined(FLUXATTN_HAS_TOKENIZER)
    std::vector<int32_t> narrow(ids.begin(), ids.end());
    return tokenizer_->Decode(narrow, /*skip_special_tokens=*/false);
#else
    return std::string();
#endif
  }

  // Streams one request's text; without a tokenizer, ids separated by spaces.
  class Stream {
   public:
    explicit Stream(const TextCodec& codec) : codec_(codec) {
#if defined(FLUXATTN_HAS_TOKENIZER)
      if (codec.tokenizer_)
        decoder_ = std::make_unique<models::StreamingDecoder>(*codec.tokenizer_);
#endif
    }
    std::string Push(int64_t id) {
#if defined(FLUXATTN_HAS_TOKENIZER)
      if (decoder_) {
        auto text = decoder_->Push(static_cast<int32_t>(id));
        return text.ok() ? *text : std::string();
      }
#endif
      return absl::StrCat(id, " ");
    }
    std::string Finish() {
#if defined(FLUXATTN_HAS_TOKENIZER)
      if (decoder_) return decoder_->Finish();
#endif
      return "";
    }

   private:
    const TextCodec& codec_;
#if defined(FLUXATTN_HAS_TOKENIZER)
    std::unique_ptr<models::StreamingDecoder> decoder_;
#endif
  };

 private:
#if defined(FLUXATTN_HAS_TOKENIZER)
  std::unique_ptr<models::Tokenizer> tokenizer_;
#endif
};

absl::StatusOr<std::vector<int64_t>> ParseIds(const std::string& text) {
  std::vector<int64_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int64_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      return InvalidInput("--prompt-ids", "comma-separated integers",
                          absl::StrCat("'", std::string(part), "'"));
    }
    ids.push_back(id);
  }
  if (ids.empty()) return InvalidInput("--prompt-ids", "at least one id", "none");
  return ids;
}

json RoutingJson(const RequestTrace& trace) {
  json layers = json::array();
  for (const LayerRouting& L : trace.layers) {
    json j = {{"layer", L.layer},           {"backend", L.backend},
              {"plugin", L.plugin},         {"choice", AttentionChoiceName(L.choice)},
              {"decided_by", L.decided_by}, {"logits", L.logits},
              {"kv_bytes", L.kv_bytes}};
    if (!L.fallback.empty()) j["fallback"] = L.fallback;
    // Named only where the routed instance delegates the phase ([backends.<name>] *_with).
    if (L.prefill_backend != L.backend) j["prefill_backend"] = L.prefill_backend;
    if (L.decode_backend != L.backend) j["decode_backend"] = L.decode_backend;
    layers.push_back(std::move(j));
  }
  return layers;
}

json TraceJson(const RequestTrace& trace) {
  return {{"request_id", trace.request_id},
          {"prompt_tokens", trace.prompt_tokens},
          {"routing", trace.routing},
          {"sa_ratio", trace.sa_ratio},
          {"kv_bytes", trace.kv_bytes},
          {"kv_bytes_after_prefill", trace.kv_bytes_after_prefill},
          {"kv_bytes_full_cache", trace.kv_bytes_full_cache},
          {"layers", RoutingJson(trace)}};
}

json TimingJson(const GenerationTiming& t) {
  auto rate = [](double n, double s) { return s > 0 ? n / s : 0.0; };
  return {{"prefill_seconds", t.prefill_seconds},
          {"decode_seconds", t.decode_seconds},
          {"prefill_tokens", t.prefill_tokens},
          {"decode_tokens", t.decode_tokens},
          {"prefill_tokens_per_second", rate(t.prefill_tokens, t.prefill_seconds)},
          {"decode_tokens_per_second", rate(t.decode_tokens, t.decode_seconds)}};
}

// Runs the command; usage problems return kExitUsage, everything else kExitFailure.
int RunGenerate(const GenerateArgs& args) {
  if (args.model.empty() && args.config.empty()) {
    PrintError("generate: give --model DIR or --config FILE");
    return kExitUsage;
  }
  const size_t prompt_count =
      args.prompts.size() + args.prompt_files.size() + args.prompt_ids.size();
  if (prompt_count == 0 && !args.explain) {
    PrintError("generate: give --prompt, --prompt-file or --prompt-ids");
    return kExitUsage;
  }
  std::vector<std::vector<int64_t>> id_prompts;
  for (const std::string& s : args.prompt_ids) {
    auto ids = ParseIds(s);
    if (!ids.ok()) {
      PrintError(std::string(ids.status().message()));
      return kExitUsage;
    }
    id_prompts.push_back(std::move(*ids));
  }
  auto fail = [](const absl::Status& st) {
    PrintError(std::string(st.message()));
    return kExitFailure;
  };

  EngineConfig config;
  std::string model_dir = args.model;
  if (!args.config.empty()) {
    auto loaded = LoadEngineConfig(args.config);
    if (!loaded.ok()) return fail(loaded.status());
    config = std::move(*loaded);
    auto resolved = eval::ResolveModelDir(args.config, config, model_dir);
    if (!resolved.ok()) return fail(resolved.status());
    model_dir = *resolved;
  }
  auto spec = models::LoadModelConfig(model_dir);
  if (!spec.ok()) return fail(spec.status());
  if (args.config.empty()) config = DefaultEngineConfig(spec->info);
  if (args.explain) {
    // The composition only: plugins found and parameters validated, no weights loaded.
    PluginRegistry registry;
    for (const std::string& dir : args.plugin_paths) config.plugin_paths.push_back(dir);
    absl::Status prepared = PrepareRegistry(config, registry);
    if (!prepared.ok()) return fail(prepared);
    auto composition = Compose(config, registry);
    if (!composition.ok()) return fail(composition.status());
    std::cout << ExplainToml(config, model_dir);
    return kExitOk;
  }
  auto load = models::ModelLoadOptionsFromConfig(config, args.config, args.device, args.threads);
  if (!load.ok()) return fail(load.status());

  auto codec = TextCodec::Open(model_dir, !args.prompts.empty() || !args.prompt_files.empty());
  if (!codec.ok()) return fail(codec.status());
  std::vector<std::vector<int64_t>> prompts;
  for (const std::string& text : args.prompts) {
    auto ids = (*codec)->Encode(text);
    if (!ids.ok()) return fail(ids.status());
    prompts.push_back(std::move(*ids));
  }
  for (const std::string& path : args.prompt_files) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return fail(InvalidInput(path, "a readable prompt file", "cannot open"));
    std::stringstream text;
    text << in.rdbuf();
    auto ids = (*codec)->Encode(text.str());
    if (!ids.ok()) return fail(ids.status());
    prompts.push_back(std::move(*ids));
  }
  for (auto& ids : id_prompts) prompts.push_back(std::move(ids));

  auto model = models::LoadLanguageModel(model_dir, *load);
  if (!model.ok()) return fail(model.status());
  auto engine = eval::CreateEngine(config, std::move(*model), {.plugin_paths = args.plugin_paths});
  if (!engine.ok()) return fail(engine.status());
  // Positions past the checkpoint's trained range are allowed, but never silently.
  if (auto max_pos = (*engine)->model().info().ConfigNumber("max_position_embeddings")) {
    for (size_t i = 0; i < prompts.size(); ++i) {
      const int64_t last = static_cast<int64_t>(prompts[i].size()) + args.max_new_tokens;
      if (last > static_cast<int64_t>(*max_pos)) {
        std::cerr << "warning: prompt " << i << ": " << prompts[i].size() << " tokens + "
                  << args.max_new_tokens << " new reach position " << last
                  << ", past max_position_embeddings " << static_cast<int64_t>(*max_pos) << " of "
                  << model_dir << "/config.json; RoPE extrapolates beyond it\n";
      }
    }
  }

  GenerationOptions options;
  options.max_new_tokens = args.max_new_tokens;
  options.ignore_eos = args.ignore_eos;
  options.sampling.temperature = args.temperature;
  options.sampling.top_k = args.top_k;
  options.sampling.top_p = args.top_p;
  options.sampling.seed = args.seed;
  options.record_logits = args.logits;
  // Tokens are streamed when one prompt is generated without --json.
  const bool stream = !args.json && prompts.size() == 1;
  TextCodec::Stream streamer(**codec);
  TokenCallback on_token;
  if (stream) {
    on_token = [&](int, int64_t token) { std::cout << streamer.Push(token) << std::flush; };
  }
  auto result = (*engine)->Generate(prompts, options, on_token);
  if (!result.ok()) return fail(result.status());
  if (stream) std::cout << streamer.Finish() << std::endl;

  std::vector<json> per_request;
  for (const GenerationResult& r : result->requests) {
    json j = {{"tokens", r.tokens},
              {"finish_reason", r.finish_reason},
              {"routing", RoutingJson(r.trace)},
              {"sa_ratio", r.trace.sa_ratio},
              {"kv_bytes", r.trace.kv_bytes}};
    // --logits: the logits of the last position (the row the last token was sampled from).
    if (args.logits && !r.step_logits.empty()) j["logits"] = r.step_logits.back();
    // Without a tokenizer.json there is no text to show.
    j["text"] = nullptr;
    if ((*codec)->has_text()) {
      auto text = (*codec)->Decode(r.tokens);
      if (!text.ok()) return fail(text.status());
      j["text"] = *text;
    }
    per_request.push_back(std::move(j));
  }
  if (!args.trace.empty()) {
    json trace = json::array();
    for (const GenerationResult& r : result->requests) trace.push_back(TraceJson(r.trace));
    std::ofstream out(args.trace);
    if (!out) return fail(InvalidInput(args.trace, "a writable trace file", "cannot open"));
    out << json{{"requests", trace}, {"timing", TimingJson(result->timing)}}.dump(2) << "\n";
  }
  if (args.json) {
    json out;
    if (per_request.size() == 1) {
      out = per_request[0];
    } else {
      out["requests"] = per_request;
    }
    out["timing"] = TimingJson(result->timing);
    std::cout << out.dump() << std::endl;
  } else if (!stream) {
    for (size_t i = 0; i < per_request.size(); ++i) {
      std::cout << "[" << i << "] ";
      if (per_request[i]["text"].is_string()) {
        std::cout << per_request[i]["text"].get<std::string>();
      } else {
        for (int64_t t : result->requests[i].tokens) std::cout << t << " ";
      }
      std::cout << "\n";
    }
  }
  return kExitOk;
}

std::function<int()> SetupGenerate(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  app.description(
      "Generate text with a checkpoint (all layers on `full`, or the flux router "
      "for Flux checkpoints) or a TOML composition");
  auto* model = app.add_option("--model", args->model, "Hugging Face checkpoint folder");
  auto* config = app.add_option("--config", args->config, "TOML engine configuration");
  (void)model;
  (void)config;
  app.add_option("--prompt", args->prompts, "Prompt text (repeat for a batch)");
  app.add_option("--prompt-file", args->prompt_files, "File holding a prompt (repeatable)");
  app.add_option("--prompt-ids", args->prompt_ids,
                 "Comma-separated token ids used exactly as given (repeatable)");
  app.add_option("--max-new-tokens", args->max_new_tokens, "Tokens to generate")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--temperature", args->temperature, "0 = greedy")->check(CLI::NonNegativeNumber);
  app.add_option("--top-k", args->top_k, "Sample among the k most likely (0 = off)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--top-p", args->top_p, "Nucleus sampling mass (1 = off)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--seed", args->seed, "Sampling seed (every request of the batch uses it)");
  app.add_flag("--logits", args->logits,
               "With --json: include the logits of the last position of each request");
  app.add_flag("--ignore-eos", args->ignore_eos, "Do not stop at the model's eos tokens");
  app.add_option(
      "--device", args->device,
      "Where the model runs: cpu, cuda or cuda:N (default: the config's [model] device)");
  app.add_option("--threads", args->threads, "Worker threads (0 = all cores)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--json", args->json, "Print one JSON object with tokens, text, routing, timing");
  app.add_option("--trace", args->trace, "Write the routing trace (JSON) to this file");
  app.add_option("--plugin-path", args->plugin_paths, "Extra plugin directories");
  app.add_flag("--explain", args->explain,
               "Print the composed configuration as TOML (for --config) and exit");
  return [args] { return RunGenerate(*args); };
}

}  // namespace

FLUXATTN_REGISTER_COMMAND(generate, SetupGenerate);

}  // namespace fluxattn::cli
