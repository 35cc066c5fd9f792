// A backend whose creation always fails, so the error path through the ABI can be tested.
#include <memory>
#include <vector>

#include "fluxattn/attention_backend.h"
#include "fluxattn/plugin_abi.h"

namespace fluxattn::fixtures {
namespace {

class FailingBackend final : public AttentionBackend {
 public:
  static std::vector<ParamSpec> Params() { return {}; }
  static absl::StatusOr<std::unique_ptr<FailingBackend>> Create(const ParamValues&) {
    return absl::FailedPreconditionError("fixture refuses to be created");
  }
  AttentionCapabilities capabilities() const override { return {}; }
  absl::Status BuildLayout(const AttentionProblem&, BlockSparseLayout*) override {
    return absl::OkStatus();
  }
};

}  // namespace
}  // namespace fluxattn::fixtures

FLUXATTN_DEFINE_ATTENTION_PLUGIN(fluxattn::fixtures::FailingBackend, "fixture_create_fails",
                                 "1.0.0", "test fixture: create always fails")
