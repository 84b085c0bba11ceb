/*
 * db.c — db: open, create, recover, close.
 *
 * Contract:
 *   - keel_open_sized() checks its arguments and options first (nothing is
 *     touched for a refused call), then opens the data file and its lock
 *     file, makes an empty file (or one whose creation a crash cut short) a
 *     new database under the writer lock, and, as the first user after a
 *     crash, checks the newest one-flush commit (meta_verify_commit) and
 *     has the lock file name it bad if it was torn.  The newest meta comes
 *     from meta.c's selector (meta_newest_file); only then is the lock file
 *     shared and the file mapped.
 *   - A failed open leaves nothing behind that it made and nobody else has
 *     seen: an empty data file it created, a lock file it created.
 *   - keel_close() ends the handle's txns, settles its one-flush commit
 *     (group_confirm), and frees everything the handle holds.
 *   - The public entries keel_open, keel_open_sized and keel_close live
 *     here with their argument checks; api.c has the others.
 *
 * Layer: the top, beside api (it calls txn, bucket, pager, meta, lockfile,
 * os); nothing calls into it but the public API.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define DEFAULT_MAX_READERS KEEL_DEFAULT_MAX_READERS
#define DEFAULT_MAP_SIZE KEEL_DEFAULT_MAX_SIZE /* address space, not disk */

static int write_initial_metas(keel_db *db)
{
    size_t ps = db->psize;
    uint8_t *buf = os_calloc(2 * ps);
    if (!buf)
        return KEEL_NOMEM;
    struct meta m;
    memset(&m, 0, sizeof(m));
    m.magic = KEEL_MAGIC;
    m.version = KEEL_FORMAT_VERSION;
    m.page_size = db->psize;
    m.npages = 2;
    m.next_bucket_id = 1;
    meta_seal(&m);
    meta_encode(&m, buf);
    meta_encode(&m, buf + ps);
    /* Page 1 first, made durable, then page 0: a crash in between leaves
     * page 0 all zeros, which no truncated real file has (truncation keeps
     * the front), so keel_open can tell an unfinished creation and redo it. */
    bool sync = !(db->flags & KEEL_NOSYNC);
    int rc = os_pwrite_full(db->fd, buf + ps, ps, ps);
    if (!rc && sync)
        rc = os_fsync(db->fd);
    if (!rc)
        rc = os_pwrite_full(db->fd, buf, ps, 0);
    if (!rc && sync)
        rc = os_fsync(db->fd);
    os_free(buf);
    return rc;
}

/* The newest meta, read with pread (the map is not set up yet: see
 * meta_newest_file); its pages must fit in the file. */
static int read_metas(keel_db *db, uint64_t fsize, struct meta *out)
{
    unsigned slot;
    int rc = meta_newest_file(db, out, &slot);
    if (!rc && out->npages * out->page_size > fsize)
        rc = CORRUPT(0);
    return rc;
}

/* The first opener after a crash: was the newest commit torn?  Only a
 * one-flush commit can be (its pages and meta shared one sync); then the
 * lock file tells every user to ignore its meta, and the previous commit,
 * durable before it began, is the newest.  The caller is the sole user, so
 * no writer changes the pages while they are checked. */
static int check_last_commit(keel_db *db, uint64_t fsize)
{
    struct meta m;
    unsigned slot;
    if (meta_newest_file(db, &m, &slot) || !(m.flags & META_F_ONEFLUSH))
        return 0; /* nothing to check (read_metas reports what is wrong) */
    int rc = meta_verify_commit(db->fd, fsize, &m, slot);
    if (rc == KEEL_CORRUPTED) {
        lockfile_set_bad_meta(&db->lock, m.checksum);
        rc = 0;
    }
    return rc;
}

/* Did a creation stop half way (a crash inside write_initial_metas)?  Then
 * page 0 is still all zeros (it is written last) and the rest holds nothing
 * but zeros and the initial meta of page 1 (txn id 0, no data): it is safe
 * to start it over.  Anything else (a foreign file, one of zeros only, a
 * truncated real one, real data) is left alone and refused: an all-zero
 * file is somebody's, not a creation of ours. */
static bool unfinished_creation(keel_db *db, uint64_t fsize)
{
    if (fsize > 2 * (uint64_t)KEEL_MAX_PAGE)
        return false;
    uint8_t *buf = os_malloc((size_t)fsize + 1);
    size_t got;
    if (!buf || os_pread_upto(db->fd, buf, (size_t)fsize, 0, &got) || got != fsize) {
        os_free(buf);
        return false;
    }
    /* blank out an initial meta at one page size on (page 0 must be zeros already) */
    bool ours = false;
    for (uint64_t off = KEEL_MIN_PAGE; off <= KEEL_MAX_PAGE; off *= 2) {
        struct meta m;
        if (off + META_SIZE <= fsize && meta_check(buf + off, META_SIZE, 0, &m) == 0 && m.txnid == 0 &&
            m.npages == 2 && off == m.page_size) {
            memset(buf + off, 0, META_SIZE);
            ours = true;
        }
    }
    bool blank = ours;
    for (uint64_t i = 0; i < fsize && blank; i++)
        blank = buf[i] == 0;
    os_free(buf);
    return blank;
}

static void db_free(keel_db *db, bool abandon)
{
    if (db->map)
        keel_os.munmap(db->map, db->map_size);
    if (abandon)
        lockfile_abandon(&db->lock);
    else
        lockfile_close(&db->lock, db->fork_gen != os_fork_generation());
    if (db->fd >= 0)
        os_close(db->fd);
    bucket_table_free(db);
    txn_free_spares(db);
    pagebuf_pool_free(&db->pagebufs);
    keel_cursor *c = db->spare_cursor;
    if (c) {
        cursor_release(c);
        os_free(c);
    }
    c = db->spare_cursors;
    while (c) {
        keel_cursor *n = c->next;
        cursor_release(c);
        os_free(c);
        c = n;
    }
    pthread_mutex_destroy(&db->mu);
    pthread_mutex_destroy(&db->flush_mu);
    group_free(db);
    pthread_cond_destroy(&db->writer_cv);
    os_free((void *)db->known);
    os_free(db->path);
    os_free(db);
}

#define SYMLINK_HOPS_MAX 40 /* the kernel's own limit (ELOOP) */

/* When path is a symbolic link to nothing (a chain of them, at most
 * SYMLINK_HOPS_MAX): the path of the missing file it leads to, a relative
 * link read from its own directory; the caller frees it.  NULL otherwise.
 * O_CREAT | O_EXCL refuses any link (EEXIST), and the plain open of a
 * dangling one answers ENOENT: this is the name to create instead, as the
 * plain O_CREAT that LMDB uses would. */
static char *dangling_link_target(const char *path)
{
    char *cur = strdup(path), target[PATH_MAX];
    for (int hops = 0; cur && hops < SYMLINK_HOPS_MAX; hops++) {
        ssize_t n = readlink(cur, target, sizeof(target) - 1);
        if (n < 0) {
            if (errno == ENOENT && hops > 0)
                return cur; /* the end of the chain, missing */
            break;          /* not a link (EINVAL), or unreadable */
        }
        target[n] = 0;
        const char *slash = strrchr(cur, '/');
        size_t dir = target[0] == '/' || !slash ? 0 : (size_t)(slash - cur) + 1;
        char *next = malloc(dir + (size_t)n + 1);
        if (next) {
            memcpy(next, cur, dir);
            memcpy(next + dir, target, (size_t)n + 1);
        }
        free(cur);
        cur = next;
    }
    free(cur);
    return NULL;
}

/* The data file (never on descriptors 0-2), created if missing, through a
 * dangling symbolic link too.  *created: this call made it. */
static int open_data_file(keel_db *db, const char *path, const keel_options *o, bool *created)
{
    bool rdonly = o->flags & KEEL_RDONLY;
    mode_t mode = o->mode ? o->mode : 0644;
    db->fd = -1;
    *created = false;
    if (!rdonly) {
        db->fd = os_open_high(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        *created = db->fd >= 0;
    }
    if (db->fd < 0 && (rdonly || errno == EEXIST))
        db->fd = os_open_high(path, (rdonly ? O_RDONLY : O_RDWR) | O_CLOEXEC, mode);
    char *target;
    if (db->fd < 0 && !rdonly && errno == ENOENT && (target = dangling_link_target(path))) {
        db->fd = os_open_high(target, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        *created = db->fd >= 0;
        if (db->fd < 0 && errno == EEXIST) /* another opener made it first */
            db->fd = os_open_high(path, O_RDWR | O_CLOEXEC, mode);
        int err = errno;
        free(target);
        errno = err;
    }
    if (db->fd < 0) {
        int rc = errno ? errno : EIO;
        error_detail_set("%s: %s", path, strerror(rc));
        return rc;
    }
    struct stat st;
    if (keel_os.fstat(db->fd, &st))
        return errno ? errno : EIO;
    if (!S_ISREG(st.st_mode)) {
        error_detail_set("%s: %s", path, S_ISDIR(st.st_mode) ? strerror(EISDIR) : "not a regular file");
        return S_ISDIR(st.st_mode) ? EISDIR : KEEL_INVALID;
    }
    return 0;
}

/* Does path still name the file open on fd?  0 yes, KEEL_LOCKPATH no (it
 * was removed or replaced), or the errno of an fstat that failed. */
static int path_names_fd(const char *path, int fd)
{
    struct stat byname, byfd;
    if (keel_os.fstat(fd, &byfd))
        return errno ? errno : EIO;
    return stat(path, &byname) == 0 && byname.st_dev == byfd.st_dev && byname.st_ino == byfd.st_ino ? 0
                                                                                                     : KEEL_LOCKPATH;
}

/* The data file and its lock file.  Once the lock file is ours, the name
 * must still lead to the data file we opened: another opener that failed
 * may have removed the empty file it created, which we had opened too. */
static int open_files(keel_db *db, const char *path, const keel_options *o, bool *created)
{
    for (int tries = 0;; tries++) {
        int rc = open_data_file(db, path, o, created);
        if (rc)
            return rc;
        rc = lockfile_open(&db->lock, db->fd, path, o->max_readers ? o->max_readers : DEFAULT_MAX_READERS, o->flags);
        if (rc)
            return rc;
        rc = path_names_fd(path, db->fd);
        if (rc != KEEL_LOCKPATH || tries == 3)
            return rc;
        lockfile_close(&db->lock, false);
        os_close(db->fd);
        db->fd = -1;
    }
}

/* An empty file becomes a new database, under the writer lock so that two
 * creators cannot race (opening an existing file never waits for a writer);
 * so does one whose creation a crash cut short.  *fsize: the file's size. */
static int create_if_new(keel_db *db, const keel_options *o, uint64_t *fsize)
{
    int rc = os_file_size(db->fd, fsize);
    if (rc)
        return rc;
    struct meta m;
    if (*fsize != 0 && (read_metas(db, *fsize, &m) != 0 || m.txnid == 0) && unfinished_creation(db, *fsize))
        *fsize = 0; /* start the creation over (under the lock, below) */
    if (*fsize != 0)
        return 0;
    if (o->flags & KEEL_RDONLY) {
        error_detail_set("%s: empty: not a keel database yet", db->path);
        return KEEL_INVALID;
    }
    lockfile_writer_lock(&db->lock);
    if ((rc = os_file_size(db->fd, fsize)) == 0 &&
        (*fsize == 0 || ((read_metas(db, *fsize, &m) != 0 || m.txnid == 0) && unfinished_creation(db, *fsize)))) {
        db->psize = o->page_size ? o->page_size : KEEL_MIN_PAGE;
        if ((rc = os_ftruncate(db->fd, 0)) == 0 && (rc = write_initial_metas(db)) == 0)
            rc = os_file_size(db->fd, fsize);
    }
    lockfile_writer_unlock(&db->lock);
    return rc;
}

/* Maps the file read-only.  The map covers at least the file: a file grown
 * past max_size by another handle is still readable whole. */
static int map_file(keel_db *db, const keel_options *o)
{
    uint64_t need = (db->file_size + db->psize - 1) / db->psize * db->psize;
    if (db->map_size < need)
        db->map_size = need;
    if (db->map_size % db->psize)
        db->map_size -= db->map_size % db->psize;
    void *map = keel_os.mmap(NULL, db->map_size, PROT_READ, MAP_SHARED, db->fd, 0);
    /* Without an explicit max_size, settle for less address space where the
     * full reservation is refused (32-bit hosts, valgrind, ulimit -v). */
    while (map == MAP_FAILED && !o->max_size && db->map_size / 2 >= ((uint64_t)64 << 20) &&
           db->map_size / 2 >= 2 * db->file_size) {
        db->map_size /= 2;
        map = keel_os.mmap(NULL, db->map_size, PROT_READ, MAP_SHARED, db->fd, 0);
    }
    if (map == MAP_FAILED) {
        int err = errno;
        error_detail_set("%s: cannot reserve %" PRIu64 " bytes of address space for the map: %s", db->path,
                         db->map_size, strerror(err));
        return err == ENOMEM ? KEEL_ADDRSPACE : err;
    }
    db->map = map;
    return 0;
}

/* The caller's options, whatever header it was built with: the fields it
 * knows, defaults (zeros) for the rest.  Bytes past our own struct must be
 * zero: options this library does not know cannot be honoured. */
static int options_copy(const keel_options *opts, size_t size, keel_options *o)
{
    memset(o, 0, sizeof(*o));
    if (!opts)
        return 0;
    if (size < KEEL_OPTIONS_SIZE_0_1)
        return KEEL_BADARG;
    for (size_t i = sizeof(*o); i < size; i++)
        if (((const uint8_t *)opts)[i])
            return KEEL_BADARG;
    memcpy(o, opts, size < sizeof(*o) ? size : sizeof(*o));
    return 0;
}

int(keel_open)(const char *path, const keel_options *opts, keel_db **out)
{
    return keel_open_sized(path, opts, KEEL_OPTIONS_SIZE_0_1, out);
}

/* What keel_open_sized refuses before it touches anything: 0 or the code. */
static int options_check(const keel_options *o)
{
    if (o->flags & ~(KEEL_RDONLY | KEEL_NOSYNC | KEEL_NOMETASYNC | KEEL_NOLOCK | KEEL_VERIFY))
        return KEEL_BADFLAGS;
    if ((o->flags & KEEL_NOLOCK) && !(o->flags & KEEL_RDONLY))
        return KEEL_BADFLAGS; /* a writer without the lock file would be alone only by luck */
    if (o->page_size && (o->page_size < KEEL_MIN_PAGE || o->page_size > KEEL_MAX_PAGE ||
                         (o->page_size & (o->page_size - 1))))
        return KEEL_BADARG;
    if (o->max_readers > 65536 || (o->mode & ~07777u))
        return KEEL_BADARG;
    if (o->max_size && o->max_size < ((uint64_t)1 << 20))
        return KEEL_BADARG;
    return 0;
}

/* A handle with the options in place and nothing open yet (db_free takes
 * it back); NULL when out of memory. */
static keel_db *db_new(const char *path, const keel_options *o)
{
    keel_db *db = os_calloc(sizeof(*db));
    if (!db)
        return NULL;
    db->fd = -1;
    db->lock.fd = -1;
    /* adaptive: its critical sections are a few list operations, and read
     * txns of several threads take it twice each; spinning a little beats
     * a futex sleep and wake */
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&db->mu, &ma);
    pthread_mutexattr_destroy(&ma);
    pthread_mutex_init(&db->flush_mu, NULL);
    pthread_cond_init(&db->writer_cv, NULL);
    db->max_reader_lag = o->max_reader_lag;
    db->flags = o->flags;
    db->clock = o->clock;
    db->clock_ctx = o->clock_ctx;
    db->purge_per_commit = o->purge_per_commit == 0 ? DEFAULT_PURGE_PER_COMMIT : o->purge_per_commit;
    db->max_dirty = o->max_dirty ? (size_t)o->max_dirty : DEFAULT_MAX_DIRTY_BYTES;
    db->map_size = o->max_size ? o->max_size : (sizeof(void *) >= 8 ? DEFAULT_MAP_SIZE : ((uint64_t)1 << 30));
    os_watch_fork();
    db->fork_gen = os_fork_generation();
    static _Atomic uint64_t opens;
    db->open_id = atomic_fetch_add(&opens, 1) + 1;
    db->path = os_strdup(path);
    return db;
}

/* Opens (or creates) the database at path into db: the files, creation,
 * the crash check of the first opener, the newest meta, the map, and the
 * sizes that follow from the page size.  *created: this call made the data
 * file (db_open_fail may remove it again). */
static int db_load(keel_db *db, const char *path, const keel_options *o, bool *created)
{
    int rc;
    uint64_t fsize;
    if ((rc = open_files(db, path, o, created)))
        return rc;
    if ((rc = create_if_new(db, o, &fsize)))
        return rc;
    if ((db->lock.sole || db->lock.nolock) && (rc = check_last_commit(db, fsize)))
        return rc;
    struct meta m;
    rc = read_metas(db, fsize, &m);
    if (rc == KEEL_CORRUPTED && os_file_size(db->fd, &fsize) == 0) /* a writer may have grown it meanwhile */
        rc = read_metas(db, fsize, &m);
    if (rc) {
        if (rc == KEEL_INVALID)
            error_detail_set("%s: not a keel database (a file of zeros only is refused too: a creation cut short "
                             "by a crash can leave one; remove it to start over)",
                             path);
        return rc;
    }
    /* The first user makes the newest commit durable before anybody sees
     * it: a writer killed in the middle of a flush can leave its meta
     * written and not synced, and here it becomes the visible commit.  A
     * KEEL_NOSYNC opener does not sync, nor does a read-only one whose sync
     * fails (a read-only file system): the newest commit is then not taken
     * for durable (the first flush that syncs takes two syncs). */
    if (db->lock.sole) {
        bool synced = !(o->flags & KEEL_NOSYNC) && os_fsync(db->fd) == 0;
        if (!synced && !(o->flags & (KEEL_NOSYNC | KEEL_RDONLY))) {
            error_detail_set("%s: the first sync after the open failed", path);
            return KEEL_PANIC;
        }
        group_init(db, &m, synced, fsize);
    }
    /* only now: a refused file's lock file, never seen by anyone, goes again */
    if ((rc = lockfile_share(&db->lock)))
        return rc;
    db->psize = m.page_size;
    db->file_size = fsize;
    if ((rc = map_file(db, o)))
        return rc;
    /* The file's format decides the pages this handle writes: format 1
     * files stay format 1 (keel_copy upgrades them). */
    db->summed = m.version >= 2;
    db->verify = (o->flags & KEEL_VERIFY) && db->summed;
    if (db->verify && (rc = pager_known_init(db))) /* readers share it from the start */
        return rc;
    db->node_end = db->psize - (db->summed ? PAGE_TRAILER : 0);
    db->max_node = format_max_node(db->node_end);
    db->inline_max = db->max_node;
    db->max_key = format_max_key(db->node_end, db->summed);
    db->max_pair_key = format_max_pair_key(db->node_end);
    db->max_counted_pair_key = format_max_counted_pair_key(db->node_end);
    return 0;
}

int keel_open_sized(const char *path, const keel_options *opts, size_t opts_size, keel_db **out)
{
    if (!out)
        return KEEL_BADARG;
    *out = NULL;
    if (!path || !*path)
        return KEEL_BADARG;
    keel_options o;
    error_detail_clear();
    if (options_copy(opts, opts_size, &o))
        return KEEL_BADARG;
    int rc = options_check(&o);
    if (rc)
        return rc;
    keel_db *db = db_new(path, &o);
    if (!db)
        return KEEL_NOMEM;
    bool created = false;
    if (!db->path)
        rc = KEEL_NOMEM;
    else
        rc = db_load(db, path, &o, &created);
    if (rc) {
        /* What this open created and nobody else has seen goes again: an
         * empty data file, a lock file. */
        uint64_t fsize;
        if (created && db->fd >= 0 && os_file_size(db->fd, &fsize) == 0 && fsize == 0 &&
            path_names_fd(path, db->fd) == 0) {
            char *real = realpath(path, NULL); /* the file, not a link to it */
            unlink(real ? real : path);
            free(real);
        }
        db_free(db, true);
        return rc;
    }
    error_detail_clear(); /* a torn meta passed over on the way is no error of this open */
    *out = db;
    return 0;
}

void keel_close(keel_db *db)
{
    if (!db)
        return;
    /* Txns still open end here (their reader slots would otherwise pin old
     * pages for as long as another process keeps the lock file open).  In a
     * child after fork() they end too, but txn_end leaves the parent's slots
     * and writer lock alone: only the child's memory goes. */
    txn_drain_read_cache(db);
    while (db->live_txns)
        txn_abort(db->live_txns);
    group_confirm(db);
    db_free(db, false);
}

