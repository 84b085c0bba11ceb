/*
 * make_corpus.c — writes the seed corpora of the fuzz targets:
 *
 *   make_corpus DIR     (fuzz/build.sh builds it; fuzz/make_corpus.sh runs it on fuzz/corpus)
 *
 *   make_corpus DIR [FORMAT1]   (FORMAT1: default test/data/format1.keel)
 *
 *   DIR/fuzz_file/  valid database files of several shapes (empty, small,
 *                   named buckets with TTLs, overflow values, a deep tree of
 *                   long keys, a free tree after many commits, free pages
 *                   in both the meta's free tail and the free tree, a dropped
 *                   bucket, a wide tree) at 4, 8 and 16 KiB pages, in the
 *                   newest format (2: page sums); each file is the option
 *                   byte, then the file cut to the meta's npages.  Also: a
 *                   deep tree with overflow runs opened with KEEL_VERIFY
 *                   (option bit 6: deep-overflow-verify-*), two with stale
 *                   sums (bit 5: *-stale-*), a small database as a crash
 *                   after a one-flush commit leaves it (made in the default
 *                   sync mode: crashed-oneflush-*), and a format 1 database
 *                   (format1-4096): FORMAT1's meta header (magic, format,
 *                   page size) with no trees, filled through keel, which
 *                   keeps writing format 1 (the file itself is 1 MiB, too
 *                   big for a seed)
 *   DIR/fuzz_lock/  lock files taken from a database in use
 *   DIR/fuzz_ops/   operation streams (pseudo-random, fixed seeds)
 *   DIR/fuzz_dump/  dump texts in both formats, plain (-T) text, odd headers
 *
 * The output is deterministic: running it again gives the same files.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <xxhash.h>

#include "dumpfmt.h"
#include "format.h"
#include "fuzz.h"
#include "keel.h"

static const char *outdir;

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "make_corpus: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

#define OK(call)                                                                              \
    do {                                                                                      \
        int rc_ = (call);                                                                     \
        if (rc_)                                                                              \
            die("%s:%d: %s: %s", __FILE__, __LINE__, #call, keel_strerror(rc_));               \
    } while (0)

static void put_file(const char *target, const char *name, const void *head, size_t hlen, const void *body,
                     size_t blen)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", outdir, target);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", outdir, target, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        die("%s: %s", path, strerror(errno));
    if ((hlen && fwrite(head, 1, hlen, f) != hlen) || (blen && fwrite(body, 1, blen, f) != blen) || fclose(f))
        die("%s: write failed", path);
}

static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die("%s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(n ? (size_t)n : 1);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n)
        die("%s: read failed", path);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static int64_t clock_fn(void *ctx) { return *(const int64_t *)ctx; }
static int64_t now = 1000;

static bool synced; /* default sync mode: one-flush commits (a slower corpus build) */

static keel_db *open_db(const char *path, uint32_t psize)
{
    keel_options o = {.page_size = psize, .flags = synced ? 0 : KEEL_NOSYNC, .clock = clock_fn, .clock_ctx = &now,
                      .purge_per_commit = -1};
    keel_db *db;
    OK(keel_open(path, &o, &db));
    return db;
}

static keel_val sv(const char *s) { return (keel_val){s, strlen(s)}; }

/* ---- database shapes ---- */
static void shape_empty(keel_db *db) { (void)db; }

static void shape_small(keel_db *db)
{
    keel_txn *w;
    OK(keel_begin(db, 0, &w));
    for (int i = 0; i < 10; i++) {
        char k[16], v[32];
        snprintf(k, sizeof k, "k%02d", i);
        snprintf(v, sizeof v, "value %d", i * i);
        OK(keel_put(w, 0, sv(k), sv(v), 0));
    }
    OK(keel_commit(w));
}

static void shape_buckets(keel_db *db)
{
    keel_txn *w;
    OK(keel_begin(db, 0, &w));
    const char *names[3] = {"alpha", "beta", "gamma"};
    for (int b = 0; b < 3; b++) {
        keel_bucket h;
        OK(keel_bucket_open(w, names[b], KEEL_CREATE, &h));
        for (int i = 0; i < 20; i++) {
            char k[16];
            snprintf(k, sizeof k, "%s-%02d", names[b], i);
            if (i % 4 == 1)
                OK(keel_put_ttl(w, h, sv(k), sv("expiring"), 500 + 100 * i, 0));
            else
                OK(keel_put(w, h, sv(k), sv(k), 0));
        }
    }
    OK(keel_put_ttl(w, 0, sv("default-ttl"), sv("x"), 5000, 0));
    OK(keel_put(w, 0, sv("default"), sv("y"), 0));
    int64_t r;
    OK(keel_incr(w, 0, sv("counter"), 41, &r));
    OK(keel_commit(w));
}

static void shape_overflow(keel_db *db)
{
    keel_stat st;
    OK(keel_db_stat(db, &st));
    size_t ps = st.page_size;
    uint8_t *big = malloc(3 * ps);
    for (size_t i = 0; i < 3 * ps; i++)
        big[i] = (uint8_t)(i * 7);
    keel_txn *w;
    OK(keel_begin(db, 0, &w));
    OK(keel_put(w, 0, sv("big1"), (keel_val){big, 3 * ps}, 0));
    OK(keel_put(w, 0, sv("big2"), (keel_val){big, ps + ps / 5}, 0));
    OK(keel_put(w, 0, sv("small"), sv("s"), 0));
    OK(keel_put_ttl(w, 0, sv("big-ttl"), (keel_val){big, ps}, 100000, 0));
    OK(keel_commit(w));
    free(big);
}

static void shape_deep(keel_db *db)
{
    size_t mk = keel_max_key_size(db);
    char *k = malloc(mk + 1);
    memset(k, 'x', mk);
    keel_txn *w;
    OK(keel_begin(db, 0, &w));
    for (int i = 0; i < 12; i++) {
        snprintf(k + mk - 4, 5, "%04d", i * 37 % 1000);
        OK(keel_put(w, 0, (keel_val){k, mk}, sv("v"), 0));
    }
    OK(keel_commit(w));
    keel_stat st;
    OK(keel_db_stat(db, &st));
    if (st.depth < 3)
        die("deep shape has depth %u", st.depth);
    free(k);
}

/* A tree of three levels (long keys) whose entries have overflow runs
 * of one to three pages, and a bucket with runs too. */
static void shape_deep_overflow(keel_db *db)
{
    keel_stat st;
    OK(keel_db_stat(db, &st));
    size_t ps = st.page_size, mk = keel_max_key_size(db);
    char *k = malloc(mk + 1);
    uint8_t *big = malloc(3 * ps);
    memset(k, 'y', mk);
    for (size_t i = 0; i < 3 * ps; i++)
        big[i] = (uint8_t)(i * 13 + 5);
    keel_txn *w;
    OK(keel_begin(db, 0, &w));
    for (int i = 0; i < 12; i++) {
        snprintf(k + mk - 4, 5, "%04d", i * 37 % 1000);
        keel_val v = i % 3 ? (keel_val){big, (i % 3) * ps - ps / 2} : sv("small"); /* runs of 1 and 2 pages */
        OK(keel_put(w, 0, (keel_val){k, mk}, v, 0));
    }
    keel_bucket b;
    OK(keel_bucket_open(w, "runs", KEEL_CREATE, &b));
    for (int i = 0; i < 3; i++) {
        char key[16];
        snprintf(key, sizeof key, "r%d", i);
        OK(keel_put(w, b, sv(key), i ? (keel_val){big, ps / 2 + (size_t)i * ps / 4} : sv("small"), 0));
    }
    OK(keel_commit(w));
    OK(keel_db_stat(db, &st));
    if (st.depth < 3)
        die("deep-overflow shape has depth %u", st.depth);
    free(k);
    free(big);
}

static void shape_freelist(keel_db *db)
{
    for (int round = 0; round < 6; round++) {
        keel_txn *w;
        OK(keel_begin(db, 0, &w));
        for (int i = 0; i < 60; i++) {
            char k[16], v[200];
            snprintf(k, sizeof k, "f%03d", (i * 7 + round * 13) % 90);
            memset(v, 'a' + round, sizeof v);
            if ((i + round) % 3 == 0) {
                int rc = keel_del(w, 0, sv(k));
                if (rc && rc != KEEL_NOTFOUND)
                    OK(rc);
            } else {
                OK(keel_put(w, 0, sv(k), (keel_val){v, 50 + (size_t)i * 2}, 0));
            }
        }
        OK(keel_commit(w));
    }
}

/* One-put commits keep their free pages in the meta's free tail; a reader
 * held meanwhile makes the tail overflow into the free tree, so this file
 * has both. */
static void shape_freetree(keel_db *db)
{
    keel_txn *r;
    OK(keel_begin(db, KEEL_RDONLY, &r));
    for (int i = 0; i < 120; i++) {
        keel_txn *w;
        char k[16];
        snprintf(k, sizeof k, "t%03d", i * 37 % 120);
        OK(keel_begin(db, 0, &w));
        OK(keel_put(w, 0, sv(k), sv("a value"), 0));
        OK(keel_commit(w));
        if (i == 100) {
            keel_abort(r);
            r = NULL;
        }
    }
}

static void shape_dropped(keel_db *db)
{
    keel_txn *w;
    keel_bucket b, c;
    OK(keel_begin(db, 0, &w));
    OK(keel_bucket_open(w, "doomed", KEEL_CREATE, &b));
    OK(keel_bucket_open(w, "kept", KEEL_CREATE, &c));
    for (int i = 0; i < 80; i++) {
        char k[16];
        snprintf(k, sizeof k, "d%03d", i);
        OK(keel_put(w, b, sv(k), sv("some value that takes room"), 0));
        if (i % 10 == 0)
            OK(keel_put_ttl(w, c, sv(k), sv("kv"), 100 + i, 0));
    }
    OK(keel_commit(w));
    OK(keel_begin(db, 0, &w));
    OK(keel_bucket_open(w, "doomed", 0, &b));
    OK(keel_bucket_drop(w, b));
    OK(keel_commit(w));
}

static void shape_wide(keel_db *db)
{
    keel_txn *w;
    OK(keel_begin(db, 0, &w));
    for (int i = 0; i < 400; i++) {
        char k[16];
        snprintf(k, sizeof k, "w%05d", i * 3);
        OK(keel_put(w, 0, sv(k), sv("0123456789"), 0));
    }
    OK(keel_commit(w));
}

/* DUPSORT: "multi" with keys of a zero and a 0xFF byte, every fourth with
 * 60 values (a key over several leaves), every third with an expiry for
 * the key (opt bit 3: all expired), a key of 300 zero bytes (escaped to
 * 600); then a commit that deletes single pairs and whole keys. */
static void shape_dupsort(keel_db *db)
{
    keel_txn *w;
    keel_bucket b, p;
    OK(keel_begin(db, 0, &w));
    OK(keel_bucket_open(w, "multi", KEEL_CREATE | KEEL_DUPSORT, &b));
    OK(keel_bucket_open(w, "flat", KEEL_CREATE, &p));
    for (int i = 0; i < 40; i++) {
        uint8_t key[4] = {'m', 0, (uint8_t)i, 0xff};
        int n = i % 4 == 0 ? 60 : 1 + i % 5;
        for (int j = 0; j < n; j++) {
            uint8_t val[32];
            int vl = snprintf((char *)val, sizeof val, "%04d", j * 7);
            for (int x = 0; x < 20; x++)
                val[vl + x] = (uint8_t)(x % 2 ? 0x00 : 0xff);
            keel_val kv = {key, sizeof key}, vv = {val, (size_t)vl + 20};
            if (i % 3 == 0)
                OK(keel_put_ttl(w, b, kv, vv, 1000 + i, 0));
            else
                OK(keel_put(w, b, kv, vv, 0));
        }
        OK(keel_put(w, p, (keel_val){key, sizeof key}, sv("plain"), 0));
    }
    static uint8_t zeros[300];
    OK(keel_put(w, b, (keel_val){zeros, sizeof zeros}, sv("z1"), 0));
    OK(keel_put(w, b, (keel_val){zeros, sizeof zeros}, sv("z2"), 0));
    OK(keel_commit(w));
    OK(keel_begin(db, 0, &w));
    OK(keel_bucket_open(w, "multi", 0, &b));
    for (int i = 0; i < 40; i += 5) {
        uint8_t key[4] = {'m', 0, (uint8_t)i, 0xff};
        if (i % 10 == 0) {
            OK(keel_del(w, b, (keel_val){key, sizeof key}));
        } else {
            uint8_t val[32];
            int vl = snprintf((char *)val, sizeof val, "%04d", 0);
            for (int x = 0; x < 20; x++)
                val[vl + x] = (uint8_t)(x % 2 ? 0x00 : 0xff);
            OK(keel_del_value(w, b, (keel_val){key, sizeof key}, (keel_val){val, (size_t)vl + 20}));
        }
    }
    OK(keel_commit(w));
}

/* DUPSORT with long keys (500 bytes, zero bytes inside): long separators,
 * a tree of three levels at 4 KiB pages from 120 pairs. */
static void shape_dupsort_deep(keel_db *db)
{
    keel_txn *w;
    keel_bucket b;
    OK(keel_begin(db, 0, &w));
    OK(keel_bucket_open(w, "deepdup", KEEL_CREATE | KEEL_DUPSORT, &b));
    static uint8_t key[500];
    for (int i = 0; i < 40; i++) {
        memset(key, 'd', sizeof key);
        key[100] = 0;
        key[400] = (uint8_t)(i / 10);
        key[401] = 0;
        key[499] = (uint8_t)i;
        for (int j = 0; j < 3; j++) {
            char val[8];
            snprintf(val, sizeof val, "v%d", j);
            OK(keel_put(w, b, (keel_val){key, sizeof key}, sv(val), 0));
        }
    }
    OK(keel_commit(w));
}

struct shape {
    const char *name;
    void (*fn)(keel_db *);
    unsigned sizes; /* bit i: page size 4096 << i (bit 3: 65536) */
    uint8_t opt;    /* option bits beyond the page size's (fuzz_file.c) */
};

static const struct shape shapes[] = {
    {"empty", shape_empty, 0xF, 0},
    {"small", shape_small, 0x7, 0},
    {"buckets", shape_buckets, 0x3, 8}, /* every TTL expired */
    {"overflow", shape_overflow, 0x3, 0},
    {"deep", shape_deep, 0x1, 0}, /* 8 KiB: deep-overflow-verify is deep too */
    {"freelist", shape_freelist, 0x3, 0},
    {"freetree", shape_freetree, 0x1, 0},
    {"dropped", shape_dropped, 0x1, 0},
    {"wide", shape_wide, 0x1, 0},
    {"deep-overflow-verify", shape_deep_overflow, 0x1, 64}, /* KEEL_VERIFY, sums re-sealed */
    {"small-stale", shape_small, 0x1, 32},                  /* KEEL_VERIFY, sums left stale */
    {"buckets-stale", shape_buckets, 0x1, 32},
    {"dupsort", shape_dupsort, 0x3, 0},
    {"dupsort-expired", shape_dupsort, 0x1, 8}, /* the keys with an expiry have expired */
    {"dupsort-deep", shape_dupsort_deep, 0x1, 0},
};

/* The file as keel left it, cut to the newest meta's npages. */
static uint8_t *db_image(const char *path, size_t *len)
{
    size_t n;
    uint8_t *img = read_all(path, &n);
    struct meta m0, m1;
    memcpy(&m0, img, sizeof m0);
    memcpy(&m1, img + m0.page_size, sizeof m1);
    const struct meta *m = m0.txnid >= m1.txnid ? &m0 : &m1; /* a tie: the same npages */
    size_t want = (size_t)(m->npages * m->page_size);
    if (want > n)
        die("%s: shorter than its meta", path);
    *len = want;
    return img;
}

/* A small database as a crash after a one-flush commit leaves it (the
 * image taken before keel_close, which would copy the meta): the newest
 * meta carries its commit list, the other holds the commit before. */
static void make_crashed_files(void)
{
    const char *path = fuzz_path(0, "corpus.db");
    for (unsigned i = 0; i < 2; i++) {
        uint32_t ps = 4096u << i;
        fuzz_remove_db(path);
        synced = true;
        keel_db *db = open_db(path, ps);
        synced = false;
        shape_small(db);
        keel_txn *t;
        OK(keel_begin(db, 0, &t));
        OK(keel_put(t, 0, sv("last"), sv("commit"), 0));
        OK(keel_commit(t));
        size_t len;
        uint8_t *img = db_image(path, &len);
        keel_close(db);
        char name[64];
        snprintf(name, sizeof name, "crashed-oneflush-%u", ps);
        uint8_t opt = (uint8_t)i;
        put_file("fuzz_file", name, &opt, 1, img, len);
        free(img);
    }
    fuzz_remove_db(path);
}

static void make_files(void)
{
    const char *path = fuzz_path(0, "corpus.db");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        for (unsigned i = 0; i < 4; i++) {
            if (!(shapes[s].sizes & (1u << i)))
                continue;
            uint32_t ps = 4096u << (i == 3 ? 4 : i);
            fuzz_remove_db(path);
            keel_db *db = open_db(path, ps);
            shapes[s].fn(db);
            uint64_t problems;
            OK(keel_check(db, NULL, NULL, &problems));
            if (problems)
                die("shape %s: %llu problems", shapes[s].name, (unsigned long long)problems);
            keel_close(db);
            size_t len;
            uint8_t *img = db_image(path, &len);
            char name[64];
            snprintf(name, sizeof name, "%s-%u", shapes[s].name, ps);
            /* page size bits; checksums re-sealed; clock at 1000 */
            uint8_t opt = (uint8_t)((i == 3 ? 3 : i) | shapes[s].opt);
            put_file("fuzz_file", name, &opt, 1, img, len);
            free(img);
        }
    }
    fuzz_remove_db(path);
}

/* A format 1 database: the meta header (magic, format, page size) of the
 * format 1 file src, with no trees and npages 2, in both slots; keel opens
 * it as format 1 and writes format 1 into it (format.md, "Format 1"). */
static void make_format1_file(const char *src)
{
    size_t len;
    uint8_t *old = read_all(src, &len);
    if (len < META_V1_SIZE || rd32(old) != KEEL_MAGIC || rd32(old + 4) != 1)
        die("%s: not a format 1 keel file", src);
    uint32_t ps = rd32(old + offsetof(struct meta, page_size));
    uint8_t *empty = calloc(2, ps);
    if (!empty)
        die("out of memory");
    memcpy(empty, old, offsetof(struct meta, flags));
    wr64(empty + offsetof(struct meta, npages), 2);
    wr64(empty + offsetof(struct meta, next_bucket_id), 1);
    wr64(empty + META_V1_SUM_OFF, XXH3_64bits(empty, META_V1_SUM_OFF));
    memcpy(empty + ps, empty, META_V1_SIZE);
    const char *path = fuzz_path(0, "corpus.db");
    fuzz_remove_db(path);
    if (fuzz_write_file(path, empty, 2 * (size_t)ps))
        die("%s: write failed", path);
    keel_db *db = open_db(path, 0);
    shape_buckets(db);
    shape_overflow(db);
    shape_small(db);
    uint64_t problems;
    OK(keel_check(db, NULL, NULL, &problems));
    if (problems)
        die("format 1 shape: %llu problems", (unsigned long long)problems);
    keel_close(db);
    size_t n;
    uint8_t *img = db_image(path, &n);
    if (rd32(img + 4) != 1 || rd32(img + ps + 4) != 1)
        die("format 1 shape: written as format %u", rd32(img + 4));
    char name[64];
    snprintf(name, sizeof name, "format1-%u", ps);
    uint8_t opt = (uint8_t)(ps == 8192 ? 1 : 0);
    put_file("fuzz_file", name, &opt, 1, img, n);
    free(img);
    free(empty);
    free(old);
    fuzz_remove_db(path);
}

static void make_locks(void)
{
    const char *path = fuzz_path(0, "lock.db");
    char lpath[700];
    snprintf(lpath, sizeof lpath, "%s-lock", path);
    static const uint32_t readers[2] = {4, 126};
    for (int i = 0; i < 2; i++) {
        fuzz_remove_db(path);
        keel_options o = {.max_readers = readers[i], .flags = KEEL_NOSYNC};
        keel_db *db;
        OK(keel_open(path, &o, &db));
        keel_txn *r;
        OK(keel_begin(db, KEEL_RDONLY, &r));
        size_t len;
        uint8_t *lk = read_all(lpath, &len);
        /* the data file's identity (bytes 32..47) and the taken slot's owner,
         * time and pid are this run's: zero them so the file is the same on
         * every run (fuzz_lock keeps the live identity where the input has
         * zeros) */
        memset(lk + 32, 0, len >= 48 ? 16 : 0);
        memset(lk + 128, 0, len > 128 ? (len - 128 < 64 ? len - 128 : 64) : 0);
        keel_abort(r);
        keel_close(db);
        char name[64];
        uint8_t opt = (uint8_t)(i ? 2 : 6); /* max_readers option 1 or 200 */
        snprintf(name, sizeof name, "valid-%u", readers[i]);
        put_file("fuzz_lock", name, &opt, 1, lk, len);
        opt |= 1;
        snprintf(name, sizeof name, "valid-%u-in-use", readers[i]);
        put_file("fuzz_lock", name, &opt, 1, lk, len);
        memset(lk, 0, 4); /* magic 0: an initialiser that died half way */
        opt &= (uint8_t)~1;
        snprintf(name, sizeof name, "half-initialised-%u", readers[i]);
        put_file("fuzz_lock", name, &opt, 1, lk, len);
        free(lk);
    }
    uint8_t z = 0;
    put_file("fuzz_lock", "empty", &z, 1, NULL, 0);
    fuzz_remove_db(path);
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint8_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint8_t)(rng >> 32);
}

static void make_ops(void)
{
    static const size_t lens[6] = {16, 60, 200, 500, 1200, 3000};
    for (int i = 0; i < 6; i++) {
        uint8_t buf[3000];
        for (size_t j = 0; j < lens[i]; j++)
            buf[j] = rnd();
        buf[0] = (uint8_t)(i * 5); /* page sizes and purge settings */
        char name[32];
        snprintf(name, sizeof name, "random-%zu", lens[i]);
        put_file("fuzz_ops", name, NULL, 0, buf, lens[i]);
    }
    /* a hand-made sequence: puts, a reader, commit, more writes, cursor walk, reopen */
    static const uint8_t seq[] = {
        0x04,                            /* 4 KiB pages, purge 1 per commit */
        16, 0, 1,                        /* create "alpha" */
        0, 1, 10, 5, 7, 0,               /* put alpha key02 */
        3, 0, 11, 3, 9, 2,               /* put_ttl default key03 ttl 2 */
        19, 0, 4, 31, 9,                 /* range put default 32 keys of 1900 bytes */
        19, 0, 0, 255, 9,                /* the same with keys of 706 bytes (top bits 7): three levels */
        11,                              /* commit */
        17, 0, 0, 0,                     /* reader begins */
        20, 0, 6, 80, 0,                 /* range delete */
        14, 3,                           /* clock +1000 */
        11,                              /* commit (the reader still sees the old state) */
        17, 2, 0, 0,                     /* reader scans the default bucket */
        9, 0, 0, 9, 0, 2, 9, 0, 6, 9, 0, 2, 9, 0, 3, /* cursor first, next, del, next, prev */
        7, 0, 12, 1,                     /* incr */
        6, 0, 12, 0, 3, 1,               /* cas */
        15, 2,                           /* purge */
        13,                              /* reopen */
        21,                              /* check */
    };
    put_file("fuzz_ops", "handmade", NULL, 0, seq, sizeof seq);
    /* nested txns (byte 0 bit 5): children that write, create and drop
     * buckets, purge; one commits, one aborts, one is aborted with its parent */
    static const uint8_t nest[] = {
        0x21,                            /* 8 KiB pages, nested txns */
        0, 0, 1, 7, 2, 0,                /* put default key00 */
        240,                             /* a child */
        16, 0, 1,                        /* create "alpha" */
        3, 1, 11, 3, 9, 2,               /* put_ttl alpha */
        19, 0, 4, 31, 9,                 /* range put default */
        241,                             /* a grandchild */
        16, 3, 0,                        /* drop "alpha" */
        20, 0, 0, 20, 0,                 /* range delete default */
        252,                             /* abort the grandchild */
        18, 1,                           /* verify alpha */
        248,                             /* commit the child */
        14, 3,                           /* clock +1000 */
        242, 15, 6, 18, 0, 249,          /* a child purges, commits */
        243, 19, 2, 8, 31, 9, 244, 4, 0, 1, 12, /* children; abort the write txn with them */
        11,                              /* commit */
    };
    put_file("fuzz_ops", "nested", NULL, 0, nest, sizeof nest);
    for (int i = 0; i < 2; i++) { /* random ones, about one op in sixteen a nested one */
        uint8_t buf[1200];
        size_t len = i ? 1200 : 300;
        for (size_t j = 0; j < len; j++)
            buf[j] = rnd();
        buf[0] = (uint8_t)(0x20 | (i * 7));
        char name[32];
        snprintf(name, sizeof name, "nested-random-%zu", len);
        put_file("fuzz_ops", name, NULL, 0, buf, len);
    }
}

/* DUPSORT streams (byte 0 bit 4, fuzz_ops.c) */
static void make_dup_ops(void)
{
    static const uint8_t seq[] = {
        0x10,                            /* 4 KiB pages, DUPSORT mode */
        234, 0,                          /* create "alpha" as DUPSORT */
        236, 1, 48, 5, 0, 0,             /* put alpha ("a\0", "a") */
        236, 1, 48, 6, 0, 0,             /* put ("a\0", "a\0") */
        236, 1, 48, 0, 0, 0,             /* put ("a\0", "") */
        236, 1, 48, 5, 0, 2,             /* the same pair with KEEL_NODUPDATA: KEEL_EXISTS */
        236, 1, 48, 8, 0, 1,             /* a new value with KEEL_NOOVERWRITE: KEEL_EXISTS */
        238, 1, 0, 1, 0, 12,             /* put_ttl ("a", "\0"), 100 ms */
        231, 1, 1, 63, 3,                /* "b": 64 values of 405 bytes (several leaves) */
        231, 1, 52, 200, 1,              /* "\0\xff\0": 9 values */
        236, 1, 60, 12, 0, 0,            /* a key of zeros with a value that just fits */
        236, 1, 60, 13, 0, 0,            /* one byte longer: KEEL_BADVALSIZE */
        236, 1, 64, 12, 0, 0,            /* the longest key ending in a zero byte */
        224, 1, 0,                       /* next_dup unpositioned: KEEL_BADCURSOR */
        9, 1, 0,                         /* cursor first */
        224, 1, 0, 224, 1, 4,            /* next_dup, count */
        224, 1, 2, 224, 1, 4,            /* next_key, count (64) */
        224, 1, 3,                       /* prev_key */
        224, 1, 5, 1,                    /* seek_key "b" */
        224, 1, 6, 1, 0x80, 5,           /* seek_pair "b", its sixth value */
        224, 1, 1, 224, 1, 7,            /* prev_dup, cursor_expiry */
        9, 1, 6, 224, 1, 0, 224, 1, 1,   /* cursor del, next_dup, prev_dup */
        228, 1, 48, 5, 0,                /* del_value ("a\0", "a") */
        228, 1, 1, 0x80, 3,              /* del_value "b", its fourth value */
        4, 1, 52,                        /* del "\0\xff\0": all its values */
        11,                              /* commit */
        17, 2, 1, 0,                     /* a reader walks alpha */
        14, 4,                           /* clock +60 s: "a" expired */
        9, 1, 1, 224, 1, 3,              /* cursor last, prev_key */
        15, 6,                           /* purge: "a" with its values, one key */
        8, 1, 1, 0, 3,                   /* expire "b" in 100 ms: all 63 values */
        16, 1, 1,                        /* create "alpha" plain: KEEL_INCOMPATIBLE */
        16, 2, 5,                        /* create "beta" as DUPSORT */
        22, 2, 2, 8, 8, 5, 3, 0,         /* put_many beta: a key twice, one value */
        23, 2, 1, 8, 5,                  /* get_many */
        6, 1, 1, 0, 0, 0, 7, 1, 1, 0,    /* cas, incr: KEEL_INCOMPATIBLE */
        19, 2, 0, 31, 12,                /* range put beta: 32 keys, values that just fit */
        14, 2, 15, 6,                    /* clock +100: "b" expired; purge */
        16, 1, 2, 16, 1, 1,              /* drop alpha, create it plain */
        13, 21,                          /* reopen, check */
    };
    put_file("fuzz_ops", "dupsort", NULL, 0, seq, sizeof seq);
    static const uint8_t nest[] = {
        0x31,                            /* 8 KiB pages, DUPSORT and nested txns */
        234, 1,                          /* create "beta" as DUPSORT */
        231, 2, 9, 40, 2,                /* "key01": 41 values */
        240,                             /* a child */
        231, 2, 10, 63, 3,               /* "key02": 64 values of 405 bytes */
        238, 2, 9, 5, 0, 8,              /* put_ttl "key01": every value expires in 10 ms */
        241,                             /* a grandchild */
        16, 1, 2, 234, 1, 236, 1, 1, 1, 0, 0, /* drop beta, create it again, put */
        252,                             /* abort the grandchild */
        225, 2, 0, 9, 2, 0, 225, 2, 4,   /* next_dup unpositioned, cursor first, count */
        229, 2, 10, 0x80, 7,             /* del_value "key02" */
        248,                             /* commit the child */
        14, 1, 11,                       /* clock +7, commit */
        14, 1, 14, 1, 15, 6,             /* clock, purge */
        13, 21,
    };
    put_file("fuzz_ops", "dupsort-nested", NULL, 0, nest, sizeof nest);
    for (int i = 0; i < 3; i++) { /* random ones, about one op byte in four a DUPSORT one */
        uint8_t buf[1200];
        size_t len = i == 0 ? 200 : i == 1 ? 500 : 1200;
        for (size_t j = 0; j < len; j++) {
            uint8_t r = rnd();
            buf[j] = (r & 3) == 0 ? (uint8_t)(224 + (r >> 4)) : rnd();
        }
        buf[0] = (uint8_t)(0x10 | (i == 2 ? 0x20 : 0) | (i * 5 % 16 & 0xF));
        char name[32];
        snprintf(name, sizeof name, "dupsort-random-%zu", len);
        put_file("fuzz_ops", name, NULL, 0, buf, len);
    }
}

static void make_dumps(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    struct dump_info h = {.print = 1, .database = NULL, .mapsize = 1048576, .maxreaders = 126, .pagesize = 4096};
    dump_write_header(m, &h);
    dump_write_record(m, 1, "key", 3, "value", 5);
    dump_write_record(m, 1, "bin\x01\xff", 5, "back\\slash", 10);
    dump_write_record(m, 1, "empty", 5, "", 0);
    dump_write_end(m);
    h.print = 0;
    h.database = "users";
    dump_write_header(m, &h);
    dump_write_record(m, 0, "alice", 5, "admin", 5);
    dump_write_record(m, 0, "bob", 3, "\x00\x01\x02", 3);
    dump_write_end(m);
    h.print = 1;
    h.database = DUMP_EXPIRY_PREFIX "users";
    dump_write_header(m, &h);
    dump_write_record(m, 1, "alice", 5, "1700000000000", 13);
    dump_write_end(m);
    fclose(m);
    uint8_t opt = 0;
    put_file("fuzz_dump", "sections", &opt, 1, buf, len);
    opt = 4; /* stop at the third record */
    put_file("fuzz_dump", "sections-stop", &opt, 1, buf, len);
    opt = 8; /* stop at the second section */
    put_file("fuzz_dump", "sections-stop2", &opt, 1, buf, len);
    free(buf);

    static const char odd[] = "VERSION=2\nformat=bytevalue\ntype=btree\nmapaddr=0\nreversekey=1\nduplicates=0\n"
                              "somethingnew=x\nHEADER=END\n 6b6579\n 76616c7565\nDATA=END\n\n"
                              "format=print\ndatabase=b=c\nHEADER=END\n a\\5cb\n c\nDATA=END\n";
    opt = 0;
    put_file("fuzz_dump", "odd-header", &opt, 1, odd, sizeof odd - 1);
    opt = 2; /* max_line 64 */
    put_file("fuzz_dump", "odd-header-short-lines", &opt, 1, odd, sizeof odd - 1);

    static const char plain[] = "key\nvalue\nbin\\01\\ff\n\nlast\nno newline at the end";
    opt = 1;
    put_file("fuzz_dump", "plain", &opt, 1, plain, sizeof plain - 1);
    opt = 0;
    put_file("fuzz_dump", "empty", &opt, 1, NULL, 0);
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: make_corpus DIR [FORMAT1]\n");
        return 2;
    }
    outdir = argv[1];
    mkdir(outdir, 0755);
    make_files();
    make_crashed_files();
    make_format1_file(argc == 3 ? argv[2] : "test/data/format1.keel");
    make_locks();
    make_ops();
    make_dup_ops();
    make_dumps();
    return 0;
}
