#include "serve/http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <iostream>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "serve/protocol.h"
#include "serve/text_stream.h"

namespace fluxattn::serve {
namespace {

using nlohmann::json;

// The message of the error this thread answered last, for the log line written after it.
thread_local std::string last_error_message;

void SendError(httplib::Response& res, const ApiError& error) {
  last_error_message = error.message;
  res.status = error.status;
  res.set_content(Dump(ErrorJson(error)), "application/json");
}

ApiError FromStatus(const absl::Status& status) {
  ApiError e;
  e.message = std::string(status.message());
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      e.status = 400;
      break;
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kUnavailable:
      e.status = 503;
      e.type = "server_error";
      e.code = "overloaded";
      break;
    case absl::StatusCode::kDeadlineExceeded:
      e.status = 504;
      e.type = "timeout";
      break;
    default:
      e.status = 500;
      e.type = "server_error";
  }
  return e;
}

int64_t UnixNow() { return static_cast<int64_t>(std::time(nullptr)); }

// One request from submission to its last token, read by the handler thread.
struct Generation {
  enum class Outcome { kMore, kDone, kError };

  Generation(const ServeContext& ctx, Endpoint endpoint, std::shared_ptr<RequestChannel> channel,
             std::vector<std::string> stop, int64_t prompt_tokens)
      : ctx(ctx),
        endpoint(endpoint),
        channel(std::move(channel)),
        text(*ctx.tokenizer, std::move(stop)),
        deadline(Clock::now() +
                 std::chrono::duration_cast<Clock::duration>(
                     std::chrono::duration<double>(ctx.options.request_timeout_seconds))) {
    usage.prompt_tokens = prompt_tokens;
    const std::string& r = this->channel->spec().routing;
    routing.routing = r.empty() ? ctx.default_routing_name : r;
  }

  // Waits for the next tokens; appends their text to `delta`.
  Outcome Next(std::string& delta, ApiError& error) {
    RequestUpdate u;
    if (!channel->Wait(deadline, u)) {
      End("timeout");
      error =
          ApiError{504,
                   absl::StrCat("the request ran longer than ", ctx.options.request_timeout_seconds,
                                " s ([server] request_timeout_seconds)"),
                   "timeout", "", "timeout"};
      return Outcome::kError;
    }
    for (const StepToken& t : u.tokens) {
      ++usage.completion_tokens;
      if (channel->spec().options.logprobs >= 0) AddLogprobs(t);
      delta += text.Push(t.token);
      if (text.stopped()) {
        finish_reason = "stop";
        End("stop");
        return Outcome::kDone;
      }
    }
    if (u.failed) {
      error = FromStatus(*u.failed);
      End("error", /*cancel=*/false);
      return Outcome::kError;
    }
    if (u.finished) {
      delta += text.Finish();
      finish_reason = u.finished->finish_reason;
      const RequestTrace& trace = u.finished->trace;
      routing.request_id = u.finished->request_id;
      routing.routing = trace.routing;
      routing.sa_ratio = trace.sa_ratio;
      for (const LayerRouting& L : trace.layers)
        routing.layer_backends.push_back({L.layer, L.backend});
      End(finish_reason, /*cancel=*/false);
      return Outcome::kDone;
    }
    return Outcome::kMore;
  }

  // The entries of `t`: token texts are the bytes each id decodes to.
  void AddLogprobs(const StepToken& t) {
    auto bytes = [&](int64_t id) {
      absl::StatusOr<std::string> b = ctx.tokenizer->IdToBytes(static_cast<int32_t>(id));
      return b.ok() ? *b : std::string();
    };
    LogprobEntry e;
    e.text = bytes(t.token);
    e.logprob = t.logprob;
    for (const TokenLogprob& alt : t.top_logprobs) e.top.push_back({bytes(alt.token), alt.logprob});
    logprobs.push_back(std::move(e));
  }

  // The logprobs object of the entries not sent yet (null when the request asked for none).
  json TakeLogprobs() {
    if (channel->spec().options.logprobs < 0) return nullptr;
    const std::span<const LogprobEntry> fresh(logprobs.data() + logprobs_sent,
                                              logprobs.size() - logprobs_sent);
    json j = LogprobsJson(endpoint, fresh, text_offset);
    for (const LogprobEntry& e : fresh) text_offset += static_cast<int64_t>(e.text.size());
    logprobs_sent = logprobs.size();
    return j;
  }

  // The client went away: the request is dropped.
  void Disconnected() { End("disconnected"); }

  void End(const std::string& reason, bool cancel = true) {
    if (ended) return;
    ended = true;
    if (cancel) ctx.scheduler->Cancel(channel);
    ctx.metrics->CountFinish(reason);
    ctx.metrics->CountTokens(usage.prompt_tokens, usage.completion_tokens);
  }

  ~Generation() { End("disconnected"); }

  const ServeContext& ctx;
  Endpoint endpoint;
  std::shared_ptr<RequestChannel> channel;
  TextStream text;
  std::vector<LogprobEntry> logprobs;  // one per token received
  size_t logprobs_sent = 0;
  int64_t text_offset = 0;  // of the next entry, in bytes of the completion
  Clock::time_point deadline;
  Usage usage;
  std::string finish_reason;
  RoutingReport routing;
  bool ended = false;
};

std::string SseEvent(const json& j) { return absl::StrCat("data: ", Dump(j), "\n\n"); }

}  // namespace

struct HttpServer::Handlers {
  explicit Handlers(const ServeContext& ctx) : ctx(ctx), seeds(std::random_device{}()) {}

  uint64_t RandomSeed() {
    std::lock_guard<std::mutex> lock(seed_mu);
    return seeds();
  }

  std::string NextId(Endpoint endpoint) {
    return absl::StrCat(endpoint == Endpoint::kChat ? "chatcmpl-" : "cmpl-", next_id.fetch_add(1));
  }

  void Completion(const httplib::Request& req, httplib::Response& res, Endpoint endpoint) {
    json body;
    try {
      body = json::parse(req.body);
    } catch (const json::exception& e) {
      return SendError(res, {400, absl::StrCat("the body is not valid JSON: ", e.what()),
                             "invalid_request_error", "", ""});
    }
    CompletionRequest r;
    if (auto e = ParseCompletionRequest(body, endpoint, r)) return SendError(res, *e);
    if (r.model != ctx.model_name) {
      return SendError(res, {404,
                             absl::StrCat("The model '", r.model, "' does not exist; this server ",
                                          "serves '", ctx.model_name, "'"),
                             "invalid_request_error", "model", "model_not_found"});
    }
    if (!r.routing.empty() && std::find(ctx.routing_policies.begin(), ctx.routing_policies.end(),
                                        r.routing) == ctx.routing_policies.end()) {
      return SendError(
          res,
          {400,
           absl::StrCat("'routing': expected the name of a [routers.<name>] policy (",
                        ctx.routing_policies.empty() ? "none defined"
                                                     : absl::StrJoin(ctx.routing_policies, ", "),
                        ") or null for the default, found '", r.routing, "'"),
           "invalid_request_error", "routing", ""});
    }
    // The prompt's token ids.
    std::vector<int64_t> prompt;
    if (r.prompt_ids) {
      prompt = *r.prompt_ids;
      for (int64_t id : prompt) {
        if (id < 0 || id >= ctx.vocab_size) {
          return SendError(res, {400,
                                 absl::StrCat("'prompt': expected token ids in [0, ",
                                              ctx.vocab_size, "), found ", id),
                                 "invalid_request_error", "prompt", ""});
        }
      }
    } else {
      const bool chat = endpoint == Endpoint::kChat;
      std::string text;
      if (chat) {
        auto rendered = ctx.chat.Render(r.messages, r.chat_template_kwargs);
        if (!rendered.ok()) {
          return SendError(res, {400, std::string(rendered.status().message()),
                                 "invalid_request_error", "messages", ""});
        }
        text = std::move(*rendered);
      } else {
        text = *r.prompt_text;
      }
      auto ids = ctx.tokenizer->Encode(text, /*add_special_tokens=*/!chat);
      if (!ids.ok()) {
        return SendError(res, {400, std::string(ids.status().message()), "invalid_request_error",
                               chat ? "messages" : "prompt", ""});
      }
      prompt.assign(ids->begin(), ids->end());
    }
    const int64_t n = static_cast<int64_t>(prompt.size());
    if (n == 0) {
      return SendError(res, {400, "'prompt': expected at least one token, found an empty prompt",
                             "invalid_request_error", "prompt", ""});
    }
    const int64_t max_prompt =
        ctx.options.max_prompt_tokens > 0
            ? std::min<int64_t>(ctx.options.max_prompt_tokens, ctx.context_length)
            : ctx.context_length;
    if (n > max_prompt) {
      return SendError(
          res,
          {400,
           absl::StrCat("the prompt has ", n, " tokens; at most ", max_prompt, " are accepted"),
           "invalid_request_error", endpoint == Endpoint::kChat ? "messages" : "prompt",
           "context_length_exceeded"});
    }
    int64_t max_tokens;
    if (r.max_tokens) {
      max_tokens = *r.max_tokens;
      if (n + max_tokens > ctx.context_length) {
        return SendError(
            res, {400,
                  absl::StrCat("this model's context is ", ctx.context_length,
                               " tokens; the prompt has ", n, " and max_tokens is ", max_tokens),
                  "invalid_request_error", "max_tokens", "context_length_exceeded"});
      }
    } else {
      max_tokens =
          std::min<int64_t>(endpoint == Endpoint::kChat ? ctx.options.default_max_tokens : 16,
                            ctx.context_length - n);
    }
    RequestSpec spec;
    spec.prompt = std::move(prompt);
    spec.options.max_new_tokens = static_cast<int>(max_tokens);
    spec.options.ignore_eos = r.ignore_eos;
    spec.options.sampling.temperature = r.temperature;
    spec.options.sampling.top_k = r.top_k;
    spec.options.sampling.top_p = r.top_p;
    spec.options.sampling.seed = r.seed ? static_cast<uint64_t>(*r.seed) : RandomSeed();
    spec.options.logprobs = r.logprobs;
    if (endpoint == Endpoint::kChat) spec.options.stop_tokens = ctx.chat_stop_ids;
    spec.routing = r.routing;
    spec.wait_for_kv = true;
    auto channel = ctx.scheduler->Submit(std::move(spec));
    if (!channel.ok()) return SendError(res, FromStatus(channel.status()));
    auto gen = std::make_shared<Generation>(ctx, endpoint, std::move(*channel), r.stop, n);
    const std::string id = NextId(endpoint);
    const int64_t created = UnixNow();
    if (!r.stream) {
      std::string text;
      ApiError error;
      Generation::Outcome o;
      while ((o = gen->Next(text, error)) == Generation::Outcome::kMore) {
      }
      if (o == Generation::Outcome::kError) return SendError(res, error);
      res.set_content(
          Dump(CompletionResponse(endpoint, id, created, ctx.model_name, text, gen->finish_reason,
                                  gen->usage, gen->routing, gen->TakeLogprobs())),
          "application/json");
      return;
    }
    res.set_header("Cache-Control", "no-cache");
    const bool include_usage = r.include_usage;
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, gen, id, created, endpoint, include_usage](size_t, httplib::DataSink& sink) {
          auto send = [&](const std::string& event) {
            if (sink.write(event.data(), event.size())) return true;
            gen->Disconnected();
            return false;
          };
          if (endpoint == Endpoint::kChat &&
              !send(SseEvent(StreamChunk(endpoint, id, created, ctx.model_name, "", "", true)))) {
            return false;
          }
          while (true) {
            std::string delta;
            ApiError error;
            const Generation::Outcome o = gen->Next(delta, error);
            // Tokens whose text is held back (a possible stop string) send their log
            // probabilities with the text.
            if (!delta.empty() &&
                !send(SseEvent(StreamChunk(endpoint, id, created, ctx.model_name, delta, "", false,
                                           gen->TakeLogprobs())))) {
              return false;
            }
            if (o == Generation::Outcome::kMore) continue;
            if (o == Generation::Outcome::kError) {
              Log(absl::StrCat("stream ", id, " -> ", error.status, ": ", error.message));
              if (!send(SseEvent(ErrorJson(error)))) return false;
            } else {
              json last = StreamChunk(endpoint, id, created, ctx.model_name, "", gen->finish_reason,
                                      false, gen->TakeLogprobs());
              last["fluxattn"] = RoutingJson(gen->routing);
              if (!send(SseEvent(last))) return false;
              if (include_usage &&
                  !send(SseEvent(UsageChunk(endpoint, id, created, ctx.model_name, gen->usage)))) {
                return false;
              }
            }
            if (!send("data: [DONE]\n\n")) return false;
            sink.done();
            return true;
          }
        },
        [gen](bool success) {
          if (!success) gen->Disconnected();
        });
  }

  void Models(httplib::Response& res) {
    json model = {{"id", ctx.model_name},
                  {"object", "model"},
                  {"created", started},
                  {"owned_by", "fluxattn"},
                  {"context_length", ctx.context_length},
                  {"routing_policies", ctx.routing_policies},
                  {"chat_format", ctx.chat.name()}};
    res.set_content(Dump({{"object", "list"}, {"data", json::array({model})}}), "application/json");
  }

  // One line on stderr; control and non-ASCII bytes (echoed from bad requests) are escaped.
  static void Log(const std::string& line) {
    std::string clean;
    for (unsigned char c : line) {
      if (c >= 0x20 && c < 0x7f) {
        clean += static_cast<char>(c);
      } else {
        absl::StrAppend(&clean, "\\x", absl::Hex(c, absl::kZeroPad2));
      }
    }
    static std::mutex mu;
    std::lock_guard<std::mutex> lock(mu);
    std::cerr << "fluxattn serve: " << clean << std::endl;
  }

  const ServeContext& ctx;
  std::mutex seed_mu;
  std::mt19937_64 seeds;
  std::atomic<uint64_t> next_id{1};
  int64_t started = UnixNow();
};

HttpServer::HttpServer(ServeContext context)
    : ctx_(std::move(context)),
      server_(std::make_unique<httplib::Server>()),
      handlers_(std::make_unique<Handlers>(ctx_)) {
  httplib::Server& s = *server_;
  Handlers* h = handlers_.get();
  const int threads = ctx_.options.http_threads;
  s.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // Streamed tokens are small writes: without TCP_NODELAY, Nagle's algorithm holds one back
  // until the client acknowledges the last (up to its 40 ms delayed-ACK timer).
  s.set_tcp_nodelay(true);
  s.set_payload_max_length(static_cast<size_t>(ctx_.options.max_body_bytes));
  s.set_read_timeout(std::chrono::duration<double>(ctx_.options.read_timeout_seconds));
  // httplib closes a connection that sends nothing for its keep-alive timeout (5 s by default),
  // the first request included: a client that connects at once and sends when its event loop
  // gets to it (dozens of streams in one process) would see its connection dropped before the
  // read timeout it was promised.
  s.set_keep_alive_timeout(
      static_cast<time_t>(std::ceil(std::max(1.0, ctx_.options.read_timeout_seconds))));
  // Remember the listening socket (the library's own options, plus this), so that Bind() can
  // raise its backlog.
  s.set_socket_options([this](socket_t sock) {
    httplib::default_socket_options(sock);
    listen_fd_ = sock;
  });
  const std::string key = ctx_.options.api_key;
  s.set_pre_routing_handler([key](const httplib::Request& req, httplib::Response& res) {
    if (key.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    if (req.get_header_value("Authorization") == "Bearer " + key) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    SendError(res, {401, "Incorrect API key provided (Authorization: Bearer <key>)",
                    "invalid_request_error", "", "invalid_api_key"});
    return httplib::Server::HandlerResponse::Handled;
  });
  s.Post("/v1/completions", [h](const httplib::Request& req, httplib::Response& res) {
    h->Completion(req, res, Endpoint::kCompletions);
  });
  s.Post("/v1/chat/completions", [h](const httplib::Request& req, httplib::Response& res) {
    h->Completion(req, res, Endpoint::kChat);
  });
  s.Get("/v1/models", [h](const httplib::Request&, httplib::Response& res) { h->Models(res); });
  s.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("{\"status\":\"ok\"}", "application/json");
  });
  Metrics* metrics = ctx_.metrics;
  s.Get("/metrics", [metrics](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics->Render(), "text/plain; version=0.0.4");
  });
  // Errors httplib answers itself (no route, body too large, bad request line) get the
  // OpenAI shape too.
  s.set_error_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        ApiError e;
        e.status = res.status;
        if (res.status == 404) {
          e.message = absl::StrCat("unknown path: ", req.method, " ", req.path);
          e.code = "not_found";
        } else if (res.status == 413) {
          e.message = "the request body is larger than [server] max_body_bytes";
          e.code = "payload_too_large";
        } else {
          e.message = absl::StrCat("HTTP ", res.status, " for ", req.method, " ", req.path);
        }
        SendError(res, e);
        return httplib::Server::HandlerResponse::Handled;
      }));
  s.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        SendError(res, {500, absl::StrCat("internal error: ", what), "server_error", "", ""});
      });
  s.set_logger([metrics](const httplib::Request& req, const httplib::Response& res) {
    static const char* kPaths[] = {"/v1/completions", "/v1/chat/completions", "/v1/models",
                                   "/health", "/metrics"};
    std::string path = "other";
    for (const char* p : kPaths) {
      if (req.path == p) path = p;
    }
    metrics->CountRequest(path, res.status);
    if (res.status >= 400) {
      Handlers::Log(
          absl::StrCat(req.method, " ", path, " -> ", res.status, ": ", last_error_message));
    }
    last_error_message.clear();
  });
}

HttpServer::~HttpServer() = default;

absl::StatusOr<int> HttpServer::Bind() {
  int port = ctx_.options.port;
  if (port == 0) {
    port = server_->bind_to_any_port(ctx_.options.host);
    if (port < 0) {
      return absl::UnavailableError(absl::StrCat("cannot bind to ", ctx_.options.host));
    }
  } else if (!server_->bind_to_port(ctx_.options.host, port)) {
    return absl::UnavailableError(absl::StrCat("cannot bind to ", ctx_.options.host, ":", port,
                                               " (in use, or not an address of this machine)"));
  }
  // The library listens with a backlog of 5 (fixed when it was compiled): dozens of clients
  // connecting at once overflow it and some connections are dropped. Listening again on the
  // bound socket sets a larger one (the kernel caps it at net.core.somaxconn).
  constexpr int kListenBacklog = 1024;
  if (listen_fd_ >= 0 && ::listen(listen_fd_, kListenBacklog) != 0) {
    return absl::UnavailableError(absl::StrCat("listen(backlog ", kListenBacklog, ") on ",
                                               ctx_.options.host, ":", port, ": ",
                                               std::strerror(errno)));
  }
  return port;
}

absl::Status HttpServer::Serve() {
  if (!server_->listen_after_bind()) return absl::InternalError("the HTTP server stopped");
  return absl::OkStatus();
}

void HttpServer::Stop() { server_->stop(); }

}  // namespace fluxattn::serve
