#pragma once
// Block quantizers of SPEC §3: nvfp4 (e2m1, e4m3 block scale, fp32 tensor scale), int4
// (the UFP4 uniform grid, same structure with 7 in place of 6) and mxfp4 (e2m1, e8m0
// scale, rule ocp or rceil). Blocks run along the last axis (the GEMM's reduction dim):
// 1×16 or 1×32, or block×block tiles (tile2d) so rowwise and columnwise copies agree.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "nibble/quant/grid.hpp"

namespace nibble {

enum class Format : uint8_t { NVFP4, MXFP4, INT4 };
enum class ScaleRule : uint8_t { OCP, RCEIL };  // mxfp4 only
enum class Rounding : uint8_t { RNE, SR };

std::string_view format_name(Format f);        // "nvfp4", "mxfp4", "int4"
Format format_from_name(std::string_view s);    // throws listing the valid names
std::string_view scale_rule_name(ScaleRule r);
ScaleRule scale_rule_from_name(std::string_view s);
std::string_view rounding_name(Rounding r);
Rounding rounding_from_name(std::string_view s);

Grid format_grid(Format f);          // E2M1 for nvfp4/mxfp4, INT4 for int4
int default_block(Format f);         // 16 for nvfp4/int4, 32 for mxfp4
bool format_has_tensor_scale(Format f);  // nvfp4, int4: an fp32 tensor scale; mxfp4: none

struct QuantSpec {
  Format format = Format::NVFP4;
  int block = 16;              // 16 or 32
  bool tile2d = false;         // block×block tiles instead of 1×block
  ScaleRule scale_rule = ScaleRule::OCP;
  Rounding rounding = Rounding::RNE;
  uint64_t seed = 0;           // SR: Philox key
  uint32_t stream = 0;         // SR: Philox counter word 2 (tensor / step id)

  static QuantSpec for_format(Format f) {
    QuantSpec s;
    s.format = f;
    s.block = default_block(f);
    return s;
  }
};

// Throws a user-facing error when the shape does not fit the spec (cols not a multiple
// of the block, rows not a multiple of the tile, bad block size).
void validate_quant_shape(const QuantSpec& spec, int64_t rows, int64_t cols);

// The quantized form of a [rows, cols] fp32 matrix.
struct QuantizedMatrix {
  QuantSpec spec;
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> codes;   // packed 4-bit codes, row-major, rows*cols/2 bytes
  std::vector<uint8_t> scales;  // e4m3 (nvfp4/int4) or e8m0 (mxfp4) bytes, [scale_rows, scale_cols]
  float tensor_amax = 0.0f;     // A: max|x| over the tensor (nvfp4/int4)
  float tensor_scale = 1.0f;    // S_dec = 1/S_enc, applied at dequantization (1 for mxfp4)

  int64_t scale_rows() const { return spec.tile2d ? rows / spec.block : rows; }
  int64_t scale_cols() const { return cols / spec.block; }
  uint8_t code(int64_t r, int64_t c) const;
  uint8_t scale_byte(int64_t r, int64_t c) const;  // the scale of element (r, c)
};

// Tensor amax and the resulting fp32 encode scale S_enc (SPEC §3.1/3.2).
float tensor_amax(const float* x, int64_t n);
float tensor_encode_scale(Format f, float amax);

QuantizedMatrix quantize(const float* x, int64_t rows, int64_t cols, const QuantSpec& spec);
void dequantize(const QuantizedMatrix& q, float* out);
std::vector<float> dequantize(const QuantizedMatrix& q);
// Fused quantize + dequantize: the same numbers as dequantize(quantize(x)), without packing.
void quantize_dequantize(const float* x, int64_t rows, int64_t cols, const QuantSpec& spec,
                         float* out);

}  // namespace nibble
