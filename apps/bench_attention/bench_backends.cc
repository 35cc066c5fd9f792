#include "bench_backends.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "fluxattn/config.h"

namespace fluxattn::bench {
namespace {

struct BenchBackend {
  std::string plugin;
  std::map<std::string, ParamValue> params;
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
        {{"block_size", int64_t{128}},
         {"stride", int64_t{8}},
         {"threshold", 0.9},
         {"decode", std::string("streaming")},
         {"decode_sink_tokens", int64_t{128}},
         {"decode_window_tokens", int64_t{2048}}}}},
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
    out[name] = text;
  }
  return out;
}

absl::StatusOr<PluginPtr<AttentionBackend>> MakeBenchBackend(const PluginRegistry& registry,
                                                             const std::string& name) {
  auto it = Configs().find(name);
  if (it == Configs().end()) {
    std::string known;
    for (const auto& [key, unused] : Configs())
      absl::StrAppend(&known, known.empty() ? "" : ", ", key);
    return absl::NotFoundError(absl::StrCat("expected one of ", known, ", found \"", name, "\""));
  }
  absl::StatusOr<const PluginInfo*> info =
      registry.Find(it->second.plugin, PluginKind::kAttentionBackend);
  if (!info.ok()) return info.status();
  PluginInstanceConfig instance;
  instance.name = name;
  instance.plugin = it->second.plugin;
  instance.table = absl::StrCat("backends.", name);
  for (const auto& [key, value] : it->second.params) {
    instance.raw_params[key] = RawParam{value, SourceLocation{"bench_attention", 0, 0}};
  }
  absl::Status valid = ValidatePluginParams((*info)->params, instance);
  if (!valid.ok()) return valid;
  return registry.CreateBackend(it->second.plugin, instance.params);
}

}  // namespace fluxattn::bench
