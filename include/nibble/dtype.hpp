#pragma once
// Element types and the bit-exact scalar conversions of SPEC §1–2.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace nibble {

enum class DType : uint8_t {
  F32, F64, F16, BF16,   // floating point
  E4M3, E8M0,            // 8-bit scale formats (OCP FP8 E4M3, OCP E8M0)
  E2M1, INT4,            // 4-bit element codes, packed two per byte
  I8, I16, I32, I64, U8, U16,
};

std::string_view dtype_name(DType t);          // "f32", "e2m1", ...
DType dtype_from_name(std::string_view name);  // throws on unknown names
int dtype_bits(DType t);                       // 4 for E2M1/INT4
// Bytes needed for n elements (4-bit types round up to whole bytes).
size_t dtype_storage_bytes(DType t, size_t n);

// ---- bf16 / f16 -------------------------------------------------------------
uint16_t bf16_from_float(float x);  // RNE; NaN stays NaN (quiet)
float bf16_to_float(uint16_t b);
uint16_t f16_from_float(float x);   // RNE, overflow to inf
float f16_to_float(uint16_t h);

// ---- OCP FP8 E4M3 (bias 7, max 448, subnormal step 2^-9, no infinities) --------
// RNE and saturating to ±448, so finite inputs never produce the NaN byte (0x7f/0xff).
// (A NaN input gives 0x7f; callers validate their inputs before quantizing.)
uint8_t e4m3_from_float(float x);
float e4m3_to_float(uint8_t b);  // 0x7f / 0xff decode to NaN
constexpr float kE4M3Max = 448.0f;

// ---- OCP E8M0: value 2^(byte-127); byte 255 = NaN ----------------------------------
float e8m0_to_float(uint8_t b);
uint8_t e8m0_from_exponent(int e);  // e in [-127, 127]

// ---- 4-bit packing (SPEC §1): element 2i in the low nibble, 2i+1 in the high ---------
inline uint8_t pack_nibbles(uint8_t lo, uint8_t hi) {
  return static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
}
inline uint8_t nibble_at(const uint8_t* packed, size_t i) {
  const uint8_t b = packed[i >> 1];
  return (i & 1) ? static_cast<uint8_t>(b >> 4) : static_cast<uint8_t>(b & 0xF);
}
inline void set_nibble(uint8_t* packed, size_t i, uint8_t code) {
  uint8_t& b = packed[i >> 1];
  b = (i & 1) ? static_cast<uint8_t>((b & 0x0F) | ((code & 0xF) << 4))
              : static_cast<uint8_t>((b & 0xF0) | (code & 0xF));
}

}  // namespace nibble
