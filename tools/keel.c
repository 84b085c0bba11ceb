/*
 * keel — the command-line tool.  One program, one subcommand per job:
 *
 *   dump / load     the mdb_dump text format (tools/dumpfmt.c, doc/dump-format.md)
 *   stat / check    statistics and the integrity walk
 *   copy            hot copies, plain or compacted
 *   get put del scan incr ttl expire persist purge buckets readers
 *                   shell verbs, one txn each
 *
 * Conventions: every failure prints "keel: <what>: <reason>" to stderr.
 * Exit codes: 0 success, 1 not found (and `check` found problems), 2 bad
 * usage or any other error.  doc/keel.1 is the manual.
 * Keys and values printed by the shell verbs use print escapes: printable
 * ASCII as is, a backslash doubled, any other byte as \xx.
 * Safety: descriptors 0-2 are always open (no message lands in a database
 * that took their number), SIGXFSZ is ignored (a file size limit is an
 * error, not a kill half way), files written appear whole or not at all,
 * and the database or its lock file is never taken as another file.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dumpfmt.h"
#include "keel.h"

#define EXIT_OK 0
#define EXIT_NOTFOUND 1 /* a key or bucket not found, check found problems, put --nx found the key */
#define EXIT_FAIL 2     /* any other error */
#define EXIT_USAGE 2

/* what `keel dump` puts in mapsize= and maxreaders=: keel's defaults for the
 * address reservation and the reader table, which this tool opens with */
#define DUMP_MAPSIZE KEEL_DEFAULT_MAX_SIZE
#define DUMP_MAXREADERS KEEL_DEFAULT_MAX_READERS

/* ---- messages ------------------------------------------------------------ */
/* "keel: what: reason", and where the library met the error when it says
 * more than the code (the lock file at fault, not the database), so the
 * user is sent to the right file. */
static int fail(const char *what, int rc)
{
    const char *reason = keel_strerror(rc), *detail = keel_error_detail();
    if (!detail || !*detail)
        fprintf(stderr, "keel: %s: %s\n", what, reason);
    else if (strstr(detail, reason)) /* "x.db-lock: Is a directory" says it all */
        fprintf(stderr, "keel: %s: %s\n", what, detail);
    else
        fprintf(stderr, "keel: %s: %s (%s)\n", what, reason, detail);
    return rc == KEEL_NOTFOUND ? EXIT_NOTFOUND : EXIT_FAIL;
}

/* fail() with a formatted <what>, for what the library answered */
static int failf(int rc, const char *fmt, ...)
{
    char what[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return fail(what, rc);
}

/* The same for the tool's own system calls: the library's last detail is
 * about something else. */
static int sys_failf(int err, const char *fmt, ...)
{
    char what[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    fprintf(stderr, "keel: %s: %s\n", what, strerror(err));
    return EXIT_FAIL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Up to max bytes of data with print escapes into buf, for messages. */
static const char *shown(const void *data, size_t len, char *buf, size_t size)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = data;
    size_t o = 0, i;
    for (i = 0; i < len && o + 5 < size; i++) {
        unsigned char c = p[i];
        if (c >= 0x20 && c <= 0x7e && c != '\\') {
            buf[o++] = (char)c;
        } else if (c == '\\') {
            buf[o++] = '\\';
            buf[o++] = '\\';
        } else {
            buf[o++] = '\\';
            buf[o++] = hex[c >> 4];
            buf[o++] = hex[c & 15];
        }
    }
    if (i < len && o + 4 <= size) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = 0;
    return buf;
}

static const char *bucket_label(const char *name) { return name ? name : "(default)"; }

/* ---- usage ------------------------------------------------------------- */
struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *usage;
    const char *summary;
};
static const struct command *find_command(const char *name);

static int usage_of(const char *cmd)
{
    const struct command *c = find_command(cmd);
    fprintf(stderr, "usage: keel %s\n", c ? c->usage : "help");
    fprintf(stderr, "       keel help    (every command, the escapes, the exit codes)\n");
    return EXIT_USAGE;
}

/* ---- arguments ----------------------------------------------------------
 * Options may stand before, between or after the positional arguments.
 * For the shell verbs an argument starting with '-' that is no known option
 * is positional (a key, a value, a negative delta); "--" ends the options. */
struct opt {
    const char *name;   /* "-s", "--ttl" */
    const char **value; /* for options with an argument */
    bool *flag;         /* for flags */
};

static int parse_args(int argc, char **argv, const struct opt *opts, bool dash_positional, char **pos, int maxpos,
                      int *npos)
{
    *npos = 0;
    bool only_pos = false;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        const struct opt *o = NULL;
        const char *inline_val = NULL;
        if (!only_pos && a[0] == '-' && a[1]) {
            if (strcmp(a, "--") == 0) {
                only_pos = true;
                continue;
            }
            for (const struct opt *q = opts; q && q->name; q++) {
                size_t n = strlen(q->name);
                if (strcmp(a, q->name) == 0) {
                    o = q;
                    break;
                }
                if (q->value && a[1] == '-' && strncmp(a, q->name, n) == 0 && a[n] == '=') {
                    o = q;
                    inline_val = a + n + 1;
                    break;
                }
            }
            if (!o && !dash_positional) {
                fprintf(stderr, "keel %s: unknown option %s\n", argv[0], a);
                return -1;
            }
        }
        if (o) {
            if (o->flag) {
                *o->flag = true;
            } else if (inline_val) {
                *o->value = inline_val;
            } else {
                if (i + 1 >= argc) {
                    fprintf(stderr, "keel %s: option %s needs a value\n", argv[0], a);
                    return -1;
                }
                *o->value = argv[++i];
            }
            continue;
        }
        if (*npos >= maxpos) {
            fprintf(stderr, "keel %s: too many arguments\n", argv[0]);
            return -1;
        }
        pos[(*npos)++] = a;
    }
    return 0;
}

static bool parse_i64(const char *s, int64_t *out)
{
    if (!*s)
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* ---- opening ------------------------------------------------------------- */
/* Set when a read-only command reads without the lock file: there is no
 * reader table to show then. */
static bool without_lock;

/* A read-only open failed because the lock file cannot be opened for
 * writing or created (read-only media, a read-only lock file), while the
 * database itself can be read. */
static bool lock_unwritable(const char *path, int rc)
{
    if (rc != EACCES && rc != EROFS && rc != EPERM)
        return false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

/* Opens path; a read-only open falls back to reading without a lock file
 * when that file is what fails, and says so. */
static int open_db(const char *path, bool write, keel_db **db)
{
    keel_options o;
    memset(&o, 0, sizeof o);
    if (!write)
        o.flags = KEEL_RDONLY;
    int rc = keel_open(path, &o, db);
    if (rc && !write && lock_unwritable(path, rc)) {
        char first[600];
        snprintf(first, sizeof first, "%s", keel_error_detail());
        o.flags = KEEL_RDONLY | KEEL_NOLOCK;
        int rc2 = keel_open(path, &o, db);
        if (rc2 == 0) {
            char lock[PATH_MAX + 8];
            if (keel_lock_path(path, lock, sizeof lock))
                snprintf(lock, sizeof lock, "%s-lock", path);
            fprintf(stderr, "keel: %s is not writable: reading without a lock; safe only while nothing writes\n",
                    lock);
            without_lock = true;
            return 0;
        }
        fprintf(stderr, "keel: open %s: %s\n", path, first[0] ? first : keel_strerror(rc));
        failf(rc2, "open %s without a lock file", path);
        return rc2;
    }
    if (rc)
        failf(rc, "open %s", path);
    return rc;
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void remove_db_files(const char *path)
{
    char lock[PATH_MAX + 8];
    bool have_lock = keel_lock_path(path, lock, sizeof lock) == 0; /* before the name goes */
    unlink(path);
    if (have_lock)
        unlink(lock);
}

/* Whether a database this command created, and failed on, is still empty:
 * another process may have created it at the same moment and committed to
 * it, and then it is not ours to remove.  db is its handle, or NULL when
 * the open failed: then only an empty file counts. */
static bool still_empty(const char *path, keel_db *db)
{
    keel_stat ks;
    struct stat st;
    if (db)
        return keel_db_stat(db, &ks) == 0 && ks.last_txnid == 0;
    return stat(path, &st) == 0 && st.st_size == 0;
}

/* ---- files the tool writes ------------------------------------------------
 * A file named on the command line may be the database or its lock file
 * under another name (a symlink, a hard link): writing it would destroy the
 * data, or the reader table of every process using the database.  Judged by
 * device and inode. */
static const char *db_part(const char *db, const struct stat *st)
{
    char lock[PATH_MAX + 8];
    struct stat s;
    if (stat(db, &s) == 0 && s.st_dev == st->st_dev && s.st_ino == st->st_ino)
        return "the database ";
    if (keel_lock_path(db, lock, sizeof lock) == 0 && stat(lock, &s) == 0 && s.st_dev == st->st_dev &&
        s.st_ino == st->st_ino)
        return "the lock file of ";
    return NULL;
}

/* Answers an exit code: EXIT_OK unless what (a path, or fd >= 0) is the
 * database db or its lock file, which it reports. */
static int refuse_db_file(const char *db, const char *what, int fd, const char *role)
{
    struct stat st;
    if (fd >= 0 ? fstat(fd, &st) != 0 : stat(what, &st) != 0)
        return EXIT_OK;
    const char *part = db_part(db, &st);
    if (!part)
        return EXIT_OK;
    fprintf(stderr, "keel: %s %s is %s%s: refused\n", role, what, part, db);
    return EXIT_FAIL;
}

/* An output file that appears whole or not at all: written under a unique
 * name beside the target, synced, renamed over it.  A target that exists
 * and is no regular file (a terminal, /dev/null, a pipe) is written
 * directly, as nothing could be renamed over it. */
struct outfile {
    char target[PATH_MAX];
    char tmp[PATH_MAX + 32];
    FILE *f;
    bool direct;
};

static int out_open(struct outfile *o, const char *path)
{
    memset(o, 0, sizeof *o);
    struct stat st;
    bool exists = stat(path, &st) == 0;
    /* a symlink stays one: the file it points to is what is replaced */
    if (exists && realpath(path, o->target) == NULL)
        return sys_failf(errno, "open %s", path);
    if (!exists && snprintf(o->target, sizeof o->target, "%s", path) >= (int)sizeof o->target)
        return sys_failf(ENAMETOOLONG, "open %s", path);
    if (exists && !S_ISREG(st.st_mode)) {
        o->direct = true;
        if (!(o->f = fopen(path, "w")))
            return sys_failf(errno, "open %s", path);
        return EXIT_OK;
    }
    int fd = -1;
    for (unsigned n = 0; fd < 0 && n < 100; n++) {
        snprintf(o->tmp, sizeof o->tmp, "%s.keel-tmp.%ld.%u", o->target, (long)getpid(), n);
        fd = open(o->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, exists ? (st.st_mode & 07777) : 0666);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0)
        return sys_failf(errno, "create a file beside %s", o->target);
    if (exists)
        fchmod(fd, st.st_mode & 07777); /* the umask must not narrow the mode it had */
    if (!(o->f = fdopen(fd, "w"))) {
        int err = errno;
        close(fd);
        unlink(o->tmp);
        return sys_failf(err, "open %s", o->tmp);
    }
    return EXIT_OK;
}

/* Ends a failed write: the target is as it was. */
static void out_discard(struct outfile *o)
{
    if (o->f)
        fclose(o->f);
    o->f = NULL;
    if (!o->direct)
        unlink(o->tmp);
}

/* Flushes, syncs and puts the file in place; an exit code. */
static int out_commit(struct outfile *o, const char *shown_as)
{
    int err = 0;
    if (fflush(o->f) || ferror(o->f))
        err = errno ? errno : EIO;
    if (!err && !o->direct && fsync(fileno(o->f)))
        err = errno;
    if (fclose(o->f) && !err)
        err = errno;
    o->f = NULL;
    if (!err && !o->direct && rename(o->tmp, o->target))
        err = errno;
    if (err) {
        out_discard(o);
        return sys_failf(err, "write %s", shown_as);
    }
    if (!o->direct) { /* the new name must last as the data does */
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", o->target);
        char *slash = strrchr(dir, '/');
        if (slash)
            slash[slash == dir] = 0; /* "/x" -> "/" */
        int dfd = open(slash ? dir : ".", O_RDONLY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    return EXIT_OK;
}

/* Opens bucket name (NULL = default) in txn; prints the error. */
static int open_bucket(keel_txn *txn, const char *name, unsigned flags, keel_bucket *b)
{
    *b = KEEL_DEFAULT_BUCKET;
    if (!name)
        return 0;
    int rc = keel_bucket_open(txn, name, flags, b);
    if (rc)
        failf(rc, "bucket %s", name);
    return rc;
}

/* ======================================================================== */
/* dump                                                                      */
/* ======================================================================== */
struct dumper {
    keel_txn *txn;
    FILE *out;
    bool print;
    uint32_t pagesize;
};

/* The bucket's records, then its expiry section if any key expires. */
static int dump_bucket(struct dumper *d, const char *name)
{
    keel_bucket b;
    if (open_bucket(d->txn, name, 0, &b))
        return EXIT_FAIL;
    if (name && !dump_name_writable(name, strlen(name))) { /* database= is one line: the format has no escape */
        char nb[KEEL_MAX_BUCKET_NAME * 3 + 8];
        fprintf(stderr, "keel: dump bucket '%s': its name holds a newline or ends in a carriage return, which the "
                        "dump format cannot carry (database=NAME is one line, without escapes); rename the bucket "
                        "to dump it\n",
                shown(name, strlen(name), nb, sizeof nb));
        return EXIT_FAIL;
    }
    if (name && strncmp(name, DUMP_EXPIRY_PREFIX, strlen(DUMP_EXPIRY_PREFIX)) == 0)
        fprintf(stderr, "keel: dump: warning: bucket '%s' has the name of an expiry section; keel load will "
                        "read it as one\n", name);
    unsigned kind = 0;
    int rc = keel_bucket_flags(d->txn, b, &kind);
    if (rc)
        return failf(rc, "dump bucket %s", bucket_label(name));
    bool dup = kind & KEEL_DUPSORT;
    struct dump_info h = {.print = d->print, .database = name, .mapsize = DUMP_MAPSIZE,
                          .maxreaders = DUMP_MAXREADERS, .pagesize = d->pagesize, .dupsort = dup};
    rc = dump_write_header(d->out, &h);
    keel_cursor *c = NULL;
    keel_val k, v;
    uint64_t expiring = 0;
    if (!rc)
        rc = keel_cursor_open(d->txn, b, &c);
    for (int r = rc ? rc : keel_cursor_first(c, &k, &v); !rc; r = keel_cursor_next(c, &k, &v)) {
        if (r) {
            rc = r == KEEL_NOTFOUND ? 0 : r;
            break;
        }
        int64_t at;
        if ((rc = keel_cursor_expiry(c, &at)))
            break;
        expiring += at != 0;
        rc = dump_write_record(d->out, d->print, k.data, k.len, v.data, v.len);
    }
    if (!rc)
        rc = dump_write_end(d->out);
    if (!rc && expiring) { /* the companion section: key -> absolute expiry ms, once a key */
        char ename[KEEL_MAX_BUCKET_NAME + sizeof DUMP_EXPIRY_PREFIX];
        snprintf(ename, sizeof ename, "%s%s", DUMP_EXPIRY_PREFIX, name ? name : "");
        h.database = ename;
        h.dupsort = 0;
        rc = dump_write_header(d->out, &h);
        /* a DUPSORT key's values share its expiry: the first value stands for the key */
        int (*step)(keel_cursor *, keel_val *, keel_val *) = dup ? keel_cursor_next_key : keel_cursor_next;
        for (int r = rc ? rc : keel_cursor_first(c, &k, &v); !rc; r = step(c, &k, &v)) {
            if (r) {
                rc = r == KEEL_NOTFOUND ? 0 : r;
                break;
            }
            int64_t at;
            if ((rc = keel_cursor_expiry(c, &at)))
                break;
            if (at) {
                char num[24];
                int n = snprintf(num, sizeof num, "%" PRId64, at);
                rc = dump_write_record(d->out, d->print, k.data, k.len, num, (size_t)n);
            }
        }
        if (!rc)
            rc = dump_write_end(d->out);
    }
    keel_cursor_close(c);
    if (rc)
        return failf(rc, "dump bucket %s", bucket_label(name));
    return EXIT_OK;
}

struct names {
    char **v;
    size_t n, cap;
};

static int collect_name(const char *name, void *ctx)
{
    struct names *ns = ctx;
    if (ns->n == ns->cap) {
        size_t cap = ns->cap ? ns->cap * 2 : 16;
        char **v = realloc(ns->v, cap * sizeof(char *));
        if (!v)
            return KEEL_NOMEM;
        ns->v = v;
        ns->cap = cap;
    }
    if (!(ns->v[ns->n] = strdup(name)))
        return KEEL_NOMEM;
    ns->n++;
    return 0;
}

static void free_names(struct names *ns)
{
    for (size_t i = 0; i < ns->n; i++)
        free(ns->v[i]);
    free(ns->v);
}

static int cmd_dump(int argc, char **argv)
{
    bool all = false, print = false;
    const char *bucket = NULL, *outpath = NULL;
    struct opt opts[] = {{"-a", NULL, &all}, {"-p", NULL, &print}, {"-s", &bucket, NULL}, {"-o", &outpath, NULL},
                         {NULL, NULL, NULL}};
    char *pos[1];
    int np;
    if (parse_args(argc, argv, opts, false, pos, 1, &np) || np != 1 || (all && bucket))
        return usage_of("dump");
    const char *path = pos[0];
    if (outpath ? refuse_db_file(path, outpath, -1, "output file")
                : refuse_db_file(path, "standard output", 1, "output"))
        return EXIT_FAIL;
    keel_db *db;
    if (open_db(path, false, &db))
        return EXIT_FAIL;
    keel_stat st;
    int rc = keel_db_stat(db, &st);
    if (rc) {
        keel_close(db);
        return failf(rc, "stat %s", path);
    }
    struct outfile of = {0};
    FILE *out = stdout;
    if (outpath) {
        if (out_open(&of, outpath)) {
            keel_close(db);
            return EXIT_FAIL;
        }
        out = of.f;
    }
    static char obuf[1 << 20];
    setvbuf(out, obuf, _IOFBF, sizeof obuf);
    struct dumper d = {.out = out, .print = print, .pagesize = st.page_size};
    int ex = EXIT_OK;
    if ((rc = keel_begin(db, KEEL_RDONLY, &d.txn))) { /* one snapshot for every section */
        ex = failf(rc, "begin a read txn on %s", path);
    } else if (all) {
        struct names ns = {0};
        if ((rc = keel_bucket_list(d.txn, collect_name, &ns)))
            ex = failf(rc, "list the buckets of %s", path);
        else
            ex = dump_bucket(&d, NULL);
        for (size_t i = 0; i < ns.n && ex == EXIT_OK; i++)
            ex = dump_bucket(&d, ns.v[i]);
        free_names(&ns);
    } else {
        ex = dump_bucket(&d, bucket);
    }
    keel_abort(d.txn);
    keel_close(db);
    if (outpath) /* a failed dump leaves the file as it was */
        return ex == EXIT_OK ? out_commit(&of, outpath) : (out_discard(&of), ex);
    if ((fflush(out) || ferror(out)) && ex == EXIT_OK)
        ex = sys_failf(errno ? errno : EIO, "write standard output");
    return ex;
}

/* ======================================================================== */
/* load                                                                      */
/* ======================================================================== */
struct loader {
    const char *path;   /* the database */
    const char *bucket; /* -s: target of sections without database= */
    bool nooverwrite;   /* -N */
    bool plain;         /* -T: no header, so the sections state no kind of bucket */
    bool created;       /* the file did not exist before this load */
    keel_db *db;
    keel_txn *txn;

    keel_bucket b;     /* the current section's bucket */
    char bname[KEEL_MAX_BUCKET_NAME + 16];
    bool expiry;       /* the current section holds expiry times */
    bool dupsort;      /* the current section's bucket is a DUPSORT one */

    /* -N: keys skipped because they existed, so that their expiry times in
     * the input are skipped too.  One list per target bucket, as the same
     * key may be skipped in one bucket and loaded in another: buckets of
     * this txn, dropped before commit. */
    struct skip_list {
        char *target; /* the bucket's name; NULL = the default bucket */
        keel_bucket b;
    } *skips;
    size_t nskips;
    const char *target; /* the current section's bucket (NULL = default), owned by the parser */

    uint64_t records, loaded, skipped, expiries;
    bool tty;
    double t0, shown_at;
};

static void load_progress(struct loader *ld, bool final)
{
    if (!ld->tty)
        return;
    double t = now_s();
    if (!final && t - ld->shown_at < 0.5)
        return;
    ld->shown_at = t;
    double el = t - ld->t0;
    fprintf(stderr, "\rkeel load: %" PRIu64 " records, %.0f records/s%s", ld->records,
            el > 0 ? (double)ld->records / el : 0.0, final ? "\n" : "   ");
}

static int load_open(struct loader *ld, uint32_t pagesize, char *err, size_t errlen)
{
    if (ld->db)
        return 0;
    keel_options o;
    memset(&o, 0, sizeof o);
    /* a new file takes the dumped page size, so keys as long as the source
     * allowed still fit; LMDB's 4096 is keel's default anyway */
    if (ld->created && pagesize >= KEEL_MIN_PAGE_SIZE && pagesize <= KEEL_MAX_PAGE_SIZE && !(pagesize & (pagesize - 1)))
        o.page_size = pagesize;
    int rc = keel_open(ld->path, &o, &ld->db);
    if (!rc && (rc = keel_begin(ld->db, 0, &ld->txn))) {
        keel_close(ld->db);
        ld->db = NULL;
    }
    if (rc)
        snprintf(err, errlen, "open %s: %s", ld->path, keel_strerror(rc));
    return rc;
}

static int load_section(void *ctx, const struct dump_section *s, char *err, size_t errlen)
{
    struct loader *ld = ctx;
    int rc = load_open(ld, s->pagesize, err, errlen);
    if (rc)
        return rc;
    const char *target = s->database ? s->database : ld->bucket;
    size_t plen = strlen(DUMP_EXPIRY_PREFIX);
    ld->expiry = s->database && strncmp(s->database, DUMP_EXPIRY_PREFIX, plen) == 0;
    if (ld->expiry)
        target = s->database[plen] ? s->database + plen : ld->bucket;
    snprintf(ld->bname, sizeof ld->bname, "%s", bucket_label(target));
    ld->target = target;
    ld->b = KEEL_DEFAULT_BUCKET;
    ld->dupsort = false;
    if (ld->expiry && s->dupsort) {
        snprintf(err, errlen, "expiry section for bucket %s has duplicates=1: an expiry section holds one time a key",
                 ld->bname);
        return KEEL_INCOMPATIBLE;
    }
    if (!target) { /* the default bucket is a plain one */
        if (s->dupsort && !ld->expiry) {
            snprintf(err, errlen, "the section holds a DUPSORT database (duplicates=1) and names no database: "
                                  "keel's default bucket is a plain one; load it into a named bucket with -s BUCKET");
            return KEEL_INCOMPATIBLE;
        }
        return 0;
    }
    rc = keel_bucket_open(ld->txn, target, 0, &ld->b);
    if (rc == KEEL_NOTFOUND && ld->expiry) {
        snprintf(err, errlen, "expiry section for bucket %s, which holds no data: %s", ld->bname, keel_strerror(rc));
        return rc;
    }
    bool want = s->dupsort;
    if (rc == KEEL_NOTFOUND) /* a new bucket of the section's kind */
        rc = keel_bucket_open(ld->txn, target, KEEL_CREATE | (want ? KEEL_DUPSORT : 0), &ld->b);
    unsigned kind = 0;
    if (!rc)
        rc = keel_bucket_flags(ld->txn, ld->b, &kind);
    if (rc) {
        snprintf(err, errlen, "bucket %s: %s", ld->bname, keel_strerror(rc));
        return rc;
    }
    ld->dupsort = kind & KEEL_DUPSORT;
    /* a bucket keeps its kind: pairs never go into the other kind of bucket
     * (-T states no kind: its pairs go into the bucket as it is) */
    if (!ld->expiry && !ld->plain && ld->dupsort != want) {
        snprintf(err, errlen,
                 "bucket %s is a %s bucket, and the section holds a %s database%s: a bucket keeps its kind; "
                 "load into another bucket (-s BUCKET for a section without database=) or drop this one first",
                 ld->bname, ld->dupsort ? "DUPSORT" : "plain", want ? "DUPSORT" : "plain (not DUPSORT)",
                 want ? " (duplicates=1)" : " (no duplicates=1)");
        return KEEL_INCOMPATIBLE;
    }
    return 0;
}

static bool same_target(const char *a, const char *b) { return a == b || (a && b && strcmp(a, b) == 0); }

/* The list of skipped keys of the current section's bucket, or NULL. */
static struct skip_list *skips_of_target(struct loader *ld)
{
    for (size_t i = 0; i < ld->nskips; i++)
        if (same_target(ld->skips[i].target, ld->target))
            return &ld->skips[i];
    return NULL;
}

/* A new list for the current bucket: a bucket private to this txn. */
static int new_skip_list(struct loader *ld, struct skip_list **out)
{
    struct skip_list *v = realloc(ld->skips, (ld->nskips + 1) * sizeof *v);
    if (!v)
        return KEEL_NOMEM;
    ld->skips = v;
    struct skip_list *sl = &v[ld->nskips];
    sl->target = ld->target ? strdup(ld->target) : NULL;
    if (ld->target && !sl->target)
        return KEEL_NOMEM;
    char name[64];
    snprintf(name, sizeof name, "__keel_load_skipped__.%ld.%zu", (long)getpid(), ld->nskips);
    int rc = keel_bucket_open(ld->txn, name, 0, &sl->b);
    if (rc == 0)
        rc = KEEL_EXISTS; /* a real bucket of that name: do not touch it */
    else if (rc == KEEL_NOTFOUND)
        rc = keel_bucket_open(ld->txn, name, KEEL_CREATE, &sl->b);
    if (rc) {
        free(sl->target);
        return rc;
    }
    ld->nskips++;
    *out = sl;
    return 0;
}

/* -N: remember a key skipped in the current bucket (its value ""), or, in a
 * DUPSORT bucket, a key this load met first and did not find ("n"). */
static int remember_key(struct loader *ld, keel_val k, bool skipped)
{
    struct skip_list *sl = skips_of_target(ld);
    int rc = sl ? 0 : new_skip_list(ld, &sl);
    return rc ? rc : keel_put(ld->txn, sl->b, k, skipped ? (keel_val){"", 0} : (keel_val){"n", 1}, 0);
}

static int remember_skip(struct loader *ld, keel_val k) { return remember_key(ld, k, true); }

/* 1: the key was skipped (was there before the load); 0: not; -1: never met. */
static int skip_state(struct loader *ld, keel_val k)
{
    struct skip_list *sl = skips_of_target(ld);
    keel_val v;
    if (!sl || keel_get(ld->txn, sl->b, k, &v) != 0)
        return -1;
    return v.len == 0;
}

static bool was_skipped(struct loader *ld, keel_val k) { return skip_state(ld, k) == 1; }

/* -N in a DUPSORT bucket: a pair already there is skipped, any other added;
 * a key that was there before the load keeps its expiry, as a skipped key
 * of a plain bucket does.  Answers what keel_put did. */
static int load_pair_noover(struct loader *ld, keel_val k, keel_val v)
{
    int st = skip_state(ld, k), rc;
    if (st < 0) { /* met for the first time: was it there? */
        keel_val old;
        rc = keel_get(ld->txn, ld->b, k, &old);
        if (rc && rc != KEEL_NOTFOUND)
            return rc;
        if ((rc = remember_key(ld, k, rc == 0)))
            return rc;
    }
    return keel_put(ld->txn, ld->b, k, v, KEEL_NODUPDATA);
}

/* Drops the lists (drop) and frees them; an error of the drop. */
static int skip_lists_end(struct loader *ld, bool drop)
{
    int rc = 0;
    for (size_t i = 0; i < ld->nskips; i++) {
        if (drop && !rc)
            rc = keel_bucket_drop(ld->txn, ld->skips[i].b);
        free(ld->skips[i].target);
    }
    free(ld->skips);
    ld->skips = NULL;
    ld->nskips = 0;
    return rc;
}

/* An expiry value: a positive decimal int64 of ms since the epoch. */
static bool parse_expiry(const void *data, size_t len, int64_t *out)
{
    const char *s = data;
    if (len == 0 || len > 19)
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        int d = s[i] - '0';
        if (v > (INT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return v > 0;
}

static int load_record(void *ctx, const void *key, size_t klen, const void *val, size_t vlen, unsigned long line,
                       char *err, size_t errlen)
{
    (void)line;
    struct loader *ld = ctx;
    keel_val k = {key, klen}, v = {val, vlen};
    char kb[100];
    int rc;
    ld->records++;
    if (!ld->expiry) {
        bool pairs = ld->dupsort && ld->nooverwrite; /* -n into a DUPSORT bucket: pair by pair */
        rc = pairs ? load_pair_noover(ld, k, v) : keel_put(ld->txn, ld->b, k, v, ld->nooverwrite ? KEEL_NOOVERWRITE : 0);
        if (rc == KEEL_EXISTS && ld->nooverwrite) {
            ld->skipped++;
            if (!pairs && (rc = remember_skip(ld, k))) {
                snprintf(err, errlen, "note skipped key '%s': %s", shown(key, klen, kb, sizeof kb), keel_strerror(rc));
                return rc;
            }
        } else if (rc) {
            snprintf(err, errlen, "put key '%s' into bucket %s: %s", shown(key, klen, kb, sizeof kb), ld->bname,
                     keel_strerror(rc));
            return rc;
        } else {
            ld->loaded++;
        }
    } else {
        int64_t at;
        if (!parse_expiry(val, vlen, &at)) {
            char vb[60];
            snprintf(err, errlen, "expiry time '%s' of key '%s' is not a positive decimal number of ms",
                     shown(val, vlen, vb, sizeof vb), shown(key, klen, kb, sizeof kb));
            return KEEL_BADARG;
        }
        if (ld->nooverwrite && was_skipped(ld, k))
            return 0;
        if ((rc = keel_expire_at(ld->txn, ld->b, k, at))) {
            snprintf(err, errlen, "set the expiry of key '%s' in bucket %s: %s", shown(key, klen, kb, sizeof kb),
                     ld->bname, keel_strerror(rc));
            return rc;
        }
        ld->expiries++;
    }
    if ((ld->records & 0xfff) == 0)
        load_progress(ld, false);
    return 0;
}

static void load_warning(void *ctx, unsigned long line, const char *msg)
{
    (void)ctx;
    fprintf(stderr, "keel: load: line %lu: warning: %s\n", line, msg);
}

/* Takes away what a failed load created: a database file that did not exist. */
static void load_undo(struct loader *ld)
{
    skip_lists_end(ld, false);
    keel_abort(ld->txn);
    ld->txn = NULL;
    bool undo = ld->created && (!ld->db || still_empty(ld->path, ld->db));
    keel_close(ld->db);
    ld->db = NULL;
    if (undo)
        remove_db_files(ld->path);
}

static int cmd_load(int argc, char **argv)
{
    bool plain = false, noover = false;
    const char *bucket = NULL, *inpath = NULL;
    struct opt opts[] = {{"-T", NULL, &plain}, {"-N", NULL, &noover}, {"-s", &bucket, NULL}, {"-f", &inpath, NULL},
                         {NULL, NULL, NULL}};
    char *pos[1];
    int np;
    if (parse_args(argc, argv, opts, false, pos, 1, &np) || np != 1)
        return usage_of("load");
    struct loader ld = {.path = pos[0], .bucket = bucket, .nooverwrite = noover, .plain = plain};
    /* reading the database (or its lock file) as a dump while loading into it */
    if (inpath ? refuse_db_file(ld.path, inpath, -1, "input file")
               : refuse_db_file(ld.path, "standard input", 0, "input"))
        return EXIT_FAIL;
    ld.created = !file_exists(ld.path);
    ld.tty = isatty(2);
    ld.t0 = ld.shown_at = now_s();
    const char *src = inpath ? inpath : "standard input";
    FILE *in = stdin;
    if (inpath && !(in = fopen(inpath, "r")))
        return sys_failf(errno, "open %s", inpath);
    struct dump_parser p = {.flags = plain ? DUMP_PLAIN : 0, .ctx = &ld, .section = load_section,
                            .record = load_record, .warning = load_warning};
    char err[1024];
    int prc = dump_parse(in, &p, err, sizeof err);
    if (in != stdin)
        fclose(in);
    if (ld.tty && ld.records)
        load_progress(&ld, true);
    if (prc) {
        load_undo(&ld);
        fprintf(stderr, "keel: load %s: %s\n", src, err);
        fprintf(stderr, "keel: load: nothing was written; %s is as it was\n", ld.path);
        return EXIT_FAIL;
    }
    int rc = 0;
    if (!ld.db && load_open(&ld, 0, err, sizeof err)) { /* empty input: the database still exists afterwards */
        load_undo(&ld);
        fprintf(stderr, "keel: load: %s\n", err);
        return EXIT_FAIL;
    }
    if ((rc = skip_lists_end(&ld, true))) {
        load_undo(&ld);
        return failf(rc, "load: drop the list of skipped keys");
    }
    if (ld.tty)
        fprintf(stderr, "keel load: committing...\r");
    rc = keel_commit(ld.txn);
    ld.txn = NULL;
    if (rc) {
        load_undo(&ld);
        return failf(rc, "load: commit to %s", ld.path);
    }
    keel_close(ld.db);
    if (ld.tty)
        fprintf(stderr, "keel load: %" PRIu64 " records loaded, %" PRIu64 " skipped, %" PRIu64
                        " expiry times, %.1f s\n",
                ld.loaded, ld.skipped, ld.expiries, now_s() - ld.t0);
    return EXIT_OK;
}

/* ======================================================================== */
/* stat, check, copy                                                        */
/* ======================================================================== */
static void print_tree_stat(const char *label, const keel_stat *s, unsigned kind)
{
    printf("  %-20s entries %" PRIu64 ", depth %u, branch pages %" PRIu64 ", leaf pages %" PRIu64
           ", overflow pages %" PRIu64 ", kind %s\n",
           label, s->entries, s->depth, s->branch_pages, s->leaf_pages, s->overflow_pages,
           kind & KEEL_DUPSORT ? "dupsort" : "plain");
}

static int stat_buckets(keel_db *db, const char *path)
{
    keel_txn *txn;
    int rc = keel_begin(db, KEEL_RDONLY, &txn);
    if (rc)
        return failf(rc, "begin a read txn on %s", path);
    struct names ns = {0};
    keel_stat s;
    if ((rc = keel_bucket_list(txn, collect_name, &ns)) == 0 &&
        (rc = keel_bucket_stat(txn, KEEL_DEFAULT_BUCKET, &s)) == 0) {
        printf("buckets:             %zu named, and the default bucket\n", ns.n);
        print_tree_stat("(default)", &s, 0);
        for (size_t i = 0; i < ns.n && !rc; i++) {
            keel_bucket b;
            unsigned kind;
            if ((rc = keel_bucket_open(txn, ns.v[i], 0, &b)) || (rc = keel_bucket_stat(txn, b, &s)) ||
                (rc = keel_bucket_flags(txn, b, &kind)))
                break;
            char label[KEEL_MAX_BUCKET_NAME * 3 + 8];
            print_tree_stat(shown(ns.v[i], strlen(ns.v[i]), label, sizeof label), &s, kind);
        }
    }
    free_names(&ns);
    keel_abort(txn);
    return rc ? failf(rc, "stat the buckets of %s", path) : EXIT_OK;
}

/* The reader slots in use; brief (stat) prints the count and the oldest lag
 * first, as labelled lines. */
static int print_readers(keel_db *db, const char *path, bool brief)
{
    size_t cap = 64, count;
    keel_reader_info *r = NULL;
    int rc;
    for (;;) {
        keel_reader_info *nr = realloc(r, cap * sizeof *r);
        if (!nr) {
            free(r);
            return fail("stat readers", KEEL_NOMEM);
        }
        r = nr;
        if ((rc = keel_db_readers(db, r, cap, &count)) || count <= cap)
            break;
        cap = count;
    }
    if (rc) {
        free(r);
        return failf(rc, "list the readers of %s", path);
    }
    uint64_t oldest = 0;
    int64_t oldest_age = 0;
    for (size_t i = 0; i < count; i++) {
        if (r[i].lag > oldest)
            oldest = r[i].lag;
        if (r[i].age_ms > oldest_age)
            oldest_age = r[i].age_ms;
    }
    /* the pid is what the reader's getpid() said: in another pid namespace
     * (a container) it is not this one's number for that process */
    if (brief) {
        printf("readers:             %zu in use\n", count);
        printf("oldest reader lag:   %" PRIu64 " txns, %.1f s%s\n", oldest, (double)oldest_age / 1000,
               count ? "" : " (no readers)");
    } else {
        printf("pid\tsnapshot\tlag\tage_s\n");
    }
    for (size_t i = 0; i < count; i++)
        printf(brief ? "  reader pid %" PRId32 ": snapshot %" PRIu64 ", lag %" PRIu64 " txns, age %.1f s\n"
                     : "%" PRId32 "\t%" PRIu64 "\t%" PRIu64 "\t%.1f\n",
               r[i].pid, r[i].txnid, r[i].lag, (double)r[i].age_ms / 1000);
    free(r);
    return EXIT_OK;
}

static int cmd_stat(int argc, char **argv)
{
    char *pos[1];
    int np;
    if (parse_args(argc, argv, NULL, false, pos, 1, &np) || np != 1)
        return usage_of("stat");
    keel_db *db;
    if (open_db(pos[0], false, &db))
        return EXIT_FAIL;
    keel_stat st;
    int rc = keel_db_stat(db, &st);
    if (rc) {
        keel_close(db);
        return failf(rc, "stat %s", pos[0]);
    }
    printf("database:            %s\n", pos[0]);
    printf("page size:           %u\n", st.page_size);
    printf("file size:           %" PRIu64 " bytes (%" PRIu64 " pages)\n", st.file_size,
           st.page_size ? st.file_size / st.page_size : 0);
    printf("last txn id:         %" PRIu64 "\n", st.last_txnid);
    printf("depth:               %u (the deepest bucket)\n", st.depth);
    printf("entries:             %" PRIu64 " (all buckets)\n", st.entries);
    printf("branch pages:        %" PRIu64 " (all trees: buckets, catalog, expiry and free-space trees)\n",
           st.branch_pages);
    printf("leaf pages:          %" PRIu64 "\n", st.leaf_pages);
    printf("overflow pages:      %" PRIu64 "\n", st.overflow_pages);
    printf("free pages:          %" PRIu64 "\n", st.free_pages);
    int ex = stat_buckets(db, pos[0]);
    if (ex == EXIT_OK && without_lock)
        printf("readers:             unknown (read without the lock file, which holds them)\n");
    else if (ex == EXIT_OK)
        ex = print_readers(db, pos[0], true);
    keel_close(db);
    return ex;
}

static void check_report(void *ctx, const char *msg)
{
    (void)ctx;
    printf("problem: %s\n", msg);
}

/* A file too damaged to open or to walk has failed the check (exit 1); a
 * path that is not there or cannot be read is an error like any other. */
static bool check_failed(int rc) { return rc == KEEL_CORRUPTED || rc == KEEL_INVALID || rc == KEEL_VERSION; }

static int cmd_check(int argc, char **argv)
{
    char *pos[1];
    int np;
    if (parse_args(argc, argv, NULL, false, pos, 1, &np) || np != 1)
        return usage_of("check");
    keel_db *db;
    int rc = open_db(pos[0], false, &db);
    if (rc)
        return check_failed(rc) ? EXIT_NOTFOUND : EXIT_FAIL;
    uint64_t problems = 0;
    rc = keel_check(db, check_report, NULL, &problems);
    keel_close(db);
    if (rc) {
        failf(rc, "check %s", pos[0]);
        return check_failed(rc) ? EXIT_NOTFOUND : EXIT_FAIL;
    }
    if (problems) {
        printf("%s: %" PRIu64 " problem%s\n", pos[0], problems, problems == 1 ? "" : "s");
        return EXIT_NOTFOUND;
    }
    printf("%s: ok, no problems\n", pos[0]);
    return EXIT_OK;
}

static int cmd_copy(int argc, char **argv)
{
    bool compact = false;
    struct opt opts[] = {{"--compact", NULL, &compact}, {"-c", NULL, &compact}, {NULL, NULL, NULL}};
    char *pos[2];
    int np;
    if (parse_args(argc, argv, opts, false, pos, 2, &np) || np != 2)
        return usage_of("copy");
    keel_db *db;
    if (open_db(pos[0], false, &db))
        return EXIT_FAIL;
    int rc = keel_copy(db, pos[1], compact ? KEEL_COPY_COMPACT : 0);
    keel_close(db);
    if (rc)
        return failf(rc, "copy %s to %s", pos[0], pos[1]);
    return EXIT_OK;
}

/* Exit 0: nothing lost; 1: dest written, some records lost; 2: an error
 * (dest not left behind). */
static int cmd_salvage(int argc, char **argv)
{
    char *pos[2];
    int np;
    if (parse_args(argc, argv, NULL, false, pos, 2, &np) || np != 2)
        return usage_of("salvage");
    keel_salvage_stat st;
    int rc = keel_salvage(pos[0], pos[1], check_report, NULL, &st);
    if (rc)
        return failf(rc, "salvage %s into %s", pos[0], pos[1]);
    printf("%s: %" PRIu64 " records recovered into %s; %" PRIu64 " damaged pages, %" PRIu64
           " key ranges lost, %" PRIu64 " leaf pages found by scanning\n",
           pos[0], st.records, pos[1], st.damaged_pages, st.lost_ranges, st.scanned_pages);
    return st.lost_ranges ? EXIT_NOTFOUND : EXIT_OK;
}

/* ======================================================================== */
/* shell verbs                                                               */
/* ======================================================================== */
struct verb { /* what every verb shares: the db, its bucket, the encoding, one txn */
    const char *path;
    const char *bucket;
    bool escaped; /* -e: KEY/VALUE arguments carry print escapes */
    bool hex;     /* --hex: arguments are hex, and so is what is printed */
    bool ms;      /* --ms: times are in milliseconds, not seconds */
    bool created; /* a write verb made the file: a failure takes it away again */
    bool dup;     /* put --dup: the bucket is (or is created as) a DUPSORT one */
    keel_db *db;
    keel_txn *txn;
    keel_bucket b;
};

/* Opens bucket name for a verb: an existing one as it is (either kind;
 * with vb->dup it must be a DUPSORT one), a missing one created by a write,
 * DUPSORT with vb->dup. */
static int verb_bucket(struct verb *vb, bool write)
{
    int rc = keel_bucket_open(vb->txn, vb->bucket, vb->dup ? KEEL_DUPSORT : 0, &vb->b);
    if (rc == KEEL_NOTFOUND && write)
        rc = keel_bucket_open(vb->txn, vb->bucket, KEEL_CREATE | (vb->dup ? KEEL_DUPSORT : 0), &vb->b);
    if (rc == KEEL_INCOMPATIBLE) /* only --dup asks for a kind */
        fprintf(stderr, "keel: bucket %s is a plain bucket, not a DUPSORT one (--dup)\n", vb->bucket);
    return rc;
}

/* Opens db, txn and bucket; writes create the file and the bucket.  Answers
 * an exit code (a missing bucket of a read is "not found"). */
static int verb_begin(struct verb *vb, bool write)
{
    bool exists = file_exists(vb->path);
    if (!write && !exists)
        return sys_failf(ENOENT, "open %s", vb->path);
    vb->created = write && !exists;
    if (open_db(vb->path, write, &vb->db)) {
        if (vb->created && still_empty(vb->path, NULL))
            remove_db_files(vb->path);
        return EXIT_FAIL;
    }
    int rc = keel_begin(vb->db, write ? 0 : KEEL_RDONLY, &vb->txn);
    if (!rc && vb->bucket && (rc = verb_bucket(vb, write)))
        keel_abort(vb->txn);
    if (rc) {
        bool undo = vb->created && still_empty(vb->path, vb->db);
        keel_close(vb->db);
        if (undo)
            remove_db_files(vb->path);
        return vb->bucket && vb->txn ? failf(rc, "bucket %s", vb->bucket) : failf(rc, "begin a txn on %s", vb->path);
    }
    return EXIT_OK;
}

/* Commits (write) or ends (read) the txn; closes the db.  A write that
 * did not commit leaves no file it made: a typo must not leave an empty
 * database behind. */
static int verb_end(struct verb *vb, bool commit)
{
    int rc = 0;
    if (commit)
        rc = keel_commit(vb->txn);
    else
        keel_abort(vb->txn);
    bool undo = vb->created && (rc || !commit) && still_empty(vb->path, vb->db);
    keel_close(vb->db);
    if (undo)
        remove_db_files(vb->path);
    return rc ? failf(rc, "commit to %s", vb->path) : EXIT_OK;
}

/* Ends the txn without committing and reports rc for the key: the exit code. */
static int verb_fail(struct verb *vb, int rc, const char *what, keel_val k)
{
    verb_end(vb, false);
    char kb[100];
    return failf(rc, "%s %s", what, shown(k.data, k.len, kb, sizeof kb));
}

/* An argument as a keel_val: as given, hex (--hex) or with print escapes
 * decoded (-e).  Decoding works in place in argv's memory. */
static int arg_val(const struct verb *vb, const char *what, char *arg, keel_val *v)
{
    size_t len = strlen(arg), bad;
    if (vb->hex && dump_unhex(arg, len, &len, &bad)) {
        fprintf(stderr, "keel: %s: bad hex at offset %zu (two hex digits a byte)\n", what, bad);
        return -1;
    }
    if (!vb->hex && vb->escaped && dump_unescape(arg, len, &len, &bad)) {
        fprintf(stderr, "keel: %s: bad escape at offset %zu (use \\\\ or \\xx)\n", what, bad);
        return -1;
    }
    if (len == 0 && strcmp(what, "key") == 0) { /* before a write creates the database for nothing */
        fprintf(stderr, "keel: key: empty (a key is 1 byte or more)\n");
        return -1;
    }
    *v = (keel_val){arg, len};
    return 0;
}

static void print_data(const struct verb *vb, const void *data, size_t len)
{
    if (vb->hex)
        dump_write_hex(stdout, data, len);
    else
        dump_write_escaped(stdout, data, len);
}

/* A time argument: a positive number of seconds, or of ms with --ms, whose
 * deadline fits in int64 ms since the epoch.  Answers NULL, or what is
 * wrong with it. */
static const char *arg_duration(const struct verb *vb, const char *s, int64_t *ms)
{
    char *end;
    errno = 0;
    long long n = strtoll(s, &end, 10);
    if (!*s || *end)
        return "is not a whole number";
    if (errno == ERANGE && n < 0)
        return "is not a positive number";
    if (errno == ERANGE)
        return "is too large";
    if (n <= 0)
        return "is not a positive number";
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t room = INT64_MAX - ((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000);
    if (vb->ms ? n > room : n > room / 1000)
        return "is too large: the expiry time would not fit in 64-bit milliseconds since 1970";
    *ms = vb->ms ? n : n * 1000;
    return NULL;
}

/* keel VERB DB [options] args...: min..max positionals after DB; every verb
 * takes -s/--bucket, -e, --hex and --ms besides its own extra options. */
static int verb_args(int argc, char **argv, struct verb *vb, const struct opt *extra, char **pos, int min, int max,
                     int *np)
{
    struct opt opts[12];
    int n = 0;
    opts[n++] = (struct opt){"-s", &vb->bucket, NULL};
    opts[n++] = (struct opt){"--bucket", &vb->bucket, NULL};
    opts[n++] = (struct opt){"-e", NULL, &vb->escaped};
    opts[n++] = (struct opt){"--hex", NULL, &vb->hex};
    opts[n++] = (struct opt){"--ms", NULL, &vb->ms};
    for (; extra && extra->name && n < 11; extra++)
        opts[n++] = *extra;
    opts[n] = (struct opt){NULL, NULL, NULL};
    char *all[8];
    if (parse_args(argc, argv, opts, true, all, max + 1, np) || *np < min + 1) {
        usage_of(argv[0]);
        return -1;
    }
    vb->path = all[0];
    if (vb->bucket && (!*vb->bucket || strlen(vb->bucket) > KEEL_MAX_BUCKET_NAME)) {
        fprintf(stderr, "keel %s: a bucket name is 1 to %d bytes\n", argv[0], KEEL_MAX_BUCKET_NAME);
        return -1;
    }
    (*np)--;
    for (int i = 0; i < *np; i++)
        pos[i] = all[i + 1];
    return 0;
}

/* get --all: every value of the key, in order, one a line */
static int get_all(struct verb *vb, keel_val k)
{
    keel_cursor *c;
    keel_val v, kk;
    int rc = keel_cursor_open(vb->txn, vb->b, &c);
    if (rc)
        return verb_fail(vb, rc, "get", k);
    uint64_t n = 0;
    for (rc = keel_cursor_seek_key(c, k, &v); !rc; rc = keel_cursor_next_dup(c, &kk, &v), n++) {
        print_data(vb, v.data, v.len);
        putchar('\n');
    }
    keel_cursor_close(c);
    if (rc != KEEL_NOTFOUND || n == 0) /* seek_key's NOTFOUND: no such key */
        return verb_fail(vb, rc, "get", k);
    return verb_end(vb, false);
}

static int cmd_get(int argc, char **argv)
{
    struct verb vb = {0};
    bool all = false;
    struct opt extra[] = {{"--all", NULL, &all}, {NULL, NULL, NULL}};
    char *pos[1];
    int np, ex;
    keel_val k, v;
    if (verb_args(argc, argv, &vb, extra, pos, 1, 1, &np) || arg_val(&vb, "key", pos[0], &k))
        return EXIT_USAGE;
    if ((ex = verb_begin(&vb, false)))
        return ex;
    if (all)
        return get_all(&vb, k);
    int rc = keel_get(vb.txn, vb.b, k, &v);
    if (rc)
        return verb_fail(&vb, rc, "get", k);
    print_data(&vb, v.data, v.len);
    putchar('\n');
    return verb_end(&vb, false);
}

/* All of f (a value file or standard input), at most KEEL_MAX_VALUE_SIZE
 * bytes, into *buf (malloc'd); an exit code. */
static int read_value(FILE *f, const char *name, char **buf, size_t *len)
{
    size_t cap = 0, n = 0;
    char *b = NULL;
    for (;;) { /* ends at the end of f, or once n passes the largest value */
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 65536;
            char *nb = realloc(b, ncap);
            if (!nb) {
                free(b);
                return fail("read the value", KEEL_NOMEM);
            }
            b = nb;
            cap = ncap;
        }
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (n > KEEL_MAX_VALUE_SIZE) {
            free(b);
            fprintf(stderr, "keel: put: %s holds more than %zu bytes, the largest value\n", name, KEEL_MAX_VALUE_SIZE);
            return EXIT_FAIL;
        }
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        free(b);
        return sys_failf(errno ? errno : EIO, "read %s", name);
    }
    *buf = b;
    *len = n;
    return EXIT_OK;
}

/* The value of put: the argument, or the bytes of --value-file / --stdin as
 * they are.  *owned is what to free. */
static int put_value(const struct verb *vb, char **pos, int np, const char *file, bool from_stdin, keel_val *v,
                     char **owned)
{
    *owned = NULL;
    int sources = (np == 2) + (file != NULL) + from_stdin;
    if (sources != 1) {
        fprintf(stderr, "keel put: give the value once: as VALUE, --value-file FILE or --stdin\n");
        return usage_of("put");
    }
    if (np == 2)
        return arg_val(vb, "value", pos[1], v) ? EXIT_USAGE : EXIT_OK;
    if (file && strcmp(file, "-") != 0) {
        FILE *f = fopen(file, "rb");
        if (!f)
            return sys_failf(errno, "open %s", file);
        size_t len;
        int ex = read_value(f, file, owned, &len);
        fclose(f);
        *v = (keel_val){*owned, len};
        return ex;
    }
    size_t len;
    int ex = read_value(stdin, "standard input", owned, &len);
    *v = (keel_val){*owned, len};
    return ex;
}

static int cmd_put(int argc, char **argv)
{
    struct verb vb = {0};
    const char *ttl_arg = NULL, *file = NULL;
    bool nx = false, keepttl = false, from_stdin = false;
    struct opt extra[] = {{"--ttl", &ttl_arg, NULL}, {"--nx", NULL, &nx}, {"--keepttl", NULL, &keepttl},
                          {"--value-file", &file, NULL}, {"--stdin", NULL, &from_stdin}, {"--dup", NULL, &vb.dup},
                          {NULL, NULL, NULL}};
    char *pos[2];
    int np, ex;
    keel_val k, v;
    int64_t ttl = 0;
    if (verb_args(argc, argv, &vb, extra, pos, 1, 2, &np))
        return EXIT_USAGE;
    const char *bad = ttl_arg ? arg_duration(&vb, ttl_arg, &ttl) : NULL;
    if (bad || (ttl_arg && keepttl)) {
        if (bad)
            fprintf(stderr, "keel put: --ttl %s %s (a positive number of seconds, of ms with --ms)\n", ttl_arg, bad);
        else
            fprintf(stderr, "keel put: --ttl and --keepttl contradict each other\n");
        return usage_of("put");
    }
    if (vb.dup && !vb.bucket) {
        fprintf(stderr, "keel put: --dup needs -s BUCKET: the default bucket is a plain one\n");
        return usage_of("put");
    }
    if (arg_val(&vb, "key", pos[0], &k))
        return EXIT_USAGE;
    char *owned;
    if ((ex = put_value(&vb, pos, np, file, from_stdin, &v, &owned)))
        return ex;
    if ((ex = verb_begin(&vb, true))) {
        free(owned);
        return ex;
    }
    unsigned flags = (nx ? KEEL_NOOVERWRITE : 0) | (keepttl ? KEEL_KEEPTTL : 0);
    int rc = ttl ? keel_put_ttl(vb.txn, vb.b, k, v, ttl, flags) : keel_put(vb.txn, vb.b, k, v, flags);
    if (rc == KEEL_EXISTS) { /* --nx: an answer, not a failure of the tool */
        verb_fail(&vb, rc, "put", k);
        ex = EXIT_NOTFOUND;
    } else {
        ex = rc ? verb_fail(&vb, rc, "put", k) : verb_end(&vb, true);
    }
    free(owned);
    return ex;
}

/* del and persist: one key, one write, KEEL_NOTFOUND when absent */
static int verb_key_write(int argc, char **argv, int (*op)(keel_txn *, keel_bucket, keel_val))
{
    struct verb vb = {0};
    char *pos[1];
    int np, ex;
    keel_val k;
    if (verb_args(argc, argv, &vb, NULL, pos, 1, 1, &np) || arg_val(&vb, "key", pos[0], &k))
        return EXIT_USAGE;
    if (!file_exists(vb.path))
        return sys_failf(ENOENT, "open %s", vb.path);
    if ((ex = verb_begin(&vb, true)))
        return ex;
    int rc = op(vb.txn, vb.b, k);
    if (rc)
        return verb_fail(&vb, rc, argv[0], k);
    return verb_end(&vb, true);
}

/* del KEY: the key with every value; del KEY VALUE: that one pair */
static int cmd_del(int argc, char **argv)
{
    struct verb vb = {0};
    char *pos[2];
    int np, ex;
    keel_val k, v;
    if (verb_args(argc, argv, &vb, NULL, pos, 1, 2, &np) || arg_val(&vb, "key", pos[0], &k) ||
        (np == 2 && arg_val(&vb, "value", pos[1], &v)))
        return EXIT_USAGE;
    if (!file_exists(vb.path))
        return sys_failf(ENOENT, "open %s", vb.path);
    if ((ex = verb_begin(&vb, true)))
        return ex;
    int rc = np == 2 ? keel_del_value(vb.txn, vb.b, k, v) : keel_del(vb.txn, vb.b, k);
    if (rc && np == 2) {
        char vbuf[100];
        verb_end(&vb, false);
        char kb[100];
        return failf(rc, "del %s %s", shown(k.data, k.len, kb, sizeof kb), shown(v.data, v.len, vbuf, sizeof vbuf));
    }
    if (rc)
        return verb_fail(&vb, rc, "del", k);
    return verb_end(&vb, true);
}
static int cmd_persist(int argc, char **argv) { return verb_key_write(argc, argv, keel_persist); }

static int cmd_expire(int argc, char **argv)
{
    struct verb vb = {0};
    char *pos[2];
    int np, ex;
    keel_val k;
    int64_t ttl;
    if (verb_args(argc, argv, &vb, NULL, pos, 2, 2, &np))
        return EXIT_USAGE;
    const char *bad = arg_duration(&vb, pos[1], &ttl);
    if (bad) {
        fprintf(stderr, "keel expire: the time to live %s %s (a positive number of seconds, of ms with --ms)\n",
                pos[1], bad);
        return usage_of("expire");
    }
    if (arg_val(&vb, "key", pos[0], &k))
        return EXIT_USAGE;
    if (!file_exists(vb.path))
        return sys_failf(ENOENT, "open %s", vb.path);
    if ((ex = verb_begin(&vb, true)))
        return ex;
    int rc = keel_expire(vb.txn, vb.b, k, ttl);
    if (rc)
        return verb_fail(&vb, rc, "expire", k);
    return verb_end(&vb, true);
}

static int cmd_scan(int argc, char **argv)
{
    struct verb vb = {0};
    const char *prefix_arg = NULL, *from_arg = NULL, *limit_arg = NULL;
    struct opt extra[] = {{"--prefix", &prefix_arg, NULL}, {"--from", &from_arg, NULL},
                          {"--limit", &limit_arg, NULL}, {NULL, NULL, NULL}};
    char *pos[1];
    int np, ex;
    int64_t limit = -1;
    keel_val prefix = {"", 0}, from = {"", 0};
    if (verb_args(argc, argv, &vb, extra, pos, 0, 0, &np))
        return EXIT_USAGE;
    if (limit_arg && (!parse_i64(limit_arg, &limit) || limit < 0)) {
        fprintf(stderr, "keel scan: --limit wants a number >= 0\n");
        return usage_of("scan");
    }
    if ((prefix_arg && arg_val(&vb, "prefix", (char *)prefix_arg, &prefix)) ||
        (from_arg && arg_val(&vb, "from", (char *)from_arg, &from)))
        return EXIT_USAGE;
    if ((ex = verb_begin(&vb, false)))
        return ex;
    /* start at the later of the prefix and --from: the first key >= both */
    keel_val start = prefix;
    if (from.len) {
        size_t n = from.len < prefix.len ? from.len : prefix.len;
        int c = memcmp(from.data, prefix.data, n);
        if (c > 0 || (c == 0 && from.len > prefix.len))
            start = from;
    }
    keel_cursor *c;
    int rc = keel_cursor_open(vb.txn, vb.b, &c);
    keel_val k, v;
    if (!rc)
        rc = start.len ? keel_cursor_seek(c, start, &k, &v) : keel_cursor_first(c, &k, &v);
    for (int64_t n = 0; !rc && (limit < 0 || n < limit); n++) {
        if (k.len < prefix.len || memcmp(k.data, prefix.data, prefix.len) != 0)
            break;
        print_data(&vb, k.data, k.len);
        putchar('\t');
        print_data(&vb, v.data, v.len);
        putchar('\n');
        rc = keel_cursor_next(c, &k, &v);
    }
    if (rc == KEEL_NOTFOUND)
        rc = 0;
    keel_cursor_close(c);
    verb_end(&vb, false);
    if (rc)
        return failf(rc, "scan %s", vb.path);
    if (fflush(stdout))
        return sys_failf(errno, "write standard output");
    return EXIT_OK;
}

static int cmd_incr(int argc, char **argv)
{
    struct verb vb = {0};
    char *pos[2];
    int np, ex;
    keel_val k;
    int64_t delta = 1, result;
    if (verb_args(argc, argv, &vb, NULL, pos, 1, 2, &np))
        return EXIT_USAGE;
    if (np == 2 && !parse_i64(pos[1], &delta)) {
        fprintf(stderr, "keel incr: DELTA must be a decimal 64-bit integer\n");
        return usage_of("incr");
    }
    if (arg_val(&vb, "key", pos[0], &k))
        return EXIT_USAGE;
    if ((ex = verb_begin(&vb, true)))
        return ex;
    int rc = keel_incr(vb.txn, vb.b, k, delta, &result);
    if (rc)
        return verb_fail(&vb, rc, "incr", k);
    ex = verb_end(&vb, true);
    if (ex == EXIT_OK)
        printf("%" PRId64 "\n", result);
    return ex;
}

static int cmd_ttl(int argc, char **argv)
{
    struct verb vb = {0};
    char *pos[1];
    int np, ex;
    keel_val k;
    int64_t ms;
    if (verb_args(argc, argv, &vb, NULL, pos, 1, 1, &np) || arg_val(&vb, "key", pos[0], &k))
        return EXIT_USAGE;
    if ((ex = verb_begin(&vb, false)))
        return ex;
    int rc = keel_ttl(vb.txn, vb.b, k, &ms);
    if (rc)
        return verb_fail(&vb, rc, "ttl", k);
    verb_end(&vb, false);
    /* seconds round as Redis's TTL does (to the nearest); -1 stays -1 */
    printf("%" PRId64 "\n", ms < 0 || vb.ms ? ms : (ms + 500) / 1000);
    return EXIT_OK;
}

static int cmd_purge(int argc, char **argv)
{
    struct verb vb = {0};
    char *pos[1];
    int np, ex;
    int64_t max = INT64_MAX;
    if (verb_args(argc, argv, &vb, NULL, pos, 0, 1, &np))
        return EXIT_USAGE;
    if (np == 1 && (!parse_i64(pos[0], &max) || max <= 0)) {
        fprintf(stderr, "keel purge: MAX must be a number > 0\n");
        return usage_of("purge");
    }
    if (!file_exists(vb.path))
        return sys_failf(ENOENT, "open %s", vb.path);
    if (vb.bucket) { /* purge spans every bucket, in expiry order */
        fprintf(stderr, "keel purge: purges every bucket; -s is not for it\n");
        return usage_of("purge");
    }
    if ((ex = verb_begin(&vb, true)))
        return ex;
    size_t purged = 0;
    int rc = keel_purge(vb.txn, (size_t)max, &purged);
    if (rc) {
        verb_end(&vb, false);
        return failf(rc, "purge %s", vb.path);
    }
    if ((ex = verb_end(&vb, true)) == EXIT_OK)
        printf("%zu\n", purged);
    return ex;
}

static int print_name(const char *name, void *ctx)
{
    print_data(ctx, name, strlen(name));
    putchar('\n');
    return 0;
}

static int cmd_buckets(int argc, char **argv)
{
    struct verb vb = {0};
    char *pos[1];
    int np, ex;
    if (verb_args(argc, argv, &vb, NULL, pos, 0, 0, &np))
        return EXIT_USAGE;
    if (vb.bucket) {
        fprintf(stderr, "keel buckets: lists every bucket; -s is not for it\n");
        return usage_of("buckets");
    }
    if ((ex = verb_begin(&vb, false)))
        return ex;
    int rc = keel_bucket_list(vb.txn, print_name, &vb);
    verb_end(&vb, false);
    return rc ? failf(rc, "list the buckets of %s", vb.path) : EXIT_OK;
}

static int cmd_readers(int argc, char **argv)
{
    char *pos[1];
    int np;
    if (parse_args(argc, argv, NULL, false, pos, 1, &np) || np != 1)
        return usage_of("readers");
    if (!file_exists(pos[0]))
        return sys_failf(ENOENT, "open %s", pos[0]);
    keel_db *db;
    if (open_db(pos[0], false, &db))
        return EXIT_FAIL;
    if (without_lock) {
        keel_close(db);
        char lock[PATH_MAX + 8];
        if (keel_lock_path(pos[0], lock, sizeof lock))
            snprintf(lock, sizeof lock, "%s-lock", pos[0]);
        fprintf(stderr, "keel: readers %s: the reader table is in %s, which could not be opened\n", pos[0], lock);
        return EXIT_FAIL;
    }
    int ex = print_readers(db, pos[0], false);
    keel_close(db);
    return ex;
}

/* ======================================================================== */
/* help and dispatch                                                         */
/* ======================================================================== */
static int cmd_help(int argc, char **argv);
static int run_command(int argc, char **argv);

static const struct command commands[] = {
    {"dump", cmd_dump, "dump [-a | -s BUCKET] [-p] [-o FILE] DB",
     "write buckets in mdb_dump's text format (-a every bucket, -p print format)"},
    {"load", cmd_load, "load [-s BUCKET] [-N] [-T] [-f FILE] DB",
     "read that format into DB, in one txn (-N skip existing keys, or pairs in a DUPSORT\n"
     "      bucket; -T plain text pairs)"},
    {"stat", cmd_stat, "stat DB",
     "page size, depth, entries and kind (plain or dupsort) per bucket, pages by kind, free pages, readers"},
    {"check", cmd_check, "check DB", "walk the newest snapshot; list every problem"},
    {"copy", cmd_copy, "copy [--compact] DB DEST", "a consistent copy while writers go on"},
    {"salvage", cmd_salvage, "salvage SRC DEST", "a new database from every record of a damaged one still readable"},
    {"get", cmd_get, "get DB [VERB-OPTIONS] [--all] KEY",
     "print a value (a DUPSORT key's first one; --all: each of its values, one a line)"},
    {"put", cmd_put,
     "put DB [VERB-OPTIONS] [--dup] [--ttl T] [--nx] [--keepttl] KEY (VALUE | --value-file FILE | --stdin)",
     "store a value (a DUPSORT bucket adds it to the key's values); --dup: the bucket (-s) is,\n"
     "      or is created as, a DUPSORT one; --ttl: expire in T seconds; --nx: only if the key is absent\n"
     "      (exit 1 if present); --value-file FILE (- for standard input) or --stdin: the value is that\n"
     "      file's bytes, as they are"},
    {"del", cmd_del, "del DB [VERB-OPTIONS] KEY [VALUE]",
     "delete a key with all its values, or (VALUE) the one pair KEY VALUE"},
    {"scan", cmd_scan, "scan DB [VERB-OPTIONS] [--prefix P] [--from K] [--limit N]",
     "print KEY<tab>VALUE lines in key order (every pair of a DUPSORT bucket)"},
    {"incr", cmd_incr, "incr DB [VERB-OPTIONS] KEY [DELTA]", "add DELTA (default 1) to a decimal counter"},
    {"ttl", cmd_ttl, "ttl DB [VERB-OPTIONS] KEY", "seconds until the key expires (ms with --ms), -1 if never"},
    {"expire", cmd_expire, "expire DB [VERB-OPTIONS] KEY T", "make a key expire in T seconds (ms with --ms)"},
    {"persist", cmd_persist, "persist DB [VERB-OPTIONS] KEY", "remove a key's expiry"},
    {"purge", cmd_purge, "purge DB [MAX]", "remove up to MAX (default all) expired keys; print how many"},
    {"buckets", cmd_buckets, "buckets DB [--hex]", "list the named buckets"},
    {"readers", cmd_readers, "readers DB", "the readers: pid (as the reader sees it), snapshot txn id, lag in commits, age in s"},
    {"help", cmd_help, "help [COMMAND]", "this text"},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; name && i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static int cmd_help(int argc, char **argv)
{
    if (argc > 1) {
        const struct command *c = find_command(argv[1]);
        if (!c) {
            fprintf(stderr, "keel: no command '%s' (keel help lists them)\n", argv[1]);
            return EXIT_USAGE;
        }
        printf("usage: keel %s\n  %s\n", c->usage, c->summary);
        return EXIT_OK;
    }
    printf("keel %d.%d.%d — the keel database tool\n\nusage:\n", KEEL_VERSION_MAJOR, KEEL_VERSION_MINOR,
           KEEL_VERSION_PATCH);
    for (size_t i = 0; i < NCOMMANDS; i++)
        printf("  keel %s\n      %s\n", commands[i].usage, commands[i].summary);
    printf("\n"
           "VERB-OPTIONS: -s BUCKET or --bucket BUCKET (default: the default bucket),\n"
           "-e (arguments carry print escapes), --hex (arguments and output in hex),\n"
           "--ms (times in milliseconds instead of seconds).  Commands that only\n"
           "read open DB read-only and never create it (and read without its lock\n"
           "file, with a warning, where that cannot be written); put, incr and load\n"
           "create a missing DB, and remove it again when they fail.  put takes a\n"
           "value from a file with --value-file FILE, from standard input with\n"
           "--stdin.  keel COMMAND --help shows one command.\n"
           "\n"
           "Binary data: get, scan and buckets print keys and values with print\n"
           "escapes, as mdb_dump -p does: printable ASCII as it is, a backslash as \\\\,\n"
           "every other byte as \\xx (two lowercase hex digits).  scan separates key\n"
           "and value with a tab, which is always escaped inside them.  KEY, VALUE and\n"
           "P are taken byte for byte as given; with -e they are read with the same\n"
           "escapes, so what scan prints can be passed back.  An argument starting\n"
           "with '-' that is not an option counts as a key or value; \"--\" ends the\n"
           "options.\n"
           "\n"
           "dump / load: the text format of LMDB's mdb_dump / mdb_load (see\n"
           "doc/dump-format.md).  Expiry times travel in companion sections named\n"
           "%s<bucket>.  A DUPSORT bucket is a section with duplicates=1\n"
           "and dupsort=1, one record a pair; load makes such a section a DUPSORT\n"
           "bucket, and never loads a section into a bucket of the other kind.\n"
           "load runs in ONE write txn: on any error nothing is written (a DB that\n"
           "load created is removed again).\n"
           "\n"
           "exit codes:\n"
           "  0  success (check: no problems)\n"
           "  1  not found: a key or bucket (\"keel: <what>: KEEL_NOTFOUND\"), put --nx\n"
           "     found the key, check found problems\n"
           "  2  bad usage (usage printed), or any other error, printed as\n"
           "     \"keel: <what>: <reason>\" (a malformed load names the line)\n",
           DUMP_EXPIRY_PREFIX);
    return EXIT_OK;
}

/* A process started with descriptor 0, 1 or 2 closed would hand that number
 * to the next file opened, the database or its lock file, and a message
 * printed later would be written into it. */
static void standard_fds_open(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
            continue;
        /* the lower ones are open by now, so this takes number fd */
        if (open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY) != fd)
            _exit(EXIT_FAIL); /* no safe way on: a later open could land on fd */
    }
}

/* What a command printed must have reached standard output: a full disk or
 * a closed pipe turns a success into an error. */
static int stdout_flushed(int ex)
{
    bool bad = fflush(stdout) != 0 || ferror(stdout);
    int err = errno;
    if (fclose(stdout) != 0 && !bad) {
        bad = true;
        err = errno;
    }
    if (!bad || ex == EXIT_FAIL)
        return ex;
    fprintf(stderr, "keel: write standard output: %s\n", strerror(err ? err : EIO));
    return EXIT_FAIL;
}

int main(int argc, char **argv)
{
    standard_fds_open();
    /* beyond RLIMIT_FSIZE a write then fails with EFBIG (KEEL_FULL), and the
     * command ends with an error and the database as it was, instead of
     * being killed half way */
    signal(SIGXFSZ, SIG_IGN);
    return stdout_flushed(run_command(argc, argv));
}

static int run_command(int argc, char **argv)
{
    if (argc < 2) {
        cmd_help(1, argv);
        return EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0)
        name = "help";
    if (strcmp(name, "--version") == 0) {
        printf("keel %d.%d.%d\n", KEEL_VERSION_MAJOR, KEEL_VERSION_MINOR, KEEL_VERSION_PATCH);
        return EXIT_OK;
    }
    const struct command *c = find_command(name);
    if (!c) {
        fprintf(stderr, "keel: unknown command '%s'\n", argv[1]);
        fprintf(stderr, "usage: keel COMMAND ...   (keel help lists them)\n");
        return EXIT_USAGE;
    }
    /* keel COMMAND --help (or -h right after COMMAND): that command's usage */
    for (int i = 2; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--help") == 0 || (i == 2 && strcmp(argv[i], "-h") == 0))
            return cmd_help(2, (char *[]){"help", (char *)c->name, NULL});
    argv[1] = (char *)c->name;
    return c->run(argc - 1, argv + 1);
}
