/*
 * freelist.c — free space on disk: the free tree and the meta's free tail.  With space.c (the allocator, which owns the txn's
 * free-space state, struct space) it is the space layer.
 *
 * Contract:
 *   - The free tree maps (txn id, chunk) -> a list of page numbers that txn
 *     stopped using.  Pages freed by txn T are visible to snapshots older
 *     than T, so the record may be reused once every reader's snapshot is
 *     >= T (T <= txn->oldest).  Records under txn id 0 hold pages that were
 *     already reusable when written (a txn's unused reusable pages).
 *   - Records are small (one leaf node, at most chunk_pages() numbers), so
 *     reclaiming one and writing back what is left costs O(chunk), never a
 *     pass over all free space (LMDB and bbolt rewrote or scanned theirs).
 *   - freelist_reclaim() is called by the allocator (space.c) when the
 *     reusable list has no fit.  It takes the first record (the lowest
 *     pages, see below), loads it into the reusable list first, then
 *     deletes it; pages that deletion needs come from that list (or the end
 *     of the file), never from another reclaim: space.c's re-entrancy rule.
 *   - The reusable list's leftovers are written as txn-id-0 records before
 *     the first one when they lie low, after the last one when they lie above
 *     the compaction target: reclaim hands out the lowest free pages first.
 *   - freelist_record() runs at commit; once it writes records it is
 *     "recording" (space.recording): no page enters the reusable list, new
 *     pages come off its low end (the end of the file only when it is empty:
 *     taking them there every commit kept the tail in use, so the file never
 *     shrank and grew a few pages per commit), and pages freed meanwhile join
 *     this txn's record.  Rewriting the records repeats until neither list
 *     changes; it converges because the reusable list only shrinks, a page is
 *     copied at most once per txn and a record rewrite of equal size is done
 *     in place.
 *   - The free tail (format.h) keeps a small commit off the free tree: when
 *     what the tree would get (the reusable list's leftovers, the pages this
 *     txn freed, the tail's groups not yet reusable) fits in the meta page's
 *     second half, it goes there, written with the meta, and the tree is not
 *     touched; a one-put commit then writes its path and the meta, not a
 *     free-tree leaf besides (a quarter fewer page writes, each a disk
 *     request of its own).  freelist_load_tail() runs at write-txn begin:
 *     groups every reader is past join the reusable list, the others stay
 *     pending in the meta (space.meta_pending).  When the lot does not fit,
 *     the tail's groups become free-tree records like any other (a txn whose
 *     pages went to the tail wrote no record, so their keys are new).
 *   - freelist_compact_target() is the page number live pages should lie
 *     below while much of the file is free (relocate.c moves them there);
 *     reclaim then prefers records below it.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void free_key(uint8_t k[FREE_KEY_SIZE], uint64_t txnid, uint32_t chunk)
{
    for (int i = 0; i < 8; i++)
        k[i] = (uint8_t)(txnid >> (56 - 8 * i));
    for (int i = 0; i < 4; i++)
        k[8 + i] = (uint8_t)(chunk >> (24 - 8 * i));
}

uint64_t free_key_txnid(const uint8_t *k)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | k[i];
    return v;
}

static uint32_t key_chunk(const uint8_t *k)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v = (v << 8) | k[8 + i];
    return v;
}

static size_t chunk_pages(const keel_txn *txn)
{
    return (txn->db->max_node - LEAF_HDR - FREE_KEY_SIZE) / 8;
}

/* A cursor on the free tree (the caller frees c->keybuf); false if the tree is empty. */
static bool free_cursor(keel_txn *txn, keel_cursor *c)
{
    struct tree_desc *ft = &txn->meta.trees[TREE_FREE];
    if (ft->root == 0)
        return false;
    memset(c, 0, sizeof(*c));
    cursor_init(c, txn, 0, ft);
    return true;
}

/* Is every page of a record at or above hi? */
static bool record_above(keel_val v, uint64_t hi)
{
    for (size_t i = 0; i + 8 <= v.len; i += 8)
        if (rd64((const uint8_t *)v.data + i) < hi)
            return false;
    return true;
}

/* The record to reclaim: the first one, but while the file is being
 * compacted (compact_target) and the first one lies wholly above the target,
 * the first commit's record when it is reclaimable: the reusable list's pages
 * below the target come first (write_reusable), so they are used up then, and
 * the pages commits freed since, those of the copies among them, lie behind
 * every txn-id-0 record. */
static int first_record(keel_txn *txn, keel_cursor *c, keel_val *k, keel_val *v)
{
    int rc = cursor_first(c, k, v);
    if (rc || k->len != FREE_KEY_SIZE || free_key_txnid(k->data) != 0)
        return rc;
    uint64_t hi = freelist_compact_target(txn);
    if (!hi || !record_above(*v, hi))
        return 0;
    uint8_t key[FREE_KEY_SIZE];
    free_key(key, 1, 0);
    rc = cursor_seek(c, (keel_val){key, FREE_KEY_SIZE}, k, v);
    if (rc == 0 && k->len == FREE_KEY_SIZE && free_key_txnid(k->data) <= txn->oldest)
        return 0;
    return rc && rc != KEEL_NOTFOUND ? rc : cursor_first(c, k, v);
}

/* Loads the first reclaimable record into the reusable list, then deletes
 * it from the tree (inside freelist_record's full load the record is only
 * appended: space.c's order window).  The delete is this layer's own
 * free-tree edit: space_edit_free_tree asserts the re-entrancy rule. */
int freelist_reclaim(keel_txn *txn)
{
    struct tree_desc *ft = &txn->meta.trees[TREE_FREE];
    keel_cursor c;
    if (!free_cursor(txn, &c))
        return KEEL_NOTFOUND;
    space_edit_free_tree(&txn->space, true);
    keel_val k, v;
    int rc = first_record(txn, &c, &k, &v);
    if (rc)
        goto out;
    if (k.len != FREE_KEY_SIZE || v.len % 8) {
        rc = CORRUPT(c.pgno[c.depth - 1]);
        goto out;
    }
    uint8_t key[FREE_KEY_SIZE];
    memcpy(key, k.data, FREE_KEY_SIZE);
    if (free_key_txnid(key) > txn->oldest) {
        rc = KEEL_NOTFOUND; /* a reader may still see these */
        goto out;
    }
    size_t n = v.len / 8;
    struct pgvec *pool = &txn->space.reusable;
    size_t start = pool->n;
    for (size_t i = 0; i < n; i++) {
        uint64_t pg = rd64((const uint8_t *)v.data + 8 * i);
        if (pg < 2 || pg >= txn->meta.npages) {
            pool->n = start;
            rc = CORRUPT(c.pgno[c.depth - 1]);
            goto out;
        }
        if ((rc = pgvec_push(pool, pg))) {
            pool->n = start;
            goto out;
        }
    }
    if (!txn->space.full_load)
        space_merge_reusable(&txn->space, start);
    if ((rc = bt_del(txn, ft, (keel_val){key, FREE_KEY_SIZE}, NULL)))
        goto out;
    txn->meta.free_pages -= n < txn->meta.free_pages ? n : txn->meta.free_pages;
out:
    cursor_release(&c);
    space_edit_free_tree(&txn->space, false);
    return rc;
}

/* Write the first n pages of *pv as records (txnid, first_chunk ...).  Each
 * chunk is copied out first: a bt_put may add to (and move) the vector. With
 * lowest_first (the reusable list, kept descending), chunks are cut from the
 * end of the vector, so the first record holds the lowest pages: reclaimed
 * first, they fill the file from the front and let its tail go. */
static int write_records(keel_txn *txn, uint64_t txnid, uint32_t first_chunk, const struct pgvec *pv, size_t n,
                         bool lowest_first)
{
    size_t per = chunk_pages(txn);
    uint8_t key[FREE_KEY_SIZE];
    uint64_t *buf = os_malloc(per * sizeof(uint64_t));
    if (!buf)
        return KEEL_NOMEM;
    int rc = 0;
    for (size_t i = 0, chunk = first_chunk; i < n && !rc; i += per, chunk++) {
        size_t cnt = n - i < per ? n - i : per;
        memcpy(buf, pv->v + (lowest_first ? n - i - cnt : i), cnt * sizeof(uint64_t));
        free_key(key, txnid, (uint32_t)chunk);
        rc = bt_put(txn, &txn->meta.trees[TREE_FREE], (keel_val){key, FREE_KEY_SIZE}, (keel_val){buf, cnt * 8}, 0,
                    0, NULL);
    }
    os_free(buf);
    return rc;
}

/* Txn-id-0 chunk numbers start here in an empty tree, so that there is
 * room on both sides: low pages go before the first chunk, high ones after
 * the last (write_reusable). */
#define ZERO_CHUNK_BASE 0x80000000u

/* The first and last txn-id-0 chunk numbers in the free tree; with none,
 * *first = ZERO_CHUNK_BASE and *last = *first - 1. */
static int zero_chunk_range(keel_txn *txn, uint32_t *first, uint32_t *last)
{
    *first = ZERO_CHUNK_BASE;
    *last = ZERO_CHUNK_BASE - 1;
    keel_cursor c;
    if (!free_cursor(txn, &c))
        return 0;
    keel_val k;
    int rc = cursor_first(&c, &k, NULL);
    if (rc == 0 && k.len == FREE_KEY_SIZE && free_key_txnid(k.data) == 0) {
        *first = key_chunk(k.data);
        uint8_t key[FREE_KEY_SIZE];
        free_key(key, 1, 0);
        rc = cursor_seek(&c, (keel_val){key, FREE_KEY_SIZE}, &k, NULL);
        if (rc == 0)
            rc = cursor_prev(&c, &k, NULL);
        else if (rc == KEEL_NOTFOUND)
            rc = cursor_last(&c, &k, NULL);
        if (rc == 0 && (k.len != FREE_KEY_SIZE || free_key_txnid(k.data) != 0))
            rc = CORRUPT(c.pgno[c.depth - 1]);
        if (rc == 0)
            *last = key_chunk(k.data);
    }
    cursor_release(&c);
    return rc == KEEL_NOTFOUND ? 0 : rc;
}

/* Records are written under this txn's id, which must be new to the tree: a
 * record of it or a later txn already there is damage (a commit's records
 * would overwrite it and lose its pages for ever). */
static int check_newest_record(keel_txn *txn)
{
    keel_cursor c;
    if (!free_cursor(txn, &c))
        return 0;
    keel_val k;
    int rc = cursor_last(&c, &k, NULL);
    if (rc == 0 && (k.len != FREE_KEY_SIZE || free_key_txnid(k.data) >= txn->txnid))
        rc = CORRUPT(c.pgno[c.depth - 1]);
    cursor_release(&c);
    return rc == KEEL_NOTFOUND ? 0 : rc;
}

static int record_in_tail(keel_txn *txn, bool *done);
static int tail_to_tree(keel_txn *txn);

/* The reusable list as txn-id-0 records, in two parts: its pages below the
 * compaction target (all of them when the file is compact) get chunk numbers
 * before the first txn-id-0 record, so that reclaim, which takes the first
 * record, hands out the lowest free pages first; the pages at or above the
 * target go after the last one, to be reused last and given back with the
 * file's tail.  (Appending every reusable list after the last record, as keel
 * did, let reuse sweep the whole file record by record: the live pages never
 * settled at its front, nor its tail emptied.) */
struct reusable_part {
    uint64_t hi;    /* the part holds the reusable pages below hi (parts[0]) or at or above it (parts[1]) */
    uint32_t base;  /* its first chunk number */
    size_t chunks;  /* chunk numbers it may use from base, and records it has there */
};

static size_t part_count(const struct pgvec *pool, uint64_t hi, bool high)
{
    size_t nh = 0; /* the list is descending: the high pages come first */
    while (nh < pool->n && pool->v[nh] >= hi)
        nh++;
    return high ? nh : pool->n - nh;
}

static int plan_reusable(keel_txn *txn, struct reusable_part parts[2])
{
    uint64_t hi = freelist_compact_target(txn);
    size_t per = chunk_pages(txn);
    uint32_t first, last;
    int rc = zero_chunk_range(txn, &first, &last);
    if (rc)
        return rc;
    size_t low = (part_count(&txn->space.reusable, hi ? hi : UINT64_MAX, false) + per - 1) / per;
    size_t high = (part_count(&txn->space.reusable, hi ? hi : UINT64_MAX, true) + per - 1) / per;
    parts[0] = (struct reusable_part){hi ? hi : UINT64_MAX, first - (uint32_t)low, low};
    parts[1] = (struct reusable_part){parts[0].hi, last + 1, high};
    if (low > first) { /* no room before the first record: after the last one too */
        parts[0].base = last + 1;
        parts[1].base = last + 1 + (uint32_t)low;
    }
    /* 2^31 chunk numbers on each side: a commit uses one or two */
    if ((uint64_t)parts[1].base + high > UINT32_MAX || (uint64_t)parts[0].base + low > UINT32_MAX)
        return KEEL_FULL;
    return 0;
}

/* Writes both parts of the reusable list as it is now; chunks a part no longer
 * needs (the reusable list shrank) are deleted. */
static int write_reusable(keel_txn *txn, struct reusable_part parts[2])
{
    struct pgvec *pool = &txn->space.reusable;
    size_t per = chunk_pages(txn), nh = part_count(pool, parts[0].hi, true);
    for (int i = 0; i < 2; i++) {
        struct reusable_part *p = &parts[i];
        /* the reusable list only shrinks in final mode, from its low end: each part's count never grows */
        struct pgvec sub = {.v = pool->v + (i ? 0 : nh), .n = i ? nh : pool->n - nh};
        int rc = sub.n ? write_records(txn, 0, p->base, &sub, sub.n, true) : 0;
        size_t now = (sub.n + per - 1) / per;
        for (size_t c = now; c < p->chunks && !rc; c++) {
            uint8_t key[FREE_KEY_SIZE];
            free_key(key, 0, (uint32_t)(p->base + c));
            rc = bt_del(txn, &txn->meta.trees[TREE_FREE], (keel_val){key, FREE_KEY_SIZE}, NULL);
            if (rc == KEEL_NOTFOUND)
                rc = 0;
        }
        if (rc)
            return rc;
        p->chunks = now;
    }
    return 0;
}

/* Step 1 of freelist_record: when much of the file is free, load a few
 * more records so the tail can be given back (bounded work per commit).
 * When most of it is free, or relocation has emptied the tail
 * (freelist_relocate), load every reclaimable record once: the free pages
 * at the end are then all reusable and the file shrinks in one commit.
 * That costs O(free space), so it backs off: tried again after 2, 4, 8 ...
 * commits (the free tree's own pages may still sit at the end the first
 * time), and from 2 again once the free space has grown by a quarter. */
static int load_more(keel_txn *txn)
{
    struct space_handle *h = &txn->db->space;
    uint64_t fp = txn->meta.free_pages;
    if (fp > h->full_load_free + h->full_load_free / SPACE_FULL_LOAD_RESET_GROWTH_DIV)
        h->full_load_backoff = 0, h->full_load_next = 0;
    bool all = (fp > txn->meta.npages / SPACE_FULL_LOAD_FREE_DIV || h->walk.reload) && txn->txnid >= h->full_load_next;
    if (all) {
        h->walk.reload = false;
        h->full_load_free = fp;
        h->full_load_backoff = h->full_load_backoff ? h->full_load_backoff * 2 : SPACE_FULL_LOAD_BACKOFF_FIRST;
        h->full_load_next = txn->txnid + h->full_load_backoff;
        txn->space.full_load = true; /* space.c's order window: until space_sort_reusable */
    }
    for (int i = 0; !txn->space.nothing_reclaimable &&
                    (all || (i < SPACE_EXTRA_RECLAIM_RECORDS &&
                             txn->meta.free_pages > txn->meta.npages / SPACE_EXTRA_RECLAIM_FREE_DIV));
         i++) {
        int rc = freelist_reclaim(txn);
        if (rc == KEEL_NOTFOUND)
            break;
        if (rc)
            return rc;
    }
    return all ? space_sort_reusable(&txn->space) : 0;
}

/* Step 2: free pages at the end of the file shrink it instead. */
static void trim_end(keel_txn *txn)
{
    struct pgvec *pool = &txn->space.reusable;
    size_t drop = 0;
    while (drop < pool->n && pool->v[drop] == txn->meta.npages - 1) {
        txn->meta.npages--;
        drop++;
    }
    if (drop) {
        memmove(pool->v, pool->v + drop, (pool->n - drop) * sizeof(uint64_t));
        pool->n -= drop;
    }
}

/* Step 5, recording: pages the free tree needs now come off the low end of
 * the reusable list (not the end of the file, which would keep the tail in
 * use for ever), so its records are rewritten until neither list changes.
 * Taking the lowest page shortens only the last chunk of the low part; a
 * chunk left empty is deleted. */
static int record_rounds(keel_txn *txn)
{
    struct pgvec *pool = &txn->space.reusable, *freed = &txn->space.freed_by_txn;
    struct reusable_part parts[2] = {{0}}; /* an empty list: nothing to write or delete */
    int rc;
    if (pool->n && (rc = plan_reusable(txn, parts)))
        return rc;
    size_t pool_written = (size_t)-1, freed_written = (size_t)-1;
    for (int round = 0; pool->n != pool_written || freed->n != freed_written; round++) {
        if (round > SPACE_RECORD_ROUNDS_MAX)
            return CORRUPT(0); /* cannot happen: see the contract above */
        if (pool->n != pool_written) {
            pool_written = pool->n;
            if ((rc = write_reusable(txn, parts)))
                return rc;
            continue; /* the reusable list first: it can only shrink */
        }
        freed_written = freed->n;
        if (freed_written && (rc = sort_u64(freed->v, freed_written))) /* low pages in the first record */
            return rc;
        if (freed_written && (rc = write_records(txn, txn->txnid, 0, freed, freed_written, false)))
            return rc;
    }
    txn->meta.free_pages += pool->n + freed->n;
    return 0;
}

int freelist_record(keel_txn *txn)
{
    /* the top of a commit: neither guard of the re-entrancy rule is up */
    KEEL_ASSERT(!txn->space.editing_free_tree && !txn->space.recording && !txn->space.full_load);
    int rc = check_newest_record(txn);
    if (rc || (rc = load_more(txn)))
        return rc;
    trim_end(txn);
    bool in_tail;
    if ((rc = record_in_tail(txn, &in_tail)) || in_tail)
        return rc;
    txn->space.recording = true;
    if ((rc = tail_to_tree(txn)))
        return rc;
    return record_rounds(txn);
}

/* ---- the free tail ---- */

/* Checks the words of a free tail and calls fn for each group (txn id,
 * page numbers as little-endian u64s, count); KEEL_CORRUPTED if the groups
 * do not add up or name a page outside [2, npages) or a txn after txnid_max. */
int freelist_tail_groups(const uint8_t *w, size_t nwords, uint64_t npages, uint64_t txnid_max,
                         int (*fn)(void *ctx, uint64_t txnid, const uint8_t *pages, size_t n), void *ctx)
{
    size_t i = 0;
    while (i < nwords) {
        if (nwords - i < 2)
            return CORRUPT(0);
        uint64_t txnid = rd64(w + 8 * i), n = rd64(w + 8 * i + 8);
        i += 2;
        if (txnid > txnid_max || n == 0 || n > nwords - i)
            return CORRUPT(0);
        for (size_t j = 0; j < n; j++) {
            uint64_t pg = rd64(w + 8 * (i + j));
            if (pg < 2 || pg >= npages)
                return CORRUPT(0);
        }
        int rc = fn(ctx, txnid, w + 8 * i, (size_t)n);
        if (rc)
            return rc;
        i += (size_t)n;
    }
    return 0;
}

static int push_group(struct pgvec *pv, uint64_t txnid, const uint64_t *pages, size_t n)
{
    int rc = pgvec_push(pv, txnid);
    if (!rc)
        rc = pgvec_push(pv, n);
    for (size_t i = 0; i < n && !rc; i++)
        rc = pgvec_push(pv, pages[i]);
    return rc;
}

/* Reusable groups into the reusable list (as freelist_reclaim does with a record),
 * the rest into txn->space.meta_pending. */
static int load_group(void *ctx, uint64_t txnid, const uint8_t *pages, size_t n)
{
    keel_txn *txn = ctx;
    bool reusable = txnid <= txn->oldest;
    struct pgvec *pv = reusable ? &txn->space.reusable : &txn->space.meta_pending;
    size_t start = pv->n;
    int rc = reusable ? 0 : pgvec_push(pv, txnid);
    if (!rc && !reusable)
        rc = pgvec_push(pv, n);
    for (size_t i = 0; i < n && !rc; i++)
        rc = pgvec_push(pv, rd64(pages + 8 * i));
    if (rc)
        return rc;
    if (reusable) {
        space_merge_reusable(&txn->space, start);
        txn->meta.free_pages -= n < txn->meta.free_pages ? n : txn->meta.free_pages;
    }
    return 0;
}

int freelist_load_tail(keel_txn *txn, const uint8_t *meta_page)
{
    if (!(txn->meta.flags & META_F_FREETAIL))
        return 0;
    const uint8_t *t = meta_page + meta_tail_off(txn->db->psize);
    return freelist_tail_groups(t + META_TAIL_HDR, rd32(t), txn->meta.npages, txn->meta.txnid, load_group, txn);
}

/* Pages from the tail's pending groups as free-tree records (final mode). */
static int tail_to_tree(keel_txn *txn)
{
    struct pgvec *t = &txn->space.meta_pending;
    size_t n = t->n;
    t->n = 0; /* consumed: pages the records need never come from it */
    for (size_t i = 0; i + 2 <= n;) {
        struct pgvec g = {.v = t->v + i + 2, .n = (size_t)t->v[i + 1]};
        int rc = write_records(txn, t->v[i], 0, &g, g.n, false);
        if (rc)
            return rc;
        i += 2 + g.n;
    }
    return 0;
}

/* The tail path of freelist_record: *done if everything fit in the tail. */
static int record_in_tail(keel_txn *txn, bool *done)
{
    struct pgvec *t = &txn->space.meta_pending, *pool = &txn->space.reusable, *freed = &txn->space.freed_by_txn;
    size_t words = t->n + (pool->n ? 2 + pool->n : 0) + (freed->n ? 2 + freed->n : 0);
    *done = false;
    if (words > meta_tail_max_words(txn->db->psize))
        return 0;
    int rc = 0;
    if (pool->n) /* kept descending; the order within a group does not matter */
        rc = push_group(t, 0, pool->v, pool->n);
    if (!rc && freed->n)
        rc = push_group(t, txn->txnid, freed->v, freed->n);
    if (rc)
        return rc;
    txn->meta.free_pages += pool->n + freed->n;
    pool->n = 0;
    freed->n = 0;
    *done = true;
    return 0;
}

/* The page number every live page should lie below, or 0 when the file is
 * compact enough.  Half the live pages again, and some, stay free below
 * it: room for the pages recent commits freed (not reusable yet) and for
 * the copies themselves. */
uint64_t freelist_compact_target(const keel_txn *txn)
{
    uint64_t npages = txn->meta.npages, free = txn->meta.free_pages + txn->space.reusable.n + txn->space.freed_by_txn.n;
    if (free + 2 > npages || free <= npages / COMPACT_FREE_DIV || free * txn->db->psize < COMPACT_MIN_FREE_BYTES)
        return 0;
    uint64_t live = npages - 2 - free, hi = 2 + live + live / 2 + COMPACT_SLACK_BYTES / txn->db->psize;
    return hi < npages ? hi : 0;
}
