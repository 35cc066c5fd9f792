// Quest's page scoring on CUDA (the quest plugin's decode on a GPU): per-page key bounds folded
// from the paged bf16 KV pool, each page's upper bound on a query's logit, and the pages kept
// (sink, recent and the top bounds within the budget) as bits for the host's layout. Host-callable;
// device memory as pointers, the stream as `void*`.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace fluxattn::kernels::cuda {

// Folds the keys at positions [begin, end) of one sequence into per-(selection page, KV head)
// bounds min_bounds / max_bounds [num_selection_pages, num_kv_heads, head_dim] f32, selection
// page p covering positions [p * selection_page_tokens, (p + 1) * selection_page_tokens). A page
// whose first position is below `begin` merges with the bounds it has; one that starts at or
// after `begin` starts from its keys. Keys come from the pool [pool pages, pool_page_tokens,
// num_kv_heads, pool_head_dim] bf16 through `page_table` (device int32, logical KV page ->
// pool page); only their first head_dim columns are read (head_dim <= pool_head_dim <= 1024).
absl::Status QuestFoldKeys(const void* k_pool, int32_t pool_page_tokens, int32_t pool_head_dim,
                           const int32_t* page_table, int32_t num_kv_heads, int32_t head_dim,
                           int32_t selection_page_tokens, int64_t begin, int64_t end,
                           float* min_bounds, float* max_bounds, void* stream);

// scores[h * num_pages + p] = the largest, over the query heads g of KV head h (GQA groups of
// num_q_heads / num_kv_heads), of sum_d max(q[g, d] * min[p, h, d], q[g, d] * max[p, h, d]):
// Quest's upper bound on q . k over the keys of page p. q: [num_q_heads, head_dim] bf16.
absl::Status QuestPageScores(const void* q, int32_t num_q_heads, int32_t num_kv_heads,
                             int32_t head_dim, const float* min_bounds, const float* max_bounds,
                             int32_t num_pages, float* scores, void* stream);

// Quest's choice on the device, per KV head h of scores [num_kv_heads][num_pages]
// (QuestPageScores's): the first min(sink_pages, num_pages) pages, the last recent_pages (not
// below those), and of the pages between, the highest scores (ties: the lower page) up to
// budget_pages in all. keep: [num_kv_heads][ceil(num_pages / 32)] words, bit p of page p.
absl::Status QuestTopPages(const float* scores, int32_t num_kv_heads, int32_t num_pages,
                           int32_t sink_pages, int32_t recent_pages, int64_t budget_pages,
                           uint32_t* keep, void* stream);

}  // namespace fluxattn::kernels::cuda
