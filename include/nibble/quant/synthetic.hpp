#pragma once
// Synthetic matrices with the statistics the papers talk about, for demos, benchmarks and
// the format analysis: Gaussian, Laplace and Student-t(3) samples, and "activations":
// a coherent per-channel mean (the rank-one mean bias), a few outlier channels, and a
// heavy-tailed token-by-token part. All from Philox, so a seed reproduces a matrix exactly.
#include <cstdint>
#include <string_view>
#include <vector>

namespace nibble {

enum class SyntheticKind : uint8_t { Gaussian, Laplace, StudentT3, Activations };
SyntheticKind synthetic_kind_from_name(std::string_view s);
std::string_view synthetic_kind_name(SyntheticKind k);

struct SyntheticSpec {
  SyntheticKind kind = SyntheticKind::Activations;
  int64_t rows = 1024, cols = 1024;
  double mean_bias = 4.0;      // activations: norm of the shared mean per element (rms)
  double outlier_frac = 0.01;  // activations: share of channels scaled up
  double outlier_scale = 20.0;
  uint64_t seed = 0;
};

std::vector<float> synthetic_matrix(const SyntheticSpec& s);
// The same with the other fields at their defaults.
std::vector<float> synthetic_matrix(SyntheticKind kind, int64_t rows, int64_t cols, uint64_t seed);

}  // namespace nibble
