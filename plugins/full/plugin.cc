// The `full` plugin's descriptor.
#include "fluxattn/plugin_abi.h"
#include "full_backend.h"

FLUXATTN_DEFINE_ATTENTION_PLUGIN(fluxattn::plugins::FullBackend, "full", "1.0.0",
                                 "Exact causal attention (dense causal layout, core kernel)")
