// The model's device kernels on CUDA: bf16 tensors in and out, f32 arithmetic inside. Host-
// callable; device memory as pointers, the stream as `void*` (a cudaStream_t). Every function
// checks its sizes and returns InvalidArgument naming the argument; launch failures come back
// as Internal. Tensors are dense row-major unless a stride is given.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#if defined(__CUDACC__)
#define FLUXATTN_HOST_DEVICE __host__ __device__
#else
#define FLUXATTN_HOST_DEVICE
#endif

namespace fluxattn::kernels::cuda {

// y[r] = x[r] * rsqrt(mean(x[r]^2) + eps) * (weight_offset + weight), rows of `dim`; weight is
// bf16 [dim]. weight_offset is 0 (Llama, Qwen) or 1 (checkpoints that store w - 1). Per-head q/k
// norm is this with rows = tokens * heads and dim = head_dim. y may equal x.
absl::Status RmsNorm(const void* x, const void* weight, void* y, int64_t rows, int32_t dim,
                     float eps, float weight_offset, void* stream);

// residual[r] += x[r] (rounded to bf16, as the model's residual stream is), then
// y[r] = RmsNorm(residual[r]).
absl::Status AddRmsNorm(void* residual, const void* x, const void* weight, void* y, int64_t rows,
                        int32_t dim, float eps, float weight_offset, void* stream);

// The final norm of the last row of each sequence: y[b] = RmsNorm(x[q_indptr[b + 1] - 1]),
// y [num_seqs, dim]; q_indptr is a device array [num_seqs + 1] (sequences must be non-empty).
absl::Status RmsNormLastRows(const void* x, const int32_t* q_indptr, int32_t num_seqs,
                             const void* weight, void* y, int32_t dim, float eps,
                             float weight_offset, void* stream);

// Rotary embedding in place on q [rows, num_q_heads, head_dim] and k [rows, num_kv_heads,
// head_dim] (k may be null), rotate-half convention (Hugging Face): for i < rotary_dim / 2,
// angle = positions[r] * inv_freq[i] (f32), x_i' = (x_i cos - x_{i+r/2} sin) * attention_factor
// and x_{i+r/2}' = (x_{i+r/2} cos + x_i sin) * attention_factor; dims >= rotary_dim are kept.
// inv_freq [rotary_dim / 2] f32 on the device carries every variant's frequencies (llama3,
// linear, YaRN ...); attention_factor is 1 except for YaRN-style scaling.
absl::Status RopeInPlace(void* q, void* k, int64_t rows, int32_t num_q_heads, int32_t num_kv_heads,
                         int32_t head_dim, int32_t rotary_dim, const int32_t* positions,
                         const float* inv_freq, float attention_factor, void* stream);

// The attention inputs of a fused q/k/v projection qkv [rows, (num_q_heads + 2 num_kv_heads) *
// head_dim] (query heads, then key heads, then value heads), in one pass: per query head
// q_pre = RmsNorm(head) with q_norm (the head as is when q_norm is null) and q = RoPE(q_pre);
// per key head k = RoPE(RmsNorm(head) with k_norm); v = the value heads. Norms and rotation as
// RmsNorm and RopeInPlace compute them (the normed values are rounded to bf16 before the
// rotation). head_dim <= 256. Outputs are dense [rows, heads, head_dim].
absl::Status SplitQkvNormRope(const void* qkv, int64_t rows, int32_t num_q_heads,
                              int32_t num_kv_heads, int32_t head_dim, int32_t rotary_dim,
                              const void* q_norm, const void* k_norm, float eps,
                              const int32_t* positions, const float* inv_freq,
                              float attention_factor, void* q_pre, void* q, void* k, void* v,
                              void* stream);

// out[r, c] = silu(gate[r, c]) * up[r, c]; gate and up rows are `in_row_stride` elements apart
// (2 * cols when they are the halves of one fused projection), out is [rows, cols].
absl::Status SwiGlu(const void* gate, const void* up, int64_t in_row_stride, void* out,
                    int64_t rows, int32_t cols, void* stream);

// out[t] = table[ids[t]] (table [vocab, hidden] bf16). An id outside [0, vocab) gives a zero row
// and sets *maybe_error_flag (device int32, if given) to 1, so the engine can report it after
// the step without a check in the hot path.
absl::Status EmbeddingGather(const int32_t* ids, int64_t num_ids, const void* table, int64_t vocab,
                             int32_t hidden, void* out, int32_t* maybe_error_flag, void* stream);

// y = a + b, element-wise over n bf16 values (y may alias a or b).
absl::Status Add(const void* a, const void* b, void* y, int64_t n, void* stream);

// y[r, c] += bias[c] for rows of `cols` bf16 values, rows `row_stride` elements apart.
absl::Status AddBias(void* y, const void* bias, int64_t rows, int32_t cols, int64_t row_stride,
                     void* stream);

// dst[r, c] = src[r, c] for c < min(src_cols, dst_cols), 0 for src_cols <= c < dst_cols: pads
// rows with zero columns (heads to a kernel's head dimension) or keeps their leading columns.
absl::Status CopyColumns(const void* src, int64_t rows, int32_t src_cols, void* dst,
                         int32_t dst_cols, void* stream);

// y[i] = float(x[i]) over n bf16 values.
absl::Status Bf16ToF32(const void* x, float* y, int64_t n, void* stream);

// The row kernels above for one stored type: bf16 (the functions above), or float32 (every
// tensor, weights included, f32 and nothing rounded between steps: the residual add, the normed
// q/k heads), the same kernels instantiated for float, with the same signatures, meaning and size
// requirements. For the model's compute dtype.
struct RowKernels {
  decltype(&RmsNorm) rms_norm;
  decltype(&AddRmsNorm) add_rms_norm;
  decltype(&RmsNormLastRows) rms_norm_last_rows;
  decltype(&SplitQkvNormRope) split_qkv_norm_rope;
  decltype(&SwiGlu) swiglu;
  decltype(&EmbeddingGather) embedding_gather;
  decltype(&Add) add;
  decltype(&AddBias) add_bias;
  decltype(&CopyColumns) copy_columns;
};
// The float32 kernels (f32) or the bf16 ones.
const RowKernels& RowKernelsFor(bool f32);

// The flux router's pooling (pooling_mode ctx_q) for every sequence of a varlen batch: with
// n = min(pool_size, T_b), pooled[b] = mean over heads of (sum of rows [0, n) + sum of rows
// [T_b - n, T_b)) / (2 n) (a row in both halves counts twice). q [sum_T, num_heads, head_dim]
// bf16, q_indptr device [num_seqs + 1], pooled [num_seqs, head_dim] f32.
// head_dim at most kRouterPoolMaxHeadDim. `scratch`: device memory of RouterPoolScratchBytes
// (partial sums, added in a fixed order, so that results do not vary between runs).
inline constexpr int32_t kRouterPoolMaxHeadDim = 128;
size_t RouterPoolScratchBytes(int32_t num_seqs, int32_t head_dim);
absl::Status RouterPool(const void* q, const int32_t* q_indptr, int32_t num_seqs, int32_t num_heads,
                        int32_t head_dim, int32_t pool_size, float* pooled, float* scratch,
                        void* stream);
// The same for sequences whose rows are not contiguous: sequence b's rows are
// [row_ranges[2 b], row_ranges[2 b + 1]) (device int32 [num_seqs, 2]).
absl::Status RouterPoolRows(const void* q, const int32_t* row_ranges, int32_t num_seqs,
                            int32_t num_heads, int32_t head_dim, int32_t pool_size, float* pooled,
                            float* scratch, void* stream);

// One linear layer of a router network for a batch of rows, in f32: y[b, o] = sum_i W[o, i]
// x[b, i] + bias[o], then SiLU (y / (1 + e^-y)) when `silu`. x [batch, in], W [out, in]
// row-major, bias [out], y [batch, out]; all device f32.
absl::Status RouterLinear(const float* x, int32_t batch, const float* weight, const float* bias,
                          int32_t in, int32_t out, bool silu, float* y, void* stream);

// y = x W^T through cuBLASLt: x [m, k] bf16, W [n, k] bf16 (row-major, as stored in the
// checkpoint), y [m, n] bf16 or f32 (logits), f32 accumulation; or, with kF32Inputs, x, W and y
// all f32 and the product in full f32 (no TF32), for the model's f32 compute.
class Gemm {
 public:
  enum class OutputType { kBf16, kF32, kF32Inputs };
  // Creates a cuBLASLt handle and a device workspace of `workspace_bytes`. With
  // `small_batch_kernel`, decode-shaped products run on this library's kernels instead of
  // cuBLASLt: with FLUXATTN_CUDA_SKINNY=1, 2..32 rows with k % 32 == 0 on the skinny
  // tensor-core kernel (SkinnyLinear), and one row, or up to 8 rows on weights of at most
  // 4M elements, on the one-warp-per-column bandwidth kernel (bf16 x and W with
  // k % 8 == 0 and 16-byte aligned rows). With `autotune`, products of 1024 rows and more take
  // the fastest of cuBLASLt's candidate algorithms, timed once per shape and power-of-two row
  // bucket on the first call's operands (that call waits for its timings); otherwise cuBLASLt's
  // first heuristic choice.
  static absl::StatusOr<std::unique_ptr<Gemm>> Create(size_t workspace_bytes = 32 << 20,
                                                      bool small_batch_kernel = true,
                                                      bool autotune = true);
  virtual ~Gemm() = default;
  virtual absl::Status Linear(const void* x, const void* w, void* y, int64_t m, int64_t n,
                              int64_t k, OutputType out_type, void* stream) = 0;
};

// Gemm::Create's `autotune` for the model from FLUXATTN_CUDA_GEMM_TUNE: "1" true, unset or "0"
// false (the default: it measured no gain end to end), anything else an error naming the
// variable.
absl::StatusOr<bool> GemmAutotuneFromEnvironment();

// The small-batch kernel's shape for a product of m rows: k_splits warps share each output
// column (1, 2, 4 or 8) and every lane keeps `loads` 16-byte loads of W in flight (4, 8 or 16;
// one row only, more rows use {1, 4}). {0, 0} asks for the library's choice.
struct GemvConfig {
  int k_splits = 0;
  int loads = 0;
};
// The library's choice for m x [n, k] (FLUXATTN_CUDA_GEMV="SxU" in the environment overrides it
// for one-row products, for benchmarks' A/B).
GemvConfig ChooseGemvConfig(int64_t m, int64_t n, int64_t k);
// y = x W^T on the small-batch kernel with an explicit shape (m in 1..8, k % 8 == 0, 16-byte
// aligned x and W): what Gemm::Linear runs for decode-shaped products, for benchmarks and tests.
absl::Status SmallBatchLinear(const void* x, const void* w, void* y, int64_t m, int64_t n,
                              int64_t k, bool f32_out, GemvConfig config, void* stream);
// y = x W^T on the skinny tensor-core kernel (m in 1..32, k % 32 == 0, 16-byte aligned x and
// W): what Gemm::Linear runs for 2..32 rows (decode batches), for benchmarks and tests. W is
// read once from HBM; the columns' partial sums over k are added in a fixed order.
absl::Status SkinnyLinear(const void* x, const void* w, void* y, int64_t m, int64_t n, int64_t k,
                          bool f32_out, void* stream);

// GPU time per operation of forward passes (FLUXATTN_CUDA_PROFILE=1): Begin(pass), Mark(op)
// after each operation, End() waits for the pass and adds its times to the pass's totals.
class OpProfile {
 public:
  static bool EnabledByEnvironment();
  OpProfile() = default;
  OpProfile(const OpProfile&) = delete;
  OpProfile& operator=(const OpProfile&) = delete;
  ~OpProfile();
  void Begin(const char* pass, void* stream);
  void Mark(const char* what, void* stream);
  void End();
  // The profile between Begin and End on this thread (null outside), for marks of the
  // operations that run inside one of the model's (attention's tables, KV append, kernels).
  static OpProfile* Active();
  static void MarkActive(const char* what, void* stream) {
    if (OpProfile* p = Active()) p->Mark(what, stream);
  }
  // Per pass kind: passes, ms per pass, and each operation's share, largest first.
  std::string Report() const;

 private:
  struct Totals {
    int passes = 0;
    std::map<std::string, double> ms;
    std::map<std::string, int> count;
  };
  std::vector<void*> events_;
  size_t used_ = 0;
  std::vector<const char*> names_;
  const char* pass_ = "";
  std::map<std::string, Totals> totals_;
};

// Sampling on the device, one request per row of logits [num_seqs, vocab] f32.
struct SamplingParams {
  float temperature = 0.f;  // <= 0: greedy (argmax, lowest id among equal maxima)
  int32_t top_k = 0;        // <= 0: off; keeps every token whose logit ties the k-th largest
  float top_p = 1.f;        // >= 1: off; keeps the smallest set of most likely tokens with mass
                            // >= top_p of the (top-k) kept mass, ties at the edge included
  uint64_t seed = 0;        // the request's seed
  uint64_t step = 0;        // the request's decode step: one uniform draw per (seed, step)
};

// params: device array [num_seqs]; tokens: device int32 [num_seqs]. The draw u in [0, 1) picks
// the first token, in id order, whose running sum of kept probabilities reaches u * kept mass.
absl::Status Sample(const float* logits, int32_t num_seqs, int32_t vocab,
                    const SamplingParams* params, int32_t* tokens, void* stream);

// The per-(seed, step) uniform draw in [0, 1) that Sample uses (a counter-based hash, the same
// on host and device), exposed so that tests and the CPU path can reproduce a choice.
FLUXATTN_HOST_DEVICE inline double SamplingUniform(uint64_t seed, uint64_t step) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + step * 0xD1B54A32D192ED03ull + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * (1.0 / 9007199254740992.0);
}

}  // namespace fluxattn::kernels::cuda
