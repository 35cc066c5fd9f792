// A non-owning view of memory on some device: data pointer, dtype, device, shape and strides (in
// elements). This is how tensors cross the plugin boundary in ABI 2: a view never owns, never
// allocates and is plain data, so a plugin built by another compiler reads it the same way.
#pragma once

#include <cstdint>

#include "fluxattn/device.h"
#include "fluxattn/tensor.h"

namespace fluxattn {

struct TensorView {
  static constexpr int kMaxRank = 4;

  void* data = nullptr;
  DType dtype = DType::kF32;
  DeviceType device = DeviceType::kCpu;
  int32_t ordinal = 0;
  int32_t rank = 0;
  int64_t shape[kMaxRank] = {};
  int64_t stride[kMaxRank] = {};  // in elements; contiguous row-major when made by Contiguous

  bool defined() const { return data != nullptr; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= shape[i];
    return n;
  }
  bool is_host_f32() const { return device == DeviceType::kCpu && dtype == DType::kF32; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }
  // Element offset of index (i0, i1, ...) along the leading dimensions.
  int64_t offset(int64_t i0, int64_t i1 = 0, int64_t i2 = 0) const {
    return i0 * stride[0] + (rank > 1 ? i1 * stride[1] : 0) + (rank > 2 ? i2 * stride[2] : 0);
  }
  // The view of rows [begin, begin + count) of the leading dimension.
  TensorView Rows(int64_t begin, int64_t count) const;

  // A contiguous row-major view of `data` with `shape` (rank <= 4).
  static TensorView Contiguous(void* data, DType dtype, DeviceType device,
                               std::initializer_list<int64_t> shape, int32_t ordinal = 0);
  // The view of a whole contiguous Tensor (rank <= 4).
  static TensorView Of(const Tensor& tensor);
};

}  // namespace fluxattn
