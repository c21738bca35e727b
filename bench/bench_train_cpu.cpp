// CPU training throughput (benchmark, not a test): tokens/s and achieved GFLOP/s of full
// training steps (forward, backward, AdamW) per model preset and recipe, against the
// machine's measured fp32 GEMM rate. Prints a table; --json F writes the numbers.
//   bench_train_cpu [--models tiny,20m] [--recipes bf16,nvfp4,...] [--steps N] [--json F]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "nibble/fileio.hpp"
#include "nibble/json.hpp"
#include "nibble/nn/model.hpp"
#include "nibble/ops/ops.hpp"
#include "nibble/philox.hpp"

using namespace nibble;
using Clock = std::chrono::steady_clock;

namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) out.push_back(item);
  return out;
}

// Training FLOPs per token: 6 per weight of every GEMM (projections and head; forward 2,
// backward 4), plus causal attention's QKᵀ and PV (2·2·T·d per layer forward, halved by the
// causal mask, ×3 for the backward) = 6·L·T·d.
double flops_per_token(const ModelConfig& c, int64_t seq) {
  const double hd = static_cast<double>(c.head_dim());
  const double proj = static_cast<double>(c.dim) * hd * (c.n_heads + 2 * c.n_kv_heads) + hd * c.n_heads * c.dim +
                      3.0 * c.dim * c.ffn_dim;
  const double gemm_weights = c.n_layers * proj + static_cast<double>(c.vocab_size) * c.dim;
  return 6.0 * gemm_weights + 6.0 * c.n_layers * static_cast<double>(seq) * c.dim;
}

double gemm_rate_gflops() {
  const int64_t m = 2048, n = 768, k = 768;
  std::vector<float> a(static_cast<size_t>(m * k), 0.5f), b(static_cast<size_t>(n * k), 0.25f), c(static_cast<size_t>(m * n));
  for (size_t i = 0; i < a.size(); ++i) a[i] = philox_uniform(1, 0, i);
  for (size_t i = 0; i < b.size(); ++i) b[i] = philox_uniform(2, 0, i);
  double best = 1e30;
  for (int r = 0; r < 8; ++r) {
    const auto t0 = Clock::now();
    ops::matmul_nt(a.data(), b.data(), c.data(), m, n, k);
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return 2.0 * m * n * k / best / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> models = {"tiny", "20m"};
  std::vector<std::string> recipes = {"bf16", "nvfp4", "mxfp4", "nvfp4-mean", "ufp4", "ufp4-mean", "metis"};
  int steps = 5;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--models") && i + 1 < argc) models = split(argv[++i]);
    else if (!std::strcmp(argv[i], "--recipes") && i + 1 < argc) recipes = split(argv[++i]);
    else if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
  }
  const double gemm = gemm_rate_gflops();
  std::printf("measured fp32 GEMM rate (matmul_nt 2048x768x768): %.1f GFLOP/s\n", gemm);
  std::printf("%-6s %-11s %7s %6s %10s %9s %9s %8s %11s\n", "model", "recipe", "batch", "seq", "tokens/s", "ms/step",
              "GFLOP/s", "% GEMM", "vs bf16");
  Json rows = Json::array();
  for (const std::string& mname : models) {
    ModelConfig cfg = ModelConfig::preset(mname);
    const int64_t b = mname == "tiny" ? 16 : 8, t = mname == "tiny" ? 128 : 256;
    double bf16_ms = 0;
    for (const std::string& rname : recipes) {
      Transformer<float> model(cfg);
      model.init(1);
      model.set_recipe(Recipe::preset(rname));
      std::vector<int32_t> x(static_cast<size_t>(b * t)), y(static_cast<size_t>(b * t));
      for (size_t i = 0; i < x.size(); ++i) {
        x[i] = static_cast<int32_t>(philox_word(3, 0, i) % static_cast<uint32_t>(cfg.tokenizer == "byte" ? 256 : 50257));
        y[i] = static_cast<int32_t>(philox_word(4, 0, i) % static_cast<uint32_t>(cfg.tokenizer == "byte" ? 256 : 50257));
      }
      std::vector<float> m(static_cast<size_t>(model.num_params())), v(m.size());
      double best = 1e30;
      for (int s = 0; s < steps + 1; ++s) {  // the first step warms up
        StepContext ctx;
        ctx.seed = 1;
        ctx.step = static_cast<uint64_t>(s);
        const auto t0 = Clock::now();
        model.zero_grad();
        model.forward(x.data(), y.data(), b, t, ctx);
        model.backward(ctx);
        ops::adamw_update(model.weights(), model.grads(), m.data(), v.data(), model.num_params(), 1e-4f, 0.9f, 0.95f,
                          1e-8f, 0.0f, s + 1);
        const double sec = std::chrono::duration<double>(Clock::now() - t0).count();
        if (s > 0) best = std::min(best, sec);
      }
      const double tps = static_cast<double>(b * t) / best;
      const double gf = tps * flops_per_token(cfg, t) / 1e9;
      if (rname == "bf16") bf16_ms = best * 1e3;
      std::printf("%-6s %-11s %7lld %6lld %10.0f %9.1f %9.1f %7.1f%% %10s\n", mname.c_str(), rname.c_str(),
                  static_cast<long long>(b), static_cast<long long>(t), tps, best * 1e3, gf, 100 * gf / gemm,
                  bf16_ms > 0 ? (std::to_string(best * 1e3 / bf16_ms).substr(0, 4) + "x").c_str() : "-");
      std::fflush(stdout);
      Json r = Json::object();
      r["model"] = mname;
      r["recipe"] = rname;
      r["batch"] = b;
      r["seq"] = t;
      r["tokens_per_s"] = tps;
      r["ms_per_step"] = best * 1e3;
      r["gflops"] = gf;
      r["pct_of_gemm"] = 100 * gf / gemm;
      if (bf16_ms > 0) r["step_time_vs_bf16"] = best * 1e3 / bf16_ms;
      rows.push_back(r);
    }
  }
  if (!json_path.empty()) {
    Json out = Json::object();
    out["gemm_gflops"] = gemm;
    out["rows"] = rows;
    write_file_atomic(json_path, out.dump(2) + "\n");
  }
  return 0;
}
