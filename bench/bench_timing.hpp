#pragma once
// Timing shared by the CPU benchmarks.
#include <algorithm>
#include <chrono>
#include <functional>

namespace nibble::bench {

// The fastest of `reps` runs of f in seconds: the run least disturbed by other load on the
// machine. With warm_up, one untimed run first (page faults, packing buffers, tables).
inline double best_of(int reps, const std::function<void()>& f, bool warm_up = false) {
  if (warm_up) f();
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace nibble::bench
