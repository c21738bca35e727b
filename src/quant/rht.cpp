#include "nibble/quant/rht.hpp"

#include <cmath>

#include "nibble/error.hpp"
#include "nibble/philox.hpp"

namespace nibble {

bool rht_size_valid(int n) { return n == 16 || n == 32 || n == 64 || n == 128; }

std::vector<float> rht_signs(int n, uint64_t seed, uint32_t stream) {
  std::vector<float> d(static_cast<size_t>(n));
  for (int j = 0; j < n; ++j) d[static_cast<size_t>(j)] = philox_sign(seed, stream, static_cast<uint64_t>(j));
  return d;
}

void validate_rht(int n, int64_t cols, const std::vector<float>& signs) {
  if (!rht_size_valid(n)) fail("RHT size ", n, " is not supported (use 16, 32, 64 or 128)");
  if (cols % n != 0) fail("RHT size ", n, " does not divide cols = ", cols);
  if (static_cast<int64_t>(signs.size()) != n)
    fail("RHT sign vector has ", signs.size(), " entries, expected ", n);
  for (size_t j = 0; j < signs.size(); ++j)
    if (signs[j] != 1.0f && signs[j] != -1.0f)
      fail("RHT sign vector entry ", j, " is ", signs[j], ", expected +1 or -1");
}

namespace {

// In-place unnormalised Walsh–Hadamard transform (Sylvester order) of n doubles.
void fwht(double* t, int n) {
  for (int h = 1; h < n; h <<= 1)
    for (int i = 0; i < n; i += h << 1)
      for (int j = i; j < i + h; ++j) {
        const double a = t[j], b = t[j + h];
        t[j] = a + b;
        t[j + h] = a - b;
      }
}

void check_args(int n, int64_t cols) {
  NIBBLE_CHECK(rht_size_valid(n) && cols % n == 0, "rht n=", n, " cols=", cols);
}

// Forward: y = H (d ⊙ x) / √n. Inverse: x = d ⊙ (H y) / √n ((H D)⁻¹ = D H: H_n/√n is
// symmetric and orthogonal, D is its own inverse).
void rht_apply(float* x, int64_t rows, int64_t cols, int n, const float* signs, bool inverse) {
  check_args(n, cols);
  const double scale = 1.0 / std::sqrt(static_cast<double>(n));
  const int64_t nblocks = rows * (cols / n);
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    double t[128];
    float* p = x + blk * n;
    for (int j = 0; j < n; ++j) t[j] = inverse ? static_cast<double>(p[j]) : static_cast<double>(p[j]) * signs[j];
    fwht(t, n);
    for (int j = 0; j < n; ++j)
      p[j] = inverse ? static_cast<float>(t[j] * scale * signs[j]) : static_cast<float>(t[j] * scale);
  }
}

}  // namespace

void rht_forward(float* x, int64_t rows, int64_t cols, int n, const float* signs) {
  rht_apply(x, rows, cols, n, signs, false);
}
void rht_inverse(float* x, int64_t rows, int64_t cols, int n, const float* signs) {
  rht_apply(x, rows, cols, n, signs, true);
}

std::vector<double> rht_matrix(int n, const float* signs) {
  check_args(n, n);
  const double scale = 1.0 / std::sqrt(static_cast<double>(n));
  std::vector<double> m(static_cast<size_t>(n) * n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      const double h = (__builtin_popcount(static_cast<unsigned>(i & j)) & 1) ? -scale : scale;
      m[static_cast<size_t>(i) * n + j] = h * signs[j];
    }
  return m;
}

}  // namespace nibble
