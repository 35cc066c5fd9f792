// The interface every attention plugin implements (ABI 2). The engine calls attention ONCE PER
// LAYER for the whole batch: an AttentionBatch holds every sequence of that layer routed to this
// backend (prefill chunks and decode rows mixed, each with its own positions, page table and
// state). Work is split in two:
//   Plan  writes the backend's block-sparse layout for each sequence of the batch into a
//         caller-owned PlannedLayout (the engine reuses it across layers and steps). Most
//         strategies only implement BuildLayout (one sequence, from shapes or from data).
//   Run   computes the output. The default runs the core block-sparse kernel of the batch's
//         device, so a strategy is a layout builder, not a kernel; sequences of several
//         backends of one layer that all use the default Run share ONE kernel launch.
// Every struct here starts with struct_size and only grows at its end.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "fluxattn/block_sparse_layout.h"
#include "fluxattn/device.h"
#include "fluxattn/kv_cache.h"
#include "fluxattn/tensor.h"
#include "fluxattn/tensor_view.h"

namespace fluxattn {

enum class AttentionPhase : uint8_t { kPrefill = 0, kDecode = 1 };

const char* AttentionPhaseName(AttentionPhase phase);  // "prefill" / "decode"

// What a backend declares for listings (`fluxattn plugins`) and for the default Supports().
struct AttentionCapabilities {
  std::vector<DeviceType> devices{DeviceType::kCpu};
  std::vector<DType> dtypes{DType::kF32};
  std::vector<int> head_dims;  // empty: any head dimension
  bool prefill = true;
  bool decode = true;
  // Whether the layout depends on the query/key values (XAttention, Quest) or only on shapes.
  bool data_dependent_layout = false;
  // Whether the backend overrides Run with its own kernel (then it gets its own launch).
  bool custom_run = false;
};

// What a strategy that only builds layouts from shapes declares: it runs wherever a core kernel
// does (float32 on the CPU, bfloat16 on CUDA), both phases, the default Run.
inline AttentionCapabilities ShapeLayoutCapabilities() {
  AttentionCapabilities caps;
  caps.devices = {DeviceType::kCpu, DeviceType::kCuda};
  caps.dtypes = {DType::kF32, DType::kBF16};
  return caps;
}

// One kind of problem the engine may hand a backend; Supports() answers per kind.
struct ProblemDesc {
  uint32_t struct_size = sizeof(ProblemDesc);
  DeviceType device = DeviceType::kCpu;
  DType dtype = DType::kF32;
  int32_t head_dim = 0;
  int32_t num_q_heads = 0;
  int32_t num_kv_heads = 0;
  AttentionPhase phase = AttentionPhase::kPrefill;
};

// Per-(request, layer) state a backend keeps between calls (e.g. Quest's per-page key bounds).
// Created by the backend, owned by the engine, destroyed before the backend.
class AttentionState {
 public:
  virtual ~AttentionState() = default;
};

// One sequence of a layer batch.
//
// Numbering: query row r of the sequence (0-based) is at absolute position q_pos0 + r; query
// tiles of a layout count from the sequence's first row; KV blocks are absolute (block b covers
// positions [b*B, (b+1)*B)). A decode step is one query at its position; a prefill chunk may start
// at any position (not only on a block boundary). kv.length >= q_pos0 + num_queries: the chunk's
// own keys are in the cache (on a GPU from the run after Plan on; see k_new).
struct AttentionProblem {
  uint32_t struct_size = sizeof(AttentionProblem);
  int num_q_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  float scale = 0.0f;  // softmax scale, usually 1/sqrt(head_dim)
  AttentionPhase phase = AttentionPhase::kPrefill;
  int64_t q_pos0 = 0;       // absolute position of query row 0
  int64_t num_queries = 0;  // rows of this sequence
  int64_t q_row0 = 0;       // first row of this sequence in AttentionBatch::q / ::out
  TensorView q;             // [num_queries, num_q_heads, head_dim], RoPE applied
  KvView kv;                // this sequence's page table over the pool
  DeviceType device = DeviceType::kCpu;
  DType dtype = DType::kF32;
  int layer = 0;
  uint64_t request_id = 0;
  AttentionState* state = nullptr;  // from CreateState, may be null
  // The new rows' keys and values, [num_queries, num_kv_heads, head_dim] like q (empty where the
  // caller has none). On the CPU they are in `kv` already when Plan runs; on a GPU the run after
  // Plan writes them into the pool, so a data-dependent plan that reads the chunk's own keys
  // (XAttention's prefill) reads them here.
  TensorView k_new;
  TensorView v_new;

  // Host float32 queries (CPU f32 problems), else null.
  const float* host_q() const { return q.is_host_f32() ? q.as<const float>() : nullptr; }
};

// One layer's attention work for the sequences routed to one backend (or, for the shared
// launch, to several).
struct AttentionBatch {
  uint32_t struct_size = sizeof(AttentionBatch);
  int32_t layer = 0;
  int32_t num_q_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  float scale = 0.0f;
  DeviceType device = DeviceType::kCpu;
  DType dtype = DType::kF32;
  std::span<const AttentionProblem> seqs;
  TensorView q;    // [rows, num_q_heads, head_dim] of the whole layer batch (seqs index into it)
  TensorView out;  // same shape as q
  KvPoolView kv;
  Stream* stream = nullptr;  // where device work is queued (null: the device's default)
};

// The plan of one layer batch: one layout per sequence of AttentionBatch::seqs, in order.
// Owned by the caller and reused (its vectors keep their capacity).
struct PlannedLayout {
  std::vector<BlockSparseLayout> layouts;
};

// Scratch memory the core kernels reuse across calls (split-KV partials, ...). Caller-owned.
struct AttentionWorkspace {
  std::vector<float> partial_acc;
  std::vector<float> partial_m;
  std::vector<float> partial_l;
};

class AttentionBackend {
 public:
  virtual ~AttentionBackend() = default;

  virtual AttentionCapabilities capabilities() const = 0;

  // OK when the backend runs problems of this kind; otherwise the reason (the engine then falls
  // back and writes it into the trace). Default: from capabilities().
  virtual absl::Status Supports(const ProblemDesc& problem) const;

  // KV that decode queries at positions >= next_query_pos will still read. Called after the
  // prompt's last chunk and after every decode step, on the backend that serves the layer's
  // decode (a prompt with chunks to come keeps all of its KV); the engine releases the rest.
  // Default: everything.
  virtual KvRetention RetainedKv(int64_t next_query_pos) const;

  // New per-(request, layer) state; default none.
  virtual std::unique_ptr<AttentionState> CreateState(int num_q_heads, int num_kv_heads,
                                                      int head_dim) const;

  // The layout of one sequence. May read problem.q and problem.kv (data-dependent strategies).
  virtual absl::Status BuildLayout(const AttentionProblem& problem, BlockSparseLayout* layout) = 0;

  // Writes plan->layouts[i] for every batch.seqs[i]. Default: BuildLayout per sequence.
  virtual absl::Status Plan(const AttentionBatch& batch, PlannedLayout* plan);

  // Writes batch.out rows of every sequence. Default: the core block-sparse kernel of
  // batch.device over `plan`.
  virtual absl::Status Run(const AttentionBatch& batch, const PlannedLayout& plan,
                           AttentionWorkspace* workspace);
};

// The core block-sparse attention kernel on the CPU (tiled online softmax, float32, GQA) over a
// whole batch: one parallel launch over every (sequence, query block, KV head).
absl::Status RunBlockSparseAttentionCpu(const AttentionBatch& batch, const PlannedLayout& plan,
                                        AttentionWorkspace* workspace);

// The core kernel of the batch's device.
absl::Status RunBlockSparseAttention(const AttentionBatch& batch, const PlannedLayout& plan,
                                     AttentionWorkspace* workspace);

// The CPU kernel on one sequence and one given layout (host f32 queries, out[num_queries,
// num_q_heads, head_dim]).
absl::Status RunLayoutCpu(const AttentionProblem& problem, const BlockSparseLayout& layout,
                          float* out);

// Convenience for tests and single-sequence callers: plans and runs one problem, writing
// out[num_queries, num_q_heads, head_dim] (host f32).
absl::Status RunSingleProblem(AttentionBackend& backend, const AttentionProblem& problem,
                              float* out);

}  // namespace fluxattn
