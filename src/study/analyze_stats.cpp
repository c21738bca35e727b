// nibble analyze stats: heatmaps of the --stats-every log (see analyze.hpp).
#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/report/markdown.hpp"
#include "nibble/report/metrics.hpp"
#include "nibble/report/svg_plot.hpp"
#include "nibble/study/analyze.hpp"

namespace nibble {
namespace fs = std::filesystem;

namespace {

double key_or_nan(const Json& r, const char* key) {
  return r.contains(key) && !r.at(key).is_null() ? r.at(key).as_double() : NAN;
}

// The mean over layers of one operand's statistics at one step. share_of_top1 is each layer's
// mean-energy share over its top-1 energy share (the fraction of the dominant direction's
// energy that the rank-one mean explains; ≤ 1 since T‖μ‖² ≤ σ₁²), averaged over the layers
// where the top-1 share is positive. NaNs (null in the log) are left out of each mean.
struct OperandSummary {
  double mean_share = 0, top1_share = 0, share_of_top1 = 0, cos_mu_v1 = 0, amax_inflation = 0, block_amax_inflation = 0;
  int layers = 0;
};

OperandSummary summarize(const std::vector<const Json*>& rows) {
  OperandSummary s;
  const auto mean = [&](auto value) {
    double sum = 0;
    int n = 0;
    for (const Json* r : rows) {
      const double v = value(*r);
      if (std::isfinite(v)) sum += v, ++n;
    }
    return n ? sum / n : NAN;
  };
  s.layers = static_cast<int>(rows.size());
  s.mean_share = mean([](const Json& r) { return key_or_nan(r, "mean_energy_share"); });
  s.top1_share = mean([](const Json& r) { return key_or_nan(r, "top1_energy_share"); });
  s.share_of_top1 = mean([](const Json& r) {
    const double t = key_or_nan(r, "top1_energy_share");
    return t > 0 ? key_or_nan(r, "mean_energy_share") / t : NAN;
  });
  s.cos_mu_v1 = mean([](const Json& r) { return key_or_nan(r, "cos_mu_v1"); });
  s.amax_inflation = mean([](const Json& r) { return key_or_nan(r, "amax_inflation"); });
  s.block_amax_inflation = mean([](const Json& r) { return key_or_nan(r, "block_amax_inflation"); });
  return s;
}

Json to_json(const OperandSummary& s) {
  Json j = Json::object();
  j["layers"] = s.layers;
  j["mean_energy_share"] = s.mean_share;
  j["top1_energy_share"] = s.top1_share;
  j["mean_share_of_top1"] = s.share_of_top1;
  j["cos_mu_v1"] = s.cos_mu_v1;
  j["amax_inflation"] = s.amax_inflation;
  j["block_amax_inflation"] = s.block_amax_inflation;
  return j;
}

// Two tables: per step, X's and dY's statistics averaged over layers (appended to `summary`
// as {"step", "x", "dy"}), and X's per layer at the last step — the numbers behind the claim
// that the rank-one mean carries most of the anisotropy and of the extreme magnitudes.
std::string summary_tables(const report::MetricsLog& log, Json& summary) {
  std::map<int64_t, std::vector<const Json*>> x, dy;
  // A (step, layer) logged twice, as runs resumed before the trainer dropped the rows past its
  // checkpoint could leave it: the later row wins, as in the heatmaps.
  const auto put = [](std::vector<const Json*>& rows, const Json& r) {
    for (const Json*& q : rows)
      if (q->at("layer").as_string() == r.at("layer").as_string()) {
        q = &r;
        return;
      }
    rows.push_back(&r);
  };
  for (const Json& r : log.rows) {
    if (!r.contains("gemm") || !r.contains("operand") || !r.contains("step") || !r.contains("layer")) continue;
    const std::string g = r.at("gemm").as_string(), o = r.at("operand").as_string();
    if (g == "fprop" && o == "x") put(x[r.at("step").as_int64()], r);
    if (g == "dgrad" && o == "dy") put(dy[r.at("step").as_int64()], r);
  }
  using report::Align;
  using report::fmt_fixed;
  const auto f3 = [](double v) { return std::isfinite(v) ? fmt_fixed(v, 3) : std::string("—"); };
  report::MarkdownTable t({"step", "X mean share", "X top-1 share", "X mean ÷ top-1", "X cos(μ,v₁)", "X amax infl.",
                           "X block amax infl.", "dY mean share", "dY top-1 share", "dY cos(μ,v₁)"},
                          std::vector<Align>(10, Align::Right));
  for (const auto& [step, rows] : x) {
    const OperandSummary a = summarize(rows);
    const OperandSummary b = dy.count(step) ? summarize(dy.at(step)) : OperandSummary{};
    const bool has_dy = dy.count(step) > 0;
    Json row = Json::object();
    row["step"] = step;
    row["x"] = to_json(a);
    if (has_dy) row["dy"] = to_json(b);
    summary.push_back(row);
    t.add_row({std::to_string(step), f3(a.mean_share), f3(a.top1_share), f3(a.share_of_top1), f3(a.cos_mu_v1),
               f3(a.amax_inflation), f3(a.block_amax_inflation), has_dy ? f3(b.mean_share) : "—",
               has_dy ? f3(b.top1_share) : "—", has_dy ? f3(b.cos_mu_v1) : "—"});
  }
  // What each collection cost the CUDA engine: its layers log their statistics' wall time on
  // their fprop X row; summed per step.
  report::MarkdownTable cost({"step", "layers", "seconds"}, std::vector<Align>(3, Align::Right));
  for (Json& row : summary.as_array()) {
    double sec = 0;
    int n = 0;
    for (const Json* r : x.at(row.at("step").as_int64()))
      if (r->contains("stats_seconds")) sec += r->at("stats_seconds").as_double(), ++n;
    if (n == 0) continue;
    Json c = Json::object();
    c["layers"] = n;
    c["seconds"] = sec;
    row["collection_cost"] = c;
    cost.add_row({std::to_string(row.at("step").as_int64()), std::to_string(n), fmt_fixed(sec, 2)});
  }
  std::string md =
      "## Over training (mean over layers)\n\nShares are fractions of ‖X‖²_F: the rank-one mean's (T‖μ‖²) and "
      "the top singular direction's (σ₁²). \"mean ÷ top-1\" is the part of the dominant direction's energy the "
      "mean explains (per layer, then averaged); amax inflation is max|X| over max|X − 1μᵀ| (whole tensor, and "
      "per quantization block).\n\n" + t.str() + "\n";
  if (!cost.rows().empty())
    md += "## Cost of each collection (CUDA engine, summed over layers)\n\n" + cost.str() + "\n";
  if (x.empty()) return md;
  report::MarkdownTable l({"layer", "X mean share", "X top-1 share", "X mean ÷ top-1", "X cos(μ,v₁)", "X amax infl.",
                           "X block amax infl."},
                          {Align::Left, Align::Right, Align::Right, Align::Right, Align::Right, Align::Right, Align::Right});
  const auto& [last, rows] = *x.rbegin();
  for (const Json* r : rows) {
    const OperandSummary a = summarize({r});
    l.add_row({r->at("layer").as_string(), f3(a.mean_share), f3(a.top1_share), f3(a.share_of_top1), f3(a.cos_mu_v1),
               f3(a.amax_inflation), f3(a.block_amax_inflation)});
  }
  return md + "## X per layer at step " + std::to_string(last) + "\n\n" + l.str() + "\n";
}

}  // namespace

Json analyze_stats_log(const std::string& run_dir, const std::string& out) {
  const std::string path = (fs::path(run_dir) / "stats.jsonl").string();
  if (!fs::exists(path)) fail(run_dir, ": no stats.jsonl (train with --stats-every N)");
  const report::MetricsLog log = report::read_metrics_jsonl(path);
  fs::create_directories(out);
  std::string md = "# Anisotropy over training: " + run_dir + "\n\nFrom `stats.jsonl` (the trainer's --stats-every log).\n\n";
  struct Panel {
    const char* gemm;
    const char* operand;
    const char* key;
    const char* title;
  };
  const Panel panels[] = {
      {"fprop", "x", "mean_energy_share", "mean-energy share of X"},
      {"fprop", "x", "top1_energy_share", "top-1 energy share of X"},
      {"fprop", "x", "cos_mu_v1", "|cos(μ, v₁)| of X"},
      {"fprop", "x", "amax_inflation", "amax inflation of X"},
      {"fprop", "x", "block_amax_inflation", "block amax inflation of X"},
      {"dgrad", "dy", "mean_energy_share", "mean-energy share of dY"},
      {"dgrad", "dy", "block_amax_inflation", "block amax inflation of dY"},
  };
  std::vector<report::Series> means;
  Json panels_json = Json::array();
  for (const Panel& p : panels) {
    std::vector<std::string> layers;
    std::set<int64_t> steps_set;
    std::map<std::string, std::map<int64_t, double>> v;
    for (const Json& r : log.rows) {
      if (!r.contains("gemm") || r.at("gemm").as_string() != p.gemm || r.at("operand").as_string() != p.operand ||
          !r.contains(p.key) || r.at(p.key).is_null())
        continue;
      const std::string layer = r.at("layer").as_string();
      const int64_t step = r.at("step").as_int64();
      if (!v.count(layer)) layers.push_back(layer);
      v[layer][step] = r.at(p.key).as_double();
      steps_set.insert(step);
    }
    if (layers.empty()) continue;
    const std::vector<int64_t> steps(steps_set.begin(), steps_set.end());
    std::vector<std::string> cols;
    for (int64_t s : steps) cols.push_back(std::to_string(s));
    std::vector<double> values;
    std::vector<double> mean_y(steps.size(), 0.0);
    for (const std::string& l : layers)
      for (size_t i = 0; i < steps.size(); ++i) {
        const double x = v[l].count(steps[i]) ? v[l][steps[i]] : NAN;
        values.push_back(x);
        mean_y[i] += x / static_cast<double>(layers.size());
      }
    Json pj = Json::object();
    pj["gemm"] = p.gemm;
    pj["operand"] = p.operand;
    pj["key"] = p.key;
    Json lj = Json::array(), sj = Json::array(), vj = Json::array();
    for (const std::string& l : layers) lj.push_back(l);
    for (int64_t s2 : steps) sj.push_back(s2);
    for (double x : values) vj.push_back(x);
    pj["layers"] = lj;
    pj["steps"] = sj;
    pj["values"] = vj;
    panels_json.push_back(pj);
    report::HeatmapOptions ho;
    ho.title = p.title;
    ho.x_label = "step";
    ho.y_label = "layer";
    ho.colorbar_label = p.key;
    ho.show_values = steps.size() <= 12;
    const std::string file = std::string(p.operand) + "_" + p.key + ".svg";
    report::write_heatmap((fs::path(out) / file).string(), layers, cols, values, ho);
    md += "## " + std::string(p.title) + "\n\n![" + p.title + "](" + file + ")\n\n";
    std::vector<double> xs(steps.begin(), steps.end());
    means.push_back({std::string(p.title) + " (mean over layers)", xs, mean_y});
  }
  if (means.empty()) fail(path, ": no fprop/x or dgrad/dy rows with anisotropy statistics");
  Json summary = Json::array();
  md += summary_tables(log, summary);
  report::PlotOptions o;
  o.title = "anisotropy over training (mean over layers)";
  o.x_label = "step";
  o.y_label = "value";
  report::write_line_plot((fs::path(out) / "over_steps.svg").string(), means, o);
  md += "![mean over layers](over_steps.svg)\n";
  write_file_atomic((fs::path(out) / "results.md").string(), md, Durability::Fsync);
  Json j = Json::object();
  j["panels"] = panels_json;
  j["over_steps"] = summary;
  return j;
}

}  // namespace nibble
