// GEMM and transpose, CPU reference.
//
// float: a cache-blocked GEMM in the GotoBLAS/BLIS style. A register-tiled micro-kernel
// (AVX-512 12×32, AVX2+FMA 6×16, or a portable 4×8 one using std::fma) computes an MR×NR tile
// of C over a block of KC values of k, broadcasting elements of op(A) and loading NR-wide rows
// of op(B). Operands are read in place where the kernel can (op(A) in any layout, op(B) stored
// [K, N]) unless a long reduction over a wide product makes packing pay; op(B) stored [N, K]
// is packed into [k][NR] panels, a bounded chunk of columns at a time; partial edge panels are
// packed with zero padding. OpenMP splits C into MC×NC tiles (static schedule).
// The micro-kernel starts its accumulators from C (or from 0 for the first k block of a
// non-accumulating call) and applies one fused multiply-add per k in increasing k, so every
// C element is the same fp32 FMA chain whatever the blocking, thread count or kernel. The
// build uses -ffp-contract=off; the FMAs here are explicit (intrinsics / std::fma).
//
// double: plain loops (tests and gradient checks only).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>

#include "nibble/error.hpp"
#include "nibble/ops/ops.hpp"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define NIBBLE_GEMM_X86 1
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace nibble::ops {
namespace {

// ---- micro-kernels ------------------------------------------------------------------------
// c[i*ldc + j] (i < MR, j < NR) = (load_c ? c : 0) + Σ_p A(i, p) · B(p, j) over p < kc, one FMA
// per p in increasing p, with B(p, j) = b[p*bks + j] and
//   A(i, p) = a[p*as + i]  (column mode: a packed panel, as = MR, or a stored [K, M], as = lda)
//   A(i, p) = a[i*as + p]  (row mode: a stored [M, K], as = lda).
struct KernelArgs {
  int64_t kc;
  const float* a;
  int64_t as;
  const float* b;
  int64_t bks;
  float* c;
  int64_t ldc;
  bool load_c;
};
using KernelFn = void (*)(const KernelArgs&);

struct Kernel {
  const char* name;
  int mr, nr;
  KernelFn col, row;  // column-mode and row-mode A
};

template <int MR, int NR, bool kRowA>
void kernel_generic(const KernelArgs& k) {
  float acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = k.load_c ? k.c[i * k.ldc + j] : 0.0f;
  for (int64_t p = 0; p < k.kc; ++p) {
    const float* bp = k.b + p * k.bks;
    for (int i = 0; i < MR; ++i) {
      const float ai = kRowA ? k.a[i * k.as + p] : k.a[p * k.as + i];
      for (int j = 0; j < NR; ++j) acc[i][j] = std::fma(ai, bp[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) k.c[i * k.ldc + j] = acc[i][j];
}

#ifdef NIBBLE_GEMM_X86
template <bool kRowA>
__attribute__((target("avx2,fma"))) void kernel_avx2_6x16(const KernelArgs& k) {
  constexpr int MR = 6;
  const float* a = k.a;
  const float* b = k.b;
  float* c = k.c;
  const int64_t as = k.as, bks = k.bks, ldc = k.ldc;
  __m256 c0[MR], c1[MR];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
    if (k.load_c) {
      c0[i] = _mm256_loadu_ps(c + i * ldc);
      c1[i] = _mm256_loadu_ps(c + i * ldc + 8);
    } else {
      c0[i] = _mm256_setzero_ps();
      c1[i] = _mm256_setzero_ps();
    }
  }
  for (int64_t p = 0; p < k.kc; ++p) {
    const __m256 b0 = _mm256_loadu_ps(b + p * bks);
    const __m256 b1 = _mm256_loadu_ps(b + p * bks + 8);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const __m256 ai = _mm256_broadcast_ss(kRowA ? a + i * as + p : a + p * as + i);
      c0[i] = _mm256_fmadd_ps(ai, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(ai, b1, c1[i]);
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
    _mm256_storeu_ps(c + i * ldc, c0[i]);
    _mm256_storeu_ps(c + i * ldc + 8, c1[i]);
  }
}

template <bool kRowA>
__attribute__((target("avx512f"))) void kernel_avx512_12x32(const KernelArgs& k) {
  constexpr int MR = 12;
  const float* a = k.a;
  const float* b = k.b;
  float* c = k.c;
  const int64_t as = k.as, bks = k.bks, ldc = k.ldc;
  __m512 c0[MR], c1[MR];
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i) {
    if (k.load_c) {
      c0[i] = _mm512_loadu_ps(c + i * ldc);
      c1[i] = _mm512_loadu_ps(c + i * ldc + 16);
    } else {
      c0[i] = _mm512_setzero_ps();
      c1[i] = _mm512_setzero_ps();
    }
  }
  for (int64_t p = 0; p < k.kc; ++p) {
    const __m512 b0 = _mm512_loadu_ps(b + p * bks);
    const __m512 b1 = _mm512_loadu_ps(b + p * bks + 16);
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(kRowA ? a[i * as + p] : a[p * as + i]);
      c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);
      c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i) {
    _mm512_storeu_ps(c + i * ldc, c0[i]);
    _mm512_storeu_ps(c + i * ldc + 16, c1[i]);
  }
}
#endif

constexpr Kernel kGeneric{"generic", 4, 8, kernel_generic<4, 8, false>, kernel_generic<4, 8, true>};
#ifdef NIBBLE_GEMM_X86
constexpr Kernel kAvx2{"avx2", 6, 16, kernel_avx2_6x16<false>, kernel_avx2_6x16<true>};
constexpr Kernel kAvx512{"avx512", 12, 32, kernel_avx512_12x32<false>, kernel_avx512_12x32<true>};
#endif
constexpr int kMaxMr = 12, kMaxNr = 32;

bool cpu_has(const char* name) {
#ifdef NIBBLE_GEMM_X86
  __builtin_cpu_init();
  if (!std::strcmp(name, "avx512")) return __builtin_cpu_supports("avx512f");
  if (!std::strcmp(name, "avx2")) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return !std::strcmp(name, "generic");
}

const Kernel* auto_kernel() {
#ifdef NIBBLE_GEMM_X86
  if (cpu_has("avx512")) return &kAvx512;
  if (cpu_has("avx2")) return &kAvx2;
#endif
  return &kGeneric;
}

std::atomic<const Kernel*> g_kernel{nullptr};

const Kernel& current_kernel() {
  const Kernel* k = g_kernel.load(std::memory_order_acquire);
  if (!k) {
    k = auto_kernel();
    g_kernel.store(k, std::memory_order_release);
  }
  return *k;
}

// ---- packing buffers ------------------------------------------------------------------------
// A 64-byte-aligned float buffer that only grows (one per calling thread and operand).
class Buffer {
 public:
  float* get(int64_t n) {
    if (n > cap_) {
      ptr_.reset(static_cast<float*>(::operator new[](static_cast<size_t>(n) * sizeof(float), std::align_val_t{64})));
      cap_ = n;
    }
    return ptr_.get();
  }

 private:
  struct Free {
    void operator()(float* p) const { ::operator delete[](p, std::align_val_t{64}); }
  };
  std::unique_ptr<float, Free> ptr_;
  int64_t cap_ = 0;
};

bool in_parallel() {
#ifdef _OPENMP
  return omp_in_parallel() != 0;
#else
  return false;
#endif
}

int max_threads() {
#ifdef _OPENMP
  return in_parallel() ? 1 : omp_get_max_threads();
#else
  return 1;
#endif
}

// Packs rows [i0, i0+mr) of op(A) (all K) into dst[k*MR + i], zero-padding rows ≥ rows.
void pack_a_panel(bool trans, const float* a, int64_t lda, int64_t i0, int64_t rows, int64_t k, int MR, float* dst) {
  const int64_t mr = std::min<int64_t>(MR, rows - i0);
  if (trans) {  // A stored [K, M]: row p of storage holds op(A)(·, p)
    for (int64_t p = 0; p < k; ++p) {
      const float* src = a + p * lda + i0;
      float* d = dst + p * MR;
      for (int64_t i = 0; i < mr; ++i) d[i] = src[i];
      for (int64_t i = mr; i < MR; ++i) d[i] = 0.0f;
    }
  } else {  // A stored [M, K]
    for (int64_t i = 0; i < mr; ++i) {
      const float* src = a + (i0 + i) * lda;
      for (int64_t p = 0; p < k; ++p) dst[p * MR + i] = src[p];
    }
    for (int64_t i = mr; i < MR; ++i)
      for (int64_t p = 0; p < k; ++p) dst[p * MR + i] = 0.0f;
  }
}

// Packs columns [j0, j0+nr) of op(B) (all K) into dst[k*NR + j], zero-padding columns ≥ cols.
void pack_b_panel(bool trans, const float* b, int64_t ldb, int64_t j0, int64_t cols, int64_t k, int NR, float* dst) {
  const int64_t nr = std::min<int64_t>(NR, cols - j0);
  if (trans) {  // B stored [N, K]
    if (nr == NR) {
      // Eight k at a time so that each source row's cache line is read in one go.
      int64_t p = 0;
      for (; p + 8 <= k; p += 8)
        for (int64_t j = 0; j < NR; ++j) {
          const float* src = b + (j0 + j) * ldb + p;
          float* d = dst + p * NR + j;
          for (int q = 0; q < 8; ++q) d[q * NR] = src[q];
        }
      for (; p < k; ++p)
        for (int64_t j = 0; j < NR; ++j) dst[p * NR + j] = b[(j0 + j) * ldb + p];
    } else {
      for (int64_t p = 0; p < k; ++p) {
        float* d = dst + p * NR;
        for (int64_t j = 0; j < nr; ++j) d[j] = b[(j0 + j) * ldb + p];
        for (int64_t j = nr; j < NR; ++j) d[j] = 0.0f;
      }
    }
  } else {  // B stored [K, N]
    for (int64_t p = 0; p < k; ++p) {
      const float* src = b + p * ldb + j0;
      float* d = dst + p * NR;
      for (int64_t j = 0; j < nr; ++j) d[j] = src[j];
      for (int64_t j = nr; j < NR; ++j) d[j] = 0.0f;
    }
  }
}

constexpr int64_t kKc = 256;                      // k block (A micro-panel 12 KB in L1)
constexpr int64_t kMcTarget = 96, kNcTarget = 256;  // C tile (B block 256 KB in L2)
constexpr int64_t kChunkFloats = int64_t(1) << 20;  // packed B chunk: 4 MB

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
int64_t ceil_div(int64_t x, int64_t m) { return (x + m - 1) / m; }

void gemm_f32(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
              int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.0f);
    return;
  }
  const Kernel& kern = current_kernel();
  const int MR = kern.mr, NR = kern.nr;
  const int nthreads = max_threads();
  const bool par = nthreads > 1 && static_cast<double>(m) * n * k >= 1e6;

  // Short reductions (k ≤ KC: attention tiles, narrow layers) and thin products read op(A) in
  // place (row mode when stored [M, K], column mode when stored [K, M]) and op(B) in place when
  // stored [K, N]; only partial edge panels are packed, zero-padded, so no kernel reads past a
  // matrix. Long reductions on wide products pack op(A) into [k][MR] panels and op(B) into
  // [k][NR] panels (a bounded chunk of columns at a time): contiguous streams for the caches
  // and prefetchers. op(B) stored [N, K] is always packed.
  const bool pack_a = k > kKc && n >= 512;       // packing costs about 16/n of the FMAs
  const bool pack_b = tb || (k > kKc && m >= 512);
  thread_local Buffer abuf, bbuf;
  const int64_t m_full = pack_a ? 0 : m / MR * MR;  // rows [0, m_full) are read in place
  float* ap = nullptr;
  if (m_full < m) {
    const int64_t npan = ceil_div(m - m_full, MR);
    ap = abuf.get(npan * MR * k);
#pragma omp parallel for schedule(static) if (par && npan > 1)
    for (int64_t pi = 0; pi < npan; ++pi) pack_a_panel(ta, a, lda, m_full + pi * MR, m, k, MR, ap + pi * MR * k);
  }
  const int64_t n_full = pack_b ? 0 : n / NR * NR;  // columns [0, n_full) are read in place
  const int64_t chunk =
      pack_b ? std::min(round_up(n, NR), std::max<int64_t>(NR, kChunkFloats / k / NR * NR)) : round_up(n, NR);
  float* bp = pack_b ? bbuf.get(chunk * k) : nullptr;
  if (!pack_b && n_full < n) {
    bp = bbuf.get(NR * k);
    pack_b_panel(false, b, ldb, n_full, n, k, NR, bp);
  }

  // C tiles: shrink the targets until every thread has a few tiles.
  int64_t mc = std::min(round_up(m, MR), round_up(kMcTarget, MR));
  int64_t nc = std::min(chunk, round_up(kNcTarget, NR));
  if (par)
    while (ceil_div(m, mc) * ceil_div(std::min(n, chunk), nc) < 4 * nthreads && (mc > MR || nc > NR)) {
      if (nc > NR && (nc / NR >= mc / MR || mc == MR)) nc = round_up(nc / 2, NR);
      else mc = round_up(mc / 2, MR);
    }

  for (int64_t j0c = 0; j0c < n; j0c += chunk) {
    const int64_t ncols = std::min(chunk, n - j0c);
    if (pack_b) {
      const int64_t npanels = ceil_div(ncols, NR);
      const float* bsrc = tb ? b + j0c * ldb : b + j0c;
#pragma omp parallel for schedule(static) if (par && npanels > 1)
      for (int64_t pj = 0; pj < npanels; ++pj) pack_b_panel(tb, bsrc, ldb, pj * NR, ncols, k, NR, bp + pj * NR * k);
    }
    const int64_t tiles_m = ceil_div(m, mc), tiles_n = ceil_div(ncols, nc);
    auto tile = [&](int64_t t) {
      const int64_t i0 = (t / tiles_n) * mc, jt0 = (t % tiles_n) * nc;
      const int64_t i1 = std::min(m, i0 + mc), jt1 = std::min(ncols, jt0 + nc);
      alignas(64) float edge[kMaxMr * kMaxNr];
      KernelArgs ka;
      for (int64_t p0 = 0; p0 < k; p0 += kKc) {
        ka.kc = std::min(kKc, k - p0);
        ka.load_c = accumulate || p0 > 0;
        for (int64_t i = i0; i < i1; i += MR) {
          const int64_t mr = std::min<int64_t>(MR, i1 - i);
          KernelFn fn = kern.col;
          if (i >= m_full) {
            ka.a = ap + (i - m_full) * k + p0 * MR;  // panel (i − m_full)/MR, MR·k floats each
            ka.as = MR;
          } else if (ta) {
            ka.a = a + p0 * lda + i;
            ka.as = lda;
          } else {
            ka.a = a + i * lda + p0;
            ka.as = lda;
            fn = kern.row;
          }
          for (int64_t j = jt0; j < jt1; j += NR) {
            const int64_t nr = std::min<int64_t>(NR, jt1 - j);
            if (pack_b) {
              ka.b = bp + (j / NR) * NR * k + p0 * NR;
              ka.bks = NR;
            } else if (j + NR <= n_full) {
              ka.b = b + p0 * ldb + j;
              ka.bks = ldb;
            } else {
              ka.b = bp + p0 * NR;
              ka.bks = NR;
            }
            float* cij = c + i * ldc + j0c + j;
            if (mr == MR && nr == NR) {
              ka.c = cij;
              ka.ldc = ldc;
              fn(ka);
            } else {
              if (ka.load_c)
                for (int64_t r = 0; r < mr; ++r)
                  for (int64_t q = 0; q < nr; ++q) edge[r * NR + q] = cij[r * ldc + q];
              ka.c = edge;
              ka.ldc = NR;
              fn(ka);
              for (int64_t r = 0; r < mr; ++r)
                for (int64_t q = 0; q < nr; ++q) cij[r * ldc + q] = edge[r * NR + q];
            }
          }
        }
      }
    };
    const int64_t ntiles = tiles_m * tiles_n;
    if (par && ntiles > 1) {
#pragma omp parallel for schedule(static)
      for (int64_t t = 0; t < ntiles; ++t) tile(t);
    } else {
      for (int64_t t = 0; t < ntiles; ++t) tile(t);
    }
  }
}

void gemm_f64(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b,
              int64_t ldb, double* c, int64_t ldc, bool accumulate) {
  if (m <= 0 || n <= 0) return;
  const bool par = !in_parallel() && static_cast<double>(m) * n * k >= 1e5;
#pragma omp parallel for schedule(static) if (par)
  for (int64_t i = 0; i < m; ++i) {
    double* crow = c + i * ldc;
    if (!ta && tb) {  // both operands contiguous along k: dot products
      const double* arow = a + i * lda;
      for (int64_t j = 0; j < n; ++j) {
        const double* brow = b + j * ldb;
        double s = 0.0;
        for (int64_t p = 0; p < k; ++p) s += arow[p] * brow[p];
        crow[j] = accumulate ? crow[j] + s : s;
      }
    } else {  // axpy form over rows of op(B) stored [K, N], or strided reads
      for (int64_t j = 0; j < n; ++j) {
        double s = 0.0;
        for (int64_t p = 0; p < k; ++p) {
          const double av = ta ? a[p * lda + i] : a[i * lda + p];
          const double bv = tb ? b[j * ldb + p] : b[p * ldb + j];
          s += av * bv;
        }
        crow[j] = accumulate ? crow[j] + s : s;
      }
    }
  }
}

}  // namespace

const char* matmul_kernel() { return current_kernel().name; }

bool set_matmul_kernel(const char* name) {
  if (!name) return false;
  if (!std::strcmp(name, "auto")) {
    g_kernel.store(auto_kernel(), std::memory_order_release);
    return true;
  }
  const Kernel* k = nullptr;
  if (!std::strcmp(name, "generic")) k = &kGeneric;
#ifdef NIBBLE_GEMM_X86
  if (!std::strcmp(name, "avx2")) k = &kAvx2;
  if (!std::strcmp(name, "avx512")) k = &kAvx512;
#endif
  if (!k || !cpu_has(name)) return false;
  g_kernel.store(k, std::memory_order_release);
  return true;
}

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b,
          int64_t ldb, T* c, int64_t ldc, bool accumulate) {
  if constexpr (std::is_same_v<T, float>)
    gemm_f32(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc, accumulate);
  else
    gemm_f64(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc, accumulate);
}

template <class T>
void matmul_nt(const T* a, const T* b, T* c, int64_t m, int64_t n, int64_t k, bool accumulate) {
  gemm<T>(false, true, m, n, k, a, k, b, k, c, n, accumulate);
}

template <class T>
void transpose(const T* in, T* out, int64_t rows, int64_t cols) {
  constexpr int64_t kB = 32;
  const int64_t rblocks = (rows + kB - 1) / kB;
  const bool par = !in_parallel() && rows * cols >= (int64_t(1) << 16);
#pragma omp parallel for schedule(static) if (par)
  for (int64_t rb = 0; rb < rblocks; ++rb) {
    const int64_t r0 = rb * kB, r1 = std::min(rows, r0 + kB);
    for (int64_t c0 = 0; c0 < cols; c0 += kB) {
      const int64_t c1 = std::min(cols, c0 + kB);
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t cc = c0; cc < c1; ++cc) out[cc * rows + r] = in[r * cols + cc];
    }
  }
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t,
                          float*, int64_t, bool);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, const double*, int64_t, const double*, int64_t,
                           double*, int64_t, bool);
template void matmul_nt<float>(const float*, const float*, float*, int64_t, int64_t, int64_t, bool);
template void matmul_nt<double>(const double*, const double*, double*, int64_t, int64_t, int64_t, bool);
template void transpose<float>(const float*, float*, int64_t, int64_t);
template void transpose<double>(const double*, double*, int64_t, int64_t);

}  // namespace nibble::ops
