// Dense tensors on a device. A Tensor is a shape, a dtype and a view of a reference-counted
// Buffer; copies of a Tensor share storage.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fluxattn/device.h"

namespace fluxattn {

enum class DType : uint8_t { kF32 = 0, kBF16 = 1, kF16 = 2, kI32 = 3, kI64 = 4, kU8 = 5 };

size_t DTypeSize(DType dtype);
const char* DTypeName(DType dtype);  // "f32", "bf16", ...
absl::StatusOr<DType> ParseDType(std::string_view name);

// Scalar conversions used when loading checkpoints (round-to-nearest-even for narrowing).
float BF16ToFloat(uint16_t bits);
uint16_t FloatToBF16(float value);
float F16ToFloat(uint16_t bits);
uint16_t FloatToF16(float value);

// Device memory owned by one allocation; freed through the device that made it.
class Buffer {
 public:
  static absl::StatusOr<std::shared_ptr<Buffer>> Allocate(Device* device, size_t bytes);
  // Wraps memory owned elsewhere (for example an mmap'ed checkpoint); `keep_alive` is held until
  // the Buffer dies.
  static std::shared_ptr<Buffer> Borrow(Device* device, void* data, size_t bytes,
                                        std::shared_ptr<void> keep_alive);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device* device() const { return device_; }

 private:
  Buffer(Device* device, void* data, size_t bytes, bool owned, std::shared_ptr<void> keep_alive);
  Device* device_;
  void* data_;
  size_t bytes_;
  bool owned_;
  std::shared_ptr<void> keep_alive_;
};

class Tensor {
 public:
  Tensor() = default;
  // Allocates an uninitialized contiguous tensor.
  static absl::StatusOr<Tensor> Empty(std::vector<int64_t> shape, DType dtype, Device* device);
  // Allocates a zero-filled contiguous tensor (CPU or device memset).
  static absl::StatusOr<Tensor> Zeros(std::vector<int64_t> shape, DType dtype, Device* device);
  static Tensor FromBuffer(std::shared_ptr<Buffer> buffer, size_t byte_offset,
                           std::vector<int64_t> shape, DType dtype);

  bool defined() const { return buffer_ != nullptr; }
  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + rank() : i]; }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype_); }
  Device* device() const { return buffer_ ? buffer_->device() : nullptr; }
  std::string ShapeString() const;  // "[2, 3, 4]"

  void* raw_data() const { return static_cast<char*>(buffer_->data()) + offset_; }
  template <typename T>
  T* data() const {
    return static_cast<T*>(raw_data());
  }

  // Same storage, new shape with the same element count.
  absl::StatusOr<Tensor> Reshape(std::vector<int64_t> shape) const;

 private:
  std::shared_ptr<Buffer> buffer_;
  size_t offset_ = 0;
  std::vector<int64_t> shape_;
  DType dtype_ = DType::kF32;
};

// Copies between any two devices (host staging where needed); shapes and dtypes must match.
absl::Status CopyTensor(const Tensor& src, Tensor& dst, Stream* stream = nullptr);

}  // namespace fluxattn
