// The attention oracle and random problems, shared by the project's tests and
// `fluxattn check-plugin` (and usable by a plugin's own tests): random inputs, a paged KV cache
// over plain arrays whose pages can be released, and dense masked softmax attention in double
// precision.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "fluxattn/attention_backend.h"
#include "fluxattn/kv_cache.h"
#include "fluxattn/tensor_view.h"

namespace fluxattn::testing {

inline std::vector<float> RandomVector(size_t n, std::mt19937_64& rng, float lo = -1.0f,
                                       float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Keys and values [length][heads][dim] stored the way the engine's pool stores them: one array
// of pages [pages][page_tokens][heads][dim] for K and one for V, with the sequence's pages placed
// in a shuffled order behind a page table (so a kernel that ignores the table reads the wrong
// keys). Pages can be released: their table entry becomes -1 and their storage is overwritten
// with NaN, so reading them would show.
class PagedKv {
 public:
  PagedKv(const std::vector<float>& k, const std::vector<float>& v, int64_t length, int heads,
          int dim, int page_tokens, uint64_t shuffle_seed = 7)
      : heads_(heads), dim_(dim), page_tokens_(page_tokens), length_(length) {
    const int64_t pages = (length + page_tokens - 1) / page_tokens;
    const int64_t row = static_cast<int64_t>(heads) * dim;
    // One spare page, so that physical indices differ from logical ones even for one page.
    const int64_t slots = pages + 1;
    k_pool_.assign(slots * page_tokens * row, std::nanf(""));
    v_pool_.assign(slots * page_tokens * row, std::nanf(""));
    std::vector<int32_t> physical(slots);
    for (int64_t i = 0; i < slots; ++i) physical[i] = static_cast<int32_t>(i);
    std::mt19937_64 rng(shuffle_seed);
    std::shuffle(physical.begin(), physical.end(), rng);
    table_.assign(physical.begin(), physical.begin() + pages);
    // Unused tail rows of the last page stay NaN.
    for (int64_t pos = 0; pos < length; ++pos) {
      const int64_t dst = (table_[pos / page_tokens] * page_tokens + pos % page_tokens) * row;
      std::copy_n(&k[pos * row], row, &k_pool_[dst]);
      std::copy_n(&v[pos * row], row, &v_pool_[dst]);
    }
  }

  // Drops every page whose positions all lie outside what `retention` keeps (the cache's rule).
  int64_t Release(const KvRetention& retention) {
    if (retention.keeps_all()) return 0;
    int64_t released = 0;
    const int64_t page_elems = static_cast<int64_t>(page_tokens_) * heads_ * dim_;
    for (size_t p = 0; p < table_.size(); ++p) {
      const int64_t first = static_cast<int64_t>(p) * page_tokens_;
      const int64_t last = first + page_tokens_ - 1;
      if (first >= retention.keep_prefix && last < retention.keep_from && table_[p] >= 0) {
        std::fill_n(&k_pool_[table_[p] * page_elems], page_elems, std::nanf(""));
        std::fill_n(&v_pool_[table_[p] * page_elems], page_elems, std::nanf(""));
        table_[p] = -1;
        ++released;
      }
    }
    return released;
  }

  KvView view() const {
    KvView view;
    view.num_kv_heads = heads_;
    view.head_dim = dim_;
    view.page_tokens = page_tokens_;
    view.length = length_;
    view.dtype = DType::kF32;
    view.device = DeviceType::kCpu;
    view.k_pool = k_pool_.data();
    view.v_pool = v_pool_.data();
    view.pages = table_.data();
    view.num_pages = static_cast<int64_t>(table_.size());
    return view;
  }

 private:
  int heads_, dim_, page_tokens_;
  int64_t length_;
  std::vector<float> k_pool_, v_pool_;
  std::vector<int32_t> table_;
};

// A host f32 query view [rows, heads, dim] over `data`.
inline TensorView HostQueries(const float* data, int64_t rows, int heads, int dim) {
  return TensorView::Contiguous(const_cast<float*>(data), DType::kF32, DeviceType::kCpu,
                                {rows, heads, dim});
}

// One attention problem with random inputs: queries at positions [q_pos0, q_pos0 + num_queries)
// against keys [0, kv_length).
struct RandomAttention {
  RandomAttention(int hq, int hkv, int dim, int64_t q_pos0, int64_t num_queries, int64_t kv_length,
                  int page_tokens, uint64_t seed)
      : rng(seed),
        q(RandomVector(num_queries * hq * dim, rng)),
        k(RandomVector(kv_length * hkv * dim, rng)),
        v(RandomVector(kv_length * hkv * dim, rng)),
        kv(k, v, kv_length, hkv, dim, page_tokens, seed ^ 0x9e3779b97f4a7c15ULL) {
    problem.num_q_heads = hq;
    problem.num_kv_heads = hkv;
    problem.head_dim = dim;
    // A larger scale than 1/sqrt(d) sharpens the softmax so that a wrong mask shows clearly.
    problem.scale = 2.0f / std::sqrt(static_cast<float>(dim));
    problem.q_pos0 = q_pos0;
    problem.num_queries = num_queries;
    problem.q = HostQueries(q.data(), num_queries, hq, dim);
    problem.kv = kv.view();
    problem.phase = AttentionPhase::kPrefill;
  }
  std::mt19937_64 rng;
  std::vector<float> q, k, v;
  PagedKv kv;
  AttentionProblem problem;
};

// The oracle: for each query row r and query head h of `p`, softmax over keys j < p.kv.length
// with allowed(r, h, j) of p.scale * q_r.k_j, applied to v_j, in double. Rows without any
// allowed key give zeros. `q` holds the problem's rows [num_queries][num_q_heads][head_dim];
// `k` and `v` all keys [kv.length][num_kv_heads][head_dim] (never released: the oracle reads
// plain arrays, not the pages).
inline std::vector<double> ReferenceAttention(
    const AttentionProblem& p, const float* q, const float* k, const float* v,
    const std::function<bool(int64_t, int, int64_t)>& allowed) {
  const int64_t len = p.kv.length;
  const int d = p.head_dim;
  const int group = p.num_q_heads / p.num_kv_heads;
  std::vector<double> out(p.num_queries * p.num_q_heads * d, 0.0);
  std::vector<double> logits(len);
  for (int64_t r = 0; r < p.num_queries; ++r) {
    for (int h = 0; h < p.num_q_heads; ++h) {
      const int hk = h / group;
      const float* qv = &q[(r * p.num_q_heads + h) * d];
      double mx = -INFINITY;
      for (int64_t j = 0; j < len; ++j) {
        logits[j] = -INFINITY;
        if (!allowed(r, h, j)) continue;
        const float* kv = &k[(j * p.num_kv_heads + hk) * d];
        double dot = 0;
        for (int i = 0; i < d; ++i) dot += static_cast<double>(qv[i]) * kv[i];
        logits[j] = dot * p.scale;
        mx = std::max(mx, logits[j]);
      }
      if (mx == -INFINITY) continue;
      double sum = 0;
      double* o = &out[(r * p.num_q_heads + h) * d];
      for (int64_t j = 0; j < len; ++j) {
        if (logits[j] == -INFINITY) continue;
        const double w = std::exp(logits[j] - mx);
        sum += w;
        const float* vv = &v[(j * p.num_kv_heads + hk) * d];
        for (int i = 0; i < d; ++i) o[i] += w * vv[i];
      }
      for (int i = 0; i < d; ++i) o[i] /= sum;
    }
  }
  return out;
}

// The oracle on a RandomAttention's own problem.
inline std::vector<double> ReferenceAttention(
    const RandomAttention& in, const std::function<bool(int64_t, int, int64_t)>& allowed) {
  return ReferenceAttention(in.problem, in.q.data(), in.k.data(), in.v.data(), allowed);
}

// max |got - want| / max |want| (the error relative to the output's scale).
inline double RelativeError(const std::vector<float>& got, const std::vector<double>& want) {
  double err = 0, scale = 1e-30;
  for (size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::abs(static_cast<double>(got[i]) - want[i]));
    if (std::isnan(got[i])) err = INFINITY;
    scale = std::max(scale, std::abs(want[i]));
  }
  return err / scale;
}

}  // namespace fluxattn::testing
