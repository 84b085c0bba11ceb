/*
 * test_fault.c — fault injection through the I/O and allocation table.
 *
 *   - I/O faults: for every kind of call (pwrite/pwritev, fsync/fdatasync,
 *     ftruncate, mmap, and also open, pread, fstat) and for every N up to the
 *     number of such calls a small workload makes, the Nth call fails, once
 *     or from then on.  Every public call then answers 0 or an error (a
 *     positive errno or a KEEL_ code of the expected family) without
 *     crashing; after keel_close no descriptor and no allocation made
 *     through keel_os is left; a failed commit leaves the live db showing the
 *     last acknowledged commit; a failed sync leaves the handle answering
 *     KEEL_PANIC to every keel_begin (and to calls on txns opened before);
 *     with libc restored (os_reset) the file reopens, checks clean and holds
 *     the last acknowledged commit (after KEEL_PANIC: or the one that failed,
 *     whose meta may have reached the page cache) and takes another commit.
 *     In "once" mode at most one public call fails (besides the KEEL_PANIC
 *     that follows a failed sync): a transient failure is not sticky.
 *     While the faults run, every meta write is checked to need no more file
 *     than an fsync made durable (a grow followed by a failed commit must
 *     not let the next commit rely on fdatasync for the size).
 *   - Out of memory: the same, failing the Nth malloc/realloc; every failure
 *     answers KEEL_NOMEM.
 *   - KEEL_PANIC explicitly: a failed data sync, and a failed meta sync.
 *   - Disk full without root: a forked child under a small RLIMIT_FSIZE
 *     (SIGXFSZ ignored) commits until growth fails with EFBIG; the commit
 *     answers KEEL_FULL, the handle stays usable; the parent finds every
 *     acknowledged commit and nothing else.  Also with the limit below the
 *     current size, so that page writes fail.
 *
 * KEEL_TEST_SCALE repeats the loops with other seeds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <xxhash.h>

#include "internal.h"
#include "testutil.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void report(void *ctx, const char *msg)
{
    (void)ctx;
    fprintf(stderr, "check: %s\n", msg);
}

/* A fresh db path, in tmpfs when there is one: these tests sync a lot and
 * need no disk. */
static const char *fpath(char *buf, size_t size, const char *name)
{
    struct stat st;
    if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0) {
        snprintf(buf, size, "/dev/shm/keel-%s-%d.db", name, (int)getpid());
        tu_remove(buf);
        return buf;
    }
    return tu_path(buf, size, name);
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* ======================================================================
 * A small model: buckets 0 (default) and "b1", key ids 0..NK-1.
 * ====================================================================== */
#define NB 2
#define NK 128
struct mval {
    uint8_t present;
    uint32_t vlen;
    uint64_t vhash;
    int64_t exp;
};
struct model {
    bool bexist[NB];
    struct mval e[NB][NK];
};

static const char *bname(int b) { return b ? "b1" : NULL; }

static size_t keystr(int id, char *buf)
{
    int n = snprintf(buf, 64, "key%04d", id);
    return (size_t)n;
}

static void gen_value(uint64_t seed, uint8_t *buf, size_t len)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t r = tu_rand(&s);
        memcpy(buf + i, &r, len - i < 8 ? len - i : 8);
    }
}

struct digest_item {
    uint64_t klen, vlen, vhash;
    int64_t exp;
};
static void digest_bucket_name(XXH3_state_t *st, const char *name)
{
    uint64_t len = name ? strlen(name) : 0;
    XXH3_64bits_update(st, "B", 1);
    XXH3_64bits_update(st, &len, sizeof len);
    if (len)
        XXH3_64bits_update(st, name, len);
}
static void digest_entry(XXH3_state_t *st, const void *key, size_t klen, size_t vlen, uint64_t vhash, int64_t exp)
{
    struct digest_item it = {klen, vlen, vhash, exp};
    XXH3_64bits_update(st, "E", 1);
    XXH3_64bits_update(st, &it, sizeof it);
    XXH3_64bits_update(st, key, klen);
}

static uint64_t model_digest(const struct model *m)
{
    XXH3_state_t *st = XXH3_createState();
    XXH3_64bits_reset(st);
    char key[64];
    for (int b = 0; b < NB; b++) {
        if (b && !m->bexist[b])
            continue;
        digest_bucket_name(st, bname(b));
        for (int k = 0; k < NK; k++) {
            const struct mval *v = &m->e[b][k];
            if (v->present)
                digest_entry(st, key, keystr(k, key), v->vlen, v->vhash, v->exp);
        }
    }
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
}

static int digest_one_bucket(keel_txn *t, keel_bucket b, XXH3_state_t *st)
{
    keel_cursor *c;
    int rc = keel_cursor_open(t, b, &c);
    if (rc)
        return rc;
    keel_val k, v;
    for (rc = keel_cursor_first(c, &k, &v); rc == 0; rc = keel_cursor_next(c, &k, &v)) {
        int64_t exp = 0;
        int r2 = keel_expiry_at(t, b, k, &exp);
        if (r2) {
            rc = r2;
            break;
        }
        digest_entry(st, k.data, k.len, v.len, XXH3_64bits(v.data, v.len), exp);
    }
    keel_cursor_close(c);
    return rc == KEEL_NOTFOUND ? 0 : rc;
}

struct names {
    char n[8][KEEL_MAX_BUCKET_NAME + 1];
    int count;
};
static int collect_name(const char *name, void *ctx)
{
    struct names *ns = ctx;
    if (ns->count == 8)
        return KEEL_CORRUPTED;
    snprintf(ns->n[ns->count++], sizeof ns->n[0], "%s", name);
    return 0;
}

static int db_digest_txn(keel_txn *t, uint64_t *out)
{
    XXH3_state_t *st = XXH3_createState();
    if (!st)
        return KEEL_NOMEM;
    XXH3_64bits_reset(st);
    digest_bucket_name(st, NULL);
    int rc = digest_one_bucket(t, KEEL_DEFAULT_BUCKET, st);
    struct names ns;
    ns.count = 0;
    if (!rc)
        rc = keel_bucket_list(t, collect_name, &ns);
    for (int i = 0; !rc && i < ns.count; i++) {
        keel_bucket b;
        digest_bucket_name(st, ns.n[i]);
        rc = keel_bucket_open(t, ns.n[i], 0, &b);
        if (!rc)
            rc = digest_one_bucket(t, b, st);
    }
    *out = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return rc;
}

/* ======================================================================
 * The faulty table.
 * ====================================================================== */
enum { K_WRITE, K_SYNC, K_TRUNC, K_MMAP, K_OPEN, K_PREAD, K_FSTAT, K_MALLOC, NKINDS };
static const char *kind_name[NKINDS] = {"pwrite/pwritev", "fsync/fdatasync", "ftruncate", "mmap",
                                        "open",           "pread",           "fstat",     "malloc/realloc"};

static struct {
    long calls[NKINDS];
    int kind;     /* the kind that fails, -1 = none */
    long nth;     /* the first call (1-based) that fails */
    bool persist; /* and every one after it */
    long failed;
    long live;    /* allocations made through keel_os not yet freed */
    /* the size checker (data file only) */
    char path[512];
    int fd;
    uint64_t cur_size, size_fsynced;
    uint32_t psize;
    bool nosync;
    uint64_t meta_checks;
} F = {.kind = -1, .fd = -1};

static bool should_fail(int k)
{
    long n = ++F.calls[k];
    if (F.kind != k || n < F.nth || (n > F.nth && !F.persist))
        return false;
    F.failed++;
    return true;
}

/* errno for the Nth failure: alternate between the plausible ones */
static int fault_errno(int k)
{
    bool odd = F.nth & 1;
    switch (k) {
    case K_WRITE: return odd ? EIO : ENOSPC;
    case K_SYNC: return EIO;
    case K_TRUNC: return odd ? EFBIG : (F.nth % 4 == 0 ? EIO : ENOSPC);
    case K_MMAP: return odd ? ENOMEM : EACCES;
    case K_OPEN: return odd ? EMFILE : EACCES;
    case K_PREAD: return EIO;
    case K_FSTAT: return odd ? EIO : EOVERFLOW;
    default: return ENOMEM;
    }
}

static int f_open(const char *path, int flags, mode_t mode)
{
    if (should_fail(K_OPEN)) {
        errno = fault_errno(K_OPEN);
        return -1;
    }
    int fd = open(path, flags, mode);
    if (fd >= 0 && strcmp(path, F.path) == 0) {
        F.fd = fd;
        struct stat st;
        if (fstat(fd, &st) == 0)
            F.cur_size = F.size_fsynced = (uint64_t)st.st_size;
    }
    return fd;
}

static int f_close(int fd)
{
    if (fd == F.fd)
        F.fd = -1;
    return close(fd);
}

static ssize_t f_pread(int fd, void *buf, size_t n, off_t off)
{
    if (should_fail(K_PREAD)) {
        errno = fault_errno(K_PREAD);
        return -1;
    }
    return pread(fd, buf, n, off);
}

static void size_check(int fd, const void *buf, size_t n, off_t off)
{
    if (fd != F.fd || F.nosync || F.psize == 0 || n != 512 || (off != 0 && off != (off_t)F.psize))
        return;
    struct meta m;
    if (meta_check(buf, n, F.psize, &m))
        return;
    F.meta_checks++;
    if (m.npages * F.psize > F.size_fsynced)
        fail_msg("meta %llu needs %llu bytes, but only %llu were made durable by fsync (fault: %s #%ld%s)",
                 (unsigned long long)m.txnid, (unsigned long long)(m.npages * F.psize),
                 (unsigned long long)F.size_fsynced, F.kind >= 0 ? kind_name[F.kind] : "none", F.nth,
                 F.persist ? " on" : "");
}

static void size_written(int fd, uint64_t end)
{
    if (fd == F.fd && end > F.cur_size)
        F.cur_size = end;
}

static ssize_t f_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (should_fail(K_WRITE)) {
        errno = fault_errno(K_WRITE);
        return -1;
    }
    size_check(fd, buf, n, off);
    ssize_t r = pwrite(fd, buf, n, off);
    if (r > 0)
        size_written(fd, (uint64_t)off + (uint64_t)r);
    return r;
}

static ssize_t f_pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    if (should_fail(K_WRITE)) {
        errno = fault_errno(K_WRITE);
        return -1;
    }
    ssize_t r = pwritev(fd, iov, cnt, off);
    if (r > 0)
        size_written(fd, (uint64_t)off + (uint64_t)r);
    return r;
}

static int f_fsync(int fd)
{
    if (should_fail(K_SYNC)) {
        errno = fault_errno(K_SYNC);
        return -1;
    }
    int r = fsync(fd);
    if (r == 0 && fd == F.fd)
        F.size_fsynced = F.cur_size;
    return r;
}

static int f_fdatasync(int fd)
{
    if (should_fail(K_SYNC)) {
        errno = fault_errno(K_SYNC);
        return -1;
    }
    int r = fdatasync(fd);
    if (r == 0 && fd == F.fd && F.cur_size < F.size_fsynced)
        F.size_fsynced = F.cur_size;
    return r;
}

static int f_ftruncate(int fd, off_t len)
{
    if (should_fail(K_TRUNC)) {
        errno = fault_errno(K_TRUNC);
        return -1;
    }
    int r = ftruncate(fd, len);
    if (r == 0 && fd == F.fd)
        F.cur_size = (uint64_t)len;
    return r;
}

static int f_fstat(int fd, struct stat *st)
{
    if (should_fail(K_FSTAT)) {
        errno = fault_errno(K_FSTAT);
        return -1;
    }
    return fstat(fd, st);
}

static void *f_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (should_fail(K_MMAP)) {
        errno = fault_errno(K_MMAP);
        return MAP_FAILED;
    }
    return mmap(addr, len, prot, flags, fd, off);
}

static void *f_malloc(size_t n)
{
    if (should_fail(K_MALLOC))
        return NULL;
    void *p = malloc(n);
    if (p)
        F.live++;
    return p;
}

static void *f_realloc(void *p, size_t n)
{
    if (should_fail(K_MALLOC))
        return NULL;
    void *q = realloc(p, n);
    if (q && !p)
        F.live++;
    return q;
}

static void f_free(void *p)
{
    if (p)
        F.live--;
    free(p);
}

static void faults_arm(const char *path, int kind, long nth, bool persist, unsigned flags)
{
    memset(F.calls, 0, sizeof F.calls);
    F.kind = kind;
    F.nth = nth;
    F.persist = persist;
    F.failed = 0;
    F.live = 0;
    snprintf(F.path, sizeof F.path, "%s", path);
    F.fd = -1;
    F.psize = 4096;
    F.nosync = (flags & KEEL_NOSYNC) != 0;
    keel_os.open = f_open;
    keel_os.close = f_close;
    keel_os.pread = f_pread;
    keel_os.pwrite = f_pwrite;
    keel_os.pwritev = f_pwritev;
    keel_os.fsync = f_fsync;
    keel_os.fdatasync = f_fdatasync;
    keel_os.ftruncate = f_ftruncate;
    keel_os.fstat = f_fstat;
    keel_os.mmap = f_mmap;
    keel_os.malloc = f_malloc;
    keel_os.realloc = f_realloc;
    keel_os.free = f_free;
}

/* Stops failing, keeps counting (the workload's handle still frees through the table). */
static void faults_stop(void) { F.kind = -1; }

/* ======================================================================
 * The workload.
 * ====================================================================== */
static int64_t fixed_now = 1700000000000ll;
static int64_t fixed_clock(void *ctx)
{
    (void)ctx;
    return fixed_now;
}

static uint8_t vbuf[40000];

/* errors seen in one run */
struct run {
    int kind;
    struct model acked, pending, inflight;
    bool has_inflight; /* a commit answered KEEL_PANIC: its own state may be on disk */
    bool panicked;
    int api_failures; /* public calls that failed, KEEL_PANIC after the first not counted */
    int first_error;
    const char *where;
};

static bool is_keel_code(int rc) { return rc <= KEEL_NOTFOUND && rc >= KEEL_INCOMPATIBLE; } /* the last code */

/* Is rc an acceptable answer to a failure of this kind? */
static void check_error(struct run *r, int rc, const char *where)
{
    if (!(rc > 0 || is_keel_code(rc)))
        fail_msg("%s: %d is neither an errno nor a KEEL_ code", where, rc);
    if (rc == KEEL_PANIC && r->panicked)
        return; /* the expected echo of an earlier failed sync */
    r->api_failures++;
    if (!r->first_error) {
        r->first_error = rc;
        r->where = where;
    }
    bool ok;
    switch (r->kind) {
    case K_MALLOC: ok = rc == KEEL_NOMEM; break;
    case K_WRITE: ok = rc == EIO || rc == KEEL_FULL || rc == KEEL_PANIC || rc == ENOSPC; break; /* ENOSPC: a copy */
    case K_SYNC: ok = rc == KEEL_PANIC || rc == EIO; break; /* EIO: keel_open creating the file */
    case K_TRUNC: ok = rc == KEEL_FULL || rc == EIO || rc == EFBIG || rc == ENOSPC; break;
    case K_MMAP: /* the file's map or a copy's (KEEL_ADDRSPACE), or the memory for dirty pages (KEEL_NOMEM) */
        ok = rc == KEEL_FULL || rc == EACCES || rc == ENOMEM || rc == KEEL_ADDRSPACE || rc == KEEL_NOMEM;
        break;
    case K_OPEN: ok = rc == EMFILE || rc == EACCES; break;
    case K_PREAD: ok = rc == EIO; break;
    case K_FSTAT: ok = rc == EIO || rc == EOVERFLOW; break;
    default: ok = false;
    }
    if (!ok)
        fail_msg("%s: %s (%d) is not an answer to a failed %s", where, keel_strerror(rc), rc,
                 r->kind >= 0 ? kind_name[r->kind] : "nothing");
}

static int put(keel_txn *t, struct model *m, int b, int k, size_t vlen, uint64_t seed, int64_t ttl)
{
    char key[64];
    size_t kl = keystr(k, key);
    gen_value(seed, vbuf, vlen);
    keel_bucket h = 0;
    int rc = b ? keel_bucket_open(t, bname(b), KEEL_CREATE, &h) : 0;
    if (rc)
        return rc;
    m->bexist[b] = true;
    rc = ttl ? keel_put_ttl(t, h, (keel_val){key, kl}, (keel_val){vbuf, vlen}, ttl, 0)
             : keel_put(t, h, (keel_val){key, kl}, (keel_val){vbuf, vlen}, 0);
    if (rc == 0)
        m->e[b][k] = (struct mval){1, (uint32_t)vlen, XXH3_64bits(vbuf, vlen), ttl ? fixed_now + ttl : 0};
    return rc;
}

static int del(keel_txn *t, struct model *m, int b, int k)
{
    char key[64];
    size_t kl = keystr(k, key);
    keel_bucket h = 0;
    if (b && !m->bexist[b])
        return 0;
    int rc = b ? keel_bucket_open(t, bname(b), 0, &h) : 0;
    if (rc)
        return rc;
    rc = keel_del(t, h, (keel_val){key, kl});
    if (rc == KEEL_NOTFOUND && !m->e[b][k].present)
        rc = 0;
    if (rc == 0)
        m->e[b][k].present = 0;
    return rc;
}

#define NSTEPS 5
/* Step s of the workload on txn t; the model follows.  Returns the first error. */
static int step(int s, keel_txn *t, struct model *m, uint64_t seed)
{
    int rc = 0;
    switch (s) {
    case 0: /* small and overflow values, a bucket, expiry times */
        for (int i = 0; !rc && i < 20; i++)
            rc = put(t, m, 0, i, 20 + (size_t)i, seed + (uint64_t)i, 0);
        for (int i = 0; !rc && i < 3; i++)
            rc = put(t, m, 0, 100 + i, 5000 + 4000 * (size_t)i, seed + 50 + (uint64_t)i, 0);
        for (int i = 0; !rc && i < 5; i++)
            rc = put(t, m, 1, i, 30, seed + 60 + (uint64_t)i, 0);
        for (int i = 0; !rc && i < 2; i++)
            rc = put(t, m, 0, 40 + i, 15, seed + 70 + (uint64_t)i, 3600000);
        break;
    case 1: /* deletes, a purge, an expiry */
        for (int i = 0; !rc && i < 8; i++)
            rc = del(t, m, 0, i * 2);
        if (!rc)
            rc = keel_purge(t, 10, NULL);
        if (!rc)
            rc = put(t, m, 1, 7, 10, seed + 80, 600000);
        break;
    case 2: /* growth past the first MiB */
        for (int i = 0; !rc && i < 40; i++)
            rc = put(t, m, 0, 50 + i, 30000, seed + 100 + (uint64_t)i, 0);
        break;
    case 3: /* free most of it, drop the bucket */
        for (int k = 0; !rc && k < NK; k++)
            if (m->e[0][k].present && m->e[0][k].vlen > 1000)
                rc = del(t, m, 0, k);
        if (!rc && m->bexist[1]) {
            keel_bucket h;
            rc = keel_bucket_open(t, "b1", 0, &h);
            if (!rc)
                rc = keel_bucket_drop(t, h);
            if (!rc) {
                m->bexist[1] = false;
                memset(m->e[1], 0, sizeof m->e[1]);
            }
        }
        break;
    case 4: /* reuse of the freed pages */
        for (int i = 0; !rc && i < 30; i++)
            rc = put(t, m, 0, 20 + i, 100 + (size_t)i * 10, seed + 200 + (uint64_t)i, 0);
        break;
    }
    return rc;
}

/* The base state every run starts from (a file that already holds data). */
static uint8_t *base_file;
static size_t base_size;
static struct model base_model;
/* The base file is longer than its pages need, as a commit that failed
 * after growing it leaves it: the first commit truncates it (another
 * ftruncate to fail, one whose failure is harmless). */
#define BASE_SLACK ((off_t)8 << 20)

static void write_file(const char *path, const uint8_t *buf, size_t n, off_t len)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    size_t done = 0;
    while (done < n) {
        ssize_t r = pwrite(fd, buf + done, n - done, (off_t)done);
        assert_true(r > 0);
        done += (size_t)r;
    }
    assert_int_equal(ftruncate(fd, len), 0);
    close(fd);
}

static void make_base(const char *path)
{
    tu_remove(path);
    keel_options o = {.clock = fixed_clock};
    keel_db *db;
    assert_int_equal(keel_open(path, &o, &db), 0);
    memset(&base_model, 0, sizeof base_model);
    keel_txn *t;
    assert_int_equal(keel_begin(db, 0, &t), 0);
    for (int i = 0; i < 30; i++)
        assert_int_equal(put(t, &base_model, 0, i, 40, 1000 + (uint64_t)i, 0), 0);
    assert_int_equal(put(t, &base_model, 0, 120, 9000, 1100, 0), 0);
    assert_int_equal(keel_commit(t), 0);
    keel_close(db);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    base_size = (size_t)st.st_size;
    base_file = malloc(base_size);
    assert_non_null(base_file);
    assert_true(pread(fd, base_file, base_size, 0) == (ssize_t)base_size);
    close(fd);
    tu_remove(path);
}

static uint64_t seed_base; /* KEEL_SEED, and another per KEEL_TEST_SCALE round */

struct totals {
    long runs, api_failures, panics, inflight_found, open_failed, copies;
};
static char copy_path[2][300];
static bool copy_ok[2];
static uint64_t copy_digest[2];

/*
 * One run: the workload with the Nth call of `kind` failing (once, or from
 * then on), then every check.  kind -1 counts the calls of a clean run.
 */
static void fault_run(const char *path, int kind, long nth, bool persist, bool fresh, unsigned flags,
                      struct totals *tot)
{
    tu_remove(path);
    if (!fresh)
        write_file(path, base_file, base_size, (off_t)base_size + BASE_SLACK);
    struct run r;
    memset(&r, 0, sizeof r);
    r.kind = kind;
    for (int c = 0; c < 2; c++) {
        copy_ok[c] = false;
        snprintf(copy_path[c], sizeof copy_path[c], "%s.copy%d", path, c);
    }
    if (!fresh)
        r.acked = base_model;
    int fds0 = count_fds();
    uint64_t seed = seed_base + (uint64_t)nth * 7 + (persist ? 3 : 0);
    keel_options o = {.clock = fixed_clock, .flags = flags};
    faults_arm(path, kind, nth, persist, flags);
    keel_db *db = NULL;
    int rc = keel_open(path, &o, &db);
    if (rc) {
        check_error(&r, rc, "keel_open");
        assert_null(db);
        tot->open_failed++;
    } else {
        for (int s = 0; s < NSTEPS; s++) {
            keel_txn *t, *reader = NULL;
            rc = keel_begin(db, 0, &t);
            if (rc) {
                check_error(&r, rc, "keel_begin");
                if (r.panicked)
                    assert_int_equal(rc, KEEL_PANIC);
                continue;
            }
            r.pending = r.acked;
            rc = step(s, t, &r.pending, seed + (uint64_t)s * 1000);
            if (rc) {
                check_error(&r, rc, "a write in a txn");
                keel_abort(t);
                continue;
            }
            /* a reader opened before the commit: it sees the last acknowledged state,
             * or answers KEEL_PANIC once a sync failed */
            int rrc = keel_begin(db, KEEL_RDONLY, &reader);
            if (rrc) {
                check_error(&r, rrc, "keel_begin(RDONLY)");
                reader = NULL;
            }
            rc = keel_commit(t);
            if (rc == 0) {
                r.acked = r.pending;
            } else {
                check_error(&r, rc, "keel_commit");
                if (rc == KEEL_PANIC && !r.panicked) {
                    r.panicked = true;
                    r.inflight = r.pending;
                    r.has_inflight = true;
                    tot->panics++;
                    /* every later keel_begin answers KEEL_PANIC, and so do older txns */
                    keel_txn *x = NULL;
                    assert_int_equal(keel_begin(db, 0, &x), KEEL_PANIC);
                    assert_null(x);
                    assert_int_equal(keel_begin(db, KEEL_RDONLY, &x), KEEL_PANIC);
                    if (reader) {
                        keel_val v;
                        assert_int_equal(keel_get(reader, 0, tu_val("key0001"), &v), KEEL_PANIC);
                    }
                }
            }
            if (reader)
                keel_abort(reader);
            /* the live db shows exactly the acknowledged state */
            if (!r.panicked) {
                keel_txn *rt;
                rc = keel_begin(db, KEEL_RDONLY, &rt);
                if (rc) {
                    check_error(&r, rc, "keel_begin(RDONLY)");
                } else {
                    uint64_t d;
                    rc = db_digest_txn(rt, &d);
                    keel_abort(rt);
                    if (rc)
                        check_error(&r, rc, "reading");
                    else if (d != model_digest(&r.acked))
                        fail_msg("%s #%ld%s: after step %d the live db differs from the last acknowledged commit",
                                 kind >= 0 ? kind_name[kind] : "none", nth, persist ? " on" : "", s);
                }
            }
        }
        /* hot copies, plain and compact: each works, or fails and leaves no file */
        for (int c = 0; c < 2 && !r.panicked; c++) {
            tu_remove(copy_path[c]);
            rc = keel_copy(db, copy_path[c], c ? KEEL_COPY_COMPACT : 0);
            if (rc) {
                check_error(&r, rc, "keel_copy");
                struct stat st;
                char lock[640];
                snprintf(lock, sizeof lock, "%s-lock", copy_path[c]);
                bool left_db = stat(copy_path[c], &st) == 0, left_lock = stat(lock, &st) == 0;
                if (left_db || left_lock)
                    fail_msg("%s #%ld%s: keel_copy failed (%s) and left %s behind", kind >= 0 ? kind_name[kind] : "none",
                             nth, persist ? " on" : "", keel_strerror(rc), left_db ? copy_path[c] : lock);
            } else {
                copy_ok[c] = true;
                copy_digest[c] = model_digest(&r.acked);
            }
        }
        keel_close(db);
    }
    faults_stop();
    /* nothing left behind */
    long live = F.live;
    os_reset();
    if (live != 0)
        fail_msg("%s #%ld%s: %ld allocations through keel_os left after keel_close", kind >= 0 ? kind_name[kind] : "none",
                 nth, persist ? " on" : "", live);
    int fds1 = count_fds();
    if (fds1 != fds0)
        fail_msg("%s #%ld%s: %d descriptors before, %d after", kind >= 0 ? kind_name[kind] : "none", nth,
                 persist ? " on" : "", fds0, fds1);
    if (kind >= 0 && F.failed > 0 && !persist) {
        /* a transient failure is not sticky: one failed call (and the KEEL_PANIC echoes) */
        if (r.api_failures > 1)
            fail_msg("%s #%ld once: %d public calls failed (first: %s at %s)", kind_name[kind], nth, r.api_failures,
                     keel_strerror(r.first_error), r.where);
    }
    /* reopen with libc: the last acknowledged commit, or the one that panicked */
    keel_db *db2;
    rc = keel_open(path, NULL, &db2);
    if (rc)
        fail_msg("%s #%ld%s: reopening: %s (first error %s at %s)", kind >= 0 ? kind_name[kind] : "none", nth,
                 persist ? " on" : "", keel_strerror(rc), keel_strerror(r.first_error), r.where ? r.where : "-");
    uint64_t problems = 99;
    assert_int_equal(keel_check(db2, report, NULL, &problems), 0);
    assert_int_equal(problems, 0);
    keel_options o2 = {.clock = fixed_clock};
    keel_close(db2);
    assert_int_equal(keel_open(path, &o2, &db2), 0);
    keel_txn *t;
    assert_int_equal(keel_begin(db2, KEEL_RDONLY, &t), 0);
    uint64_t d;
    assert_int_equal(db_digest_txn(t, &d), 0);
    keel_abort(t);
    if (d == model_digest(&r.acked)) {
        /* fine */
    } else if (r.has_inflight && d == model_digest(&r.inflight)) {
        tot->inflight_found++;
    } else {
        fail_msg("%s #%ld%s: the reopened file holds neither the last acknowledged commit nor the failed one "
                 "(first error %s at %s)",
                 kind >= 0 ? kind_name[kind] : "none", nth, persist ? " on" : "", keel_strerror(r.first_error),
                 r.where ? r.where : "-");
    }
    /* and it takes another commit */
    assert_int_equal(keel_begin(db2, 0, &t), 0);
    assert_int_equal(keel_put(t, 0, tu_val("after"), tu_val("fault"), 0), 0);
    assert_int_equal(keel_commit(t), 0);
    assert_int_equal(keel_check(db2, report, NULL, &problems), 0);
    assert_int_equal(problems, 0);
    keel_close(db2);
    for (int c = 0; c < 2; c++) {
        if (copy_ok[c]) { /* the copy holds the state it was made of */
            assert_int_equal(keel_open(copy_path[c], &o2, &db2), 0);
            assert_int_equal(keel_check(db2, report, NULL, &problems), 0);
            assert_int_equal(problems, 0);
            assert_int_equal(keel_begin(db2, KEEL_RDONLY, &t), 0);
            assert_int_equal(db_digest_txn(t, &d), 0);
            keel_abort(t);
            if (d != copy_digest[c])
                fail_msg("%s #%ld%s: the %s copy differs from the state it was made of",
                         kind >= 0 ? kind_name[kind] : "none", nth, persist ? " on" : "", c ? "compact" : "plain");
            keel_close(db2);
            tot->copies++;
        }
        tu_remove(copy_path[c]);
    }
    tot->runs++;
    tot->api_failures += r.api_failures;
    tu_remove(path);
}

static void fault_kinds(const int *kinds, int nkinds, const char *name, unsigned flags)
{
    char path[256];
    fpath(path, sizeof path, name);
    make_base(path);
    double t0 = now_s();
    for (long round = 0; round < tu_scale(); round++)
    for (int fresh = 0; fresh < 2; fresh++) {
        seed_base = tu_seed(1) + (uint64_t)round * 100003;
        struct totals clean = {0};
        fault_run(path, -1, 0, false, fresh, flags, &clean);
        long counts[NKINDS];
        memcpy(counts, F.calls, sizeof counts);
        for (int ki = 0; ki < nkinds; ki++) {
            int k = kinds[ki];
            struct totals tot = {0};
            assert_true(counts[k] > 0);
            for (long n = 1; n <= counts[k]; n++)
                for (int persist = 0; persist < 2; persist++)
                    fault_run(path, k, n, persist, fresh, flags, &tot);
            print_message("%-9s %-8s %-15s %4ld calls: %5ld runs, %5ld failed calls, %3ld panics (%ld found the "
                          "failed commit on disk), %3ld failed opens, %3ld good copies\n",
                          name, fresh ? "creating" : "existing", kind_name[k], counts[k], tot.runs, tot.api_failures,
                          tot.panics, tot.inflight_found, tot.open_failed, tot.copies);
        }
    }
    print_message("%s: %.1fs\n", name, now_s() - t0);
    free(base_file);
    base_file = NULL;
    tu_remove(path);
}

static void test_io_faults(void **state)
{
    (void)state;
    static const int kinds[] = {K_WRITE, K_SYNC, K_TRUNC, K_MMAP, K_OPEN, K_PREAD, K_FSTAT};
    fault_kinds(kinds, sizeof kinds / sizeof kinds[0], "io", 0);
}

static void test_io_faults_nometasync(void **state)
{
    (void)state;
    static const int kinds[] = {K_WRITE, K_SYNC, K_TRUNC};
    fault_kinds(kinds, sizeof kinds / sizeof kinds[0], "io-nms", KEEL_NOMETASYNC);
}

static void test_oom(void **state)
{
    (void)state;
    static const int kinds[] = {K_MALLOC};
    fault_kinds(kinds, 1, "oom", KEEL_NOSYNC);
}

/* ---- KEEL_PANIC, explicitly ---- */
static long sync_fail_from = -1, sync_calls;
static int failing_fsync(int fd)
{
    if (++sync_calls >= sync_fail_from && sync_fail_from >= 0) {
        errno = EIO;
        return -1;
    }
    return fsync(fd);
}
static int failing_fdatasync(int fd)
{
    if (++sync_calls >= sync_fail_from && sync_fail_from >= 0) {
        errno = EIO;
        return -1;
    }
    return fdatasync(fd);
}

static void test_panic(void **state)
{
    (void)state;
    char path[256];
    fpath(path, sizeof path, "panic");
    /* mode 0: a two-sync commit (the meta before it was written without a
     * sync by another handle, still open so that this open does not sync
     * it, so one flush may not be used): which 1 = the data sync fails
     * before the meta is written, 2 = the meta sync fails.  mode 1: a
     * one-flush commit: its only sync (which 1) fails after the meta went
     * to the page cache. */
    for (int mode = 0; mode <= 1; mode++)
    for (int which = 1; which <= 2 - mode; which++) {
        tu_remove(path);
        keel_db *db;
        keel_options first = {.flags = mode == 0 ? KEEL_NOMETASYNC : 0};
        assert_int_equal(keel_open(path, &first, &db), 0);
        keel_txn *t, *reader;
        assert_int_equal(keel_begin(db, 0, &t), 0);
        assert_int_equal(keel_put(t, 0, tu_val("a"), tu_val("1"), 0), 0);
        assert_int_equal(keel_commit(t), 0);
        keel_db *first_db = db;
        if (mode == 1)
            keel_close(first_db);
        assert_int_equal(keel_open(path, NULL, &db), 0);
        assert_int_equal(keel_begin(db, KEEL_RDONLY, &reader), 0);
        keel_cursor *c;
        assert_int_equal(keel_cursor_open(reader, 0, &c), 0);
        assert_int_equal(keel_begin(db, 0, &t), 0);
        assert_int_equal(keel_put(t, 0, tu_val("b"), tu_val("2"), 0), 0);
        sync_calls = 0;
        sync_fail_from = which;
        keel_os.fsync = failing_fsync;
        keel_os.fdatasync = failing_fdatasync;
        assert_int_equal(keel_commit(t), KEEL_PANIC);
        assert_int_equal(sync_calls, which);
        sync_fail_from = -1; /* syncs work again: the handle must stay poisoned anyway */
        for (int i = 0; i < 3; i++) {
            keel_txn *x = (keel_txn *)1;
            assert_int_equal(keel_begin(db, 0, &x), KEEL_PANIC);
            assert_null(x);
            assert_int_equal(keel_begin(db, KEEL_RDONLY, &x), KEEL_PANIC);
        }
        keel_val k, v;
        assert_int_equal(keel_get(reader, 0, tu_val("a"), &v), KEEL_PANIC);
        assert_int_equal(keel_cursor_first(c, &k, &v), KEEL_PANIC);
        assert_int_equal(keel_db_put(db, NULL, tu_val("c"), tu_val("3"), 0), KEEL_PANIC);
        keel_cursor_close(c);
        keel_abort(reader);
        keel_close(db);
        if (mode == 0)
            keel_close(first_db);
        os_reset();
        /* reopened: "a" is there; "b" only if its meta reached the page cache (meta sync failed) */
        assert_int_equal(keel_open(path, NULL, &db), 0);
        uint64_t problems = 99;
        assert_int_equal(keel_check(db, report, NULL, &problems), 0);
        assert_int_equal(problems, 0);
        assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
        assert_int_equal(keel_get(t, 0, tu_val("a"), &v), 0);
        int rb = keel_get(t, 0, tu_val("b"), &v);
        assert_int_equal(rb, mode == 0 && which == 1 ? KEEL_NOTFOUND : 0);
        keel_abort(t);
        assert_int_equal(keel_begin(db, 0, &t), 0);
        assert_int_equal(keel_put(t, 0, tu_val("c"), tu_val("3"), 0), 0);
        assert_int_equal(keel_commit(t), 0);
        keel_close(db);
    }
    tu_remove(path);
}

/* The first opener syncs the file before it shows the newest commit
 * (design.md §6, group commit).  When that sync fails, a writing handle's
 * open answers KEEL_PANIC; a read-only one opens anyway (a read-only file
 * system), and the newest commit is not taken for durable: the next
 * writer's first flush takes two syncs. */
static void test_open_sync_fails(void **state)
{
    (void)state;
    char path[256];
    fpath(path, sizeof path, "opensync");
    keel_db *db;
    assert_int_equal(keel_open(path, NULL, &db), 0);
    assert_int_equal(keel_db_put(db, NULL, tu_val("a"), tu_val("1"), 0), 0);
    keel_close(db);
    sync_calls = 0;
    sync_fail_from = 1;
    keel_os.fsync = failing_fsync;
    keel_os.fdatasync = failing_fdatasync;
    assert_int_equal(keel_open(path, NULL, &db), KEEL_PANIC);
    assert_non_null(strstr(keel_error_detail(), "first sync"));
    keel_options ro = {.flags = KEEL_RDONLY};
    assert_int_equal(keel_open(path, &ro, &db), 0);
    keel_txn *t;
    keel_val v;
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
    assert_int_equal(keel_get(t, 0, tu_val("a"), &v), 0);
    keel_abort(t);
    sync_fail_from = -1;
    /* a writer while the read-only handle keeps the lock file's state */
    keel_db *w;
    assert_int_equal(keel_open(path, NULL, &w), 0);
    long before = sync_calls;
    assert_int_equal(keel_db_put(w, NULL, tu_val("b"), tu_val("2"), 0), 0);
    assert_int_equal(sync_calls - before, 2); /* pages, then meta: the base was not known durable */
    before = sync_calls;
    assert_int_equal(keel_db_put(w, NULL, tu_val("c"), tu_val("3"), 0), 0);
    assert_int_equal(sync_calls - before, 1); /* one flush again */
    keel_close(w);
    keel_close(db);
    os_reset();
    tu_remove(path);
}

/* ---- disk full: RLIMIT_FSIZE in a child ---- */
enum { DF_FULL = 0, DF_ERRNO = 1, DF_OTHER = 2, DF_NEVER = 3, DF_UNUSABLE = 4, DF_SETUP = 5 };

static size_t df_value(int i, uint8_t *buf)
{
    size_t len = 20000 + (size_t)(i % 7) * 1000;
    gen_value(5000 + (uint64_t)i, buf, len);
    return len;
}

static void df_child(const char *path, rlim_t limit, int wfd)
{
    keel_db *db;
    if (keel_open(path, NULL, &db))
        _exit(DF_SETUP);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {limit, limit};
    if (setrlimit(RLIMIT_FSIZE, &rl))
        _exit(DF_SETUP);
    int rc = 0;
    static uint8_t buf[40000];
    for (int i = 0; i < 1000; i++) {
        keel_txn *t;
        if ((rc = keel_begin(db, 0, &t)))
            break;
        char k[32];
        snprintf(k, sizeof k, "big%04d", i);
        size_t len = df_value(i, buf);
        if ((rc = keel_put(t, 0, tu_val(k), (keel_val){buf, len}, 0))) {
            keel_abort(t);
            break;
        }
        if ((rc = keel_commit(t)))
            break;
        if (write(wfd, &i, sizeof i) != (ssize_t)sizeof i)
            _exit(DF_SETUP);
    }
    if (rc == 0)
        _exit(DF_NEVER);
    /* the handle stays usable: reads work, a write txn can begin */
    keel_txn *t;
    keel_val v;
    if (keel_begin(db, KEEL_RDONLY, &t) || keel_get(t, 0, tu_val("seed"), &v))
        _exit(DF_UNUSABLE);
    keel_abort(t);
    if (keel_begin(db, 0, &t))
        _exit(DF_UNUSABLE);
    keel_abort(t);
    keel_close(db);
    if (write(wfd, &rc, sizeof rc) != (ssize_t)sizeof rc)
        _exit(DF_SETUP);
    _exit(rc == KEEL_FULL ? DF_FULL : rc > 0 ? DF_ERRNO : DF_OTHER);
}

static void test_disk_full(void **state)
{
    (void)state;
    char path[256];
    fpath(path, sizeof path, "diskfull");
    static uint8_t buf[40000];
    /* 0: the limit a little above the file (growth fails);
     * 1: the limit below the file size (page writes past it fail) */
    for (int variant = 0; variant < 2; variant++) {
        tu_remove(path);
        keel_db *db;
        assert_int_equal(keel_open(path, NULL, &db), 0);
        assert_int_equal(keel_db_put(db, NULL, tu_val("seed"), tu_val("x"), 0), 0);
        keel_stat st;
        assert_int_equal(keel_db_stat(db, &st), 0);
        keel_close(db);
        rlim_t limit = variant == 0 ? (rlim_t)st.file_size + 100 * 1024 : (rlim_t)st.file_size / 2;
        int pfd[2];
        assert_int_equal(pipe(pfd), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(pfd[0]);
            df_child(path, limit, pfd[1]);
        }
        close(pfd[1]);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        int acked = -1, v, child_rc = 0, n = 0;
        /* the acknowledged commits, in order, then the error */
        uint8_t rd[4096];
        size_t got = 0;
        ssize_t r;
        while ((r = read(pfd[0], rd + got, sizeof rd - got)) > 0)
            got += (size_t)r;
        close(pfd[0]);
        assert_true(got % sizeof(int) == 0 && got >= sizeof(int));
        n = (int)(got / sizeof(int));
        for (int i = 0; i < n - 1; i++) {
            memcpy(&v, rd + i * sizeof(int), sizeof v);
            assert_int_equal(v, acked + 1);
            acked = v;
        }
        memcpy(&child_rc, rd + (n - 1) * sizeof(int), sizeof child_rc);
        assert_true(WIFEXITED(status));
        print_message("disk full (limit %s the file): %d commits acknowledged, then %s; child status %d\n",
                      variant == 0 ? "above" : "below", acked + 1, keel_strerror(child_rc), WEXITSTATUS(status));
        assert_int_equal(WEXITSTATUS(status), DF_FULL);
        assert_int_equal(child_rc, KEEL_FULL);
        /* the parent: every acknowledged commit, nothing more */
        assert_int_equal(keel_open(path, NULL, &db), 0);
        uint64_t problems = 99;
        assert_int_equal(keel_check(db, report, NULL, &problems), 0);
        assert_int_equal(problems, 0);
        keel_txn *t;
        assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
        keel_val val;
        assert_int_equal(keel_get(t, 0, tu_val("seed"), &val), 0);
        for (int i = 0; i <= acked + 1; i++) {
            char k[32];
            snprintf(k, sizeof k, "big%04d", i);
            int rc = keel_get(t, 0, tu_val(k), &val);
            if (i <= acked) {
                assert_int_equal(rc, 0);
                size_t len = df_value(i, buf);
                assert_true(val.len == len && memcmp(val.data, buf, len) == 0);
            } else {
                assert_int_equal(rc, KEEL_NOTFOUND); /* the failed commit changed nothing */
            }
        }
        keel_abort(t);
        /* without the limit, writing goes on */
        assert_int_equal(keel_begin(db, 0, &t), 0);
        size_t len = df_value(acked + 1, buf);
        assert_int_equal(keel_put(t, 0, tu_val("after"), (keel_val){buf, len}, 0), 0);
        assert_int_equal(keel_commit(t), 0);
        assert_int_equal(keel_check(db, report, NULL, &problems), 0);
        assert_int_equal(problems, 0);
        keel_close(db);
    }
    tu_remove(path);
}

/* A failed assertion inside a hook leaves the table replaced: start clean. */
static int reset_os(void **state)
{
    (void)state;
    os_reset();
    F.kind = -1;
    return 0;
}

int main(void)
{
    double t0 = now_s();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_panic, reset_os),
        cmocka_unit_test_setup(test_open_sync_fails, reset_os),
        cmocka_unit_test_setup(test_io_faults, reset_os),
        cmocka_unit_test_setup(test_io_faults_nometasync, reset_os),
        cmocka_unit_test_setup(test_oom, reset_os),
        cmocka_unit_test_setup(test_disk_full, reset_os),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    fprintf(stderr, "test_fault: %.1fs\n", now_s() - t0);
    return rc;
}
