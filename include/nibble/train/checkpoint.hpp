#pragma once
// Checkpoints: a directory with
//   model.safetensors      fp32 weights under HF-style names
//   optimizer.safetensors  AdamW moments "exp_avg.<name>", "exp_avg_sq.<name>"
//   config.json            the run's fully resolved TrainConfig
//   trainer.json           step, tokens seen, data-loader state, format version
// written atomically: into OUT/.tmp-<name>-<pid>, every file fsynced, the directory fsynced,
// then renamed to OUT/<name>; OUT/latest names the newest complete checkpoint and is replaced
// atomically after it. A crash or a failed write leaves the previous checkpoint intact and
// still named by OUT/latest.
#include <functional>
#include <string>
#include <vector>

#include "nibble/json.hpp"
#include "nibble/nn/model.hpp"
#include "nibble/safetensors.hpp"

namespace nibble {

struct OptimizerState {
  std::vector<float> m, v;  // flat, aligned with the model's parameter buffer
  int64_t step = 0;         // AdamW steps taken
};

struct Checkpoint {
  Json config;   // TrainConfig JSON
  Json trainer;  // step, tokens, loader state, ...
  std::vector<float> weights;
  OptimizerState opt;
  bool has_optimizer = false;
};

// A model's weights as a host view (whichever engine produced them).
struct ModelWeights {
  const ModelConfig& config;
  const std::vector<ParamInfo>& params;
  const float* weights;
};

// Writes OUT/<name> atomically and (when update_latest) points OUT/latest at it.
void save_checkpoint(const std::string& out_dir, const std::string& name, const Transformer<float>& model,
                     const OptimizerState& opt, const Json& config, const Json& trainer, bool update_latest = true);
// extra_files: more safetensors files written into the same atomic directory (QAT's latent
// weights and scales).
void save_checkpoint(const std::string& out_dir, const std::string& name, const ModelWeights& model,
                     const OptimizerState& opt, const Json& config, const Json& trainer, bool update_latest = true,
                     const std::vector<std::pair<std::string, SafeTensors>>& extra_files = {});

// `path`: a checkpoint directory, or a run directory (then OUT/latest is followed).
std::string resolve_checkpoint_dir(const std::string& path);
// "step_000042": the directory name of the checkpoint taken after `step` steps.
std::string checkpoint_step_name(int64_t step);
// Loads a checkpoint for `model` (shapes and names must match; errors name the tensor).
Checkpoint load_checkpoint(const std::string& dir, const std::vector<ParamInfo>& params, bool with_optimizer);
// config.json of a checkpoint directory (to rebuild the model before loading weights).
Json read_checkpoint_config(const std::string& dir);

// Model weights as safetensors (HF-style names, F32).
SafeTensors model_to_safetensors(const Transformer<float>& model);
SafeTensors model_to_safetensors(const ModelWeights& model);

// Test hook: called after each file of a checkpoint is written; a throw simulates a failure.
void set_checkpoint_fault_hook(std::function<void(const std::string& file)> hook);

}  // namespace nibble
