// Attention on CUDA (bf16, sm_90): a block-sparse flash-attention prefill over the paged KV pool
// and a split-KV paged decode with a combine step; and a float32 kernel over the same tables
// (RunAttentionF32). Host-callable; no CUDA types: device memory is
// passed as pointers, the stream as `void*` (a cudaStream_t, nullptr = the legacy stream).
//
// What the kernels read (all device memory unless marked host):
//
//   KV pool     K and V, each one allocation [num_pages, page_tokens, num_kv_heads, head_dim]
//               bf16. page_tokens is a power of two in [16, 128] (any power of two >= 1 works).
//   Page table  per sequence b, logical page i holds positions [i*page_tokens, (i+1)*page_tokens)
//               and lives in physical page page_indices[page_indptr[b] + i]. Pages may be in any
//               order in the pool.
//   Queries     varlen rows [sum_T, num_q_heads, head_dim] bf16 with RoPE applied; sequence b owns
//               rows [q_indptr[b], q_indptr[b+1]); its row r sits at absolute position
//               q_pos0[b] + r. The output has the same shape and row order.
//   Rules       key position <= query position (causal) and key position < kv_len[b] always
//               apply; a layout only removes pairs beyond that. Query head hq reads KV head
//               hq / (num_q_heads / num_kv_heads) (GQA of any integer ratio).
//
//   Layout      (optional; absent = dense causal) the CSR of fluxattn::BlockSparseLayout,
//               concatenated over the sequences of the batch:
//               - the layout rows of sequence b are seq_row_begin[b] + qb * num_layout_heads + h,
//                 for query block qb (rows [qb*q_block_tokens, ...) of that sequence) and
//                 layout head h (num_layout_heads is 1 = shared by every KV head, or
//                 num_kv_heads);
//               - row r lists KV blocks kv_block[row_indptr[r] .. row_indptr[r+1]) (absolute
//                 block index = position / kv_block_tokens, strictly ascending);
//               - maybe_mask_index[entry] is -1 (whole block) or the index of a mask of
//                 q_block_tokens * kv_block_tokens bits in maybe_masks (64-bit words, row-major
//                 [query row in block][key in block], bit set = pair allowed; a mask starts at
//                 word mask_index * ceil(q_block_tokens * kv_block_tokens / 64)).
//               q_block_tokens and kv_block_tokens must be multiples of 64 (the kernels' tile);
//               this is FlashInfer's "block-sparse as page lists per row" with the list in
//               units of layout blocks, so the lists stay short and the engine's CPU layouts
//               upload unchanged. For decode, the query is row 0 of query block 0 of its
//               sequence (mask bits of row 0 apply) and sits at position kv_len - 1: it reads
//               every listed key below kv_len.
//
// Kernels: prefill is a flash-attention kernel on mma.sync (16 query rows per warp, 64-key
// tiles through a cp.async double buffer); decode puts a GQA group (up to 16 query heads) in
// the rows of one m16 tile so that it too runs on the tensor cores, one CTA per (sequence, KV
// head, split) with a three-deep cp.async pipeline, and a combine kernel merges the splits
// (groups over 16 query heads take a CUDA-core kernel).
//
// Plan / run: Plan* reads only host-side counts and writes a schedule into the caller's device
// workspace; Run* reads device data only (no host round trip, no allocation), so a run is
// capturable in a CUDA graph and a plan can be reused for every layer of a step.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fluxattn::kernels::cuda {

struct PagedKvPool {
  const void* k = nullptr;  // [num_pages, page_tokens, num_kv_heads, head_dim] bf16
  const void* v = nullptr;
  int32_t num_pages = 0;
  int32_t page_tokens = 0;
};

// Per-sequence data of a batch, device arrays of num_seqs (+1 for the indptrs) int32.
struct SequenceBatch {
  int32_t num_seqs = 0;
  const int32_t* q_indptr = nullptr;     // prefill only; decode row b is sequence b
  const int32_t* q_pos0 = nullptr;       // absolute position of the first query row
  const int32_t* kv_len = nullptr;       // keys at positions [0, kv_len) exist
  const int32_t* page_indptr = nullptr;  // [num_seqs + 1] into page_indices
  const int32_t* page_indices = nullptr;
};

struct BlockSparseLayoutView {
  int32_t q_block_tokens = 128;
  int32_t kv_block_tokens = 128;
  int32_t num_layout_heads = 1;
  const int32_t* seq_row_begin = nullptr;  // [num_seqs]
  const int32_t* row_indptr = nullptr;     // [num_rows + 1]
  const int32_t* kv_block = nullptr;       // [num_entries]
  const int32_t* maybe_mask_index = nullptr;
  const uint64_t* maybe_masks = nullptr;
};

struct AttentionShape {
  int32_t num_q_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;  // 64 or 128
  float scale = 0.0f;    // softmax scale, usually 1/sqrt(head_dim)
};

struct PrefillArgs {
  AttentionShape shape;
  const void* q = nullptr;  // [sum_T, num_q_heads, head_dim] bf16
  void* out = nullptr;      // same shape, bf16
  PagedKvPool kv;
  SequenceBatch seqs;
  const BlockSparseLayoutView* maybe_layout = nullptr;  // nullptr = dense causal
};

// A prefill schedule: query tiles of 64 rows (or 128, see PlanPrefill), heaviest first.
struct PrefillPlan {
  int32_t num_tiles = 0;
  int32_t tile_rows = 0;
  const void* tiles = nullptr;  // in the workspace
};

// Device workspace PlanPrefill needs for a batch of `total_q_rows` rows and `num_seqs` sequences.
size_t PrefillWorkspaceBytes(int64_t total_q_rows, int32_t num_seqs);

// host_q_indptr [num_seqs + 1] and host_q_pos0 [num_seqs] are host copies of the batch's
// counts. The tile list is copied into `workspace` in stream order. tile_rows: query rows per
// CTA, 64 or (head_dim 128 only) 128; 0 = the kernel's choice (128 for head_dim 128). A layout's
// q_block_tokens must be a multiple of it.
absl::StatusOr<PrefillPlan> PlanPrefill(const AttentionShape& shape,
                                        std::span<const int32_t> host_q_indptr,
                                        std::span<const int32_t> host_q_pos0, void* workspace,
                                        size_t workspace_bytes, void* stream,
                                        int32_t tile_rows = 0);

absl::Status RunPrefill(const PrefillArgs& args, const PrefillPlan& plan, void* stream);

struct DecodeArgs {
  AttentionShape shape;
  const void* q = nullptr;  // [num_seqs, num_q_heads, head_dim] bf16
  void* out = nullptr;      // same shape, bf16
  PagedKvPool kv;
  SequenceBatch seqs;  // q_indptr unused
  const BlockSparseLayoutView* maybe_layout = nullptr;
};

// The split count depends only on host counts: the longest row (in 64-token tiles) and the batch.
// tiles_per_split > 0 gives every split of every row that many 64-key tiles (a row of fewer
// tiles uses fewer splits; the others write empty partials), so that rows of very different
// lengths, as in a batch where some requests read a window and others their whole cache, spread
// over the GPU by their work; 0 cuts each row into num_splits equal parts. A value too small to
// cover the longest row in num_splits parts is raised to the equal cut on the device.
struct DecodePlan {
  int32_t num_seqs = 0;
  int32_t num_splits = 1;
  int32_t tiles_per_split = 0;
  void* partials = nullptr;  // in the workspace
};

// Splits so that the num_seqs * num_kv_heads * splits CTAs make one wave at two CTAs per SM,
// rounded down (measured best at B = 1 and 8, KV 32K-128K); at least two 64-key tiles per
// split and at most `max_splits`. max_kv_tokens is the longest row's key count (kv_len, or the
// listed blocks). Any count is correct; this one is fast.
int32_t ChooseDecodeSplits(int32_t num_seqs, int32_t num_kv_heads, int64_t max_kv_tokens,
                           int32_t max_splits = 256);

// Splits balanced by work: `row_kv_tokens` holds the key count of every row a CTA column reads
// (one per sequence and KV head: kv_len, or the tokens its layout row lists). The smallest
// tiles_per_split (at least two tiles) whose CTAs, one per (row, split), make one wave at two
// CTAs per SM of an H200, and the split count the longest row then needs, at most
// MaxDecodeSplits(num_seqs, num_kv_heads). With rows of one length this is ChooseDecodeSplits.
struct DecodeSplits {
  int32_t num_splits = 1;
  int32_t tiles_per_split = 0;
};
DecodeSplits BalanceDecodeSplits(std::span<const int64_t> row_kv_tokens, int32_t num_seqs,
                                 int32_t num_kv_heads);
// The most splits BalanceDecodeSplits gives a batch of num_seqs (for sizing the workspace).
int32_t MaxDecodeSplits(int32_t num_seqs, int32_t num_kv_heads);
size_t DecodeWorkspaceBytes(int32_t num_seqs, const AttentionShape& shape, int32_t num_splits);
absl::StatusOr<DecodePlan> PlanDecode(const AttentionShape& shape, int32_t num_seqs,
                                      int32_t num_splits, void* workspace, size_t workspace_bytes,
                                      int32_t tiles_per_split = 0);
absl::Status RunDecode(const DecodeArgs& args, const DecodePlan& plan, void* stream);

// Float32 attention (prefill and decode rows alike) over a pool of float32 pages
// [num_pages, page_tokens, num_kv_heads, head_dim] and the same tables and layout as the bf16
// kernels (q_indptr is read for decode rows too); f32 queries and output, f32 arithmetic. One
// warp per (row, query head): a reference-precision path, not a fast one. Rows that read no key
// get zeros.
struct AttentionF32Args {
  AttentionShape shape;
  const void* q = nullptr;  // [total_rows, num_q_heads, head_dim] f32
  void* out = nullptr;      // same shape, f32
  int64_t total_rows = 0;
  PagedKvPool kv;  // f32 pages
  SequenceBatch seqs;
  const BlockSparseLayoutView* maybe_layout = nullptr;  // nullptr = dense causal
};
absl::Status RunAttentionF32(const AttentionF32Args& args, void* stream);

// Writes new keys and values into the pool: rows [sum_T, num_kv_heads, head_dim] bf16 of
// sequence b (rows [q_indptr[b], q_indptr[b+1])) go to positions q_pos0[b] + r through the
// sequence's page table.
absl::Status AppendKv(const void* k_rows, const void* v_rows, int64_t total_rows,
                      int32_t num_kv_heads, int32_t head_dim, void* k_pool, void* v_pool,
                      int32_t page_tokens, const SequenceBatch& seqs, void* stream);

// One launch for what a layer's attention needs before its kernels: `words` int32 copied from
// page-locked host memory (cudaMallocHost; the device reads it through unified addressing) to
// device_words, and rows [total_rows, num_kv_heads, head_dim] of new keys and values (elements
// of `elem_bytes`: 2 for bf16, 4 for f32) written to the pool slots host_slots[row] (slot =
// page * page_tokens + offset; host_slots is page-locked host memory too). Launched with
// programmatic dependent launch: the host memory is read while the kernel before finishes; the
// writes wait for it.
absl::Status StageTablesAndAppendKv(const int32_t* host_words, int32_t* device_words, int64_t words,
                                    const int32_t* host_slots, const void* k_rows,
                                    const void* v_rows, int64_t total_rows, int32_t num_kv_heads,
                                    int32_t head_dim, void* k_pool, void* v_pool, void* stream,
                                    int32_t elem_bytes = 2);

}  // namespace fluxattn::kernels::cuda
