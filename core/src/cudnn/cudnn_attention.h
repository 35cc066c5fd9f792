// Dense causal prefill attention through cuDNN's fused SDPA (the cuDNN frontend's graph API):
// the CUDA attention's fast path for layers whose layout lists every causal pair, where cuDNN's
// Hopper kernels run at about twice the rate of the library's own mma.sync kernel. Sequences of
// one launch are packed (ragged) like the model's activations; their keys and values are read
// either packed (a fresh prompt: the rows just computed) or from the paged KV pool through a
// page table (a prompt continued after earlier tokens, causal from the bottom right).
//
// Graphs are built once per shape bucket (sequence count, query rows and keys rounded up to a
// power of two) and reused; the actual lengths travel in device arrays.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "fluxattn/device.h"

namespace fluxattn::cudnn {

struct PrefillArgs {
  int32_t num_seqs = 0;
  int32_t num_q_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  float scale = 1.0f;
  int32_t max_q_rows = 0;   // the longest sequence's query rows
  int32_t max_kv_len = 0;   // the longest sequence's keys
  const void* q = nullptr;  // [rows, num_q_heads, head_dim] bf16, sequences packed
  void* out = nullptr;      // same layout
  // Packed keys/values ([rows, num_kv_heads, head_dim], sequence b at kv_offsets[b] elements;
  // every sequence has as many keys as queries), or the pool ([num_pages, page_tokens,
  // num_kv_heads, head_dim]) read through page_table.
  bool paged = false;
  const void* k = nullptr;
  const void* v = nullptr;
  int32_t num_pages = 0;
  int32_t page_tokens = 0;
  int32_t table_width = 0;              // TableWidth(max_kv_len, page_tokens)
  const int32_t* page_table = nullptr;  // [num_seqs, table_width] page indices
  const int32_t* q_offsets = nullptr;   // [num_seqs + 1] element offsets of q/out
  const int32_t* kv_offsets = nullptr;  // [num_seqs + 1] element offsets of packed k/v
  const int32_t* seq_len_q = nullptr;   // [num_seqs]
  const int32_t* seq_len_kv = nullptr;  // [num_seqs]
};

// The length a graph is built for: `n` rounded up to a power of two, at least 128.
inline int32_t BucketLength(int32_t n) {
  int32_t b = 128;
  while (b < n) b *= 2;
  return b;
}
// The sequences a graph is built for: `n` rounded up to a power of two (the caller pads its
// tables with empty sequences), so that a server's changing batch needs few graphs.
inline int32_t BucketCount(int32_t n) {
  int32_t b = 1;
  while (b < n) b *= 2;
  return b;
}
// Page-table entries per sequence for keys up to `max_kv_len` (its bucket, in pages).
inline int32_t TableWidth(int32_t max_kv_len, int32_t page_tokens) {
  return (BucketLength(max_kv_len) + page_tokens - 1) / page_tokens;
}

class Attention {
 public:
  // An error when the core was built without cuDNN or the library does not load.
  static absl::StatusOr<std::unique_ptr<Attention>> Create(Device* device);
  virtual ~Attention() = default;

  // Queues the attention on `stream` (a cudaStream_t). An error when cuDNN has no engine for
  // the problem (the caller then runs its own kernel).
  virtual absl::Status Prefill(const PrefillArgs& args, void* stream) = 0;
  // "cuDNN 9.19.0 (frontend 1.32.0)".
  virtual std::string version() const = 0;
};

}  // namespace fluxattn::cudnn
