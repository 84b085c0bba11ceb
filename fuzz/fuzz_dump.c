/*
 * fuzz_dump.c — the `keel load` parser (tools/dumpfmt.c): any input is
 * either accepted or rejected with "line N: ..." — never a crash, a read
 * past the input, or a leak.
 *
 * Input: byte 0 holds options, the rest is the text.
 *   bit 0  DUMP_PLAIN (mdb_load -T: key line, value line)
 *   bit 1  max_line 64 (long lines must be refused cleanly)
 *   bit 2  the record callback stops the parse at the third record
 *   bit 3  the section callback stops the parse at the second section
 *
 * Oracles: the result is one of DUMP_OK / DUMP_EINPUT / DUMP_ESTOP, with a
 * message on failure; DUMP_ESTOP exactly when a callback stopped; and what
 * an accepted input yields, written back with the dump writer and parsed
 * again, yields the same sections and records (round trip).  The print
 * escapes are checked the same way on their own (dump_unescape).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dumpfmt.h"
#include "fuzz.h"

struct fd_rec {
    char *k, *v;
    size_t kl, vl;
};

struct fd_sec {
    char *database; /* NULL: none */
    int print;
    uint64_t mapsize;
    uint32_t maxreaders, pagesize;
    int dupsort;
    size_t n, cap;
    struct fd_rec *r;
    bool ended;
};

struct fd_run {
    unsigned stop_record, stop_section; /* 0 = never */
    size_t nsec;
    struct fd_sec sec[64];
    size_t records;
    bool stopped, overflow;
    unsigned long last_line;
};

static char *fd_dup(const void *p, size_t n)
{
    char *d = malloc(n + 1);
    FUZZ_CHECK(d);
    if (n)
        memcpy(d, p, n);
    d[n] = 0;
    return d;
}

static int fd_section(void *ctx, const struct dump_section *s, char *err, size_t errlen)
{
    struct fd_run *run = ctx;
    FUZZ_CHECK(s->line >= 1);
    if (run->stop_section && run->nsec + 1 == run->stop_section) {
        run->stopped = true;
        snprintf(err, errlen, "fuzz stop at section %zu", run->nsec + 1);
        return 1;
    }
    if (run->nsec == 64) {
        run->overflow = true; /* too many to keep: no round trip */
        return 0;
    }
    if (run->nsec && !run->sec[run->nsec - 1].ended)
        FUZZ_CHECK(!"a section began before the last one ended");
    struct fd_sec *sec = &run->sec[run->nsec++];
    memset(sec, 0, sizeof *sec);
    sec->database = s->database ? fd_dup(s->database, strlen(s->database)) : NULL;
    sec->print = s->print;
    sec->mapsize = s->mapsize;
    sec->maxreaders = s->maxreaders;
    sec->pagesize = s->pagesize;
    sec->dupsort = s->dupsort;
    FUZZ_CHECK(s->dupsort == 0 || s->dupsort == 1);
    FUZZ_CHECK(s->version >= 1 && s->version <= DUMP_VERSION);
    return 0;
}

static int fd_record(void *ctx, const void *key, size_t klen, const void *val, size_t vlen, unsigned long line,
                     char *err, size_t errlen)
{
    struct fd_run *run = ctx;
    FUZZ_CHECK(line >= 1 && line >= run->last_line);
    run->last_line = line;
    /* touch every byte: ASan finds a pointer past the parser's buffer */
    volatile char sink = 0;
    for (size_t i = 0; i < klen; i++)
        sink ^= ((const char *)key)[i];
    for (size_t i = 0; i < vlen; i++)
        sink ^= ((const char *)val)[i];
    (void)sink;
    run->records++;
    if (run->stop_record && run->records == run->stop_record) {
        run->stopped = true;
        snprintf(err, errlen, "fuzz stop at record %zu", run->records);
        return 1;
    }
    if (run->overflow || run->nsec == 0)
        return 0;
    struct fd_sec *sec = &run->sec[run->nsec - 1];
    FUZZ_CHECK(!sec->ended);
    if (sec->n == sec->cap) {
        sec->cap = sec->cap ? 2 * sec->cap : 16;
        sec->r = realloc(sec->r, sec->cap * sizeof *sec->r);
        FUZZ_CHECK(sec->r);
    }
    sec->r[sec->n++] = (struct fd_rec){fd_dup(key, klen), fd_dup(val, vlen), klen, vlen};
    return 0;
}

static int fd_section_end(void *ctx, unsigned long line, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct fd_run *run = ctx;
    FUZZ_CHECK(line >= 1);
    if (!run->overflow && run->nsec) {
        FUZZ_CHECK(!run->sec[run->nsec - 1].ended);
        run->sec[run->nsec - 1].ended = true;
    }
    return 0;
}

static void fd_warning(void *ctx, unsigned long line, const char *msg)
{
    (void)ctx;
    FUZZ_CHECK(line >= 1 && msg && msg[0]);
}

static void fd_free(struct fd_run *run)
{
    for (size_t i = 0; i < run->nsec; i++) {
        struct fd_sec *s = &run->sec[i];
        for (size_t j = 0; j < s->n; j++) {
            free(s->r[j].k);
            free(s->r[j].v);
        }
        free(s->r);
        free(s->database);
    }
    run->nsec = 0;
}

static int fd_parse(const void *text, size_t len, unsigned flags, size_t max_line, struct fd_run *run, char *err,
                    size_t errlen)
{
    FILE *f = len ? fmemopen((void *)text, len, "r") : fopen("/dev/null", "r");
    FUZZ_CHECK(f);
    struct dump_parser p = {.flags = flags,
                            .max_line = max_line,
                            .ctx = run,
                            .section = fd_section,
                            .record = fd_record,
                            .section_end = fd_section_end,
                            .warning = fd_warning};
    int rc = dump_parse(f, &p, err, errlen);
    fclose(f);
    return rc;
}

static bool fd_same(const struct fd_run *a, const struct fd_run *b, bool plain)
{
    if (a->nsec != b->nsec)
        return false;
    for (size_t i = 0; i < a->nsec; i++) {
        const struct fd_sec *x = &a->sec[i], *y = &b->sec[i];
        if (x->n != y->n || !x->ended || !y->ended)
            return false;
        if (!plain) {
            if ((x->database == NULL) != (y->database == NULL) ||
                (x->database && strcmp(x->database, y->database)) || x->print != y->print ||
                x->mapsize != y->mapsize || x->maxreaders != y->maxreaders || x->pagesize != y->pagesize ||
                x->dupsort != y->dupsort)
                return false;
        }
        for (size_t j = 0; j < x->n; j++)
            if (x->r[j].kl != y->r[j].kl || x->r[j].vl != y->r[j].vl || memcmp(x->r[j].k, y->r[j].k, x->r[j].kl) ||
                memcmp(x->r[j].v, y->r[j].v, x->r[j].vl))
                return false;
    }
    return true;
}

/* The escapes alone: decode, encode, decode again. */
static void fd_escapes(const uint8_t *data, size_t len)
{
    char *s = fd_dup(data, len);
    size_t out, bad;
    if (dump_unescape(s, len, &out, &bad) == 0) {
        FUZZ_CHECK(out <= len);
        char *buf = NULL;
        size_t blen = 0;
        FILE *m = open_memstream(&buf, &blen);
        FUZZ_CHECK(m);
        FUZZ_CHECK(dump_write_escaped(m, s, out) == 0);
        fclose(m);
        size_t out2;
        FUZZ_CHECK(dump_unescape(buf, blen, &out2, &bad) == 0);
        FUZZ_CHECK(out2 == out && memcmp(buf, s, out) == 0);
        free(buf);
    } else {
        FUZZ_CHECK(bad < len && s[bad] == '\\');
    }
    free(s);
}

FUZZ_ENTRY(dump)
{
    if (size < 1)
        return 0;
    unsigned opt = data[0];
    const uint8_t *text = data + 1;
    size_t len = size - 1;
    bool plain = opt & 1;
    struct fd_run *run = calloc(1, sizeof *run);
    FUZZ_CHECK(run);
    run->stop_record = (opt & 4) ? 3 : 0;
    run->stop_section = (opt & 8) && !plain ? 2 : 0;
    char err[600];
    int rc = fd_parse(text, len, plain ? DUMP_PLAIN : 0, (opt & 2) ? 64 : 0, run, err, sizeof err);
    FUZZ_CHECK(rc == DUMP_OK || rc == DUMP_EINPUT || rc == DUMP_ESTOP);
    if (rc)
        FUZZ_CHECK(strncmp(err, "line ", 5) == 0);
    FUZZ_CHECK((rc == DUMP_ESTOP) == run->stopped);
    if (rc == DUMP_ESTOP)
        FUZZ_CHECK(strstr(err, "fuzz stop") != NULL);

    if (rc == DUMP_OK && !run->overflow) {
        for (size_t i = 0; i < run->nsec; i++)
            FUZZ_CHECK(run->sec[i].ended);
        /* write it back, parse again */
        char *buf = NULL;
        size_t blen = 0;
        FILE *m = open_memstream(&buf, &blen);
        FUZZ_CHECK(m);
        for (size_t i = 0; i < run->nsec; i++) {
            const struct fd_sec *s = &run->sec[i];
            if (!plain) {
                struct dump_info h = {s->print, s->database, s->mapsize, s->maxreaders, s->pagesize, s->dupsort};
                FUZZ_CHECK(dump_write_header(m, &h) == 0);
            }
            for (size_t j = 0; j < s->n; j++) {
                if (plain) {
                    FUZZ_CHECK(dump_write_escaped(m, s->r[j].k, s->r[j].kl) == 0);
                    fputc('\n', m);
                    FUZZ_CHECK(dump_write_escaped(m, s->r[j].v, s->r[j].vl) == 0);
                    fputc('\n', m);
                } else {
                    FUZZ_CHECK(dump_write_record(m, s->print, s->r[j].k, s->r[j].kl, s->r[j].v, s->r[j].vl) == 0);
                }
            }
            if (!plain)
                FUZZ_CHECK(dump_write_end(m) == 0);
        }
        fclose(m);
        struct fd_run *again = calloc(1, sizeof *again);
        FUZZ_CHECK(again);
        int rc2 = fd_parse(buf, blen, plain ? DUMP_PLAIN : 0, 0, again, err, sizeof err);
        if (rc2 != DUMP_OK || !fd_same(run, again, plain)) {
            fprintf(stderr, "round trip: rc %d (%s)\n--- written:\n%.*s\n---\n", rc2, rc2 ? err : "",
                    (int)(blen > 4000 ? 4000 : blen), buf);
            FUZZ_CHECK(!"the dump writer's output of an accepted input does not parse back the same");
        }
        fd_free(again);
        free(again);
        free(buf);
    }
    fd_free(run);
    free(run);
    fd_escapes(text, len < 4096 ? len : 4096);
    return 0;
}
