// Devices, memory and streams. The CPU device is always present; the CUDA device exists when the
// core is built with CUDA and a GPU is visible at run time. Nothing here assumes one or the other.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fluxattn {

enum class DeviceType : uint8_t { kCpu = 0, kCuda = 1 };

const char* DeviceTypeName(DeviceType type);  // "cpu" / "cuda"

// An ordered queue of work on a device. CPU streams run work synchronously.
class Stream {
 public:
  virtual ~Stream() = default;
  virtual absl::Status Synchronize() = 0;
  // Native handle (cudaStream_t for CUDA, nullptr for CPU).
  virtual void* native_handle() const = 0;
};

enum class CopyKind : uint8_t { kHostToDevice, kDeviceToHost, kDeviceToDevice, kHostToHost };

class Device {
 public:
  virtual ~Device() = default;
  virtual DeviceType type() const = 0;
  virtual int ordinal() const = 0;
  virtual std::string name() const = 0;  // "cpu", "cuda:0 (NVIDIA H200)"

  virtual absl::StatusOr<void*> Allocate(size_t bytes) = 0;
  virtual void Free(void* ptr) = 0;
  virtual absl::Status Memset(void* ptr, int value, size_t bytes, Stream* stream) = 0;
  // Copies `bytes` between host and this device (or within it) in stream order.
  virtual absl::Status Copy(void* dst, const void* src, size_t bytes, CopyKind kind,
                            Stream* stream) = 0;
  virtual absl::StatusOr<std::unique_ptr<Stream>> CreateStream() = 0;
  // The stream used when none is given.
  virtual Stream* default_stream() = 0;
  virtual absl::Status Synchronize() = 0;

  // Bytes currently allocated through this device (for memory reports).
  virtual size_t bytes_in_use() const = 0;
};

// Device memory that grows on demand (never shrinks) and is freed with its owner; scratch for
// kernels that is reused across calls.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(Device* device) : device_(device) {}
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();
  void Bind(Device* device) { device_ = device; }
  // At least `bytes` (256 or more). Growing first waits for the device's queued work, which may
  // still read the old memory; an error names the bytes asked for.
  absl::StatusOr<void*> Ensure(size_t bytes);
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void Reset();
  Device* device_ = nullptr;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// The process-wide CPU device.
Device* CpuDevice();

// True when the core was compiled with CUDA support.
bool CudaCompiledIn();
// Free memory of a CUDA device as its driver reports it (cudaMemGetInfo); an error for the CPU
// (not tracked) or when the driver cannot say.
absl::StatusOr<size_t> DeviceFreeBytes(Device* device);
// Number of visible CUDA devices (0 when not compiled in or no driver/GPU).
int CudaDeviceCount();
// The CUDA device with this ordinal; an error names the ordinal and what was found.
absl::StatusOr<Device*> CudaDevice(int ordinal);

// Parses "cpu", "cuda", "cuda:N".
absl::StatusOr<Device*> DeviceFromString(std::string_view spec);

}  // namespace fluxattn
