/*
 * test_freelist.c — the space layer (lib/freelist.c, and the reusable list
 * and the allocator in lib/space.c) on its own terms: pages a commit freed
 * are not handed out while a reader that can see them is open, and are after
 * it ends; the pool gives its lowest pages first; every commit leaves each
 * page either reachable or recorded free, exactly once; the free tail in the
 * meta page and its overflow into the free tree while a reader holds many
 * groups; no page handed out twice by page_alloc; relocation after a long
 * reader keeps every page accounted for; the re-entrancy rule of the btree
 * <-> space loop, the reusable list's order and its one window, and the round
 * trip from a commit's record to the next txn's reclaims.  The accounting
 * walks the trees and the free list itself (bt_walk, a cursor on the free
 * tree, the tail groups) and runs keel_check besides.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "internal.h"
#include "testutil.h"

/* ---- accounting: every page of a snapshot, reachable or free ---------- */

enum { UNSEEN = 0, REACHABLE = 1, FREE = 2 };

struct acct {
    uint64_t txnid, npages;
    uint8_t *what; /* [npages]: UNSEEN, REACHABLE or FREE */
    uint64_t reachable, free, in_tail, twice;
    uint64_t meta_free; /* the meta's count of free pages */
    uint64_t free_root; /* the free tree's root (0 = empty) */
    bool has_tail;      /* META_F_FREETAIL */
};

static void mark(struct acct *a, uint64_t pg, uint8_t kind)
{
    assert_true(pg >= 2 && pg < a->npages);
    if (a->what[pg] != UNSEEN) {
        fprintf(stderr, "page %llu seen twice (%d, then %d)\n", (unsigned long long)pg, a->what[pg], kind);
        a->twice++;
        return;
    }
    a->what[pg] = kind;
    if (kind == REACHABLE)
        a->reachable++;
    else
        a->free++;
}

static int walk_page(void *ctx, uint64_t pgno, uint32_t npages, unsigned kind, int level)
{
    (void)kind;
    (void)level;
    for (uint32_t i = 0; i < npages; i++)
        mark(ctx, pgno + i, REACHABLE);
    return 0;
}

struct walk_ctx {
    keel_txn *txn;
    struct acct *a;
};

static int walk_bucket(const char *name, const struct tree_desc *d, void *ctx)
{
    (void)name;
    struct walk_ctx *w = ctx;
    assert_non_null(d);
    struct tree_desc t = *d;
    assert_int_equal(bt_walk(w->txn, &t, walk_page, w->a), 0);
    return 0;
}

static int tail_group(void *ctx, uint64_t txnid, const uint8_t *pages, size_t n)
{
    (void)txnid;
    struct acct *a = ctx;
    for (size_t i = 0; i < n; i++)
        mark(a, rd64(pages + 8 * i), FREE);
    a->in_tail += n;
    return 0;
}

/* The newest snapshot, accounted for; asserts that every page 2..npages-1
 * is seen exactly once and that the meta counts the free ones right, and
 * that keel_check finds nothing. */
static void account(keel_db *db, struct acct *a)
{
    memset(a, 0, sizeof *a);
    keel_txn *r;
    uint8_t *tail;
    assert_int_equal(txn_begin_with_tail(db, &r, &tail), 0);
    a->txnid = r->meta.txnid;
    a->npages = r->meta.npages;
    a->meta_free = r->meta.free_pages;
    a->free_root = r->meta.trees[TREE_FREE].root;
    a->has_tail = (r->meta.flags & META_F_FREETAIL) != 0;
    a->what = calloc(a->npages, 1);
    assert_non_null(a->what);
    for (int t = 0; t < TREE_COUNT; t++)
        assert_int_equal(bt_walk(r, &r->meta.trees[t], walk_page, a), 0);
    struct walk_ctx w = {r, a};
    assert_int_equal(bucket_walk(r, walk_bucket, &w), 0);
    keel_cursor c = {0};
    cursor_init(&c, r, 0, &r->meta.trees[TREE_FREE]);
    keel_val k, v;
    int rc, records = 0;
    for (rc = cursor_first(&c, &k, &v); rc == 0 && records < 1000000; rc = cursor_next(&c, &k, &v), records++) {
        assert_int_equal(k.len, FREE_KEY_SIZE);
        assert_int_equal(v.len % 8, 0);
        assert_true(free_key_txnid(k.data) <= a->txnid);
        for (size_t i = 0; i < v.len / 8; i++)
            mark(a, rd64((const uint8_t *)v.data + 8 * i), FREE);
    }
    assert_int_equal(rc, KEEL_NOTFOUND);
    os_free(c.keybuf);
    if (tail)
        assert_int_equal(freelist_tail_groups(tail + META_TAIL_HDR, rd32(tail), a->npages, a->txnid, tail_group, a), 0);
    os_free(tail);
    txn_abort(r);

    assert_int_equal(a->twice, 0);
    assert_int_equal(a->reachable + a->free, a->npages - 2);
    assert_int_equal(a->free, a->meta_free);
    keel_stat st;
    assert_int_equal(keel_db_stat(db, &st), 0);
    assert_int_equal(st.free_pages, a->free);
    uint64_t problems = 99;
    assert_int_equal(keel_check(db, NULL, NULL, &problems), 0);
    assert_int_equal(problems, 0);
}

static void acct_free(struct acct *a)
{
    free(a->what);
    a->what = NULL;
}

/* ---- data ---------------------------------------------------------------- */

static void put_keys(keel_db *db, int from, int to, size_t vlen, int ver)
{
    keel_txn *t;
    assert_int_equal(keel_begin(db, 0, &t), 0);
    uint8_t *v = malloc(vlen);
    assert_non_null(v);
    char k[32];
    for (int i = from; i < to; i++) {
        snprintf(k, sizeof k, "key%06d", i);
        memset(v, 'a' + (i + ver) % 26, vlen);
        assert_int_equal(keel_put(t, 0, tu_val(k), (keel_val){v, vlen}, 0), 0);
    }
    free(v);
    assert_int_equal(keel_commit(t), 0);
}

static void del_keys(keel_db *db, int from, int to, int step)
{
    keel_txn *t;
    assert_int_equal(keel_begin(db, 0, &t), 0);
    char k[32];
    for (int i = from; i < to; i += step) {
        snprintf(k, sizeof k, "key%06d", i);
        assert_int_equal(keel_del(t, 0, tu_val(k)), 0);
    }
    assert_int_equal(keel_commit(t), 0);
}

static void assert_value(keel_txn *t, int i, size_t vlen, int ver)
{
    char k[32];
    snprintf(k, sizeof k, "key%06d", i);
    keel_val v;
    assert_int_equal(keel_get(t, 0, tu_val(k), &v), 0);
    assert_int_equal(v.len, vlen);
    for (size_t j = 0; j < vlen; j++)
        assert_int_equal(((const uint8_t *)v.data)[j], 'a' + (i + ver) % 26);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Single pages from page_alloc until one comes from the end of the file
 * (the pool and every reclaimable record used up), at most max; returns
 * how many, the last one the first page past the snapshot's end. */
static size_t alloc_until_end(keel_txn *w, uint64_t *out, size_t max)
{
    size_t n = 0;
    while (n < max) {
        uint64_t pg;
        uint8_t *buf;
        assert_int_equal(page_alloc(w, 1, &pg, &buf), 0);
        assert_non_null(buf);
        assert_int_equal(page_pgno(buf), pg);
        out[n++] = pg;
        if (pg >= w->snap_npages)
            break;
    }
    assert_true(n < max);
    return n;
}

static void assert_unique(const uint64_t *v, size_t n)
{
    uint64_t *s = malloc((n ? n : 1) * sizeof *s);
    assert_non_null(s);
    memcpy(s, v, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_u64);
    for (size_t i = 1; i < n; i++)
        if (s[i] == s[i - 1])
            fail_msg("page %llu handed out twice", (unsigned long long)s[i]);
    free(s);
}

/* ---- tests --------------------------------------------------------------- */

/* Pages a commit frees stay out of reach of the allocator while a reader
 * whose snapshot reaches them is open (its snapshot reads back whole), and
 * every one of them is handed out again once it ended. */
static void test_reuse_waits_for_reader(void **state)
{
    (void)state;
    char path[256];
    tu_path(path, sizeof path, "fl-reader");
    keel_options o = {.page_size = 4096};
    keel_db *db;
    assert_int_equal(keel_open(path, &o, &db), 0);
    enum { N = 1000, VLEN = 200 };
    put_keys(db, 0, N, VLEN, 0);
    put_keys(db, 0, 10, VLEN, 0);
    struct acct before, after;
    account(db, &before);

    keel_txn *r;
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &r), 0);
    uint64_t rid = r->txnid;
    assert_int_equal(rid, before.txnid);
    put_keys(db, 0, N, VLEN, 1); /* every leaf copied: the old ones are freed */
    account(db, &after);
    size_t nf = 0;
    uint64_t *freed = malloc(before.npages * sizeof *freed);
    assert_non_null(freed);
    for (uint64_t p = 2; p < before.npages; p++)
        if (before.what[p] == REACHABLE && after.what[p] != REACHABLE) {
            assert_int_equal(after.what[p], FREE); /* recorded free, not lost */
            freed[nf++] = p;
        }
    assert_true(nf > 20);
    acct_free(&after);

    /* more commits while the reader lives: none of its pages comes back */
    for (int c = 0; c < 3; c++) {
        put_keys(db, 20 * c, 20 * c + 20, VLEN, 2 + c);
        account(db, &after);
        for (size_t i = 0; i < nf; i++)
            assert_int_equal(after.what[freed[i]], FREE);
        acct_free(&after);
    }
    size_t max = 20000, n;
    uint64_t *got = malloc(max * sizeof *got);
    assert_non_null(got);
    keel_txn *w;
    assert_int_equal(keel_begin(db, 0, &w), 0);
    assert_int_equal(w->oldest, rid);
    n = alloc_until_end(w, got, max);
    assert_unique(got, n);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < nf; j++)
            if (got[i] == freed[j])
                fail_msg("page %llu handed out while a reader can see it", (unsigned long long)got[i]);
    keel_abort(w);
    for (int i = 0; i < N; i += 37) /* the reader's snapshot is whole */
        assert_value(r, i, VLEN, 0);
    keel_abort(r);

    /* the reader gone: every page it kept is handed out before the file grows */
    assert_int_equal(keel_begin(db, 0, &w), 0);
    assert_int_equal(w->oldest, w->meta.txnid);
    n = alloc_until_end(w, got, max);
    assert_unique(got, n);
    qsort(got, n, sizeof *got, cmp_u64);
    for (size_t j = 0; j < nf; j++)
        assert_non_null(bsearch(&freed[j], got, n, sizeof *got, cmp_u64));
    keel_abort(w);
    account(db, &after); /* the aborted allocations left nothing behind */
    acct_free(&after);
    acct_free(&before);
    free(freed);
    free(got);
    keel_close(db);
    tu_remove(path);
}

/* The reusable list hands out its lowest page first, and a run of n pages from its
 * lowest run; a page this txn allocated and frees goes back into the pool
 * (in order), a committed page it frees goes to txn->space.freed_by_txn and not into
 * the pool. */
static void test_pool_lowest_first(void **state)
{
    (void)state;
    char path[256];
    tu_path(path, sizeof path, "fl-pool");
    keel_options o = {.page_size = 4096, .flags = KEEL_NOSYNC};
    keel_db *db;
    assert_int_equal(keel_open(path, &o, &db), 0);
    put_keys(db, 0, 2000, 300, 0);
    del_keys(db, 0, 2000, 3); /* free pages spread through the file */
    del_keys(db, 1, 2000, 3);
    put_keys(db, 1, 2, 10, 0); /* two commits later: the deletes' pages are reusable */
    put_keys(db, 1, 2, 10, 1);
    struct acct a;
    account(db, &a);
    assert_true(a.free > 100);

    keel_txn *w;
    assert_int_equal(keel_begin(db, 0, &w), 0);
    uint64_t p0;
    uint8_t *buf;
    assert_int_equal(page_alloc(w, 1, &p0, &buf), 0);
    assert_int_equal(a.what[p0], FREE); /* from the free list, not the end of the file */
    size_t n = w->space.reusable.n;
    assert_true(n >= 3);
    uint64_t *pool = malloc(n * sizeof *pool);
    assert_non_null(pool);
    memcpy(pool, w->space.reusable.v, n * sizeof *pool);
    for (size_t i = 1; i < n; i++)
        assert_true(pool[i - 1] > pool[i]); /* strictly descending */
    assert_true(p0 < pool[n - 1]);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(a.what[pool[i]], FREE);

    /* the lowest run of three consecutive pages */
    size_t run = SIZE_MAX;
    for (size_t i = n; i-- >= 2 && run == SIZE_MAX;)
        if (pool[i - 2] == pool[i] + 2)
            run = i;
    assert_true(run != SIZE_MAX); /* the deletes left runs: every third key, then the next */
    {
        uint64_t r3;
        assert_int_equal(page_alloc(w, 3, &r3, &buf), 0);
        assert_int_equal(r3, pool[run]);
        assert_int_equal(w->space.reusable.n, n - 3);
        memmove(&pool[run - 2], &pool[run + 1], (n - run - 1) * sizeof *pool);
        n -= 3;
        assert_memory_equal(w->space.reusable.v, pool, n * sizeof *pool);
    }
    /* single pages: lowest first, in order */
    size_t take = n < 10 ? n : 10;
    uint64_t got[10];
    for (size_t i = 0; i < take; i++) {
        assert_int_equal(page_alloc(w, 1, &got[i], &buf), 0);
        assert_int_equal(got[i], pool[n - 1 - i]);
    }
    assert_int_equal(w->space.reusable.n, n - take);
    /* a page of this txn freed: back into the pool, handed out next */
    size_t freed_before = w->space.freed_by_txn.n;
    assert_int_equal(page_free(w, got[take / 2], 1), 0);
    assert_int_equal(w->space.reusable.n, n - take + 1);
    assert_int_equal(w->space.reusable.v[w->space.reusable.n - 1], got[take / 2] < pool[n - 1 - take] ? got[take / 2] : pool[n - 1 - take]);
    for (size_t i = 1; i < w->space.reusable.n; i++)
        assert_true(w->space.reusable.v[i - 1] > w->space.reusable.v[i]);
    assert_int_equal(w->space.freed_by_txn.n, freed_before);
    uint64_t again;
    assert_int_equal(page_alloc(w, 1, &again, &buf), 0);
    assert_int_equal(again, got[take / 2]);
    /* a committed page freed: to txn->space.freed_by_txn, not to the pool */
    uint64_t root = w->meta.trees[TREE_DEFAULT].root;
    assert_int_equal(a.what[root], REACHABLE);
    size_t pool_n = w->space.reusable.n;
    assert_int_equal(page_free(w, root, 1), 0);
    assert_int_equal(w->space.freed_by_txn.n, freed_before + 1);
    assert_int_equal(w->space.freed_by_txn.v[w->space.freed_by_txn.n - 1], root);
    assert_int_equal(w->space.reusable.n, pool_n);
    for (size_t i = 0; i < w->space.reusable.n; i++)
        assert_true(w->space.reusable.v[i] != root);
    keel_abort(w);
    free(pool);
    acct_free(&a);
    account(db, &a);
    acct_free(&a);
    keel_close(db);
    tu_remove(path);
}

/* In one write txn, page_alloc interleaved with puts and deletes (which
 * allocate and free through the same pool) hands out no page twice, none
 * that the txn's trees use or that it freed; the pages given back with
 * page_free go into the pool, and the commit records them: every page is
 * accounted for after it. */
static void test_no_page_twice(void **state)
{
    (void)state;
    char path[256];
    tu_path(path, sizeof path, "fl-twice");
    keel_options o = {.page_size = 4096, .flags = KEEL_NOSYNC};
    keel_db *db;
    assert_int_equal(keel_open(path, &o, &db), 0);
    uint64_t rng = tu_seed(0xF4EE);
    put_keys(db, 0, 3000, 250, 0);
    for (int i = 0; i < 6; i++) /* many records, of several commits */
        del_keys(db, i, 3000, 7);
    put_keys(db, 0, 1, 10, 0);
    put_keys(db, 0, 1, 10, 1);
    struct acct a;
    account(db, &a);
    fprintf(stderr, "no_page_twice: %llu pages, %llu free\n", (unsigned long long)a.npages, (unsigned long long)a.free);
    assert_true(a.free > 200);

    enum { MAXGOT = 4000 };
    uint64_t *got = malloc(MAXGOT * sizeof *got);
    uint32_t *len = malloc(MAXGOT * sizeof *len);
    assert_non_null(got);
    assert_non_null(len);
    size_t n = 0;
    keel_txn *w;
    assert_int_equal(keel_begin(db, 0, &w), 0);
    uint8_t v[600];
    char k[32];
    long rounds = 400 * tu_scale();
    for (long i = 0; i < rounds && n < MAXGOT; i++) {
        unsigned op = (unsigned)(tu_rand(&rng) % 4);
        int key = (int)(tu_rand(&rng) % 3000);
        snprintf(k, sizeof k, "key%06d", key);
        if (op == 0) {
            memset(v, 'x', sizeof v);
            assert_int_equal(keel_put(w, 0, tu_val(k), (keel_val){v, 1 + key % sizeof v}, 0), 0);
        } else if (op == 1) {
            int rc = keel_del(w, 0, tu_val(k));
            assert_true(rc == 0 || rc == KEEL_NOTFOUND);
        } else {
            uint32_t np = op == 2 ? 1 : 1 + (uint32_t)(tu_rand(&rng) % 3);
            uint8_t *buf;
            assert_int_equal(page_alloc(w, np, &got[n], &buf), 0);
            assert_int_equal(page_pgno(buf), got[n]);
            assert_true(got[n] >= 2 && got[n] + np <= w->meta.npages);
            for (uint32_t j = 0; j < np; j++) /* a page the snapshot uses is never handed out */
                assert_true(got[n] + j >= a.npages || a.what[got[n] + j] == FREE);
            len[n++] = np;
        }
    }
    assert_true(n > 100);
    /* the runs do not overlap each other */
    uint64_t *all = malloc(3 * MAXGOT * sizeof *all);
    assert_non_null(all);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < len[i]; j++)
            all[m++] = got[i] + j;
    assert_unique(all, m);
    /* ... nor the txn's freed list */
    for (size_t i = 0; i < w->space.freed_by_txn.n; i++)
        for (size_t j = 0; j < m; j++)
            assert_true(w->space.freed_by_txn.v[i] != all[j]);
    /* ... nor the pages the txn's trees use now (walked in the write txn) */
    struct acct now = {.npages = w->meta.npages};
    now.what = calloc(now.npages, 1);
    assert_non_null(now.what);
    assert_int_equal(bucket_flush(w), 0);
    for (int t = 0; t < TREE_COUNT; t++)
        assert_int_equal(bt_walk(w, &w->meta.trees[t], walk_page, &now), 0);
    assert_int_equal(now.twice, 0);
    for (size_t j = 0; j < m; j++)
        assert_int_equal(now.what[all[j]], UNSEEN);
    free(now.what);
    /* given back: into the pool (they are this txn's), then recorded free */
    size_t pool_before = w->space.reusable.n;
    for (size_t i = 0; i < n; i++)
        assert_int_equal(page_free(w, got[i], len[i]), 0);
    assert_int_equal(w->space.reusable.n, pool_before + m);
    for (size_t i = 1; i < w->space.reusable.n; i++)
        assert_true(w->space.reusable.v[i - 1] > w->space.reusable.v[i]);
    assert_int_equal(keel_commit(w), 0);
    acct_free(&a);
    account(db, &a);
    for (size_t j = 0; j < m; j++) /* recorded free, used by the commit, or cut off with the file's end */
        assert_true(all[j] >= a.npages || a.what[all[j]] != UNSEEN);
    acct_free(&a);
    free(all);
    free(got);
    free(len);
    keel_close(db);
    tu_remove(path);
}

/* Random commits (puts of small and overflow values, deletes) with readers
 * begun and ended at random: after every commit each page is reachable or
 * recorded free, exactly once, and the meta's count is right.  Before each
 * commit: the pages the txn freed were reachable in its snapshot and are
 * not in its pool; the pool is descending and holds only pages free in the
 * snapshot or past its end; after the commit the freed pages are recorded
 * free. */
static void test_record_accounts_every_page(void **state)
{
    (void)state;
    char path[256];
    tu_path(path, sizeof path, "fl-record");
    keel_options o = {.page_size = 4096, .flags = KEEL_NOSYNC};
    keel_db *db;
    assert_int_equal(keel_open(path, &o, &db), 0);
    uint64_t seed = tu_seed(0xF4EC), rng = seed;
    long commits = 80 * tu_scale();
    keel_txn *readers[3] = {NULL, NULL, NULL};
    static uint8_t v[9000];
    memset(v, 'v', sizeof v);
    struct acct a;
    account(db, &a);
    bool saw_tree = false, saw_tail = false;
    for (long c = 0; c < commits; c++) {
        int ri = (int)(tu_rand(&rng) % 6);
        if (ri < 3) { /* a reader begins or ends */
            if (readers[ri]) {
                keel_abort(readers[ri]);
                readers[ri] = NULL;
            } else {
                assert_int_equal(keel_begin(db, KEEL_RDONLY, &readers[ri]), 0);
            }
        }
        keel_txn *w;
        assert_int_equal(keel_begin(db, 0, &w), 0);
        int ops = 1 + (int)(tu_rand(&rng) % (c % 5 == 0 ? 1500 : 8));
        char k[32];
        for (int i = 0; i < ops; i++) {
            int key = (int)(tu_rand(&rng) % 5000);
            snprintf(k, sizeof k, "key%06d", key);
            if (tu_rand(&rng) % 3 == 0) {
                int rc = keel_del(w, 0, tu_val(k));
                assert_true(rc == 0 || rc == KEEL_NOTFOUND);
            } else {
                size_t vl = key % 10 == 0 ? 4000 + (size_t)key % 5000 : 1 + (size_t)key % 800;
                assert_int_equal(keel_put(w, 0, tu_val(k), (keel_val){v, vl}, 0), 0);
            }
        }
        for (size_t i = 0; i < w->space.freed_by_txn.n; i++) {
            uint64_t p = w->space.freed_by_txn.v[i];
            assert_true(p < a.npages);
            assert_int_equal(a.what[p], REACHABLE);
            for (size_t j = 0; j < w->space.reusable.n; j++)
                assert_true(w->space.reusable.v[j] != p);
        }
        for (size_t j = 0; j < w->space.reusable.n; j++) {
            uint64_t p = w->space.reusable.v[j];
            assert_true(p >= a.npages || a.what[p] == FREE);
            if (j)
                assert_true(w->space.reusable.v[j - 1] > p);
        }
        size_t nfreed = w->space.freed_by_txn.n;
        uint64_t *freed = malloc((nfreed ? nfreed : 1) * sizeof *freed);
        assert_non_null(freed);
        if (nfreed)
            memcpy(freed, w->space.freed_by_txn.v, nfreed * sizeof *freed);
        assert_int_equal(keel_commit(w), 0);
        acct_free(&a);
        account(db, &a);
        for (size_t i = 0; i < nfreed; i++)
            assert_int_equal(a.what[freed[i]], FREE);
        free(freed);
        saw_tree |= a.free_root != 0;
        saw_tail |= a.in_tail > 0;
    }
    for (int i = 0; i < 3; i++)
        if (readers[i])
            keel_abort(readers[i]);
    fprintf(stderr, "record: seed 0x%llx, %ld commits, %llu pages, %llu free; free tree used %d, tail used %d\n",
            (unsigned long long)seed, commits, (unsigned long long)a.npages, (unsigned long long)a.free, saw_tree,
            saw_tail);
    assert_true(saw_tree);
    assert_true(saw_tail);
    acct_free(&a);
    keel_close(db);
    tu_remove(path);
}

struct group_check {
    uint64_t oldest;
    size_t groups, pages;
    const struct pgvec *pool;
};

static int waiting_group(void *ctx, uint64_t txnid, const uint8_t *pages, size_t n)
{
    struct group_check *g = ctx;
    assert_true(txnid > g->oldest); /* only groups a reader may still need wait */
    for (size_t i = 0; i < n; i++) {
        uint64_t p = rd64(pages + 8 * i);
        for (size_t j = 0; j < g->pool->n; j++)
            assert_true(g->pool->v[j] != p);
    }
    g->groups++;
    g->pages += n;
    return 0;
}

/* Small commits keep their free pages in the meta page's tail, the free
 * tree empty.  A reader held across commits makes the tail's groups wait
 * (txn->space.meta_pending at begin: every group newer than the reader, none of their
 * pages in the pool) until they no longer fit and go to the free tree; once
 * the reader ends, the pages are reused and the file stops growing. */
static void test_tail_and_overflow(void **state)
{
    (void)state;
    char path[256];
    tu_path(path, sizeof path, "fl-tail");
    keel_options o = {.page_size = 4096, .flags = KEEL_NOSYNC};
    keel_db *db;
    assert_int_equal(keel_open(path, &o, &db), 0);
    put_keys(db, 0, 400, 100, 0);
    for (int i = 0; i < 100; i++)
        put_keys(db, i * 3 % 400, i * 3 % 400 + 1, 100, 1);
    struct acct a;
    account(db, &a);
    assert_true(a.has_tail);
    assert_int_equal(a.free_root, 0);
    assert_true(a.free > 0);
    assert_int_equal(a.in_tail, a.free);
    uint64_t npages = a.npages;
    acct_free(&a);
    for (int i = 0; i < 100; i++) /* the tail's pages are reused: the file hardly grows */
        put_keys(db, i * 7 % 400, i * 7 % 400 + 1, 100, 2);
    account(db, &a);
    assert_true(a.npages <= npages + 2);
    assert_int_equal(a.free_root, 0);
    acct_free(&a);

    keel_txn *r;
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &r), 0);
    uint64_t rid = r->txnid;
    int c, waited = 0;
    for (c = 0; c < 300; c++) {
        put_keys(db, c % 400, c % 400 + 1, 100, 3);
        keel_txn *w;
        assert_int_equal(keel_begin(db, 0, &w), 0);
        assert_int_equal(w->oldest, rid);
        struct group_check g = {.oldest = w->oldest, .pool = &w->space.reusable};
        assert_int_equal(freelist_tail_groups((const uint8_t *)w->space.meta_pending.v, w->space.meta_pending.n, w->meta.npages, w->meta.txnid,
                                              waiting_group, &g),
                         0);
        if (w->meta.trees[TREE_FREE].root == 0 && c > 0)
            assert_true(g.groups > 0); /* the commits' groups wait in the tail */
        waited += g.groups > 0;
        keel_abort(w);
        account(db, &a);
        bool in_tree = a.free_root != 0;
        acct_free(&a);
        if (in_tree)
            break;
    }
    assert_true(c < 300); /* the tail overflowed into the free tree */
    assert_true(waited > 0);
    assert_value(r, 3, 100, 1); /* its snapshot is whole */
    keel_abort(r);
    account(db, &a);
    npages = a.npages;
    acct_free(&a);
    for (int i = 0; i < 200; i++)
        put_keys(db, i % 400, i % 400 + 1, 100, 4);
    account(db, &a);
    assert_true(a.npages <= npages + 4);
    acct_free(&a);
    keel_close(db);
    tu_remove(path);
}

/* After a long reader the file has much free space near its end; the
 * commits that follow move live pages down (freelist_relocate) and cut the
 * tail: every page stays accounted for after every one of them, and the
 * data reads back. */
static void test_relocation_accounts(void **state)
{
    (void)state;
    char path[256];
    tu_path(path, sizeof path, "fl-reloc");
    keel_options o = {.page_size = 4096, .flags = KEEL_NOSYNC};
    keel_db *db;
    assert_int_equal(keel_open(path, &o, &db), 0);
    uint64_t rng = tu_seed(0xF4E1);
    enum { N = 600 };
    int ver[N];
    for (int i = 0; i < N; i++)
        ver[i] = 0;
    put_keys(db, 0, N, 100, 0);
    put_keys(db, 0, N / 10, 9000, 0); /* overflow runs besides */
    for (int i = 0; i < N / 10; i++)
        ver[i] = -1;
    keel_txn *r;
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &r), 0);
    long commits = 1500 * tu_scale();
    for (long c = 0; c < commits; c++) {
        int i = (int)(tu_rand(&rng) % N);
        if (ver[i] < 0) {
            put_keys(db, i, i + 1, 9000, 0);
        } else {
            ver[i] = (ver[i] + 1) % 26;
            put_keys(db, i, i + 1, 100, ver[i]);
        }
    }
    assert_value(r, N - 1, 100, 0);
    keel_abort(r);
    struct acct a;
    account(db, &a);
    uint64_t peak = a.npages, lowest = peak;
    acct_free(&a);
    int c;
    for (c = 0; c < 400; c++) {
        int i = N / 10 + (int)(tu_rand(&rng) % (N - N / 10));
        ver[i] = (ver[i] + 1) % 26;
        put_keys(db, i, i + 1, 100, ver[i]);
        account(db, &a);
        if (a.npages < lowest)
            lowest = a.npages;
        acct_free(&a);
    }
    fprintf(stderr, "relocation: %llu pages at the peak, %llu after %d commits (moved %llu this pass)\n",
            (unsigned long long)peak, (unsigned long long)lowest, c, (unsigned long long)db->space.walk.moved);
    assert_true(lowest < peak / 2);
    keel_txn *t;
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
    for (int i = 0; i < N; i++)
        if (ver[i] >= 0)
            assert_value(t, i, 100, ver[i]);
        else
            assert_value(t, i, 9000, 0);
    keel_abort(t);
    keel_close(db);
    tu_remove(path);
}

/* ---- the space layer's own rules (space.c) ------------------------------ */

/* A file with many free pages in the free tree, all reusable (two commits
 * after the deletes), accounted for in *a. */
static keel_db *open_with_free(const char *name, char *path, size_t pathlen, struct acct *a)
{
    tu_path(path, pathlen, name);
    keel_options o = {.page_size = 4096, .flags = KEEL_NOSYNC};
    keel_db *db;
    assert_int_equal(keel_open(path, &o, &db), 0);
    put_keys(db, 0, 2000, 300, 0);
    del_keys(db, 0, 2000, 3);
    del_keys(db, 1, 2000, 3);
    put_keys(db, 1, 2, 10, 0);
    put_keys(db, 1, 2, 10, 1);
    account(db, a);
    assert_true(a->free > 300);
    assert_true(a->free_root != 0); /* too many for the free tail: records in the tree */
    return db;
}


static void edit_free_tree_twice(void *ctx)
{
    struct space *s = ctx;
    space_edit_free_tree(s, true);
    space_edit_free_tree(s, true); /* nested: the rule forbids it */
}

static void reclaim_while_editing(void *ctx)
{
    keel_txn *w = ctx;
    space_edit_free_tree(&w->space, true);
    (void)freelist_reclaim(w); /* a reclaim inside the layer's own free-tree edit */
}

static void reclaim_while_recording(void *ctx)
{
    keel_txn *w = ctx;
    w->space.recording = true;
    (void)freelist_reclaim(w);
}

/* The re-entrancy rule of the btree <-> space loop: while the space layer
 * edits the free tree itself, allocation never reclaims (the page comes
 * from the end of the file and the free tree is untouched), and outside it
 * it does; while recording, a page this txn allocated and frees goes to
 * freed_by_txn, not back into the reusable list; and entering a reclaim or
 * a free-tree edit inside one fails a KEEL_ASSERT. */
static void test_reentrancy_rule(void **state)
{
    (void)state;
    char path[256];
    struct acct a;
    keel_db *db = open_with_free("fl-rule", path, sizeof path, &a);
    keel_txn *w;
    assert_int_equal(keel_begin(db, 0, &w), 0);
    assert_false(w->space.editing_free_tree || w->space.recording || w->space.full_load);
    uint64_t pg;
    uint8_t *buf;
    while (w->space.reusable.n) /* empty the list without a reclaim */
        assert_int_equal(page_alloc(w, 1, &pg, &buf), 0);
    struct tree_desc ft = w->meta.trees[TREE_FREE];

    space_edit_free_tree(&w->space, true);
    uint64_t end = w->meta.npages;
    assert_int_equal(page_alloc(w, 1, &pg, &buf), 0);
    assert_int_equal(pg, end); /* the end of the file, not a reclaim */
    assert_int_equal(w->meta.npages, end + 1);
    assert_memory_equal(&w->meta.trees[TREE_FREE], &ft, sizeof ft);
    assert_int_equal(w->space.reusable.n, 0);
    assert_false(w->space.nothing_reclaimable);
    space_edit_free_tree(&w->space, false);
    assert_false(w->space.editing_free_tree);

    assert_int_equal(page_alloc(w, 1, &pg, &buf), 0); /* now it reclaims */
    assert_int_equal(a.what[pg], FREE);
    assert_true(w->meta.trees[TREE_FREE].root != ft.root); /* the record's delete copied the path */
    assert_true(w->space.reusable.n > 0);
    assert_true(space_reusable_in_order(&w->space));

    /* recording: this txn's page freed goes to freed_by_txn */
    size_t nreuse = w->space.reusable.n, nfreed = w->space.freed_by_txn.n;
    w->space.recording = true;
    assert_int_equal(page_free(w, pg, 1), 0);
    assert_int_equal(w->space.reusable.n, nreuse);
    assert_int_equal(w->space.freed_by_txn.n, nfreed + 1);
    assert_int_equal(w->space.freed_by_txn.v[nfreed], pg);
    assert_false(pager_is_dirty(w, pg));
    w->space.recording = false;

    struct space loose = {0};
    tu_assert_dies(edit_free_tree_twice, &loose, "space.c:", "!s->editing_free_tree");
    tu_assert_dies(reclaim_while_editing, w, "space.c:", "!s->editing_free_tree");
    tu_assert_dies(reclaim_while_recording, w, "space.c:", "!s->recording");
    keel_abort(w);
    acct_free(&a);
    keel_close(db);
    tu_remove(path);
}

static void pop_out_of_order(void *ctx)
{
    keel_txn *w = ctx;
    uint64_t pg;
    uint8_t *buf;
    (void)page_alloc(w, 1, &pg, &buf);
}

/* The reusable list's order: descending after begin and every reclaim, so
 * single pages come out lowest first; inside the full-load window
 * (space.full_load) it may be out of order and a single page is still
 * handed out, and space_sort_reusable closes the window in order; outside
 * the window a list out of order fails a KEEL_ASSERT at the next pop. */
static void test_reusable_order(void **state)
{
    (void)state;
    char path[256];
    struct acct a;
    keel_db *db = open_with_free("fl-order", path, sizeof path, &a);
    keel_txn *w;
    assert_int_equal(keel_begin(db, 0, &w), 0);
    uint64_t prev = 0, pg;
    uint8_t *buf;
    for (int i = 0; i < 200; i++) { /* across several reclaimed records */
        assert_true(space_reusable_in_order(&w->space));
        uint64_t lowest = w->space.reusable.n ? w->space.reusable.v[w->space.reusable.n - 1] : 0;
        assert_int_equal(page_alloc(w, 1, &pg, &buf), 0);
        if (lowest)
            assert_int_equal(pg, lowest);
        assert_int_equal(a.what[pg], FREE);
        assert_true(pg != prev);
        prev = pg;
    }
    struct pgvec *r = &w->space.reusable;
    assert_true(r->n >= 3);
    uint64_t t = r->v[r->n - 1]; /* the lowest two swapped: out of order */
    r->v[r->n - 1] = r->v[r->n - 2];
    r->v[r->n - 2] = t;
    assert_false(space_reusable_in_order(&w->space));
    tu_assert_dies(pop_out_of_order, w, "space.c:", "s->full_load ||");

    w->space.full_load = true; /* the window: any page is a right answer */
    uint64_t last = r->v[r->n - 1];
    assert_int_equal(page_alloc(w, 1, &pg, &buf), 0);
    assert_int_equal(pg, last);
    uint64_t hi = r->v[0];
    assert_int_equal(pgvec_push(r, pg), 0); /* back, out of order */
    r->v[r->n - 1] = r->v[0];
    r->v[0] = pg;
    assert_int_equal(space_sort_reusable(&w->space), 0);
    assert_false(w->space.full_load);
    assert_true(space_reusable_in_order(&w->space));
    assert_int_equal(r->v[0], hi);
    keel_abort(w);
    acct_free(&a);
    keel_close(db);
    tu_remove(path);
}

static void seen_free(const struct acct *a, uint8_t *seen, uint64_t pg)
{
    assert_true(pg < a->npages);
    assert_int_equal(a->what[pg], FREE);
    assert_int_equal(seen[pg], 0); /* none twice */
    seen[pg] = 1;
}

/* With no reader, what a commit recorded free (tail and tree) comes back
 * whole in the next txn: the reusable list after every reclaim, the pages
 * the reclaims' deletes took from it, and the records and tail groups not
 * reusable yet (newer than txn->oldest: under KEEL_NOSYNC the newest
 * commit's pages wait one more commit) are exactly the accounting's free
 * pages, each once. */
static void assert_reclaims_all(keel_db *db, const struct acct *a)
{
    keel_txn *w;
    assert_int_equal(keel_begin(db, 0, &w), 0);
    int rc;
    while ((rc = freelist_reclaim(w)) == 0)
        ;
    assert_int_equal(rc, KEEL_NOTFOUND);
    assert_true(space_reusable_in_order(&w->space));
    uint8_t *seen = calloc(a->npages, 1);
    assert_non_null(seen);
    uint64_t n = 0;
    for (size_t i = 0; i < w->space.reusable.n; i++, n++)
        seen_free(a, seen, w->space.reusable.v[i]);
    for (size_t i = 0; i < w->dirty.cap; i++) {
        const struct dirty *d = &w->dirty.slots[i];
        if (!d->pgno || d->pgno >= w->snap_npages)
            continue; /* pages past the snapshot's end came from the end of the file */
        for (uint32_t j = 0; j < d->npages; j++, n++)
            seen_free(a, seen, d->pgno + j);
    }
    keel_cursor c = {0};
    cursor_init(&c, w, 0, &w->meta.trees[TREE_FREE]);
    keel_val k, v;
    for (rc = w->meta.trees[TREE_FREE].root ? cursor_first(&c, &k, &v) : KEEL_NOTFOUND; rc == 0;
         rc = cursor_next(&c, &k, &v)) {
        assert_true(free_key_txnid(k.data) > w->oldest); /* else reclaim would have taken it */
        for (size_t i = 0; i < v.len / 8; i++, n++)
            seen_free(a, seen, rd64((const uint8_t *)v.data + 8 * i));
    }
    assert_int_equal(rc, KEEL_NOTFOUND);
    os_free(c.keybuf);
    const struct pgvec *pend = &w->space.meta_pending;
    for (size_t i = 0; i + 2 <= pend->n; i += 2 + pend->v[i + 1]) {
        assert_true(pend->v[i] > w->oldest);
        for (uint64_t j = 0; j < pend->v[i + 1]; j++, n++)
            seen_free(a, seen, pend->v[i + 2 + j]);
    }
    assert_int_equal(n, a->free);
    free(seen);
    keel_abort(w);
}

/* Record and reclaim round trip: the free list a commit records is what
 * the next txn reclaims, once from the deletes' records, and again after
 * a commit that recorded a reusable list's leftovers (txn-id-0 records)
 * and its own freed pages. */
static void test_record_reclaim_round_trip(void **state)
{
    (void)state;
    char path[256];
    struct acct a;
    keel_db *db = open_with_free("fl-round", path, sizeof path, &a);
    assert_reclaims_all(db, &a);
    acct_free(&a);
    put_keys(db, 5000, 5100, 300, 0); /* takes some, leaves the rest as leftovers */
    put_keys(db, 5000, 5001, 10, 1);  /* and its freed pages become reusable */
    account(db, &a);
    assert_true(a.free > 100);
    assert_reclaims_all(db, &a);
    acct_free(&a);
    keel_close(db);
    tu_remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reuse_waits_for_reader),
        cmocka_unit_test(test_pool_lowest_first),
        cmocka_unit_test(test_no_page_twice),
        cmocka_unit_test(test_record_accounts_every_page),
        cmocka_unit_test(test_tail_and_overflow),
        cmocka_unit_test(test_relocation_accounts),
        cmocka_unit_test(test_reentrancy_rule),
        cmocka_unit_test(test_reusable_order),
        cmocka_unit_test(test_record_reclaim_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
