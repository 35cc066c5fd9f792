// The KV of one (request, layer): a page table over a device's KvPagePool. Logical page i holds
// positions [i*P, (i+1)*P) where P is the pool's page_tokens; its K and V rows live in pool page
// pages()[i] as [P, num_kv_heads, head_dim]. Pages a backend no longer needs are released: the
// positions stay addressable by number, only their storage returns to the pool (-1 in the table).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "fluxattn/kv_pool.h"

namespace fluxattn {

// Read-only view of one (request, layer)'s KV, as attention kernels and layout planners consume
// it: the pool arrays plus this sequence's page table (host memory). Released pages are -1.
struct KvView {
  int num_kv_heads = 0;
  int head_dim = 0;
  int page_tokens = 0;
  int64_t length = 0;  // positions [0, length) have been written
  DType dtype = DType::kF32;
  DeviceType device = DeviceType::kCpu;
  const void* k_pool = nullptr;  // [pool pages, page_tokens, num_kv_heads, head_dim]
  const void* v_pool = nullptr;
  const int32_t* pages = nullptr;  // logical page -> pool page, -1 = released
  int64_t num_pages = 0;

  int64_t page_stride() const { return int64_t{page_tokens} * num_kv_heads * head_dim; }
  bool resident(int64_t pos) const {
    const int64_t page = pos / page_tokens;
    return page < num_pages && pages[page] >= 0;
  }
  // Element offset of (pos, head) in the pool arrays, or -1 when the page was released.
  int64_t offset(int64_t pos, int h) const {
    const int32_t page = pages[pos / page_tokens];
    if (page < 0) return -1;
    return page * page_stride() + ((pos % page_tokens) * num_kv_heads + h) * int64_t{head_dim};
  }
  // Host f32 rows (CPU pools): head_dim floats, or null when the page was released.
  const float* key(int64_t pos, int h) const {
    const int64_t o = offset(pos, h);
    return o < 0 ? nullptr : static_cast<const float*>(k_pool) + o;
  }
  const float* value(int64_t pos, int h) const {
    const int64_t o = offset(pos, h);
    return o < 0 ? nullptr : static_cast<const float*>(v_pool) + o;
  }
};

// Which positions queries at or after some position still read: [0, keep_prefix) and
// [keep_from, length). keep_prefix = 0, keep_from = 0 keeps everything.
struct KvRetention {
  int64_t keep_prefix = 0;
  int64_t keep_from = 0;
  bool keeps_all() const { return keep_from <= keep_prefix; }
};

class LayerKvCache {
 public:
  explicit LayerKvCache(KvPagePool* pool);
  ~LayerKvCache();  // returns every page it holds to the pool
  LayerKvCache(const LayerKvCache&) = delete;
  LayerKvCache& operator=(const LayerKvCache&) = delete;
  LayerKvCache(LayerKvCache&& other) noexcept;
  LayerKvCache& operator=(LayerKvCache&& other) noexcept;

  // Makes sure pages exist for positions [0, length): all or nothing (ResourceExhausted from the
  // pool otherwise). The engine reserves before a step so that running it never allocates.
  absl::Status Reserve(int64_t length);
  // Appends `n` positions; `k` and `v` are [n, num_kv_heads, head_dim] rows of the pool's dtype on
  // its device. Pages are reserved here when Reserve was not called.
  absl::Status Append(const void* k, const void* v, int64_t n, Stream* stream = nullptr);
  // Records that `n` more positions were written into the reserved pages by a device kernel
  // (the caller's, in stream order); reserves pages first when needed.
  absl::Status MarkWritten(int64_t n);
  // Releases every page whose positions all lie outside what `retention` keeps (the page being
  // filled always stays).
  void Release(const KvRetention& retention, Stream* stream = nullptr);
  // Returns every page; the length stays.
  void ReleaseAll(Stream* stream = nullptr);

  int64_t length() const { return length_; }
  int page_tokens() const;
  size_t bytes_held() const;  // K and V storage of the pages held
  int64_t pages_held() const;
  const std::vector<int32_t>& pages() const { return pages_; }
  KvView view() const;

 private:
  KvPagePool* pool_;
  int64_t length_ = 0;
  std::vector<int32_t> pages_;  // logical -> pool page, -1 released
};

}  // namespace fluxattn
