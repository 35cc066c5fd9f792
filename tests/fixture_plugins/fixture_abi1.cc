// A plugin built against ABI 1 (per-sequence host float32 interfaces): the loader must refuse it
// with one line that says to rebuild it.
#include "fixture_descriptor_common.h"

FLUXATTN_FIXTURE_DESCRIPTOR(1, ::fluxattn::PluginKind::kAttentionBackend, "fixture_abi1",
                            FLUXATTN_BUILD_ID)
