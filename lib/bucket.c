/*
 * bucket.c — named buckets: handles, the catalog tree, per-txn descriptors.
 *
 * Contract:
 *   - The default bucket's descriptor lives in the meta page; named buckets'
 *     descriptors are values in the catalog tree, keyed by name.
 *   - A handle (keel_bucket) is a slot of the db's handle table, which holds
 *     a bucket name: slot number and generation (internal.h).  In each txn
 *     the handle reaches the bucket of that name in the txn's snapshot; a
 *     handle whose bucket is absent from it gives KEEL_BADBUCKET.
 *   - A slot is live while its name may exist.  When a write txn ends with
 *     the name absent (dropped, or its creation aborted), the slot dies: it
 *     serves only read txns whose snapshot is older than that end, and is
 *     freed once none of them is left, its generation one up.  A handle of
 *     an older generation gives KEEL_BADBUCKET forever: a slot that used up
 *     its generations is retired, never reused.  The same name created
 *     again gets another slot.
 *   - Finding a handle by name is a hash lookup; a txn's bucket states are
 *     a table on the handle, and commit and end visit only the states of the
 *     buckets the txn touched.
 *   - The handle table is shared by the db's txns, in any thread, under
 *     db->mu; what a txn needs of a slot it copies under the lock.
 *   - A write txn changes its copy of a descriptor; bucket_flush() writes
 *     changed ones back to the catalog at commit.
 */
#include <string.h>
#include <xxhash.h>

#include "internal.h"

#define TABLE_MIN_SLOTS 16 /* slots the handle table starts with */
#define INDEX_MIN_CAP 16   /* entries a hash index starts with (a power of two) */
#define QUEUE_MIN 16       /* dead-slot queue entries it starts with */
#define STATES_MIN 8       /* bucket states a txn starts with */
#define STATES_KEPT 1024   /* a finished txn keeps memory for this many states; beyond, it is freed */

enum { SLOT_FREE, SLOT_LIVE, SLOT_DEAD, SLOT_RETIRED };

struct bucket_slot {
    char *name;          /* live and dead slots */
    uint64_t dead_since; /* dead: snapshots from this txn id on may not use the slot */
    union {
        uint32_t hash;      /* live and dead: of the name */
        uint32_t next_free; /* free: the next free slot, 0 = none */
    };
    uint8_t generation;
    uint8_t kind;
};

static uint32_t name_hash(const char *name, size_t len) { return (uint32_t)XXH3_64bits(name, len); }

/* Handles are mostly consecutive numbers: spread them over the index. */
static uint32_t handle_hash(keel_bucket b)
{
    uint32_t x = b;
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    return x;
}

static keel_bucket make_handle(const struct bucket_table *t, uint32_t slot)
{
    return (keel_bucket)t->slots[slot].generation << BUCKET_INDEX_BITS | slot;
}

/* The snapshot a txn reads: the txn id of the newest commit it sees. */
static uint64_t snapshot_of(const keel_txn *txn) { return txn->rdonly ? txn->txnid : txn->txnid - 1; }

/* ---- name indexes: open addressing with linear probing ------------------ */

static void index_put(const struct bucket_table *t, struct name_index *ix, uint32_t slot)
{
    uint32_t mask = ix->cap - 1, i = t->slots[slot].hash & mask;
    while (ix->v[i])
        i = (i + 1) & mask;
    ix->v[i] = slot;
    ix->n++;
}

/* Room for one more entry, so that index_put cannot fail. */
static int index_reserve(const struct bucket_table *t, struct name_index *ix)
{
    if ((ix->n + 1) * 2 <= ix->cap)
        return 0;
    uint32_t cap = ix->cap ? ix->cap * 2 : INDEX_MIN_CAP;
    uint32_t *v = os_calloc((size_t)cap * sizeof(*v));
    if (!v)
        return KEEL_NOMEM;
    struct name_index old = *ix;
    *ix = (struct name_index){v, cap, 0};
    for (uint32_t i = 0; i < old.cap; i++)
        if (old.v[i])
            index_put(t, ix, old.v[i]);
    os_free(old.v);
    return 0;
}

/* Removes slot, moving later entries of its probe run back into the hole,
 * so lookups never need tombstones. */
static void index_remove(const struct bucket_table *t, struct name_index *ix, uint32_t slot)
{
    uint32_t mask = ix->cap - 1, i = t->slots[slot].hash & mask;
    while (ix->v[i] != slot)
        i = (i + 1) & mask;
    for (uint32_t j = (i + 1) & mask; ix->v[j]; j = (j + 1) & mask) {
        uint32_t home = t->slots[ix->v[j]].hash & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) { /* the hole lies on its probe run */
            ix->v[i] = ix->v[j];
            i = j;
        }
    }
    ix->v[i] = 0;
    ix->n--;
}

/* A slot of ix named `name`; with dead_after, only one that txns at that
 * snapshot may still use.  0 if none. */
static uint32_t index_find(const struct bucket_table *t, const struct name_index *ix, const char *name,
                           uint32_t hash, const uint64_t *dead_after)
{
    if (!ix->cap)
        return 0;
    uint32_t mask = ix->cap - 1;
    for (uint32_t i = hash & mask; ix->v[i]; i = (i + 1) & mask) {
        const struct bucket_slot *s = &t->slots[ix->v[i]];
        if (s->hash == hash && strcmp(s->name, name) == 0 && (!dead_after || s->dead_since > *dead_after))
            return ix->v[i];
    }
    return 0;
}

/* ---- the handle table (all under db->mu) -------------------------------- */

/* The slot a handle names, if a txn at this snapshot may use it: a live
 * one, or for a read txn a dead one that died after its snapshot. */
static struct bucket_slot *usable_slot(const struct bucket_table *t, keel_bucket b, const keel_txn *txn)
{
    uint32_t i = bucket_index(b);
    if (i == 0 || i >= t->n)
        return NULL;
    struct bucket_slot *s = &t->slots[i];
    if (s->generation != b >> BUCKET_INDEX_BITS)
        return NULL;
    if (s->kind == SLOT_LIVE || (s->kind == SLOT_DEAD && txn->rdonly && s->dead_since > snapshot_of(txn)))
        return s;
    return NULL;
}

/* The handle a txn gets for a name: the live slot, else (read txns) a dead
 * one its snapshot may still see, so an old reader adds no slot for a name
 * that is gone.  0 if none. */
static keel_bucket find_handle(const struct bucket_table *t, const keel_txn *txn, const char *name, uint32_t hash)
{
    uint32_t i = index_find(t, &t->live, name, hash, NULL);
    if (!i && txn->rdonly) {
        uint64_t snap = snapshot_of(txn);
        i = index_find(t, &t->dead, name, hash, &snap);
    }
    return i ? make_handle(t, i) : 0;
}

static int add_slot(struct bucket_table *t, const char *name, uint32_t hash, keel_bucket *out)
{
    int rc = index_reserve(t, &t->live);
    if (rc)
        return rc;
    if (!t->free_head && t->n == t->cap) {
        if (t->cap > BUCKET_INDEX_MASK)
            return KEEL_FULL; /* every slot number is in use or retired */
        uint32_t cap = t->cap ? t->cap * 2 : TABLE_MIN_SLOTS;
        if (cap > BUCKET_INDEX_MASK + 1)
            cap = BUCKET_INDEX_MASK + 1;
        struct bucket_slot *s = os_realloc(t->slots, (size_t)cap * sizeof(*s));
        if (!s)
            return KEEL_NOMEM;
        t->slots = s;
        t->cap = cap;
    }
    char *copy = os_strdup(name);
    if (!copy)
        return KEEL_NOMEM;
    uint32_t i = t->free_head;
    if (i) {
        t->free_head = t->slots[i].next_free;
    } else {
        if (t->n == 0)
            t->n = 1; /* slot 0 stays unused */
        i = t->n++;
        t->slots[i].generation = 0;
    }
    struct bucket_slot *s = &t->slots[i];
    s->name = copy;
    s->hash = hash;
    s->kind = SLOT_LIVE;
    s->dead_since = 0;
    index_put(t, &t->live, i);
    *out = make_handle(t, i);
    return 0;
}

/* A live slot whose name is absent from the newest commit at `since`: only
 * older snapshots may use it now.  Without memory to track it, it stays
 * live, which only delays its reuse. */
static void kill_slot(struct bucket_table *t, keel_bucket b, uint64_t since)
{
    uint32_t i = bucket_index(b);
    struct bucket_slot *s = &t->slots[i];
    if (s->kind != SLOT_LIVE || s->generation != b >> BUCKET_INDEX_BITS || index_reserve(t, &t->dead))
        return;
    if (t->qhead + t->qlen == t->qcap) {
        if (t->qhead && t->qhead * 2 >= t->qcap) { /* reclaiming emptied half of it: the move pays for itself */
            memmove(t->queue, t->queue + t->qhead, t->qlen * sizeof(*t->queue));
            t->qhead = 0;
        } else {
            uint32_t cap = t->qcap ? t->qcap * 2 : QUEUE_MIN;
            uint32_t *q = os_realloc(t->queue, (size_t)cap * sizeof(*q));
            if (!q)
                return;
            t->queue = q;
            t->qcap = cap;
        }
    }
    index_remove(t, &t->live, i);
    s->kind = SLOT_DEAD;
    s->dead_since = since;
    index_put(t, &t->dead, i);
    t->queue[t->qhead + t->qlen] = i;
    __atomic_store_n(&t->qlen, t->qlen + 1, __ATOMIC_RELAXED); /* txn.c's read cache glances at it unlocked */
}

static void free_slot(struct bucket_table *t, uint32_t i)
{
    struct bucket_slot *s = &t->slots[i];
    index_remove(t, &t->dead, i);
    os_free(s->name);
    s->name = NULL;
    if (s->generation == BUCKET_GENERATIONS - 1) { /* a wrapped generation could meet an old handle */
        s->kind = SLOT_RETIRED;
        t->retired++;
        return;
    }
    s->generation++;
    s->kind = SLOT_FREE;
    s->next_free = t->free_head;
    t->free_head = i;
}

void bucket_table_free(keel_db *db)
{
    struct bucket_table *t = &db->buckets;
    for (uint32_t i = 1; i < t->n; i++)
        os_free(t->slots[i].name);
    os_free(t->slots);
    os_free(t->live.v);
    os_free(t->dead.v);
    os_free(t->queue);
    memset(t, 0, sizeof(*t));
}

void bucket_table_counts(keel_db *db, struct bucket_counts *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&db->mu);
    struct bucket_table *t = &db->buckets;
    out->slots = t->n ? t->n - 1 : 0;
    out->live = t->live.n;
    out->dead = t->dead.n;
    out->retired = t->retired;
    pthread_mutex_unlock(&db->mu);
}

/* ---- a txn's bucket states ---------------------------------------------- */
/* The states live in chunks that never move while the txn lives, so a
 * descriptor's address is stable: cursors keep it (LMDB's txn-owned
 * database records are the model).  Chunk k holds STATES_MIN << k states
 * and begins at position STATES_MIN * (2^k - 1). */
static inline struct bucket_state *state_at(const struct txn_buckets *bk, uint32_t pos)
{
    uint32_t k = 31 - (uint32_t)__builtin_clz(pos / STATES_MIN + 1);
    return &bk->chunk[k][pos - STATES_MIN * ((1u << k) - 1)];
}

static struct bucket_state *state_find(keel_txn *txn, keel_bucket b)
{
    struct txn_buckets *bk = &txn->bk;
    if (bk->last < bk->n && state_at(bk, bk->last)->handle == b)
        return state_at(bk, bk->last);
    if (!bk->index_cap)
        return NULL;
    uint32_t mask = bk->index_cap - 1;
    for (uint32_t i = handle_hash(b) & mask; bk->index[i]; i = (i + 1) & mask) {
        uint32_t pos = bk->index[i] - 1;
        if (state_at(bk, pos)->handle == b) {
            bk->last = pos;
            return state_at(bk, pos);
        }
    }
    return NULL;
}

static void state_index_put(struct txn_buckets *bk, uint32_t pos)
{
    uint32_t mask = bk->index_cap - 1, i = handle_hash(state_at(bk, pos)->handle) & mask;
    while (bk->index[i])
        i = (i + 1) & mask;
    bk->index[i] = pos + 1;
}

/* A new state for handle b (ABSENT, clean). */
static int state_add(keel_txn *txn, keel_bucket b, struct bucket_state **out)
{
    struct txn_buckets *bk = &txn->bk;
    if (bk->n == bk->cap) { /* a new chunk, as big as all before it and STATES_MIN */
        uint32_t k = bk->nchunks;
        if (k == STATE_CHUNKS_MAX)
            return KEEL_NOMEM;
        struct bucket_state *chunk = os_malloc(((size_t)STATES_MIN << k) * sizeof(*chunk));
        if (!chunk)
            return KEEL_NOMEM;
        bk->chunk[k] = chunk;
        bk->nchunks = k + 1;
        bk->cap += STATES_MIN << k;
    }
    if ((bk->n + 1) * 2 > bk->index_cap) { /* rebuilt in position order: see states_clear */
        uint32_t cap = bk->index_cap ? bk->index_cap * 2 : INDEX_MIN_CAP;
        uint32_t *ix = os_calloc((size_t)cap * sizeof(*ix));
        if (!ix)
            return KEEL_NOMEM;
        os_free(bk->index);
        bk->index = ix;
        bk->index_cap = cap;
        for (uint32_t p = 0; p < bk->n; p++)
            state_index_put(bk, p);
    }
    struct bucket_state *s = state_at(bk, bk->n);
    memset(s, 0, sizeof(*s));
    s->handle = b;
    s->state = BUCKET_ABSENT;
    s->level = txn->nest;
    state_index_put(bk, bk->n);
    bk->last = bk->n++;
    *out = s;
    return 0;
}

static void states_free(struct txn_buckets *bk)
{
    for (uint32_t k = 0; k < bk->nchunks; k++)
        os_free(bk->chunk[k]);
    os_free(bk->index);
    memset(bk, 0, sizeof(*bk));
}

/* Empties the index in O(states): newest first, each entry's probe run
 * holds only older entries, all still in place when it is cleared. */
static void states_clear(struct txn_buckets *bk)
{
    if (bk->cap > STATES_KEPT) {
        states_free(bk);
        return;
    }
    uint32_t mask = bk->index_cap - 1;
    for (uint32_t p = bk->n; p-- > 0;) {
        uint32_t i = handle_hash(state_at(bk, p)->handle) & mask;
        while (bk->index[i] != p + 1)
            i = (i + 1) & mask;
        bk->index[i] = 0;
    }
    bk->n = bk->last = 0;
}

uint32_t txn_bucket_states(const keel_txn *txn) { return txn->bk.n; }

/* ---- nested txns -------------------------------------------------------- *
 * A child takes over its parent's bucket states.  The states it adds come
 * after the parent's (undo.states_begin); a state of a lower level is saved
 * whole the first time the child may change it (state_own: when load_state
 * hands it out, and before bucket_flush writes it back), with the level it
 * had (bucket_state.level).  The chunks never move, so a save remembers
 * the state's address, and the parent's cursors keep theirs.  Abort puts
 * the saved states back and removes the child's own; a handle the child
 * made for a name its parent lacks (not base_present) dies then, as at the
 * end of an aborted txn.  Commit relabels the child's states as the
 * parent's and hands the parent the saves its own abort needs. */
struct state_save {
    struct bucket_state *at;
    struct bucket_state was;
};

static int saves_room(struct nest_undo *u, uint32_t more)
{
    if (u->nstates + more <= u->states_cap)
        return 0;
    uint32_t cap = u->states_cap ? u->states_cap * 2 : 16;
    while (cap < u->nstates + more)
        cap *= 2;
    struct state_save *v = os_realloc(u->states, (size_t)cap * sizeof(*v));
    if (!v)
        return KEEL_NOMEM;
    u->states = v;
    u->states_cap = cap;
    return 0;
}

/* A state the txn may change from here on: a lower level's is saved first. */
static int state_own(keel_txn *txn, struct bucket_state *s)
{
    if (s->level >= txn->nest)
        return 0;
    int rc = saves_room(&txn->undo, 1);
    if (rc)
        return rc;
    txn->undo.states[txn->undo.nstates++] = (struct state_save){s, *s};
    s->level = txn->nest;
    return 0;
}

void bucket_nest_begin(keel_txn *child, keel_txn *parent)
{
    states_free(&child->bk); /* states the object kept from an earlier txn */
    child->bk = parent->bk;
    child->undo.nstates = 0;
    child->undo.states_begin = parent->bk.n;
}

int bucket_nest_reserve(keel_txn *parent, const keel_txn *child)
{
    return parent->nest ? saves_room(&parent->undo, child->undo.nstates) : 0;
}

/* The states the child added, newest first (each one's probe run holds
 * only older entries, as in states_clear); handles of names the parent
 * lacks die as an aborted txn's do. */
static void states_truncate(keel_txn *txn, uint32_t keep)
{
    keel_db *db = txn->db;
    struct txn_buckets *bk = &txn->bk;
    uint32_t mask = bk->index_cap - 1;
    pthread_mutex_lock(&db->mu);
    for (uint32_t p = bk->n; p-- > keep;) {
        const struct bucket_state *s = state_at(bk, p);
        if (!s->base_present)
            kill_slot(&db->buckets, s->handle, txn->txnid - 1);
        uint32_t i = handle_hash(s->handle) & mask;
        while (bk->index[i] != p + 1)
            i = (i + 1) & mask;
        bk->index[i] = 0;
    }
    pthread_mutex_unlock(&db->mu);
    bk->n = keep;
    bk->last = 0;
}

/* After a commit: the parent's cursors follow the buckets the child
 * dropped or created again (cursors_attach did that for the child's own). */
static void cursors_follow(keel_txn *txn)
{
    for (keel_cursor *c = txn->cursors; c; c = c->next) {
        struct bucket_state *s;
        if (c->bucket != KEEL_DEFAULT_BUCKET && (s = state_find(txn, c->bucket)))
            c->tree = s->state == BUCKET_PRESENT ? &s->desc : NULL;
    }
}

void bucket_nest_end(keel_txn *parent, keel_txn *child, bool commit)
{
    struct nest_undo *u = &child->undo;
    parent->bk = child->bk;
    memset(&child->bk, 0, sizeof(child->bk));
    if (!commit) {
        for (uint32_t i = u->nstates; i-- > 0;)
            *u->states[i].at = u->states[i].was;
        if (parent->bk.n > u->states_begin)
            states_truncate(parent, u->states_begin);
    } else {
        for (uint32_t p = u->states_begin; p < parent->bk.n; p++)
            state_at(&parent->bk, p)->level = parent->nest;
        for (uint32_t i = 0; i < u->nstates; i++) {
            u->states[i].at->level = parent->nest;
            if (u->states[i].was.level < parent->nest) /* its abort needs it: room reserved */
                parent->undo.states[parent->undo.nstates++] = u->states[i];
        }
        cursors_follow(parent);
    }
    u->nstates = 0;
}

/* ---- descriptors -------------------------------------------------------- */

/* A catalog value is a descriptor in the file's format: format 1's has no root sum. */
static size_t desc_size(const keel_txn *txn) { return txn->db->summed ? TREE_DESC_SIZE : TREE_DESC_V1_SIZE; }

static int desc_from_value(keel_txn *txn, keel_val v, struct tree_desc *d)
{
    if (v.len != desc_size(txn))
        return CORRUPT(0);
    memset(d, 0, sizeof(*d));
    memcpy(d, v.data, v.len);
    if ((d->root && (d->root < 2 || d->root >= txn->meta.npages)) || d->depth > KEEL_MAX_DEPTH ||
        (d->root == 0) != (d->depth == 0) || d->id == 0 || (d->flags & ~TREE_F_KNOWN) ||
        (d->flags & (TREE_F_DUPSORT | TREE_F_COUNTED)) == TREE_F_COUNTED)
        return CORRUPT(0);
    return 0;
}

/* The named bucket in the txn's catalog: *d and present, or not present. */
static int catalog_get(keel_txn *txn, const char *name, struct tree_desc *d, bool *present)
{
    keel_val v;
    *present = false;
    int rc = bt_get(txn, &txn->meta.trees[TREE_CATALOG], (keel_val){name, strlen(name)}, &v, NULL);
    if (rc == KEEL_NOTFOUND)
        return 0;
    if (rc || (rc = desc_from_value(txn, v, d)))
        return rc;
    *present = true;
    return 0;
}

/* The name behind handle b, copied while the slot is sure to hold it. */
static int handle_name(keel_txn *txn, keel_bucket b, char name[KEEL_MAX_BUCKET_NAME + 1])
{
    keel_db *db = txn->db;
    pthread_mutex_lock(&db->mu);
    const struct bucket_slot *s = usable_slot(&db->buckets, b, txn);
    if (s)
        strcpy(name, s->name);
    pthread_mutex_unlock(&db->mu);
    return s ? 0 : KEEL_BADBUCKET;
}

/* The txn's view of bucket b, loaded from the catalog on first use. */
static int load_state(keel_txn *txn, keel_bucket b, struct bucket_state **out)
{
    struct bucket_state *s = state_find(txn, b);
    if (s) {
        *out = s;
        return state_own(txn, s);
    }
    char name[KEEL_MAX_BUCKET_NAME + 1];
    struct tree_desc d;
    bool present;
    int rc = handle_name(txn, b, name);
    if (rc || (rc = catalog_get(txn, name, &d, &present)) || (rc = state_add(txn, b, &s)))
        return rc;
    if (present) {
        s->state = BUCKET_PRESENT;
        s->base_present = true;
        s->desc = d;
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
    struct bucket_state *s;
    if (b != KEEL_DEFAULT_BUCKET && (s = state_find(txn, b))) {
        KEEL_ASSERT(s->level == txn->nest); /* the write found its tree through load_state, which owns it */
        s->dirty = true;
    }
}

/* For a walk below the API (freelist.c's relocation): fn on the tree of
 * the bucket called name.  A bucket the txn has touched is reached through
 * its state, which the commit writes back; any other through a copy of its
 * descriptor, with no handle made for it (a walk through a million buckets
 * must not leave a million handles), written back to the catalog if fn
 * changed it.  A bucket that is absent is skipped. */
int bucket_with_tree(keel_txn *txn, const char *name, int (*fn)(keel_txn *txn, struct tree_desc *t, void *ctx),
                     void *ctx)
{
    keel_db *db = txn->db;
    size_t len = strlen(name);
    pthread_mutex_lock(&db->mu);
    keel_bucket b = find_handle(&db->buckets, txn, name, name_hash(name, len));
    pthread_mutex_unlock(&db->mu);
    struct bucket_state *s = b ? state_find(txn, b) : NULL;
    if (s) {
        if (s->state != BUCKET_PRESENT)
            return 0;
        struct tree_desc before = s->desc;
        int rc = fn(txn, &s->desc, ctx);
        if (memcmp(&before, &s->desc, sizeof before))
            s->dirty = true;
        return rc;
    }
    struct tree_desc d;
    bool present;
    int rc = catalog_get(txn, name, &d, &present);
    if (rc || !present)
        return rc;
    struct tree_desc before = d;
    if ((rc = fn(txn, &d, ctx)) == 0 && memcmp(&before, &d, sizeof d))
        rc = bt_put(txn, &txn->meta.trees[TREE_CATALOG], (keel_val){name, len}, (keel_val){&d, desc_size(txn)}, 0, 0,
                    NULL);
    return rc;
}

/* ---- open, drop, flush -------------------------------------------------- */

/* The handle for a name: a slot the txn may use, else, if the name exists
 * in the txn or is to be created, a new slot (KEEL_NOTFOUND otherwise). */
static int get_handle(keel_txn *txn, const char *name, unsigned flags, keel_bucket *out)
{
    keel_db *db = txn->db;
    uint32_t hash = name_hash(name, strlen(name));
    pthread_mutex_lock(&db->mu);
    keel_bucket b = find_handle(&db->buckets, txn, name, hash);
    pthread_mutex_unlock(&db->mu);
    if (b) {
        *out = b;
        return 0;
    }
    /* no slot: look before making one, so failed opens leave none behind */
    struct tree_desc d;
    bool present;
    int rc = catalog_get(txn, name, &d, &present);
    if (rc)
        return rc;
    if (!present && !(flags & KEEL_CREATE))
        return KEEL_NOTFOUND;
    if (!present && txn->rdonly)
        return KEEL_READONLY;
    pthread_mutex_lock(&db->mu);
    b = find_handle(&db->buckets, txn, name, hash); /* another thread may have made it meanwhile */
    if (!b)
        rc = add_slot(&db->buckets, name, hash, &b);
    pthread_mutex_unlock(&db->mu);
    *out = b;
    return rc;
}

/* The txn's user cursors on handle b follow its bucket: gone when it is
 * dropped, on the new one when the name is created again in the same txn
 * (the same handle: the slot dies only when a txn ends without the name). */
static void cursors_attach(keel_txn *txn, keel_bucket b, struct tree_desc *t)
{
    for (keel_cursor *c = txn->cursors; c; c = c->next)
        if (c->bucket == b) {
            c->tree = t;
            c->dup = t && (t->flags & TREE_F_DUPSORT);
        }
}

/* The kind asked for (flags) against the bucket's: KEEL_DUPSORT, or
 * KEEL_CREATE without it, must name the kind the bucket has. */
static int kind_matches(const struct tree_desc *t, unsigned flags)
{
    bool dup = t->flags & TREE_F_DUPSORT;
    if ((flags & KEEL_DUPSORT) ? !dup : ((flags & KEEL_CREATE) && dup))
        return KEEL_INCOMPATIBLE;
    return 0;
}

int bucket_open(keel_txn *txn, const char *name, unsigned flags, keel_bucket *out)
{
    if (!name) {
        if (flags & KEEL_DUPSORT)
            return KEEL_INCOMPATIBLE; /* the default bucket is a plain one */
        *out = KEEL_DEFAULT_BUCKET;
        return 0;
    }
    keel_bucket b;
    struct bucket_state *s;
    int rc = get_handle(txn, name, flags, &b);
    if (rc || (rc = load_state(txn, b, &s)))
        return rc;
    if (s->state != BUCKET_PRESENT) {
        if (!(flags & KEEL_CREATE))
            return KEEL_NOTFOUND;
        if (txn->rdonly)
            return KEEL_READONLY;
        memset(&s->desc, 0, sizeof(s->desc));
        if (txn->meta.next_bucket_id == 0)
            txn->meta.next_bucket_id = 1;
        if (txn->meta.next_bucket_id >= BUCKET_ID_MAX)
            return KEEL_FULL;
        s->desc.id = (uint32_t)txn->meta.next_bucket_id++;
        if (flags & KEEL_DUPSORT) {
            s->desc.flags = TREE_F_DUPSORT | TREE_F_COUNTED;
            txn->meta.flags |= META_F_DUPSORT | META_F_DUPCOUNT; /* older libraries refuse the file from here on */
        }
        s->state = BUCKET_PRESENT;
        s->dirty = true;
        cursors_attach(txn, b, &s->desc); /* dropped earlier in this txn: its cursors go on here */
    } else if ((rc = kind_matches(&s->desc, flags))) {
        return rc;
    }
    *out = b;
    return 0;
}

int bucket_flags(keel_txn *txn, keel_bucket b, unsigned *flags)
{
    struct tree_desc *t;
    int rc = bucket_tree(txn, b, &t);
    if (!rc)
        *flags = (t->flags & TREE_F_DUPSORT) ? KEEL_DUPSORT : 0;
    return rc;
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
        struct bucket_state *s = state_find(txn, b);
        s->state = BUCKET_ABSENT;
        s->dirty = true;
        cursors_attach(txn, b, NULL); /* their moves answer KEEL_BADBUCKET */
    }
    return 0;
}

int bucket_flush(keel_txn *txn)
{
    struct txn_buckets *bk = &txn->bk;
    txn->db->bucket_visits += bk->n;
    for (uint32_t p = 0; p < bk->n; p++) {
        struct bucket_state *s = state_at(bk, p);
        if (!s->dirty)
            continue;
        char name[KEEL_MAX_BUCKET_NAME + 1];
        int rc = state_own(txn, s);
        if (!rc)
            rc = handle_name(txn, s->handle, name);
        keel_val k = {name, strlen(name)};
        if (rc)
            return rc;
        if (s->state == BUCKET_PRESENT)
            rc = bt_put(txn, &txn->meta.trees[TREE_CATALOG], k, (keel_val){&s->desc, desc_size(txn)}, 0, 0,
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

/* ---- the end of a txn --------------------------------------------------- */

void bucket_txn_end(keel_txn *txn, bool committed)
{
    keel_db *db = txn->db;
    struct txn_buckets *bk = &txn->bk;
    if (!txn->rdonly && bk->n && txn->fork_gen == os_fork_generation()) {
        /* committed: the snapshots from this commit on lack the names it
         * left absent; aborted: those from the one it began from */
        uint64_t since = committed ? txn->txnid : txn->txnid - 1;
        db->bucket_visits += bk->n;
        pthread_mutex_lock(&db->mu);
        for (uint32_t p = 0; p < bk->n; p++) {
            const struct bucket_state *s = state_at(bk, p);
            if (!(committed ? s->state == BUCKET_PRESENT : s->base_present))
                kill_slot(&db->buckets, s->handle, since);
        }
        pthread_mutex_unlock(&db->mu);
    }
    states_clear(bk);
}

/* Frees the dead slots no txn of the db can use: each live txn, and each
 * reader in the lock file (a read txn being begun is there before it is on
 * the live list), reads a snapshot at least as new as the slot's death. */
bool bucket_reclaim_due(const keel_txn *txn, uint64_t *newest)
{
    const struct bucket_table *t = &txn->db->buckets;
    if (txn->fork_gen != os_fork_generation())
        return false; /* the lock file is the parent's */
    /* a reader can only have held back the slots that died after its snapshot */
    bool worth = t->qlen && (!txn->rdonly || txn->txnid < t->slots[t->queue[t->qhead]].dead_since);
    *newest = worth ? t->slots[t->queue[t->qhead + t->qlen - 1]].dead_since : 0;
    return worth;
}

void bucket_reclaim(keel_db *db, uint64_t newest)
{
    struct bucket_table *t = &db->buckets;
    uint64_t oldest = readers_oldest(&db->lock, newest, 0);
    pthread_mutex_lock(&db->mu);
    for (keel_txn *l = db->live_txns; l; l = l->live_next) { /* other threads' txns: their published snapshot */
        uint64_t snap = atomic_load_explicit(&l->live_snapshot, memory_order_relaxed);
        if (snap < oldest)
            oldest = snap;
    }
    while (t->qlen && t->slots[t->queue[t->qhead]].dead_since <= oldest) {
        free_slot(t, t->queue[t->qhead]);
        t->qhead++;
        __atomic_store_n(&t->qlen, t->qlen - 1, __ATOMIC_RELAXED);
    }
    if (!t->qlen)
        t->qhead = 0;
    pthread_mutex_unlock(&db->mu);
}

void bucket_txn_free(keel_txn *txn) { states_free(&txn->bk); }

/* ---- walks -------------------------------------------------------------- */

int bucket_walk(keel_txn *txn, int (*fn)(const char *name, const struct tree_desc *d, void *ctx), void *ctx)
{
    int rc;
    if (!txn->rdonly && (rc = bucket_flush(txn)))
        return rc;
    keel_cursor c;
    memset(&c, 0, sizeof(c));
    cursor_init(&c, txn, 0, &txn->meta.trees[TREE_CATALOG]);
    keel_val k, v;
    char name[KEEL_MAX_BUCKET_NAME + 1];
    struct tree_desc d;
    for (rc = cursor_first(&c, &k, &v); rc == 0; rc = cursor_next(&c, &k, &v)) {
        if (k.len > KEEL_MAX_BUCKET_NAME) {
            rc = CORRUPT(c.pgno[c.depth - 1]);
            break;
        }
        memcpy(name, k.data, k.len);
        name[k.len] = 0;
        if ((rc = fn(name, desc_from_value(txn, v, &d) ? NULL : &d, ctx)))
            break;
    }
    cursor_release(&c);
    return rc == KEEL_NOTFOUND ? 0 : rc;
}

struct list_args {
    int (*fn)(const char *name, void *ctx);
    void *ctx;
};

static int list_one(const char *name, const struct tree_desc *d, void *ctx)
{
    (void)d;
    const struct list_args *a = ctx;
    return a->fn(name, a->ctx);
}

int bucket_list(keel_txn *txn, int (*fn)(const char *name, void *ctx), void *ctx)
{
    struct list_args a = {fn, ctx};
    return bucket_walk(txn, list_one, &a);
}

struct find_id {
    uint32_t id;
    char name[KEEL_MAX_BUCKET_NAME + 1];
};

static int match_id(const char *name, const struct tree_desc *d, void *ctx)
{
    struct find_id *f = ctx;
    if (!d || d->id != f->id)
        return 0;
    strcpy(f->name, name);
    return 1;
}

/* The handle of the bucket with persistent id `id`: the txn's buckets
 * first, else a walk of the catalog (which has no index on ids). */
int bucket_by_id(keel_txn *txn, uint32_t id, keel_bucket *out)
{
    if (id == 0) {
        *out = KEEL_DEFAULT_BUCKET;
        return 0;
    }
    const struct txn_buckets *bk = &txn->bk;
    /* the bucket found last: the expiry tree groups a time's keys by bucket */
    if (bk->last < bk->n && state_at(bk, bk->last)->state == BUCKET_PRESENT && state_at(bk, bk->last)->desc.id == id) {
        *out = state_at(bk, bk->last)->handle;
        return 0;
    }
    for (uint32_t p = 0; p < bk->n; p++)
        if (state_at(bk, p)->state == BUCKET_PRESENT && state_at(bk, p)->desc.id == id) {
            *out = state_at(bk, p)->handle;
            return 0;
        }
    struct find_id f = {.id = id};
    int rc = bucket_walk(txn, match_id, &f);
    if (rc == 1)
        return bucket_open(txn, f.name, 0, out);
    return rc ? rc : KEEL_CORRUPTED; /* an expiry entry for a bucket that does not exist */
}
