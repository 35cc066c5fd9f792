#include "fluxattn/tensor.h"

#include <bit>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "fluxattn/status.h"

namespace fluxattn {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kBF16:
    case DType::kF16:
      return 2;
    case DType::kI64:
      return 8;
    case DType::kU8:
      return 1;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kBF16:
      return "bf16";
    case DType::kF16:
      return "f16";
    case DType::kI32:
      return "i32";
    case DType::kI64:
      return "i64";
    case DType::kU8:
      return "u8";
  }
  return "unknown";
}

absl::StatusOr<DType> ParseDType(std::string_view name) {
  for (DType d : {DType::kF32, DType::kBF16, DType::kF16, DType::kI32, DType::kI64, DType::kU8}) {
    if (name == DTypeName(d)) return d;
  }
  return InvalidInput("dtype", "one of f32, bf16, f16, i32, i64, u8",
                      absl::StrCat("'", std::string(name), "'"));
}

float BF16ToFloat(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

uint16_t FloatToBF16(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) {
    // NaN: keep the sign and force a quiet NaN so truncation cannot turn it into infinity.
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  }
  // Round to nearest, ties to even: add just under half an ulp plus the lowest kept bit. A carry
  // out of the mantissa correctly bumps the exponent (up to infinity).
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float F16ToFloat(uint16_t bits) {
  uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  uint32_t exponent = (bits >> 10) & 0x1fu;
  uint32_t mantissa = bits & 0x3ffu;
  if (exponent == 0x1f) {  // infinity or NaN (payload kept)
    return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  }
  if (exponent == 0) {
    if (mantissa == 0) return std::bit_cast<float>(sign);
    // Subnormal half: renormalize into a float32 normal number.
    int shift = 0;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      ++shift;
    }
    mantissa &= 0x3ffu;
    uint32_t f32_exponent = static_cast<uint32_t>(127 - 15 + 1 - shift);
    return std::bit_cast<float>(sign | (f32_exponent << 23) | (mantissa << 13));
  }
  return std::bit_cast<float>(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13));
}

uint16_t FloatToF16(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude >= 0x7f800000u) {  // infinity or NaN
    return sign | (magnitude > 0x7f800000u ? 0x7e00u : 0x7c00u);
  }
  // 65520 (half way between the largest half, 65504, and 65536) and above round to infinity.
  if (magnitude >= 0x477ff000u) return sign | 0x7c00u;
  int exponent = static_cast<int>(magnitude >> 23) - 127;
  uint32_t mantissa = magnitude & 0x7fffffu;
  if (exponent >= -14) {
    uint32_t result = (static_cast<uint32_t>(exponent + 15) << 10) | (mantissa >> 13);
    uint32_t rest = mantissa & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (result & 1u))) ++result;
    return sign | static_cast<uint16_t>(result);
  }
  // Subnormal half: the value in units of 2^-24 is (1.mantissa) * 2^(exponent + 24).
  int shift = -exponent - 1;  // 14 for exponent -15
  if (shift > 24) return sign;
  uint32_t full = mantissa | 0x800000u;
  uint32_t result = full >> shift;
  uint32_t rest = full & ((1u << shift) - 1u);
  uint32_t half = 1u << (shift - 1);
  if (rest > half || (rest == half && (result & 1u))) ++result;
  return sign | static_cast<uint16_t>(result);
}

// ---------------------------------------------------------------------------------------------
// Buffer

Buffer::Buffer(Device* device, void* data, size_t bytes, bool owned,
               std::shared_ptr<void> keep_alive)
    : device_(device),
      data_(data),
      bytes_(bytes),
      owned_(owned),
      keep_alive_(std::move(keep_alive)) {}

Buffer::~Buffer() {
  if (owned_ && data_ != nullptr) device_->Free(data_);
}

absl::StatusOr<std::shared_ptr<Buffer>> Buffer::Allocate(Device* device, size_t bytes) {
  FLUXATTN_CHECK(device != nullptr);
  FLUXATTN_ASSIGN_OR_RETURN(void* data, device->Allocate(bytes));
  return std::shared_ptr<Buffer>(new Buffer(device, data, bytes, /*owned=*/true, nullptr));
}

std::shared_ptr<Buffer> Buffer::Borrow(Device* device, void* data, size_t bytes,
                                       std::shared_ptr<void> keep_alive) {
  FLUXATTN_CHECK(device != nullptr);
  return std::shared_ptr<Buffer>(
      new Buffer(device, data, bytes, /*owned=*/false, std::move(keep_alive)));
}

// ---------------------------------------------------------------------------------------------
// Tensor

namespace {

std::string ShapeToString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Element count of `shape`, or an error for negative dimensions or overflow.
absl::StatusOr<int64_t> CheckedNumel(const std::vector<int64_t>& shape, DType dtype) {
  int64_t n = 1;
  const int64_t limit =
      std::numeric_limits<int64_t>::max() / static_cast<int64_t>(DTypeSize(dtype));
  for (int64_t d : shape) {
    if (d < 0) {
      return InvalidInput("tensor shape", "non-negative dimensions", ShapeToString(shape));
    }
    if (d != 0 && n > limit / d) {
      return InvalidInput("tensor shape", "a size that fits in memory", ShapeToString(shape));
    }
    n *= d;
  }
  return n;
}

}  // namespace

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

std::string Tensor::ShapeString() const { return ShapeToString(shape_); }

absl::StatusOr<Tensor> Tensor::Empty(std::vector<int64_t> shape, DType dtype, Device* device) {
  FLUXATTN_CHECK(device != nullptr);
  FLUXATTN_ASSIGN_OR_RETURN(int64_t n, CheckedNumel(shape, dtype));
  FLUXATTN_ASSIGN_OR_RETURN(std::shared_ptr<Buffer> buffer,
                            Buffer::Allocate(device, static_cast<size_t>(n) * DTypeSize(dtype)));
  return FromBuffer(std::move(buffer), 0, std::move(shape), dtype);
}

absl::StatusOr<Tensor> Tensor::Zeros(std::vector<int64_t> shape, DType dtype, Device* device) {
  FLUXATTN_ASSIGN_OR_RETURN(Tensor t, Empty(std::move(shape), dtype, device));
  if (t.nbytes() > 0) {
    // The default stream orders the memset before any later work on the device's streams.
    FLUXATTN_RETURN_IF_ERROR(device->Memset(t.raw_data(), 0, t.nbytes(), nullptr));
  }
  return t;
}

Tensor Tensor::FromBuffer(std::shared_ptr<Buffer> buffer, size_t byte_offset,
                          std::vector<int64_t> shape, DType dtype) {
  FLUXATTN_CHECK(buffer != nullptr);
  Tensor t;
  t.buffer_ = std::move(buffer);
  t.offset_ = byte_offset;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  FLUXATTN_CHECK(t.offset_ + t.nbytes() <= t.buffer_->bytes());
  return t;
}

absl::StatusOr<Tensor> Tensor::Reshape(std::vector<int64_t> shape) const {
  FLUXATTN_ASSIGN_OR_RETURN(int64_t n, CheckedNumel(shape, dtype_));
  if (n != numel()) {
    return InvalidInput("Reshape",
                        absl::StrCat("a shape with ", numel(), " elements like ", ShapeString()),
                        absl::StrCat(ShapeToString(shape), " with ", n, " elements"));
  }
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

absl::Status CopyTensor(const Tensor& src, Tensor& dst, Stream* stream) {
  if (!src.defined() || !dst.defined()) {
    return InvalidInput("CopyTensor", "two allocated tensors",
                        src.defined() ? "an undefined destination" : "an undefined source");
  }
  if (src.shape() != dst.shape() || src.dtype() != dst.dtype()) {
    return InvalidInput(
        "CopyTensor", absl::StrCat("destination ", src.ShapeString(), " ", DTypeName(src.dtype())),
        absl::StrCat(dst.ShapeString(), " ", DTypeName(dst.dtype())));
  }
  const size_t bytes = src.nbytes();
  if (bytes == 0) return absl::OkStatus();
  Device* from = src.device();
  Device* to = dst.device();
  const bool from_host = from->type() == DeviceType::kCpu;
  const bool to_host = to->type() == DeviceType::kCpu;
  if (from_host && to_host) {
    return to->Copy(dst.raw_data(), src.raw_data(), bytes, CopyKind::kHostToHost, stream);
  }
  if (from_host) {
    return to->Copy(dst.raw_data(), src.raw_data(), bytes, CopyKind::kHostToDevice, stream);
  }
  if (to_host) {
    return from->Copy(dst.raw_data(), src.raw_data(), bytes, CopyKind::kDeviceToHost, stream);
  }
  if (from == to) {
    return to->Copy(dst.raw_data(), src.raw_data(), bytes, CopyKind::kDeviceToDevice, stream);
  }
  // Two different accelerators: stage through host memory. Each step runs on its own device's
  // default stream, so `stream` (which belongs to one of them) cannot be used for both.
  FLUXATTN_ASSIGN_OR_RETURN(Tensor staging, Tensor::Empty(src.shape(), src.dtype(), CpuDevice()));
  FLUXATTN_RETURN_IF_ERROR(
      from->Copy(staging.raw_data(), src.raw_data(), bytes, CopyKind::kDeviceToHost, nullptr));
  FLUXATTN_RETURN_IF_ERROR(from->Synchronize());
  FLUXATTN_RETURN_IF_ERROR(
      to->Copy(dst.raw_data(), staging.raw_data(), bytes, CopyKind::kHostToDevice, nullptr));
  // The staging buffer dies when we return, so the upload must have finished.
  return to->Synchronize();
}

}  // namespace fluxattn
