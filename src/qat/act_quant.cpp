#include "nibble/qat/act_quant.hpp"

#include <algorithm>
#include <cmath>

#include "nibble/error.hpp"

namespace nibble {

void fake_quantize_rows(const float* x, int64_t rows, int64_t cols, int bits, float* out) {
  if (bits < 2 || bits > 8) fail("activation bits ", bits, " must be in [2, 8]");
  const float qp = static_cast<float>((1 << (bits - 1)) - 1);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* o = out + r * cols;
    float amax = 0.0f;
    for (int64_t j = 0; j < cols; ++j) amax = std::max(amax, std::fabs(xr[j]));
    if (!(amax > 0.0f) || !std::isfinite(amax)) {
      // zeros stay zero; a non-finite row passes through for the trainer's divergence check
      if (o != xr) std::copy(xr, xr + cols, o);
      continue;
    }
    const float s = amax / qp;
    for (int64_t j = 0; j < cols; ++j) o[j] = s * std::clamp(std::nearbyint(xr[j] / s), -qp, qp);
  }
}

}  // namespace nibble
