#include <algorithm>

#include "fluxattn/device.h"
#include "fluxattn/status.h"

namespace fluxattn {

DeviceBuffer::~DeviceBuffer() { Reset(); }

void DeviceBuffer::Reset() {
  if (ptr_ != nullptr) device_->Free(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
}

absl::StatusOr<void*> DeviceBuffer::Ensure(size_t bytes) {
  if (bytes <= bytes_ && ptr_ != nullptr) return ptr_;
  if (device_ == nullptr) return absl::InternalError("DeviceBuffer: no device bound");
  if (ptr_ != nullptr) FLUXATTN_RETURN_IF_ERROR(device_->Synchronize());
  Reset();
  const size_t want = std::max<size_t>(bytes, 256);
  FLUXATTN_ASSIGN_OR_RETURN(ptr_, device_->Allocate(want));
  bytes_ = want;
  return ptr_;
}

}  // namespace fluxattn
