#pragma once
// `nibble sweep`: one training run per (recipe, seed) from the same initialization and the same
// data order (both follow the seed), then a comparison of the recipes against bf16:
// results.json, results.md and SVG plots. Runs live in OUT/runs/<recipe>-seed<N>/ as ordinary
// training runs; a stopped sweep resumes where it stopped (finished runs are kept, a run with a
// checkpoint continues bit-identically, the rest start).
#include <cstdint>
#include <string>
#include <vector>

#include "nibble/json.hpp"
#include "nibble/train/train_config.hpp"

namespace nibble {

struct SweepConfig {
  TrainConfig base;                  // model, data, schedule, device; recipe/seed/out are set per run
  std::vector<std::string> recipes;  // preset names or recipe .json paths
  std::vector<uint64_t> seeds = {1};
  std::string out;
};

struct SweepOptions {
  bool quiet = false;
  // Tests and time limits: stop the sweep after this many more training steps in total (the
  // current run keeps a resumable checkpoint); −1 = run everything.
  int64_t stop_after_steps = -1;
  // A wall-clock limit for the whole sweep (seconds; < 0 = none): the run in progress stops with
  // a resumable checkpoint after the step that crosses it, and no further run starts. The first
  // run an invocation starts always makes at least one step, so repeated calls make progress.
  double stop_after_seconds = -1;
};

// The mean training loss over the last `fraction` of a run's steps: the logged windows (row i
// covers steps (step[i−1], step[i]] with mean loss_avg[i]) that end in that tail, weighted by
// their length — at least the last window. One log window (20 steps, or the 4 steps of a short
// last one) is too noisy to compare recipes by.
double tail_mean(const std::vector<double>& step, const std::vector<double>& loss_avg, double fraction);

// One run, read back from its directory (finished, or from what an unfinished one logged).
struct SweepRun {
  std::string recipe;
  uint64_t seed = 0;
  std::string dir;
  std::string device;  // as the run's config.json records it ("" when absent)
  // The hardware, short ("H100 80GB HBM3", "cpu"), from final/trainer.json's device_name ("" for
  // runs from before it was recorded): tokens/s compare only between runs on the same hardware.
  std::string hardware;
  int64_t steps = 0;
  double tokens = 0;
  double final_train_loss = 0;  // training loss over the last 5% of the steps (tail_mean)
  double final_val_loss = 0;    // the last evaluation (NaN if none)
  double tokens_per_s = 0;      // median of the logged windows (warm-up excluded)
  std::vector<double> curve_tokens, curve_train, eval_tokens, eval_val;
};

// A curve as (tokens, value) points.
struct SweepCurve {
  std::vector<double> x, y;
};
// The gap curve of `recipe` against bf16 in % (training loss per log window, or validation loss
// per evaluation with `eval`): per seed (loss − bf16 of that seed) / bf16 · 100, averaged over
// the seed pairs, at the token counts every run of the pairs logged. Rows are matched by tokens,
// not by index: a run stopped by a time limit logs an extra row at its stop step.
SweepCurve paired_gap_curve(const std::vector<SweepRun>& runs, const std::string& recipe, bool eval);

// The step time of `recipe` relative to bf16, device by device: for each of the recipe's runs,
// bf16's mean tokens/s over the bf16 runs on the same hardware ÷ the run's tokens/s, averaged
// over the runs that have such bf16 runs (NaN when none does). A sweep merged from machines of
// different kinds would otherwise divide an H200's bf16 by an H100's recipe. Runs that predate
// the hardware record (hardware "") pair with each other only in a sweep where no run has one:
// next to recorded runs, they may have run on any of the machines.
double paired_step_time(const std::vector<SweepRun>& runs, const std::string& recipe);

// The short hardware name of an engine's device() string: "NVIDIA H100 80GB HBM3 (sm_90, ...),
// bf16 activations" → "H100 80GB HBM3"; "cpu" → "cpu".
std::string short_hardware(const std::string& device);

// Per recipe, over its seeds.
struct SweepRecipe {
  std::string recipe;
  int seeds = 0;
  double train_mean = 0, train_spread = 0;  // spread: max − min over seeds (0 with one seed)
  double val_mean = 0, val_spread = 0;
  // Gaps are paired by seed: a seed's runs share the initialization and the batches, so the
  // gap of seed s is (loss_s − bf16_s) / bf16_s · 100, and the recipe's gap is the mean over the
  // seeds bf16 also has (NaN when there are none). Comparing against bf16's mean over other seeds
  // would mix the seed-to-seed spread, which is as large as some recipes' gaps, into the gap.
  double val_gap_pct = 0;
  double val_gap_spread = 0;  // max − min of the paired gaps, in percentage points
  double train_gap_pct = 0;
  int gap_seeds = 0;          // how many seeds the gap is paired over
  double tokens_per_s = 0;    // mean over seeds
  double step_time_vs_bf16 = 0;  // paired_step_time: against bf16 on the same hardware; NaN without
  std::vector<std::string> hardware;  // the runs' hardware, distinct, in run order ("" = not recorded)
};

struct SweepResult {
  std::vector<SweepRun> runs;
  std::vector<SweepRecipe> recipes;
  // Runs of the configuration that logged but have not finished (a time limit stopped them, or
  // their machine went away with the checkpoint). They stay out of every table above and are
  // compared only at the evaluations they reached (matched_gaps).
  std::vector<SweepRun> unfinished;
  // Runs of the configuration with no log at all (never started, or killed before their first
  // log window): named in the report so that a seed left out on purpose reads as such.
  std::vector<std::pair<std::string, uint64_t>> not_started;  // (recipe, seed)
  bool complete = false;  // every run finished
  Json to_json() const;
};

// An unfinished run beside the other runs of its seed, at the same evaluations: the learning-rate
// schedule is fixed by the configured steps, so runs of one seed at one step have seen the same
// batches under the same learning rate whether or not they went on to finish.
struct MatchedGaps {
  std::vector<double> tokens;                // the run's last (up to `last`) evaluations that the seed's bf16 run made
  std::vector<std::string> recipes;          // the run's recipe first, then the seed's other non-bf16 runs
  std::vector<std::vector<double>> gap_pct;  // [recipe][evaluation]: (val − bf16 val) / bf16 val · 100; NaN where it did not evaluate
};
// `runs`: every run of the sweep that may share `run`'s seed (finished and unfinished). Empty
// tokens when the seed has no bf16 run or none of its evaluations matches the run's.
MatchedGaps matched_gaps(const std::vector<SweepRun>& runs, const SweepRun& run, size_t last = 4);
// The report's "Unfinished runs" section (empty when there are none).
std::string unfinished_runs_section(const SweepConfig& cfg, const SweepResult& r);

std::string sweep_run_dir(const std::string& out, const std::string& recipe, uint64_t seed);

// A training run's summary and curves from its metrics.jsonl (recipe and seed as given).
SweepRun read_run(const std::string& recipe, uint64_t seed, const std::string& dir);

// Trains what is missing, then summarizes and writes the report (when complete).
SweepResult run_sweep(const SweepConfig& cfg, const SweepOptions& opts);
// Reads the finished runs of a sweep directory back (no training).
SweepResult summarize_sweep(const SweepConfig& cfg);
// OUT/results.json, OUT/results.md, OUT/loss.svg, OUT/val_loss.svg, OUT/gap.svg.
void write_sweep_report(const SweepConfig& cfg, const SweepResult& r);

}  // namespace nibble
