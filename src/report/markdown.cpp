#include "nibble/report/markdown.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "nibble/error.hpp"

namespace nibble::report {

// ---- tables -----------------------------------------------------------------------------
namespace {

std::string escape_cell(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '|') {
      out += "\\|";
    } else if (c == '\r') {
      out += "<br>";
      if (i + 1 < s.size() && s[i + 1] == '\n') ++i;  // CRLF is one break
    } else if (c == '\n') {
      out += "<br>";
    } else {
      out += c;
    }
  }
  return out;
}

// Display width in code points, so that "σ" or "×" pads like one character (UTF-8
// continuation bytes are 10xxxxxx).
size_t width(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

std::string pad(const std::string& s, size_t w, Align a) {
  const size_t have = width(s);
  const size_t gap = w > have ? w - have : 0;
  switch (a) {
    case Align::Right:
      return std::string(gap, ' ') + s;
    case Align::Center:
      return std::string(gap / 2, ' ') + s + std::string(gap - gap / 2, ' ');
    default:
      return s + std::string(gap, ' ');
  }
}

std::string rule(size_t w, Align a) {
  switch (a) {
    case Align::Left:
      return ":" + std::string(w - 1, '-');
    case Align::Right:
      return std::string(w - 1, '-') + ":";
    case Align::Center:
      return ":" + std::string(w - 2, '-') + ":";
    default:
      return std::string(w, '-');
  }
}

}  // namespace

MarkdownTable::MarkdownTable(std::vector<std::string> header, std::vector<Align> alignment)
    : header_(std::move(header)), alignment_(std::move(alignment)) {
  if (header_.empty()) fail("MarkdownTable: the header has no columns");
  if (alignment_.size() > header_.size())
    fail("MarkdownTable: ", alignment_.size(), " alignments for ", header_.size(), " columns");
  alignment_.resize(header_.size(), Align::Default);
}

void MarkdownTable::add_row(std::vector<std::string> cells) {
  if (cells.size() > header_.size())
    fail("MarkdownTable: row ", rows_.size() + 1, " has ", cells.size(), " cells, the header has ",
         header_.size(), " columns");
  cells.resize(header_.size());
  rows_.push_back(std::move(cells));
}

std::string MarkdownTable::str() const {
  const size_t n = header_.size();
  std::vector<std::string> head(n);
  std::vector<std::vector<std::string>> body(rows_.size(), std::vector<std::string>(n));
  std::vector<size_t> w(n, 3);  // "---" is the shortest rule every renderer accepts
  for (size_t c = 0; c < n; ++c) {
    head[c] = escape_cell(header_[c]);
    w[c] = std::max(w[c], width(head[c]));
    for (size_t r = 0; r < rows_.size(); ++r) {
      body[r][c] = escape_cell(rows_[r][c]);
      w[c] = std::max(w[c], width(body[r][c]));
    }
  }
  auto line = [&](const std::vector<std::string>& cells, bool is_rule) {
    std::string s = "|";
    for (size_t c = 0; c < n; ++c)
      s += " " + (is_rule ? cells[c] : pad(cells[c], w[c], alignment_[c])) + " |";
    return s + "\n";
  };
  std::vector<std::string> rules(n);
  for (size_t c = 0; c < n; ++c) rules[c] = rule(w[c], alignment_[c]);
  std::string out = line(head, false) + line(rules, true);
  for (const auto& r : body) out += line(r, false);
  return out;
}

// ---- numbers ----------------------------------------------------------------------------
namespace {

// "nan", "inf", "-inf", or "" for finite values.
std::string non_finite(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return "";
}

// Drops the sign of a printed zero ("-0.00" → "0.00").
std::string drop_negative_zero(std::string s) {
  if (!s.empty() && s[0] == '-' &&
      s.find_first_not_of("0.", 1) == std::string::npos)
    s.erase(0, 1);
  return s;
}

// "1.500" → "1.5", "2.000" → "2"; strings without a decimal point are left alone.
std::string strip_zeros(std::string s) {
  const size_t dot = s.find('.');
  if (dot == std::string::npos) return s;
  const size_t e = s.find('e');
  std::string tail = e == std::string::npos ? "" : s.substr(e);
  std::string head = s.substr(0, e == std::string::npos ? s.size() : e);
  while (head.back() == '0') head.pop_back();
  if (head.back() == '.') head.pop_back();
  return head + tail;
}

}  // namespace

std::string fmt_fixed(double v, int decimals) {
  if (const std::string s = non_finite(v); !s.empty()) return s;
  if (decimals < 0) fail("fmt_fixed: decimals must be >= 0, got ", decimals);
  char buf[400];
  std::snprintf(buf, sizeof buf, "%.*f", std::min(decimals, 60), v);
  return drop_negative_zero(buf);
}

std::string fmt_sig(double v, int sig) {
  if (const std::string s = non_finite(v); !s.empty()) return s;
  if (sig < 1 || sig > 17) fail("fmt_sig: significant digits must be in [1, 17], got ", sig);
  if (v == 0) return sig == 1 ? "0" : "0." + std::string(static_cast<size_t>(sig - 1), '0');
  // printf rounds to `sig` digits correctly; the digits and the exponent of its %e output are
  // then laid out by hand so that both notations show exactly the same rounded digits.
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*e", sig - 1, v);
  const std::string e_form = buf;
  const bool neg = e_form[0] == '-';
  const size_t epos = e_form.find('e');
  std::string digits;
  for (size_t i = neg ? 1 : 0; i < epos; ++i)
    if (e_form[i] != '.') digits += e_form[i];
  const int exp10 = std::atoi(e_form.c_str() + epos + 1);
  std::string out;
  if (exp10 < -4 || exp10 >= 6) {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    out += "e" + std::to_string(exp10);
  } else if (exp10 >= 0) {
    const size_t int_digits = static_cast<size_t>(exp10) + 1;
    if (digits.size() <= int_digits) {
      out = digits + std::string(int_digits - digits.size(), '0');
    } else {
      out = digits.substr(0, int_digits) + "." + digits.substr(int_digits);
    }
  } else {
    out = "0." + std::string(static_cast<size_t>(-exp10 - 1), '0') + digits;
  }
  return (neg ? "-" : "") + out;
}

std::string fmt_si(double v, int sig) {
  if (const std::string s = non_finite(v); !s.empty()) return s;
  if (sig < 1 || sig > 17) fail("fmt_si: significant digits must be in [1, 17], got ", sig);
  static const char* const kSuffix[] = {"", "k", "M", "G", "T", "P"};
  const double a = std::fabs(v);
  if (a >= 1e18) return fmt_sig(v, sig);  // beyond "P" a suffix no longer helps
  int unit = a >= 1000 ? std::min(5, static_cast<int>(std::floor(std::log10(a) / 3))) : 0;
  for (;;) {
    const double scaled = v / std::pow(1000.0, unit);
    const std::string s = fmt_sig(scaled, sig);
    // Rounding can carry into the next unit: 999999 at 3 digits is "1000k", shown as "1M".
    if (unit < 5 && std::fabs(std::strtod(s.c_str(), nullptr)) >= 1000) {
      ++unit;
      continue;
    }
    return drop_negative_zero(strip_zeros(s)) + kSuffix[unit];
  }
}

std::string fmt_percent(double fraction, int decimals) {
  if (const std::string s = non_finite(fraction); !s.empty()) return s;
  return fmt_fixed(fraction * 100.0, decimals) + "%";
}

}  // namespace nibble::report
