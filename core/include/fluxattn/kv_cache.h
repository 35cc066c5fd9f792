// Paged KV cache of one (request, layer). Page i holds positions [i*P, (i+1)*P) where P is
// `page_tokens`; each page stores K and V as [P, num_kv_heads, head_dim] float32 rows on the
// cache's device. Pages a backend no longer needs can be released: the positions stay
// addressable by number, only their storage goes away.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "fluxattn/device.h"

namespace fluxattn {

// Read-only view the attention kernels consume. Released pages are null.
struct KvView {
  int num_kv_heads = 0;
  int head_dim = 0;
  int page_tokens = 0;
  int64_t length = 0;  // positions [0, length) have been written
  const float* const* k_pages = nullptr;
  const float* const* v_pages = nullptr;
  int64_t num_pages = 0;

  // Row of head `h` at position `pos`: head_dim floats. Null when the page was released.
  const float* key(int64_t pos, int h) const {
    const float* page = k_pages[pos / page_tokens];
    return page ? page + ((pos % page_tokens) * num_kv_heads + h) * head_dim : nullptr;
  }
  const float* value(int64_t pos, int h) const {
    const float* page = v_pages[pos / page_tokens];
    return page ? page + ((pos % page_tokens) * num_kv_heads + h) * head_dim : nullptr;
  }
  bool resident(int64_t pos) const { return k_pages[pos / page_tokens] != nullptr; }
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
  LayerKvCache(Device* device, int num_kv_heads, int head_dim, int page_tokens);
  ~LayerKvCache();
  LayerKvCache(const LayerKvCache&) = delete;
  LayerKvCache& operator=(const LayerKvCache&) = delete;
  LayerKvCache(LayerKvCache&&) noexcept;
  LayerKvCache& operator=(LayerKvCache&&) noexcept;

  // Appends `n` positions; `k` and `v` are [n, num_kv_heads, head_dim] on the cache's device.
  absl::Status Append(const float* k, const float* v, int64_t n);
  // Releases every page whose positions all lie outside what `retention` keeps.
  void Release(const KvRetention& retention);

  int64_t length() const { return length_; }
  int page_tokens() const { return page_tokens_; }
  size_t bytes_held() const;   // K and V storage currently allocated
  int64_t pages_held() const;
  KvView view() const;

 private:
  Device* device_;
  int num_kv_heads_;
  int head_dim_;
  int page_tokens_;
  int64_t length_ = 0;
  std::vector<float*> k_pages_;
  std::vector<float*> v_pages_;
};

}  // namespace fluxattn
