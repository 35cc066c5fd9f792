#include "xattention_backend.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "fluxattn/attention/cpu_gemm.h"
#include "fluxattn/attention/layout_builder.h"
#include "fluxattn/attention/parallel_for.h"
#include "fluxattn/attention/param_reader.h"
#include "fluxattn/device.h"
#include "fluxattn/status.h"
#if defined(FLUXATTN_WITH_CUDA)
#include "fluxattn/kernels/cuda_model_ops.h"
#include "fluxattn/kernels/cuda_xattention.h"
#endif

namespace fluxattn::plugins {

// The CUDA kernels' tile: layouts on a GPU list blocks of multiples of this many tokens.
constexpr int kCudaTile = 64;
// The most device memory one slab of antidiagonal logits takes.
constexpr size_t kLogitsSlabBytes = size_t{64} << 20;

struct XAttentionBackend::Cuda {
  fluxattn::Device* device = nullptr;
  DeviceBuffer queries, keys, logits, rows, scores, table, keep;
#if defined(FLUXATTN_WITH_CUDA)
  std::unique_ptr<kernels::cuda::Gemm> gemm;
#endif
};

// Whether `t` is a contiguous [rows, heads, dim] view.
bool RowMajor(const TensorView& t, int64_t rows, int64_t heads, int64_t dim) {
  return t.data != nullptr && t.rank == 3 && t.shape[0] == rows && t.shape[1] == heads &&
         t.shape[2] == dim && t.stride[2] == 1 && t.stride[1] == dim && t.stride[0] == heads * dim;
}

XAttentionBackend::XAttentionBackend(const XAttentionConfig& config) : config_(config) {}
XAttentionBackend::~XAttentionBackend() = default;

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
  caps.devices = {DeviceType::kCpu, DeviceType::kCuda};
  caps.dtypes = {DType::kF32, DType::kBF16};
  caps.data_dependent_layout = true;
  return caps;
}

absl::Status XAttentionBackend::Supports(const ProblemDesc& problem) const {
  FLUXATTN_RETURN_IF_ERROR(AttentionBackend::Supports(problem));
  if (problem.device == DeviceType::kCpu && problem.dtype != DType::kF32) {
    return absl::UnimplementedError(
        absl::StrCat("on the cpu it runs f32, not ", DTypeName(problem.dtype)));
  }
  if (problem.device == DeviceType::kCuda && problem.phase == AttentionPhase::kPrefill) {
    if (!CudaCompiledIn()) return absl::UnimplementedError("this build has no CUDA");
    if (config_.block_size % kCudaTile != 0) {
      return absl::UnimplementedError(absl::StrCat("on cuda block_size must be a multiple of ",
                                                   kCudaTile, " (the kernels' tile), found ",
                                                   config_.block_size));
    }
    if (problem.head_dim % 8 != 0) {
      return absl::UnimplementedError(absl::StrCat(
          "on cuda it scores heads of a multiple of 8 dimensions, found ", problem.head_dim));
    }
  }
  return absl::OkStatus();
}

absl::Status XAttentionBackend::DeviceScores(const AttentionProblem& p, std::vector<float>* scores,
                                             std::vector<uint32_t>* keep) {
#if defined(FLUXATTN_WITH_CUDA)
  namespace kc = kernels::cuda;
  if (cuda_ == nullptr) {
    auto made = std::make_unique<Cuda>();
    FLUXATTN_ASSIGN_OR_RETURN(made->device, CudaDevice(p.q.ordinal));
    for (DeviceBuffer* b : {&made->queries, &made->keys, &made->logits, &made->rows, &made->scores,
                            &made->table, &made->keep}) {
      b->Bind(made->device);
    }
    FLUXATTN_ASSIGN_OR_RETURN(made->gemm, kc::Gemm::Create(size_t{32} << 20, false, false));
    cuda_ = std::move(made);
  }
  Cuda& D = *cuda_;
  const int s = config_.stride, bsz = config_.block_size, g_rows = bsz / s;
  const int d = p.head_dim, hq = p.num_q_heads, hkv = p.num_kv_heads, group = hq / hkv;
  const int64_t n = p.num_queries, len = p.kv.length, pool_len = p.q_pos0;
  const bool f32 = p.dtype == DType::kF32;
  const DType dtype = f32 ? DType::kF32 : DType::kBF16;
  if (len != pool_len + n || p.q.dtype != dtype || p.k_new.dtype != dtype ||
      !RowMajor(p.q, n, hq, d) || !RowMajor(p.k_new, n, hkv, d)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "xattention on cuda: expected contiguous ", DTypeName(dtype), " queries and new keys for ",
        n, " rows after ", pool_len, " pooled positions, found ",
        p.k_new.data == nullptr ? "no new keys" : absl::StrCat(p.k_new.numel(), " key values"),
        " and KV length ", len));
  }
  for (int64_t i = 0; i * p.kv.page_tokens < pool_len; ++i) {
    if (i >= p.kv.num_pages || p.kv.pages[i] < 0) {
      return absl::FailedPreconditionError(absl::StrCat("xattention: expected KV position ",
                                                        i * p.kv.page_tokens,
                                                        " to be resident, found it released"));
    }
  }
  fluxattn::Device* dev = D.device;
  Stream* stream = dev->default_stream();
  void* cu = stream->native_handle();
  const size_t elem = DTypeSize(dtype);
  const int64_t sd = int64_t{s} * d;
  const int64_t key_groups = (len + s - 1) / s;
  const int64_t q_blocks = (n + bsz - 1) / bsz, kv_blocks = (len + bsz - 1) / bsz;
  const int64_t rows = q_blocks * g_rows;                  // strided rows per query head
  const int64_t padded_groups = (key_groups + 7) / 8 * 8;  // the product's columns
  FLUXATTN_ASSIGN_OR_RETURN(void* qs, D.queries.Ensure(hkv * rows * group * sd * elem));
  FLUXATTN_ASSIGN_OR_RETURN(void* ks, D.keys.Ensure(hkv * padded_groups * sd * elem));
  const int32_t* table = nullptr;
  if (pool_len > 0) {
    FLUXATTN_ASSIGN_OR_RETURN(void* t, D.table.Ensure(p.kv.num_pages * sizeof(int32_t)));
    FLUXATTN_RETURN_IF_ERROR(dev->Copy(t, p.kv.pages, p.kv.num_pages * sizeof(int32_t),
                                       CopyKind::kHostToDevice, stream));
    table = static_cast<const int32_t*>(t);
  }
  FLUXATTN_RETURN_IF_ERROR(
      kc::XAttentionStridedQueries(p.q.data, f32, n, hq, hkv, d, s, bsz, qs, cu));
  FLUXATTN_RETURN_IF_ERROR(kc::XAttentionStridedKeys(p.kv.k_pool, p.kv.page_tokens, p.kv.head_dim,
                                                     table, pool_len, p.k_new.data, len,
                                                     padded_groups * s, f32, hkv, d, ks, cu));
  // Query blocks per slab, so that a slab's logits stay within kLogitsSlabBytes.
  const int64_t block_logit_bytes = int64_t{g_rows} * group * padded_groups * sizeof(float);
  const int64_t slab = std::clamp<int64_t>(kLogitsSlabBytes / block_logit_bytes, 1, q_blocks);
  FLUXATTN_ASSIGN_OR_RETURN(void* logits, D.logits.Ensure(slab * block_logit_bytes));
  FLUXATTN_ASSIGN_OR_RETURN(void* row_sums,
                            D.rows.Ensure(slab * g_rows * group * kv_blocks * sizeof(float)));
  const size_t score_bytes = hkv * q_blocks * kv_blocks * sizeof(float);
  FLUXATTN_ASSIGN_OR_RETURN(void* out, D.scores.Ensure(score_bytes));
  using OT = kc::Gemm::OutputType;
  for (int h = 0; h < hkv; ++h) {
    const char* w = static_cast<const char*>(ks) + h * padded_groups * sd * elem;
    for (int64_t qb0 = 0; qb0 < q_blocks; qb0 += slab) {
      const int64_t nq = std::min(slab, q_blocks - qb0);
      // The key groups the slab's last query sees, as a multiple of 8 columns.
      const int64_t last = p.q_pos0 + std::min((qb0 + nq) * bsz, n) - 1;
      const int64_t cols = std::min(padded_groups, (last / s + 1 + 7) / 8 * 8);
      const char* x = static_cast<const char*>(qs) + (h * rows + qb0 * g_rows) * group * sd * elem;
      FLUXATTN_RETURN_IF_ERROR(D.gemm->Linear(x, w, logits, nq * g_rows * group, cols, sd,
                                              f32 ? OT::kF32Inputs : OT::kF32, cu));
      FLUXATTN_RETURN_IF_ERROR(kc::XAttentionBlockScores(
          static_cast<const float*>(logits), cols, group, s, bsz, p.q_pos0, n, key_groups, qb0, nq,
          p.scale / static_cast<float>(s), kv_blocks, static_cast<float*>(row_sums),
          static_cast<float*>(out) + (h * q_blocks + qb0) * kv_blocks, cu));
    }
  }
  scores->clear();
  keep->clear();
  if (kv_blocks <= kc::kXAttentionSelectMaxBlocks) {
    // The rule on the device too: a bit per block comes back instead of a float.
    const int64_t words = (kv_blocks + 31) / 32;
    const size_t keep_bytes = hkv * q_blocks * words * sizeof(uint32_t);
    FLUXATTN_ASSIGN_OR_RETURN(void* bits, D.keep.Ensure(keep_bytes));
    FLUXATTN_RETURN_IF_ERROR(kc::XAttentionSelectBlocks(
        static_cast<const float*>(out), hkv, q_blocks, static_cast<int32_t>(kv_blocks), bsz,
        p.q_pos0, n, config_.sink_blocks, static_cast<float>(config_.threshold),
        static_cast<uint32_t*>(bits), cu));
    keep->resize(hkv * q_blocks * words);
    FLUXATTN_RETURN_IF_ERROR(
        dev->Copy(keep->data(), bits, keep_bytes, CopyKind::kDeviceToHost, stream));
    return stream->Synchronize();
  }
  scores->resize(hkv * q_blocks * kv_blocks);
  FLUXATTN_RETURN_IF_ERROR(
      dev->Copy(scores->data(), out, score_bytes, CopyKind::kDeviceToHost, stream));
  return stream->Synchronize();
#else
  (void)p;
  (void)scores;
  (void)keep;
  return absl::UnimplementedError("xattention on cuda: this build has no CUDA");
#endif
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
  const int64_t kv_blocks = (len + bsz - 1) / bsz;
  // On a GPU every head's scores come from the device at once.
  const bool cuda = p.device == DeviceType::kCuda;
  std::vector<float> device_scores;
  std::vector<uint32_t> device_keep;
  if (cuda && config_.threshold < 1.0) {
    FLUXATTN_RETURN_IF_ERROR(DeviceScores(p, &device_scores, &device_keep));
  }
  if (!device_keep.empty()) {
    // The device picked the blocks: bit b of row (h, qb) keeps block b.
    const int64_t words = (kv_blocks + 31) / 32;
    LayoutBuilder builder(bsz, bsz, p.q_pos0, p.num_queries, len, heads);
    std::vector<int32_t> blocks;
    for (int64_t qb = 0; qb < q_blocks; ++qb) {
      for (int h = 0; h < heads; ++h) {
        builder.StartRow();
        blocks.clear();
        LayoutBuilder::AppendSetBits(&device_keep[(h * q_blocks + qb) * words], words, &blocks);
        for (int32_t b : blocks) builder.AddBlock(b);
      }
    }
    FLUXATTN_ASSIGN_OR_RETURN(*layout, builder.Build());
    return absl::OkStatus();
  }
  // selected[qb * heads + h]: ascending KV blocks.
  std::vector<std::vector<int32_t>> selected(q_blocks * heads);
  for (int h = 0; h < heads; ++h) {
    std::vector<std::vector<double>> scores;
    if (config_.threshold < 1.0 && cuda) {
      scores.assign(q_blocks, std::vector<double>(kv_blocks));
      for (int64_t qb = 0; qb < q_blocks; ++qb) {
        const float* row = &device_scores[(h * q_blocks + qb) * kv_blocks];
        std::copy(row, row + kv_blocks, scores[qb].begin());
      }
    } else if (config_.threshold < 1.0) {
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
