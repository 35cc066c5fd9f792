// Error and key helpers shared by the TOML parser (config.cc) and the composition
// (composition.cc): one message shape for every configuration error.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "fluxattn/config.h"
#include "fluxattn/params.h"
#include "fluxattn/status.h"

namespace fluxattn::config_internal {

// "<file:line:col>: key '<key>': expected <expected>, found <found>"
inline absl::Status KeyError(const SourceLocation& where, const std::string& key,
                      const std::string& expected, const std::string& found) {
  return absl::InvalidArgumentError(OneLine(
      absl::StrCat(where.ToString(), ": key '", key, "': expected ", expected, ", found ", found)));
}

inline std::string Quoted(const std::string& s) { return absl::StrCat("\"", s, "\""); }

inline std::string JoinKey(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : absl::StrCat(prefix, ".", key);
}

inline std::string FormatNumber(double v, bool integral) {
  if (integral && std::isfinite(v) && std::abs(v) < 9.0e15) {
    return absl::StrCat(static_cast<int64_t>(v));
  }
  return ParamValueToString(ParamValue(v));
}

}  // namespace fluxattn::config_internal
