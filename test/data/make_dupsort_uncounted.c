/* Built test/data/dupsort-uncounted.keel with a DUPSORT tree as keel wrote
 * them before TREE_F_COUNTED (no count on a key's first pair), against
 * commit f4a87d6 (gcc -Iinclude make_dupsort_uncounted.c build/lib/libkeel.a
 * -lxxhash -lpthread); not part of the build: a later library writes
 * counted trees.  Contents (test_format.c checks them):
 *   DUPSORT bucket "idx": key "k%03d" (i = 0..199) -> values "v%02d" (j = 0 .. i % 7)
 *                         key "many" -> values "%05d" (j = 0..599), over several leaves
 *   plain bucket "plain": "p" -> "q" */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "keel.h"
#define CK(x) do { int rc_ = (x); if (rc_) { fprintf(stderr, "%s: %d\n", #x, rc_); exit(1); } } while (0)
int main(int argc, char **argv)
{
    keel_options o = {0};
    o.page_size = 4096;
    keel_db *db; keel_txn *t; keel_bucket b, p;
    char k[32], v[32];
    (void)argc;
    CK(keel_open(argv[1], &o, &db));
    CK(keel_begin(db, 0, &t));
    CK(keel_bucket_open(t, "idx", KEEL_CREATE | KEEL_DUPSORT, &b));
    CK(keel_bucket_open(t, "plain", KEEL_CREATE, &p));
    CK(keel_put(t, p, (keel_val){"p", 1}, (keel_val){"q", 1}, 0));
    for (int i = 0; i < 200; i++)
        for (int j = i % 7; j >= 0; j--) {
            snprintf(k, sizeof k, "k%03d", i);
            snprintf(v, sizeof v, "v%02d", j);
            CK(keel_put(t, b, (keel_val){k, strlen(k)}, (keel_val){v, strlen(v)}, 0));
        }
    for (int j = 599; j >= 0; j--) {
        snprintf(v, sizeof v, "%05d", j);
        CK(keel_put(t, b, (keel_val){"many", 4}, (keel_val){v, strlen(v)}, 0));
    }
    CK(keel_commit(t));
    keel_close(db);
    return 0;
}
