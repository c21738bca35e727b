// The CUDA engine: Transformer<float>'s forward and backward (src/nn/model.cpp) op for op on
// one GPU, fp32 master weights, gradients and AdamW moments in device memory, every GEMM
// through CudaLinear. All work is queued on one stream; the host waits only for the loss and
// the gradient norm (two doubles per step).
//
// Mixed precision as in Transformer Engine / torch autocast: the residual stream and its
// gradient, norms' statistics, master weights and optimizer state are fp32; every other
// activation (norm outputs, q/k/v, attention output, gate/up, SwiGLU output, logits) and their
// gradients are stored in bf16 — the type the GEMMs read anyway — so the GEMMs read them in
// place and the memory-bound ops move half the bytes. NIBBLE_ACTIVATIONS=fp32 keeps them in fp32
// (with NIBBLE_ATTENTION=fp32 the engine then reproduces the CPU op for op; the engine-vs-CPU
// tests use it).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <numeric>

#include <cuda_bf16.h>

#include "core/cuda/check.cuh"
#include "core/cuda/scratch.cuh"
#include "nibble/cuda.hpp"
#include "nibble/dtype.hpp"
#include "nibble/error.hpp"
#include "nibble/train/engine.hpp"
#include "nn/cuda/linear_cuda.hpp"
#include "ops/cuda/adam_chunks.cuh"
#include "ops/cuda/ops_cuda.hpp"

namespace nibble {
namespace {

using cuda::CudaLinear;
using cuda::DeviceScratch;
namespace gops = cuda::ops;

constexpr uint32_t kHeadLinearId = 255;

// Time per op category from CUDA event pairs recorded around each op (profiling mode only).
class OpProfiler {
 public:
  bool on = false;
  ~OpProfiler() {
    for (auto& p : pending_) { cudaEventDestroy(p.second.first); cudaEventDestroy(p.second.second); }
    for (cudaEvent_t e : pool_) cudaEventDestroy(e);
  }
  class Scope {
   public:
    Scope(OpProfiler& p, const char* name, cudaStream_t st) : p_(p), name_(name), st_(st) {
      if (p_.on) { start_ = p_.event(); NIBBLE_CUDA_CHECK(cudaEventRecord(start_, st_)); }
    }
    ~Scope() {
      if (!p_.on) return;
      cudaEvent_t stop = p_.event();
      cudaEventRecord(stop, st_);
      p_.pending_.push_back({name_, {start_, stop}});
    }
   private:
    OpProfiler& p_;
    const char* name_;
    cudaStream_t st_;
    cudaEvent_t start_ = nullptr;
  };
  Json collect(cudaStream_t st) {
    NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st));
    for (auto& [name, ev] : pending_) {
      float ms = 0;
      NIBBLE_CUDA_CHECK(cudaEventElapsedTime(&ms, ev.first, ev.second));
      totals_[name] += ms;
      pool_.push_back(ev.first);
      pool_.push_back(ev.second);
    }
    pending_.clear();
    Json j = Json::object();
    for (const auto& [name, ms] : totals_) j[name] = ms;
    return j;
  }
  void reset() { totals_.clear(); }

 private:
  cudaEvent_t event() {
    if (!pool_.empty()) { cudaEvent_t e = pool_.back(); pool_.pop_back(); return e; }
    cudaEvent_t e;
    NIBBLE_CUDA_CHECK(cudaEventCreate(&e));
    return e;
  }
  std::vector<std::pair<const char*, std::pair<cudaEvent_t, cudaEvent_t>>> pending_;
  std::map<std::string, double> totals_;
  std::vector<cudaEvent_t> pool_;
};
// The stored type of an activation type: bf16 or fp32.
template <class A>
constexpr cuda::GemmDtype act_type() {
  return sizeof(A) == 2 ? cuda::GemmDtype::BF16 : cuda::GemmDtype::FP32;
}

#define NIBBLE_TIMED(name) OpProfiler::Scope timed_scope_(prof_, name, st_)
std::string layer_prefix(int l) { return "model.layers." + std::to_string(l) + "."; }

class CudaEngine final : public TrainEngine {
 public:
  CudaEngine(const ModelConfig& cfg, const EngineOptions& opts) : cfg_(cfg), params_(transformer_param_layout(cfg)) {
    np_ = params_.back().offset + params_.back().numel;
    opt_end_ = np_;
    // A blocking stream: plain cudaMemcpy calls (uploads, downloads) stay ordered with its work.
    NIBBLE_CUDA_CHECK(cudaStreamCreate(&st_));
    const size_t bytes = static_cast<size_t>(np_) * sizeof(float);
    w_.ensure(bytes);
    g_.ensure(bytes);
    m_.ensure(bytes);
    v_.ensure(bytes);
    NIBBLE_CUDA_CHECK(cudaMemsetAsync(w_.get<void>(), 0, bytes, st_));
    NIBBLE_CUDA_CHECK(cudaMemsetAsync(g_.get<void>(), 0, bytes, st_));
    NIBBLE_CUDA_CHECK(cudaMemsetAsync(m_.get<void>(), 0, bytes, st_));
    NIBBLE_CUDA_CHECK(cudaMemsetAsync(v_.get<void>(), 0, bytes, st_));
    build_layers();
    build_adam_chunks();
    // Attention: bf16 tensor cores with fp32 accumulation and softmax (the default, as fused
    // attention kernels run it), or NIBBLE_ATTENTION=fp32 for the fp32 kernel that reproduces
    // the CPU bit for bit (the engine-vs-CPU tests use it).
    const char* att = std::getenv("NIBBLE_ATTENTION");
    const std::string choice = !opts.attention.empty() ? opts.attention : att && *att ? att : "tc";
    if (choice != "tc" && choice != "fp32") fail("NIBBLE_ATTENTION=", choice, " (use tc or fp32)");
    attention_tc_ = choice == "tc" && gops::attention_tc_supported(cfg_.head_dim());
    const char* act = std::getenv("NIBBLE_ACTIVATIONS");
    const std::string acts = !opts.activations.empty() ? opts.activations : act && *act ? act : "bf16";
    if (acts != "bf16" && acts != "fp32") fail("NIBBLE_ACTIVATIONS=", acts, " (use bf16 or fp32)");
    act_bf16_ = acts == "bf16";
    if (act_bf16_ && !attention_tc_)
      fail("bf16 activations need the tensor-core attention (head_dim 32, 64 or 128, NIBBLE_ATTENTION=tc); this "
           "model has head_dim ", cfg_.head_dim(), choice == "fp32" ? " and NIBBLE_ATTENTION=fp32" : "",
           ": set NIBBLE_ACTIVATIONS=fp32");
    set_recipe(Recipe::preset("bf16"));
  }
  ~CudaEngine() override {
    cudaStreamSynchronize(st_);
    cudaStreamDestroy(st_);
    if (cst_) {
      cudaStreamSynchronize(cst_);
      cudaStreamDestroy(cst_);
      cudaEventDestroy(grads_ready_);
    }
  }

  std::string device() const override {
    return cuda::device_summary() + (act_bf16_ ? ", bf16 activations" : ", fp32 activations") +
           (attention_tc_ ? ", bf16 tensor-core attention" : ", fp32 attention");
  }
  const ModelConfig& config() const override { return cfg_; }
  const std::vector<ParamInfo>& params() const override { return params_; }
  int64_t num_params() const override { return np_; }

  void init(uint64_t seed) override {
    std::vector<float> h(static_cast<size_t>(np_));
    transformer_init(cfg_, params_, h.data(), seed);
    set_weights(h.data());
  }
  void set_recipe(const Recipe& r) override {
    const Recipe hp = r.high_precision();
    for (int l = 0; l < cfg_.n_layers; ++l) {
      Block& b = blocks_[static_cast<size_t>(l)];
      const Recipe& use = r.block_in_high_precision(l, cfg_.n_layers) ? hp : r;
      for (CudaLinear* lin : {&b.qkv, &b.o, &b.gate_up, &b.down}) lin->set_recipe(use);
    }
    head_.set_recipe(hp);
  }
  void set_weights(const float* w) override { upload(w_, w, np_); }
  float* device_weights() override { return w_.get<float>(); }
  const float* device_gradients() override { return g_.get<float>(); }
  void* device_stream() override { return st_; }
  void get_gradients(float* g) override { download(g_, g, np_); }
  void get_weights(float* w) const override { download(w_, w, np_); }
  // The moments of [opt_begin_, opt_end_) only (ZeRO-1: this rank's slice; otherwise all of
  // them), as the CPU engine: DataParallel copies a rank's state into the whole one at its
  // slice's offset, so a longer state would be written past that buffer's end.
  void set_optimizer(const OptimizerState& s) override {
    const int64_t n = opt_end_ - opt_begin_;
    NIBBLE_CHECK(static_cast<int64_t>(s.m.size()) == n && s.v.size() == s.m.size(), "optimizer state size: ",
                 s.m.size(), " and ", s.v.size(), " moments for the ", n, " parameters [", opt_begin_, ", ", opt_end_,
                 ")");
    upload(m_, s.m.data(), n);
    upload(v_, s.v.data(), n);
  }
  OptimizerState get_optimizer() const override {
    const int64_t n = opt_end_ - opt_begin_;
    OptimizerState s;
    s.m.resize(static_cast<size_t>(n));
    s.v.resize(static_cast<size_t>(n));
    download(m_, s.m.data(), n);
    download(v_, s.v.data(), n);
    return s;
  }

  void set_optimizer_range(int64_t begin, int64_t end) override {
    NIBBLE_CHECK(0 <= begin && begin <= end && end <= np_, "optimizer range [", begin, ", ", end, ")");
    NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st_));
    opt_begin_ = begin;
    opt_end_ = end;
    // the moments of the slice only: ZeRO-1's memory saving
    const size_t bytes = static_cast<size_t>(std::max<int64_t>(end - begin, 1)) * sizeof(float);
    m_ = DeviceScratch();
    v_ = DeviceScratch();
    m_.ensure(bytes);
    v_.ensure(bytes);
    NIBBLE_CUDA_CHECK(cudaMemsetAsync(m_.get<void>(), 0, bytes, st_));
    NIBBLE_CUDA_CHECK(cudaMemsetAsync(v_.get<void>(), 0, bytes, st_));
    build_adam_chunks(chunks_decay_all_);
  }
  void all_gather_weights(Communicator& comm, const std::vector<int64_t>& offsets) override {
    NIBBLE_TIMED("all-gather (ZeRO-1)");
    comm.all_gather_device(w_.get<float>(), offsets, st_);
  }

  double forward(const int32_t* tokens, const int32_t* targets, int64_t b, int64_t t, const StepContext& ctx,
                 bool need_backward) override {
    return act_bf16_ ? forward_t<bf16>(tokens, targets, b, t, ctx, need_backward)
                     : forward_t<float>(tokens, targets, b, t, ctx, need_backward);
  }
  void zero_grad() override {
    NIBBLE_CUDA_CHECK(cudaMemsetAsync(g_.get<void>(), 0, static_cast<size_t>(np_) * sizeof(float), st_));
  }
  void backward(const StepContext& ctx) override {
    if (act_bf16_) backward_t<bf16>(ctx);
    else backward_t<float>(ctx);
  }
  double grad_norm() override {
    NIBBLE_TIMED("grad norm");
    double* part = norm_partials_.as<double>(static_cast<size_t>(gops::global_norm_partials()) + 1);
    gops::global_sumsq(g_.get<float>(), np_, part, part + gops::global_norm_partials(), st_);
    double s = 0;
    NIBBLE_CUDA_CHECK(cudaMemcpyAsync(&s, part + gops::global_norm_partials(), sizeof s, cudaMemcpyDeviceToHost, st_));
    NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st_));
    return std::sqrt(s);
  }
  void all_reduce_gradients(Communicator& comm) override {
    NIBBLE_TIMED("all-reduce (wait)");
    if (sync_ == &comm && buckets_queued_) {
      comm.finish_device(cst_);  // the buckets the backward queued
      buckets_queued_ = false;
      return;
    }
    comm.all_reduce_sum_device(g_.get<float>(), np_, st_);
  }
  void reduce_scatter_gradients(Communicator& comm, const std::vector<int64_t>& offsets) override {
    NIBBLE_TIMED("reduce-scatter (ZeRO-1)");
    comm.reduce_scatter_sum_device(g_.get<float>(), offsets, st_);
  }
  double sharded_grad_norm(Communicator& comm, const std::vector<int64_t>& offsets) override {
    NIBBLE_TIMED("grad norm");
    const int64_t b = offsets[static_cast<size_t>(comm.rank())], e = offsets[static_cast<size_t>(comm.rank()) + 1];
    double s = 0;
    if (e > b) {
      double* part = norm_partials_.as<double>(static_cast<size_t>(gops::global_norm_partials()) + 1);
      gops::global_sumsq(g_.get<float>() + b, e - b, part, part + gops::global_norm_partials(), st_);
      NIBBLE_CUDA_CHECK(cudaMemcpyAsync(&s, part + gops::global_norm_partials(), sizeof s, cudaMemcpyDeviceToHost, st_));
      NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st_));
    }
    comm.all_reduce_sum(&s, 1);  // the slices' sums in rank order: the same value on every rank
    return std::sqrt(s);
  }
  void set_gradient_sync(Communicator* comm) override {
    sync_ = comm;
    if (comm && !cst_) {
      NIBBLE_CUDA_CHECK(cudaStreamCreateWithFlags(&cst_, cudaStreamNonBlocking));
      NIBBLE_CUDA_CHECK(cudaEventCreateWithFlags(&grads_ready_, cudaEventDisableTiming));
    }
  }
  void optimizer_step(const AdamHyper& h, float lr, float grad_scale, int64_t t) override {
    if (h.decay_all != chunks_decay_all_) build_adam_chunks(h.decay_all);
    NIBBLE_TIMED("adamw");
    const gops::AdamChunks c = adam_chunks_.view();
    // the chunks are relative to opt_begin_ (ZeRO-1: this rank's slice; otherwise 0)
    gops::adamw_update(w_.get<float>() + opt_begin_, g_.get<float>() + opt_begin_, m_.get<float>(), v_.get<float>(), c,
                       lr, h.beta1, h.beta2, h.eps, h.weight_decay, t, grad_scale, st_);
  }
  std::vector<float> logits_row(int64_t row) override {
    NIBBLE_CHECK(row >= 0 && row < n_, "logits row ", row, " out of range");
    const int64_t v = cfg_.vocab_size;
    std::vector<float> h(static_cast<size_t>(v));
    if (act_bf16_) {
      std::vector<uint16_t> raw(h.size());
      NIBBLE_CUDA_CHECK(cudaMemcpyAsync(raw.data(), logits_.get<uint16_t>() + row * v, raw.size() * 2,
                                        cudaMemcpyDeviceToHost, st_));
      NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st_));
      for (size_t i = 0; i < h.size(); ++i) h[i] = bf16_to_float(raw[i]);
      return h;
    }
    NIBBLE_CUDA_CHECK(cudaMemcpyAsync(h.data(), logits_.get<float>() + row * v, h.size() * sizeof(float),
                                      cudaMemcpyDeviceToHost, st_));
    NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st_));
    return h;
  }
  std::vector<OperandStats> operand_stats() override {
    std::vector<OperandStats> out;
    for (Block& bl : blocks_)
      for (CudaLinear* lin : {&bl.qkv, &bl.o, &bl.gate_up, &bl.down})
        for (auto& s : lin->stats()) out.push_back(s);
    return out;
  }
  void set_capture(const QuantLinear<float>::Capture& c) override {
    for (Block& bl : blocks_)
      for (CudaLinear* lin : {&bl.qkv, &bl.o, &bl.gate_up, &bl.down}) lin->set_capture(c);
  }
  void synchronize() override { NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st_)); }
  void set_profiling(bool on) override {
    if (prof_.on) prof_.collect(st_);
    prof_.on = on;
    prof_.reset();
  }
  Json profile() override { return prof_.collect(st_); }

 private:
  using bf16 = __nv_bfloat16;
  template <class A>
  double forward_t(const int32_t* tokens, const int32_t* targets, int64_t b, int64_t t, const StepContext& ctx,
                   bool need_backward);
  template <class A>
  void backward_t(const StepContext& ctx);

  struct Block {
    CudaLinear qkv, o, gate_up, down;
    float* attn_norm = nullptr;
    float* mlp_norm = nullptr;
    float* d_attn_norm = nullptr;
    float* d_mlp_norm = nullptr;
    // saved activations: x_in, x2 (the residual stream), rstd and lse fp32; the rest of the
    // activation type
    DeviceScratch x_in, h1, rstd1, qkv_act, att, lse, x2, h2, rstd2, gu_act, s_act;
  };

  const ParamInfo& param(const std::string& name) const {
    for (const auto& p : params_)
      if (p.name == name) return p;
    fail("model has no parameter named '", name, "'");
  }
  float* ptr(const std::string& n) { return w_.get<float>() + param(n).offset; }
  float* gptr(const std::string& n) { return g_.get<float>() + param(n).offset; }

  // n may be 0 (a ZeRO-1 rank with an empty slice), with null pointers on either side.
  void upload(DeviceScratch& d, const float* h, int64_t n) {
    NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st_));
    if (n > 0)
      NIBBLE_CUDA_CHECK(cudaMemcpy(d.get<float>(), h, static_cast<size_t>(n) * sizeof(float), cudaMemcpyHostToDevice));
  }
  void download(const DeviceScratch& d, float* h, int64_t n) const {
    NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st_));
    if (n > 0)
      NIBBLE_CUDA_CHECK(cudaMemcpy(h, d.get<float>(), static_cast<size_t>(n) * sizeof(float), cudaMemcpyDeviceToHost));
  }

  void build_layers() {
    const int64_t c = cfg_.dim, hd = cfg_.head_dim(), f = cfg_.ffn_dim;
    const int64_t qkv_width = (cfg_.n_heads + 2 * cfg_.n_kv_heads) * hd;
    blocks_ = std::vector<Block>(static_cast<size_t>(cfg_.n_layers));
    for (int l = 0; l < cfg_.n_layers; ++l) {
      Block& b = blocks_[static_cast<size_t>(l)];
      const std::string p = layer_prefix(l);
      const uint32_t id = static_cast<uint32_t>(l * 4);
      b.qkv = CudaLinear(p + "self_attn.qkv_proj", c, qkv_width, id);
      b.o = CudaLinear(p + "self_attn.o_proj", cfg_.n_heads * hd, c, id + 1);
      b.gate_up = CudaLinear(p + "mlp.gate_up_proj", c, 2 * f, id + 2);
      b.down = CudaLinear(p + "mlp.down_proj", f, c, id + 3);
      b.qkv.bind(ptr(p + "self_attn.q_proj.weight"), gptr(p + "self_attn.q_proj.weight"));
      b.o.bind(ptr(p + "self_attn.o_proj.weight"), gptr(p + "self_attn.o_proj.weight"));
      b.gate_up.bind(ptr(p + "mlp.gate_proj.weight"), gptr(p + "mlp.gate_proj.weight"));
      b.down.bind(ptr(p + "mlp.down_proj.weight"), gptr(p + "mlp.down_proj.weight"));
      b.attn_norm = ptr(p + "input_layernorm.weight");
      b.d_attn_norm = gptr(p + "input_layernorm.weight");
      b.mlp_norm = ptr(p + "post_attention_layernorm.weight");
      b.d_mlp_norm = gptr(p + "post_attention_layernorm.weight");
    }
    // Each block's parameters are contiguous (transformer_param_layout): [embedding][block 0]
    // ... [block L−1][final norm][head].
    layer_grads_.clear();
    for (int l = 0; l < cfg_.n_layers; ++l) {
      const int64_t begin = param(layer_prefix(l) + "input_layernorm.weight").offset;
      const int64_t end = l + 1 < cfg_.n_layers ? param(layer_prefix(l + 1) + "input_layernorm.weight").offset
                                                : param("model.norm.weight").offset;
      layer_grads_.push_back({begin, end});
    }
    const std::string hw = cfg_.tied_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
    head_ = CudaLinear("lm_head", c, cfg_.vocab_size, kHeadLinearId);
    head_.bind(ptr(hw), gptr(hw));
  }

  // AdamW runs over all its parameters in one launch (adam_chunks.cuh): each tensor's part
  // inside [opt_begin_, opt_end_), offsets relative to opt_begin_.
  void build_adam_chunks(bool decay_all = false) {
    std::vector<cuda::AdamTensor> tensors;
    for (const ParamInfo& p : params_) {
      const int64_t lo = std::max(p.offset, opt_begin_), hi = std::min(p.offset + p.numel, opt_end_);
      if (lo < hi) tensors.push_back({lo - opt_begin_, hi - lo, p.decay || decay_all});
    }
    adam_chunks_.build(tensors, st_);
    chunks_decay_all_ = decay_all;
  }

  void ensure_buffers(int64_t b, int64_t t) {
    if (b == b_ && t == t_) return;
    const int64_t n = b * t, c = cfg_.dim, qd = cfg_.n_heads * cfg_.head_dim(), kd = cfg_.kv_dim();
    const int64_t f = cfg_.ffn_dim, v = cfg_.vocab_size;
    const size_t ab = act_bf16_ ? 2 : 4;
    auto fl = [](DeviceScratch& d, int64_t count) { d.as<float>(static_cast<size_t>(count)); };
    auto ac = [ab](DeviceScratch& d, int64_t count) { d.ensure(static_cast<size_t>(count) * ab); };
    for (Block& bl : blocks_) {
      fl(bl.x_in, n * c);
      ac(bl.h1, n * c);
      fl(bl.rstd1, n);
      ac(bl.qkv_act, n * (qd + 2 * kd));
      ac(bl.att, n * qd);
      fl(bl.lse, b * cfg_.n_heads * t);
      fl(bl.x2, n * c);
      ac(bl.h2, n * c);
      fl(bl.rstd2, n);
      ac(bl.gu_act, n * 2 * f);
      ac(bl.s_act, n * f);
    }
    fl(x_final_, n * c);
    ac(hf_, n * c);
    fl(rstd_f_, n);
    ac(logits_, n * v);
    tokens_d_.as<int32_t>(static_cast<size_t>(n));
    targets_d_.as<int32_t>(static_cast<size_t>(n));
    row_loss_.as<double>(static_cast<size_t>(n) + 1);
    if (t != t_) {
      const int64_t hd = cfg_.head_dim();
      std::vector<double> tab(static_cast<size_t>(2 * t * (hd / 2)));
      gops::rope_table(tab.data(), t, hd, cfg_.rope_theta);
      NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st_));
      NIBBLE_CUDA_CHECK(cudaMemcpy(rope_.as<double>(tab.size()), tab.data(), tab.size() * sizeof(double), cudaMemcpyHostToDevice));
    }
    b_ = b;
    t_ = t;
    n_ = n;
  }

  void ensure_backward_buffers() {
    const int64_t n = n_, c = cfg_.dim, hd = cfg_.head_dim();
    const int64_t qkv_width = (cfg_.n_heads + 2 * cfg_.n_kv_heads) * hd, f = cfg_.ffn_dim;
    const size_t ab = act_bf16_ ? 2 : 4;
    auto fl = [](DeviceScratch& d, int64_t count) { return d.as<float>(static_cast<size_t>(count)); };
    auto ac = [ab](DeviceScratch& d, int64_t count) { d.ensure(static_cast<size_t>(count) * ab); };
    fl(dx_, n * c);
    ac(dh_, n * c);
    ac(ds_, n * f);
    ac(dgu_, n * 2 * f);
    ac(datt_, n * cfg_.n_heads * hd);
    ac(dqkv_, n * qkv_width);
    fl(delta_, b_ * cfg_.n_heads * t_);
    fl(norm_scratch_, gops::rmsnorm_partials_floats(n, c));
  }

  // dx (the residual stream's gradient, fp32) = or += the norm's input gradient.
  template <class A>
  void rmsnorm_backward(const A* dy, const float* x, const float* w, const float* rstd, float* dx, float* dw,
                        bool accumulate) {
    gops::rmsnorm_backward(dy, x, w, rstd, dx, dw, norm_scratch_.get<float>(), n_, cfg_.dim, st_, accumulate);
  }
  template <class A>
  void attention_forward(const A* qkv, A* out, float* lse, int64_t qkv_width) {
    const int64_t hq = cfg_.n_heads, hkv = cfg_.n_kv_heads, hd = cfg_.head_dim();
    const A *q = qkv, *k = qkv + hq * hd, *v = qkv + (hq + hkv) * hd;
    if constexpr (sizeof(A) == 4) {
      if (!attention_tc_) {
        gops::attention_forward(q, k, v, qkv_width, qkv_width, out, lse, b_, t_, hq, hkv, hd, st_);
        return;
      }
    }
    gops::attention_forward_tc(q, k, v, qkv_width, qkv_width, out, lse, b_, t_, hq, hkv, hd, st_);
  }
  template <class A>
  void attention_backward(const A* dout, const A* qkv, const A* out, const float* lse, A* dqkv, int64_t qkv_width) {
    const int64_t hq = cfg_.n_heads, hkv = cfg_.n_kv_heads, hd = cfg_.head_dim();
    const A *q = qkv, *k = qkv + hq * hd, *v = qkv + (hq + hkv) * hd;
    A *dq = dqkv, *dk = dqkv + hq * hd, *dv = dqkv + (hq + hkv) * hd;
    if constexpr (sizeof(A) == 4) {
      if (!attention_tc_) {
        gops::attention_backward(dout, q, k, v, qkv_width, qkv_width, out, lse, dq, dk, dv, qkv_width, qkv_width,
                                 delta_.get<float>(), b_, t_, hq, hkv, hd, st_);
        return;
      }
    }
    gops::attention_backward_tc(dout, q, k, v, qkv_width, qkv_width, out, lse, dq, dk, dv, qkv_width, qkv_width,
                                delta_.get<float>(), b_, t_, hq, hkv, hd, st_);
  }

  ModelConfig cfg_;
  std::vector<ParamInfo> params_;
  int64_t np_ = 0;
  cudaStream_t st_ = nullptr;
  DeviceScratch w_, g_, m_, v_;  // m_, v_: the slice [opt_begin_, opt_end_) of the parameters
  int64_t opt_begin_ = 0, opt_end_ = 0;
  cuda::DeviceAdamChunks adam_chunks_;
  bool chunks_decay_all_ = false;
  std::vector<Block> blocks_;
  CudaLinear head_;
  cuda::LinearWorkspace ws_;
  int64_t b_ = 0, t_ = 0, n_ = 0;
  std::vector<int32_t> tokens_;
  bool have_targets_ = false;
  DeviceScratch tokens_d_, targets_d_, rope_, row_loss_, norm_partials_;
  DeviceScratch x_final_, hf_, rstd_f_, logits_;
  DeviceScratch dx_, dh_, ds_, dgu_, datt_, dqkv_, delta_, norm_scratch_;
  DeviceScratch emb_unique_, emb_starts_, emb_order_;
  OpProfiler prof_;
  bool attention_tc_ = true;
  bool act_bf16_ = true;
  // Gradient buckets reduced during the backward (data parallelism with NCCL).
  Communicator* sync_ = nullptr;
  cudaStream_t cst_ = nullptr;
  cudaEvent_t grads_ready_ = nullptr;
  bool buckets_queued_ = false;
  std::vector<std::pair<int64_t, int64_t>> layer_grads_;  // [begin, end) of each block's parameters

  // Queues g[begin, end) for the all-reduce once the work queued so far on st_ is done.
  void queue_bucket(int64_t begin, int64_t end) {
    if (!sync_ || end <= begin) return;
    NIBBLE_CUDA_CHECK(cudaEventRecord(grads_ready_, st_));
    NIBBLE_CUDA_CHECK(cudaStreamWaitEvent(cst_, grads_ready_, 0));
    sync_->enqueue_all_reduce_sum_device(g_.get<float>() + begin, end - begin, cst_);
    buckets_queued_ = true;
  }
};

template <class A>
double CudaEngine::forward_t(const int32_t* tokens, const int32_t* targets, int64_t b, int64_t t,
                             const StepContext& ctx, bool need_backward) {
  if (t > cfg_.max_seq) fail("sequence length ", t, " exceeds the model's max_seq ", cfg_.max_seq);
  const int64_t n = b * t, c = cfg_.dim, hq = cfg_.n_heads, hkv = cfg_.n_kv_heads, hd = cfg_.head_dim();
  const int64_t v = cfg_.vocab_size, f = cfg_.ffn_dim, qkv_width = (hq + 2 * hkv) * hd;
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= v) fail("token id ", tokens[i], " at position ", i, " is outside the vocabulary [0, ", v, ")");
  if (targets)
    for (int64_t i = 0; i < n; ++i)
      if (targets[i] < -1 || targets[i] >= v)
        fail("cross_entropy: target ", targets[i], " of row ", i, " is outside [0, ", v, ") and is not -1 (ignore)");
  ensure_buffers(b, t);
  tokens_.assign(tokens, tokens + n);
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(tokens_d_.get<int32_t>(), tokens, static_cast<size_t>(n) * 4, cudaMemcpyHostToDevice, st_));
  const float eps = static_cast<float>(cfg_.norm_eps);
  const double* rope = rope_.get<double>();
  constexpr cuda::GemmDtype act = act_type<A>();
  {
    NIBBLE_TIMED("embedding");
    gops::embedding_forward(tokens_d_.get<int32_t>(), ptr("model.embed_tokens.weight"), blocks_[0].x_in.get<float>(), n, c, st_);
  }
  for (size_t l = 0; l < blocks_.size(); ++l) {
    Block& bl = blocks_[l];
    A* qkv = bl.qkv_act.get<A>();
    {
      NIBBLE_TIMED("rmsnorm");
      gops::rmsnorm_forward(bl.x_in.get<float>(), bl.attn_norm, bl.h1.get<A>(), bl.rstd1.get<float>(), n, c, eps, st_);
    }
    {
      NIBBLE_TIMED("linear qkv");
      bl.qkv.forward({bl.h1.get<A>(), act}, {qkv, act, nullptr}, n, ctx, ws_, st_);
    }
    {
      NIBBLE_TIMED("rope");
      gops::rope_apply(qkv, qkv_width, b, t, hq, hd, rope, false, st_);
      gops::rope_apply(qkv + hq * hd, qkv_width, b, t, hkv, hd, rope, false, st_);
    }
    {
      NIBBLE_TIMED("attention forward");
      attention_forward<A>(qkv, bl.att.get<A>(), bl.lse.get<float>(), qkv_width);
    }
    {
      // x2 = x_in + o(att): the residual add in the GEMM's epilogue
      NIBBLE_TIMED("linear o");
      bl.o.forward({bl.att.get<A>(), act}, {bl.x2.get<float>(), cuda::GemmDtype::FP32, bl.x_in.get<float>()}, n, ctx,
                   ws_, st_);
    }
    {
      NIBBLE_TIMED("rmsnorm");
      gops::rmsnorm_forward(bl.x2.get<float>(), bl.mlp_norm, bl.h2.get<A>(), bl.rstd2.get<float>(), n, c, eps, st_);
    }
    {
      NIBBLE_TIMED("linear gate_up");
      bl.gate_up.forward({bl.h2.get<A>(), act}, {bl.gu_act.get<A>(), act, nullptr}, n, ctx, ws_, st_);
    }
    {
      NIBBLE_TIMED("swiglu");
      gops::swiglu_forward(bl.gu_act.get<A>(), bl.s_act.get<A>(), n, f, st_);
    }
    float* next = l + 1 < blocks_.size() ? blocks_[l + 1].x_in.get<float>() : x_final_.get<float>();
    {
      NIBBLE_TIMED("linear down");
      bl.down.forward({bl.s_act.get<A>(), act}, {next, cuda::GemmDtype::FP32, bl.x2.get<float>()}, n, ctx, ws_, st_);
    }
  }
  {
    NIBBLE_TIMED("rmsnorm");
    gops::rmsnorm_forward(x_final_.get<float>(), ptr("model.norm.weight"), hf_.get<A>(), rstd_f_.get<float>(), n, c, eps, st_);
  }
  {
    NIBBLE_TIMED("linear head");
    head_.forward({hf_.get<A>(), act}, {logits_.get<A>(), act, nullptr}, n, ctx, ws_, st_);
  }
  have_targets_ = false;
  if (!targets) {
    NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st_));
    return 0.0;
  }
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(targets_d_.get<int32_t>(), targets, static_cast<size_t>(n) * 4, cudaMemcpyHostToDevice, st_));
  double* rl = row_loss_.get<double>();
  if (need_backward) {
    {
      NIBBLE_TIMED("cross-entropy");
      gops::cross_entropy(logits_.get<A>(), targets_d_.get<int32_t>(), n, v, rl, rl + n, st_);
    }
    have_targets_ = true;
  } else {
    {
      NIBBLE_TIMED("cross-entropy");
      gops::cross_entropy_loss(logits_.get<A>(), targets_d_.get<int32_t>(), n, v, rl, rl + n, st_);
    }
  }
  double loss = 0;
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(&loss, rl + n, sizeof loss, cudaMemcpyDeviceToHost, st_));
  NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st_));
  return loss;
}

template <class A>
void CudaEngine::backward_t(const StepContext& ctx) {
  NIBBLE_CHECK(have_targets_, "backward needs a forward with targets (and need_backward)");
  ensure_backward_buffers();
  const int64_t b = b_, t = t_, n = n_, c = cfg_.dim, hq = cfg_.n_heads, hkv = cfg_.n_kv_heads, hd = cfg_.head_dim();
  const int64_t f = cfg_.ffn_dim, qkv_width = (hq + 2 * hkv) * hd;
  constexpr cuda::GemmDtype act = act_type<A>();
  constexpr cuda::GemmDtype f32 = cuda::GemmDtype::FP32;
  float* dx = dx_.get<float>();
  A *dh = dh_.get<A>(), *ds = ds_.get<A>(), *dgu = dgu_.get<A>(), *datt = datt_.get<A>(), *dqkv = dqkv_.get<A>();
  const double* rope = rope_.get<double>();
  // The logits buffer now holds dlogits (cross_entropy wrote them in place).
  {
    NIBBLE_TIMED("linear head");
    head_.backward({logits_.get<A>(), act}, dh, act, n, ctx, ws_, st_);
  }
  {
    NIBBLE_TIMED("rmsnorm");
    rmsnorm_backward(dh, x_final_.get<float>(), ptr("model.norm.weight"), rstd_f_.get<float>(), dx,
                     gptr("model.norm.weight"), false);
  }
  queue_bucket(layer_grads_.back().second, np_);  // the final norm (and an untied head): final now
  for (int l = cfg_.n_layers - 1; l >= 0; --l) {
    Block& bl = blocks_[static_cast<size_t>(l)];
    {
      NIBBLE_TIMED("linear down");
      bl.down.backward({dx, f32}, ds, act, n, ctx, ws_, st_);
    }
    {
      NIBBLE_TIMED("swiglu");
      gops::swiglu_backward(ds, bl.gu_act.get<A>(), dgu, n, f, st_);
    }
    {
      NIBBLE_TIMED("linear gate_up");
      bl.gate_up.backward({dgu, act}, dh, act, n, ctx, ws_, st_);
    }
    {
      NIBBLE_TIMED("rmsnorm");  // dx += the mlp norm's input gradient (the residual branch)
      rmsnorm_backward(dh, bl.x2.get<float>(), bl.mlp_norm, bl.rstd2.get<float>(), dx, bl.d_mlp_norm, true);
    }
    {
      NIBBLE_TIMED("linear o");
      bl.o.backward({dx, f32}, datt, act, n, ctx, ws_, st_);
    }
    {
      NIBBLE_TIMED("attention backward");
      attention_backward<A>(datt, bl.qkv_act.get<A>(), bl.att.get<A>(), bl.lse.get<float>(), dqkv, qkv_width);
    }
    {
      NIBBLE_TIMED("rope");
      gops::rope_apply(dqkv, qkv_width, b, t, hq, hd, rope, true, st_);
      gops::rope_apply(dqkv + hq * hd, qkv_width, b, t, hkv, hd, rope, true, st_);
    }
    {
      NIBBLE_TIMED("linear qkv");
      bl.qkv.backward({dqkv, act}, dh, act, n, ctx, ws_, st_);
    }
    {
      NIBBLE_TIMED("rmsnorm");
      rmsnorm_backward(dh, bl.x_in.get<float>(), bl.attn_norm, bl.rstd1.get<float>(), dx, bl.d_attn_norm, true);
    }
    queue_bucket(layer_grads_[static_cast<size_t>(l)].first, layer_grads_[static_cast<size_t>(l)].second);
  }
  // Embedding backward without atomics: the step's rows grouped by token id (a counting sort
  // on the host), each token's rows summed in increasing order.
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b2) { return tokens_[a] < tokens_[b2]; });
  std::vector<int32_t> unique, starts;
  for (int64_t i = 0; i < n; ++i)
    if (i == 0 || tokens_[order[i]] != tokens_[order[i - 1]]) {
      unique.push_back(tokens_[order[i]]);
      starts.push_back(static_cast<int32_t>(i));
    }
  starts.push_back(static_cast<int32_t>(n));
  int32_t* du = emb_unique_.as<int32_t>(unique.size());
  int32_t* dst = emb_starts_.as<int32_t>(starts.size());
  int32_t* dor = emb_order_.as<int32_t>(order.size());
  // Pageable host memory: the copies complete before the calls return, so the vectors may die.
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(du, unique.data(), unique.size() * 4, cudaMemcpyHostToDevice, st_));
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(dst, starts.data(), starts.size() * 4, cudaMemcpyHostToDevice, st_));
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(dor, order.data(), order.size() * 4, cudaMemcpyHostToDevice, st_));
  {
    NIBBLE_TIMED("embedding");
    gops::embedding_backward(du, dst, dor, static_cast<int64_t>(unique.size()), dx, gptr("model.embed_tokens.weight"), c, st_);
  }
  queue_bucket(0, layer_grads_.front().first);  // the embedding (and a tied head)
  NIBBLE_CUDA_CHECK(cudaStreamSynchronize(st_));
}

}  // namespace

std::unique_ptr<TrainEngine> make_cuda_engine(const ModelConfig& cfg, const EngineOptions& opts) {
  return std::make_unique<CudaEngine>(cfg, opts);
}

}  // namespace nibble
