/*
 * test_pager.c — the pager's own pieces: the radix sort of page numbers,
 * the page buffers kept between write txns, which meta slot a commit
 * writes, the 16 KiB pieces writes reach the kernel in, and the free tail
 * (the free pages of small commits, kept in the meta page).
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#include "internal.h"
#include "testutil.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* sort_u64 against qsort: short arrays (qsort inside), long ones (radix),
 * small and huge numbers, duplicates. */
static void test_sort_u64(void **state)
{
    (void)state;
    static const size_t sizes[] = {0, 1, 2, 63, 64, 65, 1000, 5000};
    static const unsigned bits[] = {4, 17, 33, 64};
    uint64_t rng = tu_seed(0x5047);
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
        for (size_t bi = 0; bi < sizeof bits / sizeof *bits; bi++) {
            size_t n = sizes[si];
            uint64_t *v = malloc((n ? n : 1) * sizeof *v), *w = malloc((n ? n : 1) * sizeof *w);
            assert_non_null(v);
            assert_non_null(w);
            for (size_t i = 0; i < n; i++) {
                uint64_t x = tu_rand(&rng);
                v[i] = w[i] = bits[bi] == 64 ? x : x & ((1ull << bits[bi]) - 1);
            }
            assert_int_equal(sort_u64(v, n), 0);
            qsort(w, n, sizeof *w, cmp_u64);
            assert_memory_equal(v, w, n * sizeof *v);
            free(v);
            free(w);
        }
}

/* A write txn's page buffers stay mapped on the handle for the next one, up
 * to the cap, and what they held never leaks into a new page's header. */
static void test_pagebufs_kept(void **state)
{
    (void)state;
    char path[256];
    tu_path(path, sizeof path, "pg-bufs");
    keel_db *db;
    assert_int_equal(keel_open(path, NULL, &db), 0);
    assert_int_equal(db->pagebufs.mapped, 0);
    static uint8_t v[1000];
    char k[32];
    for (int round = 0; round < 3; round++) {
        keel_txn *t;
        assert_int_equal(keel_begin(db, 0, &t), 0);
        for (int i = 0; i < 20000; i++) { /* ~5,000 pages at 4 KiB: more than the cap keeps */
            snprintf(k, sizeof k, "k%06d-%d", (i * 7919) % 20000, round);
            memset(v, 'a' + round, sizeof v);
            assert_int_equal(keel_put(t, 0, tu_val(k), (keel_val){v, sizeof v}, 0), 0);
        }
        assert_int_equal(keel_commit(t), 0);
        assert_true(db->pagebufs.mapped > 0);
        assert_true(db->pagebufs.mapped <= PAGEBUF_KEEP_BYTES);
        assert_int_equal(db->pagebufs.out, 0);
    }
    keel_txn *t;
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
    keel_val got;
    assert_int_equal(keel_get(t, 0, tu_val("k000123-2"), &got), 0);
    assert_int_equal(got.len, sizeof v);
    assert_int_equal(((const uint8_t *)got.data)[999], 'c');
    keel_abort(t);
    uint64_t problems = 1;
    assert_int_equal(keel_check(db, NULL, NULL, &problems), 0);
    assert_int_equal(problems, 0);
    keel_close(db); /* frees the kept buffers: ASan's leak check sees it */
    tu_remove(path);
}

static int cmp_uptr(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return (x > y) - (x < y);
}

static void *mmap_fails(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    (void)addr, (void)len, (void)prot, (void)flags, (void)fd, (void)off;
    errno = ENOMEM;
    return MAP_FAILED;
}

/* The pool on its own: distinct buffers that hold what is written to them,
 * given-back ones taken again before new memory is mapped, a failed map
 * that changes nothing, and a trim that keeps the first chunks. */
static void test_pagebuf_pool(void **state)
{
    (void)state;
    enum { N = 3000, PS = 4096 }; /* 12 MiB: past PAGEBUF_KEEP_BYTES */
    struct pagebuf_pool p = {0};
    static uint8_t *b[N];
    for (size_t i = 0; i < N; i++) {
        assert_non_null(b[i] = pagebuf_take(&p, PS, 1));
        assert_int_equal((uintptr_t)b[i] % 64, 0);
        memset(b[i], (int)(i % 251), PS);
    }
    for (size_t i = 0; i < N; i++)
        for (size_t j = 0; j < PS; j += 511)
            if (b[i][j] != (uint8_t)(i % 251))
                fail_msg("buffer %zu byte %zu was overwritten", i, j);
    assert_int_equal(p.out, N);
    size_t mapped = p.mapped;
    assert_true(mapped >= (size_t)N * PS);
    static uintptr_t given[N / 2];
    for (size_t i = 0; i < N; i += 2) {
        given[i / 2] = (uintptr_t)b[i];
        pagebuf_give(&p, b[i], PS, 1);
    }
    qsort(given, N / 2, sizeof *given, cmp_uptr);
    keel_os.mmap = mmap_fails; /* no new memory: the given-back buffers are enough */
    for (size_t i = 0; i < N; i += 2) {
        uint8_t *again = pagebuf_take(&p, PS, 1);
        assert_non_null(again);
        uintptr_t a = (uintptr_t)again;
        assert_non_null(bsearch(&a, given, N / 2, sizeof *given, cmp_uptr));
        b[i] = again;
    }
    assert_int_equal(p.mapped, mapped);
    struct pagebuf_pool empty = {0}; /* nothing to give and no map: out of memory, nothing changed */
    assert_null(pagebuf_take(&empty, PS, 1));
    assert_int_equal(empty.out, 0);
    assert_int_equal(empty.mapped, 0);
    pagebuf_pool_free(&empty);
    os_reset();
    for (size_t i = 0; i < N; i++)
        pagebuf_give(&p, b[i], PS, 1);
    pagebuf_trim(&p);
    assert_true(p.mapped > 0 && p.mapped <= PAGEBUF_KEEP_BYTES);
    assert_int_equal(pagebuf_take(&p, PS, 1), p.chunks[0].base); /* carved again from the start */
    pagebuf_give(&p, p.chunks[0].base, PS, 1);
    pagebuf_pool_free(&p);
    assert_int_equal(p.mapped, 0);
    assert_null(p.chunks);
}

static bool in_chunks(const struct pagebuf_pool *p, const uint8_t *b)
{
    for (size_t i = 0; i < p->nchunks; i++)
        if (b >= p->chunks[i].base && b < p->chunks[i].base + p->chunks[i].bytes)
            return true;
    return false;
}

/* Runs (overflow values): every length up to PAGEBUF_RUN_MAX_BYTES comes
 * from the chunks, distinct and holding what is written to them; a
 * given-back run is taken again for the same length only; a longer run
 * comes from malloc. */
static void test_pagebuf_runs(void **state)
{
    (void)state;
    enum { PS = 4096, MAXRUN = PAGEBUF_RUN_MAX_BYTES / PS, ROUNDS = 3 };
    struct pagebuf_pool p = {0};
    static uint8_t *b[ROUNDS][MAXRUN + 2];
    for (int r = 0; r < ROUNDS; r++)
        for (uint32_t n = 1; n <= MAXRUN + 1; n++) {
            assert_non_null(b[r][n] = pagebuf_take(&p, PS, n));
            assert_true(in_chunks(&p, b[r][n]) == (n <= MAXRUN));
            if (n <= MAXRUN)
                assert_int_equal((uintptr_t)b[r][n] % 64, 0);
            memset(b[r][n], r * 64 + (int)n, (size_t)n * PS);
        }
    for (int r = 0; r < ROUNDS; r++)
        for (uint32_t n = 1; n <= MAXRUN + 1; n++)
            for (size_t j = 0; j < (size_t)n * PS; j += 509)
                if (b[r][n][j] != (uint8_t)(r * 64 + (int)n))
                    fail_msg("run of %u pages (round %d) byte %zu was overwritten", n, r, j);
    assert_int_equal(p.out, ROUNDS * (MAXRUN + 1));
    size_t mapped = p.mapped;
    pagebuf_give(&p, b[1][3], PS, 3);
    pagebuf_give(&p, b[1][5], PS, 5);
    uint8_t *one = pagebuf_take(&p, PS, 1); /* no given-back single page: a new one */
    assert_true(one != b[1][3] && one != b[1][5]);
    assert_ptr_equal(pagebuf_take(&p, PS, 5), b[1][5]);
    assert_ptr_equal(pagebuf_take(&p, PS, 3), b[1][3]);
    pagebuf_give(&p, one, PS, 1);
    for (int r = 0; r < ROUNDS; r++)
        for (uint32_t n = 1; n <= MAXRUN + 1; n++)
            pagebuf_give(&p, b[r][n], PS, n);
    assert_int_equal(p.out, 0);
    assert_true(p.mapped >= mapped);
    pagebuf_trim(&p);
    pagebuf_pool_free(&p);
    assert_int_equal(p.mapped, 0);
}

static void read_meta(const char *path, unsigned slot, struct meta *m)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, m, sizeof *m, (off_t)slot * 4096), (ssize_t)sizeof *m);
    close(fd);
}

/* A commit writes the slot its snapshot's meta is not in, whatever the txn
 * ids say: here slot 0 holds a meta of a higher id that open refuses (its
 * pages lie past the end of the file), slot 1 the real one with id 0.  The
 * commit must overwrite slot 0 (by parity it would have overwritten slot 1,
 * the only good meta, and the refused one would come back once the file grew:
 * a fuzz_file finding, fuzz/regress/fuzz_file/meta-refused-at-open-outlives-commit). */
static void test_commit_writes_the_other_slot(void **state)
{
    (void)state;
    char path[256];
    tu_path(path, sizeof path, "pg-slot");
    keel_options o = {.flags = KEEL_NOSYNC, .page_size = 4096};
    keel_db *db;
    assert_int_equal(keel_open(path, &o, &db), 0);
    keel_close(db);
    /* slot 0: a one-flush meta of txn 2 that needs 64 pages, with an empty
     * commit list: the first open finds its commit torn (the file is too
     * short) and uses slot 1 */
    struct meta m;
    read_meta(path, 0, &m);
    assert_int_equal(m.txnid, 0);
    uint8_t list[META_LIST_HDR] = {0};
    wr64(list + 8, XXH3_64bits(NULL, 0));
    m.txnid = 2;
    m.npages = 64;
    m.flags = META_F_ONEFLUSH;
    m.commit_list_sum = XXH3_64bits(list, sizeof list);
    meta_seal(&m);
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, &m, sizeof m, 0), (ssize_t)sizeof m);
    assert_int_equal(pwrite(fd, list, sizeof list, META_LIST_OFF), (ssize_t)sizeof list);
    close(fd);

    assert_int_equal(keel_open(path, &o, &db), 0);
    keel_txn *t;
    assert_int_equal(keel_begin(db, 0, &t), 0);
    static uint8_t big[300000]; /* grows the file past 64 pages */
    assert_int_equal(keel_put(t, 0, tu_val("a"), (keel_val){big, sizeof big}, 0), 0);
    assert_int_equal(keel_commit(t), 0);
    keel_close(db);

    struct meta m0, m1;
    read_meta(path, 0, &m0);
    read_meta(path, 1, &m1);
    assert_int_equal(m0.txnid, 1); /* the refused meta is gone */
    assert_int_equal(m1.txnid, 0); /* the snapshot's meta is untouched */
    assert_int_equal(keel_open(path, &o, &db), 0);
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
    keel_val got;
    assert_int_equal(keel_get(t, 0, tu_val("a"), &got), 0);
    assert_int_equal(got.len, sizeof big);
    keel_abort(t);
    keel_close(db);
    tu_remove(path);
}

/* Every write reaches the kernel in pieces that do not cross a 16 KiB
 * multiple of the file offset (os.c: page-cache folios stay small), from
 * a commit's long runs, an overflow run and keel_copy alike; short writes
 * are retried where they stopped.  The data survives a reopen. */
static unsigned piece_calls, piece_full, piece_bad, piece_short;
static bool piece_check(size_t len, off_t off)
{
    uint64_t piece = 16 << 10;
    piece_calls++;
    piece_full += len == piece;
    if (len == 0 || (uint64_t)off / piece != ((uint64_t)off + len - 1) / piece)
        piece_bad++;
    return piece_calls % 5 == 0 && len > 1000; /* then write less than asked */
}
static ssize_t piece_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (piece_check(n, off)) {
        piece_short++;
        n = 1000;
    }
    return pwrite(fd, buf, n, off);
}
static ssize_t piece_pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    size_t len = 0;
    for (int i = 0; i < cnt; i++)
        len += iov[i].iov_len;
    if (piece_check(len, off)) {
        piece_short++;
        return pwrite(fd, iov[0].iov_base, iov[0].iov_len > 1000 ? 1000 : iov[0].iov_len, off);
    }
    return pwritev(fd, iov, cnt, off);
}

static void check_piece_data(const char *path)
{
    keel_db *db;
    assert_int_equal(keel_open(path, NULL, &db), 0);
    keel_txn *t;
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
    char k[32];
    keel_val got;
    for (int i = 0; i < 3000; i++) {
        snprintf(k, sizeof k, "k%05d", i);
        assert_int_equal(keel_get(t, 0, tu_val(k), &got), 0);
        assert_int_equal(got.len, 300);
        assert_int_equal(((const uint8_t *)got.data)[299], (uint8_t)i);
    }
    assert_int_equal(keel_get(t, 0, tu_val("big"), &got), 0);
    assert_int_equal(got.len, 70000);
    assert_int_equal(((const uint8_t *)got.data)[69999], 0x5a);
    keel_abort(t);
    uint64_t problems = 1;
    assert_int_equal(keel_check(db, NULL, NULL, &problems), 0);
    assert_int_equal(problems, 0);
    keel_close(db);
}

static void test_writes_in_16k_pieces(void **state)
{
    (void)state;
    char path[256], copy[300];
    tu_path(path, sizeof path, "pg-pieces");
    snprintf(copy, sizeof copy, "%s.copy", path);
    unlink(copy);
    keel_os.pwrite = piece_pwrite;
    keel_os.pwritev = piece_pwritev;
    keel_db *db;
    assert_int_equal(keel_open(path, NULL, &db), 0);
    keel_txn *t;
    assert_int_equal(keel_begin(db, 0, &t), 0);
    static uint8_t v[300], big[70000];
    char k[32];
    for (int i = 0; i < 3000; i++) { /* ~250 pages, most in long runs */
        snprintf(k, sizeof k, "k%05d", i);
        memset(v, i, sizeof v);
        assert_int_equal(keel_put(t, 0, tu_val(k), (keel_val){v, sizeof v}, 0), 0);
    }
    memset(big, 0x5a, sizeof big); /* an overflow run of 18 pages: one buffer */
    assert_int_equal(keel_put(t, 0, tu_val("big"), (keel_val){big, sizeof big}, 0), 0);
    assert_int_equal(keel_commit(t), 0);
    assert_int_equal(keel_copy(db, copy, 0), 0);
    keel_close(db);
    os_reset();
    assert_int_equal(piece_bad, 0);
    assert_true(piece_full > 50); /* long runs were written, in whole pieces */
    assert_true(piece_short > 10);
    check_piece_data(path);
    check_piece_data(copy);
    tu_remove(path);
    unlink(copy);
}

/* ---- the free tail ---- */

static uint64_t problems_of(keel_db *db)
{
    uint64_t problems = 99;
    assert_int_equal(keel_check(db, NULL, NULL, &problems), 0);
    return problems;
}

static void put_one(keel_db *db, unsigned i)
{
    keel_txn *t;
    char k[32];
    snprintf(k, sizeof k, "key-%06u", i);
    assert_int_equal(keel_begin(db, 0, &t), 0);
    assert_int_equal(keel_put(t, 0, tu_val(k), tu_val("a value of some length"), 0), 0);
    assert_int_equal(keel_commit(t), 0);
}

/* The newest meta of the file and its page. */
static unsigned newest_meta(const char *path, uint8_t page[4096], struct meta *m)
{
    struct meta a, b;
    read_meta(path, 0, &a);
    read_meta(path, 1, &b);
    unsigned s = a.txnid > b.txnid ? 0 : 1;
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, page, 4096, (off_t)s * 4096), 4096);
    close(fd);
    memcpy(m, page, sizeof *m);
    return s;
}

/* Pages a tail lists, from its words. */
static uint64_t tail_pages(const uint8_t *page)
{
    const uint8_t *t = page + meta_tail_off(4096);
    uint64_t n = 0;
    for (size_t i = 0; i < rd32(t);) {
        uint64_t c = rd64(t + META_TAIL_HDR + 8 * (i + 1));
        n += c;
        i += 2 + (size_t)c;
    }
    return n;
}

/* Small commits keep their free pages in the meta page: the free tree is
 * never written, the pages are reused (the file stops growing), and check,
 * stat, a reopen and both kinds of copy agree. */
static void test_free_tail_small_commits(void **state)
{
    (void)state;
    char path[256], cpath[256];
    tu_path(path, sizeof path, "pg-tail");
    tu_path(cpath, sizeof cpath, "pg-tail-copy");
    keel_options o = {.page_size = 4096};
    keel_db *db;
    assert_int_equal(keel_open(path, &o, &db), 0);
    for (unsigned i = 0; i < 300; i++)
        put_one(db, i * 7919 % 300);
    uint8_t page[4096];
    struct meta m, m2;
    newest_meta(path, page, &m);
    uint64_t npages = m.npages;
    for (unsigned i = 300; i < 400; i++)
        put_one(db, i * 7919 % 400);
    newest_meta(path, page, &m);
    assert_true(m.flags & META_F_FREETAIL);
    assert_int_equal(m.trees[TREE_FREE].root, 0);
    assert_true(m.free_pages > 0);
    assert_int_equal(tail_pages(page), m.free_pages);
    assert_true(m.npages <= npages + 2); /* pages are reused: a leaf split or two at most */
    assert_int_equal(problems_of(db), 0);
    keel_stat st;
    assert_int_equal(keel_db_stat(db, &st), 0);
    assert_int_equal(st.free_pages, m.free_pages);
    assert_int_equal(2 + st.branch_pages + st.leaf_pages + st.overflow_pages + st.free_pages, m.npages);

    assert_int_equal(keel_copy(db, cpath, 0), 0);
    keel_db *cdb;
    assert_int_equal(keel_open(cpath, &o, &cdb), 0);
    assert_int_equal(problems_of(cdb), 0);
    put_one(cdb, 5); /* the copy's tail is loaded and written again */
    assert_int_equal(problems_of(cdb), 0);
    keel_close(cdb);
    newest_meta(cpath, page, &m2);
    assert_int_equal(m2.trees[TREE_FREE].root, 0);
    assert_int_equal(tail_pages(page), m2.free_pages);
    tu_remove(cpath);

    keel_close(db); /* copies the one-flush meta into the other slot, tail and all */
    struct meta a, b;
    read_meta(path, 0, &a);
    read_meta(path, 1, &b);
    assert_int_equal(a.txnid, b.txnid);
    assert_true((a.flags & META_F_FREETAIL) && (b.flags & META_F_FREETAIL));
    for (unsigned slot = 0; slot < 2; slot++) { /* with their tails */
        int fd = open(path, O_RDONLY);
        assert_true(fd >= 0);
        assert_int_equal(pread(fd, page, 4096, (off_t)slot * 4096), 4096);
        close(fd);
        assert_int_equal(meta_check(page, 4096, 4096, &m2), 0);
    }
    assert_int_equal(keel_open(path, &o, &db), 0);
    assert_int_equal(problems_of(db), 0);
    put_one(db, 1);
    assert_int_equal(problems_of(db), 0);
    keel_close(db);
    tu_remove(path);
}

/* A reader holding an old snapshot keeps every later commit's pages from
 * reuse: the tail fills and its groups move to the free tree, and the pages
 * come back once the reader ends. */
static void test_free_tail_overflows_into_the_tree(void **state)
{
    (void)state;
    char path[256];
    tu_path(path, sizeof path, "pg-tail-full");
    keel_options o = {.page_size = 4096, .flags = KEEL_NOSYNC};
    keel_db *db;
    assert_int_equal(keel_open(path, &o, &db), 0);
    for (unsigned i = 0; i < 100; i++)
        put_one(db, i);
    keel_txn *r;
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &r), 0);
    uint8_t page[4096];
    struct meta m;
    bool in_tree = false;
    for (unsigned i = 0; i < 200 && !in_tree; i++) {
        put_one(db, 1000 + i);
        newest_meta(path, page, &m);
        in_tree = m.trees[TREE_FREE].root != 0;
    }
    assert_true(in_tree);
    assert_int_equal(problems_of(db), 0);
    keel_abort(r);
    uint64_t npages = m.npages;
    for (unsigned i = 0; i < 200; i++)
        put_one(db, 2000 + i);
    newest_meta(path, page, &m);
    assert_true(m.npages <= npages + 4); /* the held-back pages were reused */
    assert_int_equal(problems_of(db), 0);
    keel_close(db);
    tu_remove(path);
}

/* A tail that does not match its sum is a torn meta write: the meta before
 * it is used, check finds nothing wrong, and the next commit goes on. */
static void test_free_tail_torn(void **state)
{
    (void)state;
    char path[256];
    tu_path(path, sizeof path, "pg-tail-torn");
    keel_options o = {.page_size = 4096, .flags = KEEL_NOSYNC};
    keel_db *db;
    assert_int_equal(keel_open(path, &o, &db), 0);
    for (unsigned i = 0; i < 20; i++)
        put_one(db, i);
    keel_close(db);
    uint8_t page[4096];
    struct meta m;
    unsigned s = newest_meta(path, page, &m);
    assert_true(m.flags & META_F_FREETAIL);
    /* the slots hold txns 20 and 19 (KEEL_NOSYNC: no one-flush, nothing to confirm at close) */
    page[meta_tail_off(4096) + META_TAIL_HDR] ^= 1;
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, page, 4096, (off_t)s * 4096), 4096);
    close(fd);
    assert_int_equal(keel_open(path, &o, &db), 0);
    keel_stat st;
    assert_int_equal(keel_db_stat(db, &st), 0);
    assert_int_equal(st.last_txnid, 19); /* the other meta */
    assert_int_equal(problems_of(db), 0);
    put_one(db, 99);
    assert_int_equal(problems_of(db), 0);
    keel_close(db);
    tu_remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sort_u64),
        cmocka_unit_test(test_pagebufs_kept),
        cmocka_unit_test(test_pagebuf_pool),
        cmocka_unit_test(test_pagebuf_runs),
        cmocka_unit_test(test_commit_writes_the_other_slot),
        cmocka_unit_test(test_writes_in_16k_pieces),
        cmocka_unit_test(test_free_tail_small_commits),
        cmocka_unit_test(test_free_tail_overflows_into_the_tree),
        cmocka_unit_test(test_free_tail_torn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
