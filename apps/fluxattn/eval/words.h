// A small bundled English word list and a deterministic filler-text generator built on it. The
// filler is plain lowercase prose without digits, so the numbers and codes the tasks hide in it
// can never occur in it by chance.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/types/span.h"

namespace fluxattn::eval {

absl::Span<const char* const> Adjectives();
absl::Span<const char* const> Nouns();
absl::Span<const char* const> Verbs();   // past tense, transitive
absl::Span<const char* const> Places();  // nouns that follow "near the"

// A uniform index in [0, n) from `rng`, identical on every standard library (unlike
// std::uniform_int_distribution).
size_t PickIndex(std::mt19937_64& rng, size_t n);

template <typename T>
const T& Pick(std::mt19937_64& rng, absl::Span<const T> items) {
  return items[PickIndex(rng, items.size())];
}

// Sentences such as "The quiet farmer carried a heavy basket near the old mill." The i-th
// sentence depends only on (seed, i), so a haystack of n sentences is a prefix of one of n + 1.
class FillerText {
 public:
  explicit FillerText(uint64_t seed) : seed_(seed) {}
  // The i-th sentence, starting with a capital letter and ending with ". " (period, space).
  std::string Sentence(int64_t i);
  // Sentences [0, n) concatenated.
  std::string Sentences(int64_t n);

 private:
  uint64_t seed_;
  std::vector<std::string> cache_;
};

}  // namespace fluxattn::eval
