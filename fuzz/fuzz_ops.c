/*
 * fuzz_ops.c — operation sequences checked step by step against an
 * in-memory model.  Any difference (a result code, a value, an expiry, a
 * cursor position, a count, a keel_check problem) aborts.
 *
 * Input: byte 0 holds options, then operations, each an opcode byte and its
 * argument bytes (missing bytes read as 0; at most FO_MAX_OPS operations;
 * what an input may cost: FO_BYTES_BUDGET below).
 *   byte 0 bits 0-1  page size 4096, 8192, 16384, 65536
 *          bits 2-3  purge_per_commit: none, 1, 3, 100
 *          bit 4     DUPSORT: bucket opens and creates (op 16) take
 *                    KEEL_DUPSORT from bit 2 of their mode byte; key
 *                    selectors 48-67 are keys with zero and 0xFF bytes and
 *                    keys about the pair-size limit; opcode bytes 224-239
 *                    are the DUPSORT operations: 224-227 cursor moves
 *                    (next/prev_dup, next/prev_key, count, seek_key,
 *                    seek_pair, cursor_expiry), 228-230 keel_del_value,
 *                    231-233 many values for one key, 234-235 create a
 *                    DUPSORT bucket, 236-237 put, 238-239 put_ttl
 *          bit 5     nested txns: opcode bytes 240-255 begin a child of the
 *                    write txn (240-247), commit the innermost child
 *                    (248-251) or abort it (252-255); without the bits 4
 *                    and 5 those bytes are ordinary opcodes, so older
 *                    inputs mean what they did
 *
 * Three buckets: the default one and "alpha", "beta" (created, dropped and
 * re-created by the input).  One write txn at a time (begun on demand) with
 * one cursor; one read txn that may stay open across commits (MVCC: it must
 * keep seeing its snapshot).  The clock (keel_options.clock) moves forwards
 * and backwards; a clock that goes back brings expired but unpurged keys
 * back, so the model keeps them and purges exactly as keel does: oldest
 * expiry first, by (expiry, bucket id, key).
 *
 * DUPSORT buckets ("alpha", "beta" created with KEEL_DUPSORT) are a
 * multimap in the same array: (key, value, expiry) pairs in (key, value)
 * order, every pair of a key with the key's expiry; every operation (put
 * flags, TTLs, deletes, purge one key at a time, cursors, counts, stats
 * counting pairs) follows the rules of include/keel.h's DUPSORT section.
 *
 * The model: per bucket a sorted array of (key, value, expiry) whose keys
 * and values are immutable reference-counted blobs, so the committed state,
 * the write txn's state and the reader's snapshot are cheap copies.  With
 * nested txns the write side is a stack: each child begins from a copy of
 * its parent's state, which its abort puts back.  Commit (op 11) commits
 * every child, innermost first, then the write txn; abort (op 12) aborts
 * the write txn, and keel aborts its children with it.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "keel.h"

#define FO_MAX_OPS 400
#define FO_NB 3
/* What one input may cost.  A run must take about a millisecond (10
 * million executions in a few hours of one core), so:
 *  - values: FO_BYTES_BUDGET bytes per input, then values are cut to 20
 *    bytes.  256 KiB still makes overflow values (70000 bytes overflow even
 *    64 KiB pages) and dozens of leaves at 4 KiB pages; range ops with long
 *    keys (range_key) make trees of three and four levels from a few dozen;
 *  - range put/delete (ops 19, 20): up to 32 keys each (was 200);
 *  - reopen (op 13) and keel_check (op 21): FO_MAX_REOPENS and FO_MAX_CHECKS
 *    times in the middle of an input, later ones are no-ops; every input
 *    still ends with a commit, a reopen, keel_check and a full comparison;
 *  - fuzz/run.sh gives fuzz_ops -max_len=512 (was 4096): ~100 operations.
 * Before (3 MiB, 200-key ranges, no limits, 4096 bytes) a grown corpus ran
 * at 30-170 exec/s.  KEEL_FUZZ_STATS=1 prints what each input reached
 * (page size, operations, value bytes, reopens, checks, per bucket the
 * depth, entries and pages). */
#define FO_BYTES_BUDGET ((size_t)256 << 10)
#define FO_MAX_REOPENS 2
#define FO_MAX_CHECKS 2
#define FO_MAX_NEST 10 /* children below the write txn */

static const char *const fo_names[FO_NB] = {NULL, "alpha", "beta"};

/* ---- blobs and the model ---- */
/* The model's data-structure helpers carry no coverage instrumentation:
 * they are the oracle, not the code under test, and the hit counts of their
 * loops (binary searches, copies) would only show libFuzzer new "features"
 * that mean nothing, while their comparison callbacks cost time. */
#ifdef __clang__
#define FO_NOCOV __attribute__((noinline, no_sanitize("coverage")))
#else
#define FO_NOCOV
#endif

struct blob {
    int refs;
    size_t len;
    uint8_t d[];
};

FO_NOCOV static struct blob *blob_new(const void *p, size_t n)
{
    struct blob *b = malloc(sizeof *b + n);
    FUZZ_CHECK(b);
    b->refs = 1;
    b->len = n;
    if (n)
        memcpy(b->d, p, n);
    return b;
}
FO_NOCOV static struct blob *blob_ref(struct blob *b)
{
    b->refs++;
    return b;
}
FO_NOCOV static void blob_unref(struct blob *b)
{
    if (b && --b->refs == 0)
        free(b);
}

struct ment {
    struct blob *k, *v;
    int64_t exp; /* 0 = none */
};

/* A bucket's entry array is shared (copy on write) between the committed
 * state, the write txn's and the reader's: *refs counts the states holding
 * it, and the entries' blob references belong to the array.  Copying every
 * array at each write txn's begin and freeing one at each commit was 5 % of
 * the run time. */
struct mbucket {
    bool exists;
    bool dup; /* DUPSORT: e holds (key, value) pairs in (key, value) order, each with its key's expiry */
    uint32_t id;
    size_t n, cap;
    struct ment *e;
    int *refs; /* with e */
};

struct mstate {
    struct mbucket b[FO_NB];
    uint64_t next_id;
};

/* Compares 8 bytes at a time without memcmp: under the fuzzer every memcmp
 * goes through ASan's interceptor and libFuzzer's comparison hook, a few per
 * cent of the run time for the model's binary searches alone. */
FO_NOCOV static int fo_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl, i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x, y;
        __builtin_memcpy(&x, a + i, 8);
        __builtin_memcpy(&y, b + i, 8);
        if (x != y) {
            x = __builtin_bswap64(x);
            y = __builtin_bswap64(y);
            return x < y ? -1 : 1;
        }
    }
    for (; i < n; i++)
        if (a[i] != b[i])
            return a[i] < b[i] ? -1 : 1;
    return al < bl ? -1 : al > bl;
}

/* Moves n entries from src to dst (they may overlap) one struct at a time:
 * ASan's memmove is a byte loop (internal_memmove), and shifting the tail of
 * a bucket of a few thousand entries on every insert was 4 % of the time. */
FO_NOCOV static void ment_move(struct ment *dst, const struct ment *src, size_t n)
{
    if (dst < src)
        for (size_t i = 0; i < n; i++)
            dst[i] = src[i];
    else
        for (size_t i = n; i-- > 0;)
            dst[i] = src[i];
}

/* index of the first entry >= key; *found when equal */
FO_NOCOV static size_t mb_find(const struct mbucket *mb, const uint8_t *k, size_t kl, bool *found)
{
    size_t lo = 0, hi = mb->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (fo_cmp(mb->e[mid].k->d, mb->e[mid].k->len, k, kl) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < mb->n && fo_cmp(mb->e[lo].k->d, mb->e[lo].k->len, k, kl) == 0;
    return lo;
}

/* DUPSORT: index of the first pair >= (k, v); *found when equal */
FO_NOCOV static size_t mb_find_pair(const struct mbucket *mb, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl,
                                    bool *found)
{
    size_t lo = 0, hi = mb->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const struct ment *e = &mb->e[mid];
        int c = fo_cmp(e->k->d, e->k->len, k, kl);
        if (c == 0)
            c = fo_cmp(e->v->d, e->v->len, v, vl);
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < mb->n && fo_cmp(mb->e[lo].k->d, mb->e[lo].k->len, k, kl) == 0 &&
             fo_cmp(mb->e[lo].v->d, mb->e[lo].v->len, v, vl) == 0;
    return lo;
}

/* DUPSORT: the number of pairs of the key of pair i, from i on */
FO_NOCOV static size_t mb_key_run(const struct mbucket *mb, size_t i)
{
    size_t j = i;
    while (j < mb->n && fo_cmp(mb->e[j].k->d, mb->e[j].k->len, mb->e[i].k->d, mb->e[i].k->len) == 0)
        j++;
    return j - i;
}

/* Lets go of the array (the entries too when no other state has it). */
FO_NOCOV static void mb_release(struct mbucket *mb)
{
    if (mb->refs && --*mb->refs == 0) {
        for (size_t i = 0; i < mb->n; i++) {
            blob_unref(mb->e[i].k);
            blob_unref(mb->e[i].v);
        }
        free(mb->e);
        free(mb->refs);
    }
    mb->e = NULL;
    mb->refs = NULL;
    mb->n = mb->cap = 0;
}

/* Before a change: a private copy of a shared array. */
FO_NOCOV static void mb_own(struct mbucket *mb)
{
    if (!mb->refs || *mb->refs == 1)
        return;
    size_t cap = mb->n > 16 ? mb->n : 16;
    struct ment *e = malloc(cap * sizeof *e);
    int *refs = malloc(sizeof *refs);
    FUZZ_CHECK(e && refs);
    for (size_t i = 0; i < mb->n; i++) {
        e[i] = mb->e[i];
        blob_ref(e[i].k);
        blob_ref(e[i].v);
    }
    --*mb->refs;
    *refs = 1;
    mb->e = e;
    mb->refs = refs;
    mb->cap = cap;
}

FO_NOCOV static void mb_clear(struct mbucket *mb) { mb_release(mb); }

FO_NOCOV static void mb_remove(struct mbucket *mb, size_t i)
{
    mb_own(mb);
    blob_unref(mb->e[i].k);
    blob_unref(mb->e[i].v);
    ment_move(&mb->e[i], &mb->e[i + 1], mb->n - i - 1);
    mb->n--;
}

/* DUPSORT: removes the pairs of the key of pair i (its first) */
FO_NOCOV static void mb_remove_key(struct mbucket *mb, size_t i)
{
    for (size_t n = mb_key_run(mb, i); n > 0; n--)
        mb_remove(mb, i);
}

/* DUPSORT: sets the expiry of every pair of the key of pair i (its first) */
FO_NOCOV static void mb_key_expiry(struct mbucket *mb, size_t i, int64_t exp)
{
    mb_own(mb);
    for (size_t n = mb_key_run(mb, i); n > 0; n--, i++)
        mb->e[i].exp = exp;
}

FO_NOCOV static void mb_insert(struct mbucket *mb, size_t i, struct blob *k, struct blob *v, int64_t exp)
{
    mb_own(mb);
    if (mb->n == mb->cap) {
        mb->cap = mb->cap ? 2 * mb->cap : 16;
        mb->e = realloc(mb->e, mb->cap * sizeof mb->e[0]);
        FUZZ_CHECK(mb->e);
        if (!mb->refs) {
            mb->refs = malloc(sizeof *mb->refs);
            FUZZ_CHECK(mb->refs);
            *mb->refs = 1;
        }
    }
    ment_move(&mb->e[i + 1], &mb->e[i], mb->n - i);
    mb->e[i] = (struct ment){k, blob_ref(v), exp};
    mb->n++;
}

/* Sets key to (value, exp), inserting or replacing. */
FO_NOCOV static void mb_set(struct mbucket *mb, const uint8_t *k, size_t kl, struct blob *v, int64_t exp)
{
    bool found;
    size_t i = mb_find(mb, k, kl, &found);
    mb_own(mb);
    if (found) {
        blob_unref(mb->e[i].v);
        mb->e[i].v = blob_ref(v);
        mb->e[i].exp = exp;
        return;
    }
    if (mb->n == mb->cap) {
        mb->cap = mb->cap ? 2 * mb->cap : 16;
        mb->e = realloc(mb->e, mb->cap * sizeof mb->e[0]);
        FUZZ_CHECK(mb->e);
        if (!mb->refs) {
            mb->refs = malloc(sizeof *mb->refs);
            FUZZ_CHECK(mb->refs);
            *mb->refs = 1;
        }
    }
    ment_move(&mb->e[i + 1], &mb->e[i], mb->n - i);
    mb->e[i] = (struct ment){blob_new(k, kl), blob_ref(v), exp};
    mb->n++;
}

FO_NOCOV static void ms_free(struct mstate *s)
{
    for (int b = 0; b < FO_NB; b++)
        mb_release(&s->b[b]);
    memset(s, 0, sizeof *s);
}

FO_NOCOV static void ms_copy(struct mstate *dst, const struct mstate *src)
{
    *dst = *src;
    for (int b = 0; b < FO_NB; b++)
        if (dst->b[b].refs)
            ++*dst->b[b].refs;
}

static bool live(int64_t exp, int64_t now) { return exp == 0 || exp > now; }

/* ---- the run ---- */
struct fo {
    const uint8_t *p;
    size_t n;
    keel_db *db;
    keel_options opts;
    const char *path;
    int64_t clk;
    size_t max_key;
    size_t max_pair; /* keel_max_pair_size */
    bool dupmode;    /* byte 0 bit 4: DUPSORT buckets, keys 48-67, opcode bytes 224-239 */
    size_t bytes; /* value bytes written so far */
    int ppc;
    struct mstate C; /* committed */
    /* the write txn */
    keel_txn *w;
    struct mstate W;
    int64_t wnow;
    bool wchanged; /* the txn changed something: its commit purges (purge_per_commit) */
    bool wsure;    /* ... and certainly so for keel too (a named bucket was written) */
    /* the read txn */
    keel_txn *r;
    struct mstate S;
    int64_t rnow;
    /* bucket handles: the write side's (good in any txn on the newest
     * commit), and the read txn's.  When a write txn ends with a bucket
     * absent, its handle dies, but the read txn begun before keeps its
     * view, so it keeps the handles it had (design.md section 11). */
    bool known[FO_NB], rknown[FO_NB];
    keel_bucket h[FO_NB], rh[FO_NB];
    /* the write txn's cursor */
    keel_cursor *cur;
    int cur_b;
    bool cur_on;      /* positioned (not unset) */
    bool cur_dup;     /* its bucket's kind when it was opened */
    struct blob *cur_key, *cur_val; /* the position: a key, or in a DUPSORT bucket a pair */
    /* nested txns: f->w is the innermost; lv[i] the txns below it, each
     * with what the write side's model and handles were when its child began */
    bool nested; /* byte 0 bit 5 */
    int depth;
    struct fo_level {
        keel_txn *txn;
        struct mstate W;
        bool known[FO_NB], wchanged, wsure;
        keel_bucket h[FO_NB];
    } lv[FO_MAX_NEST];
    int step;
    int reopens, checks; /* mid-stream ones so far (FO_MAX_REOPENS, FO_MAX_CHECKS) */
    uint8_t *keybuf; /* 70000 bytes, static: a fresh calloc that size per run
                      * was an mmap + page faults under ASan */
};

#define EXPECT(f, got, want)                                                                              \
    do {                                                                                                  \
        int g_ = (got), w_ = (want);                                                                      \
        if (g_ != w_)                                                                                     \
            fuzz_fail(__FILE__, __LINE__, "step %d: %s answered %d (%s), the model says %d (%s)", (f)->step, \
                      #got, g_, keel_strerror(g_), w_, keel_strerror(w_));                                \
    } while (0)

static unsigned take(struct fo *f)
{
    if (!f->n)
        return 0;
    f->n--;
    return *f->p++;
}

static int64_t fo_clock(void *ctx) { return *(const int64_t *)ctx; }

/* Key selector -> key bytes in f->keybuf. */
static size_t make_key(struct fo *f, unsigned sel)
{
    uint8_t *k = f->keybuf;
    if (sel < 8) {
        k[0] = (uint8_t)('a' + sel);
        return 1;
    }
    if (sel < 24)
        return (size_t)sprintf((char *)k, "key%02u", sel - 8);
    if (sel < 32) { /* a long shared prefix: long separators */
        memset(k, 'p', 100);
        return 100 + (size_t)sprintf((char *)k + 100, "%u", sel);
    }
    if (sel < 36) {
        size_t n = 800 + (sel - 32) * 50;
        if (n > f->max_key)
            n = f->max_key;
        memset(k, 'L', n);
        k[n - 1] = (uint8_t)sel;
        return n;
    }
    if (sel == 36) {
        memset(k, 'M', f->max_key);
        return f->max_key;
    }
    if (sel == 37) {
        memset(k, 'M', f->max_key + 1);
        return f->max_key + 1; /* too long */
    }
    if (sel == 38)
        return 0; /* empty: too short */
    if (sel < 48) {
        static const uint8_t bin[9][4] = {{0}, {0, 0}, {0xff}, {0xff, 0xff, 0xff}, {0, 0xff}, {0xff, 0},
                                          {0x7f}, {0x80, 1}, {1, 2, 3, 4}};
        static const size_t bl[9] = {1, 2, 1, 3, 2, 2, 1, 2, 4};
        memcpy(k, bin[sel - 39], bl[sel - 39]);
        return bl[sel - 39];
    }
    if (f->dupmode && sel < 68) { /* zero and 0xFF bytes (escaped in pair keys), near the pair limit */
        if (sel < 60) {
            static const uint8_t zk[12][5] = {{'a', 0},    {'a', 0, 0},    {'a', 0, 'b'}, {'a', 0xff},
                                              {0, 0xff, 0}, {0xff, 0},      {0, 0, 0, 0}, {'a', 0, 0xff},
                                              {1, 0},       {0xfe, 0xff},   {0, 1},       {0, 0, 0xff}};
            static const size_t zl[12] = {2, 3, 3, 2, 3, 2, 4, 3, 2, 2, 2, 3};
            memcpy(k, zk[sel - 48], zl[sel - 48]);
            return zl[sel - 48];
        }
        if (sel < 64) { /* all zeros: escaped twice as long, about the pair limit */
            size_t n = f->max_pair / 2 - 2 + (sel - 60);
            memset(k, 0, n);
            return n;
        }
        /* the longest key, ending in 1, 2, 13 or 24 zero bytes: values of up to 23, 22, 11, 0 bytes fit */
        static const size_t nz[4] = {1, 2, 13, 24};
        memset(k, 'M', f->max_key);
        memset(k + f->max_key - nz[sel - 64], 0, nz[sel - 64]);
        return f->max_key;
    }
    return (size_t)sprintf((char *)k, "r%05u", (sel - 48) * 5);
}

/* the length of a key's escaped form in a pair key (format.h): each zero byte counts twice */
static size_t esc_len(const uint8_t *k, size_t kl)
{
    size_t n = kl;
    for (size_t i = 0; i < kl; i++)
        n += k[i] == 0;
    return n;
}

static bool pair_fits(const struct fo *f, const uint8_t *k, size_t kl, size_t vl)
{
    return esc_len(k, kl) + vl <= f->max_pair;
}

/* Range key i: "r%05u", or (long_ = 1, 2) the same after 200 or 700 bytes
 * of 'q'.  Long keys make long separators (a 4 KiB branch page holds 5 of
 * 700 bytes): trees of three and four levels, branch splits and merges,
 * from a few dozen keys, not from the hundreds of leaves that short keys
 * need (more values than FO_BYTES_BUDGET allows). */
static size_t range_key(struct fo *f, unsigned i, unsigned long_)
{
    size_t pre = long_ == 0 ? 0 : long_ == 1 ? 200 : 700;
    memset(f->keybuf, 'q', pre);
    return pre + (size_t)sprintf((char *)f->keybuf + pre, "r%05u", i);
}

/* Value selector -> a new blob.  Selector 12 sizes the value so that the
 * leaf node of a key of klen bytes is exactly as big as an inline node may
 * be (give or take a byte or the 8 of an expiry time). */
/* The value bytes: one table, filled once; a value of pattern pat and n
 * bytes is fo_pattern[pat .. pat+n).  Values of different patterns differ
 * at every byte (neighbouring bytes differ by 31 or 32), so a value swapped
 * for another of the same length is seen.  Filling a buffer per value was a
 * sixth of the run time (a byte loop under ASan) and told the fuzzer nothing. */
#define FO_VAL_MAX 70000
static uint8_t fo_pattern[FO_VAL_MAX + 256];

static void fill_pattern(void)
{
    for (size_t i = 0; i < sizeof fo_pattern; i++)
        fo_pattern[i] = (uint8_t)(i * 31 + (i >> 8));
}

/* A value for a DUPSORT bucket: small ones from a small set (so pairs are
 * often there already), zero and 0xFF bytes, prefixes of each other, and
 * values that just fit beside the key k (escaped length eklen) or are one
 * byte too long. */
static struct blob *make_dval(struct fo *f, unsigned sel, unsigned pat, size_t eklen)
{
    static const char *const small[10] = {"", "\0", "\0\0", "\xff", "\xff\xff", "a", "a\0", "ab", "b", "\0\xff"};
    static const size_t small_len[10] = {0, 1, 2, 1, 2, 1, 2, 2, 1, 2};
    sel %= 16;
    if (sel < 10)
        return blob_new(small[sel], small_len[sel]);
    size_t n;
    switch (sel) {
    case 10: n = 20; pat %= 3; break;
    case 11: n = 300; pat %= 2; break;
    case 12: n = f->max_pair > eklen ? f->max_pair - eklen : 0; break; /* fits exactly */
    case 13: n = f->max_pair >= eklen ? f->max_pair - eklen + 1 : 0; break; /* one byte too long */
    case 14: n = 1000; pat %= 4; break;
    default: n = 100; pat %= 8; break;
    }
    if (f->bytes + n > FO_BYTES_BUDGET && n > 20 && sel != 13)
        n = 20;
    f->bytes += n;
    return blob_new(fo_pattern + pat % 256, n);
}

static struct blob *make_val(struct fo *f, unsigned sel, unsigned pat, size_t klen)
{
    static const size_t lens[15] = {0, 1, 3, 8, 20, 50, 100, 300, 1000, 1900, 2100, 4000, 9000, 20000, 70000};
    static const char *const nums[16] = {"0",   "1",  "-1",   "42", "-9223372036854775808", "9223372036854775807",
                                         "007", "-0", "+1",   " 1", "1a", "", "99999999999999999999", "-",
                                         "10",  "-9223372036854775807"};
    if (sel % 16 == 15) {
        const char *s = nums[pat % 16];
        return blob_new(s, strlen(s));
    }
    size_t n = lens[sel % 16];
    if (sel % 16 == 12) {
        size_t inline_max = (f->opts.page_size - 16) / 2 - 2;
        static const int adj[6] = {0, -1, 1, -8, 8, -9};
        long want = (long)inline_max - 8 - (long)klen + adj[pat % 6];
        n = want > 0 ? (size_t)want : 0;
    }
    if (f->bytes + n > FO_BYTES_BUDGET)
        n = n > 20 ? 20 : n;
    f->bytes += n;
    return blob_new(fo_pattern + pat % 256, n);
}

/* A write to bucket b succeeded.  keel commits (and purges) only when the
 * txn holds dirty or freed pages or a changed bucket descriptor: a named
 * bucket is marked on every write, but changes to trees that were empty at
 * begin can cancel out (put then delete in an empty default bucket), so
 * only a write to a named bucket that existed when the txn began makes it
 * certain.  (One created in this txn can be dropped again in it, leaving
 * nothing to commit: a fuzz_ops finding in this model, not in keel,
 * fuzz/regress/fuzz_ops/bucket-created-and-dropped-in-one-txn.) */
static void changed(struct fo *f, int b)
{
    f->wchanged = true;
    if (b != 0 && f->C.b[b].exists && f->C.b[b].id == f->W.b[b].id)
        f->wsure = true;
}

static bool key_ok(const struct fo *f, size_t kl) { return kl >= 1 && kl <= f->max_key; }

static void check_val(struct fo *f, keel_val got, const struct blob *want, const char *what)
{
    if (got.len != want->len || (want->len && memcmp(got.data, want->d, want->len)))
        fuzz_fail(__FILE__, __LINE__, "step %d: %s: value of %zu bytes differs from the model's %zu bytes", f->step,
                  what, got.len, want->len);
}

/* ---- txns ---- */
static void close_cursor(struct fo *f)
{
    if (f->cur)
        keel_cursor_close(f->cur);
    f->cur = NULL;
    blob_unref(f->cur_key);
    blob_unref(f->cur_val);
    f->cur_key = f->cur_val = NULL;
    f->cur_on = false;
}

static void ensure_w(struct fo *f)
{
    if (f->w)
        return;
    EXPECT(f, keel_begin(f->db, 0, &f->w), 0);
    ms_copy(&f->W, &f->C);
    f->wnow = f->clk;
    f->wchanged = f->wsure = false;
}

struct exp_ent {
    int64_t exp;
    uint32_t id;
    int b;
    struct blob *k;
};

FO_NOCOV static int cmp_exp(const void *a, const void *b)
{
    const struct exp_ent *x = a, *y = b;
    if (x->exp != y->exp)
        return x->exp < y->exp ? -1 : 1;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    return fo_cmp(x->k->d, x->k->len, y->k->d, y->k->len);
}

/* keel's purge: up to max expired entries, (expiry, bucket id, key) order.
 * *named (may be NULL) tells whether a named bucket lost an entry. */
static size_t model_purge(struct mstate *s, int64_t now, size_t max, bool *named)
{
    if (named)
        *named = false;
    size_t n = 0, cap = 0;
    struct exp_ent *v = NULL;
    for (int b = 0; b < FO_NB; b++) {
        if (!s->b[b].exists)
            continue;
        for (size_t i = 0; i < s->b[b].n; i++) {
            struct ment *e = &s->b[b].e[i];
            if (e->exp == 0 || e->exp > now)
                continue;
            if (s->b[b].dup && i > 0 && fo_cmp(e->k->d, e->k->len, e[-1].k->d, e[-1].k->len) == 0)
                continue; /* a DUPSORT key's pairs go together: one expiry-index entry per key */
            if (n == cap) {
                cap = cap ? 2 * cap : 32;
                v = realloc(v, cap * sizeof *v);
                FUZZ_CHECK(v);
            }
            v[n++] = (struct exp_ent){e->exp, s->b[b].id, b, blob_ref(e->k)};
        }
    }
    if (n)
        qsort(v, n, sizeof *v, cmp_exp);
    size_t done = n < max ? n : max;
    for (size_t i = 0; i < done; i++) {
        bool found;
        struct mbucket *mb = &s->b[v[i].b];
        size_t at = mb_find(mb, v[i].k->d, v[i].k->len, &found);
        FUZZ_CHECK(found);
        if (mb->dup)
            mb_remove_key(mb, at);
        else
            mb_remove(mb, at);
        if (named && v[i].b != 0)
            *named = true;
    }
    for (size_t i = 0; i < n; i++)
        blob_unref(v[i].k);
    free(v);
    return done;
}

static bool handle(struct fo *f, keel_txn *txn, const struct mstate *s, int b);

static bool *known_in(struct fo *f, const keel_txn *txn) { return txn == f->r ? f->rknown : f->known; }
static keel_bucket *handles_in(struct fo *f, const keel_txn *txn) { return txn == f->r ? f->rh : f->h; }

/* After a write txn ended: the handles of the buckets absent from the newest commit (model s) died. */
static void retire_handles(struct fo *f, const struct mstate *s)
{
    for (int b = 1; b < FO_NB; b++)
        if (!s->b[b].exists)
            f->known[b] = false;
}

/* Did the commit just made purge (giving P) or not (giving f->W)?  Only
 * asked when the model cannot tell (see changed()): the on-disk entry
 * counts decide, and must match one of the two. */
static bool commit_purged(struct fo *f, const struct mstate *P)
{
    keel_txn *r;
    EXPECT(f, keel_begin(f->db, KEEL_RDONLY, &r), 0);
    bool is_p = true, is_w = true;
    for (int b = 0; b < FO_NB; b++) {
        if (!f->W.b[b].exists)
            continue;
        if (!f->known[b])
            FUZZ_CHECK(handle(f, r, &f->W, b));
        keel_stat st;
        EXPECT(f, keel_bucket_stat(r, f->h[b], &st), 0);
        is_p = is_p && st.entries == P->b[b].n;
        is_w = is_w && st.entries == f->W.b[b].n;
    }
    keel_abort(r);
    if (!is_p && !is_w)
        fuzz_fail(__FILE__, __LINE__, "step %d: after commit the entry counts match neither a purge nor none",
                  f->step);
    return is_p;
}

/* ---- nested txns ---- */
static void nest_begin(struct fo *f)
{
    ensure_w(f);
    if (f->depth == FO_MAX_NEST)
        return;
    close_cursor(f); /* the parent's cursor would only answer KEEL_BADTXN */
    struct fo_level *l = &f->lv[f->depth++];
    l->txn = f->w;
    ms_copy(&l->W, &f->W);
    memcpy(l->known, f->known, sizeof l->known);
    memcpy(l->h, f->h, sizeof l->h);
    l->wchanged = f->wchanged;
    l->wsure = f->wsure;
    EXPECT(f, keel_begin_nested(l->txn, &f->w), 0);
    keel_val v;
    EXPECT(f, keel_get(l->txn, KEEL_DEFAULT_BUCKET, (keel_val){"a", 1}, &v), KEEL_BADTXN); /* a shell now */
}

/* The innermost child's end: its changes kept, or the parent's state and
 * handles as they were (a handle the child made for a bucket its parent
 * lacks is dead). */
static void nest_end(struct fo *f, bool commit)
{
    close_cursor(f);
    struct fo_level *l = &f->lv[--f->depth];
    if (commit) {
        EXPECT(f, keel_commit(f->w), 0);
        ms_free(&l->W);
    } else {
        keel_abort(f->w);
        ms_free(&f->W);
        f->W = l->W;
        memcpy(f->known, l->known, sizeof f->known);
        memcpy(f->h, l->h, sizeof f->h);
        f->wchanged = l->wchanged;
        f->wsure = l->wsure;
    }
    memset(&l->W, 0, sizeof l->W);
    f->w = l->txn;
}

static void op_nested(struct fo *f, unsigned raw)
{
    if (raw < 248)
        nest_begin(f);
    else if (f->depth)
        nest_end(f, raw < 252);
}

static void do_commit(struct fo *f)
{
    ensure_w(f);
    while (f->depth)
        nest_end(f, true);
    close_cursor(f);
    EXPECT(f, keel_commit(f->w), 0);
    f->w = NULL;
    retire_handles(f, &f->W);
    if (f->wchanged && f->ppc > 0) {
        struct mstate P;
        ms_copy(&P, &f->W);
        if (model_purge(&P, f->wnow, (size_t)f->ppc, NULL)) {
            bool purged = f->wsure || commit_purged(f, &P);
            if (purged) {
                ms_free(&f->W);
                f->W = P;
                memset(&P, 0, sizeof P);
            }
        }
        ms_free(&P);
    }
    ms_free(&f->C);
    f->C = f->W;
    memset(&f->W, 0, sizeof f->W);
}

static void do_abort(struct fo *f)
{
    close_cursor(f);
    if (!f->w)
        return;
    if (f->depth) { /* the write txn, and keel ends its children with it */
        f->w = f->lv[0].txn;
        while (f->depth)
            ms_free(&f->lv[--f->depth].W);
    }
    keel_abort(f->w);
    f->w = NULL;
    ms_free(&f->W);
    retire_handles(f, &f->C);
}

static void end_reader(struct fo *f)
{
    if (!f->r)
        return;
    keel_abort(f->r);
    f->r = NULL;
    ms_free(&f->S);
}

static void do_open(struct fo *f)
{
    EXPECT(f, keel_open(f->path, &f->opts, &f->db), 0);
    memset(f->known, 0, sizeof f->known);
    f->known[0] = true;
    f->h[0] = KEEL_DEFAULT_BUCKET;
    f->max_key = keel_max_key_size(f->db);
    f->max_pair = keel_max_pair_size(f->db);
}

static void do_reopen(struct fo *f)
{
    end_reader(f);
    do_abort(f);
    keel_close(f->db);
    f->db = NULL;
    do_open(f);
}

/* The handle of bucket b in txn (a write or read txn whose model is s);
 * false when the bucket is absent (checked against the model). */
static bool handle(struct fo *f, keel_txn *txn, const struct mstate *s, int b)
{
    if (known_in(f, txn)[b])
        return true;
    keel_bucket h;
    int rc = keel_bucket_open(txn, fo_names[b], 0, &h);
    EXPECT(f, rc, s->b[b].exists ? 0 : KEEL_NOTFOUND);
    if (rc == 0) {
        known_in(f, txn)[b] = true;
        handles_in(f, txn)[b] = h;
    }
    return rc == 0;
}

/* ---- comparing a whole bucket ---- */
static void verify_bucket(struct fo *f, keel_txn *txn, const struct mstate *s, int64_t now, int b)
{
    if (!handle(f, txn, s, b))
        return;
    const struct mbucket *mb = &s->b[b];
    keel_cursor *c;
    int rc = keel_cursor_open(txn, handles_in(f, txn)[b], &c);
    EXPECT(f, rc, mb->exists ? 0 : KEEL_BADBUCKET);
    if (rc)
        return;
    keel_val k, v;
    size_t i = 0;
    for (rc = keel_cursor_first(c, &k, &v); rc == 0; rc = keel_cursor_next(c, &k, &v), i++) {
        while (i < mb->n && !live(mb->e[i].exp, now))
            i++;
        if (i >= mb->n)
            fuzz_fail(__FILE__, __LINE__, "step %d: bucket %d: the cursor found more entries than the model", f->step,
                      b);
        if (fo_cmp(k.data, k.len, mb->e[i].k->d, mb->e[i].k->len))
            fuzz_fail(__FILE__, __LINE__, "step %d: bucket %d: key %zu differs", f->step, b, i);
        check_val(f, v, mb->e[i].v, "forward walk");
    }
    EXPECT(f, rc, KEEL_NOTFOUND);
    while (i < mb->n && !live(mb->e[i].exp, now))
        i++;
    if (i != mb->n)
        fuzz_fail(__FILE__, __LINE__, "step %d: bucket %d: the cursor missed entries", f->step, b);
    size_t j = mb->n;
    for (rc = keel_cursor_last(c, &k, &v); rc == 0; rc = keel_cursor_prev(c, &k, &v)) {
        while (j > 0 && !live(mb->e[j - 1].exp, now))
            j--;
        FUZZ_CHECK(j > 0);
        j--;
        if (fo_cmp(k.data, k.len, mb->e[j].k->d, mb->e[j].k->len))
            fuzz_fail(__FILE__, __LINE__, "step %d: bucket %d: backward key %zu differs", f->step, b, j);
        check_val(f, v, mb->e[j].v, "backward walk");
    }
    EXPECT(f, rc, KEEL_NOTFOUND);
    while (j > 0 && !live(mb->e[j - 1].exp, now))
        j--;
    FUZZ_CHECK(j == 0);
    keel_cursor_close(c);
    unsigned kind = 99;
    EXPECT(f, keel_bucket_flags(txn, handles_in(f, txn)[b], &kind), 0);
    FUZZ_CHECK(kind == (mb->dup ? KEEL_DUPSORT : 0u));
    keel_stat st;
    EXPECT(f, keel_bucket_stat(txn, handles_in(f, txn)[b], &st), 0);
    if (st.entries != mb->n) /* every entry on disk, expired ones too */
        fuzz_fail(__FILE__, __LINE__, "step %d: bucket %d: stat says %llu entries, the model %zu", f->step, b,
                  (unsigned long long)st.entries, mb->n);
}

struct list_ctx {
    int n;
    char names[4][16];
};

static int list_cb(const char *name, void *ctx)
{
    struct list_ctx *l = ctx;
    FUZZ_CHECK(l->n < 4 && strlen(name) < 16);
    strcpy(l->names[l->n++], name);
    return 0;
}

static void verify_all(struct fo *f, keel_txn *txn, const struct mstate *s, int64_t now)
{
    for (int b = 0; b < FO_NB; b++)
        verify_bucket(f, txn, s, now, b);
    struct list_ctx l = {0};
    EXPECT(f, keel_bucket_list(txn, list_cb, &l), 0);
    int want = 0;
    for (int b = 1; b < FO_NB; b++) {
        if (!s->b[b].exists)
            continue;
        FUZZ_CHECK(want < l.n && strcmp(l.names[want], fo_names[b]) == 0);
        want++;
    }
    FUZZ_CHECK(want == l.n);
}

static void check_db(struct fo *f)
{
    uint64_t problems;
    EXPECT(f, keel_check(f->db, NULL, NULL, &problems), 0);
    if (problems)
        fuzz_fail(__FILE__, __LINE__, "step %d: keel_check found %llu problems", f->step, (unsigned long long)problems);
}

/* ---- single-key operations in the write txn ---- */
static int wbucket(struct fo *f, int b) /* 0: usable; else the code every op answers */
{
    if (!f->known[b] && !handle(f, f->w, &f->W, b))
        return -1; /* no handle: skip */
    return f->W.b[b].exists ? 0 : KEEL_BADBUCKET;
}

/* A DUPSORT put of (k, v) in the write txn's model, after the argument
 * checks: keel's answer.  at: the key's new expiry (put_ttl), 0 for a plain
 * put, which keeps the key's.  A key whose pairs have expired is absent:
 * they go first. */
static int model_dput(struct fo *f, int b, const uint8_t *k, size_t kl, struct blob *v, unsigned flags, int64_t at)
{
    struct mbucket *mb = &f->W.b[b];
    if (!pair_fits(f, k, kl, v->len))
        return KEEL_BADVALSIZE;
    bool found, pf;
    size_t i = mb_find(mb, k, kl, &found);
    bool present = found && live(mb->e[i].exp, f->wnow);
    if (found && !present)
        mb_remove_key(mb, i);
    if (present && (flags & KEEL_NOOVERWRITE))
        return KEEL_EXISTS;
    size_t j = mb_find_pair(mb, k, kl, v->d, v->len, &pf);
    if (pf && (flags & KEEL_NODUPDATA))
        return KEEL_EXISTS;
    int64_t key_exp = present ? mb->e[i].exp : 0, exp = at ? at : key_exp;
    if (!pf)
        mb_insert(mb, j, present ? blob_ref(mb->e[i].k) : blob_new(k, kl), v, exp);
    if (present && exp != key_exp)
        mb_key_expiry(mb, i, exp);
    changed(f, b); /* keel marks the bucket even when the pair was there */
    return 0;
}

/* put / put_ttl in a DUPSORT bucket b (present in the write txn) */
static void op_dput(struct fo *f, int b, size_t kl, bool ttl, unsigned vs, unsigned pat, unsigned fl)
{
    static const unsigned pflags[8] = {0,
                                       KEEL_NOOVERWRITE,
                                       KEEL_NODUPDATA,
                                       KEEL_APPEND,
                                       KEEL_NOOVERWRITE | KEEL_NODUPDATA,
                                       KEEL_KEEPTTL, /* a plain put keeps the key's expiry anyway */
                                       KEEL_APPEND | KEEL_NODUPDATA,
                                       0};
    static const unsigned tflags[4] = {0, KEEL_NOOVERWRITE, KEEL_NODUPDATA, KEEL_NOOVERWRITE | KEEL_NODUPDATA};
    static const int64_t ttls[8] = {1, 2, 10, 100, 1000, 100000, 0, INT64_MAX};
    struct blob *v = make_dval(f, vs, pat, esc_len(f->keybuf, kl));
    unsigned flags = ttl ? tflags[fl & 3] : pflags[fl % 8];
    int64_t t = ttls[(fl >> 2) % 8], at = 0;
    keel_val key = {f->keybuf, kl}, val = {v->d, v->len};
    int rc = ttl ? keel_put_ttl(f->w, f->h[b], key, val, t, flags) : keel_put(f->w, f->h[b], key, val, flags);
    int want;
    if (!key_ok(f, kl))
        want = KEEL_BADVALSIZE;
    else if (ttl && t <= 0)
        want = KEEL_BADARG;
    else if (ttl && __builtin_add_overflow(f->wnow, t, &at))
        want = KEEL_OVERFLOW;
    else
        want = model_dput(f, b, f->keybuf, kl, v, flags, at);
    EXPECT(f, rc, want);
    blob_unref(v);
}

static void op_put(struct fo *f, bool ttl)
{
    int b = (int)(take(f) % FO_NB);
    size_t kl = make_key(f, take(f));
    unsigned vs = take(f), pat = take(f), fl = take(f);
    ensure_w(f);
    int bs = wbucket(f, b);
    if (bs < 0)
        return;
    if (f->W.b[b].dup) {
        op_dput(f, b, kl, ttl, vs, pat, fl);
        return;
    }
    struct blob *v = make_val(f, vs, pat, kl);
    static const int64_t ttls[8] = {1, 2, 10, 100, 1000, 100000, 0, INT64_MAX};
    unsigned flags = ttl ? ((fl & 1) ? KEEL_NOOVERWRITE : 0)
                         : (unsigned[]){0, KEEL_NOOVERWRITE, KEEL_KEEPTTL, KEEL_APPEND}[fl % 4];
    int64_t t = ttls[(fl >> 1) % 8];
    keel_val key = {f->keybuf, kl}, val = {v->d, v->len};
    int rc = ttl ? keel_put_ttl(f->w, f->h[b], key, val, t, flags) : keel_put(f->w, f->h[b], key, val, flags);
    int want;
    int64_t at = 0;
    if (!key_ok(f, kl))
        want = KEEL_BADVALSIZE;
    else if (bs)
        want = bs;
    else if (ttl && t <= 0)
        want = KEEL_BADARG;
    else if (ttl && __builtin_add_overflow(f->wnow, t, &at))
        want = KEEL_OVERFLOW;
    else {
        struct mbucket *mb = &f->W.b[b];
        bool found;
        size_t i = mb_find(mb, f->keybuf, kl, &found);
        bool present = found && live(mb->e[i].exp, f->wnow);
        if ((flags & KEEL_NOOVERWRITE) && present)
            want = KEEL_EXISTS;
        else {
            want = 0;
            int64_t exp = ttl ? at : ((flags & KEEL_KEEPTTL) && present ? mb->e[i].exp : 0);
            mb_set(mb, f->keybuf, kl, v, exp);
            changed(f, b);
        }
    }
    EXPECT(f, rc, want);
    blob_unref(v);
}

static void op_del(struct fo *f)
{
    int b = (int)(take(f) % FO_NB);
    size_t kl = make_key(f, take(f));
    ensure_w(f);
    int bs = wbucket(f, b);
    if (bs < 0)
        return;
    int rc = keel_del(f->w, f->h[b], (keel_val){f->keybuf, kl});
    int want;
    if (!key_ok(f, kl))
        want = KEEL_BADVALSIZE;
    else if (bs)
        want = bs;
    else {
        struct mbucket *mb = &f->W.b[b];
        bool found;
        size_t i = mb_find(mb, f->keybuf, kl, &found);
        if (!found || !live(mb->e[i].exp, f->wnow))
            want = KEEL_NOTFOUND; /* an expired key is absent: it stays for purge */
        else {
            want = 0;
            if (mb->dup)
                mb_remove_key(mb, i); /* every value */
            else
                mb_remove(mb, i);
            changed(f, b);
        }
    }
    EXPECT(f, rc, want);
}

/* get, ttl and expiry_at of one key in a txn whose model is s at time now */
static void check_get(struct fo *f, keel_txn *txn, const struct mstate *s, int64_t now, int b, size_t kl)
{
    keel_val key = {f->keybuf, kl}, v;
    keel_bucket h = handles_in(f, txn)[b];
    int rc = keel_get(txn, h, key, &v);
    int64_t ttl = 0, at = 0;
    int rc2 = keel_ttl(txn, h, key, &ttl);
    int rc3 = keel_expiry_at(txn, h, key, &at);
    int want;
    const struct ment *e = NULL;
    if (!key_ok(f, kl))
        want = KEEL_BADVALSIZE;
    else if (!s->b[b].exists)
        want = KEEL_BADBUCKET;
    else {
        bool found;
        size_t i = mb_find(&s->b[b], f->keybuf, kl, &found);
        if (found && live(s->b[b].e[i].exp, now)) {
            e = &s->b[b].e[i];
            want = 0;
        } else
            want = KEEL_NOTFOUND;
    }
    EXPECT(f, rc, want);
    EXPECT(f, rc2, want);
    EXPECT(f, rc3, want);
    if (e) {
        check_val(f, v, e->v, "get");
        FUZZ_CHECK(ttl == (e->exp ? e->exp - now : -1));
        FUZZ_CHECK(at == e->exp);
    }
}

static void op_get(struct fo *f)
{
    int b = (int)(take(f) % FO_NB);
    size_t kl = make_key(f, take(f));
    ensure_w(f);
    if (wbucket(f, b) < 0)
        return;
    check_get(f, f->w, &f->W, f->wnow, b, kl);
}

/* Redis's integer rule, written again from the spec */
static bool model_int(const struct blob *v, int64_t *out)
{
    size_t n = v->len;
    const uint8_t *s = v->d;
    if (n == 0 || n > 20)
        return false;
    bool neg = s[0] == '-';
    size_t i = neg ? 1 : 0;
    if (i == n)
        return false;
    if (s[i] == '0') {
        if (n != 1)
            return false;
        *out = 0;
        return true;
    }
    __int128 x = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        x = x * 10 + (s[i] - '0');
    }
    if (neg)
        x = -x;
    if (x > INT64_MAX || x < INT64_MIN)
        return false;
    *out = (int64_t)x;
    return true;
}

static void op_cas(struct fo *f)
{
    int b = (int)(take(f) % FO_NB);
    size_t kl = make_key(f, take(f));
    unsigned mode = take(f) % 3, vs = take(f), pat = take(f);
    ensure_w(f);
    int bs = wbucket(f, b);
    if (bs < 0)
        return;
    struct mbucket *mb = &f->W.b[b];
    bool found = false;
    size_t i = key_ok(f, kl) && !bs ? mb_find(mb, f->keybuf, kl, &found) : 0;
    bool present = found && live(mb->e[i].exp, f->wnow);
    struct blob *nv = make_val(f, vs, pat, kl);
    struct blob *expv = NULL;
    if (mode == 1)
        expv = present ? blob_ref(mb->e[i].v) : make_val(f, vs + 1, pat, kl);
    else if (mode == 2)
        expv = make_val(f, pat, vs, kl);
    keel_val ev = expv ? (keel_val){expv->d, expv->len} : (keel_val){0};
    int rc = keel_cas(f->w, f->h[b], (keel_val){f->keybuf, kl}, expv ? &ev : NULL, (keel_val){nv->d, nv->len});
    int want;
    if (!key_ok(f, kl))
        want = KEEL_BADVALSIZE;
    else if (bs)
        want = bs;
    else if (mb->dup)
        want = KEEL_INCOMPATIBLE;
    else if (!expv ? present
                   : (!present || mb->e[i].v->len != expv->len ||
                      (expv->len && memcmp(mb->e[i].v->d, expv->d, expv->len))))
        want = KEEL_MISMATCH;
    else {
        want = 0;
        mb_set(mb, f->keybuf, kl, nv, present ? mb->e[i].exp : 0);
        changed(f, b);
    }
    EXPECT(f, rc, want);
    blob_unref(nv);
    blob_unref(expv);
}

static void op_incr(struct fo *f)
{
    int b = (int)(take(f) % FO_NB);
    size_t kl = make_key(f, take(f));
    static const int64_t deltas[8] = {1, -1, 5, 1000, INT64_MAX, INT64_MIN, 0, -7};
    int64_t d = deltas[take(f) % 8];
    ensure_w(f);
    int bs = wbucket(f, b);
    if (bs < 0)
        return;
    int64_t res = 0;
    int rc = keel_incr(f->w, f->h[b], (keel_val){f->keybuf, kl}, d, &res);
    int want;
    int64_t v = 0;
    if (!key_ok(f, kl))
        want = KEEL_BADVALSIZE;
    else if (bs)
        want = bs;
    else if (f->W.b[b].dup)
        want = KEEL_INCOMPATIBLE;
    else {
        struct mbucket *mb = &f->W.b[b];
        bool found;
        size_t i = mb_find(mb, f->keybuf, kl, &found);
        bool present = found && live(mb->e[i].exp, f->wnow);
        if (present && !model_int(mb->e[i].v, &v))
            want = KEEL_NOTNUMBER;
        else if (__builtin_add_overflow(v, d, &v))
            want = KEEL_OVERFLOW;
        else {
            want = 0;
            char buf[32];
            int n = snprintf(buf, sizeof buf, "%lld", (long long)v);
            struct blob *nb = blob_new(buf, (size_t)n);
            mb_set(mb, f->keybuf, kl, nb, present ? mb->e[i].exp : 0);
            blob_unref(nb);
            changed(f, b);
        }
    }
    EXPECT(f, rc, want);
    if (want == 0)
        FUZZ_CHECK(res == v);
}

static void op_expire(struct fo *f)
{
    int b = (int)(take(f) % FO_NB);
    size_t kl = make_key(f, take(f));
    unsigned mode = take(f) % 3, sel = take(f);
    static const int64_t ttls[8] = {1, 2, 10, 100, 1000, 100000, 0, INT64_MAX};
    static const int64_t rel[6] = {-10, 0, 10, 1000, 1, -1000000};
    ensure_w(f);
    int bs = wbucket(f, b);
    if (bs < 0)
        return;
    keel_val key = {f->keybuf, kl};
    int rc, want = 0;
    int64_t target = 0; /* the new expiry */
    if (mode == 0) {
        int64_t t = ttls[sel % 8];
        rc = keel_expire(f->w, f->h[b], key, t);
        if (t <= 0)
            want = KEEL_BADARG;
        else if (__builtin_add_overflow(f->wnow, t, &target))
            want = KEEL_OVERFLOW;
    } else if (mode == 1) {
        target = sel % 7 == 6 ? 0 : f->wnow + rel[sel % 7 % 6];
        rc = keel_expire_at(f->w, f->h[b], key, target);
        if (target <= 0)
            want = KEEL_BADARG;
    } else {
        rc = keel_persist(f->w, f->h[b], key);
    }
    if (!key_ok(f, kl))
        want = KEEL_BADVALSIZE;
    else if (bs)
        want = bs;
    else if (want == 0) {
        struct mbucket *mb = &f->W.b[b];
        bool found;
        size_t i = mb_find(mb, f->keybuf, kl, &found);
        if (!found || !live(mb->e[i].exp, f->wnow))
            want = KEEL_NOTFOUND;
        else {
            /* a named bucket is marked changed even when the expiry stays */
            if (mb->e[i].exp != target || b != 0)
                changed(f, b);
            if (mb->dup) { /* the key's: every value's */
                mb_key_expiry(mb, i, target);
            } else {
                mb_own(mb);
                mb->e[i].exp = target;
            }
        }
    }
    EXPECT(f, rc, want);
}

/* ---- the cursor ---- */
/* The cursor's position in mb: the first entry >= it, *found when equal.
 * In a DUPSORT bucket the position is a pair (the cursor is closed when its
 * bucket is created again as the other kind, so a position there always
 * has a value). */
static size_t pos_find(const struct fo *f, const struct mbucket *mb, bool *found)
{
    if (mb->dup)
        return mb_find_pair(mb, f->cur_key->d, f->cur_key->len, f->cur_val->d, f->cur_val->len, found);
    return mb_find(mb, f->cur_key->d, f->cur_key->len, found);
}

/* first live index > the position (dir 1) or last live index < it (dir -1); -1 if none */
static long model_step(const struct fo *f, const struct mbucket *mb, int64_t now, int dir)
{
    bool found;
    size_t i = pos_find(f, mb, &found);
    if (dir > 0) {
        for (size_t j = found ? i + 1 : i; j < mb->n; j++)
            if (live(mb->e[j].exp, now))
                return (long)j;
    } else {
        for (size_t j = i; j-- > 0;)
            if (live(mb->e[j].exp, now))
                return (long)j;
    }
    return -1;
}

static long model_edge(const struct mbucket *mb, int64_t now, int dir)
{
    if (dir > 0) {
        for (size_t j = 0; j < mb->n; j++)
            if (live(mb->e[j].exp, now))
                return (long)j;
    } else {
        for (size_t j = mb->n; j-- > 0;)
            if (live(mb->e[j].exp, now))
                return (long)j;
    }
    return -1;
}

static void cursor_result(struct fo *f, int rc, keel_val k, keel_val v, const struct mbucket *mb, long want,
                          bool unset_on_miss)
{
    if (want < 0) {
        EXPECT(f, rc, KEEL_NOTFOUND);
        if (unset_on_miss) {
            f->cur_on = false;
            blob_unref(f->cur_key);
            blob_unref(f->cur_val);
            f->cur_key = f->cur_val = NULL;
        }
        return;
    }
    EXPECT(f, rc, 0);
    const struct ment *e = &mb->e[want];
    if (fo_cmp(k.data, k.len, e->k->d, e->k->len))
        fuzz_fail(__FILE__, __LINE__, "step %d: the cursor is on another key than the model's", f->step);
    check_val(f, v, e->v, "cursor");
    blob_unref(f->cur_key);
    blob_unref(f->cur_val);
    f->cur_key = blob_ref(e->k);
    f->cur_val = blob_ref(e->v);
    f->cur_on = true;
}

/* The write txn's cursor on bucket b, opened if need be: 0, or the code
 * its moves answer (KEEL_BADBUCKET), or -1: nothing to do. */
static int cursor_ready(struct fo *f, int b)
{
    int bs = wbucket(f, b);
    if (bs < 0)
        return -1;
    if (f->cur && f->cur_b != b)
        close_cursor(f);
    if (!f->cur) {
        int rc = keel_cursor_open(f->w, f->h[b], &f->cur);
        EXPECT(f, rc, bs);
        if (rc)
            return -1;
        f->cur_b = b;
        f->cur_dup = f->W.b[b].dup;
        f->cur_on = false;
    }
    return bs;
}

static void op_cursor(struct fo *f)
{
    int b = (int)(take(f) % FO_NB);
    unsigned m = take(f) % 8;
    unsigned ksel = m == 4 ? take(f) : 0;
    ensure_w(f);
    if (m == 7) {
        close_cursor(f);
        return;
    }
    int bs = cursor_ready(f, b);
    if (bs < 0)
        return;
    struct mbucket *mb = &f->W.b[b];
    keel_val k = {0}, v = {0};
    int rc;
    switch (m) {
    case 0:
    case 1: {
        int dir = m == 0 ? 1 : -1;
        rc = dir > 0 ? keel_cursor_first(f->cur, &k, &v) : keel_cursor_last(f->cur, &k, &v);
        if (bs) {
            EXPECT(f, rc, bs);
            return;
        }
        cursor_result(f, rc, k, v, mb, model_edge(mb, f->wnow, dir), true);
        return;
    }
    case 2:
    case 3: {
        int dir = m == 2 ? 1 : -1;
        rc = dir > 0 ? keel_cursor_next(f->cur, &k, &v) : keel_cursor_prev(f->cur, &k, &v);
        if (bs) {
            EXPECT(f, rc, bs);
            return;
        }
        if (!f->cur_on) /* an unpositioned cursor starts at the edge */
            cursor_result(f, rc, k, v, mb, model_edge(mb, f->wnow, dir), true);
        else
            cursor_result(f, rc, k, v, mb, model_step(f, mb, f->wnow, dir), false);
        return;
    }
    case 4: {
        size_t kl = make_key(f, ksel);
        rc = keel_cursor_seek(f->cur, (keel_val){f->keybuf, kl}, &k, &v);
        if (!key_ok(f, kl)) {
            EXPECT(f, rc, KEEL_BADVALSIZE);
            return;
        }
        if (bs) {
            EXPECT(f, rc, bs);
            return;
        }
        bool found;
        size_t i = mb_find(mb, f->keybuf, kl, &found);
        long want = -1;
        for (size_t j = i; j < mb->n; j++)
            if (live(mb->e[j].exp, f->wnow)) {
                want = (long)j;
                break;
            }
        cursor_result(f, rc, k, v, mb, want, true);
        return;
    }
    case 5: {
        rc = keel_cursor_current(f->cur, &k, &v);
        if (!f->cur_on) {
            EXPECT(f, rc, KEEL_BADCURSOR);
            return;
        }
        if (bs) {
            EXPECT(f, rc, bs);
            return;
        }
        bool found;
        size_t i = pos_find(f, mb, &found);
        cursor_result(f, rc, k, v, mb, found && live(mb->e[i].exp, f->wnow) ? (long)i : -1, false);
        return;
    }
    case 6: {
        rc = keel_cursor_del(f->cur);
        if (!f->cur_on) {
            EXPECT(f, rc, KEEL_BADCURSOR);
            return;
        }
        if (bs) {
            EXPECT(f, rc, bs);
            return;
        }
        bool found;
        size_t i = pos_find(f, mb, &found);
        if (found && live(mb->e[i].exp, f->wnow)) {
            EXPECT(f, rc, 0);
            mb_remove(mb, i); /* in a DUPSORT bucket the pair */
            changed(f, b);
        } else {
            EXPECT(f, rc, KEEL_NOTFOUND);
        }
        return;
    }
    }
}

/* ---- DUPSORT operations (byte 0 bit 4: opcode bytes 224-239) ---- */

static bool same_key(const struct blob *a, const struct blob *b) { return fo_cmp(a->d, a->len, b->d, b->len) == 0; }

/* DUPSORT: the first live pair of a key after the position's (dir 1), the
 * last live pair of a key before it (dir -1); -1 if none */
static long model_key_step(const struct fo *f, const struct mbucket *mb, int64_t now, int dir)
{
    bool found;
    size_t i = mb_find(mb, f->cur_key->d, f->cur_key->len, &found);
    if (dir > 0) {
        if (found)
            i += mb_key_run(mb, i);
        for (; i < mb->n; i++)
            if (live(mb->e[i].exp, now))
                return (long)i;
    } else {
        while (i-- > 0)
            if (live(mb->e[i].exp, now))
                return (long)i;
    }
    return -1;
}

/* A value to look for: with bit 7 of sel one of the key's own (pat picks
 * which), else make_dval's. */
static struct blob *probe_val(struct fo *f, const struct mbucket *mb, size_t kl, unsigned sel, unsigned pat)
{
    if (sel & 0x80) {
        bool found;
        size_t i = mb_find(mb, f->keybuf, kl, &found);
        if (found)
            return blob_ref(mb->e[i + pat % (mb->dup ? mb_key_run(mb, i) : 1)].v);
    }
    return make_dval(f, sel, pat, esc_len(f->keybuf, kl));
}

/* next_dup, prev_dup, next_key, prev_key, count, seek_key, seek_pair,
 * cursor_expiry: in either kind of bucket (in a plain one a key has one value) */
static void op_cursor2(struct fo *f)
{
    int b = (int)(take(f) % FO_NB);
    unsigned m = take(f) % 8;
    unsigned ksel = m == 5 || m == 6 ? take(f) : 0;
    unsigned vsel = m == 6 ? take(f) : 0, pat = m == 6 ? take(f) : 0;
    ensure_w(f);
    int bs = cursor_ready(f, b);
    if (bs < 0)
        return;
    struct mbucket *mb = &f->W.b[b];
    keel_val k = {0}, v = {0};
    int rc;
    switch (m) {
    case 0:
    case 1: {
        int dir = m == 0 ? 1 : -1;
        rc = dir > 0 ? keel_cursor_next_dup(f->cur, &k, &v) : keel_cursor_prev_dup(f->cur, &k, &v);
        if (!f->cur_on) {
            EXPECT(f, rc, KEEL_BADCURSOR);
            return;
        }
        if (bs) {
            EXPECT(f, rc, bs);
            return;
        }
        long want = -1;
        if (mb->dup) {
            want = model_step(f, mb, f->wnow, dir);
            if (want >= 0 && !same_key(mb->e[want].k, f->cur_key))
                want = -1;
        }
        cursor_result(f, rc, k, v, mb, want, false);
        return;
    }
    case 2:
    case 3: {
        int dir = m == 2 ? 1 : -1;
        rc = dir > 0 ? keel_cursor_next_key(f->cur, &k, &v) : keel_cursor_prev_key(f->cur, &k, &v);
        if (bs) {
            EXPECT(f, rc, bs);
            return;
        }
        if (!f->cur_on) /* as next / prev */
            cursor_result(f, rc, k, v, mb, model_edge(mb, f->wnow, dir), true);
        else if (!mb->dup)
            cursor_result(f, rc, k, v, mb, model_step(f, mb, f->wnow, dir), false);
        else
            cursor_result(f, rc, k, v, mb, model_key_step(f, mb, f->wnow, dir), false);
        return;
    }
    case 4: {
        uint64_t n = 0;
        rc = keel_cursor_count(f->cur, &n);
        if (!f->cur_on) {
            EXPECT(f, rc, KEEL_BADCURSOR);
            return;
        }
        if (bs) {
            EXPECT(f, rc, bs);
            return;
        }
        bool found;
        size_t i = pos_find(f, mb, &found);
        if (!found || !live(mb->e[i].exp, f->wnow)) {
            EXPECT(f, rc, KEEL_NOTFOUND);
            return;
        }
        EXPECT(f, rc, 0);
        size_t want = 1;
        if (mb->dup) {
            size_t first = mb_find(mb, f->cur_key->d, f->cur_key->len, &found);
            want = mb_key_run(mb, first);
        }
        if (n != want)
            fuzz_fail(__FILE__, __LINE__, "step %d: cursor count %llu, the model %zu", f->step,
                      (unsigned long long)n, want);
        return;
    }
    case 5: {
        size_t kl = make_key(f, ksel);
        rc = keel_cursor_seek_key(f->cur, (keel_val){f->keybuf, kl}, &v);
        if (!key_ok(f, kl)) {
            EXPECT(f, rc, KEEL_BADVALSIZE);
            return;
        }
        if (bs) {
            EXPECT(f, rc, bs);
            return;
        }
        bool found;
        size_t i = mb_find(mb, f->keybuf, kl, &found);
        k = (keel_val){f->keybuf, kl}; /* seek_key gives no key: it is this one */
        cursor_result(f, rc, k, v, mb, found && live(mb->e[i].exp, f->wnow) ? (long)i : -1, true);
        return;
    }
    case 6: {
        size_t kl = make_key(f, ksel);
        struct blob *val = probe_val(f, mb, kl, vsel, pat);
        rc = keel_cursor_seek_pair(f->cur, (keel_val){f->keybuf, kl}, (keel_val){val->d, val->len}, &k, &v);
        long want = -1;
        if (!key_ok(f, kl)) {
            EXPECT(f, rc, KEEL_BADVALSIZE);
        } else if (bs) {
            EXPECT(f, rc, bs);
        } else {
            bool found;
            if (mb->dup) {
                size_t j = mb_find_pair(mb, f->keybuf, kl, val->d, val->len, &found);
                if (j < mb->n && fo_cmp(mb->e[j].k->d, mb->e[j].k->len, f->keybuf, kl) == 0 &&
                    live(mb->e[j].exp, f->wnow))
                    want = (long)j;
            } else {
                size_t i = mb_find(mb, f->keybuf, kl, &found);
                if (found && live(mb->e[i].exp, f->wnow) &&
                    fo_cmp(mb->e[i].v->d, mb->e[i].v->len, val->d, val->len) >= 0)
                    want = (long)i;
            }
            cursor_result(f, rc, k, v, mb, want, true);
        }
        blob_unref(val);
        return;
    }
    case 7: {
        int64_t at = -1;
        rc = keel_cursor_expiry(f->cur, &at);
        if (!f->cur_on) {
            EXPECT(f, rc, KEEL_BADCURSOR);
            return;
        }
        if (bs) {
            EXPECT(f, rc, bs);
            return;
        }
        bool found;
        size_t i = pos_find(f, mb, &found);
        if (!found || !live(mb->e[i].exp, f->wnow)) {
            EXPECT(f, rc, KEEL_NOTFOUND);
            return;
        }
        EXPECT(f, rc, 0);
        FUZZ_CHECK(at == mb->e[i].exp);
        return;
    }
    }
}

/* keel_del_value: one pair (DUPSORT), or the key if it holds that value */
static void op_del_value(struct fo *f)
{
    int b = (int)(take(f) % FO_NB);
    size_t kl = make_key(f, take(f));
    unsigned vsel = take(f), pat = take(f);
    ensure_w(f);
    int bs = wbucket(f, b);
    if (bs < 0)
        return;
    struct mbucket *mb = &f->W.b[b];
    struct blob *val = probe_val(f, mb, kl, vsel, pat);
    int rc = keel_del_value(f->w, f->h[b], (keel_val){f->keybuf, kl}, (keel_val){val->d, val->len});
    int want = KEEL_NOTFOUND;
    if (!key_ok(f, kl))
        want = KEEL_BADVALSIZE;
    else if (bs)
        want = bs;
    else {
        bool found;
        size_t i = mb->dup ? mb_find_pair(mb, f->keybuf, kl, val->d, val->len, &found)
                           : mb_find(mb, f->keybuf, kl, &found);
        if (found && live(mb->e[i].exp, f->wnow) &&
            (mb->dup || fo_cmp(mb->e[i].v->d, mb->e[i].v->len, val->d, val->len) == 0)) {
            want = 0;
            mb_remove(mb, i);
            changed(f, b);
        }
    }
    EXPECT(f, rc, want);
    blob_unref(val);
}

/* Many values for one key: "v" and a number, then 0, 10, 100 or 400 bytes
 * (a key whose values fill several leaves: count across leaves, next_key
 * over them). */
static void op_dfill(struct fo *f)
{
    int b = (int)(take(f) % FO_NB);
    size_t kl = make_key(f, take(f));
    unsigned cnt = take(f), vs = take(f);
    ensure_w(f);
    int bs = wbucket(f, b);
    if (bs < 0)
        return;
    static const size_t pads[4] = {0, 10, 100, 400};
    unsigned n = 1 + cnt % 64, step = 1 + (cnt >> 6);
    struct mbucket *mb = &f->W.b[b];
    for (unsigned i = 0; i < n; i++) {
        uint8_t buf[420];
        size_t len = (size_t)sprintf((char *)buf, "v%04u", (i * step + vs) % 10000);
        size_t pad = pads[vs % 4];
        if (f->bytes + pad > FO_BYTES_BUDGET)
            pad = 0;
        memcpy(buf + len, fo_pattern + vs % 64, pad);
        len += pad;
        f->bytes += len;
        struct blob *v = blob_new(buf, len);
        int rc = keel_put(f->w, f->h[b], (keel_val){f->keybuf, kl}, (keel_val){v->d, v->len}, 0);
        int want;
        if (!key_ok(f, kl))
            want = KEEL_BADVALSIZE;
        else if (bs)
            want = bs;
        else if (mb->dup)
            want = model_dput(f, b, f->keybuf, kl, v, 0, 0);
        else {
            want = 0;
            mb_set(mb, f->keybuf, kl, v, 0);
            changed(f, b);
        }
        EXPECT(f, rc, want);
        blob_unref(v);
        if (want)
            break;
    }
}

/* ---- buckets, purge, readers, ranges ---- */
/* Open, create, drop a bucket.  In dupmode bit 2 of the mode byte adds
 * KEEL_DUPSORT to an open or create (the kind must match an existing
 * bucket's, and a create without it must find a plain one), and bit 3 with
 * a create asks for a DUPSORT default bucket (refused); dup: a create of a
 * DUPSORT bucket (opcode bytes 234, 235). */
static void op_bucket(struct fo *f, bool dup)
{
    int b = 1 + (int)(take(f) % (FO_NB - 1));
    unsigned mr = dup ? 5 : take(f), m = mr % 4;
    bool dupf = f->dupmode && (mr & 4);
    ensure_w(f);
    struct mbucket *mb = &f->W.b[b];
    if (m < 2) {
        keel_bucket h;
        if (dupf && m == 1 && (mr & 8)) {
            EXPECT(f, keel_bucket_open(f->w, NULL, KEEL_CREATE | KEEL_DUPSORT, &h), KEEL_INCOMPATIBLE);
            return;
        }
        int rc = keel_bucket_open(f->w, fo_names[b], (m ? KEEL_CREATE : 0) | (dupf ? KEEL_DUPSORT : 0), &h);
        if (mb->exists && (dupf ? !mb->dup : m && mb->dup)) {
            EXPECT(f, rc, KEEL_INCOMPATIBLE);
        } else if (mb->exists || m) {
            EXPECT(f, rc, 0);
            if (!mb->exists) {
                mb->exists = true;
                mb->dup = dupf;
                if (f->W.next_id == 0)
                    f->W.next_id = 1;
                mb->id = (uint32_t)f->W.next_id++;
                changed(f, b);
                /* a cursor follows its bucket created again in the txn; one whose
                 * position is of the other kind (a key, a pair) is not modelled */
                if (f->cur && f->cur_b == b && f->cur_dup != dupf)
                    close_cursor(f);
            }
            FUZZ_CHECK(!f->known[b] || f->h[b] == h);
            f->known[b] = true;
            f->h[b] = h;
        } else {
            EXPECT(f, rc, KEEL_NOTFOUND);
        }
        return;
    }
    if (m == 3)
        b = 0; /* the default bucket is emptied */
    mb = &f->W.b[b];
    int bs = wbucket(f, b);
    if (bs < 0)
        return;
    int rc = keel_bucket_drop(f->w, f->h[b]);
    EXPECT(f, rc, bs);
    if (rc == 0) {
        if (b != 0 || mb->n)
            changed(f, b);
        mb_clear(mb);
        if (b != 0)
            mb->exists = mb->dup = false;
    }
}

static void op_purge(struct fo *f)
{
    static const size_t maxes[8] = {0, 1, 2, 3, 5, 8, 1000, 1};
    size_t max = maxes[take(f) % 8];
    ensure_w(f);
    size_t purged = 99;
    EXPECT(f, keel_purge(f->w, max, &purged), 0);
    bool named;
    size_t want = model_purge(&f->W, f->wnow, max, &named);
    if (purged != want)
        fuzz_fail(__FILE__, __LINE__, "step %d: purge removed %zu, the model %zu", f->step, purged, want);
    if (want)
        changed(f, named ? 1 : 0);
}

static void op_reader(struct fo *f)
{
    unsigned m = take(f) % 4;
    int b = (int)(take(f) % FO_NB);
    unsigned ksel = take(f);
    if (m == 0 || !f->r) {
        end_reader(f);
        EXPECT(f, keel_begin(f->db, KEEL_RDONLY, &f->r), 0);
        ms_copy(&f->S, &f->C);
        memcpy(f->rknown, f->known, sizeof f->known);
        memcpy(f->rh, f->h, sizeof f->h);
        f->rnow = f->clk;
        if (m == 0)
            return;
    }
    if (m == 3) {
        end_reader(f);
        return;
    }
    if (!handle(f, f->r, &f->S, b))
        return;
    if (m == 1)
        check_get(f, f->r, &f->S, f->rnow, b, make_key(f, ksel));
    else
        verify_bucket(f, f->r, &f->S, f->rnow, b);
    /* writes in a read txn are refused */
    EXPECT(f, keel_put(f->r, f->rh[b], (keel_val){"x", 1}, (keel_val){"y", 1}, 0), KEEL_READONLY);
}

static void op_range(struct fo *f, bool del)
{
    int b = (int)(take(f) % FO_NB);
    unsigned start = take(f) * 5, cb = take(f), vs = take(f);
    unsigned count = 1 + cb % 32;                       /* up to 32 keys (200 before): each op stays cheap */
    unsigned long_ = (cb >> 5) < 6 ? 0 : (cb >> 5) - 5; /* the top 3 bits: 0-5 short keys, 6 and 7 long */
    ensure_w(f);
    int bs = wbucket(f, b);
    if (bs < 0)
        return;
    struct mbucket *mb = &f->W.b[b];
    for (unsigned i = start; i < start + count; i++) {
        size_t kl = range_key(f, i, long_);
        keel_val key = {f->keybuf, kl};
        if (del) {
            int rc = keel_del(f->w, f->h[b], key);
            int want = bs;
            if (!bs) {
                bool found;
                size_t at = mb_find(mb, f->keybuf, kl, &found);
                want = found && live(mb->e[at].exp, f->wnow) ? 0 : KEEL_NOTFOUND;
                if (want == 0) {
                    if (mb->dup)
                        mb_remove_key(mb, at);
                    else
                        mb_remove(mb, at);
                    changed(f, b);
                }
            }
            EXPECT(f, rc, want);
        } else if (mb->dup) { /* one pair per key: small values, some just fitting, some too long */
            struct blob *v = make_dval(f, vs, i, esc_len(f->keybuf, kl));
            unsigned flags = (vs & 0x80) ? KEEL_APPEND : 0;
            int rc = keel_put(f->w, f->h[b], key, (keel_val){v->d, v->len}, flags);
            EXPECT(f, rc, model_dput(f, b, f->keybuf, kl, v, flags, 0));
            blob_unref(v);
        } else {
            struct blob *v = make_val(f, vs % 13, i, kl); /* mostly up to 2100 bytes: many pages */
            int rc = keel_put(f->w, f->h[b], key, (keel_val){v->d, v->len}, (vs & 0x80) ? KEEL_APPEND : 0);
            EXPECT(f, rc, bs);
            if (!bs) {
                mb_set(mb, f->keybuf, kl, v, 0);
                changed(f, b);
            }
            blob_unref(v);
        }
    }
}

static void op_many(struct fo *f, bool put)
{
    int b = (int)(take(f) % FO_NB);
    size_t n = 1 + take(f) % 4;
    keel_val keys[4], vals[4];
    uint8_t *kcopy[4];
    for (size_t i = 0; i < n; i++) {
        size_t kl = make_key(f, take(f) % 40); /* includes the too long and the empty key */
        kcopy[i] = malloc(kl ? kl : 1);
        FUZZ_CHECK(kcopy[i]);
        memcpy(kcopy[i], f->keybuf, kl);
        keys[i] = (keel_val){kcopy[i], kl};
    }
    unsigned vs = take(f), fl = take(f);
    ensure_w(f);
    int bs = wbucket(f, b);
    bool dup = bs == 0 && f->W.b[b].dup;
    struct blob *v = dup ? make_dval(f, vs, fl, esc_len(keys[0].data, keys[0].len)) : make_val(f, vs % 13, fl, keys[0].len);
    if (bs >= 0) {
        struct mbucket *mb = &f->W.b[b];
        bool keys_ok = true, pairs_ok = true;
        for (size_t i = 0; i < n; i++) {
            keys_ok = keys_ok && key_ok(f, keys[i].len);
            pairs_ok = pairs_ok && (!dup || pair_fits(f, keys[i].data, keys[i].len, v->len));
        }
        int want = 0;
        if (put) {
            unsigned flags = (unsigned[]){0, KEEL_NOOVERWRITE, KEEL_KEEPTTL, 0}[fl % 4];
            for (size_t i = 0; i < n; i++)
                vals[i] = (keel_val){v->d, v->len};
            int rc = keel_put_many(f->w, f->h[b], keys, vals, n, flags);
            if (bs)
                want = bs;
            else if (!keys_ok || !pairs_ok)
                want = KEEL_BADVALSIZE;
            else {
                if (flags & KEEL_NOOVERWRITE) {
                    for (size_t i = 0; i < n && !want; i++) {
                        bool found;
                        size_t at = mb_find(mb, keys[i].data, keys[i].len, &found);
                        if (found && live(mb->e[at].exp, f->wnow))
                            want = KEEL_EXISTS;
                        for (size_t j = 0; j < i; j++)
                            if (fo_cmp(keys[i].data, keys[i].len, keys[j].data, keys[j].len) == 0)
                                want = KEEL_EXISTS;
                    }
                }
                if (!want && dup) { /* KEEL_KEEPTTL changes nothing there: a put keeps the key's expiry */
                    for (size_t i = 0; i < n; i++)
                        FUZZ_CHECK(model_dput(f, b, keys[i].data, keys[i].len, v, 0, 0) == 0);
                } else if (!want) {
                    for (size_t i = 0; i < n; i++) {
                        bool found;
                        size_t at = mb_find(mb, keys[i].data, keys[i].len, &found);
                        bool present = found && live(mb->e[at].exp, f->wnow);
                        int64_t exp = (flags & KEEL_KEEPTTL) && present ? mb->e[at].exp : 0;
                        mb_set(mb, keys[i].data, keys[i].len, v, exp);
                    }
                    changed(f, b);
                }
            }
            EXPECT(f, rc, want);
        } else {
            int rc = keel_get_many(f->w, f->h[b], keys, vals, n);
            want = !keys_ok ? KEEL_BADVALSIZE : bs;
            EXPECT(f, rc, want);
            for (size_t i = 0; rc == 0 && i < n; i++) {
                bool found;
                size_t at = mb_find(mb, keys[i].data, keys[i].len, &found);
                if (found && live(mb->e[at].exp, f->wnow))
                    check_val(f, vals[i], mb->e[at].v, "get_many");
                else
                    FUZZ_CHECK(vals[i].data == NULL && vals[i].len == 0);
            }
        }
    }
    blob_unref(v);
    for (size_t i = 0; i < n; i++)
        free(kcopy[i]);
}

static void op_clock(struct fo *f)
{
    static const int64_t d[8] = {1, 7, 100, 1000, 60000, -1, -1000, 1000000};
    f->clk += d[take(f) % 8];
    if (f->clk < 1)
        f->clk = 1;
}

FUZZ_ENTRY(ops)
{
    if (size < 1)
        return 0;
    static const uint32_t psizes[4] = {4096, 8192, 16384, 65536};
    static const int ppcs[4] = {-1, 1, 3, 100};
    static uint8_t keybuf[70000];
    if (!fo_pattern[1])
        fill_pattern();
    struct fo *f = calloc(1, sizeof *f);
    FUZZ_CHECK(f);
    f->keybuf = keybuf;
    f->p = data + 1;
    f->n = size - 1;
    f->clk = 1000000000;
    f->ppc = ppcs[(data[0] >> 2) & 3];
    f->nested = data[0] & 0x20;
    f->dupmode = data[0] & 0x10;
    f->opts = (keel_options){.page_size = psizes[data[0] & 3],
                             .flags = KEEL_NOSYNC,
                             .max_size = (uint64_t)1 << 28,
                             .clock = fo_clock,
                             .clock_ctx = &f->clk,
                             .purge_per_commit = f->ppc};
    f->path = fuzz_path(2, "ops.db");
    fuzz_remove_db(f->path);
    f->C.b[0].exists = true;
    f->C.next_id = 1;
    do_open(f);

    static int trace = -1; /* KEEL_FUZZ_TRACE=1: print each step's opcode and argument bytes */
    if (trace < 0)
        trace = getenv("KEEL_FUZZ_TRACE") != NULL;
    for (f->step = 0; f->n > 0 && f->step < FO_MAX_OPS; f->step++) {
        if (trace) {
            fprintf(stderr, "step %d: op %u (byte %u) args", f->step, f->p[0] % 24, f->p[0]);
            for (size_t i = 1; i < 7 && i < f->n; i++)
                fprintf(stderr, " %u", f->p[i]);
            fprintf(stderr, "%s%s\n", f->w ? " [w]" : "", f->r ? " [r]" : "");
        }
        unsigned raw = take(f), op = raw % 24;
        if (f->nested && raw >= 240) {
            op_nested(f, raw);
            continue;
        }
        if (f->dupmode && raw >= 224 && raw < 240) {
            if (raw < 228)
                op_cursor2(f);
            else if (raw < 231)
                op_del_value(f);
            else if (raw < 234)
                op_dfill(f);
            else if (raw < 236)
                op_bucket(f, true);
            else
                op_put(f, raw >= 238);
            continue;
        }
        switch (op) {
        case 0:
        case 1:
        case 2:
            op_put(f, false);
            break;
        case 3:
            op_put(f, true);
            break;
        case 4:
            op_del(f);
            break;
        case 5:
            op_get(f);
            break;
        case 6:
            op_cas(f);
            break;
        case 7:
            op_incr(f);
            break;
        case 8:
            op_expire(f);
            break;
        case 9:
        case 10:
            op_cursor(f);
            break;
        case 11:
            do_commit(f);
            break;
        case 12:
            do_abort(f);
            break;
        case 13:
            if (f->reopens < FO_MAX_REOPENS) {
                f->reopens++;
                do_reopen(f);
            }
            break;
        case 14:
            op_clock(f);
            break;
        case 15:
            op_purge(f);
            break;
        case 16:
            op_bucket(f, false);
            break;
        case 17:
            op_reader(f);
            break;
        case 18: {
            int b = (int)(take(f) % FO_NB);
            ensure_w(f);
            if (wbucket(f, b) >= 0)
                verify_bucket(f, f->w, &f->W, f->wnow, b);
            break;
        }
        case 19:
            op_range(f, false);
            break;
        case 20:
            op_range(f, true);
            break;
        case 21:
            if (f->checks < FO_MAX_CHECKS) {
                f->checks++;
                check_db(f);
            }
            break;
        case 22:
            op_many(f, true);
            break;
        case 23:
            op_many(f, false);
            break;
        }
    }
    /* the end: commit, reopen, everything must read back and check clean */
    if (f->w) {
        ensure_w(f);
        verify_all(f, f->w, &f->W, f->wnow); /* the only keel_bucket_list in a write txn */
        do_commit(f);
    }
    if (f->r) {
        verify_all(f, f->r, &f->S, f->rnow);
        end_reader(f);
    }
    do_reopen(f);
    check_db(f);
    keel_txn *r;
    EXPECT(f, keel_begin(f->db, KEEL_RDONLY, &r), 0);
    verify_all(f, r, &f->C, f->clk);
    static int stats = -1; /* KEEL_FUZZ_STATS=1: one line per input, what it reached */
    if (stats < 0)
        stats = getenv("KEEL_FUZZ_STATS") != NULL;
    if (stats) {
        fprintf(stderr, "stats: page %u ops %d values %zu reopens %d checks %d", f->opts.page_size, f->step,
                f->bytes, f->reopens, f->checks);
        for (int b = 0; b < FO_NB; b++) {
            keel_stat st;
            if (f->C.b[b].exists && keel_bucket_stat(r, f->h[b], &st) == 0)
                fprintf(stderr, " | b%d depth %u entries %llu branch %llu leaf %llu overflow %llu", b, st.depth,
                        (unsigned long long)st.entries, (unsigned long long)st.branch_pages,
                        (unsigned long long)st.leaf_pages, (unsigned long long)st.overflow_pages);
        }
        fprintf(stderr, "\n");
    }
    keel_abort(r);
    keel_close(f->db);
    fuzz_remove_db(f->path);
    ms_free(&f->C);
    free(f);
    return 0;
}
