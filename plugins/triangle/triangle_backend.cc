#include "triangle_backend.h"

#include "absl/strings/str_cat.h"
#include "fluxattn/attention/layout_builder.h"
#include "fluxattn/attention/param_reader.h"

namespace fluxattn::plugins {

std::vector<ParamSpec> TriangleBackend::Params() {
  std::vector<ParamSpec> specs = StreamingParamSpecs("");
  specs.push_back(IntParamSpec(
      "last_n", 128, 0, 1e9,
      "The last last_n queries of the prompt (of the prefill call) attend densely; the others "
      "use the sink + window rule."));
  return specs;
}

absl::StatusOr<std::unique_ptr<TriangleBackend>> TriangleBackend::Create(
    const ParamValues& params) {
  absl::StatusOr<StreamingRule> rule = StreamingRuleFromParams(params, "");
  if (!rule.ok()) return rule.status();
  absl::StatusOr<int64_t> last_n = ReadParam<int64_t>(params, "last_n");
  if (!last_n.ok()) return last_n.status();
  if (*last_n < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("last_n: expected an integer >= 0, found ", *last_n));
  }
  return std::make_unique<TriangleBackend>(*rule, *last_n);
}

AttentionCapabilities TriangleBackend::capabilities() const { return ShapeLayoutCapabilities(); }

absl::Status TriangleBackend::BuildLayout(const AttentionProblem& problem,
                                          BlockSparseLayout* layout) {
  if (problem.phase == AttentionPhase::kDecode) {
    *layout = DenseCausalLayout(problem.q_pos0, problem.num_queries, problem.kv.length);
    return absl::OkStatus();
  }
  const int64_t dense_from = problem.q_pos0 + problem.num_queries - last_n_;
  const StreamingRule rule = rule_;
  *layout = BuildSinkWindowLayout(
      problem.q_pos0, problem.num_queries, problem.kv.length, rule.sink_end(),
      [rule, dense_from](int64_t p) { return p >= dense_from ? 0 : rule.window_start(p); });
  return absl::OkStatus();
}

}  // namespace fluxattn::plugins
