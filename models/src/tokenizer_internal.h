// Building blocks of the tokenizer (private to libfluxattn_models): UTF-8 helpers, the GPT-2
// byte <-> character table, normalizers, pre-tokenizers and the BPE model.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fluxattn::models::tokenizer_internal {

// ---- UTF-8 ----------------------------------------------------------------------------------

// Length of the valid UTF-8 sequence at the start of `s`, or 0 when it is not valid there.
int ValidUtf8SequenceLength(absl::string_view s);
// Offset of the first byte that is not valid UTF-8, or npos.
size_t FindInvalidUtf8(absl::string_view s);
// Replaces every maximal invalid subsequence by U+FFFD, as Rust's String::from_utf8_lossy (and
// hence the `tokenizers` decoders) do.
std::string LossyUtf8(absl::string_view bytes);
// Length of the longest prefix of `bytes` that does not end inside a character that later bytes
// could still complete; the rest must be held back by a streaming decoder.
size_t StreamableUtf8Prefix(absl::string_view bytes);
// Decodes the code point at `s[*pos]` (which must be valid UTF-8) and advances `*pos`.
uint32_t NextCodePoint(absl::string_view s, size_t* pos);
void AppendUtf8(uint32_t code_point, std::string* out);

// ---- Byte-level alphabet ---------------------------------------------------------------------

// GPT-2's reversible map from the 256 byte values to printable characters (UTF-8 encoded).
const std::array<std::string, 256>& ByteToChar();
// Inverse of ByteToChar: code point -> byte, or -1.
int CharToByte(uint32_t code_point);
// The bytes a byte-level token stands for; when some character is outside the alphabet the
// token's own UTF-8 is used, as the ByteLevel decoder of `tokenizers` does.
std::string ByteLevelDecodeToken(absl::string_view token);
std::string ByteLevelEncode(absl::string_view bytes);

// ---- Regular expressions (PCRE2, UTF + UCP) ---------------------------------------------------

class Regex {
 public:
  // `where` names the file and key for the error message.
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(const std::string& pattern,
                                                        const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Non-overlapping matches, left to right, as (begin, end) byte offsets. Empty matches are left
  // out (they produce no piece anyway).
  std::vector<std::pair<size_t, size_t>> FindAll(absl::string_view text) const;
  // Whether the regex matches the whole of `text` (used for single-character class tests).
  bool FullMatch(absl::string_view text) const;

 private:
  explicit Regex(void* code) : code_(code) {}
  void* code_;  // pcre2_code*
};

// ---- Normalizers -----------------------------------------------------------------------------

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string Normalize(absl::string_view text) const = 0;
};

// kind: "NFC", "NFD", "NFKC" or "NFKD". Fails when the Unicode library is not available.
absl::StatusOr<std::unique_ptr<Normalizer>> MakeUnicodeNormalizer(const std::string& kind,
                                                                  const std::string& where);
std::unique_ptr<Normalizer> MakeSequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts);
bool HaveUnicodeNormalization();

// ---- Pre-tokenizers --------------------------------------------------------------------------

// Splits every piece into smaller pieces (and may rewrite them, as ByteLevel does).
class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void Apply(std::vector<std::string>* pieces) const = 0;
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Pattern given as a regex, or as a literal string when `regex` is null.
std::unique_ptr<PreTokenizer> MakeSplitPreTokenizer(std::unique_ptr<Regex> regex,
                                                    std::string literal, SplitBehavior behavior,
                                                    bool invert);
absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeByteLevelPreTokenizer(bool add_prefix_space,
                                                                        bool use_regex);
absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeDigitsPreTokenizer(bool individual_digits);
std::unique_ptr<PreTokenizer> MakeSequencePreTokenizer(
    std::vector<std::unique_ptr<PreTokenizer>> parts);

// ---- BPE model -------------------------------------------------------------------------------

class BpeModel {
 public:
  BpeModel(absl::flat_hash_map<std::string, int32_t> vocab, bool ignore_merges,
           std::optional<int32_t> unk_id);
  // Adds merge number `rank` of `left` + `right`; `where` names the entry for errors.
  absl::Status AddMerge(const std::string& left, const std::string& right, int32_t rank,
                        const std::string& where);

  // Ids of one pre-tokenized piece (already in the byte-level alphabet). Thread-safe.
  void Tokenize(absl::string_view word, std::vector<int32_t>* ids) const;

  const absl::flat_hash_map<std::string, int32_t>& vocab() const { return vocab_; }

 private:
  void Merge(absl::string_view word, std::vector<int32_t>* ids) const;

  struct MergeResult {
    int32_t rank;
    int32_t id;
  };
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }

  absl::flat_hash_map<std::string, int32_t> vocab_;
  absl::flat_hash_map<uint64_t, MergeResult> merges_;
  bool ignore_merges_;
  std::optional<int32_t> unk_id_;

  // Pieces repeat a lot in real text; their ids are cached (bounded, cleared when full).
  mutable std::mutex cache_mutex_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace fluxattn::models::tokenizer_internal
