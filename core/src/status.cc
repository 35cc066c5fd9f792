#include "fluxattn/status.h"

namespace fluxattn {

absl::Status InvalidInput(absl::string_view where, absl::string_view expected,
                          absl::string_view found) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": expected ", expected, ", found ", found));
}

absl::Status Annotate(const absl::Status& status, absl::string_view where) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(where, ": ", status.message()));
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
