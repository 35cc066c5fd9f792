// Safetensors reading: values (F32/BF16/F16/F64) against values written by the test itself, and
// every malformed header rejected with one line naming the file and the tensor.
#include "fluxattn/models/safetensors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "test_support.h"

namespace fluxattn::models {
namespace {

using testing::TempDir;
using testing::WriteFile;

std::string Header(const std::string& json) {
  std::string out(8, '\0');
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + json;
}

std::string Bytes(const void* p, size_t n) { return std::string(static_cast<const char*>(p), n); }

// bfloat16 of an exactly representable value: the upper 16 bits of its float32 encoding.
uint16_t Bf16Bits(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  return static_cast<uint16_t>(bits >> 16);
}

TEST(Safetensors, ReadsEveryFloatDtype) {
  const std::string dir = TempDir("dtypes");
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> small(-1000, 1000);
  // Values k/64 are exact in bf16 (|k| < 256) and f16 alike; f32/f64 keep them exactly too.
  std::vector<float> f32(6), bf(5), f16v(4);
  std::vector<double> f64(3);
  for (auto& v : f32) v = small(rng) / 64.0f;
  for (auto& v : bf) v = (small(rng) % 256) / 64.0f;
  for (auto& v : f16v) v = (small(rng) % 256) / 64.0f;
  for (auto& v : f64) v = small(rng) / 64.0;
  std::string data = Bytes(f32.data(), 24);
  for (float v : bf) {
    uint16_t b = Bf16Bits(v);
    data += Bytes(&b, 2);
  }
  // Half precision by hand: sign, 5-bit exponent (bias 15), 10-bit mantissa.
  for (float v : f16v) {
    uint16_t h = 0;
    if (v != 0) {
      int e;
      const double m = std::frexp(std::abs(v), &e);  // v = m * 2^e, m in [0.5, 1)
      const int exponent = e - 1 + 15;
      const int mantissa = static_cast<int>(std::lround((m * 2 - 1) * 1024));
      h = static_cast<uint16_t>((v < 0 ? 0x8000 : 0) | (exponent << 10) | mantissa);
    }
    data += Bytes(&h, 2);
  }
  data += Bytes(f64.data(), 24);
  const std::string json =
      absl::StrCat(R"({"__metadata__":{"format":"pt"},)",
                   R"("a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)",
                   R"("b":{"dtype":"BF16","shape":[5],"data_offsets":[24,34]},)",
                   R"("c":{"dtype":"F16","shape":[2,2],"data_offsets":[34,42]},)",
                   R"("d":{"dtype":"F64","shape":[3],"data_offsets":[42,66]}})");
  const std::string path = dir + "/m.safetensors";
  WriteFile(path, Header(json) + data);
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  auto check = [&](const std::string& name, std::vector<int64_t> shape, auto expected) {
    auto t = (*file)->GetF32(name, shape);
    ASSERT_TRUE(t.ok()) << t.status();
    ASSERT_EQ(t->numel(), static_cast<int64_t>(expected.size()));
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_EQ(t->template data<float>()[i], static_cast<float>(expected[i])) << name << i;
    }
  };
  check("a", {2, 3}, f32);
  check("b", {5}, bf);
  check("c", {2, 2}, f16v);
  check("d", {3}, f64);
  // The WeightSource view of the same file.
  auto source = OpenSafetensorsWeights(path);
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_TRUE((*source)->Has("c"));
  EXPECT_EQ((*source)->Names().size(), 4u);
  // As stored: BF16 and F16 keep their dtype and bits, F64 becomes F32.
  auto raw_b = (*source)->GetRaw("b", {5});
  ASSERT_TRUE(raw_b.ok()) << raw_b.status();
  EXPECT_EQ(raw_b->dtype(), DType::kBF16);
  for (size_t i = 0; i < bf.size(); ++i) {
    EXPECT_EQ(raw_b->data<uint16_t>()[i], Bf16Bits(bf[i])) << i;
  }
  auto raw_c = (*source)->GetRaw("c", {2, 2});
  ASSERT_TRUE(raw_c.ok()) << raw_c.status();
  EXPECT_EQ(raw_c->dtype(), DType::kF16);
  EXPECT_EQ(raw_c->shape(), (std::vector<int64_t>{2, 2}));
  for (size_t i = 0; i < f16v.size(); ++i) {
    EXPECT_EQ(F16ToFloat(raw_c->data<uint16_t>()[i]), f16v[i]) << i;
  }
  auto raw_d = (*source)->GetRaw("d", {3});
  ASSERT_TRUE(raw_d.ok()) << raw_d.status();
  EXPECT_EQ(raw_d->dtype(), DType::kF32);
  EXPECT_EQ(raw_d->data<float>()[2], static_cast<float>(f64[2]));
  auto raw_wrong = (*source)->GetRaw("b", {4});
  ASSERT_FALSE(raw_wrong.ok());
  EXPECT_NE(raw_wrong.status().message().find("[5]"), std::string::npos);
}

// Writes one file and returns the error message of opening it.
std::string OpenError(const std::string& name, const std::string& bytes) {
  const std::string path = TempDir(name) + "/bad.safetensors";
  WriteFile(path, bytes);
  auto file = SafetensorsFile::Open(path);
  EXPECT_FALSE(file.ok()) << name;
  if (file.ok()) return "";
  const std::string message(file.status().message());
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  return message;
}

TEST(Safetensors, RejectsTruncatedFiles) {
  EXPECT_NE(OpenError("short", "abc").find("truncated"), std::string::npos);
  std::string full =
      Header(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})") + std::string(16, '\0');
  EXPECT_NE(OpenError("header_cut", full.substr(0, 20)).find("truncated"), std::string::npos);
  const std::string message = OpenError("data_cut", full.substr(0, full.size() - 4));
  EXPECT_NE(message.find("'w'"), std::string::npos) << message;
  EXPECT_NE(message.find("past the end"), std::string::npos) << message;
}

TEST(Safetensors, RejectsOffsetsPastTheEnd) {
  const std::string m =
      OpenError("past", Header(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[100,116]}})") +
                            std::string(16, '\0'));
  EXPECT_NE(m.find("tensor 'w'"), std::string::npos) << m;
  EXPECT_NE(m.find("past the end"), std::string::npos) << m;
}

TEST(Safetensors, RejectsOverlappingTensors) {
  const std::string m =
      OpenError("overlap", Header(R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                                  R"("y":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})") +
                               std::string(16, '\0'));
  EXPECT_NE(m.find("'x'"), std::string::npos) << m;
  EXPECT_NE(m.find("'y'"), std::string::npos) << m;
  EXPECT_NE(m.find("overlap"), std::string::npos) << m;
}

TEST(Safetensors, RejectsUnknownDtypeSizeMismatchAndBadJson) {
  std::string m =
      OpenError("dtype", Header(R"({"w":{"dtype":"Q4_K","shape":[4],"data_offsets":[0,16]}})") +
                             std::string(16, '\0'));
  EXPECT_NE(m.find("unknown dtype 'Q4_K'"), std::string::npos) << m;
  EXPECT_NE(m.find("'w'"), std::string::npos) << m;
  m = OpenError("size", Header(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})") +
                            std::string(16, '\0'));
  EXPECT_NE(m.find("12 bytes"), std::string::npos) << m;
  m = OpenError("json", Header(R"({"w":{"dtype":"F32",)") + std::string(16, '\0'));
  EXPECT_NE(m.find("valid JSON"), std::string::npos) << m;
  m = OpenError("shape", Header(R"({"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})") +
                             std::string(16, '\0'));
  EXPECT_NE(m.find("dimensions"), std::string::npos) << m;
}

TEST(Safetensors, WrongShapeAndMissingTensorNameBoth) {
  const std::string path = TempDir("shape") + "/m.safetensors";
  WriteFile(path, Header(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})") +
                      std::string(24, '\0'));
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto t = (*file)->GetF32("w", {3, 2});
  ASSERT_FALSE(t.ok());
  const std::string m(t.status().message());
  EXPECT_NE(m.find("'w'"), std::string::npos) << m;
  EXPECT_NE(m.find("expected shape [3, 2], found [2, 3]"), std::string::npos) << m;
  auto missing = (*file)->GetF32("nope", {});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("'nope'"), std::string::npos);
}

TEST(Safetensors, ShardedIndex) {
  const std::string dir = TempDir("sharded");
  const float a[2] = {1.5f, -2.0f}, b[3] = {3.0f, 4.0f, 5.0f};
  WriteFile(dir + "/s1.safetensors",
            Header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})") + Bytes(a, 8));
  WriteFile(dir + "/s2.safetensors",
            Header(R"({"b":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})") + Bytes(b, 12));
  WriteFile(dir + "/model.safetensors.index.json",
            R"({"metadata":{},"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}})");
  auto w = OpenCheckpointWeights(dir);
  ASSERT_TRUE(w.ok()) << w.status();
  auto tb = (*w)->GetF32("b", {3});
  ASSERT_TRUE(tb.ok()) << tb.status();
  EXPECT_EQ(tb->data<float>()[2], 5.0f);
  auto ta = (*w)->GetF32("a", {2});
  ASSERT_TRUE(ta.ok()) << ta.status();
  EXPECT_EQ(ta->data<float>()[0], 1.5f);
  // An index naming a tensor its shard lacks.
  WriteFile(dir + "/model.safetensors.index.json",
            R"({"metadata":{},"weight_map":{"a":"s2.safetensors"}})");
  auto bad = OpenCheckpointWeights(dir);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'a'"), std::string::npos) << bad.status();
  EXPECT_NE(bad.status().message().find("s2.safetensors"), std::string::npos) << bad.status();
}

}  // namespace
}  // namespace fluxattn::models
