#include "flux_router.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "fluxattn/status.h"
#include "fluxattn/tensor.h"

namespace fluxattn::routing {

std::array<std::string, 10> FluxRouterTensorNames(int layer) {
  const std::string prefix = absl::StrCat("model.layers.", layer, ".self_attn.mask_allocator.");
  const std::string feat = absl::StrCat(prefix, "cls_feat_extractor.");
  const std::string head = absl::StrCat(prefix, "cls_router_head_agnostic.");
  return {absl::StrCat(feat, "0.weight"), absl::StrCat(feat, "0.bias"),
          absl::StrCat(feat, "2.weight"), absl::StrCat(feat, "2.bias"),
          absl::StrCat(head, "0.weight"), absl::StrCat(head, "0.bias"),
          absl::StrCat(head, "2.weight"), absl::StrCat(head, "2.bias"),
          absl::StrCat(head, "4.weight"), absl::StrCat(head, "4.bias")};
}

namespace {

// GetF32 names the tensor and both shapes on a mismatch; this re-checks what it returned so a
// WeightSource that ignores expected_shape still cannot feed the router a wrong shape.
absl::StatusOr<std::vector<float>> LoadChecked(const WeightSource& weights, const std::string& name,
                                               const std::vector<int64_t>& shape) {
  if (!weights.Has(name)) {
    return InvalidInput(absl::StrCat("flux router weights: tensor ", name),
                        "the tensor to be present (a Flux checkpoint, or `weights` naming a "
                        "file with the router tensors)",
                        "no such tensor");
  }
  FLUXATTN_ASSIGN_OR_RETURN(Tensor tensor, weights.GetF32(name, shape));
  std::string expected = "[";
  for (size_t i = 0; i < shape.size(); ++i) absl::StrAppend(&expected, i ? ", " : "", shape[i]);
  expected += "]";
  if (tensor.shape() != shape) {
    return InvalidInput(absl::StrCat("flux router weights: tensor ", name),
                        absl::StrCat("shape ", expected),
                        absl::StrCat("shape ", tensor.ShapeString()));
  }
  if (tensor.dtype() != DType::kF32 || tensor.device() == nullptr ||
      tensor.device()->type() != DeviceType::kCpu) {
    return InvalidInput(absl::StrCat("flux router weights: tensor ", name), "float32 on the CPU",
                        DTypeName(tensor.dtype()));
  }
  const float* data = tensor.data<float>();
  return std::vector<float>(data, data + tensor.numel());
}

}  // namespace

absl::StatusOr<FluxLayerRouter> FluxLayerRouter::Load(const WeightSource& weights, int layer,
                                                      int head_dim, int num_outputs) {
  FLUXATTN_CHECK(head_dim > 0 && (num_outputs == 1 || num_outputs == 2));
  const int64_t d = head_dim;
  // (in, out) of the five linear layers, in evaluation order.
  const std::array<std::array<int64_t, 2>, 5> dims = {
      {{d, 8 * d}, {8 * d, 2 * d}, {2 * d, 4 * d}, {4 * d, d}, {d, num_outputs}}};
  const std::array<std::string, 10> names = FluxRouterTensorNames(layer);
  FluxLayerRouter router;
  router.head_dim_ = head_dim;
  router.num_outputs_ = num_outputs;
  for (int i = 0; i < 5; ++i) {
    Linear& linear = router.linears_[i];
    linear.in = dims[i][0];
    linear.out = dims[i][1];
    FLUXATTN_ASSIGN_OR_RETURN(linear.weight,
                              LoadChecked(weights, names[2 * i], {linear.out, linear.in}));
    FLUXATTN_ASSIGN_OR_RETURN(linear.bias, LoadChecked(weights, names[2 * i + 1], {linear.out}));
  }
  return router;
}

std::vector<double> FluxLayerRouter::Pool(const float* queries, int64_t num_tokens, int num_heads,
                                          int head_dim, int64_t pool_size, int64_t tail_row) {
  FLUXATTN_CHECK(queries != nullptr && num_tokens > 0 && num_heads > 0 && head_dim > 0 &&
                 pool_size > 0);
  // x[:pool_size] and x[-pool_size:] each hold min(pool_size, T) rows; a row in both is
  // counted twice, as the concatenation does.
  const int64_t n = std::min(pool_size, num_tokens);
  const int64_t row = static_cast<int64_t>(num_heads) * head_dim;
  std::vector<double> pooled(head_dim, 0.0);
  auto add_rows = [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float* q = queries + t * row;
      for (int h = 0; h < num_heads; ++h) {
        for (int j = 0; j < head_dim; ++j) pooled[j] += q[h * head_dim + j];
      }
    }
  };
  add_rows(0, n);
  const int64_t tail = tail_row < 0 ? num_tokens - n : tail_row;
  add_rows(tail, tail + n);
  const double count = 2.0 * static_cast<double>(n) * num_heads;
  for (double& v : pooled) v /= count;
  return pooled;
}

std::vector<double> FluxLayerRouter::Apply(const Linear& linear, const std::vector<double>& x,
                                           bool silu_after) {
  FLUXATTN_CHECK(static_cast<int64_t>(x.size()) == linear.in);
  const float* w = linear.weight.data();
  const float* b = linear.bias.data();
  std::vector<double> y(linear.out);
  for (int64_t o = 0; o < linear.out; ++o) {
    const float* w_row = w + o * linear.in;
    double acc = b[o];
    for (int64_t i = 0; i < linear.in; ++i) acc += static_cast<double>(w_row[i]) * x[i];
    y[o] = silu_after ? acc / (1.0 + std::exp(-acc)) : acc;
  }
  return y;
}

namespace {
// SiLU after each of the five linears: the feature extractor's first, the head's first two.
constexpr std::array<bool, 5> kSiluAfter = {true, false, true, true, false};
}  // namespace

std::vector<double> FluxLayerRouter::Logits(const std::vector<double>& pooled) const {
  std::vector<double> x = pooled;
  for (size_t i = 0; i < linears_.size(); ++i) x = Apply(linears_[i], x, kSiluAfter[i]);
  return x;
}

std::array<RouterLinear, 5> FluxLayerRouter::Network() const {
  std::array<RouterLinear, 5> network;
  for (size_t i = 0; i < linears_.size(); ++i) {
    network[i] = {linears_[i].weight.data(), linears_[i].bias.data(), linears_[i].in,
                  linears_[i].out, kSiluAfter[i]};
  }
  return network;
}

}  // namespace fluxattn::routing
