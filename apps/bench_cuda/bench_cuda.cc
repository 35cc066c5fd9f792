// The CUDA kernel library on the GPU: dense causal and streaming prefill attention, split-KV
// decode, the model's row kernels, GEMM and sampling. For every case the FLOPs and the fewest
// bytes are counted first; the table reports time (median of CUDA-event timings after warm-up),
// rate, and the fraction of the device's limits (bf16 dense matrix rate and copy bandwidth,
// given or measured in the same run). Prints a table and, with --json, writes the rows as JSON.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "fluxattn/device.h"
#include "fluxattn/kernels/cuda_attention.h"
#if defined(FLUXATTN_WITH_CUDNN)
#include "cudnn/cudnn_attention.h"
#endif
#include "fluxattn/kernels/cuda_model_ops.h"
#include "nlohmann/json.hpp"

namespace fluxattn::kernels::cuda::bench {
namespace {

#define BENCH_CHECK_CUDA(expr)                                                     \
  do {                                                                             \
    const cudaError_t _e = (expr);                                                 \
    if (_e != cudaSuccess) {                                                       \
      std::fprintf(stderr, "bench_cuda: %s: %s\n", #expr, cudaGetErrorString(_e)); \
      std::exit(1);                                                                \
    }                                                                              \
  } while (false)

#define BENCH_CHECK_OK(expr)                                                       \
  do {                                                                             \
    const absl::Status _s = (expr);                                                \
    if (!_s.ok()) {                                                                \
      std::fprintf(stderr, "bench_cuda: %s\n", std::string(_s.message()).c_str()); \
      std::exit(1);                                                                \
    }                                                                              \
  } while (false)

struct Options {
  std::vector<int> prefill_lengths = {4096, 16384, 32768, 65536};
  std::vector<int> decode_lengths = {32768, 131072};
  std::vector<int> decode_batches = {1, 8};
  int q_heads = 32, kv_heads = 8, head_dim = 128, page_tokens = 128;
  int repeats = 10;
  double peak_tflops = 790, peak_tbps = 4.25;
  bool measure_peaks = true;
  std::string json_path;
};

struct Row {
  std::string name;
  double ms = 0, flops = 0, bytes = 0;
  nlohmann::json extra;
};

class DeviceMemory {
 public:
  explicit DeviceMemory(size_t bytes) : bytes_(bytes) {
    BENCH_CHECK_CUDA(cudaMalloc(&ptr_, std::max<size_t>(bytes, 16)));
  }
  ~DeviceMemory() { cudaFree(ptr_); }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_;
};

// A device copy of `v`.
std::unique_ptr<DeviceMemory> UploadInts(const std::vector<int32_t>& v) {
  auto m = std::make_unique<DeviceMemory>(v.size() * 4);
  BENCH_CHECK_CUDA(cudaMemcpy(m->get(), v.data(), v.size() * 4, cudaMemcpyHostToDevice));
  return m;
}

// Random bf16 in [-1, 1) (never zeros: they time faster than real data), tiled from 16 MiB.
void FillRandomBf16(void* dst, size_t count, uint64_t seed) {
  static std::vector<uint16_t> pattern = [] {
    std::vector<uint16_t> p(8 << 20);
    std::mt19937_64 rng(7);
    for (uint16_t& x : p) {
      const float f =
          static_cast<float>(static_cast<double>(rng() >> 11) / 9007199254740992.0 * 2 - 1);
      uint32_t u;
      std::memcpy(&u, &f, 4);
      x = static_cast<uint16_t>((u + 0x7fff + ((u >> 16) & 1)) >> 16);
    }
    return p;
  }();
  size_t done = 0;
  const size_t offset = seed % 4096;
  while (done < count) {
    const size_t n = std::min(count - done, pattern.size() - offset);
    BENCH_CHECK_CUDA(cudaMemcpy(static_cast<uint16_t*>(dst) + done, pattern.data() + offset, n * 2,
                                cudaMemcpyHostToDevice));
    done += n;
  }
}

// Median milliseconds of `fn` over `repeats` timed runs after two warm-ups.
double TimeMs(const std::function<void()>& fn, int repeats) {
  fn();
  fn();
  BENCH_CHECK_CUDA(cudaDeviceSynchronize());
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  std::vector<float> ms;
  for (int i = 0; i < repeats; ++i) {
    cudaEventRecord(a);
    fn();
    cudaEventRecord(b);
    BENCH_CHECK_CUDA(cudaEventSynchronize(b));
    float t = 0;
    cudaEventElapsedTime(&t, a, b);
    ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  BENCH_CHECK_CUDA(cudaGetLastError());
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// A KV pool holding one or more sequences of `kv_len` keys each, pages interleaved across the
// sequences (so that no sequence is contiguous in memory).
struct Pool {
  std::unique_ptr<DeviceMemory> k, v, page_indptr, page_indices, kv_len, q_pos0, q_indptr;
  PagedKvPool view;
  SequenceBatch seqs;
};

Pool MakePool(int num_seqs, int kv_len, int q_rows_per_seq, const Options& o, bool decode) {
  Pool p;
  const int pages_per_seq = (kv_len + o.page_tokens - 1) / o.page_tokens;
  const int64_t num_pages = static_cast<int64_t>(pages_per_seq) * num_seqs;
  const size_t elems = static_cast<size_t>(num_pages) * o.page_tokens * o.kv_heads * o.head_dim;
  p.k = std::make_unique<DeviceMemory>(elems * 2);
  p.v = std::make_unique<DeviceMemory>(elems * 2);
  FillRandomBf16(p.k->get(), elems, 1);
  FillRandomBf16(p.v->get(), elems, 2);
  std::vector<int32_t> indptr = {0}, indices, lens, pos0, qind = {0};
  for (int b = 0; b < num_seqs; ++b) {
    for (int i = 0; i < pages_per_seq; ++i) indices.push_back(i * num_seqs + b);
    indptr.push_back(static_cast<int32_t>(indices.size()));
    lens.push_back(kv_len);
    pos0.push_back(decode ? kv_len - 1 : kv_len - q_rows_per_seq);
    qind.push_back(qind.back() + q_rows_per_seq);
  }
  p.page_indptr = UploadInts(indptr);
  p.page_indices = UploadInts(indices);
  p.kv_len = UploadInts(lens);
  p.q_pos0 = UploadInts(pos0);
  p.q_indptr = UploadInts(qind);
  p.view = {p.k->get(), p.v->get(), static_cast<int32_t>(num_pages), o.page_tokens};
  p.seqs.num_seqs = num_seqs;
  p.seqs.q_indptr = p.q_indptr->as<int32_t>();
  p.seqs.q_pos0 = p.q_pos0->as<int32_t>();
  p.seqs.kv_len = p.kv_len->as<int32_t>();
  p.seqs.page_indptr = p.page_indptr->as<int32_t>();
  p.seqs.page_indices = p.page_indices->as<int32_t>();
  return p;
}

AttentionShape Shape(const Options& o) {
  return {o.q_heads, o.kv_heads, o.head_dim,
          static_cast<float>(1.0 / std::sqrt(static_cast<double>(o.head_dim)))};
}

// Streaming at block granularity: query block qb reads block 0 and blocks [qb - window, qb].
struct StreamingLayout {
  std::unique_ptr<DeviceMemory> seq_row_begin, row_indptr, kv_block;
  BlockSparseLayoutView view;
  double allowed_pairs = 0;  // (query, key) pairs actually computed under causality
};

StreamingLayout MakeStreaming(int t, int block, int window_blocks) {
  StreamingLayout s;
  std::vector<int32_t> indptr = {0}, blocks, begin = {0};
  const int nb = (t + block - 1) / block;
  for (int qb = 0; qb < nb; ++qb) {
    blocks.push_back(0);
    for (int kb = std::max(1, qb - window_blocks); kb <= qb; ++kb) blocks.push_back(kb);
    indptr.push_back(static_cast<int32_t>(blocks.size()));
    for (int kb = 0; kb <= qb; ++kb) {
      if (kb != 0 && kb < qb - window_blocks) continue;
      s.allowed_pairs += kb == qb ? block * (block + 1) / 2.0 : static_cast<double>(block) * block;
    }
  }
  s.seq_row_begin = UploadInts(begin);
  s.row_indptr = UploadInts(indptr);
  s.kv_block = UploadInts(blocks);
  s.view.q_block_tokens = block;
  s.view.kv_block_tokens = block;
  s.view.num_layout_heads = 1;
  s.view.seq_row_begin = s.seq_row_begin->as<int32_t>();
  s.view.row_indptr = s.row_indptr->as<int32_t>();
  s.view.kv_block = s.kv_block->as<int32_t>();
  return s;
}

void BenchPrefill(const Options& o, std::vector<Row>& rows) {
  for (int t : o.prefill_lengths) {
    Pool pool = MakePool(1, t, t, o, false);
    const size_t q_elems = static_cast<size_t>(t) * o.q_heads * o.head_dim;
    DeviceMemory q(q_elems * 2), out(q_elems * 2);
    FillRandomBf16(q.get(), q_elems, 3);
    DeviceMemory ws(PrefillWorkspaceBytes(t, 1));
    const std::vector<int32_t> indptr = {0, t}, pos0 = {0};
    PrefillArgs args;
    args.shape = Shape(o);
    args.q = q.get();
    args.out = out.get();
    args.kv = pool.view;
    args.seqs = pool.seqs;
    const double causal_flops = 2.0 * o.q_heads * static_cast<double>(t) * t * o.head_dim;
    const double bytes = 2.0 * (2.0 * q_elems + 2.0 * t * o.kv_heads * o.head_dim);
#if defined(FLUXATTN_WITH_CUDNN)
    // The engine's dense prefill path through cuDNN: the same queries, keys packed (a fresh
    // prompt) and read from the page pool through a page table (a continued prompt).
    {
      absl::StatusOr<std::unique_ptr<fluxattn::cudnn::Attention>> att =
          fluxattn::cudnn::Attention::Create(fluxattn::CudaDevice(0).value());
      BENCH_CHECK_OK(att.status());
      const int32_t width = fluxattn::cudnn::TableWidth(t, o.page_tokens);
      std::vector<int32_t> table(width, 0), q_off = {0, static_cast<int32_t>(q_elems)},
                                            kv_off = {0, t * o.kv_heads * o.head_dim}, lens = {t};
      for (int i = 0; i < (t + o.page_tokens - 1) / o.page_tokens; ++i) table[i] = i;
      auto d_table = UploadInts(table), d_q_off = UploadInts(q_off), d_kv_off = UploadInts(kv_off),
           d_lens = UploadInts(lens);
      fluxattn::cudnn::PrefillArgs a;
      a.num_seqs = 1;
      a.num_q_heads = o.q_heads;
      a.num_kv_heads = o.kv_heads;
      a.head_dim = o.head_dim;
      a.scale = Shape(o).scale;
      a.max_q_rows = t;
      a.max_kv_len = t;
      a.q = q.get();
      a.out = out.get();
      a.q_offsets = d_q_off->as<int32_t>();
      a.kv_offsets = d_kv_off->as<int32_t>();
      a.seq_len_q = d_lens->as<int32_t>();
      a.seq_len_kv = d_lens->as<int32_t>();
      a.num_pages = pool.view.num_pages;
      a.page_tokens = o.page_tokens;
      a.table_width = width;
      a.page_table = d_table->as<int32_t>();
      for (bool paged : {false, true}) {
        a.paged = paged;
        // Packed keys: the first t rows of the pool's storage stand in for the new rows.
        a.k = pool.view.k;
        a.v = pool.view.v;
        const double ms = TimeMs([&] { BENCH_CHECK_OK((*att)->Prefill(a, nullptr)); },
                                 t >= 32768 ? std::max(3, o.repeats / 3) : o.repeats);
        rows.push_back({"prefill dense causal T=" + std::to_string(t) + " cudnn " +
                            (paged ? "paged" : "packed"),
                        ms,
                        causal_flops,
                        bytes,
                        {{"T", t}, {"tile_rows", 0}}});
      }
    }
#endif
    for (int tile : {128, 64}) {
      if (tile == 128 && o.head_dim != 128) continue;
      absl::StatusOr<PrefillPlan> plan =
          PlanPrefill(args.shape, indptr, pos0, ws.get(), ws.bytes(), nullptr, tile);
      BENCH_CHECK_OK(plan.status());
      args.maybe_layout = nullptr;
      const double ms = TimeMs([&] { BENCH_CHECK_OK(RunPrefill(args, *plan, nullptr)); },
                               t >= 32768 ? std::max(3, o.repeats / 3) : o.repeats);
      rows.push_back(
          {"prefill dense causal T=" + std::to_string(t) + " tile " + std::to_string(tile),
           ms,
           causal_flops,
           bytes,
           {{"T", t}, {"tile_rows", tile}}});
      if (t == 32768) {
        StreamingLayout s = MakeStreaming(t, 128, 16);
        args.maybe_layout = &s.view;
        const double sms =
            TimeMs([&] { BENCH_CHECK_OK(RunPrefill(args, *plan, nullptr)); }, o.repeats);
        const double sflops = 4.0 * o.q_heads * o.head_dim * s.allowed_pairs;
        rows.push_back({"prefill streaming sink128+win2048 T=32768 tile " + std::to_string(tile),
                        sms,
                        sflops,
                        bytes,
                        {{"T", t}, {"tile_rows", tile}}});
      }
    }
  }
}

void BenchDecode(const Options& o, std::vector<Row>& rows) {
  for (int b : o.decode_batches) {
    for (int kv : o.decode_lengths) {
      Pool pool = MakePool(b, kv, 1, o, true);
      const size_t q_elems = static_cast<size_t>(b) * o.q_heads * o.head_dim;
      DeviceMemory q(q_elems * 2), out(q_elems * 2);
      FillRandomBf16(q.get(), q_elems, 4);
      const double bytes =
          2.0 * 2.0 * b * static_cast<double>(kv) * o.kv_heads * o.head_dim + 4.0 * q_elems;
      const double flops = 4.0 * b * static_cast<double>(kv) * o.q_heads * o.head_dim;
      const int chosen = ChooseDecodeSplits(b, o.kv_heads, kv);
      std::vector<int> splits = {chosen};
      for (int alt : {chosen / 2, chosen * 3 / 4, chosen * 3 / 2, chosen * 2, chosen * 4}) {
        if (alt >= 1 && alt <= 1024 && alt != chosen) splits.push_back(alt);
      }
      for (int sp : splits) {
        DeviceMemory ws(DecodeWorkspaceBytes(b, Shape(o), sp));
        absl::StatusOr<DecodePlan> plan = PlanDecode(Shape(o), b, sp, ws.get(), ws.bytes());
        BENCH_CHECK_OK(plan.status());
        DecodeArgs args;
        args.shape = Shape(o);
        args.q = q.get();
        args.out = out.get();
        args.kv = pool.view;
        args.seqs = pool.seqs;
        const double ms =
            TimeMs([&] { BENCH_CHECK_OK(RunDecode(args, *plan, nullptr)); }, o.repeats * 5);
        rows.push_back({"decode B=" + std::to_string(b) + " KV=" + std::to_string(kv) + " splits " +
                            std::to_string(sp) + (sp == chosen ? " (chosen)" : ""),
                        ms,
                        flops,
                        bytes,
                        {{"B", b}, {"KV", kv}, {"splits", sp}}});
      }
    }
  }
}

void BenchModelOps(const Options& o, std::vector<Row>& rows) {
  // Qwen3-4B-shaped prefill of 32K tokens: hidden 2560, intermediate 9728, 32 + 8 heads of 128.
  const int64_t t = 32768, hidden = 2560, inter = 9728;
  DeviceMemory x(t * hidden * 2), y(t * hidden * 2), w(hidden * 2), res(t * hidden * 2);
  FillRandomBf16(x.get(), t * hidden, 5);
  FillRandomBf16(res.get(), t * hidden, 6);
  FillRandomBf16(w.get(), hidden, 7);
  const double nb = t * hidden * 2.0;
  rows.push_back({"rmsnorm [32768, 2560]",
                  TimeMs(
                      [&] {
                        BENCH_CHECK_OK(
                            RmsNorm(x.get(), w.get(), y.get(), t, hidden, 1e-6f, 0.f, nullptr));
                      },
                      o.repeats),
                  0,
                  2 * nb,
                  {}});
  rows.push_back({"add+rmsnorm [32768, 2560]",
                  TimeMs(
                      [&] {
                        BENCH_CHECK_OK(AddRmsNorm(res.get(), x.get(), w.get(), y.get(), t, hidden,
                                                  1e-6f, 0.f, nullptr));
                      },
                      o.repeats),
                  0,
                  4 * nb,
                  {}});
  DeviceMemory gu(t * 2 * inter * 2), act(t * inter * 2);
  FillRandomBf16(gu.get(), t * 2 * inter, 8);
  rows.push_back({"swiglu [32768, 9728]",
                  TimeMs(
                      [&] {
                        BENCH_CHECK_OK(SwiGlu(gu.get(), gu.as<uint16_t>() + inter, 2 * inter,
                                              act.get(), t, inter, nullptr));
                      },
                      o.repeats),
                  0,
                  3.0 * t * inter * 2,
                  {}});
  DeviceMemory qk(t * 40 * 128 * 2), pos(t * 4), inv(64 * 4);
  FillRandomBf16(qk.get(), t * 40 * 128, 9);
  std::vector<int32_t> positions(t);
  std::iota(positions.begin(), positions.end(), 0);
  std::vector<float> inv_freq(64);
  for (int i = 0; i < 64; ++i) inv_freq[i] = static_cast<float>(std::pow(1e6, -i / 64.0));
  BENCH_CHECK_CUDA(cudaMemcpy(pos.get(), positions.data(), t * 4, cudaMemcpyHostToDevice));
  BENCH_CHECK_CUDA(cudaMemcpy(inv.get(), inv_freq.data(), 256, cudaMemcpyHostToDevice));
  uint16_t* qp = qk.as<uint16_t>();
  rows.push_back({"rope q+k [32768, 32+8, 128]",
                  TimeMs(
                      [&] {
                        BENCH_CHECK_OK(RopeInPlace(qp, qp + t * 32 * 128, t, 32, 8, 128, 128,
                                                   pos.as<int32_t>(), inv.as<float>(), 1.f,
                                                   nullptr));
                      },
                      o.repeats),
                  0,
                  2.0 * t * 40 * 128 * 2,
                  {}});
  // The fused q/k/v split of a 32K-row prompt (Qwen3-4B: q/k norms, full RoPE, pre-RoPE copy).
  DeviceMemory qkv(t * 48 * 128 * 2), qn(128 * 2), kn(128 * 2), q_pre(t * 32 * 128 * 2),
      q_out(t * 32 * 128 * 2), k_out(t * 8 * 128 * 2), v_out(t * 8 * 128 * 2);
  FillRandomBf16(qkv.get(), t * 48 * 128, 16);
  FillRandomBf16(qn.get(), 128, 17);
  FillRandomBf16(kn.get(), 128, 18);
  rows.push_back({"split q/k/v + norms + rope [32768, 32+8+8, 128]",
                  TimeMs(
                      [&] {
                        BENCH_CHECK_OK(SplitQkvNormRope(
                            qkv.get(), t, 32, 8, 128, 128, qn.get(), kn.get(), 1e-6f,
                            pos.as<int32_t>(), inv.as<float>(), 1.f, q_pre.get(), q_out.get(),
                            k_out.get(), v_out.get(), nullptr));
                      },
                      o.repeats),
                  0,
                  2.0 * t * 128 * (48 + 32 + 32 + 8 + 8),
                  {}});
  // Sampling over a Qwen-sized vocabulary, batch 8, top-k 50 + top-p 0.9.
  const int vocab = 151936, batch = 8;
  std::vector<float> logits(static_cast<size_t>(vocab) * batch);
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0, 3);
  for (float& l : logits) l = nd(rng);
  DeviceMemory ld(logits.size() * 4), pd(batch * sizeof(SamplingParams)), tok(batch * 4);
  BENCH_CHECK_CUDA(cudaMemcpy(ld.get(), logits.data(), logits.size() * 4, cudaMemcpyHostToDevice));
  for (auto [label, sp] : {std::pair{"greedy", SamplingParams{0.f, 0, 1.f, 1, 0}},
                           std::pair{"top-k 50 top-p 0.9", SamplingParams{0.8f, 50, 0.9f, 1, 0}}}) {
    std::vector<SamplingParams> params(batch, sp);
    BENCH_CHECK_CUDA(cudaMemcpy(pd.get(), params.data(), batch * sizeof(SamplingParams),
                                cudaMemcpyHostToDevice));
    rows.push_back({std::string("sample ") + label + " [8, 151936]",
                    TimeMs(
                        [&] {
                          BENCH_CHECK_OK(Sample(ld.as<float>(), batch, vocab,
                                                pd.as<SamplingParams>(), tok.as<int32_t>(),
                                                nullptr));
                        },
                        o.repeats),
                    0,
                    4.0 * vocab * batch,
                    {}});
  }
}

void BenchGemm(const Options& o, std::vector<Row>& rows, double* measured_tflops) {
  absl::StatusOr<std::unique_ptr<Gemm>> gemm = Gemm::Create();
  BENCH_CHECK_OK(gemm.status());
  // cuBLASLt's first heuristic choice, beside the timed choice Gemm::Create makes by default.
  absl::StatusOr<std::unique_ptr<Gemm>> heuristic =
      Gemm::Create(32 << 20, /*small_batch_kernel=*/true, /*autotune=*/false);
  BENCH_CHECK_OK(heuristic.status());
  struct Case {
    const char* name;
    int64_t m, n, k;
  };
  for (const Case& c :
       {Case{"gemm 8192^3", 8192, 8192, 8192},
        Case{"gemm qwen3-4b up+gate [32768 x 2560] x [19456 x 2560]^T", 32768, 19456, 2560},
        Case{"gemm qwen3-4b qkv [32768 x 2560] x [6144 x 2560]^T", 32768, 6144, 2560},
        Case{"gemm qwen3-4b o [32768 x 4096] x [2560 x 4096]^T", 32768, 2560, 4096},
        Case{"gemm qwen3-4b down [32768 x 9728] x [2560 x 9728]^T", 32768, 2560, 9728},
        Case{"gemv qwen3-4b down [1 x 9728] x [2560 x 9728]^T", 1, 2560, 9728}}) {
    DeviceMemory a(c.m * c.k * 2), b(c.n * c.k * 2), y(c.m * c.n * 2);
    FillRandomBf16(a.get(), c.m * c.k, 10);
    FillRandomBf16(b.get(), c.n * c.k, 11);
    for (Gemm* g : {gemm->get(), heuristic->get()}) {
      if (g == heuristic->get() && c.m < 1024) continue;  // the same algorithm either way
      const double ms = TimeMs(
          [&] {
            BENCH_CHECK_OK(g->Linear(a.get(), b.get(), y.get(), c.m, c.n, c.k,
                                     Gemm::OutputType::kBf16, nullptr));
          },
          o.repeats);
      const double flops = 2.0 * c.m * c.n * c.k;
      rows.push_back({absl::StrCat(c.name, g == gemm->get() ? "" : " (heuristic's first choice)"),
                      ms,
                      flops,
                      2.0 * (c.m * c.k + c.n * c.k + c.m * c.n),
                      {}});
      if (c.m == 8192 && g == gemm->get() && measured_tflops) *measured_tflops = flops / ms / 1e9;
    }
  }
  // Decode-shaped products (Qwen3-4B, batch 1 and 8): a read of W. cuBLASLt and this library's
  // small-batch kernel on the same operands.
  absl::StatusOr<std::unique_ptr<Gemm>> lt = Gemm::Create(32 << 20, /*small_batch_kernel=*/false);
  BENCH_CHECK_OK(lt.status());
  for (int64_t m : {1, 8}) {
    for (const Case& c : {Case{"q_proj", m, 4096, 2560}, Case{"k_proj", m, 1024, 2560},
                          Case{"o_proj", m, 2560, 4096}, Case{"gate_up", m, 19456, 2560},
                          Case{"down", m, 2560, 9728}, Case{"lm_head", m, 151936, 2560}}) {
      DeviceMemory a(c.m * c.k * 2), b(c.n * c.k * 2), y(c.m * c.n * 4);
      FillRandomBf16(a.get(), c.m * c.k, 12);
      FillRandomBf16(b.get(), c.n * c.k, 13);
      for (Gemm* g : {gemm->get(), lt->get()}) {
        const double ms = TimeMs(
            [&] {
              BENCH_CHECK_OK(g->Linear(a.get(), b.get(), y.get(), c.m, c.n, c.k,
                                       Gemm::OutputType::kBf16, nullptr));
            },
            o.repeats);
        rows.push_back({absl::StrCat("gemv m=", c.m, " qwen3-4b ", c.name, " [", c.n, " x ", c.k,
                                     "] ", g == lt->get() ? "cublasLt" : "fluxattn"),
                        ms,
                        2.0 * c.m * c.n * c.k,
                        2.0 * (c.m * c.k + c.n * c.k + c.m * c.n),
                        {}});
      }
    }
  }
}

// One-row products as a decode step runs them: back to back on one stream (the launches
// overlap under programmatic dependent launch), each on another copy of W so that the weights
// come from HBM and not from the 60 MB L2. Every kernel shape, so that ChooseGemvConfig's rule
// can be read off the table; the row named "chosen" is what Gemm::Linear runs.
void BenchGemvShapes(const Options& o, std::vector<Row>& rows) {
  struct Case {
    const char* name;
    int64_t n, k;
  };
  for (const Case& c :
       {Case{"qkv_proj", 6144, 2560}, Case{"q_proj", 4096, 2560}, Case{"o_proj", 2560, 4096},
        Case{"gate_up", 19456, 2560}, Case{"down", 2560, 9728}, Case{"lm_head", 151936, 2560}}) {
    const size_t w_bytes = static_cast<size_t>(c.n * c.k * 2);
    const int copies = static_cast<int>(std::max<size_t>(2, (size_t{512} << 20) / w_bytes + 1));
    const int launches = std::max(copies, 24);
    DeviceMemory x(c.k * 2), w(w_bytes * copies), y(c.n * 4);
    FillRandomBf16(x.get(), c.k, 14);
    FillRandomBf16(w.get(), c.n * c.k * static_cast<int64_t>(copies), 15);
    std::vector<GemvConfig> configs = {GemvConfig{}};
    for (int splits : {1, 2, 4, 8}) {
      for (int loads : {4, 8, 16}) configs.push_back(GemvConfig{splits, loads});
    }
    for (const GemvConfig& g : configs) {
      const double ms = TimeMs(
          [&] {
            for (int i = 0; i < launches; ++i) {
              BENCH_CHECK_OK(SmallBatchLinear(x.get(), w.as<char>() + (i % copies) * w_bytes,
                                              y.get(), 1, c.n, c.k, false, g, nullptr));
            }
          },
          o.repeats);
      const GemvConfig used = g.k_splits == 0 ? ChooseGemvConfig(1, c.n, c.k) : g;
      rows.push_back({absl::StrCat("gemv chain m=1 ", c.name, " [", c.n, " x ", c.k, "] ",
                                   g.k_splits == 0 ? "chosen " : "", "splits=", used.k_splits,
                                   " loads=", used.loads),
                      ms / launches,
                      2.0 * c.n * c.k,
                      2.0 * (c.k + c.n * c.k + c.n),
                      {{"k_splits", used.k_splits}, {"loads", used.loads}}});
    }
  }
}

// Decode-batch products (2..32 rows) as a step runs them: back to back, each on another copy of
// W (the weights come from HBM, not L2). The skinny tensor-core kernel, cuBLASLt, and for up to
// 8 rows the one-warp-per-column kernel, on the same operands; bytes are W's.
void BenchSkinnyShapes(const Options& o, std::vector<Row>& rows) {
  struct Case {
    const char* name;
    int64_t n, k;
  };
  absl::StatusOr<std::unique_ptr<Gemm>> lt = Gemm::Create(32 << 20, /*small_batch_kernel=*/false);
  BENCH_CHECK_OK(lt.status());
  for (int64_t m : {2, 4, 8, 16, 32}) {
    for (const Case& c :
         {Case{"qkv_proj", 6144, 2560}, Case{"o_proj", 2560, 4096}, Case{"gate_up", 19456, 2560},
          Case{"down", 2560, 9728}, Case{"lm_head", 151936, 2560}}) {
      const size_t w_bytes = static_cast<size_t>(c.n * c.k * 2);
      const int copies = static_cast<int>(std::max<size_t>(2, (size_t{512} << 20) / w_bytes + 1));
      const int launches = std::max(copies, 24);
      DeviceMemory x(m * c.k * 2), w(w_bytes * copies), y(m * c.n * 4);
      FillRandomBf16(x.get(), m * c.k, 16);
      FillRandomBf16(w.get(), c.n * c.k * static_cast<int64_t>(copies), 17);
      for (const char* impl : {"skinny", "cublasLt", "gemv"}) {
        const std::string name = impl;
        if (name == "gemv" && m > 8) continue;
        const double ms = TimeMs(
            [&] {
              for (int i = 0; i < launches; ++i) {
                const void* wi = w.as<char>() + (i % copies) * w_bytes;
                if (name == "skinny") {
                  BENCH_CHECK_OK(SkinnyLinear(x.get(), wi, y.get(), m, c.n, c.k, false, nullptr));
                } else if (name == "gemv") {
                  BENCH_CHECK_OK(SmallBatchLinear(x.get(), wi, y.get(), m, c.n, c.k, false,
                                                  GemvConfig{}, nullptr));
                } else {
                  BENCH_CHECK_OK((*lt)->Linear(x.get(), wi, y.get(), m, c.n, c.k,
                                               Gemm::OutputType::kBf16, nullptr));
                }
              }
            },
            o.repeats);
        rows.push_back(
            {absl::StrCat("skinny chain m=", m, " ", c.name, " [", c.n, " x ", c.k, "] ", impl),
             ms / launches,
             2.0 * m * c.n * c.k,
             static_cast<double>(w_bytes),
             {{"m", m}, {"impl", impl}}});
      }
    }
  }
}

double MeasureCopyTbps() {
  const size_t bytes = size_t{2} << 30;
  DeviceMemory a(bytes), b(bytes);
  BENCH_CHECK_CUDA(cudaMemset(a.get(), 1, bytes));
  const double ms = TimeMs(
      [&] { BENCH_CHECK_CUDA(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice)); },
      10);
  return 2.0 * bytes / ms / 1e9;
}

int Main(int argc, char** argv) {
  Options o;
  CLI::App app{"CUDA kernels: attention prefill/decode, model ops, GEMM, sampling."};
  app.add_option("--prefill-lengths", o.prefill_lengths)->delimiter(',');
  app.add_option("--decode-lengths", o.decode_lengths)->delimiter(',');
  app.add_option("--decode-batches", o.decode_batches)->delimiter(',');
  app.add_option("--page-tokens", o.page_tokens, "KV page size (power of two)");
  app.add_option("--repeats", o.repeats, "Timed runs per case (median reported)");
  app.add_option("--json", o.json_path, "Write the rows as JSON to this file");
  app.add_flag("!--no-measure-peaks", o.measure_peaks, "Use the given peaks instead of measuring");
  std::vector<std::string> only;
  app.add_option("--only", only, "Sections: prefill,decode,ops,gemm,gemv,skinny")->delimiter(',');
  CLI11_PARSE(app, argc, argv);
  auto want = [&](const char* s) {
    return only.empty() || std::find(only.begin(), only.end(), s) != only.end();
  };

  cudaDeviceProp prop{};
  BENCH_CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::vector<Row> rows;
  double gemm_tflops = 0;
  if (want("gemm")) BenchGemm(o, rows, &gemm_tflops);
  if (want("gemv")) BenchGemvShapes(o, rows);
  if (want("skinny")) BenchSkinnyShapes(o, rows);
  double copy_tbps = 0;
  if (o.measure_peaks) {
    copy_tbps = MeasureCopyTbps();
    rows.push_back({"device copy 2 GiB (read + write)",
                    2.0 * (size_t{2} << 30) / copy_tbps / 1e9,
                    0,
                    2.0 * (size_t{2} << 30),
                    {}});
  }
  if (want("prefill")) BenchPrefill(o, rows);
  if (want("decode")) BenchDecode(o, rows);
  if (want("ops")) BenchModelOps(o, rows);

  std::printf(
      "device: %s, %d SMs; limits: %.0f TFLOP/s bf16, %.2f TB/s copy (measured here: %.0f, %.2f)\n",
      prop.name, prop.multiProcessorCount, o.peak_tflops, o.peak_tbps, gemm_tflops, copy_tbps);
  std::printf("%-62s %10s %10s %8s %10s %8s\n", "case", "ms", "TFLOP/s", "%peak", "TB/s", "%copy");
  nlohmann::json out = nlohmann::json::array();
  for (const Row& r : rows) {
    const double tflops = r.flops / r.ms / 1e9, tbps = r.bytes / r.ms / 1e9;
    std::printf("%-62s %10.4f %10.1f %7.1f%% %10.3f %7.1f%%\n", r.name.c_str(), r.ms, tflops,
                100 * tflops / o.peak_tflops, tbps, 100 * tbps / o.peak_tbps);
    nlohmann::json j = {{"case", r.name},
                        {"ms", r.ms},
                        {"flops", r.flops},
                        {"bytes", r.bytes},
                        {"tflops", tflops},
                        {"tbps", tbps},
                        {"frac_peak_flops", tflops / o.peak_tflops},
                        {"frac_copy", tbps / o.peak_tbps}};
    if (!r.extra.is_null()) j["params"] = r.extra;
    out.push_back(j);
  }
  if (!o.json_path.empty()) {
    std::ofstream f(o.json_path);
    f << nlohmann::json{{"device", prop.name},
                        {"gemm_8192_tflops", gemm_tflops},
                        {"copy_tbps", copy_tbps},
                        {"rows", out}}
             .dump(2)
      << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace fluxattn::kernels::cuda::bench

int main(int argc, char** argv) { return fluxattn::kernels::cuda::bench::Main(argc, argv); }
