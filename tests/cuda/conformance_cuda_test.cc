// The attention backends on CUDA in bf16 (the tensor-core kernels) and in f32 (the float32
// kernel), through the engine's layer runner (the path every model layer takes: new keys
// appended through the page tables, one launch per layer batch), against the double-precision
// oracle of each strategy's published rule on the same inputs (bf16-rounded for bf16). The expected
// pairs are written from the rule and its parameters, never from the plugin's layout code; each
// layout must list exactly those pairs, every query must read its own position, and the output must
// match the oracle. Batches mix lengths (1 to 1300 tokens), prompts continued after earlier tokens,
// decode rows of different lengths, and sequences of different backends sharing one launch. Pages
// are handed out in shuffled order. Skips without a GPU; tools/device-test.sh fails when it skipped
// there.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "../attention/attention_test_util.h"
#include "../attention/backend_factory.h"
#include "absl/strings/str_cat.h"
#include "engine/cuda_layer_runner.h"
#include "fluxattn/attention/layout_builder.h"
#include "fluxattn/device.h"
#include "fluxattn/kv_pool.h"
#include "fluxattn/status.h"
#include "fluxattn/tensor.h"

namespace fluxattn::testing {
namespace {

// Whether the query at absolute position p reads key j, in a call whose queries end at
// chunk_end (DESIGN.md's rules, written out here).
using Rule = std::function<bool(AttentionPhase phase, int64_t chunk_end, int64_t p, int64_t j)>;

bool Causal(int64_t p, int64_t j) { return j <= p; }
bool SinkWindow(int64_t sink, int64_t window, int64_t b, int64_t p, int64_t j) {
  const int64_t sink_blocks = (sink + b - 1) / b, window_blocks = (window + b - 1) / b;
  return j <= p && (j / b < sink_blocks || p / b - j / b < window_blocks);
}

struct Strategy {
  std::string label;
  std::string plugin;
  std::map<std::string, ParamValue> params;
  Rule rule;
};

// Block sizes are multiples of 64 (the CUDA kernels' tile); sink and window are not aligned to
// them.
const Strategy kStrategies[] = {
    {"full",
     "full",
     {},
     [](AttentionPhase, int64_t, int64_t p, int64_t j) { return Causal(p, j); }},
    {"streaming_b128",
     "streaming",
     {{"sink_tokens", int64_t{100}}, {"window_tokens", int64_t{300}}, {"block_size", int64_t{128}}},
     [](AttentionPhase, int64_t, int64_t p, int64_t j) { return SinkWindow(100, 300, 128, p, j); }},
    {"streaming_b64",
     "streaming",
     {{"sink_tokens", int64_t{64}}, {"window_tokens", int64_t{130}}, {"block_size", int64_t{64}}},
     [](AttentionPhase, int64_t, int64_t p, int64_t j) { return SinkWindow(64, 130, 64, p, j); }},
    // Sink + window, except the last last_n queries of a prefill call read densely; decode is
    // dense.
    {"triangle",
     "triangle",
     {{"sink_tokens", int64_t{64}},
      {"window_tokens", int64_t{128}},
      {"block_size", int64_t{64}},
      {"last_n", int64_t{100}}},
     [](AttentionPhase phase, int64_t end, int64_t p, int64_t j) {
       if (phase == AttentionPhase::kDecode || p >= end - 100) return Causal(p, j);
       return SinkWindow(64, 128, 64, p, j);
     }},
};

const Strategy& StrategyNamed(const std::string& label) {
  for (const Strategy& s : kStrategies) {
    if (s.label == label) return s;
  }
  ADD_FAILURE() << "no strategy " << label;
  return kStrategies[0];
}

struct Shape {
  int hq, hkv, dim, page_tokens;
};

// One sequence of a layer batch: queries at [q_pos0, q_pos0 + rows) of a sequence whose keys
// [0, q_pos0) are already in the pool; the new rows' keys come with the batch.
struct Seq {
  std::string strategy;
  AttentionPhase phase;
  int64_t q_pos0;
  int64_t rows;
  int64_t length() const { return q_pos0 + rows; }
};

uint16_t Bf16(float f) { return FloatToBF16(f); }

// Device bytes of `values` as `dtype` (bf16 or f32); NaN stays NaN.
std::vector<uint8_t> Encode(const std::vector<float>& values, DType dtype) {
  std::vector<uint8_t> bytes(values.size() * DTypeSize(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(&bytes[4 * i], &values[i], 4);
    } else {
      const uint16_t b = std::isnan(values[i]) ? uint16_t{0x7fc0} : Bf16(values[i]);
      std::memcpy(&bytes[2 * i], &b, 2);
    }
  }
  return bytes;
}

std::vector<float> Decode(const std::vector<uint8_t>& bytes, DType dtype) {
  std::vector<float> values(bytes.size() / DTypeSize(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(&values[i], &bytes[4 * i], 4);
    } else {
      uint16_t b;
      std::memcpy(&b, &bytes[2 * i], 2);
      values[i] = BF16ToFloat(b);
    }
  }
  return values;
}

// Writes positions [0, count) of `rows` ([position][KV heads][head_dim]) into their slots of the
// pool pages `pages` at `dst`, and NaN everywhere else (a key read from a slot never written
// shows).
absl::Status FillPool(Device* device, const KvPoolOptions& po, const std::vector<int32_t>& pages,
                      const std::vector<float>& rows, int64_t count, void* dst) {
  const int64_t kv_row = int64_t{po.num_kv_heads} * po.head_dim, page = po.page_tokens;
  std::vector<float> image(po.capacity_pages * page * kv_row,
                           std::numeric_limits<float>::quiet_NaN());
  for (int64_t j = 0; j < count; ++j) {
    std::copy(&rows[j * kv_row], &rows[(j + 1) * kv_row],
              image.begin() + (int64_t{pages[j / page]} * page + j % page) * kv_row);
  }
  const std::vector<uint8_t> bytes = Encode(image, po.dtype);
  return device->Copy(dst, bytes.data(), bytes.size(), CopyKind::kHostToDevice,
                      device->default_stream());
}

// A pool of po.capacity_pages pages on `device`, every page handed out, in shuffled order.
absl::StatusOr<std::unique_ptr<KvPagePool>> ShuffledPool(Device* device, const KvPoolOptions& po,
                                                         std::mt19937_64& rng,
                                                         std::vector<int32_t>* pages) {
  FLUXATTN_ASSIGN_OR_RETURN(std::unique_ptr<KvPagePool> pool, KvPagePool::Create(device, po));
  FLUXATTN_RETURN_IF_ERROR(pool->Allocate(po.capacity_pages, pages));
  std::shuffle(pages->begin(), pages->end(), rng);
  return pool;
}

using Param = std::tuple<Shape, std::string, DType>;

class CudaConformance : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device here";
    absl::StatusOr<Device*> dev = CudaDevice(0);
    ASSERT_TRUE(dev.ok()) << dev.status();
    device_ = *dev;
  }

  // Runs `seqs` as one layer batch and compares every sequence with its rule's oracle.
  void RunBatch(const std::vector<Seq>& seqs, uint64_t seed) {
    const auto& [s, dense_prefill, dtype] = GetParam();
    SCOPED_TRACE(absl::StrCat("hq ", s.hq, " hkv ", s.hkv, " d ", s.dim, " page ", s.page_tokens,
                              ", ", DTypeName(dtype), ", dense prefill ", dense_prefill, ", seed ",
                              seed));
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    // Fresh values as the device will hold them (bf16-rounded for bf16).
    auto values = [&](size_t n) {
      std::vector<float> v(n);
      for (float& x : v) x = dtype == DType::kBF16 ? BF16ToFloat(Bf16(normal(rng))) : normal(rng);
      return v;
    };
    const int64_t q_row = int64_t{s.hq} * s.dim, kv_row = int64_t{s.hkv} * s.dim;
    // The pool: enough pages for every sequence plus spares, handed out shuffled.
    int64_t pages_needed = 0;
    for (const Seq& q : seqs) pages_needed += (q.length() + s.page_tokens - 1) / s.page_tokens;
    KvPoolOptions po;
    po.dtype = dtype;
    po.page_tokens = s.page_tokens;
    po.num_kv_heads = s.hkv;
    po.head_dim = s.dim;
    po.capacity_pages = pages_needed + 7;
    std::vector<int32_t> all_pages;
    absl::StatusOr<std::unique_ptr<KvPagePool>> pool = ShuffledPool(device_, po, rng, &all_pages);
    ASSERT_TRUE(pool.ok()) << pool.status();
    // Host image of the pool: NaN everywhere (a key read from a page never written shows), the
    // earlier keys of every sequence at their slots.
    const int64_t page_elems = int64_t{s.page_tokens} * kv_row;
    std::vector<float> k_image(po.capacity_pages * page_elems, nan);
    std::vector<float> v_image(k_image.size(), nan);
    struct Host {
      std::vector<int32_t> pages;
      std::vector<float> q, k, v;  // q of the rows, k/v of every position
    };
    std::vector<Host> host(seqs.size());
    std::vector<float> q_all, new_k, new_v;
    size_t next_page = 0;
    int64_t total_rows = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
      const Seq& q = seqs[i];
      Host& h = host[i];
      const int64_t n_pages = (q.length() + s.page_tokens - 1) / s.page_tokens;
      h.pages.assign(all_pages.begin() + next_page, all_pages.begin() + next_page + n_pages);
      next_page += n_pages;
      h.q = values(q.rows * q_row);
      h.k = values(q.length() * kv_row);
      h.v = values(q.length() * kv_row);
      q_all.insert(q_all.end(), h.q.begin(), h.q.end());
      for (int64_t pos = 0; pos < q.length(); ++pos) {
        const float* kr = &h.k[pos * kv_row];
        const float* vr = &h.v[pos * kv_row];
        if (pos < q.q_pos0) {
          const int64_t at =
              h.pages[pos / s.page_tokens] * page_elems + (pos % s.page_tokens) * kv_row;
          std::copy(kr, kr + kv_row, k_image.begin() + at);
          std::copy(vr, vr + kv_row, v_image.begin() + at);
        } else {
          new_k.insert(new_k.end(), kr, kr + kv_row);
          new_v.insert(new_v.end(), vr, vr + kv_row);
        }
      }
      total_rows += q.rows;
    }
    const KvPoolView pv = (*pool)->view();
    Stream* stream = device_->default_stream();
    const std::vector<uint8_t> k_bytes = Encode(k_image, dtype), v_bytes = Encode(v_image, dtype);
    ASSERT_TRUE(
        device_->Copy(pv.k.data, k_bytes.data(), k_bytes.size(), CopyKind::kHostToDevice, stream)
            .ok());
    ASSERT_TRUE(
        device_->Copy(pv.v.data, v_bytes.data(), v_bytes.size(), CopyKind::kHostToDevice, stream)
            .ok());
    // Device rows: queries, new keys and values, the output (poisoned with NaN).
    auto upload = [&](const std::vector<float>& host_values) -> void* {
      const std::vector<uint8_t> bytes = Encode(host_values, dtype);
      absl::StatusOr<void*> p = device_->Allocate(std::max<size_t>(bytes.size(), 4));
      EXPECT_TRUE(p.ok()) << p.status();
      if (!p.ok()) return nullptr;
      buffers_.push_back(*p);
      if (!bytes.empty()) {
        EXPECT_TRUE(
            device_->Copy(*p, bytes.data(), bytes.size(), CopyKind::kHostToDevice, stream).ok());
      }
      return *p;
    };
    void* d_q = upload(q_all);
    void* d_k = upload(new_k);
    void* d_v = upload(new_v);
    void* d_out = upload(std::vector<float>(q_all.size(), nan));
    ASSERT_TRUE(d_q && d_k && d_v && d_out);
    const int ord = device_->ordinal();
    // The problems, and each sequence's layout from its own backend.
    std::vector<AttentionProblem> problems(seqs.size());
    std::vector<BlockSparseLayout> layouts(seqs.size());
    std::vector<BackendPtr> backends;
    std::vector<std::unique_ptr<AttentionState>> states;
    const float scale = 1.0f / std::sqrt(static_cast<float>(s.dim));
    AttentionBatch batch;
    batch.num_q_heads = s.hq;
    batch.num_kv_heads = s.hkv;
    batch.head_dim = s.dim;
    batch.scale = scale;
    batch.device = DeviceType::kCuda;
    batch.dtype = dtype;
    batch.q = TensorView::Contiguous(d_q, dtype, DeviceType::kCuda, {total_rows, s.hq, s.dim}, ord);
    batch.out =
        TensorView::Contiguous(d_out, dtype, DeviceType::kCuda, {total_rows, s.hq, s.dim}, ord);
    batch.kv = pv;
    int64_t row = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
      const Seq& q = seqs[i];
      AttentionProblem& p = problems[i];
      p.num_q_heads = s.hq;
      p.num_kv_heads = s.hkv;
      p.head_dim = s.dim;
      p.scale = scale;
      p.phase = q.phase;
      p.q_pos0 = q.q_pos0;
      p.num_queries = q.rows;
      p.q_row0 = row;
      p.q = batch.q.Rows(row, q.rows);
      p.kv.num_kv_heads = s.hkv;
      p.kv.head_dim = s.dim;
      p.kv.page_tokens = s.page_tokens;
      p.kv.length = q.length();
      p.kv.dtype = dtype;
      p.kv.device = DeviceType::kCuda;
      p.kv.k_pool = pv.k.data;
      p.kv.v_pool = pv.v.data;
      p.kv.pages = host[i].pages.data();
      p.kv.num_pages = static_cast<int64_t>(host[i].pages.size());
      p.device = DeviceType::kCuda;
      p.dtype = dtype;
      p.request_id = i + 1;
      row += q.rows;
      const Strategy& st = StrategyNamed(q.strategy);
      absl::StatusOr<BackendPtr> made = MakeBackend(st.plugin, st.params);
      ASSERT_TRUE(made.ok()) << made.status();
      backends.push_back(std::move(*made));
      AttentionBackend& b = *backends.back();
      ProblemDesc desc;
      desc.device = DeviceType::kCuda;
      desc.dtype = dtype;
      desc.head_dim = s.dim;
      desc.num_q_heads = s.hq;
      desc.num_kv_heads = s.hkv;
      desc.phase = q.phase;
      const absl::Status supported = b.Supports(desc);
      ASSERT_TRUE(supported.ok()) << st.label << ": " << supported;
      states.push_back(b.CreateState(s.hq, s.hkv, s.dim));
      p.state = states.back().get();
      AttentionBatch one = batch;
      one.seqs = std::span<const AttentionProblem>(&p, 1);
      PlannedLayout plan;
      absl::Status planned = b.Plan(one, &plan);
      ASSERT_TRUE(planned.ok()) << st.label << ": " << planned;
      ASSERT_EQ(plan.layouts.size(), 1u) << st.label;
      layouts[i] = std::move(plan.layouts[0]);
      ExpectLayoutFollowsRule(st, p, layouts[i]);
    }
    batch.seqs = problems;
    absl::StatusOr<std::unique_ptr<CudaLayerRunner>> runner =
        CudaLayerRunner::Create(device_, dense_prefill);
    ASSERT_TRUE(runner.ok()) << runner.status();
    const TensorView k_view =
        TensorView::Contiguous(d_k, dtype, DeviceType::kCuda, {total_rows, s.hkv, s.dim}, ord);
    const TensorView v_view =
        TensorView::Contiguous(d_v, dtype, DeviceType::kCuda, {total_rows, s.hkv, s.dim}, ord);
    absl::Status ran = (*runner)->Run(batch, k_view, v_view, layouts);
    ASSERT_TRUE(ran.ok()) << ran;
    ASSERT_TRUE(device_->Synchronize().ok());
    std::vector<uint8_t> out_bytes(q_all.size() * DTypeSize(dtype));
    ASSERT_TRUE(
        device_->Copy(out_bytes.data(), d_out, out_bytes.size(), CopyKind::kDeviceToHost, stream)
            .ok());
    ASSERT_TRUE(device_->Synchronize().ok());
    const std::vector<float> out_values = Decode(out_bytes, dtype);
    for (size_t i = 0; i < seqs.size(); ++i) {
      const Seq& q = seqs[i];
      const Strategy& st = StrategyNamed(q.strategy);
      AttentionProblem ref = problems[i];
      const int64_t end = q.length();
      const std::vector<double> want = ReferenceAttention(
          ref, host[i].q.data(), host[i].k.data(), host[i].v.data(),
          [&](int64_t r, int, int64_t j) { return st.rule(q.phase, end, q.q_pos0 + r, j); });
      const std::vector<float> got(out_values.begin() + problems[i].q_row0 * q_row,
                                   out_values.begin() + (problems[i].q_row0 + q.rows) * q_row);
      // bf16: bf16 output (8 bits of mantissa) and bf16 probabilities in the P.V product, a few
      // parts in a thousand of the output's scale. f32: float32 rounding over up to 1300 keys.
      // A wrong key or a missing one moves it far more than either.
      const double tolerance = dtype == DType::kBF16 ? 2e-2 : 1e-4;
      EXPECT_LT(RelativeError(got, want), tolerance)
          << st.label << " sequence " << i << " (" << AttentionPhaseName(q.phase) << ", q_pos0 "
          << q.q_pos0 << ", rows " << q.rows << ")";
    }
  }

  // The layout lists exactly the rule's pairs, and every query reads its own position.
  static void ExpectLayoutFollowsRule(const Strategy& st, const AttentionProblem& p,
                                      const BlockSparseLayout& layout) {
    ASSERT_TRUE(ValidateLayout(layout, p.num_kv_heads).ok()) << st.label;
    ASSERT_EQ(layout.q_pos0, p.q_pos0);
    ASSERT_EQ(layout.num_queries, p.num_queries);
    ASSERT_EQ(layout.kv_length, p.kv.length);
    const int64_t len = p.kv.length, end = p.q_pos0 + p.num_queries;
    for (int h = 0; h < layout.num_layout_heads; ++h) {
      const std::vector<uint8_t> mask = ExpandLayoutToDenseMask(layout, h);
      for (int64_t r = 0; r < p.num_queries; ++r) {
        const int64_t pos = p.q_pos0 + r;
        ASSERT_NE(mask[r * len + pos], 0)
            << st.label << ": the query at " << pos << " does not read its own position";
        for (int64_t j = 0; j < len; ++j) {
          ASSERT_EQ(mask[r * len + j] != 0, st.rule(p.phase, end, pos, j))
              << st.label << ", layout head " << h << ", query at " << pos << ", key " << j << " ("
              << AttentionPhaseName(p.phase) << "): the layout disagrees with the rule";
        }
      }
    }
  }

  void TearDown() override {
    for (void* p : buffers_) device_->Free(p);
  }

  Device* device_ = nullptr;
  std::vector<void*> buffers_;
};

// Fresh prompts of awkward lengths, one strategy per launch.
TEST_P(CudaConformance, PrefillOfEveryStrategy) {
  for (const Strategy& st : kStrategies) {
    SCOPED_TRACE(st.label);
    RunBatch({{st.label, AttentionPhase::kPrefill, 0, 1},
              {st.label, AttentionPhase::kPrefill, 0, 200},
              {st.label, AttentionPhase::kPrefill, 0, 700}},
             FreshSeed());
  }
}

// Prompts continued after earlier tokens (chunked prefill): the earlier keys come from the pool.
TEST_P(CudaConformance, ChunkedPrefillReadsEarlierKeysFromThePool) {
  for (const Strategy& st : kStrategies) {
    SCOPED_TRACE(st.label);
    RunBatch({{st.label, AttentionPhase::kPrefill, 333, 150},
              {st.label, AttentionPhase::kPrefill, 1000, 300},
              {st.label, AttentionPhase::kPrefill, 64, 1}},
             FreshSeed());
  }
}

// Decode rows of different lengths in one launch.
TEST_P(CudaConformance, DecodeOfEveryStrategy) {
  for (const Strategy& st : kStrategies) {
    SCOPED_TRACE(st.label);
    RunBatch({{st.label, AttentionPhase::kDecode, 0, 1},
              {st.label, AttentionPhase::kDecode, 299, 1},
              {st.label, AttentionPhase::kDecode, 1299, 1},
              {st.label, AttentionPhase::kDecode, 127, 1}},
             FreshSeed());
  }
}

// Sequences of different strategies in one launch (a layer where requests took different
// routing decisions), in prefill and in decode.
TEST_P(CudaConformance, MixedDecisionsShareOneLaunch) {
  RunBatch({{"full", AttentionPhase::kPrefill, 0, 260},
            {"streaming_b128", AttentionPhase::kPrefill, 0, 900},
            {"full", AttentionPhase::kPrefill, 130, 70}},
           FreshSeed());
  RunBatch({{"streaming_b64", AttentionPhase::kPrefill, 0, 500},
            {"triangle", AttentionPhase::kPrefill, 0, 333},
            {"full", AttentionPhase::kPrefill, 0, 64}},
           FreshSeed());
  RunBatch({{"full", AttentionPhase::kDecode, 1000, 1},
            {"streaming_b128", AttentionPhase::kDecode, 1300, 1},
            {"streaming_b128", AttentionPhase::kDecode, 5, 1},
            {"full", AttentionPhase::kDecode, 77, 1}},
           FreshSeed());
}

const Shape kShapes[] = {
    {32, 8, 128, 128},  // Llama 3 / Qwen3 attention
    {8, 8, 64, 64},     // no GQA, head dim 64
    {16, 2, 128, 16},   // GQA 8, small pages
    {4, 1, 64, 32},     // one KV head
};

std::string CaseName(const ::testing::TestParamInfo<Param>& info) {
  const Shape& s = std::get<0>(info.param);
  return absl::StrCat("hq", s.hq, "_hkv", s.hkv, "_d", s.dim, "_page", s.page_tokens, "_",
                      std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(Bf16, CudaConformance,
                         ::testing::Combine(::testing::ValuesIn(kShapes),
                                            ::testing::Values("fluxattn", "auto"),
                                            ::testing::Values(DType::kBF16)),
                         CaseName);
// f32 runs on the float32 kernel whatever dense_prefill says (cuDNN's SDPA is bf16 here).
INSTANTIATE_TEST_SUITE_P(F32, CudaConformance,
                         ::testing::Combine(::testing::ValuesIn(kShapes), ::testing::Values("auto"),
                                            ::testing::Values(DType::kF32)),
                         CaseName);

// quest on CUDA: the decode layout lists, per KV head, the sink page, the recent page and the
// pages with the highest Quest bound (sum_d max(q_d min_d, q_d max_d) over the page's keys, the
// largest over the head's query heads), computed here in double from the keys as the pool holds
// them; the bounds carry over from one step to the next (the second step folds only the keys
// written since, starting mid-page), and the attention over the chosen pages matches the oracle.
// Selection pages of 64 tokens are whole key tiles; pages of 16 are bits of the tiles' masks. On
// CUDA quest needs bf16 and pages that divide or are a multiple of 64, and says so otherwise.
TEST(CudaQuest, DecodeReadsTheTopPagesByTheirBound) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device here";
  absl::StatusOr<Device*> dev = CudaDevice(0);
  ASSERT_TRUE(dev.ok()) << dev.status();
  Device* device = *dev;
  Stream* stream = device->default_stream();
  // KV pool pages of 64 tokens; selection pages of 64 (whole tiles) and of 16 (mask bits).
  const int hq = 8, hkv = 2, d = 128, page = 64, group = hq / hkv;
  const int64_t budget_pages = 8, max_len = 1500;
  ProblemDesc desc;
  desc.device = DeviceType::kCuda;
  desc.dtype = DType::kBF16;
  desc.head_dim = d;
  desc.num_q_heads = hq;
  desc.num_kv_heads = hkv;
  desc.phase = AttentionPhase::kDecode;
  {
    auto odd = MakeBackend("quest", {{"page_size", int64_t{48}}});
    ASSERT_TRUE(odd.ok()) << odd.status();
    const absl::Status refused = (*odd)->Supports(desc);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.message().find("divide or be a multiple of 64"), std::string::npos)
        << refused;
    ProblemDesc f32 = desc;
    f32.dtype = DType::kF32;
    EXPECT_FALSE((*odd)->Supports(f32).ok());
  }
  std::mt19937_64 rng(FreshSeed());
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t kv_row = int64_t{hkv} * d;
  // Keys with a per-page offset, so that pages differ in their bounds.
  std::vector<float> k(max_len * kv_row), v(max_len * kv_row);
  for (int64_t pos = 0; pos < max_len; ++pos) {
    const float shift = 0.5f * normal(rng);
    for (int64_t i = 0; i < kv_row; ++i) {
      k[pos * kv_row + i] = BF16ToFloat(Bf16(normal(rng) + (pos / page % 3 == 0 ? shift : 0.f)));
      v[pos * kv_row + i] = BF16ToFloat(Bf16(normal(rng)));
    }
  }
  KvPoolOptions po;
  po.dtype = DType::kBF16;
  po.page_tokens = page;
  po.num_kv_heads = hkv;
  po.head_dim = d;
  po.capacity_pages = (max_len + page - 1) / page + 5;
  std::vector<int32_t> pages;
  auto pool = ShuffledPool(device, po, rng, &pages);
  ASSERT_TRUE(pool.ok()) << pool.status();
  const KvPoolView pv = (*pool)->view();
  auto runner = CudaLayerRunner::Create(device);
  ASSERT_TRUE(runner.ok()) << runner.status();
  std::vector<void*> owned;
  auto upload = [&](const std::vector<float>& values) {
    const std::vector<uint8_t> bytes = Encode(values, DType::kBF16);
    void* p = *device->Allocate(std::max<size_t>(bytes.size(), 4));
    owned.push_back(p);
    EXPECT_TRUE(device->Copy(p, bytes.data(), bytes.size(), CopyKind::kHostToDevice, stream).ok());
    return p;
  };
  int checked_sets = 0;
  for (int sel : {64, 16}) {
    auto made = MakeBackend("quest", {{"page_size", int64_t{sel}},
                                      {"budget_tokens", int64_t{budget_pages * sel}},
                                      {"sink_pages", int64_t{1}},
                                      {"recent_pages", int64_t{1}}});
    ASSERT_TRUE(made.ok()) << made.status();
    AttentionBackend& quest = **made;
    ASSERT_TRUE(quest.Supports(desc).ok()) << quest.Supports(desc);
    std::unique_ptr<AttentionState> state = quest.CreateState(hq, hkv, d);
    for (int64_t len : {int64_t{900}, max_len}) {
      SCOPED_TRACE(absl::StrCat("selection pages of ", sel, ", length ", len));
      const int64_t pos = len - 1;  // the decode query; its key comes with the batch
      // The pool: every earlier key and value at its slot, NaN elsewhere.
      ASSERT_TRUE(FillPool(device, po, pages, k, pos, pv.k.data).ok());
      ASSERT_TRUE(FillPool(device, po, pages, v, pos, pv.v.data).ok());
      std::vector<float> q(hq * d);
      for (float& x : q) x = BF16ToFloat(Bf16(normal(rng)));
      void* d_q = upload(q);
      void* d_out = upload(std::vector<float>(q.size(), std::numeric_limits<float>::quiet_NaN()));
      void* d_k = upload(std::vector<float>(&k[pos * kv_row], &k[(pos + 1) * kv_row]));
      void* d_v = upload(std::vector<float>(&v[pos * kv_row], &v[(pos + 1) * kv_row]));
      const int ord = device->ordinal();
      AttentionBatch batch;
      batch.num_q_heads = hq;
      batch.num_kv_heads = hkv;
      batch.head_dim = d;
      batch.scale = 1.0f / std::sqrt(static_cast<float>(d));
      batch.device = DeviceType::kCuda;
      batch.dtype = DType::kBF16;
      batch.q = TensorView::Contiguous(d_q, DType::kBF16, DeviceType::kCuda, {1, hq, d}, ord);
      batch.out = TensorView::Contiguous(d_out, DType::kBF16, DeviceType::kCuda, {1, hq, d}, ord);
      batch.kv = pv;
      AttentionProblem p;
      p.num_q_heads = hq;
      p.num_kv_heads = hkv;
      p.head_dim = d;
      p.scale = batch.scale;
      p.phase = AttentionPhase::kDecode;
      p.q_pos0 = pos;
      p.num_queries = 1;
      p.q = batch.q;
      p.kv.num_kv_heads = hkv;
      p.kv.head_dim = d;
      p.kv.page_tokens = page;
      p.kv.length = len;
      p.kv.dtype = DType::kBF16;
      p.kv.device = DeviceType::kCuda;
      p.kv.k_pool = pv.k.data;
      p.kv.v_pool = pv.v.data;
      p.kv.pages = pages.data();
      p.kv.num_pages = (len + page - 1) / page;
      p.device = DeviceType::kCuda;
      p.dtype = DType::kBF16;
      p.state = state.get();
      batch.seqs = std::span<const AttentionProblem>(&p, 1);
      PlannedLayout plan;
      ASSERT_TRUE(quest.Plan(batch, &plan).ok());
      ASSERT_EQ(plan.layouts.size(), 1u);
      const BlockSparseLayout& layout = plan.layouts[0];
      ASSERT_TRUE(ValidateLayout(layout, hkv).ok());
      ASSERT_EQ(layout.num_layout_heads, hkv);
      ASSERT_EQ(layout.kv_block_tokens % 64, 0);
      // The oracle's choice per KV head.
      const int64_t n_pages = (len + sel - 1) / sel;
      std::vector<std::set<int32_t>> want(hkv);
      for (int h = 0; h < hkv; ++h) {
        std::vector<std::pair<double, int32_t>> scored;
        for (int32_t b = 1; b < n_pages - 1; ++b) {
          double best = -INFINITY;
          for (int g = 0; g < group; ++g) {
            const float* qg = &q[(h * group + g) * d];
            double bound = 0;
            for (int i = 0; i < d; ++i) {
              double lo = INFINITY, hi = -INFINITY;
              for (int64_t j = int64_t{b} * sel; j < std::min<int64_t>((b + 1) * sel, pos); ++j) {
                lo = std::min<double>(lo, k[j * kv_row + h * d + i]);
                hi = std::max<double>(hi, k[j * kv_row + h * d + i]);
              }
              bound += std::max(qg[i] * lo, qg[i] * hi);
            }
            best = std::max(best, bound);
          }
          scored.emplace_back(best, b);
        }
        std::sort(scored.begin(), scored.end(), [](const auto& x, const auto& y) {
          return x.first > y.first || (x.first == y.first && x.second < y.second);
        });
        const size_t take = budget_pages - 2;
        want[h] = {0, static_cast<int32_t>(n_pages - 1)};
        for (size_t i = 0; i < take; ++i) want[h].insert(scored[i].second);
        // A near-tie at the cut may go either way in float32.
        const double gap = scored[take - 1].first - scored[take].first;
        // The selection pages the layout's decode row reads (whole tiles or mask bits).
        const std::vector<uint8_t> dense = ExpandLayoutToDenseMask(layout, h);
        std::set<int32_t> got;
        for (int64_t j = 0; j < len; ++j) {
          if (dense[j] != 0) got.insert(static_cast<int32_t>(j / sel));
        }
        EXPECT_EQ(got.size(), static_cast<size_t>(budget_pages)) << "KV head " << h;
        if (gap > 1e-3 * std::abs(scored[take].first)) {
          EXPECT_EQ(got, want[h]) << "KV head " << h;
          ++checked_sets;
        } else {
          want[h] = got;  // the oracle below then reads the pages chosen
        }
      }
      const TensorView k_view =
          TensorView::Contiguous(d_k, DType::kBF16, DeviceType::kCuda, {1, hkv, d}, ord);
      const TensorView v_view =
          TensorView::Contiguous(d_v, DType::kBF16, DeviceType::kCuda, {1, hkv, d}, ord);
      ASSERT_TRUE((*runner)->Run(batch, k_view, v_view, plan.layouts).ok());
      std::vector<uint8_t> out_bytes(q.size() * 2);
      ASSERT_TRUE(
          device->Copy(out_bytes.data(), d_out, out_bytes.size(), CopyKind::kDeviceToHost, stream)
              .ok());
      ASSERT_TRUE(stream->Synchronize().ok());
      const std::vector<double> ref = ReferenceAttention(
          p, q.data(), k.data(), v.data(),
          [&](int64_t, int qh, int64_t j) { return want[qh / group].count(j / sel) != 0; });
      EXPECT_LT(RelativeError(Decode(out_bytes, DType::kBF16), ref), 2e-2);
    }
  }
  EXPECT_GT(checked_sets, 0);
  for (void* p : owned) device->Free(p);
}

// XAttention prefill on CUDA: the antidiagonal block scores and the choice of blocks come from
// the device, and each query block of each KV head keeps its sink and diagonal blocks, then
// blocks in decreasing score until their share of the row's mass reaches the threshold. The oracle
// scores every block in double from the strided rule (DESIGN.md) over the same bf16- or f32-valued
// inputs and picks the blocks by that rule; where the choice sits within a part in a thousand of
// the threshold or of a tie, it may go either way and only the output is compared. Data with a
// planted direction makes a quarter of the key blocks stand out, so that rows are sparse. Earlier
// keys are read from shuffled pool pages, new keys from the batch; pool slots never written hold
// NaN. On CUDA the block size must be a multiple of 64, and it says so otherwise.
TEST(CudaXAttention, PrefillKeepsTheBlocksOfTheScoreMass) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device here";
  absl::StatusOr<Device*> dev = CudaDevice(0);
  ASSERT_TRUE(dev.ok()) << dev.status();
  Device* device = *dev;
  Stream* stream = device->default_stream();
  ProblemDesc desc;
  desc.device = DeviceType::kCuda;
  desc.dtype = DType::kBF16;
  desc.head_dim = 128;
  desc.num_q_heads = 8;
  desc.num_kv_heads = 2;
  desc.phase = AttentionPhase::kPrefill;
  {
    auto odd = MakeBackend("xattention", {{"block_size", int64_t{96}}, {"stride", int64_t{8}}});
    ASSERT_TRUE(odd.ok()) << odd.status();
    const absl::Status refused = (*odd)->Supports(desc);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.message().find("multiple of 64"), std::string::npos) << refused;
    EXPECT_NE(refused.message().find("96"), std::string::npos) << refused;
  }
  struct Case {
    int hq, hkv, d, block, stride;
    int64_t q_pos0, n;
    DType dtype;
  };
  const Case cases[] = {
      {8, 2, 128, 128, 8, 0, 700, DType::kBF16},
      {8, 2, 128, 128, 8, 300, 500, DType::kF32},
      {8, 2, 64, 64, 16, 300, 500, DType::kBF16},
      {6, 2, 64, 64, 16, 0, 700, DType::kF32},
      // 47 KV blocks: the device's sort of a row over more than one warp's worth.
      {8, 2, 64, 64, 16, 1000, 2000, DType::kBF16},
  };
  const double threshold = 0.6;
  const int page = 64;
  std::mt19937_64 rng(FreshSeed());
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::bernoulli_distribution planted(0.25);
  int64_t checked_rows = 0, sparse_rows = 0, all_rows = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrCat("hq ", c.hq, " hkv ", c.hkv, " d ", c.d, " block ", c.block,
                              " stride ", c.stride, " q_pos0 ", c.q_pos0, " rows ", c.n, " ",
                              DTypeName(c.dtype)));
    const int group = c.hq / c.hkv, bsz = c.block, s = c.stride;
    const int64_t len = c.q_pos0 + c.n, q_row = int64_t{c.hq} * c.d, kv_row = int64_t{c.hkv} * c.d;
    auto as_stored = [&](float x) { return c.dtype == DType::kBF16 ? BF16ToFloat(Bf16(x)) : x; };
    // A planted unit direction: every query leans on it, and so do the keys of about a quarter
    // of the blocks (a logit of about 3 more per such key).
    std::vector<float> u(c.d);
    double norm = 0;
    for (float& x : u) {
      x = normal(rng);
      norm += double{x} * x;
    }
    for (float& x : u) x = static_cast<float>(x / std::sqrt(norm));
    const float a = std::sqrt(3.0f * std::sqrt(static_cast<float>(c.d)));
    const int64_t kv_blocks = (len + bsz - 1) / bsz;
    std::vector<uint8_t> loud(kv_blocks);
    for (auto& l : loud) l = planted(rng) ? 1 : 0;
    std::vector<float> q(c.n * q_row), k(len * kv_row), v(len * kv_row);
    for (int64_t i = 0; i < static_cast<int64_t>(q.size()); ++i) {
      q[i] = as_stored(normal(rng) + a * u[i % c.d]);
    }
    for (int64_t i = 0; i < static_cast<int64_t>(k.size()); ++i) {
      const bool lean = loud[i / kv_row / bsz] != 0;
      k[i] = as_stored(normal(rng) + (lean ? a * u[i % c.d] : 0.0f));
      v[i] = as_stored(normal(rng));
    }
    // The pool: the earlier keys at shuffled pages, NaN elsewhere; the new keys come with the
    // batch.
    KvPoolOptions po;
    po.dtype = c.dtype;
    po.page_tokens = page;
    po.num_kv_heads = c.hkv;
    po.head_dim = c.d;
    po.capacity_pages = (len + page - 1) / page + 5;
    std::vector<int32_t> pages;
    auto pool = ShuffledPool(device, po, rng, &pages);
    ASSERT_TRUE(pool.ok()) << pool.status();
    const KvPoolView pv = (*pool)->view();
    ASSERT_TRUE(FillPool(device, po, pages, k, c.q_pos0, pv.k.data).ok());
    ASSERT_TRUE(FillPool(device, po, pages, v, c.q_pos0, pv.v.data).ok());
    std::vector<void*> owned;
    auto upload = [&](const float* first, const float* last) {
      const std::vector<uint8_t> bytes = Encode(std::vector<float>(first, last), c.dtype);
      void* p = *device->Allocate(std::max<size_t>(bytes.size(), 4));
      owned.push_back(p);
      EXPECT_TRUE(
          device->Copy(p, bytes.data(), bytes.size(), CopyKind::kHostToDevice, stream).ok());
      return p;
    };
    const std::vector<float> poison(q.size(), std::numeric_limits<float>::quiet_NaN());
    void* d_q = upload(q.data(), q.data() + q.size());
    void* d_out = upload(poison.data(), poison.data() + poison.size());
    void* d_k = upload(&k[c.q_pos0 * kv_row], k.data() + k.size());
    void* d_v = upload(&v[c.q_pos0 * kv_row], v.data() + v.size());
    const int ord = device->ordinal();
    AttentionBatch batch;
    batch.num_q_heads = c.hq;
    batch.num_kv_heads = c.hkv;
    batch.head_dim = c.d;
    batch.scale = 1.0f / std::sqrt(static_cast<float>(c.d));
    batch.device = DeviceType::kCuda;
    batch.dtype = c.dtype;
    batch.q = TensorView::Contiguous(d_q, c.dtype, DeviceType::kCuda, {c.n, c.hq, c.d}, ord);
    batch.out = TensorView::Contiguous(d_out, c.dtype, DeviceType::kCuda, {c.n, c.hq, c.d}, ord);
    batch.kv = pv;
    const TensorView k_view =
        TensorView::Contiguous(d_k, c.dtype, DeviceType::kCuda, {c.n, c.hkv, c.d}, ord);
    const TensorView v_view =
        TensorView::Contiguous(d_v, c.dtype, DeviceType::kCuda, {c.n, c.hkv, c.d}, ord);
    AttentionProblem p;
    p.num_q_heads = c.hq;
    p.num_kv_heads = c.hkv;
    p.head_dim = c.d;
    p.scale = batch.scale;
    p.phase = AttentionPhase::kPrefill;
    p.q_pos0 = c.q_pos0;
    p.num_queries = c.n;
    p.q = batch.q;
    p.k_new = k_view;
    p.v_new = v_view;
    p.kv.num_kv_heads = c.hkv;
    p.kv.head_dim = c.d;
    p.kv.page_tokens = page;
    p.kv.length = len;
    p.kv.dtype = c.dtype;
    p.kv.device = DeviceType::kCuda;
    p.kv.k_pool = pv.k.data;
    p.kv.v_pool = pv.v.data;
    p.kv.pages = pages.data();
    p.kv.num_pages = (len + page - 1) / page;
    p.device = DeviceType::kCuda;
    p.dtype = c.dtype;
    auto made = MakeBackend("xattention", {{"block_size", int64_t{bsz}},
                                           {"stride", int64_t{s}},
                                           {"threshold", threshold},
                                           {"sink_blocks", int64_t{1}}});
    ASSERT_TRUE(made.ok()) << made.status();
    AttentionBackend& xattention = **made;
    ProblemDesc pd = desc;
    pd.dtype = c.dtype;
    pd.head_dim = c.d;
    pd.num_q_heads = c.hq;
    pd.num_kv_heads = c.hkv;
    ASSERT_TRUE(xattention.Supports(pd).ok()) << xattention.Supports(pd);
    std::unique_ptr<AttentionState> state = xattention.CreateState(c.hq, c.hkv, c.d);
    p.state = state.get();
    batch.seqs = std::span<const AttentionProblem>(&p, 1);
    PlannedLayout plan;
    const absl::Status planned = xattention.Plan(batch, &plan);
    ASSERT_TRUE(planned.ok()) << planned;
    ASSERT_EQ(plan.layouts.size(), 1u);
    const BlockSparseLayout& layout = plan.layouts[0];
    ASSERT_TRUE(ValidateLayout(layout, c.hkv).ok());
    ASSERT_EQ(layout.num_layout_heads, c.hkv);
    ASSERT_EQ(layout.kv_length, len);
    // kept[h][qb]: the KV blocks the query block reads (the oracle's, or the layout's on a
    // near-tie).
    const int64_t q_blocks = (c.n + bsz - 1) / bsz;
    std::vector<std::vector<std::vector<uint8_t>>> kept(c.hkv);
    for (int h = 0; h < c.hkv; ++h) {
      const std::vector<uint8_t> mask = ExpandLayoutToDenseMask(layout, h);
      kept[h].resize(q_blocks);
      for (int64_t qb = 0; qb < q_blocks; ++qb) {
        const int64_t r0 = qb * bsz, r1 = std::min<int64_t>(r0 + bsz, c.n);
        const int64_t p_first = c.q_pos0 + r0, p_last = c.q_pos0 + r1 - 1;
        const int64_t causal = p_last / bsz + 1;
        // The antidiagonal scores: strided row u0 pairs query u0+S-1-t with key v*S+t.
        std::vector<double> score(causal, 0.0);
        for (int g = 0; g < group; ++g) {
          const int qh = h * group + g;
          for (int64_t u0 = r0; u0 < r1; u0 += s) {
            const int64_t last = c.q_pos0 + std::min<int64_t>(u0 + s, r1) - 1;
            std::vector<double> logit;
            for (int64_t vg = 0; vg * s <= last; ++vg) {
              double sum = 0;
              for (int t = 0; t < s; ++t) {
                const int64_t r = u0 + s - 1 - t, j = vg * s + t;
                if (r >= r1 || j >= len) continue;
                for (int i = 0; i < c.d; ++i) {
                  sum += double{q[(r * c.hq + qh) * c.d + i]} * k[(j * c.hkv + h) * c.d + i];
                }
              }
              logit.push_back(sum * batch.scale / s);
            }
            const double mx = *std::max_element(logit.begin(), logit.end());
            double z = 0;
            for (double x : logit) z += std::exp(x - mx);
            for (size_t vg = 0; vg < logit.size(); ++vg) {
              score[vg * s / bsz] += std::exp(logit[vg] - mx) / z;
            }
          }
        }
        // The rule: sinks and the diagonal, then decreasing score until the mass reaches
        // threshold * total.
        double total = 0, mass = 0;
        for (double x : score) total += x;
        const double goal = threshold * total, margin = 1e-3 * total;
        std::vector<uint8_t> take(causal, 0);
        take[0] = 1;
        for (int64_t b = p_first / bsz; b < causal; ++b) take[b] = 1;
        std::vector<int64_t> order;
        for (int64_t b = 0; b < causal; ++b) {
          if (take[b]) {
            mass += score[b];
          } else {
            order.push_back(b);
          }
        }
        std::stable_sort(order.begin(), order.end(),
                         [&](int64_t x, int64_t y) { return score[x] > score[y]; });
        bool clear = std::abs(mass - goal) > margin;
        size_t next = 0;
        for (; next < order.size() && mass < goal; ++next) {
          take[order[next]] = 1;
          const double before = mass;
          mass += score[order[next]];
          clear = goal - before > margin && mass - goal > margin;
        }
        if (next > 0 && next < order.size()) {
          clear = clear && score[order[next - 1]] - score[order[next]] > margin;
        }
        // The layout's blocks for the query block, from its first row.
        std::vector<uint8_t> got(causal, 0);
        for (int64_t j = 0; j <= p_first; ++j) {
          if (mask[r0 * len + j] != 0) got[j / bsz] = 1;
        }
        for (int64_t b = p_first / bsz; b < causal; ++b) got[b] = 1;
        ++all_rows;
        if (clear) {
          ++checked_rows;
          if (std::count(take.begin(), take.end(), 1) < causal) ++sparse_rows;
        }
        kept[h][qb] = clear ? take : got;
        // Every row reads exactly its block set, causally (its own position included).
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t pos = c.q_pos0 + r;
          for (int64_t j = 0; j < len; ++j) {
            const bool want = j <= pos && kept[h][qb][j / bsz] != 0;
            ASSERT_EQ(mask[r * len + j] != 0, want)
                << "KV head " << h << ", query at " << pos << ", key " << j
                << (clear ? "" : " (near-tie)");
          }
        }
      }
    }
    auto runner = CudaLayerRunner::Create(device);
    ASSERT_TRUE(runner.ok()) << runner.status();
    ASSERT_TRUE((*runner)->Run(batch, k_view, v_view, plan.layouts).ok());
    std::vector<uint8_t> out_bytes(q.size() * DTypeSize(c.dtype));
    ASSERT_TRUE(
        device->Copy(out_bytes.data(), d_out, out_bytes.size(), CopyKind::kDeviceToHost, stream)
            .ok());
    ASSERT_TRUE(stream->Synchronize().ok());
    const std::vector<double> ref =
        ReferenceAttention(p, q.data(), k.data(), v.data(), [&](int64_t r, int qh, int64_t j) {
          return j <= c.q_pos0 + r && kept[qh / group][r / bsz][j / bsz] != 0;
        });
    EXPECT_LT(RelativeError(Decode(out_bytes, c.dtype), ref),
              c.dtype == DType::kBF16 ? 2e-2 : 1e-4);
    for (void* b : owned) device->Free(b);
  }
  EXPECT_GE(2 * checked_rows, all_rows) << "most choices sat on a near-tie";
  EXPECT_GT(sparse_rows, 0) << "no query block skipped a block";
}

// A batch whose dtypes disagree (f32 queries over a bf16 pool, or an f16 batch) is refused with
// one line naming what was expected and found, not run in the wrong precision.
TEST(CudaConformanceErrors, MismatchedDtypesAreRefused) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device here";
  absl::StatusOr<Device*> dev = CudaDevice(0);
  ASSERT_TRUE(dev.ok()) << dev.status();
  absl::StatusOr<std::unique_ptr<CudaLayerRunner>> runner = CudaLayerRunner::Create(*dev);
  ASSERT_TRUE(runner.ok()) << runner.status();
  AttentionProblem p;
  p.num_q_heads = 1;
  p.num_kv_heads = 1;
  p.head_dim = 64;
  p.num_queries = 1;
  std::vector<BlockSparseLayout> layouts(1);
  AttentionBatch batch;
  batch.device = DeviceType::kCuda;
  batch.seqs = std::span<const AttentionProblem>(&p, 1);
  batch.dtype = DType::kF32;
  batch.q.dtype = DType::kF32;
  batch.kv.k.dtype = DType::kBF16;
  batch.kv.v.dtype = DType::kBF16;
  absl::Status st = (*runner)->Run(batch, TensorView{}, TensorView{}, layouts);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("KV pool dtype"), std::string::npos) << st;
  EXPECT_NE(st.message().find("f32"), std::string::npos) << st;
  EXPECT_NE(st.message().find("bf16"), std::string::npos) << st;
  batch.dtype = DType::kF16;
  batch.q.dtype = DType::kF16;
  st = (*runner)->Run(batch, TensorView{}, TensorView{}, layouts);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("bf16 or f32"), std::string::npos) << st;
  EXPECT_NE(st.message().find("f16"), std::string::npos) << st;
}

}  // namespace
}  // namespace fluxattn::testing
