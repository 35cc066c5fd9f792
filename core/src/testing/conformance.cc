#include "fluxattn/testing/conformance.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "fluxattn/attention/layout_builder.h"
#include "fluxattn/model_info.h"
#include "fluxattn/testing/reference_attention.h"

namespace fluxattn::testing {

const char* CheckOutcomeName(CheckOutcome outcome) {
  switch (outcome) {
    case CheckOutcome::kPass:
      return "PASS";
    case CheckOutcome::kFail:
      return "FAIL";
    case CheckOutcome::kSkip:
      return "SKIP";
  }
  return "?";
}

bool AllPassed(const std::vector<CheckResult>& results) {
  return std::none_of(results.begin(), results.end(),
                      [](const CheckResult& r) { return r.outcome == CheckOutcome::kFail; });
}

namespace {

CheckResult Pass(std::string name, std::string detail) {
  return {std::move(name), CheckOutcome::kPass, std::move(detail)};
}
CheckResult Fail(std::string name, std::string detail) {
  return {std::move(name), CheckOutcome::kFail, std::move(detail)};
}
CheckResult Skip(std::string name, std::string detail) {
  return {std::move(name), CheckOutcome::kSkip, std::move(detail)};
}

// ---------------------------------------------------------------------------------------------
// Parameter specs

bool ValueHasType(const ParamValue& value, ParamType type) {
  switch (type) {
    case ParamType::kBool:
      return std::holds_alternative<bool>(value);
    case ParamType::kInt:
      return std::holds_alternative<int64_t>(value);
    case ParamType::kFloat:
      return std::holds_alternative<double>(value) || std::holds_alternative<int64_t>(value);
    case ParamType::kString:
      return std::holds_alternative<std::string>(value);
    case ParamType::kIntList:
      return std::holds_alternative<std::vector<int64_t>>(value);
    case ParamType::kStringList:
      return std::holds_alternative<std::vector<std::string>>(value);
  }
  return false;
}

// The numbers of a value that the spec's range applies to.
std::vector<double> NumbersOf(const ParamValue& value) {
  if (const auto* i = std::get_if<int64_t>(&value)) return {static_cast<double>(*i)};
  if (const auto* d = std::get_if<double>(&value)) return {*d};
  if (const auto* l = std::get_if<std::vector<int64_t>>(&value)) {
    return std::vector<double>(l->begin(), l->end());
  }
  return {};
}

std::string SpecProblem(const ParamSpec& spec) {
  if (spec.description.empty()) return "has no description";
  if (spec.min_value && spec.max_value && *spec.min_value > *spec.max_value) {
    return absl::StrCat("has min ", *spec.min_value, " > max ", *spec.max_value);
  }
  if (!spec.default_value) return "";
  const ParamValue& value = *spec.default_value;
  if (!ValueHasType(value, spec.type)) {
    return absl::StrCat("default ", ParamValueToString(value), " is not of type ",
                        ParamTypeName(spec.type));
  }
  for (double x : NumbersOf(value)) {
    if ((spec.min_value && x < *spec.min_value) || (spec.max_value && x > *spec.max_value)) {
      return absl::StrCat("default ", ParamValueToString(value), " is outside its range");
    }
  }
  if (const auto* s = std::get_if<std::string>(&value); s != nullptr && !spec.choices.empty()) {
    if (std::find(spec.choices.begin(), spec.choices.end(), *s) == spec.choices.end()) {
      return absl::StrCat("default \"", *s, "\" is not one of its choices");
    }
  }
  return "";
}

// ---------------------------------------------------------------------------------------------
// Attention backends

struct Shape {
  int hq, hkv, dim;
  int64_t length;  // prompt length
  int page_tokens;
};

// GQA ratios 1..8, head dims 32..128, lengths around block and page edges, pages that differ
// from any layout block size.
constexpr Shape kShapes[] = {
    {1, 1, 64, 1, 16},   {4, 4, 64, 63, 16},   {8, 4, 128, 200, 48}, {8, 2, 96, 129, 100},
    {8, 1, 80, 300, 64}, {4, 2, 64, 700, 256}, {6, 3, 32, 1100, 96},
};

std::string ShapeText(const Shape& s) {
  return absl::StrCat("hq ", s.hq, ", hkv ", s.hkv, ", head dim ", s.dim, ", length ", s.length,
                      ", page ", s.page_tokens);
}

// Shapes adapted to the head dims a backend declares.
std::vector<Shape> ShapesFor(const AttentionCapabilities& caps) {
  std::vector<Shape> shapes(std::begin(kShapes), std::end(kShapes));
  if (caps.head_dims.empty()) return shapes;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const auto& dims = caps.head_dims;
    if (std::find(dims.begin(), dims.end(), shapes[i].dim) == dims.end()) {
      shapes[i].dim = dims[i % dims.size()];
    }
  }
  return shapes;
}

// `all` restricted to queries [q_pos0, q_pos0 + n) against keys [0, kv_length), on its pages.
AttentionProblem SubProblem(const RandomAttention& all, int64_t q_pos0, int64_t n,
                            int64_t kv_length, AttentionPhase phase) {
  AttentionProblem p = all.problem;
  p.q_pos0 = q_pos0;
  p.num_queries = n;
  p.q =
      HostQueries(all.q.data() + q_pos0 * p.num_q_heads * p.head_dim, n, p.num_q_heads, p.head_dim);
  p.kv = all.kv.view();
  p.kv.length = kv_length;
  p.phase = phase;
  return p;
}

struct Run {
  std::string error;                        // empty when the output matched the oracle
  std::vector<float> out;                   // the backend's output
  std::vector<std::vector<uint8_t>> masks;  // dense mask per layout head
};

// Builds the backend's layout for `p`, checks it, runs Forward and compares with the oracle
// applied to that layout. A layout that reads a released page is reported before Forward runs,
// so a backend with its own kernel cannot crash on it.
Run RunAndCompare(AttentionBackend& backend, const RandomAttention& all, const AttentionProblem& p,
                  double tolerance) {
  Run run;
  BlockSparseLayout layout;
  absl::Status status = backend.BuildLayout(p, &layout);
  if (!status.ok()) {
    run.error = absl::StrCat("BuildLayout failed: ", status.message());
    return run;
  }
  status = ValidateLayout(layout, p.num_kv_heads);
  if (!status.ok()) {
    run.error = absl::StrCat("invalid layout: ", status.message());
    return run;
  }
  if (layout.q_pos0 != p.q_pos0 || layout.num_queries != p.num_queries ||
      layout.kv_length != p.kv.length) {
    run.error =
        absl::StrCat("layout (q_pos0, num_queries, kv_length) = (", layout.q_pos0, ", ",
                     layout.num_queries, ", ", layout.kv_length, "), expected the problem's (",
                     p.q_pos0, ", ", p.num_queries, ", ", p.kv.length, ")");
    return run;
  }
  const int64_t len = p.kv.length;
  for (int h = 0; h < layout.num_layout_heads; ++h) {
    run.masks.push_back(ExpandLayoutToDenseMask(layout, h));
    // Invariant of every attention strategy: a query reads at least its own position (so no
    // row is empty, and a backend that returns nothing cannot match a zero oracle).
    for (int64_t r = 0; r < p.num_queries; ++r) {
      if (run.masks.back()[r * len + p.q_pos0 + r] == 0) {
        run.error = absl::StrCat("layout head ", h, ": the query at position ", p.q_pos0 + r,
                                 " does not read its own position");
        return run;
      }
    }
    for (int64_t r = 0; r < p.num_queries; ++r) {
      for (int64_t j = 0; j < len; ++j) {
        if (run.masks.back()[r * len + j] != 0 && !p.kv.resident(j)) {
          run.error = absl::StrCat("the layout reads position ", j, " (query at ", p.q_pos0 + r,
                                   "), whose page was released as RetainedKv() allowed");
          return run;
        }
      }
    }
  }
  const int group = p.num_q_heads / p.num_kv_heads;
  const std::vector<double> want = ReferenceAttention(
      p, p.host_q(), all.k.data(), all.v.data(), [&](int64_t r, int h, int64_t j) {
        const auto& mask = run.masks[run.masks.size() == 1 ? 0 : h / group];
        return mask[r * len + j] != 0;
      });
  run.out.assign(p.num_queries * p.num_q_heads * p.head_dim, -3.0f);
  status = RunSingleProblem(backend, p, run.out.data());
  if (!status.ok()) {
    run.error = absl::StrCat("Plan/Run failed: ", status.message());
    return run;
  }
  const double err = RelativeError(run.out, want);
  if (!(err <= tolerance)) {
    run.error = absl::StrCat("output differs from the oracle on the backend's own layout: max ",
                             "relative error ", err, " > ", tolerance);
  }
  return run;
}

// Runs `body(shape, seed)` on every shape; the first error fails the check.
CheckResult OverShapes(const std::string& name, const std::vector<Shape>& shapes, uint64_t seed,
                       const std::function<std::string(const Shape&, uint64_t)>& body) {
  int skipped = 0;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const uint64_t shape_seed = seed * 1000003 + i;
    std::string error = body(shapes[i], shape_seed);
    if (error == "skip") {
      ++skipped;
      continue;
    }
    if (!error.empty()) {
      return Fail(name, absl::StrCat(ShapeText(shapes[i]), ", seed ", shape_seed, ": ", error));
    }
  }
  if (skipped == static_cast<int>(shapes.size())) return Skip(name, "no shape applies");
  return Pass(name, absl::StrCat(shapes.size() - skipped, " shapes"));
}

}  // namespace

std::vector<CheckResult> CheckParamSpecs(const std::vector<ParamSpec>& specs) {
  const std::string name = "parameter specs";
  std::set<std::string> seen;
  for (const ParamSpec& spec : specs) {
    if (spec.name.empty()) return {Fail(name, "a parameter has no name")};
    if (!seen.insert(spec.name).second) {
      return {Fail(name, absl::StrCat("'", spec.name, "' is declared twice"))};
    }
    std::string problem = SpecProblem(spec);
    if (!problem.empty()) return {Fail(name, absl::StrCat("'", spec.name, "' ", problem))};
  }
  return {Pass(name, absl::StrCat(specs.size(), " parameters, each described, defaults valid"))};
}

std::vector<CheckResult> CheckAttentionBackend(const AttentionBackendMaker& make,
                                               const ConformanceOptions& options) {
  std::vector<CheckResult> results;
  absl::StatusOr<std::shared_ptr<AttentionBackend>> made = make();
  if (!made.ok() || *made == nullptr) {
    results.push_back(
        Fail("create", made.ok() ? "null instance" : std::string(made.status().message())));
    return results;
  }
  std::shared_ptr<AttentionBackend> backend = *made;
  results.push_back(Pass("create", "an instance with the given parameters"));

  const AttentionCapabilities caps = backend->capabilities();
  const bool cpu = std::count(caps.devices.begin(), caps.devices.end(), DeviceType::kCpu) > 0;
  const bool f32 = std::count(caps.dtypes.begin(), caps.dtypes.end(), DType::kF32) > 0;
  if (!cpu || !f32 || (!caps.prefill && !caps.decode)) {
    results.push_back(Skip("capabilities",
                           "the checks run on the CPU in float32, which the "
                           "backend does not declare; nothing else was checked"));
    return results;
  }
  results.push_back(Pass("capabilities", "declares CPU, float32"));
  const std::vector<Shape> shapes = ShapesFor(caps);
  const double tol = options.tolerance;

  // Keeps the backend's per-request state alive alongside the problem.
  auto with_state = [&](AttentionBackend& b, const Shape& s, AttentionProblem p,
                        std::unique_ptr<AttentionState>* state) {
    *state = b.CreateState(s.hq, s.hkv, s.dim);
    p.state = state->get();
    return p;
  };

  if (caps.prefill) {
    results.push_back(OverShapes(
        "prefill matches the oracle", shapes, options.seed, [&](const Shape& s, uint64_t seed) {
          RandomAttention all(s.hq, s.hkv, s.dim, 0, s.length, s.length, s.page_tokens, seed);
          std::unique_ptr<AttentionState> state;
          AttentionProblem p = with_state(*backend, s, all.problem, &state);
          return RunAndCompare(*backend, all, p, tol).error;
        }));
    results.push_back(OverShapes(
        "chunked prefill matches the oracle", shapes, options.seed + 1,
        [&](const Shape& s, uint64_t seed) -> std::string {
          if (s.length < 3) return "skip";
          // The last third of the prompt as one chunk starting at an unaligned position.
          const int64_t start = s.length - s.length / 3;
          RandomAttention all(s.hq, s.hkv, s.dim, 0, s.length, s.length, s.page_tokens, seed);
          std::unique_ptr<AttentionState> state;
          AttentionProblem p = with_state(
              *backend, s,
              SubProblem(all, start, s.length - start, s.length, AttentionPhase::kPrefill), &state);
          return RunAndCompare(*backend, all, p, tol).error;
        }));
  } else {
    results.push_back(Skip("prefill matches the oracle", "the backend does not do prefill"));
  }

  if (caps.decode) {
    results.push_back(OverShapes(
        "decode matches the oracle", shapes, options.seed + 2, [&](const Shape& s, uint64_t seed) {
          RandomAttention all(s.hq, s.hkv, s.dim, 0, s.length, s.length, s.page_tokens, seed);
          std::unique_ptr<AttentionState> state;
          AttentionProblem p = with_state(
              *backend, s, SubProblem(all, s.length - 1, 1, s.length, AttentionPhase::kDecode),
              &state);
          return RunAndCompare(*backend, all, p, tol).error;
        }));
  }

  if (caps.prefill && caps.decode) {
    int differing = 0;
    CheckResult same = OverShapes(
        "decode equals the last prefill row", shapes, options.seed + 3,
        [&](const Shape& s, uint64_t seed) -> std::string {
          RandomAttention all(s.hq, s.hkv, s.dim, 0, s.length, s.length, s.page_tokens, seed);
          std::unique_ptr<AttentionState> state;
          AttentionProblem p = with_state(*backend, s, all.problem, &state);
          Run prefill = RunAndCompare(*backend, all, p, tol);
          if (!prefill.error.empty()) return absl::StrCat("prefill: ", prefill.error);
          std::unique_ptr<AttentionState> dec_state;
          AttentionProblem d = with_state(
              *backend, s, SubProblem(all, s.length - 1, 1, s.length, AttentionPhase::kDecode),
              &dec_state);
          Run decode = RunAndCompare(*backend, all, d, tol);
          if (!decode.error.empty()) return absl::StrCat("decode: ", decode.error);
          // Only comparable when decode reads the keys the prefill row read.
          for (size_t h = 0; h < std::max(prefill.masks.size(), decode.masks.size()); ++h) {
            const auto& pm = prefill.masks[std::min(h, prefill.masks.size() - 1)];
            const auto& dm = decode.masks[std::min(h, decode.masks.size() - 1)];
            if (!std::equal(dm.begin(), dm.end(), pm.end() - s.length)) {
              ++differing;
              return "skip";
            }
          }
          const size_t row = static_cast<size_t>(s.hq) * s.dim;
          std::vector<double> last(prefill.out.end() - row, prefill.out.end());
          const double err = RelativeError(decode.out, last);
          if (!(err <= tol)) {
            return absl::StrCat(
                "decode reads the same keys as the last prefill row but its output ",
                "differs: max relative error ", err);
          }
          return "";
        });
    if (same.outcome == CheckOutcome::kSkip) {
      same.detail = "decode reads other keys than prefill (a separate decode rule)";
    } else if (same.outcome == CheckOutcome::kPass && differing > 0) {
      absl::StrAppend(&same.detail, " (", differing, " skipped: decode reads other keys)");
    }
    results.push_back(same);

    // Prefill, release what RetainedKv() allows, decode a few steps on the released cache.
    results.push_back(OverShapes(
        "RetainedKv honoured by decode", shapes, options.seed + 4,
        [&](const Shape& s, uint64_t seed) -> std::string {
          constexpr int kSteps = 3;
          RandomAttention all(s.hq, s.hkv, s.dim, 0, s.length + kSteps, s.length + kSteps,
                              s.page_tokens, seed);
          std::unique_ptr<AttentionState> state = backend->CreateState(s.hq, s.hkv, s.dim);
          AttentionProblem prompt =
              SubProblem(all, 0, s.length, s.length, AttentionPhase::kPrefill);
          prompt.state = state.get();
          std::vector<float> out(s.length * s.hq * s.dim);
          absl::Status st = RunSingleProblem(*backend, prompt, out.data());
          if (!st.ok()) return absl::StrCat("prefill Plan/Run failed: ", st.message());
          all.kv.Release(backend->RetainedKv(s.length));
          for (int step = 0; step < kSteps; ++step) {
            const int64_t pos = s.length + step;
            AttentionProblem d = SubProblem(all, pos, 1, pos + 1, AttentionPhase::kDecode);
            d.state = state.get();
            Run run = RunAndCompare(*backend, all, d, tol);
            if (!run.error.empty()) return absl::StrCat("decode step ", step, ": ", run.error);
            all.kv.Release(backend->RetainedKv(pos + 1));
          }
          return "";
        }));

    // One instance serving requests of different lengths, each with its own state, interleaved.
    results.push_back(OverShapes(
        "interleaved requests with their own state", shapes, options.seed + 5,
        [&](const Shape& s, uint64_t seed) -> std::string {
          const int64_t lengths[] = {std::max<int64_t>(1, s.length / 3), s.length,
                                     std::max<int64_t>(1, s.length / 2 + 7)};
          std::vector<std::unique_ptr<RandomAttention>> requests;
          std::vector<std::unique_ptr<AttentionState>> states;
          for (int64_t len : lengths) {
            requests.push_back(std::make_unique<RandomAttention>(s.hq, s.hkv, s.dim, 0, len, len,
                                                                 s.page_tokens, seed++));
            states.push_back(backend->CreateState(s.hq, s.hkv, s.dim));
          }
          for (int round = 0; round < 2; ++round) {
            for (size_t i = 0; i < requests.size(); ++i) {
              const RandomAttention& r = *requests[i];
              const int64_t len = r.problem.kv.length;
              AttentionProblem p =
                  round == 0 ? r.problem : SubProblem(r, len - 1, 1, len, AttentionPhase::kDecode);
              p.state = states[i].get();
              p.request_id = i + 1;
              std::string error = RunAndCompare(*backend, r, p, tol).error;
              if (!error.empty()) return absl::StrCat("request ", i + 1, ": ", error);
            }
          }
          return "";
        }));
  }

  // Same inputs, same bits: on the same instance and on a fresh one.
  results.push_back(OverShapes(
      "deterministic", shapes, options.seed + 6, [&](const Shape& s, uint64_t seed) -> std::string {
        absl::StatusOr<std::shared_ptr<AttentionBackend>> fresh = make();
        if (!fresh.ok() || *fresh == nullptr) return "a second instance could not be created";
        RandomAttention all(s.hq, s.hkv, s.dim, 0, s.length, s.length, s.page_tokens, seed);
        AttentionProblem p =
            caps.prefill ? all.problem
                         : SubProblem(all, s.length - 1, 1, s.length, AttentionPhase::kDecode);
        std::vector<std::vector<float>> outs;
        for (AttentionBackend* b : {backend.get(), backend.get(), fresh->get()}) {
          std::unique_ptr<AttentionState> state;
          AttentionProblem q = with_state(*b, s, p, &state);
          outs.emplace_back(p.num_queries * s.hq * s.dim, 0.0f);
          absl::Status st = RunSingleProblem(*b, q, outs.back().data());
          if (!st.ok()) return absl::StrCat("Plan/Run failed: ", st.message());
        }
        if (outs[0] != outs[1]) return "two runs on the same instance differ";
        if (outs[0] != outs[2]) return "a fresh instance gives another result";
        return "";
      }));
  return results;
}

// ---------------------------------------------------------------------------------------------
// Routing policies

namespace {

class NoWeights : public WeightSource {
 public:
  bool Has(const std::string&) const override { return false; }
  std::vector<std::string> Names() const override { return {}; }
  absl::StatusOr<Tensor> GetF32(const std::string& name,
                                const std::vector<int64_t>&) const override {
    return absl::NotFoundError(
        absl::StrCat("tensor '", name, "': the synthetic model of check-plugin has no weights"));
  }
};

// Answers for the [routers.<name>] a policy under test delegates to: full attention on even
// layers, sparse on odd ones.
class StandInPolicy : public RoutingPolicy {
 public:
  absl::Status Prepare(const RoutingSetup&) override { return absl::OkStatus(); }
  absl::StatusOr<RoutingDecision> Decide(const RoutingInput& input) override {
    RoutingDecision decision;
    decision.choice = input.layer % 2 == 0 ? AttentionChoice::kFull : AttentionChoice::kSparse;
    return decision;
  }
};

ModelInfo SyntheticModel(int num_layers, int hq, int hkv, int dim) {
  ModelInfo model;
  model.path = "<synthetic>";
  model.architecture = "SyntheticForCausalLM";
  model.model_type = "synthetic";
  model.num_layers = num_layers;
  model.num_q_heads = hq;
  model.num_kv_heads = hkv;
  model.head_dim = dim;
  model.hidden_size = hq * dim;
  model.vocab_size = 1000;
  return model;
}

}  // namespace

std::vector<CheckResult> CheckRoutingPolicy(const RoutingPolicyMaker& make,
                                            const ConformanceOptions& options) {
  std::vector<CheckResult> results;
  const NoWeights weights;
  auto stand_in = std::make_shared<StandInPolicy>();
  // Head shapes vary with the model so that policies reading the queries see several.
  std::vector<ModelInfo> models;
  for (size_t i = 0; i < options.routing_layers.size(); ++i) {
    const int shapes[3][3] = {{2, 1, 32}, {8, 2, 64}, {4, 4, 128}};
    const int* s = shapes[i % 3];
    models.push_back(SyntheticModel(options.routing_layers[i], s[0], s[1], s[2]));
  }
  if (models.empty()) return {Skip("routing checks", "no synthetic model sizes given")};
  auto prepared = [&](const ModelInfo& model) -> absl::StatusOr<std::shared_ptr<RoutingPolicy>> {
    absl::StatusOr<std::shared_ptr<RoutingPolicy>> policy = make();
    if (!policy.ok()) return policy.status();
    if (*policy == nullptr) return absl::InternalError("null instance");
    RoutingSetup setup;
    setup.model = &model;
    setup.weights = &weights;
    setup.open_weights =
        [](const std::string& path) -> absl::StatusOr<std::unique_ptr<WeightSource>> {
      return absl::NotFoundError(absl::StrCat(path, ": check-plugin opens no weight files"));
    };
    setup.policy = [stand_in](const std::string&) -> absl::StatusOr<RoutingPolicy*> {
      return stand_in.get();
    };
    absl::Status status = (*policy)->Prepare(setup);
    if (!status.ok()) return status;
    return *policy;
  };

  {
    absl::StatusOr<std::shared_ptr<RoutingPolicy>> made = make();
    if (!made.ok() || *made == nullptr) {
      results.push_back(
          Fail("create", made.ok() ? "null instance" : std::string(made.status().message())));
      return results;
    }
    results.push_back(Pass("create", "an instance with the given parameters"));
  }
  std::vector<std::shared_ptr<RoutingPolicy>> policies;
  for (const ModelInfo& model : models) {
    absl::StatusOr<std::shared_ptr<RoutingPolicy>> policy = prepared(model);
    if (!policy.ok()) {
      results.push_back(
          Fail("Prepare on synthetic models",
               absl::StrCat(model.num_layers, " layers: ", policy.status().message())));
      return results;
    }
    policies.push_back(*policy);
  }
  results.push_back(
      Pass("Prepare on synthetic models",
           absl::StrCat(absl::StrJoin(options.routing_layers, ", "), " layers, no weights")));

  // Decisions for every layer of every model, prompts of 1, 7 and 300 tokens, with no hints,
  // unrelated hints and hints of common keys; returns them for the determinism check.
  const std::map<std::string, std::string> hint_sets[] = {
      {}, {{"unrelated", "value"}}, {{"attention", "full"}, {"mode", "sparse"}}};
  // `reverse` asks the layers last to first, so a policy whose answer depends on the order or
  // number of calls shows.
  auto decide_all = [&](RoutingPolicy& policy, const ModelInfo& model, uint64_t seed, bool reverse,
                        std::vector<int>* choices) -> std::string {
    std::mt19937_64 rng(seed);
    for (int64_t tokens : {int64_t{1}, int64_t{7}, int64_t{300}}) {
      std::vector<float> queries =
          RandomVector(tokens * model.num_q_heads * model.head_dim, rng, -2.0f, 2.0f);
      for (size_t hs = 0; hs < std::size(hint_sets); ++hs) {
        const size_t base = choices->size();
        choices->resize(base + model.num_layers, -1);
        for (int i = 0; i < model.num_layers; ++i) {
          const int layer = reverse ? model.num_layers - 1 - i : i;
          RoutingInput input;
          input.request_id = 1 + hs;
          input.layer = layer;
          input.num_layers = model.num_layers;
          input.prompt_tokens = tokens;
          input.num_q_heads = model.num_q_heads;
          input.head_dim = model.head_dim;
          input.queries = policy.NeedsQueries() ? queries.data() : nullptr;
          input.hints = hs == 0 ? nullptr : &hint_sets[hs];
          absl::StatusOr<RoutingDecision> decision = policy.Decide(input);
          const std::string where = absl::StrCat(model.num_layers, "-layer model, layer ", layer,
                                                 ", ", tokens, " prompt tokens");
          if (!decision.ok())
            return absl::StrCat(where, ": Decide failed: ", decision.status().message());
          const auto choice = static_cast<int>(decision->choice);
          if (choice != static_cast<int>(AttentionChoice::kFull) &&
              choice != static_cast<int>(AttentionChoice::kSparse)) {
            return absl::StrCat(where, ": choice ", choice, " is neither full nor sparse");
          }
          for (float logit : decision->logits) {
            if (!std::isfinite(logit)) return absl::StrCat(where, ": a logit is not finite");
          }
          (*choices)[base + layer] = choice;
        }
      }
    }
    return "";
  };

  std::vector<std::vector<int>> first(models.size());
  std::string error;
  for (size_t m = 0; m < models.size() && error.empty(); ++m) {
    error = decide_all(*policies[m], models[m], options.seed + m, false, &first[m]);
  }
  results.push_back(error.empty() ? Pass("decisions valid",
                                         "every layer; 1, 7 and 300 tokens; with and "
                                         "without hints")
                                  : Fail("decisions valid", error));
  if (!error.empty()) return results;

  for (size_t m = 0; m < models.size() && error.empty(); ++m) {
    std::vector<int> again, fresh_choices;
    error = decide_all(*policies[m], models[m], options.seed + m, true, &again);
    if (error.empty() && again != first[m]) {
      error = absl::StrCat(models[m].num_layers,
                           "-layer model: asking again (layers in reverse order) changed a "
                           "decision");
    }
    absl::StatusOr<std::shared_ptr<RoutingPolicy>> fresh = prepared(models[m]);
    if (error.empty() && !fresh.ok()) error = std::string(fresh.status().message());
    if (error.empty()) {
      error = decide_all(**fresh, models[m], options.seed + m, false, &fresh_choices);
    }
    if (error.empty() && fresh_choices != first[m]) {
      error =
          absl::StrCat(models[m].num_layers, "-layer model: a fresh instance decided differently");
    }
  }
  results.push_back(error.empty() ? Pass("deterministic",
                                         "same inputs, same decisions, in any "
                                         "order and on a fresh instance")
                                  : Fail("deterministic", error));
  return results;
}

}  // namespace fluxattn::testing
