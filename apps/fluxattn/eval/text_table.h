// Aligned plain-text tables for stdout: text columns left-aligned, numeric columns right-aligned.
#pragma once

#include <string>
#include <vector>

namespace fluxattn::eval {

class TextTable {
 public:
  explicit TextTable(std::vector<std::string> header) : header_(std::move(header)) {}
  void AddRow(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  // A column is right-aligned when every non-empty cell in it starts like a number.
  std::string Render() const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace fluxattn::eval
