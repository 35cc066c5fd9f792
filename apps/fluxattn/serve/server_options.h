// Limits and listening address of `fluxattn serve`: defaults, then the [server] table of the TOML
// configuration, then the command line.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace fluxattn::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                // 0: any free port (printed at start)
  std::string api_key;            // non-empty: `Authorization: Bearer <key>` is required
  std::string model_name;         // the id of /v1/models; default: the checkpoint folder name
  int max_running_requests = 64;  // requests in the running batch at most
  int max_queued_requests = 256;  // requests waiting for the batch; beyond: 503
  int max_prompt_tokens = 0;      // 0: the model's context length
  int default_max_tokens = 256;   // chat requests without max_tokens (completions: 16)
  double request_timeout_seconds = 600;  // a request running longer is cancelled (504)
  int64_t max_body_bytes = 1 << 20;      // larger bodies: 413
  double read_timeout_seconds = 10;      // a client sending its request slower is dropped
  int http_threads = 128;                // connections served at once
};

// Reads the [server] table of the TOML file `path` (when present) into `options`. Unknown keys,
// wrong types and out-of-range values are errors naming the file, line and key.
absl::Status LoadServerTable(const std::string& path, ServerOptions& options);

}  // namespace fluxattn::serve
