// Plugins instantiated from an EngineConfig (composition.h): parameters checked against each
// plugin's specs, names resolved. No TOML here: configs parsed from a file and configs built in
// code go through the same checks.
#include "fluxattn/composition.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "config_errors.h"
#include "fluxattn/config.h"
#include "fluxattn/status.h"

namespace fluxattn {
namespace {

using config_internal::FormatNumber;
using config_internal::JoinKey;
using config_internal::KeyError;
using config_internal::Quoted;

// Checks one explicit value against its spec and converts it to the declared type.
absl::StatusOr<ParamValue> CheckParam(const ParamSpec& spec, const RawParam& raw,
                                      const std::string& key) {
  const ParamValue& v = raw.value;
  const std::string found = ParamValueToString(v);
  auto describe_found = [&]() -> std::string {
    struct Kind {
      std::string operator()(bool) const { return "boolean"; }
      std::string operator()(int64_t) const { return "integer"; }
      std::string operator()(double) const { return "float"; }
      std::string operator()(const std::string&) const { return "string"; }
      std::string operator()(const std::vector<int64_t>&) const { return "integer list"; }
      std::string operator()(const std::vector<std::string>&) const { return "string list"; }
    };
    return absl::StrCat(std::visit(Kind{}, v), " ", found);
  };
  const bool integral = spec.type == ParamType::kInt || spec.type == ParamType::kIntList;
  std::string range;
  if (spec.min_value && spec.max_value) {
    range = absl::StrCat(" in [", FormatNumber(*spec.min_value, integral), ", ",
                         FormatNumber(*spec.max_value, integral), "]");
  } else if (spec.min_value) {
    range = absl::StrCat(" >= ", FormatNumber(*spec.min_value, integral));
  } else if (spec.max_value) {
    range = absl::StrCat(" <= ", FormatNumber(*spec.max_value, integral));
  }
  auto in_range = [&](double x) {
    if (std::isnan(x)) return false;
    return (!spec.min_value || x >= *spec.min_value) && (!spec.max_value || x <= *spec.max_value);
  };
  const std::string expected =
      absl::StrCat(ParamTypeName(spec.type) == std::string("integer") ? "an " : "a ",
                   ParamTypeName(spec.type), range);
  auto mismatch = [&]() { return KeyError(raw.where, key, expected, describe_found()); };

  switch (spec.type) {
    case ParamType::kBool:
      if (!std::holds_alternative<bool>(v)) return mismatch();
      return v;
    case ParamType::kInt: {
      const int64_t* i = std::get_if<int64_t>(&v);
      if (i == nullptr || !in_range(static_cast<double>(*i))) return mismatch();
      return v;
    }
    case ParamType::kFloat: {
      double x;
      if (const int64_t* i = std::get_if<int64_t>(&v)) {
        x = static_cast<double>(*i);  // `2` is a fine way to write 2.0
      } else if (const double* d = std::get_if<double>(&v)) {
        x = *d;
      } else {
        return mismatch();
      }
      if (!in_range(x)) return mismatch();
      return ParamValue(x);
    }
    case ParamType::kString: {
      const std::string* s = std::get_if<std::string>(&v);
      if (s == nullptr) return mismatch();
      if (!spec.choices.empty() &&
          std::find(spec.choices.begin(), spec.choices.end(), *s) == spec.choices.end()) {
        std::vector<std::string> quoted;
        for (const std::string& c : spec.choices) quoted.push_back(Quoted(c));
        return KeyError(raw.where, key, absl::StrCat("one of ", absl::StrJoin(quoted, ", ")),
                        describe_found());
      }
      return v;
    }
    case ParamType::kIntList: {
      const auto* list = std::get_if<std::vector<int64_t>>(&v);
      if (list == nullptr) return mismatch();
      for (int64_t x : *list) {
        if (!in_range(static_cast<double>(x))) {
          return KeyError(raw.where, key, absl::StrCat("every element", range),
                          absl::StrCat("element ", x, " in ", found));
        }
      }
      return v;
    }
    case ParamType::kStringList: {
      if (const auto* ints = std::get_if<std::vector<int64_t>>(&v); ints && ints->empty()) {
        return ParamValue(std::vector<std::string>{});  // `[]` carries no element type
      }
      if (!std::holds_alternative<std::vector<std::string>>(v)) return mismatch();
      return v;
    }
  }
  return mismatch();
}

// For an unknown key of a [backends.<name>] table that speaks of one phase ("decode",
// "prefill_sink_tokens", ...) when the plugin declares no parameter of that phase: how a config
// hands the phase to another backend (plugins have no phase modes of their own).
std::string PhaseKeyHint(const std::vector<ParamSpec>& specs, const PluginInstanceConfig& instance,
                         const std::string& key) {
  if (instance.table.rfind("backends.", 0) != 0) return "";
  for (const std::string phase : {"prefill", "decode"}) {
    auto of_phase = [&](const std::string& name) {
      return name == phase || name.rfind(phase + "_", 0) == 0;
    };
    if (!of_phase(key) || std::any_of(specs.begin(), specs.end(),
                                      [&](const ParamSpec& s) { return of_phase(s.name); })) {
      continue;
    }
    return absl::StrCat(" (to have another backend serve the ", phase, ", use ", phase,
                        "_with = \"<its [backends.<name>] name>\", e.g. a \"streaming\" "
                        "instance)");
  }
  return "";
}

}  // namespace

absl::Status ValidatePluginParams(const std::vector<ParamSpec>& specs,
                                  PluginInstanceConfig& instance) {
  const std::string prefix = instance.table.empty() ? instance.name : instance.table;
  ParamValues values;
  for (const auto& [name, raw] : instance.raw_params) {
    auto spec = std::find_if(specs.begin(), specs.end(),
                             [&key = name](const ParamSpec& s) { return s.name == key; });
    if (spec == specs.end()) {
      std::vector<std::string> names;
      for (const ParamSpec& s : specs) names.push_back(s.name);
      std::string expected =
          names.empty() ? absl::StrCat("no parameters (plugin '", instance.plugin, "' takes none)")
                        : absl::StrCat("a parameter of plugin '", instance.plugin, "' (",
                                       absl::StrJoin(names, ", "), ")");
      return KeyError(
          raw.where, JoinKey(prefix, name), expected,
          absl::StrCat("unknown key '", name, "'", PhaseKeyHint(specs, instance, name)));
    }
    FLUXATTN_ASSIGN_OR_RETURN(ParamValue value, CheckParam(*spec, raw, JoinKey(prefix, name)));
    values.Set(name, std::move(value), /*is_explicit=*/true);
  }
  for (const ParamSpec& spec : specs) {
    if (values.has(spec.name)) continue;
    if (!spec.default_value) {
      return KeyError(instance.where, JoinKey(prefix, spec.name),
                      absl::StrCat("a value (", ParamTypeName(spec.type), ", required by plugin '",
                                   instance.plugin, "': ", spec.description, ")"),
                      "none");
    }
    values.Set(spec.name, *spec.default_value, /*is_explicit=*/false);
  }
  instance.params = std::move(values);
  return absl::OkStatus();
}

absl::Status PrepareRegistry(EngineConfig& config, PluginRegistry& registry) {
  auto load_explicit = [&](PluginInstanceConfig& instance) -> absl::Status {
    if (instance.plugin_file.empty()) return absl::OkStatus();
    absl::StatusOr<const PluginInfo*> info = registry.LoadFile(instance.plugin_file);
    if (!info.ok()) {
      const std::string key = JoinKey(instance.table, "plugin");
      auto loc = config.locations.find(key);
      return Annotate(info.status(),
                      absl::StrCat(loc != config.locations.end() ? loc->second.ToString()
                                                                 : instance.where.ToString(),
                                   ": key '", key, "'"));
    }
    instance.plugin = (*info)->name;
    return absl::OkStatus();
  };
  for (auto& [name, instance] : config.backends) FLUXATTN_RETURN_IF_ERROR(load_explicit(instance));
  for (auto& [name, instance] : config.routers) FLUXATTN_RETURN_IF_ERROR(load_explicit(instance));
  FLUXATTN_RETURN_IF_ERROR(load_explicit(config.router));
  return registry.ScanSearchPath(config.plugin_paths);
}

absl::StatusOr<Composition> Compose(EngineConfig& config, const PluginRegistry& registry) {
  auto where = [&](const std::string& key, const SourceLocation& fallback) {
    auto it = config.locations.find(key);
    return (it != config.locations.end() ? it->second : fallback).ToString();
  };
  if (config.backends.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        config.source_path.empty() ? "<config>" : config.source_path,
        ": key 'backends': expected at least one [backends.<name>] table, found none"));
  }
  Composition composition;
  auto instantiate_specs = [&](PluginInstanceConfig& instance,
                               PluginKind kind) -> absl::StatusOr<const PluginInfo*> {
    const std::string key = JoinKey(instance.table, "plugin");
    absl::StatusOr<const PluginInfo*> info = registry.Find(instance.plugin, kind);
    if (!info.ok()) {
      return Annotate(info.status(), absl::StrCat(where(key, instance.where), ": key '", key, "'"));
    }
    FLUXATTN_RETURN_IF_ERROR(ValidatePluginParams((*info)->params, instance));
    return *info;
  };
  for (auto& [name, instance] : config.backends) {
    FLUXATTN_RETURN_IF_ERROR(instantiate_specs(instance, PluginKind::kAttentionBackend).status());
    absl::StatusOr<PluginPtr<AttentionBackend>> backend =
        registry.CreateBackend(instance.plugin, instance.params);
    if (!backend.ok()) {
      return Annotate(backend.status(),
                      absl::StrCat(instance.where.ToString(), ": table '", instance.table, "'"));
    }
    composition.backends.emplace(name, std::move(*backend));
    composition.backend_plugins[name] = instance.plugin;
  }
  for (auto& [name, instance] : config.routers) {
    FLUXATTN_RETURN_IF_ERROR(instantiate_specs(instance, PluginKind::kRoutingPolicy).status());
    absl::StatusOr<PluginPtr<RoutingPolicy>> policy =
        registry.CreatePolicy(instance.plugin, instance.params);
    if (!policy.ok()) {
      return Annotate(policy.status(),
                      absl::StrCat(instance.where.ToString(), ": table '", instance.table, "'"));
    }
    composition.routers.emplace(name, std::move(*policy));
  }
  if (!config.router.plugin.empty()) {
    FLUXATTN_RETURN_IF_ERROR(instantiate_specs(config.router, PluginKind::kRoutingPolicy).status());
    absl::StatusOr<PluginPtr<RoutingPolicy>> policy =
        registry.CreatePolicy(config.router.plugin, config.router.params);
    if (!policy.ok()) {
      return Annotate(policy.status(),
                      absl::StrCat(config.router.where.ToString(), ": table 'router'"));
    }
    composition.router = std::move(*policy);
  }
  // Configs built in code skip the parser's checks; repeat the reference checks here.
  auto check = [&](const std::string& key, const std::string& backend) -> absl::Status {
    if (config.backends.count(backend) != 0) return absl::OkStatus();
    std::vector<std::string> names;
    for (const auto& [name, instance] : config.backends) names.push_back(name);
    return absl::InvalidArgumentError(
        OneLine(absl::StrCat(where(key, SourceLocation{config.source_path, 0, 0}), ": key '", key,
                             "': expected the name of a [backends.<name>] table (",
                             absl::StrJoin(names, ", "), "), found ", Quoted(backend))));
  };
  FLUXATTN_RETURN_IF_ERROR(check("router.full", config.router_full));
  FLUXATTN_RETURN_IF_ERROR(check("router.sparse", config.router_sparse));
  for (const auto& [layer, backend] : config.layer_backends) {
    FLUXATTN_RETURN_IF_ERROR(check(absl::StrCat("layers.", layer, ".backend"), backend));
  }
  FLUXATTN_RETURN_IF_ERROR(config_internal::CheckPhaseDelegates(config, [&](const std::string& k) {
    auto it = config.locations.find(k);
    return it != config.locations.end() ? it->second : SourceLocation{config.source_path, 0, 0};
  }));
  for (const auto& [name, instance] : config.backends) {
    if (!instance.prefill_with.empty()) composition.prefill_with[name] = instance.prefill_with;
    if (!instance.decode_with.empty()) composition.decode_with[name] = instance.decode_with;
  }
  composition.full_backend = config.router_full;
  composition.sparse_backend = config.router_sparse;
  composition.layer_backends = config.layer_backends;
  return composition;
}

}  // namespace fluxattn
