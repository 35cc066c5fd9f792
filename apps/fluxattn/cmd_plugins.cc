// `fluxattn plugins`: every plugin found on the search path with its kind, version, ABI, file,
// capabilities and parameters, and every file that failed to load with the reason.
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "command.h"
#include "configuration_markdown.h"
#include "fluxattn/config.h"
#include "fluxattn/plugin_registry.h"
#include "fluxattn/status.h"
#include "fluxattn/tensor.h"
#include "nlohmann/json.hpp"

namespace fluxattn::cli {
namespace {

using json = nlohmann::ordered_json;

json ParamValueToJson(const ParamValue& value) {
  return std::visit([](const auto& v) { return json(v); }, value);
}

std::string RangeText(const ParamSpec& spec) {
  const bool integral = spec.type == ParamType::kInt || spec.type == ParamType::kIntList;
  auto number = [&](double v) {
    return integral ? absl::StrCat(static_cast<int64_t>(v)) : ParamValueToString(ParamValue(v));
  };
  if (spec.min_value && spec.max_value) {
    return absl::StrCat("[", number(*spec.min_value), ", ", number(*spec.max_value), "]");
  }
  if (spec.min_value) return absl::StrCat(">= ", number(*spec.min_value));
  if (spec.max_value) return absl::StrCat("<= ", number(*spec.max_value));
  if (!spec.choices.empty()) {
    std::vector<std::string> quoted;
    for (const std::string& c : spec.choices) quoted.push_back(absl::StrCat("\"", c, "\""));
    return absl::StrCat("one of ", absl::StrJoin(quoted, ", "));
  }
  return "any";
}

// Capabilities of a backend made with default parameters; an error when that is impossible
// (a required parameter, or the plugin refusing its defaults).
absl::StatusOr<AttentionCapabilities> DefaultCapabilities(const PluginRegistry& registry,
                                                          const PluginInfo& info) {
  PluginInstanceConfig instance;
  instance.name = info.name;
  instance.plugin = info.name;
  instance.table = absl::StrCat("backends.", info.name);
  instance.where = {"<defaults>", 0, 0};
  absl::Status valid = ValidatePluginParams(info.params, instance);
  if (!valid.ok()) return valid;
  FLUXATTN_ASSIGN_OR_RETURN(PluginPtr<AttentionBackend> backend,
                            registry.CreateBackend(info.name, instance.params));
  return backend->capabilities();
}

json CapabilitiesJson(const AttentionCapabilities& caps) {
  json j;
  j["devices"] = json::array();
  for (DeviceType d : caps.devices) j["devices"].push_back(DeviceTypeName(d));
  j["dtypes"] = json::array();
  for (DType d : caps.dtypes) j["dtypes"].push_back(DTypeName(d));
  j["head_dims"] = caps.head_dims;
  j["prefill"] = caps.prefill;
  j["decode"] = caps.decode;
  j["data_dependent_layout"] = caps.data_dependent_layout;
  return j;
}

std::string CapabilitiesText(const AttentionCapabilities& caps) {
  std::vector<std::string> devices, dtypes;
  for (DeviceType d : caps.devices) devices.push_back(DeviceTypeName(d));
  for (DType d : caps.dtypes) dtypes.push_back(DTypeName(d));
  return absl::StrCat(
      "devices ", absl::StrJoin(devices, ","), "; dtypes ", absl::StrJoin(dtypes, ","),
      "; head dims ", caps.head_dims.empty() ? "any" : absl::StrJoin(caps.head_dims, ","),
      "; prefill ", caps.prefill ? "yes" : "no", "; decode ", caps.decode ? "yes" : "no",
      "; layout ", caps.data_dependent_layout ? "data-dependent" : "shape-only");
}

json ParamsJson(const std::vector<ParamSpec>& specs) {
  json params = json::array();
  for (const ParamSpec& spec : specs) {
    json p;
    p["name"] = spec.name;
    p["type"] = ParamTypeName(spec.type);
    p["default"] = spec.default_value ? ParamValueToJson(*spec.default_value) : json();
    p["required"] = !spec.default_value.has_value();
    // Bounds of integer parameters are integers in the listing too.
    auto bound = [&](const std::optional<double>& v) {
      if (!v) return json();
      if (spec.type == ParamType::kInt || spec.type == ParamType::kIntList) {
        return json(static_cast<int64_t>(*v));
      }
      return json(*v);
    };
    p["min"] = bound(spec.min_value);
    p["max"] = bound(spec.max_value);
    p["choices"] = spec.choices;
    p["description"] = spec.description;
    params.push_back(p);
  }
  return params;
}

int Run(const std::vector<std::string>& paths, bool as_json, bool as_markdown) {
  PluginRegistry registry;
  absl::Status scanned = registry.ScanSearchPath(paths);
  if (!scanned.ok()) {
    PrintError(std::string(scanned.message()));
    return kExitFailure;
  }
  std::vector<PluginInfo> plugins = registry.List();
  if (as_markdown) {
    std::cout << ConfigurationMarkdown(plugins);
    return kExitOk;
  }
  if (as_json) {
    json out;
    out["search_path"] = registry.searched_directories();
    out["plugins"] = json::array();
    for (const PluginInfo& info : plugins) {
      json p;
      p["name"] = info.name;
      p["kind"] = PluginKindName(info.kind);
      p["version"] = info.version;
      p["abi"] = absl::StrCat(info.abi_major, ".", info.abi_minor);
      p["build_id"] = info.build_id;
      p["path"] = info.path;
      p["summary"] = info.summary;
      if (info.kind == PluginKind::kAttentionBackend) {
        absl::StatusOr<AttentionCapabilities> caps = DefaultCapabilities(registry, info);
        p["capabilities"] = caps.ok() ? CapabilitiesJson(*caps) : json();
        if (!caps.ok()) p["capabilities_error"] = std::string(caps.status().message());
      } else {
        p["capabilities"] = json();
      }
      p["parameters"] = ParamsJson(info.params);
      out["plugins"].push_back(p);
    }
    out["failures"] = json::array();
    for (const PluginLoadFailure& f : registry.failures()) {
      out["failures"].push_back({{"path", f.path}, {"error", std::string(f.status.message())}});
    }
    std::cout << out.dump(2) << "\n";
    return kExitOk;
  }

  std::cout << "search path:\n";
  for (const std::string& dir : registry.searched_directories()) std::cout << "  " << dir << "\n";
  for (PluginKind kind : {PluginKind::kAttentionBackend, PluginKind::kRoutingPolicy}) {
    std::cout << "\n" << PluginKindName(kind) << " plugins:\n";
    int shown = 0;
    for (const PluginInfo& info : plugins) {
      if (info.kind != kind) continue;
      ++shown;
      std::cout << "  " << info.name << " " << info.version << "  (ABI " << info.abi_major << "."
                << info.abi_minor << ")  " << info.path << "\n";
      if (!info.summary.empty()) std::cout << "    " << info.summary << "\n";
      if (kind == PluginKind::kAttentionBackend) {
        absl::StatusOr<AttentionCapabilities> caps = DefaultCapabilities(registry, info);
        std::cout << "    capabilities: "
                  << (caps.ok() ? CapabilitiesText(*caps)
                                : absl::StrCat("unavailable (", caps.status().message(), ")"))
                  << "\n";
      }
      if (info.params.empty()) {
        std::cout << "    parameters: none\n";
        continue;
      }
      std::cout << "    parameters:\n";
      for (const ParamSpec& spec : info.params) {
        std::cout << "      " << spec.name << " (" << ParamTypeName(spec.type) << ", "
                  << (spec.default_value ? "default " + ParamValueToString(*spec.default_value)
                                         : std::string("required"))
                  << ", " << RangeText(spec) << "): " << spec.description << "\n";
      }
    }
    if (shown == 0) std::cout << "  (none)\n";
  }
  if (!registry.failures().empty()) {
    std::cout << "\nload failures:\n";
    for (const PluginLoadFailure& f : registry.failures()) {
      std::cout << "  " << f.status.message() << "\n";
    }
  }
  return kExitOk;
}

std::function<int()> Setup(CLI::App& app) {
  app.description("List the plugins found on the search path, with capabilities and parameters");
  auto paths = std::make_shared<std::vector<std::string>>();
  auto as_json = std::make_shared<bool>(false);
  app.add_option("--path", *paths,
                 "Extra plugin directory, searched before FLUXATTN_PLUGIN_PATH and the "
                 "install dir (repeatable)");
  auto as_markdown = std::make_shared<bool>(false);
  app.add_flag("--json", *as_json, "Print JSON instead of text");
  app.add_flag("--markdown", *as_markdown,
               "Print the configuration reference (docs/configuration.md) for these plugins");
  return [paths, as_json, as_markdown] { return Run(*paths, *as_json, *as_markdown); };
}

}  // namespace
}  // namespace fluxattn::cli

FLUXATTN_REGISTER_COMMAND(plugins, fluxattn::cli::Setup);
