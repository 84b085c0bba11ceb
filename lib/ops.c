/*
 * ops.c — the expiry API and the atomic operations (CAS, increment,
 * multi-get/put) and their one-call forms that run their own txn.
 *
 * Contract: each function checks its arguments, then calls the write path
 * (kv.c), which keeps the expiry index in step and poisons the txn on a
 * failure after a change.  Checks that can fail (mismatch, not a number,
 * overflow, conflicts) all run before the first write.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* The bucket is checked by the write path, before any change. */
static int write_args(keel_txn *txn, keel_val key)
{
    int rc = txn_check(txn, true);
    return rc ? rc : check_key(txn, key);
}

static int deadline(keel_txn *txn, int64_t ttl_ms, int64_t *at)
{
    if (ttl_ms <= 0)
        return KEEL_BADARG;
    if (__builtin_add_overflow(txn->now, ttl_ms, at) || *at <= 0)
        return KEEL_OVERFLOW;
    return 0;
}

/* ---- expiry ---- */
int keel_put_ttl(keel_txn *txn, keel_bucket b, keel_val key, keel_val val, int64_t ttl_ms, unsigned flags)
{
    int rc = write_args(txn, key);
    if (rc)
        return rc;
    if (flags & ~(KEEL_NOOVERWRITE | KEEL_APPEND | KEEL_NODUPDATA))
        return KEEL_BADFLAGS;
    if ((!val.data && val.len))
        return KEEL_BADARG;
    if (val.len > KEEL_MAX_VALUE_SIZE)
        return KEEL_BADVALSIZE;
    int64_t at;
    if ((rc = deadline(txn, ttl_ms, &at)))
        return rc;
    return kv_put(txn, b, key, val, at, flags);
}

int keel_expire_at(keel_txn *txn, keel_bucket b, keel_val key, int64_t unix_ms)
{
    int rc = write_args(txn, key);
    if (rc)
        return rc;
    if (unix_ms <= 0)
        return KEEL_BADARG;
    return kv_set_expiry(txn, b, key, unix_ms);
}

int keel_expire(keel_txn *txn, keel_bucket b, keel_val key, int64_t ttl_ms)
{
    int rc = write_args(txn, key);
    if (rc)
        return rc;
    int64_t at;
    if ((rc = deadline(txn, ttl_ms, &at)))
        return rc;
    return kv_set_expiry(txn, b, key, at);
}

int keel_persist(keel_txn *txn, keel_bucket b, keel_val key)
{
    int rc = write_args(txn, key);
    return rc ? rc : kv_set_expiry(txn, b, key, 0);
}

int keel_ttl(keel_txn *txn, keel_bucket b, keel_val key, int64_t *remaining_ms)
{
    int rc = txn_check(txn, false);
    if (rc)
        return rc;
    if (!remaining_ms)
        return KEEL_BADARG;
    if ((rc = check_key(txn, key)))
        return rc;
    int64_t exp;
    if ((rc = kv_get(txn, b, key, NULL, &exp)))
        return rc;
    *remaining_ms = exp ? exp - txn->now : -1;
    return 0;
}

int keel_expiry_at(keel_txn *txn, keel_bucket b, keel_val key, int64_t *unix_ms)
{
    int rc = txn_check(txn, false);
    if (rc)
        return rc;
    if (!unix_ms)
        return KEEL_BADARG;
    if ((rc = check_key(txn, key)))
        return rc;
    return kv_get(txn, b, key, NULL, unix_ms);
}

int keel_purge(keel_txn *txn, size_t max, size_t *purged)
{
    if (purged)
        *purged = 0;
    int rc = txn_check(txn, true);
    if (rc)
        return rc;
    return kv_purge(txn, max, purged);
}

/* ---- atomic operations ---- */
/* A value to compare or to count in: one per key, so not in a DUPSORT bucket. */
static int single_valued(keel_txn *txn, keel_bucket b)
{
    struct tree_desc *t;
    int rc = bucket_tree(txn, b, &t);
    return rc ? rc : (t->flags & TREE_F_DUPSORT) ? KEEL_INCOMPATIBLE : 0;
}

int keel_cas(keel_txn *txn, keel_bucket b, keel_val key, const keel_val *expected, keel_val new_val)
{
    int rc = write_args(txn, key);
    if (rc)
        return rc;
    if ((!new_val.data && new_val.len) || (expected && !expected->data && expected->len))
        return KEEL_BADARG;
    if (new_val.len > KEEL_MAX_VALUE_SIZE)
        return KEEL_BADVALSIZE;
    if ((rc = single_valued(txn, b)))
        return rc;
    keel_val cur;
    rc = kv_get(txn, b, key, &cur, NULL);
    if (rc && rc != KEEL_NOTFOUND)
        return rc;
    bool present = rc == 0;
    if (!expected ? present
                  : (!present || cur.len != expected->len || (cur.len && memcmp(cur.data, expected->data, cur.len))))
        return KEEL_MISMATCH;
    return kv_put(txn, b, key, new_val, 0, KEEL_KEEPTTL);
}

/* Redis's rule: optional '-', digits, no leading zeros, no sign on zero. */
static bool parse_int64(const uint8_t *s, size_t n, int64_t *out)
{
    if (n == 0 || n > 20)
        return false;
    size_t i = 0;
    bool neg = s[0] == '-';
    if (neg && ++i == n)
        return false;
    if (s[i] == '0')
        return n == 1 && (*out = 0, true);
    uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned d = s[i] - '0';
        if (v > (limit - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

int keel_incr(keel_txn *txn, keel_bucket b, keel_val key, int64_t delta, int64_t *result)
{
    int rc = write_args(txn, key);
    if (rc)
        return rc;
    if (!result)
        return KEEL_BADARG;
    if ((rc = single_valued(txn, b)))
        return rc;
    keel_val cur;
    int64_t v = 0;
    rc = kv_get(txn, b, key, &cur, NULL);
    if (rc && rc != KEEL_NOTFOUND)
        return rc;
    if (rc == 0 && !parse_int64(cur.data, cur.len, &v))
        return KEEL_NOTNUMBER;
    if (__builtin_add_overflow(v, delta, &v))
        return KEEL_OVERFLOW;
    char buf[24];
    int len = snprintf(buf, sizeof buf, "%lld", (long long)v);
    if ((rc = kv_put(txn, b, key, (keel_val){buf, (size_t)len}, 0, KEEL_KEEPTTL)))
        return rc;
    *result = v;
    return 0;
}

int keel_get_many(keel_txn *txn, keel_bucket b, const keel_val *keys, keel_val *vals, size_t n)
{
    int rc = txn_check(txn, false);
    if (rc)
        return rc;
    if (n && (!keys || !vals)) /* n = 0: nothing to do (an empty list from a binding, say) */
        return KEEL_BADARG;
    for (size_t i = 0; i < n; i++)
        if ((rc = check_key(txn, keys[i])))
            return rc;
    struct tree_desc *t;
    if ((rc = bucket_tree(txn, b, &t)) || n == 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        rc = kv_get(txn, b, keys[i], &vals[i], NULL);
        if (rc == KEEL_NOTFOUND)
            vals[i] = (keel_val){NULL, 0};
        else if (rc)
            return rc;
    }
    return 0;
}

static int cmp_keyp(const void *a, const void *b)
{
    const keel_val *x = *(const keel_val *const *)a, *y = *(const keel_val *const *)b;
    return bt_cmp(x->data, x->len, y->data, y->len);
}

int keel_put_many(keel_txn *txn, keel_bucket b, const keel_val *keys, const keel_val *vals, size_t n,
                  unsigned flags)
{
    int rc = txn_check(txn, true);
    if (rc)
        return rc;
    if (n && (!keys || !vals))
        return KEEL_BADARG;
    if (flags & ~(KEEL_NOOVERWRITE | KEEL_APPEND | KEEL_KEEPTTL))
        return KEEL_BADFLAGS;
    struct tree_desc *t;
    if ((rc = bucket_tree(txn, b, &t)) || n == 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if ((rc = check_key(txn, keys[i])))
            return rc;
        if (!vals[i].data && vals[i].len)
            return KEEL_BADARG;
        if (vals[i].len > KEEL_MAX_VALUE_SIZE || ((t->flags & TREE_F_DUPSORT) && !dup_pair_fits(txn, t, keys[i], vals[i])))
            return KEEL_BADVALSIZE;
    }
    if (flags & KEEL_NOOVERWRITE) { /* every conflict first: in the bucket, then inside the batch */
        for (size_t i = 0; i < n; i++) {
            rc = kv_get(txn, b, keys[i], NULL, NULL);
            if (rc != KEEL_NOTFOUND)
                return rc ? rc : KEEL_EXISTS;
        }
        rc = 0; /* the last lookup's KEEL_NOTFOUND must not stop the duplicate scan */
        const keel_val **sorted = os_malloc(n * sizeof(*sorted));
        if (!sorted)
            return KEEL_NOMEM;
        for (size_t i = 0; i < n; i++)
            sorted[i] = &keys[i];
        qsort(sorted, n, sizeof(*sorted), cmp_keyp);
        for (size_t i = 1; i < n && !rc; i++)
            if (cmp_keyp(&sorted[i - 1], &sorted[i]) == 0)
                rc = KEEL_EXISTS;
        os_free(sorted);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < n && !rc; i++)
        rc = kv_put(txn, b, keys[i], vals[i], 0, flags & ~KEEL_NOOVERWRITE); /* a failure poisons the txn */
    return rc;
}

/* ---- one-call forms ---- */
/* The bucket as it is, of either kind; a write creates a missing one, plain
 * (KEEL_CREATE alone on a DUPSORT bucket would ask for the other kind). */
static int begin_in(keel_db *db, const char *bucket, bool write, keel_txn **txn, keel_bucket *b)
{
    int rc = keel_begin(db, write ? 0 : KEEL_RDONLY, txn);
    if (rc)
        return rc;
    rc = keel_bucket_open(*txn, bucket, 0, b);
    if (rc == KEEL_NOTFOUND && write)
        rc = keel_bucket_open(*txn, bucket, KEEL_CREATE, b);
    if (rc) {
        keel_abort(*txn);
        *txn = NULL;
    }
    return rc;
}

static int finish(keel_txn *txn, int rc)
{
    if (rc) {
        keel_abort(txn);
        return rc;
    }
    return keel_commit(txn);
}

int keel_db_put(keel_db *db, const char *bucket, keel_val key, keel_val val, int64_t ttl_ms)
{
    if (!db)
        return KEEL_BADARG;
    if (ttl_ms < 0)
        return KEEL_BADARG;
    keel_txn *txn;
    keel_bucket b;
    int rc = begin_in(db, bucket, true, &txn, &b);
    if (rc)
        return rc;
    rc = ttl_ms ? keel_put_ttl(txn, b, key, val, ttl_ms, 0) : keel_put(txn, b, key, val, 0);
    return finish(txn, rc);
}

int keel_db_get(keel_db *db, const char *bucket, keel_val key, void **copy, size_t *len)
{
    if (!db || !copy || !len)
        return KEEL_BADARG;
    *copy = NULL;
    *len = 0;
    keel_txn *txn;
    keel_bucket b;
    int rc = begin_in(db, bucket, false, &txn, &b);
    if (rc)
        return rc;
    keel_val v;
    rc = keel_get(txn, b, key, &v);
    if (rc == 0) {
        void *p = malloc(v.len ? v.len : 1); /* the caller frees it with free() */
        if (!p)
            rc = KEEL_NOMEM;
        else {
            if (v.len)
                memcpy(p, v.data, v.len);
            *copy = p;
            *len = v.len;
        }
    }
    keel_abort(txn);
    return rc;
}

int keel_db_del(keel_db *db, const char *bucket, keel_val key)
{
    if (!db)
        return KEEL_BADARG;
    keel_txn *txn;
    keel_bucket b;
    int rc = begin_in(db, bucket, true, &txn, &b);
    return rc ? rc : finish(txn, keel_del(txn, b, key));
}

int keel_db_incr(keel_db *db, const char *bucket, keel_val key, int64_t delta, int64_t *result)
{
    if (!db || !result)
        return KEEL_BADARG;
    keel_txn *txn;
    keel_bucket b;
    int rc = begin_in(db, bucket, true, &txn, &b);
    return rc ? rc : finish(txn, keel_incr(txn, b, key, delta, result));
}

int keel_db_cas(keel_db *db, const char *bucket, keel_val key, const keel_val *expected, keel_val new_val)
{
    if (!db)
        return KEEL_BADARG;
    keel_txn *txn;
    keel_bucket b;
    int rc = begin_in(db, bucket, true, &txn, &b);
    return rc ? rc : finish(txn, keel_cas(txn, b, key, expected, new_val));
}
