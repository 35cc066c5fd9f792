#include "eval/lengths.h"

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "fluxattn/status.h"

namespace fluxattn::eval {
namespace {

constexpr int64_t kMaxLength = int64_t{1} << 40;
constexpr absl::string_view kExpected = "a token count such as 512, 4k or 1m";

}  // namespace

absl::StatusOr<int64_t> ParseLength(absl::string_view text, absl::string_view flag) {
  const absl::string_view original = text;
  text = absl::StripAsciiWhitespace(text);
  auto bad = [&] {
    return InvalidInput(flag, kExpected, absl::StrCat("\"", std::string(original), "\""));
  };
  if (text.empty()) return bad();
  int64_t multiplier = 1;
  const char last = absl::ascii_tolower(static_cast<unsigned char>(text.back()));
  if (last == 'k') multiplier = int64_t{1} << 10;
  if (last == 'm') multiplier = int64_t{1} << 20;
  if (multiplier != 1) text.remove_suffix(1);
  if (text.empty()) return bad();
  for (char c : text) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return bad();
  }
  int64_t value = 0;
  // Digits only, so failure here means overflow.
  if (!absl::SimpleAtoi(text, &value) || value > kMaxLength / multiplier) return bad();
  value *= multiplier;
  if (value < 1) return bad();
  return value;
}

absl::StatusOr<std::vector<int64_t>> ParseLengthList(absl::string_view text,
                                                     absl::string_view flag) {
  std::vector<int64_t> lengths;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    FLUXATTN_ASSIGN_OR_RETURN(int64_t value, ParseLength(part, flag));
    lengths.push_back(value);
  }
  return lengths;
}

std::string FormatLength(int64_t tokens) {
  if (tokens > 0 && tokens % (int64_t{1} << 20) == 0) return absl::StrCat(tokens >> 20, "m");
  if (tokens > 0 && tokens % (int64_t{1} << 10) == 0) return absl::StrCat(tokens >> 10, "k");
  return absl::StrCat(tokens);
}

absl::StatusOr<std::vector<std::string>> ParseNameList(absl::string_view text,
                                                       absl::string_view flag) {
  std::vector<std::string> names;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    part = absl::StripAsciiWhitespace(part);
    if (part.empty()) {
      return InvalidInput(flag, "a comma-separated list of names",
                          absl::StrCat("an empty entry in \"", std::string(text), "\""));
    }
    names.emplace_back(part);
  }
  return names;
}

}  // namespace fluxattn::eval
