#include "fluxattn/models/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "fluxattn/status.h"
#include "nlohmann/json.hpp"

namespace fluxattn::models {
namespace {

using nlohmann::json;

// Element sizes of every dtype the safetensors format defines. Anything else in a header is an
// unknown dtype.
int DTypeBytes(const std::string& dtype) {
  static const std::map<std::string, int> kSizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8}};
  auto it = kSizes.find(dtype);
  return it == kSizes.end() ? 0 : it->second;
}

// Headers larger than this are refused before any JSON parsing (the format's own limit).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

std::string Quote(const std::string& s) { return absl::StrCat("'", s, "'"); }

}  // namespace

int64_t SafetensorsTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeToString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<std::shared_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::InternalError(absl::StrCat(path, ": cannot stat: ", std::strerror(errno)));
  }
  file->size_ = static_cast<uint64_t>(st.st_size);
  if (file->size_ > 0) {
    void* p = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      return absl::InternalError(absl::StrCat(path, ": cannot mmap: ", std::strerror(errno)));
    }
    file->data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  FLUXATTN_RETURN_IF_ERROR(file->ParseHeader());
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

absl::Status SafetensorsFile::ParseHeader() {
  if (size_ < 8) {
    return InvalidInput(path_, "a safetensors file of at least 8 bytes (header length)",
                        absl::StrCat(size_, " bytes (truncated file)"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data_[i];
  if (header_len > kMaxHeaderBytes) {
    return InvalidInput(path_, absl::StrCat("a header of at most ", kMaxHeaderBytes, " bytes"),
                        absl::StrCat(header_len, " bytes (not a safetensors file?)"));
  }
  if (header_len > size_ - 8) {
    return InvalidInput(path_, absl::StrCat("a header of ", header_len, " bytes after the length"),
                        absl::StrCat(size_ - 8, " bytes (truncated file)"));
  }
  const uint64_t data_begin = 8 + header_len;
  const uint64_t data_size = size_ - data_begin;
  json header;
  try {
    header = json::parse(reinterpret_cast<const char*>(data_ + 8),
                         reinterpret_cast<const char*>(data_ + data_begin));
  } catch (const json::exception& e) {
    return InvalidInput(absl::StrCat(path_, ": header"), "valid JSON",
                        absl::StrCat("a parse error (", e.what(), ")"));
  }
  if (!header.is_object()) {
    return InvalidInput(absl::StrCat(path_, ": header"), "a JSON object",
                        std::string(header.type_name()));
  }
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) {
        return InvalidInput(absl::StrCat(path_, ": __metadata__"), "a JSON object",
                            std::string(entry.type_name()));
      }
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (m.value().is_string()) metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = absl::StrCat(path_, ": tensor ", Quote(name));
    if (!entry.is_object()) {
      return InvalidInput(where, "an object with dtype, shape and data_offsets",
                          std::string(entry.type_name()));
    }
    SafetensorsTensorInfo info;
    info.name = name;
    auto dtype = entry.find("dtype");
    if (dtype == entry.end() || !dtype->is_string()) {
      return InvalidInput(where, "a string 'dtype'", "none");
    }
    info.dtype = dtype->get<std::string>();
    const int elem_bytes = DTypeBytes(info.dtype);
    if (elem_bytes == 0) {
      return InvalidInput(where, "a known dtype (F32, BF16, F16, F64, I64, I32, ...)",
                          absl::StrCat("unknown dtype ", Quote(info.dtype)));
    }
    auto shape = entry.find("shape");
    if (shape == entry.end() || !shape->is_array()) {
      return InvalidInput(where, "a 'shape' array", "none");
    }
    for (const json& d : *shape) {
      if (!d.is_number_unsigned() ||
          d.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) {
        return InvalidInput(where, "non-negative integer dimensions", shape->dump());
      }
      info.shape.push_back(d.get<int64_t>());
    }
    auto offsets = entry.find("data_offsets");
    if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2 ||
        !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned()) {
      return InvalidInput(where, "'data_offsets' [begin, end] of non-negative integers",
                          offsets == entry.end() ? std::string("none") : offsets->dump());
    }
    const uint64_t begin = (*offsets)[0].get<uint64_t>();
    const uint64_t end = (*offsets)[1].get<uint64_t>();
    if (begin > end) {
      return InvalidInput(where, "data_offsets with begin <= end", offsets->dump());
    }
    if (end > data_size) {
      return InvalidInput(where,
                          absl::StrCat("data_offsets within the ", data_size, "-byte data section"),
                          absl::StrCat(offsets->dump(), " (offsets past the end of the file)"));
    }
    // numel fits easily: each dimension is < 2^31 and the product must equal the byte count.
    long double numel = 1;
    for (int64_t d : info.shape) numel *= static_cast<long double>(d);
    if (numel * elem_bytes != static_cast<long double>(end - begin)) {
      return InvalidInput(where,
                          absl::StrCat(ShapeToString(info.shape), " ", info.dtype, " = ",
                                       static_cast<uint64_t>(numel * elem_bytes), " bytes"),
                          absl::StrCat(end - begin, " bytes in data_offsets ", offsets->dump()));
    }
    info.begin = data_begin + begin;
    info.end = data_begin + end;
    index_[name] = tensors_.size();
    tensors_.push_back(std::move(info));
  }
  // Overlapping byte ranges mean a corrupt (or malicious) header.
  std::vector<const SafetensorsTensorInfo*> by_offset;
  for (const auto& t : tensors_) {
    if (t.end > t.begin) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto* a, const auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const auto* prev = by_offset[i - 1];
    const auto* cur = by_offset[i];
    if (cur->begin < prev->end) {
      return InvalidInput(
          absl::StrCat(path_, ": tensors ", Quote(prev->name), " and ", Quote(cur->name)),
          "disjoint data_offsets",
          absl::StrCat("overlapping ranges [", prev->begin - data_begin, ", ",
                       prev->end - data_begin, ") and [", cur->begin - data_begin, ", ",
                       cur->end - data_begin, ")"));
    }
  }
  return absl::OkStatus();
}

const SafetensorsTensorInfo* SafetensorsFile::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<const SafetensorsTensorInfo*> SafetensorsFile::Lookup(
    const std::string& name, const std::vector<int64_t>& expected_shape) const {
  const SafetensorsTensorInfo* info = Find(name);
  if (info == nullptr) {
    return absl::NotFoundError(
        absl::StrCat(path_, ": tensor ", Quote(name), ": expected in the file, found missing"));
  }
  if (!expected_shape.empty() && expected_shape != info->shape) {
    return InvalidInput(absl::StrCat(path_, ": tensor ", Quote(name)),
                        absl::StrCat("shape ", ShapeToString(expected_shape)),
                        ShapeToString(info->shape));
  }
  return info;
}

absl::StatusOr<Tensor> SafetensorsFile::GetRaw(const std::string& name,
                                               const std::vector<int64_t>& expected_shape) const {
  FLUXATTN_ASSIGN_OR_RETURN(const SafetensorsTensorInfo* info, Lookup(name, expected_shape));
  DType dtype;
  if (info->dtype == "F32") {
    dtype = DType::kF32;
  } else if (info->dtype == "BF16") {
    dtype = DType::kBF16;
  } else if (info->dtype == "F16") {
    dtype = DType::kF16;
  } else {
    return GetF32(name, expected_shape);  // F64 converted; other dtypes refused there
  }
  const size_t bytes = static_cast<size_t>(info->end - info->begin);
  const uint8_t* src = data_ + info->begin;
  if (reinterpret_cast<uintptr_t>(src) % DTypeSize(dtype) == 0) {
    // Zero copy: the tensor keeps the mapping alive.
    auto buffer = Buffer::Borrow(CpuDevice(), const_cast<uint8_t*>(src), bytes,
                                 std::const_pointer_cast<SafetensorsFile>(shared_from_this()));
    return Tensor::FromBuffer(std::move(buffer), 0, info->shape, dtype);
  }
  FLUXATTN_ASSIGN_OR_RETURN(Tensor out, Tensor::Empty(info->shape, dtype, CpuDevice()));
  std::memcpy(out.raw_data(), src, bytes);
  return out;
}

absl::StatusOr<Tensor> SafetensorsFile::GetF32(const std::string& name,
                                               const std::vector<int64_t>& expected_shape) const {
  FLUXATTN_ASSIGN_OR_RETURN(const SafetensorsTensorInfo* info, Lookup(name, expected_shape));
  const int64_t n = info->numel();
  const uint8_t* src = data_ + info->begin;
  if (info->dtype == "F32" && reinterpret_cast<uintptr_t>(src) % alignof(float) == 0) {
    // Zero copy: the tensor keeps the mapping alive.
    auto buffer = Buffer::Borrow(CpuDevice(), const_cast<uint8_t*>(src), n * sizeof(float),
                                 std::const_pointer_cast<SafetensorsFile>(shared_from_this()));
    return Tensor::FromBuffer(std::move(buffer), 0, info->shape, DType::kF32);
  }
  FLUXATTN_ASSIGN_OR_RETURN(Tensor out, Tensor::Empty(info->shape, DType::kF32, CpuDevice()));
  float* dst = out.data<float>();
  if (info->dtype == "F32") {
    std::memcpy(dst, src, n * sizeof(float));
  } else if (info->dtype == "BF16" || info->dtype == "F16") {
    const bool bf16 = info->dtype == "BF16";
    for (int64_t i = 0; i < n; ++i) {
      uint16_t bits;
      std::memcpy(&bits, src + 2 * i, 2);
      dst[i] = bf16 ? BF16ToFloat(bits) : F16ToFloat(bits);
    }
  } else if (info->dtype == "F64") {
    for (int64_t i = 0; i < n; ++i) {
      double v;
      std::memcpy(&v, src + 8 * i, 8);
      dst[i] = static_cast<float>(v);
    }
  } else {
    return InvalidInput(absl::StrCat(path_, ": tensor ", Quote(name)),
                        "a floating-point dtype (F32, BF16, F16, F64)", info->dtype);
  }
  return out;
}

namespace {

class SafetensorsWeightSource : public WeightSource {
 public:
  explicit SafetensorsWeightSource(std::vector<std::shared_ptr<SafetensorsFile>> files,
                                   std::map<std::string, SafetensorsFile*> owner)
      : files_(std::move(files)), owner_(std::move(owner)) {}

  bool Has(const std::string& name) const override { return owner_.count(name) != 0; }
  std::vector<std::string> Names() const override {
    std::vector<std::string> names;
    names.reserve(owner_.size());
    for (const auto& [name, file] : owner_) names.push_back(name);
    return names;
  }
  absl::StatusOr<Tensor> GetF32(const std::string& name,
                                const std::vector<int64_t>& expected_shape) const override {
    auto it = owner_.find(name);
    if (it == owner_.end()) {
      std::string where = files_.size() == 1 ? files_[0]->path() : "checkpoint";
      return absl::NotFoundError(absl::StrCat(where, ": tensor ", Quote(name),
                                              ": expected in the checkpoint, found missing"));
    }
    return it->second->GetF32(name, expected_shape);
  }
  absl::StatusOr<Tensor> GetRaw(const std::string& name,
                                const std::vector<int64_t>& expected_shape) const override {
    auto it = owner_.find(name);
    if (it == owner_.end()) {
      std::string where = files_.size() == 1 ? files_[0]->path() : "checkpoint";
      return absl::NotFoundError(absl::StrCat(where, ": tensor ", Quote(name),
                                              ": expected in the checkpoint, found missing"));
    }
    return it->second->GetRaw(name, expected_shape);
  }

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, SafetensorsFile*> owner_;
};

absl::StatusOr<std::unique_ptr<WeightSource>> OpenIndex(const std::string& index_path) {
  std::ifstream in(index_path);
  if (!in) return absl::NotFoundError(absl::StrCat(index_path, ": cannot open"));
  json index;
  try {
    index = json::parse(in);
  } catch (const json::exception& e) {
    return InvalidInput(index_path, "valid JSON", absl::StrCat("a parse error (", e.what(), ")"));
  }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    return InvalidInput(index_path, "an object with a 'weight_map' object", "none");
  }
  const std::filesystem::path dir = std::filesystem::path(index_path).parent_path();
  std::map<std::string, std::shared_ptr<SafetensorsFile>> shards;
  std::vector<std::shared_ptr<SafetensorsFile>> files;
  std::map<std::string, SafetensorsFile*> owner;
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
    if (!it.value().is_string()) {
      return InvalidInput(absl::StrCat(index_path, ": weight_map[", Quote(it.key()), "]"),
                          "a shard file name", it.value().dump());
    }
    const std::string shard = it.value().get<std::string>();
    if (shard.find('/') != std::string::npos) {
      return InvalidInput(absl::StrCat(index_path, ": weight_map[", Quote(it.key()), "]"),
                          "a file name inside the checkpoint folder", shard);
    }
    auto found = shards.find(shard);
    if (found == shards.end()) {
      FLUXATTN_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open((dir / shard).string()));
      found = shards.emplace(shard, file).first;
      files.push_back(file);
    }
    if (found->second->Find(it.key()) == nullptr) {
      return InvalidInput(absl::StrCat(index_path, ": tensor ", Quote(it.key())),
                          absl::StrCat("present in shard ", shard), "missing from that shard");
    }
    owner[it.key()] = found->second.get();
  }
  return std::unique_ptr<WeightSource>(
      new SafetensorsWeightSource(std::move(files), std::move(owner)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<WeightSource>> OpenSafetensorsWeights(const std::string& path) {
  FLUXATTN_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
  std::map<std::string, SafetensorsFile*> owner;
  for (const auto& t : file->tensors()) owner[t.name] = file.get();
  std::vector<std::shared_ptr<SafetensorsFile>> files{file};
  return std::unique_ptr<WeightSource>(
      new SafetensorsWeightSource(std::move(files), std::move(owner)));
}

absl::StatusOr<std::unique_ptr<WeightSource>> OpenCheckpointWeights(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return InvalidInput(dir, "a checkpoint folder", "no such folder");
  }
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(index, ec)) return OpenIndex(index.string());
  const fs::path single = fs::path(dir) / "model.safetensors";
  if (fs::exists(single, ec)) return OpenSafetensorsWeights(single.string());
  std::vector<fs::path> candidates;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".safetensors") candidates.push_back(entry.path());
  }
  if (candidates.size() == 1) return OpenSafetensorsWeights(candidates[0].string());
  return InvalidInput(dir, "model.safetensors or model.safetensors.index.json",
                      candidates.empty()
                          ? "no safetensors file"
                          : absl::StrCat(candidates.size(), " safetensors files and no index"));
}

}  // namespace fluxattn::models
