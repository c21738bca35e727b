#pragma once
// The data-parallel side of a training run (one process per GPU or CPU engine, launched by
// `nibble launch`, torchrun or Slurm): the communicator, this rank's share of each global
// batch, and the reductions of the loss and the gradients.
//
// Every rank draws the same global batch from the same loader state and keeps rows
// [rank·B/W, (rank+1)·B/W), so the data order does not depend on the number of ranks and a run
// resumes on any W that divides the batch. Each rank's loss is the mean over its rows; the
// gradients are summed over ranks and divided by W through the optimizer's gradient scale, which
// gives the global batch's mean gradient (every row has T valid targets in training).
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nibble/data/loader.hpp"
#include "nibble/dist/comm.hpp"
#include "nibble/train/engine.hpp"

namespace nibble {

// ZeRO-1's shared host logic (DataParallel below uses it; free functions so that the tests can
// check it without launching processes).
//
// The slice bounds of `num_params` flat parameters over `world` ranks: world + 1 non-decreasing
// offsets from 0 to num_params. Every slice but the last non-empty one is the same whole number
// of ops::kNormChunk chunks; the last non-empty one may be shorter, and when num_params is small
// against world · kNormChunk the ranks after it get empty slices [num_params, num_params).
std::vector<int64_t> zero1_offsets(int64_t num_params, int world);
// Rank `rank`'s slice [offsets[rank], offsets[rank + 1]) of a whole optimizer state (offsets.back()
// moments each).
OptimizerState slice_optimizer_state(const OptimizerState& whole, const std::vector<int64_t>& offsets, int rank);
// The whole state from every rank's slice (`part`: exactly this rank's slice length of moments,
// as TrainEngine::get_optimizer returns it under ZeRO-1): a collective, every rank gets it.
OptimizerState gather_optimizer_state(const OptimizerState& part, const std::vector<int64_t>& offsets, Communicator& comm);

class DataParallel {
 public:
  // From the environment (DistEnv); selects the GPU LOCAL_RANK for device "cuda" and connects
  // the ranks (NCCL for cuda when built with it and NIBBLE_DIST_BACKEND is not "tcp"; TCP
  // otherwise). A single process: no communicator.
  DataParallel(const std::string& device, int64_t global_batch);
  int rank() const { return env_.rank; }
  int world() const { return env_.world; }
  bool lead() const { return env_.rank == 0; }
  std::string describe() const;

  Batch shard(const Batch& global) const;
  double mean(double x);  // the average over ranks (every rank gets the same bits)
  // The same, and whether any rank raised `flag`, in one collective (the trainer's time limit
  // rides on the loss's reduction instead of adding one per step).
  std::pair<double, bool> mean_and_any(double x, bool flag);
  // Σ over ranks of the gradients: all of them, or under ZeRO-1 each rank's own slice
  // (reduce-scatter).
  void sum_gradients(TrainEngine& engine);
  // The summed gradients' norm (after sum_gradients), the same on every rank.
  double grad_norm(TrainEngine& engine);
  // Lets the engine reduce gradient buckets during its backward (NCCL only, not under ZeRO-1,
  // whose reduce-scatter follows the backward; NIBBLE_DP_OVERLAP=0 turns it off). After
  // shard_optimizer.
  void attach(TrainEngine& engine);
  void barrier();

  // ZeRO-1: rank r's AdamW keeps the moments of the flat parameters [offsets[r], offsets[r+1])
  // (zero1_offsets: equal slices, multiples of ops::kNormChunk = 65536 elements, the last
  // non-empty one may be shorter, any after it empty) and updates only those weights. The
  // gradients are reduce-scattered (each rank receives the sum of its slice only), the gradient
  // norm is summed from the slices, and the updated slices are all-gathered: 2× the gradient's
  // size in traffic per step against the all-reduce's 2× plus the all-gather's 1×. Checkpoints
  // gather the moments to rank 0 and hold the whole state, so a run resumes with or without
  // ZeRO-1 and on any number of ranks.
  // A single process: nothing to shard.
  void shard_optimizer(TrainEngine& engine);
  bool sharded() const { return !offsets_.empty(); }
  void gather_weights(TrainEngine& engine);                 // after each optimizer step
  OptimizerState whole_optimizer(TrainEngine& engine);      // every rank takes part
  OptimizerState slice_optimizer(const OptimizerState& whole) const;  // this rank's part

 private:
  DistEnv env_;
  std::unique_ptr<Communicator> comm_;
  std::vector<int64_t> offsets_;  // ZeRO-1's slice bounds (world + 1), empty when off
};

}  // namespace nibble
