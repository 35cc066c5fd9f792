// XAttention's antidiagonal block scoring and selection on CUDA (the xattention plugin's prefill
// on a GPU). With stride S, query block size B and G = B / S strided rows per query block, a
// prefill chunk is scored in three steps per KV head and selected in a fourth:
//   1. the strided queries and keys as GEMM operands (XAttentionStridedQueries / ...Keys): row
//      (query block qb, strided row u, query head g of the GQA group) is the concatenation over
//      k of the query at chunk row qb * B + u * S + S-1-k; column v is the concatenation of the
//      keys at positions v * S .. v * S + S-1 (so the keys of one head, contiguous, are already
//      that matrix);
//   2. their product (Gemm::Linear, f32 out): the antidiagonal logits;
//   3. XAttentionBlockScores: each row soft-maxed (logits times `scale`) over the key groups its
//      last query can see, its probabilities summed per KV block, and those sums added over the
//      rows of each query block in a fixed order (the result does not depend on the launch);
//   4. XAttentionSelectBlocks: the threshold rule over those scores, one CTA per row, as bits.
// Host-callable; device memory as pointers, the stream as `void*`; bf16 operands, or f32 with
// `f32`.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace fluxattn::kernels::cuda {

// q: [num_queries, num_q_heads, head_dim] -> out: [num_kv_heads][q_blocks * G][group][S * head_dim]
// with q_blocks = ceil(num_queries / block), zeros for rows past num_queries. head_dim % 8 == 0.
absl::Status XAttentionStridedQueries(const void* q, bool f32, int64_t num_queries,
                                      int32_t num_q_heads, int32_t num_kv_heads, int32_t head_dim,
                                      int32_t stride, int32_t block, void* out, void* stream);

// The keys of positions [0, padded_positions) of one sequence, per KV head contiguous:
// out [num_kv_heads][padded_positions][head_dim]. Positions below pool_length come from the pool
// [pool pages, pool_page_tokens, num_kv_heads, pool_head_dim] through page_table (device int32,
// logical page -> pool page; the first head_dim columns), positions in [pool_length, length)
// from new_keys [length - pool_length, num_kv_heads, head_dim], and positions from length on
// are zeros.
absl::Status XAttentionStridedKeys(const void* k_pool, int32_t pool_page_tokens,
                                   int32_t pool_head_dim, const int32_t* page_table,
                                   int64_t pool_length, const void* new_keys, int64_t length,
                                   int64_t padded_positions, bool f32, int32_t num_kv_heads,
                                   int32_t head_dim, void* out, void* stream);

// The antidiagonal logits of one KV head and the query blocks [q_block0, q_block0 + q_blocks):
// logits [q_blocks * G * group][cols] f32 (row ((qb - q_block0) * G + u) * group + g), cols at
// least the key groups the slab's last query sees. Row (qb, u, g) holds the queries at chunk rows
// [qb * block + u * S, + S) (those below num_queries; a row with none adds nothing), the last
// at absolute position q_pos0 + ...; it reads key groups v <= that position / S, and at most
// key_groups. scores [q_blocks][kv_blocks] f32: the summed probabilities of each KV block
// (block b = groups [b * G, (b + 1) * G)); row_scratch holds q_blocks * G * group * kv_blocks
// floats.
absl::Status XAttentionBlockScores(const float* logits, int64_t cols, int32_t group, int32_t stride,
                                   int32_t block, int64_t q_pos0, int64_t num_queries,
                                   int64_t key_groups, int64_t q_block0, int64_t q_blocks,
                                   float scale, int64_t kv_blocks, float* row_scratch,
                                   float* scores, void* stream);

// The most KV blocks XAttentionSelectBlocks sorts in one CTA's shared memory.
constexpr int32_t kXAttentionSelectMaxBlocks = 4096;

// XAttention's rule on the device, for every (KV head, query block) row of `scores`
// ([num_kv_heads][q_blocks][kv_blocks], XAttentionBlockScores's): the sink blocks (b <
// sink_blocks) and the diagonal blocks (from the block of the query block's first position up
// to its last position's) are kept; the other causal blocks in decreasing score (ties: the lower
// block first) while the mass kept before them is below threshold * the row's causal total.
// keep: [num_kv_heads][q_blocks][ceil(kv_blocks / 32)] words, bit b of block b. Query block qb
// holds the queries at chunk rows [qb * block, min((qb + 1) * block, num_queries)), at absolute
// positions from q_pos0. kv_blocks <= kXAttentionSelectMaxBlocks.
absl::Status XAttentionSelectBlocks(const float* scores, int32_t num_kv_heads, int64_t q_blocks,
                                    int32_t kv_blocks, int32_t block, int64_t q_pos0,
                                    int64_t num_queries, int32_t sink_blocks, float threshold,
                                    uint32_t* keep, void* stream);

}  // namespace fluxattn::kernels::cuda
