// metrics.jsonl: rows and columns, NaN for absent values, errors with file and line, and the
// truncated last line that a killed run leaves behind.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/report/metrics.hpp"
#include "support/cli_runner.hpp"

using namespace nibble;
using namespace nibble::report;

namespace {

const char* kLog =
    "{\"step\": 0, \"loss\": 10.9, \"lr\": 0.0, \"grad_norm\": 3.5, \"tokens_per_s\": 1000}\n"
    "{\"step\": 1, \"loss\": 9.5, \"lr\": 1e-5, \"grad_norm\": 2.5, \"tokens_per_s\": 1200, "
    "\"tokens\": 65536}\n"
    "\n"
    "{\"step\": 2, \"loss\": null, \"lr\": 2e-5, \"grad_norm\": 2.0, \"tokens_per_s\": 1250, "
    "\"val_loss\": 9.0}\n";

std::string error_of(std::string_view text) {
  try {
    parse_metrics_jsonl(text, "run/metrics.jsonl");
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error for: " << text;
  return "";
}

TEST(ReportMetrics, RowsAndColumns) {
  const MetricsLog log = parse_metrics_jsonl(kLog, "run/metrics.jsonl");
  ASSERT_EQ(log.rows.size(), 3u);
  EXPECT_EQ(log.line_numbers, (std::vector<size_t>{1, 2, 4}));  // the blank line is skipped
  EXPECT_TRUE(log.warnings.empty());
  EXPECT_EQ(log.column("step"), (std::vector<double>{0, 1, 2}));
  const auto loss = log.column("loss");
  EXPECT_EQ(loss[0], 10.9);
  EXPECT_EQ(loss[1], 9.5);
  EXPECT_TRUE(std::isnan(loss[2]));  // null: a NaN loss as the JSON writer stores it
  const auto val = log.column("val_loss");
  EXPECT_TRUE(std::isnan(val[0]) && std::isnan(val[1]));
  EXPECT_EQ(val[2], 9.0);
  const auto missing = log.column("no_such_key");
  ASSERT_EQ(missing.size(), 3u);
  EXPECT_TRUE(std::isnan(missing[0]));
  EXPECT_TRUE(log.has("val_loss"));
  EXPECT_FALSE(log.has("no_such_key"));
  EXPECT_EQ(log.keys(), (std::vector<std::string>{"step", "loss", "lr", "grad_norm",
                                                  "tokens_per_s", "tokens", "val_loss"}));
}

TEST(ReportMetrics, TruncatedLastLineIsSkippedWithAWarning) {
  const std::string text = std::string(kLog) + "{\"step\": 3, \"loss\": 8.";
  const MetricsLog log = parse_metrics_jsonl(text, "run/metrics.jsonl");
  ASSERT_EQ(log.rows.size(), 3u);
  ASSERT_EQ(log.warnings.size(), 1u);
  EXPECT_NE(log.warnings[0].find("run/metrics.jsonl:5"), std::string::npos) << log.warnings[0];
  EXPECT_NE(log.warnings[0].find("truncated"), std::string::npos) << log.warnings[0];
  // A complete last line without a newline is still read.
  const MetricsLog ok = parse_metrics_jsonl("{\"step\": 1}\n{\"step\": 2}", "m.jsonl");
  EXPECT_EQ(ok.column("step"), (std::vector<double>{1, 2}));
  EXPECT_TRUE(ok.warnings.empty());
}

TEST(ReportMetrics, MalformedLinesNameFileAndLine) {
  // In the middle: an error, with the line number (blank lines count).
  const std::string mid = error_of("{\"step\": 0}\n\n{\"step\": 1, loss: 2}\n{\"step\": 2}\n");
  EXPECT_NE(mid.find("run/metrics.jsonl:3: JSON error at column 13"), std::string::npos) << mid;
  // A broken last line that did end in a newline was written whole: an error too.
  const std::string last = error_of("{\"step\": 0}\n{\"step\": 1,}\n");
  EXPECT_NE(last.find("run/metrics.jsonl:2:"), std::string::npos) << last;
  // Lines must be objects.
  const std::string arr = error_of("{\"step\": 0}\n[1, 2]\n");
  EXPECT_NE(arr.find("run/metrics.jsonl:2: expected a JSON object per line, got array"),
            std::string::npos)
      << arr;
}

TEST(ReportMetrics, NonNumericValuesAreErrors) {
  const MetricsLog log =
      parse_metrics_jsonl("{\"step\": 0, \"loss\": 1}\n{\"step\": 1, \"loss\": \"high\"}\n", "m.jsonl");
  try {
    (void)log.column("loss");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("m.jsonl:2: field 'loss' is a string, expected a number"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(log.column("step"), (std::vector<double>{0, 1}));
}

TEST(ReportMetrics, ReadsFiles) {
  nibble::testing::ScratchDir dir;
  const std::string path = dir.file("metrics.jsonl");
  write_file_atomic(path, kLog);
  const MetricsLog log = read_metrics_jsonl(path);
  EXPECT_EQ(log.path, path);
  EXPECT_EQ(log.rows.size(), 3u);
  const std::string missing = dir.file("nope.jsonl");
  try {
    read_metrics_jsonl(missing);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
  write_file_atomic(path, "");
  EXPECT_TRUE(read_metrics_jsonl(path).rows.empty());
}

}  // namespace
