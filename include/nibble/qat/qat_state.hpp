#pragma once
// The state and per-step math of quantization-aware training (SPEC §7) on one device: latent
// fp32 weights W, the learnable scales α and both AdamW states. The engine only ever sees the
// fake-quantized weights Ŵ; this object builds them and turns the engine's dL/dŴ into updates
// of W (straight-through) and α. Two implementations, tested against each other:
//   cpu  — host arrays, the reference (src/qat/qat_state_cpu.cpp);
//   cuda — device arrays next to the CUDA engine's weights (src/qat/cuda/qat_state_cuda.cu),
//          so a QAT step moves nothing across PCIe.
// Pointers passed to quantized_weights()/backward() live where the state does (host for cpu,
// device for cuda).
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "nibble/qat/weight_quant.hpp"

namespace nibble {

// What is quantized: every projection matrix (offset into the flat parameters, its shape, where
// its scales start in the flat α), and every parameter tensor for the optimizer (offset, size,
// weight decay or not).
struct QatLayout {
  struct Projection {
    int64_t offset = 0, rows = 0, cols = 0, alpha_offset = 0, alpha_count = 0;
  };
  struct Tensor {
    int64_t offset = 0, numel = 0;
    bool decay = false;
  };
  QatSpec spec;
  std::vector<Projection> projections;
  std::vector<Tensor> tensors;
  int64_t num_params = 0, num_scales = 0;
};

// WinQ's noise at one step: W̃ = W + σ_w ξ on the projections, α̃ = max(α + σ_s ζ, 1e-8), with ξ, ζ
// standard normals from Philox (seed, stream, element) — the same draws on every device.
struct QatNoise {
  bool on = false;
  double sigma_w = 0, sigma_s = 0;
  uint64_t seed = 0;
  uint32_t stream = 0;
};

struct QatAdam {
  float lr = 0, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0;
  float scale_lr_mult = 1;  // α's learning rate is lr · this (the scales' AdamW has no decay)
  float grad_scale = 1;  // clipping, applied to dW and dα before the moments
  int64_t t = 1;         // the step, from 1
};

// Host copies of the whole state (checkpoints, resume).
struct QatHostState {
  std::vector<float> w, alpha, m_w, v_w, m_alpha, v_alpha;
};

class QatState {
 public:
  virtual ~QatState() = default;
  const QatLayout& layout() const { return layout_; }

  virtual void set(const QatHostState& s) = 0;
  virtual QatHostState get() const = 0;
  // Host copy of α alone (num_scales floats): the trainer logs how far the scales have moved.
  virtual std::vector<float> scales() const = 0;

  // Ŵ into `w_hat` (num_params floats): the projections fake-quantized, the rest copied from W;
  // with noise on, at the noisy point W̃, α̃, which backward() then differentiates at.
  virtual void quantized_weights(const QatNoise& noise, float* w_hat) = 0;
  // From dL/dŴ (num_params floats) at the last quantized_weights() point: dW (straight-through
  // on the projections, the gradient itself elsewhere) and dα; returns sqrt(|dW|² + |dα|²).
  virtual double backward(const float* d_what) = 0;
  // AdamW on W (decay where the layout says) and on α (no decay), then α ≥ 1e-8.
  virtual void update(const QatAdam& h) = 0;
  // WinQ's reset: W ← a·W + (1 − a)·Q(W; α) on the projections.
  virtual void winq_reset(double a) = 0;

 protected:
  explicit QatState(QatLayout l) : layout_(std::move(l)) {}
  void check_sizes(const QatHostState& s) const;  // errors name what does not fit the layout
  QatLayout layout_;
};

std::unique_ptr<QatState> make_cpu_qat_state(const QatLayout& layout);
// `stream`: the CUDA stream to run on (the engine's, so the order with its kernels holds);
// throws in a build without CUDA.
std::unique_ptr<QatState> make_cuda_qat_state(const QatLayout& layout, void* stream);

}  // namespace nibble
