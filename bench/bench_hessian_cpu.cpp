// Hessian tools' host-side cost (not a test): the float64 vector work of a Hessian-vector
// product, a power iteration and a Lanczos step on a problem the size of a real model, with a
// gradient that costs almost nothing (a fixed diagonal quadratic), so what is timed is
// nibble hessian's own passes over memory — on a GPU run the gradients take milliseconds and
// this is most of a spectrum's time.
//   bench_hessian_cpu [--params N (default 58e6, the 60m preset)] [--steps S (Lanczos, 8)]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "nibble/qat/hessian.hpp"

using namespace nibble;

int main(int argc, char** argv) {
  int64_t n = 58000000;
  int steps = 8;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--params")) n = static_cast<int64_t>(std::atof(argv[i + 1]));
    else if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
  }
  HessianProblem p;
  p.w.assign(static_cast<size_t>(n), 0.01);
  p.grad = [](const std::vector<double>& w) {  // H = diag(1..7): the gradient is one pass
    std::vector<double> g(w.size());
    const auto m = static_cast<int64_t>(w.size());
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < m; ++i) g[i] = (1.0 + static_cast<double>(i % 7)) * w[i];
    return g;
  };
  using Clock = std::chrono::steady_clock;
  auto secs = [](Clock::time_point a) { return std::chrono::duration<double>(Clock::now() - a).count(); };
  const std::vector<double> v(static_cast<size_t>(n), 1.0);
  auto t0 = Clock::now();
  const std::vector<double> hv = hvp(p, v);
  const double t_hvp = secs(t0);
  t0 = Clock::now();
  const EigenResult e = top_eigen(p, 1, 5, 1e-12);
  const double t_power = secs(t0) / 5;
  t0 = Clock::now();
  const SpectralDensity d = slq_density(p, 1, steps, 100, 0.01);
  const double t_lanczos = secs(t0) / steps;
  std::printf("%lld parameters (%.2f GB a float64 vector)\n", static_cast<long long>(n), static_cast<double>(n) * 8 / 1e9);
  std::printf("| step | seconds |\n|---|---:|\n");
  std::printf("| Hessian-vector product (first) | %.3f |\n| power iteration | %.3f |\n| Lanczos step (%d steps, full reorthogonalisation) | %.3f |\n",
              t_hvp, t_power, steps, t_lanczos);
  std::printf("(top eigenvalue %.4f, expected 7; %zu density points)\n", e.values[0], d.density.size());
  return hv.empty() ? 1 : 0;
}
