// nibble hessian on a tiny trained model: the model's Hessian-vector product is symmetric, the top
// eigenpair satisfies H v ≈ λ v, the SLQ density integrates to 1, and the CLI writes its report.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "nibble/data/corpus.hpp"
#include "nibble/data/dataset.hpp"
#include "nibble/data/loader.hpp"
#include "nibble/data/tokenizer.hpp"
#include "nibble/fileio.hpp"
#include "nibble/nn/model.hpp"
#include "nibble/qat/hessian.hpp"
#include "nibble/qat/hessian_model.hpp"
#include "nibble/qat/qat_model.hpp"
#include "nibble/train/checkpoint.hpp"
#include "nibble/train/trainer.hpp"
#include "support/cli_runner.hpp"
#include "support/small_run.hpp"

using namespace nibble;
using nibble::testing::ScratchDir;
namespace fs = std::filesystem;

namespace {

// A 1-layer, 32-wide model trained for 5 steps: a Hessian over every weight in float64 stays small.
TrainConfig train_tiny(const ScratchDir& d) {
  TrainConfig c = nibble::testing::small_run_config(d, "run", 40000);
  c.model.dim = 32;
  c.model.n_layers = 1;
  c.model.n_heads = 1;
  c.model.n_kv_heads = 1;
  c.model.ffn_dim = 32;
  c.model.max_seq = 32;
  c.seq = 16;
  c.steps = 5;
  nibble::testing::train_quietly(c);
  return c;
}

// uᵀ H v = vᵀ H u for two fixed directions: central differences in float64 are symmetric to
// O(ε²) + rounding, far below any real asymmetry.
void expect_symmetric(const HessianProblem& p) {
  std::vector<double> u(p.w.size()), v(p.w.size());
  for (size_t i = 0; i < u.size(); ++i) {
    u[i] = std::sin(0.37 * static_cast<double>(i));
    v[i] = std::cos(0.11 * static_cast<double>(i) + 1.0);
  }
  const std::vector<double> hu = hvp(p, u), hv = hvp(p, v);
  double uhv = 0, vhu = 0, scale = 0;
  for (size_t i = 0; i < u.size(); ++i) {
    uhv += u[i] * hv[i];
    vhu += v[i] * hu[i];
    scale += std::fabs(u[i] * hv[i]);
  }
  EXPECT_NEAR(uhv, vhu, 1e-6 * scale);
}

}  // namespace

TEST(HessianModel, SymmetricHvpTopEigenpairDensityAndReport) {
  ScratchDir d;
  const TrainConfig c = train_tiny(d);

  // the model's loss on one batch as a Hessian problem
  auto m = std::make_shared<Transformer<double>>(c.model);
  const Checkpoint ck = load_checkpoint(resolve_checkpoint_dir(d.file("run")), m->params(), false);
  const auto tok = make_tokenizer("byte");
  const TokenDataset ds = TokenDataset::from_text(d.file("text.txt"), *tok, c.val_fraction);
  DataLoader loader(ds.val, 2, 16, 1, false);
  const Batch b = loader.next();
  HessianProblem p;
  p.w.assign(ck.weights.begin(), ck.weights.end());
  p.grad = [m, b](const std::vector<double>& w) {
    std::copy(w.begin(), w.end(), m->weights());
    m->zero_grad();
    StepContext ctx;
    m->forward(b.inputs.data(), b.targets.data(), b.batch_size, b.seq_len, ctx);
    m->backward(ctx);
    return std::vector<double>(m->grads(), m->grads() + m->num_params());
  };
  expect_symmetric(p);
  const EigenResult top = top_eigen(p, 1, 300, 1e-9);
  const std::vector<double> h1 = hvp(p, top.vectors[0]);
  double res = 0;
  for (size_t i = 0; i < h1.size(); ++i) res += std::pow(h1[i] - top.values[0] * top.vectors[0][i], 2);
  EXPECT_LT(std::sqrt(res), 1e-2 * std::fabs(top.values[0]));

  HessianConfig hc;
  hc.checkpoint = d.file("run");
  hc.batch = 2;
  hc.seq = 16;
  hc.top = 2;
  hc.probes = 3;
  hc.steps = 20;
  hc.density = true;
  hc.out = d.file("h");
  const Json r = hessian_spectrum(hc);
  ASSERT_EQ(r.at("top_eigenvalues").as_array().size(), 2u);
  EXPECT_NEAR(r.at("top_eigenvalues").as_array()[0].as_double(), top.values[0], 1e-3 * std::fabs(top.values[0]));
  EXPECT_TRUE(std::isfinite(r.at("trace").as_double()));
  EXPECT_EQ(r.at("power_tolerance").as_double(), 1e-5);  // float64 gradients: the tight default
  ASSERT_EQ(r.at("power_iterations").as_array().size(), 2u);
  ASSERT_EQ(r.at("power_converged").as_array().size(), 2u);
  EXPECT_LE(r.at("power_iterations").as_array()[0].as_int64(), 100);
  const double neg = r.at("negative_mass").as_double();
  EXPECT_GE(neg, 0.0);
  EXPECT_NEAR(neg + r.at("near_zero_mass").as_double() + r.at("positive_mass").as_double(), 1.0, 1e-9);
  EXPECT_GE(r.at("negative_mass_any").as_double(), neg);
  double integral = 0;
  const auto& g = r.at("density").at("grid").as_array();
  const auto& dv = r.at("density").at("values").as_array();
  for (size_t i = 1; i < g.size(); ++i)
    integral += 0.5 * (dv[i].as_double() + dv[i - 1].as_double()) * (g[i].as_double() - g[i - 1].as_double());
  EXPECT_NEAR(integral, 1.0, 1e-2);
  for (const char* f : {"results.md", "results.json", "density.svg"}) EXPECT_TRUE(fs::exists(hc.out + "/" + f)) << f;
  const auto cli = nibble::testing::run_nibble("hessian --checkpoint " + d.file("run") +
                                               " --batch 1 --seq 16 --top 1 --probes 1 --out " + d.file("h2"));
  EXPECT_EQ(cli.code, 0) << cli.out;
  EXPECT_NE(cli.out.find("top eigenvalues"), std::string::npos) << cli.out;
  // `hessian plot`: two results on one log-density chart, labelled by directory; a directory
  // without a density (h2 ran without --density) or without results is an error naming it
  const auto plot = nibble::testing::run_nibble("hessian plot " + d.file("h") + " " + d.file("h") + "/ --out " + d.file("both.svg"));
  ASSERT_EQ(plot.code, 0) << plot.out;
  const std::string svg = read_file(d.file("both.svg"));
  size_t groups = 0;
  for (size_t at = svg.find("data-label=\"h\""); at != std::string::npos; at = svg.find("data-label=\"h\"", at + 1)) ++groups;
  EXPECT_EQ(groups, 2u) << svg.substr(0, 400);
  const auto no_density = nibble::testing::run_nibble("hessian plot " + d.file("h2") + " --out " + d.file("x.svg"));
  EXPECT_NE(no_density.code, 0);
  EXPECT_NE(no_density.out.find("--density"), std::string::npos) << no_density.out;
  const auto missing = nibble::testing::run_nibble("hessian plot " + d.file("nowhere") + " --out " + d.file("x.svg"));
  EXPECT_NE(missing.code, 0);
  EXPECT_NE(missing.out.find("nowhere"), std::string::npos) << missing.out;
}

// At the quantized point (SPEC §7): --bits 2 on a plain checkpoint evaluates the loss at
// Ŵ = Q(W; α) with α at its SEQ init (max|W_row|), and masks the perturbations to the weights
// inside SEQ's range |W/α| ≤ 0.99 — the row maxima fall outside, so some are frozen. A frozen
// coordinate's Hessian column is exactly zero (its perturbation is not applied, its gradient is
// dropped), the operator stays symmetric, and the CLI reports the quantized point.
TEST(HessianModel, QuantizedPointIsTheDequantizedWeightsWithOutOfRangeWeightsMasked) {
  ScratchDir d;
  const TrainConfig c = train_tiny(d);
  HessianConfig hc;
  hc.checkpoint = d.file("run");
  hc.batch = 2;
  hc.seq = 16;
  hc.bits = 2;
  Json info;
  const HessianProblem p = checkpoint_hessian_problem(hc, info);
  const Json& q = info.at("quantized");
  EXPECT_EQ(q.at("quantizer").as_string(), "seq");
  const int64_t total = q.at("projection_weights").as_int64(), in = q.at("in_range").as_int64();
  EXPECT_GT(in, 0);
  EXPECT_LT(in, total);  // the row maxima are out of range
  // the point: one projection on the 2-bit SEQ grid α·{±1/4, ±3/4}, α = the row's max |W|
  Transformer<float> m(c.model);
  const Checkpoint ck = load_checkpoint(resolve_checkpoint_dir(d.file("run")), m.params(), false);
  QuantizedPoint qp;
  ASSERT_TRUE(quantized_point(resolve_checkpoint_dir(d.file("run")), m.params(), ck.weights, 2, "auto", qp));
  int64_t frozen = -1, free_ = -1;
  for (const ParamInfo& par : m.params()) {
    if (par.name != "model.layers.0.mlp.down_proj.weight") continue;
    const int64_t cols = par.shape[1];
    for (int64_t r = 0; r < par.shape[0]; ++r) {
      double amax = 0;
      for (int64_t j = 0; j < cols; ++j) amax = std::max(amax, std::fabs(static_cast<double>(ck.weights[par.offset + r * cols + j])));
      for (int64_t j = 0; j < cols; ++j) {
        const int64_t i = par.offset + r * cols + j;
        const double lvl = std::fabs(p.w[static_cast<size_t>(i)] / amax);
        EXPECT_TRUE(std::fabs(lvl - 0.25) < 1e-6 || std::fabs(lvl - 0.75) < 1e-6) << lvl;
        if (!qp.in_range[static_cast<size_t>(i)]) frozen = i;
        else free_ = i;
      }
    }
  }
  ASSERT_GE(frozen, 0);
  ASSERT_GE(free_, 0);
  std::vector<double> e(p.w.size(), 0.0);
  e[static_cast<size_t>(frozen)] = 1.0;
  for (double h : hvp(p, e)) EXPECT_EQ(h, 0.0);
  e[static_cast<size_t>(frozen)] = 0.0;
  e[static_cast<size_t>(free_)] = 1.0;
  const std::vector<double> hf = hvp(p, e);
  EXPECT_EQ(hf[static_cast<size_t>(frozen)], 0.0);  // no coupling into a frozen coordinate
  double norm = 0;
  for (double h : hf) norm += h * h;
  EXPECT_GT(norm, 0.0);
  expect_symmetric(p);
  const auto cli = nibble::testing::run_nibble("hessian --checkpoint " + d.file("run") +
                                               " --bits 2 --batch 1 --seq 16 --top 1 --probes 1 --out " + d.file("hq"));
  EXPECT_EQ(cli.code, 0) << cli.out;
  EXPECT_NE(read_file(d.file("hq/results.md")).find("quantized point"), std::string::npos);
  EXPECT_NE(nibble::testing::run_nibble("hessian --checkpoint " + d.file("run") + " --bits 5 --out " + d.file("hx")).code, 0);
}
