// Long generation keeps KV memory bounded: decoding thousands of tokens (eos ignored) with one
// layer on the `streaming` plugin and one on `full`, the streaming layer's KV cache never holds
// more than its sink blocks, its window blocks and one partly filled page, whatever the length,
// while the full layer holds every position. A tiny random-weight model keeps it fast.
#include <cstdint>
#include <string>
#include <vector>

#include "fluxattn/config.h"
#include "fluxattn/engine.h"
#include "fluxattn/models/decoder_model.h"
#include "fluxattn/plugin_registry.h"
#include "fluxattn/status.h"
#include "gtest/gtest.h"

namespace fluxattn {
namespace {

constexpr int kPageTokens = 16;
constexpr int64_t kSinkTokens = 4;     // rounds up to one 16-token block
constexpr int64_t kWindowTokens = 40;  // rounds up to three 16-token blocks
constexpr int64_t kBlockSize = 16;

models::ModelSpec TinySpec() {
  models::ModelSpec spec;
  spec.family = models::ModelFamily::kLlama;
  spec.info.architecture = "LlamaForCausalLM";
  spec.info.num_layers = 2;
  spec.info.hidden_size = 16;
  spec.info.num_q_heads = 2;
  spec.info.num_kv_heads = 1;
  spec.info.head_dim = 8;
  spec.info.vocab_size = 64;
  spec.intermediate_size = 24;
  spec.rms_norm_eps = 1e-5;
  spec.eos_token_ids = {0};
  return spec;
}

// Layer 0 on `full`, layer 1 on `streaming`, both loaded from the build's plugin folder.
absl::StatusOr<std::unique_ptr<Engine>> MakeEngine(PluginRegistry& registry) {
  FLUXATTN_RETURN_IF_ERROR(registry.ScanDirectory(FLUXATTN_PLUGIN_DIR));
  EngineConfig config;
  auto& full = config.backends["full"];
  full.name = "full";
  full.plugin = "full";
  full.table = "backends.full";
  auto& sparse = config.backends["sparse"];
  sparse.name = "sparse";
  sparse.plugin = "streaming";
  sparse.table = "backends.sparse";
  sparse.raw_params["sink_tokens"] = RawParam{ParamValue(kSinkTokens), {}};
  sparse.raw_params["window_tokens"] = RawParam{ParamValue(kWindowTokens), {}};
  sparse.raw_params["block_size"] = RawParam{ParamValue(kBlockSize), {}};
  config.router_full = "full";
  config.router_sparse = "sparse";
  config.layer_backends[1] = "sparse";
  FLUXATTN_ASSIGN_OR_RETURN(Composition composition, Compose(config, registry));

  const models::ModelSpec spec = TinySpec();
  FLUXATTN_ASSIGN_OR_RETURN(auto weights, models::RandomWeights(spec, /*seed=*/11));
  FLUXATTN_ASSIGN_OR_RETURN(auto model,
                            models::CreateLanguageModel(spec, std::move(weights), {.threads = 1}));
  EngineOptions options;
  options.kv_page_tokens = kPageTokens;
  return Engine::Create(std::move(model), std::move(composition), options);
}

int64_t RoundUp(int64_t n, int64_t multiple) { return (n + multiple - 1) / multiple * multiple; }

TEST(LongGeneration, StreamingLayerKvStaysBoundedWhileFullLayerGrows) {
  PluginRegistry registry;
  auto engine = MakeEngine(registry);
  ASSERT_TRUE(engine.ok()) << engine.status();

  const models::ModelSpec spec = TinySpec();
  // K and V, float32, per position.
  const int64_t bytes_per_token = 2 * spec.info.num_kv_heads * spec.info.head_dim * 4;
  // Sink blocks, window blocks, and the page the next position is written to.
  const int64_t bound_tokens = RoundUp(RoundUp(kSinkTokens, kBlockSize), kPageTokens) +
                               RoundUp(kWindowTokens, kBlockSize) + kPageTokens;
  const std::vector<int64_t> prompt = {5, 17, 42, 8, 33, 21, 9};

  size_t previous_full_bytes = 0;
  for (int new_tokens : {300, 1500, 6000}) {
    SCOPED_TRACE(new_tokens);
    GenerationOptions options;
    options.max_new_tokens = new_tokens;
    options.ignore_eos = true;
    auto result = (*engine)->Generate({prompt}, options);
    ASSERT_TRUE(result.ok()) << result.status();
    const GenerationResult& request = result->requests[0];
    ASSERT_EQ(request.tokens.size(), static_cast<size_t>(new_tokens));
    EXPECT_EQ(request.finish_reason, "length");

    const RequestTrace& trace = request.trace;
    ASSERT_EQ(trace.layers.size(), 2u);
    EXPECT_EQ(trace.layers[0].backend, "full");
    EXPECT_EQ(trace.layers[1].backend, "sparse");
    // The cache holds every position fed to the model: the prompt and all but the last token.
    const int64_t positions = static_cast<int64_t>(prompt.size()) + new_tokens - 1;
    const size_t full_bytes = trace.layers[0].kv_bytes;
    EXPECT_GE(full_bytes, static_cast<size_t>(positions * bytes_per_token));
    EXPECT_LE(full_bytes, static_cast<size_t>(RoundUp(positions, kPageTokens) * bytes_per_token));
    EXPECT_GT(full_bytes, previous_full_bytes);
    previous_full_bytes = full_bytes;

    const size_t streaming_bytes = trace.layers[1].kv_bytes;
    EXPECT_GT(streaming_bytes, 0u);
    EXPECT_LE(streaming_bytes, static_cast<size_t>(bound_tokens * bytes_per_token))
        << "streaming layer holds " << streaming_bytes / bytes_per_token << " positions";
    EXPECT_EQ(trace.kv_bytes, full_bytes + streaming_bytes);
  }
}

}  // namespace
}  // namespace fluxattn
