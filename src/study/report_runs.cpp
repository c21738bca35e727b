// nibble report: a table and loss plots for any set of runs.
#include <algorithm>
#include <cmath>
#include <filesystem>

#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/report/markdown.hpp"
#include "nibble/report/svg_plot.hpp"
#include "nibble/study/report.hpp"
#include "nibble/study/sweep.hpp"
#include "nibble/train/train_config.hpp"

namespace nibble {
namespace fs = std::filesystem;

namespace {

bool is_run(const fs::path& d) { return fs::exists(d / "config.json") && fs::exists(d / "metrics.jsonl"); }

std::vector<fs::path> expand(const std::vector<std::string>& dirs) {
  std::vector<fs::path> runs;
  for (const std::string& s : dirs) {
    const fs::path d(s);
    if (is_run(d)) {
      runs.push_back(d);
    } else if (fs::is_directory(d / "runs")) {
      std::vector<fs::path> sub;
      for (const auto& e : fs::directory_iterator(d / "runs"))
        if (is_run(e.path())) sub.push_back(e.path());
      std::sort(sub.begin(), sub.end());
      if (sub.empty()) fail(s, ": a sweep directory without finished or started runs");
      runs.insert(runs.end(), sub.begin(), sub.end());
    } else {
      fail(s, ": neither a training run (config.json + metrics.jsonl) nor a sweep directory (runs/)");
    }
  }
  return runs;
}

}  // namespace

std::string write_runs_report(const std::vector<std::string>& dirs, const std::string& out) {
  if (dirs.empty()) fail("report: no run directories given");
  const std::vector<fs::path> runs = expand(dirs);
  report::MarkdownTable t({"run", "model", "recipe", "seed", "device", "steps", "tokens", "train loss", "val loss",
                           "tokens/s"},
                          {report::Align::Left, report::Align::Left, report::Align::Left, report::Align::Right,
                           report::Align::Left, report::Align::Right, report::Align::Right, report::Align::Right,
                           report::Align::Right, report::Align::Right});
  std::vector<report::Series> train_s, val_s;
  for (const fs::path& d : runs) {
    const std::string cfg_path = (d / "config.json").string();
    const TrainConfig c = TrainConfig::from_json(Json::parse(read_file(cfg_path), cfg_path), cfg_path);
    const SweepRun r = read_run(c.recipe.name, c.seed, d.string());
    const std::string label = d.filename().string();
    t.add_row({label, c.model.name, c.recipe.name, std::to_string(c.seed), c.device, std::to_string(r.steps),
               report::fmt_si(r.tokens), report::fmt_fixed(r.final_train_loss, 4),
               std::isfinite(r.final_val_loss) ? report::fmt_fixed(r.final_val_loss, 4) : "—",
               report::fmt_si(r.tokens_per_s)});
    train_s.push_back({label, r.curve_tokens, r.curve_train});
    val_s.push_back({label, r.eval_tokens, r.eval_val});
  }
  fs::create_directories(out);
  report::PlotOptions o;
  o.x_label = "tokens";
  o.y_label = "cross-entropy (nats/token)";
  o.title = "training loss (mean over each log window)";
  o.smooth = 5;
  report::write_line_plot((fs::path(out) / "loss.svg").string(), train_s, o);
  o.title = "validation loss";
  o.smooth = 0;
  report::write_line_plot((fs::path(out) / "val_loss.svg").string(), val_s, o);
  std::string md = "# Training runs\n\n";
  md += std::to_string(runs.size()) + " runs. Loss: cross-entropy in nats/token; train = mean over the last log window; "
        "val = the last evaluation; tokens/s = median over the logged windows after the first.\n\n";
  md += t.str() + "\n![training loss](loss.svg)\n\n![validation loss](val_loss.svg)\n";
  write_file_atomic((fs::path(out) / "report.md").string(), md, Durability::Fsync);
  return md;
}

}  // namespace nibble
