#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "fluxattn/kernels/cpu_dense.h"
#include "fluxattn/thread_pool.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/linear_block.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__)
// Element-wise loops compiled for baseline x86-64, AVX2+FMA and AVX-512, picked at load time.
#define FLUXATTN_MULTIVERSION \
  __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define FLUXATTN_MULTIVERSION
#endif

namespace fluxattn::cpu {
namespace {

using internal::CurrentIsa;
using internal::Isa;

Isa DetectIsa() {
  Isa isa = Isa::kBaseline;
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  // The x86-64-v3 / v4 feature sets, spelled out (clang's builtin does not know the level names;
  // every CPU with AVX2 and FMA also has F16C).
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("bmi2")) {
    isa = Isa::kAvx2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
      isa = Isa::kAvx512;
    }
  }
#endif
  if (const char* cap = std::getenv("FLUXATTN_CPU_ISA")) {
    const std::string c = cap;
    if (c == "baseline") isa = Isa::kBaseline;
    if (c == "avx2" && isa == Isa::kAvx512) isa = Isa::kAvx2;
  }
  return isa;
}

// AVX512-BF16 dot products (`vdpbf16ps`) on top of the AVX-512 level; FLUXATTN_CPU_ISA=avx512
// (or any lower cap) leaves them out.
bool DetectBf16Dot() {
#if defined(__x86_64__) && defined(__GNUC__)
  if (CurrentIsa() != Isa::kAvx512 || !__builtin_cpu_supports("avx512bf16")) return false;
  const char* cap = std::getenv("FLUXATTN_CPU_ISA");
  return cap == nullptr || std::string(cap) != "avx512";
#else
  return false;
#endif
}

bool HasBf16Dot() {
  static const bool has = DetectBf16Dot();
  return has;
}

struct LinearLevel {
  internal::LinearBlockFn block;
  internal::LinearTileShape shape;
};

LinearLevel Level() {
#if defined(__x86_64__) && defined(__GNUC__)
  switch (CurrentIsa()) {
    case Isa::kAvx512:
      return {&internal::LinearBlockAvx512, internal::LinearShapeAvx512()};
    case Isa::kAvx2:
      return {&internal::LinearBlockAvx2, internal::LinearShapeAvx2()};
    default:
      break;
  }
#endif
  return {&internal::LinearBlockBaseline, internal::LinearShapeBaseline()};
}

// The activations of a product packed for the tiles of `shape`: group g of `cols` rows (the last
// one may have fewer) at g * cols * steps * lanes floats, laid out [step][row][lane] with the
// last step zero-padded. Groups are packed in parallel.
void PackLinearInput(const float* x, int64_t ldx, int64_t m, int64_t k,
                     const internal::LinearTileShape& shape, float* out) {
  const int64_t lanes = shape.lanes, cols = shape.cols;
  const int64_t steps = (k + lanes - 1) / lanes;
  const int64_t groups = (m + cols - 1) / cols;
  CpuParallelFor(groups, [&](int64_t g) {
    const int64_t i0 = g * cols;
    const int64_t c = std::min(cols, m - i0);
    float* dst = out + g * cols * steps * lanes;
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t n = std::min(lanes, k - s * lanes);
      for (int64_t cc = 0; cc < c; ++cc) {
        float* d = dst + (s * c + cc) * lanes;
        std::memcpy(d, x + (i0 + cc) * ldx + s * lanes, n * sizeof(float));
        std::fill(d + n, d + lanes, 0.0f);
      }
    }
  });
}

float BitsToFloat(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// exp(v) for any float v: 2^k exp(r), r = v - k ln2 in [-ln2/2, ln2/2], degree-7 Taylor polynomial
// (within ~2 ulp); clamps to [-87, 88], so very negative inputs give a tiny value, not 0.
inline float ExpApprox(float in) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float v = in < -87.0f ? -87.0f : (in > 88.0f ? 88.0f : in);
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
  return p * scale;
}

FLUXATTN_MULTIVERSION
void RmsNormRow(const float* x, int64_t dim, const float* __restrict w, float eps, float* y) {
  // Eight double partial sums in a fixed order (vectorizes without reassociation).
  double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= dim; i += 8) {
    for (int l = 0; l < 8; ++l) part[l] += static_cast<double>(x[i + l]) * x[i + l];
  }
  for (int l = 0; i < dim; ++i, ++l) part[l] += static_cast<double>(x[i]) * x[i];
  const double sum =
      ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
  const float variance = static_cast<float>(sum / dim);
  const float inv = 1.0f / std::sqrt(variance + eps);
  for (int64_t j = 0; j < dim; ++j) y[j] = w[j] * (x[j] * inv);
}

FLUXATTN_MULTIVERSION
void RopeRow(float* __restrict x, int heads, int head_dim, const float* __restrict cos_sin) {
  const int half = head_dim / 2;
  const float* c = cos_sin;
  const float* s = cos_sin + half;
  for (int h = 0; h < heads; ++h) {
    float* __restrict lo = x + static_cast<int64_t>(h) * head_dim;
    float* __restrict hi = lo + half;
    for (int i = 0; i < half; ++i) {
      const float a = lo[i], b = hi[i];
      lo[i] = a * c[i] - b * s[i];
      hi[i] = b * c[i] + a * s[i];
    }
  }
}

FLUXATTN_MULTIVERSION
void SwiGluRow(const float* __restrict g, const float* __restrict u, int64_t n,
               float* __restrict out) {
  for (int64_t i = 0; i < n; ++i) out[i] = g[i] / (1.0f + ExpApprox(-g[i])) * u[i];
}

FLUXATTN_MULTIVERSION
void AddRange(float* __restrict x, const float* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

FLUXATTN_MULTIVERSION
void ConvertHalf(const uint16_t* __restrict src, bool bf16, int64_t n, float* __restrict dst) {
  if (bf16) {
    for (int64_t i = 0; i < n; ++i) dst[i] = BitsToFloat(static_cast<uint32_t>(src[i]) << 16);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = F16ToFloat(src[i]);
  }
}

// Rows per task of the element-wise steps: enough work per task to pay for the hand-off.
int64_t RowsPerTask(int64_t rows, int64_t row_elems) {
  const int64_t per = std::max<int64_t>(1, 16384 / std::max<int64_t>(row_elems, 1));
  return std::min(rows, per);
}

template <typename Fn>
void ForRows(int64_t rows, int64_t row_elems, const Fn& fn) {
  const int64_t per = RowsPerTask(rows, row_elems);
  const int64_t tasks = (rows + per - 1) / per;
  if (tasks <= 1) {
    for (int64_t r = 0; r < rows; ++r) fn(r);
    return;
  }
  CpuParallelFor(tasks, [&](int64_t t) {
    const int64_t end = std::min(rows, (t + 1) * per);
    for (int64_t r = t * per; r < end; ++r) fn(r);
  });
}

}  // namespace

namespace internal {

Isa CurrentIsa() {
  static const Isa isa = DetectIsa();
  return isa;
}

}  // namespace internal

const char* DenseIsa() {
  switch (CurrentIsa()) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    default:
      return "baseline";
  }
}

namespace {

// Splits the weight rows of `parts` into tasks (the split decides who computes an element, never
// how) into `tasks`.
struct LinearTask {
  int part;
  int64_t n0, n1;
};

void SplitLinear(int64_t k, const LinearPart* parts, int num_parts, bool streamed,
                 std::vector<LinearTask>* tasks) {
  const int64_t threads = CpuThreads();
  int64_t total = 0;
  for (int i = 0; i < num_parts; ++i) total += parts[i].n;
  // Weight rows per task: a multiple of 12 (the tile heights) and at least two tasks per thread.
  // Packed products (prefill) take about 192 KiB of weights per task: they stay in L2 while the
  // activations stream past. A product that reads its weights once (a few activation rows, as in
  // decode) takes about 768 KiB: a tile's four weight streams (a quarter of the task each) are
  // then long enough for the hardware prefetchers to run at full rate (with 192 KiB tasks one
  // Zen 4 core decodes about 8% slower; docs/benchmarks.md).
  constexpr int64_t kMaxTasksPerPart = 4096;
  const int64_t task_bytes = streamed ? int64_t{768} << 10 : int64_t{192} << 10;
  tasks->clear();
  const int64_t fair = ((total + 2 * threads - 1) / (2 * threads) + 11) / 12 * 12;
  for (int i = 0; i < num_parts; ++i) {
    const LinearPart& p = parts[i];
    const int64_t elem = p.type == DType::kF32 ? 4 : 2;
    int64_t rows = task_bytes / std::max<int64_t>(k * elem, 1) / 12 * 12;
    rows = std::max<int64_t>(12, std::min(rows, fair));
    rows = std::max(rows, (p.n + kMaxTasksPerPart - 1) / kMaxTasksPerPart);
    for (int64_t n0 = 0; n0 < p.n; n0 += rows) tasks->push_back({i, n0, std::min(p.n, n0 + rows)});
  }
}

// Float32 activations: every weight type through the level's blocks.
void LinearF32(const float* x, int64_t ldx, int64_t m, int64_t k, const LinearPart* parts,
               int num_parts) {
  const LinearLevel level = Level();
  thread_local std::vector<LinearTask> tasks;  // reused: no allocation per call once grown
  // Prefill: the activations are packed once for every task (each task packs its weight rows).
  const int64_t steps = (k + level.shape.lanes - 1) / level.shape.lanes;
  const bool packed = m > level.shape.cols;
  SplitLinear(k, parts, num_parts, !packed, &tasks);
  thread_local std::vector<float> xpacked;  // reused like `tasks`
  if (packed) {
    const int64_t groups = (m + level.shape.cols - 1) / level.shape.cols;
    const size_t need = static_cast<size_t>(groups * level.shape.cols * steps * level.shape.lanes);
    if (xpacked.size() < need) xpacked.resize(need);
    PackLinearInput(x, ldx, m, k, level.shape, xpacked.data());
  }
  const float* xp = packed ? xpacked.data() : nullptr;
  const LinearTask* all = tasks.data();
  const int64_t count = static_cast<int64_t>(tasks.size());
  CpuParallelFor(count, [&](int64_t t) {
    const LinearTask& task = all[t];
    const LinearPart& p = parts[task.part];
    const int type = p.type == DType::kF32 ? 0 : (p.type == DType::kBF16 ? 1 : 2);
    thread_local std::vector<float> scratch;  // the task's packed weight rows
    if (packed) {
      const int64_t elem = type == 0 ? 4 : 2;
      const size_t need =
          static_cast<size_t>(((task.n1 - task.n0) * steps * level.shape.lanes * elem + 3) / 4);
      if (scratch.size() < need) scratch.resize(need);
    }
    level.block(x, ldx, m, p.w, type, task.n0, task.n1, k, p.bias, p.y, p.ldy, xp,
                packed ? scratch.data() : nullptr);
  });
}

// Bfloat16 activations and bfloat16 weights on AVX512-BF16.
void LinearBf16Dot(const float* x, int64_t ldx, int64_t m, int64_t k, const LinearPart* parts,
                   int num_parts) {
  constexpr int64_t kRows = internal::kBf16GroupRows;
  const bool packed = m > kRows;
  thread_local std::vector<LinearTask> tasks;
  SplitLinear(k, parts, num_parts, !packed, &tasks);
  thread_local std::vector<uint16_t> xpacked;
  const size_t need = static_cast<size_t>(internal::Bf16PackedElems(m, k));
  if (xpacked.size() < need) xpacked.resize(need);
  const int64_t group_elems = internal::Bf16PackedElems(1, k);
  uint16_t* xp = xpacked.data();
  CpuParallelFor((m + kRows - 1) / kRows, [&](int64_t g) {
    internal::PackBf16ActivationsAvx512(
        x + g * kRows * ldx, ldx, std::min<int64_t>(kRows, m - g * kRows), k, xp + g * group_elems);
  });
  const LinearTask* all = tasks.data();
  CpuParallelFor(static_cast<int64_t>(tasks.size()), [&](int64_t t) {
    const LinearTask& task = all[t];
    const LinearPart& p = parts[task.part];
    thread_local std::vector<uint16_t> scratch;
    if (packed) {
      const size_t bytes = static_cast<size_t>(internal::Bf16ScratchBytes(task.n1 - task.n0, k));
      if (scratch.size() * 2 < bytes) scratch.resize(bytes / 2 + 1);
    }
    internal::LinearBlockAvx512Bf16(xp, m, static_cast<const uint16_t*>(p.w), task.n0, task.n1, k,
                                    p.bias, p.y, p.ldy, packed ? scratch.data() : nullptr);
  });
}

}  // namespace

void Linear(const float* x, int64_t ldx, int64_t m, int64_t k, const LinearPart* parts,
            int num_parts, DType activations) {
  if (m <= 0 || num_parts <= 0) return;
  if (activations != DType::kBF16) {
    LinearF32(x, ldx, m, k, parts, num_parts);
    return;
  }
  // Parts with bfloat16 weights on the dot-product path; the others (or all, without
  // AVX512-BF16) on float32 blocks fed the activations rounded to bfloat16.
  thread_local std::vector<LinearPart> dot, rest;
  dot.clear();
  rest.clear();
  for (int i = 0; i < num_parts; ++i) {
    (HasBf16Dot() && parts[i].type == DType::kBF16 ? dot : rest).push_back(parts[i]);
  }
  if (!dot.empty()) LinearBf16Dot(x, ldx, m, k, dot.data(), static_cast<int>(dot.size()));
  if (!rest.empty()) {
    thread_local std::vector<float> rounded;
    if (rounded.size() < static_cast<size_t>(m * k)) rounded.resize(m * k);
    float* r = rounded.data();
    ForRows(m, k, [&](int64_t i) {
      for (int64_t p = 0; p < k; ++p) r[i * k + p] = BF16ToFloat(FloatToBF16(x[i * ldx + p]));
    });
    LinearF32(r, k, m, k, rest.data(), static_cast<int>(rest.size()));
  }
}

bool Bf16DotProducts() { return HasBf16Dot(); }

void RmsNorm(const float* x, int64_t rows, int64_t dim, const float* w, float eps, float* y) {
  ForRows(rows, dim, [&](int64_t r) { RmsNormRow(x + r * dim, dim, w, eps, y + r * dim); });
}

void Rope(float* x, int64_t rows, int heads, int head_dim, const float* const* cos_sin) {
  ForRows(rows, int64_t{heads} * head_dim, [&](int64_t r) {
    RopeRow(x + r * heads * static_cast<int64_t>(head_dim), heads, head_dim, cos_sin[r]);
  });
}

void SwiGlu(const float* gate_up, int64_t rows, int64_t inter, float* out) {
  ForRows(rows, 2 * inter, [&](int64_t r) {
    const float* g = gate_up + r * 2 * inter;
    SwiGluRow(g, g + inter, inter, out + r * inter);
  });
}

void AddInPlace(float* x, const float* y, int64_t n) {
  constexpr int64_t kChunk = 1 << 16;
  const int64_t tasks = (n + kChunk - 1) / kChunk;
  CpuParallelFor(tasks, [&](int64_t t) {
    const int64_t b = t * kChunk;
    AddRange(x + b, y + b, std::min(kChunk, n - b));
  });
}

void ConvertRow(const void* data, DType type, int64_t row, int64_t dim, float* out) {
  if (type == DType::kF32) {
    std::memcpy(out, static_cast<const float*>(data) + row * dim, dim * sizeof(float));
  } else {
    ConvertHalf(static_cast<const uint16_t*>(data) + row * dim, type == DType::kBF16, dim, out);
  }
}

}  // namespace fluxattn::cpu
