// Markdown tables (exact text, escaping, alignment) and the number formats of results tables.
#include <gtest/gtest.h>

#include <limits>
#include <string>

#include "nibble/error.hpp"
#include "nibble/report/markdown.hpp"

using namespace nibble;
using namespace nibble::report;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

TEST(ReportMarkdown, SmallTableExactly) {
  MarkdownTable t({"recipe", "loss", "Δ"}, {Align::Left, Align::Right});
  t.add_row({"bf16", "3.012", "—"});
  t.add_row({"nvfp4|rht", "3.050"});
  EXPECT_EQ(t.str(),
            "| recipe     |  loss | Δ   |\n"
            "| :--------- | ----: | --- |\n"
            "| bf16       | 3.012 | —   |\n"
            "| nvfp4\\|rht | 3.050 |     |\n");
  EXPECT_EQ(t.rows().size(), 2u);
  EXPECT_EQ(t.rows()[1].size(), 3u);  // short rows are padded with empty cells
  EXPECT_EQ(t.alignment().size(), 3u);
}

TEST(ReportMarkdown, CentredColumnsAndLineBreaks) {
  MarkdownTable t({"a", "b"}, {Align::Center, Align::Default});
  t.add_row({"x", "two\nlines"});
  EXPECT_EQ(t.str(),
            "|  a  | b            |\n"
            "| :-: | ------------ |\n"
            "|  x  | two<br>lines |\n");
}

TEST(ReportMarkdown, HeaderOnly) {
  MarkdownTable t({"step"});
  EXPECT_EQ(t.str(), "| step |\n| ---- |\n");
}

TEST(ReportMarkdown, RejectsRowsWiderThanTheHeader) {
  MarkdownTable t({"a", "b"});
  try {
    t.add_row({"1", "2", "3"});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("row 1 has 3 cells, the header has 2 columns"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(MarkdownTable({"a"}, {Align::Left, Align::Right}), Error);
  EXPECT_THROW(MarkdownTable({}), Error);
}

TEST(ReportMarkdown, FixedDecimals) {
  EXPECT_EQ(fmt_fixed(3.14159, 2), "3.14");
  EXPECT_EQ(fmt_fixed(2.5, 0), "2");  // printf rounds half to even
  EXPECT_EQ(fmt_fixed(-0.001, 2), "0.00");  // no negative zero
  EXPECT_EQ(fmt_fixed(-1.25, 1), "-1.2");
  EXPECT_EQ(fmt_fixed(kNaN, 3), "nan");
  EXPECT_EQ(fmt_fixed(-kInf, 3), "-inf");
}

TEST(ReportMarkdown, SignificantDigits) {
  EXPECT_EQ(fmt_sig(3.14159, 3), "3.14");
  EXPECT_EQ(fmt_sig(0.5, 3), "0.500");
  EXPECT_EQ(fmt_sig(1234.5, 3), "1230");
  EXPECT_EQ(fmt_sig(999.96, 4), "1000");
  EXPECT_EQ(fmt_sig(0.000123456, 2), "0.00012");
  EXPECT_EQ(fmt_sig(1.5e-6, 2), "1.5e-6");
  EXPECT_EQ(fmt_sig(2.5e7, 3), "2.50e7");
  EXPECT_EQ(fmt_sig(-42.0, 2), "-42");
  EXPECT_EQ(fmt_sig(0.0, 3), "0.00");
  EXPECT_EQ(fmt_sig(kInf, 3), "inf");
  EXPECT_THROW(fmt_sig(1.0, 0), Error);
}

TEST(ReportMarkdown, SiSuffixes) {
  EXPECT_EQ(fmt_si(1234), "1.23k");
  EXPECT_EQ(fmt_si(1.2e6), "1.2M");
  EXPECT_EQ(fmt_si(124e6), "124M");
  EXPECT_EQ(fmt_si(6.5e9, 2), "6.5G");
  EXPECT_EQ(fmt_si(999999), "1M");  // rounding carries into the next unit
  EXPECT_EQ(fmt_si(999.9), "1k");
  EXPECT_EQ(fmt_si(12), "12");
  EXPECT_EQ(fmt_si(0.25), "0.25");
  EXPECT_EQ(fmt_si(0), "0");
  EXPECT_EQ(fmt_si(-3.5e12), "-3.5T");
  EXPECT_EQ(fmt_si(2e15), "2P");
  EXPECT_EQ(fmt_si(kNaN), "nan");
}

TEST(ReportMarkdown, Percentages) {
  EXPECT_EQ(fmt_percent(0.1234), "12.3%");
  EXPECT_EQ(fmt_percent(0.5, 0), "50%");
  EXPECT_EQ(fmt_percent(-0.0001, 2), "-0.01%");
  EXPECT_EQ(fmt_percent(kNaN), "nan");
}

}  // namespace
