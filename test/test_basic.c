#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "keel.h"

static char path[256];

static keel_val V(const char *s) { return (keel_val){s, strlen(s)}; }

static void test_roundtrip(void **state)
{
    (void)state;
    snprintf(path, sizeof path, "/tmp/keel-basic-%d.db", getpid());
    unlink(path);
    char lp[300];
    snprintf(lp, sizeof lp, "%s-lock", path);
    unlink(lp);
    keel_db *db;
    assert_int_equal(keel_open(path, NULL, &db), 0);
    keel_txn *t;
    assert_int_equal(keel_begin(db, 0, &t), 0);
    char k[32], v[64];
    for (int i = 0; i < 10000; i++) {
        snprintf(k, sizeof k, "key%08d", i);
        snprintf(v, sizeof v, "value%d", i * 7);
        assert_int_equal(keel_put(t, 0, V(k), V(v), 0), 0);
    }
    assert_int_equal(keel_commit(t), 0);
    keel_close(db);
    assert_int_equal(keel_open(path, NULL, &db), 0);
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
    for (int i = 0; i < 10000; i++) {
        snprintf(k, sizeof k, "key%08d", i);
        snprintf(v, sizeof v, "value%d", i * 7);
        keel_val out;
        assert_int_equal(keel_get(t, 0, V(k), &out), 0);
        assert_int_equal(out.len, strlen(v));
        assert_memory_equal(out.data, v, out.len);
    }
    keel_cursor *c;
    assert_int_equal(keel_cursor_open(t, 0, &c), 0);
    keel_val ck, cv;
    int n = 0;
    for (int rc = keel_cursor_first(c, &ck, &cv); rc == 0; rc = keel_cursor_next(c, &ck, &cv)) {
        snprintf(k, sizeof k, "key%08d", n);
        assert_int_equal(ck.len, strlen(k));
        assert_memory_equal(ck.data, k, ck.len);
        n++;
    }
    assert_int_equal(n, 10000);
    keel_cursor_close(c);
    keel_abort(t);
    assert_int_equal(keel_begin(db, 0, &t), 0);
    for (int i = 0; i < 10000; i += 2) {
        snprintf(k, sizeof k, "key%08d", i);
        assert_int_equal(keel_del(t, 0, V(k)), 0);
    }
    assert_int_equal(keel_commit(t), 0);
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
    for (int i = 0; i < 10000; i++) {
        snprintf(k, sizeof k, "key%08d", i);
        keel_val out;
        assert_int_equal(keel_get(t, 0, V(k), &out), (i % 2) ? 0 : KEEL_NOTFOUND);
    }
    keel_abort(t);
    keel_close(db);
    unlink(path);
    unlink(lp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_roundtrip)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
