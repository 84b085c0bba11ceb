/*
 * kv.c — the write path: every change to a bucket's entries goes through
 * here, and so does every read that applies the expiry rule.
 *
 * Contract:
 *   - Each write is one prologue, one tree operation, one epilogue:
 *       prologue  find the bucket's tree (a bad handle answers KEEL_BADBUCKET
 *                 and changes nothing), then spill dirty pages over budget
 *                 (here, between operations, nothing holds a page pointer);
 *       epilogue  mark the bucket dirty and move its expiry-index entry from
 *                 the old expiry to the new; on any failure after the first
 *                 change, poison the txn (only abort remains).
 *     A new kind of write is a new tree operation between the two; nothing
 *     else here changes.
 *   - A key whose expiry is <= txn->now is absent (expiry_live): reads miss
 *     it, a delete or expiry change answers KEEL_NOTFOUND and leaves it for
 *     purge, and bt_put treats it as absent for KEEL_NOOVERWRITE/KEEPTTL.
 *   - Redis's rules for the expiry: a plain put clears it unless
 *     KEEL_KEEPTTL; a CAS and an increment keep it (ops.c passes KEEPTTL);
 *     a delete removes it.
 *   - Callers (api.c, ops.c, copy.c) have checked their arguments; kv checks
 *     nothing but what only the txn's state can tell (a DUPSORT pair's
 *     length: KEEL_BADVALSIZE before any change).
 *   - A DUPSORT tree's operations are dup.c's: the same prologue and
 *     epilogue, with one expiry-index entry per key.
 */
#include <string.h>

#include "internal.h"

/* A write op failed after it may have changed pages: only abort remains.
 * KEEL_NOTFOUND and KEEL_EXISTS are answers, given before any change. */
int poison(keel_txn *txn, int rc)
{
    if (rc && rc != KEEL_NOTFOUND && rc != KEEL_EXISTS && !txn->error)
        txn->error = rc;
    return rc;
}

static int write_begin(keel_txn *txn, keel_bucket b, struct tree_desc **t)
{
    int rc = bucket_tree(txn, b, t);
    if (rc)
        return rc;
    return poison(txn, seal_spill(txn));
}

/* rc: the tree operation's; old_exp/new_exp: the entry's expiry before and
 * after it (0 = none). */
static int write_end(keel_txn *txn, keel_bucket b, const struct tree_desc *t, keel_val key, int rc,
                     int64_t old_exp, int64_t new_exp)
{
    if (rc)
        return poison(txn, rc);
    bucket_mark_dirty(txn, b);
    return poison(txn, expiry_update(txn, t->id, key, old_exp, new_exp));
}

int kv_get(keel_txn *txn, keel_bucket b, keel_val key, keel_val *val, int64_t *expiry)
{
    struct tree_desc *t;
    int rc = bucket_tree(txn, b, &t);
    if (rc)
        return rc;
    int64_t exp;
    if ((rc = (t->flags & TREE_F_DUPSORT) ? dup_get(txn, t, key, val, &exp) : bt_get(txn, t, key, val, &exp)))
        return rc;
    if (!expiry_live(txn, exp)) {
        if (val)
            *val = (keel_val){NULL, 0};
        return KEEL_NOTFOUND;
    }
    if (expiry)
        *expiry = exp;
    return 0;
}

int kv_put(keel_txn *txn, keel_bucket b, keel_val key, keel_val val, int64_t expiry, unsigned flags)
{
    struct tree_desc *t;
    int rc = write_begin(txn, b, &t);
    if (rc)
        return rc;
    int64_t old = 0;
    if (t->flags & TREE_F_DUPSORT) {
        if (!dup_pair_fits(txn, t, key, val))
            return KEEL_BADVALSIZE;
        int64_t now;
        rc = dup_put(txn, t, key, val, expiry, flags, &old, &now);
        return write_end(txn, b, t, key, rc, old, now);
    }
    rc = bt_put(txn, t, key, val, expiry, flags, &old);
    int64_t kept = (flags & KEEL_KEEPTTL) && old && expiry_live(txn, old) ? old : expiry;
    return write_end(txn, b, t, key, rc, old, kept);
}

int kv_del(keel_txn *txn, keel_bucket b, keel_val key)
{
    struct tree_desc *t;
    int rc = write_begin(txn, b, &t);
    if (rc)
        return rc;
    int64_t old = 0;
    rc = (t->flags & TREE_F_DUPSORT) ? dup_del_key(txn, t, key, true, &old) : bt_del_live(txn, t, key, &old);
    return write_end(txn, b, t, key, rc, old, 0);
}

/* One pair; in a plain bucket the key, if its value is val. */
int kv_del_value(keel_txn *txn, keel_bucket b, keel_val key, keel_val val)
{
    struct tree_desc *t;
    int rc = write_begin(txn, b, &t);
    if (rc)
        return rc;
    int64_t old = 0, now = 0;
    if (t->flags & TREE_F_DUPSORT) {
        rc = dup_del_pair(txn, t, key, val, &old, &now);
    } else {
        keel_val v;
        if ((rc = kv_get(txn, b, key, &v, NULL)))
            return rc;
        if (v.len != val.len || (v.len && memcmp(v.data, val.data, v.len)))
            return KEEL_NOTFOUND;
        rc = bt_del_live(txn, t, key, &old);
    }
    return write_end(txn, b, t, key, rc, old, now);
}

int kv_set_expiry(keel_txn *txn, keel_bucket b, keel_val key, int64_t expiry)
{
    struct tree_desc *t;
    int rc = write_begin(txn, b, &t);
    if (rc)
        return rc;
    int64_t old = 0;
    bool dup = t->flags & TREE_F_DUPSORT;
    rc = dup ? dup_get(txn, t, key, NULL, &old) : bt_get(txn, t, key, NULL, &old);
    if (!rc && !expiry_live(txn, old))
        rc = KEEL_NOTFOUND;
    if (!rc)
        rc = dup ? dup_set_expiry(txn, t, key, expiry) : bt_set_expiry(txn, t, key, expiry, &old);
    return write_end(txn, b, t, key, rc, old, expiry);
}

int kv_cursor_del(keel_cursor *c)
{
    struct tree_desc *t;
    int rc = write_begin(c->txn, c->bucket, &t);
    if (rc)
        return rc;
    int64_t old = 0;
    uint64_t carried;
    rc = cursor_del(c, t, &old, &carried); /* the deleted key stays in c->keybuf */
    if (!(t->flags & TREE_F_DUPSORT))
        return write_end(c->txn, c->bucket, t, (keel_val){c->keybuf, c->keylen}, rc, old, 0);
    /* a pair: its key's count, and the key's expiry leaves the index with its last pair */
    size_t part = pair_key_part(c->keybuf, c->keylen);
    if (rc == 0 && part == 0)
        rc = CORRUPT(0);
    if (rc || (rc = dup_pair_gone(c->txn, t, c->keybuf, part + PAIR_TERM_SIZE, carried, NULL)))
        return poison(c->txn, rc);
    uint8_t *key = part ? os_malloc(part) : NULL;
    if (!key)
        return poison(c->txn, part ? KEEL_NOMEM : CORRUPT(0));
    keel_val k = {key, pair_key_unescape(key, c->keybuf, part)};
    int64_t now = 0;
    if (old)
        rc = dup_after_del(c->txn, t, k, old, &now);
    rc = write_end(c->txn, c->bucket, t, k, rc, old, now);
    os_free(key);
    return rc;
}

/* The bucket's expiring keys leave the expiry index first: a walk of the
 * bucket, which the drop pays for anyway. */
int kv_drop_bucket(keel_txn *txn, keel_bucket b)
{
    struct tree_desc *t;
    int rc = bucket_tree(txn, b, &t);
    if (rc)
        return rc;
    if ((rc = poison(txn, expiry_forget_tree(txn, t))) || (rc = poison(txn, dupcount_forget_tree(txn, t->id))))
        return rc;
    return poison(txn, bucket_drop(txn, b));
}

/* Removes up to max entries whose expiry has passed, oldest first: the
 * expiry index yields them (expiry_next_due), each leaves its bucket here
 * and the index there. */
int kv_purge(keel_txn *txn, size_t max, size_t *purged)
{
    struct expiry_due due;
    size_t n = 0;
    int rc = expiry_due_begin(txn, &due);
    while (!rc && n < max && !(rc = expiry_next_due(&due))) {
        keel_bucket b;
        struct tree_desc *t;
        int64_t old;
        if ((rc = bucket_by_id(txn, due.bucket_id, &b)) || (rc = bucket_tree(txn, b, &t)))
            break;
        if ((rc = (t->flags & TREE_F_DUPSORT) ? dup_del_key(txn, t, due.key, false, &old) : bt_del(txn, t, due.key, &old)))
            break;
        if (old != due.expiry) {
            rc = CORRUPT(0); /* the index and the bucket disagree */
            break;
        }
        bucket_mark_dirty(txn, b);
        if ((rc = expiry_remove_due(&due)))
            break;
        n++;
    }
    expiry_due_end(&due);
    if (purged)
        *purged = n;
    return poison(txn, rc == KEEL_NOTFOUND ? 0 : rc);
}
