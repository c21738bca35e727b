#pragma once
// A training engine: one model with its fp32 master weights, gradients and AdamW state on
// one device. The trainer, eval and sample drive an engine and never look at where it runs:
//   "cpu"  — Transformer<float>, the reference (src/train/engine_cpu.cpp)
//   "cuda" — the CUDA backend (src/nn/cuda), tested against the CPU op by op
// Weights and optimizer moments cross the engine boundary only as host copies (checkpoints,
// resume), so both engines write the same checkpoint format and can resume each other's runs.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nibble/dist/comm.hpp"
#include "nibble/nn/model.hpp"
#include "nibble/train/checkpoint.hpp"

namespace nibble {

struct AdamHyper {
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.0f;
  bool decay_all = false;  // weight decay on every tensor (default: 2-D projections only)
};

class TrainEngine {
 public:
  virtual ~TrainEngine() = default;
  virtual std::string device() const = 0;  // "cpu" or the GPU's summary
  virtual const ModelConfig& config() const = 0;
  virtual const std::vector<ParamInfo>& params() const = 0;
  virtual int64_t num_params() const = 0;

  virtual void init(uint64_t seed) = 0;  // Transformer::init's values on every engine
  virtual void set_recipe(const Recipe& r) = 0;
  virtual void set_weights(const float* w) = 0;       // host, num_params() floats
  virtual void get_weights(float* w) const = 0;
  virtual void set_optimizer(const OptimizerState& s) = 0;
  virtual OptimizerState get_optimizer() const = 0;

  // Mean cross-entropy over the batch (targets −1 ignored). With targets == nullptr only the
  // logits are computed (sampling); with need_backward the step's backward may follow.
  virtual double forward(const int32_t* tokens, const int32_t* targets, int64_t b, int64_t t,
                         const StepContext& ctx, bool need_backward = true) = 0;
  virtual void zero_grad() = 0;
  virtual void backward(const StepContext& ctx) = 0;  // accumulates into the gradients
  virtual double grad_norm() = 0;                     // float64 sqrt(Σ g²)
  // Host copy of the gradients (num_params() floats): QAT's straight-through backward reads them.
  virtual void get_gradients(float* g) = 0;
  // Data parallelism: every rank's gradients ← their sum over the ranks (the trainer divides by
  // the world size through the optimizer's gradient scale).
  virtual void all_reduce_gradients(Communicator& comm) = 0;
  // Overlap (the CUDA engine with NCCL): the backward queues each block's gradients on `comm`
  // as soon as they are final, on a stream of their own, and all_reduce_gradients(comm) then only
  // waits for them. nullptr: off (the default; the CPU engine ignores it).
  virtual void set_gradient_sync(Communicator* /*comm*/) {}
  // ZeRO-1 (the optimizer state sharded over data-parallel ranks): from now on keep AdamW moments
  // for the flat parameters [begin, end) only (zeros), optimizer_step updates just those
  // weights, and get/set_optimizer carry that slice. The default is the whole range.
  virtual void set_optimizer_range(int64_t begin, int64_t end) = 0;
  // ZeRO-1's exchange after the step: each rank's updated slice of the weights to every rank.
  virtual void all_gather_weights(Communicator& comm, const std::vector<int64_t>& offsets) = 0;
  // ZeRO-1's gradient exchange instead of all_reduce_gradients: afterwards this rank's slice
  // [offsets[rank], offsets[rank + 1]) of the gradients holds their sum over the ranks (the only
  // part its optimizer reads); the rest is stale.
  virtual void reduce_scatter_gradients(Communicator& comm, const std::vector<int64_t>& offsets) = 0;
  // The summed gradients' norm after reduce_scatter_gradients, the same on every rank (one
  // float64 all-reduce of the slices' partial sums). The CPU engine's equals grad_norm() after a
  // whole all-reduce bit for bit (slices start at multiples of ops::kNormChunk).
  virtual double sharded_grad_norm(Communicator& comm, const std::vector<int64_t>& offsets) = 0;
  // Scales the gradients by grad_scale (clipping), then one AdamW step t ≥ 1 on every tensor
  // (decay on the tensors marked `decay`, or all with decay_all).
  virtual void optimizer_step(const AdamHyper& h, float lr, float grad_scale, int64_t t) = 0;
  // Host copy of the last forward's logits of row `row` (b·T + t), vocab_size floats.
  virtual std::vector<float> logits_row(int64_t row) = 0;
  // SPEC §6 statistics of the last step run with ctx.collect_stats.
  virtual std::vector<OperandStats> operand_stats() = 0;
  // The fp32 weights and gradients in device memory and the stream the engine's work is queued on
  // (the CUDA engine; nullptr on the CPU): QAT on the GPU writes Ŵ and reads dL/dŴ in place,
  // ordered with the engine's kernels by sharing its stream.
  virtual float* device_weights() { return nullptr; }
  virtual const float* device_gradients() { return nullptr; }
  virtual void* device_stream() { return nullptr; }
  // The CPU reference model (tests' hooks); nullptr on other engines.
  virtual Transformer<float>* cpu_model() { return nullptr; }
  // Analysis hook (nibble analyze): every block projection's operands as they reach the layer,
  // as host floats — "x" and "w" in forward, "dy" in backward (QuantLinear::Capture). On the
  // GPU they are the stored tensors (bf16 activations widened exactly); empty = off.
  virtual void set_capture(const QuantLinear<float>::Capture& c) = 0;
  // Waits for queued device work (timing); a no-op on the CPU.
  virtual void synchronize() {}
  // Per-op time accounting (GPU: CUDA events around every op, which adds a little overhead):
  // profile() returns {"op": milliseconds summed since profiling was switched on}.
  virtual void set_profiling(bool) {}
  virtual Json profile() { return Json::object(); }
};

// How the CUDA engine stores activations ("bf16" | "fp32") and runs attention ("tc" | "fp32");
// "" = the environment (NIBBLE_ACTIVATIONS, NIBBLE_ATTENTION) or the defaults (bf16, tc). The CPU
// engine is fp32 throughout and ignores them. The Hessian's finite differences, for example,
// need fp32 activations whatever a training run uses.
struct EngineOptions {
  std::string activations, attention;
};

// device: "cpu", "cuda" or "auto" (the GPU when one is present). Errors name the device.
std::unique_ptr<TrainEngine> make_engine(const std::string& device, const ModelConfig& cfg,
                                         const EngineOptions& opts = {});
// "cpu" or "cuda": what "auto" resolves to on this machine.
std::string resolve_device(const std::string& device);

// The CPU engine (always available) and the CUDA one (throws in a CPU-only build).
std::unique_ptr<TrainEngine> make_cpu_engine(const ModelConfig& cfg);
std::unique_ptr<TrainEngine> make_cuda_engine(const ModelConfig& cfg, const EngineOptions& opts = {});

}  // namespace nibble
