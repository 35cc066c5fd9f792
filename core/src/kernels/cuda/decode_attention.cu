// Split-KV paged decode (bf16, f32 accumulation) and its combine step.
//
// Grid (split, KV-head chunk x query-head chunk, sequence). A CTA streams its split's keys once
// for every query head of the GQA groups it covers (up to 8 query heads per KV head per CTA),
// through a three-stage cp.async pipeline of whole token rows; an online softmax per lane
// group; the groups are merged in shared memory and the split writes its normalized partial
// output and log-sum-exp (base 2) to the workspace. The combine kernel
// merges the splits of each (sequence, head). The split sizes are derived on the device from
// kv_len or the layout row, so a run depends only on (num_seqs, num_splits).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "cuda_check.cuh"
#include "fluxattn/kernels/cuda_attention.h"
#include "mma_util.cuh"
#include "pdl.cuh"

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
  int32_t head_chunks;    // CTAs per KV head's query group along y
  int32_t heads_per_cta;  // KV heads a CTA streams together
  int32_t num_splits;
  int32_t tiles_per_split;  // 0: each row cut into num_splits equal parts
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

// Shared-memory stages: each holds kStageBytes of K and as much of V (rows of D bf16).
constexpr int kStages = 3;
constexpr int kStageBytes = 16 * 1024;

// A CTA streams the keys of its split for `heads_per_cta` KV heads at once (all of them when
// the layout is shared or dense, so a stage is whole contiguous token rows of the pool): stages
// of `stage_tokens` tokens x heads are copied with cp.async three deep, and each lane group
// (D/8 lanes, one key row per token) handles one KV head and every tpar-th token of a stage,
// for kG query heads of that KV head's GQA group.
template <int D, int kG>
__global__ void __launch_bounds__(kDecodeThreads)
    DecodeKernel(const __grid_constant__ DecodeParams p) {
  PdlLaunchDependents();
  PdlWait();
  constexpr int kLanes = D / 8;  // lanes per key row
  constexpr int kGroups = kDecodeThreads / kLanes;
  constexpr int kRowsPerStage = kStageBytes / (D * 2);
  constexpr int kMaxU = 8;  // tokens per lane group per stage
  static_assert(kGroups * kG * D * 4 <= kStages * 2 * kStageBytes, "merge buffer fits");
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __nv_bfloat16* sk = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [stage][rows][D]
  __nv_bfloat16* sv = sk + kStages * kRowsPerStage * D;
  __shared__ float s_m[kGroups][kG];
  __shared__ float s_l[kGroups][kG];

  const int hc_count = p.heads_per_cta;
  const int tpar = kGroups / hc_count;
  const int stage_tokens = min(kRowsPerStage / hc_count, kKvTile);
  const int ku = stage_tokens / tpar;
  const int stages_per_tile = kKvTile / stage_tokens;

  const int split = blockIdx.x;
  const int kv_chunk = blockIdx.y / p.head_chunks;
  const int head_chunk = blockIdx.y % p.head_chunks;
  const int kvh0 = kv_chunk * hc_count;
  const int seq = blockIdx.z;
  const int tid = threadIdx.x;
  const int group = tid / kLanes;
  const int sub = tid % kLanes;
  const int hc = group % hc_count;
  const int tl = group / hc_count;
  const int kv_head = kvh0 + hc;
  const int head0 = kv_head * p.group + head_chunk * kG;
  const int32_t kv_len = p.kv_len[seq];
  const int32_t page_base = p.page_indptr[seq];
  const int32_t page_mask = (1 << p.page_shift) - 1;
  const int64_t row_stride = static_cast<int64_t>(p.num_kv_heads) * D;

  const bool dense = p.row_indptr == nullptr;
  int32_t entry0 = 0, total_tiles, subs = 1;
  if (dense) {
    total_tiles = (kv_len + kKvTile - 1) / kKvTile;
  } else {
    const int32_t row = p.seq_row_begin[seq] + (p.num_layout_heads == 1 ? 0 : kvh0);
    entry0 = p.row_indptr[row];
    subs = p.kv_block_tokens / kKvTile;
    total_tiles = (p.row_indptr[row + 1] - entry0) * subs;
  }
  const int32_t per = max((total_tiles + p.num_splits - 1) / p.num_splits, p.tiles_per_split);
  const int32_t t_begin = min(total_tiles, split * per);
  const int32_t t_end = min(total_tiles, t_begin + per);
  const int32_t num_stages = (t_end - t_begin) * stages_per_tile;

  // First position, element mask and block of stage i.
  auto stage_info = [&](int32_t i, int32_t* block, int32_t* mask) -> int32_t {
    const int32_t t = t_begin + i / stages_per_tile;
    const int32_t off = (i % stages_per_tile) * stage_tokens;
    if (dense) {
      *block = 0;
      *mask = -1;
      return t * kKvTile + off;
    }
    const int32_t e = entry0 + t / subs;
    *block = p.kv_block[e];
    *mask = p.mask_index != nullptr ? p.mask_index[e] : -1;
    return *block * p.kv_block_tokens + (t % subs) * kKvTile + off;
  };
  auto issue = [&](int32_t i) {
    if (i < num_stages) {
      int32_t block, mask;
      const int32_t pos0 = stage_info(i, &block, &mask);
      const int buf = i % kStages;
      const int chunks = stage_tokens * hc_count * (D / 8);
      for (int idx = tid; idx < chunks; idx += kDecodeThreads) {
        const int tt = idx / (hc_count * (D / 8));
        const int rem = idx % (hc_count * (D / 8));
        const int h = rem / (D / 8), c = rem % (D / 8);
        const int32_t pos = pos0 + tt;
        const bool valid = pos < kv_len;
        int64_t off = 0;
        if (valid) {
          const int32_t page = p.page_indices[page_base + (pos >> p.page_shift)];
          off = ((static_cast<int64_t>(page) << p.page_shift) + (pos & page_mask)) * row_stride +
                static_cast<int64_t>(kvh0 + h) * D + c * 8;
        }
        const int s = (buf * kRowsPerStage + tt * hc_count + h) * D + c * 8;
        CpAsync16(SmemAddr(sk + s), p.k + off, valid);
        CpAsync16(SmemAddr(sv + s), p.v + off, valid);
      }
    }
    CpAsyncCommit();
  };

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

  issue(0);
  issue(1);
  for (int32_t i = 0; i < num_stages; ++i) {
    CpAsyncWaitGroup<1>();
    __syncthreads();
    issue(i + 2);
    int32_t block, mask;
    const int32_t pos0 = stage_info(i, &block, &mask);
    const int buf = i % kStages;
#pragma unroll
    for (int u0 = 0; u0 < kMaxU; u0 += 4) {
      if (u0 >= ku) break;
      uint4 kr[4], vr[4];
      bool ok[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int tt = tl + (u0 + u) * tpar;
        const int32_t pos = pos0 + tt;
        ok[u] = pos < kv_len;
        if (ok[u] && mask >= 0) {
          const int64_t bit = pos - static_cast<int64_t>(block) * p.kv_block_tokens;
          ok[u] = (p.masks[mask * p.words_per_mask + (bit >> 6)] >> (bit & 63)) & 1;
        }
        const int s = (buf * kRowsPerStage + tt * hc_count + hc) * D + sub * 8;
        kr[u] = *reinterpret_cast<const uint4*>(sk + s);
        vr[u] = *reinterpret_cast<const uint4*>(sv + s);
      }
      float sc[4][kG];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        float kf[8];
        Bf16x8ToFloat(kr[u], kf);
#pragma unroll
        for (int g = 0; g < kG; ++g) {
          float d = 0.f;
#pragma unroll
          for (int j = 0; j < 8; ++j) d = fmaf(q[g][j], kf[j], d);
#pragma unroll
          for (int off = kLanes / 2; off > 0; off /= 2) d += __shfl_xor_sync(0xffffffff, d, off);
          sc[u][g] = ok[u] ? d : -INFINITY;
        }
      }
#pragma unroll
      for (int g = 0; g < kG; ++g) {
        float mx = m[g];
#pragma unroll
        for (int u = 0; u < 4; ++u) mx = fmaxf(mx, sc[u][g]);
        if (mx == -INFINITY) continue;  // nothing valid yet for this lane group
        const float alpha = exp2f(m[g] - mx);
        m[g] = mx;
        l[g] *= alpha;
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[g][j] *= alpha;
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const float pu = exp2f(sc[u][g] - mx);
          l[g] += pu;
          float vf[8];
          Bf16x8ToFloat(vr[u], vf);
#pragma unroll
          for (int j = 0; j < 8; ++j) acc[g][j] = fmaf(pu, vf[j], acc[g][j]);
        }
      }
    }
  }
  CpAsyncWaitGroup<0>();
  __syncthreads();

  // Merge the lane groups of each KV head (tpar of them), reusing the stage memory.
  float* s_o = reinterpret_cast<float*>(smem_raw);  // [group][g][D]
#pragma unroll
  for (int g = 0; g < kG; ++g) {
    if (sub == 0) {
      s_m[group][g] = m[g];
      s_l[group][g] = l[g];
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) s_o[(group * kG + g) * D + sub * 8 + j] = acc[g][j];
  }
  __syncthreads();
  for (int idx = tid; idx < hc_count * kG * D; idx += kDecodeThreads) {
    const int h = idx / (kG * D);
    const int g = (idx / D) % kG;
    const int d = idx % D;
    float mx = -INFINITY;
    for (int r = h; r < kGroups; r += hc_count) mx = fmaxf(mx, s_m[r][g]);
    float lsum = 0.f, o = 0.f;
    if (mx != -INFINITY) {
      for (int r = h; r < kGroups; r += hc_count) {
        const float w = exp2f(s_m[r][g] - mx);
        lsum += s_l[r][g] * w;
        o += s_o[(r * kG + g) * D + d] * w;
      }
    }
    const int head = (kvh0 + h) * p.group + head_chunk * kG + g;
    const int64_t slot = (static_cast<int64_t>(seq) * p.num_q_heads + head) * p.num_splits + split;
    p.partial_o[slot * D + d] = lsum > 0.f ? o / lsum : 0.f;
    if (d == 0) p.partial_lse[slot] = lsum > 0.f ? mx + log2f(lsum) : -INFINITY;
  }
}

// The tensor-core decode for GQA groups of up to 16 query heads: a CTA takes one (sequence,
// KV head, split); the group's query heads are the 16 rows of one m16 tile (zero rows pad it),
// 64-token K/V tiles come three deep through cp.async into swizzled shared memory, and each of
// the 4 warps computes S = Q K^T and O += P V with mma.sync for its 16 keys of every tile, with
// its own online softmax; the warps are merged at the end. Compared with the lane-group kernel
// above this spends about a tenth of the instructions per byte of KV.
constexpr int kMmaStages = 3;

template <int D>
__global__ void __launch_bounds__(kDecodeThreads)
    DecodeMmaKernel(const __grid_constant__ DecodeParams p) {
  PdlLaunchDependents();
  PdlWait();
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __nv_bfloat16* sq = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [16][D]
  __nv_bfloat16* sk = sq + 16 * D;                                 // [stage][64][D]
  __nv_bfloat16* sv = sk + kMmaStages * kKvTile * D;
  constexpr int kChunks = D / 8;

  const int split = blockIdx.x;
  const int kv_head = blockIdx.y;
  const int seq = blockIdx.z;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int32_t kv_len = p.kv_len[seq];
  const int32_t page_base = p.page_indptr[seq];
  const int32_t page_mask = (1 << p.page_shift) - 1;
  const int64_t row_stride = static_cast<int64_t>(p.num_kv_heads) * D;

  const bool dense = p.row_indptr == nullptr;
  int32_t entry0 = 0, total_tiles, subs = 1;
  if (dense) {
    total_tiles = (kv_len + kKvTile - 1) / kKvTile;
  } else {
    const int32_t row = p.seq_row_begin[seq] + (p.num_layout_heads == 1 ? 0 : kv_head);
    entry0 = p.row_indptr[row];
    subs = p.kv_block_tokens / kKvTile;
    total_tiles = (p.row_indptr[row + 1] - entry0) * subs;
  }
  const int32_t per = max((total_tiles + p.num_splits - 1) / p.num_splits, p.tiles_per_split);
  const int32_t t_begin = min(total_tiles, split * per);
  const int32_t t_end = min(total_tiles, t_begin + per);
  const int32_t num_tiles = t_end - t_begin;

  auto tile_info = [&](int32_t i, int32_t* block, int32_t* mask) -> int32_t {
    const int32_t t = t_begin + i;
    if (dense) {
      *block = 0;
      *mask = -1;
      return t * kKvTile;
    }
    const int32_t e = entry0 + t / subs;
    *block = p.kv_block[e];
    *mask = p.mask_index != nullptr ? p.mask_index[e] : -1;
    return *block * p.kv_block_tokens + (t % subs) * kKvTile;
  };
  auto issue = [&](int32_t i) {
    if (i < num_tiles) {
      int32_t block, mask;
      const int32_t start = tile_info(i, &block, &mask);
      const int stage = i % kMmaStages;
      for (int idx = tid; idx < kKvTile * kChunks; idx += kDecodeThreads) {
        const int r = idx / kChunks, c = idx % kChunks;
        const int32_t pos = start + r;
        const bool valid = pos < kv_len;
        int64_t off = 0;
        if (valid) {
          const int32_t page = p.page_indices[page_base + (pos >> p.page_shift)];
          off = ((static_cast<int64_t>(page) << p.page_shift) + (pos & page_mask)) * row_stride +
                static_cast<int64_t>(kv_head) * D + c * 8;
        }
        const int s = stage * kKvTile * D + Swizzle<D>(r, c);
        CpAsync16(SmemAddr(sk + s), p.k + off, valid);
        CpAsync16(SmemAddr(sv + s), p.v + off, valid);
      }
    }
    CpAsyncCommit();
  };

  // Q rows: the group's heads, zero past the group.
  for (int idx = tid; idx < 16 * kChunks; idx += kDecodeThreads) {
    const int r = idx / kChunks, c = idx % kChunks;
    const bool valid = r < p.group;
    const __nv_bfloat16* src =
        p.q +
        (static_cast<int64_t>(seq) * p.num_q_heads + kv_head * p.group + (valid ? r : 0)) * D +
        c * 8;
    CpAsync16(SmemAddr(sq + Swizzle<D>(r, c)), src, valid);
  }
  issue(0);
  issue(1);

  float o[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  uint32_t qf[D / 16][4];

  for (int32_t i = 0; i < num_tiles; ++i) {
    CpAsyncWaitGroup<1>();
    __syncthreads();
    if (i == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        const int r = (lane % 8) + ((lane / 8) % 2) * 8;
        const int c = 2 * kk + lane / 16;
        LdMatrixX4(SmemAddr(sq + Swizzle<D>(r, c)), qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3]);
      }
    }
    issue(i + 2);
    int32_t block, mask;
    const int32_t start = tile_info(i, &block, &mask);
    const int stage = i % kMmaStages;
    const __nv_bfloat16* skt = sk + stage * kKvTile * D;
    const __nv_bfloat16* svt = sv + stage * kKvTile * D;

    float sc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const int r = 16 * warp + (lane % 8) + (lane / 16) * 8;
      const int c = 2 * kk + (lane / 8) % 2;
      uint32_t b0, b1, b2, b3;
      LdMatrixX4(SmemAddr(skt + Swizzle<D>(r, c)), b0, b1, b2, b3);
      Mma16816(sc[0], qf[kk], b0, b1);
      Mma16816(sc[1], qf[kk], b2, b3);
    }
    const int32_t key0 = start + 16 * warp;
    if (key0 + 15 >= kv_len || mask >= 0) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int32_t key = key0 + j * 8 + (lane % 4) * 2 + (e % 2);
          bool ok = key < kv_len;
          if (ok && mask >= 0) {
            const int64_t bit = key - static_cast<int64_t>(block) * p.kv_block_tokens;
            ok = (p.masks[mask * p.words_per_mask + (bit >> 6)] >> (bit & 63)) & 1;
          }
          if (!ok) sc[j][e] = -INFINITY;
        }
      }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx =
          fmaxf(fmaxf(sc[0][2 * h], sc[0][2 * h + 1]), fmaxf(sc[1][2 * h], sc[1][2 * h + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 2));
      const float m_new = fmaxf(m[h], mx * p.scale_log2);
      const float base = m_new == -INFINITY ? 0.f : m_new;
      const float alpha = exp2f(m[h] - base);
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < 2; ++j) {
#pragma unroll
        for (int e = 2 * h; e < 2 * h + 2; ++e) {
          const float pe = exp2f(sc[j][e] * p.scale_log2 - base);
          sc[j][e] = pe;
          sum += pe;
        }
      }
      l[h] = l[h] * alpha + sum;
      m[h] = m_new;
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        o[j][2 * h] *= alpha;
        o[j][2 * h + 1] *= alpha;
      }
    }
    uint32_t a[4];
    a[0] = PackBf16(sc[0][0], sc[0][1]);
    a[1] = PackBf16(sc[0][2], sc[0][3]);
    a[2] = PackBf16(sc[1][0], sc[1][1]);
    a[3] = PackBf16(sc[1][2], sc[1][3]);
#pragma unroll
    for (int np = 0; np < D / 16; ++np) {
      const int r = 16 * warp + (lane % 8) + ((lane / 8) % 2) * 8;
      const int c = 2 * np + lane / 16;
      uint32_t b0, b1, b2, b3;
      LdMatrixX4Trans(SmemAddr(svt + Swizzle<D>(r, c)), b0, b1, b2, b3);
      Mma16816(o[2 * np], a, b0, b1);
      Mma16816(o[2 * np + 1], a, b2, b3);
    }
  }
  CpAsyncWaitAll();
  __syncthreads();

  // Merge the four warps (each saw a quarter of every tile), reusing the stage memory.
  float* s_o = reinterpret_cast<float*>(smem_raw);  // [warp][16][D]
  float* s_ml = s_o + 4 * 16 * D;                   // [warp][16][2]
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = lane / 4 + 8 * h;
    float lsum = l[h];
    lsum += __shfl_xor_sync(0xffffffff, lsum, 1);
    lsum += __shfl_xor_sync(0xffffffff, lsum, 2);
    if (lane % 4 == 0) {
      s_ml[(warp * 16 + row) * 2] = m[h];
      s_ml[(warp * 16 + row) * 2 + 1] = lsum;
    }
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      const int col = j * 8 + (lane % 4) * 2;
      s_o[(warp * 16 + row) * D + col] = o[j][2 * h];
      s_o[(warp * 16 + row) * D + col + 1] = o[j][2 * h + 1];
    }
  }
  __syncthreads();
  for (int idx = tid; idx < p.group * D; idx += kDecodeThreads) {
    const int row = idx / D, d = idx % D;
    float mx = -INFINITY;
    for (int w = 0; w < 4; ++w) mx = fmaxf(mx, s_ml[(w * 16 + row) * 2]);
    float lsum = 0.f, acc = 0.f;
    if (mx != -INFINITY) {
      for (int w = 0; w < 4; ++w) {
        const float wt = exp2f(s_ml[(w * 16 + row) * 2] - mx);
        lsum += s_ml[(w * 16 + row) * 2 + 1] * wt;
        acc += s_o[(w * 16 + row) * D + d] * wt;
      }
    }
    const int head = kv_head * p.group + row;
    const int64_t slot = (static_cast<int64_t>(seq) * p.num_q_heads + head) * p.num_splits + split;
    p.partial_o[slot * D + d] = lsum > 0.f ? acc / lsum : 0.f;
    if (d == 0) p.partial_lse[slot] = lsum > 0.f ? mx + log2f(lsum) : -INFINITY;
  }
}

template <int D>
__global__ void DecodeCombineKernel(const float* __restrict__ partial_o,
                                    const float* __restrict__ partial_lse, int32_t num_splits,
                                    __nv_bfloat16* __restrict__ out) {
  PdlLaunchDependents();
  PdlWait();
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
cudaError_t LaunchDecodeKernel(const DecodeParams& p, dim3 grid, cudaStream_t stream) {
  constexpr size_t kSmem = static_cast<size_t>(kStages) * 2 * kStageBytes;
  static const cudaError_t attr =
      cudaFuncSetAttribute(DecodeKernel<D, kG>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  (void)attr;  // a failure shows as the launch error
  return LaunchPdl(DecodeKernel<D, kG>, grid, kDecodeThreads, kSmem, stream, p);
}

template <int D>
absl::Status LaunchDecode(const DecodeParams& p, int32_t num_seqs, int q_heads_per_cta, void* out,
                          cudaStream_t stream) {
  if (p.group <= 16) {
    constexpr size_t kSmem =
        (16 + 2 * static_cast<size_t>(kMmaStages) * kKvTile) * D * sizeof(__nv_bfloat16);
    static_assert(kSmem >= (4 * 16 * D + 4 * 16 * 2) * sizeof(float), "merge buffer fits");
    static const cudaError_t attr = cudaFuncSetAttribute(
        DecodeMmaKernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
    FLUXATTN_RETURN_IF_CUDA(attr, "RunDecode", "cudaFuncSetAttribute");
    FLUXATTN_RETURN_IF_CUDA(
        LaunchPdl(DecodeMmaKernel<D>, dim3(p.num_splits, p.num_kv_heads, num_seqs), kDecodeThreads,
                  kSmem, stream, p),
        "RunDecode", "kernel launch");
  } else {
    const dim3 grid(p.num_splits, p.num_kv_heads / p.heads_per_cta * p.head_chunks, num_seqs);
    cudaError_t err = cudaSuccess;
    switch (q_heads_per_cta) {
      case 1:
        err = LaunchDecodeKernel<D, 1>(p, grid, stream);
        break;
      case 2:
        err = LaunchDecodeKernel<D, 2>(p, grid, stream);
        break;
      case 4:
        err = LaunchDecodeKernel<D, 4>(p, grid, stream);
        break;
      default:
        err = LaunchDecodeKernel<D, 8>(p, grid, stream);
        break;
    }
    FLUXATTN_RETURN_IF_CUDA(err, "RunDecode", "kernel launch");
  }
  FLUXATTN_RETURN_IF_ERROR(LaunchStatus("RunDecode"));
  FLUXATTN_RETURN_IF_CUDA(
      LaunchPdl(DecodeCombineKernel<D>, static_cast<unsigned>(num_seqs) * p.num_q_heads, D, 0,
                stream, p.partial_o, p.partial_lse, p.num_splits, static_cast<__nv_bfloat16*>(out)),
      "RunDecode (combine)", "kernel launch");
  return LaunchStatus("RunDecode (combine)");
}

// One wave of decode CTAs: two per SM of an H200 (132 SMs).
constexpr int64_t kTargetCtas = 132 * 2;

}  // namespace

int32_t ChooseDecodeSplits(int32_t num_seqs, int32_t num_kv_heads, int64_t max_kv_tokens,
                           int32_t max_splits) {
  // One wave of two CTAs per SM of an H200 (132 SMs), a CTA per (sequence, KV head, split),
  // rounded down so that no second, partial wave forms; at least two tiles per split.
  // Measured (B=1 / 8, KV 128K, Hkv 8): 33 / 4 splits beat 66 / 9 by 8% / 27%.
  const int64_t ctas =
      std::max<int64_t>(1, static_cast<int64_t>(num_seqs) * std::max(1, num_kv_heads));
  const int64_t tiles = std::max<int64_t>(1, (max_kv_tokens + kKvTile - 1) / kKvTile);
  int64_t splits = std::max<int64_t>(1, kTargetCtas / ctas);
  splits = std::min<int64_t>(splits, (tiles + 1) / 2);
  splits = std::clamp<int64_t>(splits, 1, std::max(1, max_splits));
  return static_cast<int32_t>(splits);
}

int32_t MaxDecodeSplits(int32_t num_seqs, int32_t num_kv_heads) {
  // The balanced cut gives the longest row at most one wave of CTAs by itself; the partials are
  // kept to 512 (sequence, split) slots unless the equal cut needs more.
  constexpr int64_t kMaxSlots = 512;
  const int64_t seqs = std::max(1, num_seqs);
  const int64_t wave = std::max<int64_t>(1, kTargetCtas / std::max(1, num_kv_heads));
  const int64_t balanced = std::max<int64_t>(1, std::min(wave, kMaxSlots / seqs));
  return static_cast<int32_t>(std::clamp<int64_t>(
      std::max<int64_t>(balanced, ChooseDecodeSplits(num_seqs, num_kv_heads, int64_t{1} << 30)), 1,
      256));
}

DecodeSplits BalanceDecodeSplits(std::span<const int64_t> row_kv_tokens, int32_t num_seqs,
                                 int32_t num_kv_heads) {
  DecodeSplits out;
  int64_t max_tiles = 1;
  for (int64_t t : row_kv_tokens) max_tiles = std::max(max_tiles, (t + kKvTile - 1) / kKvTile);
  const int64_t cap = MaxDecodeSplits(num_seqs, num_kv_heads);
  // CTAs for `per` tiles per split (an empty row still takes one CTA, which writes nothing).
  auto ctas = [&](int64_t per) {
    int64_t n = 0;
    for (int64_t t : row_kv_tokens)
      n += std::max<int64_t>(1, ((t + kKvTile - 1) / kKvTile + per - 1) / per);
    return n;
  };
  int64_t lo = std::max<int64_t>(2, (max_tiles + cap - 1) / cap), hi = std::max(lo, max_tiles);
  if (ctas(lo) > kTargetCtas) {
    // Binary search for the smallest per whose CTAs fit one wave (hi always fits or is 1 split).
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (ctas(mid) <= kTargetCtas) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
  }
  out.tiles_per_split = static_cast<int32_t>(std::min<int64_t>(lo, max_tiles));
  out.num_splits = static_cast<int32_t>(
      std::clamp<int64_t>((max_tiles + out.tiles_per_split - 1) / out.tiles_per_split, 1, cap));
  return out;
}

size_t DecodeWorkspaceBytes(int32_t num_seqs, const AttentionShape& shape, int32_t num_splits) {
  const size_t slots = static_cast<size_t>(std::max(num_seqs, 0)) * std::max(shape.num_q_heads, 0) *
                       std::max(num_splits, 0);
  return slots * (static_cast<size_t>(std::max(shape.head_dim, 0)) + 1) * sizeof(float);
}

absl::StatusOr<DecodePlan> PlanDecode(const AttentionShape& shape, int32_t num_seqs,
                                      int32_t num_splits, void* workspace, size_t workspace_bytes,
                                      int32_t tiles_per_split) {
  FLUXATTN_RETURN_IF_ERROR(ValidateAttentionShape(shape, "PlanDecode"));
  if (num_splits < 1 || num_splits > 65535 || num_seqs < 0 || num_seqs > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("PlanDecode: num_splits / num_seqs: expected 1..65535 and 0..65535, found ",
                     num_splits, " / ", num_seqs));
  }
  if (tiles_per_split < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("PlanDecode: tiles_per_split: expected 0 or more, found ", tiles_per_split));
  }
  const size_t need = DecodeWorkspaceBytes(num_seqs, shape, num_splits);
  if (need > workspace_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("PlanDecode: workspace: expected at least ",
                                                   need, " bytes, found ", workspace_bytes));
  }
  DecodePlan plan;
  plan.num_seqs = num_seqs;
  plan.num_splits = num_splits;
  plan.tiles_per_split = tiles_per_split;
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
                                                   plan.num_seqs, ", found ", args.seqs.num_seqs));
  }
  const int32_t group = shape.num_q_heads / shape.num_kv_heads;
  int q_heads_per_cta = group >= 8 ? 8 : group >= 4 ? 4 : group >= 2 ? 2 : 1;
  if (group % q_heads_per_cta != 0) q_heads_per_cta = group % 2 == 0 ? 2 : 1;
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
  p.head_chunks = group / q_heads_per_cta;
  // KV heads per CTA: all of them (up to one lane group each) unless the layout differs per head.
  const int lane_groups = kDecodeThreads / (shape.head_dim / 8);
  p.heads_per_cta = 1;
  if (args.maybe_layout == nullptr || args.maybe_layout->num_layout_heads == 1) {
    for (int h = std::min(lane_groups, static_cast<int>(shape.num_kv_heads)); h > 1; --h) {
      if (shape.num_kv_heads % h == 0 && lane_groups % h == 0) {
        p.heads_per_cta = h;
        break;
      }
    }
  }
  p.num_splits = plan.num_splits;
  p.tiles_per_split = plan.tiles_per_split;
  p.page_shift = Log2(args.kv.page_tokens);
  p.scale_log2 = shape.scale * kLog2e;
  const size_t slots = static_cast<size_t>(plan.num_seqs) * shape.num_q_heads * plan.num_splits;
  p.partial_o = static_cast<float*>(plan.partials);
  p.partial_lse = p.partial_o + slots * shape.head_dim;
  if (const BlockSparseLayoutView* layout = args.maybe_layout) {
    if (layout->kv_block_tokens <= 0 || layout->kv_block_tokens % kKvTile != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("RunDecode: kv_block_tokens: expected a multiple of ", kKvTile, ", found ",
                       layout->kv_block_tokens));
    }
    if (layout->num_layout_heads != 1 && layout->num_layout_heads != shape.num_kv_heads) {
      return absl::InvalidArgumentError(absl::StrCat("RunDecode: num_layout_heads: expected 1 or ",
                                                     shape.num_kv_heads, ", found ",
                                                     layout->num_layout_heads));
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
  if (shape.head_dim == 128)
    return LaunchDecode<128>(p, plan.num_seqs, q_heads_per_cta, args.out, s);
  return LaunchDecode<64>(p, plan.num_seqs, q_heads_per_cta, args.out, s);
}

}  // namespace fluxattn::kernels::cuda
