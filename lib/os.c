/*
 * os.c — the replaceable I/O and allocation table and whole-buffer helpers.
 * See os.h for the contract.
 */
#include "os.h"
#include "tuning.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int libc_open(const char *path, int flags, mode_t mode) { return open(path, flags, mode); }

/* A macro, not a copy of libc_os: a const object is no constant
 * expression in C, and clang (the fuzz build) refuses it as an initializer. */
#define LIBC_OS                   \
    {                             \
        .open = libc_open,        \
        .close = close,           \
        .pread = pread,           \
        .pwrite = pwrite,         \
        .pwritev = pwritev,       \
        .fsync = fsync,           \
        .fdatasync = fdatasync,   \
        .ftruncate = ftruncate,   \
        .fstat = fstat,           \
        .mmap = mmap,             \
        .munmap = munmap,         \
        .malloc = malloc,         \
        .realloc = realloc,       \
        .free = free,             \
    }
static const struct keel_os libc_os = LIBC_OS;

struct keel_os keel_os = LIBC_OS;

void os_reset(void) { keel_os = libc_os; }

void *os_malloc(size_t n) { return keel_os.malloc(n ? n : 1); }
void *os_calloc(size_t n)
{
    void *p = os_malloc(n);
    if (p)
        memset(p, 0, n);
    return p;
}
void *os_realloc(void *p, size_t n) { return keel_os.realloc(p, n ? n : 1); }
void os_free(void *p)
{
    if (p)
        keel_os.free(p);
}
void *os_map_anon(size_t n)
{
    void *p = keel_os.mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}
void os_unmap_anon(void *p, size_t n)
{
    if (p)
        keel_os.munmap(p, n);
}
char *os_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = os_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

int os_pread_upto(int fd, void *buf, size_t n, uint64_t off, size_t *got)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = keel_os.pread(fd, (char *)buf + done, n - done, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return errno ? errno : EIO;
        }
        if (r == 0)
            break;
        done += (size_t)r;
    }
    *got = done;
    return 0;
}

/* Writes reach the kernel in pieces that end at multiples of OS_WRITE_MAX_BYTES
 * (16 KiB) in the file.  Linux gives a buffered write a page-cache folio as
 * large as the write (ext4 since 6.16; XFS earlier, without ext4's buffer
 * walk), and the folio stays: a later 4 KiB write into a 256 KiB folio,
 * written whole by a bulk load's commit, makes ext4 walk all 64 of the
 * folio's block buffers, once in the write and once more at writeback.
 * That dominated the CPU time of batch commits on a bulk-loaded file;
 * with 16 KiB pieces an update
 * walks at most four.  The price is one system call per 16 KiB of a
 * long run. */
static size_t piece_room(uint64_t off) { return (size_t)(OS_WRITE_MAX_BYTES - off % OS_WRITE_MAX_BYTES); }

int os_pwrite_full(int fd, const void *buf, size_t n, uint64_t off)
{
    size_t done = 0;
    while (done < n) {
        size_t len = n - done, room = piece_room(off + done);
        ssize_t r = keel_os.pwrite(fd, (const char *)buf + done, len < room ? len : room, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return errno ? errno : EIO;
        }
        if (r == 0)
            return EIO;
        done += (size_t)r;
    }
    return 0;
}

int os_pwritev_full(int fd, struct iovec *iov, int cnt, uint64_t off)
{
    enum { PIECE_IOV = 16 };
    while (cnt > 0) {
        /* the next piece: the first buffers, cut at the next boundary */
        struct iovec piece[PIECE_IOV];
        size_t room = piece_room(off), len = 0;
        int pc = 0;
        for (int i = 0; i < cnt && pc < PIECE_IOV && len < room; i++, pc++) {
            piece[pc] = iov[i];
            if (piece[pc].iov_len > room - len)
                piece[pc].iov_len = room - len;
            len += piece[pc].iov_len;
        }
        ssize_t r = keel_os.pwritev(fd, piece, pc, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return errno ? errno : EIO;
        }
        if (r == 0)
            return EIO;
        off += (uint64_t)r;
        size_t left = (size_t)r;
        while (cnt > 0 && left >= iov->iov_len) { /* drop what was written */
            left -= iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0 && left) {
            iov->iov_base = (char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

int os_fsync(int fd) { return keel_os.fsync(fd) ? (errno ? errno : EIO) : 0; }
int os_fdatasync(int fd) { return keel_os.fdatasync(fd) ? (errno ? errno : EIO) : 0; }
int os_ftruncate(int fd, uint64_t len)
{
    for (;;) {
        if (keel_os.ftruncate(fd, (off_t)len) == 0)
            return 0;
        if (errno != EINTR)
            return errno ? errno : EIO;
    }
}
int os_file_size(int fd, uint64_t *size)
{
    struct stat st;
    if (keel_os.fstat(fd, &st))
        return errno ? errno : EIO;
    *size = (uint64_t)st.st_size;
    return 0;
}
int os_close(int fd) { return keel_os.close(fd) ? errno : 0; }

uint64_t os_fork_gen;
static void on_fork_child(void) { __atomic_add_fetch(&os_fork_gen, 1, __ATOMIC_SEQ_CST); }
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static void install_fork_hook(void) { pthread_atfork(NULL, NULL, on_fork_child); }

void os_watch_fork(void) { pthread_once(&fork_once, install_fork_hook); }

int os_open_high(const char *path, int flags, mode_t mode)
{
    int fd = keel_os.open(path, flags, mode);
    if (fd < 0 || fd > 2)
        return fd;
    int high = fcntl(fd, (flags & O_CLOEXEC) ? F_DUPFD_CLOEXEC : F_DUPFD, 3);
    int err = errno;
    keel_os.close(fd);
    errno = err;
    return high;
}

int os_lock_range(int fd, uint64_t off, int type, int wait)
{
    struct flock fl = {.l_type = (short)type, .l_whence = SEEK_SET, .l_start = (off_t)off, .l_len = 1};
    for (;;) {
        if (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0)
            return 0;
        if (errno == EINTR)
            continue;
        return (errno == EACCES || errno == EAGAIN) ? EAGAIN : errno;
    }
}

int os_unlock_range(int fd, uint64_t off)
{
    struct flock fl = {.l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = (off_t)off, .l_len = 1};
    return fcntl(fd, F_OFD_SETLK, &fl) ? errno : 0;
}

int os_lock_probe(int fd, uint64_t off, bool *held)
{
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = (off_t)off, .l_len = 1};
    if (fcntl(fd, F_OFD_GETLK, &fl))
        return errno;
    *held = fl.l_type != F_UNLCK;
    return 0;
}

void os_futex_wait(_Atomic uint32_t *word, uint32_t expected, int timeout_ms)
{
    struct timespec ts = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000};
    syscall(SYS_futex, word, FUTEX_WAIT, expected, &ts, NULL, 0); /* EAGAIN, EINTR, ETIMEDOUT: the caller looks again */
}

void os_futex_wake(_Atomic uint32_t *word) { syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0); }

uint64_t os_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int os_allocate(int fd, uint64_t len)
{
    int rc;
    do
        rc = posix_fallocate(fd, 0, (off_t)len);
    while (rc == EINTR);
    return rc == EOPNOTSUPP || rc == EINVAL ? 0 : rc; /* no such call here: the writes will tell */
}
