// `fluxattn serve`: an OpenAI-compatible HTTP server over the engine's step API, with continuous
// batching and a routing policy chosen per request (docs/serve.md).
#include <pthread.h>
#include <signal.h>

#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "command.h"
#include "eval/runner.h"
#include "fluxattn/config.h"
#include "fluxattn/engine.h"
#include "fluxattn/models/decoder_model.h"
#include "fluxattn/models/model_config.h"
#include "fluxattn/models/tokenizer.h"
#include "fluxattn/plugin_registry.h"
#include "fluxattn/status.h"
#include "serve/chat_template.h"
#include "serve/http_server.h"
#include "serve/metrics.h"
#include "serve/scheduler.h"
#include "serve/server_options.h"

namespace fluxattn::cli {
namespace {

// The prompt tokens one step of the server runs when the configuration does not say.
constexpr int64_t kServePrefillChunkTokens = 256;

struct ServeArgs {
  std::string model;
  std::string config;
  std::string host;
  int port = -1;
  std::string api_key;
  std::string model_name;
  int threads = -1;
  std::string device;          // empty: the config's [model] device
  int kv_page_tokens = 0;      // 0: [kv] page_tokens of the config
  int64_t prefill_chunk = -1;  // -1: [scheduler] prefill_chunk_tokens, else 256
  std::vector<std::string> plugin_paths;
};

int RunServe(const ServeArgs& args) {
  auto fail = [](const absl::Status& st) {
    PrintError(std::string(st.message()));
    return kExitFailure;
  };
  if (args.model.empty() && args.config.empty()) {
    PrintError("serve: give --model DIR or --config FILE");
    return kExitUsage;
  }
  serve::ServerOptions options;
  EngineConfig config;
  std::string model_dir = args.model;
  if (!args.config.empty()) {
    auto loaded = LoadEngineConfig(args.config);
    if (!loaded.ok()) return fail(loaded.status());
    config = std::move(*loaded);
    absl::Status server = serve::LoadServerTable(args.config, options);
    if (!server.ok()) return fail(server);
    auto resolved = eval::ResolveModelDir(args.config, config, model_dir);
    if (!resolved.ok()) return fail(resolved.status());
    model_dir = *resolved;
  }
  if (!args.host.empty()) options.host = args.host;
  if (args.port >= 0) options.port = args.port;
  if (!args.api_key.empty()) options.api_key = args.api_key;
  if (!args.model_name.empty()) options.model_name = args.model_name;
  if (options.model_name.empty()) {
    options.model_name = std::filesystem::path(model_dir).lexically_normal().filename().string();
    if (options.model_name.empty()) {
      options.model_name =
          std::filesystem::path(model_dir).lexically_normal().parent_path().filename().string();
    }
  }

  auto spec = models::LoadModelConfig(model_dir);
  if (!spec.ok()) return fail(spec.status());
  if (args.config.empty()) config = DefaultEngineConfig(spec->info);
  auto load = models::ModelLoadOptionsFromConfig(config, args.config, args.device, args.threads);
  if (!load.ok()) return fail(load.status());
  auto tokenizer = models::Tokenizer::FromModelDir(model_dir);
  if (!tokenizer.ok()) return fail(tokenizer.status());
  auto chat = serve::ChatFormat::FromModelDir(model_dir);
  if (!chat.ok()) return fail(chat.status());

  auto model = models::LoadLanguageModel(model_dir, *load);
  if (!model.ok()) return fail(model.status());
  EngineOptions engine_options;
  eval::EngineSetup setup;
  setup.plugin_paths = args.plugin_paths;
  setup.adjust_options = [&](EngineOptions& o) {
    if (args.kv_page_tokens > 0) o.kv_page_tokens = args.kv_page_tokens;
    // A server runs prompts in chunks unless told otherwise, so that a long prompt never stalls
    // the running decodes for longer than one chunk.
    if (args.prefill_chunk >= 0) {
      o.prefill_chunk_tokens = args.prefill_chunk;
    } else if (!config.locations.count("scheduler.prefill_chunk_tokens")) {
      o.prefill_chunk_tokens = kServePrefillChunkTokens;
    }
    engine_options = o;
  };
  auto engine = eval::CreateEngine(config, std::move(*model), setup);
  if (!engine.ok()) return fail(engine.status());

  serve::Metrics metrics;
  serve::Scheduler scheduler(**engine,
                             {.max_running = options.max_running_requests,
                              .max_queued = options.max_queued_requests,
                              .kv_page_tokens = engine_options.kv_page_tokens},
                             metrics);
  serve::ServeContext ctx;
  ctx.options = options;
  ctx.model_name = options.model_name;
  ctx.context_length = static_cast<int64_t>(
      (*engine)->model().info().ConfigNumber("max_position_embeddings").value_or(32768));
  ctx.vocab_size = (*engine)->model().info().vocab_size;
  ctx.tokenizer = tokenizer->get();
  ctx.chat = *chat;
  for (const std::string& text : chat->end_of_turn()) {
    if (auto id = (*tokenizer)->TokenToId(text)) ctx.chat_stop_ids.push_back(*id);
  }
  for (const std::string& name : (*engine)->routing_policies()) {
    if (!name.empty()) ctx.routing_policies.push_back(name);
  }
  ctx.scheduler = &scheduler;
  ctx.metrics = &metrics;

  // SIGINT and SIGTERM stop the server from a thread of their own (blocked everywhere else).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  serve::HttpServer server(ctx);
  auto port = server.Bind();
  if (!port.ok()) return fail(port.status());
  scheduler.Start();
  std::cout << "fluxattn serve: listening on http://" << options.host << ":" << *port << " (model '"
            << ctx.model_name << "', routing policies: default"
            << (ctx.routing_policies.empty() ? "" : ", ")
            << absl::StrJoin(ctx.routing_policies, ", ") << "; chat format " << ctx.chat.name()
            << "; KV pool " << (*engine)->kv_pages_total() << " pages; prefill chunk "
            << (engine_options.prefill_chunk_tokens > 0
                    ? absl::StrCat(engine_options.prefill_chunk_tokens, " tokens")
                    : std::string("whole prompts"))
            << ")" << std::endl;
  std::thread stopper([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    std::cout << "fluxattn serve: stopping (signal " << sig << ")" << std::endl;
    server.Stop();
  });
  absl::Status served = server.Serve();
  if (stopper.joinable()) {
    // Serve() only returns after Stop(), so the stopper has run or is about to.
    stopper.join();
  }
  scheduler.Stop();
  if (!served.ok()) return fail(served);
  return kExitOk;
}

std::function<int()> SetupServe(CLI::App& app) {
  auto args = std::make_shared<ServeArgs>();
  app.description(
      "Serve a checkpoint over HTTP with the OpenAI API (completions, chat, streaming), "
      "continuous batching and a routing policy per request");
  app.add_option("--model", args->model, "Hugging Face checkpoint folder");
  app.add_option("--config", args->config,
                 "TOML engine configuration ([routers.<name>] policies, [server] limits)");
  app.add_option("--host", args->host, "Address to bind (default 127.0.0.1)");
  app.add_option("--port", args->port, "Port (default 8000; 0 = any free port)")
      ->check(CLI::Range(0, 65535));
  app.add_option("--api-key", args->api_key, "Require `Authorization: Bearer KEY`");
  app.add_option("--model-name", args->model_name,
                 "Model id clients name (default: the checkpoint folder name)");
  app.add_option(
      "--device", args->device,
      "Where the model runs: cpu, cuda or cuda:N (default: the config's [model] device)");
  app.add_option("--threads", args->threads, "Worker threads of the model (0 = all cores)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--kv-page-tokens", args->kv_page_tokens,
                 "Tokens per KV page (default: [kv] page_tokens, 64)")
      ->check(CLI::Range(1, 65536));
  app.add_option("--prefill-chunk", args->prefill_chunk,
                 "Most prompt tokens per engine step (0: whole prompts; default: [scheduler] "
                 "prefill_chunk_tokens, else 256)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 24));
  app.add_option("--plugin-path", args->plugin_paths, "Extra plugin directories");
  return [args] { return RunServe(*args); };
}

}  // namespace

FLUXATTN_REGISTER_COMMAND(serve, SetupServe);

}  // namespace fluxattn::cli
