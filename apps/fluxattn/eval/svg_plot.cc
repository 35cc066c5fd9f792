#include "eval/svg_plot.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace fluxattn::eval {
namespace {

constexpr double kWidth = 760, kHeight = 480;
constexpr double kLeft = 80, kRight = 220, kTop = 50, kBottom = 70;
// Colour-blind-safe palette (Okabe-Ito).
constexpr const char* kColors[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                   "#E69F00", "#56B4E9", "#F0E442", "#000000"};

std::string Num(double v) { return absl::StrFormat("%.2f", v); }

}  // namespace

std::vector<double> NiceTicks(double lo, double hi, int target_count) {
  if (!(hi > lo)) hi = lo + 1.0;
  const double raw = (hi - lo) / std::max(1, target_count);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * magnitude;
    if (step >= raw) break;
  }
  std::vector<double> ticks;
  const double first = std::floor(lo / step + 1e-9) * step;
  for (int i = 0;; ++i) {
    const double t = first + i * step;
    ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
    if (t >= hi - step * 1e-9) break;
  }
  return ticks;
}

std::string FormatTick(double value, double step) {
  const int decimals = std::max(0, static_cast<int>(-std::floor(std::log10(step) + 1e-9)));
  return absl::StrFormat("%.*f", decimals, value);
}

std::string EscapeXml(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string RenderScatterSvg(const ScatterPlot& plot) {
  double x_hi = 0.0, y_lo = INFINITY, y_hi = -INFINITY;
  for (const PlotSeries& s : plot.series) {
    for (const PlotPoint& p : s.points) {
      x_hi = std::max(x_hi, p.x);
      y_lo = std::min(y_lo, p.y);
      y_hi = std::max(y_hi, p.y);
    }
  }
  if (!std::isfinite(y_lo)) y_lo = 0.0, y_hi = 1.0;
  if (plot.y_min) y_lo = *plot.y_min;
  if (plot.y_max) y_hi = *plot.y_max;
  if (x_hi <= 0.0) x_hi = 1.0;
  const std::vector<double> xt = NiceTicks(0.0, x_hi, 6);
  const std::vector<double> yt = NiceTicks(y_lo, y_hi, 5);
  const double x0 = xt.front(), x1 = xt.back(), y0 = yt.front(), y1 = yt.back();
  const double pw = kWidth - kLeft - kRight, ph = kHeight - kTop - kBottom;
  auto px = [&](double x) { return kLeft + (x - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) { return kTop + ph - (y - y0) / (y1 - y0) * ph; };

  std::string svg = absl::StrCat("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
                                 "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"", Num(kWidth),
                                 "\" height=\"", Num(kHeight), "\" viewBox=\"0 0 ", Num(kWidth),
                                 " ", Num(kHeight), "\" font-family=\"sans-serif\">\n",
                                 "<rect x=\"0\" y=\"0\" width=\"", Num(kWidth), "\" height=\"",
                                 Num(kHeight), "\" fill=\"white\"/>\n");
  absl::StrAppend(&svg, "<text x=\"", Num(kLeft + pw / 2), "\" y=\"28\" font-size=\"16\" ",
                  "text-anchor=\"middle\">", EscapeXml(plot.title), "</text>\n");
  // Grid and ticks.
  const double xstep = xt.size() > 1 ? xt[1] - xt[0] : 1.0;
  const double ystep = yt.size() > 1 ? yt[1] - yt[0] : 1.0;
  for (double t : xt) {
    absl::StrAppend(&svg, "<line class=\"grid\" x1=\"", Num(px(t)), "\" y1=\"", Num(kTop),
                    "\" x2=\"", Num(px(t)), "\" y2=\"", Num(kTop + ph),
                    "\" stroke=\"#e0e0e0\"/>\n");
    absl::StrAppend(&svg, "<text class=\"xtick\" data-value=\"", t, "\" x=\"", Num(px(t)),
                    "\" y=\"", Num(kTop + ph + 18), "\" font-size=\"12\" text-anchor=\"middle\">",
                    FormatTick(t, xstep), "</text>\n");
  }
  for (double t : yt) {
    absl::StrAppend(&svg, "<line class=\"grid\" x1=\"", Num(kLeft), "\" y1=\"", Num(py(t)),
                    "\" x2=\"", Num(kLeft + pw), "\" y2=\"", Num(py(t)),
                    "\" stroke=\"#e0e0e0\"/>\n");
    absl::StrAppend(&svg, "<text class=\"ytick\" data-value=\"", t, "\" x=\"", Num(kLeft - 8),
                    "\" y=\"", Num(py(t) + 4), "\" font-size=\"12\" text-anchor=\"end\">",
                    FormatTick(t, ystep), "</text>\n");
  }
  // Axes and their labels.
  absl::StrAppend(&svg, "<line class=\"axis\" x1=\"", Num(kLeft), "\" y1=\"", Num(kTop + ph),
                  "\" x2=\"", Num(kLeft + pw), "\" y2=\"", Num(kTop + ph),
                  "\" stroke=\"black\"/>\n");
  absl::StrAppend(&svg, "<line class=\"axis\" x1=\"", Num(kLeft), "\" y1=\"", Num(kTop), "\" x2=\"",
                  Num(kLeft), "\" y2=\"", Num(kTop + ph), "\" stroke=\"black\"/>\n");
  absl::StrAppend(&svg, "<text x=\"", Num(kLeft + pw / 2), "\" y=\"", Num(kHeight - 22),
                  "\" font-size=\"13\" text-anchor=\"middle\">", EscapeXml(plot.x_label),
                  "</text>\n");
  absl::StrAppend(&svg, "<text x=\"22\" y=\"", Num(kTop + ph / 2),
                  "\" font-size=\"13\" text-anchor=\"middle\" transform=\"rotate(-90 22 ",
                  Num(kTop + ph / 2), ")\">", EscapeXml(plot.y_label), "</text>\n");
  // Series: a faint line through the points, the points, their labels; then the legend.
  for (size_t si = 0; si < plot.series.size(); ++si) {
    const PlotSeries& s = plot.series[si];
    const char* color = kColors[si % std::size(kColors)];
    std::string path;
    for (const PlotPoint& p : s.points)
      absl::StrAppend(&path, Num(px(p.x)), ",", Num(py(p.y)), " ");
    if (s.points.size() > 1) {
      absl::StrAppend(&svg, "<polyline points=\"", path, "\" fill=\"none\" stroke=\"", color,
                      "\" stroke-opacity=\"0.5\" stroke-width=\"1.5\"/>\n");
    }
    for (const PlotPoint& p : s.points) {
      absl::StrAppend(&svg, "<circle class=\"point\" data-series=\"", EscapeXml(s.name),
                      "\" data-x=\"", p.x, "\" data-y=\"", p.y, "\" cx=\"", Num(px(p.x)),
                      "\" cy=\"", Num(py(p.y)), "\" r=\"5\" fill=\"", color, "\"><title>",
                      EscapeXml(s.name), " ", EscapeXml(p.label), ": x=", p.x, ", y=", p.y,
                      "</title></circle>\n");
      if (!p.label.empty()) {
        absl::StrAppend(&svg, "<text x=\"", Num(px(p.x) + 7), "\" y=\"", Num(py(p.y) - 7),
                        "\" font-size=\"10\" fill=\"", color, "\">", EscapeXml(p.label),
                        "</text>\n");
      }
    }
    const double ly = kTop + 10 + 22 * static_cast<double>(si);
    const double lx = kWidth - kRight + 20;
    absl::StrAppend(&svg, "<circle class=\"legend\" cx=\"", Num(lx), "\" cy=\"", Num(ly),
                    "\" r=\"5\" fill=\"", color, "\"/>\n");
    absl::StrAppend(&svg, "<text class=\"legend\" x=\"", Num(lx + 12), "\" y=\"", Num(ly + 4),
                    "\" font-size=\"12\">", EscapeXml(s.name), "</text>\n");
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace fluxattn::eval
