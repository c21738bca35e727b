#pragma once
// The math ops of the transformer, CPU reference. Each op has an explicit forward and
// backward (no autograd tape); backward functions ACCUMULATE into parameter gradients
// (dweight +=) and WRITE input gradients (dx =) unless documented otherwise.
// Templated on the scalar type: float is the training path, double is used by the
// gradient checks (central differences in float64).
// Layouts are row-major. Activations are [N, C] with N = B·T rows (token-major).
#include <bit>
#include <cstdint>
#include <limits>

namespace nibble::ops {

// ---- fp32 exponential ----------------------------------------------------------------------
// exp(x) as the float ops compute it (softmax in attention and cross-entropy, SiLU):
// Cody–Waite reduction x = n·ln2 + r (n by the 1.5·2²³ rounding trick), the degree-6 Cephes
// expf polynomial for e^r, scaled by 2ⁿ through the exponent bits. Relative error < 1.2e-7
// (about 1 ulp) over [−86.6, 88.72]; +inf above, 0 below (no subnormal results); NaN stays NaN.
// Branch-free plain IEEE multiplies and adds in a fixed order: loops over it vectorize and give
// the same bits on every ISA (and in a CUDA twin built with --fmad=false).
namespace detail {
// A float's bits as an int32 that orders like the value (NaNs beyond ±inf). exp_f32 clamps and
// selects with integer compares and bit masks: GCC (-ftrapping-math) does not if-convert float
// compares, so ternaries would leave branches in the loops and stop them vectorising.
constexpr int32_t float_order_key(float x) {
  const int32_t b = std::bit_cast<int32_t>(x);
  return b ^ ((b >> 31) & 0x7FFFFFFF);
}
}  // namespace detail

inline float exp_f32(float x) {
  constexpr float kHi = 88.72283935546875f, kLo = -86.6f;
  constexpr int32_t kHiKey = detail::float_order_key(kHi), kLoKey = detail::float_order_key(kLo);
  const int32_t key = detail::float_order_key(x);
  const int32_t over = -static_cast<int32_t>(key > kHiKey), under = -static_cast<int32_t>(key < kLoKey);
  const float xc = std::bit_cast<float>((over & std::bit_cast<int32_t>(kHi)) | (under & std::bit_cast<int32_t>(kLo)) |
                                        (~(over | under) & std::bit_cast<int32_t>(x)));
  const float t = xc * 1.44269502162933349609375f + 12582912.0f;  // round-to-nearest(x·log2 e) + 1.5·2²³
  const float n = t - 12582912.0f;
  const int32_t ni = std::bit_cast<int32_t>(t) - 0x4B400000;     // the same n as an integer
  float r = xc - n * 0.693359375f;                                // ln2 split: exact product
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * (r * r) + r + 1.0f;
  const float scale = std::bit_cast<float>((ni + 126) << 23);  // 2^(n−1), n ∈ [−125, 128]
  const float e = (y * scale) * 2.0f;
  const int32_t nan = -static_cast<int32_t>((std::bit_cast<int32_t>(x) & 0x7FFFFFFF) > 0x7F800000);
  const int32_t big = over & ~nan, small = under & ~nan;
  return std::bit_cast<float>((nan & std::bit_cast<int32_t>(x)) | (big & 0x7F800000) |
                              (~(nan | big | small) & std::bit_cast<int32_t>(e)));
}

// ---- GEMM ---------------------------------------------------------------------------
// C[M,N] = A[M,K] · B[N,K]ᵀ (both operands laid out along the reduction dim K), or
// C += ... when accumulate. The float path uses a cache-blocked, OpenMP-parallel kernel
// (see gemm); double uses plain loops.
template <class T>
void matmul_nt(const T* a, const T* b, T* c, int64_t m, int64_t n, int64_t k, bool accumulate = false);
// General row-major GEMM: C[M,N] = op(A)·op(B) (or C += when accumulate), op(A) [M,K],
// op(B) [K,N]. A is stored [M,K] (trans_a false) or [K,M] (true), B is stored [K,N]
// (trans_b false) or [N,K] (true); lda, ldb, ldc are row strides. matmul_nt is
// gemm(false, true, ...). float: every C element is the single fp32 FMA chain
// c = fma(a_k, b_k, c) over k = 0..K−1 starting from 0 (or from C when accumulate), so the
// result does not depend on the blocking, the number of threads or the kernel (AVX-512, AVX2
// or the portable one). Called from inside an OpenMP parallel region it runs on the calling
// thread only. double: plain loops, a float64 sum over k added to C.
template <class T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b,
          int64_t ldb, T* c, int64_t ldc, bool accumulate = false);
// The float GEMM kernel in use: "avx512", "avx2" or "generic" (chosen from the CPU at first use).
const char* matmul_kernel();
// Forces a float GEMM kernel by name (tests, benchmarks); "auto" restores the automatic choice.
// Returns false and changes nothing when the name is unknown or the CPU lacks the instructions.
// Not to be called while a GEMM runs.
bool set_matmul_kernel(const char* name);
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
// dx = ..., dw += ... (dx may alias dy)
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
// dq, dk, dv are written (not accumulated). Threads split (batch, kv head).
// float (both directions): scores and products through gemm, exponentials by exp_f32,
// probability sums and Δ = rowsum(dO ⊙ O) in float64.
template <class T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* out, const T* lse,
                        T* dq, T* dk, T* dv, int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d);

// ---- SwiGLU: out = silu(gate) ⊙ up, silu(g) = g·σ(g) -------------------------------------
template <class T>
void swiglu_forward(const T* gate, const T* up, T* out, int64_t n);
// dgate, dup written; they may alias dout. float: σ through exp_f32.
template <class T>
void swiglu_backward(const T* dout, const T* gate, const T* up, T* dgate, T* dup, int64_t n);

// ---- softmax cross-entropy over the vocabulary ---------------------------------------------
// logits [N, V], targets [N] (−1 = ignore). Returns the mean loss over non-ignored rows
// (float64 accumulation) and writes, when dlogits != nullptr, the gradient of that mean:
// dlogits = (softmax − onehot) / n_valid. Logits may be overwritten only via dlogits.
// Ignored rows get dlogits = 0; with no valid row the loss is 0. A target outside [0, V) other
// than −1 throws nibble::Error naming the row and the value (before anything is written).
template <class T>
double cross_entropy(const T* logits, const int32_t* targets, T* dlogits, int64_t n, int64_t v);

// ---- residual ------------------------------------------------------------------------------
template <class T>
void add_inplace(T* y, const T* x, int64_t n);  // y += x

// ---- optimizer -------------------------------------------------------------------------------
// AdamW (decoupled weight decay), step t ≥ 1, bias-corrected:
//   m = β1 m + (1−β1) g;  v = β2 v + (1−β2) g²
//   p −= lr · ( (m/(1−β1ᵗ)) / (sqrt(v/(1−β2ᵗ)) + eps) + wd · p )
// The bias corrections 1−βᵗ are computed in float64 and rounded to fp32; the per-element math
// is fp32, one IEEE operation at a time in this order (same bits on the AVX and scalar paths).
// t < 1 throws nibble::Error.
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int64_t t);
// sqrt(Σ g²) over several buffers (float64 accumulation, fixed order).
double global_norm(const float* const* bufs, const int64_t* sizes, int count);
// global_norm's pieces: each buffer in chunks of kNormChunk elements, each chunk's Σx² by
// chunk_sumsq (float64, a fixed order), the chunk sums added in order. ZeRO-1 slices start at
// multiples of kNormChunk, so the ranks' chunk sums give the same norm bit for bit.
constexpr int64_t kNormChunk = int64_t(1) << 16;
double chunk_sumsq(const float* x, int64_t n);
void scale_inplace(float* x, int64_t n, float s);

}  // namespace nibble::ops
