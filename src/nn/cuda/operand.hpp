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
  const float* src = nullptr;  // row-major [rows, cols]
  int64_t rows = 0, cols = 0;
  bool transpose = false;      // the operand is srcᵀ ([cols, rows])
  const OperandSpec* spec = nullptr;
  const float* mean = nullptr;  // subtract mean[src column] (centring) when not null
  int rht = 0;                  // RHT block along the operand's rows (the reduction dim)
  const float* signs = nullptr; // device, rht values
  uint64_t seed = 0;
  uint32_t stream = 0;          // Philox stream of SR
  GemmDtype dtype = GemmDtype::BF16;
};

// Writes the operand into `out` ([R, C] of job.dtype) and, for a 4-bit operand, its tensor amax
// and S_dec into tensor[0..1]. `work` is an fp32 scratch used when a transform runs.
// Returns true when the operand carries a tensor scale (S_dec ≠ 1 may apply).
bool prepare_operand(const OperandJob& job, DeviceScratch& work, DeviceScratch& out, float* tensor,
                     QuantScratch* qs, cudaStream_t stream);
// The fp32 operand before `represent` (after transpose, centring and RHT) into `work` —
// used by the statistics (SPEC §6), which compare it with the represented operand.
void transformed_operand(const OperandJob& job, DeviceScratch& work, cudaStream_t stream);

// alpha = (a_scaled ? ta[1] : 1) · (b_scaled ? tb[1] : 1), one device float.
void gemm_alpha(const float* ta, bool a_scaled, const float* tb, bool b_scaled, float* alpha, cudaStream_t stream);

// mean[f] = Σ_t x[t, f] / T in float64, rounded once (column_mean of the CPU); `partials` is a
// scratch of column_mean_partials(T, F) doubles. Fixed summation order: deterministic.
int64_t column_mean_partials(int64_t t, int64_t f);
void column_mean(const float* x, int64_t t, int64_t f, double* partials, float* mean, cudaStream_t stream);

// Corrections of the centred GEMMs (float64 accumulation, as centering.cpp):
void fprop_correction(const float* w, int64_t n, int64_t k, const float* mu, float* out, cudaStream_t stream);  // W μ [N]
// Wᵀ ν [K]; `partials`: column_mean_partials(n, k) doubles.
void dgrad_correction(const float* w, int64_t n, int64_t k, const float* nu, double* partials, float* out,
                      cudaStream_t stream);
void add_column_vector(float* x, int64_t rows, int64_t cols, const float* v, cudaStream_t stream);
void add_wgrad_correction(float* dw, int64_t n, int64_t k, int64_t t, const float* nu, const float* mu,
                          cudaStream_t stream);  // dW += T ν μᵀ

}  // namespace nibble::cuda
