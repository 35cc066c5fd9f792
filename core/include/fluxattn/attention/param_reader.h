// Reading validated plugin parameters with errors instead of aborts: the core validates configs
// against ParamSpecs, but instances built in code (tests, benchmarks) can still pass anything.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>
#include <variant>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "fluxattn/params.h"

namespace fluxattn {

// The value of `name` as T (bool, int64_t, double or std::string); an integer is accepted for a
// double.
template <typename T>
absl::StatusOr<T> ReadParam(const ParamValues& params, const std::string& name) {
  static constexpr const char* kTypeNames[] = {"bool",   "integer",      "float",
                                               "string", "integer list", "string list"};
  auto it = params.values().find(name);
  if (it == params.values().end()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": expected a value, found none"));
  }
  if (const T* value = std::get_if<T>(&it->second)) return *value;
  if constexpr (std::is_same_v<T, double>) {
    if (const int64_t* value = std::get_if<int64_t>(&it->second)) {
      return static_cast<double>(*value);
    }
  }
  const ParamValue wanted{T{}};
  return absl::InvalidArgumentError(absl::StrCat(name, ": expected a ", kTypeNames[wanted.index()],
                                                 ", found a ", kTypeNames[it->second.index()]));
}

}  // namespace fluxattn
