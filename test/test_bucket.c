/*
 * test_bucket.c — bucket handles at scale (design.md sections 11 and 13).
 *
 *   - a commit visits the bucket states its txn touched, not one per handle
 *     the db ever made (counted through db->bucket_visits);
 *   - the handle table does not grow over create/drop cycles: a dropped
 *     bucket's handle is reclaimed once no txn can see the bucket, and a
 *     stale handle answers KEEL_BADBUCKET, never another bucket;
 *   - a read txn older than the drop keeps its handle working, and pins it;
 *   - a slot whose 8-bit generation is used up is retired, not wrapped;
 *   - a drop through another handle (as by another process) retires this
 *     handle's slot once one of its write txns finds the bucket gone;
 *   - many buckets (20,000 x KEEL_TEST_SCALE; 50 gives a million): created,
 *     found by name after a reopen, listed, dropped; the table's counts
 *     follow a model;
 *   - read txns in other threads open and read buckets while a writer
 *     creates and drops them.
 * Per-op costs are asserted through counts, never through timing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>

#include "internal.h"
#include "testutil.h"

#define OK(x) assert_int_equal((x), 0)

/* A commit flushes the states twice (before and after the purge) and the
 * txn's end resets them once: at most this many visits per touched state. */
#define VISITS_PER_STATE 3

static char path[4096];

static keel_db *open_db(const char *p)
{
    keel_options o = {0};
    o.flags = KEEL_NOSYNC; /* the tests count, they do not need durability */
    keel_db *db = NULL;
    OK(keel_open(p, &o, &db));
    return db;
}

static struct bucket_counts counts(keel_db *db)
{
    struct bucket_counts c;
    bucket_table_counts(db, &c);
    return c;
}

static void put_str(keel_txn *t, keel_bucket b, const char *k, const char *v)
{
    OK(keel_put(t, b, tu_val(k), tu_val(v), 0));
}

static void expect_str(keel_txn *t, keel_bucket b, const char *k, const char *v)
{
    keel_val out;
    OK(keel_get(t, b, tu_val(k), &out));
    assert_int_equal(out.len, strlen(v));
    assert_memory_equal(out.data, v, out.len);
}

static keel_bucket create_one(keel_db *db, const char *name)
{
    keel_txn *t;
    keel_bucket b;
    OK(keel_begin(db, 0, &t));
    OK(keel_bucket_open(t, name, KEEL_CREATE, &b));
    put_str(t, b, "k", name);
    OK(keel_commit(t));
    return b;
}

static void drop_one(keel_db *db, keel_bucket b)
{
    keel_txn *t;
    OK(keel_begin(db, 0, &t));
    OK(keel_bucket_drop(t, b));
    OK(keel_commit(t));
}

/* Every call that takes a handle answers KEEL_BADBUCKET for b. */
static void expect_bad(keel_txn *t, keel_bucket b)
{
    keel_val out;
    keel_stat st;
    keel_cursor *c;
    assert_int_equal(keel_get(t, b, tu_val("k"), &out), KEEL_BADBUCKET);
    assert_int_equal(keel_bucket_stat(t, b, &st), KEEL_BADBUCKET);
    assert_int_equal(keel_cursor_open(t, b, &c), KEEL_BADBUCKET);
    if (!t->rdonly) {
        assert_int_equal(keel_put(t, b, tu_val("k"), tu_val("v"), 0), KEEL_BADBUCKET);
        assert_int_equal(keel_del(t, b, tu_val("k")), KEEL_BADBUCKET);
        assert_int_equal(keel_bucket_drop(t, b), KEEL_BADBUCKET);
    }
}

/* The visits of one commit of a txn that touched `touched` buckets. */
static void commit_counted(keel_db *db, keel_txn *t, uint64_t touched)
{
    uint64_t before = db->bucket_visits;
    OK(keel_commit(t));
    assert_true(db->bucket_visits - before <= VISITS_PER_STATE * touched);
}

static void test_create_drop_cycles(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "bucket-cycles");
    keel_db *db = open_db(path);
    const long cycles = 2000 * tu_scale();
    char name[32];
    keel_txn *t;
    keel_bucket b;
    for (long i = 0; i < cycles; i++) {
        snprintf(name, sizeof name, "tmp%ld", i);
        OK(keel_begin(db, 0, &t));
        OK(keel_bucket_open(t, name, KEEL_CREATE, &b));
        put_str(t, b, "k", name);
        commit_counted(db, t, 1);
        OK(keel_begin(db, 0, &t));
        OK(keel_bucket_drop(t, b));
        commit_counted(db, t, 1);
    }
    /* no bucket left: only the slots retired by used-up generations remain */
    struct bucket_counts c = counts(db);
    assert_int_equal(c.live + c.dead, 0);
    assert_true(c.slots <= c.retired + 1);
    assert_true(c.retired <= (uint64_t)cycles / BUCKET_GENERATIONS + 1);
    /* a plain put, in the default bucket and in a named one */
    OK(keel_begin(db, 0, &t));
    put_str(t, 0, "plain", "put");
    commit_counted(db, t, 0);
    OK(keel_begin(db, 0, &t));
    OK(keel_bucket_open(t, "data", KEEL_CREATE, &b));
    put_str(t, b, "k", "v");
    commit_counted(db, t, 1);
    OK(keel_begin(db, 0, &t));
    put_str(t, b, "k2", "v2");
    commit_counted(db, t, 1);
    keel_close(db);
    tu_remove(path);
}

static void test_stale_handle(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "bucket-stale");
    keel_db *db = open_db(path);
    keel_bucket a = create_one(db, "a");
    drop_one(db, a);
    /* no txn can see "a" any more: its slot is free, and the next bucket gets it */
    keel_bucket b = create_one(db, "b");
    assert_int_equal(bucket_index(b), bucket_index(a));
    assert_int_not_equal(b, a);
    keel_txn *t;
    for (int ro = 0; ro < 2; ro++) {
        OK(keel_begin(db, ro ? KEEL_RDONLY : 0, &t));
        expect_bad(t, a);
        expect_str(t, b, "k", "b");
        keel_abort(t);
    }
    /* the same name again is another bucket: a new handle, the old one stays stale */
    keel_bucket a2 = create_one(db, "a");
    assert_int_not_equal(a2, a);
    OK(keel_begin(db, KEEL_RDONLY, &t));
    expect_bad(t, a);
    expect_str(t, a2, "k", "a");
    keel_abort(t);

    /* a bucket created in an aborted txn: its handle is retired at the abort */
    keel_bucket ab;
    OK(keel_begin(db, 0, &t));
    OK(keel_bucket_open(t, "aborted", KEEL_CREATE, &ab));
    put_str(t, ab, "k", "v");
    keel_abort(t);
    keel_bucket c = create_one(db, "c");
    assert_int_equal(bucket_index(c), bucket_index(ab));
    OK(keel_begin(db, 0, &t));
    expect_bad(t, ab);
    expect_str(t, c, "k", "c");
    keel_abort(t);

    /* dropped and created again in one txn: the same bucket name, the same handle */
    OK(keel_begin(db, 0, &t));
    OK(keel_bucket_drop(t, c));
    keel_bucket c2;
    OK(keel_bucket_open(t, "c", KEEL_CREATE, &c2));
    assert_int_equal(c2, c);
    put_str(t, c2, "k", "again");
    OK(keel_commit(t));
    OK(keel_begin(db, KEEL_RDONLY, &t));
    expect_str(t, c, "k", "again");
    keel_abort(t);

    /* handles that were never given out */
    OK(keel_begin(db, KEEL_RDONLY, &t));
    expect_bad(t, (keel_bucket)(BUCKET_INDEX_MASK));
    expect_bad(t, b + ((keel_bucket)1 << BUCKET_INDEX_BITS));
    keel_abort(t);
    struct bucket_counts n = counts(db);
    assert_int_equal(n.live, 3); /* b, a2, c */
    assert_int_equal(n.dead, 0);
    keel_close(db);
    tu_remove(path);
}

static void test_reader_pins_handle(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "bucket-pin");
    keel_db *db = open_db(path);
    keel_bucket a = create_one(db, "a");
    create_one(db, "other");
    keel_txn *r, *r2, *t;
    OK(keel_begin(db, KEEL_RDONLY, &r));  /* opens "a" before the drop */
    OK(keel_begin(db, KEEL_RDONLY, &r2)); /* opens it after the drop */
    keel_bucket ra;
    OK(keel_bucket_open(r, "a", 0, &ra));
    assert_int_equal(ra, a);
    drop_one(db, a);
    /* the readers began before the drop: "a" stays theirs, under its handle */
    expect_str(r, a, "k", "a");
    keel_bucket r2a;
    OK(keel_bucket_open(r2, "a", 0, &r2a));
    assert_int_equal(r2a, a);
    expect_str(r2, r2a, "k", "a");
    struct bucket_counts c = counts(db);
    assert_int_equal(c.dead, 1);
    assert_int_equal(c.live, 1);
    /* a new txn does not see it, and a new "a" is another bucket */
    OK(keel_begin(db, KEEL_RDONLY, &t));
    expect_bad(t, a);
    keel_bucket x;
    assert_int_equal(keel_bucket_open(t, "a", 0, &x), KEEL_NOTFOUND);
    keel_abort(t);
    keel_bucket a2 = create_one(db, "a");
    assert_int_not_equal(bucket_index(a2), bucket_index(a));
    expect_str(r, a, "k", "a");
    /* the new handle names "a" in every snapshot: the old one in the old readers */
    expect_str(r, a2, "k", "a");
    keel_abort(r);
    assert_int_equal(counts(db).dead, 1); /* r2 still pins it */
    keel_abort(r2);
    c = counts(db);
    assert_int_equal(c.dead, 0);
    assert_int_equal(c.live, 2);
    keel_bucket d = create_one(db, "d");
    assert_int_equal(bucket_index(d), bucket_index(a));
    OK(keel_begin(db, KEEL_RDONLY, &t));
    expect_bad(t, a);
    expect_str(t, a2, "k", "a");
    expect_str(t, d, "k", "d");
    keel_abort(t);
    keel_close(db);
    tu_remove(path);
}

/* Two readers hold back the reuse of two runs of drops; ending the first
 * frees its run only, and the queue of dead slots keeps its order as it
 * fills up again. */
static void test_dead_queue(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "bucket-queue");
    keel_db *db = open_db(path);
    enum { RUN1 = 40, RUN2 = 10, RUN3 = 30, ALL = RUN1 + RUN2 + RUN3 };
    keel_bucket h[ALL];
    char name[32];
    for (int i = 0; i < ALL; i++) {
        snprintf(name, sizeof name, "q%d", i);
        h[i] = create_one(db, name);
    }
    keel_txn *r1, *r2, *t;
    OK(keel_begin(db, KEEL_RDONLY, &r1));
    for (int i = 0; i < RUN1; i++)
        drop_one(db, h[i]);
    OK(keel_begin(db, KEEL_RDONLY, &r2));
    for (int i = RUN1; i < RUN1 + RUN2; i++)
        drop_one(db, h[i]);
    assert_int_equal(counts(db).dead, RUN1 + RUN2);
    keel_abort(r1);
    assert_int_equal(counts(db).dead, RUN2);
    for (int i = RUN1 + RUN2; i < ALL; i++)
        drop_one(db, h[i]); /* r2 holds these back too */
    assert_int_equal(counts(db).dead, RUN2 + RUN3);
    for (int i = 0; i < ALL; i++) {
        snprintf(name, sizeof name, "q%d", i);
        if (i >= RUN1)
            expect_str(r2, h[i], "k", name);
    }
    keel_abort(r2);
    struct bucket_counts c = counts(db);
    assert_int_equal(c.dead + c.live, 0);
    assert_int_equal(c.slots, ALL);
    OK(keel_begin(db, 0, &t));
    for (int i = 0; i < ALL; i++)
        expect_bad(t, h[i]);
    keel_abort(t);
    keel_close(db);
    tu_remove(path);
}

static void test_generations(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "bucket-gen");
    keel_db *db = open_db(path);
    enum { CYCLES = 2 * BUCKET_GENERATIONS + 10 };
    static keel_bucket h[CYCLES];
    for (int i = 0; i < CYCLES; i++) {
        h[i] = create_one(db, "tmp");
        drop_one(db, h[i]);
    }
    /* every handle differs from every other: a generation is never reused */
    for (int i = 0; i < CYCLES; i++)
        for (int j = 0; j < i; j++)
            assert_int_not_equal(h[i], h[j]);
    struct bucket_counts c = counts(db);
    assert_int_equal(c.retired, 2);
    assert_int_equal(c.slots, 3);
    keel_txn *t;
    OK(keel_begin(db, 0, &t));
    for (int i = 0; i < CYCLES; i++)
        expect_bad(t, h[i]);
    keel_abort(t);
    keel_close(db);
    tu_remove(path);
}

static void test_other_handle_drop(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "bucket-other");
    keel_db *db = open_db(path), *db2 = open_db(path);
    keel_bucket a = create_one(db, "a");
    keel_txn *t;
    keel_bucket a2;
    OK(keel_begin(db2, 0, &t));
    OK(keel_bucket_open(t, "a", 0, &a2));
    OK(keel_bucket_drop(t, a2));
    OK(keel_commit(t));
    assert_int_equal(counts(db).live, 1); /* db cannot know yet */
    OK(keel_begin(db, 0, &t));
    expect_bad(t, a);
    keel_abort(t);
    struct bucket_counts c = counts(db);
    assert_int_equal(c.live + c.dead, 0);
    assert_int_equal(bucket_index(create_one(db, "b")), bucket_index(a));
    keel_close(db2);
    keel_close(db);
    tu_remove(path);
}

static void bucket_name(char *buf, size_t size, long i) { snprintf(buf, size, "bucket-%08ld", i); }

static int count_names(const char *name, void *ctx)
{
    (void)name;
    (*(long *)ctx)++;
    return 0;
}

/* One txn per `batch` buckets, one put each: what the commits visit is the
 * batch, not the buckets made before. */
static void create_many(keel_db *db, long n, long batch)
{
    char name[32];
    keel_txn *t = NULL;
    for (long i = 0; i < n; i++) {
        if (i % batch == 0)
            OK(keel_begin(db, 0, &t));
        keel_bucket b;
        bucket_name(name, sizeof name, i);
        OK(keel_bucket_open(t, name, KEEL_CREATE, &b));
        put_str(t, b, "k", name);
        if (i % batch == batch - 1 || i == n - 1)
            commit_counted(db, t, (uint64_t)(i % batch + 1));
    }
}

static void test_many_buckets(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "bucket-many");
    const long n = 20000 * tu_scale(), batch = 1000;
    keel_db *db = open_db(path);
    create_many(db, n, batch);
    struct bucket_counts c = counts(db);
    assert_int_equal(c.live, n);
    assert_int_equal(c.slots, n);
    keel_close(db);

    /* a fresh handle finds each by name */
    db = open_db(path);
    keel_txn *t;
    char name[32];
    OK(keel_begin(db, KEEL_RDONLY, &t));
    long listed = 0;
    OK(keel_bucket_list(t, count_names, &listed));
    assert_int_equal(listed, n);
    assert_int_equal(counts(db).slots, 0); /* listing makes no handles */
    for (long i = n - 1; i >= 0; i--) {
        keel_bucket b;
        bucket_name(name, sizeof name, i);
        OK(keel_bucket_open(t, name, 0, &b));
        expect_str(t, b, "k", name);
    }
    assert_int_equal(txn_bucket_states(t), n);
    keel_abort(t);
    assert_int_equal(counts(db).live, n);
    /* one put among them touches one state */
    keel_bucket b;
    OK(keel_begin(db, 0, &t));
    bucket_name(name, sizeof name, n / 2);
    OK(keel_bucket_open(t, name, 0, &b));
    put_str(t, b, "k2", "v2");
    assert_int_equal(txn_bucket_states(t), 1);
    commit_counted(db, t, 1);
    /* drop them all, a batch per txn */
    for (long i = 0; i < n; i++) {
        if (i % batch == 0)
            OK(keel_begin(db, 0, &t));
        bucket_name(name, sizeof name, i);
        OK(keel_bucket_open(t, name, 0, &b));
        OK(keel_bucket_drop(t, b));
        if (i % batch == batch - 1 || i == n - 1)
            commit_counted(db, t, (uint64_t)(i % batch + 1));
    }
    c = counts(db);
    assert_int_equal(c.live + c.dead, 0);
    OK(keel_begin(db, KEEL_RDONLY, &t));
    listed = 0;
    OK(keel_bucket_list(t, count_names, &listed));
    assert_int_equal(listed, 0);
    keel_abort(t);
    /* the freed slots serve the next buckets: the table does not grow */
    create_many(db, n / 2, batch);
    c = counts(db);
    assert_int_equal(c.live, n / 2);
    assert_int_equal(c.slots, n);
    keel_close(db);
    tu_remove(path);
}

/* ---- threads ------------------------------------------------------------ */

enum { THREAD_NAMES = 16 };

struct reader_arg {
    keel_db *db;
    int rounds;
    long found;
};

/* Open any of the names; a bucket found holds its own name under "k". */
static void *reader_main(void *p)
{
    struct reader_arg *a = p;
    char name[32];
    for (int r = 0; r < a->rounds; r++) {
        keel_txn *t;
        if (keel_begin(a->db, KEEL_RDONLY, &t))
            abort();
        for (int i = 0; i < THREAD_NAMES; i++) {
            snprintf(name, sizeof name, "t%d", (i + r) % THREAD_NAMES);
            keel_bucket b;
            int rc = keel_bucket_open(t, name, 0, &b);
            if (rc == KEEL_NOTFOUND)
                continue;
            keel_val v;
            if (rc || keel_get(t, b, tu_val("k"), &v) || v.len != strlen(name) || memcmp(v.data, name, v.len))
                abort();
            a->found++;
        }
        keel_abort(t);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "bucket-threads");
    keel_db *db = open_db(path);
    struct reader_arg args[2] = {{db, (int)(300 * tu_scale()), 0}, {db, (int)(300 * tu_scale()), 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, reader_main, &args[i]), 0);
    keel_bucket h[THREAD_NAMES] = {0};
    bool live[THREAD_NAMES] = {false};
    uint64_t seed = tu_seed(7);
    char name[32];
    for (int r = 0; r < 600 * tu_scale(); r++) {
        int i = (int)(tu_rand(&seed) % THREAD_NAMES);
        snprintf(name, sizeof name, "t%d", i);
        if (live[i])
            drop_one(db, h[i]);
        else
            h[i] = create_one(db, name);
        live[i] = !live[i];
    }
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    struct bucket_counts c = counts(db);
    long nlive = 0;
    for (int i = 0; i < THREAD_NAMES; i++)
        nlive += live[i];
    assert_int_equal(c.live, nlive);
    assert_int_equal(c.dead, 0);
    keel_close(db);
    tu_remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_drop_cycles),
        cmocka_unit_test(test_stale_handle),
        cmocka_unit_test(test_reader_pins_handle),
        cmocka_unit_test(test_dead_queue),
        cmocka_unit_test(test_generations),
        cmocka_unit_test(test_other_handle_drop),
        cmocka_unit_test(test_many_buckets),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
