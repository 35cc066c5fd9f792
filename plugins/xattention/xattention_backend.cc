#include "xattention_backend.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "fluxattn/attention/cpu_gemm.h"
#include "fluxattn/attention/layout_builder.h"
#include "fluxattn/attention/parallel_for.h"
#include "fluxattn/attention/param_reader.h"
#include "fluxattn/status.h"

namespace fluxattn::plugins {
std::vector<ParamSpec> XAttentionBackend::Params() {
  std::vector<ParamSpec> specs;
  specs.push_back(IntParamSpec("block_size", 128, 1, 4096,
                               "Query and KV block size in tokens (a multiple of stride)."));
  specs.push_back(IntParamSpec("stride", 8, 1, 256, "Antidiagonal stride S used for scoring."));
  specs.push_back(FloatParamSpec(
      "threshold", 0.9, 0.0, 1.0,
      "Cumulative threshold tau: per query block, keep the highest-scoring KV blocks until "
      "they hold this share of the estimated attention mass (1 keeps every causal block)."));
  specs.push_back(IntParamSpec("sink_blocks", 1, 0, 1 << 20,
                               "Leading KV blocks every query block keeps (attention sinks)."));
  return specs;
}

absl::StatusOr<std::unique_ptr<XAttentionBackend>> XAttentionBackend::Create(
    const ParamValues& params) {
  XAttentionConfig config;
  FLUXATTN_ASSIGN_OR_RETURN(int64_t block, ReadParam<int64_t>(params, "block_size"));
  FLUXATTN_ASSIGN_OR_RETURN(int64_t stride, ReadParam<int64_t>(params, "stride"));
  FLUXATTN_ASSIGN_OR_RETURN(config.threshold, ReadParam<double>(params, "threshold"));
  FLUXATTN_ASSIGN_OR_RETURN(int64_t sinks, ReadParam<int64_t>(params, "sink_blocks"));
  if (block < 1 || block > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("block_size: expected an integer in [1, 4096], found ", block));
  }
  if (stride < 1 || block % stride != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "stride: expected a positive divisor of block_size (", block, "), found ", stride));
  }
  if (!(config.threshold >= 0.0 && config.threshold <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("threshold: expected a value in [0, 1], found ", config.threshold));
  }
  if (sinks < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sink_blocks: expected an integer >= 0, found ", sinks));
  }
  config.block_size = static_cast<int>(block);
  config.stride = static_cast<int>(stride);
  config.sink_blocks = static_cast<int>(std::min<int64_t>(sinks, 1 << 20));
  return std::make_unique<XAttentionBackend>(config);
}

AttentionCapabilities XAttentionBackend::capabilities() const {
  AttentionCapabilities caps;
  caps.data_dependent_layout = true;
  return caps;
}

absl::Status XAttentionBackend::BuildLayout(const AttentionProblem& problem,
                                            BlockSparseLayout* layout) {
  if (problem.phase == AttentionPhase::kDecode) {
    *layout = DenseCausalLayout(problem.q_pos0, problem.num_queries, problem.kv.length);
    return absl::OkStatus();
  }
  return BuildPrefillLayout(problem, layout);
}

// Scores for one KV head. Strided queries: row u of query block qb is the concatenation over
// k of the query at block offset u*S + S-1-k (zeros past the end); strided keys: column v is the
// concatenation over k of the key at position v*S + k. Their product, scaled by scale/S, is the
// mean antidiagonal logit of the S x S group pair; it is soft-maxed over the causal key groups
// of each strided query row, and the probabilities are summed per KV block.
absl::StatusOr<std::vector<std::vector<double>>> XAttentionBackend::ScoreBlocks(
    const AttentionProblem& p, int kv_head) const {
  const int s = config_.stride;
  const int bsz = config_.block_size;
  const int d = p.head_dim;
  const int sd = s * d;
  const int group = p.num_q_heads / p.num_kv_heads;
  const int64_t len = p.kv.length;
  const int64_t key_groups = (len + s - 1) / s;
  const int64_t kv_blocks = (len + bsz - 1) / bsz;
  const int64_t q_blocks = (p.num_queries + bsz - 1) / bsz;
  const int64_t gcols = (key_groups + 15) / 16 * 16;
  // Strided keys, transposed: [S*D][key groups].
  std::vector<float> kt(static_cast<size_t>(sd) * gcols, 0.0f);
  for (int64_t v = 0; v < key_groups; ++v) {
    for (int k = 0; k < s; ++k) {
      const int64_t pos = v * s + k;
      if (pos >= len) break;
      const float* key = p.kv.key(pos, kv_head);
      if (key == nullptr) {
        return absl::FailedPreconditionError(absl::StrCat("xattention: expected KV position ", pos,
                                                          " to be resident, found it released"));
      }
      for (int i = 0; i < d; ++i) kt[(static_cast<int64_t>(k) * d + i) * gcols + v] = key[i];
    }
  }
  std::vector<std::vector<double>> scores(q_blocks, std::vector<double>(kv_blocks, 0.0));
  const int rows_per_block = (bsz + s - 1) / s;
  const float scale = p.scale / static_cast<float>(s);
  ParallelFor(q_blocks, [&](int64_t qb) {
    const int64_t r0 = qb * bsz;
    const int64_t r1 = std::min<int64_t>(r0 + bsz, p.num_queries);
    const int urows = static_cast<int>((r1 - r0 + s - 1) / s);
    // Key groups that any query of this block can see.
    const int64_t last_pos = p.q_pos0 + r1 - 1;
    const int64_t vcols = std::min(key_groups, last_pos / s + 1);
    const int ncols = static_cast<int>((vcols + 15) / 16 * 16);
    const int m = group * rows_per_block;
    std::vector<float> a(static_cast<size_t>(m) * sd, 0.0f);
    std::vector<float> logits(static_cast<size_t>(m) * ncols);
    for (int g = 0; g < group; ++g) {
      const int hq = kv_head * group + g;
      for (int u = 0; u < urows; ++u) {
        float* row = &a[(static_cast<int64_t>(g) * rows_per_block + u) * sd];
        for (int k = 0; k < s; ++k) {
          const int64_t r = r0 + static_cast<int64_t>(u) * s + (s - 1 - k);
          if (r >= r1) continue;
          const float* q = p.host_q() + (r * p.num_q_heads + hq) * static_cast<int64_t>(d);
          for (int i = 0; i < d; ++i) row[k * d + i] = q[i] * scale;
        }
      }
    }
    GemmF32(m, ncols, sd, a.data(), sd, kt.data(), static_cast<int>(gcols), logits.data(), ncols,
            false);
    std::vector<double>& out = scores[qb];
    for (int g = 0; g < group; ++g) {
      for (int u = 0; u < urows; ++u) {
        float* row = &logits[(static_cast<int64_t>(g) * rows_per_block + u) * ncols];
        // Causal at group level: group v is visible when its first key is not after the last
        // query of the strided row.
        const int64_t u_last = p.q_pos0 + std::min<int64_t>(r0 + (u + 1) * s, r1) - 1;
        const int64_t visible = std::min(vcols, u_last / s + 1);
        float mx = -INFINITY;
        for (int64_t v = 0; v < visible; ++v) mx = std::max(mx, row[v]);
        double sum = 0;
        for (int64_t v = 0; v < visible; ++v) {
          row[v] = std::exp(row[v] - mx);
          sum += row[v];
        }
        for (int64_t v = 0; v < visible; ++v) out[v * s / bsz] += row[v] / sum;
      }
    }
  });
  return scores;
}

absl::Status XAttentionBackend::BuildPrefillLayout(const AttentionProblem& p,
                                                   BlockSparseLayout* layout) {
  const int bsz = config_.block_size;
  const int64_t len = p.kv.length;
  const int64_t q_blocks = (p.num_queries + bsz - 1) / bsz;
  const int heads = p.num_kv_heads;
  // selected[qb * heads + h]: ascending KV blocks.
  std::vector<std::vector<int32_t>> selected(q_blocks * heads);
  for (int h = 0; h < heads; ++h) {
    std::vector<std::vector<double>> scores;
    if (config_.threshold < 1.0) {
      FLUXATTN_ASSIGN_OR_RETURN(scores, ScoreBlocks(p, h));
    }
    ParallelFor(q_blocks, [&](int64_t qb) {
      const int64_t p_first = p.q_pos0 + qb * bsz;
      const int64_t p_last = p.q_pos0 + std::min<int64_t>((qb + 1) * bsz, p.num_queries) - 1;
      const int64_t causal_blocks = std::min(p_last, len - 1) / bsz + 1;
      std::vector<int32_t>& keep = selected[qb * heads + h];
      if (config_.threshold >= 1.0) {
        keep.resize(causal_blocks);
        std::iota(keep.begin(), keep.end(), 0);
        return;
      }
      const std::vector<double>& score = scores[qb];
      std::vector<uint8_t> taken(causal_blocks, 0);
      double total = 0, mass = 0;
      for (int64_t b = 0; b < causal_blocks; ++b) total += score[b];
      auto take = [&](int64_t b) {
        if (!taken[b]) {
          taken[b] = 1;
          mass += score[b];
        }
      };
      for (int64_t b = 0; b < std::min<int64_t>(config_.sink_blocks, causal_blocks); ++b) take(b);
      for (int64_t b = p_first / bsz; b < causal_blocks; ++b) take(b);  // the diagonal
      std::vector<int32_t> order;
      for (int64_t b = 0; b < causal_blocks; ++b) {
        if (!taken[b]) order.push_back(static_cast<int32_t>(b));
      }
      std::stable_sort(order.begin(), order.end(),
                       [&](int32_t x, int32_t y) { return score[x] > score[y]; });
      for (int32_t b : order) {
        if (mass >= config_.threshold * total) break;
        take(b);
      }
      for (int64_t b = 0; b < causal_blocks; ++b) {
        if (taken[b]) keep.push_back(static_cast<int32_t>(b));
      }
    });
  }
  LayoutBuilder builder(bsz, bsz, p.q_pos0, p.num_queries, len, heads);
  for (int64_t qb = 0; qb < q_blocks; ++qb) {
    for (int h = 0; h < heads; ++h) {
      builder.StartRow();
      for (int32_t b : selected[qb * heads + h]) builder.AddBlock(b);
    }
  }
  FLUXATTN_ASSIGN_OR_RETURN(*layout, builder.Build());
  return absl::OkStatus();
}

}  // namespace fluxattn::plugins
