/*
 * test_fuzz_replay.c — replays every input under fuzz/regress/<target>/
 * (each crash the fuzzers ever found, kept after its fix) and the seed
 * corpora under fuzz/corpus/<target>/ through the fuzz targets, without
 * libFuzzer: test/meson.build compiles fuzz/fuzz_*.c into this program with
 * -DFUZZ_REPLAY, which names their entry points fuzz_<target>_one.
 *
 * A target that finds a problem aborts (ASan/UBSan in the sanitizer build,
 * FUZZ_CHECK or a model mismatch in any build): the input's path is printed
 * first.  FUZZ_DIR is the source tree's fuzz/ directory.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "../fuzz/fuzz.h"

#ifndef FUZZ_DIR
#error "FUZZ_DIR must name the fuzz/ directory"
#endif

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Feeds every regular file of dir to fn, in name order; the number fed. */
static int replay_dir(const char *dir, int (*fn)(const uint8_t *, size_t))
{
    DIR *d = opendir(dir);
    if (!d)
        return 0; /* no inputs yet */
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            names = realloc(names, cap * sizeof *names);
            assert_non_null(names);
        }
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof *names, cmp_names);
    int fed = 0;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        free(names[i]);
        struct stat st;
        if (stat(path, &st) || !S_ISREG(st.st_mode))
            continue;
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        uint8_t *buf = malloc(st.st_size ? (size_t)st.st_size : 1);
        assert_non_null(buf);
        size_t got = fread(buf, 1, (size_t)st.st_size, f);
        fclose(f);
        assert_int_equal(got, (size_t)st.st_size);
        fprintf(stderr, "replay %s\n", path);
        assert_int_equal(fn(buf, got), 0);
        free(buf);
        fed++;
    }
    free(names);
    return fed;
}

static void replay(const char *target, int (*fn)(const uint8_t *, size_t))
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/regress/%s", FUZZ_DIR, target);
    int regress = replay_dir(dir, fn);
    snprintf(dir, sizeof dir, "%s/corpus/%s", FUZZ_DIR, target);
    int corpus = replay_dir(dir, fn);
    fprintf(stderr, "%s: %d regression inputs, %d corpus inputs\n", target, regress, corpus);
    assert_true(corpus > 0); /* the seed corpus is part of the tree */
}

static void test_file(void **state)
{
    (void)state;
    replay("fuzz_file", fuzz_file_one);
}

static void test_ops(void **state)
{
    (void)state;
    replay("fuzz_ops", fuzz_ops_one);
}

static void test_dump(void **state)
{
    (void)state;
    replay("fuzz_dump", fuzz_dump_one);
}

static void test_lock(void **state)
{
    (void)state;
    replay("fuzz_lock", fuzz_lock_one);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file),
        cmocka_unit_test(test_ops),
        cmocka_unit_test(test_dump),
        cmocka_unit_test(test_lock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
