// GPU quantizer throughput against the measured device copy bandwidth (benchmark, not a
// test). Bytes counted are the fewest a pass must move: the input read once and the output
// written once. Prints a table; --json F writes the numbers.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "nibble/cuda.hpp"
#include "nibble/fileio.hpp"
#include "nibble/json.hpp"
#include "nibble/quant/rht.hpp"
#include "nibble/quant/synthetic.hpp"

using namespace nibble;

#define CK(x)                                                                 \
  do {                                                                        \
    cudaError_t e = (x);                                                      \
    if (e != cudaSuccess) {                                                   \
      std::fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e));            \
      std::exit(1);                                                           \
    }                                                                         \
  } while (0)

namespace {
// Median time in ms of `reps` runs after `warm` warm-ups, timed with events.
double median_ms(const std::function<void()>& f, int warm = 3, int reps = 20) {
  for (int i = 0; i < warm; ++i) f();
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    CK(cudaEventRecord(a));
    f();
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  int64_t rows = 8192, cols = 8192;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    else if (!std::strcmp(argv[i], "--rows") && i + 1 < argc) rows = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--cols") && i + 1 < argc) cols = std::atoll(argv[++i]);
  }
  if (cuda::device_count() == 0) {
    std::printf("bench_quant_gpu: no CUDA device, nothing to measure\n");
    return 0;
  }
  const size_t n = static_cast<size_t>(rows * cols);
  SyntheticSpec ss;
  ss.rows = rows;
  ss.cols = cols;
  const std::vector<float> hx = synthetic_matrix(ss);
  float *x, *y;
  uint8_t *codes, *scales;
  float* tensor;
  CK(cudaMalloc(&x, n * 4));
  CK(cudaMalloc(&y, n * 4));
  CK(cudaMalloc(&codes, n / 2));
  CK(cudaMalloc(&scales, n / 16));
  CK(cudaMalloc(&tensor, 8));
  CK(cudaMemcpy(x, hx.data(), n * 4, cudaMemcpyHostToDevice));
  cuda::QuantScratch* scratch = cuda::make_quant_scratch();

  Json out = Json::object();
  out["device"] = cuda::device_summary();
  out["rows"] = rows;
  out["cols"] = cols;
  Json rowsj = Json::array();
  const double copy_ms = median_ms([&] { CK(cudaMemcpyAsync(y, x, n * 4, cudaMemcpyDeviceToDevice)); });
  const double copy_gbs = 2.0 * n * 4 / copy_ms / 1e6;
  std::printf("device: %s\nmatrix [%lld x %lld] fp32 (%.0f MB)\n", cuda::device_summary().c_str(),
              static_cast<long long>(rows), static_cast<long long>(cols), n * 4 / 1e6);
  std::printf("%-32s %9s %9s %9s\n", "operation", "ms", "GB/s", "% copy");
  auto report = [&](const std::string& name, double ms, double bytes) {
    const double gbs = bytes / ms / 1e6;
    std::printf("%-32s %9.3f %9.0f %8.1f%%\n", name.c_str(), ms, gbs, 100.0 * gbs / copy_gbs);
    Json r = Json::object();
    r["op"] = name;
    r["ms"] = ms;
    r["gb_per_s"] = gbs;
    r["pct_of_copy"] = 100.0 * gbs / copy_gbs;
    rowsj.push_back(r);
  };
  report("device copy (ceiling)", copy_ms, 2.0 * n * 4);
  for (Format f : {Format::NVFP4, Format::MXFP4, Format::INT4}) {
    for (Rounding rnd : {Rounding::RNE, Rounding::SR}) {
      QuantSpec s = QuantSpec::for_format(f);
      s.rounding = rnd;
      const std::string tag = std::string(format_name(f)) + (rnd == Rounding::SR ? " SR" : "");
      report(tag + " quant-dequant", median_ms([&] { cuda::quantize_dequantize(x, rows, cols, s, y, scratch); }),
             2.0 * n * 4);
      report(tag + " quantize packed",
             median_ms([&] { cuda::quantize_packed(x, rows, cols, s, codes, scales, tensor, scratch); }),
             n * 4 + n / 2 + n / s.block);
    }
  }
  QuantSpec t = QuantSpec::for_format(Format::NVFP4);
  t.tile2d = true;
  report("nvfp4 16x16 tiles quant-dequant", median_ms([&] { cuda::quantize_dequantize(x, rows, cols, t, y, scratch); }),
         2.0 * n * 4);
  float* signs;
  CK(cudaMalloc(&signs, 128 * 4));
  const std::vector<float> hs = rht_signs(128, 0, 0);
  CK(cudaMemcpy(signs, hs.data(), 128 * 4, cudaMemcpyHostToDevice));
  for (int rn : {16, 128})
    report("rht" + std::to_string(rn) + " forward (in place)",
           median_ms([&] { cuda::rht_forward(y, rows, cols, rn, signs); }), 2.0 * n * 4);
  CK(cudaDeviceSynchronize());
  out["copy_gb_per_s"] = copy_gbs;
  out["results"] = rowsj;
  if (!json_path.empty()) write_file_atomic(json_path, out.dump(2) + "\n");
  cuda::free_quant_scratch(scratch);
  return 0;
}
