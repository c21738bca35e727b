// nibble hessian (see hessian_model.hpp).
#include "nibble/qat/hessian_model.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "nibble/data/corpus.hpp"
#include "nibble/data/dataset.hpp"
#include "nibble/data/loader.hpp"
#include "nibble/data/tokenizer.hpp"
#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/nn/model.hpp"
#include "nibble/qat/hessian.hpp"
#include "nibble/qat/qat_model.hpp"
#include "nibble/report/markdown.hpp"
#include "nibble/report/svg_plot.hpp"
#include "nibble/train/checkpoint.hpp"
#include "nibble/train/engine.hpp"
#include "nibble/train/train_config.hpp"

namespace nibble {
namespace fs = std::filesystem;

HessianProblem checkpoint_hessian_problem(const HessianConfig& cfg, Json& info) {
  const std::string ck = resolve_checkpoint_dir(cfg.checkpoint);
  const TrainConfig tc = TrainConfig::from_json(read_checkpoint_config(ck), ck + "/config.json");
  const std::vector<ParamInfo> params = transformer_param_layout(tc.model);
  const Checkpoint c = load_checkpoint(ck, params, false);
  const std::unique_ptr<Tokenizer> tok = make_tokenizer(tc.model.tokenizer);
  const bool own = cfg.data_dir.empty() && cfg.text_file.empty();
  const std::string data_dir = own ? tc.data_dir : cfg.data_dir, text = own ? tc.text_file : cfg.text_file;
  const TokenDataset ds = open_run_data(data_dir, text, *tok, tc.val_fraction);
  const int64_t seq = cfg.seq > 0 ? cfg.seq : std::min<int64_t>(tc.seq, 64);
  DataLoader loader(ds.val.empty() ? ds.train : ds.val, cfg.batch, seq, cfg.seed, false);
  const Batch b = loader.next();

  info = Json::object();
  info["checkpoint"] = ck;
  info["tokens"] = b.batch_size * b.seq_len;
  HessianProblem p;
  p.eps = 1e-4;
  QuantizedPoint qp;
  const bool quantized = quantized_point(ck, params, c.weights, cfg.bits, cfg.quantizer, qp);
  const std::vector<float>& at = quantized ? qp.w_hat : c.weights;
  p.w.assign(at.begin(), at.end());
  GradientFn loss_grad;
  const std::string device = resolve_device(cfg.device);
  info["device"] = device;
  if (device == "cpu") {
    auto model = std::make_shared<Transformer<double>>(tc.model);
    loss_grad = [model, b](const std::vector<double>& w) {
      std::copy(w.begin(), w.end(), model->weights());
      model->zero_grad();
      StepContext ctx;
      model->forward(b.inputs.data(), b.targets.data(), b.batch_size, b.seq_len, ctx);
      model->backward(ctx);
      return std::vector<double>(model->grads(), model->grads() + model->num_params());
    };
  } else {
    std::shared_ptr<TrainEngine> engine = make_engine(device, tc.model, EngineOptions{"fp32", "fp32"});
    engine->set_recipe(Recipe::preset("fp32"));  // quantization bypassed, as on the CPU
    // one float staging buffer for the weights and then the gradients, reused by every call
    auto staging = std::make_shared<std::vector<float>>(p.w.size());
    loss_grad = [engine, b, staging](const std::vector<double>& w) {
      std::vector<float>& f = *staging;
      const auto n = static_cast<int64_t>(w.size());
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) f[i] = static_cast<float>(w[i]);
      engine->set_weights(f.data());
      engine->zero_grad();
      StepContext ctx;
      engine->forward(b.inputs.data(), b.targets.data(), b.batch_size, b.seq_len, ctx);
      engine->backward(ctx);
      engine->get_gradients(f.data());
      std::vector<double> g(w.size());
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) g[i] = f[i];
      return g;
    };
    double sq = 0;
    for (double x : p.w) sq += x * x;
    p.eps = 1e-4 * std::sqrt(sq);  // float weights: a step well above their resolution
  }
  if (!quantized) {
    p.grad = loss_grad;
  } else {
    // M H M: frozen (out-of-range) coordinates stay at the point, their gradient is dropped
    p.grad = [loss_grad, w0 = p.w, mask = qp.in_range](const std::vector<double>& w) {
      const auto n = static_cast<int64_t>(w.size());
      std::vector<double> we(w.size());
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) we[i] = mask[i] ? w[i] : w0[i];
      std::vector<double> g = loss_grad(we);
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i)
        if (!mask[i]) g[i] = 0.0;
      return g;
    };
    Json q = Json::object();
    q["bits"] = qp.spec.bits;
    q["quantizer"] = qp.spec.kind == QatQuantizer::LSQ ? "lsq" : "seq";
    q["projection_weights"] = qp.projection_weights;
    q["in_range"] = qp.projection_in_range;
    info["quantized"] = q;
  }
  info["params"] = static_cast<int64_t>(p.w.size());
  return p;
}

Json hessian_spectrum(const HessianConfig& cfg) {
  if (cfg.power_iters < 1) fail("--power-iters must be >= 1");  // before the model is loaded
  Json out;
  const HessianProblem p = checkpoint_hessian_problem(cfg, out);
  const std::string ck = out.at("checkpoint").as_string();
  const int64_t tokens = out.at("tokens").as_int64();
  const bool gpu = out.at("device").as_string() != "cpu";
  const double tol = cfg.power_tol > 0 ? cfg.power_tol : gpu ? 1e-3 : 1e-5;
  const auto t0 = std::chrono::steady_clock::now();
  const EigenResult top = top_eigen(p, cfg.top, cfg.power_iters, tol, cfg.seed);
  Json tv = Json::array(), ti = Json::array();
  for (double v : top.values) tv.push_back(v);
  for (int it : top.iterations) ti.push_back(static_cast<int64_t>(it));
  out["top_eigenvalues"] = tv;
  out["power_iterations"] = ti;
  Json tc = Json::array();
  for (bool c : top.converged) tc.push_back(c);
  out["power_converged"] = tc;  // false: stopped at --power-iters before the tolerance was met
  out["power_tolerance"] = tol;
  out["trace"] = hutchinson_trace(p, cfg.probes, cfg.seed);
  std::string md = "# Hessian spectrum of " + ck + "\n\nTraining loss on " + std::to_string(tokens) + " tokens, all " +
                   std::to_string(p.w.size()) + " weights, " +
                   (gpu ? "the GPU engine in fp32 (gradients in float, vectors in float64)" : "float64") +
                   " (quantization bypassed), Hessian-vector products by central differences.\n\n";
  if (const Json* q = out.find("quantized")) {
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "At the quantized point: %g-bit %s, the loss at Ŵ = Q(W; α), perturbations masked to the %lld of %lld "
                  "projection weights in the quantizer's range (SPEC §7).\n\n",
                  q->at("bits").as_double(), q->at("quantizer").as_string().c_str(),
                  static_cast<long long>(q->at("in_range").as_int64()),
                  static_cast<long long>(q->at("projection_weights").as_int64()));
    md += buf;
  }
  report::MarkdownTable t({"quantity", "value"}, {report::Align::Left, report::Align::Right});
  for (size_t i = 0; i < top.values.size(); ++i)
    t.add_row({"eigenvalue " + std::to_string(i + 1) + " (by magnitude; " + std::to_string(top.iterations[i]) +
                   (!top.converged[i] ? " power iterations, not converged)" : " power iterations)"),
               report::fmt_sig(top.values[i], 5)});
  t.add_row({"trace (Hutchinson, " + std::to_string(cfg.probes) + " probes)", report::fmt_sig(out.at("trace").as_double(), 5)});
  if (cfg.density) {
    const SpectralDensity d = slq_density(p, cfg.probes, cfg.steps, 300, 0.01, cfg.seed);
    const SpectrumShares sh = spectrum_shares(d, 0.01);
    out["negative_mass"] = sh.negative;
    out["near_zero_mass"] = sh.near_zero;
    out["positive_mass"] = sh.positive;
    out["negative_mass_any"] = sh.negative_any;
    out["zero_tolerance"] = sh.tolerance;
    Json dj = Json::object(), g = Json::array(), v = Json::array();
    for (double x : d.grid) g.push_back(x);
    for (double x : d.density) v.push_back(x);
    dj["grid"] = g;
    dj["values"] = v;
    out["density"] = dj;
    const std::string tol = report::fmt_sig(sh.tolerance, 3);
    t.add_row({"spectral mass below −" + tol + " (SLQ; 1% of the largest |Ritz value|)", report::fmt_percent(sh.negative, 2)});
    t.add_row({"spectral mass within ±" + tol, report::fmt_percent(sh.near_zero, 2)});
    t.add_row({"spectral mass above " + tol, report::fmt_percent(sh.positive, 2)});
    t.add_row({"spectral mass below 0 (any)", report::fmt_percent(sh.negative_any, 2)});
    if (!cfg.out.empty()) {
      fs::create_directories(cfg.out);
      write_density_plot((fs::path(cfg.out) / "density.svg").string(), {{"density", out}}, "Hessian eigenvalue density (SLQ)");
    }
  }
  out["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  md += t.str() + (cfg.density ? "\n![density](density.svg)\n" : "");
  if (!cfg.out.empty()) {
    fs::create_directories(cfg.out);
    write_file_atomic((fs::path(cfg.out) / "results.json").string(), out.dump(2) + "\n", Durability::Fsync);
    write_file_atomic((fs::path(cfg.out) / "results.md").string(), md, Durability::Fsync);
  }
  return out;
}

void write_density_plot(const std::string& path, const std::vector<std::pair<std::string, Json>>& results,
                        const std::string& title) {
  if (results.empty()) fail("hessian plot: no results to draw");
  std::vector<report::Series> series;
  double peak = 0;
  for (const auto& [label, r] : results) {
    const Json* d = r.find("density");
    if (!d) fail(label, ": no eigenvalue density in its results (run nibble hessian with --density)");
    report::Series s{label, {}, {}};
    for (const Json& x : d->at("grid").as_array()) s.x.push_back(x.as_double());
    for (const Json& y : d->at("values").as_array()) s.y.push_back(y.as_double());
    if (s.x.size() != s.y.size() || s.x.empty()) fail(label, ": density grid and values differ in length");
    for (double y : s.y) peak = std::max(peak, y);
    series.push_back(std::move(s));
  }
  if (!(peak > 0)) fail("hessian plot: the densities are all zero");
  const double floor = 1e-6 * peak;
  for (auto& s : series)
    for (double& y : s.y) y = std::max(y, floor);
  report::PlotOptions o;
  o.title = title;
  o.x_label = "eigenvalue";
  o.y_label = "density (log)";
  o.log_y = true;
  o.y_min = floor;
  o.y_max = 2 * peak;
  report::write_line_plot(path, series, o);
}

}  // namespace nibble
