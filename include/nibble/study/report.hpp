#pragma once
// `nibble report RUN_DIR...`: any set of training runs (or sweep directories, whose runs are
// taken in order) rendered into one Markdown page with a table and loss plots.
#include <string>
#include <vector>

namespace nibble {

// Writes OUT/report.md, OUT/loss.svg and OUT/val_loss.svg; returns the Markdown. Errors name a
// directory that is neither a training run (config.json + metrics.jsonl) nor a sweep (runs/).
// With a baseline run (one of dirs or another), the table adds, per run, the steps it took to
// reach the baseline's final validation loss (linear between evaluations; "—" if never) and
// the speed-up over the baseline's own steps — WinQ's "steps to the baseline's loss".
std::string write_runs_report(const std::vector<std::string>& dirs, const std::string& out,
                              const std::string& baseline = "");

// The first point where a decreasing-ish curve reaches `target` (≤), linearly interpolated in x
// between the sample before and the first sample at or below it; NaN if it never does.
double first_reach(const std::vector<double>& x, const std::vector<double>& y, double target);

}  // namespace nibble
