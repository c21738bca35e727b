#include "nibble/dtype.hpp"

#include <bit>
#include <cmath>

#include "nibble/error.hpp"
#include "nibble/fp8.hpp"

namespace nibble {

namespace {
struct DTypeInfo {
  DType t;
  std::string_view name;
  int bits;
};
constexpr DTypeInfo kInfo[] = {
    {DType::F32, "f32", 32},  {DType::F64, "f64", 64},   {DType::F16, "f16", 16},
    {DType::BF16, "bf16", 16}, {DType::E4M3, "e4m3", 8}, {DType::E8M0, "e8m0", 8},
    {DType::E2M1, "e2m1", 4},  {DType::INT4, "int4", 4}, {DType::I8, "i8", 8},
    {DType::I16, "i16", 16},   {DType::I32, "i32", 32},  {DType::I64, "i64", 64},
    {DType::U8, "u8", 8},      {DType::U16, "u16", 16},
};
const DTypeInfo& info(DType t) {
  for (const auto& i : kInfo)
    if (i.t == t) return i;
  fail("internal error: unknown dtype ", static_cast<int>(t));
}
}  // namespace

std::string_view dtype_name(DType t) { return info(t).name; }
int dtype_bits(DType t) { return info(t).bits; }
size_t dtype_storage_bytes(DType t, size_t n) {
  return (n * static_cast<size_t>(dtype_bits(t)) + 7) / 8;
}
DType dtype_from_name(std::string_view name) {
  for (const auto& i : kInfo)
    if (i.name == name) return i.t;
  fail("unknown dtype '", name, "'");
}

// ---- bf16 -----------------------------------------------------------------------
uint16_t bf16_from_float(float x) {
  uint32_t u = std::bit_cast<uint32_t>(x);
  if (std::isnan(x)) return static_cast<uint16_t>((u >> 16) | 0x0040);  // keep it quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return static_cast<uint16_t>(u >> 16);
}
float bf16_to_float(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

// ---- f16 ------------------------------------------------------------------------
uint16_t f16_from_float(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return sign | (x > 0x7f800000u ? 0x7e00 : 0x7c00);  // NaN / inf
  if (x >= 0x477ff000u) return sign | 0x7c00;  // >= 65520 rounds to infinity
  if (x < 0x38800000u) {                       // below 2^-14: half subnormal, step 2^-24
    const float scaled = std::bit_cast<float>(x) * 16777216.0f;  // exact power-of-two scaling
    return sign | static_cast<uint16_t>(std::nearbyint(scaled));  // RNE (default mode)
  }
  x += 0xc8000fffu + ((x >> 13) & 1u);  // rebias exponent 127 -> 15, round to nearest even
  return sign | static_cast<uint16_t>(x >> 13);
}
float f16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const int e = (h >> 10) & 0x1f;
  const int m = h & 0x3ff;
  float v;
  if (e == 0) v = std::ldexp(static_cast<float>(m), -24);
  else if (e == 31) v = m ? NAN : INFINITY;
  else v = std::ldexp(static_cast<float>(1024 + m), e - 25);
  return std::bit_cast<float>(std::bit_cast<uint32_t>(v) | sign);
}

// ---- e4m3 / e8m0: the shared host/device casts -------------------------------------
uint8_t e4m3_from_float(float x) { return e4m3_encode(x); }
float e4m3_to_float(uint8_t b) { return e4m3_decode(b); }
float e8m0_to_float(uint8_t b) { return e8m0_decode(b); }
uint8_t e8m0_from_exponent(int e) {
  NIBBLE_CHECK(e >= -127 && e <= 127, "e8m0 exponent ", e);
  return static_cast<uint8_t>(e + 127);
}

}  // namespace nibble
