// Plugins composed from an EngineConfig (config.h), however it was made (parsed from TOML or
// built in code): every plugin found with the right kind, every parameter checked against the
// plugin's ParamSpecs, every backend name a router or layer override uses resolved. Errors name
// the config key and where it was written.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fluxattn/params.h"
#include "fluxattn/plugin_registry.h"

namespace fluxattn {

struct EngineConfig;
struct PluginInstanceConfig;

// Checks `instance.raw_params` against `specs` (unknown keys, types, ranges, choices, required)
// and fills `instance.params` with explicit values and defaults.
absl::Status ValidatePluginParams(const std::vector<ParamSpec>& specs,
                                  PluginInstanceConfig& instance);

// Loads the plugin files the config names by path, then scans plugins.paths and the default
// search path into `registry`.
absl::Status PrepareRegistry(EngineConfig& config, PluginRegistry& registry);

// Plugins instantiated from a config: every name resolved, every parameter validated.
struct Composition {
  std::map<std::string, PluginPtr<AttentionBackend>> backends;
  std::map<std::string, std::string> backend_plugins;  // instance -> plugin name (for traces)
  PluginPtr<RoutingPolicy> router;
  std::string full_backend;
  std::string sparse_backend;
  std::map<std::string, PluginPtr<RoutingPolicy>> routers;
  std::map<int, std::string> layer_backends;
  // Backend instance -> the instance that serves its prefill / decode ([backends.<name>]
  // prefill_with / decode_with); absent: the instance itself.
  std::map<std::string, std::string> prefill_with;
  std::map<std::string, std::string> decode_with;
};

// Finds each plugin (right kind), validates parameters, checks that the router and the layer
// overrides name existing backends, and creates the instances.
absl::StatusOr<Composition> Compose(EngineConfig& config, const PluginRegistry& registry);

}  // namespace fluxattn
