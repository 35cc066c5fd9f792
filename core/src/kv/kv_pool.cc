#include "fluxattn/kv_pool.h"

#include <numeric>

#include "absl/strings/str_cat.h"
#include "fluxattn/status.h"

namespace fluxattn {

int64_t KvPoolPagesForBytes(size_t bytes, const KvPoolOptions& shape) {
  const size_t page = 2 * static_cast<size_t>(shape.page_tokens) * shape.num_kv_heads *
                      shape.head_dim * DTypeSize(shape.dtype);
  return page == 0 ? 0 : static_cast<int64_t>(bytes / page);
}

absl::StatusOr<std::unique_ptr<KvPagePool>> KvPagePool::Create(Device* device,
                                                               const KvPoolOptions& options) {
  if (device == nullptr) return absl::InvalidArgumentError("KV pool: no device");
  if (options.page_tokens <= 0 || options.num_kv_heads <= 0 || options.head_dim <= 0) {
    return InvalidInput(
        "KV pool shape", "positive page_tokens, num_kv_heads and head_dim",
        absl::StrCat(options.page_tokens, ", ", options.num_kv_heads, ", ", options.head_dim));
  }
  if (options.capacity_pages <= 0 || options.capacity_pages > (int64_t{1} << 31) - 1) {
    return InvalidInput("KV pool capacity", "between 1 and 2^31-1 pages",
                        absl::StrCat(options.capacity_pages, " pages"));
  }
  const size_t bytes = static_cast<size_t>(options.capacity_pages) * options.page_tokens *
                       options.num_kv_heads * options.head_dim * DTypeSize(options.dtype);
  auto k = device->Allocate(bytes);
  if (!k.ok()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV pool on ", device->name(), ": could not allocate ", 2 * bytes,
                     " bytes for ", options.capacity_pages, " pages (", k.status().message(), ")"));
  }
  auto v = device->Allocate(bytes);
  if (!v.ok()) {
    device->Free(*k);
    return absl::ResourceExhaustedError(
        absl::StrCat("KV pool on ", device->name(), ": could not allocate ", 2 * bytes,
                     " bytes for ", options.capacity_pages, " pages (", v.status().message(), ")"));
  }
  return std::unique_ptr<KvPagePool>(new KvPagePool(device, options, *k, *v));
}

KvPagePool::KvPagePool(Device* device, const KvPoolOptions& options, void* k, void* v)
    : device_(device), options_(options), k_(k), v_(v) {
  free_.resize(options.capacity_pages);
  // Highest index at the bottom: the first pages handed out are 0, 1, 2, ...
  std::iota(free_.rbegin(), free_.rend(), 0);
}

KvPagePool::~KvPagePool() {
  if (pending_stream_ != nullptr) pending_stream_->Synchronize().IgnoreError();
  device_->Free(k_);
  device_->Free(v_);
}

void KvPagePool::ReclaimPending() {
  if (pending_.empty()) return;
  if (pending_stream_ != nullptr) {
    // Pages freed after queued work: reusable once that work is done.
    if (!pending_stream_->Synchronize().ok()) return;
  }
  free_.insert(free_.end(), pending_.begin(), pending_.end());
  pending_.clear();
  pending_stream_ = nullptr;
}

absl::Status KvPagePool::Allocate(int64_t count, std::vector<int32_t>* pages) {
  if (count <= 0) return absl::OkStatus();
  if (static_cast<int64_t>(free_.size()) < count) ReclaimPending();
  if (static_cast<int64_t>(free_.size()) < count) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "KV page pool on ", device_->name(), " exhausted: needed ", count, " more pages of ",
        options_.page_tokens, " tokens, found ", free_.size(), " free of ", capacity_pages(), " (",
        page_bytes(), " bytes each; raise [kv] pool_mib)"));
  }
  for (int64_t i = 0; i < count; ++i) {
    pages->push_back(free_.back());
    free_.pop_back();
  }
  return absl::OkStatus();
}

void KvPagePool::Free(std::span<const int32_t> pages, Stream* stream) {
  const bool deferred = stream != nullptr && device_->type() != DeviceType::kCpu;
  for (int32_t p : pages) {
    if (p < 0) continue;
    FLUXATTN_CHECK(p < capacity_pages());
    (deferred ? pending_ : free_).push_back(p);
  }
  if (deferred) pending_stream_ = stream;
}

int64_t KvPagePool::pages_free() const {
  return static_cast<int64_t>(free_.size() + pending_.size());
}

size_t KvPagePool::page_bytes() const {
  return 2 * static_cast<size_t>(options_.page_tokens) * options_.num_kv_heads * options_.head_dim *
         DTypeSize(options_.dtype);
}

KvPoolView KvPagePool::view() const {
  KvPoolView view;
  const DeviceType type = device_->type();
  const int64_t pages = capacity_pages();
  view.k = TensorView::Contiguous(
      k_, options_.dtype, type,
      {pages, options_.page_tokens, options_.num_kv_heads, options_.head_dim}, device_->ordinal());
  view.v = TensorView::Contiguous(
      v_, options_.dtype, type,
      {pages, options_.page_tokens, options_.num_kv_heads, options_.head_dim}, device_->ordinal());
  view.page_tokens = options_.page_tokens;
  view.num_kv_heads = options_.num_kv_heads;
  view.head_dim = options_.head_dim;
  view.capacity_pages = pages;
  return view;
}

}  // namespace fluxattn
