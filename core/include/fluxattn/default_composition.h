// The built-in composition for a checkpoint, used when no configuration file is given.
#pragma once

#include "fluxattn/config.h"
#include "fluxattn/model_info.h"

namespace fluxattn {

// The configuration used when only a checkpoint is given: every layer on the `full` plugin.
// For Flux checkpoints (Paw* architectures) the `flux` router chooses per layer between the
// backends `full` and `sparse` that config.json names, as the original modeling code runs them:
//   retrieval_mode (FA side): "full" -> plugin `full`; "xattn" -> plugin `xattention` (block 128,
//     stride 16, threshold 0.9, sink_blocks 1; its decode is dense);
//   toggle_type (SA side): "streaming" -> plugin `streaming`; "triangle" -> plugin `triangle`
//     with last_n = triangle_n_last; "xattn" -> plugin `xattention` (prefill as above);
//     for "triangle" and "xattn" the decode of `sparse` is served by a third backend,
//     `sparse_decode` = plugin `streaming` (`sparse`'s decode_with), which also decides the KV
//     those layers keep;
// every sink + window rule with the checkpoint's sink_size and local_window_size in 128-token
// blocks, and the router with config.json's pooling_mode, pool_size and use_softmax. Missing
// keys take the defaults of PawQwen3Config / PawLlamaConfig. The values are expected to have been
// validated by models::ParseModelConfig; an unknown toggle_type or retrieval_mode is passed on
// as the plugin name, so composing fails naming it.
EngineConfig DefaultEngineConfig(const ModelInfo& info);

}  // namespace fluxattn
