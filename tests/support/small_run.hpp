#pragma once
// A training run small enough for tests (a fraction of a second on 2 cores): a 2-layer, 64-wide
// byte-level model on the first bytes of the embedded corpus, CPU engine, no evaluations or
// checkpoints except the final one. Tests change the fields they care about.
#include <string>

#include "nibble/data/corpus.hpp"
#include "nibble/fileio.hpp"
#include "nibble/train/trainer.hpp"
#include "support/cli_runner.hpp"

namespace nibble::testing {

inline TrainConfig small_run_config(const ScratchDir& d, const std::string& out, size_t text_bytes = 60000) {
  write_file_atomic(d.file("text.txt"), read_file(default_corpus_path()).substr(0, text_bytes));
  TrainConfig c;
  c.model = ModelConfig::preset("tiny");
  c.model.name = "small";
  c.model.dim = 64;
  c.model.n_layers = 2;
  c.model.n_heads = 2;
  c.model.n_kv_heads = 2;
  c.model.ffn_dim = 128;
  c.model.max_seq = 64;
  c.text_file = d.file("text.txt");
  c.device = "cpu";
  c.batch = 2;
  c.seq = 32;
  c.steps = 4;
  c.eval_every = 0;
  c.eval_batches = 1;
  c.save_every = 0;
  c.out = d.file(out);
  return c;
}

// The small run, 128 wide (projections 128/256/512/128: every RHT size fits), trained for 3 steps
// on the CPU: the checkpoint the analysis tests read at d.file(out).
inline TrainConfig train_wide_small_run(const ScratchDir& d, const std::string& out);

inline void train_quietly(const TrainConfig& c) {
  TrainOptions o;
  o.quiet = true;
  train(c, o);
}

inline TrainConfig train_wide_small_run(const ScratchDir& d, const std::string& out) {
  TrainConfig c = small_run_config(d, out);
  c.model.dim = 128;
  c.model.n_heads = 4;
  c.model.n_kv_heads = 4;
  c.model.ffn_dim = 256;
  c.steps = 3;
  train_quietly(c);
  return c;
}

}  // namespace nibble::testing
