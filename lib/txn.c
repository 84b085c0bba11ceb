/*
 * txn.c — transactions: snapshots for readers, the single writer, commit.
 *
 * Contract:
 *   - A read txn takes a reader slot, publishes the newest meta's txn id in
 *     it and re-reads the newest meta; if a commit slipped in between it
 *     publishes again.  From then on no writer reuses a page of its snapshot.
 *   - A write txn holds the lock file's writer lock from begin to
 *     commit/abort, and may end on any thread.  Threads of one handle take
 *     turns for it here (writer_enter/writer_leave); a thread that begins a
 *     second write txn on a handle while its first is open gets KEEL_BUSY.
 *     It works on a copy of the newest commit's meta (group_base); commit
 *     runs freelist_relocate (it moves bucket roots), bucket_flush,
 *     freelist_record, seal_commit and pager_write_out, in that order, lets the writer
 *     lock go and waits for its commit to be durable (group_wait).
 *   - Txn objects are recycled through the db, so a finished txn is
 *     recognisable (KEEL_BADTXN) until its memory is reused.  A thread
 *     keeps its ended read txn, object and reader slot, for its next one
 *     (the read cache): no lock, no shared cache line written.
 *   - A child of a write txn (txn_begin_nested) takes over its parent's
 *     working state; the parent is a shell (TXN_PARENT: every use answers
 *     KEEL_BADTXN) until the child ends.  Its commit hands the state back
 *     with its changes, its abort as it was (each layer's undo record, in
 *     struct nest_undo); neither writes anything.  Aborting a txn aborts
 *     its children first, the deepest first.
 */
#include <string.h>
#include <time.h>

#include "internal.h"

int64_t txn_clock_ms(keel_db *db)
{
    if (db->clock)
        return db->clock(db->clock_ctx);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A txn object, already in the live list: one critical section per begin.
 * Its snapshot reads 0 there until begin succeeds (bucket_reclaim then
 * frees no handle a txn being begun might use). */
static keel_txn *txn_get(keel_db *db)
{
    pthread_mutex_lock(&db->mu);
    keel_txn *t = db->spare_txns;
    if (!t) {
        pthread_mutex_unlock(&db->mu);
        if (!(t = os_calloc(sizeof(*t))))
            return NULL;
        pthread_mutex_lock(&db->mu);
    } else {
        db->spare_txns = t->next_spare;
    }
    atomic_store_explicit(&t->live_snapshot, 0, memory_order_relaxed);
    t->live_prev = NULL;
    t->live_next = db->live_txns;
    if (db->live_txns)
        db->live_txns->live_prev = t;
    db->live_txns = t;
    pthread_mutex_unlock(&db->mu);
    return t;
}

static void txn_put(keel_txn *t);

/* A finished txn: using it answers KEEL_BADTXN, its cursors KEEL_BADCURSOR. */
static void txn_mark_ended(keel_txn *t)
{
    t->magic = TXN_DEAD;
    for (keel_cursor *c = t->cursors; c; c = c->next)
        c->txn = NULL; /* detached */
    t->cursors = NULL;
}

/* ---- the read cache (struct read_cache_entry) ----
 * A cached txn stays on the live list (leaving it is what takes the lock),
 * reading nothing: its live_snapshot says so to bucket_reclaim, its magic
 * TXN_DEAD to a caller that kept the pointer, and its reader slot
 * publishes 0.  keel_close drains the cache before it ends live txns. */
static _Atomic(keel_txn *) *read_cache_mine(keel_db *db)
{
    static _Atomic unsigned threads;
    static __thread unsigned thread_no; /* 1, 2, ...: this thread's, from its first read txn */
    if (!thread_no)
        thread_no = atomic_fetch_add_explicit(&threads, 1, memory_order_relaxed) + 1;
    return &db->read_cache[thread_no % READ_CACHE_SLOTS].txn;
}

/* This thread's kept read txn, live again (snapshot 0 while begun, as in
 * txn_get), or NULL. */
static keel_txn *read_cache_take(keel_db *db)
{
    _Atomic(keel_txn *) *e = read_cache_mine(db);
    if (!atomic_load_explicit(e, memory_order_relaxed))
        return NULL;
    keel_txn *t = atomic_exchange_explicit(e, NULL, memory_order_acquire);
    if (t)
        atomic_store(&t->live_snapshot, 0);
    return t;
}

/* Keeps an ended read txn for this thread's next one; false when its entry
 * is taken, or when dead bucket handles wait for txn_put's reclaim (a hint:
 * one that died just now is freed by the next write txn's end). */
static bool read_cache_put(keel_db *db, keel_txn *t)
{
    if (__atomic_load_n(&db->buckets.qlen, __ATOMIC_RELAXED))
        return false;
    _Atomic(keel_txn *) *e = read_cache_mine(db);
    if (atomic_load_explicit(e, memory_order_relaxed))
        return false;
    reader_idle(&db->lock, t->slot);
    txn_mark_ended(t);
    atomic_store_explicit(&t->live_snapshot, UINT64_MAX, memory_order_relaxed);
    keel_txn *none = NULL;
    return atomic_compare_exchange_strong_explicit(e, &none, t, memory_order_release, memory_order_relaxed);
}

void txn_drain_read_cache(keel_db *db)
{
    bool forked = db->fork_gen != os_fork_generation();
    for (size_t i = 0; i < READ_CACHE_SLOTS; i++) {
        keel_txn *t = atomic_exchange(&db->read_cache[i].txn, NULL);
        if (!t)
            continue;
        if (!forked) /* after fork() the slot is the parent's */
            reader_release(&db->lock, t->slot);
        t->slot = -1;
        txn_put(t);
    }
}

static void txn_put(keel_txn *t)
{
    keel_db *db = t->db;
    txn_mark_ended(t);
    /* one critical section in the common case (no dead bucket handles) */
    pthread_mutex_lock(&db->mu);
    if (t->live_prev || db->live_txns == t) { /* unlink from the live list */
        if (t->live_prev)
            t->live_prev->live_next = t->live_next;
        else
            db->live_txns = t->live_next;
        if (t->live_next)
            t->live_next->live_prev = t->live_prev;
    }
    t->live_prev = t->live_next = NULL;
    uint64_t newest;
    bool reclaim = bucket_reclaim_due(t, &newest);
    if (!reclaim) {
        t->next_spare = db->spare_txns;
        db->spare_txns = t;
    }
    pthread_mutex_unlock(&db->mu);
    if (!reclaim)
        return;
    bucket_reclaim(db, newest);
    pthread_mutex_lock(&db->mu);
    t->next_spare = db->spare_txns;
    db->spare_txns = t;
    pthread_mutex_unlock(&db->mu);
}

/* Threads of one handle take turns for the writer lock: the lock belongs to
 * the handle's descriptor, so the kernel would not keep them apart. */
static int writer_enter(keel_db *db)
{
    pthread_mutex_lock(&db->mu);
    if (db->writer_gate && pthread_equal(db->writer_thread, pthread_self())) {
        pthread_mutex_unlock(&db->mu);
        return KEEL_BUSY; /* waiting would deadlock */
    }
    while (db->writer_gate)
        pthread_cond_wait(&db->writer_cv, &db->mu);
    db->writer_gate = true;
    db->writer_thread = pthread_self();
    pthread_mutex_unlock(&db->mu);
    lockfile_writer_lock(&db->lock);
    return 0;
}

/* Any thread may end the write txn. */
static void writer_leave(keel_db *db, bool inherited)
{
    if (!inherited) /* after fork() the lock is the parent's */
        lockfile_writer_unlock(&db->lock);
    pthread_mutex_lock(&db->mu);
    db->wtxn = NULL;
    db->writer_gate = false;
    pthread_cond_signal(&db->writer_cv);
    pthread_mutex_unlock(&db->mu);
}

/* Every page a txn reaches must lie inside this handle's map. */
static int meta_fits_map(const keel_db *db, const struct meta *m)
{
    return m->npages > db->map_size / db->psize ? KEEL_MAPSIZE : 0;
}

/* A read txn's snapshot: the newest meta, published in the txn's reader
 * slot, and still the newest after that (else a writer may already have
 * reused what it freed: look again).  "Still the newest" is two loads when
 * no commit came by (meta_maybe_newer). */
static int begin_read(keel_db *db, keel_txn *txn)
{
    int rc = reader_resume(&db->lock, txn->slot) ? 0 : reader_acquire(&db->lock, &txn->slot);
    if (rc == KEEL_READERS_FULL) { /* the slots other threads keep idle come back */
        txn_drain_read_cache(db);
        rc = reader_acquire(&db->lock, &txn->slot);
    }
    if (rc)
        return rc;
    for (;;) {
        struct meta again;
        if ((rc = meta_newest_visible(db, &txn->meta, NULL)))
            return rc;
        txn->pin_id = txn->meta.txnid ? txn->meta.txnid : 1;
        reader_publish(&db->lock, txn->slot, txn->pin_id, txn->now);
        if (!meta_maybe_newer(db, txn->meta.txnid))
            break;
        if ((rc = meta_newest_visible(db, &again, NULL)))
            return rc;
        if (again.txnid == txn->meta.txnid)
            break;
    }
    if ((rc = meta_fits_map(db, &txn->meta)))
        return rc;
    txn->txnid = txn->meta.txnid;
    txn->pin = reader_pin(&db->lock, txn->slot);
    return 0;
}

/* A write txn: the writer lock, the newest commit (published or in the
 * file: group_base), the oldest snapshot a reader holds or a crash can come
 * back to, the free tail.  On failure it holds nothing. */
static int begin_write(keel_db *db, keel_txn *txn)
{
    int rc = writer_enter(db);
    if (rc)
        return rc;
    const uint8_t *base_page;
    if ((rc = group_base(db, &txn->meta, &base_page)) || (rc = meta_fits_map(db, &txn->meta)))
        goto fail;
    /* the size writers share, or the file's own when that is too small
     * for the base (the shared one errs low: group.c) */
    db->file_size = group_file_size(db);
    if (txn->meta.npages * db->psize > db->file_size && (rc = os_file_size(db->fd, &db->file_size)))
        goto fail;
    /* the file must hold the snapshot, and the commit needs an id that
     * meta_check accepts (only a damaged meta has none left) */
    if (txn->meta.npages * db->psize > db->file_size || txn->meta.txnid >= UINT64_MAX - 1) {
        rc = CORRUPT(0);
        goto fail;
    }
    txn->txnid = txn->meta.txnid + 1;
    txn->snap_npages = txn->meta.npages;
    /* What commits after `keep` freed, a crash may still need.  Loaded
     * before the reader slots are read: a flush (no writer lock) can make
     * newer commits visible meanwhile, and a reader that pins its snapshot
     * after the scan took it no older than the visible commit at this load,
     * which is at least `keep`; `keep` loaded after the scan could be newer
     * than that reader's snapshot. */
    if ((rc = pager_known_init(db))) /* under the writer lock: made once per handle */
        goto fail;
    uint64_t keep = group_keep(db);
    txn->oldest = readers_oldest(&db->lock, txn->meta.txnid, db->max_reader_lag);
    if (txn->oldest > keep)
        txn->oldest = keep;
    if ((rc = freelist_load_tail(txn, base_page))) {
        pager_txn_release(txn);
        space_txn_release(&txn->space);
        goto fail;
    }
    pthread_mutex_lock(&db->mu);
    db->wtxn = txn;
    pthread_mutex_unlock(&db->mu);
    return 0;
fail:
    writer_leave(db, false);
    return rc;
}

int txn_begin(keel_db *db, unsigned flags, keel_txn **out)
{
    if (db->panic)
        return KEEL_PANIC;
    if (db->fork_gen != os_fork_generation())
        return KEEL_FORKED;
    if (flags & ~KEEL_RDONLY)
        return KEEL_BADFLAGS;
    bool rdonly = flags & KEEL_RDONLY;
    if (!rdonly && (db->flags & KEEL_RDONLY))
        return KEEL_READONLY;
    keel_txn *txn = rdonly ? read_cache_take(db) : NULL;
    int kept_slot = txn ? txn->slot : -1;
    if (!txn)
        txn = txn_get(db);
    if (!txn)
        return KEEL_NOMEM;
    txn->db = db;
    txn->rdonly = rdonly;
    txn->verify = db->verify;
    txn->error = 0;
    txn->slot = kept_slot;
    txn->changes = 1;
    txn->fork_gen = db->fork_gen;
    txn->cursors = NULL;
    txn->parent = txn->child = NULL;
    txn->nest = 0;
    space_txn_begin(&txn->space);
    txn->pin = NULL;
    txn->now = txn_clock_ms(db);
    int rc = rdonly ? begin_read(db, txn) : begin_write(db, txn);
    if (rc) {
        if (txn->slot >= 0)
            reader_release(&db->lock, txn->slot);
        txn->slot = -1;
        txn_put(txn);
        return rc;
    }
    atomic_store_explicit(&txn->live_snapshot, rdonly ? txn->txnid : txn->txnid - 1, memory_order_relaxed);
    txn->magic = TXN_MAGIC;
    *out = txn;
    return 0;
}

int txn_begin_with_tail(keel_db *db, keel_txn **out, uint8_t **tail)
{
    for (int tries = 0; tries < 1000; tries++) {
        int rc = txn_begin(db, KEEL_RDONLY, out);
        if (rc)
            return rc;
        if ((rc = meta_snapshot_tail(*out, tail)) != KEEL_BUSY) {
            if (rc)
                txn_abort(*out);
            return rc;
        }
        txn_abort(*out);
    }
    return KEEL_BUSY;
}

static void txn_end(keel_txn *txn, bool committed)
{
    keel_db *db = txn->db;
    bucket_txn_end(txn, committed); /* a writer's, before another writer may begin */
    /* A txn inherited across fork(): the reader slot and the writer lock are
     * the parent's (shared memory), only the child's copy of memory goes. */
    bool inherited = txn->fork_gen != os_fork_generation();
    if (txn->rdonly) {
        if (txn->slot >= 0 && !inherited) {
            if (read_cache_put(db, txn))
                return;
            reader_release(&db->lock, txn->slot);
        }
        txn->slot = -1;
    } else {
        expiry_log_free(txn);
        dupcount_clear(txn);
        pager_txn_release(txn);
        space_txn_release(&txn->space);
        writer_leave(db, inherited);
    }
    txn_put(txn);
}

/* ---- nested txns ---- */

int txn_begin_nested(keel_txn *parent, keel_txn **out)
{
    keel_db *db = parent->db;
    if (parent->nest == TXN_NEST_MAX) {
        error_detail_set("write txns nest %d levels deep at most", TXN_NEST_MAX);
        return KEEL_BADTXN;
    }
    keel_txn *c = txn_get(db);
    if (!c)
        return KEEL_NOMEM;
    c->db = db;
    c->rdonly = false;
    c->verify = parent->verify;
    c->error = 0;
    c->slot = -1;
    c->pin = NULL;
    c->fork_gen = parent->fork_gen;
    c->now = parent->now; /* one clock for the whole write txn: what is expired stays so */
    c->txnid = parent->txnid;
    c->meta = parent->meta;
    c->snap_npages = parent->snap_npages;
    c->oldest = parent->oldest;
    c->changes = parent->changes + 1;
    c->cursors = NULL;
    c->scratch_depth = 0; /* its own scratch buffer: btree.c gives it back between operations */
    c->parent = parent;
    c->child = NULL;
    c->nest = parent->nest + 1;
    pager_nest_begin(c, parent);
    space_nest_begin(c, parent);
    bucket_nest_begin(c, parent);
    expiry_nest_begin(c, parent);
    atomic_store_explicit(&c->live_snapshot, c->txnid - 1, memory_order_relaxed);
    c->magic = TXN_MAGIC;
    parent->child = c;
    parent->magic = TXN_PARENT;
    *out = c;
    return 0;
}

/* The child's state back to its parent, changed (commit) or as it was;
 * cannot fail (a commit reserved what it needs first). */
static void nest_end(keel_txn *c, bool commit)
{
    keel_txn *p = c->parent;
    KEEL_ASSERT(p && p->child == c && !c->child);
    pager_nest_end(p, c, commit);
    space_nest_end(p, c, commit);
    bucket_nest_end(p, c, commit);
    expiry_nest_end(p, c, commit);
    dupcount_nest_end(p, c, commit);
    if (commit)
        p->meta = c->meta;
    p->changes = c->changes + 1; /* the parent's cursors look again */
    p->child = NULL;
    p->magic = TXN_MAGIC;
    c->parent = NULL;
    c->nest = 0;
    txn_put(c); /* its cursors are detached: KEEL_BADCURSOR */
}

static int nest_commit(keel_txn *c)
{
    int rc = pager_nest_reserve(c->parent, c);
    if (!rc)
        rc = bucket_nest_reserve(c->parent, c);
    if (!rc)
        rc = dupcount_nest_reserve(c->parent, c);
    nest_end(c, rc == 0);
    return rc;
}

void txn_abort(keel_txn *txn)
{
    while (txn->child) { /* its children first, the deepest first */
        keel_txn *d = txn->child;
        while (d->child)
            d = d->child;
        nest_end(d, false);
    }
    if (txn->parent)
        nest_end(txn, false);
    else
        txn_end(txn, false);
}

/* After bucket_flush: bucket changes are catalog pages by then, so a
 * bucket created and dropped again in the txn counts for nothing, as it
 * does after a keel_bucket_list (which flushes too). */
static bool has_changes(const keel_txn *txn) { return txn->dirty.count || txn->space.freed_by_txn.n; }

int txn_commit(keel_txn *txn)
{
    if (txn->parent)
        return nest_commit(txn);
    int rc = 0;
    bool published = false;
    /* the pair counts owed, the expiry log and the bucket descriptors first: they are the rest
     * of the txn's changes (the counts change trees, and so bucket descriptors) */
    if (txn->rdonly || (rc = dup_counts_flush(txn)) || (rc = expiry_flush(txn)) || (rc = bucket_flush(txn)) ||
        !has_changes(txn))
        goto out;
    /* the purge changes buckets again: flushed once more */
    if (txn->db->purge_per_commit > 0 && (rc = kv_purge(txn, (size_t)txn->db->purge_per_commit, NULL)))
        goto out;
    if ((rc = freelist_relocate(txn)) || (rc = bucket_flush(txn)) || (rc = freelist_record(txn)) ||
        (rc = seal_commit(txn)) || (rc = pager_write_out(txn)))
        goto out;
    published = true;
out:;
    keel_db *db = txn->db;
    uint64_t id = txn->txnid;
    txn_end(txn, rc == 0);
    /* the next writer goes on while this commit waits for a flush, maybe its own */
    if (published)
        rc = group_wait(db, id);
    return rc;
}

/* Frees the spare objects at close. */
void txn_free_spares(keel_db *db)
{
    keel_txn *t = db->spare_txns;
    while (t) {
        keel_txn *next = t->next_spare;
        bucket_txn_free(t);
        dupcount_free(t);
        pager_txn_free(t);
        os_free(t->scratch);
        os_free(t->undo.pages);
        os_free(t->undo.states);
        pgvec_free(&t->undo.reusable);
        os_free(t->undo.xlog.v);
        os_free(t->undo.xlog.keys);
        os_free(t);
        t = next;
    }
    db->spare_txns = NULL;
}
