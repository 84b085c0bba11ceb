/*
 * expiry.c — the expiry index: one entry per key that has an expiry time,
 * ordered by that time, so purge finds what is due without a scan.
 *
 * Contract:
 *   - An entry's expiry time (ms since the epoch, 0 = none) lives in its leaf
 *     node, so a read needs no second lookup (kv.c applies the rule).  The
 *     expiry tree holds one entry per expiring key, keyed (expiry BE64,
 *     bucket id BE32, key), empty value.  The write path (kv.c) reports each
 *     change of a key's expiry here (expiry_update) in the same txn as the
 *     change: bucket and index agree at every commit and wherever the txn
 *     reads the index (keel_check verifies it).  Within a write txn the
 *     changes wait in a log, applied sorted (below).
 *   - Purge (kv_purge) walks the index from its first entry and stops at the
 *     first one in the future: cost O(expired * log n), never a scan of keys
 *     that do not expire.  Each write commit purges up to
 *     db->purge_per_commit.
 */
#include <string.h>

#include "internal.h"

static size_t expiry_key(uint8_t *buf, int64_t expiry, uint32_t id, keel_val key)
{
    uint64_t e = __builtin_bswap64((uint64_t)expiry);
    uint32_t b = __builtin_bswap32(id);
    memcpy(buf, &e, 8);
    memcpy(buf + 8, &b, 4);
    memcpy(buf + EXPIRY_KEY_PREFIX, key.data, key.len);
    return EXPIRY_KEY_PREFIX + key.len;
}

static int64_t expiry_key_time(const uint8_t *k)
{
    uint64_t e = 0;
    for (int i = 0; i < 8; i++)
        e = (e << 8) | k[i];
    return (int64_t)e;
}

static uint32_t expiry_key_bucket(const uint8_t *k)
{
    uint32_t id = 0;
    for (int i = 0; i < 4; i++)
        id = (id << 8) | k[8 + i];
    return id;
}

/* ---- the expiry log ----
 *
 * The expiry-tree half of a change is not made at once but logged: +1 for
 * an entry that joins the tree, -1 for one that leaves it.  The log is
 * applied sorted (expiry_flush) before anything in the txn reads the expiry
 * tree (purge), when it outgrows a quarter of max_dirty, and first thing at
 * commit.  Why: the puts of one txn mostly share one expiry time (now + the
 * same TTL), so in put order their entries fall at random places of the
 * newest part of the tree, each a search and a leaf of its own; sorted, they
 * are one run of increasing keys, usually past every entry already there,
 * and bt_put_next appends them to the rightmost leaf without a search each.
 *
 * For one entry the log's +1s and -1s alternate (its key gains and loses
 * that expiry in turn), so their sum is the net change: -1, 0 or +1.
 * Nothing but purge and commit reads a write txn's expiry tree (keel_check
 * and copies read committed snapshots), so the two trees agree wherever
 * they can be seen.  The log dies with the txn: an abort, or a commit that
 * fails, leaves nothing. */
struct xent {
    uint64_t w[3]; /* sort words: expiry; bucket id << 32 | key bytes 0-3; key bytes 4-11 (big-endian, zero padded) */
    uint32_t off;  /* the key in log->keys */
    uint16_t len;
    int16_t delta; /* +1 joins the expiry tree, -1 leaves it */
};
#define XWORD_KEY 12u /* key bytes the sort words hold */

/* n <= 8 bytes as a big-endian word, zero padded on the right */
static inline uint64_t be_word(const uint8_t *p, size_t n)
{
    uint64_t v;
    if (n >= 8) {
        memcpy(&v, p, 8);
        return __builtin_bswap64(v);
    }
    v = 0;
    for (size_t i = 0; i < 8; i++)
        v = (v << 8) | (i < n ? p[i] : 0u);
    return v;
}

/* Log bytes past which the log is applied early (tuning.h). */
static size_t log_limit(const keel_txn *txn)
{
    size_t lim = txn->db->max_dirty / EXPIRY_LOG_DIRTY_SHARE_DIV;
    return lim < ((size_t)1 << 30) ? lim : ((size_t)1 << 30); /* key offsets are 32-bit */
}

static int log_add(keel_txn *txn, int64_t exp, uint32_t id, keel_val key, int delta)
{
    /* Keys from the API are checked; one read from a damaged file (a cursor
     * delete, a bucket drop, a compacting copy) can be longer than any key
     * may be, and expiry_flush builds expiry keys in a buffer of the longest. */
    if (key.len == 0 || key.len > txn->db->max_key)
        return CORRUPT(0);
    struct expiry_log *l = &txn->xlog;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        struct xent *v = os_realloc(l->v, cap * sizeof(*v));
        if (!v)
            return KEEL_NOMEM;
        l->v = v;
        l->cap = cap;
    }
    if (key.len > l->keycap - l->used) {
        size_t cap = l->keycap ? 2 * l->keycap : 1024;
        while (key.len > cap - l->used)
            cap *= 2;
        uint8_t *k = os_realloc(l->keys, cap);
        if (!k)
            return KEEL_NOMEM;
        l->keys = k;
        l->keycap = cap;
    }
    const uint8_t *kd = key.data;
    struct xent *e = &l->v[l->n++];
    e->w[0] = (uint64_t)exp;
    if (key.len >= XWORD_KEY) {
        uint32_t k0;
        memcpy(&k0, kd, 4);
        e->w[1] = (uint64_t)id << 32 | __builtin_bswap32(k0);
        e->w[2] = be_word(kd + 4, 8);
    } else {
        e->w[1] = (uint64_t)id << 32 | be_word(kd, key.len < 4 ? key.len : 4) >> 32;
        e->w[2] = key.len > 4 ? be_word(kd + 4, key.len - 4) : 0;
    }
    e->off = (uint32_t)l->used;
    e->len = (uint16_t)key.len;
    e->delta = (int16_t)delta;
    memcpy(l->keys + l->used, kd, key.len);
    l->used += key.len;
    if (l->n * sizeof(struct xent) + l->used > log_limit(txn))
        return expiry_flush(txn);
    return 0;
}

/* Expiry-tree key order (expiry time, bucket id, key bytewise, a prefix first). */
static inline int xcmp(const struct xent *a, const struct xent *b, const uint8_t *keys)
{
    for (int i = 0; i < 3; i++)
        if (a->w[i] != b->w[i])
            return a->w[i] < b->w[i] ? -1 : 1;
    /* the first 12 key bytes agree (zero padded): a key that ends within
     * them is a prefix of the other, or equal to it */
    if (a->len > XWORD_KEY && b->len > XWORD_KEY) {
        size_t n = (a->len < b->len ? a->len : b->len) - XWORD_KEY;
        int c = memcmp(keys + a->off + XWORD_KEY, keys + b->off + XWORD_KEY, n);
        if (c)
            return c;
    }
    return (a->len > b->len) - (a->len < b->len);
}

static void insertion_sort(struct xent *v, size_t n, const uint8_t *keys)
{
    for (size_t i = 1; i < n; i++) {
        struct xent x = v[i];
        size_t j = i;
        for (; j > 0 && xcmp(&v[j - 1], &x, keys) > 0; j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
}

/* A merge sort (a run already in order costs one compare per merge):
 * returns v or tmp, whichever holds the result. */
static struct xent *merge_sort(struct xent *v, struct xent *tmp, size_t n, const uint8_t *keys)
{
    for (size_t s = 0; s < n; s += EXPIRY_SORT_RUN)
        insertion_sort(v + s, n - s < EXPIRY_SORT_RUN ? n - s : EXPIRY_SORT_RUN, keys);
    struct xent *src = v, *dst = tmp;
    for (size_t w = EXPIRY_SORT_RUN; w < n; w *= 2) {
        for (size_t s = 0; s < n; s += 2 * w) {
            size_t m = n - s > w ? s + w : n, e = n - s > 2 * w ? s + 2 * w : n;
            if (m == e || xcmp(&src[m - 1], &src[m], keys) <= 0) {
                memcpy(dst + s, src + s, (e - s) * sizeof(*src));
                continue;
            }
            size_t i = s, j = m, k = s;
            while (i < m && j < e)
                dst[k++] = xcmp(&src[j], &src[i], keys) < 0 ? src[j++] : src[i++];
            memcpy(dst + k, src + i, (m - i) * sizeof(*src));
            k += m - i;
            memcpy(dst + k, src + j, (e - j) * sizeof(*src));
        }
        struct xent *t = src;
        src = dst;
        dst = t;
    }
    return src;
}

/* Sorts the log: returns v or tmp (n entries each), whichever holds the
 * result.  What correctness needs from it is only that equal entries end up
 * next to each other (their deltas are summed); the order itself is for
 * speed, since bt_put_next places a key right wherever it comes.  One radix pass on the highest bits in which the sort words
 * differ (for one expiry time and bucket: the first key bytes), then a
 * merge sort of each bucket (a few entries each for random keys).  Keys
 * that agree on those bits (a long common prefix) only make the buckets
 * bigger: it degrades to the merge sort, O(n log n) either way. */
static struct xent *sort_log(struct xent *v, struct xent *tmp, size_t n, const uint8_t *keys)
{
    if (n < 256)
        return merge_sort(v, tmp, n, keys);
    uint64_t d0 = 0, d1 = 0, d2 = 0;
    for (size_t i = 0; i < n; i++) {
        d0 |= v[i].w[0] ^ v[0].w[0];
        d1 |= v[i].w[1] ^ v[0].w[1];
        d2 |= v[i].w[2] ^ v[0].w[2];
    }
    int w = d0 ? 0 : d1 ? 1 : 2;
    uint64_t d = d0 ? d0 : d1 ? d1 : d2;
    unsigned bits = 63 - (unsigned)__builtin_clzll(n); /* about one entry per bucket, at most 2^16 buckets */
    if (bits > 16)
        bits = 16;
    uint32_t *end = d ? os_calloc((((size_t)1 << bits) + 1) * sizeof(*end)) : NULL;
    if (!end) /* every word equal (keys differ past 12 bytes), or no memory for the counts */
        return merge_sort(v, tmp, n, keys);
    int top = 63 - __builtin_clzll(d);
    unsigned shift = top + 1 >= (int)bits ? (unsigned)(top + 1 - (int)bits) : 0;
    uint64_t mask = ((uint64_t)1 << bits) - 1;
    for (size_t i = 0; i < n; i++)
        end[((v[i].w[w] >> shift) & mask) + 1]++;
    for (size_t b = 1; b <= mask + 1; b++)
        end[b] += end[b - 1];
    for (size_t i = 0; i < n; i++)
        tmp[end[(v[i].w[w] >> shift) & mask]++] = v[i]; /* end[b] moves to the end of bucket b */
    for (size_t b = 0, s = 0; b <= mask; s = end[b++]) {
        size_t len = end[b] - s;
        if (len <= EXPIRY_SORT_RUN)
            insertion_sort(tmp + s, len, keys);
        else if (merge_sort(tmp + s, v + s, len, keys) != tmp + s)
            memcpy(tmp + s, v + s, len * sizeof(*v));
    }
    os_free(end);
    return tmp;
}

/* ---- nested txns ----
 * A child takes over its parent's log and appends to it, so the log's
 * length is its undo, until the child applies the log (expiry_flush: a
 * purge, a long log): then the parent's part is saved first, whole. */
void expiry_nest_begin(keel_txn *child, keel_txn *parent)
{
    struct nest_undo *u = &child->undo;
    child->xlog = parent->xlog;
    u->xlog_saved = false;
    u->xlog_n = parent->xlog.n;
    u->xlog_used = parent->xlog.used;
}

static int save_for_child(keel_txn *txn)
{
    struct nest_undo *u = &txn->undo;
    struct expiry_log *l = &txn->xlog, *s = &u->xlog;
    if (!txn->nest || u->xlog_saved)
        return 0;
    if (u->xlog_n > s->cap) {
        struct xent *v = os_realloc(s->v, u->xlog_n * sizeof(*v));
        if (!v)
            return KEEL_NOMEM;
        s->v = v;
        s->cap = u->xlog_n;
    }
    if (u->xlog_used > s->keycap) {
        uint8_t *k = os_realloc(s->keys, u->xlog_used);
        if (!k)
            return KEEL_NOMEM;
        s->keys = k;
        s->keycap = u->xlog_used;
    }
    if (u->xlog_n) {
        memcpy(s->v, l->v, u->xlog_n * sizeof(*s->v));
        memcpy(s->keys, l->keys, u->xlog_used);
    }
    s->n = u->xlog_n;
    s->used = u->xlog_used;
    u->xlog_saved = true;
    return 0;
}

void expiry_nest_end(keel_txn *parent, keel_txn *child, bool commit)
{
    struct nest_undo *u = &child->undo, *pu = &parent->undo;
    struct expiry_log *l = &child->xlog;
    if (commit) {
        parent->xlog = *l;
        /* the parent had not applied the log: what the child saved begins with the parent's part */
        if (parent->nest && u->xlog_saved && !pu->xlog_saved) {
            struct expiry_log keep = pu->xlog;
            pu->xlog = u->xlog;
            pu->xlog.n = pu->xlog_n;
            pu->xlog.used = pu->xlog_used;
            u->xlog = keep;
            pu->xlog_saved = true;
        }
    } else if (u->xlog_saved) { /* the saved copy is the parent's; the child's arrays stay for later */
        parent->xlog = u->xlog;
        u->xlog = *l;
    } else {
        parent->xlog = *l;
        parent->xlog.n = u->xlog_n;
        parent->xlog.used = u->xlog_used;
    }
    u->xlog_saved = false;
    memset(l, 0, sizeof(*l));
}

int expiry_flush(keel_txn *txn)
{
    struct expiry_log *l = &txn->xlog;
    if (l->n == 0)
        return 0;
    struct xent *tmp = NULL;
    uint8_t *buf = NULL;
    int rc = save_for_child(txn); /* the log is sorted in place */
    if (rc)
        return rc;
    if (l->n > EXPIRY_SORT_RUN && !(tmp = os_malloc(l->n * sizeof(*tmp)))) {
        rc = KEEL_NOMEM;
        goto out;
    }
    struct xent *v = sort_log(l->v, tmp, l->n, l->keys);
    size_t m = 0; /* the net changes, compacted in place */
    for (size_t i = 0, j; i < l->n; i = j) {
        int net = v[i].delta;
        for (j = i + 1; j < l->n && xcmp(&v[i], &v[j], l->keys) == 0; j++)
            net += v[j].delta;
        if (net < -1 || net > 1) { /* not alternating: the trees disagreed */
            rc = CORRUPT(0);
            goto out;
        }
        if (net) {
            v[m] = v[i];
            v[m++].delta = (int16_t)net;
        }
    }
    if (!(buf = os_malloc(EXPIRY_KEY_PREFIX + txn->db->max_key))) {
        rc = KEEL_NOMEM;
        goto out;
    }
    struct tree_desc *et = &txn->meta.trees[TREE_EXPIRY];
    /* removals first, so the adds are one uninterrupted run for the finger */
    for (size_t i = 0; i < m && !rc; i++)
        if (v[i].delta < 0) {
            size_t n = expiry_key(buf, (int64_t)v[i].w[0], (uint32_t)(v[i].w[1] >> 32),
                                  (keel_val){l->keys + v[i].off, v[i].len});
            rc = bt_del(txn, et, (keel_val){buf, n}, NULL);
            if (rc == KEEL_NOTFOUND)
                rc = CORRUPT(0); /* the trees disagree */
        }
    struct bt_finger f;
    f.valid_at = 0;
    f.path.depth = 0;
    for (size_t i = 0; i < m && !rc; i++)
        if (v[i].delta > 0) {
            size_t n = expiry_key(buf, (int64_t)v[i].w[0], (uint32_t)(v[i].w[1] >> 32),
                                  (keel_val){l->keys + v[i].off, v[i].len});
            rc = bt_put_next(txn, et, (keel_val){buf, n}, (keel_val){"", 0}, &f);
        }
out:
    os_free(tmp);
    os_free(buf);
    l->n = l->used = 0; /* applied, or the txn failed and can only abort */
    return rc;
}

void expiry_log_free(keel_txn *txn)
{
    struct expiry_log *l = &txn->xlog;
    os_free(l->v);
    os_free(l->keys);
    memset(l, 0, sizeof(*l));
}

/* Moves the expiry entry of (id, key) from old_exp to new_exp (0 = none). */
int expiry_update(keel_txn *txn, uint32_t id, keel_val key, int64_t old_exp, int64_t new_exp)
{
    if (old_exp == new_exp)
        return 0;
    int rc = 0;
    if (old_exp)
        rc = log_add(txn, old_exp, id, key, -1);
    if (!rc && new_exp)
        rc = log_add(txn, new_exp, id, key, +1);
    return rc;
}

/* Logs the removal of the expiry entry of every expiring key of t (a
 * bucket about to be dropped). */
int expiry_forget_tree(keel_txn *txn, struct tree_desc *t)
{
    if (t->root == 0 || (txn->meta.trees[TREE_EXPIRY].root == 0 && txn->xlog.n == 0))
        return 0;
    keel_cursor c;
    memset(&c, 0, sizeof(c));
    cursor_init(&c, txn, 0, t);
    c.all = true;
    keel_val k;
    int rc;
    /* a DUPSORT key has one index entry, whatever its number of pairs */
    for (rc = cursor_first(&c, &k, NULL); rc == 0; rc = cursor_move_key(&c, &k, NULL, 1)) {
        const uint8_t *n;
        if ((rc = node_at(c.page[c.depth - 1], c.idx[c.depth - 1], txn->db->node_end, &n)))
            break;
        int64_t e = leaf_node_expiry(n);
        if (e && (rc = expiry_update(txn, t->id, k, e, 0)))
            break;
    }
    cursor_release(&c);
    return rc == KEEL_NOTFOUND ? 0 : rc;
}

/* ---- the entries due for purge (kv_purge) ---- */
int expiry_due_begin(keel_txn *txn, struct expiry_due *d)
{
    memset(d, 0, sizeof(*d));
    d->txn = txn;
    cursor_init(&d->cursor, txn, 0, &txn->meta.trees[TREE_EXPIRY]);
    d->cursor.all = true;
    return expiry_flush(txn); /* the index is read below: it must be complete */
}

/* The oldest entry, if its time has come; KEEL_NOTFOUND if none is due.
 * The previous one was removed (expiry_remove_due), so the oldest is next. */
int expiry_next_due(struct expiry_due *d)
{
    if (d->txn->meta.trees[TREE_EXPIRY].root == 0)
        return KEEL_NOTFOUND;
    keel_val k;
    int rc = cursor_first(&d->cursor, &k, NULL);
    if (rc)
        return rc;
    if (k.len <= EXPIRY_KEY_PREFIX)
        return CORRUPT(d->cursor.pgno[d->cursor.depth - 1]);
    int64_t exp = expiry_key_time(k.data);
    if (exp > d->txn->now)
        return KEEL_NOTFOUND;
    if (k.len > d->cap) {
        uint8_t *nk = os_realloc(d->buf, k.len);
        if (!nk)
            return KEEL_NOMEM;
        d->buf = nk;
        d->cap = k.len;
    }
    memcpy(d->buf, k.data, k.len); /* k points into a page the removals below may free */
    d->len = k.len;
    d->expiry = exp;
    d->bucket_id = expiry_key_bucket(d->buf);
    d->key = (keel_val){d->buf + EXPIRY_KEY_PREFIX, k.len - EXPIRY_KEY_PREFIX};
    return 0;
}

int expiry_remove_due(struct expiry_due *d)
{
    return bt_del(d->txn, &d->txn->meta.trees[TREE_EXPIRY], (keel_val){d->buf, d->len}, NULL);
}

void expiry_due_end(struct expiry_due *d)
{
    cursor_release(&d->cursor);
    os_free(d->buf);
}

/* The key's expiry in its tree: a DUPSORT key's is on its first pair. */
static int expiry_of(keel_txn *txn, const struct tree_desc *t, keel_val key, int64_t *exp)
{
    if (!(t->flags & TREE_F_DUPSORT))
        return bt_get(txn, t, key, NULL, exp);
    struct pair_bound pb;
    int rc = pair_bound(&pb, key, PAIR_KEY_END, (keel_val){NULL, 0});
    const uint8_t *k;
    size_t kl;
    if (rc == 0)
        rc = cursor_find_pair(txn, t, &pb, &k, &kl, exp);
    pair_bound_free(&pb);
    return rc;
}

/* For keel_check: does every expiry entry name a live node with that expiry? */
int expiry_check(keel_txn *txn, void (*problem)(void *ctx, const char *fmt, ...), void *ctx, uint64_t *entries)
{
    int rc = txn->rdonly ? 0 : expiry_flush(txn); /* keel_check reads a snapshot: no log there */
    if (rc)
        return rc;
    struct tree_desc *et = &txn->meta.trees[TREE_EXPIRY];
    keel_cursor c;
    memset(&c, 0, sizeof(c));
    cursor_init(&c, txn, 0, et);
    c.all = true;
    keel_val k;
    uint64_t n = 0;
    for (rc = cursor_first(&c, &k, NULL); rc == 0; rc = cursor_next(&c, &k, NULL)) {
        n++;
        if (k.len <= EXPIRY_KEY_PREFIX) {
            problem(ctx, "expiry entry %llu: key too short", (unsigned long long)n);
            continue;
        }
        keel_bucket b;
        struct tree_desc *t;
        int64_t exp = expiry_key_time(k.data), have;
        if (bucket_by_id(txn, expiry_key_bucket(k.data), &b) || bucket_tree(txn, b, &t)) {
            problem(ctx, "expiry entry %llu names bucket id %u, which does not exist", (unsigned long long)n,
                    expiry_key_bucket(k.data));
            continue;
        }
        keel_val ukey = {(const uint8_t *)k.data + EXPIRY_KEY_PREFIX, k.len - EXPIRY_KEY_PREFIX};
        if (expiry_of(txn, t, ukey, &have) || have != exp)
            problem(ctx, "expiry entry %llu: the key is missing or has another expiry", (unsigned long long)n);
    }
    cursor_release(&c);
    *entries = n;
    return rc == KEEL_NOTFOUND ? 0 : rc;
}
