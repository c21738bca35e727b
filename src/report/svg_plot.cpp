#include "nibble/report/svg_plot.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <numbers>

#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/report/markdown.hpp"

namespace nibble::report {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr size_t kMaxPoints = 2000;

// Helvetica/Arial where installed; DejaVu Sans (the Linux fallback) is the widest of the
// three, and text_width() measures for it, so layouts never come out too tight.
constexpr const char* kFont = "Helvetica, Arial, 'DejaVu Sans', sans-serif";
constexpr double kTitleFont = 15, kLabelFont = 13, kTickFont = 11, kLegendFont = 12;

constexpr const char* kText = "#222222";
constexpr const char* kTickText = "#444444";
constexpr const char* kGrid = "#e6e6e6";
constexpr const char* kMinorGrid = "#f3f3f3";
constexpr const char* kFrame = "#b0b0b0";

// Okabe & Ito's palette (designed to stay distinct under the common colour-vision
// deficiencies), reordered so that the first two are the most distinct pair, with their
// yellow replaced by grey (yellow lines vanish on white).
constexpr std::array<const char*, 8> kPalette = {"#0072B2", "#D55E00", "#009E73", "#E69F00",
                                                 "#CC79A7", "#56B4E9", "#000000", "#7F7F7F"};

// Coordinates to 0.1 px: finer is invisible and only makes the files bigger.
std::string num(double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  std::string s = buf;
  if (s.size() > 2 && s.compare(s.size() - 2, 2, ".0") == 0) s.resize(s.size() - 2);
  if (s == "-0") s = "0";
  return s;
}

// A 1 px line on a pixel centre, so grid lines and frames render crisp rather than as
// two half-covered grey rows.
double crisp(double p) { return std::floor(p) + 0.5; }

// Estimated advance width of `s` in DejaVu Sans at `font_px` (the font metrics in em units,
// grouped coarsely). Used only for layout: margins, legend boxes, label thinning.
double text_width(const std::string& s, double font_px) {
  double em = 0;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {  // one UTF-8 code point, average width
      i += c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
      em += 0.62;
      continue;
    }
    ++i;
    if (c >= '0' && c <= '9') em += 0.64;
    else if (c == ' ' || c == '.' || c == ',' || c == ':' || c == ';' || c == '\'' || c == '|' ||
             c == '!')
      em += 0.33;
    else if (c == 'i' || c == 'j' || c == 'l' || c == 'f' || c == 't' || c == 'r' || c == '(' ||
             c == ')' || c == '[' || c == ']')
      em += 0.40;
    else if (c == 'm' || c == 'w' || c == 'M' || c == 'W') em += 0.92;
    else if (c >= 'A' && c <= 'Z') em += 0.72;
    else em += 0.60;
  }
  return em * font_px;
}

// Cuts `s` (at a code point boundary) and appends "…" so that it fits in `max_px`.
std::string ellipsize(const std::string& s, double font_px, double max_px) {
  if (text_width(s, font_px) <= max_px) return s;
  std::string t = s;
  while (!t.empty() && text_width(t + "\xE2\x80\xA6", font_px) > max_px) {
    t.pop_back();
    while (!t.empty() && (static_cast<unsigned char>(t.back()) & 0xC0) == 0x80) t.pop_back();
    if (!t.empty() && static_cast<unsigned char>(t.back()) >= 0xC0) t.pop_back();
  }
  return t + "\xE2\x80\xA6";
}

uint64_t fnv1a(const std::string& s, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// An id for the clip path that differs between charts, so that several SVGs inlined into
// one HTML page do not share (and fight over) one id.
std::string unique_id(const std::string& seed) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "nb%012llx",
                static_cast<unsigned long long>(fnv1a(seed) & 0xFFFFFFFFFFFFull));
  return buf;
}

// Smallest number of decimals that writes `step` exactly (to a relative 1e-6), at most 12.
int decimals_for(double step) {
  step = std::fabs(step);
  for (int d = 0; d <= 12; ++d) {
    const double x = step * std::pow(10.0, d);
    if (std::fabs(x - std::round(x)) <= 1e-6 * std::max(1.0, x) || x >= 1000) return d;
  }
  return 12;
}

std::string strip_zeros(std::string s) {
  if (s.find('.') == std::string::npos) return s;
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  if (s == "-0") s = "0";
  return s;
}

std::string fixed(double v, int decimals) {
  char buf[400];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

// m·10^k·i without the drift of repeated addition (0.1 * 3 != 0.3): integer times an exact
// power of ten, divided when k < 0 (10^k itself is inexact).
// (Below 10^-300 the divisor would overflow; there std::pow's own rounding has to do.)
double tick_value(long long i, int m, int k) {
  const double im = static_cast<double>(i) * m;
  if (k >= 0) return im * std::pow(10.0, k);
  return k >= -300 ? im / std::pow(10.0, -k) : im * std::pow(10.0, k);
}

double pow10_exact(int k) { return tick_value(1, 1, k); }

// Does the segment a→b touch the rectangle? (Liang–Barsky clipping.)
bool segment_hits(double ax, double ay, double bx, double by, double x0, double y0, double x1,
                  double y1) {
  double t0 = 0, t1 = 1;
  const double dx = bx - ax, dy = by - ay;
  const double p[4] = {-dx, dx, -dy, dy};
  const double q[4] = {ax - x0, x1 - ax, ay - y0, y1 - ay};
  for (int i = 0; i < 4; ++i) {
    if (p[i] == 0) {
      if (q[i] < 0) return false;
    } else {
      const double r = q[i] / p[i];
      if (p[i] < 0) t0 = std::max(t0, r);
      else t1 = std::min(t1, r);
      if (t0 > t1) return false;
    }
  }
  return true;
}

// One axis: data range, scale, ticks and their labels.
struct Axis {
  double lo = 0, hi = 1;
  bool log = false;
  std::vector<double> ticks, minor;
  std::vector<std::string> labels;

  double unit(double v) const {  // 0 at lo, 1 at hi
    // Halved first (linear): hi - lo overflows for ranges wider than the largest double.
    const double u = log ? (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo))
                         : (v * 0.5 - lo * 0.5) / (hi * 0.5 - lo * 0.5);
    // At the edges of the double range a compiler's libm may still round a span to zero or
    // infinity (seen with g++ 13 at 1e308 on a log axis): never emit NaN coordinates.
    return std::isfinite(u) ? u : 0.5;
  }
  void make_ticks(int target) {
    ticks = log ? log_ticks(lo, hi, target) : nice_ticks(lo, hi, target);
    labels.clear();
    for (size_t i = 0; i < ticks.size(); ++i) {
      const double step = log ? ticks[i] : ticks.size() > 1 ? ticks[1] - ticks[0] : hi - lo;
      labels.push_back(format_tick(ticks[i], step));
    }
    minor.clear();
    // Log axes get unlabelled 2..9 lines per decade while few enough decades are shown for
    // them to read as a scale rather than as texture.
    if (log && std::log10(hi / lo) <= 6.5) {
      for (int k = static_cast<int>(std::floor(std::log10(lo))); pow10_exact(k) <= hi; ++k)
        for (int m = 2; m <= 9; ++m) {
          const double v = m * pow10_exact(k);
          if (v >= lo && v <= hi) minor.push_back(v);
        }
    }
  }
  double max_label_width(double font) const {
    double w = 0;
    for (const auto& l : labels) w = std::max(w, text_width(l, font));
    return w;
  }
};

// The range of `v` widened so that it is never empty: a constant curve still gets an axis.
void widen_degenerate(double& lo, double& hi, bool log) {
  if (log) {
    // Also when lo < hi but their logarithms round to (almost) the same double.
    if (std::log10(hi) - std::log10(lo) > 1e-9) return;
    const double mid = std::sqrt(lo) * std::sqrt(hi);
    lo = std::max(mid / 2, std::numeric_limits<double>::min());
    hi = std::min(mid * 2, std::numeric_limits<double>::max());
    return;
  }
  // A span of subnormal size counts as empty: Axis::unit would divide by (almost) zero.
  if (lo < hi && hi * 0.5 - lo * 0.5 >= 1e-290) return;
  // ±10% around the value; ±1 around zero (and around values so tiny that 10% underflows).
  const double mid = lo * 0.5 + hi * 0.5;
  const double d = std::fabs(mid) >= 1e-290 ? std::fabs(mid) * 0.1 : 1.0;
  lo = std::max(mid - d, std::numeric_limits<double>::lowest());
  hi = std::min(mid + d, std::numeric_limits<double>::max());
}

// Centred moving average over the valid points in each window (invalid points stay NaN and
// do not count). Window sums come from a segment tree rather than prefix sums: a prefix sum
// that has passed a loss spike of 1e30 has lost every digit of the 3.0s after it, while a
// window sum built from tree nodes only ever adds values that lie inside the window. Values
// are pre-divided by the window so that no partial sum overflows. O(n log n).
std::vector<double> moving_average(const std::vector<double>& y, const std::vector<bool>& valid,
                                   int window) {
  const size_t n = y.size(), w = static_cast<size_t>(window);
  std::vector<double> tree(2 * n, 0.0);
  std::vector<size_t> cnt(n + 1, 0);
  for (size_t i = 0; i < n; ++i) {
    tree[n + i] = valid[i] ? y[i] / static_cast<double>(w) : 0.0;
    cnt[i + 1] = cnt[i] + (valid[i] ? 1 : 0);
  }
  for (size_t i = n - 1; i >= 1 && n > 1; --i) tree[i] = tree[2 * i] + tree[2 * i + 1];
  auto window_sum = [&](size_t a, size_t b) {  // sum over [a, b)
    double s = 0;
    for (a += n, b += n; a < b; a >>= 1, b >>= 1) {
      if (a & 1) s += tree[a++];
      if (b & 1) s += tree[--b];
    }
    return s;
  };
  std::vector<double> out(n, kNaN);
  for (size_t i = 0; i < n; ++i) {
    if (!valid[i]) continue;
    const size_t a = i >= w / 2 ? i - w / 2 : 0;
    const size_t b = std::min(n, a + w);
    out[i] = window_sum(a, b) * (static_cast<double>(w) / static_cast<double>(cnt[b] - cnt[a]));
  }
  return out;
}

struct Pt {
  double x, y;
};

// A series ready to draw, in unit coordinates of the plot area (0..1 from left / bottom).
struct Drawn {
  std::string label, color;
  bool dashed = false;
  std::vector<std::vector<Pt>> runs, raw_runs;  // raw_runs: the unsmoothed curve, if smoothed
  std::vector<Pt> markers;
};

class Svg {
 public:
  Svg(double w, double h, const std::string& title) {
    s_ += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
    s_ += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(w) + "\" height=\"" +
          num(h) + "\" viewBox=\"0 0 " + num(w) + " " + num(h) + "\" font-family=\"" + kFont +
          "\" role=\"img\">\n";
    if (!title.empty()) s_ += "<title>" + xml_escape(title) + "</title>\n";
    s_ += "<rect width=\"" + num(w) + "\" height=\"" + num(h) + "\" fill=\"#ffffff\"/>\n";
  }
  void raw(const std::string& t) { s_ += t; }
  // Text at (x, y) (baseline); `extra` holds further attributes.
  void text(double x, double y, const std::string& t, double font, const char* anchor,
            const char* fill, const std::string& extra = "") {
    s_ += "<text x=\"" + num(x) + "\" y=\"" + num(y) + "\" font-size=\"" + num(font) + "\"";
    if (std::string(anchor) != "start") s_ += std::string(" text-anchor=\"") + anchor + "\"";
    s_ += std::string(" fill=\"") + fill + "\"" + extra + ">" + xml_escape(t) + "</text>\n";
  }
  void line(double x1, double y1, double x2, double y2) {
    s_ += "<line x1=\"" + num(x1) + "\" y1=\"" + num(y1) + "\" x2=\"" + num(x2) + "\" y2=\"" +
          num(y2) + "\"/>\n";
  }
  std::string done() { return s_ + "</svg>\n"; }

 private:
  std::string s_;
};

// ---- the sequential colour map ----------------------------------------------------------

// OKLab (Ottosson 2020) to gamma-encoded sRGB; false when outside the sRGB gamut.
bool oklab_to_srgb(double L, double a, double b, double rgb[3]) {
  const double l_ = L + 0.3963377774 * a + 0.2158037573 * b;
  const double m_ = L - 0.1055613458 * a - 0.0638541728 * b;
  const double s_ = L - 0.0894841775 * a - 1.2914855480 * b;
  const double l = l_ * l_ * l_, m = m_ * m_ * m_, s = s_ * s_ * s_;
  const double lin[3] = {4.0767416621 * l - 3.3077115913 * m + 0.2309699292 * s,
                         -1.2684380046 * l + 2.6097574011 * m - 0.3413193965 * s,
                         -0.0041960863 * l - 0.7034186147 * m + 1.7076147010 * s};
  bool inside = true;
  for (int i = 0; i < 3; ++i) {
    if (lin[i] < -1e-6 || lin[i] > 1 + 1e-6) inside = false;
    const double c = std::clamp(lin[i], 0.0, 1.0);
    rgb[i] = c <= 0.0031308 ? 12.92 * c : 1.055 * std::pow(c, 1 / 2.4) - 0.055;
  }
  return inside;
}

std::string hex_color(const double rgb[3]) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x",
                static_cast<int>(std::lround(std::clamp(rgb[0], 0.0, 1.0) * 255)),
                static_cast<int>(std::lround(std::clamp(rgb[1], 0.0, 1.0) * 255)),
                static_cast<int>(std::lround(std::clamp(rgb[2], 0.0, 1.0) * 255)));
  return buf;
}

}  // namespace

// The map is a path through OKLCh: lightness rises linearly (so equal steps in value look like
// equal steps in brightness, and the map survives greyscale printing), hue turns from purple
// through blue and green to yellow, and chroma dips in the blue-green middle where sRGB cannot
// hold more. Colours outside the sRGB gamut keep their lightness and hue and lose chroma.
std::string sequential_color(double t) {
  if (std::isnan(t)) t = 0;
  t = std::clamp(t, 0.0, 1.0);
  const double L = 0.285 + 0.635 * t;
  const double hue = (318.0 - 216.0 * t) * std::numbers::pi / 180.0;
  // Chroma: piecewise linear through a few knots along the path.
  static const double kt[] = {0.0, 0.38, 0.72, 1.0};
  static const double kc[] = {0.135, 0.085, 0.175, 0.185};
  double C = kc[3];
  for (int i = 0; i < 3; ++i)
    if (t <= kt[i + 1]) {
      C = kc[i] + (kc[i + 1] - kc[i]) * (t - kt[i]) / (kt[i + 1] - kt[i]);
      break;
    }
  double rgb[3];
  if (!oklab_to_srgb(L, C * std::cos(hue), C * std::sin(hue), rgb)) {
    double lo = 0, hi = C;  // bisect the largest chroma that fits
    for (int it = 0; it < 30; ++it) {
      const double mid = (lo + hi) / 2;
      if (oklab_to_srgb(L, mid * std::cos(hue), mid * std::sin(hue), rgb)) lo = mid;
      else hi = mid;
    }
    oklab_to_srgb(L, lo * std::cos(hue), lo * std::sin(hue), rgb);
  }
  return hex_color(rgb);
}

std::string xml_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') break;  // not allowed in XML 1.0
        out += ch;
    }
  }
  return out;
}

// ---- ticks ------------------------------------------------------------------------------

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {};
  if (lo > hi) std::swap(lo, hi);
  if (lo == hi) return {lo};
  target = std::max(target, 2);
  const double span = hi - lo;
  // Spans beyond the double range, or so small that their steps would be subnormal, have
  // no round numbers to offer.
  if (!std::isfinite(span) || !(span / target >= 1e-290)) return {};
  const int k0 = static_cast<int>(std::floor(std::log10(span / target)));
  int best_m = 1, best_k = k0;
  long long best_first = 0, best_last = -1;
  double best_score = std::numeric_limits<double>::infinity();
  // Steps in increasing order; "<=" lets the larger step win a tie (fewer, rounder labels).
  for (int k = k0 - 1; k <= k0 + 1; ++k)
    for (int m : {1, 2, 5}) {
      const double step = m * pow10_exact(k);
      if (!std::isfinite(step) || step == 0) continue;  // at the ends of the double range
      const double f = std::ceil(lo / step - 1e-9), l = std::floor(hi / step + 1e-9);
      // Too many ticks, or multiples too large for exact integers (a range far narrower than
      // its magnitude, below double resolution).
      if (l - f > 1000 || std::fabs(f) > 1e15 || std::fabs(l) > 1e15) continue;
      const long long first = static_cast<long long>(f), last = static_cast<long long>(l);
      const double count = static_cast<double>(last - first + 1);
      // Too few ticks is worse than too many (a 2-tick axis is hard to read values off).
      const double score = (count < target ? 1.5 * (target - count) : count - target) +
                           (count < 2 ? 100 : 0);
      if (score <= best_score) {
        best_score = score;
        best_m = m;
        best_k = k;
        best_first = first;
        best_last = last;
      }
    }
  if (best_score == std::numeric_limits<double>::infinity()) return {lo};
  std::vector<double> out;
  for (long long i = best_first; i <= best_last; ++i) out.push_back(tick_value(i, best_m, best_k));
  return out;
}

std::vector<double> log_ticks(double lo, double hi, int target) {
  if (!(lo > 0) || !std::isfinite(lo) || !std::isfinite(hi)) return {};
  if (lo > hi) std::swap(lo, hi);
  if (lo == hi) return {lo};
  target = std::max(target, 2);
  const int klo = static_cast<int>(std::ceil(std::log10(lo) - 1e-9));
  const int khi = static_cast<int>(std::floor(std::log10(hi) + 1e-9));
  std::vector<double> out;
  if (khi - klo + 1 >= 2) {
    const int n = khi - klo + 1;
    const int every = (n + target - 1) / target;
    // Multiples of `every` (1, 100, 10k, ... rather than 10, 1k, 100k) when that still gives
    // two ticks.
    int start = static_cast<int>(std::ceil(static_cast<double>(klo) / every)) * every;
    if (start + every > khi) start = klo;
    for (int k = start; k <= khi; k += every) out.push_back(pow10_exact(k));
    return out;
  }
  for (int k = klo - 1; k <= khi + 1; ++k)
    for (int m : {1, 2, 5}) {
      const double v = m * pow10_exact(k);
      if (std::isfinite(v) && v / lo >= 1 - 1e-9 && v / hi <= 1 + 1e-9) out.push_back(v);
    }
  if (out.size() >= 3) return out;
  return nice_ticks(lo, hi, target);
}

std::string format_tick(double v, double step) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  step = std::fabs(step);
  if (!(step > 0) || !std::isfinite(step)) step = v != 0 ? std::fabs(v) : 1.0;
  if (std::fabs(v) < step * 1e-9) return "0";
  const double a = std::fabs(v);
  if (step < 1e-3 || a >= 1e15) {
    int e = static_cast<int>(std::floor(std::log10(a) + 1e-9));
    const int d = std::min(6, decimals_for(step / pow10_exact(e)));
    std::string m = strip_zeros(fixed(v / pow10_exact(e), d));
    if (m == "10" || m == "-10") {  // rounding carried into the next power of ten
      m = v < 0 ? "-1" : "1";
      ++e;
    }
    return m + "e" + std::to_string(e);
  }
  if (a >= 1000 * (1 - 1e-12)) {
    static const char* const kSuffix[] = {"", "k", "M", "G", "T"};
    const int unit = std::min(4, static_cast<int>(std::floor(std::log10(a) / 3 + 1e-9)));
    const double u = std::pow(1000.0, unit);
    return strip_zeros(fixed(v / u, std::min(6, decimals_for(step / u)))) + kSuffix[unit];
  }
  return strip_zeros(fixed(v, decimals_for(step)));
}

std::vector<size_t> downsample_minmax(const std::vector<double>& y, size_t max_points) {
  const size_t n = y.size();
  std::vector<size_t> keep;
  if (n <= std::max<size_t>(max_points, 4)) {
    for (size_t i = 0; i < n; ++i) keep.push_back(i);
    return keep;
  }
  max_points = std::max<size_t>(max_points, 4);
  const size_t buckets = (max_points - 2) / 2;
  const size_t interior = n - 2;
  keep.reserve(max_points);
  keep.push_back(0);
  for (size_t b = 0; b < buckets; ++b) {
    const size_t s = 1 + b * interior / buckets, e = 1 + (b + 1) * interior / buckets;
    if (s >= e) continue;
    size_t lo = s, hi = s;
    for (size_t i = s + 1; i < e; ++i) {
      if (y[i] < y[lo]) lo = i;
      if (y[i] > y[hi]) hi = i;
    }
    keep.push_back(std::min(lo, hi));
    if (lo != hi) keep.push_back(std::max(lo, hi));
  }
  keep.push_back(n - 1);
  return keep;
}

// ---- line plots -------------------------------------------------------------------------

std::string line_plot_svg(const std::vector<Series>& series, const PlotOptions& opt) {
  const std::string what = opt.title.empty() ? "line plot" : "line plot '" + opt.title + "'";
  if (opt.width < 200 || opt.height < 150)
    fail(what, ": canvas ", opt.width, "x", opt.height, " is too small (at least 200x150)");
  if (opt.smooth < 0) fail(what, ": smooth must be >= 0, got ", opt.smooth);
  if (opt.y_min && opt.y_max && !(*opt.y_min < *opt.y_max))
    fail(what, ": y_min (", *opt.y_min, ") must be below y_max (", *opt.y_max, ")");
  if (opt.log_y && ((opt.y_min && !(*opt.y_min > 0)) || (opt.y_max && !(*opt.y_max > 0))))
    fail(what, ": a log y axis needs a positive y range, got y_min ",
         opt.y_min ? fmt_sig(*opt.y_min, 6) : "unset", ", y_max ",
         opt.y_max ? fmt_sig(*opt.y_max, 6) : "unset");
  for (const auto& s : series)
    if (s.x.size() != s.y.size())
      fail(what, ": series '", s.label, "' has ", s.x.size(), " x values but ", s.y.size(),
           " y values");

  const double W = opt.width, H = opt.height;
  // Log axes also skip subnormals: their logarithms lose all precision.
  constexpr double kTiny = std::numeric_limits<double>::min();
  auto ok_x = [&](double v) { return std::isfinite(v) && (!opt.log_x || v >= kTiny); };
  auto ok_y = [&](double v) { return std::isfinite(v) && (!opt.log_y || v >= kTiny); };

  // Data ranges over the drawable points (raw values, so a smoothed curve's spikes stay in view).
  double xlo = std::numeric_limits<double>::infinity(), xhi = -xlo, ylo = xlo, yhi = -xlo;
  size_t drawable = 0;
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size(); ++i)
      if (ok_x(s.x[i]) && ok_y(s.y[i]) && (!opt.y_min || s.y[i] >= *opt.y_min) &&
          (!opt.y_max || s.y[i] <= *opt.y_max)) {
        xlo = std::min(xlo, s.x[i]);
        xhi = std::max(xhi, s.x[i]);
        ylo = std::min(ylo, s.y[i]);
        yhi = std::max(yhi, s.y[i]);
        ++drawable;
      }
  // Points outside a fixed y range still set the x range (they are clipped, not dropped).
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size(); ++i)
      if (ok_x(s.x[i]) && ok_y(s.y[i])) {
        xlo = std::min(xlo, s.x[i]);
        xhi = std::max(xhi, s.x[i]);
      }
  const bool no_data = drawable == 0 && !(xlo <= xhi);

  Axis ax, ay;
  ax.log = opt.log_x;
  ay.log = opt.log_y;
  if (no_data) {
    ax.lo = opt.log_x ? 1 : 0;
    ax.hi = opt.log_x ? 10 : 1;
    ay.lo = opt.y_min ? *opt.y_min : (opt.log_y ? 1 : 0);
    ay.hi = opt.y_max ? *opt.y_max : (opt.log_y ? 10 : 1);
  } else {
    ax.lo = xlo;
    ax.hi = xhi;
    widen_degenerate(ax.lo, ax.hi, ax.log);
    if (drawable == 0) {  // every point lies outside the fixed y range
      ylo = opt.y_min ? *opt.y_min : ay.log ? *opt.y_max / 10 : *opt.y_max - 1;
      yhi = opt.y_max ? *opt.y_max : ay.log ? *opt.y_min * 10 : *opt.y_min + 1;
    }
    widen_degenerate(ylo, yhi, ay.log);
    // 5% headroom so that extremes do not sit on the frame; none on a fixed side.
    if (ay.log) {
      const double pad = std::pow(10.0, 0.05 * (std::log10(yhi) - std::log10(ylo)));
      ay.lo = opt.y_min ? *opt.y_min : std::max(ylo / pad, std::numeric_limits<double>::min());
      ay.hi = opt.y_max ? *opt.y_max : std::min(yhi * pad, std::numeric_limits<double>::max());
    } else {
      const double pad = 0.05 * yhi - 0.05 * ylo;  // no overflow on huge ranges
      ay.lo = opt.y_min ? *opt.y_min : std::max(ylo - pad, std::numeric_limits<double>::lowest());
      ay.hi = opt.y_max ? *opt.y_max : std::min(yhi + pad, std::numeric_limits<double>::max());
    }
    widen_degenerate(ay.lo, ay.hi, ay.log);
  }

  // ---- series in unit coordinates (0..1 across the plot area), independent of the layout ----
  std::vector<Drawn> drawn;
  size_t auto_color = 0;
  for (const auto& s : series) {
    Drawn d;
    d.label = s.label;
    d.dashed = s.dashed;
    if (s.color.empty()) {
      d.color = kPalette[auto_color % kPalette.size()];
      // Past the palette, repeat colours dashed so that series stay distinguishable.
      if (auto_color >= kPalette.size()) d.dashed = !d.dashed;
      ++auto_color;
    } else {
      d.color = s.color;
    }
    const size_t n = s.x.size();
    std::vector<bool> valid(n);
    size_t total = 0;
    for (size_t i = 0; i < n; ++i) total += (valid[i] = ok_x(s.x[i]) && ok_y(s.y[i]));
    const bool smoothed = opt.smooth > 1;
    const std::vector<double> shown = smoothed ? moving_average(s.y, valid, opt.smooth) : s.y;
    // Far-off points (outside a fixed y range) are clamped at ±10^4 plot sizes: still far
    // outside the clip, but in the range that every renderer handles exactly.
    auto unit = [](const Axis& a, double v) { return std::clamp(a.unit(v), -1e4, 1e4); };
    auto emit = [&](const std::vector<double>& ys, std::vector<std::vector<Pt>>& runs,
                    std::vector<Pt>* markers) {
      for (size_t i = 0; i < n;) {
        if (!valid[i]) {
          ++i;
          continue;
        }
        size_t j = i;
        while (j < n && valid[j]) ++j;
        const size_t len = j - i;
        if (len == 1) {
          if (markers) markers->push_back({unit(ax, s.x[i]), unit(ay, ys[i])});
        } else {
          const std::vector<double> seg(ys.begin() + static_cast<std::ptrdiff_t>(i),
                                        ys.begin() + static_cast<std::ptrdiff_t>(j));
          // Runs share the series' point budget in proportion to their length.
          const size_t budget = std::max<size_t>(4, kMaxPoints * len / total);
          std::vector<Pt> run;
          for (size_t k : downsample_minmax(seg, budget))
            run.push_back({unit(ax, s.x[i + k]), unit(ay, ys[i + k])});
          runs.push_back(std::move(run));
        }
        i = j;
      }
    };
    emit(shown, d.runs, &d.markers);
    if (smoothed) emit(s.y, d.raw_runs, nullptr);
    drawn.push_back(std::move(d));
  }

  // ---- legend size ----
  std::vector<const Drawn*> entries;
  std::vector<std::string> entry_labels;
  const double row_h = 18, lpad = 8, sample = 24;
  double bw = 0, bh = 0;
  if (opt.legend && !no_data && drawable > 0) {
    double label_w = 0;
    for (const auto& d : drawn) {
      if (d.label.empty()) continue;
      entries.push_back(&d);
      entry_labels.push_back(ellipsize(d.label, kLegendFont, W * 0.4));
      label_w = std::max(label_w, text_width(entry_labels.back(), kLegendFont));
    }
    bw = lpad + sample + 6 + label_w + lpad;
    bh = lpad * 2 + row_h * static_cast<double>(entries.size()) - 6;
  }

  // ---- layout: margins follow from the labels they must hold ----
  const double top = opt.title.empty() ? 16 : 42;
  const double tick_len = 4;
  const double x_tick_baseline = tick_len + 4 + kTickFont * 0.8;  // below the plot area
  const double bottom = x_tick_baseline + (opt.x_label.empty() ? 10 : 12 + kLabelFont + 8);
  const double plot_h = H - top - bottom;
  if (plot_h < 60) fail(what, ": height ", opt.height, " leaves no room for the plot");
  ay.make_ticks(std::clamp(static_cast<int>(std::lround(plot_h / 55)), 3, 8));
  if (no_data) ay.ticks.clear(), ay.labels.clear(), ay.minor.clear();
  const double y_label_room = opt.y_label.empty() ? 0 : kLabelFont + 10;
  const double left = std::max(40.0, 12 + y_label_room + ay.max_label_width(kTickFont) + 8);
  double plot_w = 0;
  // Fits the x axis into the width left over by `reserved` (room right of the plot).
  auto layout_x = [&](double reserved) {
    double right = 18 + reserved;
    for (int pass = 0; pass < 2; ++pass) {
      plot_w = W - left - right;
      if (plot_w < 80) fail(what, ": width ", opt.width, " leaves no room for the plot");
      // As many x ticks as fit with a gap of at least 16 px between neighbouring labels.
      for (int target = std::clamp(static_cast<int>(plot_w / 100), 3, 10); target >= 2; --target) {
        ax.make_ticks(target);
        double min_gap = std::numeric_limits<double>::infinity();
        for (size_t i = 1; i < ax.ticks.size(); ++i) {
          const double d = (ax.unit(ax.ticks[i]) - ax.unit(ax.ticks[i - 1])) * plot_w;
          const double need = (text_width(ax.labels[i], kTickFont) +
                               text_width(ax.labels[i - 1], kTickFont)) / 2 + 16;
          min_gap = std::min(min_gap, d - need);
        }
        if (min_gap >= 0) break;
      }
      if (no_data) ax.ticks.clear(), ax.labels.clear(), ax.minor.clear();
      // The last label may stick out past the plot's right edge: make room for it.
      if (ax.ticks.empty()) break;
      const double overhang = left + ax.unit(ax.ticks.back()) * plot_w +
                              text_width(ax.labels.back(), kTickFont) / 2 + 6 - (W - reserved);
      if (overhang <= 0) break;
      right += overhang;
    }
  };
  layout_x(0);
  const double px0 = left, py0 = top, py1 = top + plot_h;
  auto fx = [&](double u) { return px0 + u * plot_w; };
  auto fy = [&](double u) { return py1 - u * plot_h; };

  // ---- legend place: the spot in the plot area that the data crosses least; outside, to the
  // right, when every spot would hide data and the canvas can spare the width ----
  double lx = 0, ly = 0;
  if (!entries.empty()) {
    const double inset = 8;
    // Candidates in order of preference: corners, then edge middles, then the centre.
    const double l = px0 + inset, r = px0 + plot_w - inset - bw, c = px0 + (plot_w - bw) / 2;
    const double t = py0 + inset, b = py1 - inset - bh, m = py0 + (plot_h - bh) / 2;
    const std::array<Pt, 9> cs = {Pt{r, t}, Pt{l, t}, Pt{r, b}, Pt{l, b}, Pt{c, t},
                                  Pt{c, b}, Pt{r, m}, Pt{l, m}, Pt{c, m}};
    size_t best = 0, best_hits = std::numeric_limits<size_t>::max();
    for (size_t c = 0; c < cs.size(); ++c) {
      // The box plus a margin: a line grazing the legend's edge reads as hidden by it too.
      const double x0 = cs[c].x - 4, y0 = cs[c].y - 4, x1 = x0 + bw + 8, y1 = y0 + bh + 8;
      size_t hits = 0;
      for (const auto& d : drawn) {
        for (const auto* runs : {&d.runs, &d.raw_runs})
          for (const auto& run : *runs)
            for (size_t i = 1; i < run.size(); ++i)
              hits += segment_hits(fx(run[i - 1].x), fy(run[i - 1].y), fx(run[i].x),
                                   fy(run[i].y), x0, y0, x1, y1);
        for (const auto& p : d.markers) {
          const double x = fx(p.x), y = fy(p.y);
          hits += x >= x0 && x <= x1 && y >= y0 && y <= y1;
        }
      }
      if (hits < best_hits) {
        best_hits = hits;
        best = c;
      }
    }
    const bool outside = best_hits > 0 && bh <= plot_h && W - left - bw - 30 >= 0.55 * W;
    if (outside) {
      layout_x(bw + 12);
      lx = px0 + plot_w + 12;
      ly = py0;
    } else {
      lx = cs[best].x;
      ly = cs[best].y;
    }
  }
  const double px1 = px0 + plot_w;
  auto cx = [&](double u) { return std::clamp(fx(u), -1e6, 1e6); };
  auto cy = [&](double u) { return std::clamp(fy(u), -1e6, 1e6); };
  auto gx = [&](double v) { return cx(ax.unit(v)); };  // data value → pixel
  auto gy = [&](double v) { return cy(ay.unit(v)); };
  auto points_attr = [&](const std::vector<Pt>& run) {
    std::string s;
    s.reserve(run.size() * 12);
    for (size_t i = 0; i < run.size(); ++i) {
      if (i) s += ' ';
      s += num(cx(run[i].x)) + "," + num(cy(run[i].y));
    }
    return s;
  };

  // ---- draw ----
  Svg svg(W, H, opt.title);
  const std::string clip = unique_id(opt.title + "|" + opt.x_label + "|" + opt.y_label + "|" +
                                     std::to_string(series.size()) + "|" +
                                     std::to_string(drawable));
  svg.raw("<defs><clipPath id=\"" + clip + "\"><rect x=\"" + num(px0) + "\" y=\"" + num(py0) +
          "\" width=\"" + num(plot_w) + "\" height=\"" + num(plot_h) +
          "\"/></clipPath><clipPath id=\"" + clip + "m\"><rect x=\"" + num(px0 - 5) + "\" y=\"" +
          num(py0 - 5) + "\" width=\"" + num(plot_w + 10) + "\" height=\"" + num(plot_h + 10) +
          "\"/></clipPath></defs>\n");
  svg.raw("<rect class=\"plot-area\" x=\"" + num(px0) + "\" y=\"" + num(py0) + "\" width=\"" +
          num(plot_w) + "\" height=\"" + num(plot_h) + "\" fill=\"#ffffff\"/>\n");
  if (!opt.title.empty())
    svg.text(px0 + plot_w / 2, 27, ellipsize(opt.title, kTitleFont, W - 20), kTitleFont,
             "middle", kText, " font-weight=\"600\"");

  // Grid: minor, then major lines, under the data.
  svg.raw(std::string("<g class=\"grid\" stroke=\"") + kMinorGrid +
          "\" stroke-width=\"1\" shape-rendering=\"crispEdges\">\n");
  for (double v : ax.minor) svg.line(crisp(gx(v)), py0, crisp(gx(v)), py1);
  for (double v : ay.minor) svg.line(px0, crisp(gy(v)), px1, crisp(gy(v)));
  svg.raw(std::string("</g>\n<g class=\"grid\" stroke=\"") + kGrid +
          "\" stroke-width=\"1\" shape-rendering=\"crispEdges\">\n");
  for (double v : ax.ticks) svg.line(crisp(gx(v)), py0, crisp(gx(v)), py1);
  for (double v : ay.ticks) svg.line(px0, crisp(gy(v)), px1, crisp(gy(v)));
  svg.raw("</g>\n");

  // Data: raw (faint) curves first, then the lines, then lone points as markers.
  svg.raw("<g clip-path=\"url(#" + clip + ")\" fill=\"none\" stroke-linejoin=\"round\" " +
          "stroke-linecap=\"round\">\n");
  for (const auto& d : drawn) {
    if (d.raw_runs.empty()) continue;
    svg.raw("<g class=\"series-raw\" stroke=\"" + xml_escape(d.color) +
            "\" stroke-width=\"1\" stroke-opacity=\"0.25\">\n");
    for (const auto& run : d.raw_runs) svg.raw("<polyline points=\"" + points_attr(run) + "\"/>\n");
    svg.raw("</g>\n");
  }
  for (const auto& d : drawn) {
    svg.raw("<g class=\"series\" data-label=\"" + xml_escape(d.label) + "\" stroke=\"" +
            xml_escape(d.color) + "\" stroke-width=\"1.8\"" +
            (d.dashed ? " stroke-dasharray=\"6 4\"" : "") + ">\n");
    for (const auto& run : d.runs) svg.raw("<polyline points=\"" + points_attr(run) + "\"/>\n");
    svg.raw("</g>\n");
  }
  svg.raw("</g>\n<g clip-path=\"url(#" + clip + "m)\">\n");
  for (const auto& d : drawn)
    for (const auto& p : d.markers)
      svg.raw("<circle class=\"marker\" cx=\"" + num(cx(p.x)) + "\" cy=\"" + num(cy(p.y)) +
              "\" r=\"3.2\" fill=\"" + xml_escape(d.color) + "\"/>\n");
  svg.raw("</g>\n");

  // Frame and ticks on top of the data.
  svg.raw(std::string("<rect x=\"") + num(crisp(px0)) + "\" y=\"" + num(crisp(py0)) +
          "\" width=\"" + num(std::round(plot_w)) + "\" height=\"" + num(std::round(plot_h)) +
          "\" fill=\"none\" stroke=\"" + kFrame + "\" shape-rendering=\"crispEdges\"/>\n");
  svg.raw(std::string("<g class=\"ticks\" stroke=\"") + kFrame +
          "\" shape-rendering=\"crispEdges\">\n");
  for (double v : ax.ticks) svg.line(crisp(gx(v)), crisp(py1), crisp(gx(v)), crisp(py1) + tick_len);
  for (double v : ay.ticks) svg.line(crisp(px0) - tick_len, crisp(gy(v)), crisp(px0), crisp(gy(v)));
  svg.raw("</g>\n<g class=\"x-tick-labels\">\n");
  for (size_t i = 0; i < ax.ticks.size(); ++i)
    svg.text(gx(ax.ticks[i]), py1 + x_tick_baseline, ax.labels[i], kTickFont, "middle", kTickText);
  svg.raw("</g>\n<g class=\"y-tick-labels\">\n");
  for (size_t i = 0; i < ay.ticks.size(); ++i)
    svg.text(px0 - tick_len - 4, gy(ay.ticks[i]) + kTickFont * 0.35, ay.labels[i], kTickFont,
             "end", kTickText);
  svg.raw("</g>\n");
  if (!opt.x_label.empty())
    svg.text(px0 + plot_w / 2, py1 + x_tick_baseline + 12 + kLabelFont * 0.8,
             ellipsize(opt.x_label, kLabelFont, plot_w), kLabelFont, "middle", kText);
  if (!opt.y_label.empty()) {
    const double x = 12 + kLabelFont * 0.8, y = py0 + plot_h / 2;
    svg.text(0, 0, ellipsize(opt.y_label, kLabelFont, plot_h), kLabelFont, "middle", kText,
             " transform=\"translate(" + num(x) + " " + num(y) + ") rotate(-90)\"");
  }

  if (no_data || drawable == 0) {
    svg.text(px0 + plot_w / 2, py0 + plot_h / 2 + 5, "no data", 14, "middle", "#888888",
             " class=\"no-data\"");
    return svg.done();
  }

  if (!entries.empty()) {
    svg.raw("<g class=\"legend\">\n<rect x=\"" + num(lx) + "\" y=\"" + num(ly) + "\" width=\"" +
            num(bw) + "\" height=\"" + num(bh) +
            "\" rx=\"3\" fill=\"#ffffff\" fill-opacity=\"0.92\" stroke=\"#cccccc\"/>\n");
    for (size_t i = 0; i < entries.size(); ++i) {
      const double ey = ly + lpad + row_h * static_cast<double>(i) + 6;
      const Drawn& e = *entries[i];
      if (e.runs.empty() && !e.markers.empty()) {  // points only
        svg.raw("<circle cx=\"" + num(lx + lpad + sample / 2) + "\" cy=\"" + num(ey) +
                "\" r=\"3.2\" fill=\"" + xml_escape(e.color) + "\"/>\n");
      } else {
        svg.raw("<line x1=\"" + num(lx + lpad) + "\" y1=\"" + num(ey) + "\" x2=\"" +
                num(lx + lpad + sample) + "\" y2=\"" + num(ey) + "\" stroke=\"" +
                xml_escape(e.color) + "\" stroke-width=\"2.2\"" +
                (e.dashed ? " stroke-dasharray=\"6 4\"" : "") + "/>\n");
      }
      svg.text(lx + lpad + sample + 6, ey + kLegendFont * 0.35, entry_labels[i], kLegendFont,
               "start", kText);
    }
    svg.raw("</g>\n");
  }
  return svg.done();
}

void write_line_plot(const std::string& path, const std::vector<Series>& series,
                     const PlotOptions& options) {
  write_file_atomic(path, line_plot_svg(series, options), Durability::RenameOnly);
}

// ---- heatmaps ---------------------------------------------------------------------------

std::string heatmap_svg(const std::vector<std::string>& row_labels,
                        const std::vector<std::string>& col_labels,
                        const std::vector<double>& values, const HeatmapOptions& opt) {
  const std::string what = opt.title.empty() ? "heatmap" : "heatmap '" + opt.title + "'";
  const size_t R = row_labels.size(), C = col_labels.size();
  if (values.size() != R * C)
    fail(what, ": ", values.size(), " values for ", R, " rows x ", C, " columns (expected ",
         R * C, ")");
  if (opt.value_digits < 1 || opt.value_digits > 17)
    fail(what, ": value_digits must be in [1, 17], got ", opt.value_digits);
  if (opt.cell_width < 0 || opt.cell_height < 0)
    fail(what, ": cell size must be >= 0, got ", opt.cell_width, "x", opt.cell_height);
  if (opt.v_min && opt.v_max && !(*opt.v_min < *opt.v_max))
    fail(what, ": v_min (", *opt.v_min, ") must be below v_max (", *opt.v_max, ")");
  if (opt.log_scale && ((opt.v_min && !(*opt.v_min > 0)) || (opt.v_max && !(*opt.v_max > 0))))
    fail(what, ": a log colour scale needs a positive range");

  auto usable = [&](double v) {
    return std::isfinite(v) && (!opt.log_scale || v >= std::numeric_limits<double>::min());
  };
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (double v : values)
    if (usable(v)) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  const bool no_data = R == 0 || C == 0 || !(lo <= hi);
  if (no_data) {
    const double W = 360, H = opt.title.empty() ? 120 : 150, y0 = opt.title.empty() ? 16 : 42;
    Svg svg(W, H, opt.title);
    if (!opt.title.empty())
      svg.text(W / 2, 27, ellipsize(opt.title, kTitleFont, W - 20), kTitleFont, "middle", kText,
               " font-weight=\"600\"");
    svg.raw(std::string("<rect x=\"16.5\" y=\"") + num(y0 + 0.5) + "\" width=\"" + num(W - 33) +
            "\" height=\"" + num(H - y0 - 17) + "\" fill=\"#f5f5f5\" stroke=\"" + kFrame +
            "\"/>\n");
    svg.text(W / 2, (y0 + H - 16) / 2 + 5, "no data", 14, "middle", "#888888",
             " class=\"no-data\"");
    return svg.done();
  }
  if (opt.v_min) lo = *opt.v_min;
  if (opt.v_max) hi = *opt.v_max;
  widen_degenerate(lo, hi, opt.log_scale);
  Axis scale;
  scale.lo = lo;
  scale.hi = hi;
  scale.log = opt.log_scale;

  // Cell text: every cell's value at one font size, or none (a grid where some cells have text
  // and others not reads as missing data).
  const double cw = opt.cell_width ? opt.cell_width
                                   : std::clamp(std::floor(760.0 / static_cast<double>(C)), 16.0, 72.0);
  const double ch = opt.cell_height ? opt.cell_height
                                    : std::clamp(std::floor(520.0 / static_cast<double>(R)), 12.0, 28.0);
  std::vector<std::string> cell_text(values.size());
  const double value_font = std::min(11.0, ch - 5);
  bool show_values = opt.show_values && value_font >= 8;  // smaller is unreadable
  for (size_t i = 0; i < values.size() && show_values; ++i) {
    if (!std::isfinite(values[i])) continue;
    const double a = std::fabs(values[i]);
    cell_text[i] = a >= 1e4 ? fmt_si(values[i], opt.value_digits) : fmt_sig(values[i], opt.value_digits);
    if (text_width(cell_text[i], value_font) > cw - 4) show_values = false;
  }

  // Labels: thinned to every k-th when the cells are smaller than the text.
  const double label_font = std::clamp(ch - 2, 8.0, 11.0);
  double row_w = 0, col_w = 0;
  for (const auto& l : row_labels) row_w = std::max(row_w, text_width(l, label_font));
  for (const auto& l : col_labels) col_w = std::max(col_w, text_width(l, label_font));
  const size_t row_every = static_cast<size_t>(std::ceil((label_font + 2) / ch));
  const bool rotate_cols = col_w > cw - 6;
  const size_t col_every =
      rotate_cols ? static_cast<size_t>(std::ceil((label_font + 3) / (cw * 0.7071)))
                  : 1;
  const double grid_w = cw * static_cast<double>(C), grid_h = ch * static_cast<double>(R);
  const double y_label_room = opt.y_label.empty() ? 0 : kLabelFont + 10;
  // Rotated column labels (at -45°) reach left and down by width·cos45°.
  const double col_reach = rotate_cols ? (col_w + label_font) * 0.7071 : label_font;
  double left = 12 + y_label_room + row_w + 6;
  if (rotate_cols) left = std::max(left, 12 + col_reach - cw / 2);
  const double top = opt.title.empty() ? 14 : 42;
  const double gx0 = left, gy0 = top, gx1 = gx0 + grid_w, gy1 = gy0 + grid_h;
  const double bar_h = std::max(grid_h, 140.0), bar_w = 14, bar_x = gx1 + 18;
  scale.make_ticks(std::clamp(static_cast<int>(bar_h / 32), 3, 10));
  const double bar_label_w = scale.max_label_width(kTickFont);
  const double cb_label_room = opt.colorbar_label.empty() ? 0 : 10 + kLabelFont;
  const double W = std::ceil(bar_x + bar_w + 4 + 4 + bar_label_w + cb_label_room + 14);
  const double bottom_labels = 8 + col_reach + (opt.x_label.empty() ? 0 : 12 + kLabelFont);
  const double H = std::ceil(std::max(gy1 + bottom_labels, gy0 + bar_h + kTickFont) + 12);

  Svg svg(W, H, opt.title);
  if (!opt.title.empty())
  {
    // Centred over the grid, shifted only as far as needed to stay on the canvas.
    const std::string t = ellipsize(opt.title, kTitleFont, W - 20);
    const double half = text_width(t, kTitleFont) / 2;
    const double x = std::clamp(gx0 + grid_w / 2, std::min(W / 2, 10 + half), std::max(W / 2, W - 10 - half));
    svg.text(x, 27, t, kTitleFont, "middle", kText, " font-weight=\"600\"");
  }

  // Cells, 1 px white gaps between them.
  svg.raw("<g class=\"cells\" stroke=\"#ffffff\" stroke-width=\"1\">\n");
  for (size_t r = 0; r < R; ++r)
    for (size_t c = 0; c < C; ++c) {
      const double v = values[r * C + c];
      const std::string fill = usable(v) ? sequential_color(scale.unit(v)) : "#e3e3e3";
      svg.raw("<rect x=\"" + num(gx0 + cw * static_cast<double>(c)) + "\" y=\"" +
              num(gy0 + ch * static_cast<double>(r)) + "\" width=\"" + num(cw) + "\" height=\"" +
              num(ch) + "\" fill=\"" + fill + "\"><title>" +
              xml_escape(row_labels[r] + " / " + col_labels[c] + ": " +
                         (std::isfinite(v) ? fmt_sig(v, 6) : std::string("missing"))) +
              "</title></rect>\n");
    }
  svg.raw("</g>\n");
  if (show_values) {
    svg.raw("<g class=\"values\" text-anchor=\"middle\" font-size=\"" + num(value_font) + "\">\n");
    for (size_t r = 0; r < R; ++r)
      for (size_t c = 0; c < C; ++c) {
        const size_t i = r * C + c;
        if (cell_text[i].empty()) continue;
        // Dark text on the light half of the map, white on the dark half.
        const bool light = usable(values[i]) && std::clamp(scale.unit(values[i]), 0.0, 1.0) > 0.45;
        svg.raw("<text x=\"" + num(gx0 + cw * (static_cast<double>(c) + 0.5)) + "\" y=\"" +
                num(gy0 + ch * (static_cast<double>(r) + 0.5) + value_font * 0.35) +
                "\" fill=\"" + (light || !usable(values[i]) ? "#111111" : "#ffffff") + "\">" +
                xml_escape(cell_text[i]) + "</text>\n");
      }
    svg.raw("</g>\n");
  }

  // Row labels (left) and column labels (below).
  svg.raw("<g class=\"row-labels\">\n");
  for (size_t r = 0; r < R; r += row_every)
    svg.text(gx0 - 6, gy0 + ch * (static_cast<double>(r) + 0.5) + label_font * 0.35,
             row_labels[r], label_font, "end", kTickText);
  svg.raw("</g>\n<g class=\"col-labels\">\n");
  for (size_t c = 0; c < C; c += col_every) {
    const double x = gx0 + cw * (static_cast<double>(c) + 0.5);
    if (rotate_cols) {
      const double y = gy1 + 6;
      svg.text(x, y, col_labels[c], label_font, "end", kTickText,
               " transform=\"rotate(-45 " + num(x) + " " + num(y) + ")\" dy=\"" +
                   num(label_font * 0.6) + "\"");
    } else {
      svg.text(x, gy1 + 6 + label_font * 0.8, col_labels[c], label_font, "middle", kTickText);
    }
  }
  svg.raw("</g>\n");
  if (!opt.x_label.empty())
    svg.text(gx0 + grid_w / 2, gy1 + 8 + col_reach + 10 + kLabelFont * 0.8,
             ellipsize(opt.x_label, kLabelFont, std::max(grid_w, 120.0)), kLabelFont, "middle",
             kText);
  if (!opt.y_label.empty()) {
    const double x = 12 + kLabelFont * 0.8, y = gy0 + grid_h / 2;
    svg.text(0, 0, opt.y_label, kLabelFont, "middle", kText,
             " transform=\"translate(" + num(x) + " " + num(y) + ") rotate(-90)\"");
  }

  // Colour bar: a gradient sampled from the map (17 stops are indistinguishable from the
  // continuous map), ticks at nice values of the scale.
  const std::string grad = unique_id("heat|" + opt.title + "|" + std::to_string(R * C)) + "g";
  svg.raw("<defs><linearGradient id=\"" + grad +
          "\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">\n");
  for (int i = 0; i <= 16; ++i)
    svg.raw("<stop offset=\"" + num(i * 100.0 / 16) + "%\" stop-color=\"" +
            sequential_color(i / 16.0) + "\"/>\n");
  svg.raw("</linearGradient></defs>\n");
  svg.raw("<g class=\"colorbar\">\n<rect x=\"" + num(bar_x) + "\" y=\"" + num(gy0) +
          "\" width=\"" + num(bar_w) + "\" height=\"" + num(bar_h) + "\" fill=\"url(#" + grad +
          ")\" stroke=\"" + kFrame + "\" stroke-width=\"0.8\"/>\n");
  for (size_t i = 0; i < scale.ticks.size(); ++i) {
    const double y = gy0 + bar_h * (1 - scale.unit(scale.ticks[i]));
    svg.raw(std::string("<line x1=\"") + num(bar_x + bar_w) + "\" y1=\"" + num(y) + "\" x2=\"" +
            num(bar_x + bar_w + 4) + "\" y2=\"" + num(y) + "\" stroke=\"" + kFrame + "\"/>\n");
    svg.text(bar_x + bar_w + 7, y + kTickFont * 0.35, scale.labels[i], kTickFont, "start",
             kTickText);
  }
  svg.raw("</g>\n");
  if (!opt.colorbar_label.empty()) {
    const double x = bar_x + bar_w + 8 + bar_label_w + 8 + kLabelFont * 0.8,
                 y = gy0 + bar_h / 2;
    svg.text(0, 0, opt.colorbar_label, kLabelFont, "middle", kText,
             " transform=\"translate(" + num(x) + " " + num(y) + ") rotate(-90)\"");
  }
  return svg.done();
}

void write_heatmap(const std::string& path, const std::vector<std::string>& row_labels,
                   const std::vector<std::string>& col_labels, const std::vector<double>& values,
                   const HeatmapOptions& options) {
  write_file_atomic(path, heatmap_svg(row_labels, col_labels, values, options),
                    Durability::RenameOnly);
}

}  // namespace nibble::report
