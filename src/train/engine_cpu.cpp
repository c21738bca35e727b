// The CPU engine: the reference Transformer<float> and its AdamW state in host memory.
#include <algorithm>
#include <cmath>

#include "nibble/error.hpp"
#include "nibble/ops/ops.hpp"
#include "nibble/train/engine.hpp"

namespace nibble {
namespace {

class CpuEngine final : public TrainEngine {
 public:
  explicit CpuEngine(const ModelConfig& cfg) : model_(cfg), end_(model_.num_params()) {
    opt_.m.assign(static_cast<size_t>(model_.num_params()), 0.0f);
    opt_.v.assign(opt_.m.size(), 0.0f);
  }
  std::string device() const override { return "cpu"; }
  const ModelConfig& config() const override { return model_.config(); }
  const std::vector<ParamInfo>& params() const override { return model_.params(); }
  int64_t num_params() const override { return model_.num_params(); }
  void init(uint64_t seed) override { model_.init(seed); }
  void set_recipe(const Recipe& r) override { model_.set_recipe(r); }
  void set_weights(const float* w) override { std::copy(w, w + num_params(), model_.weights()); }
  void get_weights(float* w) const override { std::copy(model_.weights(), model_.weights() + num_params(), w); }
  void set_optimizer(const OptimizerState& s) override {
    NIBBLE_CHECK(static_cast<int64_t>(s.m.size()) == end_ - begin_ && s.v.size() == s.m.size(), "optimizer state size");
    opt_ = s;
  }
  void set_optimizer_range(int64_t begin, int64_t end) override {
    NIBBLE_CHECK(0 <= begin && begin <= end && end <= num_params(), "optimizer range [", begin, ", ", end, ")");
    begin_ = begin;
    end_ = end;
    opt_.m.assign(static_cast<size_t>(end - begin), 0.0f);
    opt_.v.assign(opt_.m.size(), 0.0f);
  }
  void all_gather_weights(Communicator& comm, const std::vector<int64_t>& offsets) override {
    comm.all_gather(model_.weights(), offsets);
  }
  OptimizerState get_optimizer() const override { return opt_; }
  double forward(const int32_t* tokens, const int32_t* targets, int64_t b, int64_t t, const StepContext& ctx,
                 bool) override {
    return model_.forward(tokens, targets, b, t, ctx);
  }
  void zero_grad() override { model_.zero_grad(); }
  void backward(const StepContext& ctx) override { model_.backward(ctx); }
  double grad_norm() override {
    const float* g = model_.grads();
    const int64_t n = num_params();
    return ops::global_norm(&g, &n, 1);
  }
  void get_gradients(float* g) override { std::copy(model_.grads(), model_.grads() + num_params(), g); }
  void all_reduce_gradients(Communicator& comm) override { comm.all_reduce_sum(model_.grads(), num_params()); }
  void reduce_scatter_gradients(Communicator& comm, const std::vector<int64_t>& offsets) override {
    comm.reduce_scatter_sum(model_.grads(), offsets);
  }
  double sharded_grad_norm(Communicator& comm, const std::vector<int64_t>& offsets) override {
    // grad_norm()'s chunk sums: this rank's chunks, zeros elsewhere, summed over the ranks (adding
    // zeros is exact), then added in order as global_norm does
    const int64_t n = num_params(), chunks = (n + ops::kNormChunk - 1) / ops::kNormChunk;
    const int64_t b = offsets[static_cast<size_t>(comm.rank())], e = offsets[static_cast<size_t>(comm.rank()) + 1];
    // an empty slice (a rank past the last parameter: [n, n), n need not be a chunk multiple)
    // owns no chunk; counting the one its bounds fall in would add that chunk twice
    NIBBLE_CHECK(b == e || (b % ops::kNormChunk == 0 && (e % ops::kNormChunk == 0 || e == n)), "ZeRO-1 slice [", b,
                 ", ", e, ") is not aligned to the norm's chunks");
    std::vector<double> part(static_cast<size_t>(chunks), 0.0);
    const float* g = model_.grads();
    const int64_t c0 = b / ops::kNormChunk, c1 = b < e ? (e + ops::kNormChunk - 1) / ops::kNormChunk : c0;
#pragma omp parallel for schedule(static)
    for (int64_t c = c0; c < c1; ++c)
      part[static_cast<size_t>(c)] = ops::chunk_sumsq(g + c * ops::kNormChunk, std::min(ops::kNormChunk, n - c * ops::kNormChunk));
    comm.all_reduce_sum(part.data(), chunks);
    double total = 0.0;
    for (double s : part) total += s;
    return std::sqrt(total);
  }
  void optimizer_step(const AdamHyper& h, float lr, float grad_scale, int64_t t) override {
    if (grad_scale != 1.0f) ops::scale_inplace(model_.grads(), num_params(), grad_scale);
    opt_.step = t;
    // each tensor's part inside [begin_, end_) (all of it without ZeRO-1); AdamW is elementwise,
    // so a split tensor gets the same bits
    for (const ParamInfo& p : model_.params()) {
      const int64_t lo = std::max(p.offset, begin_), hi = std::min(p.offset + p.numel, end_);
      if (lo >= hi) continue;
      ops::adamw_update(model_.weights() + lo, model_.grads() + lo, opt_.m.data() + (lo - begin_),
                        opt_.v.data() + (lo - begin_), hi - lo, lr, h.beta1, h.beta2, h.eps,
                        (p.decay || h.decay_all) ? h.weight_decay : 0.0f, t);
    }
  }
  std::vector<float> logits_row(int64_t row) override {
    const int64_t v = config().vocab_size;
    const float* l = model_.logits() + row * v;
    return std::vector<float>(l, l + v);
  }
  std::vector<OperandStats> operand_stats() override { return model_.operand_stats(); }
  void set_capture(const QuantLinear<float>::Capture& c) override { model_.set_capture(c); }
  Transformer<float>* cpu_model() override { return &model_; }

 private:
  Transformer<float> model_;
  int64_t begin_ = 0, end_ = 0;  // the weights this engine's AdamW updates (ZeRO-1: a slice)
  OptimizerState opt_;
};

}  // namespace

std::unique_ptr<TrainEngine> make_cpu_engine(const ModelConfig& cfg) { return std::make_unique<CpuEngine>(cfg); }

}  // namespace nibble
