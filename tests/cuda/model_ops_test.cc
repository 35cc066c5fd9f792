// The model's CUDA kernels (norms, RoPE, SwiGLU, embedding, add, router pooling, GEMM,
// sampling) against double-precision host references on random inputs of awkward sizes.
#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cuda_test_util.h"
#include "fluxattn/kernels/cuda_model_ops.h"
#include "gtest/gtest.h"

namespace fluxattn::kernels::cuda {
namespace {

using testing::DeviceBuffer;
using testing::FromBf16;
using testing::RandomBf16;
using testing::RelativeL2;

class CudaModelOpsTest : public ::testing::Test {
 protected:
  void SetUp() override { FLUXATTN_SKIP_WITHOUT_GPU(); }
  std::mt19937 rng_{1234};
};

std::vector<float> Floats(const std::vector<uint16_t>& bits) {
  std::vector<float> f(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) f[i] = FromBf16(bits[i]);
  return f;
}

// Every element within atol + rtol |ref| and finite, and the relative L2 error below `l2`.
void ExpectNear(const std::vector<float>& got, const std::vector<double>& ref, double atol,
                double rtol, double l2, const char* what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i]) || std::abs(got[i] - ref[i]) > atol + rtol * std::abs(ref[i])) {
      if (++bad <= 5) ADD_FAILURE() << what << "[" << i << "]: " << got[i] << " vs " << ref[i];
    }
  }
  EXPECT_EQ(bad, 0) << what;
  EXPECT_LT(RelativeL2(got, ref), l2) << what;
}

std::vector<double> RmsRef(const std::vector<float>& x, const std::vector<float>& w, int64_t rows,
                           int dim, double eps, double offset) {
  std::vector<double> y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int i = 0; i < dim; ++i) ss += double{x[r * dim + i]} * x[r * dim + i];
    const double inv = 1.0 / std::sqrt(ss / dim + eps);
    for (int i = 0; i < dim; ++i) y[r * dim + i] = x[r * dim + i] * inv * (offset + w[i]);
  }
  return y;
}

TEST_F(CudaModelOpsTest, RmsNormPlainAddedAndLastRows) {
  // Rows of a decode batch (one block per row, up to 8192 wide) and of a prompt (a warp per
  // row), on both sides of each kernel's limits.
  for (auto [rows, dim, offset] : {std::tuple{37, 136, 0.f},
                                   {1, 2560, 1.f},
                                   {1000, 128, 0.f},
                                   {3, 8192, 0.f},
                                   {2, 8200, 1.f},
                                   {265, 1032, 0.f},
                                   {264, 2056, 0.f}}) {
    std::vector<float> x, w, res;
    auto xb = RandomBf16(rows * dim, rng_, 3.f, &x);
    auto wb = RandomBf16(dim, rng_, 1.f, &w);
    auto rb = RandomBf16(rows * dim, rng_, 3.f, &res);
    DeviceBuffer xd(xb), wd(wb), yd(xb.size() * 2), rd(rb);
    yd.Poison();
    ASSERT_TRUE(RmsNorm(xd.get(), wd.get(), yd.get(), rows, dim, 1e-6f, offset, nullptr).ok());
    ExpectNear(Floats(yd.Download<uint16_t>()), RmsRef(x, w, rows, dim, 1e-6, offset), 1e-2, 1e-2,
               5e-3, "RmsNorm");
    // residual += x, then the norm of the (bf16) sum.
    std::vector<float> sum(x.size());
    std::vector<double> sum_d(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      sum[i] = testing::RoundBf16(res[i] + x[i]);
      sum_d[i] = double{res[i]} + x[i];
    }
    yd.Poison();
    ASSERT_TRUE(
        AddRmsNorm(rd.get(), xd.get(), wd.get(), yd.get(), rows, dim, 1e-5f, offset, nullptr).ok());
    ExpectNear(Floats(rd.Download<uint16_t>()), sum_d, 1e-2, 1e-2, 5e-3, "residual sum");
    ExpectNear(Floats(yd.Download<uint16_t>()), RmsRef(sum, w, rows, dim, 1e-5, offset), 1e-2, 1e-2,
               5e-3, "AddRmsNorm");
  }
  // Last rows of a varlen batch.
  const int dim = 64;
  std::vector<int32_t> indptr = {0, 3, 4, 10};
  std::vector<float> x, w;
  auto xb = RandomBf16(10 * dim, rng_, 2.f, &x);
  auto wb = RandomBf16(dim, rng_, 1.f, &w);
  DeviceBuffer xd(xb), wd(wb), yd(3 * dim * 2), id(indptr);
  ASSERT_TRUE(
      RmsNormLastRows(xd.get(), id.as<int32_t>(), 3, wd.get(), yd.get(), dim, 1e-6f, 0.f, nullptr)
          .ok());
  std::vector<float> last;
  for (int b = 0; b < 3; ++b) {
    last.insert(last.end(), x.begin() + (indptr[b + 1] - 1) * dim, x.begin() + indptr[b + 1] * dim);
  }
  ExpectNear(Floats(yd.Download<uint16_t>()), RmsRef(last, w, 3, dim, 1e-6, 0.0), 1e-2, 1e-2, 5e-3,
             "RmsNormLastRows");
  EXPECT_FALSE(RmsNorm(xd.get(), wd.get(), yd.get(), 1, 12, 1e-6f, 0.f, nullptr).ok());
}

TEST_F(CudaModelOpsTest, RopeRotateHalfFromInvFreq) {
  const int rows = 19, hq = 4, hkv = 2;
  for (auto [d, rot, factor] : {std::tuple{128, 128, 1.f}, {64, 32, 1.25f}, {64, 36, 1.f}}) {
    std::vector<float> q, k;
    auto qb = RandomBf16(rows * hq * d, rng_, 2.f, &q);
    auto kb = RandomBf16(rows * hkv * d, rng_, 2.f, &k);
    std::vector<int32_t> pos(rows);
    std::uniform_int_distribution<int32_t> pd(0, 131071);
    for (int32_t& p : pos) p = pd(rng_);
    // Llama-3-style frequencies (any table works: the kernel only reads it).
    std::vector<float> inv(rot / 2);
    for (int i = 0; i < rot / 2; ++i) {
      inv[i] = static_cast<float>(std::pow(500000.0, -2.0 * i / rot) / (i > rot / 4 ? 8.0 : 1.0));
    }
    DeviceBuffer qd(qb), kd(kb), posd(pos), invd(inv);
    ASSERT_TRUE(RopeInPlace(qd.get(), kd.get(), rows, hq, hkv, d, rot, posd.as<int32_t>(),
                            invd.as<float>(), factor, nullptr)
                    .ok());
    auto ref = [&](const std::vector<float>& x, int heads) {
      std::vector<double> y(x.begin(), x.end());
      for (int r = 0; r < rows; ++r) {
        for (int h = 0; h < heads; ++h) {
          const size_t base = (static_cast<size_t>(r) * heads + h) * d;
          for (int i = 0; i < rot / 2; ++i) {
            const double a = static_cast<double>(static_cast<float>(pos[r]) * inv[i]);
            const double c = std::cos(a) * factor, s = std::sin(a) * factor;
            const double x1 = x[base + i], x2 = x[base + i + rot / 2];
            y[base + i] = x1 * c - x2 * s;
            y[base + i + rot / 2] = x2 * c + x1 * s;
          }
        }
      }
      return y;
    };
    ExpectNear(Floats(qd.Download<uint16_t>()), ref(q, hq), 2e-2, 1e-2, 5e-3, "rope q");
    ExpectNear(Floats(kd.Download<uint16_t>()), ref(k, hkv), 2e-2, 1e-2, 5e-3, "rope k");
  }
}

// The fused q/k/v split against its definition in double: per-head RMSNorm (rounded to bf16),
// rotate-half RoPE over rotary_dim, value heads copied; head dims that are not multiples of 8,
// partial rotation, with and without norms.
TEST_F(CudaModelOpsTest, SplitQkvNormRopeMatchesDefinition) {
  const int rows = 9, hq = 4, hkv = 2;
  const float eps = 1e-6f;
  for (auto [d, rot, norms] : {std::tuple{128, 128, true},
                               {32, 32, false},
                               {24, 24, true},
                               {64, 32, true},
                               {256, 256, false},
                               {128, 64, true},
                               {64, 64, false}}) {
    const int heads = hq + 2 * hkv;
    std::vector<float> x, qw, kw;
    auto xb = RandomBf16(rows * heads * d, rng_, 3.f, &x);
    auto qwb = RandomBf16(d, rng_, 1.f, &qw);
    auto kwb = RandomBf16(d, rng_, 1.f, &kw);
    std::vector<int32_t> pos(rows);
    std::uniform_int_distribution<int32_t> pd(0, 40000);
    for (int32_t& p : pos) p = pd(rng_);
    std::vector<float> inv(rot / 2);
    for (int i = 0; i < rot / 2; ++i) {
      inv[i] = static_cast<float>(std::pow(1e6, -2.0 * i / rot));
    }
    DeviceBuffer xd(xb), qwd(qwb), kwd(kwb), posd(pos), invd(inv);
    DeviceBuffer pre(rows * hq * d * 2), qd(rows * hq * d * 2), kd(rows * hkv * d * 2),
        vd(rows * hkv * d * 2);
    for (DeviceBuffer* b : {&pre, &qd, &kd, &vd}) b->Poison();
    ASSERT_TRUE(SplitQkvNormRope(xd.get(), rows, hq, hkv, d, rot, norms ? qwd.get() : nullptr,
                                 norms ? kwd.get() : nullptr, eps, posd.as<int32_t>(),
                                 invd.as<float>(), 1.0f, pre.get(), qd.get(), kd.get(), vd.get(),
                                 nullptr)
                    .ok());
    std::vector<double> want_pre, want_q, want_k, want_v;
    for (int r = 0; r < rows; ++r) {
      for (int h = 0; h < heads; ++h) {
        const float* src = &x[(static_cast<size_t>(r) * heads + h) * d];
        if (h >= hq + hkv) {
          want_v.insert(want_v.end(), src, src + d);
          continue;
        }
        const std::vector<float>& w = h < hq ? qw : kw;
        std::vector<double> y(src, src + d);
        if (norms) {
          double ss = 0;
          for (int c = 0; c < d; ++c) ss += double{src[c]} * src[c];
          const double inv_rms = 1.0 / std::sqrt(ss / d + eps);
          for (int c = 0; c < d; ++c)
            y[c] = testing::RoundBf16(static_cast<float>(src[c] * inv_rms * w[c]));
        }
        if (h < hq) want_pre.insert(want_pre.end(), y.begin(), y.end());
        std::vector<double> z = y;
        for (int i = 0; i < rot / 2; ++i) {
          const double a = static_cast<double>(static_cast<float>(pos[r]) * inv[i]);
          z[i] = y[i] * std::cos(a) - y[i + rot / 2] * std::sin(a);
          z[i + rot / 2] = y[i + rot / 2] * std::cos(a) + y[i] * std::sin(a);
        }
        (h < hq ? want_q : want_k).insert((h < hq ? want_q : want_k).end(), z.begin(), z.end());
      }
    }
    ExpectNear(Floats(pre.Download<uint16_t>()), want_pre, 2e-2, 1e-2, 5e-3, "q_pre");
    ExpectNear(Floats(qd.Download<uint16_t>()), want_q, 2e-2, 1e-2, 5e-3, "q");
    ExpectNear(Floats(kd.Download<uint16_t>()), want_k, 2e-2, 1e-2, 5e-3, "k");
    ExpectNear(Floats(vd.Download<uint16_t>()), want_v, 0, 0, 1e-12, "v");
  }
  EXPECT_FALSE(SplitQkvNormRope(nullptr, 1, 1, 1, 300, 300, nullptr, nullptr, eps, nullptr, nullptr,
                                1.f, nullptr, nullptr, nullptr, nullptr, nullptr)
                   .ok());
}

TEST_F(CudaModelOpsTest, SwiGluFusedAndScalar) {
  for (int cols : {136, 13}) {
    const int rows = 21;
    std::vector<float> gu;
    auto gub = RandomBf16(rows * 2 * cols, rng_, 4.f, &gu);
    DeviceBuffer gd(gub), od(rows * cols * 2);
    od.Poison();
    ASSERT_TRUE(
        SwiGlu(gd.as<uint16_t>(), gd.as<uint16_t>() + cols, 2 * cols, od.get(), rows, cols, nullptr)
            .ok());
    std::vector<double> ref(rows * cols);
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < cols; ++c) {
        const double g = gu[r * 2 * cols + c], u = gu[r * 2 * cols + cols + c];
        ref[r * cols + c] = g / (1 + std::exp(-g)) * u;
      }
    }
    ExpectNear(Floats(od.Download<uint16_t>()), ref, 1e-2, 1e-2, 5e-3, "SwiGlu");
  }
}

TEST_F(CudaModelOpsTest, EmbeddingAddAndErrorFlag) {
  const int vocab = 301, hidden = 72;
  auto table = RandomBf16(vocab * hidden, rng_, 1.f, nullptr);
  std::vector<int32_t> ids = {0, 300, 17, 17, 5};
  DeviceBuffer td(table), idd(ids), od(ids.size() * hidden * 2), flag(std::vector<int32_t>{0});
  ASSERT_TRUE(EmbeddingGather(idd.as<int32_t>(), ids.size(), td.get(), vocab, hidden, od.get(),
                              flag.as<int32_t>(), nullptr)
                  .ok());
  auto out = od.Download<uint16_t>();
  for (size_t t = 0; t < ids.size(); ++t) {
    for (int c = 0; c < hidden; ++c) ASSERT_EQ(out[t * hidden + c], table[ids[t] * hidden + c]);
  }
  EXPECT_EQ(flag.Download<int32_t>()[0], 0);
  std::vector<int32_t> bad = {3, 301};
  DeviceBuffer badd(bad);
  ASSERT_TRUE(EmbeddingGather(badd.as<int32_t>(), 2, td.get(), vocab, hidden, od.get(),
                              flag.as<int32_t>(), nullptr)
                  .ok());
  EXPECT_EQ(flag.Download<int32_t>()[0], 1);
  out = od.Download<uint16_t>();
  for (int c = 0; c < hidden; ++c) EXPECT_EQ(FromBf16(out[hidden + c]), 0.f);

  const int n = 1003;
  std::vector<float> a, b;
  auto ab = RandomBf16(n, rng_, 5.f, &a);
  auto bb = RandomBf16(n, rng_, 5.f, &b);
  DeviceBuffer ad(ab), bd(bb);
  ASSERT_TRUE(Add(ad.get(), bd.get(), ad.get(), n, nullptr).ok());
  std::vector<double> ref(n);
  for (int i = 0; i < n; ++i) ref[i] = double{a[i]} + b[i];
  ExpectNear(Floats(ad.Download<uint16_t>()), ref, 1e-2, 8e-3, 5e-3, "Add in place");
}

TEST_F(CudaModelOpsTest, RouterPoolMatchesTheFluxDefinition) {
  const int heads = 4, d = 128, pool = 100;
  std::vector<int32_t> indptr = {0, 250, 320, 321};  // 250 rows, 70 (< 2 pool), 1
  std::vector<float> q;
  auto qb = RandomBf16(321 * heads * d, rng_, 2.f, &q);
  DeviceBuffer qd(qb), id(indptr), pd(3 * d * 4), scratch(RouterPoolScratchBytes(4, d));
  pd.Poison();
  scratch.Poison();
  ASSERT_TRUE(RouterPool(qd.get(), id.as<int32_t>(), 3, heads, d, pool, pd.as<float>(),
                         scratch.as<float>(), nullptr)
                  .ok());
  std::vector<double> ref(3 * d, 0.0);
  for (int b = 0; b < 3; ++b) {
    const int t = indptr[b + 1] - indptr[b], n = std::min(pool, t);
    std::vector<int> rows;
    for (int r = 0; r < n; ++r) rows.push_back(r);
    for (int r = t - n; r < t; ++r) rows.push_back(r);
    for (int r : rows) {
      for (int h = 0; h < heads; ++h) {
        for (int j = 0; j < d; ++j) ref[b * d + j] += q[((indptr[b] + r) * heads + h) * d + j];
      }
    }
    for (int j = 0; j < d; ++j) ref[b * d + j] /= 2.0 * n * heads;
  }
  ExpectNear(pd.Download<float>(), ref, 1e-5, 1e-4, 1e-4, "RouterPool");

  // The same sequences given as (begin, end) pairs in another order, the first one twice.
  const std::vector<int> pick = {2, 0, 1, 2};
  std::vector<int32_t> ranges;
  std::vector<double> picked;
  for (int b : pick) {
    ranges.push_back(indptr[b]);
    ranges.push_back(indptr[b + 1]);
    picked.insert(picked.end(), ref.begin() + b * d, ref.begin() + (b + 1) * d);
  }
  DeviceBuffer rd(ranges), pr(pick.size() * d * 4);
  pr.Poison();
  ASSERT_TRUE(RouterPoolRows(qd.get(), rd.as<int32_t>(), static_cast<int32_t>(pick.size()), heads,
                             d, pool, pr.as<float>(), scratch.as<float>(), nullptr)
                  .ok());
  const std::vector<float> first = pr.Download<float>();
  ExpectNear(first, picked, 1e-5, 1e-4, 1e-4, "RouterPoolRows");
  // The sums run in a fixed order: a second launch gives the same bits.
  ASSERT_TRUE(RouterPoolRows(qd.get(), rd.as<int32_t>(), static_cast<int32_t>(pick.size()), heads,
                             d, pool, pr.as<float>(), scratch.as<float>(), nullptr)
                  .ok());
  EXPECT_EQ(pr.Download<float>(), first);
  EXPECT_FALSE(RouterPoolRows(qd.get(), rd.as<int32_t>(), 1, heads, kRouterPoolMaxHeadDim + 8, pool,
                              pr.as<float>(), scratch.as<float>(), nullptr)
                   .ok());
}

TEST_F(CudaModelOpsTest, RouterLinearMatchesADoubleLinear) {
  // Awkward widths (not multiples of 32, in < 32, one output), batches of 1..9, SiLU or not.
  const std::vector<std::array<int, 3>> shapes = {
      {1, 128, 1024}, {9, 37, 5}, {3, 1000, 1}, {4, 5, 300}, {2, 256, 2}};
  for (const auto& [batch, in, out] : shapes) {
    for (bool silu : {false, true}) {
      std::uniform_real_distribution<float> u(-1.f, 1.f);
      std::vector<float> x(batch * in), w(static_cast<size_t>(out) * in), b(out);
      for (float& v : x) v = 3.f * u(rng_);
      for (float& v : w) v = u(rng_) / std::sqrt(static_cast<float>(in));
      for (float& v : b) v = u(rng_);
      DeviceBuffer xd(x), wd(w), bd(b), yd(static_cast<size_t>(batch) * out * 4);
      yd.Poison();
      ASSERT_TRUE(RouterLinear(xd.as<float>(), batch, wd.as<float>(), bd.as<float>(), in, out, silu,
                               yd.as<float>(), nullptr)
                      .ok());
      std::vector<double> ref(static_cast<size_t>(batch) * out);
      for (int r = 0; r < batch; ++r) {
        for (int o = 0; o < out; ++o) {
          double acc = b[o];
          for (int i = 0; i < in; ++i) acc += double{w[o * in + i]} * x[r * in + i];
          ref[r * out + o] = silu ? acc / (1.0 + std::exp(-acc)) : acc;
        }
      }
      ExpectNear(yd.Download<float>(), ref, 1e-5, 1e-4, 1e-5, "RouterLinear");
    }
  }
  EXPECT_FALSE(RouterLinear(nullptr, 1, nullptr, nullptr, 0, 4, false, nullptr, nullptr).ok());
}

// y = x W^T in double: x [m, k], W [n, k].
std::vector<double> LinearRef(const std::vector<float>& x, const std::vector<float>& w, int m,
                              int n, int k) {
  std::vector<double> ref(static_cast<size_t>(m) * n);
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      double acc = 0;
      for (int t = 0; t < k; ++t) acc += double{x[i * k + t]} * w[j * k + t];
      ref[i * n + j] = acc;
    }
  }
  return ref;
}

// Fresh bf16 x [m, k] and W [n, k]; run(x, w, y, f32_out) writes y = x W^T in float32 or
// bfloat16, and both outputs are checked against the double product.
template <typename Run>
void CheckLinearOutputs(std::mt19937& rng, int m, int n, int k, const std::string& what, Run run) {
  std::vector<float> x, w;
  auto xb = RandomBf16(m * k, rng, 1.f, &x);
  auto wb = RandomBf16(n * k, rng, 1.f, &w);
  const std::vector<double> ref = LinearRef(x, w, m, n, k);
  DeviceBuffer xd(xb), wd(wb), yb(m * n * 2), yf(m * n * 4);
  yb.Poison();
  yf.Poison();
  ASSERT_TRUE(run(xd.get(), wd.get(), yb.get(), false).ok()) << what;
  ASSERT_TRUE(run(xd.get(), wd.get(), yf.get(), true).ok()) << what;
  ExpectNear(Floats(yb.Download<uint16_t>()), ref, 5e-2, 1e-2, 5e-3, (what + " bf16").c_str());
  ExpectNear(yf.Download<float>(), ref, 1e-3, 1e-4, 1e-5, (what + " f32").c_str());
}

TEST_F(CudaModelOpsTest, GemmLinearBf16AndF32) {
  for (bool small_batch_kernel : {true, false}) {
    absl::StatusOr<std::unique_ptr<Gemm>> gemm = Gemm::Create(32 << 20, small_batch_kernel);
    ASSERT_TRUE(gemm.ok()) << gemm.status();
    for (auto [m, n, k] : {std::tuple{37, 200, 136},
                           {1, 4096, 512},
                           {1, 37, 1032},
                           {3, 129, 8},
                           {8, 300, 2056},
                           {8, 300, 2048},
                           {17, 1000, 96},
                           {32, 77, 2560},
                           {5, 64, 12}}) {
      CheckLinearOutputs(rng_, m, n, k, absl::StrCat("gemm m=", m, " n=", n, " k=", k),
                         [&](const void* x, const void* w, void* y, bool f32) {
                           return (*gemm)->Linear(
                               x, w, y, m, n, k,
                               f32 ? Gemm::OutputType::kF32 : Gemm::OutputType::kBf16, nullptr);
                         });
    }
  }
}

// Every shape the one-row kernel is built for (k splits x loads in flight), and the rows the
// others take, on k that leave partial rounds, parts shorter than a round and empty parts, and n
// that leave a block's last columns unused.
TEST_F(CudaModelOpsTest, SmallBatchKernelEveryShape) {
  for (auto [m, n, k] :
       {std::tuple{1, 13, 8}, {1, 301, 1032}, {1, 77, 9736}, {1, 8, 4096}, {3, 45, 2568}}) {
    std::vector<float> x, w;
    auto xb = RandomBf16(m * k, rng_, 1.f, &x);
    auto wb = RandomBf16(n * k, rng_, 1.f, &w);
    const std::vector<double> ref = LinearRef(x, w, m, n, k);
    DeviceBuffer xd(xb), wd(wb), yf(m * n * 4);
    for (int splits : {1, 2, 4, 8}) {
      for (int loads : {4, 8, 16}) {
        if (m > 1 && (splits != 1 || loads != 4)) continue;
        yf.Poison();
        const absl::Status st = SmallBatchLinear(xd.get(), wd.get(), yf.get(), m, n, k, true,
                                                 GemvConfig{splits, loads}, nullptr);
        ASSERT_TRUE(st.ok()) << st;
        const std::string what =
            absl::StrCat("m=", m, " n=", n, " k=", k, " splits=", splits, " loads=", loads);
        ExpectNear(yf.Download<float>(), ref, 1e-3, 1e-4, 1e-5, what.c_str());
      }
    }
  }
  EXPECT_FALSE(SmallBatchLinear(nullptr, nullptr, nullptr, 9, 8, 8, true, {}, nullptr).ok());
}

// The skinny tensor-core kernel at every row count it serves (one, two and four 8-row tiles,
// each partly filled), on k of 1 to 304 chunks of 32 (parts of the 8 warps empty, partial
// rounds of the loads in flight) and n that leave a block's last columns unused, f32 and bf16
// out, on fresh inputs.
TEST_F(CudaModelOpsTest, SkinnyKernelEveryRowCount) {
  for (int m : {1, 2, 7, 8, 9, 16, 17, 31, 32}) {
    for (auto [n, k] : {std::pair{13, 32}, {300, 96}, {45, 2592}, {40, 9728}}) {
      CheckLinearOutputs(rng_, m, n, k, absl::StrCat("skinny m=", m, " n=", n, " k=", k),
                         [&](const void* x, const void* w, void* y, bool f32) {
                           return SkinnyLinear(x, w, y, m, n, k, f32, nullptr);
                         });
    }
  }
  const absl::Status bad = SkinnyLinear(nullptr, nullptr, nullptr, 33, 8, 32, true, nullptr);
  EXPECT_NE(bad.message().find("m / n / k: expected 1..32"), std::string::npos) << bad;
  EXPECT_FALSE(SkinnyLinear(nullptr, nullptr, nullptr, 4, 8, 40, true, nullptr).ok());
}

// A decode-like chain, x <- x + W RmsNorm(x), a dozen times on one stream with no host sync:
// each kernel reads what the one before it wrote (and the norm overwrites what the product read
// the round before), so a kernel that started reading before its predecessor had finished (the
// launches overlap under programmatic dependent launch) would give another x. The reference
// rounds to bf16 where the kernels store.
TEST_F(CudaModelOpsTest, ChainedLaunchesSeeTheirPredecessorsWrites) {
  absl::StatusOr<std::unique_ptr<Gemm>> gemm = Gemm::Create(32 << 20, true);
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  constexpr int kRounds = 12;
  for (auto [m, h] : {std::pair{1, 2560}, {3, 1032}}) {
    std::vector<float> x, w, nw;
    auto xb = RandomBf16(m * h, rng_, 1.f, &x);
    auto wb = RandomBf16(int64_t{h} * h, rng_, 1.f / std::sqrt(static_cast<float>(h)), &w);
    auto nb = RandomBf16(h, rng_, 1.f, &nw);
    DeviceBuffer xd(xb), wd(wb), nd(nb), xn(m * h * 2), y(m * h * 2);
    for (int round = 0; round < kRounds; ++round) {
      ASSERT_TRUE(RmsNorm(xd.get(), nd.get(), xn.get(), m, h, 1e-6f, 0.f, nullptr).ok());
      ASSERT_TRUE(
          (*gemm)
              ->Linear(xn.get(), wd.get(), y.get(), m, h, h, Gemm::OutputType::kBf16, nullptr)
              .ok());
      ASSERT_TRUE(Add(xd.get(), y.get(), xd.get(), int64_t{m} * h, nullptr).ok());
    }
    std::vector<double> ref(x.begin(), x.end());
    std::vector<float> cur(x);
    for (int round = 0; round < kRounds; ++round) {
      const std::vector<double> normed = RmsRef(cur, nw, m, h, 1e-6, 0.0);
      std::vector<float> xnr(normed.size());
      for (size_t i = 0; i < normed.size(); ++i) {
        xnr[i] = testing::RoundBf16(static_cast<float>(normed[i]));
      }
      for (int r = 0; r < m; ++r) {
        for (int j = 0; j < h; ++j) {
          double acc = 0;
          for (int t = 0; t < h; ++t) acc += double{xnr[r * h + t]} * w[int64_t{j} * h + t];
          const float yj = testing::RoundBf16(static_cast<float>(acc));
          cur[r * h + j] = testing::RoundBf16(cur[r * h + j] + yj);
        }
      }
    }
    for (size_t i = 0; i < cur.size(); ++i) ref[i] = cur[i];
    ExpectNear(Floats(xd.Download<uint16_t>()), ref, 5e-2, 2e-2, 1e-2, "chained x");
  }
}

// The kept set and the chosen token of Sample, in double, from the definition in the header.
int32_t SampleRef(const std::vector<float>& row, const SamplingParams& sp, std::set<int>* kept) {
  const int v = static_cast<int>(row.size());
  int32_t arg = 0;
  for (int i = 1; i < v; ++i) {
    if (row[i] > row[arg]) arg = i;
  }
  if (sp.temperature <= 0 || sp.top_k == 1) return arg;
  std::vector<int> order(v);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return row[a] > row[b]; });
  float edge = -INFINITY;
  if (sp.top_k > 0 && sp.top_k < v) edge = row[order[sp.top_k - 1]];
  std::vector<double> w(v, 0.0);
  double mass = 0;
  for (int i = 0; i < v; ++i) {
    if (row[i] >= edge) {
      w[i] = std::exp((double{row[i]} - row[arg]) / sp.temperature);
      mass += w[i];
    }
  }
  if (sp.top_p < 1) {
    double cum = 0;
    for (int i : order) {
      if (w[i] == 0) continue;
      cum += w[i];
      if (cum >= sp.top_p * mass) {
        edge = std::max(edge, row[i]);
        break;
      }
    }
  }
  double total = 0;
  for (int i = 0; i < v; ++i) {
    if (row[i] >= edge && w[i] > 0) {
      kept->insert(i);
      total += w[i];
    }
  }
  const double target = SamplingUniform(sp.seed, sp.step) * total;
  double run = 0;
  for (int i = 0; i < v; ++i) {
    if (!kept->count(i)) continue;
    run += w[i];
    if (run > target) return i;
  }
  return *kept->rbegin();
}

TEST_F(CudaModelOpsTest, SamplingGreedyTopKTopPSeeded) {
  const int vocab = 5003, batch = 6;
  std::vector<float> logits(batch * vocab);
  std::normal_distribution<float> nd(0.f, 3.f);
  for (float& x : logits) x = nd(rng_);
  // Rows 0 and 1: a tie for the maximum at ids 4000 and 17 (greedy must give 17).
  logits[17] = logits[4000] = 50.f;
  logits[vocab + 17] = logits[vocab + 4000] = 50.f;
  std::vector<SamplingParams> params(batch);
  params[0] = {0.f, 0, 1.f, 1, 0};
  params[1] = {0.7f, 1, 1.f, 2, 0};      // top-k 1 = greedy
  params[2] = {1.0f, 0, 1.f, 3, 5};      // plain temperature
  params[3] = {0.8f, 50, 1.f, 4, 9};     // top-k
  params[4] = {1.3f, 0, 0.6f, 5, 11};    // top-p
  params[5] = {1.0f, 200, 0.9f, 6, 13};  // both
  DeviceBuffer ld(logits), tok(batch * 4);
  int mismatches = 0, checked = 0;
  for (int round = 0; round < 40; ++round) {
    for (auto& sp : params) sp.step = round;
    DeviceBuffer pd{params};
    ASSERT_TRUE(
        Sample(ld.as<float>(), batch, vocab, pd.as<SamplingParams>(), tok.as<int32_t>(), nullptr)
            .ok());
    const std::vector<int32_t> got = tok.Download<int32_t>();
    for (int b = 0; b < batch; ++b) {
      std::set<int> kept;
      const std::vector<float> row(logits.begin() + b * vocab, logits.begin() + (b + 1) * vocab);
      const int32_t want = SampleRef(row, params[b], &kept);
      if (b <= 1) {
        ASSERT_EQ(want, 17) << "row " << b;
        ASSERT_EQ(got[b], 17) << "row " << b;
        continue;
      }
      ASSERT_TRUE(kept.count(got[b]))
          << "row " << b << " sampled " << got[b] << " outside " << kept.size() << " kept tokens";
      if (b == 3) EXPECT_EQ(kept.size(), 50u);
      ++checked;
      mismatches += got[b] != want;
    }
  }
  // Summation order differs from the reference only in rounding, which can move a draw that
  // lands within ~1e-12 of a boundary.
  EXPECT_LE(mismatches, 1) << "of " << checked;
  // Same (seed, step), same token.
  DeviceBuffer pd(params), tok2(batch * 4);
  ASSERT_TRUE(
      Sample(ld.as<float>(), batch, vocab, pd.as<SamplingParams>(), tok.as<int32_t>(), nullptr)
          .ok());
  ASSERT_TRUE(
      Sample(ld.as<float>(), batch, vocab, pd.as<SamplingParams>(), tok2.as<int32_t>(), nullptr)
          .ok());
  EXPECT_EQ(tok.Download<int32_t>(), tok2.Download<int32_t>());
}

TEST_F(CudaModelOpsTest, SamplingFrequenciesFollowTheDistribution) {
  // Four tokens with probabilities 0.1 0.2 0.3 0.4 at temperature 1; 4000 draws.
  std::vector<float> row = {std::log(0.1f), std::log(0.2f), std::log(0.3f), std::log(0.4f)};
  const int draws = 4000;
  std::vector<float> logits;
  std::vector<SamplingParams> params;
  for (int i = 0; i < draws; ++i) {
    logits.insert(logits.end(), row.begin(), row.end());
    params.push_back({1.f, 0, 1.f, 99, static_cast<uint64_t>(i)});
  }
  DeviceBuffer ld(logits), pd(params), tok(draws * 4);
  ASSERT_TRUE(
      Sample(ld.as<float>(), draws, 4, pd.as<SamplingParams>(), tok.as<int32_t>(), nullptr).ok());
  std::map<int, int> count;
  for (int32_t t : tok.Download<int32_t>()) ++count[t];
  for (int i = 0; i < 4; ++i) {
    const double expected = draws * 0.1 * (i + 1);
    EXPECT_NEAR(count[i], expected, 5 * std::sqrt(expected)) << "token " << i;
  }
}

}  // namespace
}  // namespace fluxattn::kernels::cuda
