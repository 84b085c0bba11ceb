/*
 * seal.c — the commit's seal: every page the txn wrote gets its sum, and
 * every reference to it the same sum, children before parents, so that the
 * sums form a Merkle tree from the meta down (format.h: the page trailer).
 *
 * Contract:
 *   - Runs once per commit of a summed (format 2) file, after the last
 *     change to any tree (freelist_record) and before pager_write_out; it
 *     changes no tree's shape and allocates no page.
 *   - Within a txn, a reference to a page the txn wrote holds sum 0:
 *     btree.c writes 0 whenever a reference gets a page of this txn (a
 *     copy, a split, a new root), and a reference copied from a clean page
 *     keeps its sum.  So the seal visits exactly the pages written: from
 *     each root whose sum is 0, down the references whose sum is 0.
 *   - Overflow runs are sealed when written (btree.c).  A spill (seal_spill)
 *     seals what it writes early, bottom-up: leaves, then the branch pages
 *     all of whose changed children it sealed; their sums wait in the dirty
 *     table (pager.c) for the commit's seal, and a page brought back into
 *     memory to be changed has its reference's sum set to 0 again (btree.c
 *     does that for every page it copies for writing, spilled or not).
 *     Catalog leaves are never spilled: their descriptors' sums are the
 *     commit's to fill in.
 *   - The catalog's leaves hold the named buckets' descriptors: a bucket
 *     whose root sum is 0 is sealed before the leaf that holds it.
 *
 * Layer: above bucket.c (it reads catalog values as descriptors), below txn.
 */
#include <stddef.h>
#include <string.h>

#include "internal.h"

static int seal_tree(keel_txn *txn, struct tree_desc *t, uint32_t tag);

/* The descriptors of buckets changed in this txn get their root sums. */
static int seal_catalog_leaf(keel_txn *txn, uint8_t *page)
{
    for (unsigned i = 0; i < page_nkeys(page); i++) {
        const uint8_t *n;
        int rc = node_at(page, i, txn->db->node_end, &n);
        if (rc)
            return rc;
        if ((leaf_node_flags(n) & N_BIG) || leaf_node_vsize(n) != TREE_DESC_SIZE)
            return CORRUPT(page_pgno(page));
        struct tree_desc d;
        memcpy(&d, leaf_node_val(n), TREE_DESC_SIZE);
        if (!d.root || d.root_sum)
            continue;
        if (d.id == 0 || d.id >= BUCKET_ID_MAX)
            return CORRUPT(page_pgno(page));
        if ((rc = seal_tree(txn, &d, d.id)))
            return rc;
        wr64((uint8_t *)leaf_node_val(n) + offsetof(struct tree_desc, root_sum), d.root_sum);
    }
    return 0;
}

/* Seals page pgno of tree `tag`, `height` levels above the leaves and
 * itself included, after its children: *sum. */
static int seal_page(keel_txn *txn, uint64_t pgno, uint32_t tag, unsigned height, uint64_t *sum)
{
    uint8_t *page;
    int rc = pager_dirty_state(txn, pgno, &page, sum);
    if (rc == KEEL_NOTFOUND) /* a reference without a sum to a page this txn did not write */
        return CORRUPT(pgno);
    if (!page) { /* spilled, sealed then */
        KEEL_ASSERT(*sum != 0);
        return 0;
    }
    unsigned flags = page_flags(page);
    if (flags != (height > 1 ? P_BRANCH : P_LEAF))
        return CORRUPT(pgno);
    /* A dirty page is whole (btree.c builds it from pages checked whole):
     * its nodes are read without bounds checks, one load of ksize each, as
     * this loop visits every reference of every branch page written. */
    for (unsigned i = 0, n = flags == P_BRANCH ? page_nkeys(page) : 0; i < n; i++) {
        uint8_t *nd = page + page_slot(page, i);
        unsigned ks = rd16(nd + 8);
        if (!(ks & B_SUM))
            return CORRUPT(pgno);
        uint8_t *sum_at = nd + BRANCH_HDR + (ks & B_KSIZE_MASK);
        if (rd64(sum_at))
            continue;
        uint64_t s;
        if ((rc = seal_page(txn, branch_node_child(nd), tag, height - 1, &s)))
            return rc;
        wr64(sum_at, s);
    }
    if (flags == P_LEAF && tag == TAG_CATALOG && (rc = seal_catalog_leaf(txn, page)))
        return rc;
    /* The tag came with the page's first version, copied from the file
     * ever since: damage, if it names another tree */
    if (page_trailer_tree(page, txn->db->psize) != tag)
        return CORRUPT(pgno);
    *sum = pager_seal(txn, page, 1);
    return 0;
}

static int seal_tree(keel_txn *txn, struct tree_desc *t, uint32_t tag)
{
    if (!t->root || t->root_sum)
        return 0;
    if (t->depth == 0 || t->depth > KEEL_MAX_DEPTH)
        return CORRUPT(t->root);
    return seal_page(txn, t->root, tag, t->depth, &t->root_sum);
}

/* ---- spill ---- */
/* A leaf (not the catalog's) or run is ready at once; a branch page once
 * every child its zero-sum references name is sealed (spilled before, or
 * marked in this spill). */
static int spill_mark(keel_txn *txn, struct dirty *d, void *ctx)
{
    bool *progress = ctx;
    if (!d->buf || d->sum)
        return 0;
    uint32_t ps = txn->db->psize;
    unsigned flags = page_flags(d->buf);
    if (flags & P_OVERFLOW) {
        d->sum = page_trailer_sum(d->buf, (size_t)d->npages * ps);
    } else if (flags & P_LEAF) {
        if (page_trailer_tree(d->buf, ps) == TAG_CATALOG)
            return 0;
        d->sum = pager_seal(txn, d->buf, 1);
    } else {
        for (unsigned pass = 0; pass < 2; pass++) /* look, then fill in */
            for (unsigned i = 0; i < page_nkeys(d->buf); i++) {
                const uint8_t *n;
                int rc = node_at(d->buf, i, txn->db->node_end, &n);
                if (rc)
                    return rc;
                if (branch_node_sum(n))
                    continue;
                uint8_t *cbuf;
                uint64_t csum;
                if (pager_dirty_state(txn, branch_node_child(n), &cbuf, &csum) || !csum)
                    return 0; /* not ready (or damage, which the commit's seal reports) */
                if (pass == 1)
                    branch_node_set_sum((uint8_t *)n, csum);
            }
        d->sum = pager_seal(txn, d->buf, 1);
    }
    *progress = true;
    return 0;
}

int seal_spill(keel_txn *txn)
{
    if (!pager_spill_due(txn))
        return 0;
    if (txn->db->summed) {
        /* each round seals one more level; a tree is never deeper than KEEL_MAX_DEPTH */
        bool progress = true;
        for (int round = 0; progress && round <= KEEL_MAX_DEPTH; round++) {
            progress = false;
            int rc = pager_each_dirty(txn, spill_mark, &progress);
            if (rc)
                return rc;
        }
    }
    return pager_spill(txn);
}

int seal_commit(keel_txn *txn)
{
    if (!txn->db->summed)
        return 0;
    static const uint32_t tags[TREE_COUNT] = {[TREE_DEFAULT] = 0,
                                              [TREE_CATALOG] = TAG_CATALOG,
                                              [TREE_FREE] = TAG_FREE,
                                              [TREE_EXPIRY] = TAG_EXPIRY};
    for (int i = 0; i < TREE_COUNT; i++) {
        int rc = seal_tree(txn, &txn->meta.trees[i], tags[i]);
        if (rc)
            return rc;
    }
    return 0;
}
