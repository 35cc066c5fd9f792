// Exports the `static` routing policy as a plugin.
#include "fluxattn/plugin_abi.h"
#include "fluxattn/routing_policy.h"
#include "static_policy.h"

FLUXATTN_DEFINE_ROUTING_PLUGIN(fluxattn::routing::StaticPolicy, "static", "1.0.0",
                               "Fixed FA layers: a list, an F/S pattern, or a ratio with placement")
