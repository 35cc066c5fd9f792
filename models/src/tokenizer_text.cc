// UTF-8 helpers, the byte-level alphabet and PCRE2 regexes of the tokenizer.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cstring>

#include "fluxattn/status.h"
#include "tokenizer_internal.h"

namespace fluxattn::models::tokenizer_internal {
namespace {

// Expected length of a sequence starting with `lead` (0 when `lead` cannot start one) and the
// range its second byte must lie in (Unicode Table 3-7: no overlongs, no surrogates).
int SequenceLength(uint8_t lead, uint8_t* second_lo, uint8_t* second_hi) {
  *second_lo = 0x80;
  *second_hi = 0xBF;
  if (lead < 0x80) return 1;
  if (lead < 0xC2) return 0;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) {
    if (lead == 0xE0) *second_lo = 0xA0;
    if (lead == 0xED) *second_hi = 0x9F;
    return 3;
  }
  if (lead < 0xF5) {
    if (lead == 0xF0) *second_lo = 0x90;
    if (lead == 0xF4) *second_hi = 0x8F;
    return 4;
  }
  return 0;
}

// Number of leading bytes of `s` that agree with a well-formed sequence (at most its length);
// sets `*needed` to the sequence length (0 for an impossible lead byte).
int ConsistentPrefix(absl::string_view s, int* needed) {
  uint8_t lo, hi;
  *needed = SequenceLength(static_cast<uint8_t>(s[0]), &lo, &hi);
  if (*needed == 0) return 0;
  int n = 1;
  while (n < *needed && n < static_cast<int>(s.size())) {
    uint8_t b = static_cast<uint8_t>(s[n]);
    if (n == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) break;
    ++n;
  }
  return n;
}

}  // namespace

int ValidUtf8SequenceLength(absl::string_view s) {
  if (s.empty()) return 0;
  int needed;
  int n = ConsistentPrefix(s, &needed);
  return (needed > 0 && n == needed) ? needed : 0;
}

size_t FindInvalidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    int n = ValidUtf8SequenceLength(s.substr(i));
    if (n == 0) return i;
    i += n;
  }
  return absl::string_view::npos;
}

std::string LossyUtf8(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    if (static_cast<uint8_t>(bytes[i]) < 0x80) {
      out.push_back(bytes[i++]);
      continue;
    }
    int needed;
    int n = ConsistentPrefix(bytes.substr(i), &needed);
    if (needed > 0 && n == needed) {
      out.append(bytes.data() + i, n);
      i += n;
    } else {
      out.append("\xEF\xBF\xBD");  // one U+FFFD per maximal invalid subpart
      i += std::max(n, 1);
    }
  }
  return out;
}

size_t StreamableUtf8Prefix(absl::string_view bytes) {
  // Only the last character can be unfinished; its lead byte is among the last three bytes.
  size_t size = bytes.size();
  for (size_t back = 1; back <= 3 && back <= size; ++back) {
    size_t start = size - back;
    uint8_t b = static_cast<uint8_t>(bytes[start]);
    if (b >= 0x80 && b <= 0xBF) continue;  // continuation byte: keep looking for the lead
    int needed;
    int n = ConsistentPrefix(bytes.substr(start), &needed);
    bool unfinished = needed > static_cast<int>(back) && n == static_cast<int>(back);
    return unfinished ? start : size;
  }
  return size;
}

uint32_t NextCodePoint(absl::string_view s, size_t* pos) {
  uint8_t b0 = static_cast<uint8_t>(s[*pos]);
  if (b0 < 0x80) {
    ++*pos;
    return b0;
  }
  int len = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : 2;
  uint32_t cp = b0 & (0x7F >> len);
  for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<uint8_t>(s[*pos + k]) & 0x3F);
  *pos += len;
  return cp;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

namespace {

// The remapped bytes end up at U+0100..U+0143, so every character of the alphabet is below this.
constexpr uint32_t kAlphabetEnd = 256 + 68;

struct ByteTables {
  std::array<std::string, 256> byte_to_char;
  std::array<uint32_t, 256> byte_to_code_point;
  std::array<int16_t, kAlphabetEnd> code_point_to_byte;
  ByteTables() {
    code_point_to_byte.fill(-1);
    // Printable Latin-1 bytes stand for themselves; the others (controls, space, 0x7F-0xA0,
    // soft hyphen) are moved to U+0100 and up so that every token is printable.
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      byte_to_code_point[b] = printable ? b : 256 + next++;
      AppendUtf8(byte_to_code_point[b], &byte_to_char[b]);
      code_point_to_byte[byte_to_code_point[b]] = static_cast<int16_t>(b);
    }
    FLUXATTN_CHECK(next == kAlphabetEnd - 256);
  }
};

const ByteTables& Tables() {
  static const ByteTables* tables = new ByteTables();
  return *tables;
}

}  // namespace

const std::array<std::string, 256>& ByteToChar() { return Tables().byte_to_char; }

int CharToByte(uint32_t code_point) {
  return code_point < kAlphabetEnd ? Tables().code_point_to_byte[code_point] : -1;
}

std::string ByteLevelDecodeToken(absl::string_view token) {
  std::string bytes;
  size_t pos = 0;
  while (pos < token.size()) {
    if (ValidUtf8SequenceLength(token.substr(pos)) == 0) return std::string(token);
    int b = CharToByte(NextCodePoint(token, &pos));
    if (b < 0) return std::string(token);
    bytes.push_back(static_cast<char>(b));
  }
  return bytes;
}

std::string ByteLevelEncode(absl::string_view bytes) {
  const auto& table = ByteToChar();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out.append(table[static_cast<uint8_t>(c)]);
  return out;
}

// ---- Regex ------------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(const std::string& pattern,
                                                      const std::string& where) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    return InvalidInput(where, "a valid regular expression",
                        absl::StrCat("\"", pattern, "\" (", reinterpret_cast<char*>(message),
                                     " at offset ", error_offset, ")"));
  }
  // JIT is an optional speed-up; matching falls back to the interpreter without it.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return std::unique_ptr<Regex>(new Regex(code));
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

std::vector<std::pair<size_t, size_t>> Regex::FindAll(absl::string_view text) const {
  std::vector<std::pair<size_t, size_t>> matches;
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* data = pcre2_match_data_create_from_pattern(code, nullptr);
  FLUXATTN_CHECK(data != nullptr);
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  // The text was validated once; checking it again at every call would be quadratic.
  uint32_t options = PCRE2_NO_UTF_CHECK;
  while (start <= text.size()) {
    int rc = pcre2_match(code, subject, text.size(), start, options, data, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !(options & PCRE2_NO_JIT)) {
      options |= PCRE2_NO_JIT;  // very long runs can exhaust the JIT stack; interpret instead
      continue;
    }
    if (rc < 0) break;  // no (further) match
    PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
    size_t begin = ovector[0], end = ovector[1];
    if (end > begin) {
      matches.emplace_back(begin, end);
      start = end;
    } else {
      if (begin >= text.size()) break;
      size_t next = begin;
      NextCodePoint(text, &next);  // step over one character after an empty match
      start = next;
    }
  }
  pcre2_match_data_free(data);
  return matches;
}

bool Regex::FullMatch(absl::string_view text) const {
  auto matches = FindAll(text);
  return matches.size() == 1 && matches[0].first == 0 && matches[0].second == text.size();
}

}  // namespace fluxattn::models::tokenizer_internal
