// SM90_* : the CUDA quantizers and RHT against their CPU twins, bit for bit, on fresh
// random data (outputs poisoned before each run). Skipped, not passed, without a GPU.
#include <gtest/gtest.h>

#include "support/gpu.hpp"

#include <bit>

#include <cmath>
#include <vector>

#include "nibble/cuda.hpp"
#include "nibble/error.hpp"
#include "nibble/philox.hpp"
#include "nibble/quant/rht.hpp"
#include "nibble/quant/synthetic.hpp"

using namespace nibble;

namespace {


std::vector<float> fresh(int64_t rows, int64_t cols, uint64_t seed) {
  SyntheticSpec s;
  s.rows = rows;
  s.cols = cols;
  s.seed = seed;
  s.kind = static_cast<SyntheticKind>(seed % 4);
  std::vector<float> x = synthetic_matrix(s);
  // sprinkle exact ties and tiny blocks so rounding edge cases are exercised
  for (size_t i = 0; i < x.size(); i += 97) x[i] = 0.0f;
  for (size_t i = 5; i < x.size(); i += 131) x[i] = 2.5f;
  return x;
}

}  // namespace

TEST(SM90_Quant, DeviceIsVisible) {
  REQUIRE_GPU();
  std::printf("device: %s\n", cuda::device_summary().c_str());
  EXPECT_GT(cuda::device_count(), 0);
}

TEST(SM90_Quant, FusedQuantDequantMatchesCpuBitExact) {
  REQUIRE_GPU();
  uint64_t seed = 1;
  int checked = 0;
  for (Format f : {Format::NVFP4, Format::MXFP4, Format::INT4})
    for (int block : {16, 32})
      for (bool tile : {false, true})
        for (Rounding rnd : {Rounding::RNE, Rounding::SR})
          for (ScaleRule rule : {ScaleRule::OCP, ScaleRule::RCEIL}) {
            if (rule == ScaleRule::RCEIL && f != Format::MXFP4) continue;
            QuantSpec s = QuantSpec::for_format(f);
            s.block = block;
            s.tile2d = tile;
            s.rounding = rnd;
            s.scale_rule = rule;
            s.seed = 1000 + seed;
            s.stream = static_cast<uint32_t>(seed);
            // odd tile counts (rows = 3·block) and a large matrix
            for (auto [rows, cols] : {std::pair<int64_t, int64_t>{3 * block, 5 * block}, {512, 1024}}) {
              const std::vector<float> x = fresh(rows, cols, seed++);
              std::vector<float> want(x.size());
              quantize_dequantize(x.data(), rows, cols, s, want.data());
              const std::vector<float> got = cuda::quantize_dequantize_host(x.data(), rows, cols, s);
              for (size_t i = 0; i < x.size(); ++i)
                ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(want[i]))
                    << format_name(f) << " block " << block << " tile " << tile << " "
                    << rounding_name(rnd) << " " << scale_rule_name(rule) << " [" << rows << "x" << cols
                    << "] at " << i << ": gpu " << got[i] << " cpu " << want[i];
              ++checked;
            }
          }
  EXPECT_EQ(checked, 2 * (8 + 16 + 8));  // nvfp4, mxfp4 (two scale rules), int4; two shapes
}

TEST(SM90_Quant, PackedCodesScalesAndTensorScaleMatchCpu) {
  REQUIRE_GPU();
  uint64_t seed = 77;
  for (Format f : {Format::NVFP4, Format::MXFP4, Format::INT4})
    for (bool tile : {false, true})
      for (Rounding rnd : {Rounding::RNE, Rounding::SR}) {
        QuantSpec s = QuantSpec::for_format(f);
        s.tile2d = tile;
        s.rounding = rnd;
        s.seed = seed;
        const int64_t rows = 256, cols = 768;
        const std::vector<float> x = fresh(rows, cols, seed++);
        const QuantizedMatrix want = quantize(x.data(), rows, cols, s);
        const QuantizedMatrix got = cuda::quantize_host(x.data(), rows, cols, s);
        EXPECT_EQ(got.codes, want.codes) << format_name(f) << " tile " << tile;
        EXPECT_EQ(got.scales, want.scales) << format_name(f) << " tile " << tile;
        EXPECT_EQ(got.tensor_scale, want.tensor_scale);
        EXPECT_EQ(got.tensor_amax, want.tensor_amax);
      }
}

TEST(SM90_Quant, AllZeroTensor) {
  REQUIRE_GPU();
  std::vector<float> x(64 * 64, 0.0f);
  for (Format f : {Format::NVFP4, Format::MXFP4, Format::INT4}) {
    const std::vector<float> got = cuda::quantize_dequantize_host(x.data(), 64, 64, QuantSpec::for_format(f));
    for (float v : got) ASSERT_EQ(v, 0.0f);
  }
}

TEST(SM90_Quant, NonFiniteInputIsReportedWithItsIndex) {
  REQUIRE_GPU();
  std::vector<float> x = fresh(32, 64, 3);
  x[1234] = NAN;
  x[1500] = INFINITY;
  try {
    cuda::quantize_dequantize_host(x.data(), 32, 64, QuantSpec::for_format(Format::NVFP4));
    FAIL() << "NaN accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("index 1234"), std::string::npos) << e.what();
  }
}

TEST(SM90_Rht, ForwardAndInverseMatchCpuBitExact) {
  REQUIRE_GPU();
  for (int n : {16, 32, 64, 128}) {
    const int64_t rows = 64, cols = 1024;
    const std::vector<float> x = fresh(rows, cols, static_cast<uint64_t>(n));
    const std::vector<float> d = rht_signs(n, 5, static_cast<uint32_t>(n));
    std::vector<float> want = x;
    rht_forward(want.data(), rows, cols, n, d.data());
    const std::vector<float> got = cuda::rht_forward_host(x.data(), rows, cols, n, d);
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(got[i], want[i]) << "n " << n << " at " << i;
    std::vector<float> back = want;
    rht_inverse(back.data(), rows, cols, n, d.data());
    const std::vector<float> got_back = cuda::rht_forward_host(want.data(), rows, cols, n, d, true);
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(got_back[i], back[i]) << "inverse n " << n << " at " << i;
  }
}
