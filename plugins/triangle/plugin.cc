// The `triangle` plugin's descriptor.
#include "fluxattn/plugin_abi.h"
#include "triangle_backend.h"

FLUXATTN_DEFINE_ATTENTION_PLUGIN(fluxattn::plugins::TriangleBackend, "triangle", "1.0.0",
                                 "Sink + window prefill with a dense tail of last_n queries; "
                                 "dense decode")
