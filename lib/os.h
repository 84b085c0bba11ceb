/*
 * os.h — the operating-system layer: files, the map, memory.
 *
 * Contract: every system call keel makes on the data file, and every heap
 * allocation, goes through the table `keel_os`.  Tests replace its members
 * to record writes (crash simulation) or to fail the Nth call (fault
 * injection).  Nothing above this layer calls open/pwrite/fsync/mmap/malloc
 * on the database or lock file directly (lockfile.c reads /proc/PID/stat
 * with plain open/read: that is not the database's I/O).  Functions here return 0 or a positive errno.
 */
#ifndef KEEL_OS_H
#define KEEL_OS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

struct keel_os {
    int (*open)(const char *path, int flags, mode_t mode);
    int (*close)(int fd);
    ssize_t (*pread)(int fd, void *buf, size_t n, off_t off);
    ssize_t (*pwrite)(int fd, const void *buf, size_t n, off_t off);
    ssize_t (*pwritev)(int fd, const struct iovec *iov, int cnt, off_t off);
    int (*fsync)(int fd);
    int (*fdatasync)(int fd);
    int (*ftruncate)(int fd, off_t len);
    int (*fstat)(int fd, struct stat *st);
    void *(*mmap)(void *addr, size_t len, int prot, int flags, int fd, off_t off);
    int (*munmap)(void *addr, size_t len);
    void *(*malloc)(size_t n);
    void *(*realloc)(void *p, size_t n);
    void (*free)(void *p);
};

/* The live table; the default points at libc.  Not thread-safe to change
 * while databases are open. */
extern struct keel_os keel_os;
/* Restores the libc defaults. */
void os_reset(void);

/* Allocation through the table. os_calloc zeroes. */
void *os_malloc(size_t n);
void *os_calloc(size_t n);
void *os_realloc(void *p, size_t n);
void os_free(void *p);
char *os_strdup(const char *s);
/* Private anonymous memory with its pages faulted in (MAP_POPULATE),
 * through the table's mmap; NULL when it cannot be had. */
void *os_map_anon(size_t n);
void os_unmap_anon(void *p, size_t n);

/* Whole-buffer I/O: retries short transfers and EINTR; os_pread_upto
 * reports how much it got (less at the end of the file).
 * Writes go to the kernel in pieces of at most 16 KiB that end at 16 KiB
 * multiples of the file offset (os.c says why). */
int os_pread_upto(int fd, void *buf, size_t n, uint64_t off, size_t *got);
int os_pwrite_full(int fd, const void *buf, size_t n, uint64_t off);
int os_pwritev_full(int fd, struct iovec *iov, int cnt, uint64_t off);
int os_fsync(int fd);
int os_fdatasync(int fd);
int os_ftruncate(int fd, uint64_t len);
int os_file_size(int fd, uint64_t *size);
int os_close(int fd);

/* Bumped in the child after fork(), so handles can tell they were inherited.
 * os_watch_fork() installs the hook (keel_open calls it). */
extern uint64_t os_fork_gen;
void os_watch_fork(void);
static inline uint64_t os_fork_generation(void) { return __atomic_load_n(&os_fork_gen, __ATOMIC_RELAXED); }

/* keel_os.open, but never onto descriptor 0, 1 or 2: a process started with
 * them closed would otherwise hold the database there, and its next message
 * to stderr would land in the file.  -1 and errno on failure. */
int os_open_high(const char *path, int flags, mode_t mode);

/* Open-file-description locks (F_OFD_*) on one byte of a file: they belong
 * to the open file description, not to a process or thread, so closing
 * another descriptor of the same file keeps them, any thread may release
 * them, and the kernel drops them when the last descriptor closes (at
 * process death too).  type is F_RDLCK or F_WRLCK; 0, EAGAIN when !wait and
 * held elsewhere. */
int os_lock_range(int fd, uint64_t off, int type, int wait);
int os_unlock_range(int fd, uint64_t off);
/* Does another open file description hold a lock on that byte? */
int os_lock_probe(int fd, uint64_t off, bool *held);
/* Futex on a 32-bit word of shared (MAP_SHARED) memory, across processes:
 * wait while *word == expected, at most timeout_ms; wake every waiter. */
void os_futex_wait(_Atomic uint32_t *word, uint32_t expected, int timeout_ms);
void os_futex_wake(_Atomic uint32_t *word);
/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t os_monotonic_ns(void);
/* Allocates the file's blocks up to len (posix_fallocate): writes through a
 * map into a hole of a full file system are SIGBUS, an error here is not. */
int os_allocate(int fd, uint64_t len);

#endif
