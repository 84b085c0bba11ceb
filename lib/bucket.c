/*
 * bucket.c — named buckets: handles, the catalog tree, per-txn descriptors.
 *
 * Contract:
 *   - The default bucket's descriptor lives in the meta page; named buckets'
 *     descriptors are values in the catalog tree, keyed by name.
 *   - A handle (keel_bucket) is an index into the db's table of names; it is
 *     valid for the db's life.  Whether the bucket exists is a question for
 *     each txn: a handle whose bucket is absent from the txn's snapshot (not
 *     yet created, or dropped) gives KEEL_BADBUCKET.
 *   - A write txn changes its copy of a descriptor; bucket_flush() writes
 *     changed ones back to the catalog at commit.
 */
#include <string.h>

#include "internal.h"

static int grow_states(keel_txn *txn, uint32_t need)
{
    if (need <= txn->nbuckets_cap)
        return 0;
    uint32_t cap = txn->nbuckets_cap ? txn->nbuckets_cap : 8;
    while (cap < need)
        cap *= 2;
    struct bucket_state *s = os_realloc(txn->buckets, cap * sizeof(*s));
    if (!s)
        return KEEL_NOMEM;
    memset(s + txn->nbuckets_cap, 0, (cap - txn->nbuckets_cap) * sizeof(*s));
    txn->buckets = s;
    txn->nbuckets_cap = cap;
    return 0;
}

static const char *handle_name(keel_db *db, keel_bucket b)
{
    const char *name = NULL;
    pthread_mutex_lock(&db->mu);
    if (b < db->nbuckets)
        name = db->bucket_names[b];
    pthread_mutex_unlock(&db->mu);
    return name;
}

static int desc_from_value(keel_txn *txn, keel_val v, struct tree_desc *d)
{
    if (v.len != TREE_DESC_SIZE)
        return KEEL_CORRUPTED;
    memcpy(d, v.data, TREE_DESC_SIZE);
    if ((d->root && (d->root < 2 || d->root >= txn->meta.npages)) || d->depth > KEEL_MAX_DEPTH ||
        (d->root == 0) != (d->depth == 0) || d->id == 0)
        return KEEL_CORRUPTED;
    return 0;
}

/* Load the txn's view of bucket b from the catalog if not yet known. */
static int load_state(keel_txn *txn, keel_bucket b, struct bucket_state **out)
{
    /* a handle the db never gave out: answer before sizing the table by it
     * (b + 1 wraps at UINT32_MAX, and grow_states' doubling loops past 2^31) */
    if (!handle_name(txn->db, b))
        return KEEL_BADBUCKET;
    int rc = grow_states(txn, b + 1);
    if (rc)
        return rc;
    struct bucket_state *s = &txn->buckets[b];
    if (s->state == BUCKET_UNKNOWN) {
        const char *name = handle_name(txn->db, b);
        if (!name)
            return KEEL_BADBUCKET;
        keel_val v;
        rc = bt_get(txn, &txn->meta.trees[TREE_CATALOG], (keel_val){name, strlen(name)}, &v, NULL);
        if (rc == KEEL_NOTFOUND) {
            s->state = BUCKET_ABSENT;
        } else if (rc) {
            return rc;
        } else {
            if ((rc = desc_from_value(txn, v, &s->desc)))
                return rc;
            s->state = BUCKET_PRESENT;
        }
    }
    *out = s;
    return 0;
}

int bucket_tree(keel_txn *txn, keel_bucket b, struct tree_desc **out)
{
    if (b == KEEL_DEFAULT_BUCKET) {
        *out = &txn->meta.trees[TREE_DEFAULT];
        return 0;
    }
    struct bucket_state *s;
    if (b < txn->nbuckets_cap && txn->buckets[b].state == BUCKET_PRESENT) { /* the common case */
        *out = &txn->buckets[b].desc;
        return 0;
    }
    int rc = load_state(txn, b, &s);
    if (rc)
        return rc;
    if (s->state != BUCKET_PRESENT)
        return KEEL_BADBUCKET;
    *out = &s->desc;
    return 0;
}

void bucket_mark_dirty(keel_txn *txn, keel_bucket b)
{
    if (b != KEEL_DEFAULT_BUCKET && b < txn->nbuckets_cap)
        txn->buckets[b].dirty = true;
}

static int find_or_add_handle(keel_db *db, const char *name, keel_bucket *out)
{
    int rc = 0;
    pthread_mutex_lock(&db->mu);
    for (uint32_t i = 1; i < db->nbuckets; i++) {
        if (strcmp(db->bucket_names[i], name) == 0) {
            *out = i;
            goto done;
        }
    }
    if (db->nbuckets == db->bucket_cap) {
        uint32_t cap = db->bucket_cap * 2;
        char **n = os_realloc(db->bucket_names, cap * sizeof(char *));
        if (!n) {
            rc = KEEL_NOMEM;
            goto done;
        }
        db->bucket_names = n;
        db->bucket_cap = cap;
    }
    char *copy = os_strdup(name);
    if (!copy) {
        rc = KEEL_NOMEM;
        goto done;
    }
    db->bucket_names[db->nbuckets] = copy;
    *out = db->nbuckets++;
done:
    pthread_mutex_unlock(&db->mu);
    return rc;
}

int bucket_open(keel_txn *txn, const char *name, unsigned flags, keel_bucket *out)
{
    if (!name) {
        *out = KEEL_DEFAULT_BUCKET;
        return 0;
    }
    keel_bucket b;
    int rc = find_or_add_handle(txn->db, name, &b);
    if (rc)
        return rc;
    struct bucket_state *s;
    if ((rc = load_state(txn, b, &s)))
        return rc;
    if (s->state != BUCKET_PRESENT) {
        if (!(flags & KEEL_CREATE))
            return KEEL_NOTFOUND;
        if (txn->rdonly)
            return KEEL_READONLY;
        memset(&s->desc, 0, sizeof(s->desc));
        if (txn->meta.next_bucket_id == 0)
            txn->meta.next_bucket_id = 1;
        if (txn->meta.next_bucket_id > UINT32_MAX)
            return KEEL_FULL;
        s->desc.id = (uint32_t)txn->meta.next_bucket_id++;
        s->state = BUCKET_PRESENT;
        s->dirty = true;
    }
    *out = b;
    return 0;
}

int bucket_drop(keel_txn *txn, keel_bucket b)
{
    struct tree_desc *t;
    int rc = bucket_tree(txn, b, &t);
    if (rc)
        return rc;
    if ((rc = bt_drop(txn, t)))
        return rc;
    if (b != KEEL_DEFAULT_BUCKET) {
        txn->buckets[b].state = BUCKET_ABSENT;
        txn->buckets[b].dirty = true;
    }
    return 0;
}

int bucket_flush(keel_txn *txn)
{
    for (uint32_t b = 1; b < txn->nbuckets_cap; b++) {
        struct bucket_state *s = &txn->buckets[b];
        if (!s->dirty)
            continue;
        const char *name = handle_name(txn->db, b);
        keel_val k = {name, strlen(name)};
        int rc;
        if (s->state == BUCKET_PRESENT)
            rc = bt_put(txn, &txn->meta.trees[TREE_CATALOG], k, (keel_val){&s->desc, TREE_DESC_SIZE}, 0, 0,
                        NULL);
        else {
            rc = bt_del(txn, &txn->meta.trees[TREE_CATALOG], k, NULL);
            if (rc == KEEL_NOTFOUND)
                rc = 0;
        }
        if (rc)
            return rc;
        s->dirty = false;
    }
    return 0;
}

int bucket_list(keel_txn *txn, int (*fn)(const char *name, void *ctx), void *ctx)
{
    int rc;
    if (!txn->rdonly && (rc = bucket_flush(txn)))
        return rc;
    keel_cursor c;
    memset(&c, 0, sizeof(c));
    cursor_init(&c, txn, 0, &txn->meta.trees[TREE_CATALOG]);
    keel_val k;
    char name[KEEL_MAX_BUCKET_NAME + 1];
    for (rc = cursor_first(&c, &k, NULL); rc == 0; rc = cursor_next(&c, &k, NULL)) {
        if (k.len > KEEL_MAX_BUCKET_NAME) {
            rc = KEEL_CORRUPTED;
            break;
        }
        memcpy(name, k.data, k.len);
        name[k.len] = 0;
        if ((rc = fn(name, ctx)))
            break;
    }
    os_free(c.keybuf);
    return rc == KEEL_NOTFOUND ? 0 : rc;
}
