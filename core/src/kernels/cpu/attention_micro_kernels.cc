#include "kernels/cpu/attention_micro_kernels.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "kernels/cpu/attention_micro_avx512.h"
#include "kernels/cpu/isa.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__)
// Compiled for baseline x86-64, AVX2+FMA and AVX-512; the loader picks the best the CPU runs.
#define FLUXATTN_MULTIVERSION \
  __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define FLUXATTN_MULTIVERSION
#endif

namespace fluxattn::cpu_kernels {

namespace {

FLUXATTN_MULTIVERSION
void GemmPortable(int m, int n, int k, const float* __restrict a, int lda,
                  const float* __restrict b, int ldb, float* __restrict c, int ldc,
                  bool accumulate) {
  for (int i = 0; i < m; i += 4) {
    const float* a0 = a + static_cast<int64_t>(i) * lda;
    const float* a1 = a0 + lda;
    const float* a2 = a1 + lda;
    const float* a3 = a2 + lda;
    for (int j = 0; j < n; j += 16) {
      float c0[16], c1[16], c2[16], c3[16];
      float* out = c + static_cast<int64_t>(i) * ldc + j;
      for (int t = 0; t < 16; ++t) {
        c0[t] = accumulate ? out[t] : 0.0f;
        c1[t] = accumulate ? out[ldc + t] : 0.0f;
        c2[t] = accumulate ? out[2 * ldc + t] : 0.0f;
        c3[t] = accumulate ? out[3 * ldc + t] : 0.0f;
      }
      for (int p = 0; p < k; ++p) {
        const float* bp = b + static_cast<int64_t>(p) * ldb + j;
        const float x0 = a0[p], x1 = a1[p], x2 = a2[p], x3 = a3[p];
        for (int t = 0; t < 16; ++t) {
          c0[t] += x0 * bp[t];
          c1[t] += x1 * bp[t];
          c2[t] += x2 * bp[t];
          c3[t] += x3 * bp[t];
        }
      }
      for (int t = 0; t < 16; ++t) {
        out[t] = c0[t];
        out[ldc + t] = c1[t];
        out[2 * ldc + t] = c2[t];
        out[3 * ldc + t] = c3[t];
      }
    }
  }
}

FLUXATTN_MULTIVERSION
void GemmATPortable(int m, int n, int k, const float* __restrict at, int ldat,
                    const float* __restrict b, int ldb, float* __restrict c, int ldc,
                    bool accumulate) {
  for (int i = 0; i < m; i += 4) {
    for (int j = 0; j < n; j += 16) {
      float c0[16], c1[16], c2[16], c3[16];
      float* out = c + static_cast<int64_t>(i) * ldc + j;
      for (int t = 0; t < 16; ++t) {
        c0[t] = accumulate ? out[t] : 0.0f;
        c1[t] = accumulate ? out[ldc + t] : 0.0f;
        c2[t] = accumulate ? out[2 * ldc + t] : 0.0f;
        c3[t] = accumulate ? out[3 * ldc + t] : 0.0f;
      }
      for (int p = 0; p < k; ++p) {
        const float* bp = b + static_cast<int64_t>(p) * ldb + j;
        const float* ap = at + static_cast<int64_t>(p) * ldat + i;
        const float x0 = ap[0], x1 = ap[1], x2 = ap[2], x3 = ap[3];
        for (int t = 0; t < 16; ++t) {
          c0[t] += x0 * bp[t];
          c1[t] += x1 * bp[t];
          c2[t] += x2 * bp[t];
          c3[t] += x3 * bp[t];
        }
      }
      for (int t = 0; t < 16; ++t) {
        out[t] = c0[t];
        out[ldc + t] = c1[t];
        out[2 * ldc + t] = c2[t];
        out[3 * ldc + t] = c3[t];
      }
    }
  }
}

bool UseAvx512() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool avx512 = cpu::internal::CurrentIsa() == cpu::internal::Isa::kAvx512;
  return avx512;
#else
  return false;
#endif
}

}  // namespace

void Gemm(int m, int n, int k, const float* __restrict a, int lda, const float* __restrict b,
          int ldb, float* __restrict c, int ldc, bool accumulate) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (UseAvx512()) return GemmAvx512(m, n, k, a, lda, b, ldb, c, ldc, accumulate);
#endif
  GemmPortable(m, n, k, a, lda, b, ldb, c, ldc, accumulate);
}

void GemmAT(int m, int n, int k, const float* __restrict at, int ldat, const float* __restrict b,
            int ldb, float* __restrict c, int ldc, bool accumulate) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (UseAvx512()) return GemmATAvx512(m, n, k, at, ldat, b, ldb, c, ldc, accumulate);
#endif
  GemmATPortable(m, n, k, at, ldat, b, ldb, c, ldc, accumulate);
}

// x[i] = exp(x[i]) for x[i] <= 0 (including -inf, which gives exactly 0). Branch-free so it
// vectorizes: exp(x) = 2^k exp(r) with r = x - k ln2 in [-ln2/2, ln2/2] and a degree-7 Taylor
// polynomial for exp(r) (truncation error below 1e-8, so the result is within ~2 ulp).
FLUXATTN_MULTIVERSION
void ExpNonPositiveInPlace(float* __restrict x, int n) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  for (int i = 0; i < n; ++i) {
    const float in = x[i];
    const float v = in < -87.0f ? -87.0f : in;
    const float kf = (v * kLog2e + kRound) - kRound;
    const float r = (v - kf * kLn2Hi) - kf * kLn2Lo;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(kf) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    x[i] = in < -87.0f ? 0.0f : p * scale;
  }
}

FLUXATTN_MULTIVERSION
void SoftmaxStep(float* __restrict st, int n, int rows, int rows4, float* __restrict m,
                 float* __restrict l, float* __restrict acc, int dp, int d) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  constexpr int kMaxRows = 64;
  float mx[kMaxRows], shift[kMaxRows], corr[kMaxRows], sum[kMaxRows];
  for (int i = 0; i < rows; ++i) mx[i] = kNegInf;
  for (int j = 0; j < n; ++j) {
    const float* srow = st + static_cast<int64_t>(j) * rows;
    for (int i = 0; i < rows; ++i) mx[i] = srow[i] > mx[i] ? srow[i] : mx[i];
  }
  for (int i = 0; i < rows; ++i) {
    const float m_new = m[i] > mx[i] ? m[i] : mx[i];
    // A row that has seen no readable key keeps -inf and a shift of 0 (its scores are -inf).
    shift[i] = m_new == kNegInf ? 0.0f : m_new;
    corr[i] = m[i] == kNegInf ? kNegInf : m[i] - m_new;
    m[i] = m_new;
    sum[i] = 0.0f;
  }
  ExpNonPositiveInPlace(corr, rows);
  for (int j = 0; j < n; ++j) {
    float* srow = st + static_cast<int64_t>(j) * rows;
    for (int i = 0; i < rows; ++i) srow[i] -= shift[i];
    ExpNonPositiveInPlace(srow, rows);
    for (int i = 0; i < rows; ++i) sum[i] += srow[i];
  }
  for (int i = 0; i < rows; ++i) l[i] = l[i] * corr[i] + sum[i];
  for (int i = 0; i < rows4; ++i) {
    if (corr[i] == 1.0f) continue;
    float* arow = acc + static_cast<int64_t>(i) * dp;
    for (int c = 0; c < d; ++c) arow[c] *= corr[i];
  }
}

namespace {

FLUXATTN_MULTIVERSION
void TokenScoresPortable(const float* __restrict kt, int hkv, int group, int d,
                         const float* __restrict q, int ldq, float* __restrict s) {
  for (int h = 0; h < hkv; ++h) {
    const float* k = kt + static_cast<int64_t>(h) * d;
    for (int g = 0; g < group; ++g) {
      const int hq = h * group + g;
      const float* qr = q + static_cast<int64_t>(hq) * ldq;
      float lane[16] = {};
      int p = 0;
      for (; p + 16 <= d; p += 16) {
        for (int l = 0; l < 16; ++l) lane[l] += k[p + l] * qr[p + l];
      }
      for (int l = 0; p + l < d; ++l) lane[l] += k[p + l] * qr[p + l];
      for (int w = 8; w >= 1; w /= 2) {
        for (int l = 0; l < w; ++l) lane[l] += lane[l + w];
      }
      s[hq] = lane[0];
    }
  }
}

FLUXATTN_MULTIVERSION
void TokenValuesPortable(const float* const* v, const float* const* w, int n, int hkv, int group,
                         int d, float* __restrict acc, int ldacc) {
  for (int j = 0; j < n; ++j) {
    for (int h = 0; h < hkv; ++h) {
      const float* __restrict vh = v[j] + static_cast<int64_t>(h) * d;
      for (int g = 0; g < group; ++g) {
        const int hq = h * group + g;
        const float wg = w[j][hq];
        float* __restrict a = acc + static_cast<int64_t>(hq) * ldacc;
        for (int c = 0; c < d; ++c) a[c] += wg * vh[c];
      }
    }
  }
}

}  // namespace

void TokenScores(const float* __restrict kt, int hkv, int group, int d, const float* __restrict q,
                 int ldq, float* __restrict s) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (UseAvx512()) return TokenScoresAvx512(kt, hkv, group, d, q, ldq, s);
#endif
  TokenScoresPortable(kt, hkv, group, d, q, ldq, s);
}

void TokenValues(const float* const* v, const float* const* w, int n, int hkv, int group, int d,
                 float* __restrict acc, int ldacc) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (UseAvx512()) return TokenValuesAvx512(v, w, n, hkv, group, d, acc, ldacc);
#endif
  TokenValuesPortable(v, w, n, hkv, group, d, acc, ldacc);
}

}  // namespace fluxattn::cpu_kernels
