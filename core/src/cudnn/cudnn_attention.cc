#include "cudnn/cudnn_attention.h"

#include <cstring>
#include <exception>
#include <map>
#include <tuple>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "cudnn_frontend.h"
#include "fluxattn/status.h"

namespace fluxattn::cudnn {
namespace {

namespace fe = ::cudnn_frontend;

enum Uid : int64_t {
  kQ = 1,
  kK,
  kV,
  kO,
  kSeqLenQ,
  kSeqLenKv,
  kQOffsets,
  kKvOffsets,
  kPageTable,
};

// What a built graph depends on; the lengths themselves are device data.
struct Key {
  int32_t num_seqs, q_bucket, kv_bucket, hq, hkv, d, num_pages, page_tokens, table_width;
  bool paged;
  uint32_t scale_bits;
  auto tie() const {
    return std::tie(num_seqs, q_bucket, kv_bucket, hq, hkv, d, num_pages, page_tokens, table_width,
                    paged, scale_bits);
  }
  bool operator<(const Key& o) const { return tie() < o.tie(); }
};

std::string Message(fe::error_t e) { return e.get_message(); }

class CudnnAttention : public Attention {
 public:
  CudnnAttention(Device* device, cudnnHandle_t handle) : handle_(handle), workspace_(device) {}
  ~CudnnAttention() override {
    graphs_.clear();
    cudnnDestroy(handle_);
  }

  absl::Status Prefill(const PrefillArgs& a, void* stream) override;

  std::string version() const override {
    const size_t v = cudnnGetVersion();
    return absl::StrCat("cuDNN ", v / 10000, ".", (v % 10000) / 100, ".", v % 100, " (frontend ",
                        CUDNN_FRONTEND_MAJOR_VERSION, ".", CUDNN_FRONTEND_MINOR_VERSION, ".",
                        CUDNN_FRONTEND_PATCH_VERSION, ")");
  }

 private:
  absl::StatusOr<fe::graph::Graph*> GraphFor(const Key& key);

  cudnnHandle_t handle_;
  DeviceBuffer workspace_;
  std::map<Key, std::shared_ptr<fe::graph::Graph>> graphs_;
  std::map<Key, std::string> unsupported_;  // shapes cuDNN refused, with its reason
};

absl::StatusOr<fe::graph::Graph*> CudnnAttention::GraphFor(const Key& key) {
  if (auto it = graphs_.find(key); it != graphs_.end()) return it->second.get();
  if (auto it = unsupported_.find(key); it != unsupported_.end()) {
    return absl::UnimplementedError(it->second);
  }
  auto graph = std::make_shared<fe::graph::Graph>();
  graph->set_io_data_type(fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  const int64_t b = key.num_seqs, hq = key.hq, hkv = key.hkv, d = key.d;
  const int64_t sq = key.q_bucket, skv = key.kv_bucket;
  auto index = [&](const char* name, Uid uid, int64_t n) {
    return graph->tensor(fe::graph::Tensor_attributes()
                             .set_name(name)
                             .set_uid(uid)
                             .set_dim({n, 1, 1, 1})
                             .set_stride({1, 1, 1, 1})
                             .set_data_type(fe::DataType_t::INT32));
  };
  auto q_offsets = index("q_offsets", kQOffsets, b + 1);
  // Token-major rows, heads inside a row: the batch stride is never used with ragged offsets.
  auto q = graph->tensor(fe::graph::Tensor_attributes()
                             .set_name("q")
                             .set_uid(kQ)
                             .set_dim({b, hq, sq, d})
                             .set_stride({sq * hq * d, d, hq * d, 1})
                             .set_ragged_offset(q_offsets));
  std::shared_ptr<fe::graph::Tensor_attributes> k, v;
  fe::graph::SDPA_attributes options;
  float scale;
  std::memcpy(&scale, &key.scale_bits, sizeof(scale));
  options.set_name("prefill")
      .set_generate_stats(false)
      .set_attn_scale(scale)
      .set_padding_mask(true)
      .set_seq_len_q(index("seq_len_q", kSeqLenQ, b))
      .set_seq_len_kv(index("seq_len_kv", kSeqLenKv, b));
  if (key.paged) {
    const int64_t pages = key.num_pages, pt = key.page_tokens;
    auto container = [&](const char* name, Uid uid) {
      return graph->tensor(fe::graph::Tensor_attributes()
                               .set_name(name)
                               .set_uid(uid)
                               .set_dim({pages, hkv, pt, d})
                               .set_stride({pt * hkv * d, d, hkv * d, 1}));
    };
    k = container("k_pool", kK);
    v = container("v_pool", kV);
    auto table = graph->tensor(fe::graph::Tensor_attributes()
                                   .set_name("page_table")
                                   .set_uid(kPageTable)
                                   .set_dim({b, 1, key.table_width, 1})
                                   .set_stride({key.table_width, 1, 1, 1})
                                   .set_data_type(fe::DataType_t::INT32));
    options.set_paged_attention_k_table(table)
        .set_paged_attention_v_table(table)
        .set_paged_attention_max_seq_len_kv(static_cast<int>(skv))
        .set_causal_mask_bottom_right(true);
  } else {
    auto kv_offsets = index("kv_offsets", kKvOffsets, b + 1);
    auto packed = [&](const char* name, Uid uid) {
      return graph->tensor(fe::graph::Tensor_attributes()
                               .set_name(name)
                               .set_uid(uid)
                               .set_dim({b, hkv, skv, d})
                               .set_stride({skv * hkv * d, d, hkv * d, 1})
                               .set_ragged_offset(kv_offsets));
    };
    k = packed("k", kK);
    v = packed("v", kV);
    options.set_causal_mask(true);
  }
  auto [o, stats] = graph->sdpa(q, k, v, options);
  (void)stats;
  o->set_output(true)
      .set_uid(kO)
      .set_dim({b, hq, sq, d})
      .set_stride({sq * hq * d, d, hq * d, 1})
      .set_ragged_offset(q_offsets);
  fe::error_t e = graph->validate();
  if (e.is_good()) e = graph->build_operation_graph(handle_);
  if (e.is_good()) e = graph->create_execution_plans({fe::HeurMode_t::A});
  if (e.is_good()) e = graph->check_support(handle_);
  if (e.is_good()) e = graph->build_plans(handle_);
  if (!e.is_good()) {
    std::string why = absl::StrCat("cuDNN SDPA (", key.paged ? "paged" : "packed", " K/V, ",
                                   key.num_seqs, " sequences, ", key.hq, "/", key.hkv,
                                   " heads, head_dim ", key.d, "): ", Message(e));
    unsupported_[key] = why;
    return absl::UnimplementedError(why);
  }
  fe::graph::Graph* raw = graph.get();
  graphs_[key] = std::move(graph);
  return raw;
}

absl::Status CudnnAttention::Prefill(const PrefillArgs& a, void* stream) {
  if (a.num_seqs <= 0) return absl::OkStatus();
  Key key{};
  key.num_seqs = a.num_seqs;
  key.q_bucket = BucketLength(a.max_q_rows);
  key.kv_bucket = BucketLength(a.max_kv_len);
  key.hq = a.num_q_heads;
  key.hkv = a.num_kv_heads;
  key.d = a.head_dim;
  key.paged = a.paged;
  if (a.paged) {
    key.num_pages = a.num_pages;
    key.page_tokens = a.page_tokens;
    key.table_width = a.table_width;
    if (a.table_width != TableWidth(a.max_kv_len, a.page_tokens)) {
      return absl::InternalError(absl::StrCat("cuDNN prefill: page table width ", a.table_width,
                                              ", expected ",
                                              TableWidth(a.max_kv_len, a.page_tokens)));
    }
  }
  std::memcpy(&key.scale_bits, &a.scale, sizeof(a.scale));
  try {
    FLUXATTN_ASSIGN_OR_RETURN(fe::graph::Graph * graph, GraphFor(key));
    int64_t ws_bytes = 0;
    fe::error_t e = graph->get_workspace_size(ws_bytes);
    if (!e.is_good()) return absl::InternalError(absl::StrCat("cuDNN workspace: ", Message(e)));
    void* ws = nullptr;
    if (ws_bytes > 0) {
      FLUXATTN_ASSIGN_OR_RETURN(ws, workspace_.Ensure(static_cast<size_t>(ws_bytes)));
    }
    std::unordered_map<int64_t, void*> pack = {
        {kQ, const_cast<void*>(a.q)},
        {kK, const_cast<void*>(a.k)},
        {kV, const_cast<void*>(a.v)},
        {kO, a.out},
        {kSeqLenQ, const_cast<int32_t*>(a.seq_len_q)},
        {kSeqLenKv, const_cast<int32_t*>(a.seq_len_kv)},
        {kQOffsets, const_cast<int32_t*>(a.q_offsets)},
    };
    if (a.paged) {
      pack[kPageTable] = const_cast<int32_t*>(a.page_table);
    } else {
      pack[kKvOffsets] = const_cast<int32_t*>(a.kv_offsets);
    }
    const cudnnStatus_t st = cudnnSetStream(handle_, static_cast<cudaStream_t>(stream));
    if (st != CUDNN_STATUS_SUCCESS) {
      return absl::InternalError(
          absl::StrCat("cudnnSetStream: expected success, found ", cudnnGetErrorString(st)));
    }
    e = graph->execute(handle_, pack, ws);
    if (!e.is_good()) return absl::InternalError(absl::StrCat("cuDNN SDPA: ", Message(e)));
  } catch (const std::exception& ex) {
    return absl::InternalError(absl::StrCat("cuDNN SDPA: ", ex.what()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Attention>> Attention::Create(Device* device) {
  if (device == nullptr || device->type() != DeviceType::kCuda) {
    return absl::InvalidArgumentError("cuDNN attention: not a CUDA device");
  }
  if (cudnnGetVersion() < 90500) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cuDNN attention: expected cuDNN 9.5 or newer, found version ", cudnnGetVersion()));
  }
  cudnnHandle_t handle = nullptr;
  const cudnnStatus_t st = cudnnCreate(&handle);
  if (st != CUDNN_STATUS_SUCCESS) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cuDNN attention: cudnnCreate: expected success, found ", cudnnGetErrorString(st)));
  }
  return std::unique_ptr<Attention>(new CudnnAttention(device, handle));
}

}  // namespace fluxattn::cudnn
