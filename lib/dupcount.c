/*
 * dupcount.c — the pair counts a write txn owes its COUNTED DUPSORT trees.
 *
 * Contract:
 *   - A COUNTED tree keeps each key's number of pairs in the key's first
 *     pair (format.h).  A put or delete of any other pair does not rewrite
 *     that count: it adds +1 or -1 here, under (tree id, the key's pair
 *     prefix), and dup.c writes the sums into the trees once, when the
 *     top-level txn commits (dup_counts_flush).  So a put costs no second
 *     search, and a count reads the stored number plus what is pending.
 *   - Each txn has its own table.  What a txn owes is the sum of its table
 *     and its ancestors' (dupcount_pending).  A child's commit adds its
 *     table into its parent's (reserved first, so the hand-over cannot
 *     fail); its abort drops it, with the pages it changed.
 *   - dupcount_settle makes the key's pending sum zero in this txn: for when
 *     dup.c has just written the key's exact count into the tree, or the
 *     key has no pairs left.  dupcount_forget_tree does it for every key of
 *     a tree being dropped.
 *   - No page access, no tree: a hash table of heap entries (os.c only).
 */
#include <string.h>
#define XXH_INLINE_ALL /* a short key's hash inlined: one per put */
#include <xxhash.h>

#include "internal.h"

/* Two to a cache line, at a load of at most three quarters: the table of a
 * load of ten thousand keys stays within the nearer caches.  A short key
 * (most are) is compared where it lies, with no second memory access. */
#define INLINE_KEY 16 /* bytes */
#define SLOT_ALIGN 32 /* bytes: sizeof (struct dupcount_entry) */
struct dupcount_entry {
    int64_t delta;
    uint32_t tree_id;
    uint16_t len; /* 0: an empty slot (a pair prefix has at least 3 bytes) */
    uint16_t tag; /* the hash's top bits: most other keys differ here */
    union {
        uint8_t bytes[INLINE_KEY]; /* len <= INLINE_KEY */
        uint8_t *heap;
    } key; /* the pair prefix: escaped key and PAIR_KEY_END */
};

_Static_assert(sizeof(struct dupcount_entry) == SLOT_ALIGN, "two slots to a cache line");

static inline const uint8_t *entry_key(const struct dupcount_entry *e)
{
    return e->len <= INLINE_KEY ? e->key.bytes : e->key.heap;
}

static void entry_free(struct dupcount_entry *e)
{
    if (e->len > INLINE_KEY)
        os_free(e->key.heap);
    *e = (struct dupcount_entry){0};
}

static uint64_t entry_hash(uint32_t tree_id, const uint8_t *k, size_t len)
{
    return XXH3_64bits_withSeed(k, len, tree_id);
}

static inline uint16_t hash_tag(uint64_t h) { return (uint16_t)(h >> 48); }

/* a == b for len bytes: keys here are short, a call to memcmp costs more */
static inline bool same_bytes(const uint8_t *a, const uint8_t *b, size_t len)
{
    if (len < 8 || len > 16)
        return memcmp(a, b, len) == 0;
    uint64_t a0, b0, a1, b1; /* the first 8 and the last 8, overlapping */
    memcpy(&a0, a, 8);
    memcpy(&b0, b, 8);
    memcpy(&a1, a + len - 8, 8);
    memcpy(&b1, b + len - 8, 8);
    return a0 == b0 && a1 == b1;
}

/* The key's slot, or the empty one where it would go. */
static struct dupcount_entry *find_slot(const struct dupcount_table *tb, uint64_t h, uint32_t tree_id,
                                        const uint8_t *k, size_t len)
{
    if (!tb->cap)
        return NULL;
    uint16_t tag = hash_tag(h);
    for (size_t i = h & (tb->cap - 1);; i = (i + 1) & (tb->cap - 1)) {
        struct dupcount_entry *e = &tb->slots[i];
        if (e->len == 0 ||
            (e->tag == tag && e->tree_id == tree_id && e->len == len && same_bytes(entry_key(e), k, len)))
            return e;
    }
}

/* Room for n entries at a load of at most three quarters. */
static int table_reserve(struct dupcount_table *tb, size_t n)
{
    if (4 * n <= 3 * tb->cap)
        return 0;
    size_t cap = tb->cap ? tb->cap : 64;
    while (4 * n > 3 * cap)
        cap *= 2;
    void *raw = os_calloc(cap * sizeof(struct dupcount_entry) + SLOT_ALIGN);
    if (!raw)
        return KEEL_NOMEM;
    struct dupcount_table grown = {
        .slots = (struct dupcount_entry *)(((uintptr_t)raw + SLOT_ALIGN - 1) & ~(uintptr_t)(SLOT_ALIGN - 1)),
        .raw = raw,
        .cap = cap,
        .n = tb->n,
    };
    for (size_t i = 0; i < tb->cap; i++) {
        struct dupcount_entry *e = &tb->slots[i];
        if (e->len)
            *find_slot(&grown, entry_hash(e->tree_id, entry_key(e), e->len), e->tree_id, entry_key(e), e->len) = *e;
    }
    os_free(tb->raw);
    *tb = grown;
    return 0;
}

uint64_t dupcount_prefetch(keel_txn *txn, uint32_t tree_id, const uint8_t *k, size_t len)
{
    const struct dupcount_table *tb = &txn->dupcounts;
    uint64_t h = entry_hash(tree_id, k, len);
    if (tb->cap)
        __builtin_prefetch(&tb->slots[h & (tb->cap - 1)], 1);
    return h;
}

int dupcount_add(keel_txn *txn, uint32_t tree_id, const uint8_t *k, size_t len, int64_t delta)
{
    return dupcount_add_hashed(txn, entry_hash(tree_id, k, len), tree_id, k, len, delta);
}

int dupcount_add_hashed(keel_txn *txn, uint64_t h, uint32_t tree_id, const uint8_t *k, size_t len, int64_t delta)
{
    struct dupcount_table *tb = &txn->dupcounts;
    if (delta == 0)
        return 0;
    int rc = table_reserve(tb, tb->n + 1);
    if (rc)
        return rc;
    struct dupcount_entry *e = find_slot(tb, h, tree_id, k, len);
    if (e->len == 0) {
        KEEL_ASSERT(len >= PAIR_TERM_SIZE + 1 && len <= UINT16_MAX);
        if (len > INLINE_KEY) {
            if (!(e->key.heap = os_malloc(len)))
                return KEEL_NOMEM;
            memcpy(e->key.heap, k, len);
        } else {
            memcpy(e->key.bytes, k, len);
        }
        e->tag = hash_tag(h);
        e->tree_id = tree_id;
        e->len = (uint16_t)len;
        tb->n++;
    }
    e->delta += delta;
    return 0;
}

int64_t dupcount_pending(const keel_txn *txn, uint32_t tree_id, const uint8_t *k, size_t len)
{
    int64_t sum = 0;
    uint64_t h = 0;
    for (const keel_txn *t = txn; t; t = t->parent) {
        if (t->dupcounts.n == 0)
            continue;
        if (!h)
            h = entry_hash(tree_id, k, len);
        const struct dupcount_entry *e = find_slot(&t->dupcounts, h, tree_id, k, len);
        if (e->len)
            sum += e->delta;
    }
    return sum;
}

int dupcount_settle(keel_txn *txn, uint32_t tree_id, const uint8_t *k, size_t len)
{
    return dupcount_add(txn, tree_id, k, len, -dupcount_pending(txn, tree_id, k, len));
}

int dupcount_forget_tree(keel_txn *txn, uint32_t tree_id)
{
    for (const keel_txn *a = txn->parent; a; a = a->parent) /* what the ancestors owe: cancelled here */
        for (size_t i = 0; i < a->dupcounts.cap; i++) {
            const struct dupcount_entry *e = &a->dupcounts.slots[i];
            int rc;
            if (e->len && e->tree_id == tree_id && (rc = dupcount_settle(txn, tree_id, entry_key(e), e->len)))
                return rc;
        }
    struct dupcount_table *tb = &txn->dupcounts;
    for (size_t i = 0; i < tb->cap; i++) { /* and this txn's own */
        struct dupcount_entry *e = &tb->slots[i];
        if (e->len && e->tree_id == tree_id)
            e->delta -= dupcount_pending(txn, tree_id, entry_key(e), e->len);
    }
    return 0;
}

int dupcount_each(keel_txn *txn, int (*fn)(keel_txn *txn, uint32_t tree_id, const uint8_t *k, size_t len,
                                           int64_t delta, void *ctx),
                  void *ctx)
{
    const struct dupcount_table *tb = &txn->dupcounts;
    for (size_t i = 0; i < tb->cap; i++) {
        const struct dupcount_entry *e = &tb->slots[i];
        int rc;
        if (e->len && e->delta && (rc = fn(txn, e->tree_id, entry_key(e), e->len, e->delta, ctx)))
            return rc;
    }
    return 0;
}

void dupcount_clear(keel_txn *txn)
{
    struct dupcount_table *tb = &txn->dupcounts;
    if (tb->n == 0)
        return;
    for (size_t i = 0; i < tb->cap; i++)
        entry_free(&tb->slots[i]);
    tb->n = 0;
}

void dupcount_free(keel_txn *txn)
{
    dupcount_clear(txn);
    os_free(txn->dupcounts.raw);
    txn->dupcounts = (struct dupcount_table){0};
}

int dupcount_nest_reserve(keel_txn *parent, const keel_txn *child)
{
    return table_reserve(&parent->dupcounts, parent->dupcounts.n + child->dupcounts.n);
}

void dupcount_nest_end(keel_txn *parent, keel_txn *child, bool commit)
{
    struct dupcount_table *ct = &child->dupcounts, *pt = &parent->dupcounts;
    if (commit) {
        for (size_t i = 0; i < ct->cap; i++) {
            struct dupcount_entry *e = &ct->slots[i];
            if (e->len == 0)
                continue;
            uint64_t h = entry_hash(e->tree_id, entry_key(e), e->len);
            struct dupcount_entry *p = find_slot(pt, h, e->tree_id, entry_key(e), e->len);
            KEEL_ASSERT(p); /* dupcount_nest_reserve made room */
            if (p->len) {
                p->delta += e->delta;
                entry_free(e);
            } else {
                *p = *e; /* the entry, and a long key's buffer, move to the parent */
                pt->n++;
                *e = (struct dupcount_entry){0};
            }
        }
        ct->n = 0;
    }
    dupcount_clear(child);
}
