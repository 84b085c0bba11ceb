/*
 * test_mvcc.c — snapshots, concurrent readers, and page reuse.
 *
 *   - a read txn keeps its snapshot, byte for byte, while the writer commits
 *     many times (values it read stay equal where they lie in the map, new
 *     keys and buckets stay invisible, dropped ones stay visible);
 *   - readers in several threads (and a second handle) check an invariant
 *     (the sum of N counters) while a writer thread moves amounts between
 *     them in every commit;
 *   - page reuse: steady overwrites with no reader keep the file size flat;
 *     a reader holding an old snapshot makes it grow; after it ends the size
 *     is flat again; deleting everything lets the file shrink;
 *   - keel_db_readers lists open readers with their snapshot and lag;
 *   - the read cache: an ended read txn kept for its thread is still ended
 *     (KEEL_BADTXN, its cursors KEEL_BADCURSOR), publishes nothing, and its
 *     next use sees the newest commit; threads that keep slots give them
 *     back when the table is full; 24 threads read while a writer commits
 *     and the handle closes with their txns kept.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/stat.h>

#include "testutil.h"

#define OK(x) assert_int_equal((x), 0)

static char path[4096];

/* ---- helpers ------------------------------------------------------------ */

static keel_db *open_db(const char *p, unsigned flags)
{
    keel_options o = {.flags = flags};
    keel_db *db = NULL;
    OK(keel_open(p, &o, &db));
    assert_non_null(db);
    return db;
}

static void report(void *ctx, const char *msg)
{
    (void)ctx;
    print_message("keel_check: %s\n", msg);
}

static void expect_clean(keel_db *db)
{
    uint64_t problems = 99;
    OK(keel_check(db, report, NULL, &problems));
    assert_int_equal(problems, 0);
}

static uint64_t db_size(keel_db *db)
{
    keel_stat st;
    OK(keel_db_stat(db, &st));
    struct stat sst;
    assert_int_equal(stat(path, &sst), 0);
    assert_int_equal(st.file_size, (uint64_t)sst.st_size);
    return st.file_size;
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

/* A value of `len` bytes that names its key and its generation. */
static size_t make_val(char *buf, size_t len, int key, int gen)
{
    int n = snprintf(buf, len + 1, "k%d-g%d-", key, gen);
    for (size_t i = (size_t)n; i < len; i++)
        buf[i] = (char)('a' + (key * 31 + gen * 7 + (int)i) % 26);
    return len;
}

/* ---- one reader, many commits -------------------------------------------- */

#define SNAP_KEYS 1000

static void test_snapshot_isolation(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "mvcc-snap");
    keel_db *db = open_db(path, KEEL_NOSYNC);
    keel_txn *w, *r;
    char k[32];
    static char buf[20000];
    static size_t len0[SNAP_KEYS];
    keel_bucket keep, doomed, later;
    OK(keel_begin(db, 0, &w));
    OK(keel_bucket_open(w, "keep", KEEL_CREATE, &keep));
    OK(keel_bucket_open(w, "doomed", KEEL_CREATE, &doomed));
    for (int i = 0; i < SNAP_KEYS; i++) {
        snprintf(k, sizeof k, "s%04d", i);
        len0[i] = i % 50 == 0 ? 5000 + (size_t)i : 40 + (size_t)(i % 120); /* some overflow values */
        make_val(buf, len0[i], i, 0);
        OK(keel_put(w, 0, tu_val(k), (keel_val){buf, len0[i]}, 0));
        if (i % 10 == 0) {
            OK(keel_put(w, keep, tu_val(k), (keel_val){buf, 30}, 0));
            OK(keel_put(w, doomed, tu_val(k), (keel_val){buf, 30}, 0));
        }
    }
    OK(keel_commit(w));

    /* the reader: remember where each value lies in the map */
    OK(keel_begin(db, KEEL_RDONLY, &r));
    uint64_t snap = keel_txn_id(r);
    static keel_val seen[SNAP_KEYS];
    for (int i = 0; i < SNAP_KEYS; i++) {
        snprintf(k, sizeof k, "s%04d", i);
        OK(keel_get(r, 0, tu_val(k), &seen[i]));
        assert_int_equal(seen[i].len, len0[i]);
    }
    keel_bucket rkeep, rdoomed;
    OK(keel_bucket_open(r, "keep", 0, &rkeep));
    OK(keel_bucket_open(r, "doomed", 0, &rdoomed));

    uint64_t rs = tu_seed(0x5eed) | 1;
    const int commits = (int)(200 * tu_scale());
    int deleted = 0, added = 0;
    for (int c = 1; c <= commits; c++) {
        OK(keel_begin(db, 0, &w));
        for (int j = 0; j < 40; j++) { /* overwrite, sometimes with another size */
            int i = (int)(tu_rand(&rs) % SNAP_KEYS);
            snprintf(k, sizeof k, "s%04d", i);
            size_t len = tu_rand(&rs) % 8 ? len0[i] : (size_t)(tu_rand(&rs) % 9000);
            make_val(buf, len, i, c);
            int rc = keel_put(w, 0, tu_val(k), (keel_val){buf, len}, 0);
            assert_int_equal(rc, 0);
        }
        for (int j = 0; j < 5; j++) { /* delete (maybe re-put later) */
            int i = (int)(tu_rand(&rs) % SNAP_KEYS);
            snprintf(k, sizeof k, "s%04d", i);
            int rc = keel_del(w, 0, tu_val(k));
            assert_true(rc == 0 || rc == KEEL_NOTFOUND);
            deleted += rc == 0;
        }
        for (int j = 0; j < 5; j++) { /* new keys */
            snprintf(k, sizeof k, "new%05d", added++);
            OK(keel_put(w, 0, tu_val(k), tu_val("fresh"), 0));
        }
        if (c == 1) {
            OK(keel_bucket_drop(w, doomed));
            OK(keel_bucket_open(w, "later", KEEL_CREATE, &later));
            OK(keel_put(w, later, tu_val("x"), tu_val("y"), 0));
        }
        OK(keel_put(w, keep, tu_val("s0000"), (keel_val){buf, 20}, 0));
        OK(keel_commit(w));

        /* everything the reader was handed is still there, unchanged */
        for (int i = 0; i < SNAP_KEYS; i += (c % 10 == 0 ? 1 : 17)) {
            make_val(buf, len0[i], i, 0);
            assert_int_equal(seen[i].len, len0[i]);
            assert_memory_equal(seen[i].data, buf, len0[i]);
        }
        assert_int_equal(keel_txn_id(r), snap);
        if (c % 25 == 0 || c == commits) {
            /* a full walk of the snapshot */
            keel_cursor *cur;
            OK(keel_cursor_open(r, 0, &cur));
            keel_val ck, cv;
            int n = 0, rc;
            for (rc = keel_cursor_first(cur, &ck, &cv); rc == 0; rc = keel_cursor_next(cur, &ck, &cv)) {
                snprintf(k, sizeof k, "s%04d", n);
                assert_int_equal(ck.len, strlen(k));
                assert_memory_equal(ck.data, k, ck.len);
                make_val(buf, len0[n], n, 0);
                assert_int_equal(cv.len, len0[n]);
                assert_memory_equal(cv.data, buf, cv.len);
                n++;
            }
            assert_int_equal(rc, KEEL_NOTFOUND);
            assert_int_equal(n, SNAP_KEYS);
            keel_cursor_close(cur);
            expect_str(r, 0, "new00000", NULL);
            snprintf(k, sizeof k, "new%05d", added - 1);
            expect_str(r, 0, k, NULL);
            /* buckets as they were: the dropped one and its data still there,
             * the new one absent */
            keel_val out;
            OK(keel_get(r, rdoomed, tu_val("s0010"), &out));
            assert_int_equal(out.len, 30);
            OK(keel_get(r, rkeep, tu_val("s0000"), &out));
            assert_int_equal(out.len, 30);
            keel_bucket nb;
            assert_int_equal(keel_bucket_open(r, "later", 0, &nb), KEEL_NOTFOUND);
            keel_stat st;
            OK(keel_bucket_stat(r, 0, &st));
            assert_int_equal(st.entries, SNAP_KEYS);
            assert_int_equal(st.last_txnid, snap);
        }
        /* a reader begun now sees this commit */
        if (c % 20 == 0) {
            keel_txn *r2;
            OK(keel_begin(db, KEEL_RDONLY, &r2));
            assert_int_equal(keel_txn_id(r2), snap + (uint64_t)c);
            snprintf(k, sizeof k, "new%05d", added - 1);
            expect_str(r2, 0, k, "fresh");
            keel_bucket nb;
            assert_int_equal(keel_bucket_open(r2, "doomed", 0, &nb), KEEL_NOTFOUND);
            OK(keel_bucket_open(r2, "later", 0, &nb));
            expect_str(r2, nb, "x", "y");
            keel_abort(r2);
        }
    }
    assert_true(deleted > 0);
    keel_abort(r);
    expect_clean(db);
    keel_close(db);
    tu_remove(path);
}

/* Uncommitted and later commits stay out of older snapshots. */
static void test_visibility(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "mvcc-vis");
    keel_db *db = open_db(path, KEEL_NOSYNC);
    keel_db *other = open_db(path, KEEL_NOSYNC); /* a second handle, as another process would */
    keel_txn *w, *r1, *r2, *r3, *r4;
    OK(keel_begin(db, 0, &w));
    OK(keel_put(w, 0, tu_val("a"), tu_val("1"), 0));
    OK(keel_commit(w));

    OK(keel_begin(db, KEEL_RDONLY, &r1));
    OK(keel_begin(db, 0, &w));
    OK(keel_put(w, 0, tu_val("a"), tu_val("2"), 0));
    OK(keel_put(w, 0, tu_val("b"), tu_val("new"), 0));
    OK(keel_del(w, 0, tu_val("a")));
    OK(keel_put(w, 0, tu_val("a"), tu_val("3"), 0));
    expect_str(w, 0, "a", "3"); /* the writer sees its own changes */
    /* readers begun during the write txn, on either handle, do not */
    OK(keel_begin(db, KEEL_RDONLY, &r2));
    OK(keel_begin(other, KEEL_RDONLY, &r3));
    for (keel_txn **rp = (keel_txn *[]){r1, r2, r3, NULL}; *rp; rp++) {
        expect_str(*rp, 0, "a", "1");
        expect_str(*rp, 0, "b", NULL);
    }
    OK(keel_commit(w));
    for (keel_txn **rp = (keel_txn *[]){r1, r2, r3, NULL}; *rp; rp++) {
        expect_str(*rp, 0, "a", "1");
        expect_str(*rp, 0, "b", NULL);
    }
    /* readers begun after the commit see it, on either handle */
    OK(keel_begin(db, KEEL_RDONLY, &r4));
    expect_str(r4, 0, "a", "3");
    expect_str(r4, 0, "b", "new");
    keel_abort(r4);
    OK(keel_begin(other, KEEL_RDONLY, &r4));
    expect_str(r4, 0, "a", "3");
    keel_abort(r4);
    /* an aborted write is never seen */
    OK(keel_begin(other, 0, &w));
    OK(keel_put(w, 0, tu_val("c"), tu_val("aborted"), 0));
    keel_abort(w);
    OK(keel_begin(db, KEEL_RDONLY, &r4));
    expect_str(r4, 0, "c", NULL);
    assert_int_equal(keel_txn_id(r4), keel_txn_id(r1) + 1);
    keel_abort(r4);
    keel_abort(r1);
    keel_abort(r2);
    keel_abort(r3);
    keel_close(other);
    keel_close(db);
    tu_remove(path);
}

/* ---- threads ------------------------------------------------------------- */

#define NCOUNTERS 32
#define START_VALUE 1000
#define NREADERS 4

struct shared {
    keel_db *db;
    atomic_bool writer_done;
    atomic_long failures;
    atomic_long reads;
    atomic_long commits;
    char first_failure[256];
    pthread_mutex_t mu;
};

static void fail_at(struct shared *sh, int line, const char *what, long a, long b)
{
    if (atomic_fetch_add(&sh->failures, 1) == 0) {
        pthread_mutex_lock(&sh->mu);
        snprintf(sh->first_failure, sizeof sh->first_failure, "line %d: %s (%ld vs %ld)", line, what, a, b);
        pthread_mutex_unlock(&sh->mu);
    }
}
#define CHECK_EQ(sh, a, b, what)                                      \
    do {                                                              \
        long a_ = (long)(a), b_ = (long)(b);                          \
        if (a_ != b_)                                                 \
            fail_at((sh), __LINE__, (what), a_, b_);                  \
    } while (0)

static int64_t counter_value(keel_val v)
{
    int64_t x = 0;
    if (v.len != sizeof x)
        return INT64_MIN;
    memcpy(&x, v.data, sizeof x);
    return x;
}

static void *writer_main(void *arg)
{
    struct shared *sh = arg;
    uint64_t rs = tu_seed(0xabcdef) | 1;
    const long commits = 300 * tu_scale();
    static char filler[12000];
    memset(filler, 'f', sizeof filler);
    int64_t ctr[NCOUNTERS];
    for (int i = 0; i < NCOUNTERS; i++)
        ctr[i] = START_VALUE;
    char k[32];
    long attempts = 0;
    for (long c = 1; c <= commits && attempts++ < 3 * commits; c++) {
        keel_txn *w;
        int rc = keel_begin(sh->db, 0, &w);
        CHECK_EQ(sh, rc, 0, "writer begin");
        if (rc)
            break;
        for (int j = 0; j < 6; j++) {
            int a = (int)(tu_rand(&rs) % NCOUNTERS), b = (int)(tu_rand(&rs) % NCOUNTERS);
            int64_t amount = (int64_t)(tu_rand(&rs) % 200) - 50;
            ctr[a] -= amount;
            ctr[b] += amount;
            snprintf(k, sizeof k, "ctr%02d", a);
            CHECK_EQ(sh, keel_put(w, 0, tu_val(k), (keel_val){&ctr[a], 8}, 0), 0, "put ctr");
            snprintf(k, sizeof k, "ctr%02d", b);
            CHECK_EQ(sh, keel_put(w, 0, tu_val(k), (keel_val){&ctr[b], 8}, 0), 0, "put ctr");
        }
        /* churn: pages allocated and freed in every commit */
        for (int j = 0; j < 20; j++) {
            snprintf(k, sizeof k, "fill%04d", (int)(tu_rand(&rs) % 500));
            if (tu_rand(&rs) % 3 == 0) {
                rc = keel_del(w, 0, tu_val(k));
                if (rc != KEEL_NOTFOUND)
                    CHECK_EQ(sh, rc, 0, "del filler");
            } else {
                size_t len = tu_rand(&rs) % 10 == 0 ? sizeof filler : (size_t)(tu_rand(&rs) % 400);
                CHECK_EQ(sh, keel_put(w, 0, tu_val(k), (keel_val){filler, len}, 0), 0, "put filler");
            }
        }
        CHECK_EQ(sh, keel_put(w, 0, tu_val("seq"), (keel_val){&c, sizeof c}, 0), 0, "put seq");
        if (tu_rand(&rs) % 10 == 0) {
            keel_abort(w); /* counters roll back with it */
            keel_txn *r;
            CHECK_EQ(sh, keel_begin(sh->db, KEEL_RDONLY, &r), 0, "writer reread");
            for (int i = 0; i < NCOUNTERS; i++) {
                keel_val v;
                snprintf(k, sizeof k, "ctr%02d", i);
                CHECK_EQ(sh, keel_get(r, 0, tu_val(k), &v), 0, "writer reread get");
                ctr[i] = counter_value(v);
            }
            keel_abort(r);
            c--;
            continue;
        }
        CHECK_EQ(sh, keel_commit(w), 0, "commit");
        atomic_fetch_add(&sh->commits, 1);
        if (c % 16 == 0)
            sched_yield();
    }
    atomic_store(&sh->writer_done, true);
    return NULL;
}

struct reader_arg {
    struct shared *sh;
    keel_db *db; /* the shared handle or the reader's own */
    int id;
};

static void *reader_main(void *arg)
{
    struct reader_arg *ra = arg;
    struct shared *sh = ra->sh;
    uint64_t last_id = 0;
    long last_seq = 0;
    char k[32];
    for (long iter = 0; iter < 2000000 && !atomic_load(&sh->writer_done); iter++) {
        keel_txn *r;
        int rc = keel_begin(ra->db, KEEL_RDONLY, &r);
        CHECK_EQ(sh, rc, 0, "reader begin");
        if (rc)
            break;
        uint64_t id = keel_txn_id(r);
        if (id < last_id)
            fail_at(sh, __LINE__, "snapshot id went back", (long)id, (long)last_id);
        last_id = id;
        keel_val v;
        long seq = 0;
        rc = keel_get(r, 0, tu_val("seq"), &v);
        CHECK_EQ(sh, rc, 0, "get seq");
        if (rc == 0)
            memcpy(&seq, v.data, sizeof seq);
        if (seq < last_seq)
            fail_at(sh, __LINE__, "seq went back", seq, last_seq);
        last_seq = seq;
        /* by get */
        int64_t sum = 0, first = 0;
        for (int i = 0; i < NCOUNTERS; i++) {
            snprintf(k, sizeof k, "ctr%02d", i);
            rc = keel_get(r, 0, tu_val(k), &v);
            CHECK_EQ(sh, rc, 0, "get ctr");
            if (rc == 0)
                sum += counter_value(v);
            if (i == 0)
                first = counter_value(v);
        }
        CHECK_EQ(sh, sum, NCOUNTERS * START_VALUE, "sum by get");
        /* hold the snapshot a moment, then read again by cursor */
        for (int y = 0; y < ra->id; y++)
            sched_yield();
        keel_cursor *c;
        CHECK_EQ(sh, keel_cursor_open(r, 0, &c), 0, "cursor open");
        keel_val ck, cv;
        int64_t sum2 = 0;
        int n = 0;
        for (rc = keel_cursor_seek(c, tu_val("ctr"), &ck, &cv); rc == 0 && ck.len == 5 && !memcmp(ck.data, "ctr", 3);
             rc = keel_cursor_next(c, &ck, &cv)) {
            sum2 += counter_value(cv);
            n++;
        }
        keel_cursor_close(c);
        CHECK_EQ(sh, n, NCOUNTERS, "counters by cursor");
        CHECK_EQ(sh, sum2, NCOUNTERS * START_VALUE, "sum by cursor");
        CHECK_EQ(sh, keel_get(r, 0, tu_val("ctr00"), &v), 0, "reget");
        CHECK_EQ(sh, counter_value(v), first, "value moved under a reader");
        CHECK_EQ(sh, keel_txn_id(r), id, "txn id moved");
        keel_abort(r);
        atomic_fetch_add(&sh->reads, 1);
    }
    return NULL;
}

static void test_concurrent_readers(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "mvcc-threads");
    static struct shared sh;
    memset(&sh, 0, sizeof sh);
    pthread_mutex_init(&sh.mu, NULL);
    sh.db = open_db(path, KEEL_NOSYNC);
    keel_db *own = open_db(path, KEEL_NOSYNC);
    keel_txn *w;
    OK(keel_begin(sh.db, 0, &w));
    char k[32];
    for (int i = 0; i < NCOUNTERS; i++) {
        int64_t v = START_VALUE;
        snprintf(k, sizeof k, "ctr%02d", i);
        OK(keel_put(w, 0, tu_val(k), (keel_val){&v, 8}, 0));
    }
    long zero = 0;
    OK(keel_put(w, 0, tu_val("seq"), (keel_val){&zero, sizeof zero}, 0));
    OK(keel_commit(w));

    pthread_t wt, rt[NREADERS];
    struct reader_arg ra[NREADERS];
    for (int i = 0; i < NREADERS; i++) {
        ra[i] = (struct reader_arg){&sh, i == NREADERS - 1 ? own : sh.db, i};
        assert_int_equal(pthread_create(&rt[i], NULL, reader_main, &ra[i]), 0);
    }
    assert_int_equal(pthread_create(&wt, NULL, writer_main, &sh), 0);
    pthread_join(wt, NULL);
    for (int i = 0; i < NREADERS; i++)
        pthread_join(rt[i], NULL);
    if (sh.failures)
        print_message("first failure: %s\n", sh.first_failure);
    assert_int_equal(atomic_load(&sh.failures), 0);
    assert_int_equal(atomic_load(&sh.commits), 300 * tu_scale());
    print_message("%ld reads during %ld commits\n", atomic_load(&sh.reads), atomic_load(&sh.commits));
    assert_true(atomic_load(&sh.reads) > 0);

    /* the final state holds the invariant too, and the file is whole */
    keel_txn *r;
    OK(keel_begin(own, KEEL_RDONLY, &r));
    int64_t sum = 0;
    for (int i = 0; i < NCOUNTERS; i++) {
        keel_val v;
        snprintf(k, sizeof k, "ctr%02d", i);
        OK(keel_get(r, 0, tu_val(k), &v));
        sum += counter_value(v);
    }
    assert_int_equal(sum, NCOUNTERS * START_VALUE);
    keel_abort(r);
    size_t count;
    OK(keel_db_readers(sh.db, NULL, 0, &count));
    assert_int_equal(count, 0);
    expect_clean(sh.db);
    keel_close(own);
    keel_close(sh.db);
    pthread_mutex_destroy(&sh.mu);
    tu_remove(path);
}

/* ---- page reuse ------------------------------------------------------------ */

#define REUSE_KEYS 2000

/* One commit overwriting `n` random keys (same sizes: only page copies). */
static void overwrite_commit(keel_db *db, uint64_t *rs, int n, int gen)
{
    keel_txn *w;
    OK(keel_begin(db, 0, &w));
    char k[32], v[128];
    for (int j = 0; j < n; j++) {
        int i = (int)(tu_rand(rs) % REUSE_KEYS);
        snprintf(k, sizeof k, "r%05d", i);
        make_val(v, 100, i, gen);
        OK(keel_put(w, 0, tu_val(k), (keel_val){v, 100}, 0));
    }
    OK(keel_commit(w));
}

static void test_page_reuse(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "mvcc-reuse");
    keel_db *db = open_db(path, KEEL_NOSYNC);
    uint64_t rs = tu_seed(0x12345) | 1;
    char k[32], v[128];
    keel_txn *w;
    OK(keel_begin(db, 0, &w));
    for (int i = 0; i < REUSE_KEYS; i++) {
        snprintf(k, sizeof k, "r%05d", i);
        make_val(v, 100, i, 0);
        OK(keel_put(w, 0, tu_val(k), (keel_val){v, 100}, 0));
    }
    OK(keel_commit(w));
    int gen = 1;

    /* phase 1: no reader: after a warm-up the size stays put */
    const int warm = 30, steady = (int)(120 * tu_scale());
    for (int c = 0; c < warm; c++)
        overwrite_commit(db, &rs, 200, gen++);
    uint64_t base = db_size(db), max1 = base;
    for (int c = 0; c < steady; c++) {
        overwrite_commit(db, &rs, 200, gen++);
        uint64_t s = db_size(db);
        if (s > max1)
            max1 = s;
    }
    print_message("no reader: %llu bytes after warm-up, at most %llu over %d commits\n",
                  (unsigned long long)base, (unsigned long long)max1, steady);
    assert_int_equal(max1, base);
    expect_clean(db);

    /* phase 2: a reader holds the snapshot: freed pages cannot be reused */
    keel_txn *r;
    OK(keel_begin(db, KEEL_RDONLY, &r));
    keel_val held;
    OK(keel_get(r, 0, tu_val("r00007"), &held));
    char want[128];
    memcpy(want, held.data, 100);
    keel_stat st0, st1;
    OK(keel_db_stat(db, &st0));
    const int held_commits = (int)(60 * tu_scale());
    for (int c = 0; c < held_commits; c++)
        overwrite_commit(db, &rs, 200, gen++);
    uint64_t grown = db_size(db);
    OK(keel_db_stat(db, &st1));
    print_message("reader held: %llu -> %llu bytes over %d commits, free pages %llu -> %llu\n",
                  (unsigned long long)base, (unsigned long long)grown, held_commits,
                  (unsigned long long)st0.free_pages, (unsigned long long)st1.free_pages);
    assert_true(grown >= base + ((uint64_t)2 << 20)); /* each commit copies ~50 pages */
    assert_true(st1.free_pages > st0.free_pages);
    assert_memory_equal(held.data, want, 100);
    size_t count;
    keel_reader_info info;
    OK(keel_db_readers(db, &info, 1, &count));
    assert_int_equal(count, 1);
    assert_int_equal(info.lag, (uint64_t)held_commits);
    keel_abort(r);

    /* phase 3: reader gone: no more growth, the held-back pages get reused */
    uint64_t max3 = 0;
    for (int c = 0; c < held_commits + steady; c++) {
        overwrite_commit(db, &rs, 200, gen++);
        uint64_t s = db_size(db);
        if (s > max3)
            max3 = s;
    }
    uint64_t after = db_size(db);
    keel_stat st2;
    OK(keel_db_stat(db, &st2));
    print_message("reader gone: at most %llu bytes, %llu at the end, free pages %llu\n", (unsigned long long)max3,
                  (unsigned long long)after, (unsigned long long)st2.free_pages);
    assert_true(max3 <= grown);
    /* a second steady phase: flat from here on */
    uint64_t max4 = after;
    for (int c = 0; c < steady; c++) {
        overwrite_commit(db, &rs, 200, gen++);
        uint64_t s = db_size(db);
        if (s > max4)
            max4 = s;
    }
    assert_int_equal(max4, after);
    expect_clean(db);
    keel_close(db);
    tu_remove(path);
}

/* Fill a few MB, delete it all: the file gives the space back. */
static void test_shrink(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "mvcc-shrink");
    keel_db *db = open_db(path, KEEL_NOSYNC);
    keel_txn *w;
    char k[32];
    static char v[1000];
    memset(v, 'v', sizeof v);
    OK(keel_begin(db, 0, &w));
    for (int i = 0; i < 5000; i++) {
        snprintf(k, sizeof k, "x%05d", i);
        OK(keel_put(w, 0, tu_val(k), (keel_val){v, sizeof v}, 0));
    }
    static char big[100000];
    for (int i = 0; i < 10; i++) {
        snprintf(k, sizeof k, "big%d", i);
        OK(keel_put(w, 0, tu_val(k), (keel_val){big, sizeof big}, 0));
    }
    OK(keel_commit(w));
    uint64_t full = db_size(db);
    assert_true(full >= (uint64_t)5 << 20);

    OK(keel_begin(db, 0, &w));
    for (int i = 0; i < 5000; i++) {
        snprintf(k, sizeof k, "x%05d", i);
        OK(keel_del(w, 0, tu_val(k)));
    }
    for (int i = 0; i < 10; i++) {
        snprintf(k, sizeof k, "big%d", i);
        OK(keel_del(w, 0, tu_val(k)));
    }
    OK(keel_commit(w));
    uint64_t s = db_size(db), most = s;
    int c;
    /* the free list is given back a few records per commit: allow a few
     * hundred small commits (each cheap), and never any growth */
    for (c = 0; c < 1000 && s > full / 2; c++) {
        OK(keel_begin(db, 0, &w));
        snprintf(k, sizeof k, "small%d", c);
        OK(keel_put(w, 0, tu_val(k), tu_val("s"), 0));
        OK(keel_commit(w));
        s = db_size(db);
        if (s > most)
            most = s;
    }
    print_message("shrink: %llu -> %llu bytes after %d small commits (at most %llu)\n",
                  (unsigned long long)full, (unsigned long long)s, c, (unsigned long long)most);
    assert_true(most <= full);
    assert_true(s <= full / 2);
    expect_clean(db);
    keel_stat st;
    OK(keel_db_stat(db, &st));
    assert_int_equal(st.entries, (uint64_t)c);
    keel_close(db);
    db = open_db(path, 0);
    expect_clean(db);
    keel_close(db);
    tu_remove(path);
}

/* ---- the reader table ---------------------------------------------------- */

struct thread_reader {
    keel_db *db;
    keel_txn *txn;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stage; /* 0 start, 1 begun, 2 may end, 3 ended */
    int rc;
};

static void *hold_reader(void *arg)
{
    struct thread_reader *tr = arg;
    tr->rc = keel_begin(tr->db, KEEL_RDONLY, &tr->txn);
    pthread_mutex_lock(&tr->mu);
    tr->stage = 1;
    pthread_cond_broadcast(&tr->cv);
    while (tr->stage != 2)
        pthread_cond_wait(&tr->cv, &tr->mu);
    pthread_mutex_unlock(&tr->mu);
    keel_abort(tr->txn);
    pthread_mutex_lock(&tr->mu);
    tr->stage = 3;
    pthread_cond_broadcast(&tr->cv);
    pthread_mutex_unlock(&tr->mu);
    return NULL;
}

static void commit_one(keel_db *db, const char *key)
{
    keel_txn *w;
    OK(keel_begin(db, 0, &w));
    OK(keel_put(w, 0, tu_val(key), tu_val("v"), 0));
    OK(keel_commit(w));
}

static void test_readers_list(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "mvcc-readers");
    keel_db *db = open_db(path, KEEL_NOSYNC);
    size_t count = 99;
    keel_reader_info info[4];
    OK(keel_db_readers(db, info, 4, &count));
    assert_int_equal(count, 0);
    commit_one(db, "a");
    commit_one(db, "b");

    keel_txn *r1, *r2;
    OK(keel_begin(db, KEEL_RDONLY, &r1));
    uint64_t s1 = keel_txn_id(r1);
    assert_int_equal(s1, 2);
    OK(keel_db_readers(db, info, 4, &count));
    assert_int_equal(count, 1);
    assert_int_equal(info[0].pid, (int32_t)getpid());
    assert_int_equal(info[0].txnid, s1);
    assert_int_equal(info[0].lag, 0);

    commit_one(db, "c");
    commit_one(db, "d");
    commit_one(db, "e");
    OK(keel_db_readers(db, info, 4, &count));
    assert_int_equal(count, 1);
    assert_int_equal(info[0].txnid, s1);
    assert_int_equal(info[0].lag, 3);

    /* a second reader, and one in another thread on another handle */
    OK(keel_begin(db, KEEL_RDONLY, &r2));
    keel_db *db2 = open_db(path, KEEL_NOSYNC);
    struct thread_reader tr = {.db = db2};
    pthread_mutex_init(&tr.mu, NULL);
    pthread_cond_init(&tr.cv, NULL);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, hold_reader, &tr), 0);
    pthread_mutex_lock(&tr.mu);
    while (tr.stage != 1)
        pthread_cond_wait(&tr.cv, &tr.mu);
    pthread_mutex_unlock(&tr.mu);
    OK(tr.rc);
    commit_one(db, "f");

    OK(keel_db_readers(db2, info, 4, &count)); /* either handle sees the same table */
    assert_int_equal(count, 3);
    int saw1 = 0, saw5 = 0;
    for (size_t i = 0; i < count; i++) {
        assert_int_equal(info[i].pid, (int32_t)getpid());
        if (info[i].txnid == s1) {
            saw1++;
            assert_int_equal(info[i].lag, 4);
        } else {
            assert_int_equal(info[i].txnid, 5);
            assert_int_equal(info[i].lag, 1);
            saw5++;
        }
    }
    assert_int_equal(saw1, 1);
    assert_int_equal(saw5, 2);
    /* fewer slots than readers: count says how many there are */
    keel_reader_info one[1] = {{0}};
    OK(keel_db_readers(db, one, 1, &count));
    assert_int_equal(count, 3);
    assert_true(one[0].txnid == s1 || one[0].txnid == 5);
    OK(keel_db_readers(db, NULL, 0, &count));
    assert_int_equal(count, 3);

    keel_abort(r1);
    OK(keel_db_readers(db, info, 4, &count));
    assert_int_equal(count, 2);
    pthread_mutex_lock(&tr.mu);
    tr.stage = 2;
    pthread_cond_broadcast(&tr.cv);
    while (tr.stage != 3)
        pthread_cond_wait(&tr.cv, &tr.mu);
    pthread_mutex_unlock(&tr.mu);
    pthread_join(th, NULL);
    OK(keel_db_readers(db, info, 4, &count));
    assert_int_equal(count, 1);
    assert_int_equal(info[0].txnid, 5);
    keel_abort(r2);
    OK(keel_db_readers(db, info, 4, &count));
    assert_int_equal(count, 0);
    pthread_mutex_destroy(&tr.mu);
    pthread_cond_destroy(&tr.cv);
    keel_close(db2);
    keel_close(db);
    tu_remove(path);
}

/* ---- the read cache (txn.c): a thread keeps its read txn object and slot ---- */

struct cache_reader {
    keel_db *db;
    int txns;
    _Atomic int *failures;
    pthread_barrier_t *hold; /* NULL: end at once */
};

/* txns read txns, each checking that a == b (the writer keeps them equal) */
static void *cache_reader_main(void *arg)
{
    struct cache_reader *a = arg;
    for (int i = 0; i < a->txns; i++) {
        keel_txn *r;
        keel_val va, vb;
        int rc = keel_begin(a->db, KEEL_RDONLY, &r);
        if (rc) {
            if (atomic_fetch_add(a->failures, 1) == 0)
                fprintf(stderr, "read cache: keel_begin: %s (%s)\n", keel_strerror(rc), keel_error_detail());
            continue;
        }
        int ra = keel_get(r, 0, tu_val("a"), &va), rb = keel_get(r, 0, tu_val("b"), &vb);
        if (ra || rb || va.len != vb.len || memcmp(va.data, vb.data, va.len))
            if (atomic_fetch_add(a->failures, 1) == 0)
                fprintf(stderr, "read cache: get a %d, b %d, txn %llu\n", ra, rb, (unsigned long long)keel_txn_id(r));
        keel_abort(r);
    }
    if (a->hold) /* stay alive holding the kept slot until every thread has read */
        pthread_barrier_wait(a->hold);
    return NULL;
}

static void put_pair(keel_db *db, int i)
{
    keel_txn *w;
    OK(keel_begin(db, 0, &w));
    OK(keel_put(w, 0, tu_val("a"), (keel_val){&i, sizeof i}, 0));
    OK(keel_put(w, 0, tu_val("b"), (keel_val){&i, sizeof i}, 0));
    OK(keel_commit(w));
}

static void test_read_cache(void **state)
{
    (void)state;
    tu_path(path, sizeof path, "mvcc-read-cache");
    keel_options o = {.flags = KEEL_NOSYNC, .max_readers = 4};
    keel_db *db;
    OK(keel_open(path, &o, &db));
    put_pair(db, 0);

    /* an ended read txn, kept for this thread, is still a finished txn */
    keel_txn *r;
    keel_val v;
    OK(keel_begin(db, KEEL_RDONLY, &r));
    keel_cursor *c;
    OK(keel_cursor_open(r, 0, &c));
    keel_val k;
    OK(keel_cursor_first(c, &k, &v));
    keel_abort(r);
    assert_int_equal(keel_get(r, 0, tu_val("a"), &v), KEEL_BADTXN);
    assert_int_equal(keel_cursor_next(c, &k, &v), KEEL_BADCURSOR);
    keel_cursor_close(c);
    size_t count = 9;
    OK(keel_db_readers(db, NULL, 0, &count));
    assert_int_equal(count, 0); /* the kept slot publishes nothing */
    /* ... and the next read txn of the thread sees the newest commit */
    put_pair(db, 7);
    OK(keel_begin(db, KEEL_RDONLY, &r));
    OK(keel_get(r, 0, tu_val("a"), &v));
    assert_int_equal(*(const int *)v.data, 7);
    keel_abort(r);

    /* eight threads alive at once, each keeping a slot, on four slots: the
     * ones that find none free take back the kept ones */
    _Atomic int failures = 0;
    enum { HOLDERS = 8 };
    pthread_barrier_t hold;
    pthread_barrier_init(&hold, NULL, HOLDERS + 1);
    pthread_t th[24];
    struct cache_reader ca[24];
    for (int i = 0; i < HOLDERS; i++) {
        ca[i] = (struct cache_reader){db, 1, &failures, &hold};
        assert_int_equal(pthread_create(&th[i], NULL, cache_reader_main, &ca[i]), 0);
    }
    pthread_barrier_wait(&hold);
    for (int i = 0; i < HOLDERS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&hold);
    assert_int_equal(atomic_load(&failures), 0);
    keel_close(db);

    /* more threads than cache entries, reading while a writer commits; the
     * handle closes with their kept txns in the cache.  A database of its
     * own: the lock file above keeps its 4 slots while it exists, and 24
     * threads in txns at once on 4 slots may rightly find none free. */
    tu_remove(path);
    tu_path(path, sizeof path, "mvcc-read-cache-threads");
    o.max_readers = 0;
    OK(keel_open(path, &o, &db));
    put_pair(db, 0);
    int nthreads = 24, txns = (int)(300 * tu_scale());
    for (int i = 0; i < nthreads; i++) {
        ca[i] = (struct cache_reader){db, txns, &failures, NULL};
        assert_int_equal(pthread_create(&th[i], NULL, cache_reader_main, &ca[i]), 0);
    }
    for (int i = 1; i <= 200; i++)
        put_pair(db, i);
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&failures), 0);
    OK(keel_db_readers(db, NULL, 0, &count));
    assert_int_equal(count, 0);
    expect_clean(db);
    keel_close(db);
    tu_remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_isolation),
        cmocka_unit_test(test_visibility),
        cmocka_unit_test(test_concurrent_readers),
        cmocka_unit_test(test_page_reuse),
        cmocka_unit_test(test_shrink),
        cmocka_unit_test(test_readers_list),
        cmocka_unit_test(test_read_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
