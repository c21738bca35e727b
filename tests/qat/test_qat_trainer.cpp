// nibble qat on a small trained model: QAT lowers the quantized model's loss, the saved model is
// exactly Q(latent; α) on the quantizer's grid, a WinQ reset with a = 0 leaves W on the grid,
// runs are deterministic, and bad options are errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <regex>

#include "nibble/cuda.hpp"
#include "nibble/data/corpus.hpp"
#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/qat/qat_trainer.hpp"
#include "nibble/report/metrics.hpp"
#include "nibble/safetensors.hpp"
#include "nibble/study/report.hpp"
#include "nibble/train/checkpoint.hpp"
#include "nibble/train/trainer.hpp"
#include "support/cli_runner.hpp"
#include "support/qat_run.hpp"
#include "support/small_run.hpp"

using namespace nibble;
using nibble::testing::ScratchDir;
namespace fs = std::filesystem;

using nibble::testing::pretrain;
using nibble::testing::qat_config;

TEST(Qat, LowersTheQuantizedLossAndSavesQOfTheLatentWeights) {
  ScratchDir d;
  pretrain(d);
  const QatConfig q = qat_config(d, "q2", 2);
  const QatResult r = run_qat(q, true);
  EXPECT_LT(r.final_val_loss, r.initial_val_loss) << r.initial_val_loss << " -> " << r.final_val_loss;
  const SafeTensors model = read_safetensors(d.file("q2/final/model.safetensors"));
  const SafeTensors lat = read_safetensors(d.file("q2/final/qat.safetensors"));
  // every projection of the saved model lies on α·{±1/4, ±3/4} (2-bit SEQ) with its row's α
  const Tensor what = model.get("model.layers.1.mlp.down_proj.weight").to_f32();
  const Tensor alpha = lat.get("scale.model.layers.1.mlp.down_proj.weight").to_f32();
  const int64_t rows = what.shape()[0], cols = what.shape()[1];
  for (int64_t r2 = 0; r2 < rows; ++r2)
    for (int64_t j = 0; j < cols; ++j) {
      const double lvl = what.data<float>()[r2 * cols + j] / alpha.data<float>()[r2];
      const double m = std::fabs(lvl);
      EXPECT_TRUE(std::fabs(m - 0.25) < 1e-5 || std::fabs(m - 0.75) < 1e-5) << lvl;
    }
  // full-precision tensors are saved as they are
  const Tensor emb = model.get("model.embed_tokens.weight").to_f32();
  const Tensor emb_l = lat.get("latent.model.embed_tokens.weight").to_f32();
  EXPECT_EQ(0, std::memcmp(emb.data<float>(), emb_l.data<float>(), static_cast<size_t>(emb.numel()) * 4));
  // nibble eval on the QAT output measures the quantized model
  const auto ev = nibble::testing::run_nibble("eval --device cpu --checkpoint " + d.file("q2") + " --text " + d.file("text.txt") +
                                              " --max-batches 1");
  EXPECT_EQ(ev.code, 0) << ev.out;
}

TEST(Qat, WinqResetWithAZeroPutsTheLatentWeightsOnTheGridAndRunsRepeat) {
  ScratchDir d;
  pretrain(d);
  QatConfig q = qat_config(d, "w", 4);
  q.winq = true;
  q.reset_every = 30;  // at the last step
  q.reset_a = 0.0;
  run_qat(q, true);
  const SafeTensors model = read_safetensors(d.file("w/final/model.safetensors"));
  const SafeTensors lat = read_safetensors(d.file("w/final/qat.safetensors"));
  // after W ← Q(W; α), Q(W; α) = W: the latent projections equal the saved quantized ones
  for (const char* n : {"model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.gate_proj.weight"}) {
    const Tensor a = model.get(n).to_f32(), b = lat.get(std::string("latent.") + n).to_f32();
    EXPECT_EQ(0, std::memcmp(a.data<float>(), b.data<float>(), static_cast<size_t>(a.numel()) * 4)) << n;
  }
  QatConfig again = q;
  again.train.out = d.file("w2");
  run_qat(again, true);
  EXPECT_EQ(read_file(d.file("w/final/model.safetensors")), read_file(d.file("w2/final/model.safetensors")));
  // every logged number but the wall-clock throughput
  const std::regex speed(R"(,"tokens_per_s":[^,}]*)");
  EXPECT_EQ(std::regex_replace(read_file(d.file("w/metrics.jsonl")), speed, ""),
            std::regex_replace(read_file(d.file("w2/metrics.jsonl")), speed, ""));
}

// --scale-lr-mult 0: the scales stay at their init, α = max|W_row| of the trained weights (2-bit
// SEQ), while the latent weights still train; the default rate moves them.
TEST(Qat, AZeroScaleLearningRateKeepsTheScalesAtTheirInit) {
  ScratchDir d;
  pretrain(d);
  QatConfig q = qat_config(d, "frozen", 2);
  q.scale_lr_mult = 0;
  run_qat(q, true);
  const auto moved = [&](const char* run, const char* name) {
    const SafeTensors base = read_safetensors(resolve_checkpoint_dir(d.file("base")) + "/model.safetensors");
    const SafeTensors lat = read_safetensors(d.file(std::string(run) + "/final/qat.safetensors"));
    const Tensor w0 = base.get(name).to_f32(), a = lat.get(std::string("scale.") + name).to_f32();
    const Tensor w = lat.get(std::string("latent.") + name).to_f32();
    const int64_t rows = w0.shape()[0], cols = w0.shape()[1];
    double scale_change = 0, weight_change = 0;
    for (int64_t r = 0; r < rows; ++r) {
      float m = 0;
      for (int64_t j = 0; j < cols; ++j) {
        m = std::max(m, std::fabs(w0.data<float>()[r * cols + j]));
        weight_change = std::max<double>(weight_change, std::fabs(w.data<float>()[r * cols + j] - w0.data<float>()[r * cols + j]));
      }
      scale_change = std::max<double>(scale_change, std::fabs(a.data<float>()[r] - m));
    }
    return std::pair<double, double>{scale_change, weight_change};
  };
  const auto [frozen_scale, frozen_w] = moved("frozen", "model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(frozen_scale, 0.0);
  EXPECT_GT(frozen_w, 1e-5);
  run_qat(qat_config(d, "learned", 2), true);
  EXPECT_GT(moved("learned", "model.layers.0.mlp.up_proj.weight").first, 1e-5);
  // metrics.jsonl logs the scales' movement with each validation loss: none when frozen
  auto scale_column = [&](const char* run, const char* key) {
    const report::MetricsLog log = report::read_metrics_jsonl(d.file(std::string(run) + "/metrics.jsonl"));
    std::vector<double> v;
    for (double x : log.column(key))
      if (std::isfinite(x)) v.push_back(x);
    return v;
  };
  const std::vector<double> frozen_ratio = scale_column("frozen", "scale_ratio"), learned = scale_column("learned", "scale_drift");
  ASSERT_FALSE(frozen_ratio.empty());
  for (double r : frozen_ratio) EXPECT_EQ(r, 1.0);
  for (double x : scale_column("frozen", "scale_drift")) EXPECT_EQ(x, 0.0);
  ASSERT_FALSE(learned.empty());
  EXPECT_GT(learned.back(), 0.0);
  EXPECT_LT(learned.back(), 1.0);
  // qat.json beside config.json: `nibble report` labels the runs by their QAT settings
  const std::string md = write_runs_report({d.file("frozen"), d.file("learned")}, d.file("rep"), d.file("learned"));
  EXPECT_TRUE(std::regex_search(md, std::regex(R"(\| frozen +\| small +\| QAT 2-bit seq, α lr ×0 +\|)"))) << md;
  EXPECT_TRUE(std::regex_search(md, std::regex(R"(\| learned +\| small +\| QAT 2-bit seq +\|)"))) << md;
}

TEST(Qat, CliErrors) {
  ScratchDir d;
  pretrain(d);
  auto expect_error = [&](const std::string& args, const std::string& needle) {
    const auto r = nibble::testing::run_nibble("qat --checkpoint " + d.file("base") + " --out " + d.file("x") + args);
    EXPECT_NE(r.code, 0) << args << "\n" << r.out;
    EXPECT_LT(r.code, 128) << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << args << "\n" << r.out;
  };
  expect_error(" --bits 5", "5");
  expect_error(" --bits 2 --quantizer lsq", "seq");
  expect_error(" --bits 4 --act-bits 9 --steps 2", "--act-bits 9");
  if (nibble::cuda::device_count() == 0) expect_error(" --bits 4 --device cuda --steps 2 --seq 32", "--device cuda");
  expect_error(" --bits 4 --winq-alpha 2", "--winq-alpha");
  expect_error(" --bits 4 --scale-lr-mult -1", "--scale-lr-mult");
}

// --act-bits: the projections' inputs are fake-quantized per token. At 2 bits (−s, 0, s) they are coarser
// than at 8, so the quantized model starts further from the float model (a higher loss before
// any QAT step); the QAT run still learns; and eval applies the same activation quantization
// (the same checkpoint with the setting removed from its trainer.json evaluates differently).
TEST(Qat, ActivationBitsQuantizeTheProjectionsInputsAndEvalAppliesThem) {
  ScratchDir d;
  pretrain(d);
  QatConfig q8 = qat_config(d, "a8", 4);
  q8.act_bits = 8;
  QatConfig q4 = qat_config(d, "a2", 4);
  q4.act_bits = 2;
  const QatConfig none = qat_config(d, "a0", 4);
  const QatResult r8 = run_qat(q8, true), r4 = run_qat(q4, true), r0 = run_qat(none, true);
  EXPECT_GT(r4.initial_val_loss, r8.initial_val_loss + 1e-3) << r4.initial_val_loss << " vs " << r8.initial_val_loss;
  EXPECT_NE(r8.initial_val_loss, r0.initial_val_loss);
  EXPECT_LT(r4.final_val_loss, r4.initial_val_loss);
  Json t = Json::parse(read_file(d.file("a2/final/trainer.json")), "trainer.json");
  EXPECT_EQ(t.at("qat").at("act_bits").as_int64(), 2);
  fs::copy(d.file("a2/final"), d.file("a2-plain"), fs::copy_options::recursive);
  Json qat = t.at("qat");
  qat["act_bits"] = 0;
  t["qat"] = qat;
  write_file_atomic(d.file("a2-plain/trainer.json"), t.dump(2) + "\n");
  auto eval_loss = [&](const std::string& dir) {
    const auto r = nibble::testing::run_nibble("eval --device cpu --checkpoint " + dir + " --text " + d.file("text.txt") +
                                               " --max-batches 2");
    EXPECT_EQ(r.code, 0) << r.out;
    const size_t at = r.out.find("loss");
    return at == std::string::npos ? 0.0 : std::atof(r.out.c_str() + r.out.find_first_of("0123456789", at));
  };
  const double with = eval_loss(d.file("a2/final")), without = eval_loss(d.file("a2-plain"));
  EXPECT_GT(with, 0.0);
  EXPECT_GT(std::fabs(with - without), 1e-3) << with << " vs " << without;
}

// A QAT run stopped early (by --stop-after or --time-limit) resumed to its end in its own
// directory, as `nibble qat --resume OUT` does.
// Runs `q` (a stop set) into d.file(name) and checks that it stopped at `steps` with a
// checkpoint there; returns the configuration to resume.
QatConfig run_until_stop(const ScratchDir& d, QatConfig q, const std::string& name, int64_t steps) {
  q.train.out = d.file(name);
  const QatResult r = run_qat(q, true);
  EXPECT_TRUE(r.stopped_early) << name;
  EXPECT_EQ(r.steps, steps) << name;
  EXPECT_TRUE(fs::exists(q.train.out + "/" + checkpoint_step_name(steps) + "/qat.safetensors")) << name;
  return q;
}

QatResult resume_to_end(const QatConfig& stopped) {
  QatConfig rest = stopped;
  rest.stop_after = -1;
  rest.stop_after_seconds = -1;
  rest.resume = stopped.train.out;
  return run_qat(rest, true);
}

// A QAT run stopped at step 12 (a checkpoint there) and resumed continues bit for bit: the same
// final quantized model, latent weights and scales, and the same logged losses as the run that
// was never stopped — with WinQ on, whose noise and resets follow the step number.
TEST(Qat, AStoppedRunResumesBitIdentically) {
  ScratchDir d;
  pretrain(d);
  QatConfig whole = qat_config(d, "whole", 4);
  whole.winq = true;
  whole.reset_every = 10;
  run_qat(whole, true);
  QatConfig part = whole;
  part.stop_after = 12;
  const QatResult second = resume_to_end(run_until_stop(d, part, "part", 12));
  EXPECT_FALSE(second.stopped_early);
  for (const char* f : {"final/model.safetensors", "final/qat.safetensors"})
    EXPECT_EQ(read_file(d.file(std::string("whole/") + f)), read_file(d.file(std::string("part/") + f))) << f;
  const auto a = nibble::report::read_metrics_jsonl(d.file("whole/metrics.jsonl")).column("loss");
  const auto b = nibble::report::read_metrics_jsonl(d.file("part/metrics.jsonl")).column("loss");
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    if (std::isfinite(a[i]) || std::isfinite(b[i])) {
      EXPECT_EQ(a[i], b[i]) << "row " << i;
    }
  // an expired wall-clock limit: one step, then a checkpoint that resumes
  QatConfig timed = whole;
  timed.stop_after_seconds = 0;
  resume_to_end(run_until_stop(d, timed, "timed", 1));
  EXPECT_EQ(read_file(d.file("whole/final/model.safetensors")), read_file(d.file("timed/final/model.safetensors")));
  // a checkpoint of another bit width is refused
  QatConfig other = whole;
  other.resume = d.file("part");
  other.spec = QatSpec::make(3, "auto");
  other.train.out = d.file("other");
  EXPECT_THROW(run_qat(other, true), Error);
}
