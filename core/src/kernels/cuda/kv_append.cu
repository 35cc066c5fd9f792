// Writes new key and value rows into the paged KV pool through each sequence's page table.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "cuda_check.cuh"
#include "fluxattn/kernels/cuda_attention.h"
#include "pdl.cuh"

namespace fluxattn::kernels::cuda {
namespace {

// One warp per (row, kv head); 16-byte chunks (head_dim % 8 == 0).
__global__ void AppendKvKernel(const uint4* k_rows, const uint4* v_rows, int64_t total_rows,
                               int32_t hkv, int32_t chunks, uint4* k_pool, uint4* v_pool,
                               int32_t page_shift, int32_t num_seqs, const int32_t* q_indptr,
                               const int32_t* q_pos0, const int32_t* page_indptr,
                               const int32_t* page_indices) {
  PdlLaunchDependents();
  PdlWait();
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  const int lane = threadIdx.x % 32;
  for (int64_t w = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32;
       w < total_rows * hkv; w += warps) {
    const int64_t r = w / hkv;
    const int32_t h = static_cast<int32_t>(w % hkv);
    int lo = 0, hi = num_seqs - 1;  // last sequence with q_indptr[b] <= r
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (q_indptr[mid] <= r)
        lo = mid;
      else
        hi = mid - 1;
    }
    const int32_t pos = q_pos0[lo] + static_cast<int32_t>(r - q_indptr[lo]);
    const int32_t page = page_indices[page_indptr[lo] + (pos >> page_shift)];
    const int64_t slot =
        (static_cast<int64_t>(page) << page_shift) + (pos & ((1 << page_shift) - 1));
    const int64_t dst = (slot * hkv + h) * chunks;
    const int64_t src = (r * hkv + h) * chunks;
    for (int c = lane; c < chunks; c += 32) {
      k_pool[dst + c] = k_rows[src + c];
      v_pool[dst + c] = v_rows[src + c];
    }
  }
}

// Blocks [0, stage_blocks) copy `words` int32 from page-locked host memory to the device, four
// per thread; the others append one (row, KV head) per warp to the pool slot host_slots[row].
// The host words are read before waiting for the kernel before (the host wrote them before the
// launch; no kernel writes them), so the read over the bus overlaps that kernel's tail.
__global__ void StageAndAppendKernel(const int32_t* host_words, int32_t* device_words,
                                     int64_t words, unsigned stage_blocks,
                                     const int32_t* host_slots, const uint4* k_rows,
                                     const uint4* v_rows, int64_t total_rows, int32_t hkv,
                                     int32_t chunks, uint4* k_pool, uint4* v_pool) {
  PdlLaunchDependents();
  if (blockIdx.x < stage_blocks) {
    const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 4;
    int32_t v[4] = {0, 0, 0, 0};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (i + j < words) v[j] = host_words[i + j];
    }
    PdlWait();
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (i + j < words) device_words[i + j] = v[j];
    }
    return;
  }
  const int64_t w =
      (static_cast<int64_t>(blockIdx.x - stage_blocks) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  const bool active = w < total_rows * hkv;
  const int64_t r = active ? w / hkv : 0;
  const int64_t slot = active ? host_slots[r] : 0;
  PdlWait();
  if (!active) return;
  const int32_t h = static_cast<int32_t>(w % hkv);
  const int64_t dst = (slot * hkv + h) * chunks;
  const int64_t src = (r * hkv + h) * chunks;
  for (int c = lane; c < chunks; c += 32) {
    k_pool[dst + c] = k_rows[src + c];
    v_pool[dst + c] = v_rows[src + c];
  }
}

}  // namespace

absl::Status AppendKv(const void* k_rows, const void* v_rows, int64_t total_rows,
                      int32_t num_kv_heads, int32_t head_dim, void* k_pool, void* v_pool,
                      int32_t page_tokens, const SequenceBatch& seqs, void* stream) {
  if (head_dim <= 0 || head_dim % 8 != 0 || num_kv_heads <= 0 || total_rows < 0 ||
      !IsPowerOfTwo(page_tokens) || seqs.num_seqs < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "AppendKv: head_dim / num_kv_heads / page_tokens: expected a multiple of 8 / > 0 / a "
        "power of two, found ",
        head_dim, " / ", num_kv_heads, " / ", page_tokens));
  }
  if (total_rows == 0 || seqs.num_seqs == 0) return absl::OkStatus();
  const int64_t warps = total_rows * num_kv_heads;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((warps + 7) / 8, 132 * 64));
  FLUXATTN_RETURN_IF_CUDA(
      LaunchPdl(AppendKvKernel, blocks, 256, 0, AsStream(stream), static_cast<const uint4*>(k_rows),
                static_cast<const uint4*>(v_rows), total_rows, num_kv_heads, head_dim / 8,
                static_cast<uint4*>(k_pool), static_cast<uint4*>(v_pool), Log2(page_tokens),
                seqs.num_seqs, seqs.q_indptr, seqs.q_pos0, seqs.page_indptr, seqs.page_indices),
      "AppendKv", "kernel launch");
  return LaunchStatus("AppendKv");
}

absl::Status StageTablesAndAppendKv(const int32_t* host_words, int32_t* device_words, int64_t words,
                                    const int32_t* host_slots, const void* k_rows,
                                    const void* v_rows, int64_t total_rows, int32_t num_kv_heads,
                                    int32_t head_dim, void* k_pool, void* v_pool, void* stream,
                                    int32_t elem_bytes) {
  if (head_dim <= 0 || head_dim % 8 != 0 || num_kv_heads <= 0 || total_rows < 0 || words < 0 ||
      (elem_bytes != 2 && elem_bytes != 4)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "StageTablesAndAppendKv: head_dim / num_kv_heads / rows / words / elem_bytes: expected a "
        "multiple of 8 / > 0 / >= 0 / >= 0 / 2 or 4, found ",
        head_dim, " / ", num_kv_heads, " / ", total_rows, " / ", words, " / ", elem_bytes));
  }
  // 16-byte chunks per head row.
  const int32_t chunks = head_dim * elem_bytes / 16;
  const unsigned stage_blocks = static_cast<unsigned>((words + 1023) / 1024);
  const int64_t warps = total_rows * num_kv_heads;
  const unsigned append_blocks = static_cast<unsigned>((warps + 7) / 8);
  if (stage_blocks + append_blocks == 0) return absl::OkStatus();
  FLUXATTN_RETURN_IF_CUDA(
      LaunchPdl(StageAndAppendKernel, stage_blocks + append_blocks, 256, 0, AsStream(stream),
                host_words, device_words, words, stage_blocks, host_slots,
                static_cast<const uint4*>(k_rows), static_cast<const uint4*>(v_rows), total_rows,
                num_kv_heads, chunks, static_cast<uint4*>(k_pool), static_cast<uint4*>(v_pool)),
      "StageTablesAndAppendKv", "kernel launch");
  return LaunchStatus("StageTablesAndAppendKv");
}

}  // namespace fluxattn::kernels::cuda
