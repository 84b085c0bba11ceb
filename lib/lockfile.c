/*
 * lockfile.c — the lock file `<path>-lock`: the writer lock and the reader
 * table, in shared memory so that every process opening the database sees
 * them.
 *
 * Contract:
 *   - The writer lock is a process-shared, robust pthread mutex: when its
 *     holder dies the next locker gets EOWNERDEAD, marks it consistent and
 *     goes on.  Nothing needs repair: a dead writer's meta write is either
 *     whole (its commit happened) or torn (the checksum fails and the other
 *     meta wins), so the file is at a commit.
 *   - A reader slot holds (pid, snapshot txn id).  A reader publishes its
 *     snapshot and then re-reads the newest meta (txn.c): a writer computing
 *     the oldest snapshot either sees the slot or committed before the
 *     re-read, which makes the reader retry.  Slots of dead processes are
 *     freed when the writer computes the oldest snapshot, when the table is
 *     full, and when the sole user reinitialises the file at open.
 *   - The file is created and initialised under an exclusive OFD lock; every
 *     user then holds a shared OFD lock for as long as it has the db open.
 *     The sole user keeps the exclusive lock until lockfile_share(): keel_open
 *     checks the newest commit first (a crash may have torn it), before any
 *     other process can begin a txn on it.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#define LOCK_MAGIC 0x4B4C4F43u /* "COLK" */
#define LOCK_VERSION 2u /* 2: bad_meta */

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
    pthread_mutex_t writer;
    uint8_t pad[128 - 32 - sizeof(pthread_mutex_t)];
};
_Static_assert(sizeof(struct lock_header) == 128, "lock header is two cache lines");

struct reader_slot { /* one cache line, so readers do not share lines */
    _Atomic int32_t pid; /* 0 = free */
    uint32_t pad0;
    _Atomic uint64_t txnid; /* 0 = registering */
    _Atomic uint64_t start; /* the process's start time: a reused pid has another */
    uint8_t pad[40];
};
_Static_assert(sizeof(struct reader_slot) == 64, "reader slot is one cache line");

static size_t lock_size(uint32_t max_readers)
{
    return sizeof(struct lock_header) + (size_t)max_readers * sizeof(struct reader_slot);
}

static int init_header(struct lock_header *h, uint32_t max_readers)
{
    pthread_mutexattr_t a;
    int rc = pthread_mutexattr_init(&a);
    if (rc)
        return rc;
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    rc = pthread_mutex_init(&h->writer, &a);
    pthread_mutexattr_destroy(&a);
    if (rc)
        return rc;
    h->max_readers = max_readers;
    h->header_size = sizeof(struct lock_header);
    h->total_size = lock_size(max_readers);
    h->version = LOCK_VERSION;
    atomic_thread_fence(memory_order_seq_cst);
    h->magic = LOCK_MAGIC; /* last: a half-initialised file is recognisably not ready */
    return 0;
}

int lockfile_open(struct lockfile *lf, const char *db_path, uint32_t max_readers, bool rdonly)
{
    (void)rdonly; /* readers write their slot: the lock file must be writable (doc/design.md) */
    memset(lf, 0, sizeof(*lf));
    lf->fd = -1;
    size_t plen = strlen(db_path);
    char *lpath = os_malloc(plen + 6);
    if (!lpath)
        return KEEL_NOMEM;
    memcpy(lpath, db_path, plen);
    memcpy(lpath + plen, "-lock", 6);
    int fd = keel_os.open(lpath, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    int err = errno;
    os_free(lpath);
    if (fd < 0)
        return err;
    /* Every user holds a shared lock while it has the db open, so getting the
     * exclusive lock means nobody else uses the file: then (and only then)
     * the table is (re)initialised, which also frees every stale slot. */
    bool sole = false;
    int rc = os_lock(fd, 1, 0);
    if (rc == 0)
        sole = true;
    else if (rc == EAGAIN)
        rc = os_lock(fd, 0, 1);
    if (rc)
        goto fail;
    uint64_t size;
    if ((rc = os_file_size(fd, &size)))
        goto fail;
    bool fresh = sole && size == 0;
    if (sole && !fresh && size >= sizeof(struct lock_header) &&
        (size - sizeof(struct lock_header)) % sizeof(struct reader_slot) == 0) {
        /* `magic` is written last: a zero magic in a lock-file-shaped file is
         * an initialiser killed half way (after the ftruncate or the memset).
         * Nobody else uses the file: start over as with a fresh one. */
        uint32_t magic = 1;
        size_t got;
        if ((rc = os_pread_upto(fd, &magic, sizeof magic, 0, &got)))
            goto fail;
        fresh = got == sizeof magic && magic == 0;
    }
    if (fresh) {
        if ((rc = os_ftruncate(fd, lock_size(max_readers))))
            goto fail;
        size = lock_size(max_readers);
    }
    if (size < sizeof(struct lock_header) || size > ((uint64_t)1 << 30)) {
        rc = KEEL_LOCKFILE;
        goto fail;
    }
    void *m = keel_os.mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        rc = errno;
        goto fail;
    }
    lf->hdr = m;
    lf->size = (size_t)size;
    struct lock_header *h = lf->hdr;
    if (!fresh && (h->magic != LOCK_MAGIC || h->version != LOCK_VERSION ||
                   h->header_size != sizeof(struct lock_header) || h->max_readers == 0 ||
                   h->total_size != size || lock_size(h->max_readers) != size)) {
        rc = KEEL_LOCKFILE;
        goto fail_map;
    }
    if (sole) {
        uint32_t n = fresh ? max_readers : h->max_readers;
        h->magic = 0; /* first, whatever order memset writes in: see above */
        atomic_thread_fence(memory_order_seq_cst);
        memset(m, 0, (size_t)size);
        if ((rc = init_header(h, n)))
            goto fail_map;
    }
    lf->sole = sole;
    lf->max_readers = h->max_readers;
    lf->slots = (struct reader_slot *)((uint8_t *)m + sizeof(struct lock_header));
    lf->fd = fd;
    return 0;
fail_map:
    keel_os.munmap(m, (size_t)size);
    lf->hdr = NULL;
fail:
    lf->fd = -1;
    os_close(fd);
    return rc;
}

int lockfile_share(struct lockfile *lf)
{
    if (!lf->sole)
        return 0;
    int rc = os_lock(lf->fd, 0, 1); /* downgrade: others may come in now */
    if (rc == 0)
        lf->sole = false;
    return rc;
}

uint64_t lockfile_bad_meta(const struct lockfile *lf)
{
    return atomic_load_explicit(&lf->hdr->bad_meta, memory_order_acquire);
}

void lockfile_set_bad_meta(struct lockfile *lf, uint64_t checksum)
{
    atomic_store_explicit(&lf->hdr->bad_meta, checksum, memory_order_release);
}

void lockfile_close(struct lockfile *lf)
{
    if (lf->hdr)
        keel_os.munmap(lf->hdr, lf->size);
    if (lf->fd >= 0)
        os_close(lf->fd);
    lf->hdr = NULL;
    lf->fd = -1;
}

int lockfile_writer_lock(struct lockfile *lf)
{
    int rc = pthread_mutex_lock(&lf->hdr->writer);
    if (rc == EOWNERDEAD) /* the last writer died mid-txn: its txn never committed */
        rc = pthread_mutex_consistent(&lf->hdr->writer);
    return rc;
}

int lockfile_writer_trylock(struct lockfile *lf)
{
    int rc = pthread_mutex_trylock(&lf->hdr->writer);
    if (rc == EOWNERDEAD)
        rc = pthread_mutex_consistent(&lf->hdr->writer);
    return rc;
}

void lockfile_writer_unlock(struct lockfile *lf) { pthread_mutex_unlock(&lf->hdr->writer); }

/* Start time of a process in clock ticks since boot (field 22 of
 * /proc/PID/stat), 0 if unknown.  Together with the pid it names a process
 * for good: a pid reused later has a later start time. */
static uint64_t process_start(int32_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p)
        return 0;
    if (p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'))
        return UINT64_MAX; /* a zombie: dead, though kill(pid, 0) still succeeds */
    /* after ")" come fields 3..: skip to field 22 */
    int field = 2;
    for (; *p && field < 22; p++)
        if (*p == ' ')
            field++;
    return strtoull(p, NULL, 10);
}

static pid_t cached_pid;
static uint64_t cached_start;
static uint64_t my_start(void)
{
    pid_t me = getpid(); /* changes after fork: recompute */
    if (me != cached_pid) {
        cached_start = process_start(me);
        cached_pid = me;
    }
    return cached_start;
}

int reader_acquire(struct lockfile *lf, int *slot)
{
    int32_t me = (int32_t)getpid();
    uint64_t start = my_start();
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t i = 0; i < lf->max_readers; i++) {
            struct reader_slot *s = &lf->slots[i];
            int32_t zero = 0;
            if (atomic_load_explicit(&s->pid, memory_order_relaxed) == 0 &&
                atomic_compare_exchange_strong(&s->pid, &zero, me)) {
                atomic_store(&s->txnid, 0);
                atomic_store(&s->start, start);
                *slot = (int)i;
                return 0;
            }
        }
        readers_oldest(lf, 0); /* full: free the slots of dead processes and retry */
    }
    return KEEL_READERS_FULL;
}

void reader_publish(struct lockfile *lf, int slot, uint64_t txnid)
{
    atomic_store(&lf->slots[slot].txnid, txnid); /* seq_cst: ordered before the meta re-read */
}

void reader_release(struct lockfile *lf, int slot)
{
    atomic_store(&lf->slots[slot].txnid, 0);
    atomic_store(&lf->slots[slot].start, 0); /* see readers_oldest */
    atomic_store(&lf->slots[slot].pid, 0);
}

/* Is the process that took this slot still running? */
static bool slot_alive(struct reader_slot *s, int32_t pid)
{
    if (pid <= 0)
        return false;
    if (kill(pid, 0) != 0 && errno == ESRCH)
        return false;
    uint64_t want = atomic_load(&s->start), now = process_start(pid);
    if (now == UINT64_MAX)
        return false; /* a zombie */
    return want == 0 || now == 0 || want == now; /* unknown start times count as alive */
}

uint64_t readers_oldest(struct lockfile *lf, uint64_t newest)
{
    uint64_t oldest = newest;
    int32_t me = (int32_t)getpid();
    for (uint32_t i = 0; i < lf->max_readers; i++) {
        struct reader_slot *s = &lf->slots[i];
        int32_t pid = atomic_load(&s->pid);
        if (pid == 0)
            continue;
        uint64_t t = atomic_load(&s->txnid);
        /* Only a slot that pins an old snapshot (or when called with newest=0,
         * every slot: the table is full) is worth the cost of a liveness check. */
        bool pins = t != 0 && t < newest;
        uint64_t start;
        if ((pins || newest == 0) &&
            (pid == me ? (start = atomic_load(&s->start)) != 0 && start != my_start()
                       : !slot_alive(s, pid))) {
            /* The owner is gone: free the slot unless it changed hands
             * meanwhile.  A free slot keeps start = 0: a new owner claims it
             * (pid) before it stores its start, and in between a stale start
             * would make it look dead.  A late store of 0 here over a new
             * owner's start only makes it "unknown", which counts as alive. */
            atomic_store(&s->start, 0);
            if (atomic_compare_exchange_strong(&s->pid, &pid, 0))
                continue;
            t = atomic_load(&s->txnid);
        }
        if (t == 0) /* registering: it will re-check the meta after publishing */
            continue;
        if (t < oldest)
            oldest = t;
    }
    return oldest;
}

int readers_list(struct lockfile *lf, uint64_t newest, keel_reader_info *out, size_t max, size_t *count)
{
    size_t n = 0;
    for (uint32_t i = 0; i < lf->max_readers; i++) {
        struct reader_slot *s = &lf->slots[i];
        int32_t pid = atomic_load(&s->pid);
        uint64_t t = atomic_load(&s->txnid);
        if (pid == 0 || t == 0)
            continue;
        if (n < max && out) {
            out[n].pid = pid;
            out[n].txnid = t;
            out[n].lag = newest > t ? newest - t : 0;
        }
        n++;
    }
    *count = n;
    return 0;
}
