// The CPU device and the device-independent entry points of device.h.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "fluxattn/device.h"
#include "fluxattn/status.h"

namespace fluxattn {

const char* DeviceTypeName(DeviceType type) {
  switch (type) {
    case DeviceType::kCpu:
      return "cpu";
    case DeviceType::kCuda:
      return "cuda";
  }
  return "unknown";
}

namespace {

// Alignment of every CPU allocation: a cache line, and enough for 512-bit vector loads.
constexpr size_t kCpuAlignment = 64;

class CpuStream final : public Stream {
 public:
  absl::Status Synchronize() override { return absl::OkStatus(); }
  void* native_handle() const override { return nullptr; }
};

class CpuDeviceImpl final : public Device {
 public:
  DeviceType type() const override { return DeviceType::kCpu; }
  int ordinal() const override { return 0; }
  std::string name() const override { return "cpu"; }

  // Each block starts with a header of kCpuAlignment bytes that records the requested size, so
  // Free can keep bytes_in_use exact without a lock.
  absl::StatusOr<void*> Allocate(size_t bytes) override {
    if (bytes > (SIZE_MAX - 2 * kCpuAlignment)) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "cpu: expected an allocation that fits in memory, found ", bytes, " bytes requested"));
    }
    size_t total = (bytes + kCpuAlignment - 1) / kCpuAlignment * kCpuAlignment + kCpuAlignment;
    void* base = std::aligned_alloc(kCpuAlignment, total);
    if (base == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cpu: expected ", bytes,
                       " bytes of host memory, found the allocation "
                       "refused (",
                       bytes_in_use_.load(), " bytes in use)"));
    }
    *static_cast<size_t*>(base) = bytes;
    bytes_in_use_.fetch_add(bytes, std::memory_order_relaxed);
    return static_cast<char*>(base) + kCpuAlignment;
  }

  void Free(void* ptr) override {
    if (ptr == nullptr) return;
    void* base = static_cast<char*>(ptr) - kCpuAlignment;
    bytes_in_use_.fetch_sub(*static_cast<size_t*>(base), std::memory_order_relaxed);
    std::free(base);
  }

  absl::Status Memset(void* ptr, int value, size_t bytes, Stream*) override {
    if (bytes != 0) std::memset(ptr, value, bytes);
    return absl::OkStatus();
  }

  absl::Status Copy(void* dst, const void* src, size_t bytes, CopyKind, Stream*) override {
    // Host memory is both "host" and "device" here, so every copy kind is a memmove.
    if (bytes != 0) std::memmove(dst, src, bytes);
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<Stream>> CreateStream() override {
    return std::unique_ptr<Stream>(new CpuStream());
  }
  Stream* default_stream() override { return &default_stream_; }
  absl::Status Synchronize() override { return absl::OkStatus(); }
  size_t bytes_in_use() const override { return bytes_in_use_.load(std::memory_order_relaxed); }

 private:
  std::atomic<size_t> bytes_in_use_{0};
  CpuStream default_stream_;
};

}  // namespace

Device* CpuDevice() {
  // Never destroyed: buffers freed during static destruction may still reach it.
  static CpuDeviceImpl* device = new CpuDeviceImpl();
  return device;
}

#if !defined(FLUXATTN_WITH_CUDA)
absl::StatusOr<size_t> DeviceFreeBytes(Device* device) {
  return absl::UnimplementedError(absl::StrCat(
      "free memory of ", device != nullptr ? device->name() : "no device", ": not tracked"));
}
bool CudaCompiledIn() { return false; }
int CudaDeviceCount() { return 0; }
absl::StatusOr<Device*> CudaDevice(int ordinal) {
  return absl::FailedPreconditionError(
      absl::StrCat("device 'cuda:", ordinal,
                   "': expected a build with CUDA support, found one built without CUDA"));
}
#endif

absl::StatusOr<Device*> DeviceFromString(std::string_view spec) {
  const std::string text(spec);
  if (text == "cpu") return CpuDevice();
  if (text == "cuda") return CudaDevice(0);
  if (text.rfind("cuda:", 0) == 0) {
    int ordinal = -1;
    if (!absl::SimpleAtoi(absl::string_view(text).substr(5), &ordinal) || ordinal < 0) {
      return InvalidInput("device", "\"cpu\", \"cuda\" or \"cuda:N\" with N >= 0",
                          absl::StrCat("\"", text, "\""));
    }
    return CudaDevice(ordinal);
  }
  return InvalidInput("device", "\"cpu\", \"cuda\" or \"cuda:N\" with N >= 0",
                      absl::StrCat("\"", text, "\""));
}

}  // namespace fluxattn
