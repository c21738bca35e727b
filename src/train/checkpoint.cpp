#include "nibble/train/checkpoint.hpp"

#include <cstdio>

#include <unistd.h>

#include <filesystem>

#include "nibble/error.hpp"
#include "nibble/fileio.hpp"

namespace nibble {

namespace fs = std::filesystem;

namespace {
std::function<void(const std::string&)>& fault_hook() {
  static std::function<void(const std::string&)> h;
  return h;
}

Tensor slice_tensor(const float* base, const ParamInfo& p) {
  Tensor t(p.shape, DType::F32);
  std::copy(base + p.offset, base + p.offset + p.numel, t.data<float>());
  return t;
}

void write_file(const std::string& path, std::string_view bytes) {
  write_file_atomic(path, bytes, Durability::Fsync);
  if (fault_hook()) fault_hook()(path);
}

void load_into(const SafeTensors& st, const std::string& prefix, const std::vector<ParamInfo>& params,
               std::vector<float>& dst, const std::string& what) {
  int64_t total = 0;
  for (const auto& p : params) total = std::max(total, p.offset + p.numel);
  dst.assign(static_cast<size_t>(total), 0.0f);
  for (const auto& p : params) {
    const std::string name = prefix + p.name;
    const Tensor* t = st.find(name);
    if (!t) fail(what, ": tensor '", name, "' is missing");
    if (t->shape() != p.shape)
      fail(what, ": tensor '", name, "' has shape ", shape_str(t->shape()), ", the model expects ", shape_str(p.shape));
    const Tensor f = t->to_f32();
    std::copy(f.data<float>(), f.data<float>() + p.numel, dst.begin() + p.offset);
  }
}
}  // namespace

void set_checkpoint_fault_hook(std::function<void(const std::string&)> hook) { fault_hook() = std::move(hook); }

SafeTensors model_to_safetensors(const ModelWeights& model) {
  SafeTensors st;
  for (const auto& p : model.params) st.add(p.name, slice_tensor(model.weights, p));
  st.metadata["format"] = "pt";
  st.metadata["producer"] = "nibble";
  st.metadata["model"] = model.config.to_json().dump();
  return st;
}
SafeTensors model_to_safetensors(const Transformer<float>& model) {
  return model_to_safetensors(ModelWeights{model.config(), model.params(), model.weights()});
}

void save_checkpoint(const std::string& out_dir, const std::string& name, const Transformer<float>& model,
                     const OptimizerState& opt, const Json& config, const Json& trainer, bool update_latest) {
  save_checkpoint(out_dir, name, ModelWeights{model.config(), model.params(), model.weights()}, opt, config,
                  trainer, update_latest);
}

void save_checkpoint(const std::string& out_dir, const std::string& name, const ModelWeights& model,
                     const OptimizerState& opt, const Json& config, const Json& trainer, bool update_latest,
                     const std::vector<std::pair<std::string, SafeTensors>>& extra_files) {
  fs::create_directories(out_dir);
  const fs::path final_dir = fs::path(out_dir) / name;
  const fs::path tmp = fs::path(out_dir) / (".tmp-" + name + "-" + std::to_string(::getpid()));
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp);
  try {
    write_file((tmp / "model.safetensors").string(), serialize_safetensors(model_to_safetensors(model)));
    SafeTensors o;
    for (const auto& p : model.params) {
      o.add("exp_avg." + p.name, slice_tensor(opt.m.data(), p));
      o.add("exp_avg_sq." + p.name, slice_tensor(opt.v.data(), p));
    }
    o.metadata["adamw_step"] = std::to_string(opt.step);
    write_file((tmp / "optimizer.safetensors").string(), serialize_safetensors(o));
    write_file((tmp / "config.json").string(), config.dump(2) + "\n");
    Json t = trainer;
    t["format_version"] = 1;
    write_file((tmp / "trainer.json").string(), t.dump(2) + "\n");
    for (const auto& [file, st] : extra_files) write_file((tmp / file).string(), serialize_safetensors(st));
    fsync_directory(tmp.string());
    // Replace an existing checkpoint of the same name only once the new one is complete.
    if (fs::exists(final_dir)) {
      const fs::path old = fs::path(out_dir) / (".old-" + name + "-" + std::to_string(::getpid()));
      fs::remove_all(old, ec);
      fs::rename(final_dir, old);
      fs::rename(tmp, final_dir);
      fs::remove_all(old, ec);
    } else {
      fs::rename(tmp, final_dir);
    }
    fsync_directory(out_dir);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  if (update_latest) write_file_atomic((fs::path(out_dir) / "latest").string(), name + "\n", Durability::Fsync);
}

std::string resolve_checkpoint_dir(const std::string& path) {
  const fs::path p(path);
  if (!fs::exists(p)) fail(path, ": no such checkpoint or run directory");
  if (fs::exists(p / "model.safetensors")) return p.string();
  if (fs::exists(p / "model.packed.safetensors") && fs::exists(p / "config.json")) return p.string();  // nibble export --packed
  if (fs::exists(p / "latest")) {
    std::string name = read_file((p / "latest").string());
    while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
    const fs::path c = p / name;
    if (!fs::exists(c / "model.safetensors")) fail((p / "latest").string(), " names '", name, "', which is not a complete checkpoint");
    return c.string();
  }
  if (fs::exists(p / "final" / "model.safetensors")) return (p / "final").string();
  fail(path, ": neither a checkpoint (no model.safetensors) nor a run directory (no latest or final/)");
}

Json read_checkpoint_config(const std::string& dir) {
  const std::string f = (fs::path(dir) / "config.json").string();
  return Json::parse(read_file(f), f);
}

Checkpoint load_checkpoint(const std::string& dir, const std::vector<ParamInfo>& params, bool with_optimizer) {
  Checkpoint c;
  c.config = read_checkpoint_config(dir);
  const std::string tf = (fs::path(dir) / "trainer.json").string();
  if (fs::exists(tf)) c.trainer = Json::parse(read_file(tf), tf);
  const std::string mf = (fs::path(dir) / "model.safetensors").string();
  load_into(read_safetensors(mf), "", params, c.weights, mf);
  if (with_optimizer) {
    const std::string of = (fs::path(dir) / "optimizer.safetensors").string();
    const SafeTensors o = read_safetensors(of);
    load_into(o, "exp_avg.", params, c.opt.m, of);
    load_into(o, "exp_avg_sq.", params, c.opt.v, of);
    const auto it = o.metadata.find("adamw_step");
    if (it == o.metadata.end()) fail(of, ": metadata 'adamw_step' is missing");
    c.opt.step = std::stoll(it->second);
    c.has_optimizer = true;
  }
  return c;
}

std::string checkpoint_step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%06lld", static_cast<long long>(step));
  return buf;
}

}  // namespace nibble
