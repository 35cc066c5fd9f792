// The HTTP side of `fluxattn serve` (cpp-httplib): routes of the OpenAI API, /health and
// /metrics, API-key check, errors in the OpenAI shape, and server-sent-event streaming.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "fluxattn/models/tokenizer.h"
#include "serve/chat_template.h"
#include "serve/metrics.h"
#include "serve/scheduler.h"
#include "serve/server_options.h"

namespace httplib {
class Server;
}

namespace fluxattn::serve {

struct ServeContext {
  ServerOptions options;
  std::string model_name;
  int64_t context_length = 0;
  int64_t vocab_size = 0;
  const models::Tokenizer* tokenizer = nullptr;
  ChatFormat chat = ChatFormat::ChatMl();
  std::vector<int64_t> chat_stop_ids;         // end-of-turn tokens of the chat format
  std::vector<std::string> routing_policies;  // named [routers.<name>] (the default is "")
  std::string default_routing_name = "router";
  Scheduler* scheduler = nullptr;
  Metrics* metrics = nullptr;
};

class HttpServer {
 public:
  explicit HttpServer(ServeContext context);
  ~HttpServer();

  // Binds (port 0: any free port); returns the port.
  absl::StatusOr<int> Bind();
  // Serves until Stop().
  absl::Status Serve();
  void Stop();

 private:
  struct Handlers;
  ServeContext ctx_;
  std::unique_ptr<httplib::Server> server_;
  std::unique_ptr<Handlers> handlers_;
  int listen_fd_ = -1;  // the listening socket, once created
};

}  // namespace fluxattn::serve
