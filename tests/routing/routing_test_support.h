// Small helpers shared by the routing policy tests: parameter sets built like the config
// validator builds them, an in-memory WeightSource, and tiny model descriptions.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "fluxattn/device.h"
#include "fluxattn/model_info.h"
#include "fluxattn/params.h"
#include "fluxattn/routing_policy.h"
#include "fluxattn/status.h"
#include "fluxattn/tensor.h"
#include "gtest/gtest.h"

namespace fluxattn::routing::testing {

// Every declared parameter at its default (not explicit), then `given` as explicit values. A
// name in `given` that `specs` does not declare fails the test.
inline ParamValues MakeParams(const std::vector<ParamSpec>& specs,
                              const std::map<std::string, ParamValue>& given) {
  ParamValues values;
  for (const ParamSpec& spec : specs) {
    if (spec.default_value.has_value()) values.Set(spec.name, *spec.default_value, false);
  }
  for (const auto& [name, value] : given) {
    bool declared = false;
    for (const ParamSpec& spec : specs) declared = declared || spec.name == name;
    EXPECT_TRUE(declared) << "test uses undeclared parameter " << name;
    values.Set(name, value, true);
  }
  return values;
}

// Named float32 tensors held in memory.
class InMemoryWeights final : public WeightSource {
 public:
  void Add(const std::string& name, std::vector<int64_t> shape, std::vector<float> data) {
    tensors_[name] = {std::move(shape), std::move(data)};
  }
  void Remove(const std::string& name) { tensors_.erase(name); }
  bool Has(const std::string& name) const override { return tensors_.count(name) != 0; }
  std::vector<std::string> Names() const override {
    std::vector<std::string> names;
    for (const auto& entry : tensors_) names.push_back(entry.first);
    return names;
  }
  absl::StatusOr<Tensor> GetF32(const std::string& name,
                                const std::vector<int64_t>& expected_shape) const override {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) {
      return absl::NotFoundError(absl::StrCat("in-memory weights: no tensor ", name));
    }
    const auto& [shape, data] = it->second;
    if (!expected_shape.empty() && expected_shape != shape) {
      return absl::InvalidArgumentError(
          absl::StrCat("in-memory weights: tensor ", name, ": expected shape ",
                       ShapeToString(expected_shape), ", found ", ShapeToString(shape)));
    }
    FLUXATTN_ASSIGN_OR_RETURN(Tensor tensor, Tensor::Empty(shape, DType::kF32, CpuDevice()));
    std::copy(data.begin(), data.end(), tensor.data<float>());
    return tensor;
  }

 private:
  static std::string ShapeToString(const std::vector<int64_t>& shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) absl::StrAppend(&s, i ? ", " : "", shape[i]);
    return s + "]";
  }
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> tensors_;
};

inline ModelInfo TinyModel(int num_layers, int num_q_heads = 4, int head_dim = 8) {
  ModelInfo model;
  model.path = "tiny";
  model.architecture = "PawQwen3ForCausalLM";
  model.model_type = "qwen3";
  model.num_layers = num_layers;
  model.hidden_size = num_q_heads * head_dim;
  model.num_q_heads = num_q_heads;
  model.num_kv_heads = num_q_heads / 2 > 0 ? num_q_heads / 2 : 1;
  model.head_dim = head_dim;
  model.vocab_size = 100;
  return model;
}

// Creates the policy `Policy` from `given` and prepares it for `setup`.
template <typename Policy>
absl::StatusOr<std::unique_ptr<Policy>> MakePolicy(const std::map<std::string, ParamValue>& given,
                                                   const RoutingSetup& setup) {
  FLUXATTN_ASSIGN_OR_RETURN(std::unique_ptr<Policy> policy,
                            Policy::Create(MakeParams(Policy::Params(), given)));
  FLUXATTN_RETURN_IF_ERROR(policy->Prepare(setup));
  return policy;
}

}  // namespace fluxattn::routing::testing
