// The training loop: schedule, learning, bit-identical resume, stopping on a non-finite
// loss, and checkpoints that a failed write never replaces.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "nibble/data/corpus.hpp"
#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/report/metrics.hpp"
#include "nibble/train/checkpoint.hpp"
#include "nibble/train/trainer.hpp"
#include "support/cli_runner.hpp"

using namespace nibble;
namespace fs = std::filesystem;
using nibble::testing::ScratchDir;

namespace {

TrainConfig small_run(const ScratchDir& d, const std::string& recipe) {
  // ~100 KB of the embedded corpus and a model small enough for a few seconds of training
  const std::string text = read_file(default_corpus_path()).substr(0, 100000);
  write_file_atomic(d.file("text.txt"), text);
  TrainConfig c;
  c.model = ModelConfig::preset("tiny");
  c.model.name = "test";
  c.model.dim = 64;
  c.model.n_layers = 2;
  c.model.n_heads = 4;
  c.model.n_kv_heads = 2;
  c.model.ffn_dim = 128;
  c.model.max_seq = 64;
  c.recipe = Recipe::preset(recipe);
  c.text_file = d.file("text.txt");
  c.batch = 4;
  c.seq = 32;
  c.steps = 12;
  c.lr = 3e-3;
  c.log_every = 1;
  c.eval_every = 6;
  c.eval_batches = 2;
  c.save_every = 0;
  c.out = d.file("run");
  return c;
}

std::vector<double> losses(const std::string& run) {
  return report::read_metrics_jsonl(run + "/metrics.jsonl").column("loss");
}

TrainOptions quiet() {
  TrainOptions o;
  o.quiet = true;
  return o;
}

}  // namespace

TEST(TrainSchedule, WarmupThenCosine) {
  TrainConfig c;
  c.steps = 110;
  c.lr = 1.0;
  c.min_lr_ratio = 0.1;
  c.warmup_steps = 10;
  EXPECT_DOUBLE_EQ(c.lr_at(0), 0.1);
  EXPECT_DOUBLE_EQ(c.lr_at(9), 1.0);
  EXPECT_DOUBLE_EQ(c.lr_at(10), 1.0);
  EXPECT_NEAR(c.lr_at(60), 0.55, 1e-12);  // half way: (1 + 0.1) / 2
  EXPECT_NEAR(c.lr_at(110), 0.1, 1e-12);
  c.warmup_steps = -1;
  EXPECT_EQ(c.warmup(), 11);  // min(100, steps / 10)
}

TEST(TrainLoop, LossDecreasesAndOutputsAreComplete) {
  ScratchDir d;
  TrainConfig c = small_run(d, "nvfp4");
  c.steps = 30;
  c.eval_every = 10;
  c.stats_every = 10;
  const TrainResult r = train(c, quiet());
  EXPECT_EQ(r.steps, 30);
  const std::vector<double> l = losses(c.out);
  ASSERT_EQ(l.size(), 30u);
  EXPECT_NEAR(l.front(), std::log(256.0), 0.3);  // an untrained byte model
  EXPECT_LT(l.back(), l.front() - 1.5);
  for (const char* f : {"config.json", "metrics.jsonl", "loss.svg", "stats.jsonl", "final/model.safetensors",
                        "final/optimizer.safetensors", "final/config.json", "final/trainer.json", "latest"})
    EXPECT_TRUE(fs::exists(c.out + "/" + f)) << f;
  const report::MetricsLog log = report::read_metrics_jsonl(c.out + "/metrics.jsonl");
  for (const char* k : {"step", "loss", "lr", "grad_norm", "tokens_per_s", "val_loss"}) EXPECT_TRUE(log.has(k)) << k;
  // per-layer statistics of X, W and dY were logged at steps 0, 10, 20
  const report::MetricsLog stats = report::read_metrics_jsonl(c.out + "/stats.jsonl");
  EXPECT_GT(stats.rows.size(), 10u);
  EXPECT_TRUE(stats.has("mean_energy_share"));
  EXPECT_TRUE(stats.has("snr_db"));
  // the resolved config reads back
  const TrainConfig back = TrainConfig::from_json(Json::parse(read_file(c.out + "/config.json"), "config.json"), "config.json");
  EXPECT_EQ(back.to_json().dump(), c.to_json().dump());
}

TEST(TrainLoop, ResumeContinuesBitIdentically) {
  for (const std::string recipe : {"nvfp4", "ufp4-mean"}) {
    ScratchDir a, b;
    TrainConfig ca = small_run(a, recipe), cb = small_run(b, recipe);
    train(ca, quiet());
    TrainOptions half = quiet();
    half.stop_after = 6;
    const TrainResult h = train(cb, half);
    EXPECT_TRUE(h.stopped_early);
    EXPECT_TRUE(fs::exists(cb.out + "/step_000006/model.safetensors"));
    TrainOptions rest = quiet();
    rest.resume = cb.out;
    train(cb, rest);
    const std::vector<double> la = losses(ca.out), lb = losses(cb.out);
    ASSERT_EQ(la.size(), 12u);
    ASSERT_EQ(lb.size(), 12u);
    for (size_t i = 0; i < la.size(); ++i) EXPECT_EQ(la[i], lb[i]) << recipe << " step " << i + 1;
    EXPECT_EQ(read_file(ca.out + "/final/model.safetensors"), read_file(cb.out + "/final/model.safetensors")) << recipe;
  }
}

// A run killed after logging statistics past its last checkpoint: the resumed run drops those
// rows and logs them again, so its stats.jsonl is the uninterrupted run's, byte for byte.
TEST(TrainLoop, ResumedStatisticsLogEqualsAnUninterruptedOne) {
  ScratchDir a, b;
  TrainConfig ca = small_run(a, "nvfp4"), cb = small_run(b, "nvfp4");
  ca.stats_every = cb.stats_every = 2;
  train(ca, quiet());
  TrainOptions half = quiet();
  half.stop_after = 6;  // checkpoint after step 6: rows of steps 0, 2, 4
  train(cb, half);
  const std::string log = cb.out + "/stats.jsonl";
  const std::string before = read_file(log);
  ASSERT_FALSE(before.empty());
  write_file_atomic(log, before + "{\"step\":6,\"layer\":\"written before the crash\"}\n");
  TrainOptions rest = quiet();
  rest.resume = cb.out;
  train(cb, rest);
  EXPECT_EQ(read_file(log), read_file(ca.out + "/stats.jsonl"));
}

TEST(TrainLoop, AnExpiredTimeLimitStopsAfterOneStepWithAResumableCheckpoint) {
  ScratchDir a, b;
  TrainConfig ca = small_run(a, "ufp4"), cb = small_run(b, "ufp4");
  train(ca, quiet());
  TrainOptions limited = quiet();
  limited.stop_after_seconds = 0;  // already over when the first step ends
  const TrainResult h = train(cb, limited);
  EXPECT_TRUE(h.stopped_early);
  EXPECT_EQ(h.steps, 1);
  EXPECT_TRUE(fs::exists(cb.out + "/step_000001/model.safetensors"));
  EXPECT_EQ(read_file(cb.out + "/latest"), "step_000001\n");
  TrainOptions rest = quiet();
  rest.resume = cb.out;
  train(cb, rest);
  EXPECT_EQ(read_file(ca.out + "/final/model.safetensors"), read_file(cb.out + "/final/model.safetensors"));
}

TEST(TrainLoop, NonFiniteLossStopsAndKeepsTheLastGoodCheckpoint) {
  ScratchDir d;
  TrainConfig c = small_run(d, "bf16");
  c.save_every = 4;
  TrainOptions o = quiet();
  o.before_step = [](Transformer<float>& m, int64_t step) {
    if (step == 6) m.weights()[m.param("model.norm.weight").offset] = NAN;
  };
  try {
    train(c, o);
    FAIL() << "a NaN loss did not stop the run";
  } catch (const NonFiniteLoss& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("step 6"), std::string::npos) << m;
    EXPECT_NE(m.find("step_000004"), std::string::npos) << m;
  }
  EXPECT_EQ(read_file(c.out + "/latest"), "step_000004\n");
  EXPECT_FALSE(fs::exists(c.out + "/final"));
  // the last good checkpoint resumes
  TrainOptions r = quiet();
  r.resume = c.out;
  EXPECT_EQ(train(c, r).steps, 12);
}

TEST(TrainLoop, FailedCheckpointWriteNeverReplacesAGoodOne) {
  ScratchDir d;
  TrainConfig c = small_run(d, "bf16");
  c.save_every = 4;
  set_checkpoint_fault_hook([](const std::string& file) {
    if (file.find("step_000008") != std::string::npos && file.find("optimizer") != std::string::npos)
      throw Error("simulated disk failure");
  });
  EXPECT_THROW(train(c, quiet()), Error);
  set_checkpoint_fault_hook(nullptr);
  EXPECT_EQ(read_file(c.out + "/latest"), "step_000004\n");
  EXPECT_TRUE(fs::exists(c.out + "/step_000004/trainer.json"));
  EXPECT_FALSE(fs::exists(c.out + "/step_000008"));
  for (const auto& e : fs::directory_iterator(c.out))
    EXPECT_EQ(e.path().filename().string().rfind(".tmp", 0), std::string::npos) << "leftover " << e.path();
  const Checkpoint ck = load_checkpoint(c.out + "/step_000004", Transformer<float>(c.model).params(), true);
  EXPECT_EQ(ck.trainer.at("step").as_int64(), 4);
}

TEST(TrainLoop, DataAndModelMustAgree) {
  ScratchDir d;
  TrainConfig c = small_run(d, "bf16");
  c.model = ModelConfig::preset("20m");  // gpt2 tokenizer, the text is tokenized with it: fine
  c.text_file = d.file("missing.txt");
  EXPECT_THROW(train(c, quiet()), Error);
}

TEST(TrainLoop, WeightDecaySkipsNormsAndEmbeddingsUnlessAsked) {
  // One step twice, without and with --decay-all: the Adam update is the same, so for norms
  // and embeddings the two results differ by exactly the decay term −lr·wd·p, and for
  // projections (decayed either way) not at all.
  ScratchDir d;
  TrainConfig c = small_run(d, "bf16");
  c.steps = 1;
  c.weight_decay = 0.5;
  c.warmup_steps = 0;
  c.eval_every = 0;
  TrainOptions o = quiet();
  std::vector<float> before;
  o.before_step = [&](Transformer<float>& m, int64_t) { before.assign(m.weights(), m.weights() + m.num_params()); };
  train(c, o);
  const Checkpoint a = load_checkpoint(c.out + "/final", Transformer<float>(c.model).params(), true);
  c.decay_all = true;
  c.out = d.file("run2");
  train(c, o);
  const Checkpoint b = load_checkpoint(c.out + "/final", Transformer<float>(c.model).params(), true);
  Transformer<float> model(c.model);
  const double lr = c.lr_at(0);
  for (const char* name : {"model.norm.weight", "model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"}) {
    const ParamInfo& p = model.param(name);
    for (int64_t j = 0; j < 3; ++j) {
      const size_t i = static_cast<size_t>(p.offset + j);
      const float decay_term = static_cast<float>(lr * c.weight_decay) * before[i];
      if (p.decay) EXPECT_NEAR(a.weights[i], b.weights[i], 1e-7) << name;  // decayed in both runs
      else EXPECT_NEAR(a.weights[i] - b.weights[i], decay_term, 1e-6 + 1e-3 * std::fabs(decay_term)) << name;
    }
  }
}
