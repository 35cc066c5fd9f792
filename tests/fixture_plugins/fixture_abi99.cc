// Claims ABI major 99: the loader must refuse it after reading only the version fields.
#include "fixture_descriptor_common.h"

FLUXATTN_FIXTURE_DESCRIPTOR(99, ::fluxattn::PluginKind::kAttentionBackend, "fixture_abi99",
                            FLUXATTN_BUILD_ID)
