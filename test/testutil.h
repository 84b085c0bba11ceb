/*
 * testutil.h — shared helpers for the cmocka tests.
 *
 *   tu_path(buf, name)  a fresh database path under $TMPDIR (old files removed)
 *   tu_remove(path)     removes the db file and its lock file
 *   tu_scale()          KEEL_TEST_SCALE (default 1): multiply loop counts by it
 *   tu_seed(def)        KEEL_SEED if set, else def
 *   tu_val(s)           a keel_val over a C string
 *   tu_flip(path, off, mask)  XORs the byte at off of a file with mask (-1 on failure)
 */
#ifndef KEEL_TESTUTIL_H
#define KEEL_TESTUTIL_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keel.h"

static inline void tu_remove(const char *path)
{
    char lock[4200];
    snprintf(lock, sizeof lock, "%s-lock", path);
    unlink(path);
    unlink(lock);
}

static inline const char *tu_path(char *buf, size_t size, const char *name)
{
    const char *dir = getenv("TMPDIR");
    snprintf(buf, size, "%s/keel-%s-%d.db", dir && *dir ? dir : "/tmp", name, (int)getpid());
    tu_remove(buf);
    return buf;
}

static inline long tu_scale(void)
{
    const char *s = getenv("KEEL_TEST_SCALE");
    long v = s ? strtol(s, NULL, 10) : 1;
    return v > 0 ? v : 1;
}

static inline uint64_t tu_seed(uint64_t def)
{
    const char *s = getenv("KEEL_SEED");
    return s ? strtoull(s, NULL, 0) : def;
}

static inline keel_val tu_val(const char *s) { return (keel_val){s, strlen(s)}; }

static inline int tu_flip(const char *path, uint64_t off, uint8_t mask)
{
    int fd = open(path, O_RDWR);
    uint8_t b;
    int ok = fd >= 0 && pread(fd, &b, 1, (off_t)off) == 1;
    b ^= mask;
    ok = ok && pwrite(fd, &b, 1, (off_t)off) == 1;
    if (fd >= 0)
        close(fd);
    return ok ? 0 : -1;
}

/* All n bytes to fd (a pipe to a parent, say): 0, or -1 */
static inline int tu_write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t r = write(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* xorshift64*: small, fast, reproducible */
static inline uint64_t tu_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

#ifdef CMOCKA_H_ /* for the tests that include cmocka.h first */
#include <signal.h>
#include <sys/wait.h>

/* fn(ctx) in a child must fail a KEEL_ASSERT naming `file` and `cond`
 * (a failed one prints file:line and the condition to stderr, then aborts).
 * A build with NDEBUG has none: the test is skipped. */
static inline void tu_assert_dies(void (*fn)(void *ctx), void *ctx, const char *file, const char *cond)
{
#ifdef NDEBUG
    (void)fn, (void)ctx, (void)file, (void)cond;
    skip();
#else
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        signal(SIGABRT, SIG_DFL);
        fn(ctx);
        _exit(0);
    }
    close(fds[1]);
    char msg[512] = {0};
    size_t got = 0;
    ssize_t r;
    while (got < sizeof msg - 1 && (r = read(fds[0], msg + got, sizeof msg - 1 - got)) > 0)
        got += (size_t)r;
    close(fds[0]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
    if (!strstr(msg, file) || !strstr(msg, cond))
        fail_msg("assertion message \"%s\" names neither %s nor %s", msg, file, cond);
#endif
}
#endif

#endif
