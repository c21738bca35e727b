// SM90_AttentionTc* : the bf16 tensor-core causal grouped-query attention
// (src/ops/cuda/attention_tc.cu) against the CPU float reference ops::attention_forward /
// attention_backward, on the trainer's layout: q, k, v as column slices of one fused
// [B·T, (Hq + 2·Hkv)·D (+ pad)] buffer, and dq, dk, dv written into a buffer of the same layout.
// Outputs are poisoned with NaN before every run (an element that is not written fails the
// comparison), the pad columns and the inputs must come back untouched, and two runs must give
// the same bits. Skipped, not passed, without a GPU.
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


using namespace nibble::testing::attention;  // Case, Data, make_data, kPoison (shared with the fp32 tests)

// Error budgets, for bf16 operands (unit roundoff u = 2⁻⁹ ≈ 2e-3 relative per element) against
// the fp32 CPU reference. With q, k ~ N(0, 1.44) a scaled score s = q·k/√D carries an error of
// about √2·(u/√3)·1.44 ≈ 2.3e-3 (σ, independent of D: √D terms over √D), so each probability is
// off by ~0.23 % relative, P and dS lose another u when rounded for the second product, and v,
// dO, Q, K each lose u. These errors are independent across the summed terms, so a weighted sum
// (out, dV, dQ, dK) keeps the per-term relative error, ~3e-3..5e-3 in total:
//   out, dq, dk, dv:  ‖gpu − cpu‖₂ ≤ 2e-2·‖cpu‖₂   (4–7× the expected error)
//                     max |gpu − cpu| ≤ 5e-2·(1 + max |cpu|)
//   lse:              |gpu − cpu| ≤ 2e-2·(1 + |cpu|) elementwise (a score error of σ 2.3e-3, the
//                     worst case a single key's row: ~9σ below the floor of 2e-2)
// The norm check is skipped where the reference itself is ~0 (rms < 1e-3): with one key (T = 1)
// the softmax has no gradient, dq = dk = 0 exactly, and the bf16 residue dP − Δ ≈ 1e-2 is all
// that is left; the max-abs check still bounds it (|dq| ≲ 2e-3 there, budget 5e-2).
// A wrong mask (a masked key let through, or the diagonal masked), a query head reading the
// wrong kv head, or a lost rescale of O changes the affected rows by a sizeable fraction of
// their softmax weight: O(1e-1) relative or worse over the whole tensor, beyond 2e-2.
constexpr double kNormBudget = 2e-2, kMaxBudget = 5e-2, kLseBudget = 2e-2, kDegenerateRms = 1e-3;

struct Err {
  double max_abs = 0, max_ref = 0, sq_err = 0, sq_ref = 0, max_lse_ratio = 0;
  int64_t nonfinite = 0, n = 0;
  void add(float got, float ref) {
    ++n;
    if (!std::isfinite(got)) {
      ++nonfinite;
      return;
    }
    const double e = std::fabs(static_cast<double>(got) - static_cast<double>(ref));
    max_abs = std::max(max_abs, e);
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(ref)));
    sq_err += e * e;
    sq_ref += static_cast<double>(ref) * static_cast<double>(ref);
    max_lse_ratio = std::max(max_lse_ratio, e / (1.0 + std::fabs(static_cast<double>(ref))));
  }
  double rel_norm() const { return sq_ref > 0 ? std::sqrt(sq_err / sq_ref) : std::sqrt(sq_err); }
  double ref_rms() const { return n > 0 ? std::sqrt(sq_ref / static_cast<double>(n)) : 0.0; }
};

void report(const char* name, const Case& c, const Err& e) {
  std::printf("  B=%lld T=%lld Hq=%lld Hkv=%lld D=%lld pad=%lld  %-4s max|err| %.3g (max|ref| %.3g)  "
              "rel-norm %.3g  ref-rms %.3g\n",
              static_cast<long long>(c.b), static_cast<long long>(c.t), static_cast<long long>(c.hq),
              static_cast<long long>(c.hkv), static_cast<long long>(c.d), static_cast<long long>(c.pad), name,
              e.max_abs, e.max_ref, e.rel_norm(), e.ref_rms());
}

::testing::Message where(const char* name, const Case& c) {
  return ::testing::Message() << name << " B=" << c.b << " T=" << c.t << " Hq=" << c.hq << " Hkv=" << c.hkv
                              << " D=" << c.d << " pad=" << c.pad;
}

// out, dq, dk, dv.
void expect_close(const char* name, const Case& c, const Err& e) {
  report(name, c, e);
  EXPECT_EQ(e.nonfinite, 0) << where(name, c) << ": non-finite (unwritten?) values";
  EXPECT_LE(e.max_abs, kMaxBudget * (1.0 + e.max_ref)) << where(name, c);
  if (e.ref_rms() >= kDegenerateRms) {
    EXPECT_LE(e.rel_norm(), kNormBudget) << where(name, c);
  }
}

void expect_close_lse(const Case& c, const Err& e) {
  report("lse", c, e);
  EXPECT_EQ(e.nonfinite, 0) << where("lse", c) << ": non-finite (unwritten?) values";
  EXPECT_LE(e.max_lse_ratio, kLseBudget) << where("lse", c) << ": max |err| " << e.max_abs;
}

void gpu_forward(const Case& c, Device& dev) {
  fill(dev.out, kPoison);
  fill(dev.lse, kPoison);
  const int64_t w = c.width();
  float* base = dev.qkv.get();
  cuda::ops::attention_forward_tc(base, base + c.hq * c.d, base + (c.hq + c.hkv) * c.d, w, w, dev.out.get(),
                                  dev.lse.get(), c.b, c.t, c.hq, c.hkv, c.d, nullptr);
  NIBBLE_CUDA_CHECK(cudaDeviceSynchronize());
}

void gpu_backward(const Case& c, Device& dev) {
  fill(dev.dqkv, kPoison);
  fill(dev.delta, kPoison);
  const int64_t w = c.width(), dq = c.hq * c.d, dkv = c.hkv * c.d;
  const float* in = dev.qkv.get();
  float* g = dev.dqkv.get();
  cuda::ops::attention_backward_tc(dev.dout.get(), in, in + dq, in + dq + dkv, w, w, dev.out.get(), dev.lse.get(),
                                   g, g + dq, g + dq + dkv, w, w, dev.delta.get(), c.b, c.t, c.hq, c.hkv, c.d,
                                   nullptr);
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
  SCOPED_TRACE(where("case", c));
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
    expect_close("out", c, eo);
    expect_close_lse(c, el);
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
  expect_close("dq", c, eq);
  expect_close("dk", c, ek);
  expect_close("dv", c, ev);
  EXPECT_EQ(pad_touched, 0) << "the backward wrote into the pad columns of the fused gradient buffer";
  expect_bits_equal(download(dev.qkv), x.qkv, "fused qkv input after the backward");
  expect_bits_equal(download(dev.dout), x.dout, "dout after the backward");
}

}  // namespace

// B = 2, T ∈ {1, 63, 64, 65, 200, 1024} (the 64-row tile edges, several tiles, the trainer's T),
// (Hq, Hkv) ∈ {(4, 4), (4, 2)} at D = 64, with fused rows of width ≡ 0 (mod 4) (vector loads) and
// not (pad 1 or 3: scalar loads and stores); then D = 32 and 128, and MQA (Hkv = 1).
TEST(SM90_AttentionTc, ForwardAndBackwardMatchCpu) {
  REQUIRE_GPU();
  std::vector<Case> cases;
  const int64_t ts[] = {1, 63, 64, 65, 200, 1024};
  const int64_t heads[][2] = {{4, 4}, {4, 2}};
  int i = 0;
  for (const int64_t t : ts)
    for (const auto& hh : heads) cases.push_back(Case{2, t, hh[0], hh[1], 64, (i++ % 3 == 2) ? 1 : 0});
  for (const Case& c : {Case{2, 1, 4, 2, 32, 0}, Case{2, 65, 4, 4, 32, 3}, Case{2, 200, 4, 2, 32, 0},
                        Case{2, 1, 4, 4, 128, 0}, Case{2, 63, 4, 2, 128, 0}, Case{2, 200, 4, 4, 128, 1},
                        Case{2, 300, 4, 1, 64, 4}, Case{1, 1024, 4, 1, 128, 0}})
    cases.push_back(c);
  uint64_t seed = 20250601;
  for (const Case& c : cases) check_case(c, seed++);
}

// Two runs of the same inputs, outputs poisoned differently in between, give the same bits:
// forward out and lse, and the backward's dq, dk, dv (fed the GPU's own forward, as in training).
TEST(SM90_AttentionTc, RunsAreBitwiseDeterministic) {
  REQUIRE_GPU();
  for (const Case& c : {Case{2, 300, 4, 2, 64, 4}, Case{2, 1024, 4, 1, 64, 0}, Case{2, 200, 4, 1, 128, 0},
                        Case{1, 513, 2, 2, 32, 0}}) {
    SCOPED_TRACE(where("case", c));
    const Data x = make_data(c, 77);
    Device dev(c);
    dev.qkv.upload(x.qkv.data());
    dev.dout.upload(x.dout.data());
    std::vector<float> out[2], lse[2], grads[2];
    for (int run = 0; run < 2; ++run) {
      if (run == 1) {
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

TEST(SM90_AttentionTc, RejectsBadShapes) {
  EXPECT_TRUE(cuda::ops::attention_tc_supported(32));
  EXPECT_TRUE(cuda::ops::attention_tc_supported(64));
  EXPECT_TRUE(cuda::ops::attention_tc_supported(128));
  EXPECT_FALSE(cuda::ops::attention_tc_supported(48));
  EXPECT_FALSE(cuda::ops::attention_tc_supported(256));
  REQUIRE_GPU();
  float* p = nullptr;
  // D outside {32, 64, 128}: the caller falls back to the fp32 path
  EXPECT_THROW(cuda::ops::attention_forward_tc(p, p, p, 48 * 4, 48 * 4, p, p, 1, 8, 2, 2, 48, nullptr), Error);
  EXPECT_THROW(
      cuda::ops::attention_backward_tc(p, p, p, p, 16, 16, p, p, p, p, p, 16, 16, p, 1, 8, 1, 1, 16, nullptr), Error);
  // Hq not a multiple of Hkv
  EXPECT_THROW(cuda::ops::attention_forward_tc(p, p, p, 3 * 64, 2 * 64, p, p, 1, 8, 3, 2, 64, nullptr), Error);
  // a row stride narrower than the heads it must hold
  EXPECT_THROW(cuda::ops::attention_forward_tc(p, p, p, 4 * 64 - 1, 2 * 64, p, p, 1, 8, 4, 2, 64, nullptr), Error);
  EXPECT_THROW(cuda::ops::attention_backward_tc(p, p, p, p, 4 * 64, 2 * 64, p, p, p, p, p, 4 * 64, 2 * 64 - 4, p, 1,
                                                8, 4, 2, 64, nullptr),
               Error);
  // empty batches are no-ops
  EXPECT_NO_THROW(cuda::ops::attention_forward_tc(p, p, p, 64, 64, p, p, 0, 8, 1, 1, 64, nullptr));
  EXPECT_NO_THROW(cuda::ops::attention_forward_tc(p, p, p, 64, 64, p, p, 2, 0, 1, 1, 64, nullptr));
}

// The trainer's shape (124M model: B=16, T=1024, 12 heads of 64, fused qkv): timings of the
// tensor-core path next to the fp32 one, and a check that everything written is finite.
TEST(SM90_AttentionTc, TrainerShapeTiming) {
  REQUIRE_GPU();
  const Case c{16, 1024, 12, 12, 64, 0};
  const Data x = make_data(c, 5);
  Device dev(c);
  dev.qkv.upload(x.qkv.data());
  dev.dout.upload(x.dout.data());
  const int64_t w = c.width(), dq = c.hq * c.d, dkv = c.hkv * c.d;
  float* in = dev.qkv.get();
  float* g = dev.dqkv.get();
  auto run = [&](bool tc) {
    if (tc) {
      cuda::ops::attention_forward_tc(in, in + dq, in + dq + dkv, w, w, dev.out.get(), dev.lse.get(), c.b, c.t, c.hq,
                                      c.hkv, c.d, nullptr);
    } else {
      cuda::ops::attention_forward(in, in + dq, in + dq + dkv, w, w, dev.out.get(), dev.lse.get(), c.b, c.t, c.hq,
                                   c.hkv, c.d, nullptr);
    }
  };
  auto run_bwd = [&](bool tc) {
    if (tc) {
      cuda::ops::attention_backward_tc(dev.dout.get(), in, in + dq, in + dq + dkv, w, w, dev.out.get(), dev.lse.get(),
                                       g, g + dq, g + dq + dkv, w, w, dev.delta.get(), c.b, c.t, c.hq, c.hkv, c.d,
                                       nullptr);
    } else {
      cuda::ops::attention_backward(dev.dout.get(), in, in + dq, in + dq + dkv, w, w, dev.out.get(), dev.lse.get(), g,
                                    g + dq, g + dq + dkv, w, w, dev.delta.get(), c.b, c.t, c.hq, c.hkv, c.d, nullptr);
    }
  };
  cudaEvent_t e0, e1, e2;
  NIBBLE_CUDA_CHECK(cudaEventCreate(&e0));
  NIBBLE_CUDA_CHECK(cudaEventCreate(&e1));
  NIBBLE_CUDA_CHECK(cudaEventCreate(&e2));
  const double pairs = static_cast<double>(c.b) * c.hq * c.t * (c.t + 1) / 2.0;
  const double fwd_flop = 2.0 * 2.0 * pairs * c.d, bwd_flop = 5.0 * 2.0 * pairs * c.d;
  for (const bool tc : {false, true}) {
    run(tc);
    run_bwd(tc);  // warm-up (and the launches' attribute setting)
    constexpr int kIters = 5;
    float fwd_ms = 0, bwd_ms = 0;
    for (int it = 0; it < kIters; ++it) {
      NIBBLE_CUDA_CHECK(cudaEventRecord(e0));
      run(tc);
      NIBBLE_CUDA_CHECK(cudaEventRecord(e1));
      run_bwd(tc);
      NIBBLE_CUDA_CHECK(cudaEventRecord(e2));
      NIBBLE_CUDA_CHECK(cudaEventSynchronize(e2));
      float a = 0, b = 0;
      NIBBLE_CUDA_CHECK(cudaEventElapsedTime(&a, e0, e1));
      NIBBLE_CUDA_CHECK(cudaEventElapsedTime(&b, e1, e2));
      fwd_ms += a / kIters;
      bwd_ms += b / kIters;
    }
    std::printf("  attention %s B=%lld T=%lld H=%lld D=%lld: forward %.3f ms (%.1f TFLOP/s), backward %.3f ms "
                "(%.1f TFLOP/s of useful work)\n",
                tc ? "bf16 tensor cores" : "fp32 (bit-exact)", static_cast<long long>(c.b),
                static_cast<long long>(c.t), static_cast<long long>(c.hq), static_cast<long long>(c.d), fwd_ms,
                fwd_flop / fwd_ms * 1e-9, bwd_ms, bwd_flop / bwd_ms * 1e-9);
  }
  NIBBLE_CUDA_CHECK(cudaEventDestroy(e0));
  NIBBLE_CUDA_CHECK(cudaEventDestroy(e1));
  NIBBLE_CUDA_CHECK(cudaEventDestroy(e2));
  // The last run was the tensor-core one.
  const std::vector<float> out = download(dev.out), grads = download(dev.dqkv);
  EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](float f) { return std::isfinite(f); }));
  int64_t nonfinite = 0;
  for (int64_t r = 0; r < c.rows(); ++r)
    for (int64_t e = 0; e < dq + 2 * dkv; ++e) nonfinite += !std::isfinite(grads[static_cast<size_t>(r * w + e)]);
  EXPECT_EQ(nonfinite, 0);
}
