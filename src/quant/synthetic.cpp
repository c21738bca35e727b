#include "nibble/quant/synthetic.hpp"

#include <cmath>

#include "nibble/error.hpp"
#include "nibble/philox.hpp"
#include "nibble/quant/spectral.hpp"

namespace nibble {

namespace {
constexpr std::string_view kNames[] = {"gaussian", "laplace", "student-t3", "activations"};
// Philox streams of the different random parts, so they are independent.
constexpr uint32_t kNoiseStream = 0x5e00, kAuxStream = 0x5e01, kMeanStream = 0x5e02, kChannelStream = 0x5e03;

double laplace(uint64_t seed, uint64_t i) {
  // inverse CDF of a unit-variance Laplace (b = 1/√2)
  const double u = philox_uniform(seed, kNoiseStream, i) - 0.5;
  const double a = std::max(1e-12, 1.0 - 2.0 * std::fabs(u));
  return -(u < 0 ? -1.0 : 1.0) * std::log(a) / std::sqrt(2.0);
}

double student_t3(uint64_t seed, uint64_t i) {
  // t = Z / sqrt(χ²₃ / 3), χ²₃ = sum of three squared normals; scaled to unit variance (var 3)
  const double z = philox_normal(seed, kNoiseStream, i);
  double chi = 0;
  for (uint64_t j = 0; j < 3; ++j) {
    const double g = philox_normal(seed, kAuxStream, 3 * i + j);
    chi += g * g;
  }
  return z / std::sqrt(std::max(chi, 1e-12) / 3.0) / std::sqrt(3.0);
}
}  // namespace

SyntheticKind synthetic_kind_from_name(std::string_view s) {
  for (size_t i = 0; i < 4; ++i)
    if (kNames[i] == s) return static_cast<SyntheticKind>(i);
  fail("unknown distribution '", s, "' (valid: gaussian, laplace, student-t3, activations)");
}
std::string_view synthetic_kind_name(SyntheticKind k) { return kNames[static_cast<size_t>(k)]; }

std::vector<float> synthetic_matrix(const SyntheticSpec& s) {
  if (s.rows < 1 || s.cols < 1) fail("synthetic matrix shape [", s.rows, ", ", s.cols, "] must be positive");
  const int64_t n = s.rows * s.cols;
  std::vector<float> x(static_cast<size_t>(n));
  if (s.kind != SyntheticKind::Activations) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const uint64_t u = static_cast<uint64_t>(i);
      double v = s.kind == SyntheticKind::Gaussian ? philox_normal(s.seed, kNoiseStream, u)
               : s.kind == SyntheticKind::Laplace  ? laplace(s.seed, u)
                                                    : student_t3(s.seed, u);
      x[static_cast<size_t>(i)] = static_cast<float>(v);
    }
    return x;
  }
  // Activations: x[t, c] = mean_c + gain_c · t3-ish noise
  std::vector<double> mean(static_cast<size_t>(s.cols)), gain(static_cast<size_t>(s.cols));
  for (int64_t c = 0; c < s.cols; ++c) {
    const uint64_t u = static_cast<uint64_t>(c);
    mean[static_cast<size_t>(c)] = s.mean_bias * philox_normal(s.seed, kMeanStream, u);
    const bool outlier = philox_uniform(s.seed, kChannelStream, u) < s.outlier_frac;
    gain[static_cast<size_t>(c)] = outlier ? s.outlier_scale : 1.0;
    if (outlier) mean[static_cast<size_t>(c)] *= s.outlier_scale / 4.0;
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < s.rows; ++r)
    for (int64_t c = 0; c < s.cols; ++c) {
      const uint64_t i = static_cast<uint64_t>(r * s.cols + c);
      x[i] = static_cast<float>(mean[static_cast<size_t>(c)] + gain[static_cast<size_t>(c)] * laplace(s.seed, i));
    }
  return x;
}

std::vector<float> synthetic_matrix(SyntheticKind kind, int64_t rows, int64_t cols, uint64_t seed) {
  SyntheticSpec s;
  s.kind = kind;
  s.rows = rows;
  s.cols = cols;
  s.seed = seed;
  return synthetic_matrix(s);
}

}  // namespace nibble
