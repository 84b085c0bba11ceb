/*
 * group.c — group commit: commits share flushes, and readers see only what
 * is durable.
 *
 * Contract:
 *   - A commit writes its pages (pager_write_out) and, still under the
 *     writer lock, publishes its meta page here (group_publish) instead of
 *     writing it into a meta slot.  The next writer begins from the newest
 *     published meta (group_base).  The committer then lets the writer lock
 *     go and waits (group_wait) until a flush has made its commit durable.
 *   - A flush is made by whichever waiter takes the flush lock first (the
 *     leader, in any process): it takes the newest published meta, syncs
 *     what the commits since the visible one want, writes that meta into the
 *     slot that does not hold the visible meta, and makes it visible.  Every
 *     commit published meanwhile shares that flush.  So the last durable
 *     meta is never overwritten before its successor is durable.
 *   - One sync per flush when the meta can vouch for the pages of every
 *     commit since the visible one (META_F_ONEFLUSH: the commit list, built
 *     here from the runs each commit published, summed from the map);
 *     otherwise the pages are synced, then the meta.  A torn one-flush
 *     commit falls back to the visible meta, durable before it began.
 *   - Readers see the visible commit and nothing newer (meta_newest_visible):
 *     in the default mode no reader sees a commit before it is durable, and
 *     a commit returns only once it is.
 *   - Writers keep the pages of the fallback commit: the oldest one a crash
 *     can come back to (the visible one, or the one before it when the
 *     visible meta was written without a sync), and the pages a group's
 *     commit list names (`keep`: see flush_commit).
 *   - A failed sync or meta write sets `failed`: every handle's waiting and
 *     later commits answer KEEL_PANIC (the file's state is unknown).
 *
 * Layer: os -> lockfile -> meta -> group -> pager.  The pager publishes,
 * txn.c asks for the base and waits; this file reads and writes the meta
 * slots through meta.c's checks and selector, and the lock file's words.
 */
#include <errno.h>
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "internal.h"

static struct group_shared *shared(const keel_db *db) { return db->lock.group; }

/* At the first open: the newest meta is visible, and the fallback if the
 * opener's sync made it durable; else the one before it is, and the file
 * keeps its size until a flush says more. */
void group_init(keel_db *db, const struct meta *newest, bool durable, uint64_t fsize)
{
    struct group_shared *g = shared(db);
    if (!g)
        return;
    uint64_t fallback = durable || !newest->txnid ? newest->txnid : newest->txnid - 1;
    uint64_t npages = fsize / newest->page_size;
    atomic_store(&g->visible, newest->txnid);
    atomic_store(&g->fallback, fallback);
    atomic_store(&g->keep, fallback);
    atomic_store(&g->fallback_npages, durable || npages < newest->npages ? newest->npages : npages);
    atomic_store(&g->visible_npages, newest->npages);
    atomic_store(&g->file_size, fsize);
    atomic_store(&g->visible_slot, 2); /* unknown: the first flush looks */
    atomic_store(&g->pending, 0);
    atomic_store(&g->synced_size, 0); /* unknown: the first flush syncs the size */
    atomic_store(&g->failed, 0);
}

uint64_t group_keep(const keel_db *db)
{
    return atomic_load(&shared(db)->keep); /* seq_cst: ordered before the reader scan (txn.c) */
}

/* Set by a writer before it shrinks the file and after it grew it, so that
 * a writer killed in between leaves a size below the real one: the next
 * one grows the file again (an ftruncate), where a size above the real one
 * would let a meta point past the end. */
uint64_t group_file_size(const keel_db *db)
{
    return shared(db) ? atomic_load_explicit(&shared(db)->file_size, memory_order_relaxed) : 0;
}

void group_set_file_size(keel_db *db, uint64_t size)
{
    if (shared(db))
        atomic_store_explicit(&shared(db)->file_size, size, memory_order_relaxed);
}

/* Under the writer lock, for the commit after `base`, published: a crash
 * comes back to a commit from the fallback one to the visible one.  With
 * base visible or this commit already (nothing else in flight: else 0, no
 * shrink) the file keeps the pages of the fallback commit; the caller adds
 * base's and its own. */
uint64_t group_shrink_floor(const keel_db *db, uint64_t base)
{
    const struct group_shared *g = shared(db);
    if (atomic_load_explicit(&g->visible, memory_order_acquire) < base)
        return 0;
    return atomic_load_explicit(&g->fallback_npages, memory_order_acquire);
}

/* Is the slot's page the meta this handle published last?  Then it needs
 * no second check. */
static bool own_published(const keel_db *db, const struct group_slot *s, uint64_t id)
{
    return id && db->published.txnid == id && s->txnid == id &&
           meta_matches(s->page, &db->published);
}

/* The newest commit a writer builds on: the newest published one when it is
 * newer than the newest meta in the file.  *page: its meta page. */
int group_base(keel_db *db, struct meta *out, const uint8_t **page)
{
    /* Under the writer lock nobody fills a slot: no seqlock needed.  A
     * flush writes only published commits into the file, so the newest
     * published one is never older than the file's newest meta: when it is
     * this handle's own (the usual case for a writer that commits again),
     * no meta is read. */
    struct group_shared *g = shared(db);
    uint64_t id = atomic_load_explicit(&g->pending, memory_order_acquire);
    const struct group_slot *s = &g->slot[id & 1];
    if (own_published(db, s, id)) {
        *out = db->published;
        *page = s->page;
        return 0;
    }
    unsigned slot;
    int rc = meta_newest(db, out, &slot);
    if (rc)
        return rc;
    *page = db->map + (size_t)slot * db->psize;
    if (id <= out->txnid)
        return 0;
    struct meta m;
    if (s->txnid != id || meta_check(s->page, db->psize, db->psize, &m) || m.txnid != id) {
        error_detail_set("lock file: the published commit %llu is damaged", (unsigned long long)id);
        return KEEL_LOCKFILE;
    }
    *out = m;
    *page = s->page;
    return 0;
}

/* The runs of the commits since `visible` that the previous slot holds, then
 * this commit's own (its commit list, if it has one: else it is unlisted). */
static void chain_runs(struct group_slot *s, const struct group_slot *prev, bool chained, uint64_t visible,
                       const uint8_t *page, const struct meta *m)
{
    s->nruns = 0;
    s->unlisted = 0;
    if (chained) {
        s->needs |= prev->needs;
        s->unlisted = prev->unlisted;
        uint32_t n = prev->nruns < GROUP_RUNS_MAX ? prev->nruns : GROUP_RUNS_MAX;
        for (uint32_t i = 0; i < n; i++)
            if (prev->runs[i].txnid > visible)
                s->runs[s->nruns++] = prev->runs[i];
    }
    if (!(m->flags & META_F_ONEFLUSH)) {
        s->unlisted = m->txnid;
        return;
    }
    const uint8_t *list = page + META_LIST_OFF;
    uint32_t n = rd32(list);
    for (uint32_t i = 0; i < n; i++) {
        if (s->nruns == GROUP_RUNS_MAX) {
            s->unlisted = m->txnid;
            return;
        }
        const uint8_t *r = list + META_LIST_HDR + (size_t)i * META_LIST_RUN;
        s->runs[s->nruns++] = (struct group_run){m->txnid, rd64(r), rd64(r + 8)};
    }
}

void group_publish(keel_db *db, const uint8_t *page, size_t mlen, uint32_t needs)
{
    struct group_shared *g = shared(db);
    struct meta m;
    meta_decode(page, &m);
    uint64_t id = m.txnid, visible = atomic_load_explicit(&g->visible, memory_order_acquire);
    uint64_t prev_id = atomic_load_explicit(&g->pending, memory_order_relaxed);
    struct group_slot *s = &g->slot[id & 1];
    const struct group_slot *prev = &g->slot[(id - 1) & 1];
    uint64_t seq = atomic_load_explicit(&s->seq, memory_order_relaxed);
    atomic_store_explicit(&s->seq, seq | 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    s->needs = needs;
    chain_runs(s, prev, prev_id == id - 1 && prev_id > visible && prev->txnid == prev_id, visible, page, &m);
    s->txnid = id;
    s->mlen = (uint32_t)mlen;
    s->fsize = db->file_size;
    memcpy(s->page, page, mlen);
    atomic_store_explicit(&s->seq, (seq | 1) + 1, memory_order_release);
    atomic_store_explicit(&g->pending, id, memory_order_release);
    db->published = m;
}

/* A copy of the newest published slot (header, runs, page), taken while
 * writers may fill slots: a seqlock read.  *id: its commit, 0 when none is
 * newer than the visible one.  The slot `pending` names is filled only once
 * a newer commit is published, which moves `pending` on: one found being
 * filled while `pending` stays put is a damaged lock file, not a wait. */
static int copy_newest(keel_db *db, struct group_slot *c, uint64_t *out)
{
    struct group_shared *g = shared(db);
    uint64_t last = 0;
    for (int stuck = 0; stuck < GROUP_COPY_TRIES; stuck++) {
        uint64_t id = atomic_load_explicit(&g->pending, memory_order_acquire);
        *out = 0;
        if (id <= atomic_load_explicit(&g->visible, memory_order_acquire))
            return 0;
        if (id != last)
            stuck = 0;
        last = id;
        const struct group_slot *s = &g->slot[id & 1];
        uint64_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
        if (!(seq & 1)) {
            c->txnid = s->txnid;
            c->unlisted = s->unlisted;
            c->needs = s->needs;
            c->fsize = s->fsize;
            c->nruns = s->nruns < GROUP_RUNS_MAX ? s->nruns : GROUP_RUNS_MAX;
            c->mlen = s->mlen <= db->psize ? s->mlen : db->psize;
            memcpy(c->runs, s->runs, c->nruns * sizeof(c->runs[0]));
            memcpy(c->page, s->page, c->mlen);
            atomic_thread_fence(memory_order_acquire);
            if (atomic_load_explicit(&s->seq, memory_order_relaxed) == seq && c->txnid == id) {
                *out = id;
                return 0;
            }
        }
        sched_yield(); /* a writer is filling it: the next commit came by */
    }
    error_detail_set("lock file: the published commit %llu stays half written", (unsigned long long)last);
    return KEEL_LOCKFILE;
}

static int cmp_run(const void *a, const void *b)
{
    const struct group_run *x = a, *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

/* The group's commit list, into page + META_LIST_OFF: the runs of the
 * commits after `visible`, in page order, summed from the map (the pages
 * are in the file and no writer touches them until this flush is
 * durable).  False when they do not fit the meta or ONEFLUSH_MAX_BYTES. */
static bool group_list(keel_db *db, struct group_slot *c, uint64_t visible, struct meta *m, uint8_t *page)
{
    size_t n = 0;
    for (uint32_t i = 0; i < c->nruns; i++)
        if (c->runs[i].txnid > visible)
            c->runs[n++] = c->runs[i];
    qsort(c->runs, n, sizeof(c->runs[0]), cmp_run);
    size_t max = meta_list_max_runs(db->psize, m->flags & META_F_FREETAIL), nruns = 0;
    uint64_t pages = 0, end = 2;
    uint8_t *list = page + META_LIST_OFF;
    XXH3_state_t *sum = XXH3_createState();
    if (!sum)
        return false;
    XXH3_64bits_reset(sum);
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        const struct group_run *r = &c->runs[i];
        /* runs tile (the allocator's invariant) inside the commit's pages */
        ok = r->first >= end && r->count && r->first + r->count <= m->npages;
        pages += r->count;
        ok = ok && pages <= ONEFLUSH_MAX_BYTES / db->psize;
        if (!ok)
            break;
        uint8_t *last = nruns ? list + META_LIST_HDR + (nruns - 1) * META_LIST_RUN : NULL;
        if (last && rd64(last) + rd64(last + 8) == r->first) {
            wr64(last + 8, rd64(last + 8) + r->count);
        } else if (nruns < max) {
            uint8_t *w = list + META_LIST_HDR + nruns++ * META_LIST_RUN;
            wr64(w, r->first);
            wr64(w + 8, r->count);
        } else {
            ok = false;
            break;
        }
        XXH3_64bits_update(sum, db->map + r->first * db->psize, r->count * db->psize);
        end = r->first + r->count;
    }
    if (ok) {
        wr32(list, (uint32_t)nruns);
        wr32(list + 4, 0);
        wr64(list + 8, XXH3_64bits_digest(sum));
        m->commit_list_sum = XXH3_64bits(list, META_LIST_HDR + nruns * META_LIST_RUN);
    }
    XXH3_freeState(sum);
    return ok;
}

/* A sync or the meta write failed: the file's state is unknown to all. */
static int flush_failed(keel_db *db)
{
    atomic_store(&shared(db)->failed, 1);
    db->panic = 1;
    return KEEL_PANIC;
}

static int sync_file(keel_db *db, bool full) { return full ? os_fsync(db->fd) : os_fdatasync(db->fd); }

/* The leader's work, under the flush lock: the published commit c (a copy,
 * or the slot itself under the writer lock) made durable and visible. */
static int flush_commit(keel_db *db, struct group_slot *c)
{
    struct group_shared *g = shared(db);
    uint64_t visible = atomic_load_explicit(&g->visible, memory_order_acquire), id = c->txnid;
    /* The visible meta's slot, as the last flush left it if that slot still
     * names it (a glance at its txn id), else looked for */
    unsigned vslot = atomic_load_explicit(&g->visible_slot, memory_order_relaxed);
    uint64_t vnpages = atomic_load_explicit(&g->visible_npages, memory_order_relaxed);
    if (vslot > 1 || rd64(db->map + (size_t)vslot * db->psize + offsetof(struct meta, txnid)) != visible) {
        struct meta vm;
        int rc = meta_newest_upto(db, visible, &vm, &vslot);
        if (rc)
            return rc;
        vnpages = vm.npages;
    }
    struct meta m;
    if (c == &g->slot[id & 1] && own_published(db, c, id))
        m = db->published;
    else if (meta_check(c->page, db->psize, db->psize, &m) || m.txnid != id) {
        error_detail_set("lock file: the published commit %llu is damaged", (unsigned long long)id);
        return KEEL_LOCKFILE;
    }
    uint8_t *page = db->flush_page;
    memcpy(page, c->page, c->mlen);
    size_t mlen = c->mlen;
    bool metasync = c->needs & GROUP_SYNC_META, datasync = c->needs & GROUP_SYNC_DATA;
    uint64_t fsize = c->fsize;
    bool grew = fsize != atomic_load_explicit(&g->synced_size, memory_order_relaxed);
    /* one flush: the visible meta durable (its pages are the fall back) and every page since listed */
    bool one = metasync && atomic_load(&g->fallback) == visible && c->unlisted <= visible &&
               m.npages * db->psize <= fsize;
    if (one && !(id == visible + 1 && (m.flags & META_F_ONEFLUSH))) /* a single commit's own list serves */
        one = group_list(db, c, visible, &m, page);
    m.flags = (m.flags & (META_F_FREETAIL | META_F_STICKY)) | (one ? META_F_ONEFLUSH : 0) | (metasync ? 0 : META_F_UNSYNCED);
    if (one) {
        size_t list_end = META_LIST_OFF + META_LIST_HDR + (size_t)rd32(page + META_LIST_OFF) * META_LIST_RUN;
        if (mlen < (list_end + 511) / 512 * 512)
            mlen = (list_end + 511) / 512 * 512;
    } else {
        m.commit_list_sum = 0;
    }
    meta_seal(&m);
    meta_encode(&m, page);
    uint64_t t0 = os_monotonic_ns();
    if (datasync && !one && sync_file(db, grew))
        return flush_failed(db);
    /* into the slot the visible meta does not hold: that one stays whole */
    int rc = os_pwrite_full(db->fd, page, mlen, (uint64_t)(1 - vslot) * db->psize);
    if (rc)
        return flush_failed(db); /* half written, or whole in the page cache: unknown */
    if (metasync && sync_file(db, one && grew))
        return flush_failed(db);
    if (datasync || metasync) {
        uint64_t us = (os_monotonic_ns() - t0) / 1000;
        atomic_store_explicit(&g->sync_us, us > UINT32_MAX ? UINT32_MAX : (uint32_t)us, memory_order_relaxed);
    }
    if (grew && (datasync || metasync))
        atomic_store_explicit(&g->synced_size, fsize, memory_order_relaxed);
    if (lockfile_bad_meta(&db->lock)) /* the slot of a meta found torn at open has been overwritten */
        lockfile_set_bad_meta(&db->lock, 0);
    /* A group's list also names pages that a later commit of the group
     * freed: they must stay as they are while this meta can be the newest
     * at an open (meta_verify_commit reads them), so nothing freed after
     * the previous visible commit is reused before the next flush. */
    uint64_t fallback = metasync ? id : visible;
    atomic_store_explicit(&g->fallback_npages, metasync ? m.npages : vnpages, memory_order_release);
    atomic_store_explicit(&g->visible_npages, m.npages, memory_order_relaxed);
    atomic_store_explicit(&g->visible_slot, 1 - vslot, memory_order_relaxed);
    atomic_store_explicit(&g->last_group, id - visible > UINT32_MAX ? UINT32_MAX : (uint32_t)(id - visible),
                          memory_order_relaxed);
    /* visible before keep: keep never exceeds what readers may have
     * settled on (the reader protocol, design.md section 7) */
    atomic_store(&g->visible, id);
    atomic_store(&g->fallback, fallback);
    atomic_store(&g->keep, one && id > visible + 1 ? visible : fallback);
    db->unconfirmed = one ? id : 0;
    return 0;
}

/* Made once per handle.  group_wait runs after the writer lock is gone,
 * so two threads of a handle can get here at once: they make the buffers
 * under the handle's flush mutex (without it both made one and one leaked:
 * a flaky LeakSanitizer report in test_group). */
static int flush_buffers(keel_db *db)
{
    if (db->flush_copy && db->flush_page) /* set once, never changed until close */
        return 0;
    int rc = 0;
    pthread_mutex_lock(&db->flush_mu);
    if (!db->flush_copy && !(db->flush_copy = os_malloc(sizeof(*db->flush_copy))))
        rc = KEEL_NOMEM;
    else if (!db->flush_page && !(db->flush_page = os_malloc(db->psize)))
        rc = KEEL_NOMEM;
    pthread_mutex_unlock(&db->flush_mu);
    return rc;
}

static void flush_enter(keel_db *db)
{
    pthread_mutex_lock(&db->flush_mu); /* the flush lock is the handle's: its threads take turns */
    lockfile_flush_lock(&db->lock);
}

static bool flush_try_enter(keel_db *db)
{
    if (pthread_mutex_trylock(&db->flush_mu))
        return false;
    if (lockfile_flush_trylock(&db->lock) == 0)
        return true;
    pthread_mutex_unlock(&db->flush_mu);
    return false;
}

/* The flush lock let go; committers asleep on `flushes` look at `visible`
 * again (their commit may be in the flush that ended). */
static void flush_leave(keel_db *db)
{
    struct group_shared *g = shared(db);
    lockfile_flush_unlock(&db->lock);
    pthread_mutex_unlock(&db->flush_mu);
    atomic_fetch_add(&g->flushes, 1);
    if (atomic_load(&g->sleepers))
        os_futex_wake(&g->flushes);
}

/* A commit that wants no sync (and follows none that does) is made visible
 * at once by its writer, under the writer lock, if nobody is flushing. */
int group_flush_now(keel_db *db, uint64_t id)
{
    struct group_shared *g = shared(db);
    struct group_slot *s = &g->slot[id & 1];
    if (s->needs || flush_buffers(db) || !flush_try_enter(db))
        return 0;
    int rc = 0;
    if (atomic_load(&g->visible) < id)
        rc = flush_commit(db, s);
    flush_leave(db);
    return rc;
}

/* Commits that arrive while the leader syncs wait for the next flush, so
 * several writers fall into two groups that flush by turns.  When the last
 * flush was a group, or a commit is under way (the writer lock is held), the
 * leader lets commits join before it copies the newest: for as long as they
 * keep coming (none for 1/GROUP_GATHER_IDLE_DIV of the budget ends it), at
 * most 1/GROUP_GATHER_DIV of the last sync's time.  A writer alone waits
 * for nobody. */
static void gather(keel_db *db)
{
    const struct group_shared *g = shared(db);
    uint64_t sync_us = atomic_load_explicit(&g->sync_us, memory_order_relaxed);
    uint64_t budget = (sync_us < GROUP_GATHER_MAX_US ? sync_us : GROUP_GATHER_MAX_US) * 1000 / GROUP_GATHER_DIV;
    if (!budget || (atomic_load_explicit(&g->last_group, memory_order_relaxed) < 2 && !lockfile_writer_busy(&db->lock)))
        return;
    uint64_t start = os_monotonic_ns(), now = start, last_change = start, idle = budget / GROUP_GATHER_IDLE_DIV;
    uint64_t seen = atomic_load_explicit(&g->pending, memory_order_acquire);
    while (now - start < budget) {
        uint64_t p = atomic_load_explicit(&g->pending, memory_order_acquire);
        if (p != seen) {
            seen = p;
            last_change = now;
        } else if (!lockfile_writer_busy(&db->lock) && now - last_change > idle) {
            break;
        }
        sched_yield();
        now = os_monotonic_ns();
    }
}

/* Under the flush lock: the newest published commit flushed, if `id` is not
 * visible yet. */
static int lead_flush(keel_db *db, uint64_t id)
{
    struct group_shared *g = shared(db);
    if (atomic_load(&g->visible) >= id || atomic_load(&g->failed))
        return 0;
    gather(db);
    uint64_t newest;
    int rc = copy_newest(db, db->flush_copy, &newest);
    if (rc)
        return rc;
    if (newest < id) {
        error_detail_set("lock file: commit %llu was published and is gone", (unsigned long long)id);
        return KEEL_LOCKFILE;
    }
    return flush_commit(db, db->flush_copy);
}

/* Until commit `id` is visible: lead a flush when nobody else does, else
 * sleep until one ends.  A leader that died mid-flush ends none: after
 * GROUP_WAIT_MS without a flush the flush lock is taken the blocking way,
 * which takes it over from a dead holder. */
int group_wait(keel_db *db, uint64_t id)
{
    struct group_shared *g = shared(db);
    int rc = flush_buffers(db);
    while (!rc) {
        if (atomic_load(&g->failed)) {
            db->panic = 1;
            return KEEL_PANIC;
        }
        if (atomic_load_explicit(&g->visible, memory_order_acquire) >= id)
            return 0;
        uint32_t seen = atomic_load(&g->flushes);
        if (!flush_try_enter(db)) {
            atomic_fetch_add(&g->sleepers, 1);
            os_futex_wait(&g->flushes, seen, GROUP_WAIT_MS);
            atomic_fetch_sub(&g->sleepers, 1);
            if (atomic_load(&g->flushes) != seen)
                continue;
            flush_enter(db);
        }
        rc = lead_flush(db, id);
        flush_leave(db);
    }
    return rc;
}

/* At close, a one-flush commit this handle flushed that is still the newest
 * is copied, flag cleared, into the other meta slot: both metas then hold
 * that commit, so the first open after a later crash has nothing to roll
 * back to, and damage to its pages reads as damage (KEEL_CORRUPTED), never
 * as a torn commit.  Best effort: it does not wait for a flush, which
 * supersedes this commit anyway, and a failure leaves the one-flush commit,
 * durable, as the newest. */
void group_confirm(keel_db *db)
{
    if (!db->unconfirmed || db->panic || db->fork_gen != os_fork_generation() || !db->map || !shared(db))
        return;
    struct group_shared *g = shared(db);
    if (flush_try_enter(db)) {
        struct meta m;
        unsigned slot;
        uint8_t *buf = os_calloc(db->psize);
        if (buf && atomic_load(&g->pending) <= db->unconfirmed &&
            meta_newest_upto(db, atomic_load(&g->visible), &m, &slot) == 0 && m.txnid == db->unconfirmed &&
            (m.flags & META_F_ONEFLUSH)) {
            const uint8_t *tail = db->map + (size_t)slot * db->psize + meta_tail_off(db->psize);
            size_t len = meta_page_settled(db->psize, &m, (m.flags & META_F_FREETAIL) ? tail : NULL, buf);
            if (os_pwrite_full(db->fd, buf, len, (uint64_t)(1 - slot) * db->psize) == 0)
                (void)os_fdatasync(db->fd);
        }
        os_free(buf);
        flush_leave(db);
    }
    db->unconfirmed = 0;
}

void group_free(keel_db *db)
{
    os_free(db->flush_copy);
    os_free(db->flush_page);
    db->flush_copy = NULL;
    db->flush_page = NULL;
}
