/*
 * hash_avx2.c — XXH3-64 compiled for AVX2, for hash.c to call on a CPU
 * that has it.  Every function of this file is compiled for AVX2 (by the
 * pragma below, not a compiler flag, so that every build of the library's
 * sources gets it: meson's, the fuzz build's, the Python binding's), and
 * xxhash.h is included whole and inline (XXH_INLINE_ALL), so its names here
 * do not meet the library's.  Nothing here may run before hash.c has seen
 * AVX2 on the CPU.
 *
 * Layer: under hash.c only.
 */
#include "internal.h"

#if HASH_HAVE_AVX2
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2")
#endif
#include <immintrin.h> /* before xxhash.h: clang defines no __AVX2__ for a pragma */
#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_AVX2
#include <xxhash.h>

uint64_t hash_long_avx2(const void *p, size_t n) { return XXH3_64bits(p, n); }

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
