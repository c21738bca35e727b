#pragma once
// Hessian spectrum tools (SPEC §7, the WinQ paper's analysis), on any differentiable problem
// given by its gradient:
//   hvp          H v by central differences of the gradient: (∇L(w + εv) − ∇L(w − εv)) / 2ε
//   top_eigen    the K largest-magnitude eigenvalues (signed) by power iteration with deflation
//   hutchinson   tr H ≈ mean of zᵀHz over Rademacher probes z
//   slq_density  stochastic Lanczos quadrature: Rademacher probes, m Lanczos steps with full
//                reorthogonalisation, the tridiagonal's Ritz values θ and weights τ², density
//                Σ τ² N(λ; θ, σ²) averaged over probes (integrates to 1)
// Everything in float64; deterministic for a given seed.
#include <cstdint>
#include <functional>
#include <vector>

namespace nibble {

// grad(w) → ∇L(w); both of size n.
using GradientFn = std::function<std::vector<double>(const std::vector<double>& w)>;

struct HessianProblem {
  GradientFn grad;
  std::vector<double> w;  // the point
  double eps = 1e-4;      // central-difference step along unit-norm v (scaled by ‖v‖)
};

std::vector<double> hvp(const HessianProblem& p, const std::vector<double>& v);

struct EigenResult {
  std::vector<double> values;                 // signed, by decreasing magnitude
  std::vector<std::vector<double>> vectors;   // unit norm
  std::vector<int> iterations;   // Hessian-vector products each took
  std::vector<bool> converged;   // false: stopped at max_iters before the tolerance was met
};
EigenResult top_eigen(const HessianProblem& p, int k, int max_iters = 100, double tol = 1e-6, uint64_t seed = 1);

double hutchinson_trace(const HessianProblem& p, int probes, uint64_t seed = 1);

struct SpectralDensity {
  std::vector<double> grid, density;          // density on the grid (integrates to ≈ 1)
  std::vector<std::vector<double>> nodes, weights;  // per probe: Ritz values θ and τ²
};
SpectralDensity slq_density(const HessianProblem& p, int probes, int steps, int grid_points = 200,
                            double sigma_rel = 0.01, uint64_t seed = 1);

// Shares of the SLQ spectral mass (averaged over probes): below −τ, within [−τ, τ], above τ, with
// τ = rel_tol · max |θ| over every Ritz value. Near saddle points the negative share matters, but
// the many eigenvalues at ~0 (directions the batch does not excite) fall on either side of 0 by
// difference noise, so they get their own bin instead of inflating the negative share.
struct SpectrumShares {
  double negative = 0, near_zero = 0, positive = 0, tolerance = 0;
  double negative_any = 0;  // all mass below 0, τ ignored
};
SpectrumShares spectrum_shares(const SpectralDensity& d, double rel_tol = 0.01);

// Symmetric eigen-decomposition of a small dense matrix (cyclic Jacobi), for the Lanczos
// tridiagonal and for tests: values ascending, vectors as columns (row-major n×n).
void symmetric_eigen(std::vector<double> a, int n, std::vector<double>& values, std::vector<double>& vectors);

}  // namespace nibble
