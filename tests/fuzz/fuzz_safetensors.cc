// Fuzz target: safetensors headers and tensor tables. The input is written to a temporary file
// (the reader memory-maps files) and opened. Any input must give either a file whose tensor
// table is consistent, or one error line naming the file. Tensors of a file that opened are all
// read as float32: each read succeeds with the declared element count, or fails clearly.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "fluxattn/models/safetensors.h"
#include "fuzz_check.h"

namespace {

using fluxattn::fuzz::Fail;

const std::string& TempPath() {
  static const std::string path = [] {
    const char* dir = std::getenv("TMPDIR");
    return absl::StrCat(dir != nullptr ? dir : "/tmp", "/fluxattn_fuzz_", getpid(), ".safetensors");
  }();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = TempPath();
  FILE* out = std::fopen(path.c_str(), "wb");
  if (out == nullptr) Fail("temporary file can be written", path);
  if (size > 0 && std::fwrite(data, 1, size, out) != size) Fail("temporary file written", path);
  std::fclose(out);

  auto file = fluxattn::models::SafetensorsFile::Open(path);
  if (!file.ok()) {
    fluxattn::fuzz::CheckUserError(file.status(), path);
    std::remove(path.c_str());
    return 0;
  }
  const auto& tensors = (*file)->tensors();
  for (const auto& t : tensors) {
    if (t.begin > t.end || t.end > size) {
      Fail("tensor bytes lie inside the file", absl::StrCat(t.name, " ", t.begin, "..", t.end));
    }
    for (int64_t d : t.shape) {
      if (d < 0) Fail("dimensions are non-negative", t.name);
    }
    for (const auto& other : tensors) {
      if (&other != &t && t.begin < other.end && other.begin < t.end) {
        Fail("tensors do not overlap", absl::StrCat(t.name, " and ", other.name));
      }
    }
    if ((*file)->Find(t.name) != &t) Fail("Find returns the listed tensor", t.name);
    auto tensor = (*file)->GetF32(t.name, {});
    if (!tensor.ok()) {
      fluxattn::fuzz::CheckUserError(tensor.status(), path);
      continue;
    }
    if (tensor->numel() != t.numel()) {
      Fail("float32 copy has the declared element count",
           absl::StrCat(t.name, ": ", tensor->numel(), " vs ", t.numel()));
    }
  }
  // Keeps the mapping alive until here, then the file can go.
  file->reset();
  std::remove(path.c_str());
  return 0;
}
