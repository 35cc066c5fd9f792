// The dense CPU kernels (fluxattn/kernels/cpu_dense.h) against double-precision references on
// random inputs of awkward shapes, and the reproducibility they promise: the same bits whatever
// the thread count and however many rows a call has. FLUXATTN_CPU_ISA=avx2|baseline runs the same
// tests on the lower ISA levels.
#include "fluxattn/kernels/cpu_dense.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "fluxattn/thread_pool.h"

namespace fluxattn::cpu {
namespace {

uint16_t ToBf16(float v) {  // round to nearest even
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return static_cast<uint16_t>((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

float FromBits(uint16_t h, DType t) {
  if (t == DType::kF16) return F16ToFloat(h);
  return BF16ToFloat(h);
}

struct Case {
  int64_t m, n, k;
  DType type;
  bool bias;
  DType activations = DType::kF32;  // kBF16: Linear rounds x to bfloat16 first
};

class LinearTest : public ::testing::TestWithParam<Case> {};

TEST_P(LinearTest, MatchesDoubleReferenceAndIsReproducible) {
  const Case c = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(c.m * 1000 + c.n * 10 + c.k));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(c.m * c.k), wf(c.n * c.k), bias(c.n);
  for (float& v : x) v = normal(rng);
  for (float& v : bias) v = normal(rng);
  std::vector<uint16_t> w16(c.n * c.k);
  for (int64_t i = 0; i < c.n * c.k; ++i) {
    const float v = normal(rng);
    if (c.type == DType::kF32) {
      wf[i] = v;
    } else {
      if (c.type == DType::kBF16) {
        w16[i] = ToBf16(v);
      } else {
        // A multiple of 1/64 below 8 in magnitude is exact in float16: sign, exponent, mantissa.
        const float q = std::round(v * 64) / 64;
        uint16_t h = 0;
        if (q != 0) {
          int e;
          const double mant = std::frexp(std::abs(q), &e);
          h = static_cast<uint16_t>((q < 0 ? 0x8000 : 0) | ((e - 1 + 15) << 10) |
                                    static_cast<int>(std::lround((mant * 2 - 1) * 1024)));
        }
        w16[i] = h;
      }
      wf[i] = FromBits(w16[i], c.type);
    }
  }
  const void* w = c.type == DType::kF32 ? static_cast<const void*>(wf.data())
                                        : static_cast<const void*>(w16.data());
  // Output with a row stride wider than n, to check that columns past n stay untouched.
  const int64_t ldy = c.n + 3;
  std::vector<float> y(c.m * ldy, -7.0f);
  const LinearPart part{w, c.type, c.n, c.bias ? bias.data() : nullptr, y.data(), ldy};
  SetCpuThreads(1);
  Linear(x.data(), c.k, c.m, c.k, &part, 1, c.activations);
  // What the products must see: x itself, or x rounded to bfloat16 by this file's own rounding.
  std::vector<double> xs(x.begin(), x.end());
  if (c.activations == DType::kBF16) {
    for (size_t i = 0; i < x.size(); ++i) xs[i] = BF16ToFloat(ToBf16(x[i]));
  }
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t j = 0; j < c.n; ++j) {
      double ref = c.bias ? bias[j] : 0.0, mag = std::abs(ref);
      for (int64_t p = 0; p < c.k; ++p) {
        ref += xs[i * c.k + p] * wf[j * c.k + p];
        mag += std::abs(xs[i * c.k + p] * wf[j * c.k + p]);
      }
      // float32 accumulation: error bounded by k * eps * sum |terms|.
      const double tol = 1e-6 * (c.k + 4) * mag + 1e-6;
      ASSERT_NEAR(y[i * ldy + j], ref, tol) << "row " << i << " col " << j;
    }
    for (int64_t j = c.n; j < ldy; ++j) ASSERT_EQ(y[i * ldy + j], -7.0f);
  }
  // Three threads: the same bits.
  std::vector<float> y3(c.m * ldy, -7.0f);
  LinearPart part3 = part;
  part3.y = y3.data();
  SetCpuThreads(3);
  Linear(x.data(), c.k, c.m, c.k, &part3, 1, c.activations);
  EXPECT_EQ(y, y3);
  // One row at a time (as decode does): the same bits as the whole batch.
  for (int64_t i = 0; i < c.m; ++i) {
    std::vector<float> row(ldy, -7.0f);
    LinearPart one = part;
    one.y = row.data();
    Linear(x.data() + i * c.k, c.k, 1, c.k, &one, 1, c.activations);
    for (int64_t j = 0; j < c.n; ++j) ASSERT_EQ(row[j], y[i * ldy + j]) << i << " " << j;
  }
  SetCpuThreads(0);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, LinearTest,
    ::testing::Values(Case{1, 1, 1, DType::kF32, false}, Case{7, 13, 37, DType::kF32, true},
                      Case{13, 50, 16, DType::kF32, false}, Case{6, 29, 130, DType::kBF16, true},
                      Case{1, 300, 64, DType::kBF16, false}, Case{19, 97, 259, DType::kBF16, false},
                      Case{5, 31, 48, DType::kF16, true}, Case{12, 24, 200, DType::kF16, false},
                      // Few activation rows over many weight rows: tiles of rows spread over
                      // each task's range, with remainders, several tasks per thread.
                      Case{2, 1003, 72, DType::kF32, true}, Case{3, 517, 1030, DType::kBF16, true},
                      // Prefill on packed copies: many activation groups (the last one short)
                      // over several tasks of weight rows, k not a multiple of the lanes.
                      Case{17, 611, 520, DType::kF32, true}, Case{23, 409, 777, DType::kF16, false},
                      // bfloat16 activations: AVX512-BF16 dot products for bf16 weights where the
                      // CPU has them (steps of 32, in place and packed), rounding otherwise.
                      Case{1, 1, 1, DType::kBF16, true, DType::kBF16},
                      Case{5, 31, 48, DType::kBF16, true, DType::kBF16},
                      Case{7, 13, 37, DType::kBF16, false, DType::kBF16},
                      Case{19, 97, 259, DType::kBF16, true, DType::kBF16},
                      Case{2, 1003, 72, DType::kBF16, false, DType::kBF16},
                      Case{17, 611, 520, DType::kBF16, true, DType::kBF16},
                      Case{13, 50, 16, DType::kF32, false, DType::kBF16},
                      Case{12, 24, 200, DType::kF16, true, DType::kBF16}));

TEST(LinearParts, EachPartWritesItsOwnOutput) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t m = 5, k = 33, n1 = 7, n2 = 18;
  std::vector<float> x(m * k), w1(n1 * k), w2(n2 * k);
  for (auto* v : {&x, &w1, &w2}) {
    for (float& e : *v) e = normal(rng);
  }
  std::vector<float> y1(m * n1), y2(m * n2), a(m * n1), b(m * n2);
  const LinearPart both[2] = {{w1.data(), DType::kF32, n1, nullptr, y1.data(), n1},
                              {w2.data(), DType::kF32, n2, nullptr, y2.data(), n2}};
  Linear(x.data(), k, m, k, both, 2);
  const LinearPart one_a{w1.data(), DType::kF32, n1, nullptr, a.data(), n1};
  const LinearPart one_b{w2.data(), DType::kF32, n2, nullptr, b.data(), n2};
  Linear(x.data(), k, m, k, &one_a, 1);
  Linear(x.data(), k, m, k, &one_b, 1);
  EXPECT_EQ(y1, a);
  EXPECT_EQ(y2, b);
}

TEST(ElementWise, RmsNormRopeSwiGluMatchDoubleReferences) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  const int64_t rows = 9, dim = 75;
  std::vector<float> x(rows * dim), w(dim), y(rows * dim);
  for (float& v : x) v = normal(rng);
  for (float& v : w) v = normal(rng);
  RmsNorm(x.data(), rows, dim, w.data(), 1e-6f, y.data());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(x[r * dim + i]) * x[r * dim + i];
    const double inv = 1.0 / std::sqrt(ss / dim + 1e-6);
    for (int64_t i = 0; i < dim; ++i) {
      EXPECT_NEAR(y[r * dim + i], w[i] * x[r * dim + i] * inv, 2e-6 * std::abs(w[i]) * 8);
    }
  }
  // RoPE: 3 rows, 2 heads of 10, table rows chosen per row.
  const int heads = 2, hd = 10, half = 5;
  std::vector<float> v(3 * heads * hd), orig;
  for (float& e : v) e = normal(rng);
  orig = v;
  std::vector<float> table(4 * hd);
  for (int p = 0; p < 4; ++p) {
    for (int i = 0; i < half; ++i) {
      table[p * hd + i] = std::cos(0.3f * p * (i + 1));
      table[p * hd + half + i] = std::sin(0.3f * p * (i + 1));
    }
  }
  const float* rows_of[3] = {&table[3 * hd], &table[0], &table[2 * hd]};
  const int pos[3] = {3, 0, 2};
  Rope(v.data(), 3, heads, hd, rows_of);
  for (int t = 0; t < 3; ++t) {
    for (int h = 0; h < heads; ++h) {
      for (int i = 0; i < half; ++i) {
        const double c = std::cos(0.3 * pos[t] * (i + 1)), s = std::sin(0.3 * pos[t] * (i + 1));
        const double a = orig[(t * heads + h) * hd + i], b = orig[(t * heads + h) * hd + half + i];
        EXPECT_NEAR(v[(t * heads + h) * hd + i], a * c - b * s, 1e-5);
        EXPECT_NEAR(v[(t * heads + h) * hd + half + i], b * c + a * s, 1e-5);
      }
    }
  }
  // SwiGLU over a wide range of gate values, including ones where exp overflows float.
  const int64_t inter = 40;
  std::vector<float> gu(2 * 2 * inter), out(2 * inter);
  for (int64_t i = 0; i < 2 * 2 * inter; ++i) gu[i] = (i % 2 ? -1.0f : 1.0f) * (i * 1.7f - 60.0f);
  SwiGlu(gu.data(), 2, inter, out.data());
  for (int64_t r = 0; r < 2; ++r) {
    for (int64_t i = 0; i < inter; ++i) {
      const double g = gu[r * 2 * inter + i], u = gu[r * 2 * inter + inter + i];
      const double ref = g / (1.0 + std::exp(-g)) * u;
      EXPECT_NEAR(out[r * inter + i], ref, 1e-5 * std::abs(ref) + 1e-30) << g;
    }
  }
}

TEST(ThreadPool, EveryIndexOnceAndNestedCallsRunSerially) {
  ThreadPool pool(3);
  EXPECT_EQ(pool.size(), 3);
  std::vector<int> hits(1000, 0);
  pool.ParallelFor(1000, [&](int64_t i) {
    hits[i] += 1;
    pool.ParallelFor(2, [&](int64_t) {});  // nested: serial, no deadlock
  });
  for (int h : hits) ASSERT_EQ(h, 1);
  std::vector<int> covered(103, 0);
  pool.ParallelForRanges(103, 8, [&](int64_t b, int64_t e) {
    EXPECT_EQ(b % 8, 0);
    for (int64_t i = b; i < e; ++i) covered[i] += 1;
  });
  for (int h : covered) ASSERT_EQ(h, 1);
  SetCpuThreads(2);
  EXPECT_EQ(CpuThreads(), 2);
  SetCpuThreads(0);
}

}  // namespace
}  // namespace fluxattn::cpu
