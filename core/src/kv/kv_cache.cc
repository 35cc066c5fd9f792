#include "fluxattn/kv_cache.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "fluxattn/status.h"

namespace fluxattn {

LayerKvCache::LayerKvCache(KvPagePool* pool) : pool_(pool) { FLUXATTN_CHECK(pool != nullptr); }

LayerKvCache::~LayerKvCache() {
  if (pool_ != nullptr) ReleaseAll();
}

LayerKvCache::LayerKvCache(LayerKvCache&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)),
      length_(std::exchange(other.length_, 0)),
      pages_(std::move(other.pages_)) {
  other.pages_.clear();
}

LayerKvCache& LayerKvCache::operator=(LayerKvCache&& other) noexcept {
  if (this != &other) {
    if (pool_ != nullptr) ReleaseAll();
    pool_ = std::exchange(other.pool_, nullptr);
    length_ = std::exchange(other.length_, 0);
    pages_ = std::move(other.pages_);
    other.pages_.clear();
  }
  return *this;
}

int LayerKvCache::page_tokens() const { return pool_->options().page_tokens; }

absl::Status LayerKvCache::Reserve(int64_t length) {
  const int64_t p = page_tokens();
  const int64_t needed = (length + p - 1) / p - static_cast<int64_t>(pages_.size());
  return pool_->Allocate(needed, &pages_);
}

absl::Status LayerKvCache::Append(const void* k, const void* v, int64_t n, Stream* stream) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("KV append of ", n, " positions"));
  FLUXATTN_RETURN_IF_ERROR(Reserve(length_ + n));
  const KvPoolOptions& o = pool_->options();
  const size_t row_bytes = static_cast<size_t>(o.num_kv_heads) * o.head_dim * DTypeSize(o.dtype);
  const KvPoolView pool = pool_->view();
  const size_t page_bytes = row_bytes * o.page_tokens;
  Device* device = pool_->device();
  const CopyKind kind =
      device->type() == DeviceType::kCpu ? CopyKind::kHostToHost : CopyKind::kDeviceToDevice;
  int64_t done = 0;
  while (done < n) {
    const int64_t pos = length_ + done;
    const int64_t page = pos / o.page_tokens;
    const int64_t offset = pos % o.page_tokens;
    const int64_t count = std::min<int64_t>(n - done, o.page_tokens - offset);
    const int32_t slot = pages_[page];
    if (slot >= 0) {
      const size_t dst = slot * page_bytes + offset * row_bytes;
      const size_t src = done * row_bytes;
      const size_t bytes = count * row_bytes;
      FLUXATTN_RETURN_IF_ERROR(device->Copy(static_cast<char*>(pool.k.data) + dst,
                                            static_cast<const char*>(k) + src, bytes, kind,
                                            stream));
      FLUXATTN_RETURN_IF_ERROR(device->Copy(static_cast<char*>(pool.v.data) + dst,
                                            static_cast<const char*>(v) + src, bytes, kind,
                                            stream));
    }
    done += count;
  }
  length_ += n;
  return absl::OkStatus();
}

absl::Status LayerKvCache::MarkWritten(int64_t n) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("KV append of ", n, " positions"));
  FLUXATTN_RETURN_IF_ERROR(Reserve(length_ + n));
  length_ += n;
  return absl::OkStatus();
}

void LayerKvCache::Release(const KvRetention& retention, Stream* stream) {
  if (retention.keeps_all()) return;
  const int64_t p = page_tokens();
  std::vector<int32_t> freed;
  for (size_t page = 0; page < pages_.size(); ++page) {
    const int64_t begin = static_cast<int64_t>(page) * p;
    const int64_t end = begin + p;
    // A page survives if any of its positions is kept; the page being filled always survives.
    const bool in_prefix = begin < retention.keep_prefix;
    const bool in_suffix = end > retention.keep_from;
    const bool being_filled = end > length_;
    if (in_prefix || in_suffix || being_filled || pages_[page] < 0) continue;
    freed.push_back(pages_[page]);
    pages_[page] = -1;
  }
  pool_->Free(freed, stream);
}

void LayerKvCache::ReleaseAll(Stream* stream) {
  pool_->Free(pages_, stream);
  std::fill(pages_.begin(), pages_.end(), -1);
}

size_t LayerKvCache::bytes_held() const {
  return static_cast<size_t>(pages_held()) * pool_->page_bytes();
}

int64_t LayerKvCache::pages_held() const {
  return std::count_if(pages_.begin(), pages_.end(), [](int32_t p) { return p >= 0; });
}

KvView LayerKvCache::view() const {
  const KvPoolOptions& o = pool_->options();
  const KvPoolView pool = pool_->view();
  KvView view;
  view.num_kv_heads = o.num_kv_heads;
  view.head_dim = o.head_dim;
  view.page_tokens = o.page_tokens;
  view.length = length_;
  view.dtype = o.dtype;
  view.device = pool_->device()->type();
  view.k_pool = pool.k.data;
  view.v_pool = pool.v.data;
  view.pages = pages_.data();
  view.num_pages = static_cast<int64_t>(pages_.size());
  return view;
}

}  // namespace fluxattn
