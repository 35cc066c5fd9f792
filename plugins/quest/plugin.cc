// The `quest` plugin's descriptor.
#include "fluxattn/plugin_abi.h"
#include "quest_backend.h"

FLUXATTN_DEFINE_ATTENTION_PLUGIN(fluxattn::plugins::QuestBackend, "quest", "1.0.0",
                                 "Query-aware top-k page selection for decode (per-page key "
                                 "bounds); dense prefill")
