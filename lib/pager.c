/*
 * pager.c — page access, dirty pages and their buffers, spilling, file size,
 * and writing a commit out.
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
 *   - pager_write_out() is a commit's share of the commit protocol: grow the
 *     file, write dirty pages in page order (listing them with their sum:
 *     the commit list that lets a flush go out in one sync), build the meta
 *     page and publish it to the group commit (group.c), which syncs, writes
 *     it into a meta slot and makes it visible.
 *
 * Layer: above meta.c and group.c (os -> lockfile -> meta -> group ->
 * pager).  The commit write-out builds the meta page, seals it with
 * meta_seal and publishes it (calls down); nothing here reads or selects a
 * meta page.
 */
#include <errno.h>
#include <inttypes.h>
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

/* inlined: the hot caller is pager_new_page (journal_undo is the other) */
static inline __attribute__((always_inline)) int dirty_insert(struct dirty_table *t, struct dirty e)
{
    if ((t->count + 1) * 4 > t->cap * 3) {
        size_t cap = t->cap ? t->cap * 2 : DIRTY_TABLE_MIN_SLOTS;
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
    size_t i = hash_pgno(e.pgno, t->cap);
    while (t->slots[i].pgno)
        i = (i + 1) & (t->cap - 1);
    t->slots[i] = e;
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
 * A dirty page's buffer, or an overflow run's: the handle's pool's
 * (pagebuf.c). */
static uint8_t *pagebuf_get(keel_db *db, uint32_t npages) { return pagebuf_take(&db->pagebufs, db->psize, npages); }

static void pagebuf_put(keel_db *db, uint8_t *buf, uint32_t npages)
{
    if (buf)
        pagebuf_give(&db->pagebufs, buf, db->psize, npages);
}

/* ---- nested txns: the child's page journal ----
 * A child (txn->nest > 0, keel_begin_nested) works in its parent's dirty
 * table.  Each entry carries the level that made it or last saved it
 * (struct dirty.level).  The first time a child is about to change a page
 * of a lower level (pager_own_buf, from page_touch, which btree.c calls
 * for every dirty page it changes while nested) or frees one
 * (pager_drop_dirty), the journal keeps the page as it was: a copy of its
 * bytes, or its own buffer when it leaves the table, or "spilled, with
 * this sum".  Pages the child makes are listed too (level -1).
 *
 * Abort first drops the pages the child made, then puts the saved ones
 * back: the table never holds more entries than it held when the child
 * began, so it never grows, and the end cannot fail.  Commit relabels the
 * child's pages as its parent's and hands the parent the entries its own
 * abort needs (made pages, and saves of levels below the parent), freeing
 * the rest: work in proportion to what the child changed.  Nothing spills
 * while a child lives (pager_spill_due): a spill would write over the file
 * bytes of a lower level's spilled page, which its "spilled" save counts
 * on. */
struct page_save {
    uint64_t pgno, sum;
    uint8_t *buf; /* the bytes as they were (the journal's own); NULL: spilled then, or made */
    uint32_t npages;
    int level; /* the level the page had; -1: the child made it */
};

static int journal_room(struct nest_undo *u, size_t more)
{
    if (u->npages + more <= u->pages_cap)
        return 0;
    size_t cap = u->pages_cap ? u->pages_cap * 2 : 64;
    while (cap < u->npages + more)
        cap *= 2;
    struct page_save *v = os_realloc(u->pages, cap * sizeof(*v));
    if (!v)
        return KEEL_NOMEM;
    u->pages = v;
    u->pages_cap = cap;
    return 0;
}

/* d as it is, with buf: a copy of its bytes, or its own buffer when it
 * leaves the table; level -1 for a page the child made */
static int journal_push(keel_txn *txn, const struct dirty *d, uint8_t *buf, int level)
{
    int rc = journal_room(&txn->undo, 1);
    if (rc)
        return rc;
    txn->undo.pages[txn->undo.npages++] = (struct page_save){d->pgno, d->sum, buf, d->npages, level};
    return 0;
}

/* A lower level's page about to change: kept as it is, then it is this level's */
static int journal_save(keel_txn *txn, struct dirty *d)
{
    uint8_t *copy = NULL;
    size_t bytes = (size_t)d->npages * txn->db->psize;
    if (d->buf) {
        if (!(copy = pagebuf_get(txn->db, d->npages)))
            return KEEL_NOMEM;
        memcpy(copy, d->buf, bytes);
    }
    int rc = journal_push(txn, d, copy, d->level);
    if (rc) {
        pagebuf_put(txn->db, copy, d->npages);
        return rc;
    }
    d->level = txn->nest;
    return 0;
}

void pager_nest_begin(keel_txn *child, keel_txn *parent)
{
    pager_txn_free(child); /* a table the object kept from an earlier txn */
    child->dirty = parent->dirty;
    child->dirty_bytes = parent->dirty_bytes;
    child->undo.npages = 0;
}

int pager_nest_reserve(keel_txn *parent, const keel_txn *child)
{
    return parent->nest ? journal_room(&parent->undo, child->undo.npages) : 0;
}

/* Abort: the child's pages out, then the saved ones back as they were. */
static void journal_undo(keel_txn *parent, keel_txn *child)
{
    struct nest_undo *u = &child->undo;
    struct dirty_table *t = &parent->dirty;
    for (size_t i = 0; i < u->npages; i++) {
        struct dirty *d = dirty_find(t, u->pages[i].pgno);
        if (u->pages[i].level < 0 && d && d->level == child->nest) {
            pagebuf_put(parent->db, d->buf, d->npages);
            dirty_remove(t, d);
        }
    }
    for (size_t i = u->npages; i-- > 0;) {
        const struct page_save *e = &u->pages[i];
        if (e->level < 0)
            continue;
        struct dirty was = {e->pgno, e->npages, (uint8_t)e->level, e->buf, e->sum};
        struct dirty *d = dirty_find(t, e->pgno);
        if (d) {
            pagebuf_put(parent->db, d->buf, d->npages);
            *d = was;
        } else {
            int rc = dirty_insert(t, was); /* never grows: see above */
            KEEL_ASSERT(rc == 0);
            (void)rc;
        }
    }
}

void pager_nest_end(keel_txn *parent, keel_txn *child, bool commit)
{
    struct nest_undo *u = &child->undo;
    parent->dirty = child->dirty;
    memset(&child->dirty, 0, sizeof(child->dirty));
    if (!commit) { /* the parent's dirty_bytes is still what it was */
        journal_undo(parent, child);
        u->npages = 0;
        return;
    }
    parent->dirty_bytes = child->dirty_bytes;
    for (size_t i = 0; i < u->npages; i++) {
        struct page_save *e = &u->pages[i];
        struct dirty *d = dirty_find(&parent->dirty, e->pgno);
        if (d && d->level == child->nest)
            d->level = parent->nest;
        if (parent->nest && e->level < (int)parent->nest) /* its abort needs it: room reserved */
            parent->undo.pages[parent->undo.npages++] = *e;
        else
            pagebuf_put(parent->db, e->buf, e->npages);
    }
    u->npages = 0;
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

int pager_dirty_state(keel_txn *txn, uint64_t pgno, uint8_t **buf, uint64_t *sum)
{
    struct dirty *d = dirty_find(&txn->dirty, pgno);
    if (!d)
        return KEEL_NOTFOUND;
    *buf = d->buf;
    *sum = d->sum;
    return 0;
}

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
    int rc = dirty_insert(&txn->dirty, (struct dirty){pgno, npages, txn->nest, b, 0});
    if (!rc && txn->nest && (rc = journal_push(txn, &(struct dirty){pgno, npages, 0, NULL, 0}, NULL, -1)))
        dirty_remove(&txn->dirty, dirty_find(&txn->dirty, pgno));
    if (rc) {
        pagebuf_put(db, b, npages);
        return rc;
    }
    txn->dirty_bytes += bytes;
    *buf = b;
    return 0;
}

/* Drops this txn's dirty page (or run) at pgno, buffer and all; a nested
 * txn's journal keeps the buffer of a page of a lower level. */
int pager_drop_dirty(keel_txn *txn, uint64_t pgno, bool *dropped)
{
    struct dirty *d = dirty_find(&txn->dirty, pgno);
    *dropped = d != NULL;
    if (!d)
        return 0;
    if (d->level < txn->nest) {
        int rc = journal_push(txn, d, d->buf, d->level);
        if (rc) {
            *dropped = false;
            return rc;
        }
    } else {
        pagebuf_put(txn->db, d->buf, d->npages);
    }
    if (d->buf)
        txn->dirty_bytes -= (size_t)d->npages * txn->db->psize;
    dirty_remove(&txn->dirty, d);
    return 0;
}

/* This txn's writable buffer for pgno, a spilled page read back into
 * memory at the same number; *buf NULL if the txn holds no such page. */
int pager_own_buf(keel_txn *txn, uint64_t pgno, uint8_t **buf)
{
    struct dirty *de = dirty_find(&txn->dirty, pgno);
    *buf = NULL;
    int rc;
    if (de && de->level < txn->nest && (rc = journal_save(txn, de))) /* a lower level's page: kept as it is */
        return rc;
    if (de && !de->buf) { /* spilled: ours already, back into memory at the same number */
        const uint8_t *p;
        if (de->npages != 1 || pgno >= page_map_limit(txn))
            return CORRUPT(pgno);
        p = txn->db->map + pgno * txn->db->psize;
        if (!(de->buf = pagebuf_get(txn->db, 1)))
            return KEEL_NOMEM;
        memcpy(de->buf, p, txn->db->psize);
        de->sum = 0; /* in memory again: the txn changes it, the seal sums it again */
        txn->dirty_bytes += txn->db->psize;
    }
    if (de)
        *buf = de->buf;
    return 0;
}

/* The table's slots stay with the txn object for its next write txn,
 * emptied here (a one-put txn then allocates and clears no table), unless
 * a big txn grew it past DIRTY_TABLE_KEEP_SLOTS. */
void pager_txn_release(keel_txn *txn)
{
    struct dirty_table *t = &txn->dirty;
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i].pgno) {
            pagebuf_put(txn->db, t->slots[i].buf, t->slots[i].npages);
            t->slots[i] = (struct dirty){0, 0, 0, NULL, 0};
        }
    t->count = 0;
    if (t->cap > DIRTY_TABLE_KEEP_SLOTS)
        pager_txn_free(txn);
    txn->dirty_bytes = 0;
    pagebuf_trim(&txn->db->pagebufs);
}

void pager_txn_free(keel_txn *txn)
{
    os_free(txn->dirty.slots);
    memset(&txn->dirty, 0, sizeof(txn->dirty));
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
    group_set_file_size(db, target);
    return 0;
}

static bool shrink_worth(uint64_t size, uint64_t keep)
{
    return size > keep && size - keep > SHRINK_SLACK_STEPS * GROW_STEP_BYTES + size / GROW_SHARE_DIV;
}

void pager_maybe_shrink(keel_db *db, uint64_t used)
{
    if (used >= db->file_size)
        return;
    uint64_t keep = (used + GROW_STEP_BYTES - 1) / GROW_STEP_BYTES * GROW_STEP_BYTES;
    /* the shared size says so; the file's own says it again (a shrink is
     * rare, and a damaged lock file's size must not cut the file) */
    uint64_t real;
    if (!shrink_worth(db->file_size, keep) || os_file_size(db->fd, &real) || !shrink_worth(real, keep))
        return;
    /* Only pages no reader can see lie past `used`; failing to shrink is
     * harmless (the shared size stays below the real one) */
    group_set_file_size(db, keep);
    if (os_ftruncate(db->fd, keep) == 0)
        db->file_size = keep;
}

/* ---- pages known whole: KEEL_VERIFY's checks, and copy-on-write's ----
 * db->known holds (page number, sum) pairs whose bytes this handle has
 * seen: "whole" ones it sealed itself (pager_seal: keel built the page),
 * "matching" ones it hashed under KEEL_VERIFY and found equal to their
 * reference's sum.  The bytes at a page number change only when the page is
 * freed and reused, and every reference to the new bytes holds their new
 * sum, so an entry never vouches for bytes it did not see: no commit needs
 * to clear the table.  A txn under KEEL_VERIFY hashes no page with either
 * kind of entry.  A write txn copying a page for writing skips the
 * whole-page structure check (btree.c's check_nodes) only for a "whole"
 * one: a damaged or hostile file can carry right sums over a page keel
 * never built.  What the table cannot see is the file changing under keel
 * after an entry was made (a disk returning other bytes for a page still
 * in it, another program writing the file): keel check hashes every page,
 * every time.  Entries are one word each (a mix of number, sum and kind),
 * so threads share the table without locks and no entry is ever torn. */
static size_t known_slot(const keel_db *db, uint64_t pgno)
{
    return (size_t)((pgno * 0x9E3779B97F4A7C15ull) >> 32) & db->known_mask;
}
/* whole: sealed by this handle (keel built the page); else hashed and
 * matching (a file can carry right sums over a page keel never built) */
static uint64_t known_tag(uint64_t pgno, uint64_t sum, bool whole)
{
    uint64_t x = sum ^ (pgno * 0xC2B2AE3D27D4EB4Full) ^ (whole ? 0x9E3779B97F4A7C15ull : 0);
    x ^= x >> 31;
    return x | 1; /* 0: an empty slot */
}

int pager_known_init(keel_db *db)
{
    if (db->known || !db->summed)
        return 0;
    size_t slots = KNOWN_SLOTS_MIN;
    while (slots < KNOWN_SLOTS_MAX && slots < 2 * (db->file_size / db->psize))
        slots *= 2;
    if (!(db->known = os_calloc(slots * sizeof(uint64_t))))
        return KEEL_NOMEM;
    db->known_mask = slots - 1;
    return 0;
}

static uint64_t known_entry(const keel_db *db, uint64_t pgno)
{
    return atomic_load_explicit(&db->known[known_slot(db, pgno)], memory_order_relaxed);
}

bool page_known_whole(const keel_db *db, uint64_t pgno, uint64_t sum)
{
    return db->known && sum && known_entry(db, pgno) == known_tag(pgno, sum, true);
}

static bool page_known_matching(const keel_db *db, uint64_t pgno, uint64_t sum)
{
    return page_known_whole(db, pgno, sum) || (db->known && known_entry(db, pgno) == known_tag(pgno, sum, false));
}

static void page_set_known(keel_db *db, uint64_t pgno, uint64_t sum, bool whole)
{
    if (db->known)
        atomic_store_explicit(&db->known[known_slot(db, pgno)], known_tag(pgno, sum, whole), memory_order_relaxed);
}

/* ---- sums (format.h: the page trailer) ---- */
uint64_t page_sum(const uint8_t *p, size_t len)
{
    uint64_t h = hash_long(p, len - PT_SUM);
    return h ? h : 1; /* 0 says "no sum" in a reference */
}

uint64_t pager_seal(keel_txn *txn, uint8_t *buf, uint32_t npages)
{
    size_t len = (size_t)npages * txn->db->psize;
    KEEL_ASSERT(txn->db->summed);
    wr64(buf + len - PT_TXNID, txn->txnid);
    uint64_t sum = page_sum(buf, len);
    wr64(buf + len - PT_SUM, sum);
    page_set_known(txn->db, page_pgno(buf), sum, true);
    return sum;
}

int page_verify(keel_txn *txn, const uint8_t *page, uint64_t pgno, uint32_t npages, uint64_t sum)
{
    keel_db *db = txn->db;
    if (!page_in_map(db, page)) /* a buffer of this txn's */
        return 0;
    if (sum == 0) {
        if (!txn->rdonly && pager_is_dirty(txn, pgno)) /* spilled: ours, sealed at commit */
            return 0;
        error_detail_set("page %" PRIu64 ": its reference holds no checksum", pgno);
        return KEEL_CORRUPTED;
    }
    if (page_known_matching(db, pgno, sum))
        return 0;
    size_t len = (size_t)npages * db->psize;
    if (npages == 0 || pgno + npages > page_map_limit(txn) || pgno + npages < pgno)
        return CORRUPT(pgno);
    if (page_sum(page, len) != sum || page_trailer_sum(page, len) != sum) {
        error_detail_set("page %" PRIu64 ": checksum mismatch", pgno);
        return KEEL_CORRUPTED;
    }
    if (page_trailer_txnid(page, len) > (txn->rdonly ? txn->meta.txnid : txn->txnid)) {
        error_detail_set("page %" PRIu64 ": written after the snapshot", pgno);
        return KEEL_CORRUPTED;
    }
    page_set_known(db, pgno, sum, false);
    return 0;
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

/* Writes every dirty page that still has a buffer (with spill in a summed
 * file, every one seal_spill sealed), in page order, contiguous runs in one
 * os_pwritev_full.  With spill, the buffers are freed afterwards: the
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
        if (t->slots[i].pgno && t->slots[i].buf && (!spill || !db->summed || t->slots[i].sum))
            pg[n++] = t->slots[i].pgno;
    int rc = sort_u64(pg, n);
    for (size_t i = 0; i < n && !rc; i++) {
        v[i] = dirty_find(t, pg[i]);
        /* Dirty pages tile: every one lies inside the file the commit
         * describes (the allocator's invariant), and no two overlap, which
         * only a free list that handed out a page of a dirty overflow run
         * (damage) can break. */
        KEEL_ASSERT(v[i]->pgno >= 2 && v[i]->pgno + v[i]->npages <= txn->meta.npages);
        if (i && v[i - 1]->pgno + v[i - 1]->npages > v[i]->pgno)
            rc = CORRUPT(v[i]->pgno);
    }
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

/* Never in a nested txn: a spill would write over the file bytes of pages
 * a lower level spilled, which its journal counts on ("nested txns"). */
bool pager_spill_due(const keel_txn *txn) { return txn->dirty_bytes > txn->db->max_dirty && !txn->nest; }

int pager_each_dirty(keel_txn *txn, int (*fn)(keel_txn *txn, struct dirty *d, void *ctx), void *ctx)
{
    for (size_t i = 0; i < txn->dirty.cap; i++)
        if (txn->dirty.slots[i].pgno) {
            int rc = fn(txn, &txn->dirty.slots[i], ctx);
            if (rc)
                return rc;
        }
    return 0;
}

int pager_spill(keel_txn *txn)
{
    keel_db *db = txn->db;
    int rc = pager_grow(db, txn->meta.npages * db->psize); /* the file must be there to write into */
    if (rc || (rc = write_dirty(txn, true, NULL)))
        return rc;
    txn->changes++; /* cursors holding page pointers look again */
    return 0;
}

/* The commit's pages into the file, its meta page built and published to
 * the group commit (group.c), which makes it durable and visible. */
int pager_write_out(keel_txn *txn)
{
    keel_db *db = txn->db;
    uint64_t used = txn->meta.npages * db->psize;
    int rc = pager_grow(db, used);
    if (rc)
        return rc;
    bool sync = !(db->flags & KEEL_NOSYNC);
    bool metasync = sync && !(db->flags & KEEL_NOMETASYNC);
    uint8_t *mbuf = pagebuf_get(db, 1);
    if (!mbuf)
        return KEEL_NOMEM;
    /* The commit list lets the flush go out in one sync (group.c decides) */
    bool tail = txn->space.meta_pending.n > 0;
    struct commit_list cl = {.block = mbuf + META_LIST_OFF, .max_runs = meta_list_max_runs(db->psize, tail)};
    memset(mbuf, 0, db->psize);
    if ((rc = write_dirty(txn, false, metasync ? &cl : NULL)))
        goto out;
    size_t mlen = 512;
    txn->meta.txnid = txn->txnid;
    txn->meta.flags = (txn->meta.flags & META_F_STICKY) | (cl.ok ? META_F_ONEFLUSH : 0) | (tail ? META_F_FREETAIL : 0);
    txn->meta.commit_list_sum = 0;
    txn->meta.free_tail_sum = 0;
    if (cl.ok) {
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
    meta_encode(&txn->meta, mbuf);
    group_publish(db, mbuf, mlen, (sync ? GROUP_SYNC_DATA : 0) | (metasync ? GROUP_SYNC_META : 0));
    if ((rc = group_flush_now(db, txn->txnid)))
        goto out;
    /* Pages past `used` serve no snapshot of this commit, but until it is
     * durable a crash comes back to the fallback commit (or to the one this
     * txn began from): the file keeps what all of them need. */
    uint64_t floor = group_shrink_floor(db, txn->txnid - 1);
    uint64_t keep = floor > txn->snap_npages ? floor : txn->snap_npages;
    if (floor && keep <= db->file_size / db->psize) /* past the end: a damaged lock file's, no floor */
        pager_maybe_shrink(db, used > keep * db->psize ? used : keep * db->psize);
out:
    pagebuf_put(db, mbuf, 1);
    return rc;
}
