#include "triangle_backend.h"

#include "absl/strings/str_cat.h"
#include "fluxattn/attention/layout_builder.h"
#include "fluxattn/attention/param_reader.h"

namespace fluxattn::plugins {

std::vector<ParamSpec> TriangleBackend::Params() {
  std::vector<ParamSpec> specs = StreamingParamSpecs("");
  ParamSpec last_n;
  last_n.name = "last_n";
  last_n.type = ParamType::kInt;
  last_n.description =
      "The last last_n queries of the prompt (of the prefill call) attend densely; the others "
      "use the sink + window rule.";
  last_n.default_value = int64_t{128};
  last_n.min_value = 0;
  last_n.max_value = 1e9;
  specs.push_back(last_n);
  ParamSpec decode;
  decode.name = "decode";
  decode.type = ParamType::kString;
  decode.default_value = std::string("full");
  decode.choices = {"full", "streaming"};
  decode.description =
      "Decode strategy: \"full\" (dense causal) or \"streaming\" (the prefill's sink + window "
      "rule).";
  specs.push_back(decode);
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
  absl::StatusOr<std::string> decode = ReadParam<std::string>(params, "decode");
  if (!decode.ok()) return decode.status();
  if (*decode != "full" && *decode != "streaming") {
    return absl::InvalidArgumentError(
        absl::StrCat("decode: expected \"full\" or \"streaming\", found \"", *decode, "\""));
  }
  return std::make_unique<TriangleBackend>(*rule, *last_n, *decode == "streaming");
}

AttentionCapabilities TriangleBackend::capabilities() const { return AttentionCapabilities{}; }

absl::Status TriangleBackend::BuildLayout(const AttentionProblem& problem,
                                          BlockSparseLayout* layout) {
  if (problem.phase == AttentionPhase::kDecode) {
    *layout =
        decode_streaming_
            ? BuildStreamingLayout(rule_, problem.q_pos0, problem.num_queries, problem.kv.length)
            : DenseCausalLayout(problem.q_pos0, problem.num_queries, problem.kv.length);
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
