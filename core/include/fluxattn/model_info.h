// What plugins may know about the model: its shape, the scalar entries of its config.json, and
// read access to its tensors (the learned router reads its weights from the checkpoint).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "fluxattn/tensor.h"

namespace fluxattn {

using ConfigScalar = std::variant<bool, int64_t, double, std::string>;

struct ModelInfo {
  std::string path;          // checkpoint folder
  std::string architecture;  // e.g. "Qwen3ForCausalLM", "PawQwen3ForCausalLM"
  std::string model_type;    // e.g. "qwen3"
  int num_layers = 0;
  int hidden_size = 0;
  int num_q_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int64_t vocab_size = 0;
  // Top-level scalar entries of config.json (numbers, strings, booleans), by key.
  std::map<std::string, ConfigScalar> config;

  std::optional<double> ConfigNumber(const std::string& key) const;
  std::optional<std::string> ConfigString(const std::string& key) const;
  std::optional<bool> ConfigBool(const std::string& key) const;
};

// Named tensors of a checkpoint (or of a separate safetensors file).
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual bool Has(const std::string& name) const = 0;
  virtual std::vector<std::string> Names() const = 0;
  // The tensor converted to float32 on the CPU. The error names the file and tensor and, when
  // `expected_shape` is non-empty and differs, both shapes.
  virtual absl::StatusOr<Tensor> GetF32(const std::string& name,
                                        const std::vector<int64_t>& expected_shape) const = 0;
  // The tensor as stored: its own dtype (F32, BF16 and F16 as they are; F64 converted to F32) and
  // shape, on the CPU. A memory-mapped checkpoint hands out a view into the mapping (no copy; the
  // tensor keeps the mapping alive), so a model computing from it holds no converted copy. Same
  // errors as GetF32. The default converts with GetF32.
  virtual absl::StatusOr<Tensor> GetRaw(const std::string& name,
                                        const std::vector<int64_t>& expected_shape) const {
    return GetF32(name, expected_shape);
  }
};

}  // namespace fluxattn
