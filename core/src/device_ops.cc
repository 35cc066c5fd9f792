#include "fluxattn/device_ops.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "fluxattn/status.h"

namespace fluxattn {

#if defined(FLUXATTN_WITH_CUDA)
// Defined in cuda/cuda_device.cc.
absl::Status CudaFillF32(Device* device, float* dst, float value, int64_t n, Stream* stream);
absl::Status CudaAxpyF32(Device* device, float alpha, const float* x, float* y, int64_t n,
                         Stream* stream);
#endif

namespace {

absl::Status CheckArgs(const char* op, Device* device, int64_t n) {
  FLUXATTN_CHECK(device != nullptr);
  if (n < 0) return InvalidInput(op, "a non-negative element count", absl::StrCat(n));
  return absl::OkStatus();
}

absl::Status NoKernel(const char* op, Device* device) {
  return absl::UnimplementedError(absl::StrCat(op, ": expected a kernel for device '",
                                               device->name(), "', found none in this build"));
}

}  // namespace

absl::Status FillF32(Device* device, float* dst, float value, int64_t n, Stream* stream) {
  FLUXATTN_RETURN_IF_ERROR(CheckArgs("FillF32", device, n));
  switch (device->type()) {
    case DeviceType::kCpu:
      for (int64_t i = 0; i < n; ++i) dst[i] = value;
      return absl::OkStatus();
    case DeviceType::kCuda:
#if defined(FLUXATTN_WITH_CUDA)
      return CudaFillF32(device, dst, value, n, stream);
#else
      break;
#endif
  }
  (void)stream;
  return NoKernel("FillF32", device);
}

absl::Status AxpyF32(Device* device, float alpha, const float* x, float* y, int64_t n,
                     Stream* stream) {
  FLUXATTN_RETURN_IF_ERROR(CheckArgs("AxpyF32", device, n));
  switch (device->type()) {
    case DeviceType::kCpu:
      for (int64_t i = 0; i < n; ++i) y[i] = std::fma(alpha, x[i], y[i]);
      return absl::OkStatus();
    case DeviceType::kCuda:
#if defined(FLUXATTN_WITH_CUDA)
      return CudaAxpyF32(device, alpha, x, y, n, stream);
#else
      break;
#endif
  }
  (void)stream;
  return NoKernel("AxpyF32", device);
}

}  // namespace fluxattn
