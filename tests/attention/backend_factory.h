// Attention backends for tests and benchmarks, made from a plugin name and parameter overrides
// the way the core makes them from a config: declared defaults first, then the overrides.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "fluxattn/attention_backend.h"
#include "fluxattn/params.h"

namespace fluxattn::testing {

struct BackendFactory {
  std::function<std::vector<ParamSpec>()> params;
  std::function<absl::StatusOr<std::unique_ptr<AttentionBackend>>(const ParamValues&)> create;
};

// Every plugin this test binary links, by plugin name.
const std::map<std::string, BackendFactory>& BackendFactories();

// Declared defaults overridden by `overrides`; an override of an undeclared name is an error.
inline absl::StatusOr<ParamValues> ParamsWithDefaults(
    const std::vector<ParamSpec>& specs, const std::map<std::string, ParamValue>& overrides) {
  std::map<std::string, ParamValue> values;
  for (const ParamSpec& spec : specs) {
    if (spec.default_value) values[spec.name] = *spec.default_value;
  }
  for (const auto& [name, value] : overrides) {
    bool declared = false;
    for (const ParamSpec& spec : specs) declared |= spec.name == name;
    if (!declared) return absl::InvalidArgumentError(absl::StrCat("undeclared parameter ", name));
    values[name] = value;
  }
  return ParamValues(std::move(values));
}

inline absl::StatusOr<std::unique_ptr<AttentionBackend>> MakeBackend(
    const std::string& plugin, const std::map<std::string, ParamValue>& overrides) {
  auto it = BackendFactories().find(plugin);
  if (it == BackendFactories().end()) {
    return absl::NotFoundError(absl::StrCat("no attention plugin ", plugin));
  }
  absl::StatusOr<ParamValues> params = ParamsWithDefaults(it->second.params(), overrides);
  if (!params.ok()) return params.status();
  return it->second.create(*params);
}

}  // namespace fluxattn::testing
