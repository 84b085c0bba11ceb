/*
 * test_space.c — the file gives space back after a long reader: a reader
 * held through many small commits makes the file grow (its snapshot's pages
 * are pinned); once it ends, ordinary commits move the live pages out of
 * the upper part of the file (freelist_relocate) and the tail is cut off.
 * Each test checks the size comes back under a bound after a bounded number
 * of commits, and that the data is whole: keel_check clean, every key read
 * back with its last value, in the default bucket, named buckets, keys with
 * an expiry time and values in overflow runs.  A second reader that begins
 * while pages move must keep its snapshot.  KEEL_TEST_SCALE multiplies the
 * commits made while the reader is held.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"
#include "testutil.h"

#define NKEYS 600       /* keys per tree */
#define SMALL_VAL 100   /* bytes */
#define BIG_VAL 9000    /* bytes: an overflow run of 3 pages at 4 KiB */
#define AFTER_COMMITS 300 /* ordinary commits after the reader ends, within which the file must be back */
/* The bound: relocation leaves at most 1.5 x live pages + 256 KiB (or less
 * than 1 MiB free); the file is cut to that rounded up to a MiB once it is
 * 2 MiB + 1/8 longer (doc/design.md section 9): 2 x live + 4.6 MiB. */
#define FIXED_BYTES ((uint64_t)5 << 20)

enum { T_DEFAULT, T_B1, T_BIG, T_TTL, NTREES };
static const char *const bucket_name[NTREES] = {NULL, "b1", "big", "ttl"};

struct model {
    keel_db *db;
    keel_bucket b[NTREES];
    uint32_t gen[NTREES][NKEYS]; /* the value's version: what a read must find */
    uint64_t rng;
};

static size_t val_len(int tree) { return tree == T_BIG ? BIG_VAL : SMALL_VAL; }

static void make_val(uint8_t *v, int tree, int key, uint32_t gen)
{
    size_t n = val_len(tree);
    for (size_t i = 0; i < n; i++)
        v[i] = (uint8_t)(key * 31 + gen * 7 + i);
    memcpy(v, &gen, sizeof gen);
}

static void put(struct model *m, keel_txn *t, int tree, int key)
{
    static uint8_t v[BIG_VAL];
    char k[32];
    snprintf(k, sizeof k, "key-%05d", key);
    uint32_t gen = ++m->gen[tree][key];
    make_val(v, tree, key, gen);
    keel_val kv = tu_val(k), vv = {v, val_len(tree)};
    if (tree == T_TTL) /* an hour away: the keys stay, the expiry tree is live data */
        assert_int_equal(keel_put_ttl(t, m->b[tree], kv, vv, 3600 * 1000, 0), 0);
    else
        assert_int_equal(keel_put(t, m->b[tree], kv, vv, 0), 0);
}

static void setup_model(struct model *m, const char *path)
{
    memset(m, 0, sizeof *m);
    m->rng = tu_seed(0x5BACE);
    assert_int_equal(keel_open(path, NULL, &m->db), 0);
    keel_txn *t;
    assert_int_equal(keel_begin(m->db, 0, &t), 0);
    for (int tr = 0; tr < NTREES; tr++) {
        if (bucket_name[tr])
            assert_int_equal(keel_bucket_open(t, bucket_name[tr], KEEL_CREATE, &m->b[tr]), 0);
        for (int k = 0; k < (tr == T_BIG ? NKEYS / 4 : NKEYS); k++)
            put(m, t, tr, k);
    }
    assert_int_equal(keel_commit(t), 0);
}

/* n commits of one put each, to a random key of a random tree */
static void small_commits(struct model *m, long n)
{
    for (long i = 0; i < n; i++) {
        keel_txn *t;
        assert_int_equal(keel_begin(m->db, 0, &t), 0);
        int tr = (int)(tu_rand(&m->rng) % NTREES);
        put(m, t, tr, (int)(tu_rand(&m->rng) % (tr == T_BIG ? NKEYS / 4 : NKEYS)));
        assert_int_equal(keel_commit(t), 0);
    }
}

/* Every key of every tree, with the value of generation want[tree][key]. */
static void check_values(struct model *m, keel_txn *t, uint32_t want[NTREES][NKEYS])
{
    static uint8_t v[BIG_VAL];
    for (int tr = 0; tr < NTREES; tr++)
        for (int k = 0; k < (tr == T_BIG ? NKEYS / 4 : NKEYS); k++) {
            char key[32];
            snprintf(key, sizeof key, "key-%05d", k);
            keel_val got;
            assert_int_equal(keel_get(t, m->b[tr], tu_val(key), &got), 0);
            make_val(v, tr, k, want[tr][k]);
            assert_int_equal(got.len, val_len(tr));
            assert_memory_equal(got.data, v, got.len);
        }
}

static void check_all(struct model *m)
{
    uint64_t problems = 1;
    assert_int_equal(keel_check(m->db, NULL, NULL, &problems), 0);
    assert_int_equal(problems, 0);
    keel_txn *t;
    assert_int_equal(keel_begin(m->db, KEEL_RDONLY, &t), 0);
    check_values(m, t, m->gen);
    keel_abort(t);
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

/* Live bytes: the pages every tree uses (keel_db_stat counts the free tree
 * among them: its pages are live too). */
static uint64_t live_bytes(keel_db *db)
{
    keel_stat st;
    assert_int_equal(keel_db_stat(db, &st), 0);
    return (st.branch_pages + st.leaf_pages + st.overflow_pages + 2) * st.page_size;
}

/* Runs commits until the file is within the bound; answers how many it took. */
static long commits_until_small(struct model *m, const char *path, long max, uint64_t *size, uint64_t *live)
{
    for (long done = 0;; done++) {
        *size = file_size(path);
        *live = live_bytes(m->db);
        if (*size <= 2 * *live + FIXED_BYTES || done == max)
            return done;
        small_commits(m, 1);
    }
}

static long held_commits(void) { return 3000 * tu_scale(); }

static void test_shrinks_after_long_reader(void **state)
{
    (void)state;
    char path[256];
    tu_path(path, sizeof path, "space");
    struct model m;
    setup_model(&m, path);
    keel_txn *reader;
    assert_int_equal(keel_begin(m.db, KEEL_RDONLY, &reader), 0);
    static uint32_t at_begin[NTREES][NKEYS];
    memcpy(at_begin, m.gen, sizeof at_begin);
    small_commits(&m, held_commits());
    uint64_t grown = file_size(path);
    check_values(&m, reader, at_begin); /* the reader's snapshot is whole */
    keel_abort(reader);
    uint64_t size, live;
    long took = commits_until_small(&m, path, AFTER_COMMITS, &size, &live);
    print_message("space: grew to %llu bytes; back to %llu (live %llu) after %ld commits\n",
                  (unsigned long long)grown, (unsigned long long)size, (unsigned long long)live, took);
    assert_true(grown > 8 * FIXED_BYTES); /* the reader did pin pages: the test tests something */
    assert_true(size <= 2 * live + FIXED_BYTES);
    check_all(&m);
    /* and it stays small */
    small_commits(&m, 200);
    assert_true(file_size(path) <= 2 * live_bytes(m.db) + FIXED_BYTES);
    check_all(&m);
    keel_close(m.db);
    /* a new handle (no walk state) opens the shrunk file and finds it whole */
    assert_int_equal(keel_open(path, NULL, &m.db), 0);
    keel_txn *t;
    assert_int_equal(keel_begin(m.db, KEEL_RDONLY, &t), 0);
    for (int tr = 1; tr < NTREES; tr++)
        assert_int_equal(keel_bucket_open(t, bucket_name[tr], 0, &m.b[tr]), 0);
    keel_abort(t);
    check_all(&m);
    keel_close(m.db);
    tu_remove(path);
}

/* A reader that begins while pages move keeps its snapshot: relocation
 * never reuses a page it can see.  Then the file still comes back. */
static void test_reader_during_relocation(void **state)
{
    (void)state;
    char path[256];
    tu_path(path, sizeof path, "space-r2");
    struct model m;
    setup_model(&m, path);
    keel_txn *reader;
    assert_int_equal(keel_begin(m.db, KEEL_RDONLY, &reader), 0);
    small_commits(&m, held_commits());
    keel_abort(reader);
    small_commits(&m, 3); /* relocation has begun */
    static uint32_t snap[NTREES][NKEYS];
    memcpy(snap, m.gen, sizeof snap);
    keel_txn *second;
    assert_int_equal(keel_begin(m.db, KEEL_RDONLY, &second), 0);
    small_commits(&m, 100);
    check_values(&m, second, snap);
    keel_abort(second);
    uint64_t size, live;
    commits_until_small(&m, path, AFTER_COMMITS, &size, &live);
    assert_true(size <= 2 * live + FIXED_BYTES);
    check_all(&m);
    keel_close(m.db);
    tu_remove(path);
}

/* A file that is already compact: the walk never starts, and commits do
 * no extra work. */
static void test_compact_file_untouched(void **state)
{
    (void)state;
    char path[256];
    tu_path(path, sizeof path, "space-idle");
    struct model m;
    setup_model(&m, path);
    small_commits(&m, 500);
    static const struct space_handle zero; /* no walk, no full load */
    assert_memory_equal(&m.db->space, &zero, sizeof zero);
    check_all(&m);
    keel_close(m.db);
    tu_remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shrinks_after_long_reader),
        cmocka_unit_test(test_reader_during_relocation),
        cmocka_unit_test(test_compact_file_untouched),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
