#include "eval/text_table.h"

#include <algorithm>

#include "absl/strings/ascii.h"

namespace fluxattn::eval {
namespace {

bool LooksNumeric(const std::string& cell) {
  if (cell == "-") return true;
  const char c = cell.empty() ? ' ' : cell[0];
  return absl::ascii_isdigit(static_cast<unsigned char>(c)) ||
         ((c == '-' || c == '+' || c == '.') && cell.size() > 1);
}

}  // namespace

std::string TextTable::Render() const {
  const size_t cols = header_.size();
  std::vector<size_t> width(cols, 0);
  std::vector<bool> right(cols, true);
  for (size_t c = 0; c < cols; ++c) width[c] = header_[c].size();
  for (const auto& row : rows_) {
    for (size_t c = 0; c < cols && c < row.size(); ++c) {
      width[c] = std::max(width[c], row[c].size());
      if (!row[c].empty() && !LooksNumeric(row[c])) right[c] = false;
    }
  }
  std::string out;
  auto line = [&](const std::vector<std::string>& row) {
    std::string text;
    for (size_t c = 0; c < cols; ++c) {
      const std::string cell = c < row.size() ? row[c] : "";
      const std::string pad(width[c] - std::min(width[c], cell.size()), ' ');
      if (c > 0) text += "  ";
      text += right[c] ? pad + cell : cell + pad;
    }
    while (!text.empty() && text.back() == ' ') text.pop_back();
    out += text + "\n";
  };
  line(header_);
  std::string rule;
  for (size_t c = 0; c < cols; ++c) {
    if (c > 0) rule += "  ";
    rule += std::string(width[c], '-');
  }
  out += rule + "\n";
  for (const auto& row : rows_) line(row);
  return out;
}

}  // namespace fluxattn::eval
