#pragma once
// The full operand pipeline of `nibble quant` (and of the analysis tools):
//   X ─centre─▶ X_c ─spectral split─▶ R ─RHT─▶ operand ─quantize─▶ codes + scales
// and back: dequantize ─inverse RHT─▶ + low-rank part ─▶ + mean ─▶ reconstruction in X's
// own coordinates. Every stage is optional and described by data (TransformSpec).
#include <cstdint>
#include <optional>
#include <vector>

#include "nibble/quant/quantizer.hpp"
#include "nibble/quant/spectral.hpp"

namespace nibble {

struct TransformSpec {
  bool center = false;             // subtract the per-column mean over rows
  int rht = 0;                     // RHT block size n (0 = off)
  std::vector<float> rht_signs;    // ±1, length n; empty = Philox signs from (seed, stream)
  uint64_t rht_seed = 0;
  uint32_t rht_stream = 0;
  SpectralSpec spectral;           // rank 0 = off
};

// Validates the spec against the matrix shape (user-facing errors) and fills in the RHT
// signs when they are to be generated.
void resolve_transforms(TransformSpec& t, const QuantSpec& q, int64_t rows, int64_t cols);

struct PipelineResult {
  QuantizedMatrix q;
  std::vector<float> mean;            // empty unless centred
  std::vector<float> rht_signs;       // empty unless RHT
  std::optional<LowRank> lowrank;     // set when the spectral split is on
  std::vector<float> operand;         // the matrix handed to the quantizer
  std::vector<float> operand_hat;     // its dequantized value
  std::vector<float> reconstruction;  // in X's own coordinates
};

PipelineResult quantize_pipeline(const float* x, int64_t rows, int64_t cols, const QuantSpec& q,
                                 TransformSpec t);

// Undoes the transforms on a dequantized operand (in place): inverse RHT, add the low-rank
// part, add the mean. Used by quantize_pipeline and by `nibble dequant`.
void undo_transforms(float* operand_hat, int64_t rows, int64_t cols, const std::vector<float>& mean,
                     const std::vector<float>& rht_signs, const LowRank* lowrank);

}  // namespace nibble
