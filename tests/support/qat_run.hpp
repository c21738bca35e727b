#pragma once
// The QAT tests' setup: a small model pretrained on the CPU (d.file("base"), text d.file("text.txt"))
// and a short QAT configuration from it.
#include <string>

#include "nibble/qat/qat_trainer.hpp"
#include "support/small_run.hpp"

namespace nibble::testing {

inline void pretrain(const ScratchDir& d) {
  TrainConfig c = small_run_config(d, "base", 80000);
  c.batch = 4;
  c.steps = 40;
  c.lr = 3e-3;
  train_quietly(c);
}

inline QatConfig qat_config(const ScratchDir& d, const std::string& out, double bits) {
  QatConfig q;
  q.checkpoint = d.file("base");
  q.spec = QatSpec::make(bits, "auto");
  TrainConfig& c = q.train;
  c.text_file = d.file("text.txt");
  c.steps = 30;
  c.batch = 4;
  c.seq = 32;
  c.lr = 1e-3;
  c.log_every = 10;
  c.eval_every = 15;
  c.eval_batches = 4;
  c.out = d.file(out);
  return q;
}

}  // namespace nibble::testing
