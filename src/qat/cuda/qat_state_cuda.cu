// QatState on the GPU (qat_state.hpp): W, α, their AdamW moments and the step's point and
// gradients live in device memory beside the CUDA engine's weights, so a QAT step moves nothing
// across PCIe. Every kernel mirrors a loop of the CPU reference (qat_state_cpu.cpp,
// weight_quant.cpp) through the shared scalar code of qat_scalar.hpp:
//   the noisy point     — the same Philox draws (philox_normal_hd), rounded to float and added;
//   Ŵ and WinQ's reset  — qat_fake_quant / qat_winq_reset per element, bit-identical;
//   dW                  — the straight-through mask, bit-identical;
//   dα                  — one block per scale, Σ dŴ·∂Ŵ/∂α in float64 summed in a fixed tree
//                         (the CPU sums in row order: a few ulps of the double apart);
//   AdamW, the norm     — the engine's kernels (AdamW bit-identical to the CPU).
// The host waits only for the gradient norm (clipping needs it).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/cuda/check.cuh"
#include "core/cuda/scratch.cuh"
#include "nibble/error.hpp"
#include "nibble/philox.hpp"
#include "nibble/qat/qat_scalar.hpp"
#include "nibble/qat/qat_state.hpp"
#include "ops/cuda/adam_chunks.cuh"
#include "ops/cuda/ops_cuda.hpp"

namespace nibble {
namespace {

namespace gops = cuda::ops;
using cuda::DeviceScratch;

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) { return static_cast<unsigned>(std::max<int64_t>((n + kThreads - 1) / kThreads, 1)); }

// One projection [rows, cols] with gpr scales per row (groups of g = cols / gpr columns).
struct ProjView {
  int64_t rows, cols, gpr, g;
  QatLevels levels;
  __device__ int64_t scale_of(int64_t i) const { return (i / cols) * gpr + (i % cols) / g; }
};

__global__ void add_weight_noise_kernel(const float* w, float* wn, int64_t begin, int64_t n, double sigma, uint64_t seed,
                                        uint32_t stream) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= n) return;
  const int64_t i = begin + k;
  wn[i] = w[i] + static_cast<float>(sigma * philox_normal_hd(seed, stream, static_cast<uint64_t>(i)));
}

__global__ void add_scale_noise_kernel(const float* alpha, float* an, int64_t n, double sigma, uint64_t seed,
                                       uint32_t stream) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float a = alpha[i] + static_cast<float>(sigma * philox_normal_hd(seed, stream, static_cast<uint64_t>(i)));
  an[i] = fmaxf(a, 1e-8f);
}

__global__ void fake_quant_kernel(const float* w, const float* alpha, float* w_hat, ProjView p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.rows * p.cols) return;
  w_hat[i] = qat_fake_quant(p.levels, w[i], alpha[p.scale_of(i)]);
}

__global__ void winq_reset_kernel(float* w, const float* alpha, ProjView p, double a) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.rows * p.cols) return;
  w[i] = qat_winq_reset(p.levels, w[i], alpha[p.scale_of(i)], a);
}

// One block per scale (row r, group k): dW on its g elements and dα = g_scale·Σ dŴ·∂Ŵ/∂α.
__global__ void qat_backward_kernel(const float* w, const float* alpha, const float* d_what, float* d_w, float* d_alpha,
                                    ProjView p) {
  __shared__ double part[kThreads];
  const int64_t s = blockIdx.x;  // r·gpr + k
  const int64_t r = s / p.gpr, k = s % p.gpr;
  const double a = alpha[s];
  double acc = 0;
  for (int64_t j = k * p.g + threadIdx.x; j < (k + 1) * p.g; j += blockDim.x) {
    const int64_t i = r * p.cols + j;
    bool inside;
    double da;
    qat_quantize(p.levels, w[i] / a, inside, da);
    const double gy = d_what[i];
    d_w[i] = inside ? static_cast<float>(gy) : 0.0f;
    acc += gy * da;
  }
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int h = blockDim.x / 2; h > 0; h /= 2) {
    if (static_cast<int>(threadIdx.x) < h) part[threadIdx.x] += part[threadIdx.x + h];
    __syncthreads();
  }
  if (threadIdx.x == 0) d_alpha[s] = static_cast<float>(0.0 + p.levels.grad_scale * part[0]);
}

__global__ void clamp_scales_kernel(float* alpha, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) alpha[i] = fmaxf(alpha[i], 1e-8f);
}

class CudaQatState final : public QatState {
 public:
  CudaQatState(const QatLayout& l, cudaStream_t st) : QatState(l), st_(st) {
    const auto np = static_cast<size_t>(std::max<int64_t>(l.num_params, 1));
    const auto na = static_cast<size_t>(std::max<int64_t>(l.num_scales, 1));
    for (DeviceScratch* d : {&w_, &mw_, &vw_, &wn_, &gw_}) d->as<float>(np);
    for (DeviceScratch* d : {&alpha_, &ma_, &va_, &an_, &ga_}) d->as<float>(na);
    for (DeviceScratch* d : {&mw_, &vw_, &ma_, &va_})
      NIBBLE_CUDA_CHECK(cudaMemsetAsync(d->get<void>(), 0, d->bytes(), st_));
    std::vector<cuda::AdamTensor> tensors;
    for (const auto& t : l.tensors) tensors.push_back({t.offset, t.numel, t.decay});
    w_chunks_.build(tensors, st_);
    a_chunks_.build({cuda::AdamTensor{0, l.num_scales, false}}, st_);
    for (const auto& q : l.projections) {
      const int64_t gpr = l.spec.groups_per_row(q.cols);
      views_.push_back(ProjView{q.rows, q.cols, gpr, q.cols / gpr, qat_levels_of(l.spec, q.rows, q.cols)});
    }
    norm_.as<double>(static_cast<size_t>(gops::global_norm_partials()) + 2);
    NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st_));
  }

  void set(const QatHostState& s) override {
    check_sizes(s);
    NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st_));
    put(w_, s.w);
    put(mw_, s.m_w);
    put(vw_, s.v_w);
    put(alpha_, s.alpha);
    put(ma_, s.m_alpha);
    put(va_, s.v_alpha);
  }
  QatHostState get() const override {
    NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st_));
    QatHostState s;
    s.w = take(w_, layout_.num_params);
    s.m_w = take(mw_, layout_.num_params);
    s.v_w = take(vw_, layout_.num_params);
    s.alpha = take(alpha_, layout_.num_scales);
    s.m_alpha = take(ma_, layout_.num_scales);
    s.v_alpha = take(va_, layout_.num_scales);
    return s;
  }

  std::vector<float> scales() const override {
    NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st_));
    return take(alpha_, layout_.num_scales);
  }

  void quantized_weights(const QatNoise& noise, float* w_hat) override {
    const float* pw = w_.get<float>();
    const float* pa = alpha_.get<float>();
    if (noise.on) {
      for (const auto& q : layout_.projections) {
        const int64_t n = q.rows * q.cols;
        add_weight_noise_kernel<<<blocks_for(n), kThreads, 0, st_>>>(pw, wn_.get<float>(), q.offset, n, noise.sigma_w,
                                                                    noise.seed, noise.stream);
        NIBBLE_CUDA_CHECK_LAUNCH();
      }
      if (layout_.num_scales > 0) {
        add_scale_noise_kernel<<<blocks_for(layout_.num_scales), kThreads, 0, st_>>>(
            pa, an_.get<float>(), layout_.num_scales, noise.sigma_s, noise.seed ^ kQatScaleNoiseSeedXor, noise.stream);
        NIBBLE_CUDA_CHECK_LAUNCH();
      }
      pw = wn_.get<float>();
      pa = an_.get<float>();
    }
    point_w_ = pw;
    point_a_ = pa;
    // the tensors that stay full precision: W itself (the projections are overwritten next)
    NIBBLE_CUDA_CHECK(cudaMemcpyAsync(w_hat, w_.get<float>(), static_cast<size_t>(layout_.num_params) * sizeof(float),
                                      cudaMemcpyDeviceToDevice, st_));
    for (size_t i = 0; i < views_.size(); ++i) {
      const auto& q = layout_.projections[i];
      fake_quant_kernel<<<blocks_for(q.rows * q.cols), kThreads, 0, st_>>>(pw + q.offset, pa + q.alpha_offset,
                                                                           w_hat + q.offset, views_[i]);
      NIBBLE_CUDA_CHECK_LAUNCH();
    }
  }

  double backward(const float* d_what) override {
    if (!point_w_) fail("QAT state: backward() before quantized_weights()");
    NIBBLE_CUDA_CHECK(cudaMemcpyAsync(gw_.get<float>(), d_what, static_cast<size_t>(layout_.num_params) * sizeof(float),
                                      cudaMemcpyDeviceToDevice, st_));
    for (size_t i = 0; i < views_.size(); ++i) {
      const auto& q = layout_.projections[i];
      qat_backward_kernel<<<static_cast<unsigned>(q.alpha_count), kThreads, 0, st_>>>(
          point_w_ + q.offset, point_a_ + q.alpha_offset, d_what + q.offset, gw_.get<float>() + q.offset,
          ga_.get<float>() + q.alpha_offset, views_[i]);
      NIBBLE_CUDA_CHECK_LAUNCH();
    }
    double* part = norm_.get<double>();
    double* sums = part + gops::global_norm_partials();
    gops::global_sumsq(gw_.get<float>(), layout_.num_params, part, sums, st_);
    gops::global_sumsq(ga_.get<float>(), layout_.num_scales, part, sums + 1, st_);
    double h[2] = {0, 0};
    NIBBLE_CUDA_CHECK(cudaMemcpyAsync(h, sums, sizeof h, cudaMemcpyDeviceToHost, st_));
    NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st_));
    return std::sqrt(h[0] + h[1]);
  }

  void update(const QatAdam& h) override {
    gops::adamw_update(w_.get<float>(), gw_.get<float>(), mw_.get<float>(), vw_.get<float>(), w_chunks_.view(), h.lr,
                       h.beta1, h.beta2, h.eps, h.weight_decay, h.t, h.grad_scale, st_);
    if (layout_.num_scales == 0) return;
    gops::adamw_update(alpha_.get<float>(), ga_.get<float>(), ma_.get<float>(), va_.get<float>(), a_chunks_.view(), h.lr * h.scale_lr_mult,
                       h.beta1, h.beta2, h.eps, 0.0f, h.t, h.grad_scale, st_);
    clamp_scales_kernel<<<blocks_for(layout_.num_scales), kThreads, 0, st_>>>(alpha_.get<float>(), layout_.num_scales);
    NIBBLE_CUDA_CHECK_LAUNCH();
  }

  void winq_reset(double a) override {
    if (!(a >= 0 && a <= 1)) fail("WinQ reset weight a = ", a, " must be in [0, 1]");
    for (size_t i = 0; i < views_.size(); ++i) {
      const auto& q = layout_.projections[i];
      winq_reset_kernel<<<blocks_for(q.rows * q.cols), kThreads, 0, st_>>>(w_.get<float>() + q.offset,
                                                                           alpha_.get<float>() + q.alpha_offset, views_[i], a);
      NIBBLE_CUDA_CHECK_LAUNCH();
    }
  }

 private:
  static void put(DeviceScratch& d, const std::vector<float>& h) {
    if (!h.empty()) NIBBLE_CUDA_CHECK(cudaMemcpy(d.get<float>(), h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
  }
  static std::vector<float> take(const DeviceScratch& d, int64_t n) {
    std::vector<float> h(static_cast<size_t>(n));
    if (n > 0) NIBBLE_CUDA_CHECK(cudaMemcpy(h.data(), d.get<float>(), h.size() * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
  }

  cudaStream_t st_;
  DeviceScratch w_, mw_, vw_, alpha_, ma_, va_;  // the state
  DeviceScratch wn_, an_;                        // WinQ's noisy point
  DeviceScratch gw_, ga_, norm_;                 // dW, dα, the norm's partial sums
  const float* point_w_ = nullptr;               // where the last Ŵ came from (W or the noisy point)
  const float* point_a_ = nullptr;
  cuda::DeviceAdamChunks w_chunks_, a_chunks_;  // AdamW of W (per-tensor decay) and of α
  std::vector<ProjView> views_;
};

}  // namespace

std::unique_ptr<QatState> make_cuda_qat_state(const QatLayout& layout, void* stream) {
  return std::make_unique<CudaQatState>(layout, static_cast<cudaStream_t>(stream));
}

}  // namespace nibble
