/*
 * fuzz.h — what the libFuzzer targets in fuzz/ share (fuzz/common.c).
 *
 * Each target defines its entry point with FUZZ_ENTRY(name).  Built by
 * fuzz/build.sh it is LLVMFuzzerTestOneInput; built with -DFUZZ_REPLAY (by
 * test/meson.build, into test_fuzz_replay) it is fuzz_<name>_one, so the four
 * targets link into one program that replays fuzz/regress and fuzz/corpus
 * without libFuzzer.
 *
 * A target reports a finding by crashing: FUZZ_CHECK prints what failed and
 * aborts.  Library misbehaviour (out-of-bounds read, leak, UB) is found by
 * AddressSanitizer / UndefinedBehaviorSanitizer.
 */
#ifndef KEEL_FUZZ_H
#define KEEL_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#ifdef FUZZ_REPLAY
#define FUZZ_ENTRY(name) int fuzz_##name##_one(const uint8_t *data, size_t size)
#else
#define FUZZ_ENTRY(name) int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
#endif
int fuzz_file_one(const uint8_t *data, size_t size);
int fuzz_ops_one(const uint8_t *data, size_t size);
int fuzz_dump_one(const uint8_t *data, size_t size);
int fuzz_lock_one(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                   \
    do {                                                   \
        if (!(cond))                                       \
            fuzz_fail(__FILE__, __LINE__, "%s", #cond);    \
    } while (0)

/* Prints "file:line: message" and aborts. */
__attribute__((noreturn, format(printf, 3, 4))) void fuzz_fail(const char *file, int line, const char *fmt, ...);

/* A private directory for this process (under /dev/shm when it exists,
 * else $TMPDIR or /tmp), created on first use and emptied and removed at exit. */
const char *fuzz_tmpdir(void);
/* fuzz_tmpdir()/name, in a static buffer per slot (0..3). */
const char *fuzz_path(int slot, const char *name);
/* Replaces the file with exactly these bytes: 0 or -1. */
int fuzz_write_file(const char *path, const void *data, size_t n);
/* The same with the bytes a then b. */
int fuzz_write_file2(const char *path, const void *a, size_t an, const void *b, size_t bn);
/* Removes path and path-lock. */
void fuzz_remove_db(const char *path);

#endif
