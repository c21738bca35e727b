#include "nibble/qat/qat_model.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "nibble/error.hpp"
#include "nibble/safetensors.hpp"

namespace nibble {

bool is_qat_projection(const ParamInfo& p) {
  return p.shape.size() == 2 && (p.name.find(".self_attn.") != std::string::npos || p.name.find(".mlp.") != std::string::npos);
}

QatLayout make_qat_layout(const QatSpec& spec, const std::vector<ParamInfo>& params) {
  QatLayout l;
  l.spec = spec;
  for (const ParamInfo& p : params) {
    l.tensors.push_back({p.offset, p.numel, p.decay});
    l.num_params = std::max(l.num_params, p.offset + p.numel);
    if (!is_qat_projection(p)) continue;
    QatLayout::Projection q;
    q.offset = p.offset;
    q.rows = p.shape[0];
    q.cols = p.shape[1];
    q.alpha_offset = l.num_scales;
    q.alpha_count = q.rows * spec.groups_per_row(q.cols);
    l.projections.push_back(q);
    l.num_scales += q.alpha_count;
  }
  return l;
}

QatSpec qat_spec_from_json(const Json& j) {
  return QatSpec::make(j.at("bits").as_double(), j.at("quantizer").as_string(), j.at("group_size").as_int64());
}

bool quantized_point(const std::string& ck, const std::vector<ParamInfo>& params, const std::vector<float>& weights,
                     double bits, const std::string& quantizer, QuantizedPoint& out) {
  const std::string qat_file = (std::filesystem::path(ck) / "qat.safetensors").string();
  const bool qat = std::filesystem::exists(qat_file);
  if (!qat && bits <= 0) return false;
  SafeTensors lat;
  std::vector<float> latent = weights;
  if (qat) {
    lat = read_safetensors(qat_file);
    out.spec = qat_spec_from_json(Json::parse(lat.metadata.at("qat"), qat_file + ": metadata qat"));
    if (bits > 0 && std::fabs(bits - out.spec.bits) > 1e-9)
      fail(ck, " is a ", out.spec.bits, "-bit QAT checkpoint; --bits ", bits, " does not match (leave --bits out)");
  } else {
    out.spec = QatSpec::make(bits, quantizer);
  }
  out.w_hat = weights;
  out.in_range.assign(weights.size(), 1);
  out.projection_weights = out.projection_in_range = 0;
  for (const ParamInfo& p : params) {
    if (qat) {
      const Tensor w = lat.get("latent." + p.name).to_f32();
      std::copy(w.data<float>(), w.data<float>() + p.numel, latent.begin() + p.offset);
    }
    if (!is_qat_projection(p)) {
      std::copy(latent.begin() + p.offset, latent.begin() + p.offset + p.numel, out.w_hat.begin() + p.offset);
      continue;
    }
    const int64_t rows = p.shape[0], cols = p.shape[1];
    std::vector<float> alpha(static_cast<size_t>(rows * out.spec.groups_per_row(cols)));
    if (qat) {
      const Tensor a = lat.get("scale." + p.name).to_f32();
      if (a.numel() != static_cast<int64_t>(alpha.size())) fail(qat_file, ": 'scale.", p.name, "' has ", a.numel(), " values");
      std::copy(a.data<float>(), a.data<float>() + a.numel(), alpha.begin());
    } else {
      qat_init_scales(out.spec, latent.data() + p.offset, rows, cols, alpha.data());
    }
    qat_forward(out.spec, latent.data() + p.offset, alpha.data(), rows, cols, out.w_hat.data() + p.offset);
    // the STE's pass-through mask: the gradient of Ŵ w.r.t. W for an all-ones upstream
    std::vector<float> ones(static_cast<size_t>(p.numel), 1.0f), dw(static_cast<size_t>(p.numel)), da(alpha.size(), 0.0f);
    qat_backward(out.spec, latent.data() + p.offset, alpha.data(), rows, cols, ones.data(), dw.data(), da.data());
    for (int64_t i = 0; i < p.numel; ++i) {
      const uint8_t in = dw[static_cast<size_t>(i)] != 0.0f ? 1 : 0;
      out.in_range[static_cast<size_t>(p.offset + i)] = in;
      out.projection_in_range += in;
    }
    out.projection_weights += p.numel;
  }
  return true;
}

}  // namespace nibble
