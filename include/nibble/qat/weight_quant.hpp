#pragma once
// The weight quantizers of quantization-aware training, SPEC §7: a learnable scale α per output
// row (or per group of G columns of a row), fp32 latent weights W, x = W/α.
//   LSQ (3-, 4-bit): Ŵ = α·clamp(round(x), Qn, Qp), Qn = −2^(b−1), Qp = 2^(b−1) − 1;
//     STE ∂Ŵ/∂W = 1[Qn ≤ x ≤ Qp]; ∂Ŵ/∂α = round(x) − x inside, Qn or Qp outside, scaled by
//     g = 1/sqrt(numel(W)·Qp); init α = max|W_row| / Qp.
//   SEQ (2-bit, ternary; ParetoQ): c = 0.99; 2-bit n = 2, shift = 0.5 (levels ±α/4, ±3α/4);
//     ternary n = 1.5, shift = 0 (levels 0, ±2α/3); q = (round(clamp(x, −c, c)·n − shift) + shift)/n,
//     Ŵ = α·q; STE inside |x| ≤ c; ∂Ŵ/∂α = q − x inside, ±(n − shift)/n outside; init α = max|W_row|.
// round() is round-half-to-even (as everywhere in nibble). WinQ's reset (SPEC §7 (b)):
//   W ← a·W + (1 − a)·Q(W; α).
// numel(W) in LSQ's g is the number of weights the scale's tensor has (the whole matrix), as the
// SPEC writes it. Bits 1.58 means ternary.
#include <cstdint>
#include <string>

#include "nibble/qat/qat_scalar.hpp"

namespace nibble {

enum class QatQuantizer : uint8_t { LSQ, SEQ };

struct QatSpec {
  double bits = 4;           // 1.58 (ternary), 2, 3, 4
  QatQuantizer kind = QatQuantizer::LSQ;
  int64_t group_size = 0;    // 0: one scale per output row; else per G columns of a row

  // bits and "auto" | "lsq" | "seq" (auto: SEQ for 2 bits and ternary, LSQ for 3 and 4);
  // errors name the unsupported value (1-bit is not in SPEC §7).
  static QatSpec make(double bits, const std::string& quantizer, int64_t group_size = 0);
  int64_t groups_per_row(int64_t cols) const;  // checks that G divides cols
};

// The scalar quantizer's constants for a [rows, cols] matrix (LSQ's gradient scale depends on
// its size).
QatLevels qat_levels_of(const QatSpec& s, int64_t rows, int64_t cols);

// α for W [rows, cols]: rows × groups_per_row values.
void qat_init_scales(const QatSpec& s, const float* w, int64_t rows, int64_t cols, float* alpha);
// Ŵ = α·q(W/α)
void qat_forward(const QatSpec& s, const float* w, const float* alpha, int64_t rows, int64_t cols, float* w_hat);
// dW = STE(dŴ) (written); dα += g·Σ dŴ·∂Ŵ/∂α over each scale's elements (accumulated, float64 sums).
void qat_backward(const QatSpec& s, const float* w, const float* alpha, int64_t rows, int64_t cols,
                  const float* d_what, float* d_w, float* d_alpha);
// The integer code of each element (LSQ: level − Qn ∈ [0, 2^b − 1]; SEQ 2-bit: round(·) + 2 ∈
// [0, 3]; ternary: round(·) + 1 ∈ [0, 2]) and its inverse: qat_decode(codes) == qat_forward(W)
// bit for bit. levels_per_code() = 2^b (3 for ternary).
void qat_codes(const QatSpec& s, const float* w, const float* alpha, int64_t rows, int64_t cols, uint8_t* codes);
void qat_decode(const QatSpec& s, const uint8_t* codes, const float* alpha, int64_t rows, int64_t cols, float* w_hat);
int qat_levels(const QatSpec& s);

// WinQ reset: W ← a·W + (1 − a)·Q(W; α), in place.
void winq_reset(const QatSpec& s, float* w, const float* alpha, int64_t rows, int64_t cols, double a);

}  // namespace nibble
