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
#include "ops/cuda/gemm.hpp"
#include "nibble/cuda.hpp"
#include "nibble/nn/linear.hpp"
#include "nibble/nn/recipe.hpp"
#include "nn/cuda/stats_cuda.hpp"

namespace nibble::cuda {

// Scratch shared by all the layers of a model (their GEMMs run one at a time on one stream).
struct LinearWorkspace {
  DeviceScratch work_a, work_b;  // fp32 transformed operands
  DeviceScratch op_a, op_b;      // GEMM operands (bf16 or fp32)
  DeviceScratch dy_cast;         // an fp32 dY cast once for both backward GEMMs
  DeviceScratch out_f32;         // an fp32 GEMM result before corrections, for a bf16 output
  DeviceScratch f32_a, f32_b;    // bf16 tensors widened for fp32-only consumers (SVD, statistics)
  DeviceScratch mean_a, mean_b, corr, partials;
  DeviceScratch scalars;         // tensor_a[2], tensor_b[2], alpha
  // --stats-every: the device statistics' scratch (stats_cuda.hpp)
  StatsScratch stats;
  // a host copy for capture (analyze), kept between layers: a fresh vector per download faults
  // in new pages each time
  std::vector<float> host;
  QuantScratch* qs = nullptr;
  LinearWorkspace();
  ~LinearWorkspace();
  LinearWorkspace(const LinearWorkspace&) = delete;
  LinearWorkspace& operator=(const LinearWorkspace&) = delete;
};

// A read-only device tensor of a stored type (activations may be bf16).
struct DevTensor {
  const void* p = nullptr;
  GemmDtype dtype = GemmDtype::FP32;
};

class CudaLinear {
 public:
  CudaLinear() = default;
  CudaLinear(std::string name, int64_t in, int64_t out, uint32_t id) : name_(std::move(name)), in_(in), out_(out), id_(id) {}
  void bind(float* w, float* dw) { w_ = w; dw_ = dw; }
  void set_recipe(const Recipe& r);
  const std::string& name() const { return name_; }

  // y[t, out] = x[t, in] · Wᵀ (+ y.c, a residual added in the GEMM's epilogue); x must stay
  // alive until backward.
  void forward(DevTensor x, const GemmOutput& y, int64_t t, const StepContext& ctx, LinearWorkspace& ws,
               cudaStream_t st);
  // dx = dY·W (when dx != nullptr) of type dx_type, dW += dYᵀ·X (fp32).
  void backward(DevTensor dy, void* dx, GemmDtype dx_type, int64_t t, const StepContext& ctx, LinearWorkspace& ws,
                cudaStream_t st);
  // fp32 in and out (the CPU twin's interface).
  void forward(const float* x, float* y, int64_t t, const StepContext& ctx, LinearWorkspace& ws, cudaStream_t st) {
    forward({x, GemmDtype::FP32}, {y, GemmDtype::FP32, nullptr}, t, ctx, ws, st);
  }
  void backward(const float* dy, float* dx, int64_t t, const StepContext& ctx, LinearWorkspace& ws, cudaStream_t st) {
    backward({dy, GemmDtype::FP32}, dx, GemmDtype::FP32, t, ctx, ws, st);
  }
  // SPEC §6 statistics of the last forward/backward with ctx.collect_stats (host-side math on
  // downloaded operands, as the CPU layer records them).
  std::vector<OperandStats>& stats() { return stats_; }
  // nibble analyze's hook: x, w (forward) and dy (backward) downloaded as floats.
  void set_capture(QuantLinear<float>::Capture c) { capture_ = std::move(c); }

 private:
  const float* signs(const StepContext& ctx, Role role, int n);
  struct Operands;
  // b_ready: B already built (W quantized in 2D tiles by the forward, read transposed).
  Operands gemm(const GemmSpec& g, struct OperandJob& a, struct OperandJob& b, const GemmOutput& out, int64_t m,
                int64_t n, int64_t k, LinearWorkspace& ws, cudaStream_t st, const struct PreparedOperand* b_ready = nullptr,
                const float* b_tensor = nullptr);

  std::string name_;
  int64_t in_ = 0, out_ = 0;
  uint32_t id_ = 0;
  float* w_ = nullptr;
  float* dw_ = nullptr;
  DevTensor x_;
  Recipe recipe_;
  DeviceScratch w16_;           // bf16 W of this step's forward, reused by dgrad when both read it plain
  bool w16_valid_ = false;
  // W quantized in 2D tiles by this step's forward (and its amax, S_dec): dgrad's Wᵀ is the same
  // codes and scales transposed, so dgrad reads it through the GEMM's layout flag.
  DeviceScratch wq_, wq_tensor_;
  bool wq_valid_ = false;
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
  // the wall time of this layer's --stats-every statistics in the current collection
  double stats_s_ = 0;
  QuantLinear<float>::Capture capture_;
};

}  // namespace nibble::cuda
