#pragma once
// Building a GEMM operand on the GPU exactly as QuantLinear builds it on the CPU (SPEC §4–5):
//   source [T, F] (token-major activation, gradient or weight) ─(transpose)─▶ [R, C], C the
//   GEMM's reduction dim ─centre─▶ ─RHT along C─▶ ─represent (bf16 cast, or 4-bit q·s_b)─▶
// and the small kernels of the mean-bias corrections. The 4-bit values are the CPU's bits
// (shared codec, same Philox counters); the tensor scale S_dec goes to the GEMM's alpha.
#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda/scratch.cuh"
#include "nibble/cuda.hpp"
#include "nibble/nn/recipe.hpp"
#include "ops/cuda/gemm.hpp"

namespace nibble::cuda {

struct OperandJob {
  const void* src = nullptr;   // row-major [rows, cols] of src_type
  int64_t rows = 0, cols = 0;
  bool transpose = false;      // the operand is srcᵀ ([cols, rows])
  const OperandSpec* spec = nullptr;
  const float* mean = nullptr;  // subtract mean[src column] (centring) when not null
  int rht = 0;                  // RHT block along the operand's rows (the reduction dim)
  const float* signs = nullptr; // device, rht values
  uint64_t seed = 0;
  uint32_t stream = 0;          // Philox stream of SR
  GemmDtype dtype = GemmDtype::BF16;     // the GEMM's operand type
  GemmDtype src_type = GemmDtype::FP32;  // the source's storage type (bf16 activations)
  bool materialize = false;  // always write a K-major copy into `out` (the statistics read it)
};

// Where the GEMM reads the operand, and whether it carries a tensor scale (S_dec ≠ 1 may apply).
struct PreparedOperand {
  GemmOperand op;
  bool scaled = false;
};

// Builds the operand for the GEMM: a source already of the GEMM's type with nothing to do is
// read in place (transposed through the GEMM's layout flag when job.transpose); a plain cast is
// written row for row into `out` (again transposed by the GEMM); anything transformed or
// quantized is written K-major ([R, C] of job.dtype) into `out`, a 4-bit operand with its tensor
// amax and S_dec in tensor[0..1]. `work` is an fp32 scratch used when a transform runs.
PreparedOperand prepare_operand(const OperandJob& job, DeviceScratch& work, DeviceScratch& out, float* tensor,
                                QuantScratch* qs, cudaStream_t stream);
// src of `type` [n] → fp32 (a copy into `tmp` when it is bf16, else src itself).
const float* as_float(const void* src, GemmDtype type, int64_t n, DeviceScratch& tmp, cudaStream_t stream);
// fp32 [n] → `type` (bf16: rounded once) into dst.
void store_as(const float* src, int64_t n, void* dst, GemmDtype type, cudaStream_t stream);
// The fp32 operand before `represent` (after transpose, centring and RHT) into `work` —
// used by the statistics (SPEC §6), which compare it with the represented operand.
void transformed_operand(const OperandJob& job, DeviceScratch& work, cudaStream_t stream);

// alpha = (a_scaled ? ta[1] : 1) · (b_scaled ? tb[1] : 1), one device float.
void gemm_alpha(const float* ta, bool a_scaled, const float* tb, bool b_scaled, float* alpha, cudaStream_t stream);

// mean[f] = Σ_t x[t, f] / T in float64, rounded once (column_mean of the CPU); `partials` is a
// scratch of column_mean_partials(T, F) doubles. Fixed summation order: deterministic.
int64_t column_mean_partials(int64_t t, int64_t f);
void column_mean(const void* x, GemmDtype type, int64_t t, int64_t f, double* partials, float* mean, cudaStream_t stream);

// Corrections of the centred GEMMs (float64 accumulation, as centering.cpp):
void fprop_correction(const float* w, int64_t n, int64_t k, const float* mu, float* out, cudaStream_t stream);  // W μ [N]
// Wᵀ ν [K]; `partials`: column_mean_partials(n, k) doubles.
void dgrad_correction(const float* w, int64_t n, int64_t k, const float* nu, double* partials, float* out,
                      cudaStream_t stream);
void add_column_vector(float* x, int64_t rows, int64_t cols, const float* v, cudaStream_t stream);
void add_wgrad_correction(float* dw, int64_t n, int64_t k, int64_t t, const float* nu, const float* mu,
                          cudaStream_t stream);  // dW += T ν μᵀ

}  // namespace nibble::cuda
