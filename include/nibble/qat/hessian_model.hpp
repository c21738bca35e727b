#pragma once
// `nibble hessian`: the Hessian spectrum of a checkpoint's training loss on one batch — the
// model run in float64 (Transformer<double>, exact operands: quantization bypassed, as SPEC §7
// allows), all weights as the variables.
#include <cstdint>
#include <string>

#include "nibble/json.hpp"

namespace nibble {

struct HessianConfig {
  std::string checkpoint;
  std::string data_dir, text_file;  // default: the run's own data
  int64_t batch = 2, seq = 0;       // seq 0: min(the run's seq, 64)
  int top = 3;                      // eigenvalues
  int probes = 4, steps = 30;       // Hutchinson probes; SLQ probes share them, Lanczos steps
  bool density = false;
  uint64_t seed = 1;
  std::string out;
};

// {"top_eigenvalues", "trace", "negative_mass" (SLQ share of eigenvalues < 0), "density": {grid,
// values}} ; writes out/results.json, results.md, density.svg when out is set.
Json hessian_spectrum(const HessianConfig& cfg);

}  // namespace nibble
