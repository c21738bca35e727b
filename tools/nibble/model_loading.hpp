#pragma once
// Loading a trained model for eval / sample: config.json → model + recipe, weights.
#include <memory>
#include <string>

#include "nibble/nn/model.hpp"
#include "nibble/train/checkpoint.hpp"
#include "nibble/train/train_config.hpp"

namespace nibble::cli {

struct LoadedModel {
  std::string dir;
  TrainConfig cfg;
  std::unique_ptr<Transformer<float>> model;
};

inline LoadedModel load_model(const std::string& path) {
  LoadedModel m;
  m.dir = resolve_checkpoint_dir(path);
  m.cfg = TrainConfig::from_json(read_checkpoint_config(m.dir), m.dir + "/config.json");
  m.model = std::make_unique<Transformer<float>>(m.cfg.model);
  m.model->set_recipe(m.cfg.recipe);
  const Checkpoint ck = load_checkpoint(m.dir, m.model->params(), false);
  std::copy(ck.weights.begin(), ck.weights.end(), m.model->weights());
  return m;
}

}  // namespace nibble::cli
