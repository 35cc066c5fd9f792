// The CUDA prefill and decode kernels against a naive double-precision reference. The allowed
// (query, key) pairs come from a predicate; the reference evaluates the predicate directly
// (plus causality and kv_len), while the kernel's CSR layout is built separately from it, so the
// oracle never reads the structures the kernel reads. Inputs are random bf16, pages shuffled in
// the pool, unused pool slots hold NaN, outputs are poisoned before each run.
#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "fluxattn/device.h"
#include "fluxattn/kernels/cuda_attention.h"
#if defined(FLUXATTN_WITH_CUDNN)
#include "cudnn/cudnn_attention.h"
#endif
#include "gtest/gtest.h"

namespace fluxattn::kernels::cuda {
namespace {

using testing::DeviceBuffer;
using testing::FromBf16;
using testing::RelativeL2;

struct SeqSpec {
  int32_t q_len;
  int32_t q_pos0;
  int32_t kv_len;
};

// Pairs allowed beyond causality and kv_len: (sequence, query row, layout head, key position).
using Predicate = std::function<bool(int, int, int, int)>;

struct Problem {
  int hq = 0, hkv = 0, d = 0, page_tokens = 0;
  std::vector<SeqSpec> seqs;
  std::vector<float> q;  // [sum_T][hq][d], bf16 values
  std::vector<uint16_t> q_bits;
  std::vector<std::vector<float>> k, v;  // per sequence [kv_len][hkv][d]
  std::vector<uint16_t> k_pool, v_pool;
  int32_t num_pages = 0;
  std::vector<int32_t> q_indptr, q_pos0, kv_len, page_indptr, page_indices;
  int64_t total_rows() const { return q_indptr.back(); }
};

Problem MakeProblem(const std::vector<SeqSpec>& seqs, int hq, int hkv, int d, int page_tokens,
                    uint32_t seed) {
  std::mt19937 rng(seed);
  Problem p;
  p.hq = hq;
  p.hkv = hkv;
  p.d = d;
  p.page_tokens = page_tokens;
  p.seqs = seqs;
  p.q_indptr = {0};
  for (const SeqSpec& s : seqs) {
    p.q_indptr.push_back(p.q_indptr.back() + s.q_len);
    p.q_pos0.push_back(s.q_pos0);
    p.kv_len.push_back(s.kv_len);
  }
  p.q_bits = testing::RandomBf16(static_cast<size_t>(p.total_rows()) * hq * d, rng, 2.f, &p.q);
  // Pages: every sequence's logical pages, shuffled over a pool with a few spare pages.
  int32_t needed = 0;
  for (const SeqSpec& s : seqs) needed += (s.kv_len + page_tokens - 1) / page_tokens;
  p.num_pages = needed + 3;
  std::vector<int32_t> physical(p.num_pages);
  std::iota(physical.begin(), physical.end(), 0);
  std::shuffle(physical.begin(), physical.end(), rng);
  const size_t row = static_cast<size_t>(hkv) * d;
  const size_t pool_elems = static_cast<size_t>(p.num_pages) * page_tokens * row;
  p.k_pool.assign(pool_elems, 0x7fc0);  // NaN where no key lives
  p.v_pool.assign(pool_elems, 0x7fc0);
  p.page_indptr = {0};
  int32_t next = 0;
  for (const SeqSpec& s : seqs) {
    const int32_t pages = (s.kv_len + page_tokens - 1) / page_tokens;
    for (int32_t i = 0; i < pages; ++i) p.page_indices.push_back(physical[next++]);
    p.page_indptr.push_back(static_cast<int32_t>(p.page_indices.size()));
    std::vector<float> k, v;
    std::vector<uint16_t> kb = testing::RandomBf16(s.kv_len * row, rng, 2.f, &k);
    std::vector<uint16_t> vb = testing::RandomBf16(s.kv_len * row, rng, 1.f, &v);
    const int32_t* pages_of = p.page_indices.data() + p.page_indptr[p.page_indptr.size() - 2];
    for (int32_t pos = 0; pos < s.kv_len; ++pos) {
      const size_t slot =
          static_cast<size_t>(pages_of[pos / page_tokens]) * page_tokens + pos % page_tokens;
      std::copy_n(kb.begin() + pos * row, row, p.k_pool.begin() + slot * row);
      std::copy_n(vb.begin() + pos * row, row, p.v_pool.begin() + slot * row);
    }
    p.k.push_back(std::move(k));
    p.v.push_back(std::move(v));
  }
  return p;
}

// out[row][hq][d] in double; query row r of sequence b at position q_pos (decode: kv_len - 1).
std::vector<double> Reference(const Problem& p, const Predicate& allowed, int num_layout_heads,
                              bool decode) {
  const int group = p.hq / p.hkv;
  const double scale = 1.0 / std::sqrt(static_cast<double>(p.d));
  std::vector<double> out(static_cast<size_t>(p.total_rows()) * p.hq * p.d, 0.0);
  std::vector<double> s, acc(p.d);
  for (size_t b = 0; b < p.seqs.size(); ++b) {
    const SeqSpec& seq = p.seqs[b];
    for (int r = 0; r < seq.q_len; ++r) {
      const int64_t qpos = decode ? seq.kv_len - 1 : static_cast<int64_t>(seq.q_pos0) + r;
      for (int h = 0; h < p.hq; ++h) {
        const int kvh = h / group;
        const int lh = num_layout_heads == 1 ? 0 : kvh;
        const float* qv = p.q.data() + ((p.q_indptr[b] + r) * p.hq + h) * p.d;
        s.assign(seq.kv_len, -INFINITY);
        double mx = -INFINITY;
        for (int j = 0; j < seq.kv_len; ++j) {
          if (j > qpos || (allowed && !allowed(static_cast<int>(b), r, lh, j))) continue;
          const float* kv = p.k[b].data() + (static_cast<size_t>(j) * p.hkv + kvh) * p.d;
          double dot = 0;
          for (int i = 0; i < p.d; ++i) dot += static_cast<double>(qv[i]) * kv[i];
          s[j] = dot * scale;
          mx = std::max(mx, s[j]);
        }
        if (mx == -INFINITY) continue;
        std::fill(acc.begin(), acc.end(), 0.0);
        double sum = 0;
        for (int j = 0; j < seq.kv_len; ++j) {
          if (s[j] == -INFINITY) continue;
          const double w = std::exp(s[j] - mx);
          sum += w;
          const float* vv = p.v[b].data() + (static_cast<size_t>(j) * p.hkv + kvh) * p.d;
          for (int i = 0; i < p.d; ++i) acc[i] += w * vv[i];
        }
        double* o = out.data() + ((p.q_indptr[b] + r) * p.hq + h) * p.d;
        for (int i = 0; i < p.d; ++i) o[i] = acc[i] / sum;
      }
    }
  }
  return out;
}

// The kernel's CSR, built by evaluating the predicate block by block.
struct HostLayout {
  int qbt, kvb, heads;
  std::vector<int32_t> seq_row_begin, row_indptr = {0}, kv_block, mask_index;
  std::vector<uint64_t> masks;
};

HostLayout BuildLayout(const Problem& p, const Predicate& allowed, int qbt, int kvb, int heads,
                       bool decode) {
  HostLayout l{qbt, kvb, heads};
  const int64_t words = (static_cast<int64_t>(qbt) * kvb + 63) / 64;
  for (size_t b = 0; b < p.seqs.size(); ++b) {
    const SeqSpec& s = p.seqs[b];
    l.seq_row_begin.push_back(static_cast<int32_t>(l.row_indptr.size()) - 1);
    const int q_blocks = (s.q_len + qbt - 1) / qbt;
    for (int qb = 0; qb < q_blocks; ++qb) {
      for (int h = 0; h < heads; ++h) {
        for (int kb = 0; kb * kvb < s.kv_len; ++kb) {
          bool any = false, all = true;
          std::vector<uint64_t> bits(words, 0);
          for (int rr = 0; rr < qbt; ++rr) {
            const int r = qb * qbt + rr;
            for (int kk = 0; kk < kvb; ++kk) {
              const int key = kb * kvb + kk;
              const bool ok = allowed(static_cast<int>(b), r, h, key);
              if (ok) bits[(rr * kvb + kk) / 64] |= uint64_t{1} << ((rr * kvb + kk) % 64);
              const int64_t qpos = decode ? s.kv_len - 1 : int64_t{s.q_pos0} + r;
              if (r < s.q_len && key < s.kv_len && key <= qpos) any |= ok;
              all &= ok;
            }
          }
          if (!any) continue;
          l.kv_block.push_back(kb);
          if (all) {
            l.mask_index.push_back(-1);
          } else {
            l.mask_index.push_back(static_cast<int32_t>(l.masks.size() / words));
            l.masks.insert(l.masks.end(), bits.begin(), bits.end());
          }
        }
        l.row_indptr.push_back(static_cast<int32_t>(l.kv_block.size()));
      }
    }
  }
  if (l.masks.empty()) l.masks.push_back(0);
  if (l.kv_block.empty()) {
    l.kv_block.push_back(0);
    l.mask_index.push_back(-1);
  }
  return l;
}

struct DeviceLayout {
  DeviceBuffer seq_row_begin, row_indptr, kv_block, mask_index, masks;
  BlockSparseLayoutView view;
  explicit DeviceLayout(const HostLayout& l)
      : seq_row_begin(l.seq_row_begin),
        row_indptr(l.row_indptr),
        kv_block(l.kv_block),
        mask_index(l.mask_index),
        masks(l.masks) {
    view.q_block_tokens = l.qbt;
    view.kv_block_tokens = l.kvb;
    view.num_layout_heads = l.heads;
    view.seq_row_begin = seq_row_begin.as<int32_t>();
    view.row_indptr = row_indptr.as<int32_t>();
    view.kv_block = kv_block.as<int32_t>();
    view.maybe_mask_index = mask_index.as<int32_t>();
    view.maybe_masks = masks.as<uint64_t>();
  }
};

struct DeviceProblem {
  DeviceBuffer q, out, k, v, q_indptr, q_pos0, kv_len, page_indptr, page_indices;
  SequenceBatch seqs;
  PagedKvPool kv;
  explicit DeviceProblem(const Problem& p)
      : q(p.q_bits),
        out(p.q_bits.size() * sizeof(uint16_t)),
        k(p.k_pool),
        v(p.v_pool),
        q_indptr(p.q_indptr),
        q_pos0(p.q_pos0),
        kv_len(p.kv_len),
        page_indptr(p.page_indptr),
        page_indices(p.page_indices) {
    seqs.num_seqs = static_cast<int32_t>(p.seqs.size());
    seqs.q_indptr = q_indptr.as<int32_t>();
    seqs.q_pos0 = q_pos0.as<int32_t>();
    seqs.kv_len = kv_len.as<int32_t>();
    seqs.page_indptr = page_indptr.as<int32_t>();
    seqs.page_indices = page_indices.as<int32_t>();
    kv.k = k.get();
    kv.v = v.get();
    kv.num_pages = p.num_pages;
    kv.page_tokens = p.page_tokens;
  }
};

AttentionShape ShapeOf(const Problem& p) {
  return {p.hq, p.hkv, p.d, static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.d)))};
}

void ExpectClose(const std::vector<uint16_t>& got_bits, const std::vector<double>& ref,
                 const char* what) {
  std::vector<float> got(got_bits.size());
  int bad = 0;
  double max_ref = 0;
  for (double r : ref) max_ref = std::max(max_ref, std::abs(r));
  for (size_t i = 0; i < got.size(); ++i) {
    got[i] = FromBf16(got_bits[i]);
    const double tol = 2e-2 * std::max(1.0, max_ref) + 2e-2 * std::abs(ref[i]);
    if (!std::isfinite(got[i]) || std::abs(got[i] - ref[i]) > tol) {
      if (++bad <= 5) {
        ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " expected " << ref[i];
      }
    }
  }
  EXPECT_EQ(bad, 0) << what;
  EXPECT_LT(RelativeL2(got, ref), 1e-2) << what;
}

void CheckPrefill(const Problem& p, const Predicate& allowed, const HostLayout* layout,
                  int tile_rows, const char* what) {
  DeviceProblem dp(p);
  std::unique_ptr<DeviceLayout> dl;
  PrefillArgs args;
  args.shape = ShapeOf(p);
  args.q = dp.q.get();
  args.out = dp.out.get();
  args.kv = dp.kv;
  args.seqs = dp.seqs;
  if (layout) {
    dl = std::make_unique<DeviceLayout>(*layout);
    args.maybe_layout = &dl->view;
  }
  DeviceBuffer ws(PrefillWorkspaceBytes(p.total_rows(), dp.seqs.num_seqs));
  absl::StatusOr<PrefillPlan> plan =
      PlanPrefill(args.shape, p.q_indptr, p.q_pos0, ws.get(), ws.bytes(), nullptr, tile_rows);
  ASSERT_TRUE(plan.ok()) << plan.status();
  dp.out.Poison();
  absl::Status st = RunPrefill(args, *plan, nullptr);
  ASSERT_TRUE(st.ok()) << st;
  CUDA_ASSERT(cudaDeviceSynchronize());
  ExpectClose(dp.out.Download<uint16_t>(),
              Reference(p, allowed, layout ? layout->heads : 1, /*decode=*/false), what);
}

void CheckDecode(const Problem& p, const Predicate& allowed, const HostLayout* layout,
                 int num_splits, const char* what, int tiles_per_split = 0) {
  DeviceProblem dp(p);
  std::unique_ptr<DeviceLayout> dl;
  DecodeArgs args;
  args.shape = ShapeOf(p);
  args.q = dp.q.get();
  args.out = dp.out.get();
  args.kv = dp.kv;
  args.seqs = dp.seqs;
  if (layout) {
    dl = std::make_unique<DeviceLayout>(*layout);
    args.maybe_layout = &dl->view;
  }
  const int32_t b = dp.seqs.num_seqs;
  DeviceBuffer ws(DecodeWorkspaceBytes(b, args.shape, num_splits));
  absl::StatusOr<DecodePlan> plan =
      PlanDecode(args.shape, b, num_splits, ws.get(), ws.bytes(), tiles_per_split);
  ASSERT_TRUE(plan.ok()) << plan.status();
  dp.out.Poison();
  ws.Poison();
  absl::Status st = RunDecode(args, *plan, nullptr);
  ASSERT_TRUE(st.ok()) << st;
  CUDA_ASSERT(cudaDeviceSynchronize());
  ExpectClose(dp.out.Download<uint16_t>(),
              Reference(p, allowed, layout ? layout->heads : 1, /*decode=*/true), what);
}

uint32_t Hash(uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  uint64_t z = (uint64_t{a} * 0x9E3779B1u) ^ (uint64_t{b} * 0x85EBCA77u) ^
               (uint64_t{c} * 0xC2B2AE3Du) ^ (uint64_t{d} * 0x27D4EB2Fu);
  z ^= z >> 29;
  z *= 0xBF58476D1CE4E5B9ull;
  z ^= z >> 32;
  return static_cast<uint32_t>(z);
}

// Blocks chosen at random (3 in 4), a third of the chosen ones with random element masks.
Predicate RandomBlocks(int qbt, int kvb, uint32_t salt) {
  return [=](int b, int r, int h, int key) {
    const uint32_t blk = Hash(b + salt, r / qbt, h, key / kvb);
    if (blk % 4 == 0) return false;
    if (blk % 3 != 0) return true;
    return Hash(r, key, h + 7 * salt, b) % 3 != 0;
  };
}

// Sink + window, exactly per element.
Predicate Streaming(const Problem& p, int sink, int window, bool decode) {
  std::vector<int32_t> pos0 = p.q_pos0, kv = p.kv_len;
  return [=](int b, int r, int, int key) {
    const int64_t qpos = decode ? kv[b] - 1 : int64_t{pos0[b]} + r;
    return key < sink || qpos - key < window;
  };
}

class CudaAttentionTest : public ::testing::Test {
 protected:
  void SetUp() override { FLUXATTN_SKIP_WITHOUT_GPU(); }
};

TEST_F(CudaAttentionTest, PrefillDenseMixedBatchHead128Gqa4) {
  const Problem p =
      MakeProblem({{1, 0, 1}, {77, 0, 77}, {200, 130, 330}, {129, 1000, 1129}, {64, 64, 100}}, 8, 2,
                  128, 16, 11);
  CheckPrefill(p, nullptr, nullptr, 0, "dense, 128-row tiles");
  CheckPrefill(p, nullptr, nullptr, 64, "dense, 64-row tiles");
}

TEST_F(CudaAttentionTest, PrefillDenseHead64Gqa1) {
  const Problem p = MakeProblem({{300, 0, 300}, {65, 17, 82}}, 3, 3, 64, 32, 12);
  CheckPrefill(p, nullptr, nullptr, 0, "dense head_dim 64");
}

TEST_F(CudaAttentionTest, PrefillRandomLayoutPerHeadGqa8) {
  const Problem p = MakeProblem({{257, 0, 257}, {100, 300, 400}}, 16, 2, 128, 64, 13);
  const Predicate allowed = RandomBlocks(128, 128, 1);
  const HostLayout layout = BuildLayout(p, allowed, 128, 128, 2, false);
  CheckPrefill(p, allowed, &layout, 128, "random layout, per KV head");
  const HostLayout layout64 = BuildLayout(p, RandomBlocks(64, 64, 2), 64, 64, 2, false);
  CheckPrefill(p, RandomBlocks(64, 64, 2), &layout64, 64, "random layout, 64 x 64 blocks");
}

TEST_F(CudaAttentionTest, PrefillStreamingLayoutSharedHeads) {
  const Problem p = MakeProblem({{500, 0, 500}, {90, 700, 790}}, 4, 1, 128, 128, 14);
  const Predicate allowed = Streaming(p, 16, 100, false);
  const HostLayout layout = BuildLayout(p, allowed, 64, 64, 1, false);
  CheckPrefill(p, allowed, &layout, 64, "streaming sink 16 window 100");
}

TEST_F(CudaAttentionTest, PrefillAllTrueLayoutMatchesDense) {
  const Problem p = MakeProblem({{150, 10, 160}, {33, 0, 33}}, 4, 2, 64, 16, 15);
  const Predicate all = [](int, int, int, int) { return true; };
  const HostLayout layout = BuildLayout(p, all, 64, 128, 1, false);
  CheckPrefill(p, all, &layout, 64, "all-true layout");
}

TEST_F(CudaAttentionTest, DecodeDenseMixedLengths) {
  std::vector<SeqSpec> specs;
  for (int kv : {1, 63, 64, 1000, 5000}) specs.push_back({1, kv - 1, kv});
  const Problem p = MakeProblem(specs, 32, 8, 128, 16, 21);
  CheckDecode(p, nullptr, nullptr, ChooseDecodeSplits(5, 8, 5000), "decode, chosen splits");
  CheckDecode(p, nullptr, nullptr, 1, "decode, one split");
  CheckDecode(p, nullptr, nullptr, 7, "decode, 7 splits");
}

TEST_F(CudaAttentionTest, DecodeHead64Gqa1AndGqa8) {
  std::vector<SeqSpec> specs = {{1, 332, 333}, {1, 2047, 2048}};
  const Problem a = MakeProblem(specs, 4, 4, 64, 32, 22);
  CheckDecode(a, nullptr, nullptr, 5, "decode head_dim 64 GQA 1");
  const Problem b = MakeProblem(specs, 16, 2, 64, 32, 23);
  CheckDecode(b, nullptr, nullptr, 3, "decode head_dim 64 GQA 8");
}

TEST_F(CudaAttentionTest, DecodeManyKvHeadsAndWideGroups) {
  const Problem p = MakeProblem({{1, 700, 701}, {1, 63, 64}}, 16, 16, 128, 32, 25);
  CheckDecode(p, nullptr, nullptr, 3, "decode 16 KV heads");
  // A GQA group of 32 query heads takes the lane-group kernel (more than one m16 tile).
  const Problem wide = MakeProblem({{1, 999, 1000}, {1, 4, 5}}, 32, 1, 128, 64, 26);
  CheckDecode(wide, nullptr, nullptr, 4, "decode GQA 32");
  const Problem wide64 = MakeProblem({{1, 299, 300}}, 64, 2, 64, 16, 27);
  CheckDecode(wide64, nullptr, nullptr, 2, "decode GQA 32 head_dim 64");
}

TEST_F(CudaAttentionTest, DecodeLayouts) {
  std::vector<SeqSpec> specs = {{1, 999, 1000}, {1, 129, 130}, {1, 4095, 4096}};
  const Problem p = MakeProblem(specs, 8, 2, 128, 64, 24);
  const Predicate random = RandomBlocks(128, 128, 3);
  const HostLayout rl = BuildLayout(p, random, 128, 128, 2, true);
  CheckDecode(p, random, &rl, 4, "decode random layout");
  const Predicate stream = Streaming(p, 64, 300, true);
  const HostLayout sl = BuildLayout(p, stream, 64, 64, 1, true);
  CheckDecode(p, stream, &sl, 6, "decode streaming layout");
}

// The keys each (sequence, KV head) of a decode batch reads, counted from the problem and the
// predicate's blocks (not from the layout the kernel reads): what BalanceDecodeSplits is given.
std::vector<int64_t> RowKeys(const Problem& p, const HostLayout* layout, const Predicate& allowed) {
  std::vector<int64_t> rows;
  for (size_t b = 0; b < p.seqs.size(); ++b) {
    for (int h = 0; h < p.hkv; ++h) {
      if (layout == nullptr) {
        rows.push_back(p.seqs[b].kv_len);
        continue;
      }
      const int lh = layout->heads == 1 ? 0 : h;
      int64_t blocks = 0;
      for (int kb = 0; kb * layout->kvb < p.seqs[b].kv_len; ++kb) {
        bool any = false;
        for (int key = kb * layout->kvb; key < std::min((kb + 1) * layout->kvb, p.seqs[b].kv_len);
             ++key) {
          any = any || allowed(static_cast<int>(b), 0, lh, key);
        }
        blocks += any ? 1 : 0;
      }
      rows.push_back(blocks * layout->kvb);
    }
  }
  return rows;
}

// A batch where some rows read their whole cache and others a few blocks: the balanced cut
// (given splits, more than the equal cut of the batch would take), a too-small tiles_per_split
// (raised on the device), and layouts shared or per KV head all match the oracle.
TEST_F(CudaAttentionTest, DecodeBalancedSplitsOverRowsOfDifferentWork) {
  std::vector<SeqSpec> specs;
  for (int kv : {6000, 130, 1, 4097, 64, 777, 65}) specs.push_back({1, kv - 1, kv});
  const Problem p = MakeProblem(specs, 16, 4, 128, 16, 41);
  const DecodeSplits dense = BalanceDecodeSplits(RowKeys(p, nullptr, nullptr), 7, 4);
  EXPECT_GT(dense.num_splits, ChooseDecodeSplits(7, 4, 6000));
  CheckDecode(p, nullptr, nullptr, dense.num_splits, "decode, balanced splits",
              dense.tiles_per_split);
  CheckDecode(p, nullptr, nullptr, 3, "decode, tiles_per_split below the equal cut", 1);
  CheckDecode(p, nullptr, nullptr, 40, "decode, 40 splits of 3 tiles", 3);
  const Predicate stream = Streaming(p, 64, 200, true);
  const HostLayout sl = BuildLayout(p, stream, 64, 64, 1, true);
  const DecodeSplits ss = BalanceDecodeSplits(RowKeys(p, &sl, stream), 7, 4);
  CheckDecode(p, stream, &sl, ss.num_splits, "decode streaming layout, balanced",
              ss.tiles_per_split);
  const Problem g = MakeProblem(specs, 8, 2, 64, 32, 42);
  const Predicate random = RandomBlocks(128, 128, 4);
  const HostLayout rl = BuildLayout(g, random, 128, 128, 2, true);
  const DecodeSplits rs = BalanceDecodeSplits(RowKeys(g, &rl, random), 7, 2);
  CheckDecode(g, random, &rl, rs.num_splits, "decode per-head random layout, balanced",
              rs.tiles_per_split);
}

TEST_F(CudaAttentionTest, AppendKvWritesThroughThePageTable) {
  const Problem p = MakeProblem({{5, 3, 8}, {40, 0, 40}, {17, 20, 37}}, 4, 2, 64, 16, 31);
  DeviceProblem dp(p);
  const size_t row = static_cast<size_t>(p.hkv) * p.d;
  std::mt19937 rng(5);
  std::vector<uint16_t> k_rows = testing::RandomBf16(p.total_rows() * row, rng, 1.f, nullptr);
  std::vector<uint16_t> v_rows = testing::RandomBf16(p.total_rows() * row, rng, 1.f, nullptr);
  DeviceBuffer kd(k_rows), vd(v_rows);
  absl::Status st = AppendKv(kd.get(), vd.get(), p.total_rows(), p.hkv, p.d, dp.k.get(), dp.v.get(),
                             p.page_tokens, dp.seqs, nullptr);
  ASSERT_TRUE(st.ok()) << st;
  std::vector<uint16_t> kp = dp.k.Download<uint16_t>(), vp = dp.v.Download<uint16_t>();
  for (size_t b = 0; b < p.seqs.size(); ++b) {
    for (int r = 0; r < p.seqs[b].q_len; ++r) {
      const int pos = p.seqs[b].q_pos0 + r;
      const size_t slot =
          static_cast<size_t>(p.page_indices[p.page_indptr[b] + pos / p.page_tokens]) *
              p.page_tokens +
          pos % p.page_tokens;
      for (size_t i = 0; i < row; ++i) {
        ASSERT_EQ(kp[slot * row + i], k_rows[(p.q_indptr[b] + r) * row + i]) << b << " " << r;
        ASSERT_EQ(vp[slot * row + i], v_rows[(p.q_indptr[b] + r) * row + i]) << b << " " << r;
      }
    }
  }
}

// The one-launch staging of a layer's tables and its append: words of page-locked host memory
// (a count that leaves a partial group of four) arrive on the device unchanged, and every new
// row lands in the slot its sequence's page table gives (slots computed here from the table).
TEST_F(CudaAttentionTest, StageTablesAndAppendKvCopiesAndAppends) {
  const Problem p = MakeProblem({{5, 3, 8}, {40, 0, 40}, {1, 36, 37}}, 4, 2, 64, 16, 33);
  DeviceProblem dp(p);
  const size_t row = static_cast<size_t>(p.hkv) * p.d;
  std::mt19937 rng(7);
  std::vector<uint16_t> k_rows = testing::RandomBf16(p.total_rows() * row, rng, 1.f, nullptr);
  std::vector<uint16_t> v_rows = testing::RandomBf16(p.total_rows() * row, rng, 1.f, nullptr);
  DeviceBuffer kd(k_rows), vd(v_rows);
  const int64_t words = 4097;
  const int64_t rows = p.total_rows();
  int32_t* host = nullptr;
  ASSERT_EQ(cudaMallocHost(reinterpret_cast<void**>(&host), (words + rows) * sizeof(int32_t)),
            cudaSuccess);
  std::uniform_int_distribution<int32_t> any(-1000000, 1000000);
  std::vector<int32_t> expected(words);
  for (int64_t i = 0; i < words; ++i) host[i] = expected[i] = any(rng);
  std::vector<size_t> slot_of_row(rows);
  for (size_t b = 0; b < p.seqs.size(); ++b) {
    for (int r = 0; r < p.seqs[b].q_len; ++r) {
      const int pos = p.seqs[b].q_pos0 + r;
      slot_of_row[p.q_indptr[b] + r] =
          static_cast<size_t>(p.page_indices[p.page_indptr[b] + pos / p.page_tokens]) *
              p.page_tokens +
          pos % p.page_tokens;
      host[words + p.q_indptr[b] + r] = static_cast<int32_t>(slot_of_row[p.q_indptr[b] + r]);
    }
  }
  DeviceBuffer out(words * sizeof(int32_t));
  out.Poison();
  absl::Status st =
      StageTablesAndAppendKv(host, out.as<int32_t>(), words, host + words, kd.get(), vd.get(), rows,
                             p.hkv, p.d, dp.k.get(), dp.v.get(), nullptr);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(out.Download<int32_t>(), expected);
  std::vector<uint16_t> kp = dp.k.Download<uint16_t>(), vp = dp.v.Download<uint16_t>();
  for (int64_t r = 0; r < rows; ++r) {
    for (size_t i = 0; i < row; ++i) {
      ASSERT_EQ(kp[slot_of_row[r] * row + i], k_rows[r * row + i]) << r;
      ASSERT_EQ(vp[slot_of_row[r] * row + i], v_rows[r * row + i]) << r;
    }
  }
  cudaFreeHost(host);
  EXPECT_FALSE(StageTablesAndAppendKv(host, nullptr, -1, nullptr, nullptr, nullptr, 0, 2, 64,
                                      nullptr, nullptr, nullptr)
                   .ok());
}

TEST_F(CudaAttentionTest, BadShapesAreNamed) {
  AttentionShape shape{8, 2, 96, 0.1f};
  std::vector<int32_t> indptr = {0, 4}, pos0 = {0};
  DeviceBuffer ws(1024);
  absl::StatusOr<PrefillPlan> plan =
      PlanPrefill(shape, indptr, pos0, ws.get(), ws.bytes(), nullptr);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("head_dim: expected 64 or 128, found 96"),
            std::string::npos)
      << plan.status();
  shape = {6, 4, 128, 0.1f};
  plan = PlanPrefill(shape, indptr, pos0, ws.get(), ws.bytes(), nullptr);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("num_q_heads / num_kv_heads"), std::string::npos);
  shape = {8, 2, 128, 0.1f};
  plan = PlanPrefill(shape, indptr, pos0, ws.get(), ws.bytes(), nullptr, 64);
  ASSERT_TRUE(plan.ok()) << plan.status();
  BlockSparseLayoutView layout;
  layout.kv_block_tokens = 32;
  layout.q_block_tokens = 64;
  PrefillArgs args;
  args.shape = shape;
  args.kv.page_tokens = 16;
  args.maybe_layout = &layout;
  absl::Status st = RunPrefill(args, *plan, nullptr);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("kv_block_tokens a multiple of 64"), std::string::npos) << st;
  args.kv.page_tokens = 24;
  st = RunPrefill(args, *plan, nullptr);
  EXPECT_NE(st.message().find("page_tokens: expected a power of two, found 24"), std::string::npos)
      << st;
}

#if defined(FLUXATTN_WITH_CUDNN)
// cuDNN's fused attention on the same problems and the same double reference: packed keys for
// fresh prompts (the rows just computed), the shuffled page pool through a page table for
// prompts that continue earlier tokens.
void CheckCudnnPrefill(const Problem& p, bool paged, const char* what) {
  absl::StatusOr<std::unique_ptr<fluxattn::cudnn::Attention>> att =
      fluxattn::cudnn::Attention::Create(CudaDevice(0).value());
  ASSERT_TRUE(att.ok()) << att.status();
  DeviceProblem dp(p);
  const int32_t b = static_cast<int32_t>(p.seqs.size());
  std::vector<int32_t> q_off(b + 1), kv_off(b + 1), seq_q(b), seq_kv(b);
  int32_t max_q = 1, max_kv = 1;
  std::vector<uint16_t> k_packed, v_packed;
  for (int32_t i = 0; i <= b; ++i) {
    q_off[i] = p.q_indptr[i] * p.hq * p.d;
    kv_off[i] = p.q_indptr[i] * p.hkv * p.d;
    if (i == b) break;
    seq_q[i] = p.seqs[i].q_len;
    seq_kv[i] = p.seqs[i].kv_len;
    max_q = std::max(max_q, seq_q[i]);
    max_kv = std::max(max_kv, seq_kv[i]);
    if (!paged) {
      ASSERT_EQ(p.seqs[i].q_pos0, 0) << what;
      ASSERT_EQ(p.seqs[i].kv_len, p.seqs[i].q_len) << what;
      for (float x : p.k[i]) k_packed.push_back(testing::ToBf16(x));
      for (float x : p.v[i]) v_packed.push_back(testing::ToBf16(x));
    }
  }
  const int32_t width = fluxattn::cudnn::TableWidth(max_kv, p.page_tokens);
  std::vector<int32_t> table(static_cast<size_t>(b) * width, 0);
  for (int32_t i = 0; i < b; ++i) {
    for (int32_t j = p.page_indptr[i]; j < p.page_indptr[i + 1]; ++j) {
      table[static_cast<size_t>(i) * width + (j - p.page_indptr[i])] = p.page_indices[j];
    }
  }
  DeviceBuffer d_q_off(q_off), d_kv_off(kv_off), d_seq_q(seq_q), d_seq_kv(seq_kv), d_table(table);
  DeviceBuffer d_k(k_packed.empty() ? std::vector<uint16_t>{0} : k_packed);
  DeviceBuffer d_v(v_packed.empty() ? std::vector<uint16_t>{0} : v_packed);
  fluxattn::cudnn::PrefillArgs a;
  a.num_seqs = b;
  a.num_q_heads = p.hq;
  a.num_kv_heads = p.hkv;
  a.head_dim = p.d;
  a.scale = ShapeOf(p).scale;
  a.max_q_rows = max_q;
  a.max_kv_len = max_kv;
  a.q = dp.q.get();
  a.out = dp.out.get();
  a.paged = paged;
  a.k = paged ? dp.k.get() : d_k.get();
  a.v = paged ? dp.v.get() : d_v.get();
  a.num_pages = p.num_pages;
  a.page_tokens = p.page_tokens;
  a.table_width = width;
  a.page_table = d_table.as<int32_t>();
  a.q_offsets = d_q_off.as<int32_t>();
  a.kv_offsets = d_kv_off.as<int32_t>();
  a.seq_len_q = d_seq_q.as<int32_t>();
  a.seq_len_kv = d_seq_kv.as<int32_t>();
  dp.out.Poison();
  absl::Status st = (*att)->Prefill(a, nullptr);
  ASSERT_TRUE(st.ok()) << what << ": " << st;
  CUDA_ASSERT(cudaDeviceSynchronize());
  ExpectClose(dp.out.Download<uint16_t>(), Reference(p, nullptr, 1, /*decode=*/false), what);
  // The same shape bucket again with other lengths reuses the built graph.
  st = (*att)->Prefill(a, nullptr);
  ASSERT_TRUE(st.ok()) << what << " (again): " << st;
}

TEST_F(CudaAttentionTest, CudnnPrefillPackedMixedBatch) {
  CheckCudnnPrefill(
      MakeProblem({{1, 0, 1}, {77, 0, 77}, {300, 0, 300}, {129, 0, 129}}, 8, 2, 128, 16, 21), false,
      "cudnn packed, head_dim 128, GQA 4");
  CheckCudnnPrefill(MakeProblem({{500, 0, 500}, {65, 0, 65}}, 4, 4, 64, 64, 22), false,
                    "cudnn packed, head_dim 64, no GQA");
}

TEST_F(CudaAttentionTest, CudnnPrefillPagedContinuesEarlierTokens) {
  CheckCudnnPrefill(MakeProblem({{200, 130, 330}, {129, 1000, 1129}, {64, 36, 100}, {5, 0, 5}}, 8,
                                2, 128, 16, 23),
                    true, "cudnn paged, head_dim 128, pages of 16");
  CheckCudnnPrefill(MakeProblem({{300, 0, 300}, {65, 17, 82}}, 6, 3, 64, 64, 24), true,
                    "cudnn paged, head_dim 64, pages of 64");
}
#endif  // FLUXATTN_WITH_CUDNN

// The balanced cut on the host (no GPU needed): it covers every row in its splits, fills one
// wave of 264 CTAs when the rows allow it, gives rows of one length the cut of
// ChooseDecodeSplits, and stays within MaxDecodeSplits.
TEST(DecodeSplitsTest, BalancedCutCoversEveryRowInOneWave) {
  std::mt19937 rng(51);
  for (int trial = 0; trial < 400; ++trial) {
    const int32_t heads = std::vector<int32_t>{1, 2, 4, 8, 16}[rng() % 5];
    const int32_t seqs = 1 + static_cast<int32_t>(rng() % (trial < 200 ? 12 : 300));
    std::vector<int64_t> rows;
    int64_t max_tiles = 1;
    for (int32_t s = 0; s < seqs; ++s) {
      const int64_t kv = rng() % 3 == 0 ? 1 + rng() % 200 : 1 + rng() % 140000;
      rows.insert(rows.end(), heads, kv);
      max_tiles = std::max<int64_t>(max_tiles, (kv + 63) / 64);
    }
    const DecodeSplits d = BalanceDecodeSplits(rows, seqs, heads);
    SCOPED_TRACE(::testing::Message() << "trial " << trial << ": " << seqs << " x " << heads);
    ASSERT_GE(d.tiles_per_split, 1);
    EXPECT_GE(int64_t{d.num_splits} * d.tiles_per_split, max_tiles);
    EXPECT_LE(d.num_splits, MaxDecodeSplits(seqs, heads));
    int64_t ctas = 0;
    for (int64_t t : rows) {
      ctas += std::max<int64_t>(1, ((t + 63) / 64 + d.tiles_per_split - 1) / d.tiles_per_split);
    }
    if (static_cast<int64_t>(rows.size()) <= 264 &&
        d.tiles_per_split > std::max<int64_t>(2, (max_tiles + MaxDecodeSplits(seqs, heads) - 1) /
                                                     MaxDecodeSplits(seqs, heads))) {
      EXPECT_LE(ctas, 264);
      // One tile fewer per split would not fit the wave: the cut is the finest that does.
      int64_t finer = 0;
      for (int64_t t : rows) {
        finer +=
            std::max<int64_t>(1, ((t + 63) / 64 + d.tiles_per_split - 2) / (d.tiles_per_split - 1));
      }
      EXPECT_GT(finer, 264);
    }
  }
  // Rows of one length: the same tiles per split as the equal cut of ChooseDecodeSplits.
  for (int32_t seqs : {1, 2, 3, 8, 32}) {
    for (int64_t kv : {100, 4096, 32768, 131072}) {
      const std::vector<int64_t> rows(static_cast<size_t>(seqs) * 8, kv);
      const DecodeSplits d = BalanceDecodeSplits(rows, seqs, 8);
      const int64_t tiles = (kv + 63) / 64;
      const int64_t equal = ChooseDecodeSplits(seqs, 8, kv);
      EXPECT_EQ((tiles + d.tiles_per_split - 1) / d.tiles_per_split,
                (tiles + (tiles + equal - 1) / equal - 1) / ((tiles + equal - 1) / equal))
          << seqs << " x " << kv;
    }
  }
  // The mixed batch this is for: four rows of 32K keys beside four windows of 2176.
  std::vector<int64_t> mixed;
  for (int s = 0; s < 8; ++s) mixed.insert(mixed.end(), 8, s % 2 == 0 ? 32768 : 2176);
  const DecodeSplits m = BalanceDecodeSplits(mixed, 8, 8);
  EXPECT_GT(m.num_splits, ChooseDecodeSplits(8, 8, 32768));
}

}  // namespace
}  // namespace fluxattn::kernels::cuda
