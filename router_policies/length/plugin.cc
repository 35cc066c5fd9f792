// Exports the `length` routing policy as a plugin.
#include "fluxattn/plugin_abi.h"
#include "fluxattn/routing_policy.h"
#include "length_policy.h"

FLUXATTN_DEFINE_ROUTING_PLUGIN(fluxattn::routing::LengthPolicy, "length", "1.0.0",
                               "Full attention below min_tokens, another policy above")
