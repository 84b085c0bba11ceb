/*
 * space.c — the allocator: which page a write txn gets, and where a page it
 * lets go of goes.  It owns the txn's free-space state (struct space in
 * internal.h); freelist.c, the other half of this layer, keeps that state
 * on disk (the free tree and the meta's free tail).  pager.c below it only
 * makes and drops dirty buffers and grows npages (pager_new_page,
 * pager_drop_dirty, pager_extend); it never decides which page.
 *
 * Contract:
 *   - page_alloc() takes, in order: the reusable list (its lowest page; a
 *     run of n consecutive pages for an overflow value), a record reclaimed
 *     from the free tree (freelist_reclaim: pages no reader can see any
 *     more), the end of the file.  page_alloc_below() takes from the
 *     reusable list alone, below a given page (relocation moves pages only
 *     down, and never lengthens the file for it).
 *   - page_free(): a page this txn allocated is nobody else's, so it is
 *     reusable at once (except while recording, see below); any other
 *     page older snapshots may still read, so it goes to freed_by_txn and
 *     becomes reusable only through the commit's record.
 *   - page_touch() is copy-on-write: this txn's own page is changed in
 *     place, any other is copied to a newly allocated page and freed.
 *   - Order: `reusable` is kept descending, so a single page pops off its
 *     end as the lowest number and the file fills from the front (its tail
 *     can then be given back).  The one window where it is not is
 *     freelist_record's full load (space.full_load): records are appended
 *     as they come and the list is sorted once at the end (merging each
 *     cost O(list) a record, and a long reader leaves thousands of small
 *     ones).  Inside the window only single pages are taken (the reclaims'
 *     deletes from the free tree), and any reusable page is a right answer
 *     for those.  KEEL_ASSERT checks the order, O(1) at each change,
 *     outside the window.
 *
 * The re-entrancy rule (the engine's only loop: btree -> space -> btree).
 *   An allocation may reclaim a free-tree record, and a reclaim deletes
 *   that record through btree.c, which allocates, touches and frees pages
 *   in turn.  The loop stops after one turn: while the space layer itself
 *   edits the free tree (space.editing_free_tree: a reclaim's delete, or
 *   relocation moving the free tree's own pages) or records the free list
 *   at commit (space.recording), an allocation never reclaims: it takes
 *   from the reusable list or the end of the file.  So reclaim is never
 *   entered twice, nor from inside a free-tree edit of this layer's own:
 *   space_edit_free_tree() asserts that on entry, as do freelist_record()
 *   and freelist_relocate(), which run at the top of a commit.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* O(1): the last two pages, where pops and merges happen, are in order
 * (equal only through a damaged free tree listing a page twice, which the
 * allocator answers with KEEL_CORRUPTED). */
static inline void assert_order(const struct space *s)
{
    KEEL_ASSERT(s->full_load || s->reusable.n < 2 || s->reusable.v[s->reusable.n - 2] >= s->reusable.v[s->reusable.n - 1]);
}

bool space_reusable_in_order(const struct space *s)
{
    for (size_t i = 1; i < s->reusable.n; i++)
        if (s->reusable.v[i - 1] < s->reusable.v[i])
            return false;
    return true;
}

void space_txn_begin(struct space *s)
{
    s->recording = s->editing_free_tree = s->nothing_reclaimable = s->full_load = false;
}

void space_txn_release(struct space *s)
{
    pgvec_free(&s->freed_by_txn);
    pgvec_free(&s->reusable);
    pgvec_free(&s->meta_pending);
}

void space_edit_free_tree(struct space *s, bool on)
{
    /* the re-entrancy rule (contract above): never nested, never while recording */
    KEEL_ASSERT(on ? !s->editing_free_tree && !s->recording : s->editing_free_tree);
    s->editing_free_tree = on;
}

/* ---- nested txns ----
 * A child takes over its parent's free-space state.  Of the three lists,
 * meta_pending changes only at begin and commit (never in a child),
 * freed_by_txn only grows in a child (its length is its undo), and the
 * reusable list is reordered as well as appended to: it is saved whole,
 * but only when the child first changes it (alloc_pages, page_free), so a
 * child that allocates nothing costs nothing here. */
void space_nest_begin(keel_txn *child, keel_txn *parent)
{
    const struct space *s = &parent->space;
    KEEL_ASSERT(!s->recording && !s->editing_free_tree && !s->full_load); /* a commit's windows */
    child->space = *s;
    child->undo.reusable_saved = false;
    child->undo.freed_begin = s->freed_by_txn.n;
}

static __attribute__((noinline)) int save_reusable(keel_txn *txn)
{
    struct nest_undo *u = &txn->undo;
    const struct pgvec *r = &txn->space.reusable;
    if (r->n > u->reusable.cap) {
        uint64_t *v = os_realloc(u->reusable.v, r->n * sizeof(uint64_t));
        if (!v)
            return KEEL_NOMEM;
        u->reusable.v = v;
        u->reusable.cap = r->n;
    }
    if (r->n)
        memcpy(u->reusable.v, r->v, r->n * sizeof(uint64_t));
    u->reusable.n = r->n;
    u->reusable_saved = true;
    return 0;
}

/* Before a change of the reusable list: one test outside a child */
static inline int save_for_child(keel_txn *txn)
{
    return txn->nest && !txn->undo.reusable_saved ? save_reusable(txn) : 0;
}

void space_nest_end(keel_txn *parent, keel_txn *child, bool commit)
{
    struct nest_undo *u = &child->undo, *pu = &parent->undo;
    struct space *s = &child->space, *ps = &parent->space;
    if (commit) {
        *ps = *s;
        /* the parent had not changed its list yet: what the child saved is the parent's list as it was */
        if (parent->nest && u->reusable_saved && !pu->reusable_saved) {
            struct pgvec keep = pu->reusable;
            pu->reusable = u->reusable;
            u->reusable = keep;
            pu->reusable_saved = true;
        }
    } else {
        /* the lists as they were; the flags are the parent's own, unchanged */
        ps->freed_by_txn = s->freed_by_txn;
        ps->freed_by_txn.n = u->freed_begin;
        ps->meta_pending = s->meta_pending;
        ps->reusable = s->reusable;
        if (u->reusable_saved) { /* the saved copy is the parent's; the child's array stays for later */
            ps->reusable = u->reusable;
            u->reusable = s->reusable;
        }
    }
    u->reusable_saved = false;
    memset(s, 0, sizeof(*s));
}

/* ---- the reusable list ---- */

static int cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x > y ? -1 : x < y;
}

/* The list's first `start` pages are in order; sort the record just
 * appended (at most a chunk) and merge it in from the low end.  Sorting
 * the whole list again made each reclaim O(P log P): after a big delete it
 * holds thousands of pages and commits reclaim several records each, so
 * that sort was most of a small commit's CPU time. */
void space_merge_reusable(struct space *s, size_t start)
{
    struct pgvec *pool = &s->reusable;
    size_t m = pool->n - start;
    if (m == 0)
        return;
    /* records are written sorted (freed ascending, reusable chunks
     * descending): check for that in one pass before paying for a sort */
    uint64_t *r = pool->v + start;
    size_t up = 0, down = 0;
    for (size_t x = 1; x < m; x++)
        up += r[x] > r[x - 1], down += r[x] < r[x - 1];
    if (up && !down) /* ascending: reverse it */
        for (size_t a = 0, b = m - 1; a < b; a++, b--) {
            uint64_t t = r[a];
            r[a] = r[b];
            r[b] = t;
        }
    else if (up) /* neither: a record not written by keel's own order */
        qsort(r, m, sizeof(uint64_t), cmp_desc);
    if (start == 0 || pool->v[start - 1] > pool->v[start])
        return; /* already in order: every new page is below the old ones */
    uint64_t *tmp = os_malloc(m * sizeof(uint64_t));
    if (!tmp) { /* no memory for the merge: sort it all, as correct and slower */
        qsort(pool->v, pool->n, sizeof(uint64_t), cmp_desc);
        return;
    }
    memcpy(tmp, pool->v + start, m * sizeof(uint64_t));
    /* fill from the end with the smaller of the two smallest left; k >= i
     * always, so no old page is overwritten before it is moved */
    size_t i = start, j = m, k = pool->n;
    while (j > 0) {
        if (i > 0 && pool->v[i - 1] < tmp[j - 1])
            pool->v[--k] = pool->v[--i];
        else
            pool->v[--k] = tmp[--j];
    }
    os_free(tmp);
    assert_order(s);
}

/* Descending, as the list is kept: ends the full-load window. */
int space_sort_reusable(struct space *s)
{
    struct pgvec *pool = &s->reusable;
    s->full_load = false;
    if (pool->n < 2) /* and an empty one may have no array at all */
        return 0;
    int rc = sort_u64(pool->v, pool->n);
    for (size_t a = 0, b = pool->n - 1; !rc && a < b; a++, b--) {
        uint64_t t = pool->v[a];
        pool->v[a] = pool->v[b];
        pool->v[b] = t;
    }
    s->full_load = rc != 0; /* unsorted still: the commit fails anyway */
    return rc;
}

/* The index of the lowest page of the list's lowest run of n consecutive
 * numbers, or SIZE_MAX.  The list is descending, so a run is
 * v[i-(n-1)] .. v[i] == v[i]+(n-1) .. v[i], and the search starts at the
 * low end. */
static size_t find_run(const struct pgvec *pool, uint32_t n)
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

static void remove_run(struct pgvec *pool, size_t i, uint32_t n)
{
    size_t lo = i - (n - 1);
    memmove(&pool->v[lo], &pool->v[i + 1], (pool->n - i - 1) * sizeof(uint64_t));
    pool->n -= n;
}

/* Takes a run of n consecutive page numbers from the list; single pages
 * come off the end, which is the lowest number. */
static bool take(struct space *s, uint32_t n, uint64_t *pgno)
{
    struct pgvec *pool = &s->reusable;
    if (pool->n == 0)
        return false;
    assert_order(s);
    if (n == 1) {
        *pgno = pool->v[--pool->n];
        return true;
    }
    KEEL_ASSERT(!s->full_load); /* runs only from a list in order */
    size_t i = find_run(pool, n);
    if (i == SIZE_MAX)
        return false;
    *pgno = pool->v[i];
    remove_run(pool, i, n);
    return true;
}

bool page_pool_below(const keel_txn *txn, size_t n, uint64_t below)
{
    const struct pgvec *p = &txn->space.reusable;
    KEEL_ASSERT(!txn->space.full_load);
    return n == 0 || (p->n >= n && p->v[p->n - n] < below);
}

/* ---- allocation ---- */

/* From the list, reclaiming records into it while it has no fit; false
 * when the end of the file must serve. */
static int take_or_reclaim(keel_txn *txn, uint32_t npages, uint64_t *pg, bool *found)
{
    struct space *s = &txn->space;
    *found = take(s, npages, pg);
    /* the re-entrancy rule: no reclaim inside the layer's own free-tree edits */
    while (!*found && !s->editing_free_tree && !s->nothing_reclaimable) {
        int rc = freelist_reclaim(txn);
        if (rc == KEEL_NOTFOUND) {
            s->nothing_reclaimable = true;
            break;
        }
        if (rc)
            return rc;
        *found = take(s, npages, pg);
        if (!*found && npages > 1 && s->reusable.n > SPACE_RUN_SEARCH_MAX_PAGES)
            break; /* a long run is not forming: take fresh pages */
    }
    return 0;
}

/* zero: clear the whole buffer (a page built from scratch must not carry
 * heap garbage to disk); else only the header (the caller fills it all).
 * below: 0, or take the pages from the list alone, ending at or below it. */
static int alloc_pages(keel_txn *txn, uint32_t npages, uint64_t *pgno, uint8_t **buf, bool zero, uint64_t below)
{
    struct space *s = &txn->space;
    uint64_t pg = 0;
    bool found = false;
    int rc = save_for_child(txn);
    if (rc)
        return rc;
    if (below) {
        KEEL_ASSERT(!s->recording && !s->full_load);
        size_t i = find_run(&s->reusable, npages);
        if (i == SIZE_MAX || s->reusable.v[i] + npages > below)
            return KEEL_NOTFOUND;
        pg = s->reusable.v[i];
        remove_run(&s->reusable, i, npages);
        found = true;
    } else if (!s->recording) {
        if ((rc = take_or_reclaim(txn, npages, &pg, &found)))
            return rc;
    } else if (npages == 1) {
        /* recording the free list: the lowest reusable page (freelist_record
         * rewrites the list's records after) */
        found = take(s, 1, &pg);
    }
    if (!found && (rc = pager_extend(txn, npages, &pg)))
        return rc;
    if ((rc = pager_new_page(txn, pg, npages, zero, found, buf)))
        return rc;
    *pgno = pg;
    return 0;
}

int page_alloc(keel_txn *txn, uint32_t npages, uint64_t *pgno, uint8_t **buf)
{
    return alloc_pages(txn, npages, pgno, buf, npages == 1, 0);
}

/* A run of npages pages from the list alone, ending at or below `below`
 * (KEEL_NOTFOUND if it has none): the relocation of freelist.c moves an
 * overflow run only down, and never makes the file longer for it.  Only
 * the header is cleared: the caller copies the run whole. */
int page_alloc_below(keel_txn *txn, uint32_t npages, uint64_t below, uint64_t *pgno, uint8_t **buf)
{
    return alloc_pages(txn, npages, pgno, buf, false, below ? below : 1);
}

int page_free(keel_txn *txn, uint64_t pgno, uint32_t npages)
{
    struct space *s = &txn->space;
    bool own;
    int rc = save_for_child(txn);
    if (rc || (rc = pager_drop_dirty(txn, pgno, &own)))
        return rc;
    /* written only by this txn: nobody else can see it, reusable at once;
     * but not while recording, where the list only shrinks (it joins
     * freed_by_txn, reusable one commit later) */
    if (own && !s->recording) {
        struct pgvec *p = &s->reusable;
        for (uint32_t i = 0; i < npages; i++)
            if ((rc = pgvec_push(p, pgno + i)))
                return rc;
        /* into its place: the list stays descending */
        for (size_t i = p->n - npages; i < p->n; i++) {
            uint64_t v = p->v[i];
            size_t j = i;
            while (j > 0 && p->v[j - 1] < v) {
                p->v[j] = p->v[j - 1];
                j--;
            }
            p->v[j] = v;
        }
        assert_order(s);
        return 0;
    }
    for (uint32_t i = 0; i < npages; i++) {
        if ((rc = pgvec_push(&s->freed_by_txn, pgno + i)))
            return rc;
    }
    return 0;
}

int page_touch(keel_txn *txn, uint64_t pgno, uint64_t *newpgno, uint8_t **buf)
{
    int rc = pager_own_buf(txn, pgno, buf);
    if (rc || *buf) { /* this txn's page already: changed in place */
        *newpgno = pgno;
        return rc;
    }
    const uint8_t *old;
    if ((rc = page_get(txn, pgno, &old)))
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
