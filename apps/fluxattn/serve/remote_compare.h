// `fluxattn compare --server URL`: the eval suite's generation tasks sent to a running
// OpenAI-compatible server (fluxattn serve) once per routing policy, the policies' requests
// interleaved so that they share the server's batches: accuracy, latency and SA ratio per policy
// on live traffic.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "eval/tasks.h"
#include "fluxattn/models/tokenizer.h"
#include "nlohmann/json.hpp"

namespace fluxattn::serve {

struct RemoteCompareOptions {
  std::string url;      // http://HOST:PORT
  std::string api_key;  // sent as `Authorization: Bearer` when set
  // Routing policies by name; "default" is the server's [router] (no `routing` field sent).
  std::vector<std::string> policies;
  std::vector<eval::TaskKind> tasks;  // lm_ppl is skipped (it needs prompt log-likelihoods)
  std::vector<int64_t> lengths;
  int samples = 3;
  uint64_t seed = 0;
  int concurrency = 8;     // requests in flight at once
  double timeout_s = 600;  // per request
};

// Runs the comparison; prints a table to `table` and returns the report (per policy: accuracy
// per task and length, latency percentiles, SA ratio; every sample's output and score).
absl::StatusOr<nlohmann::ordered_json> RunRemoteCompare(const RemoteCompareOptions& options,
                                                        const models::Tokenizer& tokenizer,
                                                        std::ostream& table);

}  // namespace fluxattn::serve
