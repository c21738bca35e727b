// The host's small SVD (quant/small_svd.cpp) on the l × l triangular factors metis hands it
// (benchmark, not a test): the time per call at the sizes of the study's layers (l = 40, 56, 72)
// and a larger one, best of 30 calls. On a GPU step the device waits for each call, 48 a step
// at 124m, so this time is on metis's critical path.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "nibble/fileio.hpp"
#include "nibble/json.hpp"
#include "nibble/quant/small_svd.hpp"
#include "nibble/quant/spectral.hpp"

#include "bench_timing.hpp"

using namespace nibble;

int main(int argc, char** argv) {
  std::string json_path;
  for (int i = 1; i < argc; ++i)
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
  Json results = Json::array();
  std::printf("%-6s %10s\n", "l", "ms");
  for (int64_t l : {40, 56, 72, 128}) {
    // an upper-triangular factor with graded rows, as R of a subspace basis: column-major
    std::vector<double> a(static_cast<size_t>(l * l), 0.0);
    for (int64_t i = 0; i < l; ++i)
      for (int64_t j = i; j < l; ++j) a[j * l + i] = philox_normal(3, 4, static_cast<uint64_t>(i * l + j)) / (1.0 + i);
    double sink = 0;
    const double s = bench::best_of(30, [&] { sink += small_svd(a, l).sigma[0]; }, true);
    std::printf("%-6lld %10.3f\n", static_cast<long long>(l), s * 1e3);
    Json r = Json::object();
    r["l"] = l;
    r["ms"] = s * 1e3;
    r["sigma0"] = sink;
    results.push_back(r);
  }
  if (!json_path.empty()) write_file_atomic(json_path, results.dump(2) + "\n");
  return 0;
}
