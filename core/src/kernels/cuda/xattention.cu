// XAttention's antidiagonal block scoring on CUDA (fluxattn/kernels/cuda_xattention.h).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "cuda_check.cuh"
#include "fluxattn/kernels/cuda_xattention.h"

namespace fluxattn::kernels::cuda {
namespace {

constexpr int kThreads = 256;

unsigned GridFor(int64_t items) {
  return static_cast<unsigned>(std::min<int64_t>((items + kThreads - 1) / kThreads, 1 << 20));
}

// 16-byte pieces: out [hkv][rows][group][S][piece of a head row].
__global__ void StridedQueriesKernel(const uint4* q, int64_t n, int32_t hq, int32_t hkv,
                                     int32_t pieces, int32_t stride, int32_t g_rows, int64_t rows,
                                     uint4* out) {
  const int32_t group = hq / hkv;
  const int64_t total = static_cast<int64_t>(hkv) * rows * group * stride * pieces;
  for (int64_t o = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; o < total;
       o += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t t = o;
    const int32_t c = static_cast<int32_t>(t % pieces);
    t /= pieces;
    const int32_t k = static_cast<int32_t>(t % stride);
    t /= stride;
    const int32_t g = static_cast<int32_t>(t % group);
    t /= group;
    const int64_t row = t % rows;
    const int32_t h = static_cast<int32_t>(t / rows);
    const int64_t r = (row / g_rows) * g_rows * stride + (row % g_rows) * stride + (stride - 1 - k);
    out[o] = r < n ? q[(r * hq + h * group + g) * pieces + c] : make_uint4(0, 0, 0, 0);
  }
}

__global__ void StridedKeysKernel(const char* k_pool, int32_t page_tokens, int32_t pool_row_bytes,
                                  const int32_t* table, int64_t pool_len, const uint4* new_keys,
                                  int64_t len, int64_t padded, int32_t hkv, int32_t pieces,
                                  uint4* out) {
  const int64_t total = static_cast<int64_t>(hkv) * padded * pieces;
  for (int64_t o = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; o < total;
       o += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t c = static_cast<int32_t>(o % pieces);
    const int64_t pos = (o / pieces) % padded;
    const int32_t h = static_cast<int32_t>(o / pieces / padded);
    uint4 value = make_uint4(0, 0, 0, 0);
    if (pos < pool_len) {
      const int64_t slot =
          static_cast<int64_t>(table[pos / page_tokens]) * page_tokens + pos % page_tokens;
      value = reinterpret_cast<const uint4*>(k_pool + (slot * hkv + h) * pool_row_bytes)[c];
    } else if (pos < len) {
      value = new_keys[((pos - pool_len) * hkv + h) * pieces + c];
    }
    out[o] = value;
  }
}

__device__ __forceinline__ float WarpMax(float x) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, off));
  return x;
}
__device__ __forceinline__ float WarpSum(float x) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) x += __shfl_xor_sync(0xffffffff, x, off);
  return x;
}

// One warp per logits row: the row's softmax over its visible key groups, summed per KV block
// into row_scratch [rows][kv_blocks].
constexpr int kRowWarps = 8;
__global__ void RowBlockSumsKernel(const float* logits, int64_t cols, int32_t group, int32_t stride,
                                   int32_t g_rows, int64_t q_pos0, int64_t n, int64_t key_groups,
                                   int64_t q_block0, int64_t rows, float scale, int64_t kv_blocks,
                                   float* row_scratch) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(kRowWarps) + threadIdx.x / 32;
  if (r >= rows) return;
  const int lane = threadIdx.x % 32;
  const int64_t qb = q_block0 + r / (static_cast<int64_t>(g_rows) * group);
  const int64_t u = (r / group) % g_rows;
  const int64_t first = (qb * g_rows + u) * stride;  // chunk row of the row's first query
  int64_t visible = 0;
  if (first < n) {
    const int64_t last = min(first + stride, n) - 1;
    visible = min(key_groups, (q_pos0 + last) / stride + 1);
  }
  const float* row = logits + r * cols;
  float m = -INFINITY;
  for (int64_t v = lane; v < visible; v += 32) m = fmaxf(m, row[v] * scale);
  m = WarpMax(m);
  float z = 0.f;
  for (int64_t v = lane; v < visible; v += 32) z += expf(row[v] * scale - m);
  z = WarpSum(z);
  const float inv = visible > 0 ? 1.0f / z : 0.0f;
  float* out = row_scratch + r * kv_blocks;
  for (int64_t b = lane; b < kv_blocks; b += 32) {
    const int64_t v1 = min((b + 1) * g_rows, visible);
    float s = 0.f;
    for (int64_t v = b * g_rows; v < v1; ++v) s += expf(row[v] * scale - m);
    out[b] = s * inv;
  }
}

// scores[qb][b] = the sum over the rows of query block qb, in row order.
__global__ void SumRowsKernel(const float* row_scratch, int32_t rows_per_block, int64_t q_blocks,
                              int64_t kv_blocks, float* scores) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= q_blocks * kv_blocks) return;
  const int64_t qb = i / kv_blocks, b = i % kv_blocks;
  const float* p = row_scratch + qb * rows_per_block * kv_blocks + b;
  float s = 0.f;
  for (int32_t r = 0; r < rows_per_block; ++r) s += p[r * kv_blocks];
  scores[i] = s;
}

// One CTA per (KV head, query block) row of the scores: the blocks the threshold rule keeps, as
// bits. Forced: the sink blocks and the diagonal blocks up to the causal limit. The others are
// sorted by decreasing score (ties: lower block first, as std::stable_sort on the host) and
// taken while the mass before them is below threshold * total.
constexpr int kSelectThreads = 256;
__global__ void SelectBlocksKernel(const float* scores, int64_t q_blocks, int32_t kv_blocks,
                                   int32_t padded, int32_t block, int64_t q_pos0,
                                   int64_t num_queries, int32_t sink_blocks, float threshold,
                                   int32_t words, uint32_t* keep) {
  extern __shared__ float smem[];
  float* key = smem;                                           // [padded]
  int32_t* idx = reinterpret_cast<int32_t*>(key + padded);     // [padded]
  uint32_t* bits = reinterpret_cast<uint32_t*>(idx + padded);  // [words]
  __shared__ float warp_part[kSelectThreads / 32];
  const int64_t row = blockIdx.x;
  const int64_t qb = row % q_blocks;
  const float* score = scores + row * kv_blocks;
  const int64_t p_first = q_pos0 + qb * block;
  const int64_t p_last = q_pos0 + min((qb + 1) * block, num_queries) - 1;
  const int32_t causal = static_cast<int32_t>(min(p_last / block + 1, int64_t{kv_blocks}));
  const int32_t diag = static_cast<int32_t>(p_first / block);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  auto forced = [&](int32_t b) { return b < sink_blocks || b >= diag; };
  // The row's total and forced mass, each thread over a fixed stride, then in warp order.
  float total = 0.f, forced_mass = 0.f;
  for (int32_t b = tid; b < padded; b += kSelectThreads) {
    const bool causal_b = b < causal;
    const float x = causal_b ? score[b] : 0.f;
    total += x;
    if (causal_b && forced(b)) forced_mass += x;
    key[b] = causal_b && !forced(b) ? x : -INFINITY;
    idx[b] = b;
  }
  for (int32_t w = tid; w < words; w += kSelectThreads) bits[w] = 0u;
  auto block_sum = [&](float x) {
    x = WarpSum(x);
    __syncthreads();
    if (lane == 0) warp_part[warp] = x;
    __syncthreads();
    float t = 0.f;
    for (int w = 0; w < kSelectThreads / 32; ++w) t += warp_part[w];
    return t;
  };
  total = block_sum(total);
  forced_mass = block_sum(forced_mass);
  // Bitonic sort of (key desc, idx asc) over the padded row.
  for (int32_t size = 2; size <= padded; size *= 2) {
    for (int32_t stride = size / 2; stride > 0; stride /= 2) {
      __syncthreads();
      for (int32_t i = tid; i < padded; i += kSelectThreads) {
        const int32_t j = i ^ stride;
        if (j <= i) continue;
        // Whether (key[i], idx[i]) should come after (key[j], idx[j]) in this run's direction.
        const bool descending = (i & size) == 0;
        const bool i_after_j = key[i] < key[j] || (key[i] == key[j] && idx[i] > idx[j]);
        if (i_after_j == descending) {
          const float tk = key[i];
          key[i] = key[j];
          key[j] = tk;
          const int32_t ti = idx[i];
          idx[i] = idx[j];
          idx[j] = ti;
        }
      }
    }
  }
  __syncthreads();
  // Exclusive prefix sums of the sorted candidates: each thread a contiguous chunk, the chunk
  // totals scanned in thread order. Candidate i is taken while forced + before(i) < goal.
  const float goal = threshold * total;
  const int32_t chunk = (padded + kSelectThreads - 1) / kSelectThreads;
  const int32_t c0 = min(tid * chunk, padded), c1 = min(c0 + chunk, padded);
  float own = 0.f;
  for (int32_t i = c0; i < c1; ++i) own += key[i] > -INFINITY ? key[i] : 0.f;
  // Inclusive scan of `own` over the threads: within the warp, then over the warps in order.
  float incl = own;
  for (int off = 1; off < 32; off *= 2) {
    const float up = __shfl_up_sync(0xffffffff, incl, off);
    if (lane >= off) incl += up;
  }
  __syncthreads();
  if (lane == 31) warp_part[warp] = incl;
  __syncthreads();
  float before = incl - own;
  for (int w = 0; w < warp; ++w) before += warp_part[w];
  for (int32_t i = c0; i < c1; ++i) {
    if (key[i] == -INFINITY || forced_mass + before >= goal) break;
    atomicOr(&bits[idx[i] / 32], 1u << (idx[i] % 32));
    before += key[i];
  }
  __syncthreads();
  for (int32_t b = tid; b < causal; b += kSelectThreads) {
    if (forced(b)) atomicOr(&bits[b / 32], 1u << (b % 32));
  }
  __syncthreads();
  for (int32_t w = tid; w < words; w += kSelectThreads) keep[row * words + w] = bits[w];
}

absl::Status CheckGeometry(const char* where, int32_t hq, int32_t hkv, int32_t d, int32_t stride,
                           int32_t block) {
  if (hq <= 0 || hkv <= 0 || hq % hkv != 0 || d <= 0 || d % 8 != 0 || stride <= 0 || block <= 0 ||
      block % stride != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        where,
        ": heads / head_dim / stride / block: expected a GQA ratio, a multiple of 8, > 0, a "
        "multiple of the stride, found ",
        hq, "/", hkv, " / ", d, " / ", stride, " / ", block));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status XAttentionStridedQueries(const void* q, bool f32, int64_t num_queries,
                                      int32_t num_q_heads, int32_t num_kv_heads, int32_t head_dim,
                                      int32_t stride, int32_t block, void* out, void* stream) {
  FLUXATTN_RETURN_IF_ERROR(CheckGeometry("XAttentionStridedQueries", num_q_heads, num_kv_heads,
                                         head_dim, stride, block));
  if (num_queries <= 0) return absl::OkStatus();
  const int32_t pieces = head_dim * (f32 ? 4 : 2) / 16;
  const int32_t g_rows = block / stride;
  const int64_t rows = (num_queries + block - 1) / block * g_rows;
  const int64_t total = static_cast<int64_t>(num_q_heads) * rows * stride * pieces;
  StridedQueriesKernel<<<GridFor(total), kThreads, 0, AsStream(stream)>>>(
      static_cast<const uint4*>(q), num_queries, num_q_heads, num_kv_heads, pieces, stride, g_rows,
      rows, static_cast<uint4*>(out));
  return LaunchStatus("XAttentionStridedQueries");
}

absl::Status XAttentionStridedKeys(const void* k_pool, int32_t pool_page_tokens,
                                   int32_t pool_head_dim, const int32_t* page_table,
                                   int64_t pool_length, const void* new_keys, int64_t length,
                                   int64_t padded_positions, bool f32, int32_t num_kv_heads,
                                   int32_t head_dim, void* out, void* stream) {
  if (pool_page_tokens <= 0 || num_kv_heads <= 0 || head_dim <= 0 || head_dim % 8 != 0 ||
      pool_head_dim < head_dim || pool_head_dim % 8 != 0 || pool_length < 0 ||
      length < pool_length || padded_positions < length) {
    return absl::InvalidArgumentError(absl::StrCat(
        "XAttentionStridedKeys: page tokens / KV heads / head_dim / pool head_dim / pool length "
        "/ length / padded: expected > 0 / > 0 / a multiple of 8 / a multiple of 8 >= head_dim "
        "/ 0 <= pool length <= length <= padded, found ",
        pool_page_tokens, " / ", num_kv_heads, " / ", head_dim, " / ", pool_head_dim, " / ",
        pool_length, " / ", length, " / ", padded_positions));
  }
  if (padded_positions == 0) return absl::OkStatus();
  const int32_t elem = f32 ? 4 : 2;
  const int32_t pieces = head_dim * elem / 16;
  const int64_t total = static_cast<int64_t>(num_kv_heads) * padded_positions * pieces;
  StridedKeysKernel<<<GridFor(total), kThreads, 0, AsStream(stream)>>>(
      static_cast<const char*>(k_pool), pool_page_tokens, pool_head_dim * elem, page_table,
      pool_length, static_cast<const uint4*>(new_keys), length, padded_positions, num_kv_heads,
      pieces, static_cast<uint4*>(out));
  return LaunchStatus("XAttentionStridedKeys");
}

absl::Status XAttentionBlockScores(const float* logits, int64_t cols, int32_t group, int32_t stride,
                                   int32_t block, int64_t q_pos0, int64_t num_queries,
                                   int64_t key_groups, int64_t q_block0, int64_t q_blocks,
                                   float scale, int64_t kv_blocks, float* row_scratch,
                                   float* scores, void* stream) {
  if (group <= 0 || stride <= 0 || block <= 0 || block % stride != 0 || q_pos0 < 0 ||
      num_queries < 0 || key_groups < 0 || cols < 0 || q_block0 < 0 || q_blocks < 0 ||
      kv_blocks < 0 || kv_blocks * (block / stride) < key_groups) {
    return absl::InvalidArgumentError(absl::StrCat(
        "XAttentionBlockScores: group / stride / block / key groups / KV blocks: expected > 0 / "
        "> 0 / a multiple of the stride / >= 0 / enough blocks for the groups, found ",
        group, " / ", stride, " / ", block, " / ", key_groups, " / ", kv_blocks));
  }
  if (q_blocks == 0 || kv_blocks == 0) return absl::OkStatus();
  const int32_t g_rows = block / stride;
  const int64_t rows = q_blocks * g_rows * group;
  RowBlockSumsKernel<<<static_cast<unsigned>((rows + kRowWarps - 1) / kRowWarps), kRowWarps * 32, 0,
                       AsStream(stream)>>>(logits, cols, group, stride, g_rows, q_pos0, num_queries,
                                           key_groups, q_block0, rows, scale, kv_blocks,
                                           row_scratch);
  FLUXATTN_RETURN_IF_ERROR(LaunchStatus("XAttentionBlockScores"));
  SumRowsKernel<<<static_cast<unsigned>((q_blocks * kv_blocks + kThreads - 1) / kThreads), kThreads,
                  0, AsStream(stream)>>>(row_scratch, g_rows * group, q_blocks, kv_blocks, scores);
  return LaunchStatus("XAttentionBlockScores");
}

absl::Status XAttentionSelectBlocks(const float* scores, int32_t num_kv_heads, int64_t q_blocks,
                                    int32_t kv_blocks, int32_t block, int64_t q_pos0,
                                    int64_t num_queries, int32_t sink_blocks, float threshold,
                                    uint32_t* keep, void* stream) {
  if (num_kv_heads <= 0 || q_blocks < 0 || kv_blocks < 0 ||
      kv_blocks > kXAttentionSelectMaxBlocks || block <= 0 || q_pos0 < 0 || num_queries < 0 ||
      sink_blocks < 0 || !(threshold >= 0.f && threshold <= 1.f) ||
      q_pos0 + num_queries > int64_t{kv_blocks} * block) {
    return absl::InvalidArgumentError(absl::StrCat(
        "XAttentionSelectBlocks: KV heads / KV blocks / block / sink blocks / threshold: "
        "expected > 0 / [0, ",
        kXAttentionSelectMaxBlocks, "] covering the queries / > 0 / >= 0 / [0, 1], found ",
        num_kv_heads, " / ", kv_blocks, " / ", block, " / ", sink_blocks, " / ", threshold));
  }
  if (q_blocks == 0 || kv_blocks == 0) return absl::OkStatus();
  int32_t padded = 1;
  while (padded < kv_blocks) padded *= 2;
  const int32_t words = (kv_blocks + 31) / 32;
  const size_t smem = static_cast<size_t>(padded) * (sizeof(float) + sizeof(int32_t)) +
                      static_cast<size_t>(words) * sizeof(uint32_t);
  static_assert(kXAttentionSelectMaxBlocks * 8 + kXAttentionSelectMaxBlocks / 8 <= 48 * 1024,
                "a row's sort fits the default shared memory of a CTA");
  SelectBlocksKernel<<<static_cast<unsigned>(num_kv_heads * q_blocks), kSelectThreads, smem,
                       AsStream(stream)>>>(scores, q_blocks, kv_blocks, padded, block, q_pos0,
                                           num_queries, sink_blocks, threshold, words, keep);
  return LaunchStatus("XAttentionSelectBlocks");
}

}  // namespace fluxattn::kernels::cuda
