#include "nibble/quant/pipeline.hpp"

#include "nibble/error.hpp"
#include "nibble/quant/centering.hpp"
#include "nibble/quant/rht.hpp"

namespace nibble {

void resolve_transforms(TransformSpec& t, const QuantSpec& q, int64_t rows, int64_t cols) {
  validate_quant_shape(q, rows, cols);
  if (t.rht != 0) {
    if (t.rht_signs.empty() && rht_size_valid(t.rht)) t.rht_signs = rht_signs(t.rht, t.rht_seed, t.rht_stream);
    validate_rht(t.rht, cols, t.rht_signs);
  } else if (!t.rht_signs.empty()) {
    fail("RHT signs were given but the RHT is off (set its size)");
  }
  if (t.spectral.rank < 0) fail("spectral rank ", t.spectral.rank, " is negative");
  if (t.spectral.rank > 0 && (t.spectral.rank > rows || t.spectral.rank > cols))
    fail("spectral rank ", t.spectral.rank, " must be between 1 and min(rows, cols) = ",
         rows < cols ? rows : cols);
  if (t.spectral.power_iters < 0) fail("power iterations ", t.spectral.power_iters, " is negative");
}

PipelineResult quantize_pipeline(const float* x, int64_t rows, int64_t cols, const QuantSpec& q,
                                 TransformSpec t) {
  resolve_transforms(t, q, rows, cols);
  PipelineResult r;
  r.operand.assign(x, x + rows * cols);
  if (t.center) {
    r.mean = column_mean(x, rows, cols);
    subtract_column_vector(r.operand.data(), rows, cols, r.mean.data());
  }
  if (t.spectral.rank > 0) {
    r.lowrank = randomized_svd(r.operand.data(), rows, cols, t.spectral);
    r.lowrank->add_to(r.operand.data(), -1.0);  // residual R = G − U S Vᵀ
  }
  if (t.rht != 0) {
    r.rht_signs = t.rht_signs;
    rht_forward(r.operand.data(), rows, cols, t.rht, r.rht_signs.data());
  }
  r.q = quantize(r.operand.data(), rows, cols, q);
  r.operand_hat = dequantize(r.q);
  r.reconstruction = r.operand_hat;
  undo_transforms(r.reconstruction.data(), rows, cols, r.mean, r.rht_signs,
                  r.lowrank ? &*r.lowrank : nullptr);
  return r;
}

void undo_transforms(float* y, int64_t rows, int64_t cols, const std::vector<float>& mean,
                     const std::vector<float>& signs, const LowRank* lowrank) {
  if (!signs.empty()) rht_inverse(y, rows, cols, static_cast<int>(signs.size()), signs.data());
  if (lowrank) lowrank->add_to(y, 1.0);
  if (!mean.empty()) add_column_vector(y, rows, cols, mean.data());
}

}  // namespace nibble
