#include "fluxattn/status.h"

namespace fluxattn {

absl::Status InvalidInput(absl::string_view where, absl::string_view expected,
                          absl::string_view found) {
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": expected ", expected, ", found ", found));
}

absl::Status Annotate(const absl::Status& status, absl::string_view where) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(where, ": ", status.message()));
}

std::string OneLine(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte != 0x7f) {
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else {
      absl::StrAppend(&out, "\\x", absl::Hex(byte, absl::kZeroPad2));
    }
  }
  return out;
}

}  // namespace fluxattn

#include <cstdio>
#include <cstdlib>

namespace fluxattn::internal {

void CheckFailed(const char* file, int line, const char* condition) {
  std::fprintf(stderr, "fluxattn: internal check failed at %s:%d: %s\n", file, line, condition);
  std::abort();
}

}  // namespace fluxattn::internal
