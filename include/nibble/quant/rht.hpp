#pragma once
// Random Hadamard transform (SPEC §4.1): each n-block x_b along the last axis becomes
// y_b = H_n (d ⊙ x_b), H_n the Sylvester Hadamard matrix scaled by 1/√n, d a ±1 vector.
// Computed as a fast Walsh–Hadamard transform in float64 and rounded once to fp32: the
// result is the exact transform to within float64 error before that single rounding, so
// any careful implementation (and the CUDA kernel, which does the same) agrees with it.
#include <cstdint>
#include <vector>

namespace nibble {

bool rht_size_valid(int n);  // n in {16, 32, 64, 128}
// Philox signs (SPEC §3.4): sign j = (word(seed, stream, j) & 1) ? -1 : +1, j = 0..n-1.
std::vector<float> rht_signs(int n, uint64_t seed, uint32_t stream);
// Throws a user-facing error for a bad size, cols not a multiple of n, or signs that are
// not n values of ±1.
void validate_rht(int n, int64_t cols, const std::vector<float>& signs);

void rht_forward(float* x, int64_t rows, int64_t cols, int n, const float* signs);
void rht_inverse(float* x, int64_t rows, int64_t cols, int n, const float* signs);

// The dense n×n matrix H_n·diag(d) in float64 (tests and reference computations).
std::vector<double> rht_matrix(int n, const float* signs);

}  // namespace nibble
