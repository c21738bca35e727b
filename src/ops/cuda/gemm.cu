// cuBLASLt plans, cached per (dtype, shape, accumulate): the heuristic runs once per shape and
// every later call reuses its algorithm, so a step's numerics never change between steps.
#include "ops/cuda/gemm.hpp"

#include <cublasLt.h>

#include <map>
#include <mutex>
#include <tuple>

#include "core/cuda/check.cuh"

namespace nibble::cuda {
namespace {

#define NIBBLE_CUBLAS_CHECK(call)                                                      \
  do {                                                                                 \
    const cublasStatus_t st_ = (call);                                                 \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                  \
      ::nibble::fail("cuBLASLt error ", static_cast<int>(st_), " in ", #call, " at ", \
                     __FILE__, ":", __LINE__);                                         \
  } while (0)

constexpr size_t kWorkspaceBytes = 32u << 20;  // cuBLAS's recommendation for Hopper

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

struct Context {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  float* constants = nullptr;  // device {1, 0}: alpha = 1 and beta = 0 or 1
  std::map<std::tuple<int, int, int64_t, int64_t, int64_t, bool, bool, bool>, Plan> plans;
  std::mutex mu;
};

Context& context() {
  static Context* ctx = [] {
    auto* c = new Context;  // lives for the process: plans are reused by every GEMM
    NIBBLE_CUBLAS_CHECK(cublasLtCreate(&c->handle));
    NIBBLE_CUDA_CHECK(cudaMalloc(&c->workspace, kWorkspaceBytes));
    NIBBLE_CUDA_CHECK(cudaMalloc(&c->constants, 2 * sizeof(float)));
    const float h[2] = {1.0f, 0.0f};
    NIBBLE_CUDA_CHECK(cudaMemcpy(c->constants, h, sizeof h, cudaMemcpyHostToDevice));
    return c;
  }();
  return *ctx;
}

cudaDataType_t cuda_type(GemmDtype t) { return t == GemmDtype::BF16 ? CUDA_R_16BF : CUDA_R_32F; }
const char* type_name(GemmDtype t) { return t == GemmDtype::BF16 ? "bf16" : "fp32"; }

Plan make_plan(Context& ctx, GemmDtype ab, GemmDtype out, int64_t m, int64_t n, int64_t k, bool a_kmajor, bool b_kmajor,
               bool has_c) {
  // Row-major C[M,N] = A·Bᵀ is column-major Cᵀ[N,M] = op(B)·op(A): B is the cuBLAS "A".
  // A K-major B (row-major [N,K]) is column-major [K,N]: op T; a row-major [K,N] one is
  // column-major [N,K]: op N. A K-major A (row-major [M,K]) is column-major [K,M]: op N.
  const cudaDataType_t t = cuda_type(ab);
  Plan p;
  NIBBLE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = b_kmajor ? CUBLAS_OP_T : CUBLAS_OP_N, tb = a_kmajor ? CUBLAS_OP_N : CUBLAS_OP_T;
  NIBBLE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  NIBBLE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  const cublasLtPointerMode_t pm = CUBLASLT_POINTER_MODE_DEVICE;
  NIBBLE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_POINTER_MODE, &pm, sizeof pm));
  const auto u = [](int64_t v) { return static_cast<uint64_t>(v); };
  if (b_kmajor) NIBBLE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, t, u(k), u(n), k));
  else NIBBLE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, t, u(n), u(k), n));
  if (a_kmajor) NIBBLE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, t, u(k), u(m), k));
  else NIBBLE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, t, u(m), u(k), m));
  NIBBLE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, cuda_type(out), u(n), u(m), n));
  cublasLtMatmulPreference_t pref;
  NIBBLE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const size_t ws = kWorkspaceBytes;
  NIBBLE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  // In-place split-K sums partial products in the output in an unspecified order.
  const uint32_t mask = CUBLASLT_REDUCTION_SCHEME_MASK & ~static_cast<uint32_t>(CUBLASLT_REDUCTION_SCHEME_INPLACE);
  NIBBLE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &mask, sizeof mask));
  cublasLtMatmulHeuristicResult_t res{};
  int found = 0;
  NIBBLE_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(ctx.handle, p.op, p.a, p.b, p.c, p.c, pref, 1, &res, &found));
  cublasLtMatmulPreferenceDestroy(pref);
  if (found == 0)
    fail("cuBLASLt has no algorithm for a ", type_name(ab), " GEMM of ", m, "x", n, "x", k, " with ", type_name(out),
         " output", has_c ? " (accumulating)" : "", a_kmajor ? "" : ", A transposed", b_kmajor ? "" : ", B transposed");
  p.algo = res.algo;
  return p;
}

}  // namespace

void gemm(const GemmOperand& a, const GemmOperand& b, const GemmOutput& out, int64_t m, int64_t n, int64_t k,
          const float* d_alpha, cudaStream_t stream) {
  if (m == 0 || n == 0) return;
  if (a.dtype != b.dtype) fail("gemm: operands of different types (", type_name(a.dtype), ", ", type_name(b.dtype), ")");
  Context& ctx = context();
  const Plan* plan;
  {
    std::lock_guard<std::mutex> lock(ctx.mu);
    const auto key = std::make_tuple(static_cast<int>(a.dtype), static_cast<int>(out.dtype), m, n, k, a.k_major,
                                     b.k_major, out.c != nullptr);
    auto it = ctx.plans.find(key);
    if (it == ctx.plans.end())
      it = ctx.plans.emplace(key, make_plan(ctx, a.dtype, out.dtype, m, n, k, a.k_major, b.k_major, out.c != nullptr)).first;
    plan = &it->second;
  }
  const float* alpha = d_alpha ? d_alpha : ctx.constants;
  const float* beta = out.c ? ctx.constants : ctx.constants + 1;
  const void* c = out.c ? out.c : out.d;
  NIBBLE_CUBLAS_CHECK(cublasLtMatmul(ctx.handle, plan->op, alpha, b.p, plan->a, a.p, plan->b, beta, c, plan->c, out.d,
                                     plan->c, &plan->algo, ctx.workspace, kWorkspaceBytes, stream));
}

void gemm_nt(GemmDtype dt, const void* a, const void* b, float* c, int64_t m, int64_t n, int64_t k,
             const float* d_alpha, bool accumulate, cudaStream_t stream) {
  gemm({a, dt, true}, {b, dt, true}, {c, GemmDtype::FP32, accumulate ? c : nullptr}, m, n, k, d_alpha, stream);
}

}  // namespace nibble::cuda
