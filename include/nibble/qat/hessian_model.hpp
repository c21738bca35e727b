#pragma once
// `nibble hessian`: the Hessian spectrum of a checkpoint's training loss on one batch — the
// model run in float64 (Transformer<double>, exact operands: quantization bypassed, as SPEC §7
// allows), all weights as the variables.
//
// At a quantized point (a QAT checkpoint, or --bits b on any checkpoint): the Hessian with
// respect to the dequantized weights Ŵ = Q(W; α), as SPEC §7 fixes it — the loss evaluated at Ŵ
// (quantization bypassed) and the perturbations masked to the weights whose straight-through
// estimator passes (in range of the quantizer); the operator is M H M, M the mask, so the
// out-of-range coordinates contribute zero eigenvalues.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "nibble/json.hpp"

namespace nibble {

struct HessianConfig {
  std::string checkpoint;
  std::string data_dir, text_file;  // default: the run's own data
  int64_t batch = 2, seq = 0;       // seq 0: min(the run's seq, 64)
  int top = 3;                      // eigenvalues
  // power iteration per eigenvalue: at most this many Hessian-vector products, stopping when the
  // Rayleigh quotient moves less than tol (relative); tol 0 picks 1e-5 for float64 gradients and
  // 1e-3 for the GPU's float ones (their noise floor: a tighter tol never stops early)
  int power_iters = 100;
  double power_tol = 0;
  int probes = 4, steps = 30;       // Hutchinson probes; SLQ probes share them, Lanczos steps
  bool density = false;
  uint64_t seed = 1;
  double bits = 0;                  // > 0: quantize a plain checkpoint (a QAT checkpoint always is)
  std::string quantizer = "auto";
  // "cpu": Transformer<double>, exact. "cuda": the CUDA engine with fp32 activations, fp32
  // attention and the fp32 recipe — gradients in float (a few 1e-7 relative), so the central
  // differences take a step of 1e-4·‖w‖ instead of 1e-4 (top eigenvalues and trace agree with
  // the CPU to ~1%, tested); the Lanczos vectors stay float64 on the host either way.
  std::string device = "cpu";
  std::string out;
};

// The float64 Hessian problem of the checkpoint's loss on one batch (at the quantized point
// when there is one); `info` receives what the report says about it.
struct HessianProblem;
HessianProblem checkpoint_hessian_problem(const HessianConfig& cfg, Json& info);

// {"top_eigenvalues", "trace", "negative_mass" (SLQ share of eigenvalues < 0), "density": {grid,
// values}} ; writes out/results.json, results.md, density.svg when out is set.
Json hessian_spectrum(const HessianConfig& cfg);

// The SLQ densities of hessian_spectrum results (label, results.json with "density") on one
// chart with a log density axis, floored at 1e-6 of the highest peak: the edges of the spectrum
// (the large and the negative eigenvalues) are orders of magnitude below the bulk at zero.
void write_density_plot(const std::string& path, const std::vector<std::pair<std::string, Json>>& results,
                        const std::string& title);

}  // namespace nibble
