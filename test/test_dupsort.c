/*
 * test_dupsort.c — DUPSORT buckets: a key holds a sorted set of values.
 *
 * The rules of keel.h's DUPSORT section, one test each (kinds, put and its
 * flags, get, deletes, cursor moves, counts, TTLs, sizes, keys with zero
 * bytes), a key with many values spread over many pages, and a randomized
 * test against a multimap model (KEEL_SEED, KEEL_TEST_SCALE) that ends each
 * round with keel_check.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "internal.h"
#include "keel.h"
#include "testutil.h"

static int64_t clock_now = 1700000000000;
static int64_t test_clock(void *ctx)
{
    (void)ctx;
    return clock_now;
}

static keel_db *open_db(const char *path)
{
    keel_options o = {0};
    o.flags = KEEL_NOSYNC;
    o.clock = test_clock;
    keel_db *db;
    int rc = keel_open(path, &o, &db);
    if (rc)
        fail_msg("open %s: %s", path, keel_strerror(rc));
    return db;
}

static void print_problem(void *ctx, const char *msg)
{
    (void)ctx;
    fprintf(stderr, "check: %s\n", msg);
}

static void check_clean(keel_db *db)
{
    uint64_t problems = 99;
    assert_int_equal(keel_check(db, print_problem, NULL, &problems), 0);
    assert_int_equal(problems, 0);
}

static keel_txn *begin(keel_db *db, unsigned flags)
{
    keel_txn *t;
    assert_int_equal(keel_begin(db, flags, &t), 0);
    return t;
}

static keel_bucket dup_bucket(keel_txn *t, const char *name)
{
    keel_bucket b;
    assert_int_equal(keel_bucket_open(t, name, KEEL_CREATE | KEEL_DUPSORT, &b), 0);
    return b;
}

static void put(keel_txn *t, keel_bucket b, const char *k, const char *v)
{
    assert_int_equal(keel_put(t, b, tu_val(k), tu_val(v), 0), 0);
}

static bool val_is(keel_val v, const char *s) { return v.len == strlen(s) && memcmp(v.data, s, v.len) == 0; }

/* Every pair of the bucket, "k=v" joined by spaces. */
static void walk(keel_txn *t, keel_bucket b, char *out, size_t cap)
{
    keel_cursor *c;
    assert_int_equal(keel_cursor_open(t, b, &c), 0);
    keel_val k, v;
    size_t n = 0;
    out[0] = 0;
    for (int rc = keel_cursor_first(c, &k, &v); rc == 0; rc = keel_cursor_next(c, &k, &v))
        n += (size_t)snprintf(out + n, cap - n, "%s%.*s=%.*s", n ? " " : "", (int)k.len, (const char *)k.data,
                              (int)v.len, (const char *)v.data);
    keel_cursor_close(c);
}

static void test_put_get_del(void **state)
{
    (void)state;
    char path[256], buf[512];
    keel_db *db = open_db(tu_path(path, sizeof path, "dup-basic"));
    keel_txn *t = begin(db, 0);
    keel_bucket b = dup_bucket(t, "idx");
    put(t, b, "k1", "c");
    put(t, b, "k1", "a");
    put(t, b, "k2", "x");
    put(t, b, "k1", "b");
    put(t, b, "k0", "z");
    walk(t, b, buf, sizeof buf);
    assert_string_equal(buf, "k0=z k1=a k1=b k1=c k2=x");
    keel_val v;
    assert_int_equal(keel_get(t, b, tu_val("k1"), &v), 0);
    assert_true(val_is(v, "a")); /* the first value */
    /* an existing pair: success and no change; NODUPDATA: EXISTS */
    assert_int_equal(keel_put(t, b, tu_val("k1"), tu_val("b"), 0), 0);
    assert_int_equal(keel_put(t, b, tu_val("k1"), tu_val("b"), KEEL_NODUPDATA), KEEL_EXISTS);
    assert_int_equal(keel_put(t, b, tu_val("k1"), tu_val("d"), KEEL_NOOVERWRITE), KEEL_EXISTS);
    assert_int_equal(keel_put(t, b, tu_val("k9"), tu_val("d"), KEEL_NOOVERWRITE | KEEL_NODUPDATA), 0);
    keel_stat st;
    assert_int_equal(keel_bucket_stat(t, b, &st), 0);
    assert_int_equal(st.entries, 6); /* pairs */
    assert_int_equal(keel_del_value(t, b, tu_val("k1"), tu_val("b")), 0);
    assert_int_equal(keel_del_value(t, b, tu_val("k1"), tu_val("b")), KEEL_NOTFOUND);
    assert_int_equal(keel_del_value(t, b, tu_val("k7"), tu_val("b")), KEEL_NOTFOUND);
    walk(t, b, buf, sizeof buf);
    assert_string_equal(buf, "k0=z k1=a k1=c k2=x k9=d");
    assert_int_equal(keel_del(t, b, tu_val("k1")), 0); /* every value */
    assert_int_equal(keel_del(t, b, tu_val("k1")), KEEL_NOTFOUND);
    assert_int_equal(keel_get(t, b, tu_val("k1"), &v), KEEL_NOTFOUND);
    walk(t, b, buf, sizeof buf);
    assert_string_equal(buf, "k0=z k2=x k9=d");
    /* one value per key is what CAS and increment need */
    int64_t r;
    assert_int_equal(keel_cas(t, b, tu_val("k0"), NULL, tu_val("q")), KEEL_INCOMPATIBLE);
    assert_int_equal(keel_incr(t, b, tu_val("n"), 1, &r), KEEL_INCOMPATIBLE);
    keel_val keys[2] = {tu_val("m"), tu_val("m")}, vals[2] = {tu_val("2"), tu_val("1")}, got[2];
    assert_int_equal(keel_put_many(t, b, keys, vals, 2, 0), 0);
    assert_int_equal(keel_get_many(t, b, keys, got, 2), 0);
    assert_true(val_is(got[0], "1"));
    assert_int_equal(keel_commit(t), 0);
    keel_close(db);

    db = open_db(path); /* all of it on disk, and the bucket's kind */
    check_clean(db);
    t = begin(db, KEEL_RDONLY);
    assert_int_equal(keel_bucket_open(t, "idx", 0, &b), 0);
    unsigned flags = 0;
    assert_int_equal(keel_bucket_flags(t, b, &flags), 0);
    assert_int_equal(flags, KEEL_DUPSORT);
    walk(t, b, buf, sizeof buf);
    assert_string_equal(buf, "k0=z k2=x k9=d m=1 m=2");
    keel_abort(t);
    /* the one-call forms reach the bucket as it is */
    assert_int_equal(keel_db_put(db, "idx", tu_val("m"), tu_val("0"), 0), 0);
    assert_int_equal(keel_db_del(db, "idx", tu_val("k0")), 0);
    assert_int_equal(keel_db_cas(db, "idx", tu_val("m"), NULL, tu_val("x")), KEEL_INCOMPATIBLE);
    void *copy;
    size_t len;
    assert_int_equal(keel_db_get(db, "idx", tu_val("m"), &copy, &len), 0);
    assert_true(len == 1 && memcmp(copy, "0", 1) == 0);
    free(copy);
    t = begin(db, KEEL_RDONLY);
    walk(t, b, buf, sizeof buf);
    assert_string_equal(buf, "k2=x k9=d m=0 m=1 m=2");
    keel_abort(t);
    keel_close(db);
    tu_remove(path);
}

static void test_kinds(void **state)
{
    (void)state;
    char path[256];
    keel_db *db = open_db(tu_path(path, sizeof path, "dup-kinds"));
    keel_txn *t = begin(db, 0);
    keel_bucket d = dup_bucket(t, "d"), p, x;
    assert_int_equal(keel_bucket_open(t, "p", KEEL_CREATE, &p), 0);
    assert_int_equal(keel_bucket_open(t, "d", 0, &x), 0); /* existing: no flag needed */
    assert_int_equal(x, d);
    assert_int_equal(keel_bucket_open(t, "d", KEEL_DUPSORT, &x), 0);
    assert_int_equal(keel_bucket_open(t, "d", KEEL_CREATE, &x), KEEL_INCOMPATIBLE);
    assert_int_equal(keel_bucket_open(t, "p", KEEL_CREATE | KEEL_DUPSORT, &x), KEEL_INCOMPATIBLE);
    assert_int_equal(keel_bucket_open(t, "p", KEEL_DUPSORT, &x), KEEL_INCOMPATIBLE);
    assert_int_equal(keel_bucket_open(t, NULL, KEEL_DUPSORT, &x), KEEL_INCOMPATIBLE);
    assert_int_equal(keel_bucket_open(t, "q", KEEL_DUPSORT, &x), KEEL_NOTFOUND);
    assert_int_equal(keel_bucket_open(t, "q", 0x8000, &x), KEEL_BADFLAGS);
    unsigned f = 9;
    assert_int_equal(keel_bucket_flags(t, p, &f), 0);
    assert_int_equal(f, 0);
    assert_int_equal(keel_bucket_flags(t, p, NULL), KEEL_BADARG);
    assert_string_not_equal(keel_strerror(KEEL_INCOMPATIBLE), "unknown keel error code");
    /* dropped and created again as the other kind, in one txn */
    assert_int_equal(keel_bucket_drop(t, d), 0);
    assert_int_equal(keel_bucket_open(t, "d", KEEL_CREATE, &x), 0);
    assert_int_equal(keel_bucket_flags(t, x, &f), 0);
    assert_int_equal(f, 0);
    assert_int_equal(keel_commit(t), 0);
    check_clean(db);
    keel_close(db);
    tu_remove(path);
}

/* In a plain bucket the moves treat a key as having one value. */
static void test_plain_moves(void **state)
{
    (void)state;
    char path[256];
    keel_db *db = open_db(tu_path(path, sizeof path, "dup-plain"));
    keel_txn *t = begin(db, 0);
    put(t, KEEL_DEFAULT_BUCKET, "a", "1");
    put(t, KEEL_DEFAULT_BUCKET, "b", "2");
    put(t, KEEL_DEFAULT_BUCKET, "c", "3");
    keel_cursor *c;
    assert_int_equal(keel_cursor_open(t, KEEL_DEFAULT_BUCKET, &c), 0);
    keel_val k, v;
    uint64_t n;
    assert_int_equal(keel_cursor_next_dup(c, &k, &v), KEEL_BADCURSOR);
    assert_int_equal(keel_cursor_seek_key(c, tu_val("bb"), &v), KEEL_NOTFOUND);
    assert_int_equal(keel_cursor_seek_key(c, tu_val("b"), &v), 0);
    assert_true(val_is(v, "2"));
    assert_int_equal(keel_cursor_count(c, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(keel_cursor_next_dup(c, &k, &v), KEEL_NOTFOUND);
    assert_int_equal(keel_cursor_next_key(c, &k, &v), 0);
    assert_true(val_is(k, "c"));
    assert_int_equal(keel_cursor_prev_key(c, &k, &v), 0);
    assert_true(val_is(k, "b"));
    assert_int_equal(keel_cursor_seek_pair(c, tu_val("b"), tu_val("1"), &k, &v), 0);
    assert_true(val_is(k, "b") && val_is(v, "2"));
    assert_int_equal(keel_cursor_seek_pair(c, tu_val("b"), tu_val("3"), &k, &v), KEEL_NOTFOUND);
    assert_int_equal(keel_del_value(t, KEEL_DEFAULT_BUCKET, tu_val("a"), tu_val("9")), KEEL_NOTFOUND);
    assert_int_equal(keel_del_value(t, KEEL_DEFAULT_BUCKET, tu_val("a"), tu_val("1")), 0);
    assert_int_equal(keel_get(t, KEEL_DEFAULT_BUCKET, tu_val("a"), &v), KEEL_NOTFOUND);
    keel_cursor_close(c);
    assert_int_equal(keel_commit(t), 0);
    keel_close(db);
    tu_remove(path);
}

static void test_cursor_moves(void **state)
{
    (void)state;
    char path[256];
    keel_db *db = open_db(tu_path(path, sizeof path, "dup-moves"));
    keel_txn *t = begin(db, 0);
    keel_bucket b = dup_bucket(t, "m");
    const char *pairs[][2] = {{"a", "1"}, {"b", "1"}, {"b", "2"}, {"b", "3"}, {"c", "9"}, {"d", "1"}, {"d", "5"}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++)
        put(t, b, pairs[i][0], pairs[i][1]);
    for (int pass = 0; pass < 2; pass++) { /* in the write txn, then in a read txn */
        keel_cursor *c;
        assert_int_equal(keel_cursor_open(t, b, &c), 0);
        keel_val k, v;
        uint64_t n;
        assert_int_equal(keel_cursor_count(c, &n), KEEL_BADCURSOR);
        assert_int_equal(keel_cursor_seek_key(c, tu_val("bb"), &v), KEEL_NOTFOUND);
        assert_int_equal(keel_cursor_seek_key(c, tu_val("b"), &v), 0);
        assert_true(val_is(v, "1"));
        assert_int_equal(keel_cursor_count(c, &n), 0);
        assert_int_equal(n, 3);
        assert_int_equal(keel_cursor_next_dup(c, &k, &v), 0);
        assert_true(val_is(k, "b") && val_is(v, "2"));
        assert_int_equal(keel_cursor_next_dup(c, &k, &v), 0);
        assert_true(val_is(v, "3"));
        assert_int_equal(keel_cursor_next_dup(c, &k, &v), KEEL_NOTFOUND);
        assert_int_equal(keel_cursor_current(c, &k, &v), 0); /* stayed on b=3 */
        assert_true(val_is(k, "b") && val_is(v, "3"));
        assert_int_equal(keel_cursor_prev_dup(c, &k, &v), 0);
        assert_true(val_is(v, "2"));
        assert_int_equal(keel_cursor_next_key(c, &k, &v), 0);
        assert_true(val_is(k, "c") && val_is(v, "9"));
        assert_int_equal(keel_cursor_prev_dup(c, &k, &v), KEEL_NOTFOUND);
        assert_int_equal(keel_cursor_count(c, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(keel_cursor_prev_key(c, &k, &v), 0); /* the previous key's last value */
        assert_true(val_is(k, "b") && val_is(v, "3"));
        assert_int_equal(keel_cursor_prev_key(c, &k, &v), 0);
        assert_true(val_is(k, "a") && val_is(v, "1"));
        assert_int_equal(keel_cursor_prev_key(c, &k, &v), KEEL_NOTFOUND);
        assert_int_equal(keel_cursor_current(c, &k, &v), 0);
        assert_true(val_is(k, "a"));
        assert_int_equal(keel_cursor_seek_pair(c, tu_val("d"), tu_val("2"), &k, &v), 0);
        assert_true(val_is(k, "d") && val_is(v, "5"));
        assert_int_equal(keel_cursor_next_key(c, &k, &v), KEEL_NOTFOUND);
        assert_int_equal(keel_cursor_current(c, &k, &v), 0);
        assert_true(val_is(v, "5"));
        assert_int_equal(keel_cursor_seek_pair(c, tu_val("d"), tu_val("6"), &k, &v), KEEL_NOTFOUND);
        assert_int_equal(keel_cursor_seek_pair(c, tu_val("c"), tu_val("9"), &k, &v), 0);
        assert_int_equal(keel_cursor_seek(c, tu_val("bz"), &k, &v), 0); /* first pair whose key >= */
        assert_true(val_is(k, "c"));
        assert_int_equal(keel_cursor_seek(c, tu_val("b"), &k, &v), 0);
        assert_true(val_is(k, "b") && val_is(v, "1"));
        assert_int_equal(keel_cursor_last(c, &k, &v), 0);
        assert_true(val_is(k, "d") && val_is(v, "5"));
        keel_cursor_close(c);
        if (pass == 0) {
            assert_int_equal(keel_commit(t), 0);
            t = begin(db, KEEL_RDONLY);
        }
    }
    keel_abort(t);
    keel_close(db);
    tu_remove(path);
}

/* keel_cursor_del removes one pair; the walk goes on. */
static void test_cursor_del(void **state)
{
    (void)state;
    char path[256], buf[512];
    keel_db *db = open_db(tu_path(path, sizeof path, "dup-cdel"));
    keel_txn *t = begin(db, 0);
    keel_bucket b = dup_bucket(t, "m");
    const char *pairs[][2] = {{"a", "1"}, {"a", "2"}, {"a", "3"}, {"b", "1"}, {"b", "2"}};
    for (size_t i = 0; i < 5; i++)
        put(t, b, pairs[i][0], pairs[i][1]);
    keel_cursor *c;
    assert_int_equal(keel_cursor_open(t, b, &c), 0);
    keel_val k, v;
    int i = 0;
    for (int rc = keel_cursor_first(c, &k, &v); rc == 0; rc = keel_cursor_next(c, &k, &v), i++)
        if (i % 2 == 0)
            assert_int_equal(keel_cursor_del(c), 0);
    assert_int_equal(i, 5);
    walk(t, b, buf, sizeof buf);
    assert_string_equal(buf, "a=2 b=1");
    /* next_dup after a delete: the deleted pair's next value */
    assert_int_equal(keel_cursor_seek_key(c, tu_val("b"), &v), 0);
    put(t, b, "b", "7");
    assert_int_equal(keel_cursor_del(c), 0);
    assert_int_equal(keel_cursor_next_dup(c, &k, &v), 0);
    assert_true(val_is(k, "b") && val_is(v, "7"));
    keel_cursor_close(c);
    assert_int_equal(keel_commit(t), 0);
    check_clean(db);
    keel_close(db);
    tu_remove(path);
}

/* Backward moves after the cursor's pair is deleted: with a later pair
 * there and with nothing left after it, prev_dup is the value before the
 * deleted one and prev_key the last value of the key before its key. */
static void test_moves_after_del(void **state)
{
    (void)state;
    char path[256];
    keel_db *db = open_db(tu_path(path, sizeof path, "dup-delmoves"));
    keel_txn *t = begin(db, 0);
    keel_bucket b = dup_bucket(t, "m");
    const char *pairs[][2] = {{"a", "1"}, {"a", "2"}, {"b", "1"}, {"b", "2"}, {"b", "3"}};
    for (size_t i = 0; i < 5; i++)
        put(t, b, pairs[i][0], pairs[i][1]);
    keel_cursor *c;
    assert_int_equal(keel_cursor_open(t, b, &c), 0);
    keel_val k, v;
    for (int last = 0; last < 2; last++) { /* the middle pair b=2, then the last one b=3 */
        const char *val = last ? "3" : "2";
        assert_int_equal(keel_cursor_seek_pair(c, tu_val("b"), tu_val(val), &k, &v), 0);
        assert_int_equal(keel_cursor_del(c), 0);
        assert_int_equal(keel_cursor_prev_dup(c, &k, &v), 0);
        assert_true(val_is(k, "b") && val_is(v, "1"));
        assert_int_equal(keel_cursor_seek_pair(c, tu_val("b"), tu_val(last ? "3" : "1"), &k, &v), last ? KEEL_NOTFOUND : 0);
        if (last) /* put b=3 back to delete it again, the cursor on it */
            put(t, b, "b", "3");
        assert_int_equal(keel_cursor_seek_pair(c, tu_val("b"), tu_val(last ? "3" : "1"), &k, &v), 0);
        if (!last)
            continue;
        assert_int_equal(keel_cursor_del(c), 0);
        assert_int_equal(keel_cursor_prev_key(c, &k, &v), 0);
        assert_true(val_is(k, "a") && val_is(v, "2"));
    }
    /* nothing of its key left before it: prev_dup finds nothing and stays */
    assert_int_equal(keel_cursor_seek_key(c, tu_val("b"), &v), 0);
    assert_int_equal(keel_cursor_del(c), 0);
    assert_int_equal(keel_cursor_prev_dup(c, &k, &v), KEEL_NOTFOUND);
    assert_int_equal(keel_cursor_next(c, &k, &v), KEEL_NOTFOUND);
    assert_int_equal(keel_cursor_prev(c, &k, &v), 0);
    assert_true(val_is(k, "a") && val_is(v, "2"));
    /* the bucket emptied under the cursor: nothing before it either */
    assert_int_equal(keel_del(t, b, tu_val("a")), 0);
    assert_int_equal(keel_cursor_prev_key(c, &k, &v), KEEL_NOTFOUND);
    assert_int_equal(keel_cursor_prev_dup(c, &k, &v), KEEL_NOTFOUND);
    keel_cursor_close(c);
    assert_int_equal(keel_commit(t), 0);
    check_clean(db);
    keel_close(db);
    tu_remove(path);
}

/* Keys and values with zero bytes: the order is (key, value), bytewise. */
static void test_zero_bytes(void **state)
{
    (void)state;
    char path[256];
    keel_db *db = open_db(tu_path(path, sizeof path, "dup-zero"));
    keel_txn *t = begin(db, 0);
    keel_bucket b = dup_bucket(t, "z");
    struct {
        const char *k;
        size_t kl;
        const char *v;
        size_t vl;
    } in[] = {{"a\0b", 3, "\0", 1}, {"a", 1, "zz", 2},       {"a\0", 2, "", 0},    {"ab", 2, "\0\0", 2},
              {"a\0", 2, "\0x", 2}, {"a", 1, "\0\0\0", 3}, {"\0", 1, "q", 1},    {"\0\0", 2, "", 0},
              {"a\xff", 2, "1", 1}, {"a\0\xff", 3, "1", 1}, {"a\0\0", 3, "1", 1}};
    size_t n = sizeof in / sizeof in[0];
    for (size_t i = 0; i < n; i++)
        assert_int_equal(keel_put(t, b, (keel_val){in[i].k, in[i].kl}, (keel_val){in[i].v, in[i].vl}, 0), 0);
    /* the expected order: sort by key, then value (memcmp, shorter first) */
    int order[] = {6, 7, 5, 1, 2, 4, 10, 0, 9, 3, 8};
    keel_cursor *c;
    assert_int_equal(keel_cursor_open(t, b, &c), 0);
    keel_val k, v;
    size_t i = 0;
    for (int rc = keel_cursor_first(c, &k, &v); rc == 0; rc = keel_cursor_next(c, &k, &v), i++) {
        assert_true(i < n);
        int j = order[i];
        assert_int_equal(k.len, in[j].kl);
        assert_memory_equal(k.data, in[j].k, k.len);
        assert_int_equal(v.len, in[j].vl);
        if (v.len)
            assert_memory_equal(v.data, in[j].v, v.len);
    }
    assert_int_equal(i, n);
    uint64_t cnt;
    assert_int_equal(keel_cursor_seek_key(c, (keel_val){"a\0", 2}, &v), 0);
    assert_int_equal(keel_cursor_count(c, &cnt), 0);
    assert_int_equal(cnt, 2);
    assert_int_equal(keel_cursor_next_key(c, &k, &v), 0);
    assert_int_equal(k.len, 3);
    assert_memory_equal(k.data, "a\0\0", 3);
    keel_cursor_close(c);
    assert_int_equal(keel_commit(t), 0);
    check_clean(db);
    keel_close(db);
    tu_remove(path);
}

static void test_ttl(void **state)
{
    (void)state;
    char path[256], buf[512];
    keel_db *db = open_db(tu_path(path, sizeof path, "dup-ttl"));
    keel_txn *t = begin(db, 0);
    keel_bucket b = dup_bucket(t, "t");
    put(t, b, "k", "1");
    put(t, b, "k", "2");
    put(t, b, "j", "1");
    assert_int_equal(keel_put_ttl(t, b, tu_val("k"), tu_val("3"), 1000, 0), 0); /* the key's, for all three */
    put(t, b, "k", "4");                                                         /* a plain put keeps it */
    int64_t at;
    keel_cursor *c;
    assert_int_equal(keel_cursor_open(t, b, &c), 0);
    keel_val k, v;
    int n = 0;
    for (int rc = keel_cursor_seek_key(c, tu_val("k"), &v); rc == 0; rc = keel_cursor_next_dup(c, &k, &v), n++) {
        assert_int_equal(keel_cursor_expiry(c, &at), 0);
        assert_int_equal(at, clock_now + 1000);
    }
    assert_int_equal(n, 4);
    keel_cursor_close(c);
    assert_int_equal(keel_commit(t), 0);
    check_clean(db);

    t = begin(db, 0);
    assert_int_equal(keel_bucket_open(t, "t", 0, &b), 0);
    assert_int_equal(keel_expire(t, b, tu_val("j"), 500), 0);
    assert_int_equal(keel_persist(t, b, tu_val("k")), 0);
    assert_int_equal(keel_expiry_at(t, b, tu_val("k"), &at), 0);
    assert_int_equal(at, 0);
    assert_int_equal(keel_expire(t, b, tu_val("k"), 2000), 0);
    assert_int_equal(keel_del_value(t, b, tu_val("j"), tu_val("1")), 0); /* the last: its index entry goes */
    put(t, b, "j", "2");
    assert_int_equal(keel_expiry_at(t, b, tu_val("j"), &at), 0);
    assert_int_equal(at, 0);
    assert_int_equal(keel_commit(t), 0);
    check_clean(db);

    clock_now += 3000; /* k has expired: absent to every read */
    t = begin(db, 0);
    assert_int_equal(keel_bucket_open(t, "t", 0, &b), 0);
    assert_int_equal(keel_get(t, b, tu_val("k"), &v), KEEL_NOTFOUND);
    walk(t, b, buf, sizeof buf);
    assert_string_equal(buf, "j=2");
    assert_int_equal(keel_del(t, b, tu_val("k")), KEEL_NOTFOUND);
    put(t, b, "k", "9"); /* a new key: the expired values go, no expiry */
    walk(t, b, buf, sizeof buf);
    assert_string_equal(buf, "j=2 k=9");
    assert_int_equal(keel_expiry_at(t, b, tu_val("k"), &at), 0);
    assert_int_equal(at, 0);
    keel_stat st;
    assert_int_equal(keel_bucket_stat(t, b, &st), 0);
    assert_int_equal(st.entries, 2);
    assert_int_equal(keel_expire(t, b, tu_val("k"), 10), 0);
    assert_int_equal(keel_commit(t), 0);
    clock_now += 100;
    t = begin(db, 0);
    size_t purged = 0;
    assert_int_equal(keel_purge(t, 100, &purged), 0);
    assert_int_equal(purged, 1);
    assert_int_equal(keel_bucket_open(t, "t", 0, &b), 0);
    assert_int_equal(keel_bucket_stat(t, b, &st), 0);
    assert_int_equal(st.entries, 1);
    assert_int_equal(keel_commit(t), 0);
    check_clean(db);
    keel_close(db);
    tu_remove(path);
}

static void test_sizes(void **state)
{
    (void)state;
    char path[256];
    keel_db *db = open_db(tu_path(path, sizeof path, "dup-size"));
    size_t max_key = keel_max_key_size(db), max_pair = keel_max_pair_size(db);
    assert_true(max_pair >= max_key + 18); /* the first pair of a key carries its count too */
    char *big = malloc(max_pair + 2);
    memset(big, 'v', max_pair + 1);
    keel_txn *t = begin(db, 0);
    keel_bucket b = dup_bucket(t, "s");
    /* a value as long as the longest key */
    assert_int_equal(keel_put(t, b, tu_val("key"), (keel_val){big, max_key}, 0), 0);
    assert_int_equal(keel_put(t, b, tu_val("k"), (keel_val){big, max_pair - 1}, 0), 0);
    assert_int_equal(keel_put(t, b, tu_val("k"), (keel_val){big, max_pair}, 0), KEEL_BADVALSIZE);
    assert_int_equal(keel_put(t, b, (keel_val){"\0", 1}, (keel_val){big, max_pair - 1}, 0), KEEL_BADVALSIZE);
    assert_int_equal(keel_put(t, b, (keel_val){big, max_key}, (keel_val){big, 18}, 0), 0);
    assert_int_equal(keel_put(t, b, (keel_val){big, max_key + 1}, tu_val("1"), 0), KEEL_BADVALSIZE);
    /* a refused put leaves the txn usable */
    put(t, b, "after", "1");
    keel_val keys[2] = {tu_val("x"), tu_val("y")}, vals[2] = {tu_val("1"), {big, max_pair}};
    assert_int_equal(keel_put_many(t, b, keys, vals, 2, 0), KEEL_BADVALSIZE);
    keel_val v;
    assert_int_equal(keel_get(t, b, tu_val("x"), &v), KEEL_NOTFOUND);
    assert_int_equal(keel_commit(t), 0);
    check_clean(db);
    free(big);
    keel_close(db);
    tu_remove(path);
}

/* One key with many values over many pages, between other keys. */
/* In a read txn (next_dup's cached run): every value of key, "%08ld"
 * from 0 to n - 1, forwards from its first and backwards from its last,
 * and neither run leaves the key. */
static void read_runs(keel_db *db, const char *what, keel_val key, long n)
{
    keel_txn *t = begin(db, KEEL_RDONLY);
    keel_bucket b;
    assert_int_equal(keel_bucket_open(t, "m", 0, &b), 0);
    keel_cursor *c;
    assert_int_equal(keel_cursor_open(t, b, &c), 0);
    keel_val k, v;
    char want[32];
    long i = 0;
    int rc = keel_cursor_seek_key(c, key, &v);
    for (; rc == 0; rc = keel_cursor_next_dup(c, &k, &v), i++) {
        snprintf(want, sizeof want, "%08ld", i);
        if (!val_is(v, want))
            fail_msg("%s: value %ld is %.*s", what, i, (int)v.len, (const char *)v.data);
        if (i > 0)
            assert_true(k.len == key.len && memcmp(k.data, key.data, k.len) == 0);
    }
    assert_int_equal(rc, KEEL_NOTFOUND);
    assert_int_equal(i, n);
    snprintf(want, sizeof want, "%08ld", n - 1);
    assert_int_equal(keel_cursor_seek_pair(c, key, tu_val(want), &k, &v), 0);
    for (i = n - 1; (rc = keel_cursor_prev_dup(c, &k, &v)) == 0;) {
        snprintf(want, sizeof want, "%08ld", --i);
        assert_true(val_is(v, want));
        assert_true(k.len == key.len && memcmp(k.data, key.data, k.len) == 0);
    }
    assert_int_equal(rc, KEEL_NOTFOUND);
    assert_int_equal(i, 0);
    assert_int_equal(keel_cursor_next_dup(c, &k, &v), 0); /* the failed move left the cursor on the first */
    assert_true(val_is(v, "00000001"));
    keel_cursor_close(c);
    keel_abort(t);
}

static void test_many_values(void **state)
{
    (void)state;
    char path[256];
    keel_db *db = open_db(tu_path(path, sizeof path, "dup-many"));
    long n = 20000 * tu_scale();
    keel_txn *t = begin(db, 0);
    keel_bucket b = dup_bucket(t, "m");
    put(t, b, "a", "x");
    put(t, b, "c", "x");
    char vb[32];
    for (long i = 0; i < n; i++) {
        long j = (i * 7919) % n; /* out of order */
        snprintf(vb, sizeof vb, "%08ld", j);
        put(t, b, "b", vb);
    }
    const keel_val zkey = {(const uint8_t *)"z\0y", 3}; /* escaped in its pair keys */
    long nz = 1500;
    for (long i = 0; i < nz; i++) {
        snprintf(vb, sizeof vb, "%08ld", (i * 31) % nz);
        assert_int_equal(keel_put(t, b, zkey, tu_val(vb), 0), 0);
    }
    assert_int_equal(keel_commit(t), 0);
    check_clean(db);
    read_runs(db, "b", tu_val("b"), n);
    read_runs(db, "z", zkey, nz);
    t = begin(db, 0);
    assert_int_equal(keel_bucket_open(t, "m", 0, &b), 0);
    keel_cursor *c;
    assert_int_equal(keel_cursor_open(t, b, &c), 0);
    keel_val k, v;
    uint64_t cnt;
    assert_int_equal(keel_cursor_seek_key(c, tu_val("b"), &v), 0);
    assert_true(val_is(v, "00000000"));
    assert_int_equal(keel_cursor_count(c, &cnt), 0);
    assert_int_equal(cnt, (uint64_t)n);
    snprintf(vb, sizeof vb, "%08ld", n / 2);
    assert_int_equal(keel_cursor_seek_pair(c, tu_val("b"), tu_val(vb), &k, &v), 0);
    assert_true(val_is(v, vb));
    assert_int_equal(keel_cursor_next_key(c, &k, &v), 0);
    assert_true(val_is(k, "c"));
    assert_int_equal(keel_cursor_prev_key(c, &k, &v), 0);
    snprintf(vb, sizeof vb, "%08ld", n - 1);
    assert_true(val_is(k, "b") && val_is(v, vb));
    keel_cursor_close(c);
    for (long i = 0; i < n; i += 2) {
        snprintf(vb, sizeof vb, "%08ld", i);
        assert_int_equal(keel_del_value(t, b, tu_val("b"), tu_val(vb)), 0);
    }
    assert_int_equal(keel_cursor_open(t, b, &c), 0);
    assert_int_equal(keel_cursor_seek_key(c, tu_val("b"), &v), 0);
    assert_true(val_is(v, "00000001"));
    assert_int_equal(keel_cursor_count(c, &cnt), 0);
    assert_int_equal(cnt, (uint64_t)(n / 2));
    keel_cursor_close(c);
    assert_int_equal(keel_commit(t), 0);
    check_clean(db);
    t = begin(db, 0);
    assert_int_equal(keel_bucket_open(t, "m", 0, &b), 0);
    assert_int_equal(keel_del(t, b, tu_val("b")), 0);
    keel_stat st;
    assert_int_equal(keel_bucket_stat(t, b, &st), 0);
    assert_int_equal(st.entries, 2 + nz);
    assert_int_equal(keel_commit(t), 0);
    check_clean(db);
    keel_close(db);
    tu_remove(path);
}

/* ---- the multimap model ---------------------------------------------------- */
struct pair {
    char k[8], v[8];
    uint8_t kl, vl;
};
static int pair_cmp(const void *a, const void *b)
{
    const struct pair *x = a, *y = b;
    size_t m = x->kl < y->kl ? x->kl : y->kl;
    int c = memcmp(x->k, y->k, m);
    if (c || x->kl != y->kl)
        return c ? c : (x->kl < y->kl ? -1 : 1);
    m = x->vl < y->vl ? x->vl : y->vl;
    c = memcmp(x->v, y->v, m);
    return c ? c : (x->vl < y->vl ? -1 : x->vl > y->vl);
}
struct model {
    struct pair *p;
    size_t n, cap;
};
static long model_find(const struct model *m, const struct pair *q)
{
    for (size_t i = 0; i < m->n; i++)
        if (pair_cmp(&m->p[i], q) == 0)
            return (long)i;
    return -1;
}
static bool same_key(const struct pair *a, const struct pair *b)
{
    return a->kl == b->kl && memcmp(a->k, b->k, a->kl) == 0;
}

static uint64_t rng;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}
static void rand_bytes(char *out, uint8_t *len, int maxlen)
{
    *len = (uint8_t)(1 + rnd() % (unsigned)maxlen);
    for (int i = 0; i < *len; i++)
        out[i] = "ab\0"[rnd() % 3];
}

static void model_compare(keel_txn *t, keel_bucket b, struct model *m)
{
    qsort(m->p, m->n, sizeof *m->p, pair_cmp);
    keel_cursor *c;
    assert_int_equal(keel_cursor_open(t, b, &c), 0);
    keel_val k, v;
    size_t i = 0;
    for (int rc = keel_cursor_first(c, &k, &v); rc == 0; rc = keel_cursor_next(c, &k, &v), i++) {
        assert_true(i < m->n);
        assert_int_equal(k.len, m->p[i].kl);
        assert_memory_equal(k.data, m->p[i].k, k.len);
        assert_int_equal(v.len, m->p[i].vl);
        assert_memory_equal(v.data, m->p[i].v, v.len);
        if (i == 0 || !same_key(&m->p[i - 1], &m->p[i])) { /* the first of its key: count */
            uint64_t cnt, want = 0;
            for (size_t j = i; j < m->n && same_key(&m->p[i], &m->p[j]); j++)
                want++;
            assert_int_equal(keel_cursor_count(c, &cnt), 0);
            assert_int_equal(cnt, want);
        }
    }
    assert_int_equal(i, m->n);
    /* and backwards, key by key: each key's last value */
    i = m->n;
    for (int rc = keel_cursor_last(c, &k, &v); rc == 0; rc = keel_cursor_prev_key(c, &k, &v)) {
        assert_true(i > 0);
        size_t last = i - 1;
        assert_int_equal(v.len, m->p[last].vl);
        assert_memory_equal(v.data, m->p[last].v, v.len);
        while (i > 0 && same_key(&m->p[i - 1], &m->p[last]))
            i--;
    }
    assert_int_equal(i, 0);
    keel_cursor_close(c);
}

static uint64_t count_of(keel_txn *t, keel_bucket b, const char *key)
{
    keel_cursor *c;
    keel_val v;
    uint64_t n = 0;
    assert_int_equal(keel_cursor_open(t, b, &c), 0);
    int rc = keel_cursor_seek_key(c, tu_val(key), &v);
    if (rc == 0)
        assert_int_equal(keel_cursor_count(c, &n), 0);
    else
        assert_int_equal(rc, KEEL_NOTFOUND);
    keel_cursor_close(c);
    return n;
}

static void count_problem(void *ctx, const char *msg)
{
    if (strstr(msg, "counts 7 pairs, the tree holds 3"))
        ++*(int *)ctx;
}

/* Counts stored in a key's first pair (format.h, TREE_F_COUNTED): what a
 * write txn owes them (dupcount.c), in children too, a first pair that
 * changes, a bucket dropped while counts are owed, a txn that owes more
 * keys than DUPCOUNT_FLUSH_KEYS, and a wrong count keel_check finds. */
static void test_counts_stored(void **state)
{
    (void)state;
    char path[256], k[32];
    keel_db *db = open_db(tu_path(path, sizeof path, "dup-counts"));
    keel_txn *t = begin(db, 0), *child;
    keel_bucket b = dup_bucket(t, "c");
    put(t, b, "k", "m");
    put(t, b, "k", "z");
    put(t, b, "k", "a"); /* a new first pair: the count moves to it */
    put(t, b, "k", "b");
    assert_int_equal(count_of(t, b, "k"), 4);
    assert_int_equal(keel_del_value(t, b, tu_val("k"), tu_val("a")), 0); /* the first pair goes */
    assert_int_equal(count_of(t, b, "k"), 3);
    assert_int_equal(keel_begin_nested(t, &child), 0);
    put(child, b, "k", "c");
    put(child, b, "k", "0"); /* first in the child */
    assert_int_equal(count_of(child, b, "k"), 5);
    keel_abort(child);
    assert_int_equal(count_of(t, b, "k"), 3);
    assert_int_equal(keel_begin_nested(t, &child), 0);
    put(child, b, "k", "c");
    assert_int_equal(count_of(child, b, "k"), 4);
    assert_int_equal(keel_commit(child), 0);
    assert_int_equal(count_of(t, b, "k"), 4);
    assert_int_equal(keel_commit(t), 0);
    t = begin(db, KEEL_RDONLY);
    assert_int_equal(keel_bucket_open(t, "c", 0, &b), 0);
    assert_int_equal(count_of(t, b, "k"), 4);
    keel_abort(t);
    check_clean(db);

    /* a bucket dropped while counts are owed to it, in the txn and in a child */
    t = begin(db, 0);
    assert_int_equal(keel_bucket_open(t, "c", 0, &b), 0);
    put(t, b, "k", "d");
    assert_int_equal(keel_begin_nested(t, &child), 0);
    put(child, b, "k", "e");
    assert_int_equal(keel_bucket_drop(child, b), 0);
    assert_int_equal(keel_commit(child), 0);
    b = dup_bucket(t, "c");
    put(t, b, "k", "x");
    put(t, b, "k", "y");
    assert_int_equal(keel_commit(t), 0);
    check_clean(db);

    /* more keys owed than the table keeps: written in before the commit */
    long nkeys = DUPCOUNT_FLUSH_KEYS + 100;
    t = begin(db, 0);
    assert_int_equal(keel_bucket_open(t, "c", 0, &b), 0);
    for (int round = 0; round < 3; round++)
        for (long i = 0; i < nkeys; i++) {
            snprintf(k, sizeof k, "many%06ld", i);
            put(t, b, k, round == 0 ? "v1" : round == 1 ? "v2" : "v0");
        }
    assert_int_equal(count_of(t, b, "many000007"), 3);
    assert_int_equal(keel_commit(t), 0);
    check_clean(db);
    t = begin(db, KEEL_RDONLY);
    assert_int_equal(keel_bucket_open(t, "c", 0, &b), 0);
    assert_int_equal(count_of(t, b, "many012345"), 3);
    assert_int_equal(count_of(t, b, "k"), 2);
    keel_abort(t);

    /* a wrong count written into a first pair: keel_check names it */
    t = begin(db, 0);
    assert_int_equal(keel_bucket_open(t, "c", 0, &b), 0);
    put(t, b, "w", "1");
    put(t, b, "w", "2");
    put(t, b, "w", "3");
    assert_int_equal(keel_commit(t), 0);
    t = begin(db, 0);
    assert_int_equal(keel_bucket_open(t, "c", 0, &b), 0);
    struct tree_desc *td;
    assert_int_equal(bucket_tree(t, b, &td), 0);
    struct bt_path bp;
    uint64_t stored, wrong = 7;
    assert_int_equal(cursor_find_carrier(t, td, (const uint8_t *)"w\0\0", 3, &bp, &stored), 0);
    assert_int_equal(stored, 3);
    assert_int_equal(bt_update_value(t, td, &bp, &wrong, sizeof wrong), 0);
    bucket_mark_dirty(t, b);
    assert_int_equal(keel_commit(t), 0);
    uint64_t problems = 0;
    int named = 0;
    assert_int_equal(keel_check(db, count_problem, &named, &problems), 0);
    assert_int_equal(problems, 1);
    assert_int_equal(named, 1);
    keel_close(db);
    tu_remove(path);
}

static void test_model(void **state)
{
    (void)state;
    char path[256];
    keel_db *db = open_db(tu_path(path, sizeof path, "dup-model"));
    rng = tu_seed(0x9E3779B97F4A7C15ull) | 1;
    struct model m = {0}, saved = {0};
    m.cap = saved.cap = 4096;
    m.p = calloc(m.cap, sizeof *m.p);
    saved.p = calloc(saved.cap, sizeof *saved.p);
    long rounds = 40 * tu_scale();
    for (long r = 0; r < rounds; r++) {
        keel_txn *t = begin(db, 0);
        keel_bucket b = dup_bucket(t, "mm");
        memcpy(saved.p, m.p, m.n * sizeof *m.p);
        saved.n = m.n;
        for (int op = 0; op < 200; op++) {
            struct pair q;
            rand_bytes(q.k, &q.kl, 3);
            rand_bytes(q.v, &q.vl, 3);
            keel_val k = {q.k, q.kl}, v = {q.v, q.vl};
            long at = model_find(&m, &q);
            unsigned what = rnd() % 10;
            if (what < 5) {
                bool nodup = rnd() % 2;
                int rc = keel_put(t, b, k, v, nodup ? KEEL_NODUPDATA : 0);
                assert_int_equal(rc, at >= 0 && nodup ? KEEL_EXISTS : 0);
                if (at < 0 && m.n < m.cap)
                    m.p[m.n++] = q;
                else if (at < 0)
                    assert_int_equal(keel_del_value(t, b, k, v), 0);
            } else if (what < 8) {
                assert_int_equal(keel_del_value(t, b, k, v), at >= 0 ? 0 : KEEL_NOTFOUND);
                if (at >= 0)
                    m.p[at] = m.p[--m.n];
            } else if (what < 9) {
                size_t before = m.n;
                for (size_t i = 0; i < m.n;)
                    if (same_key(&m.p[i], &q))
                        m.p[i] = m.p[--m.n];
                    else
                        i++;
                assert_int_equal(keel_del(t, b, k), m.n < before ? 0 : KEEL_NOTFOUND);
            } else {
                keel_val got;
                int rc = keel_get(t, b, k, &got);
                const struct pair *first = NULL;
                for (size_t i = 0; i < m.n; i++)
                    if (same_key(&m.p[i], &q) && (!first || pair_cmp(&m.p[i], first) < 0))
                        first = &m.p[i];
                assert_int_equal(rc, first ? 0 : KEEL_NOTFOUND);
                if (first) {
                    assert_int_equal(got.len, first->vl);
                    assert_memory_equal(got.data, first->v, got.len);
                }
            }
        }
        model_compare(t, b, &m);
        if (rnd() % 4 == 0) {
            keel_abort(t);
            memcpy(m.p, saved.p, saved.n * sizeof *m.p);
            m.n = saved.n;
        } else {
            assert_int_equal(keel_commit(t), 0);
        }
        t = begin(db, KEEL_RDONLY);
        assert_int_equal(keel_bucket_open(t, "mm", 0, &b), 0);
        model_compare(t, b, &m);
        keel_abort(t);
    }
    check_clean(db);
    free(m.p);
    free(saved.p);
    keel_close(db);
    tu_remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_del), cmocka_unit_test(test_kinds),       cmocka_unit_test(test_plain_moves),
        cmocka_unit_test(test_cursor_moves), cmocka_unit_test(test_cursor_del), cmocka_unit_test(test_moves_after_del),
        cmocka_unit_test(test_zero_bytes),
        cmocka_unit_test(test_ttl),          cmocka_unit_test(test_sizes),      cmocka_unit_test(test_many_values),
        cmocka_unit_test(test_counts_stored), cmocka_unit_test(test_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
