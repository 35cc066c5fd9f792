#include "bench_backends.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "fluxattn/config.h"

namespace fluxattn::bench {
namespace {

struct BenchBackend {
  std::string plugin;
  std::map<std::string, ParamValue> params;
  std::string decode_with;  // another configuration that serves the decode (as in a config)
};

// Settings of the Flux Attention paper's sparse layers (sink 128, window 2048, blocks of 128)
// and common defaults of the other strategies.
const std::map<std::string, BenchBackend>& Configs() {
  static const auto* configs = new std::map<std::string, BenchBackend>{
      {"full", {"full", {}}},
      {"streaming",
       {"streaming",
        {{"sink_tokens", int64_t{128}},
         {"window_tokens", int64_t{2048}},
         {"block_size", int64_t{128}}}}},
      {"xattention",
       {"xattention",
        {{"block_size", int64_t{128}}, {"stride", int64_t{8}}, {"threshold", 0.9}},
        "streaming"}},
      {"quest", {"quest", {{"page_size", int64_t{16}}, {"budget_tokens", int64_t{2048}}}}},
      {"triangle",
       {"triangle",
        {{"sink_tokens", int64_t{128}},
         {"window_tokens", int64_t{2048}},
         {"block_size", int64_t{128}},
         {"last_n", int64_t{128}}}}},
  };
  return *configs;
}

}  // namespace

std::map<std::string, std::string> BenchBackendDescriptions() {
  std::map<std::string, std::string> out;
  for (const auto& [name, config] : Configs()) {
    std::string text = config.plugin;
    for (const auto& [key, value] : config.params) {
      absl::StrAppend(&text, " ", key, "=", ParamValueToString(value));
    }
    if (!config.decode_with.empty()) absl::StrAppend(&text, " decode_with=", config.decode_with);
    out[name] = text;
  }
  return out;
}

absl::StatusOr<BenchInstances> MakeBenchBackend(const PluginRegistry& registry,
                                                const std::string& name) {
  auto make = [&](const std::string& config) -> absl::StatusOr<PluginPtr<AttentionBackend>> {
    auto it = Configs().find(config);
    if (it == Configs().end()) {
      std::string known;
      for (const auto& [key, unused] : Configs())
        absl::StrAppend(&known, known.empty() ? "" : ", ", key);
      return absl::NotFoundError(
          absl::StrCat("expected one of ", known, ", found \"", config, "\""));
    }
    absl::StatusOr<const PluginInfo*> info =
        registry.Find(it->second.plugin, PluginKind::kAttentionBackend);
    if (!info.ok()) return info.status();
    PluginInstanceConfig instance;
    instance.name = config;
    instance.plugin = it->second.plugin;
    instance.table = absl::StrCat("backends.", config);
    for (const auto& [key, value] : it->second.params) {
      instance.raw_params[key] = RawParam{value, SourceLocation{"bench_attention", 0, 0}};
    }
    absl::Status valid = ValidatePluginParams((*info)->params, instance);
    if (!valid.ok()) return valid;
    return registry.CreateBackend(it->second.plugin, instance.params);
  };
  BenchInstances instances;
  absl::StatusOr<PluginPtr<AttentionBackend>> prefill = make(name);
  if (!prefill.ok()) return prefill.status();
  instances.prefill = std::move(*prefill);
  const std::string& decode_with = Configs().at(name).decode_with;
  if (!decode_with.empty()) {
    absl::StatusOr<PluginPtr<AttentionBackend>> decode = make(decode_with);
    if (!decode.ok()) return decode.status();
    instances.decode = std::move(*decode);
  }
  return instances;
}

}  // namespace fluxattn::bench
