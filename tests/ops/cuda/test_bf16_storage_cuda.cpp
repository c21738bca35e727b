// SM90_Bf16Storage* : the bf16-storage overloads of the CUDA ops (mixed-precision activations,
// ops_cuda.hpp) and the GEMM layouts the engine uses with them (transposed operands read by
// cuBLASLt, bf16 outputs, a residual added in the epilogue).
//
// The ops' contract is exact: on inputs that are bf16 values, a bf16 overload's outputs are the
// fp32 overload's outputs rounded once to bf16 (fp32 outputs — rstd, lse, a norm's dx and dw,
// the loss — have the fp32 overload's bits). So every op is checked bit for bit against its
// fp32 twin, itself tested against the CPU in test_ops_cuda.cpp / test_attention_tc_cuda.cpp.
// The GEMMs are checked against a float64 host product. Skipped, not passed, without a GPU.
#include <gtest/gtest.h>

#include "support/gpu.hpp"

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/cuda/check.cuh"
#include "nibble/cuda.hpp"
#include "nibble/dtype.hpp"
#include "nibble/philox.hpp"
#include "nibble/quant/spectral.hpp"  // philox_normal
#include "ops/cuda/gemm.hpp"
#include "ops/cuda/ops_cuda.hpp"

using namespace nibble;
namespace gops = nibble::cuda::ops;
using gops::bf16;

namespace {

// Normal values already rounded to bf16 (the inputs the bf16 overloads would see).
std::vector<float> bf16_normals(size_t n, uint32_t stream, double scale = 1.0) {
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i)
    x[i] = bf16_to_float(bf16_from_float(static_cast<float>(scale * philox_normal(4242, stream, i))));
  return x;
}
std::vector<uint16_t> to_bf16(const std::vector<float>& x) {
  std::vector<uint16_t> b(x.size());
  for (size_t i = 0; i < x.size(); ++i) b[i] = bf16_from_float(x[i]);
  return b;
}

// A device copy of a host vector (freed at scope end).
template <class T>
struct Buf {
  cuda::DeviceBuffer<T> d;
  size_t n;
  explicit Buf(size_t count) : d(count), n(count) {
    NIBBLE_CUDA_CHECK(cudaMemset(d.get(), 0xFF, n * sizeof(T)));  // poison: NaN
  }
  explicit Buf(const std::vector<T>& h) : Buf(h.size()) {
    NIBBLE_CUDA_CHECK(cudaMemcpy(d.get(), h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  T* get() { return d.get(); }
  bf16* b16() { return reinterpret_cast<bf16*>(d.get()); }
  std::vector<T> host() {
    NIBBLE_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<T> h(n);
    NIBBLE_CUDA_CHECK(cudaMemcpy(h.data(), d.get(), n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

template <class T>
void expect_same_bits(const std::vector<T>& got, const std::vector<T>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0 && bad++ == 0) first = i;
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size() << " differ, first at " << first;
}

}  // namespace

TEST(SM90_Bf16Storage, RmsNormMatchesFp32OverloadRounded) {
  REQUIRE_GPU();
  for (const int64_t c : {256, 100, 2048}) {  // register-held rows, scalar path, a re-read row
    SCOPED_TRACE(c);
    const int64_t n = 37;
    const auto x = bf16_normals(static_cast<size_t>(n * c), 1, 2.0);
    const auto w = bf16_normals(static_cast<size_t>(c), 2);
    Buf<float> dx(x), dw(w), y32(static_cast<size_t>(n * c)), rstd32(static_cast<size_t>(n)), rstd16(static_cast<size_t>(n));
    Buf<uint16_t> y16(static_cast<size_t>(n * c));
    gops::rmsnorm_forward(dx.get(), dw.get(), y32.get(), rstd32.get(), n, c, 1e-5f, nullptr);
    gops::rmsnorm_forward(dx.get(), dw.get(), y16.b16(), rstd16.get(), n, c, 1e-5f, nullptr);
    expect_same_bits(y16.host(), to_bf16(y32.host()), "y");
    expect_same_bits(rstd16.host(), rstd32.host(), "rstd");

    // backward: dy in bf16; dx (fp32) written, then accumulated onto an existing gradient
    const auto dy = bf16_normals(static_cast<size_t>(n * c), 3);
    const auto base = bf16_normals(static_cast<size_t>(n * c), 4);
    const auto dw0 = bf16_normals(static_cast<size_t>(c), 5);
    Buf<float> dy32(dy), gx32(static_cast<size_t>(n * c)), gw32(dw0), part(static_cast<size_t>(gops::rmsnorm_partials_floats(n, c)));
    Buf<uint16_t> dy16(to_bf16(dy));
    Buf<float> gx16(base), gw16(dw0);
    gops::rmsnorm_backward(dy32.get(), dx.get(), dw.get(), rstd32.get(), gx32.get(), gw32.get(), part.get(), n, c, nullptr);
    gops::rmsnorm_backward(dy16.b16(), dx.get(), dw.get(), rstd32.get(), gx16.get(), gw16.get(), part.get(), n, c,
                           nullptr, /*accumulate=*/true);
    std::vector<float> want = gx32.host();
    for (size_t i = 0; i < want.size(); ++i) want[i] = base[i] + want[i];  // one IEEE add, as add_inplace
    expect_same_bits(gx16.host(), want, "dx accumulated");
    expect_same_bits(gw16.host(), gw32.host(), "dw");
  }
}

TEST(SM90_Bf16Storage, RopeSwigluMatchFp32OverloadRounded) {
  REQUIRE_GPU();
  // RoPE on heads inside a wider fused row (stride 3·H·D + 4), forward and inverse.
  const int64_t b = 2, t = 33, h = 3, d = 64, ld = 3 * h * d + 4;
  std::vector<double> tab(static_cast<size_t>(2 * t * (d / 2)));
  gops::rope_table(tab.data(), t, d, 10000.0);
  Buf<double> dtab(tab);
  for (const bool inverse : {false, true}) {
    const auto x = bf16_normals(static_cast<size_t>(b * t * ld), inverse ? 7 : 6);
    Buf<float> x32(x);
    Buf<uint16_t> x16(to_bf16(x));
    gops::rope_apply(x32.get(), ld, b, t, h, d, dtab.get(), inverse, nullptr);
    gops::rope_apply(x16.b16(), ld, b, t, h, d, dtab.get(), inverse, nullptr);
    expect_same_bits(x16.host(), to_bf16(x32.host()), inverse ? "rope inverse" : "rope");
  }
  // SwiGLU forward and backward over the fused gate|up buffer (f = 96: vector path; 13: scalar).
  for (const int64_t f : {96, 13}) {
    const int64_t n = 21;
    const auto gu = bf16_normals(static_cast<size_t>(n * 2 * f), 8, 3.0);
    const auto dout = bf16_normals(static_cast<size_t>(n * f), 9);
    Buf<float> gu32(gu), out32(static_cast<size_t>(n * f)), dout32(dout), dgu32(static_cast<size_t>(n * 2 * f));
    Buf<uint16_t> gu16(to_bf16(gu)), out16(static_cast<size_t>(n * f)), dout16(to_bf16(dout)),
        dgu16(static_cast<size_t>(n * 2 * f));
    gops::swiglu_forward(gu32.get(), out32.get(), n, f, nullptr);
    gops::swiglu_forward(gu16.b16(), out16.b16(), n, f, nullptr);
    expect_same_bits(out16.host(), to_bf16(out32.host()), "swiglu");
    gops::swiglu_backward(dout32.get(), gu32.get(), dgu32.get(), n, f, nullptr);
    gops::swiglu_backward(dout16.b16(), gu16.b16(), dgu16.b16(), n, f, nullptr);
    expect_same_bits(dgu16.host(), to_bf16(dgu32.host()), "swiglu backward");
  }
}

TEST(SM90_Bf16Storage, CrossEntropyMatchesFp32OverloadRounded) {
  REQUIRE_GPU();
  for (const int64_t v : {50304, 1001}) {
    const int64_t n = 9;
    const auto logits = bf16_normals(static_cast<size_t>(n * v), 10, 3.0);
    std::vector<int32_t> tg(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) tg[static_cast<size_t>(i)] = i == 4 ? -1 : static_cast<int32_t>(philox_word(11, 1, i) % v);
    Buf<int32_t> dtg(tg);
    Buf<float> l32(logits);
    Buf<uint16_t> l16(to_bf16(logits));
    Buf<double> rows(static_cast<size_t>(n)), loss32(1), loss16(1), eval16(1);
    gops::cross_entropy_loss(l16.b16(), dtg.get(), n, v, rows.get(), eval16.get(), nullptr);
    gops::cross_entropy(l32.get(), dtg.get(), n, v, rows.get(), loss32.get(), nullptr);
    gops::cross_entropy(l16.b16(), dtg.get(), n, v, rows.get(), loss16.get(), nullptr);
    expect_same_bits(loss16.host(), loss32.host(), "loss");
    expect_same_bits(eval16.host(), loss32.host(), "loss without gradients");
    expect_same_bits(l16.host(), to_bf16(l32.host()), "dlogits");
  }
}

// The tensor-core attention reads bf16 operands either way; fed bf16 values, the bf16 overload
// is the fp32 one rounded — also in the backward when both get the same (rounded) O.
TEST(SM90_Bf16Storage, TensorCoreAttentionMatchesFp32OverloadRounded) {
  REQUIRE_GPU();
  struct Case { int64_t b, t, hq, hkv, d; };
  for (const Case c : {Case{2, 200, 4, 2, 64}, Case{1, 65, 2, 1, 32}, Case{2, 130, 2, 2, 128}}) {
    SCOPED_TRACE(c.t);
    const int64_t n = c.b * c.t, w = (c.hq + 2 * c.hkv) * c.d, od = c.hq * c.d;
    const auto qkv = bf16_normals(static_cast<size_t>(n * w), 12, 1.2);
    Buf<float> q32(qkv), o32(static_cast<size_t>(n * od)), lse32(static_cast<size_t>(c.b * c.hq * c.t)),
        lse16(static_cast<size_t>(c.b * c.hq * c.t)), delta(static_cast<size_t>(c.b * c.hq * c.t));
    Buf<uint16_t> q16(to_bf16(qkv)), o16(static_cast<size_t>(n * od));
    const float* f = q32.get();
    const bf16* h = q16.b16();
    const int64_t kq = c.hq * c.d, kv = (c.hq + c.hkv) * c.d;
    gops::attention_forward_tc(f, f + kq, f + kv, w, w, o32.get(), lse32.get(), c.b, c.t, c.hq, c.hkv, c.d, nullptr);
    gops::attention_forward_tc(h, h + kq, h + kv, w, w, o16.b16(), lse16.get(), c.b, c.t, c.hq, c.hkv, c.d, nullptr);
    const auto out16 = o16.host();
    expect_same_bits(out16, to_bf16(o32.host()), "out");
    expect_same_bits(lse16.host(), lse32.host(), "lse");

    const auto dout = bf16_normals(static_cast<size_t>(n * od), 13);
    std::vector<float> out_rounded(out16.size());
    for (size_t i = 0; i < out16.size(); ++i) out_rounded[i] = bf16_to_float(out16[i]);
    Buf<float> do32(dout), or32(out_rounded), g32(static_cast<size_t>(n * w));
    Buf<uint16_t> do16(to_bf16(dout)), g16(static_cast<size_t>(n * w));
    float* g = g32.get();
    bf16* gh = g16.b16();
    gops::attention_backward_tc(do32.get(), f, f + kq, f + kv, w, w, or32.get(), lse32.get(), g, g + kq, g + kv, w, w,
                                delta.get(), c.b, c.t, c.hq, c.hkv, c.d, nullptr);
    gops::attention_backward_tc(do16.b16(), h, h + kq, h + kv, w, w, o16.b16(), lse32.get(), gh, gh + kq, gh + kv, w,
                                w, delta.get(), c.b, c.t, c.hq, c.hkv, c.d, nullptr);
    expect_same_bits(g16.host(), to_bf16(g32.host()), "dq|dk|dv");
  }
}

// C = A·Bᵀ through cuBLASLt with each operand K-major or transposed in memory, an fp32 output
// with a residual C input, and a bf16 output, against float64 products of the same bf16 values.
TEST(SM90_Bf16Storage, GemmLayoutsResidualAndBf16OutputMatchFloat64) {
  REQUIRE_GPU();
  const int64_t m = 96, n = 80, k = 136;
  const auto a = bf16_normals(static_cast<size_t>(m * k), 20);  // A[m][k]
  const auto b = bf16_normals(static_cast<size_t>(n * k), 21);  // B[n][k]
  const auto res = bf16_normals(static_cast<size_t>(m * n), 22);
  std::vector<double> ref(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t l = 0; l < k; ++l) s += static_cast<double>(a[i * k + l]) * b[j * k + l];
      ref[static_cast<size_t>(i * n + j)] = s;
    }
  auto transpose = [](const std::vector<float>& x, int64_t rows, int64_t cols) {
    std::vector<float> t(x.size());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) t[static_cast<size_t>(c * rows + r)] = x[static_cast<size_t>(r * cols + c)];
    return t;
  };
  Buf<uint16_t> a_k(to_bf16(a)), a_t(to_bf16(transpose(a, m, k))), b_k(to_bf16(b)), b_t(to_bf16(transpose(b, n, k)));
  Buf<float> dres(res);
  for (const bool ak : {true, false})
    for (const bool bk : {true, false}) {
      SCOPED_TRACE(std::string(ak ? "A k-major" : "A transposed") + (bk ? ", B k-major" : ", B transposed"));
      const cuda::GemmOperand ga{ak ? a_k.get() : a_t.get(), cuda::GemmDtype::BF16, ak};
      const cuda::GemmOperand gb{bk ? b_k.get() : b_t.get(), cuda::GemmDtype::BF16, bk};
      Buf<float> y32(static_cast<size_t>(m * n));
      Buf<uint16_t> y16(static_cast<size_t>(m * n));
      cuda::gemm(ga, gb, {y32.get(), cuda::GemmDtype::FP32, dres.get()}, m, n, k, nullptr, nullptr);
      cuda::gemm(ga, gb, {y16.get(), cuda::GemmDtype::BF16, nullptr}, m, n, k, nullptr, nullptr);
      const auto h32 = y32.host();
      const auto h16 = y16.host();
      double worst32 = 0, worst16 = 0;
      for (size_t i = 0; i < ref.size(); ++i) {
        // fp32 accumulation of 136 exact products: |err| ≤ ~k·2⁻²⁴·Σ|terms| (≪ 1e-3 here)
        worst32 = std::max(worst32, std::fabs(h32[i] - (ref[i] + res[i])));
        // bf16 output: one rounding (2⁻⁹ relative) of the fp32 result
        worst16 = std::max(worst16, std::fabs(bf16_to_float(h16[i]) - ref[i]) / (std::fabs(ref[i]) + 1e-3));
      }
      EXPECT_LT(worst32, 1e-3);
      EXPECT_LT(worst16, 0x1p-8);
    }
}
