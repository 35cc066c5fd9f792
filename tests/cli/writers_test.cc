// CSV and SVG writers, read back by independent parsers.
#include <cmath>
#include <map>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "eval/csv.h"
#include "eval/svg_plot.h"
#include "eval/text_table.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fluxattn::eval {
namespace {

std::string RandomField(std::mt19937_64& rng) {
  static const std::string kAlphabet = "ab,\"\n\r x1.-";
  std::string s;
  const int n = static_cast<int>(rng() % 8);
  for (int i = 0; i < n; ++i) s += kAlphabet[rng() % kAlphabet.size()];
  return s;
}

TEST(Csv, RandomAwkwardFieldsRoundTrip) {
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 50; ++trial) {
    const int cols = 1 + static_cast<int>(rng() % 5);
    CsvRow header;
    for (int c = 0; c < cols; ++c) header.push_back("h" + RandomField(rng));
    std::vector<CsvRow> rows(rng() % 6);
    for (CsvRow& row : rows) {
      for (int c = 0; c < cols; ++c) row.push_back(RandomField(rng));
    }
    auto parsed = ParseCsv(FormatCsv(header, rows));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    ASSERT_EQ(parsed->size(), rows.size() + 1);
    EXPECT_EQ((*parsed)[0], header);
    for (size_t r = 0; r < rows.size(); ++r) EXPECT_EQ((*parsed)[r + 1], rows[r]);
  }
}

TEST(Csv, QuotesOnlyWhenNeeded) {
  EXPECT_EQ(CsvField("plain"), "plain");
  EXPECT_EQ(CsvField("a,b"), "\"a,b\"");
  EXPECT_EQ(CsvField("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_FALSE(ParseCsv("a,\"b\n").ok());
}

struct SvgCircle {
  std::string series;
  double x, y, cx, cy;
};

// Reads the data points back out of the SVG with a regular expression of our own.
std::vector<SvgCircle> ReadPoints(const std::string& svg) {
  std::vector<SvgCircle> out;
  const std::regex re(
      "<circle class=\"point\" data-series=\"([^\"]*)\" data-x=\"([^\"]+)\" "
      "data-y=\"([^\"]+)\" cx=\"([^\"]+)\" cy=\"([^\"]+)\"");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator();
       ++it) {
    SvgCircle c;
    c.series = (*it)[1].str();
    EXPECT_TRUE(absl::SimpleAtod((*it)[2].str(), &c.x));
    EXPECT_TRUE(absl::SimpleAtod((*it)[3].str(), &c.y));
    EXPECT_TRUE(absl::SimpleAtod((*it)[4].str(), &c.cx));
    EXPECT_TRUE(absl::SimpleAtod((*it)[5].str(), &c.cy));
    out.push_back(c);
  }
  return out;
}

std::vector<double> ReadTicks(const std::string& svg, const std::string& cls) {
  std::vector<double> out;
  const std::regex re("class=\"" + cls + "\" data-value=\"([^\"]+)\"");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator();
       ++it) {
    double v;
    EXPECT_TRUE(absl::SimpleAtod((*it)[1].str(), &v));
    out.push_back(v);
  }
  return out;
}

// Every opened element is closed in order (self-closing tags aside).
bool TagsBalance(const std::string& svg) {
  std::vector<std::string> stack;
  const std::regex re("<(/?)([a-zA-Z]+)[^>]*?(/?)>");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator();
       ++it) {
    if ((*it)[3].length() > 0) continue;
    if ((*it)[1].length() == 0) {
      stack.push_back((*it)[2].str());
    } else {
      if (stack.empty() || stack.back() != (*it)[2].str()) return false;
      stack.pop_back();
    }
  }
  return stack.empty();
}

TEST(Svg, PointsMapLinearlyOntoTheAxesAndTicksCoverThem) {
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> time(0.01, 40.0), acc(0.0, 1.0);
  ScatterPlot plot;
  plot.title = "accuracy vs prefill <time> & \"speed\"";
  plot.x_label = "prefill time (s)";
  plot.y_label = "accuracy";
  plot.y_min = 0.0;
  plot.y_max = 1.0;
  for (int s = 0; s < 4; ++s) {
    PlotSeries series;
    series.name = "config_" + std::to_string(s);
    for (int p = 0; p < 3; ++p) series.points.push_back({time(rng), acc(rng), "4k"});
    plot.series.push_back(series);
  }
  const std::string svg = RenderScatterSvg(plot);
  EXPECT_TRUE(TagsBalance(svg));
  EXPECT_THAT(svg, ::testing::HasSubstr("&lt;time&gt; &amp; &quot;speed&quot;"));
  const std::vector<SvgCircle> points = ReadPoints(svg);
  ASSERT_EQ(points.size(), 12u);
  // One affine map per axis: x grows right, y grows up.
  const SvgCircle& a = points[0];
  const SvgCircle* b = &points[1];
  for (const SvgCircle& p : points) {
    if (std::abs(p.x - a.x) > std::abs(b->x - a.x)) b = &p;
  }
  const double sx = (b->cx - a.cx) / (b->x - a.x);
  EXPECT_GT(sx, 0);
  for (const SvgCircle& p : points) {
    EXPECT_NEAR(p.cx, a.cx + sx * (p.x - a.x), 0.02);
  }
  const std::vector<double> xt = ReadTicks(svg, "xtick");
  const std::vector<double> yt = ReadTicks(svg, "ytick");
  ASSERT_GE(xt.size(), 3u);
  ASSERT_GE(yt.size(), 3u);
  EXPECT_TRUE(std::is_sorted(xt.begin(), xt.end()));
  EXPECT_EQ(xt.front(), 0.0);
  double max_x = 0;
  for (const SvgCircle& p : points) max_x = std::max(max_x, p.x);
  EXPECT_GE(xt.back(), max_x);
  EXPECT_EQ(yt.front(), 0.0);
  EXPECT_NEAR(yt.back(), 1.0, 1e-12);
  // y axis fixed to [0, 1]: pixel y is affine in the value with a negative slope, anchored at
  // the end ticks.
  double cy0 = 0, cy1 = 0;
  {
    std::smatch m;
    ASSERT_TRUE(std::regex_search(
        svg, m, std::regex("class=\"ytick\" data-value=\"0\" x=\"[^\"]+\" y=\"([^\"]+)\"")));
    cy0 = std::stod(m[1].str()) - 4;  // labels sit 4 px below the tick line
    ASSERT_TRUE(std::regex_search(
        svg, m, std::regex("class=\"ytick\" data-value=\"1\" x=\"[^\"]+\" y=\"([^\"]+)\"")));
    cy1 = std::stod(m[1].str()) - 4;
  }
  EXPECT_LT(cy1, cy0);
  for (const SvgCircle& p : points) EXPECT_NEAR(p.cy, cy0 + (cy1 - cy0) * p.y, 0.02);
  // Legend names every series once.
  for (const PlotSeries& s : plot.series) {
    EXPECT_THAT(svg, ::testing::HasSubstr(">" + s.name + "</text>"));
  }
}

TEST(Svg, NiceTicksAreRoundAndCoverTheRange) {
  std::mt19937_64 rng(9);
  for (int trial = 0; trial < 200; ++trial) {
    const double lo = std::uniform_real_distribution<double>(-100, 100)(rng);
    const double hi = lo + std::pow(10.0, std::uniform_real_distribution<double>(-3, 4)(rng));
    const std::vector<double> t = NiceTicks(lo, hi, 5);
    ASSERT_GE(t.size(), 2u);
    ASSERT_LE(t.size(), 12u);
    EXPECT_LE(t.front(), lo + 1e-9 * std::abs(lo));
    EXPECT_GE(t.back(), hi - 1e-9 * std::abs(hi));
    const double step = t[1] - t[0];
    const double mantissa = step / std::pow(10.0, std::floor(std::log10(step) + 1e-12));
    EXPECT_TRUE(std::abs(mantissa - 1) < 1e-6 || std::abs(mantissa - 2) < 1e-6 ||
                std::abs(mantissa - 5) < 1e-6 || std::abs(mantissa - 10) < 1e-6)
        << mantissa;
  }
  EXPECT_EQ(FormatTick(0.25, 0.05), "0.25");
  EXPECT_EQ(FormatTick(10, 5), "10");
}

TEST(TextTable, AlignsNumbersRightAndTextLeft) {
  TextTable t({"config", "acc"});
  t.AddRow({"fa", "1.00"});
  t.AddRow({"streaming", "0.5"});
  EXPECT_EQ(t.Render(),
            "config      acc\n"
            "---------  ----\n"
            "fa         1.00\n"
            "streaming   0.5\n");
}

}  // namespace
}  // namespace fluxattn::eval
