#pragma once
// A Recipe says, for each of a linear layer's three training GEMMs (SPEC §5), how each
// operand is represented: kept in fp32, cast to bf16, or 4-bit quantized (format, block,
// tiles, scale rule, rounding), whether it is centred (mean-bias removal, SPEC §4.2) or
// spectrally split (SPEC §4.3), and which RHT the GEMM applies along its reduction dim.
// Recipes are data: presets, overridable field by field from JSON. Model code never looks
// at a recipe's name.
//
//   GEMM   product          operand a            operand b           reduction
//   fprop  Y  = X·Wᵀ        x  [T,K] rowwise     w  [N,K] rowwise     K
//   dgrad  dX = dY·W        dy [T,N] rowwise     w  [N,K] columnwise  N
//   wgrad  dW = dYᵀ·X       dy [T,N] columnwise  x  [T,K] columnwise  T
#include <cstdint>
#include <string>
#include <vector>

#include "nibble/json.hpp"
#include "nibble/quant/quantizer.hpp"

namespace nibble {

enum class OperandKind : uint8_t { FP32, BF16, QUANT };

struct OperandSpec {
  OperandKind kind = OperandKind::BF16;
  QuantSpec quant;          // when kind == QUANT (seed/stream are set per step by the trainer)
  bool center = false;      // subtract the mean over tokens (x, dy only)
  int spectral_rank = 0;    // > 0: spectral split, quantize the residual (dy only); -1 = auto
  int power_iters = 2;

  Json to_json() const;
  std::string describe() const;  // "nvfp4 sr 16x16" ...
};

struct GemmSpec {
  OperandSpec a, b;  // fprop: (x, w); dgrad: (dy, w); wgrad: (dy, x)
  int rht = 0;       // RHT block size along the reduction dim (0 = none)
};

struct Recipe {
  std::string name = "bf16";
  GemmSpec fprop, dgrad, wgrad;
  // Blocks kept in high precision (bf16 for every operand): "none", "last:N" (the last N
  // blocks), "first:N", or a comma list of block indices "0,11".
  std::string high_precision_blocks = "none";
  // What "high precision" means for those blocks and the output head: bf16 operands (as on
  // the GPU), or fp32 for the exact CPU reference recipe.
  OperandKind high_precision_kind = OperandKind::BF16;

  static Recipe preset(const std::string& name);           // throws listing the presets
  static std::vector<std::string> preset_names();
  // A recipe JSON object: {"base": "nvfp4", "fprop": {"x": {...}}, ...}; every field of
  // Recipe is overridable; unknown fields are errors naming their path (file:fprop.x.foo).
  static Recipe from_json(const Json& j, const std::string& what);
  // `spec` is a preset name or a path to a recipe JSON file.
  static Recipe resolve(const std::string& spec);

  Json to_json() const;  // the fully resolved recipe (written into every run's config.json)
  // True when block `layer` of `n_layers` runs in high precision.
  bool block_in_high_precision(int layer, int n_layers) const;
  // The recipe of the high-precision blocks and the head: every operand high_precision_kind.
  Recipe high_precision() const;
  // Checks the recipe against a model (dims divisible by blocks/RHT sizes, tokens per step
  // divisible along wgrad's reduction dim); errors name the field and the value.
  void validate(int64_t dim, int64_t ffn, int64_t tokens_per_step, int n_layers) const;
};

}  // namespace nibble
