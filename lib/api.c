/*
 * api.c — the public functions of include/keel.h: argument checks, then a
 * call into the layer that does the work.  keel_open, keel_open_sized and
 * keel_close are in db.c, with the open and close path they enter;
 * ops.c, copy.c and check.c hold theirs.
 *
 * Contract: every public function checks its arguments before anything else
 * and answers with a distinct code.  A write operation that fails after it
 * began changing pages poisons its txn (only abort remains), so a failed
 * call never reaches the disk.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- txns ---- */
int keel_begin(keel_db *db, unsigned flags, keel_txn **out)
{
    if (!out)
        return KEEL_BADARG;
    *out = NULL;
    if (!db)
        return KEEL_BADARG;
    return txn_begin(db, flags, out);
}

int keel_begin_nested(keel_txn *parent, keel_txn **child)
{
    if (!child)
        return KEEL_BADARG;
    *child = NULL;
    int rc = txn_check(parent, true); /* a read txn: KEEL_READONLY; a shell: KEEL_BADTXN */
    if (rc)
        return rc;
    return txn_begin_nested(parent, child);
}

int keel_commit(keel_txn *txn)
{
    if (!txn)
        return KEEL_BADARG;
    if (txn->magic == TXN_PARENT) /* nothing ends: the child is still the caller's */
        return error_live_child();
    if (txn->magic != TXN_MAGIC)
        return KEEL_BADTXN;
    int rc = txn_check(txn, false);
    if (rc) {
        txn_abort(txn);
        return rc;
    }
    return txn_commit(txn);
}

void keel_abort(keel_txn *txn)
{
    if (!txn || (txn->magic != TXN_MAGIC && txn->magic != TXN_PARENT))
        return;
    txn_abort(txn); /* and its children */
}

uint64_t keel_txn_id(const keel_txn *txn)
{
    if (!txn || (txn->magic != TXN_MAGIC && txn->magic != TXN_PARENT))
        return 0;
    return txn->txnid;
}

/* ---- buckets ---- */
int keel_bucket_open(keel_txn *txn, const char *name, unsigned flags, keel_bucket *out)
{
    int rc = txn_check(txn, false);
    if (rc)
        return rc;
    if (!out)
        return KEEL_BADARG;
    if (flags & ~(KEEL_CREATE | KEEL_DUPSORT))
        return KEEL_BADFLAGS;
    if (name && (!*name || strlen(name) > KEEL_MAX_BUCKET_NAME))
        return KEEL_BADNAME;
    return bucket_open(txn, name, flags, out);
}

int keel_bucket_drop(keel_txn *txn, keel_bucket b)
{
    int rc = txn_check(txn, true);
    if (rc)
        return rc;
    return kv_drop_bucket(txn, b);
}

int keel_bucket_list(keel_txn *txn, int (*fn)(const char *name, void *ctx), void *ctx)
{
    int rc = txn_check(txn, false);
    if (rc)
        return rc;
    if (!fn)
        return KEEL_BADARG;
    return bucket_list(txn, fn, ctx);
}

int keel_bucket_flags(keel_txn *txn, keel_bucket b, unsigned *flags)
{
    int rc = txn_check(txn, false);
    if (rc)
        return rc;
    return flags ? bucket_flags(txn, b, flags) : KEEL_BADARG;
}

/* ---- data ---- */
size_t keel_max_key_size(const keel_db *db) { return db ? db->max_key : 0; }
size_t keel_max_pair_size(const keel_db *db) { return db ? db->max_counted_pair_key - PAIR_TERM_SIZE : 0; }

int check_key(keel_txn *txn, keel_val key)
{
    if (!key.data && key.len)
        return KEEL_BADARG;
    if (key.len == 0 || key.len > txn->db->max_key)
        return KEEL_BADVALSIZE;
    return 0;
}

int keel_get(keel_txn *txn, keel_bucket b, keel_val key, keel_val *val)
{
    int rc = txn_check(txn, false);
    if (rc)
        return rc;
    if (!val)
        return KEEL_BADARG;
    if ((rc = check_key(txn, key)))
        return rc;
    return kv_get(txn, b, key, val, NULL);
}

int keel_put(keel_txn *txn, keel_bucket b, keel_val key, keel_val val, unsigned flags)
{
    int rc = txn_check(txn, true);
    if (rc)
        return rc;
    if (flags & ~(KEEL_NOOVERWRITE | KEEL_APPEND | KEEL_KEEPTTL | KEEL_NODUPDATA))
        return KEEL_BADFLAGS;
    if ((rc = check_key(txn, key)))
        return rc;
    if (!val.data && val.len)
        return KEEL_BADARG;
    if (val.len > KEEL_MAX_VALUE_SIZE)
        return KEEL_BADVALSIZE;
    return kv_put(txn, b, key, val, 0, flags);
}

int keel_del_value(keel_txn *txn, keel_bucket b, keel_val key, keel_val val)
{
    int rc = txn_check(txn, true);
    if (rc)
        return rc;
    if ((rc = check_key(txn, key)))
        return rc;
    if (!val.data && val.len)
        return KEEL_BADARG;
    return kv_del_value(txn, b, key, val);
}

int keel_del(keel_txn *txn, keel_bucket b, keel_val key)
{
    int rc = txn_check(txn, true);
    if (rc)
        return rc;
    if ((rc = check_key(txn, key)))
        return rc;
    return kv_del(txn, b, key);
}

/* ---- cursors ---- */
static int cursor_check(keel_cursor *c)
{
    if (!c)
        return KEEL_BADARG;
    if (c->magic != CURSOR_MAGIC || !c->txn)
        return KEEL_BADCURSOR;
    return txn_check(c->txn, false);
}

int keel_cursor_open(keel_txn *txn, keel_bucket b, keel_cursor **out)
{
    if (!out)
        return KEEL_BADARG;
    *out = NULL;
    int rc = txn_check(txn, false);
    if (rc)
        return rc;
    struct tree_desc *t;
    if ((rc = bucket_tree(txn, b, &t)))
        return rc;
    keel_db *db = txn->db;
    /* a short range opens and closes a cursor per query: one spare is taken
     * and given back with an atomic exchange, more go through the lock */
    keel_cursor *c = __atomic_exchange_n(&db->spare_cursor, NULL, __ATOMIC_ACQUIRE);
    if (!c) {
        pthread_mutex_lock(&db->mu);
        c = db->spare_cursors;
        if (c)
            db->spare_cursors = c->next;
        pthread_mutex_unlock(&db->mu);
    }
    if (!c && !(c = os_calloc(sizeof(*c))))
        return KEEL_NOMEM;
    cursor_init(c, txn, b, t);
    c->magic = CURSOR_MAGIC;
    c->prev = NULL;
    c->next = txn->cursors;
    if (txn->cursors)
        txn->cursors->prev = c;
    txn->cursors = c;
    *out = c;
    return 0;
}

void keel_cursor_close(keel_cursor *c)
{
    if (!c || c->magic != CURSOR_MAGIC)
        return;
    keel_txn *txn = c->txn;
    keel_db *db = NULL;
    if (txn) {
        if (c->prev)
            c->prev->next = c->next;
        else
            txn->cursors = c->next;
        if (c->next)
            c->next->prev = c->prev;
        db = txn->db;
    }
    c->magic = CURSOR_DEAD;
    c->txn = NULL;
    if (!db) { /* detached from a finished txn: we do not know its db any more */
        cursor_release(c);
        os_free(c);
        return;
    }
    keel_cursor *none = NULL;
    if (__atomic_compare_exchange_n(&db->spare_cursor, &none, c, false, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
        return;
    pthread_mutex_lock(&db->mu);
    c->next = db->spare_cursors;
    db->spare_cursors = c;
    pthread_mutex_unlock(&db->mu);
}

#define CURSOR_OP(name, fn)                                             \
    int name(keel_cursor *c, keel_val *key, keel_val *val)              \
    {                                                                   \
        int rc = cursor_check(c);                                       \
        return rc ? rc : fn(c, key, val);                               \
    }
CURSOR_OP(keel_cursor_first, cursor_first)
CURSOR_OP(keel_cursor_last, cursor_last)
CURSOR_OP(keel_cursor_next, cursor_next)
CURSOR_OP(keel_cursor_prev, cursor_prev)
CURSOR_OP(keel_cursor_current, cursor_current)

int keel_cursor_expiry(keel_cursor *c, int64_t *unix_ms)
{
    int rc = cursor_check(c);
    if (rc)
        return rc;
    return unix_ms ? cursor_expiry(c, unix_ms) : KEEL_BADARG;
}

int keel_cursor_seek(keel_cursor *c, keel_val key, keel_val *key_out, keel_val *val_out)
{
    int rc = cursor_check(c);
    if (rc)
        return rc;
    if ((rc = check_key(c->txn, key)))
        return rc;
    return cursor_seek(c, key, key_out, val_out);
}

int keel_cursor_seek_key(keel_cursor *c, keel_val key, keel_val *val_out)
{
    int rc = cursor_check(c);
    if (rc || (rc = check_key(c->txn, key)))
        return rc;
    return cursor_seek_key(c, key, val_out);
}

int keel_cursor_seek_pair(keel_cursor *c, keel_val key, keel_val val, keel_val *key_out, keel_val *val_out)
{
    int rc = cursor_check(c);
    if (rc || (rc = check_key(c->txn, key)))
        return rc;
    if (!val.data && val.len)
        return KEEL_BADARG;
    return cursor_seek_pair(c, key, val, key_out, val_out);
}

#define CURSOR_MOVE(name, fn, dir)                                      \
    int name(keel_cursor *c, keel_val *key, keel_val *val)              \
    {                                                                   \
        int rc = cursor_check(c);                                       \
        return rc ? rc : fn(c, key, val, dir);                          \
    }
CURSOR_MOVE(keel_cursor_next_dup, cursor_move_dup, 1)
CURSOR_MOVE(keel_cursor_prev_dup, cursor_move_dup, -1)
CURSOR_MOVE(keel_cursor_next_key, cursor_move_key, 1)
CURSOR_MOVE(keel_cursor_prev_key, cursor_move_key, -1)

int keel_cursor_count(keel_cursor *c, uint64_t *count)
{
    int rc = cursor_check(c);
    if (rc)
        return rc;
    return count ? cursor_count(c, count) : KEEL_BADARG;
}

int keel_cursor_del(keel_cursor *c)
{
    int rc = cursor_check(c);
    if (rc)
        return rc;
    if (c->txn->rdonly)
        return KEEL_READONLY;
    /* misuse changes nothing: answered before the write path could poison
     * the txn (kv_cursor_del answers a bucket dropped under the cursor) */
    if (c->state == CUR_UNSET)
        return KEEL_BADCURSOR;
    return kv_cursor_del(c);
}

/* ---- statistics ---- */
static void add_tree(keel_stat *st, const struct tree_desc *t)
{
    st->entries += t->entries;
    st->branch_pages += t->branch_pages;
    st->leaf_pages += t->leaf_pages;
    st->overflow_pages += t->overflow_pages;
    if (t->depth > st->depth)
        st->depth = t->depth;
}

static int add_bucket(const char *name, const struct tree_desc *t, void *ctx)
{
    (void)name;
    if (!t)
        return CORRUPT(0);
    add_tree(ctx, t);
    return 0;
}

int keel_db_stat(keel_db *db, keel_stat *st)
{
    if (!db || !st)
        return KEEL_BADARG;
    keel_txn *txn;
    int rc = txn_begin(db, KEEL_RDONLY, &txn);
    if (rc)
        return rc;
    memset(st, 0, sizeof(*st));
    st->page_size = db->psize;
    add_tree(st, &txn->meta.trees[TREE_DEFAULT]);
    rc = bucket_walk(txn, add_bucket, st); /* makes no handles */
    /* the internal trees count as pages, not as entries */
    for (int i = TREE_CATALOG; i < TREE_COUNT; i++) {
        st->branch_pages += txn->meta.trees[i].branch_pages;
        st->leaf_pages += txn->meta.trees[i].leaf_pages;
        st->overflow_pages += txn->meta.trees[i].overflow_pages;
    }
    st->free_pages = txn->meta.free_pages;
    st->last_txnid = txn->meta.txnid;
    uint64_t fsize = 0;
    if (!rc)
        rc = os_file_size(db->fd, &fsize);
    st->file_size = fsize;
    txn_abort(txn);
    return rc;
}

int keel_bucket_stat(keel_txn *txn, keel_bucket b, keel_stat *st)
{
    int rc = txn_check(txn, false);
    if (rc)
        return rc;
    if (!st)
        return KEEL_BADARG;
    struct tree_desc *t;
    if ((rc = bucket_tree(txn, b, &t)))
        return rc;
    memset(st, 0, sizeof(*st));
    st->page_size = txn->db->psize;
    add_tree(st, t);
    st->last_txnid = txn->meta.txnid;
    st->free_pages = txn->meta.free_pages;
    return os_file_size(txn->db->fd, &st->file_size);
}

int keel_db_readers(keel_db *db, keel_reader_info *out, size_t max, size_t *count)
{
    if (!db || !count || (max && !out))
        return KEEL_BADARG;
    struct meta m;
    int rc = meta_newest_visible(db, &m, NULL);
    if (rc)
        return rc;
    return readers_list(&db->lock, m.txnid, txn_clock_ms(db), out, max, count);
}
