#pragma once
// Loading a trained model for eval / sample: config.json → model + recipe, weights.
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "nibble/nn/model.hpp"
#include "nibble/qat/packed_export.hpp"
#include "nibble/safetensors.hpp"
#include "nibble/train/engine.hpp"
#include "nibble/train/checkpoint.hpp"
#include "nibble/train/train_config.hpp"

namespace nibble::cli {

struct LoadedModel {
  std::string dir;
  TrainConfig cfg;
  std::unique_ptr<TrainEngine> model;
};

// The --device default: $NIBBLE_DEVICE when set (cpu | cuda | auto), else auto.
inline std::string default_device() {
  const char* e = std::getenv("NIBBLE_DEVICE");
  return e && *e ? e : "auto";
}

// A QAT run's activation fake quantization (its spec's act_bits; 0 when absent) on the engine
// that evaluates it, so that eval and sample see the model the QAT run trained.
inline void apply_qat_activation_bits(LoadedModel& m, const Json& qat_spec) {
  const Json* a = qat_spec.find("act_bits");
  const int bits = a ? static_cast<int>(a->as_int64()) : 0;
  if (bits <= 0) return;
  Transformer<float>* cpu = m.model->cpu_model();
  if (!cpu)
    fail(m.dir, ": this QAT model fake-quantizes its activations to ", bits,
         " bits, which only the CPU engine does (use --device cpu)");
  cpu->set_activation_bits(bits);
}

// device: cpu | cuda | auto (the engine that runs the forward passes).
inline LoadedModel load_model(const std::string& path, const std::string& device) {
  LoadedModel m;
  m.dir = resolve_checkpoint_dir(path);
  m.cfg = TrainConfig::from_json(read_checkpoint_config(m.dir), m.dir + "/config.json");
  m.model = make_engine(device, m.cfg.model);
  m.model->set_recipe(m.cfg.recipe);
  const std::string packed = m.dir + "/model.packed.safetensors";
  if (!std::filesystem::exists(m.dir + "/model.safetensors") && std::filesystem::exists(packed)) {
    // a packed QAT export: decode the integer codes to the weights the QAT run evaluated
    m.model->set_weights(load_packed(packed, m.model->params()).data());
    const SafeTensors st = read_safetensors(packed);
    apply_qat_activation_bits(m, Json::parse(st.metadata.at("qat"), packed + ": metadata qat"));
    return m;
  }
  const Checkpoint ck = load_checkpoint(m.dir, m.model->params(), false);
  m.model->set_weights(ck.weights.data());
  if (ck.trainer.is_object())
    if (const Json* qat = ck.trainer.find("qat")) apply_qat_activation_bits(m, *qat);
  return m;
}

}  // namespace nibble::cli
