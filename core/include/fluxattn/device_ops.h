// Small element-wise operations on device memory. They exist so that every build can prove its
// device code runs (the CUDA test compares them with a CPU reference) and as building blocks for
// the engine. On a CPU device they run in place on host memory; on a CUDA device they are
// enqueued on `stream` (the device's default stream when null).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "fluxattn/device.h"

namespace fluxattn {

// dst[i] = value for i in [0, n).
absl::Status FillF32(Device* device, float* dst, float value, int64_t n, Stream* stream = nullptr);

// y[i] += alpha * x[i] for i in [0, n).
absl::Status AxpyF32(Device* device, float alpha, const float* x, float* y, int64_t n,
                     Stream* stream = nullptr);

}  // namespace fluxattn
