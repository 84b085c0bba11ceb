/*
 * copy.c — hot copies of a database (keel_copy, `keel copy`).
 *
 * Contract: the copy is one read snapshot, so writers go on meanwhile.
 *   - Plain: pages 2..npages-1 of the snapshot as they are (read with
 *     pread), then both metas
 *     set to the snapshot's meta; pages free in the snapshot are copied too
 *     (their content does not matter: the copy's free tree says they are free).
 *   - Compact: a new database filled bucket by bucket in key order with
 *     KEEL_APPEND, so pages come out full and in order, expiry times kept.
 *   In a summed (format 2) file both check every page of the snapshot
 *   against its sum as they read it (the plain copy walks the trees for
 *   that): a damaged database gives KEEL_CORRUPTED and no copy, never a
 *   backup that carries the damage on (keel salvage is for such a file).
 *   The copy is made under a unique name beside the destination, synced,
 *   and then linked to the destination's name, which must not exist: the
 *   destination appears whole or not at all (a full disk, a crash half way),
 *   and no lock file is ever made under its name.  On failure everything
 *   made is removed.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* The snapshot's pages into fd, an empty file; synced. */
/* Every page and overflow run reachable from the snapshot, against its sum. */
static int walk_none(void *ctx, uint64_t pgno, uint32_t npages, unsigned kind, int level)
{
    (void)ctx, (void)pgno, (void)npages, (void)kind, (void)level;
    return 0;
}

static int verify_bucket(const char *name, const struct tree_desc *d, void *ctx)
{
    (void)name;
    if (!d)
        return CORRUPT(0);
    struct tree_desc t = *d;
    return bt_walk(ctx, &t, walk_none, NULL);
}

static int verify_snapshot(keel_txn *txn)
{
    int rc = 0;
    for (int i = 0; i < TREE_COUNT && !rc; i++)
        rc = bt_walk(txn, &txn->meta.trees[i], walk_none, NULL);
    return rc ? rc : bucket_walk(txn, verify_bucket, txn);
}

static int copy_pages(keel_db *db, int fd)
{
    keel_txn *txn;
    uint8_t *tail;
    int rc = txn_begin_with_tail(db, &txn, &tail);
    if (rc)
        return rc;
    txn->verify = db->summed;
    if (db->summed && (rc = verify_snapshot(txn))) {
        os_free(tail);
        txn_abort(txn);
        return rc;
    }
    uint32_t ps = db->psize;
    uint64_t start = 2, end = txn->meta.npages;
    /* pages per write: up to 256, never more than the copy needs (a small
     * database at 64 KiB pages must not cost a 16 MiB buffer) */
    const uint64_t chunk = end - start < 256 ? (end > start ? end - start : 1) : 256;
    /* pread, not the map: a writer may shrink the file under pages that are
     * free in this snapshot, and reading those through the map would fault;
     * pread just comes back short, and their content does not matter */
    uint8_t *buf = os_malloc((size_t)(chunk * ps));
    if (!buf)
        rc = KEEL_NOMEM;
    for (uint64_t p = start; p < end && !rc; p += chunk) {
        uint64_t n = end - p < chunk ? end - p : chunk;
        size_t got;
        if ((rc = os_pread_upto(db->fd, buf, (size_t)(n * ps), p * ps, &got)))
            break;
        memset(buf + got, 0, (size_t)(n * ps) - got);
        rc = os_pwrite_full(fd, buf, (size_t)(n * ps), p * ps);
    }
    os_free(buf);
    if (!rc) {
        uint8_t *metas = os_calloc(2 * (size_t)ps);
        if (!metas)
            rc = KEEL_NOMEM;
        else {
            /* the copy is synced whole before it is used: no commit list to check */
            meta_page_settled(ps, &txn->meta, tail, metas);
            memcpy(metas + ps, metas, ps);
            rc = os_pwrite_full(fd, metas, 2 * (size_t)ps, 0);
            os_free(metas);
        }
    }
    if (!rc)
        rc = os_fsync(fd);
    os_free(tail);
    txn_abort(txn);
    return rc;
}

struct compact {
    keel_txn *src;
    keel_db *out;
    int rc;
};

static int copy_tree(keel_txn *src, keel_bucket sb, keel_txn *dst, keel_bucket db)
{
    keel_cursor c;
    memset(&c, 0, sizeof(c));
    struct tree_desc *t;
    int rc = bucket_tree(src, sb, &t);
    if (rc)
        return rc;
    cursor_init(&c, src, sb, t);
    keel_val k, v;
    for (rc = cursor_first(&c, &k, &v); rc == 0; rc = cursor_next(&c, &k, &v)) {
        const uint8_t *n;
        if ((rc = node_at(c.page[c.depth - 1], c.idx[c.depth - 1], src->db->node_end, &n)))
            break;
        if (check_key(dst, k)) {
            if (check_key(src, k)) { /* a key no put could have made: damage */
                rc = CORRUPT(c.pgno[c.depth - 1]);
            } else { /* a key an older format allowed: the copy's format has less room */
                error_detail_set("a key of %zu bytes: the copy's format allows at most %zu (a plain copy "
                                 "keeps the older format)", k.len, dst->db->max_key);
                rc = KEEL_BADVALSIZE;
            }
            break;
        }
        if ((rc = kv_put(dst, db, k, v, leaf_node_expiry(n), KEEL_APPEND)))
            break;
    }
    cursor_release(&c);
    return rc == KEEL_NOTFOUND ? 0 : rc;
}

static int copy_bucket(const char *name, void *ctx)
{
    struct compact *cp = ctx;
    keel_txn *dst;
    keel_bucket sb, db;
    int rc = bucket_open(cp->src, name, 0, &sb);
    if (rc)
        return rc;
    unsigned kind;
    if ((rc = bucket_flags(cp->src, sb, &kind)) || (rc = txn_begin(cp->out, 0, &dst)))
        return rc;
    if ((rc = bucket_open(dst, name, KEEL_CREATE | kind, &db)) || (rc = copy_tree(cp->src, sb, dst, db))) {
        txn_abort(dst);
        return rc;
    }
    return txn_commit(dst);
}

/* A new database at path (an empty file) filled with the snapshot's live
 * data, synced. */
static int copy_compact(keel_db *db, const char *path)
{
    keel_options o = {.page_size = db->psize, .flags = KEEL_NOSYNC, .purge_per_commit = -1, .max_readers = 1};
    keel_db *out;
    int rc = keel_open(path, &o, &out);
    if (rc)
        return rc;
    keel_txn *src, *dst;
    if ((rc = txn_begin(db, KEEL_RDONLY, &src)))
        goto done;
    src->verify = db->summed;
    /* the snapshot's clock: keys already expired are left behind */
    if ((rc = txn_begin(out, 0, &dst)) == 0) {
        if ((rc = copy_tree(src, KEEL_DEFAULT_BUCKET, dst, KEEL_DEFAULT_BUCKET)))
            txn_abort(dst);
        else
            rc = txn_commit(dst);
    }
    struct compact cp = {src, out, 0};
    if (!rc)
        rc = bucket_list(src, copy_bucket, &cp);
    txn_abort(src);
    if (!rc)
        rc = os_fsync(out->fd);
done:
    keel_close(out);
    return rc;
}

/* Creates a unique file beside dest: *fd open on it, its name in tmp. */
static int temp_beside(const char *dest, char *tmp, size_t size, int *fd)
{
    for (unsigned n = 0; n < 100; n++) {
        if (snprintf(tmp, size, "%s.copy-%ld-%u", dest, (long)getpid(), n) >= (int)size)
            return ENAMETOOLONG;
        if ((*fd = os_open_high(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) >= 0)
            return 0;
        if (errno != EEXIST)
            return errno;
    }
    return EEXIST;
}

/* Gives the finished copy tmp the name dest, unless dest exists by now. */
static int publish(const char *tmp, const char *dest)
{
    int rc = 0;
    if (link(tmp, dest) != 0) {
        rc = errno;
        /* a file system without hard links: the check and the rename are
         * two steps there, the best it allows */
        if (rc == EPERM || rc == EOPNOTSUPP || rc == ENOSYS) {
            struct stat st;
            rc = lstat(dest, &st) == 0 ? EEXIST : rename(tmp, dest) == 0 ? 0 : errno;
        }
        if (rc)
            return rc;
    }
    unlink(tmp);
    /* the new name must survive a crash as the data does */
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", dest);
    int dfd = keel_os.open(dirname(dir), O_RDONLY | O_CLOEXEC, 0);
    if (dfd >= 0) {
        os_fsync(dfd);
        os_close(dfd);
    }
    return 0;
}

int keel_copy(keel_db *db, const char *dest_path, unsigned flags)
{
    error_detail_clear();
    if (!db || !dest_path || !*dest_path)
        return KEEL_BADARG;
    if (flags & ~KEEL_COPY_COMPACT)
        return KEEL_BADFLAGS;
    if (db->fork_gen != os_fork_generation())
        return KEEL_FORKED;
    struct stat st;
    if (lstat(dest_path, &st) == 0) /* early, before the work: publish() checks again */
        return EEXIST;
    char tmp[PATH_MAX + 32], lock[PATH_MAX + 40];
    int fd;
    int rc = temp_beside(dest_path, tmp, sizeof tmp, &fd);
    if (rc)
        return rc;
    if (flags & KEEL_COPY_COMPACT) {
        os_close(fd);
        rc = copy_compact(db, tmp);
        snprintf(lock, sizeof lock, "%s-lock", tmp);
        unlink(lock);
    } else {
        rc = copy_pages(db, fd);
        os_close(fd);
    }
    if (!rc)
        rc = publish(tmp, dest_path);
    if (rc)
        unlink(tmp);
    return rc;
}
