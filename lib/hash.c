/*
 * hash.c — XXH3-64 of long inputs (page sums), with the widest vector code
 * the CPU runs.
 *
 * Contract:
 *   - hash_long(p, n) is XXH3_64bits(p, n), bit for bit (XXH3's result does
 *     not depend on the vector code that computes it; test_format checks
 *     the two against each other).
 *   - Debian's libxxhash is built for SSE2, the x86-64 baseline.  On a CPU
 *     with AVX2, hash_long runs a copy of XXH3 compiled for AVX2
 *     (hash_avx2.c, from the same xxhash.h), which hashes a page in a
 *     fraction of the time (doc/benchmarks.md); elsewhere the library's.
 *     The choice is made once, at the first call.
 *   - Short inputs (names, keys, meta pages) call the library directly:
 *     XXH3 has no vector code below 240 bytes.
 *
 * Layer: beside os.c, below everything else.
 */
#include <stdatomic.h>
#include <xxhash.h>

#include "internal.h"

#if HASH_HAVE_AVX2
static bool cpu_has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}
#endif

uint64_t hash_long(const void *p, size_t n)
{
#if HASH_HAVE_AVX2
    static _Atomic int avx2 = -1; /* not known yet */
    int a = atomic_load_explicit(&avx2, memory_order_relaxed);
    if (a < 0) {
        a = cpu_has_avx2();
        atomic_store_explicit(&avx2, a, memory_order_relaxed);
    }
    if (a)
        return hash_long_avx2(p, n);
#endif
    return XXH3_64bits(p, n);
}
