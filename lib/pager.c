/*
 * pager.c — page access, allocation, and writing a commit out.
 *
 * Contract:
 *   - page_get() hands out a page for reading: the txn's own dirty copy if it
 *     has one, else the page in the map, after checking that the number is
 *     inside the snapshot and the page says it is that page.
 *   - Copy-on-write: a page reachable from a committed meta is never written.
 *     page_touch() gives a dirty copy under a new number and records the old
 *     number as freed by this txn.
 *   - Allocation takes, in order: the txn's pool of reusable pages (its
 *     lowest first), a record reclaimed from the free tree (pages no reader
 *     can see any more), the end of the file.  page_alloc_below takes from
 *     the pool alone, below a given page (relocation moves pages only down).
 *   - pager_write_out() is the commit protocol: grow the file, write dirty
 *     pages in page order, write the meta into the slot the previous commit
 *     did not use.  Two syncs (pages, then meta) make the order durable; one
 *     sync suffices when the meta lists the pages it needs with their
 *     checksum (META_F_ONEFLUSH), because then keel_open can tell a torn
 *     commit (meta_verify_commit) and fall back to the previous meta, which
 *     was durable before this commit began.  fsync instead of fdatasync when
 *     the size changed.  A failed sync poisons the handle (KEEL_PANIC).
 *
 * Layer: above meta.c (os -> lockfile -> meta -> pager), which checks,
 * seals and selects the meta pages.  The commit write-out builds the meta
 * page it writes and seals it with meta_seal (a call down); nothing here
 * reads or selects a meta page.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "internal.h"

#define GROW_STEP ((uint64_t)1 << 20) /* file size moves in whole MiB */

/* ---- small containers ---- */
int pgvec_push(struct pgvec *pv, uint64_t pgno)
{
    if (pv->n == pv->cap) {
        size_t cap = pv->cap ? pv->cap * 2 : 64;
        uint64_t *v = os_realloc(pv->v, cap * sizeof(uint64_t));
        if (!v)
            return KEEL_NOMEM;
        pv->v = v;
        pv->cap = cap;
    }
    pv->v[pv->n++] = pgno;
    return 0;
}

void pgvec_free(struct pgvec *pv)
{
    os_free(pv->v);
    memset(pv, 0, sizeof(*pv));
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Ascending, in place.  A commit sorts its dirty and freed page numbers,
 * a thousand or more each: qsort's call through a comparator per compare
 * is a visible share of a batch commit, a radix sort (8 bits a pass, as
 * many passes as the largest number needs) a small fraction of it. */
int sort_u64(uint64_t *v, size_t n)
{
    if (n < 64) {
        qsort(v, n, sizeof(uint64_t), cmp_u64);
        return 0;
    }
    uint64_t max = 0;
    for (size_t i = 0; i < n; i++)
        max |= v[i];
    uint64_t *tmp = os_malloc(n * sizeof(uint64_t));
    if (!tmp)
        return KEEL_NOMEM;
    uint64_t *src = v, *dst = tmp;
    for (unsigned shift = 0; shift < 64 && (max >> shift); shift += 8) {
        size_t count[257] = {0};
        for (size_t i = 0; i < n; i++)
            count[((src[i] >> shift) & 0xff) + 1]++;
        for (int d = 0; d < 256; d++)
            count[d + 1] += count[d];
        for (size_t i = 0; i < n; i++)
            dst[count[(src[i] >> shift) & 0xff]++] = src[i];
        uint64_t *x = src;
        src = dst;
        dst = x;
    }
    if (src != v)
        memcpy(v, src, n * sizeof(uint64_t));
    os_free(tmp);
    return 0;
}

static size_t hash_pgno(uint64_t pgno, size_t cap) { return (size_t)((pgno * 0x9E3779B97F4A7C15ull) >> 20) & (cap - 1); }

static struct dirty *dirty_find(struct dirty_table *t, uint64_t pgno)
{
    if (!t->cap || pgno == 0) /* 0 marks an empty slot: a damaged pointer to page 0 must not find one */
        return NULL;
    for (size_t i = hash_pgno(pgno, t->cap);; i = (i + 1) & (t->cap - 1)) {
        if (t->slots[i].pgno == pgno)
            return &t->slots[i];
        if (t->slots[i].pgno == 0)
            return NULL;
    }
}

static int dirty_insert(struct dirty_table *t, uint64_t pgno, uint32_t npages, uint8_t *buf)
{
    if ((t->count + 1) * 4 > t->cap * 3) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        struct dirty *s = os_calloc(cap * sizeof(*s));
        if (!s)
            return KEEL_NOMEM;
        for (size_t i = 0; i < t->cap; i++) {
            if (!t->slots[i].pgno)
                continue;
            size_t j = hash_pgno(t->slots[i].pgno, cap);
            while (s[j].pgno)
                j = (j + 1) & (cap - 1);
            s[j] = t->slots[i];
        }
        os_free(t->slots);
        t->slots = s;
        t->cap = cap;
    }
    size_t i = hash_pgno(pgno, t->cap);
    while (t->slots[i].pgno)
        i = (i + 1) & (t->cap - 1);
    t->slots[i] = (struct dirty){pgno, npages, buf};
    t->count++;
    return 0;
}

static void dirty_remove(struct dirty_table *t, struct dirty *d)
{
    /* backward-shift deletion keeps probe chains intact */
    size_t i = (size_t)(d - t->slots);
    for (;;) {
        t->slots[i].pgno = 0;
        size_t j = i;
        for (;;) {
            j = (j + 1) & (t->cap - 1);
            if (!t->slots[j].pgno) {
                t->count--;
                return;
            }
            size_t home = hash_pgno(t->slots[j].pgno, t->cap);
            /* move j back to i unless its home lies cyclically in (i, j] */
            bool stays = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
            if (!stays)
                break;
        }
        t->slots[i] = t->slots[j];
        i = j;
    }
}

/* ---- page buffers ----
 * Dirty pages live in psize buffers from the heap.  A commit of a thousand
 * random puts takes and frees over a thousand of them, and at that rate
 * malloc's search of a fragmented heap for 4 KiB chunks is a large share of
 * its time (doc/benchmarks.md).  So single-page buffers a write txn lets go of are kept on
 * the handle, up to PAGEBUF_KEEP bytes, for the next one.  Only the writer
 * touches them (one write txn per handle at a time). */
#define PAGEBUF_KEEP ((size_t)8 << 20)

static size_t pagebuf_max(const keel_db *db) { return PAGEBUF_KEEP / db->psize; }

static uint8_t *pagebuf_get(keel_db *db, uint32_t npages)
{
    if (npages == 1 && db->npagebufs)
        return db->pagebufs[--db->npagebufs];
    return os_malloc((size_t)npages * db->psize);
}

static void pagebuf_put(keel_db *db, uint8_t *buf, uint32_t npages)
{
    if (!buf)
        return;
    if (npages == 1 && !db->pagebufs)
        db->pagebufs = os_malloc(pagebuf_max(db) * sizeof(*db->pagebufs));
    if (npages == 1 && db->pagebufs && db->npagebufs < pagebuf_max(db))
        db->pagebufs[db->npagebufs++] = buf;
    else
        os_free(buf);
}

void pager_free_pagebufs(keel_db *db)
{
    while (db->npagebufs)
        os_free(db->pagebufs[--db->npagebufs]);
    os_free(db->pagebufs);
    db->pagebufs = NULL;
}

/* ---- page access ---- */
uint8_t *page_dirty(keel_txn *txn, uint64_t pgno)
{
    struct dirty *d = dirty_find(&txn->dirty, pgno);
    return d ? d->buf : NULL;
}

/* Pages readable through the map.  A write txn's npages also counts the
 * pages it took at the end of the file, which have no file behind them
 * until its commit: a number there that is not dirty (any more) is reached
 * only through damage, and the map would answer SIGBUS. */
uint64_t page_map_limit(const keel_txn *txn)
{
    uint64_t n = txn->meta.npages;
    if (!txn->rdonly && n > txn->db->file_size / txn->db->psize)
        n = txn->db->file_size / txn->db->psize;
    return n;
}

int page_get(keel_txn *txn, uint64_t pgno, const uint8_t **out)
{
    if (!txn->rdonly && txn->dirty.count) {
        struct dirty *d = dirty_find(&txn->dirty, pgno);
        if (d && d->buf) { /* a spilled page (buf NULL) is read from the file */
            *out = d->buf;
            return 0;
        }
    }
    if (pgno < 2 || pgno >= (txn->rdonly ? txn->meta.npages : page_map_limit(txn)))
        return CORRUPT(pgno);
    const uint8_t *p = txn->db->map + pgno * txn->db->psize;
    if (page_pgno(p) != pgno)
        return CORRUPT(pgno);
    *out = p;
    return 0;
}

/* The pool's index of the lowest page of its lowest run of n consecutive
 * numbers, or SIZE_MAX.  The pool is kept sorted descending, so a run is
 * v[i-(n-1)] .. v[i] == v[i]+(n-1) .. v[i], and the search starts at the
 * low end. */
static size_t pool_find_run(const struct pgvec *pool, uint32_t n)
{
    if (n == 0 || pool->n < n)
        return SIZE_MAX;
    for (size_t i = pool->n; i-- >= n;) {
        size_t lo = i - (n - 1); /* index of the highest number in the window */
        if (pool->v[lo] - pool->v[i] == n - 1)
            return i;
        if (i < n)
            break;
    }
    return SIZE_MAX;
}

static void pool_remove_run(struct pgvec *pool, size_t i, uint32_t n)
{
    size_t lo = i - (n - 1);
    memmove(&pool->v[lo], &pool->v[i + 1], (pool->n - i - 1) * sizeof(uint64_t));
    pool->n -= n;
}

/* Takes a run of n consecutive page numbers from the pool; single pages
 * come off the end, which is the lowest number, so the file fills from the
 * front and its tail can be given back. */
static bool pool_take(struct pgvec *pool, uint32_t n, uint64_t *pgno)
{
    if (pool->n == 0)
        return false;
    if (n == 1) {
        *pgno = pool->v[--pool->n];
        return true;
    }
    size_t i = pool_find_run(pool, n);
    if (i == SIZE_MAX)
        return false;
    *pgno = pool->v[i];
    pool_remove_run(pool, i, n);
    return true;
}

bool page_pool_below(const keel_txn *txn, size_t n, uint64_t below)
{
    const struct pgvec *p = &txn->pool;
    return n == 0 || (p->n >= n && p->v[p->n - n] < below);
}

static int alloc_pages(keel_txn *txn, uint32_t npages, uint64_t *pgno, uint8_t **buf, bool zero, uint64_t below);

int page_alloc(keel_txn *txn, uint32_t npages, uint64_t *pgno, uint8_t **buf)
{
    return alloc_pages(txn, npages, pgno, buf, npages == 1, 0);
}

/* A run of npages pages from the pool alone, ending at or below `below`
 * (KEEL_NOTFOUND if the pool has none): the relocation of freelist.c moves
 * an overflow run only down, and never makes the file longer for it.  Only
 * the header is cleared: the caller copies the run whole. */
int page_alloc_below(keel_txn *txn, uint32_t npages, uint64_t below, uint64_t *pgno, uint8_t **buf)
{
    return alloc_pages(txn, npages, pgno, buf, false, below ? below : 1);
}

/* zero: clear the whole buffer (a page built from scratch must not carry
 * heap garbage to disk); else only the header (the caller fills it all).
 * below: 0, or take the pages from the pool alone, ending at or below it. */
static int alloc_pages(keel_txn *txn, uint32_t npages, uint64_t *pgno, uint8_t **buf, bool zero, uint64_t below)
{
    keel_db *db = txn->db;
    uint64_t pg = 0;
    bool found = false;
    if (below) {
        size_t i = pool_find_run(&txn->pool, npages);
        if (i == SIZE_MAX || txn->pool.v[i] + npages > below)
            return KEEL_NOTFOUND;
        pg = txn->pool.v[i];
        pool_remove_run(&txn->pool, i, npages);
        found = true;
    } else if (!txn->final_mode) {
        found = pool_take(&txn->pool, npages, &pg);
        while (!found && !txn->reclaiming && !txn->reclaim_exhausted) {
            int rc = freelist_reclaim(txn);
            if (rc == KEEL_NOTFOUND) {
                txn->reclaim_exhausted = true;
                break;
            }
            if (rc)
                return rc;
            found = pool_take(&txn->pool, npages, &pg);
            if (!found && npages > 1 && txn->pool.n > 4096)
                break; /* a long run is not forming: take fresh pages */
        }
    } else if (npages == 1) {
        /* recording the free list: the lowest pooled page (freelist_record
         * rewrites the pool's records after) */
        found = pool_take(&txn->pool, 1, &pg);
    }
    if (!found) {
        pg = txn->meta.npages;
        if (pg + npages > db->map_size / db->psize)
            return KEEL_FULL;
        txn->meta.npages += npages;
    } else {
        /* a damaged free tree can list a page twice: never two buffers for one number */
        for (uint32_t i = 0; i < npages; i++)
            if (dirty_find(&txn->dirty, pg + i))
                return CORRUPT(pg + i);
    }
    size_t bytes = (size_t)npages * db->psize;
    uint8_t *b = pagebuf_get(db, npages);
    if (!b)
        return KEEL_NOMEM;
    memset(b, 0, zero ? bytes : PAGE_HDR);
    wr64(b + PH_PGNO, pg);
    int rc = dirty_insert(&txn->dirty, pg, npages, b);
    if (rc) {
        pagebuf_put(db, b, npages);
        return rc;
    }
    txn->dirty_bytes += bytes;
    *pgno = pg;
    *buf = b;
    return 0;
}

int page_free(keel_txn *txn, uint64_t pgno, uint32_t npages)
{
    struct dirty *d = dirty_find(&txn->dirty, pgno);
    if (d) { /* written only by this txn: nobody else can see it */
        if (d->buf)
            txn->dirty_bytes -= (size_t)d->npages * txn->db->psize;
        pagebuf_put(txn->db, d->buf, d->npages);
        dirty_remove(&txn->dirty, d);
        if (!txn->final_mode) {
            for (uint32_t i = 0; i < npages; i++) {
                int rc = pgvec_push(&txn->pool, pgno + i);
                if (rc)
                    return rc;
            }
            /* keep the pool sorted descending */
            struct pgvec *p = &txn->pool;
            for (size_t i = p->n - npages; i < p->n; i++) {
                uint64_t v = p->v[i];
                size_t j = i;
                while (j > 0 && p->v[j - 1] < v) {
                    p->v[j] = p->v[j - 1];
                    j--;
                }
                p->v[j] = v;
            }
            return 0;
        }
    }
    for (uint32_t i = 0; i < npages; i++) {
        int rc = pgvec_push(&txn->freed, pgno + i);
        if (rc)
            return rc;
    }
    return 0;
}

int page_touch(keel_txn *txn, uint64_t pgno, uint64_t *newpgno, uint8_t **buf)
{
    struct dirty *de = dirty_find(&txn->dirty, pgno);
    if (de && !de->buf) { /* spilled: ours already, back into memory at the same number */
        const uint8_t *p;
        if (de->npages != 1 || pgno >= page_map_limit(txn))
            return CORRUPT(pgno);
        p = txn->db->map + pgno * txn->db->psize;
        if (!(de->buf = pagebuf_get(txn->db, 1)))
            return KEEL_NOMEM;
        memcpy(de->buf, p, txn->db->psize);
        txn->dirty_bytes += txn->db->psize;
    }
    if (de) {
        *newpgno = pgno;
        *buf = de->buf;
        return 0;
    }
    const uint8_t *old;
    int rc = page_get(txn, pgno, &old);
    if (rc)
        return rc;
    uint64_t np;
    uint8_t *b;
    if ((rc = alloc_pages(txn, 1, &np, &b, false, 0)))
        return rc;
    if (np == pgno) /* a damaged free tree gave out the page being copied: freeing it would free the copy */
        return CORRUPT(pgno);
    memcpy(b, old, txn->db->psize);
    wr64(b + PH_PGNO, np);
    if ((rc = page_free(txn, pgno, 1)))
        return rc;
    *newpgno = np;
    *buf = b;
    return 0;
}

void pager_txn_release(keel_txn *txn)
{
    struct dirty_table *t = &txn->dirty;
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i].pgno)
            pagebuf_put(txn->db, t->slots[i].buf, t->slots[i].npages);
    os_free(t->slots);
    memset(t, 0, sizeof(*t));
    txn->dirty_bytes = 0;
    pgvec_free(&txn->freed);
    pgvec_free(&txn->pool);
    pgvec_free(&txn->tail);
}

/* ---- file size ---- */
int pager_grow(keel_db *db, uint64_t need)
{
    if (need <= db->file_size)
        return 0;
    uint64_t target = need;
    uint64_t step = db->file_size / 8;
    if (target < db->file_size + step)
        target = db->file_size + step;
    target = (target + GROW_STEP - 1) / GROW_STEP * GROW_STEP;
    if (target > db->map_size)
        target = db->map_size;
    if (target < need)
        return KEEL_FULL;
    int rc = os_ftruncate(db->fd, target);
    if (rc)
        return rc == EFBIG || rc == ENOSPC ? KEEL_FULL : rc;
    db->file_size = target;
    return 0;
}

void pager_maybe_shrink(keel_db *db, uint64_t used)
{
    uint64_t keep = (used + GROW_STEP - 1) / GROW_STEP * GROW_STEP;
    if (db->file_size > keep + 2 * GROW_STEP + db->file_size / 8) {
        /* Only pages no reader can see lie past `used`; failing to shrink is harmless. */
        if (os_ftruncate(db->fd, keep) == 0)
            db->file_size = keep;
    }
}

/* ---- commit ---- */
/* The page list of a one-flush commit, built by write_dirty inside the meta
 * page's buffer (format.h: the commit list). */
struct commit_list {
    uint8_t *block; /* META_LIST_HDR, then the runs */
    size_t max_runs, nruns;
    uint64_t pages;
    bool ok; /* every page of the commit is listed and summed */
};

/* A one-flush commit is checked by reading its pages back at the first open
 * after a crash; bigger commits take the second sync instead, which costs
 * them little, so that this check stays short. */
#define ONEFLUSH_MAX_BYTES ((uint64_t)8 << 20)

static bool list_add(struct commit_list *cl, uint64_t first, uint64_t count)
{
    cl->pages += count;
    if (cl->nruns) {
        uint8_t *last = cl->block + META_LIST_HDR + (cl->nruns - 1) * META_LIST_RUN;
        if (rd64(last) + rd64(last + 8) == first) {
            wr64(last + 8, rd64(last + 8) + count);
            return true;
        }
    }
    if (cl->nruns == cl->max_runs)
        return false;
    uint8_t *r = cl->block + META_LIST_HDR + cl->nruns++ * META_LIST_RUN;
    wr64(r, first);
    wr64(r + 8, count);
    return true;
}

/* Writes every dirty page that still has a buffer, in page order, contiguous
 * runs in one os_pwritev_full.  With spill, the buffers are freed afterwards: the
 * pages now live in the file (at numbers no snapshot can see) until the txn
 * touches them again.  With cl, also lists and sums the pages when they fit
 * (cl->ok); pages spilled earlier were not kept to sum, so then they don't. */
static int write_dirty(keel_txn *txn, bool spill, struct commit_list *cl)
{
    keel_db *db = txn->db;
    struct dirty_table *t = &txn->dirty;
    struct dirty **v = os_malloc((t->count ? t->count : 1) * sizeof(*v));
    uint64_t *pg = os_malloc((t->count ? t->count : 1) * sizeof(uint64_t));
    if (!v || !pg) {
        os_free(v);
        os_free(pg);
        return KEEL_NOMEM;
    }
    /* in page order: sort the numbers, then look each one up again */
    size_t n = 0;
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i].pgno && t->slots[i].buf)
            pg[n++] = t->slots[i].pgno;
    int rc = sort_u64(pg, n);
    for (size_t i = 0; i < n && !rc; i++)
        v[i] = dirty_find(t, pg[i]);
    os_free(pg);
    if (rc) {
        os_free(v);
        return rc;
    }
    XXH3_state_t *sum = NULL;
    if (cl) {
        cl->ok = n == t->count;
        cl->nruns = 0;
        cl->pages = 0;
        for (size_t i = 0; i < n && cl->ok; i++)
            cl->ok = list_add(cl, v[i]->pgno, v[i]->npages) && cl->pages <= ONEFLUSH_MAX_BYTES / db->psize;
        if (cl->ok && !(sum = XXH3_createState())) {
            os_free(v);
            return KEEL_NOMEM;
        }
        if (cl->ok)
            XXH3_64bits_reset(sum);
    }
    enum { MAXIOV = 64 };
    struct iovec iov[MAXIOV];
    for (size_t i = 0; i < n && !rc;) {
        uint64_t start = v[i]->pgno, next = start;
        int cnt = 0;
        while (i < n && cnt < MAXIOV && v[i]->pgno == next) {
            iov[cnt].iov_base = v[i]->buf;
            iov[cnt].iov_len = (size_t)v[i]->npages * db->psize;
            if (sum)
                XXH3_64bits_update(sum, iov[cnt].iov_base, iov[cnt].iov_len);
            next += v[i]->npages;
            cnt++;
            i++;
        }
        rc = cnt == 1 ? os_pwrite_full(db->fd, iov[0].iov_base, iov[0].iov_len, start * db->psize)
                      : os_pwritev_full(db->fd, iov, cnt, start * db->psize);
        if (rc)
            rc = rc == EFBIG || rc == ENOSPC ? KEEL_FULL : rc;
    }
    if (sum) {
        wr32(cl->block, (uint32_t)cl->nruns);
        wr32(cl->block + 4, 0);
        wr64(cl->block + 8, XXH3_64bits_digest(sum));
        XXH3_freeState(sum);
    }
    if (!rc && spill)
        for (size_t i = 0; i < n; i++) {
            txn->dirty_bytes -= (size_t)v[i]->npages * db->psize;
            pagebuf_put(db, v[i]->buf, v[i]->npages);
            v[i]->buf = NULL;
        }
    os_free(v);
    return rc;
}

int pager_maybe_spill(keel_txn *txn)
{
    keel_db *db = txn->db;
    if (txn->dirty_bytes <= db->max_dirty)
        return 0;
    int rc = pager_grow(db, txn->meta.npages * db->psize); /* the file must be there to write into */
    if (rc || (rc = write_dirty(txn, true, NULL)))
        return rc;
    txn->gen++; /* cursors holding page pointers look again */
    return 0;
}

static int sync_or_panic(keel_db *db, bool full)
{
    if (full ? os_fsync(db->fd) : os_fdatasync(db->fd)) {
        db->panic = 1;
        return KEEL_PANIC;
    }
    if (full)
        db->synced_size = db->file_size;
    return 0;
}

int pager_write_out(keel_txn *txn)
{
    keel_db *db = txn->db;
    uint64_t used = txn->meta.npages * db->psize;
    int rc = pager_grow(db, used);
    if (rc)
        return rc;
    /* any size change since the last sync (even one a failed commit made);
     * fdatasync does not make a size change durable everywhere */
    bool grew = db->file_size != db->synced_size;
    bool sync = !(db->flags & KEEL_NOSYNC);
    bool metasync = sync && !(db->flags & KEEL_NOMETASYNC);
    uint8_t *mbuf = pagebuf_get(db, 1);
    if (!mbuf)
        return KEEL_NOMEM;
    memset(mbuf, 0, db->psize);
    /* One flush for pages and meta when the meta can vouch for the pages (its
     * commit list) and the meta before it is durable: that is what a torn
     * commit falls back to. */
    bool tail = txn->tail.n > 0;
    struct commit_list cl = {.block = mbuf + META_LIST_OFF, .max_runs = meta_list_max_runs(db->psize, tail)};
    bool try_one = metasync && !(txn->meta.flags & META_F_UNSYNCED);
    if ((rc = write_dirty(txn, false, try_one ? &cl : NULL)))
        goto out;
    bool one = try_one && cl.ok;
    if (sync && !one && (rc = sync_or_panic(db, grew)))
        goto out;
    size_t mlen = 512;
    txn->meta.txnid = txn->txnid;
    txn->meta.flags = (one ? META_F_ONEFLUSH : metasync ? 0 : META_F_UNSYNCED) | (tail ? META_F_FREETAIL : 0);
    txn->meta.commit_list_sum = 0;
    txn->meta.free_tail_sum = 0;
    if (one) {
        size_t list_len = META_LIST_HDR + cl.nruns * META_LIST_RUN;
        txn->meta.commit_list_sum = XXH3_64bits(cl.block, list_len);
        mlen = (META_LIST_OFF + list_len + 511) / 512 * 512;
    }
    if (tail) { /* freelist_record made it fit */
        uint8_t *t = mbuf + meta_tail_off(db->psize);
        size_t bytes = META_TAIL_HDR + txn->tail.n * 8;
        wr32(t, (uint32_t)txn->tail.n);
        for (size_t i = 0; i < txn->tail.n; i++)
            wr64(t + META_TAIL_HDR + 8 * i, txn->tail.v[i]);
        txn->meta.free_tail_sum = XXH3_64bits(t, bytes);
        mlen = (meta_tail_off(db->psize) + bytes + 511) / 512 * 512;
    }
    meta_seal(&txn->meta);
    memcpy(mbuf, &txn->meta, META_SIZE);
    /* Into the slot the txn's snapshot does not hold: that meta stays whole
     * whatever becomes of this write.  (Not by txn id: a damaged or hostile
     * file can hold a snapshot's meta in the slot its id's parity names.) */
    if ((rc = os_pwrite_full(db->fd, mbuf, mlen, (uint64_t)(1 - txn->meta_slot) * db->psize))) {
        /* the meta may be half written, or whole in the page cache: we cannot
         * tell the caller "not committed" truthfully any more */
        db->panic = 1;
        rc = KEEL_PANIC;
        goto out;
    }
    if (metasync && (rc = sync_or_panic(db, one && grew)))
        goto out;
    db->unconfirmed = one ? txn->txnid : 0;
    /* The slot of a meta found torn at open has just been overwritten. */
    if (lockfile_bad_meta(&db->lock))
        lockfile_set_bad_meta(&db->lock, 0);
    /* Without a meta sync the previous meta may be the one a crash brings
     * back: keep the file long enough for it. */
    uint64_t keep = used;
    if (!metasync && txn->snap_npages * db->psize > keep)
        keep = txn->snap_npages * db->psize;
    pager_maybe_shrink(db, keep);
out:
    pagebuf_put(db, mbuf, 1);
    return rc;
}
