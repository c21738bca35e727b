#pragma once
// Spectral split (SPEC §4.3, the Metis-style baseline): G ≈ U_k S_k V_kᵀ + R by randomized
// SVD (Halko, Martinsson & Tropp 2011) with power iterations; the low-rank factors stay
// in high precision and only the residual R is quantized.
#include <cstdint>
#include <vector>

namespace nibble {

struct SpectralSpec {
  int rank = 0;            // k
  int power_iters = 2;     // subspace iterations (each re-orthonormalised)
  int oversample = 8;      // extra random directions, discarded after the small SVD
  uint64_t seed = 0;       // Gaussian test matrix from Philox
  uint32_t stream = 0;
};

struct LowRank {
  int64_t rows = 0, cols = 0;
  int rank = 0;
  std::vector<float> u;  // [rows, rank], orthonormal columns
  std::vector<float> s;  // [rank], descending, >= 0
  std::vector<float> v;  // [cols, rank], orthonormal columns

  // x += U diag(s) Vᵀ (accumulated in float64), or x -= ... with sign = -1.
  void add_to(float* x, double sign = 1.0) const;
};

// Throws a user-facing error when rank < 1 or rank > min(rows, cols). The oversampling is
// capped so that rank + oversample <= min(rows, cols). Ω [cols, l] holds the normals
// philox_normal(seed, stream, j*l + t). Float64 throughout (Householder QR, Golub–Kahan–Reinsch
// SVD of the small projected matrix); deterministic for a given spec whatever the
// thread count. Keeps an fp32 transposed copy of g while it runs.
LowRank randomized_svd(const float* g, int64_t rows, int64_t cols, const SpectralSpec& spec);

// The small end of randomized_svd, shared with the CUDA version: given B's triangular factor
// r ([l, l] column-major, from Bᵀ = Q_z r), its SVD r = U_r Σ V_rᵀ (small_svd), the k largest
// σ in descending order (s) and the matching columns of V_r (vk [l, k] col-major) and of U_r
// (ur [l, k] col-major); both sets orthonormal even where σ = 0.
// Then U = Q·vk and V = Q_z·ur.
void spectral_small_svd(const std::vector<double>& r, int64_t l, int64_t k, std::vector<double>& ur,
                        std::vector<double>& vk, std::vector<float>& s);

// Standard normal deviates from Philox (Box–Muller on pairs of uniforms), element-indexed:
// z_i = √(−2 ln(1 − u₁)) cos(2π u₂) with u₁, u₂ the Philox uniforms of elements 2i and 2i+1
// of (seed, stream); 1 − u₁ ∈ [2⁻²⁴, 1] guards the logarithm against u₁ = 0.
double philox_normal(uint64_t seed, uint32_t stream, uint64_t i);

}  // namespace nibble
