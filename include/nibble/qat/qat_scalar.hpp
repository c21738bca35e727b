#pragma once
// The scalar core of SPEC §7's weight quantizers, shared verbatim by the CPU reference
// (src/qat/weight_quant.cpp) and the CUDA QAT kernels (src/qat/cuda), so both compute the same
// bits: q(x) for x = W/α, whether x is inside the straight-through region, and ∂Ŵ/∂α.
// Float64 throughout; rint() rounds half to even (the default rounding mode on the host, the
// instruction on the device).
#include <math.h>

#include <cstdint>

#include "nibble/hd.hpp"

namespace nibble {

// WinQ's noise: W's normals from (seed, stream), α's from (seed ^ this, stream).
constexpr uint64_t kQatScaleNoiseSeedXor = 0x5CA1Eu;

struct QatLevels {
  bool lsq = true;
  double qn = 0, qp = 0;                 // LSQ: integer levels [qn, qp]
  double c = 0.99, n = 2, shift = 0.5;   // SEQ: clip, levels per unit, offset
  double grad_scale = 1;                 // LSQ's g = 1/sqrt(numel(W)·Qp), per matrix; SEQ: 1
};

NIBBLE_HD double qat_clamp(double x, double lo, double hi) { return x < lo ? lo : (x > hi ? hi : x); }

// q(x) (+0 for a zero level: round(−0.3) is −0, and the integer code decodes to +0); `inside`:
// the STE passes; `dalpha`: ∂Ŵ/∂α = q − x inside (LSQ: round(x) − x), the clamped level outside.
NIBBLE_HD double qat_quantize(const QatLevels& l, double x, bool& inside, double& dalpha) {
  if (l.lsq) {
    const double r = rint(x);
    inside = x >= l.qn && x <= l.qp;
    const double q = qat_clamp(r, l.qn, l.qp);
    dalpha = inside ? r - x : q;
    return q == 0.0 ? 0.0 : q;
  }
  const double xc = qat_clamp(x, -l.c, l.c);
  const double q = (rint(xc * l.n - l.shift) + l.shift) / l.n;
  inside = fabs(x) <= l.c;
  dalpha = inside ? q - x : (x > 0 ? 1.0 : -1.0) * (l.n - l.shift) / l.n;
  return q == 0.0 ? 0.0 : q;
}

// Ŵ = α·q(W/α), rounded once to float.
NIBBLE_HD float qat_fake_quant(const QatLevels& l, float w, float alpha) {
  const double a = alpha;
  bool inside;
  double da;
  return static_cast<float>(a * qat_quantize(l, w / a, inside, da));
}

// WinQ's reset of one weight: a·W + (1 − a)·Q(W; α), the product Q rounded to float first.
NIBBLE_HD float qat_winq_reset(const QatLevels& l, float w, float alpha, double a) {
  const float q = qat_fake_quant(l, w, alpha);
  return static_cast<float>(a * w + (1.0 - a) * q);
}

}  // namespace nibble
