/*
 * format.h — the on-disk format: meta pages, page header, nodes.
 *
 * Contract: this is the only file that knows byte offsets.  Everything is
 * little-endian and read and written with memcpy (no alignment assumptions).
 * doc/format.md describes the same layout in prose; keep the two in step.
 */
#ifndef KEEL_FORMAT_H
#define KEEL_FORMAT_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "keel.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "keel's file format is little-endian; big-endian hosts are not supported yet"
#endif

#define KEEL_MAGIC 0x4C45454Bu /* "KEEL" read as little-endian bytes */
#define KEEL_FORMAT_VERSION 2u /* the format new files get: page checksums (see PAGE_TRAILER) */
#define KEEL_FORMAT_OLDEST 1u  /* the oldest format this library reads and writes (as that format) */
#define KEEL_MIN_PAGE KEEL_MIN_PAGE_SIZE /* keel.h */
#define KEEL_MAX_PAGE KEEL_MAX_PAGE_SIZE
#define KEEL_MAX_DEPTH 32 /* deeper than any real tree: a deeper one is corrupt */

/* Internal trees whose descriptors live in the meta page. */
enum { TREE_DEFAULT = 0, TREE_CATALOG = 1, TREE_FREE = 2, TREE_EXPIRY = 3, TREE_COUNT = 4 };

/* A tree descriptor: 56 bytes, in the meta page (internal trees) or as the
 * value of a catalog entry (named buckets).  Format 1 had no root_sum: its
 * descriptors are the first 48 bytes (TREE_DESC_V1_SIZE). */
struct tree_desc {
    uint64_t root; /* 0 = empty tree (pages 0 and 1 are metas, never roots) */
    uint64_t entries;
    uint64_t branch_pages;
    uint64_t leaf_pages;
    uint64_t overflow_pages;
    uint16_t depth; /* 0 when empty, 1 = a single leaf */
    uint16_t flags; /* TREE_F_*: the tree's kind, fixed at its creation (a u32 depth before: always 0) */
    uint32_t id;    /* bucket id, stable for the bucket's life: 0 = default bucket and internal trees */
    uint64_t root_sum; /* the root page's sum (PAGE_TRAILER); 0: none (format 1, or changed in this txn) */
};
#define TREE_DESC_SIZE 56
/* Tree flags.
 * DUPSORT: a bucket whose key holds a sorted set of values.  Each (key,
 *   value) pair is one entry, whose node key is the pair's key (below) and
 *   whose value is empty; the tree is ordered by key, then by value.  A
 *   file holding one has META_F_DUPSORT, which older libraries refuse. */
#define TREE_F_DUPSORT 0x1u
/* COUNTED (with DUPSORT): each key's first pair carries the key's number of
 *   pairs as its value (8 bytes, little-endian); every other pair's value is
 *   empty.  Set on every DUPSORT tree created since; a file holding one has
 *   META_F_DUPCOUNT.  A DUPSORT tree without it (made before) is counted
 *   by a walk of its pairs, and its pairs carry no count. */
#define TREE_F_COUNTED 0x2u
#define TREE_F_KNOWN (TREE_F_DUPSORT | TREE_F_COUNTED)
#define PAIR_COUNT_SIZE 8u
#define TREE_DESC_V1_SIZE 48

/* The meta page: at offset 0 of pages 0 and 1. */
struct meta {
    uint32_t magic;
    uint32_t version;
    uint32_t page_size;
    uint32_t flags; /* META_F_* */
    uint64_t txnid; /* the commit that wrote it */
    uint64_t npages; /* pages in use: the first page number never allocated */
    uint64_t free_pages; /* pages recorded in the free tree and the free tail */
    uint64_t next_bucket_id; /* id for the next bucket created; ids are never reused */
    uint64_t free_tail_sum; /* META_F_FREETAIL: XXH3-64 of the free tail (below) */
    uint64_t commit_list_sum; /* META_F_ONEFLUSH: XXH3-64 of the commit list (below) */
    struct tree_desc trees[TREE_COUNT];
    uint64_t checksum; /* XXH3-64 of every byte above */
};
#define META_SIZE ((size_t)sizeof(struct meta))

/* Meta flags.
 * ONEFLUSH: the commit wrote its pages and this meta before one sync, in no
 *   particular order, so a power cut can leave this meta whole and some of
 *   its pages not.  The commit list after the meta names every page the
 *   commit wrote and their checksum; the first opener after a crash checks
 *   them (meta_verify_commit) and falls back to the other meta if they differ.
 * UNSYNCED: written without a sync of the meta (KEEL_NOMETASYNC, KEEL_NOSYNC):
 *   a crash may bring back the meta before it, so the next commit keeps that
 *   one's pages one commit longer and does not use ONEFLUSH.
 * FREETAIL: the second half of the meta page holds the free tail: free pages
 *   kept there instead of in the free tree, so that a small commit writes no
 *   free-tree page.  A library without this flag refuses the file
 *   (KEEL_VERSION) rather than lose track of those pages. */
#define META_F_ONEFLUSH 0x1u
#define META_F_UNSYNCED 0x2u
#define META_F_FREETAIL 0x4u
#define META_F_DUPSORT 0x8u /* the file has (or had) a DUPSORT bucket (TREE_F_DUPSORT): never cleared */
#define META_F_DUPCOUNT 0x10u /* the file has (or had) a TREE_F_COUNTED tree: never cleared */
#define META_F_STICKY (META_F_DUPSORT | META_F_DUPCOUNT) /* what the file holds: every commit keeps these */
#define META_F_KNOWN (META_F_ONEFLUSH | META_F_UNSYNCED | META_F_FREETAIL | META_F_DUPSORT | META_F_DUPCOUNT)

/* The commit list: at offset META_LIST_OFF of a ONEFLUSH meta's page.
 *   u32 nruns | u32 zero | u64 pages_sum | nruns x (u64 first pgno, u64 count)
 * pages_sum is XXH3-64 of the listed pages' bytes, runs in ascending order. */
#define META_LIST_OFF 512u
#define META_LIST_HDR 16u
#define META_LIST_RUN 16u
/* With a free tail the list must end where the tail begins. */
static inline size_t meta_list_max_runs(uint32_t psize, bool tail)
{
    return ((tail ? psize / 2 : psize) - META_LIST_OFF - META_LIST_HDR) / META_LIST_RUN;
}

/* The free tail: at offset psize / 2 of a FREETAIL meta's page.
 *   u32 nwords | u32 zero | nwords x u64
 * The words are groups: txn id, page count, then that many page numbers,
 * the pages that txn freed (txn id 0: reusable at once), as in a free-tree
 * record.  free_tail_sum is XXH3-64 of the header and the words. */
#define META_TAIL_HDR 8u
static inline size_t meta_tail_off(uint32_t psize) { return psize / 2; }
static inline size_t meta_tail_max_words(uint32_t psize) { return (psize / 2 - META_TAIL_HDR) / 8; }
#define META_SUM_BYTES offsetof(struct meta, checksum)
_Static_assert(sizeof(struct tree_desc) == TREE_DESC_SIZE, "tree_desc layout");
_Static_assert(sizeof(struct meta) == 64 + 4 * TREE_DESC_SIZE + 8, "meta layout");
/* Format 1's meta: the same first 64 bytes, 48-byte descriptors, then the
 * checksum of the bytes before it (meta.c converts). */
#define META_V1_TREES 64u
#define META_V1_SUM_OFF (META_V1_TREES + 4 * TREE_DESC_V1_SIZE)
#define META_V1_SIZE (META_V1_SUM_OFF + 8)

/* Page header: 16 bytes at the start of every non-meta page. */
#define PAGE_HDR 16u
#define P_BRANCH 0x01u
#define P_LEAF 0x02u
#define P_OVERFLOW 0x04u
#define SLOT_SIZE 2u /* a u16 slot per node after the header: the node's offset in the page */
/* offsets */
#define PH_PGNO 0   /* u64: the page's own number, checked on every read */
#define PH_FLAGS 8  /* u16 */
#define PH_NKEYS 10 /* u16 */
#define PH_UPPER 12 /* u32: start of node data (nodes grow down from the end); overflow: page count */

static inline uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline void wr16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void wr64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static inline uint64_t page_pgno(const uint8_t *p) { return rd64(p + PH_PGNO); }
static inline unsigned page_flags(const uint8_t *p) { return rd16(p + PH_FLAGS); }
static inline unsigned page_nkeys(const uint8_t *p) { return rd16(p + PH_NKEYS); }
static inline uint32_t page_upper(const uint8_t *p) { return rd32(p + PH_UPPER); }
static inline unsigned page_slot(const uint8_t *p, unsigned i) { return rd16(p + PAGE_HDR + SLOT_SIZE * i); }
/* bytes free between the slot array and the node area */
static inline uint32_t page_room(const uint8_t *p) { return page_upper(p) - PAGE_HDR - SLOT_SIZE * page_nkeys(p); }

/* Page writers.  The page number is written by the pager alone. */
static inline void page_set_pgno(uint8_t *p, uint64_t pgno) { wr64(p + PH_PGNO, pgno); }
static inline void page_set_nkeys(uint8_t *p, unsigned n) { wr16(p + PH_NKEYS, (uint16_t)n); }
static inline void page_set_upper(uint8_t *p, uint32_t upper) { wr32(p + PH_UPPER, upper); }
static inline void page_set_header(uint8_t *p, unsigned flags, unsigned nkeys, uint32_t upper)
{
    wr16(p + PH_FLAGS, (uint16_t)flags);
    page_set_nkeys(p, nkeys);
    page_set_upper(p, upper);
}
static inline void overflow_set_header(uint8_t *p, uint32_t npages) { page_set_header(p, P_OVERFLOW, 0, npages); }
/* where slot i is: the slot array moves as a whole when a node goes in or out */
static inline uint8_t *page_slot_at(uint8_t *p, unsigned i) { return p + PAGE_HDR + SLOT_SIZE * i; }
static inline void page_set_slot(uint8_t *p, unsigned i, unsigned off) { wr16(page_slot_at(p, i), (uint16_t)off); }

/* Page trailer (format 2): the last 24 bytes of every page, and of an
 * overflow run's last page:
 *   u64 txnid (the commit that wrote it) | u32 tree | u32 zero | u64 sum
 * sum is page_sum() (pager.c) of every byte before it; a reference to the page (its
 * parent's branch node, the leaf node of an overflow value, a descriptor)
 * holds the same sum, so that a lost or misdirected write is caught too.
 * tree names the tree the page belongs to (a bucket's id, or TAG_* for the
 * internal trees), so that salvage can tell whose a lost page was.  Nodes
 * end where the trailer begins (keel_db.node_end).  Format 1 pages have no
 * trailer: nodes end at the page's end. */
#define PAGE_TRAILER 24u
#define PT_TXNID 24u /* offsets from the end of the page (run) */
#define PT_TREE 16u
#define PT_SUM 8u
#define TAG_CATALOG 0xFFFFFFFFu
#define TAG_FREE 0xFFFFFFFEu
#define TAG_EXPIRY 0xFFFFFFFDu
#define BUCKET_ID_MAX 0xFFFFFF00u /* bucket ids stay below the tags */
static inline uint64_t page_trailer_txnid(const uint8_t *p, size_t len) { return rd64(p + len - PT_TXNID); }
static inline uint32_t page_trailer_tree(const uint8_t *p, size_t len) { return rd32(p + len - PT_TREE); }
static inline uint64_t page_trailer_sum(const uint8_t *p, size_t len) { return rd64(p + len - PT_SUM); }
static inline void page_set_tree(uint8_t *p, size_t len, uint32_t tree)
{
    wr32(p + len - PT_TREE, tree);
    wr32(p + len - PT_TREE + 4, 0);
}

/*
 * Leaf node:   u16 flags | u16 ksize | u32 vsize | [u64 expiry if N_EXPIRES] | key | value or overflow reference
 *              (overflow reference: u64 first pgno, then with N_SUM the run's u64 sum)
 * Branch node: u64 child | u16 ksize (bit 15: B_SUM) | key | [u64 the child's sum if B_SUM]
 *              (the key of node 0 is ignored: it stands for -infinity)
 * Format 2 writes N_SUM on every N_BIG node and B_SUM on every branch node;
 * format 1 wrote neither.  A sum of 0 in a dirty page means "not known yet":
 * the commit's seal fills it in (seal.c).
 */
#define N_BIG 0x01u     /* value lives in an overflow run; the node holds its first page number */
#define N_EXPIRES 0x02u /* an absolute expiry time (ms since the epoch) follows the header */
#define N_SUM 0x04u     /* with N_BIG: the run's sum follows its page number */
#define LEAF_HDR 8u
#define BRANCH_HDR 10u
#define B_SUM 0x8000u
#define B_KSIZE_MASK 0x7FFFu

static inline unsigned leaf_node_flags(const uint8_t *n) { return rd16(n); }
static inline unsigned leaf_node_ksize(const uint8_t *n) { return rd16(n + 2); }
static inline uint32_t leaf_node_vsize(const uint8_t *n) { return rd32(n + 4); }
static inline unsigned leaf_node_extra(const uint8_t *n) { return (leaf_node_flags(n) & N_EXPIRES) ? 8u : 0u; }
static inline const uint8_t *leaf_node_key(const uint8_t *n) { return n + LEAF_HDR + leaf_node_extra(n); }
static inline const uint8_t *leaf_node_val(const uint8_t *n) { return leaf_node_key(n) + leaf_node_ksize(n); }
static inline size_t leaf_node_size(const uint8_t *n)
{
    /* summed in size_t: in 32 bits a damaged vsize near 4 GiB wraps to a small size */
    return (size_t)LEAF_HDR + leaf_node_extra(n) + leaf_node_ksize(n) +
           ((leaf_node_flags(n) & N_BIG) ? ((leaf_node_flags(n) & N_SUM) ? 16u : 8u) : (size_t)leaf_node_vsize(n));
}
static inline int64_t leaf_node_expiry(const uint8_t *n)
{
    return (leaf_node_flags(n) & N_EXPIRES) ? (int64_t)rd64(n + LEAF_HDR) : 0;
}
/* N_BIG: the first page of the overflow run holding the value */
static inline uint64_t leaf_node_overflow(const uint8_t *n) { return rd64(leaf_node_val(n)); }
/* N_BIG: the run's sum, 0 without N_SUM */
static inline uint64_t leaf_node_overflow_sum(const uint8_t *n)
{
    return (leaf_node_flags(n) & N_SUM) ? rd64(leaf_node_val(n) + 8) : 0;
}
static inline uint64_t branch_node_child(const uint8_t *n) { return rd64(n); }
static inline unsigned branch_node_ksize(const uint8_t *n) { return rd16(n + 8) & B_KSIZE_MASK; }
static inline bool branch_node_has_sum(const uint8_t *n) { return rd16(n + 8) & B_SUM; }
static inline const uint8_t *branch_node_key(const uint8_t *n) { return n + BRANCH_HDR; }
static inline size_t branch_node_size(const uint8_t *n)
{
    return BRANCH_HDR + branch_node_ksize(n) + (branch_node_has_sum(n) ? 8u : 0u);
}
/* the child's sum, 0 without B_SUM */
static inline uint64_t branch_node_sum(const uint8_t *n)
{
    return branch_node_has_sum(n) ? rd64(n + BRANCH_HDR + branch_node_ksize(n)) : 0;
}

/* Node writers.  A leaf node: its size, then its header, expiry and key;
 * leaf_node_write returns where the value (or, N_BIG, the overflow run's
 * first page number) goes. */
static inline size_t leaf_node_size_for(unsigned flags, size_t klen, size_t vlen)
{
    return LEAF_HDR + ((flags & N_EXPIRES) ? 8u : 0u) + klen + ((flags & N_BIG) ? ((flags & N_SUM) ? 16u : 8u) : vlen);
}
static inline uint8_t *leaf_node_write(uint8_t *n, unsigned flags, const void *key, size_t klen, uint32_t vsize,
                                       int64_t expiry)
{
    wr16(n, (uint16_t)flags);
    wr16(n + 2, (uint16_t)klen);
    wr32(n + 4, vsize);
    if (flags & N_EXPIRES)
        wr64(n + LEAF_HDR, (uint64_t)expiry);
    uint8_t *k = n + LEAF_HDR + ((flags & N_EXPIRES) ? 8u : 0u);
    memcpy(k, key, klen);
    return k + klen;
}
static inline void leaf_node_set_overflow(uint8_t *n, uint64_t pgno) { wr64(n + (leaf_node_val(n) - n), pgno); }
static inline void leaf_node_set_overflow_sum(uint8_t *n, uint64_t sum)
{
    if (leaf_node_flags(n) & N_SUM)
        wr64(n + (leaf_node_val(n) - n) + 8, sum);
}
/* summed: a format 2 node (B_SUM) with the child's sum (0: not known
 * until the seal).  BRANCH_FIRST_MAX bytes hold a node without a key. */
#define BRANCH_FIRST_MAX (BRANCH_HDR + 8u)
static inline size_t branch_node_write(uint8_t *n, uint64_t child, uint64_t sum, const void *key, size_t klen,
                                       bool summed)
{
    wr64(n, child);
    wr16(n + 8, (uint16_t)(klen | (summed ? B_SUM : 0)));
    if (klen)
        memcpy(n + BRANCH_HDR, key, klen);
    if (summed)
        wr64(n + BRANCH_HDR + klen, sum);
    return BRANCH_HDR + klen + (summed ? 8u : 0u);
}
static inline void branch_node_set_sum(uint8_t *n, uint64_t sum)
{
    if (branch_node_has_sum(n))
        wr64(n + BRANCH_HDR + branch_node_ksize(n), sum);
}
/* A new child: its sum is not known until the seal */
static inline void branch_node_set_child(uint8_t *n, uint64_t child)
{
    wr64(n, child);
    branch_node_set_sum(n, 0);
}

/* Expiry-tree keys: big-endian expiry time (ms since the epoch), big-endian
 * bucket id, then the entry's key; the value is empty. */
#define EXPIRY_KEY_PREFIX 12u

/* The longest key a format allows: two of the biggest nodes fit a page's
 * node area (which ends at node_end), and the biggest is a leaf node with
 * an expiry time and an overflow reference, whose key the expiry tree's
 * key (EXPIRY_KEY_PREFIX more bytes) holds too. */
static inline size_t format_max_node(uint32_t node_end) { return (node_end - PAGE_HDR) / 2 - 2; }
static inline size_t format_max_key(uint32_t node_end, bool summed)
{
    return format_max_node(node_end) - LEAF_HDR - 8 - (summed ? 16u : 8u) - EXPIRY_KEY_PREFIX;
}

/* The longest pair key of a DUPSORT tree (below): it fits a leaf node with
 * an expiry time and an empty value, and a branch node with a sum. */
static inline size_t format_max_pair_key(uint32_t node_end)
{
    return format_max_node(node_end) - BRANCH_HDR - 8;
}
/* The longest pair key a put may add to a COUNTED tree: the key's first
 * pair holds its count as well (a leaf node with an expiry and the count). */
static inline size_t format_max_counted_pair_key(uint32_t node_end)
{
    size_t leaf_fit = format_max_node(node_end) - LEAF_HDR - 8 - PAIR_COUNT_SIZE;
    size_t all = format_max_pair_key(node_end);
    return leaf_fit < all ? leaf_fit : all;
}

/* The i-th node of a page, checked to lie inside its node area, which ends
 * at `end` (keel_db.node_end: a damaged slot or size gives KEEL_CORRUPTED,
 * never a read outside). */
static inline int page_node(const uint8_t *page, unsigned i, uint32_t end, const uint8_t **node)
{
    unsigned off = page_slot(page, i);
    bool leaf = page_flags(page) & P_LEAF;
    size_t hdr = leaf ? LEAF_HDR : BRANCH_HDR;
    if (off < PAGE_HDR + SLOT_SIZE * page_nkeys(page) || off + hdr > end)
        return KEEL_CORRUPTED;
    const uint8_t *n = page + off;
    size_t sz = leaf ? leaf_node_size(n) : branch_node_size(n);
    if (off + sz > end)
        return KEEL_CORRUPTED;
    *node = n;
    return 0;
}

/* A DUPSORT tree's pair key: the user key with each 0x00 byte written as
 * 00 FF, then the terminator 00 00, then the value.  memcmp order of pair
 * keys is then (key, value) order, so the tree code, its separators and
 * every walk stay those of a plain tree (FoundationDB's tuple layer escapes
 * the same way).  PAIR_KEY_NEXT follows every pair key of a key and
 * precedes every later key's: a seek there skips the key's values. */
#define PAIR_TERM_SIZE 2u
static const uint8_t PAIR_KEY_END[2] = {0x00, 0x00};
static const uint8_t PAIR_KEY_NEXT[2] = {0x00, 0x01};
/* Whether key holds a zero byte: most keys hold none, and a short one is
 * answered from two overlapping words (a word has a zero byte exactly when
 * (w - 0x01..01) & ~w & 0x80..80 is not 0), without a call to memchr. */
static inline bool key_has_zero(const uint8_t *key, size_t klen)
{
    if (klen < 8 || klen > 16)
        return memchr(key, 0, klen) != NULL;
    uint64_t a, b;
    memcpy(&a, key, 8);
    memcpy(&b, key + klen - 8, 8);
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    return (((a - ones) & ~a) | ((b - ones) & ~b)) & highs;
}
static inline size_t pair_key_escaped_len(const uint8_t *key, size_t klen)
{
    if (!key_has_zero(key, klen))
        return klen;
    size_t n = klen;
    for (const uint8_t *p = key, *e = key + klen; (p = memchr(p, 0, (size_t)(e - p))); p++)
        n++;
    return n;
}
/* Writes the escaped key (without its terminator) to out; its length. */
static inline size_t pair_key_escape(uint8_t *out, const uint8_t *key, size_t klen)
{
    size_t o = 0;
    for (size_t i = 0; i < klen; i++) {
        out[o++] = key[i];
        if (key[i] == 0)
            out[o++] = 0xFF;
    }
    return o;
}
/* The escaped key's length in the pair key p (where its terminator
 * begins), or 0 when p holds no well-formed one. */
static inline size_t pair_key_part(const uint8_t *p, size_t len)
{
    const uint8_t *z = p, *e = p + len;
    while ((z = memchr(z, 0, (size_t)(e - z))) && z + 1 < e) {
        if (z[1] == 0x00)
            return z == p ? 0 : (size_t)(z - p);
        if (z[1] != 0xFF)
            return 0;
        z += 2;
    }
    return 0;
}
/* Unescapes n escaped bytes (well formed: pair_key_part) into out; the length. */
static inline size_t pair_key_unescape(uint8_t *out, const uint8_t *esc, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        out[o++] = esc[i];
        if (esc[i] == 0)
            i++;
    }
    return o;
}

/* Free-tree keys: big-endian txn id then big-endian chunk number, so that
 * memcmp order is numeric order. Values: arrays of little-endian u64 pgnos. */
#define FREE_KEY_SIZE 12u

#endif
