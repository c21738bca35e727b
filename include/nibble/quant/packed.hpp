#pragma once
// A quantized matrix with its transforms as one self-describing safetensors file:
//   codes         U8      [rows, cols/2]   4-bit codes, element 2i in the low nibble
//   scales        F8_E4M3 [srows, cols/block] (nvfp4, int4) or F8_E8M0 (mxfp4)
//   tensor_scale  F32     [1]  S_dec = 1/S_enc (nvfp4, int4; 1 for mxfp4)
//   tensor_amax   F32     [1]  A (nvfp4, int4)
//   mean          F32     [cols]       when centred
//   rht_signs     F32     [n]          when the RHT is on
//   lowrank_u/s/v F32     [rows,k] [k] [cols,k]   when the spectral split is on
// and metadata: format, grid, block, tile2d, scale_rule, rounding, seed, stream, rows,
// cols, rht, transforms (the order they were applied), layout notes.
#include <optional>
#include <string>
#include <vector>

#include "nibble/quant/pipeline.hpp"
#include "nibble/safetensors.hpp"

namespace nibble {

struct PackedMatrix {
  QuantizedMatrix q;
  std::vector<float> mean, rht_signs;
  std::optional<LowRank> lowrank;

  // dequantize and undo the transforms: the reconstruction in the original coordinates
  std::vector<float> reconstruct() const;
};

SafeTensors pack_to_safetensors(const PipelineResult& r);
// Validates every tensor's dtype and shape against the metadata (errors name `what`).
PackedMatrix unpack_from_safetensors(const SafeTensors& st, const std::string& what);

}  // namespace nibble
