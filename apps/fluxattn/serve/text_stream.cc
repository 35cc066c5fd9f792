#include "serve/text_stream.h"

#include <algorithm>

namespace fluxattn::serve {

TextStream::TextStream(const models::Tokenizer& tokenizer, std::vector<std::string> stop)
    : decoder_(tokenizer, /*skip_special_tokens=*/true), stop_(std::move(stop)) {
  for (const std::string& s : stop_) longest_stop_ = std::max(longest_stop_, s.size());
}

std::string TextStream::Push(int64_t token) {
  if (stopped_) return "";
  auto piece = decoder_.Push(static_cast<int32_t>(token));
  if (piece.ok()) pending_ += *piece;
  return Release();
}

std::string TextStream::Release() {
  // The stop string completed first in the text (smallest end; of two ending together the
  // longer) ends the request before it, whatever the tokens.
  size_t cut = std::string::npos;
  size_t cut_end = std::string::npos;
  for (const std::string& s : stop_) {
    const size_t at = pending_.find(s);
    if (at == std::string::npos) continue;
    const size_t end = at + s.size();
    if (end < cut_end || (end == cut_end && at < cut)) {
      cut = at;
      cut_end = end;
    }
  }
  if (cut != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, cut);
    pending_.clear();
    sent_ += out;
    return out;
  }
  // Hold back the longest tail that is the beginning of some stop string.
  size_t hold = 0;
  for (const std::string& s : stop_) {
    for (size_t n = std::min(s.size() - 1, pending_.size()); n > hold; --n) {
      if (pending_.compare(pending_.size() - n, n, s, 0, n) == 0) {
        hold = n;
        break;
      }
    }
  }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, out.size());
  sent_ += out;
  return out;
}

std::string TextStream::Finish() {
  if (stopped_) return "";
  pending_ += decoder_.Finish();
  std::string out = Release();
  if (stopped_) return out;
  out += pending_;
  sent_ += pending_;
  pending_.clear();
  return out;
}

}  // namespace fluxattn::serve
