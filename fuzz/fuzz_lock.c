/*
 * fuzz_lock.c — a hostile lock file beside a valid database: keel_open must
 * answer KEEL_LOCKFILE or work, and a read and a write txn must then work;
 * never a crash.
 *
 * Input: byte 0 holds options, the rest is lock-file bytes.
 *   bit 0  0: the bytes are the whole lock file, there before anybody opens
 *             the database (the opener is its sole user: it validates, then
 *             re-initialises a valid one).
 *          1: handle A opens the database first; then the bytes overwrite
 *             the lock file from offset 0 while A has it mapped: header
 *             fields (the data file's identity and the writer word among
 *             them) and the reader table, slot owners included.  Liveness
 *             is a byte lock outside the file's content, so a writer word
 *             naming a dead or impossible handle is taken over: nothing in
 *             the file can block.  The group commit's state is there too
 *             (the visible commit, the published ones): damaged, it makes
 *             txns answer KEEL_LOCKFILE (or KEEL_PANIC: a flush said it
 *             failed), never hang; a visible commit moved back to the
 *             older meta shows readers that (durable) commit.  A runs a read and a write txn; a second
 *             handle B opens (not the sole user: it validates, answering
 *             KEEL_LOCKFILE or KEEL_LOCKPATH, or uses the file as it is)
 *             and does the same.
 *   bits 1-2  max_readers asked for: 0 (default), 1, 3, 200
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format.h"
#include "fuzz.h"
#include "keel.h"

static uint8_t *fl_image;
static size_t fl_image_len;

/* The valid database beside the lock file: made once, rewritten each run. */
static void fl_make_template(void)
{
    const char *path = fuzz_path(1, "lock-template.db");
    fuzz_remove_db(path);
    keel_db *db;
    keel_options o = {.flags = KEEL_NOSYNC};
    FUZZ_CHECK(keel_open(path, &o, &db) == 0);
    keel_txn *w;
    FUZZ_CHECK(keel_begin(db, 0, &w) == 0);
    keel_bucket b;
    FUZZ_CHECK(keel_bucket_open(w, "b", KEEL_CREATE, &b) == 0);
    for (int i = 0; i < 50; i++) {
        char k[16];
        int n = snprintf(k, sizeof k, "key%03d", i);
        FUZZ_CHECK(keel_put(w, i & 1 ? b : 0, (keel_val){k, (size_t)n}, (keel_val){k, (size_t)n}, 0) == 0);
    }
    FUZZ_CHECK(keel_commit(w) == 0);
    keel_close(db);
    FILE *f = fopen(path, "rb");
    FUZZ_CHECK(f);
    struct meta m[2];
    FUZZ_CHECK(fread(&m[0], sizeof m[0], 1, f) == 1);
    FUZZ_CHECK(fseek(f, m[0].page_size, SEEK_SET) == 0);
    FUZZ_CHECK(fread(&m[1], sizeof m[1], 1, f) == 1);
    const struct meta *nm = m[0].txnid >= m[1].txnid ? &m[0] : &m[1];
    fl_image_len = (size_t)(nm->npages * nm->page_size);
    fl_image = malloc(fl_image_len);
    FUZZ_CHECK(fl_image);
    FUZZ_CHECK(fseek(f, 0, SEEK_SET) == 0);
    FUZZ_CHECK(fread(fl_image, 1, fl_image_len, f) == fl_image_len);
    fclose(f);
    fuzz_remove_db(path);
}

/* A read txn and a write txn on db.  live: the lock file was overwritten
 * while in use, so slots may be full and the group state damaged. */
static void fl_use(keel_db *db, bool live)
{
    keel_txn *r;
    int rc = keel_begin(db, KEEL_RDONLY, &r);
    FUZZ_CHECK(rc == 0 || (live && (rc == KEEL_READERS_FULL || rc == KEEL_LOCKFILE)));
    if (rc == 0) {
        keel_val v;
        rc = keel_get(r, 0, (keel_val){"key000", 6}, &v);
        FUZZ_CHECK((rc == 0 && v.len == 6 && memcmp(v.data, "key000", 6) == 0) ||
                   (live && rc == KEEL_NOTFOUND && keel_txn_id(r) == 0));
        keel_abort(r);
    }
    keel_txn *w;
    rc = keel_begin(db, 0, &w);
    FUZZ_CHECK(rc == 0 || (live && (rc == KEEL_LOCKFILE || rc == KEEL_PANIC)));
    if (rc == 0) {
        FUZZ_CHECK(keel_put(w, 0, (keel_val){"new", 3}, (keel_val){"value", 5}, 0) == 0);
        rc = keel_del(w, 0, (keel_val){"key002", 6}); /* the second handle finds it gone */
        FUZZ_CHECK(rc == 0 || rc == KEEL_NOTFOUND);
        rc = keel_commit(w);
        FUZZ_CHECK(rc == 0 || (live && (rc == KEEL_LOCKFILE || rc == KEEL_PANIC)));
    }
    size_t cnt;
    keel_reader_info ri[8];
    rc = keel_db_readers(db, ri, 8, &cnt);
    FUZZ_CHECK(rc == 0 || (live && rc == KEEL_LOCKFILE));
}

FUZZ_ENTRY(lock)
{
    if (size < 1)
        return 0;
    if (!fl_image)
        fl_make_template();
    static const uint32_t readers[4] = {0, 1, 3, 200};
    unsigned opt = data[0];
    const uint8_t *bytes = data + 1;
    size_t n = size - 1;
    const char *path = fuzz_path(1, "lock.db");
    char lpath[700];
    snprintf(lpath, sizeof lpath, "%s-lock", path);
    fuzz_remove_db(path);
    FUZZ_CHECK(fuzz_write_file(path, fl_image, fl_image_len) == 0);
    keel_options o = {.flags = KEEL_NOSYNC, .max_readers = readers[(opt >> 1) & 3]};
    keel_db *a = NULL, *b = NULL;
    int rc;
    if (!(opt & 1)) {
        FUZZ_CHECK(fuzz_write_file(lpath, bytes, n) == 0);
        rc = keel_open(path, &o, &a);
        FUZZ_CHECK(rc == 0 || rc == KEEL_LOCKFILE);
        if (rc == 0) {
            fl_use(a, false);
            keel_close(a);
        }
    } else {
        FUZZ_CHECK(keel_open(path, &o, &a) == 0);
        int fd = open(lpath, O_RDWR | O_CLOEXEC);
        FUZZ_CHECK(fd >= 0);
        /* The seeds carry no data-file identity (bytes 32..47, which differ
         * on every run): zeros there keep the live file's, so the seeds reach
         * past that check; anything else is written as it is. */
        uint8_t ident[16];
        FUZZ_CHECK(pread(fd, ident, sizeof ident, 32) == (ssize_t)sizeof ident);
        FUZZ_CHECK(pwrite(fd, bytes, n, 0) == (ssize_t)n);
        static const uint8_t zero16[16];
        if (n >= 48 && memcmp(bytes + 32, zero16, 16) == 0)
            FUZZ_CHECK(pwrite(fd, ident, sizeof ident, 32) == (ssize_t)sizeof ident);
        close(fd);
        fl_use(a, true);
        rc = keel_open(path, &o, &b);
        FUZZ_CHECK(rc == 0 || rc == KEEL_LOCKFILE || rc == KEEL_LOCKPATH);
        if (rc == 0) {
            fl_use(b, true);
            keel_close(b);
        }
        keel_close(a);
    }
    fuzz_remove_db(path);
    return 0;
}
