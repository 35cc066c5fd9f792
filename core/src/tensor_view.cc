#include "fluxattn/tensor_view.h"

#include "fluxattn/status.h"

namespace fluxattn {

TensorView TensorView::Rows(int64_t begin, int64_t count) const {
  FLUXATTN_CHECK(rank >= 1 && begin >= 0 && count >= 0 && begin + count <= shape[0]);
  TensorView view = *this;
  view.data = static_cast<char*>(data) + begin * stride[0] * static_cast<int64_t>(DTypeSize(dtype));
  view.shape[0] = count;
  return view;
}

TensorView TensorView::Contiguous(void* data, DType dtype, DeviceType device,
                                  std::initializer_list<int64_t> shape, int32_t ordinal) {
  FLUXATTN_CHECK(shape.size() <= static_cast<size_t>(kMaxRank));
  TensorView view;
  view.data = data;
  view.dtype = dtype;
  view.device = device;
  view.ordinal = ordinal;
  view.rank = static_cast<int32_t>(shape.size());
  int i = 0;
  for (int64_t s : shape) view.shape[i++] = s;
  int64_t stride = 1;
  for (int d = view.rank - 1; d >= 0; --d) {
    view.stride[d] = stride;
    stride *= view.shape[d];
  }
  return view;
}

TensorView TensorView::Of(const Tensor& tensor) {
  FLUXATTN_CHECK(tensor.rank() <= kMaxRank);
  TensorView view;
  view.data = tensor.defined() ? tensor.raw_data() : nullptr;
  view.dtype = tensor.dtype();
  view.device = tensor.device() ? tensor.device()->type() : DeviceType::kCpu;
  view.ordinal = tensor.device() ? tensor.device()->ordinal() : 0;
  view.rank = tensor.rank();
  int64_t stride = 1;
  for (int d = view.rank - 1; d >= 0; --d) {
    view.shape[d] = tensor.dim(d);
    view.stride[d] = stride;
    stride *= view.shape[d];
  }
  return view;
}

}  // namespace fluxattn
