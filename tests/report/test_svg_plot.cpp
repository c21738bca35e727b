// SVG charts: well-formed XML, one polyline per unbroken run of each series, points mapped
// linearly / logarithmically into the plot area, min/max downsampling, nice ticks and compact
// labels, escaping, NaN/Inf/empty inputs, and the heatmap's cells and colour scale.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/report/svg_plot.hpp"
#include "support/cli_runner.hpp"

using namespace nibble;
using namespace nibble::report;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// ---- a tiny XML reader: checks well-formedness and collects the elements -------------------

struct Element {
  std::string name;
  std::map<std::string, std::string> attrs;  // values with entities decoded
  std::string text;                          // character data directly inside, decoded
  int parent = -1;                           // index into the element list
};

struct Xml {
  std::string error;  // empty when well-formed
  std::vector<Element> elements;
};

bool name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == ':' ||
         c == '.';
}

// Decodes the five predefined entities and numeric references; false on a bare '&'.
bool decode(const std::string& s, std::string& out) {
  out.clear();
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '<') return false;
    if (s[i] != '&') {
      out += s[i];
      continue;
    }
    const size_t semi = s.find(';', i);
    if (semi == std::string::npos) return false;
    const std::string ent = s.substr(i + 1, semi - i - 1);
    if (ent == "amp") out += '&';
    else if (ent == "lt") out += '<';
    else if (ent == "gt") out += '>';
    else if (ent == "quot") out += '"';
    else if (ent == "apos") out += '\'';
    else if (ent.size() > 1 && ent[0] == '#') out += '?';
    else return false;
    i = semi;
  }
  return true;
}

Xml parse_xml(const std::string& s) {
  Xml x;
  std::vector<int> stack;
  size_t i = 0;
  auto err = [&](const std::string& what) {
    x.error = what + " at offset " + std::to_string(i);
    return x;
  };
  if (s.rfind("<?xml", 0) == 0) {
    i = s.find("?>");
    if (i == std::string::npos) return err("unterminated declaration");
    i += 2;
  }
  bool root_seen = false;
  while (i < s.size()) {
    if (s[i] != '<') {
      const size_t lt = s.find('<', i);
      const std::string raw = s.substr(i, lt == std::string::npos ? std::string::npos : lt - i);
      std::string text;
      if (!decode(raw, text)) return err("bad character data");
      if (stack.empty()) {
        if (raw.find_first_not_of(" \t\r\n") != std::string::npos)
          return err("text outside the root element");
      } else {
        x.elements[static_cast<size_t>(stack.back())].text += text;
      }
      if (lt == std::string::npos) break;
      i = lt;
      continue;
    }
    if (s.compare(i, 4, "<!--") == 0) {
      const size_t end = s.find("-->", i);
      if (end == std::string::npos) return err("unterminated comment");
      i = end + 3;
      continue;
    }
    if (s.compare(i, 2, "</") == 0) {
      size_t j = i + 2;
      while (j < s.size() && name_char(s[j])) ++j;
      const std::string name = s.substr(i + 2, j - i - 2);
      while (j < s.size() && std::isspace(static_cast<unsigned char>(s[j]))) ++j;
      if (j >= s.size() || s[j] != '>') return err("bad end tag");
      if (stack.empty() || x.elements[static_cast<size_t>(stack.back())].name != name)
        return err("mismatched </" + name + ">");
      stack.pop_back();
      i = j + 1;
      continue;
    }
    // Start tag.
    size_t j = i + 1;
    while (j < s.size() && name_char(s[j])) ++j;
    Element e;
    e.name = s.substr(i + 1, j - i - 1);
    if (e.name.empty()) return err("empty tag name");
    if (stack.empty() && root_seen) return err("second root element");
    e.parent = stack.empty() ? -1 : stack.back();
    bool self_closing = false;
    for (;;) {
      const size_t ws = j;
      while (j < s.size() && std::isspace(static_cast<unsigned char>(s[j]))) ++j;
      if (j >= s.size()) return err("unterminated tag");
      if (s[j] == '>') {
        ++j;
        break;
      }
      if (s.compare(j, 2, "/>") == 0) {
        self_closing = true;
        j += 2;
        break;
      }
      if (j == ws) return err("no space before an attribute");
      size_t k = j;
      while (k < s.size() && name_char(s[k])) ++k;
      const std::string an = s.substr(j, k - j);
      if (an.empty() || k + 1 >= s.size() || s[k] != '=' || (s[k + 1] != '"' && s[k + 1] != '\''))
        return err("bad attribute");
      const char q = s[k + 1];
      const size_t end = s.find(q, k + 2);
      if (end == std::string::npos) return err("unterminated attribute value");
      std::string value;
      if (!decode(s.substr(k + 2, end - k - 2), value)) return err("bad attribute value");
      if (e.attrs.count(an)) return err("duplicate attribute " + an);
      e.attrs[an] = value;
      j = end + 1;
    }
    x.elements.push_back(e);
    root_seen = true;
    if (!self_closing) stack.push_back(static_cast<int>(x.elements.size() - 1));
    i = j;
  }
  if (!stack.empty()) x.error = "unclosed <" + x.elements[static_cast<size_t>(stack.back())].name + ">";
  if (!root_seen) x.error = "no root element";
  return x;
}

Xml well_formed(const std::string& svg) {
  Xml x = parse_xml(svg);
  EXPECT_EQ(x.error, "") << svg.substr(0, 2000);
  EXPECT_FALSE(x.elements.empty());
  if (!x.elements.empty()) {
    EXPECT_EQ(x.elements[0].name, "svg");
  }
  return x;
}

std::vector<const Element*> find_all(const Xml& x, const std::string& name,
                                     const std::string& cls = "") {
  std::vector<const Element*> out;
  for (const auto& e : x.elements)
    if (e.name == name && (cls.empty() || (e.attrs.count("class") && e.attrs.at("class") == cls)))
      out.push_back(&e);
  return out;
}

// The children of `parent` named `name`.
std::vector<const Element*> children(const Xml& x, const Element* parent, const std::string& name) {
  std::vector<const Element*> out;
  const int idx = static_cast<int>(parent - x.elements.data());
  for (const auto& e : x.elements)
    if (e.parent == idx && e.name == name) out.push_back(&e);
  return out;
}

struct P {
  double x, y;
};

std::vector<P> points_of(const Element* polyline) {
  std::vector<P> pts;
  const std::string& s = polyline->attrs.at("points");
  const char* c = s.c_str();
  while (*c) {
    char* end = nullptr;
    const double x = std::strtod(c, &end);
    EXPECT_EQ(*end, ',') << s;
    const double y = std::strtod(end + 1, &end);
    pts.push_back({x, y});
    while (*end == ' ') ++end;
    c = end;
  }
  return pts;
}

double attr(const Element* e, const std::string& name) {
  return std::strtod(e->attrs.at(name).c_str(), nullptr);
}

struct Area {
  double x, y, w, h;
};

Area plot_area(const Xml& x) {
  const auto r = find_all(x, "rect", "plot-area");
  EXPECT_EQ(r.size(), 1u);
  if (r.empty()) return {0, 0, 1, 1};
  return {attr(r[0], "x"), attr(r[0], "y"), attr(r[0], "width"), attr(r[0], "height")};
}

std::vector<std::string> texts_in(const Xml& x, const std::string& group_class) {
  std::vector<std::string> out;
  for (const Element* g : find_all(x, "g", group_class))
    for (const Element* t : children(x, g, "text")) out.push_back(t->text);
  return out;
}

bool nice_step(double step) {
  const double k = std::floor(std::log10(step) + 1e-9);
  const double m = step / std::pow(10.0, k);
  return std::fabs(m - 1) < 1e-9 || std::fabs(m - 2) < 1e-9 || std::fabs(m - 5) < 1e-9;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error thrown";
  return "";
}

TEST(ReportXmlChecker, CatchesMalformedDocuments) {
  // The checker the other tests rely on must be able to fail.
  EXPECT_EQ(parse_xml("<svg><g a=\"1\"/><text>a &amp; b</text></svg>").error, "");
  EXPECT_NE(parse_xml("<svg><g></svg></g>").error, "");
  EXPECT_NE(parse_xml("<svg><g></svg>").error, "");
  EXPECT_NE(parse_xml("<svg><text>a < b</text></svg>").error, "");
  EXPECT_NE(parse_xml("<svg><text>a & b</text></svg>").error, "");
  EXPECT_NE(parse_xml("<svg a=\"x\"b=\"y\"/>").error, "");
  EXPECT_NE(parse_xml("<svg a=\"1\" a=\"2\"/>").error, "");
  EXPECT_NE(parse_xml("<svg/><svg/>").error, "");
}

// ---- ticks --------------------------------------------------------------------------------

TEST(ReportTicks, ZeroToOneInFifths) {
  const auto t = nice_ticks(0, 1);
  ASSERT_EQ(t.size(), 6u);
  EXPECT_EQ(t[0], 0.0);
  EXPECT_EQ(t[1], 0.2);
  EXPECT_EQ(t[2], 0.4);
  EXPECT_EQ(t[3], 0.6);  // 6/10, not 0.2 * 3 = 0.6000000000000001
  EXPECT_EQ(t[4], 0.8);
  EXPECT_EQ(t[5], 1.0);
}

TEST(ReportTicks, UnevenRangeGetsWholeNumbers) {
  EXPECT_EQ(nice_ticks(3.2, 7.9), (std::vector<double>{4, 5, 6, 7}));
}

TEST(ReportTicks, NiceStepsInsideTheRangeForManyRanges) {
  const std::vector<std::pair<double, double>> ranges = {
      {0, 1}, {3.2, 7.9}, {0, 1e6}, {-3.7, 12.1}, {0.00123, 0.00456}, {1e9, 1e9 + 5000},
      {-250, -1}, {2.8, 11.3}, {0, 655360000}, {0.99, 1.01}};
  for (const auto& [lo, hi] : ranges) {
    for (int target : {3, 5, 6, 8}) {
      const auto t = nice_ticks(lo, hi, target);
      SCOPED_TRACE(::testing::Message() << "[" << lo << ", " << hi << "] target " << target);
      ASSERT_GE(t.size(), 2u);
      EXPECT_LE(t.size(), static_cast<size_t>(2 * target + 1));
      const double step = t[1] - t[0];
      EXPECT_TRUE(nice_step(step)) << step;
      for (size_t i = 0; i < t.size(); ++i) {
        EXPECT_GE(t[i], lo - 1e-9 * std::fabs(lo));
        EXPECT_LE(t[i], hi + 1e-9 * std::fabs(hi));
        // Every tick is an integer multiple of the step (labels come out round).
        EXPECT_NEAR(t[i] / step, std::round(t[i] / step), 1e-6);
        if (i) {
          EXPECT_NEAR(t[i] - t[i - 1], step, 1e-9 * std::max(1.0, std::fabs(t[i])));
        }
      }
    }
  }
}

TEST(ReportTicks, DegenerateRanges) {
  EXPECT_EQ(nice_ticks(2, 2), std::vector<double>{2});
  EXPECT_TRUE(nice_ticks(kNaN, 1).empty());
  EXPECT_EQ(nice_ticks(1, 0), nice_ticks(0, 1));
}

TEST(ReportTicks, LogAxesUseDecades) {
  EXPECT_EQ(log_ticks(1, 1e6, 7), (std::vector<double>{1, 10, 100, 1e3, 1e4, 1e5, 1e6}));
  // Seven decades for six ticks: every other one, starting at a multiple of two.
  EXPECT_EQ(log_ticks(1, 1e6, 6), (std::vector<double>{1, 100, 1e4, 1e6}));
  EXPECT_EQ(log_ticks(0.5, 2000), (std::vector<double>{1, 10, 100, 1000}));
  EXPECT_EQ(log_ticks(1e-4, 0.2), (std::vector<double>{1e-4, 1e-3, 1e-2, 1e-1}));
  // Many decades: every k-th, at multiples of k, evenly spaced.
  const auto t = log_ticks(1, 1e20, 6);
  ASSERT_GE(t.size(), 3u);
  EXPECT_LE(t.size(), 6u);
  const double k = std::log10(t[1]) - std::log10(t[0]);
  for (size_t i = 0; i < t.size(); ++i) {
    const double e = std::log10(t[i]);
    EXPECT_NEAR(e, std::round(e), 1e-12);
    if (i) {
      EXPECT_NEAR(std::log10(t[i]) - std::log10(t[i - 1]), k, 1e-9);
    }
  }
  // Less than two decades: 1-2-5 steps.
  EXPECT_EQ(log_ticks(1, 9), (std::vector<double>{1, 2, 5}));
  EXPECT_TRUE(log_ticks(0, 10).empty());
}

TEST(ReportTicks, CompactLabels) {
  EXPECT_EQ(format_tick(0.4, 0.2), "0.4");
  EXPECT_EQ(format_tick(1.0, 0.2), "1");
  EXPECT_EQ(format_tick(-0.6, 0.2), "-0.6");
  EXPECT_EQ(format_tick(0, 0.2), "0");
  EXPECT_EQ(format_tick(1e-17, 0.1), "0");  // 0.1 + 0.2 - 0.3 style residue is zero
  EXPECT_EQ(format_tick(2.25, 0.25), "2.25");
  EXPECT_EQ(format_tick(500, 100), "500");
  EXPECT_EQ(format_tick(1200, 200), "1.2k");
  EXPECT_EQ(format_tick(1500, 500), "1.5k");
  EXPECT_EQ(format_tick(20000, 5000), "20k");
  EXPECT_EQ(format_tick(3e6, 1e6), "3M");
  EXPECT_EQ(format_tick(1.25e6, 5e4), "1.25M");
  EXPECT_EQ(format_tick(2.5e9, 5e8), "2.5G");
  EXPECT_EQ(format_tick(0.001, 0.001), "0.001");
  EXPECT_EQ(format_tick(0.01, 0.01), "0.01");
  EXPECT_EQ(format_tick(2e-5, 1e-5), "2e-5");
  EXPECT_EQ(format_tick(1e-4, 1e-4), "1e-4");
  EXPECT_EQ(format_tick(6e-4, 1e-4), "6e-4");
  EXPECT_EQ(format_tick(1.5e-4, 5e-5), "1.5e-4");
  EXPECT_EQ(format_tick(kNaN, 1), "nan");
}

// ---- downsampling -------------------------------------------------------------------------

TEST(ReportDownsample, KeepsEndsAndExtremesWithinBudget) {
  std::vector<double> y(10000);
  for (size_t i = 0; i < y.size(); ++i) y[i] = std::sin(static_cast<double>(i) * 0.01) * (1 + i % 7);
  y[4321] = 100;  // a spike must survive
  y[777] = -100;
  const auto keep = downsample_minmax(y, 2000);
  ASSERT_EQ(keep.size(), 2000u);
  EXPECT_EQ(keep.front(), 0u);
  EXPECT_EQ(keep.back(), y.size() - 1);
  for (size_t i = 1; i < keep.size(); ++i) EXPECT_LT(keep[i - 1], keep[i]);
  EXPECT_NE(std::find(keep.begin(), keep.end(), 4321u), keep.end());
  EXPECT_NE(std::find(keep.begin(), keep.end(), 777u), keep.end());
  // Short inputs are kept whole.
  EXPECT_EQ(downsample_minmax(std::vector<double>(1500, 1.0), 2000).size(), 1500u);
}

// ---- line plots ---------------------------------------------------------------------------

TEST(ReportSvgPlot, OnePolylinePerSeriesWithAllPoints) {
  std::vector<Series> s(3);
  for (size_t k = 0; k < 3; ++k) {
    s[k].label = "run " + std::to_string(k);
    for (int i = 0; i < 50 + static_cast<int>(k); ++i) {
      s[k].x.push_back(i);
      s[k].y.push_back(std::exp(-i / 10.0) + static_cast<double>(k));
    }
  }
  PlotOptions o;
  o.title = "loss";
  o.x_label = "step";
  o.y_label = "loss";
  const Xml x = well_formed(line_plot_svg(s, o));
  const auto groups = find_all(x, "g", "series");
  ASSERT_EQ(groups.size(), 3u);
  for (size_t k = 0; k < 3; ++k) {
    EXPECT_EQ(groups[k]->attrs.at("data-label"), "run " + std::to_string(k));
    const auto lines = children(x, groups[k], "polyline");
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_EQ(points_of(lines[0]).size(), 50 + k);
  }
  // Distinct default colours, a legend listing every series, title and axis labels.
  EXPECT_NE(groups[0]->attrs.at("stroke"), groups[1]->attrs.at("stroke"));
  EXPECT_NE(groups[1]->attrs.at("stroke"), groups[2]->attrs.at("stroke"));
  EXPECT_EQ(texts_in(x, "legend"), (std::vector<std::string>{"run 0", "run 1", "run 2"}));
  bool title = false;
  for (const auto* t : find_all(x, "text")) title |= t->text == "loss";
  EXPECT_TRUE(title);
}

// Does the segment a-b pass through the rectangle? (Sampled finely: exact enough here.)
bool crosses(P a, P b, double x0, double y0, double x1, double y1) {
  for (int i = 0; i <= 200; ++i) {
    const double t = i / 200.0, x = a.x + t * (b.x - a.x), y = a.y + t * (b.y - a.y);
    if (x >= x0 && x <= x1 && y >= y0 && y <= y1) return true;
  }
  return false;
}

TEST(ReportSvgPlot, LegendStaysOffTheData) {
  // Falling curves (loss) leave the top right free; rising ones (accuracy) the bottom right;
  // curves along the top and bottom edges leave only the middle.
  const std::vector<std::vector<Series>> cases = {
      {Series{"a", {0, 1, 2, 3, 4}, {9, 4, 2, 1.5, 1.2}}, Series{"b", {0, 1, 2, 3, 4}, {8, 5, 3, 2, 1.8}}},
      {Series{"acc", {0, 1, 2, 3, 4}, {0.1, 0.6, 0.8, 0.85, 0.9}}},
      {Series{"top", {0, 4}, {2, 2}}, Series{"bottom", {0, 2, 4}, {-1.5, -1.5, -1.4}}}};
  for (const auto& c : cases) {
    const Xml x = well_formed(line_plot_svg(c, PlotOptions{}));
    const auto legend = find_all(x, "g", "legend");
    ASSERT_EQ(legend.size(), 1u);
    const Element* box = children(x, legend[0], "rect").at(0);
    const double x0 = attr(box, "x"), y0 = attr(box, "y");
    const double x1 = x0 + attr(box, "width"), y1 = y0 + attr(box, "height");
    const Area a = plot_area(x);
    EXPECT_GE(x0, a.x);
    EXPECT_LE(x1, a.x + a.w);
    for (const Element* line : find_all(x, "polyline")) {
      const auto pts = points_of(line);
      for (size_t i = 1; i < pts.size(); ++i)
        EXPECT_FALSE(crosses(pts[i - 1], pts[i], x0, y0, x1, y1)) << c[0].label;
    }
  }
}

TEST(ReportSvgPlot, LongSeriesAreDownsampledTo2000Points) {
  Series a{"long", {}, {}};
  for (int i = 0; i < 100000; ++i) {
    a.x.push_back(i);
    a.y.push_back(std::sin(i * 0.001) + 0.1 * std::sin(i * 1.7));
  }
  Series b{"short", {0, 50000, 99999}, {0, 1, 0}};
  const std::string svg = line_plot_svg({a, b}, PlotOptions{});
  const Xml x = well_formed(svg);
  const auto groups = find_all(x, "g", "series");
  ASSERT_EQ(groups.size(), 2u);
  const auto la = children(x, groups[0], "polyline");
  ASSERT_EQ(la.size(), 1u);
  EXPECT_EQ(points_of(la[0]).size(), 2000u);
  EXPECT_EQ(points_of(children(x, groups[1], "polyline").at(0)).size(), 3u);
  EXPECT_LT(svg.size(), 60000u);  // small enough to embed
}

TEST(ReportSvgPlot, LinearCoordinatesMapIntoThePlotArea) {
  // Fixed y range: x spans the data exactly, y the given range.
  Series s{"s", {0, 5, 10}, {1, 2, 3}};
  PlotOptions o;
  o.y_min = 0;
  o.y_max = 4;
  Xml x = well_formed(line_plot_svg({s}, o));
  Area a = plot_area(x);
  auto pts = points_of(children(x, find_all(x, "g", "series").at(0), "polyline").at(0));
  ASSERT_EQ(pts.size(), 3u);
  EXPECT_NEAR(pts[0].x, a.x, 0.06);
  EXPECT_NEAR(pts[0].y, a.y + a.h * (1 - 1.0 / 4), 0.06);
  EXPECT_NEAR(pts[2].x, a.x + a.w, 0.06);
  EXPECT_NEAR(pts[2].y, a.y + a.h * (1 - 3.0 / 4), 0.06);
  EXPECT_NEAR(pts[1].x, a.x + a.w / 2, 0.06);

  // Automatic y range: the data range padded by 5% each side, [0.9, 3.1].
  x = well_formed(line_plot_svg({s}, PlotOptions{}));
  a = plot_area(x);
  pts = points_of(children(x, find_all(x, "g", "series").at(0), "polyline").at(0));
  EXPECT_NEAR(pts[0].y, a.y + a.h * (1 - 0.1 / 2.2), 0.06);
  EXPECT_NEAR(pts[2].y, a.y + a.h * (1 - 2.1 / 2.2), 0.06);
}

TEST(ReportSvgPlot, LogCoordinatesMapByDecades) {
  Series s{"err", {1, 10, 1000}, {1e-3, 1e-2, 1e-1}};
  PlotOptions o;
  o.log_x = o.log_y = true;
  o.y_min = 1e-4;
  o.y_max = 1;
  const Xml x = well_formed(line_plot_svg({s}, o));
  const Area a = plot_area(x);
  const auto pts = points_of(children(x, find_all(x, "g", "series").at(0), "polyline").at(0));
  ASSERT_EQ(pts.size(), 3u);
  // x: log10 spans [0, 3]; y: log10 spans [-4, 0].
  EXPECT_NEAR(pts[1].x, a.x + a.w / 3, 0.06);
  EXPECT_NEAR(pts[1].y, a.y + a.h * (1 - 2.0 / 4), 0.06);
  EXPECT_NEAR(pts[0].y, a.y + a.h * (1 - 1.0 / 4), 0.06);
  EXPECT_NEAR(pts[2].x, a.x + a.w, 0.06);
  // Tick labels are the decades, compactly written.
  const auto ylabels = texts_in(x, "y-tick-labels");
  EXPECT_EQ(ylabels, (std::vector<std::string>{"1e-4", "0.001", "0.01", "0.1", "1"}));
  const auto xlabels = texts_in(x, "x-tick-labels");
  EXPECT_EQ(xlabels, (std::vector<std::string>{"1", "10", "100", "1k"}));
}

TEST(ReportSvgPlot, TickLabelsAreNiceAndCompact) {
  Series s{"tokens", {0, 6.5e8}, {0.0, 1.0}};
  const Xml x = well_formed(line_plot_svg({s}, PlotOptions{}));
  const auto xl = texts_in(x, "x-tick-labels");
  ASSERT_GE(xl.size(), 3u);
  EXPECT_EQ(xl[0], "0");
  for (const auto& l : xl) EXPECT_TRUE(l == "0" || l.back() == 'M') << l;
  EXPECT_EQ(texts_in(x, "y-tick-labels"),
            (std::vector<std::string>{"0", "0.2", "0.4", "0.6", "0.8", "1"}));
}

TEST(ReportSvgPlot, TextIsEscaped) {
  Series s{"x<y> & 'z' \"q\"", {0, 1}, {0, 1}, "#123456\"/><script"};
  PlotOptions o;
  o.title = "a<b & c";
  o.x_label = "step <k>";
  o.y_label = "loss & more";
  const std::string svg = line_plot_svg({s}, o);
  const Xml x = well_formed(svg);
  EXPECT_NE(svg.find("a&lt;b &amp; c"), std::string::npos);
  EXPECT_EQ(svg.find("a<b"), std::string::npos);
  EXPECT_EQ(svg.find("<script"), std::string::npos);
  EXPECT_EQ(texts_in(x, "legend"), std::vector<std::string>{"x<y> & 'z' \"q\""});
  EXPECT_EQ(xml_escape("<&>\"'\x01ok"), "&lt;&amp;&gt;&quot;&apos;ok");
}

TEST(ReportSvgPlot, NonFiniteValuesBreakTheLine) {
  Series s{"gappy", {0, 1, 2, 3, 4, 5, 6}, {1, 2, kNaN, 4, 5, kInf, 7}};
  const std::string svg = line_plot_svg({s}, PlotOptions{});
  const Xml x = well_formed(svg);
  const auto g = find_all(x, "g", "series").at(0);
  const auto lines = children(x, g, "polyline");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(points_of(lines[0]).size(), 2u);
  EXPECT_EQ(points_of(lines[1]).size(), 2u);
  EXPECT_EQ(find_all(x, "circle", "marker").size(), 1u);  // the lone last point
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(svg.find("inf"), std::string::npos);
  // Non-positive values on a log axis are skipped the same way.
  Series l{"log", {1, 2, 3, 4, 5}, {1, 0, -1, 10, 100}};
  PlotOptions o;
  o.log_y = true;
  const Xml y = well_formed(line_plot_svg({l}, o));
  EXPECT_EQ(children(y, find_all(y, "g", "series").at(0), "polyline").size(), 1u);
  EXPECT_EQ(find_all(y, "circle", "marker").size(), 1u);
}

TEST(ReportSvgPlot, EmptyInputsSayNoData) {
  for (const auto& input : std::vector<std::vector<Series>>{
           {}, {Series{"empty", {}, {}}}, {Series{"nan", {0, 1}, {kNaN, kNaN}}}}) {
    PlotOptions o;
    o.title = "nothing";
    const Xml x = well_formed(line_plot_svg(input, o));
    const auto note = find_all(x, "text", "no-data");
    ASSERT_EQ(note.size(), 1u);
    EXPECT_EQ(note[0]->text, "no data");
    EXPECT_TRUE(find_all(x, "polyline").empty());
  }
  // All points outside a fixed range: axes, but no data.
  PlotOptions o;
  o.y_min = 0;
  o.y_max = 1;
  const Xml x = well_formed(line_plot_svg({Series{"high", {0, 1}, {5, 6}}}, o));
  EXPECT_EQ(find_all(x, "text", "no-data").size(), 1u);
}

TEST(ReportSvgPlot, ExtremeValuesStillGiveAChart) {
  const std::vector<std::vector<Series>> cases = {
      {Series{"huge", {-1e308, 1e308}, {-1e308, 1e308}}},
      {Series{"narrow", {0, 1, 2}, {1e15, 1e15 + 0.125, 1e15 + 0.25}}},
      {Series{"tiny", {1e-300, 2e-300}, {1e-300, 3e-300}}},
      {Series{"decades", {1, 2}, {1e-300, 1e300}}}};
  for (const auto& c : cases) {
    for (bool log : {false, true}) {
      PlotOptions o;
      o.log_y = log;
      const std::string svg = line_plot_svg(c, o);
      well_formed(svg);
      EXPECT_EQ(svg.find("nan"), std::string::npos) << c[0].label << " log " << log;
      EXPECT_EQ(svg.find("inf"), std::string::npos) << c[0].label << " log " << log;
    }
  }
  PlotOptions o;
  o.log_y = true;
  o.y_max = 1e-3;
  well_formed(line_plot_svg({Series{"above", {0, 1}, {1, 2}}}, o));
}

TEST(ReportSvgPlot, SinglePointIsAMarkerInTheMiddle) {
  const Xml x = well_formed(line_plot_svg({Series{"one", {42}, {3.5}}}, PlotOptions{}));
  const Area a = plot_area(x);
  const auto m = find_all(x, "circle", "marker");
  ASSERT_EQ(m.size(), 1u);
  EXPECT_NEAR(attr(m[0], "cx"), a.x + a.w / 2, 0.06);
  EXPECT_NEAR(attr(m[0], "cy"), a.y + a.h / 2, 0.06);
  EXPECT_TRUE(find_all(x, "polyline").empty());
}

TEST(ReportSvgPlot, SmoothingKeepsTheRawCurveFaint) {
  Series s{"noisy", {}, {}};
  for (int i = 0; i < 40; ++i) {
    s.x.push_back(i);
    s.y.push_back(i % 2 ? 2.0 : 0.0);
  }
  PlotOptions o;
  o.smooth = 2;
  const Xml x = well_formed(line_plot_svg({s}, o));
  ASSERT_EQ(find_all(x, "g", "series-raw").size(), 1u);
  const auto pts = points_of(children(x, find_all(x, "g", "series").at(0), "polyline").at(0));
  ASSERT_EQ(pts.size(), 40u);
  for (const auto& p : pts) EXPECT_NEAR(p.y, pts[0].y, 0.06);  // every 2-window averages to 1
}

TEST(ReportSvgPlot, SmoothingSurvivesALossSpike) {
  // A diverging step (1e30) must not wipe out the precision of the curve after it.
  Series s{"spiky", {}, {}};
  for (int i = 0; i < 30; ++i) {
    s.x.push_back(i);
    s.y.push_back(i == 5 ? 1e30 : 3.0);
  }
  PlotOptions o;
  o.smooth = 3;
  o.y_min = 0;
  o.y_max = 10;
  const Xml x = well_formed(line_plot_svg({s}, o));
  const Area a = plot_area(x);
  const auto pts = points_of(children(x, find_all(x, "g", "series").at(0), "polyline").at(0));
  ASSERT_EQ(pts.size(), 30u);
  for (size_t i = 8; i < pts.size(); ++i) EXPECT_NEAR(pts[i].y, a.y + a.h * 0.7, 0.06) << i;
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(pts[i].y, a.y + a.h * 0.7, 0.06) << i;
}

TEST(ReportSvgPlot, ExplicitColoursAndDashes) {
  Series a{"a", {0, 1}, {0, 1}, "#ff00ff", true};
  Series b{"b", {0, 1}, {1, 0}};
  const Xml x = well_formed(line_plot_svg({a, b}, PlotOptions{}));
  const auto g = find_all(x, "g", "series");
  EXPECT_EQ(g[0]->attrs.at("stroke"), "#ff00ff");
  EXPECT_EQ(g[0]->attrs.count("stroke-dasharray"), 1u);
  EXPECT_EQ(g[1]->attrs.count("stroke-dasharray"), 0u);
}

TEST(ReportSvgPlot, BadInputsNameTheProblem) {
  EXPECT_NE(error_of([] { line_plot_svg({Series{"lr", {1, 2}, {1}}}, PlotOptions{}); })
                .find("series 'lr' has 2 x values but 1 y values"),
            std::string::npos);
  PlotOptions o;
  o.y_min = 2;
  o.y_max = 1;
  EXPECT_NE(error_of([&] { line_plot_svg({}, o); }).find("y_min (2) must be below y_max (1)"),
            std::string::npos);
  PlotOptions l;
  l.log_y = true;
  l.y_min = 0;
  EXPECT_NE(error_of([&] { line_plot_svg({}, l); }).find("log y axis"), std::string::npos);
  PlotOptions tiny;
  tiny.width = 50;
  EXPECT_NE(error_of([&] { line_plot_svg({}, tiny); }).find("too small"), std::string::npos);
}

TEST(ReportSvgPlot, WritesTheFile) {
  nibble::testing::ScratchDir dir;
  const std::vector<Series> s = {Series{"a", {0, 1, 2}, {3, 1, 2}}};
  PlotOptions o;
  o.title = "written";
  write_line_plot(dir.file("plot.svg"), s, o);
  EXPECT_EQ(read_file(dir.file("plot.svg")), line_plot_svg(s, o));
}

// ---- heatmaps and the colour scale -----------------------------------------------------

double luminance(const std::string& hex) {
  auto ch = [&](int i) {
    const double c = std::strtol(hex.substr(static_cast<size_t>(1 + 2 * i), 2).c_str(), nullptr, 16) / 255.0;
    return c <= 0.04045 ? c / 12.92 : std::pow((c + 0.055) / 1.055, 2.4);
  };
  return 0.2126 * ch(0) + 0.7152 * ch(1) + 0.0722 * ch(2);
}

TEST(ReportHeatmap, ColourScaleIsSequential) {
  double prev = -1;
  for (int i = 0; i <= 40; ++i) {
    const std::string c = sequential_color(i / 40.0);
    ASSERT_EQ(c.size(), 7u);
    ASSERT_EQ(c[0], '#');
    const double l = luminance(c);
    EXPECT_GT(l, prev) << "t = " << i / 40.0;  // brighter at every step
    prev = l;
  }
  EXPECT_LT(luminance(sequential_color(0)), 0.05);
  EXPECT_GT(luminance(sequential_color(1)), 0.7);
  auto rgb = [](const std::string& c, int i) {
    return std::strtol(c.substr(static_cast<size_t>(1 + 2 * i), 2).c_str(), nullptr, 16);
  };
  const std::string lo = sequential_color(0), hi = sequential_color(1);
  EXPECT_GT(rgb(lo, 2), rgb(lo, 1));  // dark end: purple (blue over green)
  EXPECT_GT(rgb(hi, 0), rgb(hi, 2));  // light end: yellow (red and green over blue)
  EXPECT_GT(rgb(hi, 1), rgb(hi, 2));
  EXPECT_EQ(sequential_color(-1), sequential_color(0));
  EXPECT_EQ(sequential_color(2), sequential_color(1));
}

TEST(ReportHeatmap, CellsColourBarAndValues) {
  const std::vector<std::string> rows = {"layer <0>", "layer 1"};
  const std::vector<std::string> cols = {"q", "k", "v"};
  const std::vector<double> v = {1.0, 2.0, 3.0, 4.0, kNaN, 5.0};
  HeatmapOptions o;
  o.title = "snr & more";
  o.colorbar_label = "dB";
  const std::string svg = heatmap_svg(rows, cols, v, o);
  const Xml x = well_formed(svg);
  const auto cells_group = find_all(x, "g", "cells");
  ASSERT_EQ(cells_group.size(), 1u);
  const auto cells = children(x, cells_group[0], "rect");
  ASSERT_EQ(cells.size(), 6u);
  EXPECT_EQ(cells[0]->attrs.at("fill"), sequential_color(0));  // the minimum
  EXPECT_EQ(cells[5]->attrs.at("fill"), sequential_color(1));  // the maximum
  EXPECT_EQ(cells[2]->attrs.at("fill"), sequential_color(0.5));
  EXPECT_EQ(cells[4]->attrs.at("fill"), "#e3e3e3");  // missing
  // Cells are laid out row-major, left to right, top to bottom.
  EXPECT_LT(attr(cells[0], "x"), attr(cells[1], "x"));
  EXPECT_EQ(attr(cells[0], "y"), attr(cells[2], "y"));
  EXPECT_LT(attr(cells[2], "y"), attr(cells[3], "y"));
  EXPECT_EQ(texts_in(x, "values"),
            (std::vector<std::string>{"1.00", "2.00", "3.00", "4.00", "5.00"}));
  EXPECT_EQ(texts_in(x, "row-labels"), rows);  // escaped in the file, intact when read
  EXPECT_EQ(texts_in(x, "col-labels"), cols);
  const auto bar = texts_in(x, "colorbar");
  ASSERT_GE(bar.size(), 2u);
  for (const auto& l : bar) {
    const double t = std::strtod(l.c_str(), nullptr);
    EXPECT_GE(t, 1.0);
    EXPECT_LE(t, 5.0);
  }
  EXPECT_NE(svg.find("snr &amp; more"), std::string::npos);
}

TEST(ReportHeatmap, LogScaleAndFixedRange) {
  HeatmapOptions o;
  o.log_scale = true;
  o.v_min = 1;
  o.v_max = 1000;
  const Xml x = well_formed(heatmap_svg({"a"}, {"x", "y", "z", "w"}, {1, 31.622776601683793, 1000, -2}, o));
  const auto cells = children(x, find_all(x, "g", "cells").at(0), "rect");
  ASSERT_EQ(cells.size(), 4u);
  EXPECT_EQ(cells[1]->attrs.at("fill"), sequential_color(0.5));
  EXPECT_EQ(cells[3]->attrs.at("fill"), "#e3e3e3");  // <= 0 has no logarithm
  EXPECT_EQ(texts_in(x, "colorbar"), (std::vector<std::string>{"1", "10", "100", "1k"}));
}

TEST(ReportHeatmap, EmptyAndMismatchedInputs) {
  const Xml x = well_formed(heatmap_svg({}, {}, {}, HeatmapOptions{}));
  EXPECT_EQ(find_all(x, "text", "no-data").size(), 1u);
  const Xml y = well_formed(heatmap_svg({"r"}, {"c"}, {kNaN}, HeatmapOptions{}));
  EXPECT_EQ(find_all(y, "text", "no-data").size(), 1u);
  EXPECT_NE(error_of([] { heatmap_svg({"a", "b"}, {"c"}, {1.0}, HeatmapOptions{}); })
                .find("1 values for 2 rows x 1 columns"),
            std::string::npos);
}

TEST(ReportHeatmap, ManyRowsThinLabelsAndDropValues) {
  std::vector<std::string> rows, cols = {"a", "b"};
  std::vector<double> v;
  for (int r = 0; r < 100; ++r) {
    rows.push_back("blocks." + std::to_string(r));
    v.push_back(r);
    v.push_back(-r);
  }
  const Xml x = well_formed(heatmap_svg(rows, cols, v, HeatmapOptions{}));
  EXPECT_EQ(children(x, find_all(x, "g", "cells").at(0), "rect").size(), 200u);
  EXPECT_TRUE(texts_in(x, "values").empty());  // 12 px rows are too small for text
  EXPECT_EQ(texts_in(x, "row-labels").size(), 100u);  // 10 px labels still fit
  // 6 px rows: every other label (8 px text), none of them overlapping.
  HeatmapOptions o;
  o.cell_height = 6;
  const Xml y = well_formed(heatmap_svg(rows, cols, v, o));
  const auto shown = texts_in(y, "row-labels");
  ASSERT_EQ(shown.size(), 50u);
  EXPECT_EQ(shown[1], "blocks.2");
}

}  // namespace
