#pragma once
// `nibble analyze formats`: how each 4-bit format treats a distribution (SPEC §6 statistics).
//  - shrinkage, SNR, relative error and code utilisation of nvfp4, mxfp4 (e2m1) and int4 (the
//    uniform grid of UFP4), each without RHT and with RHT 16/32/128, under RNE and SR, on
//    Gaussian, Laplace, Student-t(3) and LLM-like activation samples, and optionally on a
//    checkpoint's tensors: the 2-D weights and, from one bf16 forward + backward on its data,
//    the projections' inputs X and output gradients dY (first, middle and last block each;
//    named "LAYER:x" and "LAYER:dy"), with a table of means by kind (W, X, dY);
//  - the depth effect: the relative error of each block's output (the residual stream) under a
//    4-bit recipe's forward against the bf16 forward of the same checkpoint on the same tokens.
#include <cstdint>
#include <string>
#include <vector>

#include "nibble/json.hpp"

namespace nibble {

struct FormatsConfig {
  int64_t rows = 1024, cols = 1024;   // synthetic sample size
  uint64_t seed = 1;
  std::vector<std::string> distributions = {"gaussian", "laplace", "student-t3", "activations"};
  std::string checkpoint;             // optional: also its 2-D weights, its operands and the depth effect
  int64_t operand_rows = 1024;        // captured X and dY: the first rows (tokens) of each; 0 = none
  std::vector<std::string> depth_recipes = {"nvfp4", "mxfp4", "ufp4", "nvfp4-mean", "ufp4-mean"};
  int64_t depth_batch = 4, depth_seq = 0;  // depth_seq 0: the checkpoint's training seq
  std::string out;                    // results.json, results.md, plots
};

// Rows of {"tensor", "format", "rht", "rounding", "snr_db", "rel_err", "shrinkage",
// "code_entropy_bits", "codes_used"} and, with a checkpoint, {"depth": [{"recipe", "rel_err":
// [per depth]}]}. Writes the report files when cfg.out is set.
Json analyze_formats(const FormatsConfig& cfg);

}  // namespace nibble

namespace nibble {

// `nibble analyze --checkpoint DIR`: every attention/MLP projection's operands X, W and dY from
// one forward + backward of the checkpoint (under bf16) on a batch of its data, each quantized by
// nvfp4, mxfp4 and int4 under every transform — none, RHT16/32/128, centring, centring + RHT16
// (X and dY only: the mean is over tokens), spectral split (dY only) — with SPEC §6 statistics
// of the reconstruction in the operand's own coordinates, the best transform per tensor, the
// anisotropy of X and dY, and heatmaps (layer × transform SNR per format).
struct CheckpointAnalysisConfig {
  std::string checkpoint;
  std::string data_dir, text_file;  // default: the run's own data
  int64_t batch = 4, seq = 0;       // seq 0: the run's training seq
  uint64_t seed = 1;
  std::string device = "cpu";       // the engine of the forward + backward that captures the operands
  std::string out;
};
Json analyze_checkpoint(const CheckpointAnalysisConfig& cfg);

}  // namespace nibble

namespace nibble {

// `nibble analyze stats RUN_DIR`: the trainer's --stats-every log (OUT/stats.jsonl) as plots of
// how anisotropy evolves over layers and steps: heatmaps (layer × step) of X's (fprop) mean-energy
// share, top-1 energy share, |cos(μ, v₁)|, amax and block amax inflation and of dY's (dgrad)
// mean-energy share and block amax inflation, their mean over layers per step, and two tables:
// per step the mean over layers of X's and dY's statistics, and X's per layer at the last step.
// Returns {"panels": [{"gemm", "operand", "key", "layers": [...], "steps": [...], "values":
// [layer-major]}], "over_steps": [{"step", "x": {...}, "dy": {...}}]} (the first table's numbers,
// with "mean_share_of_top1" the per-layer mean ÷ top-1 share averaged over layers).
Json analyze_stats_log(const std::string& run_dir, const std::string& out);

}  // namespace nibble
