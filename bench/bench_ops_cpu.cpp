// CPU ops benchmark (not a test): GFLOP/s of the float GEMM (matmul_nt and the transposed
// forms the trainer's backward uses) on trainer-like shapes, and the time of every other op,
// forward and backward, for the tiny and 20m model presets at 2048 tokens.
//   bench_ops_cpu [--kernel auto|avx512|avx2|generic] [--reps N] [--quick]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "nibble/ops/ops.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

#include "bench_timing.hpp"

using namespace nibble;

namespace {

// every kernel gets an untimed warm-up run (page faults, packing buffers, rope tables)
double best_of(int reps, const std::function<void()>& f) { return bench::best_of(reps, f, true); }

std::vector<float> random_vec(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937_64 rng(seed);
  std::vector<float> x(n);
  for (auto& e : x) e = lo + (hi - lo) * static_cast<float>(static_cast<double>(rng() >> 11) * 0x1.0p-53);
  return x;
}

void bench_gemm(const char* form, bool ta, bool tb, int64_t m, int64_t n, int64_t k, int reps) {
  const auto a = random_vec(static_cast<size_t>(m * k), 1), b = random_vec(static_cast<size_t>(n * k), 2);
  std::vector<float> c(static_cast<size_t>(m * n));
  const int64_t lda = ta ? m : k, ldb = tb ? k : n;
  const double s = best_of(reps, [&] { ops::gemm(ta, tb, m, n, k, a.data(), lda, b.data(), ldb, c.data(), n); });
  std::printf("%-4s %6lld %6lld %6lld %10.3f %10.1f\n", form, static_cast<long long>(m), static_cast<long long>(n),
              static_cast<long long>(k), s * 1e3, 2.0 * m * n * k / s / 1e9);
}

struct Model {
  const char* name;
  int64_t b, t, c, hq, hkv, ffn, vocab;
};

void bench_model(const Model& md, int reps) {
  const int64_t n = md.b * md.t, d = md.c / md.hq, c = md.c, f = md.ffn, v = md.vocab;
  std::printf("\n%s: B=%lld T=%lld dim=%lld heads=%lld/%lld head_dim=%lld ffn=%lld vocab=%lld (%lld tokens)\n",
              md.name, static_cast<long long>(md.b), static_cast<long long>(md.t), static_cast<long long>(c),
              static_cast<long long>(md.hq), static_cast<long long>(md.hkv), static_cast<long long>(d),
              static_cast<long long>(f), static_cast<long long>(v), static_cast<long long>(n));
  std::printf("%-28s %10s\n", "op", "ms");
  auto report = [](const char* op, double s) { std::printf("%-28s %10.3f\n", op, s * 1e3); };

  std::vector<int32_t> tok(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) tok[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7919) % v);
  const auto wte = random_vec(static_cast<size_t>(v * c), 3);
  std::vector<float> x(static_cast<size_t>(n * c)), dwte(wte.size(), 0.0f);
  report("embedding fwd", best_of(reps, [&] { ops::embedding_forward(tok.data(), wte.data(), x.data(), n, c); }));
  report("embedding bwd", best_of(reps, [&] { ops::embedding_backward(tok.data(), x.data(), dwte.data(), n, c); }));

  const auto w = random_vec(static_cast<size_t>(c), 4, 0.5f, 1.5f);
  std::vector<float> y(x.size()), rstd(static_cast<size_t>(n)), dx(x.size()), dw(static_cast<size_t>(c), 0.0f);
  report("rmsnorm fwd", best_of(reps, [&] { ops::rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), n, c, 1e-5f); }));
  report("rmsnorm bwd", best_of(reps, [&] {
           ops::rmsnorm_backward(y.data(), x.data(), w.data(), rstd.data(), dx.data(), dw.data(), n, c);
         }));

  auto q = random_vec(static_cast<size_t>(n * md.hq * d), 5), k = random_vec(static_cast<size_t>(n * md.hkv * d), 6),
       vv = random_vec(static_cast<size_t>(n * md.hkv * d), 7), dout = random_vec(q.size(), 8);
  report("rope fwd (q)", best_of(reps, [&] { ops::rope_forward(q.data(), md.b, md.t, md.hq, d, 10000.0); }));
  report("rope bwd (q)", best_of(reps, [&] { ops::rope_backward(q.data(), md.b, md.t, md.hq, d, 10000.0); }));

  std::vector<float> o(q.size()), lse(static_cast<size_t>(md.b * md.hq * md.t)), dq(q.size()), dk(k.size()),
      dv(vv.size());
  const double att_flop = 4.0 * md.b * md.hq * (md.t * (md.t + 1) / 2.0) * d;  // QKᵀ and PV, causal half
  const double af = best_of(reps, [&] {
    ops::attention_forward(q.data(), k.data(), vv.data(), o.data(), lse.data(), md.b, md.t, md.hq, md.hkv, d);
  });
  const double ab = best_of(reps, [&] {
    ops::attention_backward(dout.data(), q.data(), k.data(), vv.data(), o.data(), lse.data(), dq.data(), dk.data(),
                            dv.data(), md.b, md.t, md.hq, md.hkv, d);
  });
  std::printf("%-28s %10.3f   (%.1f GFLOP/s)\n", "attention fwd", af * 1e3, att_flop / af / 1e9);
  std::printf("%-28s %10.3f   (%.1f GFLOP/s incl. recompute)\n", "attention bwd", ab * 1e3, 2.5 * att_flop / ab / 1e9);

  const auto g = random_vec(static_cast<size_t>(n * f), 9, -4, 4), u = random_vec(g.size(), 10);
  std::vector<float> s(g.size()), dg(g.size()), du(g.size());
  report("swiglu fwd", best_of(reps, [&] { ops::swiglu_forward(g.data(), u.data(), s.data(), n * f); }));
  report("swiglu bwd", best_of(reps, [&] {
           ops::swiglu_backward(u.data(), g.data(), u.data(), dg.data(), du.data(), n * f);
         }));

  const auto logits = random_vec(static_cast<size_t>(n * v), 11, -5, 5);
  std::vector<float> dlogits(logits.size());
  std::vector<int32_t> targets(tok);
  targets[0] = -1;
  report("cross_entropy fwd+bwd", best_of(reps, [&] {
           ops::cross_entropy(logits.data(), targets.data(), dlogits.data(), n, v);
         }));

  std::vector<float> resid(x.size(), 0.0f);
  report("add_inplace (residual)", best_of(reps, [&] { ops::add_inplace(resid.data(), x.data(), n * c); }));

  // AdamW over a parameter count like the model's (12·L·dim² blocks of L=4..8 plus embeddings).
  const int64_t params = 12 * 8 * c * c + v * c;
  std::vector<float> p = random_vec(static_cast<size_t>(params), 12), gr = random_vec(p.size(), 13), m(p.size(), 0.0f),
                     mv(p.size(), 0.0f);
  int64_t step = 0;
  char label[64];
  std::snprintf(label, sizeof label, "adamw (%.1fM params)", params / 1e6);
  report(label, best_of(reps, [&] {
           ops::adamw_update(p.data(), gr.data(), m.data(), mv.data(), params, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f,
                             ++step);
         }));
  const float* bufs[1] = {gr.data()};
  report("global_norm", best_of(reps, [&] { (void)ops::global_norm(bufs, &params, 1); }));
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 5;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--kernel") && i + 1 < argc) {
      if (!ops::set_matmul_kernel(argv[++i])) {
        std::fprintf(stderr, "kernel '%s' unknown or not supported by this CPU\n", argv[i]);
        return 1;
      }
    } else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (!std::strcmp(argv[i], "--quick")) {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: bench_ops_cpu [--kernel auto|avx512|avx2|generic] [--reps N] [--quick]\n");
      return 2;
    }
  }
#ifdef _OPENMP
  const int threads = omp_get_max_threads();
#else
  const int threads = 1;
#endif
  std::printf("CPU ops, float32, %d thread(s), GEMM kernel %s, best of %d\n\n", threads, ops::matmul_kernel(), reps);
  std::printf("%-4s %6s %6s %6s %10s %10s\n", "form", "M", "N", "K", "ms", "GFLOP/s");
  const std::vector<int64_t> widths = quick ? std::vector<int64_t>{128, 768} : std::vector<int64_t>{128, 384, 512, 768, 2048};
  for (int64_t nn : widths)
    for (int64_t kk : widths) bench_gemm("NT", false, true, 2048, nn, kk, reps);
  bench_gemm("NT", false, true, 1024, 1024, 1024, reps);
  bench_gemm("NT", false, true, 2048, 2048, 2048, reps);
  bench_gemm("NT", false, true, 2048, 1000, 129, reps);  // odd edges
  // The backward's forms without explicit transposes: dX = dY·W (NN), dW = dYᵀ·X (TN).
  bench_gemm("NN", false, false, 2048, 768, 768, reps);
  bench_gemm("TN", true, false, 768, 768, 2048, reps);
  bench_gemm("TN", true, false, 128, 384, 2048, reps);

  bench_model({"tiny preset", 8, 256, 128, 4, 4, 384, 256}, reps);
  if (!quick) bench_model({"20m preset", 2, 1024, 256, 8, 8, 768, 50304}, reps);
  return 0;
}
