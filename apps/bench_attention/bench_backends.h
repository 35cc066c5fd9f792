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

// The instances that run one configuration's prefill and its decode: the same one, unless the
// configuration hands its decode to another (like decode_with in a config).
struct BenchInstances {
  PluginPtr<AttentionBackend> prefill;
  PluginPtr<AttentionBackend> decode;  // null: `prefill` serves the decode too
  AttentionBackend& decode_backend() const { return decode ? *decode : *prefill; }
};

// Instances of configuration `name` from `registry`, parameters validated like a config's.
absl::StatusOr<BenchInstances> MakeBenchBackend(const PluginRegistry& registry,
                                                const std::string& name);

}  // namespace fluxattn::bench
