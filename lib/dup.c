/*
 * dup.c — the tree operations of a DUPSORT bucket, for kv.c's write path.
 *
 * Contract:
 *   - A DUPSORT tree holds one entry per (key, value) pair: its node key is
 *     the pair key (format.h: the escaped key, a terminator, the value), its
 *     node value is empty.  The pairs of a key are neighbours in the tree.
 *   - A key's expiry is on every one of its pairs, the same time on each;
 *     the expiry index holds one entry per key (kv.c keeps it, from the
 *     old_exp / new_exp these functions report).  A key whose pairs have
 *     expired is absent: a put removes them first, as a put over an
 *     expired entry of a plain tree replaces it.
 *   - Each function is one tree operation for kv.c (between its prologue
 *     and epilogue).  Arguments are checked but for the pair's length,
 *     which only the tree's kind tells: KEEL_BADVALSIZE, before any change.
 *   - Deleting a key, or changing its expiry, takes one search per value:
 *     O(values x log n).  Adding, finding and deleting one pair is O(log n).
 *   - COUNTED trees (format.h): the key's first pair carries its number of
 *     pairs.  A pair added or deleted anywhere else leaves that count as it
 *     is and adds +1 or -1 to what the txn owes the key (dupcount.c), which
 *     dup_counts_flush writes in at commit (or when the txn owes many keys).
 *     A pair that becomes the key's first takes the count over from the
 *     pair that was, and the next pair takes it over from a first pair
 *     deleted: those two rewrite the key's count, exact, at once.
 */
#include <string.h>

#include "internal.h"

/* The longest pair key a put may add to t. */
static size_t max_put_pair(const keel_txn *txn, const struct tree_desc *t)
{
    return (t->flags & TREE_F_COUNTED) ? txn->db->max_counted_pair_key : txn->db->max_pair_key;
}

/* The pair key for (key, val) in pb; KEEL_BADVALSIZE if it is longer than max. */
static int pair_make(struct pair_bound *pb, keel_val key, keel_val val, size_t max)
{
    int rc = pair_bound(pb, key, PAIR_KEY_END, val);
    if (rc)
        return rc;
    if (pb->len > max) {
        pair_bound_free(pb);
        return KEEL_BADVALSIZE;
    }
    return 0;
}

bool dup_pair_fits(keel_txn *txn, const struct tree_desc *t, keel_val key, keel_val val)
{
    return pair_key_escaped_len(key.data, key.len) + PAIR_TERM_SIZE + val.len <= max_put_pair(txn, t);
}

/* ---- counts (COUNTED trees) ---- */

/* A pair key (copied: k may point into a page) made the key's first pair,
 * carrying count n: the pair's node value becomes the count, or (n 0) empty. */
static int set_carried(keel_txn *txn, struct tree_desc *t, const uint8_t *k, size_t kl, uint64_t n, int64_t expiry)
{
    uint8_t stackbuf[512];
    uint8_t *copy = kl <= sizeof stackbuf ? stackbuf : os_malloc(kl);
    if (!copy)
        return KEEL_NOMEM;
    memcpy(copy, k, kl);
    keel_val v = {n ? &n : NULL, n ? sizeof n : 0};
    int rc = bt_put(txn, t, (keel_val){copy, kl}, v, expiry, 0, NULL);
    if (copy != stackbuf)
        os_free(copy);
    return rc;
}

static int flush_when_many(keel_txn *txn)
{
    return txn->dupcounts.n >= DUPCOUNT_FLUSH_KEYS ? dup_counts_flush(txn) : 0;
}

/* After a pair of the key (pfx: its escaped key and PAIR_KEY_END) left a
 * COUNTED tree; carried: the count that pair carried (0: it was not the
 * key's first).  The key's next pair, if any, carries the rest.  owed_hash:
 * dupcount_prefetch's for pfx, or NULL. */
int dup_pair_gone(keel_txn *txn, struct tree_desc *t, const uint8_t *pfx, size_t plen, uint64_t carried,
                  const uint64_t *owed_hash)
{
    if (!(t->flags & TREE_F_COUNTED))
        return 0;
    if (!carried) {
        int rc = owed_hash ? dupcount_add_hashed(txn, *owed_hash, t->id, pfx, plen, -1)
                           : dupcount_add(txn, t->id, pfx, plen, -1);
        return rc ? rc : flush_when_many(txn);
    }
    int64_t left = (int64_t)carried + dupcount_pending(txn, t->id, pfx, plen) - 1;
    if (left < 0)
        return CORRUPT(0);
    if (left > 0) {
        struct pair_bound pb = {.k = (uint8_t *)pfx, .len = plen, .keylen = plen};
        const uint8_t *k;
        size_t kl;
        int64_t exp;
        int rc = cursor_find_pair(txn, t, &pb, &k, &kl, &exp);
        if (rc || (rc = set_carried(txn, t, k, kl, (uint64_t)left, exp)))
            return rc == KEEL_NOTFOUND ? CORRUPT(0) : rc; /* a count left for no pair */
    }
    return dupcount_settle(txn, t->id, pfx, plen);
}

/* Adds the pair (not there) at path, or (path NULL) where a search finds. */
static int insert_pair(keel_txn *txn, struct tree_desc *t, const struct pair_bound *pb, struct bt_path *path,
                       keel_val val, int64_t expiry, unsigned flags)
{
    keel_val pair = {pb->k, pb->len};
    return path ? bt_insert_at(txn, t, path, pair, val, expiry, flags) : bt_put(txn, t, pair, val, expiry, flags, NULL);
}

/* COUNTED: the pair as the first of its key, carrying the key's count; a
 * key that had pairs (pp->first) gets one more, and the pair that was its
 * first carries nothing from now on. */
static int insert_first_pair(keel_txn *txn, struct tree_desc *t, const struct pair_bound *pb, struct bt_path *path,
                             const struct pair_place *pp, int64_t expiry, unsigned flags)
{
    int64_t n = 1;
    uint8_t stackbuf[512], *copy = stackbuf, *was = NULL;
    size_t waslen = 0;
    if (pp->present) {
        n = (int64_t)pp->next_count + dupcount_pending(txn, t->id, pb->k, pb->keylen) + 1;
        waslen = pp->next_klen;
        if (n < 2 || !(copy = waslen <= sizeof stackbuf ? stackbuf : os_malloc(waslen)))
            return n < 2 ? CORRUPT(0) : KEEL_NOMEM;
        was = copy;
        memcpy(was, pp->next_key, waslen); /* the insert may move it */
    }
    uint64_t count = (uint64_t)n;
    int rc = 0;
    int lv = path ? path->depth - 1 : 0;
    const uint8_t *at;
    if (was && path && path->idx[lv] < page_nkeys(path->page[lv]) &&
        node_at(path->page[lv], path->idx[lv], txn->db->node_end, &at) == 0 && leaf_node_key(at) == pp->next_key) {
        /* the common case: the old first pair is where this one goes, in
         * the same leaf: it gives up its count in place, no search */
        if ((rc = bt_update_value(txn, t, path, NULL, 0)))
            goto out;
        was = NULL;
    }
    rc = insert_pair(txn, t, pb, path, (keel_val){&count, sizeof count}, expiry, flags);
    if (!rc && was)
        rc = set_carried(txn, t, was, waslen, 0, pp->expiry);
    if (!rc && pp->present)
        rc = dupcount_settle(txn, t->id, pb->k, pb->keylen);
out:
    if (copy != stackbuf)
        os_free(copy);
    return rc;
}

/* One key's owed count into its first pair (dupcount_each's callback). */
static int flush_one(keel_txn *txn, uint32_t tree_id, const uint8_t *k, size_t len, int64_t delta, void *ctx)
{
    (void)ctx;
    keel_bucket b;
    struct tree_desc *t;
    int rc = bucket_by_id(txn, tree_id, &b); /* a dropped bucket's counts were forgotten (kv_drop_bucket) */
    if (rc || (rc = bucket_tree(txn, b, &t)))
        return rc;
    struct bt_path path;
    uint64_t stored;
    if ((rc = cursor_find_carrier(txn, t, k, len, &path, &stored)))
        return rc;
    int64_t n = (int64_t)stored + delta;
    if (n <= 0)
        return CORRUPT(path.pgno[path.depth - 1]);
    uint64_t v = (uint64_t)n;
    if ((rc = bt_update_value(txn, t, &path, &v, sizeof v)))
        return rc;
    bucket_mark_dirty(txn, b);
    return 0;
}

int dup_counts_flush(keel_txn *txn)
{
    if (txn->dupcounts.n == 0)
        return 0;
    int rc = dupcount_each(txn, flush_one, NULL);
    dupcount_clear(txn);
    return rc;
}

/* The key's first pair: its value (pointing into the page) and expiry. */
int dup_get(keel_txn *txn, const struct tree_desc *t, keel_val key, keel_val *val, int64_t *expiry)
{
    struct pair_bound pb;
    int rc = pair_bound(&pb, key, PAIR_KEY_END, (keel_val){NULL, 0});
    if (rc)
        return rc;
    const uint8_t *k;
    size_t kl;
    if ((rc = cursor_find_pair(txn, t, &pb, &k, &kl, expiry)) == 0 && val)
        *val = (keel_val){k + pb.keylen, kl - pb.keylen};
    pair_bound_free(&pb);
    return rc;
}

/* Removes every pair of the key (expired or not); *old_exp gets their
 * expiry.  KEEL_NOTFOUND if it has none, or (live) if they have expired. */
int dup_del_key(keel_txn *txn, struct tree_desc *t, keel_val key, bool live, int64_t *old_exp)
{
    struct pair_bound pb;
    int rc = pair_bound(&pb, key, PAIR_KEY_END, (keel_val){NULL, 0});
    if (rc)
        return rc;
    uint8_t *copy = os_malloc(txn->db->max_pair_key);
    if (!copy) {
        pair_bound_free(&pb);
        return KEEL_NOMEM;
    }
    *old_exp = 0;
    for (uint64_t n = 0;; n++) {
        const uint8_t *k;
        size_t kl;
        int64_t exp;
        if ((rc = cursor_find_pair(txn, t, &pb, &k, &kl, &exp))) {
            if (rc == KEEL_NOTFOUND && n > 0)
                rc = 0;
            break;
        }
        if (n == 0 && live && !expiry_live(txn, exp)) {
            rc = KEEL_NOTFOUND;
            break;
        }
        if (n == 0)
            *old_exp = exp;
        if (kl > txn->db->max_pair_key) {
            rc = CORRUPT(0);
            break;
        }
        memcpy(copy, k, kl); /* k points into a page that the delete changes */
        int64_t was;
        if ((rc = bt_del(txn, t, (keel_val){copy, kl}, &was)))
            break;
    }
    if (rc == 0 && (t->flags & TREE_F_COUNTED)) /* nothing is owed to a key without pairs */
        rc = dupcount_settle(txn, t->id, pb.k, pb.keylen);
    os_free(copy);
    pair_bound_free(&pb);
    return rc;
}

/* Adds the pair.  expiry: 0 keeps the key's (none for a new key), else
 * becomes the key's.  *old_exp and *new_exp: the key's before and after. */
int dup_put(keel_txn *txn, struct tree_desc *t, keel_val key, keel_val val, int64_t expiry, unsigned flags,
            int64_t *old_exp, int64_t *new_exp)
{
    struct pair_bound pb;
    int rc = pair_make(&pb, key, val, max_put_pair(txn, t));
    if (rc)
        return rc;
    *old_exp = *new_exp = 0;
    uint64_t owed_hash = 0; /* most puts add to what the txn owes the key: its slot, asked for now */
    if (t->flags & TREE_F_COUNTED)
        owed_hash = dupcount_prefetch(txn, t->id, pb.k, pb.keylen);
    struct pair_place pp; /* one search: the key's pairs, and this one among them */
    struct bt_path path, *at = &path;
    if ((rc = cursor_find_pair_near(txn, t, &pb, &path, &pp)))
        goto out;
    int64_t key_exp = pp.present ? pp.expiry : 0;
    *old_exp = key_exp;
    if (pp.present && !expiry_live(txn, key_exp)) { /* expired: absent, its pairs go first */
        int64_t was;
        if ((rc = dup_del_key(txn, t, key, false, &was)))
            goto out;
        pp = (struct pair_place){0};
        at = NULL; /* the search's path is gone */
        key_exp = 0;
    }
    if (pp.present && (flags & KEEL_NOOVERWRITE)) {
        rc = KEEL_EXISTS;
        goto out;
    }
    *new_exp = expiry ? expiry : key_exp;
    if (pp.exact && (flags & KEEL_NODUPDATA)) {
        rc = KEEL_EXISTS;
        goto out;
    }
    flags &= KEEL_APPEND;
    if (pp.exact) {
        /* there already: only the key's expiry may change */
    } else if (!(t->flags & TREE_F_COUNTED)) {
        rc = insert_pair(txn, t, &pb, at, (keel_val){NULL, 0}, *new_exp, flags);
    } else if (pp.present && !pp.first) { /* the common case: the count is owed */
        if (!(rc = insert_pair(txn, t, &pb, at, (keel_val){NULL, 0}, *new_exp, flags)) &&
            !(rc = dupcount_add_hashed(txn, owed_hash, t->id, pb.k, pb.keylen, 1)))
            rc = flush_when_many(txn);
    } else {
        rc = insert_first_pair(txn, t, &pb, at, &pp, *new_exp, flags);
    }
    if (rc == 0 && pp.present && *new_exp != key_exp)
        rc = dup_set_expiry(txn, t, key, *new_exp);
out:
    pair_bound_free(&pb);
    return rc;
}

/* Removes one live pair.  The key's expiry leaves the index (*new_exp = 0)
 * only with its last pair. */
int dup_del_pair(keel_txn *txn, struct tree_desc *t, keel_val key, keel_val val, int64_t *old_exp, int64_t *new_exp)
{
    struct pair_bound pb;
    int rc = pair_make(&pb, key, val, txn->db->max_pair_key);
    if (rc)
        return rc == KEEL_BADVALSIZE ? KEEL_NOTFOUND : rc; /* too long to be there */
    *old_exp = *new_exp = 0;
    uint64_t carried, owed_hash = 0; /* most deletes add to what the txn owes the key */
    if (t->flags & TREE_F_COUNTED)
        owed_hash = dupcount_prefetch(txn, t->id, pb.k, pb.keylen);
    if ((rc = bt_del_pair(txn, t, (keel_val){pb.k, pb.len}, true, old_exp, &carried)) == 0)
        rc = dup_pair_gone(txn, t, pb.k, pb.keylen, carried, &owed_hash);
    if (rc == 0 && *old_exp)
        rc = dup_after_del(txn, t, key, *old_exp, new_exp);
    pair_bound_free(&pb);
    return rc;
}

/* After one pair of key went: the key's expiry stays in the index while a
 * pair of it remains. */
int dup_after_del(keel_txn *txn, const struct tree_desc *t, keel_val key, int64_t old_exp, int64_t *new_exp)
{
    int64_t exp;
    int rc = dup_get(txn, t, key, NULL, &exp);
    *new_exp = rc == 0 ? old_exp : 0;
    return rc == KEEL_NOTFOUND ? 0 : rc;
}

/* Sets the expiry of every pair of the (present) key: a walk from pair to
 * pair, each found by a search for the smallest pair key after the last. */
int dup_set_expiry(keel_txn *txn, struct tree_desc *t, keel_val key, int64_t expiry)
{
    struct pair_bound pb;
    int rc = pair_bound(&pb, key, PAIR_KEY_END, (keel_val){NULL, 0});
    if (rc)
        return rc;
    size_t cap = txn->db->max_pair_key + 1;
    uint8_t *next = os_malloc(cap);
    if (!next) {
        pair_bound_free(&pb);
        return KEEL_NOMEM;
    }
    struct pair_bound at = pb; /* searches from the key's first pair, then past each pair done */
    at.k = next;
    memcpy(next, pb.k, pb.len);
    for (;;) {
        const uint8_t *k;
        size_t kl;
        int64_t was;
        if ((rc = cursor_find_pair(txn, t, &at, &k, &kl, &was))) {
            rc = rc == KEEL_NOTFOUND ? 0 : rc;
            break;
        }
        if (kl + 1 > cap) {
            rc = CORRUPT(0);
            break;
        }
        memcpy(next, k, kl);
        if ((rc = bt_set_expiry(txn, t, (keel_val){next, kl}, expiry, &was)))
            break;
        next[kl] = 0; /* the smallest key after this pair */
        at.len = kl + 1;
    }
    os_free(next);
    pair_bound_free(&pb);
    return rc;
}
