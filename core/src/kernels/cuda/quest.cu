// Quest's page bounds and page scores on CUDA (fluxattn/kernels/cuda_quest.h).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "cuda_check.cuh"
#include "fluxattn/kernels/cuda_quest.h"
#include "pdl.cuh"

namespace fluxattn::kernels::cuda {
namespace {

using bf16 = __nv_bfloat16;

// Block (page, KV head); each thread owns columns threadIdx.x, + blockDim.x, ...
__global__ void QuestFoldKernel(const bf16* k_pool, int32_t pool_page_tokens, int32_t pool_dim,
                                const int32_t* page_table, int32_t hkv, int32_t d, int32_t sel,
                                int64_t begin, int64_t end, int64_t first_page, float* lo_out,
                                float* hi_out) {
  PdlLaunchDependents();
  PdlWait();
  const int64_t p = first_page + blockIdx.x;
  const int32_t h = blockIdx.y;
  const int64_t p0 = p * sel;
  const int64_t from = max(begin, p0), to = min(end, p0 + sel);
  for (int32_t c = threadIdx.x; c < d; c += blockDim.x) {
    const int64_t at = (p * hkv + h) * d + c;
    float lo = p0 < begin ? lo_out[at] : INFINITY;
    float hi = p0 < begin ? hi_out[at] : -INFINITY;
    for (int64_t pos = from; pos < to; ++pos) {
      const int64_t slot =
          static_cast<int64_t>(page_table[pos / pool_page_tokens]) * pool_page_tokens +
          pos % pool_page_tokens;
      const float k = __bfloat162float(k_pool[(slot * hkv + h) * pool_dim + c]);
      lo = fminf(lo, k);
      hi = fmaxf(hi, k);
    }
    lo_out[at] = lo;
    hi_out[at] = hi;
  }
}

// One warp per (KV head, page).
__global__ void QuestScoreKernel(const bf16* q, int32_t hq, int32_t hkv, int32_t d, const float* lo,
                                 const float* hi, int32_t pages, float* scores) {
  PdlLaunchDependents();
  PdlWait();
  const int64_t w = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32;
  if (w >= static_cast<int64_t>(hkv) * pages) return;
  const int lane = threadIdx.x % 32;
  const int32_t h = static_cast<int32_t>(w / pages);
  const int32_t p = static_cast<int32_t>(w % pages);
  const int32_t group = hq / hkv;
  const float* l = lo + (static_cast<int64_t>(p) * hkv + h) * d;
  const float* u = hi + (static_cast<int64_t>(p) * hkv + h) * d;
  float best = -INFINITY;
  for (int32_t g = 0; g < group; ++g) {
    const bf16* qg = q + static_cast<int64_t>(h * group + g) * d;
    float bound = 0.f;
    for (int32_t c = lane; c < d; c += 32) {
      const float x = __bfloat162float(qg[c]);
      bound += fmaxf(x * l[c], x * u[c]);
    }
#pragma unroll
    for (int off = 16; off > 0; off /= 2) bound += __shfl_xor_sync(0xffffffff, bound, off);
    best = fmaxf(best, bound);
  }
  if (lane == 0) scores[static_cast<int64_t>(h) * pages + p] = best;
}

// Keys that order like the floats (larger float, larger key); -0 as +0, as the host compares.
__device__ __forceinline__ uint32_t OrderedKey(float x) {
  const uint32_t u = __float_as_uint(x == 0.f ? 0.f : x);
  return (u & 0x80000000u) != 0u ? ~u : (u | 0x80000000u);
}

// One CTA per KV head: the `take` highest scores of pages [first, last) by a radix select (four
// passes of 8 bits from the top over the ordered keys, a shared histogram each), ties to the
// lower page; the kept pages' bits (those, [0, first) and [last, num_pages)) into keep[h][words].
constexpr int kTopThreads = 256;
__global__ void QuestTopPagesKernel(const float* scores, int32_t num_pages, int32_t first,
                                    int32_t last, int32_t take, int32_t words, uint32_t* keep) {
  __shared__ uint32_t hist[256];
  __shared__ uint32_t warp_total[kTopThreads / 32];
  __shared__ uint32_t s_prefix, s_need;
  PdlLaunchDependents();
  PdlWait();
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const float* row = scores + static_cast<int64_t>(blockIdx.x) * num_pages;
  uint32_t* out = keep + static_cast<int64_t>(blockIdx.x) * words;
  for (int32_t w = tid; w < words; w += kTopThreads) out[w] = 0u;
  __syncthreads();
  auto set = [&](int32_t page) { atomicOr(&out[page / 32], 1u << (page % 32)); };
  const int32_t count = last - first;
  if (take >= count) {
    for (int32_t p = first + tid; p < last; p += kTopThreads) set(p);
  } else if (take > 0) {
    uint32_t prefix = 0u, mask = 0u, need = static_cast<uint32_t>(take);
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int b = tid; b < 256; b += kTopThreads) hist[b] = 0u;
      __syncthreads();
      for (int32_t p = first + tid; p < last; p += kTopThreads) {
        const uint32_t u = OrderedKey(row[p]);
        if ((u & mask) == prefix) atomicAdd(&hist[(u >> shift) & 255u], 1u);
      }
      __syncthreads();
      if (tid == 0) {
        // The digit of the need-th largest among the keys that match the prefix so far.
        uint32_t above = 0u;
        int b = 255;
        for (; b > 0 && above + hist[b] < need; --b) above += hist[b];
        s_prefix = prefix | (static_cast<uint32_t>(b) << shift);
        s_need = need - above;
      }
      __syncthreads();
      prefix = s_prefix;
      need = s_need;
      mask |= 255u << shift;
    }
    // prefix is now the take-th largest key: every page above it is kept, and the first `need`
    // pages equal to it. Each thread a contiguous run of pages; ranks of the equal ones by an
    // exclusive scan over the threads.
    const int32_t chunk = (count + kTopThreads - 1) / kTopThreads;
    const int32_t c0 = min(first + tid * chunk, last), c1 = min(c0 + chunk, last);
    uint32_t equal = 0u;
    for (int32_t p = c0; p < c1; ++p) equal += OrderedKey(row[p]) == prefix ? 1u : 0u;
    uint32_t incl = equal;
    for (int off = 1; off < 32; off *= 2) {
      const uint32_t up = __shfl_up_sync(0xffffffffu, incl, off);
      if (lane >= off) incl += up;
    }
    if (lane == 31) warp_total[warp] = incl;
    __syncthreads();
    uint32_t rank = incl - equal;
    for (int w = 0; w < warp; ++w) rank += warp_total[w];
    for (int32_t p = c0; p < c1; ++p) {
      const uint32_t u = OrderedKey(row[p]);
      if (u > prefix) {
        set(p);
      } else if (u == prefix) {
        if (rank < need) set(p);
        ++rank;
      }
    }
  }
  for (int32_t p = tid; p < first; p += kTopThreads) set(p);
  for (int32_t p = last + tid; p < num_pages; p += kTopThreads) set(p);
}

}  // namespace

absl::Status QuestFoldKeys(const void* k_pool, int32_t pool_page_tokens, int32_t pool_head_dim,
                           const int32_t* page_table, int32_t num_kv_heads, int32_t head_dim,
                           int32_t selection_page_tokens, int64_t begin, int64_t end,
                           float* min_bounds, float* max_bounds, void* stream) {
  if (pool_page_tokens <= 0 || num_kv_heads <= 0 || head_dim <= 0 || head_dim > pool_head_dim ||
      pool_head_dim > 1024 || selection_page_tokens <= 0 || begin < 0 || end < begin) {
    return absl::InvalidArgumentError(absl::StrCat(
        "QuestFoldKeys: page tokens / KV heads / head_dim / pool head_dim / selection page / "
        "range: expected > 0 / > 0 / 1..pool / <= 1024 / > 0 / 0 <= begin <= end, found ",
        pool_page_tokens, " / ", num_kv_heads, " / ", head_dim, " / ", pool_head_dim, " / ",
        selection_page_tokens, " / [", begin, ", ", end, ")"));
  }
  if (end == begin) return absl::OkStatus();
  const int64_t first = begin / selection_page_tokens;
  const int64_t last = (end - 1) / selection_page_tokens;
  const dim3 grid(static_cast<unsigned>(last - first + 1), static_cast<unsigned>(num_kv_heads));
  const int threads = head_dim >= 128 ? 128 : (head_dim + 31) / 32 * 32;
  FLUXATTN_RETURN_IF_CUDA(
      LaunchPdl(QuestFoldKernel, grid, threads, 0, AsStream(stream),
                static_cast<const bf16*>(k_pool), pool_page_tokens, pool_head_dim, page_table,
                num_kv_heads, head_dim, selection_page_tokens, begin, end, first, min_bounds,
                max_bounds),
      "QuestFoldKeys", "kernel launch");
  return LaunchStatus("QuestFoldKeys");
}

absl::Status QuestPageScores(const void* q, int32_t num_q_heads, int32_t num_kv_heads,
                             int32_t head_dim, const float* min_bounds, const float* max_bounds,
                             int32_t num_pages, float* scores, void* stream) {
  if (num_q_heads <= 0 || num_kv_heads <= 0 || num_q_heads % num_kv_heads != 0 || head_dim <= 0 ||
      num_pages < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "QuestPageScores: heads / head_dim / pages: expected a GQA ratio, > 0, >= 0, found ",
        num_q_heads, "/", num_kv_heads, " / ", head_dim, " / ", num_pages));
  }
  if (num_pages == 0) return absl::OkStatus();
  constexpr int kWarps = 8;
  const int64_t warps = static_cast<int64_t>(num_kv_heads) * num_pages;
  FLUXATTN_RETURN_IF_CUDA(
      LaunchPdl(QuestScoreKernel, static_cast<unsigned>((warps + kWarps - 1) / kWarps), kWarps * 32,
                0, AsStream(stream), static_cast<const bf16*>(q), num_q_heads, num_kv_heads,
                head_dim, min_bounds, max_bounds, num_pages, scores),
      "QuestPageScores", "kernel launch");
  return LaunchStatus("QuestPageScores");
}

absl::Status QuestTopPages(const float* scores, int32_t num_kv_heads, int32_t num_pages,
                           int32_t sink_pages, int32_t recent_pages, int64_t budget_pages,
                           uint32_t* keep, void* stream) {
  if (num_kv_heads <= 0 || num_pages < 0 || sink_pages < 0 || recent_pages < 0 ||
      budget_pages < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "QuestTopPages: KV heads / pages / sink / recent / budget: expected > 0 / >= 0 / >= 0 / "
        ">= 0 / >= 0, found ",
        num_kv_heads, " / ", num_pages, " / ", sink_pages, " / ", recent_pages, " / ",
        budget_pages));
  }
  if (num_pages == 0) return absl::OkStatus();
  const int32_t first = std::min(sink_pages, num_pages);
  const int32_t last = std::max(first, num_pages - recent_pages);
  const int64_t free_pages = budget_pages - first - (num_pages - last);
  const int32_t take = static_cast<int32_t>(std::clamp<int64_t>(free_pages, 0, last - first));
  const int32_t words = (num_pages + 31) / 32;
  FLUXATTN_RETURN_IF_CUDA(
      LaunchPdl(QuestTopPagesKernel, static_cast<unsigned>(num_kv_heads), kTopThreads, 0,
                AsStream(stream), scores, num_pages, first, last, take, words, keep),
      "QuestTopPages", "kernel launch");
  return LaunchStatus("QuestTopPages");
}

}  // namespace fluxattn::kernels::cuda
