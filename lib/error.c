/* error.c — keel_strerror: a message for every code keel returns; keel_error_detail: where the last one was met. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

const char *keel_strerror(int err)
{
    switch (err) {
    case KEEL_OK: return "success";
    case KEEL_NOTFOUND: return "KEEL_NOTFOUND: no such key or bucket, or the cursor is past the end";
    case KEEL_EXISTS: return "KEEL_EXISTS: the key already exists";
    case KEEL_CORRUPTED: return "KEEL_CORRUPTED: the database file is damaged";
    case KEEL_INVALID: return "KEEL_INVALID: not a keel database file";
    case KEEL_VERSION: return "KEEL_VERSION: the file has a format version this library does not read";
    case KEEL_FULL: return "KEEL_FULL: no space left on the disk or in the map reservation";
    case KEEL_READERS_FULL: return "KEEL_READERS_FULL: every reader slot is in use";
    case KEEL_BADVALSIZE: return "KEEL_BADVALSIZE: key empty or too long, or value too long";
    case KEEL_READONLY: return "KEEL_READONLY: write attempted in a read-only transaction or database";
    case KEEL_BADTXN:
        return "KEEL_BADTXN: the transaction has ended, or failed and can only be aborted, or has a live child "
               "transaction";
    case KEEL_PANIC: return "KEEL_PANIC: a write to disk failed; close and reopen the database";
    case KEEL_BADARG: return "KEEL_BADARG: a required argument is NULL or meaningless";
    case KEEL_BADBUCKET: return "KEEL_BADBUCKET: the bucket handle names no bucket in this transaction";
    case KEEL_BADCURSOR: return "KEEL_BADCURSOR: the cursor is closed, detached or not positioned";
    case KEEL_BUSY: return "KEEL_BUSY: this thread already has a write transaction open on this handle";
    case KEEL_BADFLAGS: return "KEEL_BADFLAGS: unknown or contradictory flags";
    case KEEL_BADNAME: return "KEEL_BADNAME: bucket name empty or longer than 255 bytes";
    case KEEL_LOCKFILE: return "KEEL_LOCKFILE: the lock file is not a keel lock file or is damaged";
    case KEEL_FORKED: return "KEEL_FORKED: handle inherited across fork(); open the database again";
    case KEEL_NOMEM: return "KEEL_NOMEM: out of memory";
    case KEEL_MISMATCH: return "KEEL_MISMATCH: the current value differs from the expected one";
    case KEEL_NOTNUMBER: return "KEEL_NOTNUMBER: the value is not a decimal integer";
    case KEEL_OVERFLOW: return "KEEL_OVERFLOW: the result does not fit in a 64-bit integer";
    case KEEL_LOCKPATH:
        return "KEEL_LOCKPATH: the database is in use through another lock file (a second path to it, or its "
               "lock file was removed)";
    case KEEL_MAPSIZE: return "KEEL_MAPSIZE: the file has grown past this handle's map; reopen with a larger max_size";
    case KEEL_ADDRSPACE: return "KEEL_ADDRSPACE: the address space for the map (max_size) cannot be reserved";
    case KEEL_INCOMPATIBLE: return "KEEL_INCOMPATIBLE: the bucket's kind does not allow this (a DUPSORT bucket and a plain one)";
    case KEEL_LAGGED: return "KEEL_LAGGED: the read transaction fell too far behind the writer; begin a new one";
    }
    if (err > 0)
        return strerror(err);
    return "unknown keel error code";
}

/* One per thread: a failed call's detail must not be overwritten by another
 * thread's before its caller reads it. */
static __thread char error_detail[512];

const char *keel_error_detail(void) { return error_detail; }

void error_detail_clear(void) { error_detail[0] = 0; }

void error_detail_set(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_detail, sizeof error_detail, fmt, ap);
    va_end(ap);
}

int error_live_child(void)
{
    error_detail_set("the txn has a live child (keel_begin_nested): end the child first");
    return KEEL_BADTXN;
}

/* The file name without the build's directories: the detail names a source
 * file of lib/, whatever directory it was built from. */
static const char *base_name(const char *file)
{
    const char *slash = strrchr(file, '/');
    return slash ? slash + 1 : file;
}

void corrupt_at(const char *file, int line, uint64_t pgno)
{
    if (pgno)
        error_detail_set("damage at page %" PRIu64 " (%s:%d)", pgno, base_name(file), line);
    else
        error_detail_set("damage met (%s:%d)", base_name(file), line);
}

#ifndef NDEBUG
void keel_assert_fail(const char *file, int line, const char *cond)
{
    fprintf(stderr, "keel: %s:%d: assertion failed: %s\n", base_name(file), line, cond);
    abort();
}
#endif

/* A key for a message: printable bytes as they are, else hex; long ones cut. */
static void key_text(char *out, size_t size, const uint8_t *k, size_t len)
{
    bool printable = true;
    for (size_t i = 0; i < len && printable; i++)
        printable = k[i] >= 0x20 && k[i] < 0x7f && k[i] != '"' && k[i] != '\\';
    size_t max = printable ? 48 : 24, n = len < max ? len : max, at = 0;
    if (printable)
        at = (size_t)snprintf(out, size, "\"%.*s\"", (int)n, (const char *)k);
    else
        for (size_t i = 0; i < n && at + 3 < size; i++)
            at += (size_t)snprintf(out + at, size - at, "%02x", k[i]);
    if (n < len && at + 4 < size)
        snprintf(out + at, size - at, "...");
}

void range_text(char *out, size_t size, const uint8_t *lo, size_t lolen, const uint8_t *hi, size_t hilen)
{
    char a[120] = "the first key", b[120] = "the last key";
    if (lo)
        key_text(a, sizeof a, lo, lolen);
    if (hi)
        key_text(b, sizeof b, hi, hilen);
    snprintf(out, size, "keys from %s %s %s", a, hi ? "up to (not including)" : "to", b);
}
