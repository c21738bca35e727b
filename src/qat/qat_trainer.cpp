// nibble qat (see qat_trainer.hpp): the loop; the QAT math is a QatState on the engine's device.
#include "nibble/qat/qat_trainer.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "nibble/data/corpus.hpp"
#include "nibble/data/dataset.hpp"
#include "nibble/data/loader.hpp"
#include "nibble/data/tokenizer.hpp"
#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/nn/model.hpp"
#include "nibble/ops/ops.hpp"
#include "nibble/qat/qat_model.hpp"
#include "nibble/qat/qat_state.hpp"
#include "nibble/report/metrics.hpp"
#include "nibble/report/svg_plot.hpp"
#include "nibble/safetensors.hpp"
#include "nibble/train/checkpoint.hpp"
#include "nibble/train/engine.hpp"

namespace nibble {
namespace fs = std::filesystem;

namespace {

Tensor tensor_of(const float* data, Shape shape) {
  Tensor t(shape, DType::F32);
  std::copy(data, data + shape_numel(shape), t.data<float>());
  return t;
}

}  // namespace

QatResult run_qat(const QatConfig& qc, bool quiet) {
  const std::string ck = resolve_checkpoint_dir(qc.checkpoint);
  TrainConfig cfg = qc.train;
  const TrainConfig base = TrainConfig::from_json(read_checkpoint_config(ck), ck + "/config.json");
  cfg.model = base.model;
  cfg.recipe = Recipe::preset("bf16");  // the GEMMs of the (fake-quantized) model
  cfg.validate();
  if (qc.winq && qc.reset_every < 1) fail("--winq-reset must be >= 1");
  // The engine runs forward and backward of the fake-quantized model; the QAT math (Ŵ, the
  // straight-through backward, AdamW of W and α, WinQ) runs beside it: on the host for the CPU
  // engine, in device memory next to the CUDA engine's weights.
  const std::unique_ptr<TrainEngine> engine = make_engine(qc.train.device, cfg.model);
  TrainEngine& model = *engine;
  model.set_recipe(cfg.recipe);
  if (qc.act_bits != 0) {
    if (qc.act_bits < 2 || qc.act_bits > 8) fail("--act-bits ", qc.act_bits, " must be in [2, 8]");
    if (!model.cpu_model()) fail("--act-bits: activation fake quantization runs on the CPU engine only (use --device cpu)");
    model.cpu_model()->set_activation_bits(qc.act_bits);
  }
  const Checkpoint base_ck = load_checkpoint(ck, model.params(), false);
  const QatLayout layout = make_qat_layout(qc.spec, model.params());
  const int64_t np = model.num_params();
  float* const device_w = model.device_weights();
  const bool on_gpu = device_w != nullptr;
  const std::unique_ptr<QatState> state =
      on_gpu ? make_cuda_qat_state(layout, model.device_stream()) : make_cpu_qat_state(layout);
  std::vector<float> what(static_cast<size_t>(np));   // Ŵ on the host (the CPU engine's input; checkpoints)
  std::vector<float> grads;                           // dL/dŴ on the host (the CPU engine)
  if (!on_gpu) grads.resize(static_cast<size_t>(np));
  std::vector<float> alpha0;  // the scales' init, SPEC §7 (a resumed run recomputes it)
  {
    QatHostState init;
    init.w = base_ck.weights;  // latent fp32 weights
    init.alpha.assign(static_cast<size_t>(layout.num_scales), 0.0f);
    for (const auto& q : layout.projections)
      qat_init_scales(qc.spec, init.w.data() + q.offset, q.rows, q.cols, init.alpha.data() + q.alpha_offset);
    init.m_w.assign(static_cast<size_t>(np), 0.0f);
    init.v_w.assign(static_cast<size_t>(np), 0.0f);
    init.m_alpha.assign(init.alpha.size(), 0.0f);
    init.v_alpha.assign(init.alpha.size(), 0.0f);
    state->set(init);
    alpha0 = init.alpha;
  }
  // How far the scales have moved from their init (logged with every validation loss): the
  // mean of α/α₀ (a drift of every scale one way shows here) and the mean of |α/α₀ − 1|.
  auto log_scales = [&](Json& row) {
    if (alpha0.empty()) return;
    const std::vector<float> a = state->scales();
    double ratio = 0, drift = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      const double r = static_cast<double>(a[i]) / static_cast<double>(alpha0[i]);
      ratio += r;
      drift += std::fabs(r - 1.0);
    }
    row["scale_ratio"] = ratio / static_cast<double>(a.size());
    row["scale_drift"] = drift / static_cast<double>(a.size());
  };

  const std::unique_ptr<Tokenizer> tok = make_tokenizer(cfg.model.tokenizer);
  const TokenDataset ds = open_run_data(cfg.data_dir, cfg.text_file, *tok, cfg.val_fraction);
  if (ds.tokenizer != cfg.model.tokenizer) fail("qat: the data is tokenized with ", ds.tokenizer, ", the model uses ", cfg.model.tokenizer);
  DataLoader train_loader(ds.train, cfg.batch, cfg.seq, cfg.seed, true);
  DataLoader val_loader(ds.val, cfg.batch, cfg.seq, cfg.seed, false);

  // Ŵ into the engine, at (W, α) or at WinQ's noisy point
  auto load_quantized = [&](const QatNoise& noise) {
    if (on_gpu) {
      state->quantized_weights(noise, device_w);
    } else {
      state->quantized_weights(noise, what.data());
      model.set_weights(what.data());
    }
  };
  auto evaluate = [&]() {
    load_quantized(QatNoise{});
    val_loader.reset();
    double s = 0;
    StepContext ctx;
    ctx.seed = cfg.seed;
    for (int64_t i = 0; i < cfg.eval_batches; ++i) {
      const Batch b = val_loader.next();
      s += model.forward(b.inputs.data(), b.targets.data(), b.batch_size, b.seq_len, ctx, /*need_backward=*/false);
    }
    return s / static_cast<double>(cfg.eval_batches);
  };

  Json spec = Json::object();
  spec["bits"] = qc.spec.bits;
  spec["quantizer"] = qc.spec.kind == QatQuantizer::LSQ ? "lsq" : "seq";
  spec["group_size"] = qc.spec.group_size;
  spec["winq"] = qc.winq;
  spec["act_bits"] = qc.act_bits;  // eval and sample apply the same activation quantization
  spec["scale_lr_mult"] = qc.scale_lr_mult;
  if (qc.winq) {
    Json ws = Json::object();
    ws["noise_w"] = qc.noise_w;
    ws["noise_s"] = qc.noise_s;
    ws["reset_every"] = qc.reset_every;
    ws["reset_a"] = qc.reset_a;
    spec["winq_settings"] = ws;
  }
  // A checkpoint: Ŵ as the model (what eval measures), W's AdamW state as the optimizer, and in
  // qat.safetensors the latent W, α and α's AdamW state; written atomically.
  Json cj = cfg.to_json();
  // The projections' parameter names, in layout order.
  std::vector<const ParamInfo*> projection_params;
  for (const ParamInfo& p : model.params())
    if (is_qat_projection(p)) projection_params.push_back(&p);
  auto save = [&](const std::string& name, int64_t step) {
    load_quantized(QatNoise{});
    if (on_gpu) model.get_weights(what.data());
    const QatHostState st = state->get();
    SafeTensors latent;
    for (const ParamInfo& p : model.params()) latent.add("latent." + p.name, tensor_of(st.w.data() + p.offset, p.shape));
    for (size_t i = 0; i < layout.projections.size(); ++i) {
      const auto& q = layout.projections[i];
      const std::string& pname = projection_params[i]->name;
      const Shape sh{q.rows, q.alpha_count / q.rows};
      latent.add("scale." + pname, tensor_of(st.alpha.data() + q.alpha_offset, sh));
      latent.add("adam_m.scale." + pname, tensor_of(st.m_alpha.data() + q.alpha_offset, sh));
      latent.add("adam_v.scale." + pname, tensor_of(st.v_alpha.data() + q.alpha_offset, sh));
    }
    latent.metadata["qat"] = spec.dump();
    OptimizerState opt;
    opt.m = st.m_w;
    opt.v = st.v_w;
    opt.step = step;
    Json trainer = Json::object();
    trainer["step"] = step;
    trainer["tokens"] = static_cast<double>(step * cfg.tokens_per_step());
    trainer["loader"] = train_loader.state().to_json();
    trainer["qat"] = spec;
    save_checkpoint(cfg.out, name, ModelWeights{model.config(), model.params(), what.data()}, opt, cj, trainer, true,
                    {{"qat.safetensors", latent}});
  };

  QatResult res;
  int64_t start = 0;
  if (!qc.resume.empty()) {
    // the saved latent W, α, moments and data position; the run's configuration must match
    const std::string dir = resolve_checkpoint_dir(qc.resume);
    const Checkpoint ckp = load_checkpoint(dir, model.params(), true);
    // the run must continue with the settings it was started with (bit-identical resume)
    const Json& saved = ckp.trainer.at("qat");
    for (const char* key : {"bits", "quantizer", "group_size", "winq", "act_bits"}) {
      const Json* was = saved.find(key);
      if (!was || was->dump() != spec.at(key).dump())
        fail(dir, ": the QAT run was started with ", key, " = ", was ? was->dump() : std::string("(unset)"),
             "; this resume asks for ", spec.at(key).dump(), " (give the run's own options)");
    }
    // runs from before --scale-lr-mult learned their scales at the full rate
    const Json* sm = saved.find("scale_lr_mult");
    if ((sm ? sm->as_double() : 1.0) != qc.scale_lr_mult)
      fail(dir, ": the QAT run was started with scale_lr_mult = ", sm ? sm->dump() : std::string("1"),
           "; this resume asks for ", qc.scale_lr_mult, " (give the run's own options)");
    if (const Json* wq = saved.find("winq_settings"); wq && wq->dump() != spec.at("winq_settings").dump())
      fail(dir, ": the QAT run's WinQ settings were ", wq->dump(), "; this resume asks for ", spec.at("winq_settings").dump());
    const SafeTensors lat = read_safetensors((fs::path(dir) / "qat.safetensors").string());
    QatHostState st = state->get();
    for (const ParamInfo& p : model.params()) {
      const Tensor t = lat.get("latent." + p.name).to_f32();
      if (t.numel() != p.numel) fail(dir, ": 'latent.", p.name, "' has ", t.numel(), " values, the model ", p.numel);
      std::copy(t.data<float>(), t.data<float>() + p.numel, st.w.begin() + p.offset);
    }
    for (size_t i = 0; i < layout.projections.size(); ++i) {
      const auto& q = layout.projections[i];
      const std::string& pname = projection_params[i]->name;
      for (const auto& [prefix, dst] : {std::pair<std::string, std::vector<float>*>{"scale.", &st.alpha},
                                        {"adam_m.scale.", &st.m_alpha}, {"adam_v.scale.", &st.v_alpha}}) {
        const Tensor t = lat.get(prefix + pname).to_f32();
        if (t.numel() != q.alpha_count) fail(dir, ": '", prefix, pname, "' has ", t.numel(), " values");
        std::copy(t.data<float>(), t.data<float>() + t.numel(), dst->begin() + q.alpha_offset);
      }
    }
    st.m_w = ckp.opt.m;
    st.v_w = ckp.opt.v;
    state->set(st);
    start = ckp.trainer.at("step").as_int64();
    train_loader.restore(LoaderState::from_json(ckp.trainer.at("loader")));
    if (!quiet) std::printf("nibble qat: resuming from %s at step %lld\n", dir.c_str(), static_cast<long long>(start));
  }
  fs::create_directories(cfg.out);
  write_file_atomic((fs::path(cfg.out) / "config.json").string(), cj.dump(2) + "\n", Durability::Fsync);
  // the QAT settings beside it (config.json's recipe is the GEMMs', bf16): reports label the run
  write_file_atomic((fs::path(cfg.out) / "qat.json").string(), spec.dump(2) + "\n", Durability::Fsync);
  // a resumed run keeps the rows up to its checkpoint and appends
  report::MetricsWriter metrics((fs::path(cfg.out) / "metrics.jsonl").string(), start > 0 ? start : -1);
  res.initial_val_loss = start > 0 ? NAN : evaluate();
  if (!quiet && start == 0)
    std::printf("nibble qat: %s, %g-bit %s%s%s, quantized model before QAT: val loss %.4f\n", ck.c_str(), qc.spec.bits,
                qc.spec.kind == QatQuantizer::LSQ ? "LSQ" : "SEQ", qc.winq ? " + WinQ" : "",
                qc.act_bits ? (", " + std::to_string(qc.act_bits) + "-bit activations").c_str() : "", res.initial_val_loss);
  if (start == 0) {
    Json row = Json::object();
    row["step"] = 0;
    row["val_loss"] = res.initial_val_loss;
    row["tokens"] = 0.0;
    metrics.write(row);
  }
  double window = 0;
  int64_t window_n = 0;
  auto t_window = std::chrono::steady_clock::now();
  int64_t end = qc.stop_after >= 0 ? std::min(cfg.steps, start + qc.stop_after) : cfg.steps;
  const auto t_begin = std::chrono::steady_clock::now();
  int64_t step = start;
  for (; step < end; ++step) {
    // the (noisy) point the gradient is taken at
    QatNoise noise;
    noise.on = qc.winq;
    noise.sigma_w = qc.noise_w;
    noise.sigma_s = qc.noise_s;
    noise.seed = cfg.seed;
    noise.stream = static_cast<uint32_t>(0x51000000u | (step & 0xFFFFFF));
    load_quantized(noise);
    const Batch b = train_loader.next();
    StepContext ctx;
    ctx.seed = cfg.seed;
    ctx.step = static_cast<uint64_t>(step);
    model.zero_grad();
    const double loss = model.forward(b.inputs.data(), b.targets.data(), b.batch_size, b.seq_len, ctx);
    if (!std::isfinite(loss)) fail("qat: step ", step, ": the loss is ", loss);
    model.backward(ctx);
    const float* d_what = model.device_gradients();
    if (!on_gpu) {
      model.get_gradients(grads.data());
      d_what = grads.data();
    }
    const double gnorm = state->backward(d_what);
    if (!std::isfinite(gnorm)) fail("qat: step ", step, ": the gradient norm is ", gnorm);
    const float lr = static_cast<float>(cfg.lr_at(step));
    QatAdam adam;
    adam.lr = lr;
    adam.scale_lr_mult = static_cast<float>(qc.scale_lr_mult);
    adam.beta1 = static_cast<float>(cfg.beta1);
    adam.beta2 = static_cast<float>(cfg.beta2);
    adam.eps = static_cast<float>(cfg.eps);
    adam.weight_decay = static_cast<float>(cfg.weight_decay);
    adam.grad_scale = cfg.grad_clip > 0 && gnorm > cfg.grad_clip ? static_cast<float>(cfg.grad_clip / gnorm) : 1.0f;
    adam.t = step + 1;
    state->update(adam);
    if (qc.winq && (step + 1) % qc.reset_every == 0) state->winq_reset(qc.reset_a);
    // a wall-clock limit ends the run at this step, with a checkpoint (as `nibble train`)
    if (qc.stop_after_seconds >= 0 && step + 1 < end &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_begin).count() >= qc.stop_after_seconds)
      end = step + 1;
    window += loss;
    ++window_n;
    const bool last = step + 1 == cfg.steps;
    if ((step + 1) % cfg.log_every == 0 || last || (cfg.eval_every > 0 && (step + 1) % cfg.eval_every == 0)) {
      Json row = Json::object();
      row["step"] = step + 1;
      row["loss"] = loss;
      row["loss_avg"] = window / static_cast<double>(window_n);
      row["lr"] = lr;
      row["grad_norm"] = gnorm;
      row["tokens"] = static_cast<double>((step + 1) * cfg.tokens_per_step());
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_window).count();
      row["tokens_per_s"] = secs > 0 ? static_cast<double>(window_n * cfg.tokens_per_step()) / secs : 0.0;
      if (last || (cfg.eval_every > 0 && (step + 1) % cfg.eval_every == 0)) {
        row["val_loss"] = res.final_val_loss = evaluate();
        log_scales(row);
      }
      metrics.write(row);
      if (!quiet) {
        std::printf("step %5lld | loss %.4f%s\n", static_cast<long long>(step + 1), window / static_cast<double>(window_n),
                    row.contains("val_loss") ? (" | val " + std::to_string(res.final_val_loss).substr(0, 6)).c_str() : "");
        std::fflush(stdout);
      }
      window = 0;
      window_n = 0;
      t_window = std::chrono::steady_clock::now();
    }
    if (!last && ((cfg.save_every > 0 && (step + 1) % cfg.save_every == 0) || step + 1 == end)) save(checkpoint_step_name(step + 1), step + 1);
  }
  res.steps = step;
  res.stopped_early = step < cfg.steps;
  if (cfg.steps == 0) res.final_val_loss = res.initial_val_loss;
  if (res.stopped_early) return res;
  if (!res.stopped_early) save("final", cfg.steps);
  const report::MetricsLog log = report::read_metrics_jsonl((fs::path(cfg.out) / "metrics.jsonl").string());
  std::vector<double> st = log.column("step"), val = log.column("val_loss"), vs, vl;
  for (size_t i = 0; i < st.size(); ++i)
    if (std::isfinite(val[i])) { vs.push_back(st[i]); vl.push_back(val[i]); }
  report::PlotOptions o;
  o.title = "QAT validation loss (quantized weights)";
  o.x_label = "step";
  o.y_label = "cross-entropy (nats/token)";
  report::write_line_plot((fs::path(cfg.out) / "loss.svg").string(),
                          {report::Series{"train loss", log.column("step"), log.column("loss_avg")}, report::Series{"validation", vs, vl}}, o);
  return res;
}

}  // namespace nibble
