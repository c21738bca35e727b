// The transformer's forward and backward, op by op (see model.hpp for the architecture).
#include "nibble/nn/model.hpp"

#include <cmath>

#include "nibble/error.hpp"
#include "nibble/ops/ops.hpp"
#include "nibble/quant/spectral.hpp"

namespace nibble {

namespace {
constexpr uint32_t kHeadLinearId = 255;
std::string layer_prefix(int l) { return "model.layers." + std::to_string(l) + "."; }

// out[n, :] = concat over parts of in_p[n, :] (and the inverse), for the fused projections.
template <class T>
void split_columns(const T* in, int64_t n, std::initializer_list<std::pair<T*, int64_t>> parts) {
  int64_t width = 0;
  for (const auto& p : parts) width += p.second;
  for (int64_t r = 0; r < n; ++r) {
    int64_t off = 0;
    for (const auto& [dst, w] : parts) {
      std::copy(in + r * width + off, in + r * width + off + w, dst + r * w);
      off += w;
    }
  }
}
template <class T>
void join_columns(T* out, int64_t n, std::initializer_list<std::pair<const T*, int64_t>> parts) {
  int64_t width = 0;
  for (const auto& p : parts) width += p.second;
  for (int64_t r = 0; r < n; ++r) {
    int64_t off = 0;
    for (const auto& [src, w] : parts) {
      std::copy(src + r * w, src + r * w + w, out + r * width + off);
      off += w;
    }
  }
}
}  // namespace

namespace {
void add_param(std::vector<ParamInfo>& params, const std::string& name, Shape shape, bool decay) {
  ParamInfo p;
  p.name = name;
  p.numel = shape_numel(shape);
  p.shape = std::move(shape);
  p.offset = params.empty() ? 0 : params.back().offset + params.back().numel;
  p.decay = decay;
  params.push_back(std::move(p));
}
}  // namespace

std::vector<ParamInfo> transformer_param_layout(const ModelConfig& cfg) {
  cfg.validate();
  std::vector<ParamInfo> ps;
  const int64_t c = cfg.dim, hd = cfg.head_dim(), f = cfg.ffn_dim;
  add_param(ps, "model.embed_tokens.weight", {cfg.vocab_size, c}, false);
  for (int l = 0; l < cfg.n_layers; ++l) {
    const std::string p = layer_prefix(l);
    add_param(ps, p + "input_layernorm.weight", {c}, false);
    add_param(ps, p + "self_attn.q_proj.weight", {cfg.n_heads * hd, c}, true);
    add_param(ps, p + "self_attn.k_proj.weight", {cfg.n_kv_heads * hd, c}, true);
    add_param(ps, p + "self_attn.v_proj.weight", {cfg.n_kv_heads * hd, c}, true);
    add_param(ps, p + "self_attn.o_proj.weight", {c, cfg.n_heads * hd}, true);
    add_param(ps, p + "post_attention_layernorm.weight", {c}, false);
    add_param(ps, p + "mlp.gate_proj.weight", {f, c}, true);
    add_param(ps, p + "mlp.up_proj.weight", {f, c}, true);
    add_param(ps, p + "mlp.down_proj.weight", {c, f}, true);
  }
  add_param(ps, "model.norm.weight", {c}, false);
  if (!cfg.tied_embeddings) add_param(ps, "lm_head.weight", {cfg.vocab_size, c}, true);
  return ps;
}

template <class T>
void transformer_init(const ModelConfig& cfg, const std::vector<ParamInfo>& params, T* weights, uint64_t seed) {
  const double out_scale = 1.0 / std::sqrt(2.0 * cfg.n_layers);
  for (size_t i = 0; i < params.size(); ++i) {
    const ParamInfo& p = params[i];
    T* w = weights + p.offset;
    if (p.shape.size() == 1) {  // norm weights
      std::fill(w, w + p.numel, T(1));
      continue;
    }
    const bool out_proj = p.name.find("o_proj") != std::string::npos || p.name.find("down_proj") != std::string::npos;
    const double std = cfg.init_std * (out_proj ? out_scale : 1.0);
    for (int64_t j = 0; j < p.numel; ++j)
      w[j] = static_cast<T>(std * philox_normal(seed, static_cast<uint32_t>(0x1000 + i), static_cast<uint64_t>(j)));
  }
}
template void transformer_init<float>(const ModelConfig&, const std::vector<ParamInfo>&, float*, uint64_t);
template void transformer_init<double>(const ModelConfig&, const std::vector<ParamInfo>&, double*, uint64_t);

template <class T>
const ParamInfo& Transformer<T>::param(const std::string& name) const {
  for (const auto& p : params_)
    if (p.name == name) return p;
  fail("model has no parameter named '", name, "'");
}
template <class T> T* Transformer<T>::ptr(const std::string& n) { return w_.data() + param(n).offset; }
template <class T> T* Transformer<T>::gptr(const std::string& n) { return g_.data() + param(n).offset; }

template <class T>
Transformer<T>::Transformer(const ModelConfig& cfg) : cfg_(cfg) {
  params_ = transformer_param_layout(cfg_);
  const int64_t c = cfg.dim, hd = cfg.head_dim(), f = cfg.ffn_dim;
  const int64_t n = params_.back().offset + params_.back().numel;
  w_.assign(static_cast<size_t>(n), T(0));
  g_.assign(static_cast<size_t>(n), T(0));
  blocks_.resize(static_cast<size_t>(cfg.n_layers));
  const int64_t qkv_width = (cfg.n_heads + 2 * cfg.n_kv_heads) * hd;
  for (int l = 0; l < cfg.n_layers; ++l) {
    Block& b = blocks_[static_cast<size_t>(l)];
    const std::string p = layer_prefix(l);
    const uint32_t id = static_cast<uint32_t>(l * 4);
    b.qkv = QuantLinear<T>(p + "self_attn.qkv_proj", c, qkv_width, id);
    b.o = QuantLinear<T>(p + "self_attn.o_proj", cfg.n_heads * hd, c, id + 1);
    b.gate_up = QuantLinear<T>(p + "mlp.gate_up_proj", c, 2 * f, id + 2);
    b.down = QuantLinear<T>(p + "mlp.down_proj", f, c, id + 3);
  }
  head_ = QuantLinear<T>("lm_head", c, cfg.vocab_size, kHeadLinearId);
  bind();
  set_recipe(Recipe::preset("bf16"));
}

template <class T>
void Transformer<T>::bind() {
  for (int l = 0; l < cfg_.n_layers; ++l) {
    Block& b = blocks_[static_cast<size_t>(l)];
    const std::string p = layer_prefix(l);
    // q, k, v (and gate, up) are adjacent in the flat buffer: the fused weight starts at q (gate).
    NIBBLE_CHECK(param(p + "self_attn.k_proj.weight").offset == param(p + "self_attn.q_proj.weight").offset + param(p + "self_attn.q_proj.weight").numel &&
                     param(p + "self_attn.v_proj.weight").offset == param(p + "self_attn.k_proj.weight").offset + param(p + "self_attn.k_proj.weight").numel &&
                     param(p + "mlp.up_proj.weight").offset == param(p + "mlp.gate_proj.weight").offset + param(p + "mlp.gate_proj.weight").numel,
                 "fused projections must be contiguous");
    b.qkv.bind(ptr(p + "self_attn.q_proj.weight"), gptr(p + "self_attn.q_proj.weight"));
    b.o.bind(ptr(p + "self_attn.o_proj.weight"), gptr(p + "self_attn.o_proj.weight"));
    b.gate_up.bind(ptr(p + "mlp.gate_proj.weight"), gptr(p + "mlp.gate_proj.weight"));
    b.down.bind(ptr(p + "mlp.down_proj.weight"), gptr(p + "mlp.down_proj.weight"));
    b.attn_norm = ptr(layer_prefix(l) + "input_layernorm.weight");
    b.d_attn_norm = gptr(layer_prefix(l) + "input_layernorm.weight");
    b.mlp_norm = ptr(layer_prefix(l) + "post_attention_layernorm.weight");
    b.d_mlp_norm = gptr(layer_prefix(l) + "post_attention_layernorm.weight");
  }
  const std::string hw = cfg_.tied_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  head_.bind(ptr(hw), gptr(hw));
}

template <class T>
void Transformer<T>::zero_grad() {
  std::fill(g_.begin(), g_.end(), T(0));
}

template <class T>
void Transformer<T>::init(uint64_t seed) {
  transformer_init(cfg_, params_, w_.data(), seed);
}

template <class T>
void Transformer<T>::set_recipe(const Recipe& r) {
  const Recipe hp = r.high_precision();
  for (int l = 0; l < cfg_.n_layers; ++l) {
    Block& b = blocks_[static_cast<size_t>(l)];
    Recipe use = r.block_in_high_precision(l, cfg_.n_layers) ? hp : r;
    if constexpr (!std::is_same_v<T, float>) use = r;  // double: exact only (checked by the layer)
    for (QuantLinear<T>* lin : {&b.qkv, &b.o, &b.gate_up, &b.down}) lin->set_recipe(use);
  }
  if constexpr (std::is_same_v<T, float>) head_.set_recipe(hp);
  else head_.set_recipe(r);
}

template <class T>
void Transformer<T>::ensure_buffers(int64_t b, int64_t t) {
  if (b == b_ && t == t_) return;
  b_ = b;
  t_ = t;
  const size_t n = static_cast<size_t>(b * t), c = static_cast<size_t>(cfg_.dim);
  const size_t qd = static_cast<size_t>(cfg_.n_heads * cfg_.head_dim()), kd = static_cast<size_t>(cfg_.kv_dim());
  const size_t f = static_cast<size_t>(cfg_.ffn_dim);
  for (Block& bl : blocks_) {
    bl.x_in.assign(n * c, T(0));
    bl.h1.assign(n * c, T(0));
    bl.rstd1.assign(n, T(0));
    bl.q_act.assign(n * qd, T(0));
    bl.k_act.assign(n * kd, T(0));
    bl.v_act.assign(n * kd, T(0));
    bl.att.assign(n * qd, T(0));
    bl.lse.assign(static_cast<size_t>(b * cfg_.n_heads * t), T(0));
    bl.x2.assign(n * c, T(0));
    bl.h2.assign(n * c, T(0));
    bl.rstd2.assign(n, T(0));
    bl.g_act.assign(n * f, T(0));
    bl.u_act.assign(n * f, T(0));
    bl.s_act.assign(n * f, T(0));
    bl.qkv_act.assign(n * (qd + 2 * kd), T(0));
    bl.gu_act.assign(n * 2 * f, T(0));
  }
  x_final_.assign(n * c, T(0));
  hf_.assign(n * c, T(0));
  rstd_f_.assign(n, T(0));
  logits_.assign(n * static_cast<size_t>(cfg_.vocab_size), T(0));
  dlogits_.assign(logits_.size(), T(0));
}

template <class T>
double Transformer<T>::forward(const int32_t* tokens, const int32_t* targets, int64_t b, int64_t t,
                               const StepContext& ctx) {
  if (t > cfg_.max_seq) fail("sequence length ", t, " exceeds the model's max_seq ", cfg_.max_seq);
  ensure_buffers(b, t);
  const int64_t n = b * t, c = cfg_.dim, hq = cfg_.n_heads, hkv = cfg_.n_kv_heads, hd = cfg_.head_dim();
  const int64_t v = cfg_.vocab_size;
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= v) fail("token id ", tokens[i], " at position ", i, " is outside the vocabulary [0, ", v, ")");
  tokens_.assign(tokens, tokens + n);
  const T eps = static_cast<T>(cfg_.norm_eps);
  std::vector<T> x(static_cast<size_t>(n * c)), tmp(static_cast<size_t>(n * c));
  ops::embedding_forward(tokens, ptr("model.embed_tokens.weight"), x.data(), n, c);
  for (Block& bl : blocks_) {
    bl.x_in = x;
    ops::rmsnorm_forward(x.data(), bl.attn_norm, bl.h1.data(), bl.rstd1.data(), n, c, eps);
    bl.qkv.forward(bl.h1.data(), bl.qkv_act.data(), n, ctx);
    split_columns<T>(bl.qkv_act.data(), n, {{bl.q_act.data(), hq * hd}, {bl.k_act.data(), hkv * hd}, {bl.v_act.data(), hkv * hd}});
    ops::rope_forward(bl.q_act.data(), b, t, hq, hd, cfg_.rope_theta);
    ops::rope_forward(bl.k_act.data(), b, t, hkv, hd, cfg_.rope_theta);
    ops::attention_forward(bl.q_act.data(), bl.k_act.data(), bl.v_act.data(), bl.att.data(), bl.lse.data(), b, t, hq, hkv, hd);
    bl.o.forward(bl.att.data(), tmp.data(), n, ctx);
    ops::add_inplace(x.data(), tmp.data(), n * c);
    bl.x2 = x;
    ops::rmsnorm_forward(x.data(), bl.mlp_norm, bl.h2.data(), bl.rstd2.data(), n, c, eps);
    bl.gate_up.forward(bl.h2.data(), bl.gu_act.data(), n, ctx);
    split_columns<T>(bl.gu_act.data(), n, {{bl.g_act.data(), cfg_.ffn_dim}, {bl.u_act.data(), cfg_.ffn_dim}});
    ops::swiglu_forward(bl.g_act.data(), bl.u_act.data(), bl.s_act.data(), n * cfg_.ffn_dim);
    bl.down.forward(bl.s_act.data(), tmp.data(), n, ctx);
    ops::add_inplace(x.data(), tmp.data(), n * c);
  }
  x_final_ = x;
  ops::rmsnorm_forward(x.data(), ptr("model.norm.weight"), hf_.data(), rstd_f_.data(), n, c, eps);
  head_.forward(hf_.data(), logits_.data(), n, ctx);
  if (!targets) {
    targets_.clear();
    return 0.0;
  }
  targets_.assign(targets, targets + n);
  return ops::cross_entropy(logits_.data(), targets, dlogits_.data(), n, v);
}

template <class T>
void Transformer<T>::backward(const StepContext& ctx) {
  NIBBLE_CHECK(!targets_.empty(), "backward needs a forward with targets");
  const int64_t b = b_, t = t_, n = b * t, c = cfg_.dim, hq = cfg_.n_heads, hkv = cfg_.n_kv_heads, hd = cfg_.head_dim();
  const int64_t f = cfg_.ffn_dim;
  std::vector<T> dx(static_cast<size_t>(n * c)), dh(static_cast<size_t>(n * c)), tmp(static_cast<size_t>(n * c));
  head_.backward(dlogits_.data(), dh.data(), n, ctx);
  ops::rmsnorm_backward(dh.data(), x_final_.data(), ptr("model.norm.weight"), rstd_f_.data(), dx.data(),
                        gptr("model.norm.weight"), n, c);
  std::vector<T> ds(static_cast<size_t>(n * f)), dg(static_cast<size_t>(n * f)), du(static_cast<size_t>(n * f));
  std::vector<T> dq(static_cast<size_t>(n * hq * hd)), dk(static_cast<size_t>(n * hkv * hd)), dv(static_cast<size_t>(n * hkv * hd));
  std::vector<T> datt(static_cast<size_t>(n * hq * hd));
  std::vector<T> dqkv(static_cast<size_t>(n * (hq + 2 * hkv) * hd)), dgu(static_cast<size_t>(n * 2 * f));
  for (int l = cfg_.n_layers - 1; l >= 0; --l) {
    Block& bl = blocks_[static_cast<size_t>(l)];
    // MLP: x3 = x2 + down(swiglu(gate(h2), up(h2))), h2 = rmsnorm(x2)
    bl.down.backward(dx.data(), ds.data(), n, ctx);
    ops::swiglu_backward(ds.data(), bl.g_act.data(), bl.u_act.data(), dg.data(), du.data(), n * f);
    join_columns<T>(dgu.data(), n, {{dg.data(), f}, {du.data(), f}});
    bl.gate_up.backward(dgu.data(), dh.data(), n, ctx);
    ops::rmsnorm_backward(dh.data(), bl.x2.data(), bl.mlp_norm, bl.rstd2.data(), tmp.data(), bl.d_mlp_norm, n, c);
    ops::add_inplace(dx.data(), tmp.data(), n * c);  // dx now = d(x2)
    // attention: x2 = x + o(attn(rope(q(h1)), rope(k(h1)), v(h1))), h1 = rmsnorm(x)
    bl.o.backward(dx.data(), datt.data(), n, ctx);
    ops::attention_backward(datt.data(), bl.q_act.data(), bl.k_act.data(), bl.v_act.data(), bl.att.data(), bl.lse.data(),
                            dq.data(), dk.data(), dv.data(), b, t, hq, hkv, hd);
    ops::rope_backward(dq.data(), b, t, hq, hd, cfg_.rope_theta);
    ops::rope_backward(dk.data(), b, t, hkv, hd, cfg_.rope_theta);
    join_columns<T>(dqkv.data(), n, {{dq.data(), hq * hd}, {dk.data(), hkv * hd}, {dv.data(), hkv * hd}});
    bl.qkv.backward(dqkv.data(), dh.data(), n, ctx);
    ops::rmsnorm_backward(dh.data(), bl.x_in.data(), bl.attn_norm, bl.rstd1.data(), tmp.data(), bl.d_attn_norm, n, c);
    ops::add_inplace(dx.data(), tmp.data(), n * c);
  }
  ops::embedding_backward(tokens_.data(), dx.data(), gptr("model.embed_tokens.weight"), n, c);
}

template <class T>
std::vector<OperandStats> Transformer<T>::operand_stats() {
  std::vector<OperandStats> out;
  for (Block& bl : blocks_)
    for (QuantLinear<T>* lin : {&bl.qkv, &bl.o, &bl.gate_up, &bl.down})
      for (auto& s : lin->stats()) out.push_back(s);
  return out;
}

template class Transformer<float>;
template class Transformer<double>;

}  // namespace nibble
