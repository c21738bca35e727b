#pragma once
// CUDA twins of the transformer ops of nibble/ops/ops.hpp (fp32 math, device pointers,
// asynchronous on `stream`). Each one mirrors its CPU reference op by op and is tested
// against it (tests/ops/cuda). Nothing here uses atomics on floats: every reduction runs in a
// fixed order, so two runs with the same inputs give the same bits (determinism is a tested
// property of the GPU trainer).
//
// Layouts as on the CPU: activations are row-major [N, C] with N = B·T token rows. Where a
// tensor is a column slice of a wider buffer (q, k, v inside the fused qkv output) the op takes
// a row stride `ld` (in elements) and a pointer to the slice's first element.
//
// Mixed precision: the activations between ops may be stored in bf16 (the engine's default;
// see engine_cuda.cu). The overloads taking bf16 pointers load bf16 into fp32 registers, run
// the same fp32/float64 arithmetic as the fp32 overloads and round each stored output once to
// bf16 (RNE). On inputs that are bf16 values they therefore equal the fp32 overload followed
// by one rounding of its outputs (tests/ops/cuda check exactly that).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace nibble::cuda::ops {

using bf16 = __nv_bfloat16;

// ---- embedding ------------------------------------------------------------------------------
// out[n, :] = wte[tokens[n], :]   (tokens already validated on the host)
void embedding_forward(const int32_t* tokens, const float* wte, float* out, int64_t n, int64_t c,
                       cudaStream_t stream);
// dwte[tok, :] += Σ dout[n, :] over the rows n with tokens[n] == tok, summed in increasing n
// (deterministic, no atomics). The plan is a CSR built on the host from the step's tokens:
// unique[j] a token id, rows order[starts[j] .. starts[j+1]) its positions in increasing order.
void embedding_backward(const int32_t* unique, const int32_t* starts, const int32_t* order,
                        int64_t n_unique, const float* dout, float* dwte, int64_t c, cudaStream_t stream);

// ---- RMSNorm ------------------------------------------------------------------------------------
// x is the fp32 residual stream; y (the normalised operand of the next GEMM) fp32 or bf16.
void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t n, int64_t c,
                     float eps, cudaStream_t stream);
void rmsnorm_forward(const float* x, const float* w, bf16* y, float* rstd, int64_t n, int64_t c,
                     float eps, cudaStream_t stream);
// dx written (may alias an fp32 dy), or dx += the gradient when `accumulate` (the residual
// stream's gradient: the value is rounded to float, then added, as ops::add_inplace would);
// dw += (accumulated over rows in a fixed order through `partials`, a scratch of
// rmsnorm_partials_floats(n, c) floats).
int64_t rmsnorm_partials_floats(int64_t n, int64_t c);
void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* rstd, float* dx,
                      float* dw, float* partials, int64_t n, int64_t c, cudaStream_t stream,
                      bool accumulate = false);
void rmsnorm_backward(const bf16* dy, const float* x, const float* w, const float* rstd, float* dx,
                      float* dw, float* partials, int64_t n, int64_t c, cudaStream_t stream,
                      bool accumulate = false);

// ---- RoPE (HF rotate_half), in place -------------------------------------------------------------
// x: rows of `ld` floats, row r = b·T + t holds h heads of d values starting at x[r·ld].
// cos_sin: [T, d/2] pairs (cos, sin) of θ_i = t·base^(−2i/d) in float64, computed on the host
// exactly as the CPU op computes them (rope_table below); the rotation runs in float64 and is
// rounded once, so results are bit-identical to ops::rope_forward/rope_backward.
// inverse: the backward rotation.
void rope_table(double* host_cos_sin, int64_t t, int64_t d, double base);  // host: 2·T·(d/2) doubles
void rope_apply(float* x, int64_t ld, int64_t b, int64_t t, int64_t h, int64_t d,
                const double* cos_sin, bool inverse, cudaStream_t stream);
void rope_apply(bf16* x, int64_t ld, int64_t b, int64_t t, int64_t h, int64_t d,
                const double* cos_sin, bool inverse, cudaStream_t stream);

// ---- SwiGLU over the fused gate/up buffer --------------------------------------------------------
// gu: [n, 2f] with gate in columns [0, f) and up in [f, 2f); out[n, f] = silu(gate) ⊙ up.
void swiglu_forward(const float* gu, float* out, int64_t n, int64_t f, cudaStream_t stream);
// dgu[n, 2f] written in the same fused layout (dgate | dup).
void swiglu_backward(const float* dout, const float* gu, float* dgu, int64_t n, int64_t f,
                     cudaStream_t stream);
void swiglu_forward(const bf16* gu, bf16* out, int64_t n, int64_t f, cudaStream_t stream);
void swiglu_backward(const bf16* dout, const bf16* gu, bf16* dgu, int64_t n, int64_t f, cudaStream_t stream);

// ---- softmax cross-entropy -------------------------------------------------------------------------
// logits [n, v] are overwritten by dlogits = (softmax − onehot) / n_valid (0 on ignored rows,
// target −1). The mean loss over valid rows is written as a double to *loss (device), reduced
// in a fixed order. Targets must be valid (checked on the host). `row_loss` is a scratch of n
// doubles.
void cross_entropy(float* logits, const int32_t* targets, int64_t n, int64_t v, double* row_loss,
                   double* loss, cudaStream_t stream);
// The same loss without gradients (evaluation): logits untouched.
void cross_entropy_loss(const float* logits, const int32_t* targets, int64_t n, int64_t v,
                        double* row_loss, double* loss, cudaStream_t stream);
// bf16 logits, overwritten by bf16 dlogits (each the fp32 value above, rounded once).
void cross_entropy(bf16* logits, const int32_t* targets, int64_t n, int64_t v, double* row_loss,
                   double* loss, cudaStream_t stream);
void cross_entropy_loss(const bf16* logits, const int32_t* targets, int64_t n, int64_t v,
                        double* row_loss, double* loss, cudaStream_t stream);

// ---- residual --------------------------------------------------------------------------------------
void add_inplace(float* y, const float* x, int64_t n, cudaStream_t stream);  // y += x

// ---- optimizer ---------------------------------------------------------------------------------------
// Σ g² in float64 over the flat gradient, in a fixed order; result (the squared norm) in
// *sumsq (device). `partials`: scratch of global_norm_partials() doubles.
int64_t global_norm_partials();
void global_sumsq(const float* g, int64_t n, double* partials, double* sumsq, cudaStream_t stream);
// One launch over all parameters: chunk i covers [chunk_start[i], chunk_start[i] + chunk_len[i])
// with weight decay chunk_decay[i] ? wd : 0. Gradients are first multiplied by grad_scale (the
// clipping factor, 1 = none) exactly as ops::scale_inplace would, then ops::adamw_update's
// arithmetic runs in the same order (bit-identical to the CPU).
struct AdamChunks {
  const int64_t* start = nullptr;
  const int32_t* len = nullptr;
  const uint8_t* decay = nullptr;
  int64_t count = 0;
};
void adamw_update(float* p, const float* g, float* m, float* v, const AdamChunks& chunks, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int64_t t, float grad_scale,
                  cudaStream_t stream);

// ---- causal attention with grouped-query heads (flash-style, memory linear in T) -------------------
// q: [B·T rows, ld_q] with Hq heads of D at each row start; k, v: [B·T, ld_kv] with Hkv heads.
// out: [B·T, Hq·D] (contiguous); lse: [B, Hq, T]. Query head h reads kv head h / (Hq/Hkv).
// scale = 1/sqrt(D). D ∈ {32, 64, 128}.
void attention_forward(const float* q, const float* k, const float* v, int64_t ld_q, int64_t ld_kv,
                       float* out, float* lse, int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d,
                       cudaStream_t stream);
// dq [B·T, ld_dq], dk, dv [B·T, ld_dkv] written (not accumulated), deterministic (no atomics).
// `delta` is a scratch of B·Hq·T floats (rowsum(dO ⊙ O)).
void attention_backward(const float* dout, const float* q, const float* k, const float* v,
                        int64_t ld_q, int64_t ld_kv, const float* out, const float* lse, float* dq,
                        float* dk, float* dv, int64_t ld_dq, int64_t ld_dkv, float* delta, int64_t b,
                        int64_t t, int64_t hq, int64_t hkv, int64_t d, cudaStream_t stream);

// Tensor-core variant (attention_tc.cu): q, k, v (and dout) are rounded to bf16 on load,
// products accumulate in fp32 (mma.sync m16n8k16), softmax statistics in fp32; same layouts,
// strides, lse and outputs as attention_forward/attention_backward (fp32 in and out). Not
// bit-exact with the CPU (relative error of order 1e-3 from the bf16 operands). Deterministic
// (no atomics). D ∈ {32, 64, 128} (attention_tc_supported); any other D throws nibble::Error,
// and the caller falls back to the fp32 path.
bool attention_tc_supported(int64_t d);
void attention_forward_tc(const float* q, const float* k, const float* v, int64_t ld_q, int64_t ld_kv, float* out,
                          float* lse, int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d, cudaStream_t stream);
void attention_backward_tc(const float* dout, const float* q, const float* k, const float* v, int64_t ld_q,
                           int64_t ld_kv, const float* out, const float* lse, float* dq, float* dk, float* dv,
                           int64_t ld_dq, int64_t ld_dkv, float* delta, int64_t b, int64_t t, int64_t hq,
                           int64_t hkv, int64_t d, cudaStream_t stream);
// bf16 storage: inputs read as they are (they are already the bf16 operands), outputs rounded
// once to bf16; lse and delta stay fp32.
void attention_forward_tc(const bf16* q, const bf16* k, const bf16* v, int64_t ld_q, int64_t ld_kv, bf16* out,
                          float* lse, int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d, cudaStream_t stream);
void attention_backward_tc(const bf16* dout, const bf16* q, const bf16* k, const bf16* v, int64_t ld_q,
                           int64_t ld_kv, const bf16* out, const float* lse, bf16* dq, bf16* dk, bf16* dv,
                           int64_t ld_dq, int64_t ld_dkv, float* delta, int64_t b, int64_t t, int64_t hq,
                           int64_t hkv, int64_t d, cudaStream_t stream);

}  // namespace nibble::cuda::ops
