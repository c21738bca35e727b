// nibble sweep (see sweep.hpp): the runs are ordinary training runs; this file decides which to
// start, resume or keep, and compares them.
#include "nibble/study/sweep.hpp"

#include <algorithm>
#include <map>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <utility>

#include "nibble/dist/comm.hpp"
#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/report/markdown.hpp"
#include "nibble/report/metrics.hpp"
#include "nibble/report/svg_plot.hpp"
#include "nibble/train/checkpoint.hpp"
#include "nibble/train/trainer.hpp"

namespace nibble {
namespace fs = std::filesystem;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string recipe_name(const std::string& spec) { return Recipe::resolve(spec).name; }

// A run is finished when its final checkpoint holds the configured number of steps.
bool run_finished(const std::string& dir, int64_t steps) {
  const fs::path f = fs::path(dir) / "final" / "trainer.json";
  if (!fs::exists(f)) return false;
  return Json::parse(read_file(f.string()), f.string()).at("step").as_int64() == steps;
}

int64_t resumable_step(const std::string& dir) {
  if (!fs::exists(fs::path(dir) / "latest")) return -1;
  const std::string ck = resolve_checkpoint_dir(dir);
  const fs::path t = fs::path(ck) / "trainer.json";
  return Json::parse(read_file(t.string()), t.string()).at("step").as_int64();
}

double last_finite(const std::vector<double>& v) {
  for (auto it = v.rbegin(); it != v.rend(); ++it)
    if (std::isfinite(*it)) return *it;
  return kNaN;
}

double median(std::vector<double> v) {
  v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return !std::isfinite(x) || x <= 0; }), v.end());
  if (v.empty()) return kNaN;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

double tail_mean(const std::vector<double>& step, const std::vector<double>& loss_avg, double fraction) {
  if (step.empty() || step.size() != loss_avg.size()) return kNaN;
  const double last = step.back(), from = last - fraction * last;
  double sum = 0, weight = 0, prev = 0;
  for (size_t i = 0; i < step.size(); ++i) {
    const double begin = prev;
    prev = step[i];
    if (!std::isfinite(loss_avg[i]) || step[i] <= begin) continue;  // an evaluation-only row (QAT's step 0)
    if (step[i] <= from && i + 1 < step.size()) continue;
    sum += loss_avg[i] * (step[i] - begin);
    weight += step[i] - begin;
  }
  return weight > 0 ? sum / weight : kNaN;
}

std::string short_hardware(const std::string& device) {
  std::string s = device.substr(0, std::min(device.find(" ("), device.find(',')));
  const std::string vendor = "NVIDIA ";
  if (s.rfind(vendor, 0) == 0) s = s.substr(vendor.size());
  return s;
}

double paired_step_time(const std::vector<SweepRun>& runs, const std::string& recipe) {
  const bool any_known = std::any_of(runs.begin(), runs.end(), [](const SweepRun& r) { return !r.hardware.empty(); });
  double sum = 0;
  int n = 0;
  for (const SweepRun& r : runs) {
    if (r.recipe != recipe || !(r.tokens_per_s > 0)) continue;
    if (r.hardware.empty() && any_known) continue;  // it may have run on any of the sweep's machines
    double b = 0;
    int nb = 0;
    for (const SweepRun& x : runs)
      if (x.recipe == "bf16" && x.hardware == r.hardware && x.tokens_per_s > 0) {
        b += x.tokens_per_s;
        ++nb;
      }
    if (nb == 0) continue;
    sum += (b / nb) / r.tokens_per_s;
    ++n;
  }
  return n > 0 ? sum / n : kNaN;
}

namespace {

// read_run on a log already read (summarize reads an unfinished run's log once, to see whether
// it has any rows, and builds the run from that).
SweepRun run_from_log(const std::string& recipe, uint64_t seed, const std::string& dir, const report::MetricsLog& log) {
  SweepRun r;
  r.recipe = recipe;
  r.seed = seed;
  r.dir = dir;
  const fs::path config = fs::path(dir) / "config.json";
  if (fs::exists(config)) {
    const Json c = Json::parse(read_file(config.string()), config.string());
    if (c.contains("device") && c.at("device").is_string()) r.device = c.at("device").as_string();
  }
  const fs::path trainer = fs::path(dir) / "final" / "trainer.json";
  if (fs::exists(trainer)) {
    const Json t = Json::parse(read_file(trainer.string()), trainer.string());
    if (t.contains("device_name") && t.at("device_name").is_string()) r.hardware = short_hardware(t.at("device_name").as_string());
  }
  const std::vector<double> step = log.column("step"), tokens = log.column("tokens"), train = log.column("loss_avg"),
                            val = log.column("val_loss"), tps = log.column("tokens_per_s");
  if (step.empty()) fail(dir, "/metrics.jsonl: no rows");
  r.steps = static_cast<int64_t>(step.back());
  r.tokens = tokens.back();
  r.final_train_loss = tail_mean(step, train, 0.05);
  r.final_val_loss = last_finite(val);
  // the first window holds the warm-up (allocation, plan selection): leave it out
  r.tokens_per_s = median(std::vector<double>(tps.begin() + (tps.size() > 1 ? 1 : 0), tps.end()));
  r.curve_tokens = tokens;
  r.curve_train = train;
  for (size_t i = 0; i < val.size(); ++i)
    if (std::isfinite(val[i])) {
      r.eval_tokens.push_back(tokens[i]);
      r.eval_val.push_back(val[i]);
    }
  return r;
}

}  // namespace

SweepRun read_run(const std::string& recipe, uint64_t seed, const std::string& dir) {
  return run_from_log(recipe, seed, dir, report::read_metrics_jsonl((fs::path(dir) / "metrics.jsonl").string()));
}

namespace {

// "H100 80GB HBM3 + H200" (— when no run recorded its hardware)
std::string hardware_list(const std::vector<std::string>& hw) {
  std::string out;
  for (const std::string& h : hw) out += (out.empty() ? "" : " + ") + (h.empty() ? std::string("?") : h);
  return hw.empty() || (hw.size() == 1 && hw[0].empty()) ? "—" : out;
}

// training loss per log window, or validation loss per evaluation (`eval`)
using Curve = SweepCurve;
Curve curve_of(const SweepRun& r, bool eval) {
  return eval ? Curve{r.eval_tokens, r.eval_val} : Curve{r.curve_tokens, r.curve_train};
}

// f(the curves' values at x, in the curves' order) at every x that all the curves have, in
// increasing x. Rows of different runs do not line up by index: a run stopped by a time limit
// logs an extra row at its stop step (and resumes on the usual schedule), so curves are matched
// by their token counts (exact: steps × tokens per step).
template <class F>
Curve combine(const std::vector<Curve>& cs, F f) {
  std::map<double, std::vector<double>> at;
  for (size_t c = 0; c < cs.size(); ++c)
    for (size_t i = 0; i < cs[c].x.size() && i < cs[c].y.size(); ++i) {
      std::vector<double>& v = at[cs[c].x[i]];
      if (std::isfinite(cs[c].y[i]) && v.size() == c) v.push_back(cs[c].y[i]);  // a curve's first value at x
    }
  Curve out;
  for (const auto& [x, v] : at)
    if (!cs.empty() && v.size() == cs.size()) {
      out.x.push_back(x);
      out.y.push_back(f(v));
    }
  return out;
}

// The mean over runs (seeds) of their curves.
Curve mean_curve(const std::vector<const SweepRun*>& runs, bool eval) {
  std::vector<Curve> cs;
  for (const SweepRun* r : runs) cs.push_back(curve_of(*r, eval));
  return combine(cs, [](const std::vector<double>& v) {
    double m = 0;
    for (double y : v) m += y / static_cast<double>(v.size());
    return m;
  });
}

// The (recipe run, bf16 run) pairs of `recipe` that share a seed: what every gap is taken over
// (a seed's runs share the initialization and the batches).
std::vector<std::pair<const SweepRun*, const SweepRun*>> seed_pairs(const std::vector<SweepRun>& runs,
                                                                    const std::string& recipe) {
  std::vector<std::pair<const SweepRun*, const SweepRun*>> pairs;
  for (const SweepRun& r : runs)
    for (const SweepRun& b : runs)
      if (r.recipe == recipe && b.recipe == "bf16" && b.seed == r.seed) pairs.emplace_back(&r, &b);
  return pairs;
}

// The paired validation gap at the last evaluations (up to four): whether a recipe's place
// holds over the end of training or is one evaluation's noise.
std::string late_gap_table(const SweepResult& r) {
  std::vector<std::pair<std::string, Curve>> rows;
  for (const SweepRecipe& s : r.recipes) {
    if (s.recipe == "bf16" || s.gap_seeds == 0) continue;
    rows.emplace_back(s.recipe, paired_gap_curve(r.runs, s.recipe, true));
  }
  // the last (up to four) evaluations every row has
  std::vector<Curve> cs;
  for (const auto& row : rows) cs.push_back(row.second);
  const Curve common = combine(cs, [](const std::vector<double>&) { return 0.0; });
  const size_t n = common.x.size();
  if (rows.empty() || n == 0) return "";
  const size_t first = n > 4 ? n - 4 : 0;
  std::vector<std::string> header = {"recipe"};
  for (size_t k = first; k < n; ++k) header.push_back(report::fmt_si(common.x[k]) + " tokens");
  std::vector<report::Align> align(header.size(), report::Align::Right);
  align[0] = report::Align::Left;
  report::MarkdownTable t(header, align);
  for (const auto& [name, gap] : rows) {
    std::vector<std::string> cells = {name};
    for (size_t k = first; k < n; ++k) {
      const size_t i = static_cast<size_t>(std::lower_bound(gap.x.begin(), gap.x.end(), common.x[k]) - gap.x.begin());
      cells.push_back((gap.y[i] >= 0 ? "+" : "") + report::fmt_fixed(gap.y[i], 2) + "%");
    }
    t.add_row(cells);
  }
  return "Validation gap to bf16 (paired by seed, mean over the gap seeds) at the last evaluations:\n\n" + t.str() +
         "\n";
}

}  // namespace

SweepCurve paired_gap_curve(const std::vector<SweepRun>& runs, const std::string& recipe, bool eval) {
  const auto pairs = seed_pairs(runs, recipe);
  if (pairs.empty()) return {};
  std::vector<Curve> cs;  // recipe, bf16, recipe, bf16, ...
  for (const auto& [r, b] : pairs) {
    cs.push_back(curve_of(*r, eval));
    cs.push_back(curve_of(*b, eval));
  }
  return combine(cs, [](const std::vector<double>& v) {
    double g = 0;
    for (size_t k = 0; k + 1 < v.size(); k += 2) g += 100.0 * (v[k] - v[k + 1]) / v[k + 1] / static_cast<double>(v.size() / 2);
    return g;
  });
}

std::string sweep_run_dir(const std::string& out, const std::string& recipe, uint64_t seed) {
  std::string safe = recipe;
  for (char& c : safe)
    if (c == '/' || c == '\\' || c == ' ') c = '_';
  return (fs::path(out) / "runs" / (safe + "-seed" + std::to_string(seed))).string();
}

Json SweepResult::to_json() const {
  Json j = Json::object();
  j["complete"] = complete;
  const auto runs_json = [](const std::vector<SweepRun>& list) {
    Json rs = Json::array();
    for (const SweepRun& r : list) {
      Json x = Json::object();
      x["recipe"] = r.recipe;
      x["seed"] = r.seed;
      x["dir"] = r.dir;
      x["steps"] = r.steps;
      x["tokens"] = r.tokens;
      x["final_train_loss"] = r.final_train_loss;  // of an unfinished run: its last 5% so far
      x["final_val_loss"] = r.final_val_loss;      // of an unfinished run: its last evaluation
      x["tokens_per_s"] = r.tokens_per_s;
      x["hardware"] = r.hardware;
      rs.push_back(x);
    }
    return rs;
  };
  j["runs"] = runs_json(runs);
  j["unfinished"] = runs_json(unfinished);
  Json ns = Json::array();
  for (const auto& [recipe, seed] : not_started) {
    Json x = Json::object();
    x["recipe"] = recipe;
    x["seed"] = seed;
    ns.push_back(x);
  }
  j["not_started"] = ns;
  Json rc = Json::array();
  for (const SweepRecipe& r : recipes) {
    Json x = Json::object();
    x["recipe"] = r.recipe;
    x["seeds"] = r.seeds;
    x["train_loss_mean"] = r.train_mean;
    x["train_loss_spread"] = r.train_spread;
    x["val_loss_mean"] = r.val_mean;
    x["val_loss_spread"] = r.val_spread;
    x["val_gap_to_bf16_pct"] = r.val_gap_pct;
    x["val_gap_spread_pct"] = r.val_gap_spread;
    x["train_gap_to_bf16_pct"] = r.train_gap_pct;
    x["gap_seeds"] = r.gap_seeds;
    x["tokens_per_s"] = r.tokens_per_s;
    x["step_time_vs_bf16"] = r.step_time_vs_bf16;
    Json hw = Json::array();
    for (const std::string& h : r.hardware) hw.push_back(h);
    x["hardware"] = hw;
    rc.push_back(x);
  }
  j["recipes"] = rc;
  return j;
}

namespace {

// The recipe's gaps to the bf16 run of the same seed (see SweepRecipe), over the seed pairs
// whose final evaluation exists.
void pair_gaps_with_bf16(const std::vector<SweepRun>& runs, SweepRecipe& s) {
  double val_sum = 0, train_sum = 0, gmin = INFINITY, gmax = -INFINITY;
  int n = 0;
  for (const auto& [r, b] : seed_pairs(runs, s.recipe)) {
    const double g = 100.0 * (r->final_val_loss - b->final_val_loss) / b->final_val_loss;
    if (!std::isfinite(g)) continue;
    val_sum += g;
    train_sum += 100.0 * (r->final_train_loss - b->final_train_loss) / b->final_train_loss;
    gmin = std::min(gmin, g);
    gmax = std::max(gmax, g);
    ++n;
  }
  s.gap_seeds = n;
  s.val_gap_pct = n ? val_sum / n : kNaN;
  s.train_gap_pct = n ? train_sum / n : kNaN;
  s.val_gap_spread = n ? gmax - gmin : kNaN;
}

// What run_sweep and summarize_sweep both need of a configuration; fails naming the problem.
// Returns the recipes' names.
std::vector<std::string> check_sweep_config(const SweepConfig& cfg) {
  if (cfg.recipes.empty()) fail("sweep: no recipes");
  if (cfg.seeds.empty()) fail("sweep: no seeds");
  if (cfg.out.empty()) fail("sweep: no output directory");
  std::vector<std::string> names;
  for (const std::string& spec : cfg.recipes) {
    names.push_back(recipe_name(spec));  // unknown recipes fail before any training
    if (std::count(names.begin(), names.end(), names.back()) > 1)
      fail("sweep: recipe '", names.back(), "' is listed twice");
  }
  for (auto it = cfg.seeds.begin(); it != cfg.seeds.end(); ++it)  // a repeated seed pairs its runs twice
    if (std::find(cfg.seeds.begin(), it, *it) != it) fail("sweep: seed ", *it, " is listed twice");
  return names;
}

// summarize_sweep without the configuration check (run_sweep has made it).
SweepResult summarize(const SweepConfig& cfg) {
  SweepResult res;
  res.complete = true;
  for (const std::string& spec : cfg.recipes) {
    const std::string name = recipe_name(spec);
    for (uint64_t seed : cfg.seeds) {
      const std::string dir = sweep_run_dir(cfg.out, name, seed);
      if (!run_finished(dir, cfg.base.steps)) {
        res.complete = false;
        // one that has logged (a run killed before its first log window has no rows)
        const fs::path m = fs::path(dir) / "metrics.jsonl";
        report::MetricsLog log;
        if (fs::exists(m)) log = report::read_metrics_jsonl(m.string());
        if (log.rows.empty())
          res.not_started.emplace_back(name, seed);
        else
          res.unfinished.push_back(run_from_log(name, seed, dir, log));
        continue;
      }
      res.runs.push_back(read_run(name, seed, dir));
    }
  }
  for (const std::string& spec : cfg.recipes) {
    const std::string name = recipe_name(spec);
    SweepRecipe s;
    s.recipe = name;
    double tmin = INFINITY, tmax = -INFINITY, vmin = INFINITY, vmax = -INFINITY;
    for (const SweepRun& r : res.runs) {
      if (r.recipe != name) continue;
      ++s.seeds;
      s.train_mean += r.final_train_loss;
      s.val_mean += r.final_val_loss;
      s.tokens_per_s += r.tokens_per_s;
      if (std::find(s.hardware.begin(), s.hardware.end(), r.hardware) == s.hardware.end()) s.hardware.push_back(r.hardware);
      tmin = std::min(tmin, r.final_train_loss);
      tmax = std::max(tmax, r.final_train_loss);
      vmin = std::min(vmin, r.final_val_loss);
      vmax = std::max(vmax, r.final_val_loss);
    }
    if (s.seeds == 0) continue;
    s.train_mean /= s.seeds;
    s.val_mean /= s.seeds;
    s.tokens_per_s /= s.seeds;
    s.train_spread = tmax - tmin;
    s.val_spread = vmax - vmin;
    res.recipes.push_back(s);
  }
  for (SweepRecipe& s : res.recipes) {
    pair_gaps_with_bf16(res.runs, s);
    s.step_time_vs_bf16 = paired_step_time(res.runs, s.recipe);
  }
  return res;
}

}  // namespace

SweepResult summarize_sweep(const SweepConfig& cfg) {
  check_sweep_config(cfg);
  return summarize(cfg);
}

void write_sweep_report(const SweepConfig& cfg, const SweepResult& r) {
  fs::create_directories(cfg.out);
  Json j = r.to_json();
  j["config"] = cfg.base.to_json();
  write_file_atomic((fs::path(cfg.out) / "results.json").string(), j.dump(2) + "\n", Durability::Fsync);

  using report::fmt_fixed;
  using report::fmt_si;
  const TrainConfig& b = cfg.base;
  std::string seeds;
  for (uint64_t s : cfg.seeds) seeds += (seeds.empty() ? "" : ", ") + std::to_string(s);
  // the device the runs trained on (a summary may be written elsewhere, from copied runs)
  std::string device;
  for (const SweepRun& run : r.runs)
    if (!run.device.empty() && device.find("`" + run.device + "`") == std::string::npos)
      device += (device.empty() ? "" : ", ") + ("`" + run.device + "`");
  if (device.empty()) device = "`" + b.device + "`";
  std::string md = "# Recipe sweep\n\n";
  md += "Model `" + b.model.name + "`, " + std::to_string(b.steps) + " steps × " + std::to_string(b.batch) + " × " +
        std::to_string(b.seq) + " tokens = " + fmt_si(static_cast<double>(b.steps * b.tokens_per_step())) +
        " tokens per run, data `" + (b.data_dir.empty() ? (b.text_file.empty() ? "embedded corpus" : b.text_file) : b.data_dir) +
        "`, seeds " + seeds + ", device " + device + ". Every recipe starts from the same initialization and reads " +
        "the same batches (both follow the seed). Loss: cross-entropy in nats/token; train = mean over the last 5% of " +
        "the steps; val = the final evaluation. ± = max − min over seeds. Gap = (recipe − bf16) / bf16, taken per " +
        "seed against the bf16 run of the same seed and averaged over the seeds both have (gap seeds); its ± is the " +
        "max − min of those paired gaps. tokens/s: the mean over seeds; step time vs bf16: each run against the " +
        "bf16 runs on the same hardware (— when there are none).\n\n";
  if (!r.complete) {
    const size_t all = r.runs.size() + r.unfinished.size() + r.not_started.size();
    md += "**Incomplete:** " + std::to_string(r.runs.size()) + " of " + std::to_string(all) +
          " runs have finished; the table shows those.";
    if (!r.unfinished.empty())
      md += " " + std::to_string(r.unfinished.size()) + " logged but stopped short (compared at their evaluations " +
            "under \"Unfinished runs\").";
    if (!r.not_started.empty()) {
      md += " Not started:";
      for (size_t i = 0; i < r.not_started.size(); ++i)
        md += std::string(i ? ", " : " ") + r.not_started[i].first + " seed " + std::to_string(r.not_started[i].second);
      md += ".";
    }
    md += "\n\n";
  }
  report::MarkdownTable t({"recipe", "seeds", "train loss", "±", "val loss", "±", "val gap to bf16", "±",
                           "gap seeds", "train gap", "tokens/s", "step time vs bf16", "hardware"},
                          {report::Align::Left, report::Align::Right, report::Align::Right, report::Align::Right,
                           report::Align::Right, report::Align::Right, report::Align::Right, report::Align::Right,
                           report::Align::Right, report::Align::Right, report::Align::Right, report::Align::Right,
                           report::Align::Left});
  const auto pct = [](double v, int digits) {
    return std::isfinite(v) ? (v >= 0 ? "+" : "") + report::fmt_fixed(v, digits) + "%" : std::string("—");
  };
  for (const SweepRecipe& s : r.recipes) {
    const bool multi = s.seeds > 1;
    t.add_row({s.recipe, std::to_string(s.seeds), fmt_fixed(s.train_mean, 4), multi ? fmt_fixed(s.train_spread, 4) : "—",
               fmt_fixed(s.val_mean, 4), multi ? fmt_fixed(s.val_spread, 4) : "—",
               pct(s.val_gap_pct, 2), s.gap_seeds > 1 ? fmt_fixed(s.val_gap_spread, 2) + " pp" : "—",
               std::to_string(s.gap_seeds), pct(s.train_gap_pct, 2),
               fmt_si(s.tokens_per_s), std::isfinite(s.step_time_vs_bf16) ? fmt_fixed(s.step_time_vs_bf16, 2) + "×" : "—",
               hardware_list(s.hardware)});
  }
  md += t.str() + "\n" + late_gap_table(r) + "![training loss](loss.svg)\n\n![validation loss](val_loss.svg)\n\n";

  // Plots: per recipe the mean over its seeds, at the token counts all of them logged.
  std::vector<report::Series> train_s, val_s, gap_s;
  for (const SweepRecipe& s : r.recipes) {
    std::vector<const SweepRun*> runs;
    for (const SweepRun& x : r.runs)
      if (x.recipe == s.recipe) runs.push_back(&x);
    const Curve tr = mean_curve(runs, false), va = mean_curve(runs, true);
    train_s.push_back({s.recipe, tr.x, tr.y});
    val_s.push_back({s.recipe, va.x, va.y});
    if (s.recipe != "bf16" && s.gap_seeds > 0) {
      const Curve g = paired_gap_curve(r.runs, s.recipe, false);
      gap_s.push_back({s.recipe, g.x, g.y});
    }
  }
  // an unfinished run's curves as far as they go, one seed each, named as such
  for (const SweepRun& u : r.unfinished) {
    const std::string name = u.recipe + " seed " + std::to_string(u.seed) + " (unfinished)";
    train_s.push_back({name, u.curve_tokens, u.curve_train});
    val_s.push_back({name, u.eval_tokens, u.eval_val});
  }
  if (!gap_s.empty()) md += "![gap to bf16](gap.svg)\n";
  if (!r.unfinished.empty()) md += "\n" + unfinished_runs_section(cfg, r);
  report::PlotOptions o;
  o.x_label = "tokens";
  o.y_label = "cross-entropy (nats/token)";
  o.title = "training loss (mean over each log window) · " + b.model.name;
  o.smooth = 5;
  report::write_line_plot((fs::path(cfg.out) / "loss.svg").string(), train_s, o);
  o.title = "validation loss · " + b.model.name;
  o.smooth = 0;
  report::write_line_plot((fs::path(cfg.out) / "val_loss.svg").string(), val_s, o);
  if (!gap_s.empty()) {
    o.title = "training-loss gap to bf16 · " + b.model.name;
    o.y_label = "gap to bf16 (%)";
    o.smooth = 5;
    report::write_line_plot((fs::path(cfg.out) / "gap.svg").string(), gap_s, o);
  }
  write_file_atomic((fs::path(cfg.out) / "results.md").string(), md, Durability::Fsync);
}

SweepResult run_sweep(const SweepConfig& cfg, const SweepOptions& opts) {
  const std::vector<std::string> names = check_sweep_config(cfg);
  fs::create_directories(cfg.out);
  // Under nibble launch every rank runs the sweep (each run is data-parallel); rank 0 alone
  // reports and writes the summary.
  const bool lead = DistEnv::from_environment().rank == 0;
  const bool quiet = opts.quiet || !lead;
  int64_t budget = opts.stop_after_steps;
  const auto t_begin = std::chrono::steady_clock::now();
  auto seconds_left = [&] {
    return opts.stop_after_seconds - std::chrono::duration<double>(std::chrono::steady_clock::now() - t_begin).count();
  };
  const size_t total = cfg.recipes.size() * cfg.seeds.size();
  bool started = false;
  size_t index = 0;
  for (size_t ri = 0; ri < cfg.recipes.size(); ++ri) {
    for (uint64_t seed : cfg.seeds) {
      ++index;
      const std::string dir = sweep_run_dir(cfg.out, names[ri], seed);
      if (run_finished(dir, cfg.base.steps)) {
        if (!quiet) std::printf("sweep [%zu/%zu] %s seed %llu: finished earlier, kept\n", index, total, names[ri].c_str(),
                                     static_cast<unsigned long long>(seed));
        continue;
      }
      // each invocation makes progress: the time limit is checked once a run has started
      if (budget == 0 || (started && opts.stop_after_seconds >= 0 && seconds_left() <= 0)) return summarize(cfg);
      started = true;
      TrainConfig c = cfg.base;
      c.recipe = Recipe::resolve(cfg.recipes[ri]);
      c.seed = seed;
      c.out = dir;
      TrainOptions o;
      o.quiet = true;
      const int64_t start = resumable_step(dir);
      if (start >= 0) o.resume = dir;
      if (budget > 0) o.stop_after = budget;
      if (opts.stop_after_seconds >= 0) o.stop_after_seconds = std::max(0.0, seconds_left());
      if (!quiet) {
        std::printf("sweep [%zu/%zu] %s seed %llu: %s\n", index, total, names[ri].c_str(),
                    static_cast<unsigned long long>(seed),
                    start >= 0 ? ("resuming at step " + std::to_string(start)).c_str() : "training");
        std::fflush(stdout);
      }
      const TrainResult tr = train(c, o);
      if (budget > 0) budget = std::max<int64_t>(0, budget - (tr.steps - std::max<int64_t>(start, 0)));
      if (!quiet && !tr.stopped_early)
        std::printf("  val loss %.4f, %.0f tokens/s, %.0f s\n", tr.val_loss, tr.tokens_per_s, tr.seconds);
      if (tr.stopped_early) return summarize(cfg);
    }
  }
  SweepResult r = summarize(cfg);
  if (lead) write_sweep_report(cfg, r);
  return r;
}

}  // namespace nibble
