// The CUDA device: device memory, copies, memsets and streams through the CUDA runtime.
#include <cuda_runtime_api.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "elementwise_kernels.h"
#include "fluxattn/device.h"
#include "fluxattn/status.h"

namespace fluxattn {
namespace {

// "cuda:0: cudaMalloc(1024 bytes): expected success, found out of memory
// (cudaErrorMemoryAllocation)"
absl::Status CudaError(cudaError_t error, const std::string& where, const std::string& call) {
  const std::string found =
      absl::StrCat(cudaGetErrorString(error), " (", cudaGetErrorName(error), ")");
  std::string message = absl::StrCat(where, ": ", call, ": expected success, found ", found);
  return error == cudaErrorMemoryAllocation ? absl::ResourceExhaustedError(message)
                                            : absl::InternalError(message);
}

#define FLUXATTN_CUDA_RETURN_IF_ERROR(where, call_text, expr)              \
  do {                                                                     \
    cudaError_t _fa_err = (expr);                                          \
    if (_fa_err != cudaSuccess) {                                          \
      (void)cudaGetLastError(); /* reset, so the next call starts clean */ \
      return CudaError(_fa_err, where, call_text);                         \
    }                                                                      \
  } while (false)

class CudaStreamImpl final : public Stream {
 public:
  // `owned` streams are destroyed with this object; the legacy default stream is not.
  CudaStreamImpl(int ordinal, cudaStream_t stream, bool owned)
      : ordinal_(ordinal), stream_(stream), owned_(owned) {}
  ~CudaStreamImpl() override {
    if (owned_) {
      cudaSetDevice(ordinal_);
      cudaStreamDestroy(stream_);
    }
  }
  absl::Status Synchronize() override {
    const std::string where = absl::StrCat("cuda:", ordinal_);
    FLUXATTN_CUDA_RETURN_IF_ERROR(where, "cudaSetDevice", cudaSetDevice(ordinal_));
    FLUXATTN_CUDA_RETURN_IF_ERROR(where, "cudaStreamSynchronize", cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }
  void* native_handle() const override { return stream_; }
  int ordinal() const { return ordinal_; }

 private:
  int ordinal_;
  cudaStream_t stream_;
  bool owned_;
};

class CudaDeviceImpl final : public Device {
 public:
  CudaDeviceImpl(int ordinal, std::string product)
      : ordinal_(ordinal),
        product_(std::move(product)),
        where_(absl::StrCat("cuda:", ordinal)),
        default_stream_(ordinal, cudaStreamLegacy, /*owned=*/false) {}

  DeviceType type() const override { return DeviceType::kCuda; }
  int ordinal() const override { return ordinal_; }
  std::string name() const override { return absl::StrCat(where_, " (", product_, ")"); }

  absl::StatusOr<void*> Allocate(size_t bytes) override {
    FLUXATTN_CUDA_RETURN_IF_ERROR(where_, "cudaSetDevice", cudaSetDevice(ordinal_));
    void* ptr = nullptr;
    // Zero-byte tensors still get a distinct, freeable pointer.
    FLUXATTN_CUDA_RETURN_IF_ERROR(where_, absl::StrCat("cudaMalloc(", bytes, " bytes)"),
                                  cudaMalloc(&ptr, bytes == 0 ? 1 : bytes));
    {
      std::lock_guard<std::mutex> lock(mutex_);
      sizes_[ptr] = bytes;
    }
    bytes_in_use_.fetch_add(bytes, std::memory_order_relaxed);
    return ptr;
  }

  void Free(void* ptr) override {
    if (ptr == nullptr) return;
    size_t bytes = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = sizes_.find(ptr);
      FLUXATTN_CHECK(it != sizes_.end());  // freeing memory this device did not allocate
      bytes = it->second;
      sizes_.erase(it);
    }
    bytes_in_use_.fetch_sub(bytes, std::memory_order_relaxed);
    cudaSetDevice(ordinal_);
    cudaFree(ptr);
  }

  absl::Status Memset(void* ptr, int value, size_t bytes, Stream* stream) override {
    if (bytes == 0) return absl::OkStatus();
    FLUXATTN_CUDA_RETURN_IF_ERROR(where_, "cudaSetDevice", cudaSetDevice(ordinal_));
    FLUXATTN_CUDA_RETURN_IF_ERROR(where_, absl::StrCat("cudaMemsetAsync(", bytes, " bytes)"),
                                  cudaMemsetAsync(ptr, value, bytes, Handle(stream)));
    return absl::OkStatus();
  }

  absl::Status Copy(void* dst, const void* src, size_t bytes, CopyKind kind,
                    Stream* stream) override {
    if (bytes == 0) return absl::OkStatus();
    cudaMemcpyKind cuda_kind = cudaMemcpyDefault;
    switch (kind) {
      case CopyKind::kHostToDevice:
        cuda_kind = cudaMemcpyHostToDevice;
        break;
      case CopyKind::kDeviceToHost:
        cuda_kind = cudaMemcpyDeviceToHost;
        break;
      case CopyKind::kDeviceToDevice:
        cuda_kind = cudaMemcpyDeviceToDevice;
        break;
      case CopyKind::kHostToHost:
        cuda_kind = cudaMemcpyHostToHost;
        break;
    }
    FLUXATTN_CUDA_RETURN_IF_ERROR(where_, "cudaSetDevice", cudaSetDevice(ordinal_));
    FLUXATTN_CUDA_RETURN_IF_ERROR(where_, absl::StrCat("cudaMemcpyAsync(", bytes, " bytes)"),
                                  cudaMemcpyAsync(dst, src, bytes, cuda_kind, Handle(stream)));
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<Stream>> CreateStream() override {
    FLUXATTN_CUDA_RETURN_IF_ERROR(where_, "cudaSetDevice", cudaSetDevice(ordinal_));
    cudaStream_t stream = nullptr;
    // Blocking streams order against the legacy default stream, so work enqueued without a
    // stream (Tensor::Zeros, CopyTensor) is always seen by later work on any stream.
    FLUXATTN_CUDA_RETURN_IF_ERROR(where_, "cudaStreamCreate", cudaStreamCreate(&stream));
    return std::unique_ptr<Stream>(new CudaStreamImpl(ordinal_, stream, /*owned=*/true));
  }

  Stream* default_stream() override { return &default_stream_; }

  absl::Status Synchronize() override {
    FLUXATTN_CUDA_RETURN_IF_ERROR(where_, "cudaSetDevice", cudaSetDevice(ordinal_));
    FLUXATTN_CUDA_RETURN_IF_ERROR(where_, "cudaDeviceSynchronize", cudaDeviceSynchronize());
    return absl::OkStatus();
  }

  size_t bytes_in_use() const override { return bytes_in_use_.load(std::memory_order_relaxed); }

  cudaStream_t Handle(Stream* stream) const {
    return static_cast<cudaStream_t>(stream != nullptr ? stream->native_handle()
                                                       : default_stream_.native_handle());
  }
  const std::string& where() const { return where_; }

 private:
  int ordinal_;
  std::string product_;
  std::string where_;
  CudaStreamImpl default_stream_;
  std::atomic<size_t> bytes_in_use_{0};
  std::mutex mutex_;
  absl::flat_hash_map<void*, size_t> sizes_;
};

struct CudaDevices {
  int count = 0;
  std::string why_none;  // set when count == 0
  std::vector<std::unique_ptr<CudaDeviceImpl>> devices;
};

// Probed once. Without a driver or GPU the runtime reports an error here, which means "no CUDA
// devices" rather than a failure.
const CudaDevices& Devices() {
  static CudaDevices* devices = [] {
    auto* d = new CudaDevices();
    int count = 0;
    cudaError_t error = cudaGetDeviceCount(&count);
    if (error != cudaSuccess) {
      (void)cudaGetLastError();
      d->why_none = absl::StrCat(cudaGetErrorString(error), " (", cudaGetErrorName(error), ")");
      return d;
    }
    if (count == 0) d->why_none = "no GPU visible";
    for (int i = 0; i < count; ++i) {
      cudaDeviceProp prop{};
      std::string product = "unknown GPU";
      if (cudaGetDeviceProperties(&prop, i) == cudaSuccess) product = prop.name;
      d->devices.push_back(std::make_unique<CudaDeviceImpl>(i, product));
    }
    d->count = count;
    return d;
  }();
  return *devices;
}

CudaDeviceImpl* AsCuda(Device* device) {
  FLUXATTN_CHECK(device != nullptr && device->type() == DeviceType::kCuda);
  return static_cast<CudaDeviceImpl*>(device);
}

}  // namespace

bool CudaCompiledIn() { return true; }

absl::StatusOr<size_t> DeviceFreeBytes(Device* device) {
  if (device == nullptr || device->type() != DeviceType::kCuda) {
    return absl::UnimplementedError(absl::StrCat(
        "free memory of ", device != nullptr ? device->name() : "no device", ": not tracked"));
  }
  const std::string where = absl::StrCat("cuda:", device->ordinal());
  FLUXATTN_CUDA_RETURN_IF_ERROR(where, "cudaSetDevice", cudaSetDevice(device->ordinal()));
  size_t free_bytes = 0, total_bytes = 0;
  FLUXATTN_CUDA_RETURN_IF_ERROR(where, "cudaMemGetInfo", cudaMemGetInfo(&free_bytes, &total_bytes));
  return free_bytes;
}

int CudaDeviceCount() { return Devices().count; }

absl::StatusOr<Device*> CudaDevice(int ordinal) {
  const CudaDevices& d = Devices();
  if (d.count == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device 'cuda:", ordinal, "': expected a visible CUDA GPU, found none (", d.why_none, ")"));
  }
  if (ordinal < 0 || ordinal >= d.count) {
    return absl::InvalidArgumentError(absl::StrCat("device 'cuda:", ordinal,
                                                   "': expected an ordinal in [0, ", d.count - 1,
                                                   "], found ", ordinal));
  }
  return d.devices[ordinal].get();
}

absl::Status CudaFillF32(Device* device, float* dst, float value, int64_t n, Stream* stream) {
  CudaDeviceImpl* cuda = AsCuda(device);
  FLUXATTN_CUDA_RETURN_IF_ERROR(cuda->where(), "cudaSetDevice", cudaSetDevice(cuda->ordinal()));
  FLUXATTN_CUDA_RETURN_IF_ERROR(cuda->where(), absl::StrCat("FillF32 kernel (", n, " elements)"),
                                cuda_kernels::LaunchFillF32(dst, value, n, cuda->Handle(stream)));
  return absl::OkStatus();
}

absl::Status CudaAxpyF32(Device* device, float alpha, const float* x, float* y, int64_t n,
                         Stream* stream) {
  CudaDeviceImpl* cuda = AsCuda(device);
  FLUXATTN_CUDA_RETURN_IF_ERROR(cuda->where(), "cudaSetDevice", cudaSetDevice(cuda->ordinal()));
  FLUXATTN_CUDA_RETURN_IF_ERROR(cuda->where(), absl::StrCat("AxpyF32 kernel (", n, " elements)"),
                                cuda_kernels::LaunchAxpyF32(alpha, x, y, n, cuda->Handle(stream)));
  return absl::OkStatus();
}

}  // namespace fluxattn
