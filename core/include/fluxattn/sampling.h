// Sampling one token from a row of logits: greedy, temperature, top-k and top-p, seeded.
#pragma once

#include <cstdint>
#include <random>
#include <span>

namespace fluxattn {

struct SamplingOptions {
  double temperature = 0.0;  // 0: greedy (argmax, lowest id on ties)
  int top_k = 0;             // 0: no top-k filter
  double top_p = 1.0;        // 1: no nucleus filter
  uint64_t seed = 0;         // the request's own seed
};

// One token from `logits` under `options` (greedy when temperature is 0). The draw uses 53 bits
// of `rng`, so it is the same on every standard library.
int64_t SampleToken(std::span<const float> logits, const SamplingOptions& options,
                    std::mt19937_64& rng);

}  // namespace fluxattn
