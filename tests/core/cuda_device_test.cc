// The CUDA device layer against host-side references: allocations, copies in every direction
// with random data of awkward sizes, memsets, streams, and the element-wise kernels. Skips when
// no GPU is visible (CI and machines without a driver still build and run it).
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "fluxattn/device.h"
#include "fluxattn/device_ops.h"
#include "fluxattn/tensor.h"
#include "gtest/gtest.h"

namespace fluxattn {
namespace {

class CudaDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CudaCompiledIn()) GTEST_SKIP() << "built without CUDA";
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA GPU visible";
    absl::StatusOr<Device*> device = CudaDevice(0);
    ASSERT_TRUE(device.ok()) << device.status();
    gpu_ = *device;
  }
  Device* gpu_ = nullptr;
};

std::vector<float> RandomFloats(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-100, 100);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

constexpr int64_t kAwkwardSizes[] = {1, 3, 255, 257, 4097, 65537, 1000003, (1 << 22) + 5};

TEST_F(CudaDeviceTest, NameTypeAndCountAreConsistent) {
  EXPECT_EQ(gpu_->type(), DeviceType::kCuda);
  EXPECT_EQ(gpu_->ordinal(), 0);
  EXPECT_EQ(gpu_->name().rfind("cuda:0 (", 0), 0u) << gpu_->name();
  absl::StatusOr<Device*> again = DeviceFromString("cuda");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, gpu_);
  absl::StatusOr<Device*> beyond = CudaDevice(CudaDeviceCount());
  ASSERT_FALSE(beyond.ok());
  EXPECT_NE(beyond.status().message().find("expected an ordinal in [0, "), absl::string_view::npos);
}

TEST_F(CudaDeviceTest, AllocationsAreCountedAndFreed) {
  const size_t before = gpu_->bytes_in_use();
  std::vector<void*> blocks;
  size_t total = 0;
  for (int64_t n : kAwkwardSizes) {
    absl::StatusOr<void*> p = gpu_->Allocate(static_cast<size_t>(n));
    ASSERT_TRUE(p.ok()) << p.status();
    ASSERT_NE(*p, nullptr);
    blocks.push_back(*p);
    total += static_cast<size_t>(n);
    EXPECT_EQ(gpu_->bytes_in_use(), before + total);
  }
  for (void* p : blocks) gpu_->Free(p);
  EXPECT_EQ(gpu_->bytes_in_use(), before);
  // An impossible request is an error with the size in it, not a crash.
  absl::StatusOr<void*> huge = gpu_->Allocate(size_t{1} << 50);
  ASSERT_FALSE(huge.ok());
  EXPECT_NE(huge.status().message().find("cudaMalloc(1125899906842624 bytes)"),
            absl::string_view::npos)
      << huge.status();
  EXPECT_EQ(gpu_->bytes_in_use(), before);
}

TEST_F(CudaDeviceTest, RoundTripsThroughEveryCopyKind) {
  for (int64_t n : kAwkwardSizes) {
    std::vector<float> host = RandomFloats(n, static_cast<uint32_t>(n));
    absl::StatusOr<Tensor> src = Tensor::Empty({n}, DType::kF32, CpuDevice());
    absl::StatusOr<Tensor> a = Tensor::Empty({n}, DType::kF32, gpu_);
    absl::StatusOr<Tensor> b = Tensor::Zeros({n}, DType::kF32, gpu_);
    absl::StatusOr<Tensor> back = Tensor::Zeros({n}, DType::kF32, CpuDevice());
    ASSERT_TRUE(src.ok() && a.ok() && b.ok() && back.ok());
    std::memcpy(src->raw_data(), host.data(), n * sizeof(float));
    ASSERT_TRUE(CopyTensor(*src, *a).ok());   // H2D
    ASSERT_TRUE(CopyTensor(*a, *b).ok());     // D2D
    ASSERT_TRUE(CopyTensor(*b, *back).ok());  // D2H
    ASSERT_TRUE(gpu_->Synchronize().ok());
    ASSERT_EQ(std::memcmp(back->raw_data(), host.data(), n * sizeof(float)), 0) << "n=" << n;
  }
}

TEST_F(CudaDeviceTest, ZerosAndMemsetOnDevice) {
  const int64_t n = 70001;
  absl::StatusOr<Tensor> t = Tensor::Empty({n}, DType::kU8, gpu_);
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(FillF32(gpu_, static_cast<float*>(t->raw_data()), 1.0f, n / 4).ok());
  ASSERT_TRUE(gpu_->Memset(static_cast<char*>(t->raw_data()) + 11, 0x5a, 1000, nullptr).ok());
  std::vector<uint8_t> host(n, 0xff);
  ASSERT_TRUE(gpu_->Copy(host.data(), t->raw_data(), n, CopyKind::kDeviceToHost, nullptr).ok());
  ASSERT_TRUE(gpu_->Synchronize().ok());
  std::vector<uint8_t> want(n, 0);
  const float one = 1.0f;
  for (int64_t i = 0; i < n / 4; ++i) std::memcpy(&want[i * 4], &one, 4);
  for (int64_t i = 11; i < 1011; ++i) want[i] = 0x5a;
  for (int64_t i = 0; i < (n / 4) * 4; ++i) ASSERT_EQ(host[i], want[i]) << i;

  absl::StatusOr<Tensor> z = Tensor::Zeros({n}, DType::kF32, gpu_);
  ASSERT_TRUE(z.ok());
  std::vector<float> zeros(n, 7.0f);
  ASSERT_TRUE(
      gpu_->Copy(zeros.data(), z->raw_data(), n * 4, CopyKind::kDeviceToHost, nullptr).ok());
  ASSERT_TRUE(gpu_->Synchronize().ok());
  for (float v : zeros) ASSERT_EQ(v, 0.0f);
}

TEST_F(CudaDeviceTest, KernelsOnStreamsMatchCpuReference) {
  absl::StatusOr<std::unique_ptr<Stream>> s1 = gpu_->CreateStream();
  absl::StatusOr<std::unique_ptr<Stream>> s2 = gpu_->CreateStream();
  ASSERT_TRUE(s1.ok() && s2.ok()) << s1.status();
  ASSERT_NE((*s1)->native_handle(), (*s2)->native_handle());
  for (int64_t n : kAwkwardSizes) {
    Stream* stream = (n % 2 == 0) ? s1->get() : s2->get();
    std::vector<float> x = RandomFloats(n, 11 + static_cast<uint32_t>(n));
    std::vector<float> y = RandomFloats(n, 29 + static_cast<uint32_t>(n));
    const float alpha = -1.625f;
    absl::StatusOr<void*> dx = gpu_->Allocate(n * sizeof(float));
    absl::StatusOr<void*> dy = gpu_->Allocate(n * sizeof(float));
    ASSERT_TRUE(dx.ok() && dy.ok());
    ASSERT_TRUE(gpu_->Copy(*dx, x.data(), n * 4, CopyKind::kHostToDevice, stream).ok());
    ASSERT_TRUE(gpu_->Copy(*dy, y.data(), n * 4, CopyKind::kHostToDevice, stream).ok());
    ASSERT_TRUE(
        AxpyF32(gpu_, alpha, static_cast<float*>(*dx), static_cast<float*>(*dy), n, stream).ok());
    std::vector<float> got(n);
    ASSERT_TRUE(gpu_->Copy(got.data(), *dy, n * 4, CopyKind::kDeviceToHost, stream).ok());
    ASSERT_TRUE(stream->Synchronize().ok());
    for (int64_t i = 0; i < n; ++i) {
      // Reference in double; the kernel rounds once (fma), so it is within half an ulp of it.
      const double want = static_cast<double>(alpha) * x[i] + static_cast<double>(y[i]);
      ASSERT_NEAR(got[i], want, std::abs(want) * 1.2e-7 + 1e-30) << "n=" << n << " i=" << i;
    }
    ASSERT_TRUE(FillF32(gpu_, static_cast<float*>(*dx), 3.25f, n, stream).ok());
    ASSERT_TRUE(gpu_->Copy(got.data(), *dx, n * 4, CopyKind::kDeviceToHost, stream).ok());
    ASSERT_TRUE(stream->Synchronize().ok());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i], 3.25f) << i;
    gpu_->Free(*dx);
    gpu_->Free(*dy);
  }
}

TEST_F(CudaDeviceTest, BytesOfOtherDtypesRoundTrip) {
  // bf16 data converted on the host survives the device unchanged, bit for bit.
  const int64_t n = 3001;
  std::vector<float> values = RandomFloats(n, 99);
  absl::StatusOr<Tensor> host = Tensor::Empty({n}, DType::kBF16, CpuDevice());
  ASSERT_TRUE(host.ok());
  for (int64_t i = 0; i < n; ++i) host->data<uint16_t>()[i] = FloatToBF16(values[i]);
  absl::StatusOr<Tensor> dev = Tensor::Empty({n}, DType::kBF16, gpu_);
  absl::StatusOr<Tensor> back = Tensor::Empty({n}, DType::kBF16, CpuDevice());
  ASSERT_TRUE(dev.ok() && back.ok());
  ASSERT_TRUE(CopyTensor(*host, *dev).ok());
  ASSERT_TRUE(CopyTensor(*dev, *back).ok());
  ASSERT_TRUE(gpu_->Synchronize().ok());
  ASSERT_EQ(std::memcmp(host->raw_data(), back->raw_data(), n * 2), 0);
}

}  // namespace
}  // namespace fluxattn
