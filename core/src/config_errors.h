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

// Each backend's prefill_with / decode_with names another configured backend, one that serves
// its phase itself (no chains), with `where(key)` the location of a key for the error.
template <typename Where>
absl::Status CheckPhaseDelegates(const EngineConfig& config, const Where& where) {
  for (const auto& [name, instance] : config.backends) {
    for (const auto& [phase, other] :
         {std::pair<std::string, std::string>{"prefill_with", instance.prefill_with},
          {"decode_with", instance.decode_with}}) {
      if (other.empty()) continue;
      const std::string key = JoinKey(JoinKey("backends", name), phase);
      auto it = config.backends.find(other);
      if (it == config.backends.end() || other == name) {
        std::string names;
        for (const auto& [n, b] : config.backends) {
          if (n == name) continue;
          names += names.empty() ? n : ", " + n;
        }
        return KeyError(where(key), key,
                        absl::StrCat("the name of another [backends.<name>] table (",
                                     names.empty() ? "none defined" : names, ")"),
                        Quoted(other));
      }
      const std::string& chained =
          phase == "prefill_with" ? it->second.prefill_with : it->second.decode_with;
      if (!chained.empty()) {
        return KeyError(
            where(key), key,
            absl::StrCat("a backend that serves its ", phase.substr(0, phase.find('_')), " itself"),
            absl::StrCat(Quoted(other), ", whose ", phase, " is ", Quoted(chained)));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace fluxattn::config_internal
