#pragma once
// Self-contained SVG charts for training runs and studies: line plots (loss curves, sweeps)
// and heatmaps (per-layer statistics). The files need no fonts, scripts or stylesheets
// beyond what every SVG viewer has, open in a browser, and embed in Markdown.
#include <optional>
#include <string>
#include <vector>

namespace nibble::report {

struct Series {
  std::string label;            // legend entry; empty: not listed in the legend
  std::vector<double> x, y;     // same length; NaN/Inf (and <= 0 on a log axis) break the line
  std::string color = "";       // any SVG colour; empty: the next colour of the default palette
  bool dashed = false;
};

struct PlotOptions {
  std::string title, x_label, y_label;
  bool log_x = false, log_y = false;
  int width = 720, height = 440;
  std::optional<double> y_min, y_max;  // fixed y range (points outside are clipped)
  bool legend = true;
  // Centred moving average over this many points, applied to y for display (0 or 1: none).
  // The raw curve stays visible, faint, behind the smoothed one.
  int smooth = 0;
};

// The chart as an SVG document. Layout: the plot area is the <rect class="plot-area">; x and
// y map linearly (or log10) from the data range onto it, y padded by 5% unless fixed. Each
// series is a <g class="series"> with one <polyline> per unbroken run of finite points (one
// point alone is a <circle>); a series' points beyond 2000 are reduced by min/max bucketing
// (downsample_minmax), shared among its runs by length. The legend goes where it hides no
// data: a corner, an edge middle or the centre of the plot area, else outside on the right
// when the canvas has the width. With no drawable point at all the chart says "no data".
// Throws nibble::Error on x/y length mismatches, a non-positive fixed range on a log axis,
// y_min >= y_max or a canvas too small for axes.
std::string line_plot_svg(const std::vector<Series>& series, const PlotOptions& options);

// Writes line_plot_svg(...) atomically (nibble::write_file_atomic).
void write_line_plot(const std::string& path, const std::vector<Series>& series,
                     const PlotOptions& options);

struct HeatmapOptions {
  std::string title, x_label, y_label;
  std::string colorbar_label;
  bool log_scale = false;                 // colours by log10(value); values <= 0 shown as missing
  std::optional<double> v_min, v_max;     // colour range; default: the finite values' range
  bool show_values = true;                // cell text, when it fits in the cell
  int value_digits = 3;                   // significant digits of the cell text
  int cell_width = 0, cell_height = 0;    // pixels; 0: chosen from the number of columns / rows
};

// A grid of coloured cells (rows top to bottom, columns left to right; `values` is row-major,
// rows × cols entries, NaN = missing, drawn grey) with a colour bar. The colour scale is a
// perceptually ordered sequential map (dark purple → blue → green → yellow, lightness rising
// linearly), readable in greyscale and with colour-vision deficiencies.
std::string heatmap_svg(const std::vector<std::string>& row_labels,
                        const std::vector<std::string>& col_labels,
                        const std::vector<double>& values, const HeatmapOptions& options);

void write_heatmap(const std::string& path, const std::vector<std::string>& row_labels,
                   const std::vector<std::string>& col_labels, const std::vector<double>& values,
                   const HeatmapOptions& options);

// ---- building blocks, public for tests and for other report writers ---------------------

// Tick positions within [lo, hi] at a "nice" step (1, 2 or 5 × 10^k), the step chosen so that
// the count is closest to `target`: nice_ticks(0, 1) == {0, 0.2, 0.4, 0.6, 0.8, 1}.
std::vector<double> nice_ticks(double lo, double hi, int target = 6);

// Ticks for a log axis over [lo, hi] (lo > 0): the powers of ten inside when there are at
// least two (every k-th decade when there are more than `target`), else 1-2-5 steps, else
// nice_ticks.
std::vector<double> log_ticks(double lo, double hi, int target = 6);

// A compact label for tick value `v` on an axis whose ticks are `step` apart, with as many
// decimals as the step needs and no more. Magnitudes from 1000 up get an SI suffix (k, M, G,
// T); steps below 0.001 switch to exponent notation:
//   format_tick(0.4, 0.2) == "0.4"   format_tick(1500, 500) == "1.5k"   format_tick(3e6, 1e6) == "3M"
//   format_tick(0.001, 0.001) == "0.001"   format_tick(2e-5, 1e-5) == "2e-5"
std::string format_tick(double v, double step);

// Min/max bucketing of a polyline to at most `max_points` points (>= 4): the first and last
// points are kept and the interior is cut into (max_points - 2) / 2 buckets of consecutive
// indices, each contributing its lowest and highest y in index order. Returns the kept
// indices, ascending; all of them when n <= max_points.
std::vector<size_t> downsample_minmax(const std::vector<double>& y, size_t max_points);

// The sequential colour map at t in [0, 1] (clamped) as "#rrggbb".
std::string sequential_color(double t);

// Escapes & < > " ' for XML text and attributes; drops control characters XML 1.0 forbids.
std::string xml_escape(const std::string& s);

}  // namespace nibble::report
