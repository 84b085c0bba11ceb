/*
 * common.c — helpers shared by the fuzz targets (see fuzz.h).
 */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void fuzz_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: fuzz check failed: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}

static char tmpdir[512];

static void remove_tmpdir(void)
{
    if (!tmpdir[0])
        return;
    DIR *d = opendir(tmpdir);
    if (d) {
        struct dirent *e;
        char p[1024];
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(tmpdir);
    tmpdir[0] = 0;
}

const char *fuzz_tmpdir(void)
{
    if (tmpdir[0])
        return tmpdir;
    const char *base = getenv("KEEL_FUZZ_TMPDIR");
    struct stat st;
    if (!base || !*base)
        base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0 ? "/dev/shm" : NULL;
    if (!base)
        base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    snprintf(tmpdir, sizeof tmpdir, "%s/keel-fuzz-XXXXXX", base);
    if (!mkdtemp(tmpdir))
        fuzz_fail(__FILE__, __LINE__, "mkdtemp %s: %s", tmpdir, strerror(errno));
    atexit(remove_tmpdir);
    return tmpdir;
}

const char *fuzz_path(int slot, const char *name)
{
    static char paths[4][600];
    snprintf(paths[slot & 3], sizeof paths[0], "%s/%s", fuzz_tmpdir(), name);
    return paths[slot & 3];
}

static int write_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int fuzz_write_file2(const char *path, const void *a, size_t an, const void *b, size_t bn)
{
    unlink(path); /* a fresh inode: no map of an earlier run can see it */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    int rc = write_all(fd, a, an);
    if (rc == 0)
        rc = write_all(fd, b, bn);
    close(fd);
    return rc;
}

int fuzz_write_file(const char *path, const void *data, size_t n) { return fuzz_write_file2(path, data, n, NULL, 0); }

void fuzz_remove_db(const char *path)
{
    char lock[700];
    snprintf(lock, sizeof lock, "%s-lock", path);
    unlink(path);
    unlink(lock);
}
