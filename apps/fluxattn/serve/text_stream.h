// Turns one request's generated token ids into the text sent to the client: streaming
// detokenization (never half a UTF-8 character, special tokens skipped) and OpenAI stop strings,
// which may span token boundaries. Text that could be the start of a stop string is held back
// until the following tokens decide it. The text ends before the stop string that is completed
// first (so the result does not depend on how the text splits into tokens).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fluxattn/models/tokenizer.h"

namespace fluxattn::serve {

class TextStream {
 public:
  // `tokenizer` must outlive the stream.
  TextStream(const models::Tokenizer& tokenizer, std::vector<std::string> stop);

  // Adds one token; returns the text that is now safe to send (possibly empty). Once a stop
  // string is complete, stopped() is true, the text before it has been returned, and further
  // tokens are ignored.
  std::string Push(int64_t token);
  // The request ended (eos or length): returns the held-back rest.
  std::string Finish();
  bool stopped() const { return stopped_; }
  // All text returned so far.
  const std::string& text() const { return sent_; }

 private:
  std::string Release();

  models::StreamingDecoder decoder_;
  std::vector<std::string> stop_;
  size_t longest_stop_ = 0;
  std::string pending_;  // decoded, not yet sent
  std::string sent_;
  bool stopped_ = false;
};

}  // namespace fluxattn::serve
