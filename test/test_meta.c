/*
 * test_meta.c — the meta layer's selector (lib/meta.c): the newest of two
 * valid metas, a torn (bad-checksum) meta passed over, a meta the lock file
 * names bad passed over, both unusable -> KEEL_CORRUPTED; and the two
 * readers of the metas (meta_newest from the map, meta_newest_file with
 * pread) choosing alike on a real database, and a meta changed in the file
 * under an open handle checked again (meta_newest compares a meta's bytes
 * with the last valid one it saw; test_crash's images are the case of
 * equal meta bytes over a torn tail in another file).
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

#include "internal.h"
#include "testutil.h"

/* A valid meta of txn id `txnid` at 4 KiB pages, checked into *m through a
 * page buffer as a reader sees it; returns what meta_check said. */
static int make_meta(uint64_t txnid, uint32_t flags, uint8_t *page, struct meta *m)
{
    struct meta w;
    memset(&w, 0, sizeof w);
    w.magic = KEEL_MAGIC;
    w.version = KEEL_FORMAT_VERSION;
    w.page_size = 4096;
    w.npages = 2;
    w.next_bucket_id = 1;
    w.txnid = txnid;
    w.flags = flags;
    meta_seal(&w);
    memset(page, 0, 4096);
    memcpy(page, &w, META_SIZE);
    return meta_check(page, 4096, 4096, m);
}

static uint8_t page0[4096], page1[4096];

/* Two valid metas: the higher txn id wins, whichever slot it is in. */
static void test_select_newest_of_two(void **state)
{
    (void)state;
    struct meta a, b;
    unsigned slot = 9;
    int ra = make_meta(7, 0, page0, &a), rb = make_meta(8, 0, page1, &b);
    assert_int_equal(ra, 0);
    assert_int_equal(rb, 0);
    assert_int_equal(meta_select(ra, &a, rb, &b, 0, &slot), 0);
    assert_int_equal(slot, 1);
    assert_int_equal(meta_select(rb, &b, ra, &a, 0, &slot), 0);
    assert_int_equal(slot, 0);
    /* a tie (a one-flush meta and the copy keel_close made of it): the copy */
    struct meta c;
    assert_int_equal(make_meta(8, META_F_ONEFLUSH, page0, &c), 0);
    assert_int_equal(meta_select(0, &c, 0, &b, 0, &slot), 0);
    assert_int_equal(slot, 1);
    assert_int_equal(meta_select(0, &b, 0, &c, 0, &slot), 0);
    assert_int_equal(slot, 0);
}

/* A torn meta (its checksum fails): the other one, even when older. */
static void test_select_passes_torn_meta(void **state)
{
    (void)state;
    struct meta a, b;
    unsigned slot = 9;
    assert_int_equal(make_meta(3, 0, page0, &a), 0);
    assert_int_equal(make_meta(4, 0, page1, &b), 0);
    page1[offsetof(struct meta, txnid)] ^= 0x10; /* txn 4 torn */
    int rb = meta_check(page1, 4096, 4096, &b);
    assert_int_equal(rb, KEEL_CORRUPTED);
    assert_int_equal(meta_select(0, &a, rb, &b, 0, &slot), 0);
    assert_int_equal(slot, 0);
    assert_int_equal(meta_select(rb, &b, 0, &a, 0, &slot), 0);
    assert_int_equal(slot, 1);
}

/* The lock file's bad_meta names a one-flush meta: passed over as if torn;
 * a meta without ONEFLUSH is never passed over, whatever bad_meta says. */
static void test_select_passes_meta_named_bad(void **state)
{
    (void)state;
    struct meta a, b;
    unsigned slot = 9;
    assert_int_equal(make_meta(5, 0, page0, &a), 0);
    assert_int_equal(make_meta(6, META_F_ONEFLUSH, page1, &b), 0);
    assert_true(meta_is_bad(&b, b.checksum));
    assert_int_equal(meta_select(0, &a, 0, &b, b.checksum, &slot), 0);
    assert_int_equal(slot, 0);
    assert_int_equal(meta_select(0, &a, 0, &b, b.checksum ^ 1, &slot), 0); /* names another meta */
    assert_int_equal(slot, 1);
    assert_int_equal(make_meta(6, 0, page1, &b), 0);
    assert_false(meta_is_bad(&b, b.checksum));
    assert_int_equal(meta_select(0, &a, 0, &b, b.checksum, &slot), 0);
    assert_int_equal(slot, 1);
}

/* Neither usable (damaged, or damaged and named bad): KEEL_CORRUPTED, and
 * *slot untouched. */
static void test_select_both_bad(void **state)
{
    (void)state;
    struct meta a, b;
    unsigned slot = 9;
    assert_int_equal(make_meta(5, 0, page0, &a), 0);
    assert_int_equal(make_meta(6, META_F_ONEFLUSH, page1, &b), 0);
    assert_int_equal(meta_select(KEEL_CORRUPTED, &a, KEEL_CORRUPTED, &b, 0, &slot), KEEL_CORRUPTED);
    assert_int_equal(meta_select(KEEL_CORRUPTED, &a, 0, &b, b.checksum, &slot), KEEL_CORRUPTED);
    assert_int_equal(meta_select(KEEL_INVALID, &a, KEEL_VERSION, &b, 0, &slot), KEEL_CORRUPTED);
    assert_int_equal(slot, 9);
}

/* On a real database: meta_newest (the map) and meta_newest_file (pread)
 * choose the same meta; a meta the lock file names bad sends both to the
 * other slot; with that one torn too, both answer KEEL_CORRUPTED. */
static void test_newest_on_a_database(void **state)
{
    (void)state;
    char path[256];
    tu_path(path, sizeof path, "meta-newest");
    keel_options o = {.page_size = 4096, .flags = KEEL_NOSYNC};
    keel_db *db;
    assert_int_equal(keel_open(path, &o, &db), 0);
    for (int i = 0; i < 3; i++) {
        keel_txn *t;
        assert_int_equal(keel_begin(db, 0, &t), 0);
        assert_int_equal(keel_put(t, 0, tu_val("k"), tu_val("v"), 0), 0);
        assert_int_equal(keel_commit(t), 0);
    }
    struct meta m, f;
    unsigned slot = 9, fslot = 9;
    assert_int_equal(meta_newest(db, &m, &slot), 0);
    assert_int_equal(meta_newest_file(db, &f, &fslot), 0);
    assert_int_equal(m.txnid, 3);
    assert_int_equal(f.txnid, 3);
    assert_int_equal(slot, fslot);
    assert_memory_equal(&m, &f, META_SIZE);
    assert_int_equal(meta_newest(db, &m, NULL), 0); /* slot may be NULL */
    assert_int_equal(m.txnid, 3);
    /* a reader's re-check: nothing newer than 3 visible; newer than 2 is */
    assert_false(meta_maybe_newer(db, 3));
    assert_true(meta_maybe_newer(db, 2));
    /* a reader sees no commit newer than the visible one, even when it is
     * in the file (a flush writes the meta, then makes it visible) */
    atomic_store(&db->lock.group->visible, 2);
    keel_txn *rt;
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &rt), 0);
    assert_int_equal(keel_txn_id(rt), 2);
    keel_abort(rt);
    assert_false(meta_maybe_newer(db, 2));
    assert_int_equal(meta_newest(db, &m, NULL), 0); /* a writer's view: the newest in the file */
    assert_int_equal(m.txnid, 3);

    /* the newest meta made one-flush and named bad by the lock file: txn 2 */
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    struct meta n = f;
    n.flags |= META_F_ONEFLUSH;
    meta_seal(&n);
    unsigned badslot = fslot;
    assert_int_equal(pwrite(fd, &n, META_SIZE, (off_t)badslot * 4096), (ssize_t)META_SIZE);
    lockfile_set_bad_meta(&db->lock, n.checksum);
    /* (the open that names it bad makes the commit before it visible, as
     * set above): a reader passes the bad meta over and begins */
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &rt), 0);
    assert_int_equal(keel_txn_id(rt), 2);
    keel_abort(rt);
    assert_int_equal(meta_newest(db, &m, &slot), 0);
    assert_int_equal(meta_newest_file(db, &f, &fslot), 0);
    assert_int_equal(m.txnid, 2);
    assert_int_equal(f.txnid, 2);
    assert_int_equal(slot, 1 - badslot);
    assert_int_equal(fslot, 1 - badslot);

    /* the other meta torn as well: nothing usable */
    uint8_t junk = 0xA5;
    assert_int_equal(pwrite(fd, &junk, 1, (off_t)slot * 4096 + offsetof(struct meta, npages)), 1);
    assert_int_equal(meta_newest(db, &m, &slot), KEEL_CORRUPTED);
    assert_int_equal(meta_newest_file(db, &f, &fslot), KEEL_CORRUPTED);
    keel_txn *t;
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), KEEL_CORRUPTED);
    close(fd);
    lockfile_set_bad_meta(&db->lock, 0);
    keel_close(db);
    tu_remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_select_newest_of_two),
        cmocka_unit_test(test_select_passes_torn_meta),
        cmocka_unit_test(test_select_passes_meta_named_bad),
        cmocka_unit_test(test_select_both_bad),
        cmocka_unit_test(test_newest_on_a_database),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
