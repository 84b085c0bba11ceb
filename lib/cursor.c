/*
 * cursor.c — ordered walks over one bucket.
 *
 * Contract:
 *   - A cursor keeps the root-to-leaf path of its position.  In a read txn
 *     nothing changes under it, so the path stays valid.
 *   - In a write txn every change bumps txn->changes.  The cursor keeps a copy of
 *     its current key; when txn->changes has moved it searches for that key again
 *     before stepping, so it stays valid across its own txn's puts and
 *     deletes (bbolt and LMDB fix up cursors in place instead: more code).
 *   - After cursor_del the cursor sits "between" entries: next() yields the
 *     entry after the deleted one, prev() the one before it.
 *   - Stepping past either end answers KEEL_NOTFOUND and leaves the cursor on
 *     the last entry it had.
 *   - Entries whose expiry time is <= txn->now are skipped (unless c->all).
 *   - In a DUPSORT tree (c->dup) the path and keybuf hold pair keys
 *     (format.h): every move is a plain tree's, and only handing an entry
 *     out splits its pair key into the user's key and value.  The moves
 *     that know about a key's values (next_dup ... count) are seeks to
 *     pair-key bounds, so a key with a million values costs O(log n).
 */
#include <string.h>

#include "internal.h"

/* The cursor's tree: its descriptor never moves while the txn lives
 * (bucket.c), and a drop of its bucket detaches it (bucket_drop). */
static int tree_of(keel_cursor *c, struct tree_desc **t)
{
    *t = c->tree;
    return *t ? 0 : KEEL_BADBUCKET;
}

int cursor_init(keel_cursor *c, keel_txn *txn, keel_bucket b, struct tree_desc *t)
{
    KEEL_ASSERT(t); /* from bucket_tree, or an internal tree */
    c->tree = t;
    c->txn = txn;
    c->bucket = b;
    c->state = CUR_UNSET;
    c->all = false; /* a reused cursor must not keep showing expired entries */
    c->dup = t->flags & TREE_F_DUPSORT;
    c->dup_page = NULL;
    c->valid_at = 0;
    c->depth = 0;
    c->keylen = 0;
    return 0;
}

/* Fill the path from `level` down to a leaf, taking the first (or last)
 * child at each step. */
static int descend(keel_cursor *c, const struct tree_desc *t, uint64_t pg, uint64_t sum, int level, bool last)
{
    keel_txn *txn = c->txn;
    for (;; level++) {
        if (level >= (int)t->depth)
            return CORRUPT(pg);
        /* every descriptor's depth was checked when it was read (meta_check,
         * the catalog's desc_from_value): the path arrays hold the levels */
        KEEL_ASSERT(level < KEEL_MAX_DEPTH);
        const uint8_t *page;
        int rc = page_get_summed(txn, pg, sum, &page);
        if (rc)
            return rc;
        bool leaf = level + 1 == (int)t->depth;
        if ((rc = bt_check_page(txn, page, pg, leaf ? P_LEAF : P_BRANCH)))
            return rc;
        unsigned idx = last ? page_nkeys(page) - 1 : 0;
        c->pgno[level] = pg;
        c->page[level] = page;
        c->idx[level] = idx;
        if (leaf) {
            c->depth = level + 1;
            return 0;
        }
        const uint8_t *n;
        if ((rc = node_at(page, idx, txn->db->node_end, &n)))
            return rc;
        pg = branch_node_child(n);
        if (txn->verify)
            sum = branch_node_sum(n);
    }
}

/* A leaf entry, its fields read once. */
struct entry {
    const uint8_t *node;
    const uint8_t *key;
    size_t klen;
    uint32_t vlen;
    unsigned flags;
    int64_t expiry; /* 0 = none */
};

/* Entry i of a leaf (the cursor's last level: its kind and header were
 * checked when the cursor entered it), checked as page_node() checks a node
 * (starts after the slot array, header and body end inside the page), with
 * each field read once for the check and the caller.  The check is a few
 * compares on values the caller needs anyway, which is why the cursor checks
 * each entry it visits rather than each leaf whole on entry: a whole-leaf
 * check costs a size decode per node, more than this, and a short range
 * (seek + 10 next) visits only part of the leaf. */
static inline int leaf_entry(const uint8_t *page, unsigned i, uint32_t ps, struct entry *e)
{
    unsigned off = page_slot(page, i);
    if (off < PAGE_HDR + 2 * page_nkeys(page) || off > ps - LEAF_HDR)
        return CORRUPT(page_pgno(page));
    const uint8_t *n = page + off;
    unsigned flags = leaf_node_flags(n);
    size_t extra = (flags & N_EXPIRES) ? 8 : 0, klen = leaf_node_ksize(n);
    uint32_t vlen = leaf_node_vsize(n);
    if (extra + klen + ((flags & N_BIG) ? 8 : (size_t)vlen) > ps - LEAF_HDR - off)
        return CORRUPT(page_pgno(page));
    e->node = n;
    e->key = n + LEAF_HDR + extra;
    e->klen = klen;
    e->vlen = vlen;
    e->flags = flags;
    e->expiry = extra ? (int64_t)rd64(n + LEAF_HDR) : 0;
    return 0;
}

/* a == b for n bytes: pair keys' key parts are short, a call to memcmp
 * costs more than comparing them 8 bytes at a time */
static inline bool bytes_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
    if (n < 8)
        return memcmp(a, b, n) == 0;
    for (size_t i = 0; i + 8 < n; i += 8)
        if (rd64(a + i) != rd64(b + i))
            return false;
    return rd64(a + n - 8) == rd64(b + n - 8); /* the last 8, overlapping */
}

/* Does the key k (kl bytes) begin with the pl bytes at p?  (A pair key
 * with a key part and terminator: is it one of that key's pairs?) */
static inline bool begins_with(const uint8_t *k, size_t kl, const uint8_t *p, size_t pl)
{
    return kl >= pl && bytes_equal(k, p, pl);
}

/* Write txns: the cursor's key, to search for it again after a change. */
static __attribute__((noinline)) int remember_key(keel_cursor *c, const uint8_t *k, size_t kl)
{
    if (kl > c->keycap) {
        uint8_t *b = os_realloc(c->keybuf, kl);
        if (!b)
            return KEEL_NOMEM;
        c->keybuf = b;
        c->keycap = kl;
    }
    memcpy(c->keybuf, k, kl);
    c->keylen = kl;
    c->valid_at = c->txn->changes;
    return 0;
}

/* A pair node's value: empty, or (a COUNTED tree's first pair of a key)
 * the key's count; keel_check tells which a pair must have. */
static inline bool pair_value_ok(const struct entry *e)
{
    return !(e->flags & N_BIG) && (e->vlen == 0 || e->vlen == PAIR_COUNT_SIZE);
}

/* A DUPSORT entry's key and value, from its pair key: the key unescaped
 * into c->dupkey when it holds a zero byte, else pointing into the node. */
static __attribute__((noinline)) int load_pair(keel_cursor *c, const struct entry *e, keel_val *key, keel_val *val)
{
    size_t kpart = pair_key_part(e->key, e->klen);
    if (kpart == 0 || !pair_value_ok(e))
        return CORRUPT(c->pgno[c->depth - 1]);
    keel_val k = {e->key, kpart};
    if (key && key_has_zero(e->key, kpart)) {
        if (!c->dupkey && !(c->dupkey = os_malloc(c->txn->db->max_key + 1)))
            return KEEL_NOMEM;
        k.len = pair_key_unescape(c->dupkey, e->key, kpart);
        k.data = c->dupkey;
        if (k.len > c->txn->db->max_key)
            return CORRUPT(c->pgno[c->depth - 1]);
    }
    int rc;
    if (!c->txn->rdonly && (rc = remember_key(c, e->key, e->klen)))
        return rc;
    if (val)
        *val = (keel_val){e->key + kpart + PAIR_TERM_SIZE, e->klen - kpart - PAIR_TERM_SIZE};
    if (key)
        *key = k;
    c->state = CUR_ON;
    return 0;
}

/* Hand out the entry the cursor moves onto.  On an error nothing about the
 * cursor has changed. */
static inline int load_entry(keel_cursor *c, const struct entry *e, keel_val *key, keel_val *val)
{
    keel_txn *txn = c->txn;
    int rc;
    if (e->klen == 0) /* no tree holds an empty key: a damaged node (and memcpy from a NULL keybuf) */
        return CORRUPT(c->pgno[c->depth - 1]);
    if (c->dup)
        return load_pair(c, e, key, val);
    keel_val v = {e->key + e->klen, e->vlen};
    if (val && (e->flags & N_BIG) && (rc = bt_leaf_value(txn, e->node, &v)))
        return rc;
    if (!txn->rdonly && (rc = remember_key(c, e->key, e->klen)))
        return rc;
    if (val)
        *val = v;
    if (key)
        *key = (keel_val){e->key, e->klen};
    c->state = CUR_ON;
    return 0;
}

static int load(keel_cursor *c, keel_val *key, keel_val *val)
{
    struct entry e;
    int rc = leaf_entry(c->page[c->depth - 1], c->idx[c->depth - 1], c->txn->db->node_end, &e);
    return rc ? rc : load_entry(c, &e, key, val);
}

/* Asks for every cache line of a leaf at once.  A run of next_dup reads
 * the nodes in key order, which is not their order in the page (a node
 * lies where it was inserted): one cache miss after another, that the
 * prefetcher cannot guess.  So does any walk through a leaf (step). */
static void prefetch_leaf(const uint8_t *page, uint32_t ps)
{
    for (uint32_t off = 0; off < ps; off += 64)
        __builtin_prefetch(page + off);
}

/* Move the path one entry forward (dir > 0) or back; KEEL_NOTFOUND at the end. */
static int step(keel_cursor *c, const struct tree_desc *t, int dir)
{
    int level = c->depth - 1;
    if (dir > 0 && c->idx[level] + 1 < page_nkeys(c->page[level])) {
        c->idx[level]++;
        return 0;
    }
    if (dir < 0 && c->idx[level] > 0) {
        c->idx[level]--;
        return 0;
    }
    /* climb to the first level that can move, keep the old path to restore */
    int up = level - 1;
    while (up >= 0) {
        unsigned i = c->idx[up];
        if (dir > 0 ? i + 1 < page_nkeys(c->page[up]) : i > 0)
            break;
        up--;
    }
    if (up < 0)
        return KEEL_NOTFOUND;
    c->idx[up] = dir > 0 ? c->idx[up] + 1 : c->idx[up] - 1;
    uint32_t ps = c->txn->db->node_end;
    const uint8_t *n, *was = c->page[level];
    unsigned was_idx = c->idx[level];
    int rc = node_at(c->page[up], c->idx[up], ps, &n);
    if (rc || (rc = descend(c, t, branch_node_child(n), branch_node_sum(n), up + 1, dir < 0)))
        return rc;
    prefetch_leaf(c->page[level], ps); /* a walk goes on through it */
    /* Into the next leaf the keys must go on growing (shrinking, going
     * back).  A damaged tree can share pages (a DAG): without this a walk
     * could come back to a leaf again and again, exponentially often.  One
     * key comparison per leaf crossed. */
    const uint8_t *a, *b;
    if ((rc = node_at(was, was_idx, ps, &a)) || (rc = node_at(c->page[level], c->idx[level], ps, &b)))
        return rc;
    int cmp = bt_cmp(leaf_node_key(b), leaf_node_ksize(b), leaf_node_key(a), leaf_node_ksize(a));
    return (dir > 0 ? cmp > 0 : cmp < 0) ? 0 : CORRUPT(c->pgno[level]);
}

static bool expired_here(keel_cursor *c)
{
    if (c->all)
        return false;
    struct entry e;
    if (leaf_entry(c->page[c->depth - 1], c->idx[c->depth - 1], c->txn->db->node_end, &e))
        return false; /* load() reports the damage */
    return !expiry_live(c->txn, e.expiry);
}

/* From the cursor's position, move on in direction dir past expired
 * entries, then hand out the entry reached. */
static int settle(keel_cursor *c, const struct tree_desc *t, int dir, keel_val *key, keel_val *val)
{
    for (;;) {
        int lv = c->depth - 1;
        struct entry e;
        int rc = leaf_entry(c->page[lv], c->idx[lv], c->txn->db->node_end, &e);
        if (rc)
            return rc;
        if (e.expiry == 0 || e.expiry > c->txn->now || c->all)
            return load_entry(c, &e, key, val);
        if ((rc = step(c, t, dir)))
            return rc;
    }
}

/* A copy of the path, level by level (strided, so the compiler copies it
 * inline rather than with three memcpy calls for a few levels). */
struct saved_path {
    int depth;
    struct {
        uint64_t pgno;
        const uint8_t *page;
        unsigned idx;
    } level[KEEL_MAX_DEPTH];
};

static void save_path(const keel_cursor *c, struct saved_path *sp)
{
    sp->depth = c->depth;
    for (int i = 0; i < c->depth; i++) {
        sp->level[i].pgno = c->pgno[i];
        sp->level[i].page = c->page[i];
        sp->level[i].idx = c->idx[i];
    }
}

static void restore_path(keel_cursor *c, const struct saved_path *sp)
{
    c->depth = sp->depth;
    for (int i = 0; i < c->depth; i++) {
        c->pgno[i] = sp->level[i].pgno;
        c->page[i] = sp->level[i].page;
        c->idx[i] = sp->level[i].idx;
    }
}

/* The cursor onto a search's path; past its leaf's last key (where a
 * search for a key after them ends), onto the next entry. */
static int enter_path(keel_cursor *c, const struct tree_desc *t, const struct bt_path *path)
{
    c->depth = path->depth;
    for (int i = 0; i < path->depth; i++) {
        c->pgno[i] = path->pgno[i];
        c->page[i] = path->page[i];
        c->idx[i] = path->idx[i];
    }
    int lv = c->depth - 1;
    if (c->idx[lv] >= page_nkeys(c->page[lv])) { /* past this leaf's last key */
        c->idx[lv] = page_nkeys(c->page[lv]) - 1;
        return step(c, t, 1);
    }
    return 0;
}

/* Position at the first entry >= key; *exact when it is equal. */
static int seek_path(keel_cursor *c, const struct tree_desc *t, const uint8_t *key, size_t klen, bool *exact)
{
    struct bt_path path;
    int rc = bt_search(c->txn, t, key, klen, &path, exact);
    return rc ? rc : enter_path(c, t, &path);
}

/* In a write txn, rebuild the path if the tree changed since we looked. */
static int resync(keel_cursor *c, const struct tree_desc *t)
{
    if (c->txn->rdonly || c->valid_at == c->txn->changes || c->state == CUR_UNSET)
        return 0;
    bool exact;
    int rc = seek_path(c, t, c->keybuf, c->keylen, &exact);
    c->valid_at = c->txn->changes;
    if (rc == KEEL_NOTFOUND) { /* nothing at or after the key */
        c->state = CUR_EOF;
        return 0;
    }
    if (rc)
        return rc;
    /* our entry is gone: we sit on its successor; or it is there (again):
     * we are on it, whatever an earlier resync found */
    c->state = exact ? CUR_ON : CUR_AFTER_DEL;
    return 0;
}

int cursor_first(keel_cursor *c, keel_val *key, keel_val *val)
{
    struct tree_desc *t;
    int rc = tree_of(c, &t);
    if (rc)
        return rc;
    if (t->root == 0) { /* like a failed seek: the cursor is no longer positioned */
        c->state = CUR_UNSET;
        return KEEL_NOTFOUND;
    }
    if ((rc = descend(c, t, t->root, t->root_sum, 0, false)) || (rc = settle(c, t, 1, key, val)))
        c->state = CUR_UNSET;
    return rc;
}

int cursor_last(keel_cursor *c, keel_val *key, keel_val *val)
{
    struct tree_desc *t;
    int rc = tree_of(c, &t);
    if (rc)
        return rc;
    if (t->root == 0) { /* like a failed seek: the cursor is no longer positioned */
        c->state = CUR_UNSET;
        return KEEL_NOTFOUND;
    }
    if ((rc = descend(c, t, t->root, t->root_sum, 0, true)) || (rc = settle(c, t, -1, key, val)))
        c->state = CUR_UNSET;
    return rc;
}

static int cursor_seek_dup(keel_cursor *c, keel_val key, keel_val *kout, keel_val *vout);

int cursor_seek(keel_cursor *c, keel_val key, keel_val *kout, keel_val *vout)
{
    if (c->dup)
        return cursor_seek_dup(c, key, kout, vout);
    struct tree_desc *t;
    int rc = tree_of(c, &t);
    if (rc)
        return rc;
    bool exact;
    if ((rc = seek_path(c, t, key.data, key.len, &exact)) || (rc = settle(c, t, 1, kout, vout)))
        c->state = CUR_UNSET;
    return rc;
}

/* Every move but the common one: into another leaf, past expired entries,
 * after a change to the tree, from an unpositioned cursor.  Kept out of line
 * so that the common case below saves and restores no registers. */
static __attribute__((noinline)) int move_general(keel_cursor *c, keel_val *key, keel_val *val, int dir)
{
    if (c->state == CUR_UNSET)
        return dir > 0 ? cursor_first(c, key, val) : cursor_last(c, key, val);
    struct tree_desc *t;
    int rc = tree_of(c, &t);
    if (rc)
        return rc;
    if ((rc = resync(c, t)))
        return rc;
    if (c->state == CUR_EOF) { /* everything from our key on is gone */
        if (dir > 0)
            return KEEL_NOTFOUND;
        rc = cursor_last(c, key, val);
        if (rc == KEEL_NOTFOUND) /* nothing before us either: stay past the end */
            c->state = CUR_EOF;
        return rc;
    }
    struct saved_path sp;
    save_path(c, &sp);
    if (!(c->state == CUR_AFTER_DEL && dir > 0))
        rc = step(c, t, dir);
    if (rc == 0)
        rc = settle(c, t, dir, key, val);
    if (rc)
        restore_path(c, &sp); /* a failed step leaves the cursor where it was */
    return rc;
}

/* Onto entry i of the cursor's leaf, the tree unchanged: every case the
 * inline path in move() leaves out (write txns, entries with an expiry time
 * or an overflow value, damage). */
static __attribute__((noinline)) int move_in_leaf(keel_cursor *c, unsigned i, keel_val *key, keel_val *val, int dir)
{
    int lv = c->depth - 1;
    struct entry e;
    int rc = leaf_entry(c->page[lv], i, c->txn->db->node_end, &e);
    if (rc)
        return rc;
    if (e.expiry != 0 && e.expiry <= c->txn->now && !c->all)
        return move_general(c, key, val, dir); /* expired: the general path skips it, from where we are */
    if ((rc = load_entry(c, &e, key, val)))
        return rc;
    c->idx[lv] = i;
    return 0;
}

/* always inlined: cursor_next and cursor_prev each get a copy with dir
 * constant.  Inline is only the common case: in a read txn, a neighbour in
 * the same leaf that is a plain entry (no flags: no expiry time, value
 * inline).  It is checked as leaf_entry() checks (node after the slot array,
 * header and body inside the page) and calls nothing, so it costs a few
 * dozen instructions. */
static inline __attribute__((always_inline)) int move(keel_cursor *c, keel_val *key, keel_val *val, int dir)
{
    keel_txn *txn = c->txn;
    if (c->state == CUR_ON && (txn->rdonly || c->valid_at == txn->changes)) { /* the tree has not changed */
        int lv = c->depth - 1;
        const uint8_t *page = c->page[lv];
        unsigned i = c->idx[lv] + (unsigned)dir, nkeys = page_nkeys(page); /* from 0 back: wraps */
        if (i < nkeys) {
            uint32_t ps = txn->db->node_end;
            unsigned off = page_slot(page, i);
            if (txn->rdonly && !c->dup && off >= PAGE_HDR + 2 * nkeys && off <= ps - LEAF_HDR) {
                const uint8_t *n = page + off;
                size_t klen = leaf_node_ksize(n);
                uint32_t vlen = leaf_node_vsize(n);
                if (leaf_node_flags(n) == 0 && klen != 0 && klen + vlen <= ps - LEAF_HDR - off) {
                    if (val)
                        *val = (keel_val){n + LEAF_HDR + klen, vlen};
                    if (key)
                        *key = (keel_val){n + LEAF_HDR, klen};
                    c->idx[lv] = i;
                    return 0;
                }
            }
            return move_in_leaf(c, i, key, val, dir);
        }
    }
    return move_general(c, key, val, dir);
}

int cursor_next(keel_cursor *c, keel_val *key, keel_val *val) { return move(c, key, val, 1); }
int cursor_prev(keel_cursor *c, keel_val *key, keel_val *val) { return move(c, key, val, -1); }

/* For the calls about the current entry: the cursor is on one, found
 * again after changes, and it is live (it may have expired since the
 * cursor moved onto it: expire_at in the past). */
static int on_live_entry(keel_cursor *c, struct tree_desc **t)
{
    if (c->state == CUR_UNSET)
        return KEEL_BADCURSOR;
    int rc = tree_of(c, t);
    if (rc || (rc = resync(c, *t)))
        return rc;
    return c->state != CUR_ON || expired_here(c) ? KEEL_NOTFOUND : 0;
}

int cursor_current(keel_cursor *c, keel_val *key, keel_val *val)
{
    struct tree_desc *t;
    int rc = on_live_entry(c, &t);
    return rc ? rc : load(c, key, val);
}

int cursor_expiry(keel_cursor *c, int64_t *unix_ms)
{
    struct tree_desc *t;
    int rc = on_live_entry(c, &t);
    if (rc)
        return rc;
    struct entry e;
    if ((rc = leaf_entry(c->page[c->depth - 1], c->idx[c->depth - 1], c->txn->db->node_end, &e)))
        return rc;
    *unix_ms = e.expiry;
    return 0;
}

void cursor_release(keel_cursor *c)
{
    os_free(c->keybuf);
    os_free(c->dupkey);
    c->keybuf = c->dupkey = NULL;
    c->keycap = 0;
}

int cursor_del(keel_cursor *c, struct tree_desc *t, int64_t *old_expiry, uint64_t *count)
{
    KEEL_ASSERT(c->state != CUR_UNSET); /* keel_cursor_del answers that before any change */
    int rc = resync(c, t);
    if (rc)
        return rc;
    if (c->state != CUR_ON || expired_here(c)) /* an expired entry is absent, as for keel_del */
        return KEEL_NOTFOUND;
    /* the next move searches for the deleted key and lands on its successor */
    return bt_del_pair(c->txn, t, (keel_val){c->keybuf, c->keylen}, false, old_expiry, count);
}

/* ---- DUPSORT moves ------------------------------------------------------
 * Each is a seek to a pair-key bound (format.h): PAIR_KEY_END after a key's
 * escaped bytes comes before its first value, PAIR_KEY_NEXT after its last.
 * In a plain tree a key has one value and they reduce to plain moves. */

static int pair_bound_make(struct pair_bound *pb, const uint8_t *esc, size_t esclen, bool escaped, const uint8_t tail[2],
                           keel_val val)
{
    escaped = escaped || !key_has_zero(esc, esclen); /* most keys hold no zero byte: copied as they are */
    size_t elen = escaped ? esclen : pair_key_escaped_len(esc, esclen);
    size_t need = elen + PAIR_TERM_SIZE + val.len;
    pb->k = need <= sizeof pb->buf ? pb->buf : os_malloc(need);
    if (!pb->k)
        return KEEL_NOMEM;
    if (escaped)
        memcpy(pb->k, esc, elen);
    else
        pair_key_escape(pb->k, esc, esclen);
    memcpy(pb->k + elen, tail, PAIR_TERM_SIZE);
    if (val.len)
        memcpy(pb->k + elen + PAIR_TERM_SIZE, val.data, val.len);
    pb->keylen = elen + PAIR_TERM_SIZE;
    pb->len = need;
    return 0;
}

int pair_bound(struct pair_bound *pb, keel_val key, const uint8_t tail[2], keel_val val)
{
    return pair_bound_make(pb, key.data, key.len, false, tail, val);
}

void pair_bound_free(struct pair_bound *pb)
{
    if (pb->k != pb->buf)
        os_free(pb->k);
}

/* For the write path: the first entry of t >= pb (expired or not), which
 * must begin with pb's key part; its node key and expiry.  No cursor moves. */
int cursor_find_pair(keel_txn *txn, const struct tree_desc *t, const struct pair_bound *pb, const uint8_t **key,
                     size_t *klen, int64_t *expiry)
{
    if (t->root == 0)
        return KEEL_NOTFOUND;
    keel_cursor c;
    c.txn = txn;
    bool exact;
    int rc = seek_path(&c, t, pb->k, pb->len, &exact);
    struct entry e;
    if (rc || (rc = leaf_entry(c.page[c.depth - 1], c.idx[c.depth - 1], txn->db->node_end, &e)))
        return rc;
    if (!begins_with(e.key, e.klen, pb->k, pb->keylen))
        return KEEL_NOTFOUND;
    *key = e.key;
    *klen = e.klen;
    *expiry = e.expiry;
    return 0;
}

/* The count a COUNTED tree's first pair of a key carries (format.h). */
static int carried_count(const struct entry *e, uint64_t pgno, uint64_t *count)
{
    if ((e->flags & N_BIG) || e->vlen != PAIR_COUNT_SIZE)
        return CORRUPT(pgno);
    *count = rd64(e->key + e->klen);
    return 0;
}

/* For dup_put: one search for the whole pair key pb, its path in *path
 * (for bt_insert_at; depth 0: the tree is empty).  *exact: the pair is
 * there (expired or not); *present: the key has a pair, with *expiry its
 * expiry (every pair of a key has the same).  The key's pairs are
 * neighbours, so the entry found or the one before it tells. */
int cursor_find_pair_near(keel_txn *txn, const struct tree_desc *t, const struct pair_bound *pb,
                          struct bt_path *path, struct pair_place *pp)
{
    *pp = (struct pair_place){0};
    bool ex;
    int rc = bt_search(txn, t, pb->k, pb->len, path, &ex);
    if (rc)
        return rc == KEEL_NOTFOUND ? 0 : rc; /* an empty tree */
    keel_cursor c;
    c.txn = txn;
    struct entry e;
    rc = enter_path(&c, t, path);
    if (rc == 0) {
        if ((rc = leaf_entry(c.page[c.depth - 1], c.idx[c.depth - 1], txn->db->node_end, &e)))
            return rc;
        if (begins_with(e.key, e.klen, pb->k, pb->keylen)) {
            pp->present = true;
            pp->exact = ex;
            pp->expiry = e.expiry;
            if (ex || !(t->flags & TREE_F_COUNTED))
                return 0;
            /* COUNTED: the entry found is the key's first pair (the one
             * pair with a value) when this pair goes before all of them */
            if (e.vlen == 0)
                return 0;
            pp->first = true;
            pp->next_key = e.key;
            pp->next_klen = e.klen;
            return carried_count(&e, c.pgno[c.depth - 1], &pp->next_count);
        }
        rc = step(&c, t, -1);
    } else if (rc == KEEL_NOTFOUND) { /* nothing from the pair on: the last entry comes before it */
        rc = descend(&c, t, t->root, t->root_sum, 0, true);
    }
    if (rc)
        return rc == KEEL_NOTFOUND ? 0 : rc;
    if ((rc = leaf_entry(c.page[c.depth - 1], c.idx[c.depth - 1], txn->db->node_end, &e)))
        return rc;
    if (begins_with(e.key, e.klen, pb->k, pb->keylen)) {
        pp->present = true;
        pp->expiry = e.expiry;
    }
    return 0;
}

/* The pair key the cursor is on (or, after a delete, was on): in a write
 * txn its copy (the tree may have changed), in a read txn the node. */
static int position_key(keel_cursor *c, const uint8_t **k, size_t *kl)
{
    if (!c->txn->rdonly) {
        *k = c->keybuf;
        *kl = c->keylen;
        return 0;
    }
    struct entry e;
    int rc = leaf_entry(c->page[c->depth - 1], c->idx[c->depth - 1], c->txn->db->node_end, &e);
    *k = e.key;
    *kl = e.klen;
    return rc;
}

/* A bound for the key the cursor is on, with tail; whole: the position's
 * pair key itself (its value too, and tail ignored). */
static int position_bound(keel_cursor *c, struct pair_bound *pb, const uint8_t tail[2], bool whole)
{
    const uint8_t *k;
    size_t kl;
    int rc = position_key(c, &k, &kl);
    if (rc)
        return rc;
    size_t part = pair_key_part(k, kl);
    if (part == 0)
        return CORRUPT(c->pgno[c->depth - 1]);
    keel_val val = {k + part + PAIR_TERM_SIZE, kl - part - PAIR_TERM_SIZE};
    return pair_bound_make(pb, k, part, true, whole ? PAIR_KEY_END : tail, whole ? val : (keel_val){NULL, 0});
}

/* Does the cursor's position begin with the first `prefix` bytes of pb? */
static bool position_in(keel_cursor *c, const struct pair_bound *pb)
{
    const uint8_t *k;
    size_t kl;
    return position_key(c, &k, &kl) == 0 && begins_with(k, kl, pb->k, pb->keylen);
}

/* A cursor's whole position, to put back when a move finds nothing. */
struct saved_position {
    struct saved_path path;
    int state;
    uint64_t valid_at;
};
static void save_position(const keel_cursor *c, struct saved_position *sp)
{
    save_path(c, &sp->path);
    sp->state = c->state;
    sp->valid_at = c->valid_at;
}
static void restore_position(keel_cursor *c, const struct saved_position *sp)
{
    restore_path(c, &sp->path);
    c->state = sp->state;
    c->valid_at = sp->valid_at;
}

/* Onto the first live entry >= the bound, going forward; with `match` it
 * must be one of the bound's key's pairs.  KEEL_NOTFOUND leaves the cursor
 * unpositioned. */
static int seek_bound(keel_cursor *c, const struct pair_bound *pb, bool match, keel_val *kout, keel_val *vout)
{
    struct tree_desc *t;
    int rc = tree_of(c, &t);
    if (rc)
        return rc;
    bool exact;
    keel_val k, v;
    if ((rc = seek_path(c, t, pb->k, pb->len, &exact)) == 0 && (rc = settle(c, t, 1, &k, &v)) == 0 && match &&
        !position_in(c, pb))
        rc = KEEL_NOTFOUND;
    if (rc) {
        c->state = CUR_UNSET;
        return rc;
    }
    if (kout)
        *kout = k;
    if (vout)
        *vout = v;
    return 0;
}

static int cursor_seek_dup(keel_cursor *c, keel_val key, keel_val *kout, keel_val *vout)
{
    struct pair_bound pb;
    int rc = pair_bound_make(&pb, key.data, key.len, false, PAIR_KEY_END, (keel_val){NULL, 0});
    if (rc)
        return rc;
    pb.len -= PAIR_TERM_SIZE; /* the escaped key alone: every pair of key, or of a later key, is >= */
    pb.keylen = 0;
    rc = seek_bound(c, &pb, false, kout, vout);
    pair_bound_free(&pb);
    return rc;
}

int cursor_seek_key(keel_cursor *c, keel_val key, keel_val *vout)
{
    if (!c->dup) {
        keel_val k;
        int rc = cursor_seek(c, key, &k, vout);
        if (rc == 0 && (k.len != key.len || memcmp(k.data, key.data, k.len))) {
            c->state = CUR_UNSET;
            rc = KEEL_NOTFOUND;
        }
        return rc;
    }
    struct pair_bound pb;
    int rc = pair_bound(&pb, key, PAIR_KEY_END, (keel_val){NULL, 0});
    if (rc)
        return rc;
    rc = seek_bound(c, &pb, true, NULL, vout);
    pair_bound_free(&pb);
    return rc;
}

int cursor_seek_pair(keel_cursor *c, keel_val key, keel_val val, keel_val *kout, keel_val *vout)
{
    if (!c->dup) {
        keel_val v;
        int rc = cursor_seek_key(c, key, &v);
        if (rc == 0 && bt_cmp(v.data, v.len, val.data, val.len) < 0) {
            c->state = CUR_UNSET;
            rc = KEEL_NOTFOUND;
        }
        if (rc == 0 && kout)
            cursor_current(c, kout, NULL);
        if (rc == 0 && vout)
            *vout = v;
        return rc;
    }
    struct pair_bound pb;
    int rc = pair_bound(&pb, key, PAIR_KEY_END, val);
    if (rc)
        return rc;
    rc = seek_bound(c, &pb, true, kout, vout);
    pair_bound_free(&pb);
    return rc;
}

/* The common next_dup / prev_dup: the neighbour in the cursor's leaf (its
 * path valid: resync ran).  Of the same key (its pair key begins with ours
 * up to the terminator): onto it, unless it has expired; of another key:
 * KEEL_NOTFOUND, the cursor stays (pairs of a key are neighbours).
 * MOVE_DUP_GENERAL: anything else (another leaf, an expired neighbour,
 * damage), for the general path.  A read txn keeps the key part it found
 * (c->dup_key ...) for the next call, on the entry it moved to. */
#define MOVE_DUP_GENERAL 1
static int move_dup_in_leaf(keel_cursor *c, keel_val *key, keel_val *val, int dir)
{
    int lv = c->depth - 1;
    const uint8_t *page = c->page[lv];
    unsigned i = c->idx[lv] + (unsigned)dir; /* from 0 back: wraps */
    uint32_t ps = c->txn->db->node_end;
    struct entry nb;
    if (i >= page_nkeys(page) || leaf_entry(page, i, ps, &nb))
        return MOVE_DUP_GENERAL;
    bool rdonly = c->txn->rdonly;
    if (!rdonly || c->dup_page != page || c->dup_idx != c->idx[lv]) {
        struct entry cur;
        if (leaf_entry(page, c->idx[lv], ps, &cur))
            return MOVE_DUP_GENERAL;
        size_t part = pair_key_part(cur.key, cur.klen);
        if (part == 0)
            return MOVE_DUP_GENERAL;
        if (c->dup_page != page) /* a run is starting in this leaf: see prefetch_leaf */
            prefetch_leaf(page, ps);
        c->dup_page = page;
        c->dup_idx = c->idx[lv];
        c->dup_key = cur.key;
        c->dup_part = (uint32_t)part;
        c->dup_plain = !key_has_zero(cur.key, part);
    }
    size_t plen = c->dup_part + PAIR_TERM_SIZE;
    if (!begins_with(nb.key, nb.klen, c->dup_key, plen))
        return KEEL_NOTFOUND;
    if ((nb.expiry != 0 && nb.expiry <= c->txn->now && !c->all) || !pair_value_ok(&nb))
        return MOVE_DUP_GENERAL;
    if (!rdonly || (key && !c->dup_plain)) {
        int rc = load_entry(c, &nb, key, val);
        if (rc == 0)
            c->idx[lv] = i;
        return rc;
    }
    /* what load_pair does, without parsing the pair key again */
    if (key)
        *key = (keel_val){nb.key, c->dup_part};
    if (val)
        *val = (keel_val){nb.key + plen, nb.klen - plen};
    c->idx[lv] = c->dup_idx = i;
    c->dup_key = nb.key;
    return 0;
}

/* The run of next_dup in a read txn, inline: the neighbour in the leaf is
 * a plain node (no expiry time, no overflow value) of our key, whose key
 * part move_dup_in_leaf found before.  MOVE_DUP_GENERAL: anything else. */
static inline __attribute__((always_inline)) int move_dup_cached(keel_cursor *c, keel_val *key, keel_val *val,
                                                                 int dir)
{
    int lv = c->depth - 1;
    const uint8_t *page = c->page[lv];
    unsigned i = c->idx[lv] + (unsigned)dir, nkeys = page_nkeys(page); /* from 0 back: wraps */
    if (c->state != CUR_ON || page != c->dup_page || c->idx[lv] != c->dup_idx || i >= nkeys || !c->dup_plain)
        return MOVE_DUP_GENERAL;
    uint32_t ps = c->txn->db->node_end;
    unsigned off = page_slot(page, i);
    if (off < PAGE_HDR + 2 * nkeys || off > ps - LEAF_HDR)
        return MOVE_DUP_GENERAL;
    const uint8_t *n = page + off;
    size_t klen = leaf_node_ksize(n), plen = c->dup_part + PAIR_TERM_SIZE;
    if (leaf_node_flags(n) != 0 || leaf_node_vsize(n) != 0 || klen > ps - LEAF_HDR - off)
        return MOVE_DUP_GENERAL;
    const uint8_t *k = n + LEAF_HDR;
    if (!begins_with(k, klen, c->dup_key, plen))
        return KEEL_NOTFOUND;
    if (key)
        *key = (keel_val){k, c->dup_part};
    if (val)
        *val = (keel_val){k + plen, klen - plen};
    c->idx[lv] = c->dup_idx = i;
    c->dup_key = k;
    return 0;
}

/* next_dup / prev_dup: one move, undone when it left the key.  Out of
 * line, so that the common case (cursor_move_dup) saves no registers. */
static __attribute__((noinline)) int move_dup_general(keel_cursor *c, keel_val *key, keel_val *val, int dir)
{
    int rc;
    if (c->state == CUR_UNSET)
        return KEEL_BADCURSOR;
    struct tree_desc *t;
    if ((rc = tree_of(c, &t)) || (rc = resync(c, t)))
        return rc;
    if (!c->dup || (c->state == CUR_EOF && dir > 0)) /* CUR_EOF back: the last pair, if it is of our key */
        return KEEL_NOTFOUND;
    if (c->state == CUR_ON && (rc = move_dup_in_leaf(c, key, val, dir)) != MOVE_DUP_GENERAL)
        return rc;
    struct pair_bound pb; /* our pair key, whole: a write txn's copy of it is put back with the path */
    if ((rc = position_bound(c, &pb, PAIR_KEY_END, true)))
        return rc;
    struct saved_position sp;
    save_position(c, &sp);
    keel_val k, v;
    if ((rc = move(c, &k, &v, dir)) == 0 && !position_in(c, &pb)) { /* another key's: back where we were */
        rc = c->txn->rdonly ? 0 : remember_key(c, pb.k, pb.len);
        restore_position(c, &sp);
        if (rc == 0)
            rc = KEEL_NOTFOUND;
    }
    pair_bound_free(&pb);
    if (rc == 0) {
        if (key)
            *key = k;
        if (val)
            *val = v;
    }
    return rc;
}

int cursor_move_dup(keel_cursor *c, keel_val *key, keel_val *val, int dir)
{
    int rc;
    if (c->txn->rdonly && (rc = move_dup_cached(c, key, val, dir)) != MOVE_DUP_GENERAL)
        return rc;
    return move_dup_general(c, key, val, dir);
}

/* next_key: a seek past the key's last value; prev_key: to its first value,
 * then one step back.  Nothing there: the cursor stays. */
int cursor_move_key(keel_cursor *c, keel_val *key, keel_val *val, int dir)
{
    if (!c->dup || c->state == CUR_UNSET)
        return move(c, key, val, dir);
    struct tree_desc *t;
    int rc = tree_of(c, &t);
    if (rc || (rc = resync(c, t)))
        return rc;
    if (c->state == CUR_EOF && dir > 0)
        return KEEL_NOTFOUND;
    struct pair_bound pb; /* after a delete (CUR_AFTER_DEL, CUR_EOF): the deleted pair's key */
    if ((rc = position_bound(c, &pb, dir > 0 ? PAIR_KEY_NEXT : PAIR_KEY_END, false)))
        return rc;
    struct saved_position sp;
    save_position(c, &sp);
    bool exact;
    rc = seek_path(c, t, pb.k, pb.len, &exact);
    if (dir < 0) {
        if (rc == KEEL_NOTFOUND && t->root) /* nothing from our key on: the last entry comes before it */
            rc = descend(c, t, t->root, t->root_sum, 0, true);
        else if (rc == 0)
            rc = step(c, t, -1);
    }
    if (rc == 0)
        rc = settle(c, t, dir, key, val);
    if (rc)
        restore_position(c, &sp);
    pair_bound_free(&pb);
    return rc;
}

/* The entries of the tree between two positions of one search each: the
 * rest of lo's leaf, the leaves between, and hi's leaf up to hi. */
static int count_between(keel_cursor *c, const struct tree_desc *t, const struct bt_path *lo, const struct bt_path *hi,
                         uint64_t *count)
{
    int lv = lo->depth - 1;
    if (lo->pgno[lv] == hi->pgno[lv]) {
        *count = hi->idx[lv] - lo->idx[lv];
        return 0;
    }
    struct saved_position sp;
    save_position(c, &sp);
    c->depth = lo->depth;
    for (int i = 0; i < lo->depth; i++) {
        c->pgno[i] = lo->pgno[i];
        c->page[i] = lo->page[i];
        c->idx[i] = lo->idx[i];
    }
    uint64_t n = 0, leaves = 0;
    int rc = 0;
    while (c->pgno[lv] != hi->pgno[lv]) {
        unsigned nkeys = page_nkeys(c->page[lv]);
        n += nkeys - c->idx[lv];
        c->idx[lv] = nkeys - 1;
        if (++leaves > t->leaf_pages || (rc = step(c, t, 1))) /* hi is further on: not reached is damage */
            break;
    }
    restore_position(c, &sp);
    if (rc || leaves > t->leaf_pages)
        return rc == KEEL_NOTFOUND || !rc ? CORRUPT(hi->pgno[lv]) : rc;
    *count = n + hi->idx[lv];
    return 0;
}

/* Does leaf entry i begin with the plen bytes at pfx?  -1: damage. */
static int entry_in_key(const uint8_t *page, unsigned i, uint32_t ps, const uint8_t *pfx, size_t plen)
{
    struct entry e;
    if (leaf_entry(page, i, ps, &e))
        return -1;
    return begins_with(e.key, e.klen, pfx, plen);
}

/* The index of the key's first pair (pfx: its escaped key and terminator)
 * in the leaf, searched back from its pair at b: KEEL_NOTFOUND when they
 * may begin in an earlier leaf (entry 0 is one of them, or b is 0). */
static int first_of_key_in_leaf(const uint8_t *page, unsigned b, uint32_t ps, const uint8_t *pfx, size_t plen,
                                unsigned *first)
{
    if (b == 0)
        return KEEL_NOTFOUND;
    int in = entry_in_key(page, b - 1, ps, pfx, plen);
    if (in == 0) { /* b is the first (the cursor after seek_key) */
        *first = b;
        return 0;
    }
    if (in < 0 || (in = entry_in_key(page, 0, ps, pfx, plen)) < 0)
        return CORRUPT(page_pgno(page));
    if (in)
        return KEEL_NOTFOUND;
    unsigned a = 0; /* entry a is another key's, entry b this key's */
    while (b - a > 1) {
        unsigned m = a + (b - a) / 2;
        if ((in = entry_in_key(page, m, ps, pfx, plen)) < 0)
            return CORRUPT(page_pgno(page));
        *(in ? &b : &a) = m;
    }
    *first = b;
    return 0;
}

/* The common count, without a search: the key's pairs begin in the
 * cursor's leaf after another key's entry (a binary search back from the
 * cursor finds the first), and end in this leaf or a later one (the walk
 * goes from leaf to leaf while the last entry is the key's, then a binary
 * search finds the end).  MOVE_DUP_GENERAL: the first pair may be in an
 * earlier leaf, or damage: for the two searches of the general path. */
static int count_in_leaves(keel_cursor *c, const struct tree_desc *t, uint64_t *count)
{
    int lv = c->depth - 1;
    const uint8_t *page = c->page[lv];
    uint32_t ps = c->txn->db->node_end;
    unsigned idx = c->idx[lv];
    struct entry e;
    if (idx == 0 || leaf_entry(page, idx, ps, &e))
        return MOVE_DUP_GENERAL;
    size_t plen = pair_key_part(e.key, e.klen) + PAIR_TERM_SIZE;
    const uint8_t *pfx = e.key; /* in a page no one changes while we count */
    unsigned b;
    if (plen == PAIR_TERM_SIZE || first_of_key_in_leaf(page, idx, ps, pfx, plen, &b))
        return MOVE_DUP_GENERAL;
    struct saved_position sp;
    save_position(c, &sp);
    uint64_t n = 0, leaves = 0;
    unsigned start = b;
    int rc = 0;
    for (;;) {
        unsigned nkeys = page_nkeys(page);
        int in = entry_in_key(page, nkeys - 1, ps, pfx, plen);
        if (in < 0) {
            rc = MOVE_DUP_GENERAL;
            break;
        }
        if (!in) { /* the pairs end in this leaf: at the first entry after start that is not one */
            unsigned lo = start, hi = nkeys - 1; /* the answer is in [lo, hi] */
            while (lo < hi) {
                unsigned m = lo + (hi - lo) / 2;
                if ((in = entry_in_key(page, m, ps, pfx, plen)) < 0)
                    break;
                if (in)
                    lo = m + 1;
                else
                    hi = m;
            }
            if (in < 0)
                rc = MOVE_DUP_GENERAL;
            n += lo - start;
            break;
        }
        n += nkeys - start;
        c->idx[lv] = nkeys - 1;
        if (++leaves > t->leaf_pages) {
            rc = CORRUPT(c->pgno[lv]);
            break;
        }
        if ((rc = step(c, t, 1))) { /* the key's pairs end the tree */
            rc = rc == KEEL_NOTFOUND ? 0 : rc;
            break;
        }
        page = c->page[lv];
        start = 0;
    }
    restore_position(c, &sp);
    if (rc == 0)
        *count = n;
    return rc;
}

int cursor_find_carrier(keel_txn *txn, const struct tree_desc *t, const uint8_t *pfx, size_t plen,
                        struct bt_path *path, uint64_t *count)
{
    keel_cursor c;
    c.txn = txn;
    bool exact;
    int rc = bt_search(txn, t, pfx, plen, path, &exact);
    if (rc == 0)
        rc = enter_path(&c, t, path); /* a step to the next leaf if the key's pairs begin there */
    struct entry e;
    if (rc || (rc = leaf_entry(c.page[c.depth - 1], c.idx[c.depth - 1], txn->db->node_end, &e)))
        return rc == KEEL_NOTFOUND ? CORRUPT(0) : rc;
    if (!begins_with(e.key, e.klen, pfx, plen))
        return CORRUPT(c.pgno[c.depth - 1]); /* a count is owed to a key without pairs */
    for (int l = 0; l < c.depth; l++) {
        path->pgno[l] = c.pgno[l];
        path->page[l] = (uint8_t *)c.page[l];
        path->idx[l] = c.idx[l];
    }
    return carried_count(&e, c.pgno[c.depth - 1], count);
}

/* COUNTED: the key's first pair is the cursor's entry or before it in its
 * leaf (a binary search back), or else found by a search. */
static int stored_count(keel_cursor *c, const struct tree_desc *t, uint64_t *count)
{
    int lv = c->depth - 1;
    const uint8_t *page = c->page[lv];
    uint32_t ps = c->txn->db->node_end;
    unsigned b = c->idx[lv];
    struct entry e;
    int rc = leaf_entry(page, b, ps, &e);
    if (rc)
        return rc;
    size_t plen = pair_key_part(e.key, e.klen) + PAIR_TERM_SIZE;
    if (plen == PAIR_TERM_SIZE)
        return CORRUPT(c->pgno[lv]);
    if (e.vlen) /* the key's first pair: the one pair that carries a value */
        return carried_count(&e, c->pgno[lv], count);
    const uint8_t *pfx = e.key;
    unsigned first;
    if ((rc = first_of_key_in_leaf(page, b, ps, pfx, plen, &first)) == 0)
        return (rc = leaf_entry(page, first, ps, &e)) ? rc : carried_count(&e, c->pgno[lv], count);
    if (rc != KEEL_NOTFOUND)
        return rc;
    /* the key's pairs may begin in an earlier leaf */
    uint8_t copy[512];
    uint8_t *k = plen <= sizeof copy ? copy : os_malloc(plen);
    if (!k)
        return KEEL_NOMEM;
    memcpy(k, pfx, plen);
    struct bt_path path;
    rc = cursor_find_carrier(c->txn, t, k, plen, &path, count);
    if (k != copy)
        os_free(k);
    return rc;
}

int cursor_count(keel_cursor *c, uint64_t *count)
{
    struct tree_desc *t;
    int rc = on_live_entry(c, &t);
    if (rc)
        return rc;
    if (!c->dup) {
        *count = 1;
        return 0;
    }
    if (t->flags & TREE_F_COUNTED) {
        if ((rc = stored_count(c, t, count)) || c->txn->rdonly)
            return rc;
        struct entry e; /* and what this write txn owes the key (dupcount.c) */
        if ((rc = leaf_entry(c->page[c->depth - 1], c->idx[c->depth - 1], c->txn->db->node_end, &e)))
            return rc;
        int64_t n = (int64_t)*count + dupcount_pending(c->txn, t->id, e.key, pair_key_part(e.key, e.klen) + PAIR_TERM_SIZE);
        if (n <= 0)
            return CORRUPT(c->pgno[c->depth - 1]);
        *count = (uint64_t)n;
        return 0;
    }
    if ((rc = count_in_leaves(c, t, count)) != MOVE_DUP_GENERAL)
        return rc;
    struct pair_bound pb;
    if ((rc = position_bound(c, &pb, PAIR_KEY_END, false)))
        return rc;
    struct bt_path lo, hi;
    bool exact;
    if ((rc = bt_search(c->txn, t, pb.k, pb.len, &lo, &exact)) == 0) {
        memcpy(pb.k + pb.len - PAIR_TERM_SIZE, PAIR_KEY_NEXT, PAIR_TERM_SIZE);
        if ((rc = bt_search(c->txn, t, pb.k, pb.len, &hi, &exact)) == 0)
            rc = count_between(c, t, &lo, &hi, count);
    }
    pair_bound_free(&pb);
    return rc;
}
