// DType conversions against an independent oracle (values decoded from their bit fields with
// ldexp, nearest-even rounding by searching the table of representable values), and basic
// tensor behavior on the CPU.
#include "fluxattn/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace fluxattn {
namespace {

// Value of a binary floating-point bit pattern with `exp_bits` exponent and `man_bits` mantissa
// bits, straight from the IEEE definition.
double DecodeIeee(uint32_t bits, int exp_bits, int man_bits) {
  const uint32_t man = bits & ((1u << man_bits) - 1);
  const uint32_t exp = (bits >> man_bits) & ((1u << exp_bits) - 1);
  const bool negative = (bits >> (man_bits + exp_bits)) & 1u;
  const int bias = (1 << (exp_bits - 1)) - 1;
  double v;
  if (exp == (1u << exp_bits) - 1) {
    v = man == 0 ? std::numeric_limits<double>::infinity()
                 : std::numeric_limits<double>::quiet_NaN();
  } else if (exp == 0) {
    v = std::ldexp(static_cast<double>(man), 1 - bias - man_bits);
  } else {
    v = std::ldexp(1.0 + std::ldexp(static_cast<double>(man), -man_bits),
                   static_cast<int>(exp) - bias);
  }
  return negative ? -v : v;
}

struct Format {
  int exp_bits;
  int man_bits;
};
constexpr Format kHalf{5, 10};
constexpr Format kBrain{8, 7};

// Nearest-even rounding of `x` to the 16-bit format by search over all non-negative finite
// values, with infinity standing one ulp above the largest finite value (IEEE overflow rule).
uint16_t RoundOracle(float x, Format f) {
  static std::vector<std::pair<double, uint16_t>> tables[2];
  auto& table = tables[f.exp_bits == 5 ? 0 : 1];
  if (table.empty()) {
    const uint32_t inf_bits = ((1u << f.exp_bits) - 1) << f.man_bits;
    for (uint32_t b = 0; b < inf_bits; ++b)
      table.push_back({DecodeIeee(b, f.exp_bits, f.man_bits), b});
    const double max = table.back().first;
    const double ulp = max - table[table.size() - 2].first;
    table.push_back({max + ulp, static_cast<uint16_t>(inf_bits)});
  }
  const uint16_t sign =
      std::signbit(x) ? static_cast<uint16_t>(1u << (f.exp_bits + f.man_bits)) : 0;
  const double a = std::fabs(static_cast<double>(x));
  if (a >= table.back().first) return sign | table.back().second;
  auto hi = std::upper_bound(table.begin(), table.end(), a,
                             [](double v, const auto& e) { return v < e.first; });
  auto lo = hi - 1;
  const double dlo = a - lo->first;
  const double dhi = hi->first - a;
  uint16_t pick;
  if (dlo < dhi) {
    pick = lo->second;
  } else if (dhi < dlo) {
    pick = hi->second;
  } else {
    pick = (lo->second & 1u) == 0 ? lo->second : hi->second;
  }
  return sign | pick;
}

TEST(DTypeTest, SizesNamesAndParsing) {
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kI32), 4u);
  EXPECT_EQ(DTypeSize(DType::kI64), 8u);
  EXPECT_EQ(DTypeSize(DType::kU8), 1u);
  for (DType d : {DType::kF32, DType::kBF16, DType::kF16, DType::kI32, DType::kI64, DType::kU8}) {
    absl::StatusOr<DType> parsed = ParseDType(DTypeName(d));
    ASSERT_TRUE(parsed.ok()) << DTypeName(d);
    EXPECT_EQ(*parsed, d);
  }
  absl::StatusOr<DType> bad = ParseDType("fp8");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "dtype: expected one of f32, bf16, f16, i32, i64, u8, found 'fp8'");
}

TEST(DTypeTest, HalfToFloatMatchesDefinitionForEveryPattern) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const double want = DecodeIeee(b, kHalf.exp_bits, kHalf.man_bits);
    const float got = F16ToFloat(static_cast<uint16_t>(b));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << b;
    } else {
      ASSERT_EQ(static_cast<double>(got), want) << "bits " << b;
      ASSERT_EQ(std::signbit(got), (b & 0x8000u) != 0) << b;
    }
  }
}

TEST(DTypeTest, BrainFloatToFloatMatchesDefinitionForEveryPattern) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const double want = DecodeIeee(b, kBrain.exp_bits, kBrain.man_bits);
    const float got = BF16ToFloat(static_cast<uint16_t>(b));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << b;
    } else {
      ASSERT_EQ(static_cast<double>(got), want) << "bits " << b;
    }
  }
}

// Random floats over the whole exponent range plus the hard cases: exact midpoints between
// neighbors (ties), values around the largest finite value, subnormals.
std::vector<float> InterestingFloats(Format f, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> values;
  std::uniform_int_distribution<uint32_t> any_bits;
  for (int i = 0; i < 200000; ++i) {
    float v;
    uint32_t bits = any_bits(rng);
    std::memcpy(&v, &bits, 4);
    if (!std::isnan(v)) values.push_back(v);
  }
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  for (double scale : {1e-8, 6e-8, 1e-6, 6e-5, 1e-3, 1.0, 300.0, 6e4, 7e4, 1e30, 3e38}) {
    for (int i = 0; i < 5000; ++i) values.push_back(static_cast<float>(unit(rng) * scale));
  }
  // Midpoints between consecutive finite values, and the values one float ulp to either side.
  const uint32_t inf_bits = ((1u << f.exp_bits) - 1) << f.man_bits;
  for (uint32_t b = 0; b + 1 < inf_bits; b += 7) {
    double mid =
        (DecodeIeee(b, f.exp_bits, f.man_bits) + DecodeIeee(b + 1, f.exp_bits, f.man_bits)) / 2;
    float m = static_cast<float>(mid);
    if (static_cast<double>(m) != mid) continue;  // not representable as a float
    for (float v : {m, std::nextafter(m, 0.0f), std::nextafter(m, 1e38f)}) {
      values.push_back(v);
      values.push_back(-v);
    }
  }
  const double max = DecodeIeee(inf_bits - 1, f.exp_bits, f.man_bits);
  const double ulp = max - DecodeIeee(inf_bits - 2, f.exp_bits, f.man_bits);
  for (double v : {max, max + ulp / 2, max + ulp / 4, max + ulp}) {
    if (v < 3.4e38) {
      values.push_back(static_cast<float>(v));
      values.push_back(std::nextafter(static_cast<float>(v), 0.0f));
    }
  }
  values.push_back(0.0f);
  values.push_back(-0.0f);
  values.push_back(std::numeric_limits<float>::infinity());
  values.push_back(-std::numeric_limits<float>::infinity());
  values.push_back(std::numeric_limits<float>::denorm_min());
  values.push_back(std::numeric_limits<float>::max());
  return values;
}

TEST(DTypeTest, FloatToHalfRoundsToNearestEven) {
  for (float v : InterestingFloats(kHalf, 17)) {
    ASSERT_EQ(FloatToF16(v), RoundOracle(v, kHalf)) << "value " << v;
  }
}

TEST(DTypeTest, FloatToBrainFloatRoundsToNearestEven) {
  for (float v : InterestingFloats(kBrain, 23)) {
    ASSERT_EQ(FloatToBF16(v), RoundOracle(v, kBrain)) << "value " << v;
  }
}

TEST(DTypeTest, NaNStaysNaN) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(F16ToFloat(FloatToF16(nan))));
  EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(nan))));
  // A signalling NaN whose payload sits only in the low bits must not truncate to infinity.
  uint32_t low_payload = 0x7f800001u;
  float snan;
  std::memcpy(&snan, &low_payload, 4);
  EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(snan))));
  EXPECT_TRUE(std::isnan(F16ToFloat(FloatToF16(snan))));
}

TEST(TensorTest, EmptyZerosReshapeShareStorage) {
  Device* cpu = CpuDevice();
  absl::StatusOr<Tensor> t = Tensor::Zeros({3, 5, 7}, DType::kBF16, cpu);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->numel(), 105);
  EXPECT_EQ(t->nbytes(), 210u);
  EXPECT_EQ(t->rank(), 3);
  EXPECT_EQ(t->dim(-1), 7);
  EXPECT_EQ(t->ShapeString(), "[3, 5, 7]");
  EXPECT_EQ(t->device(), cpu);
  for (int i = 0; i < 105; ++i) ASSERT_EQ(t->data<uint16_t>()[i], 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t->raw_data()) % 64, 0u);

  absl::StatusOr<Tensor> r = t->Reshape({15, 7});
  ASSERT_TRUE(r.ok());
  r->data<uint16_t>()[104] = 0x3f80;
  EXPECT_EQ(t->data<uint16_t>()[104], 0x3f80);  // same storage

  absl::StatusOr<Tensor> bad = t->Reshape({4, 26});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "Reshape: expected a shape with 105 elements like [3, 5, 7], found [4, 26] with 104 "
            "elements");

  absl::StatusOr<Tensor> negative = Tensor::Empty({2, -1}, DType::kF32, cpu);
  ASSERT_FALSE(negative.ok());
  EXPECT_EQ(negative.status().message(),
            "tensor shape: expected non-negative dimensions, found [2, -1]");

  absl::StatusOr<Tensor> scalar = Tensor::Empty({}, DType::kF32, cpu);
  ASSERT_TRUE(scalar.ok());
  EXPECT_EQ(scalar->numel(), 1);
  absl::StatusOr<Tensor> zero = Tensor::Zeros({0, 4}, DType::kF32, cpu);
  ASSERT_TRUE(zero.ok());
  EXPECT_EQ(zero->nbytes(), 0u);
}

TEST(TensorTest, FromBufferViewsAnOffset) {
  absl::StatusOr<std::shared_ptr<Buffer>> buffer = Buffer::Allocate(CpuDevice(), 64);
  ASSERT_TRUE(buffer.ok());
  for (int i = 0; i < 16; ++i) static_cast<float*>((*buffer)->data())[i] = static_cast<float>(i);
  Tensor view = Tensor::FromBuffer(*buffer, 8 * sizeof(float), {2, 4}, DType::kF32);
  EXPECT_EQ(view.data<float>()[0], 8.0f);
  EXPECT_EQ(view.data<float>()[7], 15.0f);

  auto owner = std::make_shared<std::vector<float>>(10, 2.5f);
  std::shared_ptr<Buffer> borrowed =
      Buffer::Borrow(CpuDevice(), owner->data(), owner->size() * sizeof(float), owner);
  std::weak_ptr<std::vector<float>> weak = owner;
  owner.reset();
  EXPECT_FALSE(weak.expired());  // the buffer keeps its owner alive
  Tensor t = Tensor::FromBuffer(borrowed, 0, {10}, DType::kF32);
  EXPECT_EQ(t.data<float>()[9], 2.5f);
  borrowed.reset();
  t = Tensor();
  EXPECT_TRUE(weak.expired());
}

TEST(TensorTest, CopyTensorCopiesAndChecksShapes) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> dist(-3, 3);
  for (int64_t n : {1, 3, 17, 1000, 4099}) {
    absl::StatusOr<Tensor> src = Tensor::Empty({n, 3}, DType::kF32, CpuDevice());
    absl::StatusOr<Tensor> dst = Tensor::Zeros({n, 3}, DType::kF32, CpuDevice());
    ASSERT_TRUE(src.ok() && dst.ok());
    std::vector<float> want(n * 3);
    for (int64_t i = 0; i < n * 3; ++i) src->data<float>()[i] = want[i] = dist(rng);
    ASSERT_TRUE(CopyTensor(*src, *dst).ok());
    for (int64_t i = 0; i < n * 3; ++i) ASSERT_EQ(dst->data<float>()[i], want[i]);
  }
  absl::StatusOr<Tensor> a = Tensor::Empty({2, 3}, DType::kF32, CpuDevice());
  absl::StatusOr<Tensor> b = Tensor::Empty({3, 2}, DType::kBF16, CpuDevice());
  absl::Status status = CopyTensor(*a, *b);
  EXPECT_EQ(status.message(), "CopyTensor: expected destination [2, 3] f32, found [3, 2] bf16");
}

}  // namespace
}  // namespace fluxattn
