// Token counts written the way people write context lengths: "512", "4k" (4096), "1m" (2^20).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fluxattn::eval {

// Parses one length: digits, optionally followed by k/K (x1024) or m/M (x1048576). The result
// must be in [1, 2^40]. `flag` names the option in the error ("--context").
absl::StatusOr<int64_t> ParseLength(absl::string_view text, absl::string_view flag);

// Parses a comma-separated list of lengths ("1k,4k,16k"); empty entries are errors.
absl::StatusOr<std::vector<int64_t>> ParseLengthList(absl::string_view text,
                                                     absl::string_view flag);

// The shortest spelling ParseLength reads back: 4096 -> "4k", 1048576 -> "1m", 1000 -> "1000".
std::string FormatLength(int64_t tokens);

// Splits "a,b,c" into trimmed, non-empty names; an empty entry is an error naming `flag`.
absl::StatusOr<std::vector<std::string>> ParseNameList(absl::string_view text,
                                                       absl::string_view flag);

}  // namespace fluxattn::eval
