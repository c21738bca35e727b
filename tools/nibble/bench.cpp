// nibble bench: kernel and training throughput on this machine (table + JSON).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "args.hpp"
#include "commands.hpp"
#include "model_loading.hpp"
#include "nibble/bench.hpp"
#include "nibble/cuda.hpp"
#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/philox.hpp"
#include "nibble/train/engine.hpp"
#include "table.hpp"

namespace nibble::cli {
namespace {


// Training FLOPs per token (the usual 6·N for the matmul weights, head included, plus the
// causal attention's score and value products: 6·L·T·d for sequence T).
double train_flops_per_token(const ModelConfig& c, int64_t seq) {
  const double d = static_cast<double>(c.dim), hd = static_cast<double>(c.head_dim());
  const double qkv = d * hd * static_cast<double>(c.n_heads + 2 * c.n_kv_heads);
  const double per_layer = qkv + static_cast<double>(c.n_heads) * hd * d + 3.0 * d * static_cast<double>(c.ffn_dim);
  const double matmul = per_layer * c.n_layers + d * static_cast<double>(c.vocab_size);
  return 6.0 * matmul + 6.0 * c.n_layers * static_cast<double>(seq) * static_cast<double>(c.n_heads) * hd;
}

// Steady-state training step time: forward, backward, gradient norm and AdamW on random
// tokens, after warm-up steps (which also size every buffer).
Json bench_training(const std::string& device, const std::string& model, const std::string& recipe, int64_t batch,
                    int64_t seq, int steps, double peak, bool profile) {
  ModelConfig cfg = ModelConfig::resolve(model);
  if (seq > cfg.max_seq) fail("--seq ", seq, " exceeds model ", model, "'s max_seq ", cfg.max_seq);
  auto eng = make_engine(device, cfg);
  eng->set_recipe(Recipe::preset(recipe));
  eng->init(1);
  const int64_t n = batch * seq;
  std::vector<int32_t> tok(static_cast<size_t>(n)), tgt(tok.size());
  for (int64_t i = 0; i < n; ++i) {
    tok[static_cast<size_t>(i)] = static_cast<int32_t>(philox_word(5, 1, static_cast<uint64_t>(i)) % cfg.vocab_size);
    tgt[static_cast<size_t>(i)] = static_cast<int32_t>(philox_word(5, 2, static_cast<uint64_t>(i)) % cfg.vocab_size);
  }
  AdamHyper h;
  auto step = [&](int64_t s) {
    StepContext ctx;
    ctx.seed = 1;
    ctx.step = static_cast<uint64_t>(s);
    eng->zero_grad();
    eng->forward(tok.data(), tgt.data(), batch, seq, ctx);
    eng->backward(ctx);
    const double gn = eng->grad_norm();
    eng->optimizer_step(h, 1e-4f, gn > 1.0 ? static_cast<float>(1.0 / gn) : 1.0f, s + 1);
  };
  for (int s = 0; s < 2; ++s) step(s);
  eng->synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int s = 0; s < steps; ++s) step(2 + s);
  eng->synchronize();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double step_ms = 1e3 * secs / steps;
  const double tps = static_cast<double>(n) * steps / secs;
  Json r = Json::object();
  r["model"] = cfg.name;
  r["recipe"] = recipe;
  r["batch"] = batch;
  r["seq"] = seq;
  r["params"] = eng->num_params();
  r["step_ms"] = step_ms;
  r["tokens_per_s"] = tps;
  r["mfu_pct"] = peak > 0 ? 100.0 * tps * train_flops_per_token(cfg, seq) / peak : 0.0;
  if (profile) {
    // Two more steps with an event pair around every op: where a step's time goes.
    constexpr int kProfiled = 2;
    eng->set_profiling(true);
    for (int s = 0; s < kProfiled; ++s) step(2 + steps + s);
    Json p = eng->profile();
    eng->set_profiling(false);
    Json per_step = Json::object();
    for (const auto& [k, v] : p.as_object()) per_step[k] = v.as_double() / kProfiled;
    r["profile_ms_per_step"] = per_step;
  }
  return r;
}

}  // namespace

int run_bench(const std::vector<std::string>& argv) {
  Args a("bench", "nibble bench [options]",
         "Measures this machine: the device copy bandwidth and the 4-bit quantizers as a share\n"
         "of it, cuBLASLt bf16 GEMMs against each recipe's full linear layer, and end-to-end\n"
         "training tokens/s and MFU (bf16 dense peak) per model and recipe. Prints tables and\n"
         "writes everything to --json.");
  a.option("device", "D", "cpu | cuda | auto (the kernel benchmarks need cuda)", default_device());
  a.option("models", "LIST", "model presets for the training benchmark", "124m");
  a.option("recipes", "LIST", "recipes", "bf16,nvfp4,mxfp4,nvfp4-mean,ufp4,ufp4-mean");
  a.option("batch", "B", "sequences per training step", "16");
  a.option("seq", "T", "tokens per sequence", "1024");
  a.option("steps", "N", "timed training steps (after 2 warm-up steps)", "10");
  a.option("only", "WHAT", "kernels | spectral | train | all (spectral: metis's randomized SVD\npiece by piece, and the layers of --recipes)", "all");
  a.option("json", "FILE", "write the results as JSON");
  a.flag("profile", "also time every op of a training step (CUDA events) and print the breakdown");
  if (!a.parse(argv)) return 0;
  const std::string device = resolve_device(a.str("device"));
  const std::string only = a.choice("only", {"kernels", "spectral", "train", "all"});
  const std::vector<std::string> recipes = split_list(a.str("recipes"));
  for (const auto& r : recipes) (void)Recipe::preset(r);  // unknown names fail before any work
  Json out = Json::object();
  out["device"] = device == "cuda" ? cuda::device_summary() : std::string("cpu");
  const double peak = device == "cuda" ? bench::gpu_bf16_peak_flops() : 0.0;
  std::printf("device: %s\n", out.at("device").as_string().c_str());
  const std::vector<bench::GemmShape> shapes = {{"124m qkv", 16384, 768, 2304},
                                                {"124m gate_up", 16384, 768, 4096},
                                                {"124m down", 16384, 2048, 768},
                                                {"350m gate_up", 8192, 1024, 5632}};
  auto gemm_table = [&] {
    const Json g = bench::gpu_gemm_bench(shapes, recipes);
    Table tg({"shape (tokens x in -> out)", "recipe", "op", "ms", "TFLOP/s", "% cuBLAS bf16"});
    for (const Json& r : g.at("results").as_array())
      tg.row({r.at("shape").as_string(), r.at("recipe").as_string(), r.at("op").as_string(), fmt(r.at("ms").as_double(), 3),
              fmt(r.at("tflops").as_double(), 1), fmt(r.at("pct_of_cublas_bf16").as_double(), 1)});
    std::printf("\n%s", tg.str().c_str());
    out["gemm"] = g;
  };
  if (only != "train" && device != "cuda") fail("the kernel benchmarks need --device cuda (use --only train on the CPU)");
  if (only == "spectral") {
    // dY of the 124m layers at 16 × 1024 tokens, at the ranks metis gives them (K/16 capped at 64)
    const Json s = bench::gpu_spectral_bench({{"124m qkv dY", 16384, 2304, 64},
                                              {"124m gate_up dY", 16384, 4096, 64},
                                              {"124m o, down dY", 16384, 768, 48}});
    Table ts({"dY [rows, cols], l", "piece", "ms", "per SVD", "ms per SVD"});
    for (const Json& r : s.at("results").as_array()) {
      const int64_t per = r.at("per_svd").as_int64();
      const double ms = r.at("ms").as_double();
      ts.row({r.at("shape").as_string() + " [" + std::to_string(r.at("rows").as_int64()) + ", " +
                  std::to_string(r.at("cols").as_int64()) + "], " + std::to_string(r.at("l").as_int64()),
              r.at("op").as_string(), fmt(ms, 3), per > 0 ? std::to_string(per) : per == 0 ? "-" : "all",
              per > 0 ? fmt(ms * static_cast<double>(per), 3) : per == 0 ? "-" : fmt(ms, 3)});
    }
    std::printf("\n%s", ts.str().c_str());
    out["spectral"] = s;
    gemm_table();
  } else if (only != "train") {
    const Json q = bench::gpu_quantizer_bench(8192, 8192);
    Table tq({"quantizer op (8192x8192 fp32)", "ms", "GB/s", "% of copy"});
    for (const Json& r : q.at("results").as_array())
      tq.row({r.at("op").as_string(), fmt(r.at("ms").as_double(), 3), fmt(r.at("gb_per_s").as_double(), 0),
              fmt(r.at("pct_of_copy").as_double(), 1)});
    std::printf("\n%s", tq.str().c_str());
    out["quantizer"] = q;
    gemm_table();
  }
  if (only == "train" || only == "all") {
    Table tt({"model", "recipe", "batch x seq", "step ms", "tokens/s", "MFU %", "vs bf16"});
    Json rows = Json::array();
    for (const std::string& m : split_list(a.str("models"))) {
      double bf16_ms = 0;
      for (const std::string& r : recipes) {
        Json row = bench_training(device, m, r, a.integer("batch"), a.integer("seq"), static_cast<int>(a.integer("steps")), peak,
                                  a.flag_set("profile"));
        if (row.contains("profile_ms_per_step")) {
          Table tp({"op (" + m + ", " + r + ")", "ms/step", "% of step"});
          const double total = row.at("step_ms").as_double();
          std::vector<std::pair<double, std::string>> ops;
          for (const auto& [k, v] : row.at("profile_ms_per_step").as_object()) ops.push_back({v.as_double(), k});
          std::sort(ops.rbegin(), ops.rend());
          for (const auto& [ms, k] : ops) tp.row({k, fmt(ms, 2), fmt(100.0 * ms / total, 1)});
          std::printf("\n%s", tp.str().c_str());
        }
        if (r == "bf16") bf16_ms = row.at("step_ms").as_double();
        row["step_vs_bf16"] = bf16_ms > 0 ? row.at("step_ms").as_double() / bf16_ms : 0.0;
        tt.row({m, r, std::to_string(a.integer("batch")) + " x " + std::to_string(a.integer("seq")),
                fmt(row.at("step_ms").as_double(), 1), fmt(row.at("tokens_per_s").as_double(), 0),
                fmt(row.at("mfu_pct").as_double(), 1), bf16_ms > 0 ? fmt(row.at("step_vs_bf16").as_double(), 2) + "x" : "-"});
        rows.push_back(row);
        std::fflush(stdout);
      }
    }
    std::printf("\n%s", tt.str().c_str());
    out["training"] = rows;
  }
  if (a.has("json")) write_file_atomic(a.str("json"), out.dump(2) + "\n");
  return 0;
}

}  // namespace nibble::cli
