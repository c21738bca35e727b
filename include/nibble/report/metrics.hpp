#pragma once
// A training run's metrics.jsonl read back as rows and columns. The trainer appends one JSON
// object per line (at least step, loss, lr, grad_norm, tokens_per_s; val_loss and tokens when
// known); reports pull columns out of it for tables and plots.
#include <cstdint>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "nibble/json.hpp"

namespace nibble::report {

struct MetricsLog {
  std::string path;                 // what errors and warnings name
  std::vector<Json> rows;           // one JSON object per non-blank line, in file order
  std::vector<size_t> line_numbers; // the 1-based line each row came from
  // Things that were tolerated rather than rejected (a truncated last line); the caller
  // decides whether to print them.
  std::vector<std::string> warnings;

  // The value of `key` in every row: NaN where the row lacks the key or holds null (the JSON
  // writer stores NaN and Inf as null, so a diverged loss reads back as NaN). A value that is
  // not a number throws, naming the file, line and key.
  std::vector<double> column(const std::string& key) const;

  // Whether any row holds `key` with a non-null value.
  bool has(const std::string& key) const;

  // Every key that occurs, in order of first appearance.
  std::vector<std::string> keys() const;
};

// Reads metrics.jsonl. Blank lines are ignored. Every other line must be a JSON object; a
// malformed one throws nibble::Error "PATH:LINE: ..." — with one exception: when the LAST line
// does not end in '\n' and does not parse, it is the half-written record of a run that was
// killed mid-write (records are appended line by line, so only the tail can be torn). That
// line is dropped and a warning naming it is added to `warnings`, so that the report of a
// crashed run still shows everything up to the crash.
MetricsLog read_metrics_jsonl(const std::string& path);

// The same on text already in memory; `what` names it in messages.
MetricsLog parse_metrics_jsonl(std::string_view text, const std::string& what);

// A run's metrics.jsonl for writing: started empty, or — when a run resumes at `resume_step`
// (≥ 0) — rewritten without the rows past that step (so a resumed run's log has each step
// once; a torn last line of a killed run is dropped), then appended a flushed line per row.
class MetricsWriter {
 public:
  MetricsWriter(const std::string& path, int64_t resume_step);
  void write(const Json& row);

 private:
  std::string path_;
  std::ofstream out_;
};

}  // namespace nibble::report
