// The CPU reference of QatState (qat_state.hpp): host arrays and the functions of
// weight_quant.hpp.
#include <algorithm>

#include "nibble/error.hpp"
#include "nibble/ops/ops.hpp"
#include "nibble/philox.hpp"
#include "nibble/qat/qat_scalar.hpp"
#include "nibble/qat/qat_state.hpp"

namespace nibble {
namespace {


class CpuQatState final : public QatState {
 public:
  explicit CpuQatState(const QatLayout& l) : QatState(l) {
    const auto np = static_cast<size_t>(l.num_params), na = static_cast<size_t>(l.num_scales);
    for (auto* v : {&s_.w, &s_.m_w, &s_.v_w, &gw_}) v->assign(np, 0.0f);
    for (auto* v : {&s_.alpha, &s_.m_alpha, &s_.v_alpha, &ga_}) v->assign(na, 0.0f);
  }

  void set(const QatHostState& s) override {
    check_sizes(s);
    s_ = s;
    point_w_ = point_a_ = nullptr;  // a new state: the next point is taken from it
  }
  QatHostState get() const override { return s_; }
  std::vector<float> scales() const override { return s_.alpha; }

  void quantized_weights(const QatNoise& noise, float* w_hat) override {
    // the point: (W, α) itself, or WinQ's noisy copy of it
    point_w_ = s_.w.data();
    point_a_ = s_.alpha.data();
    if (noise.on) {
      wn_ = s_.w;
      an_ = s_.alpha;
      for (const auto& q : layout_.projections)
        for (int64_t i = q.offset; i < q.offset + q.rows * q.cols; ++i)
          wn_[static_cast<size_t>(i)] +=
              static_cast<float>(noise.sigma_w * philox_normal_hd(noise.seed, noise.stream, static_cast<uint64_t>(i)));
      for (size_t i = 0; i < an_.size(); ++i) {
        an_[i] += static_cast<float>(noise.sigma_s * philox_normal_hd(noise.seed ^ kQatScaleNoiseSeedXor, noise.stream, i));
        an_[i] = std::max(an_[i], 1e-8f);  // a scale stays positive
      }
      point_w_ = wn_.data();
      point_a_ = an_.data();
    }
    std::copy(point_w_, point_w_ + layout_.num_params, w_hat);
    for (const auto& q : layout_.projections)
      qat_forward(layout_.spec, point_w_ + q.offset, point_a_ + q.alpha_offset, q.rows, q.cols, w_hat + q.offset);
  }

  double backward(const float* d_what) override {
    if (!point_w_) fail("QAT state: backward() before quantized_weights()");
    std::copy(d_what, d_what + layout_.num_params, gw_.begin());
    std::fill(ga_.begin(), ga_.end(), 0.0f);
    for (const auto& q : layout_.projections)
      qat_backward(layout_.spec, point_w_ + q.offset, point_a_ + q.alpha_offset, q.rows, q.cols, d_what + q.offset,
                   gw_.data() + q.offset, ga_.data() + q.alpha_offset);
    const float* bufs[2] = {gw_.data(), ga_.data()};
    const int64_t sizes[2] = {layout_.num_params, layout_.num_scales};
    return ops::global_norm(bufs, sizes, 2);
  }

  void update(const QatAdam& h) override {
    if (h.grad_scale != 1.0f) {
      ops::scale_inplace(gw_.data(), layout_.num_params, h.grad_scale);
      ops::scale_inplace(ga_.data(), layout_.num_scales, h.grad_scale);
    }
    for (const auto& t : layout_.tensors)
      ops::adamw_update(s_.w.data() + t.offset, gw_.data() + t.offset, s_.m_w.data() + t.offset, s_.v_w.data() + t.offset,
                        t.numel, h.lr, h.beta1, h.beta2, h.eps, t.decay ? h.weight_decay : 0.0f, h.t);
    if (layout_.num_scales > 0)
      ops::adamw_update(s_.alpha.data(), ga_.data(), s_.m_alpha.data(), s_.v_alpha.data(), layout_.num_scales, h.lr * h.scale_lr_mult,
                        h.beta1, h.beta2, h.eps, 0.0f, h.t);
    for (float& a : s_.alpha) a = std::max(a, 1e-8f);
  }

  void winq_reset(double a) override {
    for (const auto& q : layout_.projections)
      nibble::winq_reset(layout_.spec, s_.w.data() + q.offset, s_.alpha.data() + q.alpha_offset, q.rows, q.cols, a);
  }

 private:
  QatHostState s_;
  std::vector<float> wn_, an_;                // WinQ's noisy point
  const float* point_w_ = nullptr;            // where the last quantized_weights() was taken
  const float* point_a_ = nullptr;
  std::vector<float> gw_, ga_;  // dW, dα of the last backward()
};

}  // namespace

void QatState::check_sizes(const QatHostState& s) const {
  for (const auto* v : {&s.w, &s.m_w, &s.v_w})
    if (static_cast<int64_t>(v->size()) != layout_.num_params)
      fail("QAT state: ", v->size(), " weights given, the model has ", layout_.num_params);
  for (const auto* v : {&s.alpha, &s.m_alpha, &s.v_alpha})
    if (static_cast<int64_t>(v->size()) != layout_.num_scales)
      fail("QAT state: ", v->size(), " scales given, the model has ", layout_.num_scales);
}

std::unique_ptr<QatState> make_cpu_qat_state(const QatLayout& layout) { return std::make_unique<CpuQatState>(layout); }

}  // namespace nibble
