// The KV page pool of one device: K and V are each ONE allocation of
// [capacity_pages, page_tokens, num_kv_heads, head_dim] elements (f32 on the CPU, bf16 on the GPU),
// and pages are handed out by index to every layer of every request. A per-(request, layer) page
// table (kv_cache.h) maps logical pages (position / page_tokens) to pool pages; KV eviction is
// returning pages to the pool. Freeing respects stream order: a page freed after work was queued
// on a stream is reused only once that work has finished.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fluxattn/tensor_view.h"

namespace fluxattn {

// What kernels see of a pool: its K and V arrays, [capacity_pages, page_tokens, Hkv, D] each.
struct KvPoolView {
  uint32_t struct_size = sizeof(KvPoolView);
  TensorView k;
  TensorView v;
  int32_t page_tokens = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  int64_t capacity_pages = 0;
  // Elements between page p and page p + 1 (page_tokens * num_kv_heads * head_dim).
  int64_t page_stride() const { return int64_t{page_tokens} * num_kv_heads * head_dim; }
};

struct KvPoolOptions {
  DType dtype = DType::kF32;
  int page_tokens = 64;
  int num_kv_heads = 0;
  int head_dim = 0;
  int64_t capacity_pages = 0;  // > 0
};

class KvPagePool {
 public:
  // Allocates the pool on `device` in one allocation per K and V. An error names the bytes asked
  // for and what the device reported.
  static absl::StatusOr<std::unique_ptr<KvPagePool>> Create(Device* device,
                                                            const KvPoolOptions& options);
  ~KvPagePool();
  KvPagePool(const KvPagePool&) = delete;
  KvPagePool& operator=(const KvPagePool&) = delete;

  // `count` pages, all or nothing, appended to `pages`. When the pool cannot supply them the error
  // (ResourceExhausted) says how many were asked for, how many are free and the pool's size.
  absl::Status Allocate(int64_t count, std::vector<int32_t>* pages);
  // Returns pages to the pool. With a stream, they are handed out again only after the work
  // queued on it so far has finished (CPU streams are synchronous: at once).
  void Free(std::span<const int32_t> pages, Stream* stream = nullptr);

  Device* device() const { return device_; }
  const KvPoolOptions& options() const { return options_; }
  int64_t capacity_pages() const { return options_.capacity_pages; }
  int64_t pages_free() const;
  int64_t pages_used() const { return capacity_pages() - pages_free(); }
  // Bytes of K plus V of one page.
  size_t page_bytes() const;
  KvPoolView view() const;

 private:
  KvPagePool(Device* device, const KvPoolOptions& options, void* k, void* v);
  void ReclaimPending();

  Device* device_;
  KvPoolOptions options_;
  void* k_;
  void* v_;
  std::vector<int32_t> free_;     // LIFO: recently freed pages are reused first
  std::vector<int32_t> pending_;  // freed after queued work; reclaimed after a synchronize
  Stream* pending_stream_ = nullptr;
};

// Pages a pool of `bytes` holds for this shape and dtype (K and V together).
int64_t KvPoolPagesForBytes(size_t bytes, const KvPoolOptions& shape);

}  // namespace fluxattn
