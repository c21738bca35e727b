// nibble analyze formats: shrinkage, SNR and code use of the 4-bit formats; the depth effect.
#include <cstdio>
#include <sstream>

#include "args.hpp"
#include "commands.hpp"
#include "model_loading.hpp"
#include "nibble/error.hpp"
#include "nibble/study/analyze.hpp"
#include "nibble/train/engine.hpp"

namespace nibble::cli {


int run_analyze(const std::vector<std::string>& argv) {
  Args a("analyze", "nibble analyze --checkpoint DIR [--data DIR | --text FILE] --out DIR\n"
         "       nibble analyze formats [--checkpoint DIR] [options] --out DIR\n"
         "       nibble analyze stats RUN_DIR --out DIR",
         "With a checkpoint: every attention/MLP projection's operands X, W and dY from one forward +\n"
         "backward on a batch of data, quantized by nvfp4, mxfp4 and int4 under every transform (none,\n"
         "RHT16/32/128, centring, centring + RHT16, spectral split), SPEC §6 statistics, the best\n"
         "transform per tensor, X's and dY's anisotropy, and SNR heatmaps (layer × transform).\n\n"
         "formats: shrinkage, SNR, relative error and code use of nvfp4, mxfp4 (e2m1) and int4 (the\n"
         "uniform grid of UFP4), each without RHT and with RHT 16/32/128, under RNE and SR, on\n"
         "Gaussian, Laplace, Student-t(3) and LLM-like activation samples; with --checkpoint also on\n"
         "its weights and, from one bf16 forward + backward on its data, its projections' inputs X\n"
         "and output gradients dY (first, middle and last block each; means by kind in a table), and\n"
         "the depth effect: how far each block's\n"
         "output drifts from the bf16 forward under each 4-bit recipe. Writes DIR/results.md,\n"
         "DIR/results.json (every row) and DIR/depth.svg.");
  a.allow_positionals("WHAT", "formats | stats RUN_DIR (heatmaps of a run's --stats-every log)");
  a.option("checkpoint", "DIR", "a run or checkpoint directory (weights + depth effect)");
  a.option("rows", "R", "synthetic sample rows", "1024");
  a.option("cols", "C", "synthetic sample columns (a multiple of 128 for every RHT size)", "1024");
  a.option("seed", "N", "seed of the samples, SR and RHT signs", "1");
  a.option("distributions", "LIST", "gaussian, laplace, student-t3, activations", "gaussian,laplace,student-t3,activations");
  a.option("depth-recipes", "LIST", "recipes of the depth effect", "nvfp4,mxfp4,ufp4,nvfp4-mean,ufp4-mean");
  a.option("depth-batch", "B", "sequences of the depth forward (and of the captured X and dY)", "4");
  a.option("operand-rows", "N", "tokens kept of each captured X and dY (0: weights only)", "1024");
  a.option("data", "DIR", "token shards for the checkpoint analysis [default: the run's data]");
  a.option("text", "FILE", "a text file for the checkpoint analysis");
  a.option("batch", "B", "sequences of the checkpoint analysis' batch", "4");
  a.option("seq", "T", "tokens per sequence [default: the run's training seq]");
  a.option("device", "D", "cpu | cuda | auto: the engine of --checkpoint's forward + backward (default $NIBBLE_DEVICE or auto; "
           "the statistics and the formats analysis run on the CPU)", default_device());
  a.option("out", "DIR", "output directory");
  if (!a.parse(argv)) return 0;
  if (a.positionals().empty()) {
    if (!a.has("checkpoint")) fail("nibble analyze: give --checkpoint DIR, or 'formats' (see --help)");
    CheckpointAnalysisConfig c;
    c.checkpoint = a.str("checkpoint");
    if (a.has("data") && a.has("text")) fail("give either --data or --text, not both");
    if (a.has("data")) c.data_dir = a.str("data");
    if (a.has("text")) c.text_file = a.str("text");
    c.batch = a.integer("batch");
    if (a.has("seq")) c.seq = a.integer("seq");
    if (c.batch < 1 || (a.has("seq") && c.seq < 1)) fail("--batch and --seq must be positive");
    c.seed = a.unsigned_integer("seed");
    c.device = resolve_device(a.choice("device", {"cpu", "cuda", "auto"}));
    c.out = a.required("out");
    analyze_checkpoint(c);
    std::printf("%s/results.md\n", c.out.c_str());
    return 0;
  }
  if (a.positionals()[0] == "stats") {
    if (a.positionals().size() != 2) fail("nibble analyze stats RUN_DIR --out DIR");
    analyze_stats_log(a.positionals()[1], a.required("out"));
    std::printf("%s/results.md\n", a.str("out").c_str());
    return 0;
  }
  if (a.positionals().size() != 1 || a.positionals()[0] != "formats")
    fail("nibble analyze: unknown analysis '", a.positionals()[0], "' (use --checkpoint DIR, 'formats' or 'stats RUN_DIR')");
  FormatsConfig c;
  c.rows = a.integer("rows");
  c.cols = a.integer("cols");
  if (c.rows < 1 || c.cols < 32 || c.cols % 32 != 0) fail("--rows must be positive and --cols a positive multiple of 32");
  c.seed = a.unsigned_integer("seed");
  c.distributions = split_list(a.str("distributions"));
  c.depth_recipes = split_list(a.str("depth-recipes"));
  c.depth_batch = a.integer("depth-batch");
  c.operand_rows = a.integer("operand-rows");
  if (c.operand_rows < 0) fail("--operand-rows must be 0 or more");
  if (a.has("checkpoint")) c.checkpoint = a.str("checkpoint");
  c.out = a.required("out");
  analyze_formats(c);
  std::printf("%s/results.md\n", c.out.c_str());
  return 0;
}

}  // namespace nibble::cli
