/*
 * test_multiproc.c — several real processes (fork) sharing one database
 * through the lock file:
 *
 *   bank          one writer moves money between accounts, three readers
 *                 in other processes sum them: the sum never changes and
 *                 each reader's snapshot ids never go backwards
 *   visibility    a commit acknowledged through a pipe is seen by every
 *                 read txn begun afterwards, in this process and another
 *   dead_reader   kill -9 of a reader holding a snapshot: its slot is freed
 *                 by the next writer and the file stops growing
 *   dead_readers_full  a table full of killed readers: the next reader
 *                 frees their slots
 *   slot_claim    a reader preempted between claiming a slot freed from a
 *                 dead reader and storing its start time is not taken for
 *                 dead (white-box: the slot layout of doc/format.md)
 *   dead_writer   kill -9 of a writer at random points (in txns, in
 *                 commits): the next writer gets the lock (robust mutex),
 *                 the file checks clean, the counter is the last
 *                 acknowledged commit or the one in flight
 *   two_handles   one file opened twice in a process; handles across fork()
 *   bad_lockfile  garbage or truncated lock files give KEEL_LOCKFILE; one
 *                 left by an initialiser killed before `magic` is redone
 *   growth        a reader process opened early sees a file grown by MBs
 *
 * Children never call cmocka: they report through their exit status (and a
 * line on stderr).  Every child is registered so that a failing test kills
 * and reaps the stragglers in its teardown; a watchdog alarm turns a hang
 * into a failure.  No assertion depends on timing: pipes order the steps.
 *
 * KEEL_TEST_SCALE multiplies the loop counts; KEEL_SEED fixes the randomness.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "testutil.h"

/* ---- children ------------------------------------------------------------ */

#define MAX_KIDS 16
static pid_t kids[MAX_KIDS];
static volatile const char *stage = "";
static char path[512];

/* In a child: report and exit.  The exit code is the line, folded into 1..250. */
#define CHILD_CHECK(cond)                                                                      \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "child %d: %s:%d: check failed: %s\n", (int)getpid(), __FILE__,    \
                    __LINE__, #cond);                                                          \
            _exit(1 + __LINE__ % 250);                                                         \
        }                                                                                      \
    } while (0)
#define CHILD_RC(expr, want)                                                                   \
    do {                                                                                       \
        int rc_ = (expr);                                                                      \
        if (rc_ != (want)) {                                                                   \
            fprintf(stderr, "child %d: %s:%d: %s = %d (%s), want %d\n", (int)getpid(),         \
                    __FILE__, __LINE__, #expr, rc_, keel_strerror(rc_), (want));               \
            _exit(1 + __LINE__ % 250);                                                         \
        }                                                                                      \
    } while (0)

static void register_kid(pid_t pid)
{
    for (int i = 0; i < MAX_KIDS; i++)
        if (kids[i] == 0) {
            kids[i] = pid;
            return;
        }
    fail_msg("too many children");
}

static void forget_kid(pid_t pid)
{
    for (int i = 0; i < MAX_KIDS; i++)
        if (kids[i] == pid)
            kids[i] = 0;
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "test_multiproc: watchdog: hung in stage ";
    ssize_t ignored = write(2, msg, sizeof msg - 1);
    ignored = write(2, (const char *)stage, strlen((const char *)stage));
    ignored = write(2, "\n", 1);
    (void)ignored;
    for (int i = 0; i < MAX_KIDS; i++)
        if (kids[i] > 0)
            kill(kids[i], SIGKILL);
    _exit(99);
}

/* Forks; the child gets default signal handling (cmocka's handlers would
 * longjmp into the parent's test runner) and its own watchdog. */
static pid_t spawn(void)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGALRM, SIGPIPE};
        for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
            signal(sigs[i], SIG_DFL);
        memset(kids, 0, sizeof kids);
        alarm(240);
        return 0;
    }
    register_kid(pid);
    return pid;
}

/* Waits for a child; answers its raw wait status. */
static int reap(pid_t pid)
{
    int st;
    pid_t r;
    do
        r = waitpid(pid, &st, 0);
    while (r < 0 && errno == EINTR);
    assert_int_equal(r, pid);
    forget_kid(pid);
    return st;
}

static void assert_exited_ok(pid_t pid, const char *what)
{
    int st = reap(pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        if (WIFSIGNALED(st))
            fail_msg("%s (pid %d) died of signal %d", what, (int)pid, WTERMSIG(st));
        fail_msg("%s (pid %d) exited with status %d", what, (int)pid, WEXITSTATUS(st));
    }
}

static int setup(void **state)
{
    (void)state;
    memset(kids, 0, sizeof kids);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    alarm(300);
    path[0] = 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < MAX_KIDS; i++)
        if (kids[i] > 0) {
            kill(kids[i], SIGKILL);
            waitpid(kids[i], NULL, 0);
            kids[i] = 0;
        }
    alarm(0);
    signal(SIGALRM, SIG_DFL);
    if (path[0])
        tu_remove(path);
    return 0;
}

/* ---- pipes and shared memory --------------------------------------------- */

/* 1 = got n bytes, 0 = end of file before any byte, -1 = error or short */
static int read_all(int fd, void *buf, size_t n)
{
    char *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            return got ? -1 : 0;
        got += (size_t)r;
    }
    return 1;
}

static void make_pipe(int fds[2]) { assert_int_equal(pipe(fds), 0); }

static void *shared_alloc(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    memset(p, 0, n);
    return p;
}

/* ---- database helpers ----------------------------------------------------- */

static void report(void *ctx, const char *msg)
{
    (void)ctx;
    fprintf(stderr, "check [%d]: %s\n", (int)getpid(), msg);
}

static void assert_clean(keel_db *db)
{
    uint64_t problems = 99;
    assert_int_equal(keel_check(db, report, NULL, &problems), 0);
    assert_int_equal(problems, 0);
}

static uint64_t file_size(const char *p)
{
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    return (uint64_t)st.st_size;
}

static keel_db *open_db(unsigned flags)
{
    keel_options o = {.flags = flags};
    keel_db *db = NULL;
    int rc = keel_open(path, &o, &db);
    if (rc)
        fail_msg("keel_open(%s) = %d (%s)", path, rc, keel_strerror(rc));
    return db;
}

/* In a child: open, or exit with a message. */
static keel_db *child_open(unsigned flags)
{
    keel_options o = {.flags = flags};
    keel_db *db = NULL;
    CHILD_RC(keel_open(path, &o, &db), 0);
    return db;
}

static bool readers_has(keel_db *db, int32_t pid, uint64_t txnid, size_t *count)
{
    keel_reader_info info[256];
    size_t n = 0;
    if (keel_db_readers(db, info, 256, &n) != 0)
        return false;
    if (count)
        *count = n;
    for (size_t i = 0; i < n && i < 256; i++)
        if (info[i].pid == pid && (txnid == 0 || info[i].txnid == txnid))
            return true;
    return false;
}

static void put1(keel_db *db, const char *k, const char *v);
static void assert_get(keel_txn *t, const char *k, const char *want);

/* ==== 1. bank invariant ===================================================== */

#define BANK_N 50
#define BANK_READERS 3
#define BANK_START 1000
#define BANK_TOTAL ((int64_t)BANK_N * BANK_START)

struct bank_shared {
    _Atomic int ready;       /* readers that have opened the db */
    _Atomic int writer_done; /* set by the writer after its last commit */
    _Atomic uint64_t last_txnid;
    _Atomic long reads[BANK_READERS];
    _Atomic long held[BANK_READERS]; /* read txns held across writer commits */
};

static void acct_key(char *k, int i) { snprintf(k, 16, "acct%03d", i); }

/* even accounts hold decimal text, odd ones a native int64 */
static keel_val acct_enc(int i, int64_t v, char buf[32])
{
    if (i % 2 == 0)
        return (keel_val){buf, (size_t)snprintf(buf, 32, "%" PRId64, v)};
    memcpy(buf, &v, 8);
    return (keel_val){buf, 8};
}

static bool acct_dec(int i, keel_val v, int64_t *out)
{
    if (i % 2) {
        if (v.len != 8)
            return false;
        memcpy(out, v.data, 8);
        return true;
    }
    if (v.len == 0 || v.len > 20)
        return false;
    char tmp[24];
    memcpy(tmp, v.data, v.len);
    tmp[v.len] = 0;
    char *end;
    errno = 0;
    long long x = strtoll(tmp, &end, 10);
    if (errno || *end)
        return false;
    *out = x;
    return true;
}

static int64_t acct_get(keel_txn *t, int i)
{
    char k[16];
    acct_key(k, i);
    keel_val v;
    CHILD_RC(keel_get(t, 0, tu_val(k), &v), 0);
    int64_t x;
    CHILD_CHECK(acct_dec(i, v, &x));
    return x;
}

static void acct_put(keel_txn *t, int i, int64_t x)
{
    char k[16], buf[32];
    acct_key(k, i);
    CHILD_RC(keel_put(t, 0, tu_val(k), acct_enc(i, x, buf), 0), 0);
}

static void bank_writer(struct bank_shared *sh, long txns, uint64_t seed)
{
    keel_db *db = child_open(KEEL_NOSYNC);
    /* wait (bounded) for the readers, so the txns really overlap them */
    for (int i = 0; i < 20000 && atomic_load(&sh->ready) < BANK_READERS; i++)
        usleep(500);
    uint64_t rs = seed;
    for (long n = 0; n < txns; n++) {
        keel_txn *t;
        CHILD_RC(keel_begin(db, 0, &t), 0);
        int moves = 1 + (int)(tu_rand(&rs) % 3);
        bool do_abort = tu_rand(&rs) % 10 == 0;
        for (int m = 0; m < moves; m++) {
            int a = (int)(tu_rand(&rs) % BANK_N), b = (int)(tu_rand(&rs) % BANK_N);
            if (a == b)
                b = (b + 1) % BANK_N;
            int64_t amt = (int64_t)(tu_rand(&rs) % 2000) - 500;
            acct_put(t, a, acct_get(t, a) - amt);
            if (do_abort && m == moves - 1)
                break; /* leave the txn unbalanced: an abort must hide it */
            acct_put(t, b, acct_get(t, b) + amt);
        }
        if (do_abort) {
            keel_abort(t);
            continue;
        }
        uint64_t id = keel_txn_id(t);
        CHILD_RC(keel_commit(t), 0);
        atomic_store(&sh->last_txnid, id);
    }
    atomic_store(&sh->writer_done, 1);
    keel_close(db);
    _exit(0);
}

static void bank_reader(struct bank_shared *sh, int idx, uint64_t seed)
{
    keel_db *db = child_open(0);
    atomic_fetch_add(&sh->ready, 1);
    uint64_t rs = seed, last = 0;
    bool final = false;
    for (long it = 0; it < 2000000 && !final; it++) {
        final = atomic_load(&sh->writer_done) != 0;
        keel_txn *t;
        CHILD_RC(keel_begin(db, KEEL_RDONLY, &t), 0);
        uint64_t id = keel_txn_id(t);
        CHILD_CHECK(id >= last); /* snapshots never go backwards */
        last = id;
        int64_t vals[BANK_N], sum = 0;
        for (int i = 0; i < BANK_N; i++)
            sum += vals[i] = acct_get(t, i);
        if (sum != BANK_TOTAL)
            fprintf(stderr, "reader %d: snapshot %" PRIu64 ": sum %" PRId64 "\n", idx, id, sum);
        CHILD_CHECK(sum == BANK_TOTAL);
        if (tu_rand(&rs) % 8 == 0) { /* hold the snapshot while the writer goes on */
            uint64_t seen = atomic_load(&sh->last_txnid);
            for (int spin = 0; spin < 200 && atomic_load(&sh->last_txnid) == seen &&
                               !atomic_load(&sh->writer_done);
                 spin++)
                usleep(50);
            if (atomic_load(&sh->last_txnid) != seen)
                atomic_fetch_add(&sh->held[idx], 1);
        }
        /* the same snapshot again, through a cursor: same keys, same values */
        keel_cursor *c;
        CHILD_RC(keel_cursor_open(t, 0, &c), 0);
        keel_val k, v;
        int n = 0, rc;
        int64_t sum2 = 0;
        for (rc = keel_cursor_first(c, &k, &v); rc == 0; rc = keel_cursor_next(c, &k, &v), n++) {
            char want[16];
            CHILD_CHECK(n < BANK_N);
            acct_key(want, n);
            CHILD_CHECK(k.len == strlen(want) && memcmp(k.data, want, k.len) == 0);
            int64_t x;
            CHILD_CHECK(acct_dec(n, v, &x));
            CHILD_CHECK(x == vals[n]);
            sum2 += x;
        }
        CHILD_RC(rc, KEEL_NOTFOUND);
        CHILD_CHECK(n == BANK_N && sum2 == BANK_TOTAL);
        keel_cursor_close(c);
        CHILD_CHECK(keel_txn_id(t) == id);
        keel_abort(t);
        if (final) /* begun after the writer's last commit: sees it */
            CHILD_CHECK(id >= atomic_load(&sh->last_txnid));
        atomic_fetch_add(&sh->reads[idx], 1);
    }
    CHILD_CHECK(final);
    keel_close(db);
    _exit(0);
}

static void test_bank(void **state)
{
    (void)state;
    stage = "bank";
    tu_path(path, sizeof path, "mp-bank");
    uint64_t seed = tu_seed(0xB4A7C0FFEEull);
    long txns = 3000 * tu_scale();
    keel_db *db = open_db(KEEL_NOSYNC);
    keel_txn *t;
    assert_int_equal(keel_begin(db, 0, &t), 0);
    for (int i = 0; i < BANK_N; i++) {
        char k[16], buf[32];
        acct_key(k, i);
        assert_int_equal(keel_put(t, 0, tu_val(k), acct_enc(i, BANK_START, buf), 0), 0);
    }
    assert_int_equal(keel_commit(t), 0);
    keel_close(db);

    struct bank_shared *sh = shared_alloc(sizeof *sh);
    pid_t readers[BANK_READERS];
    for (int r = 0; r < BANK_READERS; r++)
        if ((readers[r] = spawn()) == 0)
            bank_reader(sh, r, seed + 1 + (uint64_t)r);
    pid_t writer = spawn();
    if (writer == 0)
        bank_writer(sh, txns, seed);

    assert_exited_ok(writer, "bank writer");
    for (int r = 0; r < BANK_READERS; r++)
        assert_exited_ok(readers[r], "bank reader");
    print_message("bank: %ld txns, reads %ld/%ld/%ld (held across commits %ld/%ld/%ld)\n", txns,
                  (long)sh->reads[0], (long)sh->reads[1], (long)sh->reads[2], (long)sh->held[0],
                  (long)sh->held[1], (long)sh->held[2]);

    db = open_db(0);
    assert_clean(db);
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
    assert_int_equal(keel_txn_id(t), sh->last_txnid);
    int64_t sum = 0;
    for (int i = 0; i < BANK_N; i++) {
        char k[16];
        acct_key(k, i);
        keel_val v;
        int64_t x;
        assert_int_equal(keel_get(t, 0, tu_val(k), &v), 0);
        assert_true(acct_dec(i, v, &x));
        sum += x;
    }
    assert_int_equal(sum, BANK_TOTAL);
    keel_abort(t);
    keel_close(db);
    munmap(sh, sizeof *sh);
}

/* ==== 2. visibility ========================================================= */

struct vis_msg {
    uint64_t i, txnid;
};

static void vis_key(char *k, uint64_t i) { snprintf(k, 32, "vis%06" PRIu64, i); }

/* Checks that a read txn begun now sees key i (and its commit). */
static bool vis_sees(keel_db *db, const struct vis_msg *m)
{
    keel_txn *t;
    if (keel_begin(db, KEEL_RDONLY, &t))
        return false;
    char k[32], want[32];
    vis_key(k, m->i);
    snprintf(want, sizeof want, "value-%" PRIu64, m->i * 31);
    keel_val v;
    bool ok = keel_txn_id(t) >= m->txnid && keel_get(t, 0, tu_val(k), &v) == 0 && v.len == strlen(want) &&
              memcmp(v.data, want, v.len) == 0;
    if (!ok)
        fprintf(stderr, "[%d] key %" PRIu64 " (txn %" PRIu64 ") not visible in snapshot %" PRIu64 "\n",
                (int)getpid(), m->i, m->txnid, keel_txn_id(t));
    keel_abort(t);
    return ok;
}

static void test_visibility(void **state)
{
    (void)state;
    stage = "visibility";
    tu_path(path, sizeof path, "mp-vis");
    uint64_t count = 300 * (uint64_t)tu_scale();
    keel_db *db = open_db(KEEL_NOSYNC);
    int w2p[2], p2r[2];
    make_pipe(w2p);
    make_pipe(p2r);

    pid_t reader = spawn();
    if (reader == 0) {
        close(w2p[0]);
        close(w2p[1]);
        close(p2r[1]);
        keel_db *rdb = child_open(0);
        struct vis_msg m;
        uint64_t n = 0;
        int r;
        while ((r = read_all(p2r[0], &m, sizeof m)) == 1) {
            CHILD_CHECK(m.i == n);
            CHILD_CHECK(vis_sees(rdb, &m));
            n++;
        }
        CHILD_CHECK(r == 0 && n == count);
        keel_close(rdb);
        _exit(0);
    }
    close(p2r[0]);
    pid_t writer = spawn();
    if (writer == 0) {
        close(w2p[0]);
        close(p2r[1]);
        keel_db *wdb = child_open(KEEL_NOSYNC);
        for (uint64_t i = 0; i < count; i++) {
            keel_txn *t;
            CHILD_RC(keel_begin(wdb, 0, &t), 0);
            char k[32], v[32];
            vis_key(k, i);
            snprintf(v, sizeof v, "value-%" PRIu64, i * 31);
            CHILD_RC(keel_put(t, 0, tu_val(k), tu_val(v), 0), 0);
            struct vis_msg m = {i, keel_txn_id(t)};
            CHILD_RC(keel_commit(t), 0);
            CHILD_CHECK(tu_write_all(w2p[1], &m, sizeof m) == 0);
        }
        keel_close(wdb);
        _exit(0);
    }
    close(w2p[1]);
    struct vis_msg m;
    uint64_t n = 0;
    int r;
    while ((r = read_all(w2p[0], &m, sizeof m)) == 1) {
        assert_int_equal(m.i, n);
        assert_true(vis_sees(db, &m));
        assert_int_equal(tu_write_all(p2r[1], &m, sizeof m), 0);
        n++;
    }
    assert_int_equal(r, 0);
    assert_int_equal(n, count);
    close(w2p[0]);
    close(p2r[1]);
    assert_exited_ok(writer, "visibility writer");
    assert_exited_ok(reader, "visibility reader");
    assert_clean(db);
    keel_close(db);
}

/* ==== 3. kill -9 of a reader ================================================== */

#define DR_KEYS 64

static void dr_overwrite(keel_db *db, long commits, uint64_t *rs)
{
    char k[32], v[300];
    for (long n = 0; n < commits; n++) {
        keel_txn *t;
        assert_int_equal(keel_begin(db, 0, &t), 0);
        for (int j = 0; j < 8; j++) {
            int i = (int)(tu_rand(rs) % DR_KEYS);
            snprintf(k, sizeof k, "dr%04d", i);
            memset(v, 'a' + (int)(n % 26), sizeof v);
            assert_int_equal(keel_put(t, 0, tu_val(k), (keel_val){v, sizeof v}, 0), 0);
        }
        assert_int_equal(keel_commit(t), 0);
    }
}

static void test_dead_reader(void **state)
{
    (void)state;
    stage = "dead_reader";
    tu_path(path, sizeof path, "mp-deadreader");
    uint64_t rs = tu_seed(0xDEADBEEFull) | 1;
    keel_db *db = open_db(KEEL_NOSYNC);
    dr_overwrite(db, 1, &rs);
    keel_txn *t;
    assert_int_equal(keel_begin(db, 0, &t), 0);
    for (int i = 0; i < DR_KEYS; i++) {
        char k[32];
        snprintf(k, sizeof k, "dr%04d", i);
        assert_int_equal(keel_put(t, 0, tu_val(k), tu_val("initial"), 0), 0);
    }
    assert_int_equal(keel_commit(t), 0);

    int p[2];
    make_pipe(p);
    pid_t kid = spawn();
    if (kid == 0) {
        close(p[0]);
        keel_db *rdb = child_open(0);
        keel_txn *rt;
        CHILD_RC(keel_begin(rdb, KEEL_RDONLY, &rt), 0);
        keel_val v;
        CHILD_RC(keel_get(rt, 0, tu_val("dr0000"), &v), 0);
        CHILD_CHECK(v.len == 7 && memcmp(v.data, "initial", 7) == 0);
        uint64_t id = keel_txn_id(rt);
        CHILD_CHECK(tu_write_all(p[1], &id, sizeof id) == 0);
        for (;;)
            pause(); /* holds the snapshot until killed */
    }
    close(p[1]);
    uint64_t snap = 0;
    assert_int_equal(read_all(p[0], &snap, sizeof snap), 1);
    close(p[0]);
    assert_true(readers_has(db, kid, snap, NULL));

    /* While the live reader pins its snapshot, overwrites cannot reuse pages:
     * the file grows.  This shows the measurement below can see a leak. */
    long pinned_commits = 300;
    uint64_t s0 = file_size(path);
    dr_overwrite(db, pinned_commits, &rs);
    uint64_t s1 = file_size(path);
    assert_true(readers_has(db, kid, snap, NULL));
    print_message("dead_reader: %ld commits with a live reader: file %" PRIu64 " -> %" PRIu64 " bytes\n",
                  pinned_commits, s0, s1);
    assert_true(s1 >= s0 + ((uint64_t)1 << 20));

    kill(kid, SIGKILL);
    int st = reap(kid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

    /* a write txn frees the dead slot */
    assert_int_equal(keel_begin(db, 0, &t), 0);
    assert_false(readers_has(db, kid, 0, NULL));
    assert_int_equal(keel_put(t, 0, tu_val("after"), tu_val("kill"), 0), 0);
    assert_int_equal(keel_commit(t), 0);
    size_t nreaders = 99;
    assert_false(readers_has(db, kid, 0, &nreaders));
    assert_int_equal(nreaders, 0);

    /* steady overwrites: after a warm-up the file stays put */
    long more = 2000 * tu_scale();
    dr_overwrite(db, 200, &rs);
    uint64_t warm = file_size(path);
    dr_overwrite(db, more, &rs);
    uint64_t end = file_size(path);
    print_message("dead_reader: after kill: warm %" PRIu64 " bytes, after %ld more commits %" PRIu64 "\n",
                  warm, more, end);
    /* the pinned rate would add (s1-s0)/300 per commit, i.e. megabytes */
    assert_true(end <= warm + ((uint64_t)1 << 20));
    assert_clean(db);
    keel_close(db);
}

/* A reader table full of killed readers: the next reader frees their slots. */
static void test_dead_readers_full(void **state)
{
    (void)state;
    stage = "dead_readers_full";
    tu_path(path, sizeof path, "mp-readersfull");
    enum { SLOTS = 4 };
    keel_options o = {.max_readers = SLOTS, .flags = KEEL_NOSYNC};
    keel_db *db;
    assert_int_equal(keel_open(path, &o, &db), 0); /* creates the lock file: 4 slots */
    put1(db, "k", "v");
    int p[2];
    make_pipe(p);
    pid_t kid[SLOTS];
    for (int i = 0; i < SLOTS; i++) {
        if ((kid[i] = spawn()) == 0) {
            close(p[0]);
            keel_db *rdb = child_open(0);
            keel_txn *t;
            CHILD_RC(keel_begin(rdb, KEEL_RDONLY, &t), 0);
            char one = 1;
            CHILD_CHECK(tu_write_all(p[1], &one, 1) == 0);
            for (;;)
                pause();
        }
        char one;
        assert_int_equal(read_all(p[0], &one, 1), 1);
    }
    close(p[0]);
    close(p[1]);
    keel_txn *t;
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), KEEL_READERS_FULL);
    size_t n = 0;
    assert_int_equal(keel_db_readers(db, NULL, 0, &n), 0);
    assert_int_equal(n, SLOTS);
    for (int i = 0; i < SLOTS; i++) {
        kill(kid[i], SIGKILL);
        int st = reap(kid[i]);
        assert_true(WIFSIGNALED(st));
    }
    /* no commit since: the dead snapshots are the newest, only a full table
     * makes them worth a liveness check */
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
    assert_get(t, "k", "v");
    assert_int_equal(keel_db_readers(db, NULL, 0, &n), 0);
    assert_int_equal(n, 1);
    keel_abort(t);
    put1(db, "k", "w");
    assert_clean(db);
    keel_close(db);
}

/* A reader slot as doc/format.md (section 11) lays it out. */
struct slot_view {
    _Atomic uint64_t owner, txnid;
    _Atomic int64_t since;
    _Atomic int32_t pid;
    uint8_t pad[36];
};
_Static_assert(sizeof(struct slot_view) == 64, "reader slot is 64 bytes");

/* Liveness is the slot's byte lock, never the pid: a live reader whose pid
 * field means nothing here (another PID namespace: simulated by rewriting
 * it to a pid no process has) keeps its snapshot, a dead one loses its slot,
 * and a process that claimed a slot and stopped before locking its byte
 * pins nothing. */
static void test_slot_claim(void **state)
{
    (void)state;
    stage = "slot_claim";
    tu_path(path, sizeof path, "mp-slotclaim");
    char lpath[600];
    snprintf(lpath, sizeof lpath, "%s-lock", path);
    keel_db *db = open_db(KEEL_NOSYNC);
    put1(db, "a", "1");
    int fd = open(lpath, O_RDWR);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_true(st.st_size >= 128 + 64);
    size_t nslots = ((size_t)st.st_size - 128) / 64;
    uint8_t *map = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(map != MAP_FAILED);
    close(fd);
    struct slot_view *slots = (struct slot_view *)(map + 128);

    /* a live reader in "another namespace" holds snapshot of a=1 */
    int p[2], q[2];
    make_pipe(p);
    make_pipe(q);
    pid_t reader = spawn();
    if (reader == 0) {
        keel_db *rdb = child_open(0);
        keel_txn *t;
        CHILD_RC(keel_begin(rdb, KEEL_RDONLY, &t), 0);
        char one = 1;
        CHILD_CHECK(tu_write_all(p[1], &one, 1) == 0);
        CHILD_CHECK(read_all(q[0], &one, 1) == 1); /* the parent overwrote a many times */
        keel_val v;
        CHILD_RC(keel_get(t, 0, tu_val("a"), &v), 0);
        CHILD_CHECK(v.len == 1 && memcmp(v.data, "1", 1) == 0);
        keel_abort(t);
        keel_close(rdb);
        _exit(0);
    }
    char byte;
    assert_int_equal(read_all(p[0], &byte, 1), 1);
    size_t idx = nslots;
    for (size_t i = 0; i < nslots; i++)
        if (slots[i].pid == reader && slots[i].txnid != 0)
            idx = i;
    assert_true(idx < nslots);
    slots[idx].pid = 0x7ffffff0; /* no such process here */
    for (int i = 0; i < 50; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i + 2);
        put1(db, "a", v); /* each commit frees the page of the last: only the reader's slot protects it */
    }
    assert_true(slots[idx].owner != 0);
    byte = 1;
    assert_int_equal(tu_write_all(q[1], &byte, 1), 0);
    assert_exited_ok(reader, "slot_claim reader");

    /* a reader dies holding a snapshot; a writer frees its slot */
    pid_t dead = spawn();
    if (dead == 0) {
        keel_db *rdb = child_open(0);
        keel_txn *t;
        CHILD_RC(keel_begin(rdb, KEEL_RDONLY, &t), 0);
        char one = 1;
        CHILD_CHECK(tu_write_all(p[1], &one, 1) == 0);
        for (;;)
            pause();
    }
    assert_int_equal(read_all(p[0], &byte, 1), 1);
    idx = nslots;
    for (size_t i = 0; i < nslots; i++)
        if (slots[i].pid == dead && slots[i].txnid != 0)
            idx = i;
    assert_true(idx < nslots);
    kill(dead, SIGKILL);
    reap(dead);
    put1(db, "b", "2");
    keel_txn *w;
    assert_int_equal(keel_begin(db, 0, &w), 0);
    keel_abort(w);
    assert_int_equal(slots[idx].owner, 0);

    /* a new reader claims it and stops before locking its byte: it pins
     * nothing (txnid 0), and a writer leaves the claim alone */
    pid_t claimer = spawn();
    if (claimer == 0) {
        uint64_t zero = 0;
        CHILD_CHECK(atomic_compare_exchange_strong(&slots[idx].owner, &zero, 0x1234));
        char one = 1;
        CHILD_CHECK(tu_write_all(p[1], &one, 1) == 0);
        for (;;)
            pause();
    }
    assert_int_equal(read_all(p[0], &byte, 1), 1);
    put1(db, "c", "3");
    assert_int_equal(keel_begin(db, 0, &w), 0); /* computes the oldest snapshot */
    keel_abort(w);
    assert_int_equal(slots[idx].owner, 0x1234);
    kill(claimer, SIGKILL);
    reap(claimer);
    close(p[0]);
    close(p[1]);
    close(q[0]);
    close(q[1]);
    munmap(map, (size_t)st.st_size);
    assert_clean(db);
    keel_close(db);
}

/* ==== 4. kill -9 of the writer ================================================ */

#define DW_KEYS 8
#define DW_WINDOW 20

struct dw_shared {
    _Atomic int phase; /* 0 starting, 1 in txn, 2 in commit, 3 acknowledging */
    _Atomic uint64_t in_flight;
};

static size_t dw_val(uint64_t i, int j, char *buf, size_t cap)
{
    /* lengths vary with i so pages split and merge; some values overflow */
    size_t len = (size_t)((i * 37 + (uint64_t)j * 101) % 700);
    if (j == 0)
        len = (size_t)((i * 7919) % 30000); /* overflow runs of changing length */
    if (len + 1 > cap)
        len = cap - 1;
    int n = snprintf(buf, cap, "%" PRIu64 ":%d:", i, j);
    for (size_t x = (size_t)n; x < len; x++)
        buf[x] = (char)('a' + (i + x) % 26);
    return len > (size_t)n ? len : (size_t)n;
}

static uint64_t dw_counter(keel_txn *t, bool *found)
{
    keel_val v;
    int rc = keel_get(t, 0, tu_val("counter"), &v);
    *found = rc == 0;
    if (rc)
        return 0;
    char tmp[32];
    if (v.len == 0 || v.len >= sizeof tmp)
        return UINT64_MAX;
    memcpy(tmp, v.data, v.len);
    tmp[v.len] = 0;
    return strtoull(tmp, NULL, 10);
}

/* Everything derived from counter c is as txn c left it. */
static bool dw_consistent(keel_txn *t, uint64_t c)
{
    static char want[32768];
    char k[32];
    keel_val v;
    for (int j = 0; j < DW_KEYS; j++) {
        snprintf(k, sizeof k, "key%d", j);
        size_t len = dw_val(c, j, want, sizeof want);
        if (keel_get(t, 0, tu_val(k), &v) || v.len != len || memcmp(v.data, want, len)) {
            fprintf(stderr, "dead_writer: %s inconsistent with counter %" PRIu64 "\n", k, c);
            return false;
        }
    }
    /* txn i inserts n<i> and deletes n<i-DW_WINDOW> */
    for (uint64_t i = c >= DW_WINDOW + 2 ? c - DW_WINDOW - 2 : 1; i <= c + 2; i++) {
        snprintf(k, sizeof k, "n%010" PRIu64, i);
        bool want_present = i <= c && i + DW_WINDOW > c;
        int rc = keel_get(t, 0, tu_val(k), &v);
        if ((rc == 0) != want_present) {
            fprintf(stderr, "dead_writer: %s %s with counter %" PRIu64 "\n", k,
                    rc == 0 ? "present" : "absent", c);
            return false;
        }
    }
    return true;
}

static void dw_writer(struct dw_shared *sh, int ackfd, unsigned flags)
{
    keel_db *db = child_open(flags);
    keel_txn *t;
    CHILD_RC(keel_begin(db, KEEL_RDONLY, &t), 0);
    bool found;
    uint64_t c0 = dw_counter(t, &found);
    keel_abort(t);
    CHILD_CHECK(tu_write_all(ackfd, &c0, sizeof c0) == 0); /* ready, starting after c0 */
    static char buf[32768];
    for (uint64_t i = c0 + 1; i < c0 + 1000000; i++) {
        atomic_store(&sh->in_flight, i);
        atomic_store(&sh->phase, 1);
        CHILD_RC(keel_begin(db, 0, &t), 0);
        char k[32], v[32];
        for (int j = 0; j < DW_KEYS; j++) {
            snprintf(k, sizeof k, "key%d", j);
            size_t len = dw_val(i, j, buf, sizeof buf);
            CHILD_RC(keel_put(t, 0, tu_val(k), (keel_val){buf, len}, 0), 0);
        }
        snprintf(k, sizeof k, "n%010" PRIu64, i);
        CHILD_RC(keel_put(t, 0, tu_val(k), tu_val("x"), 0), 0);
        if (i > DW_WINDOW) {
            snprintf(k, sizeof k, "n%010" PRIu64, i - DW_WINDOW);
            int rc = keel_del(t, 0, tu_val(k));
            CHILD_CHECK(rc == 0 || rc == KEEL_NOTFOUND);
        }
        snprintf(v, sizeof v, "%" PRIu64, i);
        CHILD_RC(keel_put(t, 0, tu_val("counter"), tu_val(v), 0), 0);
        atomic_store(&sh->phase, 2);
        CHILD_RC(keel_commit(t), 0);
        atomic_store(&sh->phase, 3);
        CHILD_CHECK(tu_write_all(ackfd, &i, sizeof i) == 0);
    }
    _exit(0);
}

/* Opens, begins a write txn (the lock must come back), checks. */
static void dw_verify(keel_db *db, uint64_t lo, uint64_t hi, uint64_t *counter)
{
    keel_txn *t;
    assert_int_equal(keel_begin(db, 0, &t), 0);
    keel_abort(t);
    assert_clean(db);
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
    bool found;
    uint64_t c = dw_counter(t, &found);
    if (!found)
        c = 0;
    if (c < lo || c > hi)
        fail_msg("dead_writer: counter %" PRIu64 ", want %" PRIu64 "..%" PRIu64, c, lo, hi);
    assert_true(c == 0 || dw_consistent(t, c));
    keel_abort(t);
    *counter = c;
}

static void test_dead_writer(void **state)
{
    (void)state;
    stage = "dead_writer";
    tu_path(path, sizeof path, "mp-deadwriter");
    uint64_t rs = tu_seed(0x5EEDull) | 1;
    long rounds = 30 * tu_scale();
    struct dw_shared *sh = shared_alloc(sizeof *sh);
    int phases[4] = {0};
    uint64_t counter = 0, acked_total = 0, unacked = 0;
    keel_db *keep = NULL; /* held across the kill, so the lock file is not reinitialised */
    bool surfaces = false; /* the last kill may have left an unacknowledged commit to surface */
    for (long round = 0; round < rounds; round++) {
        /* every third round nobody else has the db open: the writer is the
         * sole user (it reinitialises the lock file) and so is the verifier */
        bool hold = round % 3 != 2;
        if (hold && !keep)
            keep = open_db(0);
        if (!hold && keep) {
            keel_close(keep);
            keep = NULL;
        }
        /* A writer killed in its commit's flush can leave its meta in the
         * file, not yet visible; the next first opener makes it durable and
         * visible (it was never acknowledged).  Settled here, before the
         * writer (the first opener this round) would. */
        if (!hold && surfaces) {
            stage = "dead_writer: first open after a kill in commit";
            keel_db *db = open_db(0);
            dw_verify(db, counter, counter + 1, &counter);
            keel_close(db);
            stage = "dead_writer";
        }
        atomic_store(&sh->phase, 0);
        atomic_store(&sh->in_flight, 0);
        int p[2];
        make_pipe(p);
        unsigned flags = round % 2 ? KEEL_NOSYNC : 0;
        pid_t kid = spawn();
        if (kid == 0) {
            close(p[0]);
            dw_writer(sh, p[1], flags);
        }
        close(p[1]);
        bool early = tu_rand(&rs) % 8 == 0; /* sometimes kill during open/begin */
        uint64_t c0 = counter;
        if (!early) {
            uint64_t got;
            assert_int_equal(read_all(p[0], &got, sizeof got), 1);
            assert_int_equal(got, counter);
        }
        usleep((useconds_t)(tu_rand(&rs) % (early ? 1001 : 20001)));
        kill(kid, SIGKILL);
        int st = reap(kid);
        if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL))
            fail_msg("dead_writer: writer ended with status 0x%x before the kill", st);
        int ph = atomic_load(&sh->phase);
        phases[ph]++;
        /* drain the acknowledgements: the last one is the newest durable commit */
        uint64_t last = counter, x;
        bool first = early; /* else the ready message was read above */
        int r;
        while ((r = read_all(p[0], &x, sizeof x)) == 1) {
            if (!first) {
                assert_true(x > last);
                last = x;
                acked_total++;
            } else
                assert_int_equal(x, c0);
            first = false;
        }
        close(p[0]);
        /* the acknowledgements allow last or last+1; where the writer died
         * narrows it: before keel_commit nothing of txn i is durable, after
         * keel_commit returned all of it is */
        uint64_t i = atomic_load(&sh->in_flight), lo = last, hi = last + 1;
        if (ph == 0)
            hi = c0;
        else if (ph == 1)
            hi = i - 1;
        else if (ph == 2 && i - 1 > lo)
            lo = i - 1;
        else if (ph == 3)
            lo = i;
        if (lo > hi || (ph && (i < last || i > last + 1)))
            fail_msg("dead_writer: died in phase %d of txn %" PRIu64 ", last ack %" PRIu64, ph, i, last);
        uint64_t before = counter;
        if (hold) {
            stage = "dead_writer: write txn after the kill (held handle)";
            dw_verify(keep, lo, hi, &counter);
        } else {
            stage = "dead_writer: write txn after the kill (fresh open)";
            keel_db *db = open_db(0);
            dw_verify(db, lo, hi, &counter);
            keel_close(db);
        }
        if (counter == last + 1 && counter > before)
            unacked++;
        /* a meta left by a kill in commit surfaces at the next first open,
         * however many rounds later, unless a commit went over it first */
        surfaces = (ph == 2 && counter == last) || (surfaces && hold && last == c0 && counter == c0);
        stage = "dead_writer";
    }
    if (keep)
        keel_close(keep);
    print_message("dead_writer: %ld kills (starting %d, in txn %d, in commit %d, after commit %d), "
                  "%" PRIu64 " acknowledged commits, %" PRIu64 " durable but unacknowledged, counter %" PRIu64 "\n",
                  rounds, phases[0], phases[1], phases[2], phases[3], acked_total, unacked, counter);
    /* a last check in another process, as a brand new user */
    pid_t kid = spawn();
    if (kid == 0) {
        keel_db *db = child_open(0);
        keel_txn *t;
        CHILD_RC(keel_begin(db, 0, &t), 0);
        bool found;
        uint64_t c = dw_counter(t, &found);
        CHILD_CHECK(c == counter);
        CHILD_CHECK(c == 0 || dw_consistent(t, c));
        keel_abort(t);
        uint64_t problems = 1;
        CHILD_RC(keel_check(db, report, NULL, &problems), 0);
        CHILD_CHECK(problems == 0);
        keel_close(db);
        _exit(0);
    }
    assert_exited_ok(kid, "dead_writer final checker");
    munmap(sh, sizeof *sh);
}

/* ==== 5. two handles in one process; handles across fork ===================== */

static void put1(keel_db *db, const char *k, const char *v)
{
    keel_txn *t;
    assert_int_equal(keel_begin(db, 0, &t), 0);
    assert_int_equal(keel_put(t, 0, tu_val(k), tu_val(v), 0), 0);
    assert_int_equal(keel_commit(t), 0);
}

static void assert_get(keel_txn *t, const char *k, const char *want)
{
    keel_val v;
    int rc = keel_get(t, 0, tu_val(k), &v);
    if (!want) {
        assert_int_equal(rc, KEEL_NOTFOUND);
        return;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(v.len, strlen(want));
    assert_memory_equal(v.data, want, v.len);
}

static void test_two_handles(void **state)
{
    (void)state;
    stage = "two_handles";
    tu_path(path, sizeof path, "mp-twohandles");
    keel_db *db1 = open_db(KEEL_NOSYNC), *db2 = open_db(KEEL_NOSYNC);
    put1(db1, "k", "v1");
    keel_txn *r2, *r1;
    assert_int_equal(keel_begin(db2, KEEL_RDONLY, &r2), 0);
    assert_get(r2, "k", "v1");
    uint64_t snap = keel_txn_id(r2);
    assert_int_equal(keel_begin(db1, KEEL_RDONLY, &r1), 0);
    assert_get(r1, "k", "v1");
    keel_abort(r1);
    put1(db1, "k", "v2");
    keel_close(db1);

    assert_get(r2, "k", "v1");
    assert_true(readers_has(db2, getpid(), snap, NULL));

    /* another process opening now must find the table intact (db2 still holds
     * the lock file open), and its writes must not reuse r2's pages */
    pid_t kid = spawn();
    if (kid == 0) {
        keel_db *db = child_open(KEEL_NOSYNC);
        CHILD_CHECK(readers_has(db, getppid(), snap, NULL));
        char k[32], v[200];
        for (int n = 0; n < 200; n++) {
            keel_txn *t;
            CHILD_RC(keel_begin(db, 0, &t), 0);
            for (int j = 0; j < 20; j++) {
                snprintf(k, sizeof k, "fill%03d", (n * 7 + j) % 100);
                memset(v, 'A' + n % 26, sizeof v - 1);
                v[sizeof v - 1] = 0;
                CHILD_RC(keel_put(t, 0, tu_val(k), tu_val(v), 0), 0);
            }
            CHILD_RC(keel_put(t, 0, tu_val("k"), tu_val("v3"), 0), 0);
            CHILD_RC(keel_commit(t), 0);
        }
        keel_close(db);
        _exit(0);
    }
    assert_exited_ok(kid, "two_handles writer");
    /* r2's snapshot is whole: exactly one key, with its old value */
    assert_get(r2, "k", "v1");
    keel_cursor *c;
    assert_int_equal(keel_cursor_open(r2, 0, &c), 0);
    keel_val ck, cv;
    assert_int_equal(keel_cursor_first(c, &ck, &cv), 0);
    assert_int_equal(ck.len, 1);
    assert_int_equal(keel_cursor_next(c, &ck, &cv), KEEL_NOTFOUND);
    keel_cursor_close(c);
    keel_abort(r2);

    /* db2 still writes */
    put1(db2, "k", "v4");
    assert_int_equal(keel_begin(db2, KEEL_RDONLY, &r2), 0);
    assert_get(r2, "k", "v4");
    keel_val fv;
    assert_int_equal(keel_get(r2, 0, tu_val("fill000"), &fv), 0);
    assert_int_equal(fv.len, 199);
    keel_abort(r2);
    assert_clean(db2);

    /* ---- fork with open txns: the child must not touch the parent's state ---- */
    keel_txn *rr, *w;
    assert_int_equal(keel_begin(db2, KEEL_RDONLY, &rr), 0);
    uint64_t rsnap = keel_txn_id(rr);
    assert_int_equal(keel_begin(db2, 0, &w), 0);
    assert_int_equal(keel_put(w, 0, tu_val("w"), tu_val("parent"), 0), 0);
    int c2p[2], p2c[2];
    make_pipe(c2p);
    make_pipe(p2c);
    kid = spawn();
    if (kid == 0) {
        close(c2p[0]);
        close(p2c[1]);
        keel_txn *t = NULL;
        keel_val v;
        CHILD_RC(keel_begin(db2, 0, &t), KEEL_FORKED);
        CHILD_CHECK(t == NULL);
        CHILD_RC(keel_begin(db2, KEEL_RDONLY, &t), KEEL_FORKED);
        CHILD_RC(keel_get(rr, 0, tu_val("k"), &v), KEEL_FORKED);
        CHILD_RC(keel_get(w, 0, tu_val("k"), &v), KEEL_FORKED);
        CHILD_RC(keel_put(w, 0, tu_val("w"), tu_val("child"), 0), KEEL_FORKED);
        /* ending the inherited txns frees the child's copies only */
        CHILD_RC(keel_commit(rr), KEEL_FORKED);
        CHILD_RC(keel_commit(w), KEEL_FORKED);
        keel_close(db2);
        char byte = 1;
        CHILD_CHECK(tu_write_all(c2p[1], &byte, 1) == 0);
        /* keel_open takes the writer lock (doc/format.md): wait until the
         * parent has committed */
        CHILD_CHECK(read_all(p2c[0], &byte, 1) == 1);
        keel_db *db = child_open(0);
        CHILD_CHECK(readers_has(db, getppid(), rsnap, NULL));
        CHILD_RC(keel_begin(db, KEEL_RDONLY, &t), 0);
        CHILD_RC(keel_get(t, 0, tu_val("w"), &v), 0);
        CHILD_CHECK(v.len == 6 && memcmp(v.data, "parent", 6) == 0);
        keel_abort(t);
        keel_close(db);
        _exit(0);
    }
    close(c2p[1]);
    close(p2c[0]);
    char byte;
    assert_int_equal(read_all(c2p[0], &byte, 1), 1);
    /* the parent's txns are intact: its reader slot is still published */
    assert_true(readers_has(db2, getpid(), rsnap, NULL));
    assert_get(rr, "k", "v4");
    assert_get(w, "w", "parent");
    assert_int_equal(keel_commit(w), 0);
    assert_get(rr, "w", NULL);
    assert_int_equal(tu_write_all(p2c[1], &byte, 1), 0);
    assert_exited_ok(kid, "two_handles forked child");
    close(c2p[0]);
    close(p2c[1]);
    assert_true(readers_has(db2, getpid(), rsnap, NULL));
    keel_abort(rr);

    /* the writer lock is free for another process */
    kid = spawn();
    if (kid == 0) {
        keel_db *db = child_open(0);
        keel_txn *t;
        keel_val v;
        CHILD_RC(keel_begin(db, 0, &t), 0);
        CHILD_RC(keel_get(t, 0, tu_val("w"), &v), 0);
        CHILD_CHECK(v.len == 6 && memcmp(v.data, "parent", 6) == 0);
        CHILD_RC(keel_put(t, 0, tu_val("w"), tu_val("child"), 0), 0);
        CHILD_RC(keel_commit(t), 0);
        keel_close(db);
        _exit(0);
    }
    assert_exited_ok(kid, "two_handles second child");
    assert_int_equal(keel_begin(db2, KEEL_RDONLY, &rr), 0);
    assert_get(rr, "w", "child");
    keel_abort(rr);
    assert_clean(db2);
    keel_close(db2);
}

/* ==== 6. bad lock files ====================================================== */

static void write_file(const char *p, const void *buf, size_t n)
{
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(tu_write_all(fd, buf, n), 0);
    close(fd);
}

static void *read_file(const char *p, size_t *n)
{
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    *n = (size_t)st.st_size;
    void *buf = malloc(*n + 1);
    assert_non_null(buf);
    assert_int_equal(read_all(fd, buf, *n), *n ? 1 : 0);
    close(fd);
    return buf;
}

static void expect_lockfile_error(const char *what, const void *db_bytes, size_t db_len)
{
    keel_db *db = (keel_db *)1;
    for (int ro = 0; ro < 2; ro++) {
        keel_options o = {.flags = ro ? KEEL_RDONLY : 0};
        int rc = keel_open(path, &o, &db);
        if (rc != KEEL_LOCKFILE)
            fail_msg("%s%s: keel_open = %d (%s), want KEEL_LOCKFILE", what, ro ? " (read-only)" : "", rc,
                     keel_strerror(rc));
        assert_null(db);
    }
    size_t n;
    void *now = read_file(path, &n);
    assert_int_equal(n, db_len);
    assert_memory_equal(now, db_bytes, n); /* the data file was not touched */
    free(now);
}

static void test_bad_lockfile(void **state)
{
    (void)state;
    stage = "bad_lockfile";
    tu_path(path, sizeof path, "mp-badlock");
    char lpath[600];
    snprintf(lpath, sizeof lpath, "%s-lock", path);
    keel_db *db = open_db(0);
    put1(db, "k", "v");
    keel_close(db);
    size_t db_len, lock_len;
    void *db_bytes = read_file(path, &db_len);
    void *good = read_file(lpath, &lock_len);
    assert_true(lock_len >= 128);

    /* garbage of the right size */
    void *junk = malloc(lock_len);
    assert_non_null(junk);
    memset(junk, 0xA5, lock_len);
    write_file(lpath, junk, lock_len);
    expect_lockfile_error("garbage", db_bytes, db_len);

    /* a valid file with one field damaged */
    uint8_t *bad = malloc(lock_len);
    assert_non_null(bad);
    static const size_t fields[] = {0 /* magic */, 12 /* header size */, 16 /* total size */};
    for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++) {
        memcpy(bad, good, lock_len);
        bad[fields[f]] ^= 0x40;
        write_file(lpath, bad, lock_len);
        char what[64];
        snprintf(what, sizeof what, "lock header byte %zu damaged", fields[f]);
        expect_lockfile_error(what, db_bytes, db_len);
    }
    /* max_readers of 0 */
    memcpy(bad, good, lock_len);
    memset(bad + 8, 0, 4);
    write_file(lpath, bad, lock_len);
    expect_lockfile_error("max_readers 0", db_bytes, db_len);

    /* sizes: truncated to 10 bytes, one header only, one byte too long, huge */
    write_file(lpath, good, 10);
    expect_lockfile_error("10 bytes", db_bytes, db_len);
    write_file(lpath, good, 128);
    expect_lockfile_error("header only", db_bytes, db_len);
    memcpy(bad, good, lock_len);
    write_file(lpath, bad, lock_len);
    assert_int_equal(truncate(lpath, (off_t)lock_len + 1), 0);
    expect_lockfile_error("one byte too long", db_bytes, db_len);
    assert_int_equal(truncate(lpath, (off_t)3 << 30), 0); /* sparse */
    expect_lockfile_error("3 GiB", db_bytes, db_len);

    /* An opener killed while it initialised the lock file (after the
     * ftruncate or the memset, before `magic`, which is written last) leaves
     * a zero magic: the next sole user starts over instead of failing. */
    memset(bad, 0, lock_len);
    write_file(lpath, bad, lock_len);
    db = open_db(0);
    put1(db, "z", "1");
    keel_close(db);
    memcpy(bad, good, lock_len);
    memset(bad, 0, 4);
    write_file(lpath, bad, lock_len);
    db = open_db(KEEL_RDONLY);
    keel_close(db);
    /* another version's lock file (an older library's, left behind) is
     * started over by its sole user: nobody is using it */
    memcpy(bad, good, lock_len);
    bad[4] ^= 0x40;
    write_file(lpath, bad, lock_len);
    db = open_db(0);
    put1(db, "v", "2");
    keel_close(db);
    free(db_bytes);
    db_bytes = read_file(path, &db_len);

    /* an empty lock file is a fresh one; a valid one left behind is reused */
    write_file(lpath, "", 0);
    db = open_db(0);
    keel_txn *t;
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
    assert_get(t, "k", "v");
    keel_abort(t);
    keel_close(db);
    write_file(lpath, good, lock_len);
    db = open_db(0);
    put1(db, "k2", "v2");
    assert_clean(db);
    keel_close(db);
    /* a removed lock file is recreated */
    unlink(lpath);
    db = open_db(KEEL_RDONLY);
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
    assert_get(t, "k2", "v2");
    keel_abort(t);
    keel_close(db);

    /* garbage while another process has the db open is not this test's
     * concern; garbage in a child's view must not crash it either */
    write_file(lpath, junk, lock_len);
    pid_t kid = spawn();
    if (kid == 0) {
        keel_db *d = NULL;
        CHILD_RC(keel_open(path, NULL, &d), KEEL_LOCKFILE);
        _exit(0);
    }
    assert_exited_ok(kid, "bad_lockfile child");
    free(bad);
    free(junk);
    free(good);
    free(db_bytes);
}

/* ==== 7. growth seen by a reader process ======================================= */

#define GR_VLEN 8000
#define GR_PER_BATCH 40
#define GR_BIG ((size_t)3 << 20)

struct gr_msg {
    uint64_t batches, txnid; /* batches = UINT64_MAX: done */
};

static void gr_fill(uint8_t *buf, size_t len, uint64_t idx)
{
    for (size_t j = 0; j < len; j++)
        buf[j] = (uint8_t)(idx * 131 + j * 7 + (j >> 9));
}

static bool gr_check(keel_txn *t, uint64_t idx, uint8_t *want)
{
    char k[32];
    snprintf(k, sizeof k, "gr%08" PRIu64, idx);
    keel_val v;
    if (keel_get(t, 0, tu_val(k), &v))
        return false;
    gr_fill(want, GR_VLEN, idx);
    return v.len == GR_VLEN && memcmp(v.data, want, GR_VLEN) == 0;
}

static void test_growth(void **state)
{
    (void)state;
    stage = "growth";
    tu_path(path, sizeof path, "mp-growth");
    uint64_t batches = 48 * (uint64_t)tu_scale();
    keel_db *db = open_db(KEEL_NOSYNC);
    put1(db, "start", "1");
    uint64_t size0 = file_size(path);
    int p2c[2], c2p[2];
    make_pipe(p2c);
    make_pipe(c2p);
    pid_t kid = spawn();
    if (kid == 0) {
        close(p2c[1]);
        close(c2p[0]);
        keel_db *rdb = child_open(KEEL_RDONLY);
        keel_txn *old;
        CHILD_RC(keel_begin(rdb, KEEL_RDONLY, &old), 0);
        uint8_t *want = malloc(GR_BIG);
        CHILD_CHECK(want != NULL);
        char one = 1;
        CHILD_CHECK(tu_write_all(c2p[1], &one, 1) == 0);
        struct gr_msg m;
        uint64_t seen = 0;
        int r;
        while ((r = read_all(p2c[0], &m, sizeof m)) == 1 && m.batches != UINT64_MAX) {
            keel_txn *t;
            CHILD_RC(keel_begin(rdb, KEEL_RDONLY, &t), 0);
            CHILD_CHECK(keel_txn_id(t) >= m.txnid);
            /* every key of the new batches, the first key of the older ones */
            for (uint64_t b = 0; b < m.batches; b++)
                for (uint64_t j = 0; j < (b >= seen ? GR_PER_BATCH : 1); j++)
                    CHILD_CHECK(gr_check(t, b * GR_PER_BATCH + j, want));
            if (m.batches > 4 && (seen <= 4 || m.batches == batches)) {
                keel_val v;
                CHILD_RC(keel_get(t, 0, tu_val("big"), &v), 0);
                gr_fill(want, GR_BIG, 4242);
                CHILD_CHECK(v.len == GR_BIG && memcmp(v.data, want, GR_BIG) == 0);
            }
            keel_abort(t);
            seen = m.batches;
            keel_val v; /* the old snapshot is unchanged */
            CHILD_RC(keel_get(old, 0, tu_val("gr00000000"), &v), KEEL_NOTFOUND);
            CHILD_RC(keel_get(old, 0, tu_val("start"), &v), 0);
        }
        CHILD_CHECK(r == 1 && seen == batches);
        keel_abort(old);
        /* a last full pass */
        keel_txn *t;
        CHILD_RC(keel_begin(rdb, KEEL_RDONLY, &t), 0);
        for (uint64_t i = 0; i < batches * GR_PER_BATCH; i++)
            CHILD_CHECK(gr_check(t, i, want));
        keel_abort(t);
        free(want);
        keel_close(rdb);
        _exit(0);
    }
    close(p2c[0]);
    close(c2p[1]);
    char one;
    assert_int_equal(read_all(c2p[0], &one, 1), 1);
    uint8_t *buf = malloc(GR_BIG);
    assert_non_null(buf);
    for (uint64_t b = 0; b < batches; b++) {
        keel_txn *t;
        assert_int_equal(keel_begin(db, 0, &t), 0);
        for (uint64_t j = 0; j < GR_PER_BATCH; j++) {
            uint64_t idx = b * GR_PER_BATCH + j;
            char k[32];
            snprintf(k, sizeof k, "gr%08" PRIu64, idx);
            gr_fill(buf, GR_VLEN, idx);
            assert_int_equal(keel_put(t, 0, tu_val(k), (keel_val){buf, GR_VLEN}, 0), 0);
        }
        if (b == 4) {
            gr_fill(buf, GR_BIG, 4242);
            assert_int_equal(keel_put(t, 0, tu_val("big"), (keel_val){buf, GR_BIG}, 0), 0);
        }
        struct gr_msg m = {b + 1, keel_txn_id(t)};
        assert_int_equal(keel_commit(t), 0);
        assert_int_equal(tu_write_all(p2c[1], &m, sizeof m), 0);
    }
    struct gr_msg done = {UINT64_MAX, 0};
    assert_int_equal(tu_write_all(p2c[1], &done, sizeof done), 0);
    close(p2c[1]);
    close(c2p[0]);
    assert_exited_ok(kid, "growth reader");
    uint64_t size1 = file_size(path);
    print_message("growth: file %" PRIu64 " -> %" PRIu64 " bytes under a reader process\n", size0, size1);
    assert_true(size1 >= size0 + batches * GR_PER_BATCH * GR_VLEN);
    free(buf);
    assert_clean(db);
    keel_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bank, setup, teardown),
        cmocka_unit_test_setup_teardown(test_visibility, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_reader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_readers_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slot_claim, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_writer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_handles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_lockfile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_growth, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
