#pragma once
// `nibble qat`: quantization-aware training of a trained checkpoint (SPEC §7). The attention
// and MLP projections are quantized (latent fp32 W, learnable per-row or per-group α); the
// embeddings, norms and head stay full precision. Each step the model runs on Ŵ = Q(W̃; α̃)
// — with WinQ, W̃ = W + σ_w ξ and α̃ = α + σ_s ζ (fresh normals each step), gradients taken at that
// noisy point apply to W (STE) and α — then AdamW updates W and α, and with WinQ every K steps
// W ← a·W + (1 − a)·Q(W; α). Outputs as `nibble train`: OUT/metrics.jsonl, OUT/loss.svg, and
// OUT/final/ whose model.safetensors holds the fake-quantized weights Ŵ = Q(W; α) (so `nibble
// eval` measures the quantized model) and qat.safetensors the latent W and α.
#include <cstdint>
#include <string>

#include "nibble/qat/weight_quant.hpp"
#include "nibble/train/train_config.hpp"

namespace nibble {

struct QatConfig {
  std::string checkpoint;  // the trained model to start from
  TrainConfig train;       // data, steps, batch, seq, lr, schedule, seed, out (model: from the checkpoint)
  QatSpec spec;
  bool winq = false;
  double noise_w = 1e-3, noise_s = 1e-3;  // σ_w, σ_s (absolute)
  int64_t reset_every = 100;              // K
  double reset_a = 0.2;                   // a
  double scale_lr_mult = 1;               // α's learning rate = the schedule's lr · this
  int act_bits = 0;                       // per-token activation fake quantization (0: off)
  // Checkpoints every train.save_every steps (and when stopped); resume continues a run from its
  // latest (or a given) checkpoint bit for bit: latent W, α, both AdamW states, data position.
  std::string resume;                     // a QAT run or checkpoint directory ("" = start)
  int64_t stop_after = -1;                // stop (with a checkpoint) after this many steps
  double stop_after_seconds = -1;         // stop (with a checkpoint) after the step that crosses this
};

struct QatResult {
  double initial_val_loss = 0;  // the quantized model before any QAT step
  double final_val_loss = 0;
  int64_t steps = 0;            // the step reached
  bool stopped_early = false;
};

QatResult run_qat(const QatConfig& cfg, bool quiet);

}  // namespace nibble
