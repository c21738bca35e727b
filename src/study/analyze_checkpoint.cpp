// nibble analyze --checkpoint (see analyze.hpp).
#include <cmath>
#include <filesystem>
#include <map>

#include "nibble/data/corpus.hpp"
#include "nibble/data/dataset.hpp"
#include "nibble/data/loader.hpp"
#include "nibble/data/tokenizer.hpp"
#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/nn/linear.hpp"
#include "nibble/nn/model.hpp"
#include "nibble/quant/pipeline.hpp"
#include "nibble/quant/stats.hpp"
#include "nibble/report/markdown.hpp"
#include "nibble/report/svg_plot.hpp"
#include "nibble/study/analyze.hpp"
#include "nibble/train/checkpoint.hpp"
#include "nibble/train/engine.hpp"
#include "nibble/train/train_config.hpp"
#include "study/group_means.hpp"

namespace nibble {
namespace fs = std::filesystem;

namespace {

struct Captured {
  std::string layer, operand;
  int64_t rows, cols;
  std::vector<float> x;
};

struct Transform {
  const char* name;
  bool center;
  int rht;
  bool spectral;
};
constexpr Transform kTransforms[] = {
    {"none", false, 0, false},        {"rht16", false, 16, false}, {"rht32", false, 32, false},
    {"rht128", false, 128, false},    {"center", true, 0, false},  {"center+rht16", true, 16, false},
    {"spectral", false, 0, true},
};

bool applies(const Transform& t, const Captured& c) {
  if (t.rht && c.cols % t.rht != 0) return false;
  if (t.center && c.operand == "w") return false;      // the mean is over tokens
  if (t.spectral && c.operand != "dy") return false;   // Metis splits the gradient
  return true;
}

}  // namespace

Json analyze_checkpoint(const CheckpointAnalysisConfig& cfg) {
  const std::string ck = resolve_checkpoint_dir(cfg.checkpoint);
  const TrainConfig tc = TrainConfig::from_json(read_checkpoint_config(ck), ck + "/config.json");
  const std::unique_ptr<TrainEngine> m = make_engine(cfg.device, tc.model);
  const Checkpoint c = load_checkpoint(ck, m->params(), false);
  m->set_weights(c.weights.data());
  m->set_recipe(Recipe::preset("bf16"));
  const std::unique_ptr<Tokenizer> tok = make_tokenizer(tc.model.tokenizer);
  const std::string data_dir = !cfg.data_dir.empty() || !cfg.text_file.empty() ? cfg.data_dir : tc.data_dir;
  const std::string text = !cfg.data_dir.empty() || !cfg.text_file.empty() ? cfg.text_file : tc.text_file;
  const TokenDataset ds = open_run_data(data_dir, text, *tok, tc.val_fraction);
  if (ds.tokenizer != tc.model.tokenizer) fail("analyze: the data is tokenized with ", ds.tokenizer, ", the model uses ", tc.model.tokenizer);
  const int64_t seq = cfg.seq > 0 ? cfg.seq : tc.seq;
  DataLoader loader(ds.val.empty() ? ds.train : ds.val, cfg.batch, seq, cfg.seed, false);
  const Batch b = loader.next();

  std::vector<Captured> caps;
  m->set_capture([&](const std::string& layer, const std::string& op, const float* d, int64_t rows, int64_t cols) {
    caps.push_back({layer, op, rows, cols, std::vector<float>(d, d + rows * cols)});
  });
  StepContext ctx;
  ctx.seed = cfg.seed;
  m->zero_grad();
  m->forward(b.inputs.data(), b.targets.data(), b.batch_size, b.seq_len, ctx);
  m->backward(ctx);
  m->set_capture(nullptr);

  Json rows = Json::array(), aniso = Json::array();
  for (const Captured& cap : caps) {
    if (cap.operand != "w") {
      Json a = anisotropy_stats(cap.x.data(), cap.rows, cap.cols, 16, 50, cfg.seed).to_json();
      a["layer"] = cap.layer;
      a["operand"] = cap.operand;
      aniso.push_back(a);
    }
    for (Format f : {Format::NVFP4, Format::MXFP4, Format::INT4}) {
      QuantSpec q = QuantSpec::for_format(f);
      if (cap.cols % q.block != 0) continue;
      q.seed = cfg.seed;
      for (const Transform& t : kTransforms) {
        if (!applies(t, cap)) continue;
        TransformSpec ts;
        ts.center = t.center;
        ts.rht = t.rht;
        ts.rht_seed = cfg.seed;
        if (t.spectral) {
          ts.spectral.rank = spectral_rank_for(OperandSpec{}, cap.rows, cap.cols);
          ts.spectral.seed = cfg.seed;
        }
        const PipelineResult r = quantize_pipeline(cap.x.data(), cap.rows, cap.cols, q, ts);
        const ErrorStats e = error_stats(cap.x.data(), r.reconstruction.data(), cap.rows * cap.cols);
        // The grid's own shrinkage is measured where the rounding happened (after the RHT, on the
        // centred or residual operand): back in X's coordinates the inverse RHT spreads the error
        // over every element, and noise added to small values raises Σ|x̂| whatever the grid does.
        const ErrorStats eg = error_stats(r.operand.data(), r.operand_hat.data(), cap.rows * cap.cols);
        Json row = Json::object();
        row["layer"] = cap.layer;
        row["operand"] = cap.operand;
        row["format"] = std::string(format_name(f));
        row["transform"] = std::string(t.name);
        row["snr_db"] = e.snr_db;
        row["rel_err"] = e.rel_err;
        row["shrinkage"] = e.shrinkage;
        row["grid_shrinkage"] = eg.shrinkage;
        rows.push_back(row);
      }
    }
  }
  // the best transform per (layer, operand, format) by SNR
  std::map<std::string, std::pair<double, std::string>> best;
  std::vector<std::string> keys;
  for (const Json& r : rows.as_array()) {
    const std::string key = r.at("layer").as_string() + " " + r.at("operand").as_string() + " " + r.at("format").as_string();
    const double snr = r.at("snr_db").is_null() ? -INFINITY : r.at("snr_db").as_double();
    if (!best.count(key)) keys.push_back(key);
    if (!best.count(key) || snr > best[key].first) best[key] = {snr, r.at("transform").as_string()};
  }
  Json bests = Json::array();
  for (const std::string& k : keys) {
    Json x = Json::object();
    x["tensor"] = k;
    x["best_transform"] = best[k].second;
    x["snr_db"] = best[k].first;
    bests.push_back(x);
  }
  // means over layers of each (operand, format, transform)
  const Json summary = group_means(rows.as_array(), {"operand", "format", "transform"}, {"snr_db", "shrinkage", "grid_shrinkage"});
  Json out = Json::object();
  out["checkpoint"] = ck;
  out["device"] = m->device();
  out["tokens"] = b.batch_size * b.seq_len;
  out["operands"] = rows;
  out["anisotropy"] = aniso;
  out["best"] = bests;
  out["summary"] = summary;

  if (!cfg.out.empty()) {
    fs::create_directories(cfg.out);
    write_file_atomic((fs::path(cfg.out) / "results.json").string(), out.dump(2) + "\n", Durability::Fsync);
    std::string md = "# Operand analysis of " + ck + "\n\nOne forward + backward (bf16, " + m->device() + ") on " +
                     std::to_string(b.batch_size * b.seq_len) + " tokens; every projection's X, W and dY quantized by "
                     "each format under each transform; SNR of the reconstruction in the operand's own coordinates.\n\n";
    report::MarkdownTable at({"layer", "operand", "mean energy share", "top-1 energy share", "cos(μ, v₁)", "amax inflation"},
                             {report::Align::Left, report::Align::Left, report::Align::Right, report::Align::Right,
                              report::Align::Right, report::Align::Right});
    for (const Json& a : aniso.as_array())
      at.add_row({a.at("layer").as_string(), a.at("operand").as_string(), report::fmt_fixed(a.at("mean_energy_share").as_double(), 3),
                  report::fmt_fixed(a.at("top1_energy_share").as_double(), 3), report::fmt_fixed(a.at("cos_mu_v1").as_double(), 3),
                  a.at("amax_inflation").is_null() ? "inf" : report::fmt_fixed(a.at("amax_inflation").as_double(), 2)});
    md += "## Mean over layers\n\nPer operand, format and transform, the mean over the layers' tensors of the SNR and "
          "of the shrinkage Σ(|x̂| − |x|)/Σ|x| twice: in X's own coordinates (what the GEMM sees; after an RHT it "
          "includes the noise that the inverse transform spreads over small values) and in the quantized domain "
          "(the values the rounding saw: the grid's own bias).\n\n";
    report::MarkdownTable st({"operand", "format", "transform", "tensors", "SNR dB", "shrinkage", "grid shrinkage"},
                             {report::Align::Left, report::Align::Left, report::Align::Left, report::Align::Right,
                              report::Align::Right, report::Align::Right, report::Align::Right});
    auto pct = [](const Json& v) { return v.is_null() ? std::string("—") : report::fmt_fixed(100.0 * v.as_double(), 2) + "%"; };
    for (const Json& x : summary.as_array())
      st.add_row({x.at("operand").as_string(), x.at("format").as_string(), x.at("transform").as_string(),
                  std::to_string(x.at("tensors").as_int64()),
                  x.at("snr_db").is_null() ? "—" : report::fmt_fixed(x.at("snr_db").as_double(), 2), pct(x.at("shrinkage")),
                  pct(x.at("grid_shrinkage"))});
    md += st.str() + "\n## Anisotropy (SPEC §6)\n\n" + at.str() + "\n## Best transform per tensor (by SNR)\n\n";
    report::MarkdownTable bt({"tensor", "best transform", "SNR dB"}, {report::Align::Left, report::Align::Left, report::Align::Right});
    for (const Json& x : bests.as_array())
      bt.add_row({x.at("tensor").as_string(), x.at("best_transform").as_string(), report::fmt_fixed(x.at("snr_db").as_double(), 2)});
    md += bt.str() + "\n";
    // heatmaps: rows = layer operand, columns = transform, one per format
    for (const char* fmt : {"nvfp4", "mxfp4", "int4"}) {
      std::vector<std::string> row_labels, col_labels;
      for (const Transform& t : kTransforms) col_labels.push_back(t.name);
      std::map<std::string, std::map<std::string, double>> grid;
      for (const Json& r : rows.as_array()) {
        if (r.at("format").as_string() != fmt) continue;
        const std::string rl = r.at("layer").as_string() + " " + r.at("operand").as_string();
        if (!grid.count(rl)) row_labels.push_back(rl);
        grid[rl][r.at("transform").as_string()] = r.at("snr_db").is_null() ? NAN : r.at("snr_db").as_double();
      }
      std::vector<double> values;
      for (const std::string& rl : row_labels)
        for (const std::string& cl : col_labels) values.push_back(grid[rl].count(cl) ? grid[rl][cl] : NAN);
      report::HeatmapOptions ho;
      ho.title = std::string("SNR (dB) by transform, ") + fmt;
      ho.colorbar_label = "SNR dB";
      ho.value_digits = 3;
      report::write_heatmap((fs::path(cfg.out) / (std::string("snr_") + fmt + ".svg")).string(), row_labels, col_labels, values, ho);
      md += std::string("![SNR ") + fmt + "](snr_" + fmt + ".svg)\n\n";
    }
    write_file_atomic((fs::path(cfg.out) / "results.md").string(), md, Durability::Fsync);
  }
  return out;
}

}  // namespace nibble
