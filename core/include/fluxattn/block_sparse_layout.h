// Sparsity is data: a block-sparse layout says, for each query block and KV head, which KV
// blocks the queries read, plus exact element masks for blocks that are only partly read.
// Every attention strategy is a layout builder; one kernel (per device) consumes any layout.
//
// Conventions:
// - Query row r (0-based within the problem) sits at absolute position q_pos0 + r. Query block
//   qb covers rows [qb*q_block_tokens, min((qb+1)*q_block_tokens, num_queries)).
// - KV block b covers absolute positions [b*kv_block_tokens, (b+1)*kv_block_tokens).
// - The kernel always applies causality (key position <= query position) and the KV length;
//   a layout only ever removes pairs beyond that.
// - A row of the layout is (qb, head) with head in [0, num_layout_heads); num_layout_heads is 1
//   when every KV head shares the pattern, else the number of KV heads. Query head hq reads the
//   row of KV head hq / (num_q_heads / num_kv_heads).
#pragma once

#include <cstdint>
#include <vector>

namespace fluxattn {

struct BlockSparseLayout {
  int q_block_tokens = 128;
  int kv_block_tokens = 128;
  int64_t q_pos0 = 0;
  int64_t num_queries = 0;
  int64_t kv_length = 0;
  int num_layout_heads = 1;

  // CSR over rows r = qb * num_layout_heads + head: entries [row_begin[r], row_begin[r+1]).
  std::vector<int64_t> row_begin;
  std::vector<int32_t> kv_block;    // KV block per entry, strictly ascending within a row
  std::vector<int32_t> mask_index;  // per entry: -1 = whole block (subject to causality), else
                                    // the index of a mask in `masks`
  // Each mask is q_block_tokens * kv_block_tokens bits, row-major [query row in block][key in
  // block], packed into 64-bit words; bit set = pair allowed (still subject to causality).
  std::vector<uint64_t> masks;

  int64_t num_q_blocks() const { return (num_queries + q_block_tokens - 1) / q_block_tokens; }
  int64_t num_rows() const { return num_q_blocks() * num_layout_heads; }
  int64_t words_per_mask() const {
    return (static_cast<int64_t>(q_block_tokens) * kv_block_tokens + 63) / 64;
  }
};

}  // namespace fluxattn
