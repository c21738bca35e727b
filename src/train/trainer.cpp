#include "nibble/train/trainer.hpp"

#include <chrono>
#include <tuple>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "nibble/data/corpus.hpp"
#include "nibble/data/dataset.hpp"
#include "nibble/data/loader.hpp"
#include "nibble/data/tokenizer.hpp"
#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/ops/ops.hpp"
#include "nibble/report/metrics.hpp"
#include "nibble/report/svg_plot.hpp"
#include "nibble/train/checkpoint.hpp"
#include "nibble/train/engine.hpp"
#include "train/data_parallel.hpp"

namespace nibble {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

std::string fmt_duration(double s) {
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s / 3600), static_cast<int>(s / 60) % 60);
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s / 60), static_cast<int>(s) % 60);
  else std::snprintf(buf, sizeof buf, "%.0fs", s);
  return buf;
}

struct Data {
  std::unique_ptr<Tokenizer> tokenizer;
  TokenDataset dataset;
  std::string source;
};

Data open_data(const TrainConfig& cfg) {
  Data d;
  d.tokenizer = make_tokenizer(cfg.model.tokenizer);
  if (!cfg.data_dir.empty()) {
    d.dataset = TokenDataset::open(cfg.data_dir);
    d.source = cfg.data_dir;
  } else {
    d.source = cfg.text_file.empty() ? default_corpus_path() : cfg.text_file;
    d.dataset = TokenDataset::from_text(d.source, *d.tokenizer, cfg.val_fraction);
  }
  if (d.dataset.tokenizer != cfg.model.tokenizer || d.dataset.vocab_size > cfg.model.vocab_size)
    fail("data ", d.source, " is tokenized with ", d.dataset.tokenizer, " (vocab ", d.dataset.vocab_size,
         ") but the model '", cfg.model.name, "' uses ", cfg.model.tokenizer, " (vocab ", cfg.model.vocab_size,
         "): choose a matching --model");
  for (const std::string& w : d.dataset.warnings) std::fprintf(stderr, "nibble train: warning: %s\n", w.c_str());
  return d;
}

// The mean validation loss over `batches` global batches (each rank evaluates its share).
double evaluate(TrainEngine& model, DataLoader& val, int64_t batches, const StepContext& ctx, DataParallel& dp) {
  val.reset();
  double sum = 0;
  for (int64_t i = 0; i < batches; ++i) {
    const Batch b = dp.shard(val.next());
    sum += model.forward(b.inputs.data(), b.targets.data(), b.batch_size, b.seq_len, ctx, /*need_backward=*/false);
  }
  return dp.mean(sum / static_cast<double>(batches));
}

// The loss curves of the whole run (all of metrics.jsonl, also across resumes).
void write_loss_plot(const std::string& out, const std::string& title) {
  const report::MetricsLog log = report::read_metrics_jsonl((fs::path(out) / "metrics.jsonl").string());
  const std::vector<double> steps = log.column("step"), loss = log.column("loss_avg"), val = log.column("val_loss");
  std::vector<double> vs, vl;
  for (size_t i = 0; i < steps.size(); ++i)
    if (std::isfinite(val[i])) {
      vs.push_back(steps[i]);
      vl.push_back(val[i]);
    }
  std::vector<report::Series> s;
  s.push_back(report::Series{"train loss (mean over each log window)", steps, loss});
  if (!vs.empty()) s.push_back(report::Series{"validation loss", vs, vl});
  report::PlotOptions o;
  o.title = title;
  o.x_label = "step";
  o.y_label = "cross-entropy (nats/token)";
  report::write_line_plot((fs::path(out) / "loss.svg").string(), s, o);
}

}  // namespace

TrainResult train(const TrainConfig& cfg_in, const TrainOptions& opts) {
  TrainConfig cfg = cfg_in;
  cfg.validate();
  cfg.device = resolve_device(cfg.device);
  // Data parallelism from the launcher's environment (one process: a no-op). Rank 0 alone
  // writes the run directory: metrics, statistics, checkpoints, plots.
  DataParallel dp(cfg.device, cfg.batch);
  const bool lead = dp.lead();
  const bool quiet = opts.quiet || !lead;
  const float inv_world = 1.0f / static_cast<float>(dp.world());
  if (lead) fs::create_directories(cfg.out);

  std::unique_ptr<TrainEngine> engine = make_engine(cfg.device, cfg.model);
  TrainEngine& model = *engine;
  model.set_recipe(cfg.recipe);
  if (opts.zero1) dp.shard_optimizer(model);
  dp.attach(model);  // after sharding: ZeRO-1 reduce-scatters after the backward instead
  const AdamHyper hyper{static_cast<float>(cfg.beta1), static_cast<float>(cfg.beta2), static_cast<float>(cfg.eps),
                        static_cast<float>(cfg.weight_decay), cfg.decay_all};
  int64_t adam_step = 0;
  const Json config_json = cfg.to_json();  // written once here, and into every checkpoint
  // Host copies of the state for checkpoints (fetched from the engine when one is written).
  std::vector<float> host_weights;
  auto save = [&](const std::string& name, const Json& trainer_json) {
    // with ZeRO-1 every rank sends its slice of the moments; the checkpoint holds them whole
    OptimizerState opt = lead || dp.sharded() ? dp.whole_optimizer(model) : OptimizerState{};
    if (!lead) return;
    host_weights.resize(static_cast<size_t>(model.num_params()));
    model.get_weights(host_weights.data());
    opt.step = adam_step;
    save_checkpoint(cfg.out, name, ModelWeights{model.config(), model.params(), host_weights.data()}, opt,
                    config_json, trainer_json);
  };

  Data data = open_data(cfg);
  DataLoader train_loader(data.dataset.train, cfg.batch, cfg.seq, cfg.seed, true);
  DataLoader val_loader(data.dataset.val, cfg.batch, cfg.seq, cfg.seed, false);

  int64_t start = 0;
  double tokens_seen = 0;
  if (!opts.resume.empty()) {
    const std::string dir = resolve_checkpoint_dir(opts.resume);
    const Checkpoint ck = load_checkpoint(dir, model.params(), true);
    model.set_weights(ck.weights.data());
    model.set_optimizer(dp.slice_optimizer(ck.opt));  // ZeRO-1: this rank's slice
    adam_step = ck.opt.step;
    start = ck.trainer.at("step").as_int64();
    tokens_seen = ck.trainer.at("tokens").as_double();
    train_loader.restore(LoaderState::from_json(ck.trainer.at("loader")));
    if (!quiet) std::printf("resuming from %s at step %lld\n", dir.c_str(), static_cast<long long>(start));
  } else {
    model.init(cfg.seed);
  }
  std::unique_ptr<report::MetricsWriter> metrics;
  std::unique_ptr<report::MetricsWriter> stats_out;
  if (lead) {
    write_file_atomic((fs::path(cfg.out) / "config.json").string(), config_json.dump(2) + "\n", Durability::Fsync);
    metrics = std::make_unique<report::MetricsWriter>((fs::path(cfg.out) / "metrics.jsonl").string(), opts.resume.empty() ? -1 : start);
  }
  // Both logs drop what a killed run wrote past the checkpoint it resumes from, so a resumed run's
  // logs equal an uninterrupted one's. A stats row's step is the 0-based step it was collected
  // in (steps 0 .. start − 1 are done); a metrics row's is the number of steps done.
  if (lead && cfg.stats_every > 0)
    stats_out = std::make_unique<report::MetricsWriter>((fs::path(cfg.out) / "stats.jsonl").string(),
                                                         opts.resume.empty() ? -1 : start - 1);

  if (!quiet)
    std::printf("nibble train: device %s, %s\n", model.device().c_str(), dp.describe().c_str());
  if (!quiet)
    std::printf("nibble train: model %s (%.2fM params), recipe %s, data %s (%lld train tokens), %lld steps x %lld x %lld tokens\n",
                cfg.model.name.c_str(), model.num_params() / 1e6, cfg.recipe.name.c_str(), data.source.c_str(),
                static_cast<long long>(data.dataset.train.size()), static_cast<long long>(cfg.steps),
                static_cast<long long>(cfg.batch), static_cast<long long>(cfg.seq));

  auto checkpoint_trainer_json = [&](int64_t step) {
    Json t = Json::object();
    t["step"] = step;
    t["tokens"] = tokens_seen;
    t["loader"] = train_loader.state().to_json();
    t["seed"] = cfg.seed;
    t["device_name"] = model.device();  // the hardware: what the run's tokens/s were measured on
    return t;
  };
  std::string last_good = fs::exists(fs::path(cfg.out) / "latest") ? read_file((fs::path(cfg.out) / "latest").string()) : "";
  while (!last_good.empty() && last_good.back() == '\n') last_good.pop_back();

  TrainResult res;
  res.out = cfg.out;
  res.num_params = model.num_params();
  res.val_loss = NAN;
  double window_loss = 0;
  int64_t window_n = 0;
  const auto t_begin = Clock::now();
  auto t_window = Clock::now();
  int64_t tokens_window = 0;
  int64_t end = opts.stop_after >= 0 ? std::min(cfg.steps, start + opts.stop_after) : cfg.steps;
  int64_t step = start;
  for (; step < end; ++step) {
    StepContext ctx;
    ctx.seed = cfg.seed;
    ctx.step = static_cast<uint64_t>(step);
    ctx.collect_stats = lead && cfg.stats_every > 0 && step % cfg.stats_every == 0;
    const Batch batch = dp.shard(train_loader.next());
    if (opts.before_step) {
      if (!model.cpu_model()) fail("TrainOptions.before_step needs the CPU engine");
      opts.before_step(*model.cpu_model(), step);
    }
    model.zero_grad();
    auto diverged = [&](const std::string& what) {
      return NonFiniteLoss(detail::concat("step ", step, ": ", what, "; stopping. The last good checkpoint is ",
                                          last_good.empty() ? "(none)" : (fs::path(cfg.out) / last_good).string()));
    };
    double loss = 0;
    // --time-limit: rank 0's clock at the start of the step decides for every rank (clocks
    // differ, the stop step must not); the verdict travels with the loss
    const bool time_up_here = lead && opts.stop_after_seconds >= 0 &&
                              std::chrono::duration<double>(Clock::now() - t_begin).count() >= opts.stop_after_seconds;
    bool out_of_time = false;
    try {
      // every rank sees the mean loss: a non-finite one stops all of them at the same step
      std::tie(loss, out_of_time) = dp.mean_and_any(
          model.forward(batch.inputs.data(), batch.targets.data(), batch.batch_size, batch.seq_len, ctx), time_up_here);
      if (!std::isfinite(loss)) throw diverged(detail::concat("the loss is ", loss));
      model.backward(ctx);
    } catch (const NonFiniteValue& e) {
      throw diverged(detail::concat("the model diverged (", e.what(), ")"));
    }
    dp.sum_gradients(model);  // Σ over ranks; the 1/W goes into the gradient scale below
    const double gnorm = dp.grad_norm(model) / dp.world();
    if (!std::isfinite(gnorm)) throw diverged(detail::concat("the gradient norm is ", gnorm));
    const float clip = cfg.grad_clip > 0 && gnorm > cfg.grad_clip ? static_cast<float>(cfg.grad_clip / gnorm) : 1.0f;
    const double lr = cfg.lr_at(step);
    ++adam_step;
    model.optimizer_step(hyper, static_cast<float>(lr), clip * inv_world, adam_step);  // 1/1 is exact
    dp.gather_weights(model);  // ZeRO-1: every rank's updated slice to every rank
    tokens_seen += static_cast<double>(cfg.tokens_per_step());
    tokens_window += cfg.tokens_per_step();
    window_loss += loss;
    ++window_n;
    if (out_of_time && step + 1 < end) end = step + 1;

    if (ctx.collect_stats && stats_out) {
      for (const OperandStats& s : model.operand_stats()) {
        Json row = Json::object();
        row["step"] = step;
        row["layer"] = s.layer;
        row["gemm"] = s.gemm;
        row["operand"] = s.operand;
        for (const auto& [k, v] : s.stats.as_object()) row[k] = v;
        stats_out->write(row);
      }
    }

    const bool last = step + 1 == cfg.steps;
    const bool eval_now = last || (cfg.eval_every > 0 && (step + 1) % cfg.eval_every == 0);
    if ((step + 1) % cfg.log_every == 0 || eval_now || step + 1 == end) {
      const double secs = std::chrono::duration<double>(Clock::now() - t_window).count();
      const double tps = secs > 0 ? static_cast<double>(tokens_window) / secs : 0;
      Json row = Json::object();
      row["step"] = step + 1;
      row["loss"] = loss;
      row["loss_avg"] = window_loss / static_cast<double>(window_n);
      row["lr"] = lr;
      row["grad_norm"] = gnorm;
      row["tokens"] = tokens_seen;
      row["tokens_per_s"] = tps;
      if (eval_now) {
        StepContext ectx = ctx;
        ectx.collect_stats = false;
        res.val_loss = evaluate(model, val_loader, cfg.eval_batches, ectx, dp);
        row["val_loss"] = res.val_loss;
      }
      if (metrics) metrics->write(row);
      res.last_loss = window_loss / static_cast<double>(window_n);
      if (!quiet) {
        const double elapsed = std::chrono::duration<double>(Clock::now() - t_begin).count();
        const double per_step = elapsed / static_cast<double>(step + 1 - start);
        char line[256];
        std::snprintf(line, sizeof line, "step %6lld/%lld | loss %.4f%s | lr %.2e | %7.0f tok/s | ETA %s",
                      static_cast<long long>(step + 1), static_cast<long long>(cfg.steps), res.last_loss,
                      eval_now ? (" | val " + std::to_string(res.val_loss).substr(0, 6)).c_str() : "", lr, tps,
                      fmt_duration(per_step * static_cast<double>(end - step - 1)).c_str());
        if (opts.progress_tty && !eval_now) std::printf("\r%-100s", line);
        else std::printf("%s%s\n", opts.progress_tty ? "\r" : "", line);
        std::fflush(stdout);
      }
      window_loss = 0;
      window_n = 0;
      tokens_window = 0;
      t_window = Clock::now();
    }
    const bool save_now = cfg.save_every > 0 && (step + 1) % cfg.save_every == 0 && !last;
    if (save_now || (step + 1 == end && !last)) {
      save(checkpoint_step_name(step + 1), checkpoint_trainer_json(step + 1));
      last_good = checkpoint_step_name(step + 1);
    }
  }
  res.steps = step;
  model.synchronize();
  res.seconds = std::chrono::duration<double>(Clock::now() - t_begin).count();
  res.tokens_per_s = res.seconds > 0 ? static_cast<double>(step - start) * cfg.tokens_per_step() / res.seconds : 0;
  res.stopped_early = step < cfg.steps;
  if (!res.stopped_early) {
    save("final", checkpoint_trainer_json(step));
  }
  if (lead) write_loss_plot(cfg.out, cfg.model.name + " · " + cfg.recipe.name + " · " + std::to_string(cfg.steps) + " steps");
  dp.barrier();  // every rank returns after rank 0's final checkpoint is on disk
  return res;
}

}  // namespace nibble
