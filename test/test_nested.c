/*
 * test_nested.c — nested write txns (keel_begin_nested).
 *
 * What a child must do: see its parent's state; hand its changes to the
 * parent on commit; on abort (also after a failed call) leave the parent
 * exactly as it was, down to the bytes the parent's commit writes.  The
 * strongest checks compare files: two databases run the same operations
 * with a fixed clock, one of them with children (aborted ones doing other
 * work, committed ones doing part of the same work), and after each commit
 * the two files must be byte for byte the same.  A randomized test runs
 * random operations at random nesting levels against a model that keeps a
 * stack of snapshots (KEEL_SEED, KEEL_TEST_SCALE).  And the rules: the
 * parent refused while a child lives, read txns' children, NULL arguments,
 * keel_close and keel_abort(parent) with live children, cursors of both.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "internal.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------- */

static int64_t clock_now = 1700000000000;
static int64_t test_clock(void *ctx)
{
    (void)ctx;
    return clock_now;
}

static uint64_t max_dirty; /* 0: the default */

static keel_db *open_db(const char *path)
{
    keel_options o = {0};
    o.flags = KEEL_NOSYNC;
    o.max_dirty = max_dirty;
    o.clock = test_clock;
    keel_db *db;
    int rc = keel_open(path, &o, &db);
    if (rc)
        fail_msg("open %s: %s", path, keel_strerror(rc));
    return db;
}

static void check_clean(keel_db *db)
{
    uint64_t problems = 99;
    assert_int_equal(keel_check(db, NULL, NULL, &problems), 0);
    assert_int_equal(problems, 0);
}

static keel_val kv(const char *s) { return tu_val(s); }

/* A growable text: the whole visible state of a txn, to compare. */
struct text {
    char *s;
    size_t n, cap;
};
static void text_add(struct text *t, const void *p, size_t n)
{
    if (t->n + n + 1 > t->cap) {
        t->cap = (t->n + n + 1) * 2;
        t->s = realloc(t->s, t->cap);
        assert_non_null(t->s);
    }
    memcpy(t->s + t->n, p, n);
    t->n += n;
    t->s[t->n] = 0;
}
static void text_fmt(struct text *t, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    text_add(t, buf, (size_t)n);
}

static int list_name(const char *name, void *ctx)
{
    text_fmt(ctx, "[%s]", name);
    return 0;
}

/* Every entry of one bucket with its expiry, then its counts. */
static void dump_bucket(keel_txn *txn, keel_bucket b, struct text *t)
{
    keel_cursor *c;
    keel_val k, v;
    assert_int_equal(keel_cursor_open(txn, b, &c), 0);
    int rc;
    for (rc = keel_cursor_first(c, &k, &v); rc == 0; rc = keel_cursor_next(c, &k, &v)) {
        int64_t e;
        assert_int_equal(keel_cursor_expiry(c, &e), 0);
        text_add(t, k.data, k.len);
        text_fmt(t, "=%zu:", v.len);
        text_add(t, v.data, v.len < 32 ? v.len : 32);
        text_fmt(t, "@%lld;", (long long)e);
    }
    assert_int_equal(rc, KEEL_NOTFOUND);
    keel_cursor_close(c);
    keel_stat st;
    assert_int_equal(keel_bucket_stat(txn, b, &st), 0);
    text_fmt(t, "{%llu %llu %llu %llu %u}", (unsigned long long)st.entries, (unsigned long long)st.leaf_pages,
             (unsigned long long)st.branch_pages, (unsigned long long)st.overflow_pages, st.depth);
}

static const char *bucket_names[] = {"alpha", "beta", "gamma", "delta"};
#define NBUCKETS 4

/* The txn's whole view: bucket list, every bucket, the meta's counts. */
static char *dump_txn(keel_txn *txn)
{
    struct text t = {0};
    text_add(&t, "", 0);
    assert_int_equal(keel_bucket_list(txn, list_name, &t), 0);
    dump_bucket(txn, KEEL_DEFAULT_BUCKET, &t);
    for (int i = 0; i < NBUCKETS; i++) {
        keel_bucket b;
        int rc = keel_bucket_open(txn, bucket_names[i], 0, &b);
        if (rc == KEEL_NOTFOUND)
            continue;
        assert_int_equal(rc, 0);
        text_fmt(&t, "<%s>", bucket_names[i]);
        dump_bucket(txn, b, &t);
    }
    return t.s;
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(n ? (size_t)n : 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void assert_same_files(const char *a, const char *b)
{
    size_t la, lb;
    uint8_t *x = read_file(a, &la), *y = read_file(b, &lb);
    assert_int_equal(la, lb);
    for (size_t i = 0; i < la; i++)
        if (x[i] != y[i])
            fail_msg("%s and %s differ at byte %zu (page %zu)", a, b, i, i / 4096);
    free(x);
    free(y);
}

/* ---- random work -------------------------------------------------------- */

static void key_of(char *k, size_t size, uint64_t i) { snprintf(k, size, "key%05llu", (unsigned long long)i); }

static uint8_t valbuf[40000];

static keel_val random_value(uint64_t *rng)
{
    uint64_t r = tu_rand(rng);
    size_t len = r % 100 < 3 ? 5000 + r % 20000 : r % 100 < 10 ? 1000 + r % 1500 : r % 60;
    uint8_t c = (uint8_t)('a' + (r >> 32) % 26);
    memset(valbuf, c, len);
    return (keel_val){valbuf, len};
}

/* A bucket of the txn by number (0 = default); creates it when asked. */
static int bucket_of(keel_txn *txn, unsigned n, bool create, keel_bucket *b)
{
    if (n == 0) {
        *b = KEEL_DEFAULT_BUCKET;
        return 0;
    }
    return keel_bucket_open(txn, bucket_names[n - 1], create ? KEEL_CREATE : 0, b);
}

/* One random operation; every result that is not an answer fails the test. */
static void random_op(keel_txn *txn, uint64_t *rng, unsigned keyspace)
{
    uint64_t r = tu_rand(rng);
    char k[32];
    key_of(k, sizeof k, (r >> 8) % keyspace);
    keel_bucket b;
    unsigned which = (unsigned)((r >> 40) % (NBUCKETS + 1));
    unsigned op = (unsigned)(r % 100);
    int rc = bucket_of(txn, which, op < 50, &b);
    if (rc == KEEL_NOTFOUND)
        return;
    assert_int_equal(rc, 0);
    if (op < 50) {
        rc = keel_put(txn, b, kv(k), random_value(rng), 0);
    } else if (op < 65) {
        rc = keel_del(txn, b, kv(k));
    } else if (op < 75) {
        rc = keel_put_ttl(txn, b, kv(k), random_value(rng), 1 + (int64_t)(r >> 50) % 3000, 0);
    } else if (op < 82) {
        rc = keel_expire(txn, b, kv(k), 1 + (int64_t)(r >> 50) % 3000);
    } else if (op < 85) {
        rc = keel_persist(txn, b, kv(k));
    } else if (op < 88) {
        rc = which ? keel_bucket_drop(txn, b) : 0;
    } else if (op < 90) {
        size_t purged;
        rc = keel_purge(txn, (size_t)(r >> 50) % 50, &purged);
    } else if (op < 95) { /* a range of puts: splits */
        for (unsigned i = 0; i < 40 && !rc; i++) {
            key_of(k, sizeof k, ((r >> 8) + i) % keyspace);
            rc = keel_put(txn, b, kv(k), (keel_val){"v", 1}, 0);
        }
    } else { /* a range of deletes: merges */
        for (unsigned i = 0; i < 40 && (!rc || rc == KEEL_NOTFOUND); i++) {
            key_of(k, sizeof k, ((r >> 8) + i) % keyspace);
            rc = keel_del(txn, b, kv(k));
        }
    }
    if (rc && rc != KEEL_NOTFOUND)
        fail_msg("op %u: %s", op, keel_strerror(rc));
}

/* ---- the basics --------------------------------------------------------- */

static void test_sees_parent_and_parent_refused(void **state)
{
    (void)state;
    char path[4096];
    tu_path(path, sizeof path, "nested-basic");
    keel_db *db = open_db(path);
    keel_txn *t, *c;
    keel_val v;
    assert_int_equal(keel_begin(db, 0, &t), 0);
    assert_int_equal(keel_put(t, 0, kv("a"), kv("1"), 0), 0);
    keel_cursor *pc;
    assert_int_equal(keel_cursor_open(t, 0, &pc), 0);
    assert_int_equal(keel_cursor_first(pc, &v, NULL), 0);
    assert_int_equal(keel_begin_nested(t, &c), 0);
    assert_non_null(c);
    assert_int_equal(keel_txn_id(c), keel_txn_id(t));
    assert_int_equal(keel_get(c, 0, kv("a"), &v), 0);
    assert_memory_equal(v.data, "1", 1);
    /* every call on the parent is refused, and says why */
    assert_int_equal(keel_get(t, 0, kv("a"), &v), KEEL_BADTXN);
    assert_non_null(strstr(keel_error_detail(), "live child"));
    assert_int_equal(keel_put(t, 0, kv("b"), kv("2"), 0), KEEL_BADTXN);
    assert_int_equal(keel_del(t, 0, kv("a")), KEEL_BADTXN);
    assert_int_equal(keel_cursor_next(pc, &v, NULL), KEEL_BADTXN);
    keel_cursor *pc2;
    assert_int_equal(keel_cursor_open(t, 0, &pc2), KEEL_BADTXN);
    keel_txn *c2;
    assert_int_equal(keel_begin_nested(t, &c2), KEEL_BADTXN);
    assert_null(c2);
    assert_int_equal(keel_commit(t), KEEL_BADTXN); /* nothing ends */
    assert_int_equal(keel_put(c, 0, kv("b"), kv("2"), 0), 0);
    assert_int_equal(keel_commit(c), 0);
    assert_int_equal(keel_get(t, 0, kv("b"), &v), 0);
    assert_memory_equal(v.data, "2", 1);
    /* the parent's cursor looks again: on "a", then "b" */
    assert_int_equal(keel_cursor_current(pc, &v, NULL), 0);
    assert_memory_equal(v.data, "a", 1);
    assert_int_equal(keel_cursor_next(pc, &v, NULL), 0);
    assert_memory_equal(v.data, "b", 1);
    keel_cursor_close(pc);
    assert_int_equal(keel_commit(t), 0);
    keel_close(db);
    db = open_db(path);
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
    assert_int_equal(keel_get(t, 0, kv("b"), &v), 0);
    keel_abort(t);
    check_clean(db);
    keel_close(db);
    tu_remove(path);
}

static void test_arguments_and_read_txns(void **state)
{
    (void)state;
    char path[4096];
    tu_path(path, sizeof path, "nested-args");
    keel_db *db = open_db(path);
    keel_txn *t, *c = (keel_txn *)1;
    assert_int_equal(keel_begin_nested(NULL, &c), KEEL_BADARG);
    assert_null(c);
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
    assert_int_equal(keel_begin_nested(t, NULL), KEEL_BADARG);
    assert_int_equal(keel_begin_nested(t, &c), KEEL_READONLY);
    assert_null(c);
    keel_abort(t);
    assert_int_equal(keel_begin_nested(t, &c), KEEL_BADTXN); /* ended */
    /* a failed txn has no children */
    assert_int_equal(keel_begin(db, 0, &t), 0);
    t->error = KEEL_NOMEM;
    assert_int_equal(keel_begin_nested(t, &c), KEEL_BADTXN);
    keel_abort(t);
    keel_close(db);
    tu_remove(path);
}

/* Children of children; each commits or aborts.  The model: a stack of
 * views, one per level. */
static void test_deep_nesting(void **state)
{
    (void)state;
    char path[4096];
    tu_path(path, sizeof path, "nested-deep");
    keel_db *db = open_db(path);
    enum { DEPTH = 12 };
    for (unsigned pattern = 0; pattern < 64; pattern++) {
        keel_txn *t[DEPTH + 1];
        char *view[DEPTH + 1];
        assert_int_equal(keel_begin(db, 0, &t[0]), 0);
        uint64_t rng = pattern + 1;
        for (int i = 0; i < 20; i++)
            random_op(t[0], &rng, 300);
        view[0] = dump_txn(t[0]);
        for (int l = 1; l <= DEPTH; l++) {
            assert_int_equal(keel_begin_nested(t[l - 1], &t[l]), 0);
            char *seen = dump_txn(t[l]);
            assert_string_equal(seen, view[l - 1]);
            free(seen);
            for (int i = 0; i < 15; i++)
                random_op(t[l], &rng, 300);
            view[l] = dump_txn(t[l]);
        }
        for (int l = DEPTH; l >= 1; l--) {
            bool commit = (tu_rand(&rng) >> 7) & 1;
            if (commit) {
                assert_int_equal(keel_commit(t[l]), 0);
                free(view[l - 1]);
                view[l - 1] = view[l];
            } else {
                keel_abort(t[l]);
                free(view[l]);
            }
            char *now = dump_txn(t[l - 1]);
            assert_string_equal(now, view[l - 1]);
            free(now);
        }
        assert_int_equal(keel_commit(t[0]), 0);
        check_clean(db);
        assert_int_equal(keel_begin(db, KEEL_RDONLY, &t[0]), 0);
        char *now = dump_txn(t[0]);
        assert_string_equal(now, view[0]);
        free(now);
        free(view[0]);
        keel_abort(t[0]);
    }
    /* the nesting limit */
    keel_txn *chain[TXN_NEST_MAX + 2];
    assert_int_equal(keel_begin(db, 0, &chain[0]), 0);
    for (int l = 1; l <= TXN_NEST_MAX; l++)
        assert_int_equal(keel_begin_nested(chain[l - 1], &chain[l]), 0);
    assert_int_equal(keel_begin_nested(chain[TXN_NEST_MAX], &chain[TXN_NEST_MAX + 1]), KEEL_BADTXN);
    assert_int_equal(keel_put(chain[TXN_NEST_MAX], 0, kv("deep"), kv("x"), 0), 0);
    keel_abort(chain[0]); /* all of them */
    keel_close(db);
    tu_remove(path);
}

/* ---- the file: children leave no trace of what they undid ---------------- */

/* Two databases, the same operations; in the second, aborted children do
 * other work between them (deep, wide, buckets, TTLs, purges, bulk loads and
 * deletes), and committed children do part of the same work.  After each
 * commit the files are the same bytes: an abort restored the parent's state
 * exactly (the allocator's lists included, or later pages would differ), a
 * commit handed over exactly what the work did. */
static void child_junk(keel_txn *parent, uint64_t *rng, int depth)
{
    keel_txn *c;
    assert_int_equal(keel_begin_nested(parent, &c), 0);
    uint64_t r = tu_rand(rng);
    if (r % 8 == 0) { /* thousands of keys: splits, then merges */
        char k[32];
        keel_bucket b;
        assert_int_equal(bucket_of(c, 1 + (unsigned)(r >> 8) % NBUCKETS, true, &b), 0);
        for (unsigned i = 0; i < 3000; i++) {
            key_of(k, sizeof k, (i * 7919u) % 6000);
            assert_int_equal(keel_put(c, b, kv(k), (keel_val){valbuf, 100}, 0), 0);
        }
        for (unsigned i = 0; i < 2500; i++) {
            key_of(k, sizeof k, (i * 7919u) % 6000);
            assert_int_equal(keel_del(c, b, kv(k)), 0);
        }
    }
    unsigned n = (unsigned)(tu_rand(rng) % 30);
    for (unsigned i = 0; i < n; i++)
        random_op(c, rng, 2000);
    if (depth < 4 && tu_rand(rng) % 3 == 0)
        child_junk(c, rng, depth + 1); /* aborted inside: the child goes on */
    if (tu_rand(rng) % 4 == 0)
        random_op(c, rng, 2000);
    struct text names = {0};
    assert_int_equal(keel_bucket_list(c, list_name, &names), 0); /* flushes the descriptors */
    free(names.s);
    keel_abort(c);
}

/* children: aborted ones with other work; with commits, committed ones doing
 * part of the same work (not with spills: a spill writes pages that are
 * freed later, garbage in free space, at times a child changes) */
static void run_same_work(keel_db *db, uint64_t seed, bool children, bool commits)
{
    uint64_t main_rng = seed, junk_rng = seed * 31 + 7;
    long rounds = 20 * tu_scale();
    for (long round = 0; round < rounds; round++) {
        keel_txn *t;
        assert_int_equal(keel_begin(db, 0, &t), 0);
        keel_txn *stack[4] = {t};
        int top = 0;
        for (int step = 0; step < 150; step++) {
            if (children && tu_rand(&junk_rng) % 10 == 0)
                child_junk(stack[top], &junk_rng, 1);
            if (commits && top < 3 && tu_rand(&junk_rng) % 12 == 0) { /* the same work, in a child */
                assert_int_equal(keel_begin_nested(stack[top], &stack[top + 1]), 0);
                top++;
            }
            if (commits && top > 0 && tu_rand(&junk_rng) % 8 == 0)
                assert_int_equal(keel_commit(stack[top--]), 0);
            random_op(stack[top], &main_rng, 2000);
        }
        while (top > 0)
            assert_int_equal(keel_commit(stack[top--]), 0);
        assert_int_equal(keel_commit(t), 0);
        clock_now += 700; /* TTLs run out: the commits purge */
    }
}

static void test_same_file_as_without_children(void **state)
{
    (void)state;
    char pa[4096], pb[4096];
    tu_path(pa, sizeof pa, "nested-plain");
    tu_path(pb, sizeof pb, "nested-children");
    for (uint64_t seed = tu_seed(1); seed < tu_seed(1) + 4; seed++) {
        int64_t start = clock_now;
        bool spills = seed & 1; /* the parent spills between its children (which never spill) */
        max_dirty = spills ? 96 * 1024 : 0;
        keel_db *a = open_db(pa);
        run_same_work(a, seed, false, false);
        check_clean(a);
        keel_stat sa, sb;
        assert_int_equal(keel_db_stat(a, &sa), 0);
        keel_close(a);
        clock_now = start;
        keel_db *b = open_db(pb);
        run_same_work(b, seed, true, !spills);
        check_clean(b);
        assert_int_equal(keel_db_stat(b, &sb), 0);
        keel_close(b);
        assert_int_equal(sa.free_pages, sb.free_pages);
        assert_int_equal(sa.file_size, sb.file_size);
        assert_int_equal(sa.entries, sb.entries);
        assert_same_files(pa, pb);
        tu_remove(pa);
        tu_remove(pb);
    }
    max_dirty = 0;
}

/* No spill while a child lives: its pages and its parent's stay in memory,
 * and the parent's next write after the child ends spills as usual. */
static void test_no_spill_in_child(void **state)
{
    (void)state;
    char path[4096];
    tu_path(path, sizeof path, "nested-spill");
    max_dirty = 64 * 1024;
    keel_db *db = open_db(path);
    max_dirty = 0;
    keel_txn *t, *c;
    char k[32];
    assert_int_equal(keel_begin(db, 0, &t), 0);
    for (int i = 0; i < 3000; i++) { /* the parent spills */
        key_of(k, sizeof k, (uint64_t)i);
        assert_int_equal(keel_put(t, 0, kv(k), (keel_val){valbuf, 200}, 0), 0);
    }
    assert_true(t->dirty_bytes <= 64 * 1024 + 4 * 4096);
    char *before = dump_txn(t);
    for (int commit = 0; commit < 2; commit++) {
        assert_int_equal(keel_begin_nested(t, &c), 0);
        for (int i = 0; i < 3000; i++) { /* touches the spilled pages */
            key_of(k, sizeof k, (uint64_t)i * 2);
            assert_int_equal(keel_put(c, 0, kv(k), (keel_val){valbuf, 150 + commit}, 0), 0);
        }
        assert_true(c->dirty_bytes > 4 * 64 * 1024); /* nothing spilled */
        if (commit) {
            assert_int_equal(keel_commit(c), 0);
            assert_true(t->dirty_bytes > 4 * 64 * 1024);
            assert_int_equal(keel_put(t, 0, kv("z"), kv("z"), 0), 0);
            assert_true(t->dirty_bytes <= 64 * 1024 + 4 * 4096); /* the next write spilled */
        } else {
            keel_abort(c);
            char *after = dump_txn(t);
            assert_string_equal(before, after);
            free(after);
        }
    }
    free(before);
    assert_int_equal(keel_commit(t), 0);
    check_clean(db);
    keel_close(db);
    tu_remove(path);
}

/* ---- buckets, TTLs, a big child ------------------------------------------ */

static void test_buckets_in_child(void **state)
{
    (void)state;
    char path[4096];
    tu_path(path, sizeof path, "nested-buckets");
    keel_db *db = open_db(path);
    keel_txn *t, *c;
    keel_bucket keep, gone, made;
    keel_val v;
    assert_int_equal(keel_begin(db, 0, &t), 0);
    assert_int_equal(keel_bucket_open(t, "keep", KEEL_CREATE, &keep), 0);
    assert_int_equal(keel_put(t, keep, kv("k"), kv("v"), 0), 0);
    assert_int_equal(keel_commit(t), 0);

    assert_int_equal(keel_begin(db, 0, &t), 0);
    assert_int_equal(keel_bucket_open(t, "keep", 0, &keep), 0);
    char *before = dump_txn(t);
    keel_cursor *kc;
    assert_int_equal(keel_cursor_open(t, keep, &kc), 0);
    assert_int_equal(keel_cursor_first(kc, &v, NULL), 0);
    /* a child drops one bucket, creates others, and aborts */
    assert_int_equal(keel_begin_nested(t, &c), 0);
    assert_int_equal(keel_bucket_drop(c, keep), 0);
    assert_int_equal(keel_bucket_open(c, "made", KEEL_CREATE, &made), 0);
    assert_int_equal(keel_put(c, made, kv("m"), kv("1"), 0), 0);
    assert_int_equal(keel_bucket_open(c, "gone", KEEL_CREATE, &gone), 0);
    assert_int_equal(keel_bucket_drop(c, gone), 0);
    keel_abort(c);
    char *after = dump_txn(t);
    assert_string_equal(before, after);
    free(after);
    assert_int_equal(keel_get(t, made, kv("m"), &v), KEEL_BADBUCKET); /* made in the child: gone */
    assert_int_equal(keel_get(t, keep, kv("k"), &v), 0);
    assert_int_equal(keel_cursor_current(kc, &v, NULL), 0);
    assert_int_equal(keel_bucket_open(t, "made", 0, &made), KEEL_NOTFOUND);
    /* a child drops it and commits: the parent's cursor is detached */
    assert_int_equal(keel_begin_nested(t, &c), 0);
    assert_int_equal(keel_bucket_drop(c, keep), 0);
    assert_int_equal(keel_bucket_open(c, "made", KEEL_CREATE, &made), 0);
    assert_int_equal(keel_put(c, made, kv("m"), kv("2"), 0), 0);
    assert_int_equal(keel_commit(c), 0);
    assert_int_equal(keel_cursor_next(kc, &v, NULL), KEEL_BADBUCKET);
    assert_int_equal(keel_get(t, keep, kv("k"), &v), KEEL_BADBUCKET);
    assert_int_equal(keel_get(t, made, kv("m"), &v), 0);
    /* created again in a grandchild's commit: the cursor follows it */
    assert_int_equal(keel_begin_nested(t, &c), 0);
    keel_txn *g;
    assert_int_equal(keel_begin_nested(c, &g), 0);
    assert_int_equal(keel_bucket_open(g, "keep", KEEL_CREATE, &keep), 0);
    assert_int_equal(keel_put(g, keep, kv("z"), kv("new"), 0), 0);
    assert_int_equal(keel_commit(g), 0);
    assert_int_equal(keel_commit(c), 0);
    assert_int_equal(keel_cursor_first(kc, &v, NULL), 0);
    assert_memory_equal(v.data, "z", 1);
    keel_cursor_close(kc);
    assert_int_equal(keel_commit(t), 0);
    check_clean(db);
    keel_close(db);
    db = open_db(path);
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
    assert_int_equal(keel_bucket_open(t, "made", 0, &made), 0);
    assert_int_equal(keel_get(t, made, kv("m"), &v), 0);
    assert_memory_equal(v.data, "2", 1);
    assert_int_equal(keel_bucket_open(t, "keep", 0, &keep), 0);
    assert_int_equal(keel_get(t, keep, kv("k"), &v), KEEL_NOTFOUND);
    keel_abort(t);
    free(before);
    keel_close(db);
    tu_remove(path);
}

static void test_ttls_in_child(void **state)
{
    (void)state;
    char path[4096];
    tu_path(path, sizeof path, "nested-ttl");
    keel_db *db = open_db(path);
    keel_txn *t, *c;
    char k[32];
    assert_int_equal(keel_begin(db, 0, &t), 0);
    for (int i = 0; i < 500; i++) {
        key_of(k, sizeof k, (uint64_t)i);
        assert_int_equal(keel_put_ttl(t, 0, kv(k), kv("v"), i % 2 ? 1000 : 100000, 0), 0);
    }
    assert_int_equal(keel_commit(t), 0);
    clock_now += 5000; /* the odd ones expired */
    assert_int_equal(keel_begin(db, 0, &t), 0);
    for (int i = 500; i < 700; i++) { /* in the parent's log, not applied yet */
        key_of(k, sizeof k, (uint64_t)i);
        assert_int_equal(keel_put_ttl(t, 0, kv(k), kv("w"), 3000, 0), 0);
    }
    char *before = dump_txn(t);
    for (int round = 0; round < 3; round++) {
        assert_int_equal(keel_begin_nested(t, &c), 0);
        for (int i = 0; i < 700; i += 3) {
            key_of(k, sizeof k, (uint64_t)i);
            int rc = keel_expire(c, 0, kv(k), 1 + i);
            assert_true(rc == 0 || rc == KEEL_NOTFOUND);
            assert_int_equal(keel_persist(c, 0, kv("nokey")), KEEL_NOTFOUND);
        }
        size_t purged = 0;
        assert_int_equal(keel_purge(c, round == 2 ? 10 : 1000, &purged), 0); /* applies the log */
        assert_true(purged > 0);
        keel_abort(c);
        char *after = dump_txn(t);
        assert_string_equal(before, after);
        free(after);
    }
    free(before);
    assert_int_equal(keel_commit(t), 0);
    check_clean(db); /* the expiry index agrees with the buckets */
    keel_close(db);
    tu_remove(path);
}

/* A child that splits and merges many pages, then aborts: the parent's
 * commit leaks nothing (keel_check accounts for every page; the free counts
 * equal those of the same commit without the child). */
static void test_big_child_abort(void **state)
{
    (void)state;
    char pa[4096], pb[4096];
    tu_path(pa, sizeof pa, "nested-big-a");
    tu_path(pb, sizeof pb, "nested-big-b");
    keel_stat st[2];
    for (int with = 0; with < 2; with++) {
        const char *path = with ? pb : pa;
        keel_db *db = open_db(path);
        keel_txn *t, *c;
        char k[32];
        assert_int_equal(keel_begin(db, 0, &t), 0);
        for (int i = 0; i < 4000; i++) {
            key_of(k, sizeof k, (uint64_t)i * 3);
            assert_int_equal(keel_put(t, 0, kv(k), (keel_val){valbuf, 200}, 0), 0);
        }
        assert_int_equal(keel_commit(t), 0);
        assert_int_equal(keel_begin(db, 0, &t), 0);
        for (int i = 0; i < 1000; i++) {
            key_of(k, sizeof k, (uint64_t)i * 5);
            keel_del(t, 0, kv(k));
        }
        if (with) {
            assert_int_equal(keel_begin_nested(t, &c), 0);
            for (int i = 0; i < 12000; i++) {
                key_of(k, sizeof k, (uint64_t)i);
                assert_int_equal(keel_put(c, 0, kv(k), (keel_val){valbuf, i % 50 ? 150 : 9000}, 0), 0);
            }
            for (int i = 0; i < 12000; i += 2) {
                key_of(k, sizeof k, (uint64_t)i);
                assert_int_equal(keel_del(c, 0, kv(k)), 0);
            }
            keel_bucket b;
            assert_int_equal(keel_bucket_open(c, "alpha", KEEL_CREATE, &b), 0);
            for (int i = 0; i < 3000; i++) {
                key_of(k, sizeof k, (uint64_t)i);
                assert_int_equal(keel_put(c, b, kv(k), (keel_val){valbuf, 300}, 0), 0);
            }
            assert_int_equal(keel_bucket_drop(c, b), 0);
            assert_int_equal(keel_bucket_drop(c, 0), 0); /* the default bucket emptied */
            keel_abort(c);
        }
        for (int i = 0; i < 500; i++) {
            key_of(k, sizeof k, (uint64_t)i * 11 + 1);
            assert_int_equal(keel_put(t, 0, kv(k), (keel_val){valbuf, 100}, 0), 0);
        }
        assert_int_equal(keel_commit(t), 0);
        check_clean(db);
        assert_int_equal(keel_db_stat(db, &st[with]), 0);
        keel_close(db);
    }
    assert_int_equal(st[0].free_pages, st[1].free_pages);
    assert_int_equal(st[0].leaf_pages + st[0].branch_pages + st[0].overflow_pages,
                     st[1].leaf_pages + st[1].branch_pages + st[1].overflow_pages);
    assert_int_equal(st[0].file_size, st[1].file_size);
    assert_same_files(pa, pb);
    tu_remove(pa);
    tu_remove(pb);
}

/* ---- ends: cursors, keel_close, keel_abort(parent), failures -------------- */

static void test_child_cursors_after_end(void **state)
{
    (void)state;
    char path[4096];
    tu_path(path, sizeof path, "nested-cursors");
    keel_db *db = open_db(path);
    keel_txn *t, *c;
    keel_val k, v;
    assert_int_equal(keel_begin(db, 0, &t), 0);
    assert_int_equal(keel_put(t, 0, kv("a"), kv("1"), 0), 0);
    assert_int_equal(keel_put(t, 0, kv("b"), kv("2"), 0), 0);
    assert_int_equal(keel_put(t, 0, kv("c"), kv("3"), 0), 0);
    keel_cursor *pc, *cc;
    assert_int_equal(keel_cursor_open(t, 0, &pc), 0);
    assert_int_equal(keel_cursor_seek(pc, kv("b"), &k, &v), 0);
    for (int commit = 0; commit < 2; commit++) {
        assert_int_equal(keel_begin_nested(t, &c), 0);
        assert_int_equal(keel_cursor_open(c, 0, &cc), 0);
        assert_int_equal(keel_cursor_seek(cc, kv("b"), &k, &v), 0);
        assert_int_equal(keel_cursor_del(cc), 0);
        if (commit)
            assert_int_equal(keel_commit(c), 0);
        else
            keel_abort(c);
        assert_int_equal(keel_cursor_next(cc, &k, &v), KEEL_BADCURSOR);
        assert_int_equal(keel_cursor_current(cc, &k, &v), KEEL_BADCURSOR);
        keel_cursor_close(cc);
        /* the parent's cursor: on "b" after the abort; "b" gone after the commit, next is "c" */
        if (!commit) {
            assert_int_equal(keel_cursor_current(pc, &k, &v), 0);
            assert_memory_equal(k.data, "b", 1);
        } else {
            assert_int_equal(keel_cursor_next(pc, &k, &v), 0);
            assert_memory_equal(k.data, "c", 1);
        }
    }
    keel_cursor_close(pc);
    assert_int_equal(keel_commit(t), 0);
    keel_close(db);
    tu_remove(path);
}

static void test_close_and_parent_abort_with_children(void **state)
{
    (void)state;
    char path[4096];
    tu_path(path, sizeof path, "nested-close");
    keel_db *db = open_db(path);
    keel_txn *t, *c, *g;
    keel_val v;
    assert_int_equal(keel_begin(db, 0, &t), 0);
    assert_int_equal(keel_put(t, 0, kv("base"), kv("1"), 0), 0);
    assert_int_equal(keel_commit(t), 0);
    /* keel_abort(parent): the children go first */
    assert_int_equal(keel_begin(db, 0, &t), 0);
    assert_int_equal(keel_put(t, 0, kv("p"), kv("1"), 0), 0);
    assert_int_equal(keel_begin_nested(t, &c), 0);
    keel_bucket b;
    assert_int_equal(keel_bucket_open(c, "alpha", KEEL_CREATE, &b), 0);
    assert_int_equal(keel_put(c, b, kv("c"), kv("1"), 0), 0);
    assert_int_equal(keel_begin_nested(c, &g), 0);
    assert_int_equal(keel_put(g, 0, kv("g"), kv("1"), 0), 0);
    keel_abort(t);
    assert_int_equal(keel_put(g, 0, kv("x"), kv("1"), 0), KEEL_BADTXN); /* ended (until reused) */
    /* the writer lock was let go */
    assert_int_equal(keel_begin(db, 0, &t), 0);
    assert_int_equal(keel_get(t, 0, kv("p"), &v), KEEL_NOTFOUND);
    assert_int_equal(keel_get(t, 0, kv("base"), &v), 0);
    assert_int_equal(keel_bucket_open(t, "alpha", 0, &b), KEEL_NOTFOUND);
    /* keel_close with a chain of children and their cursors */
    assert_int_equal(keel_put(t, 0, kv("q"), kv("1"), 0), 0);
    assert_int_equal(keel_begin_nested(t, &c), 0);
    assert_int_equal(keel_begin_nested(c, &g), 0);
    for (int i = 0; i < 2000; i++) {
        char k[32];
        key_of(k, sizeof k, (uint64_t)i);
        assert_int_equal(keel_put(g, 0, kv(k), (keel_val){valbuf, 100}, 0), 0);
    }
    keel_cursor *cur;
    assert_int_equal(keel_cursor_open(g, 0, &cur), 0);
    keel_close(db);
    keel_cursor_close(cur); /* detached: freed */
    db = open_db(path);
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
    assert_int_equal(keel_get(t, 0, kv("q"), &v), KEEL_NOTFOUND);
    assert_int_equal(keel_get(t, 0, kv("base"), &v), 0);
    keel_abort(t);
    check_clean(db);
    keel_close(db);
    tu_remove(path);
}

/* Allocations fail from the nth on, in a child's work: it fails part way
 * (and can only abort), and its abort leaves the parent as it was. */
static long fail_after;
static void *fail_malloc(size_t n) { return fail_after-- > 0 ? malloc(n) : NULL; }
static void *fail_realloc(void *p, size_t n) { return fail_after-- > 0 ? realloc(p, n) : NULL; }

static void test_failed_child_abort(void **state)
{
    (void)state;
    char path[4096];
    tu_path(path, sizeof path, "nested-fail");
    keel_db *db = open_db(path);
    keel_txn *t, *c;
    char k[32];
    assert_int_equal(keel_begin(db, 0, &t), 0);
    for (int i = 0; i < 3000; i++) {
        key_of(k, sizeof k, (uint64_t)i * 2);
        assert_int_equal(keel_put_ttl(t, 0, kv(k), (keel_val){valbuf, 120}, 100000, 0), 0);
    }
    assert_int_equal(keel_commit(t), 0);
    int failed = 0;
    for (long n = 1; n < 3000; n += 37 + n / 4) {
        assert_int_equal(keel_begin(db, 0, &t), 0);
        for (int i = 0; i < 300; i++) { /* the parent's own dirty pages and log */
            key_of(k, sizeof k, (uint64_t)i * 7);
            assert_int_equal(keel_put_ttl(t, 0, kv(k), (keel_val){valbuf, 90}, 50000, 0), 0);
        }
        char *before = dump_txn(t);
        assert_int_equal(keel_begin_nested(t, &c), 0);
        fail_after = n;
        keel_os.malloc = fail_malloc;
        keel_os.realloc = fail_realloc;
        int rc = 0;
        keel_bucket b = 0;
        for (int i = 0; i < 4000 && !rc; i++) {
            key_of(k, sizeof k, (uint64_t)i * 3 + 1);
            if (i == 2000 && (rc = keel_bucket_open(c, "alpha", KEEL_CREATE, &b)))
                break;
            if (i % 3 == 0)
                rc = keel_del(c, 0, kv(k));
            else
                rc = keel_put_ttl(c, b, kv(k), (keel_val){valbuf, i % 40 ? 100 : 6000}, 1000 + i, 0);
            if (rc == KEEL_NOTFOUND)
                rc = 0;
            if (!rc && i % 500 == 0)
                rc = keel_purge(c, 5, NULL);
        }
        if (rc) {
            failed++;
            assert_int_equal(rc, KEEL_NOMEM);
        }
        int crc = keel_commit(c); /* a failed child: refused, aborted */
        os_reset();
        if (rc)
            assert_int_not_equal(crc, 0);
        else if (crc) /* the commit's own reservation failed: aborted too */
            assert_int_equal(crc, KEEL_NOMEM);
        if (rc || crc) {
            char *after = dump_txn(t);
            assert_string_equal(before, after);
            free(after);
        }
        free(before);
        assert_int_equal(keel_commit(t), 0);
        check_clean(db);
    }
    assert_true(failed > 5);
    keel_close(db);
    tu_remove(path);
}

/* ---- a randomized test against a model ----------------------------------- */

/* The model: per bucket (0 = default) whether it exists and its entries
 * (key index -> value length and first byte, expiry), over a small key space. */
#define MKEYS 400
struct mentry {
    uint32_t len; /* 0: absent; else value length + 1 */
    uint8_t first;
    int64_t expiry;
};
struct mstate {
    bool exists[NBUCKETS + 1];
    struct mentry e[NBUCKETS + 1][MKEYS];
};

static bool m_live(const struct mentry *e, int64_t now) { return e->len && (e->expiry == 0 || e->expiry > now); }

/* The txn's view against the model: every bucket, entry by entry, and the counts. */
static void m_compare(keel_txn *txn, const struct mstate *m, int64_t now)
{
    for (unsigned b = 0; b <= NBUCKETS; b++) {
        keel_bucket h;
        int rc = bucket_of(txn, b, false, &h);
        if (!m->exists[b]) {
            assert_int_equal(rc, KEEL_NOTFOUND);
            continue;
        }
        assert_int_equal(rc, 0);
        keel_cursor *c;
        keel_val k, v;
        assert_int_equal(keel_cursor_open(txn, h, &c), 0);
        unsigned i = 0;
        uint64_t total = 0;
        for (rc = keel_cursor_first(c, &k, &v); rc == 0; rc = keel_cursor_next(c, &k, &v), i++) {
            while (i < MKEYS && !m_live(&m->e[b][i], now))
                i++;
            assert_true(i < MKEYS);
            char want[32];
            key_of(want, sizeof want, i);
            assert_int_equal(k.len, strlen(want));
            assert_memory_equal(k.data, want, k.len);
            assert_int_equal(v.len + 1, m->e[b][i].len);
            if (v.len)
                assert_int_equal(((const uint8_t *)v.data)[0], m->e[b][i].first);
            int64_t e;
            assert_int_equal(keel_cursor_expiry(c, &e), 0);
            assert_int_equal(e, m->e[b][i].expiry);
        }
        assert_int_equal(rc, KEEL_NOTFOUND);
        while (i < MKEYS && !m_live(&m->e[b][i], now))
            i++;
        assert_int_equal(i, MKEYS);
        keel_cursor_close(c);
        for (unsigned j = 0; j < MKEYS; j++)
            total += m->e[b][j].len != 0;
        keel_stat st;
        assert_int_equal(keel_bucket_stat(txn, h, &st), 0);
        assert_int_equal(st.entries, total); /* expired entries count until purged */
    }
}

/* One random change, to the txn and the model. */
static void m_op(keel_txn *txn, struct mstate *m, uint64_t *rng, int64_t now)
{
    uint64_t r = tu_rand(rng);
    unsigned b = (unsigned)((r >> 20) % (NBUCKETS + 1)), ki = (unsigned)((r >> 32) % MKEYS), op = (unsigned)(r % 100);
    char k[32];
    key_of(k, sizeof k, ki);
    keel_bucket h;
    int rc = bucket_of(txn, b, op < 45, &h);
    if (!m->exists[b] && op >= 45) {
        assert_int_equal(rc, KEEL_NOTFOUND);
        return;
    }
    assert_int_equal(rc, 0);
    m->exists[b] = true;
    struct mentry *e = &m->e[b][ki];
    bool live = m_live(e, now);
    if (op < 45) {
        keel_val v = random_value(rng);
        int64_t ttl = op < 15 ? 1 + (int64_t)(r >> 48) % 5000 : 0;
        rc = ttl ? keel_put_ttl(txn, h, kv(k), v, ttl, 0) : keel_put(txn, h, kv(k), v, 0);
        assert_int_equal(rc, 0);
        *e = (struct mentry){(uint32_t)v.len + 1, v.len ? ((const uint8_t *)v.data)[0] : 0, ttl ? now + ttl : 0};
    } else if (op < 65) {
        rc = keel_del(txn, h, kv(k));
        assert_int_equal(rc, live ? 0 : KEEL_NOTFOUND);
        if (live)
            e->len = 0;
    } else if (op < 75) {
        int64_t ttl = 1 + (int64_t)(r >> 48) % 5000;
        assert_int_equal(keel_expire(txn, h, kv(k), ttl), live ? 0 : KEEL_NOTFOUND);
        if (live)
            e->expiry = now + ttl;
    } else if (op < 80) {
        assert_int_equal(keel_persist(txn, h, kv(k)), live ? 0 : KEEL_NOTFOUND);
        if (live)
            e->expiry = 0;
    } else if (op < 84) {
        assert_int_equal(keel_bucket_drop(txn, h), 0);
        memset(m->e[b], 0, sizeof m->e[b]);
        m->exists[b] = b == 0; /* the default bucket is emptied, not removed */
    } else if (op < 88) {
        size_t purged;
        assert_int_equal(keel_purge(txn, SIZE_MAX, &purged), 0);
        size_t want = 0;
        for (unsigned x = 0; x <= NBUCKETS; x++)
            for (unsigned j = 0; j < MKEYS; j++)
                if (m->e[x][j].len && !m_live(&m->e[x][j], now)) {
                    m->e[x][j].len = 0;
                    want++;
                }
        assert_int_equal(purged, want);
    } else { /* a run of puts: splits */
        for (unsigned i = 0; i < 60; i++) {
            unsigned j = (ki + i) % MKEYS;
            key_of(k, sizeof k, j);
            assert_int_equal(keel_put(txn, h, kv(k), (keel_val){valbuf, 300}, 0), 0);
            m->e[b][j] = (struct mentry){301, valbuf[0], 0};
        }
    }
}

static void test_random_against_model(void **state)
{
    (void)state;
    char path[4096];
    tu_path(path, sizeof path, "nested-model");
    uint64_t seed = tu_seed(20), rng = seed;
    keel_options o = {0};
    o.flags = KEEL_NOSYNC;
    o.clock = test_clock;
    o.purge_per_commit = -1; /* the model purges only when told */
    keel_db *db;
    assert_int_equal(keel_open(path, &o, &db), 0);
    enum { MAXD = 10 };
    struct mstate *stack = calloc(MAXD + 1, sizeof *stack), *committed = calloc(1, sizeof *committed);
    assert_non_null(stack);
    assert_non_null(committed);
    committed->exists[0] = stack[0].exists[0] = true;
    long steps = 20000 * tu_scale();
    keel_txn *txn[MAXD + 1];
    int top = -1;
    for (long step = 0; step < steps; step++) {
        if (top < 0) {
            assert_int_equal(keel_begin(db, 0, &txn[0]), 0);
            top = 0;
        }
        uint64_t r = tu_rand(&rng) % 100;
        if (r < 8 && top < MAXD) { /* a child: the model remembers where it began */
            assert_int_equal(keel_begin_nested(txn[top], &txn[top + 1]), 0);
            stack[top + 1] = stack[top];
            top++;
        } else if (r < 13 && top > 0) {
            assert_int_equal(keel_commit(txn[top]), 0);
            stack[top - 1] = stack[top];
            top--;
            m_compare(txn[top], &stack[top], clock_now);
        } else if (r < 18 && top > 0) { /* a child, and its own children with it */
            int level = 1 + (int)(tu_rand(&rng) % (uint64_t)top);
            if (tu_rand(&rng) % 3)
                level = top;
            keel_abort(txn[level]);
            top = level - 1;
            m_compare(txn[top], &stack[top], clock_now);
        } else if (r < 20) { /* the whole write txn, its children first */
            if (top == 0 && (tu_rand(&rng) & 1)) {
                assert_int_equal(keel_commit(txn[0]), 0);
                *committed = stack[0];
            } else {
                keel_abort(txn[0]);
                stack[0] = *committed;
            }
            top = -1;
            check_clean(db);
            clock_now += (int64_t)(tu_rand(&rng) % 3000); /* TTLs run out */
            keel_txn *rd;
            assert_int_equal(keel_begin(db, KEEL_RDONLY, &rd), 0);
            m_compare(rd, committed, clock_now);
            keel_abort(rd);
            continue;
        } else {
            m_op(txn[top], &stack[top], &rng, clock_now);
        }
        if (step % 50 == 0)
            m_compare(txn[top], &stack[top], clock_now);
    }
    if (top >= 0)
        keel_abort(txn[0]);
    free(stack);
    free(committed);
    keel_close(db);
    tu_remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sees_parent_and_parent_refused),
        cmocka_unit_test(test_arguments_and_read_txns),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_same_file_as_without_children),
        cmocka_unit_test(test_no_spill_in_child),
        cmocka_unit_test(test_buckets_in_child),
        cmocka_unit_test(test_ttls_in_child),
        cmocka_unit_test(test_big_child_abort),
        cmocka_unit_test(test_child_cursors_after_end),
        cmocka_unit_test(test_close_and_parent_abort_with_children),
        cmocka_unit_test(test_failed_child_abort),
        cmocka_unit_test(test_random_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
