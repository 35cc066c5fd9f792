// Reading Hugging Face safetensors files: one memory-mapped file, or a checkpoint folder with
// `model.safetensors` or a sharded `model.safetensors.index.json`. Headers are validated when the
// file is opened (size, JSON, dtypes, offsets inside the file, no overlapping tensors), so a bad
// file fails early with one line naming the file and the tensor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fluxattn/model_info.h"
#include "fluxattn/tensor.h"

namespace fluxattn::models {

struct SafetensorsTensorInfo {
  std::string name;
  std::string dtype;  // as written in the header: "F32", "BF16", "F16", ...
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte range inside the file (not inside the data section)
  uint64_t end = 0;
  int64_t numel() const;
};

// One memory-mapped safetensors file.
class SafetensorsFile : public std::enable_shared_from_this<SafetensorsFile> {
 public:
  static absl::StatusOr<std::shared_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsTensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const SafetensorsTensorInfo* Find(const std::string& name) const;

  // The tensor as float32 on the CPU (F32 data is used in place when aligned; BF16, F16 and F64
  // are converted). With a non-empty `expected_shape`, a different shape is an error naming both.
  absl::StatusOr<Tensor> GetF32(const std::string& name,
                                const std::vector<int64_t>& expected_shape) const;
  // The tensor as stored (WeightSource::GetRaw): F32, BF16 and F16 data in place when aligned to
  // the element size (copied otherwise), F64 converted to F32.
  absl::StatusOr<Tensor> GetRaw(const std::string& name,
                                const std::vector<int64_t>& expected_shape) const;

 private:
  SafetensorsFile() = default;
  absl::Status ParseHeader();
  absl::StatusOr<const SafetensorsTensorInfo*> Lookup(
      const std::string& name, const std::vector<int64_t>& expected_shape) const;

  std::string path_;
  const uint8_t* data_ = nullptr;  // the whole file
  uint64_t size_ = 0;
  std::vector<SafetensorsTensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// "[2, 3]".
std::string ShapeToString(const std::vector<int64_t>& shape);

// A WeightSource over one safetensors file.
absl::StatusOr<std::unique_ptr<WeightSource>> OpenSafetensorsWeights(const std::string& path);

// A WeightSource over a checkpoint folder: `model.safetensors.index.json` (sharded) when present,
// else `model.safetensors`, else the single `*.safetensors` file in the folder.
absl::StatusOr<std::unique_ptr<WeightSource>> OpenCheckpointWeights(const std::string& dir);

}  // namespace fluxattn::models
