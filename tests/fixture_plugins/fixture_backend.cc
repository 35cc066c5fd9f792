// A minimal valid attention backend: dense causal attention through the default Forward, with
// one parameter of every type so the config validation can be exercised end to end.
#include <memory>
#include <vector>

#include "fluxattn/attention_backend.h"
#include "fluxattn/plugin_abi.h"

namespace fluxattn::fixtures {
namespace {

class FixtureBackend final : public AttentionBackend {
 public:
  static std::vector<ParamSpec> Params() {
    std::vector<ParamSpec> specs;
    specs.push_back({"block_size",
                     ParamType::kInt,
                     "KV block size in tokens",
                     ParamValue(int64_t{64}),
                     1.0,
                     4096.0,
                     {}});
    specs.push_back(
        {"temperature", ParamType::kFloat, "a float in [0, 10]", ParamValue(1.0), 0.0, 10.0, {}});
    specs.push_back({"mode",
                     ParamType::kString,
                     "one of a fixed set",
                     ParamValue(std::string("dense")),
                     std::nullopt,
                     std::nullopt,
                     {"dense", "banded"}});
    specs.push_back(
        {"verbose", ParamType::kBool, "a flag", ParamValue(false), std::nullopt, std::nullopt, {}});
    specs.push_back({"layers",
                     ParamType::kIntList,
                     "layer indices",
                     ParamValue(std::vector<int64_t>{}),
                     0.0,
                     1000.0,
                     {}});
    specs.push_back({"tags",
                     ParamType::kStringList,
                     "free-form labels",
                     ParamValue(std::vector<std::string>{}),
                     std::nullopt,
                     std::nullopt,
                     {}});
    return specs;
  }

  static absl::StatusOr<std::unique_ptr<FixtureBackend>> Create(const ParamValues& params) {
    return std::make_unique<FixtureBackend>(static_cast<int>(params.GetInt("block_size")));
  }

  explicit FixtureBackend(int block_size) : block_size_(block_size) {}

  AttentionCapabilities capabilities() const override {
    AttentionCapabilities caps;
    caps.head_dims = {64, 128};
    return caps;
  }

  // Every query block reads every KV block up to its last query; the kernel applies causality.
  absl::Status BuildLayout(const AttentionProblem& problem, BlockSparseLayout* layout) override {
    layout->q_block_tokens = block_size_;
    layout->kv_block_tokens = block_size_;
    layout->q_pos0 = problem.q_pos0;
    layout->num_queries = problem.num_queries;
    layout->kv_length = problem.kv.length;
    layout->num_layout_heads = 1;
    layout->row_begin.assign(1, 0);
    for (int64_t qb = 0; qb < layout->num_q_blocks(); ++qb) {
      int64_t last_row = std::min<int64_t>((qb + 1) * block_size_, problem.num_queries) - 1;
      int64_t last_block = (problem.q_pos0 + last_row) / block_size_;
      for (int64_t b = 0; b <= last_block; ++b) {
        layout->kv_block.push_back(static_cast<int32_t>(b));
        layout->mask_index.push_back(-1);
      }
      layout->row_begin.push_back(static_cast<int64_t>(layout->kv_block.size()));
    }
    return absl::OkStatus();
  }

 private:
  int block_size_;
};

}  // namespace
}  // namespace fluxattn::fixtures

FLUXATTN_DEFINE_ATTENTION_PLUGIN(fluxattn::fixtures::FixtureBackend, "fixture_backend", "0.3.1",
                                 "test fixture: dense causal layout")
