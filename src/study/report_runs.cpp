// nibble report: a table and loss plots for any set of runs.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>

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

struct LoadedRun {
  TrainConfig config;
  SweepRun run;
  std::string recipe;  // the recipe's name, or a QAT run's settings
};

// A QAT run's qat.json as a short label: "QAT 2-bit seq + WinQ".
std::string qat_label(const Json& q) {
  auto g_fmt = [](double x) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", x);
    return std::string(b);
  };
  std::string s = "QAT " + g_fmt(q.at("bits").as_double()) + "-bit " + q.at("quantizer").as_string();
  if (const Json* g = q.find("group_size"); g && g->as_int64() > 0) s += " g" + std::to_string(g->as_int64());
  if (const Json* a = q.find("act_bits"); a && a->as_int64() > 0) s += " A" + std::to_string(a->as_int64());
  if (q.at("winq").as_bool()) s += " + WinQ";
  if (const Json* m = q.find("scale_lr_mult"); m && m->as_double() != 1.0) s += ", α lr ×" + g_fmt(m->as_double());
  return s;
}

LoadedRun load_run(const fs::path& d) {
  const std::string cfg_path = (d / "config.json").string();
  LoadedRun l;
  l.config = TrainConfig::from_json(Json::parse(read_file(cfg_path), cfg_path), cfg_path);
  l.run = read_run(l.config.recipe.name, l.config.seed, d.string());
  l.recipe = l.config.recipe.name;
  const fs::path qat = d / "qat.json";
  if (fs::exists(qat)) l.recipe = qat_label(Json::parse(read_file(qat.string()), qat.string()));
  return l;
}

}  // namespace

double first_reach(const std::vector<double>& x, const std::vector<double>& y, double target) {
  for (size_t i = 0; i < y.size() && i < x.size(); ++i) {
    if (!(y[i] <= target)) continue;
    if (i == 0 || !(y[i - 1] > y[i])) return x[i];
    return x[i - 1] + (x[i] - x[i - 1]) * (y[i - 1] - target) / (y[i - 1] - y[i]);
  }
  return std::numeric_limits<double>::quiet_NaN();
}

std::string write_runs_report(const std::vector<std::string>& dirs, const std::string& out, const std::string& baseline) {
  if (dirs.empty()) fail("report: no run directories given");
  const std::vector<fs::path> runs = expand(dirs);
  std::vector<std::string> head = {"run", "model", "recipe", "seed", "device", "steps", "tokens", "train loss", "val loss",
                                   "tokens/s"};
  std::vector<report::Align> align = {report::Align::Left,  report::Align::Left,  report::Align::Left,
                                      report::Align::Right, report::Align::Left,  report::Align::Right,
                                      report::Align::Right, report::Align::Right, report::Align::Right,
                                      report::Align::Right};
  double target = std::numeric_limits<double>::quiet_NaN(), base_steps = 0;
  if (!baseline.empty()) {
    if (!is_run(baseline)) fail(baseline, ": the baseline is not a training run (config.json + metrics.jsonl)");
    const LoadedRun b = load_run(baseline);
    target = b.run.final_val_loss;
    if (!std::isfinite(target)) fail(baseline, ": the baseline has no validation loss");
    base_steps = static_cast<double>(b.run.steps);
    head.push_back("steps to baseline val");
    head.push_back("speed-up");
    align.push_back(report::Align::Right);
    align.push_back(report::Align::Right);
  }
  report::MarkdownTable t(head, align);
  std::vector<report::Series> train_s, val_s;
  bool any_unfinished = false;
  for (const fs::path& d : runs) {
    const LoadedRun l = load_run(d);
    const TrainConfig& c = l.config;
    const SweepRun& r = l.run;
    const std::string label = d.filename().string();
    // a run that stopped short of its configured steps: its "final" losses are from mid-schedule
    const bool unfinished = r.steps < c.steps;
    any_unfinished = any_unfinished || unfinished;
    std::vector<std::string> row = {label, c.model.name, l.recipe, std::to_string(c.seed), c.device,
                                    std::to_string(r.steps) + (unfinished ? " of " + std::to_string(c.steps) : ""),
                                    report::fmt_si(r.tokens),
                                    report::fmt_fixed(r.final_train_loss, 4),
                                    std::isfinite(r.final_val_loss) ? report::fmt_fixed(r.final_val_loss, 4) : "—",
                                    report::fmt_si(r.tokens_per_s)};
    if (!baseline.empty()) {
      // evaluations in steps (tokens ÷ tokens per step)
      std::vector<double> steps;
      const double per_step = static_cast<double>(c.tokens_per_step());
      for (double tok : r.eval_tokens) steps.push_back(tok / per_step);
      const double reach = first_reach(steps, r.eval_val, target);
      row.push_back(std::isfinite(reach) ? report::fmt_fixed(reach, 0) : "—");
      row.push_back(std::isfinite(reach) && reach > 0 ? report::fmt_fixed(base_steps / reach, 2) + "×" : "—");
    }
    t.add_row(row);
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
  md += std::to_string(runs.size()) + " runs. Loss: cross-entropy in nats/token; train = mean over the last 5% of the steps; "
        "val = the last evaluation; tokens/s = median over the logged windows after the first.";
  if (!baseline.empty())
    md += " Steps to baseline val: the first step at which a run's validation loss reaches the final one of `" +
          baseline + "` (" + report::fmt_fixed(target, 4) + "), linear between evaluations; speed-up = the baseline's " +
          report::fmt_fixed(base_steps, 0) + " steps ÷ that.";
  if (any_unfinished)
    md += " Steps \"N of M\": the run stopped after N of its M configured steps (a time limit, or a lost machine), "
          "so its losses are from the middle of its learning-rate schedule, not comparable with finished runs' final "
          "ones; compare it at equal tokens on the plots (or in a sweep report's \"Unfinished runs\").";
  md += "\n\n";
  md += t.str() + "\n![training loss](loss.svg)\n\n![validation loss](val_loss.svg)\n";
  write_file_atomic((fs::path(out) / "report.md").string(), md, Durability::Fsync);
  return md;
}

}  // namespace nibble
