// Exact-match scoring of greedy outputs and perplexity from logits.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "absl/strings/string_view.h"

namespace fluxattn::eval {

// Collapses every run of whitespace to one space and trims both ends.
std::string NormalizeWhitespace(absl::string_view text);

// What a greedy output is taken to answer: its first non-empty line, whitespace-normalized,
// without one trailing period (prompts end mid-sentence, "The pass key is", so "71432." is the
// same answer as "71432").
std::string ExtractAnswer(absl::string_view output);

// ExtractAnswer(output) == NormalizeWhitespace(expected).
bool ExactMatch(absl::string_view output, absl::string_view expected);

// -log softmax(logits)[target], computed in double with the max subtracted first.
double NegativeLogLikelihood(std::span<const float> logits, int64_t target);

}  // namespace fluxattn::eval
