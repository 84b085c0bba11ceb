/*
 * test_crash.c — power-loss simulation and process death.
 *
 * Power loss.  The I/O table keel_os is replaced by a recorder that passes
 * every call through to the real file (the database keeps working through
 * its map) and, for the data file only, keeps:
 *   - the durable image: the bytes the disk holds for sure, i.e. the file as
 *     of the last completed fsync/fdatasync (an in-memory byte array, updated
 *     at each sync from the recorded operations);
 *   - the pending operations since that sync: every pwrite/pwritev (with its
 *     data) and ftruncate, in issue order.
 * At every sync (before it takes effect), at random data writes and at the
 * end of each workload, crash images are built: the durable image plus a
 * subset of the pending operations, in any order, each write kept whole, torn
 * at a 512-byte sector boundary (a prefix of its sectors) or reduced to a
 * random set of its sectors, and file growth that was not made durable
 * absent, or present and filled with zeros or with garbage.  Each image is
 * written to a file of its own and opened in a fresh keel_open (never the
 * live file: the map would read the page cache), then:
 *   - keel_open answers 0 and keel_check finds 0 problems;
 *   - its newest commit is the last acknowledged one or the one in flight
 *     (default mode); under KEEL_NOMETASYNC also the one before the last
 *     acknowledged one (its meta was made durable by the next data sync);
 *   - its contents equal an independent model of exactly that commit
 *     (every bucket, key, value and expiry time): nothing older, nothing mixed.
 *   - every few images, one more commit on the image succeeds and checks clean
 *     (a crashed file stays writable).
 * KEEL_NOSYNC promises nothing after a power loss: its images must only not
 * crash keel_open / keel_check / a full read.
 *
 * The ordering checker watches the same calls as they are issued (default
 * and KEEL_NOMETASYNC modes):
 *   - a meta write is issued only when nothing written before it is still
 *     pending (every page of the commit, and the growth of the file, synced);
 *   - the file size the new meta needs was made durable by an fsync (not just
 *     fdatasync, which does not persist a size change everywhere);
 *   - copy-on-write: no data page write touches a page reachable from a meta
 *     that a crash could leave as the newest one (the durable image's newest
 *     meta, and every meta still pending).  Reachable sets are computed after
 *     each commit by walking every tree (internal trees, buckets, overflow
 *     runs) of the live database.
 *
 * Creation: a crash while keel_open creates the file is explored on its own.
 *
 * DUPSORT: workloads also write a DUPSORT bucket "dup" (small-exhaustive,
 * mixed, nometasync in part; the "dupsort" workload mostly): pairs added
 * one by one and by dozens for a key (keys over several leaves), with a TTL
 * for the key, single pairs and whole keys deleted, the bucket dropped and
 * created again; keys and values hold 0x00 and 0xFF bytes (escaped in the
 * pair keys).  The model (struct dkey: a set of value ids per key and the
 * key's expiry) is part of the digest every image is compared with.
 *
 * Process death: a forked writer commits in a loop and reports each
 * acknowledged commit over a pipe; the parent SIGKILLs it at random moments.
 * After each kill the file opens, checks clean and holds the last reported
 * commit or the one after it, exactly (each commit also adds a pair to a
 * DUPSORT bucket and deletes an older one with keel_del_value: the pairs
 * of the window are checked key by key with next_dup / next_key).
 *
 * KEEL_SEED changes the seed, KEEL_TEST_SCALE multiplies the work.
 * KEEL_CRASH_ORDER=0 turns the ordering checker off, to see what the
 * crash images alone make of a violation.  A failing image is kept next to
 * the image file as "<image>.failed", with the operations it was built from
 * in the message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <xxhash.h>

#include "internal.h"
#include "testutil.h"

#define SECTOR 512u

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

/* ======================================================================
 * The model: buckets 0 (default) and "b1".."b4", key ids 0..NK-1.  Values are
 * generated from a seed, so the model keeps only their length and hash.
 * ====================================================================== */
#define NB 5
#define NK 1024
struct mval {
    uint8_t present;
    uint32_t vlen;
    uint64_t vhash;
    int64_t exp; /* 0 = none */
};
/* The DUPSORT bucket "dup" (after "b1".."b4" in name order): key ids
 * 0..NDK-1, each a set of value ids 0..NDV-1 and the key's expiry. */
#define NDK 96
#define NDV 64
struct dkey {
    uint64_t set; /* bit v: the pair (key, value v) */
    int64_t exp;  /* the key's, 0 = none */
};
struct model {
    bool bexist[NB];
    struct mval e[NB][NK];
    bool dexist;
    struct dkey d[NDK];
};
static struct model M;

/* DUPSORT key id -> "q", the id in two bytes (zero bytes: escaped in pair
 * keys), and for every fifth a tail of 0xFF and 0x00 bytes: ids sort as
 * the keys do (the first three bytes differ). */
static size_t dkeystr(int id, uint8_t *buf)
{
    size_t n = 0;
    buf[n++] = 'q';
    buf[n++] = (uint8_t)(id >> 8);
    buf[n++] = (uint8_t)id;
    if (id % 5 == 0)
        for (int i = 0; i < 100 + id * 3; i++)
            buf[n++] = i % 2 ? 0x00 : 0xFF;
    return n;
}

/* value id -> its id byte, then up to 150 bytes of 0x00 and 0xFF: ids sort as the values do */
static size_t dvalstr(int v, uint8_t *buf)
{
    size_t n = 0;
    buf[n++] = (uint8_t)v;
    for (int i = 0; i < v * 37 % 151; i++)
        buf[n++] = (uint8_t)(i % 3 ? 0x00 : 0xFF);
    return n;
}

static const char *bname(int b)
{
    static const char *n[NB] = {NULL, "b1", "b2", "b3", "b4"};
    return n[b];
}

/* Key ids sort as their strings do: the first 6 bytes differ. Some keys are long. */
static size_t keystr(int id, char *buf)
{
    int n = snprintf(buf, 32, "k%05d", id);
    size_t len = (size_t)n;
    if (id % 13 == 0) {
        size_t pad = 50 + (size_t)(id * 37 % 700);
        memset(buf + len, 'x' + id % 3, pad);
        len += pad;
    }
    buf[len] = 0;
    return len;
}

static void gen_value(uint64_t seed, uint8_t *buf, size_t len)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t r = tu_rand(&s);
        size_t n = len - i < 8 ? len - i : 8;
        memcpy(buf + i, &r, n);
    }
}

struct digest_item {
    uint64_t klen, vlen, vhash;
    int64_t exp;
};

static FILE *digest_dump; /* on a mismatch: every digested item, to compare */
static void digest_bucket_name(XXH3_state_t *st, const char *name)
{
    uint64_t len = name ? strlen(name) : 0;
    if (digest_dump)
        fprintf(digest_dump, "B %s\n", name ? name : "(default)");
    XXH3_64bits_update(st, "B", 1);
    XXH3_64bits_update(st, &len, sizeof len);
    if (len)
        XXH3_64bits_update(st, name, len);
}

static void digest_entry(XXH3_state_t *st, const void *key, size_t klen, size_t vlen, uint64_t vhash, int64_t exp)
{
    if (digest_dump)
        fprintf(digest_dump, "E %.*s %zu %llx %lld\n", (int)(klen < 8 ? klen : 8), (const char *)key, vlen,
                (unsigned long long)vhash, (long long)exp);
    struct digest_item it = {klen, vlen, vhash, exp};
    XXH3_64bits_update(st, "E", 1);
    XXH3_64bits_update(st, &it, sizeof it);
    XXH3_64bits_update(st, key, klen);
}

/* What a reader at time t sees of the model. */
static uint64_t model_digest(const struct model *m, int64_t t)
{
    XXH3_state_t *st = XXH3_createState();
    XXH3_64bits_reset(st);
    char key[800];
    for (int b = 0; b < NB; b++) {
        if (b && !m->bexist[b])
            continue;
        digest_bucket_name(st, bname(b));
        for (int k = 0; k < NK; k++) {
            const struct mval *v = &m->e[b][k];
            if (!v->present || (v->exp && v->exp <= t))
                continue;
            size_t kl = keystr(k, key);
            digest_entry(st, key, kl, v->vlen, v->vhash, v->exp);
        }
    }
    if (m->dexist) {
        digest_bucket_name(st, "dup");
        uint8_t dk[512], dv[256];
        for (int k = 0; k < NDK; k++) {
            const struct dkey *d = &m->d[k];
            if (!d->set || (d->exp && d->exp <= t))
                continue;
            size_t kl = dkeystr(k, dk);
            for (int v = 0; v < NDV; v++)
                if (d->set >> v & 1) {
                    size_t vl = dvalstr(v, dv);
                    digest_entry(st, dk, kl, vl, XXH3_64bits(dv, vl), d->exp);
                }
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
    char n[16][KEEL_MAX_BUCKET_NAME + 1];
    int count;
};
static int collect_name(const char *name, void *ctx)
{
    struct names *ns = ctx;
    if (ns->count == 16)
        return KEEL_CORRUPTED;
    snprintf(ns->n[ns->count++], sizeof ns->n[0], "%s", name);
    return 0;
}

/* What a read txn of db sees: every bucket, key, value and expiry. */
static int db_digest_txn(keel_txn *t, uint64_t *out)
{
    XXH3_state_t *st = XXH3_createState();
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
 * The recorder.
 * ====================================================================== */
enum { OP_WRITE, OP_TRUNC };
struct op {
    int kind;
    uint64_t off, len; /* OP_TRUNC: len = new size */
    uint8_t *data;
};

struct reach { /* pages reachable from one commit's meta */
    uint64_t txnid;
    uint64_t npages;
    uint8_t *bits;
};
#define NREACH 6

static struct recorder {
    bool armed;
    char path[512];
    int fd; /* the data file's descriptor, -1 when not open */
    uint32_t psize;
    unsigned flags; /* the db's sync mode */
    uint8_t *dur;
    size_t dur_size, dur_cap;
    struct op *pend;
    size_t npend, cap_pend;
    uint64_t cur_size;     /* the live file's size */
    uint64_t size_fsynced; /* the size last made durable by fsync */
    int busy;              /* inside an exploration: pass everything through */
    struct reach reach[NREACH];
    int reach_next;
    /* crash points at writes */
    double write_point_p;
    int write_point_images;
    int rand_per_sync; /* random images at each sync, beyond the systematic ones */
    uint64_t rng;
    /* counts */
    uint64_t syncs, fsyncs, writes, metas, truncs, shrinks, grows;
    uint64_t meta_checks, cow_checks, oneflush_metas;
} R = {.fd = -1};

/* ---- acknowledged states ---- */
struct state {
    uint64_t txnid;
    uint64_t digest;
    int64_t t;
};
static struct state acked[2]; /* [1] = the last acknowledged commit, [0] = the one before */
static int nacked;
static struct state inflight;
static bool has_inflight;
static bool nosync_mode; /* images only have to be handled without a crash */

/* ---- counts and context for messages ---- */
static uint64_t images_total, images_nosync, images_written_to, images_create;
static uint64_t crash_points;
static const char *cur_workload = "";
static uint64_t cur_seed;
static char where_desc[128];

static void explore(const char *where, bool exhaustive, int nrandom);

static bool tracked(int fd) { return R.armed && !R.busy && fd >= 0 && fd == R.fd; }

static void pend_push(int kind, uint64_t off, uint64_t len, const void *data)
{
    if (R.npend == R.cap_pend) {
        R.cap_pend = R.cap_pend ? R.cap_pend * 2 : 64;
        R.pend = realloc(R.pend, R.cap_pend * sizeof(*R.pend));
        assert_non_null(R.pend);
    }
    struct op *o = &R.pend[R.npend++];
    o->kind = kind;
    o->off = off;
    o->len = len;
    o->data = NULL;
    if (kind == OP_WRITE) {
        o->data = malloc(len ? len : 1);
        assert_non_null(o->data);
        memcpy(o->data, data, len);
    }
}

static uint64_t dur_gen = 1; /* bumped whenever the durable image changes */
static void dur_resize(size_t n)
{
    dur_gen++;
    if (n > R.dur_cap) {
        size_t cap = R.dur_cap ? R.dur_cap : (1u << 20);
        while (cap < n)
            cap *= 2;
        R.dur = realloc(R.dur, cap);
        assert_non_null(R.dur);
        R.dur_cap = cap;
    }
    if (n > R.dur_size)
        memset(R.dur + R.dur_size, 0, n - R.dur_size);
    R.dur_size = n;
}

/* A completed sync: everything pending reaches the disk, in order. */
static void make_durable(void)
{
    dur_gen++;
    for (size_t i = 0; i < R.npend; i++) {
        struct op *o = &R.pend[i];
        if (o->kind == OP_TRUNC) {
            dur_resize(o->len);
        } else {
            if (o->off + o->len > R.dur_size)
                dur_resize(o->off + o->len);
            memcpy(R.dur + o->off, o->data, o->len);
            free(o->data);
        }
    }
    R.npend = 0;
}

/* ---- reachable pages ---- */
static int reach_cb(void *ctx, uint64_t pgno, uint32_t npages, unsigned kind, int level)
{
    (void)kind;
    (void)level;
    struct reach *r = ctx;
    for (uint64_t p = pgno; p < pgno + npages && p < r->npages; p++)
        r->bits[p >> 3] |= (uint8_t)(1u << (p & 7));
    return 0;
}

struct reach_ctx {
    keel_txn *txn;
    struct reach *r;
    int rc;
};
static int reach_bucket(const char *name, void *ctx)
{
    struct reach_ctx *rc = ctx;
    keel_bucket b;
    struct tree_desc *t;
    int e = bucket_open(rc->txn, name, 0, &b);
    if (!e)
        e = bucket_tree(rc->txn, b, &t);
    if (!e) {
        struct tree_desc copy = *t;
        e = bt_walk(rc->txn, &copy, reach_cb, rc->r);
    }
    return e;
}

/* Records the pages reachable from the newest commit of the live db. */
static void reach_compute(keel_db *db)
{
    int saved = R.busy;
    R.busy = 1;
    keel_txn *t;
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
    uint64_t id = keel_txn_id(t);
    struct reach *r = NULL;
    for (int i = 0; i < NREACH; i++)
        if (R.reach[i].bits && R.reach[i].txnid == id)
            r = &R.reach[i];
    if (!r) {
        r = &R.reach[R.reach_next];
        R.reach_next = (R.reach_next + 1) % NREACH;
        free(r->bits);
        r->txnid = id;
        r->npages = t->meta.npages;
        r->bits = calloc(1, r->npages / 8 + 1);
        assert_non_null(r->bits);
        for (int i = 0; i < TREE_COUNT; i++) {
            struct tree_desc copy = t->meta.trees[i];
            assert_int_equal(bt_walk(t, &copy, reach_cb, r), 0);
        }
        struct reach_ctx rc = {t, r, 0};
        assert_int_equal(bucket_list(t, reach_bucket, &rc), 0);
    }
    keel_abort(t);
    R.busy = saved;
}

static struct reach *reach_find(uint64_t txnid)
{
    for (int i = 0; i < NREACH; i++)
        if (R.reach[i].bits && R.reach[i].txnid == txnid)
            return &R.reach[i];
    return NULL;
}

static void reach_clear(void)
{
    for (int i = 0; i < NREACH; i++) {
        free(R.reach[i].bits);
        R.reach[i].bits = NULL;
    }
    R.reach_next = 0;
}

/* The txn id of the newest valid meta in buf (size bytes), 0 if none (or
 * the file has just been created). */
static bool newest_meta(const uint8_t *buf, size_t size, struct meta *out)
{
    struct meta a, b;
    bool va = size >= META_SIZE && meta_check(buf, size, R.psize, &a) == 0;
    bool vb = size >= R.psize + META_SIZE && meta_check(buf + R.psize, size - R.psize, R.psize, &b) == 0;
    if (!va && !vb)
        return false;
    *out = (va && (!vb || a.txnid >= b.txnid)) ? a : b;
    return true;
}

/* ---- the ordering checker ---- */
static bool order_checks_off; /* KEEL_CRASH_ORDER=0: leave it to the images (to reproduce) */
static void order_check(uint64_t off, const uint8_t *buf, size_t len)
{
    uint64_t ps = R.psize;
    if ((R.flags & KEEL_NOSYNC) || order_checks_off || R.cur_size < 2 * ps) /* not while creating */
        return;
    struct meta m0;
    if (off == 0 && len == ps && meta_check(buf, len, (uint32_t)ps, &m0) == 0 && m0.txnid == 0)
        return; /* creation's second step: page 0 after page 1 is durable */
    if (off < 2 * ps) {
        /* a meta write */
        if (!((off == 0 || off == ps) && len % SECTOR == 0 && len >= SECTOR && len <= ps))
            fail_msg("%s: write of %zu bytes at %llu inside the meta pages", cur_workload, len,
                     (unsigned long long)off);
        struct meta m;
        assert_int_equal(meta_check(buf, len, R.psize, &m), 0);
        if (m.flags & META_F_ONEFLUSH) {
            /* one flush for pages and meta: every write still pending must
             * be a page the meta lists (it is checked at open), and the
             * meta before must be durable (it is what a torn commit falls
             * back to) */
            assert_true(len >= META_LIST_OFF + META_LIST_HDR);
            const uint8_t *list = buf + META_LIST_OFF;
            size_t nruns = rd32(list);
            assert_true(META_LIST_OFF + META_LIST_HDR + nruns * META_LIST_RUN <= len);
            assert_true(XXH3_64bits(list, META_LIST_HDR + nruns * META_LIST_RUN) == m.commit_list_sum);
            for (size_t i = 0; i < R.npend; i++) {
                struct op *o = &R.pend[i];
                if (o->kind != OP_WRITE)
                    continue;
                bool listed = false;
                for (size_t r = 0; r < nruns && !listed; r++) {
                    uint64_t first = rd64(list + META_LIST_HDR + r * META_LIST_RUN);
                    uint64_t count = rd64(list + META_LIST_HDR + r * META_LIST_RUN + 8);
                    listed = o->off >= first * ps && o->off + o->len <= (first + count) * ps;
                }
                if (!listed)
                    fail_msg("%s: one-flush meta %llu written while a write at %llu (+%llu) it does not list is "
                             "not yet synced",
                             cur_workload, (unsigned long long)m.txnid, (unsigned long long)o->off,
                             (unsigned long long)o->len);
            }
            if (m.npages * ps > R.cur_size)
                fail_msg("%s: meta %llu needs %llu bytes, the file has %llu", cur_workload,
                         (unsigned long long)m.txnid, (unsigned long long)(m.npages * ps),
                         (unsigned long long)R.cur_size);
            R.oneflush_metas++;
        } else {
            for (size_t i = 0; i < R.npend; i++)
                if (R.pend[i].kind == OP_WRITE || R.pend[i].kind == OP_TRUNC)
                    fail_msg("%s: meta written while a %s at %llu (+%llu) is not yet synced", cur_workload,
                             R.pend[i].kind == OP_WRITE ? "write" : "truncate", (unsigned long long)R.pend[i].off,
                             (unsigned long long)R.pend[i].len);
            if (m.npages * ps > R.size_fsynced)
                fail_msg("%s: meta %llu needs %llu bytes, but only %llu were made durable by fsync", cur_workload,
                         (unsigned long long)m.txnid, (unsigned long long)(m.npages * ps),
                         (unsigned long long)R.size_fsynced);
        }
        R.meta_checks++;
        return;
    }
    /* copy-on-write: the metas a crash could leave as newest */
    uint64_t ids[16];
    int nids = 0;
    struct meta m;
    if (newest_meta(R.dur, R.dur_size, &m))
        ids[nids++] = m.txnid;
    for (size_t i = 0; i < R.npend && nids < 16; i++) {
        struct op *o = &R.pend[i];
        if (o->kind == OP_WRITE && o->off < 2 * ps && o->len >= META_SIZE &&
            meta_check(o->data, o->len, R.psize, &m) == 0)
            ids[nids++] = m.txnid;
    }
    uint64_t first = off / ps, last = (off + len - 1) / ps;
    for (int i = 0; i < nids; i++) {
        struct reach *r = reach_find(ids[i]);
        if (!r)
            fail_msg("%s: no reachable set recorded for commit %llu", cur_workload, (unsigned long long)ids[i]);
        for (uint64_t p = first; p <= last; p++)
            if (p < r->npages && (r->bits[p >> 3] & (1u << (p & 7))))
                fail_msg("%s: page %llu is written while commit %llu, which a crash can still expose, uses it",
                         cur_workload, (unsigned long long)p, (unsigned long long)ids[i]);
    }
    R.cow_checks++;
}

/* ---- the hooks ---- */
static int rec_open(const char *path, int flags, mode_t mode)
{
    int fd = open(path, flags, mode);
    if (fd >= 0 && R.armed && !R.busy && strcmp(path, R.path) == 0)
        R.fd = fd;
    return fd;
}

static int rec_close(int fd)
{
    if (R.armed && fd == R.fd)
        R.fd = -1;
    return close(fd);
}

static void after_write(uint64_t off, const uint8_t *buf, size_t n)
{
    pend_push(OP_WRITE, off, n, buf);
    R.writes++;
    if (off < 2 * (uint64_t)R.psize)
        R.metas++;
    if (off + n > R.cur_size)
        R.cur_size = off + n;
    if (R.write_point_p > 0 && (double)(tu_rand(&R.rng) % 1000000) < R.write_point_p * 1e6) {
        snprintf(where_desc, sizeof where_desc, "after write %llu (+%zu)", (unsigned long long)off, n);
        explore(where_desc, false, R.write_point_images);
    }
}

static ssize_t rec_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (!tracked(fd))
        return pwrite(fd, buf, n, off);
    order_check((uint64_t)off, buf, n);
    ssize_t r = pwrite(fd, buf, n, off);
    if (r > 0)
        after_write((uint64_t)off, buf, (size_t)r);
    return r;
}

static ssize_t rec_pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    if (!tracked(fd))
        return pwritev(fd, iov, cnt, off);
    size_t total = 0;
    for (int i = 0; i < cnt; i++)
        total += iov[i].iov_len;
    uint8_t *flat = malloc(total ? total : 1);
    assert_non_null(flat);
    size_t at = 0;
    for (int i = 0; i < cnt; i++) {
        memcpy(flat + at, iov[i].iov_base, iov[i].iov_len);
        at += iov[i].iov_len;
    }
    order_check((uint64_t)off, flat, total);
    ssize_t r = pwritev(fd, iov, cnt, off);
    if (r > 0)
        after_write((uint64_t)off, flat, (size_t)r);
    free(flat);
    return r;
}

static int rec_ftruncate(int fd, off_t len)
{
    if (!tracked(fd))
        return ftruncate(fd, len);
    int r = ftruncate(fd, len);
    if (r == 0) {
        if ((uint64_t)len < R.cur_size)
            R.shrinks++;
        else if ((uint64_t)len > R.cur_size)
            R.grows++;
        R.truncs++;
        R.cur_size = (uint64_t)len;
        pend_push(OP_TRUNC, 0, (uint64_t)len, NULL);
    }
    return r;
}

static void at_sync(bool full)
{
    R.syncs++;
    snprintf(where_desc, sizeof where_desc, "at %s #%llu", full ? "fsync" : "fdatasync",
             (unsigned long long)R.syncs);
    explore(where_desc, true, R.rand_per_sync);
    make_durable();
    if (full) {
        R.fsyncs++;
        R.size_fsynced = R.cur_size;
    } else if (R.cur_size < R.size_fsynced) {
        R.size_fsynced = R.cur_size;
    }
}

/* The real sync is not needed: the durable image is the model of the disk. */
static int rec_fsync(int fd)
{
    if (!tracked(fd))
        return fsync(fd);
    at_sync(true);
    return 0;
}

static int rec_fdatasync(int fd)
{
    if (!tracked(fd))
        return fdatasync(fd);
    at_sync(false);
    return 0;
}

static uint8_t *read_file(const char *path, size_t *size)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    uint8_t *buf = malloc((size_t)st.st_size + 1);
    assert_non_null(buf);
    size_t done = 0;
    while (done < (size_t)st.st_size) {
        ssize_t r = pread(fd, buf + done, (size_t)st.st_size - done, (off_t)done);
        assert_true(r > 0);
        done += (size_t)r;
    }
    close(fd);
    *size = done;
    return buf;
}

/* Starts recording the db at path; its current contents count as durable. */
static void rec_arm(const char *path, uint32_t psize, unsigned flags)
{
    memset(&R.syncs, 0, sizeof(R) - offsetof(struct recorder, syncs));
    snprintf(R.path, sizeof R.path, "%s", path);
    R.psize = psize;
    R.flags = flags;
    R.fd = -1;
    R.npend = 0;
    size_t size = 0;
    uint8_t *buf = NULL;
    struct stat st;
    if (stat(path, &st) == 0)
        buf = read_file(path, &size);
    R.dur_size = 0;
    dur_resize(size);
    if (size)
        memcpy(R.dur, buf, size);
    free(buf);
    R.cur_size = size;
    R.size_fsynced = size;
    R.busy = 0;
    R.armed = true;
    keel_os.open = rec_open;
    keel_os.close = rec_close;
    keel_os.pwrite = rec_pwrite;
    keel_os.pwritev = rec_pwritev;
    keel_os.ftruncate = rec_ftruncate;
    keel_os.fsync = rec_fsync;
    keel_os.fdatasync = rec_fdatasync;
}

static void rec_disarm(void)
{
    for (size_t i = 0; i < R.npend; i++)
        free(R.pend[i].data);
    R.npend = 0;
    R.armed = false;
    R.fd = -1;
    R.write_point_p = 0;
    R.rand_per_sync = 0;
    os_reset();
    reach_clear();
}

/* ======================================================================
 * Crash images.
 * ====================================================================== */
enum { T_WHOLE, T_PREFIX, T_RANDOM };
struct choice {
    size_t op;
    int tear;
    size_t cut; /* T_PREFIX: sectors kept */
};

static uint8_t *img;
static size_t img_size, img_cap;
static char img_path[256];
static char img_desc[4096];
static uint64_t img_rng = 1;
static int64_t img_now; /* the clock of the image's db */
static int64_t img_clock(void *ctx)
{
    (void)ctx;
    return img_now;
}

/* Where the image differs from the durable image (t_img), and where the
 * image file does (t_disk): only those bytes are restored and rewritten. */
struct range {
    uint64_t off, len;
};
struct ranges {
    struct range *v;
    size_t n, cap;
};
static struct ranges t_img, t_disk;
static uint64_t img_gen; /* the durable image img is based on; 0 = none */

static void touch(struct ranges *rs, uint64_t off, uint64_t len)
{
    if (!len)
        return;
    if (rs->n && rs->v[rs->n - 1].off + rs->v[rs->n - 1].len == off) {
        rs->v[rs->n - 1].len += len;
        return;
    }
    if (rs->n == rs->cap) {
        rs->cap = rs->cap ? rs->cap * 2 : 64;
        rs->v = realloc(rs->v, rs->cap * sizeof(*rs->v));
        assert_non_null(rs->v);
    }
    rs->v[rs->n++] = (struct range){off, len};
}

static void img_reserve(size_t n)
{
    if (n > img_cap) {
        size_t cap = img_cap ? img_cap : (1u << 20);
        while (cap < n)
            cap *= 2;
        img = realloc(img, cap);
        assert_non_null(img);
        img_cap = cap;
    }
}

static void img_extend(size_t to, bool garbage)
{
    if (to <= img_size)
        return;
    img_reserve(to);
    if (garbage) {
        for (size_t i = img_size; i < to; i += 8) {
            uint64_t r = tu_rand(&img_rng) | 1;
            memcpy(img + i, &r, to - i < 8 ? to - i : 8);
        }
    } else {
        memset(img + img_size, 0, to - img_size);
    }
    touch(&t_img, img_size, to - img_size);
    img_size = to;
}

static void desc_add(const char *fmt, ...)
{
    size_t n = strlen(img_desc);
    if (n + 64 >= sizeof img_desc)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(img_desc + n, sizeof img_desc - n, fmt, ap);
    va_end(ap);
}

static void img_apply(const struct choice *c, bool garbage)
{
    const struct op *o = &R.pend[c->op];
    if (o->kind == OP_TRUNC) {
        if (o->len < img_size) {
            touch(&t_img, o->len, img_size - o->len);
            img_size = o->len;
        }
        else
            img_extend(o->len, garbage);
        desc_add(" #%zu:trunc(%llu)", c->op, (unsigned long long)o->len);
        return;
    }
    size_t nsec = (o->len + SECTOR - 1) / SECTOR;
    desc_add(" #%zu:write(%llu+%llu", c->op, (unsigned long long)o->off, (unsigned long long)o->len);
    if (c->tear == T_PREFIX)
        desc_add(",first %zu of %zu sectors)", c->cut, nsec);
    else if (c->tear == T_RANDOM)
        desc_add(",sectors");
    for (size_t s = 0; s < nsec; s++) {
        bool keep = c->tear == T_WHOLE || (c->tear == T_PREFIX && s < c->cut) ||
                    (c->tear == T_RANDOM && (tu_rand(&img_rng) & 1));
        if (!keep)
            continue;
        if (c->tear == T_RANDOM && nsec <= 64)
            desc_add(" %zu", s);
        size_t lo = s * SECTOR, hi = lo + SECTOR < o->len ? lo + SECTOR : o->len;
        img_extend(o->off + hi, garbage);
        memcpy(img + o->off + lo, o->data + lo, hi - lo);
        touch(&t_img, o->off + lo, hi - lo);
    }
    if (c->tear == T_RANDOM)
        desc_add(")");
    else if (c->tear == T_WHOLE)
        desc_add(")");
}

/* The image file is kept between images and only the 4 KiB blocks that
 * differ from what it holds are rewritten: most of an image is the durable
 * image again. */
static size_t disk_size; /* the image file: the durable image but for t_disk, when disk_valid */
static bool disk_valid;

static void pwrite_all(int fd, const uint8_t *buf, size_t n, uint64_t off)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pwrite(fd, buf + done, n - done, (off_t)(off + done));
        assert_true(r > 0);
        done += (size_t)r;
    }
}

static uint64_t disk_gen; /* the durable image the file is based on */

static void write_img_file(void)
{
    int fd;
    if (!disk_valid || img_gen == 0 || disk_gen != img_gen) {
        unlink(img_path); /* a new file, never truncate-and-rewrite */
        fd = open(img_path, O_RDWR | O_CREAT | O_TRUNC, 0644);
        assert_true(fd >= 0);
        pwrite_all(fd, img, img_size, 0);
    } else {
        fd = open(img_path, O_RDWR);
        assert_true(fd >= 0);
        if (img_size != disk_size)
            assert_int_equal(ftruncate(fd, (off_t)img_size), 0);
        for (int pass = 0; pass < 2; pass++) {
            const struct ranges *rs = pass ? &t_img : &t_disk;
            for (size_t i = 0; i < rs->n; i++) {
                uint64_t off = rs->v[i].off, end = off + rs->v[i].len;
                if (end > img_size)
                    end = img_size;
                if (off < end)
                    pwrite_all(fd, img + off, end - off, off);
            }
        }
    }
    assert_int_equal(close(fd), 0);
    t_disk.n = 0;
    for (size_t i = 0; i < t_img.n; i++)
        touch(&t_disk, t_img.v[i].off, t_img.v[i].len);
    disk_size = img_size;
    disk_gen = img_gen;
    disk_valid = true;
}

static void img_failed(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char keep[300];
    snprintf(keep, sizeof keep, "%s.failed", img_path);
    disk_valid = false;
    int fd = open(keep, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        pwrite_all(fd, img, img_size, 0);
        close(fd);
    }
    fail_msg("crash image failed: %s\n  workload %s, seed %llu, crash %s, image %llu, %zu bytes; durable %zu bytes, "
             "%zu pending ops\n  applied:%s\n  image kept as %s",
             msg, cur_workload, (unsigned long long)cur_seed, where_desc, (unsigned long long)images_total,
             img_size, R.dur_size, R.npend, img_desc, keep);
}

static const struct state *find_state(uint64_t txnid, bool *allowed)
{
    *allowed = false;
    const struct state *s = NULL;
    if (nacked >= 1 && acked[1].txnid == txnid) {
        s = &acked[1];
        *allowed = true;
    } else if (has_inflight && inflight.txnid == txnid) {
        s = &inflight;
        *allowed = true;
    } else if (nacked >= 2 && acked[0].txnid == txnid) {
        s = &acked[0];
        *allowed = (R.flags & KEEL_NOMETASYNC) != 0;
    }
    return s;
}

/* keel_check reports a damaged spare meta as a problem (the next commit
 * rewrites it): accepted only where the image was given one on purpose. */
static bool spare_meta_may_be_bad;
static uint64_t other_problems;
static void img_report(void *ctx, const char *msg)
{
    (void)ctx;
    if (spare_meta_may_be_bad && strstr(msg, "is not valid (the other one is in use)"))
        return;
    other_problems++;
    fprintf(stderr, "check: %s\n", msg);
}

/* Opens the image in a fresh handle and checks it. */
static void check_img(void)
{
    int saved = R.busy;
    R.busy = 1;
    images_total++;
    write_img_file();
    char lock[300]; /* a fresh lock file for every image */
    snprintf(lock, sizeof lock, "%s-lock", img_path);
    unlink(lock);
    keel_options o = {.clock = img_clock, .flags = KEEL_NOSYNC};
    keel_db *db;
    img_now = nacked ? acked[1].t : 0;
    int rc = keel_open(img_path, &o, &db);
    if (nosync_mode) {
        /* no promise: it must only not crash */
        images_nosync++;
        if (rc == 0) {
            uint64_t problems;
            keel_txn *t;
            (void)keel_check(db, NULL, NULL, &problems);
            if (keel_begin(db, KEEL_RDONLY, &t) == 0) {
                uint64_t d;
                (void)db_digest_txn(t, &d);
                keel_abort(t);
            }
            keel_close(db);
        }
        R.busy = saved;
        return;
    }
    if (rc)
        img_failed("keel_open: %s", keel_strerror(rc));
    uint64_t problems = 99;
    other_problems = 0;
    rc = keel_check(db, img_report, NULL, &problems);
    if (rc || other_problems || (problems && !spare_meta_may_be_bad)) {
        keel_close(db);
        img_failed("keel_check: %s, %llu problems", keel_strerror(rc), (unsigned long long)problems);
    }
    keel_txn *t;
    if ((rc = keel_begin(db, KEEL_RDONLY, &t))) {
        keel_close(db);
        img_failed("keel_begin: %s", keel_strerror(rc));
    }
    uint64_t id = keel_txn_id(t);
    keel_abort(t);
    bool allowed;
    const struct state *s = find_state(id, &allowed);
    if (!s || !allowed) {
        keel_close(db);
        img_failed("the image holds commit %llu; last acknowledged %llu, before it %llu, in flight %llu",
                   (unsigned long long)id, (unsigned long long)(nacked ? acked[1].txnid : 0),
                   (unsigned long long)(nacked > 1 ? acked[0].txnid : 0),
                   (unsigned long long)(has_inflight ? inflight.txnid : 0));
    }
    img_now = s->t;
    uint64_t d = 0;
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
    rc = db_digest_txn(t, &d);
    keel_abort(t);
    if (rc || d != s->digest) {
        keel_close(db);
        img_failed("commit %llu: contents differ from the model (%s)", (unsigned long long)id, keel_strerror(rc));
    }
    /* now and then: the crashed file takes another commit */
    if (images_total % 16 == 0 || spare_meta_may_be_bad) {
        images_written_to++;
        disk_valid = false; /* the file changes under us */
        assert_int_equal(keel_begin(db, 0, &t), 0);
        assert_int_equal(keel_put(t, 0, tu_val("after-crash"), tu_val("value"), 0), 0);
        rc = keel_commit(t);
        if (rc) {
            keel_close(db);
            img_failed("commit after the crash: %s", keel_strerror(rc));
        }
        problems = 99;
        rc = keel_check(db, report, NULL, &problems);
        if (rc || problems) {
            keel_close(db);
            img_failed("keel_check after a commit on the crashed file: %s, %llu problems", keel_strerror(rc),
                       (unsigned long long)problems);
        }
    }
    keel_close(db);
    R.busy = saved;
}

static uint64_t bad_meta_at = UINT64_MAX; /* a meta to tear inside its sector, and its op */
static size_t bad_meta_op;
static uint64_t images_bad_meta;

/* img := the durable image */
static void img_start(void)
{
    img_reserve(R.dur_size);
    if (img_gen != dur_gen) {
        if (R.dur_size)
            memcpy(img, R.dur, R.dur_size);
        img_gen = dur_gen;
    } else {
        for (size_t i = 0; i < t_img.n; i++) {
            uint64_t off = t_img.v[i].off, end = off + t_img.v[i].len;
            if (end > R.dur_size)
                end = R.dur_size;
            if (off < end)
                memcpy(img + off, R.dur + off, end - off);
        }
    }
    t_img.n = 0;
    img_size = R.dur_size;
}

static void try_image(const struct choice *ch, size_t n, bool garbage)
{
    img_start();
    img_desc[0] = 0;
    if (garbage)
        desc_add(" [growth garbage]");
    for (size_t i = 0; i < n; i++)
        img_apply(&ch[i], garbage);
    if (!n)
        desc_add(" (nothing)");
    bool bad_meta = bad_meta_at != UINT64_MAX;
    if (bad_meta) {
        /* the first 256 bytes new, the rest (with the checksum) as before */
        const struct op *o = &R.pend[bad_meta_op];
        img_extend(o->off + SECTOR, garbage);
        memcpy(img + o->off, o->data, 256);
        touch(&t_img, o->off, 256);
        desc_add(" #%zu:meta(%llu) torn inside its sector", bad_meta_op, (unsigned long long)o->off);
        images_bad_meta++;
    }
    spare_meta_may_be_bad = bad_meta;
    check_img();
    spare_meta_may_be_bad = false;
}

static size_t op_sectors(size_t i)
{
    const struct op *o = &R.pend[i];
    return o->kind == OP_WRITE ? (o->len + SECTOR - 1) / SECTOR : 0;
}

static void shuffle(struct choice *ch, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = tu_rand(&img_rng) % i;
        struct choice t = ch[i - 1];
        ch[i - 1] = ch[j];
        ch[j] = t;
    }
}

/*
 * One crash point: the pending operations so far.
 *   exhaustive, n <= 6: every subset (in issue order); else every prefix and
 *   every single dropped operation.  Then for each write (up to 12 of them):
 *   the writes before it plus it torn after a prefix of sectors, and all the
 *   others (shuffled) plus it reduced to random sectors.  Then nrandom images
 *   of random subsets, random order, random tears.
 */
static void explore(const char *where, bool exhaustive, int nrandom)
{
    (void)where;
    if (R.busy)
        return;
    crash_points++;
    size_t n = R.npend;
    struct choice *ch = calloc(n + 1, sizeof(*ch));
    assert_non_null(ch);
    uint64_t img_no = 0;
#define GARBAGE() ((img_no++ & 1) != 0)
    if (exhaustive && n <= 6) {
        for (uint32_t mask = 0; mask < (1u << n); mask++) {
            size_t k = 0;
            for (size_t i = 0; i < n; i++)
                if (mask & (1u << i))
                    ch[k++] = (struct choice){i, T_WHOLE, 0};
            try_image(ch, k, GARBAGE());
        }
    } else if (exhaustive) {
        /* every prefix and every single dropped op; past 16 ops a sample of 16 of each */
        size_t step = n <= 16 ? 1 : 0;
        for (size_t j = 0; j <= (step ? n : 16); j++) {
            size_t k = step ? j : (j == 16 ? n : (j == 0 ? 0 : tu_rand(&img_rng) % n));
            for (size_t i = 0; i < k; i++)
                ch[i] = (struct choice){i, T_WHOLE, 0};
            try_image(ch, k, GARBAGE());
        }
        for (size_t j = 0; j + 1 < (step ? n : 17); j++) { /* dropping the last one is a prefix */
            size_t d = step ? j : tu_rand(&img_rng) % (n - 1);
            size_t k = 0;
            for (size_t i = 0; i < n; i++)
                if (i != d)
                    ch[k++] = (struct choice){i, T_WHOLE, 0};
            try_image(ch, k, GARBAGE());
        }
    }
    if (exhaustive) {
        /* beyond the sector model: a meta torn inside its sector (the checksum
         * no longer matches) must fall back to the other meta */
        for (size_t m = 0; m < n; m++) {
            const struct op *o = &R.pend[m];
            if (o->kind != OP_WRITE || o->off >= 2 * (uint64_t)R.psize)
                continue;
            size_t k = 0;
            for (size_t i = 0; i < n; i++)
                if (i != m)
                    ch[k++] = (struct choice){i, T_WHOLE, 0};
            bad_meta_at = o->off;
            bad_meta_op = m;
            try_image(ch, k, GARBAGE());
            bad_meta_at = UINT64_MAX;
        }
    }
    if (exhaustive) {
        size_t torn = 0;
        for (size_t w = 0; w < n && torn < 12; w++) {
            size_t nsec = op_sectors(w);
            if (nsec < 2)
                continue;
            torn++;
            for (size_t i = 0; i < w; i++)
                ch[i] = (struct choice){i, T_WHOLE, 0};
            ch[w] = (struct choice){w, T_PREFIX, 1 + tu_rand(&img_rng) % (nsec - 1)};
            try_image(ch, w + 1, GARBAGE());
            size_t k = 0;
            for (size_t i = 0; i < n; i++)
                if (i != w)
                    ch[k++] = (struct choice){i, T_WHOLE, 0};
            ch[k++] = (struct choice){w, T_RANDOM, 0};
            shuffle(ch, k);
            try_image(ch, k, GARBAGE());
        }
    }
    for (int r = 0; r < nrandom; r++) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (tu_rand(&img_rng) & 1)
                continue;
            int tear = T_WHOLE;
            size_t cut = 0, nsec = op_sectors(i);
            if (nsec >= 2 && tu_rand(&img_rng) % 4 == 0) {
                tear = (tu_rand(&img_rng) & 1) ? T_PREFIX : T_RANDOM;
                cut = 1 + tu_rand(&img_rng) % (nsec - 1);
            }
            ch[k++] = (struct choice){i, tear, cut};
        }
        shuffle(ch, k);
        try_image(ch, k, GARBAGE());
    }
#undef GARBAGE
    free(ch);
}

/* ======================================================================
 * Workloads.
 * ====================================================================== */
struct wspec {
    const char *name;
    unsigned flags;
    uint32_t psize;
    int ntxn;
    int ops_min, ops_max;
    int keys;                  /* key ids used: 0..keys-1 */
    int big_pct;               /* puts with an overflow value */
    size_t big_max;            /* longest value */
    int del_pct, ttl_pct, bucket_pct, purge_pct;
    bool shrink;               /* a phase of growth, then deleting nearly everything */
    bool exhaustive;           /* full exploration at every sync */
    int rand_per_sync;         /* random images at each sync */
    double write_point_p;      /* crash points at data writes */
    int write_point_images;
    int reopen_every;          /* close and reopen the db every so many txns (0 = never) */
    int dup_pct;               /* operations in the DUPSORT bucket "dup" */
    int dkeys;                 /* its key ids used: 0..dkeys-1 (0 = NDK) */
};

static int64_t g_now;
static int64_t wl_clock(void *ctx)
{
    (void)ctx;
    return g_now;
}

static keel_bucket handle(keel_txn *t, int b, bool create)
{
    if (b == 0)
        return 0;
    keel_bucket h;
    int rc = keel_bucket_open(t, bname(b), create ? KEEL_CREATE : 0, &h);
    assert_int_equal(rc, 0);
    if (create)
        M.bexist[b] = true;
    return h;
}

static uint8_t *vbuf;

static void op_put(keel_txn *t, const struct wspec *ws, uint64_t *rng, int b, int k, bool big, int64_t ttl)
{
    char key[800];
    size_t kl = keystr(k, key);
    size_t vlen = big ? 2100 + tu_rand(rng) % (ws->big_max - 2100) : tu_rand(rng) % 200;
    uint64_t vseed = tu_rand(rng);
    gen_value(vseed, vbuf, vlen);
    keel_bucket h = handle(t, b, true);
    if (ttl)
        assert_int_equal(keel_put_ttl(t, h, (keel_val){key, kl}, (keel_val){vbuf, vlen}, ttl, 0), 0);
    else
        assert_int_equal(keel_put(t, h, (keel_val){key, kl}, (keel_val){vbuf, vlen}, 0), 0);
    M.e[b][k] = (struct mval){1, (uint32_t)vlen, XXH3_64bits(vbuf, vlen), ttl ? g_now + ttl : 0};
}

static void op_del(keel_txn *t, int b, int k)
{
    char key[800];
    size_t kl = keystr(k, key);
    if (b && !M.bexist[b])
        return;
    keel_bucket h = handle(t, b, false);
    int rc = keel_del(t, h, (keel_val){key, kl});
    struct mval *v = &M.e[b][k];
    bool visible = v->present && (!v->exp || v->exp > g_now);
    if (visible)
        assert_int_equal(rc, 0);
    else if (!v->present)
        assert_int_equal(rc, KEEL_NOTFOUND);
    else
        assert_true(rc == 0 || rc == KEEL_NOTFOUND);
    v->present = 0;
}

static void op_drop(keel_txn *t, int b)
{
    if (b && !M.bexist[b])
        return;
    keel_bucket h = handle(t, b, false);
    assert_int_equal(keel_bucket_drop(t, h), 0);
    memset(M.e[b], 0, sizeof M.e[b]);
    if (b)
        M.bexist[b] = false;
}

/* ---- the DUPSORT bucket ---- */
static keel_bucket dhandle(keel_txn *t)
{
    keel_bucket h;
    assert_int_equal(keel_bucket_open(t, "dup", KEEL_CREATE | KEEL_DUPSORT, &h), 0);
    M.dexist = true;
    return h;
}

static bool dlive_key(const struct dkey *d) { return d->set && (!d->exp || d->exp > g_now); }

static void dput(keel_txn *t, keel_bucket h, int k, int v, int64_t ttl)
{
    uint8_t key[512], val[256];
    size_t kl = dkeystr(k, key), vl = dvalstr(v, val);
    struct dkey *d = &M.d[k];
    if (!dlive_key(d)) /* absent or expired: its pairs go first */
        *d = (struct dkey){0, 0};
    int rc = ttl ? keel_put_ttl(t, h, (keel_val){key, kl}, (keel_val){val, vl}, ttl, 0)
                 : keel_put(t, h, (keel_val){key, kl}, (keel_val){val, vl}, 0);
    assert_int_equal(rc, 0);
    d->set |= (uint64_t)1 << v;
    if (ttl)
        d->exp = g_now + ttl;
}

static void op_dup(keel_txn *t, const struct wspec *ws, uint64_t *rng)
{
    int k = (int)(tu_rand(rng) % (uint64_t)(ws->dkeys ? ws->dkeys : NDK));
    int v = (int)(tu_rand(rng) % NDV);
    int r = (int)(tu_rand(rng) % 100);
    uint8_t key[512], val[256];
    size_t kl = dkeystr(k, key), vl = dvalstr(v, val);
    struct dkey *d = &M.d[k];
    if (r < 3) { /* drop it (and, next time, create it again) */
        if (M.dexist) {
            keel_bucket h;
            assert_int_equal(keel_bucket_open(t, "dup", 0, &h), 0);
            assert_int_equal(keel_bucket_drop(t, h), 0);
            memset(M.d, 0, sizeof M.d);
            M.dexist = false;
        }
        return;
    }
    keel_bucket h = dhandle(t);
    if (r < 45) {
        dput(t, h, k, v, r < 10 ? 1 + (int64_t)(tu_rand(rng) % 3000) : 0);
    } else if (r < 60) { /* many values: a key over several leaves */
        int n = 8 + (int)(tu_rand(rng) % (NDV - 8));
        for (int i = 0; i < n; i++)
            dput(t, h, k, (v + i * 7) % NDV, 0);
    } else if (r < 85) {
        bool there = dlive_key(d) && (d->set >> v & 1);
        assert_int_equal(keel_del_value(t, h, (keel_val){key, kl}, (keel_val){val, vl}), there ? 0 : KEEL_NOTFOUND);
        if (there && !(d->set &= ~((uint64_t)1 << v)))
            d->exp = 0;
    } else {
        bool live = dlive_key(d);
        assert_int_equal(keel_del(t, h, (keel_val){key, kl}), live ? 0 : KEEL_NOTFOUND);
        if (live)
            *d = (struct dkey){0, 0};
    }
}

static void random_txn_ops(keel_txn *t, const struct wspec *ws, uint64_t *rng)
{
    int nops = ws->ops_min + (int)(tu_rand(rng) % (uint64_t)(ws->ops_max - ws->ops_min + 1));
    for (int i = 0; i < nops; i++) {
        int r = (int)(tu_rand(rng) % 100);
        int b = tu_rand(rng) % 3 ? 0 : 1 + (int)(tu_rand(rng) % (NB - 1));
        int k = (int)(tu_rand(rng) % (uint64_t)ws->keys);
        if ((r -= ws->dup_pct) < 0) {
            op_dup(t, ws, rng);
        } else if ((r -= ws->del_pct) < 0) {
            op_del(t, b, k);
        } else if ((r -= ws->ttl_pct) < 0) {
            op_put(t, ws, rng, b, k, tu_rand(rng) % 100 < (uint64_t)ws->big_pct, 1 + (int64_t)(tu_rand(rng) % 3000));
        } else if ((r -= ws->bucket_pct) < 0) {
            if (b == 0)
                b = 1 + (int)(tu_rand(rng) % (NB - 1));
            if (M.bexist[b] && tu_rand(rng) % 3 == 0)
                op_drop(t, b);
            else if (tu_rand(rng) % 10 == 0)
                op_drop(t, 0); /* empties the default bucket */
            else
                (void)handle(t, b, true);
        } else if ((r -= ws->purge_pct) < 0) {
            size_t purged = 0;
            assert_int_equal(keel_purge(t, 1 + tu_rand(rng) % 50, &purged), 0);
        } else {
            op_put(t, ws, rng, b, k, tu_rand(rng) % 100 < (uint64_t)ws->big_pct, 0);
        }
    }
}

/* Delete nearly everything: the free space at the end of the file goes back. */
static void shrink_txn_ops(keel_txn *t)
{
    for (int b = 0; b < NB; b++)
        for (int k = 0; k < NK; k++)
            if (M.e[b][k].present && (k % 16 || M.e[b][k].vlen > 1000))
                op_del(t, b, k);
    if (!M.dexist)
        return;
    keel_bucket h = dhandle(t);
    uint8_t key[512];
    for (int k = 0; k < NDK; k++)
        if (k % 8 && dlive_key(&M.d[k])) {
            size_t kl = dkeystr(k, key);
            assert_int_equal(keel_del(t, h, (keel_val){key, kl}), 0);
            M.d[k] = (struct dkey){0, 0};
        }
}

/* Prints where a read txn and the model differ (for failure messages). */
static void print_diff(keel_txn *t, int64_t now)
{
    char key[800];
    for (int b = 0; b < NB; b++) {
        keel_bucket h = 0;
        int rc = b ? keel_bucket_open(t, bname(b), 0, &h) : 0;
        if ((rc == 0) != (b == 0 || M.bexist[b]))
            fprintf(stderr, "diff: bucket %d: model %s, db %s\n", b, M.bexist[b] ? "exists" : "absent",
                    keel_strerror(rc));
        if (rc)
            continue;
        for (int k = 0; k < NK; k++) {
            const struct mval *v = &M.e[b][k];
            bool want = v->present && (!v->exp || v->exp > now);
            size_t kl = keystr(k, key);
            keel_val val;
            int64_t exp = 0;
            rc = keel_get(t, h, (keel_val){key, kl}, &val);
            if (rc == 0)
                keel_expiry_at(t, h, (keel_val){key, kl}, &exp);
            if (want != (rc == 0) || (want && (val.len != v->vlen || XXH3_64bits(val.data, val.len) != v->vhash ||
                                              exp != v->exp)))
                fprintf(stderr,
                        "diff: bucket %d key %d: model %s (len %u, exp %lld), db %s (len %zu, exp %lld), now %lld\n",
                        b, k, want ? "present" : v->present ? "expired" : "absent", v->vlen, (long long)v->exp,
                        keel_strerror(rc), rc ? 0 : val.len, (long long)exp, (long long)now);
        }
    }
}

/* After a commit: the live db (read through the map) must equal the model. */
static void verify_live(keel_db *db, uint64_t want)
{
    int saved = R.busy;
    R.busy = 1;
    keel_txn *t;
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
    uint64_t d;
    assert_int_equal(db_digest_txn(t, &d), 0);
    if (d != want) {
        print_diff(t, g_now);
        digest_dump = fopen("/tmp/keel-crash-digest-db.txt", "w");
        db_digest_txn(t, &d);
        fclose(digest_dump);
        digest_dump = fopen("/tmp/keel-crash-digest-model.txt", "w");
        model_digest(&M, g_now);
        fclose(digest_dump);
        digest_dump = NULL;
    }
    keel_abort(t);
    assert_true(d == want);
    R.busy = saved;
}

/* keel gives free pages at the end of the file back only when the free
 * space manager drops them from the tail, which these workloads do not
 * reliably cause.  A commit that failed after growing the file (disk full
 * while writing its pages) leaves it longer than its pages need; the next
 * commit truncates it.  Do that by hand, as if long ago (durable), so the
 * truncation is explored at every crash point after it. */
static void grow_behind(const char *path)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint64_t to = R.cur_size + ((uint64_t)8 << 20);
    assert_int_equal(ftruncate(fd, (off_t)to), 0);
    close(fd);
    R.cur_size = R.size_fsynced = to;
    dur_resize(to);
}

static void push_acked(uint64_t txnid, uint64_t digest, int64_t t)
{
    acked[0] = acked[1];
    acked[1] = (struct state){txnid, digest, t};
    nacked++;
}

static void run_workload(const struct wspec *ws, uint64_t seed)
{
    char path[256];
    tu_path(path, sizeof path, ws->name);
    cur_workload = ws->name;
    cur_seed = seed;
    /* a failed assertion may have left the last test's state half way */
    bad_meta_at = UINT64_MAX;
    spare_meta_may_be_bad = false;
    disk_valid = false;
    uint64_t rng = seed * 0x2545F4914F6CDD1Dull + 7;
    uint64_t images0 = images_total, points0 = crash_points;
    double t0 = now_s();
    memset(&M, 0, sizeof M);
    nacked = 0;
    has_inflight = false;
    nosync_mode = (ws->flags & KEEL_NOSYNC) != 0;
    g_now = 1700000000000ll;
    keel_options opts = {.page_size = ws->psize, .flags = ws->flags, .clock = wl_clock};
    /* create the file before recording: a crash during creation is its own test */
    keel_db *db;
    assert_int_equal(keel_open(path, &opts, &db), 0);
    keel_close(db);
    rec_arm(path, ws->psize ? ws->psize : 4096, ws->flags);
    R.rng = seed ^ 0x5555;
    img_rng = seed ^ 0xAAAA;
    push_acked(0, model_digest(&M, g_now), g_now); /* before the open: its first sync is a crash point */
    assert_int_equal(keel_open(path, &opts, &db), 0);
    assert_true(R.fd >= 0);
    reach_compute(db);
    R.write_point_p = ws->write_point_p;
    R.write_point_images = ws->write_point_images;
    R.rand_per_sync = ws->rand_per_sync;
    int shrink_at = ws->shrink ? ws->ntxn / 2 : -1;
    struct wspec after = *ws; /* after the shrink: small txns of small values */
    after.big_pct = 0;
    after.ops_min = 1;
    after.ops_max = 4;
    for (int i = 0; i < ws->ntxn; i++) {
        g_now += (int64_t)(tu_rand(&rng) % 700);
        if (i == shrink_at)
            grow_behind(path);
        keel_txn *t;
        assert_int_equal(keel_begin(db, 0, &t), 0);
        if (i == shrink_at)
            shrink_txn_ops(t);
        else
            random_txn_ops(t, shrink_at >= 0 && i > shrink_at ? &after : ws, &rng);
        uint64_t digest = model_digest(&M, g_now);
        inflight = (struct state){keel_txn_id(t), digest, g_now};
        has_inflight = true;
        R.write_point_p = ws->write_point_p;
        int rc = keel_commit(t);
        assert_int_equal(rc, 0);
        has_inflight = false;
        keel_stat st;
        assert_int_equal(keel_db_stat(db, &st), 0);
        if (st.last_txnid == inflight.txnid)
            push_acked(inflight.txnid, digest, g_now);
        else /* nothing changed: no commit was written */
            assert_true(model_digest(&M, acked[1].t) == acked[1].digest);
        verify_live(db, digest);
        reach_compute(db);
        if (ws->reopen_every && (i + 1) % ws->reopen_every == 0) {
            keel_close(db);
            assert_int_equal(R.fd, -1);
            assert_int_equal(keel_open(path, &opts, &db), 0);
            assert_true(R.fd >= 0);
            verify_live(db, model_digest(&M, g_now));
        }
    }
    keel_stat st;
    assert_int_equal(keel_db_stat(db, &st), 0);
    keel_close(db);
    /* the end: whatever is still pending (a shrink, an unsynced meta) */
    R.write_point_p = 0;
    snprintf(where_desc, sizeof where_desc, "after the last commit");
    explore(where_desc, true, ws->rand_per_sync + 4);
    R.rand_per_sync = 0;
    /* a later sync makes everything durable: the last commit must be there */
    make_durable();
    img_desc[0] = 0;
    img_start();
    snprintf(where_desc, sizeof where_desc, "everything durable");
    if (!nosync_mode) {
        acked[0] = acked[1]; /* the last commit only */
        check_img();
    }
    print_message("%-22s %3d txns, %5llu crash points, %6llu images, %4llu syncs (%llu fsync), %llu meta writes, "
                  "%llu grows, %llu shrinks, %llu meta (%llu one-flush)/%llu COW order checks, file %llu KiB, %.1fs\n",
                  ws->name, ws->ntxn, (unsigned long long)(crash_points - points0),
                  (unsigned long long)(images_total - images0), (unsigned long long)R.syncs,
                  (unsigned long long)R.fsyncs, (unsigned long long)R.metas, (unsigned long long)R.grows,
                  (unsigned long long)R.shrinks, (unsigned long long)R.meta_checks,
                  (unsigned long long)R.oneflush_metas, (unsigned long long)R.cow_checks, (unsigned long long)(st.file_size >> 10), now_s() - t0);
    if (ws->shrink && !nosync_mode)
        assert_true(R.shrinks > 0);
    if (!nosync_mode)
        assert_true(R.syncs > 0);
    if (!(R.flags & (KEEL_NOSYNC | KEEL_NOMETASYNC)) && !order_checks_off)
        assert_true(R.oneflush_metas > 0); /* the one-flush protocol was exercised */
    rec_disarm();
    tu_remove(path);
}

static int setup(void **state)
{
    (void)state;
    const char *e = getenv("KEEL_CRASH_ORDER");
    order_checks_off = e && strcmp(e, "0") == 0;
    /* images live in tmpfs when there is one: rewriting a file on a disk file
     * system can start writeback (ext4 auto_da_alloc) */
    struct stat st;
    if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0)
        snprintf(img_path, sizeof img_path, "/dev/shm/keel-crash-image-%d.db", (int)getpid());
    else
        tu_path(img_path, sizeof img_path, "crash-image");
    tu_remove(img_path);
    vbuf = malloc(1 << 17);
    return vbuf ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    tu_remove(img_path);
    free(vbuf);
    free(img);
    free(t_img.v);
    free(t_disk.v);
    memset(&t_img, 0, sizeof t_img);
    memset(&t_disk, 0, sizeof t_disk);
    img_gen = 0;
    disk_valid = false;
    free(R.dur);
    free(R.pend);
    img = NULL;
    img_cap = 0;
    R.dur = NULL;
    R.pend = NULL;
    R.dur_cap = R.cap_pend = 0;
    print_message("images so far: %llu (%llu of them written to after the crash, %llu under KEEL_NOSYNC)\n",
                  (unsigned long long)images_total, (unsigned long long)images_written_to,
                  (unsigned long long)images_nosync);
    return 0;
}

/* ---- the tests ---- */

/* Small txns, small pending lists: every subset of every crash point. */
static void test_small_exhaustive(void **state)
{
    (void)state;
    long scale = tu_scale();
    uint64_t seed = tu_seed(1);
    for (long r = 0; r < 4 * scale; r++) {
        struct wspec ws = {.name = "small-exhaustive", .ntxn = 30, .ops_min = 1, .ops_max = 4, .keys = 40,
                           .big_pct = 5, .big_max = 9000, .del_pct = 25, .ttl_pct = 10, .bucket_pct = 8,
                           .purge_pct = 4, .exhaustive = true, .rand_per_sync = 2, .write_point_p = 0.3,
                           .write_point_images = 4, .reopen_every = 11, .dup_pct = 15, .dkeys = 12};
        run_workload(&ws, seed + (uint64_t)r);
    }
}

static void test_mixed(void **state)
{
    (void)state;
    long scale = tu_scale();
    uint64_t seed = tu_seed(2);
    struct wspec ws = {.name = "mixed", .ntxn = (int)(100 * scale), .ops_min = 1, .ops_max = 40, .keys = 600,
                       .big_pct = 8, .big_max = 20000, .del_pct = 30, .ttl_pct = 15, .bucket_pct = 4,
                       .purge_pct = 3, .exhaustive = true, .rand_per_sync = 8, .write_point_p = 0.05,
                       .write_point_images = 3, .reopen_every = 25, .dup_pct = 12};
    run_workload(&ws, seed);
}

static void test_mixed_8k(void **state)
{
    (void)state;
    long scale = tu_scale();
    uint64_t seed = tu_seed(3);
    struct wspec ws = {.name = "mixed-8k", .psize = 8192, .ntxn = (int)(40 * scale), .ops_min = 1, .ops_max = 30,
                       .keys = 400, .big_pct = 10, .big_max = 30000, .del_pct = 30, .ttl_pct = 10, .bucket_pct = 4,
                       .purge_pct = 3, .exhaustive = true, .rand_per_sync = 4, .write_point_p = 0.05,
                       .write_point_images = 3};
    run_workload(&ws, seed);
}

/* Overflow values, the file growing over several MiB, then nearly everything
 * deleted so that it shrinks. */
static void test_grow_shrink(void **state)
{
    (void)state;
    long scale = tu_scale();
    uint64_t seed = tu_seed(4);
    struct wspec ws = {.name = "grow-shrink", .ntxn = (int)(40 * scale), .ops_min = 6, .ops_max = 20,
                       .keys = 1000, .big_pct = 70, .big_max = 50000, .del_pct = 5, .ttl_pct = 5, .bucket_pct = 2,
                       .purge_pct = 2, .shrink = true, .exhaustive = true, .rand_per_sync = 1,
                       .write_point_p = 0.01, .write_point_images = 1};
    run_workload(&ws, seed);
}

static void test_nometasync(void **state)
{
    (void)state;
    long scale = tu_scale();
    uint64_t seed = tu_seed(5);
    struct wspec ws = {.name = "nometasync", .flags = KEEL_NOMETASYNC, .ntxn = (int)(50 * scale), .ops_min = 1,
                       .ops_max = 25, .keys = 300, .big_pct = 10, .big_max = 20000, .del_pct = 30, .ttl_pct = 10,
                       .bucket_pct = 5, .purge_pct = 3, .exhaustive = true, .rand_per_sync = 6,
                       .write_point_p = 0.1, .write_point_images = 3, .reopen_every = 17, .dup_pct = 10};
    run_workload(&ws, seed);
    struct wspec ws2 = {.name = "nometasync-shrink", .flags = KEEL_NOMETASYNC, .ntxn = (int)(40 * scale),
                        .ops_min = 6, .ops_max = 20, .keys = 1000, .big_pct = 70, .big_max = 50000, .del_pct = 5,
                        .ttl_pct = 5, .bucket_pct = 2, .purge_pct = 2, .shrink = true, .exhaustive = true,
                        .rand_per_sync = 1, .write_point_p = 0.01, .write_point_images = 1};
    run_workload(&ws2, seed + 1);
}

/* Mostly DUPSORT writes: keys of up to 64 values over several 4 KiB leaves,
 * pairs with zero and 0xFF bytes, TTLs per key, deletes of single pairs
 * and whole keys, drops; then nearly everything deleted (the file shrinks). */
static void test_dupsort(void **state)
{
    (void)state;
    long scale = tu_scale();
    uint64_t seed = tu_seed(8);
    struct wspec ws = {.name = "dupsort", .ntxn = (int)(40 * scale), .ops_min = 2, .ops_max = 30, .keys = 200,
                       .big_pct = 5, .big_max = 9000, .del_pct = 5, .ttl_pct = 3, .bucket_pct = 1, .purge_pct = 3,
                       .shrink = true, .exhaustive = true, .rand_per_sync = 3, .write_point_p = 0.05,
                       .write_point_images = 2, .reopen_every = 13, .dup_pct = 75};
    run_workload(&ws, seed);
}

/* KEEL_NOSYNC: no durability promise; images must only be handled without a crash. */
static void test_nosync(void **state)
{
    (void)state;
    long scale = tu_scale();
    uint64_t seed = tu_seed(6);
    struct wspec ws = {.name = "nosync", .flags = KEEL_NOSYNC, .ntxn = (int)(25 * scale), .ops_min = 1,
                       .ops_max = 20, .keys = 200, .big_pct = 10, .big_max = 20000, .del_pct = 30, .ttl_pct = 10,
                       .bucket_pct = 5, .purge_pct = 3, .exhaustive = false, .rand_per_sync = 0,
                       .write_point_p = 0.05, .write_point_images = 12};
    run_workload(&ws, seed);
}

/* ---- a crash while keel_open creates the file ---- */
static void test_create(void **state)
{
    (void)state;
    char path[256];
    tu_path(path, sizeof path, "crash-create");
    cur_workload = "create";
    uint64_t opened = 0, refused = 0;
    for (int ps = 4096; ps <= 16384; ps *= 2) {
        tu_remove(path);
        rec_arm(path, (uint32_t)ps, 0);
        keel_options o = {.page_size = (uint32_t)ps};
        /* the recorder explores the creation's fsync; no acknowledged state
         * exists yet (keel_open has not returned): only "no crash" is required */
        nacked = 0;
        has_inflight = false;
        nosync_mode = true;
        keel_db *db;
        assert_int_equal(keel_open(path, &o, &db), 0);
        keel_close(db);
        nosync_mode = false;
        rec_disarm();
        /* the images the creation could leave: keel writes page 1, syncs,
         * then writes page 0; each prefix of those sectors, in that order */
        size_t size;
        uint8_t *file = read_file(path, &size);
        assert_true(size == 2 * (size_t)ps);
        size_t half = size / 2 / SECTOR;
        for (size_t cut = 0; cut <= 2 * half; cut++) {
            for (int z = 0; z < 2; z++) {
                img_gen = 0; /* not based on a durable image */
                img_reserve(size);
                memset(img, 0, size);
                size_t p1 = cut < half ? cut : half, p0 = cut < half ? 0 : cut - half;
                memcpy(img + size / 2, file + size / 2, p1 * SECTOR);
                memcpy(img, file, p0 * SECTOR);
                img_size = p0 == 0 && p1 > 0 ? size / 2 + p1 * SECTOR : (p0 ? size : 0);
                if (z) /* the size reached the disk, not the data */
                    img_extend(size, false);
                write_img_file();
                images_create++;
                keel_db *d2;
                int rc = keel_open(img_path, NULL, &d2);
                disk_valid = false; /* keel may create or write it */
                if (rc == 0) {
                    /* one meta may be missing: reported, and repaired by the next commit */
                    opened++;
                    uint64_t problems = 99;
                    spare_meta_may_be_bad = true;
                    other_problems = 0;
                    assert_int_equal(keel_check(d2, img_report, NULL, &problems), 0);
                    spare_meta_may_be_bad = false;
                    assert_int_equal(other_problems, 0);
                    keel_txn *t;
                    assert_int_equal(keel_begin(d2, 0, &t), 0);
                    assert_int_equal(keel_put(t, 0, tu_val("k"), tu_val("v"), 0), 0);
                    assert_int_equal(keel_commit(t), 0);
                    assert_int_equal(keel_check(d2, report, NULL, &problems), 0);
                    if (problems) fail_msg("creation image cut %zu z %d ps %d: %llu problems after a commit", cut, z, ps, (unsigned long long)problems);
                    keel_close(d2);
                } else {
                    /* An unfinished creation with page 1's meta is started over.
                     * One of zeros only (the size arrived, no data) could as well
                     * be somebody else's file: it is refused, never formatted. */
                    refused++;
                    bool zeros = true;
                    for (size_t i = 0; i < img_size && zeros; i++)
                        zeros = img[i] == 0;
                    if (!zeros || rc != KEEL_INVALID)
                        fail_msg("creation image (cut %zu sectors, size %s) refused: %s", cut, z ? "durable" : "cut",
                                 keel_strerror(rc));
                }
            }
        }
        free(file);
    }
    print_message("creation: %llu images, %llu open, %llu refused (KEEL_INVALID/KEEL_CORRUPTED)\n",
                  (unsigned long long)images_create, (unsigned long long)opened, (unsigned long long)refused);
    tu_remove(path);
}

/* ======================================================================
 * Process death.
 * ====================================================================== */
#define PD_WINDOW 40 /* keys kept: commit i adds p(i) and deletes p(i - PD_WINDOW) */

static size_t pd_value(uint64_t i, uint8_t *buf)
{
    size_t len = i % 5 == 0 ? 3000 + (size_t)(i * 7919 % 30000) : 10 + (size_t)(i % 90);
    gen_value(i, buf, len);
    return len;
}

static void pd_key(uint64_t i, char *k) { snprintf(k, 32, "p%08llu", (unsigned long long)i); }

/* Each commit i also adds the pair (pd_dkey(i), pd_dval(i)) to the DUPSORT
 * bucket "pd" and deletes the pair of commit i - PD_WINDOW: 7 keys with a
 * zero byte, values that sort as i does (8 bytes big-endian, then zeros). */
#define PD_DKEYS 7
static keel_val pd_dkey(uint64_t i, uint8_t *buf)
{
    buf[0] = 'g';
    buf[1] = 0;
    buf[2] = (uint8_t)(i % PD_DKEYS);
    return (keel_val){buf, 3};
}
static keel_val pd_dval(uint64_t i, uint8_t *buf)
{
    for (int b = 0; b < 8; b++)
        buf[b] = (uint8_t)(i >> (56 - 8 * b));
    size_t pad = (size_t)(i % 3) * 100;
    memset(buf + 8, 0, pad);
    return (keel_val){buf, 8 + pad};
}

static int pd_read_ctr(keel_txn *t, uint64_t *ctr)
{
    keel_val v;
    int rc = keel_get(t, 0, tu_val("ctr"), &v);
    if (rc == KEEL_NOTFOUND) {
        *ctr = 0;
        return 0;
    }
    if (rc)
        return rc;
    char buf[32];
    if (v.len == 0 || v.len >= sizeof buf)
        return KEEL_CORRUPTED;
    memcpy(buf, v.data, v.len);
    buf[v.len] = 0;
    *ctr = strtoull(buf, NULL, 10);
    return 0;
}

static void pd_child(const char *path, int wfd, unsigned flags)
{
    keel_options o = {.flags = flags};
    keel_db *db;
    if (keel_open(path, &o, &db))
        _exit(3);
    uint8_t *buf = malloc(1 << 16);
    keel_txn *t;
    if (!buf || keel_begin(db, KEEL_RDONLY, &t))
        _exit(4);
    uint64_t ctr;
    if (pd_read_ctr(t, &ctr))
        _exit(5);
    keel_abort(t);
    for (int n = 0; n < 1000000; n++) {
        uint64_t i = ctr + 1;
        char k[32], c[32];
        if (keel_begin(db, 0, &t))
            _exit(6);
        pd_key(i, k);
        size_t len = pd_value(i, buf);
        if (keel_put(t, 0, tu_val(k), (keel_val){buf, len}, 0))
            _exit(7);
        if (i > PD_WINDOW) {
            pd_key(i - PD_WINDOW, k);
            if (keel_del(t, 0, tu_val(k)))
                _exit(8);
        }
        keel_bucket d;
        uint8_t dk[4], dv[256];
        if (keel_bucket_open(t, "pd", KEEL_CREATE | KEEL_DUPSORT, &d) ||
            keel_put(t, d, pd_dkey(i, dk), pd_dval(i, dv), KEEL_NODUPDATA))
            _exit(12);
        if (i > PD_WINDOW && keel_del_value(t, d, pd_dkey(i - PD_WINDOW, dk), pd_dval(i - PD_WINDOW, dv)))
            _exit(13);
        snprintf(c, sizeof c, "%llu", (unsigned long long)i);
        if (keel_put(t, 0, tu_val("ctr"), tu_val(c), 0))
            _exit(9);
        if (keel_commit(t))
            _exit(10);
        ctr = i;
        if (write(wfd, &ctr, sizeof ctr) != (ssize_t)sizeof ctr)
            _exit(11);
    }
    _exit(0);
}

/* The db must hold exactly the state after commit c. */
static void pd_verify(keel_db *db, uint64_t c)
{
    keel_txn *t;
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
    uint64_t ctr;
    assert_int_equal(pd_read_ctr(t, &ctr), 0);
    assert_true(ctr == c);
    keel_cursor *cur;
    assert_int_equal(keel_cursor_open(t, 0, &cur), 0);
    keel_val k, v;
    if (c == 0) { /* killed before its first commit */
        assert_int_equal(keel_cursor_first(cur, &k, &v), KEEL_NOTFOUND);
        keel_cursor_close(cur);
        keel_abort(t);
        return;
    }
    assert_int_equal(keel_cursor_first(cur, &k, &v), 0);
    assert_true(k.len == 3 && memcmp(k.data, "ctr", 3) == 0);
    uint64_t from = c > PD_WINDOW ? c - PD_WINDOW + 1 : 1;
    uint8_t *buf = malloc(1 << 16);
    for (uint64_t i = from; i <= c; i++) {
        char key[32];
        pd_key(i, key);
        assert_int_equal(keel_cursor_next(cur, &k, &v), 0);
        assert_true(k.len == strlen(key) && memcmp(k.data, key, k.len) == 0);
        size_t len = pd_value(i, buf);
        assert_true(v.len == len && memcmp(v.data, buf, len) == 0);
    }
    assert_int_equal(keel_cursor_next(cur, &k, &v), KEEL_NOTFOUND);
    free(buf);
    keel_cursor_close(cur);
    /* the DUPSORT bucket: the window's pairs, key by key, values in commit order */
    keel_bucket d;
    assert_int_equal(keel_bucket_open(t, "pd", 0, &d), 0);
    assert_int_equal(keel_cursor_open(t, d, &cur), 0);
    int rc = keel_cursor_first(cur, &k, &v);
    for (uint64_t kk = 0; kk < PD_DKEYS; kk++) {
        bool first = true;
        for (uint64_t i = from; i <= c; i++) {
            if (i % PD_DKEYS != kk)
                continue;
            uint8_t dk[4], dv[256];
            keel_val wk = pd_dkey(i, dk), wv = pd_dval(i, dv);
            if (!first)
                rc = keel_cursor_next_dup(cur, &k, &v);
            assert_int_equal(rc, 0);
            assert_true(k.len == wk.len && memcmp(k.data, wk.data, k.len) == 0);
            assert_true(v.len == wv.len && memcmp(v.data, wv.data, v.len) == 0);
            first = false;
        }
        if (!first) {
            assert_int_equal(keel_cursor_next_dup(cur, &k, &v), KEEL_NOTFOUND);
            rc = keel_cursor_next_key(cur, &k, &v);
        }
    }
    assert_int_equal(rc, KEEL_NOTFOUND);
    keel_cursor_close(cur);
    keel_abort(t);
}

static void test_process_death(void **state)
{
    (void)state;
    char path[256];
    tu_path(path, sizeof path, "crash-kill");
    uint64_t rng = tu_seed(7) * 0x9E3779B97F4A7C15ull + 3;
    int kills = (int)(50 * tu_scale());
    uint64_t acked_ctr = 0, inflight_landed = 0, total_commits = 0;
    double t0 = now_s();
    for (int k = 0; k < kills; k++) {
        int pfd[2];
        assert_int_equal(pipe(pfd), 0);
        unsigned flags = k % 3 == 0 ? 0 : k % 3 == 1 ? KEEL_NOSYNC : KEEL_NOMETASYNC;
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(pfd[0]);
            pd_child(path, pfd[1], flags);
        }
        close(pfd[1]);
        /* mostly after the writer is under way (slow starts under ASan), but
         * one time in five at any moment, opening included */
        if (k % 5) {
            struct pollfd pl = {pfd[0], POLLIN, 0};
            poll(&pl, 1, 5000);
        }
        struct timespec ts = {0, (long)(tu_rand(&rng) % 30000000)}; /* 0..30 ms */
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        /* the child must have died of the signal, not of an error of its own */
        if (!WIFSIGNALED(status))
            fail_msg("writer exited with status %d", WEXITSTATUS(status));
        uint64_t v, last = acked_ctr;
        ssize_t r;
        while ((r = read(pfd[0], &v, sizeof v)) == (ssize_t)sizeof v) {
            assert_true(v == last + 1); /* commits are acknowledged in order */
            last = v;
        }
        close(pfd[0]);
        total_commits += last - acked_ctr;
        keel_db *db;
        assert_int_equal(keel_open(path, NULL, &db), 0);
        uint64_t problems = 99;
        assert_int_equal(keel_check(db, report, NULL, &problems), 0);
        assert_int_equal(problems, 0);
        keel_txn *t;
        assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
        uint64_t ctr;
        assert_int_equal(pd_read_ctr(t, &ctr), 0);
        keel_abort(t);
        /* every acknowledged commit is there; at most the one in flight more */
        assert_true(ctr == last || ctr == last + 1);
        if (ctr == last + 1)
            inflight_landed++;
        pd_verify(db, ctr);
        keel_close(db);
        acked_ctr = ctr;
    }
    print_message("process death: %d kills, %llu acknowledged commits, %llu in-flight commits found "
                  "complete, %.1fs\n",
                  kills, (unsigned long long)total_commits, (unsigned long long)inflight_landed, now_s() - t0);
    assert_true(total_commits > 0);
    tu_remove(path);
}

/* Last: the default run tries at least 10,000 images (scaled by KEEL_TEST_SCALE). */
static void test_image_count(void **state)
{
    (void)state;
    uint64_t all = images_total + images_create;
    print_message("crash images: %llu in all (%llu at %llu crash points in workloads, %llu of creation)\n",
                  (unsigned long long)all, (unsigned long long)images_total, (unsigned long long)crash_points,
                  (unsigned long long)images_create);
    assert_true(all >= 10000 * (uint64_t)tu_scale());
}

int main(void)
{
    double t0 = now_s();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_exhaustive), cmocka_unit_test(test_mixed),
        cmocka_unit_test(test_mixed_8k),         cmocka_unit_test(test_grow_shrink),
        cmocka_unit_test(test_nometasync),       cmocka_unit_test(test_dupsort),
        cmocka_unit_test(test_nosync),
        cmocka_unit_test(test_create),           cmocka_unit_test(test_process_death),
        cmocka_unit_test(test_image_count),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    fprintf(stderr, "test_crash: %llu crash images in %llu crash points, %.1fs\n", (unsigned long long)images_total,
            (unsigned long long)crash_points, now_s() - t0);
    return rc;
}
