#include "fluxattn/default_composition.h"

#include <cstdint>

namespace fluxattn {

EngineConfig DefaultEngineConfig(const ModelInfo& info) {
  EngineConfig config;
  config.model.path = info.path;
  SourceLocation builtin{"<built-in defaults>", 0, 0};
  PluginInstanceConfig full;
  full.name = "full";
  full.plugin = "full";
  full.table = "backends.full";
  full.where = builtin;
  config.backends["full"] = full;
  config.router_full = "full";
  config.router_sparse = "full";
  const bool flux = info.architecture.rfind("Paw", 0) == 0;
  if (flux) {
    PluginInstanceConfig sparse;
    sparse.name = "sparse";
    sparse.plugin = "streaming";
    sparse.table = "backends.sparse";
    sparse.where = builtin;
    const int64_t sink = static_cast<int64_t>(info.ConfigNumber("sink_size").value_or(128));
    const int64_t window =
        static_cast<int64_t>(info.ConfigNumber("local_window_size").value_or(2048));
    sparse.raw_params["sink_tokens"] = RawParam{ParamValue(sink), builtin};
    sparse.raw_params["window_tokens"] = RawParam{ParamValue(window), builtin};
    sparse.raw_params["block_size"] = RawParam{ParamValue(int64_t{128}), builtin};
    config.backends["sparse"] = sparse;
    config.router.name = "router";
    config.router.plugin = "flux";
    config.router.table = "router";
    config.router.where = builtin;
    config.router_sparse = "sparse";
  }
  return config;
}

}  // namespace fluxattn
