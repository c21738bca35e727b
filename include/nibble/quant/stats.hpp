#pragma once
// Per-tensor diagnostics of SPEC §6 (all accumulated in float64; error_stats and
// anisotropy_stats run on the OpenMP threads, with the same bits on any number of them).
#include <array>
#include <cstdint>
#include <functional>
#include <vector>

#include "nibble/json.hpp"
#include "nibble/quant/quantizer.hpp"

namespace nibble {

// Quantization error of x̂ against x:
//   snr_db = 10 log10(‖x‖² / ‖x − x̂‖²)   (+inf when exact, −inf when x = 0 ≠ x̂;
//                                          non-finite values are null in JSON)
//   rel_err = ‖x − x̂‖ / ‖x‖               (0 when both are zero, +inf when only x is)
//   shrinkage = Σ(|x̂| − |x|) / Σ|x|       (negative: magnitudes shrink; 0 when both are
//                                          zero, +inf when only x is)
struct ErrorStats {
  double snr_db = 0, rel_err = 0, shrinkage = 0;
  Json to_json() const;
};
ErrorStats error_stats(const float* x, const float* xhat, int64_t n);
// The same from its four float64 sums Σx², Σ(x − x̂)², Σ|x|, Σ(|x̂| − |x|), however they were
// taken (the CUDA engine sums on the device).
ErrorStats error_stats_from_sums(double sxx, double see, double sabs, double sdiff);

// How many elements carry each 4-bit code (0..15). Reads the packed codes directly
// (element 2i in the low nibble); throws when codes is too short for rows × cols.
std::array<int64_t, 16> code_histogram(const QuantizedMatrix& q);
// The histogram as a JSON array of 16 integers, code 0 first.
Json code_histogram_json(const std::array<int64_t, 16>& h);

// Anisotropy of an activation-like matrix X [T, K] (rows = tokens):
//   mean_energy_share = T‖μ‖² / ‖X‖²_F
//   top1_energy_share = σ₁² / ‖X‖²_F   (power iteration on XᵀX)
//   cos_mu_v1 = |cos(μ, v₁)|            (v₁ the top right singular vector)
//   amax_inflation = max|X| / max|X_c|, block_amax_inflation = mean block amax of X over
//   that of X_c (blocks of `block` along the rows, as the quantizer sees them; a last
//   partial block when block does not divide cols)
// μ is the column mean over rows and X_c = X − 1μᵀ. Two power iterations run, from Philox
// normals (seed, stream 0) and from μ, and the larger Rayleigh quotient wins (so
// top1_energy_share ≥ mean_energy_share however few rounds run); each stops when its unit
// vector moves by < 1e-8 or after power_iters rounds; σ₁² is the Rayleigh quotient of the last vector multiplied (within
// 2e-16 relative of the next one's at that tolerance), v₁ the next vector. Every sum over
// rows runs in fixed chunks of rows combined in a fixed order, in parallel over the chunks:
// the results do not depend on the thread count. Degenerate inputs give finite values where
// the ratio is 0/0: an all-zero X gives shares 0, cos 0 and inflations 1 (never NaN); μ = 0
// gives cos 0; an X = 1μᵀ ≠ 0 (X_c = 0) gives amax inflations +inf (null in JSON).
struct AnisotropyStats {
  double mean_energy_share = 0, top1_energy_share = 0, cos_mu_v1 = 0;
  double amax_inflation = 1, block_amax_inflation = 1;
  Json to_json() const;
};

// anisotropy_stats with its passes over X supplied by the caller (the CPU loops below, or the
// CUDA engine's kernels): the two power-iteration starts, normalisation, stopping rule and the
// ratios are this one code for both.
struct AnisotropyPasses {
  // colsum[k] = Σ_t x[t, k] (colsum has cols entries); fro2 = ‖X‖²_F
  std::function<void(std::vector<double>& colsum, double& fro2)> moments;
  // w = XᵀX v (w has cols entries); returns ‖X v‖²
  std::function<double(const std::vector<double>& v, std::vector<double>& w)> gram;
  // {max|X|, max|X − 1μᵀ|, Σ over 1×block blocks of their amax in X, the same in X − 1μᵀ}
  std::function<std::array<double, 4>(const std::vector<double>& mu)> amax;
};
AnisotropyStats anisotropy_stats_with(int64_t rows, int64_t cols, int block, int power_iters, uint64_t seed,
                                      const AnisotropyPasses& passes);
AnisotropyStats anisotropy_stats(const float* x, int64_t rows, int64_t cols, int block,
                                 int power_iters = 100, uint64_t seed = 0);
// The rounds the trainer's --stats-every allows each operand (CPU and GPU engines alike).
inline constexpr int kStatsEveryPowerIters = 20;

}  // namespace nibble
