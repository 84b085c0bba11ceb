/*
 * test_format.c — format 2's page checksums (issue 19), and format 1 files.
 *
 *   - test/data/dupsort-uncounted.keel (test/data/make_dupsort_uncounted.c):
 *     a DUPSORT tree from before pair counts opens, counts, takes writes
 *     and compacts into a counted one;
 *   - test/data/format1.keel (made by test/data/make_format1.c with the
 *     format 1 library) opens, reads back whole, takes writes that stay in
 *     format 1 and check clean, and a compact copy of it is format 2 with
 *     the same contents.
 *   - KEEL_VERIFY: a damaged leaf, branch or overflow page answers
 *     KEEL_CORRUPTED naming the page, where a plain open returns the damaged
 *     bytes as data; keel_copy refuses a damaged file.
 *   - keel_check reports every single-bit flip in the pages of a compact
 *     file (KEEL_TEST_SCALE multiplies the flips), with the tree and keys.
 *   - hash_long (page sums) is libxxhash's XXH3_64bits bit for bit, and so
 *     is its AVX2 copy on a CPU that has AVX2.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <xxhash.h>

#include "internal.h"
#include "testutil.h"

#define OK(x) assert_int_equal((x), 0)

static char path[512], copy_path[512];

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

static unsigned file_format(keel_db *db)
{
    struct meta m;
    OK(meta_newest(db, &m, NULL));
    return m.version;
}

static void check_clean(keel_db *db)
{
    uint64_t problems = 99;
    OK(keel_check(db, NULL, NULL, &problems));
    assert_int_equal(problems, 0);
}

/* ---- format 1: what make_format1.c wrote ---- */
static void f1_key(char *k, size_t size, int i)
{
    snprintf(k, size, "padding-padding-padding-padding-padding-padding-k%05d", i);
}

static size_t f1_value(char *v, int i)
{
    size_t n = 40 + (size_t)(i % 60);
    for (size_t j = 0; j < n; j++)
        v[j] = "v0123456789"[(i + j) % 11];
    return n;
}

static void f1_check_contents(keel_db *db, bool with_new)
{
    keel_txn *t;
    OK(keel_begin(db, KEEL_RDONLY, &t));
    char k[96], v[200];
    keel_val out;
    for (int i = 0; i < 3000; i++) {
        f1_key(k, sizeof k, i);
        int rc = keel_get(t, 0, tu_val(k), &out);
        if (i % 7 == 0) {
            assert_int_equal(rc, KEEL_NOTFOUND);
            continue;
        }
        OK(rc);
        size_t n = f1_value(v, i);
        assert_int_equal(out.len, n);
        assert_memory_equal(out.data, v, n);
    }
    keel_bucket big, ttl;
    OK(keel_bucket_open(t, "big", 0, &big));
    OK(keel_bucket_open(t, "ttl", 0, &ttl));
    for (int i = 0; i < 5; i++) {
        snprintf(k, sizeof k, "b%d", i);
        OK(keel_get(t, big, tu_val(k), &out));
        assert_int_equal(out.len, 3000 + i * 5000);
        for (size_t j = 0; j < out.len; j++)
            assert_int_equal(((const uint8_t *)out.data)[j], (uint8_t)((i * 31 + j) & 255));
    }
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof k, "t%03d", i);
        int64_t at;
        OK(keel_expiry_at(t, ttl, tu_val(k), &at));
        assert_int_equal(at, 4102444800000LL + i);
    }
    int rc = keel_get(t, 0, tu_val("added"), &out);
    assert_int_equal(rc, with_new ? 0 : KEEL_NOTFOUND);
    keel_abort(t);
}

static void test_format1_opens_reads_writes(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "format1");
    copy_file(SOURCE_ROOT "/test/data/format1.keel", path);
    keel_db *db;
    keel_options o = {.flags = KEEL_NOSYNC};
    OK(keel_open(path, &o, &db));
    assert_int_equal(file_format(db), 1);
    f1_check_contents(db, false);
    check_clean(db);
    /* writes: the file stays format 1, and every page it wrote reads back */
    keel_txn *t;
    OK(keel_begin(db, 0, &t));
    OK(keel_put(t, 0, tu_val("added"), tu_val("in format 1"), 0));
    keel_bucket nb;
    OK(keel_bucket_open(t, "new", KEEL_CREATE, &nb));
    char k[32], big[9000];
    memset(big, 'x', sizeof big);
    for (int i = 0; i < 500; i++) {
        snprintf(k, sizeof k, "n%04d", i);
        OK(keel_put(t, nb, tu_val(k), (keel_val){big, i % 50 ? 20u : sizeof big}, 0));
    }
    OK(keel_commit(t));
    keel_close(db);
    OK(keel_open(path, &o, &db));
    assert_int_equal(file_format(db), 1);
    f1_check_contents(db, true);
    check_clean(db);
    /* KEEL_VERIFY on a format 1 file: nothing to verify against, reads work */
    keel_close(db);
    o.flags |= KEEL_VERIFY;
    OK(keel_open(path, &o, &db));
    f1_check_contents(db, true);
    keel_close(db);
    tu_remove(path);
}

static void test_format1_compact_copy_upgrades(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "format1-up");
    tu_path(copy_path, sizeof copy_path, "format1-up-copy");
    copy_file(SOURCE_ROOT "/test/data/format1.keel", path);
    keel_db *db;
    keel_options o = {.flags = KEEL_NOSYNC};
    OK(keel_open(path, &o, &db));
    OK(keel_copy(db, copy_path, 0)); /* a plain copy keeps the format */
    keel_close(db);
    OK(keel_open(copy_path, &o, &db));
    assert_int_equal(file_format(db), 1);
    keel_close(db);
    tu_remove(copy_path);
    OK(keel_open(path, &o, &db));
    OK(keel_copy(db, copy_path, KEEL_COPY_COMPACT));
    keel_close(db);
    o.flags |= KEEL_VERIFY;
    OK(keel_open(copy_path, &o, &db));
    assert_int_equal(file_format(db), 2);
    f1_check_contents(db, false);
    check_clean(db);
    keel_close(db);
    tu_remove(path);
    tu_remove(copy_path);
}

/* ---- DUPSORT trees from before TREE_F_COUNTED ---- */
/* What make_dupsort_uncounted.c wrote, with the changes below when changed:
 * every key's values, and keel_cursor_count. */
static void du_check_contents(keel_db *db, bool changed)
{
    keel_txn *t;
    keel_bucket b;
    OK(keel_begin(db, KEEL_RDONLY, &t));
    OK(keel_bucket_open(t, "idx", 0, &b));
    keel_cursor *c;
    OK(keel_cursor_open(t, b, &c));
    char k[32], v[32];
    keel_val got, key;
    uint64_t n;
    for (int i = 0; i < 200; i++) {
        snprintf(k, sizeof k, "k%03d", i);
        int want = i % 7 + 1 + (changed && i % 10 == 0) - (changed && i % 10 == 5);
        if (want == 0) { /* its one value deleted */
            assert_int_equal(keel_cursor_seek_key(c, tu_val(k), &got), KEEL_NOTFOUND);
            continue;
        }
        OK(keel_cursor_seek_key(c, tu_val(k), &got));
        OK(keel_cursor_count(c, &n));
        assert_int_equal(n, want);
        int seen = 1;
        while (keel_cursor_next_dup(c, &key, &got) == 0)
            seen++;
        assert_int_equal(seen, want);
    }
    OK(keel_cursor_seek_key(c, tu_val("many"), &got));
    OK(keel_cursor_count(c, &n));
    assert_int_equal(n, changed ? 599 : 600);
    snprintf(v, sizeof v, "%05d", 300);
    OK(keel_cursor_seek_pair(c, tu_val("many"), tu_val(v), &key, &got));
    OK(keel_cursor_count(c, &n)); /* from the middle of the key's pairs */
    assert_int_equal(n, changed ? 599 : 600);
    keel_cursor_close(c);
    keel_abort(t);
}

static void test_dupsort_uncounted(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "dup-uncounted");
    tu_path(copy_path, sizeof copy_path, "dup-uncounted-copy");
    copy_file(SOURCE_ROOT "/test/data/dupsort-uncounted.keel", path);
    keel_db *db;
    keel_options o = {.flags = KEEL_NOSYNC};
    OK(keel_open(path, &o, &db));
    du_check_contents(db, false);
    check_clean(db);
    /* writes keep the tree as it is: no count appears on any pair */
    keel_txn *t;
    keel_bucket b;
    char k[32];
    OK(keel_begin(db, 0, &t));
    OK(keel_bucket_open(t, "idx", 0, &b));
    for (int i = 0; i < 200; i += 10) {
        snprintf(k, sizeof k, "k%03d", i);
        OK(keel_put(t, b, tu_val(k), tu_val("added"), 0));
        snprintf(k, sizeof k, "k%03d", i + 5);
        OK(keel_del_value(t, b, tu_val(k), tu_val("v00")));
    }
    OK(keel_del_value(t, b, tu_val("many"), tu_val("00000")));
    OK(keel_commit(t));
    du_check_contents(db, true);
    check_clean(db);
    /* a compact copy writes a counted tree with the same pairs */
    OK(keel_copy(db, copy_path, KEEL_COPY_COMPACT));
    keel_close(db);
    OK(keel_open(copy_path, &o, &db));
    du_check_contents(db, true);
    check_clean(db);
    keel_close(db);
    tu_remove(path);
    tu_remove(copy_path);
}

/* ---- damage ---- */
/* A format 2 database: a default bucket deep enough for branch pages,
 * bucket "big" with overflow values, bucket "ttl" with expiry times. */
static void make_db(const char *p)
{
    keel_db *db;
    keel_options o = {.flags = KEEL_NOSYNC};
    OK(keel_open(p, &o, &db));
    keel_txn *t;
    OK(keel_begin(db, 0, &t));
    char k[32], v[100];
    for (int i = 0; i < 4000; i++) {
        snprintf(k, sizeof k, "key%06d", i);
        snprintf(v, sizeof v, "value-%d-%0*d", i, 40, i);
        OK(keel_put(t, 0, tu_val(k), tu_val(v), 0));
    }
    keel_bucket big, ttl;
    OK(keel_bucket_open(t, "big", KEEL_CREATE, &big));
    OK(keel_bucket_open(t, "ttl", KEEL_CREATE, &ttl));
    uint8_t *buf = malloc(20000);
    assert_non_null(buf);
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 20000; j++)
            buf[j] = (uint8_t)(i + j);
        snprintf(k, sizeof k, "big%d", i);
        OK(keel_put(t, big, tu_val(k), (keel_val){buf, 5000u + 5000u * (unsigned)i}, 0));
    }
    free(buf);
    for (int i = 0; i < 50; i++) {
        snprintf(k, sizeof k, "t%02d", i);
        OK(keel_put_ttl(t, ttl, tu_val(k), tu_val("x"), 3600000, 0));
    }
    OK(keel_commit(t));
    keel_close(db);
}

static void flip_bit(const char *p, uint64_t off, unsigned bit) { assert_int_equal(tu_flip(p, off, (uint8_t)(1u << bit)), 0); }

/* The page holding key k of bucket b (leaf) and the root of its tree. */
static void find_pages(keel_db *db, const char *bucket, const char *k, uint64_t *leaf, uint64_t *root)
{
    keel_txn *t;
    OK(keel_begin(db, KEEL_RDONLY, &t));
    keel_bucket b = 0;
    if (bucket)
        OK(keel_bucket_open(t, bucket, 0, &b));
    struct tree_desc *d;
    OK(bucket_tree(t, b, &d));
    struct bt_path p;
    bool exact;
    OK(bt_search(t, d, (const uint8_t *)k, strlen(k), &p, &exact));
    assert_true(exact);
    *leaf = p.pgno[p.depth - 1];
    *root = p.pgno[0];
    keel_abort(t);
}

static int get_one(const char *p, unsigned flags, const char *bucket, const char *k, keel_val *copy)
{
    keel_db *db;
    keel_options o = {.flags = KEEL_NOSYNC | flags};
    OK(keel_open(p, &o, &db));
    keel_txn *t;
    OK(keel_begin(db, KEEL_RDONLY, &t));
    keel_bucket b = 0;
    int rc = bucket ? keel_bucket_open(t, bucket, 0, &b) : 0;
    keel_val v;
    if (!rc)
        rc = keel_get(t, b, tu_val(k), &v);
    if (!rc && copy) {
        void *c = malloc(v.len);
        memcpy(c, v.data, v.len);
        *copy = (keel_val){c, v.len};
    }
    keel_abort(t);
    keel_close(db);
    return rc;
}

static void test_verify_catches_damage(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "verify");
    make_db(path);
    keel_db *db;
    keel_options o = {.flags = KEEL_NOSYNC};
    OK(keel_open(path, &o, &db));
    uint64_t leaf, root, bigleaf, bigroot;
    find_pages(db, NULL, "key001234", &leaf, &root);
    find_pages(db, "big", "big3", &bigleaf, &bigroot);
    assert_true(root != leaf);
    /* the overflow run of big3 */
    keel_txn *t;
    OK(keel_begin(db, KEEL_RDONLY, &t));
    keel_bucket big;
    OK(keel_bucket_open(t, "big", 0, &big));
    keel_val v;
    OK(keel_get(t, big, tu_val("big3"), &v));
    uint64_t run = (uint64_t)((const uint8_t *)v.data - PAGE_HDR - db->map) / db->psize;
    keel_abort(t);
    uint32_t ps = db->psize;
    keel_close(db);

    /* 1. a value byte of key001234's leaf: a plain read returns it changed */
    keel_val before, after;
    OK(get_one(path, 0, NULL, "key001234", &before));
    uint64_t off = 0;
    {
        const char *want = "value-1234-";
        int fd = open(path, O_RDONLY);
        uint8_t *pg = malloc(ps);
        assert_int_equal(pread(fd, pg, ps, (off_t)(leaf * ps)), (ssize_t)ps);
        close(fd);
        for (uint32_t i = 0; i + strlen(want) < ps && !off; i++)
            if (!memcmp(pg + i, want, strlen(want)))
                off = leaf * ps + i + strlen(want);
        free(pg);
        assert_true(off != 0);
    }
    flip_bit(path, off, 0);
    OK(get_one(path, 0, NULL, "key001234", &after));
    assert_int_equal(after.len, before.len);
    assert_memory_not_equal(after.data, before.data, before.len); /* wrong data, silently */
    free((void *)after.data);
    free((void *)before.data);
    assert_int_equal(get_one(path, KEEL_VERIFY, NULL, "key001234", NULL), KEEL_CORRUPTED);
    char want[64];
    snprintf(want, sizeof want, "page %llu", (unsigned long long)leaf);
    assert_non_null(strstr(keel_error_detail(), want));
    /* the other leaves still read */
    OK(get_one(path, KEEL_VERIFY, NULL, "key000001", NULL));
    /* keel_copy checks every page it copies, whatever the open flags: no
     * backup carries the damage on, plain or compact */
    tu_path(copy_path, sizeof copy_path, "verify-copy");
    OK(keel_open(path, &(keel_options){.flags = KEEL_NOSYNC}, &db));
    assert_int_equal(keel_copy(db, copy_path, 0), KEEL_CORRUPTED);
    assert_int_equal(access(copy_path, F_OK), -1);
    assert_int_equal(keel_copy(db, copy_path, KEEL_COPY_COMPACT), KEEL_CORRUPTED);
    assert_int_equal(access(copy_path, F_OK), -1);
    keel_close(db);
    flip_bit(path, off, 0);
    OK(get_one(path, KEEL_VERIFY, NULL, "key001234", NULL));

    /* 2. the root (a branch): every key of the bucket is refused */
    flip_bit(path, root * ps + ps / 2, 3);
    assert_int_equal(get_one(path, KEEL_VERIFY, NULL, "key000001", NULL), KEEL_CORRUPTED);
    flip_bit(path, root * ps + ps / 2, 3);

    /* 3. an overflow page, far into the run */
    flip_bit(path, run * ps + 3 * ps + 100, 7);
    OK(get_one(path, 0, "big", "big3", NULL));
    assert_int_equal(get_one(path, KEEL_VERIFY, "big", "big3", NULL), KEEL_CORRUPTED);
    OK(get_one(path, KEEL_VERIFY, "big", "big2", NULL));
    flip_bit(path, run * ps + 3 * ps + 100, 7);

    /* 4. a trailer's sum itself */
    flip_bit(path, leaf * ps + ps - 1, 0);
    assert_int_equal(get_one(path, KEEL_VERIFY, NULL, "key001234", NULL), KEEL_CORRUPTED);
    flip_bit(path, leaf * ps + ps - 1, 0);
    OK(get_one(path, KEEL_VERIFY, NULL, "key001234", NULL));

    /* writes under KEEL_VERIFY: the pages they copy are checked too */
    OK(keel_open(path, &(keel_options){.flags = KEEL_NOSYNC | KEEL_VERIFY}, &db));
    OK(keel_begin(db, 0, &t));
    for (int i = 0; i < 4000; i += 3) {
        char k[32];
        snprintf(k, sizeof k, "key%06d", i);
        OK(keel_del(t, 0, tu_val(k)));
    }
    OK(keel_commit(t));
    check_clean(db);
    keel_close(db);
    tu_remove(path);
}

struct reports {
    int n;
    char all[4000];
};

static void collect(void *ctx, const char *msg)
{
    struct reports *r = ctx;
    r->n++;
    size_t at = strlen(r->all);
    snprintf(r->all + at, sizeof r->all - at, "%s\n", msg);
}

static void test_check_names_tree_and_keys(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "check-names");
    make_db(path);
    keel_db *db;
    keel_options o = {.flags = KEEL_NOSYNC};
    OK(keel_open(path, &o, &db));
    uint64_t leaf, root;
    find_pages(db, "ttl", "t07", &leaf, &root);
    uint32_t ps = db->psize;
    keel_close(db);
    flip_bit(path, leaf * ps + 40, 1);
    OK(keel_open(path, &o, &db));
    struct reports r = {0};
    uint64_t problems = 0;
    OK(keel_check(db, collect, &r, &problems));
    assert_true(problems >= 1);
    assert_non_null(strstr(r.all, "ttl: leaf page"));
    assert_non_null(strstr(r.all, "checksum mismatch"));
    assert_non_null(strstr(r.all, "keys from the first key to the last key"));
    keel_close(db);
    tu_remove(path);
}

/* The pages reachable from the newest meta: every tree's pages and runs. */
struct reach {
    uint8_t *bits;
    uint64_t npages, count;
};

static int reach_page(void *ctx, uint64_t pgno, uint32_t npages, unsigned kind, int level)
{
    struct reach *r = ctx;
    (void)kind;
    (void)level;
    for (uint64_t p = pgno; p < pgno + npages && p < r->npages; p++)
        if (!(r->bits[p / 8] & (1u << (p % 8)))) {
            r->bits[p / 8] |= (uint8_t)(1u << (p % 8));
            r->count++;
        }
    return 0;
}

struct reach_ctx {
    struct reach *r;
    keel_txn *txn;
};

static int reach_named(const char *name, const struct tree_desc *d, void *ctx)
{
    (void)name;
    struct reach_ctx *rc = ctx;
    struct tree_desc copy = *d;
    return bt_walk(rc->txn, &copy, reach_page, rc->r);
}

static bool reachable(const struct reach *r, uint64_t pg) { return r->bits[pg / 8] & (1u << (pg % 8)); }

/* Every single-bit flip in a page reachable from the newest meta of a
 * compact file is reported, and no check ends in a signal. */
static void test_check_finds_every_flip(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "flips-src");
    tu_path(copy_path, sizeof copy_path, "flips");
    make_db(path);
    keel_db *db;
    keel_options o = {.flags = KEEL_NOSYNC};
    OK(keel_open(path, &o, &db));
    OK(keel_copy(db, copy_path, KEEL_COPY_COMPACT));
    keel_close(db);
    OK(keel_open(copy_path, &o, &db));
    keel_txn *t;
    OK(keel_begin(db, KEEL_RDONLY, &t));
    struct reach r = {.npages = t->meta.npages};
    r.bits = calloc(r.npages / 8 + 1, 1);
    assert_non_null(r.bits);
    for (int i = 0; i < TREE_COUNT; i++)
        OK(bt_walk(t, &t->meta.trees[i], reach_page, &r));
    struct reach_ctx rc = {&r, t};
    OK(bucket_walk(t, reach_named, &rc));
    keel_abort(t);
    uint32_t ps = db->psize;
    keel_close(db);
    assert_true(r.count > 50);
    uint64_t seed = tu_seed(0x5eedf11b), flips = 300 * (uint64_t)tu_scale(), reported = 0;
    for (uint64_t i = 0; i < flips; i++) {
        uint64_t pg;
        do
            pg = 2 + tu_rand(&seed) % (r.npages - 2);
        while (!reachable(&r, pg));
        uint64_t off = pg * ps + tu_rand(&seed) % ps;
        unsigned bit = (unsigned)(tu_rand(&seed) % 8);
        flip_bit(copy_path, off, bit);
        uint64_t problems = 0;
        OK(keel_open(copy_path, &o, &db));
        OK(keel_check(db, NULL, NULL, &problems));
        keel_close(db);
        flip_bit(copy_path, off, bit);
        if (!problems)
            fprintf(stderr, "flip of bit %u at byte %llu (page %llu) not reported\n", bit, (unsigned long long)off,
                    (unsigned long long)pg);
        reported += problems > 0;
    }
    assert_int_equal(reported, flips);
    free(r.bits);
    tu_remove(path);
    tu_remove(copy_path);
}

/* Page sums must not depend on the CPU that computed them: a file written
 * on one machine is verified on another.  Every length to 1,100 bytes (all
 * of XXH3's short paths and the first long blocks), then page-sized and odd
 * lengths to 70,000, at every alignment mod 64. */
static void test_hash_long_is_xxh3(void **state)
{
    (void)state;
    enum { MAX = 70000 };
    static uint8_t buf[MAX + 64];
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < sizeof buf; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
    __builtin_cpu_init();
    bool avx2 = HASH_HAVE_AVX2 && __builtin_cpu_supports("avx2");
    size_t checked = 0;
    for (size_t len = 0; len <= MAX; len += len < 1100 ? 1 : 997) {
        const uint8_t *p = buf + len % 64;
        uint64_t want = XXH3_64bits(p, len);
        assert_true(hash_long(p, len) == want);
        if (avx2)
            assert_true(hash_long_avx2(p, len) == want);
        checked++;
    }
    for (uint32_t ps = 4096; ps <= 65536; ps *= 2) {
        assert_true(hash_long(buf, ps - 8) == XXH3_64bits(buf, ps - 8));
        if (avx2)
            assert_true(hash_long_avx2(buf, ps - 8) == XXH3_64bits(buf, ps - 8));
    }
    print_message("hash_long: %zu lengths, AVX2 copy %s\n", checked, avx2 ? "checked" : "not run (no AVX2)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format1_opens_reads_writes),
        cmocka_unit_test(test_format1_compact_copy_upgrades),
        cmocka_unit_test(test_dupsort_uncounted),
        cmocka_unit_test(test_verify_catches_damage),
        cmocka_unit_test(test_check_names_tree_and_keys),
        cmocka_unit_test(test_check_finds_every_flip),
        cmocka_unit_test(test_hash_long_is_xxh3),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
