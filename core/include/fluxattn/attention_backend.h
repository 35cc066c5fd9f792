// The interface every attention plugin implements. A backend turns one attention problem (the
// queries of one request at one layer, against that layer's KV cache) into outputs. Most
// backends only build a BlockSparseLayout and let the core kernel run it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "fluxattn/block_sparse_layout.h"
#include "fluxattn/device.h"
#include "fluxattn/kv_cache.h"
#include "fluxattn/tensor.h"

namespace fluxattn {

enum class AttentionPhase : uint8_t { kPrefill = 0, kDecode = 1 };

struct AttentionCapabilities {
  std::vector<DeviceType> devices{DeviceType::kCpu};
  std::vector<DType> dtypes{DType::kF32};
  std::vector<int> head_dims;  // empty: any head dimension
  bool prefill = true;
  bool decode = true;
  // Whether the layout depends on the query/key values (XAttention, Quest) or only on shapes.
  bool data_dependent_layout = false;
};

// Per-(request, layer) state a backend keeps between calls (e.g. Quest's per-page key bounds).
// Created by the backend, owned by the engine, destroyed before the backend.
class AttentionState {
 public:
  virtual ~AttentionState() = default;
};

struct AttentionProblem {
  int num_q_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  float scale = 0.0f;  // softmax scale, usually 1/sqrt(head_dim)
  AttentionPhase phase = AttentionPhase::kPrefill;
  int64_t q_pos0 = 0;        // absolute position of query row 0
  int64_t num_queries = 0;
  const float* q = nullptr;  // [num_queries, num_q_heads, head_dim] on `device`
  KvView kv;                 // kv.length >= q_pos0 + num_queries
  DeviceType device = DeviceType::kCpu;
  int layer = 0;
  uint64_t request_id = 0;
  AttentionState* state = nullptr;  // from CreateState, may be null
};

class AttentionBackend {
 public:
  virtual ~AttentionBackend() = default;

  virtual AttentionCapabilities capabilities() const = 0;

  // KV that queries at positions >= next_query_pos will still read. The engine releases the
  // rest for layers routed to this backend. Default: everything.
  virtual KvRetention RetainedKv(int64_t next_query_pos) const;

  // New per-(request, layer) state; default none.
  virtual std::unique_ptr<AttentionState> CreateState(int num_q_heads, int num_kv_heads,
                                                      int head_dim) const;

  // The layout for `problem`. May read problem.q and problem.kv (data-dependent strategies).
  virtual absl::Status BuildLayout(const AttentionProblem& problem,
                                   BlockSparseLayout* layout) = 0;

  // Writes out[num_queries, num_q_heads, head_dim]. Default: BuildLayout, then the core
  // block-sparse kernel of problem.device.
  virtual absl::Status Forward(const AttentionProblem& problem, float* out);
};

// The core block-sparse attention kernel on the CPU (tiled online softmax, float32, GQA).
absl::Status RunBlockSparseAttentionCpu(const AttentionProblem& problem,
                                        const BlockSparseLayout& layout, float* out);

}  // namespace fluxattn
