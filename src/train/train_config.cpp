#include "nibble/train/train_config.hpp"

#include <algorithm>
#include <cmath>

#include "nibble/error.hpp"

namespace nibble {

int64_t TrainConfig::warmup() const {
  return warmup_steps >= 0 ? warmup_steps : std::min<int64_t>(100, steps / 10);
}

double TrainConfig::lr_at(int64_t step) const {
  const int64_t w = warmup();
  if (step < w) return lr * static_cast<double>(step + 1) / static_cast<double>(w);
  const double span = static_cast<double>(std::max<int64_t>(1, steps - w));
  const double progress = std::min(1.0, static_cast<double>(step - w) / span);
  const double min_lr = lr * min_lr_ratio;
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * progress));
}

Json TrainConfig::to_json() const {
  Json j = Json::object();
  j["model"] = model.to_json();
  j["recipe"] = recipe.to_json();
  j["data_dir"] = data_dir;
  j["text_file"] = text_file;
  j["val_fraction"] = val_fraction;
  j["steps"] = steps;
  j["batch"] = batch;
  j["seq"] = seq;
  j["lr"] = lr;
  j["min_lr_ratio"] = min_lr_ratio;
  j["warmup_steps"] = warmup();
  j["weight_decay"] = weight_decay;
  j["decay_all"] = decay_all;
  j["beta1"] = beta1;
  j["beta2"] = beta2;
  j["eps"] = eps;
  j["grad_clip"] = grad_clip;
  j["seed"] = seed;
  j["log_every"] = log_every;
  j["eval_every"] = eval_every;
  j["eval_batches"] = eval_batches;
  j["save_every"] = save_every;
  j["stats_every"] = stats_every;
  j["device"] = device;
  j["out"] = out;
  return j;
}

TrainConfig TrainConfig::from_json(const Json& j, const std::string& what) {
  TrainConfig c;
  if (!j.is_object()) fail(what, ": expected a JSON object");
  for (const auto& [k, v] : j.as_object()) {
    const std::string where = what + ": " + k;
    try {
      if (k == "model") c.model = ModelConfig::from_json(v, where);
      else if (k == "recipe") c.recipe = Recipe::from_json(v, where);
      else if (k == "data_dir") c.data_dir = v.as_string();
      else if (k == "text_file") c.text_file = v.as_string();
      else if (k == "val_fraction") c.val_fraction = v.as_double();
      else if (k == "steps") c.steps = v.as_int64();
      else if (k == "batch") c.batch = v.as_int64();
      else if (k == "seq") c.seq = v.as_int64();
      else if (k == "lr") c.lr = v.as_double();
      else if (k == "min_lr_ratio") c.min_lr_ratio = v.as_double();
      else if (k == "warmup_steps") c.warmup_steps = v.as_int64();
      else if (k == "weight_decay") c.weight_decay = v.as_double();
      else if (k == "decay_all") c.decay_all = v.as_bool();
      else if (k == "beta1") c.beta1 = v.as_double();
      else if (k == "beta2") c.beta2 = v.as_double();
      else if (k == "eps") c.eps = v.as_double();
      else if (k == "grad_clip") c.grad_clip = v.as_double();
      else if (k == "seed") c.seed = static_cast<uint64_t>(v.as_int64());
      else if (k == "log_every") c.log_every = v.as_int64();
      else if (k == "eval_every") c.eval_every = v.as_int64();
      else if (k == "eval_batches") c.eval_batches = v.as_int64();
      else if (k == "save_every") c.save_every = v.as_int64();
      else if (k == "stats_every") c.stats_every = v.as_int64();
      else if (k == "device") c.device = v.as_string();
      else if (k == "out") c.out = v.as_string();
      else fail("unknown field");
    } catch (const Error& e) {
      const std::string m = e.what();
      if (m.rfind(what, 0) == 0) throw;
      fail(where, ": ", m);
    }
  }
  // A recipe stored in a config is already resolved: "name" only, no "base".
  c.validate();
  return c;
}

void TrainConfig::validate() const {
  model.validate();
  auto positive = [](const char* f, int64_t v) {
    if (v <= 0) fail("training option ", f, " = ", v, " must be positive");
  };
  positive("steps", steps);
  positive("batch", batch);
  positive("seq", seq);
  positive("eval_batches", eval_batches);
  positive("log_every", log_every);
  if (seq > model.max_seq) fail("training option seq = ", seq, " exceeds the model's max_seq = ", model.max_seq);
  if (!(lr > 0) || !std::isfinite(lr)) fail("training option lr = ", lr, " must be positive");
  if (min_lr_ratio < 0 || min_lr_ratio > 1) fail("training option min_lr_ratio = ", min_lr_ratio, " must be in [0, 1]");
  if (weight_decay < 0) fail("training option weight_decay must be >= 0");
  if (grad_clip < 0) fail("training option grad_clip must be >= 0");
  if (!(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1)) fail("training options beta1, beta2 must be in [0, 1)");
  if (val_fraction <= 0 || val_fraction >= 1) fail("training option val_fraction = ", val_fraction, " must be in (0, 1)");
  if (device != "cpu" && device != "cuda" && device != "auto") fail("--device ", device, " (use cpu, cuda or auto)");
  recipe.validate(model.dim, model.ffn_dim, tokens_per_step(), model.n_layers);
}

}  // namespace nibble
