/*
 * keel — an embedded, transactional key-value database.
 *
 * A copy-on-write B+tree in one memory-mapped file; commits are made crash-safe
 * by two alternating meta pages.  One writer and any number of readers run at
 * once (MVCC): a read transaction sees the snapshot committed before it began
 * and never waits.  The writer lock and the reader table live in a lock file
 * beside the data file (`<path>-lock`), so readers may live in other processes.
 *
 * Conventions:
 *   - Every function returning int answers 0 on success, one of the negative
 *     KEEL_* codes below for keel's own errors, or a positive errno when the
 *     operating system failed.  keel_strerror() names every one of them.
 *   - keel_val data returned by reads points into the map (or into the write
 *     transaction's own buffers) and stays valid until the transaction ends or,
 *     in a write transaction, until the next change made in it.
 *   - A failed call changes nothing on disk.
 */
#ifndef KEEL_H
#define KEEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library is built with hidden visibility: only what this header
 * declares is exported, so calls between its own files bind directly
 * (no PLT, no interposition) and can be inlined. */
#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

#define KEEL_VERSION_MAJOR 0
#define KEEL_VERSION_MINOR 1
#define KEEL_VERSION_PATCH 0

typedef struct keel_db keel_db;         /* one open database file */
typedef struct keel_txn keel_txn;       /* a read or write transaction */
typedef struct keel_cursor keel_cursor; /* a position in one bucket of one txn */
typedef uint32_t keel_bucket;           /* from keel_bucket_open: see "buckets" below */

typedef struct {
    const void *data;
    size_t len;
} keel_val;

/* The default bucket: it always exists; handle 0 names it without a lookup. */
#define KEEL_DEFAULT_BUCKET ((keel_bucket)0)

/* ---- flags ------------------------------------------------------------- */
/* keel_open (options.flags) and keel_begin */
#define KEEL_RDONLY      0x0001u /* open: read only, never create; begin: a read txn */
#define KEEL_NOSYNC      0x0002u /* open: never sync; a crash may lose recent commits */
#define KEEL_NOMETASYNC  0x0004u /* open: sync data pages but not the meta page */
#define KEEL_NOLOCK      0x0008u /* open, with KEEL_RDONLY only: use no lock file (read-only media).
                                    Safe only while no process writes the database. */
#define KEEL_VERIFY      0x0200u /* open: check every page a txn reads against its checksum (format 2
                                    files): damage answers KEEL_CORRUPTED, never wrong data */
/* keel_put */
#define KEEL_NOOVERWRITE 0x0010u /* fail with KEEL_EXISTS if the key is present */
#define KEEL_APPEND      0x0020u /* key sorts after every key in the bucket: fill pages fully */
#define KEEL_KEEPTTL     0x0040u /* keep the key's expiry time (a plain put clears it) */
#define KEEL_NODUPDATA   0x0800u /* DUPSORT buckets: fail with KEEL_EXISTS if this (key, value) pair is present */
/* keel_bucket_open */
#define KEEL_CREATE      0x0100u /* create the bucket if it does not exist */
#define KEEL_DUPSORT     0x0400u /* with KEEL_CREATE: each key holds a sorted set of values (see below) */

/* ---- errors ------------------------------------------------------------ */
enum {
    KEEL_OK = 0,
    KEEL_NOTFOUND = -30800,     /* key or bucket not found, or cursor past the end */
    KEEL_EXISTS = -30801,       /* the key exists (KEEL_NOOVERWRITE) */
    KEEL_CORRUPTED = -30802,    /* the file is damaged */
    KEEL_INVALID = -30803,      /* not a keel file */
    KEEL_VERSION = -30804,      /* a keel file of another format version */
    KEEL_FULL = -30805,         /* the disk or the address reservation is full */
    KEEL_READERS_FULL = -30806, /* every reader slot is taken */
    KEEL_BADVALSIZE = -30807,   /* key empty or too long, or value too long */
    KEEL_READONLY = -30808,     /* a write in a read txn or a read-only db */
    KEEL_BADTXN = -30809,       /* txn finished, failed, used from the wrong place, or has a live child */
    KEEL_PANIC = -30810,        /* a sync failed: the db must be closed and reopened */
    KEEL_BADARG = -30811,       /* a NULL pointer or a meaningless argument */
    KEEL_BADBUCKET = -30812,    /* a bucket handle that names no open bucket */
    KEEL_BADCURSOR = -30813,    /* a closed cursor, or one not positioned */
    KEEL_BUSY = -30814,         /* this handle already has a write txn open */
    KEEL_BADFLAGS = -30815,     /* unknown or contradictory flags */
    KEEL_BADNAME = -30816,      /* bucket name empty or longer than 255 bytes */
    KEEL_LOCKFILE = -30817,     /* the lock file is not a keel lock file or is damaged */
    KEEL_FORKED = -30818,       /* a handle inherited across fork(): open the db again */
    KEEL_NOMEM = -30819,        /* out of memory */
    KEEL_MISMATCH = -30820,     /* compare-and-swap: the value differs */
    KEEL_NOTNUMBER = -30821,    /* increment: the value is not a decimal integer */
    KEEL_OVERFLOW = -30822,     /* increment or deadline: the result does not fit in int64 */
    KEEL_LOCKPATH = -30823,     /* the database is in use through another lock file (a second path to
                                   it: hard link, bind mount; or its lock file was removed) */
    KEEL_MAPSIZE = -30824,      /* the file has grown past this handle's map (options.max_size) */
    KEEL_ADDRSPACE = -30825,    /* the address space for the map (options.max_size) cannot be reserved */
    KEEL_LAGGED = -30826,       /* a read txn fell more than options.max_reader_lag commits behind
                                   and writers stopped keeping its snapshot: begin a new one */
    KEEL_INCOMPATIBLE = -30827, /* an operation that the bucket's kind does not allow (keel_cas in a
                                   DUPSORT bucket), or a bucket created again as the other kind */
};

/* ---- opening ----------------------------------------------------------- */
#define KEEL_MIN_PAGE_SIZE 4096u
#define KEEL_MAX_PAGE_SIZE 65536u
#define KEEL_DEFAULT_MAX_READERS 126u
#define KEEL_DEFAULT_MAX_SIZE ((uint64_t)1 << 40) /* 1 TiB of address space (1 GiB on 32-bit hosts) */

/* New fields are only ever added at the end, so that the struct can grow:
 * see keel_open below.  Zero-initialised = the defaults, always. */
typedef struct keel_options {
    uint32_t page_size;       /* at creation: 4096 default; any power of two 4096..65536 */
    uint64_t max_size;        /* address space reserved for the map; 0 = 1 TiB */
    uint32_t max_readers;     /* reader slots; 0 = 126 */
    unsigned flags;           /* KEEL_RDONLY, KEEL_NOSYNC, KEEL_NOMETASYNC */
    unsigned mode;            /* file mode on creation; 0 = 0644 */
    int64_t (*clock)(void *ctx); /* ms since the Unix epoch; NULL = CLOCK_REALTIME */
    void *clock_ctx;
    int32_t purge_per_commit; /* expired keys each write commit removes: 0 = 100, < 0 = none */
    uint64_t max_dirty;       /* bytes of changed pages a write txn keeps in memory before it
                                 writes them to free space in the file early; 0 = 512 MiB */
    /* ---- 0.1 ends here (KEEL_OPTIONS_SIZE_0_1 bytes) ---- */
    uint64_t max_reader_lag;  /* commits a read txn may fall behind before writers reuse the pages
                                 of its snapshot (its next call answers KEEL_LAGGED); 0 = no limit */
} keel_options;
#define KEEL_OPTIONS_SIZE_0_1 offsetof(keel_options, max_reader_lag) /* the struct as version 0.1 had it */

/* keel_open is a macro that passes the size of the keel_options the program
 * was compiled with, so a program built against an older header (a shorter
 * struct) keeps working with a newer library: the fields it does not know
 * take their defaults.  A newer program's fields that this library does not
 * know must be zero (else KEEL_BADARG).  Callers that cannot use the macro
 * (a foreign-function interface) call keel_open_sized with their size; the
 * plain function keel_open reads the 0.1 struct.
 * Processes that set RLIMIT_FSIZE must ignore SIGXFSZ: writes past the
 * limit then fail and keel answers KEEL_FULL (the default action kills). */
int keel_open_sized(const char *path, const keel_options *opts, size_t opts_size, keel_db **out);
/* The lock file of the database at db_path: "<real path>-lock", the path
 * with symbolic links resolved (or as given, if it does not exist yet).
 * ENAMETOOLONG if it does not fit in size bytes. */
int keel_lock_path(const char *db_path, char *buf, size_t size);
int keel_open(const char *path, const keel_options *opts, keel_db **out);
#define keel_open(path, opts, out) keel_open_sized((path), (opts), sizeof(keel_options), (out))
void keel_close(keel_db *db); /* aborts the handle's txns still open; end them first */

/* ---- transactions ------------------------------------------------------ */
int keel_begin(keel_db *db, unsigned flags, keel_txn **out); /* 0 = write txn, KEEL_RDONLY = read txn */
int keel_commit(keel_txn *txn); /* the txn is gone afterwards, whatever the result */
void keel_abort(keel_txn *txn); /* NULL is ignored */
uint64_t keel_txn_id(const keel_txn *txn); /* snapshot id (read) or id being written (write); 0 for NULL */

/* A child of a write txn (a savepoint): it sees everything its parent did,
 * and every kind of change may be made in it (buckets, TTLs, purges,
 * cursors).  keel_commit(child) hands its changes to the parent and writes
 * nothing; keel_abort(child), also after a failed call left the child able
 * only to abort, leaves the parent exactly as it was when the child began:
 * data, buckets (a handle the child made for a bucket it created answers
 * KEEL_BADBUCKET afterwards), TTLs, counts, free space.  Children nest, up to
 * 255 deep.  keel_txn_id(child) is the parent's id; a child reads no clock
 * of its own (TTLs count from its outermost txn's begin).
 *   - While a child lives, every call on its parent answers KEEL_BADTXN
 *     (keel_error_detail() says why), keel_commit(parent) too, and ends
 *     nothing; keel_abort(parent) aborts the child (and its children) and
 *     then the parent; keel_close aborts them all.
 *   - The parent's cursors stay open: once the child ends they find their
 *     key again, as after any change.  The child's own cursors answer
 *     KEEL_BADCURSOR once it ends.
 *   - Nothing is written to the file early (options.max_dirty) while a
 *     child lives: its pages, and its parent's, stay in memory until it ends.
 * A read txn's child: KEEL_READONLY.  NULL arguments: KEEL_BADARG. */
int keel_begin_nested(keel_txn *parent, keel_txn **child);

/* ---- buckets ----------------------------------------------------------- */
#define KEEL_MAX_BUCKET_NAME 255
/* A handle names its bucket in every txn of the db, until a write txn ends
 * with the bucket absent (a committed drop, an aborted creation): then it
 * answers KEEL_BADBUCKET for good, even once the name is created again
 * (open it again for a new handle); txns begun before keep their view.
 * A db handle holds up to 2^24 - 1 bucket handles at once (KEEL_FULL). */
int keel_bucket_open(keel_txn *txn, const char *name, unsigned flags, keel_bucket *out); /* NULL = default */
int keel_bucket_drop(keel_txn *txn, keel_bucket b); /* the default bucket is emptied, not removed */
/* Calls fn for each named bucket in name order; a non-zero return from fn stops and is returned. */
int keel_bucket_list(keel_txn *txn, int (*fn)(const char *name, void *ctx), void *ctx);
/* The bucket's kind: *flags = KEEL_DUPSORT or 0. */
int keel_bucket_flags(keel_txn *txn, keel_bucket b, unsigned *flags);

/* ---- duplicate-sorted (DUPSORT) buckets ---------------------------------
 * keel_bucket_open(txn, name, KEEL_CREATE | KEEL_DUPSORT, &b) makes a bucket
 * whose key holds a sorted set of values (LMDB's MDB_DUPSORT, a multimap).
 * Its kind is fixed at creation: opening it later needs no flag; creating an
 * existing bucket as the other kind answers KEEL_INCOMPATIBLE, and so does
 * KEEL_DUPSORT for the default bucket.  In such a bucket:
 *   - keel_put adds the pair (an existing pair: 0 and no change, or
 *     KEEL_EXISTS with KEEL_NODUPDATA; KEEL_NOOVERWRITE: KEEL_EXISTS if the
 *     key has any value); keel_get gives the key's first (smallest) value;
 *     keel_del removes the key with all its values; keel_del_value one pair.
 *   - Cursors visit every pair in (key, value) order; keel_cursor_del
 *     removes the current pair; keel_cursor_seek finds the first pair whose
 *     key is >= key.  Entry counts in the stats count pairs.
 *   - A TTL belongs to the key: its values expire together.  keel_put_ttl
 *     adds the pair and sets the key's expiry; a plain put keeps it.
 *   - keel_cas and keel_incr answer KEEL_INCOMPATIBLE.
 *   - Values are compared as keys are (bytewise, shorter first).  The
 *     key's length plus the value's, with each zero byte of the key counted
 *     twice, is at most keel_max_pair_size() (>= keel_max_key_size() + 18).
 * The cursor calls below work in plain buckets too, where a key has one value. */
int keel_del_value(keel_txn *txn, keel_bucket b, keel_val key, keel_val val); /* one pair; KEEL_NOTFOUND */
size_t keel_max_pair_size(const keel_db *db);

/* ---- data -------------------------------------------------------------- */
int keel_get(keel_txn *txn, keel_bucket b, keel_val key, keel_val *val);
int keel_put(keel_txn *txn, keel_bucket b, keel_val key, keel_val val, unsigned flags);
int keel_del(keel_txn *txn, keel_bucket b, keel_val key);
size_t keel_max_key_size(const keel_db *db); /* depends on the page size; >= 1024 always */
#define KEEL_MAX_VALUE_SIZE ((size_t)0xFFFFFFFEu)

/* ---- expiry (TTL) ----------------------------------------------------------
 * Times are ms since the Unix epoch, read from options.clock once per txn, at
 * keel_begin.  A key whose expiry is <= that time is absent for every read,
 * cursor, keel_ttl, CAS, increment and KEEL_NOOVERWRITE check; it stays in
 * the file until purged (by keel_purge, or by the next write commits).
 * As in Redis: a plain put clears a key's expiry unless KEEL_KEEPTTL is
 * given; keel_incr and keel_cas keep it; a delete removes it. */
int keel_put_ttl(keel_txn *txn, keel_bucket b, keel_val key, keel_val val, int64_t ttl_ms, unsigned flags);
int keel_expire_at(keel_txn *txn, keel_bucket b, keel_val key, int64_t unix_ms); /* KEEL_NOTFOUND if absent */
int keel_expire(keel_txn *txn, keel_bucket b, keel_val key, int64_t ttl_ms);
int keel_persist(keel_txn *txn, keel_bucket b, keel_val key); /* removes the expiry */
/* KEEL_NOTFOUND if absent or expired; *remaining_ms = -1 if the key does not expire. */
int keel_ttl(keel_txn *txn, keel_bucket b, keel_val key, int64_t *remaining_ms);
/* The absolute expiry time of a live key: *unix_ms = 0 if it does not expire. */
int keel_expiry_at(keel_txn *txn, keel_bucket b, keel_val key, int64_t *unix_ms);
/* Removes up to max expired keys, oldest expiry first; *purged (may be NULL) gets how many. */
int keel_purge(keel_txn *txn, size_t max, size_t *purged);

/* ---- atomic operations ----------------------------------------------------- */
/* expected NULL: the key must be absent.  A mismatch answers KEEL_MISMATCH and
 * changes nothing.  A replaced value keeps its expiry. */
int keel_cas(keel_txn *txn, keel_bucket b, keel_val key, const keel_val *expected, keel_val new_val);
/* The value is a decimal ASCII int64 (as in Redis); absent counts as 0.
 * KEEL_NOTNUMBER / KEEL_OVERFLOW leave it as it was.  The expiry is kept. */
int keel_incr(keel_txn *txn, keel_bucket b, keel_val key, int64_t delta, int64_t *result);
/* Missing or expired keys get {NULL, 0}. */
int keel_get_many(keel_txn *txn, keel_bucket b, const keel_val *keys, keel_val *vals, size_t n);
/* All or nothing: every argument and every KEEL_NOOVERWRITE conflict is
 * checked before the first write; a failure after that (out of memory, disk
 * full) leaves the txn able only to abort, so none of the writes remain. */
int keel_put_many(keel_txn *txn, keel_bucket b, const keel_val *keys, const keel_val *vals, size_t n,
                  unsigned flags);

/* ---- one-call forms: each runs its own txn ----------------------------------
 * bucket NULL = the default bucket; writes create a missing bucket. */
int keel_db_put(keel_db *db, const char *bucket, keel_val key, keel_val val, int64_t ttl_ms); /* 0 = no expiry */
/* *copy is malloc'd (free it with free()); KEEL_NOTFOUND if absent. */
int keel_db_get(keel_db *db, const char *bucket, keel_val key, void **copy, size_t *len);
int keel_db_del(keel_db *db, const char *bucket, keel_val key);
int keel_db_incr(keel_db *db, const char *bucket, keel_val key, int64_t delta, int64_t *result);
int keel_db_cas(keel_db *db, const char *bucket, keel_val key, const keel_val *expected, keel_val new_val);

/* ---- cursors -----------------------------------------------------------
 * A cursor walks one bucket in key order and stays valid across its own
 * txn's puts and deletes.  Stepping past either end answers KEEL_NOTFOUND and
 * leaves the cursor where it was.  A first/last/seek that finds nothing
 * leaves it unpositioned: next() then acts as first(), prev() as last(), and
 * current()/del() answer KEEL_BADCURSOR.  After keel_cursor_del, next()
 * yields the entry after the deleted one and prev() the one before it.
 * Cursors of a finished txn answer KEEL_BADCURSOR; close them anyway. */
int keel_cursor_open(keel_txn *txn, keel_bucket b, keel_cursor **out);
int keel_cursor_first(keel_cursor *c, keel_val *key, keel_val *val);
int keel_cursor_last(keel_cursor *c, keel_val *key, keel_val *val);
int keel_cursor_next(keel_cursor *c, keel_val *key, keel_val *val);
int keel_cursor_prev(keel_cursor *c, keel_val *key, keel_val *val);
int keel_cursor_seek(keel_cursor *c, keel_val key, keel_val *key_out, keel_val *val_out); /* first >= key */
int keel_cursor_current(keel_cursor *c, keel_val *key, keel_val *val);
/* The current entry's absolute expiry (ms since the epoch), 0 if it has
 * none: what keel_expiry_at says, without a second search. */
int keel_cursor_expiry(keel_cursor *c, int64_t *unix_ms);
int keel_cursor_del(keel_cursor *c); /* next() then yields the following entry */
/* Exactly key (its first value); KEEL_NOTFOUND leaves the cursor unpositioned. */
int keel_cursor_seek_key(keel_cursor *c, keel_val key, keel_val *val_out);
/* key's first value >= val; KEEL_NOTFOUND (unpositioned) if it has none. */
int keel_cursor_seek_pair(keel_cursor *c, keel_val key, keel_val val, keel_val *key_out, keel_val *val_out);
/* The next (previous) value of the current key; KEEL_NOTFOUND at the end of
 * its values, and the cursor stays.  An unpositioned cursor: KEEL_BADCURSOR. */
int keel_cursor_next_dup(keel_cursor *c, keel_val *key, keel_val *val);
int keel_cursor_prev_dup(keel_cursor *c, keel_val *key, keel_val *val);
/* The first value of the next key; the last value of the previous key (as
 * LMDB's MDB_NEXT_NODUP and MDB_PREV_NODUP).  Unpositioned: as next()/prev(). */
int keel_cursor_next_key(keel_cursor *c, keel_val *key, keel_val *val);
int keel_cursor_prev_key(keel_cursor *c, keel_val *key, keel_val *val);
/* The number of values of the current key: O(log n) while they share a
 * leaf page, plus one step per further leaf page they fill. */
int keel_cursor_count(keel_cursor *c, uint64_t *count);
void keel_cursor_close(keel_cursor *c); /* NULL is ignored */

/* ---- statistics -------------------------------------------------------- */
typedef struct keel_stat {
    uint32_t page_size, depth;
    uint64_t entries, branch_pages, leaf_pages, overflow_pages, free_pages, file_size, last_txnid;
} keel_stat;
int keel_db_stat(keel_db *db, keel_stat *st);                    /* whole file */
int keel_bucket_stat(keel_txn *txn, keel_bucket b, keel_stat *st); /* one bucket */

typedef struct keel_reader_info {
    int32_t pid;
    uint64_t txnid; /* snapshot */
    uint64_t lag;   /* commits made since that snapshot */
    int64_t age_ms; /* how long the snapshot has been held (by the clock of keel_open's options) */
} keel_reader_info;
/* Fills up to max slots in use; *count gets the number in use.  Killed
 * readers are never listed.  A KEEL_NOLOCK handle has no reader table: 0. */
int keel_db_readers(keel_db *db, keel_reader_info *out, size_t max, size_t *count);

/* ---- copies --------------------------------------------------------------- */
#define KEEL_COPY_COMPACT 0x1u /* write only live data, pages full and in key order */
/* A consistent copy of the newest snapshot into a new file (it must not
 * exist), while writers go on.  Without KEEL_COPY_COMPACT the copy is the
 * file's pages as they are.  The copy is made beside dest_path and appears
 * under that name whole, or not at all (a full disk leaves nothing). */
int keel_copy(keel_db *db, const char *dest_path, unsigned flags);

/* ---- integrity ---------------------------------------------------------- */
/* Walks the newest snapshot: every page reached exactly once or recorded as
 * free, every page number in range, keys in order within and across pages,
 * counts equal to the descriptors, overflow runs whole.  Calls report (if not
 * NULL) once per problem found; *problems gets their number.  Answers 0 when
 * the walk finished (look at *problems), or an error if it could not run. */
int keel_check(keel_db *db, void (*report)(void *ctx, const char *msg), void *ctx, uint64_t *problems);

/* A new database at dest (which must not exist) from every record of the
 * database at src that can still be read: src is read page by page and
 * never written, and need not open.  Damaged pages' records are not
 * copied (a format 2 file finds damage by its checksums, a format 1 file by
 * its structure); the leaves below a damaged branch page are looked for in
 * the whole file.  report (if not NULL) gets one line per key range lost
 * and per damaged page met.  Answers 0 when dest was written (st says
 * whether anything was lost), else an error and dest is not left behind. */
typedef struct keel_salvage_stat {
    uint64_t records;       /* records written to dest */
    uint64_t damaged_pages; /* pages (or overflow runs) whose checksum or structure failed */
    uint64_t lost_ranges;   /* key ranges that could not all be read back: 0 = nothing lost */
    uint64_t scanned_pages; /* leaf pages found by scanning the file, below damaged branches */
} keel_salvage_stat;
int keel_salvage(const char *src, const char *dest, void (*report)(void *ctx, const char *msg), void *ctx,
                 keel_salvage_stat *st);

const char *keel_strerror(int err);
/* Where the calling thread's last error was met, when keel knows more than
 * the code says: the file at fault ("x.db-lock: Is a directory"), or after
 * KEEL_CORRUPTED where the damage was met: "damage at page 1234
 * (btree.c:512)", the page whose contents failed a check and the library's
 * source line, or "damage met (pager.c:239)" when no page is known (a meta,
 * a catalog value).  "" when there is nothing more to say.  keel_open
 * clears it first, so after a failed open it describes that failure. */
const char *keel_error_detail(void);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif
