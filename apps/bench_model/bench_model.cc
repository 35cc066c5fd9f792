// Prefill and decode tokens/s of the CPU engine on a checkpoint or on a random model of a given
// shape built in memory, for several context lengths and thread counts. Attention goes through
// the `full` plugin found on the plugin search path, as in `fluxattn generate`.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "fluxattn/config.h"
#include "fluxattn/engine.h"
#include "fluxattn/models/decoder_model.h"
#include "fluxattn/models/model_config.h"
#include "fluxattn/plugin_registry.h"
#include "fluxattn/status.h"
#include "nlohmann/json.hpp"

namespace fluxattn {
namespace {

struct Args {
  std::string model;
  int hidden = 512, layers = 4, heads = 8, kv_heads = 2, head_dim = 64, intermediate = 1408;
  int vocab = 4096;
  std::vector<int> contexts = {128, 512, 2048};
  std::vector<int> threads = {1, 2};
  int decode_tokens = 16;
  std::string json_path;
};

absl::StatusOr<std::unique_ptr<LanguageModel>> MakeModel(const Args& a, int threads) {
  if (!a.model.empty()) return models::LoadLanguageModel(a.model, {.threads = threads});
  models::ModelSpec spec;
  spec.family = models::ModelFamily::kQwen3;
  spec.qk_norm = true;
  spec.info.architecture = "Qwen3ForCausalLM";
  spec.info.num_layers = a.layers;
  spec.info.hidden_size = a.hidden;
  spec.info.num_q_heads = a.heads;
  spec.info.num_kv_heads = a.kv_heads;
  spec.info.head_dim = a.head_dim;
  spec.info.vocab_size = a.vocab;
  spec.intermediate_size = a.intermediate;
  spec.rope.theta = 1e6;
  FLUXATTN_ASSIGN_OR_RETURN(auto weights, models::RandomWeights(spec, 1));
  return models::CreateLanguageModel(spec, std::move(weights), {.threads = threads});
}

int Run(const Args& a) {
  PluginRegistry registry;
  nlohmann::json rows = nlohmann::json::array();
  std::printf("%-8s %-8s %-10s %-14s %-14s %-12s\n", "threads", "context", "decode", "prefill tok/s",
              "decode tok/s", "KV MiB");
  for (int threads : a.threads) {
    auto model = MakeModel(a, threads);
    if (!model.ok()) {
      std::cerr << "bench_model: error: " << model.status().message() << "\n";
      return 1;
    }
    const ModelInfo info = (*model)->info();
    EngineConfig config = DefaultEngineConfig(info);
    config.router.plugin.clear();  // every layer on `full`
    config.backends.erase("sparse");
    config.router_sparse = "full";
    if (absl::Status st = PrepareRegistry(config, registry); !st.ok()) {
      std::cerr << "bench_model: error: " << st.message() << "\n";
      return 1;
    }
    auto composition = Compose(config, registry);
    if (!composition.ok()) {
      std::cerr << "bench_model: error: " << composition.status().message() << "\n";
      return 1;
    }
    auto engine = Engine::Create(std::move(*model), std::move(*composition));
    if (!engine.ok()) {
      std::cerr << "bench_model: error: " << engine.status().message() << "\n";
      return 1;
    }
    std::mt19937 rng(7);
    std::uniform_int_distribution<int64_t> token(0, info.vocab_size - 1);
    for (int context : a.contexts) {
      std::vector<int64_t> prompt(context);
      for (auto& t : prompt) t = token(rng);
      GenerationOptions options;
      options.max_new_tokens = a.decode_tokens + 1;  // the first token comes from prefill
      options.ignore_eos = true;
      auto r = (*engine)->Generate({prompt}, options);
      if (!r.ok()) {
        std::cerr << "bench_model: error: " << r.status().message() << "\n";
        return 1;
      }
      const auto& t = r->timing;
      const double prefill = t.prefill_tokens / t.prefill_seconds;
      const double decode = t.decode_tokens / t.decode_seconds;
      const double kv_mib = r->requests[0].trace.kv_bytes / 1048576.0;
      std::printf("%-8d %-8d %-10lld %-14.1f %-14.2f %-12.2f\n", threads, context,
                  static_cast<long long>(t.decode_tokens), prefill, decode, kv_mib);
      rows.push_back({{"threads", threads},
                      {"context", context},
                      {"decode_tokens", t.decode_tokens},
                      {"prefill_seconds", t.prefill_seconds},
                      {"decode_seconds", t.decode_seconds},
                      {"prefill_tokens_per_second", prefill},
                      {"decode_tokens_per_second", decode},
                      {"kv_bytes", r->requests[0].trace.kv_bytes}});
    }
  }
  nlohmann::json out = {{"model", a.model.empty() ? "random" : a.model},
                        {"shape",
                         {{"hidden", a.hidden},
                          {"layers", a.layers},
                          {"heads", a.heads},
                          {"kv_heads", a.kv_heads},
                          {"head_dim", a.head_dim},
                          {"intermediate", a.intermediate},
                          {"vocab", a.vocab}}},
                        {"results", rows}};
  std::cout << out.dump() << "\n";
  if (!a.json_path.empty()) std::ofstream(a.json_path) << out.dump(2) << "\n";
  return 0;
}

}  // namespace
}  // namespace fluxattn

int main(int argc, char** argv) {
  fluxattn::Args a;
  CLI::App app{"bench_model: prefill/decode tokens per second of the CPU engine"};
  app.add_option("--model", a.model, "Checkpoint folder (default: a random model in memory)");
  app.add_option("--hidden", a.hidden);
  app.add_option("--layers", a.layers);
  app.add_option("--heads", a.heads);
  app.add_option("--kv-heads", a.kv_heads);
  app.add_option("--head-dim", a.head_dim);
  app.add_option("--intermediate", a.intermediate);
  app.add_option("--vocab", a.vocab);
  app.add_option("--contexts", a.contexts, "Prompt lengths")->delimiter(',');
  app.add_option("--threads", a.threads, "Thread counts")->delimiter(',');
  app.add_option("--decode-tokens", a.decode_tokens);
  app.add_option("--json", a.json_path, "Also write the JSON here");
  CLI11_PARSE(app, argc, argv);
  return fluxattn::Run(a);
}
