// nibble sweep: every recipe from the same initialization and data order, compared with bf16.
#include <cstdio>
#include <sstream>

#include "args.hpp"
#include "commands.hpp"
#include "model_loading.hpp"
#include "nibble/error.hpp"
#include "nibble/study/sweep.hpp"
#include "nibble/train/engine.hpp"

namespace nibble::cli {


int run_sweep(const std::vector<std::string>& argv) {
  Args a("sweep", "nibble sweep --recipes LIST [--model M] [--data DIR | --text FILE] (--tokens N | --steps N) --out DIR",
         "Trains one run per recipe and seed (OUT/runs/<recipe>-seed<N>/, ordinary training runs)\n"
         "from the same initialization on the same data order, then writes OUT/results.json,\n"
         "OUT/results.md (final train and validation loss, gap to bf16, tokens/s, seed spread) and\n"
         "plots (loss.svg, val_loss.svg, gap.svg). Run it again to resume a stopped sweep:\n"
         "finished runs are kept and a run with a checkpoint continues where it stopped.");
  a.option("recipes", "LIST", "comma-separated recipes (presets or recipe .json files)",
           "bf16,nvfp4,mxfp4,nvfp4-mean,ufp4,ufp4-mean,metis");
  a.option("seeds", "LIST", "comma-separated seeds", "1");
  a.option("model", "M", "tiny | 20m | 60m | 124m | 350m, or a model .json", "tiny");
  a.option("data", "DIR", "token shards written by nibble data (or llm.c)");
  a.option("text", "FILE", "a UTF-8 text file, tokenized on the fly");
  a.option("tokens", "N", "training tokens per run (rounded up to whole steps)");
  a.option("steps", "N", "optimizer steps per run (instead of --tokens)");
  a.option("batch", "B", "sequences per step", "16");
  a.option("seq", "T", "tokens per sequence", "128");
  a.option("lr", "X", "peak learning rate", "2e-3");
  a.option("warmup", "N", "warmup steps [default: min(100, steps/10)]");
  a.option("weight-decay", "W", "AdamW weight decay", "0.1");
  a.option("log-every", "N", "log a metrics row every N steps", "10");
  a.option("eval-every", "N", "validation loss every N steps", "100");
  a.option("eval-batches", "N", "validation batches per evaluation", "8");
  a.option("stats-every", "N", "each run logs SPEC §6 statistics of every layer's X, W, dY every N steps (stats.jsonl)", "0");
  a.option("save-every", "N", "checkpoint every N steps (what a stopped sweep resumes from)", "500");
  a.option("device", "D", "cpu | cuda | auto (default $NIBBLE_DEVICE or auto)", default_device());
  a.option("out", "DIR", "sweep directory");
  a.option("stop-after", "N", "stop after N training steps in total (resumable)");
  a.option("time-limit", "MIN", "stop after MIN minutes of wall clock, at a step boundary with a checkpoint (resumable)");
  a.flag("summarize", "train nothing: write the report from the runs finished so far (marked incomplete when some are missing)");
  a.flag("quiet", "no progress output");
  if (!a.parse(argv)) return 0;
  SweepConfig s;
  TrainConfig& c = s.base;
  c.model = ModelConfig::resolve(a.str("model"));
  if (a.has("data") && a.has("text")) fail("give either --data or --text, not both");
  if (a.has("data")) c.data_dir = a.str("data");
  if (a.has("text")) c.text_file = a.str("text");
  c.batch = a.integer("batch");
  c.seq = a.integer("seq");
  if (a.has("tokens") == a.has("steps")) fail("give exactly one of --tokens and --steps");
  if (c.batch < 1 || c.seq < 1) fail("--batch and --seq must be positive");
  if (a.has("steps")) {
    c.steps = a.integer("steps");
  } else {
    const int64_t tokens = a.integer("tokens");
    if (tokens < 1) fail("--tokens must be positive, got ", tokens);
    c.steps = (tokens + c.tokens_per_step() - 1) / c.tokens_per_step();
  }
  c.lr = a.number("lr");
  if (a.has("warmup")) c.warmup_steps = a.integer("warmup");
  c.weight_decay = a.number("weight-decay");
  c.log_every = a.integer("log-every");
  c.eval_every = a.integer("eval-every");
  c.eval_batches = a.integer("eval-batches");
  c.stats_every = a.integer("stats-every");
  c.save_every = a.integer("save-every");
  c.device = resolve_device(a.choice("device", {"cpu", "cuda", "auto"}));
  s.recipes = split_list(a.str("recipes"));
  s.seeds.clear();
  for (const std::string& x : split_list(a.str("seeds"))) {
    std::size_t used = 0;
    unsigned long long v = 0;
    try {
      v = std::stoull(x, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != x.size() || x.empty() || x[0] == '-') fail("--seeds: '", x, "' is not a non-negative integer");
    s.seeds.push_back(v);
  }
  s.out = a.required("out");
  c.out = s.out;
  c.validate();
  SweepOptions o;
  o.quiet = a.flag_set("quiet");
  if (a.has("stop-after")) o.stop_after_steps = a.integer("stop-after");
  if (a.has("time-limit")) o.stop_after_seconds = a.minutes_as_seconds("time-limit");
  if (a.flag_set("summarize")) {
    const SweepResult r = nibble::summarize_sweep(s);
    nibble::write_sweep_report(s, r);
    std::printf("%s/results.md: %zu of %zu runs%s\n", s.out.c_str(), r.runs.size(), s.recipes.size() * s.seeds.size(),
                r.complete ? ""
                           : (" (incomplete; " + std::to_string(r.unfinished.size()) +
                              " unfinished compared at their evaluations, " + std::to_string(r.not_started.size()) +
                              " not started)").c_str());
    return 0;
  }
  const SweepResult r = nibble::run_sweep(s, o);
  if (!r.complete) {
    std::printf("sweep stopped with %zu of %zu runs finished; run the same command again to resume\n", r.runs.size(),
                s.recipes.size() * s.seeds.size());
    return 0;
  }
  if (!o.quiet) std::printf("results: %s/results.md\n", s.out.c_str());
  return 0;
}

}  // namespace nibble::cli
