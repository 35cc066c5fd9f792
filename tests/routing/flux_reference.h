// An independent, naive double-precision model of the Flux layer router, used as the oracle of
// the `flux` policy tests. It follows DESIGN.md literally: build the concatenated row list,
// average per head, average the heads, then five dense layers.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "routing_test_support.h"

namespace fluxattn::routing::testing {

struct ReferenceLinear {
  std::vector<std::vector<double>> weight;  // [out][in]
  std::vector<double> bias;                 // [out]
};

struct ReferenceRouter {
  ReferenceLinear layers[5];  // feat.0, feat.2, head.0, head.2, head.4
};

inline ReferenceRouter RandomReferenceRouter(int head_dim, int num_outputs, std::mt19937_64& rng,
                                             double gain = 1.5) {
  const int d = head_dim;
  const int dims[6] = {d, 8 * d, 2 * d, 4 * d, d, num_outputs};
  ReferenceRouter router;
  for (int l = 0; l < 5; ++l) {
    std::normal_distribution<double> normal(0.0, gain / std::sqrt(dims[l]));
    ReferenceLinear& linear = router.layers[l];
    linear.weight.assign(dims[l + 1], std::vector<double>(dims[l]));
    linear.bias.assign(dims[l + 1], 0.0);
    // Values are rounded to float32 once here, so the oracle and the policy see equal weights.
    for (auto& row : linear.weight) {
      for (double& w : row) w = static_cast<float>(normal(rng));
    }
    for (double& b : linear.bias) b = static_cast<float>(normal(rng));
  }
  return router;
}

// Adds layer `layer`'s ten tensors under the published names.
inline void AddRouterTensors(const ReferenceRouter& router, int layer, InMemoryWeights& weights) {
  const std::string prefix = absl::StrCat("model.layers.", layer, ".self_attn.mask_allocator.");
  const std::string names[5] = {"cls_feat_extractor.0", "cls_feat_extractor.2",
                                "cls_router_head_agnostic.0", "cls_router_head_agnostic.2",
                                "cls_router_head_agnostic.4"};
  for (int l = 0; l < 5; ++l) {
    const ReferenceLinear& linear = router.layers[l];
    const int64_t out = linear.weight.size();
    const int64_t in = linear.weight[0].size();
    std::vector<float> w;
    for (const auto& row : linear.weight) w.insert(w.end(), row.begin(), row.end());
    weights.Add(absl::StrCat(prefix, names[l], ".weight"), {out, in}, w);
    weights.Add(absl::StrCat(prefix, names[l], ".bias"), {out},
                std::vector<float>(linear.bias.begin(), linear.bias.end()));
  }
}

inline std::vector<double> ReferenceLogits(const ReferenceRouter& router,
                                           const std::vector<float>& queries, int64_t tokens,
                                           int heads, int head_dim, int64_t pool_size) {
  // torch: cat([x[:P], x[-P:]]); a slice past either end stops at the end.
  std::vector<int64_t> rows;
  for (int64_t t = 0; t < tokens && t < pool_size; ++t) rows.push_back(t);
  for (int64_t t = tokens > pool_size ? tokens - pool_size : 0; t < tokens; ++t) rows.push_back(t);
  std::vector<double> pooled(head_dim, 0.0);
  for (int h = 0; h < heads; ++h) {
    for (int j = 0; j < head_dim; ++j) {
      double head_mean = 0.0;
      for (int64_t t : rows) head_mean += queries[(t * heads + h) * head_dim + j];
      pooled[j] += head_mean / rows.size() / heads;
    }
  }
  std::vector<double> x = pooled;
  for (int l = 0; l < 5; ++l) {
    const ReferenceLinear& linear = router.layers[l];
    std::vector<double> y(linear.weight.size());
    for (size_t o = 0; o < y.size(); ++o) {
      double acc = linear.bias[o];
      for (size_t i = 0; i < x.size(); ++i) acc += linear.weight[o][i] * x[i];
      // SiLU after feat.0, head.0 and head.2.
      const bool silu = l == 0 || l == 2 || l == 3;
      y[o] = silu ? acc * (1.0 / (1.0 + std::exp(-acc))) : acc;
    }
    x = y;
  }
  return x;
}

}  // namespace fluxattn::routing::testing
