// The CPU block-quantizer kernels (see quantizer_fast.hpp). Every kernel walks the matrix
// the same way, in chunks of up to 16 blocks side by side: for 1×B blocks the matrix is a
// flat sequence of blocks (chunks of 16 consecutive blocks), for B×B tiles a chunk is 16
// tiles of one band of B rows. Per chunk: the block amaxes, the 16 scales, then the
// elements, 64 at a time (16 Philox groups for SR). Chunks (1×B) or bands (tiles) are
// split among the OpenMP threads; the tensor amax is taken by the same team first. Nothing
// is allocated per call.
//
// Bit-exactness with block_codec.hpp, operation by operation:
//   amax       max of |x|, taken on the bit patterns (exact, in any order);
//   scales     portable kernels: the codec functions per block (decoded values and
//              multipliers from tables filled by the same functions); AVX-512: the same
//              integer and fp32 operations lane by lane (e4m3_encode on the bit pattern,
//              ilogbf from the exponent field, the same mul / div / min);
//   elements   v = clampf(x · e_b, −gmax, gmax) (min/max = clampf for non-NaN v; x and e_b
//              are finite, so v never is NaN); |q| from a = |v|: the threshold counts of
//              grid.hpp, or RNE / floor to the grid step (identical, see magnitude16);
//              SR: u < (a − lo)/(hi − lo) with the same operations; x̂ = (±|q| · s_b) · S_dec,
//              the sign taken only when |q| ≠ 0 (code 0 decodes to +0), as grid_decode does.
//   The build has no FMA contraction and no fast-math, so the compiler keeps every fp32
//   operation as written.
#include "quant/quantizer_fast.hpp"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "nibble/dtype.hpp"
#include "nibble/error.hpp"
#include "nibble/fp8.hpp"
#include "nibble/philox.hpp"
#include "nibble/quant/block_codec.hpp"

#if defined(__GNUC__) && defined(__x86_64__)
#define NIBBLE_QUANT_X86 1
// GCC 12's AVX-512 headers trip -Wuninitialized on their own _mm512_undefined_*() (GCC PR 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#define NIBBLE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define NIBBLE_AVX2 __attribute__((target("avx2")))
#endif
#define NIBBLE_ALWAYS_INLINE inline __attribute__((always_inline))
#ifdef _OPENMP
#include <omp.h>
#endif

namespace nibble::quant_impl {
namespace {

// Below this many elements a call runs on the calling thread (an OpenMP fork costs more
// than the work).
constexpr int64_t kParallelMin = 65536;

// ---- kernel choice -----------------------------------------------------------------------
bool cpu_has_avx512() {
#ifdef NIBBLE_QUANT_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

bool cpu_has_avx2() {
#ifdef NIBBLE_QUANT_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2");
#else
  return false;
#endif
}

std::atomic<Kernel> g_kernel{Kernel::Auto};

Kernel current_kernel() {
  const Kernel k = g_kernel.load(std::memory_order_relaxed);
  return k == Kernel::Auto ? resolved_kernel() : k;
}

// ---- work splitting ------------------------------------------------------------------------
// f(lo, hi) over contiguous ranges of [0, n), one per thread when par.
template <class F>
void parallel_ranges(int64_t n, bool par, F&& f) {
#ifdef _OPENMP
  if (par && n > 1 && omp_get_max_threads() > 1 && !omp_in_parallel()) {
#pragma omp parallel
    {
      const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
      const int64_t lo = n * t / nt, hi = n * (t + 1) / nt;
      if (lo < hi) f(lo, hi);
    }
    return;
  }
#endif
  (void)par;
  f(int64_t{0}, n);
}

// f(t, nt) on each thread t of a team of nt (nt = 1: the calling thread) when par. Inside
// f, team_barrier() only when nt > 1 (never an orphaned barrier of somebody else's team).
template <class F>
void parallel_team(bool par, F&& f) {
#ifdef _OPENMP
  if (par && omp_get_max_threads() > 1 && !omp_in_parallel()) {
#pragma omp parallel
    f(static_cast<int64_t>(omp_get_thread_num()), static_cast<int64_t>(omp_get_num_threads()));
    return;
  }
#endif
  (void)par;
  f(int64_t{0}, int64_t{1});
}
inline void team_barrier() {
#ifdef _OPENMP
#pragma omp barrier
#endif
}

// ---- tables ------------------------------------------------------------------------------
struct StaticTables {
  float e4m3_value[256];  // e4m3_decode(byte)
  float e8m0_value[256];  // 2^(byte-127), as the reference computes it
  float e8m0_mul[256];    // 2^(127-byte)
  StaticTables() {
    for (int b = 0; b < 256; ++b) {
      e4m3_value[b] = e4m3_decode(static_cast<uint8_t>(b));
      e8m0_value[b] = ldexpf(1.0f, b - 127);
      e8m0_mul[b] = ldexpf(1.0f, 127 - b);
    }
  }
};
const StaticTables& static_tables() {
  static const StaticTables t;
  return t;
}

// Everything a kernel needs.
struct Plan {
  const float* x = nullptr;
  int64_t rows = 0, cols = 0;
  int block = 16;
  bool tile = false;
  bool int4 = false;
  bool tensor_scaled = true;  // nvfp4 / int4 (e4m3 scales); else mxfp4 (e8m0)
  bool rceil = false;
  bool sr = false;
  uint64_t seed = 0;
  uint32_t stream = 0;
  float s_enc = 1.0f, s_dec = 1.0f, inv_gmax = 1.0f;
  const float* sb_table = nullptr;   // s_b of a scale byte
  const float* mul_table = nullptr;  // e_b (the element multiplier) of a scale byte
  Output out;

  uint8_t scale_byte(float a_b) const {
    return tensor_scaled ? codec::e4m3_block_scale(a_b, s_enc, inv_gmax)
                         : codec::e8m0_block_scale(a_b, rceil);
  }
};

// A kernel's work: fn(plan, lo, hi) does items [lo, hi) (independent of each other).
struct Work {
  void (*fn)(const Plan&, int64_t lo, int64_t hi);
  int64_t items;
};

// ---- tensor amax ---------------------------------------------------------------------------
// Max of the |x| bit patterns: for non-negative floats the integer order is the float order,
// and a pattern above FLT_MAX's is Inf or NaN.
constexpr uint32_t kFltMaxBits = 0x7f7fffffu;

NIBBLE_ALWAYS_INLINE uint32_t amax_bits_portable(const float* x, int64_t n) {
  uint32_t m = 0;
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, x + i, 4);
    b &= 0x7fffffffu;
    m = b > m ? b : m;
  }
  return m;
}

#ifdef NIBBLE_QUANT_X86
NIBBLE_AVX512 uint32_t amax_bits_avx512(const float* x, int64_t n) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
  __m512i m0 = _mm512_setzero_si512(), m1 = m0, m2 = m0, m3 = m0;
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    m0 = _mm512_max_epu32(m0, _mm512_and_si512(_mm512_loadu_si512(x + i), abs_mask));
    m1 = _mm512_max_epu32(m1, _mm512_and_si512(_mm512_loadu_si512(x + i + 16), abs_mask));
    m2 = _mm512_max_epu32(m2, _mm512_and_si512(_mm512_loadu_si512(x + i + 32), abs_mask));
    m3 = _mm512_max_epu32(m3, _mm512_and_si512(_mm512_loadu_si512(x + i + 48), abs_mask));
  }
  for (; i < n; i += 16) {
    const int64_t left = n - i;
    const __mmask16 k = left >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << left) - 1);
    m0 = _mm512_max_epu32(m0, _mm512_and_si512(_mm512_maskz_loadu_epi32(k, x + i), abs_mask));
  }
  m0 = _mm512_max_epu32(_mm512_max_epu32(m0, m1), _mm512_max_epu32(m2, m3));
  return _mm512_reduce_max_epu32(m0);
}
#endif

[[noreturn]] void throw_first_non_finite(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (!(a <= 3.4028234664e38f))
      throw NonFiniteValue(detail::concat("input has a non-finite value (", x[i], ") at flat index ", i));
  }
  NIBBLE_CHECK(false, "a non-finite value was seen and then not found");
}

void atomic_max(std::atomic<uint32_t>& a, uint32_t v) {
  uint32_t cur = a.load(std::memory_order_relaxed);
  while (v > cur && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}

float float_of_bits(uint32_t bits) {
  float a;
  std::memcpy(&a, &bits, 4);
  return a;
}

// ---- portable kernel ---------------------------------------------------------------------
// Plain C++ written for the auto-vectoriser (no intrinsics), compiled twice: for the
// baseline target (Kernel::Generic, any CPU) and for AVX2 (Kernel::Avx2). The functions are
// always_inline so that each entry point compiles them for its own target.

// u of elements i0 .. i0+63 (i0 % 4 == 0) with the exact arithmetic of philox4x32_10:
// u[4g + l] = word l of group i0/4 + g. The loop over the 16 groups is the vector loop.
NIBBLE_ALWAYS_INLINE void philox64_portable(uint64_t seed, uint32_t stream, uint64_t i0, float* u) {
  uint32_t key0[10], key1[10];  // the round keys
  key0[0] = static_cast<uint32_t>(seed);
  key1[0] = static_cast<uint32_t>(seed >> 32);
  for (int r = 1; r < 10; ++r) {
    key0[r] = key0[r - 1] + 0x9E3779B9u;
    key1[r] = key1[r - 1] + 0xBB67AE85u;
  }
#pragma omp simd
  for (int g = 0; g < 16; ++g) {
    const uint64_t group = (i0 >> 2) + static_cast<uint64_t>(g);
    uint32_t c0 = static_cast<uint32_t>(group), c1 = static_cast<uint32_t>(group >> 32), c2 = stream, c3 = 0;
    for (int r = 0; r < 10; ++r) {  // philox_mulhilo and one round
      const uint32_t hi0 = static_cast<uint32_t>((uint64_t{0xD2511F53u} * c0) >> 32), lo0 = 0xD2511F53u * c0;
      const uint32_t hi1 = static_cast<uint32_t>((uint64_t{0xCD9E8D57u} * c2) >> 32), lo1 = 0xCD9E8D57u * c2;
      c0 = hi1 ^ c1 ^ key0[r];
      c1 = lo1;
      c2 = hi0 ^ c3 ^ key1[r];
      c3 = lo0;
    }
    u[4 * g + 0] = philox_uniform_from_word(c0);
    u[4 * g + 1] = philox_uniform_from_word(c1);
    u[4 * g + 2] = philox_uniform_from_word(c2);
    u[4 * g + 3] = philox_uniform_from_word(c3);
  }
}

// rintf(a) for 0 <= a <= 7 in fp32 operations only: a + 2^23 has no fraction bits left, so
// the addition rounds a to an integer (RNE, as rintf in the default mode); the subtraction
// is exact. (Without fast-math the compiler keeps both operations.)
NIBBLE_ALWAYS_INLINE float rint_small(float a) { return (a + 8388608.0f) - 8388608.0f; }

constexpr int32_t bits(float f) { return std::bit_cast<int32_t>(f); }
// c ? a : b, as integer masks (no conditional fp value for the compiler to move around).
NIBBLE_ALWAYS_INLINE float sel(bool c, float a, float b) {
  const int32_t m = -static_cast<int32_t>(c);
  return std::bit_cast<float>((bits(a) & m) | (bits(b) & ~m));
}

// One block of B elements: x̂ into out, or B/2 bytes of packed codes.
template <bool kInt4, bool kSR, bool kCodes, int B>
NIBBLE_ALWAYS_INLINE void block_portable(const float* x, float mul, float sb, float s_dec, const float* u,
                                         float* out, uint8_t* codes) {
  constexpr float gmax = kInt4 ? 7.0f : 6.0f;
  float qs[B];  // ±|q|, the signed grid value (+0 for a zero result)
  // Written without a single conditional fp value: comparisons on bit patterns (bits(),
  // values >= +0 only: their patterns order as the values), selects by masks (sel), the
  // clamp an integer min, the sign a bit. With -ftrapping-math (the default, no fast-math)
  // the compiler will not if-convert an fp operation that it has moved under a condition,
  // and then does not vectorise; integer operations never trap.
#pragma omp simd
  for (int j = 0; j < B; ++j) {
    const float xm = x[j] * mul;
    const int32_t xb = bits(xm);
    // |clampf(x·e_b, −gmax, gmax)| = min(|x·e_b|, gmax); the clamped value keeps the sign of x·e_b
    const int32_t ab = std::min(xb & 0x7fffffff, bits(gmax));
    const float a = std::bit_cast<float>(ab);
    float q;
    if constexpr (kInt4) {
      const float r = rint_small(a);
      if constexpr (!kSR) {
        q = r;
      } else {
        const float lo = sel(bits(r) > ab, r - 1.0f, r);  // floorf(a)
        q = sel((bits(lo) < bits(7.0f)) & (bits(u[j]) < bits(a - lo)), lo + 1.0f, lo);
      }
    } else if constexpr (!kSR) {  // e2m1_rne_index, as magnitudes
      q = sel(ab > bits(0.25f), 0.5f, 0.0f) + sel(ab >= bits(0.75f), 0.5f, 0.0f) +
          sel(ab > bits(1.25f), 0.5f, 0.0f) + sel(ab >= bits(1.75f), 0.5f, 0.0f) +
          sel(ab > bits(2.5f), 1.0f, 0.0f) + sel(ab >= bits(3.5f), 1.0f, 0.0f) + sel(ab > bits(5.0f), 2.0f, 0.0f);
    } else {  // e2m1_sr_index: lo, gap = hi − lo, up iff u < (a − lo) / gap (never from 6)
      const float lo = sel(ab >= bits(0.5f), 0.5f, 0.0f) + sel(ab >= bits(1.0f), 0.5f, 0.0f) +
                       sel(ab >= bits(1.5f), 0.5f, 0.0f) + sel(ab >= bits(2.0f), 0.5f, 0.0f) +
                       sel(ab >= bits(3.0f), 1.0f, 0.0f) + sel(ab >= bits(4.0f), 1.0f, 0.0f) +
                       sel(ab >= bits(6.0f), 2.0f, 0.0f);
      const float gap = sel(ab < bits(2.0f), 0.5f, sel(ab < bits(4.0f), 1.0f, 2.0f));
      const float prob = (a - lo) / gap;
      q = sel((ab < bits(6.0f)) & (bits(u[j]) < bits(prob)), lo + gap, lo);
    }
    // −q (the sign bit of x·e_b) unless q = 0: a zero result is +0
    const int32_t flip = (xb & static_cast<int32_t>(0x80000000u)) & -static_cast<int32_t>(bits(q) != 0);
    qs[j] = std::bit_cast<float>(bits(q) ^ flip);
  }
  if constexpr (!kCodes) {
#pragma omp simd
    for (int j = 0; j < B; ++j) out[j] = (qs[j] * sb) * s_dec;
  } else {
    for (int j = 0; j < B; j += 2) {
      uint8_t c[2];
      for (int h = 0; h < 2; ++h) {
        const float v = qs[j + h];
        if constexpr (kInt4) {
          c[h] = static_cast<uint8_t>(static_cast<int>(v) & 0xF);  // two's complement level
        } else {
          const float m = std::fabs(v);  // 0, .5, 1, 1.5, 2 -> 2m; 3, 4 -> m + 2; 6 -> 7
          const int i = m <= 2.0f ? static_cast<int>(2.0f * m) : (m < 6.0f ? static_cast<int>(m) + 2 : 7);
          c[h] = static_cast<uint8_t>(v < 0.0f ? (8 | i) : i);
        }
      }
      codes[j >> 1] = pack_nibbles(c[0], c[1]);
    }
  }
}

// One chunk: nblk (<= 16) blocks side by side, nrows rows high (1, or B for tiles), the
// first element at flat index base0, the first scale at scale0.
template <bool kInt4, bool kSR, bool kCodes, int B>
NIBBLE_ALWAYS_INLINE void chunk_portable(const Plan& p, int64_t base0, int64_t nrows, int nblk, int64_t scale0) {
  const int64_t cols = p.cols;
  const float* const x = p.x;
  float sbv[16], mulv[16];
  for (int k = 0; k < nblk; ++k) {
    uint32_t m = 0;
    for (int64_t r = 0; r < nrows; ++r) {
      const float* px = x + base0 + r * cols + k * B;
#pragma omp simd reduction(max : m)
      for (int j = 0; j < B; ++j) {
        uint32_t b;
        std::memcpy(&b, px + j, 4);
        b &= 0x7fffffffu;
        m = b > m ? b : m;
      }
    }
    float a_b;
    std::memcpy(&a_b, &m, 4);
    const uint8_t byte = p.scale_byte(a_b);
    sbv[k] = p.sb_table[byte];
    mulv[k] = p.mul_table[byte];
    if constexpr (kCodes) p.out.scales[scale0 + k] = byte;
  }
  float* const values = p.out.values;
  uint8_t* const codes = p.out.codes;
  const float s_dec = p.s_dec;
  const int w = nblk * B;
  float u[64];
  for (int64_t r = 0; r < nrows; ++r) {
    const int64_t base = base0 + r * cols;
    for (int j0 = 0; j0 < w; j0 += 64) {
      if constexpr (kSR) philox64_portable(p.seed, p.stream, static_cast<uint64_t>(base + j0), u);
      for (int jj = 0; jj < 64 && j0 + jj < w; jj += B) {
        const int k = (j0 + jj) / B;
        const int64_t e = base + j0 + jj;
        block_portable<kInt4, kSR, kCodes, B>(x + e, mulv[k], sbv[k], s_dec, u + jj,
                                              kCodes ? nullptr : values + e, kCodes ? codes + (e >> 1) : nullptr);
      }
    }
  }
}

// The two ways of walking the matrix, for any kernel (Impl::chunk does one chunk).
// 1×B blocks: items are chunks of 16 consecutive blocks of the flat matrix.
template <class Impl, bool kInt4, bool kSR, bool kCodes, int B>
NIBBLE_ALWAYS_INLINE void walk_flat(const Plan& p, int64_t lo, int64_t hi) {
  const int64_t nblocks = p.rows * p.cols / B;
  for (int64_t c = lo; c < hi; ++c) {
    const int64_t blk0 = c * 16;
    Impl::template chunk<kInt4, kSR, kCodes, B>(p, blk0 * B, 1, static_cast<int>(std::min<int64_t>(16, nblocks - blk0)),
                                                blk0);
  }
}
// B×B tiles: items are bands of B rows, walked 16 tiles at a time.
template <class Impl, bool kInt4, bool kSR, bool kCodes, int B>
NIBBLE_ALWAYS_INLINE void walk_tiles(const Plan& p, int64_t lo, int64_t hi) {
  const int64_t scols = p.cols / B;
  for (int64_t band = lo; band < hi; ++band)
    for (int64_t sc = 0; sc < scols; sc += 16)
      Impl::template chunk<kInt4, kSR, kCodes, B>(p, band * B * p.cols + sc * B, B,
                                                  static_cast<int>(std::min<int64_t>(16, scols - sc)), band * scols + sc);
}

// A kernel: chunk, and the walks, amax and Philox entry points compiled for TARGET.
#define NIBBLE_PORTABLE_IMPL(NAME, TARGET)                                                          \
  struct NAME {                                                                                     \
    template <bool kInt4, bool kSR, bool kCodes, int B>                                             \
    TARGET static void chunk(const Plan& p, int64_t base0, int64_t nrows, int nblk, int64_t scale0) { \
      chunk_portable<kInt4, kSR, kCodes, B>(p, base0, nrows, nblk, scale0);                         \
    }                                                                                               \
    template <bool kInt4, bool kSR, bool kCodes, int B>                                             \
    TARGET static void flat(const Plan& p, int64_t lo, int64_t hi) {                                \
      walk_flat<NAME, kInt4, kSR, kCodes, B>(p, lo, hi);                                            \
    }                                                                                               \
    template <bool kInt4, bool kSR, bool kCodes, int B>                                             \
    TARGET static void tiles(const Plan& p, int64_t lo, int64_t hi) {                               \
      walk_tiles<NAME, kInt4, kSR, kCodes, B>(p, lo, hi);                                           \
    }                                                                                               \
    TARGET static uint32_t amax_bits(const float* x, int64_t n) { return amax_bits_portable(x, n); } \
    TARGET static void philox64(uint64_t seed, uint32_t stream, uint64_t i0, float* u) {             \
      philox64_portable(seed, stream, i0, u);                                                       \
    }                                                                                               \
  };

NIBBLE_PORTABLE_IMPL(BaselineImpl, )
#ifdef NIBBLE_QUANT_X86
NIBBLE_PORTABLE_IMPL(Avx2Impl, NIBBLE_AVX2)
#endif

// ---- AVX-512 kernel ----------------------------------------------------------------------
#ifdef NIBBLE_QUANT_X86

// u of elements i0 .. i0+63 (i0 % 4 == 0): Philox4x32-10 of the 16 groups i0/4 + 0..15,
// eight groups per register in 64-bit lanes (a 32×32→64 multiply per lane gives hi and lo
// at once; only the low 32 bits of each lane are meaningful, and every operation reads
// only those), then transposed to element order (u[e] = elements 16e .. 16e+15).
NIBBLE_AVX512 inline void philox64_avx512(uint64_t seed, uint32_t stream, uint64_t i0, __m512 u[4]) {
  const __m512i g0 = _mm512_set1_epi64(static_cast<long long>(i0 >> 2));
  __m512i c0[2], c1[2], c2[2], c3[2];
  c0[0] = _mm512_add_epi64(g0, _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7));  // the group index
  c0[1] = _mm512_add_epi64(g0, _mm512_setr_epi64(8, 9, 10, 11, 12, 13, 14, 15));
  for (int h = 0; h < 2; ++h) {
    c1[h] = _mm512_srli_epi64(c0[h], 32);  // its high word (a carry included)
    c2[h] = _mm512_set1_epi32(static_cast<int>(stream));
    c3[h] = _mm512_setzero_si512();
  }
  const __m512i m0 = _mm512_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m512i m1 = _mm512_set1_epi32(static_cast<int>(0xCD9E8D57u));
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    const __m512i key0 = _mm512_set1_epi32(static_cast<int>(k0)), key1 = _mm512_set1_epi32(static_cast<int>(k1));
    for (int h = 0; h < 2; ++h) {
      const __m512i p0 = _mm512_mul_epu32(c0[h], m0), p1 = _mm512_mul_epu32(c2[h], m1);
      const __m512i n0 = _mm512_xor_si512(_mm512_xor_si512(_mm512_srli_epi64(p1, 32), c1[h]), key0);
      const __m512i n2 = _mm512_xor_si512(_mm512_xor_si512(_mm512_srli_epi64(p0, 32), c3[h]), key1);
      c0[h] = n0;
      c1[h] = p1;  // lo1
      c2[h] = n2;
      c3[h] = p0;  // lo0
    }
  }
  const __m512 two_m24 = _mm512_set1_ps(1.0f / 16777216.0f);
  const __m512i first = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11), second = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
  for (int h = 0; h < 2; ++h) {
    // 64-bit lane g: words (0, 1) of group g in w01, (2, 3) in w23; interleaved by group
    const __m512i w01 = _mm512_mask_blend_epi32(0xAAAA, c0[h], _mm512_slli_epi64(c1[h], 32));
    const __m512i w23 = _mm512_mask_blend_epi32(0xAAAA, c2[h], _mm512_slli_epi64(c3[h], 32));
    const __m512i e0 = _mm512_permutex2var_epi64(w01, first, w23);
    const __m512i e1 = _mm512_permutex2var_epi64(w01, second, w23);
    // (w >> 8) < 2^24 converts exactly; the product is exact
    u[2 * h] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(e0, 8)), two_m24);
    u[2 * h + 1] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(e1, 8)), two_m24);
  }
}

// |q|: the grid magnitude that |v| = a rounds to.
template <bool kInt4, bool kSR>
NIBBLE_AVX512 inline __m512 magnitude16(__m512 a, __m512 u) {
  if constexpr (kInt4) {
    if constexpr (!kSR) {
      return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);  // rintf
    } else {
      const __m512 lo = _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);  // floorf
      const __mmask16 up = _mm512_cmp_ps_mask(lo, _mm512_set1_ps(7.0f), _CMP_LT_OQ) &
                           _mm512_cmp_ps_mask(u, _mm512_sub_ps(a, lo), _CMP_LT_OQ);
      return _mm512_mask_add_ps(lo, up, lo, _mm512_set1_ps(1.0f));
    }
  } else {
    const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f);
    __m512 q = _mm512_setzero_ps();
    if constexpr (!kSR) {
      // e2m1_rne_index's magnitude: the grid has step 0.5 below 2, 1 in [2, 4), 2 in [4, 6],
      // and RNE to a multiple of the step (ties to the even multiple) is exactly the
      // threshold count (0.25→0, 0.75→1, 1.25→1, 1.75→2, 2.5→2, 3.5→4, 5→4). Scaling by
      // 2, 1/2 is exact; roundscale with M = 1 rounds to a multiple of 0.5.
      const __m512 r_half = _mm512_roundscale_ps(a, (1 << 4) | _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      const __m512 r_one = _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      const __m512 r_two = _mm512_mul_ps(
          _mm512_roundscale_ps(_mm512_mul_ps(a, half), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), two);
      q = _mm512_mask_mov_ps(r_two, _mm512_cmp_ps_mask(a, _mm512_set1_ps(4.0f), _CMP_LT_OQ), r_one);
      return _mm512_mask_mov_ps(q, _mm512_cmp_ps_mask(a, two, _CMP_LT_OQ), r_half);
    } else {
      // lo = e2m1_magnitude(e2m1_floor_index(a)): the multiple of the step at or below a
      // (step 0.5 below 2, 1 in [2, 4), 2 from 4); gap = hi − lo = the step. Up iff
      // u < (a − lo) / gap; dividing by the power of two gap and multiplying by its exact
      // reciprocal round the same real number, so the product is the division's result.
      // a = 6 gives lo = 6 and a − lo = 0: never up (e2m1_sr_index's i == 7).
      const __mmask16 lt2 = _mm512_cmp_ps_mask(a, two, _CMP_LT_OQ);
      const __mmask16 lt4 = _mm512_cmp_ps_mask(a, _mm512_set1_ps(4.0f), _CMP_LT_OQ);
      const __m512 f_half = _mm512_roundscale_ps(a, (1 << 4) | _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
      const __m512 f_one = _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
      const __m512 f_two = _mm512_mul_ps(
          _mm512_roundscale_ps(_mm512_mul_ps(a, half), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC), two);
      q = _mm512_mask_mov_ps(_mm512_mask_mov_ps(f_two, lt4, f_one), lt2, f_half);
      const __m512 gap = _mm512_mask_mov_ps(_mm512_mask_mov_ps(two, lt4, one), lt2, half);
      const __m512 inv_gap = _mm512_mask_mov_ps(_mm512_mask_mov_ps(half, lt4, one), lt2, two);
      const __m512 prob = _mm512_mul_ps(_mm512_sub_ps(a, q), inv_gap);
      return _mm512_mask_add_ps(q, _mm512_cmp_ps_mask(u, prob, _CMP_LT_OQ), q, gap);
    }
  }
}

// 16 elements: x̂ into out (kCodes false) or 8 bytes of packed codes (kCodes true).
template <bool kInt4, bool kSR, bool kCodes>
NIBBLE_AVX512 inline void elements16(const float* x, __m512 mul, __m512 sb, __m512 s_dec, __m512 u,
                                     float* out, uint8_t* codes) {
  const __m512 zero = _mm512_setzero_ps();
  const __m512 gmax = _mm512_set1_ps(kInt4 ? 7.0f : 6.0f), ngmax = _mm512_set1_ps(kInt4 ? -7.0f : -6.0f);
  const __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_loadu_ps(x), mul), ngmax), gmax);
  const __mmask16 neg = _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ);
  const __m512 q = magnitude16<kInt4, kSR>(_mm512_abs_ps(v), u);
  if constexpr (!kCodes) {
    const __mmask16 flip = neg & _mm512_cmp_ps_mask(q, zero, _CMP_NEQ_OQ);  // a zero result is +0
    const __m512 qs = _mm512_mask_sub_ps(q, flip, zero, q);
    _mm512_storeu_ps(out, _mm512_mul_ps(_mm512_mul_ps(qs, sb), s_dec));
  } else {
    __m512i c;
    if constexpr (kInt4) {
      const __m512i level = _mm512_cvttps_epi32(q);
      c = _mm512_and_si512(_mm512_mask_sub_epi32(level, neg, _mm512_setzero_si512(), level), _mm512_set1_epi32(0xF));
    } else {
      // magnitude -> index through 2|q| in {0, 1, 2, 3, 4, 6, 8, 12}
      const __m512i idx_of_2q = _mm512_setr_epi32(0, 1, 2, 3, 4, 0, 5, 0, 6, 0, 0, 0, 7, 0, 0, 0);
      const __m512i idx = _mm512_permutexvar_epi32(_mm512_cvttps_epi32(_mm512_add_ps(q, q)), idx_of_2q);
      const __mmask16 flip = neg & _mm512_test_epi32_mask(idx, idx);
      c = _mm512_mask_or_epi32(idx, flip, idx, _mm512_set1_epi32(8));
    }
    // 16 codes -> 8 bytes, element 2i in the low nibble
    const __m128i w = _mm512_cvtepi32_epi8(c);
    const __m128i packed = _mm_or_si128(_mm_and_si128(w, _mm_set1_epi16(0x000F)),
                                        _mm_and_si128(_mm_srli_epi16(w, 4), _mm_set1_epi16(0x00F0)));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(codes), _mm_packus_epi16(packed, packed));
  }
}

// r[k] = max of the 16 lanes of m[k], for 16 vectors at once (a transposing tree).
NIBBLE_AVX512 inline __m512 hmax16(const __m512* m) {
  __m512 p[8], q[4];
  for (int i = 0; i < 8; ++i) {  // p[i]: 128-bit lanes 0-1 from m[2i], 2-3 from m[2i+1]
    const __m512 a = m[2 * i], b = m[2 * i + 1];
    p[i] = _mm512_max_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
  }
  for (int i = 0; i < 4; ++i) {  // q[i]: 128-bit lane j holds 4 partial maxima of m[4i + j]
    const __m512 a = p[2 * i], b = p[2 * i + 1];
    q[i] = _mm512_max_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
  }
  const __m512 s01 = _mm512_max_ps(_mm512_shuffle_ps(q[0], q[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_ps(q[0], q[1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 s23 = _mm512_max_ps(_mm512_shuffle_ps(q[2], q[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_ps(q[2], q[3], _MM_SHUFFLE(3, 2, 3, 2)));
  // t[4j + i] = max of m[4i + j]
  const __m512 t = _mm512_max_ps(_mm512_shuffle_ps(s01, s23, _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_ps(s01, s23, _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), t);
}

// The scales of 16 blocks from their amaxes: the scale bytes (one per 32-bit lane), s_b and
// the element multiplier e_b. Lane for lane the same operations as the codec functions:
// e4m3_block_scale (e4m3_encode on the bit pattern), e4m3_decode, e4m3_encode_multiplier;
// e8m0_block_scale (ilogbf on the bit pattern), and 2^(byte−127), 2^(127−byte).
NIBBLE_AVX512 inline __m512i scales16(const Plan& p, __m512 amax, __m512& sb, __m512& mul) {
  const __m512i zero = _mm512_setzero_si512();
  __m512i byte;
  if (p.tensor_scaled) {
    // t = min(a_b · (S_enc · (1/gmax)), 448), then e4m3_encode(t) for t in [0, 448]
    const __m512 t = _mm512_min_ps(_mm512_mul_ps(amax, _mm512_set1_ps(p.s_enc * p.inv_gmax)), _mm512_set1_ps(448.0f));
    const __m512i u = _mm512_castps_si512(t);
    const __mmask16 sat = _mm512_cmpge_epu32_mask(u, _mm512_set1_epi32(0x43e00000));
    const __mmask16 sub = _mm512_cmplt_epu32_mask(u, _mm512_set1_epi32(0x3c800000));
    const __m512i m = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffff));
    const __m512i q = _mm512_srli_epi32(m, 20);
    const __m512i rem = _mm512_and_si512(m, _mm512_set1_epi32(0xfffff));
    const __m512i half = _mm512_set1_epi32(0x80000);
    const __mmask16 up = _mm512_cmpgt_epu32_mask(rem, half) |
                         (_mm512_cmpeq_epi32_mask(rem, half) & _mm512_test_epi32_mask(q, _mm512_set1_epi32(1)));
    // ((e + 7) << 3 | q) + up: a carry out of q moves into the exponent, as "q == 8" does
    byte = _mm512_add_epi32(_mm512_slli_epi32(_mm512_sub_epi32(_mm512_srli_epi32(u, 23), _mm512_set1_epi32(120)), 3), q);
    byte = _mm512_mask_add_epi32(byte, up, byte, _mm512_set1_epi32(1));
    // below 2^-6: rintf(t · 512) (exact scaling, RNE)
    byte = _mm512_mask_mov_epi32(byte, sub,
                                 _mm512_cvt_roundps_epi32(_mm512_mul_ps(t, _mm512_set1_ps(512.0f)),
                                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    byte = _mm512_mask_mov_epi32(byte, sat, _mm512_set1_epi32(0x7e));
    // e4m3_decode: exponent field e > 0: (8 + m) · 2^(e − 10); e = 0: m / 512
    const __m512i e = _mm512_srli_epi32(byte, 3), mm = _mm512_and_si512(byte, _mm512_set1_epi32(7));
    const __m512 normal = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_slli_epi32(_mm512_add_epi32(e, _mm512_set1_epi32(120)), 23), _mm512_slli_epi32(mm, 20)));
    sb = _mm512_mask_mov_ps(normal, _mm512_cmpeq_epi32_mask(e, zero),
                            _mm512_mul_ps(_mm512_cvtepi32_ps(mm), _mm512_set1_ps(1.0f / 512.0f)));
    // e_b = (s_b == 0) ? 0 : min(1 / (s_b · S_dec), FLT_MAX)
    const __m512 r = _mm512_min_ps(_mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_mul_ps(sb, _mm512_set1_ps(p.s_dec))),
                                   _mm512_set1_ps(FLT_MAX));
    mul = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(sb, _mm512_setzero_ps(), _CMP_NEQ_OQ), r);
  } else {
    const __m512i ua = _mm512_castps_si512(amax);
    if (!p.rceil) {
      // e = ilogb(a_b) − 2 clamped to [−127, 127] (a_b = 0 and subnormals: −127):
      // byte = max(biased exponent − 2, 0)
      byte = _mm512_max_epi32(_mm512_sub_epi32(_mm512_srli_epi32(ua, 23), _mm512_set1_epi32(2)), zero);
    } else {
      // v = a_b / 6; e = ilogb(v), plus 1 unless v is a power of two; clamped; v = 0: −127
      const __m512 v = _mm512_div_ps(amax, _mm512_set1_ps(6.0f));
      const __m512i uv = _mm512_castps_si512(v);
      const __m512i be = _mm512_srli_epi32(uv, 23), mv = _mm512_and_si512(uv, _mm512_set1_epi32(0x7fffff));
      // a subnormal v = mv · 2^-149: ilogb and the power-of-two test from the float mv (exact)
      const __m512i uf = _mm512_castps_si512(_mm512_cvtepi32_ps(mv));
      const __mmask16 is_sub = _mm512_cmpeq_epi32_mask(be, zero);
      __m512i lg = _mm512_mask_mov_epi32(_mm512_sub_epi32(be, _mm512_set1_epi32(127)), is_sub,
                                         _mm512_sub_epi32(_mm512_srli_epi32(uf, 23), _mm512_set1_epi32(127 + 149)));
      const __m512i mant = _mm512_mask_mov_epi32(mv, is_sub, _mm512_and_si512(uf, _mm512_set1_epi32(0x7fffff)));
      lg = _mm512_mask_add_epi32(lg, _mm512_test_epi32_mask(mant, mant), lg, _mm512_set1_epi32(1));
      lg = _mm512_min_epi32(_mm512_max_epi32(lg, _mm512_set1_epi32(-127)), _mm512_set1_epi32(127));
      lg = _mm512_mask_mov_epi32(lg, _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_EQ_OQ), _mm512_set1_epi32(-127));
      byte = _mm512_add_epi32(lg, _mm512_set1_epi32(127));
    }
    // 2^(byte − 127) and 2^(127 − byte); 2^-127 is the subnormal 0x00400000 (2^22 · 2^-149)
    const __m512i tiny = _mm512_set1_epi32(0x00400000);
    sb = _mm512_castsi512_ps(_mm512_mask_mov_epi32(_mm512_slli_epi32(byte, 23), _mm512_cmpeq_epi32_mask(byte, zero), tiny));
    const __m512i inv = _mm512_sub_epi32(_mm512_set1_epi32(254), byte);
    mul = _mm512_castsi512_ps(_mm512_mask_mov_epi32(_mm512_slli_epi32(inv, 23), _mm512_cmpeq_epi32_mask(inv, zero), tiny));
  }
  return byte;
}

// One chunk: nblk (<= 16; kFull: exactly 16) blocks side by side, nrows rows high (1, or
// B for tiles), the first element at flat index base0, the first scale at scale0.
template <bool kInt4, bool kSR, bool kCodes, int B, bool kFull>
NIBBLE_AVX512 inline void chunk_avx512(const Plan& p, int64_t base0, int64_t nrows, int nblk_any, int64_t scale0) {
  constexpr int kVecs = B / 16;  // registers per block row
  const int nblk = kFull ? 16 : nblk_any;
  const int64_t cols = p.cols;
  const float* const x = p.x;
  float* const values = p.out.values;
  uint8_t* const codes = p.out.codes;
  __m512 m[16];
#pragma GCC unroll 16
  for (int k = 0; k < 16; ++k) m[k] = _mm512_setzero_ps();
  for (int64_t r = 0; r < nrows; ++r) {
    const float* px = x + base0 + r * cols;
#pragma GCC unroll 16
    for (int k = 0; k < nblk; ++k)
      for (int v = 0; v < kVecs; ++v) m[k] = _mm512_max_ps(m[k], _mm512_abs_ps(_mm512_loadu_ps(px + k * B + 16 * v)));
  }
  __m512 sb, mul;
  const __m512i bytes = scales16(p, hmax16(m), sb, mul);
  alignas(64) float sbv[16], mulv[16];
  _mm512_store_ps(sbv, sb);
  _mm512_store_ps(mulv, mul);
  if constexpr (kCodes)
    _mm_mask_storeu_epi8(p.out.scales + scale0, static_cast<__mmask16>((1u << nblk) - 1), _mm512_cvtepi32_epi8(bytes));
  const __m512 s_dec = _mm512_set1_ps(p.s_dec);
  const uint64_t seed = p.seed;
  const uint32_t stream = p.stream;
  const int w = nblk * B;
  for (int64_t r = 0; r < nrows; ++r) {
    const int64_t base = base0 + r * cols;
    for (int j0 = 0; j0 < w; j0 += 64) {
      __m512 u[4];
      if constexpr (kSR) philox64_avx512(seed, stream, static_cast<uint64_t>(base + j0), u);
      else u[0] = u[1] = u[2] = u[3] = _mm512_setzero_ps();
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) {
        const int j = j0 + 16 * v;
        if (!kFull && j >= w) break;
        const int64_t e = base + j;
        const int k = j / B;
        elements16<kInt4, kSR, kCodes>(x + e, _mm512_set1_ps(mulv[k]), _mm512_set1_ps(sbv[k]), s_dec, u[v],
                                       kCodes ? nullptr : values + e, kCodes ? codes + (e >> 1) : nullptr);
      }
    }
  }
}

struct Avx512Impl {
  template <bool kInt4, bool kSR, bool kCodes, int B>
  NIBBLE_AVX512 static void chunk(const Plan& p, int64_t base0, int64_t nrows, int nblk, int64_t scale0) {
    if (nblk == 16) chunk_avx512<kInt4, kSR, kCodes, B, true>(p, base0, nrows, 16, scale0);
    else chunk_avx512<kInt4, kSR, kCodes, B, false>(p, base0, nrows, nblk, scale0);
  }
  template <bool kInt4, bool kSR, bool kCodes, int B>
  NIBBLE_AVX512 static void flat(const Plan& p, int64_t lo, int64_t hi) {
    walk_flat<Avx512Impl, kInt4, kSR, kCodes, B>(p, lo, hi);
  }
  template <bool kInt4, bool kSR, bool kCodes, int B>
  NIBBLE_AVX512 static void tiles(const Plan& p, int64_t lo, int64_t hi) {
    walk_tiles<Avx512Impl, kInt4, kSR, kCodes, B>(p, lo, hi);
  }
  NIBBLE_AVX512 static uint32_t amax_bits(const float* x, int64_t n) { return amax_bits_avx512(x, n); }
  NIBBLE_AVX512 static void philox64(uint64_t seed, uint32_t stream, uint64_t i0, float* out) {
    __m512 u[4];
    philox64_avx512(seed, stream, i0, u);
    for (int j = 0; j < 4; ++j) _mm512_storeu_ps(out + 16 * j, u[j]);
  }
};

NIBBLE_AVX512 void block_scales_avx512(const Plan& p, const float* amax, int64_t n, uint8_t* bytes,
                                       float* sb_out, float* mul_out) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << (n - i)) - 1);
    __m512 sb, mul;
    const __m512i b = scales16(p, _mm512_maskz_loadu_ps(k, amax + i), sb, mul);
    _mm_mask_storeu_epi8(bytes + i, k, _mm512_cvtepi32_epi8(b));
    _mm512_mask_storeu_ps(sb_out + i, k, sb);
    _mm512_mask_storeu_ps(mul_out + i, k, mul);
  }
}

#endif  // NIBBLE_QUANT_X86

// ---- dispatch ----------------------------------------------------------------------------
template <class Impl, bool kInt4, bool kSR, bool kCodes, int B>
Work work_b(const Plan& p) {
  if (p.tile) return {Impl::template tiles<kInt4, kSR, kCodes, B>, p.rows / B};
  return {Impl::template flat<kInt4, kSR, kCodes, B>, (p.rows * p.cols / B + 15) / 16};
}
template <class Impl, bool kInt4, bool kSR, bool kCodes>
Work work_mode(const Plan& p) {
  return p.block == 16 ? work_b<Impl, kInt4, kSR, kCodes, 16>(p) : work_b<Impl, kInt4, kSR, kCodes, 32>(p);
}
template <class Impl, bool kInt4, bool kSR>
Work work_sr(const Plan& p) {
  return p.out.codes ? work_mode<Impl, kInt4, kSR, true>(p) : work_mode<Impl, kInt4, kSR, false>(p);
}
template <class Impl>
Work work_for(const Plan& p) {
  if (p.int4) return p.sr ? work_sr<Impl, true, true>(p) : work_sr<Impl, true, false>(p);
  return p.sr ? work_sr<Impl, false, true>(p) : work_sr<Impl, false, false>(p);
}
Work select_work(Kernel k, const Plan& p) {
#ifdef NIBBLE_QUANT_X86
  if (k == Kernel::Avx512) return work_for<Avx512Impl>(p);
  if (k == Kernel::Avx2) return work_for<Avx2Impl>(p);
#endif
  (void)k;
  return work_for<BaselineImpl>(p);
}

uint32_t amax_bits_range(Kernel k, const float* x, int64_t n) {
#ifdef NIBBLE_QUANT_X86
  if (k == Kernel::Avx512) return Avx512Impl::amax_bits(x, n);
  if (k == Kernel::Avx2) return Avx2Impl::amax_bits(x, n);
#endif
  (void)k;
  return BaselineImpl::amax_bits(x, n);
}

float tensor_amax_with(Kernel k, const float* x, int64_t n) {
  std::atomic<uint32_t> result{0};
  parallel_ranges(n, n >= kParallelMin, [&](int64_t lo, int64_t hi) {
    atomic_max(result, amax_bits_range(k, x + lo, hi - lo));
  });
  const uint32_t bits = result.load();
  if (bits > kFltMaxBits) throw_first_non_finite(x, n);
  return float_of_bits(bits);
}

}  // namespace

// ---- public (to src/quant) ---------------------------------------------------------------

bool kernel_available(Kernel k) {
  if (k == Kernel::Avx512) return cpu_has_avx512();
  if (k == Kernel::Avx2) return cpu_has_avx2();
  return true;
}

Kernel resolved_kernel() {
  static const Kernel k = cpu_has_avx512() ? Kernel::Avx512 : (cpu_has_avx2() ? Kernel::Avx2 : Kernel::Generic);
  return k;
}

Kernel set_kernel(Kernel k) {
  if (!kernel_available(k)) fail("quantizer kernel not available on this CPU");
  return g_kernel.exchange(k);
}

float tensor_amax_fast(const float* x, int64_t n) { return tensor_amax_with(current_kernel(), x, n); }

void philox_uniforms64(Kernel k, uint64_t seed, uint32_t stream, uint64_t i0, float* u) {
  if (k == Kernel::Auto) k = resolved_kernel();
#ifdef NIBBLE_QUANT_X86
  if (k == Kernel::Avx512) return Avx512Impl::philox64(seed, stream, i0, u);
  if (k == Kernel::Avx2) return Avx2Impl::philox64(seed, stream, i0, u);
#endif
  BaselineImpl::philox64(seed, stream, i0, u);
}

namespace {
// The scale part of a plan: S_enc (nvfp4 / int4; given), S_dec, 1/gmax and, for the
// portable kernels (tables), the per-byte tables (mul_table: 256 floats that outlive the plan).
void setup_scales(Plan& p, const QuantSpec& spec, float s_enc, bool tables, float* mul_table) {
  p.block = spec.block;
  p.tile = spec.tile2d;
  p.int4 = format_grid(spec.format) == Grid::INT4;
  p.tensor_scaled = format_has_tensor_scale(spec.format);
  p.rceil = spec.scale_rule == ScaleRule::RCEIL;
  p.inv_gmax = 1.0f / grid_max(format_grid(spec.format));
  const StaticTables& st = static_tables();
  if (p.tensor_scaled) {
    p.s_enc = s_enc;
    p.s_dec = 1.0f / p.s_enc;
    if (tables)
      for (int b = 0; b < 256; ++b) mul_table[b] = codec::e4m3_encode_multiplier(st.e4m3_value[b], p.s_dec);
    p.sb_table = st.e4m3_value;
    p.mul_table = mul_table;
  } else {
    p.sb_table = st.e8m0_value;
    p.mul_table = st.e8m0_mul;
  }
}
}  // namespace

TensorScale run(const float* x, int64_t rows, int64_t cols, const QuantSpec& spec, const Output& out) {
  validate_quant_shape(spec, rows, cols);
  const Kernel kernel = current_kernel();
  const int64_t n = rows * cols;
  // One team for both passes: each thread takes the amax of its share, the team agrees on
  // the tensor amax at a barrier, and each thread quantizes its share of the blocks. On a
  // NaN/Inf nobody writes, and the error is thrown after the team has ended.
  std::atomic<uint32_t> amax_bits{0};
  parallel_team(n >= kParallelMin, [&](int64_t t, int64_t nt) {
    const int64_t lo = n * t / nt, hi = n * (t + 1) / nt;
    atomic_max(amax_bits, amax_bits_range(kernel, x + lo, hi - lo));
    if (nt > 1) team_barrier();
    const uint32_t bits = amax_bits.load(std::memory_order_relaxed);
    if (bits > kFltMaxBits || n == 0) return;
    Plan p;
    p.x = x;
    p.rows = rows;
    p.cols = cols;
    p.sr = spec.rounding == Rounding::SR;
    p.seed = spec.seed;
    p.stream = spec.stream;
    p.out = out;
    float mul_table[256];
    setup_scales(p, spec, tensor_encode_scale(spec.format, float_of_bits(bits)), kernel != Kernel::Avx512, mul_table);
    const Work work = select_work(kernel, p);
    const int64_t ilo = work.items * t / nt, ihi = work.items * (t + 1) / nt;
    if (ilo < ihi) work.fn(p, ilo, ihi);
  });
  const uint32_t bits = amax_bits.load();
  if (bits > kFltMaxBits) throw_first_non_finite(x, n);
  TensorScale ts;
  ts.amax = float_of_bits(bits);
  if (format_has_tensor_scale(spec.format)) ts.s_dec = 1.0f / tensor_encode_scale(spec.format, ts.amax);
  return ts;
}

void block_scales(Kernel k, const QuantSpec& spec, float s_enc, const float* amax, int64_t n,
                  uint8_t* bytes, float* sb, float* mul) {
  Plan p;
  float mul_table[256];
  setup_scales(p, spec, s_enc, true, mul_table);
  if (k == Kernel::Auto) k = resolved_kernel();
#ifdef NIBBLE_QUANT_X86
  if (k == Kernel::Avx512) return block_scales_avx512(p, amax, n, bytes, sb, mul);
#endif
  for (int64_t i = 0; i < n; ++i) {
    bytes[i] = p.scale_byte(amax[i]);
    sb[i] = p.sb_table[bytes[i]];
    mul[i] = p.mul_table[bytes[i]];
  }
}

}  // namespace nibble::quant_impl
