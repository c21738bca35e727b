#include "train/data_parallel.hpp"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "nibble/cuda.hpp"
#include "nibble/error.hpp"
#include "nibble/ops/ops.hpp"

namespace nibble {

DataParallel::DataParallel(const std::string& device, int64_t global_batch) : env_(DistEnv::from_environment()) {
  // GPU LOCAL_RANK of the node's GPUs; a task that sees exactly one GPU (a per-task
  // CUDA_VISIBLE_DEVICES, Slurm's --gpus-per-task=1) uses that one
  if (device == "cuda" && env_.distributed()) cuda::select_device(cuda::device_count() == 1 ? 0 : env_.local_rank);
  if (!env_.distributed()) return;
  if (global_batch % env_.world != 0)
    fail("--batch ", global_batch, " is not a multiple of the ", env_.world, " ranks (WORLD_SIZE): each rank takes an equal share");
  const char* b = std::getenv("NIBBLE_DIST_BACKEND");
  const std::string backend = b && *b ? b : (device == "cuda" && built_with_nccl() ? "nccl" : "tcp");
  if (backend != "nccl" && backend != "tcp") fail("NIBBLE_DIST_BACKEND=", backend, " (use nccl or tcp)");
  if (backend == "nccl" && device != "cuda") fail("NIBBLE_DIST_BACKEND=nccl needs --device cuda");
  comm_ = make_tcp_communicator(env_);
  if (backend == "nccl") comm_ = make_nccl_communicator(std::move(comm_), env_);
}

std::string DataParallel::describe() const {
  if (!comm_) return "1 process";
  return std::to_string(env_.world) + " ranks (" + comm_->backend() + (sharded() ? ", ZeRO-1" : "") + ", this is rank " +
         std::to_string(env_.rank) + ")";
}

Batch DataParallel::shard(const Batch& global) const {
  if (!comm_) return global;
  const int64_t rows = global.batch_size / env_.world, n = rows * global.seq_len, at = env_.rank * n;
  Batch b;
  b.batch_size = rows;
  b.seq_len = global.seq_len;
  b.inputs.assign(global.inputs.begin() + at, global.inputs.begin() + at + n);
  b.targets.assign(global.targets.begin() + at, global.targets.begin() + at + n);
  return b;
}

double DataParallel::mean(double x) {
  if (!comm_) return x;
  comm_->all_reduce_sum(&x, 1);
  return x / static_cast<double>(env_.world);
}

std::pair<double, bool> DataParallel::mean_and_any(double x, bool flag) {
  if (!comm_) return {x, flag};
  double v[2] = {x, flag ? 1.0 : 0.0};
  comm_->all_reduce_sum(v, 2);
  return {v[0] / static_cast<double>(env_.world), v[1] > 0};
}

void DataParallel::sum_gradients(TrainEngine& engine) {
  if (sharded()) engine.reduce_scatter_gradients(*comm_, offsets_);
  else if (comm_) engine.all_reduce_gradients(*comm_);
}

double DataParallel::grad_norm(TrainEngine& engine) {
  return sharded() ? engine.sharded_grad_norm(*comm_, offsets_) : engine.grad_norm();
}

void DataParallel::attach(TrainEngine& engine) {
  const char* o = std::getenv("NIBBLE_DP_OVERLAP");
  const bool overlap = !(o && std::string(o) == "0");
  if (comm_ && overlap && comm_->backend() == "nccl" && !sharded()) engine.set_gradient_sync(comm_.get());
}

void DataParallel::shard_optimizer(TrainEngine& engine) {
  if (!comm_) return;
  const int64_t n = engine.num_params(), w = env_.world;
  // slices of whole norm chunks (so the gradient norm sums the same chunks as without ZeRO-1)
  const int64_t slice = ((n + w - 1) / w + ops::kNormChunk - 1) / ops::kNormChunk * ops::kNormChunk;
  offsets_.clear();
  for (int64_t r = 0; r <= w; ++r) offsets_.push_back(std::min(n, r * slice));
  engine.set_optimizer_range(offsets_[static_cast<size_t>(env_.rank)], offsets_[static_cast<size_t>(env_.rank) + 1]);
}

void DataParallel::gather_weights(TrainEngine& engine) {
  if (sharded()) engine.all_gather_weights(*comm_, offsets_);
}

OptimizerState DataParallel::whole_optimizer(TrainEngine& engine) {
  OptimizerState part = engine.get_optimizer();
  if (!sharded()) return part;
  OptimizerState whole;
  whole.step = part.step;
  const int64_t n = offsets_.back(), at = offsets_[static_cast<size_t>(env_.rank)];
  for (auto [dst, src] : {std::pair{&whole.m, &part.m}, std::pair{&whole.v, &part.v}}) {
    dst->assign(static_cast<size_t>(n), 0.0f);
    std::copy(src->begin(), src->end(), dst->begin() + at);
    comm_->all_gather(dst->data(), offsets_);
  }
  return whole;
}

OptimizerState DataParallel::slice_optimizer(const OptimizerState& whole) const {
  if (!sharded()) return whole;
  const auto b = static_cast<size_t>(offsets_[static_cast<size_t>(env_.rank)]);
  const auto e = static_cast<size_t>(offsets_[static_cast<size_t>(env_.rank) + 1]);
  OptimizerState s;
  s.step = whole.step;
  s.m.assign(whole.m.begin() + b, whole.m.begin() + e);
  s.v.assign(whole.v.begin() + b, whole.v.begin() + e);
  return s;
}

void DataParallel::barrier() {
  if (comm_) comm_->barrier();
}

}  // namespace nibble
