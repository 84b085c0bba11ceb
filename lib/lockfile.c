/*
 * lockfile.c — the lock file `<real path>-lock`: who uses the database, the
 * writer lock and the reader table, in shared memory so that every process
 * opening the database sees them.
 *
 * Contract:
 *   - One database, one lock file, whatever path reaches it.  The lock file
 *     is named after the data file's path with symbolic links resolved, so
 *     every symlink shares it.  A hard link or a bind mount gives another
 *     name, hence another lock file: every user therefore also holds a
 *     shared open-file-description (OFD) lock on a byte of the data file
 *     itself (its inode), and the sole user of a lock file refuses to start
 *     (KEEL_LOCKPATH) when another descriptor holds that byte: the database
 *     is then in use through another lock file.  The header records the data
 *     file's device and inode; an opener of another file is refused too.
 *   - Liveness never depends on pid numbers (they differ across PID
 *     namespaces and are reused).  Each handle holds, for its whole life, an
 *     OFD write lock on a byte of its own (HANDLE_BYTE_BASE + its number):
 *     the kernel drops it when the process dies, so a number whose byte can
 *     be locked by someone else belongs to a dead handle.  Reader slots and
 *     the writer lock name their holder by that number (plus one); a handle
 *     that takes a number first clears what a dead holder of it left.
 *   - The writer lock is a word in the header, taken by compare-and-swap and
 *     waited for with a futex (no system call when nobody waits): it belongs
 *     to the handle, not to a thread, so a write txn may end on any thread.
 *     A waiter that finds the holder's handle dead takes the lock over (a
 *     dead writer's meta write is either whole or fails its checksum).
 *     Threads of one handle are kept apart above this layer (txn.c).
 *   - Handles keep their reader slots between read txns (parked, in a
 *     lock-free set of LOCK_PARKED_MAX), so a read txn touches no shared
 *     cache line but its slot's and takes no lock for it.
 *   - The file is (re)initialised by its sole user, under an exclusive lock
 *     on byte 0; every user then holds a shared lock on byte 0 for as long
 *     as it has the database open.  Its blocks are allocated before it is
 *     written through the map, so a full disk is an error, never SIGBUS.
 *   - KEEL_NOLOCK: no lock file.  The handle holds a shared lock on another
 *     byte of the data file, and refuses to start while anybody uses the
 *     database through a lock file (and writers refuse to start while it
 *     reads).
 */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define LOCK_MAGIC 0x4B4C4F43u /* "COLK" */
#define LOCK_VERSION 4u /* 3: OFD byte locks instead of a mutex; the data file's identity; 4: group commit */

/* Bytes of the lock file that carry OFD locks (none of them need to exist). */
#define LOCK_BYTE_USERS 0  /* shared: has the db open; exclusive: (re)initialising */
#define HANDLE_BYTE_BASE ((uint64_t)1 << 32) /* + n: exclusive, held by handle number n while it lives */
#define HANDLE_MAX ((uint32_t)1 << 20)        /* handle numbers tried before giving up */
/* Bytes of the data file: users through a lock file, and KEEL_NOLOCK readers.
 * Far past any data, so that nobody else's lock of the file's content meets them. */
#define DATA_BYTE_LOCKED ((uint64_t)1 << 62)
#define DATA_BYTE_NOLOCK (((uint64_t)1 << 62) + 1)


/* A reader slot's txnid once a writer stopped keeping its snapshot. */
#define SLOT_LAGGED UINT64_MAX

/* The writer word: 0 = free, else the holder's handle number + 1, with
 * WRITER_WAITERS set once somebody sleeps on it. */
#define WRITER_WAITERS 0x80000000u
#define WRITER_HOLDER(w) ((w) & ~WRITER_WAITERS)

struct lock_header {
    uint32_t magic;
    uint32_t version;
    uint32_t max_readers;
    uint32_t header_size;
    uint64_t total_size;
    /* Checksum of a meta that must be ignored, 0 = none: the first opener
     * after a crash found that meta's one-flush commit torn (pager.c).  The
     * commit that next writes into that meta's slot clears it. */
    _Atomic uint64_t bad_meta;
    uint64_t data_dev, data_ino; /* the data file this lock file belongs to */
    _Atomic uint32_t writer;     /* the writer lock (see WRITER_WAITERS) */
    uint8_t pad[128 - 52];
};
_Static_assert(sizeof(struct lock_header) == 128, "lock header is two cache lines");

struct reader_slot { /* one cache line, so readers do not share lines */
    _Atomic uint64_t owner; /* number + 1 of the handle holding the slot; 0 = free */
    _Atomic uint64_t txnid; /* the snapshot read; 0 = none; SLOT_LAGGED = no longer kept */
    _Atomic int64_t since;  /* when that snapshot was taken (ms, the reader's clock) */
    _Atomic int32_t pid;    /* the owner's pid in its own namespace: shown, never trusted */
    uint8_t pad[36];
};
_Static_assert(sizeof(struct reader_slot) == 64, "reader slot is one cache line");

/* The header, the reader slots, then the group commit's state (group.c). */
static size_t lock_size(uint32_t max_readers)
{
    return sizeof(struct lock_header) + (size_t)max_readers * sizeof(struct reader_slot) +
           sizeof(struct group_shared);
}

static char *lock_path_for(const char *db_path)
{
    char *real = realpath(db_path, NULL); /* symlinks share the target's lock file */
    const char *base = real ? real : db_path;
    size_t plen = strlen(base);
    char *lpath = os_malloc(plen + 6);
    if (lpath) {
        memcpy(lpath, base, plen);
        memcpy(lpath + plen, "-lock", 6);
    }
    free(real);
    return lpath;
}

int keel_lock_path(const char *db_path, char *buf, size_t size)
{
    if (!db_path || !*db_path || !buf)
        return KEEL_BADARG;
    char *p = lock_path_for(db_path);
    if (!p)
        return KEEL_NOMEM;
    size_t n = strlen(p);
    int rc = n < size ? 0 : ENAMETOOLONG;
    if (!rc)
        memcpy(buf, p, n + 1);
    os_free(p);
    return rc;
}

/* Does another descriptor hold a lock on byte `off` of fd? */
static int byte_in_use(int fd, uint64_t off, bool *used)
{
    int rc = os_lock_probe(fd, off, used);
    if (rc == EINVAL || rc == ENOLCK || rc == EOPNOTSUPP) { /* no OFD locks here: nothing to tell */
        *used = false;
        rc = 0;
    }
    return rc;
}

static void short_pause(void)
{
    struct timespec now; /* jitter enough to tell two openers apart */
    clock_gettime(CLOCK_MONOTONIC, &now);
    uint32_t r = (uint32_t)now.tv_nsec ^ ((uint32_t)getpid() * 2654435761u);
    struct timespec ts = {0, (long)(1000 + r % LOCKPATH_PAUSE_MAX_US) * 1000};
    nanosleep(&ts, NULL);
}

/* Takes our shared lock on byte `mine` of the data file, then makes sure no
 * other descriptor holds byte `theirs` (if not 0) nor, with check_mine, byte
 * `mine`: KEEL_LOCKPATH if one does, after a few tries.  Both sides lock
 * before they look, so of two openers at once at least one sees the other. */
static int claim_data_file(struct lockfile *lf, uint64_t mine, bool check_mine, uint64_t theirs)
{
    int rc = os_lock_range(lf->data_fd, mine, F_RDLCK, true);
    if (rc == EINVAL || rc == ENOLCK || rc == EOPNOTSUPP)
        return 0; /* a file system without OFD locks: nothing to guard with */
    if (rc)
        return rc;
    for (int i = 0;; i++) {
        bool a = false, b = false;
        if ((theirs && (rc = byte_in_use(lf->data_fd, theirs, &a))) ||
            (check_mine && (rc = byte_in_use(lf->data_fd, mine, &b))))
            return rc;
        if (!a && !b)
            return 0;
        if (i + 1 == LOCKPATH_TRIES)
            return KEEL_LOCKPATH;
        /* step back, so that of two first openers at once one gets in */
        os_unlock_range(lf->data_fd, mine);
        short_pause();
        if ((rc = os_lock_range(lf->data_fd, mine, F_RDLCK, true)))
            return rc;
    }
}

static int init_header(struct lockfile *lf, uint32_t max_readers, const struct stat *data)
{
    struct lock_header *h = lf->hdr;
    h->magic = 0; /* first, whatever order memset writes in: see lockfile_map */
    atomic_thread_fence(memory_order_seq_cst);
    /* All but the group slots' runs and pages, which a writer fills before
     * anybody reads them (group.c): zeroing those 320 KiB at every first
     * open was most of the open's time. */
    size_t group_off = lf->size - sizeof(struct group_shared);
    memset(lf->hdr, 0, group_off + offsetof(struct group_shared, slot));
    struct group_shared *g = (struct group_shared *)((uint8_t *)lf->hdr + group_off);
    for (int i = 0; i < 2; i++)
        memset(&g->slot[i], 0, offsetof(struct group_slot, runs));
    h->max_readers = max_readers;
    h->header_size = sizeof(struct lock_header);
    h->total_size = lock_size(max_readers);
    h->version = LOCK_VERSION;
    h->data_dev = (uint64_t)data->st_dev;
    h->data_ino = (uint64_t)data->st_ino;
    atomic_thread_fence(memory_order_seq_cst);
    h->magic = LOCK_MAGIC; /* last: a half-initialised file is recognisably not ready */
    return 0;
}

/* Sizes (sole user only), maps and validates the lock file. */
static int lockfile_map(struct lockfile *lf, uint32_t max_readers, const struct stat *data)
{
    uint64_t size;
    int rc = os_file_size(lf->fd, &size);
    if (rc)
        return rc;
    bool sole = lf->sole, fresh = sole && size == 0;
    if (sole && !fresh && size >= sizeof(struct lock_header)) {
        /* `magic` is written last: zero is an initialiser killed half way.
         * Another version's file is started over too: nobody uses it. */
        uint32_t head[2] = {1, LOCK_VERSION};
        size_t got;
        if ((rc = os_pread_upto(lf->fd, head, sizeof head, 0, &got)))
            return rc;
        fresh = got == sizeof head && (head[0] == 0 || (head[0] == LOCK_MAGIC && head[1] != LOCK_VERSION));
    }
    if (fresh && size != lock_size(max_readers)) {
        if ((rc = os_ftruncate(lf->fd, lock_size(max_readers))))
            return rc;
        size = lock_size(max_readers);
    }
    if (size < sizeof(struct lock_header) + sizeof(struct group_shared) || size > ((uint64_t)1 << 30) ||
        (size - sizeof(struct lock_header) - sizeof(struct group_shared)) % sizeof(struct reader_slot))
        return KEEL_LOCKFILE;
    /* Real blocks before any store through the map: on a full disk a store
     * into a hole is SIGBUS. */
    if (sole && (rc = os_allocate(lf->fd, size)))
        return rc;
    void *m = keel_os.mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, lf->fd, 0);
    if (m == MAP_FAILED)
        return errno ? errno : ENOMEM;
    lf->hdr = m;
    lf->size = (size_t)size;
    struct lock_header *h = lf->hdr;
    if (!fresh && (h->magic != LOCK_MAGIC || (!sole && h->version != LOCK_VERSION) ||
                   h->header_size != sizeof(struct lock_header) || h->max_readers == 0 ||
                   h->total_size != size || lock_size(h->max_readers) != size))
        return KEEL_LOCKFILE;
    if (!sole && (h->data_dev != (uint64_t)data->st_dev || h->data_ino != (uint64_t)data->st_ino))
        return KEEL_LOCKPATH; /* the lock file of another data file */
    if (sole)
        init_header(lf, fresh ? max_readers : h->max_readers, data);
    lf->max_readers = h->max_readers;
    lf->slots = (struct reader_slot *)((uint8_t *)m + sizeof(struct lock_header));
    lf->group = (struct group_shared *)(lf->slots + lf->max_readers);
    return 0;
}

/* Opens the lock file and takes byte 0: exclusively if nobody else has it
 * (then lf->sole), else shared.  Retries when the name was removed or
 * replaced between the open and the lock: the lock must be on the file the
 * name gives now. */
static int lockfile_enter(struct lockfile *lf)
{
    for (int tries = 0;; tries++) {
        bool created = true;
        int fd = os_open_high(lf->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 && errno == EEXIST) {
            created = false;
            fd = os_open_high(lf->path, O_RDWR | O_CLOEXEC, 0644);
        }
        if (fd < 0)
            return errno ? errno : EIO;
        lf->fd = fd;
        lf->created = created;
        int rc = os_lock_range(fd, LOCK_BYTE_USERS, F_WRLCK, false);
        lf->sole = rc == 0;
        if (rc == EAGAIN)
            rc = os_lock_range(fd, LOCK_BYTE_USERS, F_RDLCK, true);
        struct stat byname, byfd;
        if (rc == 0 && (rc = keel_os.fstat(fd, &byfd) ? errno : 0) == 0 && !S_ISREG(byfd.st_mode))
            rc = KEEL_LOCKFILE;
        if (rc == 0 && stat(lf->path, &byname) == 0 && byname.st_dev == byfd.st_dev && byname.st_ino == byfd.st_ino)
            return 0;
        os_close(fd);
        lf->fd = -1;
        if (rc)
            return rc;
        if (tries == 3)
            return KEEL_LOCKFILE; /* the name keeps changing under us */
    }
}

/* Frees what a dead holder of handle number `me` left: its slots, the
 * writer lock.  The caller holds the number's byte, so that holder is gone
 * and nobody else can take the number meanwhile. */
static void clear_handle(struct lockfile *lf, uint32_t me)
{
    for (uint32_t i = 0; i < lf->max_readers; i++) {
        uint64_t o = me;
        if (atomic_load_explicit(&lf->slots[i].owner, memory_order_relaxed) == me) {
            atomic_store(&lf->slots[i].txnid, 0);
            atomic_compare_exchange_strong(&lf->slots[i].owner, &o, 0);
        }
    }
    _Atomic uint32_t *words[2] = {&lf->hdr->writer, &lf->group->flusher};
    for (int i = 0; i < 2; i++) {
        uint32_t v = atomic_load(words[i]);
        if (v && WRITER_HOLDER(v) == me && atomic_compare_exchange_strong(words[i], &v, 0))
            os_futex_wake(words[i]);
    }
}

/* Takes the lowest free handle number (its byte, for the handle's life). */
static int take_handle_number(struct lockfile *lf)
{
    for (uint32_t n = 0; n < HANDLE_MAX; n++) {
        int rc = os_lock_range(lf->fd, HANDLE_BYTE_BASE + n, F_WRLCK, false);
        if (rc == EAGAIN)
            continue;
        if (rc)
            return rc;
        lf->me = n + 1;
        clear_handle(lf, lf->me);
        return 0;
    }
    return KEEL_READERS_FULL;
}

/* Is the handle numbered `holder` (+1) dead?  Then what it left is freed
 * (clear_handle) and true.  Never asks about ourselves: our own lock would
 * not conflict with the test. */
static bool handle_dead(struct lockfile *lf, uint32_t holder)
{
    if (holder == 0 || holder == lf->me)
        return false;
    if (holder > HANDLE_MAX) /* a number no handle can have: damage, nobody to wait for */
        return true;
    if (os_lock_range(lf->fd, HANDLE_BYTE_BASE + holder - 1, F_WRLCK, false) != 0)
        return false; /* held: alive (or an error: alive is the safe answer) */
    clear_handle(lf, holder);
    os_unlock_range(lf->fd, HANDLE_BYTE_BASE + holder - 1);
    return true;
}

int lockfile_open(struct lockfile *lf, int data_fd, const char *db_path, uint32_t max_readers, unsigned flags)
{
    memset(lf, 0, sizeof(*lf));
    lf->fd = -1;
    lf->data_fd = data_fd;
    struct stat data;
    if (keel_os.fstat(data_fd, &data))
        return errno ? errno : EIO;
    int rc;
    if (flags & KEEL_NOLOCK) {
        lf->nolock = true;
        rc = claim_data_file(lf, DATA_BYTE_NOLOCK, false, DATA_BYTE_LOCKED);
        if (rc == KEEL_LOCKPATH)
            error_detail_set("%s: in use through its lock file; open it without KEEL_NOLOCK", db_path);
        return rc;
    }
    if (!(lf->path = lock_path_for(db_path)))
        return KEEL_NOMEM;
    if ((rc = lockfile_enter(lf))) {
        error_detail_set("%s: %s", lf->path, keel_strerror(rc));
        return rc;
    }
    /* Users through another lock file (another name of the file, a removed
     * lock file) hold the data file's byte: the sole user of this one must
     * find it free.  A handle that may write must find no KEEL_NOLOCK reader. */
    rc = claim_data_file(lf, DATA_BYTE_LOCKED, lf->sole, (flags & KEEL_RDONLY) ? 0 : DATA_BYTE_NOLOCK);
    if (rc == KEEL_LOCKPATH)
        error_detail_set("%s: the database is in use through another lock file than %s (another path to it: a hard "
                         "link or a bind mount; a removed lock file; or a KEEL_NOLOCK reader)",
                         db_path, lf->path);
    if (rc == 0 && (rc = lockfile_map(lf, max_readers, &data)))
        error_detail_set("%s: %s", lf->path, keel_strerror(rc));
    if (rc == 0 && (rc = take_handle_number(lf)))
        error_detail_set("%s: no handle number left: %s", lf->path, keel_strerror(rc));
    return rc;
}

int lockfile_share(struct lockfile *lf)
{
    if (!lf->sole)
        return 0;
    int rc = os_lock_range(lf->fd, LOCK_BYTE_USERS, F_RDLCK, false); /* downgrade: others may come in now */
    if (rc == 0)
        lf->sole = false;
    return rc;
}

uint64_t lockfile_bad_meta(const struct lockfile *lf)
{
    if (!lf->hdr)
        return lf->nolock_bad_meta;
    return atomic_load_explicit(&lf->hdr->bad_meta, memory_order_acquire);
}

void lockfile_set_bad_meta(struct lockfile *lf, uint64_t checksum)
{
    if (!lf->hdr)
        lf->nolock_bad_meta = checksum;
    else
        atomic_store_explicit(&lf->hdr->bad_meta, checksum, memory_order_release);
}

static void slot_give_back(struct lockfile *lf, uint32_t i)
{
    uint64_t mine = lf->me;
    atomic_store(&lf->slots[i].txnid, 0);
    atomic_compare_exchange_strong(&lf->slots[i].owner, &mine, 0);
}

void lockfile_close(struct lockfile *lf, bool inherited)
{
    /* In a child after fork() the slots and the locks are the parent's: the
     * descriptors close, the parent's locks stay with the parent's. */
    uint32_t parked = atomic_exchange(&lf->parked, 0);
    if (lf->hdr && !inherited)
        for (int i = 0; i < LOCK_PARKED_MAX; i++)
            if (parked & (1u << i))
                slot_give_back(lf, (uint32_t)lf->parked_slot[i]);
    atomic_store(&lf->parked_busy, 0);
    if (lf->hdr)
        keel_os.munmap(lf->hdr, lf->size);
    if (lf->fd >= 0)
        os_close(lf->fd); /* drops the handle number's byte */
    lf->hdr = NULL;
    lf->fd = -1;
    os_free(lf->path);
    lf->path = NULL;
}

void lockfile_abandon(struct lockfile *lf)
{
    /* A lock file this open created and nobody else has seen goes again. */
    if (lf->created && lf->sole && lf->path)
        unlink(lf->path);
    lockfile_close(lf, false);
}

/* The writer lock and the flush lock (group.c) are words of one kind: 0 =
 * free, else the holder's handle number + 1 with WRITER_WAITERS once
 * somebody sleeps on it.  One try: 0, or EBUSY with *seen the word as found. */
static int word_try(struct lockfile *lf, _Atomic uint32_t *w, uint32_t *seen)
{
    uint32_t free_word = 0;
    if (atomic_compare_exchange_strong(w, &free_word, lf->me))
        return 0;
    *seen = free_word;
    return EBUSY;
}

static void word_lock(struct lockfile *lf, _Atomic uint32_t *w)
{
    uint32_t v;
    while (word_try(lf, w, &v)) {
        /* The holder's process died: take the lock over (a dead writer's txn
         * never committed; a dead flusher's meta is whole or fails its sum,
         * and the next flush writes that slot again).  No holder with the
         * waiters bit, or our own number (the layer above lets one thread
         * of a handle in at a time), is a damaged lock file: taken over too. */
        uint32_t holder = WRITER_HOLDER(v);
        if (holder == 0 || holder == lf->me || handle_dead(lf, holder)) {
            if (atomic_compare_exchange_strong(w, &v, lf->me | (v & WRITER_WAITERS)))
                return;
            continue;
        }
        if (!(v & WRITER_WAITERS) && !atomic_compare_exchange_strong(w, &v, v | WRITER_WAITERS))
            continue;
        /* Sleep until released; wake now and then to look at the holder again.
         * Once we slept, we take the lock with the waiters bit: others may sleep too. */
        os_futex_wait(w, v | WRITER_WAITERS, WRITER_CHECK_MS);
        uint32_t zero = 0;
        if (atomic_compare_exchange_strong(w, &zero, lf->me | WRITER_WAITERS))
            return;
    }
}

static void word_unlock(_Atomic uint32_t *w)
{
    uint32_t v = atomic_exchange(w, 0);
    if (v & WRITER_WAITERS)
        os_futex_wake(w);
}

void lockfile_writer_lock(struct lockfile *lf) { word_lock(lf, &lf->hdr->writer); }

int lockfile_writer_trylock(struct lockfile *lf)
{
    uint32_t v;
    return word_try(lf, &lf->hdr->writer, &v);
}

void lockfile_writer_unlock(struct lockfile *lf) { word_unlock(&lf->hdr->writer); }

bool lockfile_writer_busy(const struct lockfile *lf)
{
    return atomic_load_explicit(&lf->hdr->writer, memory_order_relaxed) != 0;
}

void lockfile_flush_lock(struct lockfile *lf) { word_lock(lf, &lf->group->flusher); }

int lockfile_flush_trylock(struct lockfile *lf)
{
    uint32_t v;
    return word_try(lf, &lf->group->flusher, &v);
}

void lockfile_flush_unlock(struct lockfile *lf) { word_unlock(&lf->group->flusher); }

/* A parked slot taken (-1 if none): its bit leaves `parked` first, so no
 * other thread takes it, and the entry is read before its busy bit goes. */
_Static_assert(LOCK_PARKED_MAX >= 1 && LOCK_PARKED_MAX <= 32, "parked slots are the bits of a word");

static int unpark(struct lockfile *lf)
{
    uint32_t m = atomic_load_explicit(&lf->parked, memory_order_acquire);
    while (m) {
        uint32_t bit = 1u << __builtin_ctz(m);
        if (atomic_compare_exchange_weak_explicit(&lf->parked, &m, m & ~bit, memory_order_acquire,
                                                  memory_order_acquire)) {
            int slot = lf->parked_slot[__builtin_ctz(bit)];
            atomic_fetch_and_explicit(&lf->parked_busy, ~bit, memory_order_release);
            return slot;
        }
    }
    return -1;
}

/* Parks a slot: claims a free entry (its busy bit), fills it, then offers
 * it (its `parked` bit).  False when all LOCK_PARKED_MAX are in use. */
static bool park(struct lockfile *lf, int slot)
{
    uint32_t all = LOCK_PARKED_MAX == 32 ? ~0u : (1u << LOCK_PARKED_MAX) - 1;
    uint32_t busy = atomic_load_explicit(&lf->parked_busy, memory_order_acquire);
    uint32_t bit;
    do {
        if ((busy & all) == all)
            return false;
        bit = 1u << __builtin_ctz(~busy & all);
    } while (!atomic_compare_exchange_weak_explicit(&lf->parked_busy, &busy, busy | bit, memory_order_acquire,
                                                    memory_order_acquire));
    lf->parked_slot[__builtin_ctz(bit)] = slot;
    atomic_fetch_or_explicit(&lf->parked, bit, memory_order_release);
    return true;
}

int reader_acquire(struct lockfile *lf, int *slot)
{
    *slot = -1;
    if (!lf->hdr)
        return 0; /* KEEL_NOLOCK: nobody writes, nothing to publish */
    int p;
    while ((p = unpark(lf)) >= 0)
        if (reader_resume(lf, p)) { /* still ours, unless a damaged or hostile lock file says otherwise */
            *slot = p;
            return 0;
        }
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t i = 0; i < lf->max_readers; i++) {
            struct reader_slot *s = &lf->slots[i];
            uint64_t zero = 0;
            if (atomic_load_explicit(&s->owner, memory_order_relaxed) == 0 &&
                atomic_compare_exchange_strong(&s->owner, &zero, lf->me)) {
                atomic_store(&s->txnid, 0);
                atomic_store(&s->pid, (int32_t)getpid());
                *slot = (int)i;
                return 0;
            }
        }
        readers_oldest(lf, 0, 0); /* full: free the slots of dead processes and retry */
    }
    return KEEL_READERS_FULL;
}

void reader_publish(struct lockfile *lf, int slot, uint64_t txnid, int64_t now)
{
    if (slot < 0)
        return;
    atomic_store_explicit(&lf->slots[slot].since, now, memory_order_relaxed);
    atomic_store(&lf->slots[slot].txnid, txnid); /* seq_cst: ordered before the meta re-read */
}

const _Atomic uint64_t *reader_pin(struct lockfile *lf, int slot)
{
    return slot < 0 ? NULL : &lf->slots[slot].txnid;
}

void reader_idle(struct lockfile *lf, int slot)
{
    if (slot >= 0)
        atomic_store(&lf->slots[slot].txnid, 0);
}

bool reader_resume(struct lockfile *lf, int slot)
{
    return slot >= 0 && (uint32_t)slot < lf->max_readers &&
           atomic_load_explicit(&lf->slots[slot].owner, memory_order_relaxed) == lf->me;
}

void reader_release(struct lockfile *lf, int slot)
{
    if (slot < 0)
        return;
    atomic_store(&lf->slots[slot].txnid, 0);
    if (!park(lf, slot))
        slot_give_back(lf, (uint32_t)slot);
}

/* Is slot i's owner a dead handle?  Then the slot is free now. */
static bool slot_owner_dead(struct lockfile *lf, uint32_t i, uint64_t owner)
{
    if (owner > HANDLE_MAX) { /* no handle has such a number: damage */
        atomic_store(&lf->slots[i].txnid, 0);
        atomic_compare_exchange_strong(&lf->slots[i].owner, &owner, 0);
        return true;
    }
    return handle_dead(lf, (uint32_t)owner);
}

uint64_t readers_oldest(struct lockfile *lf, uint64_t newest, uint64_t max_lag)
{
    uint64_t oldest = newest;
    if (!lf->hdr)
        return oldest;
    for (uint32_t i = 0; i < lf->max_readers; i++) {
        struct reader_slot *s = &lf->slots[i];
        uint64_t owner = atomic_load(&s->owner);
        if (owner == 0)
            continue;
        uint64_t t = atomic_load(&s->txnid);
        /* Only a slot that pins an old snapshot (or when called with newest=0,
         * every slot: the table is full) is worth the cost of a liveness check. */
        bool pins = t != 0 && t != SLOT_LAGGED && t < newest;
        if ((pins || newest == 0) && slot_owner_dead(lf, i, owner))
            continue;
        if (!pins)
            continue;
        /* A laggard past the limit stops pinning: its next call answers KEEL_LAGGED. */
        if (max_lag && newest - t > max_lag && atomic_compare_exchange_strong(&s->txnid, &t, SLOT_LAGGED))
            continue;
        if (t != 0 && t != SLOT_LAGGED && t < oldest)
            oldest = t;
    }
    return oldest;
}

int readers_list(struct lockfile *lf, uint64_t newest, int64_t now, keel_reader_info *out, size_t max, size_t *count)
{
    size_t n = 0;
    for (uint32_t i = 0; lf->hdr && i < lf->max_readers; i++) {
        struct reader_slot *s = &lf->slots[i];
        uint64_t owner = atomic_load(&s->owner);
        uint64_t t = atomic_load(&s->txnid);
        if (owner == 0 || t == 0 || t == SLOT_LAGGED || slot_owner_dead(lf, i, owner))
            continue;
        if (n < max && out) {
            out[n].pid = atomic_load(&s->pid);
            out[n].txnid = t;
            out[n].lag = newest > t ? newest - t : 0;
            int64_t since = atomic_load(&s->since);
            out[n].age_ms = since > 0 && now > since ? now - since : 0; /* the slot is not trusted */
        }
        n++;
    }
    *count = n;
    return 0;
}
