#pragma once
// Reproducible random test data (uniform in [lo, hi)), shared by the op tests.
#include <cstdint>
#include <random>
#include <vector>

namespace nibble::testing {

inline std::vector<double> random_vec(size_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 rng(seed);
  std::vector<double> x(n);
  for (auto& e : x) e = lo + (hi - lo) * static_cast<double>(rng() >> 11) * 0x1.0p-53;
  return x;
}

}  // namespace nibble::testing
