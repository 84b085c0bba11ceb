/*
 * ttl.c — per-key expiry: the expiry tree, and the put/get/del paths that
 * keep it in step with the buckets.
 *
 * Contract:
 *   - An entry's expiry time (ms since the epoch) lives in its leaf node, so
 *     a read needs no second lookup.  The expiry tree holds one entry per
 *     expiring key, keyed (expiry BE64, bucket id BE32, key), empty value,
 *     changed in the same txn as the bucket: they always agree (keel_check
 *     verifies it).
 *   - A txn reads the clock once, at begin (txn->now).  A key whose expiry is
 *     <= txn->now is absent for every read, cursor, ttl, CAS, increment and
 *     NOOVERWRITE check; it stays on disk until purged.
 *   - Purge walks the expiry tree from its first entry and stops at the first
 *     one in the future: cost O(expired * log n), never a scan of keys that
 *     do not expire.  Each write commit purges up to db->purge_per_commit.
 *   - Redis's rules: a plain put clears the expiry unless KEEL_KEEPTTL; an
 *     increment (and a CAS) keeps it; a delete removes it.
 */
#include <string.h>

#include "internal.h"

static size_t expiry_key(uint8_t *buf, int64_t expiry, uint32_t id, keel_val key)
{
    uint64_t e = (uint64_t)expiry;
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(e >> (56 - 8 * i));
    for (int i = 0; i < 4; i++)
        buf[8 + i] = (uint8_t)(id >> (24 - 8 * i));
    memcpy(buf + EXPIRY_KEY_PREFIX, key.data, key.len);
    return EXPIRY_KEY_PREFIX + key.len;
}

static int64_t expiry_key_time(const uint8_t *k)
{
    uint64_t e = 0;
    for (int i = 0; i < 8; i++)
        e = (e << 8) | k[i];
    return (int64_t)e;
}

static uint32_t expiry_key_bucket(const uint8_t *k)
{
    uint32_t id = 0;
    for (int i = 0; i < 4; i++)
        id = (id << 8) | k[8 + i];
    return id;
}

/* Moves the expiry entry of (id, key) from old_exp to new_exp (0 = none). */
int expiry_update(keel_txn *txn, uint32_t id, keel_val key, int64_t old_exp, int64_t new_exp)
{
    if (old_exp == new_exp)
        return 0;
    struct tree_desc *et = &txn->meta.trees[TREE_EXPIRY];
    uint8_t stackbuf[256];
    uint8_t *buf = key.len + EXPIRY_KEY_PREFIX <= sizeof(stackbuf) ? stackbuf : os_malloc(key.len + EXPIRY_KEY_PREFIX);
    if (!buf)
        return KEEL_NOMEM;
    int rc = 0;
    if (old_exp) {
        size_t n = expiry_key(buf, old_exp, id, key);
        rc = bt_del(txn, et, (keel_val){buf, n}, NULL);
        if (rc == KEEL_NOTFOUND)
            rc = KEEL_CORRUPTED; /* the trees disagree */
    }
    if (!rc && new_exp) {
        size_t n = expiry_key(buf, new_exp, id, key);
        rc = bt_put(txn, et, (keel_val){buf, n}, (keel_val){"", 0}, 0, 0, NULL);
    }
    if (buf != stackbuf)
        os_free(buf);
    return rc;
}

static bool live(const keel_txn *txn, int64_t exp) { return exp == 0 || exp > txn->now; }

int ttl_get(keel_txn *txn, keel_bucket b, keel_val key, keel_val *val, int64_t *expiry)
{
    struct tree_desc *t;
    int rc = bucket_tree(txn, b, &t);
    if (rc)
        return rc;
    int64_t exp;
    if ((rc = bt_get(txn, t, key, val, &exp)))
        return rc;
    if (!live(txn, exp)) {
        if (val)
            *val = (keel_val){NULL, 0};
        return KEEL_NOTFOUND;
    }
    if (expiry)
        *expiry = exp;
    return 0;
}

int ttl_put(keel_txn *txn, keel_bucket b, keel_val key, keel_val val, int64_t expiry, unsigned flags)
{
    int rc = pager_maybe_spill(txn); /* between operations: no page pointer is held */
    if (rc)
        return rc;
    struct tree_desc *t;
    rc = bucket_tree(txn, b, &t);
    if (rc)
        return rc;
    int64_t old;
    if ((rc = bt_put(txn, t, key, val, expiry, flags, &old)))
        return rc;
    bucket_mark_dirty(txn, b);
    int64_t now_exp = (flags & KEEL_KEEPTTL) && old && live(txn, old) ? old : expiry;
    return expiry_update(txn, t->id, key, old, now_exp);
}

int ttl_del(keel_txn *txn, keel_bucket b, keel_val key)
{
    int rc = pager_maybe_spill(txn); /* between operations: no page pointer is held */
    if (rc)
        return rc;
    struct tree_desc *t;
    rc = bucket_tree(txn, b, &t);
    if (rc)
        return rc;
    int64_t old;
    if ((rc = bt_del_live(txn, t, key, &old))) /* an expired key is absent: left for purge */
        return rc;
    bucket_mark_dirty(txn, b);
    return expiry_update(txn, t->id, key, old, 0);
}

int ttl_set(keel_txn *txn, keel_bucket b, keel_val key, int64_t expiry)
{
    int rc = pager_maybe_spill(txn); /* between operations: no page pointer is held */
    if (rc)
        return rc;
    struct tree_desc *t;
    rc = bucket_tree(txn, b, &t);
    if (rc)
        return rc;
    int64_t cur;
    if ((rc = bt_get(txn, t, key, NULL, &cur)))
        return rc;
    if (!live(txn, cur))
        return KEEL_NOTFOUND;
    int64_t old;
    if ((rc = bt_set_expiry(txn, t, key, expiry, &old)))
        return rc;
    bucket_mark_dirty(txn, b);
    return expiry_update(txn, t->id, key, old, expiry);
}

/* Removes the expiry entries of every expiring key of a bucket about to be
 * dropped: a walk of the bucket, which the drop pays for anyway. */
int ttl_forget_bucket(keel_txn *txn, struct tree_desc *t)
{
    if (t->root == 0 || txn->meta.trees[TREE_EXPIRY].root == 0)
        return 0;
    keel_cursor c;
    memset(&c, 0, sizeof(c));
    cursor_init(&c, txn, 0, t);
    c.all = true;
    keel_val k;
    int rc;
    for (rc = cursor_first(&c, &k, NULL); rc == 0; rc = cursor_next(&c, &k, NULL)) {
        const uint8_t *n;
        if ((rc = bt_node_at(c.page[c.depth - 1], c.idx[c.depth - 1], txn->db->psize, &n)))
            break;
        int64_t e = leaf_node_expiry(n);
        if (e && (rc = expiry_update(txn, t->id, k, e, 0)))
            break;
    }
    os_free(c.keybuf);
    return rc == KEEL_NOTFOUND ? 0 : rc;
}

struct find_id {
    keel_txn *txn;
    uint32_t id;
    keel_bucket found;
};

static int match_id(const char *name, void *ctx)
{
    struct find_id *f = ctx;
    keel_bucket b;
    struct tree_desc *t;
    if (bucket_open(f->txn, name, 0, &b) == 0 && bucket_tree(f->txn, b, &t) == 0 && t->id == f->id) {
        f->found = b;
        return 1;
    }
    return 0;
}

/* The handle of the bucket with persistent id `id`. */
static int bucket_by_id(keel_txn *txn, uint32_t id, keel_bucket *out)
{
    if (id == 0) {
        *out = KEEL_DEFAULT_BUCKET;
        return 0;
    }
    for (uint32_t b = 1; b < txn->nbuckets_cap; b++)
        if (txn->buckets[b].state == BUCKET_PRESENT && txn->buckets[b].desc.id == id) {
            *out = b;
            return 0;
        }
    struct find_id f = {txn, id, 0};
    int rc = bucket_list(txn, match_id, &f);
    if (rc == 1) {
        *out = f.found;
        return 0;
    }
    return rc ? rc : KEEL_CORRUPTED; /* an expiry entry for a bucket that does not exist */
}

int ttl_purge(keel_txn *txn, size_t max, size_t *purged)
{
    struct tree_desc *et = &txn->meta.trees[TREE_EXPIRY];
    size_t n = 0;
    int rc = 0;
    keel_cursor c;
    memset(&c, 0, sizeof(c));
    cursor_init(&c, txn, 0, et);
    c.all = true;
    uint8_t *key = NULL;
    size_t keycap = 0;
    while (n < max && et->root) {
        keel_val k;
        if ((rc = cursor_first(&c, &k, NULL)))
            break;
        if (k.len <= EXPIRY_KEY_PREFIX) {
            rc = KEEL_CORRUPTED;
            break;
        }
        int64_t exp = expiry_key_time(k.data);
        if (exp > txn->now)
            break;
        if (k.len > keycap) {
            uint8_t *nk = os_realloc(key, k.len);
            if (!nk) {
                rc = KEEL_NOMEM;
                break;
            }
            key = nk;
            keycap = k.len;
        }
        memcpy(key, k.data, k.len);
        size_t klen = k.len;
        keel_bucket b;
        struct tree_desc *t;
        if ((rc = bucket_by_id(txn, expiry_key_bucket(key), &b)) || (rc = bucket_tree(txn, b, &t)))
            break;
        int64_t old;
        keel_val ukey = {key + EXPIRY_KEY_PREFIX, klen - EXPIRY_KEY_PREFIX};
        if ((rc = bt_del(txn, t, ukey, &old)))
            break;
        if (old != exp) {
            rc = KEEL_CORRUPTED;
            break;
        }
        bucket_mark_dirty(txn, b);
        if ((rc = bt_del(txn, et, (keel_val){key, klen}, NULL)))
            break;
        n++;
    }
    os_free(c.keybuf);
    os_free(key);
    if (rc == KEEL_NOTFOUND)
        rc = 0;
    if (purged)
        *purged = n;
    return rc;
}

/* For keel_check: does every expiry entry name a live node with that expiry? */
int ttl_check(keel_txn *txn, void (*problem)(void *ctx, const char *fmt, ...), void *ctx, uint64_t *entries)
{
    struct tree_desc *et = &txn->meta.trees[TREE_EXPIRY];
    keel_cursor c;
    memset(&c, 0, sizeof(c));
    cursor_init(&c, txn, 0, et);
    c.all = true;
    keel_val k;
    int rc;
    uint64_t n = 0;
    for (rc = cursor_first(&c, &k, NULL); rc == 0; rc = cursor_next(&c, &k, NULL)) {
        n++;
        if (k.len <= EXPIRY_KEY_PREFIX) {
            problem(ctx, "expiry entry %llu: key too short", (unsigned long long)n);
            continue;
        }
        keel_bucket b;
        struct tree_desc *t;
        int64_t exp = expiry_key_time(k.data), have;
        if (bucket_by_id(txn, expiry_key_bucket(k.data), &b) || bucket_tree(txn, b, &t)) {
            problem(ctx, "expiry entry %llu names bucket id %u, which does not exist", (unsigned long long)n,
                    expiry_key_bucket(k.data));
            continue;
        }
        keel_val ukey = {(const uint8_t *)k.data + EXPIRY_KEY_PREFIX, k.len - EXPIRY_KEY_PREFIX};
        if (bt_get(txn, t, ukey, NULL, &have) || have != exp)
            problem(ctx, "expiry entry %llu: the key is missing or has another expiry", (unsigned long long)n);
    }
    os_free(c.keybuf);
    *entries = n;
    return rc == KEEL_NOTFOUND ? 0 : rc;
}
