/*
 * meta.c — the two meta pages: check, seal, select, verify.
 *
 * Contract:
 *   - meta_check() is the only judge of a meta's bytes: magic, checksum,
 *     version, page size, limits, and the free tail against its sum.
 *     meta_seal() is the only writer of the checksum.
 *   - meta_select() is the one selector: every reader of the metas (the open
 *     and its crash recovery through meta_newest_file, every txn begin, the
 *     readers list and the close through meta_newest; copy and check through
 *     their txn) takes the newest usable meta by its rule.  A meta that fails
 *     meta_check, or that the lock file names torn (meta_is_bad), is
 *     unusable; of two usable ones meta_newer decides.  Neither: damage.
 *   - meta_verify_commit() tells, at the first open after a crash, whether a
 *     one-flush commit is whole in the file (group.c: the commit protocol).
 *   - Readers take the newest visible meta (meta_newest_visible: no newer
 *     than the lock file's visible commit, durable: group.c), writers the
 *     newest in the file (meta_newest), which group.c compares with the
 *     newest published.
 *   - meta_snapshot_tail() copies a read snapshot's free tail from its meta
 *     page, or says the page has been overwritten since (KEEL_BUSY).
 *
 * Layer: below group.c and the pager (os -> lockfile -> meta -> group ->
 * pager).  Meta pages 0
 * and 1 are outside the pager's pages (page_get refuses them): this file
 * reads them from the map or with pread and calls nothing of the pager;
 * group.c writes them, sealed with meta_seal.
 */
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "internal.h"

/* ---- the two layouts ----
 * In memory a meta is always format 2's struct meta; a format 1 meta (48-byte
 * descriptors, no root sums) is converted on the way in and out, here only. */
size_t meta_encode(const struct meta *m, uint8_t *out)
{
    if (m->version != 1) {
        memcpy(out, m, META_SIZE);
        return META_SIZE;
    }
    memcpy(out, m, META_V1_TREES);
    for (int i = 0; i < TREE_COUNT; i++)
        memcpy(out + META_V1_TREES + (size_t)i * TREE_DESC_V1_SIZE, &m->trees[i], TREE_DESC_V1_SIZE);
    wr64(out + META_V1_SUM_OFF, m->checksum);
    return META_V1_SIZE;
}

/* buf holds at least meta_size_of(buf) bytes */
static size_t meta_size_of(const uint8_t *buf) { return rd32(buf + 4) == 1 ? META_V1_SIZE : META_SIZE; }

void meta_decode(const uint8_t *buf, struct meta *m)
{
    if (rd32(buf + 4) != 1) {
        memcpy(m, buf, META_SIZE);
        return;
    }
    memset(m, 0, sizeof(*m));
    memcpy(m, buf, META_V1_TREES);
    for (int i = 0; i < TREE_COUNT; i++)
        memcpy(&m->trees[i], buf + META_V1_TREES + (size_t)i * TREE_DESC_V1_SIZE, TREE_DESC_V1_SIZE);
    m->checksum = rd64(buf + META_V1_SUM_OFF);
}

/* Does the page begin with m's bytes? */
bool meta_matches(const uint8_t *page, const struct meta *m)
{
    uint8_t enc[META_SIZE];
    return !memcmp(page, enc, meta_encode(m, enc));
}

static uint64_t meta_sum(const struct meta *m)
{
    if (m->version != 1)
        return XXH3_64bits(m, META_SUM_BYTES);
    uint8_t enc[META_SIZE];
    meta_encode(m, enc);
    return XXH3_64bits(enc, META_V1_SUM_OFF);
}

/* ---- check and seal ---- */
void meta_seal(struct meta *m) { m->checksum = meta_sum(m); }

/* A meta page for m that needs no check of its commit's pages (the copy
 * keel_close makes of a one-flush meta, and keel_copy's metas): no flag but
 * FREETAIL, no commit list, and the free tail `tail` (its header and words,
 * already checked against m's sum; NULL if m has none).  `out` is psize
 * zeroed bytes; returns the bytes to write. */
size_t meta_page_settled(uint32_t psize, const struct meta *m, const uint8_t *tail, uint8_t *out)
{
    struct meta s = *m;
    s.flags &= META_F_FREETAIL | META_F_STICKY;
    s.commit_list_sum = 0;
    meta_seal(&s);
    meta_encode(&s, out);
    if (!tail)
        return 512;
    size_t off = meta_tail_off(psize), bytes = META_TAIL_HDR + (size_t)rd32(tail) * 8;
    memcpy(out + off, tail, bytes);
    return (off + bytes + 511) / 512 * 512;
}

int meta_check(const uint8_t *buf, size_t len, uint32_t expect_psize, struct meta *out)
{
    return meta_check_head(buf, len, expect_psize, out, true);
}

/* with_tail false: the meta alone, not its free tail (check.c tells a torn
 * tail from a damaged meta with it) */
int meta_check_head(const uint8_t *buf, size_t len, uint32_t expect_psize, struct meta *out, bool with_tail)
{
    if (len < 8 || len < meta_size_of(buf))
        return KEEL_INVALID;
    struct meta m;
    meta_decode(buf, &m);
    if (m.magic != KEEL_MAGIC)
        return KEEL_INVALID;
    /* the checksum first: a garbled version field is damage (the other meta
     * takes over), not a newer library's meta (which refuses the open) */
    if (m.checksum != meta_sum(&m))
        return CORRUPT(0);
    if (m.version < KEEL_FORMAT_OLDEST || m.version > KEEL_FORMAT_VERSION || (m.flags & ~META_F_KNOWN))
        return KEEL_VERSION; /* older or newer: not a format this library reads */
    if (m.page_size < KEEL_MIN_PAGE || m.page_size > KEEL_MAX_PAGE || (m.page_size & (m.page_size - 1)))
        return CORRUPT(0);
    if (expect_psize && m.page_size != expect_psize)
        return CORRUPT(0);
    if (m.npages < 2 || m.npages > (UINT64_MAX / m.page_size))
        return CORRUPT(0);
    if (m.txnid == UINT64_MAX) /* the next commit's id would wrap to 0 and lose to the other meta */
        return CORRUPT(0);
    if (with_tail && (m.flags & META_F_FREETAIL)) {
        /* The tail shares the meta's write: a meta whose tail does not match
         * its sum was torn (or damaged), and the other meta takes over. */
        size_t off = meta_tail_off(m.page_size);
        if (len < off + META_TAIL_HDR)
            return CORRUPT(0);
        uint32_t nwords = rd32(buf + off);
        size_t bytes = META_TAIL_HDR + (size_t)nwords * 8;
        if (rd32(buf + off + 4) || nwords > meta_tail_max_words(m.page_size) || len - off < bytes ||
            XXH3_64bits(buf + off, bytes) != m.free_tail_sum)
            return CORRUPT(0);
    }
    for (int i = 0; i < TREE_COUNT; i++) {
        const struct tree_desc *t = &m.trees[i];
        if (t->root == 1 || (t->root && t->root >= m.npages) || t->depth > KEEL_MAX_DEPTH ||
            (t->root == 0) != (t->depth == 0) || t->id || t->flags)
            return CORRUPT(0);
    }
    *out = m;
    return 0;
}

/* ---- select ---- */
/* Is m the meta the lock file's bad_meta names?  Only a one-flush meta can
 * be torn, so only one is ever named: a damaged or hostile lock file cannot
 * hide any other. */
bool meta_is_bad(const struct meta *m, uint64_t bad)
{
    return bad && m->checksum == bad && (m->flags & META_F_ONEFLUSH);
}

/* Which of two valid metas is the newest: the higher txn id; on a tie (a
 * one-flush meta and the copy keel_close made of it) the copy, which needs
 * no check of its pages; else a (slot 0). */
bool meta_newer(const struct meta *a, const struct meta *b)
{
    if (a->txnid != b->txnid)
        return a->txnid > b->txnid;
    return !(a->flags & META_F_ONEFLUSH) || (b->flags & META_F_ONEFLUSH);
}

/* meta_select's rule, inline here: a txn begin selects twice (txn.c), and
 * for a one-get read txn that is a visible share of its cost. */
static inline int select_newest(int r0, const struct meta *m0, int r1, const struct meta *m1, uint64_t bad,
                                unsigned *slot)
{
    if (bad) { /* a torn one-flush commit found at open: as if its meta were torn */
        if (!r0 && meta_is_bad(m0, bad)) /* known since the open: nothing to record each time */
            r0 = KEEL_CORRUPTED;
        if (!r1 && meta_is_bad(m1, bad))
            r1 = KEEL_CORRUPTED;
    }
    if (r0 && r1)
        return CORRUPT(0);
    *slot = (!r0 && (r1 || meta_newer(m0, m1))) ? 0 : 1;
    return 0;
}

int meta_select(int r0, const struct meta *m0, int r1, const struct meta *m1, uint64_t bad, unsigned *slot)
{
    return select_newest(r0, m0, r1, m1, bad, slot);
}

/* The last metas this thread found valid in one handle's map, by slot.  In
 * that file a meta whose bytes equal one of them is the same commit's meta,
 * checked already with its free tail (written with it; every commit has a
 * new txn id), so a txn begin compares instead of hashing.  Only in that
 * file: another file can hold the same meta bytes with a torn tail (a
 * crash), hence the handle's open_id, which no later open reuses. */
struct seen_metas {
    uint64_t open_id;
    struct meta m[2];
    uint8_t raw[2][META_SIZE]; /* m's bytes in the file (meta_encode: not the page's, which a writer may be changing) */
    size_t rawlen[2];
    bool ok[2];
};
static __thread struct seen_metas meta_seen; /* reached through a pointer taken once: each use of a
                                                thread-local in a shared library is a call */

static int meta_check_seen(const keel_db *db, unsigned slot, struct meta *out)
{
    const uint8_t *p = db->map + (size_t)slot * db->psize;
    struct seen_metas *seen = &meta_seen;
    if (seen->open_id != db->open_id) {
        seen->open_id = db->open_id;
        seen->ok[0] = seen->ok[1] = false;
    }
    if (seen->ok[slot] && !memcmp(p, seen->raw[slot], seen->rawlen[slot])) {
        *out = seen->m[slot];
        return 0;
    }
    int rc = meta_check(p, db->psize, db->psize, out);
    if (!rc) {
        seen->m[slot] = *out;
        seen->rawlen[slot] = meta_encode(out, seen->raw[slot]);
    }
    seen->ok[slot] = rc == 0;
    return rc;
}

/* The newest usable meta in the map (limit NULL), or the one whose txn id
 * is *limit, re-read at each try: the visible commit, which is always in
 * one slot while flushes write the other.  The metas are read while a flush
 * in another process may be writing one with pwrite: a copy can be torn,
 * and the limit can move on meanwhile.  Only one meta is written at a time,
 * so that passes and damage does not: a few tries before both unusable is
 * KEEL_CORRUPTED, and a visible commit in neither slot KEEL_LOCKFILE. */
static int newest_upto(keel_db *db, const _Atomic uint64_t *limit, struct meta *out, unsigned *slot)
{
    struct meta a, b;
    unsigned s = 0;
    int rc;
    for (int tries = 0;; tries++) {
        uint64_t lim = limit ? atomic_load_explicit(limit, memory_order_acquire) : UINT64_MAX;
        int ra = meta_check_seen(db, 0, &a);
        int rb = meta_check_seen(db, 1, &b);
        /* a meta newer than the limit is not durable yet: as if absent */
        if (!ra && a.txnid > lim)
            ra = KEEL_BUSY;
        if (!rb && b.txnid > lim)
            rb = KEEL_BUSY;
        rc = select_newest(ra, &a, rb, &b, lockfile_bad_meta(&db->lock), &s);
        bool found = !rc && (!limit || (s == 0 ? a : b).txnid == lim);
        if (found)
            break;
        if (tries + 1 >= META_READ_TRIES) {
            if (limit && (!rc || (ra == KEEL_BUSY && rb == KEEL_BUSY))) { /* else the file is damaged */
                error_detail_set("lock file: the visible commit %llu is not in the file", (unsigned long long)lim);
                rc = KEEL_LOCKFILE;
            }
            break;
        }
        sched_yield();
    }
    if (rc)
        return rc;
    *out = s == 0 ? a : b;
    if (slot)
        *slot = s;
    return 0;
}

int meta_newest(keel_db *db, struct meta *out, unsigned *slot) { return newest_upto(db, NULL, out, slot); }

/* A read txn's usual case: the visible commit is one whose meta this
 * thread checked, and its slot still holds those bytes (a torn commit's
 * meta that a later commit of the same txn id overwrote does not). */
static bool visible_seen(const keel_db *db, uint64_t visible, struct meta *out)
{
    const struct seen_metas *seen = &meta_seen;
    if (seen->open_id != db->open_id)
        return false;
    for (unsigned s = 0; s < 2; s++) {
        if (seen->ok[s] && seen->m[s].txnid == visible &&
            !memcmp(db->map + (size_t)s * db->psize, seen->raw[s], seen->rawlen[s]) &&
            !meta_is_bad(&seen->m[s], lockfile_bad_meta(&db->lock))) {
            *out = seen->m[s];
            return true;
        }
    }
    return false;
}

int meta_newest_visible(keel_db *db, struct meta *out, unsigned *slot)
{
    const struct group_shared *g = db->lock.group;
    if (g && !slot && visible_seen(db, atomic_load_explicit(&g->visible, memory_order_acquire), out))
        return 0;
    return newest_upto(db, g ? &g->visible : NULL, out, slot);
}

int meta_newest_upto(keel_db *db, uint64_t limit, struct meta *out, unsigned *slot)
{
    _Atomic uint64_t lim = limit;
    return newest_upto(db, &lim, out, slot);
}

/* Has a meta newer than txnid become visible, or (no lock file: no writer)
 * been written in either slot?  One or two loads: a no is certain, a yes
 * only a maybe (a torn copy, a meta the lock file names bad), for the
 * caller to settle with meta_newest_visible. */
bool meta_maybe_newer(const keel_db *db, uint64_t txnid)
{
    if (db->lock.group)
        return atomic_load(&db->lock.group->visible) > txnid; /* seq_cst: after the pin's store */
    for (unsigned s = 0; s < 2; s++) {
        const uint64_t *id = (const uint64_t *)(db->map + (size_t)s * db->psize + offsetof(struct meta, txnid));
        if (__atomic_load_n(id, __ATOMIC_RELAXED) > txnid)
            return true;
    }
    return false;
}

/* Meta 0 gives the page size; if it is unusable, meta 1 is looked for at
 * each possible page size.  A meta of a newer library (KEEL_VERSION) in
 * either slot refuses the open; two metas that are not keel's at all are
 * KEEL_INVALID (not a keel database); else meta_select decides. */
int meta_newest_file(keel_db *db, struct meta *out, unsigned *slot)
{
    return meta_newest_fd(db->fd, lockfile_bad_meta(&db->lock), out, slot);
}

int meta_newest_fd(int fd, uint64_t bad, struct meta *out, unsigned *slot)
{
    /* a whole page at the largest size: a meta's free tail is in its page's second half */
    uint8_t *buf = os_malloc(KEEL_MAX_PAGE);
    if (!buf)
        return KEEL_NOMEM;
    struct meta m0, m1;
    int r0 = KEEL_INVALID, r1 = KEEL_INVALID;
    size_t got;
    int rc = os_pread_upto(fd, buf, KEEL_MAX_PAGE, 0, &got);
    if (rc)
        goto out;
    r0 = meta_check(buf, got, 0, &m0);
    if (r0 == 0 && meta_is_bad(&m0, bad))
        r0 = KEEL_CORRUPTED; /* the lock file names it torn: no damage met here */
    int r1_keel = KEEL_INVALID; /* a damaged or newer meta 1 found while probing page sizes */
    for (uint32_t ps = KEEL_MIN_PAGE; ps <= KEEL_MAX_PAGE; ps *= 2) {
        if (r0 == 0 && ps != m0.page_size)
            continue;
        if ((rc = os_pread_upto(fd, buf, ps, ps, &got)))
            goto out;
        r1 = meta_check(buf, got, ps, &m1);
        if (r1 == 0 && meta_is_bad(&m1, bad))
            r1 = KEEL_CORRUPTED;
        if (r1 == 0 || r0 == 0)
            break;
        if (r1 != KEEL_INVALID)
            r1_keel = r1;
    }
    if (r1 == KEEL_INVALID) /* later probes past the real meta 1 must not hide what it said */
        r1 = r1_keel;
    /* A newer library wrote here: never read (and later overwrite) an older
     * state of its file through the other meta. */
    if (r0 == KEEL_VERSION || r1 == KEEL_VERSION)
        rc = KEEL_VERSION;
    else if (r0 == KEEL_INVALID && r1 == KEEL_INVALID)
        rc = KEEL_INVALID;
    else if ((rc = meta_select(r0, &m0, r1, &m1, bad, slot)) == 0)
        *out = *slot == 0 ? m0 : m1;
out:
    os_free(buf);
    return rc;
}

/* A read txn's free tail, copied from its snapshot's meta page in the map
 * (a malloc'd header and words, or NULL if the snapshot has none).  The
 * snapshot's pages stay while the txn lives, but its meta page is
 * overwritten by the second commit after it: then KEEL_BUSY (begin again). */
int meta_snapshot_tail(keel_txn *txn, uint8_t **out)
{
    keel_db *db = txn->db;
    *out = NULL;
    if (!(txn->meta.flags & META_F_FREETAIL))
        return 0;
    size_t off = meta_tail_off(db->psize), max = META_TAIL_HDR + meta_tail_max_words(db->psize) * 8;
    uint8_t *t = os_malloc(max);
    if (!t)
        return KEEL_NOMEM;
    for (unsigned s = 0; s < 2; s++) {
        const uint8_t *page = db->map + (size_t)s * db->psize;
        if (!meta_matches(page, &txn->meta))
            continue;
        memcpy(t, page + off, max);
        size_t bytes = META_TAIL_HDR + (size_t)rd32(t) * 8;
        /* still the same meta after the copy, and the copy matches its sum */
        if (meta_matches(page, &txn->meta) && bytes <= max && XXH3_64bits(t, bytes) == txn->meta.free_tail_sum) {
            *out = t;
            return 0;
        }
    }
    os_free(t);
    return KEEL_BUSY;
}

/* ---- verify one-flush commits ---- */
/* Is the one-flush commit of meta m (read from slot `slot`) whole in the
 * file?  Read with pread: keel_open calls it before the map exists, as the
 * sole user (no writer can change the pages meanwhile).  0 = whole,
 * KEEL_CORRUPTED = torn (or a damaged list), else an I/O error. */
int meta_verify_commit(int fd, uint64_t fsize, const struct meta *m, unsigned slot)
{
    uint32_t ps = m->page_size;
    if (m->npages > fsize / ps) /* the growth it needed did not survive */
        return CORRUPT(0);
    enum { CHUNK = 1 << 16 };
    uint8_t *buf = os_malloc(CHUNK > ps ? CHUNK : ps);
    if (!buf)
        return KEEL_NOMEM;
    size_t got;
    int rc = os_pread_upto(fd, buf, ps - META_LIST_OFF, (uint64_t)slot * ps + META_LIST_OFF, &got);
    if (rc)
        goto out;
    uint32_t nruns = rd32(buf);
    size_t list_len = META_LIST_HDR + (size_t)nruns * META_LIST_RUN;
    if (got != ps - META_LIST_OFF || nruns > meta_list_max_runs(ps, m->flags & META_F_FREETAIL) || rd32(buf + 4) ||
        XXH3_64bits(buf, list_len) != m->commit_list_sum) {
        rc = CORRUPT(0);
        goto out;
    }
    uint64_t want = rd64(buf + 8);
    size_t nr = nruns;
    uint64_t *runs = os_malloc((nr ? nr : 1) * 2 * sizeof(uint64_t));
    if (!runs) {
        rc = KEEL_NOMEM;
        goto out;
    }
    uint64_t end = 2;
    for (size_t i = 0; i < nr; i++) {
        runs[2 * i] = rd64(buf + META_LIST_HDR + i * META_LIST_RUN);
        runs[2 * i + 1] = rd64(buf + META_LIST_HDR + i * META_LIST_RUN + 8);
        /* ascending, inside the commit's pages (first < npages before npages - first) */
        if (runs[2 * i] < end || runs[2 * i] >= m->npages || runs[2 * i + 1] == 0 ||
            runs[2 * i + 1] > m->npages - runs[2 * i]) {
            os_free(runs);
            rc = CORRUPT(0);
            goto out;
        }
        end = runs[2 * i] + runs[2 * i + 1];
    }
    XXH3_state_t *sum = XXH3_createState();
    rc = sum ? 0 : KEEL_NOMEM;
    if (sum)
        XXH3_64bits_reset(sum);
    for (size_t i = 0; i < nr && !rc; i++) {
        uint64_t off = runs[2 * i] * ps, left = runs[2 * i + 1] * ps;
        while (left && !rc) {
            size_t n = left < CHUNK ? (size_t)left : CHUNK;
            if (!(rc = os_pread_upto(fd, buf, n, off, &got)) && got != n)
                rc = CORRUPT((off + got) / ps);
            XXH3_64bits_update(sum, buf, got);
            off += n;
            left -= n;
        }
    }
    if (!rc && XXH3_64bits_digest(sum) != want)
        rc = CORRUPT(0);
    XXH3_freeState(sum);
    os_free(runs);
out:
    os_free(buf);
    return rc;
}
