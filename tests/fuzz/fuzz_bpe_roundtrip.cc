// Fuzz target: BPE encode/decode round trips through a fixed fixture tokenizer (Qwen2-style:
// NFC normalizer, regex split, byte-level BPE, special tokens that strip nothing).
//   valid UTF-8:   Decode(Encode(s)) == s with every piece between added tokens in NFC, and
//                  streaming decoding of the same ids gives the same text;
//   invalid UTF-8: Encode fails with a clear error (never a crash).
// The expected text is computed here with ICU and a plain scan for the added tokens, not with
// the tokenizer's own code.
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "fluxattn/models/tokenizer.h"
#include "fuzz_check.h"

namespace {

using fluxattn::fuzz::Fail;
using fluxattn::models::Tokenizer;

const Tokenizer& FixtureTokenizer() {
  static const Tokenizer* tokenizer = [] {
    // FLUXATTN_TOKENIZER_FIXTURES in the environment overrides the source tree's folder (for
    // fuzzing from a copied build on another machine).
    const char* env = std::getenv("FLUXATTN_TOKENIZER_FIXTURES");
    const std::string dir =
        std::string(env != nullptr ? env : FLUXATTN_TOKENIZER_FIXTURES) + "/qwen2";
    auto loaded = Tokenizer::FromModelDir(dir);
    if (!loaded.ok()) Fail("fixture tokenizer loads", std::string(loaded.status().message()));
    for (const auto& token : (*loaded)->added_tokens()) {
      if (token.normalized || token.lstrip || token.rstrip || token.single_word) {
        Fail("fixture added tokens are matched verbatim", token.content);
      }
    }
    return loaded->release();
  }();
  return *tokenizer;
}

std::string Nfc(const std::string& utf8) {
  UErrorCode error = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(error);
  if (U_FAILURE(error)) Fail("ICU NFC is available", u_errorName(error));
  icu::UnicodeString normalized = nfc->normalize(icu::UnicodeString::fromUTF8(utf8), error);
  if (U_FAILURE(error)) Fail("ICU normalizes valid UTF-8", u_errorName(error));
  std::string out;
  normalized.toUTF8String(out);
  return out;
}

// The text as the tokenizer should give it back: added tokens (leftmost, longest first) kept
// verbatim, everything between them in NFC.
std::string ExpectedRoundTrip(const Tokenizer& tokenizer, const std::string& text) {
  std::string out, piece;
  size_t i = 0;
  while (i < text.size()) {
    size_t match = 0;
    for (const auto& token : tokenizer.added_tokens()) {
      const std::string& content = token.content;
      if (content.size() > match && text.compare(i, content.size(), content) == 0) {
        match = content.size();
      }
    }
    if (match == 0) {
      piece += text[i++];
      continue;
    }
    out += Nfc(piece);
    piece.clear();
    out.append(text, i, match);
    i += match;
  }
  return out + Nfc(piece);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Tokenizer& tokenizer = FixtureTokenizer();
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(text, /*add_special_tokens=*/false);
  if (!fluxattn::fuzz::IsValidUtf8(text)) {
    if (ids.ok()) Fail("invalid UTF-8 is refused", absl::CHexEscape(text));
    fluxattn::fuzz::CheckUserError(ids.status(), "");
    return 0;
  }
  if (!ids.ok()) Fail("valid UTF-8 encodes", std::string(ids.status().message()));
  absl::StatusOr<std::string> decoded = tokenizer.Decode(*ids);
  if (!decoded.ok()) Fail("encoded ids decode", std::string(decoded.status().message()));
  const std::string expected = ExpectedRoundTrip(tokenizer, text);
  if (*decoded != expected) {
    Fail("Decode(Encode(s)) == NFC(s)",
         absl::StrCat("\"", absl::CHexEscape(expected), "\" became \"", absl::CHexEscape(*decoded),
                      "\""));
  }
  fluxattn::models::StreamingDecoder stream = tokenizer.NewStreamingDecoder();
  std::string streamed;
  for (int32_t id : *ids) {
    absl::StatusOr<std::string> piece = stream.Push(id);
    if (!piece.ok()) Fail("streaming accepts encoded ids", std::string(piece.status().message()));
    streamed += *piece;
  }
  streamed += stream.Finish();
  if (streamed != *decoded) Fail("streaming decode equals Decode", absl::CHexEscape(streamed));
  return 0;
}
