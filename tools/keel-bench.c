/*
 * keel-bench — the same workloads on keel and on LMDB, side by side.
 *
 * Each (workload, engine) pair runs in a forked child so that its peak RSS
 * can be read from wait4(); both engines get the same keys, generated from
 * the same seed.  Every workload checks its own result (keys found, entries
 * scanned) and the benchmark exits non-zero if one is wrong.
 *
 *   keel-bench [-n N] [-d DIR] [-w WORKLOAD] [-e keel|lmdb] [-r ROUNDS]
 *
 * -r runs the whole table ROUNDS times and ends with the median of the
 * rounds' ratios per row (and their min-max): on a noisy shared machine one
 * round's ratio can move by a third.  Odd rounds run LMDB first in each
 * pair, even ones keel.
 *
 * Workloads follow redb's published benchmark: 24-byte random keys,
 * 150-byte values.  Keel-only rows (put with TTL, purge) are compared with
 * keel's own plain put and delete rows; 2 reader processes with 2 threads.
 * "file size" is the database file's st_size after "remove half": live
 * pages plus the pages that txn freed (copy-on-write keeps the old copies
 * until the commit, so they cannot be reused within it).  "file size, long
 * reader" is its size after "commits, long reader": 1,000 commits after a
 * reader held through N/10 of them ended.
 * The bucket rows (LMDB: named databases) use files opened without syncs,
 * to show what the number of buckets costs, not the disk.
 * See doc/benchmarks.md for a run and its reading.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "keel.h"
#ifdef HAVE_LMDB
#include <lmdb.h>
#endif

#define KEY_LEN 24
#define VAL_LEN 150

static uint64_t N = 1000000;
static const char *dir = "/tmp";
static char path_buf[2][512];

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "keel-bench: %s: %s\n", what, msg);
    exit(3);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* key i: 24 pseudo-random bytes, the same in every process */
static void make_key(uint64_t i, uint8_t *k)
{
    for (int j = 0; j < 3; j++) {
        uint64_t x = mix(i * 3 + (uint64_t)j);
        memcpy(k + 8 * j, &x, 8);
    }
}

/* key i in sorted order: big-endian i, then filler */
static void make_sorted_key(uint64_t i, uint8_t *k)
{
    for (int j = 0; j < 8; j++)
        k[j] = (uint8_t)(i >> (56 - 8 * j));
    memset(k + 8, 'k', KEY_LEN - 8);
}

static void make_val(uint64_t i, uint8_t *v, size_t len)
{
    uint64_t x = mix(i ^ 0xABCDEF);
    for (size_t j = 0; j < len; j++)
        v[j] = (uint8_t)(x >> (8 * (j & 7))) ^ (uint8_t)j;
}

/* ---- engines ---- */
struct engine {
    const char *name;
    void (*open)(const char *path);
    void (*close)(void);
    void (*begin)(bool write);
    void (*commit)(void);
    void (*put)(const void *k, size_t kl, const void *v, size_t vl, bool append);
    bool (*get)(const void *k, size_t kl, size_t *vl); /* found? */
    bool (*del)(const void *k, size_t kl);
    /* walk up to n entries from the first >= k (k NULL = first); returns count */
    uint64_t (*range)(const void *k, size_t kl, uint64_t n);
    void (*reader_thread_begin)(void); /* per-thread read txn begin/end for the 2-thread test */
    bool (*reader_get)(const void *k, size_t kl);
    void (*reader_thread_end)(void);
    /* named buckets (LMDB: named databases), in a file opened without syncs */
    void (*open_nosync)(const char *path, uint64_t buckets);
    uint32_t (*bucket)(const char *name); /* open or create in the write txn */
    void (*bput)(uint32_t b, const void *k, size_t kl, const void *v, size_t vl);
    void (*bdrop)(uint32_t b);
    bool (*bget)(uint32_t b, const void *k, size_t kl); /* found, with a VAL_LEN value? */
    bool (*txn_get)(const void *k, size_t kl); /* a read txn of its own with one get, from any thread */
    void (*txn_put)(const void *k, size_t kl, const void *v, size_t vl); /* a durable write txn of its own */
    void (*open_verified)(const char *path); /* keel: KEEL_VERIFY (every page read checked); LMDB: open */
    void (*abort)(void);                 /* the write txn */
    void (*child_begin)(void);           /* a nested txn of the write txn: put and the rest go to it */
    void (*child_end)(bool commit);      /* ... back to its parent */
    /* DUPSORT (LMDB: MDB_DUPSORT): the file with the bucket (named database)
     * "dup"; the d* calls work in it, in the txn begin() made, through one
     * cursor that dclose() closes before the txn ends */
    void (*dopen)(const char *path);
    void (*dput)(const void *k, size_t kl, const void *v, size_t vl);
    uint64_t (*dvalues)(const void *k, size_t kl);    /* seek the key, read all its values: how many */
    uint64_t (*dcount)(const void *k, size_t kl);     /* seek the key, count its values */
    bool (*ddel)(const void *k, size_t kl, const void *v, size_t vl);       /* one pair: found? */
    bool (*dseek)(const void *k, size_t kl, const void *v, size_t vl);      /* key's first value >= v: == v? */
    void (*dclose)(void);
};

/* keel */
static keel_db *kdb;
static keel_txn *ktxn;
static __thread keel_txn *kread;
static void kcheck(int rc, const char *what)
{
    if (rc)
        die(what, keel_strerror(rc));
}
static void k_open(const char *path)
{
    kcheck(keel_open(path, NULL, &kdb), "keel_open");
}
static void k_open_verified(const char *path)
{
    keel_options o = {0};
    o.flags = KEEL_VERIFY;
    kcheck(keel_open(path, &o, &kdb), "keel_open");
}
static void k_close(void) { keel_close(kdb); }
static void k_begin(bool w) { kcheck(keel_begin(kdb, w ? 0 : KEEL_RDONLY, &ktxn), "keel_begin"); }
static void k_commit(void) { kcheck(keel_commit(ktxn), "keel_commit"); }
static void k_put(const void *k, size_t kl, const void *v, size_t vl, bool append)
{
    kcheck(keel_put(ktxn, 0, (keel_val){k, kl}, (keel_val){v, vl}, append ? KEEL_APPEND : 0), "keel_put");
}
static bool k_get(const void *k, size_t kl, size_t *vl)
{
    keel_val v;
    int rc = keel_get(ktxn, 0, (keel_val){k, kl}, &v);
    if (rc && rc != KEEL_NOTFOUND)
        die("keel_get", keel_strerror(rc));
    *vl = v.len;
    return rc == 0;
}
static bool k_del(const void *k, size_t kl)
{
    int rc = keel_del(ktxn, 0, (keel_val){k, kl});
    if (rc && rc != KEEL_NOTFOUND)
        die("keel_del", keel_strerror(rc));
    return rc == 0;
}
static uint64_t k_range(const void *k, size_t kl, uint64_t n)
{
    keel_cursor *c;
    kcheck(keel_cursor_open(ktxn, 0, &c), "keel_cursor_open");
    keel_val key, val;
    uint64_t got = 0;
    int rc = k ? keel_cursor_seek(c, (keel_val){k, kl}, &key, &val) : keel_cursor_first(c, &key, &val);
    while (rc == 0 && got < n) {
        got++;
        rc = keel_cursor_next(c, &key, &val);
    }
    keel_cursor_close(c);
    return got;
}
static void k_rbegin(void) { kcheck(keel_begin(kdb, KEEL_RDONLY, &kread), "keel_begin"); }
static bool k_rget(const void *k, size_t kl)
{
    keel_val v;
    return keel_get(kread, 0, (keel_val){k, kl}, &v) == 0;
}
static void k_rend(void) { keel_abort(kread); }
static void k_open_nosync(const char *path, uint64_t buckets)
{
    (void)buckets; /* keel needs no bucket limit */
    keel_options o = {0};
    o.flags = KEEL_NOSYNC;
    kcheck(keel_open(path, &o, &kdb), "keel_open");
}
static uint32_t k_bucket(const char *name)
{
    keel_bucket b;
    kcheck(keel_bucket_open(ktxn, name, KEEL_CREATE, &b), "keel_bucket_open");
    return b;
}
static void k_bput(uint32_t b, const void *k, size_t kl, const void *v, size_t vl)
{
    kcheck(keel_put(ktxn, b, (keel_val){k, kl}, (keel_val){v, vl}, 0), "keel_put");
}
static void k_bdrop(uint32_t b) { kcheck(keel_bucket_drop(ktxn, b), "keel_bucket_drop"); }
static bool k_bget(uint32_t b, const void *k, size_t kl)
{
    keel_val v;
    return keel_get(ktxn, b, (keel_val){k, kl}, &v) == 0 && v.len == VAL_LEN;
}
static bool k_txn_get(const void *k, size_t kl)
{
    keel_txn *t;
    keel_val v;
    kcheck(keel_begin(kdb, KEEL_RDONLY, &t), "keel_begin");
    int rc = keel_get(t, 0, (keel_val){k, kl}, &v);
    if (rc && rc != KEEL_NOTFOUND)
        die("keel_get", keel_strerror(rc));
    bool found = rc == 0 && v.len == VAL_LEN;
    keel_abort(t);
    return found;
}
static void k_txn_put(const void *k, size_t kl, const void *v, size_t vl)
{
    keel_txn *t;
    kcheck(keel_begin(kdb, 0, &t), "keel_begin");
    kcheck(keel_put(t, 0, (keel_val){k, kl}, (keel_val){v, vl}, 0), "keel_put");
    kcheck(keel_commit(t), "keel_commit");
}
static keel_txn *kparent;
static void k_abort(void) { keel_abort(ktxn); }
static void k_child_begin(void)
{
    kparent = ktxn;
    kcheck(keel_begin_nested(kparent, &ktxn), "keel_begin_nested");
}
static void k_child_end(bool commit)
{
    if (commit)
        kcheck(keel_commit(ktxn), "keel_commit (child)");
    else
        keel_abort(ktxn);
    ktxn = kparent;
}
static keel_bucket kdup;
static keel_cursor *kcur;
static void k_dopen(const char *path)
{
    k_open(path);
    k_begin(true);
    kcheck(keel_bucket_open(ktxn, "dup", KEEL_CREATE | KEEL_DUPSORT, &kdup), "keel_bucket_open");
    k_commit();
}
static void k_dput(const void *k, size_t kl, const void *v, size_t vl)
{
    kcheck(keel_put(ktxn, kdup, (keel_val){k, kl}, (keel_val){v, vl}, 0), "keel_put");
}
static keel_cursor *k_dcursor(void)
{
    if (!kcur)
        kcheck(keel_cursor_open(ktxn, kdup, &kcur), "keel_cursor_open");
    return kcur;
}
static uint64_t k_dvalues(const void *k, size_t kl)
{
    keel_cursor *c = k_dcursor();
    keel_val key, val;
    uint64_t n = 0;
    int rc = keel_cursor_seek_key(c, (keel_val){k, kl}, &val);
    while (rc == 0) {
        n++;
        rc = keel_cursor_next_dup(c, &key, &val);
    }
    if (rc != KEEL_NOTFOUND)
        die("keel_cursor_next_dup", keel_strerror(rc));
    return n;
}
static uint64_t k_dcount(const void *k, size_t kl)
{
    keel_cursor *c = k_dcursor();
    keel_val val;
    uint64_t n = 0;
    int rc = keel_cursor_seek_key(c, (keel_val){k, kl}, &val);
    if (rc == 0)
        kcheck(keel_cursor_count(c, &n), "keel_cursor_count");
    else if (rc != KEEL_NOTFOUND)
        die("keel_cursor_seek_key", keel_strerror(rc));
    return n;
}
static bool k_ddel(const void *k, size_t kl, const void *v, size_t vl)
{
    int rc = keel_del_value(ktxn, kdup, (keel_val){k, kl}, (keel_val){v, vl});
    if (rc && rc != KEEL_NOTFOUND)
        die("keel_del_value", keel_strerror(rc));
    return rc == 0;
}
static bool k_dseek(const void *k, size_t kl, const void *v, size_t vl)
{
    keel_val key, val;
    int rc = keel_cursor_seek_pair(k_dcursor(), (keel_val){k, kl}, (keel_val){v, vl}, &key, &val);
    if (rc && rc != KEEL_NOTFOUND)
        die("keel_cursor_seek_pair", keel_strerror(rc));
    return rc == 0 && val.len == vl && !memcmp(val.data, v, vl);
}
static void k_dclose(void)
{
    keel_cursor_close(kcur);
    kcur = NULL;
}
static const struct engine keel_engine = {"keel", k_open, k_close, k_begin, k_commit, k_put, k_get,
                                          k_del, k_range, k_rbegin, k_rget, k_rend,
                                          k_open_nosync, k_bucket, k_bput, k_bdrop, k_bget, k_txn_get,
                                          k_txn_put, k_open_verified, k_abort, k_child_begin, k_child_end,
                                          k_dopen, k_dput, k_dvalues, k_dcount, k_ddel, k_dseek, k_dclose};

#ifdef HAVE_LMDB
static MDB_env *lenv;
static size_t lmdb_map_min; /* set by a workload that opens the file itself */
static MDB_txn *ltxn;
static MDB_dbi ldbi;
static __thread MDB_txn *lread;
static void lcheck(int rc, const char *what)
{
    if (rc)
        die(what, mdb_strerror(rc));
}
static void l_open(const char *path)
{
    lcheck(mdb_env_create(&lenv), "mdb_env_create");
    size_t map = (size_t)N * 2048; /* LMDB needs a map size: room for every workload */
    if (map < lmdb_map_min)
        map = lmdb_map_min;
    if (map < ((size_t)1 << 30))
        map = (size_t)1 << 30;
    lcheck(mdb_env_set_mapsize(lenv, map), "mdb_env_set_mapsize");
    lcheck(mdb_env_set_maxreaders(lenv, 126), "mdb_env_set_maxreaders");
    lcheck(mdb_env_open(lenv, path, MDB_NOSUBDIR | MDB_NOTLS, 0644), "mdb_env_open");
    MDB_txn *t;
    lcheck(mdb_txn_begin(lenv, NULL, 0, &t), "mdb_txn_begin");
    lcheck(mdb_dbi_open(t, NULL, 0, &ldbi), "mdb_dbi_open");
    lcheck(mdb_txn_commit(t), "mdb_txn_commit");
}
static void l_close(void) { mdb_env_close(lenv); }
static void l_begin(bool w) { lcheck(mdb_txn_begin(lenv, NULL, w ? 0 : MDB_RDONLY, &ltxn), "mdb_txn_begin"); }
static void l_commit(void) { lcheck(mdb_txn_commit(ltxn), "mdb_txn_commit"); }
static void l_put(const void *k, size_t kl, const void *v, size_t vl, bool append)
{
    MDB_val key = {kl, (void *)k}, val = {vl, (void *)v};
    lcheck(mdb_put(ltxn, ldbi, &key, &val, append ? MDB_APPEND : 0), "mdb_put");
}
static bool l_get(const void *k, size_t kl, size_t *vl)
{
    MDB_val key = {kl, (void *)k}, val;
    int rc = mdb_get(ltxn, ldbi, &key, &val);
    if (rc && rc != MDB_NOTFOUND)
        die("mdb_get", mdb_strerror(rc));
    *vl = val.mv_size;
    return rc == 0;
}
static bool l_del(const void *k, size_t kl)
{
    MDB_val key = {kl, (void *)k};
    int rc = mdb_del(ltxn, ldbi, &key, NULL);
    if (rc && rc != MDB_NOTFOUND)
        die("mdb_del", mdb_strerror(rc));
    return rc == 0;
}
static uint64_t l_range(const void *k, size_t kl, uint64_t n)
{
    MDB_cursor *c;
    lcheck(mdb_cursor_open(ltxn, ldbi, &c), "mdb_cursor_open");
    MDB_val key = {kl, (void *)k}, val;
    uint64_t got = 0;
    int rc = mdb_cursor_get(c, &key, &val, k ? MDB_SET_RANGE : MDB_FIRST);
    while (rc == 0 && got < n) {
        got++;
        rc = mdb_cursor_get(c, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(c);
    return got;
}
static void l_rbegin(void) { lcheck(mdb_txn_begin(lenv, NULL, MDB_RDONLY, &lread), "mdb_txn_begin"); }
static bool l_rget(const void *k, size_t kl)
{
    MDB_val key = {kl, (void *)k}, val;
    return mdb_get(lread, ldbi, &key, &val) == 0;
}
static void l_rend(void) { mdb_txn_abort(lread); }
static void l_open_nosync(const char *path, uint64_t buckets)
{
    lcheck(mdb_env_create(&lenv), "mdb_env_create");
    lcheck(mdb_env_set_mapsize(lenv, ((size_t)8 << 30) + buckets * 8192), "mdb_env_set_mapsize");
    lcheck(mdb_env_set_maxdbs(lenv, (MDB_dbi)buckets + 16), "mdb_env_set_maxdbs");
    lcheck(mdb_env_open(lenv, path, MDB_NOSUBDIR | MDB_NOTLS | MDB_NOSYNC, 0644), "mdb_env_open");
    MDB_txn *t; /* the main database too, for rows that put without buckets */
    lcheck(mdb_txn_begin(lenv, NULL, 0, &t), "mdb_txn_begin");
    lcheck(mdb_dbi_open(t, NULL, 0, &ldbi), "mdb_dbi_open");
    lcheck(mdb_txn_commit(t), "mdb_txn_commit");
}
static uint32_t l_bucket(const char *name)
{
    MDB_dbi d;
    lcheck(mdb_dbi_open(ltxn, name, MDB_CREATE, &d), "mdb_dbi_open");
    return d;
}
static void l_bput(uint32_t b, const void *k, size_t kl, const void *v, size_t vl)
{
    MDB_val key = {kl, (void *)k}, val = {vl, (void *)v};
    lcheck(mdb_put(ltxn, b, &key, &val, 0), "mdb_put");
}
static void l_bdrop(uint32_t b) { lcheck(mdb_drop(ltxn, b, 1), "mdb_drop"); }
static bool l_bget(uint32_t b, const void *k, size_t kl)
{
    MDB_val key = {kl, (void *)k}, val;
    return mdb_get(ltxn, b, &key, &val) == 0 && val.mv_size == VAL_LEN;
}
static bool l_txn_get(const void *k, size_t kl)
{
    MDB_txn *t;
    MDB_val key = {kl, (void *)k}, val;
    lcheck(mdb_txn_begin(lenv, NULL, MDB_RDONLY, &t), "mdb_txn_begin");
    int rc = mdb_get(t, ldbi, &key, &val);
    if (rc && rc != MDB_NOTFOUND)
        die("mdb_get", mdb_strerror(rc));
    bool found = rc == 0 && val.mv_size == VAL_LEN;
    mdb_txn_abort(t);
    return found;
}
static void l_txn_put(const void *k, size_t kl, const void *v, size_t vl)
{
    MDB_txn *t;
    MDB_val key = {kl, (void *)k}, val = {vl, (void *)v};
    lcheck(mdb_txn_begin(lenv, NULL, 0, &t), "mdb_txn_begin");
    lcheck(mdb_put(t, ldbi, &key, &val, 0), "mdb_put");
    lcheck(mdb_txn_commit(t), "mdb_txn_commit");
}
static MDB_txn *lparent;
static void l_abort(void) { mdb_txn_abort(ltxn); }
static void l_child_begin(void)
{
    lparent = ltxn;
    lcheck(mdb_txn_begin(lenv, lparent, 0, &ltxn), "mdb_txn_begin (child)");
}
static void l_child_end(bool commit)
{
    if (commit)
        lcheck(mdb_txn_commit(ltxn), "mdb_txn_commit (child)");
    else
        mdb_txn_abort(ltxn);
    ltxn = lparent;
}
static MDB_dbi ldup;
static MDB_cursor *lcur;
static void l_dopen(const char *path)
{
    lcheck(mdb_env_create(&lenv), "mdb_env_create");
    size_t map = (size_t)N * 2048;
    if (map < ((size_t)1 << 30))
        map = (size_t)1 << 30;
    lcheck(mdb_env_set_mapsize(lenv, map), "mdb_env_set_mapsize");
    lcheck(mdb_env_set_maxreaders(lenv, 126), "mdb_env_set_maxreaders");
    lcheck(mdb_env_set_maxdbs(lenv, 4), "mdb_env_set_maxdbs");
    lcheck(mdb_env_open(lenv, path, MDB_NOSUBDIR | MDB_NOTLS, 0644), "mdb_env_open");
    MDB_txn *t;
    lcheck(mdb_txn_begin(lenv, NULL, 0, &t), "mdb_txn_begin");
    lcheck(mdb_dbi_open(t, "dup", MDB_CREATE | MDB_DUPSORT, &ldup), "mdb_dbi_open");
    lcheck(mdb_txn_commit(t), "mdb_txn_commit");
}
static void l_dput(const void *k, size_t kl, const void *v, size_t vl)
{
    MDB_val key = {kl, (void *)k}, val = {vl, (void *)v};
    lcheck(mdb_put(ltxn, ldup, &key, &val, 0), "mdb_put");
}
static MDB_cursor *l_dcursor(void)
{
    if (!lcur)
        lcheck(mdb_cursor_open(ltxn, ldup, &lcur), "mdb_cursor_open");
    return lcur;
}
static uint64_t l_dvalues(const void *k, size_t kl)
{
    MDB_cursor *c = l_dcursor();
    MDB_val key = {kl, (void *)k}, val;
    uint64_t n = 0;
    int rc = mdb_cursor_get(c, &key, &val, MDB_SET);
    while (rc == 0) {
        n++;
        rc = mdb_cursor_get(c, &key, &val, MDB_NEXT_DUP);
    }
    if (rc != MDB_NOTFOUND)
        die("mdb_cursor_get", mdb_strerror(rc));
    return n;
}
static uint64_t l_dcount(const void *k, size_t kl)
{
    MDB_cursor *c = l_dcursor();
    MDB_val key = {kl, (void *)k}, val;
    size_t n = 0;
    int rc = mdb_cursor_get(c, &key, &val, MDB_SET);
    if (rc == 0)
        lcheck(mdb_cursor_count(c, &n), "mdb_cursor_count");
    else if (rc != MDB_NOTFOUND)
        die("mdb_cursor_get", mdb_strerror(rc));
    return n;
}
static bool l_ddel(const void *k, size_t kl, const void *v, size_t vl)
{
    MDB_val key = {kl, (void *)k}, val = {vl, (void *)v};
    int rc = mdb_del(ltxn, ldup, &key, &val);
    if (rc && rc != MDB_NOTFOUND)
        die("mdb_del", mdb_strerror(rc));
    return rc == 0;
}
static bool l_dseek(const void *k, size_t kl, const void *v, size_t vl)
{
    MDB_val key = {kl, (void *)k}, val = {vl, (void *)v};
    int rc = mdb_cursor_get(l_dcursor(), &key, &val, MDB_GET_BOTH_RANGE);
    if (rc && rc != MDB_NOTFOUND)
        die("mdb_cursor_get", mdb_strerror(rc));
    return rc == 0 && val.mv_size == vl && !memcmp(val.mv_data, v, vl);
}
static void l_dclose(void)
{
    if (lcur)
        mdb_cursor_close(lcur);
    lcur = NULL;
}
static const struct engine lmdb_engine = {"lmdb", l_open, l_close, l_begin, l_commit, l_put, l_get,
                                          l_del, l_range, l_rbegin, l_rget, l_rend,
                                          l_open_nosync, l_bucket, l_bput, l_bdrop, l_bget, l_txn_get,
                                          l_txn_put, l_open, l_abort, l_child_begin, l_child_end,
                                          l_dopen, l_dput, l_dvalues, l_dcount, l_ddel, l_dseek, l_dclose};
#endif

/* ---- workloads: each returns the number of operations, or dies ---- */
static const struct engine *E;
static const char *P;
static double t_start; /* a workload with untimed setup moves it forward */

static void fail(const char *what) { die(E->name, what); }

static void load_random(uint64_t n, size_t vlen)
{
    uint8_t k[KEY_LEN], *v = malloc(vlen);
    E->begin(true);
    for (uint64_t i = 0; i < n; i++) {
        make_key(i, k);
        make_val(i, v, vlen);
        E->put(k, KEY_LEN, v, vlen, false);
    }
    E->commit();
    free(v);
}

static uint64_t w_bulk(void) { load_random(N, VAL_LEN); return N; }
static uint64_t w_bulk_4k(void) { load_random(N / 100, 4096); return N / 100; }
static uint64_t w_bulk_64k(void) { load_random(N / 1000, 65536); return N / 1000; }

static uint64_t w_sorted(void)
{
    uint8_t k[KEY_LEN], v[VAL_LEN];
    E->begin(true);
    for (uint64_t i = 0; i < N; i++) {
        make_sorted_key(i, k);
        make_val(i, v, VAL_LEN);
        E->put(k, KEY_LEN, v, VAL_LEN, false);
    }
    E->commit();
    return N;
}

static uint64_t w_commits_1(void)
{
    uint8_t k[KEY_LEN], v[VAL_LEN];
    for (uint64_t i = 0; i < 1000; i++) {
        make_key(N + i, k);
        make_val(i, v, VAL_LEN);
        E->begin(true);
        E->put(k, KEY_LEN, v, VAL_LEN, false);
        E->commit();
    }
    return 1000;
}

static uint64_t w_commits_1000(void)
{
    uint8_t k[KEY_LEN], v[VAL_LEN];
    for (uint64_t c = 0; c < 100; c++) {
        E->begin(true);
        for (uint64_t i = 0; i < 1000; i++) {
            make_key(2 * N + c * 1000 + i, k);
            make_val(i, v, VAL_LEN);
            E->put(k, KEY_LEN, v, VAL_LEN, false);
        }
        E->commit();
    }
    return 100;
}

static uint64_t reads(void)
{
    uint8_t k[KEY_LEN];
    uint64_t found = 0;
    E->begin(false);
    for (uint64_t i = 0; i < N; i++) {
        make_key(mix(i) % N, k);
        size_t vl;
        if (E->get(k, KEY_LEN, &vl) && vl == VAL_LEN)
            found++;
    }
    E->commit();
    if (found != N)
        fail("random reads: keys missing");
    return N;
}
static uint64_t w_reads(void) { return reads(); }

static void close_untimed(void);

/* keel checks every page it reads against its checksum (KEEL_VERIFY);
 * LMDB reads as in "random reads".  Read against that row's ratio. */
static uint64_t w_reads_verified(void)
{
    E->open_verified(P);
    t_start = now_s();
    uint64_t n = reads();
    close_untimed();
    return n;
}

/* As applications read: one read txn per get. */
static uint64_t w_read_txns(void)
{
    uint8_t k[KEY_LEN];
    uint64_t found = 0, n = N < 200000 ? N : 200000;
    for (uint64_t i = 0; i < n; i++) {
        make_key(mix(i + 3) % N, k);
        size_t vl;
        E->begin(false);
        if (E->get(k, KEY_LEN, &vl) && vl == VAL_LEN)
            found++;
        E->commit();
    }
    if (found != n)
        fail("read txn per get: keys missing");
    return n;
}

/* fn in two threads at once, with seeds seed and seed + 1000003: the sum
 * of what they return */
static uint64_t two_threads(void *(*fn)(void *), uintptr_t seed)
{
    pthread_t t[2];
    for (uintptr_t i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, fn, (void *)(i * 1000003 + seed));
    uint64_t sum = 0;
    for (int i = 0; i < 2; i++) {
        void *r;
        pthread_join(t[i], &r);
        sum += (uint64_t)(uintptr_t)r;
    }
    return sum;
}

/* one read txn per get, in two threads at once (as a server's handlers) */
static void *read_txn_thread(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg, found = 0, n = N < 200000 ? N : 200000;
    uint8_t k[KEY_LEN];
    for (uint64_t i = 0; i < n; i++) {
        make_key(mix(i + seed) % N, k);
        found += E->txn_get(k, KEY_LEN);
    }
    return (void *)(uintptr_t)found;
}

static uint64_t w_read_txns_2t(void)
{
    uint64_t n = N < 200000 ? N : 200000, found = two_threads(read_txn_thread, 5);
    if (found != 2 * n)
        fail("read txn per get, 2 threads: keys missing");
    return 2 * n;
}

/* one read txn per 10-entry range */
static uint64_t w_range_txns(void)
{
    uint8_t k[KEY_LEN];
    uint64_t got = 0, n = 100000;
    for (uint64_t i = 0; i < n; i++) {
        make_key(mix(i + 11) % N, k);
        E->begin(false);
        got += E->range(k, KEY_LEN, 10);
        E->commit();
    }
    if (got < n * 9)
        fail("read txn per range: too few entries");
    return n;
}

static uint64_t w_ranges(void)
{
    uint8_t k[KEY_LEN];
    uint64_t got = 0, n = 100000;
    E->begin(false);
    for (uint64_t i = 0; i < n; i++) {
        make_key(mix(i + 7) % N, k);
        got += E->range(k, KEY_LEN, 10);
    }
    E->commit();
    if (got < n * 9)
        fail("range reads: too few entries");
    return n;
}

static uint64_t w_scan(void)
{
    E->begin(false);
    uint64_t got = E->range(NULL, 0, UINT64_MAX);
    E->commit();
    if (got != N + 1000 + 100 * 1000) /* bulk load, then the two commit workloads */
        fail("full scan: wrong count");
    return got;
}

static void *reader_thread(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg, found = 0;
    uint8_t k[KEY_LEN];
    E->reader_thread_begin();
    for (uint64_t i = 0; i < N; i++) {
        make_key(mix(i + seed) % N, k);
        found += E->reader_get(k, KEY_LEN);
    }
    E->reader_thread_end();
    return (void *)(uintptr_t)found;
}

static uint64_t w_reads_2t(void)
{
    uint64_t found = two_threads(reader_thread, 1);
    if (found != 2 * N)
        fail("2-thread reads: keys missing");
    return 2 * N;
}

static uint64_t w_remove_half(void)
{
    uint8_t k[KEY_LEN];
    uint64_t gone = 0;
    E->begin(true);
    for (uint64_t i = 0; i < N; i += 2) {
        make_key(i, k);
        gone += E->del(k, KEY_LEN);
    }
    E->commit();
    if (gone != (N + 1) / 2)
        fail("removal: keys missing");
    return gone;
}

/* n processes, each with its own handle, each running child(p) once all
 * have opened the file; timed (t_start) from then.  False unless every
 * child(p) returned 0. */
#define MAX_PROCS 8
static bool in_processes(int n, int (*child)(int p))
{
    int ready[2], go[2];
    if (n > MAX_PROCS || pipe(ready) || pipe(go))
        fail("pipe");
    pid_t pid[MAX_PROCS];
    for (int p = 0; p < n; p++) {
        if ((pid[p] = fork()) < 0)
            fail("fork");
        if (pid[p] == 0) {
            E->open(P);
            char c = 'r';
            if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) != 1)
                _exit(5);
            int rc = child(p);
            E->close();
            _exit(rc);
        }
    }
    for (int p = 0; p < n; p++) {
        char c;
        if (read(ready[0], &c, 1) != 1)
            fail("a child process did not start");
    }
    t_start = now_s();
    static const char gos[MAX_PROCS] = "gggggggg";
    if (write(go[1], gos, (size_t)n) != n)
        fail("pipe");
    bool ok = true;
    for (int p = 0; p < n; p++) {
        int st;
        if (waitpid(pid[p], &st, 0) != pid[p] || !WIFEXITED(st) || WEXITSTATUS(st))
            ok = false;
    }
    close(ready[0]), close(ready[1]), close(go[0]), close(go[1]);
    return ok;
}

static int reads_child(int p)
{
    return (uint64_t)(uintptr_t)reader_thread((void *)(uintptr_t)(p * 1000003 + 1)) == N ? 0 : 6;
}

/* 2 processes, each with its own handle, as 2-thread reads; timed from when both are open */
static uint64_t w_reads_2p(void)
{
    if (!in_processes(2, reads_child))
        fail("2-process reads: keys missing");
    return 2 * N;
}

/* delete every key in one txn; the load before it is not timed */
static uint64_t w_delete_all(void)
{
    load_random(N, VAL_LEN);
    t_start = now_s();
    uint8_t k[KEY_LEN];
    uint64_t gone = 0;
    E->begin(true);
    for (uint64_t i = 0; i < N; i++) {
        make_key(i, k);
        gone += E->del(k, KEY_LEN);
    }
    E->commit();
    if (gone != N)
        fail("delete all: keys missing");
    return N;
}

/* A read txn held through N/10 commits of one put each to a small data set
 * (1,000 keys), then ended, then AFTER_READER more: the reader pins every
 * page those commits copied, so the file grows; the row's file size is
 * what is left after the AFTER_READER commits (doc/benchmarks.md). */
#define SMALL_SET 1000
#define AFTER_READER 1000
static uint64_t reader_commits(void) { return N / 10; }

static void one_put_commits(uint64_t n, uint64_t seed)
{
    uint8_t k[KEY_LEN], v[VAL_LEN];
    for (uint64_t i = 0; i < n; i++) {
        make_key(mix(seed + i) % SMALL_SET, k);
        make_val(seed + i, v, VAL_LEN);
        E->begin(true);
        E->put(k, KEY_LEN, v, VAL_LEN, false);
        E->commit();
    }
}

static uint64_t w_long_reader(void)
{
#ifdef HAVE_LMDB
    lmdb_map_min = (size_t)reader_commits() * 65536; /* every commit leaves pages pinned */
#endif
    E->open(P);
    load_random(SMALL_SET, VAL_LEN);
    E->reader_thread_begin();
    one_put_commits(reader_commits(), 1);
    E->reader_thread_end();
    one_put_commits(AFTER_READER, reader_commits() + 1);
    E->begin(false);
    uint64_t got = E->range(NULL, 0, UINT64_MAX);
    E->commit();
    if (got != SMALL_SET)
        fail("long reader: wrong count");
    E->close();
    return reader_commits() + AFTER_READER;
}

/* keel only: the same load as "bulk load (random)", every key with a TTL */
static uint64_t w_put_ttl(void)
{
    uint8_t k[KEY_LEN], v[VAL_LEN];
    kcheck(keel_begin(kdb, 0, &ktxn), "keel_begin");
    for (uint64_t i = 0; i < N; i++) {
        make_key(i, k);
        make_val(i, v, VAL_LEN);
        kcheck(keel_put_ttl(ktxn, 0, (keel_val){k, KEY_LEN}, (keel_val){v, VAL_LEN}, 3600 * 1000, 0),
               "keel_put_ttl");
    }
    kcheck(keel_commit(ktxn), "keel_commit");
    return N;
}

/* keel only: N keys expire, one keel_purge removes them (compare with "delete all") */
static int64_t fake_now;
static int64_t fake_clock(void *ctx)
{
    (void)ctx;
    return fake_now;
}
static uint64_t w_purge(void)
{
    keel_close(kdb);
    keel_options o = {0};
    o.clock = fake_clock;
    o.purge_per_commit = -1; /* only the timed keel_purge removes anything */
    fake_now = 1000000;
    kcheck(keel_open(P, &o, &kdb), "keel_open");
    uint8_t k[KEY_LEN], v[VAL_LEN];
    kcheck(keel_begin(kdb, 0, &ktxn), "keel_begin");
    for (uint64_t i = 0; i < N; i++) {
        make_key(i, k);
        make_val(i, v, VAL_LEN);
        kcheck(keel_put_ttl(ktxn, 0, (keel_val){k, KEY_LEN}, (keel_val){v, VAL_LEN}, 1000, 0), "keel_put_ttl");
    }
    kcheck(keel_commit(ktxn), "keel_commit");
    fake_now += 2000; /* all expired */
    t_start = now_s();
    size_t purged = 0;
    kcheck(keel_begin(kdb, 0, &ktxn), "keel_begin");
    kcheck(keel_purge(ktxn, SIZE_MAX, &purged), "keel_purge");
    kcheck(keel_commit(ktxn), "keel_commit");
    if (purged != N)
        fail("purge: wrong count");
    kcheck(keel_begin(kdb, KEEL_RDONLY, &ktxn), "keel_begin");
    uint64_t left = k_range(NULL, 0, UINT64_MAX);
    keel_abort(ktxn);
    if (left != 0)
        fail("purge: keys left");
    return N;
}

/* ---- named buckets: a fresh file opened without syncs (the sync of a
 * commit costs the same for any bucket count, and would hide the rest),
 * buckets made BUCKET_BATCH per txn, each with one put ---- */
#define BUCKET_BATCH 1000
#define CHURN_COMMITS 100000

static void bucket_name(char *buf, size_t size, const char *prefix, uint64_t i)
{
    snprintf(buf, size, "%s%012" PRIu64, prefix, i);
}

/* buckets prefix0..prefix(n-1), one put each; the handles go to h if not NULL */
static void create_buckets(const char *prefix, uint64_t n, uint32_t *h)
{
    char name[64];
    uint8_t k[KEY_LEN], v[VAL_LEN];
    for (uint64_t i = 0; i < n; i++) {
        if (i % BUCKET_BATCH == 0)
            E->begin(true);
        bucket_name(name, sizeof name, prefix, i);
        uint32_t b = E->bucket(name);
        make_key(i, k);
        make_val(i, v, VAL_LEN);
        E->bput(b, k, KEY_LEN, v, VAL_LEN);
        if (h)
            h[i] = b;
        if (i % BUCKET_BATCH == BUCKET_BATCH - 1 || i == n - 1)
            E->commit();
    }
}

/* every bucket holds its one key: a read txn opens each by name */
static void check_buckets(const char *prefix, uint64_t n)
{
    char name[64];
    uint8_t k[KEY_LEN];
    uint64_t found = 0;
    E->begin(true); /* LMDB opens a named database for good in a write txn */
    for (uint64_t i = 0; i < n; i++) {
        bucket_name(name, sizeof name, prefix, i);
        make_key(i, k);
        found += E->bget(E->bucket(name), k, KEY_LEN);
    }
    E->commit();
    if (found != n)
        fail("buckets: keys missing");
}

static uint64_t w_buckets_create(void)
{
    uint64_t n = N / 25;
    E->open_nosync(P, n);
    create_buckets("b", n, NULL);
    double t = now_s();
    check_buckets("b", n);
    t_start += now_s() - t; /* the check is not timed */
    E->close();
    return n;
}

static uint64_t w_buckets_million(void)
{
    E->open_nosync(P, N);
    create_buckets("b", N, NULL);
    double t = now_s();
    check_buckets("b", N);
    t_start += now_s() - t;
    E->close();
    return N;
}

/* Closes the file the workload opened itself, outside the timed span. */
static void close_untimed(void)
{
    double dt = now_s() - t_start;
    E->close();
    t_start = now_s() - dt;
}

/* CHURN_COMMITS txns of one put each into a bucket opened before; with
 * churn, N / 25 temporary buckets were created and dropped first (untimed),
 * BUCKET_BATCH per txn, through the same handle */
static uint64_t bucket_puts(bool churn)
{
    uint64_t n = N / 25;
    E->open_nosync(P, churn ? BUCKET_BATCH + 16 : 16);
    uint32_t *h = malloc(BUCKET_BATCH * sizeof(*h));
    for (uint64_t done = 0; churn && done < n; done += BUCKET_BATCH) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "tmp%" PRIu64 "-", done);
        uint64_t m = n - done < BUCKET_BATCH ? n - done : BUCKET_BATCH;
        create_buckets(prefix, m, h);
        E->begin(true);
        for (uint64_t i = 0; i < m; i++)
            E->bdrop(h[i]);
        E->commit();
    }
    free(h);
    E->begin(true);
    uint32_t b = E->bucket("data");
    E->commit();
    uint8_t k[KEY_LEN], v[VAL_LEN];
    t_start = now_s();
    for (uint64_t i = 0; i < CHURN_COMMITS; i++) {
        make_key(i, k);
        make_val(i, v, VAL_LEN);
        E->begin(true);
        E->bput(b, k, KEY_LEN, v, VAL_LEN);
        E->commit();
    }
    close_untimed();
    return CHURN_COMMITS;
}

/* one write txn per put, without syncs (KEEL_NOSYNC, MDB_NOSYNC): the
 * cost of a txn itself, which a durable commit's flush hides */
static uint64_t w_write_txns_nosync(void)
{
    uint64_t n = N < CHURN_COMMITS ? N : CHURN_COMMITS;
    E->open_nosync(P, 16);
    uint8_t k[KEY_LEN], v[VAL_LEN];
    t_start = now_s();
    for (uint64_t i = 0; i < n; i++) {
        make_key(mix(i + 13), k);
        make_val(i, v, VAL_LEN);
        E->begin(true);
        E->put(k, KEY_LEN, v, VAL_LEN, false);
        E->commit();
    }
    close_untimed();
    return n;
}

/* Durable commits of one put each from DURABLE_WRITERS writers at once, as
 * a server's handlers commit: plain begin / put / commit in each, threads
 * sharing one handle, or processes with a handle each.  Commits can share
 * flushes only when they overlap, so this is where group commit shows. */
#define DURABLE_WRITERS 4
#define DURABLE_COMMITS 250 /* per writer */
static void *durable_writer(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg;
    uint8_t k[KEY_LEN], v[VAL_LEN];
    for (uint64_t i = 0; i < DURABLE_COMMITS; i++) {
        make_key(seed * DURABLE_COMMITS + i, k);
        make_val(i, v, VAL_LEN);
        E->txn_put(k, KEY_LEN, v, VAL_LEN);
    }
    return NULL;
}

static void expect_durable_entries(void)
{
    E->begin(false);
    uint64_t got = E->range(NULL, 0, UINT64_MAX);
    E->commit();
    if (got != DURABLE_WRITERS * DURABLE_COMMITS)
        fail("durable commits: wrong count");
}

static uint64_t w_durable_threads(void)
{
    E->open(P);
    t_start = now_s();
    pthread_t t[DURABLE_WRITERS];
    for (uintptr_t i = 0; i < DURABLE_WRITERS; i++)
        pthread_create(&t[i], NULL, durable_writer, (void *)i);
    for (int i = 0; i < DURABLE_WRITERS; i++)
        pthread_join(t[i], NULL);
    double dt = now_s() - t_start;
    expect_durable_entries();
    E->close();
    t_start = now_s() - dt;
    return DURABLE_WRITERS * DURABLE_COMMITS;
}

static int durable_child(int p)
{
    durable_writer((void *)(uintptr_t)p);
    return 0;
}

static uint64_t w_durable_processes(void)
{
    E->open(P); /* created before the writers start */
    E->close();
    if (!in_processes(DURABLE_WRITERS, durable_child))
        fail("durable commits: a writer failed");
    double dt = now_s() - t_start;
    E->open(P);
    expect_durable_entries();
    E->close();
    t_start = now_s() - dt;
    return DURABLE_WRITERS * DURABLE_COMMITS;
}

/* Nested txns (keel_begin_nested; LMDB: mdb_txn_begin with a parent) in a
 * write txn over the file "remove half" left, that holds 1,000 puts of its
 * own: a child with nothing in it, and a child that puts one key and
 * commits.  The parent is aborted at the end: the file stays as it was. */
#define NESTED_CHILDREN 100000
static void parent_with_puts(void)
{
    uint8_t k[KEY_LEN], v[VAL_LEN];
    E->begin(true);
    for (uint64_t i = 0; i < 1000; i++) {
        make_key(4 * N + i, k);
        make_val(i, v, VAL_LEN);
        E->put(k, KEY_LEN, v, VAL_LEN, false);
    }
    t_start = now_s();
}

static uint64_t w_child_abort(void)
{
    parent_with_puts();
    for (uint64_t i = 0; i < NESTED_CHILDREN; i++) {
        E->child_begin();
        E->child_end(false);
    }
    E->abort();
    return NESTED_CHILDREN;
}

static uint64_t w_child_put(void)
{
    uint8_t k[KEY_LEN], v[VAL_LEN];
    parent_with_puts();
    for (uint64_t i = 0; i < NESTED_CHILDREN; i++) {
        make_key(5 * N + i, k);
        make_val(i, v, VAL_LEN);
        E->child_begin();
        E->put(k, KEY_LEN, v, VAL_LEN, false);
        E->child_end(true);
    }
    E->abort();
    return NESTED_CHILDREN;
}

/* DUPSORT (issue 20): an index's shape, DUP_KEY-byte keys each holding
 * DUP_VALUES DUP_VAL-byte values, N pairs in all (N / DUP_VALUES keys), in
 * a bucket of its own (LMDB: a named MDB_DUPSORT database) of a fresh file.
 * Pair p is value p % DUP_VALUES of key p / DUP_VALUES; the keys and values
 * are random bytes.  Writes run in one write txn each, as the bulk loads. */
#define DUP_KEY 12
#define DUP_VAL 12
#define DUP_VALUES 100
static uint64_t dup_keys(void) { return N / DUP_VALUES; }

static void dup_key(uint64_t q, uint8_t *k)
{
    uint64_t x = mix(2 * q + 0xD0D0), y = mix(2 * q + 0xD0D1);
    memcpy(k, &x, 8);
    memcpy(k + 8, &y, DUP_KEY - 8);
}

static void dup_val(uint64_t q, uint64_t j, uint8_t *v)
{
    uint64_t x = mix(q * 1000003 + j + 0xFACE), y = mix(x);
    memcpy(v, &x, 8);
    memcpy(v + 8, &y, DUP_VAL - 8);
}

/* 0..n-1 in a random order (the seed's), for the untimed setup */
static uint32_t *shuffled(uint64_t n, uint64_t seed)
{
    uint32_t *a = malloc(n * sizeof *a);
    if (!a)
        fail("out of memory");
    for (uint64_t i = 0; i < n; i++)
        a[i] = (uint32_t)i;
    for (uint64_t i = n - 1; i > 0; i--) {
        uint64_t j = mix(seed + i) % (i + 1);
        uint32_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
    return a;
}

/* the pairs of order[0..n) in one write txn: of keys p / values, value p % values */
static void dup_puts(const uint32_t *order, uint64_t n, uint64_t values)
{
    uint8_t k[DUP_KEY], v[DUP_VAL];
    E->begin(true);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t p = order[i];
        dup_key(p / values, k);
        dup_val(p / values, p % values, v);
        E->dput(k, DUP_KEY, v, DUP_VAL);
    }
    E->commit();
}

static uint64_t w_dup_load(void)
{
    E->dopen(P);
    uint32_t *order = shuffled(dup_keys() * DUP_VALUES, 1);
    t_start = now_s();
    dup_puts(order, dup_keys() * DUP_VALUES, DUP_VALUES);
    close_untimed();
    free(order);
    return dup_keys() * DUP_VALUES;
}

/* n random keys (from seed), each probed by probe in one read txn: the
 * sum of what it answered, checked against DUP_VALUES a key */
static uint64_t dup_probe_keys(uint64_t n, uint64_t seed, uint64_t (*probe)(const void *k, size_t klen),
                               const char *what)
{
    E->dopen(P);
    t_start = now_s();
    uint8_t k[DUP_KEY];
    uint64_t got = 0;
    E->begin(false);
    for (uint64_t i = 0; i < n; i++) {
        dup_key(mix(i + seed) % dup_keys(), k);
        got += probe(k, DUP_KEY);
    }
    E->dclose();
    E->commit();
    close_untimed();
    if (got != n * DUP_VALUES)
        fail(what);
    return n;
}

/* N / 10 random keys, each read whole: seek to the key, then its next value
 * until there is none (MDB_SET, MDB_NEXT_DUP) */
static uint64_t w_dup_values(void) { return dup_probe_keys(N / 10, 17, E->dvalues, "dup read values: wrong count"); }

/* N / 5 random keys: seek, count (MDB_SET, mdb_cursor_count) */
static uint64_t w_dup_count(void) { return dup_probe_keys(N / 5, 19, E->dcount, "dup count: wrong count"); }

/* half the pairs, one at a time, in a random order, in one write txn */
static uint64_t w_dup_del(void)
{
    E->dopen(P);
    uint64_t n = dup_keys() * DUP_VALUES / 2, gone = 0;
    uint32_t *order = shuffled(dup_keys() * DUP_VALUES, 2);
    uint8_t k[DUP_KEY], v[DUP_VAL];
    t_start = now_s();
    E->begin(true);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t p = order[i];
        dup_key(p / DUP_VALUES, k);
        dup_val(p / DUP_VALUES, p % DUP_VALUES, v);
        gone += E->ddel(k, DUP_KEY, v, DUP_VAL);
    }
    E->commit();
    close_untimed();
    free(order);
    if (gone != n)
        fail("dup delete pairs: pairs missing");
    return n;
}

/* one key with N values, put in a random order in one write txn */
static uint64_t w_dup_one_key(void)
{
    E->dopen(P);
    uint32_t *order = shuffled(N, 3);
    t_start = now_s();
    dup_puts(order, N, N);
    close_untimed();
    free(order);
    return N;
}

/* N / 2 seeks to random values of that key (MDB_GET_BOTH_RANGE) */
static uint64_t w_dup_one_key_seek(void)
{
    E->dopen(P);
    t_start = now_s();
    uint8_t k[DUP_KEY], v[DUP_VAL];
    uint64_t n = N / 2, found = 0;
    dup_key(0, k);
    E->begin(false);
    for (uint64_t i = 0; i < n; i++) {
        dup_val(0, mix(i + 23) % N, v);
        found += E->dseek(k, DUP_KEY, v, DUP_VAL);
    }
    E->dclose();
    E->commit();
    close_untimed();
    if (found != n)
        fail("dup 1 key seek_pair: values missing");
    return n;
}

static uint64_t w_bucket_puts(void) { return bucket_puts(false); }
static uint64_t w_bucket_puts_churn(void) { return bucket_puts(true); }

struct workload {
    const char *name;
    uint64_t (*run)(void);
    bool fresh; /* starts from an empty file */
    const char *unit;
    bool keel_only; /* keel features LMDB lacks: the ratio column compares with another keel row */
    bool self_open; /* opens the file itself (in child processes) */
};

/* runs in the order given: later ones use the data earlier ones wrote */
static const struct workload workloads[] = {
    {"bulk load (random)", w_bulk, true, "puts/s", false, false},
    {"individual commits", w_commits_1, false, "commits/s", false, false},
    {"batch commits x1000", w_commits_1000, false, "commits/s", false, false},
    {"random reads", w_reads, false, "gets/s", false, false},
    {"random reads, KEEL_VERIFY", w_reads_verified, false, "gets/s", false, true},
    {"read txn per get", w_read_txns, false, "txns/s", false, false},
    {"read txn per get 2 threads", w_read_txns_2t, false, "txns/s", false, false},
    {"read txn per range (10)", w_range_txns, false, "txns/s", false, false},
    {"range reads (10)", w_ranges, false, "ranges/s", false, false},
    {"full scan", w_scan, false, "entries/s", false, false},
    {"random reads 2 threads", w_reads_2t, false, "gets/s", false, false},
    {"random reads 2 processes", w_reads_2p, false, "gets/s", false, true},
    {"remove half", w_remove_half, false, "dels/s", false, false},
    {"nested txn begin+abort", w_child_abort, false, "children/s", false, false},
    {"child commit of one put", w_child_put, false, "children/s", false, false},
    {"bulk load (sorted)", w_sorted, true, "puts/s", false, false},
    {"bulk load 4 KiB values", w_bulk_4k, true, "puts/s", false, false},
    {"bulk load 64 KiB values", w_bulk_64k, true, "puts/s", false, false},
    {"delete all", w_delete_all, true, "dels/s", false, false},
    {"commits, long reader", w_long_reader, true, "commits/s", false, true},
    {"durable commits 4 threads", w_durable_threads, true, "commits/s", false, true},
    {"durable commits 4 processes", w_durable_processes, true, "commits/s", false, true},
    /* keel only; the ratio column is explained where it is printed */
    {"put with TTL", w_put_ttl, true, "puts/s", true, false},
    {"purge expired", w_purge, true, "keys/s", true, false},
    /* named buckets, without syncs; the last one is keel only (LMDB's
     * named databases are a linear table: see doc/benchmarks.md) */
    {"buckets: create N/25", w_buckets_create, true, "buckets/s", false, true},
    {"write txn per put, no sync", w_write_txns_nosync, true, "commits/s", false, true},
    {"bucket put, 1 per txn", w_bucket_puts, true, "commits/s", false, true},
    {"bucket put after churn", w_bucket_puts_churn, true, "commits/s", false, true},
    {"buckets: create N", w_buckets_million, true, "buckets/s", true, true},
    /* DUPSORT buckets (LMDB: MDB_DUPSORT), a file of their own */
    {"dup load N/100x100 (1 txn)", w_dup_load, true, "pairs/s", false, true},
    {"dup read all values of key", w_dup_values, false, "keys/s", false, true},
    {"dup count values of key", w_dup_count, false, "keys/s", false, true},
    {"dup del half pairs (1 txn)", w_dup_del, false, "dels/s", false, true},
    {"dup 1 key: N puts (1 txn)", w_dup_one_key, true, "puts/s", false, true},
    {"dup 1 key: seek_pair", w_dup_one_key_seek, false, "seeks/s", false, true},
};
#define NWORK (sizeof workloads / sizeof workloads[0])

static size_t find_workload(uint64_t (*run)(void))
{
    size_t i = 0;
    while (i < NWORK - 1 && workloads[i].run != run)
        i++;
    return i;
}

struct result {
    double rate;
    long rss_kb;
    uint64_t file_size;
    int ok;
};

static void remove_db(const char *p)
{
    char lock[sizeof path_buf[0] + 8];
    snprintf(lock, sizeof lock, "%.*s-lock", (int)sizeof path_buf[0], p);
    unlink(p);
    unlink(lock);
}

static struct result run_one(const struct engine *e, const char *path, const struct workload *w)
{
    struct result r = {0};
    int fds[2];
    if (pipe(fds))
        die("pipe", strerror(errno));
    if (w->fresh)
        remove_db(path);
    fflush(stdout); /* or a child that exits through exit() prints the buffer again */
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        E = e;
        P = path;
        if (!w->self_open)
            e->open(path);
        t_start = now_s();
        uint64_t ops = w->run();
        double dt = now_s() - t_start;
        if (!w->self_open)
            e->close();
        double rate = ops / (dt > 0 ? dt : 1e-9);
        if (write(fds[1], &rate, sizeof rate) != sizeof rate)
            _exit(4);
        _exit(0);
    }
    close(fds[1]);
    double rate = 0;
    ssize_t got = read(fds[0], &rate, sizeof rate);
    close(fds[0]);
    int status;
    struct rusage ru;
    wait4(pid, &status, 0, &ru);
    r.ok = got == sizeof rate && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    r.rate = rate;
    r.rss_kb = ru.ru_maxrss;
    struct stat st;
    r.file_size = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
    return r;
}

/* One round: every selected workload on each engine, in table order (later
 * workloads use the files earlier ones left), one table line each.  With
 * lmdb_first the engines take turns the other way round: the second of a
 * pair runs after the first's writeback and file removal, so rounds swap
 * who pays for that. */
/* -w's test: a substring of the name, or with a trailing '$' the whole name
 * ("random reads$" without the 2-thread and 2-process rows) */
static bool name_matches(const char *name, const char *want)
{
    size_t n = strlen(want);
    if (n > 0 && want[n - 1] == '$')
        return strlen(name) == n - 1 && !memcmp(name, want, n - 1);
    return strstr(name, want) != NULL;
}

static int run_round(const struct engine *const *engines, int ne, const char *only, const char *engine_only,
                     bool lmdb_first, struct result res[NWORK][2])
{
    int bad = 0;
    printf("%-26s %14s %14s %8s %10s %10s\n", "workload", "keel", "lmdb", "ratio", "keel RSS", "lmdb RSS");
    for (size_t w = 0; w < NWORK; w++) {
        memset(res[w], 0, sizeof res[w]);
        if (only && !name_matches(workloads[w].name, only))
            continue;
        for (int i = 0; i < ne; i++) {
            int e = lmdb_first ? ne - 1 - i : i;
            if (engine_only && strcmp(engine_only, engines[e]->name))
                continue;
            if (workloads[w].keel_only && e > 0)
                continue;
            res[w][e] = run_one(engines[e], path_buf[e], &workloads[w]);
            if (!res[w][e].ok) {
                fprintf(stderr, "keel-bench: %s failed on %s\n", workloads[w].name, engines[e]->name);
                bad = 1;
            }
        }
        if (workloads[w].keel_only) {
            printf("%-26s %14.0f %14s %8s %9ldK %10s  %s (keel only)\n", workloads[w].name, res[w][0].rate, "-", "-",
                   res[w][0].rss_kb, "-", workloads[w].unit);
        } else {
            double ratio = res[w][1].rate > 0 ? res[w][0].rate / res[w][1].rate : 0;
            printf("%-26s %14.0f %14.0f %8.2f %9ldK %9ldK  %s\n", workloads[w].name, res[w][0].rate, res[w][1].rate,
                   ratio, res[w][0].rss_kb, res[w][1].rss_kb, workloads[w].unit);
        }
        fflush(stdout);
    }
    return bad;
}

/* The rows computed from others: keel's TTL put against its plain put, and
 * so on; file size after "remove half".  ratio[] receives them for the
 * summary (0 where a row did not run). */
enum { D_TTL, D_PURGE, D_PROC_KEEL, D_PROC_LMDB, D_SIZE, D_READER_SIZE, D_COUNT };
static void derived_rows(struct result res[NWORK][2], double d[D_COUNT], bool print)
{
    size_t i_bulk = find_workload(w_bulk), i_ttl = find_workload(w_put_ttl), i_del = find_workload(w_delete_all),
           i_purge = find_workload(w_purge), i_2t = find_workload(w_reads_2t), i_2p = find_workload(w_reads_2p),
           i_rm = find_workload(w_remove_half), i_lr = find_workload(w_long_reader);
    memset(d, 0, D_COUNT * sizeof d[0]);
    if (res[i_ttl][0].rate > 0 && res[i_bulk][0].rate > 0)
        d[D_TTL] = res[i_bulk][0].rate / res[i_ttl][0].rate;
    if (res[i_purge][0].rate > 0 && res[i_del][0].rate > 0)
        d[D_PURGE] = res[i_purge][0].rate / res[i_del][0].rate;
    if (res[i_2p][0].rate > 0 && res[i_2t][0].rate > 0)
        d[D_PROC_KEEL] = res[i_2p][0].rate / res[i_2t][0].rate;
    if (res[i_2p][1].rate > 0 && res[i_2t][1].rate > 0)
        d[D_PROC_LMDB] = res[i_2p][1].rate / res[i_2t][1].rate;
    uint64_t sz[2] = {res[i_rm][0].file_size, res[i_rm][1].file_size};
    if (sz[0] && sz[1])
        d[D_SIZE] = (double)sz[0] / (double)sz[1];
    uint64_t lr[2] = {res[i_lr][0].file_size, res[i_lr][1].file_size};
    if (lr[0] && lr[1])
        d[D_READER_SIZE] = (double)lr[0] / (double)lr[1];
    if (!print)
        return;
    if (d[D_TTL] > 0)
        printf("%-26s %14.2f %14s %8s  (cost of a TTL put / a plain put; lower is better)\n", "TTL put cost",
               d[D_TTL], "-", "-");
    if (d[D_PURGE] > 0)
        printf("%-26s %14.2f %14s %8s  (purge of N expired keys / N deletes, speed; higher is better)\n",
               "purge vs delete", d[D_PURGE], "-", "-");
    if (d[D_PROC_KEEL] > 0)
        printf("%-26s %14.2f %14.2f %8s  (2 processes / 2 threads, speed)\n", "processes vs threads", d[D_PROC_KEEL],
               d[D_PROC_LMDB], "-");
    if (d[D_SIZE] > 0)
        printf("%-26s %13.1fM %13.1fM %8.2f  (file size after removing half; lower is better)\n", "file size",
               sz[0] / 1048576.0, sz[1] / 1048576.0, d[D_SIZE]);
    if (d[D_READER_SIZE] > 0)
        printf("%-26s %13.1fM %13.1fM %8.3f  (file size %d commits after a reader held through %" PRIu64
               " ends; lower is better)\n",
               "file size, long reader", lr[0] / 1048576.0, lr[1] / 1048576.0, d[D_READER_SIZE], AFTER_READER,
               reader_commits());
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* median, min and max of v[0..n) (n >= 1; v is sorted in place) */
static void spread(double *v, int n, double *med, double *lo, double *hi)
{
    qsort(v, (size_t)n, sizeof v[0], cmp_double);
    *med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    *lo = v[0];
    *hi = v[n - 1];
}

#define MAX_ROUNDS 15

int main(int argc, char **argv)
{
    const char *only = NULL, *engine_only = NULL;
    int opt, rounds = 1;
    while ((opt = getopt(argc, argv, "n:d:w:e:r:")) != -1) {
        switch (opt) {
        case 'n': N = strtoull(optarg, NULL, 10); break;
        case 'd': dir = optarg; break;
        case 'w': only = optarg; break;
        case 'e': engine_only = optarg; break;
        case 'r': rounds = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: keel-bench [-n N] [-d DIR] [-w WORKLOAD-SUBSTRING[$]] [-e keel|lmdb] [-r ROUNDS]\n");
            return 2;
        }
    }
    if (N < 1000)
        N = 1000;
    if (rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "keel-bench: -r takes 1 to %d rounds\n", MAX_ROUNDS);
        return 2;
    }
    const struct engine *engines[2] = {&keel_engine, NULL};
    int ne = 1;
#ifdef HAVE_LMDB
    engines[ne++] = &lmdb_engine;
#endif
    /* with -w the file names are fixed, so runs can build on each other */
    int tag = only ? 0 : (int)getpid();
    snprintf(path_buf[0], sizeof path_buf[0], "%s/keel-bench-%d.keel", dir, tag);
    snprintf(path_buf[1], sizeof path_buf[1], "%s/keel-bench-%d.lmdb", dir, tag);
    printf("keel-bench: N=%" PRIu64 ", %d-byte keys, %d-byte values, files in %s\n", N, KEY_LEN, VAL_LEN, dir);
    int bad = 0;
    static struct result res[MAX_ROUNDS][NWORK][2];
    double derived[MAX_ROUNDS][D_COUNT];
    for (int r = 0; r < rounds; r++) {
        if (rounds > 1)
            printf("%sround %d of %d%s\n", r ? "\n" : "", r + 1, rounds, r % 2 ? " (lmdb first)" : "");
        bad |= run_round(engines, ne, only, engine_only, r % 2 == 1, res[r]);
        derived_rows(res[r], derived[r], true);
        if (!only) /* a round starts from fresh files; with -w they stay for a later -w (doc/benchmarks.md) */
            for (int e = 0; e < 2; e++)
                remove_db(path_buf[e]);
    }
    if (rounds == 1)
        return bad;
    /* the summary: each round alternated the engines on the same machine
     * state, so a round's ratio is the measurement, and the median of the
     * rounds' ratios the figure to read (min-max shows the noise) */
    printf("\nmedian of %d rounds (min-max): ratio keel/lmdb, or keel's own comparison\n", rounds);
    double v[MAX_ROUNDS], med, lo, hi;
    for (size_t w = 0; w < NWORK; w++) {
        if (workloads[w].keel_only)
            continue;
        int n = 0;
        for (int r = 0; r < rounds; r++)
            if (res[r][w][0].rate > 0 && res[r][w][1].rate > 0)
                v[n++] = res[r][w][0].rate / res[r][w][1].rate;
        if (n == 0)
            continue;
        spread(v, n, &med, &lo, &hi);
        printf("%-26s %8.2f  (%.2f-%.2f)\n", workloads[w].name, med, lo, hi);
    }
    static const char *const dname[D_COUNT] = {"TTL put cost", "purge vs delete", "processes vs threads",
                                               "  (lmdb)", "file size", "file size, long reader"};
    for (int d = 0; d < D_COUNT; d++) {
        int n = 0;
        for (int r = 0; r < rounds; r++)
            if (derived[r][d] > 0)
                v[n++] = derived[r][d];
        if (n == 0)
            continue;
        spread(v, n, &med, &lo, &hi);
        printf("%-26s %8.2f  (%.2f-%.2f)\n", dname[d], med, lo, hi);
    }
    return bad;
}
