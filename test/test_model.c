/*
 * test_model.c — model-based randomized test of the public API.
 *
 * Thousands of random operations run against the database and against a
 * plain in-memory model (per bucket: a sorted array of immutable,
 * reference-counted entries, binary search).  After every operation the
 * result is compared with the model; at every commit, abort and reopen every
 * bucket is compared whole (forward and backward cursor walks, counts), and
 * keel_check() runs at every reopen and at some commits.  A read txn is
 * sometimes kept open across several commits and must keep seeing the state
 * committed before it began.
 *
 * Operations: put (also KEEL_NOOVERWRITE, KEEL_APPEND), del, get, cursor
 * seeks and walks, cursor walks mixed with cursor_del/put/del, bulk loads
 * and cursor sweeps, bucket drop, commit, abort, close + reopen.  Phases
 * alternate between growing toward a random size and shrinking, so trees
 * get deep and empty out again.  Keys are 1 byte to keel_max_key_size(),
 * mostly short, built on shared prefixes; values are empty, small, 1-2 KB,
 * around half a page, or 5-100 KB overflow values.
 *
 * Reproduce a failure: the failing seed, page size and step are printed;
 *   KEEL_SEED=<seed> ./build/test/test_model
 * runs every page size with that seed.  KEEL_TEST_SCALE=<n> multiplies the
 * number of steps; KEEL_MODEL_TRACE=1 prints every operation (to stderr).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "keel.h"
#include "testutil.h"

/* ======================================================================
 * The model
 * ====================================================================== */

/* An immutable (key, value) pair, shared between model copies by refcount. */
struct ent {
    int refs;
    size_t klen, vlen;
    uint8_t data[]; /* key, then value */
};
static inline const uint8_t *ent_key(const struct ent *e) { return e->data; }
static inline const uint8_t *ent_val(const struct ent *e) { return e->data + e->klen; }

static struct ent *ent_new(const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    struct ent *e = malloc(sizeof(*e) + kl + vl);
    assert_non_null(e);
    e->refs = 1;
    e->klen = kl;
    e->vlen = vl;
    memcpy(e->data, k, kl);
    if (vl)
        memcpy(e->data + kl, v, vl);
    return e;
}

static void ent_unref(struct ent *e)
{
    if (e && --e->refs == 0)
        free(e);
}

/* bytewise order, a prefix first */
static int kcmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c)
        return c < 0 ? -1 : 1;
    return al < bl ? -1 : al > bl;
}

struct model { /* sorted by key, no duplicates */
    struct ent **v;
    size_t n, cap;
};

/* index of the first entry with key >= k (n if none) */
static size_t m_lower(const struct model *m, const uint8_t *k, size_t kl)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (kcmp(ent_key(m->v[mid]), m->v[mid]->klen, k, kl) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* index of the first entry with key > k (n if none) */
static size_t m_upper(const struct model *m, const uint8_t *k, size_t kl)
{
    size_t i = m_lower(m, k, kl);
    if (i < m->n && kcmp(ent_key(m->v[i]), m->v[i]->klen, k, kl) == 0)
        i++;
    return i;
}

static struct ent *m_get(const struct model *m, const uint8_t *k, size_t kl)
{
    size_t i = m_lower(m, k, kl);
    if (i < m->n && kcmp(ent_key(m->v[i]), m->v[i]->klen, k, kl) == 0)
        return m->v[i];
    return NULL;
}

/* insert or replace; takes over the caller's reference */
static void m_put(struct model *m, struct ent *e)
{
    size_t i = m_lower(m, ent_key(e), e->klen);
    if (i < m->n && kcmp(ent_key(m->v[i]), m->v[i]->klen, ent_key(e), e->klen) == 0) {
        ent_unref(m->v[i]);
        m->v[i] = e;
        return;
    }
    if (m->n == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 64;
        m->v = realloc(m->v, m->cap * sizeof(*m->v));
        assert_non_null(m->v);
    }
    memmove(m->v + i + 1, m->v + i, (m->n - i) * sizeof(*m->v));
    m->v[i] = e;
    m->n++;
}

static bool m_del(struct model *m, const uint8_t *k, size_t kl)
{
    size_t i = m_lower(m, k, kl);
    if (i == m->n || kcmp(ent_key(m->v[i]), m->v[i]->klen, k, kl) != 0)
        return false;
    ent_unref(m->v[i]);
    memmove(m->v + i, m->v + i + 1, (m->n - i - 1) * sizeof(*m->v));
    m->n--;
    return true;
}

static void m_clear(struct model *m)
{
    for (size_t i = 0; i < m->n; i++)
        ent_unref(m->v[i]);
    m->n = 0;
}

static void m_free(struct model *m)
{
    m_clear(m);
    free(m->v);
    memset(m, 0, sizeof(*m));
}

static void m_copy(struct model *dst, const struct model *src)
{
    m_clear(dst);
    if (dst->cap < src->n) {
        dst->cap = src->n;
        dst->v = realloc(dst->v, dst->cap * sizeof(*dst->v));
        assert_non_null(dst->v);
    }
    for (size_t i = 0; i < src->n; i++) {
        dst->v[i] = src->v[i];
        dst->v[i]->refs++;
    }
    dst->n = src->n;
}

/* ======================================================================
 * The world: database, txns, models, random source
 * ====================================================================== */

#define NB 4    /* the default bucket and three named ones */
#define NPREF 6 /* key prefixes */
static const char *const bucket_names[NB] = {NULL, "alpha", "beta", "gamma"};

struct world {
    uint64_t seed, rng;
    uint32_t psize;
    unsigned flags;
    char path[512];
    keel_db *db;
    size_t maxkey;
    keel_bucket h[NB];

    keel_txn *w;                 /* the write txn (always open between steps) */
    struct model cur[NB];        /* what w must see */
    struct model com[NB];        /* the last committed state */
    uint64_t com_id;             /* its txn id */

    keel_txn *r;                 /* a long-lived read txn, or NULL */
    struct model snap[NB];       /* what r must see */
    uint64_t snap_id;
    int r_commits;               /* commits left before r ends */

    uint8_t *pref[NPREF];
    size_t preflen[NPREF];
    uint8_t *kbuf, *kbuf2, *vbuf;
    size_t vcap;

    long step, nsteps;
    size_t max_target;
    size_t target;  /* total entries the current phase heads for */
    bool shrinking; /* above the target: deletes dominate */
    const char *op; /* the operation under way, for failure reports */
    bool trace;
    struct {
        long puts, dels, gets, seeks, dances, walks, commits, aborts, reopens, readers, drops;
        size_t max_entries; /* in one bucket, at a full check */
        uint32_t max_depth;
    } stats;
};

static struct world *g; /* for failure reports */

static void where(const char *what)
{
    if (!g)
        return;
    print_error("test_model FAILED: %s\n  seed=%#llx page_size=%u step=%ld op=%s\n"
                "  reproduce: KEEL_SEED=%#llx ./build/test/test_model\n",
                what, (unsigned long long)g->seed, g->psize, g->step, g->op ? g->op : "?",
                (unsigned long long)g->seed);
}

/* Assertions that print the seed and step before failing. */
#define CHECK_RC(call, want)                                                                     \
    do {                                                                                         \
        int rc_ = (call), want_ = (want);                                                        \
        if (rc_ != want_) {                                                                      \
            char m_[512];                                                                        \
            snprintf(m_, sizeof m_, "%s answered %d (%s; %s), expected %d (%s)", #call, rc_,     \
                     keel_strerror(rc_), keel_error_detail(), want_, keel_strerror(want_));      \
            where(m_);                                                                           \
        }                                                                                        \
        assert_int_equal(rc_, want_);                                                            \
    } while (0)
#define CHECK_INT(a, b)                                                                          \
    do {                                                                                         \
        unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b);           \
        if (a_ != b_) {                                                                          \
            char m_[256];                                                                        \
            snprintf(m_, sizeof m_, "%s == %llu, expected %s == %llu", #a, a_, #b, b_);          \
            where(m_);                                                                           \
        }                                                                                        \
        assert_int_equal(a_, b_);                                                                \
    } while (0)
/* memcmp first: cmocka's byte-by-byte compare is slow on big values */
#define CHECK_MEM(a, b, n)                                                                       \
    do {                                                                                         \
        size_t n_ = (n);                                                                         \
        int differ_ = n_ && memcmp((a), (b), n_) != 0;                                           \
        if (differ_) {                                                                           \
            where("bytes differ: " #a " vs " #b);                                                \
            assert_memory_equal((a), (b), n_);                                                   \
        }                                                                                        \
        assert_false(differ_);                                                                   \
    } while (0)

static void trace(struct world *w, const char *fmt, ...)
{
    if (!w->trace)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[%ld] ", w->step);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static inline uint64_t rnd(struct world *w) { return tu_rand(&w->rng); }
static inline size_t below(struct world *w, size_t n) { return n ? (size_t)(rnd(w) % n) : 0; }
static inline bool chance(struct world *w, unsigned pct) { return below(w, 100) < pct; }
static inline size_t between(struct world *w, size_t lo, size_t hi) { return lo + below(w, hi - lo + 1); }

/* Clustered bytes: a small alphabet with the extremes of the byte range. */
static uint8_t key_byte(struct world *w)
{
    static const uint8_t alpha[] = {'a', 'b', 'c', 'd', 'e', 0x00, 0x7f, 0x80, 0xff};
    return alpha[below(w, chance(w, 85) ? 5 : sizeof alpha)];
}

/* A random key into buf; shared prefixes make keys cluster, short keys
 * collide, and some keys are prefixes of others. */
static size_t gen_key(struct world *w, uint8_t *buf)
{
    size_t r = below(w, 100), p;
    if (r < 30)
        p = 0;
    else if (r < 55)
        p = 1;
    else if (r < 75)
        p = 2;
    else if (r < 87)
        p = 3;
    else if (r < 95)
        p = 4;
    else
        p = 5;
    size_t pl = w->preflen[p];
    memcpy(buf, w->pref[p], pl);
    size_t room = w->maxkey - pl, sl;
    r = below(w, 100);
    if (r < 70)
        sl = between(w, 1, 6);
    else if (r < 90)
        sl = between(w, 7, 32);
    else if (r < 97)
        sl = between(w, 33, 300);
    else
        sl = chance(w, 50) ? room : between(w, 1, room);
    if (sl > room)
        sl = room;
    if (pl + sl == 0)
        sl = 1;
    for (size_t i = 0; i < sl; i++)
        buf[pl + i] = key_byte(w);
    return pl + sl;
}

/* A key that is in the model (when it is not empty) or a random one. */
static size_t pick_key(struct world *w, const struct model *m, uint8_t *buf, unsigned pct_existing)
{
    if (m->n && chance(w, pct_existing)) {
        const struct ent *e = m->v[below(w, m->n)];
        memcpy(buf, ent_key(e), e->klen);
        return e->klen;
    }
    return gen_key(w, buf);
}

/* A random value size: empty, small, medium, around the inline limit, or
 * big enough for an overflow run. */
static size_t gen_vlen(struct world *w)
{
    size_t r = below(w, 1000);
    if (r < 100)
        return 0;
    if (r < 600)
        return between(w, 1, 64);
    if (r < 780)
        return between(w, 65, 700);
    if (r < 900)
        return between(w, 1000, 2000);
    if (r < 960) /* around half a page: the inline / overflow boundary */
        return between(w, w->psize / 2 - 200, w->psize / 2 + 64);
    return between(w, 5 * 1024, 100 * 1024);
}

static void gen_val(struct world *w, size_t len)
{
    if (len > w->vcap) {
        w->vcap = len;
        w->vbuf = realloc(w->vbuf, len);
        assert_non_null(w->vbuf);
    }
    for (size_t i = 0; i < len; i += 8) {
        uint64_t x = rnd(w);
        memcpy(w->vbuf + i, &x, len - i < 8 ? len - i : 8);
    }
}

static struct ent *gen_ent(struct world *w, const uint8_t *k, size_t kl)
{
    size_t vl = gen_vlen(w);
    gen_val(w, vl);
    return ent_new(k, kl, w->vbuf, vl);
}

/* ======================================================================
 * Checks
 * ====================================================================== */

static void check_entry(const struct ent *e, keel_val k, keel_val v)
{
    CHECK_INT(k.len, e->klen);
    CHECK_MEM(k.data, ent_key(e), e->klen);
    CHECK_INT(v.len, e->vlen);
    CHECK_MEM(v.data, ent_val(e), e->vlen);
}

/* A cursor answer (rc, k, v) must be entry i of m, or KEEL_NOTFOUND when i
 * is out of range. */
static void check_at(const struct model *m, size_t i, int rc, keel_val k, keel_val v)
{
    if (i >= m->n) {
        CHECK_RC(rc, KEEL_NOTFOUND);
        return;
    }
    CHECK_RC(rc, 0);
    check_entry(m->v[i], k, v);
}

static void check_get(struct world *w, keel_txn *t, keel_bucket h, const struct model *m, const uint8_t *k,
                      size_t kl)
{
    keel_val v = {NULL, 0};
    const struct ent *e = m_get(m, k, kl);
    int rc = keel_get(t, h, (keel_val){k, kl}, &v);
    (void)w;
    if (!e) {
        CHECK_RC(rc, KEEL_NOTFOUND);
        return;
    }
    CHECK_RC(rc, 0);
    CHECK_INT(v.len, e->vlen);
    CHECK_MEM(v.data, ent_val(e), e->vlen);
}

/* Whole-bucket comparison: counts, a forward and a backward walk, the ends,
 * and (if gets) a lookup of every key and of some absent ones. */
static void verify_bucket(struct world *w, keel_txn *t, keel_bucket h, const struct model *m, bool gets)
{
    keel_stat st;
    CHECK_RC(keel_bucket_stat(t, h, &st), 0);
    CHECK_INT(st.entries, m->n);
    CHECK_INT(st.page_size, w->psize);
    if (m->n == 0)
        CHECK_INT(st.depth, 0);
    if (st.depth > w->stats.max_depth)
        w->stats.max_depth = st.depth;
    if (m->n > w->stats.max_entries)
        w->stats.max_entries = m->n;

    keel_cursor *c;
    keel_val k, v;
    CHECK_RC(keel_cursor_open(t, h, &c), 0);
    /* a fresh cursor: next() starts at the first entry, prev() at the last */
    check_at(m, 0, keel_cursor_next(c, &k, &v), k, v);
    check_at(m, 0, keel_cursor_first(c, &k, &v), k, v);
    size_t i = 0;
    for (;;) {
        int rc = keel_cursor_next(c, &k, &v);
        i++;
        check_at(m, i, rc, k, v);
        if (i >= m->n)
            break;
    }
    if (m->n) {
        /* past the end: the cursor stays on the last entry */
        CHECK_RC(keel_cursor_next(c, &k, &v), KEEL_NOTFOUND);
        CHECK_RC(keel_cursor_current(c, &k, &v), 0);
        check_entry(m->v[m->n - 1], k, v);
        check_at(m, m->n - 2, keel_cursor_prev(c, &k, &v), k, v);
    }
    keel_cursor_close(c);

    CHECK_RC(keel_cursor_open(t, h, &c), 0);
    check_at(m, m->n - 1, keel_cursor_prev(c, &k, &v), k, v);
    check_at(m, m->n - 1, keel_cursor_last(c, &k, &v), k, v);
    for (size_t j = m->n; j-- > 1;)
        check_at(m, j - 1, keel_cursor_prev(c, &k, &v), k, v);
    if (m->n) {
        CHECK_RC(keel_cursor_prev(c, &k, &v), KEEL_NOTFOUND);
        CHECK_RC(keel_cursor_current(c, &k, &v), 0);
        check_entry(m->v[0], k, v);
        check_at(m, 1, keel_cursor_next(c, &k, &v), k, v);
    }
    keel_cursor_close(c);

    if (gets) {
        for (size_t j = 0; j < m->n; j++)
            check_get(w, t, h, m, ent_key(m->v[j]), m->v[j]->klen);
        for (int j = 0; j < 20; j++) {
            size_t kl = gen_key(w, w->kbuf);
            check_get(w, t, h, m, w->kbuf, kl);
        }
    }
}

static void verify_all(struct world *w, keel_txn *t, const struct model *ms, bool gets)
{
    for (int b = 0; b < NB; b++)
        verify_bucket(w, t, w->h[b], &ms[b], gets);
}

static void report_problem(void *ctx, const char *msg)
{
    (void)ctx;
    print_error("keel_check: %s\n", msg);
}

/* The integrity walk of the newest snapshot finds nothing. */
static void check_integrity(struct world *w)
{
    uint64_t problems = 0;
    CHECK_RC(keel_check(w->db, report_problem, NULL, &problems), 0);
    CHECK_INT(problems, 0);
}

/* The committed state as a new read txn sees it. */
static void verify_committed(struct world *w, bool gets)
{
    keel_txn *t;
    CHECK_RC(keel_begin(w->db, KEEL_RDONLY, &t), 0);
    CHECK_INT(keel_txn_id(t), w->com_id);
    verify_all(w, t, w->com, gets);
    keel_abort(t);
}

/* ======================================================================
 * Txn lifecycle
 * ====================================================================== */

/* Does the write txn's state differ from the committed one?  Entries are
 * immutable, so comparing pointers is enough: a put makes a new one. */
static bool models_differ(const struct model *a, const struct model *b)
{
    for (int i = 0; i < NB; i++) {
        if (a[i].n != b[i].n)
            return true;
        for (size_t j = 0; j < a[i].n; j++)
            if (a[i].v[j] != b[i].v[j])
                return true;
    }
    return false;
}

/* After the commit of write txn `id`: the newest snapshot is `id` if the txn
 * left the data changed; a txn that changed nothing, or undid its changes,
 * may or may not take an id. */
static void after_commit(struct world *w, uint64_t id, bool differ)
{
    keel_txn *t;
    CHECK_RC(keel_begin(w->db, KEEL_RDONLY, &t), 0);
    uint64_t got = keel_txn_id(t);
    keel_abort(t);
    if (differ || got != w->com_id)
        CHECK_INT(got, id);
    w->com_id = got;
}

static void begin_write(struct world *w)
{
    CHECK_RC(keel_begin(w->db, 0, &w->w), 0);
    CHECK_INT(keel_txn_id(w->w), w->com_id + 1);
}

static void reader_end(struct world *w)
{
    if (!w->r)
        return;
    w->op = "reader-end";
    CHECK_INT(keel_txn_id(w->r), w->snap_id);
    verify_all(w, w->r, w->snap, true);
    keel_abort(w->r);
    w->r = NULL;
    for (int b = 0; b < NB; b++)
        m_clear(&w->snap[b]);
    trace(w, "reader end");
}

static void reader_begin(struct world *w)
{
    w->op = "reader-begin";
    CHECK_RC(keel_begin(w->db, KEEL_RDONLY, &w->r), 0);
    w->snap_id = w->com_id;
    CHECK_INT(keel_txn_id(w->r), w->snap_id);
    for (int b = 0; b < NB; b++)
        m_copy(&w->snap[b], &w->com[b]);
    w->r_commits = (int)between(w, 1, 6);
    w->stats.readers++;
    trace(w, "reader begin id=%llu for %d commits", (unsigned long long)w->snap_id, w->r_commits);
}

static void do_commit(struct world *w)
{
    w->op = "commit";
    trace(w, "commit");
    uint64_t id = keel_txn_id(w->w);
    bool differ = models_differ(w->cur, w->com);
    CHECK_RC(keel_commit(w->w), 0);
    w->w = NULL;
    after_commit(w, id, differ);
    for (int b = 0; b < NB; b++)
        m_copy(&w->com[b], &w->cur[b]);
    verify_committed(w, chance(w, 25));
    if (chance(w, 25))
        check_integrity(w);
    if (w->r) { /* the old snapshot must be untouched by the commit */
        w->op = "reader-after-commit";
        CHECK_INT(keel_txn_id(w->r), w->snap_id);
        verify_all(w, w->r, w->snap, chance(w, 30));
        if (--w->r_commits <= 0)
            reader_end(w);
    }
    begin_write(w);
    if (chance(w, 20)) {
        w->op = "verify-new-writer";
        verify_all(w, w->w, w->cur, false);
    }
    w->stats.commits++;
}

static void do_abort(struct world *w)
{
    w->op = "abort";
    trace(w, "abort");
    keel_abort(w->w);
    w->w = NULL;
    for (int b = 0; b < NB; b++)
        m_copy(&w->cur[b], &w->com[b]);
    begin_write(w);
    verify_all(w, w->w, w->cur, chance(w, 25));
    if (w->r) {
        w->op = "reader-after-abort";
        verify_all(w, w->r, w->snap, false);
    }
    w->stats.aborts++;
}

static void open_db(struct world *w, uint32_t page_size)
{
    keel_options o;
    memset(&o, 0, sizeof(o));
    o.page_size = page_size;
    o.flags = w->flags;
    CHECK_RC(keel_open(w->path, &o, &w->db), 0);
    w->maxkey = keel_max_key_size(w->db);
    assert_true(w->maxkey >= 1024);
}

/* Reopen the handles of the named buckets; they must exist. */
static void open_buckets(struct world *w, keel_txn *t)
{
    for (int b = 0; b < NB; b++)
        CHECK_RC(keel_bucket_open(t, bucket_names[b], 0, &w->h[b]), 0);
    CHECK_INT(w->h[0], KEEL_DEFAULT_BUCKET);
}

static int count_bucket(const char *name, void *ctx)
{
    (void)name;
    (*(int *)ctx)++;
    return 0;
}

static void do_reopen(struct world *w)
{
    w->op = "reopen";
    trace(w, "reopen");
    reader_end(w);
    w->op = "reopen";
    if (chance(w, 50)) {
        uint64_t id = keel_txn_id(w->w);
        bool differ = models_differ(w->cur, w->com);
        CHECK_RC(keel_commit(w->w), 0);
        after_commit(w, id, differ);
        for (int b = 0; b < NB; b++)
            m_copy(&w->com[b], &w->cur[b]);
    } else {
        keel_abort(w->w);
        for (int b = 0; b < NB; b++)
            m_copy(&w->cur[b], &w->com[b]);
    }
    w->w = NULL;
    keel_close(w->db);
    w->db = NULL;
    /* the file's page size wins over the option */
    open_db(w, chance(w, 50) ? 0 : (w->psize == 4096 ? 65536 : 4096));

    keel_stat st;
    CHECK_RC(keel_db_stat(w->db, &st), 0);
    CHECK_INT(st.page_size, w->psize);
    CHECK_INT(st.last_txnid, w->com_id);
    uint64_t total = 0;
    for (int b = 0; b < NB; b++)
        total += w->com[b].n;
    CHECK_INT(st.entries, total);

    keel_txn *t;
    CHECK_RC(keel_begin(w->db, KEEL_RDONLY, &t), 0);
    open_buckets(w, t);
    int nnamed = 0;
    CHECK_RC(keel_bucket_list(t, count_bucket, &nnamed), 0);
    CHECK_INT(nnamed, NB - 1);
    keel_abort(t);
    verify_committed(w, true);
    check_integrity(w);
    begin_write(w);
    w->stats.reopens++;
}

/* ======================================================================
 * Operations inside the write txn
 * ====================================================================== */

static void op_put(struct world *w, int b, bool nooverwrite)
{
    w->op = nooverwrite ? "put-nooverwrite" : "put";
    struct model *m = &w->cur[b];
    size_t kl = pick_key(w, m, w->kbuf, nooverwrite ? 50 : 35);
    struct ent *e = gen_ent(w, w->kbuf, kl);
    const struct ent *old = m_get(m, w->kbuf, kl);
    trace(w, "%s b=%d klen=%zu vlen=%zu %s", w->op, b, kl, e->vlen, old ? "(exists)" : "");
    int rc = keel_put(w->w, w->h[b], (keel_val){ent_key(e), e->klen}, (keel_val){ent_val(e), e->vlen},
                      nooverwrite ? KEEL_NOOVERWRITE : 0);
    if (nooverwrite && old) {
        CHECK_RC(rc, KEEL_EXISTS);
        ent_unref(e);
        /* the old value is untouched */
        check_get(w, w->w, w->h[b], m, w->kbuf, kl);
        return;
    }
    CHECK_RC(rc, 0);
    m_put(m, e);
    if (chance(w, 30))
        check_get(w, w->w, w->h[b], m, w->kbuf, kl);
    w->stats.puts++;
}

static void op_del(struct world *w, int b)
{
    w->op = "del";
    struct model *m = &w->cur[b];
    size_t kl = pick_key(w, m, w->kbuf, 60);
    bool present = m_get(m, w->kbuf, kl) != NULL;
    trace(w, "del b=%d klen=%zu %s", b, kl, present ? "(exists)" : "(absent)");
    int rc = keel_del(w->w, w->h[b], (keel_val){w->kbuf, kl});
    if (!present) {
        CHECK_RC(rc, KEEL_NOTFOUND);
        return;
    }
    CHECK_RC(rc, 0);
    m_del(m, w->kbuf, kl);
    if (chance(w, 30))
        check_get(w, w->w, w->h[b], m, w->kbuf, kl);
    w->stats.dels++;
}

static void op_get(struct world *w, keel_txn *t, const struct model *ms, int b)
{
    w->op = t == w->w ? "get" : "reader-get";
    size_t kl = pick_key(w, &ms[b], w->kbuf, 50);
    trace(w, "%s b=%d klen=%zu", w->op, b, kl);
    check_get(w, t, w->h[b], &ms[b], w->kbuf, kl);
    w->stats.gets++;
}

/* Seek to a random key, then step a little either way. */
static void op_seek(struct world *w, keel_txn *t, const struct model *ms, int b)
{
    w->op = t == w->w ? "seek" : "reader-seek";
    const struct model *m = &ms[b];
    size_t kl = pick_key(w, m, w->kbuf, 30);
    keel_cursor *c;
    keel_val k, v;
    CHECK_RC(keel_cursor_open(t, w->h[b], &c), 0);
    size_t i = m_lower(m, w->kbuf, kl);
    trace(w, "%s b=%d klen=%zu -> %zu/%zu", w->op, b, kl, i, m->n);
    check_at(m, i, keel_cursor_seek(c, (keel_val){w->kbuf, kl}, &k, &v), k, v);
    if (i < m->n) {
        int dir = chance(w, 50) ? 1 : -1;
        int n = (int)between(w, 1, 12);
        for (int s = 0; s < n; s++) {
            if (dir > 0) {
                int rc = keel_cursor_next(c, &k, &v);
                check_at(m, i + 1, rc, k, v);
                if (rc)
                    break;
                i++;
            } else {
                int rc = keel_cursor_prev(c, &k, &v);
                if (i == 0) {
                    CHECK_RC(rc, KEEL_NOTFOUND);
                    break;
                }
                check_at(m, i - 1, rc, k, v);
                i--;
            }
        }
        CHECK_RC(keel_cursor_current(c, &k, &v), 0);
        check_entry(m->v[i], k, v);
    }
    keel_cursor_close(c);
    w->stats.seeks++;
}

/*
 * A cursor walk mixed with changes.  The cursor's position is modelled as
 * the key it last answered (pos): next() must yield the first entry above
 * pos in the current model, prev() the last one below it, current() pos
 * itself if it still exists, and cursor_del() removes pos.  This is the
 * contract "after cursor_del, next() yields the following entry" extended to
 * changes made through keel_put/keel_del while the cursor is open.  Stepping
 * past an end leaves pos alone.  A fresh cursor, or one whose first/last/seek
 * found nothing, is unpositioned: next() acts as first(), prev() as last(),
 * current() and cursor_del() answer KEEL_BADCURSOR.
 */
static void op_dance(struct world *w, int b)
{
    w->op = "dance";
    struct model *m = &w->cur[b];
    keel_cursor *c;
    keel_val k, v;
    CHECK_RC(keel_cursor_open(w->w, w->h[b], &c), 0);
    uint8_t *pos = w->kbuf2;
    size_t poslen = 0;
    bool on = false; /* positioned */
    int nsteps = (int)between(w, 1, m->n < 50 ? 60 : 150);
    trace(w, "dance b=%d n=%zu steps=%d", b, m->n, nsteps);
    /* action weights (out of 100) */
    const size_t t_next = 36, t_prev = t_next + 14, t_ends = t_prev + 4, t_seek = t_ends + 5,
                 t_cdel = t_seek + (w->shrinking ? 17 : 8), t_cur = t_cdel + 8,
                 t_put = t_cur + (w->shrinking ? 8 : 14);
    for (int s = 0; s < nsteps; s++) {
        size_t a = below(w, 100), i;
        int rc;
        if (a < t_prev) { /* next / prev */
            bool fwd = a < t_next;
            w->op = fwd ? "dance-next" : "dance-prev";
            if (fwd)
                i = on ? m_upper(m, pos, poslen) : 0;
            else {
                i = on ? m_lower(m, pos, poslen) : m->n;
                i = i ? i - 1 : m->n;
            }
            rc = fwd ? keel_cursor_next(c, &k, &v) : keel_cursor_prev(c, &k, &v);
            trace(w, "  %s%s -> %zu/%zu", fwd ? "next" : "prev", on ? "" : " (unpositioned)", i, m->n);
            check_at(m, i, rc, k, v);
        } else if (a < t_ends) { /* first / last */
            bool first = chance(w, 50);
            w->op = first ? "dance-first" : "dance-last";
            i = first ? 0 : m->n ? m->n - 1 : m->n;
            rc = first ? keel_cursor_first(c, &k, &v) : keel_cursor_last(c, &k, &v);
            trace(w, "  %s -> %zu/%zu", first ? "first" : "last", i, m->n);
            check_at(m, i, rc, k, v);
            if (rc)
                on = false;
        } else if (a < t_seek) {
            w->op = "dance-seek";
            size_t kl = pick_key(w, m, w->kbuf, 30);
            i = m_lower(m, w->kbuf, kl);
            rc = keel_cursor_seek(c, (keel_val){w->kbuf, kl}, &k, &v);
            trace(w, "  seek -> %zu/%zu", i, m->n);
            check_at(m, i, rc, k, v);
            if (rc)
                on = false;
        } else if (a < t_cdel) { /* cursor_del */
            w->op = "dance-cursor_del";
            bool present = on && m_get(m, pos, poslen) != NULL;
            trace(w, "  cursor_del%s", !on ? " (unpositioned)" : present ? "" : " (gone)");
            rc = keel_cursor_del(c);
            if (!on) {
                CHECK_RC(rc, KEEL_BADCURSOR);
            } else if (!present) {
                CHECK_RC(rc, KEEL_NOTFOUND);
            } else {
                CHECK_RC(rc, 0);
                m_del(m, pos, poslen);
                w->stats.dels++;
            }
            continue;
        } else if (a < t_cur) { /* current */
            w->op = "dance-current";
            const struct ent *e = on ? m_get(m, pos, poslen) : NULL;
            rc = keel_cursor_current(c, &k, &v);
            trace(w, "  current%s", !on ? " (unpositioned)" : e ? "" : " (gone)");
            if (!on) {
                CHECK_RC(rc, KEEL_BADCURSOR);
            } else if (!e) {
                CHECK_RC(rc, KEEL_NOTFOUND);
            } else {
                CHECK_RC(rc, 0);
                check_entry(e, k, v);
            }
            continue;
        } else if (a < t_put) { /* put beside the cursor, or at its own key */
            w->op = "dance-put";
            size_t kl;
            bool at = on && chance(w, 25);
            if (at) {
                memcpy(w->kbuf, pos, poslen);
                kl = poslen;
            } else {
                kl = pick_key(w, m, w->kbuf, 40);
            }
            struct ent *e = gen_ent(w, w->kbuf, kl);
            trace(w, "  put klen=%zu vlen=%zu%s", kl, e->vlen, at ? " (at cursor)" : "");
            CHECK_RC(keel_put(w->w, w->h[b], (keel_val){ent_key(e), kl}, (keel_val){ent_val(e), e->vlen}, 0),
                     0);
            m_put(m, e);
            w->stats.puts++;
            continue;
        } else { /* delete elsewhere (maybe the cursor's key) */
            w->op = "dance-del";
            size_t kl = pick_key(w, m, w->kbuf, 80);
            bool present = m_get(m, w->kbuf, kl) != NULL;
            trace(w, "  del klen=%zu%s", kl, present ? "" : " (absent)");
            CHECK_RC(keel_del(w->w, w->h[b], (keel_val){w->kbuf, kl}), present ? 0 : KEEL_NOTFOUND);
            if (present) {
                m_del(m, w->kbuf, kl);
                w->stats.dels++;
            }
            continue;
        }
        if (rc == 0) { /* the cursor moved to entry i */
            memcpy(pos, ent_key(m->v[i]), m->v[i]->klen);
            poslen = m->v[i]->klen;
            on = true;
        }
    }
    keel_cursor_close(c);
    w->stats.dances++;
}

/* Delete a run of entries through a cursor walk (drives trees to shrink). */
static void op_cursor_sweep(struct world *w, int b)
{
    w->op = "sweep";
    struct model *m = &w->cur[b];
    if (m->n == 0)
        return;
    keel_cursor *c;
    keel_val k, v;
    CHECK_RC(keel_cursor_open(w->w, w->h[b], &c), 0);
    size_t kl = pick_key(w, m, w->kbuf, 50);
    size_t i = m_lower(m, w->kbuf, kl);
    int rc = keel_cursor_seek(c, (keel_val){w->kbuf, kl}, &k, &v);
    check_at(m, i, rc, k, v);
    size_t n = between(w, 1, m->n / 3 + 1);
    unsigned keep_pct = (unsigned)below(w, 50);
    trace(w, "sweep b=%d from %zu/%zu count=%zu keep=%u%%", b, i, m->n, n, keep_pct);
    while (rc == 0 && n--) {
        if (chance(w, keep_pct)) {
            i++;
        } else {
            CHECK_RC(keel_cursor_del(c), 0);
            m_del(m, ent_key(m->v[i]), m->v[i]->klen);
            w->stats.dels++;
        }
        rc = keel_cursor_next(c, &k, &v);
        check_at(m, i, rc, k, v);
    }
    keel_cursor_close(c);
}

/* Many puts at once: random keys, an ascending run in the middle of the
 * bucket, or an ascending run after its last key (with KEEL_APPEND). */
static void op_bulk(struct world *w, int b)
{
    w->op = "bulk";
    struct model *m = &w->cur[b];
    size_t n = between(w, 10, 150), kl0 = 0;
    int mode = (int)below(w, 3);
    if (mode == 2 && m->n) { /* after the last key: last key + 0x01 + counter */
        const struct ent *last = m->v[m->n - 1];
        if (last->klen + 5 > w->maxkey)
            mode = 1;
        else {
            memcpy(w->kbuf2, ent_key(last), last->klen);
            w->kbuf2[last->klen] = 0x01;
            kl0 = last->klen + 1;
        }
    } else if (mode == 2) {
        mode = 1;
    }
    if (mode == 1) { /* a random stem + counter */
        kl0 = gen_key(w, w->kbuf2);
        if (kl0 + 4 > w->maxkey)
            kl0 = w->maxkey - 4;
    }
    trace(w, "bulk b=%d mode=%d n=%zu", b, mode, n);
    for (size_t i = 0; i < n; i++) {
        size_t kl;
        if (mode == 0) {
            kl = gen_key(w, w->kbuf);
        } else {
            memcpy(w->kbuf, w->kbuf2, kl0);
            for (int j = 0; j < 4; j++)
                w->kbuf[kl0 + j] = (uint8_t)(i >> (24 - 8 * j));
            kl = kl0 + 4;
        }
        size_t vl = chance(w, 70) ? between(w, 0, 40) : gen_vlen(w);
        gen_val(w, vl);
        struct ent *e = ent_new(w->kbuf, kl, w->vbuf, vl);
        unsigned flags = 0;
        if (mode == 2 && chance(w, 80)) /* the key does sort after every key */
            flags = KEEL_APPEND;
        CHECK_RC(keel_put(w->w, w->h[b], (keel_val){w->kbuf, kl}, (keel_val){ent_val(e), vl}, flags), 0);
        m_put(m, e);
        w->stats.puts++;
    }
    if (chance(w, 20))
        verify_bucket(w, w->w, w->h[b], m, false);
}

/* A full walk both ways of one bucket, in the writer or the reader. */
static void op_walk(struct world *w, keel_txn *t, const struct model *ms, int b)
{
    w->op = t == w->w ? "walk" : "reader-walk";
    trace(w, "%s b=%d n=%zu", w->op, b, ms[b].n);
    verify_bucket(w, t, w->h[b], &ms[b], false);
    w->stats.walks++;
}

/* Keys that must be refused without harming the txn. */
static void op_badkeys(struct world *w, int b)
{
    w->op = "badkeys";
    keel_val v;
    uint8_t one = 'x';
    memset(w->kbuf, 'a', w->maxkey + 1);
    keel_val empty = {&one, 0}, toolong = {w->kbuf, w->maxkey + 1};
    CHECK_RC(keel_put(w->w, w->h[b], empty, (keel_val){&one, 1}, 0), KEEL_BADVALSIZE);
    CHECK_RC(keel_put(w->w, w->h[b], toolong, (keel_val){&one, 1}, 0), KEEL_BADVALSIZE);
    CHECK_RC(keel_get(w->w, w->h[b], toolong, &v), KEEL_BADVALSIZE);
    CHECK_RC(keel_del(w->w, w->h[b], empty), KEEL_BADVALSIZE);
}

/* Drop a bucket and (for named ones) create it again in the same txn. */
static void op_drop(struct world *w, int b)
{
    w->op = "drop";
    trace(w, "drop b=%d n=%zu", b, w->cur[b].n);
    CHECK_RC(keel_bucket_drop(w->w, w->h[b]), 0);
    m_clear(&w->cur[b]);
    if (b != 0) {
        keel_val v;
        CHECK_RC(keel_get(w->w, w->h[b], tu_val("x"), &v), KEEL_BADBUCKET);
        keel_bucket nb;
        CHECK_RC(keel_bucket_open(w->w, bucket_names[b], 0, &nb), KEEL_NOTFOUND);
        CHECK_RC(keel_bucket_open(w->w, bucket_names[b], KEEL_CREATE, &nb), 0);
        CHECK_INT(nb, w->h[b]);
    }
    verify_bucket(w, w->w, w->h[b], &w->cur[b], false);
    w->stats.drops++;
}

/* ======================================================================
 * The driver
 * ====================================================================== */

static void setup_world(struct world *w, uint32_t psize, uint64_t seed, unsigned flags)
{
    memset(w, 0, sizeof(*w));
    g = w;
    w->seed = seed;
    w->rng = seed ? seed : 1;
    w->psize = psize;
    w->flags = flags;
    w->trace = getenv("KEEL_MODEL_TRACE") && *getenv("KEEL_MODEL_TRACE") && *getenv("KEEL_MODEL_TRACE") != '0';
    char name[64];
    snprintf(name, sizeof name, "model-%u", psize);
    tu_path(w->path, sizeof w->path, name);
    w->op = "open";
    open_db(w, psize);

    /* prefixes of lengths 0, 1, 4, 12, 60 and almost the longest key */
    const size_t pl[NPREF] = {0, 1, 4, 12, 60, w->maxkey - 24};
    for (int p = 0; p < NPREF; p++) {
        w->preflen[p] = pl[p];
        w->pref[p] = malloc(pl[p] + 1);
        assert_non_null(w->pref[p]);
        for (size_t i = 0; i < pl[p]; i++)
            w->pref[p][i] = key_byte(w);
    }
    w->kbuf = malloc(w->maxkey + 1);
    w->kbuf2 = malloc(w->maxkey + 1);
    assert_non_null(w->kbuf);
    assert_non_null(w->kbuf2);

    /* a bucket created in an aborted txn does not exist */
    w->op = "create-abort";
    keel_txn *t;
    keel_bucket hb;
    CHECK_RC(keel_begin(w->db, 0, &t), 0);
    CHECK_RC(keel_bucket_open(t, "alpha", KEEL_CREATE, &hb), 0);
    CHECK_RC(keel_put(t, hb, tu_val("k"), tu_val("v"), 0), 0);
    keel_abort(t);
    CHECK_RC(keel_begin(w->db, 0, &t), 0);
    CHECK_RC(keel_bucket_open(t, "alpha", 0, &hb), KEEL_NOTFOUND);
    keel_abort(t);

    w->op = "create";
    CHECK_RC(keel_begin(w->db, 0, &t), 0);
    for (int b = 0; b < NB; b++)
        CHECK_RC(keel_bucket_open(t, bucket_names[b], KEEL_CREATE, &w->h[b]), 0);
    uint64_t id = keel_txn_id(t);
    CHECK_RC(keel_commit(t), 0);
    after_commit(w, id, true); /* the buckets were created */
    verify_committed(w, true);
    begin_write(w);
}

static void teardown_world(struct world *w)
{
    w->op = "teardown";
    reader_end(w);
    if (w->w)
        do_commit(w);
    reader_end(w);
    keel_abort(w->w);
    w->w = NULL;
    keel_close(w->db);
    w->db = NULL;
    tu_remove(w->path);
    for (int b = 0; b < NB; b++) {
        m_free(&w->cur[b]);
        m_free(&w->com[b]);
        m_free(&w->snap[b]);
    }
    for (int p = 0; p < NPREF; p++)
        free(w->pref[p]);
    free(w->kbuf);
    free(w->kbuf2);
    free(w->vbuf);
    g = NULL;
}

/* Buckets are picked unevenly so that one grows deep and others stay small. */
static int pick_bucket(struct world *w)
{
    size_t r = below(w, 100);
    return r < 35 ? 0 : r < 70 ? 1 : r < 88 ? 2 : 3;
}

static void one_step(struct world *w)
{
    int b = pick_bucket(w);
    size_t total = 0;
    for (int i = 0; i < NB; i++)
        total += w->cur[i].n;
    /* Phases: head for a random total size (nearly empty, middling or large),
     * then pick another, so trees grow deep and shrink to nothing again. */
    if (w->shrinking ? total <= w->target : total >= w->target) {
        size_t r = below(w, 10);
        w->target = r < 2 ? below(w, 30) : r < 6 ? between(w, 200, 1500) : between(w, 2000, w->max_target);
        w->shrinking = total > w->target;
        trace(w, "phase: %zu -> %zu entries", total, w->target);
    }
    bool shrink = w->shrinking;
    unsigned put_w = shrink ? 12 : 40, del_w = shrink ? 36 : 6;
    size_t r = below(w, 1000);
    size_t lim = 0;
#define OP(weight) if (r < (lim += (weight)))
    OP(put_w * 10) { op_put(w, b, false); return; }
    OP(70) { op_put(w, b, true); return; }
    OP(del_w * 10) { op_del(w, b); return; }
    OP(shrink ? 8 : 1) { op_cursor_sweep(w, b); return; }
    OP(shrink ? 1 : 6) { op_bulk(w, b); return; }
    OP(100) { op_get(w, w->w, w->cur, b); return; }
    OP(40) { op_seek(w, w->w, w->cur, b); return; }
    OP(20) { op_dance(w, b); return; }
    OP(8) { op_walk(w, w->w, w->cur, b); return; }
    OP(3) { op_badkeys(w, b); return; }
    OP(1) {
        if (chance(w, 40))
            op_drop(w, b);
        return;
    }
    OP(30) { do_commit(w); return; }
    OP(5) { do_abort(w); return; }
    OP(3) { do_reopen(w); return; }
    OP(8) {
        if (!w->r)
            reader_begin(w);
        return;
    }
    if (w->r) { /* the rest: reads in the old snapshot */
        size_t q = below(w, 10);
        if (q < 6)
            op_get(w, w->r, w->snap, b);
        else if (q < 9)
            op_seek(w, w->r, w->snap, b);
        else
            op_walk(w, w->r, w->snap, b);
    } else {
        op_get(w, w->w, w->cur, b);
    }
#undef OP
}

static void run_model(uint32_t psize, uint64_t default_seed, long base_steps, unsigned flags)
{
    static struct world world;
    struct world *w = &world;
    uint64_t seed = tu_seed(default_seed);
    setup_world(w, psize, seed, flags);
    w->nsteps = base_steps * tu_scale();
    print_message("test_model: seed=%#llx page_size=%u steps=%ld max_key=%zu%s\n", (unsigned long long)seed,
                  psize, w->nsteps, w->maxkey, (flags & KEEL_NOSYNC) ? " nosync" : "");
    w->max_target = tu_scale() > 1 ? 8000 : 4000;
    for (w->step = 0; w->step < w->nsteps; w->step++)
        one_step(w);
    w->op = "final";
    do_commit(w);
    do_reopen(w);
    print_message("test_model: page_size=%u done: %ld puts, %ld dels, %ld gets, %ld seeks, %ld dances, "
                  "%ld walks, %ld commits, %ld aborts, %ld reopens, %ld readers, %ld drops; "
                  "largest bucket %zu entries, deepest tree %u; final sizes %zu/%zu/%zu/%zu\n",
                  psize, w->stats.puts, w->stats.dels, w->stats.gets, w->stats.seeks, w->stats.dances,
                  w->stats.walks, w->stats.commits, w->stats.aborts, w->stats.reopens, w->stats.readers,
                  w->stats.drops, w->stats.max_entries, w->stats.max_depth, w->cur[0].n, w->cur[1].n, w->cur[2].n, w->cur[3].n);
    teardown_world(w);
}

static void test_model_4k(void **state)
{
    (void)state;
    run_model(4096, 0x4b45454c0001ull, 6000, 0);
}

static void test_model_16k(void **state)
{
    (void)state;
    run_model(16384, 0x4b45454c0002ull, 6000, KEEL_NOSYNC);
}

static void test_model_64k(void **state)
{
    (void)state;
    run_model(65536, 0x4b45454c0003ull, 6000, KEEL_NOSYNC);
}

/* ======================================================================
 * The multimap model: DUPSORT buckets
 *
 * Two DUPSORT buckets ("dupA", "dupB") beside the plain default bucket,
 * random operations checked against a model that is a sorted array of
 * (key, value) pairs, each with its key's expiry time: put (plain,
 * KEEL_NODUPDATA, KEEL_NOOVERWRITE, with a TTL), del (a key and its values),
 * del_value, get (the first value), ttl, expire/persist, purge (whole keys),
 * cursor walks by pair (next/prev), by key (next_key/prev_key) and inside a
 * key (next_dup/prev_dup, count), seek/seek_key/seek_pair, cursor deletes,
 * bucket drop and re-create, across commits, aborts and reopens (each
 * compares every bucket whole, both ways, with per-key counts and the
 * entry count; keel_check at every reopen).  Keys and values come from
 * small alphabets with 0x00 and 0xFF (escaped in pair keys), shared
 * prefixes, some keys with hundreds of values (several leaves), some pairs
 * at the pair-size limit.  The clock is the test's: TTLs expire.
 * Bounded by default (KEEL_TEST_SCALE multiplies the steps, KEEL_SEED
 * changes the seed; KEEL_MODEL_TRACE=1 prints the operations).
 * ====================================================================== */
#define DNB 2
static const char *const dup_names[DNB] = {"dupA", "dupB"};

struct dpair {
    struct ent *e;
    int64_t exp; /* the key's */
};
struct dmodel {
    struct dpair *v;
    size_t n, cap;
};

static int pcmp(const struct ent *a, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    int c = kcmp(ent_key(a), a->klen, k, kl);
    return c ? c : kcmp(ent_val(a), a->vlen, v, vl);
}
/* first pair >= (k, v); with v NULL the key's first pair */
static size_t d_lower(const struct dmodel *m, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = v ? pcmp(m->v[mid].e, k, kl, v, vl) : kcmp(ent_key(m->v[mid].e), m->v[mid].e->klen, k, kl);
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}
static bool d_keyat(const struct dmodel *m, size_t i, const uint8_t *k, size_t kl)
{
    return i < m->n && kcmp(ent_key(m->v[i].e), m->v[i].e->klen, k, kl) == 0;
}
static size_t d_run(const struct dmodel *m, size_t i) /* pairs of the key of pair i, from i */
{
    size_t j = i;
    while (j < m->n && kcmp(ent_key(m->v[j].e), m->v[j].e->klen, ent_key(m->v[i].e), m->v[i].e->klen) == 0)
        j++;
    return j - i;
}
static void d_remove(struct dmodel *m, size_t i, size_t n)
{
    if (n == 0)
        return; /* an empty model has no array: memmove(NULL) is undefined */
    for (size_t j = i; j < i + n; j++)
        ent_unref(m->v[j].e);
    memmove(m->v + i, m->v + i + n, (m->n - i - n) * sizeof(*m->v));
    m->n -= n;
}
static void d_insert(struct dmodel *m, size_t i, struct ent *e, int64_t exp)
{
    if (m->n == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 64;
        m->v = realloc(m->v, m->cap * sizeof(*m->v));
        assert_non_null(m->v);
    }
    memmove(m->v + i + 1, m->v + i, (m->n - i) * sizeof(*m->v));
    m->v[i] = (struct dpair){e, exp};
    m->n++;
}
static void d_clear(struct dmodel *m) { d_remove(m, 0, m->n); }
static void d_free(struct dmodel *m)
{
    d_clear(m);
    free(m->v);
    memset(m, 0, sizeof(*m));
}
static void d_copy(struct dmodel *dst, const struct dmodel *src)
{
    d_clear(dst);
    for (size_t i = 0; i < src->n; i++) {
        src->v[i].e->refs++;
        d_insert(dst, i, src->v[i].e, src->v[i].exp);
    }
}

struct dworld {
    uint64_t seed, rng;
    uint32_t psize;
    char path[512];
    keel_db *db;
    size_t maxkey, maxpair;
    int64_t now;
    keel_txn *w;
    int64_t wnow; /* the write txn's clock, read at its begin */
    keel_bucket h[DNB];
    bool exists[DNB], com_exists[DNB];
    struct dmodel cur[DNB], com[DNB];
    uint8_t kbuf[70000], vbuf[70000];
    long step, nsteps;
    const char *op;
    bool trace;
    struct {
        long puts, dels, delvals, cursor_moves, counts, commits, aborts, reopens, purged;
        size_t max_pairs, max_run;
    } st;
};
static struct dworld *dg;

static void dwhere(const char *what)
{
    if (dg)
        print_error("test_model (multimap) FAILED: %s\n  seed=%#llx page_size=%u step=%ld op=%s\n"
                    "  reproduce: KEEL_SEED=%#llx ./build/test/test_model\n",
                    what, (unsigned long long)dg->seed, dg->psize, dg->step, dg->op ? dg->op : "?",
                    (unsigned long long)dg->seed);
}
#define DCHECK_RC(call, want)                                                                    \
    do {                                                                                         \
        int rc_ = (call), want_ = (want);                                                        \
        if (rc_ != want_) {                                                                      \
            char m_[512];                                                                        \
            snprintf(m_, sizeof m_, "%s answered %d (%s; %s), expected %d (%s)", #call, rc_,     \
                     keel_strerror(rc_), keel_error_detail(), want_, keel_strerror(want_));      \
            dwhere(m_);                                                                          \
        }                                                                                        \
        assert_int_equal(rc_, want_);                                                            \
    } while (0)
#define DCHECK(cond)                                                                             \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            dwhere(#cond);                                                                       \
            fail();                                                                              \
        }                                                                                        \
    } while (0)

static uint64_t drnd(struct dworld *w) { return tu_rand(&w->rng); }
static size_t dbelow(struct dworld *w, size_t n) { return n ? (size_t)(drnd(w) % n) : 0; }
static bool dchance(struct dworld *w, unsigned pct) { return dbelow(w, 100) < pct; }
static bool dlive(int64_t exp, int64_t now) { return exp == 0 || exp > now; }
static int64_t dclock(void *ctx) { return *(const int64_t *)ctx; }

static void dtrace(struct dworld *w, const char *fmt, ...)
{
    if (!w->trace)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[mm %ld] ", w->step);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Keys: 1-3 bytes of a small alphabet with 0x00 and 0xFF (prefixes of each
 * other), sometimes after a 40-byte prefix, rarely long zero-filled ones
 * close to the pair limit (escaped twice as long). */
static size_t dgen_key(struct dworld *w, uint8_t *k)
{
    static const uint8_t alpha[] = {'a', 'b', 0x00, 0xff, 'c'};
    size_t r = dbelow(w, 100), n = 0;
    if (r < 2) {
        n = w->maxpair / 2 - 8 + dbelow(w, 16);
        if (n > w->maxkey)
            n = w->maxkey;
        memset(k, 0, n);
        k[n - 1] = (uint8_t)dbelow(w, 3);
        return n;
    }
    if (r < 20) {
        memset(k, 'P', 40);
        n = 40;
    }
    size_t len = 1 + dbelow(w, 3);
    for (size_t i = 0; i < len; i++)
        k[n++] = alpha[dbelow(w, sizeof alpha)];
    return n;
}

/* Values: mostly short from a small alphabet (pairs repeat), some 50-400
 * bytes (keys of many values fill leaves), some exactly at the pair limit
 * for the key (or one byte over). */
static size_t dgen_val(struct dworld *w, const uint8_t *k, size_t kl, uint8_t *v)
{
    size_t esc = kl;
    for (size_t i = 0; i < kl; i++)
        esc += k[i] == 0;
    size_t r = dbelow(w, 100), n;
    if (r < 3 && w->maxpair >= esc)
        n = w->maxpair - esc + (dchance(w, 30) ? 1 : 0);
    else if (r < 20)
        n = 50 + dbelow(w, 350);
    else
        n = dbelow(w, 4);
    static const uint8_t alpha[] = {'x', 'y', 0x00, 0xff};
    for (size_t i = 0; i < n; i++)
        v[i] = i < 4 ? alpha[dbelow(w, sizeof alpha)] : (uint8_t)(i * 7);
    return n;
}

static bool dfits(struct dworld *w, const uint8_t *k, size_t kl, size_t vl)
{
    size_t esc = kl;
    for (size_t i = 0; i < kl; i++)
        esc += k[i] == 0;
    return esc + vl <= w->maxpair;
}

/* A key present in the model (or a new one) */
static size_t dpick_key(struct dworld *w, int b, uint8_t *k)
{
    const struct dmodel *m = &w->cur[b];
    if (m->n && dchance(w, 60)) {
        const struct ent *e = m->v[dbelow(w, m->n)].e;
        memcpy(k, ent_key(e), e->klen);
        return e->klen;
    }
    return dgen_key(w, k);
}

static void dcheck_pair(const struct dpair *p, keel_val k, keel_val v)
{
    DCHECK(k.len == p->e->klen && (k.len == 0 || memcmp(k.data, ent_key(p->e), k.len) == 0));
    DCHECK(v.len == p->e->vlen && (v.len == 0 || memcmp(v.data, ent_val(p->e), v.len) == 0));
}

/* Every pair both ways, counts per key, the entry count (expired pairs too). */
static void dverify_bucket(struct dworld *w, keel_txn *t, keel_bucket h, const struct dmodel *m, int64_t now)
{
    keel_cursor *c;
    DCHECK_RC(keel_cursor_open(t, h, &c), 0);
    keel_val k, v;
    size_t i = 0;
    int rc;
    for (rc = keel_cursor_first(c, &k, &v); rc == 0; rc = keel_cursor_next(c, &k, &v), i++) {
        while (i < m->n && !dlive(m->v[i].exp, now))
            i++;
        DCHECK(i < m->n);
        dcheck_pair(&m->v[i], k, v);
    }
    DCHECK_RC(rc, KEEL_NOTFOUND);
    while (i < m->n && !dlive(m->v[i].exp, now))
        i++;
    DCHECK(i == m->n);
    size_t j = m->n;
    for (rc = keel_cursor_last(c, &k, &v); rc == 0; rc = keel_cursor_prev(c, &k, &v)) {
        while (j > 0 && !dlive(m->v[j - 1].exp, now))
            j--;
        DCHECK(j > 0);
        dcheck_pair(&m->v[--j], k, v);
    }
    DCHECK_RC(rc, KEEL_NOTFOUND);
    /* key by key: next_key from each key's first value, count */
    i = 0;
    for (rc = keel_cursor_first(c, &k, &v); rc == 0; rc = keel_cursor_next_key(c, &k, &v)) {
        while (i < m->n && !dlive(m->v[i].exp, now))
            i++;
        DCHECK(i < m->n);
        dcheck_pair(&m->v[i], k, v);
        uint64_t cnt = 0;
        DCHECK_RC(keel_cursor_count(c, &cnt), 0);
        size_t run = d_run(m, i);
        DCHECK(cnt == run);
        if (run > w->st.max_run)
            w->st.max_run = run;
        i += run;
    }
    DCHECK_RC(rc, KEEL_NOTFOUND);
    keel_cursor_close(c);
    keel_stat st;
    DCHECK_RC(keel_bucket_stat(t, h, &st), 0);
    DCHECK(st.entries == m->n);
    if (m->n > w->st.max_pairs)
        w->st.max_pairs = m->n;
    unsigned kind = 0;
    DCHECK_RC(keel_bucket_flags(t, h, &kind), 0);
    DCHECK(kind == KEEL_DUPSORT);
}

static void dverify_committed(struct dworld *w)
{
    keel_txn *t;
    DCHECK_RC(keel_begin(w->db, KEEL_RDONLY, &t), 0);
    for (int b = 0; b < DNB; b++) {
        keel_bucket h;
        int rc = keel_bucket_open(t, dup_names[b], 0, &h);
        DCHECK_RC(rc, w->com_exists[b] ? 0 : KEEL_NOTFOUND);
        if (!rc)
            dverify_bucket(w, t, h, &w->com[b], w->now);
    }
    keel_abort(t);
}

static void dbegin(struct dworld *w)
{
    DCHECK_RC(keel_begin(w->db, 0, &w->w), 0);
    w->wnow = w->now;
    for (int b = 0; b < DNB; b++) {
        w->exists[b] = w->com_exists[b];
        d_copy(&w->cur[b], &w->com[b]);
        if (w->exists[b])
            DCHECK_RC(keel_bucket_open(w->w, dup_names[b], 0, &w->h[b]), 0);
    }
}

static void dcommit(struct dworld *w)
{
    w->op = "commit";
    for (int b = 0; b < DNB; b++)
        if (w->exists[b])
            dverify_bucket(w, w->w, w->h[b], &w->cur[b], w->wnow);
    DCHECK_RC(keel_commit(w->w), 0);
    w->w = NULL;
    for (int b = 0; b < DNB; b++) {
        w->com_exists[b] = w->exists[b];
        d_copy(&w->com[b], &w->cur[b]);
    }
    w->st.commits++;
    dverify_committed(w);
    dbegin(w);
}

static void dabort(struct dworld *w)
{
    w->op = "abort";
    keel_abort(w->w);
    w->w = NULL;
    w->st.aborts++;
    dverify_committed(w);
    dbegin(w);
}

static void dopen(struct dworld *w)
{
    keel_options o = {.page_size = w->psize, .flags = KEEL_NOSYNC, .clock = dclock, .clock_ctx = &w->now,
                      .purge_per_commit = -1}; /* purges are the test's: keel_purge */
    DCHECK_RC(keel_open(w->path, &o, &w->db), 0);
    w->maxkey = keel_max_key_size(w->db);
    w->maxpair = keel_max_pair_size(w->db);
}

static void dreopen(struct dworld *w)
{
    w->op = "reopen";
    keel_abort(w->w);
    w->w = NULL;
    keel_close(w->db);
    dopen(w);
    uint64_t problems = 9;
    DCHECK_RC(keel_check(w->db, report_problem, NULL, &problems), 0);
    DCHECK(problems == 0);
    w->st.reopens++;
    dverify_committed(w);
    dbegin(w);
}

/* the model's put: keel's answer */
static int dmodel_put(struct dworld *w, int b, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl,
                      unsigned flags, int64_t at)
{
    struct dmodel *m = &w->cur[b];
    if (!dfits(w, k, kl, vl))
        return KEEL_BADVALSIZE;
    size_t i = d_lower(m, k, kl, NULL, 0);
    bool found = d_keyat(m, i, k, kl), present = found && dlive(m->v[i].exp, w->wnow);
    if (found && !present)
        d_remove(m, i, d_run(m, i)); /* expired: absent, its pairs go first */
    if (present && (flags & KEEL_NOOVERWRITE))
        return KEEL_EXISTS;
    size_t j = d_lower(m, k, kl, v, vl);
    bool pf = j < m->n && pcmp(m->v[j].e, k, kl, v, vl) == 0;
    if (pf && (flags & KEEL_NODUPDATA))
        return KEEL_EXISTS;
    int64_t key_exp = present ? m->v[i].exp : 0, exp = at ? at : key_exp;
    if (!pf)
        d_insert(m, j, ent_new(k, kl, v, vl), exp);
    if (present)
        for (size_t n = d_run(m, i), x = i; n > 0; n--, x++)
            m->v[x].exp = exp;
    return 0;
}

static void dop_put(struct dworld *w, int b)
{
    w->op = "put";
    size_t kl = dpick_key(w, b, w->kbuf), vl;
    struct dmodel *m = &w->cur[b];
    size_t i = d_lower(m, w->kbuf, kl, NULL, 0);
    if (d_keyat(m, i, w->kbuf, kl) && dchance(w, 30)) { /* an existing pair again */
        const struct ent *e = m->v[i + dbelow(w, d_run(m, i))].e;
        vl = e->vlen;
        memcpy(w->vbuf, ent_val(e), vl);
    } else {
        vl = dgen_val(w, w->kbuf, kl, w->vbuf);
    }
    static const unsigned fl[5] = {0, 0, KEEL_NODUPDATA, KEEL_NOOVERWRITE, KEEL_NOOVERWRITE | KEEL_NODUPDATA};
    unsigned flags = fl[dbelow(w, 5)];
    bool ttl = dchance(w, 10);
    int64_t t = 1 + (int64_t)dbelow(w, 5000);
    keel_val key = {w->kbuf, kl}, val = {w->vbuf, vl};
    int rc = ttl ? keel_put_ttl(w->w, w->h[b], key, val, t, flags) : keel_put(w->w, w->h[b], key, val, flags);
    int want = dmodel_put(w, b, w->kbuf, kl, w->vbuf, vl, flags, ttl ? w->wnow + t : 0);
    dtrace(w, "put b%d klen %zu vlen %zu flags %#x ttl %lld: %d", b, kl, vl, flags, ttl ? (long long)t : 0LL, rc);
    DCHECK_RC(rc, want);
    w->st.puts++;
}

/* many values for one key: a key that fills leaves */
static void dop_fill(struct dworld *w, int b)
{
    w->op = "fill";
    size_t kl = dpick_key(w, b, w->kbuf);
    size_t n = 20 + dbelow(w, 200), pad = dbelow(w, 3) * 60;
    for (size_t i = 0; i < n; i++) {
        size_t vl = (size_t)snprintf((char *)w->vbuf, 16, "%05zu", dbelow(w, 100000));
        memset(w->vbuf + vl, 0, pad);
        vl += pad;
        int rc = keel_put(w->w, w->h[b], (keel_val){w->kbuf, kl}, (keel_val){w->vbuf, vl}, 0);
        DCHECK_RC(rc, dmodel_put(w, b, w->kbuf, kl, w->vbuf, vl, 0, 0));
        if (rc)
            break;
    }
    dtrace(w, "fill b%d klen %zu: %zu values", b, kl, n);
}

static void dop_del(struct dworld *w, int b)
{
    w->op = "del";
    struct dmodel *m = &w->cur[b];
    size_t kl = dpick_key(w, b, w->kbuf);
    size_t i = d_lower(m, w->kbuf, kl, NULL, 0);
    bool present = d_keyat(m, i, w->kbuf, kl) && dlive(m->v[i].exp, w->wnow);
    if (dchance(w, 50)) {
        int rc = keel_del(w->w, w->h[b], (keel_val){w->kbuf, kl});
        dtrace(w, "del b%d klen %zu: %d", b, kl, rc);
        DCHECK_RC(rc, present ? 0 : KEEL_NOTFOUND);
        if (present)
            d_remove(m, i, d_run(m, i));
        w->st.dels++;
        return;
    }
    size_t vl;
    if (present && dchance(w, 80)) {
        const struct ent *e = m->v[i + dbelow(w, d_run(m, i))].e;
        vl = e->vlen;
        memcpy(w->vbuf, ent_val(e), vl);
    } else {
        vl = dgen_val(w, w->kbuf, kl, w->vbuf);
    }
    size_t j = d_lower(m, w->kbuf, kl, w->vbuf, vl);
    bool pf = present && j < m->n && pcmp(m->v[j].e, w->kbuf, kl, w->vbuf, vl) == 0;
    int rc = keel_del_value(w->w, w->h[b], (keel_val){w->kbuf, kl}, (keel_val){w->vbuf, vl});
    dtrace(w, "del_value b%d klen %zu vlen %zu: %d", b, kl, vl, rc);
    DCHECK_RC(rc, pf ? 0 : KEEL_NOTFOUND);
    if (pf)
        d_remove(m, j, 1);
    w->st.delvals++;
}

static void dop_get(struct dworld *w, int b)
{
    w->op = "get";
    struct dmodel *m = &w->cur[b];
    size_t kl = dpick_key(w, b, w->kbuf);
    size_t i = d_lower(m, w->kbuf, kl, NULL, 0);
    bool present = d_keyat(m, i, w->kbuf, kl) && dlive(m->v[i].exp, w->wnow);
    keel_val v;
    int64_t ttl = 0;
    DCHECK_RC(keel_get(w->w, w->h[b], (keel_val){w->kbuf, kl}, &v), present ? 0 : KEEL_NOTFOUND);
    DCHECK_RC(keel_ttl(w->w, w->h[b], (keel_val){w->kbuf, kl}, &ttl), present ? 0 : KEEL_NOTFOUND);
    if (present) {
        DCHECK(v.len == m->v[i].e->vlen && (!v.len || memcmp(v.data, ent_val(m->v[i].e), v.len) == 0));
        DCHECK(ttl == (m->v[i].exp ? m->v[i].exp - w->wnow : -1));
    }
}

static void dop_expire(struct dworld *w, int b)
{
    w->op = "expire";
    struct dmodel *m = &w->cur[b];
    size_t kl = dpick_key(w, b, w->kbuf);
    size_t i = d_lower(m, w->kbuf, kl, NULL, 0);
    bool present = d_keyat(m, i, w->kbuf, kl) && dlive(m->v[i].exp, w->wnow);
    int64_t exp = 0;
    int rc;
    if (dchance(w, 30)) {
        rc = keel_persist(w->w, w->h[b], (keel_val){w->kbuf, kl});
    } else {
        exp = w->wnow + 1 + (int64_t)dbelow(w, 3000);
        rc = keel_expire_at(w->w, w->h[b], (keel_val){w->kbuf, kl}, exp);
    }
    DCHECK_RC(rc, present ? 0 : KEEL_NOTFOUND);
    if (present)
        for (size_t n = d_run(m, i); n > 0; n--, i++)
            m->v[i].exp = exp;
}

/* keel_purge: whole keys, oldest expiry first, (expiry, bucket id, key):
 * the model only checks the number and removes every expired key when all
 * of them went (max large enough). */
static void dop_purge(struct dworld *w)
{
    w->op = "purge";
    size_t expired_keys = 0;
    for (int b = 0; b < DNB; b++) {
        const struct dmodel *m = &w->cur[b];
        for (size_t i = 0; w->exists[b] && i < m->n; i += d_run(m, i))
            expired_keys += !dlive(m->v[i].exp, w->wnow);
    }
    size_t purged = 0;
    DCHECK_RC(keel_purge(w->w, 1000000, &purged), 0);
    DCHECK(purged == expired_keys);
    for (int b = 0; b < DNB; b++) {
        struct dmodel *m = &w->cur[b];
        for (size_t i = 0; i < m->n;) {
            size_t run = d_run(m, i);
            if (!dlive(m->v[i].exp, w->wnow))
                d_remove(m, i, run);
            else
                i += run;
        }
    }
    w->st.purged += (long)purged;
}

/* A cursor: a seek of some kind, then moves checked against the position
 * (a pair); cursor deletes in between, followed by forward moves only
 * (after a delete with nothing behind it, keel's prev_key/prev_dup differ:
 * reported, fuzz_ops.c FO_KNOWN_EOF_MOVES). */
static void dop_cursor(struct dworld *w, int b)
{
    w->op = "cursor";
    struct dmodel *m = &w->cur[b];
    keel_cursor *c;
    DCHECK_RC(keel_cursor_open(w->w, w->h[b], &c), 0);
    keel_val k, v;
    long pos = -1; /* the model's index of the cursor's pair */
    size_t kl = dpick_key(w, b, w->kbuf);
    int how = (int)dbelow(w, 3), rc;
    if (how == 0) {
        rc = keel_cursor_seek(c, (keel_val){w->kbuf, kl}, &k, &v);
        size_t i = d_lower(m, w->kbuf, kl, NULL, 0);
        while (i < m->n && !dlive(m->v[i].exp, w->wnow))
            i++;
        pos = i < m->n ? (long)i : -1;
    } else if (how == 1) {
        rc = keel_cursor_seek_key(c, (keel_val){w->kbuf, kl}, &v);
        k = (keel_val){w->kbuf, kl};
        size_t i = d_lower(m, w->kbuf, kl, NULL, 0);
        pos = d_keyat(m, i, w->kbuf, kl) && dlive(m->v[i].exp, w->wnow) ? (long)i : -1;
    } else {
        size_t vl = dbelow(w, 3);
        memset(w->vbuf, dchance(w, 50) ? 0 : 'x', vl);
        rc = keel_cursor_seek_pair(c, (keel_val){w->kbuf, kl}, (keel_val){w->vbuf, vl}, &k, &v);
        size_t i = d_lower(m, w->kbuf, kl, w->vbuf, vl);
        pos = d_keyat(m, i, w->kbuf, kl) && dlive(m->v[i].exp, w->wnow) ? (long)i : -1;
    }
    DCHECK_RC(rc, pos >= 0 ? 0 : KEEL_NOTFOUND);
    if (pos < 0) {
        keel_cursor_close(c);
        return;
    }
    dcheck_pair(&m->v[pos], k, v);
    bool deleted = false; /* the position's pair is gone: the cursor sits between */
    struct ent *at = m->v[pos].e;
    at->refs++;
    int moves = 1 + (int)dbelow(w, 40);
    for (int s = 0; s < moves; s++) {
        int mv = (int)dbelow(w, deleted ? 3 : 8);
        /* the model's answer from the position `at` (a pair, maybe deleted) */
        size_t lo = d_lower(m, ent_key(at), at->klen, ent_val(at), at->vlen);
        bool on = !deleted;
        long want = -1;
        if (mv == 0) { /* next */
            rc = keel_cursor_next(c, &k, &v);
            for (size_t i = on ? lo + 1 : lo; i < m->n && want < 0; i++)
                if (dlive(m->v[i].exp, w->wnow))
                    want = (long)i;
        } else if (mv == 1) { /* next_dup */
            rc = keel_cursor_next_dup(c, &k, &v);
            for (size_t i = on ? lo + 1 : lo; i < m->n && want < 0; i++)
                if (dlive(m->v[i].exp, w->wnow))
                    want = (long)i;
            if (want >= 0 && !d_keyat(m, (size_t)want, ent_key(at), at->klen))
                want = -1;
        } else if (mv == 2) { /* next_key */
            rc = keel_cursor_next_key(c, &k, &v);
            size_t i = d_lower(m, ent_key(at), at->klen, NULL, 0);
            while (d_keyat(m, i, ent_key(at), at->klen))
                i++;
            for (; i < m->n && want < 0; i++)
                if (dlive(m->v[i].exp, w->wnow))
                    want = (long)i;
        } else if (mv == 3) { /* prev */
            rc = keel_cursor_prev(c, &k, &v);
            for (size_t i = lo; i-- > 0 && want < 0;)
                if (dlive(m->v[i].exp, w->wnow))
                    want = (long)i;
        } else if (mv == 4) { /* prev_dup */
            rc = keel_cursor_prev_dup(c, &k, &v);
            for (size_t i = lo; i-- > 0 && want < 0;)
                if (dlive(m->v[i].exp, w->wnow))
                    want = (long)i;
            if (want >= 0 && !d_keyat(m, (size_t)want, ent_key(at), at->klen))
                want = -1;
        } else if (mv == 5) { /* prev_key */
            rc = keel_cursor_prev_key(c, &k, &v);
            for (size_t i = d_lower(m, ent_key(at), at->klen, NULL, 0); i-- > 0 && want < 0;)
                if (dlive(m->v[i].exp, w->wnow))
                    want = (long)i;
        } else if (mv == 6) { /* count, no move */
            uint64_t cnt = 0;
            DCHECK_RC(keel_cursor_count(c, &cnt), 0);
            DCHECK(cnt == d_run(m, d_lower(m, ent_key(at), at->klen, NULL, 0)));
            w->st.counts++;
            continue;
        } else { /* delete the pair */
            DCHECK_RC(keel_cursor_del(c), 0);
            d_remove(m, lo, 1);
            deleted = true;
            continue;
        }
        w->st.cursor_moves++;
        DCHECK_RC(rc, want >= 0 ? 0 : KEEL_NOTFOUND);
        if (want < 0)
            continue; /* the cursor stays */
        dcheck_pair(&m->v[want], k, v);
        ent_unref(at);
        at = m->v[want].e;
        at->refs++;
        deleted = false;
    }
    ent_unref(at);
    keel_cursor_close(c);
}

static void dop_bucket(struct dworld *w, int b)
{
    w->op = "bucket";
    if (w->exists[b] && dchance(w, 50)) {
        DCHECK_RC(keel_bucket_drop(w->w, w->h[b]), 0);
        w->exists[b] = false;
        d_clear(&w->cur[b]);
        return;
    }
    keel_bucket h;
    if (w->exists[b]) /* a create as a plain bucket */
        DCHECK_RC(keel_bucket_open(w->w, dup_names[b], KEEL_CREATE, &h), KEEL_INCOMPATIBLE);
    DCHECK_RC(keel_bucket_open(w->w, dup_names[b], KEEL_CREATE | KEEL_DUPSORT, &w->h[b]), 0);
    w->exists[b] = true;
}

static void dstep(struct dworld *w)
{
    int b = (int)dbelow(w, DNB);
    if (!w->exists[b]) {
        dop_bucket(w, b);
        return;
    }
    size_t r = dbelow(w, 1000);
    if (r < 400)
        dop_put(w, b);
    else if (r < 415)
        dop_fill(w, b);
    else if (r < 600)
        dop_del(w, b);
    else if (r < 700)
        dop_get(w, b);
    else if (r < 760)
        dop_expire(w, b);
    else if (r < 880)
        dop_cursor(w, b);
    else if (r < 890)
        dop_purge(w);
    else if (r < 895)
        dop_bucket(w, b);
    else if (r < 930)
        w->now += (int64_t)dbelow(w, 800); /* the next txn's clock */
    else if (r < 975)
        dcommit(w);
    else if (r < 992)
        dabort(w);
    else
        dreopen(w);
}

static void run_multimap(uint32_t psize, uint64_t default_seed, long base_steps)
{
    static struct dworld world;
    struct dworld *w = &world;
    memset(w, 0, sizeof *w);
    dg = w;
    w->seed = tu_seed(default_seed);
    w->rng = w->seed ? w->seed : 1;
    w->psize = psize;
    w->now = 1700000000000ll;
    w->trace = getenv("KEEL_MODEL_TRACE") && *getenv("KEEL_MODEL_TRACE") && *getenv("KEEL_MODEL_TRACE") != '0';
    char name[64];
    snprintf(name, sizeof name, "multimap-%u", psize);
    tu_path(w->path, sizeof w->path, name);
    w->op = "open";
    dopen(w);
    dbegin(w);
    w->nsteps = base_steps * tu_scale();
    for (w->step = 0; w->step < w->nsteps; w->step++)
        dstep(w);
    w->op = "final";
    dcommit(w);
    dreopen(w);
    print_message("test_model multimap: seed=%#llx page_size=%u steps=%ld: %ld puts, %ld dels, %ld del_values, "
                  "%ld cursor moves, %ld counts, %ld purged keys, %ld commits, %ld aborts, %ld reopens; "
                  "most pairs in a bucket %zu, most values of a key %zu\n",
                  (unsigned long long)w->seed, psize, w->nsteps, w->st.puts, w->st.dels, w->st.delvals,
                  w->st.cursor_moves, w->st.counts, w->st.purged, w->st.commits, w->st.aborts, w->st.reopens,
                  w->st.max_pairs, w->st.max_run);
    keel_abort(w->w);
    keel_close(w->db);
    tu_remove(w->path);
    for (int b = 0; b < DNB; b++) {
        d_free(&w->cur[b]);
        d_free(&w->com[b]);
    }
    dg = NULL;
}

static void test_multimap_4k(void **state)
{
    (void)state;
    run_multimap(4096, 0x4b45454c0d01ull, 5000);
}

static void test_multimap_16k(void **state)
{
    (void)state;
    run_multimap(16384, 0x4b45454c0d02ull, 3000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_4k),
        cmocka_unit_test(test_model_16k),
        cmocka_unit_test(test_model_64k),
        cmocka_unit_test(test_multimap_4k),
        cmocka_unit_test(test_multimap_16k),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
