#pragma once
// Per-token activation fake quantization of QAT (`nibble qat --act-bits B`): each row x of a
// projection's input (one token) is quantized symmetrically to B bits with its own scale,
//   s = max|x| / Qp,  Qp = 2^(B−1) − 1,  x̂ = s · clamp(round(x / s), −Qp, Qp)
// (round half to even; a row of zeros stays zero). The backward is the straight-through
// estimator: dX passes unchanged (every element is inside the row's range by construction), and
// the weight gradient uses x̂, the operand the forward multiplied.
#include <cstdint>

namespace nibble {

// out may alias x. bits in [2, 8].
void fake_quantize_rows(const float* x, int64_t rows, int64_t cols, int bits, float* out);

}  // namespace nibble
