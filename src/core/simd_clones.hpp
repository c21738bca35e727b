#pragma once
// NIBBLE_SIMD_CLONES on a hot loop's function compiles it for AVX-512, AVX2 and the baseline
// (GCC target_clones, picked at load time by the CPU). The build forbids FMA contraction and
// fast-math, so each clone runs the same IEEE operations: the same bits on every x86 machine.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define NIBBLE_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define NIBBLE_SIMD_CLONES
#endif
