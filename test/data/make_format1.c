/* Built test/data/format1.keel with keel's format 1, against commit 5cc18b5
 * (gcc -Iinclude make_format1.c build/lib/libkeel.a -lxxhash -lpthread); not
 * part of the build: a later library writes a later format.
 * Contents (test_format.c checks them):
 *   default bucket: "padding-padding-padding-padding-padding-padding-k%05d" (i = 0..2999) -> "v<i>" repeated to 40+i%60 bytes; every 7th key deleted
 *   bucket "big": b0..b4 -> 3000+i*5000 bytes of byte (i*31+j)&255 (overflow runs)
 *   bucket "ttl": t000..t099 -> "x", expiry at 4102444800000 + i (2100-01-01) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "keel.h"
#define CK(x) do { int rc_ = (x); if (rc_) { fprintf(stderr, "%s: %d\n", #x, rc_); exit(1); } } while (0)
int main(int argc, char **argv)
{
    keel_options o = {0};
    o.page_size = 4096;
    keel_db *db; keel_txn *t; keel_bucket b;
    CK(keel_open(argv[1], &o, &db));
    char k[96], v[200];
    for (int round = 0; round < 3; round++) {
        CK(keel_begin(db, 0, &t));
        for (int i = round * 1000; i < round * 1000 + 1000; i++) {
            snprintf(k, sizeof k, "padding-padding-padding-padding-padding-padding-k%05d", i);
            size_t n = 40 + i % 60; for (size_t j = 0; j < n; j++) v[j] = "v0123456789"[(i + j) % 11];
            CK(keel_put(t, 0, (keel_val){k, strlen(k)}, (keel_val){v, n}, 0));
        }
        CK(keel_commit(t));
    }
    CK(keel_begin(db, 0, &t));
    for (int i = 0; i < 3000; i += 7) { snprintf(k, sizeof k, "padding-padding-padding-padding-padding-padding-k%05d", i); CK(keel_del(t, 0, (keel_val){k, strlen(k)})); }
    CK(keel_bucket_open(t, "big", KEEL_CREATE, &b));
    for (int i = 0; i < 5; i++) {
        size_t n = 3000 + i * 5000; unsigned char *buf = malloc(n);
        for (size_t j = 0; j < n; j++) buf[j] = (unsigned char)((i * 31 + j) & 255);
        snprintf(k, sizeof k, "b%d", i);
        CK(keel_put(t, b, (keel_val){k, strlen(k)}, (keel_val){buf, n}, 0)); free(buf);
    }
    CK(keel_bucket_open(t, "ttl", KEEL_CREATE, &b));
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof k, "t%03d", i);
        CK(keel_put(t, b, (keel_val){k, strlen(k)}, (keel_val){"x", 1}, 0));
        CK(keel_expire_at(t, b, (keel_val){k, strlen(k)}, 4102444800000LL + i));
    }
    CK(keel_commit(t));
    keel_close(db);
    return 0;
}
