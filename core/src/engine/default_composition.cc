#include "fluxattn/default_composition.h"

#include <cstdint>
#include <string>

namespace fluxattn {
namespace {

// The original's constants: 128-token blocks for every sparse pattern, and the XAttention
// parameters of its modeling code (stride 16, threshold 0.9; block 0 and the diagonal block are
// always kept).
constexpr int64_t kBlockTokens = 128;
constexpr int64_t kXAttentionStride = 16;
constexpr double kXAttentionThreshold = 0.9;
constexpr int64_t kXAttentionSinkBlocks = 1;

// Defaults of PawQwen3Config / PawLlamaConfig for keys a config.json leaves out.
constexpr int64_t kDefaultSinkSize = 128;
constexpr int64_t kDefaultLocalWindowSize = 1024;
constexpr int64_t kDefaultTriangleNLast = 128;
constexpr int64_t kDefaultPoolSize = 100;
constexpr bool kDefaultUseSoftmax = false;

SourceLocation Builtin() { return SourceLocation{"<built-in defaults>", 0, 0}; }

PluginInstanceConfig Instance(const std::string& name, const std::string& plugin,
                              const std::string& table) {
  PluginInstanceConfig instance;
  instance.name = name;
  instance.plugin = plugin;
  instance.table = table;
  instance.where = Builtin();
  return instance;
}

void Set(PluginInstanceConfig& instance, const std::string& key, ParamValue value) {
  instance.raw_params[key] = RawParam{std::move(value), Builtin()};
}

int64_t ConfigInt(const ModelInfo& info, const std::string& key, int64_t fallback) {
  return static_cast<int64_t>(info.ConfigNumber(key).value_or(static_cast<double>(fallback)));
}

// XAttention prefill as the original runs it; `decode_rule` set: sink + window decode.
void SetXAttention(PluginInstanceConfig& backend, bool streaming_decode, int64_t sink,
                   int64_t window) {
  Set(backend, "block_size", kBlockTokens);
  Set(backend, "stride", kXAttentionStride);
  Set(backend, "threshold", kXAttentionThreshold);
  Set(backend, "sink_blocks", kXAttentionSinkBlocks);
  Set(backend, "decode", std::string(streaming_decode ? "streaming" : "full"));
  if (streaming_decode) {
    Set(backend, "decode_sink_tokens", sink);
    Set(backend, "decode_window_tokens", window);
    Set(backend, "decode_block_size", kBlockTokens);
  }
}

}  // namespace

EngineConfig DefaultEngineConfig(const ModelInfo& info) {
  EngineConfig config;
  config.model.path = info.path;
  config.backends["full"] = Instance("full", "full", "backends.full");
  config.router_full = "full";
  config.router_sparse = "full";
  if (info.architecture.rfind("Paw", 0) != 0) return config;

  const std::string retrieval = info.ConfigString("retrieval_mode").value_or("full");
  const std::string toggle = info.ConfigString("toggle_type").value_or("streaming");
  const int64_t sink = ConfigInt(info, "sink_size", kDefaultSinkSize);
  const int64_t window = ConfigInt(info, "local_window_size", kDefaultLocalWindowSize);

  PluginInstanceConfig& full = config.backends["full"];
  if (retrieval == "xattn") {
    full.plugin = "xattention";
    SetXAttention(full, /*streaming_decode=*/false, sink, window);
  } else if (retrieval != "full") {
    full.plugin = retrieval;
  }

  const std::string sparse_plugin = toggle == "xattn" ? "xattention" : toggle;
  PluginInstanceConfig sparse = Instance("sparse", sparse_plugin, "backends.sparse");
  if (toggle == "xattn") {
    SetXAttention(sparse, /*streaming_decode=*/true, sink, window);
  } else if (toggle == "streaming" || toggle == "triangle") {
    Set(sparse, "sink_tokens", sink);
    Set(sparse, "window_tokens", window);
    Set(sparse, "block_size", kBlockTokens);
    if (toggle == "triangle") {
      Set(sparse, "last_n", ConfigInt(info, "triangle_n_last", kDefaultTriangleNLast));
      Set(sparse, "decode", std::string("streaming"));
    }
  }
  config.backends["sparse"] = sparse;

  config.router = Instance("router", "flux", "router");
  if (std::optional<std::string> pooling = info.ConfigString("pooling_mode")) {
    Set(config.router, "pooling_mode", *pooling);
  }
  Set(config.router, "pool_size", ConfigInt(info, "pool_size", kDefaultPoolSize));
  Set(config.router, "use_softmax", info.ConfigBool("use_softmax").value_or(kDefaultUseSoftmax));
  config.router_sparse = "sparse";
  return config;
}

}  // namespace fluxattn
