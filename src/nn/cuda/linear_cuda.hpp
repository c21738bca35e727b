#pragma once
// The CUDA twin of QuantLinear (nibble/nn/linear.hpp): the three training GEMMs of a
// bias-free linear layer under a Recipe, with the same operands bit for bit (4-bit codes,
// scales, SR draws, RHT signs) and the GEMMs in cuBLASLt (bf16 operands, fp32 accumulation,
// S_dec as alpha). Results differ from the CPU only by the GEMMs' summation order.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/cuda/scratch.cuh"
#include "nn/cuda/spectral_cuda.hpp"
#include "nibble/cuda.hpp"
#include "nibble/nn/linear.hpp"
#include "nibble/nn/recipe.hpp"

namespace nibble::cuda {

// Scratch shared by all the layers of a model (their GEMMs run one at a time on one stream).
struct LinearWorkspace {
  DeviceScratch work_a, work_b;  // fp32 transformed operands
  DeviceScratch op_a, op_b;      // GEMM operands (bf16 or fp32)
  DeviceScratch mean_a, mean_b, corr, partials;
  DeviceScratch scalars;         // tensor_a[2], tensor_b[2], alpha
  QuantScratch* qs = nullptr;
  LinearWorkspace();
  ~LinearWorkspace();
  LinearWorkspace(const LinearWorkspace&) = delete;
  LinearWorkspace& operator=(const LinearWorkspace&) = delete;
};

class CudaLinear {
 public:
  CudaLinear() = default;
  CudaLinear(std::string name, int64_t in, int64_t out, uint32_t id) : name_(std::move(name)), in_(in), out_(out), id_(id) {}
  void bind(float* w, float* dw) { w_ = w; dw_ = dw; }
  void set_recipe(const Recipe& r);
  const std::string& name() const { return name_; }

  // y[t, out] = x[t, in] · Wᵀ; x must stay alive until backward.
  void forward(const float* x, float* y, int64_t t, const StepContext& ctx, LinearWorkspace& ws, cudaStream_t st);
  // dx = dY·W (when dx != nullptr), dW += dYᵀ·X.
  void backward(const float* dy, float* dx, int64_t t, const StepContext& ctx, LinearWorkspace& ws, cudaStream_t st);
  // SPEC §6 statistics of the last forward/backward with ctx.collect_stats (host-side math on
  // downloaded operands, as the CPU layer records them).
  std::vector<OperandStats>& stats() { return stats_; }

 private:
  const float* signs(const StepContext& ctx, Role role, int n);
  void gemm(const GemmSpec& g, struct OperandJob& a, struct OperandJob& b, float* c, int64_t m, int64_t n, int64_t k,
            bool accumulate, LinearWorkspace& ws, cudaStream_t st, const char* gemm_name);

  std::string name_;
  int64_t in_ = 0, out_ = 0;
  uint32_t id_ = 0;
  float* w_ = nullptr;
  float* dw_ = nullptr;
  const float* x_ = nullptr;
  Recipe recipe_;
  // RHT signs per GEMM role on the device, for the seed they were drawn with.
  struct Signs {
    uint64_t seed = 0;
    int n = 0;
    DeviceScratch d;
  };
  Signs signs_[3];
  DeviceScratch mean_x_;        // μ of the last forward's x (centred recipes), reused by wgrad
  DeviceScratch nu_w_;          // ν of wgrad's dY when it differs from dgrad's (split + centring)
  DeviceLowRank lowrank_;       // the spectral split of dY (metis)
  DeviceScratch us_, resid_, vtw_, vs_;
  bool mean_x_valid_ = false;
  std::vector<OperandStats> stats_;
};

}  // namespace nibble::cuda
