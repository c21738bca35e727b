#include "commands.hpp"

namespace nibble::cli {

const std::vector<Command>& commands() {
  static const std::vector<Command> table = {
      {"train", "train a transformer under a 4-bit recipe (default: tiny model, embedded corpus)", run_train},
      {"launch", "run N ranks of a command as one data-parallel run (one per GPU; torchrun's environment)", run_launch},
      {"eval", "loss, perplexity and bits/byte of a checkpoint on text or token shards", run_eval},
      {"sample", "generate text from a checkpoint", run_sample},
      {"data", "tokenize text files into llm.c-layout token shards", run_data},
      {"sweep", "train every recipe from the same init and data, compare with bf16 (results.md + plots)", run_sweep},
      {"analyze", "a checkpoint's operands under every format and transform; formats; a run's stats log", run_analyze},
      {"qat", "quantization-aware training of a checkpoint (LSQ / SEQ, 1.58-4 bits, optional WinQ)", run_qat},
      {"export", "a QAT checkpoint with bit-packed integer codes (nibble eval reads it)", run_export},
      {"hessian", "top eigenvalues, trace and eigenvalue density of a checkpoint's loss Hessian", run_hessian},
      {"hf", "import / export LLaMA models in Hugging Face layout (config.json + model.safetensors)", run_hf},
      {"report", "render training runs or sweeps into one Markdown page with loss plots", run_report},
      {"bench", "quantizer, GEMM and training throughput of this machine (tables + JSON)", run_bench},
      {"quant", "quantize a 2-D .npy array (nvfp4 | mxfp4 | int4, RHT, centring) and report",
       run_quant},
      {"dequant", "reconstruct a float32 .npy array from a packed .safetensors file", run_dequant},
      {"synth", "write a synthetic matrix (gaussian, laplace, student-t3, LLM-like activations)",
       run_synth},
  };
  return table;
}

}  // namespace nibble::cli
