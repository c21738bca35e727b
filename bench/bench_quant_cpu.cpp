// CPU quantizer throughput on a 4096×4096 LLM-like activation matrix (benchmark, not a
// test): quantize (packed), dequantize, fused quantize-dequantize, RHT, centring and the
// full `nibble quant` pipeline, for each format. Prints a table; --json F writes JSON.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>

#include "nibble/fileio.hpp"
#include "nibble/json.hpp"
#include "nibble/quant/centering.hpp"
#include "nibble/quant/pipeline.hpp"
#include "nibble/quant/rht.hpp"
#include "nibble/quant/synthetic.hpp"

#include "bench_timing.hpp"

using namespace nibble;

using bench::best_of;

int main(int argc, char** argv) {
  int64_t rows = 4096, cols = 4096;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    else if (!std::strcmp(argv[i], "--rows") && i + 1 < argc) rows = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--cols") && i + 1 < argc) cols = std::atoll(argv[++i]);
  }
  SyntheticSpec ss;
  ss.rows = rows;
  ss.cols = cols;
  const std::vector<float> x = synthetic_matrix(ss);
  const double mb = static_cast<double>(rows * cols) * 4 / 1e6;
  std::vector<float> y(x.size());
  Json results = Json::array();
  std::printf("CPU quantizers, [%lld x %lld] float32 (%.0f MB)\n", static_cast<long long>(rows),
              static_cast<long long>(cols), mb);
  std::printf("%-34s %10s %10s\n", "operation", "ms", "MB/s in");
  auto report = [&](const std::string& name, double s) {
    std::printf("%-34s %10.1f %10.0f\n", name.c_str(), s * 1e3, mb / s);
    Json r = Json::object();
    r["op"] = name;
    r["ms"] = s * 1e3;
    r["mb_per_s"] = mb / s;
    results.push_back(r);
  };
  for (Format f : {Format::NVFP4, Format::MXFP4, Format::INT4}) {
    const std::string fn(format_name(f));
    QuantSpec q = QuantSpec::for_format(f);
    QuantizedMatrix qm;
    report(fn + " quantize (packed)", best_of(3, [&] { qm = quantize(x.data(), rows, cols, q); }));
    report(fn + " dequantize", best_of(3, [&] { dequantize(qm, y.data()); }));
    report(fn + " quantize-dequantize", best_of(3, [&] { quantize_dequantize(x.data(), rows, cols, q, y.data()); }));
    q.rounding = Rounding::SR;
    report(fn + " quantize-dequantize SR", best_of(3, [&] { quantize_dequantize(x.data(), rows, cols, q, y.data()); }));
  }
  const std::vector<float> d16 = rht_signs(16, 0, 0), d128 = rht_signs(128, 0, 0);
  report("rht16 forward", best_of(3, [&] { y = x; rht_forward(y.data(), rows, cols, 16, d16.data()); }));
  report("rht128 forward", best_of(3, [&] { y = x; rht_forward(y.data(), rows, cols, 128, d128.data()); }));
  report("column mean + centre", best_of(3, [&] {
           y = x;
           const auto mu = column_mean(x.data(), rows, cols);
           subtract_column_vector(y.data(), rows, cols, mu.data());
         }));
  TransformSpec t;
  report("pipeline nvfp4", best_of(3, [&] { quantize_pipeline(x.data(), rows, cols, QuantSpec::for_format(Format::NVFP4), t); }));
  t.center = true;
  t.rht = 16;
  report("pipeline ufp4 (int4+rht16+centre)", best_of(3, [&] { quantize_pipeline(x.data(), rows, cols, QuantSpec::for_format(Format::INT4), t); }));
  if (!json_path.empty()) write_file_atomic(json_path, results.dump(2) + "\n");
  return 0;
}
