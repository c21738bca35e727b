#pragma once
// Which tensors QAT quantizes, its spec as checkpoints record it, and the quantized point of a
// checkpoint (what `nibble hessian --bits` differentiates around).
#include <cstdint>
#include <string>
#include <vector>

#include "nibble/json.hpp"
#include "nibble/nn/model.hpp"
#include "nibble/qat/qat_state.hpp"
#include "nibble/qat/weight_quant.hpp"

namespace nibble {

// The attention and MLP projections (SPEC §7); embeddings, norms and the head stay full precision.
bool is_qat_projection(const ParamInfo& p);
// The QAT layout of a model: its projections (and their scales, rows × groups each, in parameter
// order) and every tensor for the optimizer.
QatLayout make_qat_layout(const QatSpec& spec, const std::vector<ParamInfo>& params);
// The spec as qat.safetensors / trainer.json record it ({"bits", "quantizer", "group_size"}).
QatSpec qat_spec_from_json(const Json& j);

struct QuantizedPoint {
  QatSpec spec;
  std::vector<float> w_hat;       // every parameter: Q(W; α) for projections, W elsewhere
  std::vector<uint8_t> in_range;  // 1 where the straight-through estimator passes (and off projections)
  int64_t projection_weights = 0, projection_in_range = 0;
};
// A QAT checkpoint (qat.safetensors beside its weights): its latent W, scales and spec (`bits`,
// when > 0, must agree). Any other checkpoint: its weights quantized at `bits` with `quantizer`
// and the initial scales of SPEC §7. bits ≤ 0 on a plain checkpoint: no quantization (false).
bool quantized_point(const std::string& checkpoint_dir, const std::vector<ParamInfo>& params,
                     const std::vector<float>& weights, double bits, const std::string& quantizer, QuantizedPoint& out);

}  // namespace nibble
