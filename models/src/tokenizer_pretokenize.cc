// Normalizers and pre-tokenizers, following the semantics of the `tokenizers` library.
#include <algorithm>

#include "fluxattn/status.h"
#include "tokenizer_internal.h"

#if FLUXATTN_TOKENIZER_HAVE_ICU
#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#endif

namespace fluxattn::models::tokenizer_internal {
namespace {

// ---- Normalizers ------------------------------------------------------------------------------

#if FLUXATTN_TOKENIZER_HAVE_ICU
class IcuNormalizer : public Normalizer {
 public:
  explicit IcuNormalizer(const icu::Normalizer2* normalizer) : normalizer_(normalizer) {}
  std::string Normalize(absl::string_view text) const override {
    UErrorCode error = U_ZERO_ERROR;
    icu::StringPiece piece(text.data(), static_cast<int32_t>(text.size()));
    if (normalizer_->isNormalizedUTF8(piece, error) && U_SUCCESS(error)) return std::string(text);
    std::string out;
    icu::StringByteSink<std::string> sink(&out);
    error = U_ZERO_ERROR;
    normalizer_->normalizeUTF8(0, piece, sink, nullptr, error);
    // Input is valid UTF-8 (checked by Encode), so ICU has no reason to fail.
    FLUXATTN_CHECK(U_SUCCESS(error));
    return out;
  }

 private:
  const icu::Normalizer2* normalizer_;
};
#endif

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  std::string Normalize(absl::string_view text) const override {
    std::string current(text);
    for (const auto& part : parts_) current = part->Normalize(current);
    return current;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

// ---- Splitting --------------------------------------------------------------------------------

struct Span {
  size_t begin;
  size_t end;
  bool is_match;
};

// Turns matches into a cover of [0, size) alternating non-matches and matches.
std::vector<Span> Cover(const std::vector<std::pair<size_t, size_t>>& matches, size_t size) {
  std::vector<Span> spans;
  size_t previous = 0;
  for (const auto& [begin, end] : matches) {
    if (begin != previous) spans.push_back({previous, begin, false});
    spans.push_back({begin, end, true});
    previous = end;
  }
  if (previous != size) spans.push_back({previous, size, false});
  return spans;
}

// Applies a split behavior to a cover and appends the resulting non-empty pieces.
void SplitPiece(absl::string_view piece, std::vector<Span> spans, SplitBehavior behavior,
                bool invert, std::vector<std::string>* out) {
  if (invert) {
    for (Span& span : spans) span.is_match = !span.is_match;
  }
  std::vector<Span> result;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      result = std::move(spans);
      break;
    case SplitBehavior::kRemoved:
      for (const Span& span : spans) {
        if (!span.is_match) result.push_back(span);
      }
      break;
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Span& span : spans) {
        if (span.is_match && !previous_match && !result.empty()) {
          result.back().end = span.end;
        } else {
          result.push_back(span);
        }
        previous_match = span.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !result.empty()) {
          result.back().begin = it->begin;
        } else {
          result.push_back(*it);
        }
        previous_match = it->is_match;
      }
      std::reverse(result.begin(), result.end());
      break;
    }
    case SplitBehavior::kContiguous: {
      for (size_t i = 0; i < spans.size(); ++i) {
        if (i > 0 && spans[i].is_match == spans[i - 1].is_match) {
          result.back().end = spans[i].end;
        } else {
          result.push_back(spans[i]);
        }
      }
      break;
    }
  }
  for (const Span& span : result) {
    if (span.end > span.begin) out->emplace_back(piece.substr(span.begin, span.end - span.begin));
  }
}

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Regex> regex, std::string literal, SplitBehavior behavior,
                    bool invert)
      : regex_(std::move(regex)),
        literal_(std::move(literal)),
        behavior_(behavior),
        invert_(invert) {}

  void Apply(std::vector<std::string>* pieces) const override {
    std::vector<std::string> out;
    out.reserve(pieces->size() * 2);
    for (const std::string& piece : *pieces) {
      SplitPiece(piece, Cover(Find(piece), piece.size()), behavior_, invert_, &out);
    }
    *pieces = std::move(out);
  }

 private:
  std::vector<std::pair<size_t, size_t>> Find(absl::string_view text) const {
    if (regex_ != nullptr) return regex_->FindAll(text);
    std::vector<std::pair<size_t, size_t>> matches;
    if (literal_.empty()) return matches;
    for (size_t pos = text.find(literal_); pos != absl::string_view::npos;
         pos = text.find(literal_, pos + literal_.size())) {
      matches.emplace_back(pos, pos + literal_.size());
    }
    return matches;
  }

  std::unique_ptr<Regex> regex_;
  std::string literal_;
  SplitBehavior behavior_;
  bool invert_;
};

// GPT-2's pre-tokenization regex, used by ByteLevel when use_regex is set.
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Regex> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}

  void Apply(std::vector<std::string>* pieces) const override {
    std::vector<std::string> split;
    split.reserve(pieces->size());
    for (std::string& piece : *pieces) {
      // As in `tokenizers`, the prefix space goes in front of every piece that lacks one.
      if (add_prefix_space_ && (piece.empty() || piece[0] != ' ')) piece.insert(0, " ");
      if (regex_ != nullptr) {
        SplitPiece(piece, Cover(regex_->FindAll(piece), piece.size()), SplitBehavior::kIsolated,
                   false, &split);
      } else {
        split.push_back(std::move(piece));
      }
    }
    for (std::string& piece : split) piece = ByteLevelEncode(piece);
    *pieces = std::move(split);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
};

class DigitsPreTokenizer : public PreTokenizer {
 public:
  DigitsPreTokenizer(bool individual_digits, std::unique_ptr<Regex> numeric)
      : individual_digits_(individual_digits), numeric_(std::move(numeric)) {}

  void Apply(std::vector<std::string>* pieces) const override {
    std::vector<std::string> out;
    for (const std::string& piece : *pieces) {
      // Every numeric character (Rust's char::is_numeric: Nd, Nl, No) is a match of its own;
      // the behavior decides whether runs of them stay together.
      SplitPiece(piece, Cover(numeric_->FindAll(piece), piece.size()),
                 individual_digits_ ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, false,
                 &out);
    }
    *pieces = std::move(out);
  }

 private:
  bool individual_digits_;
  std::unique_ptr<Regex> numeric_;  // one \p{N} character
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  void Apply(std::vector<std::string>* pieces) const override {
    for (const auto& part : parts_) part->Apply(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

}  // namespace

bool HaveUnicodeNormalization() { return FLUXATTN_TOKENIZER_HAVE_ICU != 0; }

absl::StatusOr<std::unique_ptr<Normalizer>> MakeUnicodeNormalizer(const std::string& kind,
                                                                  const std::string& where) {
#if FLUXATTN_TOKENIZER_HAVE_ICU
  UErrorCode error = U_ZERO_ERROR;
  const icu::Normalizer2* normalizer = nullptr;
  if (kind == "NFC") normalizer = icu::Normalizer2::getNFCInstance(error);
  if (kind == "NFD") normalizer = icu::Normalizer2::getNFDInstance(error);
  if (kind == "NFKC") normalizer = icu::Normalizer2::getNFKCInstance(error);
  if (kind == "NFKD") normalizer = icu::Normalizer2::getNFKDInstance(error);
  if (normalizer == nullptr || U_FAILURE(error)) {
    return absl::InternalError(
        absl::StrCat(where, ": the Unicode ", kind,
                     " normalization data could not be loaded: ", u_errorName(error)));
  }
  return std::unique_ptr<Normalizer>(new IcuNormalizer(normalizer));
#else
  return absl::UnimplementedError(absl::StrCat(
      where, ": normalizer ", kind,
      " needs Unicode normalization, but this build has no ICU (install libicu-dev and rebuild)"));
#endif
}

std::unique_ptr<Normalizer> MakeSequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts) {
  return std::make_unique<SequenceNormalizer>(std::move(parts));
}

std::unique_ptr<PreTokenizer> MakeSplitPreTokenizer(std::unique_ptr<Regex> regex,
                                                    std::string literal, SplitBehavior behavior,
                                                    bool invert) {
  return std::make_unique<SplitPreTokenizer>(std::move(regex), std::move(literal), behavior,
                                             invert);
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeByteLevelPreTokenizer(bool add_prefix_space,
                                                                        bool use_regex) {
  std::unique_ptr<Regex> regex;
  if (use_regex) {
    FLUXATTN_ASSIGN_OR_RETURN(regex, Regex::Compile(kGpt2Pattern, "ByteLevel pre-tokenizer"));
  }
  return std::unique_ptr<PreTokenizer>(
      new ByteLevelPreTokenizer(add_prefix_space, std::move(regex)));
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeDigitsPreTokenizer(bool individual_digits) {
  FLUXATTN_ASSIGN_OR_RETURN(auto numeric, Regex::Compile(R"(\p{N})", "Digits pre-tokenizer"));
  return std::unique_ptr<PreTokenizer>(
      new DigitsPreTokenizer(individual_digits, std::move(numeric)));
}

std::unique_ptr<PreTokenizer> MakeSequencePreTokenizer(
    std::vector<std::unique_ptr<PreTokenizer>> parts) {
  return std::make_unique<SequencePreTokenizer>(std::move(parts));
}

}  // namespace fluxattn::models::tokenizer_internal
