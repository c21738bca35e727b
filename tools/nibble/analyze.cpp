// nibble analyze formats: shrinkage, SNR and code use of the 4-bit formats; the depth effect.
#include <cstdio>
#include <sstream>

#include "args.hpp"
#include "commands.hpp"
#include "nibble/error.hpp"
#include "nibble/study/analyze.hpp"

namespace nibble::cli {

namespace {
std::vector<std::string> comma_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}
}  // namespace

int run_analyze(const std::vector<std::string>& argv) {
  Args a("analyze", "nibble analyze formats [--checkpoint DIR] [options] --out DIR",
         "formats: shrinkage, SNR, relative error and code use of nvfp4, mxfp4 (e2m1) and int4 (the\n"
         "uniform grid of UFP4), each without RHT and with RHT 16/32/128, under RNE and SR, on\n"
         "Gaussian, Laplace, Student-t(3) and LLM-like activation samples; with --checkpoint also on\n"
         "its weights (first, middle and last block) and the depth effect: how far each block's\n"
         "output drifts from the bf16 forward under each 4-bit recipe. Writes DIR/results.md,\n"
         "DIR/results.json (every row) and DIR/depth.svg.");
  a.allow_positionals("WHAT", "formats");
  a.option("checkpoint", "DIR", "a run or checkpoint directory (weights + depth effect)");
  a.option("rows", "R", "synthetic sample rows", "1024");
  a.option("cols", "C", "synthetic sample columns (a multiple of 128 for every RHT size)", "1024");
  a.option("seed", "N", "seed of the samples, SR and RHT signs", "1");
  a.option("distributions", "LIST", "gaussian, laplace, student-t3, activations", "gaussian,laplace,student-t3,activations");
  a.option("depth-recipes", "LIST", "recipes of the depth effect", "nvfp4,mxfp4,ufp4,nvfp4-mean,ufp4-mean");
  a.option("depth-batch", "B", "sequences of the depth forward", "4");
  a.option("out", "DIR", "output directory");
  if (!a.parse(argv)) return 0;
  if (a.positionals().size() != 1 || a.positionals()[0] != "formats")
    fail("nibble analyze: say what to analyze: 'formats' (the per-layer checkpoint analysis is not built yet)");
  FormatsConfig c;
  c.rows = a.integer("rows");
  c.cols = a.integer("cols");
  if (c.rows < 1 || c.cols < 32 || c.cols % 32 != 0) fail("--rows must be positive and --cols a positive multiple of 32");
  c.seed = a.unsigned_integer("seed");
  c.distributions = comma_list(a.str("distributions"));
  c.depth_recipes = comma_list(a.str("depth-recipes"));
  c.depth_batch = a.integer("depth-batch");
  if (a.has("checkpoint")) c.checkpoint = a.str("checkpoint");
  c.out = a.required("out");
  analyze_formats(c);
  std::printf("%s/results.md\n", c.out.c_str());
  return 0;
}

}  // namespace nibble::cli
