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
 *   The destination is created with O_EXCL and synced before returning; on
 *   failure it is removed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

static int copy_pages(keel_db *db, const char *dest)
{
    keel_txn *txn;
    uint8_t *tail;
    int rc = txn_begin_with_tail(db, &txn, &tail);
    if (rc)
        return rc;
    int fd = keel_os.open(dest, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = errno;
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
    os_close(fd);
    os_free(tail);
    txn_abort(txn);
    if (rc)
        unlink(dest);
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
    cursor_init(&c, src, sb, NULL);
    keel_val k, v;
    for (rc = cursor_first(&c, &k, &v); rc == 0; rc = cursor_next(&c, &k, &v)) {
        const uint8_t *n;
        if ((rc = bt_node_at(c.page[c.depth - 1], c.idx[c.depth - 1], src->db->psize, &n)))
            break;
        if (check_key(dst, k)) { /* a key no put could have made: damage */
            rc = KEEL_CORRUPTED;
            break;
        }
        if ((rc = ttl_put(dst, db, k, v, leaf_node_expiry(n), KEEL_APPEND)))
            break;
    }
    os_free(c.keybuf);
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
    if ((rc = txn_begin(cp->out, 0, &dst)))
        return rc;
    if ((rc = bucket_open(dst, name, KEEL_CREATE, &db)) || (rc = copy_tree(cp->src, sb, dst, db))) {
        txn_abort(dst);
        return rc;
    }
    return txn_commit(dst);
}

static int copy_compact(keel_db *db, const char *dest)
{
    int fd = keel_os.open(dest, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return errno;
    os_close(fd);
    keel_options o = {.page_size = db->psize, .flags = KEEL_NOSYNC, .purge_per_commit = -1};
    keel_db *out;
    int rc = keel_open(dest, &o, &out);
    if (rc) {
        /* keel_open may have created the lock file before it failed */
        char lock[4200];
        snprintf(lock, sizeof lock, "%s-lock", dest);
        unlink(lock);
        unlink(dest);
        return rc;
    }
    keel_txn *src, *dst;
    if ((rc = txn_begin(db, KEEL_RDONLY, &src)))
        goto done;
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
    char lock[4200];
    snprintf(lock, sizeof lock, "%s-lock", dest);
    unlink(lock);
    if (rc)
        unlink(dest);
    return rc;
}

int keel_copy(keel_db *db, const char *dest_path, unsigned flags)
{
    if (!db || !dest_path || !*dest_path)
        return KEEL_BADARG;
    if (flags & ~KEEL_COPY_COMPACT)
        return KEEL_BADFLAGS;
    if (db->fork_gen != os_fork_generation())
        return KEEL_FORKED;
    return (flags & KEEL_COPY_COMPACT) ? copy_compact(db, dest_path) : copy_pages(db, dest_path);
}
