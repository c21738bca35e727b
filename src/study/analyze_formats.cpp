// nibble analyze formats (see analyze.hpp).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>

#include "nibble/data/corpus.hpp"
#include "nibble/data/dataset.hpp"
#include "nibble/data/loader.hpp"
#include "nibble/data/tokenizer.hpp"
#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/nn/model.hpp"
#include "nibble/quant/pipeline.hpp"
#include "nibble/quant/stats.hpp"
#include "nibble/quant/synthetic.hpp"
#include "nibble/report/markdown.hpp"
#include "nibble/report/svg_plot.hpp"
#include "nibble/study/analyze.hpp"
#include "nibble/train/checkpoint.hpp"
#include "nibble/train/train_config.hpp"
#include "study/group_means.hpp"

namespace nibble {
namespace fs = std::filesystem;

namespace {

struct Tensor2D {
  std::string name;
  int64_t rows = 0, cols = 0;
  std::vector<float> x;
};

constexpr int kRhtSizes[] = {0, 16, 32, 128};

double entropy_bits(const std::array<int64_t, 16>& h) {
  double n = 0, e = 0;
  for (int64_t c : h) n += static_cast<double>(c);
  for (int64_t c : h)
    if (c > 0) e -= (static_cast<double>(c) / n) * std::log2(static_cast<double>(c) / n);
  return e;
}

// Every format × RHT × rounding on one tensor, statistics in the quantized domain (the values
// the rounding saw, after the RHT), where shrinkage is a property of the grid.
void analyze_tensor(const Tensor2D& t, uint64_t seed, Json& rows) {
  for (Format f : {Format::NVFP4, Format::MXFP4, Format::INT4}) {
    for (int rht : kRhtSizes) {
      if (rht && t.cols % rht != 0) continue;
      for (Rounding rnd : {Rounding::RNE, Rounding::SR}) {
        QuantSpec q = QuantSpec::for_format(f);
        if (t.cols % q.block != 0) continue;
        q.rounding = rnd;
        q.seed = seed;
        TransformSpec tr;
        tr.rht = rht;
        tr.rht_seed = seed;
        const PipelineResult r = quantize_pipeline(t.x.data(), t.rows, t.cols, q, tr);
        const ErrorStats e = error_stats(r.operand.data(), r.operand_hat.data(), t.rows * t.cols);
        const std::array<int64_t, 16> h = code_histogram(r.q);
        int used = 0;
        for (int64_t c : h) used += c > 0;
        Json row = Json::object();
        row["tensor"] = t.name;
        row["format"] = std::string(format_name(f));
        row["rht"] = rht;
        row["rounding"] = std::string(rounding_name(rnd));
        row["snr_db"] = e.snr_db;
        row["rel_err"] = e.rel_err;
        row["shrinkage"] = e.shrinkage;
        row["code_entropy_bits"] = entropy_bits(h);
        row["codes_used"] = used;
        rows.push_back(row);
      }
    }
  }
}

// The first, middle and last block: enough to see depth trends without every tensor.
bool sampled_block(const std::string& name, int n_layers) {
  const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) != 0) return false;
  const int l = std::stoi(name.substr(prefix.size()));
  return l == 0 || l == n_layers / 2 || l == n_layers - 1;
}

// A checkpoint loaded once into a CPU model, with the first batch of its validation data (the
// training data when it has none): what the weights, the captured operands and the depth effect
// all read.
struct LoadedCheckpoint {
  TrainConfig cfg;
  std::unique_ptr<Transformer<float>> model;
  Batch batch;
};
LoadedCheckpoint load_for_formats(const std::string& dir, const FormatsConfig& fc) {
  LoadedCheckpoint lc;
  const std::string ck = resolve_checkpoint_dir(dir);
  lc.cfg = TrainConfig::from_json(read_checkpoint_config(ck), ck + "/config.json");
  lc.model = std::make_unique<Transformer<float>>(lc.cfg.model);
  const Checkpoint c = load_checkpoint(ck, lc.model->params(), false);
  std::copy(c.weights.begin(), c.weights.end(), lc.model->weights());
  const std::unique_ptr<Tokenizer> tok = make_tokenizer(lc.cfg.model.tokenizer);
  const TokenDataset ds = open_run_data(lc.cfg.data_dir, lc.cfg.text_file, *tok, lc.cfg.val_fraction);
  const int64_t seq = fc.depth_seq > 0 ? fc.depth_seq : lc.cfg.seq;
  DataLoader loader(ds.val.empty() ? ds.train : ds.val, fc.depth_batch, seq, lc.cfg.seed, false);
  lc.batch = loader.next();
  return lc;
}

std::vector<Tensor2D> checkpoint_weights(const LoadedCheckpoint& lc) {
  std::vector<Tensor2D> out;
  for (const ParamInfo& p : lc.model->params()) {
    if (p.shape.size() != 2 || !sampled_block(p.name, lc.cfg.model.n_layers)) continue;
    Tensor2D t;
    t.name = p.name;
    t.rows = p.shape[0];
    t.cols = p.shape[1];
    t.x.assign(lc.model->weights() + p.offset, lc.model->weights() + p.offset + p.numel);
    out.push_back(std::move(t));
  }
  return out;
}

// X and dY of the sampled blocks' projections, from one bf16 forward + backward of the
// checkpoint: the real activations and gradients the recipes quantize (their first
// fc.operand_rows tokens, which keeps the analysis to seconds on a 60m model).
std::vector<Tensor2D> checkpoint_operands(LoadedCheckpoint& lc, const FormatsConfig& fc) {
  Transformer<float>& m = *lc.model;
  m.set_recipe(Recipe::preset("bf16"));
  std::vector<Tensor2D> out;
  m.set_capture([&](const std::string& layer, const std::string& op, const float* p, int64_t rows, int64_t cols) {
    if ((op != "x" && op != "dy") || !sampled_block(layer, lc.cfg.model.n_layers)) return;
    Tensor2D t;
    t.name = layer + ":" + op;
    t.rows = std::min(rows, fc.operand_rows);
    t.cols = cols;
    t.x.assign(p, p + t.rows * cols);
    out.push_back(std::move(t));
  });
  StepContext ctx;
  ctx.seed = lc.cfg.seed;
  m.zero_grad();
  m.forward(lc.batch.inputs.data(), lc.batch.targets.data(), lc.batch.batch_size, lc.batch.seq_len, ctx);
  m.backward(ctx);
  m.set_capture(nullptr);
  return out;
}

// Residual-stream error per depth of each recipe's forward against bf16's, same weights/tokens.
Json depth_effect(LoadedCheckpoint& lc, const FormatsConfig& fc) {
  Transformer<float>& m = *lc.model;
  const TrainConfig& cfg = lc.cfg;
  const Batch& batch = lc.batch;
  StepContext ctx;
  ctx.seed = cfg.seed;
  const int L = cfg.model.n_layers;
  m.set_recipe(Recipe::preset("bf16"));
  m.forward(batch.inputs.data(), nullptr, batch.batch_size, batch.seq_len, ctx);
  std::vector<std::vector<float>> ref;
  for (int l = 0; l <= L; ++l) ref.push_back(m.residual_stream(l));
  Json out = Json::array();
  for (const std::string& rn : fc.depth_recipes) {
    m.set_recipe(Recipe::preset(rn));
    m.forward(batch.inputs.data(), nullptr, batch.batch_size, batch.seq_len, ctx);
    Json errs = Json::array();
    for (int l = 1; l <= L; ++l) {  // the output of block l−1
      const std::vector<float>& a = m.residual_stream(l);
      double num = 0, den = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        const double d = static_cast<double>(a[i]) - ref[static_cast<size_t>(l)][i];
        num += d * d;
        den += static_cast<double>(ref[static_cast<size_t>(l)][i]) * ref[static_cast<size_t>(l)][i];
      }
      errs.push_back(std::sqrt(num / std::max(den, 1e-300)));
    }
    Json r = Json::object();
    r["recipe"] = rn;
    r["rel_err"] = errs;
    out.push_back(r);
  }
  return out;
}

// A checkpoint tensor's kind from its name ("" for the synthetic samples).
std::string tensor_kind(const std::string& name) {
  auto ends = [&](const std::string& suf) {
    return name.size() > suf.size() && name.compare(name.size() - suf.size(), suf.size(), suf) == 0;
  };
  if (name.rfind("model.layers.", 0) != 0) return "";
  if (ends(":x")) return "X";
  if (ends(":dy")) return "dY";
  return "W";
}

// Round-to-nearest rows of the checkpoint's tensors averaged by (kind, format, rht): whether
// the grid's shrinkage seen on samples holds for the tensors a model really quantizes.
Json means_by_kind(const Json& rows) {
  std::vector<Json> tagged;
  for (const Json& r : rows.as_array()) {
    const std::string kind = tensor_kind(r.at("tensor").as_string());
    if (kind.empty() || r.at("rounding").as_string() != "rne") continue;
    tagged.push_back(r);
    tagged.back()["kind"] = kind;
  }
  return group_means(tagged, {"kind", "format", "rht"}, {"shrinkage", "snr_db", "code_entropy_bits"});
}

void write_report(const FormatsConfig& cfg, const Json& j) {
  fs::create_directories(cfg.out);
  write_file_atomic((fs::path(cfg.out) / "results.json").string(), j.dump(2) + "\n", Durability::Fsync);
  std::string md = "# 4-bit formats\n\n";
  md += "Statistics of SPEC §6 in the quantized domain (the values the rounding saw, after the RHT): shrinkage = "
        "Σ(|x̂| − |x|)/Σ|x| (negative: magnitudes shrink), SNR in dB, code entropy in bits (4 = all 16 codes equally "
        "used). Synthetic samples are " + std::to_string(cfg.rows) + "×" + std::to_string(cfg.cols) + ", seed " +
        std::to_string(cfg.seed) + ".\n\n";
  // Shrinkage under RNE: tensor × format rows, RHT columns (the UFP4 paper's claim at a glance).
  std::map<std::string, std::map<int, double>> shrink, snr;
  std::vector<std::string> order;
  for (const Json& r : j.at("formats").as_array()) {
    if (r.at("rounding").as_string() != "rne") continue;
    const std::string key = r.at("tensor").as_string() + "|" + r.at("format").as_string();
    if (!shrink.count(key)) order.push_back(key);
    shrink[key][static_cast<int>(r.at("rht").as_int64())] = r.at("shrinkage").as_double();
    snr[key][static_cast<int>(r.at("rht").as_int64())] = r.at("snr_db").as_double();
  }
  report::MarkdownTable t({"tensor", "format", "shrinkage, no RHT", "RHT16", "RHT32", "RHT128", "SNR dB, no RHT",
                           "RHT16", "RHT32", "RHT128"},
                          {report::Align::Left, report::Align::Left, report::Align::Right, report::Align::Right,
                           report::Align::Right, report::Align::Right, report::Align::Right, report::Align::Right,
                           report::Align::Right, report::Align::Right});
  for (const std::string& key : order) {
    const size_t bar = key.find('|');
    std::vector<std::string> row = {key.substr(0, bar), key.substr(bar + 1)};
    for (int rht : kRhtSizes)
      row.push_back(shrink[key].count(rht) ? report::fmt_fixed(100.0 * shrink[key][rht], 2) + "%" : "—");
    for (int rht : kRhtSizes) row.push_back(snr[key].count(rht) ? report::fmt_fixed(snr[key][rht], 2) : "—");
    t.add_row(row);
  }
  if (j.contains("by_kind") && !j.at("by_kind").as_array().empty()) {
    // kind × format rows, RHT columns: shrinkage and code entropy averaged over the tensors
    std::map<std::string, std::map<int, Json>> byk;
    std::vector<std::string> korder;
    for (const Json& x : j.at("by_kind").as_array()) {
      const std::string key = x.at("kind").as_string() + "|" + x.at("format").as_string();
      if (!byk.count(key)) korder.push_back(key);
      byk[key][static_cast<int>(x.at("rht").as_int64())] = x;
    }
    report::MarkdownTable k({"kind", "format", "tensors", "shrinkage, no RHT", "RHT16", "RHT32", "RHT128",
                             "code entropy, no RHT", "RHT16"},
                            {report::Align::Left, report::Align::Left, report::Align::Right, report::Align::Right,
                             report::Align::Right, report::Align::Right, report::Align::Right, report::Align::Right,
                             report::Align::Right});
    for (const std::string& key : korder) {
      const size_t bar = key.find('|');
      const auto& m = byk[key];
      std::vector<std::string> row = {key.substr(0, bar), key.substr(bar + 1),
                                      std::to_string(m.begin()->second.at("tensors").as_int64())};
      // a cell: the group's mean, — where the RHT size fits none of the tensors or the mean is null
      auto cell = [&](int rht, const char* field, double scale, const char* unit) {
        const Json* v = m.count(rht) ? m.at(rht).find(field) : nullptr;
        return v && v->is_number() ? report::fmt_fixed(scale * v->as_double(), 2) + unit : std::string("—");
      };
      for (int rht : kRhtSizes) row.push_back(cell(rht, "shrinkage", 100.0, "%"));
      for (int rht : {0, 16}) row.push_back(cell(rht, "code_entropy_bits", 1.0, ""));
      k.add_row(row);
    }
    md += "## The checkpoint's tensors, mean by kind (round-to-nearest)\n\nW: the 2-D weights of the first, middle "
          "and last block; X and dY: those blocks' projection inputs and output gradients from one bf16 forward + "
          "backward (first " + std::to_string(cfg.operand_rows) + " tokens each). An RHT size that does not divide "
          "a tensor's width skips it, so the columns may average different tensors.\n\n" + k.str() + "\n";
  }
  md += "## Shrinkage and SNR under round-to-nearest\n\n" + t.str() + "\n";
  md += "Every row (SR included) is in results.json.\n";
  if (j.contains("depth")) {
    md += "\n## Depth effect\n\nRelative error of the residual stream after each block, 4-bit forward against the bf16 "
          "forward of the same checkpoint on the same tokens.\n\n![depth](depth.svg)\n";
    std::vector<report::Series> s;
    for (const Json& r : j.at("depth").as_array()) {
      report::Series x;
      x.label = r.at("recipe").as_string();
      const auto& e = r.at("rel_err").as_array();
      for (size_t i = 0; i < e.size(); ++i) {
        x.x.push_back(static_cast<double>(i + 1));
        x.y.push_back(e[i].as_double());
      }
      s.push_back(x);
    }
    report::PlotOptions o;
    o.title = "residual-stream error against bf16, by depth";
    o.x_label = "block";
    o.y_label = "‖x_4bit − x_bf16‖ / ‖x_bf16‖";
    o.log_y = true;
    report::write_line_plot((fs::path(cfg.out) / "depth.svg").string(), s, o);
  }
  write_file_atomic((fs::path(cfg.out) / "results.md").string(), md, Durability::Fsync);
}

}  // namespace

Json analyze_formats(const FormatsConfig& cfg) {
  std::vector<Tensor2D> tensors;
  for (const std::string& d : cfg.distributions) {
    Tensor2D t;
    t.name = d;
    t.rows = cfg.rows;
    t.cols = cfg.cols;
    t.x = synthetic_matrix(synthetic_kind_from_name(d), cfg.rows, cfg.cols, cfg.seed);
    tensors.push_back(std::move(t));
  }
  std::optional<LoadedCheckpoint> lc;
  if (!cfg.checkpoint.empty()) {
    lc = load_for_formats(cfg.checkpoint, cfg);
    for (Tensor2D& t : checkpoint_weights(*lc)) tensors.push_back(std::move(t));
    if (cfg.operand_rows > 0)
      for (Tensor2D& t : checkpoint_operands(*lc, cfg)) tensors.push_back(std::move(t));
  }
  Json rows = Json::array();
  for (const Tensor2D& t : tensors) analyze_tensor(t, cfg.seed, rows);
  Json j = Json::object();
  j["formats"] = rows;
  if (!cfg.checkpoint.empty()) {
    j["by_kind"] = means_by_kind(rows);
    j["depth"] = depth_effect(*lc, cfg);
  }
  if (!cfg.out.empty()) write_report(cfg, j);
  return j;
}

}  // namespace nibble
