#pragma once
// NumPy .npy read/write (format versions 1.0, 2.0, 3.0; C order, little endian).
// Supported dtypes: float32, float64, int8/16/32/64, uint8. Anything else (big-endian,
// Fortran order, object arrays, other dtypes) is rejected with a message naming the file.
#include <string>

#include "nibble/tensor.hpp"

namespace nibble {

Tensor read_npy(const std::string& path);
// Writes F32, F64, I8, I16, I32, I64 or U8 tensors (version 1.0 header), atomically.
void write_npy(const std::string& path, const Tensor& t);

}  // namespace nibble
