/*
 * btree.c — the copy-on-write B+tree: search, insert with splits, delete with
 * merges, overflow values, and the walk that moves a tree's pages down the
 * file (bt_move_high, for freelist_relocate).
 *
 * Contract:
 *   - A tree is a struct tree_desc (root, depth, counts).  Functions change
 *     the desc they are given; the caller decides where it is stored (meta or
 *     catalog).
 *   - Every page read from the map is checked before use (number, kind, node
 *     bounds, depth): damage gives KEEL_CORRUPTED, never a wild read.
 *   - Writers first touch the whole root-to-leaf path (copy-on-write), then
 *     change the dirty copies in place.
 *   - Splits put only the new entry in the right page when it lands at the
 *     end of a page, so sorted loads leave pages full.  Elsewhere a full leaf
 *     first shares with a sibling already dirty, or splits with it into
 *     three, so random loads leave leaves about 5/6 full.  Deletes merge a
 *     page under half full with a sibling when both fit in 7/8 of a page; a
 *     page under a quarter full that cannot merge shares with it.  The
 *     fractions are the fill policy (internal.h).
 *   - Node and page bytes are written only through format.h's writers.
 *   - The scratch buffer (txn->scratch) is btree's alone, and never in use
 *     while btree allocates or copies a page: that may edit the free tree,
 *     which takes it.
 *   - bt_move_high copies pages only through the same path touch, so it
 *     changes page numbers (and the pointers to them), never the tree's
 *     content or shape.
 *   - Any error after the first change leaves the txn poisoned (txn->error);
 *     the caller sets that.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* 8 bytes at a and at b as big-endian words: -1, 0 or 1. */
static inline int word_cmp(const uint8_t *a, const uint8_t *b)
{
    uint64_t x, y;
    memcpy(&x, a, 8);
    memcpy(&y, b, 8);
    if (x == y)
        return 0;
    return __builtin_bswap64(x) < __builtin_bswap64(y) ? -1 : 1;
}

/* Bytewise order, a prefix first.  The first 8 bytes are compared as one
 * big-endian word, and when they tie the next 8 (the pair keys of one key
 * in a DUPSORT tree share their first word; format.h): most comparisons
 * end there without a call to memcmp.  A rest shorter than a word is
 * compared as the last 8 bytes, which overlap bytes already equal. */
static inline int key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c;
    if (n < 8) {
        for (size_t i = 0; i < n; i++) /* short keys (branch separators are often 1-3 bytes) */
            if (a[i] != b[i])
                return a[i] < b[i] ? -1 : 1;
        return alen < blen ? -1 : alen > blen;
    }
    if ((c = word_cmp(a, b)))
        return c;
    if (n >= 16) {
        if ((c = word_cmp(a + 8, b + 8)))
            return c;
        if (n > 24)
            c = memcmp(a + 16, b + 16, n - 16);
        else if (n > 16)
            c = word_cmp(a + n - 8, b + n - 8);
    } else if (n > 8) {
        c = word_cmp(a + n - 8, b + n - 8);
    }
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

int bt_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) { return key_cmp(a, alen, b, blen); }

static inline size_t usable(const keel_txn *txn) { return txn->db->node_end - PAGE_HDR; }

/* A level of the path, and the leaf's: a path is never deeper than a tree may be. */
static inline void check_level(const struct bt_path *path, int level)
{
    KEEL_ASSERT(path->depth > 0 && path->depth <= KEEL_MAX_DEPTH && level >= 0 && level < path->depth);
}
static inline int leaf_level(const struct bt_path *path)
{
    check_level(path, path->depth - 1);
    return path->depth - 1;
}

/* ---- page checks ---- */
int bt_check_page(keel_txn *txn, const uint8_t *page, uint64_t pgno, unsigned want)
{
    uint32_t ps = txn->db->node_end;
    unsigned n = page_nkeys(page);
    if (page_flags(page) != want || n == 0 || page_upper(page) > ps || page_upper(page) < PAGE_HDR + SLOT_SIZE * n)
        return CORRUPT(pgno);
    return 0;
}

static size_t node_size(const uint8_t *page, const uint8_t *n)
{
    return (page_flags(page) & P_LEAF) ? leaf_node_size(n) : branch_node_size(n);
}

/* A page from the map about to be changed, checked whole (after
 * bt_check_page): the nodes tile the node area [upper, psize) exactly, as
 * format.md requires (packed, no gaps), and the slots point at those nodes,
 * each at a different one.  Reads check only the nodes they visit (probe_key, node_at),
 * but edits shift, copy and rebuild every node of a page through unchecked
 * accessors, so a damaged node anywhere in it would make them read or write
 * out of bounds.  It runs once per page copied for writing, so it is one
 * walk along the node area (a size per node) and one pass over the slots (a
 * bit test each), with no key decoded and no sort.  Dirty pages are built
 * here and keep the property. */
static int check_nodes(keel_txn *txn, const uint8_t *page)
{
    uint32_t upper = page_upper(page), area = txn->db->node_end - upper; /* bt_check_page: upper <= psize */
    const uint8_t *base = page + upper;
    unsigned n = page_nkeys(page);
    uint64_t starts[KEEL_MAX_PAGE / 64]; /* a bit per offset from upper where a node starts */
    memset(starts, 0, (area + 63) / 64 * sizeof(uint64_t));
    uint32_t at = 0; /* offset from upper; at <= area throughout */
    if (page_flags(page) & P_LEAF) {
        for (unsigned i = 0; i < n; i++) {
            if (area - at < LEAF_HDR)
                return CORRUPT(page_pgno(page));
            size_t size = leaf_node_size(base + at);
            if (size > area - at)
                return CORRUPT(page_pgno(page));
            starts[at / 64] |= 1ull << (at % 64);
            at += (uint32_t)size;
        }
    } else {
        for (unsigned i = 0; i < n; i++) {
            if (area - at < BRANCH_HDR)
                return CORRUPT(page_pgno(page));
            size_t size = branch_node_size(base + at);
            if (size > area - at)
                return CORRUPT(page_pgno(page));
            starts[at / 64] |= 1ull << (at % 64);
            at += (uint32_t)size;
        }
    }
    if (at != area) /* a gap, or nodes beyond the n the header counts */
        return CORRUPT(page_pgno(page));
    for (unsigned i = 0; i < n; i++) {
        uint32_t s = page_slot(page, i) - upper; /* below upper: wraps, fails the test */
        uint64_t bit = 1ull << (s % 64);
        if (s >= area || !(starts[s / 64] & bit))
            return CORRUPT(page_pgno(page)); /* not the start of a node, or one a slot before took */
        starts[s / 64] ^= bit;
    }
    return 0;
}

static inline const uint8_t *node_ptr(const uint8_t *page, unsigned i) { return page + page_slot(page, i); }
static inline uint8_t *node_mut(uint8_t *page, unsigned i) { return page + page_slot(page, i); }

static inline unsigned probe_mid(unsigned lo, unsigned hi) { return lo + (hi - lo) / 2; }
static inline void prefetch_node(const uint8_t *page, unsigned i) { __builtin_prefetch(page + page_slot(page, i) + 8); }

/* Prefetches the seven nodes the first three probes of lower_bound over
 * [lo, hi) may look at (the same midpoints), hi - lo >= 7 so that each
 * range is non-empty.  Spelled out: the compiler did not inline it as a
 * recursion, and the calls cost more than the prefetches. */
static inline void prefetch_first_probes(const uint8_t *page, unsigned lo, unsigned hi)
{
    unsigned m = probe_mid(lo, hi), a = probe_mid(lo, m), b = probe_mid(m + 1, hi);
    prefetch_node(page, m);
    prefetch_node(page, a);
    prefetch_node(page, b);
    prefetch_node(page, probe_mid(lo, a));
    prefetch_node(page, probe_mid(a + 1, m));
    prefetch_node(page, probe_mid(m + 1, b));
    prefetch_node(page, probe_mid(b + 1, hi));
}

/* The key of node i, for a probe.  In a page from the map only the node's
 * header and key are checked to lie in the node area (after the slots,
 * before `end`), where page_node() checks the whole node: a search reads
 * no more, and whatever reads the rest of the node it lands on checks that
 * (node_at, leaf_entry). */
static inline __attribute__((always_inline)) int probe_key(const uint8_t *page, unsigned i, bool leaf, bool trusted,
                                                           uint32_t slots_end, uint32_t end, const uint8_t **key,
                                                           size_t *klen)
{
    unsigned off = page_slot(page, i);
    unsigned hdr = leaf ? LEAF_HDR : BRANCH_HDR;
    if (!trusted && (off < slots_end || off + hdr > end))
        return KEEL_CORRUPTED;
    const uint8_t *n = page + off;
    if (leaf) {
        *key = leaf_node_key(n);
        *klen = leaf_node_ksize(n);
    } else {
        *key = branch_node_key(n);
        *klen = branch_node_ksize(n);
    }
    if (!trusted && (size_t)(*key - page) + *klen > end)
        return KEEL_CORRUPTED;
    return 0;
}

/* The first index in [lo, hi) whose key is >= key (hi if none); *exact when
 * equal.  Always inlined: page_search gets a copy for each kind of page, so
 * that a dirty page (built by this txn from pages checked whole: touch_path)
 * skips the per-node bounds checks a page read from the file needs. */
static inline __attribute__((always_inline)) int lower_bound(const uint8_t *page, uint32_t ps, bool leaf,
                                                             bool trusted, unsigned lo, unsigned hi,
                                                             const uint8_t *key, size_t klen, bool far,
                                                             unsigned *idx, bool *exact)
{
    /* A page not in the cache: ask for the nodes of the first three probes
     * at once (seven nodes), then one probe ahead in the loop, so their
     * cache misses overlap instead of following one another.  Four levels
     * up front gained nothing more (the commit that added it has the figures).
     * Branches too when they are far (bt_search): then the level above the
     * leaves no longer stays in the nearer caches, and its probes were as
     * much of the wait as the leaf's (perf); in a smaller tree the branches
     * are near and the prefetches would cost more than they save. */
    bool ahead = leaf || far;
    uint32_t slots_end = PAGE_HDR + SLOT_SIZE * page_nkeys(page);
    if (ahead && hi - lo > 6)
        prefetch_first_probes(page, lo, hi);
    while (lo < hi) {
        unsigned mid = probe_mid(lo, hi);
        /* The probe after this one is one of two nodes: ask for both now,
         * so that a page not in the cache costs about one memory wait per
         * two probes, not one per probe.  (A prefetch never faults, and the
         * slots read here lie in the slot array bt_check_page checked.) */
        if (ahead && hi - lo > 2) {
            prefetch_node(page, probe_mid(lo, mid));
            prefetch_node(page, probe_mid(mid + 1, hi));
        }
        const uint8_t *k;
        size_t kl;
        if (probe_key(page, mid, leaf, trusted, slots_end, ps, &k, &kl))
            return CORRUPT(page_pgno(page));
        int c = key_cmp(k, kl, key, klen);
        if (c < 0)
            lo = mid + 1;
        else {
            hi = mid;
            if (c == 0)
                *exact = true;
        }
    }
    *idx = lo;
    return 0;
}

/* The child bt_search goes to next, asked for before page_get reads its
 * header.  In a big tree that page is not in the cache (nor in the TLB), and
 * what its search reads first depends on what it reads before: the header,
 * then a slot, then that slot's node.  Asking for all of a leaf (4 KiB pages:
 * its probes land anywhere in it) and for a branch's header and slot array
 * at once turns that chain of memory waits into about one.  A prefetch never
 * faults; the bound only keeps the address inside the map. */
static inline void prefetch_child(const keel_txn *txn, uint64_t pg, bool leaf)
{
    const keel_db *db = txn->db;
    if (pg >= db->map_size / db->psize)
        return;
    const uint8_t *c = db->map + pg * db->psize;
    unsigned bytes = leaf && db->psize == 4096 ? 4096 : 384; /* 384: a header and 184 slots */
    for (unsigned off = 0; off < bytes; off += 256) {
        __builtin_prefetch(c + off);
        __builtin_prefetch(c + off + 64);
        __builtin_prefetch(c + off + 128);
        __builtin_prefetch(c + off + 192);
    }
}

/* In a leaf: the first index whose key is >= key (nkeys if none); *exact when equal.
 * In a branch: the last index i >= 1 whose key is <= key, else 0. */
static int page_search(keel_txn *txn, const uint8_t *page, const uint8_t *key, size_t klen, bool far,
                       unsigned *idx, bool *exact)
{
    uint32_t ps = txn->db->node_end;
    bool trusted = !page_in_map(txn->db, page);
    *exact = false;
    if (page_flags(page) & P_LEAF)
        return trusted ? lower_bound(page, ps, true, true, 0, page_nkeys(page), key, klen, false, idx, exact)
                       : lower_bound(page, ps, true, false, 0, page_nkeys(page), key, klen, false, idx, exact);
    /* far is a constant in each copy, so that near trees pay no test for it
     * (a dirty branch was just built by this txn: near) */
    unsigned lo, n = page_nkeys(page);
    int rc = trusted ? lower_bound(page, ps, false, true, 1, n, key, klen, false, &lo, exact)
             : far   ? lower_bound(page, ps, false, false, 1, n, key, klen, true, &lo, exact)
                     : lower_bound(page, ps, false, false, 1, n, key, klen, false, &lo, exact);
    if (rc)
        return rc;
    /* lo = first branch key > key (or equal when exact) */
    *idx = *exact ? lo : lo - 1;
    *exact = false;
    return 0;
}

int bt_search(keel_txn *txn, const struct tree_desc *t, const uint8_t *key, size_t klen,
              struct bt_path *path, bool *exact)
{
    *exact = false;
    path->depth = 0;
    if (t->root == 0)
        return KEEL_NOTFOUND;
    if (t->depth == 0 || t->depth > KEEL_MAX_DEPTH)
        return CORRUPT(t->root);
    uint64_t pg = t->root, sum = t->root_sum;
    /* Far: branch pages beyond what a core's nearer caches hold (about 1
     * MiB), so that a lookup's pages are mostly not in them: prefetch ahead
     * in branches and for the child.  The count is a statistic; a wrong one
     * only changes what is prefetched. */
    bool far = t->branch_pages * txn->db->psize > (1u << 20);
    for (unsigned level = 0;; level++) {
        KEEL_ASSERT(level < t->depth); /* the leaf level returns: the path fits */
        const uint8_t *page;
        int rc = page_get_summed(txn, pg, sum, &page);
        if (rc)
            return rc;
        bool leaf = level + 1 == t->depth;
        if ((rc = bt_check_page(txn, page, pg, leaf ? P_LEAF : P_BRANCH)))
            return rc;
        path->pgno[level] = pg;
        path->page[level] = (uint8_t *)page;
        unsigned idx;
        if ((rc = page_search(txn, page, key, klen, far, &idx, exact)))
            return rc;
        path->idx[level] = idx;
        if (leaf) {
            path->depth = (int)level + 1;
            return 0;
        }
        const uint8_t *n;
        if ((rc = node_at(page, idx, txn->db->node_end, &n)))
            return rc;
        pg = branch_node_child(n);
        if (txn->verify) /* read only for KEEL_VERIFY: a get reads no more than before the sums */
            sum = branch_node_sum(n);
        if (far)
            prefetch_child(txn, pg, level + 2 == t->depth);
    }
}

/* The run holds the header, the value and (summed) the trailer. */
uint32_t bt_overflow_pages(const keel_txn *txn, uint64_t vsize)
{
    uint32_t ps = txn->db->psize, trailer = ps - txn->db->node_end;
    return (uint32_t)((PAGE_HDR + vsize + trailer + ps - 1) / ps);
}

int bt_leaf_value(keel_txn *txn, const uint8_t *node, keel_val *val)
{
    uint32_t vsize = leaf_node_vsize(node);
    if (!(leaf_node_flags(node) & N_BIG)) {
        val->data = leaf_node_val(node);
        val->len = vsize;
        return 0;
    }
    uint64_t ov = leaf_node_overflow(node);
    uint32_t need = bt_overflow_pages(txn, vsize);
    const uint8_t *p;
    int rc = page_get(txn, ov, &p);
    if (rc)
        return rc;
    if (page_flags(p) != P_OVERFLOW || page_upper(p) != need)
        return CORRUPT(ov);
    /* a run in the map must end inside the file (a dirty one is a buffer of need pages) */
    if (page_in_map(txn->db, p) && ov + need > page_map_limit(txn))
        return CORRUPT(ov);
    if (txn->verify && (rc = page_verify(txn, p, ov, need, leaf_node_overflow_sum(node))))
        return rc;
    val->data = p + PAGE_HDR;
    val->len = vsize;
    return 0;
}

/* The overflow run of a leaf node with N_BIG, checked as a read checks it
 * (inside the snapshot, its first page an overflow page of that length)
 * before it is freed: a damaged pointer must not free pages in use or
 * past the end of the file. */
static int overflow_run(keel_txn *txn, const uint8_t *node, uint64_t *ov, uint32_t *npages)
{
    keel_val v;
    int rc = bt_leaf_value(txn, node, &v);
    if (rc)
        return rc;
    *ov = leaf_node_overflow(node);
    *npages = bt_overflow_pages(txn, leaf_node_vsize(node));
    return 0;
}

int bt_get(keel_txn *txn, const struct tree_desc *t, keel_val key, keel_val *val, int64_t *expiry)
{
    struct bt_path path;
    bool exact;
    int rc = bt_search(txn, t, key.data, key.len, &path, &exact);
    if (rc)
        return rc;
    if (!exact)
        return KEEL_NOTFOUND;
    const uint8_t *n;
    int lv = leaf_level(&path);
    if ((rc = node_at(path.page[lv], path.idx[lv], txn->db->node_end, &n)))
        return rc;
    if (expiry)
        *expiry = leaf_node_expiry(n);
    return val ? bt_leaf_value(txn, n, val) : 0;
}

/* ---- page editing (dirty pages only) ---- */
static void page_init(uint8_t *page, unsigned flags, uint32_t psize) { page_set_header(page, flags, 0, psize); }

static void page_insert_node(uint8_t *page, unsigned idx, const uint8_t *node, size_t size)
{
    unsigned n = page_nkeys(page);
    uint32_t upper = page_upper(page) - (uint32_t)size;
    memcpy(page + upper, node, size);
    memmove(page_slot_at(page, idx + 1), page_slot_at(page, idx), SLOT_SIZE * (n - idx));
    page_set_slot(page, idx, upper);
    page_set_nkeys(page, n + 1);
    page_set_upper(page, upper);
}

static void page_remove_node(uint8_t *page, unsigned idx)
{
    unsigned n = page_nkeys(page);
    unsigned off = page_slot(page, idx);
    size_t sz = node_size(page, page + off);
    uint32_t upper = page_upper(page);
    if (off != upper && node_size(page, page + upper) == sz) {
        /* the lowest node is as big as the hole: it alone moves into it */
        memcpy(page + off, page + upper, sz);
        for (unsigned i = 0; i < n; i++)
            if (page_slot(page, i) == upper) {
                page_set_slot(page, i, off);
                break;
            }
    } else {
        memmove(page + upper + sz, page + upper, off - upper);
        for (unsigned i = 0; i < n; i++) {
            unsigned o = page_slot(page, i);
            if (o < off)
                page_set_slot(page, i, o + (unsigned)sz);
        }
    }
    memmove(page_slot_at(page, idx), page_slot_at(page, idx + 1), SLOT_SIZE * (n - idx - 1));
    page_set_nkeys(page, n - 1);
    page_set_upper(page, upper + (uint32_t)sz);
}

static size_t page_used(const uint8_t *page, uint32_t psize)
{
    return psize - page_upper(page) + SLOT_SIZE * page_nkeys(page);
}

/* A node to place in a rebuilt page: bytes and size. */
struct piece {
    const uint8_t *p;
    size_t size;
};

/* The page holds just these nodes, in this order (they fit: the caller
 * chose them with choose_split).  Node i goes below node i-1, as a run of
 * page_insert_node at the end would put it, without its per-node work. */
static void page_fill(uint8_t *page, unsigned flags, uint32_t psize, const struct piece *pc, size_t n)
{
    uint32_t upper = psize;
    for (size_t i = 0; i < n; i++) {
        upper -= (uint32_t)pc[i].size;
        memcpy(page + upper, pc[i].p, pc[i].size);
        page_set_slot(page, (unsigned)i, upper);
    }
    page_set_header(page, flags, (unsigned)n, upper);
}

/* ---- the scratch buffer ----
 * Taken while pages are rebuilt from a copy of themselves, and given back
 * before anything that may allocate a page: the allocator may reclaim free
 * pages, which edits the free tree, which may take it in turn. */
static uint8_t *scratch_take(keel_txn *txn)
{
    KEEL_ASSERT(txn->scratch_depth == 0);
    if (!txn->scratch && !(txn->scratch = os_malloc(2 * (size_t)txn->db->psize)))
        return NULL;
    txn->scratch_depth = 1;
    return txn->scratch;
}

static void scratch_give(keel_txn *txn)
{
    KEEL_ASSERT(txn->scratch_depth == 1);
    txn->scratch_depth = 0;
}

/* Which tree a page belongs to, for its trailer (format.h: TAG_*, or the
 * bucket's id).  The internal trees are the meta's descriptors themselves. */
static uint32_t tree_tag(const keel_txn *txn, const struct tree_desc *t)
{
    if (t == &txn->meta.trees[TREE_CATALOG])
        return TAG_CATALOG;
    if (t == &txn->meta.trees[TREE_FREE])
        return TAG_FREE;
    if (t == &txn->meta.trees[TREE_EXPIRY])
        return TAG_EXPIRY;
    return t->id;
}

/* New pages for tree t: their trailer names it (a copy-on-write copy keeps
 * its original's). */
static int new_pages(keel_txn *txn, const struct tree_desc *t, uint32_t npages, uint64_t *pgno, uint8_t **buf)
{
    KEEL_ASSERT(txn->scratch_depth == 0);
    int rc = page_alloc(txn, npages, pgno, buf);
    if (!rc && txn->db->summed)
        page_set_tree(*buf, (size_t)npages * txn->db->psize, tree_tag(txn, t));
    return rc;
}

static int touch_page(keel_txn *txn, uint64_t pgno, uint64_t *newpgno, uint8_t **buf)
{
    KEEL_ASSERT(txn->scratch_depth == 0);
    return page_touch(txn, pgno, newpgno, buf);
}

/* A branch node in the db's format; sum: the child's (0 for a child this
 * txn wrote: the seal fills it in). */
static uint8_t *make_branch_node(const keel_txn *txn, uint64_t child, uint64_t sum, const uint8_t *key, size_t klen,
                                 size_t *size)
{
    uint8_t *n = os_malloc(BRANCH_FIRST_MAX + klen);
    if (!n)
        return NULL;
    *size = branch_node_write(n, child, sum, key, klen, txn->db->summed);
    return n;
}

/* node 0 of a branch page: the same child, no key (it is never read) */
static size_t branch_first(const keel_txn *txn, uint8_t first[BRANCH_FIRST_MAX], const uint8_t *node)
{
    return branch_node_write(first, branch_node_child(node), branch_node_sum(node), NULL, 0, txn->db->summed);
}

/* The pieces to redistribute: the nodes of a, then those of b (NULL: none),
 * with node (NULL: none) at position at.  NULL when out of memory. */
static struct piece *collect_pieces(const uint8_t *a, const uint8_t *b, unsigned at, const uint8_t *node,
                                    size_t size, size_t *count)
{
    unsigned an = page_nkeys(a), bn = b ? page_nkeys(b) : 0;
    size_t n = an + bn + (node != NULL);
    bool leaf = page_flags(a) & P_LEAF;
    struct piece *pc = os_malloc(n * sizeof(*pc));
    if (!pc)
        return NULL;
    for (size_t i = 0, j = 0; i < n; i++) {
        if (node && i == at) {
            pc[i] = (struct piece){node, size};
            continue;
        }
        const uint8_t *nd = j < an ? node_ptr(a, (unsigned)j) : node_ptr(b, (unsigned)(j - an));
        pc[i] = (struct piece){nd, leaf ? leaf_node_size(nd) : branch_node_size(nd)};
        j++;
    }
    *count = n;
    return pc;
}

/* Where to split pieces [0, n) so both halves fit: balanced by bytes, or
 * everything left but the last when the new piece was appended.  0 when no
 * split fits: nodes of a damaged page can be too big to share two pages
 * (filling a page past its end would follow). */
static size_t choose_split(const struct piece *pc, size_t n, size_t cap, bool append)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += pc[i].size + SLOT_SIZE;
    if (append) {
        size_t left = total - (pc[n - 1].size + SLOT_SIZE);
        if (left <= cap)
            return n - 1;
    }
    size_t best = 0, left = 0, best_diff = SIZE_MAX;
    for (size_t s = 1; s < n; s++) {
        left += pc[s - 1].size + SLOT_SIZE;
        size_t right = total - left;
        if (left > cap)
            break;
        if (right > cap)
            continue;
        size_t diff = left > right ? left - right : right - left;
        if (diff < best_diff) {
            best_diff = diff;
            best = s;
        }
    }
    return best;
}

static void count_page(struct tree_desc *t, unsigned flags, int64_t delta)
{
    if (flags & P_LEAF)
        t->leaf_pages += (uint64_t)delta;
    else
        t->branch_pages += (uint64_t)delta;
}

static int insert_at(keel_txn *txn, struct tree_desc *t, struct bt_path *path, int level, unsigned idx,
                     const uint8_t *node, size_t size, bool append);

/* The separator between two adjacent leaves: the shortest prefix of the
 * right one's first key (node r) that still sorts above the left one's last
 * key (node l).  Short separators mean more children per branch page. */
static void leaf_separator(const uint8_t *l, const uint8_t *r, const uint8_t **key, size_t *klen)
{
    const uint8_t *lk = leaf_node_key(l), *rk = leaf_node_key(r);
    size_t lkl = leaf_node_ksize(l), rkl = leaf_node_ksize(r);
    size_t common = 0;
    while (common < lkl && common < rkl && lk[common] == rk[common])
        common++;
    *key = rk;
    *klen = common + 1 < rkl ? common + 1 : rkl;
}

/* Where to cut pieces [0, n) into three groups that each fit, near thirds
 * by bytes: *s1, *s2 (0 < s1 < s2 < n).  false when there is none. */
static bool choose_split3(const struct piece *pc, size_t n, size_t cap, size_t *s1, size_t *s2)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += pc[i].size + SLOT_SIZE;
    size_t cut[2], sum[2], acc = 0, i = 0;
    for (int c = 0; c < 2; c++) {
        size_t goal = total * (size_t)(c + 1) / 3;
        while (i < n && acc + pc[i].size + SLOT_SIZE <= goal) /* the last cut at or before the goal... */
            acc += pc[i++].size + SLOT_SIZE;
        if (i < n && goal - acc > acc + pc[i].size + SLOT_SIZE - goal) /* ...or the next, if closer */
            acc += pc[i++].size + SLOT_SIZE;
        cut[c] = i;
        sum[c] = acc;
    }
    if (cut[0] == 0 || cut[1] <= cut[0] || cut[1] >= n || sum[0] > cap || sum[1] - sum[0] > cap ||
        total - sum[1] > cap)
        return false;
    *s1 = cut[0];
    *s2 = cut[1];
    return true;
}

/* A share without rebuilding the pages: of the pieces "L's ln nodes, then
 * R's, with node inserted at position at", L is to hold the first s.  Only
 * the nodes that change sides move (one or two, mostly), one at a time
 * across the boundary, then node goes in.  Every state on the way holds
 * part of the final pages, so each insert has room. */
static void share_move(uint8_t *L, uint8_t *R, unsigned ln, unsigned s, unsigned at, const uint8_t *node,
                       size_t size)
{
    unsigned keep = s - (at < s); /* old nodes that end in L */
    for (; ln > keep; ln--) {     /* L's last node to R's front */
        const uint8_t *nd = node_ptr(L, ln - 1);
        page_insert_node(R, 0, nd, leaf_node_size(nd));
        page_remove_node(L, ln - 1);
    }
    for (; ln < keep; ln++) { /* R's first node to L's end */
        const uint8_t *nd = node_ptr(R, 0);
        page_insert_node(L, ln, nd, leaf_node_size(nd));
        page_remove_node(R, 0);
    }
    if (at < s)
        page_insert_node(L, at, node, size);
    else
        page_insert_node(R, at - s, node, size);
}


/* The parent's node for a page (pg) that will begin with piece s.  Leaves:
 * with `shortest` the shortest separator from the piece before, else piece
 * s's whole key.  Branches: piece s's key, and piece s becomes `first`, its
 * copy without the key (a branch's first key is never read).  NULL when out
 * of memory. */
static uint8_t *cut_separator(const keel_txn *txn, struct piece *pc, size_t s, bool leaf, bool shortest,
                              uint64_t pg, uint8_t first[BRANCH_FIRST_MAX], size_t *size)
{
    const uint8_t *k;
    size_t kl;
    if (!leaf) {
        k = branch_node_key(pc[s].p);
        kl = branch_node_ksize(pc[s].p);
    } else if (shortest) {
        leaf_separator(pc[s - 1].p, pc[s].p, &k, &kl);
    } else {
        k = leaf_node_key(pc[s].p);
        kl = leaf_node_ksize(pc[s].p);
    }
    uint8_t *sep = make_branch_node(txn, pg, 0, k, kl, size);
    if (sep && !leaf)
        pc[s] = (struct piece){first, branch_first(txn, first, pc[s].p)};
    return sep;
}

/* L gets pieces [0, s), R the rest; *sep is R's (page rpg) node for the parent. */
static int fill_pair(keel_txn *txn, uint8_t *L, uint8_t *R, unsigned flags, struct piece *pc, size_t n, size_t s,
                     bool shortest, uint64_t rpg, uint8_t **sep, size_t *sepsize)
{
    uint8_t first[BRANCH_FIRST_MAX];
    if (!(*sep = cut_separator(txn, pc, s, flags & P_LEAF, shortest, rpg, first, sepsize)))
        return KEEL_NOMEM;
    page_fill(L, flags, txn->db->node_end, pc, s);
    page_fill(R, flags, txn->db->node_end, pc + s, n - s);
    return 0;
}

/* ---- insert ---- */

/* The parent at `level` gets sep in place of its node at ri: written over
 * it when of the same size, else through insert_at (which may split). */
static int replace_separator(keel_txn *txn, struct tree_desc *t, struct bt_path *path, int level, unsigned ri,
                             const uint8_t *sep, size_t sepsize)
{
    uint8_t *parent = path->page[level], *old = node_mut(parent, ri);
    if (branch_node_size(old) == sepsize) { /* the common case */
        memcpy(old, sep, sepsize);
        return 0;
    }
    page_remove_node(parent, ri);
    return insert_at(txn, t, path, level, ri, sep, sepsize, false);
}

/* A sibling for a full leaf to share with: which, and how much room it has. */
struct sibling {
    uint8_t *page; /* dirty (copied if it was not) */
    unsigned idx;  /* its node in the parent */
    size_t room;
};

/* The roomier sibling of the leaf at `level` that is dirty already (no
 * page to copy and write for it), else the roomier clean one worth its
 * copy (clean_sibling_worth_share), copied now.  KEEL_NOTFOUND if none. */
static int pick_sibling(keel_txn *txn, struct bt_path *path, int level, size_t size, struct sibling *out)
{
    uint8_t *page = path->page[level], *parent = path->page[level - 1];
    unsigned pidx = path->idx[level - 1], pn = page_nkeys(parent);
    uint8_t *sib = NULL;
    unsigned sidx = 0, cidx = 0;
    size_t room = 0, croom = 0;
    int rc;
    for (int d = -1; d <= 1; d += 2) {
        if ((d < 0 && pidx == 0) || (d > 0 && pidx + 1 >= pn))
            continue;
        unsigned i = pidx + (unsigned)d;
        uint64_t pg = branch_node_child(node_ptr(parent, i));
        uint8_t *b = page_dirty(txn, pg);
        const uint8_t *sp;
        if (b) { /* a damaged parent can point twice at one page, or at a branch */
            if (b != page && page_flags(b) == P_LEAF && page_nkeys(b) && (!sib || page_room(b) > room)) {
                room = page_room(b);
                sib = b;
                sidx = i;
            }
        } else if (!page_get(txn, pg, &sp) && !bt_check_page(txn, sp, pg, P_LEAF) &&
                   clean_sibling_worth_share(page_room(sp), size + SLOT_SIZE, usable(txn)) &&
                   page_room(sp) > croom) {
            croom = page_room(sp);
            cidx = i;
        }
    }
    if (sib && txn->nest) { /* a nested txn saves its parent's page before changing it (pager.c) */
        uint64_t same;
        if ((rc = touch_page(txn, branch_node_child(node_ptr(parent, sidx)), &same, &sib)))
            return rc;
    }
    if (!sib) { /* a clean sibling: checked whole, then copied */
        if (!croom)
            return KEEL_NOTFOUND;
        const uint8_t *pn = node_ptr(parent, cidx), *sp;
        uint64_t pg = branch_node_child(pn), np;
        if ((rc = page_get_summed(txn, pg, branch_node_sum(pn), &sp)) ||
            (!page_known_whole(txn->db, pg, branch_node_sum(pn)) && (rc = check_nodes(txn, sp))) ||
            (rc = touch_page(txn, pg, &np, &sib)))
            return rc;
        branch_node_set_child(node_mut(parent, cidx), np); /* also when np == pg: a changed page's sum is 0 */
        room = croom;
        sidx = cidx;
    }
    *out = (struct sibling){sib, sidx, room};
    return 0;
}

/* The full leaf and its sibling as the left and right page. */
struct leaf_pair {
    uint8_t *L, *R;
    unsigned ri; /* the parent's node of R */
    unsigned at; /* where the new node goes among L's nodes then R's */
};

static struct leaf_pair pair_with(const struct bt_path *path, int level, const struct sibling *sb, unsigned idx)
{
    uint8_t *page = path->page[level];
    bool sib_left = sb->idx < path->idx[level - 1];
    return (struct leaf_pair){sib_left ? sb->page : page, sib_left ? page : sb->page,
                              sib_left ? path->idx[level - 1] : sb->idx,
                              sib_left ? page_nkeys(sb->page) + idx : idx};
}

/* The two end balanced, the new node among them: only the nodes that
 * change sides move (share_move); sizes and the separator are read in place
 * before any change.  KEEL_NOTFOUND (nothing changed) when no cut fits. */
static int share_two(keel_txn *txn, struct tree_desc *t, struct bt_path *path, int level, struct leaf_pair lp,
                     const uint8_t *node, size_t size)
{
    uint64_t rpg = branch_node_child(node_ptr(path->page[level - 1], lp.ri));
    size_t n, sepsize = 0;
    struct piece *pc = collect_pieces(lp.L, lp.R, lp.at, node, size, &n);
    if (!pc)
        return KEEL_NOMEM;
    size_t s = choose_split(pc, n, usable(txn), false);
    uint8_t *sep = s ? cut_separator(txn, pc, s, true, true, rpg, NULL, &sepsize) : NULL;
    os_free(pc);
    if (!s)
        return KEEL_NOTFOUND;
    if (!sep)
        return KEEL_NOMEM;
    share_move(lp.L, lp.R, page_nkeys(lp.L), (unsigned)s, lp.at, node, size);
    txn->changes++;
    int rc = replace_separator(txn, t, path, level - 1, lp.ri, sep, sepsize);
    os_free(sep);
    return rc;
}

/* The two become three, each about two thirds full, rebuilt from a copy; one
 * more node in the parent, so only if it fits there now (the parent's own
 * split would move the path under us).  KEEL_NOTFOUND (the tree unchanged)
 * when it cannot. */
static int split_three(keel_txn *txn, struct tree_desc *t, struct bt_path *path, int level, struct leaf_pair lp,
                       const uint8_t *node, size_t size)
{
    uint32_t ps = txn->db->psize, end = txn->db->node_end;
    uint8_t *parent = path->page[level - 1], *mid, *sc, *sep1 = NULL, *sep2 = NULL;
    uint64_t rpg = branch_node_child(node_ptr(parent, lp.ri)), mpg;
    size_t n, s1 = 0, s2 = 0, sep1size = 0, sep2size = 0;
    int rc = new_pages(txn, t, 1, &mpg, &mid);
    if (rc)
        return rc;
    count_page(t, P_LEAF, 1);
    if (!(sc = scratch_take(txn)))
        return KEEL_NOMEM;
    memcpy(sc, lp.L, ps);
    memcpy(sc + ps, lp.R, ps);
    struct piece *pc = collect_pieces(sc, sc + ps, lp.at, node, size, &n);
    bool done = false;
    if (!pc) {
        rc = KEEL_NOMEM;
    } else if (choose_split3(pc, n, usable(txn), &s1, &s2)) {
        sep2 = cut_separator(txn, pc, s2, true, true, rpg, NULL, &sep2size);
        sep1 = cut_separator(txn, pc, s1, true, true, mpg, NULL, &sep1size);
        if (!sep1 || !sep2) {
            rc = KEEL_NOMEM;
        } else if (page_room(parent) + branch_node_size(node_ptr(parent, lp.ri)) >=
                   sep1size + sep2size + 2 * SLOT_SIZE) {
            page_fill(lp.L, P_LEAF, end, pc, s1);
            page_fill(mid, P_LEAF, end, pc + s1, s2 - s1);
            page_fill(lp.R, P_LEAF, end, pc + s2, n - s2);
            done = true;
        }
    }
    os_free(pc);
    scratch_give(txn);
    if (!rc && !done) { /* (damage, or a parent too full for three): the caller splits */
        count_page(t, P_LEAF, -1);
        rc = (rc = page_free(txn, mpg, 1)) ? rc : KEEL_NOTFOUND;
    } else if (!rc) {
        txn->changes++;
        rc = replace_separator(txn, t, path, level - 1, lp.ri, sep2, sep2size);
        if (!rc) /* it fits: checked above, and the parent did not split */
            page_insert_node(parent, lp.ri, sep1, sep1size);
    }
    os_free(sep1);
    os_free(sep2);
    return rc;
}

/* A full leaf (not an append) first shares with a sibling (pick_sibling).
 * One with room (sibling_can_share) takes a share; if the roomier one is
 * nearly full too, the two become three pages, where a plain split would
 * leave two half-full pages beside a full one.  This is a B*-tree's
 * overflow handling: random inserts leave leaves about 5/6 full instead of
 * the 2/3 of plain splits, so a big load writes fewer pages and its file is
 * smaller; taking a clean sibling for a share keeps commits of a few random
 * puts as full as big loads.  KEEL_NOTFOUND when no sibling can help (the
 * caller splits); the tree is unchanged then (a clean sibling may have been
 * copied). */
static int share_with_sibling(keel_txn *txn, struct tree_desc *t, struct bt_path *path, int level, unsigned idx,
                              const uint8_t *node, size_t size)
{
    struct sibling sb;
    int rc = pick_sibling(txn, path, level, size, &sb);
    if (rc)
        return rc;
    struct leaf_pair lp = pair_with(path, level, &sb, idx);
    if (sibling_can_share(sb.room, size + SLOT_SIZE, usable(txn)))
        return share_two(txn, t, path, level, lp, node, size);
    return split_three(txn, t, path, level, lp, node, size);
}

/* The root split: a new root over it and its new right sibling (sep). */
static int grow_root(keel_txn *txn, struct tree_desc *t, struct bt_path *path, const uint8_t *sep, size_t sepsize)
{
    uint64_t rootpg;
    uint8_t *root, first[BRANCH_FIRST_MAX];
    int rc = new_pages(txn, t, 1, &rootpg, &root);
    if (rc)
        return rc;
    page_init(root, P_BRANCH, txn->db->node_end);
    KEEL_ASSERT(t->root_sum == 0); /* the old root is this txn's */
    page_insert_node(root, 0, first, branch_node_write(first, path->pgno[0], 0, NULL, 0, txn->db->summed));
    page_insert_node(root, 1, sep, sepsize);
    t->root = rootpg;
    t->depth++;
    t->branch_pages++;
    return 0;
}

/* The page at `level` cannot take the node: a leaf shares with a sibling
 * if it can, else the page splits in two and the parent (or a new root)
 * takes the separator. */
static int split_insert(keel_txn *txn, struct tree_desc *t, struct bt_path *path, int level, unsigned idx,
                        const uint8_t *node, size_t size, bool append)
{
    uint8_t *page = path->page[level], *right, *copy, *sep = NULL;
    unsigned flags = page_flags(page);
    bool at_end = append && idx == page_nkeys(page);
    int rc;
    if ((flags & P_LEAF) && level > 0 && !append &&
        (rc = share_with_sibling(txn, t, path, level, idx, node, size)) != KEEL_NOTFOUND)
        return rc;
    uint64_t rpg;
    size_t n, sepsize = 0;
    if ((rc = new_pages(txn, t, 1, &rpg, &right)))
        return rc;
    count_page(t, flags, 1);
    if (!(copy = scratch_take(txn)))
        return KEEL_NOMEM;
    memcpy(copy, page, txn->db->psize);
    struct piece *pc = collect_pieces(copy, NULL, idx, node, size, &n);
    size_t s;
    if (!pc)
        rc = KEEL_NOMEM;
    else if (!(s = choose_split(pc, n, usable(txn), at_end)))
        rc = CORRUPT(path->pgno[level]);
    else
        rc = fill_pair(txn, page, right, flags, pc, n, s, true, rpg, &sep, &sepsize);
    os_free(pc);
    scratch_give(txn);
    if (rc)
        return rc;
    txn->changes++;
    if (level == 0)
        rc = grow_root(txn, t, path, sep, sepsize);
    else
        rc = insert_at(txn, t, path, level - 1, path->idx[level - 1] + 1, sep, sepsize, append);
    os_free(sep);
    return rc;
}

static int insert_at(keel_txn *txn, struct tree_desc *t, struct bt_path *path, int level, unsigned idx,
                     const uint8_t *node, size_t size, bool append)
{
    check_level(path, level);
    uint8_t *page = path->page[level];
    if (page_room(page) >= size + SLOT_SIZE) {
        page_insert_node(page, idx, node, size);
        txn->changes++;
        return 0;
    }
    return split_insert(txn, t, path, level, idx, node, size, append);
}

/* Copy-on-write the whole path, root first, fixing each parent's pointer. */
static int touch_path(keel_txn *txn, struct tree_desc *t, struct bt_path *path)
{
    for (int level = 0; level < path->depth; level++) {
        uint8_t *page = path->page[level];
        int rc;
        if (!page_in_map(txn->db, page)) {
            /* Dirty already (page_get gives out no other buffer): this
             * txn's copy, under the same number.  It must be on the path
             * once: a damaged tree can point back at a page (its number
             * since given to a page of this txn by a damaged free tree). */
            for (int l = 0; l < level; l++)
                if (path->page[l] == page)
                    return CORRUPT(path->pgno[level]);
            /* a nested txn saves its parent's page before changing it (pager.c) */
            uint64_t same;
            uint8_t *buf;
            if (txn->nest && (rc = touch_page(txn, path->pgno[level], &same, &buf)))
                return rc;
            continue;
        }
        /* From the file, and not dirty since the search: a page allocated
         * in between (bt_put's overflow run) at this number came from a
         * damaged free tree that gave out a page in use. */
        if (page_dirty(txn, path->pgno[level]))
            return CORRUPT(path->pgno[level]);
        uint64_t np, sum = level ? branch_node_sum(node_ptr(path->page[level - 1], path->idx[level - 1]))
                                 : t->root_sum;
        uint8_t *buf;
        if ((!page_known_whole(txn->db, path->pgno[level], sum) && (rc = check_nodes(txn, page))) ||
            (rc = touch_page(txn, path->pgno[level], &np, &buf)))
            return rc;
        /* also when np is the same page (spilled, back in memory): the
         * reference to a page the txn changes holds sum 0 (seal.c) */
        if (level == 0) {
            t->root = np;
            t->root_sum = 0;
        } else {
            branch_node_set_child(node_mut(path->page[level - 1], path->idx[level - 1]), np);
        }
        path->pgno[level] = np;
        path->page[level] = buf;
    }
    return 0;
}

/* bt_put's search: the path to key and whether it is there; flags and the
 * entry there decide what happens (KEEL_EXISTS, the expiry kept). */
static int put_search(keel_txn *txn, struct tree_desc *t, keel_val key, unsigned flags, int64_t *expiry,
                      int64_t *old_expiry, struct bt_path *path, bool *exact)
{
    int rc = bt_search(txn, t, key.data, key.len, path, exact);
    if (rc && rc != KEEL_NOTFOUND)
        return rc;
    if (*exact) {
        const uint8_t *cur;
        int lv = leaf_level(path);
        if ((rc = node_at(path->page[lv], path->idx[lv], txn->db->node_end, &cur)))
            return rc;
        int64_t cur_exp = leaf_node_expiry(cur);
        bool live = cur_exp == 0 || cur_exp > txn->now; /* an expired key counts as absent */
        if ((flags & KEEL_NOOVERWRITE) && live)
            return KEEL_EXISTS;
        if ((flags & KEEL_KEEPTTL) && live)
            *expiry = cur_exp;
        if (old_expiry)
            *old_expiry = cur_exp;
    }
    return 0;
}

/* The leaf node for key and val into node (size bytes: leaf_node_size_for
 * with the flags put_node_flags chose); a value too big to stay inline
 * goes to a new overflow run. */
static unsigned put_node_flags(const keel_txn *txn, keel_val key, keel_val val, int64_t expiry)
{
    unsigned flags = expiry ? N_EXPIRES : 0;
    size_t inline_size = leaf_node_size_for(flags, key.len, val.len);
    unsigned big = N_BIG | (txn->db->summed ? N_SUM : 0);
    size_t big_size = leaf_node_size_for(flags | big, key.len, val.len);
    return flags | (inline_size > txn->db->inline_max && inline_size > big_size ? big : 0);
}

static int put_make_node(keel_txn *txn, struct tree_desc *t, keel_val key, keel_val val, int64_t expiry,
                         unsigned nflags, uint8_t *node)
{
    uint8_t *vdst = leaf_node_write(node, nflags, key.data, key.len, (uint32_t)val.len, expiry);
    if (!(nflags & N_BIG)) {
        if (val.len)
            memcpy(vdst, val.data, val.len);
        return 0;
    }
    uint32_t np = bt_overflow_pages(txn, val.len);
    uint64_t ov;
    uint8_t *ovbuf;
    int rc = new_pages(txn, t, np, &ov, &ovbuf);
    if (rc)
        return rc;
    /* the run is whole now: sealed at once, its sum into the node */
    size_t len = (size_t)np * txn->db->psize, trailer = txn->db->psize - txn->db->node_end;
    overflow_set_header(ovbuf, np);
    memcpy(ovbuf + PAGE_HDR, val.data, val.len);
    memset(ovbuf + PAGE_HDR + val.len, 0, len - trailer - PAGE_HDR - val.len);
    leaf_node_set_overflow(node, ov);
    if (txn->db->summed)
        leaf_node_set_overflow_sum(node, pager_seal(txn, ovbuf, np));
    t->overflow_pages += np;
    return 0;
}

/* The first leaf of an empty tree. */
static int put_first(keel_txn *txn, struct tree_desc *t, const uint8_t *node, size_t size)
{
    uint64_t pg;
    uint8_t *leaf;
    int rc = new_pages(txn, t, 1, &pg, &leaf);
    if (rc)
        return rc;
    page_init(leaf, P_LEAF, txn->db->node_end);
    page_insert_node(leaf, 0, node, size);
    t->root = pg;
    t->root_sum = 0;
    t->depth = 1;
    t->leaf_pages = 1;
    t->entries = 1;
    txn->changes++;
    return 0;
}

/* The node into the leaf at the end of the searched path: over the entry
 * there when exact (its overflow run freed), else as a new entry. */
static int put_node(keel_txn *txn, struct tree_desc *t, struct bt_path *path, bool exact, const uint8_t *node,
                    size_t size, unsigned flags)
{
    int rc = touch_path(txn, t, path);
    if (rc)
        return rc;
    int lv = leaf_level(path);
    uint8_t *leaf = path->page[lv];
    unsigned idx = path->idx[lv];
    if (exact) {
        const uint8_t *old = node_ptr(leaf, idx);
        if (leaf_node_flags(old) & N_BIG) {
            uint64_t ov;
            uint32_t onp;
            if ((rc = overflow_run(txn, old, &ov, &onp)) || (rc = page_free(txn, ov, onp)))
                return rc;
            t->overflow_pages -= onp;
        }
        if (leaf_node_size(old) == size) { /* same shape: overwrite in place */
            memcpy((uint8_t *)old, node, size);
            txn->changes++;
            return 0;
        }
        page_remove_node(leaf, idx);
    } else {
        t->entries++;
    }
    bool append = (flags & KEEL_APPEND) != 0;
    if (!append && idx == page_nkeys(leaf)) {
        /* at the end of the rightmost leaf: a sorted load */
        append = true;
        for (int l = 0; l < lv; l++)
            if (path->idx[l] + 1 != page_nkeys(path->page[l]))
                append = false;
    }
    return insert_at(txn, t, path, lv, idx, node, size, append);
}

/* The node for key and val put at path (exact: over the entry there). */
static int put_at(keel_txn *txn, struct tree_desc *t, struct bt_path *path, bool exact, keel_val key, keel_val val,
                  int64_t expiry, unsigned flags)
{
    unsigned nflags = put_node_flags(txn, key, val, expiry);
    size_t size = leaf_node_size_for(nflags, key.len, val.len);
    uint8_t stackbuf[512];
    uint8_t *node = size <= sizeof(stackbuf) ? stackbuf : os_malloc(size);
    if (!node)
        return KEEL_NOMEM;
    int rc = put_make_node(txn, t, key, val, expiry, nflags, node);
    if (!rc)
        rc = t->root == 0 ? put_first(txn, t, node, size) : put_node(txn, t, path, exact, node, size, flags);
    if (node != stackbuf)
        os_free(node);
    return rc;
}

int bt_put(keel_txn *txn, struct tree_desc *t, keel_val key, keel_val val, int64_t expiry, unsigned flags,
           int64_t *old_expiry)
{
    if (old_expiry)
        *old_expiry = 0;
    struct bt_path path;
    bool exact;
    int rc = put_search(txn, t, key, flags, &expiry, old_expiry, &path, &exact);
    return rc ? rc : put_at(txn, t, &path, exact, key, val, expiry, flags);
}

int bt_insert_at(keel_txn *txn, struct tree_desc *t, struct bt_path *path, keel_val key, keel_val val,
                 int64_t expiry, unsigned flags)
{
    KEEL_ASSERT(t->root == 0 ? path->depth == 0 : path->depth == (int)t->depth);
    return put_at(txn, t, path, false, key, val, expiry, flags);
}

/* ---- delete ----
 * After a delete, each changed page from the leaf up is checked against the
 * fill policy (page_needs_merge, page_starved, pages_fit_merged): a page
 * that needs it merges with a sibling or shares with it, and tells its
 * parent what that asks of it (struct fix), as redb's DeletionResult does. */

/* What the parent must do after its child changed. */
enum fix_kind {
    FIX_NONE,      /* nothing: done */
    FIX_ASCEND,    /* nothing here, but the parent itself needs a look (it has one child) */
    FIX_DROP,      /* drop the parent's node at idx (its page was freed), then look at the parent */
    FIX_SEPARATOR, /* replace the parent's node at idx by sep (the page after it begins elsewhere) */
};
struct fix {
    enum fix_kind kind;
    unsigned idx;
    uint8_t *sep; /* FIX_SEPARATOR: the new node, the parent's to free */
    size_t sepsize;
};

/* The root after a delete: an empty root goes, a branch with one child
 * gives way to it. */
static int collapse_root(keel_txn *txn, struct tree_desc *t, struct bt_path *path)
{
    uint8_t *page = path->page[0];
    unsigned flags = page_flags(page), n = page_nkeys(page);
    int rc;
    if (n == 0) {
        if ((rc = page_free(txn, path->pgno[0], 1)))
            return rc;
        count_page(t, flags, -1);
        t->root = 0;
        t->root_sum = 0;
        t->depth = 0;
    } else if (!(flags & P_LEAF) && n == 1) {
        uint64_t child = branch_node_child(node_ptr(page, 0)), sum = branch_node_sum(node_ptr(page, 0));
        if ((rc = page_free(txn, path->pgno[0], 1)))
            return rc;
        t->branch_pages--;
        t->root = child;
        t->root_sum = sum;
        t->depth--;
    }
    return 0;
}

/* The page at `level` with the sibling it would merge with or share with:
 * the pair is (li, li + 1) in the parent. */
struct merge_pair {
    unsigned li, ri, sib; /* the parent's nodes: left, right, and the sibling's (one of them) */
    uint64_t sibpg;
    const uint8_t *sp; /* the sibling as it is (map or dirty) */
    bool sib_right;
};

static int load_sibling(keel_txn *txn, struct bt_path *path, int level, unsigned flags, struct merge_pair *mp)
{
    uint8_t *parent = path->page[level - 1];
    unsigned pidx = path->idx[level - 1], pn = page_nkeys(parent);
    mp->li = pidx + 1 < pn ? pidx : pidx - 1;
    mp->ri = mp->li + 1;
    mp->sib_right = mp->li == pidx;
    mp->sib = mp->sib_right ? mp->ri : mp->li;
    mp->sibpg = branch_node_child(node_ptr(parent, mp->sib));
    /* The sibling was never searched: check it as a search would, and not
     * a page of the path itself (a damaged parent can point twice at one
     * child; the merge would free it under us). */
    int rc;
    if ((rc = page_get_summed(txn, mp->sibpg, branch_node_sum(node_ptr(parent, mp->sib)), &mp->sp)) ||
        (rc = bt_check_page(txn, mp->sp, mp->sibpg, flags)))
        return rc;
    for (int l = 0; l <= level; l++)
        if (path->page[l] == mp->sp)
            return CORRUPT(mp->sibpg);
    return 0;
}

/* A branch merge or share takes the parent's separator as the key of R's
 * first node (whose own key is never read). */
static uint8_t *joined_node(const keel_txn *txn, const uint8_t *parent, unsigned ri, const uint8_t *R, size_t *size)
{
    const uint8_t *sep = node_ptr(parent, ri), *r0 = node_ptr(R, 0);
    return make_branch_node(txn, branch_node_child(r0), branch_node_sum(r0), branch_node_key(sep),
                            branch_node_ksize(sep), size);
}

/* Merge R into L by appending R's nodes to L: L's own nodes stay where
 * they are, and a right sibling is only read, never copied (it is freed).
 * A left sibling stays, so it is copied for writing. */
static int merge_pages(keel_txn *txn, struct tree_desc *t, struct bt_path *path, int level,
                       const struct merge_pair *mp, struct fix *fix)
{
    uint8_t *page = path->page[level], *parent = path->page[level - 1], *L = page;
    const uint8_t *R = mp->sib_right ? mp->sp : page;
    unsigned flags = page_flags(page);
    uint64_t rpg = mp->sibpg, newpg;
    int rc;
    if (!mp->sib_right) {
        if ((rc = touch_page(txn, mp->sibpg, &newpg, &L)))
            return rc;
        branch_node_set_child(node_mut(parent, mp->sib), newpg); /* a changed page's sum is 0 */
        rpg = path->pgno[level];
    }
    uint8_t *joined = NULL;
    size_t joined_size = 0;
    if (!(flags & P_LEAF) && !(joined = joined_node(txn, parent, mp->ri, R, &joined_size)))
        return KEEL_NOMEM;
    unsigned ln = page_nkeys(L), rn = page_nkeys(R);
    for (unsigned i = 0; i < rn; i++) {
        const uint8_t *nd = node_ptr(R, i);
        if (joined && i == 0)
            page_insert_node(L, ln, joined, joined_size);
        else
            page_insert_node(L, ln + i, nd, node_size(R, nd));
    }
    os_free(joined);
    if ((rc = page_free(txn, rpg, 1)))
        return rc;
    count_page(t, flags, -1);
    *fix = (struct fix){FIX_DROP, mp->ri, NULL, 0};
    return 0;
}

/* Both pages rebuilt from a copy, balanced; the parent's separator
 * changes to match. */
static int share_pages(keel_txn *txn, struct bt_path *path, int level, const struct merge_pair *mp, struct fix *fix)
{
    uint32_t ps = txn->db->psize;
    uint8_t *page = path->page[level], *parent = path->page[level - 1], *sibbuf, *sc;
    unsigned flags = page_flags(page);
    uint64_t newpg;
    int rc;
    if ((rc = touch_page(txn, mp->sibpg, &newpg, &sibbuf)))
        return rc;
    branch_node_set_child(node_mut(parent, mp->sib), newpg); /* a changed page's sum is 0 */
    if (page_flags(sibbuf) != flags)
        return CORRUPT(mp->sibpg);
    uint8_t *L = mp->sib_right ? page : sibbuf, *R = mp->sib_right ? sibbuf : page;
    uint64_t rpg = mp->sib_right ? newpg : path->pgno[level];
    if (!(sc = scratch_take(txn)))
        return KEEL_NOMEM;
    memcpy(sc, L, ps);
    memcpy(sc + ps, R, ps);
    size_t n, s = 0, joined_size = 0, ln = page_nkeys(sc);
    struct piece *pc = collect_pieces(sc, sc + ps, 0, NULL, 0, &n);
    uint8_t *joined = NULL;
    rc = pc ? 0 : KEEL_NOMEM;
    if (!rc && !(flags & P_LEAF)) {
        if ((joined = joined_node(txn, parent, mp->ri, sc + ps, &joined_size)))
            pc[ln] = (struct piece){joined, joined_size};
        else
            rc = KEEL_NOMEM;
    }
    if (!rc && !(s = choose_split(pc, n, usable(txn), false)))
        rc = CORRUPT(0);
    /* the separator: R's whole first key (not the shortest, as splits cut
     * it); the bytes written stay those of the format as it is */
    if (!rc && !(rc = fill_pair(txn, L, R, flags, pc, n, s, false, rpg, &fix->sep, &fix->sepsize))) {
        fix->kind = FIX_SEPARATOR;
        fix->idx = mp->ri;
    }
    os_free(joined);
    os_free(pc);
    scratch_give(txn);
    return rc;
}

/* The child at `level` (not the root) after a delete: is it full enough,
 * and if not, does it merge or share with a sibling (fix: what the parent
 * must do then).  A page under half full merges when the two fit in 7/8 of
 * a page; a page under a quarter full (starved) merges whenever the two fit
 * in one, and shares when they do not. */
static int fix_child(keel_txn *txn, struct tree_desc *t, struct bt_path *path, int level, struct fix *fix)
{
    uint32_t ps = txn->db->node_end;
    uint8_t *page = path->page[level], *parent = path->page[level - 1];
    unsigned flags = page_flags(page), n = page_nkeys(page);
    bool leaf = flags & P_LEAF;
    size_t used = page_used(page, ps), u = usable(txn);
    int rc;
    *fix = (struct fix){FIX_NONE, 0, NULL, 0};
    if (n > 0 && !page_needs_merge(used, u) && (leaf || n >= 2))
        return 0;
    bool must = n == 0 || page_starved(used, u) || (!leaf && n < 2); /* else merge only if it fits well */
    if (n == 0) { /* empty: unlink it */
        if ((rc = page_free(txn, path->pgno[level], 1)))
            return rc;
        count_page(t, flags, -1);
        *fix = (struct fix){FIX_DROP, path->idx[level - 1], NULL, 0};
        return 0;
    }
    if (page_nkeys(parent) < 2) {
        fix->kind = must ? FIX_ASCEND : FIX_NONE;
        return 0;
    }
    struct merge_pair mp;
    if ((rc = load_sibling(txn, path, level, flags, &mp)))
        return rc;
    size_t extra = leaf ? 0 : branch_node_ksize(node_ptr(parent, mp.ri)); /* the separator a branch takes in */
    if (!must && !pages_fit_merged(used + page_used(mp.sp, ps) + extra, u))
        return 0; /* would not fit well: leave the sibling untouched */
    /* the sibling's nodes are read (a merge) or rebuilt (a share) through
     * unchecked accessors: a page from the map is checked whole first */
    if (!page_dirty(txn, mp.sibpg) && !page_known_whole(txn->db, mp.sibpg, branch_node_sum(node_ptr(parent, mp.sib))) &&
        (rc = check_nodes(txn, mp.sp)))
        return rc;
    const uint8_t *R = mp.sib_right ? mp.sp : page;
    size_t rfirst = leaf ? 0 : branch_node_ksize(node_ptr(R, 0)); /* replaced by the separator */
    size_t total = used + page_used(mp.sp, ps) + extra - rfirst;
    if (total <= u && (must || pages_fit_merged(total, u)))
        return merge_pages(txn, t, path, level, &mp, fix);
    return must ? share_pages(txn, path, level, &mp, fix) : 0;
}

/* The parent at `level` does what its child's fix asks. */
static int apply_fix(keel_txn *txn, struct tree_desc *t, struct bt_path *path, int level, struct fix *fix)
{
    uint8_t *parent = path->page[level];
    int rc = 0;
    switch (fix->kind) {
    case FIX_NONE:
    case FIX_ASCEND:
        break;
    case FIX_DROP:
        page_remove_node(parent, fix->idx);
        if (fix->idx == 0 && page_nkeys(parent) > 0) { /* the new first key is never read */
            uint8_t first[BRANCH_FIRST_MAX];
            size_t fs = branch_first(txn, first, node_ptr(parent, 0));
            page_remove_node(parent, 0);
            page_insert_node(parent, 0, first, fs);
        }
        txn->changes++;
        break;
    case FIX_SEPARATOR:
        page_remove_node(parent, fix->idx);
        txn->changes++;
        rc = insert_at(txn, t, path, level, fix->idx, fix->sep, fix->sepsize, false);
        os_free(fix->sep);
        break;
    }
    return rc;
}

/* From the page at `level` up, after a delete there. */
static int rebalance(keel_txn *txn, struct tree_desc *t, struct bt_path *path, int level)
{
    for (;; level--) {
        check_level(path, level);
        if (level == 0)
            return collapse_root(txn, t, path);
        struct fix fix;
        int rc = fix_child(txn, t, path, level, &fix);
        if (rc || fix.kind == FIX_NONE)
            return rc;
        if ((rc = apply_fix(txn, t, path, level - 1, &fix)) || fix.kind == FIX_SEPARATOR)
            return rc; /* a share leaves the parent no emptier: done */
    }
}

/* Deletes key; with live_only, an entry whose expiry is <= txn->now counts
 * as absent and is left alone (a failed call changes nothing). */
/* count: the deleted node's value when it is a pair count (PAIR_COUNT_SIZE
 * bytes, inline), else 0 */
static int del_entry(keel_txn *txn, struct tree_desc *t, keel_val key, int64_t *old_expiry, bool live_only,
                     uint64_t *count)
{
    struct bt_path path;
    bool exact;
    int rc = bt_search(txn, t, key.data, key.len, &path, &exact);
    if (rc)
        return rc;
    if (!exact)
        return KEEL_NOTFOUND;
    if (live_only) {
        const uint8_t *cur;
        if ((rc = node_at(path.page[leaf_level(&path)], path.idx[leaf_level(&path)], txn->db->node_end, &cur)))
            return rc;
        int64_t e = leaf_node_expiry(cur);
        if (e && e <= txn->now)
            return KEEL_NOTFOUND;
    }
    if ((rc = touch_path(txn, t, &path)))
        return rc;
    int lv = leaf_level(&path);
    uint8_t *leaf = path.page[lv];
    const uint8_t *old = node_ptr(leaf, path.idx[lv]);
    if (old_expiry)
        *old_expiry = leaf_node_expiry(old);
    if (count)
        *count = !(leaf_node_flags(old) & N_BIG) && leaf_node_vsize(old) == PAIR_COUNT_SIZE
                     ? rd64(leaf_node_val(old)) : 0;
    if (leaf_node_flags(old) & N_BIG) {
        uint64_t ov;
        uint32_t onp;
        if ((rc = overflow_run(txn, old, &ov, &onp)) || (rc = page_free(txn, ov, onp)))
            return rc;
        t->overflow_pages -= onp;
    }
    page_remove_node(leaf, path.idx[lv]);
    t->entries--;
    txn->changes++;
    return rebalance(txn, t, &path, lv);
}

int bt_del(keel_txn *txn, struct tree_desc *t, keel_val key, int64_t *old_expiry)
{
    return del_entry(txn, t, key, old_expiry, false, NULL);
}

int bt_del_live(keel_txn *txn, struct tree_desc *t, keel_val key, int64_t *old_expiry)
{
    return del_entry(txn, t, key, old_expiry, true, NULL);
}

int bt_del_pair(keel_txn *txn, struct tree_desc *t, keel_val key, bool live_only, int64_t *old_expiry,
                uint64_t *count)
{
    return del_entry(txn, t, key, old_expiry, live_only, count);
}

int bt_update_value(keel_txn *txn, struct tree_desc *t, struct bt_path *path, const void *val, size_t len)
{
    int lv = leaf_level(path);
    const uint8_t *cur;
    int rc = node_at(path->page[lv], path->idx[lv], txn->db->node_end, &cur);
    if (rc)
        return rc;
    if ((leaf_node_flags(cur) & N_BIG) || leaf_node_vsize(cur) < len)
        return CORRUPT(path->pgno[lv]);
    if ((rc = touch_path(txn, t, path)))
        return rc;
    uint8_t *leaf = path->page[lv], *n = node_mut(leaf, path->idx[lv]);
    txn->changes++;
    if (leaf_node_vsize(n) == len) {
        memcpy(n + (leaf_node_val(n) - n), val, len);
        return 0;
    }
    /* shorter: the node rebuilt in its place (the page only gains room) */
    unsigned f = leaf_node_flags(n);
    size_t ks = leaf_node_ksize(n), size = leaf_node_size_for(f, ks, len);
    uint8_t stackbuf[512];
    uint8_t *node = size <= sizeof(stackbuf) ? stackbuf : os_malloc(size);
    if (!node)
        return KEEL_NOMEM;
    uint8_t *v = leaf_node_write(node, f, leaf_node_key(n), ks, (uint32_t)len, leaf_node_expiry(n));
    if (len)
        memcpy(v, val, len);
    page_remove_node(leaf, path->idx[lv]);
    page_insert_node(leaf, path->idx[lv], node, size);
    if (node != stackbuf)
        os_free(node);
    return 0;
}

int bt_set_expiry(keel_txn *txn, struct tree_desc *t, keel_val key, int64_t expiry, int64_t *old_expiry)
{
    struct bt_path path;
    bool exact;
    int rc = bt_search(txn, t, key.data, key.len, &path, &exact);
    if (rc)
        return rc;
    if (!exact)
        return KEEL_NOTFOUND;
    const uint8_t *cur;
    int lv = leaf_level(&path);
    if ((rc = node_at(path.page[lv], path.idx[lv], txn->db->node_end, &cur)))
        return rc;
    *old_expiry = leaf_node_expiry(cur);
    if (*old_expiry == expiry)
        return 0;
    if ((rc = touch_path(txn, t, &path)))
        return rc;
    uint8_t *leaf = path.page[lv];
    cur = node_ptr(leaf, path.idx[lv]);
    /* the same node with the expiry field added, changed or removed; an
     * overflow value stays where it is */
    unsigned f = leaf_node_flags(cur), nf = expiry ? (f | N_EXPIRES) : (f & ~N_EXPIRES);
    size_t ksize = leaf_node_ksize(cur), vpart = leaf_node_size(cur) - (size_t)(leaf_node_val(cur) - cur);
    size_t size = leaf_node_size_for(nf, ksize, leaf_node_vsize(cur));
    uint8_t stackbuf[512];
    uint8_t *node = size <= sizeof(stackbuf) ? stackbuf : os_malloc(size);
    if (!node)
        return KEEL_NOMEM;
    uint8_t *vdst = leaf_node_write(node, nf, leaf_node_key(cur), ksize, leaf_node_vsize(cur), expiry);
    memcpy(vdst, leaf_node_val(cur), vpart);
    if (size == leaf_node_size(cur)) {
        memcpy((uint8_t *)cur, node, size);
        txn->changes++;
    } else {
        page_remove_node(leaf, path.idx[lv]);
        rc = insert_at(txn, t, &path, lv, path.idx[lv], node, size, false);
    }
    if (node != stackbuf)
        os_free(node);
    return rc;
}

/* ---- whole-tree walks ---- */
struct walker {
    keel_txn *txn;
    int (*fn)(void *ctx, uint64_t pgno, uint32_t npages, unsigned kind, int level);
    void *ctx;
    unsigned depth;
    uint64_t budget; /* pages left to visit: a damaged tree can share pages (a DAG), */
};                   /* reaching exponentially many; no tree has more pages than the file */

static int walk_page(struct walker *w, uint64_t pg, uint64_t sum, unsigned level)
{
    keel_txn *txn = w->txn;
    if (level >= w->depth || w->budget-- == 0)
        return CORRUPT(pg);
    const uint8_t *page;
    int rc = page_get_summed(txn, pg, sum, &page);
    if (rc)
        return rc;
    bool leaf = level + 1 == w->depth;
    if ((rc = bt_check_page(txn, page, pg, leaf ? P_LEAF : P_BRANCH)))
        return rc;
    if ((rc = w->fn(w->ctx, pg, 1, leaf ? P_LEAF : P_BRANCH, (int)level)))
        return rc;
    unsigned n = page_nkeys(page);
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *nd;
        if ((rc = node_at(page, i, txn->db->node_end, &nd)))
            return rc;
        if (!leaf) {
            if ((rc = walk_page(w, branch_node_child(nd), branch_node_sum(nd), level + 1)))
                return rc;
        } else if (leaf_node_flags(nd) & N_BIG) {
            uint64_t ov;
            uint32_t np;
            if ((rc = overflow_run(txn, nd, &ov, &np)) || (rc = w->fn(w->ctx, ov, np, P_OVERFLOW, (int)level)))
                return rc;
        }
    }
    return 0;
}

int bt_walk(keel_txn *txn, const struct tree_desc *t,
            int (*fn)(void *ctx, uint64_t pgno, uint32_t npages, unsigned kind, int level), void *ctx)
{
    if (t->root == 0)
        return 0;
    if (t->depth == 0 || t->depth > KEEL_MAX_DEPTH)
        return CORRUPT(t->root);
    struct walker w = {txn, fn, ctx, t->depth, txn->meta.npages};
    return walk_page(&w, t->root, t->root_sum, 0);
}

static int collect_page(void *ctx, uint64_t pgno, uint32_t npages, unsigned kind, int level)
{
    (void)kind;
    (void)level;
    struct pgvec *v = ctx;
    int rc = pgvec_push(v, pgno);
    return rc ? rc : pgvec_push(v, npages);
}

int bt_drop(keel_txn *txn, struct tree_desc *t)
{
    struct pgvec pages = {0};
    int rc = bt_walk(txn, t, collect_page, &pages); /* collect first: freeing drops dirty buffers */
    for (size_t i = 0; rc == 0 && i < pages.n; i += 2)
        rc = page_free(txn, pages.v[i], (uint32_t)pages.v[i + 1]);
    pgvec_free(&pages);
    if (rc)
        return rc;
    uint32_t id = t->id;
    memset(t, 0, sizeof(*t));
    t->id = id;
    txn->changes++;
    return 0;
}

/* ---- runs of inserts in key order ---- */

/* The bounds of the leaf at the end of a touched path: lo = the separator
 * that leads to it (NULL: the leftmost leaf), hi = the next one (NULL: the
 * rightmost leaf).  They point into the path's dirty branch pages. */
static int finger_bounds(keel_txn *txn, struct bt_finger *f)
{
    uint32_t ps = txn->db->node_end;
    f->lo = f->hi = NULL;
    f->lolen = f->hilen = 0;
    for (int l = f->path.depth - 2; l >= 0 && (!f->lo || !f->hi); l--) {
        const uint8_t *page = f->path.page[l], *n;
        unsigned i = f->path.idx[l];
        if (!f->lo && i > 0) {
            if (node_at(page, i, ps, &n))
                return KEEL_CORRUPTED; /* node_at recorded where */
            f->lo = branch_node_key(n);
            f->lolen = branch_node_ksize(n);
        }
        if (!f->hi && i + 1 < page_nkeys(page)) {
            if (node_at(page, i + 1, ps, &n))
                return KEEL_CORRUPTED; /* node_at recorded where */
            f->hi = branch_node_key(n);
            f->hilen = branch_node_ksize(n);
        }
    }
    return 0;
}

/* Where key goes in the finger's leaf (page_search for it: page_search
 * itself stays inlined in bt_search, the path of every get); *inside false
 * when key is outside the leaf's bounds.  Runs mostly append, so the leaf's
 * last key is tried first: a key above it is above the low bound too. */
static int finger_find(keel_txn *txn, struct bt_finger *f, keel_val key, bool *inside, bool *exact)
{
    uint32_t ps = txn->db->node_end;
    int lv = leaf_level(&f->path);
    const uint8_t *leaf = f->path.page[lv], *n;
    unsigned lo = 0, hi = page_nkeys(leaf), *idx = &f->path.idx[lv];
    *exact = false;
    *inside = false;
    if (hi == 0 || (f->hi && key_cmp(key.data, key.len, f->hi, f->hilen) >= 0))
        return 0;
    if (node_at(leaf, hi - 1, ps, &n))
        return KEEL_CORRUPTED; /* node_at recorded where */
    int c = key_cmp(leaf_node_key(n), leaf_node_ksize(n), key.data, key.len);
    if (c <= 0) {
        *idx = c ? hi : hi - 1;
        *exact = c == 0;
        *inside = true;
        return 0;
    }
    if (f->lo && key_cmp(key.data, key.len, f->lo, f->lolen) < 0)
        return 0;
    hi--;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        if (node_at(leaf, mid, ps, &n))
            return KEEL_CORRUPTED; /* node_at recorded where */
        c = key_cmp(leaf_node_key(n), leaf_node_ksize(n), key.data, key.len);
        if (c < 0)
            lo = mid + 1;
        else {
            hi = mid;
            if (c == 0)
                *exact = true;
        }
    }
    *idx = lo;
    *inside = true;
    return 0;
}

int bt_put_next(keel_txn *txn, struct tree_desc *t, keel_val key, keel_val val, struct bt_finger *f)
{
    size_t size = leaf_node_size_for(0, key.len, val.len);
    if (size > txn->db->inline_max) {
        f->valid_at = 0;
        return bt_put(txn, t, key, val, 0, 0, NULL);
    }
    int rc;
    bool exact;
    struct bt_path *p = &f->path;
    bool inside = false;
    if (f->valid_at == txn->changes && p->depth > 0 && (rc = finger_find(txn, f, key, &inside, &exact)))
        return rc;
    f->valid_at = 0;
    if (!inside) {
        rc = bt_search(txn, t, key.data, key.len, p, &exact);
        if (rc == KEEL_NOTFOUND) /* an empty tree: bt_put makes its first leaf */
            return bt_put(txn, t, key, val, 0, 0, NULL);
        if (rc || exact || (rc = touch_path(txn, t, p)) || (rc = finger_bounds(txn, f)))
            return rc ? rc : bt_put(txn, t, key, val, 0, 0, NULL);
    }
    if (exact) /* an overwrite: not what a run of new keys is for */
        return bt_put(txn, t, key, val, 0, 0, NULL);
    uint8_t stackbuf[512];
    uint8_t *node = size <= sizeof(stackbuf) ? stackbuf : os_malloc(size);
    if (!node)
        return KEEL_NOMEM;
    uint8_t *vdst = leaf_node_write(node, 0, key.data, key.len, (uint32_t)val.len, 0);
    if (val.len)
        memcpy(vdst, val.data, val.len);
    int lv = leaf_level(p);
    uint8_t *leaf = p->page[lv];
    unsigned idx = p->idx[lv];
    bool fits = page_room(leaf) >= size + SLOT_SIZE;
    t->entries++;
    /* at the end of the rightmost leaf: an append, so a split leaves the left page full */
    rc = insert_at(txn, t, p, lv, idx, node, size, !f->hi && idx == page_nkeys(leaf));
    if (node != stackbuf)
        os_free(node);
    if (!rc && fits) /* no split: the path and the bounds still hold */
        f->valid_at = txn->changes;
    return rc;
}

/* ---- relocation (freelist_relocate) ----
 * The walk visits the leaves' parents (the root, if it is a leaf) in key
 * order, each with one descent from the root: a leaf's number is in its
 * parent, so leaves are read only in a tree with overflow runs.  A page at
 * or above m->hi is moved by touching the path to it, the ordinary
 * copy-on-write, so its parents (and the descriptor) follow; every page the
 * path copies comes from the pool, which the caller has made sure holds
 * pages below hi (page_pool_below), so a copy never lands higher.  The
 * position is a child index per level, not a pointer: between txns the
 * tree may change under it, and then the walk only skips or repeats part
 * of a pass. */

/* Copies the pages of the path still in the map.  Nothing changes when
 * the budget is short (it ends: m->copies 0) or the pool has too few pages
 * below hi (m->stalled). */
static int move_path(keel_txn *txn, struct tree_desc *t, struct bt_path *path, struct bt_mover *m)
{
    uint32_t fresh = 0;
    uint64_t before[KEEL_MAX_DEPTH];
    for (int l = 0; l < path->depth; l++) {
        fresh += page_in_map(txn->db, path->page[l]);
        before[l] = path->pgno[l];
    }
    if (fresh == 0)
        return 0;
    if (m->copies < fresh) {
        m->copies = 0;
        return 0;
    }
    if (!page_pool_below(txn, fresh, m->hi)) {
        m->stalled = true;
        return 0;
    }
    int rc = touch_path(txn, t, path);
    if (rc)
        return rc;
    m->copies -= fresh;
    for (int l = 0; l < path->depth; l++)
        m->moved += before[l] >= m->hi && path->pgno[l] < m->hi;
    txn->changes++;
    return 0;
}

static bool mover_out(const struct bt_mover *m) { return m->copies == 0 || m->stalled; }

/* The overflow runs of the leaf at the end of path at or above hi, each to
 * a run of pool pages below it (left where it is when the pool has none). */
static int move_runs(keel_txn *txn, struct tree_desc *t, struct bt_path *path, struct bt_mover *m)
{
    int lv = leaf_level(path);
    uint32_t ps = txn->db->psize, end = txn->db->node_end;
    for (unsigned j = 0; j < page_nkeys(path->page[lv]) && !mover_out(m); j++) {
        const uint8_t *nd;
        uint64_t ov;
        uint32_t np;
        int rc = node_at(path->page[lv], j, end, &nd);
        if (rc)
            return rc;
        if (!(leaf_node_flags(nd) & N_BIG))
            continue;
        if ((rc = overflow_run(txn, nd, &ov, &np)))
            return rc;
        if (ov + np <= m->hi || page_dirty(txn, ov))
            continue;
        /* a run longer than the whole budget moves alone in its commit */
        uint32_t need = np + (uint32_t)path->depth;
        if (m->copies < need && m->copies < m->copies_max) {
            m->copies = 0;
            return 0;
        }
        uint64_t nov;
        uint8_t *nbuf;
        KEEL_ASSERT(txn->scratch_depth == 0);
        rc = page_alloc_below(txn, np, m->hi, &nov, &nbuf);
        if (rc == KEEL_NOTFOUND) {
            m->skipped += np;
            continue;
        }
        if (m->copies < need)
            m->copies = need;
        if (rc || (rc = move_path(txn, t, path, m)))
            return rc;
        if (page_in_map(txn->db, path->page[lv])) /* the path could not move: the run goes back to the pool */
            return page_free(txn, nov, np);
        const uint8_t *old;
        uint8_t *node;
        if ((rc = page_get(txn, ov, &old)) || (rc = node_at(path->page[lv], j, end, (const uint8_t **)&node)) ||
            (txn->verify && (rc = page_verify(txn, old, ov, np, leaf_node_overflow_sum(node)))))
            return rc;
        memcpy(nbuf, old, (size_t)np * ps);
        page_set_pgno(nbuf, nov);
        leaf_node_set_overflow(node, nov);
        if (txn->db->summed)
            leaf_node_set_overflow_sum(node, pager_seal(txn, nbuf, np));
        if ((rc = page_free(txn, ov, np)))
            return rc;
        m->copies -= m->copies < np ? m->copies : np;
        m->moved += np;
        txn->changes++;
    }
    return 0;
}

/* Descends along m->pos to the page at level `unit`; a position past a
 * page's last child goes on at the next child one level up.  *done when
 * it passes the root's last child; path->depth 0 when the read budget ran out. */
static int mover_descend(keel_txn *txn, const struct tree_desc *t, struct bt_mover *m, int unit,
                         struct bt_path *path, bool *done)
{
    path->depth = 0;
    for (;;) {
        uint64_t pg = t->root, sum = t->root_sum;
        int level;
        for (level = 0;; level++) {
            if (m->reads == 0)
                return 0;
            m->reads--;
            const uint8_t *page;
            bool leaf = level + 1 == (int)t->depth;
            int rc = page_get_summed(txn, pg, sum, &page);
            if (rc || (rc = bt_check_page(txn, page, pg, leaf ? P_LEAF : P_BRANCH)))
                return rc;
            path->pgno[level] = pg;
            path->page[level] = (uint8_t *)page;
            if (level == unit) {
                path->depth = level + 1;
                return 0;
            }
            if (m->pos[level] >= page_nkeys(page))
                break;
            const uint8_t *nd;
            if ((rc = node_at(page, m->pos[level], txn->db->node_end, &nd)))
                return rc;
            path->idx[level] = m->pos[level];
            pg = branch_node_child(nd);
            sum = branch_node_sum(nd);
        }
        if (level == 0) {
            *done = true;
            return 0;
        }
        m->pos[level - 1]++;
        for (int l = level; l <= unit; l++)
            m->pos[l] = 0;
    }
}

/* One visited page (at level unit, path->depth == unit + 1): the path to
 * it, then its children that are leaves, from m->pos[unit] on. */
static int move_unit(keel_txn *txn, struct tree_desc *t, struct bt_path *path, int unit, struct bt_mover *m)
{
    bool high = false;
    for (int l = 0; l <= unit; l++)
        high |= path->pgno[l] >= m->hi && page_in_map(txn->db, path->page[l]);
    int rc = high ? move_path(txn, t, path, m) : 0;
    if (rc || mover_out(m))
        return rc;
    bool runs = t->overflow_pages > 0;
    if (t->depth == 1)
        return runs ? move_runs(txn, t, path, m) : 0;
    uint8_t *parent = path->page[unit];
    for (uint32_t i = m->pos[unit]; i < page_nkeys(parent) && !mover_out(m); i++) {
        const uint8_t *nd;
        if ((rc = node_at(parent, i, txn->db->node_end, &nd)))
            return rc;
        uint64_t child = branch_node_child(nd);
        bool move = child >= m->hi && !page_dirty(txn, child);
        if (!move && !runs)
            continue;
        if (m->reads == 0)
            return 0;
        m->reads--;
        const uint8_t *leaf;
        if ((rc = page_get_summed(txn, child, branch_node_sum(nd), &leaf)) ||
            (rc = bt_check_page(txn, leaf, child, P_LEAF)))
            return rc;
        path->idx[unit] = i;
        path->pgno[unit + 1] = child;
        path->page[unit + 1] = (uint8_t *)leaf;
        path->depth = unit + 2;
        if (move && (rc = move_path(txn, t, path, m)))
            return rc;
        if (!mover_out(m) && runs && (rc = move_runs(txn, t, path, m)))
            return rc;
        if (mover_out(m))
            return 0; /* this child again next time: what is left of it */
        m->pos[unit] = i + 1;
        path->depth = unit + 1;
        parent = path->page[unit]; /* a dirty copy now, if the path moved */
    }
    return 0;
}

int bt_move_high(keel_txn *txn, struct tree_desc *t, struct bt_mover *m, bool *done)
{
    *done = false;
    if (t->root == 0) {
        *done = true;
        return 0;
    }
    if (t->depth == 0 || t->depth > KEEL_MAX_DEPTH)
        return CORRUPT(t->root);
    int unit = t->depth >= 2 ? (int)t->depth - 2 : 0;
    while (!mover_out(m) && m->reads) {
        struct bt_path path;
        int rc = mover_descend(txn, t, m, unit, &path, done);
        if (rc || *done || path.depth == 0)
            return rc;
        if ((rc = move_unit(txn, t, &path, unit, m)))
            return rc;
        if (mover_out(m) || m->reads == 0)
            return 0; /* this page again next time: what is left of it */
        m->pos[unit] = 0;
        if (unit == 0) {
            *done = true;
            return 0;
        }
        m->pos[unit - 1]++;
    }
    return 0;
}
