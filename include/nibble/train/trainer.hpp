#pragma once
// The training loop: data → forward → backward → clip → AdamW → metrics / eval /
// checkpoints, with live progress. CPU reference; the CUDA backend runs the same loop.
#include <cstdint>
#include <functional>
#include <string>

#include "nibble/nn/model.hpp"
#include "nibble/train/train_config.hpp"

namespace nibble {

struct TrainOptions {
  std::string resume;         // run or checkpoint directory to continue from ("" = fresh)
  int64_t stop_after = -1;    // stop (with a checkpoint) after this many steps: tests, time limits
  // Stop (with a checkpoint) after the first step that begins this many seconds after the start:
  // the wall-clock limit of a batch job (Megatron's --exit-duration-in-mins); < 0 = none.
  // Under data parallelism rank 0's clock decides, so every rank stops at the same step.
  double stop_after_seconds = -1;
  bool quiet = false;         // no progress output
  // Data parallelism: shard the AdamW state over the ranks (ZeRO-1, DataParallel::shard_optimizer).
  // The numbers are those of plain data parallelism, bit for bit.
  bool zero1 = false;
  bool progress_tty = false;  // rewrite one progress line (\r) instead of printing lines
  // Test hook, called before each step's forward with the model and the step index.
  std::function<void(Transformer<float>&, int64_t)> before_step;
};

struct TrainResult {
  int64_t steps = 0;          // steps completed in total
  double last_loss = 0;       // mean train loss over the last log window
  double val_loss = 0;        // last evaluated validation loss (NaN if never)
  double tokens_per_s = 0;    // over this session's steps
  double seconds = 0;
  std::string out;
  int64_t num_params = 0;
  bool stopped_early = false;
};

TrainResult train(const TrainConfig& cfg, const TrainOptions& opts);

// Exit statuses the CLI maps: a non-finite loss or gradient stops the run with this error.
class NonFiniteLoss : public Error {
 public:
  using Error::Error;
};

}  // namespace nibble
