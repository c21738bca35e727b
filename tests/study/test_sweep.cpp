// nibble sweep: runs per recipe and seed, the comparison against bf16 recomputed independently
// from the runs' own logs, and a stopped sweep that resumes to the same numbers.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "nibble/data/corpus.hpp"
#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/report/metrics.hpp"
#include "nibble/report/markdown.hpp"
#include "nibble/study/report.hpp"
#include "nibble/study/sweep.hpp"
#include "support/cli_runner.hpp"
#include "support/small_run.hpp"

using namespace nibble;
using nibble::testing::ScratchDir;
namespace fs = std::filesystem;

namespace {

SweepConfig small_sweep(const ScratchDir& d, const std::string& out) {
  SweepConfig s;
  s.base = nibble::testing::small_run_config(d, out, 80000);
  TrainConfig& c = s.base;
  c.model.name = "test";
  c.model.n_heads = 4;
  c.batch = 4;
  c.steps = 10;
  c.lr = 3e-3;
  c.log_every = 2;
  c.eval_every = 5;
  c.eval_batches = 2;
  c.save_every = 4;
  s.recipes = {"bf16", "nvfp4"};
  s.seeds = {1, 2};
  s.out = d.file(out);
  return s;
}

double last_val(const std::string& run) {
  const std::vector<double> v = report::read_metrics_jsonl(run + "/metrics.jsonl").column("val_loss");
  for (auto it = v.rbegin(); it != v.rend(); ++it)
    if (std::isfinite(*it)) return *it;
  return NAN;
}

SweepOptions quiet() {
  SweepOptions o;
  o.quiet = true;
  return o;
}

}  // namespace

TEST(Sweep, ComparesEveryRecipeWithBf16FromTheRunsOwnLogs) {
  ScratchDir d;
  const SweepConfig s = small_sweep(d, "sweep");
  const SweepResult r = run_sweep(s, quiet());
  ASSERT_TRUE(r.complete);
  ASSERT_EQ(r.runs.size(), 4u);
  ASSERT_EQ(r.recipes.size(), 2u);
  // independent recomputation from each run's metrics.jsonl
  const double b1 = last_val(sweep_run_dir(s.out, "bf16", 1)), b2 = last_val(sweep_run_dir(s.out, "bf16", 2));
  const double n1 = last_val(sweep_run_dir(s.out, "nvfp4", 1)), n2 = last_val(sweep_run_dir(s.out, "nvfp4", 2));
  const double bf = (b1 + b2) / 2;
  EXPECT_DOUBLE_EQ(r.recipes[0].val_mean, bf);
  EXPECT_DOUBLE_EQ(r.recipes[0].val_spread, std::fabs(b1 - b2));
  // the gap is paired by seed, not taken between the means
  const double g1 = 100.0 * (n1 - b1) / b1, g2 = 100.0 * (n2 - b2) / b2;
  EXPECT_NEAR(r.recipes[1].val_gap_pct, (g1 + g2) / 2, 1e-12);
  EXPECT_NEAR(r.recipes[1].val_gap_spread, std::fabs(g1 - g2), 1e-12);
  EXPECT_EQ(r.recipes[1].gap_seeds, 2);
  EXPECT_EQ(r.recipes[0].val_gap_pct, 0.0);
  EXPECT_NE(b1, b2);  // the seeds differ (data order, init)
  // Without bf16's second seed, nvfp4's gap pairs over seed 1 alone (nvfp4's mean still has both).
  fs::remove_all(sweep_run_dir(s.out, "bf16", 2));
  const SweepResult one = summarize_sweep(s);
  EXPECT_FALSE(one.complete);
  ASSERT_EQ(one.recipes.size(), 2u);
  EXPECT_EQ(one.recipes[1].seeds, 2);
  EXPECT_EQ(one.recipes[1].gap_seeds, 1);
  EXPECT_NEAR(one.recipes[1].val_gap_pct, g1, 1e-12);
  EXPECT_EQ(one.recipes[1].val_gap_spread, 0.0);
  SweepConfig twice = s;
  twice.seeds = {1, 2, 1};
  EXPECT_THROW(summarize_sweep(twice), Error);
  // the report files
  const Json j = Json::parse(read_file(s.out + "/results.json"), "results.json");
  EXPECT_TRUE(j.at("complete").as_bool());
  EXPECT_EQ(j.at("recipes").as_array().size(), 2u);
  const std::string md = read_file(s.out + "/results.md");
  EXPECT_NE(md.find("| nvfp4"), std::string::npos) << md;
  EXPECT_NE(md.find("val gap to bf16"), std::string::npos);
  EXPECT_NE(md.find("device `cpu`"), std::string::npos) << md;  // read back from the runs' config.json
  // the hardware, from each finished run's final/trainer.json
  for (const SweepRun& run : r.runs) EXPECT_EQ(run.hardware, "cpu") << run.dir;
  EXPECT_EQ(j.at("recipes").as_array()[1].at("hardware").as_array().size(), 1u);
  // the late-gap table: its last column is the final evaluation's paired gap
  const size_t late = md.find("at the last evaluations");
  ASSERT_NE(late, std::string::npos) << md;
  const size_t row = md.find("| nvfp4", late);
  ASSERT_NE(row, std::string::npos) << md;
  const std::string line = md.substr(row, md.find('\n', row) - row);
  const double g = (g1 + g2) / 2;
  const std::string cell = (g >= 0 ? "+" : "") + report::fmt_fixed(g, 2) + "% |";
  EXPECT_EQ(line.substr(line.size() - cell.size()), cell) << line;
  for (const char* f : {"loss.svg", "val_loss.svg", "gap.svg"}) EXPECT_TRUE(fs::exists(s.out + "/" + f)) << f;
}

TEST(Sweep, AStoppedSweepResumesToTheSameNumbers) {
  ScratchDir d;
  SweepConfig whole = small_sweep(d, "whole");
  whole.seeds = {1};
  const SweepResult a = run_sweep(whole, quiet());
  SweepConfig parts = whole;
  parts.out = d.file("parts");
  SweepOptions stop = quiet();
  stop.stop_after_steps = 13;  // bf16 done (10 steps), nvfp4 stopped after 3 (checkpoint at step 3)
  const SweepResult p1 = run_sweep(parts, stop);
  EXPECT_FALSE(p1.complete);
  EXPECT_EQ(p1.runs.size(), 1u);
  EXPECT_FALSE(fs::exists(parts.out + "/results.md"));
  const std::string bf16_metrics = read_file(sweep_run_dir(parts.out, "bf16", 1) + "/metrics.jsonl");
  const SweepResult p2 = run_sweep(parts, quiet());
  ASSERT_TRUE(p2.complete);
  EXPECT_EQ(read_file(sweep_run_dir(parts.out, "bf16", 1) + "/metrics.jsonl"), bf16_metrics);  // kept, not retrained
  ASSERT_EQ(p2.runs.size(), a.runs.size());
  for (size_t i = 0; i < a.runs.size(); ++i) {
    EXPECT_EQ(p2.runs[i].final_val_loss, a.runs[i].final_val_loss) << a.runs[i].recipe;
    EXPECT_EQ(p2.runs[i].final_train_loss, a.runs[i].final_train_loss) << a.runs[i].recipe;
  }
  EXPECT_EQ(read_file(sweep_run_dir(parts.out, "nvfp4", 1) + "/final/model.safetensors"),
            read_file(sweep_run_dir(whole.out, "nvfp4", 1) + "/final/model.safetensors"));
}

TEST(Sweep, AnExpiredTimeLimitStopsTheFirstRunAfterOneStep) {
  ScratchDir d;
  SweepConfig s = small_sweep(d, "timed");
  s.seeds = {1};
  SweepOptions o = quiet();
  o.stop_after_seconds = 0;
  const SweepResult r = run_sweep(s, o);
  EXPECT_FALSE(r.complete);
  EXPECT_TRUE(r.runs.empty());
  EXPECT_TRUE(fs::exists(sweep_run_dir(s.out, "bf16", 1) + "/step_000001/trainer.json"));
  EXPECT_FALSE(fs::exists(sweep_run_dir(s.out, "nvfp4", 1)));  // no run starts after the limit
  const SweepResult rest = run_sweep(s, quiet());
  EXPECT_TRUE(rest.complete);
  EXPECT_EQ(rest.runs.size(), 2u);
}

TEST(Sweep, BadConfigurationsAreErrors) {
  ScratchDir d;
  SweepConfig s = small_sweep(d, "bad");
  s.recipes = {"bf16", "bf16"};
  EXPECT_THROW(run_sweep(s, quiet()), Error);
  s.recipes = {"bf16", "nope"};
  EXPECT_THROW(run_sweep(s, quiet()), Error);
  s.recipes = {"bf16"};
  s.seeds.clear();
  EXPECT_THROW(run_sweep(s, quiet()), Error);
  EXPECT_FALSE(fs::exists(s.out + "/runs"));  // nothing trained
}

TEST(CliSweep, TokensSeedsAndErrors) {
  ScratchDir d;
  write_file_atomic(d.file("text.txt"), read_file(default_corpus_path()).substr(0, 60000));
  write_file_atomic(d.file("model.json"), R"({"base": "tiny", "name": "small", "dim": 64, "n_layers": 2, "n_heads": 4,
                                            "n_kv_heads": 2, "ffn_dim": 128, "max_seq": 64})");
  const std::string base = "sweep --model " + d.file("model.json") + " --text " + d.file("text.txt") +
                           " --batch 2 --seq 32 --log-every 2 --eval-every 4 --eval-batches 1 --quiet";
  const auto r = nibble::testing::run_nibble(base + " --recipes bf16,ufp4 --tokens 500 --out " + d.file("s"));
  ASSERT_EQ(r.code, 0) << r.out;
  // 500 tokens at 64 per step: 8 steps
  const Json j = Json::parse(read_file(d.file("s/results.json")), "results.json");
  EXPECT_EQ(j.at("runs").as_array()[0].at("steps").as_int64(), 8);
  // --summarize trains nothing: a recipe without runs leaves the report marked incomplete
  const auto sum = nibble::testing::run_nibble(base + " --recipes bf16,ufp4,nvfp4 --tokens 500 --summarize --out " + d.file("s"));
  ASSERT_EQ(sum.code, 0) << sum.out;
  EXPECT_FALSE(fs::exists(d.file("s/runs/nvfp4-seed1")));
  const std::string md = read_file(d.file("s/results.md"));
  // two of the three runs finished; the third never started and is named, in the page and the json
  EXPECT_NE(md.find("**Incomplete:** 2 of 3 runs have finished"), std::string::npos) << md;
  EXPECT_NE(md.find("Not started: nvfp4 seed 1."), std::string::npos) << md;
  EXPECT_EQ(md.find("stopped short"), std::string::npos) << md;
  EXPECT_NE(md.find("| ufp4"), std::string::npos) << md;
  const Json sj = Json::parse(read_file(d.file("s/results.json")), "results.json");
  ASSERT_EQ(sj.at("not_started").as_array().size(), 1u);
  EXPECT_EQ(sj.at("not_started").as_array()[0].at("recipe").as_string(), "nvfp4");
  EXPECT_EQ(sj.at("not_started").as_array()[0].at("seed").as_int64(), 1);
  EXPECT_TRUE(sj.at("unfinished").as_array().empty());
  auto expect_error = [&](const std::string& args, const std::string& needle) {
    const auto e = nibble::testing::run_nibble(base + args);
    EXPECT_NE(e.code, 0) << args << "\n" << e.out;
    EXPECT_LT(e.code, 128) << e.out;
    EXPECT_NE(e.out.find(needle), std::string::npos) << args << "\n" << e.out;
  };
  expect_error(" --recipes bf16 --out " + d.file("e"), "--tokens");
  expect_error(" --recipes bf16 --tokens 100 --seeds 1,x --out " + d.file("e"), "'x'");
  expect_error(" --recipes bf16,bogus --tokens 100 --out " + d.file("e"), "bogus");
  expect_error(" --recipes bf16 --tokens 100 --time-limit -1 --out " + d.file("e"), "--time-limit");
}

TEST(Report, RendersRunsAndSweepsIntoOnePage) {
  ScratchDir d;
  SweepConfig s = small_sweep(d, "sweep");
  s.seeds = {1};
  const SweepResult r = run_sweep(s, quiet());
  ASSERT_TRUE(r.complete);
  const std::string single = sweep_run_dir(s.out, "nvfp4", 1);
  const std::string md = write_runs_report({s.out, single}, d.file("rep"));
  // the sweep's two runs, then the single run again
  EXPECT_NE(md.find("3 runs"), std::string::npos) << md;
  EXPECT_NE(md.find("| bf16-seed1"), std::string::npos) << md;
  EXPECT_NE(md.find(report::fmt_fixed(r.runs[1].final_val_loss, 4)), std::string::npos) << md;
  for (const char* f : {"report.md", "loss.svg", "val_loss.svg"}) EXPECT_TRUE(fs::exists(d.file("rep") + "/" + f)) << f;
  EXPECT_THROW(write_runs_report({d.file("nothing-here")}, d.file("rep2")), Error);
  EXPECT_THROW(write_runs_report({}, d.file("rep2")), Error);
  // the CLI takes the directories as arguments
  const auto c = nibble::testing::run_nibble("report " + s.out + " " + single + " --out " + d.file("rep3"));
  EXPECT_EQ(c.code, 0) << c.out;
  EXPECT_EQ(read_file(d.file("rep3") + "/report.md"), md);
  const auto e = nibble::testing::run_nibble("report " + d.file("nothing-here") + " --out " + d.file("rep4"));
  EXPECT_NE(e.code, 0);
  EXPECT_NE(e.out.find("neither a training run"), std::string::npos) << e.out;
  // against a baseline: the baseline reaches its own final loss at its last evaluation (1.00×)
  const std::string base = sweep_run_dir(s.out, "bf16", 1);
  const std::string mb = write_runs_report({base}, d.file("rep5"), base);
  EXPECT_NE(mb.find("1.00×"), std::string::npos) << mb;
  EXPECT_NE(mb.find("steps to baseline val"), std::string::npos) << mb;
  EXPECT_THROW(write_runs_report({base}, d.file("rep6"), d.file("nothing-here")), Error);
}

TEST(Sweep, TailMeanWeighsTheLastWindowsByTheirSteps) {
  // windows of 20 steps, then a short last one of 4 (a run of 104 steps logged every 20)
  const std::vector<double> step = {20, 40, 60, 80, 100, 104}, loss = {5, 4, 3, 2, 1.5, 1.0};
  // the last 5% (5.2 steps): the windows ending after step 98.8 — (80, 100] and (100, 104]
  EXPECT_DOUBLE_EQ(tail_mean(step, loss, 0.05), (1.5 * 20 + 1.0 * 4) / 24);
  // the last 30% (31.2 steps, from 72.8): also (60, 80]
  EXPECT_DOUBLE_EQ(tail_mean(step, loss, 0.30), (2.0 * 20 + 1.5 * 20 + 1.0 * 4) / 44);
  // at least the last window, even for a tiny fraction
  EXPECT_DOUBLE_EQ(tail_mean(step, loss, 0.0), 1.0);
  // an evaluation-only row (QAT's step 0: no training loss) counts for nothing
  EXPECT_DOUBLE_EQ(tail_mean({0, 10, 20}, {NAN, 3.0, 2.0}, 1.0), 2.5);
  EXPECT_TRUE(std::isnan(tail_mean({}, {}, 0.05)));
}

TEST(Report, FirstReachInterpolatesBetweenEvaluations) {
  const std::vector<double> x = {0, 100, 200, 300}, y = {4.0, 3.0, 2.0, 2.5};
  EXPECT_DOUBLE_EQ(first_reach(x, y, 2.5), 150.0);   // halfway from 3.0 (at 100) to 2.0 (at 200)
  EXPECT_DOUBLE_EQ(first_reach(x, y, 3.0), 100.0);   // exactly at a sample
  EXPECT_DOUBLE_EQ(first_reach(x, y, 5.0), 0.0);     // from the start
  EXPECT_TRUE(std::isnan(first_reach(x, y, 1.9)));  // never
}

// Runs stopped by a time limit log an extra row at their stop step, so a recipe's rows and
// bf16's do not line up by index after it. The gap curve matches them by tokens: hand-made runs
// with a known gap of 1% (seed 1) and 3% (seed 2) at every shared point, one with a stop row.
TEST(Sweep, GapCurvesMatchRowsByTokensNotByIndex) {
  const auto run = [](const std::string& recipe, uint64_t seed, std::vector<double> x, double scale) {
    SweepRun r;
    r.recipe = recipe;
    r.seed = seed;
    r.curve_tokens = x;
    for (double t : x) r.curve_train.push_back(scale * (5.0 - t / 100.0));  // a falling loss
    r.eval_tokens = {100, 200};
    r.eval_val = {scale * 4.0, scale * 3.0};
    return r;
  };
  const std::vector<double> every = {20, 40, 60, 80, 100, 120, 140, 160, 180, 200};
  std::vector<double> stopped = {20, 40, 60, 71, 80, 100, 120, 140, 160, 180, 200};  // stopped at 71, resumed
  const std::vector<SweepRun> runs = {run("bf16", 1, every, 1.0), run("nvfp4", 1, stopped, 1.01),
                                      run("bf16", 2, stopped, 1.0), run("nvfp4", 2, every, 1.03)};
  const SweepCurve g = paired_gap_curve(runs, "nvfp4", false);
  ASSERT_EQ(g.x, every);  // 71 is in only two of the four runs
  for (double y : g.y) EXPECT_NEAR(y, 2.0, 1e-12);  // (1% + 3%) / 2 at every point
  const SweepCurve v = paired_gap_curve(runs, "nvfp4", true);
  ASSERT_EQ(v.x, (std::vector<double>{100, 200}));
  EXPECT_NEAR(v.y[1], 2.0, 1e-12);
  EXPECT_TRUE(paired_gap_curve(runs, "mxfp4", false).x.empty());
}

// Step times compare a run with bf16 on its own hardware: a sweep merged from an H200 (seed 1)
// and an H100 (seed 2) must not divide one machine's bf16 by the other's recipe.
TEST(Sweep, StepTimeIsPairedWithBf16OnTheSameHardware) {
  const auto run = [](const std::string& recipe, uint64_t seed, const std::string& hw, double tps) {
    SweepRun r;
    r.recipe = recipe;
    r.seed = seed;
    r.hardware = hw;
    r.tokens_per_s = tps;
    return r;
  };
  const std::vector<SweepRun> runs = {run("bf16", 1, "H200", 700e3), run("bf16", 2, "H100 80GB HBM3", 600e3),
                                      run("metis", 1, "H100 80GB HBM3", 60e3), run("nvfp4", 1, "H200", 350e3),
                                      run("nvfp4", 2, "H100 80GB HBM3", 400e3), run("mxfp4", 1, "A100", 100e3)};
  EXPECT_NEAR(paired_step_time(runs, "metis"), 10.0, 1e-12);             // 600K / 60K, not 650K / 60K
  EXPECT_NEAR(paired_step_time(runs, "nvfp4"), (2.0 + 1.5) / 2, 1e-12);  // each seed on its own machine
  EXPECT_TRUE(std::isnan(paired_step_time(runs, "mxfp4")));             // no bf16 on that hardware
  EXPECT_NEAR(paired_step_time(runs, "bf16"), 1.0, 1e-12);
  // runs without a hardware record: paired with each other in a sweep that has no record at
  // all, never in one that mixes them with recorded runs (their machine is unknown)
  const std::vector<SweepRun> old_sweep = {run("bf16", 1, "", 700e3), run("nvfp4", 1, "", 350e3)};
  EXPECT_NEAR(paired_step_time(old_sweep, "nvfp4"), 2.0, 1e-12);
  std::vector<SweepRun> mixed = old_sweep;
  mixed.push_back(run("bf16", 2, "H100 80GB HBM3", 600e3));
  mixed.push_back(run("nvfp4", 2, "H100 80GB HBM3", 400e3));
  EXPECT_NEAR(paired_step_time(mixed, "nvfp4"), 1.5, 1e-12);  // seed 2 only, not (2 + 1.5) / 2
  mixed.push_back(run("metis", 1, "", 60e3));
  EXPECT_TRUE(std::isnan(paired_step_time(mixed, "metis")));
  EXPECT_EQ(short_hardware("NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.2 GiB), bf16 activations"), "H100 80GB HBM3");
  EXPECT_EQ(short_hardware("NVIDIA H200, fp32 activations"), "H200");
  EXPECT_EQ(short_hardware("cpu"), "cpu");
}

// An unfinished run against the other runs of its seed at the evaluations it reached, with the
// gaps worked out by hand.
TEST(Sweep, AnUnfinishedRunIsComparedAtTheEvaluationsItReached) {
  const auto run = [](const std::string& recipe, uint64_t seed, std::vector<double> tokens, std::vector<double> val) {
    SweepRun r;
    r.recipe = recipe;
    r.seed = seed;
    r.eval_tokens = std::move(tokens);
    r.eval_val = std::move(val);
    return r;
  };
  const std::vector<double> all = {100, 200, 300, 400, 500, 600};
  const std::vector<SweepRun> runs = {
      run("bf16", 1, all, {5, 4, 3, 2.5, 2.0, 1.6}),
      run("nvfp4", 1, all, {5.5, 4.4, 3.3, 2.6, 2.1, 1.7}),
      run("ufp4", 1, {100, 200, 400}, {5, 4, 2.75}),  // no evaluation at 300 tokens
      run("bf16", 2, all, {9, 9, 9, 9, 9, 9}),        // another seed: never a reference here
      run("mxfp4", 2, all, {9, 9, 9, 9, 9, 9}),
  };
  const SweepRun metis = run("metis", 1, {100, 200, 300, 400, 450}, {5.25, 4.2, 3.6, 2.5, 2.3});  // stopped at 450
  const MatchedGaps m = matched_gaps(runs, metis);
  // the last four evaluations that bf16 seed 1 also made (450 it did not)
  ASSERT_EQ(m.tokens, (std::vector<double>{100, 200, 300, 400}));
  ASSERT_EQ(m.recipes, (std::vector<std::string>{"metis", "nvfp4", "ufp4"}));
  const std::vector<std::vector<double>> want = {{5, 5, 20, 0}, {10, 10, 10, 4}, {0, 0, NAN, 10}};
  for (size_t k = 0; k < want.size(); ++k)
    for (size_t e = 0; e < want[k].size(); ++e) {
      if (std::isnan(want[k][e])) {
        EXPECT_TRUE(std::isnan(m.gap_pct[k][e])) << m.recipes[k] << " at " << m.tokens[e];
      } else {
        EXPECT_NEAR(m.gap_pct[k][e], want[k][e], 1e-12) << m.recipes[k] << " at " << m.tokens[e];
      }
    }
  EXPECT_EQ(matched_gaps(runs, metis, 2).tokens, (std::vector<double>{300, 400}));
  EXPECT_TRUE(matched_gaps(runs, run("metis", 3, all, {1, 1, 1, 1, 1, 1})).tokens.empty());  // no bf16 of seed 3
  EXPECT_TRUE(matched_gaps(runs, run("metis", 1, {450}, {2.3})).tokens.empty());             // nothing in common
  // the report section: a table for metis, and an unfinished bf16 named as its seed's reference
  SweepConfig cfg;
  cfg.base.steps = 6;
  cfg.base.batch = 1;
  cfg.base.seq = 100;
  SweepResult res;
  res.runs = runs;
  res.unfinished = {metis, run("bf16", 3, {100}, {5})};
  res.unfinished[0].steps = 4;
  const std::string md = unfinished_runs_section(cfg, res);
  EXPECT_NE(md.find("**metis, seed 1**: step 4 of 6"), std::string::npos) << md;
  EXPECT_NE(md.find("| metis  |     +5.00% |     +5.00% |    +20.00% |     +0.00% |"), std::string::npos) << md;
  EXPECT_NE(md.find("| ufp4   |     +0.00% |     +0.00% |          — |    +10.00% |"), std::string::npos) << md;
  EXPECT_NE(md.find("the reference of seed 3"), std::string::npos) << md;
  EXPECT_EQ(unfinished_runs_section(cfg, SweepResult{}), "");
}

// A sweep stopped inside its second run reports that run beside bf16 at its evaluation, with the
// number recomputed from the two runs' own logs.
TEST(Sweep, TheReportComparesAStoppedRunFromItsOwnLog) {
  ScratchDir d;
  SweepConfig s = small_sweep(d, "stopped");
  s.seeds = {1};
  SweepOptions stop = quiet();
  stop.stop_after_steps = 17;  // bf16 finished (10 steps), nvfp4 stopped after 7 (evaluated at step 5)
  run_sweep(s, stop);
  const SweepResult r = summarize_sweep(s);
  EXPECT_FALSE(r.complete);
  ASSERT_EQ(r.runs.size(), 1u);
  ASSERT_EQ(r.unfinished.size(), 1u);
  EXPECT_EQ(r.unfinished[0].recipe, "nvfp4");
  EXPECT_EQ(r.unfinished[0].steps, 7);
  EXPECT_TRUE(r.not_started.empty());  // nvfp4 logged, so it is unfinished, not unstarted
  write_sweep_report(s, r);
  // step 5's validation loss of each run, read straight from metrics.jsonl
  const auto val_at_step5 = [](const std::string& dir) -> double {
    const report::MetricsLog log = report::read_metrics_jsonl(dir + "/metrics.jsonl");
    const std::vector<double> step = log.column("step"), val = log.column("val_loss");
    for (size_t i = 0; i < step.size(); ++i)
      if (step[i] == 5 && std::isfinite(val[i])) return val[i];
    return NAN;
  };
  const double b = val_at_step5(sweep_run_dir(s.out, "bf16", 1)), n = val_at_step5(sweep_run_dir(s.out, "nvfp4", 1));
  ASSERT_TRUE(std::isfinite(b) && std::isfinite(n));
  const double g = 100.0 * (n - b) / b;
  const std::string md = read_file(s.out + "/results.md");
  EXPECT_NE(md.find("**Incomplete:** 1 of 2 runs have finished; the table shows those. 1 logged but stopped short"),
            std::string::npos) << md;
  const size_t section = md.find("## Unfinished runs");
  ASSERT_NE(section, std::string::npos) << md;
  EXPECT_NE(md.find("**nvfp4, seed 1**: step 7 of 10", section), std::string::npos) << md;
  const size_t row = md.find("| nvfp4", section);
  ASSERT_NE(row, std::string::npos) << md;
  const std::string line = md.substr(row, md.find('\n', row) - row);
  const std::string cell = (g >= 0 ? "+" : "") + report::fmt_fixed(g, 2) + "% |";
  EXPECT_EQ(line.substr(line.size() - cell.size()), cell) << line;
  const Json j = Json::parse(read_file(s.out + "/results.json"), "results.json");
  ASSERT_EQ(j.at("unfinished").as_array().size(), 1u);
  EXPECT_EQ(j.at("unfinished").as_array()[0].at("steps").as_int64(), 7);
  EXPECT_NE(read_file(s.out + "/val_loss.svg").find("nvfp4 seed 1 (unfinished)"), std::string::npos);
  // `nibble report` marks it too, and only it
  const std::string rep = write_runs_report({s.out}, d.file("rep"));
  EXPECT_NE(rep.find("| 7 of 10 |"), std::string::npos) << rep;
  EXPECT_NE(rep.find("stopped after N of its M configured steps"), std::string::npos) << rep;
  EXPECT_EQ(rep.find("10 of 10"), std::string::npos) << rep;
  // once it finishes, it leaves the section and joins the table
  ASSERT_TRUE(run_sweep(s, quiet()).complete);
  EXPECT_EQ(read_file(s.out + "/results.md").find("## Unfinished runs"), std::string::npos);
}
