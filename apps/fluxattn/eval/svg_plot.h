// A self-contained SVG scatter plot (axes, ticks, grid, labels, legend), enough to show
// accuracy against prefill time for a few configurations without any plotting library.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace fluxattn::eval {

struct PlotPoint {
  double x = 0.0;
  double y = 0.0;
  std::string label;  // drawn next to the point (e.g. the context length); may be empty
};

// Points of one series are drawn in one colour and joined in the given order.
struct PlotSeries {
  std::string name;
  std::vector<PlotPoint> points;
};

struct ScatterPlot {
  std::string title;
  std::string x_label;
  std::string y_label;
  std::vector<PlotSeries> series;
  // Fixed axis ranges; by default each axis spans its data, widened to round tick values
  // (the x axis always starts at 0).
  std::optional<double> y_min, y_max;
};

// Round tick positions covering [lo, hi]: steps of 1, 2 or 5 times a power of ten, about
// `target_count` of them; the first tick is <= lo and the last >= hi.
std::vector<double> NiceTicks(double lo, double hi, int target_count);

// Tick text with as many decimals as the step needs ("0.25", "10").
std::string FormatTick(double value, double step);

std::string EscapeXml(const std::string& text);

std::string RenderScatterSvg(const ScatterPlot& plot);

}  // namespace fluxattn::eval
