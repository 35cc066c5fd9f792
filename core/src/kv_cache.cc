#include "fluxattn/kv_cache.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "fluxattn/status.h"

namespace fluxattn {

LayerKvCache::LayerKvCache(Device* device, int num_kv_heads, int head_dim, int page_tokens)
    : device_(device), num_kv_heads_(num_kv_heads), head_dim_(head_dim), page_tokens_(page_tokens) {
  FLUXATTN_CHECK(device != nullptr);
  FLUXATTN_CHECK(num_kv_heads > 0 && head_dim > 0 && page_tokens > 0);
}

LayerKvCache::~LayerKvCache() {
  for (float* p : k_pages_) {
    if (p != nullptr) device_->Free(p);
  }
  for (float* p : v_pages_) {
    if (p != nullptr) device_->Free(p);
  }
}

LayerKvCache::LayerKvCache(LayerKvCache&& other) noexcept
    : device_(other.device_),
      num_kv_heads_(other.num_kv_heads_),
      head_dim_(other.head_dim_),
      page_tokens_(other.page_tokens_),
      length_(std::exchange(other.length_, 0)),
      k_pages_(std::move(other.k_pages_)),
      v_pages_(std::move(other.v_pages_)) {
  other.k_pages_.clear();
  other.v_pages_.clear();
}

LayerKvCache& LayerKvCache::operator=(LayerKvCache&& other) noexcept {
  if (this != &other) {
    LayerKvCache doomed(std::move(*this));
    device_ = other.device_;
    num_kv_heads_ = other.num_kv_heads_;
    head_dim_ = other.head_dim_;
    page_tokens_ = other.page_tokens_;
    length_ = std::exchange(other.length_, 0);
    k_pages_ = std::move(other.k_pages_);
    v_pages_ = std::move(other.v_pages_);
    other.k_pages_.clear();
    other.v_pages_.clear();
  }
  return *this;
}

absl::Status LayerKvCache::Append(const float* k, const float* v, int64_t n) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("KV append of ", n, " positions"));
  const int64_t row = int64_t{num_kv_heads_} * head_dim_;
  const size_t page_bytes = static_cast<size_t>(page_tokens_) * row * sizeof(float);
  const CopyKind kind =
      device_->type() == DeviceType::kCpu ? CopyKind::kHostToHost : CopyKind::kDeviceToDevice;
  int64_t done = 0;
  while (done < n) {
    const int64_t pos = length_ + done;
    const int64_t page = pos / page_tokens_;
    const int64_t offset = pos % page_tokens_;
    if (page >= static_cast<int64_t>(k_pages_.size())) {
      FLUXATTN_ASSIGN_OR_RETURN(void* kp, device_->Allocate(page_bytes));
      auto vp_or = device_->Allocate(page_bytes);
      if (!vp_or.ok()) {
        device_->Free(kp);
        return vp_or.status();
      }
      k_pages_.push_back(static_cast<float*>(kp));
      v_pages_.push_back(static_cast<float*>(*vp_or));
    }
    const int64_t count = std::min<int64_t>(n - done, page_tokens_ - offset);
    const size_t bytes = static_cast<size_t>(count * row) * sizeof(float);
    if (k_pages_[page] != nullptr) {
      FLUXATTN_RETURN_IF_ERROR(device_->Copy(k_pages_[page] + offset * row, k + done * row, bytes,
                                             kind, nullptr));
      FLUXATTN_RETURN_IF_ERROR(device_->Copy(v_pages_[page] + offset * row, v + done * row, bytes,
                                             kind, nullptr));
    }
    done += count;
  }
  length_ += n;
  return absl::OkStatus();
}

void LayerKvCache::Release(const KvRetention& retention) {
  if (retention.keeps_all()) return;
  for (size_t page = 0; page < k_pages_.size(); ++page) {
    const int64_t begin = static_cast<int64_t>(page) * page_tokens_;
    const int64_t end = begin + page_tokens_;
    // A page survives if any of its positions is kept; the page being filled always survives.
    const bool in_prefix = begin < retention.keep_prefix;
    const bool in_suffix = end > retention.keep_from;
    const bool being_filled = end > length_;
    if (in_prefix || in_suffix || being_filled || k_pages_[page] == nullptr) continue;
    device_->Free(k_pages_[page]);
    device_->Free(v_pages_[page]);
    k_pages_[page] = nullptr;
    v_pages_[page] = nullptr;
  }
}

size_t LayerKvCache::bytes_held() const {
  return static_cast<size_t>(pages_held()) * 2 * page_tokens_ * num_kv_heads_ * head_dim_ *
         sizeof(float);
}

int64_t LayerKvCache::pages_held() const {
  int64_t held = 0;
  for (float* p : k_pages_) held += p != nullptr;
  return held;
}

KvView LayerKvCache::view() const {
  KvView view;
  view.num_kv_heads = num_kv_heads_;
  view.head_dim = head_dim_;
  view.page_tokens = page_tokens_;
  view.length = length_;
  view.k_pages = k_pages_.data();
  view.v_pages = v_pages_.data();
  view.num_pages = static_cast<int64_t>(k_pages_.size());
  return view;
}

}  // namespace fluxattn
