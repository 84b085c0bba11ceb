/*
 * fuzz_file.c — hostile database files: keel must answer KEEL_CORRUPTED (or
 * another error) and never crash, hang, leak or read out of bounds.
 *
 * Input: byte 0 holds options, the rest is the database file image.
 *   bits 0-1  the page size used to find meta 1 for re-sealing: 4096, 8192,
 *             16384, 65536 (meta 0 says the real one; see below)
 *   bit 2     keep the image as it is: no meta checksum, commit list, free
 *             tail or page sum is re-sealed.  Otherwise every meta whose
 *             magic is right gets a correct XXH3 checksum, so that
 *             mutations of meta fields (roots, npages, depth, counts) reach
 *             the tree code instead of dying at the checksum.
 *   bit 3     the clock stands far in the future (every key with an expiry
 *             has expired), else at 1000 ms
 *   bit 4     open read-only (no write txn)
 *   bit 5     stale sums: the page sums of a format 2 image stay as they
 *             are (the metas are still re-sealed unless bit 2), and the
 *             file is opened with KEEL_VERIFY: damage must be detected.
 *             Otherwise (and bit 2 clear) the page sums are re-sealed
 *             bottom-up from both metas (ff_reseal_sums): every reachable
 *             page's and overflow run's trailer, the branch node or leaf
 *             node that refers to it, the catalog's bucket descriptors and
 *             the metas' root sums, so that a mutated format 2 image is a
 *             consistent Merkle tree again and mutations reach the tree
 *             code, under KEEL_VERIFY and keel_check too.
 *   bit 6     open with KEEL_VERIFY (with re-sealed sums: the verifying
 *             read paths on pages that pass)
 *
 * Then: open, keel_check, a read txn that walks every bucket (default and
 * keel_bucket_list) with cursors forwards and backwards and gets some keys,
 * a small write txn (puts incl. an overflow value and a TTL, deletes, CAS,
 * incr, cursor deletes, bucket create/drop, purge) and commit, reopen, check
 * and walk again.
 *
 * Oracles: beyond "no crash":
 *   - if the first keel_check found no problem and the write txn committed,
 *     the reopened file must check clean too (a valid file stays valid
 *     after a write);
 *   - damage is detected (any mode: the target recomputes the sums of the
 *     image it wrote, ff_sums_check, from the meta of the snapshot keel
 *     opened): if some page or overflow run reachable from it does not
 *     match the sum its reference holds (or its own trailer's), keel_check
 *     reports a problem or fails;
 *   - under KEEL_VERIFY, if such a page lies in the default bucket's tree
 *     (a branch or leaf page, or the overflow run of an entry without an
 *     expiry time: the entries a cursor never skips), a cursor walk over
 *     the whole default bucket does not end without an error.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "format.h"
#include "fuzz.h"
#include "keel.h"

#define FF_STEPS 600  /* cursor steps per walk: a damaged tree may share pages (a DAG of huge fan-out) */
#define FF_KEYS 8     /* keys remembered per walk for gets and deletes */
#define FF_BUCKETS 12 /* named buckets visited */

static int64_t ff_clock(void *ctx) { return *(const int64_t *)ctx; }

static void ff_report(void *ctx, const char *msg)
{
    (void)ctx;
    fprintf(stderr, "  check: %s\n", msg);
}

struct ff_keys {
    size_t n;
    uint8_t *k[FF_KEYS];
    size_t len[FF_KEYS];
};

static void ff_keep(struct ff_keys *ks, keel_val k)
{
    if (ks->n >= FF_KEYS || k.len == 0 || k.len > 65535)
        return;
    uint8_t *c = malloc(k.len);
    if (!c)
        return;
    memcpy(c, k.data, k.len);
    ks->k[ks->n] = c;
    ks->len[ks->n++] = k.len;
}

static void ff_keys_free(struct ff_keys *ks)
{
    for (size_t i = 0; i < ks->n; i++)
        free(ks->k[i]);
    ks->n = 0;
}

static void ff_touch(keel_val v)
{
    /* read every byte handed out: ASan sees a value that runs off its page */
    volatile uint8_t sink = 0;
    const uint8_t *p = v.data;
    for (size_t i = 0; i < v.len; i += 97)
        sink ^= p[i];
    if (v.len)
        sink ^= p[v.len - 1];
    (void)sink;
}

/* Walks bucket b both ways, remembers some keys, gets them back.  true
 * when the forward walk went over the whole bucket without an error. */
static bool ff_walk(keel_txn *txn, keel_bucket b, struct ff_keys *ks)
{
    keel_cursor *c;
    if (keel_cursor_open(txn, b, &c))
        return false;
    keel_val k, v;
    int rc, steps = 0;
    for (rc = keel_cursor_first(c, &k, &v); rc == 0 && steps < FF_STEPS; rc = keel_cursor_next(c, &k, &v), steps++) {
        ff_touch(k);
        ff_touch(v);
        if (steps % 7 == 0)
            ff_keep(ks, k);
    }
    bool whole = rc == KEEL_NOTFOUND;
    steps = 0;
    for (rc = keel_cursor_last(c, &k, &v); rc == 0 && steps < FF_STEPS; rc = keel_cursor_prev(c, &k, &v), steps++) {
        ff_touch(k);
        ff_touch(v);
        if (steps == 0)
            ff_keep(ks, k);
    }
    if (keel_cursor_current(c, &k, &v) == 0) {
        ff_touch(k);
        ff_touch(v);
    }
    /* key by key (DUPSORT moves; in a plain bucket a key has one value):
     * counts, a step inside the key and back, then back over the keys */
    steps = 0;
    for (rc = keel_cursor_first(c, &k, &v); rc == 0 && steps < FF_STEPS;
         rc = keel_cursor_next_key(c, &k, &v), steps++) {
        uint64_t n;
        keel_cursor_count(c, &n);
        if (keel_cursor_next_dup(c, &k, &v) == 0) {
            ff_touch(v);
            keel_cursor_prev_dup(c, &k, &v);
        }
    }
    steps = 0;
    for (rc = keel_cursor_last(c, &k, &v); rc == 0 && steps < FF_STEPS / 4;
         rc = keel_cursor_prev_key(c, &k, &v), steps++)
        ff_touch(k);
    for (size_t i = 0; i < ks->n; i++) {
        keel_val key = {ks->k[i], ks->len[i]};
        if (keel_cursor_seek(c, key, &k, &v) == 0) {
            ff_touch(k);
            ff_touch(v);
            if (keel_cursor_next(c, &k, &v) == 0)
                ff_touch(v);
            if (keel_cursor_prev(c, &k, &v) == 0)
                ff_touch(v);
        }
        if (keel_cursor_seek_key(c, key, &v) == 0)
            ff_touch(v);
        if (keel_cursor_seek_pair(c, key, (keel_val){"0", 1}, &k, &v) == 0)
            ff_touch(v);
        if (keel_get(txn, b, key, &v) == 0)
            ff_touch(v);
        int64_t t;
        keel_ttl(txn, b, key, &t);
        keel_expiry_at(txn, b, key, &t);
    }
    if (ks->n) {
        keel_val keys[FF_KEYS], vals[FF_KEYS];
        for (size_t i = 0; i < ks->n; i++)
            keys[i] = (keel_val){ks->k[i], ks->len[i]};
        if (keel_get_many(txn, b, keys, vals, ks->n) == 0)
            for (size_t i = 0; i < ks->n; i++)
                ff_touch(vals[i]);
    }
    keel_stat st;
    keel_bucket_stat(txn, b, &st);
    keel_cursor_close(c);
    return whole;
}

struct ff_names {
    int n;
    char *name[FF_BUCKETS];
};

static int ff_name(const char *name, void *ctx)
{
    struct ff_names *nm = ctx;
    if (nm->n >= FF_BUCKETS)
        return 1; /* a damaged catalog can be huge: stop */
    nm->name[nm->n++] = strdup(name);
    return 0;
}

static void ff_names_free(struct ff_names *nm)
{
    for (int i = 0; i < nm->n; i++)
        free(nm->name[i]);
    nm->n = 0;
}

/* A read txn over everything; fills names and the default bucket's keys.
 * true when the walk went over the whole default bucket without an error;
 * *txnid: the snapshot's (0: no txn). */
static bool ff_read_all(keel_db *db, struct ff_names *nm, struct ff_keys *ks, uint64_t *txnid)
{
    keel_txn *txn;
    *txnid = 0;
    if (keel_begin(db, KEEL_RDONLY, &txn))
        return false;
    *txnid = keel_txn_id(txn);
    bool whole = ff_walk(txn, KEEL_DEFAULT_BUCKET, ks);
    keel_bucket_list(txn, ff_name, nm);
    for (int i = 0; i < nm->n; i++) {
        keel_bucket b;
        if (nm->name[i] && keel_bucket_open(txn, nm->name[i], 0, &b) == 0) {
            struct ff_keys bk = {0};
            ff_walk(txn, b, &bk);
            ff_keys_free(&bk);
        }
    }
    keel_abort(txn);
    keel_stat st;
    keel_db_stat(db, &st);
    keel_reader_info ri[4];
    size_t cnt;
    keel_db_readers(db, ri, 4, &cnt);
    return whole;
}

/* A small write txn over what the read found; the commit's result. */
static int ff_write(keel_db *db, const struct ff_names *nm, const struct ff_keys *ks)
{
    keel_txn *w;
    int rc = keel_begin(db, 0, &w);
    if (rc)
        return rc;
    static uint8_t big[20000];
    memset(big, 'v', sizeof big);
    keel_val k;
    int64_t r;
    /* each call may fail (damage found): the txn then only aborts, and every
     * later call must say so instead of going on */
    keel_put(w, 0, (keel_val){"fuzz-small", 10}, (keel_val){"value", 5}, 0);
    keel_put(w, 0, (keel_val){"fuzz-big", 8}, (keel_val){big, sizeof big}, 0);
    /* the fresh run goes back to the pool: pages past the file's end that
     * are not dirty, where a damaged pointer must not lead the map */
    keel_put(w, 0, (keel_val){"fuzz-big", 8}, (keel_val){big, 10}, 0);
    keel_put_ttl(w, 0, (keel_val){"fuzz-ttl", 8}, (keel_val){"t", 1}, 5000, 0);
    keel_incr(w, 0, (keel_val){"fuzz-n", 6}, 3, &r);
    keel_cas(w, 0, (keel_val){"fuzz-small", 10}, &(keel_val){"value", 5}, (keel_val){"other", 5});
    for (size_t i = 0; i < ks->n && i < 3; i++) {
        k = (keel_val){ks->k[i], ks->len[i]};
        if (i == 0)
            keel_del(w, 0, k);
        else if (i == 1)
            keel_put(w, 0, k, (keel_val){big, 3000}, KEEL_KEEPTTL);
        else
            keel_expire(w, 0, k, 10);
    }
    keel_bucket b;
    if (nm->n > 0 && keel_bucket_open(w, nm->name[0], 0, &b) == 0) {
        keel_cursor *c;
        if (keel_cursor_open(w, b, &c) == 0) {
            keel_val ck, cv;
            int n = 0;
            for (int cr = keel_cursor_first(c, &ck, &cv); cr == 0 && n < 40; cr = keel_cursor_next(c, &ck, &cv), n++)
                if (n % 3 == 0)
                    keel_cursor_del(c);
            keel_cursor_close(c);
        }
        keel_put(w, b, (keel_val){"fuzz-in-bucket", 14}, (keel_val){big, 600}, 0);
        /* a DUPSORT bucket: a second value, then the first one deleted */
        keel_put(w, b, (keel_val){"fuzz-in-bucket", 14}, (keel_val){big, 5}, KEEL_NODUPDATA);
        keel_del_value(w, b, (keel_val){"fuzz-in-bucket", 14}, (keel_val){big, 600});
    }
    if (nm->n > 1 && keel_bucket_open(w, nm->name[1], 0, &b) == 0)
        keel_bucket_drop(w, b);
    if (keel_bucket_open(w, "fuzz-new", KEEL_CREATE, &b) == 0)
        keel_put(w, b, (keel_val){"k", 1}, (keel_val){big, 100}, 0);
    if (keel_bucket_open(w, "fuzz-dup", KEEL_CREATE | KEEL_DUPSORT, &b) == 0) /* KEEL_INCOMPATIBLE if plain */
        for (int i = 0; i < 3; i++)
            keel_put_ttl(w, b, (keel_val){"k\0", 2}, (keel_val){big + i, 50 - (size_t)i}, 1000, 0);
    size_t purged;
    keel_purge(w, 10, &purged);
    return keel_commit(w);
}

/* ---- page sums (format 2: format.h, the page trailer) ----
 * One walk serves two ends: re-sealing (write: each reachable page's and
 * run's sum is recomputed into its trailer and into the reference that
 * names it, children before parents) and checking (the image is left as it
 * is: the references and trailers that differ from the recomputed sums are
 * counted).  Every field is bounds-checked, each page is hashed at most once
 * (a bitmap: a cycle or a page shared by damage costs nothing more), and
 * the bytes hashed are capped: any image is walked in bounded time. */
struct ff_sums {
    uint8_t *img;
    uint64_t npages;  /* whole pages in the image */
    uint32_t ps, end; /* page size; where nodes end (before the trailer) */
    bool write;
    uint8_t *seen;    /* a bit per page: reached */
    uint64_t *sum;    /* per page reached: its (run's) sum, 0 while unknown */
    uint32_t *len;    /* ... and its length in pages (a run's first page) */
    size_t budget;    /* bytes left to hash */
    uint64_t bad;     /* checking: references or trailers that differ */
    uint64_t bad_read; /* ... of them, those a cursor walk over the whole default bucket meets */
};

static void ff_sums_init(struct ff_sums *s, uint8_t *img, size_t n, uint32_t ps, bool write)
{
    static uint8_t *seen;
    static uint64_t *sum;
    static uint32_t *len;
    static uint64_t cap; /* pages the three arrays hold */
    uint64_t np = n / ps;
    if (np > cap || !seen) { /* np 0 (an image shorter than a page) gets arrays too */
        uint64_t c = np < 64 ? 64 : np;
        free(seen);
        free(sum);
        free(len);
        seen = malloc(c / 8 + 1);
        sum = malloc(c * sizeof *sum);
        len = malloc(c * sizeof *len);
        FUZZ_CHECK(seen && sum && len);
        cap = c;
    }
    memset(seen, 0, np / 8 + 1);
    *s = (struct ff_sums){.img = img, .npages = np, .ps = ps, .end = ps - PAGE_TRAILER, .write = write,
                          .seen = seen, .sum = sum, .len = len, .budget = 8 * n + ((size_t)1 << 20)};
}

/* page_sum (pager.c) of len bytes; 0 when over the budget */
static uint64_t ff_hash(struct ff_sums *s, const uint8_t *p, size_t len)
{
    if (s->budget < len)
        return 0;
    s->budget -= len;
    uint64_t h = XXH3_64bits(p, len - PT_SUM);
    return h ? h : 1;
}

/* A reference holding a page's sum (ref NULL: the node has no room for one,
 * a format 1 node in a format 2 file); sum 0: the page's is not known (out
 * of range, on a cycle, over the budget), nothing to say. */
static void ff_ref(struct ff_sums *s, uint8_t *ref, uint64_t sum, bool read)
{
    if (!sum)
        return;
    if (s->write) {
        if (ref)
            wr64(ref, sum);
    } else if (!ref || rd64(ref) != sum) {
        s->bad++;
        s->bad_read += read;
    }
}

static void ff_trailer(struct ff_sums *s, uint8_t *p, size_t len, uint64_t sum, bool read)
{
    if (s->write)
        wr64(p + len - PT_SUM, sum);
    else if (page_trailer_sum(p, len) != sum) {
        s->bad++;
        s->bad_read += read;
    }
}

/* Marks page pg reached as the start of len pages: false if it was already
 * (then *sum is what is known of it for that length). */
static bool ff_reach(struct ff_sums *s, uint64_t pg, uint32_t len, uint64_t *sum)
{
    if (s->seen[pg >> 3] & (1u << (pg & 7))) {
        *sum = s->len[pg] == len ? s->sum[pg] : 0;
        return false;
    }
    s->seen[pg >> 3] |= (uint8_t)(1u << (pg & 7));
    s->sum[pg] = 0;
    s->len[pg] = len;
    return true;
}

/* The overflow run at pg of a value of vsize bytes (bt_overflow_pages): its sum. */
static uint64_t ff_run(struct ff_sums *s, uint64_t pg, uint32_t vsize, bool read)
{
    uint64_t need = (PAGE_HDR + (uint64_t)vsize + PAGE_TRAILER + s->ps - 1) / s->ps, sum;
    if (pg < 2 || pg >= s->npages || need > s->npages - pg)
        return 0;
    if (!ff_reach(s, pg, (uint32_t)need, &sum))
        return sum;
    uint8_t *p = s->img + pg * s->ps;
    size_t len = (size_t)need * s->ps;
    if (!(sum = ff_hash(s, p, len)))
        return 0;
    ff_trailer(s, p, len, sum, read);
    return s->sum[pg] = sum;
}

/* A catalog value that is a bucket's descriptor.  Checking counts only
 * those keel_check walks for sure (bucket_walk hands it the name up to a
 * zero byte, and skips no other); re-sealing takes every one. */
static bool ff_is_desc(const struct ff_sums *s, const uint8_t *n)
{
    if ((leaf_node_flags(n) & N_BIG) || leaf_node_vsize(n) != TREE_DESC_SIZE)
        return false;
    unsigned kl = leaf_node_ksize(n);
    return s->write || (!(leaf_node_flags(n) & N_EXPIRES) && kl >= 1 && kl <= KEEL_MAX_BUCKET_NAME &&
                        !memchr(leaf_node_key(n), 0, kl));
}

static void ff_tree(struct ff_sums *s, uint8_t *desc, bool catalog, bool read);

/* Page pg, `height` levels above the leaves of its tree, itself included
 * (1: a leaf), as the readers take it (a branch page's children and a
 * leaf's runs only when its flags say what the level needs): its sum after
 * those of its children. */
static uint64_t ff_page(struct ff_sums *s, uint64_t pg, unsigned height, bool catalog, bool read)
{
    uint64_t sum;
    if (pg < 2 || pg >= s->npages)
        return 0;
    if (!ff_reach(s, pg, 1, &sum))
        return sum;
    uint8_t *p = s->img + pg * s->ps;
    unsigned flags = page_flags(p), nk = page_nkeys(p);
    bool fits = PAGE_HDR + SLOT_SIZE * nk <= s->end;
    for (unsigned i = 0; fits && height > 1 && flags == P_BRANCH && i < nk; i++) {
        const uint8_t *cn;
        if (page_node(p, i, s->end, &cn))
            continue;
        uint8_t *n = (uint8_t *)cn;
        uint64_t cs = ff_page(s, branch_node_child(n), height - 1, catalog, read);
        ff_ref(s, branch_node_has_sum(n) ? n + BRANCH_HDR + branch_node_ksize(n) : NULL, cs, read);
    }
    for (unsigned i = 0; fits && height == 1 && flags == P_LEAF && i < nk; i++) {
        const uint8_t *cn;
        if (page_node(p, i, s->end, &cn))
            continue;
        uint8_t *n = (uint8_t *)cn;
        unsigned nf = leaf_node_flags(n);
        if (nf & N_BIG) {
            /* a cursor skips an expired entry without its value */
            bool r = read && !(nf & N_EXPIRES);
            uint64_t rs = ff_run(s, leaf_node_overflow(n), leaf_node_vsize(n), r);
            ff_ref(s, (nf & N_SUM) ? (uint8_t *)leaf_node_val(n) + 8 : NULL, rs, r);
        } else if (catalog && ff_is_desc(s, n)) {
            ff_tree(s, (uint8_t *)leaf_node_val(n), false, false);
        }
    }
    if (!(sum = ff_hash(s, p, s->ps)))
        return 0;
    ff_trailer(s, p, s->ps, sum, read);
    return s->sum[pg] = sum;
}

/* The tree of a descriptor (56 bytes: format.h) and its root sum.  A
 * bucket's tree is never a catalog: two levels of trees at most. */
static void ff_tree(struct ff_sums *s, uint8_t *desc, bool catalog, bool read)
{
    uint64_t root = rd64(desc + offsetof(struct tree_desc, root));
    uint32_t depth = rd32(desc + offsetof(struct tree_desc, depth));
    if (!root || !depth || depth > KEEL_MAX_DEPTH)
        return;
    ff_ref(s, desc + offsetof(struct tree_desc, root_sum), ff_page(s, root, depth, catalog, read), read);
}

/* The meta at off, if it is a format 2 meta of a valid page size: that size, else 0. */
static uint32_t ff_meta2_psize(const uint8_t *img, size_t n, size_t off)
{
    if (n < off + META_SIZE || rd32(img + off) != KEEL_MAGIC || rd32(img + off + 4) != 2)
        return 0;
    uint32_t ps = rd32(img + off + offsetof(struct meta, page_size));
    return ps >= KEEL_MIN_PAGE && ps <= KEEL_MAX_PAGE && !(ps & (ps - 1)) ? ps : 0;
}

/* Walks a meta's four trees (the catalog's leaves lead to the buckets'):
 * the default bucket first, the one a cursor walk reads. */
static void ff_meta_trees(struct ff_sums *s, size_t off)
{
    for (int i = 0; i < TREE_COUNT; i++)
        ff_tree(s, s->img + off + offsetof(struct meta, trees) + (size_t)i * TREE_DESC_SIZE, i == TREE_CATALOG,
                i == TREE_DEFAULT);
}

/* Re-seals the page sums below the metas at off[0] and off[1]; a page both
 * reach is sealed once. */
static void ff_reseal_sums(uint8_t *img, size_t n, const size_t off[2])
{
    struct ff_sums s = {0};
    for (int m = 0; m < 2; m++) {
        uint32_t ps = ff_meta2_psize(img, n, off[m]);
        if (!ps)
            continue;
        if (ps != s.ps)
            ff_sums_init(&s, img, n, ps, true);
        ff_meta_trees(&s, off[m]);
    }
}

/* What keel must detect in the image as written: for every meta that may
 * be the snapshot of txn `txnid` (a meta keel could have taken: the magic,
 * its checksum and that txn id; format 1 ones have no sums), are there
 * pages whose sums do not match, *all of them, and *read of them in the
 * default bucket's walk?  false when no meta is such. */
static bool ff_sums_check(uint8_t *img, size_t n, uint64_t txnid, bool *all, bool *read)
{
    bool any = false;
    *all = *read = true;
    for (size_t off = 0; off <= KEEL_MAX_PAGE; off = off ? off * 2 : KEEL_MIN_PAGE) {
        if (n < off + META_V1_SIZE || rd32(img + off) != KEEL_MAGIC ||
            rd64(img + off + offsetof(struct meta, txnid)) != txnid)
            continue;
        size_t sum_off = rd32(img + off + 4) == 1 ? META_V1_SUM_OFF : META_SUM_BYTES;
        if (n < off + sum_off + 8 || XXH3_64bits(img + off, sum_off) != rd64(img + off + sum_off))
            continue;
        any = true;
        uint32_t ps = ff_meta2_psize(img, n, off);
        if (!ps || (off && ps != off)) { /* format 1, or not a meta keel reads there */
            *all = *read = false;
            continue;
        }
        struct ff_sums s;
        ff_sums_init(&s, img, n, ps, false);
        ff_meta_trees(&s, off);
        *all &= s.bad > 0;
        *read &= s.bad_read > 0;
    }
    return any;
}

/* ---- the metas ---- */
/* A one-flush meta's commit list (format.md) is re-sealed too: the pages'
 * sum over what the image holds of them (after their page sums), then the
 * list's sum, so that mutated pages of the newest commit reach the tree
 * code instead of only its rollback at open (bit 2 keeps the sums, and
 * tests the rollback). */
static void ff_reseal_list(uint8_t *img, size_t n, size_t off)
{
    struct meta m;
    memcpy(&m, img + off, META_SIZE);
    uint32_t ps = m.page_size;
    if (!(m.flags & META_F_ONEFLUSH) || ps < KEEL_MIN_PAGE || ps > KEEL_MAX_PAGE || (ps & (ps - 1)) ||
        n < off + ps)
        return;
    uint8_t *list = img + off + META_LIST_OFF;
    uint32_t nruns = rd32(list);
    if (nruns > meta_list_max_runs(ps, m.flags & META_F_FREETAIL))
        return;
    XXH3_state_t *st = XXH3_createState();
    FUZZ_CHECK(st);
    XXH3_64bits_reset(st);
    for (uint32_t i = 0; i < nruns; i++) {
        uint64_t first = rd64(list + META_LIST_HDR + i * META_LIST_RUN);
        uint64_t count = rd64(list + META_LIST_HDR + i * META_LIST_RUN + 8);
        if (first < n / ps && count <= n / ps - first)
            XXH3_64bits_update(st, img + first * ps, count * ps);
    }
    wr64(list + 8, XXH3_64bits_digest(st));
    XXH3_freeState(st);
    m.commit_list_sum = XXH3_64bits(list, META_LIST_HDR + (size_t)nruns * META_LIST_RUN);
    memcpy(img + off, &m, META_SIZE);
}

/* A meta's free tail (format.md) likewise, so mutated tails reach the
 * parser behind it. */
static void ff_reseal_tail(uint8_t *img, size_t n, size_t off)
{
    struct meta m;
    memcpy(&m, img + off, META_SIZE);
    uint32_t ps = m.page_size;
    if (!(m.flags & META_F_FREETAIL) || ps < KEEL_MIN_PAGE || ps > KEEL_MAX_PAGE || (ps & (ps - 1)) ||
        n < off + meta_tail_off(ps) + META_TAIL_HDR)
        return;
    uint8_t *t = img + off + meta_tail_off(ps);
    size_t bytes = META_TAIL_HDR + (size_t)rd32(t) * 8;
    if (rd32(t) > meta_tail_max_words(ps) || n - off - meta_tail_off(ps) < bytes)
        return;
    m.free_tail_sum = XXH3_64bits(t, bytes);
    memcpy(img + off, &m, META_SIZE);
}

/* The meta at off: its commit list, free tail and checksum. */
static void ff_reseal(uint8_t *img, size_t n, size_t off)
{
    if (n < off + META_SIZE || rd32(img + off) != KEEL_MAGIC)
        return;
    ff_reseal_list(img, n, off);
    ff_reseal_tail(img, n, off);
    /* the header fields the two resealers set lie where both formats keep
     * them; format 1's checksum follows its shorter descriptors */
    size_t sum_off = rd32(img + off + 4) == 1 ? META_V1_SUM_OFF : META_SUM_BYTES;
    uint64_t sum = XXH3_64bits(img + off, sum_off);
    memcpy(img + off + sum_off, &sum, 8);
}

/* keel_check of db: the oracle's part.  all: the image has pages whose sums
 * do not match, reachable from the snapshot: a problem must be reported. */
static bool ff_check(keel_db *db, bool all, uint64_t *problems)
{
    int crc = keel_check(db, NULL, NULL, problems);
    if (all && crc == 0 && *problems == 0)
        FUZZ_CHECK(!"keel_check finds no problem in a file with a page whose checksum is wrong");
    return crc == 0 && *problems == 0;
}

/* The snapshot a txn begun now reads: 0 if none. */
static uint64_t ff_snapshot(keel_db *db)
{
    keel_txn *t;
    if (keel_begin(db, KEEL_RDONLY, &t))
        return 0;
    uint64_t id = keel_txn_id(t);
    keel_abort(t);
    return id;
}

FUZZ_ENTRY(file)
{
    if (size < 1)
        return 0;
    static const uint32_t sizes[4] = {4096, 8192, 16384, 65536};
    unsigned opt = data[0];
    size_t n = size - 1;
    /* A mutable copy of the whole image, in a buffer kept from run to run
     * (a fresh copy of a 128 KiB image was an mmap and page faults per run
     * under ASan). */
    static uint8_t *img;
    static size_t cap;
    if (n > cap) {
        size_t c = n < ((size_t)256 << 10) ? (size_t)256 << 10 : n;
        free(img);
        img = malloc(c);
        FUZZ_CHECK(img);
        cap = c;
    }
    memcpy(img, data + 1, n);
    bool verify = opt & (32 | 64);
    if (!(opt & 4)) {
        const size_t metas[2] = {0, sizes[opt & 3]};
        if (!(opt & 32))
            ff_reseal_sums(img, n, metas);
        ff_reseal(img, n, metas[0]);
        ff_reseal(img, n, metas[1]);
    }
    const char *path = fuzz_path(0, "file.db");
    fuzz_remove_db(path);
    FUZZ_CHECK(fuzz_write_file(path, img, n) == 0);

    int64_t now = (opt & 8) ? ((int64_t)1 << 60) : 1000;
    keel_options o = {.flags = KEEL_NOSYNC | ((opt & 16) ? KEEL_RDONLY : 0u) | (verify ? KEEL_VERIFY : 0u),
                      .max_size = (uint64_t)1 << 30,
                      .clock = ff_clock,
                      .clock_ctx = &now};
    keel_db *db;
    int rc = keel_open(path, &o, &db);
    if (rc) {
        FUZZ_CHECK(keel_strerror(rc) != NULL);
        FUZZ_CHECK(db == NULL);
        fuzz_remove_db(path);
        return 0;
    }
    /* what keel must find: pages of the snapshot whose sums do not match */
    uint64_t snap = ff_snapshot(db);
    bool bad_all = false, bad_read = false;
    if (snap && !ff_sums_check(img, n, snap, &bad_all, &bad_read))
        bad_all = bad_read = false;
    uint64_t problems = 0;
    bool clean = ff_check(db, bad_all, &problems);

    /* copies: plain (pages as they are) and compact (a walk of every bucket) */
    for (int compact = 0; compact < 2; compact++) {
        const char *cpath = fuzz_path(3, "file-copy.db");
        fuzz_remove_db(cpath);
        int rc2 = keel_copy(db, cpath, compact ? KEEL_COPY_COMPACT : 0);
        /* a compact copy writes the newest format, whose longest key is
         * shorter than format 1's: such a key refuses it */
        bool older = n >= 8 && rd32(img + 4) < KEEL_FORMAT_VERSION;
        if (clean)
            FUZZ_CHECK(rc2 == 0 || (compact && older && rc2 == KEEL_BADVALSIZE));
        if (rc2 == 0) {
            keel_db *cdb;
            keel_options co = {.flags = KEEL_NOSYNC | KEEL_RDONLY, .clock = ff_clock, .clock_ctx = &now};
            int orc = keel_open(cpath, &co, &cdb);
            if (clean)
                FUZZ_CHECK(orc == 0);
            if (orc == 0) {
                uint64_t cp = 0;
                int crc2 = keel_check(cdb, NULL, NULL, &cp);
                if (clean && (crc2 || cp)) {
                    keel_check(cdb, ff_report, NULL, &cp);
                    FUZZ_CHECK(!"the copy of a clean file checks dirty");
                }
                keel_close(cdb);
            }
        }
        fuzz_remove_db(cpath);
    }

    struct ff_names nm = {0};
    struct ff_keys ks = {0};
    uint64_t rsnap;
    bool whole = ff_read_all(db, &nm, &ks, &rsnap);
    /* under KEEL_VERIFY no page of the default bucket whose sum is wrong
     * is read without an error */
    if (verify && bad_read && rsnap == snap)
        FUZZ_CHECK(!whole);
    int wrc = (opt & 16) ? KEEL_READONLY : ff_write(db, &nm, &ks);
    ff_names_free(&nm);
    ff_keys_free(&ks);
    keel_close(db);

    /* reopen: what the commit wrote must read back */
    o.flags &= ~(unsigned)KEEL_RDONLY;
    rc = keel_open(path, &o, &db);
    if (clean && wrc == 0)
        FUZZ_CHECK(rc == 0);
    if (rc == 0) {
        int crc = keel_check(db, NULL, NULL, &problems);
        if (clean && wrc == 0) {
            if (crc || problems) {
                fprintf(stderr, "keel_check after a clean commit: rc %d, %llu problems\n", crc,
                        (unsigned long long)problems);
                keel_check(db, ff_report, NULL, &problems);
                FUZZ_CHECK(!"a clean file checks dirty after a commit");
            }
        }
        uint64_t s2;
        ff_read_all(db, &nm, &ks, &s2);
        ff_names_free(&nm);
        ff_keys_free(&ks);
        keel_close(db);
    }
    fuzz_remove_db(path);
    return 0;
}
