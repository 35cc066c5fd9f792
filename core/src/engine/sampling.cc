#include "fluxattn/sampling.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "fluxattn/status.h"

namespace fluxattn {

int64_t SampleToken(std::span<const float> logits, const SamplingOptions& options,
                    std::mt19937_64& rng) {
  const int64_t v = static_cast<int64_t>(logits.size());
  FLUXATTN_CHECK(v > 0);
  if (options.temperature <= 0.0 || options.top_k == 1) {
    int64_t best = 0;
    for (int64_t i = 1; i < v; ++i) {
      if (logits[i] > logits[best]) best = i;
    }
    return best;
  }
  // Candidates in descending logit order (ties: lower id first), cut by top-k.
  std::vector<int64_t> order(v);
  for (int64_t i = 0; i < v; ++i) order[i] = i;
  int64_t keep = options.top_k > 0 ? std::min<int64_t>(options.top_k, v) : v;
  auto by_logit = [&](int64_t a, int64_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::partial_sort(order.begin(), order.begin() + keep, order.end(), by_logit);
  order.resize(keep);
  std::vector<double> probs(keep);
  const double max_logit = logits[order[0]];
  double total = 0.0;
  for (int64_t j = 0; j < keep; ++j) {
    probs[j] = std::exp((logits[order[j]] - max_logit) / options.temperature);
    total += probs[j];
  }
  // Nucleus: the shortest prefix whose probability reaches top_p.
  if (options.top_p < 1.0) {
    double cumulative = 0.0;
    int64_t cut = keep;
    for (int64_t j = 0; j < keep; ++j) {
      cumulative += probs[j] / total;
      if (cumulative >= options.top_p) {
        cut = j + 1;
        break;
      }
    }
    keep = cut;
    total = 0.0;
    for (int64_t j = 0; j < keep; ++j) total += probs[j];
  }
  // 53 random bits -> uniform in [0, 1); the same on every standard library.
  const double u = static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0) * total;
  double acc = 0.0;
  for (int64_t j = 0; j < keep; ++j) {
    acc += probs[j];
    if (u < acc) return order[j];
  }
  return order[keep - 1];
}

}  // namespace fluxattn
