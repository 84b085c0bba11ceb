/*
 * test_api.c — the public API's argument checking and basic contracts.
 *
 * Every bad input answers its own error code without crashing, and a failed
 * call leaves the data file byte for byte as it was (checked with a digest of
 * the whole file).  Also: bucket create/open/drop/list, KEEL_NOOVERWRITE,
 * KEEL_APPEND, key and value size limits, and opening files that are not
 * (current) keel files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "format.h"
#include "internal.h" /* test_options_size reads db->max_reader_lag */
#include "testutil.h"

#define OK(x) assert_int_equal((x), 0)

static char path[4096];

/* ---- helpers ---------------------------------------------------------- */

/* A digest of the whole file (size included); 0 when it does not exist. */
static uint64_t file_digest(const char *p)
{
    int fd = open(p, O_RDONLY);
    if (fd < 0)
        return 0;
    XXH3_state_t *st = XXH3_createState();
    assert_non_null(st);
    XXH3_64bits_reset(st);
    static uint8_t buf[1 << 16];
    uint64_t total = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        assert_true(r >= 0);
        if (r == 0)
            break;
        XXH3_64bits_update(st, buf, (size_t)r);
        total += (uint64_t)r;
    }
    close(fd);
    XXH3_64bits_update(st, &total, sizeof total);
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h ? h : 1;
}

static bool file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

static keel_db *open_db(const char *p, uint32_t psize, unsigned flags)
{
    keel_options o = {0};
    o.page_size = psize;
    o.flags = flags;
    keel_db *db = NULL;
    OK(keel_open(p, &o, &db));
    assert_non_null(db);
    return db;
}

static void put_str(keel_txn *t, keel_bucket b, const char *k, const char *v)
{
    OK(keel_put(t, b, tu_val(k), tu_val(v), 0));
}

static void expect_str(keel_txn *t, keel_bucket b, const char *k, const char *v)
{
    keel_val out;
    if (!v) {
        assert_int_equal(keel_get(t, b, tu_val(k), &out), KEEL_NOTFOUND);
        return;
    }
    OK(keel_get(t, b, tu_val(k), &out));
    assert_int_equal(out.len, strlen(v));
    assert_memory_equal(out.data, v, out.len);
}

/* A db with a few committed keys, closed; returns its digest. */
static uint64_t make_small_db(const char *p, uint32_t psize)
{
    keel_db *db = open_db(p, psize, 0);
    keel_txn *t;
    OK(keel_begin(db, 0, &t));
    put_str(t, 0, "alpha", "1");
    put_str(t, 0, "beta", "2");
    keel_bucket b;
    OK(keel_bucket_open(t, "named", KEEL_CREATE, &b));
    put_str(t, b, "gamma", "3");
    OK(keel_commit(t));
    keel_close(db);
    return file_digest(p);
}

static int count_entries(keel_txn *t, keel_bucket b)
{
    keel_cursor *c;
    OK(keel_cursor_open(t, b, &c));
    keel_val k, v;
    int n = 0, rc;
    for (rc = keel_cursor_first(c, &k, &v); rc == 0; rc = keel_cursor_next(c, &k, &v))
        n++;
    assert_int_equal(rc, KEEL_NOTFOUND);
    keel_cursor_close(c);
    return n;
}

/* ---- NULL pointers and argument checks ------------------------------- */

static int list_noop(const char *name, void *ctx)
{
    (void)name;
    (void)ctx;
    return 0;
}

static void test_null_pointers(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "api-null");
    keel_db *db = (keel_db *)0x1;
    assert_int_equal(keel_open(NULL, NULL, &db), KEEL_BADARG);
    assert_null(db);
    assert_int_equal(keel_open(path, NULL, NULL), KEEL_BADARG);
    db = (keel_db *)0x1;
    assert_int_equal(keel_open("", NULL, &db), KEEL_BADARG);
    assert_null(db);
    assert_false(file_exists(path));

    uint64_t digest = make_small_db(path, 0);
    db = open_db(path, 0, 0);

    keel_txn *t = (keel_txn *)0x1;
    assert_int_equal(keel_begin(NULL, 0, &t), KEEL_BADARG);
    assert_null(t);
    assert_int_equal(keel_begin(db, 0, NULL), KEEL_BADARG);
    assert_int_equal(keel_begin(db, KEEL_RDONLY, NULL), KEEL_BADARG);
    assert_int_equal(keel_commit(NULL), KEEL_BADARG);
    keel_abort(NULL);
    assert_int_equal(keel_txn_id(NULL), 0);
    keel_close(NULL);
    assert_int_equal(keel_max_key_size(NULL), 0);

    keel_val out;
    keel_bucket b;
    keel_cursor *c = (keel_cursor *)0x1;
    keel_stat st;
    size_t count;
    keel_reader_info ri[2];

    /* no txn */
    assert_int_equal(keel_get(NULL, 0, tu_val("alpha"), &out), KEEL_BADARG);
    assert_int_equal(keel_put(NULL, 0, tu_val("alpha"), tu_val("x"), 0), KEEL_BADARG);
    assert_int_equal(keel_del(NULL, 0, tu_val("alpha")), KEEL_BADARG);
    assert_int_equal(keel_bucket_open(NULL, "named", 0, &b), KEEL_BADARG);
    assert_int_equal(keel_bucket_drop(NULL, 0), KEEL_BADARG);
    assert_int_equal(keel_bucket_list(NULL, list_noop, NULL), KEEL_BADARG);
    assert_int_equal(keel_cursor_open(NULL, 0, &c), KEEL_BADARG);
    assert_null(c);
    assert_int_equal(keel_bucket_stat(NULL, 0, &st), KEEL_BADARG);

    /* no cursor */
    assert_int_equal(keel_cursor_first(NULL, NULL, NULL), KEEL_BADARG);
    assert_int_equal(keel_cursor_last(NULL, NULL, NULL), KEEL_BADARG);
    assert_int_equal(keel_cursor_next(NULL, NULL, NULL), KEEL_BADARG);
    assert_int_equal(keel_cursor_prev(NULL, NULL, NULL), KEEL_BADARG);
    assert_int_equal(keel_cursor_current(NULL, NULL, NULL), KEEL_BADARG);
    assert_int_equal(keel_cursor_seek(NULL, tu_val("a"), NULL, NULL), KEEL_BADARG);
    assert_int_equal(keel_cursor_del(NULL), KEEL_BADARG);
    keel_cursor_close(NULL);

    /* no db / no output */
    assert_int_equal(keel_db_stat(NULL, &st), KEEL_BADARG);
    assert_int_equal(keel_db_stat(db, NULL), KEEL_BADARG);
    assert_int_equal(keel_db_readers(NULL, ri, 2, &count), KEEL_BADARG);
    assert_int_equal(keel_db_readers(db, ri, 2, NULL), KEEL_BADARG);
    assert_int_equal(keel_db_readers(db, NULL, 2, &count), KEEL_BADARG);
    OK(keel_db_readers(db, NULL, 0, &count));
    assert_int_equal(count, 0);

    /* in a write txn: NULL outputs and NULL data with a length */
    OK(keel_begin(db, 0, &t));
    assert_int_equal(keel_get(t, 0, tu_val("alpha"), NULL), KEEL_BADARG);
    assert_int_equal(keel_get(t, 0, (keel_val){NULL, 5}, &out), KEEL_BADARG);
    assert_int_equal(keel_put(t, 0, (keel_val){NULL, 5}, tu_val("x"), 0), KEEL_BADARG);
    assert_int_equal(keel_put(t, 0, tu_val("alpha"), (keel_val){NULL, 3}, 0), KEEL_BADARG);
    assert_int_equal(keel_del(t, 0, (keel_val){NULL, 5}), KEEL_BADARG);
    assert_int_equal(keel_bucket_open(t, "named", 0, NULL), KEEL_BADARG);
    assert_int_equal(keel_bucket_open(t, "newone", KEEL_CREATE, NULL), KEEL_BADARG);
    assert_int_equal(keel_bucket_list(t, NULL, NULL), KEEL_BADARG);
    assert_int_equal(keel_cursor_open(t, 0, NULL), KEEL_BADARG);
    assert_int_equal(keel_bucket_stat(t, 0, NULL), KEEL_BADARG);
    OK(keel_cursor_open(t, 0, &c));
    assert_int_equal(keel_cursor_seek(c, (keel_val){NULL, 2}, NULL, NULL), KEEL_BADARG);
    keel_cursor_close(c);
    /* argument errors do not poison the txn */
    expect_str(t, 0, "alpha", "1");
    assert_int_equal(keel_bucket_open(t, "named", 0, &b), 0);
    expect_str(t, b, "gamma", "3");
    OK(keel_commit(t)); /* nothing changed: nothing written */
    keel_close(db);
    assert_int_equal(file_digest(path), digest);

    /* the txn was usable after the bad calls */
    db = open_db(path, 0, 0);
    OK(keel_begin(db, 0, &t));
    assert_int_equal(keel_put(t, 0, tu_val("delta"), (keel_val){NULL, 7}, 0), KEEL_BADARG);
    put_str(t, 0, "delta", "4");
    OK(keel_commit(t));
    OK(keel_begin(db, KEEL_RDONLY, &t));
    expect_str(t, 0, "delta", "4");
    keel_abort(t);
    keel_close(db);
    tu_remove(path);
}

/* ---- key sizes --------------------------------------------------------- */

static void fill_key(uint8_t *k, size_t len, unsigned i)
{
    /* a long shared prefix, so separators stay long, then the index */
    memset(k, 'k', len);
    char tail[16];
    int n = snprintf(tail, sizeof tail, "%06u", i);
    memcpy(k + len - (size_t)n, tail, (size_t)n);
}

static void test_key_sizes(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "api-keys");
    keel_db *db = open_db(path, 4096, 0);
    size_t max = keel_max_key_size(db);
    assert_true(max >= 1024);
    assert_true(max < 4096);
    keel_txn *t;
    OK(keel_begin(db, 0, &t));
    put_str(t, 0, "seed", "s");
    OK(keel_commit(t));
    keel_close(db);
    uint64_t digest = file_digest(path);

    db = open_db(path, 0, 0);
    assert_int_equal(keel_max_key_size(db), max);
    uint8_t *big = malloc(max + 2);
    assert_non_null(big);
    memset(big, 'x', max + 2);
    keel_val out;
    keel_val empty1 = {NULL, 0}, empty2 = {"", 0}, toolong = {big, max + 1};

    OK(keel_begin(db, 0, &t));
    keel_cursor *c;
    OK(keel_cursor_open(t, 0, &c));
    keel_val kv[] = {empty1, empty2, toolong, {big, 65536}, {big, SIZE_MAX}};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) {
        assert_int_equal(keel_put(t, 0, kv[i], tu_val("v"), 0), KEEL_BADVALSIZE);
        assert_int_equal(keel_get(t, 0, kv[i], &out), KEEL_BADVALSIZE);
        assert_int_equal(keel_del(t, 0, kv[i]), KEEL_BADVALSIZE);
        assert_int_equal(keel_cursor_seek(c, kv[i], NULL, NULL), KEEL_BADVALSIZE);
    }
    /* a value over the maximum (never read: the length is checked first) */
    if (sizeof(size_t) > 4)
        assert_int_equal(keel_put(t, 0, tu_val("k"), (keel_val){big, KEEL_MAX_VALUE_SIZE + 1}, 0),
                         KEEL_BADVALSIZE);
    keel_cursor_close(c);
    /* none of that poisoned the txn */
    expect_str(t, 0, "seed", "s");
    keel_abort(t);
    OK(keel_begin(db, KEEL_RDONLY, &t));
    assert_int_equal(keel_get(t, 0, empty2, &out), KEEL_BADVALSIZE);
    assert_int_equal(keel_get(t, 0, toolong, &out), KEEL_BADVALSIZE);
    keel_abort(t);
    keel_close(db);
    assert_int_equal(file_digest(path), digest);

    /* keys of exactly max and of 1024.. max bytes, many of them so pages
     * split and merge with long separators */
    db = open_db(path, 0, 0);
    OK(keel_begin(db, 0, &t));
    memset(big, 'm', max);
    OK(keel_put(t, 0, (keel_val){big, max}, tu_val("maxkey-small"), 0));
    OK(keel_get(t, 0, (keel_val){big, max}, &out));
    assert_int_equal(out.len, 12);
    assert_memory_equal(out.data, "maxkey-small", 12);
    /* max key with a value that forces an overflow page */
    uint8_t *bigval = malloc(10000);
    assert_non_null(bigval);
    for (int i = 0; i < 10000; i++)
        bigval[i] = (uint8_t)(i * 7);
    big[0] = 'n';
    OK(keel_put(t, 0, (keel_val){big, max}, (keel_val){bigval, 10000}, 0));
    OK(keel_commit(t));

    const unsigned N = 300;
    uint8_t *k = malloc(max);
    assert_non_null(k);
    OK(keel_begin(db, 0, &t));
    for (unsigned i = 0; i < N; i++) {
        size_t len = 1024 + (i * 37) % (max - 1024 + 1);
        fill_key(k, len, i);
        OK(keel_put(t, 0, (keel_val){k, len}, (keel_val){&i, sizeof i}, 0));
    }
    OK(keel_commit(t));
    keel_close(db);

    db = open_db(path, 0, 0);
    OK(keel_begin(db, KEEL_RDONLY, &t));
    memset(big, 'm', max);
    OK(keel_get(t, 0, (keel_val){big, max}, &out));
    assert_int_equal(out.len, 12);
    big[0] = 'n';
    OK(keel_get(t, 0, (keel_val){big, max}, &out));
    assert_int_equal(out.len, 10000);
    assert_memory_equal(out.data, bigval, 10000);
    for (unsigned i = 0; i < N; i++) {
        size_t len = 1024 + (i * 37) % (max - 1024 + 1);
        fill_key(k, len, i);
        OK(keel_get(t, 0, (keel_val){k, len}, &out));
        assert_int_equal(out.len, sizeof i);
        assert_memory_equal(out.data, &i, sizeof i);
    }
    assert_int_equal(count_entries(t, 0), (int)N + 3);
    keel_abort(t);

    /* delete every other long key, check the rest in cursor order */
    OK(keel_begin(db, 0, &t));
    for (unsigned i = 0; i < N; i += 2) {
        size_t len = 1024 + (i * 37) % (max - 1024 + 1);
        fill_key(k, len, i);
        OK(keel_del(t, 0, (keel_val){k, len}));
    }
    OK(keel_commit(t));
    OK(keel_begin(db, KEEL_RDONLY, &t));
    assert_int_equal(count_entries(t, 0), (int)(N / 2) + 3);
    keel_cursor *cur;
    OK(keel_cursor_open(t, 0, &cur));
    keel_val ck, cv, prev = {NULL, 0};
    int rc;
    for (rc = keel_cursor_first(cur, &ck, &cv); rc == 0; rc = keel_cursor_next(cur, &ck, &cv)) {
        if (prev.data) {
            size_t m = prev.len < ck.len ? prev.len : ck.len;
            int cmp = memcmp(prev.data, ck.data, m);
            assert_true(cmp < 0 || (cmp == 0 && prev.len < ck.len));
        }
        prev = ck;
    }
    assert_int_equal(rc, KEEL_NOTFOUND);
    keel_cursor_close(cur);
    keel_abort(t);
    keel_close(db);

    /* at 64 KiB pages the limit is larger, and still works */
    tu_remove(path);
    db = open_db(path, 65536, 0);
    size_t max64 = keel_max_key_size(db);
    assert_true(max64 > max);
    uint8_t *k64 = malloc(max64 + 1);
    assert_non_null(k64);
    memset(k64, 'q', max64 + 1);
    OK(keel_begin(db, 0, &t));
    OK(keel_put(t, 0, (keel_val){k64, max64}, tu_val("v64"), 0));
    assert_int_equal(keel_put(t, 0, (keel_val){k64, max64 + 1}, tu_val("v"), 0), KEEL_BADVALSIZE);
    OK(keel_commit(t));
    keel_close(db);
    db = open_db(path, 0, 0);
    assert_int_equal(keel_max_key_size(db), max64);
    OK(keel_begin(db, KEEL_RDONLY, &t));
    OK(keel_get(t, 0, (keel_val){k64, max64}, &out));
    assert_int_equal(out.len, 3);
    keel_abort(t);
    keel_close(db);

    free(k64);
    free(k);
    free(bigval);
    free(big);
    tu_remove(path);
}

/* ---- values -------------------------------------------------------------- */

static void test_empty_values(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "api-empty");
    keel_db *db = open_db(path, 0, 0);
    keel_txn *t;
    keel_bucket b;
    OK(keel_begin(db, 0, &t));
    OK(keel_bucket_open(t, "e", KEEL_CREATE, &b));
    OK(keel_put(t, 0, tu_val("a"), (keel_val){NULL, 0}, 0));
    OK(keel_put(t, 0, tu_val("b"), (keel_val){"", 0}, 0));
    OK(keel_put(t, b, tu_val("c"), (keel_val){NULL, 0}, 0));
    /* overwrite non-empty with empty and empty with non-empty */
    put_str(t, 0, "d", "nonempty");
    OK(keel_put(t, 0, tu_val("d"), (keel_val){NULL, 0}, 0));
    put_str(t, 0, "a", "x");
    OK(keel_put(t, 0, tu_val("a"), (keel_val){NULL, 0}, 0));
    keel_val out = {"junk", 4};
    OK(keel_get(t, 0, tu_val("a"), &out));
    assert_int_equal(out.len, 0);
    OK(keel_commit(t));
    keel_close(db);

    db = open_db(path, 0, KEEL_RDONLY);
    OK(keel_begin(db, KEEL_RDONLY, &t));
    OK(keel_bucket_open(t, "e", 0, &b));
    const char *keys[] = {"a", "b", "d"};
    for (int i = 0; i < 3; i++) {
        out = (keel_val){"junk", 4};
        OK(keel_get(t, 0, tu_val(keys[i]), &out));
        assert_int_equal(out.len, 0);
    }
    out = (keel_val){"junk", 4};
    OK(keel_get(t, b, tu_val("c"), &out));
    assert_int_equal(out.len, 0);
    keel_cursor *c;
    OK(keel_cursor_open(t, 0, &c));
    keel_val ck, cv;
    int n = 0;
    for (int rc = keel_cursor_first(c, &ck, &cv); rc == 0; rc = keel_cursor_next(c, &ck, &cv)) {
        assert_int_equal(cv.len, 0);
        assert_memory_equal(ck.data, keys[n], 1);
        n++;
    }
    assert_int_equal(n, 3);
    keel_cursor_close(c);
    keel_stat st;
    OK(keel_bucket_stat(t, 0, &st));
    assert_int_equal(st.entries, 3);
    keel_abort(t);
    keel_close(db);
    tu_remove(path);
}

static void fill_pattern(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t s = seed | 1;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t r = tu_rand(&s);
        memcpy(p + i, &r, 8);
    }
    for (; i < n; i++)
        p[i] = (uint8_t)tu_rand(&s);
}

static void test_value_sizes(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "api-vals");
    keel_db *db = open_db(path, 0, 0);
    /* sizes around the inline limit and the page size, and 1 MiB */
    static const size_t sizes[] = {0, 1, 100, 1000, 1900, 2000, 2010, 2020, 2030, 2040, 2100,
                                   4064, 4079, 4080, 4081, 4096, 8160, 8192, 65536, 1 << 20};
    enum { NS = sizeof sizes / sizeof sizes[0] };
    uint8_t *buf = malloc((1 << 20) + 1);
    assert_non_null(buf);
    keel_txn *t;
    char key[32];
    OK(keel_begin(db, 0, &t));
    for (int i = 0; i < NS; i++) {
        fill_pattern(buf, sizes[i], (uint64_t)i + 1);
        snprintf(key, sizeof key, "v%02d", i);
        OK(keel_put(t, 0, tu_val(key), (keel_val){buf, sizes[i]}, 0));
    }
    OK(keel_commit(t));
    keel_close(db);

    for (int round = 0; round < 2; round++) {
        db = open_db(path, 0, round ? KEEL_RDONLY : 0);
        OK(keel_begin(db, KEEL_RDONLY, &t));
        for (int i = 0; i < NS; i++) {
            fill_pattern(buf, sizes[i], (uint64_t)(round ? NS - i : i + 1));
            snprintf(key, sizeof key, "v%02d", i);
            keel_val out;
            OK(keel_get(t, 0, tu_val(key), &out));
            assert_int_equal(out.len, sizes[i]);
            if (sizes[i])
                assert_memory_equal(out.data, buf, sizes[i]);
        }
        keel_abort(t);
        if (round == 0) {
            /* rewrite every value with another pattern, in reverse order of size */
            OK(keel_begin(db, 0, &t));
            for (int i = 0; i < NS; i++) {
                fill_pattern(buf, sizes[i], (uint64_t)(NS - i));
                snprintf(key, sizeof key, "v%02d", i);
                OK(keel_put(t, 0, tu_val(key), (keel_val){buf, sizes[i]}, 0));
            }
            OK(keel_commit(t));
        }
        keel_close(db);
    }

    /* swap big for small and small for big, delete the big ones; the
     * overflow page count follows */
    db = open_db(path, 0, 0);
    OK(keel_begin(db, 0, &t));
    fill_pattern(buf, 1 << 20, 99);
    OK(keel_put(t, 0, tu_val("v00"), (keel_val){buf, 1 << 20}, 0));
    OK(keel_put(t, 0, tu_val(key), tu_val("small now"), 0)); /* key = the 1 MiB one */
    for (int i = 0; i < NS; i++) {
        snprintf(key, sizeof key, "v%02d", i);
        if (i && sizes[i] > 2010) /* every value in overflow pages but v00 (inline: node up to 2026 bytes) */
            OK(keel_del(t, 0, tu_val(key)));
    }
    keel_stat st;
    OK(keel_bucket_stat(t, 0, &st));
    assert_int_equal(st.overflow_pages, (16 + (1 << 20) + 24 + 4095) / 4096); /* header, value, trailer */
    OK(keel_commit(t));
    keel_close(db);
    db = open_db(path, 0, 0);
    OK(keel_begin(db, KEEL_RDONLY, &t));
    keel_val out;
    OK(keel_get(t, 0, tu_val("v00"), &out));
    assert_int_equal(out.len, 1 << 20);
    assert_memory_equal(out.data, buf, 1 << 20);
    keel_abort(t);
    keel_close(db);
    free(buf);
    tu_remove(path);
}

static void test_value_64mib(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "api-64m");
    const size_t n = (size_t)64 << 20;
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    fill_pattern(buf, n, 64);
    keel_db *db = open_db(path, 0, 0);
    keel_txn *t;
    OK(keel_begin(db, 0, &t));
    put_str(t, 0, "before", "b");
    OK(keel_put(t, 0, tu_val("huge"), (keel_val){buf, n}, 0));
    put_str(t, 0, "zafter", "a");
    OK(keel_commit(t));
    keel_close(db);

    db = open_db(path, 0, 0);
    OK(keel_begin(db, KEEL_RDONLY, &t));
    keel_val out;
    OK(keel_get(t, 0, tu_val("huge"), &out));
    assert_int_equal(out.len, n);
    assert_memory_equal(out.data, buf, n);
    expect_str(t, 0, "before", "b");
    expect_str(t, 0, "zafter", "a");
    keel_abort(t);
    keel_stat st;
    OK(keel_db_stat(db, &st));
    assert_true(st.overflow_pages >= n / 4096);
    assert_true(st.file_size >= n);
    /* delete it: the space becomes free */
    OK(keel_begin(db, 0, &t));
    OK(keel_del(t, 0, tu_val("huge")));
    OK(keel_commit(t));
    OK(keel_begin(db, KEEL_RDONLY, &t));
    assert_int_equal(keel_get(t, 0, tu_val("huge"), &out), KEEL_NOTFOUND);
    expect_str(t, 0, "zafter", "a");
    keel_abort(t);
    keel_close(db);
    free(buf);
    tu_remove(path);
}

/* ---- read-only txns and dbs ------------------------------------------- */

static void test_readonly(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "api-ro");
    uint64_t digest = make_small_db(path, 0);

    keel_db *db = open_db(path, 0, 0);
    keel_txn *t;
    keel_bucket b, nb;
    OK(keel_begin(db, KEEL_RDONLY, &t));
    OK(keel_bucket_open(t, "named", 0, &b));
    assert_int_equal(keel_put(t, 0, tu_val("x"), tu_val("y"), 0), KEEL_READONLY);
    assert_int_equal(keel_put(t, b, tu_val("x"), tu_val("y"), 0), KEEL_READONLY);
    assert_int_equal(keel_del(t, 0, tu_val("alpha")), KEEL_READONLY);
    assert_int_equal(keel_del(t, 0, tu_val("missing")), KEEL_READONLY);
    assert_int_equal(keel_bucket_drop(t, b), KEEL_READONLY);
    assert_int_equal(keel_bucket_drop(t, 0), KEEL_READONLY);
    assert_int_equal(keel_bucket_open(t, "fresh", KEEL_CREATE, &nb), KEEL_READONLY);
    assert_int_equal(keel_bucket_open(t, "fresh", 0, &nb), KEEL_NOTFOUND);
    OK(keel_bucket_open(t, "named", KEEL_CREATE, &nb)); /* exists: nothing to create */
    assert_int_equal(nb, b);
    keel_cursor *c;
    OK(keel_cursor_open(t, 0, &c));
    OK(keel_cursor_first(c, NULL, NULL));
    assert_int_equal(keel_cursor_del(c), KEEL_READONLY);
    keel_cursor_close(c);
    /* still usable */
    expect_str(t, 0, "alpha", "1");
    expect_str(t, b, "gamma", "3");
    OK(keel_commit(t)); /* committing a read txn just ends it */
    keel_close(db);
    assert_int_equal(file_digest(path), digest);

    /* a read-only handle */
    db = open_db(path, 0, KEEL_RDONLY);
    t = (keel_txn *)0x1;
    assert_int_equal(keel_begin(db, 0, &t), KEEL_READONLY);
    assert_null(t);
    OK(keel_begin(db, KEEL_RDONLY, &t));
    expect_str(t, 0, "beta", "2");
    assert_int_equal(keel_put(t, 0, tu_val("x"), tu_val("y"), 0), KEEL_READONLY);
    keel_abort(t);
    keel_stat st;
    OK(keel_db_stat(db, &st));
    assert_int_equal(st.entries, 3);
    keel_close(db);
    assert_int_equal(file_digest(path), digest);

    /* read-only open of a missing file creates nothing */
    tu_remove(path);
    keel_options o = {.flags = KEEL_RDONLY};
    db = (keel_db *)0x1;
    assert_int_equal(keel_open(path, &o, &db), ENOENT);
    assert_null(db);
    assert_false(file_exists(path));
    /* ... and of an empty file is not a keel file */
    int fd = open(path, O_CREAT | O_RDWR, 0644);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(keel_open(path, &o, &db), KEEL_INVALID);
    struct stat sst;
    assert_int_equal(stat(path, &sst), 0);
    assert_int_equal(sst.st_size, 0);
    tu_remove(path);
}

/* ---- flags ------------------------------------------------------------- */

static void test_bad_flags(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "api-flags");
    uint64_t digest = make_small_db(path, 0);
    keel_options o = {0};
    keel_db *db;
    static const unsigned bad_open[] = {0x8u, 0x10u, KEEL_CREATE, KEEL_NOOVERWRITE, 0x80000000u};
    for (size_t i = 0; i < sizeof bad_open / sizeof bad_open[0]; i++) {
        o.flags = bad_open[i];
        db = (keel_db *)0x1;
        assert_int_equal(keel_open(path, &o, &db), KEEL_BADFLAGS);
        assert_null(db);
    }
    db = open_db(path, 0, 0);
    keel_txn *t = (keel_txn *)0x1;
    static const unsigned bad_begin[] = {KEEL_NOSYNC, KEEL_CREATE, KEEL_APPEND, 0x8000u, KEEL_RDONLY | 0x40u};
    for (size_t i = 0; i < sizeof bad_begin / sizeof bad_begin[0]; i++) {
        assert_int_equal(keel_begin(db, bad_begin[i], &t), KEEL_BADFLAGS);
        assert_null(t);
    }
    OK(keel_begin(db, 0, &t));
    keel_bucket b;
    static const unsigned bad_put[] = {KEEL_CREATE, KEEL_RDONLY, 0x80u, KEEL_APPEND | 0x1000u};
    for (size_t i = 0; i < sizeof bad_put / sizeof bad_put[0]; i++)
        assert_int_equal(keel_put(t, 0, tu_val("zz"), tu_val("v"), bad_put[i]), KEEL_BADFLAGS);
    static const unsigned bad_bucket[] = {KEEL_APPEND, KEEL_NOOVERWRITE, KEEL_RDONLY, KEEL_CREATE | 0x200u};
    for (size_t i = 0; i < sizeof bad_bucket / sizeof bad_bucket[0]; i++)
        assert_int_equal(keel_bucket_open(t, "newb", bad_bucket[i], &b), KEEL_BADFLAGS);
    /* nothing was created */
    assert_int_equal(keel_bucket_open(t, "newb", 0, &b), KEEL_NOTFOUND);
    expect_str(t, 0, "zz", NULL);
    OK(keel_commit(t));
    keel_close(db);
    assert_int_equal(file_digest(path), digest);
    tu_remove(path);
}

/* ---- finished txns ------------------------------------------------------ */

/* Every entry point on a txn that has ended gives KEEL_BADTXN. */
static void expect_dead_txn(keel_txn *t)
{
    keel_val out;
    keel_bucket b;
    keel_cursor *c = (keel_cursor *)0x1;
    keel_stat st;
    assert_int_equal(keel_txn_id(t), 0);
    assert_int_equal(keel_get(t, 0, tu_val("alpha"), &out), KEEL_BADTXN);
    assert_int_equal(keel_put(t, 0, tu_val("alpha"), tu_val("x"), 0), KEEL_BADTXN);
    assert_int_equal(keel_del(t, 0, tu_val("alpha")), KEEL_BADTXN);
    assert_int_equal(keel_bucket_open(t, "named", 0, &b), KEEL_BADTXN);
    assert_int_equal(keel_bucket_open(t, NULL, 0, &b), KEEL_BADTXN);
    assert_int_equal(keel_bucket_drop(t, 0), KEEL_BADTXN);
    assert_int_equal(keel_bucket_list(t, list_noop, NULL), KEEL_BADTXN);
    assert_int_equal(keel_bucket_stat(t, 0, &st), KEEL_BADTXN);
    assert_int_equal(keel_cursor_open(t, 0, &c), KEEL_BADTXN);
    assert_null(c);
    keel_abort(t); /* harmless */
    assert_int_equal(keel_commit(t), KEEL_BADTXN);
    keel_abort(t);
}

static void test_finished_txn(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "api-dead");
    make_small_db(path, 0);
    keel_db *db = open_db(path, 0, 0);
    keel_txn *t;

    /* committed write txn (with a change) */
    OK(keel_begin(db, 0, &t));
    put_str(t, 0, "epsilon", "5");
    assert_true(keel_txn_id(t) > 0);
    OK(keel_commit(t));
    expect_dead_txn(t);
    /* committed write txn without changes */
    OK(keel_begin(db, 0, &t));
    OK(keel_commit(t));
    expect_dead_txn(t);
    /* aborted write txn */
    OK(keel_begin(db, 0, &t));
    put_str(t, 0, "zeta", "6");
    keel_abort(t);
    expect_dead_txn(t);
    /* read txn ended by abort and by commit */
    OK(keel_begin(db, KEEL_RDONLY, &t));
    assert_true(keel_txn_id(t) > 0);
    keel_abort(t);
    expect_dead_txn(t);
    OK(keel_begin(db, KEEL_RDONLY, &t));
    OK(keel_commit(t));
    expect_dead_txn(t);

    /* the writer lock was released every time, and only epsilon landed */
    OK(keel_begin(db, 0, &t));
    expect_str(t, 0, "epsilon", "5");
    expect_str(t, 0, "zeta", NULL);
    keel_abort(t);
    keel_close(db);
    tu_remove(path);
}

/* ---- cursors --------------------------------------------------------- */

static void expect_bad_cursor(keel_cursor *c, int code)
{
    keel_val k, v;
    assert_int_equal(keel_cursor_first(c, &k, &v), code);
    assert_int_equal(keel_cursor_last(c, &k, &v), code);
    assert_int_equal(keel_cursor_next(c, &k, &v), code);
    assert_int_equal(keel_cursor_prev(c, &k, &v), code);
    assert_int_equal(keel_cursor_current(c, &k, &v), code);
    assert_int_equal(keel_cursor_seek(c, tu_val("a"), &k, &v), code);
    assert_int_equal(keel_cursor_del(c), code);
}

static void test_cursor_errors(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "api-cursor");
    make_small_db(path, 0);
    keel_db *db = open_db(path, 0, 0);
    keel_txn *t;
    keel_cursor *c;
    keel_val k, v;

    /* a closed cursor (its txn still live) */
    OK(keel_begin(db, KEEL_RDONLY, &t));
    OK(keel_cursor_open(t, 0, &c));
    OK(keel_cursor_first(c, &k, &v));
    keel_cursor_close(c);
    expect_bad_cursor(c, KEEL_BADCURSOR);
    keel_cursor_close(c); /* twice: ignored */
    keel_abort(t);

    /* a cursor whose read txn ended: detached */
    OK(keel_begin(db, KEEL_RDONLY, &t));
    OK(keel_cursor_open(t, 0, &c));
    OK(keel_cursor_first(c, &k, &v));
    keel_abort(t);
    expect_bad_cursor(c, KEEL_BADCURSOR);
    keel_cursor_close(c);

    /* a cursor whose write txn committed */
    OK(keel_begin(db, 0, &t));
    OK(keel_cursor_open(t, 0, &c));
    put_str(t, 0, "theta", "8");
    OK(keel_cursor_last(c, &k, &v));
    OK(keel_commit(t));
    expect_bad_cursor(c, KEEL_BADCURSOR);
    keel_cursor_close(c);

    /* not positioned: current and del */
    OK(keel_begin(db, 0, &t));
    OK(keel_cursor_open(t, 0, &c));
    assert_int_equal(keel_cursor_current(c, &k, &v), KEEL_BADCURSOR);
    assert_int_equal(keel_cursor_del(c), KEEL_BADCURSOR);
    /* next on an unpositioned cursor starts at the first entry */
    OK(keel_cursor_next(c, &k, &v));
    assert_int_equal(k.len, 5);
    assert_memory_equal(k.data, "alpha", 5);
    /* past the end: NOTFOUND, and the cursor keeps its last entry */
    OK(keel_cursor_last(c, &k, &v));
    assert_memory_equal(k.data, "theta", 5);
    assert_int_equal(keel_cursor_next(c, &k, &v), KEEL_NOTFOUND);
    OK(keel_cursor_current(c, &k, &v));
    assert_int_equal(k.len, 5);
    assert_memory_equal(k.data, "theta", 5);
    OK(keel_cursor_first(c, &k, &v));
    assert_int_equal(keel_cursor_prev(c, &k, &v), KEEL_NOTFOUND);
    OK(keel_cursor_current(c, &k, &v));
    assert_memory_equal(k.data, "alpha", 5);
    /* seek past the last key */
    assert_int_equal(keel_cursor_seek(c, tu_val("zzz"), &k, &v), KEEL_NOTFOUND);
    keel_cursor_close(c);
    /* a cursor on an empty bucket */
    keel_bucket eb;
    OK(keel_bucket_open(t, "empty", KEEL_CREATE, &eb));
    OK(keel_cursor_open(t, eb, &c));
    assert_int_equal(keel_cursor_first(c, &k, &v), KEEL_NOTFOUND);
    assert_int_equal(keel_cursor_last(c, &k, &v), KEEL_NOTFOUND);
    assert_int_equal(keel_cursor_next(c, &k, &v), KEEL_NOTFOUND);
    assert_int_equal(keel_cursor_seek(c, tu_val("a"), &k, &v), KEEL_NOTFOUND);
    /* ... which is then dropped under it */
    OK(keel_bucket_drop(t, eb));
    assert_int_equal(keel_cursor_first(c, &k, &v), KEEL_BADBUCKET);
    keel_cursor_close(c);
    /* a positioned cursor whose bucket is dropped under it */
    keel_bucket gb;
    OK(keel_bucket_open(t, "gone", KEEL_CREATE, &gb));
    put_str(t, gb, "g1", "x");
    put_str(t, gb, "g2", "y");
    OK(keel_cursor_open(t, gb, &c));
    OK(keel_cursor_first(c, &k, &v));
    OK(keel_bucket_drop(t, gb));
    assert_int_equal(keel_cursor_current(c, &k, &v), KEEL_BADBUCKET);
    assert_int_equal(keel_cursor_next(c, &k, &v), KEEL_BADBUCKET);
    assert_int_equal(keel_cursor_del(c), KEEL_BADBUCKET);
    /* created again in the same txn: the same handle, and the cursor walks
     * the new bucket */
    keel_bucket again;
    OK(keel_bucket_open(t, "gone", KEEL_CREATE, &again));
    assert_int_equal(again, gb);
    put_str(t, gb, "g3", "z");
    OK(keel_cursor_first(c, &k, &v));
    assert_int_equal(k.len, 2);
    assert_memory_equal(k.data, "g3", 2);
    assert_int_equal(keel_cursor_next(c, &k, &v), KEEL_NOTFOUND);
    OK(keel_bucket_drop(t, gb));
    keel_cursor_close(c);
    /* none of the misuse above poisoned the write txn */
    expect_str(t, 0, "alpha", "1");
    put_str(t, 0, "iota", "9");
    OK(keel_commit(t));
    OK(keel_begin(db, KEEL_RDONLY, &t));
    expect_str(t, 0, "iota", "9");
    keel_bucket nb;
    assert_int_equal(keel_bucket_open(t, "gone", 0, &nb), KEEL_NOTFOUND);
    assert_int_equal(keel_bucket_open(t, "empty", 0, &nb), KEEL_NOTFOUND);
    keel_abort(t);

    /* cursor_open on a bad bucket */
    OK(keel_begin(db, KEEL_RDONLY, &t));
    c = (keel_cursor *)0x1;
    assert_int_equal(keel_cursor_open(t, 4242, &c), KEEL_BADBUCKET);
    assert_null(c);
    keel_abort(t);
    keel_close(db);
    tu_remove(path);
}

/* ---- buckets ----------------------------------------------------------- */

struct names {
    char v[16][KEEL_MAX_BUCKET_NAME + 1];
    int n;
    int stop_after; /* 0 = never */
};

static int collect_names(const char *name, void *ctx)
{
    struct names *ns = ctx;
    assert_true(ns->n < 16);
    assert_true(strlen(name) <= KEEL_MAX_BUCKET_NAME);
    strcpy(ns->v[ns->n++], name);
    if (ns->stop_after && ns->n == ns->stop_after)
        return 42;
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void expect_names(keel_txn *t, const char **want, int n)
{
    const char *sorted[16];
    if (n)
        memcpy(sorted, want, (size_t)n * sizeof(char *));
    qsort(sorted, (size_t)n, sizeof(char *), cmp_str);
    struct names ns = {0};
    OK(keel_bucket_list(t, collect_names, &ns));
    assert_int_equal(ns.n, n);
    for (int i = 0; i < n; i++)
        assert_string_equal(ns.v[i], sorted[i]);
}

static void test_bad_bucket(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "api-badbucket");
    uint64_t digest = make_small_db(path, 0);
    keel_db *db = open_db(path, 0, 0);
    keel_txn *t;
    keel_val out;
    keel_stat st;
    keel_cursor *c;
    static const keel_bucket bad[] = {7, 4242, 0x80000001u, 0xFFFFFFFFu};
    for (int ro = 0; ro < 2; ro++) {
        OK(keel_begin(db, ro ? KEEL_RDONLY : 0, &t));
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            keel_bucket b = bad[i];
            assert_int_equal(keel_get(t, b, tu_val("k"), &out), KEEL_BADBUCKET);
            assert_int_equal(keel_bucket_stat(t, b, &st), KEEL_BADBUCKET);
            assert_int_equal(keel_cursor_open(t, b, &c), KEEL_BADBUCKET);
            if (!ro) {
                assert_int_equal(keel_put(t, b, tu_val("k"), tu_val("v"), 0), KEEL_BADBUCKET);
                assert_int_equal(keel_del(t, b, tu_val("k")), KEEL_BADBUCKET);
                assert_int_equal(keel_bucket_drop(t, b), KEEL_BADBUCKET);
            }
        }
        expect_str(t, 0, "alpha", "1"); /* not poisoned */
        OK(keel_commit(t));
    }

    /* a handle whose bucket was created in an aborted txn */
    keel_bucket ab;
    OK(keel_begin(db, 0, &t));
    OK(keel_bucket_open(t, "aborted", KEEL_CREATE, &ab));
    put_str(t, ab, "k", "v");
    keel_abort(t);
    OK(keel_begin(db, 0, &t));
    assert_int_equal(keel_put(t, ab, tu_val("k"), tu_val("v"), 0), KEEL_BADBUCKET);
    assert_int_equal(keel_get(t, ab, tu_val("k"), &out), KEEL_BADBUCKET);
    assert_int_equal(keel_bucket_open(t, "aborted", 0, &ab), KEEL_NOTFOUND);
    keel_abort(t);
    keel_close(db);
    assert_int_equal(file_digest(path), digest);
    tu_remove(path);
}

static void test_bucket_names(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "api-names");
    uint64_t digest = make_small_db(path, 0);
    keel_db *db = open_db(path, 0, 0);
    keel_txn *t;
    keel_bucket b = 99;
    char name[KEEL_MAX_BUCKET_NAME + 2];
    memset(name, 'n', sizeof name);
    name[KEEL_MAX_BUCKET_NAME + 1] = 0; /* 256 bytes */

    for (int ro = 0; ro < 2; ro++) {
        OK(keel_begin(db, ro ? KEEL_RDONLY : 0, &t));
        assert_int_equal(keel_bucket_open(t, "", 0, &b), KEEL_BADNAME);
        assert_int_equal(keel_bucket_open(t, "", KEEL_CREATE, &b), KEEL_BADNAME);
        assert_int_equal(keel_bucket_open(t, name, 0, &b), KEEL_BADNAME);
        assert_int_equal(keel_bucket_open(t, name, KEEL_CREATE, &b), KEEL_BADNAME);
        /* missing without KEEL_CREATE */
        assert_int_equal(keel_bucket_open(t, "nosuch", 0, &b), KEEL_NOTFOUND);
        /* NULL names the default bucket */
        OK(keel_bucket_open(t, NULL, 0, &b));
        assert_int_equal(b, KEEL_DEFAULT_BUCKET);
        expect_names(t, (const char *[]){"named"}, 1);
        OK(keel_commit(t));
    }
    keel_close(db);
    assert_int_equal(file_digest(path), digest);

    /* exactly 255 bytes works, and survives a reopen */
    db = open_db(path, 0, 0);
    name[KEEL_MAX_BUCKET_NAME] = 0;
    OK(keel_begin(db, 0, &t));
    OK(keel_bucket_open(t, name, KEEL_CREATE, &b));
    put_str(t, b, "long", "name");
    OK(keel_commit(t));
    keel_close(db);
    db = open_db(path, 0, 0);
    OK(keel_begin(db, KEEL_RDONLY, &t));
    OK(keel_bucket_open(t, name, 0, &b));
    expect_str(t, b, "long", "name");
    expect_names(t, (const char *[]){"named", name}, 2);
    keel_abort(t);
    keel_close(db);
    tu_remove(path);
}

static void test_bucket_lifecycle(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "api-buckets");
    keel_db *db = open_db(path, 0, 0);
    keel_txn *t;
    const char *names[] = {"pear", "apple", "Zebra", "apple pie", "app", "b", "\xc3\xa9t\xc3\xa9", "~", "a"};
    enum { NB = sizeof names / sizeof names[0] };
    keel_bucket h[NB];

    OK(keel_begin(db, 0, &t));
    expect_names(t, NULL, 0);
    for (int i = 0; i < NB; i++) {
        OK(keel_bucket_open(t, names[i], KEEL_CREATE, &h[i]));
        assert_int_not_equal(h[i], KEEL_DEFAULT_BUCKET);
        for (int j = 0; j < i; j++)
            assert_int_not_equal(h[i], h[j]);
        /* each bucket holds its own name under the same key */
        put_str(t, h[i], "who", names[i]);
    }
    put_str(t, 0, "who", "default");
    /* the list inside the creating txn sees them, in name order */
    expect_names(t, names, NB);
    /* opening again gives the same handle; KEEL_CREATE on an existing one too */
    for (int i = 0; i < NB; i++) {
        keel_bucket again;
        OK(keel_bucket_open(t, names[i], i % 2 ? KEEL_CREATE : 0, &again));
        assert_int_equal(again, h[i]);
    }
    OK(keel_commit(t));
    keel_close(db);

    db = open_db(path, 0, 0);
    OK(keel_begin(db, KEEL_RDONLY, &t));
    expect_names(t, names, NB);
    for (int i = 0; i < NB; i++) {
        OK(keel_bucket_open(t, names[i], 0, &h[i]));
        expect_str(t, h[i], "who", names[i]);
        assert_int_equal(count_entries(t, h[i]), 1);
    }
    expect_str(t, 0, "who", "default");
    /* bucket names are not keys of the default bucket */
    assert_int_equal(count_entries(t, 0), 1);
    /* a non-zero return from the callback stops the walk and is returned */
    struct names ns = {.stop_after = 3};
    assert_int_equal(keel_bucket_list(t, collect_names, &ns), 42);
    assert_int_equal(ns.n, 3);
    keel_abort(t);

    /* drop one: gone in the same txn ... */
    int d = 1; /* "apple" */
    keel_val out;
    OK(keel_begin(db, 0, &t));
    OK(keel_bucket_drop(t, h[d]));
    assert_int_equal(keel_get(t, h[d], tu_val("who"), &out), KEEL_BADBUCKET);
    assert_int_equal(keel_put(t, h[d], tu_val("who"), tu_val("x"), 0), KEEL_BADBUCKET);
    assert_int_equal(keel_bucket_drop(t, h[d]), KEEL_BADBUCKET);
    const char *left[NB - 1];
    for (int i = 0, j = 0; i < NB; i++)
        if (i != d)
            left[j++] = names[i];
    expect_names(t, left, NB - 1);
    OK(keel_commit(t));
    /* ... and in later txns, also after a reopen */
    for (int pass = 0; pass < 2; pass++) {
        OK(keel_begin(db, pass ? KEEL_RDONLY : 0, &t));
        assert_int_equal(keel_get(t, h[d], tu_val("who"), &out), KEEL_BADBUCKET);
        keel_cursor *c;
        assert_int_equal(keel_cursor_open(t, h[d], &c), KEEL_BADBUCKET);
        keel_bucket again;
        assert_int_equal(keel_bucket_open(t, names[d], 0, &again), KEEL_NOTFOUND);
        expect_names(t, left, NB - 1);
        for (int i = 0; i < NB; i++)
            if (i != d)
                expect_str(t, h[i], "who", names[i]);
        keel_abort(t);
        if (pass == 0) {
            keel_close(db);
            db = open_db(path, 0, 0);
            keel_bucket again2;
            OK(keel_begin(db, KEEL_RDONLY, &t));
            for (int i = 0; i < NB; i++)
                if (i != d)
                    OK(keel_bucket_open(t, names[i], 0, &h[i]));
            assert_int_equal(keel_bucket_open(t, names[d], 0, &again2), KEEL_NOTFOUND);
            keel_abort(t);
            /* a handle for the dropped name, as it may be in a fresh process */
            OK(keel_begin(db, 0, &t));
            OK(keel_bucket_open(t, names[d], KEEL_CREATE, &h[d]));
            keel_abort(t);
        }
    }

    /* a drop that is aborted leaves the bucket and its data */
    OK(keel_begin(db, 0, &t));
    OK(keel_bucket_drop(t, h[0]));
    keel_abort(t);
    OK(keel_begin(db, 0, &t));
    expect_str(t, h[0], "who", names[0]);
    /* re-create the dropped name: empty, under a new handle (the one of the
     * aborted creation above was retired at the abort) */
    keel_bucket re;
    OK(keel_bucket_open(t, names[d], KEEL_CREATE, &re));
    assert_int_not_equal(re, h[d]);
    assert_int_equal(keel_get(t, h[d], tu_val("who"), &out), KEEL_BADBUCKET);
    assert_int_equal(count_entries(t, re), 0);
    expect_names(t, names, NB);
    OK(keel_commit(t));

    /* dropping the default bucket empties it; it stays usable */
    OK(keel_begin(db, 0, &t));
    char key[16];
    for (int i = 0; i < 2000; i++) {
        snprintf(key, sizeof key, "d%05d", i);
        put_str(t, 0, key, "some value to fill pages");
    }
    OK(keel_commit(t));
    OK(keel_begin(db, 0, &t));
    OK(keel_bucket_drop(t, KEEL_DEFAULT_BUCKET));
    assert_int_equal(count_entries(t, 0), 0);
    expect_str(t, 0, "who", NULL);
    keel_stat st;
    OK(keel_bucket_stat(t, 0, &st));
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.leaf_pages + st.branch_pages + st.overflow_pages, 0);
    put_str(t, 0, "after", "drop");
    expect_names(t, names, NB); /* named buckets untouched */
    OK(keel_commit(t));
    keel_close(db);
    db = open_db(path, 0, 0);
    OK(keel_begin(db, KEEL_RDONLY, &t));
    assert_int_equal(count_entries(t, 0), 1);
    expect_str(t, 0, "after", "drop");
    expect_names(t, names, NB);
    keel_bucket b0;
    OK(keel_bucket_open(t, names[0], 0, &b0));
    expect_str(t, b0, "who", names[0]);
    keel_abort(t);
    keel_stat dst;
    OK(keel_db_stat(db, &dst));
    assert_int_equal(dst.entries, 1 + (NB - 1)); /* "after" + one per named bucket but the re-created one */
    keel_close(db);
    tu_remove(path);
}

/* ---- NOOVERWRITE and APPEND ---------------------------------------------- */

static void test_nooverwrite_append(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "api-putflags");
    keel_db *db = open_db(path, 0, 0);
    keel_txn *t;
    OK(keel_begin(db, 0, &t));
    put_str(t, 0, "k", "first");
    assert_int_equal(keel_put(t, 0, tu_val("k"), tu_val("second"), KEEL_NOOVERWRITE), KEEL_EXISTS);
    expect_str(t, 0, "k", "first");
    OK(keel_put(t, 0, tu_val("k2"), tu_val("new"), KEEL_NOOVERWRITE));
    OK(keel_commit(t));
    uint64_t digest = file_digest(path);
    OK(keel_begin(db, 0, &t));
    assert_int_equal(keel_put(t, 0, tu_val("k"), tu_val("third"), KEEL_NOOVERWRITE), KEEL_EXISTS);
    assert_int_equal(keel_put(t, 0, tu_val("k2"), tu_val("third"), KEEL_NOOVERWRITE | KEEL_APPEND), KEEL_EXISTS);
    OK(keel_commit(t)); /* EXISTS did not poison the txn, and changed nothing */
    assert_int_equal(file_digest(path), digest);
    OK(keel_begin(db, KEEL_RDONLY, &t));
    expect_str(t, 0, "k", "first");
    expect_str(t, 0, "k2", "new");
    keel_abort(t);

    /* APPEND a sorted run into a bucket: pages come out nearly full */
    const int N = 20000;
    keel_bucket b;
    char key[32], val[32];
    OK(keel_begin(db, 0, &t));
    OK(keel_bucket_open(t, "log", KEEL_CREATE, &b));
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "%010d", i);
        snprintf(val, sizeof val, "v%d", i);
        OK(keel_put(t, b, tu_val(key), tu_val(val), KEEL_APPEND));
    }
    OK(keel_commit(t));
    keel_close(db);
    db = open_db(path, 0, 0);
    OK(keel_begin(db, KEEL_RDONLY, &t));
    OK(keel_bucket_open(t, "log", 0, &b));
    keel_cursor *c;
    OK(keel_cursor_open(t, b, &c));
    keel_val ck, cv;
    int n = 0, rc;
    size_t bytes = 0;
    for (rc = keel_cursor_first(c, &ck, &cv); rc == 0; rc = keel_cursor_next(c, &ck, &cv)) {
        snprintf(key, sizeof key, "%010d", n);
        snprintf(val, sizeof val, "v%d", n);
        assert_int_equal(ck.len, strlen(key));
        assert_memory_equal(ck.data, key, ck.len);
        assert_int_equal(cv.len, strlen(val));
        assert_memory_equal(cv.data, val, cv.len);
        bytes += 8 + ck.len + cv.len + 2;
        n++;
    }
    assert_int_equal(rc, KEEL_NOTFOUND);
    assert_int_equal(n, N);
    keel_cursor_close(c);
    keel_stat st;
    OK(keel_bucket_stat(t, b, &st));
    assert_int_equal(st.entries, (uint64_t)N);
    /* 90% fill or better */
    uint64_t ideal = (bytes + 4080 - 1) / 4080;
    assert_true(st.leaf_pages * 9 <= ideal * 10);
    keel_abort(t);

    /* more APPENDs after the existing keys; and one out of order, which
     * must at least not lose or misplace data */
    OK(keel_begin(db, 0, &t));
    OK(keel_bucket_open(t, "log", 0, &b));
    for (int i = N; i < N + 100; i++) {
        snprintf(key, sizeof key, "%010d", i);
        OK(keel_put(t, b, tu_val(key), tu_val("late"), KEEL_APPEND));
    }
    rc = keel_put(t, b, tu_val("0000000050x"), tu_val("misplaced"), KEEL_APPEND);
    assert_true(rc == 0 || rc == KEEL_EXISTS || rc == KEEL_BADARG);
    if (rc == 0) {
        expect_str(t, b, "0000000050x", "misplaced");
        OK(keel_cursor_open(t, b, &c));
        OK(keel_cursor_seek(c, tu_val("0000000050"), &ck, &cv));
        OK(keel_cursor_next(c, &ck, &cv));
        assert_int_equal(ck.len, 11);
        assert_memory_equal(ck.data, "0000000050x", 11);
        OK(keel_cursor_next(c, &ck, &cv));
        assert_memory_equal(ck.data, "0000000051", 10);
        keel_cursor_close(c);
    }
    OK(keel_commit(t));
    OK(keel_begin(db, KEEL_RDONLY, &t));
    OK(keel_bucket_open(t, "log", 0, &b));
    assert_int_equal(count_entries(t, b), N + 100 + (rc == 0));
    keel_abort(t);
    keel_close(db);
    tu_remove(path);
}

/* ---- opening --------------------------------------------------------------- */

static void write_file(const char *p, const void *data, size_t n)
{
    int fd = open(p, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    close(fd);
}

static void expect_open_fails(const char *p, unsigned flags, int code)
{
    keel_options o = {.flags = flags};
    keel_db *db = (keel_db *)0x1;
    assert_int_equal(keel_open(p, &o, &db), code);
    assert_null(db);
}

static void test_open_errors(void **state)
{
    (void)state;
    char dir[] = "/tmp/keel-api-dir-XXXXXX";
    assert_non_null(mkdtemp(dir));
    expect_open_fails(dir, 0, EISDIR);
    expect_open_fails(dir, KEEL_RDONLY, EISDIR);
    char inner[4200];
    snprintf(inner, sizeof inner, "%s/no/such/dir/x.db", dir);
    expect_open_fails(inner, 0, ENOENT);
    char lockp[4200];
    snprintf(lockp, sizeof lockp, "%s-lock", dir);
    assert_false(file_exists(lockp));
    assert_int_equal(rmdir(dir), 0);

    /* not a regular file */
    expect_open_fails("/dev/null", KEEL_RDONLY, KEEL_INVALID);

    /* not keel files: text, random bytes, a short file */
    tu_path(path, sizeof path, "api-notkeel");
    static uint8_t junk[3 * 65536];
    fill_pattern(junk, sizeof junk, 7);
    const char *text = "this is not a database, just some text\n";
    struct {
        const void *p;
        size_t n;
    } files[] = {{text, strlen(text)}, {junk, sizeof junk}, {junk, 10}, {junk, 8192}};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        write_file(path, files[i].p, files[i].n);
        uint64_t digest = file_digest(path);
        expect_open_fails(path, 0, KEEL_INVALID);
        expect_open_fails(path, KEEL_RDONLY, KEEL_INVALID);
        assert_int_equal(file_digest(path), digest);
        tu_remove(path);
    }

    /* a newer format version: both metas patched, checksums fixed */
    for (int psi = 0; psi < 2; psi++) {
        uint32_t ps = psi ? 16384 : 4096;
        tu_path(path, sizeof path, "api-version");
        make_small_db(path, ps);
        int fd = open(path, O_RDWR);
        assert_true(fd >= 0);
        for (int m = 0; m < 2; m++) {
            struct meta meta;
            assert_int_equal(pread(fd, &meta, sizeof meta, (off_t)m * ps), (ssize_t)sizeof meta);
            assert_int_equal(meta.magic, KEEL_MAGIC);
            assert_int_equal(meta.checksum, XXH3_64bits(&meta, META_SUM_BYTES));
            meta.version = KEEL_FORMAT_VERSION + 1;
            meta.checksum = XXH3_64bits(&meta, META_SUM_BYTES);
            assert_int_equal(pwrite(fd, &meta, sizeof meta, (off_t)m * ps), (ssize_t)sizeof meta);
        }
        close(fd);
        uint64_t digest = file_digest(path);
        expect_open_fails(path, 0, KEEL_VERSION);
        expect_open_fails(path, KEEL_RDONLY, KEEL_VERSION);
        assert_int_equal(file_digest(path), digest);
        /* meta 0 unreadable as well: meta 1 (found by probing page sizes)
         * still says which version wrote the file */
        fd = open(path, O_RDWR);
        assert_int_equal(pwrite(fd, "XXXX", 4, 0), 4);
        close(fd);
        expect_open_fails(path, 0, KEEL_VERSION);
        tu_remove(path);
    }

    /* bad options create nothing */
    tu_path(path, sizeof path, "api-opts");
    static const uint32_t bad_ps[] = {1, 512, 1000, 2048, 4095, 4097, 6144, 12288, 131072, 0x80000000u, 0xFFFFFFFFu};
    keel_db *db;
    for (size_t i = 0; i < sizeof bad_ps / sizeof bad_ps[0]; i++) {
        keel_options o = {.page_size = bad_ps[i]};
        db = (keel_db *)0x1;
        assert_int_equal(keel_open(path, &o, &db), KEEL_BADARG);
        assert_null(db);
    }
    keel_options o2 = {.max_readers = 65537};
    assert_int_equal(keel_open(path, &o2, &db), KEEL_BADARG);
    keel_options o3 = {.mode = 010000};
    assert_int_equal(keel_open(path, &o3, &db), KEEL_BADARG);
    keel_options o4 = {.max_size = 4096};
    assert_int_equal(keel_open(path, &o4, &db), KEEL_BADARG);
    assert_false(file_exists(path));

    /* every valid page size works; reopening ignores a different option */
    for (uint32_t ps = 4096; ps <= 65536; ps *= 2) {
        tu_path(path, sizeof path, "api-pagesize");
        make_small_db(path, ps);
        db = open_db(path, ps == 4096 ? 8192 : 4096, 0);
        keel_stat st;
        OK(keel_db_stat(db, &st));
        assert_int_equal(st.page_size, ps);
        assert_int_equal(st.entries, 3);
        keel_close(db);
        tu_remove(path);
    }

    /* a damaged lock file */
    tu_path(path, sizeof path, "api-lock");
    make_small_db(path, 0);
    snprintf(lockp, sizeof lockp, "%s-lock", path);
    for (int i = 0; i < 2; i++) {
        write_file(lockp, junk, i ? 100 : 128 + 126 * 64);
        expect_open_fails(path, 0, KEEL_LOCKFILE);
    }
    unlink(lockp);
    db = open_db(path, 0, 0);
    keel_close(db);
    tu_remove(path);
}

/* ---- writers and readers ---------------------------------------------- */

static void test_busy_and_readers_full(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "api-busy");
    make_small_db(path, 0);
    /* max_readers sizes a new lock file only: remove the one left behind */
    char lockp[4200];
    snprintf(lockp, sizeof lockp, "%s-lock", path);
    assert_int_equal(unlink(lockp), 0);
    keel_options o = {.max_readers = 3};
    keel_db *db;
    OK(keel_open(path, &o, &db));
    keel_txn *w, *w2 = (keel_txn *)0x1, *r[4];
    OK(keel_begin(db, 0, &w));
    assert_int_equal(keel_begin(db, 0, &w2), KEEL_BUSY);
    assert_null(w2);
    put_str(w, 0, "busy", "yes");
    /* the first writer is unharmed; readers may still begin */
    OK(keel_begin(db, KEEL_RDONLY, &r[0]));
    expect_str(r[0], 0, "busy", NULL);
    expect_str(w, 0, "busy", "yes");
    OK(keel_commit(w));
    OK(keel_begin(db, 0, &w));
    keel_abort(w);

    /* reader slots run out */
    OK(keel_begin(db, KEEL_RDONLY, &r[1]));
    OK(keel_begin(db, KEEL_RDONLY, &r[2]));
    r[3] = (keel_txn *)0x1;
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &r[3]), KEEL_READERS_FULL);
    assert_null(r[3]);
    size_t count;
    OK(keel_db_readers(db, NULL, 0, &count));
    assert_int_equal(count, 3);
    /* a writer needs no slot */
    OK(keel_begin(db, 0, &w));
    put_str(w, 0, "more", "x");
    OK(keel_commit(w));
    keel_abort(r[1]);
    OK(keel_begin(db, KEEL_RDONLY, &r[3]));
    expect_str(r[3], 0, "more", "x");
    expect_str(r[0], 0, "busy", NULL);
    expect_str(r[2], 0, "busy", "yes");
    keel_abort(r[0]);
    keel_abort(r[2]);
    keel_abort(r[3]);
    OK(keel_db_readers(db, NULL, 0, &count));
    assert_int_equal(count, 0);
    keel_close(db);
    tu_remove(path);
}

/* ---- strerror ---------------------------------------------------------- */

/* keel_options can grow: a program built against an older header passes a
 * shorter struct (the fields past it are not its own: here garbage), a
 * newer program a longer one (fields this library does not know must be 0). */
static void test_options_size(void **state)
{
    (void)state;
    char path[512];
    tu_path(path, sizeof path, "api-optsize");
    struct {
        keel_options o;
        uint8_t beyond[16];
    } big;
    keel_db *db;
    /* 0.1's struct followed by bytes that are not options */
    memset(&big, 0xA5, sizeof big);
    memset(&big.o, 0, KEEL_OPTIONS_SIZE_0_1);
    big.o.flags = KEEL_NOSYNC;
    assert_int_equal(keel_open_sized(path, &big.o, KEEL_OPTIONS_SIZE_0_1, &db), 0);
    assert_int_equal(db->max_reader_lag, 0); /* the default, not 0xA5... */
    keel_close(db);
    assert_int_equal((keel_open)(path, &big.o, &db), 0); /* the plain function reads 0.1's struct */
    assert_int_equal(db->max_reader_lag, 0);
    keel_close(db);
    /* a newer program's struct: unknown fields zero are fine, set are refused */
    memset(&big, 0, sizeof big);
    big.o.max_reader_lag = 7;
    assert_int_equal(keel_open_sized(path, &big.o, sizeof big, &db), 0);
    assert_int_equal(db->max_reader_lag, 7);
    keel_close(db);
    big.beyond[3] = 1;
    assert_int_equal(keel_open_sized(path, &big.o, sizeof big, &db), KEEL_BADARG);
    assert_null(db);
    /* shorter than any version's struct; no options at all */
    assert_int_equal(keel_open_sized(path, &big.o, 8, &db), KEEL_BADARG);
    assert_int_equal(keel_open_sized(path, NULL, 0, &db), 0);
    keel_close(db);
    /* the macro passes this header's size: every field is read */
    keel_options o = {.max_reader_lag = 3};
    assert_int_equal(keel_open(path, &o, &db), 0);
    assert_int_equal(db->max_reader_lag, 3);
    keel_close(db);
    tu_remove(path);
}

/* keel_lock_path names the lock file keel_open uses: the real path's */
static void test_lock_path(void **state)
{
    (void)state;
    char real[512], link[600], want[600], got[600];
    tu_path(real, sizeof real, "api-lockpath");
    snprintf(link, sizeof link, "%s.link", real);
    unlink(link);
    keel_db *db;
    assert_int_equal(keel_open(real, NULL, &db), 0);
    keel_close(db);
    assert_int_equal(symlink(real, link), 0);
    char *r = realpath(real, NULL);
    assert_non_null(r);
    snprintf(want, sizeof want, "%s-lock", r);
    free(r);
    assert_int_equal(keel_lock_path(link, got, sizeof got), 0);
    assert_string_equal(got, want);
    assert_int_equal(keel_lock_path(real, got, sizeof got), 0);
    assert_string_equal(got, want);
    assert_int_equal(access(want, F_OK), 0); /* what keel_open made */
    assert_int_equal(keel_lock_path(link, got, 8), ENAMETOOLONG);
    assert_int_equal(keel_lock_path(NULL, got, sizeof got), KEEL_BADARG);
    assert_int_equal(keel_lock_path("", got, sizeof got), KEEL_BADARG);
    unlink(link);
    tu_remove(real);
}

static void test_strerror(void **state)
{
    (void)state;
    const char *unknown = keel_strerror(-12345);
    assert_non_null(unknown);
    const int first = KEEL_NOTFOUND, last = KEEL_INCOMPATIBLE;
    assert_true(last < first);
    const char *seen[64];
    int n = 0;
    seen[n++] = keel_strerror(KEEL_OK);
    for (int code = first; code >= last; code--) {
        const char *s = keel_strerror(code);
        assert_non_null(s);
        assert_true(strlen(s) > 0);
        assert_true(strcmp(s, unknown) != 0);
        seen[n++] = s;
    }
    for (int i = 0; i < n; i++) {
        assert_non_null(seen[i]);
        for (int j = 0; j < i; j++)
            assert_true(strcmp(seen[i], seen[j]) != 0);
    }
    /* codes just outside the range are unknown, not a neighbour's name */
    assert_string_equal(keel_strerror(first + 1), unknown);
    assert_string_equal(keel_strerror(last - 1), unknown);
    /* positive values are errno */
    assert_string_equal(keel_strerror(ENOENT), strerror(ENOENT));
    assert_string_equal(keel_strerror(EISDIR), strerror(EISDIR));
    assert_non_null(keel_strerror(-1));
    assert_non_null(keel_strerror(INT32_MIN));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_null_pointers),
        cmocka_unit_test(test_key_sizes),
        cmocka_unit_test(test_empty_values),
        cmocka_unit_test(test_value_sizes),
        cmocka_unit_test(test_value_64mib),
        cmocka_unit_test(test_readonly),
        cmocka_unit_test(test_bad_flags),
        cmocka_unit_test(test_finished_txn),
        cmocka_unit_test(test_cursor_errors),
        cmocka_unit_test(test_bad_bucket),
        cmocka_unit_test(test_bucket_names),
        cmocka_unit_test(test_bucket_lifecycle),
        cmocka_unit_test(test_nooverwrite_append),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_busy_and_readers_full),
        cmocka_unit_test(test_options_size),
        cmocka_unit_test(test_lock_path),
        cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
