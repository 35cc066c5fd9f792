// Exports the `flux` routing policy as a plugin.
#include "flux_policy.h"
#include "fluxattn/plugin_abi.h"
#include "fluxattn/routing_policy.h"

FLUXATTN_DEFINE_ROUTING_PLUGIN(fluxattn::routing::FluxPolicy, "flux", "1.0.0",
                               "Learned per-layer router of Flux Attention (weights from the "
                               "checkpoint)")
