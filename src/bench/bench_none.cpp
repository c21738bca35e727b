// `nibble bench` kernel measurements in a build without CUDA: a clear error.
#ifndef NIBBLE_WITH_CUDA
#include "nibble/bench.hpp"
#include "nibble/error.hpp"

namespace nibble::bench {
Json gpu_quantizer_bench(int64_t, int64_t) { fail("the kernel benchmarks need the CUDA backend (this build has none)"); }
Json gpu_gemm_bench(const std::vector<GemmShape>&, const std::vector<std::string>&) {
  fail("the kernel benchmarks need the CUDA backend (this build has none)");
}
Json gpu_spectral_bench(const std::vector<SpectralShape>&) {
  fail("the kernel benchmarks need the CUDA backend (this build has none)");
}
double gpu_bf16_peak_flops() { return 0.0; }
}  // namespace nibble::bench
#endif
