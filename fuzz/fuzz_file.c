/*
 * fuzz_file.c — hostile database files: keel must answer KEEL_CORRUPTED (or
 * another error) and never crash, hang, leak or read out of bounds.
 *
 * Input: byte 0 holds options, the rest is the database file image.
 *   bits 0-1  the page size used to find meta 1 for re-sealing: 4096, 8192,
 *             16384, 65536 (meta 0 says the real one; see below)
 *   bit 2     keep the meta checksums as they are.  Otherwise every meta
 *             whose magic is right gets a correct XXH3 checksum, so that
 *             mutations of meta fields (roots, npages, depth, counts) reach
 *             the tree code instead of dying at the checksum.
 *   bit 3     the clock stands far in the future (every key with an expiry
 *             has expired), else at 1000 ms
 *   bit 4     open read-only (no write txn)
 *
 * Then: open, keel_check, a read txn that walks every bucket (default and
 * keel_bucket_list) with cursors forwards and backwards and gets some keys,
 * a small write txn (puts incl. an overflow value and a TTL, deletes, CAS,
 * incr, cursor deletes, bucket create/drop, purge) and commit, reopen, check
 * and walk again.
 *
 * Oracle: beyond "no crash": if the first keel_check found no problem and
 * the write txn committed, the reopened file must check clean too (a valid
 * file stays valid after a write).
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

/* Walks bucket b both ways, remembers some keys, gets them back. */
static void ff_walk(keel_txn *txn, keel_bucket b, struct ff_keys *ks)
{
    keel_cursor *c;
    if (keel_cursor_open(txn, b, &c))
        return;
    keel_val k, v;
    int rc, steps = 0;
    for (rc = keel_cursor_first(c, &k, &v); rc == 0 && steps < FF_STEPS; rc = keel_cursor_next(c, &k, &v), steps++) {
        ff_touch(k);
        ff_touch(v);
        if (steps % 7 == 0)
            ff_keep(ks, k);
    }
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

/* A read txn over everything; fills names and the default bucket's keys. */
static void ff_read_all(keel_db *db, struct ff_names *nm, struct ff_keys *ks)
{
    keel_txn *txn;
    if (keel_begin(db, KEEL_RDONLY, &txn))
        return;
    ff_walk(txn, KEEL_DEFAULT_BUCKET, ks);
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
    }
    if (nm->n > 1 && keel_bucket_open(w, nm->name[1], 0, &b) == 0)
        keel_bucket_drop(w, b);
    if (keel_bucket_open(w, "fuzz-new", KEEL_CREATE, &b) == 0)
        keel_put(w, b, (keel_val){"k", 1}, (keel_val){big, 100}, 0);
    size_t purged;
    keel_purge(w, 10, &purged);
    return keel_commit(w);
}

/* A one-flush meta's commit list (format.md) is re-sealed too: the pages'
 * sum over what the image holds of them, then the list's sum, so that
 * mutated pages of the newest commit reach the tree code instead of only
 * its rollback at open (bit 2 keeps the sums, and tests the rollback). */
static void ff_reseal_list(uint8_t *img, size_t n, const uint8_t *full, size_t fulln, size_t off)
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
        /* listed pages are >= 2: never re-sealed, so the input's bytes are theirs */
        if (first < fulln / ps && count <= fulln / ps - first)
            XXH3_64bits_update(st, full + first * ps, count * ps);
    }
    wr64(list + 8, XXH3_64bits_digest(st));
    XXH3_freeState(st);
    m.commit_list_sum = XXH3_64bits(list, META_LIST_HDR + (size_t)nruns * META_LIST_RUN);
    memcpy(img + off, &m, META_SIZE);
}

/* A meta's free tail (format.md) likewise, so mutated tails reach the
 * parser behind it; a tail past the copied head keeps the input's sum. */
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

/* img: the head of the image being re-sealed (n bytes); full: the whole
 * image as given (fulln bytes). */
static void ff_reseal(uint8_t *img, size_t n, const uint8_t *full, size_t fulln, size_t off)
{
    if (n < off + META_SIZE || rd32(img + off) != KEEL_MAGIC)
        return;
    ff_reseal_list(img, n, full, fulln, off);
    ff_reseal_tail(img, n, off);
    /* the header fields the two resealers set lie where both formats keep
     * them; format 1's checksum follows its shorter descriptors */
    size_t sum_off = rd32(img + off + 4) == 1 ? META_V1_SUM_OFF : META_SUM_BYTES;
    uint64_t sum = XXH3_64bits(img + off, sum_off);
    memcpy(img + off + sum_off, &sum, 8);
}

FUZZ_ENTRY(file)
{
    if (size < 1)
        return 0;
    static const uint32_t sizes[4] = {4096, 8192, 16384, 65536};
    unsigned opt = data[0];
    size_t n = size - 1;
    /* Only the two metas may be re-sealed, and they lie in the first 64 KiB
     * + META_SIZE bytes: copy just that head, not the whole image (a copy
     * of a 128 KiB image was an mmap and page faults per run under ASan). */
    static uint8_t head[65536 + META_SIZE];
    size_t hn = n < sizeof head ? n : sizeof head;
    memcpy(head, data + 1, hn);
    if (!(opt & 4)) {
        ff_reseal(head, hn, data + 1, n, 0);
        ff_reseal(head, hn, data + 1, n, sizes[opt & 3]);
    }
    const char *path = fuzz_path(0, "file.db");
    fuzz_remove_db(path);
    FUZZ_CHECK(fuzz_write_file2(path, head, hn, data + 1 + hn, n - hn) == 0);

    int64_t now = (opt & 8) ? ((int64_t)1 << 60) : 1000;
    keel_options o = {.flags = KEEL_NOSYNC | ((opt & 16) ? KEEL_RDONLY : 0u),
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
    uint64_t problems = 0;
    int crc = keel_check(db, NULL, NULL, &problems);
    bool clean = crc == 0 && problems == 0;

    /* copies: plain (pages as they are) and compact (a walk of every bucket) */
    for (int compact = 0; compact < 2; compact++) {
        const char *cpath = fuzz_path(3, "file-copy.db");
        fuzz_remove_db(cpath);
        int rc2 = keel_copy(db, cpath, compact ? KEEL_COPY_COMPACT : 0);
        /* a compact copy writes the newest format, whose longest key is
         * shorter than format 1's: such a key refuses it */
        bool older = hn >= 8 && rd32(head + 4) < KEEL_FORMAT_VERSION;
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
    ff_read_all(db, &nm, &ks);
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
        crc = keel_check(db, NULL, NULL, &problems);
        if (clean && wrc == 0) {
            if (crc || problems) {
                fprintf(stderr, "keel_check after a clean commit: rc %d, %llu problems\n", crc,
                        (unsigned long long)problems);
                keel_check(db, ff_report, NULL, &problems);
                FUZZ_CHECK(!"a clean file checks dirty after a commit");
            }
        }
        ff_read_all(db, &nm, &ks);
        ff_names_free(&nm);
        ff_keys_free(&ks);
        keel_close(db);
    }
    fuzz_remove_db(path);
    return 0;
}
