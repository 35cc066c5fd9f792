// The CPU block-sparse attention kernel: flash-style tiled online softmax in float32 over a whole
// layer batch (every sequence of every backend that uses the core kernel, in one launch).
//
// Work is split into units (sequence, query block, KV head). A unit's rows are the pairs (query,
// query head of the KV head's group), so one K/V tile serves every query head sharing it (GQA).
// Rows are processed in tiles of kRowTile against key tiles of up to kKeyTile keys taken from the
// layout's KV blocks: S^T = K Q^T (keys read in place from their pool pages), masking, online
// softmax, O += P V, both products through a register-blocked 4x16 micro-kernel. Decode units
// with long rows are split into fixed ranges of KV blocks whose partial results (max, sum,
// output) are merged afterwards.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "fluxattn/attention/layout_builder.h"
#include "fluxattn/attention/parallel_for.h"
#include "fluxattn/attention_backend.h"
#include "fluxattn/status.h"
#include "kernels/cpu/attention_micro_kernels.h"

namespace fluxattn {
namespace {

using cpu_kernels::ExpNonPositiveInPlace;
using cpu_kernels::Gemm;
using cpu_kernels::GemmAT;

constexpr int kRowTile = 64;  // rows (query, head) per tile
constexpr int kKeyTile = 64;  // keys per tile
static_assert(kRowTile <= 64 && kRowTile % 16 == 0, "SoftmaxStep takes up to 64 rows");
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

int RoundUp(int x, int to) { return (x + to - 1) / to * to; }

struct Scratch {
  explicit Scratch(int dp)
      : qt(static_cast<size_t>(dp) * kRowTile, 0.0f),
        k(static_cast<size_t>(kKeyTile) * dp, 0.0f),
        v(static_cast<size_t>(kKeyTile) * dp, 0.0f),
        st(kKeyTile * kRowTile, 0.0f),
        acc(kRowTile * dp, 0.0f) {}
  std::vector<float> qt;   // [head_dim][kRowTile]: pre-scaled queries, transposed
  std::vector<float> k;    // [kKeyTile][dp]: keys copied when they cannot be read in place
  std::vector<float> v;    // [kKeyTile][dp]: values, likewise
  std::vector<float> st;   // [kKeyTile][kRowTile]: scores, then probabilities, transposed
  std::vector<float> acc;  // [kRowTile][dp]: unnormalized outputs
  float m[kRowTile];       // running maxima
  float l[kRowTile];       // running sums
};

// One kernel launch over a whole layer batch. A unit is (sequence, query block, KV head); the
// rows of a unit are the pairs (query, query head of the KV head's group), so one K/V tile
// serves every query head sharing it (GQA). Decode units whose row lists more than
// kSplitEntries KV blocks are split into fixed ranges of kSplitEntries blocks; the partial
// results (max, sum, output) are merged in range order afterwards. The split points depend only
// on the layout, never on the thread count, so results do not depend on it either.
constexpr int64_t kSplitEntries = 8;

// The decode of one query whose layout row serves every KV head (one layout head) is a "narrow"
// unit over all heads: it reads each key position's row of every head, contiguous in the pool,
// instead of one head's row a pool row apart per unit, and scores each key against the query
// heads as dot products (TokenScores), with no padding of the rows to the micro-kernel's 16.
// (Per-head layouts keep one unit per KV head on the tiles: there the tiles' copy of a head's
// rows keeps more loads in flight.) Narrow units split every kAllHeadsSplitKeys keys (in whole
// KV blocks), so that a batch of one still spreads over the threads.
constexpr int64_t kAllHeadsSplitKeys = 256;
constexpr int64_t kPrefetchKeys = 4;

class Kernel {
 public:
  Kernel(const AttentionBatch& batch, const PlannedLayout& plan, AttentionWorkspace* ws)
      : b_(batch), plan_(plan), ws_(ws) {
    group_ = b_.num_q_heads / b_.num_kv_heads;
    d_ = b_.head_dim;
    dp_ = RoundUp(d_, 16);
    q_ = b_.q.as<const float>();
    out_ = b_.out.as<float>();
  }

  absl::Status Run() {
    // Work items: (unit, split) in a fixed order; partial rows for split items.
    const int hkv = b_.num_kv_heads;
    int64_t partial_rows = 0;
    for (size_t s = 0; s < b_.seqs.size(); ++s) {
      const AttentionProblem& p = b_.seqs[s];
      const BlockSparseLayout& layout = plan_.layouts[s];
      if (p.num_queries == 0) continue;
      const int64_t q_blocks = layout.num_q_blocks();
      const bool may_split = p.phase == AttentionPhase::kDecode;
      if (may_split && p.num_queries == 1 && q_blocks == 1 && layout.num_layout_heads == 1 &&
          b_.num_q_heads <= kRowTile) {
        Unit u;
        u.seq = static_cast<int32_t>(s);
        u.narrow = true;
        u.r0 = 0;
        u.r1 = 1;
        u.eb = layout.row_begin[0];
        u.ee = layout.row_begin[1];
        u.split_entries =
            std::max<int64_t>(1, kAllHeadsSplitKeys / std::max(1, layout.kv_block_tokens));
        u.splits = std::max<int64_t>(1, (u.ee - u.eb + u.split_entries - 1) / u.split_entries);
        AddUnit(u, &partial_rows);
        continue;
      }
      for (int64_t qb = 0; qb < q_blocks; ++qb) {
        for (int h = 0; h < hkv; ++h) {
          Unit u;
          u.seq = static_cast<int32_t>(s);
          u.kv_head = h;
          u.r0 = qb * layout.q_block_tokens;
          u.r1 = std::min(u.r0 + layout.q_block_tokens, p.num_queries);
          const int64_t row = qb * layout.num_layout_heads + (layout.num_layout_heads == 1 ? 0 : h);
          u.eb = layout.row_begin[row];
          u.ee = layout.row_begin[row + 1];
          const int64_t entries = u.ee - u.eb;
          u.splits = may_split && entries > kSplitEntries
                         ? (entries + kSplitEntries - 1) / kSplitEntries
                         : 1;
          AddUnit(u, &partial_rows);
        }
      }
    }
    if (partial_rows > 0) {
      ws_->partial_acc.resize(static_cast<size_t>(partial_rows) * dp_);
      ws_->partial_m.resize(partial_rows);
      ws_->partial_l.resize(partial_rows);
    }
    ParallelFor(static_cast<int64_t>(items_.size()),
                [this](int64_t i) { RunItem(items_[i].unit, items_[i].split); });
    if (failed_.load()) return error_;
    if (!split_units_.empty()) {
      ParallelFor(static_cast<int64_t>(split_units_.size()),
                  [this](int64_t i) { Merge(units_[split_units_[i]]); });
    }
    return absl::OkStatus();
  }

 private:
  struct Unit {
    int32_t seq = 0;
    int kv_head = 0;
    bool narrow = false;     // a narrow decode unit over every KV head
    int64_t r0 = 0, r1 = 0;  // query rows of the sequence
    int64_t eb = 0, ee = 0;  // layout entries of the unit's row
    int64_t splits = 1;
    int64_t split_entries = kSplitEntries;  // layout entries per split
    int64_t first_item = 0;
    int64_t partial0 = 0;  // first partial row (split units)
  };
  struct Item {
    int64_t unit;
    int64_t split;
  };

  int64_t UnitRows(const Unit& u) const {
    return u.narrow ? b_.num_q_heads : (u.r1 - u.r0) * group_;
  }

  void AddUnit(Unit u, int64_t* partial_rows) {
    u.first_item = static_cast<int64_t>(items_.size());
    if (u.splits > 1) {
      u.partial0 = *partial_rows;
      *partial_rows += u.splits * UnitRows(u);
    }
    const int64_t unit_index = static_cast<int64_t>(units_.size());
    for (int64_t sp = 0; sp < u.splits; ++sp) items_.push_back({unit_index, sp});
    if (u.splits > 1) split_units_.push_back(unit_index);
    units_.push_back(u);
  }

  void Fail(absl::Status status) {
    std::lock_guard<std::mutex> lock(error_mutex_);
    if (!failed_.load()) {
      error_ = std::move(status);
      failed_.store(true);
    }
  }

  void RunItem(int64_t unit_index, int64_t split) {
    if (failed_.load()) return;
    const Unit& u = units_[unit_index];
    const int64_t sb = std::min(u.ee, u.eb + split * u.split_entries);
    const int64_t se = u.splits == 1 ? u.ee : std::min(u.ee, sb + u.split_entries);
    thread_local std::vector<Scratch> scratch_by_thread;
    if (scratch_by_thread.empty() ||
        static_cast<int>(scratch_by_thread[0].acc.size()) != kRowTile * dp_) {
      scratch_by_thread.clear();
      scratch_by_thread.emplace_back(dp_);
    }
    Scratch& sc = scratch_by_thread[0];
    const int64_t unit_rows = UnitRows(u);
    for (int64_t t0 = 0; t0 < unit_rows; t0 += kRowTile) {
      const int rows = static_cast<int>(std::min<int64_t>(kRowTile, unit_rows - t0));
      if (u.narrow) {
        RunNarrow(sc, u, sb, se);
      } else {
        RunTile(sc, u, t0, rows, sb, se);
      }
      if (failed_.load()) return;
      if (u.splits == 1) {
        WriteOutput(sc, u, t0, rows);
      } else {
        const int64_t part = u.partial0 + split * unit_rows;
        for (int i = 0; i < rows; ++i) {
          ws_->partial_m[part + t0 + i] = sc.m[i];
          ws_->partial_l[part + t0 + i] = sc.l[i];
          std::memcpy(&ws_->partial_acc[(part + t0 + i) * dp_], &sc.acc[i * dp_],
                      sizeof(float) * d_);
        }
      }
    }
  }

  // Global query row and query head of unit row t.
  void RowOf(const Unit& u, int64_t t, int64_t* r, int* hq) const {
    if (u.narrow) {
      *r = u.r0;
      *hq = static_cast<int>(t);
      return;
    }
    *r = u.r0 + t / group_;
    *hq = u.kv_head * group_ + static_cast<int>(t % group_);
  }

  // Rows t0 .. t0+rows of unit `u`, against entries [eb, ee). Scores are computed transposed
  // (keys x rows) so that K and V can be read in place from their pages: S^T = K Q^T, then
  // O += P V with P^T as the left operand.
  void RunTile(Scratch& sc, const Unit& u, int64_t t0, int rows, int64_t eb, int64_t ee) {
    const AttentionProblem& p = b_.seqs[u.seq];
    const BlockSparseLayout& layout = plan_.layouts[u.seq];
    const int kv_head = u.kv_head;
    const int rows4 = RoundUp(rows, 4);
    const int rows16 = RoundUp(rows, 16);
    int64_t pos[kRowTile];   // absolute query position per row
    int in_block[kRowTile];  // query row within the query block (for masks)
    std::fill(sc.qt.begin(), sc.qt.begin() + static_cast<int64_t>(d_) * rows16, 0.0f);
    for (int i = 0; i < rows; ++i) {
      int64_t r;
      int hq;
      RowOf(u, t0 + i, &r, &hq);
      pos[i] = p.q_pos0 + r;
      in_block[i] = static_cast<int>(r - u.r0);
      const float* src = q_ + ((p.q_row0 + r) * b_.num_q_heads + hq) * static_cast<int64_t>(d_);
      for (int d = 0; d < d_; ++d) sc.qt[d * rows16 + i] = src[d] * b_.scale;
    }
    for (int i = 0; i < rows16; ++i) {
      sc.m[i] = kNegInf;
      sc.l[i] = 0.0f;
    }
    std::fill(sc.acc.begin(), sc.acc.begin() + static_cast<int64_t>(rows4) * dp_, 0.0f);
    const int64_t pmin = pos[0];
    const int64_t pmax = pos[rows - 1];
    const int bk = layout.kv_block_tokens;
    const int64_t words = layout.words_per_mask();
    const int64_t page = p.kv.page_tokens;
    const int64_t kv_length = layout.kv_length;
    // Reading in place needs whole 16-float rows (the micro-kernel's width) and pages large
    // enough that tiles split at page ends stay efficient.
    const bool in_place_ok = d_ == dp_ && page >= 16;
    const int row_stride = p.num_kv_heads * d_;

    for (int64_t e = eb; e < ee; ++e) {
      const int64_t block_start = static_cast<int64_t>(layout.kv_block[e]) * bk;
      const int64_t block_end = std::min({block_start + bk, kv_length, pmax + 1});
      const uint64_t* mask =
          layout.mask_index[e] < 0 ? nullptr : layout.masks.data() + layout.mask_index[e] * words;
      for (int64_t c0 = block_start; c0 < block_end;) {
        int64_t c1 = std::min(c0 + kKeyTile, block_end);
        if (in_place_ok) c1 = std::min(c1, (c0 / page + 1) * page);
        const int n = static_cast<int>(c1 - c0);
        const int n4 = RoundUp(n, 4);
        const float* kbase = nullptr;
        const float* vbase = nullptr;
        int ld = dp_;
        if (in_place_ok && n == n4 && p.kv.resident(c0)) {
          kbase = p.kv.key(c0, kv_head);
          vbase = p.kv.value(c0, kv_head);
          ld = row_stride;
        } else {
          if (!GatherKv(sc, p, bk, kv_head, c0, n, n4, block_start, mask, rows, pos, in_block)) {
            return;
          }
          kbase = sc.k.data();
          vbase = sc.v.data();
        }
        Gemm(n4, rows16, d_, kbase, ld, sc.qt.data(), rows16, sc.st.data(), rows16, false);
        float* st = sc.st.data();
        if (mask != nullptr || c1 - 1 > pmin) {
          for (int j = 0; j < n; ++j) {
            const int64_t key = c0 + j;
            float* srow = st + j * rows16;
            for (int i = 0; i < rows; ++i) {
              const bool allowed =
                  key <= pos[i] &&
                  (mask == nullptr ||
                   MaskAllows(mask, bk, in_block[i], static_cast<int>(key - block_start)));
              if (!allowed) srow[i] = kNegInf;
            }
          }
        }
        for (int j = n; j < n4; ++j) std::fill(st + j * rows16, st + (j + 1) * rows16, kNegInf);
        UpdateSoftmax(sc, n4, rows4, rows16);
        GemmAT(rows4, dp_, n4, st, rows16, vbase, ld, sc.acc.data(), dp_, true);
        c0 = c1;
      }
    }
  }

  // The one query of a narrow decode unit against entries [eb, ee): per tile of keys, the
  // scores of every key position against the unit's query heads (TokenScores; masked keys
  // -inf), the online softmax step over the tile's [keys][heads] scores, then O += P V over
  // the tile's positions in ascending order (TokenValues). Leaves m, l and acc for the unit's
  // rows like RunTile.
  void RunNarrow(Scratch& sc, const Unit& u, int64_t eb, int64_t ee) {
    const AttentionProblem& p = b_.seqs[u.seq];
    const BlockSparseLayout& layout = plan_.layouts[u.seq];
    const int hkv = b_.num_kv_heads;
    const int hq_count = b_.num_q_heads;
    const int64_t pos = p.q_pos0;
    float* q = sc.qt.data();  // [hq][dp], pre-scaled, zero past d
    for (int hq = 0; hq < hq_count; ++hq) {
      const float* src = q_ + (p.q_row0 * hq_count + hq) * static_cast<int64_t>(d_);
      float* dst = q + static_cast<int64_t>(hq) * dp_;
      for (int d = 0; d < d_; ++d) dst[d] = src[d] * b_.scale;
      std::fill(dst + d_, dst + dp_, 0.0f);
    }
    for (int i = 0; i < hq_count; ++i) {
      sc.m[i] = kNegInf;
      sc.l[i] = 0.0f;
    }
    std::fill(sc.acc.begin(), sc.acc.begin() + static_cast<int64_t>(hq_count) * dp_, 0.0f);
    const int bk = layout.kv_block_tokens;
    const int64_t words = layout.words_per_mask();
    const int64_t kv_length = layout.kv_length;
    const float* vrows[kKeyTile];  // the tile's readable positions: values, then weights
    const float* wrows[kKeyTile];
    for (int64_t e = eb; e < ee; ++e) {
      const int64_t block_start = static_cast<int64_t>(layout.kv_block[e]) * bk;
      const int64_t block_end = std::min({block_start + bk, kv_length, pos + 1});
      const uint64_t* mask =
          layout.mask_index[e] < 0 ? nullptr : layout.masks.data() + layout.mask_index[e] * words;
      for (int64_t c0 = block_start; c0 < block_end; c0 += kKeyTile) {
        const int n = static_cast<int>(std::min<int64_t>(kKeyTile, block_end - c0));
        float* st = sc.st.data();  // [n][hq_count]
        int kept = 0;
        for (int j = 0; j < n; ++j) {
          const int64_t key = c0 + j;
          float* srow = st + static_cast<int64_t>(j) * hq_count;
          if (mask != nullptr && !MaskAllows(mask, bk, 0, static_cast<int>(key - block_start))) {
            std::fill(srow, srow + hq_count, kNegInf);
            continue;
          }
          const float* kt = p.kv.key(key, 0);
          if (kt == nullptr) {
            Fail(absl::FailedPreconditionError(absl::StrCat(
                "attention kernel: layer ", p.layer, " request ", p.request_id,
                ": expected KV position ", key, " to be resident, found its page released")));
            return;
          }
          // The first line of the K and V rows kPrefetchKeys positions on: each row of a
          // position (every head, a few KiB) starts a new stream for the hardware prefetchers,
          // and this starts it early (about 20% off a long decode on Zen 4).
          if (key + kPrefetchKeys < block_end) {
            const float* nk = p.kv.key(key + kPrefetchKeys, 0);
            if (nk != nullptr) {
              __builtin_prefetch(nk);
              __builtin_prefetch(p.kv.value(key + kPrefetchKeys, 0));
            }
          }
          cpu_kernels::TokenScores(kt, hkv, group_, d_, q, dp_, srow);
          vrows[kept] = p.kv.value(key, 0);
          wrows[kept++] = srow;  // the softmax step turns the scores into weights in place
        }
        cpu_kernels::SoftmaxStep(st, n, hq_count, hq_count, sc.m, sc.l, sc.acc.data(), dp_, d_);
        cpu_kernels::TokenValues(vrows, wrows, kept, hkv, group_, d_, sc.acc.data(), dp_);
      }
    }
  }

  // Online softmax step for one tile of transposed scores st[n4][rows16] (SoftmaxStep).
  void UpdateSoftmax(Scratch& sc, int n4, int rows4, int rows16) {
    cpu_kernels::SoftmaxStep(sc.st.data(), n4, rows16, rows4, sc.m, sc.l, sc.acc.data(), dp_, d_);
  }

  // Copies keys and values [c0, c0+n) of `kv_head` into rows of dp floats, zero rows up to n4.
  // A released page is an error only when some row of the tile would read it.
  bool GatherKv(Scratch& sc, const AttentionProblem& p, int bk, int kv_head, int64_t c0, int n,
                int n4, int64_t block_start, const uint64_t* mask, int rows, const int64_t* pos,
                const int* in_block) {
    for (int j = 0; j < n4; ++j) {
      float* kd = &sc.k[j * dp_];
      float* vd = &sc.v[j * dp_];
      const int64_t key = c0 + j;
      const float* k = j < n ? p.kv.key(key, kv_head) : nullptr;
      const float* v = j < n ? p.kv.value(key, kv_head) : nullptr;
      if (k == nullptr || v == nullptr) {
        bool needed = false;
        for (int i = 0; i < rows && !needed && j < n; ++i) {
          needed = key <= pos[i] &&
                   (mask == nullptr ||
                    MaskAllows(mask, bk, in_block[i], static_cast<int>(key - block_start)));
        }
        if (needed) {
          Fail(absl::FailedPreconditionError(absl::StrCat(
              "attention kernel: layer ", p.layer, " request ", p.request_id,
              ": expected KV position ", key, " to be resident, found its page released")));
          return false;
        }
        std::fill(kd, kd + dp_, 0.0f);
        std::fill(vd, vd + dp_, 0.0f);
        continue;
      }
      std::memcpy(kd, k, sizeof(float) * d_);
      std::memcpy(vd, v, sizeof(float) * d_);
      std::fill(kd + d_, kd + dp_, 0.0f);
      std::fill(vd + d_, vd + dp_, 0.0f);
    }
    return true;
  }

  float* OutRow(const Unit& u, int64_t r, int hq) const {
    const AttentionProblem& p = b_.seqs[u.seq];
    return out_ + ((p.q_row0 + r) * b_.num_q_heads + hq) * static_cast<int64_t>(d_);
  }

  void WriteOutput(const Scratch& sc, const Unit& u, int64_t t0, int rows) {
    for (int i = 0; i < rows; ++i) {
      int64_t r;
      int hq;
      RowOf(u, t0 + i, &r, &hq);
      float* dst = OutRow(u, r, hq);
      const float inv = sc.l[i] > 0.0f ? 1.0f / sc.l[i] : 0.0f;
      const float* src = &sc.acc[i * dp_];
      for (int d = 0; d < d_; ++d) dst[d] = src[d] * inv;
    }
  }

  // Combines the split partial results of one unit in split order: o = sum_s e^(m_s - M) acc_s /
  // sum_s e^(m_s - M) l_s with M the largest m_s.
  void Merge(const Unit& u) {
    const int64_t unit_rows = UnitRows(u);
    float o[1024];
    FLUXATTN_CHECK(d_ <= 1024);
    for (int64_t t = 0; t < unit_rows; ++t) {
      float mx = kNegInf;
      for (int64_t s = 0; s < u.splits; ++s) {
        mx = std::max(mx, ws_->partial_m[u.partial0 + s * unit_rows + t]);
      }
      std::fill(o, o + d_, 0.0f);
      float sum = 0.0f;
      if (mx != kNegInf) {
        for (int64_t s = 0; s < u.splits; ++s) {
          const int64_t idx = u.partial0 + s * unit_rows + t;
          if (ws_->partial_m[idx] == kNegInf) continue;
          float w = ws_->partial_m[idx] - mx;
          ExpNonPositiveInPlace(&w, 1);
          sum += w * ws_->partial_l[idx];
          const float* acc = &ws_->partial_acc[idx * dp_];
          for (int d = 0; d < d_; ++d) o[d] += w * acc[d];
        }
      }
      int64_t r;
      int hq;
      RowOf(u, t, &r, &hq);
      float* dst = OutRow(u, r, hq);
      const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
      for (int d = 0; d < d_; ++d) dst[d] = o[d] * inv;
    }
  }

  const AttentionBatch& b_;
  const PlannedLayout& plan_;
  AttentionWorkspace* ws_;
  const float* q_ = nullptr;
  float* out_ = nullptr;
  int group_ = 1;
  int d_ = 0;
  int dp_ = 0;
  std::vector<Unit> units_;
  std::vector<Item> items_;
  std::vector<int64_t> split_units_;
  std::atomic<bool> failed_{false};
  std::mutex error_mutex_;
  absl::Status error_;
};

absl::Status CheckSequence(const AttentionBatch& b, const AttentionProblem& p,
                           const BlockSparseLayout& layout) {
  const std::string where =
      absl::StrCat("attention kernel (layer ", b.layer, ", request ", p.request_id, ")");
  if (p.num_queries < 0 || p.q_pos0 < 0) {
    return InvalidInput(where, "q_pos0 >= 0 and num_queries >= 0",
                        absl::StrCat(p.q_pos0, " and ", p.num_queries));
  }
  if (p.q_row0 < 0 || p.q_row0 + p.num_queries > b.q.shape[0]) {
    return InvalidInput(where, absl::StrCat("query rows within the batch's ", b.q.shape[0]),
                        absl::StrCat("rows [", p.q_row0, ", ", p.q_row0 + p.num_queries, ")"));
  }
  if (p.kv.num_kv_heads != b.num_kv_heads || p.kv.head_dim != b.head_dim) {
    return InvalidInput(where,
                        absl::StrCat("KV with ", b.num_kv_heads, " heads of dim ", b.head_dim),
                        absl::StrCat(p.kv.num_kv_heads, " heads of dim ", p.kv.head_dim));
  }
  if (p.kv.length < p.q_pos0 + p.num_queries) {
    return InvalidInput(where, absl::StrCat("KV length >= ", p.q_pos0 + p.num_queries),
                        absl::StrCat(p.kv.length));
  }
  if (p.kv.length > 0 &&
      (p.kv.page_tokens <= 0 || p.kv.k_pool == nullptr || p.kv.v_pool == nullptr ||
       p.kv.pages == nullptr || p.kv.num_pages * p.kv.page_tokens < p.kv.length)) {
    return InvalidInput(where, absl::StrCat("KV pages covering ", p.kv.length, " positions"),
                        absl::StrCat(p.kv.num_pages, " pages of ", p.kv.page_tokens));
  }
  if (p.kv.dtype != DType::kF32 || p.kv.device != DeviceType::kCpu) {
    return InvalidInput(
        where, "f32 KV on the cpu",
        absl::StrCat(DTypeName(p.kv.dtype), " KV on ", DeviceTypeName(p.kv.device)));
  }
  if (layout.q_pos0 != p.q_pos0 || layout.num_queries != p.num_queries ||
      layout.kv_length > p.kv.length) {
    return InvalidInput(
        where,
        absl::StrCat("a layout for queries [", p.q_pos0, ", ", p.q_pos0 + p.num_queries,
                     ") and KV length <= ", p.kv.length),
        absl::StrCat("queries [", layout.q_pos0, ", ", layout.q_pos0 + layout.num_queries,
                     ") and KV length ", layout.kv_length));
  }
  return ValidateLayout(layout, b.num_kv_heads);
}

absl::Status CheckBatch(const AttentionBatch& b, const PlannedLayout& plan) {
  const std::string where = absl::StrCat("attention kernel (layer ", b.layer, ")");
  if (b.num_q_heads <= 0 || b.num_kv_heads <= 0 || b.num_q_heads % b.num_kv_heads != 0) {
    return InvalidInput(where, "num_q_heads a positive multiple of num_kv_heads",
                        absl::StrCat(b.num_q_heads, " and ", b.num_kv_heads));
  }
  if (b.head_dim <= 0) return InvalidInput(where, "head_dim > 0", absl::StrCat(b.head_dim));
  if (!std::isfinite(b.scale)) return InvalidInput(where, "a finite scale", absl::StrCat(b.scale));
  if (plan.layouts.size() < b.seqs.size()) {
    return InvalidInput(where, absl::StrCat("a layout for each of ", b.seqs.size(), " sequences"),
                        absl::StrCat(plan.layouts.size()));
  }
  if (!b.seqs.empty() && (!b.q.is_host_f32() || !b.out.is_host_f32() || b.q.data == nullptr ||
                          b.out.data == nullptr)) {
    return InvalidInput(where, "host f32 query and output rows",
                        absl::StrCat(DTypeName(b.q.dtype), " on ", DeviceTypeName(b.q.device)));
  }
  if (b.q.rank != 3 || b.q.shape[1] != b.num_q_heads || b.q.shape[2] != b.head_dim ||
      b.q.stride[2] != 1 || b.q.stride[1] != b.head_dim ||
      b.q.stride[0] != int64_t{b.num_q_heads} * b.head_dim) {
    return InvalidInput(
        where, absl::StrCat("contiguous queries [rows, ", b.num_q_heads, ", ", b.head_dim, "]"),
        "another shape");
  }
  for (size_t s = 0; s < b.seqs.size(); ++s) {
    FLUXATTN_RETURN_IF_ERROR(CheckSequence(b, b.seqs[s], plan.layouts[s]));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunBlockSparseAttentionCpu(const AttentionBatch& batch, const PlannedLayout& plan,
                                        AttentionWorkspace* workspace) {
  FLUXATTN_RETURN_IF_ERROR(CheckBatch(batch, plan));
  AttentionWorkspace local;
  Kernel kernel(batch, plan, workspace != nullptr ? workspace : &local);
  return kernel.Run();
}

}  // namespace fluxattn
