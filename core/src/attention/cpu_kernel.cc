// The CPU block-sparse attention kernel: flash-style tiled online softmax in float32.
//
// Work is split into units (query block, KV head). A unit's rows are the pairs (query, query
// head of the KV head's group), so one K/V tile serves every query head sharing it (GQA). Rows
// are processed in tiles of kRowTile against key tiles of up to kKeyTile keys taken from the
// layout's KV blocks: S^T = K Q^T (keys read in place from their pages), masking, online
// softmax, O += P V, both products through a register-blocked 4x16 micro-kernel. When there are
// too few units to fill the threads (decode, short prompts), each unit's KV blocks are split into
// ranges whose partial results (max, sum, output) are merged afterwards.
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
  float shift[kRowTile];
  float corr[kRowTile];
};

class Kernel {
 public:
  Kernel(const AttentionProblem& problem, const BlockSparseLayout& layout, float* out)
      : p_(problem), layout_(layout), out_(out) {
    group_ = p_.num_q_heads / p_.num_kv_heads;
    d_ = p_.head_dim;
    dp_ = RoundUp(d_, 16);
    kv_length_ = layout_.kv_length;
  }

  absl::Status Run() {
    const int64_t q_blocks = layout_.num_q_blocks();
    const int64_t units = q_blocks * p_.num_kv_heads;
    const int threads = CpuAttentionThreads();
    int64_t max_entries = 0;
    for (int64_t r = 0; r < layout_.num_rows(); ++r) {
      max_entries = std::max(max_entries, layout_.row_begin[r + 1] - layout_.row_begin[r]);
    }
    splits_ = 1;
    if (units < 2 * threads && max_entries > 1) {
      splits_ = std::min<int64_t>((4 * threads + units - 1) / units, max_entries);
      splits_ = std::min<int64_t>(splits_, 64);
    }
    max_unit_rows_ =
        static_cast<int64_t>(std::min<int64_t>(layout_.q_block_tokens, p_.num_queries)) * group_;
    if (splits_ > 1) {
      const size_t parts = static_cast<size_t>(units * splits_);
      partial_acc_.assign(parts * max_unit_rows_ * dp_, 0.0f);
      partial_m_.assign(parts * max_unit_rows_, kNegInf);
      partial_l_.assign(parts * max_unit_rows_, 0.0f);
    }
    ParallelFor(units * splits_, [this](int64_t item) { RunItem(item / splits_, item % splits_); });
    if (failed_.load()) return error_;
    if (splits_ > 1) ParallelFor(units, [this](int64_t unit) { Merge(unit); });
    return absl::OkStatus();
  }

 private:
  // Rows [r0, r1) of the problem that query block `qb` covers.
  void UnitRows(int64_t unit, int64_t* r0, int64_t* r1, int* kv_head, int64_t* layout_row) const {
    const int64_t qb = unit / p_.num_kv_heads;
    *kv_head = static_cast<int>(unit % p_.num_kv_heads);
    *r0 = qb * layout_.q_block_tokens;
    *r1 = std::min(*r0 + layout_.q_block_tokens, p_.num_queries);
    *layout_row = qb * layout_.num_layout_heads + (layout_.num_layout_heads == 1 ? 0 : *kv_head);
  }

  void Fail(absl::Status status) {
    std::lock_guard<std::mutex> lock(error_mutex_);
    if (!failed_.load()) {
      error_ = std::move(status);
      failed_.store(true);
    }
  }

  void RunItem(int64_t unit, int64_t split) {
    if (failed_.load()) return;
    int64_t r0, r1, layout_row;
    int kv_head;
    UnitRows(unit, &r0, &r1, &kv_head, &layout_row);
    const int64_t eb = layout_.row_begin[layout_row];
    const int64_t ee = layout_.row_begin[layout_row + 1];
    const int64_t per_split = (ee - eb + splits_ - 1) / splits_;
    const int64_t sb = std::min(ee, eb + split * per_split);
    const int64_t se = std::min(ee, sb + per_split);
    thread_local std::vector<Scratch> scratch_by_thread;
    if (scratch_by_thread.empty() ||
        static_cast<int>(scratch_by_thread[0].acc.size()) != kRowTile * dp_) {
      scratch_by_thread.clear();
      scratch_by_thread.emplace_back(dp_);
    }
    Scratch& sc = scratch_by_thread[0];
    const int64_t unit_rows = (r1 - r0) * group_;
    for (int64_t t0 = 0; t0 < unit_rows; t0 += kRowTile) {
      const int rows = static_cast<int>(std::min<int64_t>(kRowTile, unit_rows - t0));
      RunTile(sc, r0, kv_head, t0, rows, sb, se);
      if (failed_.load()) return;
      if (splits_ == 1) {
        WriteOutput(sc, r0, kv_head, t0, rows);
      } else {
        const int64_t part = (unit * splits_ + split) * max_unit_rows_;
        for (int i = 0; i < rows; ++i) {
          partial_m_[part + t0 + i] = sc.m[i];
          partial_l_[part + t0 + i] = sc.l[i];
          std::memcpy(&partial_acc_[(part + t0 + i) * dp_], &sc.acc[i * dp_], sizeof(float) * d_);
        }
      }
    }
  }

  // Rows t0 .. t0+rows of the unit starting at query row r0, against entries [eb, ee). Scores
  // are computed transposed (keys x rows) so that K and V can be read in place from their
  // pages: S^T = K Q^T, then O += P V with P^T as the left operand.
  void RunTile(Scratch& sc, int64_t r0, int kv_head, int64_t t0, int rows, int64_t eb, int64_t ee) {
    const int rows4 = RoundUp(rows, 4);
    const int rows16 = RoundUp(rows, 16);
    int64_t pos[kRowTile];   // absolute query position per row
    int in_block[kRowTile];  // query row within the query block (for masks)
    std::fill(sc.qt.begin(), sc.qt.begin() + static_cast<int64_t>(d_) * rows16, 0.0f);
    for (int i = 0; i < rows; ++i) {
      const int64_t t = t0 + i;
      const int64_t r = r0 + t / group_;
      const int hq = kv_head * group_ + static_cast<int>(t % group_);
      pos[i] = p_.q_pos0 + r;
      in_block[i] = static_cast<int>(r - r0);
      const float* src = p_.q + (r * p_.num_q_heads + hq) * static_cast<int64_t>(d_);
      for (int d = 0; d < d_; ++d) sc.qt[d * rows16 + i] = src[d] * p_.scale;
    }
    for (int i = 0; i < rows16; ++i) {
      sc.m[i] = kNegInf;
      sc.l[i] = 0.0f;
    }
    std::fill(sc.acc.begin(), sc.acc.begin() + static_cast<int64_t>(rows4) * dp_, 0.0f);
    const int64_t pmin = pos[0];
    const int64_t pmax = pos[rows - 1];
    const int bk = layout_.kv_block_tokens;
    const int64_t words = layout_.words_per_mask();
    const int64_t page = p_.kv.page_tokens;
    // Reading in place needs whole 16-float rows (the micro-kernel's width) and pages large
    // enough that tiles split at page ends stay efficient.
    const bool in_place_ok = d_ == dp_ && page >= 16;
    const int row_stride = p_.num_kv_heads * d_;

    for (int64_t e = eb; e < ee; ++e) {
      const int64_t block_start = static_cast<int64_t>(layout_.kv_block[e]) * bk;
      const int64_t block_end = std::min({block_start + bk, kv_length_, pmax + 1});
      const uint64_t* mask = layout_.mask_index[e] < 0
                                 ? nullptr
                                 : layout_.masks.data() + layout_.mask_index[e] * words;
      for (int64_t c0 = block_start; c0 < block_end;) {
        int64_t c1 = std::min(c0 + kKeyTile, block_end);
        if (in_place_ok) c1 = std::min(c1, (c0 / page + 1) * page);
        const int n = static_cast<int>(c1 - c0);
        const int n4 = RoundUp(n, 4);
        const float* kbase = nullptr;
        const float* vbase = nullptr;
        int ld = dp_;
        if (in_place_ok && n == n4 && p_.kv.resident(c0)) {
          kbase = p_.kv.key(c0, kv_head);
          vbase = p_.kv.value(c0, kv_head);
          ld = row_stride;
        } else {
          if (!GatherKv(sc, kv_head, c0, n, n4, block_start, mask, rows, pos, in_block)) return;
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

  // Online softmax step for one tile of transposed scores st[n4][rows16]: new maxima, rescaling
  // of earlier sums and outputs, probabilities in place of the scores.
  void UpdateSoftmax(Scratch& sc, int n4, int rows4, int rows16) {
    float* st = sc.st.data();
    float mx[kRowTile];
    std::fill(mx, mx + rows16, kNegInf);
    for (int j = 0; j < n4; ++j) {
      const float* srow = st + j * rows16;
      for (int i = 0; i < rows16; ++i) mx[i] = std::max(mx[i], srow[i]);
    }
    for (int i = 0; i < rows16; ++i) {
      const float m_new = std::max(sc.m[i], mx[i]);
      // A row that has seen no readable key keeps -inf and a shift of 0 (its scores are -inf).
      sc.shift[i] = m_new == kNegInf ? 0.0f : m_new;
      sc.corr[i] = sc.m[i] == kNegInf ? kNegInf : sc.m[i] - m_new;
      sc.m[i] = m_new;
    }
    ExpNonPositiveInPlace(sc.corr, rows16);
    for (int j = 0; j < n4; ++j) {
      float* srow = st + j * rows16;
      for (int i = 0; i < rows16; ++i) srow[i] -= sc.shift[i];
    }
    ExpNonPositiveInPlace(st, n4 * rows16);
    float sum[kRowTile];
    std::fill(sum, sum + rows16, 0.0f);
    for (int j = 0; j < n4; ++j) {
      const float* srow = st + j * rows16;
      for (int i = 0; i < rows16; ++i) sum[i] += srow[i];
    }
    for (int i = 0; i < rows16; ++i) sc.l[i] = sc.l[i] * sc.corr[i] + sum[i];
    for (int i = 0; i < rows4; ++i) {
      if (sc.corr[i] == 1.0f) continue;
      float* arow = &sc.acc[i * dp_];
      for (int d = 0; d < d_; ++d) arow[d] *= sc.corr[i];
    }
  }

  // Copies keys and values [c0, c0+n) of `kv_head` into rows of dp floats, zero rows up to n4.
  // A released page is an error only when some row of the tile would read it.
  bool GatherKv(Scratch& sc, int kv_head, int64_t c0, int n, int n4, int64_t block_start,
                const uint64_t* mask, int rows, const int64_t* pos, const int* in_block) {
    for (int j = 0; j < n4; ++j) {
      float* kd = &sc.k[j * dp_];
      float* vd = &sc.v[j * dp_];
      const int64_t key = c0 + j;
      const float* k = j < n ? p_.kv.key(key, kv_head) : nullptr;
      const float* v = j < n ? p_.kv.value(key, kv_head) : nullptr;
      if (k == nullptr || v == nullptr) {
        bool needed = false;
        for (int i = 0; i < rows && !needed && j < n; ++i) {
          needed = key <= pos[i] &&
                   (mask == nullptr || MaskAllows(mask, layout_.kv_block_tokens, in_block[i],
                                                  static_cast<int>(key - block_start)));
        }
        if (needed) {
          Fail(absl::FailedPreconditionError(absl::StrCat(
              "attention kernel: layer ", p_.layer, " request ", p_.request_id,
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

  void WriteOutput(const Scratch& sc, int64_t r0, int kv_head, int64_t t0, int rows) {
    for (int i = 0; i < rows; ++i) {
      const int64_t t = t0 + i;
      const int64_t r = r0 + t / group_;
      const int hq = kv_head * group_ + static_cast<int>(t % group_);
      float* dst = out_ + (r * p_.num_q_heads + hq) * static_cast<int64_t>(d_);
      const float inv = sc.l[i] > 0.0f ? 1.0f / sc.l[i] : 0.0f;
      const float* src = &sc.acc[i * dp_];
      for (int d = 0; d < d_; ++d) dst[d] = src[d] * inv;
    }
  }

  // Combines the split partial results of one unit: o = sum_s e^(m_s - M) acc_s / sum_s e^(m_s -
  // M) l_s with M the largest m_s.
  void Merge(int64_t unit) {
    int64_t r0, r1, layout_row;
    int kv_head;
    UnitRows(unit, &r0, &r1, &kv_head, &layout_row);
    const int64_t unit_rows = (r1 - r0) * group_;
    std::vector<float> o(d_);
    for (int64_t t = 0; t < unit_rows; ++t) {
      float mx = kNegInf;
      for (int64_t s = 0; s < splits_; ++s) {
        mx = std::max(mx, partial_m_[(unit * splits_ + s) * max_unit_rows_ + t]);
      }
      std::fill(o.begin(), o.end(), 0.0f);
      float sum = 0.0f;
      if (mx != kNegInf) {
        for (int64_t s = 0; s < splits_; ++s) {
          const int64_t idx = (unit * splits_ + s) * max_unit_rows_ + t;
          if (partial_m_[idx] == kNegInf) continue;
          float w = partial_m_[idx] - mx;
          ExpNonPositiveInPlace(&w, 1);
          sum += w * partial_l_[idx];
          const float* acc = &partial_acc_[idx * dp_];
          for (int d = 0; d < d_; ++d) o[d] += w * acc[d];
        }
      }
      const int64_t r = r0 + t / group_;
      const int hq = kv_head * group_ + static_cast<int>(t % group_);
      float* dst = out_ + (r * p_.num_q_heads + hq) * static_cast<int64_t>(d_);
      const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
      for (int d = 0; d < d_; ++d) dst[d] = o[d] * inv;
    }
  }

  const AttentionProblem& p_;
  const BlockSparseLayout& layout_;
  float* out_;
  int group_ = 1;
  int d_ = 0;
  int dp_ = 0;
  int64_t kv_length_ = 0;
  int64_t splits_ = 1;
  int64_t max_unit_rows_ = 0;
  std::vector<float> partial_acc_;
  std::vector<float> partial_m_;
  std::vector<float> partial_l_;
  std::atomic<bool> failed_{false};
  std::mutex error_mutex_;
  absl::Status error_;
};

absl::Status CheckProblem(const AttentionProblem& p, const BlockSparseLayout& layout,
                          const float* out) {
  const std::string where = absl::StrCat("attention kernel (layer ", p.layer, ")");
  if (p.num_q_heads <= 0 || p.num_kv_heads <= 0 || p.num_q_heads % p.num_kv_heads != 0) {
    return InvalidInput(where, "num_q_heads a positive multiple of num_kv_heads",
                        absl::StrCat(p.num_q_heads, " and ", p.num_kv_heads));
  }
  if (p.head_dim <= 0) return InvalidInput(where, "head_dim > 0", absl::StrCat(p.head_dim));
  if (!std::isfinite(p.scale)) return InvalidInput(where, "a finite scale", absl::StrCat(p.scale));
  if (p.num_queries < 0 || p.q_pos0 < 0) {
    return InvalidInput(where, "q_pos0 >= 0 and num_queries >= 0",
                        absl::StrCat(p.q_pos0, " and ", p.num_queries));
  }
  if (p.num_queries > 0 && (p.q == nullptr || out == nullptr)) {
    return InvalidInput(where, "query and output pointers", "null");
  }
  if (p.kv.num_kv_heads != p.num_kv_heads || p.kv.head_dim != p.head_dim) {
    return InvalidInput(where,
                        absl::StrCat("KV with ", p.num_kv_heads, " heads of dim ", p.head_dim),
                        absl::StrCat(p.kv.num_kv_heads, " heads of dim ", p.kv.head_dim));
  }
  if (p.kv.length < p.q_pos0 + p.num_queries) {
    return InvalidInput(where, absl::StrCat("KV length >= ", p.q_pos0 + p.num_queries),
                        absl::StrCat(p.kv.length));
  }
  if (p.kv.length > 0 &&
      (p.kv.page_tokens <= 0 || p.kv.k_pages == nullptr || p.kv.v_pages == nullptr ||
       p.kv.num_pages * p.kv.page_tokens < p.kv.length)) {
    return InvalidInput(where, absl::StrCat("KV pages covering ", p.kv.length, " positions"),
                        absl::StrCat(p.kv.num_pages, " pages of ", p.kv.page_tokens));
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
  return ValidateLayout(layout, p.num_kv_heads);
}

}  // namespace

absl::Status RunBlockSparseAttentionCpu(const AttentionProblem& problem,
                                        const BlockSparseLayout& layout, float* out) {
  FLUXATTN_RETURN_IF_ERROR(CheckProblem(problem, layout, out));
  if (problem.num_queries == 0) return absl::OkStatus();
  Kernel kernel(problem, layout, out);
  return kernel.Run();
}

}  // namespace fluxattn
