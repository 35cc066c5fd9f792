#include "fluxattn/attention/layout_builder.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "fluxattn/status.h"

namespace fluxattn {

LayoutBuilder::LayoutBuilder(const BlockSparseLayout& shape)
    : LayoutBuilder(shape.q_block_tokens, shape.kv_block_tokens, shape.q_pos0, shape.num_queries,
                    shape.kv_length, shape.num_layout_heads) {}

LayoutBuilder::LayoutBuilder(int q_block_tokens, int kv_block_tokens, int64_t q_pos0,
                             int64_t num_queries, int64_t kv_length, int num_layout_heads) {
  layout_.q_block_tokens = q_block_tokens;
  layout_.kv_block_tokens = kv_block_tokens;
  layout_.q_pos0 = q_pos0;
  layout_.num_queries = num_queries;
  layout_.kv_length = kv_length;
  layout_.num_layout_heads = num_layout_heads;
  layout_.row_begin.push_back(0);
  if (q_block_tokens <= 0 || kv_block_tokens <= 0 || num_layout_heads <= 0) {
    Fail(InvalidInput(
        "layout q_block_tokens / kv_block_tokens / num_layout_heads", "integers > 0",
        absl::StrCat(q_block_tokens, " / ", kv_block_tokens, " / ", num_layout_heads)));
    return;
  }
  if (num_queries < 0 || kv_length < 0 || q_pos0 < 0) {
    Fail(InvalidInput("layout q_pos0 / num_queries / kv_length", "integers >= 0",
                      absl::StrCat(q_pos0, " / ", num_queries, " / ", kv_length)));
    return;
  }
  layout_.row_begin.reserve(layout_.num_rows() + 1);
}

void LayoutBuilder::StartRow() {
  if (!status_.ok()) return;
  if (rows_started() + (started_any_ ? 1 : 0) >= layout_.num_rows()) {
    Fail(
        InvalidInput("layout rows",
                     absl::StrCat("at most ", layout_.num_rows(), " (query blocks x layout heads)"),
                     absl::StrCat("row ", rows_started() + (started_any_ ? 1 : 0), " started")));
    return;
  }
  // row_begin holds one more element than the rows closed so far; opening a row closes the
  // previous one by recording where the new one begins.
  if (started_any_) {
    layout_.row_begin.push_back(static_cast<int64_t>(layout_.kv_block.size()));
  }
  started_any_ = true;
}

void LayoutBuilder::AddBlock(int32_t kv_block) {
  if (!status_.ok()) return;
  if (!started_any_) {
    Fail(InvalidInput("layout block", "StartRow() before the first block",
                      absl::StrCat("block ", kv_block, " with no row started")));
    return;
  }
  const bool row_empty = layout_.kv_block.size() == static_cast<size_t>(layout_.row_begin.back());
  if (kv_block < 0 || (!row_empty && layout_.kv_block.back() >= kv_block)) {
    Fail(InvalidInput(
        absl::StrCat("layout row ", rows_started(), " blocks"), "ascending block indices >= 0",
        absl::StrCat("block ", kv_block,
                     row_empty ? "" : absl::StrCat(" after block ", layout_.kv_block.back()))));
    return;
  }
  layout_.kv_block.push_back(kv_block);
  layout_.mask_index.push_back(-1);
}

uint64_t* LayoutBuilder::AddMaskedBlock(int32_t kv_block) {
  AddBlock(kv_block);
  const int64_t words = status_.ok() ? layout_.words_per_mask() : 0;
  if (!status_.ok()) {
    // Somewhere the caller may write its bits; nothing of it reaches a layout.
    const int64_t q = std::max(layout_.q_block_tokens, 1), k = std::max(layout_.kv_block_tokens, 1);
    scratch_mask_.assign(static_cast<size_t>((q * k + 63) / 64), 0);
    return scratch_mask_.data();
  }
  const int64_t index = static_cast<int64_t>(layout_.masks.size()) / words;
  layout_.mask_index.back() = static_cast<int32_t>(index);
  layout_.masks.resize(layout_.masks.size() + words, 0);
  return layout_.masks.data() + index * words;
}

absl::StatusOr<BlockSparseLayout> LayoutBuilder::Build() {
  if (!status_.ok()) return status_;
  if (started_any_) layout_.row_begin.push_back(static_cast<int64_t>(layout_.kv_block.size()));
  started_any_ = false;
  if (static_cast<int64_t>(layout_.row_begin.size()) != layout_.num_rows() + 1) {
    Fail(InvalidInput("layout rows",
                      absl::StrCat(layout_.num_rows(), " (query blocks x layout heads)"),
                      absl::StrCat(layout_.row_begin.size() - 1, " rows started")));
    return status_;
  }
  return std::move(layout_);
}

BlockSparseLayout LayoutBuilder::Finish() {
  absl::StatusOr<BlockSparseLayout> layout = Build();
  if (!layout.ok()) {
    std::fprintf(stderr, "LayoutBuilder::Finish: %s\n",
                 std::string(layout.status().message()).c_str());
    std::abort();
  }
  return *std::move(layout);
}

BlockSparseLayout DenseCausalLayout(int64_t q_pos0, int64_t num_queries, int64_t kv_length,
                                    int q_block_tokens, int kv_block_tokens) {
  LayoutBuilder builder(q_block_tokens, kv_block_tokens, q_pos0, num_queries, kv_length, 1);
  const int64_t q_blocks = (num_queries + q_block_tokens - 1) / q_block_tokens;
  for (int64_t qb = 0; qb < q_blocks; ++qb) {
    builder.StartRow();
    const int64_t last_pos =
        std::min(q_pos0 + std::min((qb + 1) * q_block_tokens, num_queries) - 1, kv_length - 1);
    for (int64_t b = 0; b * kv_block_tokens <= last_pos; ++b) {
      builder.AddBlock(static_cast<int32_t>(b));
    }
  }
  return builder.Finish();
}

absl::Status ValidateLayout(const BlockSparseLayout& layout, int num_kv_heads) {
  auto bad = [](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("block-sparse layout: ", what));
  };
  if (layout.q_block_tokens <= 0 || layout.kv_block_tokens <= 0) {
    return bad(absl::StrCat("expected positive block sizes, found q_block_tokens=",
                            layout.q_block_tokens, " kv_block_tokens=", layout.kv_block_tokens));
  }
  if (layout.num_queries < 0 || layout.q_pos0 < 0 || layout.kv_length < 0) {
    return bad(absl::StrCat("expected non-negative q_pos0/num_queries/kv_length, found ",
                            layout.q_pos0, "/", layout.num_queries, "/", layout.kv_length));
  }
  if (layout.num_layout_heads <= 0 || (num_kv_heads > 0 && layout.num_layout_heads != 1 &&
                                       layout.num_layout_heads != num_kv_heads)) {
    return bad(absl::StrCat("expected num_layout_heads 1 or ", num_kv_heads, ", found ",
                            layout.num_layout_heads));
  }
  const int64_t rows = layout.num_rows();
  if (static_cast<int64_t>(layout.row_begin.size()) != rows + 1 || layout.row_begin[0] != 0) {
    return bad(absl::StrCat("expected row_begin of ", rows + 1, " entries starting at 0, found ",
                            layout.row_begin.size(), " entries"));
  }
  const int64_t entries = static_cast<int64_t>(layout.kv_block.size());
  if (layout.row_begin.back() != entries ||
      static_cast<int64_t>(layout.mask_index.size()) != entries) {
    return bad(absl::StrCat("expected ", layout.row_begin.back(),
                            " kv_block and mask_index entries, found ", entries, " and ",
                            layout.mask_index.size()));
  }
  const int64_t words = layout.words_per_mask();
  if (static_cast<int64_t>(layout.masks.size()) % words != 0) {
    return bad(absl::StrCat("expected masks of ", words, " words each, found ", layout.masks.size(),
                            " words in total"));
  }
  const int64_t num_masks = static_cast<int64_t>(layout.masks.size()) / words;
  const int64_t kv_blocks =
      (layout.kv_length + layout.kv_block_tokens - 1) / layout.kv_block_tokens;
  for (int64_t r = 0; r < rows; ++r) {
    if (layout.row_begin[r + 1] < layout.row_begin[r]) {
      return bad(absl::StrCat("row_begin decreases at row ", r));
    }
    for (int64_t e = layout.row_begin[r]; e < layout.row_begin[r + 1]; ++e) {
      const int32_t b = layout.kv_block[e];
      if (b < 0 || b >= kv_blocks) {
        return bad(
            absl::StrCat("row ", r, ": expected KV blocks in [0, ", kv_blocks, "), found ", b));
      }
      if (e > layout.row_begin[r] && layout.kv_block[e - 1] >= b) {
        return bad(absl::StrCat("row ", r, ": expected strictly ascending KV blocks, found ",
                                layout.kv_block[e - 1], " then ", b));
      }
      const int32_t m = layout.mask_index[e];
      if (m < -1 || m >= num_masks) {
        return bad(absl::StrCat("row ", r, ": expected mask index -1 or in [0, ", num_masks,
                                "), found ", m));
      }
    }
  }
  return absl::OkStatus();
}

std::vector<uint8_t> ExpandLayoutToDenseMask(const BlockSparseLayout& layout, int head) {
  FLUXATTN_CHECK(head >= 0 && head < layout.num_layout_heads);
  std::vector<uint8_t> dense(layout.num_queries * layout.kv_length, 0);
  const int64_t words = layout.words_per_mask();
  for (int64_t qb = 0; qb < layout.num_q_blocks(); ++qb) {
    const int64_t row = qb * layout.num_layout_heads + head;
    const int64_t r0 = qb * layout.q_block_tokens;
    const int64_t r1 = std::min(r0 + layout.q_block_tokens, layout.num_queries);
    for (int64_t e = layout.row_begin[row]; e < layout.row_begin[row + 1]; ++e) {
      const int64_t k0 = static_cast<int64_t>(layout.kv_block[e]) * layout.kv_block_tokens;
      const int64_t k1 = std::min(k0 + layout.kv_block_tokens, layout.kv_length);
      const uint64_t* mask =
          layout.mask_index[e] < 0 ? nullptr : layout.masks.data() + layout.mask_index[e] * words;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t p = layout.q_pos0 + r;
        for (int64_t j = k0; j < std::min(k1, p + 1); ++j) {
          if (mask != nullptr && !MaskAllows(mask, layout.kv_block_tokens, static_cast<int>(r - r0),
                                             static_cast<int>(j - k0))) {
            continue;
          }
          dense[r * layout.kv_length + j] = 1;
        }
      }
    }
  }
  return dense;
}

int64_t CountAttendedPairs(const BlockSparseLayout& layout, int head) {
  const int64_t words = layout.words_per_mask();
  int64_t pairs = 0;
  for (int64_t qb = 0; qb < layout.num_q_blocks(); ++qb) {
    const int64_t row = qb * layout.num_layout_heads + head;
    const int64_t r0 = qb * layout.q_block_tokens;
    const int64_t r1 = std::min(r0 + layout.q_block_tokens, layout.num_queries);
    for (int64_t e = layout.row_begin[row]; e < layout.row_begin[row + 1]; ++e) {
      const int64_t k0 = static_cast<int64_t>(layout.kv_block[e]) * layout.kv_block_tokens;
      const int64_t k1 = std::min(k0 + layout.kv_block_tokens, layout.kv_length);
      const uint64_t* mask =
          layout.mask_index[e] < 0 ? nullptr : layout.masks.data() + layout.mask_index[e] * words;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t end = std::min(k1, layout.q_pos0 + r + 1);
        if (mask == nullptr) {
          pairs += std::max<int64_t>(0, end - k0);
          continue;
        }
        for (int64_t j = k0; j < end; ++j) {
          pairs += MaskAllows(mask, layout.kv_block_tokens, static_cast<int>(r - r0),
                              static_cast<int>(j - k0));
        }
      }
    }
  }
  return pairs;
}

}  // namespace fluxattn
