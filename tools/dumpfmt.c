/*
 * dumpfmt.c — writer and streaming parser for the mdb_dump text format.
 *
 * The parser reads through a block buffer of its own (fread + memchr), so a
 * line costs no more than finding its newline; a line longer than the
 * buffer grows it, up to the longest line the line's role can need.  Data lines are decoded in place in that
 * buffer; the key is copied aside while its value line is read.
 */
#include "dumpfmt.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char hexdigits[] = "0123456789abcdef";

static bool printable(unsigned char c) { return c >= 0x20 && c <= 0x7e; } /* isprint in the C locale */

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* ---- writing ------------------------------------------------------------ */
static int out_status(FILE *out)
{
    if (!ferror(out))
        return 0;
    return errno ? errno : EIO;
}

int dump_name_writable(const char *name, size_t len)
{
    return !memchr(name, '\n', len) && !(len && name[len - 1] == '\r');
}

int dump_write_header(FILE *out, const struct dump_info *h)
{
    if (h->database && !dump_name_writable(h->database, strlen(h->database)))
        return EINVAL;
    fprintf(out, "VERSION=%d\n", DUMP_VERSION);
    fprintf(out, "format=%s\n", h->print ? "print" : "bytevalue");
    if (h->database)
        fprintf(out, "database=%s\n", h->database);
    fputs("type=btree\n", out);
    fprintf(out, "mapsize=%llu\n", (unsigned long long)h->mapsize);
    fprintf(out, "maxreaders=%u\n", (unsigned)h->maxreaders);
    if (h->dupsort) /* mdb_dump's order: duplicates=1, then the flag names */
        fputs("duplicates=1\ndupsort=1\n", out);
    fprintf(out, "db_pagesize=%u\n", (unsigned)h->pagesize);
    fputs("HEADER=END\n", out);
    return out_status(out);
}

/* Encodes data in chunks through a stack buffer: one fwrite per chunk. */
static void write_encoded(FILE *out, int print, const unsigned char *p, size_t len)
{
    char buf[4096];
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (n > sizeof buf - 3) {
            fwrite(buf, 1, n, out);
            n = 0;
        }
        unsigned char c = p[i];
        if (print && printable(c)) {
            if (c == '\\')
                buf[n++] = '\\';
            buf[n++] = (char)c;
        } else {
            if (print)
                buf[n++] = '\\';
            buf[n++] = hexdigits[c >> 4];
            buf[n++] = hexdigits[c & 15];
        }
    }
    if (n)
        fwrite(buf, 1, n, out);
}

int dump_write_escaped(FILE *out, const void *data, size_t len)
{
    write_encoded(out, 1, data, len);
    return out_status(out);
}

int dump_write_hex(FILE *out, const void *data, size_t len)
{
    write_encoded(out, 0, data, len);
    return out_status(out);
}

int dump_write_record(FILE *out, int print, const void *key, size_t klen, const void *val, size_t vlen)
{
    putc(' ', out);
    write_encoded(out, print, key, klen);
    fputs("\n ", out);
    write_encoded(out, print, val, vlen);
    putc('\n', out);
    return out_status(out);
}

int dump_write_end(FILE *out)
{
    fputs("DATA=END\n", out);
    return out_status(out);
}

int dump_unescape(char *s, size_t len, size_t *outlen, size_t *bad_at)
{
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        if (s[i] != '\\') {
            s[o++] = s[i++];
            continue;
        }
        if (i + 1 < len && s[i + 1] == '\\') {
            s[o++] = '\\';
            i += 2;
            continue;
        }
        int hi = i + 2 < len ? hexval((unsigned char)s[i + 1]) : -1;
        int lo = i + 2 < len ? hexval((unsigned char)s[i + 2]) : -1;
        if (hi < 0 || lo < 0) {
            if (bad_at)
                *bad_at = i;
            return -1;
        }
        s[o++] = (char)(hi << 4 | lo);
        i += 3;
    }
    *outlen = o;
    return 0;
}

int dump_unhex(char *s, size_t len, size_t *outlen, size_t *bad_at)
{
    for (size_t i = 0; i < len; i += 2) {
        int hi = hexval((unsigned char)s[i]), lo = i + 1 < len ? hexval((unsigned char)s[i + 1]) : -1;
        if (hi < 0 || lo < 0) {
            if (bad_at)
                *bad_at = hi < 0 ? i : i + 1;
            return -1;
        }
        s[i / 2] = (char)(hi << 4 | lo);
    }
    *outlen = len / 2;
    return 0;
}

/* ---- reading lines ------------------------------------------------------ */
struct reader {
    FILE *in;
    char *buf;
    size_t cap, pos, end; /* unread bytes are buf[pos, end) */
    size_t max_line;
    bool eof;
    unsigned long lineno; /* of the line last returned */
};

enum { LINE_OK, LINE_EOF, LINE_ERR_READ, LINE_ERR_NOMEM, LINE_ERR_LONG };

/* The next line without its newline (LF or CR LF); valid until the next
 * call.  The last line may lack its newline. */
static int read_line(struct reader *r, char **line, size_t *len)
{
    size_t scanned = 0; /* bytes of buf[pos, end) known to hold no newline */
    for (;;) {
        size_t avail = r->end - r->pos - scanned;
        char *nl = avail ? memchr(r->buf + r->pos + scanned, '\n', avail) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - (r->buf + r->pos));
            if (n > r->max_line + 1 || (n == r->max_line + 1 && r->buf[r->pos + n - 1] != '\r'))
                return LINE_ERR_LONG;
            *line = r->buf + r->pos;
            *len = n && (*line)[n - 1] == '\r' ? n - 1 : n;
            r->pos += n + 1;
            r->lineno++;
            return LINE_OK;
        }
        scanned = r->end - r->pos;
        if (scanned > r->max_line + 1) /* + 1: a CR before the LF to come */
            return LINE_ERR_LONG;
        if (r->eof) {
            if (scanned == 0)
                return LINE_EOF;
            if (scanned > r->max_line)
                return LINE_ERR_LONG;
            *line = r->buf + r->pos;
            *len = scanned;
            r->pos = r->end;
            r->lineno++;
            return LINE_OK;
        }
        if (r->pos > 0) { /* keep the partial line, drop what was consumed */
            memmove(r->buf, r->buf + r->pos, scanned);
            r->end = scanned;
            r->pos = 0;
        }
        if (r->end == r->cap) {
            size_t ncap = r->cap ? r->cap * 2 : 65536;
            if (ncap < r->cap) /* wrapped */
                return LINE_ERR_NOMEM;
            char *nb = realloc(r->buf, ncap);
            if (!nb)
                return LINE_ERR_NOMEM;
            r->buf = nb;
            r->cap = ncap;
        }
        size_t got = fread(r->buf + r->end, 1, r->cap - r->end, r->in);
        r->end += got;
        if (got == 0) {
            if (ferror(r->in))
                return LINE_ERR_READ;
            r->eof = true;
        }
    }
}

/* ---- parsing ------------------------------------------------------------ */
enum role { ROLE_HEADER, ROLE_KEY, ROLE_VALUE }; /* of the next line */

struct parse {
    const struct dump_parser *p;
    struct reader r;
    enum role role;
    bool role_print;
    char *err;
    size_t errlen;
    char *key; /* the pending key, decoded */
    size_t keylen, keycap;
    unsigned long keyline;
    char *database; /* the current section's database= value */
};

static int parse_fail(struct parse *ps, int code, unsigned long line, const char *fmt, ...)
{
    if (ps->err && ps->errlen) {
        int n = snprintf(ps->err, ps->errlen, "line %lu: ", line);
        if (n < 0)
            n = 0;
        if ((size_t)n < ps->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(ps->err + n, ps->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return code;
}

static void parse_warn(struct parse *ps, unsigned long line, const char *fmt, ...)
{
    if (!ps->p->warning)
        return;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ps->p->warning(ps->p->ctx, line, msg);
}

/* A callback said stop: its message, behind the line number. */
static int stopped(struct parse *ps, unsigned long line, const char *cbmsg)
{
    return parse_fail(ps, DUMP_ESTOP, line, "%s", cbmsg[0] ? cbmsg : "stopped");
}

/* The longest line role can need: its data at the worst text encoding. */
static size_t role_limit(enum role role, bool print)
{
    size_t per = print ? 3 : 2, data = role == ROLE_KEY ? DUMP_MAX_KEY : DUMP_MAX_VALUE;
    if (role == ROLE_HEADER)
        return DUMP_MAX_HEADER_LINE;
    return data > (SIZE_MAX - 1) / per ? SIZE_MAX - 1 : 1 + per * data;
}

/* The next line read is a header line, a key line or a value line. */
static void expect(struct parse *ps, enum role role, bool print)
{
    size_t lim = role_limit(role, print);
    ps->role = role;
    ps->role_print = print;
    ps->r.max_line = ps->p->max_line && ps->p->max_line < lim ? ps->p->max_line : lim;
}

static int line_error(struct parse *ps, int lr)
{
    unsigned long at = ps->r.lineno + 1;
    size_t max = ps->r.max_line;
    switch (lr) {
    case LINE_ERR_READ:
        return parse_fail(ps, DUMP_EREAD, at, "read error: %s", strerror(errno ? errno : EIO));
    case LINE_ERR_NOMEM:
        return parse_fail(ps, DUMP_ENOMEM, at, "out of memory reading a long line");
    }
    if (max != role_limit(ps->role, ps->role_print)) /* the caller's own limit */
        return parse_fail(ps, DUMP_EINPUT, at, "line longer than %zu bytes", max);
    if (ps->role == ROLE_HEADER)
        return parse_fail(ps, DUMP_EINPUT, at, "header line longer than %zu bytes (is this a dump?)", max);
    return parse_fail(ps, DUMP_EINPUT, at,
                      "%s line longer than %zu bytes: more than any %s can need (at most %zu bytes, %s)",
                      ps->role == ROLE_KEY ? "key" : "value", max, ps->role == ROLE_KEY ? "key" : "value",
                      ps->role == ROLE_KEY ? DUMP_MAX_KEY : DUMP_MAX_VALUE,
                      ps->role_print ? "3 characters a byte with print escapes" : "2 hex digits a byte");
}

/* A byte for a message: itself if printable, else \xx. */
static const char *show(unsigned char c, char buf[8])
{
    if (printable(c) && c != '\'')
        snprintf(buf, 8, "'%c'", c);
    else
        snprintf(buf, 8, "\\x%02x", c);
    return buf;
}

/* Decodes a data line's payload in place.  col0 is the column of s[0]. */
static int decode(struct parse *ps, bool print, char *s, size_t len, size_t col0, size_t *outlen)
{
    if (print) {
        size_t bad;
        if (dump_unescape(s, len, outlen, &bad))
            return parse_fail(ps, DUMP_EINPUT, ps->r.lineno,
                        "bad escape at column %zu (a backslash must be followed by a backslash or two hex digits)",
                        col0 + bad);
        return 0;
    }
    if (len & 1)
        return parse_fail(ps, DUMP_EINPUT, ps->r.lineno, "odd number of hex digits (%zu)", len);
    for (size_t i = 0; i < len; i += 2) {
        int hi = hexval((unsigned char)s[i]), lo = hexval((unsigned char)s[i + 1]);
        if (hi < 0 || lo < 0) {
            size_t at = hi < 0 ? i : i + 1;
            char b[8];
            return parse_fail(ps, DUMP_EINPUT, ps->r.lineno, "bad hex digit %s at column %zu",
                        show((unsigned char)s[at], b), col0 + at);
        }
        s[i / 2] = (char)(hi << 4 | lo);
    }
    *outlen = len / 2;
    return 0;
}

static int keep_key(struct parse *ps, const char *k, size_t len)
{
    if (len > ps->keycap) {
        size_t ncap = ps->keycap ? ps->keycap : 256;
        while (ncap < len)
            ncap *= 2;
        char *nk = realloc(ps->key, ncap);
        if (!nk)
            return parse_fail(ps, DUMP_ENOMEM, ps->r.lineno, "out of memory for a key of %zu bytes", len);
        ps->key = nk;
        ps->keycap = ncap;
    }
    if (len)
        memcpy(ps->key, k, len);
    ps->keylen = len;
    ps->keyline = ps->r.lineno;
    return 0;
}

/* One key or value line (payload without the leading space).  Pairs go to
 * the record callback. */
static int data_line(struct parse *ps, bool print, bool *have_key, char *s, size_t len, size_t col0)
{
    size_t n;
    int rc = decode(ps, print, s, len, col0, &n);
    if (rc)
        return rc;
    if (!*have_key) {
        if ((rc = keep_key(ps, s, n)))
            return rc;
        *have_key = true;
        return 0;
    }
    *have_key = false;
    if (!ps->p->record)
        return 0;
    char msg[512] = "";
    if (ps->p->record(ps->p->ctx, ps->key, ps->keylen, s, n, ps->keyline, msg, sizeof msg))
        return stopped(ps, ps->keyline, msg);
    return 0;
}

static bool is(const char *s, size_t len, const char *word)
{
    size_t n = strlen(word);
    return len == n && memcmp(s, word, n) == 0;
}

/* A decimal number no greater than max; false for anything else. */
static bool number(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    if (len == 0 || len > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

/* LMDB's per-database flags (mdb_dump prints the set ones as NAME=1, and
 * duplicates=1 besides dupsort=1 for a DUPSORT database). */
static const char *const dup_flags[] = {"duplicates", "dupsort", NULL};
static const char *const order_flags[] = {"reversekey", "integerkey", NULL};
static const char *const dup_order_flags[] = {"integerdup", "reversedup", NULL};

static bool in_list(const char *const *list, const char *s, size_t len)
{
    for (int i = 0; list[i]; i++)
        if (is(s, len, list[i]))
            return true;
    return false;
}

/* One header line, kw=value.  *done is set by HEADER=END. */
static int header_line(struct parse *ps, struct dump_section *s, char *line, size_t len, bool *done)
{
    unsigned long ln = ps->r.lineno;
    if (len > 0 && line[0] == ' ')
        return parse_fail(ps, DUMP_EINPUT, ln, "data line in the header (no HEADER=END before it)");
    char *eq = memchr(line, '=', len);
    if (!eq)
        return parse_fail(ps, DUMP_EINPUT, ln, "expected a header line KEYWORD=VALUE (or HEADER=END)");
    size_t klen = (size_t)(eq - line);
    char *v = eq + 1;
    size_t vlen = len - klen - 1;
    uint64_t n;
    if (is(line, klen, "HEADER")) {
        if (!is(v, vlen, "END"))
            return parse_fail(ps, DUMP_EINPUT, ln, "expected HEADER=END");
        *done = true;
    } else if (is(line, klen, "VERSION")) {
        if (!number(v, vlen, 3, &n) || n < 1)
            return parse_fail(ps, DUMP_EINPUT, ln, "unsupported VERSION=%.*s (1 to %d are understood)",
                        (int)(vlen > 40 ? 40 : vlen), v, DUMP_VERSION);
        s->version = (int)n;
    } else if (is(line, klen, "format")) {
        if (is(v, vlen, "print"))
            s->print = 1;
        else if (is(v, vlen, "bytevalue"))
            s->print = 0;
        else
            return parse_fail(ps, DUMP_EINPUT, ln, "unsupported format (print or bytevalue are understood)");
    } else if (is(line, klen, "type")) {
        if (!is(v, vlen, "btree"))
            return parse_fail(ps, DUMP_EINPUT, ln, "unsupported type (only btree is understood)");
    } else if (is(line, klen, "database")) {
        if (vlen == 0)
            return parse_fail(ps, DUMP_EINPUT, ln, "empty database name");
        if (memchr(v, '\0', vlen))
            return parse_fail(ps, DUMP_EINPUT, ln, "database name holds a NUL byte");
        if (!dump_name_writable(v, vlen)) /* a line "database=x\r\r\n" */
            return parse_fail(ps, DUMP_EINPUT, ln, "database name ends in a carriage return");
        char *d = malloc(vlen + 1);
        if (!d)
            return parse_fail(ps, DUMP_ENOMEM, ln, "out of memory");
        memcpy(d, v, vlen);
        d[vlen] = 0;
        free(ps->database);
        ps->database = d;
        s->database = d;
    } else if (is(line, klen, "mapsize")) {
        if (!number(v, vlen, UINT64_MAX, &n))
            return parse_fail(ps, DUMP_EINPUT, ln, "mapsize is not a decimal number");
        s->mapsize = n;
    } else if (is(line, klen, "maxreaders")) {
        if (!number(v, vlen, UINT32_MAX, &n))
            return parse_fail(ps, DUMP_EINPUT, ln, "maxreaders is not a decimal number");
        s->maxreaders = (uint32_t)n;
    } else if (is(line, klen, "db_pagesize")) {
        if (!number(v, vlen, UINT32_MAX, &n))
            return parse_fail(ps, DUMP_EINPUT, ln, "db_pagesize is not a decimal number");
        s->pagesize = (uint32_t)n;
    } else if (is(line, klen, "mapaddr")) {
        /* a fixed map address: meaningless here */
    } else if (in_list(dup_flags, line, klen)) {
        if (is(v, vlen, "1"))
            s->dupsort = 1;
        else if (!is(v, vlen, "0"))
            return parse_fail(ps, DUMP_EINPUT, ln, "%.*s=%.*s: expected 0 or 1", (int)klen, line,
                              (int)(vlen > 40 ? 40 : vlen), v);
    } else if (in_list(order_flags, line, klen)) {
        if (!is(v, vlen, "0"))
            parse_warn(ps, ln, "%.*s ignored: keys are stored in bytewise order", (int)klen, line);
    } else if (in_list(dup_order_flags, line, klen)) {
        if (!is(v, vlen, "0"))
            parse_warn(ps, ln, "%.*s ignored: a key's values are stored in bytewise order", (int)klen, line);
    } else if (is(line, klen, "dupfixed")) {
        if (!is(v, vlen, "0"))
            parse_warn(ps, ln, "dupfixed ignored: a key's values may differ in size");
    } else {
        parse_warn(ps, ln, "unrecognized keyword ignored: %.*s", (int)(klen > 60 ? 60 : klen), line);
    }
    return 0;
}

/* A header whose first line is already in hand, then its data, to DATA=END. */
static int section(struct parse *ps, char *line, size_t len)
{
    struct dump_section s = {.version = DUMP_VERSION, .line = ps->r.lineno};
    free(ps->database);
    ps->database = NULL;
    bool done = false;
    int rc, lr;
    for (;;) {
        if ((rc = header_line(ps, &s, line, len, &done)))
            return rc;
        if (done)
            break;
        expect(ps, ROLE_HEADER, false);
        lr = read_line(&ps->r, &line, &len);
        if (lr == LINE_EOF)
            return parse_fail(ps, DUMP_EINPUT, ps->r.lineno, "unexpected end of input in the header (no HEADER=END)");
        if (lr != LINE_OK)
            return line_error(ps, lr);
    }
    char msg[512] = "";
    if (ps->p->section && ps->p->section(ps->p->ctx, &s, msg, sizeof msg))
        return stopped(ps, s.line, msg);
    bool have_key = false;
    for (;;) {
        expect(ps, have_key ? ROLE_VALUE : ROLE_KEY, s.print);
        lr = read_line(&ps->r, &line, &len);
        if (lr == LINE_EOF)
            return parse_fail(ps, DUMP_EINPUT, ps->r.lineno,
                        "unexpected end of input: the section that starts on line %lu has no DATA=END", s.line);
        if (lr != LINE_OK)
            return line_error(ps, lr);
        if (len > 0 && line[0] == ' ') {
            if ((rc = data_line(ps, s.print, &have_key, line + 1, len - 1, 2)))
                return rc;
        } else if (is(line, len, "DATA=END")) {
            if (have_key)
                return parse_fail(ps, DUMP_EINPUT, ps->r.lineno, "the key on line %lu has no value line", ps->keyline);
            if (ps->p->section_end && ps->p->section_end(ps->p->ctx, ps->r.lineno, msg, sizeof msg))
                return stopped(ps, ps->r.lineno, msg);
            return 0;
        } else {
            return parse_fail(ps, DUMP_EINPUT, ps->r.lineno,
                        "expected a data line (one leading space) or DATA=END");
        }
    }
}

/* mdb_load -T: key line, value line, print escapes, nothing else. */
static int plain(struct parse *ps)
{
    struct dump_section s = {.version = DUMP_VERSION, .print = 1, .line = 1};
    char msg[512] = "";
    if (ps->p->section && ps->p->section(ps->p->ctx, &s, msg, sizeof msg))
        return stopped(ps, 1, msg);
    bool have_key = false;
    char *line;
    size_t len;
    for (;;) {
        expect(ps, have_key ? ROLE_VALUE : ROLE_KEY, true);
        int lr = read_line(&ps->r, &line, &len);
        if (lr == LINE_EOF)
            break;
        if (lr != LINE_OK)
            return line_error(ps, lr);
        int rc = data_line(ps, true, &have_key, line, len, 1);
        if (rc)
            return rc;
    }
    if (have_key)
        return parse_fail(ps, DUMP_EINPUT, ps->r.lineno, "the key on line %lu has no value line (end of input)",
                    ps->keyline);
    /* line numbers count from 1: an empty input ends its section "on line 1" */
    unsigned long end = ps->r.lineno ? ps->r.lineno : 1;
    if (ps->p->section_end && ps->p->section_end(ps->p->ctx, end, msg, sizeof msg))
        return stopped(ps, end, msg);
    return 0;
}

int dump_parse(FILE *in, const struct dump_parser *p, char *err, size_t errlen)
{
    struct parse ps;
    memset(&ps, 0, sizeof ps);
    ps.p = p;
    ps.r.in = in;
    ps.err = err;
    ps.errlen = errlen;
    if (err && errlen)
        err[0] = 0;
    int rc = 0;
    if (p->flags & DUMP_PLAIN) {
        rc = plain(&ps);
    } else {
        for (;;) {
            char *line;
            size_t len;
            expect(&ps, ROLE_HEADER, false);
            int lr = read_line(&ps.r, &line, &len);
            if (lr == LINE_EOF)
                break;
            if (lr != LINE_OK) {
                rc = line_error(&ps, lr);
                break;
            }
            if (len == 0) /* blank lines between sections */
                continue;
            if (line[0] == ' ') {
                rc = parse_fail(&ps, DUMP_EINPUT, ps.r.lineno,
                                "data line outside a section (expected a header line such as VERSION=3)");
                break;
            }
            if ((rc = section(&ps, line, len)))
                break;
        }
    }
    free(ps.r.buf);
    free(ps.key);
    free(ps.database);
    return rc;
}
