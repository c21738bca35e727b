#pragma once
// A LLaMA-style decoder-only transformer with explicit forward and backward:
//   embed → L × [RMSNorm → causal GQA attention with RoPE → +residual,
//                RMSNorm → SwiGLU MLP → +residual] → RMSNorm → head → cross-entropy
// Every attention and MLP projection is a QuantLinear under the run's Recipe (blocks listed
// in recipe.high_precision_blocks use bf16); the embedding, the head, norms, softmax and the
// loss stay in high precision (SPEC §5). Parameters live in one flat buffer (fp32 master
// weights) with HF-style names, so the optimizer and checkpoints see one array.
//
// Projections that read the same input run as one fused GEMM, as fused-QKV trainers do:
// q/k/v_proj (adjacent in the buffer) form one [(Hq+2Hkv)·D, C] weight "qkv_proj", and
// gate/up_proj one [2F, C] weight "gate_up_proj". The input is quantized once, and a 4-bit
// tensor scale covers the fused weight (and the fused dY), as in Transformer Engine's fused
// layers. Block boundaries inside it are multiples of 32, so 1×16/1×32 blocks and 16×16
// tiles never straddle two projections.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nibble/json.hpp"
#include "nibble/nn/linear.hpp"
#include "nibble/nn/recipe.hpp"
#include "nibble/tensor.hpp"

namespace nibble {

struct ModelConfig {
  std::string name = "tiny";
  std::string tokenizer = "byte";  // byte | gpt2
  int64_t vocab_size = 256;        // rows of the embedding (gpt2: 50257 padded to 50304)
  int64_t dim = 128;
  int n_layers = 4;
  int n_heads = 4;
  int n_kv_heads = 4;
  int64_t ffn_dim = 384;
  int64_t max_seq = 256;
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;
  bool tied_embeddings = true;
  double init_std = 0.02;

  int64_t head_dim() const { return dim / n_heads; }
  int64_t kv_dim() const { return head_dim() * n_kv_heads; }

  static ModelConfig preset(const std::string& name);  // tiny, 20m, 60m, 124m, 350m
  static std::vector<std::string> preset_names();
  // A JSON object with the fields above (any subset over a "base" preset, default tiny);
  // unknown fields are errors naming the field.
  static ModelConfig from_json(const Json& j, const std::string& what);
  static ModelConfig resolve(const std::string& spec);  // preset name or path to a .json
  Json to_json() const;
  // Errors naming the field and value: heads must divide dim, kv heads divide heads, head
  // dim even, widths multiples of 32 (4-bit blocks), positive sizes.
  void validate() const;
};

struct ParamInfo {
  std::string name;  // HF-style, e.g. "model.layers.0.self_attn.q_proj.weight"
  Shape shape;
  int64_t offset = 0;  // into the flat buffer
  int64_t numel = 0;
  bool decay = false;  // weight decay applies (2-D projection and head weights)
};

// The flat parameter buffer's layout (names, shapes, offsets) of a model: every engine (CPU,
// CUDA) and the checkpoints use this one order.
std::vector<ParamInfo> transformer_param_layout(const ModelConfig& cfg);
// GPT-2-style init from Philox(seed) into a flat buffer of that layout: N(0, init_std),
// output projections scaled by 1/sqrt(2·n_layers), norm weights 1.
template <class T>
void transformer_init(const ModelConfig& cfg, const std::vector<ParamInfo>& params, T* w, uint64_t seed);

template <class T>
class Transformer {
 public:
  explicit Transformer(const ModelConfig& cfg);

  const ModelConfig& config() const { return cfg_; }
  const std::vector<ParamInfo>& params() const { return params_; }
  const ParamInfo& param(const std::string& name) const;
  int64_t num_params() const { return static_cast<int64_t>(w_.size()); }
  T* weights() { return w_.data(); }
  const T* weights() const { return w_.data(); }
  T* grads() { return g_.data(); }
  void zero_grad();

  // GPT-2-style init from Philox(seed): N(0, init_std), output projections scaled by
  // 1/sqrt(2·n_layers), norm weights 1.
  void init(uint64_t seed);
  void set_recipe(const Recipe& r);

  // Forward over tokens [b, t]. With targets (−1 = ignore) returns the mean cross-entropy
  // and prepares the backward; without, returns 0 and leaves logits() for sampling.
  double forward(const int32_t* tokens, const int32_t* targets, int64_t b, int64_t t,
                 const StepContext& ctx);
  // Accumulates the gradient of the last forward's mean loss into grads().
  void backward(const StepContext& ctx);
  const T* logits() const { return logits_.data(); }  // [b·t, vocab]
  // Per-token activation fake quantization of every attention and MLP projection's input (QAT).
  void set_activation_bits(int bits) {
    for (Block& b : blocks_)
      for (QuantLinear<T>* l : {&b.qkv, &b.o, &b.gate_up, &b.down}) l->set_activation_bits(bits);
  }
  // Sets the analysis hook of every attention and MLP projection (not the head).
  void set_capture(const typename QuantLinear<T>::Capture& c) {
    for (Block& b : blocks_)
      for (QuantLinear<T>* l : {&b.qkv, &b.o, &b.gate_up, &b.down}) l->set_capture(c);
  }
  // The residual stream of the last forward entering block `l` (l = n_layers: after the last
  // block, before the final norm), [b·t, dim]: what the depth analysis compares across recipes.
  const std::vector<T>& residual_stream(int l) const {
    return l < cfg_.n_layers ? blocks_[static_cast<size_t>(l)].x_in : x_final_;
  }

  // SPEC §6 statistics of every quantized layer's operands from the last step run with
  // ctx.collect_stats.
  std::vector<OperandStats> operand_stats();

 private:
  struct Block {
    QuantLinear<T> qkv, o, gate_up, down;
    T* attn_norm = nullptr;
    T* mlp_norm = nullptr;
    T* d_attn_norm = nullptr;
    T* d_mlp_norm = nullptr;
    // saved activations
    std::vector<T> x_in, h1, rstd1, q_act, k_act, v_act, att, lse, x2, h2, rstd2, g_act, u_act, s_act;
    std::vector<T> qkv_act, gu_act;  // the fused projections' outputs, split into the above
  };
  T* ptr(const std::string& name);
  T* gptr(const std::string& name);
  void bind();
  void ensure_buffers(int64_t b, int64_t t);

  ModelConfig cfg_;
  std::vector<ParamInfo> params_;
  std::vector<T> w_, g_;
  std::vector<Block> blocks_;
  QuantLinear<T> head_;
  int64_t b_ = 0, t_ = 0;
  std::vector<int32_t> tokens_, targets_;
  std::vector<T> x_final_, hf_, rstd_f_, logits_, dlogits_;
};

}  // namespace nibble
