// Block-sparse flash-attention prefill over the paged KV pool (bf16, f32 accumulation).
//
// One CTA computes one query head for a tile of 16 * kWarps query rows of one sequence; each
// warp owns 16 rows. Keys come in tiles of 64 positions, gathered through the page table with
// cp.async into a double-buffered, XOR-swizzled shared-memory stage (zero-filled past kv_len).
// S = Q K^T and O += P V run on mma.sync m16n8k16 (ldmatrix fragments; P stays in registers),
// with the online softmax in base 2. The tile list of a CTA is either every tile up to the
// causal limit (dense) or the sub-tiles of the KV blocks its layout row lists; tiles that need
// no masking skip the per-element checks.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "cuda_check.cuh"
#include "fluxattn/kernels/cuda_attention.h"
#include "mma_util.cuh"

namespace fluxattn::kernels::cuda {
namespace {

constexpr int kKvTile = 64;

struct PrefillTile {
  int32_t seq;
  int32_t row0;  // first query row of the tile within its sequence
};

struct PrefillParams {
  const __nv_bfloat16* q;
  __nv_bfloat16* out;
  const __nv_bfloat16* k;
  const __nv_bfloat16* v;
  const int32_t* q_indptr;
  const int32_t* q_pos0;
  const int32_t* kv_len;
  const int32_t* page_indptr;
  const int32_t* page_indices;
  const PrefillTile* tiles;
  // Layout (row_indptr == nullptr: dense causal).
  const int32_t* seq_row_begin;
  const int32_t* row_indptr;
  const int32_t* kv_block;
  const int32_t* mask_index;
  const uint64_t* masks;
  int32_t q_block_tokens;
  int32_t kv_block_tokens;
  int32_t num_layout_heads;
  int64_t words_per_mask;
  int32_t num_q_heads;
  int32_t num_kv_heads;
  int32_t group;  // num_q_heads / num_kv_heads
  int32_t page_shift;
  float scale_log2;  // softmax scale * log2(e)
};

// Walks the KV tiles a CTA reads, in ascending position order: dense (every tile) or the
// 64-token sub-tiles of the layout row's blocks; stops past `limit` (the last position any
// row of the CTA may read).
struct TileCursor {
  int32_t entry, entry_end, sub, subs_per_block, tile, limit;
  bool dense;

  __device__ int32_t Start(const PrefillParams& p) const {
    return dense ? tile * kKvTile : p.kv_block[entry] * p.kv_block_tokens + sub * kKvTile;
  }
  __device__ bool Valid(const PrefillParams& p) const {
    if (dense) return tile * kKvTile <= limit;
    return entry < entry_end && Start(p) <= limit;
  }
  __device__ void Next() {
    if (dense) {
      ++tile;
    } else if (++sub == subs_per_block) {
      sub = 0;
      ++entry;
    }
  }
  __device__ int32_t Mask(const PrefillParams& p) const {
    return (dense || p.mask_index == nullptr) ? -1 : p.mask_index[entry];
  }
  __device__ int32_t Block(const PrefillParams& p) const { return dense ? 0 : p.kv_block[entry]; }
};

template <int D, int kWarps>
__global__ void __launch_bounds__(kWarps * 32)
    PrefillKernel(const __grid_constant__ PrefillParams p) {
  constexpr int kRows = 16 * kWarps;
  constexpr int kThreads = kWarps * 32;
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __nv_bfloat16* sq = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* sk = sq + kRows * D;        // [2][64][D]
  __nv_bfloat16* sv = sk + 2 * kKvTile * D;  // [2][64][D]

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int head = blockIdx.x % p.num_q_heads;
  const PrefillTile tile = p.tiles[blockIdx.x / p.num_q_heads];
  const int kv_head = head / p.group;
  const int seq = tile.seq;
  const int32_t q_begin = p.q_indptr[seq];
  const int32_t q_rows = p.q_indptr[seq + 1] - q_begin;
  const int32_t q_pos0 = p.q_pos0[seq];
  const int32_t kv_len = p.kv_len[seq];
  const int32_t page_base = p.page_indptr[seq];
  const int32_t rows_here = min(kRows, q_rows - tile.row0);
  // Last position any row of this CTA may read.
  const int32_t limit = min(q_pos0 + tile.row0 + rows_here - 1, kv_len - 1);

  TileCursor cur;
  cur.dense = p.row_indptr == nullptr;
  cur.tile = 0;
  cur.sub = 0;
  cur.limit = limit;
  cur.subs_per_block = cur.dense ? 1 : p.kv_block_tokens / kKvTile;
  int32_t qb = 0;
  if (!cur.dense) {
    qb = tile.row0 / p.q_block_tokens;
    const int32_t row =
        p.seq_row_begin[seq] + qb * p.num_layout_heads + (p.num_layout_heads == 1 ? 0 : kv_head);
    cur.entry = p.row_indptr[row];
    cur.entry_end = p.row_indptr[row + 1];
  }

  // Q tile (zero rows past the sequence).
  for (int idx = tid; idx < kRows * kChunks; idx += kThreads) {
    const int r = idx / kChunks, c = idx % kChunks;
    const bool valid = r < rows_here;
    const __nv_bfloat16* src =
        p.q +
        (static_cast<int64_t>(q_begin + tile.row0 + (valid ? r : 0)) * p.num_q_heads + head) * D +
        c * 8;
    CpAsync16(SmemAddr(sq + Swizzle<D>(r, c)), src, valid);
  }

  const int64_t kv_row_stride = static_cast<int64_t>(p.num_kv_heads) * D;
  const int32_t page_mask = (1 << p.page_shift) - 1;
  constexpr int kLoadsPerThread = kKvTile * kChunks / kThreads;
  static_assert(kKvTile * kChunks % kThreads == 0, "tile chunks must divide among threads");

  // Physical row offsets (elements) of the rows this thread loads for the tile at `start`.
  auto load_rows = [&](int32_t start, int64_t* offs) {
#pragma unroll
    for (int i = 0; i < kLoadsPerThread; ++i) {
      const int r = (tid + i * kThreads) / kChunks;
      const int32_t pos = start + r;
      if (pos < kv_len) {
        const int32_t page = p.page_indices[page_base + (pos >> p.page_shift)];
        offs[i] =
            ((static_cast<int64_t>(page) << p.page_shift) + (pos & page_mask)) * kv_row_stride +
            static_cast<int64_t>(kv_head) * D;
      } else {
        offs[i] = -1;
      }
    }
  };
  auto issue_tile = [&](int stage, const int64_t* offs) {
#pragma unroll
    for (int i = 0; i < kLoadsPerThread; ++i) {
      const int idx = tid + i * kThreads;
      const int r = idx / kChunks, c = idx % kChunks;
      const bool valid = offs[i] >= 0;
      const int64_t off = (valid ? offs[i] : 0) + c * 8;
      const int s = stage * kKvTile * D + Swizzle<D>(r, c);
      CpAsync16(SmemAddr(sk + s), p.k + off, valid);
      CpAsync16(SmemAddr(sv + s), p.v + off, valid);
    }
  };

  int64_t offs[kLoadsPerThread];
  const bool any = cur.Valid(p);
  if (any) {
    load_rows(cur.Start(p), offs);
    issue_tile(0, offs);
  }
  CpAsyncCommit();
  CpAsyncWaitAll();
  __syncthreads();

  // Q fragments of this warp's 16 rows.
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const int r = warp * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
    const int c = 2 * kk + lane / 16;
    LdMatrixX4(SmemAddr(sq + Swizzle<D>(r, c)), qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3]);
  }

  float o[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY};
  float l[2] = {0.f, 0.f};
  // Rows (within the sequence) and positions of this thread's two rows.
  const int32_t my_row[2] = {tile.row0 + warp * 16 + lane / 4,
                             tile.row0 + warp * 16 + lane / 4 + 8};
  const int32_t my_pos[2] = {q_pos0 + my_row[0], q_pos0 + my_row[1]};
  const int32_t cta_first_pos = q_pos0 + tile.row0;

  int stage = 0;
  while (any && cur.Valid(p)) {
    const int32_t start = cur.Start(p);
    const int32_t mask = cur.Mask(p);
    const int32_t block = cur.Block(p);
    TileCursor next = cur;
    next.Next();
    const bool has_next = next.Valid(p);
    if (has_next) load_rows(next.Start(p), offs);

    // S = Q K^T for 16 rows x 64 keys.
    float s[kKvTile / 8][4];
#pragma unroll
    for (int j = 0; j < kKvTile / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
    const __nv_bfloat16* skt = sk + stage * kKvTile * D;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int jp = 0; jp < kKvTile / 16; ++jp) {
        const int r = 16 * jp + (lane % 8) + (lane / 16) * 8;
        const int c = 2 * kk + (lane / 8) % 2;
        uint32_t b0, b1, b2, b3;
        LdMatrixX4(SmemAddr(skt + Swizzle<D>(r, c)), b0, b1, b2, b3);
        Mma16816(s[2 * jp], qf[kk], b0, b1);
        Mma16816(s[2 * jp + 1], qf[kk], b2, b3);
      }
    }

    if (has_next) issue_tile(stage ^ 1, offs);
    CpAsyncCommit();

    // Masks: causality, kv_len and the entry's element mask, only where a tile needs them.
    const bool full =
        mask < 0 && start + kKvTile - 1 <= cta_first_pos && start + kKvTile - 1 < kv_len;
    if (!full) {
#pragma unroll
      for (int j = 0; j < kKvTile / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int h = e / 2;
          const int32_t key = start + j * 8 + (lane % 4) * 2 + (e % 2);
          bool ok = key <= my_pos[h] && key < kv_len;
          if (ok && mask >= 0) {
            const int64_t qr = my_row[h] - static_cast<int64_t>(qb) * p.q_block_tokens;
            const int64_t kj = key - static_cast<int64_t>(block) * p.kv_block_tokens;
            const int64_t bit = qr * p.kv_block_tokens + kj;
            ok = (p.masks[mask * p.words_per_mask + (bit >> 6)] >> (bit & 63)) & 1;
          }
          if (!ok) s[j][e] = -INFINITY;
        }
      }
    }

    // Online softmax (base 2).
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < kKvTile / 8; ++j) mx = fmaxf(mx, fmaxf(s[j][2 * h], s[j][2 * h + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 2));
      const float m_new = fmaxf(m[h], mx * p.scale_log2);
      const float base = m_new == -INFINITY ? 0.f : m_new;
      const float alpha = exp2f(m[h] - base);
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < kKvTile / 8; ++j) {
#pragma unroll
        for (int e = 2 * h; e < 2 * h + 2; ++e) {
          const float pe = exp2f(s[j][e] * p.scale_log2 - base);
          s[j][e] = pe;
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

    // O += P V.
    const __nv_bfloat16* svt = sv + stage * kKvTile * D;
#pragma unroll
    for (int kk = 0; kk < kKvTile / 16; ++kk) {
      uint32_t a[4];
      a[0] = PackBf16(s[2 * kk][0], s[2 * kk][1]);
      a[1] = PackBf16(s[2 * kk][2], s[2 * kk][3]);
      a[2] = PackBf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      a[3] = PackBf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int np = 0; np < D / 16; ++np) {
        const int r = 16 * kk + (lane % 8) + ((lane / 8) % 2) * 8;
        const int c = 2 * np + lane / 16;
        uint32_t b0, b1, b2, b3;
        LdMatrixX4Trans(SmemAddr(svt + Swizzle<D>(r, c)), b0, b1, b2, b3);
        Mma16816(o[2 * np], a, b0, b1);
        Mma16816(o[2 * np + 1], a, b2, b3);
      }
    }

    CpAsyncWaitAll();
    __syncthreads();
    stage ^= 1;
    cur = next;
  }

  // Epilogue: normalize and store the rows of this sequence.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float sum = l[h];
    sum += __shfl_xor_sync(0xffffffff, sum, 1);
    sum += __shfl_xor_sync(0xffffffff, sum, 2);
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    if (my_row[h] < q_rows) {
      __nv_bfloat16* dst =
          p.out + (static_cast<int64_t>(q_begin + my_row[h]) * p.num_q_heads + head) * D;
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        const int col = j * 8 + (lane % 4) * 2;
        *reinterpret_cast<uint32_t*>(dst + col) =
            PackBf16(o[j][2 * h] * inv, o[j][2 * h + 1] * inv);
      }
    }
  }
}

template <int D, int kWarps>
absl::Status LaunchPrefill(const PrefillParams& params, int num_tiles, cudaStream_t stream) {
  constexpr int kRows = 16 * kWarps;
  const size_t smem = static_cast<size_t>(kRows + 4 * kKvTile) * D * sizeof(__nv_bfloat16);
  static const cudaError_t attr = cudaFuncSetAttribute(
      PrefillKernel<D, kWarps>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  FLUXATTN_RETURN_IF_CUDA(attr, "RunPrefill", "cudaFuncSetAttribute");
  const int64_t blocks = static_cast<int64_t>(num_tiles) * params.num_q_heads;
  if (blocks == 0) return absl::OkStatus();
  PrefillKernel<D, kWarps><<<static_cast<unsigned>(blocks), kWarps * 32, smem, stream>>>(params);
  return LaunchStatus("RunPrefill");
}

}  // namespace

size_t PrefillWorkspaceBytes(int64_t total_q_rows, int32_t num_seqs) {
  // At most one partial tile per sequence beyond total_rows / 64 full ones.
  return static_cast<size_t>(total_q_rows / 64 + num_seqs + 1) * sizeof(PrefillTile);
}

absl::Status ValidateAttentionShape(const AttentionShape& shape, const char* where) {
  if (shape.head_dim != 64 && shape.head_dim != 128) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": head_dim: expected 64 or 128, found ", shape.head_dim));
  }
  if (shape.num_kv_heads <= 0 || shape.num_q_heads <= 0 ||
      shape.num_q_heads % shape.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        where,
        ": num_q_heads / num_kv_heads: expected positive heads, q heads a multiple of kv "
        "heads, found ",
        shape.num_q_heads, " / ", shape.num_kv_heads));
  }
  if (!(shape.scale > 0.f) || !std::isfinite(shape.scale)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": scale: expected a positive finite number, found ", shape.scale));
  }
  return absl::OkStatus();
}

absl::StatusOr<PrefillPlan> PlanPrefill(const AttentionShape& shape,
                                        std::span<const int32_t> host_q_indptr,
                                        std::span<const int32_t> host_q_pos0, void* workspace,
                                        size_t workspace_bytes, void* stream, int32_t tile_rows) {
  FLUXATTN_RETURN_IF_ERROR(ValidateAttentionShape(shape, "PlanPrefill"));
  if (host_q_indptr.size() != host_q_pos0.size() + 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("PlanPrefill: q_indptr: expected num_seqs + 1 = ", host_q_pos0.size() + 1,
                     " entries, found ", host_q_indptr.size()));
  }
  if (tile_rows == 0) tile_rows = shape.head_dim == 128 ? 128 : 64;
  if (tile_rows != 64 && !(tile_rows == 128 && shape.head_dim == 128)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PlanPrefill: tile_rows: expected 64 (or 128 with head_dim 128), found ", tile_rows));
  }
  std::vector<PrefillTile> tiles;
  std::vector<int64_t> weight;
  const int32_t num_seqs = static_cast<int32_t>(host_q_pos0.size());
  for (int32_t b = 0; b < num_seqs; ++b) {
    const int32_t rows = host_q_indptr[b + 1] - host_q_indptr[b];
    if (rows < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("PlanPrefill: q_indptr: expected non-decreasing entries, found ",
                       host_q_indptr[b], " then ", host_q_indptr[b + 1], " at sequence ", b));
    }
    for (int32_t r = 0; r < rows; r += tile_rows) {
      tiles.push_back({b, r});
      weight.push_back(static_cast<int64_t>(host_q_pos0[b]) + std::min(r + tile_rows, rows));
    }
  }
  // Heaviest tiles first (the causal extent), so that the last wave is made of short tiles.
  std::vector<int32_t> order(tiles.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return weight[a] > weight[b]; });
  std::vector<PrefillTile> sorted(tiles.size());
  for (size_t i = 0; i < order.size(); ++i) sorted[i] = tiles[order[i]];
  const size_t bytes = sorted.size() * sizeof(PrefillTile);
  if (bytes > workspace_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("PlanPrefill: workspace: expected at least ",
                                                   bytes, " bytes, found ", workspace_bytes));
  }
  if (bytes > 0) {
    FLUXATTN_RETURN_IF_CUDA(
        cudaMemcpyAsync(workspace, sorted.data(), bytes, cudaMemcpyHostToDevice, AsStream(stream)),
        "PlanPrefill", "cudaMemcpyAsync");
  }
  PrefillPlan plan;
  plan.num_tiles = static_cast<int32_t>(sorted.size());
  plan.tile_rows = tile_rows;
  plan.tiles = workspace;
  return plan;
}

absl::Status RunPrefill(const PrefillArgs& args, const PrefillPlan& plan, void* stream) {
  const AttentionShape& shape = args.shape;
  FLUXATTN_RETURN_IF_ERROR(ValidateAttentionShape(shape, "RunPrefill"));
  if (!IsPowerOfTwo(args.kv.page_tokens)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RunPrefill: page_tokens: expected a power of two, found ", args.kv.page_tokens));
  }
  PrefillParams p{};
  p.q = static_cast<const __nv_bfloat16*>(args.q);
  p.out = static_cast<__nv_bfloat16*>(args.out);
  p.k = static_cast<const __nv_bfloat16*>(args.kv.k);
  p.v = static_cast<const __nv_bfloat16*>(args.kv.v);
  p.q_indptr = args.seqs.q_indptr;
  p.q_pos0 = args.seqs.q_pos0;
  p.kv_len = args.seqs.kv_len;
  p.page_indptr = args.seqs.page_indptr;
  p.page_indices = args.seqs.page_indices;
  p.tiles = static_cast<const PrefillTile*>(plan.tiles);
  p.num_q_heads = shape.num_q_heads;
  p.num_kv_heads = shape.num_kv_heads;
  p.group = shape.num_q_heads / shape.num_kv_heads;
  p.page_shift = Log2(args.kv.page_tokens);
  p.scale_log2 = shape.scale * kLog2e;
  if (const BlockSparseLayoutView* layout = args.maybe_layout) {
    if (layout->q_block_tokens <= 0 || layout->q_block_tokens % plan.tile_rows != 0 ||
        layout->kv_block_tokens <= 0 || layout->kv_block_tokens % kKvTile != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("RunPrefill: layout block sizes: expected q_block_tokens a multiple of ",
                       plan.tile_rows, " and kv_block_tokens a multiple of ", kKvTile, ", found ",
                       layout->q_block_tokens, " and ", layout->kv_block_tokens));
    }
    if (layout->num_layout_heads != 1 && layout->num_layout_heads != shape.num_kv_heads) {
      return absl::InvalidArgumentError(absl::StrCat("RunPrefill: num_layout_heads: expected 1 or ",
                                                     shape.num_kv_heads, ", found ",
                                                     layout->num_layout_heads));
    }
    if (layout->row_indptr == nullptr || layout->kv_block == nullptr ||
        layout->seq_row_begin == nullptr ||
        (layout->maybe_mask_index != nullptr && layout->maybe_masks == nullptr)) {
      return absl::InvalidArgumentError(
          "RunPrefill: layout: expected seq_row_begin, row_indptr, kv_block (and masks with "
          "mask_index), found a null pointer");
    }
    p.seq_row_begin = layout->seq_row_begin;
    p.row_indptr = layout->row_indptr;
    p.kv_block = layout->kv_block;
    p.mask_index = layout->maybe_mask_index;
    p.masks = layout->maybe_masks;
    p.q_block_tokens = layout->q_block_tokens;
    p.kv_block_tokens = layout->kv_block_tokens;
    p.num_layout_heads = layout->num_layout_heads;
    p.words_per_mask =
        (static_cast<int64_t>(layout->q_block_tokens) * layout->kv_block_tokens + 63) / 64;
  }
  cudaStream_t s = AsStream(stream);
  if (shape.head_dim == 128) {
    if (plan.tile_rows == 128) return LaunchPrefill<128, 8>(p, plan.num_tiles, s);
    return LaunchPrefill<128, 4>(p, plan.num_tiles, s);
  }
  return LaunchPrefill<64, 4>(p, plan.num_tiles, s);
}

}  // namespace fluxattn::kernels::cuda
