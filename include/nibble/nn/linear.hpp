#pragma once
// QuantLinear: a bias-free linear layer y = x·Wᵀ whose three training GEMMs (fprop, dgrad,
// wgrad) follow a Recipe exactly as SPEC §5 says. On the CPU a 4-bit GEMM multiplies the
// exactly dequantized operands in fp32 (the CUDA backend runs the same operands through a
// bf16 GEMM with fp32 accumulation).
//
// Random numbers (SR, RHT signs, the spectral split's test matrix) come from Philox with the
// run's seed and a 32-bit stream derived from (step, linear id, role), so a step's numerics
// never depend on the order in which layers or threads run:
//   stream = (step mod 2^20) << 12 | (linear_id mod 256) << 4 | role
// RHT signs do not depend on the step (one fixed sign vector per layer and GEMM).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "nibble/json.hpp"
#include "nibble/nn/recipe.hpp"

namespace nibble {

enum class Role : uint8_t {
  FpropX = 0, FpropW = 1, DgradDy = 2, DgradW = 3, WgradDy = 4, WgradX = 5,
  RhtFprop = 6, RhtDgrad = 7, RhtWgrad = 8, Spectral = 9,
};
uint32_t philox_stream(uint64_t step, uint32_t linear_id, Role role);

// The rank of a spectral split of a [rows, cols] dY: the operand's spectral_rank, or for -1
// (auto) min(64, cols/16) clamped to [1, min(rows, cols)]; errors when it exceeds min(rows, cols).
int spectral_rank_for(const OperandSpec& o, int64_t rows, int64_t cols);

// What a step needs to know about randomness and diagnostics.
struct StepContext {
  uint64_t seed = 0;
  uint64_t step = 0;
  bool collect_stats = false;  // record SPEC §6 statistics of the operands this step
};

// Statistics of one operand of one GEMM of one layer at one step.
struct OperandStats {
  std::string layer, gemm, operand;  // e.g. "model.layers.0.mlp.up_proj", "fprop", "x"
  Json stats;
};

template <class T>
class QuantLinear {
 public:
  QuantLinear() = default;
  QuantLinear(std::string name, int64_t in, int64_t out, uint32_t id) : name_(std::move(name)), in_(in), out_(out), id_(id) {}

  void bind(T* w, T* dw) { w_ = w; dw_ = dw; }
  // Float layers accept any recipe; double layers (gradient checks) only exact fp32 operands.
  void set_recipe(const Recipe& r);

  const std::string& name() const { return name_; }
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }

  // y[t, out] = x[t, in] · Wᵀ. Keeps x (by pointer: it must stay alive until backward).
  void forward(const T* x, T* y, int64_t t, const StepContext& ctx);
  // dx[t, in] = dy · W (written, when dx != nullptr); dW += dyᵀ · x.
  void backward(const T* dy, T* dx, int64_t t, const StepContext& ctx);

  // Statistics recorded by the last forward/backward with ctx.collect_stats.
  std::vector<OperandStats>& stats() { return stats_; }

  // Analysis hook (nibble analyze): called with each raw operand as it reaches the layer —
  // "x" [t, in] and "w" [out, in] in forward, "dy" [t, out] in backward (float layers only).
  using Capture = std::function<void(const std::string& layer, const std::string& operand, const float* data,
                                     int64_t rows, int64_t cols)>;
  void set_capture(Capture c) { capture_ = std::move(c); }
  // QAT's per-token activation fake quantization of this layer's input (0 = off; float layers).
  void set_activation_bits(int bits) { act_bits_ = bits; }

 private:
  std::string name_;
  int64_t in_ = 0, out_ = 0;
  uint32_t id_ = 0;
  T* w_ = nullptr;
  T* dw_ = nullptr;
  const T* x_ = nullptr;  // saved input
  Recipe recipe_;
  bool exact_ = false;     // every operand fp32, no transform: plain GEMMs
  std::vector<float> signs_fprop_, signs_dgrad_, signs_wgrad_;
  std::vector<OperandStats> stats_;
  Capture capture_;
  int act_bits_ = 0;
  std::vector<T> xq_;  // the fake-quantized input (kept for wgrad)
};

}  // namespace nibble
