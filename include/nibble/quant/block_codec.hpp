#pragma once
// The per-block and per-element arithmetic of SPEC §3, written once as host/device
// scalar code: the CPU quantizer and the CUDA kernels both call these, so they produce
// the same bits. Every operation is a single IEEE fp32 op in the order the SPEC writes it.
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "nibble/fp8.hpp"
#include "nibble/quant/grid.hpp"

namespace nibble::codec {

// Tensor encode scale S_enc = (A > 0) ? min(448·gmax / A, FLT_MAX) : 1 (nvfp4 / int4).
NIBBLE_HD float tensor_encode_scale(float gmax, float amax) {
  return amax > 0.0f ? fminf((448.0f * gmax) / amax, FLT_MAX) : 1.0f;
}

// ---- nvfp4 / int4: e4m3 block scale under an fp32 tensor scale ---------------------
// s_b = e4m3_rne(min(a_b · (S_enc · (1/gmax)), 448))
NIBBLE_HD uint8_t e4m3_block_scale(float a_b, float s_enc, float inv_gmax) {
  return e4m3_encode(fminf(a_b * (s_enc * inv_gmax), 448.0f));
}
// e_b = (s_b == 0) ? 0 : min(1 / (s_b · S_dec), FLT_MAX)
NIBBLE_HD float e4m3_encode_multiplier(float s_b, float s_dec) {
  return s_b == 0.0f ? 0.0f : fminf(1.0f / (s_b * s_dec), FLT_MAX);
}

// ---- mxfp4: e8m0 block scale 2^e ---------------------------------------------------
// ocp:   e = floor(log2 a_b) − 2, clamped to [−127, 127]; a_b = 0 → −127
// rceil: e = ceil(log2(a_b / 6)), clamped; a_b / 6 == 0 → −127
NIBBLE_HD int mx_exponent(float a_b, bool rceil) {
  int e;
  if (!rceil) {
    if (a_b == 0.0f) return -127;
    e = ilogbf(a_b) - 2;  // exact exponent, subnormals included
  } else {
    const float v = a_b / 6.0f;
    if (v == 0.0f) return -127;
    const int lg = ilogbf(v);
    e = (ldexpf(1.0f, lg) == v) ? lg : lg + 1;
  }
  return e < -127 ? -127 : (e > 127 ? 127 : e);
}
NIBBLE_HD uint8_t e8m0_block_scale(float a_b, bool rceil) {
  return static_cast<uint8_t>(mx_exponent(a_b, rceil) + 127);
}

// ---- elements -----------------------------------------------------------------------
// q = round(clamp(x · mul, −gmax, gmax)), RNE or SR with uniform u.
NIBBLE_HD uint8_t encode_element(Grid g, float x, float mul, bool stochastic, float u) {
  const float gmax = grid_max(g);
  return grid_encode(g, clampf(x * mul, -gmax, gmax), stochastic, u);
}
// x̂ = (q · s_b) · S_dec   (mxfp4: s_b = 2^e, S_dec = 1)
NIBBLE_HD float decode_element(Grid g, uint8_t code, float s_b, float s_dec) {
  return (grid_decode(g, code) * s_b) * s_dec;
}

}  // namespace nibble::codec
