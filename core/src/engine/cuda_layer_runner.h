// The engine's attention on a CUDA device, for one layer of the batch: new K/V rows into the
// page pool through each sequence's page table, then the core block-sparse kernels
// (fluxattn/kernels/cuda_attention.h) over the backends' layouts. Every per-layer table (page
// tables, query offsets, the layouts' CSR) goes to the device in ONE copy.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fluxattn/attention_backend.h"
#include "fluxattn/device.h"

namespace fluxattn {

class CudaLayerRunner {
 public:
  // An error when the core was built without CUDA. `dense_prefill` picks the kernel of dense
  // causal prefill ([attention] dense_prefill): "auto" (cuDNN where the build has it and the
  // library loads, else the library's own kernel), "cudnn" (an error without it) or "fluxattn".
  static absl::StatusOr<std::unique_ptr<CudaLayerRunner>> Create(
      Device* device, const std::string& dense_prefill = "auto");
  virtual ~CudaLayerRunner() = default;

  // Writes the rows of `k` and `v` ([rows, num_kv_heads, head_dim] on the device, bf16 or f32 as
  // the batch and the pool) of every sequence into its pages (problems[i].kv already counts them:
  // kv.length = q_pos0 + num_queries), then the attention of every sequence into batch.out.
  // layouts[i] belongs to batch.seqs[i]; sequences whose layout is dense causal use the kernels'
  // dense path when all of them are.
  virtual absl::Status Run(const AttentionBatch& batch, const TensorView& k, const TensorView& v,
                           std::span<const BlockSparseLayout> layouts) = 0;

  // Asks now for the scratch of layer batches of up to `max_rows` rows over `max_seqs`
  // sequences (the kernels' workspace, and the padded heads where the model's head_dim
  // `model_head_dim` is below the pool's `pool_head_dim`), in `dtype` elements. The per-layer
  // tables, which grow with the context, are not included.
  virtual absl::Status ReserveScratch(int64_t max_rows, int32_t max_seqs, int num_q_heads,
                                      int num_kv_heads, int model_head_dim, int pool_head_dim,
                                      DType dtype) = 0;

  // The kernel dense causal prefill runs on, and why: "cudnn (cuDNN 9.19.0 (frontend 1.32.0))"
  // or "fluxattn (...)".
  virtual std::string dense_prefill_kernel() const = 0;
};

// Whether `layout` lists every causal pair (each row reads every block up to its last query's
// position, whole blocks only): what the kernels compute without a layout.
bool IsDenseCausal(const BlockSparseLayout& layout);

}  // namespace fluxattn
