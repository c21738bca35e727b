// CPU reference of the block quantizers (SPEC §3). The arithmetic lives in
// nibble/quant/block_codec.hpp, shared with the CUDA kernels; this file walks the blocks.
#include "nibble/quant/quantizer.hpp"

#include <algorithm>
#include <cmath>

#include "nibble/dtype.hpp"
#include "nibble/error.hpp"
#include "nibble/philox.hpp"
#include "nibble/quant/block_codec.hpp"

namespace nibble {

namespace {
template <class E>
struct NamedEnum {
  E value;
  std::string_view name;
};
constexpr NamedEnum<Format> kFormats[] = {
    {Format::NVFP4, "nvfp4"}, {Format::MXFP4, "mxfp4"}, {Format::INT4, "int4"}};
constexpr NamedEnum<ScaleRule> kRules[] = {{ScaleRule::OCP, "ocp"}, {ScaleRule::RCEIL, "rceil"}};
constexpr NamedEnum<Rounding> kRoundings[] = {{Rounding::RNE, "rne"}, {Rounding::SR, "sr"}};

template <class E, size_t N>
std::string_view name_of(const NamedEnum<E> (&table)[N], E v) {
  for (const auto& t : table)
    if (t.value == v) return t.name;
  return "?";
}
template <class E, size_t N>
E parse_named(const NamedEnum<E> (&table)[N], std::string_view s, std::string_view what) {
  std::string valid;
  for (const auto& t : table) {
    if (t.name == s) return t.value;
    valid += (valid.empty() ? "" : ", ") + std::string(t.name);
  }
  fail("unknown ", what, " '", s, "' (valid: ", valid, ")");
}
}  // namespace

std::string_view format_name(Format f) { return name_of(kFormats, f); }
Format format_from_name(std::string_view s) { return parse_named(kFormats, s, "format"); }
std::string_view scale_rule_name(ScaleRule r) { return name_of(kRules, r); }
ScaleRule scale_rule_from_name(std::string_view s) { return parse_named(kRules, s, "scale rule"); }
std::string_view rounding_name(Rounding r) { return name_of(kRoundings, r); }
Rounding rounding_from_name(std::string_view s) { return parse_named(kRoundings, s, "rounding"); }

Grid format_grid(Format f) { return f == Format::INT4 ? Grid::INT4 : Grid::E2M1; }
int default_block(Format f) { return f == Format::MXFP4 ? 32 : 16; }
bool format_has_tensor_scale(Format f) { return f != Format::MXFP4; }

void validate_quant_shape(const QuantSpec& spec, int64_t rows, int64_t cols) {
  if (spec.block != 16 && spec.block != 32)
    fail("block size ", spec.block, " is not supported (use 16 or 32)");
  if (rows < 0 || cols < 0) fail("negative matrix shape [", rows, ", ", cols, "]");
  if (cols % spec.block != 0)
    fail("cols = ", cols, " is not a multiple of the block size ", spec.block,
         " (blocks run along the last axis)");
  if (spec.tile2d && rows % spec.block != 0)
    fail("rows = ", rows, " is not a multiple of the tile size ", spec.block, " (--tile2d uses ",
         spec.block, "x", spec.block, " tiles)");
}

uint8_t QuantizedMatrix::code(int64_t r, int64_t c) const {
  return nibble_at(codes.data(), static_cast<size_t>(r * cols + c));
}
uint8_t QuantizedMatrix::scale_byte(int64_t r, int64_t c) const {
  const int64_t sr = spec.tile2d ? r / spec.block : r;
  return scales[static_cast<size_t>(sr * scale_cols() + c / spec.block)];
}

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

float tensor_encode_scale(Format f, float amax) {
  if (!format_has_tensor_scale(f)) return 1.0f;
  return codec::tensor_encode_scale(grid_max(format_grid(f)), amax);
}

namespace {

// Block scales for the whole matrix (one byte per block or tile), plus the tensor scale.
struct Scales {
  std::vector<uint8_t> bytes;
  std::vector<float> value;  // s_b (the decoded scale)
  std::vector<float> mul;    // what x is multiplied by before rounding
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
    s.s_enc = tensor_encode_scale(spec.format, s.amax);
    s.s_dec = 1.0f / s.s_enc;
  }
  const float inv_gmax = 1.0f / grid_max(format_grid(spec.format));
  const int64_t rows_per_block = spec.tile2d ? b : 1;
#pragma omp parallel for schedule(static)
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

// Visits every element with its code: emit(flat_index, code, block_index). Rows are
// independent (SR draws are indexed by the flat element index), so rows run in parallel.
template <bool kStochastic, class Emit>
void encode_elements_impl(const float* x, int64_t rows, int64_t cols, const QuantSpec& spec,
                          const Scales& s, Emit emit) {
  const Grid g = format_grid(spec.format);
  const int64_t b = spec.block, scols = cols / b;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t srow = spec.tile2d ? r / b : r;
    for (int64_t sc = 0; sc < scols; ++sc) {
      const int64_t k = srow * scols + sc;
      const float mul = s.mul[static_cast<size_t>(k)];
      const uint64_t base = static_cast<uint64_t>(r * cols + sc * b);
      for (int64_t j = 0; j < b; j += 4) {  // blocks are multiples of 4: a Philox group each
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

}  // namespace

QuantizedMatrix quantize(const float* x, int64_t rows, int64_t cols, const QuantSpec& spec) {
  validate_quant_shape(spec, rows, cols);
  QuantizedMatrix q;
  q.spec = spec;
  q.rows = rows;
  q.cols = cols;
  Scales s = compute_scales(x, rows, cols, spec);
  q.codes.assign(static_cast<size_t>(rows * cols / 2), 0);
  uint8_t* codes = q.codes.data();
  // Two neighbouring elements share a byte; both are written by the same thread (same row).
  encode_elements(x, rows, cols, spec, s, [codes](uint64_t i, uint8_t code, int64_t) {
    set_nibble(codes, static_cast<size_t>(i), code);
  });
  q.scales = std::move(s.bytes);
  q.tensor_amax = format_has_tensor_scale(spec.format) ? s.amax : 0.0f;
  q.tensor_scale = s.s_dec;
  return q;
}

void dequantize(const QuantizedMatrix& q, float* out) {
  const Grid g = format_grid(q.spec.format);
  const bool mx = !format_has_tensor_scale(q.spec.format);
  const int64_t b = q.spec.block, scols = q.scale_cols();
  // Decoded block scales and the 16 grid values, looked up per element.
  std::vector<float> sb(q.scales.size());
  for (size_t i = 0; i < sb.size(); ++i)
    sb[i] = mx ? ldexpf(1.0f, static_cast<int>(q.scales[i]) - 127) : e4m3_decode(q.scales[i]);
  float grid[16];
  for (int c = 0; c < 16; ++c) grid[c] = grid_decode(g, static_cast<uint8_t>(c));
  const float s_dec = q.tensor_scale;
  const uint8_t* codes = q.codes.data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < q.rows; ++r) {
    const int64_t srow = q.spec.tile2d ? r / b : r;
    for (int64_t c = 0; c < q.cols; c += 2) {
      const float s_b = sb[static_cast<size_t>(srow * scols + c / b)];  // c, c+1 share a block
      const uint8_t byte = codes[(r * q.cols + c) >> 1];
      out[r * q.cols + c] = (grid[byte & 0xF] * s_b) * s_dec;
      out[r * q.cols + c + 1] = (grid[byte >> 4] * s_b) * s_dec;
    }
  }
}

std::vector<float> dequantize(const QuantizedMatrix& q) {
  std::vector<float> out(static_cast<size_t>(q.rows * q.cols));
  dequantize(q, out.data());
  return out;
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

}  // namespace nibble
