/*
 * test_cursor.c — the cursor layer (lib/cursor.c) on its own: cursors made
 * with cursor_init over an internal tree descriptor built with bt_put in a
 * write txn, and over buckets; first/last/next/prev/seek on an empty tree,
 * one leaf and a tree of several levels; seeks between keys, before the
 * first, after the last; steps past either end leave the cursor where it
 * was; the cursor re-seeks after its own txn's puts and deletes (txn->changes);
 * cursor_del then next/prev; and a seeded random walk checked against a
 * sorted model.  Keys and values are compared byte for byte.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "internal.h"
#include "testutil.h"

/* Keys are long so that branch pages hold few of them and trees get deep
 * with few entries: KLEN - 6 bytes of 'k', then "%06d", ordered as i (they
 * differ only at the end, so no separator can be shortened). */
enum { KLEN = 300, MAXV = 3000 };

static keel_val key_of(int i, uint8_t *buf)
{
    char head[16];
    snprintf(head, sizeof head, "%06d", i);
    memset(buf, 'k', KLEN);
    memcpy(buf + KLEN - 6, head, 6);
    return (keel_val){buf, KLEN};
}

/* The value of key i at version ver: its length and bytes both depend on
 * both, some long enough to go to overflow pages. */
static size_t val_len(int i, int ver)
{
    unsigned h = (unsigned)(i * 131 + ver * 71);
    return h % 7 == 0 ? 2500 + h % 400 : 1 + h % 900;
}

static keel_val val_of(int i, int ver, uint8_t *buf)
{
    size_t n = val_len(i, ver);
    for (size_t j = 0; j < n; j++)
        buf[j] = (uint8_t)(i * 7 + ver * 13 + (int)j);
    return (keel_val){buf, n};
}

static void assert_entry(keel_val k, keel_val v, int i, int ver)
{
    uint8_t kb[KLEN], vb[MAXV];
    keel_val ek = key_of(i, kb), ev = val_of(i, ver, vb);
    assert_int_equal(k.len, ek.len);
    assert_memory_equal(k.data, ek.data, ek.len);
    assert_int_equal(v.len, ev.len);
    assert_memory_equal(v.data, ev.data, ev.len);
}

static void put_key(keel_txn *t, struct tree_desc *td, int i, int ver)
{
    uint8_t kb[KLEN], vb[MAXV];
    assert_int_equal(bt_put(t, td, key_of(i, kb), val_of(i, ver, vb), 0, 0, NULL), 0);
}

static keel_db *open_db(char *path, size_t size, const char *name)
{
    tu_path(path, size, name);
    keel_options o = {.page_size = 4096, .flags = KEEL_NOSYNC};
    keel_db *db;
    assert_int_equal(keel_open(path, &o, &db), 0);
    return db;
}

static void close_db(keel_db *db, const char *path)
{
    uint64_t problems = 99;
    assert_int_equal(keel_check(db, NULL, NULL, &problems), 0);
    assert_int_equal(problems, 0);
    keel_close(db);
    tu_remove(path);
}

/* An empty internal tree: every move answers KEEL_NOTFOUND, current
 * KEEL_BADCURSOR (never positioned). */
static void test_empty_tree(void **state)
{
    (void)state;
    char path[256];
    keel_db *db = open_db(path, sizeof path, "cur-empty");
    keel_txn *t;
    assert_int_equal(keel_begin(db, 0, &t), 0);
    struct tree_desc td = {0};
    keel_cursor c = {0};
    assert_int_equal(cursor_init(&c, t, 0, &td), 0);
    assert_int_equal(c.state, CUR_UNSET);
    keel_val k, v;
    uint8_t kb[KLEN];
    assert_int_equal(cursor_first(&c, &k, &v), KEEL_NOTFOUND);
    assert_int_equal(cursor_last(&c, &k, &v), KEEL_NOTFOUND);
    assert_int_equal(cursor_next(&c, &k, &v), KEEL_NOTFOUND);
    assert_int_equal(cursor_prev(&c, &k, &v), KEEL_NOTFOUND);
    assert_int_equal(cursor_seek(&c, key_of(5, kb), &k, &v), KEEL_NOTFOUND);
    assert_int_equal(cursor_current(&c, &k, &v), KEEL_BADCURSOR);
    assert_int_equal(c.state, CUR_UNSET);
    os_free(c.keybuf);
    keel_abort(t);
    close_db(db, path);
}

/* One leaf of three keys (2, 4, 6): every move, seeks on, between, before
 * and after the keys, and steps past either end that leave the cursor on
 * the entry it had. */
static void test_one_leaf(void **state)
{
    (void)state;
    char path[256];
    keel_db *db = open_db(path, sizeof path, "cur-leaf");
    keel_txn *t;
    assert_int_equal(keel_begin(db, 0, &t), 0);
    struct tree_desc td = {0};
    for (int i = 2; i <= 6; i += 2)
        put_key(t, &td, i, 0);
    assert_int_equal(td.depth, 1);
    assert_int_equal(td.entries, 3);
    keel_cursor c = {0};
    assert_int_equal(cursor_init(&c, t, 0, &td), 0);
    keel_val k, v;
    uint8_t kb[KLEN];
    assert_int_equal(cursor_first(&c, &k, &v), 0);
    assert_entry(k, v, 2, 0);
    assert_int_equal(cursor_prev(&c, &k, &v), KEEL_NOTFOUND);
    assert_int_equal(cursor_current(&c, &k, &v), 0); /* still on the first */
    assert_entry(k, v, 2, 0);
    assert_int_equal(cursor_next(&c, &k, &v), 0);
    assert_entry(k, v, 4, 0);
    assert_int_equal(cursor_next(&c, &k, &v), 0);
    assert_entry(k, v, 6, 0);
    assert_int_equal(cursor_next(&c, &k, &v), KEEL_NOTFOUND);
    assert_int_equal(cursor_next(&c, &k, &v), KEEL_NOTFOUND);
    assert_int_equal(cursor_current(&c, &k, &v), 0); /* still on the last */
    assert_entry(k, v, 6, 0);
    assert_int_equal(cursor_prev(&c, &k, &v), 0);
    assert_entry(k, v, 4, 0);
    assert_int_equal(cursor_last(&c, &k, &v), 0);
    assert_entry(k, v, 6, 0);

    assert_int_equal(cursor_seek(&c, key_of(4, kb), &k, &v), 0); /* on a key */
    assert_entry(k, v, 4, 0);
    assert_int_equal(cursor_seek(&c, key_of(3, kb), &k, &v), 0); /* between */
    assert_entry(k, v, 4, 0);
    assert_int_equal(cursor_prev(&c, &k, &v), 0);
    assert_entry(k, v, 2, 0);
    assert_int_equal(cursor_seek(&c, key_of(0, kb), &k, &v), 0); /* before the first */
    assert_entry(k, v, 2, 0);
    assert_int_equal(cursor_seek(&c, tu_val("k"), &k, &v), 0); /* a prefix of every key */
    assert_entry(k, v, 2, 0);
    assert_int_equal(cursor_seek(&c, key_of(7, kb), &k, &v), KEEL_NOTFOUND); /* after the last */
    assert_int_equal(cursor_current(&c, &k, &v), KEEL_BADCURSOR);            /* a failed seek unpositions */
    assert_int_equal(cursor_next(&c, &k, &v), 0); /* unpositioned: next starts at the first */
    assert_entry(k, v, 2, 0);
    assert_int_equal(cursor_seek(&c, key_of(7, kb), &k, &v), KEEL_NOTFOUND);
    assert_int_equal(cursor_prev(&c, &k, &v), 0); /* ... and prev at the last */
    assert_entry(k, v, 6, 0);

    /* key only, value only */
    assert_int_equal(cursor_first(&c, &k, NULL), 0);
    assert_int_equal(k.len, KLEN);
    assert_memory_equal(k.data, key_of(2, kb).data, KLEN);
    assert_int_equal(cursor_next(&c, NULL, &v), 0);
    uint8_t vb[MAXV];
    keel_val ev = val_of(4, 0, vb);
    assert_int_equal(v.len, ev.len);
    assert_memory_equal(v.data, ev.data, ev.len);
    os_free(c.keybuf);
    keel_abort(t);
    close_db(db, path);
}

/* Build a tree of n keys 0, 2, 4, ... (even numbers, so that odd ones fall
 * between) in shuffled order; returns its depth. */
static void build(keel_txn *t, struct tree_desc *td, int n, uint64_t *rng)
{
    int *order = malloc((size_t)n * sizeof *order);
    assert_non_null(order);
    for (int i = 0; i < n; i++)
        order[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(tu_rand(rng) % (uint64_t)(i + 1)), x = order[i];
        order[i] = order[j];
        order[j] = x;
    }
    for (int i = 0; i < n; i++)
        put_key(t, td, 2 * order[i], 0);
    free(order);
    assert_int_equal(td->entries, (uint64_t)n);
}

/* Full walks both ways over a tree of three levels or more, in the write
 * txn that built it and, after commit, in a read txn over the default
 * bucket's tree; seeks on every key and between every pair. */
static void test_multi_level(void **state)
{
    (void)state;
    char path[256];
    keel_db *db = open_db(path, sizeof path, "cur-deep");
    uint64_t rng = tu_seed(0xC0450);
    int n = 400;
    keel_txn *t;
    assert_int_equal(keel_begin(db, 0, &t), 0);
    struct tree_desc *td = &t->meta.trees[TREE_DEFAULT]; /* the default bucket's tree: committed below */
    build(t, td, n, &rng);
    assert_true(td->depth >= 3);
    bucket_mark_dirty(t, 0);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            assert_int_equal(keel_commit(t), 0);
            assert_int_equal(keel_begin(db, KEEL_RDONLY, &t), 0);
            td = &t->meta.trees[TREE_DEFAULT];
            assert_int_equal(td->entries, (uint64_t)n);
            assert_true(td->depth >= 3);
        }
        keel_cursor c = {0};
        assert_int_equal(cursor_init(&c, t, 0, td), 0);
        keel_val k, v;
        uint8_t kb[KLEN];
        int rc = cursor_first(&c, &k, &v), seen = 0;
        for (; rc == 0 && seen < n + 1; seen++) {
            assert_entry(k, v, 2 * seen, 0);
            rc = cursor_next(&c, &k, &v);
        }
        assert_int_equal(rc, KEEL_NOTFOUND);
        assert_int_equal(seen, n);
        assert_int_equal(cursor_current(&c, &k, &v), 0); /* past the end: still on the last */
        assert_entry(k, v, 2 * (n - 1), 0);
        rc = cursor_last(&c, &k, &v);
        for (seen = 0; rc == 0 && seen < n + 1; seen++) {
            assert_entry(k, v, 2 * (n - 1 - seen), 0);
            rc = cursor_prev(&c, &k, &v);
        }
        assert_int_equal(rc, KEEL_NOTFOUND);
        assert_int_equal(seen, n);
        assert_int_equal(cursor_current(&c, &k, &v), 0);
        assert_entry(k, v, 0, 0);
        for (int i = 0; i < 2 * n - 1; i++) { /* on each key and between each pair */
            assert_int_equal(cursor_seek(&c, key_of(i, kb), &k, &v), 0);
            assert_entry(k, v, (i + 1) / 2 * 2, 0);
            if (i > 1) {
                assert_int_equal(cursor_prev(&c, &k, &v), 0);
                assert_entry(k, v, (i + 1) / 2 * 2 - 2, 0);
            }
        }
        assert_int_equal(cursor_seek(&c, key_of(2 * n - 1, kb), &k, &v), KEEL_NOTFOUND); /* after the last */
        assert_int_equal(cursor_current(&c, &k, &v), KEEL_BADCURSOR);
        os_free(c.keybuf);
        if (pass == 1)
            keel_abort(t);
    }
    close_db(db, path);
}

/* Cursors over buckets (no tree given: cursor_init with t == NULL looks the
 * bucket up): two buckets of different keys, each cursor sees only its own. */
static void test_buckets(void **state)
{
    (void)state;
    char path[256];
    keel_db *db = open_db(path, sizeof path, "cur-bucket");
    keel_txn *t;
    assert_int_equal(keel_begin(db, 0, &t), 0);
    keel_bucket a, b;
    assert_int_equal(keel_bucket_open(t, "a", KEEL_CREATE, &a), 0);
    assert_int_equal(keel_bucket_open(t, "b", KEEL_CREATE, &b), 0);
    uint8_t kb[KLEN], vb[MAXV];
    for (int i = 0; i < 60; i++) {
        keel_bucket x = i % 3 == 0 ? a : b;
        assert_int_equal(keel_put(t, x, key_of(i, kb), val_of(i, 0, vb), 0), 0);
    }
    assert_int_equal(keel_commit(t), 0);
    for (int w = 0; w < 2; w++) {
        assert_int_equal(keel_begin(db, w ? 0 : KEEL_RDONLY, &t), 0);
        assert_int_equal(keel_bucket_open(t, "a", 0, &a), 0);
        assert_int_equal(keel_bucket_open(t, "b", 0, &b), 0);
        keel_cursor ca = {0}, cb = {0};
        struct tree_desc *ta, *tb, *again;
        assert_int_equal(bucket_tree(t, a, &ta), 0);
        assert_int_equal(bucket_tree(t, b, &tb), 0);
        assert_int_equal(cursor_init(&ca, t, a, ta), 0);
        assert_int_equal(cursor_init(&cb, t, b, tb), 0);
        /* a hundred more buckets touched: the descriptors the cursors hold
         * do not move (bucket.c's chunks) */
        for (int i = 0; i < 100; i++) {
            char name[16];
            keel_bucket x;
            snprintf(name, sizeof name, "more%d", i);
            assert_int_equal(keel_bucket_open(t, name, w ? KEEL_CREATE : 0, &x), w ? 0 : KEEL_NOTFOUND);
        }
        assert_true(txn_bucket_states(t) >= (w ? 102u : 2u));
        assert_int_equal(bucket_tree(t, a, &again), 0);
        assert_ptr_equal(again, ta);
        keel_val k, v;
        int ia = 0, ib = 0, rc;
        for (rc = cursor_first(&ca, &k, &v); rc == 0 && ia < 60; rc = cursor_next(&ca, &k, &v), ia++)
            assert_entry(k, v, 3 * ia, 0);
        assert_int_equal(rc, KEEL_NOTFOUND);
        assert_int_equal(ia, 20);
        int want = 59; /* b holds the keys i % 3 != 0, walked backwards */
        for (rc = cursor_last(&cb, &k, &v); rc == 0 && ib < 60; rc = cursor_prev(&cb, &k, &v), ib++, want--) {
            if (want % 3 == 0)
                want--;
            assert_entry(k, v, want, 0);
        }
        assert_int_equal(rc, KEEL_NOTFOUND);
        assert_int_equal(ib, 40);
        assert_int_equal(want, 0);
        assert_int_equal(cursor_seek(&ca, key_of(4, kb), &k, &v), 0); /* 4 is in b: a's next is 6 */
        assert_entry(k, v, 6, 0);
        assert_int_equal(cursor_seek(&cb, key_of(3, kb), &k, &v), 0);
        assert_entry(k, v, 4, 0);
        if (w) { /* a change to b through the public API: cb re-seeks, ca is not disturbed */
            assert_int_equal(keel_del(t, b, key_of(4, kb)), 0);
            assert_int_equal(cursor_current(&cb, &k, &v), KEEL_NOTFOUND);
            assert_int_equal(cursor_next(&cb, &k, &v), 0);
            assert_entry(k, v, 5, 0);
            assert_int_equal(cursor_next(&ca, &k, &v), 0);
            assert_entry(k, v, 9, 0);
        }
        os_free(ca.keybuf);
        os_free(cb.keybuf);
        keel_abort(t);
    }
    close_db(db, path);
}

/* Changes in the cursor's own write txn: puts before and after it, the
 * deletion of its own entry and of its neighbours, a tree emptied and
 * filled again under it; and cursor_del then next/prev. */
static void test_own_changes(void **state)
{
    (void)state;
    char path[256];
    keel_db *db = open_db(path, sizeof path, "cur-changes");
    uint64_t rng = tu_seed(0xC0451);
    keel_txn *t;
    assert_int_equal(keel_begin(db, 0, &t), 0);
    struct tree_desc td = {0};
    build(t, &td, 200, &rng); /* 0, 2, ..., 398 */
    keel_cursor c = {0};
    assert_int_equal(cursor_init(&c, t, 0, &td), 0);
    keel_val k, v;
    uint8_t kb[KLEN];
    int64_t old = 1;

    assert_int_equal(cursor_seek(&c, key_of(100, kb), &k, &v), 0);
    assert_entry(k, v, 100, 0);
    uint64_t before = t->changes;
    put_key(t, &td, 101, 0); /* right after the cursor */
    put_key(t, &td, 99, 0);  /* right before it */
    assert_true(t->changes != before);
    assert_int_equal(cursor_current(&c, &k, &v), 0);
    assert_entry(k, v, 100, 0);
    assert_int_equal(cursor_next(&c, &k, &v), 0);
    assert_entry(k, v, 101, 0);
    assert_int_equal(cursor_prev(&c, &k, &v), 0);
    assert_entry(k, v, 100, 0);
    assert_int_equal(cursor_prev(&c, &k, &v), 0);
    assert_entry(k, v, 99, 0);
    put_key(t, &td, 99, 5); /* its own value replaced */
    assert_int_equal(cursor_current(&c, &k, &v), 0);
    assert_entry(k, v, 99, 5);

    /* its entry deleted from under it: current says so, next and prev go
     * to the neighbours */
    assert_int_equal(cursor_seek(&c, key_of(50, kb), &k, &v), 0);
    assert_int_equal(bt_del(t, &td, key_of(50, kb), NULL), 0);
    assert_int_equal(cursor_current(&c, &k, &v), KEEL_NOTFOUND);
    assert_int_equal(cursor_del(&c, &td, NULL, NULL), KEEL_NOTFOUND);
    assert_int_equal(cursor_next(&c, &k, &v), 0);
    assert_entry(k, v, 52, 0);
    assert_int_equal(cursor_seek(&c, key_of(60, kb), &k, &v), 0);
    assert_int_equal(bt_del(t, &td, key_of(60, kb), NULL), 0);
    assert_int_equal(cursor_prev(&c, &k, &v), 0);
    assert_entry(k, v, 58, 0);
    /* deleted and put back: the cursor is on it again */
    assert_int_equal(cursor_seek(&c, key_of(70, kb), &k, &v), 0);
    assert_int_equal(bt_del(t, &td, key_of(70, kb), NULL), 0);
    put_key(t, &td, 70, 3);
    assert_int_equal(cursor_current(&c, &k, &v), 0);
    assert_entry(k, v, 70, 3);
    assert_int_equal(cursor_next(&c, &k, &v), 0);
    assert_entry(k, v, 72, 0);

    /* cursor_del then next, then prev */
    assert_int_equal(cursor_seek(&c, key_of(80, kb), &k, &v), 0);
    assert_int_equal(cursor_del(&c, &td, &old, NULL), 0);
    assert_int_equal(old, 0);
    assert_int_equal(td.entries, 200 + 2 - 2 - 1); /* 99, 101 put; 50, 60, 80 deleted */
    assert_int_equal(c.keylen, KLEN); /* the deleted key stays in keybuf */
    assert_memory_equal(c.keybuf, key_of(80, kb).data, KLEN);
    assert_int_equal(bt_get(t, &td, key_of(80, kb), &v, NULL), KEEL_NOTFOUND);
    assert_int_equal(cursor_next(&c, &k, &v), 0);
    assert_entry(k, v, 82, 0);
    assert_int_equal(cursor_seek(&c, key_of(90, kb), &k, &v), 0);
    assert_int_equal(cursor_del(&c, &td, NULL, NULL), 0);
    assert_int_equal(cursor_prev(&c, &k, &v), 0);
    assert_entry(k, v, 88, 0);
    /* deleting a run forwards: del, next, del, next ... */
    assert_int_equal(cursor_seek(&c, key_of(200, kb), &k, &v), 0);
    for (int i = 200; i < 220; i += 2) {
        assert_entry(k, v, i, 0);
        assert_int_equal(cursor_del(&c, &td, NULL, NULL), 0);
        assert_int_equal(cursor_next(&c, &k, &v), 0);
    }
    assert_entry(k, v, 220, 0);
    /* and backwards from the last: the tree ends below the cursor */
    assert_int_equal(cursor_last(&c, &k, &v), 0);
    assert_entry(k, v, 398, 0);
    assert_int_equal(cursor_del(&c, &td, NULL, NULL), 0);
    assert_int_equal(cursor_next(&c, &k, &v), KEEL_NOTFOUND);
    assert_int_equal(cursor_prev(&c, &k, &v), 0);
    assert_entry(k, v, 396, 0);
    /* first deleted: prev finds nothing, next the new first */
    assert_int_equal(cursor_first(&c, &k, &v), 0);
    assert_entry(k, v, 0, 0);
    assert_int_equal(cursor_del(&c, &td, NULL, NULL), 0);
    assert_int_equal(cursor_prev(&c, &k, &v), KEEL_NOTFOUND);
    assert_int_equal(cursor_next(&c, &k, &v), 0);
    assert_entry(k, v, 2, 0);

    /* the whole tree emptied under the cursor, then one key after it put */
    assert_int_equal(cursor_seek(&c, key_of(300, kb), &k, &v), 0);
    for (int rc = cursor_first(&c, &k, NULL), guard = 0; rc == 0 && guard < 400; guard++) {
        assert_int_equal(cursor_del(&c, &td, NULL, NULL), 0);
        rc = cursor_next(&c, &k, NULL);
        if (rc)
            assert_int_equal(rc, KEEL_NOTFOUND);
    }
    assert_int_equal(td.entries, 0);
    assert_int_equal(td.root, 0);
    assert_int_equal(cursor_next(&c, &k, &v), KEEL_NOTFOUND);
    assert_int_equal(cursor_prev(&c, &k, &v), KEEL_NOTFOUND);
    put_key(t, &td, 500, 1);
    assert_int_equal(cursor_prev(&c, &k, &v), KEEL_NOTFOUND); /* 500 is after the cursor's last key */
    assert_int_equal(cursor_next(&c, &k, &v), 0);
    assert_entry(k, v, 500, 1);
    os_free(c.keybuf);
    keel_abort(t);
    close_db(db, path);
}

/* The model: key i present with version ver[i] (-1 = absent); the cursor
 * at key pos (present or deleted), or unpositioned. */
struct model {
    int n;
    int *ver;
    bool positioned;
    int pos;
};

static int model_next(const struct model *m, int from) /* first present > from, -1 if none */
{
    for (int i = from + 1; i < m->n; i++)
        if (m->ver[i] >= 0)
            return i;
    return -1;
}

static int model_prev(const struct model *m, int from) /* last present < from, -1 if none */
{
    for (int i = from - 1; i >= 0; i--)
        if (m->ver[i] >= 0)
            return i;
    return -1;
}

/* expect entry `want` (or KEEL_NOTFOUND when -1) and move the model there */
static void expect(struct model *m, int rc, keel_val k, keel_val v, int want, bool unset_on_miss)
{
    if (want < 0) {
        assert_int_equal(rc, KEEL_NOTFOUND);
        if (unset_on_miss)
            m->positioned = false;
        return;
    }
    assert_int_equal(rc, 0);
    assert_entry(k, v, want, m->ver[want]);
    m->positioned = true;
    m->pos = want;
}

/* A seeded random walk of puts, deletes (bt_del and cursor_del) and moves
 * in one write txn, each move checked against the model; then, committed,
 * the same walk of moves (no changes) in a read txn. */
static void test_model_walk(void **state)
{
    (void)state;
    char path[256];
    keel_db *db = open_db(path, sizeof path, "cur-model");
    uint64_t seed = tu_seed(0xC0452), rng = seed;
    struct model m = {.n = 600};
    m.ver = malloc((size_t)m.n * sizeof *m.ver);
    assert_non_null(m.ver);
    for (int i = 0; i < m.n; i++)
        m.ver[i] = -1;
    long steps = 6000 * tu_scale();
    uint8_t kb[KLEN];
    keel_val k = {0}, v = {0};
    int maxdepth = 0;
    for (int phase = 0; phase < 2; phase++) {
        bool rd = phase == 1;
        keel_txn *t;
        assert_int_equal(keel_begin(db, rd ? KEEL_RDONLY : 0, &t), 0);
        struct tree_desc *td = &t->meta.trees[TREE_DEFAULT];
        keel_cursor c = {0};
        assert_int_equal(cursor_init(&c, t, 0, td), 0);
        m.positioned = false;
        for (long s = 0; s < steps; s++) {
            unsigned op = (unsigned)(tu_rand(&rng) % 100);
            int i = (int)(tu_rand(&rng) % (uint64_t)m.n), rc;
            if (rd && op < 45)
                op = 45 + op % 55; /* no changes in the read txn */
            if (op < 25) { /* put */
                int ver = m.ver[i] + 1 + (int)(tu_rand(&rng) % 3);
                put_key(t, td, i, ver);
                m.ver[i] = ver;
            } else if (op < 37) { /* delete */
                rc = bt_del(t, td, key_of(i, kb), NULL);
                assert_int_equal(rc, m.ver[i] >= 0 ? 0 : KEEL_NOTFOUND);
                m.ver[i] = -1;
            } else if (op < 45) { /* cursor_del (keel_cursor_del refuses an unpositioned cursor first) */
                if (!m.positioned)
                    continue;
                rc = cursor_del(&c, td, NULL, NULL);
                if (m.ver[m.pos] < 0)
                    assert_int_equal(rc, KEEL_NOTFOUND);
                else {
                    assert_int_equal(rc, 0);
                    m.ver[m.pos] = -1;
                }
            } else if (op < 62) {
                rc = cursor_next(&c, &k, &v);
                expect(&m, rc, k, v, m.positioned ? model_next(&m, m.pos) : model_next(&m, -1), false);
            } else if (op < 79) {
                rc = cursor_prev(&c, &k, &v);
                expect(&m, rc, k, v, m.positioned ? model_prev(&m, m.pos) : model_prev(&m, m.n), false);
            } else if (op < 93) {
                rc = cursor_seek(&c, key_of(i, kb), &k, &v);
                expect(&m, rc, k, v, model_next(&m, i - 1), true);
            } else if (op < 95) {
                rc = cursor_first(&c, &k, &v);
                expect(&m, rc, k, v, model_next(&m, -1), true);
            } else if (op < 97) {
                rc = cursor_last(&c, &k, &v);
                expect(&m, rc, k, v, model_prev(&m, m.n), true);
            } else {
                rc = cursor_current(&c, &k, &v);
                if (!m.positioned)
                    assert_int_equal(rc, KEEL_BADCURSOR);
                else if (m.ver[m.pos] < 0)
                    assert_int_equal(rc, KEEL_NOTFOUND);
                else {
                    assert_int_equal(rc, 0);
                    assert_entry(k, v, m.pos, m.ver[m.pos]);
                }
            }
            if ((int)td->depth > maxdepth)
                maxdepth = (int)td->depth;
        }
        int count = 0;
        for (int i = 0; i < m.n; i++)
            count += m.ver[i] >= 0;
        assert_int_equal(td->entries, (uint64_t)count);
        os_free(c.keybuf);
        if (rd) {
            keel_abort(t);
        } else {
            bucket_mark_dirty(t, 0);
            assert_int_equal(keel_commit(t), 0);
        }
    }
    fprintf(stderr, "model walk: seed 0x%llx, %ld steps a phase, depth up to %d\n", (unsigned long long)seed,
            steps, maxdepth);
    assert_true(maxdepth >= 3);
    free(m.ver);
    close_db(db, path);
}

/* keel_cursor_del goes through the write path like keel_del: a txn that
 * deletes a whole bucket through a cursor spills its dirty pages, and the
 * expiry index loses the deleted keys' entries. */
static void test_del_loop_spills(void **state)
{
    (void)state;
    char path[256];
    tu_path(path, sizeof path, "cur-del-spill");
    keel_options o = {.page_size = 4096, .flags = KEEL_NOSYNC, .max_dirty = 64 << 10};
    keel_db *db;
    assert_int_equal(keel_open(path, &o, &db), 0);
    enum { N = 20000 };
    keel_txn *t;
    assert_int_equal(keel_begin(db, 0, &t), 0);
    uint8_t kb[KLEN], vb[MAXV];
    for (int i = 0; i < N; i++) /* half the keys expire in an hour */
        assert_int_equal(i % 2 ? keel_put_ttl(t, 0, key_of(i, kb), val_of(i, 1, vb), 3600000, 0)
                               : keel_put(t, 0, key_of(i, kb), val_of(i, 1, vb), 0),
                         0);
    assert_int_equal(keel_commit(t), 0);

    assert_int_equal(keel_begin(db, 0, &t), 0);
    keel_cursor *c;
    assert_int_equal(keel_cursor_open(t, 0, &c), 0);
    keel_val k, v;
    size_t most = 0, deleted = 0;
    /* every other key: the leaves stay half full, none is merged away */
    for (int rc = keel_cursor_first(c, &k, &v); rc == 0; rc = keel_cursor_next(c, &k, &v)) {
        assert_int_equal(keel_cursor_del(c), 0);
        deleted++;
        if (t->dirty_bytes > most)
            most = t->dirty_bytes;
        if (keel_cursor_next(c, &k, &v))
            break;
    }
    assert_int_equal(deleted, N / 2);
    /* every leaf and branch page is copied: megabytes, unless spilled */
    assert_true(most < 2 * o.max_dirty + 20000);
    keel_cursor_close(c);
    assert_int_equal(keel_commit(t), 0);
    keel_stat st;
    assert_int_equal(keel_db_stat(db, &st), 0);
    assert_int_equal(st.entries, N / 2);
    close_db(db, path); /* keel_check: no expiry entry left without its key */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_tree),  cmocka_unit_test(test_one_leaf),    cmocka_unit_test(test_multi_level),
        cmocka_unit_test(test_buckets),     cmocka_unit_test(test_own_changes), cmocka_unit_test(test_model_walk),
        cmocka_unit_test(test_del_loop_spills),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
