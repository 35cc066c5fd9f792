// The `xattention` plugin's descriptor.
#include "fluxattn/plugin_abi.h"
#include "xattention_backend.h"

FLUXATTN_DEFINE_ATTENTION_PLUGIN(fluxattn::plugins::XAttentionBackend, "xattention", "1.0.0",
                                 "XAttention antidiagonal block selection for prefill; dense "
                                 "decode")
