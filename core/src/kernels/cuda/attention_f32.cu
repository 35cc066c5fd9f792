// Float32 attention on CUDA over the paged KV pool and the same block-sparse layouts as the bf16
// kernels: one warp per (query row, query head), the keys of the row's listed blocks visited in
// order with an online softmax in f32, each lane holding head_dim / 32 columns. Prefill and decode
// rows alike; it is the reference-precision path (the model's f32 compute, the conformance
// harness's CUDA f32 case), not a fast one.
#include <cuda_runtime.h>

#include <cmath>

#include "cuda_check.cuh"
#include "fluxattn/kernels/cuda_attention.h"
#include "pdl.cuh"

namespace fluxattn::kernels::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kMaxColsPerLane = 4;  // head_dim <= 128

__device__ __forceinline__ float WarpSumF32(float v) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffff, v, off);
  return v;
}

struct F32Params {
  AttentionShape shape;
  const float* q;
  float* out;
  const float* k_pool;
  const float* v_pool;
  int32_t page_tokens;
  SequenceBatch seqs;
  BlockSparseLayoutView layout;
  bool has_layout;
  int64_t total_rows;
};

// Folds key position j of sequence b into the running (m, l, acc) of this warp's query.
__device__ __forceinline__ void AttendKey(const F32Params& p, int b, int32_t kvh, int64_t j,
                                          const float* qv, int cols, float& m, float& l,
                                          float* acc) {
  const int lane = threadIdx.x % 32;
  const int32_t d = p.shape.head_dim;
  const int32_t page = p.seqs.page_indices[p.seqs.page_indptr[b] + j / p.page_tokens];
  const int64_t slot = static_cast<int64_t>(page) * p.page_tokens + j % p.page_tokens;
  const int64_t base = (slot * p.shape.num_kv_heads + kvh) * d;
  float dot = 0.f;
  for (int c = 0; c < cols; ++c) dot = fmaf(qv[c], p.k_pool[base + lane + 32 * c], dot);
  const float s = WarpSumF32(dot) * p.shape.scale;
  const float m_new = fmaxf(m, s);
  const float corr = expf(m - m_new);  // 0 for the first key (m = -inf)
  const float e = expf(s - m_new);
  l = l * corr + e;
  for (int c = 0; c < cols; ++c) {
    acc[c] = fmaf(acc[c], corr, e * p.v_pool[base + lane + 32 * c]);
  }
  m = m_new;
}

__global__ void AttentionF32Kernel(F32Params p) {
  PdlLaunchDependents();
  PdlWait();
  const int lane = threadIdx.x % 32;
  const int32_t hq = p.shape.num_q_heads;
  const int32_t d = p.shape.head_dim;
  const int cols = d / 32;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (warp >= p.total_rows * hq) return;
  const int64_t r = warp / hq;
  const int32_t h = static_cast<int32_t>(warp - r * hq);
  int lo = 0, hi = p.seqs.num_seqs - 1;  // the last sequence with q_indptr[b] <= r
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (p.seqs.q_indptr[mid] <= r) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  const int b = lo;
  const int64_t row_in_seq = r - p.seqs.q_indptr[b];
  const int64_t pos = p.seqs.q_pos0[b] + row_in_seq;
  const int64_t end = min(pos + 1, static_cast<int64_t>(p.seqs.kv_len[b]));  // keys [0, end)
  const int32_t kvh = h / (hq / p.shape.num_kv_heads);
  float qv[kMaxColsPerLane];
  float acc[kMaxColsPerLane];
  const float* q_row = p.q + (r * hq + h) * d;
  for (int c = 0; c < cols; ++c) {
    qv[c] = q_row[lane + 32 * c];
    acc[c] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  if (!p.has_layout) {
    for (int64_t j = 0; j < end; ++j) AttendKey(p, b, kvh, j, qv, cols, m, l, acc);
  } else {
    const BlockSparseLayoutView& L = p.layout;
    const int64_t qb = row_in_seq / L.q_block_tokens;
    const int64_t row_in_block = row_in_seq - qb * L.q_block_tokens;
    const int32_t layout_head = L.num_layout_heads == 1 ? 0 : kvh;
    const int64_t lrow = L.seq_row_begin[b] + qb * L.num_layout_heads + layout_head;
    const int64_t words_per_mask =
        (static_cast<int64_t>(L.q_block_tokens) * L.kv_block_tokens + 63) / 64;
    for (int32_t e = L.row_indptr[lrow]; e < L.row_indptr[lrow + 1]; ++e) {
      const int64_t block = L.kv_block[e];
      const int64_t j0 = block * L.kv_block_tokens;
      const int64_t j1 = min(j0 + L.kv_block_tokens, end);
      const int32_t mask = L.maybe_mask_index != nullptr ? L.maybe_mask_index[e] : -1;
      const uint64_t* bits = mask >= 0 ? L.maybe_masks + mask * words_per_mask : nullptr;
      for (int64_t j = j0; j < j1; ++j) {
        if (bits != nullptr) {
          const int64_t bit = row_in_block * L.kv_block_tokens + (j - j0);
          if (((bits[bit / 64] >> (bit % 64)) & 1u) == 0) continue;
        }
        AttendKey(p, b, kvh, j, qv, cols, m, l, acc);
      }
    }
  }
  float* out_row = p.out + (r * hq + h) * d;
  const float inv = l > 0.f ? 1.f / l : 0.f;
  for (int c = 0; c < cols; ++c) out_row[lane + 32 * c] = acc[c] * inv;
}

}  // namespace

absl::Status RunAttentionF32(const AttentionF32Args& args, void* stream) {
  FLUXATTN_RETURN_IF_ERROR(ValidateAttentionShape(args.shape, "RunAttentionF32"));
  if (args.total_rows < 0 || args.seqs.num_seqs < 0 || !IsPowerOfTwo(args.kv.page_tokens)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RunAttentionF32: rows / sequences / page_tokens: expected >= 0 / >= 0 / a power of two, "
        "found ",
        args.total_rows, " / ", args.seqs.num_seqs, " / ", args.kv.page_tokens));
  }
  if (args.total_rows == 0 || args.seqs.num_seqs == 0) return absl::OkStatus();
  if (args.maybe_layout != nullptr &&
      (args.maybe_layout->q_block_tokens <= 0 || args.maybe_layout->kv_block_tokens <= 0 ||
       (args.maybe_layout->num_layout_heads != 1 &&
        args.maybe_layout->num_layout_heads != args.shape.num_kv_heads))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RunAttentionF32: layout block sizes / heads: expected > 0 / 1 or ",
        args.shape.num_kv_heads, ", found ", args.maybe_layout->q_block_tokens, " x ",
        args.maybe_layout->kv_block_tokens, " / ", args.maybe_layout->num_layout_heads));
  }
  F32Params p;
  p.shape = args.shape;
  p.q = static_cast<const float*>(args.q);
  p.out = static_cast<float*>(args.out);
  p.k_pool = static_cast<const float*>(args.kv.k);
  p.v_pool = static_cast<const float*>(args.kv.v);
  p.page_tokens = args.kv.page_tokens;
  p.seqs = args.seqs;
  p.has_layout = args.maybe_layout != nullptr;
  if (p.has_layout) p.layout = *args.maybe_layout;
  p.total_rows = args.total_rows;
  const int64_t warps = args.total_rows * args.shape.num_q_heads;
  const int64_t blocks = (warps + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (blocks > 0x7fffffff) {
    return absl::InvalidArgumentError(
        absl::StrCat("RunAttentionF32: ", warps, " (row, head) pairs: too many for one launch"));
  }
  FLUXATTN_RETURN_IF_CUDA(LaunchPdl(AttentionF32Kernel, static_cast<unsigned>(blocks),
                                    kWarpsPerBlock * 32, 0, AsStream(stream), p),
                          "RunAttentionF32", "kernel launch");
  return LaunchStatus("RunAttentionF32");
}

}  // namespace fluxattn::kernels::cuda
