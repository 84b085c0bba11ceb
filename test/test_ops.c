/*
 * test_ops.c — the atomic operations and their one-call forms:
 *
 *   cas           expected NULL = must be absent; mismatch changes nothing;
 *                 equal replaces; empty and overflow values
 *   incr          absent = 0, negative deltas, Redis's integer syntax
 *                 (NOTNUMBER leaves the value), INT64 limits (OVERFLOW
 *                 leaves the value), results stored as decimal text
 *   get_many      missing and expired keys give {NULL, 0}
 *   put_many      all written; KEEL_NOOVERWRITE conflicts (in the bucket or
 *                 inside the batch) write none; bad entries write none
 *   one_call      keel_db_put/get/del/incr/cas: bucket names, NULL =
 *                 default, creation, ttl, and nothing left by a failure
 *   bad_inputs    every argument error of the TTL and atomic API gives its
 *                 code, changes nothing and leaves the write txn usable
 *   bad_bucket    a bucket handle that names no bucket (never given out, or
 *                 dropped in this txn): KEEL_BADBUCKET, and the txn stays
 *                 usable, as with keel_put
 *
 * The clock is injected (keel_options.clock) so TTL answers are exact.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdbool.h>

#include "testutil.h"

#define T0 ((int64_t)1700000000000)

static int64_t clock_now = T0;
static int64_t test_clock(void *ctx) { return *(const int64_t *)ctx; }

static char path[512];

static void report(void *ctx, const char *msg)
{
    (void)ctx;
    fprintf(stderr, "check: %s\n", msg);
}

static void assert_clean(keel_db *db)
{
    uint64_t problems = 99;
    assert_int_equal(keel_check(db, report, NULL, &problems), 0);
    assert_int_equal(problems, 0);
}

static keel_db *open_db(void)
{
    keel_options o = {.clock = test_clock, .clock_ctx = &clock_now, .flags = KEEL_NOSYNC, .purge_per_commit = -1};
    keel_db *db = NULL;
    assert_int_equal(keel_open(path, &o, &db), 0);
    return db;
}

static keel_txn *wbegin(keel_db *db)
{
    keel_txn *t = NULL;
    assert_int_equal(keel_begin(db, 0, &t), 0);
    return t;
}

static keel_txn *rbegin(keel_db *db)
{
    keel_txn *t = NULL;
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
    return t;
}

static void expect(keel_txn *t, keel_bucket b, const char *k, const char *v)
{
    keel_val got = {NULL, 0};
    int rc = keel_get(t, b, tu_val(k), &got);
    if (!v) {
        assert_int_equal(rc, KEEL_NOTFOUND);
        return;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(got.len, strlen(v));
    if (got.len)
        assert_memory_equal(got.data, v, got.len);
}

static void expect_at(keel_txn *t, keel_bucket b, const char *k, int64_t at)
{
    int64_t got = 77;
    assert_int_equal(keel_expiry_at(t, b, tu_val(k), &got), 0);
    assert_int_equal(got, at);
}

static void put(keel_txn *t, keel_bucket b, const char *k, const char *v)
{
    assert_int_equal(keel_put(t, b, tu_val(k), tu_val(v), 0), 0);
}

static int setup(void **state)
{
    (void)state;
    clock_now = T0;
    path[0] = 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (path[0])
        tu_remove(path);
    return 0;
}

/* ---- cas ---------------------------------------------------------------------- */

static void test_cas(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ops-cas");
    keel_db *db = open_db();
    keel_txn *t = wbegin(db);
    keel_val e;

    /* expected NULL: the key must be absent */
    assert_int_equal(keel_cas(t, 0, tu_val("a"), NULL, tu_val("1")), 0);
    expect(t, 0, "a", "1");
    assert_int_equal(keel_cas(t, 0, tu_val("a"), NULL, tu_val("2")), KEEL_MISMATCH);
    expect(t, 0, "a", "1");
    /* mismatch: other value, prefix, longer, empty */
    static const char *const wrong[] = {"2", "", "11", "10"};
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        e = tu_val(wrong[i]);
        assert_int_equal(keel_cas(t, 0, tu_val("a"), &e, tu_val("x")), KEEL_MISMATCH);
        expect(t, 0, "a", "1");
    }
    /* equal: replaced */
    e = tu_val("1");
    assert_int_equal(keel_cas(t, 0, tu_val("a"), &e, tu_val("second")), 0);
    expect(t, 0, "a", "second");
    assert_int_equal(keel_cas(t, 0, tu_val("a"), &e, tu_val("third")), KEEL_MISMATCH);
    expect(t, 0, "a", "second");
    /* absent key with an expected value: mismatch, still absent */
    assert_int_equal(keel_cas(t, 0, tu_val("none"), &e, tu_val("x")), KEEL_MISMATCH);
    expect(t, 0, "none", NULL);
    keel_val empty = {NULL, 0};
    assert_int_equal(keel_cas(t, 0, tu_val("none"), &empty, tu_val("x")), KEEL_MISMATCH);
    expect(t, 0, "none", NULL);
    /* empty values: absent is not empty */
    assert_int_equal(keel_cas(t, 0, tu_val("em"), NULL, empty), 0);
    expect(t, 0, "em", "");
    assert_int_equal(keel_cas(t, 0, tu_val("em"), NULL, tu_val("x")), KEEL_MISMATCH);
    e = tu_val("x");
    assert_int_equal(keel_cas(t, 0, tu_val("em"), &e, tu_val("y")), KEEL_MISMATCH);
    keel_val empty2 = {"", 0};
    assert_int_equal(keel_cas(t, 0, tu_val("em"), &empty2, tu_val("full")), 0);
    expect(t, 0, "em", "full");
    e = tu_val("full");
    assert_int_equal(keel_cas(t, 0, tu_val("em"), &e, empty), 0);
    expect(t, 0, "em", "");
    /* overflow values on both sides */
    size_t big = 50000;
    char *v1 = malloc(big), *v2 = malloc(big);
    memset(v1, 'A', big);
    memset(v2, 'A', big);
    v2[big - 1] = 'B';
    keel_val bv1 = {v1, big}, bv2 = {v2, big}, got;
    assert_int_equal(keel_cas(t, 0, tu_val("big"), NULL, bv1), 0);
    assert_int_equal(keel_cas(t, 0, tu_val("big"), &bv2, tu_val("small")), KEEL_MISMATCH);
    assert_int_equal(keel_cas(t, 0, tu_val("big"), &bv1, bv2), 0);
    assert_int_equal(keel_get(t, 0, tu_val("big"), &got), 0);
    assert_int_equal(got.len, big);
    assert_memory_equal(got.data, v2, big);
    assert_int_equal(keel_commit(t), 0);
    assert_clean(db);

    /* CAS keeps the expiry; a mismatch leaves value and expiry alone */
    t = wbegin(db);
    assert_int_equal(keel_put_ttl(t, 0, tu_val("ttl"), tu_val("v1"), 500, 0), 0);
    e = tu_val("v1");
    assert_int_equal(keel_cas(t, 0, tu_val("ttl"), &e, tu_val("v2")), 0);
    expect_at(t, 0, "ttl", T0 + 500);
    assert_int_equal(keel_cas(t, 0, tu_val("ttl"), &e, tu_val("v3")), KEEL_MISMATCH);
    expect(t, 0, "ttl", "v2");
    expect_at(t, 0, "ttl", T0 + 500);
    assert_int_equal(keel_commit(t), 0);
    /* in a read txn */
    t = rbegin(db);
    assert_int_equal(keel_cas(t, 0, tu_val("ttl"), NULL, tu_val("x")), KEEL_READONLY);
    keel_abort(t);
    /* a mismatch in its own txn: commit writes nothing */
    keel_stat st0, st1;
    assert_int_equal(keel_db_stat(db, &st0), 0);
    t = wbegin(db);
    assert_int_equal(keel_cas(t, 0, tu_val("ttl"), NULL, tu_val("x")), KEEL_MISMATCH);
    assert_int_equal(keel_commit(t), 0);
    assert_int_equal(keel_db_stat(db, &st1), 0);
    assert_int_equal(st1.last_txnid, st0.last_txnid);
    t = rbegin(db);
    expect(t, 0, "a", "second");
    expect(t, 0, "em", "");
    expect(t, 0, "ttl", "v2");
    keel_abort(t);
    assert_clean(db);
    free(v1);
    free(v2);
    keel_close(db);
}

/* ---- incr --------------------------------------------------------------------- */

static void incr_ok(keel_txn *t, const char *k, int64_t delta, int64_t want)
{
    int64_t r = 12345;
    assert_int_equal(keel_incr(t, 0, tu_val(k), delta, &r), 0);
    assert_int_equal(r, want);
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, want);
    expect(t, 0, k, buf);
}

static void test_incr(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ops-incr");
    keel_db *db = open_db();
    keel_txn *t = wbegin(db);
    int64_t r;

    incr_ok(t, "n", 5, 5); /* absent = 0 */
    incr_ok(t, "n", -7, -2);
    incr_ok(t, "n", 2, 0); /* stored as "0", not "-0" */
    incr_ok(t, "n", 0, 0);
    incr_ok(t, "n", -1, -1);
    incr_ok(t, "z", 0, 0); /* incr by 0 of an absent key creates "0" */
    incr_ok(t, "neg", -100, -100);
    /* values that are not Redis integers: NOTNUMBER, value unchanged */
    static const char *const bad[] = {"abc", "12a", " 1", "1 ", "01", "", "-", "-0", "+1", "1.5", "0x10",
                                      "--1", "00", "-01", "1e3", "12345678901234567890",
                                      "9223372036854775808", "-9223372036854775809", "999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        put(t, 0, "bad", bad[i]);
        r = 12345;
        assert_int_equal(keel_incr(t, 0, tu_val("bad"), 1, &r), KEEL_NOTNUMBER);
        assert_int_equal(r, 12345);
        expect(t, 0, "bad", bad[i]);
    }
    /* an embedded NUL */
    assert_int_equal(keel_put(t, 0, tu_val("nul"), (keel_val){"1\0", 2}, 0), 0);
    assert_int_equal(keel_incr(t, 0, tu_val("nul"), 1, &r), KEEL_NOTNUMBER);
    /* an overflow value (too long to be a number) */
    char *big = malloc(10000);
    memset(big, '1', 10000);
    assert_int_equal(keel_put(t, 0, tu_val("bigv"), (keel_val){big, 10000}, 0), 0);
    assert_int_equal(keel_incr(t, 0, tu_val("bigv"), 1, &r), KEEL_NOTNUMBER);
    free(big);
    /* the limits */
    put(t, 0, "max", "9223372036854775807");
    incr_ok(t, "max", 0, INT64_MAX);
    r = 12345;
    assert_int_equal(keel_incr(t, 0, tu_val("max"), 1, &r), KEEL_OVERFLOW);
    assert_int_equal(r, 12345);
    expect(t, 0, "max", "9223372036854775807");
    assert_int_equal(keel_incr(t, 0, tu_val("max"), INT64_MAX, &r), KEEL_OVERFLOW);
    expect(t, 0, "max", "9223372036854775807");
    incr_ok(t, "max", INT64_MIN, -1);
    put(t, 0, "min", "-9223372036854775808");
    incr_ok(t, "min", 0, INT64_MIN);
    assert_int_equal(keel_incr(t, 0, tu_val("min"), -1, &r), KEEL_OVERFLOW);
    assert_int_equal(keel_incr(t, 0, tu_val("min"), INT64_MIN, &r), KEEL_OVERFLOW);
    expect(t, 0, "min", "-9223372036854775808");
    incr_ok(t, "min", INT64_MAX, -1);
    incr_ok(t, "min2", INT64_MIN, INT64_MIN); /* absent + INT64_MIN */
    incr_ok(t, "min2", 1, INT64_MIN + 1);
    incr_ok(t, "max2", INT64_MAX, INT64_MAX);
    assert_int_equal(keel_incr(t, 0, tu_val("max2"), 1, &r), KEEL_OVERFLOW);
    /* a counter */
    for (int i = 1; i <= 1000; i++)
        incr_ok(t, "ctr", 3, 3 * (int64_t)i);
    assert_int_equal(keel_commit(t), 0);
    t = rbegin(db);
    expect(t, 0, "ctr", "3000");
    expect(t, 0, "n", "-1");
    expect(t, 0, "max", "-1");
    expect(t, 0, "min2", "-9223372036854775807");
    assert_int_equal(keel_incr(t, 0, tu_val("ctr"), 1, &r), KEEL_READONLY);
    keel_abort(t);
    /* incr keeps the expiry; a failed one leaves it */
    t = wbegin(db);
    assert_int_equal(keel_put_ttl(t, 0, tu_val("tn"), tu_val("10"), 100, 0), 0);
    incr_ok(t, "tn", 5, 15);
    expect_at(t, 0, "tn", T0 + 100);
    assert_int_equal(keel_put_ttl(t, 0, tu_val("tbad"), tu_val("x"), 100, 0), 0);
    assert_int_equal(keel_incr(t, 0, tu_val("tbad"), 5, &r), KEEL_NOTNUMBER);
    expect_at(t, 0, "tbad", T0 + 100);
    assert_int_equal(keel_commit(t), 0);
    assert_clean(db);
    keel_close(db);
}

/* ---- get_many / put_many --------------------------------------------------------- */

static void test_get_many(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ops-getmany");
    keel_db *db = open_db();
    keel_txn *t = wbegin(db);
    keel_bucket b;
    assert_int_equal(keel_bucket_open(t, "gm", KEEL_CREATE, &b), 0);
    put(t, b, "a", "A");
    put(t, b, "c", "C");
    put(t, b, "e", "");
    assert_int_equal(keel_put_ttl(t, b, tu_val("x"), tu_val("X"), 10, 0), 0);
    assert_int_equal(keel_put_ttl(t, b, tu_val("y"), tu_val("Y"), 20, 0), 0);
    assert_int_equal(keel_commit(t), 0);

    keel_val keys[] = {tu_val("a"), tu_val("b"), tu_val("c"), tu_val("x"), tu_val("y"),
                       tu_val("e"), tu_val("a"), tu_val("zzz")};
    enum { N = sizeof keys / sizeof keys[0] };
    keel_val vals[N];
    for (int pass = 0; pass < 3; pass++) {
        clock_now = T0 + (pass == 0 ? 9 : pass == 1 ? 10 : 20);
        t = pass == 1 ? wbegin(db) : rbegin(db);
        for (int i = 0; i < N; i++)
            vals[i] = (keel_val){"junk", 4};
        assert_int_equal(keel_get_many(t, b, keys, vals, N), 0);
        const char *want[N] = {"A", NULL, "C", pass == 0 ? "X" : NULL, pass < 2 ? "Y" : NULL, "", "A", NULL};
        for (int i = 0; i < N; i++) {
            if (!want[i]) {
                assert_null(vals[i].data);
                assert_int_equal(vals[i].len, 0);
            } else {
                assert_non_null(vals[i].data); /* an empty value is not a missing one */
                assert_int_equal(vals[i].len, strlen(want[i]));
                if (vals[i].len)
                    assert_memory_equal(vals[i].data, want[i], vals[i].len);
            }
        }
        /* n = 1 */
        assert_int_equal(keel_get_many(t, b, &keys[1], vals, 1), 0);
        assert_null(vals[0].data);
        keel_abort(t);
    }
    /* a write txn sees its own uncommitted writes and deletes */
    t = wbegin(db);
    put(t, b, "b", "B");
    assert_int_equal(keel_del(t, b, tu_val("a")), 0);
    assert_int_equal(keel_get_many(t, b, keys, vals, 3), 0);
    assert_null(vals[0].data);
    assert_int_equal(vals[1].len, 1);
    assert_memory_equal(vals[1].data, "B", 1);
    assert_memory_equal(vals[2].data, "C", 1);
    /* the default bucket */
    put(t, 0, "a", "dflt");
    assert_int_equal(keel_get_many(t, 0, keys, vals, 2), 0);
    assert_memory_equal(vals[0].data, "dflt", 4);
    assert_null(vals[1].data);
    keel_abort(t);
    assert_clean(db);
    keel_close(db);
}

static void test_put_many(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ops-putmany");
    keel_db *db = open_db();
    keel_txn *t = wbegin(db);
    keel_bucket b;
    assert_int_equal(keel_bucket_open(t, "pm", KEEL_CREATE, &b), 0);
    enum { N = 500 };
    static char kb[N][16], vb[N][24];
    static keel_val keys[N], vals[N];
    for (int i = 0; i < N; i++) {
        snprintf(kb[i], sizeof kb[i], "pm%04d", (i * 7) % N);
        snprintf(vb[i], sizeof vb[i], "value-%d", (i * 7) % N);
        keys[i] = tu_val(kb[i]);
        vals[i] = tu_val(vb[i]);
    }
    vals[3] = (keel_val){NULL, 0}; /* an empty value */
    assert_int_equal(keel_put_many(t, b, keys, vals, N, 0), 0);
    for (int i = 0; i < N; i++)
        expect(t, b, kb[i], i == 3 ? "" : vb[i]);
    assert_int_equal(keel_commit(t), 0);
    assert_clean(db);

    /* NOOVERWRITE: one key already in the bucket: none of the batch is written */
    t = wbegin(db);
    keel_val k2[4] = {tu_val("new1"), tu_val("new2"), tu_val("pm0250"), tu_val("new3")};
    keel_val v2[4] = {tu_val("1"), tu_val("2"), tu_val("3"), tu_val("4")};
    assert_int_equal(keel_put_many(t, b, k2, v2, 4, KEEL_NOOVERWRITE), KEEL_EXISTS);
    expect(t, b, "new1", NULL);
    expect(t, b, "new2", NULL);
    expect(t, b, "new3", NULL);
    expect(t, b, "pm0250", "value-250");
    /* a duplicate inside the batch */
    keel_val k3[4] = {tu_val("dup"), tu_val("new1"), tu_val("new2"), tu_val("dup")};
    assert_int_equal(keel_put_many(t, b, k3, v2, 4, KEEL_NOOVERWRITE), KEEL_EXISTS);
    expect(t, b, "dup", NULL);
    expect(t, b, "new1", NULL);
    /* a duplicate that is a prefix is no duplicate */
    keel_val k4[3] = {tu_val("dup"), tu_val("dup2"), tu_val("du")};
    assert_int_equal(keel_put_many(t, b, k4, v2, 3, KEEL_NOOVERWRITE), 0);
    expect(t, b, "dup", "1");
    expect(t, b, "dup2", "2");
    expect(t, b, "du", "3");
    /* without NOOVERWRITE duplicates are fine: the last one wins */
    assert_int_equal(keel_put_many(t, b, k3, v2, 4, 0), 0);
    expect(t, b, "dup", "4");
    expect(t, b, "new1", "2");
    /* an expired key does not conflict */
    assert_int_equal(keel_put_ttl(t, b, tu_val("exp"), tu_val("old"), 5, 0), 0);
    assert_int_equal(keel_put_ttl(t, b, tu_val("keep"), tu_val("old"), 500, 0), 0);
    assert_int_equal(keel_commit(t), 0);
    clock_now = T0 + 5;
    t = wbegin(db);
    keel_val k5[2] = {tu_val("exp"), tu_val("fresh")};
    assert_int_equal(keel_put_many(t, b, k5, v2, 2, KEEL_NOOVERWRITE), 0);
    expect(t, b, "exp", "1");
    expect_at(t, b, "exp", 0);
    /* KEEPTTL keeps each key's expiry; without it a put clears it */
    keel_val k6[2] = {tu_val("keep"), tu_val("exp")};
    assert_int_equal(keel_put_many(t, b, k6, v2, 2, KEEL_KEEPTTL), 0);
    expect(t, b, "keep", "1");
    expect_at(t, b, "keep", T0 + 500);
    assert_int_equal(keel_put_many(t, b, k6, v2 + 2, 1, 0), 0);
    expect(t, b, "keep", "3");
    expect_at(t, b, "keep", 0);
    /* a bad entry anywhere: nothing written */
    keel_val k7[3] = {tu_val("bad1"), {NULL, 0}, tu_val("bad3")};
    assert_int_equal(keel_put_many(t, b, k7, v2, 3, 0), KEEL_BADVALSIZE);
    keel_val k8[3] = {tu_val("bad1"), tu_val("bad2"), {NULL, 3}};
    assert_int_equal(keel_put_many(t, b, k8, v2, 3, 0), KEEL_BADARG);
    keel_val v8[3] = {tu_val("1"), {NULL, 5}, tu_val("3")};
    assert_int_equal(keel_put_many(t, b, k8, v8, 2, 0), KEEL_BADARG);
    size_t maxk = keel_max_key_size(db);
    char *longk = malloc(maxk + 1);
    memset(longk, 'L', maxk + 1);
    keel_val k9[2] = {tu_val("bad1"), {longk, maxk + 1}};
    assert_int_equal(keel_put_many(t, b, k9, v2, 2, 0), KEEL_BADVALSIZE);
    k9[1].len = maxk; /* the longest key is fine */
    assert_int_equal(keel_put_many(t, b, k9, v2, 2, KEEL_NOOVERWRITE), 0);
    assert_int_equal(keel_del(t, b, tu_val("bad1")), 0);
    assert_int_equal(keel_put_many(t, b, k9, v2, 2, KEEL_NOOVERWRITE), KEEL_EXISTS); /* the long one exists */
    expect(t, b, "bad1", NULL);
    free(longk);
    expect(t, b, "bad2", NULL);
    expect(t, b, "bad3", NULL);
    /* sorted appends */
    static char ak[100][16];
    keel_val akv[100], avv[100];
    for (int i = 0; i < 100; i++) {
        snprintf(ak[i], sizeof ak[i], "zz%04d", i);
        akv[i] = tu_val(ak[i]);
        avv[i] = tu_val("app");
    }
    assert_int_equal(keel_put_many(t, b, akv, avv, 100, KEEL_APPEND), 0);
    expect(t, b, "zz0099", "app");
    assert_int_equal(keel_commit(t), 0);
    assert_clean(db);
    t = rbegin(db);
    expect(t, b, "dup", "4");
    expect(t, b, "new2", "3");
    expect(t, b, "keep", "3");
    assert_int_equal(keel_put_many(t, b, k5, v2, 2, 0), KEEL_READONLY);
    keel_abort(t);
    keel_close(db);
}

/* ---- one-call forms -------------------------------------------------------------- */

static void expect_db(keel_db *db, const char *bucket, const char *k, const char *v)
{
    void *copy = (void *)1;
    size_t len = 99;
    int rc = keel_db_get(db, bucket, tu_val(k), &copy, &len);
    if (!v) {
        assert_int_equal(rc, KEEL_NOTFOUND);
        assert_null(copy);
        assert_int_equal(len, 0);
        return;
    }
    assert_int_equal(rc, 0);
    assert_non_null(copy);
    assert_int_equal(len, strlen(v));
    if (len)
        assert_memory_equal(copy, v, len);
    free(copy);
}

static int count_buckets(const char *name, void *ctx)
{
    (void)name;
    ++*(int *)ctx;
    return 0;
}

static int nbuckets(keel_db *db)
{
    keel_txn *t = rbegin(db);
    int n = 0;
    assert_int_equal(keel_bucket_list(t, count_buckets, &n), 0);
    keel_abort(t);
    return n;
}

static void test_one_call(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ops-onecall");
    keel_db *db = open_db();
    int64_t r;
    keel_val e;

    /* default bucket */
    assert_int_equal(keel_db_put(db, NULL, tu_val("k"), tu_val("v"), 0), 0);
    expect_db(db, NULL, "k", "v");
    assert_int_equal(keel_db_put(db, NULL, tu_val("empty"), (keel_val){NULL, 0}, 0), 0);
    expect_db(db, NULL, "empty", "");
    assert_int_equal(nbuckets(db), 0);
    /* a named bucket, created by the first write */
    expect_db(db, "users", "alice", NULL);
    assert_int_equal(nbuckets(db), 0);
    assert_int_equal(keel_db_put(db, "users", tu_val("alice"), tu_val("admin"), 0), 0);
    assert_int_equal(nbuckets(db), 1);
    expect_db(db, "users", "alice", "admin");
    expect_db(db, NULL, "alice", NULL);
    expect_db(db, "other", "alice", NULL);
    /* ttl */
    assert_int_equal(keel_db_put(db, "users", tu_val("tmp"), tu_val("t"), 100), 0);
    keel_txn *t = rbegin(db);
    keel_bucket ub;
    assert_int_equal(keel_bucket_open(t, "users", 0, &ub), 0);
    expect_at(t, ub, "tmp", T0 + 100);
    expect_at(t, ub, "alice", 0);
    keel_abort(t);
    clock_now = T0 + 99;
    expect_db(db, "users", "tmp", "t");
    clock_now = T0 + 100;
    expect_db(db, "users", "tmp", NULL);
    assert_int_equal(keel_db_del(db, "users", tu_val("tmp")), KEEL_NOTFOUND);
    /* a plain one-call put over a ttl key clears it */
    assert_int_equal(keel_db_put(db, "users", tu_val("bob"), tu_val("b"), 50), 0);
    assert_int_equal(keel_db_put(db, "users", tu_val("bob"), tu_val("b2"), 0), 0);
    clock_now = T0 + 1000;
    expect_db(db, "users", "bob", "b2");
    /* del */
    assert_int_equal(keel_db_del(db, "users", tu_val("alice")), 0);
    expect_db(db, "users", "alice", NULL);
    assert_int_equal(keel_db_del(db, "users", tu_val("alice")), KEEL_NOTFOUND);
    assert_int_equal(keel_db_del(db, NULL, tu_val("k")), 0);
    expect_db(db, NULL, "k", NULL);
    /* failed writes do not leave a new bucket behind */
    assert_int_equal(keel_db_del(db, "ghost", tu_val("x")), KEEL_NOTFOUND);
    e = tu_val("x");
    assert_int_equal(keel_db_cas(db, "ghost", tu_val("x"), &e, tu_val("y")), KEEL_MISMATCH);
    assert_int_equal(keel_db_put(db, "ghost", (keel_val){"", 0}, tu_val("y"), 0), KEEL_BADVALSIZE);
    assert_int_equal(keel_db_put(db, "ghost", tu_val("x"), tu_val("y"), -1), KEEL_BADARG);
    assert_int_equal(nbuckets(db), 1);
    /* incr */
    assert_int_equal(keel_db_incr(db, "cnt", tu_val("c"), 5, &r), 0);
    assert_int_equal(r, 5);
    assert_int_equal(keel_db_incr(db, "cnt", tu_val("c"), -8, &r), 0);
    assert_int_equal(r, -3);
    expect_db(db, "cnt", "c", "-3");
    assert_int_equal(keel_db_incr(db, NULL, tu_val("c"), 1, &r), 0);
    assert_int_equal(r, 1);
    assert_int_equal(keel_db_put(db, NULL, tu_val("s"), tu_val("str"), 0), 0);
    r = 777;
    assert_int_equal(keel_db_incr(db, NULL, tu_val("s"), 1, &r), KEEL_NOTNUMBER);
    assert_int_equal(r, 777);
    expect_db(db, NULL, "s", "str");
    assert_int_equal(nbuckets(db), 2);
    /* cas */
    assert_int_equal(keel_db_cas(db, "cas", tu_val("k"), NULL, tu_val("1")), 0);
    assert_int_equal(keel_db_cas(db, "cas", tu_val("k"), NULL, tu_val("2")), KEEL_MISMATCH);
    e = tu_val("1");
    assert_int_equal(keel_db_cas(db, "cas", tu_val("k"), &e, tu_val("2")), 0);
    expect_db(db, "cas", "k", "2");
    assert_int_equal(keel_db_cas(db, "cas", tu_val("k"), &e, tu_val("3")), KEEL_MISMATCH);
    expect_db(db, "cas", "k", "2");
    assert_int_equal(keel_db_cas(db, NULL, tu_val("k"), NULL, tu_val("d")), 0);
    expect_db(db, NULL, "k", "d");
    assert_int_equal(nbuckets(db), 3);
    /* bad names */
    assert_int_equal(keel_db_put(db, "", tu_val("x"), tu_val("y"), 0), KEEL_BADNAME);
    char longname[KEEL_MAX_BUCKET_NAME + 2];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    assert_int_equal(keel_db_put(db, longname, tu_val("x"), tu_val("y"), 0), KEEL_BADNAME);
    void *copy = (void *)1;
    size_t len = 5;
    assert_int_equal(keel_db_get(db, "", tu_val("x"), &copy, &len), KEEL_BADNAME);
    assert_null(copy);
    assert_int_equal(len, 0);
    assert_int_equal(keel_db_del(db, "", tu_val("x")), KEEL_BADNAME);
    assert_int_equal(keel_db_incr(db, "", tu_val("x"), 1, &r), KEEL_BADNAME);
    assert_int_equal(keel_db_cas(db, "", tu_val("x"), NULL, tu_val("y")), KEEL_BADNAME);
    /* a write txn open in this thread: the one-call writes answer KEEL_BUSY, reads go on */
    t = wbegin(db);
    put(t, 0, "inflight", "x");
    assert_int_equal(keel_db_put(db, NULL, tu_val("x"), tu_val("y"), 0), KEEL_BUSY);
    assert_int_equal(keel_db_incr(db, NULL, tu_val("c"), 1, &r), KEEL_BUSY);
    expect_db(db, NULL, "inflight", NULL);
    expect_db(db, NULL, "c", "1");
    assert_int_equal(keel_commit(t), 0);
    expect_db(db, NULL, "inflight", "x");
    assert_clean(db);
    keel_close(db);
}

/* ---- bad inputs ------------------------------------------------------------------ */

static void test_bad_inputs(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ops-bad");
    keel_db *db = open_db();
    keel_txn *t = wbegin(db);
    put(t, 0, "live", "5");
    assert_int_equal(keel_put_ttl(t, 0, tu_val("ttl"), tu_val("7"), 1000, 0), 0);
    assert_int_equal(keel_commit(t), 0);

    size_t maxk = keel_max_key_size(db);
    char *lk = malloc(maxk + 1);
    memset(lk, 'K', maxk + 1);
    keel_val longk = {lk, maxk + 1}, emptyk = {"", 0}, nullk = {NULL, 4}, k = tu_val("live"), v = tu_val("x");
    keel_val nullv = {NULL, 3};
    int64_t r = 555, at = 555;
    size_t n = 555;
    keel_val vals[2], keys[2] = {tu_val("live"), tu_val("ttl")};

    t = wbegin(db);
    /* ttl_ms <= 0, unix_ms <= 0 */
    static const int64_t nonpos[] = {0, -1, INT64_MIN};
    for (size_t i = 0; i < sizeof nonpos / sizeof nonpos[0]; i++) {
        assert_int_equal(keel_put_ttl(t, 0, tu_val("new"), v, nonpos[i], 0), KEEL_BADARG);
        assert_int_equal(keel_expire(t, 0, k, nonpos[i]), KEEL_BADARG);
        assert_int_equal(keel_expire_at(t, 0, k, nonpos[i]), KEEL_BADARG);
        assert_int_equal(keel_db_put(db, NULL, k, v, nonpos[i] ? nonpos[i] : -5), KEEL_BADARG);
    }
    /* a deadline past int64: an error, nothing changed */
    int rc = keel_put_ttl(t, 0, tu_val("new"), v, INT64_MAX, 0);
    assert_true(rc == KEEL_OVERFLOW || rc == KEEL_BADARG);
    rc = keel_expire(t, 0, k, INT64_MAX);
    assert_true(rc == KEEL_OVERFLOW || rc == KEEL_BADARG);
    /* NULL result pointers */
    assert_int_equal(keel_ttl(t, 0, k, NULL), KEEL_BADARG);
    assert_int_equal(keel_expiry_at(t, 0, k, NULL), KEEL_BADARG);
    assert_int_equal(keel_incr(t, 0, k, 1, NULL), KEEL_BADARG);
    assert_int_equal(keel_db_incr(db, NULL, k, 1, NULL), KEEL_BADARG);
    void *copy = (void *)1;
    size_t len = 9;
    assert_int_equal(keel_db_get(db, NULL, k, NULL, &len), KEEL_BADARG);
    assert_int_equal(keel_db_get(db, NULL, k, &copy, NULL), KEEL_BADARG);
    /* NULL arrays, n = 0 */
    assert_int_equal(keel_get_many(t, 0, NULL, vals, 2), KEEL_BADARG);
    assert_int_equal(keel_get_many(t, 0, keys, NULL, 2), KEEL_BADARG);
    assert_int_equal(keel_get_many(t, 0, keys, vals, 0), 0); /* nothing to do */
    assert_int_equal(keel_get_many(t, 0, NULL, NULL, 0), 0);
    assert_int_equal(keel_put_many(t, 0, NULL, vals, 2, 0), KEEL_BADARG);
    assert_int_equal(keel_put_many(t, 0, keys, NULL, 2, 0), KEEL_BADARG);
    assert_int_equal(keel_put_many(t, 0, keys, keys, 0, 0), 0);
    assert_int_equal(keel_put_many(t, 0, NULL, NULL, 0, 0), 0);
    assert_int_equal(keel_put_many(t, 0, NULL, NULL, 0, 0x8000), KEEL_BADFLAGS);
    /* NULL txn / db */
    assert_int_equal(keel_put_ttl(NULL, 0, k, v, 10, 0), KEEL_BADARG);
    assert_int_equal(keel_expire(NULL, 0, k, 10), KEEL_BADARG);
    assert_int_equal(keel_expire_at(NULL, 0, k, T0), KEEL_BADARG);
    assert_int_equal(keel_persist(NULL, 0, k), KEEL_BADARG);
    assert_int_equal(keel_ttl(NULL, 0, k, &r), KEEL_BADARG);
    assert_int_equal(keel_expiry_at(NULL, 0, k, &at), KEEL_BADARG);
    assert_int_equal(keel_purge(NULL, 10, &n), KEEL_BADARG);
    assert_int_equal(n, 0);
    assert_int_equal(keel_cas(NULL, 0, k, NULL, v), KEEL_BADARG);
    assert_int_equal(keel_incr(NULL, 0, k, 1, &r), KEEL_BADARG);
    assert_int_equal(keel_get_many(NULL, 0, keys, vals, 2), KEEL_BADARG);
    assert_int_equal(keel_put_many(NULL, 0, keys, keys, 2, 0), KEEL_BADARG);
    assert_int_equal(keel_db_put(NULL, NULL, k, v, 0), KEEL_BADARG);
    assert_int_equal(keel_db_get(NULL, NULL, k, &copy, &len), KEEL_BADARG);
    assert_int_equal(keel_db_del(NULL, NULL, k), KEEL_BADARG);
    assert_int_equal(keel_db_incr(NULL, NULL, k, 1, &r), KEEL_BADARG);
    assert_int_equal(keel_db_cas(NULL, NULL, k, NULL, v), KEEL_BADARG);
    /* keys: too long, empty, NULL with a length */
    keel_val badkeys[3] = {longk, emptyk, nullk};
    int want[3] = {KEEL_BADVALSIZE, KEEL_BADVALSIZE, KEEL_BADARG};
    for (int i = 0; i < 3; i++) {
        keel_val bk = badkeys[i];
        int w = want[i];
        assert_int_equal(keel_put_ttl(t, 0, bk, v, 10, 0), w);
        assert_int_equal(keel_expire(t, 0, bk, 10), w);
        assert_int_equal(keel_expire_at(t, 0, bk, T0 + 10), w);
        assert_int_equal(keel_persist(t, 0, bk), w);
        assert_int_equal(keel_ttl(t, 0, bk, &r), w);
        assert_int_equal(keel_expiry_at(t, 0, bk, &at), w);
        assert_int_equal(keel_cas(t, 0, bk, NULL, v), w);
        assert_int_equal(keel_incr(t, 0, bk, 1, &r), w);
        keel_val ks[2] = {tu_val("live"), bk};
        assert_int_equal(keel_get_many(t, 0, ks, vals, 2), w);
        assert_int_equal(keel_put_many(t, 0, ks, keys, 2, 0), w);
    }
    /* values NULL with a length */
    assert_int_equal(keel_put_ttl(t, 0, k, nullv, 10, 0), KEEL_BADARG);
    assert_int_equal(keel_cas(t, 0, k, NULL, nullv), KEEL_BADARG);
    assert_int_equal(keel_cas(t, 0, k, &nullv, v), KEEL_BADARG);
    /* flags */
    assert_int_equal(keel_put_ttl(t, 0, k, v, 10, KEEL_KEEPTTL), KEEL_BADFLAGS);
    assert_int_equal(keel_put_ttl(t, 0, k, v, 10, KEEL_NOOVERWRITE | KEEL_KEEPTTL), KEEL_BADFLAGS);
    assert_int_equal(keel_put_ttl(t, 0, k, v, 10, 0x8000u), KEEL_BADFLAGS);
    assert_int_equal(keel_put_ttl(t, 0, k, v, 10, KEEL_CREATE), KEEL_BADFLAGS);
    assert_int_equal(keel_put_many(t, 0, keys, keys, 2, 0x8000u), KEEL_BADFLAGS);
    assert_int_equal(keel_put_many(t, 0, keys, keys, 2, KEEL_RDONLY), KEEL_BADFLAGS);
    /* absent keys for the key-must-exist calls */
    assert_int_equal(keel_expire(t, 0, tu_val("nope"), 10), KEEL_NOTFOUND);
    assert_int_equal(keel_expire_at(t, 0, tu_val("nope"), T0 + 10), KEEL_NOTFOUND);
    assert_int_equal(keel_persist(t, 0, tu_val("nope")), KEEL_NOTFOUND);
    assert_int_equal(keel_ttl(t, 0, tu_val("nope"), &r), KEEL_NOTFOUND);
    assert_int_equal(keel_expiry_at(t, 0, tu_val("nope"), &at), KEEL_NOTFOUND);
    /* after all that, the txn works and nothing changed */
    expect(t, 0, "live", "5");
    expect_at(t, 0, "live", 0);
    expect(t, 0, "ttl", "7");
    expect_at(t, 0, "ttl", T0 + 1000);
    expect(t, 0, "new", NULL);
    put(t, 0, "after", "ok");
    assert_int_equal(keel_commit(t), 0);

    /* the one-call forms (no txn of ours open, or they would answer KEEL_BUSY) */
    for (int i = 0; i < 3; i++) {
        keel_val bk = badkeys[i];
        int w = want[i];
        assert_int_equal(keel_db_put(db, NULL, bk, v, 0), w);
        assert_int_equal(keel_db_put(db, NULL, bk, v, 10), w);
        assert_int_equal(keel_db_put(db, "b", bk, v, 10), w);
        copy = (void *)1;
        assert_int_equal(keel_db_get(db, NULL, bk, &copy, &len), w);
        assert_null(copy);
        assert_int_equal(keel_db_del(db, NULL, bk), w);
        assert_int_equal(keel_db_incr(db, NULL, bk, 1, &r), w);
        assert_int_equal(keel_db_cas(db, NULL, bk, NULL, v), w);
    }
    assert_int_equal(keel_db_put(db, NULL, k, nullv, 0), KEEL_BADARG);
    assert_int_equal(keel_db_put(db, NULL, k, nullv, 10), KEEL_BADARG);
    assert_int_equal(keel_db_cas(db, NULL, k, &nullv, v), KEEL_BADARG);
    assert_int_equal(keel_db_cas(db, NULL, k, NULL, nullv), KEEL_BADARG);

    /* in a read txn: every write answers KEEL_READONLY, reads work */
    t = rbegin(db);
    assert_int_equal(keel_put_ttl(t, 0, k, v, 10, 0), KEEL_READONLY);
    assert_int_equal(keel_expire(t, 0, k, 10), KEEL_READONLY);
    assert_int_equal(keel_expire_at(t, 0, k, T0 + 10), KEEL_READONLY);
    assert_int_equal(keel_persist(t, 0, tu_val("ttl")), KEEL_READONLY);
    n = 555;
    assert_int_equal(keel_purge(t, 10, &n), KEEL_READONLY);
    assert_int_equal(n, 0);
    assert_int_equal(keel_cas(t, 0, k, NULL, v), KEEL_READONLY);
    assert_int_equal(keel_incr(t, 0, k, 1, &r), KEEL_READONLY);
    assert_int_equal(keel_put_many(t, 0, keys, keys, 2, 0), KEEL_READONLY);
    assert_int_equal(keel_ttl(t, 0, tu_val("ttl"), &r), 0);
    assert_int_equal(r, 1000);
    assert_int_equal(keel_get_many(t, 0, keys, vals, 2), 0);
    assert_int_equal(vals[1].len, 1);
    keel_abort(t);
    /* a finished txn */
    t = wbegin(db);
    keel_abort(t);
    assert_int_equal(keel_put_ttl(t, 0, k, v, 10, 0), KEEL_BADTXN);
    assert_int_equal(keel_ttl(t, 0, k, &r), KEEL_BADTXN);
    assert_int_equal(keel_incr(t, 0, k, 1, &r), KEEL_BADTXN);

    t = rbegin(db);
    expect(t, 0, "after", "ok");
    expect(t, 0, "live", "5");
    expect(t, 0, "new", NULL);
    expect_at(t, 0, "ttl", T0 + 1000);
    keel_abort(t);
    free(lk);
    assert_clean(db);
    keel_close(db);
}

/* A handle that names no bucket in this txn: KEEL_BADBUCKET, and (as with
 * keel_put) the txn goes on. */
static void test_bad_bucket(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ops-badbucket");
    keel_db *db = open_db();
    keel_txn *t = wbegin(db);
    keel_bucket gone;
    assert_int_equal(keel_bucket_open(t, "gone", KEEL_CREATE, &gone), 0);
    put(t, gone, "k", "1");
    assert_int_equal(keel_commit(t), 0);

    keel_val k = tu_val("k"), v = tu_val("v"), vals[1];
    int64_t r;
    const keel_bucket handles[] = {gone, 9999};
    for (size_t h = 0; h < 2; h++) {
        keel_bucket b = handles[h];
        for (int call = 0; call < 12; call++) {
            t = wbegin(db);
            if (h == 0)
                assert_int_equal(keel_bucket_drop(t, gone), 0);
            int rc = 0;
            switch (call) {
            case 0: rc = keel_put(t, b, k, v, 0); break;
            case 1: rc = keel_put_ttl(t, b, k, v, 10, 0); break;
            case 2: rc = keel_expire(t, b, k, 10); break;
            case 3: rc = keel_expire_at(t, b, k, T0 + 10); break;
            case 4: rc = keel_persist(t, b, k); break;
            case 5: rc = keel_cas(t, b, k, NULL, v); break;
            case 6: rc = keel_incr(t, b, k, 1, &r); break;
            case 7: rc = keel_put_many(t, b, &k, &v, 1, 0); break;
            case 8: rc = keel_get_many(t, b, &k, vals, 1); break;
            case 9: rc = keel_ttl(t, b, k, &r); break;
            case 10: rc = keel_expiry_at(t, b, k, &r); break;
            case 11: rc = keel_del(t, b, k); break;
            }
            if (rc != KEEL_BADBUCKET)
                fail_msg("handle %u, call %d: %d (%s), want KEEL_BADBUCKET", b, call, rc, keel_strerror(rc));
            /* the txn is still usable */
            rc = keel_put(t, 0, tu_val("after"), v, 0);
            if (rc != 0)
                fail_msg("handle %u, call %d: the next put gives %d (%s)", b, call, rc, keel_strerror(rc));
            keel_abort(t);
        }
    }
    assert_clean(db);
    keel_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_incr, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_inputs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_bucket, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
