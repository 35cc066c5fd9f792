#include "engine/cuda_layer_runner.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "fluxattn/status.h"

#if defined(FLUXATTN_WITH_CUDA)
#include <cuda_runtime_api.h>

#include "cudnn/cudnn_attention.h"
#include "fluxattn/kernels/cuda_attention.h"
#include "fluxattn/kernels/cuda_model_ops.h"
#endif

namespace fluxattn {

bool IsDenseCausal(const BlockSparseLayout& layout) {
  if (!layout.masks.empty()) return false;
  const int64_t qb_count = layout.num_q_blocks();
  for (int64_t qb = 0; qb < qb_count; ++qb) {
    const int64_t last_row = std::min((qb + 1) * layout.q_block_tokens, layout.num_queries) - 1;
    const int64_t last_pos = std::min(layout.q_pos0 + last_row, layout.kv_length - 1);
    const int64_t blocks = last_pos / layout.kv_block_tokens + 1;
    for (int h = 0; h < layout.num_layout_heads; ++h) {
      const int64_t r = qb * layout.num_layout_heads + h;
      const int64_t begin = layout.row_begin[r], end = layout.row_begin[r + 1];
      if (end - begin != blocks) return false;
      for (int64_t e = begin; e < end; ++e) {
        if (layout.kv_block[e] != e - begin || layout.mask_index[e] != -1) return false;
      }
    }
  }
  return true;
}

#if !defined(FLUXATTN_WITH_CUDA)

absl::StatusOr<std::unique_ptr<CudaLayerRunner>> CudaLayerRunner::Create(Device*,
                                                                         const std::string&) {
  return absl::FailedPreconditionError("attention on cuda: this build has no CUDA");
}

#else

namespace {

namespace kc = ::fluxattn::kernels::cuda;

// Page-locked host memory handed out in order and reused from the start when full (after the
// stream has drained, so that no queued copy still reads it). Copies from it return at once,
// so the host can queue the next layer while the GPU runs this one; from pageable memory a copy
// may wait for the stream.
class PinnedArena {
 public:
  ~PinnedArena() {
    if (base_ != nullptr) cudaFreeHost(base_);
  }
  absl::StatusOr<void*> Take(size_t bytes, Stream* stream) {
    bytes = (bytes + 255) / 256 * 256;
    if (used_ + bytes > capacity_) {
      FLUXATTN_RETURN_IF_ERROR(stream->Synchronize());
      used_ = 0;
      if (bytes > capacity_) {
        if (base_ != nullptr) cudaFreeHost(base_);
        base_ = nullptr;
        capacity_ = std::max<size_t>(bytes, size_t{8} << 20);
        const cudaError_t e = cudaMallocHost(&base_, capacity_);
        if (e != cudaSuccess) {
          base_ = nullptr;
          capacity_ = 0;
          return absl::ResourceExhaustedError(
              absl::StrCat("attention on cuda: cudaMallocHost(", bytes,
                           " bytes): expected success, found ", cudaGetErrorString(e)));
        }
      }
    }
    void* p = static_cast<char*>(base_) + used_;
    used_ += bytes;
    return p;
  }

 private:
  void* base_ = nullptr;
  size_t capacity_ = 0;
  size_t used_ = 0;
};

class Runner : public CudaLayerRunner {
 public:
  explicit Runner(Device* device)
      : device_(device),
        tables_(device),
        workspace_(device),
        q_pad_(device),
        k_pad_(device),
        v_pad_(device),
        out_pad_(device) {}

  absl::Status Run(const AttentionBatch& batch, const TensorView& k, const TensorView& v,
                   std::span<const BlockSparseLayout> layouts) override;
  absl::Status ReserveScratch(int64_t max_rows, int32_t max_seqs, int num_q_heads, int num_kv_heads,
                              int model_head_dim, int pool_head_dim, DType dtype) override;

  std::string dense_prefill_kernel() const override {
    if (cudnn_ != nullptr) {
      return absl::StrCat(
          "cudnn (", cudnn_->version(), ")",
          cudnn_fallback_.empty() ? "" : "; fluxattn where cuDNN refused: ", cudnn_fallback_);
    }
    return absl::StrCat("fluxattn (", cudnn_note_, ")");
  }

  // Sets up cuDNN for "auto" or "cudnn"; an error only when "cudnn" cannot have it.
  absl::Status InitDensePrefill(const std::string& choice);

 private:
  absl::Status RunGroups(const AttentionBatch& batch, const TensorView& k, const TensorView& v,
                         std::span<const BlockSparseLayout> layouts, std::span<const int> order,
                         bool one_launch);
  // One launch over the sequences `seqs` (indices into batch.seqs, consecutive in row order).
  absl::Status RunGroup(const AttentionBatch& batch, const TensorView& k, const TensorView& v,
                        std::span<const BlockSparseLayout> layouts, std::span<const int> seqs);

  Device* device_;
  DeviceBuffer tables_;
  DeviceBuffer workspace_;
  // Heads padded with zeros to the kernels' head dimension (models with other head dims).
  DeviceBuffer q_pad_, k_pad_, v_pad_, out_pad_;
  std::vector<int32_t> host_;
  std::vector<uint8_t> dense_;       // per sequence of the layer: its layout is dense causal
  std::vector<int64_t> row_tokens_;  // decode: keys read per (sequence, KV head)
  PinnedArena pinned_;
  std::vector<int32_t> host_q_indptr_, host_q_pos0_;
  // cuDNN's fused attention for dense causal prefill (null: the library's own kernel, for the
  // reason in cudnn_note_).
  std::unique_ptr<cudnn::Attention> cudnn_;
  std::string cudnn_note_;
  std::string cudnn_fallback_;  // the first shape cuDNN refused (then run on the own kernel)
  bool cudnn_required_ = false;
};

absl::Status Runner::InitDensePrefill(const std::string& choice) {
  if (choice != "auto" && choice != "cudnn" && choice != "fluxattn") {
    return InvalidInput("attention.dense_prefill", "one of \"auto\", \"cudnn\", \"fluxattn\"",
                        absl::StrCat("\"", choice, "\""));
  }
  if (choice == "fluxattn") {
    cudnn_note_ = "chosen by [attention] dense_prefill";
    return absl::OkStatus();
  }
  cudnn_required_ = choice == "cudnn";
#if defined(FLUXATTN_WITH_CUDNN)
  absl::StatusOr<std::unique_ptr<cudnn::Attention>> made = cudnn::Attention::Create(device_);
  if (made.ok()) {
    cudnn_ = *std::move(made);
    return absl::OkStatus();
  }
  cudnn_note_ = std::string(made.status().message());
#else
  cudnn_note_ = "this build has no cuDNN";
#endif
  if (cudnn_required_) {
    return absl::FailedPreconditionError(
        absl::StrCat("attention.dense_prefill = \"cudnn\": ", cudnn_note_));
  }
  return absl::OkStatus();
}

absl::Status Runner::ReserveScratch(int64_t max_rows, int32_t max_seqs, int num_q_heads,
                                    int num_kv_heads, int model_head_dim, int pool_head_dim,
                                    DType dtype) {
  if (max_rows < 1 || max_seqs < 1 || num_q_heads < 1 || num_kv_heads < 1 ||
      model_head_dim > pool_head_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attention on cuda: reserve rows / sequences / heads / head dims: expected positive, "
        "model head_dim <= pool head_dim, found ",
        max_rows, " / ", max_seqs, " / ", num_q_heads, "+", num_kv_heads, " / ", model_head_dim,
        " <= ", pool_head_dim));
  }
  kc::AttentionShape shape;
  shape.num_q_heads = num_q_heads;
  shape.num_kv_heads = num_kv_heads;
  shape.head_dim = pool_head_dim;
  // The workspace is shared by prefill (its tile list) and decode (split partials, whose split
  // count depends on the batch: the largest over every batch size up to max_seqs).
  size_t bytes = kc::PrefillWorkspaceBytes(max_rows, max_seqs);
  for (int32_t b = 1; b <= max_seqs; ++b) {
    const int32_t splits = kc::MaxDecodeSplits(b, num_kv_heads);
    bytes = std::max(bytes, kc::DecodeWorkspaceBytes(b, shape, splits));
  }
  FLUXATTN_RETURN_IF_ERROR(workspace_.Ensure(bytes).status());
  if (model_head_dim != pool_head_dim) {
    const size_t elem = DTypeSize(dtype);
    const size_t q_bytes = static_cast<size_t>(max_rows) * num_q_heads * pool_head_dim * elem;
    const size_t kv_bytes = static_cast<size_t>(max_rows) * num_kv_heads * pool_head_dim * elem;
    FLUXATTN_RETURN_IF_ERROR(q_pad_.Ensure(q_bytes).status());
    FLUXATTN_RETURN_IF_ERROR(out_pad_.Ensure(q_bytes).status());
    FLUXATTN_RETURN_IF_ERROR(k_pad_.Ensure(kv_bytes).status());
    FLUXATTN_RETURN_IF_ERROR(v_pad_.Ensure(kv_bytes).status());
  }
  return absl::OkStatus();
}

// Appends `n` int32 slots to `buf` and returns the offset of the first.
size_t Reserve(std::vector<int32_t>& buf, size_t n) {
  const size_t at = buf.size();
  buf.resize(at + n);
  return at;
}

absl::Status Runner::Run(const AttentionBatch& batch, const TensorView& k, const TensorView& v,
                         std::span<const BlockSparseLayout> layouts) {
  const size_t n = batch.seqs.size();
  if (layouts.size() != n) {
    return absl::InternalError(
        absl::StrCat("attention on cuda: ", layouts.size(), " layouts for ", n, " sequences"));
  }
  if (n == 0) return absl::OkStatus();
  // bf16 runs on the tensor-core kernels; f32 on the float32 kernel (reference precision).
  const bool f32 = batch.dtype == DType::kF32 && batch.q.dtype == DType::kF32;
  if (!f32 && (batch.dtype != DType::kBF16 || batch.q.dtype != DType::kBF16)) {
    return InvalidInput(
        "attention on cuda: dtype", "bf16 or f32 (queries and batch alike)",
        absl::StrCat(DTypeName(batch.dtype), " batch, ", DTypeName(batch.q.dtype), " queries"));
  }
  const DType pool_dtype = f32 ? DType::kF32 : DType::kBF16;
  if (batch.kv.k.dtype != pool_dtype || batch.kv.v.dtype != pool_dtype) {
    return InvalidInput("attention on cuda: KV pool dtype", DTypeName(pool_dtype),
                        DTypeName(batch.kv.k.dtype));
  }
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](int a, int b) { return batch.seqs[a].q_row0 < batch.seqs[b].q_row0; });
  int64_t next_row = batch.seqs[order[0]].q_row0;
  for (int i : order) {
    if (batch.seqs[i].q_row0 != next_row) {
      return absl::InternalError("attention on cuda: the sequences' rows are not consecutive");
    }
    next_row += batch.seqs[i].num_queries;
  }
  bool all_dense = true;
  bool uniform = true;
  dense_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const BlockSparseLayout& a = layouts[i];
    const BlockSparseLayout& b = layouts[0];
    if (a.q_block_tokens % 64 != 0 || a.kv_block_tokens % 64 != 0) {
      return InvalidInput(
          absl::StrCat("attention on cuda, layer ", batch.layer, ": layout block sizes"),
          "multiples of 64 (the kernels' tile)",
          absl::StrCat(a.q_block_tokens, " x ", a.kv_block_tokens));
    }
    dense_[i] = IsDenseCausal(a);  // once per layer: RunGroup reads it
    all_dense = all_dense && dense_[i];
    uniform = uniform && a.q_block_tokens == b.q_block_tokens &&
              a.kv_block_tokens == b.kv_block_tokens && a.num_layout_heads == b.num_layout_heads;
  }
  const int32_t d = batch.head_dim, dp = batch.kv.head_dim;
  if (dp != d) {
    // The pool holds heads of the kernels' dimension: queries, keys and values are padded with
    // zero columns (which add nothing to q.k) and the output keeps its first d columns.
    if (dp < d) {
      return absl::InternalError(
          absl::StrCat("attention on cuda: pool head_dim ", dp, " below the model's ", d));
    }
    const int64_t rows = batch.q.shape[0];
    const size_t bf = DTypeSize(pool_dtype);
    const auto copy_columns = kc::RowKernelsFor(f32).copy_columns;
    const int64_t q_heads = rows * batch.num_q_heads, kv_heads = rows * batch.num_kv_heads;
    FLUXATTN_ASSIGN_OR_RETURN(void* qp, q_pad_.Ensure(q_heads * dp * bf));
    FLUXATTN_ASSIGN_OR_RETURN(void* kp, k_pad_.Ensure(kv_heads * dp * bf));
    FLUXATTN_ASSIGN_OR_RETURN(void* vp, v_pad_.Ensure(kv_heads * dp * bf));
    FLUXATTN_ASSIGN_OR_RETURN(void* op, out_pad_.Ensure(q_heads * dp * bf));
    Stream* stream = batch.stream != nullptr ? batch.stream : device_->default_stream();
    void* s = stream->native_handle();
    FLUXATTN_RETURN_IF_ERROR(copy_columns(batch.q.data, q_heads, d, qp, dp, s));
    FLUXATTN_RETURN_IF_ERROR(copy_columns(k.data, kv_heads, d, kp, dp, s));
    FLUXATTN_RETURN_IF_ERROR(copy_columns(v.data, kv_heads, d, vp, dp, s));
    AttentionBatch padded = batch;
    padded.head_dim = dp;
    const int32_t ord = device_->ordinal();
    padded.q = TensorView::Contiguous(qp, pool_dtype, DeviceType::kCuda,
                                      {rows, batch.num_q_heads, dp}, ord);
    padded.out = TensorView::Contiguous(op, pool_dtype, DeviceType::kCuda,
                                        {rows, batch.num_q_heads, dp}, ord);
    const TensorView kv_view = TensorView::Contiguous(kp, pool_dtype, DeviceType::kCuda,
                                                      {rows, batch.num_kv_heads, dp}, ord);
    const TensorView v_view = TensorView::Contiguous(vp, pool_dtype, DeviceType::kCuda,
                                                     {rows, batch.num_kv_heads, dp}, ord);
    FLUXATTN_RETURN_IF_ERROR(
        RunGroups(padded, kv_view, v_view, layouts, order, all_dense || uniform));
    return copy_columns(op, q_heads, dp, batch.out.data, d, s);
  }
  return RunGroups(batch, k, v, layouts, order, all_dense || uniform);
}

absl::Status Runner::RunGroups(const AttentionBatch& batch, const TensorView& k,
                               const TensorView& v, std::span<const BlockSparseLayout> layouts,
                               std::span<const int> order, bool one_launch) {
  if (one_launch) {
    // A step that continues prompts beside decode rows: one launch per run of consecutive rows
    // of one phase, so that decode rows take the split-KV decode kernel (not one-row prefill
    // tiles) and a dense prompt keeps cuDNN's packed path (not a paged graph padded to the
    // prompt's rows for every decode sequence).
    size_t begin = 0;
    for (size_t i = 1; i <= order.size(); ++i) {
      if (i < order.size() && (batch.seqs[order[i]].phase == AttentionPhase::kDecode) ==
                                  (batch.seqs[order[begin]].phase == AttentionPhase::kDecode)) {
        continue;
      }
      FLUXATTN_RETURN_IF_ERROR(RunGroup(batch, k, v, layouts, order.subspan(begin, i - begin)));
      begin = i;
    }
    return absl::OkStatus();
  }
  // Layouts of different geometry: one launch per sequence.
  for (int i : order) {
    FLUXATTN_RETURN_IF_ERROR(RunGroup(batch, k, v, layouts, std::span<const int>(&i, 1)));
  }
  return absl::OkStatus();
}

absl::Status Runner::RunGroup(const AttentionBatch& batch, const TensorView& k, const TensorView& v,
                              std::span<const BlockSparseLayout> layouts,
                              std::span<const int> seqs) {
  const int32_t b_count = static_cast<int32_t>(seqs.size());
  const AttentionProblem& first = batch.seqs[seqs[0]];
  const int64_t base_row = first.q_row0;
  bool dense = true;
  bool decode = true;
  int64_t rows = 0;
  for (int i : seqs) {
    dense = dense && dense_[i];
    decode = decode && batch.seqs[i].phase == AttentionPhase::kDecode;
    rows += batch.seqs[i].num_queries;
  }
  // The tables, in int32 slots of one host buffer.
  host_.clear();
  const size_t q_indptr = Reserve(host_, b_count + 1);
  const size_t q_pos0 = Reserve(host_, b_count);
  const size_t kv_len = Reserve(host_, b_count);
  const size_t page_indptr = Reserve(host_, b_count + 1);
  host_[q_indptr] = 0;
  host_[page_indptr] = 0;
  int64_t max_kv_tokens = 1;
  for (int32_t b = 0; b < b_count; ++b) {
    const AttentionProblem& p = batch.seqs[seqs[b]];
    host_[q_indptr + b + 1] = static_cast<int32_t>(host_[q_indptr + b] + p.num_queries);
    host_[q_pos0 + b] = static_cast<int32_t>(p.q_pos0);
    host_[kv_len + b] = static_cast<int32_t>(p.kv.length);
    host_[page_indptr + b + 1] = static_cast<int32_t>(host_[page_indptr + b] + p.kv.num_pages);
    max_kv_tokens = std::max<int64_t>(max_kv_tokens, p.kv.length);
  }
  const size_t page_indices = Reserve(host_, host_[page_indptr + b_count]);
  for (int32_t b = 0; b < b_count; ++b) {
    const AttentionProblem& p = batch.seqs[seqs[b]];
    std::memcpy(&host_[page_indices + host_[page_indptr + b]], p.kv.pages,
                p.kv.num_pages * sizeof(int32_t));
  }
  // The pool slot of every new row (page * page_tokens + offset), for the append.
  const size_t slots = Reserve(host_, rows);
  for (int32_t b = 0, row = 0; b < b_count; ++b) {
    const AttentionProblem& p = batch.seqs[seqs[b]];
    for (int64_t r = 0; r < p.num_queries; ++r, ++row) {
      const int64_t pos = p.q_pos0 + r;
      const int64_t j = pos / batch.kv.page_tokens;
      const int32_t page = j < p.kv.num_pages ? p.kv.pages[j] : -1;
      if (page < 0) {
        return absl::InternalError(absl::StrCat("attention on cuda, layer ", batch.layer,
                                                ": no page for the new key at position ", pos));
      }
      host_[slots + row] =
          static_cast<int32_t>(int64_t{page} * batch.kv.page_tokens + pos % batch.kv.page_tokens);
    }
  }
  // cuDNN's tables (dense prefill): element offsets of the packed rows, the lengths, and for
  // prompts continued after earlier tokens a rectangular page table.
  const bool f32 = batch.dtype == DType::kF32;
  bool use_cudnn = cudnn_ != nullptr && dense && !decode && !f32;
  bool cudnn_packed = true;
  size_t cd_q_off = 0, cd_kv_off = 0, cd_seq_q = 0, cd_seq_kv = 0, cd_table = 0;
  int32_t cd_width = 0, cd_max_q = 1, cd_count = 0;
  if (use_cudnn) {
    for (int i : seqs) {
      cudnn_packed = cudnn_packed && batch.seqs[i].q_pos0 == 0;
      cd_max_q = std::max<int32_t>(cd_max_q, static_cast<int32_t>(batch.seqs[i].num_queries));
    }
    const int32_t hq_d = batch.num_q_heads * batch.head_dim;
    const int32_t hkv_d = batch.num_kv_heads * batch.head_dim;
    // Padded with empty sequences (no rows, no keys) up to the graph's sequence count.
    cd_count = cudnn::BucketCount(b_count);
    cd_q_off = Reserve(host_, cd_count + 1);
    cd_seq_q = Reserve(host_, cd_count);
    cd_seq_kv = Reserve(host_, cd_count);
    if (cudnn_packed) cd_kv_off = Reserve(host_, cd_count + 1);
    for (int32_t b = 0; b <= cd_count; ++b) {
      const int32_t real = std::min(b, b_count);
      host_[cd_q_off + b] = host_[q_indptr + real] * hq_d;
      if (cudnn_packed) host_[cd_kv_off + b] = host_[q_indptr + real] * hkv_d;
      if (b == cd_count) break;
      host_[cd_seq_q + b] = b < b_count ? host_[q_indptr + b + 1] - host_[q_indptr + b] : 0;
      host_[cd_seq_kv + b] = b < b_count ? host_[kv_len + b] : 0;
    }
    if (!cudnn_packed) {
      cd_width = cudnn::TableWidth(static_cast<int32_t>(max_kv_tokens), batch.kv.page_tokens);
      cd_table = Reserve(host_, static_cast<size_t>(cd_count) * cd_width);
      std::fill(host_.begin() + cd_table + static_cast<size_t>(b_count) * cd_width,
                host_.begin() + cd_table + static_cast<size_t>(cd_count) * cd_width, 0);
      for (int32_t b = 0; b < b_count && use_cudnn; ++b) {
        const AttentionProblem& p = batch.seqs[seqs[b]];
        const int64_t needed = (p.kv.length + batch.kv.page_tokens - 1) / batch.kv.page_tokens;
        for (int32_t j = 0; j < cd_width; ++j) {
          const int32_t page = j < p.kv.num_pages ? p.kv.pages[j] : -1;
          // A dense layout reads every page it has; a released one leaves it to the own kernel.
          if (j < needed && page < 0) use_cudnn = false;
          host_[cd_table + static_cast<size_t>(b) * cd_width + j] = page < 0 ? 0 : page;
        }
      }
    }
  }
  size_t seq_row_begin = 0, row_indptr = 0, kv_block = 0, mask_index = 0, masks = 0;
  bool any_masks = false;
  if (!dense) {
    const BlockSparseLayout& geo = layouts[seqs[0]];
    int64_t total_rows = 0, total_entries = 0, total_words = 0;
    for (int i : seqs) {
      total_rows += layouts[i].num_rows();
      total_entries += static_cast<int64_t>(layouts[i].kv_block.size());
      total_words += static_cast<int64_t>(layouts[i].masks.size());
    }
    any_masks = total_words > 0;
    seq_row_begin = Reserve(host_, b_count);
    row_indptr = Reserve(host_, total_rows + 1);
    kv_block = Reserve(host_, total_entries);
    mask_index = any_masks ? Reserve(host_, total_entries) : 0;
    if (host_.size() % 2 != 0) Reserve(host_, 1);  // 8-byte alignment of the masks
    masks = any_masks ? Reserve(host_, 2 * total_words) : 0;
    int64_t row = 0, entry = 0, word = 0;
    const int64_t words_per_mask = geo.words_per_mask();
    host_[row_indptr] = 0;
    for (int32_t b = 0; b < b_count; ++b) {
      const BlockSparseLayout& L = layouts[seqs[b]];
      host_[seq_row_begin + b] = static_cast<int32_t>(row);
      for (int64_t r = 0; r < L.num_rows(); ++r) {
        const int64_t e0 = L.row_begin[r], e1 = L.row_begin[r + 1];
        for (int64_t e = e0; e < e1; ++e) {
          host_[kv_block + entry] = L.kv_block[e];
          if (any_masks) {
            host_[mask_index + entry] =
                L.mask_index[e] < 0 ? -1
                                    : static_cast<int32_t>(word / words_per_mask + L.mask_index[e]);
          }
          ++entry;
        }
        host_[row_indptr + row + 1] = static_cast<int32_t>(entry);
        ++row;
      }
      if (!L.masks.empty()) {
        std::memcpy(&host_[masks + 2 * word], L.masks.data(), L.masks.size() * sizeof(uint64_t));
        word += static_cast<int64_t>(L.masks.size());
      }
    }
  }
  FLUXATTN_ASSIGN_OR_RETURN(void* tables, tables_.Ensure(host_.size() * sizeof(int32_t)));
  Stream* stream = batch.stream != nullptr ? batch.stream : device_->default_stream();
  void* s = stream->native_handle();
  // FLUXATTN_CUDA_PROFILE=1: the GPU's wait for the host's planning, then each step below.
  kc::OpProfile::MarkActive("attention: host plan", s);
  FLUXATTN_ASSIGN_OR_RETURN(void* staged, pinned_.Take(host_.size() * sizeof(int32_t), stream));
  std::memcpy(staged, host_.data(), host_.size() * sizeof(int32_t));
  const int32_t* t = static_cast<const int32_t*>(tables);

  kc::SequenceBatch sb;
  sb.num_seqs = b_count;
  sb.q_indptr = t + q_indptr;
  sb.q_pos0 = t + q_pos0;
  sb.kv_len = t + kv_len;
  sb.page_indptr = t + page_indptr;
  sb.page_indices = t + page_indices;
  kc::PagedKvPool pool;
  pool.k = batch.kv.k.data;
  pool.v = batch.kv.v.data;
  pool.num_pages = static_cast<int32_t>(batch.kv.capacity_pages);
  pool.page_tokens = batch.kv.page_tokens;
  const int64_t kv_row = int64_t{batch.num_kv_heads} * batch.head_dim;
  const int64_t q_row = int64_t{batch.num_q_heads} * batch.head_dim;
  const size_t bf = f32 ? sizeof(float) : sizeof(uint16_t);  // bytes per element
  // The tables to the device and the new keys and values into their pages (they are counted in
  // kv_len already), in one launch that reads the staged tables through unified addressing.
  const int32_t* staged_words = static_cast<const int32_t*>(staged);
  FLUXATTN_RETURN_IF_ERROR(kc::StageTablesAndAppendKv(
      staged_words, static_cast<int32_t*>(tables), static_cast<int64_t>(host_.size()),
      staged_words + slots, static_cast<const char*>(k.data) + base_row * kv_row * bf,
      static_cast<const char*>(v.data) + base_row * kv_row * bf, rows, batch.num_kv_heads,
      batch.head_dim, batch.kv.k.data, batch.kv.v.data, s, static_cast<int32_t>(bf)));
  kc::OpProfile::MarkActive("attention: tables + kv append", s);
  kc::BlockSparseLayoutView lv;
  if (!dense) {
    const BlockSparseLayout& geo = layouts[seqs[0]];
    lv.q_block_tokens = geo.q_block_tokens;
    lv.kv_block_tokens = geo.kv_block_tokens;
    lv.num_layout_heads = geo.num_layout_heads;
    lv.seq_row_begin = t + seq_row_begin;
    lv.row_indptr = t + row_indptr;
    lv.kv_block = t + kv_block;
    lv.maybe_mask_index = any_masks ? t + mask_index : nullptr;
    lv.maybe_masks = any_masks ? reinterpret_cast<const uint64_t*>(t + masks) : nullptr;
  }
  kc::AttentionShape shape;
  shape.num_q_heads = batch.num_q_heads;
  shape.num_kv_heads = batch.num_kv_heads;
  shape.head_dim = batch.head_dim;
  shape.scale = batch.scale;
  const void* q = static_cast<const char*>(batch.q.data) + base_row * q_row * bf;
  void* out = static_cast<char*>(batch.out.data) + base_row * q_row * bf;
  // The members every kernel's arguments share.
  auto common_args = [&](auto args) {
    args.shape = shape;
    args.q = q;
    args.out = out;
    args.kv = pool;
    args.seqs = sb;
    args.maybe_layout = dense ? nullptr : &lv;
    return args;
  };
  if (f32) {
    auto args = common_args(kc::AttentionF32Args{});
    args.total_rows = rows;
    FLUXATTN_RETURN_IF_ERROR(kc::RunAttentionF32(args, s));
    kc::OpProfile::MarkActive("attention: f32 kernel", s);
    return absl::OkStatus();
  }
  if (decode) {
    // The keys each (sequence, KV head) reads: splits follow the work, so that in a batch where
    // some requests read a window and others their whole cache the long rows get the CTAs.
    row_tokens_.clear();
    for (int32_t b = 0; b < b_count; ++b) {
      if (dense) {
        row_tokens_.insert(row_tokens_.end(), batch.num_kv_heads, host_[kv_len + b]);
        continue;
      }
      const BlockSparseLayout& L = layouts[seqs[b]];
      const int32_t copies = L.num_layout_heads == 1 ? batch.num_kv_heads : 1;
      for (int64_t r = 0; r < L.num_rows(); ++r) {
        row_tokens_.insert(row_tokens_.end(), copies,
                           (L.row_begin[r + 1] - L.row_begin[r]) * int64_t{L.kv_block_tokens});
      }
    }
    const kc::DecodeSplits splits =
        kc::BalanceDecodeSplits(row_tokens_, b_count, batch.num_kv_heads);
    const size_t bytes = kc::DecodeWorkspaceBytes(b_count, shape, splits.num_splits);
    FLUXATTN_ASSIGN_OR_RETURN(void* ws, workspace_.Ensure(bytes));
    FLUXATTN_ASSIGN_OR_RETURN(kc::DecodePlan plan,
                              kc::PlanDecode(shape, b_count, splits.num_splits, ws,
                                             workspace_.bytes(), splits.tiles_per_split));
    const auto args = common_args(kc::DecodeArgs{});
    FLUXATTN_RETURN_IF_ERROR(kc::RunDecode(args, plan, s));
    kc::OpProfile::MarkActive("attention: decode kernels", s);
    return absl::OkStatus();
  }
  if (use_cudnn) {
    cudnn::PrefillArgs ca;
    ca.num_seqs = cd_count;
    ca.num_q_heads = batch.num_q_heads;
    ca.num_kv_heads = batch.num_kv_heads;
    ca.head_dim = batch.head_dim;
    ca.scale = batch.scale;
    ca.max_q_rows = cd_max_q;
    ca.max_kv_len = static_cast<int32_t>(max_kv_tokens);
    ca.q = q;
    ca.out = out;
    ca.paged = !cudnn_packed;
    if (cudnn_packed) {
      ca.k = static_cast<const char*>(k.data) + base_row * kv_row * bf;
      ca.v = static_cast<const char*>(v.data) + base_row * kv_row * bf;
      ca.kv_offsets = t + cd_kv_off;
    } else {
      ca.k = pool.k;
      ca.v = pool.v;
      ca.num_pages = pool.num_pages;
      ca.page_tokens = pool.page_tokens;
      ca.table_width = cd_width;
      ca.page_table = t + cd_table;
    }
    ca.q_offsets = t + cd_q_off;
    ca.seq_len_q = t + cd_seq_q;
    ca.seq_len_kv = t + cd_seq_kv;
    absl::Status st = cudnn_->Prefill(ca, s);
    // A shape cuDNN has no engine for runs on the own kernel (unless cuDNN was required).
    if (st.ok() || !absl::IsUnimplemented(st) || cudnn_required_) return st;
    if (cudnn_fallback_.empty()) cudnn_fallback_ = std::string(st.message());
  }
  host_q_indptr_.assign(host_.begin() + q_indptr, host_.begin() + q_indptr + b_count + 1);
  host_q_pos0_.assign(host_.begin() + q_pos0, host_.begin() + q_pos0 + b_count);
  const size_t bytes = kc::PrefillWorkspaceBytes(rows, b_count);
  FLUXATTN_ASSIGN_OR_RETURN(void* ws, workspace_.Ensure(bytes));
  // Dense: the kernel's own tile; a layout: 64-row tiles (a divisor of every q block).
  const int32_t tile_rows = dense ? 0 : 64;
  FLUXATTN_ASSIGN_OR_RETURN(
      kc::PrefillPlan plan,
      kc::PlanPrefill(shape, host_q_indptr_, host_q_pos0_, ws, workspace_.bytes(), s, tile_rows));
  return kc::RunPrefill(common_args(kc::PrefillArgs{}), plan, s);
}

}  // namespace

absl::StatusOr<std::unique_ptr<CudaLayerRunner>> CudaLayerRunner::Create(
    Device* device, const std::string& dense_prefill) {
  if (device == nullptr || device->type() != DeviceType::kCuda) {
    return absl::InvalidArgumentError("CudaLayerRunner: not a CUDA device");
  }
  auto runner = std::make_unique<Runner>(device);
  FLUXATTN_RETURN_IF_ERROR(runner->InitDensePrefill(dense_prefill));
  return std::unique_ptr<CudaLayerRunner>(std::move(runner));
}

#endif  // FLUXATTN_WITH_CUDA

}  // namespace fluxattn
