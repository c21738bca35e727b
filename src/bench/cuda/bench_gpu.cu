// Kernel benchmarks of `nibble bench` (see nibble/bench.hpp). Times are medians over
// repetitions after warm-up, measured with CUDA events on one stream.
#include <cuda_bf16.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "core/cuda/check.cuh"
#include "core/cuda/scratch.cuh"
#include "nibble/bench.hpp"
#include "nibble/cuda.hpp"
#include "nibble/philox.hpp"
#include "nibble/quant/rht.hpp"
#include "nibble/quant/synthetic.hpp"
#include "nibble/quant/spectral.hpp"
#include "nn/cuda/linear_cuda.hpp"
#include "nn/cuda/spectral_cuda.hpp"
#include "nn/cuda/spectral_parts.cuh"
#include "ops/cuda/gemm.hpp"

namespace nibble::bench {
namespace {

double median_ms(const std::function<void()>& f, int warm = 3, int reps = 15) {
  for (int i = 0; i < warm; ++i) f();
  cudaEvent_t a, b;
  NIBBLE_CUDA_CHECK(cudaEventCreate(&a));
  NIBBLE_CUDA_CHECK(cudaEventCreate(&b));
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    NIBBLE_CUDA_CHECK(cudaEventRecord(a));
    f();
    NIBBLE_CUDA_CHECK(cudaEventRecord(b));
    NIBBLE_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    NIBBLE_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

__global__ void fill_normal(float* x, int64_t n, float scale, uint32_t stream) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = scale * (philox_uniform(7, stream, static_cast<uint64_t>(i)) * 2.0f - 1.0f);
}
__global__ void to_bf16(const float* x, __nv_bfloat16* y, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = __float2bfloat16_rn(x[i]);
}
float* random_device(cuda::DeviceScratch& d, int64_t n, float scale, uint32_t stream) {
  float* p = d.as<float>(static_cast<size_t>(n));
  fill_normal<<<static_cast<unsigned>((n + 255) / 256), 256>>>(p, n, scale, stream);
  NIBBLE_CUDA_CHECK_LAUNCH();
  return p;
}

}  // namespace

Json gpu_quantizer_bench(int64_t rows, int64_t cols) {
  const size_t n = static_cast<size_t>(rows * cols);
  cuda::DeviceScratch dx, dy, dc, ds, dt, dsg;
  SyntheticSpec ss;
  ss.rows = rows;
  ss.cols = cols;
  const std::vector<float> hx = synthetic_matrix(ss);
  float* x = dx.as<float>(n);
  float* y = dy.as<float>(n);
  uint8_t* codes = dc.as<uint8_t>(n / 2);
  uint8_t* scales = ds.as<uint8_t>(n / 16);
  float* tensor = dt.as<float>(2);
  NIBBLE_CUDA_CHECK(cudaMemcpy(x, hx.data(), n * 4, cudaMemcpyHostToDevice));
  cuda::QuantScratch* scratch = cuda::make_quant_scratch();
  Json out = Json::object();
  Json rowsj = Json::array();
  const double copy_ms = median_ms([&] { NIBBLE_CUDA_CHECK(cudaMemcpyAsync(y, x, n * 4, cudaMemcpyDeviceToDevice)); });
  const double copy_gbs = 2.0 * static_cast<double>(n) * 4 / copy_ms / 1e6;
  auto report = [&](const std::string& name, double ms, double bytes) {
    Json r = Json::object();
    r["op"] = name;
    r["ms"] = ms;
    r["gb_per_s"] = bytes / ms / 1e6;
    r["pct_of_copy"] = 100.0 * (bytes / ms / 1e6) / copy_gbs;
    rowsj.push_back(r);
  };
  report("device copy (ceiling)", copy_ms, 2.0 * static_cast<double>(n) * 4);
  for (Format f : {Format::NVFP4, Format::MXFP4, Format::INT4}) {
    for (Rounding rnd : {Rounding::RNE, Rounding::SR}) {
      QuantSpec s = QuantSpec::for_format(f);
      s.rounding = rnd;
      const std::string tag = std::string(format_name(f)) + (rnd == Rounding::SR ? " SR" : "");
      report(tag + " quant-dequant fp32", median_ms([&] { cuda::quantize_dequantize(x, rows, cols, s, y, scratch); }),
             2.0 * static_cast<double>(n) * 4);
      report(tag + " quantize packed",
             median_ms([&] { cuda::quantize_packed(x, rows, cols, s, codes, scales, tensor, scratch); }),
             static_cast<double>(n) * 4 + static_cast<double>(n) / 2 + static_cast<double>(n) / s.block);
      report(tag + " GEMM operand bf16",
             median_ms([&] { cuda::quantize_for_gemm(x, rows, cols, s, true, y, tensor, scratch); }),
             static_cast<double>(n) * 6);
      // The single pass that remains when the producer of x folded the tensor amax into its
      // epilogue (as the GPU operand transforms do): x read once, q·s_b written once.
      cuda::quantize_for_gemm(x, rows, cols, s, true, y, tensor, scratch);  // leaves x's amax in the scratch
      report(tag + " GEMM operand bf16, amax from producer",
             median_ms([&] { cuda::quantize_for_gemm(x, rows, cols, s, true, y, tensor, scratch, nullptr, true); }),
             static_cast<double>(n) * 6);
    }
  }
  float* signs = dsg.as<float>(128);
  const std::vector<float> hs = rht_signs(128, 0, 0);
  NIBBLE_CUDA_CHECK(cudaMemcpy(signs, hs.data(), 128 * 4, cudaMemcpyHostToDevice));
  for (int rn : {16, 128})
    report("rht" + std::to_string(rn) + " forward (in place)", median_ms([&] { cuda::rht_forward(y, rows, cols, rn, signs); }),
           2.0 * static_cast<double>(n) * 4);
  NIBBLE_CUDA_CHECK(cudaDeviceSynchronize());
  cuda::free_quant_scratch(scratch);
  out["device"] = cuda::device_summary();
  out["rows"] = rows;
  out["cols"] = cols;
  out["copy_gb_per_s"] = copy_gbs;
  out["results"] = rowsj;
  return out;
}

Json gpu_gemm_bench(const std::vector<GemmShape>& shapes, const std::vector<std::string>& recipes) {
  Json rows = Json::array();
  for (const GemmShape& sh : shapes) {
    cuda::DeviceScratch dx, dw, ddw, ddy, dy, ab, bb;
    float* x = random_device(dx, sh.tokens * sh.in, 1.0f, 1);
    float* w = random_device(dw, sh.out * sh.in, 0.05f, 2);
    float* g = random_device(ddy, sh.tokens * sh.out, 1e-3f, 3);
    float* dwp = ddw.as<float>(static_cast<size_t>(sh.out * sh.in));
    float* y = dy.as<float>(static_cast<size_t>(sh.tokens * sh.out));
    auto* a16 = ab.as<__nv_bfloat16>(static_cast<size_t>(sh.tokens * sh.in));
    auto* b16 = bb.as<__nv_bfloat16>(static_cast<size_t>(sh.out * sh.in));
    to_bf16<<<static_cast<unsigned>((sh.tokens * sh.in + 255) / 256), 256>>>(x, a16, sh.tokens * sh.in);
    to_bf16<<<static_cast<unsigned>((sh.out * sh.in + 255) / 256), 256>>>(w, b16, sh.out * sh.in);
    NIBBLE_CUDA_CHECK_LAUNCH();
    const double flops = 2.0 * static_cast<double>(sh.tokens) * static_cast<double>(sh.in) * static_cast<double>(sh.out);
    const double base_ms = median_ms([&] {
      cuda::gemm_nt(cuda::GemmDtype::BF16, a16, b16, y, sh.tokens, sh.out, sh.in, nullptr, false, nullptr);
    });
    const double base_tflops = flops / base_ms / 1e9;
    auto add = [&](const std::string& recipe, const std::string& what, double ms, double fl) {
      Json r = Json::object();
      r["shape"] = sh.name;
      r["tokens"] = sh.tokens;
      r["in"] = sh.in;
      r["out"] = sh.out;
      r["recipe"] = recipe;
      r["op"] = what;
      r["ms"] = ms;
      r["tflops"] = fl / ms / 1e9;
      r["pct_of_cublas_bf16"] = 100.0 * (fl / ms / 1e9) / base_tflops;
      rows.push_back(r);
    };
    add("-", "cuBLASLt bf16 GEMM (ceiling)", base_ms, flops);
    // The layer as the engine runs it: x, y, dY and dX stored in bf16 (mixed precision).
    cuda::DeviceScratch gb, yb, dxb;
    auto* g16 = gb.as<__nv_bfloat16>(static_cast<size_t>(sh.tokens * sh.out));
    auto* y16 = yb.as<__nv_bfloat16>(static_cast<size_t>(sh.tokens * sh.out));
    auto* dx16 = dxb.as<__nv_bfloat16>(static_cast<size_t>(sh.tokens * sh.in));
    to_bf16<<<static_cast<unsigned>((sh.tokens * sh.out + 255) / 256), 256>>>(g, g16, sh.tokens * sh.out);
    NIBBLE_CUDA_CHECK_LAUNCH();
    const auto bf = cuda::GemmDtype::BF16;
    cuda::LinearWorkspace ws;
    for (const std::string& rn : recipes) {
      cuda::CudaLinear lin("bench", sh.in, sh.out, 0);
      lin.bind(w, dwp);
      lin.set_recipe(Recipe::preset(rn));
      StepContext ctx;
      ctx.seed = 1;
      add(rn, "linear forward", median_ms([&] { lin.forward({a16, bf}, {y16, bf, nullptr}, sh.tokens, ctx, ws, nullptr); }),
          flops);
      add(rn, "linear forward+backward", median_ms([&] {
            lin.forward({a16, bf}, {y16, bf, nullptr}, sh.tokens, ctx, ws, nullptr);
            lin.backward({g16, bf}, dx16, bf, sh.tokens, ctx, ws, nullptr);
          }),
          3 * flops);
    }
    NIBBLE_CUDA_CHECK(cudaDeviceSynchronize());
  }
  Json out = Json::object();
  out["device"] = cuda::device_summary();
  out["results"] = rows;
  return out;
}

Json gpu_spectral_bench(const std::vector<SpectralShape>& shapes) {
  namespace sp = cuda::spectral_parts;
  Json rows = Json::array();
  cudaStream_t st = nullptr;  // the default stream, as median_ms records its events there
  for (const SpectralShape& sh : shapes) {
    const int64_t m = sh.rows, n = sh.cols, l = sh.rank + 8, big = std::max(m, n);
    sp::ensure_cholesky_fits(l);
    cuda::DeviceScratch dg, dgd, dom, dy, dz, dq, dtmp, dsm;
    const float* g = random_device(dg, m * n, 1e-3f, 5);
    double* gd = dgd.as<double>(static_cast<size_t>(m * n));
    double* om = dom.as<double>(static_cast<size_t>(big * l));
    double* y = dy.as<double>(static_cast<size_t>(m * l));
    double* z = dz.as<double>(static_cast<size_t>(n * l));
    double* q = dq.as<double>(static_cast<size_t>(big * l));
    double* tmp = dtmp.as<double>(static_cast<size_t>(big * l));
    double* small = dsm.as<double>(static_cast<size_t>(4 * l * l));
    const sp::OrthScratch sc{small, {small + l * l, small + 2 * l * l}, small + 3 * l * l};
    sp::to_double(st, g, gd, m * n);
    sp::fill_omega(st, om, n * l, 1, 2);
    sp::dgemm_rm(st, false, false, m, l, n, gd, n, om, l, y, l);
    sp::orth(st, y, m, l, q, tmp, sc, 1, false);
    sp::dgemm_rm(st, true, false, n, l, m, gd, n, q, l, z, l);
    auto add = [&](const std::string& what, double ms, int per_svd) {
      Json r = Json::object();
      r["shape"] = sh.name;
      r["rows"] = m;
      r["cols"] = n;
      r["l"] = l;
      r["op"] = what;
      r["ms"] = ms;
      r["per_svd"] = per_svd;
      rows.push_back(r);
    };
    // Per randomized SVD (2 power iterations): 6 tall products; one CholeskyQR pass of the
    // [rows, l] block in each iteration, two for each of the 2 final bases: 4 passes over a
    // [rows, l] and 2 over a [cols, l] block, each a Gram matrix, a Cholesky factor and inverse,
    // and a product by the inverse.
    add("G to float64", median_ms([&] { sp::to_double(st, g, gd, m * n); }), 1);
    add("Ω (Philox normals)", median_ms([&] { sp::fill_omega(st, om, n * l, 1, 2); }), 1);
    add("G·Ω, G·Z (dgemm)", median_ms([&] { sp::dgemm_rm(st, false, false, m, l, n, gd, n, z, l, y, l); }), 3);
    add("Gᵀ·Q (dgemm)", median_ms([&] { sp::dgemm_rm(st, true, false, n, l, m, gd, n, q, l, z, l); }), 3);
    add("Gram of [rows, l] (dgemm)", median_ms([&] { sp::dgemm_rm(st, true, false, l, l, m, q, l, q, l, sc.gram, l); }), 4);
    add("Gram of [cols, l] (dgemm)", median_ms([&] { sp::dgemm_rm(st, true, false, l, l, n, z, l, z, l, sc.gram, l); }), 2);
    sp::dgemm_rm(st, true, false, l, l, m, q, l, q, l, sc.gram, l);
    add("Cholesky factor alone, l×l, 1024 threads",
        median_ms([&] { sp::cholesky_inverse_device(st, sc.gram, l, sc.r[0], nullptr, 1024); }), 0);
    for (int threads : {128, 256, 512, 1024})
      add("Cholesky factor and inverse, l×l, " + std::to_string(threads) + " threads" + (threads == 1024 ? " (used)" : ""),
          median_ms([&] { sp::cholesky_inverse_device(st, sc.gram, l, sc.r[0], sc.rinv, threads); }), threads == 1024 ? 6 : 0);
    add("[rows, l]·R⁻¹ (dgemm)", median_ms([&] { sp::dgemm_rm(st, false, false, m, l, l, q, l, sc.rinv, l, tmp, l); }), 4);
    add("[cols, l]·R⁻¹ (dgemm)", median_ms([&] { sp::dgemm_rm(st, false, false, n, l, l, z, l, sc.rinv, l, tmp, l); }), 2);
    for (int passes : {1, 2}) {
      const std::string tag = passes == 1 ? " (1 pass)" : " (CholeskyQR2)";
      add("orth [rows, l]" + tag, median_ms([&] { sp::orth(st, y, m, l, q, tmp, sc, passes, false); }), 0);
      add("orth [cols, l]" + tag, median_ms([&] { sp::orth(st, z, n, l, q, tmp, sc, passes, false); }), 0);
    }
    {  // the host's small SVD of an l×l triangular factor (its time on this machine's CPU)
      std::vector<double> r(static_cast<size_t>(l * l), 0.0), ur, vk;
      std::vector<float> s;
      for (int64_t i = 0; i < l; ++i)
        for (int64_t j = i; j < l; ++j) r[j * l + i] = philox_normal(3, 4, static_cast<uint64_t>(i * l + j)) / (1 + i);
      std::vector<double> t;
      for (int rep = 0; rep < 9; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        spectral_small_svd(r, l, sh.rank, ur, vk, s);
        t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(t.begin(), t.end());
      add("small SVD l×l (host)", t[t.size() / 2], 1);
    }
    cuda::DeviceLowRank lr;
    SpectralSpec spec;
    spec.rank = sh.rank;
    spec.seed = 1;
    add("randomized_svd_device (whole)", median_ms([&] { cuda::randomized_svd_device(g, m, n, spec, lr, st); }, 2, 7),
        -1);
    NIBBLE_CUDA_CHECK(cudaDeviceSynchronize());
  }
  Json out = Json::object();
  out["device"] = cuda::device_summary();
  out["results"] = rows;
  return out;
}

double gpu_bf16_peak_flops() {
  int dev = 0;
  NIBBLE_CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp p{};
  NIBBLE_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  const std::string name = p.name;
  // Dense bf16 tensor-core peaks from NVIDIA's data sheets (SXM parts).
  if (name.find("H100") != std::string::npos && name.find("PCIe") != std::string::npos) return 756e12;
  if (name.find("H100") != std::string::npos || name.find("H200") != std::string::npos) return 989.4e12;
  if (name.find("A100") != std::string::npos) return 312e12;
  return 0.0;
}

}  // namespace nibble::bench
