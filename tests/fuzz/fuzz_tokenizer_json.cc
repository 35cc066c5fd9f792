// Fuzz target: tokenizer.json loading. Any input must give either a tokenizer or one error line
// naming the source. A tokenizer that loads must then work: encoding a few fixed texts succeeds,
// every id it returns is in the vocabulary and decodes, and streaming decoding agrees with Decode.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "fluxattn/models/tokenizer.h"
#include "fuzz_check.h"

namespace {

using fluxattn::fuzz::Fail;
using fluxattn::models::Tokenizer;

void CheckDecodeAgreement(const Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  absl::StatusOr<std::string> text = tokenizer.Decode(ids);
  if (!text.ok()) Fail("ids from Encode decode", std::string(text.status().message()));
  fluxattn::models::StreamingDecoder stream = tokenizer.NewStreamingDecoder();
  std::string streamed;
  for (int32_t id : ids) {
    absl::StatusOr<std::string> piece = stream.Push(id);
    if (!piece.ok()) Fail("streaming accepts known ids", std::string(piece.status().message()));
    streamed += *piece;
  }
  streamed += stream.Finish();
  if (streamed != *text) {
    Fail("streaming decode equals Decode", absl::StrCat(streamed, " vs ", *text));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view json(reinterpret_cast<const char*>(data), size);
  const std::string origin = "fuzz/tokenizer.json";
  absl::StatusOr<std::unique_ptr<Tokenizer>> loaded = Tokenizer::FromJson(json, origin);
  if (!loaded.ok()) {
    fluxattn::fuzz::CheckUserError(loaded.status(), origin);
    return 0;
  }
  const Tokenizer& tokenizer = **loaded;
  const int32_t vocab_size = tokenizer.vocab_size();
  for (const char* text : {"", "Hello world", " 12345 <|endoftext|>\n\n\tcafe\xcc\x81!",
                           "\xe6\xbc\xa2\xe5\xad\x97 \xf0\x9f\x98\x80 it's"}) {
    for (bool add_special : {false, true}) {
      absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(text, add_special);
      if (!ids.ok()) Fail("valid UTF-8 encodes", std::string(ids.status().message()));
      for (int32_t id : *ids) {
        if (id < 0 || id >= vocab_size) {
          Fail("encoded ids lie in the vocabulary", absl::StrCat(id, " of ", vocab_size));
        }
      }
      CheckDecodeAgreement(tokenizer, *ids);
    }
  }
  // Decoding any id below vocab_size either works or fails with a clear error (ids may be
  // unassigned); out-of-range ids always fail.
  const int32_t probe = std::min<int32_t>(vocab_size, 256);
  for (int32_t id = 0; id < probe; ++id) {
    absl::StatusOr<std::string> bytes = tokenizer.IdToBytes(id);
    if (!bytes.ok()) fluxattn::fuzz::CheckUserError(bytes.status(), "");
  }
  for (int32_t id : {-1, vocab_size}) {
    if (tokenizer.Decode(std::vector<int32_t>{id}).ok()) {
      Fail("out-of-range ids are refused", absl::StrCat(id));
    }
  }
  return 0;
}
