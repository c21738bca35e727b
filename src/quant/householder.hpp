#pragma once
// Householder reflectors H = I − β v vᵀ in float64, shared by the QR of the randomized SVD
// (spectral.cpp) and the bidiagonalization of the small SVD (small_svd.cpp).
#include <cmath>
#include <cstdint>

namespace nibble::householder {

// Turns x [len] into the v of the reflector that maps x onto alpha e₁ (alpha = −sign(x₀)‖x‖, the
// sign chosen against cancellation) and returns β; a zero x gives β = 0 (H = I) and alpha = 0.
inline double make_reflector(double* x, int64_t len, double& alpha) {
  double nrm2 = 0;
  for (int64_t i = 0; i < len; ++i) nrm2 += x[i] * x[i];
  if (nrm2 == 0.0) {
    alpha = 0.0;
    return 0.0;
  }
  const double nrm = std::sqrt(nrm2);
  alpha = x[0] >= 0 ? -nrm : nrm;
  x[0] -= alpha;  // v = x − alpha e₁
  double vtv = 0;
  for (int64_t i = 0; i < len; ++i) vtv += x[i] * x[i];
  return vtv > 0 ? 2.0 / vtv : 0.0;
}

// y [len] ← (I − β v vᵀ) y.
inline void reflect(const double* v, double beta, double* y, int64_t len) {
  double d = 0;
  for (int64_t i = 0; i < len; ++i) d += v[i] * y[i];
  d *= beta;
  for (int64_t i = 0; i < len; ++i) y[i] -= d * v[i];
}

}  // namespace nibble::householder
