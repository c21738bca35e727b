#pragma once
// SPEC §6 statistics of device tensors for --stats-every, computed where the tensors live: the
// passes over X run as kernels and only per-block partial sums and vectors of one row's length
// come back, instead of the whole operand (tens of GB per 124m collection). The arithmetic
// between the passes is quant/stats.cpp's own (error_stats_from_sums, anisotropy_stats_with),
// so the numbers match the CPU engine's up to the order of float64 additions.
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "core/cuda/scratch.cuh"
#include "nibble/quant/stats.hpp"
#include "ops/cuda/gemm.hpp"

namespace nibble::cuda {

// Device memory the statistics reuse from call to call (partial sums, v, XᵀXv, Xv).
struct StatsScratch {
  DeviceScratch part, vec, rowvec;
  std::vector<double> host;
};

// error_stats(x, x̂) where x̂ is stored as `xhat_type` and, when `tensor_scale` is set, is the
// stored value times tensor_scale[1] (an operand's decode scale, as the GEMM applies it).
ErrorStats error_stats_device(const float* x, const void* xhat, GemmDtype xhat_type, const float* tensor_scale,
                              int64_t n, StatsScratch& s, cudaStream_t st);

// anisotropy_stats of X [rows, cols] (fp32, row-major) on the device.
AnisotropyStats anisotropy_stats_device(const float* x, int64_t rows, int64_t cols, int block, int power_iters,
                                        StatsScratch& s, cudaStream_t st, uint64_t seed = 0);

}  // namespace nibble::cuda
