/*
 * pagebuf.c — where a write txn's dirty pages live in memory: the writer's
 * page buffers.
 *
 * Contract:
 *   - pagebuf_take hands out a buffer of npages pages (npages * psize
 *     bytes, contents undefined); pagebuf_give takes it back with the same
 *     npages.  Only a handle's writer calls them (one write txn at a
 *     time): nothing locks.
 *   - Buffers up to PAGEBUF_RUN_MAX_BYTES (a page, or a run for a value in
 *     overflow pages) are carved, 64-byte aligned, from chunks of anonymous
 *     memory mapped with their pages faulted in at once.  A big write txn
 *     takes a buffer for every page it changes, and a malloc and a page
 *     fault for each one were a large share of a bulk load's time
 *     (doc/benchmarks.md).  A chunk is as big as all before it, from
 *     PAGEBUF_CHUNK_MIN_BYTES to PAGEBUF_CHUNK_MAX_BYTES, so a one-put txn
 *     maps little and a big one maps few times.  Given-back buffers wait
 *     on a free list per length and are taken again first.  Longer runs
 *     come from malloc.
 *   - pagebuf_trim, at the end of each write txn, once every buffer is back:
 *     the chunks past PAGEBUF_KEEP_BYTES are unmapped, and the next txn
 *     carves the kept ones from their start.  pagebuf_pool_free unmaps all.
 *   - Under AddressSanitizer a buffer is poisoned while it is free, and a
 *     poisoned gap follows each, so that a write past a buffer or into a
 *     given-back one is reported as it is for malloc's buffers.
 *
 * Layer: above os.c only.
 */
#include <string.h>

#include "internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define PAGEBUF_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PAGEBUF_ASAN 1
#endif
#endif

#ifdef PAGEBUF_ASAN
#include <sanitizer/asan_interface.h>
#define GAP_BYTES 64 /* poisoned, after each buffer */
#else
#define GAP_BYTES 0
#define ASAN_POISON_MEMORY_REGION(p, n) ((void)(p), (void)(n))
#define ASAN_UNPOISON_MEMORY_REGION(p, n) ((void)(p), (void)(n))
#endif

static int map_chunk(struct pagebuf_pool *p, size_t stride)
{
    size_t bytes = p->mapped;
    if (bytes < PAGEBUF_CHUNK_MIN_BYTES)
        bytes = PAGEBUF_CHUNK_MIN_BYTES;
    if (bytes > PAGEBUF_CHUNK_MAX_BYTES)
        bytes = PAGEBUF_CHUNK_MAX_BYTES;
    if (bytes < stride) /* at least one buffer */
        bytes = stride;
    if (p->nchunks == p->chunks_cap) {
        size_t cap = p->chunks_cap ? 2 * p->chunks_cap : 8;
        struct pagebuf_chunk *v = os_realloc(p->chunks, cap * sizeof *v);
        if (!v)
            return KEEL_NOMEM;
        p->chunks = v;
        p->chunks_cap = cap;
    }
    uint8_t *base = os_map_anon(bytes);
    if (!base)
        return KEEL_NOMEM;
    ASAN_POISON_MEMORY_REGION(base, bytes);
    p->chunks[p->nchunks++] = (struct pagebuf_chunk){base, bytes};
    p->mapped += bytes;
    return 0;
}

/* The next untouched buffer of `bytes`: of the chunk being carved, else of
 * the next one kept, else of a new one (the rest of a chunk too short for
 * it stays unused until the trim). */
static uint8_t *carve(struct pagebuf_pool *p, size_t bytes)
{
    size_t stride = bytes + GAP_BYTES;
    for (;;) {
        if (p->carve_chunk == p->nchunks && map_chunk(p, stride))
            return NULL;
        struct pagebuf_chunk *c = &p->chunks[p->carve_chunk];
        if (p->carved + stride <= c->bytes) {
            uint8_t *b = c->base + p->carved;
            p->carved += stride;
            return b;
        }
        p->carve_chunk++;
        p->carved = 0;
    }
}

static bool pooled(uint32_t psize, uint32_t npages)
{
    return npages >= 1 && (size_t)npages * psize <= PAGEBUF_RUN_MAX_BYTES;
}

uint8_t *pagebuf_take(struct pagebuf_pool *p, uint32_t psize, uint32_t npages)
{
    size_t bytes = (size_t)npages * psize;
    uint8_t *b;
    if (!pooled(psize, npages)) {
        b = os_malloc(bytes);
    } else if ((b = p->free[npages])) {
        uint8_t *next;
        ASAN_UNPOISON_MEMORY_REGION(b, sizeof next);
        memcpy(&next, b, sizeof next);
        p->free[npages] = next;
    } else {
        b = carve(p, bytes);
    }
    if (!b)
        return NULL;
    ASAN_UNPOISON_MEMORY_REGION(b, bytes);
    p->out++;
    return b;
}

void pagebuf_give(struct pagebuf_pool *p, uint8_t *buf, uint32_t psize, uint32_t npages)
{
    KEEL_ASSERT(p->out > 0);
    p->out--;
    if (!pooled(psize, npages)) {
        os_free(buf);
        return;
    }
    uint8_t *next = p->free[npages];
    memcpy(buf, &next, sizeof next);
    ASAN_POISON_MEMORY_REGION(buf, (size_t)npages * psize);
    p->free[npages] = buf;
}

static void unmap_chunk(struct pagebuf_chunk *c)
{
    ASAN_UNPOISON_MEMORY_REGION(c->base, c->bytes); /* the range may be mapped again, for anything */
    os_unmap_anon(c->base, c->bytes);
}

void pagebuf_trim(struct pagebuf_pool *p)
{
    /* A write txn gives back every buffer it took before it ends; should
     * one be kept, all stays mapped until close (nothing is lost). */
    KEEL_ASSERT(p->out == 0);
    if (p->out)
        return;
    size_t keep = 0, kept_bytes = 0;
    while (keep < p->nchunks && kept_bytes + p->chunks[keep].bytes <= PAGEBUF_KEEP_BYTES)
        kept_bytes += p->chunks[keep++].bytes;
    for (size_t i = keep; i < p->nchunks; i++)
        unmap_chunk(&p->chunks[i]);
    p->nchunks = keep;
    p->mapped = kept_bytes;
    memset(p->free, 0, sizeof p->free); /* every buffer is free: carved again in order */
    p->carve_chunk = 0;
    p->carved = 0;
}

void pagebuf_pool_free(struct pagebuf_pool *p)
{
    for (size_t i = 0; i < p->nchunks; i++)
        unmap_chunk(&p->chunks[i]);
    os_free(p->chunks);
    *p = (struct pagebuf_pool){0};
}
