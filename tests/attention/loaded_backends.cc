// Backends loaded from the plugin libraries of this build tree through the PluginRegistry.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "backend_factory.h"
#include "fluxattn/config.h"

namespace fluxattn::testing {
namespace {

const PluginRegistry& Registry() {
  static PluginRegistry* registry = [] {
    auto* r = new PluginRegistry();
    // FLUXATTN_PLUGIN_DIR points elsewhere where the binaries run away from this build tree
    // (the GPU machine's bundle).
    const char* env = std::getenv("FLUXATTN_PLUGIN_DIR");
    const std::string dir = env != nullptr && *env != '\0' ? env : FLUXATTN_TEST_PLUGIN_DIR;
    absl::Status scanned = r->ScanDirectory(dir);
    if (!scanned.ok()) {
      std::fprintf(stderr, "cannot scan %s: %s\n", dir.c_str(),
                   std::string(scanned.message()).c_str());
    }
    return r;
  }();
  return *registry;
}

}  // namespace

absl::StatusOr<std::vector<ParamSpec>> BackendParams(const std::string& plugin) {
  absl::StatusOr<const PluginInfo*> info = Registry().Find(plugin, PluginKind::kAttentionBackend);
  if (!info.ok()) return info.status();
  return (*info)->params;
}

absl::StatusOr<BackendPtr> MakeBackend(const std::string& plugin,
                                       const std::map<std::string, ParamValue>& overrides) {
  absl::StatusOr<std::vector<ParamSpec>> specs = BackendParams(plugin);
  if (!specs.ok()) return specs.status();
  PluginInstanceConfig instance;
  instance.name = plugin;
  instance.plugin = plugin;
  instance.table = absl::StrCat("backends.", plugin);
  for (const auto& [key, value] : overrides) {
    instance.raw_params[key] = RawParam{value, SourceLocation{"test", 1, 1}};
  }
  absl::Status valid = ValidatePluginParams(*specs, instance);
  if (!valid.ok()) return valid;
  return Registry().CreateBackend(plugin, instance.params);
}

absl::StatusOr<ParamValues> ParamsWithDefaults(const std::vector<ParamSpec>& specs,
                                               const std::map<std::string, ParamValue>& overrides) {
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

}  // namespace fluxattn::testing
