/*
 * test_txn.c — durability and the meta pages.
 *
 *   - committed data survives close and reopen, aborted data (explicit abort,
 *     or a write txn left open at close) does not: a random workload checked
 *     against a model after every reopen;
 *   - a txn that failed half way (disk full, out of memory) can only abort,
 *     and leaves the file as it was;
 *   - a damaged meta page (any byte of either one) makes open fall back to
 *     the other; both damaged gives KEEL_CORRUPTED; a truncated file gives an
 *     error, never a crash;
 *   - keel_db_stat's numbers agree with what was stored.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "format.h"
#include "internal.h" /* keel_os, for malloc failure injection */
#include "testutil.h"

#define OK(x) assert_int_equal((x), 0)

static char path[4096];

/* ---- helpers ------------------------------------------------------------ */

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

static int try_open(const char *p, unsigned flags)
{
    keel_options o = {.flags = flags};
    keel_db *db = (keel_db *)0x1;
    int rc = keel_open(p, &o, &db);
    if (rc == 0)
        keel_close(db);
    else
        assert_null(db);
    return rc;
}

static void report(void *ctx, const char *msg)
{
    (void)ctx;
    print_message("keel_check: %s\n", msg);
}

static uint64_t check_problems(keel_db *db)
{
    uint64_t problems = 99;
    OK(keel_check(db, report, NULL, &problems));
    return problems;
}

static uint64_t file_digest(const char *p)
{
    int fd = open(p, O_RDONLY);
    if (fd < 0)
        return 0;
    XXH3_state_t *st = XXH3_createState();
    XXH3_64bits_reset(st);
    static uint8_t buf[1 << 16];
    uint64_t total = 0;
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0) {
        XXH3_64bits_update(st, buf, (size_t)r);
        total += (uint64_t)r;
    }
    assert_true(r == 0);
    close(fd);
    XXH3_64bits_update(st, &total, sizeof total);
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
}

static uint64_t file_size(const char *p)
{
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    return (uint64_t)st.st_size;
}

/* The newest valid meta in the file, read with pread. */
static struct meta newest_meta(const char *p, uint32_t psize)
{
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    struct meta m[2];
    bool ok[2];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pread(fd, &m[i], sizeof m[i], (off_t)i * psize), (ssize_t)sizeof m[i]);
        ok[i] = m[i].magic == KEEL_MAGIC && m[i].checksum == XXH3_64bits(&m[i], META_SUM_BYTES);
    }
    close(fd);
    assert_true(ok[0] || ok[1]);
    if (ok[0] && (!ok[1] || m[0].txnid >= m[1].txnid))
        return m[0];
    return m[1];
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

/* ---- a model of the default bucket ----------------------------------------- */

#define NKEYS 1500
struct model {
    bool present[NKEYS];
    uint32_t len[NKEYS];
    uint64_t seed[NKEYS]; /* the value's bytes are a function of (seed, len) */
};

static void make_val(uint8_t *buf, uint32_t len, uint64_t seed)
{
    uint64_t s = seed | 1;
    for (uint32_t i = 0; i < len; i++) {
        if (i % 8 == 0)
            s = tu_rand(&s) | 1;
        buf[i] = (uint8_t)(s >> (8 * (i % 8)));
    }
}

static void model_key(char *k, size_t size, int i) { snprintf(k, size, "key-%05d", i); }

/* The db's default bucket holds exactly what the model says. */
static void verify_model(keel_txn *t, const struct model *m)
{
    static uint8_t want[20000];
    char k[32];
    int n = 0;
    for (int i = 0; i < NKEYS; i++) {
        model_key(k, sizeof k, i);
        keel_val out;
        int rc = keel_get(t, 0, tu_val(k), &out);
        if (!m->present[i]) {
            assert_int_equal(rc, KEEL_NOTFOUND);
            continue;
        }
        n++;
        assert_int_equal(rc, 0);
        assert_int_equal(out.len, m->len[i]);
        make_val(want, m->len[i], m->seed[i]);
        if (out.len)
            assert_memory_equal(out.data, want, out.len);
    }
    assert_int_equal(count_entries(t, 0), n);
}

/* ---- durability of commits and aborts -------------------------------------- */

static void test_commit_abort_reopen(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "txn-model");
    uint64_t seed = tu_seed(0x7a11);
    uint64_t rs = seed | 1;
    static struct model committed, work;
    memset(&committed, 0, sizeof committed);
    static uint8_t vbuf[20000];
    char k[32];
    const unsigned flag_sets[] = {0, KEEL_NOMETASYNC, KEEL_NOSYNC};
    unsigned fl = 0;
    keel_db *db = open_db(path, 0, flag_sets[fl]);
    const long rounds = 160 * tu_scale();
    int commits = 0, aborts = 0, dropped = 0;
    for (long r = 0; r < rounds; r++) {
        work = committed;
        keel_txn *t;
        OK(keel_begin(db, 0, &t));
        int ops = 1 + (int)(tu_rand(&rs) % 60);
        bool changed = false;
        for (int o = 0; o < ops; o++) {
            int i = (int)(tu_rand(&rs) % NKEYS);
            model_key(k, sizeof k, i);
            if (tu_rand(&rs) % 4 == 0) {
                int rc = keel_del(t, 0, tu_val(k));
                assert_int_equal(rc, work.present[i] ? 0 : KEEL_NOTFOUND);
                changed |= work.present[i];
                work.present[i] = false;
            } else {
                uint32_t len = (uint32_t)(tu_rand(&rs) % 300);
                if (tu_rand(&rs) % 20 == 0)
                    len = 2000 + (uint32_t)(tu_rand(&rs) % 18000); /* overflow values now and then */
                uint64_t vs = tu_rand(&rs);
                make_val(vbuf, len, vs);
                OK(keel_put(t, 0, tu_val(k), (keel_val){vbuf, len}, 0));
                work.present[i] = true;
                changed = true;
                work.len[i] = len;
                work.seed[i] = vs;
            }
        }
        /* the txn sees its own writes */
        if (r % 16 == 0)
            verify_model(t, &work);
        unsigned what = (unsigned)(tu_rand(&rs) % 10);
        if (what < 6) {
            uint64_t id = keel_txn_id(t);
            OK(keel_commit(t));
            committed = work;
            commits++;
            keel_stat st;
            OK(keel_db_stat(db, &st));
            /* a txn that changed nothing writes nothing and uses no id */
            assert_int_equal(st.last_txnid, changed ? id : id - 1);
        } else if (what < 9) {
            keel_abort(t);
            aborts++;
        } else {
            keel_close(db); /* with the write txn open: it is aborted */
            dropped++;
            fl = (fl + 1) % 3;
            db = open_db(path, 0, flag_sets[fl]);
        }
        if (r % 10 == 9 || r == rounds - 1) {
            keel_close(db);
            fl = (fl + 1) % 3;
            db = open_db(path, 0, flag_sets[fl]);
            OK(keel_begin(db, KEEL_RDONLY, &t));
            verify_model(t, &committed);
            keel_abort(t);
            assert_int_equal(check_problems(db), 0);
        }
    }
    assert_true(commits > 0 && aborts > 0 && dropped > 0);
    keel_close(db);
    tu_remove(path);
}

/* A write txn left open by keel_close is aborted, and the writer lock is free. */
static void test_close_with_open_txn(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "txn-close");
    keel_db *db = open_db(path, 0, 0);
    keel_txn *t;
    OK(keel_begin(db, 0, &t));
    put_str(t, 0, "kept", "1");
    OK(keel_commit(t));
    OK(keel_begin(db, 0, &t));
    put_str(t, 0, "lost", "2");
    keel_bucket b;
    OK(keel_bucket_open(t, "lostbucket", KEEL_CREATE, &b));
    put_str(t, b, "x", "y");
    keel_close(db);

    /* a second handle in the same process may write at once */
    db = open_db(path, 0, 0);
    keel_db *db2 = open_db(path, 0, 0);
    OK(keel_begin(db2, 0, &t));
    expect_str(t, 0, "kept", "1");
    expect_str(t, 0, "lost", NULL);
    assert_int_equal(keel_bucket_open(t, "lostbucket", 0, &b), KEEL_NOTFOUND);
    put_str(t, 0, "via2", "3");
    OK(keel_commit(t));
    /* the first handle sees the second's commit in a new snapshot */
    OK(keel_begin(db, KEEL_RDONLY, &t));
    expect_str(t, 0, "via2", "3");
    keel_abort(t);
    keel_close(db2);
    keel_close(db);
    tu_remove(path);
}

/* ---- failed txns ------------------------------------------------------------ */

static void expect_poisoned(keel_txn *t)
{
    keel_val out;
    keel_bucket b;
    keel_cursor *c;
    keel_stat st;
    assert_int_equal(keel_get(t, 0, tu_val("base0"), &out), KEEL_BADTXN);
    assert_int_equal(keel_put(t, 0, tu_val("x"), tu_val("y"), 0), KEEL_BADTXN);
    assert_int_equal(keel_del(t, 0, tu_val("base0")), KEEL_BADTXN);
    assert_int_equal(keel_bucket_open(t, NULL, 0, &b), KEEL_BADTXN);
    assert_int_equal(keel_cursor_open(t, 0, &c), KEEL_BADTXN);
    assert_int_equal(keel_bucket_stat(t, 0, &st), KEEL_BADTXN);
}

static void test_failed_txn_disk_full(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "txn-full");
    keel_options o = {.max_size = (uint64_t)1 << 20}; /* 256 pages of address space */
    keel_db *db;
    OK(keel_open(path, &o, &db));
    keel_txn *t;
    char k[32];
    OK(keel_begin(db, 0, &t));
    for (int i = 0; i < 20; i++) {
        snprintf(k, sizeof k, "base%d", i);
        put_str(t, 0, k, "committed");
    }
    OK(keel_commit(t));
    uint64_t digest = file_digest(path);

    static uint8_t big[64 << 10];
    memset(big, 0xab, sizeof big);
    for (int ending = 0; ending < 2; ending++) {
        OK(keel_begin(db, 0, &t));
        put_str(t, 0, "first-in-failed-txn", "x");
        int rc = 0, i;
        for (i = 0; i < 64 && rc == 0; i++) {
            snprintf(k, sizeof k, "big%d", i);
            rc = keel_put(t, 0, tu_val(k), (keel_val){big, sizeof big}, 0);
        }
        assert_int_equal(rc, KEEL_FULL);
        assert_true(i > 1);
        expect_poisoned(t);
        if (ending == 0) {
            assert_int_equal(keel_commit(t), KEEL_BADTXN); /* the txn is gone */
            assert_int_equal(keel_commit(t), KEEL_BADTXN);
        } else {
            keel_abort(t);
        }
        keel_abort(t);
        assert_int_equal(file_digest(path), digest);
        /* the writer lock is free; nothing of the failed txn is there */
        OK(keel_begin(db, 0, &t));
        expect_str(t, 0, "first-in-failed-txn", NULL);
        expect_str(t, 0, "base7", "committed");
        assert_int_equal(count_entries(t, 0), 20);
        keel_abort(t);
    }
    /* a txn that fits still commits */
    OK(keel_begin(db, 0, &t));
    OK(keel_put(t, 0, tu_val("one-big"), (keel_val){big, sizeof big}, 0));
    OK(keel_commit(t));
    assert_int_equal(check_problems(db), 0);
    keel_close(db);
    db = open_db(path, 0, 0);
    OK(keel_begin(db, KEEL_RDONLY, &t));
    assert_int_equal(count_entries(t, 0), 21);
    keel_abort(t);
    keel_close(db);
    tu_remove(path);
}

/* malloc through keel_os fails once its countdown reaches zero */
static long fail_countdown = -1;
static long fail_hits;
static void *failing_malloc(size_t n)
{
    if (fail_countdown >= 0 && fail_countdown-- == 0) {
        fail_hits++;
        return NULL;
    }
    return malloc(n);
}
static void *failing_realloc(void *p, size_t n)
{
    if (fail_countdown >= 0 && fail_countdown-- == 0) {
        fail_hits++;
        return NULL;
    }
    return realloc(p, n);
}

static void test_failed_txn_nomem(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "txn-nomem");
    keel_db *db = open_db(path, 0, KEEL_NOSYNC);
    keel_txn *t;
    char k[32];
    static uint8_t val[6000];
    memset(val, 'v', sizeof val);
    /* a base of a few hundred keys over several pages */
    OK(keel_begin(db, 0, &t));
    for (int i = 0; i < 400; i++) {
        snprintf(k, sizeof k, "base%04d", i);
        OK(keel_put(t, 0, tu_val(k), (keel_val){val, 40}, 0));
    }
    OK(keel_commit(t));
    int expect_entries = 400;
    int failed_ops = 0, failed_commits = 0, ok_commits = 0;
    const long limit = 400 * tu_scale();
    for (long n = 0; n < limit; n += 1 + n / 40) {
        OK(keel_begin(db, 0, &t));
        keel_os.malloc = failing_malloc;
        keel_os.realloc = failing_realloc;
        fail_countdown = n;
        int rc = 0, added = 0;
        for (int i = 0; i < 60 && rc == 0; i++) {
            snprintf(k, sizeof k, "n%05ld-%02d", n, i);
            size_t len = i % 7 == 0 ? sizeof val : 30 + (size_t)i;
            rc = keel_put(t, 0, tu_val(k), (keel_val){val, len}, 0);
            if (rc == 0)
                added++;
            if (rc == 0 && i % 5 == 0) {
                snprintf(k, sizeof k, "base%04d", (int)(n * 7 + i) % 400);
                rc = keel_put(t, 0, tu_val(k), (keel_val){val, 41}, 0); /* overwrite */
            }
        }
        if (rc) {
            assert_int_equal(rc, KEEL_NOMEM);
            fail_countdown = -1;
            expect_poisoned(t);
            assert_int_equal(keel_commit(t), KEEL_BADTXN);
            failed_ops++;
        } else {
            rc = keel_commit(t); /* the countdown may run out in here */
            fail_countdown = -1;
            if (rc == 0) {
                expect_entries += added;
                ok_commits++;
            } else {
                assert_int_equal(rc, KEEL_NOMEM);
                failed_commits++;
            }
        }
        keel_os.malloc = malloc;
        keel_os.realloc = realloc;
        OK(keel_begin(db, KEEL_RDONLY, &t));
        assert_int_equal(count_entries(t, 0), expect_entries);
        keel_abort(t);
        assert_int_equal(check_problems(db), 0);
    }
    /* failures inside commit: the puts all succeed, then the countdown runs
     * out somewhere in bucket_flush / freelist_record / write-out */
    for (long n = 0; n < 120 * tu_scale(); n++) {
        OK(keel_begin(db, 0, &t));
        keel_bucket b;
        OK(keel_bucket_open(t, "nb", KEEL_CREATE, &b));
        int added = 0;
        for (int i = 0; i < 25; i++) {
            snprintf(k, sizeof k, "c%05ld-%02d", n, i);
            OK(keel_put(t, i % 2 ? b : 0, tu_val(k), (keel_val){val, i % 9 == 0 ? sizeof val : 50}, 0));
            added += i % 2 == 0;
        }
        for (int i = 0; i < 10; i++) { /* deletes free pages: the free list has work */
            snprintf(k, sizeof k, "base%04d", (int)(n * 13 + i * 37) % 400);
            int rc = keel_del(t, 0, tu_val(k));
            if (rc == 0)
                added--;
            else
                assert_int_equal(rc, KEEL_NOTFOUND);
        }
        keel_os.malloc = failing_malloc;
        keel_os.realloc = failing_realloc;
        fail_countdown = n;
        int rc = keel_commit(t);
        fail_countdown = -1;
        keel_os.malloc = malloc;
        keel_os.realloc = realloc;
        if (rc == 0) {
            expect_entries += added;
            ok_commits++;
        } else {
            assert_int_equal(rc, KEEL_NOMEM);
            failed_commits++;
        }
        OK(keel_begin(db, KEEL_RDONLY, &t));
        assert_int_equal(count_entries(t, 0), expect_entries);
        keel_abort(t);
        assert_int_equal(check_problems(db), 0);
        if (n % 16 == 0) { /* what is on disk agrees */
            keel_close(db);
            db = open_db(path, 0, KEEL_NOSYNC);
            OK(keel_begin(db, KEEL_RDONLY, &t));
            assert_int_equal(count_entries(t, 0), expect_entries);
            keel_abort(t);
        }
    }
    assert_true(failed_ops > 0);
    assert_true(failed_commits > 0);
    assert_true(ok_commits > 0);
    print_message("nomem: %d failed ops, %d failed commits, %d commits\n", failed_ops, failed_commits,
                  ok_commits);
    keel_close(db);
    db = open_db(path, 0, 0);
    OK(keel_begin(db, KEEL_RDONLY, &t));
    assert_int_equal(count_entries(t, 0), expect_entries);
    keel_abort(t);
    assert_int_equal(check_problems(db), 0);
    keel_close(db);
    tu_remove(path);
}

/* ---- meta pages ------------------------------------------------------------ */

/* Commits 1..n: commit i sets gen=i and adds c<i>; returns the file's bytes. */
static uint8_t *make_generations(const char *p, uint32_t psize, int n, size_t *size)
{
    tu_remove(p);
    keel_db *db = open_db(p, psize, 0);
    char k[16], v[16];
    for (int i = 1; i <= n; i++) {
        keel_txn *t;
        OK(keel_begin(db, 0, &t));
        snprintf(v, sizeof v, "%d", i);
        put_str(t, 0, "gen", v);
        snprintf(k, sizeof k, "c%d", i);
        put_str(t, 0, k, v);
        /* and enough churn that pages are freed and reused */
        for (int j = 0; j < 50; j++) {
            snprintf(k, sizeof k, "churn%03d", (j * 7 + i) % 200);
            put_str(t, 0, k, v);
        }
        assert_int_equal(keel_txn_id(t), (uint64_t)i);
        OK(keel_commit(t));
    }
    /* the image is taken before keel_close, as a crash would leave it: close
     * copies the newest meta into the other slot (meta_confirm) */
    *size = (size_t)file_size(p);
    uint8_t *img = malloc(*size);
    assert_non_null(img);
    int fd = open(p, O_RDONLY);
    assert_int_equal(pread(fd, img, *size, 0), (ssize_t)*size);
    close(fd);
    keel_close(db);
    return img;
}

static void restore(const char *p, const uint8_t *img, size_t size)
{
    int fd = open(p, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, img, size, 0), (ssize_t)size);
    close(fd);
}

static void flip(const char *p, uint64_t off, uint8_t mask) { assert_int_equal(tu_flip(p, off, mask), 0); }

/* The db opens and shows generation `gen` (commits after it absent). */
static void expect_generation(const char *p, int gen, int total, unsigned flags)
{
    keel_db *db = open_db(p, 0, flags);
    keel_stat st;
    OK(keel_db_stat(db, &st));
    assert_int_equal(st.last_txnid, (uint64_t)gen);
    keel_txn *t;
    OK(keel_begin(db, KEEL_RDONLY, &t));
    assert_int_equal(keel_txn_id(t), (uint64_t)gen);
    char k[16], v[16];
    snprintf(v, sizeof v, "%d", gen);
    expect_str(t, 0, "gen", v);
    for (int i = 1; i <= total; i++) {
        snprintf(k, sizeof k, "c%d", i);
        snprintf(v, sizeof v, "%d", i);
        expect_str(t, 0, k, i <= gen ? v : NULL);
    }
    bool churn[200] = {0};
    int nchurn = 0;
    for (int i = 1; i <= gen; i++)
        for (int j = 0; j < 50; j++)
            if (!churn[(j * 7 + i) % 200]) {
                churn[(j * 7 + i) % 200] = true;
                nchurn++;
            }
    assert_int_equal(count_entries(t, 0), 1 + gen + nchurn);
    keel_abort(t);
    keel_close(db);
}

static void test_meta_fallback(void **state)
{
    (void)state;
    static const uint32_t sizes[] = {4096, 16384};
    for (int si = 0; si < 2; si++) {
        uint32_t ps = sizes[si];
        for (int n = 5; n <= 6; n++) { /* newest meta in page 1 (n odd) or page 0 (n even) */
            tu_path(path, sizeof path, "txn-meta");
            size_t size;
            uint8_t *img = make_generations(path, ps, n, &size);
            uint64_t newest_pg = (uint64_t)(n & 1), older_pg = newest_pg ^ 1;
            assert_int_equal(newest_meta(path, ps).txnid, (uint64_t)n);

            /* every byte of the newest meta, one bit flipped: the previous commit */
            for (uint64_t off = 0; off < META_SIZE; off += (off < 72 ? 1 : 7)) {
                restore(path, img, size);
                flip(path, newest_pg * ps + off, (uint8_t)(1u << (off % 8)));
                expect_generation(path, n - 1, n, off % 3 == 0 ? KEEL_RDONLY : 0);
            }
            /* the same on the older meta: the newest commit */
            for (uint64_t off = 0; off < META_SIZE; off += 13) {
                restore(path, img, size);
                flip(path, older_pg * ps + off, 0x10);
                expect_generation(path, n, n, 0);
            }
            /* bytes after the meta in its page are not part of it */
            restore(path, img, size);
            flip(path, newest_pg * ps + META_SIZE + 1, 0xff);
            flip(path, newest_pg * ps + ps - 1, 0xff);
            expect_generation(path, n, n, 0);

            /* a whole newest meta page zeroed (a torn write of the slot) */
            restore(path, img, size);
            {
                int fd = open(path, O_RDWR);
                static uint8_t zero[65536];
                assert_int_equal(pwrite(fd, zero, ps, (off_t)(newest_pg * ps)), (ssize_t)ps);
                close(fd);
            }
            expect_generation(path, n - 1, n, 0);

            /* after falling back, the db takes new commits and stays whole */
            restore(path, img, size);
            flip(path, newest_pg * ps + 100, 0x01);
            keel_db *db = open_db(path, 0, 0);
            assert_int_equal(check_problems(db), 1); /* the damaged spare meta is reported */
            keel_txn *t;
            OK(keel_begin(db, 0, &t));
            assert_int_equal(keel_txn_id(t), (uint64_t)n); /* the lost commit's id is reused */
            put_str(t, 0, "after", "fallback");
            for (int j = 0; j < 100; j++) {
                char k[16];
                snprintf(k, sizeof k, "more%03d", j);
                put_str(t, 0, k, "x");
            }
            OK(keel_commit(t));
            assert_int_equal(check_problems(db), 0);
            keel_close(db);
            db = open_db(path, 0, 0);
            OK(keel_begin(db, KEEL_RDONLY, &t));
            expect_str(t, 0, "after", "fallback");
            char v[16];
            snprintf(v, sizeof v, "%d", n - 1);
            expect_str(t, 0, "gen", v);
            snprintf(v, sizeof v, "c%d", n);
            expect_str(t, 0, v, NULL);
            keel_abort(t);
            assert_int_equal(check_problems(db), 0);
            keel_close(db);

            /* both damaged: KEEL_CORRUPTED, the file untouched */
            restore(path, img, size);
            flip(path, 0 * ps + 70, 0x04);
            flip(path, 1 * ps + 90, 0x20);
            uint64_t digest = file_digest(path);
            assert_int_equal(try_open(path, 0), KEEL_CORRUPTED);
            assert_int_equal(try_open(path, KEEL_RDONLY), KEEL_CORRUPTED);
            assert_int_equal(file_digest(path), digest);
            /* one with a bad checksum, one with no magic: still damaged, not "not keel" */
            restore(path, img, size);
            flip(path, newest_pg * ps + 0, 0xff);
            flip(path, older_pg * ps + META_SUM_BYTES, 0x01);
            assert_int_equal(try_open(path, 0), KEEL_CORRUPTED);
            /* both zeroed: nothing left says it is a keel file */
            restore(path, img, size);
            {
                int fd = open(path, O_RDWR);
                static uint8_t zero[2 * 65536];
                assert_int_equal(pwrite(fd, zero, 2 * ps, 0), (ssize_t)(2 * ps));
                close(fd);
            }
            int rc = try_open(path, 0);
            assert_true(rc == KEEL_CORRUPTED || rc == KEEL_INVALID);
            free(img);
            tu_remove(path);
        }
    }
}

/* ---- truncated files ------------------------------------------------------- */

/* The first page of the newest commit's commit list (format.md), in an image. */
static uint64_t first_listed_page(const uint8_t *img, uint32_t ps, const struct meta *m)
{
    assert_true(m->flags & META_F_ONEFLUSH);
    const uint8_t *list = img + (m->txnid & 1) * ps + META_LIST_OFF;
    assert_true(rd32(list) >= 1);
    assert_true(XXH3_64bits(list, META_LIST_HDR + rd32(list) * META_LIST_RUN) == m->commit_list_sum);
    return rd64(list + META_LIST_HDR);
}

/* One-flush commits (design.md §6): a newest commit whose pages did not all
 * arrive is rolled back by the first opener, for every user; after a clean
 * close the same damage is damage, not a rollback. */
static void test_torn_commit(void **state)
{
    (void)state;
    const uint32_t ps = 4096;
    const int n = 6;
    tu_path(path, sizeof path, "txn-torn");
    size_t size;
    uint8_t *img = make_generations(path, ps, n, &size); /* as a crash leaves it */
    struct meta m = newest_meta(path, ps);
    assert_int_equal(m.txnid, (uint64_t)n);
    uint64_t pg = first_listed_page(img, ps, &m);

    /* untouched: the newest commit, checked and kept */
    restore(path, img, size);
    expect_generation(path, n, n, 0);

    /* one byte of one listed page differs: a torn commit, rolled back;
     * a read-only first opener decides the same (it writes only the lock file) */
    for (int ro = 0; ro <= 1; ro++) {
        restore(path, img, size);
        flip(path, pg * ps + ps / 2, 0x40);
        uint64_t digest = file_digest(path);
        expect_generation(path, n - 1, n, ro ? KEEL_RDONLY : 0);
        assert_int_equal(file_digest(path), digest); /* the check writes nothing */
    }

    /* every user of the open file follows the first opener's verdict, and
     * the next commit takes the lost one's id and slot */
    restore(path, img, size);
    flip(path, pg * ps + 17, 0x01);
    keel_db *first = open_db(path, 0, 0);
    keel_db *second = open_db(path, 0, 0); /* not the sole user: does not check */
    keel_txn *t;
    OK(keel_begin(second, KEEL_RDONLY, &t));
    assert_int_equal(keel_txn_id(t), (uint64_t)(n - 1));
    keel_abort(t);
    assert_int_equal(check_problems(second), 0);
    OK(keel_begin(second, 0, &t));
    assert_int_equal(keel_txn_id(t), (uint64_t)n);
    put_str(t, 0, "after", "torn");
    OK(keel_commit(t));
    OK(keel_begin(first, KEEL_RDONLY, &t));
    assert_int_equal(keel_txn_id(t), (uint64_t)n);
    expect_str(t, 0, "after", "torn");
    keel_abort(t);
    keel_close(second);
    keel_close(first);
    first = open_db(path, 0, 0);
    OK(keel_begin(first, KEEL_RDONLY, &t));
    assert_int_equal(keel_txn_id(t), (uint64_t)n);
    expect_str(t, 0, "after", "torn");
    char k[16];
    snprintf(k, sizeof k, "c%d", n);
    expect_str(t, 0, k, NULL); /* the torn commit's own key stays lost */
    keel_abort(t);
    assert_int_equal(check_problems(first), 0);
    keel_close(first);

    /* the growth a one-flush commit needed did not survive: torn too */
    {
        char gpath[512];
        tu_path(gpath, sizeof gpath, "txn-torn-grow");
        tu_remove(gpath);
        keel_db *g = open_db(gpath, ps, 0);
        OK(keel_begin(g, 0, &t));
        put_str(t, 0, "gen", "1");
        OK(keel_commit(t));
        OK(keel_begin(g, 0, &t));
        static uint8_t big[100000];
        OK(keel_put(t, 0, tu_val("big"), (keel_val){big, sizeof big}, 0)); /* 25 pages at the end */
        OK(keel_commit(t));
        struct meta gm = newest_meta(gpath, ps);
        assert_true(gm.flags & META_F_ONEFLUSH);
        /* the file as a crash leaves it, less the size change */
        size_t gsize = (size_t)(gm.npages - 1) * ps;
        uint8_t *gimg = malloc(gsize);
        int fd = open(gpath, O_RDONLY);
        assert_int_equal(pread(fd, gimg, gsize, 0), (ssize_t)gsize);
        close(fd);
        keel_close(g);
        restore(gpath, gimg, gsize);
        free(gimg);
        g = open_db(gpath, 0, 0);
        OK(keel_begin(g, KEEL_RDONLY, &t));
        expect_str(t, 0, "big", NULL);
        keel_abort(t);
        keel_close(g);
        tu_remove(gpath);
    }

    /* after keel_close the newest meta is in both slots: the same damage is
     * reported as damage and nothing is rolled back */
    restore(path, img, size);
    keel_db *db = open_db(path, 0, 0);
    OK(keel_begin(db, 0, &t));
    put_str(t, 0, "closed", "cleanly");
    OK(keel_commit(t));
    keel_close(db);
    m = newest_meta(path, ps);
    assert_int_equal(m.txnid, (uint64_t)n + 1);
    {
        int fd = open(path, O_RDONLY);
        struct meta copy;
        assert_int_equal(pread(fd, &copy, sizeof copy, (off_t)((m.txnid + 1) & 1) * ps), (ssize_t)sizeof copy);
        close(fd);
        assert_int_equal(copy.txnid, m.txnid); /* the other slot holds the same commit */
        assert_int_equal(copy.flags & META_F_ONEFLUSH, 0);
        m = (m.flags & META_F_ONEFLUSH) ? m : copy;
    }
    free(img);
    size = (size_t)file_size(path);
    img = malloc(size);
    {
        int fd = open(path, O_RDONLY);
        assert_int_equal(pread(fd, img, size, 0), (ssize_t)size);
        close(fd);
        struct meta orig;
        memcpy(&orig, img + (m.txnid & 1) * ps, sizeof orig);
        pg = first_listed_page(img, ps, &orig);
    }
    flip(path, pg * ps + 8, 0x01); /* the page's flags: every walk notices */
    db = open_db(path, 0, 0);
    OK(keel_begin(db, KEEL_RDONLY, &t));
    assert_int_equal(keel_txn_id(t), (uint64_t)n + 1);
    keel_abort(t);
    assert_true(check_problems(db) > 0);
    keel_close(db);
    free(img);
    tu_remove(path);
}

static void test_truncated(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "txn-trunc");
    keel_db *db = open_db(path, 0, 0);
    keel_txn *t;
    char k[32];
    static uint8_t val[3000];
    memset(val, 'z', sizeof val);
    OK(keel_begin(db, 0, &t));
    for (int i = 0; i < 1000; i++) {
        snprintf(k, sizeof k, "t%05d", i);
        OK(keel_put(t, 0, tu_val(k), (keel_val){val, 1 + (size_t)i * 3 % 3000}, 0));
    }
    OK(keel_commit(t));
    keel_close(db);
    struct meta m = newest_meta(path, 4096);
    uint64_t used = m.npages * 4096;
    uint64_t full = file_size(path);
    assert_true(used <= full);
    int fd = open(path, O_RDONLY);
    uint8_t *img = malloc(full);
    assert_int_equal(pread(fd, img, full, 0), (ssize_t)full);
    close(fd);

    const uint64_t cuts[] = {used - 1, used - 4096, used / 2, 3 * 4096, 2 * 4096, 4096 + META_SIZE, 4096 + 100,
                             4096, META_SIZE, 100, 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        restore(path, img, (size_t)full);
        assert_int_equal(truncate(path, (off_t)cuts[i]), 0);
        uint64_t digest = file_digest(path);
        int rc = try_open(path, 0);
        assert_true(rc == KEEL_CORRUPTED || rc == KEEL_INVALID);
        assert_int_equal(try_open(path, KEEL_RDONLY), rc);
        assert_int_equal(file_digest(path), digest);
    }

    /* cutting only the unused tail is harmless */
    restore(path, img, (size_t)full);
    assert_int_equal(truncate(path, (off_t)used), 0);
    db = open_db(path, 0, 0);
    assert_int_equal(check_problems(db), 0);
    OK(keel_begin(db, 0, &t));
    assert_int_equal(count_entries(t, 0), 1000);
    put_str(t, 0, "grown", "again");
    OK(keel_commit(t));
    assert_int_equal(check_problems(db), 0);
    keel_close(db);

    /* a file cut to nothing is indistinguishable from a new one */
    assert_int_equal(truncate(path, 0), 0);
    db = open_db(path, 0, 0);
    OK(keel_begin(db, KEEL_RDONLY, &t));
    assert_int_equal(count_entries(t, 0), 0);
    keel_abort(t);
    keel_close(db);
    free(img);
    tu_remove(path);
}

/* ---- statistics --------------------------------------------------------- */

static void expect_accounting(const char *p, keel_db *db, const keel_stat *st)
{
    /* every page is a meta, in a tree, or free */
    struct meta m = newest_meta(p, st->page_size);
    assert_int_equal(m.txnid, st->last_txnid);
    assert_int_equal(2 + st->branch_pages + st->leaf_pages + st->overflow_pages + st->free_pages, m.npages);
    assert_true(m.npages * st->page_size <= st->file_size);
    assert_int_equal(st->file_size, file_size(p));
    assert_int_equal(st->file_size % st->page_size, 0);
    assert_int_equal(check_problems(db), 0);
}

static void test_stat(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "txn-stat");
    keel_db *db = open_db(path, 0, KEEL_NOSYNC);
    keel_stat st;
    OK(keel_db_stat(db, &st));
    assert_int_equal(st.page_size, 4096);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.depth, 0);
    assert_int_equal(st.last_txnid, 0);
    assert_int_equal(st.branch_pages + st.leaf_pages + st.overflow_pages, 0);
    expect_accounting(path, db, &st);

    keel_txn *t;
    char k[32];
    uint64_t last = 0;
    long total = 0;
    keel_bucket b;
    for (int round = 0; round < 20; round++) {
        OK(keel_begin(db, 0, &t));
        assert_int_equal(keel_txn_id(t), last + 1);
        if (round == 0)
            OK(keel_bucket_open(t, "second", KEEL_CREATE, &b));
        for (int i = 0; i < 500; i++) {
            snprintf(k, sizeof k, "r%02d-%04d", round, i);
            OK(keel_put(t, i % 3 ? 0 : b, tu_val(k), tu_val("a value of some thirty bytes.."), 0));
        }
        total += 500;
        OK(keel_commit(t));
        last++;
        OK(keel_db_stat(db, &st));
        assert_int_equal(st.last_txnid, last);
        assert_int_equal(st.entries, (uint64_t)total);
        assert_true(st.leaf_pages >= (uint64_t)total * 48 / 4080);
        assert_true(st.depth >= 1);
        /* a read txn's id is the snapshot */
        OK(keel_begin(db, KEEL_RDONLY, &t));
        assert_int_equal(keel_txn_id(t), last);
        keel_abort(t);
    }
    assert_true(st.depth >= 2 && st.branch_pages > 0);
    expect_accounting(path, db, &st);

    /* no change, abort, read commit: the id does not move */
    OK(keel_begin(db, 0, &t));
    OK(keel_commit(t));
    OK(keel_begin(db, 0, &t));
    put_str(t, 0, "aborted", "x");
    keel_abort(t);
    OK(keel_begin(db, KEEL_RDONLY, &t));
    OK(keel_commit(t));
    OK(keel_db_stat(db, &st));
    assert_int_equal(st.last_txnid, last);
    assert_int_equal(st.entries, (uint64_t)total);

    /* overflow pages: 10000 bytes take three 4 KiB pages */
    static uint8_t big[10000];
    OK(keel_begin(db, 0, &t));
    OK(keel_put(t, b, tu_val("big"), (keel_val){big, sizeof big}, 0));
    OK(keel_commit(t));
    last++;
    total++;
    OK(keel_db_stat(db, &st));
    assert_int_equal(st.overflow_pages, 3);
    assert_int_equal(st.entries, (uint64_t)total);
    OK(keel_begin(db, KEEL_RDONLY, &t));
    keel_stat bst;
    OK(keel_bucket_stat(t, b, &bst));
    assert_int_equal(bst.overflow_pages, 3);
    assert_int_equal(bst.entries, (uint64_t)(20 * 167 + 1)); /* i % 3 == 0 of 0..499 is 167 keys */
    OK(keel_bucket_stat(t, 0, &bst));
    assert_int_equal(bst.entries, (uint64_t)(20 * 333));
    assert_int_equal(bst.last_txnid, last);
    keel_abort(t);
    expect_accounting(path, db, &st);

    /* delete half: entries follow, pages become free or the file shrinks */
    OK(keel_begin(db, 0, &t));
    for (int round = 0; round < 20; round += 2)
        for (int i = 0; i < 500; i++) {
            snprintf(k, sizeof k, "r%02d-%04d", round, i);
            OK(keel_del(t, i % 3 ? 0 : b, tu_val(k)));
            total--;
        }
    OK(keel_commit(t));
    last++;
    OK(keel_db_stat(db, &st));
    assert_int_equal(st.entries, (uint64_t)total);
    assert_int_equal(st.last_txnid, last);
    expect_accounting(path, db, &st);
    keel_close(db);

    /* the numbers survive a reopen */
    db = open_db(path, 0, KEEL_RDONLY);
    keel_stat again;
    OK(keel_db_stat(db, &again));
    assert_int_equal(again.entries, st.entries);
    assert_int_equal(again.last_txnid, st.last_txnid);
    assert_int_equal(again.leaf_pages, st.leaf_pages);
    assert_int_equal(again.branch_pages, st.branch_pages);
    assert_int_equal(again.free_pages, st.free_pages);
    keel_close(db);
    tu_remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commit_abort_reopen),
        cmocka_unit_test(test_close_with_open_txn),
        cmocka_unit_test(test_failed_txn_disk_full),
        cmocka_unit_test(test_failed_txn_nomem),
        cmocka_unit_test(test_meta_fallback),
        cmocka_unit_test(test_torn_commit),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_stat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
