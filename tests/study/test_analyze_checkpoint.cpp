// nibble analyze --checkpoint: the operands it captures, a row recomputed from an independent
// capture, the transforms' applicability and the best-transform summary.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "nibble/data/corpus.hpp"
#include "nibble/data/dataset.hpp"
#include "nibble/data/loader.hpp"
#include "nibble/data/tokenizer.hpp"
#include "nibble/fileio.hpp"
#include "nibble/quant/pipeline.hpp"
#include "nibble/quant/quantizer.hpp"
#include "nibble/quant/rht.hpp"
#include "nibble/quant/stats.hpp"
#include "nibble/study/analyze.hpp"
#include "nibble/train/checkpoint.hpp"
#include "nibble/train/trainer.hpp"
#include "support/cli_runner.hpp"
#include "support/small_run.hpp"

using namespace nibble;
using nibble::testing::ScratchDir;
namespace fs = std::filesystem;

TEST(AnalyzeCheckpoint, OperandsTransformsAndAnIndependentRow) {
  ScratchDir d;
  const TrainConfig c = nibble::testing::train_wide_small_run(d, "run");

  CheckpointAnalysisConfig a;
  a.checkpoint = d.file("run");
  a.batch = 2;
  a.seq = 32;
  a.seed = 5;
  a.out = d.file("an");
  const Json j = analyze_checkpoint(a);
  // 2 layers × 4 projections × (x, w, dy); x and dy: 6 transforms (spectral for dy only: +1),
  // w: 4 (no centring); × 3 formats. Widths 128/256/512/128 fit every RHT size.
  std::set<std::string> tensors;
  size_t spectral = 0, centred_w = 0;
  for (const Json& r : j.at("operands").as_array()) {
    tensors.insert(r.at("layer").as_string() + " " + r.at("operand").as_string());
    spectral += r.at("transform").as_string() == "spectral";
    centred_w += r.at("operand").as_string() == "w" && r.at("transform").as_string().rfind("center", 0) == 0;
    EXPECT_TRUE(r.at("operand").as_string() == "dy" || r.at("transform").as_string() != "spectral");
  }
  EXPECT_EQ(tensors.size(), 2u * 4u * 3u);
  EXPECT_EQ(spectral, 2u * 4u * 3u);  // one per dY per format
  EXPECT_EQ(centred_w, 0u);
  EXPECT_EQ(j.at("operands").as_array().size(), 3u * 2u * 4u * (6u + 4u + 7u));
  EXPECT_EQ(j.at("anisotropy").as_array().size(), 2u * 4u * 2u);

  // independent: capture layer 0's qkv input ourselves from the same batch and quantize it
  Transformer<float> m(c.model);
  const Checkpoint ck = load_checkpoint(resolve_checkpoint_dir(d.file("run")), m.params(), false);
  std::copy(ck.weights.begin(), ck.weights.end(), m.weights());
  m.set_recipe(Recipe::preset("bf16"));
  const auto tok = make_tokenizer("byte");
  const TokenDataset ds = TokenDataset::from_text(d.file("text.txt"), *tok, c.val_fraction);
  DataLoader loader(ds.val, 2, 32, 5, false);
  const Batch b = loader.next();
  std::vector<float> x;
  m.set_capture([&](const std::string& layer, const std::string& op, const float* p, int64_t r, int64_t k) {
    if (layer == "model.layers.0.self_attn.qkv_proj" && op == "x") x.assign(p, p + r * k);
  });
  StepContext ctx;
  ctx.seed = 5;
  m.forward(b.inputs.data(), b.targets.data(), b.batch_size, b.seq_len, ctx);
  ASSERT_EQ(x.size(), 64u * 128u);
  QuantSpec q = QuantSpec::for_format(Format::NVFP4);
  q.seed = 5;
  std::vector<float> hat(x.size());
  quantize_dequantize(x.data(), 64, 128, q, hat.data());
  const double snr = error_stats(x.data(), hat.data(), static_cast<int64_t>(x.size())).snr_db;
  // the grid's shrinkage under RHT16: in the rotated coordinates, where the rounding happened
  std::vector<float> y = x, yhat(x.size());
  const std::vector<float> signs = rht_signs(16, 5, TransformSpec{}.rht_stream);
  rht_forward(y.data(), 64, 128, 16, signs.data());
  quantize_dequantize(y.data(), 64, 128, q, yhat.data());
  const double grid_rht = error_stats(y.data(), yhat.data(), static_cast<int64_t>(y.size())).shrinkage;
  int found = 0;
  for (const Json& r : j.at("operands").as_array()) {
    if (r.at("layer").as_string() != "model.layers.0.self_attn.qkv_proj" || r.at("operand").as_string() != "x" ||
        r.at("format").as_string() != "nvfp4")
      continue;
    if (r.at("transform").as_string() == "none") {
      EXPECT_DOUBLE_EQ(r.at("snr_db").as_double(), snr);
      // no transform: the quantized domain is X's own
      EXPECT_EQ(r.at("grid_shrinkage").as_double(), r.at("shrinkage").as_double());
      ++found;
    }
    if (r.at("transform").as_string() == "rht16") {
      EXPECT_NEAR(r.at("grid_shrinkage").as_double(), grid_rht, 1e-6);
      EXPECT_NE(r.at("grid_shrinkage").as_double(), r.at("shrinkage").as_double());
      ++found;
    }
  }
  EXPECT_EQ(found, 2);
  // the summary: one row per (operand, format, transform), each the mean of its layers' rows
  EXPECT_EQ(j.at("summary").as_array().size(), 3u * (6u + 4u + 7u));
  for (const Json& sm : j.at("summary").as_array()) {
    double sum = 0;
    int64_t n = 0;
    for (const Json& r : j.at("operands").as_array())
      if (r.at("operand").as_string() == sm.at("operand").as_string() && r.at("format").as_string() == sm.at("format").as_string() &&
          r.at("transform").as_string() == sm.at("transform").as_string()) {
        sum += r.at("grid_shrinkage").as_double();
        ++n;
      }
    EXPECT_EQ(sm.at("tensors").as_int64(), n);
    EXPECT_NEAR(sm.at("grid_shrinkage").as_double(), sum / static_cast<double>(n), 1e-15);
  }
  // the best transform has the highest SNR of its tensor and format
  for (const Json& best : j.at("best").as_array()) {
    for (const Json& r : j.at("operands").as_array()) {
      const std::string key = r.at("layer").as_string() + " " + r.at("operand").as_string() + " " + r.at("format").as_string();
      if (key == best.at("tensor").as_string()) {
        EXPECT_LE(r.at("snr_db").as_double(), best.at("snr_db").as_double());
      }
    }
  }
  for (const char* f : {"results.md", "results.json", "snr_nvfp4.svg", "snr_mxfp4.svg", "snr_int4.svg"})
    EXPECT_TRUE(fs::exists(a.out + "/" + f)) << f;
  const auto cli = nibble::testing::run_nibble("analyze --checkpoint " + d.file("run") + " --batch 1 --seq 32 --out " + d.file("an2"));
  EXPECT_EQ(cli.code, 0) << cli.out;
  const auto bad = nibble::testing::run_nibble("analyze --out " + d.file("an3"));
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.out.find("--checkpoint"), std::string::npos) << bad.out;
}
