// The backend configurations the attention benchmark compares, loaded as plugins.
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "fluxattn/attention_backend.h"
#include "fluxattn/plugin_registry.h"

namespace fluxattn::bench {

// Configuration name -> "plugin key=value ..." (for the report).
std::map<std::string, std::string> BenchBackendDescriptions();

// Instance of configuration `name` from `registry`, parameters validated like a config's.
absl::StatusOr<PluginPtr<AttentionBackend>> MakeBenchBackend(const PluginRegistry& registry,
                                                             const std::string& name);

}  // namespace fluxattn::bench
