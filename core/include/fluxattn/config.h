// Engine configuration from TOML. The core checks its own sections; plugin parameters are checked
// against the owning plugin's ParamSpecs. Every error names the file, the line and the key, what
// was expected and what was found.
//
//   [model]            path, device ("cpu", "cuda", "cuda:N"), dtype ("f32", "bf16"), threads
//   [kv]               page_tokens (tokens per KV page), pool_mib (KV pool size; 0 = automatic)
//   [plugins]          paths = ["dir", ...]   extra plugin search directories (before defaults)
//   [backends.<name>]  plugin = "<attention plugin>", optionally prefill_with / decode_with =
//                      "<another backend>" (that instance serves the phase), then that
//                      plugin's parameters
//   [router]           plugin = "<routing plugin>", full = "<backend>", sparse = "<backend>",
//                      then that plugin's parameters
//   [routers.<name>]   further routing policies another policy can delegate to
//   [layers.<i>]       backend = "<backend>"   fixes layer i regardless of the router
//
// `plugin` is a plugin name, or a path to a plugin file when it contains a '/' (relative paths
// are resolved against the config file's folder, like model.path and plugins.paths).
// [router] may be left out only when exactly one backend is configured: every layer uses it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fluxattn/params.h"
#include "fluxattn/plugin_registry.h"

namespace fluxattn {

struct SourceLocation {
  std::string file;
  int line = 0;
  int column = 0;
  std::string ToString() const;  // "file:line:column"
};

// A parameter as written in the config, before validation against the plugin's spec.
struct RawParam {
  ParamValue value;
  SourceLocation where;
};

struct PluginInstanceConfig {
  std::string name;         // instance name (the [backends.<name>] key), "router" for [router]
  std::string plugin;       // plugin name
  std::string table;        // dotted table path for messages: "backends.sparse", "router", ...
  std::string plugin_file;  // set when `plugin` named a file; PrepareRegistry loads it
  std::map<std::string, RawParam> raw_params;
  ParamValues params;  // filled by ValidatePluginParams
  SourceLocation where;
  // [backends.<name>] only: other backend instances that serve one phase of the layers routed
  // to this one (empty: this one serves it). The decode instance also decides which KV stays.
  std::string prefill_with;
  std::string decode_with;
};

struct ModelConfig {
  std::string path;  // resolved relative to the config file's folder
  std::string device = "cpu";
  std::string dtype = "f32";
  int threads = 0;  // 0: hardware concurrency
};

struct KvConfig {
  int page_tokens = 64;  // tokens per KV page
  int64_t pool_mib = 0;  // size of the KV page pool (K and V); 0: automatic
};

struct AttentionConfig {
  // The kernel of dense causal prefill on CUDA: "auto" (cuDNN's fused attention where the build
  // has it, else the library's own), "cudnn" (required) or "fluxattn" (the library's own).
  std::string dense_prefill = "auto";
};

struct SchedulerConfig {
  // The most prompt tokens one engine step runs; 0: whole prompts (see EngineOptions).
  int64_t prefill_chunk_tokens = 0;
  // The most tokens (prompt and decode rows) and requests one step runs; 0: no limit. With
  // max_step_tokens set, the device memory of such steps is reserved when the engine starts.
  int64_t max_step_tokens = 0;
  int64_t max_batch = 0;
};

struct EngineConfig {
  std::string source_path;  // the TOML file ("" when built in code)
  ModelConfig model;
  KvConfig kv;
  SchedulerConfig scheduler;
  AttentionConfig attention;
  std::vector<std::string> plugin_paths;
  std::map<std::string, PluginInstanceConfig> backends;
  PluginInstanceConfig router;
  std::string router_full;    // backend instance used when the router says FA
  std::string router_sparse;  // backend instance used when it says SA
  std::map<std::string, PluginInstanceConfig> routers;
  std::map<int, std::string> layer_backends;  // [layers.<i>] backend
  // Where each key was written, by dotted path ("router.full", "backends.sparse.plugin"), for
  // errors found after parsing.
  std::map<std::string, SourceLocation> locations;
};

absl::StatusOr<EngineConfig> LoadEngineConfig(const std::string& path);
absl::StatusOr<EngineConfig> ParseEngineConfig(std::string_view toml_text,
                                               const std::string& source_name);

}  // namespace fluxattn

// Composing plugins from a config (PrepareRegistry, Compose) lives in composition.h.
#include "fluxattn/composition.h"  // IWYU pragma: export
