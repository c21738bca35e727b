// nibble hessian: top eigenvalues, trace and eigenvalue density of a checkpoint's loss.
#include <cstdio>
#include <filesystem>

#include "args.hpp"
#include "commands.hpp"
#include "nibble/error.hpp"
#include "nibble/fileio.hpp"
#include "nibble/json.hpp"
#include "nibble/qat/hessian_model.hpp"

namespace nibble::cli {
namespace fs = std::filesystem;

namespace {

// nibble hessian plot DIR... --out FILE.svg: several spectra's densities on one chart
int run_hessian_plot(const std::vector<std::string>& argv) {
  Args a("hessian plot", "nibble hessian plot RESULT_DIR... --out FILE.svg [--title T]",
         "The eigenvalue densities of `nibble hessian --density` outputs on one chart (log density axis,\n"
         "floored at 1e-6 of the highest peak), each labelled with its directory's name: the spectra\n"
         "along a training run side by side.");
  a.allow_positionals("RESULT_DIR", "output directories of nibble hessian --density");
  a.option("title", "T", "chart title", "Hessian eigenvalue density (SLQ)");
  a.option("out", "FILE", "the SVG to write");
  if (!a.parse(argv)) return 0;
  const std::string out = a.required("out");
  if (a.positionals().empty()) fail("hessian plot: give at least one result directory");
  std::vector<std::pair<std::string, Json>> results;
  for (const std::string& dir : a.positionals()) {
    const std::string path = (fs::path(dir) / "results.json").string();
    if (!fs::exists(path)) fail(dir, ": no results.json (not a nibble hessian output directory)");
    fs::path name(dir);
    if (name.filename().empty()) name = name.parent_path();  // "runs/start/"
    results.emplace_back(name.filename().string(), Json::parse(read_file(path), path));
  }
  write_density_plot(out, results, a.str("title"));
  std::printf("%s\n", out.c_str());
  return 0;
}

}  // namespace

int run_hessian(const std::vector<std::string>& argv) {
  if (!argv.empty() && argv[0] == "plot") return run_hessian_plot({argv.begin() + 1, argv.end()});
  Args a("hessian", "nibble hessian --checkpoint DIR [--data DIR | --text FILE] [--bits B] [--top K] [--density] --out DIR",
         "The Hessian of a checkpoint's training loss on one batch (float64, every weight): the K\n"
         "largest-magnitude eigenvalues with their signs (power iteration with deflation), the trace\n"
         "(Hutchinson) and with --density the eigenvalue density by stochastic Lanczos quadrature\n"
         "(share of negative mass, density.svg). A QAT checkpoint, or --bits B on any checkpoint, is\n"
         "analysed at its quantized point (SPEC §7: the loss at the dequantized weights, perturbations\n"
         "masked to the weights in the quantizer's range). --device cuda takes the gradients from the\n"
         "GPU engine in fp32 (a larger difference step; the vectors stay float64 on the host).\n"
         "`nibble hessian plot DIR... --out FILE.svg` draws several results' densities on one chart.");
  a.option("checkpoint", "DIR", "run or checkpoint directory");
  a.option("data", "DIR", "token shards [default: the run's data]");
  a.option("text", "FILE", "a text file");
  a.option("batch", "B", "sequences in the batch", "2");
  a.option("seq", "T", "tokens per sequence [default: min(run's seq, 64)]");
  a.option("top", "K", "eigenvalues", "3");
  a.option("power-iters", "N", "power iterations per eigenvalue, at most", "100");
  a.option("power-tol", "X", "relative change of the eigenvalue that stops them [default: 1e-5 cpu, 1e-3 cuda]");
  a.option("probes", "N", "Hutchinson / SLQ probes", "4");
  a.option("lanczos-steps", "M", "Lanczos steps per SLQ probe", "30");
  a.flag("density", "also the eigenvalue density (SLQ)");
  a.option("bits", "B", "quantize the projections at 1.58 | 2 | 3 | 4 bits first (a QAT checkpoint: its own)");
  a.option("quantizer", "Q", "auto | lsq | seq (with --bits)", "auto");
  a.option("seed", "N", "probe seed", "1");
  a.option("device", "D", "cpu (float64, exact) | cuda (the GPU engine in fp32: faster on big models, ~1% apart) | auto",
           "cpu");
  a.option("out", "DIR", "output directory");
  if (!a.parse(argv)) return 0;
  HessianConfig c;
  c.checkpoint = a.required("checkpoint");
  if (a.has("data") && a.has("text")) fail("give either --data or --text, not both");
  if (a.has("data")) c.data_dir = a.str("data");
  if (a.has("text")) c.text_file = a.str("text");
  c.batch = a.integer("batch");
  if (a.has("seq")) c.seq = a.integer("seq");
  c.top = static_cast<int>(a.integer("top"));
  c.power_iters = static_cast<int>(a.integer("power-iters"));
  if (a.has("power-tol")) c.power_tol = a.number("power-tol");
  if (a.has("power-tol") && !(c.power_tol > 0 && c.power_tol < 1)) fail("--power-tol must be in (0, 1)");
  c.probes = static_cast<int>(a.integer("probes"));
  c.steps = static_cast<int>(a.integer("lanczos-steps"));
  c.density = a.flag_set("density");
  c.seed = a.unsigned_integer("seed");
  if (a.has("bits")) c.bits = a.number("bits");
  c.quantizer = a.choice("quantizer", {"auto", "lsq", "seq"});
  c.device = a.choice("device", {"cpu", "cuda", "auto"});
  c.out = a.required("out");
  if (c.batch < 1) fail("--batch must be positive");
  const Json r = hessian_spectrum(c);
  std::printf("top eigenvalues:");
  for (const Json& v : r.at("top_eigenvalues").as_array()) std::printf(" %.6g", v.as_double());
  std::printf("\ntrace: %.6g\n%s/results.md\n", r.at("trace").as_double(), c.out.c_str());
  return 0;
}

}  // namespace nibble::cli
