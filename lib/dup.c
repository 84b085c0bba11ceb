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
 */
#include <string.h>

#include "internal.h"

/* The pair key for (key, val) in pb; KEEL_BADVALSIZE if it is too long. */
static int pair_make(keel_txn *txn, struct pair_bound *pb, keel_val key, keel_val val)
{
    int rc = pair_bound(pb, key, PAIR_KEY_END, val);
    if (rc)
        return rc;
    if (pb->len > txn->db->max_pair_key) {
        pair_bound_free(pb);
        return KEEL_BADVALSIZE;
    }
    return 0;
}

bool dup_pair_fits(keel_txn *txn, keel_val key, keel_val val)
{
    return pair_key_escaped_len(key.data, key.len) + PAIR_TERM_SIZE + val.len <= txn->db->max_pair_key;
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
    int rc = pair_make(txn, &pb, key, val);
    if (rc)
        return rc;
    *old_exp = *new_exp = 0;
    int64_t key_exp = 0;
    bool present, exact, path_valid = true; /* one search: the key's pairs, and this one among them */
    struct bt_path path;
    if ((rc = cursor_find_pair_near(txn, t, &pb, &path, &present, &exact, &key_exp)))
        goto out;
    *old_exp = present ? key_exp : 0;
    if (present && !expiry_live(txn, key_exp)) { /* expired: absent, its pairs go first */
        int64_t was;
        if ((rc = dup_del_key(txn, t, key, false, &was)))
            goto out;
        present = exact = path_valid = false;
        key_exp = 0;
    }
    if (present && (flags & KEEL_NOOVERWRITE)) {
        rc = KEEL_EXISTS;
        goto out;
    }
    *new_exp = expiry ? expiry : key_exp;
    if (exact && (flags & KEEL_NODUPDATA)) {
        rc = KEEL_EXISTS;
        goto out;
    }
    keel_val pair = {pb.k, pb.len}, none = {NULL, 0};
    if (!exact && path_valid) /* the search's path: no second one */
        rc = bt_insert_at(txn, t, &path, pair, none, *new_exp, flags & KEEL_APPEND);
    else if (!exact)
        rc = bt_put(txn, t, pair, none, *new_exp, flags & KEEL_APPEND, NULL);
    if (rc == 0 && present && *new_exp != key_exp)
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
    int rc = pair_make(txn, &pb, key, val);
    if (rc)
        return rc == KEEL_BADVALSIZE ? KEEL_NOTFOUND : rc; /* too long to be there */
    *old_exp = *new_exp = 0;
    if ((rc = bt_del_live(txn, t, (keel_val){pb.k, pb.len}, old_exp)) == 0 && *old_exp)
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
