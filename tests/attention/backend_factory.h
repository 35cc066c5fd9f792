// Attention backends for tests, made from a plugin name and parameter overrides the way the
// engine makes them from a config: the overrides are validated against the plugin's declared
// ParamSpecs, defaults fill the rest. Two implementations: loaded_backends.cc loads the built
// plugin libraries through the PluginRegistry, linked_backends.cc constructs the classes linked
// into the test directly.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fluxattn/attention_backend.h"
#include "fluxattn/params.h"
#include "fluxattn/plugin_registry.h"

namespace fluxattn::testing {

using BackendPtr = PluginPtr<AttentionBackend>;

// The plugin's declared parameters.
absl::StatusOr<std::vector<ParamSpec>> BackendParams(const std::string& plugin);

absl::StatusOr<BackendPtr> MakeBackend(const std::string& plugin,
                                       const std::map<std::string, ParamValue>& overrides);

// Declared defaults overridden by `overrides` (used where no config validation is at hand).
absl::StatusOr<ParamValues> ParamsWithDefaults(const std::vector<ParamSpec>& specs,
                                               const std::map<std::string, ParamValue>& overrides);

}  // namespace fluxattn::testing
