// Building, checking and expanding BlockSparseLayouts. Strategies append rows in order
// (query block major, layout head minor); tests expand a layout into a dense boolean mask to
// compare the kernel with a dense reference.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fluxattn/block_sparse_layout.h"

namespace fluxattn {

// Bit of element (query row in block, key in block) of a mask.
inline bool MaskAllows(const uint64_t* mask, int kv_block_tokens, int q_in_block, int k_in_block) {
  const int64_t bit = static_cast<int64_t>(q_in_block) * kv_block_tokens + k_in_block;
  return (mask[bit >> 6] >> (bit & 63)) & 1u;
}

// Appends rows of a layout one after another. Usage:
//   LayoutBuilder b(shape); for each row: b.StartRow(); b.AddBlock(...)...;
//   then FLUXATTN_ASSIGN_OR_RETURN(*layout, b.Build()).
// Misuse (block sizes or heads <= 0, more rows than the shape has, blocks of a row not
// ascending, a block before the first row, rows missing at the end) is not a crash: the first
// such error sticks, later calls do nothing, and Build() returns it.
class LayoutBuilder {
 public:
  // Shape fields of `shape` are copied (its CSR arrays are ignored).
  explicit LayoutBuilder(const BlockSparseLayout& shape);
  LayoutBuilder(int q_block_tokens, int kv_block_tokens, int64_t q_pos0, int64_t num_queries,
                int64_t kv_length, int num_layout_heads);

  // Opens the next row (qb * num_layout_heads + head).
  void StartRow();
  // Whole block (still subject to causality and the KV length). Blocks of a row must be added in
  // strictly ascending order.
  void AddBlock(int32_t kv_block);
  // A block read only where the returned mask bits are set; the mask starts all clear and stays
  // valid until the next Add call. Set bits with SetMaskBit.
  uint64_t* AddMaskedBlock(int32_t kv_block);
  static void SetMaskBit(uint64_t* mask, int kv_block_tokens, int q_in_block, int k_in_block) {
    const int64_t bit = static_cast<int64_t>(q_in_block) * kv_block_tokens + k_in_block;
    mask[bit >> 6] |= uint64_t{1} << (bit & 63);
  }

  // The set bits of words[0 .. num_words) (bit i of word w is index 32 w + i), ascending,
  // appended to *out: how a selection made on a device as bits becomes blocks.
  static void AppendSetBits(const uint32_t* words, int64_t num_words, std::vector<int32_t>* out) {
    for (int64_t w = 0; w < num_words; ++w) {
      for (uint32_t bits = words[w]; bits != 0; bits &= bits - 1) {
        out->push_back(static_cast<int32_t>(w * 32 + __builtin_ctz(bits)));
      }
    }
  }

  int64_t rows_started() const { return static_cast<int64_t>(layout_.row_begin.size()) - 1; }
  // OK, or the first misuse.
  const absl::Status& status() const { return status_; }
  // Closes the last row and returns the layout, or the first misuse (every row of the shape
  // must have been started).
  absl::StatusOr<BlockSparseLayout> Build();
  // Build() for callers whose shape is known to be valid; aborts with the message otherwise.
  BlockSparseLayout Finish();

 private:
  void Fail(absl::Status status) {
    if (status_.ok()) status_ = std::move(status);
  }
  BlockSparseLayout layout_;
  bool started_any_ = false;
  absl::Status status_;
  std::vector<uint64_t> scratch_mask_;  // handed out by AddMaskedBlock after an error
};

// Every causal pair: each query block reads KV blocks 0 .. (last position of the block) / B.
BlockSparseLayout DenseCausalLayout(int64_t q_pos0, int64_t num_queries, int64_t kv_length,
                                    int q_block_tokens = 64, int kv_block_tokens = 64);

// Checks internal consistency (CSR sizes, ascending in-range blocks, mask indices) and, when
// num_kv_heads > 0, that num_layout_heads is 1 or num_kv_heads.
absl::Status ValidateLayout(const BlockSparseLayout& layout, int num_kv_heads = 0);

// Dense [num_queries][kv_length] mask (1 = the kernel reads the pair) of layout head `head`,
// with causality and the KV length applied: the exact set of pairs the kernel attends.
std::vector<uint8_t> ExpandLayoutToDenseMask(const BlockSparseLayout& layout, int head);

// Number of (query, key) pairs layout head `head` reads (causality included).
int64_t CountAttendedPairs(const BlockSparseLayout& layout, int head);

}  // namespace fluxattn
