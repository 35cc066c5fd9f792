#include "engine/device_router.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "fluxattn/status.h"
#if defined(FLUXATTN_WITH_CUDA)
#include <cuda_runtime_api.h>

#include "fluxattn/kernels/cuda_model_ops.h"
#endif

namespace fluxattn {

struct DeviceRouterNetworks::Linear {
  explicit Linear(Device* device) : weight(device), bias(device) {}
  DeviceBuffer weight, bias;
  int32_t in = 0;
  int32_t out = 0;
  bool silu = false;
};

DeviceRouterNetworks::DeviceRouterNetworks(Device* device, int num_layers, int head_dim)
    : device_(device),
      num_layers_(num_layers),
      head_dim_(head_dim),
      ranges_(device),
      pool_scratch_(device),
      a_(device),
      b_(device) {}

DeviceRouterNetworks::~DeviceRouterNetworks() {
#if defined(FLUXATTN_WITH_CUDA)
  if (pinned_ != nullptr) cudaFreeHost(pinned_);
#endif
}

bool DeviceRouterNetworks::Supported(int head_dim) {
#if defined(FLUXATTN_WITH_CUDA)
  return head_dim > 0 && head_dim <= kernels::cuda::kRouterPoolMaxHeadDim;
#else
  (void)head_dim;
  return false;
#endif
}

absl::Status DeviceRouterNetworks::Offer(const RoutingPolicy* policy,
                                         const RouterNetwork& network) {
  if (network.struct_size < sizeof(RouterNetwork)) {
    return InvalidInput("router network: struct_size", absl::StrCat(">= ", sizeof(RouterNetwork)),
                        absl::StrCat(network.struct_size));
  }
  if (network.layer < 0 || network.layer >= num_layers_) {
    return InvalidInput("router network: layer",
                        absl::StrCat("a layer index in [0, ", num_layers_ - 1, "]"),
                        absl::StrCat(network.layer));
  }
  const std::string where = absl::StrCat("router network of layer ", network.layer);
  if (network.pool_size < 1 || network.pool_size > std::numeric_limits<int32_t>::max()) {
    return InvalidInput(absl::StrCat(where, ": pool_size"), "an integer in [1, 2^31)",
                        absl::StrCat(network.pool_size));
  }
  if (network.linears.empty()) {
    return InvalidInput(absl::StrCat(where, ": linears"), "at least one linear layer", "none");
  }
  if (networks_.count({policy, network.layer}) != 0) {
    return InvalidInput(absl::StrCat(where, ": offer"), "one network per layer", "a second one");
  }
  Network made;
  made.pool_size = network.pool_size;
  int64_t width = head_dim_;
  for (size_t i = 0; i < network.linears.size(); ++i) {
    const RouterLinear& l = network.linears[i];
    const std::string field = absl::StrCat(where, ": linears[", i, "]");
    if (l.in != width || l.out < 1 || l.out > (1 << 20)) {
      return InvalidInput(field, absl::StrCat("in ", width, " and out in [1, 2^20]"),
                          absl::StrCat("in ", l.in, ", out ", l.out));
    }
    if (l.weight == nullptr || l.bias == nullptr) {
      return InvalidInput(field, "a weight and a bias", "a null pointer");
    }
    auto linear = std::make_unique<Linear>(device_);
    linear->in = static_cast<int32_t>(l.in);
    linear->out = static_cast<int32_t>(l.out);
    linear->silu = l.silu;
    const size_t w_bytes = static_cast<size_t>(l.in * l.out) * sizeof(float);
    const size_t b_bytes = static_cast<size_t>(l.out) * sizeof(float);
    FLUXATTN_ASSIGN_OR_RETURN(void* w, linear->weight.Ensure(w_bytes));
    FLUXATTN_ASSIGN_OR_RETURN(void* b, linear->bias.Ensure(b_bytes));
    Stream* stream = device_->default_stream();
    FLUXATTN_RETURN_IF_ERROR(device_->Copy(w, l.weight, w_bytes, CopyKind::kHostToDevice, stream));
    FLUXATTN_RETURN_IF_ERROR(device_->Copy(b, l.bias, b_bytes, CopyKind::kHostToDevice, stream));
    width = l.out;
    made.linears.push_back(std::move(linear));
  }
  // The offered arrays need not outlive the call.
  FLUXATTN_RETURN_IF_ERROR(device_->default_stream()->Synchronize());
  networks_.emplace(std::make_pair(policy, network.layer), std::move(made));
  return absl::OkStatus();
}

bool DeviceRouterNetworks::Has(const RoutingPolicy* policy, int layer) const {
  return networks_.count({policy, layer}) != 0;
}

absl::Status DeviceRouterNetworks::Run(const RoutingPolicy* policy,
                                       const LayerAttentionBatch& batch,
                                       std::span<const SequenceRows* const> rows,
                                       std::span<RoutingInput> inputs) {
  auto it = networks_.find({policy, batch.layer});
  if (it == networks_.end()) {
    return absl::InternalError(absl::StrCat("no router network for layer ", batch.layer));
  }
  const Network& net = it->second;
  const TensorView& q = batch.q_pre_rope;
#if defined(FLUXATTN_WITH_CUDA)
  if (q.device != DeviceType::kCuda || q.dtype != DType::kBF16 || batch.head_dim != head_dim_) {
    return absl::InternalError(absl::StrCat(
        "router network: queries of dtype ", DTypeName(q.dtype), " on ", DeviceTypeName(q.device),
        ", head_dim ", batch.head_dim, ": expected bf16 on cuda, head_dim ", head_dim_));
  }
  const int64_t row_elems = static_cast<int64_t>(batch.num_q_heads) * head_dim_;
  if (q.rank != 3 || q.shape[1] != batch.num_q_heads || q.shape[2] != head_dim_ ||
      q.stride[0] != row_elems || q.stride[1] != head_dim_ || q.stride[2] != 1) {
    return absl::InternalError("router network: expected contiguous queries [rows, heads, dim]");
  }
  const int32_t n = static_cast<int32_t>(rows.size());
  if (n == 0) return absl::OkStatus();
  int32_t widest = head_dim_;
  for (const auto& l : net.linears) widest = std::max(widest, l->out);
  const int32_t outputs = net.linears.back()->out;
  // Page-locked host memory: the ranges, then the outputs (the previous call has synchronized,
  // so nothing still reads it).
  const size_t ranges_bytes = (2 * rows.size() * sizeof(int32_t) + 255) / 256 * 256;
  const size_t outputs_bytes = static_cast<size_t>(n) * outputs * sizeof(float);
  if (ranges_bytes + outputs_bytes > pinned_bytes_) {
    if (pinned_ != nullptr) cudaFreeHost(pinned_);
    pinned_ = nullptr;
    pinned_bytes_ = 0;
    const size_t want = std::max<size_t>(ranges_bytes + outputs_bytes, size_t{64} << 10);
    const cudaError_t e = cudaMallocHost(&pinned_, want);
    if (e != cudaSuccess) {
      pinned_ = nullptr;
      return absl::ResourceExhaustedError(absl::StrCat("router network: cudaMallocHost(", want,
                                                       " bytes): expected success, found ",
                                                       cudaGetErrorString(e)));
    }
    pinned_bytes_ = want;
  }
  int32_t* host_ranges = static_cast<int32_t*>(pinned_);
  float* host_outputs = reinterpret_cast<float*>(static_cast<char*>(pinned_) + ranges_bytes);
  for (size_t i = 0; i < rows.size(); ++i) {
    host_ranges[2 * i] = static_cast<int32_t>(rows[i]->row0);
    host_ranges[2 * i + 1] = static_cast<int32_t>(rows[i]->row0 + rows[i]->num_tokens);
  }
  const size_t act_bytes = static_cast<size_t>(n) * widest * sizeof(float);
  FLUXATTN_ASSIGN_OR_RETURN(void* ranges, ranges_.Ensure(2 * rows.size() * sizeof(int32_t)));
  FLUXATTN_ASSIGN_OR_RETURN(
      void* scratch, pool_scratch_.Ensure(kernels::cuda::RouterPoolScratchBytes(n, head_dim_)));
  FLUXATTN_ASSIGN_OR_RETURN(void* a, a_.Ensure(act_bytes));
  FLUXATTN_ASSIGN_OR_RETURN(void* b, b_.Ensure(act_bytes));
  Stream* stream = device_->default_stream();
  void* cu = stream->native_handle();
  FLUXATTN_RETURN_IF_ERROR(device_->Copy(ranges, host_ranges, 2 * rows.size() * sizeof(int32_t),
                                         CopyKind::kHostToDevice, stream));
  FLUXATTN_RETURN_IF_ERROR(kernels::cuda::RouterPoolRows(
      q.data, static_cast<const int32_t*>(ranges), n, batch.num_q_heads, head_dim_,
      static_cast<int32_t>(net.pool_size), static_cast<float*>(a), static_cast<float*>(scratch),
      cu));
  float* x = static_cast<float*>(a);
  float* y = static_cast<float*>(b);
  for (const auto& l : net.linears) {
    FLUXATTN_RETURN_IF_ERROR(kernels::cuda::RouterLinear(
        x, n, static_cast<const float*>(l->weight.get()), static_cast<const float*>(l->bias.get()),
        l->in, l->out, l->silu, y, cu));
    std::swap(x, y);
  }
  FLUXATTN_RETURN_IF_ERROR(
      device_->Copy(host_outputs, x, outputs_bytes, CopyKind::kDeviceToHost, stream));
  FLUXATTN_RETURN_IF_ERROR(stream->Synchronize());
  for (size_t i = 0; i < rows.size(); ++i) {
    inputs[i].queries = nullptr;
    inputs[i].network_outputs = host_outputs + i * outputs;
    inputs[i].num_network_outputs = outputs;
  }
  return absl::OkStatus();
#else
  (void)net;
  (void)q;
  (void)rows;
  (void)inputs;
  return absl::UnimplementedError("router networks on a device: built without CUDA");
#endif
}

}  // namespace fluxattn
