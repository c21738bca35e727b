// nibble analyze stats: heatmaps of the --stats-every log (see analyze.hpp).
#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/report/metrics.hpp"
#include "nibble/report/svg_plot.hpp"
#include "nibble/study/analyze.hpp"

namespace nibble {
namespace fs = std::filesystem;

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
  report::PlotOptions o;
  o.title = "anisotropy over training (mean over layers)";
  o.x_label = "step";
  o.y_label = "value";
  report::write_line_plot((fs::path(out) / "over_steps.svg").string(), means, o);
  md += "![mean over layers](over_steps.svg)\n";
  write_file_atomic((fs::path(out) / "results.md").string(), md, Durability::Fsync);
  Json j = Json::object();
  j["panels"] = panels_json;
  return j;
}

}  // namespace nibble
