#pragma once
// Mean-bias removal (SPEC §4.2): subtract the per-channel mean over tokens before
// quantizing and add the rank-one terms back exactly, in higher precision:
//   fprop: Y  = Q(X_c)·Q(W)ᵀ  + 1 (W μ)ᵀ
//   dgrad: dX = Q(dY_c)·Q(W)  + 1 (Wᵀ ν)ᵀ
//   wgrad: dW = Q(dY_c)ᵀ·Q(X_c) + T ν μᵀ
// (μ = column mean of X [T,K], ν = column mean of dY [T,N], W is [N,K]).
#include <cstdint>
#include <functional>
#include <vector>

namespace nibble {

// Column mean over rows, accumulated in float64, rounded once to fp32.
std::vector<float> column_mean(const float* x, int64_t rows, int64_t cols);
void subtract_column_vector(float* x, int64_t rows, int64_t cols, const float* v);
void add_column_vector(float* x, int64_t rows, int64_t cols, const float* v);

// The correction terms (float64 accumulation).
std::vector<float> fprop_correction(const float* w, int64_t n, int64_t k, const float* mu);  // W μ, [N]
std::vector<float> dgrad_correction(const float* w, int64_t n, int64_t k, const float* nu);  // Wᵀ ν, [K]
// dW += T ν μᵀ, dw is [N, K].
void add_wgrad_correction(float* dw, int64_t n, int64_t k, int64_t t, const float* nu,
                          const float* mu);

// A quantize-dequantize applied in place to a row-major [rows, cols] matrix whose
// reduction dim is cols.
using FakeQuant = std::function<void(float* x, int64_t rows, int64_t cols)>;

// The three centred GEMMs with the exact corrections. fp32 products, float64 accumulation.
// x: [T,K], w: [N,K], dy: [T,N]. q_* quantize the operand in the layout the GEMM reduces.
std::vector<float> centered_fprop(const float* x, const float* w, int64_t t, int64_t k, int64_t n,
                                  const FakeQuant& q_x, const FakeQuant& q_w);
std::vector<float> centered_dgrad(const float* dy, const float* w, int64_t t, int64_t k, int64_t n,
                                  const FakeQuant& q_dy, const FakeQuant& q_w);
std::vector<float> centered_wgrad(const float* dy, const float* x, int64_t t, int64_t k, int64_t n,
                                  const FakeQuant& q_dy, const FakeQuant& q_x);

}  // namespace nibble
