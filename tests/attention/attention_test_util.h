// Test helpers for attention: random inputs, a paged KV cache over plain arrays, and the oracle
// (dense masked softmax attention in double precision). They live in the installed
// fluxattn/testing/reference_attention.h, shared with `fluxattn check-plugin` and third-party
// plugin tests.
#pragma once

#include "fluxattn/testing/reference_attention.h"
