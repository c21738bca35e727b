// QuantLinear: the three training GEMMs of a linear layer under a Recipe (SPEC §4–5).
#include "nibble/nn/linear.hpp"

#include <algorithm>
#include <cmath>

#include "nibble/dtype.hpp"
#include "nibble/error.hpp"
#include "nibble/ops/ops.hpp"
#include "nibble/qat/act_quant.hpp"
#include "nibble/quant/centering.hpp"
#include "nibble/quant/rht.hpp"
#include "nibble/quant/spectral.hpp"
#include "nibble/quant/stats.hpp"

namespace nibble {

uint32_t philox_stream(uint64_t step, uint32_t linear_id, Role role) {
  return static_cast<uint32_t>(((step & 0xFFFFFu) << 12) | ((linear_id & 0xFFu) << 4) |
                               static_cast<uint32_t>(role));
}

namespace {

bool operand_exact(const OperandSpec& o) {
  return o.kind == OperandKind::FP32 && !o.center && o.spectral_rank == 0;
}
bool gemm_exact(const GemmSpec& g) { return operand_exact(g.a) && operand_exact(g.b) && g.rht == 0; }

// x ← bf16(x), RNE, in place: the same bits as bf16_to_float(bf16_from_float(x)), written on
// the bit pattern so the loop vectorises (NaN stays a quiet NaN).
void round_to_bf16(float* a, int64_t n) {
  uint32_t* u = reinterpret_cast<uint32_t*>(a);
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t b = u[i];
    const uint32_t rounded = (b + 0x7fffu + ((b >> 16) & 1u)) & 0xffff0000u;
    const uint32_t quiet_nan = (b | 0x00400000u) & 0xffff0000u;
    u[i] = (b & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded;
  }
}

// The operand as the GEMM sees it: cast to bf16 or quantize-dequantized (in place).
void represent(float* a, int64_t rows, int64_t cols, const OperandSpec& o, uint64_t seed, uint32_t stream) {
  switch (o.kind) {
    case OperandKind::FP32:
      return;
    case OperandKind::BF16:
      round_to_bf16(a, rows * cols);
      return;
    case OperandKind::QUANT: {
      QuantSpec q = o.quant;
      q.seed = seed;
      q.stream = stream;
      quantize_dequantize(a, rows, cols, q, a);
      return;
    }
  }
}

std::vector<float> rht_signs_for(const StepContext& ctx, uint32_t id, Role role, int n) {
  return rht_signs(n, ctx.seed, philox_stream(0, id, role));
}

// Column means of a [rows, cols] matrix (mean over tokens when rows are tokens).
std::vector<float> centre_columns(float* a, int64_t rows, int64_t cols) {
  std::vector<float> mu = column_mean(a, rows, cols);
  subtract_column_vector(a, rows, cols, mu.data());
  return mu;
}

// Row means of a [rows, cols] matrix, subtracted (centring along the reduction dim).
std::vector<float> centre_rows(float* a, int64_t rows, int64_t cols) {
  std::vector<float> mu(static_cast<size_t>(rows));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0;
    for (int64_t c = 0; c < cols; ++c) s += a[r * cols + c];
    const float m = static_cast<float>(s / static_cast<double>(cols));
    mu[static_cast<size_t>(r)] = m;
    for (int64_t c = 0; c < cols; ++c) a[r * cols + c] -= m;
  }
  return mu;
}

}  // namespace

int spectral_rank_for(const OperandSpec& o, int64_t rows, int64_t cols) {
  const int64_t cap = std::min(rows, cols);
  const int64_t k = o.spectral_rank > 0 ? o.spectral_rank : std::clamp<int64_t>(std::min<int64_t>(64, cols / 16), 1, cap);
  if (k > cap) fail("spectral rank ", k, " exceeds min(tokens, features) = ", cap);
  return static_cast<int>(k);
}

namespace {

// Representation error of an operand as the GEMM received it (SPEC §6).
Json operand_stats(const float* before, const float* after, int64_t rows, int64_t cols) {
  return error_stats(before, after, rows * cols).to_json();
}

}  // namespace

// In float64 (the gradient checks) a bf16 cast is the identity: the check differentiates the
// bf16 recipe's graph exactly. Quantizers and transforms have no float64 version.
static bool gemm_exact_in_double(const GemmSpec& g) {
  auto ok = [](const OperandSpec& o) { return o.kind != OperandKind::QUANT && !o.center && o.spectral_rank == 0; };
  return ok(g.a) && ok(g.b) && g.rht == 0;
}

template <class T>
void QuantLinear<T>::set_recipe(const Recipe& r) {
  recipe_ = r;
  exact_ = gemm_exact(r.fprop) && gemm_exact(r.dgrad) && gemm_exact(r.wgrad);
  if constexpr (!std::is_same_v<T, float>) {
    if (!gemm_exact_in_double(r.fprop) || !gemm_exact_in_double(r.dgrad) || !gemm_exact_in_double(r.wgrad))
      fail("layer ", name_, ": float64 layers (gradient checks) run only fp32/bf16 recipes, not '", r.name, "'");
  }
}

template <class T>
void QuantLinear<T>::forward(const T* x, T* y, int64_t t, const StepContext& ctx) {
  x_ = x;
  if constexpr (!std::is_same_v<T, float>) {
    ops::matmul_nt(x, w_, y, t, out_, in_);
    (void)ctx;
  } else {
    if (act_bits_ > 0) {
      xq_.resize(static_cast<size_t>(t * in_));
      fake_quantize_rows(x, t, in_, act_bits_, xq_.data());
      x = xq_.data();
      x_ = x;  // wgrad multiplies the operand the forward used
    }
    if (capture_) {
      capture_(name_, "x", x, t, in_);
      capture_(name_, "w", w_, out_, in_);
    }
    if (exact_) {
      ops::matmul_nt(x, w_, y, t, out_, in_);
      return;
    }
    const GemmSpec& g = recipe_.fprop;
    std::vector<float> a(x, x + t * in_), b(w_, w_ + out_ * in_);
    std::vector<float> mu;
    if (g.a.center) mu = centre_columns(a.data(), t, in_);
    if (g.rht) {
      const auto d = rht_signs_for(ctx, id_, Role::RhtFprop, g.rht);
      rht_forward(a.data(), t, in_, g.rht, d.data());
      rht_forward(b.data(), out_, in_, g.rht, d.data());
    }
    std::vector<float> a0, b0;
    if (ctx.collect_stats) { a0 = a; b0 = b; }
    represent(a.data(), t, in_, g.a, ctx.seed, philox_stream(ctx.step, id_, Role::FpropX));
    represent(b.data(), out_, in_, g.b, ctx.seed, philox_stream(ctx.step, id_, Role::FpropW));
    if (ctx.collect_stats) {
      // anisotropy of the raw input, and the representation error of the operands as the
      // GEMM received them (after centring and RHT)
      stats_.clear();
      stats_.push_back({name_, "fprop", "x", operand_stats(a0.data(), a.data(), t, in_)});
      const Json aniso = anisotropy_stats(x, t, in_, g.a.quant.block, kStatsEveryPowerIters).to_json();
      for (const auto& [k, v] : aniso.as_object()) stats_.back().stats[k] = v;
      stats_.push_back({name_, "fprop", "w", operand_stats(b0.data(), b.data(), out_, in_)});
    }
    ops::matmul_nt(a.data(), b.data(), y, t, out_, in_);
    if (g.a.center) {
      const std::vector<float> corr = fprop_correction(w_, out_, in_, mu.data());
      add_column_vector(y, t, out_, corr.data());
    }
  }
}

template <class T>
void QuantLinear<T>::backward(const T* dy, T* dx, int64_t t, const StepContext& ctx) {
  NIBBLE_CHECK(x_ != nullptr, "backward before forward in ", name_);
  if constexpr (!std::is_same_v<T, float>) {
    (void)ctx;
    std::vector<T> wt(static_cast<size_t>(in_ * out_)), dyt(static_cast<size_t>(out_ * t)), xt(static_cast<size_t>(in_ * t));
    if (dx) {
      ops::transpose(w_, wt.data(), out_, in_);
      ops::matmul_nt(dy, wt.data(), dx, t, in_, out_);
    }
    ops::transpose(dy, dyt.data(), t, out_);
    ops::transpose(x_, xt.data(), t, in_);
    ops::matmul_nt(dyt.data(), xt.data(), dw_, out_, in_, t, /*accumulate=*/true);
  } else {
    if (capture_) capture_(name_, "dy", dy, t, out_);
    const Recipe& r = recipe_;
    std::vector<float> wt(static_cast<size_t>(in_ * out_));
    ops::transpose(w_, wt.data(), out_, in_);
    if (exact_) {
      if (dx) ops::matmul_nt(dy, wt.data(), dx, t, in_, out_);
      std::vector<float> dyt(static_cast<size_t>(out_ * t)), xt(static_cast<size_t>(in_ * t));
      ops::transpose(dy, dyt.data(), t, out_);
      ops::transpose(x_, xt.data(), t, in_);
      ops::matmul_nt(dyt.data(), xt.data(), dw_, out_, in_, t, true);
      return;
    }
    // Spectral split of dY (computed once, shared by dgrad and wgrad): dY = U S Vᵀ + R.
    const bool split = r.dgrad.a.spectral_rank != 0 || r.wgrad.a.spectral_rank != 0;
    LowRank lr;
    std::vector<float> resid;
    if (split) {
      const OperandSpec& o = r.dgrad.a.spectral_rank != 0 ? r.dgrad.a : r.wgrad.a;
      SpectralSpec s;
      s.rank = spectral_rank_for(o, t, out_);
      s.power_iters = o.power_iters;
      s.seed = ctx.seed;
      s.stream = philox_stream(ctx.step, id_, Role::Spectral);
      lr = randomized_svd(dy, t, out_, s);
      resid.assign(dy, dy + t * out_);
      lr.add_to(resid.data(), -1.0);
    }
    if (ctx.collect_stats) {
      stats_.push_back({name_, "dgrad", "dy",
                        anisotropy_stats(dy, t, out_, r.dgrad.a.quant.block, kStatsEveryPowerIters).to_json()});
    }
    // ---- dgrad: dX[t, in] = dY[t, out] · W, reduction over out ----------------------------
    if (dx) {
      const GemmSpec& g = r.dgrad;
      const float* src = g.a.spectral_rank != 0 ? resid.data() : dy;
      std::vector<float> a(src, src + t * out_), b = wt;  // b = Wᵀ [in, out]: W columnwise
      std::vector<float> nu;
      if (g.a.center) nu = centre_columns(a.data(), t, out_);
      if (g.rht) {
        const auto d = rht_signs_for(ctx, id_, Role::RhtDgrad, g.rht);
        rht_forward(a.data(), t, out_, g.rht, d.data());
        rht_forward(b.data(), in_, out_, g.rht, d.data());
      }
      std::vector<float> a0;
      if (ctx.collect_stats) a0 = a;
      represent(a.data(), t, out_, g.a, ctx.seed, philox_stream(ctx.step, id_, Role::DgradDy));
      represent(b.data(), in_, out_, g.b, ctx.seed, philox_stream(ctx.step, id_, Role::DgradW));
      if (ctx.collect_stats) {
        const Json ex = operand_stats(a0.data(), a.data(), t, out_);
        for (const auto& [k, v] : ex.as_object()) stats_.back().stats[k] = v;
      }
      ops::matmul_nt(a.data(), b.data(), dx, t, in_, out_);
      if (g.a.center) {
        const std::vector<float> corr = dgrad_correction(w_, out_, in_, nu.data());
        add_column_vector(dx, t, in_, corr.data());
      }
      if (g.a.spectral_rank != 0) {
        // dX += U S (Vᵀ W): [t, k] · [k, in], in fp32 with float64 accumulation.
        std::vector<float> us(static_cast<size_t>(t * lr.rank)), vtw(static_cast<size_t>(lr.rank * in_));
        for (int64_t i = 0; i < t; ++i)
          for (int k = 0; k < lr.rank; ++k) us[static_cast<size_t>(i * lr.rank + k)] = lr.u[static_cast<size_t>(i * lr.rank + k)] * lr.s[static_cast<size_t>(k)];
        std::vector<float> vt(static_cast<size_t>(lr.rank * out_));
        ops::transpose(lr.v.data(), vt.data(), out_, lr.rank);           // [k, out]
        ops::matmul_nt(vt.data(), wt.data(), vtw.data(), lr.rank, in_, out_);  // Vᵀ·(Wᵀ)ᵀ = VᵀW
        std::vector<float> vtwt(static_cast<size_t>(in_ * lr.rank));
        ops::transpose(vtw.data(), vtwt.data(), lr.rank, in_);
        ops::matmul_nt(us.data(), vtwt.data(), dx, t, in_, lr.rank, true);
      }
    }
    // ---- wgrad: dW[out, in] += dYᵀ · X, reduction over tokens ------------------------------
    {
      const GemmSpec& g = r.wgrad;
      const float* src = g.a.spectral_rank != 0 ? resid.data() : dy;
      std::vector<float> a(static_cast<size_t>(out_ * t)), b(static_cast<size_t>(in_ * t));
      ops::transpose(src, a.data(), t, out_);  // dYᵀ [out, t]
      ops::transpose(x_, b.data(), t, in_);    // Xᵀ  [in, t]
      const bool centred = g.a.center || g.b.center;
      std::vector<float> nu, mu;
      if (centred) {
        // dYᵀX = dY_cᵀ X_c + T ν μᵀ, and also with only one side centred (the cross
        // terms vanish because a centred operand sums to zero over tokens).
        nu = g.a.center ? centre_rows(a.data(), out_, t) : column_mean(src, t, out_);
        mu = g.b.center ? centre_rows(b.data(), in_, t) : column_mean(x_, t, in_);
      }
      if (g.rht) {
        const auto d = rht_signs_for(ctx, id_, Role::RhtWgrad, g.rht);
        rht_forward(a.data(), out_, t, g.rht, d.data());
        rht_forward(b.data(), in_, t, g.rht, d.data());
      }
      represent(a.data(), out_, t, g.a, ctx.seed, philox_stream(ctx.step, id_, Role::WgradDy));
      represent(b.data(), in_, t, g.b, ctx.seed, philox_stream(ctx.step, id_, Role::WgradX));
      ops::matmul_nt(a.data(), b.data(), dw_, out_, in_, t, /*accumulate=*/true);
      if (centred) add_wgrad_correction(dw_, out_, in_, t, nu.data(), mu.data());
      if (g.a.spectral_rank != 0) {
        // dW += V S (Uᵀ X): [out, k] · [k, in].
        std::vector<float> vs(static_cast<size_t>(out_ * lr.rank));
        for (int64_t i = 0; i < out_; ++i)
          for (int k = 0; k < lr.rank; ++k) vs[static_cast<size_t>(i * lr.rank + k)] = lr.v[static_cast<size_t>(i * lr.rank + k)] * lr.s[static_cast<size_t>(k)];
        std::vector<float> ut(static_cast<size_t>(lr.rank * t)), xt(static_cast<size_t>(in_ * t)), utx(static_cast<size_t>(lr.rank * in_));
        ops::transpose(lr.u.data(), ut.data(), t, lr.rank);  // [k, t]
        ops::transpose(x_, xt.data(), t, in_);              // [in, t]
        ops::matmul_nt(ut.data(), xt.data(), utx.data(), lr.rank, in_, t);  // Uᵀ X [k, in]
        std::vector<float> utxt(static_cast<size_t>(in_ * lr.rank));
        ops::transpose(utx.data(), utxt.data(), lr.rank, in_);
        ops::matmul_nt(vs.data(), utxt.data(), dw_, out_, in_, lr.rank, true);
      }
    }
  }
}

template class QuantLinear<float>;
template class QuantLinear<double>;

}  // namespace nibble
