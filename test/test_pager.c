/*
 * test_pager.c — the pager's own pieces: the radix sort of page numbers,
 * the page buffers kept between write txns, which meta slot a commit
 * writes, and the 16 KiB pieces writes reach the kernel in.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* A write txn's page buffers are kept on the handle for the next one, up to
 * the cap, and what they held never leaks into a new page's header. */
static void test_pagebufs_kept(void **state)
{
    (void)state;
    char path[256];
    tu_path(path, sizeof path, "pg-bufs");
    keel_db *db;
    assert_int_equal(keel_open(path, NULL, &db), 0);
    assert_int_equal(db->npagebufs, 0);
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
        assert_true(db->npagebufs > 0);
        assert_true(db->npagebufs <= ((size_t)8 << 20) / db->psize);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sort_u64),
        cmocka_unit_test(test_pagebufs_kept),
        cmocka_unit_test(test_commit_writes_the_other_slot),
        cmocka_unit_test(test_writes_in_16k_pieces),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
