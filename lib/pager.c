/*
 * pager.c — meta pages, page access, dirty pages, and writing a commit out.
 *
 * Contract:
 *   - page_get() hands out a page for reading: the txn's own dirty copy if it
 *     has one, else the page in the map, after checking that the number is
 *     inside the snapshot and the page says it is that page.
 *   - Copy-on-write: a page reachable from a committed meta is never written.
 *     Which page a write gets is the allocator's choice (space.c: page_alloc,
 *     page_touch, page_free); this file only makes and drops the dirty
 *     buffers it asks for (pager_new_page, pager_drop_dirty, pager_own_buf)
 *     and moves the end of the file (pager_extend).  It never calls up.
 *   - pager_write_out() is the commit protocol: grow the file, write dirty
 *     pages in page order, write the meta into the slot the previous commit
 *     did not use.  Two syncs (pages, then meta) make the order durable; one
 *     sync suffices when the meta lists the pages it needs with their
 *     checksum (META_F_ONEFLUSH), because then keel_open can tell a torn
 *     commit (pager_verify_commit) and fall back to the previous meta, which
 *     was durable before this commit began.  fsync instead of fdatasync when
 *     the size changed.  A failed sync poisons the handle (KEEL_PANIC).
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "internal.h"


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
 * its time.  So single-page buffers a write txn lets go of are kept on
 * the handle, up to PAGEBUF_KEEP_BYTES, for the next one.  Only the writer
 * touches them (one write txn per handle at a time). */
static size_t pagebuf_max(const keel_db *db) { return PAGEBUF_KEEP_BYTES / db->psize; }

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

/* ---- metas ---- */
void meta_seal(struct meta *m) { m->checksum = XXH3_64bits(m, META_SUM_BYTES); }

/* A meta page for m that needs no check of its commit's pages (the copy
 * keel_close makes of a one-flush meta, and keel_copy's metas): no flag but
 * FREETAIL, no commit list, and the free tail `tail` (its header and words,
 * already checked against m's sum; NULL if m has none).  `out` is psize
 * zeroed bytes; returns the bytes to write. */
size_t meta_page_settled(uint32_t psize, const struct meta *m, const uint8_t *tail, uint8_t *out)
{
    struct meta s = *m;
    s.flags &= META_F_FREETAIL;
    s.commit_list_sum = 0;
    meta_seal(&s);
    memcpy(out, &s, META_SIZE);
    if (!tail)
        return 512;
    size_t off = meta_tail_off(psize), bytes = META_TAIL_HDR + (size_t)rd32(tail) * 8;
    memcpy(out + off, tail, bytes);
    return (off + bytes + 511) / 512 * 512;
}

int meta_check(const uint8_t *buf, size_t len, uint32_t expect_psize, struct meta *out)
{
    return meta_check_head(buf, len, expect_psize, out, true);
}

/* with_tail false: the meta alone, not its free tail (check.c tells a torn
 * tail from a damaged meta with it) */
int meta_check_head(const uint8_t *buf, size_t len, uint32_t expect_psize, struct meta *out, bool with_tail)
{
    if (len < META_SIZE)
        return KEEL_INVALID;
    struct meta m;
    memcpy(&m, buf, META_SIZE);
    if (m.magic != KEEL_MAGIC)
        return KEEL_INVALID;
    /* the checksum first: a garbled version field is damage (the other meta
     * takes over), not a newer library's meta (which refuses the open) */
    if (m.checksum != XXH3_64bits(&m, META_SUM_BYTES))
        return CORRUPT(0);
    if (m.version != KEEL_FORMAT_VERSION || (m.flags & ~META_F_KNOWN))
        return KEEL_VERSION; /* older or newer: not a format this library reads */
    if (m.page_size < KEEL_MIN_PAGE || m.page_size > KEEL_MAX_PAGE || (m.page_size & (m.page_size - 1)))
        return CORRUPT(0);
    if (expect_psize && m.page_size != expect_psize)
        return CORRUPT(0);
    if (m.npages < 2 || m.npages > (UINT64_MAX / m.page_size))
        return CORRUPT(0);
    if (m.txnid == UINT64_MAX) /* the next commit's id would wrap to 0 and lose to the other meta */
        return CORRUPT(0);
    if (with_tail && (m.flags & META_F_FREETAIL)) {
        /* The tail shares the meta's write: a meta whose tail does not match
         * its sum was torn (or damaged), and the other meta takes over. */
        size_t off = meta_tail_off(m.page_size);
        if (len < off + META_TAIL_HDR)
            return CORRUPT(0);
        uint32_t nwords = rd32(buf + off);
        size_t bytes = META_TAIL_HDR + (size_t)nwords * 8;
        if (rd32(buf + off + 4) || nwords > meta_tail_max_words(m.page_size) || len - off < bytes ||
            XXH3_64bits(buf + off, bytes) != m.free_tail_sum)
            return CORRUPT(0);
    }
    for (int i = 0; i < TREE_COUNT; i++) {
        const struct tree_desc *t = &m.trees[i];
        if (t->root == 1 || (t->root && t->root >= m.npages) || t->depth > KEEL_MAX_DEPTH ||
            (t->root == 0) != (t->depth == 0) || t->id)
            return CORRUPT(0);
    }
    *out = m;
    return 0;
}

/* Is m the meta the lock file's bad_meta names?  Only a one-flush meta can
 * be torn, so only one is ever named: a damaged or hostile lock file cannot
 * hide any other. */
bool meta_is_bad(const struct meta *m, uint64_t bad)
{
    return bad && m->checksum == bad && (m->flags & META_F_ONEFLUSH);
}

/* Which of two valid metas is the newest: the higher txn id; on a tie (a
 * one-flush meta and the copy keel_close made of it) the copy, which needs
 * no check of its pages; else a (slot 0). */
bool meta_newer(const struct meta *a, const struct meta *b)
{
    if (a->txnid != b->txnid)
        return a->txnid > b->txnid;
    return !(a->flags & META_F_ONEFLUSH) || (b->flags & META_F_ONEFLUSH);
}

int pager_newest_meta(keel_db *db, struct meta *out, unsigned *slot)
{
    struct meta a, b;
    int ra = meta_check(db->map, db->psize, db->psize, &a);
    int rb = meta_check(db->map + db->psize, db->psize, db->psize, &b);
    uint64_t bad = lockfile_bad_meta(&db->lock);
    if (bad) { /* a torn one-flush commit found at open: as if its meta were torn */
        if (!ra && meta_is_bad(&a, bad)) /* known since the open: nothing to record each time */
            ra = KEEL_CORRUPTED;
        if (!rb && meta_is_bad(&b, bad))
            rb = KEEL_CORRUPTED;
    }
    if (ra && rb)
        return CORRUPT(0);
    unsigned s = (!ra && (rb || meta_newer(&a, &b))) ? 0 : 1;
    *out = s == 0 ? a : b;
    if (slot)
        *slot = s;
    return 0;
}

/* A read txn's free tail, copied from its snapshot's meta page in the map
 * (a malloc'd header and words, or NULL if the snapshot has none).  The
 * snapshot's pages stay while the txn lives, but its meta page is
 * overwritten by the second commit after it: then KEEL_BUSY (begin again). */
int pager_snapshot_tail(keel_txn *txn, uint8_t **out)
{
    keel_db *db = txn->db;
    *out = NULL;
    if (!(txn->meta.flags & META_F_FREETAIL))
        return 0;
    size_t off = meta_tail_off(db->psize), max = META_TAIL_HDR + meta_tail_max_words(db->psize) * 8;
    uint8_t *t = os_malloc(max);
    if (!t)
        return KEEL_NOMEM;
    for (unsigned s = 0; s < 2; s++) {
        const uint8_t *page = db->map + (size_t)s * db->psize;
        if (memcmp(page, &txn->meta, META_SIZE))
            continue;
        memcpy(t, page + off, max);
        size_t bytes = META_TAIL_HDR + (size_t)rd32(t) * 8;
        /* still the same meta after the copy, and the copy matches its sum */
        if (!memcmp(page, &txn->meta, META_SIZE) && bytes <= max && XXH3_64bits(t, bytes) == txn->meta.free_tail_sum) {
            *out = t;
            return 0;
        }
    }
    os_free(t);
    return KEEL_BUSY;
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

/* ---- new and dropped dirty pages: the allocator's tools (space.c) ----
 * Which page to take is space.c's business; these make the buffers. */

/* Does this txn hold page pgno (in memory or spilled)? */
bool pager_is_dirty(keel_txn *txn, uint64_t pgno) { return dirty_find(&txn->dirty, pgno) != NULL; }

/* Grows the txn's pages by n at the end of the file (no file behind them
 * until the commit or a spill): *pgno the first.  KEEL_FULL past the map. */
int pager_extend(keel_txn *txn, uint32_t n, uint64_t *pgno)
{
    keel_db *db = txn->db;
    uint64_t pg = txn->meta.npages;
    if (pg + n > db->map_size / db->psize)
        return KEEL_FULL;
    txn->meta.npages += n;
    *pgno = pg;
    return 0;
}

/* A dirty buffer for npages pages at pgno: zero clears it all, else only
 * its header; the page number is set.  reused: the pages came from the
 * free list, and a damaged free tree can list a page twice: never two
 * buffers for one number (KEEL_CORRUPTED). */
int pager_new_page(keel_txn *txn, uint64_t pgno, uint32_t npages, bool zero, bool reused, uint8_t **buf)
{
    keel_db *db = txn->db;
    for (uint32_t i = 0; reused && i < npages; i++)
        if (dirty_find(&txn->dirty, pgno + i))
            return CORRUPT(pgno + i);
    size_t bytes = (size_t)npages * db->psize;
    uint8_t *b = pagebuf_get(db, npages);
    if (!b)
        return KEEL_NOMEM;
    memset(b, 0, zero ? bytes : PAGE_HDR);
    wr64(b + PH_PGNO, pgno);
    int rc = dirty_insert(&txn->dirty, pgno, npages, b);
    if (rc) {
        pagebuf_put(db, b, npages);
        return rc;
    }
    txn->dirty_bytes += bytes;
    *buf = b;
    return 0;
}

/* Drops this txn's dirty page (or run) at pgno, buffer and all: false if
 * the txn holds none there. */
bool pager_drop_dirty(keel_txn *txn, uint64_t pgno)
{
    struct dirty *d = dirty_find(&txn->dirty, pgno);
    if (!d)
        return false;
    if (d->buf)
        txn->dirty_bytes -= (size_t)d->npages * txn->db->psize;
    pagebuf_put(txn->db, d->buf, d->npages);
    dirty_remove(&txn->dirty, d);
    return true;
}

/* This txn's writable buffer for pgno, a spilled page read back into
 * memory at the same number; *buf NULL if the txn holds no such page. */
int pager_own_buf(keel_txn *txn, uint64_t pgno, uint8_t **buf)
{
    struct dirty *de = dirty_find(&txn->dirty, pgno);
    *buf = NULL;
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
    if (de)
        *buf = de->buf;
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
}

/* ---- file size ---- */
int pager_grow(keel_db *db, uint64_t need)
{
    if (need <= db->file_size)
        return 0;
    uint64_t target = need;
    uint64_t step = db->file_size / GROW_SHARE_DIV;
    if (target < db->file_size + step)
        target = db->file_size + step;
    target = (target + GROW_STEP_BYTES - 1) / GROW_STEP_BYTES * GROW_STEP_BYTES;
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
    uint64_t keep = (used + GROW_STEP_BYTES - 1) / GROW_STEP_BYTES * GROW_STEP_BYTES;
    if (db->file_size > keep + SHRINK_SLACK_STEPS * GROW_STEP_BYTES + db->file_size / GROW_SHARE_DIV) {
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
    txn->changes++; /* cursors holding page pointers look again */
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
    bool tail = txn->space.meta_pending.n > 0;
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
        size_t bytes = META_TAIL_HDR + txn->space.meta_pending.n * 8;
        wr32(t, (uint32_t)txn->space.meta_pending.n);
        for (size_t i = 0; i < txn->space.meta_pending.n; i++)
            wr64(t + META_TAIL_HDR + 8 * i, txn->space.meta_pending.v[i]);
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

/* At close, a one-flush commit of this handle's that is still the newest is
 * copied, flag cleared, into the other meta slot: both metas then hold that
 * commit, so the first open after a later crash has nothing to roll back
 * to, and damage to its pages reads as damage (KEEL_CORRUPTED), never as a
 * torn commit.  (A commit torn by a crash is always the newest one, so only
 * a process that did not close can leave one.)  Best effort: it does not
 * wait for another writer, whose commit supersedes this one anyway, and a
 * failure leaves the one-flush commit, durable, as the newest. */
void pager_confirm(keel_db *db)
{
    if (!db->unconfirmed || db->panic || db->fork_gen != os_fork_generation() || !db->map)
        return;
    if (lockfile_writer_trylock(&db->lock))
        return;
    struct meta m;
    unsigned slot;
    uint8_t *buf = os_calloc(db->psize);
    if (buf && pager_newest_meta(db, &m, &slot) == 0 && m.txnid == db->unconfirmed && (m.flags & META_F_ONEFLUSH)) {
        const uint8_t *tail = db->map + (size_t)slot * db->psize + meta_tail_off(db->psize);
        size_t len = meta_page_settled(db->psize, &m, (m.flags & META_F_FREETAIL) ? tail : NULL, buf);
        if (os_pwrite_full(db->fd, buf, len, (uint64_t)(1 - slot) * db->psize) == 0)
            (void)os_fdatasync(db->fd);
    }
    os_free(buf);
    lockfile_writer_unlock(&db->lock);
    db->unconfirmed = 0;
}

/* Is the one-flush commit of meta m (read from slot `slot`) whole in the
 * file?  Read with pread: keel_open calls it before the map exists, as the
 * sole user (no writer can change the pages meanwhile).  0 = whole,
 * KEEL_CORRUPTED = torn (or a damaged list), else an I/O error. */
int pager_verify_commit(int fd, uint64_t fsize, const struct meta *m, unsigned slot)
{
    uint32_t ps = m->page_size;
    if (m->npages > fsize / ps) /* the growth it needed did not survive */
        return CORRUPT(0);
    enum { CHUNK = 1 << 16 };
    uint8_t *buf = os_malloc(CHUNK > ps ? CHUNK : ps);
    if (!buf)
        return KEEL_NOMEM;
    size_t got;
    int rc = os_pread_upto(fd, buf, ps - META_LIST_OFF, (uint64_t)slot * ps + META_LIST_OFF, &got);
    if (rc)
        goto out;
    uint32_t nruns = rd32(buf);
    size_t list_len = META_LIST_HDR + (size_t)nruns * META_LIST_RUN;
    if (got != ps - META_LIST_OFF || nruns > meta_list_max_runs(ps, m->flags & META_F_FREETAIL) || rd32(buf + 4) ||
        XXH3_64bits(buf, list_len) != m->commit_list_sum) {
        rc = CORRUPT(0);
        goto out;
    }
    uint64_t want = rd64(buf + 8);
    size_t nr = nruns;
    uint64_t *runs = os_malloc((nr ? nr : 1) * 2 * sizeof(uint64_t));
    if (!runs) {
        rc = KEEL_NOMEM;
        goto out;
    }
    uint64_t end = 2;
    for (size_t i = 0; i < nr; i++) {
        runs[2 * i] = rd64(buf + META_LIST_HDR + i * META_LIST_RUN);
        runs[2 * i + 1] = rd64(buf + META_LIST_HDR + i * META_LIST_RUN + 8);
        /* ascending, inside the commit's pages (first < npages before npages - first) */
        if (runs[2 * i] < end || runs[2 * i] >= m->npages || runs[2 * i + 1] == 0 ||
            runs[2 * i + 1] > m->npages - runs[2 * i]) {
            os_free(runs);
            rc = CORRUPT(0);
            goto out;
        }
        end = runs[2 * i] + runs[2 * i + 1];
    }
    XXH3_state_t *sum = XXH3_createState();
    rc = sum ? 0 : KEEL_NOMEM;
    if (sum)
        XXH3_64bits_reset(sum);
    for (size_t i = 0; i < nr && !rc; i++) {
        uint64_t off = runs[2 * i] * ps, left = runs[2 * i + 1] * ps;
        while (left && !rc) {
            size_t n = left < CHUNK ? (size_t)left : CHUNK;
            if (!(rc = os_pread_upto(fd, buf, n, off, &got)) && got != n)
                rc = CORRUPT((off + got) / ps);
            XXH3_64bits_update(sum, buf, got);
            off += n;
            left -= n;
        }
    }
    if (!rc && XXH3_64bits_digest(sum) != want)
        rc = CORRUPT(0);
    XXH3_freeState(sum);
    os_free(runs);
out:
    os_free(buf);
    return rc;
}
