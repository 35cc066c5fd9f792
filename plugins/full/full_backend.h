// `full`: exact causal attention, the dense causal layout run by the core kernel.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "fluxattn/attention_backend.h"
#include "fluxattn/params.h"

namespace fluxattn::plugins {

class FullBackend : public AttentionBackend {
 public:
  static std::vector<ParamSpec> Params();
  static absl::StatusOr<std::unique_ptr<FullBackend>> Create(const ParamValues& params);

  AttentionCapabilities capabilities() const override;
  absl::Status BuildLayout(const AttentionProblem& problem, BlockSparseLayout* layout) override;
};

}  // namespace fluxattn::plugins
