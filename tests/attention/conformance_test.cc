// The conformance suite every attention backend runs: its layout is expanded into a dense mask
// and its output compared with the double-precision masked-softmax oracle on fresh random
// inputs, in prefill, chunked prefill and decode, with paged KV whose pages differ from the
// layout's blocks, with the KV it declares unneeded actually released, and for several
// requests of mixed lengths served by one instance.
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "attention_test_util.h"
#include "backend_factory.h"
#include "fluxattn/attention/layout_builder.h"

namespace fluxattn::testing {
namespace {

// The pairs a strategy must read, written from its published rule and parameters alone (never
// from the plugin's layout code): whether the query at absolute position p reads key j, in a call
// whose queries end at chunk_end; nullopt where the strategy is data-dependent (XAttention's
// prefill, Quest's decode), for which only the invariants and the oracle on the layout are checked.
using ExpectedRule = std::function<std::optional<bool>(AttentionPhase phase, int64_t chunk_end,
                                                       int64_t p, int64_t j)>;

struct BackendCase {
  std::string label;
  std::string plugin;
  std::map<std::string, ParamValue> params;
  ExpectedRule expected;
  // Whether decoding at position p reads what the prefill row of p reads.
  bool decode_matches_prefill = true;
};

// Causal attention: every earlier or equal position.
bool Causal(int64_t p, int64_t j) { return j <= p; }

// Sink + window with blocks of b tokens (DESIGN.md): j <= p and (j/b < ceil(sink/b) or
// p/b - j/b < ceil(window/b)).
bool SinkWindow(int64_t sink, int64_t window, int64_t b, int64_t p, int64_t j) {
  const int64_t sink_blocks = (sink + b - 1) / b, window_blocks = (window + b - 1) / b;
  return j <= p && (j / b < sink_blocks || p / b - j / b < window_blocks);
}

ExpectedRule FullRule() {
  return [](AttentionPhase, int64_t, int64_t p, int64_t j) { return Causal(p, j); };
}
ExpectedRule StreamingRuleOf(int64_t sink, int64_t window, int64_t b) {
  return [=](AttentionPhase, int64_t, int64_t p, int64_t j) {
    return SinkWindow(sink, window, b, p, j);
  };
}

void PrintTo(const BackendCase& c, std::ostream* os) { *os << c.label; }

struct Shape {
  int hq, hkv, dim;
  int64_t length;  // prompt length
  int page_tokens;
};

void PrintTo(const Shape& s, std::ostream* os) {
  *os << "hq" << s.hq << " hkv" << s.hkv << " d" << s.dim << " len" << s.length << " page"
      << s.page_tokens;
}

using Param = std::tuple<BackendCase, Shape>;

std::string ParamName(const ::testing::TestParamInfo<Param>& info) {
  const auto& [backend, s] = info.param;
  return absl::StrCat(backend.label, "_hq", s.hq, "_hkv", s.hkv, "_d", s.dim, "_len", s.length,
                      "_page", s.page_tokens);
}

BackendPtr Make(const BackendCase& c) {
  absl::StatusOr<BackendPtr> made = MakeBackend(c.plugin, c.params);
  EXPECT_TRUE(made.ok()) << made.status();
  return made.ok() ? std::move(*made) : nullptr;
}

// Runs `backend` on `in`. Where the case states its rule, the layout must read exactly the pairs
// the rule names, and the output is compared with the oracle applied to THE RULE; elsewhere
// (data-dependent layouts) with the oracle on the layout. Always: every query reads its own
// position.
void CheckAgainstReference(const BackendCase& c, AttentionBackend& backend, RandomAttention& in,
                           std::vector<float>* out_copy = nullptr) {
  const AttentionProblem& p = in.problem;
  BlockSparseLayout layout;
  ASSERT_TRUE(backend.BuildLayout(p, &layout).ok());
  ASSERT_TRUE(ValidateLayout(layout, p.num_kv_heads).ok());
  ASSERT_EQ(layout.q_pos0, p.q_pos0);
  ASSERT_EQ(layout.num_queries, p.num_queries);
  std::vector<std::vector<uint8_t>> masks;
  for (int h = 0; h < layout.num_layout_heads; ++h) {
    masks.push_back(ExpandLayoutToDenseMask(layout, h));
  }
  const int group = p.num_q_heads / p.num_kv_heads;
  const int64_t len = layout.kv_length;
  ASSERT_EQ(len, p.kv.length);
  const int64_t chunk_end = p.q_pos0 + p.num_queries;
  bool rule_known = c.expected != nullptr;
  for (size_t h = 0; h < masks.size(); ++h) {
    for (int64_t r = 0; r < p.num_queries; ++r) {
      const int64_t pos = p.q_pos0 + r;
      ASSERT_NE(masks[h][r * len + pos], 0)
          << "layout head " << h << ": the query at " << pos << " does not read its own position";
      for (int64_t j = 0; j < len && rule_known; ++j) {
        const std::optional<bool> want = c.expected(p.phase, chunk_end, pos, j);
        if (!want.has_value()) {
          rule_known = false;
          break;
        }
        ASSERT_EQ(masks[h][r * len + j] != 0, *want)
            << "layout head " << h << ", query at " << pos << ", key " << j << " ("
            << AttentionPhaseName(p.phase) << "): the layout disagrees with the rule";
      }
    }
  }
  std::vector<double> want = ReferenceAttention(in, [&](int64_t r, int h, int64_t j) {
    if (rule_known) return *c.expected(p.phase, chunk_end, p.q_pos0 + r, j);
    const auto& mask = masks[masks.size() == 1 ? 0 : h / group];
    return j < len && mask[r * len + j] != 0;
  });
  std::vector<float> got(p.num_queries * p.num_q_heads * p.head_dim, -3.0f);
  absl::Status status = RunSingleProblem(backend, p, got.data());
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_LT(RelativeError(got, want), 1e-5);
  if (out_copy != nullptr) *out_copy = std::move(got);
}

class ConformanceTest : public ::testing::TestWithParam<Param> {};

TEST_P(ConformanceTest, PrefillMatchesReference) {
  const auto& [c, s] = GetParam();
  BackendPtr backend = Make(c);
  ASSERT_NE(backend, nullptr);
  RandomAttention in(s.hq, s.hkv, s.dim, 0, s.length, s.length, s.page_tokens, FreshSeed());
  std::unique_ptr<AttentionState> state = backend->CreateState(s.hq, s.hkv, s.dim);
  in.problem.state = state.get();
  CheckAgainstReference(c, *backend, in);
}

TEST_P(ConformanceTest, ChunkedPrefillMatchesReference) {
  const auto& [c, s] = GetParam();
  if (s.length < 3) GTEST_SKIP() << "too short to chunk";
  BackendPtr backend = Make(c);
  ASSERT_NE(backend, nullptr);
  // The last third of the prompt as one chunk starting at an unaligned position.
  const int64_t start = s.length - s.length / 3;
  RandomAttention in(s.hq, s.hkv, s.dim, start, s.length - start, s.length, s.page_tokens,
                     FreshSeed());
  CheckAgainstReference(c, *backend, in);
}

// Prefill of the prompt, release of what RetainedKv says is no longer needed, then decode steps
// (each must read only resident KV and match the oracle on its own layout).
TEST_P(ConformanceTest, DecodeAfterReleaseMatchesReference) {
  const auto& [c, s] = GetParam();
  BackendPtr backend = Make(c);
  ASSERT_NE(backend, nullptr);
  const int steps = 3;
  const uint64_t seed = FreshSeed();
  RandomAttention all(s.hq, s.hkv, s.dim, 0, s.length + steps, s.length + steps, s.page_tokens,
                      seed);
  std::unique_ptr<AttentionState> state = backend->CreateState(s.hq, s.hkv, s.dim);
  // Prefill over the prompt only.
  RandomAttention prompt(s.hq, s.hkv, s.dim, 0, s.length, s.length, s.page_tokens, seed);
  prompt.problem.state = state.get();
  std::vector<float> prefill_out(s.length * s.hq * s.dim);
  ASSERT_TRUE(RunSingleProblem(*backend, prompt.problem, prefill_out.data()).ok());
  all.kv.Release(backend->RetainedKv(s.length));
  for (int step = 0; step < steps; ++step) {
    SCOPED_TRACE(absl::StrCat("decode step ", step));
    const int64_t pos = s.length + step;
    // The decode problem sees the KV written so far and the query row of `pos`.
    RandomAttention dec(s.hq, s.hkv, s.dim, pos, 1, pos + 1, s.page_tokens, seed);
    dec.q.assign(all.q.begin() + pos * s.hq * s.dim, all.q.begin() + (pos + 1) * s.hq * s.dim);
    dec.k = all.k;
    dec.v = all.v;
    dec.problem.q = testing::HostQueries(dec.q.data(), 1, s.hq, s.dim);
    dec.problem.kv = all.kv.view();
    dec.problem.kv.length = pos + 1;
    dec.problem.phase = AttentionPhase::kDecode;
    dec.problem.state = state.get();
    CheckAgainstReference(c, *backend, dec);
    all.kv.Release(backend->RetainedKv(pos + 1));
  }
}

TEST_P(ConformanceTest, DecodeEqualsLastPrefillRow) {
  const auto& [c, s] = GetParam();
  if (!c.decode_matches_prefill) GTEST_SKIP() << "decode uses another rule than prefill";
  BackendPtr backend = Make(c);
  ASSERT_NE(backend, nullptr);
  RandomAttention in(s.hq, s.hkv, s.dim, 0, s.length, s.length, s.page_tokens, FreshSeed());
  std::vector<float> prefill(s.length * s.hq * s.dim);
  ASSERT_TRUE(RunSingleProblem(*backend, in.problem, prefill.data()).ok());
  AttentionProblem dec = in.problem;
  dec.phase = AttentionPhase::kDecode;
  dec.q_pos0 = s.length - 1;
  dec.num_queries = 1;
  dec.q = testing::HostQueries(in.q.data() + (s.length - 1) * s.hq * s.dim, 1, s.hq, s.dim);
  std::vector<float> decode(s.hq * s.dim);
  ASSERT_TRUE(RunSingleProblem(*backend, dec, decode.data()).ok());
  std::vector<double> last(prefill.end() - s.hq * s.dim, prefill.end());
  EXPECT_LT(RelativeError(decode, last), 1e-5);
}

// One instance serving several requests of different lengths, steps interleaved.
TEST_P(ConformanceTest, MixedLengthRequestsMatchReference) {
  const auto& [c, s] = GetParam();
  BackendPtr backend = Make(c);
  ASSERT_NE(backend, nullptr);
  std::vector<int64_t> lengths = {std::max<int64_t>(1, s.length / 3), s.length,
                                  std::max<int64_t>(1, s.length / 2 + 7)};
  std::vector<std::unique_ptr<RandomAttention>> requests;
  std::vector<std::unique_ptr<AttentionState>> states;
  for (int64_t len : lengths) {
    requests.push_back(std::make_unique<RandomAttention>(s.hq, s.hkv, s.dim, len - 1, 1, len,
                                                         s.page_tokens, FreshSeed()));
    states.push_back(backend->CreateState(s.hq, s.hkv, s.dim));
    requests.back()->problem.state = states.back().get();
    requests.back()->problem.phase = AttentionPhase::kDecode;
    requests.back()->problem.request_id = requests.size();
  }
  for (int round = 0; round < 2; ++round) {
    for (auto& request : requests) CheckAgainstReference(c, *backend, *request);
  }
}

// A rule that holds in one phase only; the other phase is data-dependent.
ExpectedRule InPhase(AttentionPhase phase, ExpectedRule rule) {
  return [=](AttentionPhase ph, int64_t end, int64_t p, int64_t j) -> std::optional<bool> {
    if (ph != phase) return std::nullopt;
    return rule(ph, end, p, j);
  };
}

const BackendCase kBackends[] = {
    {"full", "full", {}, FullRule()},
    {"streaming_b128",
     "streaming",
     {{"sink_tokens", int64_t{100}}, {"window_tokens", int64_t{200}}, {"block_size", int64_t{128}}},
     StreamingRuleOf(100, 200, 128)},
    {"streaming_b16",
     "streaming",
     {{"sink_tokens", int64_t{20}}, {"window_tokens", int64_t{70}}, {"block_size", int64_t{16}}},
     StreamingRuleOf(20, 70, 16)},
    {"streaming_token",
     "streaming",
     {{"sink_tokens", int64_t{4}}, {"window_tokens", int64_t{50}}, {"block_size", int64_t{1}}},
     StreamingRuleOf(4, 50, 1)},
    // XAttention's prefill selection reads the data; its decode is dense causal.
    {"xattention",
     "xattention",
     {{"block_size", int64_t{32}}, {"stride", int64_t{4}}, {"threshold", 0.8}},
     InPhase(AttentionPhase::kDecode, FullRule()),
     /*decode_matches_prefill=*/false},
    {"xattention_keep_all",
     "xattention",
     {{"block_size", int64_t{32}}, {"stride", int64_t{4}}, {"threshold", 1.0}},
     FullRule()},
    {"xattention_sinks",
     "xattention",
     {{"block_size", int64_t{16}},
      {"stride", int64_t{8}},
      {"threshold", 0.5},
      {"sink_blocks", int64_t{2}}},
     InPhase(AttentionPhase::kDecode, FullRule()),
     /*decode_matches_prefill=*/false},
    // Quest prefills densely; its decode page choice reads the keys.
    {"quest",
     "quest",
     {{"page_size", int64_t{16}}, {"budget_tokens", int64_t{96}}, {"recent_pages", int64_t{2}}},
     InPhase(AttentionPhase::kPrefill, FullRule()),
     /*decode_matches_prefill=*/false},
    {"quest_odd_pages",
     "quest",
     {{"page_size", int64_t{7}}, {"budget_tokens", int64_t{50}}, {"sink_pages", int64_t{0}}},
     InPhase(AttentionPhase::kPrefill, FullRule()),
     /*decode_matches_prefill=*/false},
    // Triangle: sink + window, except the last last_n queries of a prefill call read densely;
    // decode is dense.
    {"triangle",
     "triangle",
     {{"sink_tokens", int64_t{16}},
      {"window_tokens", int64_t{48}},
      {"block_size", int64_t{16}},
      {"last_n", int64_t{40}}},
     [](AttentionPhase phase, int64_t end, int64_t p, int64_t j) -> std::optional<bool> {
       if (phase == AttentionPhase::kDecode || p >= end - 40) return Causal(p, j);
       return SinkWindow(16, 48, 16, p, j);
     }},
};

const Shape kShapes[] = {
    {1, 1, 64, 1, 16},   {4, 4, 64, 63, 16},   {8, 4, 128, 200, 48}, {8, 2, 96, 129, 100},
    {8, 1, 80, 300, 64}, {2, 2, 64, 700, 256}, {1, 1, 64, 1300, 96},
};

// Every plugin declares each parameter fully, and the core's config validation enforces the
// declared ranges and choices before a plugin sees a value.
TEST(AttentionPlugins, DeclareAndValidateEveryParameter) {
  for (const char* plugin : {"full", "streaming", "xattention", "quest", "triangle"}) {
    SCOPED_TRACE(plugin);
    absl::StatusOr<std::vector<ParamSpec>> specs = BackendParams(plugin);
    ASSERT_TRUE(specs.ok()) << specs.status();
    for (const ParamSpec& spec : *specs) {
      EXPECT_FALSE(spec.description.empty()) << spec.name;
      EXPECT_TRUE(spec.default_value.has_value()) << spec.name;
      if (spec.type == ParamType::kInt || spec.type == ParamType::kFloat) {
        EXPECT_TRUE(spec.min_value.has_value() && spec.max_value.has_value()) << spec.name;
        absl::StatusOr<BackendPtr> below = MakeBackend(
            plugin, {{spec.name, spec.type == ParamType::kInt
                                     ? ParamValue(static_cast<int64_t>(*spec.min_value - 1))
                                     : ParamValue(*spec.min_value - 1.0)}});
        ASSERT_FALSE(below.ok()) << spec.name;
        EXPECT_NE(below.status().message().find(spec.name), std::string::npos) << below.status();
      }
      if (spec.type == ParamType::kString && !spec.choices.empty()) {
        EXPECT_FALSE(MakeBackend(plugin, {{spec.name, std::string("no-such-choice")}}).ok());
      }
    }
    absl::StatusOr<BackendPtr> defaults = MakeBackend(plugin, {});
    ASSERT_TRUE(defaults.ok()) << defaults.status();
    EXPECT_TRUE((*defaults)->capabilities().prefill);
    EXPECT_TRUE((*defaults)->capabilities().decode);
    EXPECT_FALSE(MakeBackend(plugin, {{"no_such_parameter", int64_t{1}}}).ok());
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, ConformanceTest,
                         ::testing::Combine(::testing::ValuesIn(kBackends),
                                            ::testing::ValuesIn(kShapes)),
                         ParamName);

}  // namespace
}  // namespace fluxattn::testing
