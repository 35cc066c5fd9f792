// Exports the `random` routing policy as a plugin.
#include "fluxattn/plugin_abi.h"
#include "fluxattn/routing_policy.h"
#include "random_policy.h"

FLUXATTN_DEFINE_ROUTING_PLUGIN(fluxattn::routing::RandomPolicy, "random", "1.0.0",
                               "Seeded random FA/SA per (request, layer) with a target FA ratio")
