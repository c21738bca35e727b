#include "commands.hpp"

namespace nibble::cli {

const std::vector<Command>& commands() {
  static const std::vector<Command> table = {
      {"quant", "quantize a 2-D .npy array (nvfp4 | mxfp4 | int4, RHT, centring) and report",
       run_quant},
      {"dequant", "reconstruct a float32 .npy array from a packed .safetensors file", run_dequant},
      {"synth", "write a synthetic matrix (gaussian, laplace, student-t3, LLM-like activations)",
       run_synth},
  };
  return table;
}

}  // namespace nibble::cli
