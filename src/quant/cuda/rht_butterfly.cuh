#pragma once
// The fast Walsh–Hadamard butterflies of the RHT (SPEC §4.1) on one n-block held by
// kLanes = min(N, 32) lanes, each with N / kLanes values at positions lane + kLanes·i. Stages
// with stride h < kLanes exchange values through shuffles, wider ones combine a lane's own
// registers. Every output comes from the same float64 additions in the same stage order as
// the CPU's fwht() (lower = a + b, upper = a − b), so callers reproduce the CPU bit for bit.
// Every lane of the warp must call it.
namespace nibble::cuda {

template <int N>
struct RhtLanes {
  static constexpr int kLanes = N < 32 ? N : 32;
  static constexpr int kPerLane = N / kLanes;
};

template <int N>
__device__ __forceinline__ void rht_butterflies(double (&t)[RhtLanes<N>::kPerLane], int lane) {
  constexpr int kLanes = RhtLanes<N>::kLanes, kPerLane = RhtLanes<N>::kPerLane;
#pragma unroll
  for (int h = 1; h < N; h <<= 1) {
    if (h < kLanes) {
      const bool upper = (lane & h) != 0;
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) {
        const double other = __shfl_xor_sync(0xffffffffu, t[i], h);
        t[i] = upper ? other - t[i] : t[i] + other;
      }
    } else {
      const int stride = h / kLanes;
#pragma unroll
      for (int i = 0; i < kPerLane; ++i)
        if ((i & stride) == 0) {
          const double a = t[i], b = t[i + stride];
          t[i] = a + b;
          t[i + stride] = a - b;
        }
    }
  }
}

}  // namespace nibble::cuda
