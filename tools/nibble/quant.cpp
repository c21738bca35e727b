// nibble quant: quantize a 2-D float32 .npy array with one of the 4-bit formats and
// optional transforms, write the reconstruction, the packed form and the statistics.
#include <chrono>
#include <cmath>
#include <cstdio>

#include "args.hpp"
#include "commands.hpp"
#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/npy.hpp"
#include "nibble/quant/packed.hpp"
#include "nibble/quant/stats.hpp"
#include "table.hpp"

namespace nibble::cli {

namespace {

Args quant_args() {
  Args a("quant",
         "nibble quant --input X.npy --format nvfp4|mxfp4|int4 --output Y.npy [options]",
         "Quantizes X (a 2-D float32 array [rows, cols]; blocks run along cols, the GEMM's\n"
         "reduction dim) as SPEC.md §3-4 define, and writes Y: the reconstruction in X's own\n"
         "coordinates (dequantized, RHT inverted, low-rank part and mean added back).\n"
         "Transforms are applied in the order: centre, spectral split, RHT. Statistics\n"
         "(SPEC §6) are printed as a table.");
  a.option("input", "X.npy", "input: 2-D float32 .npy");
  a.option("format", "F", "nvfp4 | mxfp4 | int4 (int4 = the UFP4 uniform grid)");
  a.option("output", "Y.npy", "reconstruction, float32, same shape as X");
  a.option("block", "B", "block size along cols: 16 | 32 [default: 16, mxfp4: 32]");
  a.flag("tile2d", "B×B tiles (2-D blocks, as for weights) instead of 1×B blocks;\nrows must be a multiple of B");
  a.option("scale-rule", "R", "mxfp4 scale exponent: ocp (floor(log2 amax) - 2, clip) |\nrceil (ceil(log2(amax/6)), NVIDIA)", "ocp");
  a.option("rounding", "R", "rne (round to nearest even) | sr (stochastic, Philox)", "rne");
  a.option("seed", "N", "Philox seed for SR and for generated RHT signs", "0");
  a.option("stream", "N", "Philox stream (counter word 2) for SR and RHT signs", "0");
  a.option("rht", "N", "random Hadamard transform of size 16 | 32 | 64 | 128 along cols");
  a.option("rht-signs", "S.npy", "±1 sign vector of length N (float32 or int); default:\nPhilox signs of (seed, stream), element j -> word & 1 ? -1 : +1");
  a.flag("center", "subtract the per-column mean over rows before quantizing\n(mean-bias removal); it is added back exactly");
  a.option("spectral-rank", "K", "spectral split: keep a rank-K randomized SVD in fp32 and\nquantize only the residual (Metis-style)");
  a.option("power-iters", "P", "power iterations of the randomized SVD", "2");
  a.option("packed", "P.safetensors", "write codes, scales, tensor scale, mean, signs, factors");
  a.option("stats-json", "F.json", "write the statistics as JSON");
  a.flag("quiet", "print nothing but errors");
  a.flag("brief", "print one summary line instead of the tables");
  a.flag("timings", "print the time of each stage (read, quantize, write, stats) to stderr");
  return a;
}

// X must be a finite 2-D float32 array; errors name the file and the first bad index.
Tensor load_matrix(const std::string& path) {
  Tensor x = read_npy(path);
  if (x.dtype() != DType::F32)
    fail(path, ": dtype ", dtype_name(x.dtype()),
         " is not supported: nibble quant takes float32 (numpy: x.astype(np.float32))");
  if (x.rank() != 2) fail(path, ": expected a 2-D array [rows, cols], got shape ", shape_str(x.shape()));
  const float* p = x.data<float>();
  const int64_t cols = x.dim(1);
  for (int64_t i = 0; i < x.numel(); ++i)
    if (!std::isfinite(p[i]))
      fail(path, ": non-finite value ", p[i], " at index (", i / cols, ", ", i % cols, ")");
  return x;
}

std::vector<float> load_signs(const std::string& path) {
  Tensor s = read_npy(path);
  if (s.rank() != 1) fail(path, ": RHT signs must be a 1-D vector, got shape ", shape_str(s.shape()));
  switch (s.dtype()) {
    case DType::F32: case DType::F64: case DType::I8: case DType::I16: case DType::I32: case DType::I64:
      break;
    default:
      fail(path, ": RHT signs must be float32 or int, got ", dtype_name(s.dtype()));
  }
  std::vector<float> v = s.to_f32().to_vector<float>();
  for (size_t j = 0; j < v.size(); ++j)
    if (v[j] != 1.0f && v[j] != -1.0f) fail(path, ": entry ", j, " is ", v[j], ", expected +1 or -1");
  return v;
}

// Power iterations for σ₁ in the anisotropy statistics: the energy share is stable long
// before this on real activations; the cap bounds the time on spectra without a gap.
constexpr int kAnisotropyPowerIters = 20;

}  // namespace

int run_quant(const std::vector<std::string>& argv) {
  Args a = quant_args();
  if (!a.parse(argv)) return 0;
  const std::string in_path = a.required("input"), out_path = a.required("output");
  QuantSpec q = QuantSpec::for_format(format_from_name(a.required("format")));
  if (a.has("block")) {
    const int64_t b = a.integer("block");
    if (b != 16 && b != 32) fail("option --block: ", b, " is not supported (use 16 or 32)");
    q.block = static_cast<int>(b);
  }
  q.tile2d = a.flag_set("tile2d");
  q.scale_rule = scale_rule_from_name(a.choice("scale-rule", {"ocp", "rceil"}));
  if (q.scale_rule == ScaleRule::RCEIL && q.format != Format::MXFP4)
    fail("option --scale-rule rceil applies to mxfp4 only (nvfp4/int4 use an e4m3 scale)");
  q.rounding = rounding_from_name(a.choice("rounding", {"rne", "sr"}));
  q.seed = a.unsigned_integer("seed");
  const uint64_t stream = a.unsigned_integer("stream");
  if (stream > 0xffffffffull) fail("option --stream: ", stream, " does not fit in 32 bits");
  q.stream = static_cast<uint32_t>(stream);

  TransformSpec t;
  t.center = a.flag_set("center");
  if (a.has("rht")) {
    const int64_t n = a.integer("rht");
    if (n != 16 && n != 32 && n != 64 && n != 128)
      fail("option --rht: ", n, " is not supported (use 16, 32, 64 or 128)");
    t.rht = static_cast<int>(n);
    t.rht_seed = q.seed;
    t.rht_stream = q.stream;
    if (a.has("rht-signs")) t.rht_signs = load_signs(a.str("rht-signs"));
  } else if (a.has("rht-signs")) {
    fail("option --rht-signs needs --rht N");
  }
  if (a.has("spectral-rank")) {
    t.spectral.rank = static_cast<int>(a.integer("spectral-rank"));
    if (t.spectral.rank < 1) fail("option --spectral-rank: must be at least 1");
    t.spectral.power_iters = static_cast<int>(a.integer("power-iters"));
    t.spectral.seed = q.seed;
    t.spectral.stream = q.stream + 1;  // a different Philox stream than SR
  }

  using Clock = std::chrono::steady_clock;
  auto ms_since = [](Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
  };
  Json timings = Json::object();
  auto t_read = Clock::now();
  const Tensor x = load_matrix(in_path);
  timings["read_ms"] = ms_since(t_read);
  const int64_t rows = x.dim(0), cols = x.dim(1);
  try {
    resolve_transforms(t, q, rows, cols);
  } catch (const Error& e) {
    fail(in_path, " ", shape_str(x.shape()), ": ", e.what());
  }

  const auto t0 = Clock::now();
  const PipelineResult r = quantize_pipeline(x.data<float>(), rows, cols, q, t);
  const double secs = ms_since(t0) / 1e3;
  timings["quantize_ms"] = secs * 1e3;

  const auto t_write = Clock::now();
  write_npy(out_path, Tensor::from_vector({rows, cols}, r.reconstruction));
  if (a.has("packed")) write_safetensors(a.str("packed"), pack_to_safetensors(r));
  timings["write_ms"] = ms_since(t_write);
  const auto t_stats = Clock::now();

  const int64_t n = rows * cols;
  const ErrorStats recon = error_stats(x.data<float>(), r.reconstruction.data(), n);
  const ErrorStats operand = error_stats(r.operand.data(), r.operand_hat.data(), n);
  const AnisotropyStats aniso = anisotropy_stats(x.data<float>(), rows, cols, q.block, kAnisotropyPowerIters);
  const auto hist = code_histogram(r.q);
  timings["stats_ms"] = ms_since(t_stats);

  Json j = Json::object();
  j["input"] = in_path;
  j["rows"] = rows;
  j["cols"] = cols;
  j["format"] = std::string(format_name(q.format));
  j["block"] = q.block;
  j["tile2d"] = q.tile2d;
  j["scale_rule"] = std::string(scale_rule_name(q.scale_rule));
  j["rounding"] = std::string(rounding_name(q.rounding));
  j["seed"] = q.seed;
  j["stream"] = q.stream;
  j["rht"] = t.rht;
  j["center"] = t.center;
  j["spectral_rank"] = t.spectral.rank;
  if (format_has_tensor_scale(q.format)) {
    j["tensor_amax"] = r.q.tensor_amax;
    j["tensor_scale"] = r.q.tensor_scale;
  }
  // Top-level error statistics compare X with Y (what a user of Y sees); "operand" compares
  // the transformed matrix handed to the quantizer with its dequantized value.
  const Json rj = recon.to_json();
  for (const auto& [k, v] : rj.as_object()) j[k] = v;
  j["operand"] = operand.to_json();
  j["code_histogram"] = code_histogram_json(hist);
  j["anisotropy"] = aniso.to_json();
  j["seconds"] = secs;
  j["timings"] = timings;
  if (a.has("stats-json")) write_file_atomic(a.str("stats-json"), j.dump(2) + "\n");

  if (a.flag_set("timings")) std::fprintf(stderr, "timings: %s\n", timings.dump().c_str());
  if (a.flag_set("brief") && !a.flag_set("quiet")) {
    std::string what = std::string(format_name(q.format)) + (q.scale_rule == ScaleRule::RCEIL ? " rceil" : "") + (q.tile2d ? " tile2d" : "") +
                       (q.rounding == Rounding::SR ? " sr" : "") + (t.center ? " center" : "") +
                       (t.rht ? " rht" + std::to_string(t.rht) : "") +
                       (t.spectral.rank ? " spectral" + std::to_string(t.spectral.rank) : "");
    std::printf("%-28s snr %7s dB  rel_err %7s  shrinkage %8s  (%.2f s)\n", what.c_str(),
                fmt(recon.snr_db, 2).c_str(), fmt(recon.rel_err, 4).c_str(),
                fmt(recon.shrinkage, 4).c_str(), secs);
  } else if (!a.flag_set("quiet")) {
    std::printf("nibble quant: %s [%lld x %lld] -> %s (%s, block %d%s%s%s%s, %.3f s)\n", in_path.c_str(),
                static_cast<long long>(rows), static_cast<long long>(cols), out_path.c_str(),
                std::string(format_name(q.format)).c_str(), q.block, q.tile2d ? " 2-D tiles" : "",
                q.rounding == Rounding::SR ? ", SR" : "", t.center ? ", centred" : "",
                t.rht ? (", RHT" + std::to_string(t.rht)).c_str() : "", secs);
    Table tab({"statistic", "reconstruction (X vs Y)", "operand (quantized)"});
    tab.row({"snr_db", fmt(recon.snr_db, 3), fmt(operand.snr_db, 3)});
    tab.row({"rel_err", fmt(recon.rel_err, 5), fmt(operand.rel_err, 5)});
    tab.row({"shrinkage", fmt(recon.shrinkage, 5), fmt(operand.shrinkage, 5)});
    std::fputs(tab.str().c_str(), stdout);
    Table an({"input anisotropy", "value"});
    an.row({"mean_energy_share", fmt(aniso.mean_energy_share, 4)});
    an.row({"top1_energy_share", fmt(aniso.top1_energy_share, 4)});
    an.row({"cos(mu, v1)", fmt(aniso.cos_mu_v1, 4)});
    an.row({"amax_inflation", fmt(aniso.amax_inflation, 4)});
    an.row({"block_amax_inflation", fmt(aniso.block_amax_inflation, 4)});
    std::fputs(an.str().c_str(), stdout);
    std::string h;
    for (int c = 0; c < 16; ++c) h += (c ? " " : "") + std::to_string(hist[static_cast<size_t>(c)]);
    std::printf("code histogram (codes 0..15): %s\n", h.c_str());
  }
  return 0;
}

int run_dequant(const std::vector<std::string>& argv) {
  Args a("dequant", "nibble dequant --packed P.safetensors --output Y.npy",
         "Reconstructs the float32 matrix from a file written by `nibble quant --packed`:\n"
         "dequantize, invert the RHT, add the low-rank part and the mean back.");
  a.option("packed", "P.safetensors", "packed input written by nibble quant --packed");
  a.option("output", "Y.npy", "reconstruction, float32 [rows, cols]");
  if (!a.parse(argv)) return 0;
  const std::string path = a.required("packed");
  const std::string out = a.required("output");
  const PackedMatrix p = unpack_from_safetensors(read_safetensors(path), path);
  write_npy(out, Tensor::from_vector({p.q.rows, p.q.cols}, p.reconstruct()));
  std::printf("nibble dequant: %s -> %s [%lld x %lld] (%s)\n", path.c_str(), out.c_str(),
              static_cast<long long>(p.q.rows), static_cast<long long>(p.q.cols),
              std::string(format_name(p.q.spec.format)).c_str());
  return 0;
}

}  // namespace nibble::cli
