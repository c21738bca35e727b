#pragma once
// `nibble report RUN_DIR...`: any set of training runs (or sweep directories, whose runs are
// taken in order) rendered into one Markdown page with a table and loss plots.
#include <string>
#include <vector>

namespace nibble {

// Writes OUT/report.md, OUT/loss.svg and OUT/val_loss.svg; returns the Markdown. Errors name a
// directory that is neither a training run (config.json + metrics.jsonl) nor a sweep (runs/).
std::string write_runs_report(const std::vector<std::string>& dirs, const std::string& out);

}  // namespace nibble
