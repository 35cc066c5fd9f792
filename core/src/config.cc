#include "fluxattn/config.h"

#include <toml++/toml.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "config_errors.h"
#include "fluxattn/status.h"

namespace fluxattn {

std::string SourceLocation::ToString() const {
  return absl::StrCat(file.empty() ? "<config>" : file, ":", line, ":", column);
}

namespace {

namespace fs = std::filesystem;

using config_internal::FormatNumber;
using config_internal::JoinKey;
using config_internal::KeyError;
using config_internal::Quoted;

class Parser {
 public:
  Parser(std::string file, fs::path base_dir)
      : file_(std::move(file)), base_(std::move(base_dir)) {}

  SourceLocation Where(const toml::source_region& region) const {
    return SourceLocation{file_, static_cast<int>(region.begin.line),
                          static_cast<int>(region.begin.column)};
  }
  SourceLocation Where(const toml::node& node) const { return Where(node.source()); }
  SourceLocation Where(const toml::key& key) const { return Where(key.source()); }

  // What a node holds, for "found ..." (values shown as written).
  static std::string Describe(const toml::node& node) {
    switch (node.type()) {
      case toml::node_type::string:
        return absl::StrCat("string ", Quoted(std::string(*node.value<std::string>())));
      case toml::node_type::integer:
        return absl::StrCat("integer ", *node.value<int64_t>());
      case toml::node_type::floating_point:
        return absl::StrCat("float ", ParamValueToString(ParamValue(*node.value<double>())));
      case toml::node_type::boolean:
        return absl::StrCat("boolean ", *node.value<bool>() ? "true" : "false");
      case toml::node_type::array:
        return absl::StrCat("array of ", node.as_array()->size(), " elements");
      case toml::node_type::table:
        return "table";
      case toml::node_type::date:
      case toml::node_type::time:
      case toml::node_type::date_time:
        return "date/time";
      default:
        return "nothing";
    }
  }

  // Rejects keys of `table` that are not in `allowed`.
  absl::Status CheckKeys(const toml::table& table, const std::string& prefix,
                         const std::vector<std::string>& allowed, const std::string& what) {
    for (auto&& [key, node] : table) {
      std::string k(key.str());
      if (std::find(allowed.begin(), allowed.end(), k) == allowed.end()) {
        return KeyError(
            Where(key), JoinKey(prefix, k),
            absl::StrCat("one of the keys of ", what, " (", absl::StrJoin(allowed, ", "), ")"),
            absl::StrCat("unknown key '", k, "'"));
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<const toml::table*> RequireTable(const toml::node& node, const std::string& key) {
    if (!node.is_table()) return KeyError(Where(node), key, "a table", Describe(node));
    return node.as_table();
  }

  absl::StatusOr<std::string> GetString(const toml::node& node, const std::string& key,
                                        const std::string& expected = "a string") {
    if (!node.is_string()) return KeyError(Where(node), key, expected, Describe(node));
    return std::string(*node.value<std::string>());
  }

  std::string Resolve(const std::string& path) const {
    fs::path p(path);
    if (p.is_absolute() || base_.empty()) return p.lexically_normal().string();
    return (base_ / p).lexically_normal().string();
  }

  // A plugin parameter as written; only scalar values and homogeneous lists are parameters.
  absl::StatusOr<ParamValue> ToParamValue(const toml::node& node, const std::string& key) {
    switch (node.type()) {
      case toml::node_type::boolean:
        return ParamValue(*node.value<bool>());
      case toml::node_type::integer:
        return ParamValue(*node.value<int64_t>());
      case toml::node_type::floating_point:
        return ParamValue(*node.value<double>());
      case toml::node_type::string:
        return ParamValue(std::string(*node.value<std::string>()));
      case toml::node_type::array: {
        const toml::array& array = *node.as_array();
        if (array.empty()) return ParamValue(std::vector<int64_t>{});
        if (array.is_homogeneous(toml::node_type::integer)) {
          std::vector<int64_t> values;
          for (const toml::node& e : array) values.push_back(*e.value<int64_t>());
          return ParamValue(std::move(values));
        }
        if (array.is_homogeneous(toml::node_type::string)) {
          std::vector<std::string> values;
          for (const toml::node& e : array) values.emplace_back(*e.value<std::string>());
          return ParamValue(std::move(values));
        }
        return KeyError(Where(node), key, "a list of only integers or only strings",
                        "a mixed array or an array of other values");
      }
      default:
        return KeyError(Where(node), key,
                        "a boolean, integer, float, string or list of integers/strings",
                        Describe(node));
    }
  }

  // [backends.<name>], [router], [routers.<name>]: `plugin` plus the plugin's own parameters.
  // `reserved` keys (the router's full/sparse) are read by the caller.
  absl::StatusOr<PluginInstanceConfig> ParseInstance(const toml::table& table,
                                                     const std::string& name,
                                                     const std::string& prefix,
                                                     const std::vector<std::string>& reserved,
                                                     EngineConfig& config) {
    PluginInstanceConfig instance;
    instance.name = name;
    instance.table = prefix;
    instance.where = Where(table);
    const toml::node* plugin = table.get("plugin");
    if (plugin == nullptr) {
      return KeyError(Where(table), JoinKey(prefix, "plugin"), "the name of a plugin",
                      "no 'plugin' key");
    }
    FLUXATTN_ASSIGN_OR_RETURN(instance.plugin,
                              GetString(*plugin, JoinKey(prefix, "plugin"), "a plugin name"));
    if (instance.plugin.empty()) {
      return KeyError(Where(*plugin), JoinKey(prefix, "plugin"), "a plugin name",
                      "an empty string");
    }
    config.locations[JoinKey(prefix, "plugin")] = Where(*plugin);
    if (instance.plugin.find('/') != std::string::npos) {
      instance.plugin_file = Resolve(instance.plugin);
    }
    for (auto&& [key, node] : table) {
      std::string k(key.str());
      if (k == "plugin" || std::find(reserved.begin(), reserved.end(), k) != reserved.end()) {
        continue;
      }
      FLUXATTN_ASSIGN_OR_RETURN(ParamValue value, ToParamValue(node, JoinKey(prefix, k)));
      instance.raw_params[k] = RawParam{std::move(value), Where(node)};
      config.locations[JoinKey(prefix, k)] = Where(node);
    }
    return instance;
  }

  absl::Status ParseModel(const toml::table& table, EngineConfig& config) {
    FLUXATTN_RETURN_IF_ERROR(
        CheckKeys(table, "model", {"path", "device", "dtype", "threads"}, "[model]"));
    if (const toml::node* n = table.get("path")) {
      FLUXATTN_ASSIGN_OR_RETURN(std::string path,
                                GetString(*n, "model.path", "a path to a model folder"));
      config.model.path = Resolve(path);
      config.locations["model.path"] = Where(*n);
    }
    if (const toml::node* n = table.get("device")) {
      const std::string expected = "\"cpu\", \"cuda\" or \"cuda:N\" (N >= 0)";
      FLUXATTN_ASSIGN_OR_RETURN(std::string device, GetString(*n, "model.device", expected));
      int ordinal = 0;
      bool valid =
          device == "cpu" || device == "cuda" ||
          (device.rfind("cuda:", 0) == 0 &&
           absl::SimpleAtoi(absl::string_view(device).substr(5), &ordinal) && ordinal >= 0);
      if (!valid) return KeyError(Where(*n), "model.device", expected, Describe(*n));
      config.model.device = device;
      config.locations["model.device"] = Where(*n);
    }
    if (const toml::node* n = table.get("dtype")) {
      const std::string expected = "\"f32\" or \"bf16\"";
      FLUXATTN_ASSIGN_OR_RETURN(std::string dtype, GetString(*n, "model.dtype", expected));
      if (dtype != "f32" && dtype != "bf16") {
        return KeyError(Where(*n), "model.dtype", expected, Describe(*n));
      }
      config.model.dtype = dtype;
      config.locations["model.dtype"] = Where(*n);
    }
    if (const toml::node* n = table.get("threads")) {
      constexpr int64_t kMaxThreads = 4096;
      const std::string expected = absl::StrCat("an integer in [0, ", kMaxThreads, "]");
      if (!n->is_integer()) return KeyError(Where(*n), "model.threads", expected, Describe(*n));
      int64_t threads = *n->value<int64_t>();
      if (threads < 0 || threads > kMaxThreads) {
        return KeyError(Where(*n), "model.threads", expected, Describe(*n));
      }
      config.model.threads = static_cast<int>(threads);
      config.locations["model.threads"] = Where(*n);
    }
    return absl::OkStatus();
  }

  absl::Status ParseKv(const toml::table& table, EngineConfig& config) {
    FLUXATTN_RETURN_IF_ERROR(CheckKeys(table, "kv", {"page_tokens", "pool_mib"}, "[kv]"));
    auto integer = [&](const char* key, int64_t lo, int64_t hi, int64_t* out) -> absl::Status {
      const toml::node* n = table.get(key);
      if (n == nullptr) return absl::OkStatus();
      const std::string full = absl::StrCat("kv.", key);
      const std::string expected = absl::StrCat("an integer in [", lo, ", ", hi, "]");
      if (!n->is_integer()) return KeyError(Where(*n), full, expected, Describe(*n));
      const int64_t v = *n->value<int64_t>();
      if (v < lo || v > hi) return KeyError(Where(*n), full, expected, Describe(*n));
      *out = v;
      config.locations[full] = Where(*n);
      return absl::OkStatus();
    };
    int64_t page = config.kv.page_tokens;
    FLUXATTN_RETURN_IF_ERROR(integer("page_tokens", 1, 65536, &page));
    config.kv.page_tokens = static_cast<int>(page);
    FLUXATTN_RETURN_IF_ERROR(integer("pool_mib", 0, int64_t{1} << 30, &config.kv.pool_mib));
    return absl::OkStatus();
  }

  absl::Status ParseScheduler(const toml::table& table, EngineConfig& config) {
    FLUXATTN_RETURN_IF_ERROR(CheckKeys(table, "scheduler",
                                       {"prefill_chunk_tokens", "max_step_tokens", "max_batch"},
                                       "[scheduler]"));
    auto count = [&](const char* name, int64_t max, const char* zero,
                     int64_t* out) -> absl::Status {
      const toml::node* n = table.get(name);
      if (n == nullptr) return absl::OkStatus();
      const std::string key = absl::StrCat("scheduler.", name);
      const std::string expected = absl::StrCat("an integer in [0, ", max, "] (0: ", zero, ")");
      if (!n->is_integer()) return KeyError(Where(*n), key, expected, Describe(*n));
      const int64_t v = *n->value<int64_t>();
      if (v < 0 || v > max) return KeyError(Where(*n), key, expected, Describe(*n));
      *out = v;
      config.locations[key] = Where(*n);
      return absl::OkStatus();
    };
    FLUXATTN_RETURN_IF_ERROR(count("prefill_chunk_tokens", int64_t{1} << 24, "whole prompts",
                                   &config.scheduler.prefill_chunk_tokens));
    FLUXATTN_RETURN_IF_ERROR(
        count("max_step_tokens", int64_t{1} << 24, "no limit", &config.scheduler.max_step_tokens));
    FLUXATTN_RETURN_IF_ERROR(
        count("max_batch", int64_t{1} << 16, "no limit", &config.scheduler.max_batch));
    return absl::OkStatus();
  }

  absl::Status ParseAttention(const toml::table& table, EngineConfig& config) {
    FLUXATTN_RETURN_IF_ERROR(CheckKeys(table, "attention", {"dense_prefill"}, "[attention]"));
    if (const toml::node* n = table.get("dense_prefill")) {
      const std::string expected = "one of \"auto\", \"cudnn\", \"fluxattn\"";
      FLUXATTN_ASSIGN_OR_RETURN(std::string v, GetString(*n, "attention.dense_prefill", expected));
      if (v != "auto" && v != "cudnn" && v != "fluxattn") {
        return KeyError(Where(*n), "attention.dense_prefill", expected, Describe(*n));
      }
      config.attention.dense_prefill = v;
      config.locations["attention.dense_prefill"] = Where(*n);
    }
    return absl::OkStatus();
  }

  absl::Status ParsePlugins(const toml::table& table, EngineConfig& config) {
    FLUXATTN_RETURN_IF_ERROR(CheckKeys(table, "plugins", {"paths"}, "[plugins]"));
    const toml::node* n = table.get("paths");
    if (n == nullptr) return absl::OkStatus();
    const std::string expected = "a list of plugin directories";
    if (!n->is_array()) return KeyError(Where(*n), "plugins.paths", expected, Describe(*n));
    for (const toml::node& element : *n->as_array()) {
      FLUXATTN_ASSIGN_OR_RETURN(std::string dir,
                                GetString(element, "plugins.paths", "a directory path"));
      std::string resolved = Resolve(dir);
      std::error_code ec;
      if (!fs::is_directory(resolved, ec)) {
        return KeyError(Where(element), "plugins.paths", "an existing plugin directory",
                        absl::StrCat(Quoted(dir), " (", resolved, " does not exist)"));
      }
      config.plugin_paths.push_back(resolved);
    }
    config.locations["plugins.paths"] = Where(*n);
    return absl::OkStatus();
  }

  absl::Status ParseNamedInstances(const toml::table& table, const std::string& section,
                                   std::map<std::string, PluginInstanceConfig>& out,
                                   EngineConfig& config) {
    const bool backends = section == "backends";
    for (auto&& [key, node] : table) {
      std::string name(key.str());
      std::string prefix = JoinKey(section, name);
      FLUXATTN_ASSIGN_OR_RETURN(const toml::table* t, RequireTable(node, prefix));
      FLUXATTN_ASSIGN_OR_RETURN(
          PluginInstanceConfig instance,
          ParseInstance(*t, name, prefix,
                        backends ? std::vector<std::string>{"prefill_with", "decode_with"}
                                 : std::vector<std::string>{},
                        config));
      if (backends) {
        for (const char* phase : {"prefill_with", "decode_with"}) {
          const toml::node* n = t->get(phase);
          if (n == nullptr) continue;
          const std::string k = JoinKey(prefix, phase);
          FLUXATTN_ASSIGN_OR_RETURN(
              std::string other, GetString(*n, k, "the name of another [backends.<name>] table"));
          (std::string(phase) == "prefill_with" ? instance.prefill_with : instance.decode_with) =
              other;
          config.locations[k] = Where(*n);
        }
      }
      out[name] = std::move(instance);
    }
    return absl::OkStatus();
  }

  absl::Status ParseRouter(const toml::table& table, EngineConfig& config) {
    FLUXATTN_ASSIGN_OR_RETURN(config.router,
                              ParseInstance(table, "router", "router", {"full", "sparse"}, config));
    for (const char* role : {"full", "sparse"}) {
      std::string key = JoinKey("router", role);
      const toml::node* n = table.get(role);
      if (n == nullptr) {
        return KeyError(
            Where(table), key,
            absl::StrCat("the name of the backend used when the router picks ", role, " attention"),
            absl::StrCat("no '", role, "' key"));
      }
      FLUXATTN_ASSIGN_OR_RETURN(std::string backend,
                                GetString(*n, key, "the name of a [backends.<name>] table"));
      (std::string(role) == "full" ? config.router_full : config.router_sparse) = backend;
      config.locations[key] = Where(*n);
    }
    return absl::OkStatus();
  }

  absl::Status ParseLayers(const toml::table& table, EngineConfig& config) {
    for (auto&& [key, node] : table) {
      std::string k(key.str());
      int layer = -1;
      if (!absl::SimpleAtoi(k, &layer) || layer < 0 || absl::StrCat(layer) != k) {
        return KeyError(Where(key), JoinKey("layers", k), "a layer index (0, 1, 2, ...)",
                        absl::StrCat("'", k, "'"));
      }
      std::string prefix = JoinKey("layers", k);
      FLUXATTN_ASSIGN_OR_RETURN(const toml::table* t, RequireTable(node, prefix));
      FLUXATTN_RETURN_IF_ERROR(CheckKeys(*t, prefix, {"backend"}, absl::StrCat("[", prefix, "]")));
      const toml::node* b = t->get("backend");
      if (b == nullptr) {
        return KeyError(Where(*t), JoinKey(prefix, "backend"),
                        "the name of the backend this layer always uses", "no 'backend' key");
      }
      FLUXATTN_ASSIGN_OR_RETURN(
          std::string backend,
          GetString(*b, JoinKey(prefix, "backend"), "the name of a [backends.<name>] table"));
      config.layer_backends[layer] = backend;
      config.locations[JoinKey(prefix, "backend")] = Where(*b);
    }
    return absl::OkStatus();
  }

  absl::Status Parse(const toml::table& root, EngineConfig& config) {
    // [server] belongs to `fluxattn serve`, which reads and checks it.
    FLUXATTN_RETURN_IF_ERROR(CheckKeys(root, "",
                                       {"model", "kv", "attention", "scheduler", "plugins",
                                        "backends", "router", "routers", "layers", "server"},
                                       "the config"));
    if (const toml::node* n = root.get("attention")) {
      FLUXATTN_ASSIGN_OR_RETURN(const toml::table* t, RequireTable(*n, "attention"));
      FLUXATTN_RETURN_IF_ERROR(ParseAttention(*t, config));
    }
    if (const toml::node* n = root.get("scheduler")) {
      FLUXATTN_ASSIGN_OR_RETURN(const toml::table* t, RequireTable(*n, "scheduler"));
      FLUXATTN_RETURN_IF_ERROR(ParseScheduler(*t, config));
    }
    if (const toml::node* n = root.get("kv")) {
      FLUXATTN_ASSIGN_OR_RETURN(const toml::table* t, RequireTable(*n, "kv"));
      FLUXATTN_RETURN_IF_ERROR(ParseKv(*t, config));
    }
    if (const toml::node* n = root.get("model")) {
      FLUXATTN_ASSIGN_OR_RETURN(const toml::table* t, RequireTable(*n, "model"));
      FLUXATTN_RETURN_IF_ERROR(ParseModel(*t, config));
    }
    if (const toml::node* n = root.get("plugins")) {
      FLUXATTN_ASSIGN_OR_RETURN(const toml::table* t, RequireTable(*n, "plugins"));
      FLUXATTN_RETURN_IF_ERROR(ParsePlugins(*t, config));
    }
    if (const toml::node* n = root.get("backends")) {
      FLUXATTN_ASSIGN_OR_RETURN(const toml::table* t, RequireTable(*n, "backends"));
      FLUXATTN_RETURN_IF_ERROR(ParseNamedInstances(*t, "backends", config.backends, config));
      FLUXATTN_RETURN_IF_ERROR(
          config_internal::CheckPhaseDelegates(config, [&](const std::string& key) {
            auto loc = config.locations.find(key);
            return loc != config.locations.end() ? loc->second : SourceLocation{file_, 0, 0};
          }));
    }
    if (const toml::node* n = root.get("routers")) {
      FLUXATTN_ASSIGN_OR_RETURN(const toml::table* t, RequireTable(*n, "routers"));
      FLUXATTN_RETURN_IF_ERROR(ParseNamedInstances(*t, "routers", config.routers, config));
    }
    if (const toml::node* n = root.get("router")) {
      FLUXATTN_ASSIGN_OR_RETURN(const toml::table* t, RequireTable(*n, "router"));
      FLUXATTN_RETURN_IF_ERROR(ParseRouter(*t, config));
    } else {
      // Without a router every layer goes to the one backend that is not only another's
      // prefill_with / decode_with.
      std::set<std::string> delegates;
      for (const auto& [name, b] : config.backends) {
        if (!b.prefill_with.empty()) delegates.insert(b.prefill_with);
        if (!b.decode_with.empty()) delegates.insert(b.decode_with);
      }
      std::vector<std::string> routable;
      for (const auto& [name, b] : config.backends) {
        if (delegates.count(name) == 0) routable.push_back(name);
      }
      if (routable.size() == 1) {
        config.router_full = config.router_sparse = routable[0];
      } else if (!config.backends.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            file_.empty() ? "<config>" : file_,
            ": key 'router': expected a [router] table (required with more than one backend "
            "that is not another's prefill_with / decode_with), found none"));
      }
    }
    if (const toml::node* n = root.get("layers")) {
      FLUXATTN_ASSIGN_OR_RETURN(const toml::table* t, RequireTable(*n, "layers"));
      FLUXATTN_RETURN_IF_ERROR(ParseLayers(*t, config));
    }
    return CheckBackendReferences(config);
  }

 private:
  absl::Status CheckBackendReferences(const EngineConfig& config) {
    std::vector<std::string> names;
    for (const auto& [name, instance] : config.backends) names.push_back(name);
    const std::string expected =
        absl::StrCat("the name of a [backends.<name>] table (",
                     names.empty() ? "none defined" : absl::StrJoin(names, ", "), ")");
    auto check = [&](const std::string& key, const std::string& backend) -> absl::Status {
      if (config.backends.count(backend) != 0) return absl::OkStatus();
      auto loc = config.locations.find(key);
      return KeyError(loc != config.locations.end() ? loc->second : SourceLocation{file_, 0, 0},
                      key, expected, Quoted(backend));
    };
    if (!config.router.plugin.empty()) {
      FLUXATTN_RETURN_IF_ERROR(check("router.full", config.router_full));
      FLUXATTN_RETURN_IF_ERROR(check("router.sparse", config.router_sparse));
    }
    for (const auto& [layer, backend] : config.layer_backends) {
      FLUXATTN_RETURN_IF_ERROR(check(absl::StrCat("layers.", layer, ".backend"), backend));
    }
    return absl::OkStatus();
  }

  std::string file_;
  fs::path base_;
};

}  // namespace

absl::StatusOr<EngineConfig> ParseEngineConfig(std::string_view toml_text,
                                               const std::string& source_name) {
  toml::table root;
  try {
    root = toml::parse(toml_text, std::string_view(source_name));
  } catch (const toml::parse_error& e) {
    SourceLocation where{source_name, static_cast<int>(e.source().begin.line),
                         static_cast<int>(e.source().begin.column)};
    return absl::InvalidArgumentError(OneLine(absl::StrCat(
        where.ToString(),
        ": expected valid TOML, found a syntax error: ", std::string(e.description()))));
  }
  EngineConfig config;
  config.source_path = source_name;
  fs::path base;
  std::error_code ec;
  if (!source_name.empty() && fs::is_regular_file(source_name, ec)) {
    base = fs::path(source_name).parent_path();
  }
  Parser parser(source_name, base);
  FLUXATTN_RETURN_IF_ERROR(parser.Parse(root, config));
  return config;
}

absl::StatusOr<EngineConfig> LoadEngineConfig(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": expected a TOML config file, found ",
                                            fs::exists(path, ec) ? "a directory" : "no such file"));
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in.good() && !in.eof()) {
    return absl::UnavailableError(
        absl::StrCat(path, ": expected a readable TOML config file, found a read error"));
  }
  return ParseEngineConfig(text.str(), path);
}

}  // namespace fluxattn
