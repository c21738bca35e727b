// CPU reference of the block quantizers (SPEC §3). The arithmetic lives in
// nibble/quant/block_codec.hpp, shared with the CUDA kernels; quantizer_fast.cpp walks the
// blocks (a portable kernel and an AVX-512 one, the same bits).
#include "nibble/quant/quantizer.hpp"

#include <algorithm>
#include <cmath>

#include "nibble/dtype.hpp"
#include "nibble/error.hpp"
#include "nibble/philox.hpp"
#include "nibble/quant/block_codec.hpp"
#include "quant/quantizer_fast.hpp"

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

float tensor_amax(const float* x, int64_t n) { return quant_impl::tensor_amax_fast(x, n); }

float tensor_encode_scale(Format f, float amax) {
  if (!format_has_tensor_scale(f)) return 1.0f;
  return codec::tensor_encode_scale(grid_max(format_grid(f)), amax);
}

QuantizedMatrix quantize(const float* x, int64_t rows, int64_t cols, const QuantSpec& spec) {
  validate_quant_shape(spec, rows, cols);
  QuantizedMatrix q;
  q.spec = spec;
  q.rows = rows;
  q.cols = cols;
  q.codes.resize(static_cast<size_t>(rows * cols / 2));
  q.scales.resize(static_cast<size_t>(q.scale_rows() * q.scale_cols()));
  quant_impl::Output out;
  out.codes = q.codes.data();
  out.scales = q.scales.data();
  const quant_impl::TensorScale ts = quant_impl::run(x, rows, cols, spec, out);
  q.tensor_amax = format_has_tensor_scale(spec.format) ? ts.amax : 0.0f;
  q.tensor_scale = ts.s_dec;
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
  quant_impl::Output o;
  o.values = out;
  quant_impl::run(x, rows, cols, spec, o);
}

}  // namespace nibble
