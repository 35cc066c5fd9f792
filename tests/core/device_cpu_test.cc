#include <cstring>
#include <random>
#include <vector>

#include "fluxattn/device.h"
#include "fluxattn/device_ops.h"
#include "gtest/gtest.h"

namespace fluxattn {
namespace {

TEST(CpuDeviceTest, AllocationsAreAlignedAndCounted) {
  Device* cpu = CpuDevice();
  EXPECT_EQ(cpu->type(), DeviceType::kCpu);
  EXPECT_EQ(cpu->name(), "cpu");
  const size_t before = cpu->bytes_in_use();
  std::vector<void*> blocks;
  size_t total = 0;
  for (size_t bytes : {0, 1, 63, 64, 65, 4097, 1 << 20}) {
    absl::StatusOr<void*> p = cpu->Allocate(bytes);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(*p) % 64, 0u) << bytes;
    std::memset(*p, 0xab, bytes);  // the whole block is writable (ASan checks this)
    blocks.push_back(*p);
    total += bytes;
    EXPECT_EQ(cpu->bytes_in_use(), before + total);
  }
  for (void* p : blocks) cpu->Free(p);
  EXPECT_EQ(cpu->bytes_in_use(), before);
}

TEST(CpuDeviceTest, MemsetCopyStreamsAndOps) {
  Device* cpu = CpuDevice();
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-1, 1);
  const int64_t n = 1237;
  std::vector<float> x(n), y(n), want(n);
  for (int64_t i = 0; i < n; ++i) {
    x[i] = dist(rng);
    y[i] = dist(rng);
    want[i] = static_cast<float>(0.75 * x[i] + static_cast<double>(y[i]));
  }
  absl::StatusOr<std::unique_ptr<Stream>> stream = cpu->CreateStream();
  ASSERT_TRUE(stream.ok());
  ASSERT_TRUE(AxpyF32(cpu, 0.75f, x.data(), y.data(), n, stream->get()).ok());
  ASSERT_TRUE((*stream)->Synchronize().ok());
  for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(y[i], want[i], 1e-6f) << i;
  ASSERT_TRUE(FillF32(cpu, y.data(), -2.5f, n).ok());
  for (float v : y) ASSERT_EQ(v, -2.5f);
  std::vector<float> copy(n);
  ASSERT_TRUE(cpu->Copy(copy.data(), x.data(), n * sizeof(float), CopyKind::kHostToHost,
                        cpu->default_stream())
                  .ok());
  EXPECT_EQ(copy, x);
  ASSERT_TRUE(cpu->Memset(copy.data(), 0, n * sizeof(float), nullptr).ok());
  for (float v : copy) ASSERT_EQ(v, 0.0f);
  absl::Status negative = FillF32(cpu, y.data(), 1.0f, -1);
  EXPECT_EQ(negative.message(), "FillF32: expected a non-negative element count, found -1");
}

TEST(DeviceTest, DeviceFromStringParsesAndRejects) {
  absl::StatusOr<Device*> cpu = DeviceFromString("cpu");
  ASSERT_TRUE(cpu.ok());
  EXPECT_EQ(*cpu, CpuDevice());
  absl::StatusOr<Device*> bad = DeviceFromString("gpu");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "device: expected \"cpu\", \"cuda\" or \"cuda:N\" with N >= 0, found \"gpu\"");
  absl::StatusOr<Device*> bad_ordinal = DeviceFromString("cuda:x");
  ASSERT_FALSE(bad_ordinal.ok());
  EXPECT_EQ(bad_ordinal.status().message(),
            "device: expected \"cpu\", \"cuda\" or \"cuda:N\" with N >= 0, found \"cuda:x\"");
  // Without a GPU, asking for one is an error naming the ordinal, never a crash.
  absl::StatusOr<Device*> cuda = DeviceFromString("cuda:0");
  if (CudaDeviceCount() == 0) {
    ASSERT_FALSE(cuda.ok());
    EXPECT_NE(cuda.status().message().find("device 'cuda:0': expected "), absl::string_view::npos)
        << cuda.status();
  } else {
    ASSERT_TRUE(cuda.ok()) << cuda.status();
    EXPECT_EQ((*cuda)->type(), DeviceType::kCuda);
  }
  absl::StatusOr<Device*> too_far = CudaDevice(CudaDeviceCount() + 3);
  EXPECT_FALSE(too_far.ok());
  EXPECT_EQ(CudaDeviceCount() > 0 ? CudaCompiledIn() : true, true);
  EXPECT_STREQ(DeviceTypeName(DeviceType::kCuda), "cuda");
}

}  // namespace
}  // namespace fluxattn
