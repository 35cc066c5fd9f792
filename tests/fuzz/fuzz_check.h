// Helpers shared by the fuzz targets: property checks that abort (so libFuzzer keeps the input
// as a crash) and an independent UTF-8 validator.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace fluxattn::fuzz {

// Reports a violated property with the detail and aborts.
[[noreturn]] inline void Fail(absl::string_view property, absl::string_view detail) {
  std::fprintf(stderr, "fuzz property violated: %.*s\n  %.*s\n", static_cast<int>(property.size()),
               property.data(), static_cast<int>(detail.size()), detail.data());
  std::abort();
}

// Every error a user sees is one line that starts with the name of its source.
inline void CheckUserError(const absl::Status& status, absl::string_view source) {
  if (status.ok()) return;
  const std::string message(status.message());
  if (absl::string_view(message).substr(0, source.size()) != source) {
    Fail("error names its source", message);
  }
  if (message.find('\n') != std::string::npos || message.find('\r') != std::string::npos) {
    Fail("error is one line", message);
  }
}

// Well-formed UTF-8 (Unicode Table 3-7), written out here to stay independent of the parsers.
inline bool IsValidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = s[i];
    size_t n = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c <= 0x7F) {
      n = 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      const unsigned char b = s[i + k];
      if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) return false;
    }
    i += n;
  }
  return true;
}

}  // namespace fluxattn::fuzz
