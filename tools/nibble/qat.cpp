// nibble qat: quantization-aware training of a checkpoint with LSQ/SEQ and optionally WinQ.
#include <cstdio>

#include "args.hpp"
#include "commands.hpp"
#include "model_loading.hpp"
#include "nibble/error.hpp"
#include "nibble/qat/qat_trainer.hpp"
#include "nibble/train/engine.hpp"

namespace nibble::cli {

int run_qat(const std::vector<std::string>& argv) {
  Args a("qat", "nibble qat --checkpoint DIR --bits 1.58|2|3|4 [--winq] --steps N --out DIR [options]",
         "Quantization-aware training (SPEC §7) of a trained checkpoint: the attention and MLP\n"
         "projections get latent fp32 weights and learnable per-row (or per-group) scales, quantized\n"
         "by LSQ (3, 4 bits) or SEQ (2 bits, ternary); embeddings, norms and head stay full precision.\n"
         "--winq adds WinQ: noise on W and α at every step and the interpolation reset every K steps.\n"
         "OUT/final/model.safetensors holds the fake-quantized weights (nibble eval measures the\n"
         "quantized model); OUT/final/qat.safetensors the latent weights and scales. Everything runs\n"
         "on --device: on a GPU the latent weights, scales and their optimizer stay in device memory.");
  a.option("checkpoint", "DIR", "the trained model (run or checkpoint directory)");
  a.option("bits", "B", "1.58 (ternary) | 2 | 3 | 4");
  a.option("quantizer", "Q", "auto | lsq | seq", "auto");
  a.option("group-size", "G", "columns per scale (0 = one scale per output row)", "0");
  a.option("act-bits", "B", "per-token activation fake quantization of the projections' inputs, 2-8 bits (default: off)");
  a.option("scale-lr-mult", "M", "the scales' learning rate as a multiple of --lr (0 freezes them at their init)", "1");
  a.flag("winq", "WinQ: noise injection and periodic interpolation reset");
  a.option("winq-noise", "S", "σ_w = σ_s, absolute", "1e-3");
  a.option("winq-reset", "K", "reset every K steps", "100");
  a.option("winq-alpha", "A", "reset weight a in W <- a·W + (1-a)·Q(W)", "0.2");
  a.option("data", "DIR", "token shards");
  a.option("text", "FILE", "a text file [default: the embedded corpus]");
  a.option("steps", "N", "QAT steps", "500");
  a.option("batch", "B", "sequences per step", "16");
  a.option("seq", "T", "tokens per sequence", "128");
  a.option("lr", "X", "peak learning rate", "1e-4");
  a.option("warmup", "N", "warmup steps [default: min(100, steps/10)]");
  a.option("log-every", "N", "metrics row every N steps", "10");
  a.option("eval-every", "N", "validation loss every N steps (0 = at the end)", "100");
  a.option("eval-batches", "N", "validation batches", "8");
  a.option("seed", "N", "seed of the data order and the WinQ noise", "1");
  a.option("save-every", "N", "checkpoint every N steps (0 = only the final one)", "500");
  a.option("resume", "DIR", "continue a stopped QAT run from its latest (or this) checkpoint, bit for bit");
  a.option("stop-after", "N", "stop after N steps with a checkpoint (resumable)");
  a.option("time-limit", "MIN", "stop after MIN minutes of wall clock, at a step boundary with a checkpoint (resumable)");
  a.option("device", "D", "cpu | cuda | auto (default $NIBBLE_DEVICE or auto; --act-bits runs on the CPU)",
           default_device());
  a.option("out", "DIR", "output directory");
  a.flag("quiet", "no progress output");
  if (!a.parse(argv)) return 0;

  QatConfig q;
  q.checkpoint = a.required("checkpoint");
  q.spec = QatSpec::make(a.number("bits"), a.choice("quantizer", {"auto", "lsq", "seq"}), a.integer("group-size"));
  q.winq = a.flag_set("winq");
  if (a.has("act-bits")) q.act_bits = static_cast<int>(a.integer("act-bits"));
  if (q.act_bits != 0 && (q.act_bits < 2 || q.act_bits > 8)) fail("--act-bits ", q.act_bits, " must be in [2, 8]");
  q.noise_w = q.noise_s = a.number("winq-noise");
  q.reset_every = a.integer("winq-reset");
  q.reset_a = a.number("winq-alpha");
  q.scale_lr_mult = a.number("scale-lr-mult");
  if (!(q.scale_lr_mult >= 0)) fail("--scale-lr-mult must be >= 0");
  if (q.noise_w < 0) fail("--winq-noise must be >= 0");
  if (!(q.reset_a >= 0 && q.reset_a <= 1)) fail("--winq-alpha must be in [0, 1]");
  TrainConfig& c = q.train;
  if (a.has("data") && a.has("text")) fail("give either --data or --text, not both");
  if (a.has("data")) c.data_dir = a.str("data");
  if (a.has("text")) c.text_file = a.str("text");
  c.steps = a.integer("steps");
  c.batch = a.integer("batch");
  c.seq = a.integer("seq");
  c.lr = a.number("lr");
  if (a.has("warmup")) c.warmup_steps = a.integer("warmup");
  c.log_every = a.integer("log-every");
  c.eval_every = a.integer("eval-every");
  c.eval_batches = a.integer("eval-batches");
  c.seed = a.unsigned_integer("seed");
  c.save_every = a.integer("save-every");
  const std::string device = a.choice("device", {"cpu", "cuda", "auto"});
  // activation fake quantization exists on the CPU engine only: auto picks it then
  c.device = a.has("act-bits") && device == "auto" ? "cpu" : resolve_device(device);
  c.out = a.required("out");
  if (a.has("resume")) q.resume = a.str("resume");
  if (a.has("stop-after")) q.stop_after = a.integer("stop-after");
  if (a.has("time-limit")) q.stop_after_seconds = a.minutes_as_seconds("time-limit");
  if (c.save_every < 0 || q.stop_after < -1) fail("--save-every and --stop-after must not be negative");
  const QatResult r = nibble::run_qat(q, a.flag_set("quiet"));
  if (r.stopped_early) {
    std::printf("stopped at step %lld of %lld (resume with --resume %s)\n", static_cast<long long>(r.steps),
                static_cast<long long>(c.steps), c.out.c_str());
    return 0;
  }
  if (q.resume.empty())
    std::printf("quantized model: val loss %.4f before QAT, %.4f after %lld steps\n", r.initial_val_loss, r.final_val_loss,
                static_cast<long long>(r.steps));
  else
    std::printf("quantized model: val loss %.4f after %lld steps\n", r.final_val_loss, static_cast<long long>(r.steps));
  return 0;
}

}  // namespace nibble::cli
