/*
 * salvage.c — keel_salvage(), `keel salvage`: a new database from every
 * record of a damaged one that can still be read.
 *
 * Contract:
 *   - It reads the source file with pread, page by page, never through a
 *     handle or the map: a file that no longer opens (both metas gone
 *     excepted), or that would SIGBUS, is still read.  It never writes it.
 *   - It walks the newest valid meta's trees: the catalog (for the named
 *     buckets), the free tree (to know which pages are free), the default
 *     bucket and every named bucket.  In a format 2 file a page is taken
 *     only when it matches the sum its reference holds (format.h: the page
 *     trailer); format 1 pages are taken when their structure checks.
 *   - A damaged leaf: its keys (the range its parent's separators give) are
 *     lost.  Its records are not taken: a flipped bit in a value must not
 *     come back as data.  A damaged overflow run loses its one record.
 *   - A damaged branch page: the leaves below it are still in the file.
 *     salvage scans every page for intact leaves (their own trailer sum
 *     matches: format 2 only) of the same tree, no newer than the meta,
 *     reached by no intact path and not free, with keys inside the branch's
 *     range; where two overlap (possible only when the free tree could not
 *     be read whole) the newer wins.  When the damaged branch is a parent
 *     of leaves whose child list still parses, the range is whole if every
 *     leaf it names came back; any other damaged branch's range is reported
 *     as possibly incomplete.
 *   - Buckets whose catalog entries were lost come back, when their pages
 *     do, as "salvaged-<id>".
 *   - The expiry index is rebuilt from the records' expiry times; the free
 *     tree is not copied.
 *
 * Layer: a top layer beside copy and check (api); it writes the new
 * database through the public API.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

enum leaf_kind { LEAF_RECORDS, LEAF_CATALOG, LEAF_FREE, LEAF_SKIP };

struct range_note { /* a damaged branch's key range, scanned for at the end */
    uint32_t tag;
    keel_bucket bucket;
    uint8_t *lo, *hi; /* copies; NULL = unbounded */
    size_t lolen, hilen;
    uint64_t *children; /* a parent of leaves whose child list parsed; else NULL */
    size_t nchildren;
    const char *tree;
};

struct named { /* a catalog entry: a named bucket */
    char name[KEEL_MAX_BUCKET_NAME + 1];
    struct tree_desc d;
};

struct cand { /* a leaf the scan found: intact, reached by nothing, not free */
    uint64_t pgno, txnid;
    uint32_t tag;
    bool taken;
};

struct salvage {
    int fd;
    uint32_t psize, node_end;
    bool summed;
    uint64_t npages; /* pages the meta counts, clipped to the file */
    struct meta m;
    uint8_t *reached, *free_map; /* a bit per page */
    bool free_known;             /* the free tree and tail were read whole */
    bool catalog_damaged;
    size_t max_key;
    size_t max_leaf_key; /* the longer of max_key and a DUPSORT tree's longest pair key */
    keel_txn *txn; /* of the new database */
    keel_salvage_stat *st;
    void (*report)(void *ctx, const char *msg);
    void *ctx;
    /* the tree being walked */
    const char *tree;
    uint32_t tag;
    keel_bucket bucket;
    enum leaf_kind kind;
    /* what the walks gathered */
    struct range_note *notes;
    size_t nnotes, notecap;
    struct named *named;
    size_t nnamed, namedcap;
};

static bool bit(const uint8_t *map, uint64_t p) { return map[p / 8] & (1u << (p % 8)); }
static void set_bit(uint8_t *map, uint64_t p) { map[p / 8] |= (uint8_t)(1u << (p % 8)); }

static int grow(void **v, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return 0;
    size_t c = *cap ? *cap * 2 : 16;
    void *nv = os_realloc(*v, c * size);
    if (!nv)
        return KEEL_NOMEM;
    *v = nv;
    *cap = c;
    return 0;
}

static void say(struct salvage *s, const char *fmt, ...)
{
    if (!s->report)
        return;
    char msg[800];
    int n = snprintf(msg, sizeof msg, "%s: ", s->tree);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
    va_end(ap);
    s->report(s->ctx, msg);
}

/* Keys [lo, hi) could not all be read back. */
static void lost(struct salvage *s, const uint8_t *lo, size_t lolen, const uint8_t *hi, size_t hilen,
                 const char *why)
{
    char range[300];
    range_text(range, sizeof range, lo, lolen, hi, hilen);
    s->st->lost_ranges++;
    say(s, "%s lost: %s", range, why);
}

/* Pages [pg, pg + n) into buf; they must say they are page pg. */
static int read_pages(struct salvage *s, uint64_t pg, uint32_t n, uint8_t *buf)
{
    if (pg < 2 || n == 0 || pg + n > s->npages || pg + n < pg)
        return KEEL_CORRUPTED;
    size_t want = (size_t)n * s->psize, got;
    int rc = os_pread_upto(s->fd, buf, want, pg * s->psize, &got);
    if (rc)
        return rc;
    return got == want && page_pgno(buf) == pg ? 0 : KEEL_CORRUPTED;
}

/* Format 2: the page (run of len bytes) matches the sum its reference
 * holds (0: none known, as for a page the scan found: its own), names the
 * tree and is no newer than the meta.  Format 1 has nothing to match. */
static bool intact(const struct salvage *s, const uint8_t *p, size_t len, uint64_t sum)
{
    if (!s->summed)
        return true;
    uint64_t own = page_sum(p, len);
    return (sum ? own == sum : true) && page_trailer_sum(p, len) == own && page_trailer_tree(p, len) == s->tag &&
           page_trailer_txnid(p, len) <= s->m.txnid;
}

/* The page's nodes lie inside it, keys ascending and inside [lo, hi). */
static bool well_formed(const struct salvage *s, const uint8_t *p, unsigned want, const uint8_t *lo, size_t lolen,
                        const uint8_t *hi, size_t hilen)
{
    unsigned n = page_nkeys(p);
    if (page_flags(p) != want || n == 0 || page_upper(p) > s->node_end || page_upper(p) < PAGE_HDR + SLOT_SIZE * n)
        return false;
    const uint8_t *prev = NULL;
    size_t prevlen = 0;
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *nd;
        if (page_node(p, i, s->node_end, &nd))
            return false;
        if (want == P_BRANCH && i == 0)
            continue;
        bool leaf = want == P_LEAF;
        const uint8_t *k = leaf ? leaf_node_key(nd) : branch_node_key(nd);
        size_t kl = leaf ? leaf_node_ksize(nd) : branch_node_ksize(nd);
        if ((prev && bt_cmp(prev, prevlen, k, kl) >= 0) || (lo && bt_cmp(k, kl, lo, lolen) < 0) ||
            (hi && bt_cmp(k, kl, hi, hilen) >= 0) || (leaf && (kl == 0 || kl > s->max_leaf_key)))
            return false;
        prev = k;
        prevlen = kl;
    }
    return true;
}

/* Node i of a page well_formed passed. */
static const uint8_t *node_of(const struct salvage *s, const uint8_t *p, unsigned i)
{
    const uint8_t *nd = NULL;
    int rc = page_node(p, i, s->node_end, &nd);
    KEEL_ASSERT(rc == 0);
    (void)rc;
    return nd;
}

/* ---- what a leaf holds ---- */
/* A record into the new database; a damaged overflow run loses it alone. */
static int put_record(struct salvage *s, const uint8_t *nd)
{
    keel_val key = {leaf_node_key(nd), leaf_node_ksize(nd)}, val = {leaf_node_val(nd), leaf_node_vsize(nd)};
    uint8_t *run = NULL;
    if (leaf_node_flags(nd) & N_BIG) {
        uint64_t ov = leaf_node_overflow(nd), vsize = leaf_node_vsize(nd);
        uint64_t np = (PAGE_HDR + vsize + (s->psize - s->node_end) + s->psize - 1) / s->psize;
        bool ok = ov >= 2 && np <= s->npages && ov <= s->npages - np && (run = os_malloc((size_t)np * s->psize)) &&
                  !read_pages(s, ov, (uint32_t)np, run) && page_flags(run) == P_OVERFLOW && page_upper(run) == np &&
                  intact(s, run, (size_t)np * s->psize, leaf_node_overflow_sum(nd));
        if (!ok) {
            os_free(run);
            s->st->damaged_pages++;
            lost(s, key.data, key.len, NULL, 0, "its overflow run is damaged");
            return 0;
        }
        for (uint64_t i = 0; i < np; i++)
            set_bit(s->reached, ov + i);
        val.data = run + PAGE_HDR;
    }
    unsigned kind = 0;
    int rc = keel_bucket_flags(s->txn, s->bucket, &kind);
    if (!rc && kind == KEEL_DUPSORT) { /* the pair key holds key and value (format.h) */
        size_t part = pair_key_part(key.data, key.len);
        bool pair_value = val.len == 0 || val.len == PAIR_COUNT_SIZE; /* empty, or a first pair's count: counted again */
        uint8_t *k = part && pair_value && !run ? os_malloc(part) : NULL;
        if (!k) {
            lost(s, key.data, key.len, NULL, 0, "not a DUPSORT pair");
            return 0;
        }
        val = (keel_val){(const uint8_t *)key.data + part + PAIR_TERM_SIZE, key.len - part - PAIR_TERM_SIZE};
        key = (keel_val){k, pair_key_unescape(k, key.data, part)};
        run = k; /* freed below */
    }
    if (!rc && key.len > s->max_key) {
        lost(s, key.data, key.len, NULL, 0, "its key is too long");
        os_free(run);
        return 0;
    }
    if (!rc)
        rc = keel_put(s->txn, s->bucket, key, val, 0);
    int64_t had = 0; /* a DUPSORT key's other values have it already */
    if (!rc && (leaf_node_flags(nd) & N_EXPIRES) && kind == KEEL_DUPSORT)
        keel_expiry_at(s->txn, s->bucket, key, &had);
    if (!rc && (leaf_node_flags(nd) & N_EXPIRES) && had != leaf_node_expiry(nd))
        rc = keel_expire_at(s->txn, s->bucket, key, leaf_node_expiry(nd));
    os_free(run);
    s->st->records += rc == 0;
    return rc;
}

static int add_named(struct salvage *s, const uint8_t *nd)
{
    size_t dlen = s->summed ? TREE_DESC_SIZE : TREE_DESC_V1_SIZE, klen = leaf_node_ksize(nd);
    if ((leaf_node_flags(nd) & N_BIG) || leaf_node_vsize(nd) != dlen || klen > KEEL_MAX_BUCKET_NAME ||
        memchr(leaf_node_key(nd), 0, klen))
        return 0;
    int rc = grow((void **)&s->named, &s->namedcap, s->nnamed, sizeof(*s->named));
    if (rc)
        return rc;
    struct named *n = &s->named[s->nnamed++];
    memset(n, 0, sizeof(*n));
    memcpy(n->name, leaf_node_key(nd), klen);
    memcpy(&n->d, leaf_node_val(nd), dlen);
    return 0;
}

static void mark_free(struct salvage *s, const uint8_t *pages, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t pg = rd64(pages + 8 * i);
        if (pg >= 2 && pg < s->npages)
            set_bit(s->free_map, pg);
    }
}

static int take_leaf(struct salvage *s, const uint8_t *page)
{
    int rc = 0;
    for (unsigned i = 0; i < page_nkeys(page) && !rc; i++) {
        const uint8_t *nd = node_of(s, page, i);
        if (s->kind == LEAF_RECORDS)
            rc = put_record(s, nd);
        else if (s->kind == LEAF_CATALOG)
            rc = add_named(s, nd);
        else if (s->kind == LEAF_FREE && leaf_node_ksize(nd) == FREE_KEY_SIZE && !(leaf_node_flags(nd) & N_BIG))
            mark_free(s, leaf_node_val(nd), leaf_node_vsize(nd) / 8);
    }
    return rc;
}

/* ---- the walk from the meta ---- */
static int note_range(struct salvage *s, const uint8_t *page, bool parsed, const uint8_t *lo, size_t lolen,
                      const uint8_t *hi, size_t hilen)
{
    int rc = grow((void **)&s->notes, &s->notecap, s->nnotes, sizeof(*s->notes));
    if (rc)
        return rc;
    struct range_note *r = &s->notes[s->nnotes];
    *r = (struct range_note){.tag = s->tag, .bucket = s->bucket, .lolen = lolen, .hilen = hilen, .tree = s->tree};
    if ((lo && !(r->lo = os_malloc(lolen + 1))) || (hi && !(r->hi = os_malloc(hilen + 1))) ||
        (parsed && !(r->children = os_malloc(page_nkeys(page) * sizeof(uint64_t))))) {
        os_free(r->lo);
        os_free(r->hi);
        return KEEL_NOMEM;
    }
    if (lo)
        memcpy(r->lo, lo, lolen);
    if (hi)
        memcpy(r->hi, hi, hilen);
    for (unsigned i = 0; parsed && i < page_nkeys(page); i++) {
        r->children[r->nchildren++] = branch_node_child(node_of(s, page, i));
    }
    s->nnotes++;
    return 0;
}

static int walk(struct salvage *s, uint64_t pg, uint64_t sum, unsigned height, const uint8_t *lo, size_t lolen,
                const uint8_t *hi, size_t hilen);

static int walk_children(struct salvage *s, const uint8_t *page, unsigned height, const uint8_t *lo, size_t lolen,
                         const uint8_t *hi, size_t hilen)
{
    unsigned n = page_nkeys(page);
    int rc = 0;
    for (unsigned i = 0; i < n && !rc; i++) {
        const uint8_t *nd = node_of(s, page, i), *nx = i + 1 < n ? node_of(s, page, i + 1) : NULL;
        const uint8_t *clo = i ? branch_node_key(nd) : lo, *chi = nx ? branch_node_key(nx) : hi;
        size_t clolen = i ? branch_node_ksize(nd) : lolen, chilen = nx ? branch_node_ksize(nx) : hilen;
        rc = walk(s, branch_node_child(nd), branch_node_sum(nd), height - 1, clo, clolen, chi, chilen);
    }
    return rc;
}

/* Page pg, reached through a reference holding sum, height levels above
 * the leaves (1: a leaf), its keys in [lo, hi). */
static int walk(struct salvage *s, uint64_t pg, uint64_t sum, unsigned height, const uint8_t *lo, size_t lolen,
                const uint8_t *hi, size_t hilen)
{
    if (height == 0 || height > KEEL_MAX_DEPTH || pg < 2 || pg >= s->npages || bit(s->reached, pg)) {
        s->st->damaged_pages++;
        lost(s, lo, lolen, hi, hilen, "a reference to a page it cannot name");
        return 0;
    }
    set_bit(s->reached, pg);
    uint8_t *page = os_malloc(s->psize);
    if (!page)
        return KEEL_NOMEM;
    bool leaf = height == 1;
    int rc = read_pages(s, pg, 1, page);
    bool ok = !rc && (!s->summed || sum != 0) && intact(s, page, s->psize, sum);
    bool parsed = !rc && well_formed(s, page, leaf ? P_LEAF : P_BRANCH, lo, lolen, hi, hilen);
    if (rc && rc != KEEL_CORRUPTED)
        goto out;
    rc = 0;
    if (ok && parsed) {
        rc = leaf ? take_leaf(s, page) : walk_children(s, page, height, lo, lolen, hi, hilen);
        goto out;
    }
    s->st->damaged_pages++;
    if (s->kind == LEAF_FREE)
        s->free_known = false;
    if (s->kind == LEAF_CATALOG)
        s->catalog_damaged = true;
    char why[80];
    snprintf(why, sizeof why, "%s page %llu: %s", leaf ? "leaf" : "branch", (unsigned long long)pg,
             ok ? "damaged structure" : "checksum mismatch");
    if (leaf) {
        lost(s, lo, lolen, hi, hilen, why);
    } else {
        say(s, "%s; the pages below it are looked for in the whole file", why);
        rc = note_range(s, page, parsed && height == 2, lo, lolen, hi, hilen);
    }
out:
    os_free(page);
    return rc;
}

static int walk_tree(struct salvage *s, const char *name, uint32_t tag, keel_bucket b, enum leaf_kind kind,
                     const struct tree_desc *d)
{
    s->tree = name;
    s->tag = tag;
    s->bucket = b;
    s->kind = kind;
    if (!d->root)
        return 0;
    if (d->depth == 0 || d->depth > KEEL_MAX_DEPTH) {
        s->st->damaged_pages++;
        lost(s, NULL, 0, NULL, 0, "its descriptor is damaged");
        return 0;
    }
    return walk(s, d->root, d->root_sum, d->depth, NULL, 0, NULL, 0);
}

/* ---- the scan behind damaged branches ---- */
static int scan_candidates(struct salvage *s, struct cand **out, size_t *count)
{
    size_t cap = 0, n = 0;
    struct cand *v = NULL;
    uint8_t *page = os_malloc(s->psize);
    if (!page)
        return KEEL_NOMEM;
    int rc = 0;
    for (uint64_t pg = 2; pg < s->npages && !rc; pg++) {
        if (bit(s->reached, pg) || (s->free_known && bit(s->free_map, pg)))
            continue;
        if (read_pages(s, pg, 1, page) || page_flags(page) != P_LEAF)
            continue;
        uint64_t own = page_sum(page, s->psize);
        if (page_trailer_sum(page, s->psize) != own || page_trailer_txnid(page, s->psize) > s->m.txnid)
            continue;
        if (!(rc = grow((void **)&v, &cap, n, sizeof(*v))))
            v[n++] = (struct cand){pg, page_trailer_txnid(page, s->psize), page_trailer_tree(page, s->psize), false};
    }
    os_free(page);
    if (rc) {
        os_free(v);
        return rc;
    }
    *out = v;
    *count = n;
    return 0;
}

static int newer_first(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    return x->txnid > y->txnid ? -1 : x->txnid < y->txnid;
}

/* The leaves the scan found for one damaged branch: the newest first, each
 * taken whole when its keys lie in the range and meet no key taken before. */
static int recover_range(struct salvage *s, struct range_note *r, struct cand *c, size_t n)
{
    s->tree = r->tree;
    s->tag = r->tag;
    s->bucket = r->bucket;
    s->kind = LEAF_RECORDS;
    uint8_t *page = os_malloc(s->psize);
    struct { uint8_t *lo, *hi; size_t lolen, hilen; } *spans = os_malloc((n ? n : 1) * sizeof(*spans));
    size_t nspans = 0, found = 0;
    int rc = page && spans ? 0 : KEEL_NOMEM;
    for (size_t i = 0; i < n && !rc; i++) {
        if (c[i].taken || c[i].tag != r->tag || read_pages(s, c[i].pgno, 1, page) ||
            !well_formed(s, page, P_LEAF, r->lo, r->lolen, r->hi, r->hilen))
            continue;
        const uint8_t *first = node_of(s, page, 0), *last = node_of(s, page, page_nkeys(page) - 1);
        bool overlaps = false;
        for (size_t j = 0; j < nspans && !overlaps; j++)
            overlaps = bt_cmp(leaf_node_key(first), leaf_node_ksize(first), spans[j].hi, spans[j].hilen) <= 0 &&
                       bt_cmp(leaf_node_key(last), leaf_node_ksize(last), spans[j].lo, spans[j].lolen) >= 0;
        if (overlaps)
            continue;
        size_t fl = leaf_node_ksize(first), ll = leaf_node_ksize(last);
        if (!(spans[nspans].lo = os_malloc(fl + 1)) || !(spans[nspans].hi = os_malloc(ll + 1))) {
            os_free(spans[nspans].lo);
            rc = KEEL_NOMEM;
            break;
        }
        memcpy(spans[nspans].lo, leaf_node_key(first), fl);
        memcpy(spans[nspans].hi, leaf_node_key(last), ll);
        spans[nspans].lolen = fl;
        spans[nspans].hilen = ll;
        nspans++;
        c[i].taken = true;
        set_bit(s->reached, c[i].pgno);
        s->st->scanned_pages++;
        found++;
        rc = take_leaf(s, page);
    }
    /* whole when the damaged parent's children all came back */
    bool whole = r->children != NULL;
    for (size_t i = 0; i < r->nchildren && whole; i++)
        whole = r->children[i] < s->npages && bit(s->reached, r->children[i]);
    if (!rc && !whole) {
        char why[120];
        snprintf(why, sizeof why, "%zu leaf pages found by the scan; there may have been more", found);
        lost(s, r->lo, r->lolen, r->hi, r->hilen, why);
    }
    for (size_t j = 0; j < nspans; j++) {
        os_free(spans[j].lo);
        os_free(spans[j].hi);
    }
    os_free(spans);
    os_free(page);
    return rc;
}

static bool known_bucket(const struct salvage *s, uint32_t tag)
{
    if (tag == 0 || tag >= BUCKET_ID_MAX)
        return true;
    for (size_t i = 0; i < s->nnamed; i++)
        if (s->named[i].d.id == tag)
            return true;
    return false;
}

/* Damaged branches' ranges, then (the catalog damaged) buckets it lost. */
static int scan(struct salvage *s)
{
    if (!s->summed || (!s->nnotes && !s->catalog_damaged))
        return 0;
    struct cand *c = NULL;
    size_t n = 0;
    int rc = scan_candidates(s, &c, &n);
    if (rc)
        return rc;
    qsort(c, n, sizeof(*c), newer_first);
    for (size_t i = 0; i < s->nnotes && !rc; i++)
        rc = recover_range(s, &s->notes[i], c, n);
    for (size_t i = 0; i < n && !rc && s->catalog_damaged; i++) {
        if (c[i].taken || known_bucket(s, c[i].tag))
            continue;
        char name[40];
        snprintf(name, sizeof name, "salvaged-%u", c[i].tag);
        struct range_note r = {.tag = c[i].tag, .tree = name};
        if (!(rc = keel_bucket_open(s->txn, name, KEEL_CREATE, &r.bucket))) {
            say(s, "a bucket whose catalog entry is lost comes back as %s", name);
            rc = recover_range(s, &r, c, n);
        }
        if (!rc && (rc = grow((void **)&s->named, &s->namedcap, s->nnamed, sizeof(*s->named))) == 0) {
            memset(&s->named[s->nnamed], 0, sizeof(*s->named));
            s->named[s->nnamed++].d.id = c[i].tag; /* known from now on */
        }
    }
    os_free(c);
    return rc;
}

/* ---- the source, the destination ---- */
static int tail_group(void *ctx, uint64_t txnid, const uint8_t *pages, size_t n)
{
    (void)txnid;
    mark_free(ctx, pages, n);
    return 0;
}

/* The newest meta's free tail marks its pages free too. */
static void read_free_tail(struct salvage *s, unsigned slot)
{
    if (!(s->m.flags & META_F_FREETAIL))
        return;
    uint8_t *page = os_malloc(s->psize);
    size_t got;
    size_t off = meta_tail_off(s->psize);
    if (!page || os_pread_upto(s->fd, page, s->psize, (uint64_t)slot * s->psize, &got) || got != s->psize ||
        rd32(page + off) > meta_tail_max_words(s->psize) ||
        freelist_tail_groups(page + off + META_TAIL_HDR, rd32(page + off), s->npages, s->m.txnid, tail_group, s))
        s->free_known = false;
    os_free(page);
}

static int salvage_trees(struct salvage *s, unsigned slot)
{
    s->free_known = true;
    read_free_tail(s, slot);
    int rc = walk_tree(s, "free tree", TAG_FREE, 0, LEAF_FREE, &s->m.trees[TREE_FREE]);
    if (!rc)
        rc = walk_tree(s, "catalog", TAG_CATALOG, 0, LEAF_CATALOG, &s->m.trees[TREE_CATALOG]);
    if (!rc)
        rc = walk_tree(s, "default bucket", 0, 0, LEAF_RECORDS, &s->m.trees[TREE_DEFAULT]);
    for (size_t i = 0; i < s->nnamed && !rc; i++) {
        struct named *nb = &s->named[i];
        keel_bucket b;
        unsigned kind = (nb->d.flags & TREE_F_DUPSORT) ? KEEL_DUPSORT : 0;
        if (nb->d.id == 0 || nb->d.id >= BUCKET_ID_MAX ||
            (rc = keel_bucket_open(s->txn, nb->name, KEEL_CREATE | kind, &b)))
            continue;
        rc = walk_tree(s, nb->name, nb->d.id, b, LEAF_RECORDS, &nb->d);
    }
    return rc ? rc : scan(s);
}

static void salvage_free(struct salvage *s)
{
    for (size_t i = 0; i < s->nnotes; i++) {
        os_free(s->notes[i].lo);
        os_free(s->notes[i].hi);
        os_free(s->notes[i].children);
    }
    os_free(s->notes);
    os_free(s->named);
    os_free(s->reached);
    os_free(s->free_map);
}

int keel_salvage(const char *src, const char *dest, void (*report)(void *ctx, const char *msg), void *ctx,
                 keel_salvage_stat *st)
{
    error_detail_clear();
    if (!src || !*src || !dest || !*dest || !st)
        return KEEL_BADARG;
    memset(st, 0, sizeof(*st));
    struct stat sb;
    if (lstat(dest, &sb) == 0) {
        error_detail_set("%s exists", dest);
        return EEXIST;
    }
    struct salvage s = {.st = st, .report = report, .ctx = ctx};
    s.fd = keel_os.open(src, O_RDONLY | O_CLOEXEC, 0);
    if (s.fd < 0)
        return errno;
    unsigned slot;
    uint64_t fsize;
    int rc = os_file_size(s.fd, &fsize);
    if (!rc && (rc = meta_newest_fd(s.fd, 0, &s.m, &slot)) == 0 && (s.m.flags & META_F_ONEFLUSH) &&
        meta_verify_commit(s.fd, fsize, &s.m, slot)) {
        /* a torn last commit (a crash before its sync): the other meta */
        struct meta other;
        uint8_t *page = os_malloc(s.m.page_size);
        size_t got;
        rc = KEEL_CORRUPTED;
        if (page && !os_pread_upto(s.fd, page, s.m.page_size, (uint64_t)(1 - slot) * s.m.page_size, &got) &&
            !meta_check(page, got, s.m.page_size, &other)) {
            s.m = other;
            slot = 1 - slot;
            rc = 0;
        }
        os_free(page);
    }
    if (rc) {
        os_close(s.fd);
        return rc;
    }
    s.psize = s.m.page_size;
    s.summed = s.m.version >= 2;
    s.node_end = s.psize - (s.summed ? PAGE_TRAILER : 0);
    s.max_key = format_max_key(s.node_end, s.summed);
    s.max_leaf_key = format_max_pair_key(s.node_end) > s.max_key ? format_max_pair_key(s.node_end) : s.max_key;
    s.npages = s.m.npages < fsize / s.psize ? s.m.npages : fsize / s.psize;
    s.reached = os_calloc(s.npages / 8 + 1);
    s.free_map = os_calloc(s.npages / 8 + 1);
    keel_db *out = NULL;
    keel_options o = {.page_size = s.psize};
    if (!s.reached || !s.free_map)
        rc = KEEL_NOMEM;
    else if (!(rc = keel_open(dest, &o, &out)) && !(rc = keel_begin(out, 0, &s.txn)))
        rc = salvage_trees(&s, slot);
    if (s.txn)
        rc = rc ? (keel_abort(s.txn), rc) : keel_commit(s.txn);
    if (out)
        keel_close(out);
    if (rc && out) {
        char lock[PATH_MAX];
        unlink(dest);
        if (keel_lock_path(dest, lock, sizeof lock) == 0)
            unlink(lock);
    }
    salvage_free(&s);
    os_close(s.fd);
    return rc;
}
