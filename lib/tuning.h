/*
 * tuning.h — keel's tuning numbers, all in one place, each with its unit and
 * why it has that value (Redis's ACTIVE_EXPIRE_CYCLE_* are the model).
 *
 * None of them is part of the file format: changing one changes how much
 * memory, how many system calls or which pages a txn uses, never what a
 * reader can read.  Limits of the format (page sizes, key sizes) are in
 * keel.h and format.h; the lock file's layout in lockfile.c.
 */
#ifndef KEEL_TUNING_H
#define KEEL_TUNING_H

/* ---- defaults of keel_options (db.c) ------------------------------------- */
/* Dirty bytes a write txn keeps in memory before it spills (writes pages
 * out early): a bulk load of a million keys fits without spilling, whose
 * rewrites of spilled pages cost file size and time. */
#define DEFAULT_MAX_DIRTY_BYTES ((size_t)512 << 20)
/* Expired keys each write commit removes: bounded work per commit, enough
 * to keep up with expiry at any sustained commit rate. */
#define DEFAULT_PURGE_PER_COMMIT 100 /* keys */

/* ---- the B+tree's fill policy (btree.c) --------------------------------- */
/* In fractions of a page's usable bytes
 * (psize - PAGE_HDR), each with why it is that value:
 * MERGE_BELOW: a page under half full looks for a merge.  Merging at half,
 *   not only at a quarter, keeps pages fuller after many deletes: a txn that
 *   deletes every other key writes half as many leaves.
 * STARVED_BELOW: a page under a quarter full must merge, or else share with
 *   its sibling: pages stay at least a quarter full.
 * MERGED_MAX: two pages merge by choice only when the result fills at most
 *   7/8 of a page: the eighth left keeps the next inserts from splitting it
 *   again at once; a larger fraction leaves emptier pages after mass deletes.
 * SHARE_MARGIN: a full leaf shares with a dirty sibling only if the sibling
 *   has a sixteenth of a page free beyond the new node (else the next inserts
 *   share again each time); with less the two become three pages.  A larger
 *   margin trades fuller leaves for fewer instructions.
 * CLEAN_SHARE_MARGIN: a clean sibling (to be copied first) is worth a share
 *   only with an eighth of a page free beyond the new node. */
#define FILL_MERGE_BELOW_DIV 2
#define FILL_STARVED_BELOW_DIV 4
#define FILL_MERGED_MAX_NUM 7
#define FILL_MERGED_MAX_DEN 8
#define FILL_SHARE_MARGIN_DIV 16
#define FILL_CLEAN_SHARE_MARGIN_DIV 8

/* ---- free space (space.c, freelist.c) ------------------------------------ */
/* Allocation: an overflow run is searched for among the reusable pages,
 * reclaiming records until one forms; past this many pages (pages) without
 * one it is not forming (the pages are scattered), and fresh pages at the
 * end of the file cost nothing to find. */
#define SPACE_RUN_SEARCH_MAX_PAGES 4096
/* Commit (freelist_record), extra reclaims: while more than 1/4 of the
 * file's pages (a share: npages / DIV) are free, load up to 4 records
 * beyond what allocation took, so that free pages near the end reach the
 * reusable list and the tail trim: bounded work, a few chunks a commit. */
#define SPACE_EXTRA_RECLAIM_FREE_DIV 4
#define SPACE_EXTRA_RECLAIM_RECORDS 4 /* records per commit */
/* Full load: while more than 1/2 of the file's pages are free, load every
 * reclaimable record (O(free space)) so the file shrinks in one commit.
 * It backs off: the next may run 2 commits later, then 4, 8, ... (the
 * free tree's own pages may still sit at the end the first time); the
 * backoff starts over once the free pages grew by more than 1/4 since. */
#define SPACE_FULL_LOAD_FREE_DIV 2          /* share: npages / DIV */
#define SPACE_FULL_LOAD_BACKOFF_FIRST 2     /* commits; doubles each time */
#define SPACE_FULL_LOAD_RESET_GROWTH_DIV 4  /* share: last load's free pages / DIV */
/* Recording rounds: they settle in one or two (freelist.c's contract says
 * why they end); past this many the free tree must be damaged. */
#define SPACE_RECORD_ROUNDS_MAX 64 /* rounds */
/* Relocation (freelist_relocate) runs while more than 1/3 of the file's
 * pages are free (then the file ends within 1.5 times the live pages, and
 * with pager.c's cut within twice the live data) and they add up to more
 * than COMPACT_MIN_FREE_BYTES: less lies within the file's growth and
 * shrink steps, which relocation could not give back anyway. */
#define COMPACT_FREE_DIV 3 /* share: npages / DIV */
#define COMPACT_MIN_FREE_BYTES ((uint64_t)1 << 20)
/* Per-commit budgets, so that a relocating commit costs a bounded amount
 * more than a plain one: */
#define COMPACT_READ_PAGES 64      /* tree pages the walk reads per commit, at most */
#define COMPACT_COPY_PAGES 32      /* pages it copies per commit, at most (a longer overflow run alone) */
#define COMPACT_RECLAIM_RECORDS 4  /* free-tree records it loads per commit for pages below the target */
/* Free room below the target besides half the live pages (bytes): for
 * the copies and the pages recent commits freed, not reusable yet. */
#define COMPACT_SLACK_BYTES ((uint64_t)256 << 10)
/* Commits (txn ids): after a pass that moved nothing there is nothing to
 * gain soon, so the walk rests; a full load costs O(free space), so the
 * walk asks for one at most this often (a small database's pass takes one
 * commit). */
#define COMPACT_IDLE_COMMITS 64    /* after a pass that moved nothing, commits before the next one */
#define COMPACT_RELOAD_COMMITS 16  /* commits between two full loads the walk asks for, at least */


/* ---- meta pages (meta.c) ------------------------------------------------- */
/* Reads of both metas from the map before two unusable ones are damage:
 * a concurrent commit can tear one copy, two commits during the reads both;
 * a few tries (with a yield between) outlast that, and damage stays. */
#define META_READ_TRIES 8

/* ---- group commit (group.c) ----------------------------------------------- */
/* Yields a flush leader waits for a published slot that a writer is filling
 * while `pending` does not move: a writer fills it in microseconds, so this
 * many is a writer that died mid-fill or a damaged lock file. */
#define GROUP_COPY_TRIES 100000
/* A committer asleep until a flush ends wakes after this long without one
 * and takes the flush lock the blocking way (which takes it over from a
 * leader that died): longer than a sync usually takes. */
#define GROUP_WAIT_MS 50
/* A flush leader lets commits join its flush for at most 1/DIV of the last
 * flush's sync time, and stops when none came for 1/IDLE_DIV of that
 * (group.c: gather). */
#define GROUP_GATHER_DIV 2
#define GROUP_GATHER_MAX_US 10000 /* the sync time counted at most: a slow disk's, or a damaged word */
#define GROUP_GATHER_IDLE_DIV 4

/* ---- pages and write-out (pager.c, os.c) ---------------------------------- */
/* The file grows and shrinks in whole steps, and grows by at least an
 * eighth of its size: few size changes, each of which costs a full sync.
 * It shrinks only when that frees the growth share and two steps more, so
 * that a file near the boundary does not shrink and grow by turns. */
#define GROW_STEP_BYTES ((uint64_t)1 << 20)
#define GROW_SHARE_DIV 8      /* share: file size / DIV */
#define SHRINK_SLACK_STEPS 2  /* steps */
/* Dirty pages' buffers up to RUN_MAX bytes (a page, or an overflow run)
 * come from chunks of mapped memory (pagebuf.c) that grow with use from
 * MIN to MAX bytes each; after a write txn the handle keeps up to KEEP
 * bytes of chunks for the next one. */
#define PAGEBUF_CHUNK_MIN_BYTES ((size_t)64 << 10)
#define PAGEBUF_CHUNK_MAX_BYTES ((size_t)2 << 20)
#define PAGEBUF_KEEP_BYTES ((size_t)8 << 20)
#define PAGEBUF_RUN_MAX_BYTES ((size_t)128 << 10)
/* A write txn's dirty-page table starts with MIN slots (24 bytes each) and
 * stays with its txn object up to KEEP slots: a one-put txn then neither
 * allocates one nor walks a big one (its end and its write-out visit every
 * slot); a bigger txn's table is freed. */
/* Pages a handle knows whole (KEEL_VERIFY's checks, copy-on-write's
 * structure check: pager.c), a direct-mapped table of 8-byte entries sized
 * when it is made to twice the file's pages (a power of two), between these
 * bounds: 512 KiB to 32 MiB per handle, which covers a 16 GiB file of 4 KiB
 * pages.  A page that falls out of it is checked again when next met. */
#define KNOWN_SLOTS_MIN ((size_t)1 << 16)
#define KNOWN_SLOTS_MAX ((size_t)1 << 22)

#define DIRTY_TABLE_MIN_SLOTS 32
#define DIRTY_TABLE_KEEP_SLOTS 128
/* A one-flush commit is checked by reading its pages back at the first
 * open after a crash; bigger commits take the second sync instead, which
 * costs them little, so that this check stays short. */
#define ONEFLUSH_MAX_BYTES ((uint64_t)8 << 20)
/* Writes are cut at multiples of this many bytes: the kernel walks a
 * large folio's block buffers once per write and once more at writeback,
 * which dominated batch commits on a bulk-loaded file; the price is one
 * system call per piece of a long run. */
#define OS_WRITE_MAX_BYTES ((uint64_t)16 << 10)

/* ---- the expiry log (expiry.c) -------------------------------------------- */
/* The log is applied early past this share of max_dirty: it holds about
 * what the expiry tree's new pages will, so it shares the dirty budget. */
#define EXPIRY_LOG_DIRTY_SHARE_DIV 4 /* share: max_dirty / DIV */
#define EXPIRY_SORT_RUN 16 /* entries: insertion sort of runs this long, then merges */

/* ---- pair counts owed (dupcount.c, dup.c) -------------------------------- */
/* A write txn writes the counts it owes into the trees once its table holds
 * this many keys, not only at commit: the table stays small when a txn
 * touches many keys (a load, a compacting copy). */
#define DUPCOUNT_FLUSH_KEYS 65536 /* keys */

/* ---- the lock file (lockfile.c) ------------------------------------------ */
/* Reader slots a handle keeps between read txns: a read txn then takes
 * one without touching the shared table. */
#define LOCK_PARKED_MAX 16 /* slots; at most 32 (bits of a word) */
/* How often a waiter for the writer lock looks whether the holder died. */
#define WRITER_CHECK_MS 100
/* A sole opener that finds the data file in use through another lock file
 * tries again a few times: two first openers through two paths at once see
 * each other and both step back. */
#define LOCKPATH_TRIES 8
#define LOCKPATH_PAUSE_MAX_US 4000

#endif
