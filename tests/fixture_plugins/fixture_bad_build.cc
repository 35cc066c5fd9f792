// Built (it claims) against another Abseil LTS: its absl::Status would not match the core's.
#include "fixture_descriptor_common.h"

FLUXATTN_FIXTURE_DESCRIPTOR(
    FLUXATTN_PLUGIN_ABI_MAJOR, ::fluxattn::PluginKind::kAttentionBackend, "fixture_bad_build",
    "core-" FLUXATTN_STRINGIFY_(FLUXATTN_CORE_VERSION_MAJOR) ";" FLUXATTN_COMPILER_ID_
                                                             ";" FLUXATTN_CXXABI_ID_
                                                             ";absl-20990101")
