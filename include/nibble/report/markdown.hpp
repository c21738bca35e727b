#pragma once
// Markdown tables for results pages (docs/results.md, `nibble report`), and the number
// formats their cells use. The table pads its columns so that the raw text reads as a
// table too (people diff and review these files as text, not only rendered).
#include <string>
#include <vector>

namespace nibble::report {

enum class Align { Default, Left, Center, Right };

class MarkdownTable {
 public:
  // `alignment` may be shorter than `header` (the rest is Default) but not longer.
  explicit MarkdownTable(std::vector<std::string> header, std::vector<Align> alignment = {});

  // A row may have fewer cells than the header (the rest are empty), never more.
  void add_row(std::vector<std::string> cells);

  const std::vector<std::string>& header() const { return header_; }
  const std::vector<std::vector<std::string>>& rows() const { return rows_; }
  const std::vector<Align>& alignment() const { return alignment_; }

  // GitHub-flavoured Markdown, one line per row, each ending in '\n'. Cell text is
  // escaped: '|' becomes "\|" and line breaks become "<br>" (a raw newline would end the row).
  std::string str() const;

 private:
  std::vector<std::string> header_;
  std::vector<Align> alignment_;
  std::vector<std::vector<std::string>> rows_;
};

// The formats below print NaN as "nan" and infinities as "inf" / "-inf", and never print a
// negative zero ("-0.00" would suggest a sign that the value does not have).

// Fixed decimals: fmt_fixed(3.14159, 2) == "3.14".
std::string fmt_fixed(double v, int decimals);

// `sig` significant digits, trailing zeros kept (they state the precision): fmt_sig(0.5, 3)
// == "0.500", fmt_sig(1234.5, 3) == "1230"; magnitudes below 1e-4 or (after rounding) at or
// above 1e6 use exponent notation: fmt_sig(1.5e-6, 2) == "1.5e-6", fmt_sig(2.5e7, 3) == "2.50e7".
std::string fmt_sig(double v, int sig);

// SI suffixes k, M, G, T, P for counts (tokens, parameters), at most `sig` significant digits
// and no trailing zeros: fmt_si(1234) == "1.23k", fmt_si(1.2e6) == "1.2M", fmt_si(999999) ==
// "1M", fmt_si(12) == "12", fmt_si(0.25) == "0.25".
std::string fmt_si(double v, int sig = 3);

// A fraction as a percentage: fmt_percent(0.1234) == "12.3%", fmt_percent(0.5, 0) == "50%".
std::string fmt_percent(double fraction, int decimals = 1);

}  // namespace nibble::report
