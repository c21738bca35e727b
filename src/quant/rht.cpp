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

void check_args(int n, int64_t cols) {
  NIBBLE_CHECK(rht_size_valid(n) && cols % n == 0, "rht n=", n, " cols=", cols);
}

// The butterflies of fwht() with the block size known at compile time, so that they unroll
// and vectorise; same operations in the same order, so the same bits.
template <int N>
inline void fwht_n(double* t) {
  for (int h = 1; h < N; h <<= 1)
    for (int i = 0; i < N; i += h << 1)
      for (int j = i; j < i + h; ++j) {
        const double a = t[j], b = t[j + h];
        t[j] = a + b;
        t[j + h] = a - b;
      }
}

// Forward: y = H (d ⊙ x) / √n. Inverse: x = d ⊙ (H y) / √n ((H D)⁻¹ = D H: H_n/√n is
// symmetric and orthogonal, D is its own inverse).
template <int N, bool kInverse>
void rht_blocks(float* x, int64_t nblocks, const float* signs) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(N));
  double d[N];
  for (int j = 0; j < N; ++j) d[j] = signs[j];
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    double t[N];
    float* p = x + blk * N;
    if constexpr (kInverse) {
      for (int j = 0; j < N; ++j) t[j] = static_cast<double>(p[j]);
    } else {
      for (int j = 0; j < N; ++j) t[j] = static_cast<double>(p[j]) * d[j];
    }
    fwht_n<N>(t);
    if constexpr (kInverse) {
      for (int j = 0; j < N; ++j) p[j] = static_cast<float>(t[j] * scale * d[j]);
    } else {
      for (int j = 0; j < N; ++j) p[j] = static_cast<float>(t[j] * scale);
    }
  }
}

template <bool kInverse>
void rht_apply(float* x, int64_t rows, int64_t cols, int n, const float* signs) {
  check_args(n, cols);
  const int64_t nblocks = rows * (cols / n);
  switch (n) {
    case 16: rht_blocks<16, kInverse>(x, nblocks, signs); break;
    case 32: rht_blocks<32, kInverse>(x, nblocks, signs); break;
    case 64: rht_blocks<64, kInverse>(x, nblocks, signs); break;
    default: rht_blocks<128, kInverse>(x, nblocks, signs); break;
  }
}

}  // namespace

void rht_forward(float* x, int64_t rows, int64_t cols, int n, const float* signs) {
  rht_apply<false>(x, rows, cols, n, signs);
}
void rht_inverse(float* x, int64_t rows, int64_t cols, int n, const float* signs) {
  rht_apply<true>(x, rows, cols, n, signs);
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
