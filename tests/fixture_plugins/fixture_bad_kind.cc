// Declares a plugin kind that does not exist.
#include "fixture_descriptor_common.h"

FLUXATTN_FIXTURE_DESCRIPTOR(FLUXATTN_PLUGIN_ABI_MAJOR, static_cast<::fluxattn::PluginKind>(7),
                            "fixture_bad_kind", FLUXATTN_BUILD_ID)
