// `triangle`: streaming (sinks + local window) for every prompt query except the last `last_n`,
// which attend densely. The dense tail lets the prompt's final tokens see the whole context at a
// cost linear in its length. Decode is dense; the sink + window decode of the Flux Attention
// triangle checkpoints is a `streaming` instance serving this one's decode (`decode_with`).
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "fluxattn/attention/sink_window.h"
#include "fluxattn/attention_backend.h"
#include "fluxattn/params.h"

namespace fluxattn::plugins {

class TriangleBackend : public AttentionBackend {
 public:
  static std::vector<ParamSpec> Params();
  static absl::StatusOr<std::unique_ptr<TriangleBackend>> Create(const ParamValues& params);
  TriangleBackend(const StreamingRule& rule, int64_t last_n) : rule_(rule), last_n_(last_n) {}

  AttentionCapabilities capabilities() const override;
  // Nothing is released: a later prefill call's dense tail may read any position.
  absl::Status BuildLayout(const AttentionProblem& problem, BlockSparseLayout* layout) override;

 private:
  StreamingRule rule_;
  int64_t last_n_;
};

}  // namespace fluxattn::plugins
