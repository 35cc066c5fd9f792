// Tables, CSV, JSON and the SVG picture of bench, eval and compare results.
#pragma once

#include <string>
#include <vector>

#include "eval/csv.h"
#include "eval/results.h"
#include "eval/svg_plot.h"
#include "eval/text_table.h"
#include "nlohmann/json.hpp"

namespace fluxattn::eval {

// Fixed decimals; NaN and infinities print as "-".
std::string FormatNumber(double value, int decimals);
// Bytes as MiB with two decimals.
std::string FormatMiB(size_t bytes);

TextTable BenchTable(const std::vector<BenchResult>& results);
CsvRow BenchCsvHeader();
std::vector<CsvRow> BenchCsvRows(const std::vector<BenchResult>& results);
nlohmann::ordered_json BenchJson(const BenchResult& result);

TextTable EvalTable(const std::vector<EvalResult>& results);
CsvRow EvalCsvHeader();
std::vector<CsvRow> EvalCsvRows(const std::vector<EvalResult>& results);
// With `details`, every sample's prompt length, expected answer, output and score.
nlohmann::ordered_json EvalJson(const EvalResult& result, bool details);

TextTable CompareTable(const std::vector<CompareRow>& rows);
CsvRow CompareCsvHeader(const std::vector<std::string>& tasks);
std::vector<CsvRow> CompareCsvRows(const std::vector<CompareRow>& rows);
nlohmann::ordered_json CompareJson(const std::vector<CompareRow>& rows);
// Mean exact-match accuracy against bench prefill time: one series per config, one point per
// length (rows without an accuracy are left out).
ScatterPlot ComparePlot(const std::vector<CompareRow>& rows);

}  // namespace fluxattn::eval
