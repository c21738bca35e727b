// nibble synth: write a synthetic float32 matrix (.npy) for demos and format studies.
#include <cstdio>

#include "args.hpp"
#include "commands.hpp"
#include "nibble/npy.hpp"
#include "nibble/quant/synthetic.hpp"

namespace nibble::cli {

int run_synth(const std::vector<std::string>& argv) {
  Args a("synth", "nibble synth --output X.npy [--dist D] [--rows R] [--cols C] [--seed N]",
         "Writes a float32 [rows, cols] matrix drawn from Philox. 'activations' mimics LLM\n"
         "activations: a coherent per-channel mean (rank-one mean bias), a few outlier\n"
         "channels and Laplace noise; the others are unit-variance samples.");
  a.option("output", "X.npy", "output file");
  a.option("dist", "D", "gaussian | laplace | student-t3 | activations", "activations");
  a.option("rows", "R", "rows (tokens)", "1024");
  a.option("cols", "C", "cols (channels; the reduction dim)", "1024");
  a.option("mean-bias", "M", "activations: rms of the per-channel mean", "4");
  a.option("outlier-frac", "F", "activations: share of outlier channels", "0.01");
  a.option("outlier-scale", "S", "activations: gain of outlier channels", "20");
  a.option("seed", "N", "Philox seed", "0");
  if (!a.parse(argv)) return 0;
  SyntheticSpec s;
  s.kind = synthetic_kind_from_name(a.str("dist"));
  s.rows = a.integer("rows");
  s.cols = a.integer("cols");
  s.mean_bias = a.number("mean-bias");
  s.outlier_frac = a.number("outlier-frac");
  s.outlier_scale = a.number("outlier-scale");
  s.seed = a.unsigned_integer("seed");
  const std::string out = a.required("output");
  write_npy(out, Tensor::from_vector({s.rows, s.cols}, synthetic_matrix(s)));
  std::printf("nibble synth: wrote %s [%lld x %lld] (%s, seed %llu)\n", out.c_str(),
              static_cast<long long>(s.rows), static_cast<long long>(s.cols),
              std::string(synthetic_kind_name(s.kind)).c_str(), static_cast<unsigned long long>(s.seed));
  return 0;
}

}  // namespace nibble::cli
