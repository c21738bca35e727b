// SM90_QatState* : the GPU QatState against the CPU reference, operation by operation, on a
// hand-made layout (two projections, one full-precision tensor between them) for LSQ 4-bit in
// groups, SEQ 2-bit and ternary per row. Skipped without a GPU.
//   Ŵ at (W, α), WinQ's reset, dW: bit for bit (the same scalar code on both devices).
//   Ŵ at the noisy point: the normals' float64 log/cos may differ in the last place between libm
//   and CUDA, so ≤ 1 float ulp of the noise per weight — and all but a handful of weights equal.
//   dα: float64 sums in another order — 1e-6 relative; the norm 1e-9; AdamW then bit-identical
//   given the same gradients (checked from one shared state).
#include <gtest/gtest.h>

#include "support/gpu.hpp"

#include <cmath>
#include <cstdint>
#include <vector>

#include "core/cuda/check.cuh"
#include "nibble/philox.hpp"
#include "nibble/qat/qat_state.hpp"

using namespace nibble;

namespace {

QatLayout toy_layout(const QatSpec& spec) {
  QatLayout l;
  l.spec = spec;
  l.projections.push_back({0, 48, 64, 0, 48 * spec.groups_per_row(64)});
  const int64_t b_off = 48 * 64 + 40;  // 40 full-precision values between the matrices
  const int64_t a_b = l.projections[0].alpha_count;
  l.projections.push_back({b_off, 24, 128, a_b, 24 * spec.groups_per_row(128)});
  l.tensors = {{0, 48 * 64, true}, {48 * 64, 40, false}, {b_off, 24 * 128, true}};
  l.num_params = b_off + 24 * 128;
  l.num_scales = a_b + l.projections[1].alpha_count;
  return l;
}

QatHostState toy_state(const QatLayout& l, uint64_t seed) {
  QatHostState s;
  s.w.resize(static_cast<size_t>(l.num_params));
  for (size_t i = 0; i < s.w.size(); ++i) s.w[i] = static_cast<float>(0.05 * philox_normal_hd(seed, 7, i));
  s.alpha.assign(static_cast<size_t>(l.num_scales), 0.0f);
  for (const auto& q : l.projections) qat_init_scales(l.spec, s.w.data() + q.offset, q.rows, q.cols, s.alpha.data() + q.alpha_offset);
  s.m_w.assign(s.w.size(), 0.0f);
  s.v_w.assign(s.w.size(), 0.0f);
  s.m_alpha.assign(s.alpha.size(), 0.0f);
  s.v_alpha.assign(s.alpha.size(), 0.0f);
  return s;
}

std::vector<float> run_quantized(QatState& st, const QatNoise& n, bool gpu, int64_t np) {
  std::vector<float> out(static_cast<size_t>(np));
  if (!gpu) {
    st.quantized_weights(n, out.data());
    return out;
  }
  cuda::DeviceBuffer<float> d(out.size());
  st.quantized_weights(n, d.get());
  NIBBLE_CUDA_CHECK(cudaDeviceSynchronize());
  d.download(out.data());
  return out;
}

double run_backward(QatState& st, const std::vector<float>& g, bool gpu) {
  if (!gpu) return st.backward(g.data());
  cuda::DeviceBuffer<float> d(g.size());
  d.upload(g.data());
  return st.backward(d.get());
}

void expect_equal(const std::vector<float>& a, const std::vector<float>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  int64_t diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff += a[i] != b[i];
  EXPECT_EQ(diff, 0) << what << ": " << diff << " of " << a.size() << " values differ";
}

void check_spec(const QatSpec& spec) {
  const QatLayout l = toy_layout(spec);
  const auto cpu = make_cpu_qat_state(l);
  const auto gpu = make_cuda_qat_state(l, nullptr);
  const QatHostState s0 = toy_state(l, 3);
  cpu->set(s0);
  gpu->set(s0);

  // Ŵ at (W, α)
  expect_equal(run_quantized(*gpu, QatNoise{}, true, l.num_params), run_quantized(*cpu, QatNoise{}, false, l.num_params),
               "W_hat");

  // the noisy point: nearly every weight equal, the rest within a level of the noise's last place
  QatNoise n;
  n.on = true;
  n.sigma_w = 2e-3;
  n.sigma_s = 1e-3;
  n.seed = 11;
  n.stream = 0x51000005u;
  const std::vector<float> hc = run_quantized(*cpu, n, false, l.num_params);
  const std::vector<float> hg = run_quantized(*gpu, n, true, l.num_params);
  int64_t differ = 0;
  for (size_t i = 0; i < hc.size(); ++i) differ += hc[i] != hg[i];
  EXPECT_LE(differ, static_cast<int64_t>(hc.size() / 1000 + 2)) << "noisy W_hat";

  // backward at the noisy point: the gradient is taken there (W̃, α̃), not at (W, α) — a state
  // that differentiated at (W, α) would give another norm
  std::vector<float> g(static_cast<size_t>(l.num_params));
  for (size_t i = 0; i < g.size(); ++i) g[i] = static_cast<float>(1e-2 * philox_normal_hd(5, 9, i));
  const double noisy_c = run_backward(*cpu, g, false), noisy_g = run_backward(*gpu, g, true);
  EXPECT_NEAR(noisy_g, noisy_c, 1e-9 * noisy_c);
  run_quantized(*cpu, QatNoise{}, false, l.num_params);
  const double clean_c = run_backward(*cpu, g, false);
  EXPECT_GT(std::fabs(clean_c - noisy_c), 1e-7 * noisy_c);  // the check above tells the two points apart
  // from here on both differentiate at the noise-free point
  run_quantized(*gpu, QatNoise{}, true, l.num_params);
  const double nc = run_backward(*cpu, g, false), ng = run_backward(*gpu, g, true);
  EXPECT_NEAR(ng, nc, 1e-9 * nc);

  // AdamW with clipping, from the same gradients: dW is bit-identical, dα ~1e-6 apart, so W
  // (all tensors) must match exactly and α closely
  QatAdam h;
  h.lr = 1e-3f;
  h.weight_decay = 0.1f;
  h.grad_scale = 0.5f;
  h.t = 1;
  cpu->update(h);
  gpu->update(h);
  const QatHostState c1 = cpu->get(), g1 = gpu->get();
  expect_equal(g1.w, c1.w, "W after AdamW");
  expect_equal(g1.m_w, c1.m_w, "AdamW m of W");
  expect_equal(g1.v_w, c1.v_w, "AdamW v of W");
  double worst = 0;
  for (size_t i = 0; i < c1.alpha.size(); ++i)
    worst = std::max(worst, std::fabs(static_cast<double>(g1.alpha[i]) - c1.alpha[i]) / std::fabs(s0.alpha[i]));
  EXPECT_LT(worst, 1e-5) << "alpha after AdamW";
  int64_t moved = 0;
  for (size_t i = 0; i < c1.alpha.size(); ++i) moved += c1.alpha[i] != s0.alpha[i];
  EXPECT_GT(moved, 0) << "the scales learn";

  // WinQ's reset from one shared state: bit for bit
  gpu->set(c1);
  cpu->winq_reset(0.2);
  gpu->winq_reset(0.2);
  expect_equal(gpu->get().w, cpu->get().w, "W after the WinQ reset");
  EXPECT_NE(cpu->get().w, c1.w);
}

}  // namespace

TEST(SM90_QatState, Lsq4BitGroupsMatchesTheCpu) {
  REQUIRE_GPU();
  check_spec(QatSpec::make(4, "lsq", 32));
}

TEST(SM90_QatState, Seq2BitPerRowMatchesTheCpu) {
  REQUIRE_GPU();
  check_spec(QatSpec::make(2, "seq"));
}

TEST(SM90_QatState, TernaryMatchesTheCpu) {
  REQUIRE_GPU();
  check_spec(QatSpec::make(1.58, "seq"));
}
