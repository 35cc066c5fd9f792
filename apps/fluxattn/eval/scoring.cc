#include "eval/scoring.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/ascii.h"
#include "fluxattn/status.h"

namespace fluxattn::eval {

std::string NormalizeWhitespace(absl::string_view text) {
  std::string out;
  bool pending_space = false;
  for (char c : text) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c))) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out += ' ';
    pending_space = false;
    out += c;
  }
  return out;
}

std::string ExtractAnswer(absl::string_view output) {
  absl::string_view rest = output;
  absl::string_view line;
  while (!rest.empty()) {
    const size_t end = rest.find('\n');
    line = rest.substr(0, end);
    rest = end == absl::string_view::npos ? absl::string_view() : rest.substr(end + 1);
    if (!absl::StripAsciiWhitespace(line).empty()) break;
    line = absl::string_view();
  }
  std::string answer = NormalizeWhitespace(line);
  if (!answer.empty() && answer.back() == '.') answer.pop_back();
  return NormalizeWhitespace(answer);
}

bool ExactMatch(absl::string_view output, absl::string_view expected) {
  return ExtractAnswer(output) == NormalizeWhitespace(expected);
}

double NegativeLogLikelihood(std::span<const float> logits, int64_t target) {
  FLUXATTN_CHECK(target >= 0 && target < static_cast<int64_t>(logits.size()));
  double max_logit = -INFINITY;
  for (float x : logits) max_logit = std::max(max_logit, static_cast<double>(x));
  double sum = 0.0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - max_logit);
  return -(static_cast<double>(logits[target]) - max_logit - std::log(sum));
}

}  // namespace fluxattn::eval
