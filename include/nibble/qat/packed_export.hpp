#pragma once
// `nibble export --packed`: a QAT checkpoint with really packed integer codes. OUT/config.json
// (the run's configuration) and OUT/model.packed.safetensors: full-precision tensors as F32 under
// their names; each quantized projection as "<name>.codes" (U8, the codes bit-packed: b bits each
// for LSQ and 2-bit SEQ, five ternary digits per byte for 1.58 bits) and "<name>.scales" (F32
// [rows, groups]); the metadata "qat" says bits, quantizer and group size. Loading decodes to
// exactly the fake-quantized weights the QAT run evaluated.
#include <cstdint>
#include <string>
#include <vector>

#include "nibble/nn/model.hpp"
#include "nibble/qat/weight_quant.hpp"

namespace nibble {

void export_packed(const std::string& qat_checkpoint, const std::string& out_dir);
// The model's flat weights decoded from a packed file (shapes checked against params).
std::vector<float> load_packed(const std::string& path, const std::vector<ParamInfo>& params);

// Bit packing of codes in [0, levels): levels ≤ 2^bits with bits ∈ {2, 3, 4}, or 3 (five per byte).
std::vector<uint8_t> pack_codes(const uint8_t* codes, int64_t n, int levels);
std::vector<uint8_t> unpack_codes(const std::vector<uint8_t>& packed, int64_t n, int levels);

}  // namespace nibble
