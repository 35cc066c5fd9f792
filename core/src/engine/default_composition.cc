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

// The streaming instance that serves the decode of `sparse` where the SA side decodes with the
// sink + window rule (toggle_type "triangle" and "xattn").
constexpr char kSparseDecode[] = "sparse_decode";

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

// XAttention prefill as the original runs it (its decode is dense).
void SetXAttention(PluginInstanceConfig& backend) {
  Set(backend, "block_size", kBlockTokens);
  Set(backend, "stride", kXAttentionStride);
  Set(backend, "threshold", kXAttentionThreshold);
  Set(backend, "sink_blocks", kXAttentionSinkBlocks);
}

// The sink + window rule in 128-token blocks.
void SetStreaming(PluginInstanceConfig& backend, int64_t sink, int64_t window) {
  Set(backend, "sink_tokens", sink);
  Set(backend, "window_tokens", window);
  Set(backend, "block_size", kBlockTokens);
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
    SetXAttention(full);
  } else if (retrieval != "full") {
    full.plugin = retrieval;
  }

  const std::string sparse_plugin = toggle == "xattn" ? "xattention" : toggle;
  PluginInstanceConfig sparse = Instance("sparse", sparse_plugin, "backends.sparse");
  if (toggle == "xattn") {
    SetXAttention(sparse);
  } else if (toggle == "streaming" || toggle == "triangle") {
    SetStreaming(sparse, sink, window);
    if (toggle == "triangle") {
      Set(sparse, "last_n", ConfigInt(info, "triangle_n_last", kDefaultTriangleNLast));
    }
  }
  if (toggle == "xattn" || toggle == "triangle") {
    // Their SA layers decode with the sink + window rule: a streaming instance serves it (and
    // decides which KV stays once the prompt is done).
    PluginInstanceConfig decode =
        Instance(kSparseDecode, "streaming", std::string("backends.") + kSparseDecode);
    SetStreaming(decode, sink, window);
    config.backends[kSparseDecode] = decode;
    sparse.decode_with = kSparseDecode;
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
