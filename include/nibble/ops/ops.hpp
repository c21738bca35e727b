#pragma once
// The math ops of the transformer, CPU reference. Each op has an explicit forward and
// backward (no autograd tape); backward functions ACCUMULATE into parameter gradients
// (dweight +=) and WRITE input gradients (dx =) unless documented otherwise.
// Templated on the scalar type: float is the training path, double is used by the
// gradient checks (central differences in float64).
// Layouts are row-major. Activations are [N, C] with N = B·T rows (token-major).
#include <cstdint>

namespace nibble::ops {

// ---- GEMM ---------------------------------------------------------------------------
// C[M,N] = A[M,K] · B[N,K]ᵀ (both operands laid out along the reduction dim K), or
// C += ... when accumulate. The float path uses a cache-blocked, OpenMP-parallel kernel
// (or BLAS sgemm when built with it); double uses plain loops.
template <class T>
void matmul_nt(const T* a, const T* b, T* c, int64_t m, int64_t n, int64_t k, bool accumulate = false);
// out[C, R] = in[R, C]ᵀ
template <class T>
void transpose(const T* in, T* out, int64_t rows, int64_t cols);

// ---- embedding ------------------------------------------------------------------------
// out[n, :] = wte[tokens[n], :]          (tokens validated by the caller)
template <class T>
void embedding_forward(const int32_t* tokens, const T* wte, T* out, int64_t n, int64_t c);
// dwte[tokens[n], :] += dout[n, :]
template <class T>
void embedding_backward(const int32_t* tokens, const T* dout, T* dwte, int64_t n, int64_t c);

// ---- RMSNorm: y = x / sqrt(mean(x²) + eps) ⊙ w ------------------------------------------
// rstd[n] = 1 / sqrt(mean(x[n]²) + eps) is saved for the backward.
template <class T>
void rmsnorm_forward(const T* x, const T* w, T* y, T* rstd, int64_t n, int64_t c, T eps);
// dx = ..., dw += ...
template <class T>
void rmsnorm_backward(const T* dy, const T* x, const T* w, const T* rstd, T* dx, T* dw, int64_t n, int64_t c);

// ---- rotary position embedding (Hugging Face "rotate_half" layout) -----------------------
// x is [B, T, H, D] (D even); for position t and i < D/2 with
// θ_i = t · base^(−2i/D): (x_i, x_{i+D/2}) ← (x_i cos θ − x_{i+D/2} sin θ, x_{i+D/2} cos θ + x_i sin θ).
// Angles are computed in float64. In place.
template <class T>
void rope_forward(T* x, int64_t b, int64_t t, int64_t h, int64_t d, double base);
// The inverse rotation applied to the gradient, in place.
template <class T>
void rope_backward(T* dx, int64_t b, int64_t t, int64_t h, int64_t d, double base);

// ---- causal attention with grouped-query heads --------------------------------------------
// q: [B, T, Hq, D], k, v: [B, T, Hkv, D] (Hq a multiple of Hkv; query head h uses kv head
// h / (Hq/Hkv)); out: [B, T, Hq, D]; scale = 1/sqrt(D). lse[B, Hq, T] = log-sum-exp of the
// scaled scores of each query row, saved so the backward recomputes the probabilities
// (memory linear in T).
template <class T>
void attention_forward(const T* q, const T* k, const T* v, T* out, T* lse, int64_t b, int64_t t,
                       int64_t hq, int64_t hkv, int64_t d);
// dq, dk, dv are written (not accumulated).
template <class T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* out, const T* lse,
                        T* dq, T* dk, T* dv, int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d);

// ---- SwiGLU: out = silu(gate) ⊙ up, silu(g) = g·σ(g) -------------------------------------
template <class T>
void swiglu_forward(const T* gate, const T* up, T* out, int64_t n);
template <class T>
void swiglu_backward(const T* dout, const T* gate, const T* up, T* dgate, T* dup, int64_t n);

// ---- softmax cross-entropy over the vocabulary ---------------------------------------------
// logits [N, V], targets [N] (−1 = ignore). Returns the mean loss over non-ignored rows
// (float64 accumulation) and writes, when dlogits != nullptr, the gradient of that mean:
// dlogits = (softmax − onehot) / n_valid. Logits may be overwritten only via dlogits.
template <class T>
double cross_entropy(const T* logits, const int32_t* targets, T* dlogits, int64_t n, int64_t v);

// ---- residual ------------------------------------------------------------------------------
template <class T>
void add_inplace(T* y, const T* x, int64_t n);  // y += x

// ---- optimizer -------------------------------------------------------------------------------
// AdamW (decoupled weight decay), step t ≥ 1, bias-corrected:
//   m = β1 m + (1−β1) g;  v = β2 v + (1−β2) g²
//   p −= lr · ( (m/(1−β1ᵗ)) / (sqrt(v/(1−β2ᵗ)) + eps) + wd · p )
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int64_t t);
// sqrt(Σ g²) over several buffers (float64 accumulation, fixed order).
double global_norm(const float* const* bufs, const int64_t* sizes, int count);
void scale_inplace(float* x, int64_t n, float s);

}  // namespace nibble::ops
