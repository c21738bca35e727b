// CudaLinear: QuantLinear's forward/backward (src/nn/linear.cpp) step for step on the GPU.
#include "nn/cuda/linear_cuda.hpp"

#include <cuda_bf16.h>

#include <chrono>
#include <cstring>

#include "core/cuda/check.cuh"
#include "nibble/dtype.hpp"
#include "nibble/error.hpp"
#include "nibble/quant/rht.hpp"
#include "nibble/quant/stats.hpp"
#include "nn/cuda/operand.hpp"
#include "nn/cuda/spectral_cuda.hpp"

namespace nibble::cuda {
namespace {

// The GEMM runs in fp32 when an operand must stay fp32 (the exact reference recipe), else bf16.
GemmDtype gemm_dtype(const GemmSpec& g) {
  return g.a.kind == OperandKind::FP32 || g.b.kind == OperandKind::FP32 ? GemmDtype::FP32 : GemmDtype::BF16;
}

// Downloads go into host buffers of the workspace (see LinearWorkspace::host) and return them.
const float* download_floats(const float* d, int64_t n, std::vector<float>& h) {
  h.resize(static_cast<size_t>(n));
  if (n) NIBBLE_CUDA_CHECK(cudaMemcpy(h.data(), d, static_cast<size_t>(n) * sizeof(float), cudaMemcpyDeviceToHost));
  return h.data();
}

// A plain operand (no centring, RHT, quantization): cast at most, read in place when it can be.
bool plain(const OperandSpec& o, int rht) { return o.kind != OperandKind::QUANT && !o.center && rht == 0; }

// W quantized in B×B tiles with round-to-nearest and no transform: its columnwise copy (dgrad's
// Wᵀ) has the same tiles, tile amaxes, tensor amax and codes — the rowwise copy transposed.
bool tiled_w_shared(const Recipe& r) {
  const OperandSpec &f = r.fprop.b, &d = r.dgrad.b;
  const auto tiled = [](const OperandSpec& o) {
    return o.kind == OperandKind::QUANT && o.quant.tile2d && o.quant.rounding == Rounding::RNE && !o.center;
  };
  return tiled(f) && tiled(d) && r.fprop.rht == 0 && r.dgrad.rht == 0 && f.quant.format == d.quant.format &&
         f.quant.block == d.quant.block && f.quant.scale_rule == d.quant.scale_rule &&
         gemm_dtype(r.fprop) == gemm_dtype(r.dgrad);
}

// f() timed into acc (seconds): what a --stats-every collection costs each layer. The stream is
// drained first, so the layer's own GEMMs and whatever was queued before are not counted.
template <class F>
auto timed(double& acc, cudaStream_t st, F&& f) {
  NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st));
  const auto t0 = std::chrono::steady_clock::now();
  auto r = f();
  acc += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

void merge(Json& into, const Json& more) {
  for (const auto& [k, v] : more.as_object()) into[k] = v;
}

}  // namespace

LinearWorkspace::LinearWorkspace() : qs(make_quant_scratch()) {}
LinearWorkspace::~LinearWorkspace() { free_quant_scratch(qs); }

void CudaLinear::set_recipe(const Recipe& r) {
  if (r.fprop.a.spectral_rank || r.fprop.b.spectral_rank || r.dgrad.b.spectral_rank || r.wgrad.b.spectral_rank)
    fail("layer ", name_, ": recipe '", r.name, "' splits an operand other than dY spectrally; only dY can be split");
  recipe_ = r;
}

const float* CudaLinear::signs(const StepContext& ctx, Role role, int n) {
  Signs& s = signs_[static_cast<int>(role) - static_cast<int>(Role::RhtFprop)];
  if (s.n != n || s.seed != ctx.seed || s.d.bytes() == 0) {
    const std::vector<float> h = rht_signs(n, ctx.seed, philox_stream(0, id_, role));
    float* d = s.d.as<float>(h.size());
    NIBBLE_CUDA_CHECK(cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
    s.n = n;
    s.seed = ctx.seed;
  }
  return s.d.get<float>();
}

struct CudaLinear::Operands {
  PreparedOperand a, b;
};

CudaLinear::Operands CudaLinear::gemm(const GemmSpec& g, OperandJob& a, OperandJob& b, const GemmOutput& out,
                                      int64_t m, int64_t n, int64_t k, LinearWorkspace& ws, cudaStream_t st,
                                      const PreparedOperand* b_ready, const float* b_tensor) {
  float* scal = ws.scalars.as<float>(8);
  a.dtype = b.dtype = gemm_dtype(g);
  Operands ops{prepare_operand(a, ws.work_a, ws.op_a, scal, ws.qs, st),
               b_ready ? *b_ready : prepare_operand(b, ws.work_b, ws.op_b, scal + 2, ws.qs, st)};
  const float* tb = b_ready ? b_tensor : scal + 2;
  float* alpha = nullptr;
  if (ops.a.scaled || ops.b.scaled) {
    gemm_alpha(scal, ops.a.scaled, tb, ops.b.scaled, scal + 4, st);
    alpha = scal + 4;
  }
  cuda::gemm(ops.a.op, ops.b.op, out, m, n, k, alpha, st);
  return ops;
}

namespace {
// Where a GEMM writes: straight into the caller's output, or — when a bf16 output still gets
// fp32 corrections (centring, the low-rank part) — into an fp32 scratch first.
struct Staged {
  GemmOutput gemm_out;
  float* f32 = nullptr;  // the fp32 result the corrections go into
  void* final = nullptr;
  GemmDtype final_type = GemmDtype::FP32;
  int64_t n = 0;
  void finish(cudaStream_t st) const {
    if (final_type != GemmDtype::FP32) store_as(f32, n, final, final_type, st);
  }
};
Staged stage_output(const GemmOutput& out, int64_t n, bool corrected, DeviceScratch& scratch) {
  if (out.dtype == GemmDtype::FP32 || !corrected)
    return {out, out.dtype == GemmDtype::FP32 ? static_cast<float*>(out.d) : nullptr, out.d, GemmDtype::FP32, n};
  NIBBLE_CHECK(out.c == nullptr, "a bf16 output with a residual input is not supported");
  float* f = scratch.as<float>(static_cast<size_t>(n));
  return {{f, GemmDtype::FP32, nullptr}, f, out.d, out.dtype, n};
}
}  // namespace

void CudaLinear::forward(DevTensor x, const GemmOutput& y, int64_t t, const StepContext& ctx, LinearWorkspace& ws,
                         cudaStream_t st) {
  x_ = x;
  if (capture_) {
    NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st));
    capture_(name_, "x", download_floats(as_float(x.p, x.dtype, t * in_, ws.f32_a, st), t * in_, ws.host), t, in_);
    capture_(name_, "w", download_floats(w_, out_ * in_, ws.host), out_, in_);
  }
  const GemmSpec& g = recipe_.fprop;
  const bool stats = ctx.collect_stats;
  OperandJob a{x.p, t, in_, false, &g.a};
  a.src_type = x.dtype;
  OperandJob b{w_, out_, in_, false, &g.b};
  a.materialize = b.materialize = stats;
  w16_valid_ = false;
  if (!stats && gemm_dtype(g) == GemmDtype::BF16 && plain(g.b, g.rht)) {
    // W in bf16 once per step: this GEMM reads it in place, dgrad reads it transposed.
    auto* w16 = w16_.as<__nv_bfloat16>(static_cast<size_t>(out_ * in_));
    store_as(w_, out_ * in_, w16, GemmDtype::BF16, st);
    b.src = w16;
    b.src_type = GemmDtype::BF16;
    w16_valid_ = true;
  }
  float* mu = nullptr;
  mean_x_valid_ = false;
  if (g.a.center) {
    // kept for wgrad, which needs the same μ of the same x
    mu = mean_x_.as<float>(static_cast<size_t>(in_));
    column_mean(x.p, x.dtype, t, in_, ws.partials.as<double>(static_cast<size_t>(column_mean_partials(t, in_))), mu, st);
    a.mean = mu;
    mean_x_valid_ = true;
  }
  if (g.rht) a.rht = b.rht = g.rht, a.signs = b.signs = signs(ctx, Role::RhtFprop, g.rht);
  a.seed = b.seed = ctx.seed;
  a.stream = philox_stream(ctx.step, id_, Role::FpropX);
  b.stream = philox_stream(ctx.step, id_, Role::FpropW);
  const Staged out = stage_output(y, t * out_, g.a.center, ws.out_f32);
  wq_valid_ = false;
  PreparedOperand wq;
  const PreparedOperand* w_ready = nullptr;
  if (!stats && tiled_w_shared(recipe_)) {
    b.dtype = gemm_dtype(g);
    wq = prepare_operand(b, ws.work_b, wq_, wq_tensor_.as<float>(2), ws.qs, st);
    w_ready = &wq;
    wq_valid_ = true;
  }
  const Operands ops = gemm(g, a, b, out.gemm_out, t, out_, in_, ws, st, w_ready, wq_tensor_.get<float>());
  if (stats) {
    stats_.clear();
    float* scal = ws.scalars.get<float>();
    stats_s_ = 0;
    // The GEMM's operands live in ws.op_a/op_b (materialized for the statistics) and their decode
    // scales in ws.scalars; transformed_operand writes only ws.work_a/work_b.
    timed(stats_s_, st, [&] {
      transformed_operand(a, ws.work_a, st);
      transformed_operand(b, ws.work_b, st);
      stats_.push_back({name_, "fprop", "x",
                        error_stats_device(ws.work_a.get<float>(), ops.a.op.p, ops.a.op.dtype, ops.a.scaled ? scal : nullptr, t * in_,
                                           ws.stats, st)
                            .to_json()});
      stats_.push_back({name_, "fprop", "w",
                        error_stats_device(ws.work_b.get<float>(), ops.b.op.p, ops.b.op.dtype, ops.b.scaled ? scal + 2 : nullptr,
                                           out_ * in_, ws.stats, st)
                            .to_json()});
      const float* xf = as_float(x.p, x.dtype, t * in_, ws.f32_a, st);
      merge(stats_[stats_.size() - 2].stats,
            anisotropy_stats_device(xf, t, in_, g.a.quant.block, kStatsEveryPowerIters, ws.stats, st).to_json());
      return 0;
    });
  }
  if (g.a.center) {
    float* corr = ws.corr.as<float>(static_cast<size_t>(out_));
    fprop_correction(w_, out_, in_, mu, corr, st);
    add_column_vector(out.f32, t, out_, corr, st);
  }
  out.finish(st);
}

void CudaLinear::backward(DevTensor dy_in, void* dx, GemmDtype dx_type, int64_t t, const StepContext& ctx,
                          LinearWorkspace& ws, cudaStream_t st) {
  NIBBLE_CHECK(x_.p != nullptr, "backward before forward in ", name_);
  const Recipe& r = recipe_;
  const bool stats = ctx.collect_stats;
  DevTensor dy = dy_in;
  if (capture_) {
    NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st));
    capture_(name_, "dy", download_floats(as_float(dy.p, dy.dtype, t * out_, ws.f32_b, st), t * out_, ws.host), t,
             out_);
  }
  // Spectral split of dY (metis), computed once and shared by dgrad and wgrad: dY = U S Vᵀ + R.
  const bool split = r.dgrad.a.spectral_rank != 0 || r.wgrad.a.spectral_rank != 0;
  const float* resid = nullptr;
  const float* us = nullptr;
  if (split) {
    const float* dy32 = as_float(dy.p, dy.dtype, t * out_, ws.f32_a, st);
    dy = {dy32, GemmDtype::FP32};
    const OperandSpec& o = r.dgrad.a.spectral_rank != 0 ? r.dgrad.a : r.wgrad.a;
    SpectralSpec sp;
    sp.rank = spectral_rank_for(o, t, out_);
    sp.power_iters = o.power_iters;
    sp.seed = ctx.seed;
    sp.stream = philox_stream(ctx.step, id_, Role::Spectral);
    randomized_svd_device(dy32, t, out_, sp, lowrank_, st);
    const int64_t k = lowrank_.rank;
    float* usp = us_.as<float>(static_cast<size_t>(t * k));
    scale_columns(lowrank_.u.get<float>(), lowrank_.s.get<float>(), usp, t, k, 1.0f, st);
    float* res = resid_.as<float>(static_cast<size_t>(t * out_));
    NIBBLE_CUDA_CHECK(cudaMemcpyAsync(res, dy32, static_cast<size_t>(t * out_) * sizeof(float), cudaMemcpyDeviceToDevice, st));
    sgemm_rm(false, true, t, out_, k, -1.0f, usp, k, lowrank_.v.get<float>(), k, 1.0f, res, out_, st);  // R = dY − US·Vᵀ
    resid = res;
    us = usp;
  } else if (!stats && dy.dtype == GemmDtype::FP32 && gemm_dtype(r.wgrad) == GemmDtype::BF16 &&
             plain(r.wgrad.a, r.wgrad.rht) && (!dx || (gemm_dtype(r.dgrad) == GemmDtype::BF16 && plain(r.dgrad.a, r.dgrad.rht)))) {
    // Both GEMMs read dY as a plain bf16 cast: cast it once.
    auto* d16 = ws.dy_cast.as<__nv_bfloat16>(static_cast<size_t>(t * out_));
    store_as(static_cast<const float*>(dy.p), t * out_, d16, GemmDtype::BF16, st);
    dy = {d16, GemmDtype::BF16};
  }
  const DevTensor dgrad_src = r.dgrad.a.spectral_rank != 0 ? DevTensor{resid, GemmDtype::FP32} : dy;
  const DevTensor wgrad_src = r.wgrad.a.spectral_rank != 0 ? DevTensor{resid, GemmDtype::FP32} : dy;
  // ν (the column mean of the operand that is centred) once for both GEMMs when they share it.
  float* nu = nullptr;
  float* nu_w = nullptr;
  if (dx && r.dgrad.a.center) {
    nu = ws.mean_a.as<float>(static_cast<size_t>(out_));
    column_mean(dgrad_src.p, dgrad_src.dtype, t, out_,
                ws.partials.as<double>(static_cast<size_t>(column_mean_partials(t, out_))), nu, st);
  }
  if (r.wgrad.a.center || r.wgrad.b.center) {
    if (nu && wgrad_src.p == dgrad_src.p) {
      nu_w = nu;
    } else {
      nu_w = nu_w_.as<float>(static_cast<size_t>(out_));
      column_mean(wgrad_src.p, wgrad_src.dtype, t, out_,
                  ws.partials.as<double>(static_cast<size_t>(column_mean_partials(t, out_))), nu_w, st);
    }
  }
  if (stats) {
    timed(stats_s_, st, [&] {
      const float* dyf = as_float(dy.p, dy.dtype, t * out_, ws.f32_b, st);
      stats_.push_back({name_, "dgrad", "dy",
                        anisotropy_stats_device(dyf, t, out_, r.dgrad.a.quant.block, kStatsEveryPowerIters, ws.stats, st)
                            .to_json()});
      return 0;
    });
  }
  // ---- dgrad: dX[t, in] = dY[t, out] · W, reduction over out ----------------------------------
  if (dx) {
    const GemmSpec& g = r.dgrad;
    OperandJob a{dgrad_src.p, t, out_, false, &g.a};
    a.src_type = dgrad_src.dtype;
    OperandJob b{w_, out_, in_, true, &g.b};  // Wᵀ [in, out]: W columnwise
    a.materialize = b.materialize = stats;
    if (w16_valid_ && gemm_dtype(g) == GemmDtype::BF16 && plain(g.b, g.rht)) {
      b.src = w16_.get<void>();
      b.src_type = GemmDtype::BF16;
    }
    if (g.a.center) a.mean = nu;
    if (g.rht) a.rht = b.rht = g.rht, a.signs = b.signs = signs(ctx, Role::RhtDgrad, g.rht);
    a.seed = b.seed = ctx.seed;
    a.stream = philox_stream(ctx.step, id_, Role::DgradDy);
    b.stream = philox_stream(ctx.step, id_, Role::DgradW);
    const Staged out = stage_output({dx, dx_type, nullptr}, t * in_, g.a.center || g.a.spectral_rank != 0, ws.out_f32);
    PreparedOperand wt;
    const PreparedOperand* w_ready = nullptr;
    if (wq_valid_) {
      // the forward's tile-quantized W read as Wᵀ: [out, in] row-major is [K, N], not K-major
      wt = {{wq_.get<void>(), gemm_dtype(g), false}, format_has_tensor_scale(g.b.quant.format)};
      w_ready = &wt;
    }
    const Operands ops = gemm(g, a, b, out.gemm_out, t, in_, out_, ws, st, w_ready, wq_tensor_.get<float>());
    if (stats) {
      timed(stats_s_, st, [&] {
        transformed_operand(a, ws.work_a, st);
        float* scal = ws.scalars.get<float>();
        merge(stats_.back().stats, error_stats_device(ws.work_a.get<float>(), ops.a.op.p, ops.a.op.dtype,
                                                      ops.a.scaled ? scal : nullptr, t * out_, ws.stats, st)
                                       .to_json());
        return 0;
      });
    }
    if (g.a.center) {
      float* corr = ws.corr.as<float>(static_cast<size_t>(in_));
      dgrad_correction(w_, out_, in_, nu, ws.partials.as<double>(static_cast<size_t>(column_mean_partials(out_, in_))),
                       corr, st);
      add_column_vector(out.f32, t, in_, corr, st);
    }
    if (g.a.spectral_rank != 0) {
      // dX += U S (Vᵀ W): [t, k] · [k, in], fp32
      const int64_t k = lowrank_.rank;
      float* vtw = vtw_.as<float>(static_cast<size_t>(k * in_));
      sgemm_rm(true, false, k, in_, out_, 1.0f, lowrank_.v.get<float>(), k, w_, in_, 0.0f, vtw, in_, st);
      sgemm_rm(false, false, t, in_, k, 1.0f, us, k, vtw, in_, 1.0f, out.f32, in_, st);
    }
    out.finish(st);
  }
  if (stats && !stats_.empty()) {
    // this layer's share of the collection's cost, on its first row (read by analyze stats)
    Json cost = Json::object();
    cost["stats_seconds"] = stats_s_;
    merge(stats_.front().stats, cost);
  }
  // ---- wgrad: dW[out, in] += dYᵀ · X, reduction over tokens --------------------------------
  {
    const GemmSpec& g = r.wgrad;
    OperandJob a{wgrad_src.p, t, out_, true, &g.a};  // dYᵀ [out, t]
    a.src_type = wgrad_src.dtype;
    OperandJob b{x_.p, t, in_, true, &g.b};   // Xᵀ  [in, t]
    b.src_type = x_.dtype;
    const bool centred = g.a.center || g.b.center;
    float* mu = nullptr;
    if (centred) {
      // The correction needs both means, also for an operand that is not centred itself; μ of
      // x was computed by the forward when it centred x.
      if (mean_x_valid_) {
        mu = mean_x_.get<float>();
      } else {
        mu = ws.mean_b.as<float>(static_cast<size_t>(in_));
        column_mean(x_.p, x_.dtype, t, in_, ws.partials.as<double>(static_cast<size_t>(column_mean_partials(t, in_))),
                    mu, st);
      }
      if (g.a.center) a.mean = nu_w;
      if (g.b.center) b.mean = mu;
    }
    if (g.rht) a.rht = b.rht = g.rht, a.signs = b.signs = signs(ctx, Role::RhtWgrad, g.rht);
    a.seed = b.seed = ctx.seed;
    a.stream = philox_stream(ctx.step, id_, Role::WgradDy);
    b.stream = philox_stream(ctx.step, id_, Role::WgradX);
    gemm(g, a, b, {dw_, GemmDtype::FP32, dw_}, out_, in_, t, ws, st);
    if (centred) add_wgrad_correction(dw_, out_, in_, t, nu_w, mu, st);
    if (g.a.spectral_rank != 0) {
      // dW += V S (Uᵀ X): [out, k] · [k, in], fp32
      const int64_t k = lowrank_.rank;
      const float* x32 = as_float(x_.p, x_.dtype, t * in_, ws.f32_b, st);
      float* utx = vtw_.as<float>(static_cast<size_t>(k * in_));
      sgemm_rm(true, false, k, in_, t, 1.0f, lowrank_.u.get<float>(), k, x32, in_, 0.0f, utx, in_, st);
      float* vs = vs_.as<float>(static_cast<size_t>(out_ * k));
      scale_columns(lowrank_.v.get<float>(), lowrank_.s.get<float>(), vs, out_, k, 1.0f, st);
      sgemm_rm(false, false, out_, in_, k, 1.0f, vs, k, utx, in_, 1.0f, dw_, in_, st);
    }
  }
}

}  // namespace nibble::cuda
