// The built-in composition for a checkpoint, used when no configuration file is given.
#pragma once

#include "fluxattn/config.h"
#include "fluxattn/model_info.h"

namespace fluxattn {

// The configuration used when only a checkpoint is given: every layer on the `full` plugin;
// for Flux checkpoints (Paw* architectures) the `flux` router choosing between `full` and
// `streaming` with the checkpoint's sink_size / local_window_size and 128-token blocks.
EngineConfig DefaultEngineConfig(const ModelInfo& info);

}  // namespace fluxattn
