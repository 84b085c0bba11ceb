/*
 * test_salvage.c — keel_salvage(): a new database from a damaged one.
 *
 *   - 10 random leaf pages of a big bucket damaged (one bit each): every
 *     record not on them comes back, none of theirs does, 10 ranges lost.
 *     N keys: 1,000,000 times KEEL_TEST_SCALE.
 *   - a damaged branch page: the scan finds the leaves below it; nothing lost.
 *   - a damaged catalog leaf: the buckets come back as salvaged-<id>.
 *   - an undamaged file: everything, nothing lost; a dest that exists is refused.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "internal.h"
#include "testutil.h"

#define OK(x) assert_int_equal((x), 0)

static char path[512], dest[512];

static void key_of(char *k, size_t size, uint64_t i) { snprintf(k, size, "key%09llu", (unsigned long long)i); }
static size_t value_of(char *v, size_t size, uint64_t i)
{
    return (size_t)snprintf(v, size, "value-%llu-%0*llu", (unsigned long long)i, (int)(10 + i % 50),
                            (unsigned long long)i);
}

/* n keys in the default bucket, bucket "big" (overflow values) and "ttl". */
static void make_db(const char *p, uint64_t n)
{
    keel_db *db;
    keel_options o = {.flags = KEEL_NOSYNC};
    OK(keel_open(p, &o, &db));
    keel_txn *t;
    char k[32], v[100];
    for (uint64_t i = 0; i < n;) {
        OK(keel_begin(db, 0, &t));
        for (uint64_t end = i + 100000; i < n && i < end; i++) {
            key_of(k, sizeof k, i);
            size_t vl = value_of(v, sizeof v, i);
            OK(keel_put(t, 0, tu_val(k), (keel_val){v, vl}, 0));
        }
        OK(keel_commit(t));
    }
    OK(keel_begin(db, 0, &t));
    keel_bucket big, ttl;
    OK(keel_bucket_open(t, "big", KEEL_CREATE, &big));
    OK(keel_bucket_open(t, "ttl", KEEL_CREATE, &ttl));
    uint8_t *buf = malloc(30000);
    assert_non_null(buf);
    for (int i = 0; i < 5; i++) {
        memset(buf, 'a' + i, 30000);
        snprintf(k, sizeof k, "big%d", i);
        OK(keel_put(t, big, tu_val(k), (keel_val){buf, 6000u * (unsigned)(i + 1)}, 0));
    }
    free(buf);
    for (int i = 0; i < 30; i++) {
        snprintf(k, sizeof k, "t%02d", i);
        OK(keel_put(t, ttl, tu_val(k), tu_val("x"), 0));
        OK(keel_expire_at(t, ttl, tu_val(k), 4102444800000LL + i));
    }
    OK(keel_commit(t));
    keel_close(db);
}

static void flip_bit(const char *p, uint64_t off, unsigned bit) { assert_int_equal(tu_flip(p, off, (uint8_t)(1u << bit)), 0); }

/* The path to key in bucket (NULL: default) of the newest snapshot. */
static void path_to(const char *p, const char *bucket, const char *key, struct bt_path *out, uint32_t *psize)
{
    keel_db *db;
    keel_options o = {.flags = KEEL_NOSYNC | KEEL_RDONLY};
    OK(keel_open(p, &o, &db));
    keel_txn *t;
    OK(keel_begin(db, KEEL_RDONLY, &t));
    keel_bucket b = 0;
    if (bucket)
        OK(keel_bucket_open(t, bucket, 0, &b));
    struct tree_desc *d;
    OK(bucket_tree(t, b, &d));
    bool exact;
    OK(bt_search(t, d, (const uint8_t *)key, strlen(key), out, &exact));
    assert_true(exact);
    *psize = db->psize;
    keel_abort(t);
    keel_close(db);
}

static int salvage(keel_salvage_stat *st)
{
    tu_remove(dest);
    return keel_salvage(path, dest, NULL, NULL, st);
}

/* In dest: key i present with its value, or absent. */
static void expect_key(keel_txn *t, uint64_t i, bool present)
{
    char k[32], v[100];
    key_of(k, sizeof k, i);
    keel_val out;
    int rc = keel_get(t, 0, tu_val(k), &out);
    if (!present) {
        assert_int_equal(rc, KEEL_NOTFOUND);
        return;
    }
    OK(rc);
    size_t vl = value_of(v, sizeof v, i);
    assert_int_equal(out.len, vl);
    assert_memory_equal(out.data, v, vl);
}

static void expect_buckets(keel_txn *t, const char *big_name, const char *ttl_name)
{
    keel_bucket b;
    OK(keel_bucket_open(t, big_name, 0, &b));
    for (int i = 0; i < 5; i++) {
        char k[16];
        snprintf(k, sizeof k, "big%d", i);
        keel_val out;
        OK(keel_get(t, b, tu_val(k), &out));
        assert_int_equal(out.len, 6000u * (unsigned)(i + 1));
        assert_int_equal(((const uint8_t *)out.data)[out.len - 1], 'a' + i);
    }
    OK(keel_bucket_open(t, ttl_name, 0, &b));
    for (int i = 0; i < 30; i++) {
        char k[16];
        snprintf(k, sizeof k, "t%02d", i);
        int64_t at;
        OK(keel_expiry_at(t, b, tu_val(k), &at));
        assert_int_equal(at, 4102444800000LL + i);
    }
}

static keel_txn *open_dest(keel_db **db)
{
    keel_options o = {.flags = KEEL_NOSYNC | KEEL_VERIFY};
    OK(keel_open(dest, &o, db));
    uint64_t problems = 9;
    OK(keel_check(*db, NULL, NULL, &problems));
    assert_int_equal(problems, 0);
    keel_txn *t;
    OK(keel_begin(*db, KEEL_RDONLY, &t));
    return t;
}

static void test_undamaged(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "salv-clean");
    tu_path(dest, sizeof dest, "salv-clean-out");
    make_db(path, 5000);
    keel_salvage_stat st;
    OK(salvage(&st));
    assert_int_equal(st.records, 5000 + 5 + 30);
    assert_int_equal(st.lost_ranges, 0);
    assert_int_equal(st.damaged_pages, 0);
    keel_db *db;
    keel_txn *t = open_dest(&db);
    for (uint64_t i = 0; i < 5000; i++)
        expect_key(t, i, true);
    expect_buckets(t, "big", "ttl");
    keel_abort(t);
    keel_close(db);
    assert_int_equal(keel_salvage(path, dest, NULL, NULL, &st), EEXIST); /* dest exists */
    tu_remove(path);
    tu_remove(dest);
}

/* A DUPSORT bucket's pairs come back with their keys' counts (the count a
 * key's first pair carries is counted again by the puts, not copied). */
static void test_dupsort(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "salv-dup");
    tu_path(dest, sizeof dest, "salv-dup-out");
    keel_db *db;
    keel_options o = {.flags = KEEL_NOSYNC};
    OK(keel_open(path, &o, &db));
    keel_txn *t;
    keel_bucket b;
    char k[16], v[16];
    uint64_t pairs = 0;
    OK(keel_begin(db, 0, &t));
    OK(keel_bucket_open(t, "dup", KEEL_CREATE | KEEL_DUPSORT, &b));
    for (int i = 0; i < 20; i++)
        for (int j = (i % 5) * 40; j >= 0; j--, pairs++) {
            snprintf(k, sizeof k, "d%02d", i);
            snprintf(v, sizeof v, "v%03d", j);
            OK(keel_put(t, b, tu_val(k), tu_val(v), 0));
        }
    OK(keel_commit(t));
    keel_close(db);
    keel_salvage_stat st;
    OK(salvage(&st));
    assert_int_equal(st.records, pairs);
    assert_int_equal(st.lost_ranges, 0);
    t = open_dest(&db);
    OK(keel_bucket_open(t, "dup", 0, &b));
    keel_cursor *c;
    OK(keel_cursor_open(t, b, &c));
    for (int i = 0; i < 20; i++) {
        snprintf(k, sizeof k, "d%02d", i);
        keel_val got;
        uint64_t n;
        OK(keel_cursor_seek_key(c, tu_val(k), &got));
        assert_true(got.len == 4 && memcmp(got.data, "v000", 4) == 0);
        OK(keel_cursor_count(c, &n));
        assert_int_equal(n, (uint64_t)((i % 5) * 40 + 1));
    }
    keel_cursor_close(c);
    keel_abort(t);
    keel_close(db);
    tu_remove(path);
    tu_remove(dest);
}

static void test_damaged_leaves(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "salv-leaves");
    tu_path(dest, sizeof dest, "salv-leaves-out");
    uint64_t n = 1000000 * (uint64_t)tu_scale(), seed = tu_seed(0x5a17a9e);
    make_db(path, n);
    /* 10 distinct leaves, through 10 random keys; their keys, read before the damage */
    uint64_t leaves[10];
    uint32_t ps = 0;
    uint8_t *gone = calloc(n, 1);
    assert_non_null(gone);
    keel_db *db;
    OK(keel_open(path, &(keel_options){.flags = KEEL_NOSYNC}, &db));
    keel_txn *t;
    OK(keel_begin(db, KEEL_RDONLY, &t));
    struct tree_desc *d;
    OK(bucket_tree(t, 0, &d));
    for (int found = 0; found < 10;) {
        char k[32];
        key_of(k, sizeof k, tu_rand(&seed) % n);
        struct bt_path p;
        bool exact;
        OK(bt_search(t, d, (const uint8_t *)k, strlen(k), &p, &exact));
        uint64_t leaf = p.pgno[p.depth - 1];
        bool dup = false;
        for (int j = 0; j < found; j++)
            dup |= leaves[j] == leaf;
        if (dup)
            continue;
        leaves[found++] = leaf;
        const uint8_t *page = p.page[p.depth - 1];
        for (unsigned i = 0; i < page_nkeys(page); i++) {
            const uint8_t *nd = NULL;
            OK(page_node(page, i, db->node_end, &nd));
            gone[strtoull((const char *)leaf_node_key(nd) + 3, NULL, 10)] = 1;
        }
    }
    ps = db->psize;
    keel_abort(t);
    keel_close(db);
    for (int j = 0; j < 10; j++)
        flip_bit(path, leaves[j] * ps + PAGE_HDR + 64 + tu_rand(&seed) % (ps - PAGE_HDR - 200), (unsigned)j % 8);
    keel_salvage_stat st;
    OK(salvage(&st));
    assert_int_equal(st.damaged_pages, 10);
    assert_int_equal(st.lost_ranges, 10);
    uint64_t kept = 0;
    for (uint64_t i = 0; i < n; i++)
        kept += !gone[i];
    assert_int_equal(st.records, kept + 5 + 30);
    t = open_dest(&db);
    for (uint64_t i = 0; i < n; i++)
        expect_key(t, i, !gone[i]);
    expect_buckets(t, "big", "ttl");
    keel_abort(t);
    keel_close(db);
    free(gone);
    tu_remove(path);
    tu_remove(dest);
}

static void test_damaged_branch(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "salv-branch");
    tu_path(dest, sizeof dest, "salv-branch-out");
    uint64_t n = 60000;
    make_db(path, n);
    struct bt_path p;
    uint32_t ps;
    path_to(path, NULL, "key000031337", &p, &ps);
    assert_true(p.depth >= 2);
    uint64_t branch = p.pgno[p.depth - 2]; /* the parent of a leaf */
    flip_bit(path, branch * ps + ps / 2, 2);
    keel_salvage_stat st;
    OK(salvage(&st));
    assert_int_equal(st.damaged_pages, 1);
    assert_int_equal(st.lost_ranges, 0);
    assert_true(st.scanned_pages > 1);
    assert_int_equal(st.records, n + 5 + 30);
    keel_db *db;
    keel_txn *t = open_dest(&db);
    for (uint64_t i = 0; i < n; i++)
        expect_key(t, i, true);
    keel_abort(t);
    keel_close(db);
    /* the root, when it is above the leaves' parents: nothing to tell the
     * scan how many leaves there were, so the range is reported as
     * possibly incomplete, but every record still comes back */
    flip_bit(path, branch * ps + ps / 2, 2);
    if (p.depth >= 3) {
        flip_bit(path, p.pgno[0] * ps + 100, 5);
        OK(salvage(&st));
        assert_int_equal(st.records, n + 5 + 30);
        assert_int_equal(st.lost_ranges, 1);
    }
    tu_remove(path);
    tu_remove(dest);
}

static void test_damaged_catalog(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "salv-cat");
    tu_path(dest, sizeof dest, "salv-cat-out");
    make_db(path, 3000);
    keel_db *db;
    OK(keel_open(path, &(keel_options){.flags = KEEL_NOSYNC}, &db));
    struct meta m;
    OK(meta_newest(db, &m, NULL));
    uint64_t cat = m.trees[TREE_CATALOG].root;
    uint32_t ps = db->psize;
    keel_close(db);
    assert_int_equal(m.trees[TREE_CATALOG].depth, 1);
    flip_bit(path, cat * ps + ps - 100, 0);
    keel_salvage_stat st;
    OK(salvage(&st));
    /* the catalog's range (the names), and each bucket found by the scan
     * alone: nothing says how many leaves it had */
    assert_int_equal(st.lost_ranges, 3);
    assert_int_equal(st.records, 3000 + 5 + 30);
    keel_txn *t = open_dest(&db);
    for (uint64_t i = 0; i < 3000; i++)
        expect_key(t, i, true);
    expect_buckets(t, "salvaged-1", "salvaged-2");
    keel_abort(t);
    keel_close(db);
    tu_remove(path);
    tu_remove(dest);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_undamaged),
        cmocka_unit_test(test_dupsort),
        cmocka_unit_test(test_damaged_leaves),
        cmocka_unit_test(test_damaged_branch),
        cmocka_unit_test(test_damaged_catalog),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
