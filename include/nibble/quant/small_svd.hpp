#pragma once
// SVD of a small dense square matrix in float64 (the l × l factor of the randomized SVD, l ≤ a
// few hundred): Householder bidiagonalization, then implicit-shift QR on the bidiagonal
// (Golub & Kahan 1965, Golub & Reinsch 1970; Golub & Van Loan, Matrix Computations, §8.6).
// About 12 n³ flops with both factors, a fraction of a cyclic one-sided Jacobi's 7 n³ per
// sweep times its 10–25 sweeps, which made the host SVD most of metis's step time.
#include <cstdint>
#include <vector>

namespace nibble {

struct SmallSvd {
  int64_t n = 0;
  std::vector<double> u;      // [n, n] column-major, orthonormal columns
  std::vector<double> sigma;  // [n], descending, >= 0
  std::vector<double> v;      // [n, n] column-major, orthonormal columns
};

// a: [n, n] column-major. Returns a = U diag(σ) Vᵀ with U and V orthogonal to rounding (every
// step is a reflection or a rotation, so a zero or repeated σ still gets orthonormal vectors).
// a is scaled by a power of two first, so magnitudes from subnormal to ~1e300 converge alike.
// Throws a clear error if the QR iteration fails to converge (it has not in any test; the bound
// is 75 QR steps per singular value). A non-finite entry gives NaN in every output, so that the
// trainer's divergence check reports it.
SmallSvd small_svd(const std::vector<double>& a, int64_t n);

}  // namespace nibble
