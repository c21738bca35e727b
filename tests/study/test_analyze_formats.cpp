// nibble analyze formats: each row recomputed independently, the depth effect's zero for bf16
// against itself, and the report files.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "nibble/data/corpus.hpp"
#include "nibble/data/dataset.hpp"
#include "nibble/data/loader.hpp"
#include "nibble/data/tokenizer.hpp"
#include "nibble/nn/model.hpp"
#include "nibble/train/checkpoint.hpp"
#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/quant/quantizer.hpp"
#include "nibble/report/metrics.hpp"
#include "nibble/quant/rht.hpp"
#include "nibble/quant/synthetic.hpp"
#include "nibble/study/analyze.hpp"
#include "nibble/train/trainer.hpp"
#include "support/cli_runner.hpp"
#include "support/small_run.hpp"

using namespace nibble;
using nibble::testing::ScratchDir;
namespace fs = std::filesystem;

TEST(AnalyzeFormats, RowsMatchAnIndependentQuantizeAndShrinkage) {
  FormatsConfig c;
  c.rows = 64;
  c.cols = 256;
  c.seed = 3;
  c.distributions = {"laplace"};
  const Json j = analyze_formats(c);
  // 3 formats × 4 RHT sizes × 2 roundings
  ASSERT_EQ(j.at("formats").as_array().size(), 24u);
  SyntheticSpec s;
  s.kind = SyntheticKind::Laplace;
  s.rows = 64;
  s.cols = 256;
  s.seed = 3;
  const std::vector<float> x = synthetic_matrix(s);
  for (const Json& row : j.at("formats").as_array()) {
    const Format f = format_from_name(row.at("format").as_string());
    const int rht = static_cast<int>(row.at("rht").as_int64());
    QuantSpec q = QuantSpec::for_format(f);
    q.rounding = rounding_from_name(row.at("rounding").as_string());
    q.seed = 3;
    std::vector<float> op = x;
    if (rht) {
      const std::vector<float> signs = rht_signs(rht, 3, 0);
      rht_forward(op.data(), 64, 256, rht, signs.data());
    }
    std::vector<float> hat(op.size());
    quantize_dequantize(op.data(), 64, 256, q, hat.data());
    double num = 0, den = 0;
    for (size_t i = 0; i < op.size(); ++i) {
      num += std::fabs(hat[i]) - std::fabs(op[i]);
      den += std::fabs(op[i]);
    }
    // the same sums in another order (float64), a small difference of two large sums: equal to
    // ~1e-11 absolute; another RHT, rounding or format moves shrinkage by more than 1e-5
    EXPECT_NEAR(row.at("shrinkage").as_double(), num / den, 1e-10) << row.dump();
    EXPECT_GT(row.at("snr_db").as_double(), 10.0) << row.dump();
    EXPECT_LE(row.at("code_entropy_bits").as_double(), 4.0);
  }
}

TEST(AnalyzeFormats, DepthEffectIsZeroForBf16AgainstItselfAndWritesTheReport) {
  ScratchDir d;
  TrainConfig c = nibble::testing::small_run_config(d, "run");
  c.model.dim = 128;
  c.model.n_layers = 3;
  c.model.n_heads = 4;
  c.model.n_kv_heads = 4;
  nibble::testing::train_quietly(c);
  FormatsConfig f;
  f.rows = 32;
  f.cols = 128;
  f.distributions = {"gaussian"};
  f.checkpoint = d.file("run");
  f.depth_recipes = {"bf16", "nvfp4"};
  f.depth_batch = 2;
  f.out = d.file("fmt");
  const Json j = analyze_formats(f);
  const auto& depth = j.at("depth").as_array();
  ASSERT_EQ(depth.size(), 2u);
  ASSERT_EQ(depth[0].at("rel_err").as_array().size(), 3u);  // one per block
  for (const Json& e : depth[0].at("rel_err").as_array()) EXPECT_EQ(e.as_double(), 0.0);  // bf16 vs bf16
  for (const Json& e : depth[1].at("rel_err").as_array()) {
    EXPECT_GT(e.as_double(), 1e-4);  // 4-bit moves the stream
    EXPECT_LT(e.as_double(), 1.0);
  }
  // weights of the first, middle and last block: 3 blocks × 7 projections, each 24 configurations
  // (RHT128 fits the 128-wide inputs; down_proj's 128-wide rows too)
  size_t weight_rows = 0;
  for (const Json& r : j.at("formats").as_array())
    if (r.at("tensor").as_string().rfind("model.layers.", 0) == 0) ++weight_rows;
  EXPECT_EQ(weight_rows, 3u * 7u * 24u + 3u * 4u * 2u * 24u);  // + X and dY of 4 projections
  // a captured X, recomputed from our own capture of the same batch: layer 1's qkv input
  {
    Transformer<float> m(c.model);
    const Checkpoint ck = load_checkpoint(resolve_checkpoint_dir(d.file("run")), m.params(), false);
    std::copy(ck.weights.begin(), ck.weights.end(), m.weights());
    m.set_recipe(Recipe::preset("bf16"));
    const auto tok = make_tokenizer(c.model.tokenizer);
    const TokenDataset ds = open_run_data(c.data_dir, c.text_file, *tok, c.val_fraction);
    DataLoader loader(ds.val.empty() ? ds.train : ds.val, 2, c.seq, c.seed, false);
    const Batch b = loader.next();
    std::vector<float> x;
    int64_t cols = 0;
    m.set_capture([&](const std::string& layer, const std::string& op, const float* p, int64_t r, int64_t k) {
      if (layer == "model.layers.1.self_attn.qkv_proj" && op == "x") {
        x.assign(p, p + r * k);
        cols = k;
      }
    });
    StepContext ctx;
    ctx.seed = c.seed;
    m.forward(b.inputs.data(), b.targets.data(), b.batch_size, b.seq_len, ctx);
    ASSERT_EQ(cols, 128);
    const int64_t rows = static_cast<int64_t>(x.size()) / cols;  // fewer than the 1024 kept
    QuantSpec q = QuantSpec::for_format(Format::INT4);
    q.seed = f.seed;
    std::vector<float> op = x, hat(x.size());
    const std::vector<float> signs = rht_signs(16, f.seed, 0);
    rht_forward(op.data(), rows, cols, 16, signs.data());
    quantize_dequantize(op.data(), rows, cols, q, hat.data());
    double num = 0, den = 0;
    for (size_t i = 0; i < op.size(); ++i) {
      num += std::fabs(hat[i]) - std::fabs(op[i]);
      den += std::fabs(op[i]);
    }
    int found = 0;
    for (const Json& r : j.at("formats").as_array())
      if (r.at("tensor").as_string() == "model.layers.1.self_attn.qkv_proj:x" && r.at("format").as_string() == "int4" &&
          r.at("rht").as_int64() == 16 && r.at("rounding").as_string() == "rne") {
        EXPECT_NEAR(r.at("shrinkage").as_double(), num / den, 1e-10);
        ++found;
      }
    EXPECT_EQ(found, 1);
  }
  // the means by kind: each the mean of its RNE rows
  ASSERT_FALSE(j.at("by_kind").as_array().empty());
  for (const Json& k : j.at("by_kind").as_array()) {
    double sum = 0;
    int64_t n = 0;
    for (const Json& r : j.at("formats").as_array()) {
      const std::string t = r.at("tensor").as_string();
      if (t.rfind("model.layers.", 0) != 0 || r.at("rounding").as_string() != "rne" ||
          r.at("format").as_string() != k.at("format").as_string() || r.at("rht").as_int64() != k.at("rht").as_int64())
        continue;
      const std::string kind = t.size() > 3 && t.substr(t.size() - 3) == ":dy" ? "dY"
                               : t.size() > 2 && t.substr(t.size() - 2) == ":x" ? "X"
                                                                                  : "W";
      if (kind != k.at("kind").as_string()) continue;
      sum += r.at("shrinkage").as_double();
      ++n;
    }
    EXPECT_EQ(k.at("tensors").as_int64(), n) << k.dump();
    EXPECT_NEAR(k.at("shrinkage").as_double(), sum / static_cast<double>(n), 1e-15) << k.dump();
  }
  for (const char* file : {"results.md", "results.json", "depth.svg"}) EXPECT_TRUE(fs::exists(f.out + "/" + file)) << file;
  const auto bad = nibble::testing::run_nibble("analyze --out " + d.file("x"));
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.out.find("formats"), std::string::npos) << bad.out;
}

TEST(AnalyzeStats, HeatmapsHoldTheLoggedValues) {
  ScratchDir d;
  TrainConfig c = nibble::testing::small_run_config(d, "run");
  c.steps = 5;
  c.stats_every = 2;
  nibble::testing::train_quietly(c);
  const Json j = analyze_stats_log(d.file("run"), d.file("st"));
  ASSERT_EQ(j.at("panels").as_array().size(), 7u);
  const Json& p = j.at("panels").as_array()[0];  // fprop x mean_energy_share
  ASSERT_EQ(p.at("layers").as_array().size(), 8u);  // 2 blocks × 4 projections
  ASSERT_EQ(p.at("steps").as_array().size(), 3u);   // steps 0, 2, 4
  // every cell equals the log's row, read independently
  size_t checked = 0;
  for (const std::string& line : [&] {
         std::vector<std::string> v;
         const std::string all = read_file(d.file("run/stats.jsonl"));
         size_t a = 0;
         for (size_t b = all.find('\n'); b != std::string::npos; a = b + 1, b = all.find('\n', a)) v.push_back(all.substr(a, b - a));
         return v;
       }()) {
    const Json r = Json::parse(line, "stats.jsonl");
    if (r.at("gemm").as_string() != "fprop" || r.at("operand").as_string() != "x") continue;
    size_t li = 0, si = 0;
    while (p.at("layers").as_array()[li].as_string() != r.at("layer").as_string()) ++li;
    while (p.at("steps").as_array()[si].as_int64() != r.at("step").as_int64()) ++si;
    EXPECT_EQ(p.at("values").as_array()[li * 3 + si].as_double(), r.at("mean_energy_share").as_double());
    ++checked;
  }
  EXPECT_EQ(checked, 24u);
  // the per-step summary, recomputed from the log's rows: means over the 8 layers
  const Json& over = j.at("over_steps");
  ASSERT_EQ(over.as_array().size(), 3u);
  for (const Json& o : over.as_array()) {
    double share = 0, ratio = 0, cos = 0;
    int n = 0;
    for (const Json& r : report::read_metrics_jsonl(d.file("run/stats.jsonl")).rows) {
      if (r.at("step").as_int64() != o.at("step").as_int64() || r.at("gemm").as_string() != "fprop" ||
          r.at("operand").as_string() != "x")
        continue;
      share += r.at("mean_energy_share").as_double();
      ratio += r.at("mean_energy_share").as_double() / r.at("top1_energy_share").as_double();
      cos += r.at("cos_mu_v1").as_double();
      ++n;
    }
    ASSERT_EQ(n, 8);
    EXPECT_NEAR(o.at("x").at("mean_energy_share").as_double(), share / n, 1e-15);
    EXPECT_NEAR(o.at("x").at("mean_share_of_top1").as_double(), ratio / n, 1e-15);
    EXPECT_NEAR(o.at("x").at("cos_mu_v1").as_double(), cos / n, 1e-15);
    EXPECT_LE(o.at("x").at("mean_share_of_top1").as_double(), 1.0 + 1e-9);  // T‖μ‖² ≤ σ₁²
    EXPECT_EQ(o.at("dy").at("layers").as_int64(), 8);
  }
  EXPECT_NE(read_file(d.file("st/results.md")).find("## X per layer at step 4"), std::string::npos);
  // A log with every step twice (as older resumed runs could leave): rows logged twice count once.
  const std::string log = read_file(d.file("run/stats.jsonl"));
  write_file_atomic(d.file("run/stats.jsonl"), log + log);
  const Json again = analyze_stats_log(d.file("run"), d.file("st3"));
  ASSERT_EQ(again.at("over_steps").as_array().size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(again.at("over_steps").as_array()[i].at("x").at("layers").as_int64(), 8);
    EXPECT_EQ(again.at("over_steps").as_array()[i].at("x").at("mean_energy_share").as_double(),
              over.as_array()[i].at("x").at("mean_energy_share").as_double());
  }
  EXPECT_TRUE(fs::exists(d.file("st/x_mean_energy_share.svg")));
  EXPECT_TRUE(fs::exists(d.file("st/over_steps.svg")));
  EXPECT_THROW(analyze_stats_log(d.file("text.txt"), d.file("st2")), Error);
}

// The CUDA engine logs each layer's statistics seconds on its fprop X row; analyze stats sums
// them per step (hand-written log: the sums are known).
TEST(AnalyzeStats, SumsTheCollectionCostOverLayers) {
  ScratchDir d;
  fs::create_directories(d.file("run"));
  std::string log;
  for (int step : {0, 10})
    for (int l = 0; l < 3; ++l) {
      const double sec = 0.5 * (l + 1) + step;
      log += "{\"step\":" + std::to_string(step) + ",\"layer\":\"l" + std::to_string(l) +
             "\",\"gemm\":\"fprop\",\"operand\":\"x\",\"mean_energy_share\":0.1,\"top1_energy_share\":0.2,"
             "\"cos_mu_v1\":0.9,\"amax_inflation\":1.5,\"block_amax_inflation\":1.1,\"stats_seconds\":" +
             std::to_string(sec) + "}\n";
    }
  write_file_atomic(d.file("run/stats.jsonl"), log);
  const Json j = analyze_stats_log(d.file("run"), d.file("st"));
  const auto& over = j.at("over_steps").as_array();
  ASSERT_EQ(over.size(), 2u);
  EXPECT_EQ(over[0].at("collection_cost").at("layers").as_int64(), 3);
  EXPECT_DOUBLE_EQ(over[0].at("collection_cost").at("seconds").as_double(), 3.0);   // 0.5 + 1 + 1.5
  EXPECT_DOUBLE_EQ(over[1].at("collection_cost").at("seconds").as_double(), 33.0);  // + 10 each
  EXPECT_NE(read_file(d.file("st/results.md")).find("|   10 |      3 |   33.00 |"), std::string::npos)
      << read_file(d.file("st/results.md"));
}
