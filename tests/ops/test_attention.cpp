// Causal grouped-query attention: forward and lse against the explicit
// softmax(QKᵀ/√D + mask)·V in float64, the float64 gradient check (GQA, MHA, MQA), a multi-tile
// backward against explicit float64 formulas, float against float64, thread independence.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "nibble/error.hpp"
#include "nibble/ops/ops.hpp"
#include "support/random_data.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace nibble;
using nibble::testing::random_vec;

namespace {


struct Dims {
  int64_t b, t, hq, hkv, d;
  size_t q_size() const { return static_cast<size_t>(b * t * hq * d); }
  size_t kv_size() const { return static_cast<size_t>(b * t * hkv * d); }
  int64_t qi(int64_t bb, int64_t i, int64_t h) const { return ((bb * t + i) * hq + h) * d; }
  int64_t ki(int64_t bb, int64_t j, int64_t g) const { return ((bb * t + j) * hkv + g) * d; }
};

// The explicit [T, T] probabilities of (batch bb, query head h), float64.
std::vector<double> probabilities(const Dims& s, const std::vector<double>& q, const std::vector<double>& k,
                                  int64_t bb, int64_t h, std::vector<double>* lse_row = nullptr) {
  const int64_t g = h / (s.hq / s.hkv);
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.d));
  std::vector<double> p(static_cast<size_t>(s.t * s.t), 0.0);
  if (lse_row) lse_row->assign(static_cast<size_t>(s.t), 0.0);
  for (int64_t i = 0; i < s.t; ++i) {
    std::vector<double> sc(static_cast<size_t>(s.t), -INFINITY);  // mask: −∞ above the diagonal
    double mx = -INFINITY;
    for (int64_t j = 0; j <= i; ++j) {
      double dot = 0;
      for (int64_t e = 0; e < s.d; ++e) dot += q[s.qi(bb, i, h) + e] * k[s.ki(bb, j, g) + e];
      sc[j] = dot * scale;
      mx = std::max(mx, sc[j]);
    }
    double z = 0;
    for (int64_t j = 0; j < s.t; ++j) z += std::exp(sc[j] - mx);
    for (int64_t j = 0; j < s.t; ++j) p[i * s.t + j] = std::exp(sc[j] - mx) / z;
    if (lse_row) (*lse_row)[i] = mx + std::log(z);
  }
  return p;
}

void naive_forward(const Dims& s, const std::vector<double>& q, const std::vector<double>& k,
                   const std::vector<double>& v, std::vector<double>& out, std::vector<double>& lse) {
  out.assign(s.q_size(), 0.0);
  lse.assign(static_cast<size_t>(s.b * s.hq * s.t), 0.0);
  for (int64_t bb = 0; bb < s.b; ++bb)
    for (int64_t h = 0; h < s.hq; ++h) {
      const int64_t g = h / (s.hq / s.hkv);
      std::vector<double> lr;
      const auto p = probabilities(s, q, k, bb, h, &lr);
      for (int64_t i = 0; i < s.t; ++i) {
        lse[(bb * s.hq + h) * s.t + i] = lr[i];
        for (int64_t j = 0; j < s.t; ++j)
          for (int64_t e = 0; e < s.d; ++e) out[s.qi(bb, i, h) + e] += p[i * s.t + j] * v[s.ki(bb, j, g) + e];
      }
    }
}

// Explicit backward: dV = Pᵀ dO, dP = dO Vᵀ, dS_ij = P_ij (dP_ij − Σ_l P_il dP_il), dQ = dS K/√D,
// dK = dSᵀ Q/√D (the row correction written as Σ P dP, not as the kernel's dO·O).
void naive_backward(const Dims& s, const std::vector<double>& dout, const std::vector<double>& q,
                    const std::vector<double>& k, const std::vector<double>& v, std::vector<double>& dq,
                    std::vector<double>& dk, std::vector<double>& dv) {
  dq.assign(s.q_size(), 0.0);
  dk.assign(s.kv_size(), 0.0);
  dv.assign(s.kv_size(), 0.0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.d));
  for (int64_t bb = 0; bb < s.b; ++bb)
    for (int64_t h = 0; h < s.hq; ++h) {
      const int64_t g = h / (s.hq / s.hkv);
      const auto p = probabilities(s, q, k, bb, h);
      for (int64_t i = 0; i < s.t; ++i) {
        std::vector<double> dp(static_cast<size_t>(s.t), 0.0);
        double corr = 0;
        for (int64_t j = 0; j < s.t; ++j) {
          for (int64_t e = 0; e < s.d; ++e) dp[j] += dout[s.qi(bb, i, h) + e] * v[s.ki(bb, j, g) + e];
          corr += p[i * s.t + j] * dp[j];
        }
        for (int64_t j = 0; j < s.t; ++j) {
          const double pij = p[i * s.t + j], ds = pij * (dp[j] - corr) * scale;
          for (int64_t e = 0; e < s.d; ++e) {
            dv[s.ki(bb, j, g) + e] += pij * dout[s.qi(bb, i, h) + e];
            dq[s.qi(bb, i, h) + e] += ds * k[s.ki(bb, j, g) + e];
            dk[s.ki(bb, j, g) + e] += ds * q[s.qi(bb, i, h) + e];
          }
        }
      }
    }
}

template <class T>
std::vector<T> cast(const std::vector<double>& x) {
  return std::vector<T>(x.begin(), x.end());
}

}  // namespace

TEST(OpsAttention, ForwardAndLseMatchExplicitSoftmax) {
  for (const Dims& s : {Dims{2, 5, 4, 2, 8}, Dims{2, 5, 2, 2, 8}, Dims{1, 7, 3, 1, 4}, Dims{2, 150, 4, 2, 16}}) {
    const auto q = random_vec(s.q_size(), 1, -2, 2), k = random_vec(s.kv_size(), 2, -2, 2),
               v = random_vec(s.kv_size(), 3);
    std::vector<double> ro, rl;
    naive_forward(s, q, k, v, ro, rl);
    std::vector<double> o(s.q_size()), l(rl.size());
    ops::attention_forward(q.data(), k.data(), v.data(), o.data(), l.data(), s.b, s.t, s.hq, s.hkv, s.d);
    for (size_t i = 0; i < o.size(); ++i) ASSERT_NEAR(o[i], ro[i], 1e-13) << "T=" << s.t << " out " << i;
    for (size_t i = 0; i < l.size(); ++i) ASSERT_NEAR(l[i], rl[i], 1e-13) << "T=" << s.t << " lse " << i;
    auto qf = cast<float>(q), kf = cast<float>(k), vf = cast<float>(v);
    std::vector<float> of(o.size()), lf(l.size());
    ops::attention_forward(qf.data(), kf.data(), vf.data(), of.data(), lf.data(), s.b, s.t, s.hq, s.hkv, s.d);
    for (size_t i = 0; i < o.size(); ++i) ASSERT_NEAR(of[i], ro[i], 2e-6) << "float T=" << s.t << " out " << i;
    for (size_t i = 0; i < l.size(); ++i)
      ASSERT_NEAR(lf[i], rl[i], 2e-6 * std::max(1.0, std::fabs(rl[i]))) << "float lse " << i;
  }
  // First query row sees only the first key: out = v_0, lse = q_0·k_0/√D.
  const Dims s{1, 3, 1, 1, 2};
  const std::vector<double> q = {1, 2, 0, 0, 0, 0}, k = {3, -1, 0, 0, 0, 0}, v = {5, 6, 0, 0, 0, 0};
  std::vector<double> o(6), l(3);
  ops::attention_forward(q.data(), k.data(), v.data(), o.data(), l.data(), s.b, s.t, s.hq, s.hkv, s.d);
  EXPECT_EQ(o[0], 5);
  EXPECT_EQ(o[1], 6);
  EXPECT_NEAR(l[0], 1 / std::sqrt(2.0), 1e-15);
  // Row 1 has scores (0, 0): uniform over v_0, v_1 = (2.5, 3), lse = log 2.
  EXPECT_NEAR(o[2], 2.5, 1e-15);
  EXPECT_NEAR(l[1], std::log(2.0), 1e-15);
}

TEST(OpsAttention, Float64GradientCheck) {
  for (const Dims& s : {Dims{2, 5, 4, 2, 8}, Dims{2, 5, 2, 2, 8}, Dims{1, 4, 2, 1, 6}}) {
    auto q = random_vec(s.q_size(), 4, -1.5, 1.5), k = random_vec(s.kv_size(), 5, -1.5, 1.5),
         v = random_vec(s.kv_size(), 6);
    const auto r = random_vec(s.q_size(), 7);
    const size_t nl = static_cast<size_t>(s.b * s.hq * s.t);
    auto loss = [&] {
      std::vector<double> o(s.q_size()), l(nl);
      ops::attention_forward(q.data(), k.data(), v.data(), o.data(), l.data(), s.b, s.t, s.hq, s.hkv, s.d);
      double sum = 0;
      for (size_t i = 0; i < o.size(); ++i) sum += o[i] * r[i];
      return sum;
    };
    std::vector<double> o(s.q_size()), l(nl), dq(s.q_size(), 9.0), dk(s.kv_size(), 9.0), dv(s.kv_size(), 9.0);
    ops::attention_forward(q.data(), k.data(), v.data(), o.data(), l.data(), s.b, s.t, s.hq, s.hkv, s.d);
    ops::attention_backward(r.data(), q.data(), k.data(), v.data(), o.data(), l.data(), dq.data(), dk.data(),
                            dv.data(), s.b, s.t, s.hq, s.hkv, s.d);  // written, not accumulated
    for (auto* pr : {&q, &k, &v}) {
      std::vector<double>& x = *pr;
      const std::vector<double>& g = pr == &q ? dq : pr == &k ? dk : dv;
      const char* name = pr == &q ? "dq" : pr == &k ? "dk" : "dv";
      double gmax = 0;
      for (double e : g) gmax = std::max(gmax, std::fabs(e));
      ASSERT_GT(gmax, 1e-2) << name;
      for (size_t i = 0; i < x.size(); ++i) {
        const double x0 = x[i], h = 1e-6 * std::max(1.0, std::fabs(x0));
        x[i] = x0 + h;
        const double lp = loss();
        x[i] = x0 - h;
        const double lm = loss();
        x[i] = x0;
        EXPECT_NEAR((lp - lm) / (2 * h), g[i], 1e-7 * std::max(1.0, std::fabs(g[i])))
            << name << "[" << i << "] Hq=" << s.hq << " Hkv=" << s.hkv;
      }
    }
  }
}

TEST(OpsAttention, MultiTileBackwardMatchesExplicitFormulas) {
  // T = 150 spans three 64-row tiles; float64 and float against the explicit backward.
  const Dims s{2, 150, 4, 2, 16};
  const auto q = random_vec(s.q_size(), 8, -2, 2), k = random_vec(s.kv_size(), 9, -2, 2),
             v = random_vec(s.kv_size(), 10), dout = random_vec(s.q_size(), 11);
  std::vector<double> rq, rk, rv;
  naive_backward(s, dout, q, k, v, rq, rk, rv);
  std::vector<double> o(s.q_size()), l(static_cast<size_t>(s.b * s.hq * s.t)), dq(s.q_size()), dk(s.kv_size()),
      dv(s.kv_size());
  ops::attention_forward(q.data(), k.data(), v.data(), o.data(), l.data(), s.b, s.t, s.hq, s.hkv, s.d);
  ops::attention_backward(dout.data(), q.data(), k.data(), v.data(), o.data(), l.data(), dq.data(), dk.data(),
                          dv.data(), s.b, s.t, s.hq, s.hkv, s.d);
  for (size_t i = 0; i < dq.size(); ++i) ASSERT_NEAR(dq[i], rq[i], 1e-12) << "dq " << i;
  for (size_t i = 0; i < dk.size(); ++i) ASSERT_NEAR(dk[i], rk[i], 1e-12) << "dk " << i;
  for (size_t i = 0; i < dv.size(); ++i) ASSERT_NEAR(dv[i], rv[i], 1e-12) << "dv " << i;
  auto qf = cast<float>(q), kf = cast<float>(k), vf = cast<float>(v), df = cast<float>(dout);
  std::vector<float> of(o.size()), lf(l.size()), dqf(dq.size()), dkf(dk.size()), dvf(dv.size());
  ops::attention_forward(qf.data(), kf.data(), vf.data(), of.data(), lf.data(), s.b, s.t, s.hq, s.hkv, s.d);
  ops::attention_backward(df.data(), qf.data(), kf.data(), vf.data(), of.data(), lf.data(), dqf.data(), dkf.data(),
                          dvf.data(), s.b, s.t, s.hq, s.hkv, s.d);
  for (size_t i = 0; i < dq.size(); ++i) ASSERT_NEAR(dqf[i], rq[i], 2e-5 * std::max(1.0, std::fabs(rq[i]))) << i;
  for (size_t i = 0; i < dk.size(); ++i) ASSERT_NEAR(dkf[i], rk[i], 2e-5 * std::max(1.0, std::fabs(rk[i]))) << i;
  for (size_t i = 0; i < dv.size(); ++i) ASSERT_NEAR(dvf[i], rv[i], 2e-5 * std::max(1.0, std::fabs(rv[i]))) << i;
}

TEST(OpsAttention, FloatResultsDoNotDependOnThreadCount) {
#ifdef _OPENMP
  const Dims s{2, 130, 4, 2, 32};
  const auto q = cast<float>(random_vec(s.q_size(), 12)), k = cast<float>(random_vec(s.kv_size(), 13)),
             v = cast<float>(random_vec(s.kv_size(), 14)), dout = cast<float>(random_vec(s.q_size(), 15));
  const size_t nl = static_cast<size_t>(s.b * s.hq * s.t);
  std::vector<float> o[2], l[2], dq[2], dk[2], dv[2];
  const int saved = omp_get_max_threads();
  for (int r = 0; r < 2; ++r) {
    omp_set_num_threads(r + 1);
    o[r].resize(s.q_size());
    l[r].resize(nl);
    dq[r].resize(s.q_size());
    dk[r].resize(s.kv_size());
    dv[r].resize(s.kv_size());
    ops::attention_forward(q.data(), k.data(), v.data(), o[r].data(), l[r].data(), s.b, s.t, s.hq, s.hkv, s.d);
    ops::attention_backward(dout.data(), q.data(), k.data(), v.data(), o[r].data(), l[r].data(), dq[r].data(),
                            dk[r].data(), dv[r].data(), s.b, s.t, s.hq, s.hkv, s.d);
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(o[0], o[1]);
  EXPECT_EQ(l[0], l[1]);
  EXPECT_EQ(dq[0], dq[1]);
  EXPECT_EQ(dk[0], dk[1]);
  EXPECT_EQ(dv[0], dv[1]);
#else
  GTEST_SKIP() << "built without OpenMP";
#endif
}

TEST(OpsAttention, HeadCountsMustDivide) {
  std::vector<float> x(64);
  EXPECT_THROW(ops::attention_forward(x.data(), x.data(), x.data(), x.data(), x.data(), 1, 2, 3, 2, 4), Error);
}
