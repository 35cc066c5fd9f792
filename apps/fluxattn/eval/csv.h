// RFC 4180 CSV: fields holding a comma, quote or line break are quoted, quotes doubled.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fluxattn::eval {

using CsvRow = std::vector<std::string>;

std::string CsvField(absl::string_view field);
// Header and rows, "\n" after every record.
std::string FormatCsv(const CsvRow& header, const std::vector<CsvRow>& rows);
// The inverse of FormatCsv (records of any width); an unterminated quote is an error.
absl::StatusOr<std::vector<CsvRow>> ParseCsv(absl::string_view text);

// Writes `contents` to `path`; the error names the file.
absl::Status WriteTextFile(const std::string& path, absl::string_view contents);

}  // namespace fluxattn::eval
