// SM90_Attention* : the CUDA causal grouped-query attention (src/ops/cuda/attention.cu) against
// the CPU reference ops::attention_forward / attention_backward, on the trainer's layout: q, k, v
// as column slices of one fused [B·T, (Hq + 2·Hkv)·D (+ pad)] buffer, and dq, dk, dv written
// into a buffer of the same layout. Outputs are poisoned with NaN before every run (an element
// that is not written fails the comparison), the pad columns and the inputs must come back
// untouched, and two runs must give the same bits. Skipped, not passed, without a GPU.
#include <gtest/gtest.h>

#include "support/gpu.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "core/cuda/check.cuh"
#include "nibble/cuda.hpp"
#include "nibble/error.hpp"
#include "nibble/ops/ops.hpp"
#include "nibble/quant/spectral.hpp"  // philox_normal
#include "ops/cuda/ops_cuda.hpp"
#include "support/attention_data.hpp"

using namespace nibble;

namespace {


using namespace nibble::testing::attention;

// Error of a GPU result against the CPU reference. Non-finite GPU values are counted apart (a
// max over NaNs would silently drop them).
struct Err {
  double max_abs = 0, max_ref = 0, sq_err = 0, sq_ref = 0;
  int64_t nonfinite = 0, bits_differ = 0, n = 0;
  void add(float got, float ref) {
    ++n;
    if (std::bit_cast<uint32_t>(got) != std::bit_cast<uint32_t>(ref)) ++bits_differ;
    if (!std::isfinite(got)) {
      ++nonfinite;
      return;
    }
    const double e = std::fabs(static_cast<double>(got) - static_cast<double>(ref));
    max_abs = std::max(max_abs, e);
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(ref)));
    sq_err += e * e;
    sq_ref += static_cast<double>(ref) * static_cast<double>(ref);
  }
  double abs_budget_ratio() const { return max_abs / (1.0 + max_ref); }
  double rel_norm() const { return sq_ref > 0 ? std::sqrt(sq_err / sq_ref) : std::sqrt(sq_err); }
};

// Error budgets. The kernels reproduce the CPU's operation order (scores and products as FMA
// chains in the GEMM's order, the same exp, the forward rescaling at the CPU's 128-key tile
// boundaries, float64 row sums in the CPU's lane order), so the observed error is expected to
// be zero or an ulp or two (log() of the float64 row sum may round differently). The budgets
// are nevertheless set where any correct fp32 implementation lands, whatever its order: the
// rounding error of an fp32 softmax-weighted sum over T ≤ 1024 keys is of order
// √T·2⁻²⁴ ≈ 2e-6 relative, so
//   out, lse:      max |gpu − cpu| ≤ 1e-5·(1 + max |cpu|)
//   dq, dk, dv:    ‖gpu − cpu‖₂ ≤ 1e-5·‖cpu‖₂  and  max |gpu − cpu| ≤ 1e-5·(1 + max |cpu|)
// and no real bug fits in them: a key wrongly masked or unmasked, a wrong GQA head, a lost
// rescale or an off-by-one tile changes the affected rows by at least about one softmax
// weight, ≥ 1/T ≈ 1e-3 relative, which is ≥ 100× the elementwise budget and, even when a
// single row of the B·Hq·T ≥ 2·4·T rows is hit, ≳ 2e-5 relative to the whole tensor's norm.
constexpr double kOutBudget = 1e-5, kGradBudget = 1e-5;

void expect_close(const char* name, const Case& c, const Err& e, bool grad) {
  std::printf("  B=%lld T=%lld Hq=%lld Hkv=%lld D=%lld pad=%lld  %-4s max|err| %.3g (max|ref| %.3g)  "
              "rel-norm %.3g  bits differ %lld/%lld\n",
              static_cast<long long>(c.b), static_cast<long long>(c.t), static_cast<long long>(c.hq),
              static_cast<long long>(c.hkv), static_cast<long long>(c.d), static_cast<long long>(c.pad), name,
              e.max_abs, e.max_ref, e.rel_norm(), static_cast<long long>(e.bits_differ),
              static_cast<long long>(e.n));
  const auto where = ::testing::Message() << name << " B=" << c.b << " T=" << c.t << " Hq=" << c.hq
                                          << " Hkv=" << c.hkv << " D=" << c.d << " pad=" << c.pad;
  EXPECT_EQ(e.nonfinite, 0) << where << ": non-finite (unwritten?) values";
  EXPECT_LE(e.abs_budget_ratio(), grad ? kGradBudget : kOutBudget) << where << ": max |err| " << e.max_abs;
  if (grad) {
    EXPECT_LE(e.rel_norm(), kGradBudget) << where;
  }
}

void gpu_forward(const Case& c, Device& dev) {
  fill(dev.out, kPoison);
  fill(dev.lse, kPoison);
  const int64_t w = c.width();
  float* base = dev.qkv.get();
  cuda::ops::attention_forward(base, base + c.hq * c.d, base + (c.hq + c.hkv) * c.d, w, w, dev.out.get(),
                               dev.lse.get(), c.b, c.t, c.hq, c.hkv, c.d, nullptr);
  NIBBLE_CUDA_CHECK(cudaDeviceSynchronize());
}

// Backward from whatever dev.out and dev.lse hold; dqkv is poisoned first (pad columns too).
void gpu_backward(const Case& c, Device& dev) {
  fill(dev.dqkv, kPoison);
  fill(dev.delta, kPoison);
  const int64_t w = c.width(), dq = c.hq * c.d, dkv = c.hkv * c.d;
  const float* in = dev.qkv.get();
  float* g = dev.dqkv.get();
  cuda::ops::attention_backward(dev.dout.get(), in, in + dq, in + dq + dkv, w, w, dev.out.get(), dev.lse.get(), g,
                                g + dq, g + dq + dkv, w, w, dev.delta.get(), c.b, c.t, c.hq, c.hkv, c.d, nullptr);
  NIBBLE_CUDA_CHECK(cudaDeviceSynchronize());
}

void expect_bits_equal(const std::vector<float>& a, const std::vector<float>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i)
    ASSERT_EQ(std::bit_cast<uint32_t>(a[i]), std::bit_cast<uint32_t>(b[i])) << what << " differs at " << i;
}

// Forward and backward of one case against the CPU; the backward gets the CPU's out and lse so
// that its comparison does not depend on the forward's.
void check_case(const Case& c, uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << "B=" << c.b << " T=" << c.t << " Hq=" << c.hq << " Hkv=" << c.hkv
                                    << " D=" << c.d << " pad=" << c.pad);
  const Data x = make_data(c, seed);
  const int64_t n = c.rows(), w = c.width(), dq = c.hq * c.d, dkv = c.hkv * c.d;

  std::vector<float> out_ref(static_cast<size_t>(n * dq)), lse_ref(static_cast<size_t>(c.b * c.hq * c.t));
  ops::attention_forward(x.q.data(), x.k.data(), x.v.data(), out_ref.data(), lse_ref.data(), c.b, c.t, c.hq, c.hkv,
                         c.d);
  std::vector<float> dq_ref(x.q.size()), dk_ref(x.k.size()), dv_ref(x.v.size());
  ops::attention_backward(x.dout.data(), x.q.data(), x.k.data(), x.v.data(), out_ref.data(), lse_ref.data(),
                          dq_ref.data(), dk_ref.data(), dv_ref.data(), c.b, c.t, c.hq, c.hkv, c.d);

  Device dev(c);
  dev.qkv.upload(x.qkv.data());
  dev.dout.upload(x.dout.data());
  gpu_forward(c, dev);
  {
    const std::vector<float> out = download(dev.out), lse = download(dev.lse);
    Err eo, el;
    for (size_t i = 0; i < out.size(); ++i) eo.add(out[i], out_ref[i]);
    for (size_t i = 0; i < lse.size(); ++i) el.add(lse[i], lse_ref[i]);
    expect_close("out", c, eo, false);
    expect_close("lse", c, el, false);
  }

  dev.out.upload(out_ref.data());
  dev.lse.upload(lse_ref.data());
  gpu_backward(c, dev);
  const std::vector<float> g = download(dev.dqkv);
  Err eq, ek, ev;
  int64_t pad_touched = 0;
  for (int64_t r = 0; r < n; ++r) {
    const float* row = g.data() + r * w;
    for (int64_t e = 0; e < dq; ++e) eq.add(row[e], dq_ref[static_cast<size_t>(r * dq + e)]);
    for (int64_t e = 0; e < dkv; ++e) {
      ek.add(row[dq + e], dk_ref[static_cast<size_t>(r * dkv + e)]);
      ev.add(row[dq + dkv + e], dv_ref[static_cast<size_t>(r * dkv + e)]);
    }
    for (int64_t e = dq + 2 * dkv; e < w; ++e)
      pad_touched += std::bit_cast<uint32_t>(row[e]) != std::bit_cast<uint32_t>(kPoison);
  }
  expect_close("dq", c, eq, true);
  expect_close("dk", c, ek, true);
  expect_close("dv", c, ev, true);
  EXPECT_EQ(pad_touched, 0) << "the backward wrote into the pad columns of the fused gradient buffer";
  // The inputs (the whole fused buffer, pad included) are read only.
  expect_bits_equal(download(dev.qkv), x.qkv, "fused qkv input after the backward");
  expect_bits_equal(download(dev.dout), x.dout, "dout after the backward");
}

}  // namespace

// Shapes: T = 1 and T around the 64-row and 128-key tile edges (63, 64, 65, 127, 129, 257,
// 300), GQA (Hq = 2·Hkv), MHA and MQA, D = 32, 64, 128, and fused rows whose width is a
// multiple of 4 floats (vector loads) or not (pad 1 or 3: the scalar paths).
TEST(SM90_Attention, ForwardAndBackwardMatchCpu) {
  REQUIRE_GPU();
  const Case cases[] = {
      {2, 1, 4, 2, 64, 0},    {2, 63, 4, 4, 32, 0},   {2, 64, 4, 2, 64, 4},    {2, 65, 4, 2, 128, 0},
      {2, 127, 2, 2, 64, 0},  {2, 129, 4, 1, 64, 4},  {2, 200, 4, 4, 32, 4},   {2, 300, 4, 2, 64, 4},
      {2, 300, 4, 4, 128, 4}, {2, 257, 4, 2, 32, 1},  {2, 300, 4, 2, 64, 3},   {2, 191, 4, 2, 128, 1},
      {1, 1024, 2, 1, 64, 0},
  };
  uint64_t seed = 20250101;
  for (const Case& c : cases) check_case(c, seed++);
}

// Two runs of the same inputs, outputs poisoned differently in between, give the same bits:
// forward out and lse, and the backward's dq, dk, dv (fed the GPU's own forward, as in training).
TEST(SM90_Attention, RunsAreBitwiseDeterministic) {
  REQUIRE_GPU();
  for (const Case& c : {Case{2, 300, 4, 2, 64, 4}, Case{2, 200, 4, 1, 128, 0}, Case{1, 513, 2, 2, 32, 0}}) {
    SCOPED_TRACE(::testing::Message() << "T=" << c.t << " D=" << c.d);
    const Data x = make_data(c, 77);
    Device dev(c);
    dev.qkv.upload(x.qkv.data());
    dev.dout.upload(x.dout.data());
    std::vector<float> out[2], lse[2], grads[2];
    for (int run = 0; run < 2; ++run) {
      if (run == 1) {  // a different poison: results must not depend on what was there before
        fill(dev.out, -0.0f);
        fill(dev.dqkv, 1.0f);
      }
      gpu_forward(c, dev);
      out[run] = download(dev.out);
      lse[run] = download(dev.lse);
      gpu_backward(c, dev);
      grads[run] = download(dev.dqkv);
    }
    expect_bits_equal(out[0], out[1], "out");
    expect_bits_equal(lse[0], lse[1], "lse");
    expect_bits_equal(grads[0], grads[1], "dq|dk|dv");
  }
}

TEST(SM90_Attention, RejectsBadShapes) {
  REQUIRE_GPU();
  float* p = nullptr;
  // D outside {32, 64, 128}
  EXPECT_THROW(cuda::ops::attention_forward(p, p, p, 48 * 4, 48 * 4, p, p, 1, 8, 2, 2, 48, nullptr), Error);
  EXPECT_THROW(cuda::ops::attention_backward(p, p, p, p, 16, 16, p, p, p, p, p, 16, 16, p, 1, 8, 1, 1, 16, nullptr),
               Error);
  // Hq not a multiple of Hkv
  EXPECT_THROW(cuda::ops::attention_forward(p, p, p, 3 * 64, 2 * 64, p, p, 1, 8, 3, 2, 64, nullptr), Error);
  EXPECT_THROW(
      cuda::ops::attention_backward(p, p, p, p, 3 * 64, 2 * 64, p, p, p, p, p, 3 * 64, 2 * 64, p, 1, 8, 3, 2, 64, nullptr),
      Error);
  // a row stride narrower than the heads it must hold
  EXPECT_THROW(cuda::ops::attention_forward(p, p, p, 4 * 64 - 1, 2 * 64, p, p, 1, 8, 4, 2, 64, nullptr), Error);
  EXPECT_THROW(
      cuda::ops::attention_backward(p, p, p, p, 4 * 64, 2 * 64, p, p, p, p, p, 4 * 64, 2 * 64 - 4, p, 1, 8, 4, 2, 64, nullptr),
      Error);
  // empty batches are no-ops
  EXPECT_NO_THROW(cuda::ops::attention_forward(p, p, p, 64, 64, p, p, 0, 8, 1, 1, 64, nullptr));
  EXPECT_NO_THROW(cuda::ops::attention_forward(p, p, p, 64, 64, p, p, 2, 0, 1, 1, 64, nullptr));
}

// The trainer's shape (124M model: B=16, T=1024, 12 heads of 64, fused qkv): timings for whoever
// runs the suite on an H100, and a check that everything written is finite.
TEST(SM90_Attention, TrainerShapeTiming) {
  REQUIRE_GPU();
  const Case c{16, 1024, 12, 12, 64, 0};
  const Data x = make_data(c, 5);
  Device dev(c);
  dev.qkv.upload(x.qkv.data());
  dev.dout.upload(x.dout.data());
  gpu_forward(c, dev);
  gpu_backward(c, dev);  // warm-up (and the launches' attribute setting)
  const int64_t w = c.width(), dq = c.hq * c.d, dkv = c.hkv * c.d;
  float* in = dev.qkv.get();
  float* g = dev.dqkv.get();
  cudaEvent_t e0, e1, e2;
  NIBBLE_CUDA_CHECK(cudaEventCreate(&e0));
  NIBBLE_CUDA_CHECK(cudaEventCreate(&e1));
  NIBBLE_CUDA_CHECK(cudaEventCreate(&e2));
  constexpr int kIters = 5;
  float fwd_ms = 0, bwd_ms = 0;
  for (int it = 0; it < kIters; ++it) {
    NIBBLE_CUDA_CHECK(cudaEventRecord(e0));
    cuda::ops::attention_forward(in, in + dq, in + dq + dkv, w, w, dev.out.get(), dev.lse.get(), c.b, c.t, c.hq,
                                 c.hkv, c.d, nullptr);
    NIBBLE_CUDA_CHECK(cudaEventRecord(e1));
    cuda::ops::attention_backward(dev.dout.get(), in, in + dq, in + dq + dkv, w, w, dev.out.get(), dev.lse.get(), g,
                                  g + dq, g + dq + dkv, w, w, dev.delta.get(), c.b, c.t, c.hq, c.hkv, c.d, nullptr);
    NIBBLE_CUDA_CHECK(cudaEventRecord(e2));
    NIBBLE_CUDA_CHECK(cudaEventSynchronize(e2));
    float a = 0, b = 0;
    NIBBLE_CUDA_CHECK(cudaEventElapsedTime(&a, e0, e1));
    NIBBLE_CUDA_CHECK(cudaEventElapsedTime(&b, e1, e2));
    fwd_ms += a / kIters;
    bwd_ms += b / kIters;
  }
  NIBBLE_CUDA_CHECK(cudaEventDestroy(e0));
  NIBBLE_CUDA_CHECK(cudaEventDestroy(e1));
  NIBBLE_CUDA_CHECK(cudaEventDestroy(e2));
  // Useful causal work: two [T, T]/2 × D products forward, five backward (S, dP, dV, dK, dQ).
  const double pairs = static_cast<double>(c.b) * c.hq * c.t * (c.t + 1) / 2.0;
  const double fwd_flop = 2.0 * 2.0 * pairs * c.d, bwd_flop = 5.0 * 2.0 * pairs * c.d;
  std::printf("  attention B=%lld T=%lld H=%lld D=%lld: forward %.3f ms (%.1f TFLOP/s), backward %.3f ms "
              "(%.1f TFLOP/s of useful work)\n",
              static_cast<long long>(c.b), static_cast<long long>(c.t), static_cast<long long>(c.hq),
              static_cast<long long>(c.d), fwd_ms, fwd_flop / fwd_ms * 1e-9, bwd_ms, bwd_flop / bwd_ms * 1e-9);
  const std::vector<float> out = download(dev.out), grads = download(dev.dqkv);
  EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](float f) { return std::isfinite(f); }));
  EXPECT_TRUE(std::all_of(grads.begin(), grads.end(), [](float f) { return std::isfinite(f); }));
}
