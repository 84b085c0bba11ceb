/*
 * test_ttl.c — per-key expiry (TTL) through the public API, with an injected
 * clock (keel_options.clock reads `clock_now`, which the tests move):
 *
 *   boundary      expiry == now is absent, expiry - 1 present: get, ttl,
 *                 expiry_at and every cursor move (first/last/next/prev/
 *                 seek/current) over runs of expired keys that span pages,
 *                 in read and in write txns
 *   all_expired   a bucket whose every key expired: cursors find nothing
 *   cursor_write  a write txn's cursor skips keys the txn itself expires
 *   ttl_values    keel_ttl / keel_expiry_at: NOTFOUND, -1 / 0, exact values
 *   snapshot      a txn reads the clock once, at begin: its view and the
 *                 deadlines it computes stay fixed while the clock moves
 *   reopen        expiries survive close and reopen
 *   other_process a forked child (own handle, own clock) sees the expiries
 *                 and purges; the parent sees the purge
 *   interactions  put / KEEPTTL / NOOVERWRITE / incr / cas / persist /
 *                 expire / expire_at / del / cursor_del with live, expired
 *                 and absent keys; big keys and overflow values
 *   drop_bucket   dropping a bucket (or emptying the default one) removes
 *                 its expiry entries
 *   purge_order   purge takes expired keys only, oldest expiry first
 *   auto_purge    write commits purge up to purge_per_commit; < 0 disables
 *   space_reuse   put + expire + purge cycles keep the file bounded
 *   model         random ops against an in-memory model (KEEL_SEED,
 *                 KEEL_TEST_SCALE); once more with a tiny max_dirty
 *   log_abort     the expiry log: an abort after buffered (and early
 *                 applied) changes leaves nothing; committed, both agree
 *   log_purge_same_txn  a purge sees the txn's own expiry changes
 *   log_order     the expiry tree's keys against an independent sort
 *   log_commit_fails    a commit failing at each allocation leaves the
 *                 last commit
 *
 * keel_check() runs after every phase and must report no problem.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/wait.h>

#include "internal.h" /* the model reads bucket ids (purge order across buckets) */
#include "testutil.h"

#define T0 ((int64_t)1700000000000) /* ms: a realistic "now" */

static int64_t clock_now = T0;
static unsigned long clock_calls;

static int64_t test_clock(void *ctx)
{
    clock_calls++;
    return *(const int64_t *)ctx;
}

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

static uint64_t open_max_dirty; /* 0 = the default; small values make the expiry log apply early */

static keel_db *open_db(int32_t purge_per_commit, unsigned flags)
{
    keel_options o = {.clock = test_clock, .clock_ctx = &clock_now, .purge_per_commit = purge_per_commit,
                      .flags = flags, .max_dirty = open_max_dirty};
    keel_db *db = NULL;
    assert_int_equal(keel_open(path, &o, &db), 0);
    assert_non_null(db);
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

static keel_bucket bucket(keel_txn *t, const char *name)
{
    keel_bucket b = 12345;
    assert_int_equal(keel_bucket_open(t, name, KEEL_CREATE, &b), 0);
    return b;
}

/* v NULL: the key must be absent */
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

/* want_rc != 0: both keel_ttl and keel_expiry_at answer it; else the
 * absolute expiry must be `at` (0 = none) and the remaining time follow. */
static void expect_exp(keel_txn *t, keel_bucket b, const char *k, int want_rc, int64_t at, int64_t now)
{
    int64_t rem = 12345, abs_at = 12345;
    assert_int_equal(keel_ttl(t, b, tu_val(k), &rem), want_rc);
    assert_int_equal(keel_expiry_at(t, b, tu_val(k), &abs_at), want_rc);
    if (want_rc)
        return;
    assert_int_equal(abs_at, at);
    assert_int_equal(rem, at ? at - now : -1);
}

static void put_ttl(keel_txn *t, keel_bucket b, const char *k, const char *v, int64_t ttl)
{
    assert_int_equal(keel_put_ttl(t, b, tu_val(k), tu_val(v), ttl, 0), 0);
}

static void put(keel_txn *t, keel_bucket b, const char *k, const char *v, unsigned flags)
{
    assert_int_equal(keel_put(t, b, tu_val(k), tu_val(v), flags), 0);
}

static uint64_t phys_entries(keel_db *db, keel_bucket b)
{
    keel_txn *t = rbegin(db);
    keel_stat st;
    assert_int_equal(keel_bucket_stat(t, b, &st), 0);
    keel_abort(t);
    return st.entries;
}

/* Is the key still in the file?  A txn begun with the clock at 1 sees every
 * entry that is there, expired or not. */
static bool phys_has(keel_db *db, keel_bucket b, const char *k)
{
    int64_t saved = clock_now;
    clock_now = 1;
    keel_txn *t = rbegin(db);
    clock_now = saved;
    keel_val v;
    int rc = keel_get(t, b, tu_val(k), &v);
    keel_abort(t);
    assert_true(rc == 0 || rc == KEEL_NOTFOUND);
    return rc == 0;
}

static int count_bucket(const char *name, void *ctx)
{
    (void)name;
    ++*(size_t *)ctx;
    return 0;
}

static size_t purge(keel_txn *t, size_t max)
{
    size_t n = 9999;
    assert_int_equal(keel_purge(t, max, &n), 0);
    return n;
}

static int setup(void **state)
{
    (void)state;
    clock_now = T0;
    path[0] = 0;
    open_max_dirty = 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (path[0])
        tu_remove(path);
    clock_now = T0;
    open_max_dirty = 0;
    os_reset();
    return 0;
}

/* ---- boundary: every read path ---------------------------------------------- */

#define NB 600
static int64_t bexp(int i)
{
    if ((i / 50) % 3 == 0 || i >= NB - 30) /* runs of 50 (several leaves), first and last keys */
        return T0 + 100;
    if (i % 7 == 0)
        return T0 + 101 + i % 13;
    if (i % 3 == 0)
        return T0 + 200;
    return 0;
}

static void bkey(char *buf, int i) { snprintf(buf, 16, "k%04d", i); }

static void bval(char *buf, int i)
{
    memset(buf, 'v', 150);
    snprintf(buf, 16, "val-%04d", i);
    buf[8] = '.';
    buf[150] = 0;
}

static bool bvisible(int i, int64_t now) { return bexp(i) == 0 || bexp(i) > now; }

static int key_index(keel_val k)
{
    assert_int_equal(k.len, 5);
    char buf[8];
    memcpy(buf, k.data, 5);
    buf[5] = 0;
    assert_int_equal(buf[0], 'k');
    return atoi(buf + 1);
}

static void check_entry(keel_val k, keel_val v, int want)
{
    assert_int_equal(key_index(k), want);
    char vb[160];
    bval(vb, want);
    assert_int_equal(v.len, 150);
    assert_memory_equal(v.data, vb, 150);
}

/* the visible index at or after i (dir > 0) or at or before it; -1 if none */
static int bnext_visible(int i, int dir, int64_t now)
{
    for (; i >= 0 && i < NB; i += dir)
        if (bvisible(i, now))
            return i;
    return -1;
}

static void verify_boundary_view(keel_txn *t, keel_bucket b, int64_t now)
{
    char k[16];
    /* point reads */
    for (int i = 0; i < NB; i++) {
        bkey(k, i);
        if (bvisible(i, now)) {
            char vb[160];
            bval(vb, i);
            expect(t, b, k, vb);
            expect_exp(t, b, k, 0, bexp(i), now);
        } else {
            expect(t, b, k, NULL);
            expect_exp(t, b, k, KEEL_NOTFOUND, 0, now);
        }
    }
    keel_cursor *c;
    assert_int_equal(keel_cursor_open(t, b, &c), 0);
    keel_val kv, vv;
    /* forward */
    int want = bnext_visible(0, 1, now), last = -1;
    int rc = keel_cursor_first(c, &kv, &vv);
    while (want >= 0) {
        assert_int_equal(rc, 0);
        check_entry(kv, vv, want);
        last = want;
        want = bnext_visible(want + 1, 1, now);
        rc = keel_cursor_next(c, &kv, &vv);
    }
    assert_int_equal(rc, KEEL_NOTFOUND);
    if (last >= 0) { /* past the end the cursor stays on the last entry */
        assert_int_equal(keel_cursor_current(c, &kv, &vv), 0);
        check_entry(kv, vv, last);
        assert_int_equal(keel_cursor_next(c, &kv, &vv), KEEL_NOTFOUND);
        int p = bnext_visible(last - 1, -1, now);
        rc = keel_cursor_prev(c, &kv, &vv);
        if (p >= 0) {
            assert_int_equal(rc, 0);
            check_entry(kv, vv, p);
        } else {
            assert_int_equal(rc, KEEL_NOTFOUND);
        }
    }
    /* backward */
    want = bnext_visible(NB - 1, -1, now);
    int first = -1;
    rc = keel_cursor_last(c, &kv, &vv);
    while (want >= 0) {
        assert_int_equal(rc, 0);
        check_entry(kv, vv, want);
        first = want;
        want = bnext_visible(want - 1, -1, now);
        rc = keel_cursor_prev(c, &kv, &vv);
    }
    assert_int_equal(rc, KEEL_NOTFOUND);
    if (first >= 0) {
        assert_int_equal(keel_cursor_current(c, &kv, &vv), 0);
        check_entry(kv, vv, first);
    }
    /* seeks: onto every key, between keys, before and after all */
    for (int i = 0; i < NB; i++) {
        for (int between = 0; between < 2; between++) {
            char target[16];
            snprintf(target, sizeof target, between ? "k%04d~" : "k%04d", i);
            int at = bnext_visible(between ? i + 1 : i, 1, now);
            rc = keel_cursor_seek(c, tu_val(target), &kv, &vv);
            if (at < 0) {
                assert_int_equal(rc, KEEL_NOTFOUND);
                continue;
            }
            assert_int_equal(rc, 0);
            check_entry(kv, vv, at);
            if (i % 3)
                continue; /* steps from a third of the seeks */
            int nx = bnext_visible(at + 1, 1, now);
            rc = keel_cursor_next(c, &kv, &vv);
            if (nx < 0) {
                assert_int_equal(rc, KEEL_NOTFOUND);
            } else {
                assert_int_equal(rc, 0);
                check_entry(kv, vv, nx);
            }
            assert_int_equal(keel_cursor_seek(c, tu_val(target), &kv, &vv), 0);
            int pv = bnext_visible(at - 1, -1, now);
            rc = keel_cursor_prev(c, &kv, &vv);
            if (pv < 0) {
                assert_int_equal(rc, KEEL_NOTFOUND);
            } else {
                assert_int_equal(rc, 0);
                check_entry(kv, vv, pv);
            }
        }
    }
    rc = keel_cursor_seek(c, tu_val("a"), &kv, &vv);
    want = bnext_visible(0, 1, now);
    if (want < 0) {
        assert_int_equal(rc, KEEL_NOTFOUND);
    } else {
        assert_int_equal(rc, 0);
        check_entry(kv, vv, want);
    }
    assert_int_equal(keel_cursor_seek(c, tu_val("z"), &kv, &vv), KEEL_NOTFOUND);
    keel_cursor_close(c);
    /* a fresh cursor: next/prev without a position start at first/last */
    assert_int_equal(keel_cursor_open(t, b, &c), 0);
    rc = keel_cursor_next(c, &kv, &vv);
    want = bnext_visible(0, 1, now);
    if (want < 0) {
        assert_int_equal(rc, KEEL_NOTFOUND);
    } else {
        assert_int_equal(rc, 0);
        check_entry(kv, vv, want);
    }
    keel_cursor_close(c);
    assert_int_equal(keel_cursor_open(t, b, &c), 0);
    rc = keel_cursor_prev(c, &kv, &vv);
    want = bnext_visible(NB - 1, -1, now);
    if (want < 0) {
        assert_int_equal(rc, KEEL_NOTFOUND);
    } else {
        assert_int_equal(rc, 0);
        check_entry(kv, vv, want);
    }
    keel_cursor_close(c);
}

static void test_boundary(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ttl-boundary");
    keel_db *db = open_db(-1, KEEL_NOSYNC); /* no auto purge: expired keys stay in the file */
    keel_txn *t = wbegin(db);
    keel_bucket b = bucket(t, "b");
    char k[16], v[160];
    for (int i = 0; i < NB; i++) {
        bkey(k, i);
        bval(v, i);
        if (bexp(i))
            put_ttl(t, b, k, v, bexp(i) - T0);
        else
            put(t, b, k, v, 0);
    }
    verify_boundary_view(t, b, T0);
    assert_int_equal(keel_commit(t), 0);
    assert_clean(db);
    keel_stat st;
    assert_int_equal(keel_db_stat(db, &st), 0);
    assert_true(st.depth >= 2); /* the runs of expired keys span leaves */

    static const int64_t times[] = {0, 99, 100, 101, 105, 107, 113, 114, 199, 200, 201, 100000};
    for (size_t ti = 0; ti < sizeof times / sizeof times[0]; ti++) {
        clock_now = T0 + times[ti];
        t = rbegin(db);
        verify_boundary_view(t, b, clock_now);
        keel_abort(t);
        if (ti % 3 == 2 || times[ti] == 100) { /* write txns walk by re-seeking: the same view */
            t = wbegin(db);
            verify_boundary_view(t, b, clock_now);
            keel_abort(t);
        }
    }
    /* nothing was purged: every entry is still in the file */
    assert_int_equal(phys_entries(db, b), NB);
    assert_clean(db);
    keel_close(db);
}

/* A bucket whose every key expired: nothing to find, from any direction. */
/* keel_cursor_expiry gives what keel_expiry_at gives, for the entry the
 * cursor is on, in read and write txns; expired entries are not there. */
static void test_cursor_expiry(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ttl-curexp");
    keel_db *db = open_db(-1, KEEL_NOSYNC);
    keel_txn *t = wbegin(db);
    keel_bucket b = bucket(t, "ce");
    char k[32];
    for (int i = 0; i < 500; i++) {
        snprintf(k, sizeof k, "key%05d", i);
        if (i % 3 == 0)
            put(t, b, k, "plain", 0);
        else
            put_ttl(t, b, k, "leased", i % 3 == 1 ? 5 : 100000 + i);
    }
    assert_int_equal(keel_commit(t), 0);
    clock_now = T0 + 10; /* the i % 3 == 1 keys have expired */
    for (int w = 0; w < 2; w++) {
        t = w ? wbegin(db) : rbegin(db);
        keel_cursor *c;
        keel_val kv, vv;
        assert_int_equal(keel_cursor_open(t, b, &c), 0);
        int64_t at;
        assert_int_equal(keel_cursor_expiry(c, &at), KEEL_BADCURSOR); /* not positioned */
        assert_int_equal(keel_cursor_expiry(c, NULL), KEEL_BADARG);
        int seen = 0;
        for (int rc = keel_cursor_first(c, &kv, &vv); rc == 0; rc = keel_cursor_next(c, &kv, &vv)) {
            int i = atoi((const char *)kv.data + 3);
            assert_true(i % 3 != 1);
            int64_t want;
            assert_int_equal(keel_expiry_at(t, b, kv, &want), 0);
            assert_int_equal(keel_cursor_expiry(c, &at), 0);
            assert_int_equal(at, want);
            assert_int_equal(at, i % 3 == 0 ? 0 : T0 + 100000 + i);
            seen++;
        }
        assert_int_equal(seen, 333); /* 500 less the 167 with i % 3 == 1 */
        keel_cursor_close(c);
        keel_abort(t);
    }
    keel_close(db);
}

static void test_all_expired(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ttl-allexp");
    keel_db *db = open_db(-1, KEEL_NOSYNC);
    keel_txn *t = wbegin(db);
    keel_bucket b = bucket(t, "all");
    char k[32];
    for (int i = 0; i < 300; i++) {
        snprintf(k, sizeof k, "key%05d", i);
        put_ttl(t, b, k, "0123456789012345678901234567890123456789", 10 + i % 3);
    }
    assert_int_equal(keel_commit(t), 0);
    clock_now = T0 + 12;
    for (int w = 0; w < 2; w++) {
        t = w ? wbegin(db) : rbegin(db);
        keel_cursor *c;
        keel_val kv, vv;
        assert_int_equal(keel_cursor_open(t, b, &c), 0);
        assert_int_equal(keel_cursor_first(c, &kv, &vv), KEEL_NOTFOUND);
        assert_int_equal(keel_cursor_last(c, &kv, &vv), KEEL_NOTFOUND);
        assert_int_equal(keel_cursor_next(c, &kv, &vv), KEEL_NOTFOUND);
        assert_int_equal(keel_cursor_prev(c, &kv, &vv), KEEL_NOTFOUND);
        assert_int_equal(keel_cursor_seek(c, tu_val("key00100"), &kv, &vv), KEEL_NOTFOUND);
        assert_int_equal(keel_cursor_seek(c, tu_val("a"), &kv, &vv), KEEL_NOTFOUND);
        assert_int_equal(keel_cursor_current(c, &kv, &vv), KEEL_BADCURSOR);
        keel_cursor_close(c);
        expect(t, b, "key00000", NULL);
        keel_abort(t);
    }
    /* one live key in the middle is the only one found */
    t = wbegin(db);
    put(t, b, "key00150", "live", 0);
    assert_int_equal(keel_commit(t), 0); /* auto purge is off */
    t = rbegin(db);
    keel_cursor *c;
    keel_val kv, vv;
    assert_int_equal(keel_cursor_open(t, b, &c), 0);
    assert_int_equal(keel_cursor_first(c, &kv, &vv), 0);
    assert_int_equal(kv.len, 8);
    assert_memory_equal(kv.data, "key00150", 8);
    assert_int_equal(keel_cursor_next(c, &kv, &vv), KEEL_NOTFOUND);
    assert_int_equal(keel_cursor_prev(c, &kv, &vv), KEEL_NOTFOUND);
    assert_int_equal(keel_cursor_last(c, &kv, &vv), 0);
    assert_memory_equal(kv.data, "key00150", 8);
    assert_int_equal(keel_cursor_seek(c, tu_val("key00000"), &kv, &vv), 0);
    assert_memory_equal(kv.data, "key00150", 8);
    assert_int_equal(keel_cursor_seek(c, tu_val("key00151"), &kv, &vv), KEEL_NOTFOUND);
    keel_cursor_close(c);
    keel_abort(t);
    assert_clean(db);
    keel_close(db);
}

/* A write txn's cursor and the txn's own expiry changes. */
static void test_cursor_write(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ttl-curw");
    keel_db *db = open_db(-1, KEEL_NOSYNC);
    keel_txn *t = wbegin(db);
    char k[16];
    for (int i = 0; i < 10; i++) {
        snprintf(k, sizeof k, "c%d", i);
        put(t, 0, k, k, 0);
    }
    assert_int_equal(keel_commit(t), 0);

    t = wbegin(db);
    keel_cursor *c;
    keel_val kv, vv;
    assert_int_equal(keel_cursor_open(t, 0, &c), 0);
    assert_int_equal(keel_cursor_seek(c, tu_val("c3"), &kv, &vv), 0);
    /* expire c4 and c5 at once (a time not after now), c6 later */
    assert_int_equal(keel_expire_at(t, 0, tu_val("c4"), T0), 0);
    assert_int_equal(keel_expire_at(t, 0, tu_val("c5"), T0 - 5000), 0);
    assert_int_equal(keel_expire(t, 0, tu_val("c6"), 1), 0);
    expect(t, 0, "c4", NULL);
    expect(t, 0, "c5", NULL);
    expect(t, 0, "c6", "c6");
    assert_int_equal(keel_cursor_next(c, &kv, &vv), 0);
    assert_int_equal(kv.len, 2);
    assert_memory_equal(kv.data, "c6", 2);
    assert_int_equal(keel_cursor_prev(c, &kv, &vv), 0);
    assert_memory_equal(kv.data, "c3", 2);
    /* delete c3 under the cursor: next goes over the expired c4, c5 */
    assert_int_equal(keel_cursor_del(c), 0);
    assert_int_equal(keel_cursor_next(c, &kv, &vv), 0);
    assert_memory_equal(kv.data, "c6", 2);
    /* expire c0 and c9: first/last skip them */
    assert_int_equal(keel_expire_at(t, 0, tu_val("c0"), T0 - 1), 0);
    assert_int_equal(keel_expire_at(t, 0, tu_val("c9"), T0 - 2), 0);
    assert_int_equal(keel_cursor_first(c, &kv, &vv), 0);
    assert_memory_equal(kv.data, "c1", 2);
    assert_int_equal(keel_cursor_last(c, &kv, &vv), 0);
    assert_memory_equal(kv.data, "c8", 2);
    assert_int_equal(keel_cursor_seek(c, tu_val("c9"), &kv, &vv), KEEL_NOTFOUND);
    /* a cursor on c6 while c6 gets deleted: it sits after c6 */
    assert_int_equal(keel_cursor_seek(c, tu_val("c6"), &kv, &vv), 0);
    assert_int_equal(keel_del(t, 0, tu_val("c6")), 0);
    assert_int_equal(keel_cursor_next(c, &kv, &vv), 0);
    assert_memory_equal(kv.data, "c7", 2);
    assert_int_equal(keel_cursor_prev(c, &kv, &vv), 0);
    assert_memory_equal(kv.data, "c2", 2);
    /* the entry under the cursor expires: current and cursor_del see it absent,
     * next and prev step off it */
    assert_int_equal(keel_cursor_seek(c, tu_val("c7"), &kv, &vv), 0);
    assert_int_equal(keel_expire_at(t, 0, tu_val("c7"), T0 - 3), 0);
    assert_int_equal(keel_cursor_current(c, &kv, &vv), KEEL_NOTFOUND);
    assert_int_equal(keel_cursor_del(c), KEEL_NOTFOUND);
    assert_int_equal(keel_cursor_next(c, &kv, &vv), 0);
    assert_memory_equal(kv.data, "c8", 2);
    assert_int_equal(keel_cursor_prev(c, &kv, &vv), 0);
    assert_memory_equal(kv.data, "c2", 2);
    assert_int_equal(keel_persist(t, 0, tu_val("c7")), KEEL_NOTFOUND);
    assert_int_equal(keel_put(t, 0, tu_val("c7"), tu_val("c7"), 0), 0); /* back, without expiry */
    assert_int_equal(keel_cursor_next(c, &kv, &vv), 0);
    assert_memory_equal(kv.data, "c7", 2);
    assert_int_equal(keel_cursor_current(c, &kv, &vv), 0);
    assert_memory_equal(kv.data, "c7", 2);
    keel_cursor_close(c);
    /* the expired keys are still there: a delete of one answers NOTFOUND and changes nothing */
    assert_int_equal(keel_del(t, 0, tu_val("c4")), KEEL_NOTFOUND);
    assert_int_equal(keel_commit(t), 0);
    assert_clean(db);
    assert_true(phys_has(db, 0, "c4"));
    assert_true(phys_has(db, 0, "c5"));
    assert_true(phys_has(db, 0, "c0"));
    assert_false(phys_has(db, 0, "c3"));
    t = wbegin(db);
    assert_int_equal(purge(t, 100), 4); /* c0, c4, c5, c9 */
    assert_int_equal(keel_commit(t), 0);
    clock_now = T0 + 1; /* c6's expiry would have come now; it was deleted */
    t = wbegin(db);
    assert_int_equal(purge(t, 100), 0);
    keel_abort(t);
    assert_int_equal(phys_entries(db, 0), 4); /* c1 c2 c7 c8 */
    assert_clean(db);
    keel_close(db);
}

/* ---- keel_ttl and keel_expiry_at ------------------------------------------------ */

static void test_ttl_values(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ttl-values");
    keel_db *db = open_db(0, KEEL_NOSYNC);
    keel_txn *t = wbegin(db);
    put(t, 0, "plain", "p", 0);
    put_ttl(t, 0, "one", "1", 1);
    put_ttl(t, 0, "hour", "h", 3600 * 1000);
    put_ttl(t, 0, "far", "f", (int64_t)1 << 50);
    expect_exp(t, 0, "absent", KEEL_NOTFOUND, 0, T0);
    expect_exp(t, 0, "plain", 0, 0, T0);
    expect_exp(t, 0, "one", 0, T0 + 1, T0);
    expect_exp(t, 0, "hour", 0, T0 + 3600000, T0);
    expect_exp(t, 0, "far", 0, T0 + ((int64_t)1 << 50), T0);
    assert_int_equal(keel_commit(t), 0);
    for (int64_t d = 0; d <= 3600000; d += d < 5 ? 1 : 1234567) {
        clock_now = T0 + d;
        t = rbegin(db);
        expect_exp(t, 0, "absent", KEEL_NOTFOUND, 0, clock_now);
        expect_exp(t, 0, "plain", 0, 0, clock_now);
        expect_exp(t, 0, "one", d < 1 ? 0 : KEEL_NOTFOUND, T0 + 1, clock_now);
        expect_exp(t, 0, "hour", d < 3600000 ? 0 : KEEL_NOTFOUND, T0 + 3600000, clock_now);
        expect_exp(t, 0, "far", 0, T0 + ((int64_t)1 << 50), clock_now);
        keel_abort(t);
    }
    clock_now = T0 + 3599999;
    t = rbegin(db);
    expect_exp(t, 0, "hour", 0, T0 + 3600000, clock_now); /* 1 ms left */
    keel_abort(t);
    clock_now = T0 + 3600000;
    t = rbegin(db);
    expect_exp(t, 0, "hour", KEEL_NOTFOUND, 0, clock_now);
    keel_abort(t);
    assert_clean(db);
    keel_close(db);
}

/* ---- the clock is read once per txn --------------------------------------------- */

static void test_snapshot_clock(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ttl-snap");
    keel_db *db = open_db(-1, KEEL_NOSYNC);
    keel_txn *t = wbegin(db);
    for (int i = 0; i < 50; i++) {
        char k[16];
        snprintf(k, sizeof k, "s%02d", i);
        put_ttl(t, 0, k, k, 100 + i);
    }
    assert_int_equal(keel_commit(t), 0);

    clock_now = T0 + 120;
    unsigned long calls = clock_calls;
    keel_txn *r = rbegin(db);
    assert_int_equal(clock_calls, calls + 1);
    clock_now = T0 + 100000; /* everything expired by the clock, not for r */
    keel_txn *r2 = rbegin(db);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 50; i++) {
            char k[16];
            snprintf(k, sizeof k, "s%02d", i);
            if (100 + i > 120) {
                expect(r, 0, k, k);
                expect_exp(r, 0, k, 0, T0 + 100 + i, T0 + 120);
            } else {
                expect(r, 0, k, NULL);
                expect_exp(r, 0, k, KEEL_NOTFOUND, 0, 0);
            }
            expect(r2, 0, k, NULL);
        }
        keel_cursor *c;
        keel_val kv, vv;
        assert_int_equal(keel_cursor_open(r, 0, &c), 0);
        int n = 0;
        for (int rc = keel_cursor_first(c, &kv, &vv); rc == 0; rc = keel_cursor_next(c, &kv, &vv))
            n++;
        assert_int_equal(n, 29); /* s21..s49 */
        keel_cursor_close(c);
        clock_now = T0 - 100000; /* back before any expiry: still no change for r */
    }
    assert_int_equal(clock_calls, calls + 2); /* reads never consult the clock */
    keel_abort(r);
    keel_abort(r2);

    /* a write txn: deadlines count from its begin, whatever the clock says later */
    clock_now = T0 + 120;
    t = wbegin(db);
    calls = clock_calls;
    clock_now = T0 + 5000;
    put_ttl(t, 0, "w", "w", 10);
    assert_int_equal(keel_expire(t, 0, tu_val("s40"), 7), 0);
    expect_exp(t, 0, "w", 0, T0 + 130, T0 + 120);
    expect_exp(t, 0, "s40", 0, T0 + 127, T0 + 120);
    expect(t, 0, "s30", "s30"); /* live at the txn's time */
    int64_t r_incr;
    assert_int_equal(keel_incr(t, 0, tu_val("s10"), 1, &r_incr), 0); /* s10 expired at T0+110: counts as absent */
    assert_int_equal(r_incr, 1);
    expect_exp(t, 0, "s10", 0, 0, T0 + 120);
    assert_int_equal(purge(t, 1000), 20); /* s00..s20 except s10, which is live again: 20 */
    assert_int_equal(clock_calls, calls); /* commit does not read it either */
    assert_int_equal(keel_commit(t), 0);
    assert_int_equal(clock_calls, calls);
    clock_now = T0 + 129;
    t = rbegin(db);
    expect_exp(t, 0, "w", 0, T0 + 130, T0 + 129);
    expect(t, 0, "s40", NULL);
    expect(t, 0, "s10", "1");
    /* a reader keeps its snapshot while a writer purges what it still sees */
    clock_now = T0 + 1000;
    keel_txn *w = wbegin(db);
    assert_int_equal(purge(w, 1000), 30); /* s21..s49 and w */
    assert_int_equal(keel_commit(w), 0);
    expect(t, 0, "s45", "s45");
    expect_exp(t, 0, "w", 0, T0 + 130, T0 + 129);
    keel_abort(t);
    t = rbegin(db);
    expect(t, 0, "s45", NULL);
    keel_abort(t);
    clock_now = T0;
    assert_false(phys_has(db, 0, "s45"));
    assert_true(phys_has(db, 0, "s10"));
    /* the largest expiry times */
    t = wbegin(db);
    assert_int_equal(keel_expire_at(t, 0, tu_val("s10"), INT64_MAX), 0);
    expect_exp(t, 0, "s10", 0, INT64_MAX, T0);
    assert_int_equal(keel_put_ttl(t, 0, tu_val("max"), tu_val("m"), INT64_MAX - T0, 0), 0);
    expect_exp(t, 0, "max", 0, INT64_MAX, T0);
    int rc = keel_put_ttl(t, 0, tu_val("max"), tu_val("m"), INT64_MAX - T0 + 1, 0); /* past int64 */
    assert_true(rc == KEEL_OVERFLOW || rc == KEEL_BADARG);
    expect_exp(t, 0, "max", 0, INT64_MAX, T0);
    assert_int_equal(keel_expire_at(t, 0, tu_val("s10"), 1), 0); /* the smallest */
    expect(t, 0, "s10", NULL);
    assert_int_equal(purge(t, 10), 1);
    assert_int_equal(keel_commit(t), 0);
    clock_now = INT64_MAX - 1;
    t = rbegin(db);
    expect_exp(t, 0, "max", 0, INT64_MAX, INT64_MAX - 1);
    keel_abort(t);
    clock_now = INT64_MAX;
    t = wbegin(db);
    expect(t, 0, "max", NULL);
    rc = keel_put_ttl(t, 0, tu_val("max"), tu_val("m"), 1, 0);
    assert_true(rc == KEEL_OVERFLOW || rc == KEEL_BADARG);
    assert_int_equal(purge(t, 10), 1);
    assert_int_equal(keel_commit(t), 0);
    assert_clean(db);
    keel_close(db);
}

/* ---- durability and other processes ----------------------------------------------- */

static void test_reopen(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ttl-reopen");
    keel_db *db = open_db(0, 0);
    keel_txn *t = wbegin(db);
    keel_bucket b = bucket(t, "r");
    put_ttl(t, b, "a", "A", 1000);
    put_ttl(t, b, "b", "B", 2000);
    put_ttl(t, 0, "c", "C", 1500);
    put(t, b, "p", "P", 0);
    assert_int_equal(keel_commit(t), 0);
    keel_close(db);

    clock_now = T0 + 999;
    db = open_db(0, 0);
    t = rbegin(db);
    assert_int_equal(keel_bucket_open(t, "r", 0, &b), 0);
    expect(t, b, "a", "A");
    expect_exp(t, b, "a", 0, T0 + 1000, clock_now);
    expect_exp(t, b, "b", 0, T0 + 2000, clock_now);
    expect_exp(t, 0, "c", 0, T0 + 1500, clock_now);
    expect_exp(t, b, "p", 0, 0, clock_now);
    keel_abort(t);
    assert_clean(db);
    keel_close(db);

    clock_now = T0 + 1500;
    db = open_db(-1, 0);
    t = rbegin(db);
    assert_int_equal(keel_bucket_open(t, "r", 0, &b), 0);
    expect(t, b, "a", NULL);
    expect(t, 0, "c", NULL);
    expect(t, b, "b", "B");
    keel_abort(t);
    t = wbegin(db);
    assert_int_equal(purge(t, 10), 2);
    assert_int_equal(keel_commit(t), 0);
    keel_close(db);
    db = open_db(-1, 0);
    assert_clean(db);
    assert_false(phys_has(db, b, "a"));
    assert_false(phys_has(db, 0, "c"));
    assert_true(phys_has(db, b, "b"));
    keel_close(db);
}

#define CHILD_RC(expr, want)                                                                       \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != (want)) {                                                                       \
            fprintf(stderr, "child %d: %s:%d: %s = %d (%s), want %d\n", (int)getpid(), __FILE__, \
                    __LINE__, #expr, rc_, keel_strerror(rc_), (want));                             \
            _exit(1 + __LINE__ % 250);                                                             \
        }                                                                                          \
    } while (0)
#define CHILD_CHECK(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "child %d: %s:%d: check failed: %s\n", (int)getpid(), __FILE__,       \
                    __LINE__, #cond);                                                              \
            _exit(1 + __LINE__ % 250);                                                             \
        }                                                                                          \
    } while (0)

static void run_child(void (*fn)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
        for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
            signal(sigs[i], SIG_DFL);
        alarm(60);
        fn();
        _exit(0);
    }
    int st;
    pid_t r;
    do
        r = waitpid(pid, &st, 0);
    while (r < 0 && errno == EINTR);
    assert_int_equal(r, pid);
    if (WIFSIGNALED(st))
        fail_msg("child died of signal %d", WTERMSIG(st));
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void child_reader(void)
{
    keel_options o = {.clock = test_clock, .clock_ctx = &clock_now, .purge_per_commit = -1};
    keel_db *db;
    CHILD_RC(keel_open(path, &o, &db), 0);
    keel_txn *t;
    keel_bucket b;
    keel_val v;
    int64_t rem, at;
    clock_now = T0 + 499;
    CHILD_RC(keel_begin(db, KEEL_RDONLY, &t), 0);
    CHILD_RC(keel_bucket_open(t, "mp", 0, &b), 0);
    CHILD_RC(keel_get(t, b, tu_val("x"), &v), 0);
    CHILD_CHECK(v.len == 1 && memcmp(v.data, "X", 1) == 0);
    CHILD_RC(keel_ttl(t, b, tu_val("x"), &rem), 0);
    CHILD_CHECK(rem == 1);
    CHILD_RC(keel_expiry_at(t, b, tu_val("x"), &at), 0);
    CHILD_CHECK(at == T0 + 500);
    CHILD_RC(keel_ttl(t, b, tu_val("y"), &rem), 0);
    CHILD_CHECK(rem == -1);
    keel_abort(t);
    clock_now = T0 + 500;
    CHILD_RC(keel_begin(db, KEEL_RDONLY, &t), 0);
    CHILD_RC(keel_get(t, b, tu_val("x"), &v), KEEL_NOTFOUND);
    CHILD_RC(keel_ttl(t, b, tu_val("x"), &rem), KEEL_NOTFOUND);
    CHILD_RC(keel_get(t, b, tu_val("y"), &v), 0);
    keel_abort(t);
    /* this child purges; the parent checks the result */
    CHILD_RC(keel_begin(db, 0, &t), 0);
    size_t n = 0;
    CHILD_RC(keel_purge(t, 100, &n), 0);
    CHILD_CHECK(n == 1);
    CHILD_RC(keel_expire(t, b, tu_val("y"), 250), 0); /* y expires at T0+750 */
    CHILD_RC(keel_commit(t), 0);
    uint64_t problems = 1;
    CHILD_RC(keel_check(db, NULL, NULL, &problems), 0);
    CHILD_CHECK(problems == 0);
    keel_close(db);
}

static void test_other_process(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ttl-mp");
    keel_db *db = open_db(-1, 0);
    keel_txn *t = wbegin(db);
    keel_bucket b = bucket(t, "mp");
    put_ttl(t, b, "x", "X", 500);
    put(t, b, "y", "Y", 0);
    assert_int_equal(keel_commit(t), 0);
    run_child(child_reader); /* the parent's handle stays open meanwhile */
    clock_now = T0;          /* before x's expiry: only a purge makes it absent */
    t = rbegin(db);
    expect(t, b, "x", NULL);
    expect_exp(t, b, "y", 0, T0 + 750, T0);
    keel_abort(t);
    clock_now = T0 + 750;
    t = rbegin(db);
    expect(t, b, "y", NULL);
    keel_abort(t);
    assert_clean(db);
    keel_close(db);
}

/* ---- interactions ------------------------------------------------------------ */

static void test_interactions(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ttl-inter");
    keel_db *db = open_db(-1, KEEL_NOSYNC);
    keel_txn *t = wbegin(db);
    keel_bucket b = bucket(t, "i");
    int64_t r;
    keel_val exp_v;

    /* plain put clears the expiry */
    put_ttl(t, b, "a", "a1", 100);
    put(t, b, "a", "a2", 0);
    expect(t, b, "a", "a2");
    expect_exp(t, b, "a", 0, 0, T0);
    /* KEEPTTL keeps it, and a put_ttl replaces it */
    put_ttl(t, b, "k", "k1", 100);
    put(t, b, "k", "k2", KEEL_KEEPTTL);
    expect(t, b, "k", "k2");
    expect_exp(t, b, "k", 0, T0 + 100, T0);
    put_ttl(t, b, "k", "k3", 300);
    expect_exp(t, b, "k", 0, T0 + 300, T0);
    put(t, b, "k", "k4", KEEL_KEEPTTL);
    expect_exp(t, b, "k", 0, T0 + 300, T0);
    /* KEEPTTL on a key without expiry or an absent key: none */
    put(t, b, "kn", "x", 0);
    put(t, b, "kn", "y", KEEL_KEEPTTL);
    expect_exp(t, b, "kn", 0, 0, T0);
    put(t, b, "ka", "x", KEEL_KEEPTTL);
    expect_exp(t, b, "ka", 0, 0, T0);
    /* incr keeps it */
    put_ttl(t, b, "n", "41", 100);
    assert_int_equal(keel_incr(t, b, tu_val("n"), 1, &r), 0);
    assert_int_equal(r, 42);
    expect(t, b, "n", "42");
    expect_exp(t, b, "n", 0, T0 + 100, T0);
    /* cas keeps it */
    put_ttl(t, b, "c", "old", 100);
    exp_v = tu_val("old");
    assert_int_equal(keel_cas(t, b, tu_val("c"), &exp_v, tu_val("new")), 0);
    expect(t, b, "c", "new");
    expect_exp(t, b, "c", 0, T0 + 100, T0);
    /* persist removes it; persist of a key without expiry is fine */
    put_ttl(t, b, "p", "p", 100);
    assert_int_equal(keel_persist(t, b, tu_val("p")), 0);
    expect_exp(t, b, "p", 0, 0, T0);
    assert_int_equal(keel_persist(t, b, tu_val("p")), 0);
    expect_exp(t, b, "p", 0, 0, T0);
    /* expire / expire_at on a live key: set, move, move back */
    put(t, b, "e", "e", 0);
    assert_int_equal(keel_expire(t, b, tu_val("e"), 50), 0);
    expect_exp(t, b, "e", 0, T0 + 50, T0);
    assert_int_equal(keel_expire_at(t, b, tu_val("e"), T0 + 70), 0);
    expect_exp(t, b, "e", 0, T0 + 70, T0);
    assert_int_equal(keel_expire_at(t, b, tu_val("e"), T0 + 70), 0); /* the same time again */
    expect_exp(t, b, "e", 0, T0 + 70, T0);
    /* absent keys */
    assert_int_equal(keel_expire(t, b, tu_val("none"), 50), KEEL_NOTFOUND);
    assert_int_equal(keel_expire_at(t, b, tu_val("none"), T0 + 50), KEEL_NOTFOUND);
    assert_int_equal(keel_persist(t, b, tu_val("none")), KEEL_NOTFOUND);
    assert_int_equal(keel_del(t, b, tu_val("none")), KEEL_NOTFOUND);
    /* big keys (expiry key past the stack buffer) and overflow values keep their data */
    size_t maxk = keel_max_key_size(db);
    char *bigk = malloc(maxk);
    memset(bigk, 'B', maxk);
    size_t bigv_len = 70000;
    char *bigv = malloc(bigv_len);
    for (size_t i = 0; i < bigv_len; i++)
        bigv[i] = (char)('a' + i % 23);
    keel_val bk = {bigk, maxk}, bv = {bigv, bigv_len}, got;
    assert_int_equal(keel_put_ttl(t, b, bk, bv, 100, 0), 0);
    assert_int_equal(keel_put_ttl(t, b, (keel_val){bigk, 300}, tu_val("mid"), 100, 0), 0);
    assert_int_equal(keel_put_ttl(t, b, tu_val("ov"), bv, 100, 0), 0);
    assert_int_equal(keel_expire(t, b, tu_val("ov"), 60), 0);
    assert_int_equal(keel_persist(t, b, bk), 0);
    assert_int_equal(keel_expire(t, b, bk, 80), 0);
    assert_int_equal(keel_get(t, b, bk, &got), 0);
    assert_int_equal(got.len, bigv_len);
    assert_memory_equal(got.data, bigv, bigv_len);
    assert_int_equal(keel_get(t, b, tu_val("ov"), &got), 0);
    assert_int_equal(got.len, bigv_len);
    assert_memory_equal(got.data, bigv, bigv_len);
    int64_t at;
    assert_int_equal(keel_expiry_at(t, b, bk, &at), 0);
    assert_int_equal(at, T0 + 80);
    /* keys to be expired at T0+100 for the checks below */
    put_ttl(t, b, "x_del", "v", 100);
    put_ttl(t, b, "x_exp", "v", 100);
    put_ttl(t, b, "x_expat", "v", 100);
    put_ttl(t, b, "x_pers", "v", 100);
    put_ttl(t, b, "x_cas", "v", 100);
    put_ttl(t, b, "x_cas2", "v", 100);
    put_ttl(t, b, "x_noow", "v", 100);
    put_ttl(t, b, "x_noow2", "v", 100);
    put_ttl(t, b, "x_keep", "v", 100);
    put_ttl(t, b, "x_incr", "5", 100);
    put_ttl(t, b, "x_put", "v", 100);
    put_ttl(t, b, "l_noow", "v", 100);
    put_ttl(t, b, "l_del", "v", 100);
    put_ttl(t, b, "l_cdel", "v", 100);
    assert_int_equal(keel_commit(t), 0);
    assert_clean(db);

    clock_now = T0 + 99; /* everything still there */
    t = wbegin(db);
    assert_int_equal(keel_put(t, b, tu_val("l_noow"), tu_val("w"), KEEL_NOOVERWRITE), KEEL_EXISTS);
    assert_int_equal(keel_put_ttl(t, b, tu_val("l_noow"), tu_val("w"), 5, KEEL_NOOVERWRITE), KEEL_EXISTS);
    expect(t, b, "l_noow", "v");
    expect_exp(t, b, "l_noow", 0, T0 + 100, T0 + 99);
    assert_int_equal(keel_cas(t, b, tu_val("l_noow"), NULL, tu_val("w")), KEEL_MISMATCH);
    assert_int_equal(keel_del(t, b, tu_val("l_del")), 0); /* a delete removes the expiry entry */
    keel_cursor *c;
    assert_int_equal(keel_cursor_open(t, b, &c), 0);
    assert_int_equal(keel_cursor_seek(c, tu_val("l_cdel"), NULL, NULL), 0);
    assert_int_equal(keel_cursor_del(c), 0);
    keel_cursor_close(c);
    assert_int_equal(keel_commit(t), 0);
    assert_clean(db);

    clock_now = T0 + 100; /* the x_* keys, n, c, k's first... have expired */
    t = wbegin(db);
    assert_int_equal(keel_del(t, b, tu_val("x_del")), KEEL_NOTFOUND);
    assert_int_equal(keel_expire(t, b, tu_val("x_exp"), 1000), KEEL_NOTFOUND);
    assert_int_equal(keel_expire_at(t, b, tu_val("x_expat"), T0 + 1000), KEEL_NOTFOUND);
    assert_int_equal(keel_persist(t, b, tu_val("x_pers")), KEEL_NOTFOUND);
    expect(t, b, "x_exp", NULL);
    expect(t, b, "x_expat", NULL);
    expect(t, b, "x_pers", NULL);
    /* CAS: expected NULL succeeds (the expired key counts as absent), a
     * match on the stale value does not; the new value does not inherit the
     * stale expiry */
    assert_int_equal(keel_cas(t, b, tu_val("x_cas"), NULL, tu_val("fresh")), 0);
    expect(t, b, "x_cas", "fresh");
    expect_exp(t, b, "x_cas", 0, 0, T0 + 100);
    exp_v = tu_val("v");
    assert_int_equal(keel_cas(t, b, tu_val("x_cas2"), &exp_v, tu_val("fresh")), KEEL_MISMATCH);
    expect(t, b, "x_cas2", NULL);
    /* NOOVERWRITE: an expired key does not conflict */
    put(t, b, "x_noow", "fresh", KEEL_NOOVERWRITE);
    expect(t, b, "x_noow", "fresh");
    expect_exp(t, b, "x_noow", 0, 0, T0 + 100);
    assert_int_equal(keel_put_ttl(t, b, tu_val("x_noow2"), tu_val("fresh"), 10, KEEL_NOOVERWRITE), 0);
    expect_exp(t, b, "x_noow2", 0, T0 + 110, T0 + 100);
    /* KEEPTTL over an expired key: nothing to keep */
    put(t, b, "x_keep", "fresh", KEEL_KEEPTTL);
    expect(t, b, "x_keep", "fresh");
    expect_exp(t, b, "x_keep", 0, 0, T0 + 100);
    /* incr over an expired key: counts from 0, and no expiry */
    assert_int_equal(keel_incr(t, b, tu_val("x_incr"), 3, &r), 0);
    assert_int_equal(r, 3);
    expect(t, b, "x_incr", "3");
    expect_exp(t, b, "x_incr", 0, 0, T0 + 100);
    /* plain put over an expired key */
    put(t, b, "x_put", "fresh", 0);
    expect_exp(t, b, "x_put", 0, 0, T0 + 100);
    /* the persisted, moved and cleared keys live on */
    expect(t, b, "a", "a2");
    expect(t, b, "p", "p");
    expect(t, b, "kn", "y");
    expect(t, b, "ka", "x");
    expect_exp(t, b, "k", 0, T0 + 300, T0 + 100);
    expect(t, b, "n", NULL);
    expect(t, b, "c", NULL);
    expect(t, b, "e", NULL);
    expect(t, b, "ov", NULL);
    assert_int_equal(keel_get(t, b, bk, &got), KEEL_NOTFOUND);
    assert_int_equal(keel_get(t, b, (keel_val){bigk, 300}, &got), KEEL_NOTFOUND);
    assert_int_equal(keel_commit(t), 0);
    assert_clean(db);
    /* what remains to purge: n c e ov bigk bigk300 x_del x_exp x_expat x_pers
     * x_cas2 l_noow (a delete of expired x_del changed nothing; the others
     * were rewritten) */
    keel_stat st0;
    t = rbegin(db);
    assert_int_equal(keel_bucket_stat(t, b, &st0), 0);
    keel_abort(t);
    assert_true(st0.overflow_pages > 0);
    t = wbegin(db);
    assert_int_equal(purge(t, 1000), 12);
    assert_int_equal(keel_commit(t), 0);
    t = rbegin(db);
    keel_stat st1;
    assert_int_equal(keel_bucket_stat(t, b, &st1), 0);
    keel_abort(t);
    assert_int_equal(st1.entries, st0.entries - 12);
    assert_int_equal(st1.overflow_pages, 0);
    assert_clean(db);
    clock_now = T0 + 1000000;
    t = wbegin(db);
    assert_int_equal(purge(t, 1000), 2); /* k, x_noow2 */
    assert_int_equal(keel_commit(t), 0);
    assert_clean(db);
    free(bigk);
    free(bigv);
    keel_close(db);
}

/* ---- dropping buckets ---------------------------------------------------------- */

static void fill_ttl(keel_txn *t, keel_bucket b, const char *prefix, int n, int64_t ttl_base, size_t klen)
{
    char k[600];
    for (int i = 0; i < n; i++) {
        memset(k, 'q', klen);
        int l = snprintf(k, sizeof k, "%s%05d", prefix, i);
        k[l] = 'q';
        keel_val kv = {k, klen > (size_t)l ? klen : (size_t)l};
        if (i % 4 == 3)
            assert_int_equal(keel_put(t, b, kv, tu_val("persistent"), 0), 0);
        else
            assert_int_equal(keel_put_ttl(t, b, kv, tu_val("expiring"), ttl_base + i, 0), 0);
    }
}

static void test_drop_bucket(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ttl-drop");
    keel_db *db = open_db(-1, KEEL_NOSYNC);
    keel_txn *t = wbegin(db);
    keel_bucket gone = bucket(t, "gone"), stays = bucket(t, "stays"), again = bucket(t, "again");
    fill_ttl(t, gone, "g", 400, 10, 0);
    fill_ttl(t, gone, "G", 40, 10, 400); /* long keys */
    fill_ttl(t, stays, "s", 200, 10, 0);
    fill_ttl(t, stays, "g", 40, 10, 0); /* the same keys and expiry times as in "gone" */
    fill_ttl(t, again, "a", 100, 10, 0);
    fill_ttl(t, 0, "d", 100, 10, 0);
    assert_int_equal(keel_commit(t), 0);
    assert_clean(db);

    clock_now = T0 + 200; /* about half of them expired, none purged */
    t = wbegin(db);
    assert_int_equal(keel_bucket_drop(t, gone), 0);
    assert_int_equal(keel_bucket_drop(t, again), 0);
    assert_int_equal(keel_bucket_open(t, "again", KEEL_CREATE, &again), 0);
    fill_ttl(t, again, "A", 8, 100000, 0); /* 6 expiring at T0+200+100000.. */
    assert_int_equal(keel_commit(t), 0);
    assert_clean(db);
    t = rbegin(db);
    assert_int_equal(keel_bucket_open(t, "gone", 0, &gone), KEEL_NOTFOUND);
    keel_abort(t);

    /* the default bucket is emptied */
    t = wbegin(db);
    assert_int_equal(keel_bucket_drop(t, 0), 0);
    assert_int_equal(keel_commit(t), 0);
    assert_clean(db);
    assert_int_equal(phys_entries(db, 0), 0);

    clock_now = T0 + 10000000;
    t = wbegin(db);
    assert_int_equal(purge(t, 100000), 150 + 30 + 6); /* only the ones of "stays" and the new "again" */
    assert_int_equal(keel_commit(t), 0);
    assert_clean(db);
    assert_int_equal(phys_entries(db, stays), 50 + 10);
    assert_int_equal(phys_entries(db, again), 2);

    /* drop in the same txn that expired and purged keys */
    t = wbegin(db);
    fill_ttl(t, stays, "z", 20, 10, 0);
    assert_int_equal(keel_expire(t, stays, tu_val("s00003"), 5), 0);
    assert_int_equal(keel_bucket_drop(t, stays), 0);
    assert_int_equal(purge(t, 100), 0);
    assert_int_equal(keel_commit(t), 0);
    assert_clean(db);
    clock_now += 1000;
    t = wbegin(db);
    assert_int_equal(purge(t, 100), 0);
    keel_abort(t);
    keel_close(db);
}

/* ---- purge ---------------------------------------------------------------------- */

static void test_purge_order(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ttl-purge");
    keel_db *db = open_db(-1, KEEL_NOSYNC);
    enum { N = 60 };
    /* key i expires at T0 + 10 * (perm[i] + 1); written in random order */
    int perm[N], order[N];
    uint64_t seed = tu_seed(0x7777);
    for (int i = 0; i < N; i++)
        perm[i] = i;
    for (int i = N - 1; i > 0; i--) {
        int j = (int)(tu_rand(&seed) % (uint64_t)(i + 1)), x = perm[i];
        perm[i] = perm[j];
        perm[j] = x;
    }
    for (int i = 0; i < N; i++)
        order[perm[i]] = i; /* order[e] = the key expiring e-th */
    keel_txn *t = wbegin(db);
    keel_bucket b = bucket(t, "p");
    for (int n = 0; n < N; n++) {
        int i = (int)((uint64_t)n * 37 % N);
        char k[16];
        snprintf(k, sizeof k, "p%02d", i);
        put_ttl(t, b, k, k, 10 * (perm[i] + 1));
    }
    for (int i = 0; i < 20; i++) { /* keys that never expire, and one far in the future */
        char k[16];
        snprintf(k, sizeof k, "q%02d", i);
        put(t, b, k, k, 0);
    }
    put_ttl(t, b, "future", "f", 1000000);
    assert_int_equal(purge(t, 100), 0); /* nothing expired yet */
    assert_int_equal(keel_commit(t), 0);

    int gone = 0;
    for (int step = 1; step <= N; step++) {
        clock_now = T0 + 10 * step - (step % 2); /* odd steps stop 1 ms short of the next key */
        int due = step % 2 ? step - 1 : step;   /* keys expired by now */
        while (gone < due) {                    /* one key per txn: see exactly which one went */
            t = wbegin(db);
            assert_int_equal(purge(t, 1), 1);
            assert_int_equal(keel_commit(t), 0);
            gone++;
            for (int e = 0; e < N; e++) {
                char k[16];
                snprintf(k, sizeof k, "p%02d", order[e]);
                assert_int_equal(phys_has(db, b, k), e >= gone);
            }
            assert_int_equal(phys_entries(db, b), (uint64_t)(N - gone + 21));
        }
        t = wbegin(db);
        assert_int_equal(purge(t, 0), 0);
        assert_int_equal(purge(t, 1), 0); /* the next one is not due */
        keel_abort(t);
        if (step % 10 == 0)
            assert_clean(db);
    }
    /* purging in batches: the count answered is what went */
    clock_now = T0;
    t = wbegin(db);
    for (int i = 0; i < 30; i++) {
        char k[16];
        snprintf(k, sizeof k, "r%02d", i);
        put_ttl(t, b, k, k, 1 + i % 5); /* ties: six keys per expiry time */
    }
    assert_int_equal(keel_commit(t), 0);
    clock_now = T0 + 3;
    t = wbegin(db);
    assert_int_equal(purge(t, 7), 7);
    assert_int_equal(purge(t, 7), 7);
    assert_int_equal(purge(t, 7), 4); /* 18 expired by T0+3 */
    assert_int_equal(purge(t, 7), 0);
    assert_int_equal(keel_purge(t, 7, NULL), 0);
    assert_int_equal(keel_commit(t), 0);
    for (int i = 0; i < 30; i++) {
        char k[16];
        snprintf(k, sizeof k, "r%02d", i);
        assert_int_equal(phys_has(db, b, k), 1 + i % 5 > 3);
    }
    /* among equal expiry times, key order: a partial purge takes the first keys */
    clock_now = T0 + 4;
    t = wbegin(db);
    assert_int_equal(purge(t, 2), 2);
    assert_int_equal(keel_commit(t), 0);
    assert_false(phys_has(db, b, "r03"));
    assert_false(phys_has(db, b, "r08"));
    assert_true(phys_has(db, b, "r13"));
    assert_true(phys_has(db, b, "r04"));
    /* purge in a read txn */
    t = rbegin(db);
    size_t n = 77;
    assert_int_equal(keel_purge(t, 10, &n), KEEL_READONLY);
    assert_int_equal(n, 0);
    keel_abort(t);
    assert_true(phys_has(db, b, "future"));
    assert_clean(db);
    keel_close(db);
}

static void test_auto_purge(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ttl-auto");
    for (int mode = 0; mode < 3; mode++) { /* purge_per_commit 7, 0 (= 100), -1 (none) */
        int32_t ppc = mode == 0 ? 7 : mode == 1 ? 0 : -1;
        size_t per = mode == 0 ? 7 : mode == 1 ? 100 : 0;
        tu_remove(path);
        clock_now = T0;
        keel_db *db = open_db(ppc, KEEL_NOSYNC);
        keel_txn *t = wbegin(db);
        keel_bucket b = bucket(t, "a");
        for (int i = 0; i < 250; i++) {
            char k[16];
            snprintf(k, sizeof k, "a%03d", i);
            put_ttl(t, b, k, "0123456789012345678901234567890123456789", 10 + i % 10);
        }
        put(t, 0, "tick", "0", 0);
        assert_int_equal(keel_commit(t), 0);
        assert_int_equal(phys_entries(db, b), 250);
        clock_now = T0 + 15; /* 150 expired */
        uint64_t expect_n = 250;
        /* a commit with no change purges nothing */
        t = wbegin(db);
        assert_int_equal(keel_commit(t), 0);
        assert_int_equal(phys_entries(db, b), 250);
        /* an aborted txn neither */
        t = wbegin(db);
        put(t, 0, "tick", "x", 0);
        keel_abort(t);
        assert_int_equal(phys_entries(db, b), 250);
        /* nor one whose only change undid itself: a bucket created and
         * dropped again, with or without a keel_bucket_list after (which
         * flushes bucket changes to the catalog): no commit at all */
        for (int list = 0; list < 2; list++) {
            keel_stat before, after;
            assert_int_equal(keel_db_stat(db, &before), 0);
            t = wbegin(db);
            assert_int_equal(keel_bucket_drop(t, bucket(t, "passing")), 0);
            if (list)
                assert_int_equal(keel_bucket_list(t, count_bucket, &(size_t){0}), 0);
            assert_int_equal(keel_commit(t), 0);
            assert_int_equal(keel_db_stat(db, &after), 0);
            assert_int_equal(after.last_txnid, before.last_txnid);
            assert_int_equal(phys_entries(db, b), 250);
        }
        for (int round = 0; round < 30; round++) {
            t = wbegin(db);
            int64_t r;
            assert_int_equal(keel_incr(t, 0, tu_val("tick"), 1, &r), 0);
            assert_int_equal(keel_commit(t), 0);
            uint64_t purged = 250 - expect_n;
            uint64_t now_purged = purged + per > 150 ? 150 : purged + per;
            expect_n = 250 - now_purged;
            assert_int_equal(phys_entries(db, b), expect_n);
        }
        assert_int_equal(expect_n, mode == 2 ? 250 : 100);
        assert_clean(db);
        /* the 100 live ones are all visible */
        t = rbegin(db);
        keel_cursor *c;
        assert_int_equal(keel_cursor_open(t, b, &c), 0);
        int n = 0;
        keel_val kv;
        for (int rc = keel_cursor_first(c, &kv, NULL); rc == 0; rc = keel_cursor_next(c, &kv, NULL))
            n++;
        assert_int_equal(n, 100);
        keel_cursor_close(c);
        keel_abort(t);
        if (mode == 2) { /* disabled: keel_purge still works */
            t = wbegin(db);
            assert_int_equal(purge(t, 1000), 150);
            assert_int_equal(keel_commit(t), 0);
            assert_int_equal(phys_entries(db, b), 100);
            assert_clean(db);
        }
        /* a one-call write commits, so it purges too */
        clock_now = T0 + 100;
        assert_int_equal(keel_db_put(db, NULL, tu_val("one"), tu_val("call"), 0), 0);
        assert_int_equal(phys_entries(db, b), mode == 0 ? 93 : mode == 1 ? 0 : 100);
        assert_clean(db);
        keel_close(db);
    }
}

static void test_space_reuse(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ttl-space");
    for (int mode = 0; mode < 3; mode++) { /* auto purge, explicit purge, none (the control) */
        tu_remove(path);
        clock_now = T0;
        keel_db *db = open_db(mode == 0 ? 0 : -1, KEEL_NOSYNC);
        char *v = malloc(3000);
        uint64_t live = mode == 2 ? 1 : 0;
        memset(v, 'S', 3000);
        uint64_t base = 0, top = 0;
        int cycles = 40 * (int)tu_scale();
        for (int cyc = 0; cyc < cycles; cyc++) {
            keel_txn *t = wbegin(db);
            for (int i = 0; i < 80; i++) {
                char k[32];
                snprintf(k, sizeof k, "c%05d-%03d", cyc, i);
                /* small and overflow values */
                keel_val val = {v, i % 4 == 0 ? 3000 : 200};
                assert_int_equal(keel_put_ttl(t, 0, tu_val(k), val, 5 + i % 5, 0), 0);
            }
            assert_int_equal(keel_commit(t), 0);
            clock_now += 10;
            t = wbegin(db);
            if (mode == 1)
                assert_int_equal(purge(t, 1000), 80);
            else
                put(t, 0, "tick", "t", 0);
            assert_int_equal(keel_commit(t), 0);
            if (mode == 2)
                live += 80;
            assert_int_equal(phys_entries(db, 0), mode == 1 ? 0 : mode == 0 ? 1 : live);
            keel_stat st;
            assert_int_equal(keel_db_stat(db, &st), 0);
            if (cyc == 4)
                base = st.file_size;
            if (st.file_size > top)
                top = st.file_size;
            if (cyc % 10 == 9)
                assert_clean(db);
        }
        fprintf(stderr, "space reuse (%s purge): file %llu bytes after 5 cycles, at most %llu after %d\n",
                mode == 0 ? "auto" : mode == 1 ? "explicit" : "no", (unsigned long long)base,
                (unsigned long long)top, cycles);
        if (mode < 2)
            assert_true(top <= 2 * base + 16 * 4096);
        else /* without purges the same workload grows the file well past that bound */
            assert_true(top > 2 * base + 16 * 4096);
        free(v);
        keel_close(db);
    }
}

/* ---- randomized model --------------------------------------------------------------- */

#define MB 2  /* buckets in the model: the default one and "mb" */
#define MK 24 /* keys per bucket */

#define MVALMAX 6000 /* values up to here: some go to overflow pages */

struct ment {
    bool present; /* in the file (maybe expired) */
    int64_t exp;  /* 0 = none */
    size_t len;
    char val[MVALMAX];
};

static struct ment model[MB][MK], saved_model[MB][MK];
static uint32_t bucket_ids[MB];

#define MKEYMAX 512
static size_t mklen = 3; /* key length: "m%02d", padded */

static void mkey(char *buf, int i)
{
    snprintf(buf, MKEYMAX, "m%02d", (i % 100 + 100) % 100);
    memset(buf + 3, 'p', mklen - 3);
    buf[mklen] = 0;
}

static bool mvisible(const struct ment *e, int64_t now) { return e->present && (e->exp == 0 || e->exp > now); }

/* Redis's integer rule, written independently of ops.c */
static bool mparse(const struct ment *e, int64_t *out)
{
    if (e->len == 0 || e->len > 20)
        return false;
    char buf[32];
    memcpy(buf, e->val, e->len);
    buf[e->len] = 0;
    const char *p = buf[0] == '-' ? buf + 1 : buf;
    if (!*p || (p[0] == '0' && (p[1] || p != buf)))
        return false;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9')
            return false;
    errno = 0;
    char *end;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

static void mset(struct ment *e, const char *v, size_t len, int64_t exp)
{
    e->present = true;
    e->exp = exp;
    e->len = len;
    memcpy(e->val, v, len);
}

/* the model's purge: expired entries by (expiry, bucket id, key) */
static size_t mpurge(size_t max, int64_t now)
{
    size_t n = 0;
    while (n < max) {
        int bb = -1, bk = -1;
        for (int b = 0; b < MB; b++)
            for (int k = 0; k < MK; k++) {
                struct ment *e = &model[b][k];
                if (!e->present || !e->exp || e->exp > now)
                    continue;
                if (bb < 0)
                    bb = b, bk = k;
                else {
                    struct ment *best = &model[bb][bk];
                    if (e->exp < best->exp || (e->exp == best->exp && bucket_ids[b] < bucket_ids[bb]))
                        bb = b, bk = k; /* same bucket: keys scanned in order, first wins */
                }
            }
        if (bb < 0)
            break;
        model[bb][bk].present = false;
        n++;
    }
    return n;
}

static void mverify(keel_txn *t, const keel_bucket *bk, int64_t now, bool walks)
{
    char k[MKEYMAX];
    for (int b = 0; b < MB; b++) {
        for (int i = 0; i < MK; i++) {
            mkey(k, i);
            struct ment *e = &model[b][i];
            keel_val got;
            int64_t at = 77;
            if (mvisible(e, now)) {
                assert_int_equal(keel_get(t, bk[b], tu_val(k), &got), 0);
                assert_int_equal(got.len, e->len);
                if (e->len)
                    assert_memory_equal(got.data, e->val, e->len);
                assert_int_equal(keel_expiry_at(t, bk[b], tu_val(k), &at), 0);
                assert_int_equal(at, e->exp);
            } else {
                assert_int_equal(keel_get(t, bk[b], tu_val(k), &got), KEEL_NOTFOUND);
                assert_int_equal(keel_expiry_at(t, bk[b], tu_val(k), &at), KEEL_NOTFOUND);
            }
        }
        if (!walks)
            continue;
        keel_cursor *c;
        keel_val kv, vv;
        assert_int_equal(keel_cursor_open(t, bk[b], &c), 0);
        int i = 0, rc;
        for (rc = keel_cursor_first(c, &kv, &vv); rc == 0; rc = keel_cursor_next(c, &kv, &vv)) {
            while (i < MK && !mvisible(&model[b][i], now))
                i++;
            assert_true(i < MK);
            mkey(k, i);
            assert_int_equal(kv.len, mklen);
            assert_memory_equal(kv.data, k, mklen);
            assert_int_equal(vv.len, model[b][i].len);
            i++;
        }
        assert_int_equal(rc, KEEL_NOTFOUND);
        while (i < MK && !mvisible(&model[b][i], now))
            i++;
        assert_int_equal(i, MK);
        i = MK - 1;
        for (rc = keel_cursor_last(c, &kv, &vv); rc == 0; rc = keel_cursor_prev(c, &kv, &vv)) {
            while (i >= 0 && !mvisible(&model[b][i], now))
                i--;
            assert_true(i >= 0);
            mkey(k, i);
            assert_memory_equal(kv.data, k, mklen);
            i--;
        }
        assert_int_equal(rc, KEEL_NOTFOUND);
        while (i >= 0 && !mvisible(&model[b][i], now))
            i--;
        assert_int_equal(i, -1);
        keel_cursor_close(c);
    }
}

/* every entry in the file, expired or not, with its expiry */
static void mverify_physical(keel_db *db, const keel_bucket *bk)
{
    int64_t saved = clock_now;
    clock_now = 1;
    keel_txn *t = rbegin(db);
    clock_now = saved;
    char k[MKEYMAX];
    for (int b = 0; b < MB; b++) {
        uint64_t n = 0;
        for (int i = 0; i < MK; i++) {
            mkey(k, i);
            struct ment *e = &model[b][i];
            keel_val got;
            int64_t at;
            if (e->present) {
                n++;
                assert_int_equal(keel_get(t, bk[b], tu_val(k), &got), 0);
                assert_int_equal(got.len, e->len);
                if (e->len)
                    assert_memory_equal(got.data, e->val, e->len);
                assert_int_equal(keel_expiry_at(t, bk[b], tu_val(k), &at), 0);
                assert_int_equal(at, e->exp);
            } else {
                assert_int_equal(keel_get(t, bk[b], tu_val(k), &got), KEEL_NOTFOUND);
            }
        }
        keel_stat st;
        assert_int_equal(keel_bucket_stat(t, bk[b], &st), 0);
        assert_int_equal(st.entries, n);
    }
    keel_abort(t);
}

static void random_value(uint64_t *seed, char *buf, size_t *len)
{
    static const char *const fixed[] = {"", "abc", "01", " 1", "-0", "9223372036854775807",
                                        "-9223372036854775808", "12a", "0"};
    uint64_t x = tu_rand(seed);
    if (x % 16 == 1) { /* an overflow value */
        *len = 2100 + (size_t)((x >> 8) % (MVALMAX - 2100));
        for (size_t i = 0; i < *len; i++)
            buf[i] = (char)('a' + (i * 7 + (x >> 24)) % 26);
    } else if (x % 4 == 0) {
        const char *s = fixed[(x >> 8) % (sizeof fixed / sizeof fixed[0])];
        *len = strlen(s);
        memcpy(buf, s, *len);
    } else {
        *len = (size_t)snprintf(buf, 32, "%lld", (long long)((int64_t)((x >> 8) % 201) - 100));
    }
}

static void run_model(size_t key_len, uint64_t seed_def)
{
    mklen = key_len;
    tu_remove(path);
    clock_now = T0;
    const int32_t ppc = 3;
    keel_db *db = open_db(ppc, KEEL_NOSYNC);
    uint64_t seed = tu_seed(seed_def);
    fprintf(stderr, "model: keys of %zu bytes, seed 0x%llx\n", key_len, (unsigned long long)seed);
    memset(model, 0, sizeof model);
    keel_bucket bk[MB], tick;
    keel_txn *t = wbegin(db);
    bk[0] = KEEL_DEFAULT_BUCKET;
    bk[1] = bucket(t, "mb");
    tick = bucket(t, "tick");
    for (int b = 0; b < MB; b++) {
        struct tree_desc *td;
        assert_int_equal(bucket_tree(t, bk[b], &td), 0);
        bucket_ids[b] = td->id;
    }
    assert_int_equal(keel_commit(t), 0);

    long txns = 1000 * tu_scale();
    unsigned long ops_ok[12] = {0}, ops_fail[12] = {0}, auto_purged = 0, aborts = 0;
    for (long tn = 0; tn < txns; tn++) {
        /* the clock moves, now and then backwards */
        uint64_t x = tu_rand(&seed);
        if (x % 10 == 0)
            clock_now -= (int64_t)(x >> 8) % 20;
        else
            clock_now += (int64_t)(x >> 8) % 25;
        const int64_t now = clock_now;
        memcpy(saved_model, model, sizeof model);
        t = wbegin(db);
        bool dirty = false;
        int nops = 1 + (int)(tu_rand(&seed) % 10);
        for (int op = 0; op < nops; op++) {
            x = tu_rand(&seed);
            int b = (int)(x % MB), i = (int)((x >> 4) % MK);
            uint64_t y = tu_rand(&seed);
            char k[MKEYMAX];
            mkey(k, i);
            keel_val key = tu_val(k);
            struct ment *e = &model[b][i];
            bool vis = mvisible(e, now);
            static char vbuf[MVALMAX];
            size_t vlen;
            random_value(&seed, vbuf, &vlen);
            keel_val val = {vbuf, vlen};
            int rc = 0;
            int kind = (int)((x >> 12) % 12);
            switch (kind) {
            case 0:
            case 1: { /* put, with flags */
                static const unsigned fl[] = {0, KEEL_NOOVERWRITE, KEEL_KEEPTTL, KEEL_NOOVERWRITE | KEEL_KEEPTTL};
                unsigned f = fl[y % 4];
                rc = keel_put(t, bk[b], key, val, f);
                if ((f & KEEL_NOOVERWRITE) && vis) {
                    assert_int_equal(rc, KEEL_EXISTS);
                } else {
                    assert_int_equal(rc, 0);
                    mset(e, vbuf, vlen, (f & KEEL_KEEPTTL) && vis ? e->exp : 0);
                    dirty = true;
                }
                break;
            }
            case 2:
            case 3: { /* put_ttl */
                int64_t ttl = 1 + (int64_t)(y % 60);
                unsigned f = (y >> 8) % 3 == 0 ? KEEL_NOOVERWRITE : 0;
                rc = keel_put_ttl(t, bk[b], key, val, ttl, f);
                if (f && vis) {
                    assert_int_equal(rc, KEEL_EXISTS);
                } else {
                    assert_int_equal(rc, 0);
                    mset(e, vbuf, vlen, now + ttl);
                    dirty = true;
                }
                break;
            }
            case 4: /* del */
                rc = keel_del(t, bk[b], key);
                assert_int_equal(rc, vis ? 0 : KEEL_NOTFOUND);
                if (vis) { /* an expired key stays, for purge */
                    dirty = true;
                    e->present = false;
                }
                break;
            case 5: /* persist */
                rc = keel_persist(t, bk[b], key);
                assert_int_equal(rc, vis ? 0 : KEEL_NOTFOUND);
                if (vis && e->exp) {
                    e->exp = 0;
                    dirty = true;
                }
                break;
            case 6: { /* expire / expire_at, maybe in the past */
                int64_t at;
                if (y % 2) {
                    int64_t ttl = 1 + (int64_t)((y >> 8) % 60);
                    rc = keel_expire(t, bk[b], key, ttl);
                    at = now + ttl;
                } else {
                    at = now - 10 + (int64_t)((y >> 8) % 70);
                    rc = keel_expire_at(t, bk[b], key, at);
                }
                assert_int_equal(rc, vis ? 0 : KEEL_NOTFOUND);
                if (vis && e->exp != at) {
                    e->exp = at;
                    dirty = true;
                }
                break;
            }
            case 7: { /* incr */
                int64_t delta = (int64_t)(y % 21) - 10, cur = 0, res = 555;
                if (y % 50 == 0)
                    delta = (y >> 8) % 2 ? INT64_MAX : INT64_MIN;
                rc = keel_incr(t, bk[b], key, delta, &res);
                if (vis && !mparse(e, &cur)) {
                    assert_int_equal(rc, KEEL_NOTNUMBER);
                    assert_int_equal(res, 555);
                } else if (__builtin_add_overflow(cur, delta, &cur)) {
                    assert_int_equal(rc, KEEL_OVERFLOW);
                    assert_int_equal(res, 555);
                } else {
                    assert_int_equal(rc, 0);
                    assert_int_equal(res, cur);
                    char nb[32];
                    int nl = snprintf(nb, sizeof nb, "%lld", (long long)cur);
                    mset(e, nb, (size_t)nl, vis ? e->exp : 0);
                    dirty = true;
                }
                break;
            }
            case 8: { /* cas: expected NULL, the current value or another */
                keel_val exp_v;
                const keel_val *ep = NULL;
                bool match;
                if (y % 3 == 0) {
                    match = !vis;
                } else if (y % 3 == 1 && e->present) {
                    exp_v = (keel_val){e->val, e->len}; /* even when it expired */
                    ep = &exp_v;
                    match = vis;
                } else {
                    exp_v = tu_val("zz-never");
                    ep = &exp_v;
                    match = false;
                }
                struct ment before = *e;
                rc = keel_cas(t, bk[b], key, ep, val);
                if (match) {
                    assert_int_equal(rc, 0);
                    mset(e, vbuf, vlen, vis ? before.exp : 0);
                    dirty = true;
                } else {
                    assert_int_equal(rc, KEEL_MISMATCH);
                }
                break;
            }
            case 9: { /* explicit purge */
                size_t max = (size_t)(y % 5), n = 99;
                assert_int_equal(keel_purge(t, max, &n), 0);
                assert_int_equal(n, mpurge(max, now));
                if (n)
                    dirty = true;
                break;
            }
            case 10: { /* cursor delete after a seek */
                keel_cursor *c;
                keel_val kv;
                assert_int_equal(keel_cursor_open(t, bk[b], &c), 0);
                rc = keel_cursor_seek(c, key, &kv, NULL);
                int j = i;
                while (j < MK && !mvisible(&model[b][j], now))
                    j++;
                if (j == MK) {
                    assert_int_equal(rc, KEEL_NOTFOUND);
                } else {
                    assert_int_equal(rc, 0);
                    char k2[MKEYMAX];
                    mkey(k2, j);
                    assert_memory_equal(kv.data, k2, mklen);
                    assert_int_equal(keel_cursor_del(c), 0);
                    model[b][j].present = false;
                    dirty = true;
                }
                keel_cursor_close(c);
                break;
            }
            case 11: { /* get_many of the whole bucket, and keel_ttl */
                keel_val keys[MK], vals[MK];
                static char names[MK][MKEYMAX];
                for (int j = 0; j < MK; j++) {
                    mkey(names[j], j);
                    keys[j] = tu_val(names[j]);
                }
                assert_int_equal(keel_get_many(t, bk[b], keys, vals, MK), 0);
                for (int j = 0; j < MK; j++) {
                    struct ment *m = &model[b][j];
                    if (mvisible(m, now)) {
                        assert_int_equal(vals[j].len, m->len);
                        assert_non_null(vals[j].data);
                        if (m->len)
                            assert_memory_equal(vals[j].data, m->val, m->len);
                    } else {
                        assert_null(vals[j].data);
                        assert_int_equal(vals[j].len, 0);
                    }
                }
                int64_t rem = 0;
                rc = keel_ttl(t, bk[b], key, &rem);
                assert_int_equal(rc, vis ? 0 : KEEL_NOTFOUND);
                if (vis)
                    assert_int_equal(rem, e->exp ? e->exp - now : -1);
                break;
            }
            }
            if (rc == 0)
                ops_ok[kind]++;
            else
                ops_fail[kind]++;
            mverify(t, bk, now, op == nops - 1);
        }
        if (tu_rand(&seed) % 5 == 0) {
            keel_abort(t);
            memcpy(model, saved_model, sizeof model);
            aborts++;
        } else {
            if (!dirty) /* make sure the commit writes, so that it purges */
                put(t, tick, "t", "t", 0);
            assert_int_equal(keel_commit(t), 0);
            auto_purged += mpurge((size_t)ppc, now);
        }
        keel_txn *r = rbegin(db);
        mverify(r, bk, clock_now, true);
        keel_abort(r);
        mverify_physical(db, bk);
        if (tn % 10 == 0)
            assert_clean(db);
    }
    assert_clean(db);
    keel_close(db);
    static const char *const names[12] = {"put", "put", "put_ttl", "put_ttl", "del", "persist",
                                          "expire", "incr", "cas", "purge", "cursor_del", "reads"};
    fprintf(stderr, "model: %ld txns (%lu aborted), %lu keys purged at commit; ops ok/failed:", txns, aborts,
            auto_purged);
    for (int i = 0; i < 12; i++) {
        fprintf(stderr, " %s %lu/%lu", names[i], ops_ok[i], ops_fail[i]);
        assert_true(ops_ok[i] > 0); /* every kind of op succeeded at least once */
    }
    fprintf(stderr, "\n");
    assert_true(auto_purged > 0);
    for (int i = 4; i <= 8; i++)
        assert_true(ops_fail[i] > 0); /* and failed (NOTFOUND, NOTNUMBER, MISMATCH) */
}

static void test_model(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ttl-model");
    run_model(3, 0x7e57ab1e);   /* one leaf */
    run_model(400, 0x7e57ab1f); /* several leaves; expiry keys past the stack buffer */
    open_max_dirty = 600;       /* the expiry log applied every few changes, pages spilled at every op */
    run_model(20, 0x7e57ab20);
}

/* ---- the expiry log -------------------------------------------------------------- */

/* Expiry-tree changes wait in the write txn's log and are applied sorted
 * before a purge, when the log outgrows max_dirty / 4, and at commit.  These
 * tests look at the expiry tree itself (internal.h): its entry count, and its
 * keys in order against a list sorted here, independently of ttl.c. */

static uint64_t expiry_entries(keel_db *db)
{
    keel_txn *t = rbegin(db);
    uint64_t n = t->meta.trees[TREE_EXPIRY].entries;
    keel_abort(t);
    return n;
}

#define LK 120 /* keys per bucket */
#define LB 3   /* buckets: default, "la", "lb" */
static int64_t lexp[LB][LK]; /* -1: absent; 0: no expiry; else the expiry time */

static void lkey(char *buf, int i) { snprintf(buf, 16, "L%03d", (i * 37) % LK); }

/* A run of random changes in one txn, mirrored in lexp. */
static void log_ops(keel_txn *t, const keel_bucket *bk, uint64_t *seed, int n)
{
    static const int64_t ttls[] = {500, 1000, 1000, 1000, 2000}; /* mostly one expiry time */
    for (int op = 0; op < n; op++) {
        uint64_t x = tu_rand(seed);
        int b = (int)(x % LB), i = (int)((x >> 8) % LK);
        char k[16];
        lkey(k, i);
        int64_t *e = &lexp[b][i];
        bool present = *e >= 0;
        switch ((x >> 20) % 6) {
        case 0:
        case 1:
        case 2: {
            int64_t ttl = ttls[(x >> 32) % 5];
            put_ttl(t, bk[b], k, "v", ttl);
            *e = clock_now + ttl;
            break;
        }
        case 3:
            put(t, bk[b], k, "plain", 0);
            *e = 0;
            break;
        case 4:
            assert_int_equal(keel_del(t, bk[b], tu_val(k)), present ? 0 : KEEL_NOTFOUND);
            *e = -1;
            break;
        case 5:
            assert_int_equal(keel_persist(t, bk[b], tu_val(k)), present ? 0 : KEEL_NOTFOUND);
            if (present)
                *e = 0;
            break;
        }
    }
}

static uint64_t lcount(void)
{
    uint64_t n = 0;
    for (int b = 0; b < LB; b++)
        for (int i = 0; i < LK; i++)
            n += lexp[b][i] > 0;
    return n;
}

static void lverify(keel_db *db, const keel_bucket *bk)
{
    keel_txn *t = rbegin(db);
    for (int b = 0; b < LB; b++)
        for (int i = 0; i < LK; i++) {
            char k[16];
            lkey(k, i);
            int64_t at = 77;
            assert_int_equal(keel_expiry_at(t, bk[b], tu_val(k), &at), lexp[b][i] >= 0 ? 0 : KEEL_NOTFOUND);
            if (lexp[b][i] >= 0)
                assert_int_equal(at, lexp[b][i]);
        }
    keel_abort(t);
    assert_int_equal(expiry_entries(db), lcount());
    assert_clean(db);
}

/* An abort after buffered (and, with a small max_dirty, partly applied)
 * changes leaves nothing; the same changes committed leave both trees agreeing. */
static void test_log_abort(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ttl-log-abort");
    for (int pass = 0; pass < 2; pass++) {
        open_max_dirty = pass ? 4096 : 0; /* pass 1: the log is applied every ~20 changes */
        tu_remove(path);
        clock_now = T0;
        keel_db *db = open_db(-1, KEEL_NOSYNC);
        keel_bucket bk[LB];
        keel_txn *t = wbegin(db);
        bk[0] = KEEL_DEFAULT_BUCKET;
        bk[1] = bucket(t, "la");
        bk[2] = bucket(t, "lb");
        for (int b = 0; b < LB; b++)
            for (int i = 0; i < LK; i++)
                lexp[b][i] = -1;
        uint64_t seed = tu_seed(0x10ab0e7 + (uint64_t)pass);
        log_ops(t, bk, &seed, 400);
        assert_int_equal(keel_commit(t), 0);
        lverify(db, bk);
        assert_true(lcount() > 100);

        for (int round = 0; round < 6; round++) {
            clock_now += 7;
            int64_t saved[LB][LK];
            memcpy(saved, lexp, sizeof saved);
            uint64_t seed_before = seed;
            t = wbegin(db);
            log_ops(t, bk, &seed, 300);
            keel_abort(t);
            memcpy(lexp, saved, sizeof saved);
            lverify(db, bk);
            seed = seed_before; /* the same changes again, committed */
            t = wbegin(db);
            log_ops(t, bk, &seed, 300);
            assert_int_equal(keel_commit(t), 0);
            lverify(db, bk);
        }
        keel_close(db);
    }
}

/* A purge in the txn that made the keys expire sees them; the txn's later
 * changes still reach the expiry tree. */
static void test_log_purge_same_txn(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ttl-log-purge");
    keel_db *db = open_db(-1, KEEL_NOSYNC);
    keel_txn *t = wbegin(db);
    keel_bucket b = bucket(t, "p");
    char k[16];
    for (int i = 0; i < 500; i++) {
        snprintf(k, sizeof k, "p%03d", (i * 7) % 500);
        put_ttl(t, b, k, "v", 1000 + i % 3);
    }
    for (int i = 0; i < 500; i += 5) { /* 100 keys expire at once, in the past */
        snprintf(k, sizeof k, "p%03d", i);
        assert_int_equal(keel_expire_at(t, b, tu_val(k), clock_now - 1 - i % 4), 0);
    }
    for (int i = 1; i < 500; i += 10) { /* 50 deleted */
        snprintf(k, sizeof k, "p%03d", i);
        assert_int_equal(keel_del(t, b, tu_val(k)), 0);
    }
    assert_int_equal(purge(t, SIZE_MAX), 100);
    assert_int_equal(purge(t, SIZE_MAX), 0);
    keel_stat st;
    assert_int_equal(keel_bucket_stat(t, b, &st), 0);
    assert_int_equal(st.entries, 350);
    for (int i = 2; i < 500; i += 10) { /* changes after the purge */
        snprintf(k, sizeof k, "p%03d", i);
        assert_int_equal(keel_persist(t, b, tu_val(k)), 0);
    }
    assert_int_equal(keel_commit(t), 0);
    assert_clean(db);
    assert_int_equal(expiry_entries(db), 300);

    /* expired in an earlier txn, purged in the one that also puts new keys */
    clock_now += 1002;
    t = wbegin(db);
    for (int i = 0; i < 200; i++) {
        snprintf(k, sizeof k, "n%03d", i);
        put_ttl(t, b, k, "v", 1000);
    }
    assert_int_equal(purge(t, 10), 10);
    snprintf(k, sizeof k, "n%03d", 3);
    put_ttl(t, b, k, "w", 1);
    assert_int_equal(purge(t, SIZE_MAX), 290);
    assert_int_equal(keel_commit(t), 0);
    assert_clean(db);
    assert_int_equal(expiry_entries(db), 200);
    keel_close(db);
}

/* ---- order: the expiry tree's keys are (expiry BE, bucket id BE, key) ---- */
struct lent {
    uint8_t k[420];
    size_t len;
};

static int lent_cmp(const void *a, const void *b)
{
    const struct lent *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->k, y->k, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

static void lent_make(struct lent *e, int64_t exp, uint32_t id, const uint8_t *key, size_t klen)
{
    for (int i = 0; i < 8; i++)
        e->k[i] = (uint8_t)((uint64_t)exp >> (56 - 8 * i));
    for (int i = 0; i < 4; i++)
        e->k[8 + i] = (uint8_t)(id >> (24 - 8 * i));
    memcpy(e->k + 12, key, klen);
    e->len = 12 + klen;
}

/* Keys whose order the sort must get right: prefixes of each other, zero
 * bytes, keys equal in their first 4 or 12 bytes (what the log's sort words
 * hold) and differing after, long keys, plus random ones; several buckets
 * and expiry times, written in random order, some taken out and put back
 * in the same txn. */
#define NOK 160
static uint8_t okeys[NOK][400];
static size_t oklen[NOK];

static void make_order_keys(uint64_t *seed)
{
    static const char *fixed[] = {"a", "a\0", "a\0\0", "a\1", "ab", "abc", "abcd", "abcd\0", "abcde",
                                  "abcdefghijk", "abcdefghijkl", "abcdefghijkl\0", "abcdefghijklm",
                                  "abcdefghijklmn", "abcdefghijkm", "abcdefghijkk", "\xff", "\xff\xff",
                                  "\x01", "zzzz", "zzz\xff"};
    static const size_t flen[] = {1, 2, 3, 2, 2, 3, 4, 5, 5, 11, 12, 13, 13, 14, 12, 12, 1, 2, 1, 4, 4};
    int n = 0;
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++, n++) {
        memcpy(okeys[n], fixed[i], flen[i]);
        oklen[n] = flen[i];
    }
    for (int i = 0; i < 20; i++, n++) { /* long keys: a shared 300-byte prefix, then one differing byte */
        memset(okeys[n], 'P', 300);
        okeys[n][300] = (uint8_t)(i * 11);
        oklen[n] = 301 + (size_t)(i % 3) * 30;
        memset(okeys[n] + 301, i % 2 ? 0 : 0xff, oklen[n] - 301);
    }
    for (int i = 0; i < 20; i++, n++) { /* 13..20 bytes: the first 12 shared, the rest differ */
        memcpy(okeys[n], "SHAREDPREFIX", 12);
        oklen[n] = 13 + (size_t)(i % 8);
        for (size_t j = 12; j < oklen[n]; j++)
            okeys[n][j] = (uint8_t)tu_rand(seed);
    }
    while (n < NOK) { /* random, 1..40 bytes, maybe a duplicate (then skipped) */
        oklen[n] = 1 + tu_rand(seed) % 40;
        for (size_t j = 0; j < oklen[n]; j++)
            okeys[n][j] = (uint8_t)(tu_rand(seed) % 4 == 0 ? 0 : tu_rand(seed));
        bool dup = false;
        for (int m = 0; m < n && !dup; m++)
            dup = oklen[m] == oklen[n] && !memcmp(okeys[m], okeys[n], oklen[n]);
        n += !dup;
    }
}

/* The expiry tree holds exactly want[0..n), in memcmp order. */
static void expect_expiry_tree(keel_db *db, struct lent *want, size_t n)
{
    qsort(want, n, sizeof want[0], lent_cmp);
    keel_txn *t = rbegin(db);
    keel_cursor c;
    memset(&c, 0, sizeof c);
    cursor_init(&c, t, 0, &t->meta.trees[TREE_EXPIRY]);
    c.all = true;
    keel_val k, v;
    size_t got = 0;
    int rc;
    for (rc = cursor_first(&c, &k, &v); rc == 0; rc = cursor_next(&c, &k, &v), got++) {
        assert_true(got < n);
        assert_int_equal(k.len, want[got].len);
        assert_memory_equal(k.data, want[got].k, k.len);
        assert_int_equal(v.len, 0);
    }
    assert_int_equal(rc, KEEL_NOTFOUND);
    assert_int_equal(got, n);
    free(c.keybuf);
    keel_abort(t);
}

static void test_log_order(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ttl-log-order");
    keel_db *db = open_db(-1, KEEL_NOSYNC);
    uint64_t seed = tu_seed(0x0dde7);
    make_order_keys(&seed);
    enum { OB = 3 };
    static int64_t oexp[OB][NOK]; /* 0 = no expiry, else the time */
    keel_bucket bk[OB];
    uint32_t ids[OB];
    keel_txn *t = wbegin(db);
    bk[0] = KEEL_DEFAULT_BUCKET;
    bk[1] = bucket(t, "o1");
    bk[2] = bucket(t, "o2");
    for (int b = 0; b < OB; b++) {
        struct tree_desc *td;
        assert_int_equal(bucket_tree(t, bk[b], &td), 0);
        ids[b] = td->id;
    }
    for (int round = 0; round < 3; round++) {
        /* every key of every bucket, in random order: a TTL of 100 (most), 50 or none */
        int perm[OB * NOK];
        for (int i = 0; i < OB * NOK; i++)
            perm[i] = i;
        for (int i = OB * NOK - 1; i > 0; i--) {
            int j = (int)(tu_rand(&seed) % (uint64_t)(i + 1)), x = perm[i];
            perm[i] = perm[j];
            perm[j] = x;
        }
        for (int n = 0; n < OB * NOK; n++) {
            int b = perm[n] / NOK, i = perm[n] % NOK;
            keel_val k = {okeys[i], oklen[i]};
            uint64_t r = tu_rand(&seed) % 10;
            int64_t ttl = r < 7 ? 100 : r < 9 ? 50 : 0;
            if (ttl) {
                assert_int_equal(keel_put_ttl(t, bk[b], k, tu_val("v"), ttl, 0), 0);
                oexp[b][i] = clock_now + ttl;
            } else {
                assert_int_equal(keel_put(t, bk[b], k, tu_val("v"), 0), 0);
                oexp[b][i] = 0;
            }
        }
        /* some entries leave and come back with the same expiry time in this txn:
         * added and removed (or removed and added) entries cancel out */
        for (int n = 0; n < NOK; n++) {
            int b = (int)(tu_rand(&seed) % OB), i = (int)(tu_rand(&seed) % NOK);
            if (!oexp[b][i])
                continue;
            keel_val k = {okeys[i], oklen[i]};
            assert_int_equal(keel_persist(t, bk[b], k), 0);
            assert_int_equal(keel_expire_at(t, bk[b], k, oexp[b][i]), 0);
        }
        assert_int_equal(keel_commit(t), 0);
        assert_clean(db);

        /* the expiry tree, key by key, against the list sorted here */
        static struct lent want[OB * NOK];
        size_t nw = 0;
        for (int b = 0; b < OB; b++)
            for (int i = 0; i < NOK; i++)
                if (oexp[b][i])
                    lent_make(&want[nw++], oexp[b][i], ids[b], okeys[i], oklen[i]);
        expect_expiry_tree(db, want, nw);
        clock_now += 30; /* the next round's times differ: old entries move */
        t = wbegin(db);
    }
    keel_abort(t);

    /* one txn whose entries agree in every sort word (one time, one bucket,
     * the first 12 key bytes): only the bytes after them order it */
    t = wbegin(db);
    keel_bucket same = bucket(t, "same");
    struct tree_desc *td;
    assert_int_equal(bucket_tree(t, same, &td), 0);
    uint32_t sid = td->id;
    static struct lent want[600 + OB * NOK];
    size_t nw = 0;
    for (int i = 0; i < 600; i++) {
        uint8_t k[40];
        memcpy(k, "SAMEPREFIX12", 12);
        size_t len = 12 + (size_t)(tu_rand(&seed) % 20);
        for (size_t j = 12; j < len; j++)
            k[j] = (uint8_t)(tu_rand(&seed) % 3);
        keel_val kv = {k, len};
        int64_t at = 0;
        if (keel_expiry_at(t, same, kv, &at) == 0) /* a duplicate: already listed */
            continue;
        assert_int_equal(keel_put_ttl(t, same, kv, tu_val("s"), 100, 0), 0);
        lent_make(&want[nw++], clock_now + 100, sid, k, len);
    }
    assert_true(nw > 300);
    assert_int_equal(keel_commit(t), 0);
    assert_clean(db);
    size_t nall = nw;
    for (int b = 0; b < OB; b++)
        for (int i = 0; i < NOK; i++)
            if (oexp[b][i]) {
                assert_true(nall < 600 + OB * NOK);
                lent_make(&want[nall++], oexp[b][i], ids[b], okeys[i], oklen[i]);
            }
    expect_expiry_tree(db, want, nall);
    keel_close(db);
}

/* A commit that fails while applying the log (no memory) leaves the file as
 * the last commit left it. */
static long alloc_calls, alloc_fail_at;
static void *failing_malloc(size_t n) { return ++alloc_calls == alloc_fail_at ? NULL : malloc(n); }
static void *failing_realloc(void *p, size_t n) { return ++alloc_calls == alloc_fail_at ? NULL : realloc(p, n); }

static void test_log_commit_fails(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "ttl-log-fail");
    int failures = 0;
    for (long nth = 1;; nth++) {
        tu_remove(path);
        keel_db *db = open_db(-1, KEEL_NOSYNC);
        keel_txn *t = wbegin(db);
        char k[16];
        for (int i = 0; i < 400; i++) {
            snprintf(k, sizeof k, "c%03d", (i * 13) % 400);
            put_ttl(t, 0, k, "v", 1000);
        }
        assert_int_equal(keel_commit(t), 0);
        t = wbegin(db);
        for (int i = 0; i < 600; i++) { /* 600 new keys, 50 moved, 50 persisted, 50 deleted */
            snprintf(k, sizeof k, "d%03d", (i * 7) % 600);
            put_ttl(t, 0, k, "v", 2000);
        }
        for (int i = 0; i < 400; i += 2) {
            snprintf(k, sizeof k, "c%03d", i);
            if (i % 8 == 0)
                put_ttl(t, 0, k, "w", 3000);
            else if (i % 8 == 2)
                assert_int_equal(keel_persist(t, 0, tu_val(k)), 0);
            else if (i % 8 == 4)
                assert_int_equal(keel_del(t, 0, tu_val(k)), 0);
        }
        alloc_calls = 0;
        alloc_fail_at = nth;
        keel_os.malloc = failing_malloc;
        keel_os.realloc = failing_realloc;
        int rc = keel_commit(t);
        os_reset();
        bool reached = alloc_calls >= nth;
        if (rc) { /* nothing changed */
            assert_int_equal(rc, KEEL_NOMEM);
            failures++;
            assert_int_equal(expiry_entries(db), 400);
            assert_int_equal(phys_entries(db, 0), 400);
        } else { /* all of it (a failed allocation can be answered by a slower way) */
            assert_int_equal(expiry_entries(db), 400 + 600 - 50 - 50);
            assert_int_equal(phys_entries(db, 0), 400 + 600 - 50);
        }
        assert_clean(db);
        keel_close(db);
        if (!reached)
            break;
    }
    fprintf(stderr, "log commit: %d of the commit's allocations failed it\n", failures);
    assert_true(failures >= 3); /* at least the log's sort buffer and key buffer, and the pages */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_boundary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_all_expired, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cursor_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cursor_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ttl_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_clock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interactions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drop_bucket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_purge_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auto_purge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_space_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_purge_same_txn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_commit_fails, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
