/*
 * relocate.c — giving the file's tail back after a long reader.
 *
 * Contract:
 *   - freelist_relocate() runs at commit, before the last bucket_flush,
 *     while over a third of the file is free: it moves a bounded number of
 *     live pages from above the compaction target (freelist.c) to free pages
 *     below it (bt_move_high), from the reusable list only, so the file
 *     never grows for it; once a pass over every tree has moved pages, a
 *     later commit loads the whole free list and the emptied tail is
 *     trimmed.  No work at all while the file is compact.
 *   - It walks every tree, named buckets too: it sits above bucket.c in the
 *     layer order (bucket_with_tree reaches a bucket's tree without making a
 *     handle), and below txn.c, which calls it.  Its budgets are tuning.h's
 *     COMPACT_*.
 */
#include <string.h>

#include "internal.h"

/* ---- giving the file's tail back: relocation ----
 * A reader held through many commits pins the pages they copied, so the file
 * grows; once it ends, those pages are free, but the live pages of the last
 * commits sit among them, up to the end of the file, and only a free tail is
 * cut off.  So while much of the file is free, each write commit also moves a
 * few live pages from the upper part of the file to the lowest free pages
 * (bt_move_high: the ordinary copy-on-write of the path to them), walking
 * every tree a little further each commit.  When a pass over all trees has
 * moved pages, the next commit loads the whole free list (freelist_record),
 * the free pages at the end reach the reusable list and the tail is trimmed.
 * The copies are ordinary changes of this txn: they reach the disk, or not,
 * with its commit, and pages a snapshot can see are never reused, as for any
 * copy. */

/* The walk's order: buckets before the catalog, whose pages their new
 * roots change anyway, the free tree last. */
enum { WALK_DEFAULT, WALK_BUCKETS, WALK_EXPIRY, WALK_CATALOG, WALK_FREE, WALK_TREES };

/* Loads free-tree records (the first, with the lowest pages) until the
 * reusable list holds n pages below hi or the commit's record budget is
 * spent. */
static int compact_room(keel_txn *txn, uint64_t hi, size_t n, int *records)
{
    while (!page_pool_below(txn, n, hi) && *records > 0 && !txn->space.nothing_reclaimable) {
        (*records)--;
        int rc = freelist_reclaim(txn);
        if (rc == KEEL_NOTFOUND)
            txn->space.nothing_reclaimable = true;
        else if (rc)
            return rc;
    }
    return 0;
}

/* The named bucket to walk: w->name, or the next one after it (after it
 * when w->name_done); *found false when none is left. */
static int walk_bucket(keel_txn *txn, struct space_walk *w, bool *found)
{
    *found = false;
    if (txn->meta.trees[TREE_CATALOG].root == 0)
        return 0;
    keel_cursor c;
    memset(&c, 0, sizeof(c));
    cursor_init(&c, txn, 0, &txn->meta.trees[TREE_CATALOG]);
    keel_val k;
    /* "name\0" sorts right after "name": a key of the next bucket, if any */
    int rc = w->namelen ? cursor_seek(&c, (keel_val){w->name, w->namelen + w->name_done}, &k, NULL)
                        : cursor_first(&c, &k, NULL);
    if (rc == 0 && (k.len == 0 || k.len > KEEL_MAX_BUCKET_NAME || memchr(k.data, 0, k.len)))
        rc = CORRUPT(c.pgno[c.depth - 1]);
    if (rc == 0) {
        if (w->name_done || k.len != w->namelen || memcmp(k.data, w->name, k.len)) {
            memcpy(w->name, k.data, k.len); /* a new one: from its start */
            w->name[k.len] = 0;
            w->namelen = (uint32_t)k.len;
            w->name_done = false;
            memset(w->pos, 0, sizeof(w->pos));
        }
        *found = true;
    }
    cursor_release(&c);
    return rc == KEEL_NOTFOUND ? 0 : rc;
}

/* The tree the walk is in: *t an internal tree, or NULL with *bucket true
 * for the named bucket w->name (bucket_with_tree reaches it), or neither:
 * none left in this phase. */
static int walk_tree(keel_txn *txn, struct space_walk *w, struct tree_desc **t, bool *bucket)
{
    static const int internal[WALK_TREES] = {TREE_DEFAULT, -1, TREE_EXPIRY, TREE_CATALOG, TREE_FREE};
    *t = NULL;
    *bucket = false;
    if (w->tree == WALK_BUCKETS)
        return walk_bucket(txn, w, bucket);
    *t = &txn->meta.trees[internal[w->tree]];
    return 0;
}

struct move_args {
    struct space_walk *w;
    struct bt_mover *m;
    int *records;
    bool done;
};

/* One tree's share of the pass, from where the walk stopped in it. */
static int move_tree(keel_txn *txn, struct tree_desc *t, void *ctx)
{
    struct move_args *a = ctx;
    int rc = compact_room(txn, a->m->hi, t->depth + 1, a->records);
    if (rc)
        return rc;
    memcpy(a->m->pos, a->w->pos, sizeof(a->m->pos));
    a->m->stalled = false;
    /* no reclaim while the free tree's own pages move (the reusable list has room) */
    bool own = a->w->tree == WALK_FREE;
    if (own)
        space_edit_free_tree(&txn->space, true);
    rc = bt_move_high(txn, t, a->m, &a->done);
    if (own)
        space_edit_free_tree(&txn->space, false);
    memcpy(a->w->pos, a->m->pos, sizeof(a->m->pos));
    return rc;
}

/* The walk is through with its tree: on to the next one; after the last,
 * a pass has ended.  If it moved pages, the next commit loads the whole free
 * list, which trims the tail that emptied (when what this commit freed is
 * reusable); that costs O(free space), so at most once per
 * COMPACT_RELOAD_COMMITS (a small database's pass takes one commit).  If it
 * only left overflow runs above the target (no run free below it in the
 * reusable list), that load sorts the free list, lowest pages first, so that
 * the next pass may find runs; a second such pass in a row rests
 * COMPACT_IDLE_COMMITS instead, as does a pass that found nothing. */
static void walk_next(keel_txn *txn, struct space_walk *w, bool tree_left)
{
    memset(w->pos, 0, sizeof(w->pos));
    if (w->tree == WALK_BUCKETS && tree_left) {
        w->name_done = true;
        return;
    }
    w->namelen = 0;
    w->name_done = false;
    if (++w->tree < WALK_TREES)
        return;
    w->tree = 0;
    bool want = w->moved || (w->skipped && !w->skipped_before);
    w->skipped_before = !w->moved && w->skipped;
    w->skipped = 0;
    if (!want) {
        w->idle_until = txn->txnid + COMPACT_IDLE_COMMITS;
    } else if (txn->txnid >= w->reload_next) {
        w->reload = true;
        w->reload_next = txn->txnid + COMPACT_RELOAD_COMMITS;
        txn->db->space.full_load_backoff = 0;
        txn->db->space.full_load_next = txn->txnid + 1;
        w->moved = 0;
    } /* else the moves count towards the next pass's request */
}

int freelist_relocate(keel_txn *txn)
{
    /* the top of a commit: neither guard of the re-entrancy rule is up */
    KEEL_ASSERT(!txn->space.editing_free_tree && !txn->space.recording);
    struct space_walk *w = &txn->db->space.walk;
    uint64_t hi = freelist_compact_target(txn);
    if (!hi || txn->txnid < w->idle_until)
        return 0;
    if (w->tree >= WALK_TREES)
        w->tree = 0;
    struct bt_mover m = {.hi = hi, .reads = COMPACT_READ_PAGES, .copies = COMPACT_COPY_PAGES,
                         .copies_max = COMPACT_COPY_PAGES};
    int records = COMPACT_RECLAIM_RECORDS, rc = 0;
    /* at most one pass per commit: a small database is through in one */
    for (int trees = 0; trees < WALK_TREES && m.reads && m.copies;) {
        struct tree_desc *t;
        bool bucket;
        if ((rc = walk_tree(txn, w, &t, &bucket)))
            break;
        if (!t && !bucket) {
            walk_next(txn, w, false);
            trees++;
            continue;
        }
        m.reads--; /* finding the tree (a bucket's: a catalog search) */
        struct move_args a = {.w = w, .m = &m, .records = &records, .done = true}; /* done: a bucket gone is done */
        rc = bucket ? bucket_with_tree(txn, w->name, move_tree, &a) : move_tree(txn, t, &a);
        w->moved += m.moved;
        w->skipped += m.skipped;
        m.moved = m.skipped = 0;
        if (rc || (m.stalled && (records == 0 || txn->space.nothing_reclaimable)))
            break;
        if (m.stalled)
            continue; /* more records, then the same tree again */
        if (!a.done)
            break;
        walk_next(txn, w, w->tree == WALK_BUCKETS);
        trees += w->tree != WALK_BUCKETS || !w->name_done;
    }
    return rc;
}
