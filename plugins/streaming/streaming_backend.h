// `streaming`: attention sinks plus a local window at block granularity (StreamingRule), the
// same rule in prefill and decode. After prefill only the sinks and the window of the next query
// are kept.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "fluxattn/attention/sink_window.h"
#include "fluxattn/attention_backend.h"
#include "fluxattn/params.h"

namespace fluxattn::plugins {

class StreamingBackend : public AttentionBackend {
 public:
  static std::vector<ParamSpec> Params();
  static absl::StatusOr<std::unique_ptr<StreamingBackend>> Create(const ParamValues& params);
  explicit StreamingBackend(const StreamingRule& rule) : rule_(rule) {}

  AttentionCapabilities capabilities() const override;
  KvRetention RetainedKv(int64_t next_query_pos) const override;
  absl::Status BuildLayout(const AttentionProblem& problem, BlockSparseLayout* layout) override;

  const StreamingRule& rule() const { return rule_; }

 private:
  StreamingRule rule_;
};

}  // namespace fluxattn::plugins
