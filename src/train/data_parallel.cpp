#include "train/data_parallel.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <string>
#include <utility>

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

std::vector<int64_t> zero1_offsets(int64_t num_params, int world) {
  NIBBLE_CHECK(num_params >= 0 && world >= 1, "ZeRO-1 slices of ", num_params, " parameters over ", world, " ranks");
  const int64_t n = num_params, w = world;
  // slices of whole norm chunks (so the gradient norm sums the same chunks as without ZeRO-1)
  const int64_t slice = ((n + w - 1) / w + ops::kNormChunk - 1) / ops::kNormChunk * ops::kNormChunk;
  std::vector<int64_t> offsets;
  for (int64_t r = 0; r <= w; ++r) offsets.push_back(std::min(n, r * slice));
  return offsets;
}

OptimizerState slice_optimizer_state(const OptimizerState& whole, const std::vector<int64_t>& offsets, int rank) {
  check_slice_bounds("ZeRO-1 optimizer slice", offsets, static_cast<int>(offsets.size()) - 1);
  NIBBLE_CHECK(rank >= 0 && static_cast<size_t>(rank) + 1 < offsets.size(), "ZeRO-1: rank ", rank, " of ",
               offsets.size() - 1);
  NIBBLE_CHECK(static_cast<int64_t>(whole.m.size()) == offsets.back() && whole.v.size() == whole.m.size(),
               "ZeRO-1: the optimizer state holds ", whole.m.size(), " and ", whole.v.size(), " moments for ",
               offsets.back(), " parameters");
  const auto b = static_cast<size_t>(offsets[static_cast<size_t>(rank)]);
  const auto e = static_cast<size_t>(offsets[static_cast<size_t>(rank) + 1]);
  OptimizerState s;
  s.step = whole.step;
  s.m.assign(whole.m.begin() + static_cast<std::ptrdiff_t>(b), whole.m.begin() + static_cast<std::ptrdiff_t>(e));
  s.v.assign(whole.v.begin() + static_cast<std::ptrdiff_t>(b), whole.v.begin() + static_cast<std::ptrdiff_t>(e));
  return s;
}

OptimizerState gather_optimizer_state(const OptimizerState& part, const std::vector<int64_t>& offsets, Communicator& comm) {
  check_slice_bounds("ZeRO-1 optimizer gather", offsets, comm.world());
  const auto rank = static_cast<size_t>(comm.rank());
  const int64_t n = offsets.back(), at = offsets[rank], len = offsets[rank + 1] - at;
  // the engine's state must be this rank's slice exactly: a longer one would be copied past the
  // end of the whole state (rank r > 0 writes from offsets[r] on)
  NIBBLE_CHECK(static_cast<int64_t>(part.m.size()) == len && part.v.size() == part.m.size(), "ZeRO-1: rank ", rank,
               "'s optimizer state holds ", part.m.size(), " and ", part.v.size(), " moments for its slice [", at,
               ", ", at + len, ") of ", len, " parameters");
  OptimizerState whole;
  whole.step = part.step;
  for (auto [dst, src] : {std::pair{&whole.m, &part.m}, std::pair{&whole.v, &part.v}}) {
    dst->assign(static_cast<size_t>(n), 0.0f);
    std::copy(src->begin(), src->end(), dst->begin() + at);
    comm.all_gather(dst->data(), offsets);
  }
  return whole;
}

void DataParallel::shard_optimizer(TrainEngine& engine) {
  if (!comm_) return;
  offsets_ = zero1_offsets(engine.num_params(), env_.world);
  engine.set_optimizer_range(offsets_[static_cast<size_t>(env_.rank)], offsets_[static_cast<size_t>(env_.rank) + 1]);
}

void DataParallel::gather_weights(TrainEngine& engine) {
  if (sharded()) engine.all_gather_weights(*comm_, offsets_);
}

OptimizerState DataParallel::whole_optimizer(TrainEngine& engine) {
  OptimizerState part = engine.get_optimizer();
  if (!sharded()) return part;
  return gather_optimizer_state(part, offsets_, *comm_);
}

OptimizerState DataParallel::slice_optimizer(const OptimizerState& whole) const {
  if (!sharded()) return whole;
  return slice_optimizer_state(whole, offsets_, env_.rank);
}

void DataParallel::barrier() {
  if (comm_) comm_->barrier();
}

}  // namespace nibble
