/*
 * check.c — the integrity walk behind keel_check() and `keel check`.
 *
 * Contract: reads one snapshot through the same checked accessors as every
 * other reader, so a damaged file yields problem reports, never a crash.
 * It marks each page it reaches in a bitmap: a page reached twice, or both
 * reachable and free, or neither (leaked), is a problem.  In a summed file
 * (format 2) every page and overflow run must match the sum its reference
 * holds (format.h: the page trailer); a page that does not is reported with
 * its tree and the range of keys it held, and not walked further.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

struct checker {
    keel_txn *txn;
    uint8_t *seen; /* one bit per page */
    uint64_t npages;
    uint64_t problems;
    void (*report)(void *ctx, const char *msg);
    void *ctx;
    const char *tree; /* name of the tree being walked, for messages */
    uint32_t tag;     /* ... and the tag its pages' trailers carry */
    size_t max_key;   /* the longest leaf key that tree may hold */
    bool dup;         /* a DUPSORT tree: leaf keys are pair keys (format.h) */
    uint8_t last[KEEL_MAX_PAGE_SIZE / 2]; /* ... the escaped key of the last pair walked, */
    size_t lastlen;   /*     its length (0: none yet) */
    int64_t lastexp;  /*     and its expiry: every pair of a key has the same */
    bool counted;     /* TREE_F_COUNTED: the key's first pair carries its count, */
    uint64_t carried; /*     what the last key's first pair carries */
    uint64_t pairs;   /*     and the pairs of that key walked so far */
    uint64_t carrier_pg; /*   where that first pair is */
    unsigned carrier_i;
    /* counted while walking */
    uint64_t entries, branch, leaf, overflow;
    uint64_t expiring; /* leaf entries with an expiry time, over all buckets */
    uint8_t *tail;       /* the snapshot's free tail, or NULL */
    uint64_t tail_pages; /* pages it lists */
};

static void problem(struct checker *ck, const char *fmt, ...)
{
    ck->problems++;
    if (!ck->report)
        return;
    char msg[512];
    int n = snprintf(msg, sizeof msg, "%s: ", ck->tree);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
    va_end(ap);
    ck->report(ck->ctx, msg);
}

/* After a call stopped by damage: where it was met (keel_error_detail(),
 * recorded by CORRUPT), so that the report names the page. */
static const char *where(int rc)
{
    static __thread char buf[540];
    const char *d = keel_error_detail();
    if (rc != KEEL_CORRUPTED || !*d)
        return "";
    snprintf(buf, sizeof buf, " (%s)", d);
    return buf;
}

/* Marks pages [pg, pg+n); false if any is out of range or already marked. */
static bool mark(struct checker *ck, uint64_t pg, uint64_t n, const char *what)
{
    if (pg < 2 || pg + n > ck->npages || pg + n < pg) {
        problem(ck, "%s page %llu (+%llu) out of range (file has %llu pages)", what, (unsigned long long)pg,
                (unsigned long long)n, (unsigned long long)ck->npages);
        return false;
    }
    bool ok = true;
    for (uint64_t p = pg; p < pg + n; p++) {
        if (ck->seen[p >> 3] & (1u << (p & 7))) {
            problem(ck, "%s page %llu reached twice", what, (unsigned long long)p);
            ok = false;
        }
        ck->seen[p >> 3] |= (uint8_t)(1u << (p & 7));
    }
    return ok;
}

struct bound {
    const uint8_t *key; /* NULL = unbounded */
    size_t len;
};

/* A summed file: the page (or run, len bytes) matches the sum its
 * reference holds, names the tree, and is no newer than the snapshot.
 * false: damaged, reported with the keys it held. */
static bool check_sum(struct checker *ck, const uint8_t *page, size_t len, uint64_t pg, uint64_t want,
                      const char *what, struct bound lo, struct bound hi)
{
    if (!ck->txn->db->summed)
        return true;
    const char *why = NULL;
    if (want == 0)
        why = "its reference holds no checksum";
    else if (page_sum(page, len) != want)
        why = "checksum mismatch";
    else if (page_trailer_sum(page, len) != want)
        why = "its trailer's checksum differs from its reference's";
    else if (page_trailer_tree(page, len) != ck->tag)
        why = "its trailer names another tree";
    else if (page_trailer_txnid(page, len) > ck->txn->meta.txnid)
        why = "written by a txn after the snapshot";
    if (!why)
        return true;
    char range[300];
    range_text(range, sizeof range, lo.key, lo.len, hi.key, hi.len);
    problem(ck, "%s page %llu: %s; it held %s", what, (unsigned long long)pg, why, range);
    return false;
}

/* COUNTED: the last key's pairs are all walked. */
static void check_key_count(struct checker *ck)
{
    if (ck->counted && ck->lastlen && ck->carried != ck->pairs)
        problem(ck, "page %llu node %u: the key's first pair counts %llu pairs, the tree holds %llu",
                (unsigned long long)ck->carrier_pg, ck->carrier_i, (unsigned long long)ck->carried,
                (unsigned long long)ck->pairs);
}

/* A DUPSORT leaf entry: a well-formed pair key with an empty value (in a
 * COUNTED tree, the first pair of a key: its key's count), whose expiry is
 * its key's; the index holds one entry per expiring key. */
static void check_pair(struct checker *ck, uint64_t pg, unsigned i, const uint8_t *nd, const uint8_t *k, size_t kl)
{
    size_t part = pair_key_part(k, kl);
    uint32_t vsize = leaf_node_vsize(nd);
    if (part == 0 || (leaf_node_flags(nd) & N_BIG) || (vsize != 0 && !(ck->counted && vsize == PAIR_COUNT_SIZE))) {
        problem(ck, "page %llu node %u: not a DUPSORT pair (key and value in its key, %s)", (unsigned long long)pg,
                i, ck->counted ? "an empty value or a count" : "an empty value");
        return;
    }
    if (part - (pair_key_escaped_len(k, part) - part) > ck->txn->db->max_key) /* each 00 FF is one byte */
        problem(ck, "page %llu node %u: the pair's key is longer than the %zu allowed", (unsigned long long)pg, i,
                ck->txn->db->max_key);
    int64_t exp = leaf_node_expiry(nd);
    if (part > sizeof ck->last) /* a node is at most half a page: a damaged size */
        return;
    if (ck->lastlen == part && memcmp(ck->last, k, part) == 0) {
        if (exp != ck->lastexp)
            problem(ck, "page %llu node %u: the values of one key expire at different times", (unsigned long long)pg,
                    i);
        if (vsize)
            problem(ck, "page %llu node %u: a count on a pair other than its key's first", (unsigned long long)pg, i);
        ck->pairs++;
        return;
    }
    check_key_count(ck);
    if (ck->counted && vsize != PAIR_COUNT_SIZE)
        problem(ck, "page %llu node %u: the key's first pair carries no count", (unsigned long long)pg, i);
    ck->carried = vsize == PAIR_COUNT_SIZE ? rd64(leaf_node_val(nd)) : 0;
    ck->pairs = 1;
    ck->carrier_pg = pg;
    ck->carrier_i = i;
    if (exp)
        ck->expiring++;
    memcpy(ck->last, k, part);
    ck->lastlen = part;
    ck->lastexp = exp;
}

static void walk(struct checker *ck, uint64_t pg, uint64_t sum, unsigned level, unsigned depth, struct bound lo,
                 struct bound hi)
{
    keel_txn *txn = ck->txn;
    uint32_t ps = txn->db->psize, end = txn->db->node_end;
    bool leaf = level + 1 == depth;
    if (!mark(ck, pg, 1, leaf ? "leaf" : "branch"))
        return;
    const uint8_t *page;
    if (page_get(txn, pg, &page)) {
        problem(ck, "page %llu unreadable or mislabelled", (unsigned long long)pg);
        return;
    }
    if (!check_sum(ck, page, ps, pg, sum, leaf ? "leaf" : "branch", lo, hi))
        return;
    if (bt_check_page(txn, page, pg, leaf ? P_LEAF : P_BRANCH)) {
        problem(ck, "page %llu: bad header (flags %#x, %u keys, upper %u) at level %u of %u",
                (unsigned long long)pg, page_flags(page), page_nkeys(page), page_upper(page), level, depth);
        return;
    }
    if (leaf)
        ck->leaf++;
    else
        ck->branch++;
    unsigned n = page_nkeys(page);
    const uint8_t *prev = NULL;
    size_t prevlen = 0;
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *nd;
        if (node_at(page, i, end, &nd)) {
            problem(ck, "page %llu node %u outside the page", (unsigned long long)pg, i);
            return;
        }
        const uint8_t *k = leaf ? leaf_node_key(nd) : branch_node_key(nd);
        size_t kl = leaf ? leaf_node_ksize(nd) : branch_node_ksize(nd);
        bool keyed = leaf || i > 0; /* a branch's first key is not used */
        if (keyed) {
            if (prev && bt_cmp(prev, prevlen, k, kl) >= 0)
                problem(ck, "page %llu: key %u out of order", (unsigned long long)pg, i);
            if (lo.key && bt_cmp(k, kl, lo.key, lo.len) < 0)
                problem(ck, "page %llu: key %u below its parent's separator", (unsigned long long)pg, i);
            if (hi.key && bt_cmp(k, kl, hi.key, hi.len) >= 0)
                problem(ck, "page %llu: key %u not below the next separator", (unsigned long long)pg, i);
            if (leaf && kl == 0)
                problem(ck, "page %llu: empty key", (unsigned long long)pg);
            if (leaf && kl > ck->max_key)
                problem(ck, "page %llu: key %u is %zu bytes, longer than the %zu allowed", (unsigned long long)pg, i,
                        kl, ck->max_key);
            prev = k;
            prevlen = kl;
        }
        if (leaf && ck->dup) {
            check_pair(ck, pg, i, nd, k, kl);
        } else if (leaf) {
            if (leaf_node_flags(nd) & N_EXPIRES)
                ck->expiring++;
        }
        if (leaf) {
            ck->entries++;
            if (leaf_node_flags(nd) & ~(N_BIG | N_EXPIRES | N_SUM))
                problem(ck, "page %llu node %u: unknown flags", (unsigned long long)pg, i);
            if (leaf_node_flags(nd) & N_BIG) {
                uint64_t ov = leaf_node_overflow(nd);
                uint32_t need = bt_overflow_pages(txn, leaf_node_vsize(nd));
                if (mark(ck, ov, need, "overflow")) {
                    keel_val v;
                    if (bt_leaf_value(txn, nd, &v))
                        problem(ck, "page %llu node %u: bad overflow run at %llu", (unsigned long long)pg, i,
                                (unsigned long long)ov);
                    else
                        check_sum(ck, (const uint8_t *)v.data - PAGE_HDR, (size_t)need * ps, ov,
                                  leaf_node_overflow_sum(nd), "overflow", (struct bound){k, kl},
                                  (struct bound){NULL, 0});
                    ck->overflow += need;
                }
            }
        } else {
            struct bound clo = i == 0 ? lo : (struct bound){k, kl};
            struct bound chi = hi;
            if (i + 1 < n) {
                const uint8_t *nx;
                if (node_at(page, i + 1, end, &nx) == 0)
                    chi = (struct bound){branch_node_key(nx), branch_node_ksize(nx)};
            }
            walk(ck, branch_node_child(nd), branch_node_sum(nd), level + 1, depth, clo, chi);
        }
    }
}

static void check_tree(struct checker *ck, const char *name, uint32_t tag, const struct tree_desc *t,
                       size_t max_key)
{
    ck->tree = name;
    ck->tag = tag;
    ck->max_key = max_key;
    ck->entries = ck->branch = ck->leaf = ck->overflow = 0;
    ck->dup = t->flags & TREE_F_DUPSORT;
    ck->counted = t->flags & TREE_F_COUNTED;
    ck->lastlen = 0;
    if (t->root == 0) {
        if (t->entries || t->branch_pages || t->leaf_pages || t->overflow_pages)
            problem(ck, "empty tree with non-zero counts");
        return;
    }
    if (t->depth == 0 || t->depth > KEEL_MAX_DEPTH) {
        problem(ck, "depth %u", t->depth);
        return;
    }
    walk(ck, t->root, t->root_sum, 0, t->depth, (struct bound){0}, (struct bound){0});
    check_key_count(ck);
    if (ck->entries != t->entries)
        problem(ck, "%llu entries found, descriptor says %llu", (unsigned long long)ck->entries,
                (unsigned long long)t->entries);
    if (ck->branch != t->branch_pages || ck->leaf != t->leaf_pages || ck->overflow != t->overflow_pages)
        problem(ck, "pages found (branch %llu, leaf %llu, overflow %llu) differ from the descriptor (%llu, %llu, %llu)",
                (unsigned long long)ck->branch, (unsigned long long)ck->leaf, (unsigned long long)ck->overflow,
                (unsigned long long)t->branch_pages, (unsigned long long)t->leaf_pages,
                (unsigned long long)t->overflow_pages);
}

static void ttl_problem(void *ctx, const char *fmt, ...)
{
    struct checker *ck = ctx;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    problem(ck, "%s", msg);
}

static void check_expiry(struct checker *ck)
{
    ck->tree = "expiry tree";
    uint64_t entries = 0;
    int rc = expiry_check(ck->txn, ttl_problem, ck, &entries);
    if (rc)
        problem(ck, "walk stopped: %s%s", keel_strerror(rc), where(rc));
    else if (entries != ck->expiring)
        problem(ck, "%llu expiry entries, but %llu keys with an expiry time", (unsigned long long)entries,
                (unsigned long long)ck->expiring);
}

static int check_tail_group(void *ctx, uint64_t txnid, const uint8_t *pages, size_t n)
{
    struct checker *ck = ctx;
    (void)txnid;
    for (size_t i = 0; i < n; i++)
        mark(ck, rd64(pages + 8 * i), 1, "free");
    ck->tail_pages += n;
    return 0;
}

static void check_free(struct checker *ck)
{
    keel_txn *txn = ck->txn;
    ck->tree = "free tree";
    keel_cursor c;
    memset(&c, 0, sizeof(c));
    cursor_init(&c, txn, 0, &txn->meta.trees[TREE_FREE]);
    keel_val k, v;
    uint64_t total = 0;
    int rc;
    for (rc = cursor_first(&c, &k, &v); rc == 0; rc = cursor_next(&c, &k, &v)) {
        if (k.len != FREE_KEY_SIZE || v.len % 8) {
            problem(ck, "record of key size %zu, value size %zu", k.len, v.len);
            continue;
        }
        uint64_t freed_by = free_key_txnid(k.data);
        if (freed_by > txn->meta.txnid) /* the next commit would overwrite it */
            problem(ck, "record of txn %llu, after the snapshot's txn %llu", (unsigned long long)freed_by,
                    (unsigned long long)txn->meta.txnid);
        for (size_t i = 0; i < v.len / 8; i++) {
            uint64_t pg = rd64((const uint8_t *)v.data + 8 * i);
            mark(ck, pg, 1, "free");
            total++;
        }
    }
    if (rc != KEEL_NOTFOUND)
        problem(ck, "walk stopped: %s%s", keel_strerror(rc), where(rc));
    if (ck->tail) {
        ck->tree = "free tail";
        if (freelist_tail_groups(ck->tail + META_TAIL_HDR, rd32(ck->tail), txn->meta.npages, txn->meta.txnid,
                                 check_tail_group, ck))
            problem(ck, "a group names a page outside the file, a later txn, or more pages than it holds");
        total += ck->tail_pages;
    }
    if (total != txn->meta.free_pages)
        problem(ck, "%llu free pages recorded, meta says %llu", (unsigned long long)total,
                (unsigned long long)txn->meta.free_pages);
}


static int check_bucket(const char *name, void *ctx)
{
    struct checker *ck = ctx;
    keel_bucket b;
    struct tree_desc *t;
    int rc = bucket_open(ck->txn, name, 0, &b);
    if (rc == 0)
        rc = bucket_tree(ck->txn, b, &t);
    if (rc) {
        ck->tree = name;
        problem(ck, "bucket descriptor unreadable: %s%s", keel_strerror(rc), where(rc));
        return 0;
    }
    struct tree_desc copy = *t;
    check_tree(ck, name, copy.id, &copy, (copy.flags & TREE_F_DUPSORT) ? ck->txn->db->max_pair_key : ck->txn->db->max_key);
    return 0;
}

int keel_check(keel_db *db, void (*report)(void *ctx, const char *msg), void *ctx, uint64_t *problems)
{
    error_detail_clear();
    if (!db || !problems)
        return KEEL_BADARG;
    *problems = 0;
    keel_txn *txn;
    uint8_t *tail;
    int rc = txn_begin_with_tail(db, &txn, &tail);
    if (rc)
        return rc;
    struct checker ck = {.txn = txn, .npages = txn->meta.npages, .report = report, .ctx = ctx, .tail = tail};
    uint64_t fsize;
    if ((rc = os_file_size(db->fd, &fsize)))
        goto out;
    if (fsize < ck.npages * db->psize) {
        ck.tree = "file";
        problem(&ck, "file is %llu bytes, the meta needs %llu", (unsigned long long)fsize,
                (unsigned long long)(ck.npages * db->psize));
        goto out;
    }
    ck.seen = os_calloc((size_t)(ck.npages / 8 + 1));
    if (!ck.seen) {
        rc = KEEL_NOMEM;
        goto out;
    }
    struct meta m;
    ck.tree = "meta";
    /* A meta whose free tail does not match its sum is what a crash in the
     * middle of writing the meta page leaves: the other meta is in use, as
     * after a torn one-flush commit, and the next commit overwrites it. */
    for (unsigned s = 0; s < 2; s++)
        if (meta_check(db->map + (size_t)s * db->psize, db->psize, db->psize, &m) &&
            meta_check_head(db->map + (size_t)s * db->psize, db->psize, db->psize, &m, false))
            problem(&ck, "meta page %u is not valid (the other one is in use)", s);
    /* a damaged meta in the spare slot is repaired by the next commit: report, but it is not fatal */
    uint64_t meta_problems = ck.problems;
    check_tree(&ck, "default bucket", 0, &txn->meta.trees[TREE_DEFAULT], db->max_key);
    uint64_t expiring = ck.expiring; /* internal trees hold no expiring entries */
    check_tree(&ck, "catalog", TAG_CATALOG, &txn->meta.trees[TREE_CATALOG], KEEL_MAX_BUCKET_NAME);
    check_tree(&ck, "free tree", TAG_FREE, &txn->meta.trees[TREE_FREE], FREE_KEY_SIZE);
    check_tree(&ck, "expiry tree", TAG_EXPIRY, &txn->meta.trees[TREE_EXPIRY], EXPIRY_KEY_PREFIX + db->max_key);
    if (ck.expiring != expiring)
        problem(&ck, "internal trees hold entries with an expiry time");
    if (ck.problems == meta_problems) {
        if ((rc = bucket_list(txn, check_bucket, &ck))) {
            ck.tree = "catalog";
            problem(&ck, "walk stopped: %s%s", keel_strerror(rc), where(rc));
            rc = 0;
        }
        check_free(&ck);
        check_expiry(&ck);
        ck.tree = "file";
        uint64_t leaked = 0, first = 0;
        for (uint64_t p = 2; p < ck.npages; p++)
            if (!(ck.seen[p >> 3] & (1u << (p & 7)))) {
                if (!leaked++)
                    first = p;
            }
        if (leaked)
            problem(&ck, "%llu pages neither used nor free (first: %llu)", (unsigned long long)leaked,
                    (unsigned long long)first);
    }
    os_free(ck.seen);
out:
    os_free(tail);
    txn_abort(txn);
    *problems = ck.problems;
    return rc;
}
