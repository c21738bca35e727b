// Host-side cost of `nibble train --stats-every` (benchmark, not a test): one anisotropy_stats
// (power iteration on XᵀX, as the trainer calls it: kStatsEveryPowerIters rounds at most) and one error_stats on
// matrices of 124m's shapes, 16384 tokens (batch 16 × 1024). Two kinds of X: a rank-one mean
// plus heavy-tailed noise (synthetic "activations": the power iteration converges early) and
// plain Gaussian noise (no gap: it runs to the round limit). Then one transformer block's
// worth of statistics (every projection's fprop x, W and dgrad dY) times 12: the statistics'
// share of one collection of the 124m model (the CUDA engine's device→host copies come on
// top). Threads: OMP_NUM_THREADS.
//   bench_stats_cpu [--rows T (16384)] [--iters N (kStatsEveryPowerIters)] [--reps R (3)] [--no-model]
#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "nibble/quant/stats.hpp"
#include "nibble/quant/synthetic.hpp"

#include "bench_timing.hpp"

using namespace nibble;

namespace {

using bench::best_of;

// x̂: x with a relative perturbation of about 2^-4, what a 4-bit quantizer leaves.
std::vector<float> perturbed(const std::vector<float>& x) {
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    y[i] = x[i] * (1.0f + 0.0625f * static_cast<float>(static_cast<int>(i % 7) - 3) / 3.0f);
  return y;
}

int threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace

int main(int argc, char** argv) {
  int64_t rows = 16384;
  int iters = kStatsEveryPowerIters, reps = 3;
  bool model = true;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--no-model")) model = false;
    else if (i + 1 < argc && !std::strcmp(argv[i], "--rows")) rows = std::atoll(argv[++i]);
    else if (i + 1 < argc && !std::strcmp(argv[i], "--iters")) iters = std::atoi(argv[++i]);
    else if (i + 1 < argc && !std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[++i]);
  }
  std::printf("%lld rows, power iteration <= %d rounds, %d threads, best of %d\n\n",
              static_cast<long long>(rows), iters, threads(), reps);
  std::printf("| X | cols | anisotropy s | error_stats s | top1 share | cos(mu, v1) | mean share |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|\n");
  for (const SyntheticKind kind : {SyntheticKind::Activations, SyntheticKind::Gaussian})
    for (const int64_t cols : {int64_t{768}, int64_t{3072}}) {
      const std::vector<float> x = synthetic_matrix(kind, rows, cols, 7), xh = perturbed(x);
      AnisotropyStats a;
      ErrorStats e;
      const double ta = best_of(reps, [&] { a = anisotropy_stats(x.data(), rows, cols, 16, iters); });
      const double te = best_of(reps, [&] { e = error_stats(x.data(), xh.data(), rows * cols); });
      std::printf("| %s | %lld | %.3f | %.3f | %.12f | %.12f | %.12f |\n",
                  std::string(synthetic_kind_name(kind)).c_str(), static_cast<long long>(cols), ta, te,
                  a.top1_energy_share, a.cos_mu_v1, a.mean_energy_share);
    }
  if (!model) return 0;
  // One 124m block (dim 768, ffn 2048): qkv, o, gate_up, down. fprop x (activations) has the
  // input width, dgrad dY (Gaussian: gradients carry little mean) the output width; each gets
  // one anisotropy_stats and one error_stats, and each weight one error_stats.
  struct Linear { int64_t in, out; };
  const Linear block[] = {{768, 2304}, {768, 768}, {768, 4096}, {2048, 768}};
  double total = 0;
  for (const Linear& l : block) {
    const std::vector<float> x = synthetic_matrix(SyntheticKind::Activations, rows, l.in, 11), xh = perturbed(x);
    const std::vector<float> dy = synthetic_matrix(SyntheticKind::Gaussian, rows, l.out, 12), dyh = perturbed(dy);
    const std::vector<float> w = synthetic_matrix(SyntheticKind::Gaussian, l.out, l.in, 13), wh = perturbed(w);
    total += best_of(reps, [&] {
      anisotropy_stats(x.data(), rows, l.in, 16, iters);
      error_stats(x.data(), xh.data(), rows * l.in);
      error_stats(w.data(), wh.data(), l.out * l.in);
      anisotropy_stats(dy.data(), rows, l.out, 16, iters);
      error_stats(dy.data(), dyh.data(), rows * l.out);
    });
  }
  std::printf("\none 124m block's statistics: %.3f s; a collection (12 blocks): %.2f s\n", total, 12 * total);
  return 0;
}
