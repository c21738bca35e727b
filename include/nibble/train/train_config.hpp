#pragma once
// Everything a training run depends on, resolved once and written to OUT/config.json.
#include <cstdint>
#include <string>

#include "nibble/json.hpp"
#include "nibble/nn/model.hpp"
#include "nibble/nn/recipe.hpp"

namespace nibble {

struct TrainConfig {
  ModelConfig model = ModelConfig::preset("tiny");
  Recipe recipe = Recipe::preset("nvfp4");
  // Data: a directory of token shards (nibble data / llm.c), or a text file tokenized on the
  // fly; empty both = the embedded default corpus.
  std::string data_dir, text_file;
  double val_fraction = 0.02;  // for text files
  int64_t steps = 1500;
  int64_t batch = 16;
  int64_t seq = 128;
  double lr = 2e-3;
  double min_lr_ratio = 0.1;  // cosine decays to lr·min_lr_ratio
  int64_t warmup_steps = -1;  // −1: min(100, steps/10)
  double weight_decay = 0.1;
  bool decay_all = false;     // also decay norms and embeddings (default: 2-D projections and head only)
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double grad_clip = 1.0;     // 0: off
  uint64_t seed = 1;
  int64_t log_every = 10;
  int64_t eval_every = 100;   // 0: only at the end
  int64_t eval_batches = 8;
  int64_t save_every = 500;   // 0: only the final checkpoint
  int64_t stats_every = 0;    // 0: off
  std::string device = "cpu";
  std::string out = "runs/tiny";

  int64_t tokens_per_step() const { return batch * seq; }
  int64_t warmup() const;
  double lr_at(int64_t step) const;  // step 0-based: linear warmup, then cosine
  Json to_json() const;
  static TrainConfig from_json(const Json& j, const std::string& what);
  void validate() const;
};

}  // namespace nibble
