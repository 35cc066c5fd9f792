// The `streaming` plugin's descriptor.
#include "fluxattn/plugin_abi.h"
#include "streaming_backend.h"

FLUXATTN_DEFINE_ATTENTION_PLUGIN(fluxattn::plugins::StreamingBackend, "streaming", "1.0.0",
                                 "Sink + local window attention at block granularity")
