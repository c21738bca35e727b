// nibble train: train a model with a 4-bit recipe (CPU reference backend).
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "args.hpp"
#include "nibble/dist/comm.hpp"
#include "model_loading.hpp"
#include "commands.hpp"
#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/train/checkpoint.hpp"
#include "nibble/train/trainer.hpp"
#include "table.hpp"

namespace nibble::cli {

namespace {

Args train_args() {
  Args a("train", "nibble train [--model M] [--recipe R] [--data DIR | --text FILE] [--steps N] [options]",
         "Trains a LLaMA-style transformer whose attention and MLP projections run their three\n"
         "GEMMs under a 4-bit recipe (SPEC §5). With no options: the tiny model on the embedded\n"
         "corpus (Python docs, byte tokens) with the nvfp4 recipe, about five minutes on 2 cores.\n"
         "Writes OUT/config.json, OUT/metrics.jsonl, OUT/step_NNNNNN/ checkpoints, OUT/final/,\n"
         "OUT/loss.svg (and OUT/stats.jsonl with --stats-every).");
  a.option("model", "M", "tiny | 20m | 60m | 124m | 350m, or a model .json", "tiny");
  a.option("recipe", "R", "bf16 | nvfp4 | mxfp4 | nvfp4-mean | ufp4 | ufp4-mean | metis,\nor a recipe .json", "nvfp4");
  a.option("data", "DIR", "token shards written by nibble data (or llm.c)");
  a.option("text", "FILE", "a UTF-8 text file, tokenized on the fly (last --val-fraction held out)");
  a.option("val-fraction", "F", "validation share of --text / the default corpus", "0.02");
  a.option("steps", "N", "optimizer steps", "1500");
  a.option("batch", "B", "sequences per step", "16");
  a.option("seq", "T", "tokens per sequence", "128");
  a.option("lr", "X", "peak learning rate (linear warmup, cosine decay to lr*min-lr-ratio)", "2e-3");
  a.option("min-lr-ratio", "R", "final learning rate as a fraction of --lr", "0.1");
  a.option("warmup", "N", "warmup steps [default: min(100, steps/10)]");
  a.option("weight-decay", "W", "AdamW decoupled weight decay (projections and head only)", "0.1");
  a.flag("decay-all", "apply weight decay to norms and embeddings too");
  a.option("grad-clip", "C", "clip the global gradient norm to C (0 = off)", "1.0");
  a.option("seed", "N", "seed of the initialization, data order and all 4-bit randomness", "1");
  a.option("out", "DIR", "output directory [default: runs/<model>-<recipe>]");
  a.option("resume", "DIR", "continue a run (its directory or a checkpoint directory); other\noptions given override the saved configuration");
  a.option("device", "D", "cpu | cuda | auto (the GPU when one is present; default $NIBBLE_DEVICE or auto)", default_device());
  a.option("log-every", "N", "log a metrics row every N steps", "10");
  a.option("eval-every", "N", "validation loss every N steps (0 = at the end only)", "100");
  a.option("eval-batches", "N", "validation batches per evaluation", "8");
  a.option("save-every", "N", "checkpoint every N steps (0 = final only)", "500");
  a.option("stats-every", "N", "log SPEC §6 statistics of every layer's X, W, dY every N steps", "0");
  a.option("stop-after", "N", "stop after N more steps, leaving a resumable checkpoint");
  a.flag("zero1", "data parallelism: shard the AdamW state over the ranks (ZeRO-1; same numbers, less memory)");
  a.option("time-limit", "MIN", "stop after MIN minutes of wall clock, at a step boundary, leaving a resumable checkpoint");
  a.flag("quiet", "no progress output");
  return a;
}

}  // namespace

int run_train(const std::vector<std::string>& argv) {
  Args a = train_args();
  if (!a.parse(argv)) return 0;
  TrainConfig cfg;
  TrainOptions opts;
  const bool resuming = a.has("resume");
  if (resuming) {
    opts.resume = a.str("resume");
    const std::string dir = resolve_checkpoint_dir(opts.resume);
    cfg = TrainConfig::from_json(read_checkpoint_config(dir), dir + "/config.json");
  }
  // Options: on a fresh run every option applies (with its default); on a resumed run only
  // the ones given explicitly override the saved configuration.
  auto given = [&](const char* name) { return resuming ? a.given(name) : a.has(name); };
  if (given("model")) cfg.model = ModelConfig::resolve(a.str("model"));
  if (given("recipe")) cfg.recipe = Recipe::resolve(a.str("recipe"));
  if (a.has("data") && a.has("text")) fail("give either --data or --text, not both");
  if (a.has("data")) { cfg.data_dir = a.str("data"); cfg.text_file.clear(); }
  if (a.has("text")) { cfg.text_file = a.str("text"); cfg.data_dir.clear(); }
  if (given("val-fraction")) cfg.val_fraction = a.number("val-fraction");
  if (given("steps")) cfg.steps = a.integer("steps");
  if (given("batch")) cfg.batch = a.integer("batch");
  if (given("seq")) cfg.seq = a.integer("seq");
  if (given("lr")) cfg.lr = a.number("lr");
  if (given("min-lr-ratio")) cfg.min_lr_ratio = a.number("min-lr-ratio");
  if (a.has("warmup")) cfg.warmup_steps = a.integer("warmup");
  if (given("weight-decay")) cfg.weight_decay = a.number("weight-decay");
  if (given("grad-clip")) cfg.grad_clip = a.number("grad-clip");
  if (a.flag_set("decay-all")) cfg.decay_all = true;
  if (given("seed")) cfg.seed = a.unsigned_integer("seed");
  // The device is a property of this process, not of the run: a resumed run picks its own.
  cfg.device = a.choice("device", {"cpu", "cuda", "auto"});
  if (given("log-every")) cfg.log_every = a.integer("log-every");
  if (given("eval-every")) cfg.eval_every = a.integer("eval-every");
  if (given("eval-batches")) cfg.eval_batches = a.integer("eval-batches");
  if (given("save-every")) cfg.save_every = a.integer("save-every");
  if (given("stats-every")) cfg.stats_every = a.integer("stats-every");
  if (a.has("out")) cfg.out = a.str("out");
  else if (resuming) cfg.out = std::filesystem::path(resolve_checkpoint_dir(opts.resume)).parent_path().string();
  else cfg.out = "runs/" + cfg.model.name + "-" + cfg.recipe.name;
  if (a.has("stop-after")) opts.stop_after = a.integer("stop-after");
  if (a.has("time-limit")) opts.stop_after_seconds = a.minutes_as_seconds("time-limit");
  opts.quiet = a.flag_set("quiet");
  opts.zero1 = a.flag_set("zero1");
  opts.progress_tty = ::isatty(STDOUT_FILENO);
  cfg.validate();

  TrainResult r;
  try {
    r = train(cfg, opts);
  } catch (const NonFiniteLoss& e) {
    std::fprintf(stderr, "nibble train: error: %s\n", e.what());
    return 3;
  }
  if (!opts.quiet && DistEnv::from_environment().rank == 0) {  // one summary per run, from rank 0
    Table t({"run", cfg.out});
    char buf[128];
    t.row({"model", cfg.model.name + " (" + fmt(static_cast<double>(r.num_params) / 1e6, 2) + "M params)"});
    t.row({"recipe", cfg.recipe.name});
    std::snprintf(buf, sizeof buf, "%lld of %lld (%.2fM tokens this session)", static_cast<long long>(r.steps),
                  static_cast<long long>(cfg.steps), r.tokens_per_s * r.seconds / 1e6);
    t.row({"steps", buf});
    t.row({"train loss", fmt(r.last_loss, 4) + " (mean of the last log window)"});
    if (std::isfinite(r.val_loss)) {
      std::string v = fmt(r.val_loss, 4) + " nats/token, perplexity " + fmt(std::exp(r.val_loss), 2);
      if (cfg.model.tokenizer == "byte") v += ", " + fmt(r.val_loss / std::log(2.0), 3) + " bits/byte";
      t.row({"val loss", v});
    }
    std::snprintf(buf, sizeof buf, "%.0f tokens/s, %.1f s", r.tokens_per_s, r.seconds);
    t.row({"speed", buf});
    t.row({"outputs", r.stopped_early ? "config.json metrics.jsonl step_*/ (resume with --resume " + cfg.out + ")"
                                      : "config.json metrics.jsonl final/ loss.svg"});
    std::fputs(("\n" + t.str()).c_str(), stdout);
  }
  return 0;
}

}  // namespace nibble::cli
