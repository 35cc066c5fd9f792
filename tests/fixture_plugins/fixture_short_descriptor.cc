// Claims a descriptor shorter than ABI 1.0's: the loader must not read members that are not
// there.
#include "fixture_descriptor_common.h"

FLUXATTN_FIXTURE_DESCRIPTOR_SIZED(FLUXATTN_PLUGIN_ABI_MAJOR, 16,
                                  ::fluxattn::PluginKind::kAttentionBackend,
                                  "fixture_short_descriptor", FLUXATTN_BUILD_ID)
