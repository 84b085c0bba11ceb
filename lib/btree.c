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
 *     page under a quarter full that cannot merge shares with it.
 *   - bt_move_high copies pages only through the same path touch, so it
 *     changes page numbers (and the pointers to them), never the tree's
 *     content or shape.
 *   - Any error after the first change leaves the txn poisoned (txn->error);
 *     the caller sets that.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Bytewise order, a prefix first.  The first 8 bytes are compared as one
 * big-endian word: most comparisons end there without a call to memcmp. */
static inline int key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    if (n >= 8) {
        uint64_t x, y;
        memcpy(&x, a, 8);
        memcpy(&y, b, 8);
        if (x != y) {
            x = __builtin_bswap64(x);
            y = __builtin_bswap64(y);
            return x < y ? -1 : 1;
        }
    }
    else {
        for (size_t i = 0; i < n; i++) /* short keys (branch separators are often 1-3 bytes) */
            if (a[i] != b[i])
                return a[i] < b[i] ? -1 : 1;
        return alen < blen ? -1 : alen > blen;
    }
    int c = memcmp(a + 8, b + 8, n - 8);
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

int bt_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) { return key_cmp(a, alen, b, blen); }

static inline size_t usable(const keel_txn *txn) { return txn->db->psize - PAGE_HDR; }

/* ---- page checks ---- */
int bt_check_page(keel_txn *txn, const uint8_t *page, uint64_t pgno, unsigned want)
{
    uint32_t ps = txn->db->psize;
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
 * each at a different one.  Reads check only the nodes they visit (node_at),
 * but edits shift, copy and rebuild every node of a page through unchecked
 * accessors, so a damaged node anywhere in it would make them read or write
 * out of bounds.  It runs once per page copied for writing, so it is one
 * walk along the node area (a size per node) and one pass over the slots (a
 * bit test each), with no key decoded and no sort.  Dirty pages are built
 * here and keep the property. */
static int check_nodes(keel_txn *txn, const uint8_t *page)
{
    uint32_t upper = page_upper(page), area = txn->db->psize - upper; /* bt_check_page: upper <= psize */
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

/* Prefetches the nodes the first `levels` probes of lower_bound over
 * [lo, hi) may look at (the same midpoints). */
static inline void prefetch_probes(const uint8_t *page, unsigned lo, unsigned hi, int levels)
{
    if (levels == 0 || lo >= hi)
        return;
    unsigned m = lo + (hi - lo) / 2;
    __builtin_prefetch(page + page_slot(page, m) + 8);
    prefetch_probes(page, lo, m, levels - 1);
    prefetch_probes(page, m + 1, hi, levels - 1);
}

/* The first index in [lo, hi) whose key is >= key (hi if none); *exact when
 * equal.  Always inlined: page_search gets a copy for each kind of page, so
 * that the leaf-only prefetch costs the branches nothing and a dirty page
 * (built by this txn from pages checked whole: touch_path) skips the
 * per-node bounds checks a page read from the file needs. */
static inline __attribute__((always_inline)) int lower_bound(const uint8_t *page, uint32_t ps, bool leaf,
                                                             bool trusted, unsigned lo, unsigned hi,
                                                             const uint8_t *key, size_t klen, unsigned *idx,
                                                             bool *exact)
{
    /* A leaf not in the cache: ask for the nodes of the first three probes
     * at once (seven nodes), then one probe ahead in the loop, so their
     * cache misses overlap instead of following one another.  Four levels
     * up front gained nothing more (doc/benchmarks.md has the figures). */
    if (leaf && hi - lo > 6)
        prefetch_probes(page, lo, hi, 3);
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        /* In a leaf, the probe after this one is one of two nodes: ask for
         * both now, so that a leaf not in the cache costs about one memory
         * wait per two probes, not one per probe.  Leaves only: in a big
         * tree they are the pages not in the cache, the branches above them
         * mostly are.  (A prefetch never faults, and the slots read here lie
         * in the slot array bt_check_page checked.) */
        if (leaf && hi - lo > 2) {
            __builtin_prefetch(page + page_slot(page, lo + (mid - lo) / 2) + 8);
            __builtin_prefetch(page + page_slot(page, mid + 1 + (hi - mid - 1) / 2) + 8);
        }
        const uint8_t *n;
        if (trusted)
            n = node_ptr(page, mid);
        else if (node_at(page, mid, ps, &n))
            return KEEL_CORRUPTED; /* node_at recorded where */
        const uint8_t *k;
        size_t kl;
        if (leaf) {
            k = leaf_node_key(n);
            kl = leaf_node_ksize(n);
        } else {
            k = branch_node_key(n);
            kl = branch_node_ksize(n);
        }
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

/* In a leaf: the first index whose key is >= key (nkeys if none); *exact when equal.
 * In a branch: the last index i >= 1 whose key is <= key, else 0. */
static int page_search(keel_txn *txn, const uint8_t *page, const uint8_t *key, size_t klen,
                       unsigned *idx, bool *exact)
{
    uint32_t ps = txn->db->psize;
    bool trusted = !page_in_map(txn->db, page);
    *exact = false;
    if (page_flags(page) & P_LEAF)
        return trusted ? lower_bound(page, ps, true, true, 0, page_nkeys(page), key, klen, idx, exact)
                       : lower_bound(page, ps, true, false, 0, page_nkeys(page), key, klen, idx, exact);
    unsigned lo;
    int rc = trusted ? lower_bound(page, ps, false, true, 1, page_nkeys(page), key, klen, &lo, exact)
                     : lower_bound(page, ps, false, false, 1, page_nkeys(page), key, klen, &lo, exact);
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
    uint64_t pg = t->root;
    for (unsigned level = 0;; level++) {
        KEEL_ASSERT(level < t->depth); /* the leaf level returns: the path fits */
        const uint8_t *page;
        int rc = page_get(txn, pg, &page);
        if (rc)
            return rc;
        bool leaf = level + 1 == t->depth;
        if ((rc = bt_check_page(txn, page, pg, leaf ? P_LEAF : P_BRANCH)))
            return rc;
        path->pgno[level] = pg;
        path->page[level] = (uint8_t *)page;
        unsigned idx;
        if ((rc = page_search(txn, page, key, klen, &idx, exact)))
            return rc;
        path->idx[level] = idx;
        if (leaf) {
            path->depth = (int)level + 1;
            return 0;
        }
        const uint8_t *n;
        if ((rc = node_at(page, idx, txn->db->psize, &n)))
            return rc;
        pg = branch_node_child(n);
    }
}

static uint32_t overflow_pages_for(const keel_txn *txn, uint64_t vsize)
{
    return (uint32_t)((PAGE_HDR + vsize + txn->db->psize - 1) / txn->db->psize);
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
    uint32_t need = overflow_pages_for(txn, vsize);
    const uint8_t *p;
    int rc = page_get(txn, ov, &p);
    if (rc)
        return rc;
    if (page_flags(p) != P_OVERFLOW || page_upper(p) != need)
        return CORRUPT(ov);
    /* a run in the map must end inside the file (a dirty one is a buffer of need pages) */
    if (page_in_map(txn->db, p) && ov + need > page_map_limit(txn))
        return CORRUPT(ov);
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
    *npages = overflow_pages_for(txn, leaf_node_vsize(node));
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
    if ((rc = node_at(path.page[path.depth - 1], path.idx[path.depth - 1], txn->db->psize, &n)))
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

static uint8_t *scratch(keel_txn *txn)
{
    KEEL_ASSERT(txn->nest >= 0); /* freelist_reclaim's nesting is balanced */
    int k = txn->nest > 1 ? 1 : txn->nest;
    if (!txn->scratch[k])
        txn->scratch[k] = os_malloc(2 * (size_t)txn->db->psize);
    return txn->scratch[k];
}

static uint8_t *make_branch_node(uint64_t child, const uint8_t *key, size_t klen, size_t *size)
{
    uint8_t *n = os_malloc(BRANCH_HDR + klen);
    if (!n)
        return NULL;
    *size = branch_node_write(n, child, key, klen);
    return n;
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

/* A full leaf (not an append) first looks at its siblings that are dirty
 * already (no page to copy and write for them).  One with room takes a
 * share: the two end balanced with the new node (share_move).  If the roomier one
 * is nearly full too, the two become three pages, each about two thirds
 * full, where a plain split would leave two half-full pages beside a full
 * one.  The separators in the parent change to match.  This is a B*-tree's
 * overflow handling: random inserts leave leaves about 5/6 full instead of
 * the 2/3 of plain splits, so a big load writes fewer pages and its file is
 * smaller.  A clean sibling (to be copied first, as a split writes a new
 * page) is taken for a share only, and only with an eighth of a page free:
 * commits of a few random puts then keep the tree as full as big loads do
 * (file after the benchmark's "remove half": 0.88 of LMDB's without, 0.80
 * with).  KEEL_NOTFOUND when no sibling can help (the caller splits); the
 * tree is unchanged then (a clean sibling may have been copied). */
static int share_with_sibling(keel_txn *txn, struct tree_desc *t, struct bt_path *path, int level, unsigned idx,
                              const uint8_t *node, size_t size)
{
    uint32_t ps = txn->db->psize;
    uint8_t *page = path->page[level];
    uint8_t *parent = path->page[level - 1];
    unsigned pidx = path->idx[level - 1], pn = page_nkeys(parent);
    uint8_t *sib = NULL; /* the roomier dirty sibling */
    unsigned sidx = 0, cidx = 0;
    size_t room = 0, croom = 0; /* ... and the roomier clean one worth its copy */
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
                   page_room(sp) >= usable(txn) / 8 + size + SLOT_SIZE && page_room(sp) > croom) {
            croom = page_room(sp);
            cidx = i;
        }
    }
    if (!sib) { /* a clean sibling: checked whole, then copied */
        if (!croom)
            return KEEL_NOTFOUND;
        uint64_t pg = branch_node_child(node_ptr(parent, cidx)), np;
        const uint8_t *sp;
        if ((rc = page_get(txn, pg, &sp)) || (rc = check_nodes(txn, sp)) || (rc = page_touch(txn, pg, &np, &sib)))
            return rc;
        if (np != pg)
            branch_node_set_child(node_mut(parent, cidx), np);
        room = croom;
        sidx = cidx;
    }
    /* a share needs the sibling a sixteenth of a page clear of the new node,
     * so the next inserts find room (not a share per insert); with less the
     * two become three, each with a third of a page free.  A larger margin
     * trades fuller leaves for fewer instructions (doc/benchmarks.md). */
    bool three = room < usable(txn) / 16 + size + SLOT_SIZE;
    bool sib_left = sidx < pidx;
    unsigned ri = sib_left ? pidx : sidx; /* the parent's node of the right page */
    uint64_t rpg = branch_node_child(node_ptr(parent, ri)), mpg = 0;
    uint8_t *mid = NULL;
    if (three) { /* before the scratch buffer is in use */
        if ((rc = page_alloc(txn, 1, &mpg, &mid)))
            return rc;
        count_page(t, P_LEAF, 1);
    }
    uint8_t *L = sib_left ? sib : page, *R = sib_left ? page : sib;
    /* the pieces: L's nodes, then R's, the new node among them; read in
     * place for a share (only sizes and the separator, before any change),
     * from a copy for three pages (rebuilt from the pieces) */
    const uint8_t *lsrc = L, *rsrc = R;
    if (three) {
        uint8_t *sc = scratch(txn);
        if (!sc)
            return KEEL_NOMEM;
        memcpy(sc, L, ps);
        memcpy(sc + ps, R, ps);
        lsrc = sc;
        rsrc = sc + ps;
    }
    unsigned ln = page_nkeys(L), rn = page_nkeys(R), at = sib_left ? ln + idx : idx, n = ln + rn + 1;
    struct piece *pc = os_malloc(n * sizeof(*pc));
    if (!pc)
        return KEEL_NOMEM;
    for (unsigned i = 0, j = 0; i < n; i++) {
        if (i == at) {
            pc[i] = (struct piece){node, size};
            continue;
        }
        const uint8_t *nd = j < ln ? node_ptr(lsrc, j) : node_ptr(rsrc, j - ln);
        pc[i] = (struct piece){nd, leaf_node_size(nd)};
        j++;
    }
    size_t s1 = 0, s2 = 0;
    bool ok = three ? choose_split3(pc, n, usable(txn), &s1, &s2) : (s2 = choose_split(pc, n, usable(txn), false)) != 0;
    /* the separators: before the right page, and before the middle one */
    const uint8_t *k2, *k1 = NULL;
    size_t k2l = 0, k1l = 0, sep2size = 0, sep1size = 0;
    uint8_t *sep2 = NULL, *sep1 = NULL;
    if (ok) {
        leaf_separator(pc[s2 - 1].p, pc[s2].p, &k2, &k2l);
        if (three)
            leaf_separator(pc[s1 - 1].p, pc[s1].p, &k1, &k1l);
        /* three pages put one more node in the parent: only if it fits
         * there now (the parent's own split would move the path under us) */
        ok = !three || page_room(parent) + branch_node_size(node_ptr(parent, ri)) >=
                           2 * (BRANCH_HDR + SLOT_SIZE) + k1l + k2l;
    }
    if (ok) {
        sep2 = make_branch_node(rpg, k2, k2l, &sep2size);
        if (three)
            sep1 = make_branch_node(mpg, k1, k1l, &sep1size);
        if (!sep2 || (three && !sep1)) {
            os_free(sep2);
            os_free(pc);
            return KEEL_NOMEM;
        }
    }
    if (!ok) { /* (damage, or a parent too full for three): the caller splits */
        os_free(pc);
        if (three) {
            count_page(t, P_LEAF, -1);
            return (rc = page_free(txn, mpg, 1)) ? rc : KEEL_NOTFOUND;
        }
        return KEEL_NOTFOUND;
    }
    if (three) {
        page_fill(L, P_LEAF, ps, pc, s1);
        page_fill(mid, P_LEAF, ps, pc + s1, s2 - s1);
        page_fill(R, P_LEAF, ps, pc + s2, n - s2);
    } else {
        share_move(L, R, ln, s2, at, node, size);
    }
    os_free(pc);
    txn->gen++;
    uint8_t *old = parent + page_slot(parent, ri);
    if (branch_node_size(old) == sep2size) { /* the common case: overwrite it */
        memcpy(old, sep2, sep2size);
        rc = 0;
    } else {
        page_remove_node(parent, ri);
        rc = insert_at(txn, t, path, level - 1, ri, sep2, sep2size, false);
    }
    if (three && !rc) /* it fits: checked above, and the parent did not split */
        page_insert_node(parent, ri, sep1, sep1size);
    os_free(sep1);
    os_free(sep2);
    return rc;
}

/* The page at `level` cannot take the node: split it in two and insert the
 * separator into the parent (or a new root). */
static int split_insert(keel_txn *txn, struct tree_desc *t, struct bt_path *path, int level, unsigned idx,
                        const uint8_t *node, size_t size, bool append)
{
    uint32_t ps = txn->db->psize;
    uint8_t *page = path->page[level];
    unsigned flags = page_flags(page);
    bool leaf = flags & P_LEAF;
    unsigned n = page_nkeys(page);
    int rc;
    if (leaf && level > 0 && !append && (rc = share_with_sibling(txn, t, path, level, idx, node, size)) != KEEL_NOTFOUND)
        return rc;

    uint64_t rpg;
    uint8_t *right;
    rc = page_alloc(txn, 1, &rpg, &right); /* before the scratch buffer is in use */
    if (rc)
        return rc;
    count_page(t, flags, 1);
    uint8_t *copy = scratch(txn);
    if (!copy)
        return KEEL_NOMEM;
    memcpy(copy, page, ps);
    struct piece *pc = os_malloc((n + 1) * sizeof(*pc));
    if (!pc)
        return KEEL_NOMEM;
    for (unsigned i = 0, j = 0; i <= n; i++) {
        if (i == idx) {
            pc[i] = (struct piece){node, size};
            continue;
        }
        const uint8_t *nd = node_ptr(copy, j++);
        pc[i] = (struct piece){nd, node_size(copy, nd)};
    }
    size_t s = choose_split(pc, n + 1, usable(txn), append && idx == n);
    if (s == 0) {
        os_free(pc);
        return CORRUPT(path->pgno[level]);
    }

    const uint8_t *rk;
    size_t rkl;
    if (leaf) {
        leaf_separator(pc[s - 1].p, pc[s].p, &rk, &rkl);
    } else {
        rk = branch_node_key(pc[s].p);
        rkl = branch_node_ksize(pc[s].p);
    }
    size_t sepsize;
    uint8_t *sep = make_branch_node(rpg, rk, rkl, &sepsize);
    uint8_t *first = NULL;
    size_t first_size = 0;
    if (!sep || (!leaf && !(first = make_branch_node(branch_node_child(pc[s].p), NULL, 0, &first_size)))) {
        os_free(sep);
        os_free(pc);
        return KEEL_NOMEM;
    }
    if (!leaf) /* a branch's first key is never read: keep it empty */
        pc[s] = (struct piece){first, first_size};
    page_fill(page, flags, ps, pc, s);
    page_fill(right, flags, ps, pc + s, n + 1 - s);
    os_free(first);
    os_free(pc);
    txn->gen++;

    if (level == 0) {
        uint64_t rootpg;
        uint8_t *root;
        if ((rc = page_alloc(txn, 1, &rootpg, &root))) {
            os_free(sep);
            return rc;
        }
        page_init(root, P_BRANCH, ps);
        size_t lsize;
        uint8_t *lnode = make_branch_node(path->pgno[0], NULL, 0, &lsize);
        if (!lnode) {
            os_free(sep);
            return KEEL_NOMEM;
        }
        page_insert_node(root, 0, lnode, lsize);
        page_insert_node(root, 1, sep, sepsize);
        os_free(lnode);
        os_free(sep);
        t->root = rootpg;
        t->depth++;
        t->branch_pages++;
        return 0;
    }
    rc = insert_at(txn, t, path, level - 1, path->idx[level - 1] + 1, sep, sepsize, append);
    os_free(sep);
    return rc;
}

static int insert_at(keel_txn *txn, struct tree_desc *t, struct bt_path *path, int level, unsigned idx,
                     const uint8_t *node, size_t size, bool append)
{
    uint8_t *page = path->page[level];
    if (page_room(page) >= size + SLOT_SIZE) {
        page_insert_node(page, idx, node, size);
        txn->gen++;
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
            continue;
        }
        /* From the file, and not dirty since the search: a page allocated
         * in between (bt_put's overflow run) at this number came from a
         * damaged free tree that gave out a page in use. */
        if (page_dirty(txn, path->pgno[level]))
            return CORRUPT(path->pgno[level]);
        uint64_t np;
        uint8_t *buf;
        if ((rc = check_nodes(txn, page)) || (rc = page_touch(txn, path->pgno[level], &np, &buf)))
            return rc;
        if (np != path->pgno[level]) {
            if (level == 0)
                t->root = np;
            else
                branch_node_set_child(node_mut(path->page[level - 1], path->idx[level - 1]), np);
            path->pgno[level] = np;
        }
        path->page[level] = buf;
    }
    return 0;
}

int bt_put(keel_txn *txn, struct tree_desc *t, keel_val key, keel_val val, int64_t expiry, unsigned flags,
           int64_t *old_expiry)
{
    if (old_expiry)
        *old_expiry = 0;
    keel_db *db = txn->db;
    uint32_t ps = db->psize;
    struct bt_path path;
    bool exact;
    int rc = bt_search(txn, t, key.data, key.len, &path, &exact);
    if (rc && rc != KEEL_NOTFOUND)
        return rc;
    if (exact) {
        const uint8_t *cur;
        if ((rc = node_at(path.page[path.depth - 1], path.idx[path.depth - 1], db->psize, &cur)))
            return rc;
        int64_t cur_exp = leaf_node_expiry(cur);
        bool live = cur_exp == 0 || cur_exp > txn->now; /* an expired key counts as absent */
        if ((flags & KEEL_NOOVERWRITE) && live)
            return KEEL_EXISTS;
        if ((flags & KEEL_KEEPTTL) && live)
            expiry = cur_exp;
        if (old_expiry)
            *old_expiry = cur_exp;
    }

    /* the new leaf node */
    unsigned nflags = expiry ? N_EXPIRES : 0;
    size_t inline_size = leaf_node_size_for(nflags, key.len, val.len);
    size_t big_size = leaf_node_size_for(nflags | N_BIG, key.len, val.len);
    bool big = inline_size > db->inline_max && inline_size > big_size;
    size_t size = big ? big_size : inline_size;
    nflags |= big ? N_BIG : 0;
    uint8_t stackbuf[512];
    uint8_t *node = size <= sizeof(stackbuf) ? stackbuf : os_malloc(size);
    if (!node)
        return KEEL_NOMEM;
    uint8_t *vdst = leaf_node_write(node, nflags, key.data, key.len, (uint32_t)val.len, expiry);
    if (!big) {
        if (val.len)
            memcpy(vdst, val.data, val.len);
    } else {
        uint32_t np = overflow_pages_for(txn, val.len);
        uint64_t ov;
        uint8_t *ovbuf;
        if ((rc = page_alloc(txn, np, &ov, &ovbuf)))
            goto out;
        overflow_set_header(ovbuf, np);
        memcpy(ovbuf + PAGE_HDR, val.data, val.len);
        size_t tail = (size_t)np * ps - PAGE_HDR - val.len;
        memset(ovbuf + PAGE_HDR + val.len, 0, tail);
        leaf_node_set_overflow(node, ov);
        t->overflow_pages += np;
    }

    if (t->root == 0) {
        uint64_t pg;
        uint8_t *leaf;
        if ((rc = page_alloc(txn, 1, &pg, &leaf)))
            goto out;
        page_init(leaf, P_LEAF, ps);
        page_insert_node(leaf, 0, node, size);
        t->root = pg;
        t->depth = 1;
        t->leaf_pages = 1;
        t->entries = 1;
        txn->gen++;
        goto out;
    }
    if ((rc = touch_path(txn, t, &path)))
        goto out;
    int lv = path.depth - 1;
    uint8_t *leaf = path.page[lv];
    unsigned idx = path.idx[lv];
    if (exact) {
        const uint8_t *old = node_ptr(leaf, idx);
        if (leaf_node_flags(old) & N_BIG) {
            uint64_t ov;
            uint32_t onp;
            if ((rc = overflow_run(txn, old, &ov, &onp)) || (rc = page_free(txn, ov, onp)))
                goto out;
            t->overflow_pages -= onp;
        }
        size_t osize = leaf_node_size(old);
        if (osize == size) { /* same shape: overwrite in place */
            memcpy((uint8_t *)old, node, size);
            txn->gen++;
            goto out;
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
            if (path.idx[l] + 1 != page_nkeys(path.page[l]))
                append = false;
    }
    rc = insert_at(txn, t, &path, lv, idx, node, size, append);
out:
    if (node != stackbuf)
        os_free(node);
    return rc;
}

/* After a delete at `level`: a page under half full merges with a sibling
 * when the two fit in 7/8 of a page (the eighth left, and the sharing of a
 * full leaf, keep the next inserts from splitting it again at once; a
 * smaller fraction leaves emptier pages after mass deletes); a page under a
 * quarter full that cannot merge shares with its sibling; collapse the root.  Merging at
 * half, not only at a quarter, keeps pages fuller after many deletes: after
 * a txn that deleted every other key, half as many leaves are written and
 * the file is that much smaller (doc/benchmarks.md). */
static int rebalance(keel_txn *txn, struct tree_desc *t, struct bt_path *path, int level)
{
    uint32_t ps = txn->db->psize;
    uint8_t *page = path->page[level];
    unsigned flags = page_flags(page);
    bool leaf = flags & P_LEAF;
    unsigned n = page_nkeys(page);
    int rc;
    if (level == 0) {
        if (n == 0) {
            if ((rc = page_free(txn, path->pgno[0], 1)))
                return rc;
            count_page(t, flags, -1);
            t->root = 0;
            t->depth = 0;
        } else if (!leaf && n == 1) {
            uint64_t child = branch_node_child(node_ptr(page, 0));
            if ((rc = page_free(txn, path->pgno[0], 1)))
                return rc;
            t->branch_pages--;
            t->root = child;
            t->depth--;
        }
        return 0;
    }
    size_t used = page_used(page, ps);
    if (n > 0 && used >= usable(txn) / 2 && (leaf || n >= 2))
        return 0;
    bool must = n == 0 || used < usable(txn) / 4 || (!leaf && n < 2); /* else merge only if it fits well */
    uint8_t *parent = path->page[level - 1];
    unsigned pidx = path->idx[level - 1];
    unsigned pn = page_nkeys(parent);
    if (n == 0) { /* empty: unlink it */
        if ((rc = page_free(txn, path->pgno[level], 1)))
            return rc;
        count_page(t, flags, -1);
        page_remove_node(parent, pidx);
        if (pidx == 0 && page_nkeys(parent) > 0) { /* the new first key is never read */
            const uint8_t *f = node_ptr(parent, 0);
            size_t fs;
            uint8_t *fn = make_branch_node(branch_node_child(f), NULL, 0, &fs);
            if (!fn)
                return KEEL_NOMEM;
            page_remove_node(parent, 0);
            page_insert_node(parent, 0, fn, fs);
            os_free(fn);
        }
        txn->gen++;
        return rebalance(txn, t, path, level - 1);
    }
    if (pn < 2)
        return must ? rebalance(txn, t, path, level - 1) : 0;
    unsigned li = pidx + 1 < pn ? pidx : pidx - 1, ri = li + 1;
    unsigned sib = li == pidx ? ri : li;
    uint64_t sibpg = branch_node_child(node_ptr(parent, sib)), newpg;
    uint8_t *sibbuf;
    /* The sibling was never searched: check it as a search would, whole as
     * a page to change, and not a page of the path itself (a damaged parent
     * can point twice at one child; the merge would free it under us). */
    const uint8_t *sp;
    if ((rc = page_get(txn, sibpg, &sp)) || (rc = bt_check_page(txn, sp, sibpg, flags)))
        return rc;
    for (int l = 0; l <= level; l++)
        if (path->page[l] == sp)
            return CORRUPT(sibpg);
    /* a branch merge takes in the parent's separator as a key */
    size_t extra = leaf ? 0 : branch_node_ksize(node_ptr(parent, ri));
    if (!must && used + page_used(sp, ps) + extra > usable(txn) * 7 / 8)
        return 0; /* would not fit well: leave the sibling untouched */
    /* the sibling's nodes are read (a merge) or rebuilt (a share) through
     * unchecked accessors: a page from the map is checked whole first */
    if (!page_dirty(txn, sibpg) && (rc = check_nodes(txn, sp)))
        return rc;
    const uint8_t *rsrc = li == pidx ? sp : page; /* the right page as it is now */
    size_t rfirst = leaf ? 0 : branch_node_ksize(node_ptr(rsrc, 0)); /* replaced by the separator */
    size_t total = used + page_used(sp, ps) + extra - rfirst;
    if (total <= usable(txn) && (must || total <= usable(txn) * 7 / 8)) {
        /* Merge R into L by appending R's nodes to L: L's own nodes stay
         * where they are, and a right sibling is only read, never copied
         * (it is freed).  A left sibling stays, so it is copied for writing. */
        uint8_t *L = page;
        uint64_t rpg = sibpg;
        if (li != pidx) {
            if ((rc = page_touch(txn, sibpg, &newpg, &L)))
                return rc;
            if (newpg != sibpg)
                branch_node_set_child(node_mut(parent, sib), newpg);
            rpg = path->pgno[level];
        }
        uint8_t *joined = NULL; /* a branch: R's first child under the parent's separator */
        size_t joined_size = 0;
        if (!leaf) {
            const uint8_t *sepn = node_ptr(parent, ri);
            joined = make_branch_node(branch_node_child(node_ptr(rsrc, 0)), branch_node_key(sepn),
                                      branch_node_ksize(sepn), &joined_size);
            if (!joined)
                return KEEL_NOMEM;
        }
        unsigned ln = page_nkeys(L), rn = page_nkeys(rsrc);
        for (unsigned i = 0; i < rn; i++) {
            const uint8_t *nd = node_ptr(rsrc, i);
            if (joined && i == 0)
                page_insert_node(L, ln, joined, joined_size);
            else
                page_insert_node(L, ln + i, nd, node_size(rsrc, nd));
        }
        os_free(joined);
        if ((rc = page_free(txn, rpg, 1)))
            return rc;
        count_page(t, flags, -1);
        page_remove_node(parent, ri);
        txn->gen++;
        return rebalance(txn, t, path, level - 1);
    }
    if (!must)
        return 0;
    /* share: both pages rebuilt from a copy, then the separator replaced in the parent */
    if ((rc = page_touch(txn, sibpg, &newpg, &sibbuf)))
        return rc;
    if (newpg != sibpg)
        branch_node_set_child(node_mut(parent, sib), newpg);
    if (page_flags(sibbuf) != flags)
        return CORRUPT(sibpg);
    uint8_t *L = li == pidx ? page : sibbuf, *R = li == pidx ? sibbuf : page;
    uint64_t rpg = li == pidx ? newpg : path->pgno[level];

    uint8_t *sc = scratch(txn);
    if (!sc)
        return KEEL_NOMEM;
    memcpy(sc, L, ps);
    memcpy(sc + ps, R, ps);
    unsigned ln = page_nkeys(sc), rn = page_nkeys(sc + ps);
    struct piece *pc = os_malloc((ln + rn) * sizeof(*pc));
    if (!pc)
        return KEEL_NOMEM;
    for (unsigned i = 0; i < ln; i++) {
        const uint8_t *nd = node_ptr(sc, i);
        pc[i] = (struct piece){nd, node_size(sc, nd)};
    }
    uint8_t *joined = NULL; /* branch: R's first node with the parent's separator as its key */
    for (unsigned i = 0; i < rn; i++) {
        const uint8_t *nd = node_ptr(sc + ps, i);
        pc[ln + i] = (struct piece){nd, node_size(sc + ps, nd)};
        if (i == 0 && !leaf) {
            const uint8_t *pn_ = node_ptr(parent, ri);
            joined = make_branch_node(branch_node_child(nd), branch_node_key(pn_), branch_node_ksize(pn_),
                                      &pc[ln].size);
            if (!joined) {
                os_free(pc);
                return KEEL_NOMEM;
            }
            pc[ln].p = joined;
        }
    }
    size_t s = choose_split(pc, ln + rn, usable(txn), false);
    if (s == 0) {
        os_free(joined);
        os_free(pc);
        return CORRUPT(0);
    }
    const uint8_t *rk;
    size_t rkl;
    uint8_t *first = NULL;
    size_t first_size = 0;
    if (leaf) {
        rk = leaf_node_key(pc[s].p);
        rkl = leaf_node_ksize(pc[s].p);
    } else {
        rk = branch_node_key(pc[s].p);
        rkl = branch_node_ksize(pc[s].p);
    }
    size_t sepsize;
    uint8_t *sep = make_branch_node(rpg, rk, rkl, &sepsize);
    if (!sep || (!leaf && !(first = make_branch_node(branch_node_child(pc[s].p), NULL, 0, &first_size)))) {
        os_free(sep);
        os_free(joined);
        os_free(pc);
        return KEEL_NOMEM;
    }
    if (!leaf)
        pc[s] = (struct piece){first, first_size};
    page_fill(L, flags, ps, pc, s);
    page_fill(R, flags, ps, pc + s, ln + rn - s);
    os_free(first);
    os_free(joined);
    os_free(pc);
    page_remove_node(parent, ri);
    txn->gen++;
    rc = insert_at(txn, t, path, level - 1, ri, sep, sepsize, false);
    os_free(sep);
    return rc;
}

/* Deletes key; with live_only, an entry whose expiry is <= txn->now counts
 * as absent and is left alone (a failed call changes nothing). */
static int del_entry(keel_txn *txn, struct tree_desc *t, keel_val key, int64_t *old_expiry, bool live_only)
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
        if ((rc = node_at(path.page[path.depth - 1], path.idx[path.depth - 1], txn->db->psize, &cur)))
            return rc;
        int64_t e = leaf_node_expiry(cur);
        if (e && e <= txn->now)
            return KEEL_NOTFOUND;
    }
    if ((rc = touch_path(txn, t, &path)))
        return rc;
    int lv = path.depth - 1;
    uint8_t *leaf = path.page[lv];
    const uint8_t *old = node_ptr(leaf, path.idx[lv]);
    if (old_expiry)
        *old_expiry = leaf_node_expiry(old);
    if (leaf_node_flags(old) & N_BIG) {
        uint64_t ov;
        uint32_t onp;
        if ((rc = overflow_run(txn, old, &ov, &onp)) || (rc = page_free(txn, ov, onp)))
            return rc;
        t->overflow_pages -= onp;
    }
    page_remove_node(leaf, path.idx[lv]);
    t->entries--;
    txn->gen++;
    return rebalance(txn, t, &path, lv);
}

int bt_del(keel_txn *txn, struct tree_desc *t, keel_val key, int64_t *old_expiry)
{
    return del_entry(txn, t, key, old_expiry, false);
}

int bt_del_live(keel_txn *txn, struct tree_desc *t, keel_val key, int64_t *old_expiry)
{
    return del_entry(txn, t, key, old_expiry, true);
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
    int lv = path.depth - 1;
    if ((rc = node_at(path.page[lv], path.idx[lv], txn->db->psize, &cur)))
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
        txn->gen++;
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

static int walk_page(struct walker *w, uint64_t pg, unsigned level)
{
    keel_txn *txn = w->txn;
    if (level >= w->depth || w->budget-- == 0)
        return CORRUPT(pg);
    const uint8_t *page;
    int rc = page_get(txn, pg, &page);
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
        if ((rc = node_at(page, i, txn->db->psize, &nd)))
            return rc;
        if (!leaf) {
            if ((rc = walk_page(w, branch_node_child(nd), level + 1)))
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
    return walk_page(&w, t->root, 0);
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
    txn->gen++;
    return 0;
}

/* ---- runs of inserts in key order ---- */

/* The bounds of the leaf at the end of a touched path: lo = the separator
 * that leads to it (NULL: the leftmost leaf), hi = the next one (NULL: the
 * rightmost leaf).  They point into the path's dirty branch pages. */
static int finger_bounds(keel_txn *txn, struct bt_finger *f)
{
    uint32_t ps = txn->db->psize;
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
    uint32_t ps = txn->db->psize;
    const uint8_t *leaf = f->path.page[f->path.depth - 1], *n;
    unsigned lo = 0, hi = page_nkeys(leaf), *idx = &f->path.idx[f->path.depth - 1];
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
        f->gen = 0;
        return bt_put(txn, t, key, val, 0, 0, NULL);
    }
    int rc;
    bool exact;
    struct bt_path *p = &f->path;
    bool inside = false;
    if (f->gen == txn->gen && p->depth > 0 && (rc = finger_find(txn, f, key, &inside, &exact)))
        return rc;
    f->gen = 0;
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
    int lv = p->depth - 1;
    uint8_t *leaf = p->page[lv];
    unsigned idx = p->idx[lv];
    bool fits = page_room(leaf) >= size + SLOT_SIZE;
    t->entries++;
    /* at the end of the rightmost leaf: an append, so a split leaves the left page full */
    rc = insert_at(txn, t, p, lv, idx, node, size, !f->hi && idx == page_nkeys(leaf));
    if (node != stackbuf)
        os_free(node);
    if (!rc && fits) /* no split: the path and the bounds still hold */
        f->gen = txn->gen;
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
    txn->gen++;
    return 0;
}

static bool mover_out(const struct bt_mover *m) { return m->copies == 0 || m->stalled; }

/* The overflow runs of the leaf at the end of path at or above hi, each to
 * a run of pool pages below it (left where it is when the pool has none). */
static int move_runs(keel_txn *txn, struct tree_desc *t, struct bt_path *path, struct bt_mover *m)
{
    int lv = path->depth - 1;
    uint32_t ps = txn->db->psize;
    for (unsigned j = 0; j < page_nkeys(path->page[lv]) && !mover_out(m); j++) {
        const uint8_t *nd;
        uint64_t ov;
        uint32_t np;
        int rc = node_at(path->page[lv], j, ps, &nd);
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
        if ((rc = page_get(txn, ov, &old)) || (rc = node_at(path->page[lv], j, ps, (const uint8_t **)&node)))
            return rc;
        memcpy(nbuf, old, (size_t)np * ps);
        page_set_pgno(nbuf, nov);
        leaf_node_set_overflow(node, nov);
        if ((rc = page_free(txn, ov, np)))
            return rc;
        m->copies -= m->copies < np ? m->copies : np;
        m->moved += np;
        txn->gen++;
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
        uint64_t pg = t->root;
        int level;
        for (level = 0;; level++) {
            if (m->reads == 0)
                return 0;
            m->reads--;
            const uint8_t *page;
            bool leaf = level + 1 == (int)t->depth;
            int rc = page_get(txn, pg, &page);
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
            if ((rc = node_at(page, m->pos[level], txn->db->psize, &nd)))
                return rc;
            path->idx[level] = m->pos[level];
            pg = branch_node_child(nd);
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
        if ((rc = node_at(parent, i, txn->db->psize, &nd)))
            return rc;
        uint64_t child = branch_node_child(nd);
        bool move = child >= m->hi && !page_dirty(txn, child);
        if (!move && !runs)
            continue;
        if (m->reads == 0)
            return 0;
        m->reads--;
        const uint8_t *leaf;
        if ((rc = page_get(txn, child, &leaf)) || (rc = bt_check_page(txn, leaf, child, P_LEAF)))
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
