/*
 * pagebuf.c — the writer's single-page buffers: where a write txn's dirty
 * pages live in memory.
 *
 * Contract:
 *   - pagebuf_take hands out a buffer of one page (psize bytes, 64-byte
 *     aligned, contents undefined); pagebuf_give takes it back.  Only a
 *     handle's writer calls them (one write txn at a time): nothing locks.
 *   - Buffers are carved from chunks of anonymous memory mapped with their
 *     pages faulted in at once.  A big write txn takes a buffer for every
 *     page it changes, and a malloc and a page fault for each one were a
 *     large share of a bulk load's time (doc/benchmarks.md).  A chunk is as
 *     big as all before it, from PAGEBUF_CHUNK_MIN_BYTES to
 *     PAGEBUF_CHUNK_MAX_BYTES, so a one-put txn maps little and a big one
 *     maps few times.  Given-back buffers are taken again first.
 *   - pagebuf_trim, at the end of each write txn, once every buffer is back:
 *     the chunks past PAGEBUF_KEEP_BYTES are unmapped, and the next txn
 *     carves the kept ones from their start.  pagebuf_pool_free unmaps all.
 *   - Under AddressSanitizer a buffer is poisoned while it is free, and a
 *     poisoned gap follows each, so that a write past a page or into a
 *     given-back buffer is reported as it is for malloc's buffers.
 *   - Runs of several pages (big values) are pager.c's, from malloc.
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
    bytes = (bytes + stride - 1) / stride * stride; /* at least one buffer */
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

/* The next untouched buffer: of the chunk being carved, else of the next
 * one kept, else of a new one. */
static uint8_t *carve(struct pagebuf_pool *p, uint32_t psize)
{
    size_t stride = (size_t)psize + GAP_BYTES;
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

uint8_t *pagebuf_take(struct pagebuf_pool *p, uint32_t psize)
{
    uint8_t *b = p->free;
    if (b) {
        ASAN_UNPOISON_MEMORY_REGION(b, sizeof b);
        memcpy(&p->free, b, sizeof b);
    } else if (!(b = carve(p, psize))) {
        return NULL;
    }
    ASAN_UNPOISON_MEMORY_REGION(b, psize);
    p->out++;
    return b;
}

void pagebuf_give(struct pagebuf_pool *p, uint8_t *buf, uint32_t psize)
{
    KEEL_ASSERT(p->out > 0);
    memcpy(buf, &p->free, sizeof p->free);
    ASAN_POISON_MEMORY_REGION(buf, psize);
    p->free = buf;
    p->out--;
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
    p->free = NULL; /* every buffer is free: carved again in order */
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
