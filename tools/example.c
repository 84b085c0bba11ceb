/*
 * keel-example — a round trip through the public API: create a database,
 * put, get, scan, delete, reopen.  `tools/run.sh demo` runs it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel.h"

#define CHECK(call)                                                                  \
    do {                                                                             \
        int rc_ = (call);                                                            \
        if (rc_) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, keel_strerror(rc_)); \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

static keel_val str(const char *s) { return (keel_val){s, strlen(s)}; }

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "example.db";
    keel_db *db;
    CHECK(keel_open(path, NULL, &db));

    keel_txn *txn;
    keel_bucket fruit;
    CHECK(keel_begin(db, 0, &txn));
    CHECK(keel_bucket_open(txn, "fruit", KEEL_CREATE, &fruit));
    const char *names[] = {"apple", "banana", "cherry", "damson", "elderberry"};
    const char *colours[] = {"red", "yellow", "dark red", "purple", "black"};
    for (int i = 0; i < 5; i++)
        CHECK(keel_put(txn, fruit, str(names[i]), str(colours[i]), 0));
    CHECK(keel_commit(txn));
    printf("put 5 keys into bucket 'fruit'\n");

    keel_val v;
    CHECK(keel_begin(db, KEEL_RDONLY, &txn));
    CHECK(keel_get(txn, fruit, str("cherry"), &v));
    printf("get cherry -> %.*s\n", (int)v.len, (const char *)v.data);
    keel_abort(txn);

    CHECK(keel_begin(db, 0, &txn));
    CHECK(keel_del(txn, fruit, str("banana")));
    CHECK(keel_commit(txn));
    printf("deleted banana\n");

    keel_close(db);
    CHECK(keel_open(path, NULL, &db));
    printf("reopened %s; scan:\n", path);
    CHECK(keel_begin(db, KEEL_RDONLY, &txn));
    CHECK(keel_bucket_open(txn, "fruit", 0, &fruit));
    keel_cursor *c;
    CHECK(keel_cursor_open(txn, fruit, &c));
    keel_val k;
    int n = 0, rc;
    for (rc = keel_cursor_first(c, &k, &v); rc == 0; rc = keel_cursor_next(c, &k, &v), n++)
        printf("  %.*s = %.*s\n", (int)k.len, (const char *)k.data, (int)v.len, (const char *)v.data);
    if (rc != KEEL_NOTFOUND)
        CHECK(rc);
    keel_cursor_close(c);
    int missing = keel_get(txn, fruit, str("banana"), &v);
    keel_abort(txn);
    keel_close(db);
    if (n != 4 || missing != KEEL_NOTFOUND) {
        fprintf(stderr, "round trip FAILED: %d keys, banana %s\n", n, keel_strerror(missing));
        return 1;
    }
    printf("round trip OK: 4 keys after reopen, banana gone\n");
    return 0;
}
