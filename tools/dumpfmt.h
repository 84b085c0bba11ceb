/*
 * dumpfmt.h — the text dump format of LMDB's mdb_dump / mdb_load, as written
 * by `keel dump` and read by `keel load` (doc/dump-format.md has the whole
 * format).  Two halves:
 *
 *   - a writer: one header, records, DATA=END, per section;
 *   - a streaming parser: reads line by line from a FILE (memory bounded by
 *     the longest line, never by the input, and a line by what its role can
 *     need: a header, a key, a value), counts lines, and calls back
 *     once per section start, record and section end.  It never crashes and
 *     never reads past what it was given, whatever the input, so it can sit
 *     behind a fuzz target as it is.
 *
 * Nothing here knows keel: the parser hands out bytes, the caller stores
 * them.  The one keel convention the format carries — expiry times in
 * companion sections named DUMP_EXPIRY_PREFIX + bucket — is the caller's.
 */
#ifndef KEEL_DUMPFMT_H
#define KEEL_DUMPFMT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define DUMP_VERSION 3
/* A section named this + B holds key -> decimal absolute expiry (ms since
 * the epoch) for the keys of bucket B that expire ("" = the default bucket). */
#define DUMP_EXPIRY_PREFIX "__keel_expiry__/"

/* ---- writing ------------------------------------------------------------ */
struct dump_info { /* one section's header */
    int print;            /* format=print (escaped text), else bytevalue (hex) */
    const char *database; /* database=NAME; NULL for the default bucket */
    uint64_t mapsize;
    uint32_t maxreaders;
    uint32_t pagesize;
    int dupsort;          /* duplicates=1 and dupsort=1, as mdb_dump writes them: a DUPSORT bucket */
};

/* Each answers 0, or errno when writing failed (ferror). */
/* EINVAL (nothing written) when h->database cannot be written (below). */
int dump_write_header(FILE *out, const struct dump_info *h);
/* Can a database name be written as database=NAME?  The line has no
 * escapes: no newline, and no CR at its end, which a reader takes for the
 * CR of a CR LF.  The parser refuses such a name too, so what it accepts
 * writes back the same. */
int dump_name_writable(const char *name, size_t len);
int dump_write_record(FILE *out, int print, const void *key, size_t klen, const void *val, size_t vlen);
int dump_write_end(FILE *out);

/* Writes data with print escapes (printable ASCII as is, backslash as \\,
 * every other byte as \xx in lowercase hex), no leading space, no newline. */
int dump_write_escaped(FILE *out, const void *data, size_t len);

/* Writes data as lowercase hex, two digits a byte, no space, no newline. */
int dump_write_hex(FILE *out, const void *data, size_t len);

/* Decodes print escapes in place: s[0..len) becomes s[0..*outlen).  Answers
 * 0, or -1 for a backslash not followed by a backslash or two hex digits
 * (*bad_at gets its offset in s). */
int dump_unescape(char *s, size_t len, size_t *outlen, size_t *bad_at);

/* Decodes hex (two digits a byte, either case) in place, as dump_unescape;
 * -1 for a character that is not a hex digit or an odd count (*bad_at). */
int dump_unhex(char *s, size_t len, size_t *outlen, size_t *bad_at);

/* ---- parsing ------------------------------------------------------------ */
struct dump_section { /* a parsed header; pointers valid during the callback */
    int version;          /* VERSION= (3 if absent) */
    int print;            /* format=print, else bytevalue */
    const char *database; /* NULL if no database= line */
    uint64_t mapsize;     /* 0 if absent */
    uint32_t maxreaders;  /* 0 if absent */
    uint32_t pagesize;    /* db_pagesize=, 0 if absent */
    int dupsort;          /* duplicates=1 or dupsort=1: a DUPSORT database (LMDB's MDB_DUPSORT) */
    unsigned long line;   /* line number of the header's first line (1-based) */
};

#define DUMP_PLAIN 0x1u /* mdb_load -T: key line, value line, print escapes, no header, no leading space */

/* Callbacks answer 0 to go on; anything else stops the parse, which then
 * answers DUMP_ESTOP with "line N: " + whatever the callback put in err.
 * NULL callbacks are skipped. */
struct dump_parser {
    unsigned flags;  /* DUMP_PLAIN */
    size_t max_line; /* longest line accepted, newline excluded; 0 = what the line's role can need (below) */
    void *ctx;
    int (*section)(void *ctx, const struct dump_section *s, char *err, size_t errlen);
    int (*record)(void *ctx, const void *key, size_t klen, const void *val, size_t vlen, unsigned long line,
                  char *err, size_t errlen);
    int (*section_end)(void *ctx, unsigned long line, char *err, size_t errlen);
    /* a header keyword the format allows but keel does not use, and the like */
    void (*warning)(void *ctx, unsigned long line, const char *msg);
};

/* The longest lines read: a header line; a key line holds at most
 * DUMP_MAX_KEY bytes (no keel key is longer, at any page size), a value
 * line DUMP_MAX_VALUE (keel's largest value), each at 3 characters a byte
 * with print escapes, 2 in hex, plus the leading space.  A longer line is
 * malformed input, named by its number, not a reason to fill memory. */
#define DUMP_MAX_HEADER_LINE ((size_t)65536)
#define DUMP_MAX_KEY ((size_t)65536)
#define DUMP_MAX_VALUE ((size_t)0xFFFFFFFEu)

enum {
    DUMP_OK = 0,
    DUMP_EINPUT = 1, /* malformed input: err says the line and what was wrong */
    DUMP_EREAD = 2,  /* the FILE reported an error */
    DUMP_ENOMEM = 3, /* a line did not fit in memory */
    DUMP_ESTOP = 4,  /* a callback answered non-zero */
};

/* Reads `in` to its end (or to the first problem).  Empty input is zero
 * sections.  A CR before a line's LF ends the line too (files edited on
 * Windows): mdb_dump never writes a raw CR, in either format.  err (may be NULL if errlen is 0) gets a message on failure. */
int dump_parse(FILE *in, const struct dump_parser *p, char *err, size_t errlen);

#endif
