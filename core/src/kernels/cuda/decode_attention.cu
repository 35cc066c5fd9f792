// Split-KV paged decode (bf16, f32 accumulation) and its combine step.
//
// Grid (split, kv head x head chunk, sequence). A CTA streams its split's keys once for all the
// query heads of its GQA group (up to 8 per CTA): each group of D/8 lanes owns one key row per
// step (one 16-byte load of K and of V per lane), several rows in flight per lane, an online
// softmax per lane group; the groups are merged in shared memory and the split writes its
// normalized partial output and log-sum-exp (base 2) to the workspace. The combine kernel
// merges the splits of each (sequence, head). The split sizes are derived on the device from
// kv_len or the layout row, so a run depends only on (num_seqs, num_splits).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "cuda_check.cuh"
#include "fluxattn/kernels/cuda_attention.h"

namespace fluxattn::kernels::cuda {
namespace {

constexpr int kKvTile = 64;
constexpr int kDecodeWarps = 4;
constexpr int kDecodeThreads = kDecodeWarps * 32;

struct DecodeParams {
  const __nv_bfloat16* q;
  const __nv_bfloat16* k;
  const __nv_bfloat16* v;
  const int32_t* kv_len;
  const int32_t* page_indptr;
  const int32_t* page_indices;
  const int32_t* seq_row_begin;
  const int32_t* row_indptr;  // nullptr = dense
  const int32_t* kv_block;
  const int32_t* mask_index;
  const uint64_t* masks;
  int32_t kv_block_tokens;
  int32_t num_layout_heads;
  int64_t words_per_mask;
  float* partial_o;    // [seq][q head][split][D]
  float* partial_lse;  // [seq][q head][split]
  int32_t num_q_heads;
  int32_t num_kv_heads;
  int32_t group;
  int32_t head_chunks;  // CTAs per KV head along y
  int32_t num_splits;
  int32_t page_shift;
  float scale_log2;
};

__device__ __forceinline__ void Bf16x8ToFloat(const uint4& raw, float* f) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 x = __bfloat1622float2(h[i]);
    f[2 * i] = x.x;
    f[2 * i + 1] = x.y;
  }
}

// kG: query heads per CTA (1, 2, 4 or 8); kU: key rows in flight per lane group.
template <int D, int kG>
__global__ void __launch_bounds__(kDecodeThreads) DecodeKernel(const __grid_constant__ DecodeParams p) {
  constexpr int kLanes = D / 8;                   // lanes per key row
  constexpr int kGroupsPerWarp = 32 / kLanes;
  constexpr int kGroups = kGroupsPerWarp * kDecodeWarps;
  constexpr int kU = D == 128 ? 4 : 2;            // rows per lane group per step
  constexpr int kStep = kGroups * kU;             // 32 (D=128) or 32 (D=64)
  static_assert(kKvTile % kStep == 0, "a tile must be whole steps");
  __shared__ float s_m[kGroups][kG];
  __shared__ float s_l[kGroups][kG];
  __shared__ float s_o[kGroups][kG][D];

  const int split = blockIdx.x;
  const int kv_head = blockIdx.y / p.head_chunks;
  const int head0 = kv_head * p.group + (blockIdx.y % p.head_chunks) * kG;
  const int seq = blockIdx.z;
  const int tid = threadIdx.x;
  const int group = tid / kLanes;
  const int sub = tid % kLanes;  // which 8 dims
  const int32_t kv_len = p.kv_len[seq];
  const int32_t page_base = p.page_indptr[seq];
  const int32_t page_mask = (1 << p.page_shift) - 1;
  const int64_t row_stride = static_cast<int64_t>(p.num_kv_heads) * D;

  // This split's range of 64-token tiles.
  const bool dense = p.row_indptr == nullptr;
  int32_t entry0 = 0, total_tiles, subs = 1;
  int32_t mask_row = -1;
  if (dense) {
    total_tiles = (kv_len + kKvTile - 1) / kKvTile;
  } else {
    const int32_t row =
        p.seq_row_begin[seq] + (p.num_layout_heads == 1 ? 0 : kv_head);
    entry0 = p.row_indptr[row];
    subs = p.kv_block_tokens / kKvTile;
    total_tiles = (p.row_indptr[row + 1] - entry0) * subs;
    mask_row = row;
  }
  (void)mask_row;
  const int32_t per = (total_tiles + p.num_splits - 1) / p.num_splits;
  const int32_t t_begin = min(total_tiles, split * per);
  const int32_t t_end = min(total_tiles, t_begin + per);

  float q[kG][8];
#pragma unroll
  for (int g = 0; g < kG; ++g) {
    const uint4 raw = *reinterpret_cast<const uint4*>(
        p.q + (static_cast<int64_t>(seq) * p.num_q_heads + head0 + g) * D + sub * 8);
    Bf16x8ToFloat(raw, q[g]);
#pragma unroll
    for (int i = 0; i < 8; ++i) q[g][i] *= p.scale_log2;
  }
  float m[kG], l[kG], acc[kG][8];
#pragma unroll
  for (int g = 0; g < kG; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[g][i] = 0.f;
  }

  for (int32_t t = t_begin; t < t_end; ++t) {
    int32_t tile_start, block = 0, mask = -1;
    if (dense) {
      tile_start = t * kKvTile;
    } else {
      const int32_t e = entry0 + t / subs;
      block = p.kv_block[e];
      tile_start = block * p.kv_block_tokens + (t % subs) * kKvTile;
      if (p.mask_index != nullptr) mask = p.mask_index[e];
    }
    if (tile_start >= kv_len) continue;
#pragma unroll 1
    for (int step = 0; step < kKvTile; step += kStep) {
      uint4 kr[kU], vr[kU];
      bool ok[kU];
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int32_t pos = tile_start + step + u * kGroups + group;
        ok[u] = pos < kv_len;
        if (ok[u] && mask >= 0) {
          const int64_t bit = pos - static_cast<int64_t>(block) * p.kv_block_tokens;
          ok[u] = (p.masks[mask * p.words_per_mask + (bit >> 6)] >> (bit & 63)) & 1;
        }
        if (ok[u]) {
          const int32_t page = p.page_indices[page_base + (pos >> p.page_shift)];
          const int64_t off =
              ((static_cast<int64_t>(page) << p.page_shift) + (pos & page_mask)) * row_stride +
              static_cast<int64_t>(kv_head) * D + sub * 8;
          kr[u] = __ldg(reinterpret_cast<const uint4*>(p.k + off));
          vr[u] = __ldg(reinterpret_cast<const uint4*>(p.v + off));
        } else {
          kr[u] = make_uint4(0, 0, 0, 0);
          vr[u] = make_uint4(0, 0, 0, 0);
        }
      }
      float s[kU][kG];
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        float kf[8];
        Bf16x8ToFloat(kr[u], kf);
#pragma unroll
        for (int g = 0; g < kG; ++g) {
          float d = 0.f;
#pragma unroll
          for (int i = 0; i < 8; ++i) d = fmaf(q[g][i], kf[i], d);
#pragma unroll
          for (int off = kLanes / 2; off > 0; off /= 2) d += __shfl_xor_sync(0xffffffff, d, off);
          s[u][g] = ok[u] ? d : -INFINITY;
        }
      }
#pragma unroll
      for (int g = 0; g < kG; ++g) {
        float mx = m[g];
#pragma unroll
        for (int u = 0; u < kU; ++u) mx = fmaxf(mx, s[u][g]);
        if (mx == -INFINITY) continue;  // nothing valid yet for this lane group
        const float alpha = exp2f(m[g] - mx);
        m[g] = mx;
        l[g] *= alpha;
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[g][i] *= alpha;
#pragma unroll
        for (int u = 0; u < kU; ++u) {
          const float pu = exp2f(s[u][g] - mx);
          l[g] += pu;
          float vf[8];
          Bf16x8ToFloat(vr[u], vf);
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[g][i] = fmaf(pu, vf[i], acc[g][i]);
        }
      }
    }
  }

  // Merge the lane groups.
#pragma unroll
  for (int g = 0; g < kG; ++g) {
    if (sub == 0) {
      s_m[group][g] = m[g];
      s_l[group][g] = l[g];
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) s_o[group][g][sub * 8 + i] = acc[g][i];
  }
  __syncthreads();
  for (int idx = tid; idx < kG * D; idx += kDecodeThreads) {
    const int g = idx / D, d = idx % D;
    float mx = -INFINITY;
    for (int r = 0; r < kGroups; ++r) mx = fmaxf(mx, s_m[r][g]);
    float lsum = 0.f, o = 0.f;
    if (mx != -INFINITY) {
      for (int r = 0; r < kGroups; ++r) {
        const float w = exp2f(s_m[r][g] - mx);
        lsum += s_l[r][g] * w;
        o += s_o[r][g][d] * w;
      }
    }
    const int64_t ph = static_cast<int64_t>(seq) * p.num_q_heads + head0 + g;
    const int64_t slot = ph * p.num_splits + split;
    p.partial_o[slot * D + d] = lsum > 0.f ? o / lsum : 0.f;
    if (d == 0) p.partial_lse[slot] = lsum > 0.f ? mx + log2f(lsum) : -INFINITY;
  }
}

template <int D>
__global__ void DecodeCombineKernel(const float* __restrict__ partial_o,
                                    const float* __restrict__ partial_lse, int32_t num_splits,
                                    __nv_bfloat16* __restrict__ out) {
  const int64_t ph = blockIdx.x;  // seq * num_q_heads + head
  const int d = threadIdx.x;
  const float* lse = partial_lse + ph * num_splits;
  float mx = -INFINITY;
  for (int s = 0; s < num_splits; ++s) mx = fmaxf(mx, lse[s]);
  float wsum = 0.f, o = 0.f;
  if (mx != -INFINITY) {
    for (int s = 0; s < num_splits; ++s) {
      const float w = exp2f(lse[s] - mx);
      wsum += w;
      o = fmaf(w, partial_o[(ph * num_splits + s) * D + d], o);
    }
  }
  out[ph * D + d] = __float2bfloat16(wsum > 0.f ? o / wsum : 0.f);
}

template <int D, int kG>
void LaunchDecodeKernel(const DecodeParams& p, dim3 grid, cudaStream_t stream) {
  DecodeKernel<D, kG><<<grid, kDecodeThreads, 0, stream>>>(p);
}

template <int D>
absl::Status LaunchDecode(const DecodeParams& p, int32_t num_seqs, int heads_per_cta, void* out,
                          cudaStream_t stream) {
  const dim3 grid(p.num_splits, p.num_kv_heads * p.head_chunks, num_seqs);
  switch (heads_per_cta) {
    case 1: LaunchDecodeKernel<D, 1>(p, grid, stream); break;
    case 2: LaunchDecodeKernel<D, 2>(p, grid, stream); break;
    case 4: LaunchDecodeKernel<D, 4>(p, grid, stream); break;
    default: LaunchDecodeKernel<D, 8>(p, grid, stream); break;
  }
  FLUXATTN_RETURN_IF_ERROR(LaunchStatus("RunDecode"));
  DecodeCombineKernel<D><<<static_cast<unsigned>(num_seqs) * p.num_q_heads, D, 0, stream>>>(
      p.partial_o, p.partial_lse, p.num_splits, static_cast<__nv_bfloat16*>(out));
  return LaunchStatus("RunDecode (combine)");
}

}  // namespace

int32_t ChooseDecodeSplits(int32_t num_seqs, int32_t num_kv_heads, int64_t max_kv_tokens,
                           int32_t max_splits) {
  // About 16 CTAs per SM of an H200 (132 SMs), at least two tiles per split.
  constexpr int64_t kTargetCtas = 132 * 16;
  const int64_t ctas = std::max<int64_t>(1, static_cast<int64_t>(num_seqs) * num_kv_heads);
  const int64_t tiles = std::max<int64_t>(1, (max_kv_tokens + kKvTile - 1) / kKvTile);
  int64_t splits = (kTargetCtas + ctas - 1) / ctas;
  splits = std::min<int64_t>(splits, (tiles + 1) / 2);
  splits = std::clamp<int64_t>(splits, 1, std::max(1, max_splits));
  return static_cast<int32_t>(splits);
}

size_t DecodeWorkspaceBytes(int32_t num_seqs, const AttentionShape& shape, int32_t num_splits) {
  const size_t slots = static_cast<size_t>(std::max(num_seqs, 0)) *
                       std::max(shape.num_q_heads, 0) * std::max(num_splits, 0);
  return slots * (static_cast<size_t>(std::max(shape.head_dim, 0)) + 1) * sizeof(float);
}

absl::StatusOr<DecodePlan> PlanDecode(const AttentionShape& shape, int32_t num_seqs,
                                      int32_t num_splits, void* workspace,
                                      size_t workspace_bytes) {
  FLUXATTN_RETURN_IF_ERROR(ValidateAttentionShape(shape, "PlanDecode"));
  if (num_splits < 1 || num_splits > 65535 || num_seqs < 0 || num_seqs > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PlanDecode: num_splits / num_seqs: expected 1..65535 and 0..65535, found ", num_splits,
        " / ", num_seqs));
  }
  const size_t need = DecodeWorkspaceBytes(num_seqs, shape, num_splits);
  if (need > workspace_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PlanDecode: workspace: expected at least ", need, " bytes, found ", workspace_bytes));
  }
  DecodePlan plan;
  plan.num_seqs = num_seqs;
  plan.num_splits = num_splits;
  plan.partials = workspace;
  return plan;
}

absl::Status RunDecode(const DecodeArgs& args, const DecodePlan& plan, void* stream) {
  const AttentionShape& shape = args.shape;
  FLUXATTN_RETURN_IF_ERROR(ValidateAttentionShape(shape, "RunDecode"));
  if (!IsPowerOfTwo(args.kv.page_tokens)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RunDecode: page_tokens: expected a power of two, found ", args.kv.page_tokens));
  }
  if (args.seqs.num_seqs != plan.num_seqs) {
    return absl::InvalidArgumentError(absl::StrCat("RunDecode: num_seqs: expected the plan's ",
                                                   plan.num_seqs, ", found ",
                                                   args.seqs.num_seqs));
  }
  const int32_t group = shape.num_q_heads / shape.num_kv_heads;
  int heads_per_cta = group >= 8 ? 8 : group >= 4 ? 4 : group >= 2 ? 2 : 1;
  if (group % heads_per_cta != 0) heads_per_cta = group % 2 == 0 ? 2 : 1;
  DecodeParams p{};
  p.q = static_cast<const __nv_bfloat16*>(args.q);
  p.k = static_cast<const __nv_bfloat16*>(args.kv.k);
  p.v = static_cast<const __nv_bfloat16*>(args.kv.v);
  p.kv_len = args.seqs.kv_len;
  p.page_indptr = args.seqs.page_indptr;
  p.page_indices = args.seqs.page_indices;
  p.num_q_heads = shape.num_q_heads;
  p.num_kv_heads = shape.num_kv_heads;
  p.group = group;
  p.head_chunks = group / heads_per_cta;
  p.num_splits = plan.num_splits;
  p.page_shift = Log2(args.kv.page_tokens);
  p.scale_log2 = shape.scale * kLog2e;
  const size_t slots =
      static_cast<size_t>(plan.num_seqs) * shape.num_q_heads * plan.num_splits;
  p.partial_o = static_cast<float*>(plan.partials);
  p.partial_lse = p.partial_o + slots * shape.head_dim;
  if (const BlockSparseLayoutView* layout = args.maybe_layout) {
    if (layout->kv_block_tokens <= 0 || layout->kv_block_tokens % kKvTile != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "RunDecode: kv_block_tokens: expected a multiple of ", kKvTile, ", found ",
          layout->kv_block_tokens));
    }
    if (layout->num_layout_heads != 1 && layout->num_layout_heads != shape.num_kv_heads) {
      return absl::InvalidArgumentError(
          absl::StrCat("RunDecode: num_layout_heads: expected 1 or ", shape.num_kv_heads,
                       ", found ", layout->num_layout_heads));
    }
    if (layout->row_indptr == nullptr || layout->kv_block == nullptr ||
        layout->seq_row_begin == nullptr ||
        (layout->maybe_mask_index != nullptr && layout->maybe_masks == nullptr)) {
      return absl::InvalidArgumentError(
          "RunDecode: layout: expected seq_row_begin, row_indptr, kv_block (and masks with "
          "mask_index), found a null pointer");
    }
    p.seq_row_begin = layout->seq_row_begin;
    p.row_indptr = layout->row_indptr;
    p.kv_block = layout->kv_block;
    p.mask_index = layout->maybe_mask_index;
    p.masks = layout->maybe_masks;
    p.kv_block_tokens = layout->kv_block_tokens;
    p.num_layout_heads = layout->num_layout_heads;
    p.words_per_mask =
        (static_cast<int64_t>(layout->q_block_tokens) * layout->kv_block_tokens + 63) / 64;
  }
  if (plan.num_seqs == 0) return absl::OkStatus();
  cudaStream_t s = AsStream(stream);
  if (shape.head_dim == 128) return LaunchDecode<128>(p, plan.num_seqs, heads_per_cta, args.out, s);
  return LaunchDecode<64>(p, plan.num_seqs, heads_per_cta, args.out, s);
}

}  // namespace fluxattn::kernels::cuda
