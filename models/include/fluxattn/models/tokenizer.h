// Byte-level BPE tokenizer read from a Hugging Face `tokenizer.json`, as used by Qwen2/2.5/3 and
// Llama 3. The pipeline mirrors the `tokenizers` library:
//   added/special tokens are cut out of the text first (they are never split),
//   normalizer (NFC, NFD, NFKC, NFKD, Sequence, or none),
//   pre-tokenizer (Split with the tokenizer's regex, ByteLevel, Digits, Sequence),
//   BPE over the byte-level alphabet (merges in "a b" or ["a", "b"] form, ignore_merges),
//   post-processor (TemplateProcessing adds e.g. Llama 3's BOS when asked for special tokens),
//   ByteLevel decoder (bytes back to UTF-8; invalid sequences become U+FFFD).
// Every load error names the file and the JSON key, what was expected and what was found.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace fluxattn::models {

// An entry of tokenizer.json's "added_tokens". Such tokens are matched in the text before
// normalization (or after it, when `normalized`) and map to exactly one id.
struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;      // skipped by Decode(..., skip_special_tokens = true)
  bool lstrip = false;       // swallows the whitespace to its left
  bool rstrip = false;       // swallows the whitespace to its right
  bool single_word = false;  // matches only when not touching a word character
  bool normalized = false;   // matched in the normalized text instead of the raw text
};

class Tokenizer;

// Turns ids into text one at a time without ever emitting part of a UTF-8 character: bytes of
// an incomplete character are held back until the following ids complete it. The concatenation
// of all Push() results and Finish() equals Tokenizer::Decode of the same ids.
class StreamingDecoder {
 public:
  // `tokenizer` must outlive the decoder.
  explicit StreamingDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = false);

  // Returns the text completed by `id` (possibly empty). Unknown ids are an error that names
  // the id and the vocabulary size; the decoder state is unchanged then.
  absl::StatusOr<std::string> Push(int32_t id);
  // Emits the held-back bytes (an unfinished character becomes U+FFFD) and resets the decoder.
  std::string Finish();
  // Number of bytes held back waiting for the rest of a character.
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;
};

class Tokenizer {
 public:
  // Loads a tokenizer.json file. No BOS/EOS information is known then except from the
  // post-processor; use FromModelDir to also read tokenizer_config.json.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);
  // Loads DIR/tokenizer.json and, when present, DIR/tokenizer_config.json (bos_token,
  // eos_token, pad_token).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromModelDir(const std::string& dir);
  // Parses tokenizer.json text; `origin` names the source in error messages.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(absl::string_view json,
                                                             absl::string_view origin);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Text (UTF-8) to ids. Added and special tokens written in the text (e.g. "<|im_start|>") are
  // recognised. `add_special_tokens` applies the post-processor (Llama 3 prepends
  // <|begin_of_text|>; Qwen adds nothing), as transformers does by default. No chat template is
  // applied. Fails only on invalid UTF-8. Thread-safe.
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text,
                                              bool add_special_tokens) const;

  // Ids to text. An unknown id is an error naming the id and vocab_size().
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     bool skip_special_tokens = false) const;

  // The raw bytes an id decodes to (may be part of a UTF-8 character).
  absl::StatusOr<std::string> IdToBytes(int32_t id) const;
  // The token string as stored in tokenizer.json (byte-level alphabet, e.g. "Ġthe").
  absl::StatusOr<std::string> IdToToken(int32_t id) const;
  std::optional<int32_t> TokenToId(absl::string_view token) const;

  // One more than the largest id of the vocabulary and the added tokens.
  int32_t vocab_size() const;
  bool IsSpecial(int32_t id) const;
  const std::vector<AddedToken>& added_tokens() const;

  // From tokenizer_config.json when loaded with FromModelDir; bos also from a TemplateProcessing
  // post-processor that starts with a special token.
  std::optional<int32_t> bos_token_id() const;
  std::optional<int32_t> eos_token_id() const;
  std::optional<int32_t> pad_token_id() const;

  StreamingDecoder NewStreamingDecoder(bool skip_special_tokens = false) const {
    return StreamingDecoder(*this, skip_special_tokens);
  }

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fluxattn::models
