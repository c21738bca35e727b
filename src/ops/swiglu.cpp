// SwiGLU (silu(gate) ⊙ up), CPU reference; elementwise, in T.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "nibble/ops/ops.hpp"
#include "core/simd_clones.hpp"

namespace nibble::ops {
namespace {
// float: ops::exp_f32 (branch-free, so the loops vectorise); double: std::exp.
template <class T>
inline T sigmoid(T g) {
  T e;
  if constexpr (std::is_same_v<T, float>)
    e = exp_f32(-g);
  else
    e = std::exp(-g);
  return T(1) / (T(1) + e);  // exp overflow for g ≪ 0 gives 1/inf = 0
}

// The elementwise loops: float versions NIBBLE_SIMD_CLONES (core/simd_clones.hpp), double
// versions plain.

template <class T>
inline void forward_impl(const T* gate, const T* up, T* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const T g = gate[i];
    out[i] = g * sigmoid(g) * up[i];
  }
}
// d silu(g)/dg = σ(g)·(1 + g·(1 − σ(g))). Outputs may alias dout (elementwise).
template <class T>
inline void backward_impl(const T* dout, const T* gate, const T* up, T* dgate, T* dup, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const T g = gate[i], u = up[i], d = dout[i];
    const T s = sigmoid(g);
    dgate[i] = d * u * (s * (T(1) + g * (T(1) - s)));
    dup[i] = d * (g * s);
  }
}
NIBBLE_SIMD_CLONES void forward_chunk(const float* gate, const float* up, float* out, int64_t n) {
  forward_impl(gate, up, out, n);
}
void forward_chunk(const double* gate, const double* up, double* out, int64_t n) { forward_impl(gate, up, out, n); }
NIBBLE_SIMD_CLONES void backward_chunk(const float* dout, const float* gate, const float* up, float* dgate, float* dup,
                                       int64_t n) {
  backward_impl(dout, gate, up, dgate, dup, n);
}
void backward_chunk(const double* dout, const double* gate, const double* up, double* dgate, double* dup, int64_t n) {
  backward_impl(dout, gate, up, dgate, dup, n);
}

constexpr int64_t kChunk = 16384;

}  // namespace

template <class T>
void swiglu_forward(const T* gate, const T* up, T* out, int64_t n) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i0 = c * kChunk;
    forward_chunk(gate + i0, up + i0, out + i0, std::min(kChunk, n - i0));
  }
}

template <class T>
void swiglu_backward(const T* dout, const T* gate, const T* up, T* dgate, T* dup, int64_t n) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i0 = c * kChunk;
    backward_chunk(dout + i0, gate + i0, up + i0, dgate + i0, dup + i0, std::min(kChunk, n - i0));
  }
}

template void swiglu_forward<float>(const float*, const float*, float*, int64_t);
template void swiglu_forward<double>(const double*, const double*, double*, int64_t);
template void swiglu_backward<float>(const float*, const float*, const float*, float*, float*, int64_t);
template void swiglu_backward<double>(const double*, const double*, const double*, double*, double*, int64_t);

}  // namespace nibble::ops
