/*
 * internal.h — the in-memory state shared by keel's layers, and each layer's
 * interface.  Dependencies point one way:
 *
 *   os, hash -> pagebuf -> lockfile -> meta -> group -> pager -> btree, dupcount -> cursor -> space -> bucket
 *      -> expiry, relocate, seal -> dup -> kv -> txn -> ops, api, db      (copy, check, salvage)
 *
 * (space: space.c, the allocator, and freelist.c, the free tree on disk.)
 * One loop, deliberate, stated here once.  btree <-> space: allocating a
 * page may reclaim a free-tree record, and reclaiming edits the free tree
 * through btree, which allocates again.  Its re-entrancy rule, asserted at
 * the space layer's entry points: while the space layer edits the free
 * tree itself (space.editing_free_tree) or records the free list at commit
 * (space.recording), allocation never reclaims, so the loop turns at most
 * once (space.c's contract).
 *
 * meta (meta.c) lies below the pager: the meta pages 0 and 1 are no pager
 * pages, meta.c calls nothing of the pager, and the pager's commit
 * write-out seals the meta it writes (meta_seal).  Every choice of the
 * newest meta goes through meta_select.  Bucket descriptors never move
 * while a txn lives, so a cursor keeps its tree and calls nothing above
 * it.  relocate.c walks every tree, named buckets too, so it sits above
 * bucket.c.  kv.c is the one write path (see there).  db (db.c: open,
 * create, recover, close) is a top layer beside api: only the public
 * keel_open and keel_close enter it, and it declares nothing here.
 */
#ifndef KEEL_INTERNAL_H
#define KEEL_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "format.h"
#include "keel.h"
#include "os.h"
#include "tuning.h"

/* ---- small containers --------------------------------------------------- */
struct pgvec { /* a growable array of page numbers */
    uint64_t *v;
    size_t n, cap;
};
int pgvec_push(struct pgvec *pv, uint64_t pgno);
void pgvec_free(struct pgvec *pv);
int sort_u64(uint64_t *v, size_t n); /* ascending; KEEL_NOMEM */

struct dirty { /* a page (or overflow run) written by this txn, not yet on disk */
    uint64_t pgno; /* 0 = empty slot */
    uint32_t npages;
    uint8_t level; /* the nesting level that made it or last saved it (pager.c, "nested txns") */
    uint8_t *buf;  /* NULL: spilled (written to the file early) */
    uint64_t sum;  /* spilled, summed file: the sum it was sealed with */
};
struct dirty_table { /* open addressing on pgno */
    struct dirty *slots;
    size_t cap, count;
};

/* ---- lock file (lockfile.c) --------------------------------------------- */
struct lock_header;
struct reader_slot;

/* ---- the group commit's shared state (group.c owns its meaning) ---------
 * It lives in the lock file after the reader slots, so that writers in
 * every process share it. */
#define GROUP_RUNS_MAX 4096 /* page runs a group's commit list can gather (more: two syncs) */
#define GROUP_SYNC_DATA 1u  /* a commit of the group wants its pages synced */
#define GROUP_SYNC_META 2u  /* ... and its meta */
struct group_run { /* pages [first, first + count) that commit `txnid` wrote */
    uint64_t txnid, first, count;
};
struct group_slot { /* a commit published and not yet known durable: its meta page */
    _Atomic uint64_t seq; /* odd while a writer fills the slot (a seqlock for the flusher's copy) */
    uint64_t txnid;
    uint64_t unlisted; /* the newest commit of the chain not in `runs` (its pages were not all listed); 0 none */
    uint32_t needs;    /* GROUP_SYNC_*: of every commit since the visible one when it was published */
    uint32_t nruns;
    uint32_t mlen;  /* bytes of `page` to write */
    uint32_t pad;
    uint64_t fsize; /* the file's size when the commit was published (a flush compares it with synced_size) */
    uint32_t pad2[4];
    struct group_run runs[GROUP_RUNS_MAX]; /* the commits since the visible one, in commit order */
    uint8_t page[KEEL_MAX_PAGE];
};
struct group_shared {
    _Atomic uint64_t visible; /* the newest commit readers may see: durable (its line is read by every read txn) */
    uint8_t pad0[56];
    _Atomic uint32_t flushes; /* counts flushes: committers that wait for one sleep on it (a futex word) */
    _Atomic uint32_t sleepers; /* committers asleep on `flushes`: the leader wakes them */
    _Atomic uint32_t sync_us;  /* how long the last flush's syncs took (the gather budget: group.c) */
    _Atomic uint32_t last_group; /* commits the last flush made durable */
    uint8_t pad2[48];
    _Atomic uint32_t flusher; /* the flush lock (lockfile.c's word lock) */
    _Atomic uint32_t failed;  /* a flush's sync failed: every later commit answers KEEL_PANIC */
    _Atomic uint64_t pending;  /* the newest commit published (its slot: pending & 1); 0 none */
    _Atomic uint64_t fallback; /* the oldest commit a crash can come back to */
    _Atomic uint64_t keep;     /* writers reuse no page freed after this commit (<= fallback) */
    _Atomic uint64_t synced_size; /* the file size at the last fsync */
    _Atomic uint64_t fallback_npages; /* the fallback commit's size in pages: the file keeps them */
    _Atomic uint64_t visible_npages;  /* the visible commit's size in pages */
    _Atomic uint32_t visible_slot;    /* the meta slot the visible commit was flushed into; > 1: unknown */
    uint8_t pad1[4];
    _Atomic uint64_t file_size; /* the data file's size as writers changed it, never above the real one */
    uint8_t pad3[56];
    struct group_slot slot[2];
};

struct lockfile {
    int fd;      /* -1 with KEEL_NOLOCK */
    int data_fd; /* the database file, whose bytes say who uses it */
    char *path;
    size_t size;
    struct lock_header *hdr; /* NULL with KEEL_NOLOCK */
    struct reader_slot *slots;
    struct group_shared *group; /* NULL with KEEL_NOLOCK (no writer) */
    uint32_t max_readers;
    bool sole;    /* holds byte 0 exclusively: nobody else has the db open */
    bool created; /* this open created the file */
    bool nolock;
    uint64_t nolock_bad_meta; /* KEEL_NOLOCK: bad_meta kept here */
    uint32_t me;              /* this handle's number + 1: marks what it holds */
    /* Reader slots the handle keeps between read txns, without a lock:
     * bit i of `parked` says parked_slot[i] holds one to take; bit i of
     * `parked_busy` says entry i is taken, or being filled or emptied. */
    _Atomic uint32_t parked, parked_busy;
    int parked_slot[LOCK_PARKED_MAX];
};
/* flags: KEEL_RDONLY, KEEL_NOLOCK.  KEEL_LOCKPATH when the database is in
 * use through another lock file; keel_error_detail() names the file at fault. */
int lockfile_open(struct lockfile *lf, int data_fd, const char *db_path, uint32_t max_readers, unsigned flags);
int lockfile_share(struct lockfile *lf); /* the sole user lets others in */
/* The checksum of a meta every user must ignore (a torn one-flush commit), 0 if none. */
uint64_t lockfile_bad_meta(const struct lockfile *lf);
void lockfile_set_bad_meta(struct lockfile *lf, uint64_t checksum);
void lockfile_close(struct lockfile *lf, bool inherited); /* inherited: in a child after fork() */
void lockfile_abandon(struct lockfile *lf); /* a failed open: also removes a lock file it created */
void lockfile_writer_lock(struct lockfile *lf); /* waits; takes over from a dead holder */
void lockfile_writer_unlock(struct lockfile *lf);
int lockfile_writer_trylock(struct lockfile *lf); /* 0, or EBUSY while another holds it */
bool lockfile_writer_busy(const struct lockfile *lf); /* somebody holds the writer lock (a glance) */
void lockfile_flush_lock(struct lockfile *lf); /* the group commit's flush lock (group.c), as the writer lock */
int lockfile_flush_trylock(struct lockfile *lf);
void lockfile_flush_unlock(struct lockfile *lf);
/* The writer lock belongs to the handle: any of its threads may unlock it. */
/* Takes a slot (*slot: its index; -1 with KEEL_NOLOCK, where nothing is published). */
int reader_acquire(struct lockfile *lf, int *slot);
void reader_publish(struct lockfile *lf, int slot, uint64_t txnid, int64_t now_ms);
/* The slot's published snapshot: a writer replaces it when the reader lags too far. */
const _Atomic uint64_t *reader_pin(struct lockfile *lf, int slot);
void reader_release(struct lockfile *lf, int slot);
/* Between read txns of one thread (txn.c's read cache): the slot publishes
 * nothing but stays taken; reader_resume says whether it is still this
 * handle's (a damaged lock file may say otherwise). */
void reader_idle(struct lockfile *lf, int slot);
bool reader_resume(struct lockfile *lf, int slot);
/* The oldest snapshot any live reader holds, or `newest` if none; frees the
 * slots of dead processes on the way, and with max_lag (0 = none) stops
 * keeping snapshots more than max_lag commits older than newest. */
uint64_t readers_oldest(struct lockfile *lf, uint64_t newest, uint64_t max_lag);
int readers_list(struct lockfile *lf, uint64_t newest, int64_t now_ms, keel_reader_info *out, size_t max,
                 size_t *count);

/* ---- bucket handles (bucket.c) ------------------------------------------- */
/* A handle is a slot number (the low BUCKET_INDEX_BITS) and the slot's
 * generation (the 8 bits above); handle 0 is the default bucket. */
#define BUCKET_INDEX_BITS 24
#define BUCKET_INDEX_MASK ((1u << BUCKET_INDEX_BITS) - 1)
#define BUCKET_GENERATIONS 256 /* handles one slot gives out before it is retired */
static inline uint32_t bucket_index(keel_bucket b) { return b & BUCKET_INDEX_MASK; }

struct bucket_slot;
struct name_index { /* open addressing on the name's hash; entries are slot numbers, 0 = empty */
    uint32_t *v;
    uint32_t cap, n;
};
struct bucket_table { /* the db's handles; all under db->mu */
    struct bucket_slot *slots; /* [0] unused: handle 0 is the default bucket */
    uint32_t n, cap;           /* slots used (free, live or retired), allocated */
    uint32_t free_head;        /* a free slot, the rest chained through them; 0 = none */
    struct name_index live, dead; /* the names of live and of dead slots */
    uint32_t *queue;           /* dead slots, in the order they died */
    uint32_t qhead, qlen, qcap;
    uint32_t retired;
};

/* ---- the relocation walk's place between commits (freelist.c) ----------- */
struct space_walk {
    uint32_t tree; /* which tree: freelist.c's walk order */
    uint32_t pos[KEEL_MAX_DEPTH]; /* bt_mover.pos in that tree */
    uint32_t namelen; /* named buckets: the one walked (0: before the first) */
    bool name_done;   /* ... and it is finished: the next one follows */
    char name[KEEL_MAX_BUCKET_NAME + 1];
    uint64_t moved;   /* pages moved in this pass */
    uint64_t skipped; /* pages of overflow runs this pass left above the target */
    bool skipped_before; /* the last pass moved nothing and left runs */
    bool reload;      /* a pass moved pages: freelist_record loads the whole free list */
    uint64_t idle_until; /* a pass moved nothing: no walk before this txn id */
    uint64_t reload_next; /* no full load asked for before this txn id */
};

/* ---- a write txn's free space (space.c, freelist.c) ----------------------
 * Owned by the space layer: pager.c and btree.c never read or steer it.
 * The re-entrancy rule of the btree <-> space loop is in space.c's
 * contract; editing_free_tree and recording are its two guards. */
struct space {
    /* Pages no snapshot can see: reusable now.  Descending, so that a
     * single page pops off the end as the lowest number; the one window
     * where it is not is `full_load` below. */
    struct pgvec reusable;
    /* Pages this txn stopped using that older snapshots may still read:
     * never reused by this txn, recorded under its id at commit. */
    struct pgvec freed_by_txn;
    /* Free-tail groups (txn id, count, pages) of the meta the txn began
     * from that are not reusable yet, pending in the meta; after
     * freelist_record, the whole free tail the commit writes. */
    struct pgvec meta_pending;
    bool recording;         /* freelist_record writes the free list: reusable only shrinks, nothing joins it */
    bool editing_free_tree; /* the space layer itself edits the free tree: allocation must not reclaim */
    bool nothing_reclaimable; /* no free-tree record this txn may reclaim is left */
    bool full_load;         /* inside freelist_record's full load: `reusable` is appended to, sorted at its end */
};

/* The space layer's state kept on the handle between write txns (freelist.c;
 * in memory only: a new handle starts from zero). */
struct space_handle {
    uint64_t full_load_free;    /* free pages when freelist_record last loaded them all */
    uint64_t full_load_backoff; /* commits until the next full load may run (doubles) */
    uint64_t full_load_next;    /* ... the txn id from which it may */
    struct space_walk walk;     /* where freelist_relocate's walk goes on */
};

/* ---- hash.c: XXH3 of long inputs (page sums) ---------------------------- */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HASH_HAVE_AVX2 1 /* hash_avx2.c compiles an AVX2 copy; hash.c picks it on a CPU with AVX2 */
#else
#define HASH_HAVE_AVX2 0
#endif
uint64_t hash_long(const void *p, size_t n); /* = XXH3_64bits(p, n) */
uint64_t hash_long_avx2(const void *p, size_t n);

/* ---- pagebuf.c: the writer's page buffers ----------------------------- */
struct pagebuf_chunk {
    uint8_t *base;
    size_t bytes;
};
struct pagebuf_pool {
    /* buffers given back, by length in pages, each holding the next's address */
    uint8_t *free[PAGEBUF_RUN_MAX_BYTES / KEEL_MIN_PAGE + 1];
    struct pagebuf_chunk *chunks; /* mapped, in the order they were */
    size_t nchunks, chunks_cap;
    size_t carve_chunk, carved; /* the chunk handing out its untouched buffers, and its bytes handed out */
    size_t mapped;              /* bytes in all chunks */
    size_t out;                 /* buffers taken and not given back */
};
uint8_t *pagebuf_take(struct pagebuf_pool *p, uint32_t psize, uint32_t npages); /* NULL: out of memory */
void pagebuf_give(struct pagebuf_pool *p, uint8_t *buf, uint32_t psize, uint32_t npages);
void pagebuf_trim(struct pagebuf_pool *p); /* at the end of a write txn */
void pagebuf_pool_free(struct pagebuf_pool *p);

/* ---- the database handle ------------------------------------------------ */
/* A finished read txn kept, with its reader slot, for the next read txn of
 * the same thread (txn.c): begin and end then touch no shared cache line.
 * One pointer per 64 bytes, so that two threads' entries never share a line. */
#define READ_CACHE_SLOTS 16 /* threads of a handle with an entry of their own */
struct read_cache_entry {
    _Atomic(keel_txn *) txn;
    uint8_t pad[64 - sizeof(void *)];
};

struct keel_db {
    char *path;
    int fd;
    unsigned flags;
    uint32_t psize;
    uint64_t map_size;
    uint8_t *map;
    uint64_t file_size; /* last known size; maintained by the writer */
    struct lockfile lock;
    uint64_t fork_gen;
    uint64_t open_id; /* this handle's number among all opens of the process: never reused */
    int64_t (*clock)(void *ctx);
    void *clock_ctx;
    volatile int panic; /* a sync failed: every txn gets KEEL_PANIC */

    bool summed;       /* format 2: pages carry trailers, references their sums (format.h) */
    bool verify;       /* KEEL_VERIFY on a summed file: txns check the sum of every page they read */
    uint32_t node_end; /* where a page's nodes end: psize, less the trailer when summed */
    _Atomic uint64_t *known; /* pages known to hold the bytes of their sum (pager.c), or NULL */
    size_t known_mask;       /* its slots - 1 (a power of two) */
    size_t max_key;    /* longest key */
    size_t max_pair_key; /* longest pair key of a DUPSORT tree (format.h) */
    size_t max_counted_pair_key; /* longest a put adds to a TREE_F_COUNTED tree (format.h) */
    size_t max_node;   /* biggest node: two always fit in a page */
    size_t inline_max; /* leaf nodes up to this size keep their value inline */

    keel_cursor *spare_cursor; /* one closed cursor kept for reuse, taken and put back atomically */
    struct read_cache_entry read_cache[READ_CACHE_SLOTS]; /* txn.c: a read txn object per thread, with its slot */
    uint64_t bucket_visits; /* bucket states write txns visited in flush and end (bucket.c; tests count them) */
    pthread_mutex_t mu; /* guards the fields below */
    struct bucket_table buckets; /* handle -> bucket name */
    keel_txn *spare_txns; /* finished txn objects kept for reuse */
    keel_txn *live_txns;  /* txns begun and not ended: keel_close ends them */
    keel_cursor *spare_cursors;
    keel_txn *wtxn; /* the write txn, if one is open on this handle */
    bool writer_gate; /* a thread of this handle has or is taking the writer lock */
    pthread_t writer_thread; /* ... the thread that began it */
    pthread_cond_t writer_cv; /* signalled when writer_gate opens */
    uint64_t max_reader_lag;  /* options.max_reader_lag */
    int32_t purge_per_commit; /* expired keys each write commit removes */
    size_t max_dirty;         /* dirty bytes a write txn holds before spilling */
    struct space_handle space; /* the space layer's memory between write txns (the writer only) */
    uint64_t unconfirmed; /* the last commit this handle flushed, if one-flush: keel_close confirms it */
    struct meta published; /* the meta this handle published last (txn id 0: none; group_base trusts it) */
    pthread_mutex_t flush_mu;        /* the handle's threads take turns for the flush lock */
    struct group_slot *flush_copy;   /* the flush leader's copy of a published commit */
    uint8_t *flush_page;             /* ... and of the meta page it writes */
    struct pagebuf_pool pagebufs; /* dirty pages' buffers (pagebuf.c; the writer only) */
};

/* ---- the expiry log (expiry.c) ------------------------------------------- */
struct xent;
struct expiry_log { /* a write txn's expiry-tree changes, applied sorted (expiry_flush) */
    struct xent *v;
    size_t n, cap;
    uint8_t *keys; /* the user keys, back to back */
    size_t used, keycap;
};

/* ---- transactions ------------------------------------------------------- */
#define TXN_MAGIC 0x4B54584Eu  /* live */
#define TXN_PARENT 0x4B54584Fu /* live, with a live child (keel_begin_nested): use gives KEEL_BADTXN */
#define TXN_DEAD 0xDEADD00Du   /* finished: use gives KEEL_BADTXN */
#define TXN_NEST_MAX 255       /* levels of children below a write txn (struct dirty.level is 8 bits) */

enum { BUCKET_ABSENT = 1, BUCKET_PRESENT };
#define STATE_CHUNKS_MAX 24 /* bucket.c: chunk k holds 8 << k states, so 2^27 in all */
struct bucket_state {
    keel_bucket handle;
    uint8_t state;
    bool dirty;        /* desc changed: write back to the catalog at commit */
    bool base_present; /* the bucket existed when the txn first looked */
    uint8_t level;     /* the nesting level that made it or last saved it (bucket.c, "nested txns") */
    struct tree_desc desc;
};
struct txn_buckets { /* the buckets a txn touched (bucket.c) */
    struct bucket_state *chunk[STATE_CHUNKS_MAX]; /* in the order of first use; they never move */
    uint32_t nchunks;
    uint32_t n, cap;
    uint32_t *index; /* open addressing on the handle: position in v + 1, 0 = empty */
    uint32_t index_cap;
    uint32_t last; /* position of the last state found */
};

/* A child's undo record (keel_begin_nested): how to give the parent back
 * its working state as it was when the child began.  txn.c drives it; each
 * layer keeps its own part, in the child's txn object (design.md, "Nested
 * transactions").  The arrays stay with the object for its next use. */
struct page_save;  /* pager.c */
struct state_save; /* bucket.c */
struct nest_undo {
    struct page_save *pages; /* pager.c: pages the child made, and those of lower levels as they were */
    size_t npages, pages_cap;
    struct state_save *states; /* bucket.c: bucket states of lower levels as they were */
    uint32_t nstates, states_cap;
    uint32_t states_begin;     /* ... the txn's states when the child began: later ones are the child's */
    struct pgvec reusable;     /* space.c: the reusable list as it was, saved when the child first changes it */
    bool reusable_saved;
    size_t freed_begin;        /* ... freed_by_txn's length (a child only appends to it) */
    struct expiry_log xlog;    /* expiry.c: the log as it was, saved when the child first applies it */
    bool xlog_saved;
    size_t xlog_n, xlog_used;  /* ... its length (a child appends to it) */
};

struct dupcount_entry;
struct dupcount_table {
    struct dupcount_entry *slots; /* cap of them, aligned in raw */
    void *raw;
    size_t cap, n;
};

struct keel_txn {
    uint32_t magic;
    keel_db *db;
    keel_txn *next_spare;
    keel_txn *live_prev, *live_next; /* in db->live_txns (from txn_get on) */
    _Atomic uint64_t live_snapshot; /* its snapshot for bucket_reclaim's scan of that list; 0 while begun */
    bool rdonly;
    bool verify;    /* checks every page it reaches against its sum: KEEL_VERIFY, and keel_copy's reads */
    int error;      /* sticky: a write op failed half way; only abort is allowed */
    int slot;       /* reader slot, -1 for none */
    const _Atomic uint64_t *pin; /* read txns: the slot's published id (a writer may replace it: KEEL_LAGGED) */
    uint64_t pin_id;             /* ... what this txn published */
    uint64_t fork_gen;
    int64_t now;    /* clock read once at begin */
    uint64_t txnid; /* snapshot id (read) or id being written (write) */
    struct meta meta; /* working copy (write) or the snapshot's meta (read) */
    uint64_t snap_npages; /* write txns: npages of the meta it began from */
    uint64_t changes; /* counts changes to trees and page buffers: cursors re-seek when it moves */
    struct txn_buckets bk;
    keel_cursor *cursors; /* open cursors, detached when the txn ends */

    /* write txns only */
    struct dirty_table dirty; /* buf NULL: spilled, the page is in the file */
    size_t dirty_bytes;       /* bytes of dirty buffers held in memory */
    struct space space; /* free space: what is reusable, freed, pending (space.c, freelist.c) */
    uint64_t oldest;    /* oldest snapshot any reader may hold */
    uint8_t *scratch;  /* btree.c's buffer for rebuilding pages (two pages long) */
    int scratch_depth; /* btree.c: takes of it not given back yet */
    struct expiry_log xlog; /* expiry-tree changes not applied yet (expiry.c) */
    struct dupcount_table dupcounts; /* pair counts not written yet (dupcount.c); a child has its own */

    /* nested write txns (txn.c): a child works in its parent's state
     * (dirty, space, bk, xlog, a copy of meta) and undoes it through undo */
    keel_txn *parent, *child; /* child: the parent is a shell (TXN_PARENT) while it lives */
    uint8_t nest;             /* 0 for a txn of keel_begin, parent->nest + 1 for a child */
    struct nest_undo undo;    /* a child's: what it changed of its parent's state */
};

struct keel_cursor {
    uint32_t magic;
    keel_txn *txn;
    keel_cursor *next; /* in txn->cursors, or in the spare list */
    keel_cursor *prev;
    keel_bucket bucket;
    struct tree_desc *tree; /* never moves while the txn lives; NULL once its bucket was dropped */
    int state;              /* CUR_UNSET, CUR_ON, CUR_AFTER_DEL, CUR_EOF */
    bool all;               /* internal: also visit expired entries */
    bool dup;               /* the tree is a DUPSORT one: node keys are pair keys (format.h) */
    uint64_t valid_at;      /* txn->changes when the path was last valid */
    int depth;
    uint64_t pgno[KEEL_MAX_DEPTH];
    const uint8_t *page[KEEL_MAX_DEPTH];
    unsigned idx[KEEL_MAX_DEPTH];
    uint8_t *keybuf; /* write txns: a copy of the current key, to re-seek after changes */
    size_t keylen, keycap;
    uint8_t *dupkey; /* DUPSORT: the current key unescaped, when it holds a zero byte (max_key bytes) */
    /* DUPSORT, read txns: the pair key at (dup_page, dup_idx) and its
     * escaped key's length, so that a run of next_dup finds the key part
     * once (the position is checked against it, never trusted) */
    const uint8_t *dup_page, *dup_key;
    unsigned dup_idx;
    uint32_t dup_part;
    bool dup_plain; /* the key part holds no zero byte: handed out as it is */
};
#define CURSOR_MAGIC 0x4B435552u
#define CURSOR_DEAD 0xDEADC0DEu
enum { CUR_UNSET = 0, CUR_ON, CUR_AFTER_DEL, CUR_EOF };

/* ---- meta.c: the meta pages: check, seal, select, verify ----------------- */
int meta_check(const uint8_t *buf, size_t len, uint32_t expect_psize, struct meta *out);
int meta_check_head(const uint8_t *buf, size_t len, uint32_t expect_psize, struct meta *out, bool with_tail);
void meta_seal(struct meta *m);
/* The meta's bytes in the file (its version's layout: META_SIZE or
 * META_V1_SIZE, returned), and back; meta_decode trusts the version field. */
size_t meta_encode(const struct meta *m, uint8_t *out);
void meta_decode(const uint8_t *buf, struct meta *m);
bool meta_matches(const uint8_t *page, const struct meta *m); /* the page begins with m's bytes */
size_t meta_page_settled(uint32_t psize, const struct meta *m, const uint8_t *tail, uint8_t *out); /* see meta.c */
bool meta_newer(const struct meta *a, const struct meta *b);
bool meta_is_bad(const struct meta *m, uint64_t bad); /* named by the lock file's bad_meta */
/* The one selector: of metas m0 (slot 0) and m1 (slot 1), which meta_check
 * answered r0 and r1, the newest usable one (*slot); one named by bad
 * (meta_is_bad) is unusable.  Neither usable: KEEL_CORRUPTED. */
int meta_select(int r0, const struct meta *m0, int r1, const struct meta *m1, uint64_t bad, unsigned *slot);
int meta_newest(keel_db *db, struct meta *out, unsigned *slot); /* from the map; slot may be NULL */
int meta_newest_visible(keel_db *db, struct meta *out, unsigned *slot); /* ... no newer than the visible commit */
int meta_newest_upto(keel_db *db, uint64_t limit, struct meta *out, unsigned *slot); /* ... txnid <= limit */
bool meta_maybe_newer(const keel_db *db, uint64_t txnid); /* false: no commit newer than txnid visible */
/* From the file with pread (the open, before the map): also KEEL_VERSION
 * (a newer library's meta in either slot) and KEEL_INVALID (no keel meta). */
int meta_newest_file(keel_db *db, struct meta *out, unsigned *slot);
int meta_newest_fd(int fd, uint64_t bad, struct meta *out, unsigned *slot); /* ... of any file: bad as meta_select */
int meta_snapshot_tail(keel_txn *txn, uint8_t **tail); /* see meta.c */
int meta_verify_commit(int fd, uint64_t fsize, const struct meta *m, unsigned slot); /* a one-flush commit whole? */

/* ---- group.c: group commit, visibility, the fallback commit ------------- */
/* The sole opener: from the newest meta, durable (synced) or not; fsize: the file's size */
void group_init(keel_db *db, const struct meta *newest, bool durable, uint64_t fsize);
int group_base(keel_db *db, struct meta *out, const uint8_t **page); /* a writer's base: meta and its page */
uint64_t group_keep(const keel_db *db); /* writers reuse no page freed after this commit */
/* The file size writers share, under the writer lock: no fstat per write txn (0: ask the file) */
uint64_t group_file_size(const keel_db *db);
void group_set_file_size(keel_db *db, uint64_t size);
uint64_t group_shrink_floor(const keel_db *db, uint64_t base); /* pages the file keeps for a crash; 0: no shrink */
/* Under the writer lock: the commit's meta page (mlen bytes), wanting GROUP_SYNC_* */
void group_publish(keel_db *db, const uint8_t *page, size_t mlen, uint32_t needs);
int group_flush_now(keel_db *db, uint64_t txnid); /* under the writer lock: a commit that wants no sync */
int group_wait(keel_db *db, uint64_t txnid);      /* after the writer lock: until txnid is durable, visible */
void group_confirm(keel_db *db); /* at close: see group.c */
void group_free(keel_db *db);

/* ---- pager.c: pages, dirty buffers, spill, file size, write-out ---------- */
int page_get(keel_txn *txn, uint64_t pgno, const uint8_t **out);
/* txn->verify: the page (run of npages) from the map matches the sum its
 * reference holds (see pager.c); KEEL_CORRUPTED names it if not. */
int page_verify(keel_txn *txn, const uint8_t *page, uint64_t pgno, uint32_t npages, uint64_t sum);
/* page_get of a page reached through a reference holding `sum`: checked
 * against it under KEEL_VERIFY.  Without it, a test of one flag. */
static inline int page_get_summed(keel_txn *txn, uint64_t pgno, uint64_t sum, const uint8_t **out)
{
    int rc = page_get(txn, pgno, out);
    if (rc || __builtin_expect(!txn->verify, 1))
        return rc;
    return page_verify(txn, *out, pgno, 1, sum);
}
uint64_t page_map_limit(const keel_txn *txn); /* pages below it are backed by the file */
/* A page page_get gave out lies in the map, or is a dirty buffer of this
 * write txn (built by keel from checked pages: btree.c trusts its nodes). */
static inline bool page_in_map(const keel_db *db, const uint8_t *p)
{
    return (uintptr_t)p - (uintptr_t)db->map < db->map_size;
}
uint8_t *page_dirty(keel_txn *txn, uint64_t pgno);
int pager_write_out(keel_txn *txn); /* dirty pages, syncs, meta */
/* The (page, sum) pairs a handle knows whole (pager.c): made at open with
 * KEEL_VERIFY, else at the first write txn of a summed file. */
int pager_known_init(keel_db *db);
bool page_known_whole(const keel_db *db, uint64_t pgno, uint64_t sum); /* sealed by this handle */
/* A page's (or run's, len bytes) sum: XXH3-64 of all but its last 8 bytes, never 0 */
uint64_t page_sum(const uint8_t *p, size_t len);
/* Seals a buffer this txn wrote (npages pages): the txn id and sum into its
 * trailer; returns the sum, for the reference to it. */
uint64_t pager_seal(keel_txn *txn, uint8_t *buf, uint32_t npages);
/* Spill: over db->max_dirty bytes of dirty pages, pager_spill writes them
 * out early (no sync, no meta: nothing points at them yet) and frees their
 * buffers; in a summed file only the pages seal_spill sealed (a nonzero
 * sum in the dirty table). */
bool pager_spill_due(const keel_txn *txn);
int pager_spill(keel_txn *txn);
int pager_each_dirty(keel_txn *txn, int (*fn)(keel_txn *txn, struct dirty *d, void *ctx), void *ctx);
void pager_txn_release(keel_txn *txn); /* drops dirty pages and lists */
void pager_txn_free(keel_txn *txn);    /* frees what release kept (the txn object goes) */
int pager_grow(keel_db *db, uint64_t need_bytes);
void pager_maybe_shrink(keel_db *db, uint64_t used_bytes);

/* ---- space.c: allocation (what btree.c calls) ---------------------------- */
int page_alloc(keel_txn *txn, uint32_t npages, uint64_t *pgno, uint8_t **buf);
/* For the relocation (freelist_relocate): do the reusable pages hold n below
 * `below`; a run from them alone that ends at or below it (KEEL_NOTFOUND). */
bool page_pool_below(const keel_txn *txn, size_t n, uint64_t below);
int page_alloc_below(keel_txn *txn, uint32_t npages, uint64_t below, uint64_t *pgno, uint8_t **buf);
int page_touch(keel_txn *txn, uint64_t pgno, uint64_t *newpgno, uint8_t **buf);
int page_free(keel_txn *txn, uint64_t pgno, uint32_t npages);

/* ---- pager.c: the allocator's tools (space.c decides which page) ---- */
bool pager_is_dirty(keel_txn *txn, uint64_t pgno); /* in memory or spilled */
/* For the seal: the txn's buffer for pgno, or NULL and the sum a spilled
 * page was sealed with (*sum); KEEL_NOTFOUND when the txn wrote no page there. */
int pager_dirty_state(keel_txn *txn, uint64_t pgno, uint8_t **buf, uint64_t *sum);
int pager_extend(keel_txn *txn, uint32_t n, uint64_t *pgno); /* n pages at the end of the file; KEEL_FULL */
/* reused: from the free list, so checked against the dirty table (a damaged
 * free tree can list a page twice) */
int pager_new_page(keel_txn *txn, uint64_t pgno, uint32_t npages, bool zero, bool reused, uint8_t **buf);
/* *dropped false if the txn holds no page there; KEEL_NOMEM only in a nested txn (the page's save) */
int pager_drop_dirty(keel_txn *txn, uint64_t pgno, bool *dropped);
int pager_own_buf(keel_txn *txn, uint64_t pgno, uint8_t **buf); /* *buf NULL if not the txn's */
/* Nested txns (pager.c, "nested txns"): a child takes over its parent's
 * dirty table and gives it back, its pages relabelled as the parent's
 * (commit) or undone (abort).  reserve: room in the parent's journal for
 * what a commit hands it, so that the end itself cannot fail. */
void pager_nest_begin(keel_txn *child, keel_txn *parent);
int pager_nest_reserve(keel_txn *parent, const keel_txn *child);
void pager_nest_end(keel_txn *parent, keel_txn *child, bool commit);

/* ---- space.c: the allocator and the txn's free-space state --------------- */
void space_txn_begin(struct space *s);
void space_txn_release(struct space *s);
/* on: the space layer itself starts editing the free tree (allocation must
 * not reclaim meanwhile); asserts the re-entrancy rule (space.c) */
void space_edit_free_tree(struct space *s, bool on);
void space_merge_reusable(struct space *s, size_t start); /* a record appended at start: into order */
int space_sort_reusable(struct space *s); /* the whole list, ending the full-load window */
bool space_reusable_in_order(const struct space *s); /* O(n): for tests */
/* Nested txns: the child takes over the free-space state and gives it back */
void space_nest_begin(keel_txn *child, keel_txn *parent);
void space_nest_end(keel_txn *parent, keel_txn *child, bool commit);

/* ---- freelist.c: the free tree ------------------------------------------ */
int freelist_reclaim(keel_txn *txn);  /* one reclaimable record into space.reusable; KEEL_NOTFOUND if none */
int freelist_record(keel_txn *txn);   /* at commit: writes the reusable leftovers and freed_by_txn */
/* At commit, before the last bucket_flush: while over a third of the file
 * is free, copies a bounded number of live pages from its upper part to
 * lower free pages, so that its tail empties and can be cut off (see
 * freelist.c). */
int freelist_relocate(keel_txn *txn); /* relocate.c */
/* The page live pages should lie below while much of the file is free, or 0. */
uint64_t freelist_compact_target(const keel_txn *txn);
uint64_t free_key_txnid(const uint8_t *k); /* the txn id of a free-tree key (FREE_KEY_SIZE bytes) */
/* At write-txn begin: the free tail of the meta page the txn began from. */
int freelist_load_tail(keel_txn *txn, const uint8_t *meta_page);
int freelist_tail_groups(const uint8_t *words, size_t nwords, uint64_t npages, uint64_t txnid_max,
                         int (*fn)(void *ctx, uint64_t txnid, const uint8_t *pages, size_t n), void *ctx);

/* ---- btree.c ------------------------------------------------------------ */
struct bt_path {
    int depth;
    uint64_t pgno[KEEL_MAX_DEPTH];
    uint8_t *page[KEEL_MAX_DEPTH]; /* read-only unless the path was touched */
    unsigned idx[KEEL_MAX_DEPTH];
};
int bt_search(keel_txn *txn, const struct tree_desc *t, const uint8_t *key, size_t klen,
              struct bt_path *path, bool *exact);
int bt_leaf_value(keel_txn *txn, const uint8_t *node, keel_val *val);
uint32_t bt_overflow_pages(const keel_txn *txn, uint64_t vsize); /* the run a value of vsize bytes takes */
int bt_get(keel_txn *txn, const struct tree_desc *t, keel_val key, keel_val *val, int64_t *expiry);
/* Expiry times are ms since the epoch, 0 = none.  bt_put: an existing key
 * whose expiry is <= txn->now counts as absent for KEEL_NOOVERWRITE and
 * KEEL_KEEPTTL; *old_expiry gets the replaced entry's expiry (0 if none). */
int bt_put(keel_txn *txn, struct tree_desc *t, keel_val key, keel_val val, int64_t expiry, unsigned flags,
           int64_t *old_expiry);
/* bt_put of a key that is not there, at the path bt_search gave for it
 * (depth 0: the tree was empty), the tree unchanged since: one search
 * less for a caller that had to search anyway (dup_put).  flags: KEEL_APPEND. */
int bt_insert_at(keel_txn *txn, struct tree_desc *t, struct bt_path *path, keel_val key, keel_val val,
                 int64_t expiry, unsigned flags);
int bt_del(keel_txn *txn, struct tree_desc *t, keel_val key, int64_t *old_expiry);
/* bt_del, but an expired entry (expiry <= txn->now) is KEEL_NOTFOUND and stays */
int bt_del_live(keel_txn *txn, struct tree_desc *t, keel_val key, int64_t *old_expiry);
int bt_set_expiry(keel_txn *txn, struct tree_desc *t, keel_val key, int64_t expiry, int64_t *old_expiry);
/* bt_del (live_only: bt_del_live) that also tells the pair count the node
 * carried (TREE_F_COUNTED: its PAIR_COUNT_SIZE-byte value), else 0 */
int bt_del_pair(keel_txn *txn, struct tree_desc *t, keel_val key, bool live_only, int64_t *old_expiry,
                uint64_t *count);
/* Overwrites the inline value of the leaf node at path with len bytes, at
 * most as many as it has (KEEL_CORRUPTED if not): copy-on-write of the
 * path, no search, no split.  The page may end up a little emptier than
 * the fill policy asks: for a caller that inserts next into it. */
int bt_update_value(keel_txn *txn, struct tree_desc *t, struct bt_path *path, const void *val, size_t len);
int bt_drop(keel_txn *txn, struct tree_desc *t); /* frees every page of the tree */
int bt_check_page(keel_txn *txn, const uint8_t *page, uint64_t pgno, unsigned want_flags);
int bt_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen);
int bt_walk(keel_txn *txn, const struct tree_desc *t,
            int (*fn)(void *ctx, uint64_t pgno, uint32_t npages, unsigned kind, int level), void *ctx);
/* bt_put(txn, t, key, val, 0, 0, NULL) for a run of new keys in increasing
 * order: f remembers the leaf the last one went into, and while nothing
 * else has changed the txn (txn->changes) a key inside that leaf's bounds goes
 * straight in, without a search from the root.  Set f->valid_at = 0 first. */
struct bt_finger {
    struct bt_path path; /* touched: every page is a dirty buffer */
    uint64_t valid_at;   /* txn->changes when path and bounds were valid; 0 = never */
    const uint8_t *lo, *hi; /* the leaf's bounds (separators); NULL = unbounded */
    size_t lolen, hilen;
};
int bt_put_next(keel_txn *txn, struct tree_desc *t, keel_val key, keel_val val, struct bt_finger *f);
/* Copies the pages of t at or above m->hi (tree pages and overflow runs) to
 * lower numbers, through copy-on-write, within the budgets in m.  It visits
 * the leaves' parents in key order from m->pos, which survives between
 * txns; *done when it passed the last one. */
struct bt_mover {
    uint32_t pos[KEEL_MAX_DEPTH]; /* child indexes from the root to the page visited, then its next child */
    uint64_t hi;                  /* pages at or above it move */
    uint32_t reads, copies;       /* budgets left: tree pages read, pages copied */
    uint32_t copies_max;          /* the copy budget it began with */
    uint64_t moved;               /* out: pages moved below hi */
    uint64_t skipped;             /* out: pages above hi left where they are (no run free below hi) */
    bool stalled;                 /* out: the pool ran out of pages below hi */
};
int bt_move_high(keel_txn *txn, struct tree_desc *t, struct bt_mover *m, bool *done);
/* Fill policy (btree.c): tuning.h names the fractions. */
static inline bool page_needs_merge(size_t used, size_t usable) { return used < usable / FILL_MERGE_BELOW_DIV; }
static inline bool page_starved(size_t used, size_t usable) { return used < usable / FILL_STARVED_BELOW_DIV; }
static inline bool pages_fit_merged(size_t total, size_t usable)
{
    return total <= usable * FILL_MERGED_MAX_NUM / FILL_MERGED_MAX_DEN;
}
/* need: the new node's bytes with its slot */
static inline bool sibling_can_share(size_t room, size_t need, size_t usable)
{
    return room >= usable / FILL_SHARE_MARGIN_DIV + need;
}
static inline bool clean_sibling_worth_share(size_t room, size_t need, size_t usable)
{
    return room >= usable / FILL_CLEAN_SHARE_MARGIN_DIV + need;
}

/* ---- cursor.c ----------------------------------------------------------- */
int cursor_init(keel_cursor *c, keel_txn *txn, keel_bucket b, struct tree_desc *t);
int cursor_first(keel_cursor *c, keel_val *key, keel_val *val);
int cursor_last(keel_cursor *c, keel_val *key, keel_val *val);
int cursor_next(keel_cursor *c, keel_val *key, keel_val *val);
int cursor_prev(keel_cursor *c, keel_val *key, keel_val *val);
int cursor_seek(keel_cursor *c, keel_val key, keel_val *kout, keel_val *vout);
int cursor_current(keel_cursor *c, keel_val *key, keel_val *val);
int cursor_expiry(keel_cursor *c, int64_t *unix_ms); /* the current entry's, 0 = none */
/* the deleted key stays in c->keybuf; *count: what it carried (bt_del_pair) */
int cursor_del(keel_cursor *c, struct tree_desc *t, int64_t *old_expiry, uint64_t *count);
void cursor_release(keel_cursor *c); /* frees what an internal (stack) cursor allocated */
/* DUPSORT: a pair-key bound, esc(key) + tail + val (format.h), in buf or a
 * malloc'd block that pair_bound_free releases */
struct pair_bound {
    uint8_t *k;
    size_t len;    /* the whole bound */
    size_t keylen; /* its escaped key and tail: the prefix every pair of the key has (tail PAIR_KEY_END) */
    uint8_t buf[512];
};
int pair_bound(struct pair_bound *pb, keel_val key, const uint8_t tail[2], keel_val val);
void pair_bound_free(struct pair_bound *pb);
int cursor_find_pair(keel_txn *txn, const struct tree_desc *t, const struct pair_bound *pb, const uint8_t **key,
                     size_t *klen, int64_t *expiry);
/* What cursor_find_pair_near found where a pair goes. */
struct pair_place {
    bool present;        /* the key has a pair (expired or not) */
    bool exact;          /* ... and it is this one */
    bool first;          /* COUNTED, present, not exact: no pair of the key comes before this one */
    int64_t expiry;      /* present: the key's expiry */
    uint64_t next_count; /* first: the count the key's first pair (the next entry) carries, */
    const uint8_t *next_key; /* ... and its pair key, in a page the next change may move */
    size_t next_klen;
};
int cursor_find_pair_near(keel_txn *txn, const struct tree_desc *t, const struct pair_bound *pb,
                          struct bt_path *path, struct pair_place *pp);
/* COUNTED: the path to the key's first pair (pfx: the escaped key and
 * PAIR_KEY_END) and the count it carries; KEEL_CORRUPTED if there is none */
int cursor_find_carrier(keel_txn *txn, const struct tree_desc *t, const uint8_t *pfx, size_t plen,
                        struct bt_path *path, uint64_t *count);
/* DUPSORT moves (plain trees: a key has one value) */
int cursor_seek_key(keel_cursor *c, keel_val key, keel_val *vout);
int cursor_seek_pair(keel_cursor *c, keel_val key, keel_val val, keel_val *kout, keel_val *vout);
int cursor_move_dup(keel_cursor *c, keel_val *key, keel_val *val, int dir);
int cursor_move_key(keel_cursor *c, keel_val *key, keel_val *val, int dir);
int cursor_count(keel_cursor *c, uint64_t *count);

/* ---- bucket.c ----------------------------------------------------------- */
int bucket_tree(keel_txn *txn, keel_bucket b, struct tree_desc **out); /* KEEL_BADBUCKET */
int bucket_open(keel_txn *txn, const char *name, unsigned flags, keel_bucket *out);
int bucket_drop(keel_txn *txn, keel_bucket b);
int bucket_flags(keel_txn *txn, keel_bucket b, unsigned *flags); /* KEEL_DUPSORT or 0 */
int bucket_list(keel_txn *txn, int (*fn)(const char *name, void *ctx), void *ctx);
int bucket_flush(keel_txn *txn); /* writes changed descriptors to the catalog */
void bucket_mark_dirty(keel_txn *txn, keel_bucket b);
/* Each named bucket's name and descriptor (NULL if unreadable), in name
 * order; makes no handles. */
int bucket_with_tree(keel_txn *txn, const char *name, int (*fn)(keel_txn *txn, struct tree_desc *t, void *ctx),
                     void *ctx); /* see bucket.c */
int bucket_walk(keel_txn *txn, int (*fn)(const char *name, const struct tree_desc *d, void *ctx), void *ctx);
int bucket_by_id(keel_txn *txn, uint32_t id, keel_bucket *out); /* KEEL_CORRUPTED if none */
/* At the end of a txn: the handles of a write txn's buckets that are absent
 * at its end die (before the writer lock goes); the states go. */
void bucket_txn_end(keel_txn *txn, bool committed);
/* At the end of a txn, under db->mu, after it left the live list and its
 * reader slot: may handles have died that this txn held back?  Then
 * bucket_reclaim (not under db->mu) frees the ones no txn can use any more,
 * up to those that died at `newest`. */
bool bucket_reclaim_due(const keel_txn *txn, uint64_t *newest);
void bucket_reclaim(keel_db *db, uint64_t newest);
void bucket_txn_free(keel_txn *txn);
void bucket_table_free(keel_db *db);
struct bucket_counts { /* for tests */
    uint64_t slots, live, dead, retired;
};
void bucket_table_counts(keel_db *db, struct bucket_counts *out);
uint32_t txn_bucket_states(const keel_txn *txn);
/* Nested txns: the child takes over the bucket states and gives them back
 * (an abort kills the handles it made for names its parent lacks) */
void bucket_nest_begin(keel_txn *child, keel_txn *parent);
int bucket_nest_reserve(keel_txn *parent, const keel_txn *child);
void bucket_nest_end(keel_txn *parent, keel_txn *child, bool commit);

/* ---- expiry.c: the expiry index ------------------------------------------ */
/* A txn reads the clock once, at begin (txn->now): an entry whose expiry is
 * at or before it is absent for every read, cursor and conditional write. */
static inline bool expiry_live(const keel_txn *txn, int64_t expiry) { return expiry == 0 || expiry > txn->now; }
/* Moves the index entry of (bucket id, key) from old_exp to new_exp (0 = none). */
int expiry_update(keel_txn *txn, uint32_t id, keel_val key, int64_t old_exp, int64_t new_exp);
int expiry_forget_tree(keel_txn *txn, struct tree_desc *t); /* a bucket about to be dropped */
int expiry_check(keel_txn *txn, void (*problem)(void *ctx, const char *fmt, ...), void *ctx, uint64_t *entries);
/* Applies the expiry log to the expiry tree; every reader of that tree in a
 * write txn calls it first, and so does commit.  expiry_log_free drops the
 * log (the txn ends). */
int expiry_flush(keel_txn *txn);
void expiry_log_free(keel_txn *txn);
/* Nested txns: the child takes over the log and gives it back */
void expiry_nest_begin(keel_txn *child, keel_txn *parent);
void expiry_nest_end(keel_txn *parent, keel_txn *child, bool commit);
/* The entries whose time has come, oldest first (kv_purge):
 * begin; while next_due gives one (KEEL_NOTFOUND: none left), remove it
 * from its bucket, then remove_due; end. */
struct expiry_due {
    keel_txn *txn;
    keel_cursor cursor;
    uint8_t *buf; /* the index key of the current entry */
    size_t len, cap;
    uint32_t bucket_id; /* out: the current entry's bucket, */
    keel_val key;       /* its key (in buf), */
    int64_t expiry;     /* and its expiry */
};
int expiry_due_begin(keel_txn *txn, struct expiry_due *d);
int expiry_next_due(struct expiry_due *d);
int expiry_remove_due(struct expiry_due *d);
void expiry_due_end(struct expiry_due *d);

/* ---- dupcount.c: pair counts a write txn owes (see there) --------------- */
int dupcount_add(keel_txn *txn, uint32_t tree_id, const uint8_t *k, size_t len, int64_t delta);
/* The slot of (tree_id, k) asked for early (its line is likely far in
 * memory), and the hash for dupcount_add_hashed with the same key later. */
uint64_t dupcount_prefetch(keel_txn *txn, uint32_t tree_id, const uint8_t *k, size_t len);
int dupcount_add_hashed(keel_txn *txn, uint64_t hash, uint32_t tree_id, const uint8_t *k, size_t len, int64_t delta);
int64_t dupcount_pending(const keel_txn *txn, uint32_t tree_id, const uint8_t *k, size_t len);
int dupcount_settle(keel_txn *txn, uint32_t tree_id, const uint8_t *k, size_t len);
int dupcount_forget_tree(keel_txn *txn, uint32_t tree_id);
int dupcount_each(keel_txn *txn, int (*fn)(keel_txn *txn, uint32_t tree_id, const uint8_t *k, size_t len,
                                           int64_t delta, void *ctx),
                  void *ctx);
void dupcount_clear(keel_txn *txn);
void dupcount_free(keel_txn *txn);
int dupcount_nest_reserve(keel_txn *parent, const keel_txn *child);
void dupcount_nest_end(keel_txn *parent, keel_txn *child, bool commit);

/* ---- dup.c: a DUPSORT tree's operations, for kv.c (see there) ------------ */
bool dup_pair_fits(keel_txn *txn, const struct tree_desc *t, keel_val key, keel_val val);
int dup_pair_gone(keel_txn *txn, struct tree_desc *t, const uint8_t *pfx, size_t plen, uint64_t carried,
                  const uint64_t *owed_hash);
int dup_counts_flush(keel_txn *txn); /* at the top-level commit: dupcount.c's sums into the trees */
int dup_get(keel_txn *txn, const struct tree_desc *t, keel_val key, keel_val *val, int64_t *expiry);
int dup_put(keel_txn *txn, struct tree_desc *t, keel_val key, keel_val val, int64_t expiry, unsigned flags,
            int64_t *old_exp, int64_t *new_exp);
int dup_del_key(keel_txn *txn, struct tree_desc *t, keel_val key, bool live, int64_t *old_exp);
int dup_del_pair(keel_txn *txn, struct tree_desc *t, keel_val key, keel_val val, int64_t *old_exp, int64_t *new_exp);
int dup_after_del(keel_txn *txn, const struct tree_desc *t, keel_val key, int64_t old_exp, int64_t *new_exp);
int dup_set_expiry(keel_txn *txn, struct tree_desc *t, keel_val key, int64_t expiry);

/* ---- kv.c: the write path (see there) ------------------------------------ */
int kv_get(keel_txn *txn, keel_bucket b, keel_val key, keel_val *val, int64_t *expiry);
int kv_put(keel_txn *txn, keel_bucket b, keel_val key, keel_val val, int64_t expiry, unsigned flags);
int kv_del(keel_txn *txn, keel_bucket b, keel_val key);
int kv_set_expiry(keel_txn *txn, keel_bucket b, keel_val key, int64_t expiry); /* 0 = persist */
int kv_del_value(keel_txn *txn, keel_bucket b, keel_val key, keel_val val);
int kv_cursor_del(keel_cursor *c);
int kv_drop_bucket(keel_txn *txn, keel_bucket b);
int kv_purge(keel_txn *txn, size_t max, size_t *purged);
int poison(keel_txn *txn, int rc); /* a failed write op leaves its txn able only to abort */

/* ---- seal.c: the sums of what a txn wrote (see there) ------------------- */
int seal_commit(keel_txn *txn);
int seal_spill(keel_txn *txn); /* a spill, when due: pages sealed bottom-up, then pager_spill */

/* ---- txn.c -------------------------------------------------------------- */
int txn_begin(keel_db *db, unsigned flags, keel_txn **out);
int64_t txn_clock_ms(keel_db *db); /* the db's clock (options.clock), ms since the epoch */
int txn_commit(keel_txn *txn);
void txn_abort(keel_txn *txn);
/* A read txn and its snapshot's free tail (meta_snapshot_tail), begun again
 * while commits overwrite its meta page; the caller frees *tail. */
int txn_begin_with_tail(keel_db *db, keel_txn **out, uint8_t **tail);
/* A child of a write txn (keel_begin_nested; the caller checked parent) */
int txn_begin_nested(keel_txn *parent, keel_txn **out);
/* KEEL_BADTXN, with keel_error_detail() saying the txn has a live child (error.c) */
int error_live_child(void) __attribute__((cold));
/* Is the txn usable?  Inline: every API call and every cursor step asks. */
static inline int txn_check(const keel_txn *txn, bool write)
{
    if (!txn)
        return KEEL_BADARG;
    if (txn->magic != TXN_MAGIC)
        return txn->magic == TXN_PARENT ? error_live_child() : KEEL_BADTXN;
    if (txn->db->panic)
        return KEEL_PANIC;
    if (txn->fork_gen != os_fork_generation())
        return KEEL_FORKED;
    if (txn->error)
        return KEEL_BADTXN;
    if (txn->pin && atomic_load_explicit(txn->pin, memory_order_relaxed) != txn->pin_id)
        return KEEL_LAGGED;
    if (write && txn->rdonly)
        return KEEL_READONLY;
    return 0;
}
void txn_free_spares(keel_db *db);
void txn_drain_read_cache(keel_db *db); /* keel_close: the kept read txns back to the spares */

/* ---- error.c: what keel_error_detail() tells ---- */
void error_detail_clear(void);
void error_detail_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* For reports (check, salvage): "keys from A up to (not including) B", lo
 * inclusive and hi exclusive (NULL: unbounded), keys printable or in hex. */
void range_text(char *out, size_t size, const uint8_t *lo, size_t lolen, const uint8_t *hi, size_t hilen);
/* Damage met: CORRUPT(pgno) records where (this source file and line, and
 * the page, 0 when the caller knows none) in keel_error_detail() and is
 * KEEL_CORRUPTED.  For what the file says, never for keel's own bugs
 * (KEEL_ASSERT).  The recording is a call to a cold function on the error
 * path only: a check that passes costs what `return KEEL_CORRUPTED` did. */
void corrupt_at(const char *file, int line, uint64_t pgno) __attribute__((cold));
/* the constant after the comma: the compiler sees the result is not 0 */
#define CORRUPT(pgno) (corrupt_at(__FILE__, __LINE__, (pgno)), KEEL_CORRUPTED)
/* format.h's page_node, with the damage recorded where it was met: the
 * page's header names it (page_get checked that for a page in the map; a
 * dirty buffer carries its number).  A macro, so that CORRUPT records the
 * caller's file and line; `page` is evaluated twice on damage only. */
#define node_at(page, i, psize, node) \
    (page_node((page), (i), (psize), (node)) ? CORRUPT(page_pgno(page)) : 0)

/* Invariants of keel's own making (not of the file's: those are CORRUPT).
 * A failure prints file:line and the condition to stderr and aborts.  On
 * in every build but one that defines NDEBUG (meson's -Db_ndebug=true, or
 * -Db_ndebug=if-release with buildtype release): the default
 * debugoptimized build, which the benchmarks use, and the sanitizer and
 * fuzz builds check them, so each must be O(1) on a hot path.  The
 * condition is not evaluated when off, so it must have no effect. */
#ifdef NDEBUG
#define KEEL_ASSERT(cond) ((void)0)
#else
void keel_assert_fail(const char *file, int line, const char *cond) __attribute__((noreturn, cold));
#define KEEL_ASSERT(cond) ((cond) ? (void)0 : keel_assert_fail(__FILE__, __LINE__, #cond))
#endif

/* ---- api.c: shared argument checks ---- */
int check_key(keel_txn *txn, keel_val key);

#endif
