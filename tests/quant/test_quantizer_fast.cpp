// The fast CPU quantizer kernels (src/quant/quantizer_fast.cpp) against a frozen copy of
// the original scalar implementation: bit for bit, for every format, block, tiling,
// rounding and scale rule, on data built to hit the rounding ties, saturation, zero and
// zero-scale blocks, subnormals and huge values.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "nibble/dtype.hpp"
#include "nibble/error.hpp"
#include "nibble/fp8.hpp"
#include "nibble/philox.hpp"
#include "nibble/quant/block_codec.hpp"
#include "nibble/quant/quantizer.hpp"
#include "quant/quantizer_fast.hpp"

using namespace nibble;

namespace {

// ---- frozen reference: the scalar implementation as it was before the fast kernels ----
// (src/quant/quantizer.cpp at commit 7b89c65, minus its OpenMP pragmas, on which no result
// depended; do not "improve" it).
namespace ref {

float tensor_amax(const float* x, int64_t n) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (!(a <= 3.4028234664e38f))  // NaN or Inf
      throw NonFiniteValue(detail::concat("input has a non-finite value (", x[i], ") at flat index ", i));
    m = std::max(m, a);
  }
  return m;
}

struct Scales {
  std::vector<uint8_t> bytes;
  std::vector<float> value;
  std::vector<float> mul;
  float amax = 0, s_enc = 1, s_dec = 1;
};

Scales compute_scales(const float* x, int64_t rows, int64_t cols, const QuantSpec& spec) {
  Scales s;
  const int64_t b = spec.block;
  const int64_t srows = spec.tile2d ? rows / b : rows, scols = cols / b;
  const size_t nblocks = static_cast<size_t>(srows * scols);
  s.bytes.resize(nblocks);
  s.value.resize(nblocks);
  s.mul.resize(nblocks);
  s.amax = tensor_amax(x, rows * cols);
  const bool tensor_scaled = format_has_tensor_scale(spec.format);
  if (tensor_scaled) {
    s.s_enc = nibble::tensor_encode_scale(spec.format, s.amax);
    s.s_dec = 1.0f / s.s_enc;
  }
  const float inv_gmax = 1.0f / grid_max(format_grid(spec.format));
  const int64_t rows_per_block = spec.tile2d ? b : 1;
  for (int64_t sr = 0; sr < srows; ++sr) {
    for (int64_t sc = 0; sc < scols; ++sc) {
      float a_b = 0.0f;
      for (int64_t r = sr * rows_per_block; r < (sr + 1) * rows_per_block; ++r) {
        const float* p = x + r * cols + sc * b;
        for (int64_t j = 0; j < b; ++j) a_b = std::max(a_b, std::fabs(p[j]));
      }
      const size_t k = static_cast<size_t>(sr * scols + sc);
      if (tensor_scaled) {
        s.bytes[k] = codec::e4m3_block_scale(a_b, s.s_enc, inv_gmax);
        s.value[k] = e4m3_decode(s.bytes[k]);
        s.mul[k] = codec::e4m3_encode_multiplier(s.value[k], s.s_dec);
      } else {
        s.bytes[k] = codec::e8m0_block_scale(a_b, spec.scale_rule == ScaleRule::RCEIL);
        s.value[k] = ldexpf(1.0f, static_cast<int>(s.bytes[k]) - 127);
        s.mul[k] = ldexpf(1.0f, 127 - static_cast<int>(s.bytes[k]));
      }
    }
  }
  return s;
}

template <bool kStochastic, class Emit>
void encode_elements_impl(const float* x, int64_t rows, int64_t cols, const QuantSpec& spec,
                          const Scales& s, Emit emit) {
  const Grid g = format_grid(spec.format);
  const int64_t b = spec.block, scols = cols / b;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t srow = spec.tile2d ? r / b : r;
    for (int64_t sc = 0; sc < scols; ++sc) {
      const int64_t k = srow * scols + sc;
      const float mul = s.mul[static_cast<size_t>(k)];
      const uint64_t base = static_cast<uint64_t>(r * cols + sc * b);
      for (int64_t j = 0; j < b; j += 4) {
        Philox4 rnd{};
        if constexpr (kStochastic) rnd = philox_group(spec.seed, spec.stream, (base + j) >> 2);
        for (int l = 0; l < 4; ++l) {
          const uint64_t i = base + static_cast<uint64_t>(j + l);
          const float u = kStochastic ? philox_uniform_from_word(rnd.v[l]) : 0.0f;
          emit(i, codec::encode_element(g, x[i], mul, kStochastic, u), k);
        }
      }
    }
  }
}

template <class Emit>
void encode_elements(const float* x, int64_t rows, int64_t cols, const QuantSpec& spec,
                     const Scales& s, Emit emit) {
  if (spec.rounding == Rounding::SR) encode_elements_impl<true>(x, rows, cols, spec, s, emit);
  else encode_elements_impl<false>(x, rows, cols, spec, s, emit);
}

QuantizedMatrix quantize(const float* x, int64_t rows, int64_t cols, const QuantSpec& spec) {
  validate_quant_shape(spec, rows, cols);
  QuantizedMatrix q;
  q.spec = spec;
  q.rows = rows;
  q.cols = cols;
  Scales s = compute_scales(x, rows, cols, spec);
  q.codes.assign(static_cast<size_t>(rows * cols / 2), 0);
  uint8_t* codes = q.codes.data();
  encode_elements(x, rows, cols, spec, s, [codes](uint64_t i, uint8_t code, int64_t) {
    set_nibble(codes, static_cast<size_t>(i), code);
  });
  q.scales = std::move(s.bytes);
  q.tensor_amax = format_has_tensor_scale(spec.format) ? s.amax : 0.0f;
  q.tensor_scale = s.s_dec;
  return q;
}

void quantize_dequantize(const float* x, int64_t rows, int64_t cols, const QuantSpec& spec,
                         float* out) {
  validate_quant_shape(spec, rows, cols);
  const Scales s = compute_scales(x, rows, cols, spec);
  const Grid g = format_grid(spec.format);
  encode_elements(x, rows, cols, spec, s, [&](uint64_t i, uint8_t code, int64_t k) {
    out[i] = codec::decode_element(g, code, s.value[k], s.s_dec);
  });
}

}  // namespace ref

// ---- test data ---------------------------------------------------------------------------

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// A small deterministic generator (independent of the Philox under test).
struct Rng {
  uint64_t s;
  uint64_t next() {
    s += 0x9E3779B97F4A7C15ull;
    uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }
  int below(int n) { return static_cast<int>(next() % static_cast<uint64_t>(n)); }
};

enum class Dist { Uniform, HeavyTail, GridTies, Mixed, Tiny, Huge };
const char* dist_name(Dist d) {
  switch (d) {
    case Dist::Uniform: return "uniform";
    case Dist::HeavyTail: return "heavy";
    case Dist::GridTies: return "ties";
    case Dist::Mixed: return "mixed";
    case Dist::Tiny: return "tiny";
    case Dist::Huge: return "huge";
  }
  return "?";
}

// Values on and between the grid points of e2m1 and int4 (in units of the block step),
// including every RNE tie, the SR interval ends and values beyond the grid max.
constexpr float kGridPoints[] = {0.0f,  0.25f, 0.5f, 0.75f, 1.0f,  1.25f, 1.5f, 1.75f, 2.0f,
                                 2.25f, 2.5f,  3.0f, 3.5f,  4.0f,  4.5f,  5.0f, 5.5f,  6.0f,
                                 6.5f,  7.0f,  7.5f, 8.0f,  0.125f, 2.75f, 3.25f, 6.75f};

// Fills [rows, cols]. GridTies makes the tensor scale 1 (one element = 448·gmax) and gives
// each 16 elements an amax of gmax·s with s a power of two, so that x·e_b lands exactly on
// the grid points above (for nvfp4, int4 and mxfp4 alike; fl(gmax · fl(1/gmax)) = 1).
std::vector<float> make_matrix(Dist d, int64_t rows, int64_t cols, uint64_t seed, float gmax) {
  Rng rng{seed * 7919 + static_cast<uint64_t>(d)};
  std::vector<float> x(static_cast<size_t>(rows * cols));
  const int npts = static_cast<int>(sizeof(kGridPoints) / sizeof(kGridPoints[0]));
  for (size_t i = 0; i < x.size(); ++i) {
    const float sign = (rng.next() & 1) ? -1.0f : 1.0f;
    switch (d) {
      case Dist::Uniform:
        x[i] = 2.0f * rng.uniform() - 1.0f;
        break;
      case Dist::HeavyTail:
        x[i] = sign * rng.uniform() * (rng.uniform() < 0.02f ? 50.0f : 1.0f) *
               std::ldexp(1.0f, rng.below(20) - 10);
        break;
      case Dist::GridTies:  // (set per 16 elements below)
        x[i] = sign * kGridPoints[rng.below(npts)];
        break;
      case Dist::Mixed: {
        const int k = rng.below(12);
        if (k == 0) x[i] = 0.0f;
        else if (k == 1) x[i] = -0.0f;
        else if (k == 2) x[i] = sign * 1e-40f * rng.uniform();  // subnormal
        else if (k == 3) x[i] = sign * 1e30f * (1.0f + rng.uniform());
        else if (k == 4) x[i] = sign * kGridPoints[rng.below(npts)];
        else x[i] = sign * rng.uniform() * std::ldexp(1.0f, rng.below(60) - 30);
        break;
      }
      case Dist::Tiny:  // the whole tensor is subnormal or near it
        x[i] = sign * rng.uniform() * std::ldexp(1.0f, -120 - rng.below(30));
        break;
      case Dist::Huge:
        x[i] = sign * rng.uniform() * 3.4e38f;
        break;
    }
  }
  if (d == Dist::GridTies || d == Dist::Mixed) {
    // Per 16 elements: some groups all zero, some tiny (under the tensor scale: s_b = 0);
    // GridTies: the rest are grid points times one power of two s, with one element at
    // ±gmax·s, so that the block scale is exactly s and x·e_b lands on the points.
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c + 16 <= cols; c += 16) {
        float* p = &x[static_cast<size_t>(r * cols + c)];
        const int kind = rng.below(8);
        if (kind == 0) {
          for (int j = 0; j < 16; ++j) p[j] = 0.0f;
        } else if (kind == 1) {
          for (int j = 0; j < 16; ++j) p[j] *= 1e-12f;
        } else if (d == Dist::GridTies) {
          const float s = std::ldexp(1.0f, rng.below(9) - 4);
          for (int j = 0; j < 16; ++j) p[j] = (rng.next() & 1 ? -s : s) * kGridPoints[rng.below(npts)];
          p[rng.below(16)] = (rng.next() & 1 ? -gmax : gmax) * s;
        }
      }
    if (!x.empty()) x[0] = 448.0f * gmax;  // tensor scale S_enc = 1
  }
  return x;
}

struct Config {
  Format format;
  int block;
  bool tile2d;
  ScaleRule rule;
  Rounding rounding;
};

std::vector<Config> all_configs() {
  std::vector<Config> v;
  for (Format f : {Format::NVFP4, Format::MXFP4, Format::INT4})
    for (int block : {16, 32})
      for (bool tile : {false, true})
        for (ScaleRule rule : {ScaleRule::OCP, ScaleRule::RCEIL}) {
          if (f != Format::MXFP4 && rule == ScaleRule::RCEIL) continue;
          for (Rounding rnd : {Rounding::RNE, Rounding::SR}) v.push_back({f, block, tile, rule, rnd});
        }
  return v;
}

QuantSpec to_spec(const Config& c, uint64_t seed, uint32_t stream) {
  QuantSpec s = QuantSpec::for_format(c.format);
  s.block = c.block;
  s.tile2d = c.tile2d;
  s.scale_rule = c.rule;
  s.rounding = c.rounding;
  s.seed = seed;
  s.stream = stream;
  return s;
}

std::string describe(const Config& c, Dist d, int64_t rows, int64_t cols) {
  return detail::concat(format_name(c.format), " block ", c.block, c.tile2d ? " tile2d" : "",
                        c.format == Format::MXFP4 ? (c.rule == ScaleRule::RCEIL ? " rceil" : " ocp") : "",
                        " ", rounding_name(c.rounding), " ", dist_name(d), " [", rows, "x", cols, "]");
}

// Every kernel this CPU can run.
std::vector<quant_impl::Kernel> kernels() {
  std::vector<quant_impl::Kernel> k{quant_impl::Kernel::Generic};
  for (quant_impl::Kernel c : {quant_impl::Kernel::Avx2, quant_impl::Kernel::Avx512})
    if (quant_impl::kernel_available(c)) k.push_back(c);
  return k;
}
const char* kernel_name(quant_impl::Kernel k) {
  switch (k) {
    case quant_impl::Kernel::Generic: return "generic";
    case quant_impl::Kernel::Avx2: return "avx2";
    case quant_impl::Kernel::Avx512: return "avx512";
    default: return "auto";
  }
}

// Restores the automatic kernel choice when a test ends.
struct KernelGuard {
  explicit KernelGuard(quant_impl::Kernel k) : prev(quant_impl::set_kernel(k)) {}
  ~KernelGuard() { quant_impl::set_kernel(prev); }
  quant_impl::Kernel prev;
};

// Compares the fused and the packed results of the current kernel with the reference.
void expect_same_as_reference(const std::vector<float>& x, int64_t rows, int64_t cols,
                              const QuantSpec& s, const std::string& what) {
  std::vector<float> want(x.size()), got(x.size(), 123.0f);
  ref::quantize_dequantize(x.data(), rows, cols, s, want.data());
  quantize_dequantize(x.data(), rows, cols, s, got.data());
  for (size_t i = 0; i < x.size(); ++i)
    ASSERT_EQ(bits_of(got[i]), bits_of(want[i]))
        << what << ": element " << i << " (row " << i / static_cast<size_t>(cols) << ", col "
        << i % static_cast<size_t>(cols) << ") x = " << x[i] << " got " << got[i] << " want " << want[i];
  // in place, as the trainer calls it
  std::vector<float> inplace = x;
  quantize_dequantize(inplace.data(), rows, cols, s, inplace.data());
  for (size_t i = 0; i < x.size(); ++i)
    ASSERT_EQ(bits_of(inplace[i]), bits_of(want[i])) << what << " (in place): element " << i;
  // packed
  const QuantizedMatrix qr = ref::quantize(x.data(), rows, cols, s);
  const QuantizedMatrix qf = quantize(x.data(), rows, cols, s);
  ASSERT_EQ(qf.rows, qr.rows);
  ASSERT_EQ(qf.cols, qr.cols);
  ASSERT_EQ(qf.scales, qr.scales) << what << " (scale bytes)";
  ASSERT_EQ(qf.codes, qr.codes) << what << " (codes)";
  ASSERT_EQ(bits_of(qf.tensor_amax), bits_of(qr.tensor_amax)) << what;
  ASSERT_EQ(bits_of(qf.tensor_scale), bits_of(qr.tensor_scale)) << what;
}

}  // namespace

TEST(QuantFast, AutoKernelIsAvailable) {
  EXPECT_TRUE(quant_impl::kernel_available(quant_impl::Kernel::Generic));
  EXPECT_TRUE(quant_impl::kernel_available(quant_impl::resolved_kernel()));
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
    EXPECT_EQ(quant_impl::resolved_kernel(), quant_impl::Kernel::Avx512);
  } else if (__builtin_cpu_supports("avx2")) {
    EXPECT_EQ(quant_impl::resolved_kernel(), quant_impl::Kernel::Avx2);
  }
#endif
}

TEST(QuantFast, BitIdenticalToReferenceAllConfigs) {
  // Shapes: one block, odd numbers of 64-column chunks, partial chunks, a single row.
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {32, 32}, {64, 96}, {32, 160}, {96, 224}, {1, 32}, {32, 1088}};
  for (quant_impl::Kernel k : kernels()) {
    KernelGuard guard(k);
    int case_no = 0;
    for (const Config& c : all_configs())
      for (Dist d : {Dist::Uniform, Dist::HeavyTail, Dist::GridTies, Dist::Mixed, Dist::Tiny, Dist::Huge})
        for (const auto& [rows, cols] : shapes) {
          if (c.tile2d && rows % c.block != 0) continue;
          ++case_no;
          const std::vector<float> x =
              make_matrix(d, rows, cols, static_cast<uint64_t>(case_no), grid_max(format_grid(c.format)));
          const QuantSpec s = to_spec(c, 0x1234567890abcdefull + static_cast<uint64_t>(case_no),
                                      static_cast<uint32_t>(case_no * 977));
          expect_same_as_reference(x, rows, cols, s,
                                   std::string(kernel_name(k)) + " " + describe(c, d, rows, cols));
          if (HasFatalFailure()) return;
        }
  }
}

TEST(QuantFast, BitIdenticalOnLargeThreadedMatrices) {
  // Above the threading threshold, with an uneven number of rows per thread.
  for (quant_impl::Kernel k : kernels()) {
    KernelGuard guard(k);
    for (const Config& c : all_configs())
      for (Dist d : {Dist::Mixed, Dist::GridTies}) {
        const int64_t rows = 96, cols = 1536;
        const std::vector<float> x = make_matrix(d, rows, cols, 77, grid_max(format_grid(c.format)));
        expect_same_as_reference(x, rows, cols, to_spec(c, 5, 3),
                                 std::string(kernel_name(k)) + " " + describe(c, d, rows, cols));
        if (HasFatalFailure()) return;
      }
  }
}

TEST(QuantFast, EdgeTensors) {
  // all zero, a single non-zero, everything subnormal, the largest floats, empty.
  std::vector<std::vector<float>> xs;
  xs.emplace_back(32 * 64, 0.0f);
  xs.emplace_back(32 * 64, -0.0f);
  xs.emplace_back(32 * 64, 0.0f);
  xs.back()[77] = -3.0f;
  xs.emplace_back(32 * 64, 1.4e-45f);
  xs.emplace_back(32 * 64, 0.0f);
  for (size_t i = 0; i < xs.back().size(); ++i) xs.back()[i] = (i % 3 ? -1.0f : 1.0f) * 3.4028235e38f / float(1 + i % 5);
  xs.emplace_back(32 * 64, 0.0f);
  for (size_t i = 0; i < xs.back().size(); ++i) xs.back()[i] = (i % 2 ? 1e-38f : -2.5e-39f) * float(i % 7);
  for (quant_impl::Kernel k : kernels()) {
    KernelGuard guard(k);
    for (const Config& c : all_configs())
      for (size_t t = 0; t < xs.size(); ++t) {
        expect_same_as_reference(xs[t], 32, 64, to_spec(c, 9, 1),
                                 detail::concat(kernel_name(k), " tensor ", t, " ", describe(c, Dist::Mixed, 32, 64)));
        if (HasFatalFailure()) return;
      }
    // empty matrices
    for (const Config& c : all_configs()) {
      const QuantSpec s = to_spec(c, 1, 1);
      std::vector<float> none;
      quantize_dequantize(none.data(), 0, c.block, s, none.data());
      const QuantizedMatrix q = quantize(none.data(), 0, c.block, s), r = ref::quantize(none.data(), 0, c.block, s);
      EXPECT_EQ(q.codes, r.codes);
      EXPECT_EQ(q.scales, r.scales);
      EXPECT_EQ(q.tensor_scale, r.tensor_scale);
      EXPECT_EQ(q.tensor_amax, r.tensor_amax);
    }
  }
}

TEST(QuantFast, EveryScaleByteAndElementValue) {
  // Sweeps the tensor scale so that every e4m3 block scale byte occurs, with elements
  // that walk across the whole grid in fine steps (every float in a few ulps of the ties).
  for (quant_impl::Kernel k : kernels()) {
    KernelGuard guard(k);
    for (Format f : {Format::NVFP4, Format::INT4, Format::MXFP4}) {
      const float gmax = grid_max(format_grid(f));
      const int64_t rows = 128, cols = 256;
      std::vector<float> x(static_cast<size_t>(rows * cols));
      Rng rng{static_cast<uint64_t>(f) + 1};
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; c += 16) {
          float* p = &x[static_cast<size_t>(r * cols + c)];
          // block amax from 2^-20 to 2^12 across the blocks, elements near the ties
          const float amax = std::ldexp(1.0f + rng.uniform(), static_cast<int>((r * cols + c) / 16 % 33) - 20);
          for (int j = 0; j < 16; ++j) {
            const float t = kGridPoints[rng.below(static_cast<int>(sizeof(kGridPoints) / sizeof(float)))] / gmax;
            float v = t * amax;
            const int ulps = rng.below(5) - 2;
            uint32_t b = bits_of(v);
            if (v != 0 && static_cast<int64_t>(b & 0x7fffffff) + ulps > 0) b = static_cast<uint32_t>(static_cast<int64_t>(b) + ulps);
            std::memcpy(&v, &b, 4);
            p[j] = (rng.next() & 1) ? -v : v;
          }
          p[rng.below(16)] = amax;
        }
      for (Rounding rnd : {Rounding::RNE, Rounding::SR})
        for (ScaleRule rule : {ScaleRule::OCP, ScaleRule::RCEIL}) {
          if (f != Format::MXFP4 && rule == ScaleRule::RCEIL) continue;
          const Config c{f, 16, false, rule, rnd};
          expect_same_as_reference(x, rows, cols, to_spec(c, 3, 4),
                                   std::string(kernel_name(k)) + " " + describe(c, Dist::GridTies, rows, cols));
          if (HasFatalFailure()) return;
        }
    }
  }
}

TEST(QuantFast, NonFiniteInputIsRejectedLikeTheReference) {
  for (quant_impl::Kernel k : kernels()) {
    KernelGuard guard(k);
    for (float bad : {NAN, INFINITY, -INFINITY})
      for (size_t at : {size_t{0}, size_t{1000}, size_t{32 * 64 - 1}}) {
        std::vector<float> x = make_matrix(Dist::Uniform, 32, 64, 3, 6.0f);
        x[at] = bad;
        for (Format f : {Format::NVFP4, Format::MXFP4, Format::INT4}) {
          const QuantSpec s = QuantSpec::for_format(f);
          std::string want, got;
          try {
            ref::quantize(x.data(), 32, 64, s);
          } catch (const NonFiniteValue& e) {
            want = e.what();
          }
          std::vector<float> out(x.size(), 5.0f);
          try {
            quantize_dequantize(x.data(), 32, 64, s, out.data());
          } catch (const NonFiniteValue& e) {
            got = e.what();
          }
          EXPECT_FALSE(want.empty());
          EXPECT_EQ(got, want);
          for (float v : out) ASSERT_EQ(v, 5.0f) << "output written before the error";
          got.clear();
          try {
            quantize(x.data(), 32, 64, s);
          } catch (const NonFiniteValue& e) {
            got = e.what();
          }
          EXPECT_EQ(got, want);
        }
      }
    // large (threaded scan), the bad value late in the tensor, and two of them
    std::vector<float> x = make_matrix(Dist::Uniform, 256, 1024, 4, 6.0f);
    x[200000] = INFINITY;
    x[250000] = NAN;
    std::string want, got;
    try { ref::tensor_amax(x.data(), static_cast<int64_t>(x.size())); } catch (const NonFiniteValue& e) { want = e.what(); }
    try { tensor_amax(x.data(), static_cast<int64_t>(x.size())); } catch (const NonFiniteValue& e) { got = e.what(); }
    EXPECT_NE(want, "");
    EXPECT_EQ(got, want);
  }
}

TEST(QuantFast, TensorAmaxMatchesReference) {
  for (Dist d : {Dist::Uniform, Dist::HeavyTail, Dist::Mixed, Dist::Tiny, Dist::Huge})
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{15}, int64_t{17}, int64_t{1000}, int64_t{300001}}) {
      const std::vector<float> x = make_matrix(d, 1, n, static_cast<uint64_t>(n), 6.0f);
      EXPECT_EQ(bits_of(tensor_amax(x.data(), n)), bits_of(ref::tensor_amax(x.data(), n))) << dist_name(d) << " " << n;
    }
}

TEST(QuantFast, PhiloxUniformsMatchScalarAcrossCounterCarry) {
  // The 16 groups of a vector step may straddle a carry into the counter's high word.
  const uint64_t starts[] = {0, 4, 64, (uint64_t{1} << 34) - 64, (uint64_t{1} << 34) - 32,
                             (uint64_t{1} << 34) - 4, (uint64_t{5} << 34) - 20, ~uint64_t{0} - 63 - 3};
  for (quant_impl::Kernel k : kernels())
    for (uint64_t i0 : starts)
      for (uint64_t seed : {uint64_t{0}, uint64_t{42}, uint64_t{0xfedcba9876543210ull}}) {
        const uint64_t base = i0 & ~uint64_t{3};
        float u[64];
        quant_impl::philox_uniforms64(k, seed, 17, base, u);
        for (int j = 0; j < 64; ++j)
          ASSERT_EQ(bits_of(u[j]), bits_of(philox_uniform(seed, 17, base + static_cast<uint64_t>(j))))
              << kernel_name(k) << " i0 " << base << " j " << j;
      }
}

TEST(QuantFast, BlockScalesMatchCodecOnEveryRoundingCase) {
  // Block amaxes on every binade (subnormals included), with mantissas at and around the
  // e4m3 rounding ties (the low 20 bits at 0x80000) and powers of two (e8m0 rceil), the
  // multiples 6·2^k, and 300000 random floats.
  std::vector<float> amax;
  auto add_bits = [&](uint32_t b) {
    float f;
    std::memcpy(&f, &b, 4);
    amax.push_back(f);
  };
  const uint32_t rems[] = {0, 1, 2, 0x7ffff, 0x80000, 0x80001, 0xfffff, 0x3ffff, 0xc0000};
  for (uint32_t e = 0; e < 255; ++e)
    for (uint32_t q = 0; q < 8; ++q)
      for (uint32_t rem : rems) add_bits((e << 23) | (q << 20) | rem);
  for (int k = -149; k < 126; ++k) {
    const float v = 6.0f * std::ldexp(1.0f, k);
    if (!std::isfinite(v)) continue;
    amax.push_back(v);
    amax.push_back(std::nextafter(v, 0.0f));
    amax.push_back(std::nextafter(v, INFINITY));
  }
  Rng rng{2024};
  for (int i = 0; i < 300000; ++i) {
    const uint32_t b = static_cast<uint32_t>(rng.next()) & 0x7fffffffu;
    if (b <= 0x7f7fffffu) add_bits(b);
  }
  add_bits(0x7f7fffffu);
  const int64_t n = static_cast<int64_t>(amax.size());
  std::vector<uint8_t> bytes(amax.size());
  std::vector<float> sb(amax.size()), mul(amax.size());
  for (quant_impl::Kernel k : kernels())
    for (Format f : {Format::NVFP4, Format::INT4, Format::MXFP4})
      for (ScaleRule rule : {ScaleRule::OCP, ScaleRule::RCEIL}) {
        if (f != Format::MXFP4 && rule == ScaleRule::RCEIL) continue;
        QuantSpec spec = QuantSpec::for_format(f);
        spec.scale_rule = rule;
        const float gmax = grid_max(format_grid(f)), inv_gmax = 1.0f / gmax;
        // S_enc with S_enc·(1/gmax) == 1 exactly, so that a_b itself is the e4m3 input
        float unit = gmax;
        for (int i = 0; i < 8 && unit * inv_gmax != 1.0f; ++i) unit = std::nextafter(unit, i % 2 ? 0.0f : INFINITY);
        std::vector<float> s_encs = {1.0f, 1e-30f, 1e30f, FLT_MAX};
        if (format_has_tensor_scale(f)) {
          EXPECT_EQ(unit * inv_gmax, 1.0f);
        }
        if (unit * inv_gmax == 1.0f) s_encs.push_back(unit);
        for (float amax_t : {1.0f, 3.7f, 2688.0f, 1e-38f, 1e30f}) s_encs.push_back(nibble::tensor_encode_scale(f, amax_t));
        for (float s_enc : s_encs) {
          quant_impl::block_scales(k, spec, s_enc, amax.data(), n, bytes.data(), sb.data(), mul.data());
          const float s_dec = 1.0f / s_enc;
          for (int64_t i = 0; i < n; ++i) {
            const float a_b = amax[static_cast<size_t>(i)];
            uint8_t want;
            float want_sb, want_mul;
            if (format_has_tensor_scale(f)) {
              want = codec::e4m3_block_scale(a_b, s_enc, inv_gmax);
              want_sb = e4m3_decode(want);
              want_mul = codec::e4m3_encode_multiplier(want_sb, s_dec);
            } else {
              want = codec::e8m0_block_scale(a_b, rule == ScaleRule::RCEIL);
              want_sb = ldexpf(1.0f, static_cast<int>(want) - 127);
              want_mul = ldexpf(1.0f, 127 - static_cast<int>(want));
            }
            const size_t u = static_cast<size_t>(i);
            ASSERT_EQ(bytes[u], want) << kernel_name(k) << " " << format_name(f) << " a_b " << a_b << " s_enc " << s_enc;
            ASSERT_EQ(bits_of(sb[u]), bits_of(want_sb)) << kernel_name(k) << " " << format_name(f) << " a_b " << a_b;
            ASSERT_EQ(bits_of(mul[u]), bits_of(want_mul)) << kernel_name(k) << " " << format_name(f) << " a_b " << a_b
                                                          << " s_enc " << s_enc;
          }
        }
      }
}
