/*
 * test_cli.c — the `keel` command-line tool, run as a program, and its dump
 * format parser (tools/dumpfmt.c, compiled into this test) called directly.
 *
 *   - dump → load → dump gives the same text: binary keys and values, empty
 *     values, overflow values, both formats, -a with several buckets, -s,
 *     expiry times (far in the future, so that nothing expires meanwhile);
 *     the loaded database also equals the source entry by entry.
 *   - malformed input: non-zero exit, the line number in the message, and
 *     the database byte for byte as it was (the load is one txn).
 *   - -N, -T, stat, check (clean, a damaged leaf, random damage: never a
 *     crash), copy and copy --compact, the shell verbs, usage errors.
 *   - the real LMDB tools (skipped when mdb_load / mdb_dump are not on PATH):
 *     LMDB → keel and keel → LMDB give the same data lines.
 *   - the parser on its own: random mutations never crash it, and a
 *     generated stream of many records is parsed in constant memory.
 *   - the field-reliability issue: output to /dev/full, RLIMIT_FSIZE,
 *     closed standard descriptors, dump -o whole-or-nothing and its
 *     refusals, copy to a full disk, unwritable lock files (tmpfs and bind
 *     mounts when root), put's arguments and value sources, CR LF and
 *     line bounds, readers' lag and age.
 *
 * The `keel` binary is found next to this test's build directory:
 * build/test/test_cli → build/tools/keel (or $MESON_BUILD_ROOT/tools/keel).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "format.h"
#include "testutil.h"

#include "../tools/dumpfmt.c" /* the parser under test, and its writer */

#define OK(x) assert_int_equal((x), 0)

static char keel_bin[4096];
static char dir[1024]; /* a private temporary directory */
static char path_a[2048], path_b[2048], path_c[2048], txt[2048], txt2[2048];

/* ---- files ---------------------------------------------------------------- */
static char *read_file(const char *p, size_t *len)
{
    FILE *f = fopen(p, "rb");
    if (!f) {
        if (len)
            *len = 0;
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *b = malloc(cap + 1);
    assert_non_null(b);
    size_t got;
    while ((got = fread(b + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            b = realloc(b, cap + 1);
            assert_non_null(b);
        }
    }
    fclose(f);
    b[n] = 0;
    if (len)
        *len = n;
    return b;
}

static void write_file(const char *p, const void *data, size_t len)
{
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    OK(fclose(f));
}

static void write_text(const char *p, const char *s) { write_file(p, s, strlen(s)); }

static bool exists(const char *p) { return access(p, F_OK) == 0; }

static void in_dir(char *buf, size_t size, const char *name) { snprintf(buf, size, "%s/%s", dir, name); }

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

/* ---- running programs ------------------------------------------------------ */
struct run {
    int code;      /* exit code; -1 if killed by a signal */
    int sig;       /* the signal, if any */
    char *out, *err;
    size_t outlen;
};

static void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof *r);
}

/* How to start a child: stdin from in (NULL = /dev/null), stdout to out
 * (NULL = a file collected into run.out), descriptors to leave closed, a
 * file size limit (0 = none). */
struct how {
    const char *in, *out;
    bool close_in, close_out, close_err;
    rlim_t fsize;
};

/* Runs argv (argv[0] found on PATH unless it has a '/') as h says;
 * collects stdout, stderr and the exit status. */
static struct run run_how(const struct how *h, char *const argv[])
{
    char outp[2048], errp[2048];
    in_dir(outp, sizeof outp, "run.out");
    in_dir(errp, sizeof errp, "run.err");
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int in = open(h->in ? h->in : "/dev/null", O_RDONLY);
        int out = open(h->out ? h->out : outp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int err = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (in < 0 || out < 0 || err < 0)
            _exit(126);
        dup2(in, 0), dup2(out, 1), dup2(err, 2);
        close(in), close(out), close(err);
        if (h->close_in)
            close(0);
        if (h->close_out)
            close(1);
        if (h->close_err)
            close(2);
        if (h->fsize) {
            struct rlimit rl = {h->fsize, h->fsize};
            if (setrlimit(RLIMIT_FSIZE, &rl))
                _exit(125);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    struct run r = {0};
    r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    r.sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
    r.out = h->out ? NULL : read_file(outp, &r.outlen);
    r.err = read_file(errp, NULL);
    if (!r.out)
        r.out = strdup("");
    if (!r.err)
        r.err = strdup("");
    return r;
}

static struct run runv(const char *in_path, char *const argv[])
{
    struct how h = {.in = in_path};
    return run_how(&h, argv);
}

#define KEEL(in, ...) runv((in), (char *const[]){keel_bin, __VA_ARGS__, NULL})
#define PROG(in, ...) runv((in), (char *const[]){__VA_ARGS__, NULL})

/* Runs keel and asserts it exits 0; answers its stdout (caller frees). */
static char *keel_ok(const char *in, char *const args[])
{
    char *argv[32];
    int n = 0;
    argv[n++] = keel_bin;
    for (int i = 0; args[i]; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    struct run r = runv(in, argv);
    if (r.code != 0)
        fprintf(stderr, "keel %s exited %d (signal %d): %s\n", args[0], r.code, r.sig, r.err);
    assert_int_equal(r.code, 0);
    char *out = r.out;
    free(r.err);
    return out;
}
#define KEEL_OK(in, ...) keel_ok((in), (char *const[]){__VA_ARGS__, NULL})

static bool on_path(const char *prog)
{
    const char *p = getenv("PATH");
    if (!p)
        return false;
    char *copy = strdup(p), *save = NULL;
    bool found = false;
    for (char *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
        char full[2048];
        snprintf(full, sizeof full, "%s/%s", *d ? d : ".", prog);
        found = access(full, X_OK) == 0;
    }
    free(copy);
    return found;
}

/* The lines of text that start with one of the prefixes, joined. */
static char *keep_lines(const char *text, const char *const *prefixes)
{
    size_t n = strlen(text);
    char *out = malloc(n + 1);
    assert_non_null(out);
    size_t o = 0;
    for (const char *l = text; *l;) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l + 1) : strlen(l);
        for (int i = 0; prefixes[i]; i++) {
            if (strncmp(l, prefixes[i], strlen(prefixes[i])) == 0) {
                memcpy(out + o, l, len);
                o += len;
                break;
            }
        }
        l += len;
    }
    out[o] = 0;
    return out;
}

static const char *const data_and_names[] = {" ", "database=", NULL};

/* ---- databases -------------------------------------------------------------- */
#define FAR_FUTURE 4102444800000LL /* 2100-01-01 in ms */

static void put(keel_txn *t, keel_bucket b, const void *k, size_t kl, const void *v, size_t vl)
{
    OK(keel_put(t, b, (keel_val){k, kl}, (keel_val){v, vl}, 0));
}

/* Creates bucket name in the database at path, holding k -> v. */
static void bucket_with_one_key(const char *path, const char *name)
{
    keel_db *db;
    keel_txn *t;
    keel_bucket b;
    OK(keel_open(path, NULL, &db));
    OK(keel_begin(db, 0, &t));
    OK(keel_bucket_open(t, name, KEEL_CREATE, &b));
    put(t, b, "k", 1, "v", 1);
    OK(keel_commit(t));
    keel_close(db);
}

/* A database with binary keys and values, empty and overflow values, keys
 * with spaces, backslashes and newlines, two named buckets, and (ttls)
 * absolute expiry times far in the future on some keys. */
static void fill_db(const char *p, bool ttls)
{
    keel_db *db;
    keel_txn *t;
    OK(keel_open(p, NULL, &db));
    OK(keel_begin(db, 0, &t));
    keel_bucket d = KEEL_DEFAULT_BUCKET, b1, b2;
    OK(keel_bucket_open(t, "b1", KEEL_CREATE, &b1));
    OK(keel_bucket_open(t, "b two", KEEL_CREATE, &b2));
    for (int i = 0; i < 256; i++) {
        uint8_t k[3] = {'k', (uint8_t)i, (uint8_t)(255 - i)}, v[64];
        for (int j = 0; j < 64; j++)
            v[j] = (uint8_t)(i * 7 + j);
        put(t, d, k, sizeof k, v, (size_t)(i % 64));
    }
    put(t, d, "space key ", 10, " lead and trail ", 16);
    put(t, d, "back\\slash", 10, "new\nline\ttab\\", 13);
    put(t, d, "empty", 5, "", 0);
    put(t, d, "\0\0\0", 3, "\0", 1);
    static uint8_t big[20000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 31 + 7);
    put(t, d, "big", 3, big, sizeof big);
    for (int i = 0; i < 600; i++) {
        char k[32], v[64];
        int kl = snprintf(k, sizeof k, "key%05d", i), vl = snprintf(v, sizeof v, "value %d\\%d", i, i * i);
        put(t, b1, k, (size_t)kl, v, (size_t)vl);
    }
    put(t, b2, "\xff\xfe", 2, "=", 1);
    put(t, b2, "DATA=END", 8, "HEADER=END", 10);
    if (ttls) {
        OK(keel_expire_at(t, d, (keel_val){"empty", 5}, FAR_FUTURE + 1));
        OK(keel_expire_at(t, d, (keel_val){"big", 3}, FAR_FUTURE + 2));
        for (int i = 0; i < 600; i += 7) {
            char k[32];
            int kl = snprintf(k, sizeof k, "key%05d", i);
            OK(keel_expire_at(t, b1, (keel_val){k, (size_t)kl}, FAR_FUTURE + i * 1000));
        }
    }
    OK(keel_commit(t));
    keel_close(db);
}

static int list_names(const char *name, void *ctx)
{
    char *buf = ctx;
    strcat(buf, name);
    strcat(buf, "\n");
    return 0;
}

/* Every bucket of a and b holds the same entries with the same expiry times. */
static void assert_same_db(const char *pa, const char *pb)
{
    keel_db *da, *db;
    keel_txn *ta, *tb;
    OK(keel_open(pa, NULL, &da));
    OK(keel_open(pb, NULL, &db));
    OK(keel_begin(da, KEEL_RDONLY, &ta));
    OK(keel_begin(db, KEEL_RDONLY, &tb));
    char na[8192] = "", nb[8192] = "";
    OK(keel_bucket_list(ta, list_names, na));
    OK(keel_bucket_list(tb, list_names, nb));
    assert_string_equal(na, nb);
    char *save = NULL, *name = NULL;
    bool first = true;
    while (first || name) {
        keel_bucket ba = KEEL_DEFAULT_BUCKET, bb = KEEL_DEFAULT_BUCKET;
        if (name) {
            OK(keel_bucket_open(ta, name, 0, &ba));
            OK(keel_bucket_open(tb, name, 0, &bb));
        }
        keel_cursor *ca, *cb;
        OK(keel_cursor_open(ta, ba, &ca));
        OK(keel_cursor_open(tb, bb, &cb));
        keel_val ka, va, kb, vb;
        int ra = keel_cursor_first(ca, &ka, &va), rb = keel_cursor_first(cb, &kb, &vb);
        size_t n = 0;
        while (ra == 0 && rb == 0) {
            assert_int_equal(ka.len, kb.len);
            assert_memory_equal(ka.data, kb.data, ka.len);
            assert_int_equal(va.len, vb.len);
            if (va.len)
                assert_memory_equal(va.data, vb.data, va.len);
            int64_t ea, eb;
            OK(keel_expiry_at(ta, ba, ka, &ea));
            OK(keel_expiry_at(tb, bb, kb, &eb));
            assert_int_equal(ea, eb);
            ra = keel_cursor_next(ca, &ka, &va);
            rb = keel_cursor_next(cb, &kb, &vb);
            n++;
        }
        assert_int_equal(ra, KEEL_NOTFOUND);
        assert_int_equal(rb, KEEL_NOTFOUND);
        keel_cursor_close(ca);
        keel_cursor_close(cb);
        name = strtok_r(first ? na : NULL, "\n", &save);
        first = false;
    }
    keel_abort(ta);
    keel_abort(tb);
    keel_close(da);
    keel_close(db);
}

static void remove_db(const char *p)
{
    tu_remove(p);
}

/* ---- setup ------------------------------------------------------------------ */
static int setup(void **state)
{
    (void)state;
    const char *root = getenv("MESON_BUILD_ROOT");
    keel_bin[0] = 0;
    if (root && *root) {
        snprintf(keel_bin, sizeof keel_bin, "%s/tools/keel", root);
        if (access(keel_bin, X_OK) != 0)
            keel_bin[0] = 0;
    }
    if (!keel_bin[0]) {
        char exe[4000];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n <= 0)
            return -1;
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (!slash)
            return -1;
        *slash = 0;
        snprintf(keel_bin, sizeof keel_bin, "%s/../tools/keel", exe);
    }
    if (access(keel_bin, X_OK) != 0) {
        fprintf(stderr, "test_cli: no keel binary at %s\n", keel_bin);
        return -1;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/keel-cli-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        return -1;
    in_dir(path_a, sizeof path_a, "a.db");
    in_dir(path_b, sizeof path_b, "b.db");
    in_dir(path_c, sizeof path_c, "c.db");
    in_dir(txt, sizeof txt, "dump.txt");
    in_dir(txt2, sizeof txt2, "dump2.txt");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* Each test starts with no databases. */
static int fresh(void **state)
{
    (void)state;
    remove_db(path_a);
    remove_db(path_b);
    remove_db(path_c);
    return 0;
}

/* ---- round trips ---------------------------------------------------------------- */
/* keel dump [-p] [-a | -s BUCKET] DB; bucket "*" = -a, NULL = the default bucket */
static char *keel_dump(const char *db, bool print, const char *bucket)
{
    char *args[8];
    int n = 0;
    args[n++] = "dump";
    if (print)
        args[n++] = "-p";
    if (bucket && strcmp(bucket, "*") == 0) {
        args[n++] = "-a";
    } else if (bucket) {
        args[n++] = "-s";
        args[n++] = (char *)bucket;
    }
    args[n++] = (char *)db;
    args[n] = NULL;
    return keel_ok(NULL, args);
}

static void roundtrip(bool print, bool ttls)
{
    fill_db(path_a, ttls);
    char *d1 = print ? KEEL_OK(NULL, "dump", "-a", "-p", "-o", txt, path_a)
                     : KEEL_OK(NULL, "dump", "-a", "-o", txt, path_a);
    assert_string_equal(d1, ""); /* -o: nothing on stdout */
    free(d1);
    d1 = read_file(txt, NULL);
    char *again = keel_dump(path_a, print, "*");
    assert_string_equal(d1, again); /* -o and stdout agree */
    free(again);
    assert_non_null(strstr(d1, print ? "format=print\n" : "format=bytevalue\n"));
    /* the default bucket first, without database=, then the named ones */
    assert_memory_equal(d1, "VERSION=3\nformat=", 17);
    assert_true(strstr(d1, "database=") > strstr(d1, "DATA=END"));
    assert_non_null(strstr(d1, "database=b1\n"));
    assert_non_null(strstr(d1, "database=b two\n"));
    assert_non_null(strstr(d1, "db_pagesize=4096\n"));
    assert_non_null(strstr(d1, "mapsize="));
    assert_non_null(strstr(d1, "maxreaders="));
    if (ttls) {
        assert_non_null(strstr(d1, "database=" DUMP_EXPIRY_PREFIX "\n"));
        assert_non_null(strstr(d1, "database=" DUMP_EXPIRY_PREFIX "b1\n"));
        assert_null(strstr(d1, "database=" DUMP_EXPIRY_PREFIX "b two\n"));
    } else {
        assert_null(strstr(d1, DUMP_EXPIRY_PREFIX));
    }
    if (print)
        assert_non_null(strstr(d1, " back\\\\slash\n new\\0aline\\09tab\\\\\n"));
    free(KEEL_OK(txt, "load", path_b));
    char *d2 = keel_dump(path_b, print, "*");
    assert_string_equal(d1, d2);
    assert_same_db(path_a, path_b);
    free(d2);

    /* one bucket with -s: its header names it; it loads back into it */
    char *s1 = keel_dump(path_a, print, "b1");
    assert_non_null(strstr(s1, "database=b1\n"));
    assert_null(strstr(s1, "database=b two"));
    assert_true(!ttls == !strstr(s1, "database=" DUMP_EXPIRY_PREFIX "b1\n"));
    write_text(txt2, s1);
    free(KEEL_OK(txt2, "load", path_c));
    char *s2 = keel_dump(path_c, print, "b1");
    assert_string_equal(s1, s2);
    /* the default bucket alone: no database= line but for its expiry section */
    char *s3 = keel_dump(path_a, print, NULL);
    const char *head = print ? "VERSION=3\nformat=print\ntype=btree\n" : "VERSION=3\nformat=bytevalue\ntype=btree\n";
    assert_true(strncmp(s3, head, strlen(head)) == 0);
    assert_true(!ttls == !strstr(s3, "database="));
    free(s1);
    free(s2);
    free(s3);
    free(d1);
}

static void test_roundtrip_bytevalue(void **state)
{
    (void)state;
    roundtrip(false, false);
}

static void test_roundtrip_print(void **state)
{
    (void)state;
    roundtrip(true, false);
}

static void test_roundtrip_ttl(void **state)
{
    (void)state;
    roundtrip(false, true);
}

static void test_roundtrip_ttl_print(void **state)
{
    (void)state;
    roundtrip(true, true);
}

/* A database whose only bucket has 64 KiB pages and keys too long for 4 KiB
 * pages: a load into a new file takes db_pagesize from the header. */
static void test_roundtrip_pagesize(void **state)
{
    (void)state;
    keel_options o = {.page_size = 65536};
    keel_db *db;
    keel_txn *t;
    OK(keel_open(path_a, &o, &db));
    OK(keel_begin(db, 0, &t));
    static char k[10000];
    memset(k, 'x', sizeof k);
    OK(keel_put(t, KEEL_DEFAULT_BUCKET, (keel_val){k, sizeof k}, (keel_val){"v", 1}, 0));
    OK(keel_commit(t));
    keel_close(db);
    char *d1 = KEEL_OK(NULL, "dump", "-a", "-o", txt, path_a);
    free(d1);
    d1 = read_file(txt, NULL);
    assert_non_null(strstr(d1, "db_pagesize=65536\n"));
    free(KEEL_OK(txt, "load", path_b));
    char *d2 = KEEL_OK(NULL, "dump", "-a", path_b);
    assert_string_equal(d1, d2);
    free(d1);
    free(d2);
}

/* ---- malformed input ----------------------------------------------------------------- */
struct bad {
    const char *what;
    const char *input;
    const char *line; /* "line N" expected in the message */
    const char *says; /* and this */
    bool plain;       /* -T */
};

#define HDR "VERSION=3\nformat=bytevalue\ntype=btree\nHEADER=END\n"
#define PHDR "VERSION=3\nformat=print\ntype=btree\nHEADER=END\n"
static const struct bad bads[] = {
    {"bad hex", HDR " 6b\n 7z\nDATA=END\n", "line 6:", "bad hex digit 'z'", false},
    {"odd hex digits", HDR " 6b6\n 76\nDATA=END\n", "line 5:", "odd number of hex digits", false},
    {"missing HEADER=END", "VERSION=3\nformat=bytevalue\ntype=btree\n 6b\n 76\nDATA=END\n", "line 4:",
     "HEADER=END", false},
    {"end of input in header", "VERSION=3\nformat=print\n", "line 2:", "no HEADER=END", false},
    {"odd line", HDR " 6b\n 76\nsomething else\nDATA=END\n", "line 7:", "expected a data line", false},
    {"key without value", HDR " 6b\n 76\n 6c\nDATA=END\n", "line 8:", "the key on line 7 has no value", false},
    {"bad VERSION", "VERSION=4\nformat=print\ntype=btree\nHEADER=END\nDATA=END\n", "line 1:",
     "unsupported VERSION", false},
    {"VERSION not a number", "VERSION=three\nHEADER=END\nDATA=END\n", "line 1:", "unsupported VERSION", false},
    {"bad format", "VERSION=3\nformat=hex\nHEADER=END\nDATA=END\n", "line 2:", "unsupported format", false},
    {"bad type", "VERSION=3\ntype=hash\nHEADER=END\nDATA=END\n", "line 2:", "unsupported type", false},
    {"dupsort into the default bucket", "VERSION=3\ndupsort=1\nHEADER=END\nDATA=END\n", "line 1:",
     "keel's default bucket is a plain one", false},
    {"dupsort=2", "VERSION=3\ndatabase=d\nduplicates=2\nHEADER=END\nDATA=END\n", "line 3:", "expected 0 or 1",
     false},
    /* b1 is a plain bucket of the database, and of the new file by its first section */
    {"dupsort into a plain bucket", "VERSION=3\nformat=print\ndatabase=b1\nHEADER=END\n k0\n v\nDATA=END\n"
     "VERSION=3\nformat=print\ndatabase=b1\nduplicates=1\ndupsort=1\nHEADER=END\n k\n v\nDATA=END\n", "line 8:",
     "bucket b1 is a plain bucket, and the section holds a DUPSORT database", false},
    {"dupsort expiry section", HDR " 6b\n 76\nDATA=END\nVERSION=3\nformat=print\ndatabase=" DUMP_EXPIRY_PREFIX
     "\ndupsort=1\ntype=btree\nHEADER=END\n k\n 4102444800000\nDATA=END\n", "line 8:", "one time a key", false},
    {"no DATA=END", HDR " 6b\n 76\n", "line 6:", "no DATA=END", false},
    {"bad escape", PHDR " k\\q1\n v\nDATA=END\n", "line 5:", "bad escape at column 3", false},
    {"short escape", PHDR " k\n v\\4\nDATA=END\n", "line 6:", "bad escape", false},
    {"header line without =", "VERSION=3\nnonsense\nHEADER=END\nDATA=END\n", "line 2:", "KEYWORD=VALUE", false},
    {"data outside a section", HDR "DATA=END\n 6b\n", "line 6:", "data line outside a section", false},
    {"empty key", HDR " \n 76\nDATA=END\n", "line 5:", "KEEL_BADVALSIZE", false},
    {"bad expiry time", HDR " 6b\n 76\nDATA=END\nVERSION=3\nformat=print\ndatabase=" DUMP_EXPIRY_PREFIX
     "\ntype=btree\nHEADER=END\n k\n soon\nDATA=END\n", "line 13:", "not a positive decimal", false},
    {"expiry for a missing key", HDR " 6b\n 76\nDATA=END\nVERSION=3\nformat=print\ndatabase=" DUMP_EXPIRY_PREFIX
     "\ntype=btree\nHEADER=END\n nokey\n 4102444800000\nDATA=END\n", "line 13:", "KEEL_NOTFOUND", false},
    {"bucket name too long", "VERSION=3\ndatabase=x"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\nHEADER=END\nDATA=END\n",
     "line 1:", "KEEL_BADNAME", false},
    /* a good section, then a bad one: the good one is not kept either */
    {"second section bad", HDR " 6e6577\n 76\nDATA=END\n" HDR " 6b\n 7\nDATA=END\n", "line 13:",
     "odd number", false},
    {"plain: key without value", "a\nb\nc\n", "line 3:", "the key on line 3 has no value", true},
    {"plain: bad escape", "a\nb\\zz\n", "line 2:", "bad escape", true},
};

static void test_malformed(void **state)
{
    (void)state;
    fill_db(path_a, true);
    size_t before_len, after_len;
    char *before = read_file(path_a, &before_len);
    char *dump_before = KEEL_OK(NULL, "dump", "-a", path_a);
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
        const struct bad *b = &bads[i];
        write_text(txt, b->input);
        struct run r = b->plain ? KEEL(txt, "load", "-T", path_a) : KEEL(txt, "load", path_a);
        if (r.code != 2 || !strstr(r.err, b->line) || !strstr(r.err, b->says))
            fprintf(stderr, "case '%s': exit %d, stderr:\n%s", b->what, r.code, r.err);
        assert_int_equal(r.code, 2);
        assert_non_null(strstr(r.err, "keel: load "));
        assert_non_null(strstr(r.err, b->line));
        assert_non_null(strstr(r.err, b->says));
        run_free(&r);
        char *after = read_file(path_a, &after_len);
        assert_int_equal(before_len, after_len);
        assert_memory_equal(before, after, before_len); /* byte for byte as it was */
        free(after);
        /* into a file that does not exist: none is left behind */
        remove_db(path_b);
        r = b->plain ? KEEL(txt, "load", "-T", "-f", txt, path_b) : KEEL(NULL, "load", "-f", txt, path_b);
        assert_int_equal(r.code, 2);
        assert_false(exists(path_b));
        run_free(&r);
    }
    char *dump_after = KEEL_OK(NULL, "dump", "-a", path_a);
    assert_string_equal(dump_before, dump_after);
    free(dump_before);
    free(dump_after);
    free(before);
}

/* Unknown header keywords are warnings, as in mdb_load; so are key-order flags. */
static void test_warnings(void **state)
{
    (void)state;
    write_text(txt, "VERSION=3\nformat=print\nfoo=bar\nreversekey=1\nmapaddr=0x7f00\ntype=btree\nHEADER=END\n"
                    " k\n v\nDATA=END\n\n");
    struct run r = KEEL(txt, "load", path_a);
    assert_int_equal(r.code, 0);
    assert_non_null(strstr(r.err, "line 3: warning: unrecognized keyword ignored: foo"));
    assert_non_null(strstr(r.err, "line 4: warning: reversekey"));
    assert_null(strstr(r.err, "records/s")); /* no progress when stderr is not a terminal */
    run_free(&r);
    char *v = KEEL_OK(NULL, "get", path_a, "k");
    assert_string_equal(v, "v\n");
    free(v);
    /* empty input: a valid, empty database */
    write_text(txt, "");
    free(KEEL_OK(txt, "load", path_b));
    assert_true(exists(path_b));
    char *c = KEEL_OK(NULL, "check", path_b);
    free(c);
}

/* ---- -N, -T, -s ---------------------------------------------------------------------- */
static void test_nooverwrite(void **state)
{
    (void)state;
    free(KEEL_OK(NULL, "put", path_a, "k1", "old"));
    write_text(txt, PHDR " k1\n new\n k2\n v2\nDATA=END\n"
                    "VERSION=3\nformat=print\ndatabase=" DUMP_EXPIRY_PREFIX "\ntype=btree\nHEADER=END\n"
                    " k1\n 4102444800000\n k2\n 4102444800001\nDATA=END\n");
    free(KEEL_OK(txt, "load", "-N", path_a));
    char *v = KEEL_OK(NULL, "get", path_a, "k1");
    assert_string_equal(v, "old\n");
    free(v);
    v = KEEL_OK(NULL, "get", path_a, "k2");
    assert_string_equal(v, "v2\n");
    free(v);
    v = KEEL_OK(NULL, "ttl", path_a, "k1"); /* skipped: its expiry too */
    assert_string_equal(v, "-1\n");
    free(v);
    v = KEEL_OK(NULL, "ttl", path_a, "k2");
    assert_true(atoll(v) > 0);
    free(v);
    v = KEEL_OK(NULL, "buckets", path_a); /* the list of skipped keys is gone */
    assert_string_equal(v, "");
    free(v);
    /* a key skipped in one bucket keeps its expiry in another */
    write_text(txt2, PHDR " k1\n skipped\nDATA=END\nVERSION=3\nformat=print\ndatabase=B\ntype=btree\nHEADER=END\n k1\n inB\nDATA=END\n"
                     "VERSION=3\nformat=print\ndatabase=" DUMP_EXPIRY_PREFIX "B\ntype=btree\nHEADER=END\n"
                     " k1\n 4102444800000\nDATA=END\n");
    free(KEEL_OK(txt2, "load", "-N", path_a));
    v = KEEL_OK(NULL, "ttl", path_a, "-s", "B", "k1");
    assert_true(atoll(v) > 0);
    free(v);
    v = KEEL_OK(NULL, "buckets", path_a);
    assert_string_equal(v, "B\n");
    free(v);
    /* without -N the value is replaced */
    free(KEEL_OK(txt, "load", path_a));
    v = KEEL_OK(NULL, "get", path_a, "k1");
    assert_string_equal(v, "new\n");
    free(v);
    v = KEEL_OK(NULL, "ttl", path_a, "k1");
    assert_true(atoll(v) > 0);
    free(v);
}

static void test_plain_text(void **state)
{
    (void)state;
    write_text(txt, "alpha\nfirst value\nb\\5c\\0a\\00\n\nlast\nno newline at the end");
    free(KEEL_OK(txt, "load", "-T", "-s", "t", path_a));
    char *d = KEEL_OK(NULL, "dump", "-p", "-s", "t", path_a);
    assert_non_null(strstr(d, "HEADER=END\n alpha\n first value\n b\\\\\\0a\\00\n \n last\n no newline at the end\n"
                              "DATA=END\n"));
    free(d);
    /* -s also names the target of sections without database= */
    write_text(txt, PHDR " x\n y\nDATA=END\n");
    free(KEEL_OK(txt, "load", "-s", "other", path_a));
    d = KEEL_OK(NULL, "get", path_a, "-s", "other", "x");
    assert_string_equal(d, "y\n");
    free(d);
}

/* ---- check ------------------------------------------------------------------------------ */
/* The first leaf page holding the given bytes. */
static uint64_t find_leaf(const uint8_t *file, size_t len, size_t ps, const char *needle)
{
    for (uint64_t p = 2; (p + 1) * ps <= len; p++) {
        const uint8_t *pg = file + p * ps;
        if (page_flags(pg) == P_LEAF && memmem(pg, ps, needle, strlen(needle)))
            return p;
    }
    return 0;
}

static void test_check(void **state)
{
    (void)state;
    fill_db(path_a, true);
    struct run r = KEEL(NULL, "check", path_a);
    assert_int_equal(r.code, 0);
    assert_non_null(strstr(r.out, "no problems"));
    run_free(&r);

    size_t len;
    uint8_t *file = (uint8_t *)read_file(path_a, &len);
    uint64_t leaf = find_leaf(file, len, 4096, "key00300");
    assert_true(leaf >= 2);
    /* the leaf's slot array: offsets now point between nodes */
    uint8_t *pg = file + leaf * 4096;
    for (unsigned i = 0; i < 8; i++)
        pg[PAGE_HDR + i] ^= 0x5a;
    write_file(path_c, file, len);
    r = KEEL(NULL, "check", path_c);
    assert_int_equal(r.code, 1);
    assert_int_equal(r.sig, 0);
    assert_non_null(strstr(r.out, "problem: "));
    run_free(&r);
    /* its key bytes: keys out of order */
    free(file);
    file = (uint8_t *)read_file(path_a, &len);
    pg = file + leaf * 4096;
    uint8_t *at = memmem(pg, 4096, "key00300", 8);
    at[3] = '9';
    write_file(path_c, file, len);
    r = KEEL(NULL, "check", path_c);
    assert_int_equal(r.code, 1);
    assert_non_null(strstr(r.out, "problem: "));
    run_free(&r);
    /* both metas garbled: the file does not open; exit 1 with the error */
    free(file);
    file = (uint8_t *)read_file(path_a, &len);
    memset(file + 40, 0xee, 64);
    memset(file + 4096 + 40, 0xee, 64);
    write_file(path_c, file, len);
    r = KEEL(NULL, "check", path_c);
    assert_int_equal(r.code, 1);
    assert_non_null(strstr(r.err, "keel: open "));
    run_free(&r);
    /* not a file at all */
    r = KEEL(NULL, "check", dir);
    assert_int_equal(r.code, 2);
    run_free(&r);
    free(file);
}

/* Random damage to random pages: check exits 0 or 1, never crashes; neither
 * do dump and stat on the same file. */
static void test_check_random_damage(void **state)
{
    (void)state;
    fill_db(path_a, true);
    size_t len;
    uint8_t *clean = (uint8_t *)read_file(path_a, &len);
    uint8_t *file = malloc(len);
    uint64_t seed = tu_seed(0xC11C4EC);
    size_t npages = len / 4096;
    long rounds = 40 * tu_scale();
    int found = 0;
    for (long i = 0; i < rounds; i++) {
        memcpy(file, clean, len);
        uint64_t pg = 2 + tu_rand(&seed) % (npages - 2);
        int flips = 1 + (int)(tu_rand(&seed) % 16);
        for (int f = 0; f < flips; f++)
            file[pg * 4096 + tu_rand(&seed) % 4096] ^= (uint8_t)(1 + tu_rand(&seed) % 255);
        remove_db(path_c);
        write_file(path_c, file, len);
        struct run r = KEEL(NULL, "check", path_c);
        if (r.sig || (r.code != 0 && r.code != 1))
            fprintf(stderr, "round %ld (page %" PRIu64 ", seed %#" PRIx64 "): exit %d signal %d\n%s", i, pg,
                    tu_seed(0xC11C4EC), r.code, r.sig, r.err);
        assert_int_equal(r.sig, 0);
        assert_true(r.code == 0 || r.code == 1);
        found += r.code == 1;
        run_free(&r);
        r = KEEL(NULL, "dump", "-a", path_c);
        assert_int_equal(r.sig, 0);
        assert_true(r.code == 0 || r.code == 1 || r.code == 2);
        run_free(&r);
        r = KEEL(NULL, "stat", path_c);
        assert_int_equal(r.sig, 0);
        run_free(&r);
    }
    assert_true(found > 0);
    free(file);
    free(clean);
}

/* ---- copy, stat --------------------------------------------------------------------- */
static void test_copy(void **state)
{
    (void)state;
    fill_db(path_a, true);
    /* churn, so the compact copy differs from the plain one */
    keel_db *db;
    keel_txn *t;
    OK(keel_open(path_a, NULL, &db));
    OK(keel_begin(db, 0, &t));
    keel_bucket b1;
    OK(keel_bucket_open(t, "b1", 0, &b1));
    for (int i = 1; i < 600; i += 2) {
        char k[32];
        int kl = snprintf(k, sizeof k, "key%05d", i);
        OK(keel_del(t, b1, (keel_val){k, (size_t)kl}));
    }
    OK(keel_commit(t));
    keel_close(db);
    char *d0 = KEEL_OK(NULL, "dump", "-a", path_a);
    free(KEEL_OK(NULL, "copy", path_a, path_b));
    free(KEEL_OK(NULL, "copy", "--compact", path_a, path_c));
    char *c = KEEL_OK(NULL, "check", path_b);
    free(c);
    c = KEEL_OK(NULL, "check", path_c);
    free(c);
    char *d1 = KEEL_OK(NULL, "dump", "-a", path_b);
    char *d2 = KEEL_OK(NULL, "dump", "-a", path_c);
    assert_string_equal(d0, d1);
    assert_string_equal(d0, d2);
    struct stat sa, sc;
    OK(stat(path_a, &sa));
    OK(stat(path_c, &sc));
    assert_true(sc.st_size <= sa.st_size);
    /* the destination must not exist */
    struct run r = KEEL(NULL, "copy", path_a, path_b);
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "keel: copy "));
    run_free(&r);
    free(d0);
    free(d1);
    free(d2);
}

static void test_stat(void **state)
{
    (void)state;
    fill_db(path_a, false);
    /* a reader of ours, one commit behind */
    keel_db *db;
    keel_txn *rt, *wt;
    OK(keel_open(path_a, NULL, &db));
    OK(keel_begin(db, KEEL_RDONLY, &rt));
    OK(keel_begin(db, 0, &wt));
    OK(keel_put(wt, KEEL_DEFAULT_BUCKET, tu_val("one more"), tu_val("x"), 0));
    OK(keel_commit(wt));
    char *s = KEEL_OK(NULL, "stat", path_a);
    const char *fields[] = {"page size:           4096", "depth:", "entries:", "branch pages:", "leaf pages:",
                            "overflow pages:", "free pages:", "file size:", "last txn id:", "oldest reader lag:   1",
                            "readers:             1 in use", "(default)            entries 262", "b1 ",
                            "entries 600", "b two ", NULL};
    for (int i = 0; fields[i]; i++) {
        if (!strstr(s, fields[i]))
            fprintf(stderr, "stat output lacks '%s':\n%s", fields[i], s);
        assert_non_null(strstr(s, fields[i]));
    }
    char pidline[64];
    snprintf(pidline, sizeof pidline, "reader pid %d: snapshot ", (int)getpid());
    assert_non_null(strstr(s, pidline));
    assert_non_null(strstr(s, ", lag 1 txns, age "));
    free(s);
    keel_abort(rt);
    keel_close(db);
}

/* Reading commands work while another process holds the write txn: dump
 * sees the last commit, not the open txn's changes. */
static void test_while_writing(void **state)
{
    (void)state;
    fill_db(path_a, true);
    char *before = keel_dump(path_a, false, "*");
    keel_db *db;
    keel_txn *wt;
    OK(keel_open(path_a, NULL, &db));
    OK(keel_begin(db, 0, &wt));
    OK(keel_put(wt, KEEL_DEFAULT_BUCKET, tu_val("uncommitted"), tu_val("x"), 0));
    char *during = keel_dump(path_a, false, "*");
    assert_string_equal(before, during);
    free(KEEL_OK(NULL, "stat", path_a));
    free(KEEL_OK(NULL, "check", path_a));
    free(KEEL_OK(NULL, "copy", "--compact", path_a, path_b));
    struct run r = KEEL(NULL, "get", path_a, "uncommitted");
    assert_int_equal(r.code, 1);
    run_free(&r);
    OK(keel_commit(wt));
    keel_close(db);
    char *c = keel_dump(path_b, false, "*");
    assert_string_equal(before, c);
    free(c);
    free(before);
    free(during);
    /* a missing database is an error, and stays missing */
    r = KEEL(NULL, "dump", path_c);
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "keel: open "));
    assert_false(exists(path_c));
    run_free(&r);
}

/* keel copy (plain and --compact) while a writer process commits in a loop:
 * every commit i sets the 40 keys k00..k39 and "c" to i, so a copy holds a
 * committed state exactly when all 41 values are equal; each copy must also
 * pass keel check. */
#define HOT_KEYS 40
static void hot_commit(keel_db *db, long i)
{
    keel_txn *t;
    char v[32], k[8];
    snprintf(v, sizeof v, "%ld", i);
    if (keel_begin(db, 0, &t))
        _exit(3);
    for (int j = 0; j < HOT_KEYS; j++) {
        snprintf(k, sizeof k, "k%02d", j);
        if (keel_put(t, KEEL_DEFAULT_BUCKET, tu_val(k), tu_val(v), 0))
            _exit(4);
    }
    if (keel_put(t, KEEL_DEFAULT_BUCKET, tu_val("c"), tu_val(v), 0) || keel_commit(t))
        _exit(5);
}

static void test_copy_while_committing(void **state)
{
    (void)state;
    keel_db *db;
    OK(keel_open(path_a, &(keel_options){.flags = KEEL_NOSYNC}, &db));
    hot_commit(db, 0);
    keel_close(db);
    int go[2];
    OK(pipe(go));
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) { /* the writer: commits until the parent closes the pipe */
        close(go[1]);
        if (keel_open(path_a, &(keel_options){.flags = KEEL_NOSYNC}, &db))
            _exit(2);
        fcntl(go[0], F_SETFL, O_NONBLOCK);
        char b;
        for (long i = 1;; i++) {
            hot_commit(db, i);
            if (read(go[0], &b, 1) == 0) /* EOF: the parent is done */
                break;
        }
        keel_close(db);
        _exit(0);
    }
    close(go[0]);
    long copies = 6 * tu_scale(), first = -1, last = -1;
    for (long n = 0; n < copies; n++) {
        remove_db(path_b);
        free(n % 2 ? KEEL_OK(NULL, "copy", "--compact", path_a, path_b) : KEEL_OK(NULL, "copy", path_a, path_b));
        free(KEEL_OK(NULL, "check", path_b));
        char *out = KEEL_OK(NULL, "scan", path_b);
        /* "c\tI\nk00\tI\n...": every value the same I */
        char *save, *line = strtok_r(out, "\n", &save);
        long want = -1, lines = 0;
        for (; line; line = strtok_r(NULL, "\n", &save), lines++) {
            char *tab = strchr(line, '\t');
            assert_non_null(tab);
            long got = atol(tab + 1);
            if (want < 0)
                want = got;
            if (got != want)
                fprintf(stderr, "copy %ld: %s holds %ld, other keys %ld\n", n, line, got, want);
            assert_int_equal(got, want);
        }
        assert_int_equal(lines, HOT_KEYS + 1);
        if (first < 0)
            first = want;
        assert_true(want >= last); /* copies never go back */
        last = want;
        free(out);
    }
    close(go[1]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* the writer really ran during the copies */
    assert_true(last > first);
}

/* ---- shell verbs ------------------------------------------------------------------------ */
static void test_verbs(void **state)
{
    (void)state;
    free(KEEL_OK(NULL, "put", path_a, "hello", "world"));
    free(KEEL_OK(NULL, "put", path_a, "-s", "fruit", "apple", "red"));
    free(KEEL_OK(NULL, "put", path_a, "-s", "fruit", "apricot", "orange", "--ttl", "100000000"));
    free(KEEL_OK(NULL, "put", "-e", path_a, "bin\\00\\ff", "tab\\09back\\\\"));
    free(KEEL_OK(NULL, "put", path_a, "-dash", "-5")); /* not options: a key and a value */
    char *o = KEEL_OK(NULL, "get", path_a, "hello");
    assert_string_equal(o, "world\n");
    free(o);
    o = KEEL_OK(NULL, "get", path_a, "-e", "bin\\00\\ff");
    assert_string_equal(o, "tab\\09back\\\\\n");
    free(o);
    o = KEEL_OK(NULL, "get", path_a, "--", "-dash");
    assert_string_equal(o, "-5\n");
    free(o);
    o = KEEL_OK(NULL, "scan", path_a);
    assert_string_equal(o, "-dash\t-5\nbin\\00\\ff\ttab\\09back\\\\\nhello\tworld\n");
    free(o);
    o = KEEL_OK(NULL, "scan", path_a, "-s", "fruit", "--prefix", "ap", "--limit", "1");
    assert_string_equal(o, "apple\tred\n");
    free(o);
    o = KEEL_OK(NULL, "scan", path_a, "-s", "fruit", "--prefix", "apr");
    assert_string_equal(o, "apricot\torange\n");
    free(o);
    o = KEEL_OK(NULL, "ttl", path_a, "-s", "fruit", "apricot");
    long long ttl = atoll(o);
    assert_true(ttl > 99000000 && ttl <= 100000000);
    free(o);
    o = KEEL_OK(NULL, "ttl", path_a, "-s", "fruit", "apple");
    assert_string_equal(o, "-1\n");
    free(o);
    o = KEEL_OK(NULL, "incr", path_a, "n");
    assert_string_equal(o, "1\n");
    free(o);
    o = KEEL_OK(NULL, "incr", path_a, "n", "-11");
    assert_string_equal(o, "-10\n");
    free(o);
    o = KEEL_OK(NULL, "buckets", path_a);
    assert_string_equal(o, "fruit\n");
    free(o);
    free(KEEL_OK(NULL, "del", path_a, "hello"));

    struct run r = KEEL(NULL, "get", path_a, "hello");
    assert_int_equal(r.code, 1);
    assert_non_null(strstr(r.err, "keel: get hello: KEEL_NOTFOUND"));
    run_free(&r);
    r = KEEL(NULL, "del", path_a, "hello");
    assert_int_equal(r.code, 1);
    assert_non_null(strstr(r.err, "KEEL_NOTFOUND"));
    run_free(&r);
    r = KEEL(NULL, "incr", path_a, "-s", "fruit", "apple");
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "keel: incr apple: KEEL_NOTNUMBER"));
    run_free(&r);
    r = KEEL(NULL, "get", path_a, "-s", "nosuch", "k");
    assert_int_equal(r.code, 1);
    assert_non_null(strstr(r.err, "keel: bucket nosuch: KEEL_NOTFOUND"));
    run_free(&r);
    r = KEEL(NULL, "get", path_b, "k"); /* reads never create the file */
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "keel: open "));
    assert_false(exists(path_b));
    run_free(&r);
    r = KEEL(NULL, "ttl", path_a, "hello");
    assert_int_equal(r.code, 1);
    run_free(&r);
    r = KEEL(NULL, "put", path_a, "-e", "bad\\zescape", "v");
    assert_int_equal(r.code, 2);
    run_free(&r);
}

/* readers: a header line, then one line per reader in use, with its lag
 * in commits and its age in seconds. */
static void test_readers(void **state)
{
    (void)state;
    free(KEEL_OK(NULL, "put", path_a, "k", "v"));
    char *o;
    struct run r;
    keel_db *db;
    keel_txn *rt;
    OK(keel_open(path_a, NULL, &db));
    OK(keel_begin(db, KEEL_RDONLY, &rt));
    keel_txn *wt;
    OK(keel_begin(db, 0, &wt)); /* one commit behind, held 0.3 s */
    OK(keel_put(wt, KEEL_DEFAULT_BUCKET, tu_val("later"), tu_val("x"), 0));
    OK(keel_commit(wt));
    usleep(300000);
    o = KEEL_OK(NULL, "readers", path_a);
    char want[64];
    snprintf(want, sizeof want, "\n%ld\t%" PRIu64 "\t1\t", (long)getpid(), keel_txn_id(rt));
    assert_non_null(strstr(o, "pid\tsnapshot\tlag\tage_s\n"));
    char *line = strstr(o, want);
    assert_non_null(line);
    double age = atof(line + strlen(want));
    assert_true(age >= 0.2 && age < 60);
    free(o);
    keel_abort(rt);
    keel_close(db);
    r = KEEL(NULL, "readers", path_b);
    assert_int_equal(r.code, 2);
    run_free(&r);
}

/* The verbs of expiry, --nx/--keepttl, --hex, --from, --bucket. */
static void test_verbs_more(void **state)
{
    (void)state;
    remove_db(path_a);
    free(KEEL_OK(NULL, "put", path_a, "--bucket", "s", "lease", "me", "--ttl", "30"));
    char *o = KEEL_OK(NULL, "ttl", path_a, "-s", "s", "lease");
    long long t = atoll(o);
    assert_true(t >= 29 && t <= 30); /* seconds */
    free(o);
    o = KEEL_OK(NULL, "ttl", "--ms", path_a, "-s", "s", "lease");
    t = atoll(o);
    assert_true(t > 28000 && t <= 30000);
    free(o);
    /* --nx: present -> exit 1 and the value stays */
    struct run r = KEEL(NULL, "put", "--nx", path_a, "-s", "s", "lease", "you");
    assert_int_equal(r.code, 1);
    assert_non_null(strstr(r.err, "KEEL_EXISTS"));
    run_free(&r);
    o = KEEL_OK(NULL, "get", path_a, "-s", "s", "lease");
    assert_string_equal(o, "me\n");
    free(o);
    /* --keepttl keeps the expiry, a plain put clears it */
    free(KEEL_OK(NULL, "put", "--keepttl", path_a, "-s", "s", "lease", "me2"));
    o = KEEL_OK(NULL, "ttl", path_a, "-s", "s", "lease");
    assert_true(atoll(o) >= 29);
    free(o);
    free(KEEL_OK(NULL, "persist", path_a, "-s", "s", "lease"));
    o = KEEL_OK(NULL, "ttl", path_a, "-s", "s", "lease");
    assert_string_equal(o, "-1\n");
    free(o);
    free(KEEL_OK(NULL, "expire", path_a, "-s", "s", "lease", "100"));
    o = KEEL_OK(NULL, "ttl", path_a, "-s", "s", "lease");
    assert_true(atoll(o) >= 99 && atoll(o) <= 100);
    free(o);
    r = KEEL(NULL, "expire", path_a, "-s", "s", "nokey", "5");
    assert_int_equal(r.code, 1);
    run_free(&r);
    r = KEEL(NULL, "expire", path_a, "lease", "0");
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "usage"));
    run_free(&r);
    /* expire in 1 ms, purge: the key is gone and purge counts it */
    free(KEEL_OK(NULL, "put", path_a, "short", "x"));
    free(KEEL_OK(NULL, "expire", "--ms", path_a, "short", "1"));
    usleep(20000);
    r = KEEL(NULL, "get", path_a, "short");
    assert_int_equal(r.code, 1);
    run_free(&r);
    o = KEEL_OK(NULL, "purge", path_a);
    assert_string_equal(o, "1\n");
    free(o);
    o = KEEL_OK(NULL, "purge", path_a, "10");
    assert_string_equal(o, "0\n");
    free(o);
    r = KEEL(NULL, "purge", path_a, "zero");
    assert_int_equal(r.code, 2);
    run_free(&r);
    r = KEEL(NULL, "purge", path_a, "-s", "f");
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "usage"));
    run_free(&r);
    /* --hex both ways, and bad hex */
    free(KEEL_OK(NULL, "put", "--hex", path_a, "00ff10", "DEAD"));
    o = KEEL_OK(NULL, "get", path_a, "-e", "\\00\\ff\\10");
    assert_string_equal(o, "\\de\\ad\n");
    free(o);
    o = KEEL_OK(NULL, "scan", "--hex", path_a, "--limit", "1");
    assert_string_equal(o, "00ff10\tdead\n");
    free(o);
    r = KEEL(NULL, "get", "--hex", path_a, "0g");
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "bad hex"));
    run_free(&r);
    r = KEEL(NULL, "get", "--hex", path_a, "abc");
    assert_int_equal(r.code, 2);
    run_free(&r);
    /* --from, with and without a prefix */
    free(KEEL_OK(NULL, "put", path_a, "-s", "f", "a1", "1"));
    free(KEEL_OK(NULL, "put", path_a, "-s", "f", "a2", "2"));
    free(KEEL_OK(NULL, "put", path_a, "-s", "f", "b1", "3"));
    o = KEEL_OK(NULL, "scan", path_a, "-s", "f", "--from", "a2");
    assert_string_equal(o, "a2\t2\nb1\t3\n");
    free(o);
    o = KEEL_OK(NULL, "scan", path_a, "-s", "f", "--from", "a15", "--prefix", "a");
    assert_string_equal(o, "a2\t2\n");
    free(o);
    o = KEEL_OK(NULL, "scan", path_a, "-s", "f", "--from", "0", "--prefix", "b");
    assert_string_equal(o, "b1\t3\n");
    free(o);
    /* COMMAND --help */
    r = KEEL(NULL, "scan", "--help");
    assert_int_equal(r.code, 0);
    assert_non_null(strstr(r.out, "usage: keel scan DB"));
    run_free(&r);
    r = KEEL(NULL, "load", "-h");
    assert_int_equal(r.code, 0);
    assert_non_null(strstr(r.out, "usage: keel load"));
    run_free(&r);
    r = KEEL(NULL, "put", path_a, "--", "--help", "v"); /* after --: a key */
    assert_int_equal(r.code, 0);
    run_free(&r);
}

/* The manual documents every command that `keel help` lists, and the
 * options of the verbs. */
static void test_man_page(void **state)
{
    (void)state;
    size_t len;
    char *man = read_file(SOURCE_ROOT "/doc/keel.1", &len);
    char *help = KEEL_OK(NULL, "help");
    size_t commands = 0;
    for (char *line = strtok(help, "\n"); line; line = strtok(NULL, "\n")) {
        char name[32];
        if (strncmp(line, "  keel ", 7) != 0 || sscanf(line + 7, "%31s", name) != 1)
            continue;
        char want[48];
        snprintf(want, sizeof want, ".B keel %s", name);
        if (!strstr(man, want))
            fprintf(stderr, "doc/keel.1 has no synopsis for '%s'\n", name);
        assert_non_null(strstr(man, want));
        commands++;
    }
    assert_true(commands >= 17);
    const char *const opts[] = {"\\-\\-hex", "\\-\\-ms", "\\-\\-nx", "\\-\\-keepttl", "\\-\\-from",
                                "\\-\\-bucket", "\\-\\-compact", "EXIT STATUS", "__keel_expiry__",
                                "\\-\\-value\\-file", "\\-\\-stdin", "SIGXFSZ", "max_dirty",
                                "\\-\\-dup", "\\-\\-all", "duplicates=1", "dupsort=1", "DUPSORT"};
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        assert_non_null(strstr(man, opts[i]));
    free(help);
    free(man);
}

static void test_usage(void **state)
{
    (void)state;
    struct run r = KEEL(NULL, "help");
    assert_int_equal(r.code, 0);
    assert_non_null(strstr(r.out, "exit codes"));
    assert_non_null(strstr(r.out, "keel dump [-a | -s BUCKET] [-p] [-o FILE] DB"));
    assert_non_null(strstr(r.out, "\\xx"));
    run_free(&r);
    const char *const bad[][6] = {
        {"frobnicate", NULL},       {"dump", NULL},          {"dump", "-a", "-s", "x", "db", NULL},
        {"dump", "-q", "db", NULL}, {"load", NULL},          {"load", "a", "b", NULL},
        {"get", "db", NULL},        {"put", "db", "k", NULL}, {"incr", "db", "k", "notanumber", NULL},
        {"put", "db", "k", "v", "--ttl", NULL},              {"copy", "db", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *argv[8] = {keel_bin};
        for (int j = 0; bad[i][j]; j++)
            argv[j + 1] = (char *)bad[i][j];
        r = runv(NULL, argv);
        if (r.code != 2)
            fprintf(stderr, "usage case %zu (%s): exit %d\n", i, bad[i][0], r.code);
        assert_int_equal(r.code, 2);
        assert_non_null(strstr(r.err, "usage"));
        run_free(&r);
    }
    r = runv(NULL, (char *[]){keel_bin, NULL});
    assert_int_equal(r.code, 2);
    run_free(&r);
}

/* ---- progress on a terminal ----------------------------------------------------------- */
static void test_progress_tty(void **state)
{
    (void)state;
    write_text(txt, PHDR " a\n b\nDATA=END\n");
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    if (m < 0 || grantpt(m) || unlockpt(m)) {
        if (m >= 0)
            close(m);
        skip();
    }
    char *slave = ptsname(m);
    assert_non_null(slave);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int s = open(slave, O_RDWR | O_NOCTTY);
        int in = open(txt, O_RDONLY);
        int null = open("/dev/null", O_WRONLY);
        if (s < 0 || in < 0 || null < 0)
            _exit(126);
        dup2(in, 0), dup2(null, 1), dup2(s, 2);
        close(m);
        execl(keel_bin, keel_bin, "load", path_a, (char *)NULL);
        _exit(127);
    }
    char buf[4096];
    size_t n = 0;
    for (;;) { /* read until the child is gone and the pty is drained */
        ssize_t got = read(m, buf + n, sizeof buf - 1 - n);
        if (got <= 0)
            break;
        n += (size_t)got;
        if (n >= sizeof buf - 1)
            break;
    }
    buf[n] = 0;
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    close(m);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_non_null(strstr(buf, "1 records"));
    assert_non_null(strstr(buf, "records/s"));
}

/* A load of many records through a pipe: counted, no progress text on a
 * pipe, and a dump of the same size. */
static void test_big_load(void **state)
{
    (void)state;
    long n = 100000 * tu_scale();
    FILE *f = fopen(txt, "w");
    assert_non_null(f);
    fputs(PHDR, f);
    for (long i = 0; i < n; i++)
        fprintf(f, " key%09ld\n value of key %ld\n", i * 7919 % n, i);
    fputs("DATA=END\n", f);
    OK(fclose(f));
    struct run r = KEEL(txt, "load", path_a);
    assert_int_equal(r.code, 0);
    assert_string_equal(r.err, "");
    run_free(&r);
    keel_db *db;
    OK(keel_open(path_a, NULL, &db));
    keel_stat st;
    OK(keel_db_stat(db, &st));
    assert_int_equal(st.entries, (uint64_t)n);
    keel_close(db);
    free(KEEL_OK(NULL, "check", path_a));
}

/* ---- LMDB's own tools ------------------------------------------------------------------ */
static bool have_lmdb_tools(void)
{
    if (on_path("mdb_load") && on_path("mdb_dump"))
        return true;
    fprintf(stderr, "test_cli: mdb_load / mdb_dump not on PATH (Debian: lmdb-utils): LMDB interop skipped\n");
    return false;
}

/* bytevalue input for mdb_load: binary keys and values, empty values.
 * LMDB 0.9.24's mdb_dump -p does not double a backslash (so its print
 * output is ambiguous where one occurs): no backslashes for that case. */
static void write_lmdb_input(const char *p, bool named, bool backslashes)
{
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    const char *dbs[] = {named ? "alpha" : NULL, named ? "beta gamma" : NULL};
    for (int d = 0; d < (named ? 2 : 1); d++) {
        fprintf(f, "VERSION=3\nformat=bytevalue\n");
        if (dbs[d])
            fprintf(f, "database=%s\n", dbs[d]);
        fprintf(f, "type=btree\nmapsize=67108864\nHEADER=END\n");
        for (int i = 0; i < 300; i++) {
            uint8_t k[4] = {(uint8_t)(i >> 8), (uint8_t)i, (uint8_t)d, backslashes ? 0x5c : 0x7c}, v[40];
            size_t vl = (size_t)(i % 41);
            for (size_t j = 0; j < vl; j++)
                if ((v[j] = (uint8_t)(i + j * 13)) == 0x5c && !backslashes)
                    v[j] = 0x7c;
            dump_write_record(f, 0, k, sizeof k, v, vl);
        }
        dump_write_record(f, 0, "text key", 8, backslashes ? "a \\ value" : "a | value", 9);
        dump_write_end(f);
    }
    OK(fclose(f));
}

static void lmdb_to_keel(bool named, bool print)
{
    char lpath[2048];
    in_dir(lpath, sizeof lpath, "l.mdb");
    remove_db(lpath);
    remove_db(path_b);
    write_lmdb_input(txt, named, !print);
    struct run r = PROG(NULL, "mdb_load", "-n", "-f", txt, lpath);
    assert_int_equal(r.code, 0);
    run_free(&r);
    char *argv[8] = {"mdb_dump", "-n"};
    int n = 2;
    if (named)
        argv[n++] = "-a";
    if (print)
        argv[n++] = "-p";
    argv[n++] = lpath;
    argv[n] = NULL;
    r = runv(NULL, argv);
    assert_int_equal(r.code, 0);
    char *ldump = r.out;
    free(r.err);
    write_text(txt2, ldump);
    free(KEEL_OK(txt2, "load", path_b));
    char *kdump = named ? (print ? KEEL_OK(NULL, "dump", "-a", "-p", path_b) : KEEL_OK(NULL, "dump", "-a", path_b))
                        : (print ? KEEL_OK(NULL, "dump", "-p", path_b) : KEEL_OK(NULL, "dump", path_b));
    char *a = keep_lines(ldump, data_and_names), *b = keep_lines(kdump, data_and_names);
    assert_true(strlen(a) > 1000);
    assert_string_equal(a, b);
    /* the headers agree too, but for what is the engine's own */
    const char *const hdr[] = {"VERSION=", "format=", "type=", "HEADER=END", "DATA=END", NULL};
    char *ha = keep_lines(ldump, hdr), *hb = keep_lines(kdump, hdr);
    if (named) { /* keel dump -a writes the (empty) default bucket first: drop its section */
        const char *second = strstr(hb, "VERSION=");
        second = strstr(second + 1, "VERSION=");
        assert_non_null(second);
        assert_string_equal(ha, second);
    } else {
        assert_string_equal(ha, hb);
    }
    free(ha);
    free(hb);
    free(a);
    free(b);
    free(ldump);
    free(kdump);
    remove_db(lpath);
}

static void test_lmdb_to_keel(void **state)
{
    (void)state;
    if (!have_lmdb_tools())
        skip();
    lmdb_to_keel(false, false);
    lmdb_to_keel(false, true);
    lmdb_to_keel(true, false);
    lmdb_to_keel(true, true);
}

/* keel → LMDB: the default bucket becomes LMDB's main database, named
 * buckets named databases.  (LMDB 0.9.24's mdb_load misreads escapes in
 * print format, so the print-format case keeps to plain printable text.) */
static void keel_to_lmdb(bool named, bool print)
{
    char lpath[2048];
    in_dir(lpath, sizeof lpath, "l.mdb");
    remove_db(lpath);
    remove_db(path_a);
    keel_db *db;
    keel_txn *t;
    OK(keel_open(path_a, NULL, &db));
    OK(keel_begin(db, 0, &t));
    keel_bucket b = KEEL_DEFAULT_BUCKET, b2 = KEEL_DEFAULT_BUCKET;
    if (named) {
        OK(keel_bucket_open(t, "first", KEEL_CREATE, &b));
        OK(keel_bucket_open(t, "second one", KEEL_CREATE, &b2));
    }
    for (int i = 0; i < 500; i++) {
        char k[32], v[64];
        uint8_t bk[3] = {(uint8_t)i, 0, (uint8_t)(i * 3)}, bv[8] = {0, 1, 2, 0x5c, 0xff, (uint8_t)i, 10, 13};
        int kl = snprintf(k, sizeof k, "key %04d", i), vl = snprintf(v, sizeof v, "value %d", i * i);
        put(t, b, k, (size_t)kl, v, (size_t)(i % 10 ? vl : 0));
        if (!print)
            put(t, b2, bk, sizeof bk, bv, (size_t)(i % 9));
    }
    OK(keel_commit(t));
    keel_close(db);
    char *kdump = print ? KEEL_OK(NULL, "dump", "-a", "-p", "-o", txt, path_a)
                        : KEEL_OK(NULL, "dump", "-a", "-o", txt, path_a);
    free(kdump);
    kdump = read_file(txt, NULL);
    struct run r = PROG(NULL, "mdb_load", "-n", "-f", txt, lpath);
    if (r.code)
        fprintf(stderr, "mdb_load: %s", r.err);
    assert_int_equal(r.code, 0);
    run_free(&r);
    char *argv[8] = {"mdb_dump", "-n"};
    int n = 2;
    if (named)
        argv[n++] = "-a";
    if (print)
        argv[n++] = "-p";
    argv[n++] = lpath;
    argv[n] = NULL;
    r = runv(NULL, argv);
    assert_int_equal(r.code, 0);
    char *a = keep_lines(kdump, data_and_names), *l = keep_lines(r.out, data_and_names);
    assert_true(strlen(a) > 1000);
    assert_string_equal(a, l);
    run_free(&r);
    free(a);
    free(l);
    free(kdump);
    remove_db(lpath);
}

static void test_keel_to_lmdb(void **state)
{
    (void)state;
    if (!have_lmdb_tools())
        skip();
    keel_to_lmdb(false, false);
    keel_to_lmdb(false, true);
    keel_to_lmdb(true, false);
    keel_to_lmdb(true, true);
}

/* ---- DUPSORT buckets (issue 20): dump, load, LMDB, the verbs ------------------------------ */
struct pair {
    uint8_t k[8], v[8];
    size_t kl, vl;
};

static int cmp_bytes(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    return c ? c : (al > bl) - (al < bl);
}

static int cmp_pair(const void *x, const void *y)
{
    const struct pair *a = x, *b = y;
    int c = cmp_bytes(a->k, a->kl, b->k, b->kl);
    return c ? c : cmp_bytes(a->v, a->vl, b->v, b->vl);
}

/* The pairs of a DUPSORT database: binary keys and values with zero bytes,
 * an empty value, a key with 600 values (LMDB keeps them in a sub-tree), keys
 * of one and of several values; printable (text) or not.  No backslashes:
 * LMDB 0.9.24's mdb_dump -p does not double them.  Sorted as LMDB and keel
 * sort them, in *sorted. */
static size_t dup_pairs(struct pair *p, bool text, uint64_t seed)
{
    size_t n = 0;
    for (int i = 0; i < 600; i++) { /* one key, 600 values */
        struct pair *q = &p[n++];
        memcpy(q->k, "many", 4), q->kl = 4;
        q->vl = 4;
        q->v[0] = text ? (uint8_t)('a' + i / 26 % 26) : (uint8_t)(i / 200);
        q->v[1] = text ? (uint8_t)('a' + i % 26) : (uint8_t)(i % 200 + (i % 200 >= 0x5c)); /* no backslash */
        q->v[2] = text ? 'z' : 0;
        q->v[3] = text ? (uint8_t)('0' + i / 676) : 0x7c;
    }
    for (int i = 0; i < 120; i++) { /* keys of 1..4 values */
        for (int j = 0; j <= i % 4; j++) {
            struct pair *q = &p[n++];
            q->kl = 3;
            q->k[0] = text ? 'k' : 0;
            q->k[1] = text ? (uint8_t)('A' + i / 26) : (uint8_t)(i + (i >= 0x5c));
            q->k[2] = text ? (uint8_t)('a' + i % 26) : (uint8_t)(255 - i);
            q->vl = 1 + (size_t)j;
            for (size_t b = 0; b < q->vl; b++) {
                uint8_t c = (uint8_t)tu_rand(&seed);
                q->v[b] = text ? (uint8_t)(' ' + c % 94) : c;
                if (q->v[b] == 0x5c)
                    q->v[b] = 0x5d;
            }
            q->v[0] = (uint8_t)(text ? 'a' + j : j * 40); /* distinct values of a key */
        }
    }
    struct pair *q = &p[n++]; /* a zero byte in the middle of a key, a value of zero bytes */
    memcpy(q->k, text ? "z z" : "z\0z", 3), q->kl = 3;
    memcpy(q->v, text ? "  " : "\0\0", 2), q->vl = 2;
    q = &p[n++];
    memcpy(q->k, text ? "z z" : "z\0z", 3), q->kl = 3;
    memcpy(q->v, text ? " " : "\0", 1), q->vl = 1;
    q = &p[n++]; /* an empty value, a key's only one: LMDB 0.9.24 loses an empty value beside others */
    memcpy(q->k, text ? "z y" : "z\0y", 3), q->kl = 3;
    q->vl = 0;
    return n;
}

#define MAX_DUP_PAIRS 1000

/* A section of pairs, in the order given, with the flags mdb_dump writes. */
static void write_section(FILE *f, const char *name, bool dup, const struct pair *p, size_t n)
{
    struct dump_info h = {.print = 0, .database = name, .mapsize = KEEL_DEFAULT_MAX_SIZE,
                          .maxreaders = KEEL_DEFAULT_MAX_READERS, .pagesize = 4096, .dupsort = dup};
    OK(dump_write_header(f, &h));
    for (size_t i = 0; i < n; i++)
        OK(dump_write_record(f, 0, p[i].k, p[i].kl, p[i].v, p[i].vl));
    OK(dump_write_end(f));
}

/* Bucket name of db holds exactly the pairs p[0..n), in that order, and is of kind dup. */
static void assert_pairs(const char *dbpath, const char *name, bool dup, const struct pair *p, size_t n)
{
    keel_db *db;
    keel_txn *t;
    keel_bucket b = KEEL_DEFAULT_BUCKET;
    OK(keel_open(dbpath, NULL, &db));
    OK(keel_begin(db, KEEL_RDONLY, &t));
    if (name)
        OK(keel_bucket_open(t, name, 0, &b));
    unsigned kind;
    OK(keel_bucket_flags(t, b, &kind));
    assert_int_equal(kind, dup ? KEEL_DUPSORT : 0);
    keel_cursor *c;
    OK(keel_cursor_open(t, b, &c));
    keel_val k, v;
    size_t i = 0;
    for (int rc = keel_cursor_first(c, &k, &v); rc == 0; rc = keel_cursor_next(c, &k, &v), i++) {
        assert_true(i < n);
        assert_int_equal(k.len, p[i].kl);
        assert_memory_equal(k.data, p[i].k, k.len);
        assert_int_equal(v.len, p[i].vl);
        if (v.len)
            assert_memory_equal(v.data, p[i].v, v.len);
    }
    assert_int_equal(i, n);
    keel_cursor_close(c);
    keel_abort(t);
    keel_close(db);
}

/* The text after keel's first section (the default bucket's, which mdb_dump -a never
 * writes): asserting it holds no data. */
static const char *after_default_section(const char *kdump)
{
    const char *end = strstr(kdump, "HEADER=END\nDATA=END\n");
    assert_non_null(end);
    assert_ptr_equal(end, strstr(kdump, "HEADER=END\n"));
    return end + strlen("HEADER=END\nDATA=END\n");
}

static char *mdb_dump_of(const char *lpath, const char *flag1, const char *flag2, const char *flag3)
{
    char *argv[8] = {"mdb_dump"};
    int n = 1;
    if (flag1)
        argv[n++] = (char *)flag1;
    if (flag2)
        argv[n++] = (char *)flag2;
    if (flag3)
        argv[n++] = (char *)flag3;
    argv[n++] = (char *)lpath;
    argv[n] = NULL;
    struct run r = runv(NULL, argv);
    if (r.code)
        fprintf(stderr, "mdb_dump: %s", r.err);
    assert_int_equal(r.code, 0);
    free(r.err);
    return r.out;
}

static void mdb_load_file(const char *file, const char *lpath, const char *flag)
{
    struct run r = flag ? PROG(NULL, "mdb_load", (char *)flag, "-f", (char *)file, (char *)lpath)
                        : PROG(NULL, "mdb_load", "-f", (char *)file, (char *)lpath);
    if (r.code)
        fprintf(stderr, "mdb_load: %s", r.err);
    assert_int_equal(r.code, 0);
    run_free(&r);
}

/* LMDB → keel: an LMDB file made by mdb_load from pairs in scrambled order,
 * with DUPSORT and plain named databases; mdb_dump -a (both formats) loads
 * into keel with the same pairs in the same order, each DUPSORT database into
 * a DUPSORT bucket, and keel dump -a writes the very same text. */
static void test_dupsort_lmdb_to_keel(void **state)
{
    (void)state;
    if (!have_lmdb_tools())
        skip();
    static struct pair dups[MAX_DUP_PAIRS], texts[MAX_DUP_PAIRS], plain[50], scrambled[MAX_DUP_PAIRS];
    size_t nd = dup_pairs(dups, false, 1), nt = dup_pairs(texts, true, 2);
    for (size_t i = 0; i < 50; i++) {
        plain[i].kl = (size_t)snprintf((char *)plain[i].k, sizeof plain[i].k, "p%03zu", i);
        plain[i].vl = 3;
        memcpy(plain[i].v, i % 2 ? "\0\1\2" : "abc", 3);
    }
    char lpath[2048];
    in_dir(lpath, sizeof lpath, "ldup");
    for (int print = 0; print < 2; print++) {
        nftw(lpath, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        OK(mkdir(lpath, 0755));
        remove_db(path_b);
        FILE *f = fopen(txt, "w");
        assert_non_null(f);
        uint64_t seed = 77;
        const struct pair *srcs[] = {dups, texts};
        size_t counts[] = {nd, nt};
        const char *names[] = {"dups", "texts"};
        for (int s = 0; s < 2; s++) { /* LMDB sorts them */
            memcpy(scrambled, srcs[s], counts[s] * sizeof *scrambled);
            for (size_t i = counts[s] - 1; i > 0; i--) {
                size_t j = (size_t)(tu_rand(&seed) % (i + 1));
                struct pair tmp = scrambled[i];
                scrambled[i] = scrambled[j];
                scrambled[j] = tmp;
            }
            write_section(f, names[s], true, scrambled, counts[s]);
            if (s == 0)
                write_section(f, "middle plain", false, plain, 50);
        }
        OK(fclose(f));
        mdb_load_file(txt, lpath, NULL);
        qsort(dups, nd, sizeof *dups, cmp_pair);
        qsort(texts, nt, sizeof *texts, cmp_pair);
        char *ldump = mdb_dump_of(lpath, "-a", print ? "-p" : NULL, NULL);
        assert_non_null(strstr(ldump, "duplicates=1\ndupsort=1\n"));
        write_text(txt2, ldump);
        free(KEEL_OK(txt2, "load", path_b));
        assert_pairs(path_b, "dups", true, dups, nd);
        assert_pairs(path_b, "texts", true, texts, nt);
        assert_pairs(path_b, "middle plain", false, plain, 50);
        free(KEEL_OK(NULL, "check", path_b));
        char *stat = KEEL_OK(NULL, "stat", path_b), want[64];
        snprintf(want, sizeof want, "dups                 entries %zu, ", nd);
        assert_non_null(strstr(stat, want));
        assert_non_null(strstr(stat, "kind dupsort\n  middle plain         entries 50, "));
        assert_non_null(strstr(stat, "overflow pages 0, kind plain\n  texts"));
        free(stat);
        char *kdump = print ? KEEL_OK(NULL, "dump", "-a", "-p", path_b) : KEEL_OK(NULL, "dump", "-a", path_b);
        assert_string_equal(after_default_section(kdump), ldump);
        free(kdump);
        free(ldump);
    }
    /* a DUPSORT main database: into a named bucket with -s, not into the default one */
    nftw(lpath, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    OK(mkdir(lpath, 0755));
    FILE *f = fopen(txt, "w");
    assert_non_null(f);
    write_section(f, NULL, true, dups, nd);
    OK(fclose(f));
    mdb_load_file(txt, lpath, NULL);
    char *ldump = mdb_dump_of(lpath, NULL, NULL, NULL);
    write_text(txt2, ldump);
    remove_db(path_c);
    struct run r = KEEL(txt2, "load", path_c);
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "line 1: the section holds a DUPSORT database"));
    assert_non_null(strstr(r.err, "-s BUCKET"));
    assert_false(exists(path_c));
    run_free(&r);
    free(KEEL_OK(txt2, "load", "-s", "main", path_c));
    assert_pairs(path_c, "main", true, dups, nd);
    char *kdump = KEEL_OK(NULL, "dump", "-s", "main", path_c);
    /* the same records; keel names the bucket */
    char *a = keep_lines(ldump, data_and_names), *b = keep_lines(kdump, data_and_names);
    assert_string_equal(a, strstr(b, "\n") + 1);
    free(a);
    free(b);
    free(kdump);
    free(ldump);
    nftw(lpath, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* keel → LMDB: keel dump -a of DUPSORT and plain buckets loads with mdb_load,
 * and mdb_dump of the result is keel's text; -s of one bucket too. */
static void test_dupsort_keel_to_lmdb(void **state)
{
    (void)state;
    if (!have_lmdb_tools())
        skip();
    static struct pair dups[MAX_DUP_PAIRS], texts[MAX_DUP_PAIRS];
    size_t nd = dup_pairs(dups, false, 3), nt = dup_pairs(texts, true, 4);
    keel_db *db;
    keel_txn *t;
    keel_bucket bd, bt, bp;
    OK(keel_open(path_a, NULL, &db));
    OK(keel_begin(db, 0, &t));
    OK(keel_bucket_open(t, "dups", KEEL_CREATE | KEEL_DUPSORT, &bd));
    OK(keel_bucket_open(t, "plain", KEEL_CREATE, &bp));
    OK(keel_bucket_open(t, "texts", KEEL_CREATE | KEEL_DUPSORT, &bt));
    for (size_t i = 0; i < nd; i++)
        put(t, bd, dups[i].k, dups[i].kl, dups[i].v, dups[i].vl);
    for (size_t i = 0; i < nt; i++)
        put(t, bt, texts[i].k, texts[i].kl, texts[i].v, texts[i].vl);
    for (int i = 0; i < 40; i++) {
        char k[16];
        int kl = snprintf(k, sizeof k, "key %d", i);
        put(t, bp, k, (size_t)kl, "\0v\xff", 3);
    }
    put(t, KEEL_DEFAULT_BUCKET, "main", 4, "x", 1);
    OK(keel_commit(t));
    keel_close(db);
    char lpath[2048];
    in_dir(lpath, sizeof lpath, "ldup");
    nftw(lpath, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    OK(mkdir(lpath, 0755));
    char *kdump = KEEL_OK(NULL, "dump", "-a", "-o", txt, path_a);
    free(kdump);
    kdump = read_file(txt, NULL);
    mdb_load_file(txt, lpath, NULL);
    char *ldump = mdb_dump_of(lpath, "-a", NULL, NULL);
    /* keel's default bucket went to LMDB's main database, which mdb_dump -a skips */
    const char *named = strstr(kdump, "DATA=END\n") + strlen("DATA=END\n");
    assert_string_equal(named, ldump);
    assert_non_null(strstr(ldump, "database=dups\ntype=btree\nmapsize=1099511627776\nmaxreaders=126\n"
                                  "duplicates=1\ndupsort=1\ndb_pagesize=4096\nHEADER=END\n"));
    free(ldump);
    free(kdump);
    /* one bucket, each format (mdb_load 0.9.24 misreads print escapes: the text bucket only) */
    const char *const which[][2] = {{"dups", NULL}, {"texts", NULL}, {"texts", "-p"}, {"plain", NULL}};
    for (size_t i = 0; i < sizeof which / sizeof which[0]; i++) {
        nftw(lpath, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        OK(mkdir(lpath, 0755));
        kdump = which[i][1] ? KEEL_OK(NULL, "dump", "-s", (char *)which[i][0], "-p", "-o", txt, path_a)
                            : KEEL_OK(NULL, "dump", "-s", (char *)which[i][0], "-o", txt, path_a);
        free(kdump);
        kdump = read_file(txt, NULL);
        mdb_load_file(txt, lpath, NULL);
        ldump = mdb_dump_of(lpath, which[i][1], "-s", which[i][0]);
        assert_string_equal(kdump, ldump);
        free(ldump);
        free(kdump);
    }
    nftw(lpath, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* The verbs on DUPSORT buckets; TTLs, -N and -T in dump/load; check. */
static void test_dupsort_verbs(void **state)
{
    (void)state;
    struct run r = KEEL(NULL, "put", path_a, "--dup", "k", "v"); /* the default bucket is plain */
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "--dup needs -s BUCKET"));
    assert_false(exists(path_a));
    run_free(&r);
    free(KEEL_OK(NULL, "put", path_a, "-s", "tags", "--dup", "k", "b"));
    free(KEEL_OK(NULL, "put", path_a, "-s", "tags", "--dup", "--hex", "6b", "00ff"));
    free(KEEL_OK(NULL, "put", path_a, "-s", "tags", "k", "a")); /* an existing DUPSORT bucket: adds */
    free(KEEL_OK(NULL, "put", path_a, "-s", "tags", "--dup", "k", "a")); /* a pair already there: no change */
    free(KEEL_OK(NULL, "put", path_a, "-s", "tags", "--dup", "-e", "k\\00z", "x"));
    for (int i = 0; i < 30; i++) {
        char v[16];
        snprintf(v, sizeof v, "m%02d", 29 - i);
        free(KEEL_OK(NULL, "put", path_a, "-s", "tags", "--dup", "many", v));
    }
    free(KEEL_OK(NULL, "put", path_a, "-s", "plain", "k", "v"));
    r = KEEL(NULL, "put", path_a, "-s", "plain", "--dup", "k", "w"); /* the other kind */
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "bucket plain is a plain bucket, not a DUPSORT one"));
    assert_non_null(strstr(r.err, "KEEL_INCOMPATIBLE"));
    run_free(&r);
    r = KEEL(NULL, "incr", path_a, "-s", "tags", "n");
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "KEEL_INCOMPATIBLE"));
    run_free(&r);
    char *s = KEEL_OK(NULL, "scan", path_a, "-s", "tags");
    char want[2048] = "k\t\\00\\ff\nk\ta\nk\tb\nk\\00z\tx\n";
    for (int i = 0; i < 30; i++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "many\tm%02d\n", i);
    assert_string_equal(s, want);
    free(s);
    s = KEEL_OK(NULL, "scan", path_a, "-s", "tags", "--prefix", "k", "--limit", "2");
    assert_string_equal(s, "k\t\\00\\ff\nk\ta\n");
    free(s);
    s = KEEL_OK(NULL, "get", path_a, "-s", "tags", "k");
    assert_string_equal(s, "\\00\\ff\n");
    free(s);
    s = KEEL_OK(NULL, "get", path_a, "-s", "tags", "--all", "k");
    assert_string_equal(s, "\\00\\ff\na\nb\n");
    free(s);
    s = KEEL_OK(NULL, "get", path_a, "-s", "tags", "--all", "--hex", "6b");
    assert_string_equal(s, "00ff\n61\n62\n");
    free(s);
    s = KEEL_OK(NULL, "get", path_a, "-s", "plain", "--all", "k"); /* a plain bucket: its one value */
    assert_string_equal(s, "v\n");
    free(s);
    r = KEEL(NULL, "get", path_a, "-s", "tags", "--all", "nokey");
    assert_int_equal(r.code, 1);
    assert_string_equal(r.out, "");
    run_free(&r);
    /* del KEY VALUE: one pair; del KEY: the key */
    free(KEEL_OK(NULL, "del", path_a, "-s", "tags", "k", "a"));
    r = KEEL(NULL, "del", path_a, "-s", "tags", "k", "a");
    assert_int_equal(r.code, 1);
    assert_non_null(strstr(r.err, "KEEL_NOTFOUND"));
    run_free(&r);
    s = KEEL_OK(NULL, "get", path_a, "-s", "tags", "--all", "k");
    assert_string_equal(s, "\\00\\ff\nb\n");
    free(s);
    free(KEEL_OK(NULL, "del", path_a, "-s", "tags", "--hex", "6b", "00ff"));
    free(KEEL_OK(NULL, "del", path_a, "-s", "tags", "many"));
    s = KEEL_OK(NULL, "scan", path_a, "-s", "tags");
    assert_string_equal(s, "k\tb\nk\\00z\tx\n");
    free(s);
    r = KEEL(NULL, "del", path_a, "-s", "plain", "k", "other"); /* a plain bucket: only if the value is that */
    assert_int_equal(r.code, 1);
    run_free(&r);
    free(KEEL_OK(NULL, "del", path_a, "-s", "plain", "k", "v"));
    r = KEEL(NULL, "get", path_a, "-s", "plain", "k");
    assert_int_equal(r.code, 1);
    run_free(&r);
    /* expire / ttl / persist reach a DUPSORT bucket's keys */
    free(KEEL_OK(NULL, "expire", path_a, "-s", "tags", "k", "1000"));
    s = KEEL_OK(NULL, "ttl", path_a, "-s", "tags", "k");
    assert_string_equal(s, "1000\n");
    free(s);
    free(KEEL_OK(NULL, "persist", path_a, "-s", "tags", "k"));
    s = KEEL_OK(NULL, "stat", path_a);
    assert_non_null(strstr(s, "(default)            entries 0, "));
    assert_non_null(strstr(s, "  plain                entries 0, depth"));
    assert_non_null(strstr(s, "kind plain\n  tags                 entries 2, "));
    assert_non_null(strstr(s, "kind dupsort\n"));
    free(s);
    s = KEEL_OK(NULL, "check", path_a);
    assert_non_null(strstr(s, "ok, no problems"));
    free(s);
}

/* keel → keel: a DUPSORT bucket with expiry times (one record a key in the
 * expiry section, however many values), both formats; -N; -T. */
static void test_dupsort_dump_load(void **state)
{
    (void)state;
    keel_db *db;
    keel_txn *t;
    keel_bucket b, p;
    OK(keel_open(path_a, NULL, &db));
    OK(keel_begin(db, 0, &t));
    OK(keel_bucket_open(t, "d", KEEL_CREATE | KEEL_DUPSORT, &b));
    OK(keel_bucket_open(t, "p", KEEL_CREATE, &p));
    for (int i = 0; i < 200; i++) {
        char k[16], v[16];
        int kl = snprintf(k, sizeof k, "key\\%d", i % 20), vl = snprintf(v, sizeof v, "v\n%d", i);
        put(t, b, k, (size_t)kl, v, (size_t)vl);
        put(t, p, k, (size_t)kl, v, (size_t)vl);
    }
    put(t, b, "\0", 1, "\0", 1);
    put(t, b, "\0", 1, "", 0);
    OK(keel_expire_at(t, b, (keel_val){"key\\3", 5}, FAR_FUTURE + 3));
    OK(keel_expire_at(t, b, (keel_val){"\0", 1}, FAR_FUTURE + 4));
    OK(keel_commit(t));
    keel_close(db);
    free(KEEL_OK(NULL, "check", path_a));
    for (int print = 0; print < 2; print++) {
        remove_db(path_b);
        char *d1 = print ? KEEL_OK(NULL, "dump", "-a", "-p", path_a) : KEEL_OK(NULL, "dump", "-a", path_a);
        /* the expiry section: the two keys once each */
        const char *ex = strstr(d1, "database=" DUMP_EXPIRY_PREFIX "d\n");
        assert_non_null(ex);
        ex = strstr(ex, "HEADER=END\n") + strlen("HEADER=END\n");
        const char *want = print ? " \\00\n 4102444800004\n key\\\\3\n 4102444800003\nDATA=END\n"
                                 : " 00\n 34313032343434383030303034\n 6b65795c33\n 34313032343434383030303033\n"
                                   "DATA=END\n";
        assert_memory_equal(ex, want, strlen(want));
        write_text(txt, d1);
        free(KEEL_OK(txt, "load", path_b));
        assert_same_db(path_a, path_b);
        char *d2 = print ? KEEL_OK(NULL, "dump", "-a", "-p", path_b) : KEEL_OK(NULL, "dump", "-a", path_b);
        assert_string_equal(d1, d2);
        free(d2);
        /* again into the loaded file: the same pairs (a DUPSORT bucket keeps a pair once) */
        free(KEEL_OK(txt, "load", path_b));
        d2 = print ? KEEL_OK(NULL, "dump", "-a", "-p", path_b) : KEEL_OK(NULL, "dump", "-a", path_b);
        assert_string_equal(d1, d2);
        free(d2);
        free(d1);
    }
    /* -N: existing pairs are skipped, others added; a key that was there keeps its expiry */
    write_text(txt, "VERSION=3\nformat=print\ndatabase=d\nduplicates=1\ndupsort=1\nHEADER=END\n"
                    " key\\\\3\n new\n key\\\\3\n v\\0a3\n fresh\n one\n fresh\n two\nDATA=END\n"
                    "VERSION=3\nformat=print\ndatabase=" DUMP_EXPIRY_PREFIX "d\nHEADER=END\n"
                    " key\\\\3\n 4102444809999\n fresh\n 4102444809998\nDATA=END\n");
    free(KEEL_OK(txt, "load", "-N", path_b));
    OK(keel_open(path_b, NULL, &db));
    OK(keel_begin(db, KEEL_RDONLY, &t));
    OK(keel_bucket_open(t, "d", 0, &b));
    int64_t at;
    OK(keel_expiry_at(t, b, (keel_val){"key\\3", 5}, &at));
    assert_int_equal(at, FAR_FUTURE + 3);
    OK(keel_expiry_at(t, b, (keel_val){"fresh", 5}, &at));
    assert_int_equal(at, FAR_FUTURE + 9998);
    keel_cursor *c;
    OK(keel_cursor_open(t, b, &c));
    keel_val k, v;
    uint64_t n;
    OK(keel_cursor_seek_key(c, (keel_val){"key\\3", 5}, &v));
    OK(keel_cursor_count(c, &n));
    assert_int_equal(n, 11); /* 10 + "new" */
    OK(keel_cursor_seek_key(c, (keel_val){"fresh", 5}, &v));
    assert_int_equal(v.len, 3);
    assert_memory_equal(v.data, "one", 3);
    OK(keel_cursor_next_dup(c, &k, &v));
    assert_memory_equal(v.data, "two", 3);
    keel_cursor_close(c);
    keel_abort(t);
    keel_close(db);
    /* a plain section into the DUPSORT bucket: refused, naming the kinds; -T states no kind */
    write_text(txt, "VERSION=3\nformat=print\ndatabase=d\nHEADER=END\n k\n v\nDATA=END\n");
    struct run r = KEEL(txt, "load", path_b);
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "bucket d is a DUPSORT bucket, and the section holds a plain (not DUPSORT) database"));
    assert_non_null(strstr(r.err, "nothing was written"));
    run_free(&r);
    write_text(txt, "tk\nv1\ntk\nv2\n");
    free(KEEL_OK(txt, "load", "-T", "-s", "d", path_b));
    char *s = KEEL_OK(NULL, "get", path_b, "-s", "d", "--all", "tk");
    assert_string_equal(s, "v1\nv2\n");
    free(s);
    free(KEEL_OK(txt, "load", "-T", "-s", "p", path_b)); /* a plain bucket: the last value */
    s = KEEL_OK(NULL, "get", path_b, "-s", "p", "--all", "tk");
    assert_string_equal(s, "v2\n");
    free(s);
    free(KEEL_OK(NULL, "check", path_b));
}

/* ---- the parser on its own ---------------------------------------------------------- */
struct counts {
    unsigned long sections, records, ends;
    size_t bytes;
};

static int c_section(void *ctx, const struct dump_section *s, char *err, size_t errlen)
{
    (void)s, (void)err, (void)errlen;
    ((struct counts *)ctx)->sections++;
    return 0;
}

static int c_record(void *ctx, const void *k, size_t kl, const void *v, size_t vl, unsigned long line, char *err,
                    size_t errlen)
{
    (void)line, (void)err, (void)errlen;
    struct counts *c = ctx;
    c->records++;
    /* touch every byte, so ASan sees any read past the end */
    for (size_t i = 0; i < kl; i++)
        c->bytes += ((const uint8_t *)k)[i];
    for (size_t i = 0; i < vl; i++)
        c->bytes += ((const uint8_t *)v)[i];
    return 0;
}

static int c_end(void *ctx, unsigned long line, char *err, size_t errlen)
{
    (void)line, (void)err, (void)errlen;
    ((struct counts *)ctx)->ends++;
    return 0;
}

static int parse_mem(const void *data, size_t len, unsigned flags, size_t max_line, struct counts *c, char *err,
                     size_t errlen)
{
    FILE *f = fmemopen((void *)data, len, "r");
    if (!f) /* fmemopen refuses empty buffers on some libcs */
        f = fopen("/dev/null", "r");
    assert_non_null(f);
    struct dump_parser p = {.flags = flags, .max_line = max_line, .ctx = c, .section = c_section,
                            .record = c_record, .section_end = c_end};
    memset(c, 0, sizeof *c);
    int rc = dump_parse(f, &p, err, errlen);
    fclose(f);
    return rc;
}

static void test_parser_direct(void **state)
{
    (void)state;
    struct counts c;
    char err[256];
    const char *good = HDR " 6b\n 76\n 6B4C\n \nDATA=END\n\n" PHDR " a b\n \\00\\\\\nDATA=END";
    OK(parse_mem(good, strlen(good), 0, 0, &c, err, sizeof err));
    assert_int_equal(c.sections, 2);
    assert_int_equal(c.records, 3);
    assert_int_equal(c.ends, 2);
    /* a line over max_line */
    assert_int_equal(parse_mem(good, strlen(good), 0, 8, &c, err, sizeof err), DUMP_EINPUT);
    assert_non_null(strstr(err, "longer than 8"));
    /* NUL bytes in lines are data */
    const char nul[] = "VERSION=3\nformat=print\nHEADER=END\n a\0b\n c\nDATA=END\n";
    OK(parse_mem(nul, sizeof nul - 1, 0, 0, &c, err, sizeof err));
    assert_int_equal(c.records, 1);
    /* err may be NULL when errlen is 0 */
    assert_int_equal(parse_mem("x\n", 2, 0, 0, &c, NULL, 0), DUMP_EINPUT);
    /* empty input: zero sections; plain: one empty section */
    OK(parse_mem("", 0, 0, 0, &c, err, sizeof err));
    assert_int_equal(c.sections, 0);
    OK(parse_mem("", 0, DUMP_PLAIN, 0, &c, err, sizeof err));
    assert_int_equal(c.sections, 1);
    assert_int_equal(c.records, 0);
}

static int stop_at_second(void *ctx, const void *k, size_t kl, const void *v, size_t vl, unsigned long line, char *err,
                          size_t errlen)
{
    (void)k, (void)kl, (void)v, (void)vl, (void)line;
    struct counts *c = ctx;
    if (++c->records == 2) {
        snprintf(err, errlen, "enough");
        return 1;
    }
    return 0;
}

static void test_parser_stop(void **state)
{
    (void)state;
    const char *in = PHDR " a\n b\n c\n d\nDATA=END\n";
    FILE *f = fmemopen((void *)in, strlen(in), "r");
    struct counts c = {0};
    struct dump_parser p = {.ctx = &c, .record = stop_at_second};
    char err[128];
    assert_int_equal(dump_parse(f, &p, err, sizeof err), DUMP_ESTOP);
    assert_string_equal(err, "line 7: enough");
    fclose(f);
}

/* Random mutations of a valid dump: the parser answers, never crashes, never
 * reads outside its buffers (ASan build). */
static void test_parser_mutations(void **state)
{
    (void)state;
    const char *base = HDR " 6b6579\n 76616c7565\n 00ff\n \nDATA=END\n" PHDR " k\\00ey\n va\\\\l\n x\n \nDATA=END\n"
                       "VERSION=3\nformat=print\ndatabase=" DUMP_EXPIRY_PREFIX "b\ntype=btree\nmapsize=1\n"
                       "maxreaders=2\ndb_pagesize=4096\ndupsort=0\nHEADER=END\n k\n 12\nDATA=END\n";
    size_t blen = strlen(base);
    char *buf = malloc(blen + 64);
    uint64_t seed = tu_seed(0xF022);
    long rounds = 20000 * tu_scale();
    static const char alphabet[] = " \n\\=0123456789abcdefxzDATEND";
    int ok = 0;
    for (long i = 0; i < rounds; i++) {
        memcpy(buf, base, blen);
        size_t len = blen;
        int muts = 1 + (int)(tu_rand(&seed) % 4);
        for (int m = 0; m < muts; m++) {
            size_t at = tu_rand(&seed) % len;
            switch (tu_rand(&seed) % 4) {
            case 0: buf[at] = alphabet[tu_rand(&seed) % (sizeof alphabet - 1)]; break;
            case 1: buf[at] = (char)tu_rand(&seed); break;
            case 2: len = at + 1; break; /* truncate */
            default: /* delete a byte */
                memmove(buf + at, buf + at + 1, len - at - 1);
                len--;
                break;
            }
            if (len == 0)
                break;
        }
        struct counts c;
        char err[200];
        int rc = parse_mem(buf, len, (tu_rand(&seed) & 7) == 0 ? DUMP_PLAIN : 0, tu_rand(&seed) % 3 ? 0 : 16, &c,
                           err, sizeof err);
        assert_true(rc == DUMP_OK || rc == DUMP_EINPUT);
        if (rc == DUMP_EINPUT)
            assert_true(strncmp(err, "line ", 5) == 0);
        ok += rc == DUMP_OK;
    }
    assert_true(ok > 0);
    free(buf);
}

/* A generated stream of many records (never held in memory): the parser's
 * memory stays flat. */
struct gen {
    long n, i;
    char line[96];
    size_t len, pos;
    int stage; /* 0 header, 1 records, 2 end, 3 done */
};

static ssize_t gen_read(void *cookie, char *buf, size_t size)
{
    struct gen *g = cookie;
    size_t out = 0;
    while (out < size) {
        if (g->pos == g->len) {
            if (g->stage == 0) {
                g->len = (size_t)snprintf(g->line, sizeof g->line, "%s", PHDR);
                g->stage = 1;
            } else if (g->stage == 1 && g->i < g->n) {
                g->len = (size_t)snprintf(g->line, sizeof g->line, " key%012ld\n value \\00 %ld\n", g->i, g->i);
                g->i++;
            } else if (g->stage == 1) {
                g->len = (size_t)snprintf(g->line, sizeof g->line, "DATA=END\n");
                g->stage = 3;
            } else {
                break;
            }
            g->pos = 0;
        }
        size_t n = g->len - g->pos < size - out ? g->len - g->pos : size - out;
        memcpy(buf + out, g->line + g->pos, n);
        g->pos += n;
        out += n;
    }
    return (ssize_t)out;
}

static long maxrss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static void test_parser_streams(void **state)
{
    (void)state;
    struct gen g = {.n = 1000000 * tu_scale()};
    FILE *f = fopencookie(&g, "r", (cookie_io_functions_t){.read = gen_read});
    assert_non_null(f);
    struct counts c = {0};
    struct dump_parser p = {.ctx = &c, .record = c_record, .section = c_section, .section_end = c_end};
    long before = maxrss_kb();
    char err[128];
    OK(dump_parse(f, &p, err, sizeof err));
    long after = maxrss_kb();
    fclose(f);
    assert_int_equal(c.records, (unsigned long)g.n);
    assert_int_equal(c.ends, 1);
    /* ~40 MB of text went through; the peak moved by less than 8 MB */
    assert_true(after - before < 8 * 1024);
}

/* ---- the field-reliability issue ------------------------------------------------ */
#define RUN_HOW(h, ...) run_how((h), (char *const[]){keel_bin, __VA_ARGS__, NULL})

static void assert_value(const char *db, const char *key, const char *want)
{
    char *v = KEEL_OK(NULL, "get", (char *)db, (char *)key);
    char line[4096];
    snprintf(line, sizeof line, "%s\n", want);
    assert_string_equal(v, line);
    free(v);
}

static void assert_checks_clean(const char *db)
{
    free(KEEL_OK(NULL, "check", (char *)db));
}

/* Every command that prints fails with exit 2 and a message when its
 * output cannot be written, instead of answering 0. */
static void test_output_full(void **state)
{
    (void)state;
    free(KEEL_OK(NULL, "put", path_a, "k", "v", "--ttl", "1000"));
    free(KEEL_OK(NULL, "put", path_a, "-s", "b", "k", "v"));
    struct how h = {.out = "/dev/full"};
    static const char *const cmds[][4] = {
        {"get", "k"}, {"ttl", "k"}, {"incr", "n"}, {"stat"}, {"buckets"}, {"readers"}, {"purge"}, {"check"},
        {"scan"}, {"dump"},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        struct run r = cmds[i][1] ? RUN_HOW(&h, (char *)cmds[i][0], path_a, (char *)cmds[i][1])
                                  : RUN_HOW(&h, (char *)cmds[i][0], path_a);
        if (r.code != 2)
            fprintf(stderr, "keel %s > /dev/full: exit %d: %s", cmds[i][0], r.code, r.err);
        assert_int_equal(r.code, 2);
        assert_non_null(strstr(r.err, "No space left on device"));
        run_free(&r);
    }
}

/* Past RLIMIT_FSIZE a load fails with an error (not SIGXFSZ), exit 2, and
 * the database keeps its content. */
static void test_load_file_size_limit(void **state)
{
    (void)state;
    free(KEEL_OK(NULL, "put", path_a, "k", "old"));
    FILE *f = fopen(txt, "w");
    assert_non_null(f);
    fputs(PHDR, f);
    for (int i = 0; i < 20000; i++)
        fprintf(f, " key%06d\n value of some length to fill pages %06d\n", i, i);
    fputs(" k\n new\nDATA=END\n", f);
    OK(fclose(f));
    struct stat st;
    OK(stat(path_a, &st));
    struct how h = {.in = txt, .fsize = (rlim_t)st.st_size + 65536};
    struct run r = RUN_HOW(&h, "load", path_a);
    if (r.code != 2)
        fprintf(stderr, "load under a file size limit: exit %d, signal %d: %s", r.code, r.sig, r.err);
    assert_int_equal(r.sig, 0);
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "KEEL_FULL"));
    run_free(&r);
    assert_value(path_a, "k", "old");
    char *o = KEEL_OK(NULL, "scan", path_a);
    assert_string_equal(o, "k\told\n");
    free(o);
    assert_checks_clean(path_a);
}

/* Started with stderr or stdout closed, the tool must not print into the
 * database or its lock file, which would take those descriptor numbers. */
static void test_closed_std_fds(void **state)
{
    (void)state;
    free(KEEL_OK(NULL, "put", path_a, "k", "v"));
    /* the second section's warning is printed after the database is open */
    write_text(txt, PHDR " a\n 1\nDATA=END\nVERSION=3\nformat=print\nnosuchkeyword=1\ndatabase=s\ntype=btree\n"
                    "HEADER=END\n b\n 2\nDATA=END\n");
    struct how no_err = {.in = txt, .close_err = true};
    struct run r = RUN_HOW(&no_err, "load", path_a);
    assert_int_equal(r.code, 0);
    run_free(&r);
    struct how no_out = {.close_out = true};
    r = RUN_HOW(&no_out, "incr", path_a, "n");
    assert_int_equal(r.code, 0);
    run_free(&r);
    r = RUN_HOW(&no_out, "get", path_a, "k");
    assert_int_equal(r.code, 0);
    run_free(&r);
    struct how no_in = {.close_in = true, .close_out = true};
    r = RUN_HOW(&no_in, "scan", path_a);
    assert_int_equal(r.code, 0);
    run_free(&r);
    assert_checks_clean(path_a);
    assert_value(path_a, "k", "v");
    assert_value(path_a, "a", "1");
    assert_value(path_a, "n", "1");
    char *o = KEEL_OK(NULL, "get", path_a, "-s", "s", "b");
    assert_string_equal(o, "2\n");
    free(o);
}

/* The names of the files in the test directory, sorted, one a line. */
static char *dir_listing(void)
{
    char cmd[2100];
    snprintf(cmd, sizeof cmd, "ls -A %s", dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    static char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = 0;
    pclose(p);
    return strdup(buf);
}

/* dump -o writes a whole new file or leaves the old one; it refuses the
 * database and its lock file under any name; load refuses them as input. */
static void test_dump_output_file(void **state)
{
    (void)state;
    fill_db(path_a, true);
    char *want = KEEL_OK(NULL, "dump", "-a", path_a);
    size_t before_len;
    char *before = read_file(path_a, &before_len);
    char lock[2100], sym[2100], hard[2100], symlock[2100];
    snprintf(lock, sizeof lock, "%s-lock", path_a);
    in_dir(sym, sizeof sym, "sym.db");
    in_dir(hard, sizeof hard, "hard.db");
    in_dir(symlock, sizeof symlock, "sym.lock");
    OK(symlink(path_a, sym));
    OK(link(path_a, hard));
    OK(symlink(lock, symlock));
    const char *refused[] = {path_a, lock, sym, hard, symlock};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        struct run r = KEEL(NULL, "dump", "-a", "-o", (char *)refused[i], path_a);
        assert_int_equal(r.code, 2);
        assert_non_null(strstr(r.err, "refused"));
        run_free(&r);
        r = KEEL(NULL, "load", "-f", (char *)refused[i], path_a);
        assert_int_equal(r.code, 2);
        assert_non_null(strstr(r.err, "refused"));
        run_free(&r);
    }
    struct run r = KEEL(path_a, "load", path_a); /* the database as standard input */
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "refused"));
    run_free(&r);
    r = KEEL(NULL, "copy", path_a, hard);
    assert_int_equal(r.code, 2);
    run_free(&r);
    size_t after_len;
    char *after = read_file(path_a, &after_len);
    assert_int_equal(before_len, after_len);
    assert_memory_equal(before, after, before_len);
    free(after);
    free(before);
    assert_checks_clean(path_a);
    OK(unlink(sym)), OK(unlink(hard)), OK(unlink(symlock));

    /* a failed dump keeps the file it would have replaced; a good one replaces it */
    char *listing = dir_listing();
    write_text(txt, "keep me\n");
    r = KEEL(NULL, "dump", "-s", "nosuch", "-o", txt, path_a);
    assert_int_equal(r.code, 2);
    run_free(&r);
    char *t = read_file(txt, NULL);
    assert_string_equal(t, "keep me\n");
    free(t);
    OK(chmod(txt, 0640));
    free(KEEL_OK(NULL, "dump", "-a", "-o", txt, path_a));
    t = read_file(txt, NULL);
    assert_string_equal(t, want);
    free(t);
    struct stat st;
    OK(stat(txt, &st));
    assert_int_equal(st.st_mode & 0777, 0640);
    /* through a symlink: the file it names is replaced, the link stays */
    OK(symlink(txt, sym));
    free(KEEL_OK(NULL, "dump", "-o", sym, path_a));
    OK(lstat(sym, &st));
    assert_true(S_ISLNK(st.st_mode));
    t = read_file(txt, NULL);
    assert_non_null(strstr(t, "HEADER=END"));
    assert_null(strstr(t, "database=b1"));
    free(t);
    OK(unlink(sym));
    char *listing2 = dir_listing(); /* no temporary file left behind */
    assert_string_equal(listing, listing2);
    free(listing);
    free(listing2);
    free(KEEL_OK(NULL, "dump", "-o", "/dev/null", path_a));
    free(want);
}

/* keel copy DB DEST (compact or not) fails with exit 2 and leaves nothing
 * in dest_dir (no destination, no lock file, no temporary). */
static void copy_fails_cleanly(const struct how *h, const char *dest_dir)
{
    char dest[2100];
    snprintf(dest, sizeof dest, "%s/copy.db", dest_dir);
    for (int compact = 0; compact < 2; compact++) {
        struct run r = compact ? RUN_HOW(h, "copy", "--compact", path_a, dest) : RUN_HOW(h, "copy", path_a, dest);
        if (r.code != 2)
            fprintf(stderr, "copy%s: exit %d signal %d: %s", compact ? " --compact" : "", r.code, r.sig, r.err);
        assert_int_equal(r.code, 2);
        assert_true(strstr(r.err, "No space left") || strstr(r.err, "KEEL_FULL") || strstr(r.err, "too large"));
        run_free(&r);
        char cmd[2200];
        snprintf(cmd, sizeof cmd, "test -z \"$(ls -A %s | grep -v '^fill$')\"", dest_dir);
        assert_int_equal(system(cmd), 0);
    }
}

/* A copy to a full disk, or past the file size limit, fails cleanly. */
static void test_copy_full_disk(void **state)
{
    (void)state;
    fill_db(path_a, true);
    char sub[2100];
    in_dir(sub, sizeof sub, "limited");
    OK(mkdir(sub, 0755));
    struct how h = {.fsize = 32768};
    copy_fails_cleanly(&h, sub);
    if (geteuid() != 0) {
        printf("test_copy_full_disk: not root: no tmpfs of 64 KiB; only the file size limit was tried\n");
    } else if (mount("tmpfs", sub, "tmpfs", 0, "size=64k") != 0) {
        printf("test_copy_full_disk: mount tmpfs: %s; only the file size limit was tried\n", strerror(errno));
    } else {
        struct how plain = {0};
        copy_fails_cleanly(&plain, sub);
        char fill[2200];
        snprintf(fill, sizeof fill, "dd if=/dev/zero of=%s/fill bs=4096 2>/dev/null", sub);
        assert_true(system(fill) != -1); /* fails when the disk is full: that is the point */
        copy_fails_cleanly(&plain, sub);
        OK(umount(sub));
    }
    OK(rmdir(sub));
}

static int count_of(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* Every read-only command reads db, whose lock file cannot be written,
 * without a lock, and says so once; put fails naming the file at fault. */
static void reads_without_lock(const char *db, const char *fault, const char *copy_to)
{
    static const char *const cmds[][3] = {
        {"get", "k"}, {"scan"}, {"ttl", "k"}, {"dump", "-a"}, {"check"}, {"stat"}, {"buckets"}, {"copy", NULL},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        const char *arg = strcmp(cmds[i][0], "copy") == 0 ? copy_to : cmds[i][1];
        struct run r = arg ? KEEL(NULL, (char *)cmds[i][0], (char *)db, (char *)arg) : KEEL(NULL, (char *)cmds[i][0], (char *)db);
        if (r.code != 0)
            fprintf(stderr, "keel %s on %s: exit %d: %s", cmds[i][0], db, r.code, r.err);
        assert_int_equal(r.code, 0);
        assert_int_equal(count_of(r.err, "-lock is not writable: reading without a lock; safe only while nothing "
                                         "writes"), 1);
        run_free(&r);
    }
    char *o = KEEL_OK(NULL, "get", (char *)db, "k");
    assert_string_equal(o, "v\n");
    free(o);
    struct run r = KEEL(NULL, "put", (char *)db, "k", "v2");
    assert_int_equal(r.code, 2);
    if (!strstr(r.err, fault))
        fprintf(stderr, "put: %s", r.err);
    assert_non_null(strstr(r.err, fault));
    run_free(&r);
    assert_checks_clean(copy_to);
    remove_db(copy_to);
}

/* Messages name the file at fault; read-only commands read without a lock
 * file where it cannot be written. */
static void test_lock_not_writable(void **state)
{
    (void)state;
    char lock[2100];
    snprintf(lock, sizeof lock, "%s-lock", path_a);
    free(KEEL_OK(NULL, "put", path_a, "k", "v"));
    /* a lock file that is a directory */
    OK(unlink(lock));
    OK(mkdir(lock, 0755));
    struct run r = KEEL(NULL, "get", path_a, "k");
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "a.db-lock: Is a directory"));
    run_free(&r);
    OK(rmdir(lock));
    assert_value(path_a, "k", "v"); /* makes the lock file again */

    /* a read-only lock file */
    if (geteuid() != 0) {
        OK(chmod(lock, 0444));
        reads_without_lock(path_a, "a.db-lock: Permission denied", path_b);
        OK(chmod(lock, 0644));
    } else if (mount(lock, lock, NULL, MS_BIND, NULL) != 0 ||
               mount(NULL, lock, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) != 0) {
        printf("test_lock_not_writable: read-only bind mount of the lock file: %s; skipped\n", strerror(errno));
        umount(lock);
    } else {
        reads_without_lock(path_a, "a.db-lock: Read-only file system", path_b);
        OK(umount(lock));
    }

    /* a read-only file system */
    char sub[2100], db[2200];
    in_dir(sub, sizeof sub, "ro");
    snprintf(db, sizeof db, "%s/r.db", sub);
    OK(mkdir(sub, 0755));
    if (geteuid() != 0) {
        printf("test_lock_not_writable: not root: no read-only file system tried\n");
    } else if (mount("tmpfs", sub, "tmpfs", 0, "size=1m") != 0) {
        printf("test_lock_not_writable: mount tmpfs: %s; no read-only file system tried\n", strerror(errno));
    } else {
        free(KEEL_OK(NULL, "put", db, "k", "v"));
        char dblock[2300];
        snprintf(dblock, sizeof dblock, "%s-lock", db);
        OK(unlink(dblock)); /* a lock file that cannot be created */
        if (mount(NULL, sub, NULL, MS_REMOUNT | MS_RDONLY, NULL) != 0)
            printf("test_lock_not_writable: remount read-only: %s; skipped\n", strerror(errno));
        else
            reads_without_lock(db, "Read-only file system", path_b);
        OK(umount(sub));
    }
    OK(rmdir(sub));
}

/* put checks its arguments before it creates a database, and a write that
 * fails on a database it created leaves nothing; values come from files
 * and standard input too; an over-large time says so. */
static void test_put_args(void **state)
{
    (void)state;
    char lock[2100];
    snprintf(lock, sizeof lock, "%s-lock", path_a);
    char long_key[5000];
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = 0;
    const char *const bad[][3] = {{"", "v"}, {long_key, "v"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct run r = KEEL(NULL, "put", path_a, (char *)bad[i][0], (char *)bad[i][1]);
        assert_int_equal(r.code, 2);
        run_free(&r);
        assert_false(exists(path_a));
        assert_false(exists(lock));
    }
    struct run r = KEEL(NULL, "put", path_a, "-s", "", "k", "v");
    assert_int_equal(r.code, 2);
    run_free(&r);
    assert_false(exists(path_a));
    r = KEEL(NULL, "incr", path_a, long_key);
    assert_int_equal(r.code, 2);
    run_free(&r);
    assert_false(exists(path_a));

    r = KEEL(NULL, "put", path_a, "k", "v", "--ttl", "9223372036854775807");
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "is too large"));
    assert_null(strstr(r.err, "positive number of seconds (of"));
    run_free(&r);
    r = KEEL(NULL, "put", path_a, "k", "v", "--ttl", "99999999999999999999");
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "is too large"));
    run_free(&r);
    r = KEEL(NULL, "put", path_a, "k", "v", "--ttl", "0");
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "is not a positive number"));
    run_free(&r);
    assert_false(exists(path_a));

    /* a value of 300,000 bytes from a file, and from standard input */
    size_t n = 300000;
    char *big = malloc(n);
    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)(i * 131 + (i >> 9));
    write_file(txt, big, n);
    free(KEEL_OK(NULL, "put", path_a, "--value-file", txt, "big"));
    free(KEEL_OK(txt, "put", path_a, "--stdin", "big2"));
    free(KEEL_OK(txt, "put", path_a, "--value-file", "-", "big3"));
    keel_db *db;
    keel_txn *t;
    OK(keel_open(path_a, NULL, &db));
    OK(keel_begin(db, KEEL_RDONLY, &t));
    const char *keys[] = {"big", "big2", "big3"};
    for (int i = 0; i < 3; i++) {
        keel_val v;
        OK(keel_get(t, KEEL_DEFAULT_BUCKET, (keel_val){keys[i], strlen(keys[i])}, &v));
        assert_int_equal(v.len, n);
        assert_memory_equal(v.data, big, n);
    }
    keel_abort(t);
    keel_close(db);
    free(big);
    r = KEEL(NULL, "put", path_a, "k", "v", "--stdin"); /* two values */
    assert_int_equal(r.code, 2);
    run_free(&r);
    r = KEEL(NULL, "put", path_a, "k"); /* none */
    assert_int_equal(r.code, 2);
    run_free(&r);
    char *h = KEEL_OK(NULL, "put", "--help");
    assert_non_null(strstr(h, "--value-file"));
    assert_non_null(strstr(h, "--stdin"));
    free(h);
}

/* CR LF line ends load as LF ones do; a line longer than its role can need
 * is an error naming it, found before it fills memory. */
static void test_crlf_and_long_lines(void **state)
{
    (void)state;
    fill_db(path_a, true);
    char *d = KEEL_OK(NULL, "dump", "-a", "-p", path_a);
    size_t n = strlen(d), lines = 0;
    for (size_t i = 0; i < n; i++)
        lines += d[i] == '\n';
    char *crlf = malloc(n + lines + 1);
    assert_non_null(crlf);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (d[i] == '\n')
            crlf[o++] = '\r';
        crlf[o++] = d[i];
    }
    write_file(txt, crlf, o);
    free(crlf);
    free(KEEL_OK(txt, "load", path_b));
    assert_same_db(path_a, path_b);
    free(d);

    struct counts c;
    char err[512];
    size_t klen = 3 * DUMP_MAX_KEY + 2;
    char *big = malloc(klen + 200);
    assert_non_null(big);
    int h = sprintf(big, "%s", PHDR);
    big[h] = ' ';
    memset(big + h + 1, 'k', klen);
    strcpy(big + h + 1 + klen, "\n v\nDATA=END\n");
    assert_int_equal(parse_mem(big, strlen(big), 0, 0, &c, err, sizeof err), DUMP_EINPUT);
    assert_non_null(strstr(err, "line 5: key line longer than"));
    assert_non_null(strstr(err, "more than any key can need"));
    /* the same as a value line is fine */
    memcpy(big + h, " k\n", 3);
    big[h + 3] = ' ';
    memset(big + h + 4, 'v', klen - 3);
    strcpy(big + h + 1 + klen, "\nDATA=END\n");
    OK(parse_mem(big, strlen(big), 0, 0, &c, err, sizeof err));
    /* a header line: bounded by far less */
    memset(big, 'x', DUMP_MAX_HEADER_LINE + 10);
    big[DUMP_MAX_HEADER_LINE + 10] = 0;
    assert_int_equal(parse_mem(big, strlen(big), 0, 0, &c, err, sizeof err), DUMP_EINPUT);
    assert_non_null(strstr(err, "line 1: header line longer than"));
    free(big);

    /* a bucket name with a newline: the real reason */
    bucket_with_one_key(path_c, "two\nlines");
    struct run r = KEEL(NULL, "dump", "-a", path_c);
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "'two\\0alines': its name holds a newline or ends in a carriage return, which "
                                  "the dump format cannot carry"));
    assert_null(strstr(r.err, "KEEL_BADNAME"));
    run_free(&r);

    /* ... or one that ends in a CR: written, it would come back without it
     * (a reader takes it for the CR of a CR LF); a dump that holds one is
     * refused (fuzz_dump's finding) */
    bucket_with_one_key(path_c, "cr\r");
    r = KEEL(NULL, "dump", "-s", "cr\r", path_c);
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "ends in a carriage return"));
    run_free(&r);
    static const char crdump[] = "VERSION=3\nformat=bytevalue\ndatabase=x\r\r\ntype=btree\nHEADER=END\n"
                                 " 6b\n 76\nDATA=END\n";
    assert_int_equal(parse_mem(crdump, sizeof crdump - 1, 0, 0, &c, err, sizeof err), DUMP_EINPUT);
    assert_non_null(strstr(err, "line 3: database name ends in a carriage return"));
    assert_int_equal(dump_name_writable("x\r", 2), 0);
    assert_int_equal(dump_name_writable("x\ry", 3), 1); /* inside the name a CR is a byte like any */
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_roundtrip_bytevalue, fresh),
        cmocka_unit_test_setup(test_roundtrip_print, fresh),
        cmocka_unit_test_setup(test_roundtrip_ttl, fresh),
        cmocka_unit_test_setup(test_roundtrip_ttl_print, fresh),
        cmocka_unit_test_setup(test_roundtrip_pagesize, fresh),
        cmocka_unit_test_setup(test_malformed, fresh),
        cmocka_unit_test_setup(test_warnings, fresh),
        cmocka_unit_test_setup(test_nooverwrite, fresh),
        cmocka_unit_test_setup(test_plain_text, fresh),
        cmocka_unit_test_setup(test_check, fresh),
        cmocka_unit_test_setup(test_check_random_damage, fresh),
        cmocka_unit_test_setup(test_copy, fresh),
        cmocka_unit_test_setup(test_stat, fresh),
        cmocka_unit_test_setup(test_while_writing, fresh),
        cmocka_unit_test_setup(test_verbs, fresh),
        cmocka_unit_test_setup(test_verbs_more, fresh),
        cmocka_unit_test_setup(test_readers, fresh),
        cmocka_unit_test_setup(test_copy_while_committing, fresh),
        cmocka_unit_test(test_man_page),
        cmocka_unit_test_setup(test_usage, fresh),
        cmocka_unit_test_setup(test_progress_tty, fresh),
        cmocka_unit_test_setup(test_big_load, fresh),
        cmocka_unit_test_setup(test_lmdb_to_keel, fresh),
        cmocka_unit_test_setup(test_keel_to_lmdb, fresh),
        cmocka_unit_test_setup(test_dupsort_lmdb_to_keel, fresh),
        cmocka_unit_test_setup(test_dupsort_keel_to_lmdb, fresh),
        cmocka_unit_test_setup(test_dupsort_verbs, fresh),
        cmocka_unit_test_setup(test_dupsort_dump_load, fresh),
        cmocka_unit_test_setup(test_output_full, fresh),
        cmocka_unit_test_setup(test_load_file_size_limit, fresh),
        cmocka_unit_test_setup(test_closed_std_fds, fresh),
        cmocka_unit_test_setup(test_dump_output_file, fresh),
        cmocka_unit_test_setup(test_copy_full_disk, fresh),
        cmocka_unit_test_setup(test_lock_not_writable, fresh),
        cmocka_unit_test_setup(test_put_args, fresh),
        cmocka_unit_test_setup(test_crlf_and_long_lines, fresh),
        cmocka_unit_test(test_parser_direct),
        cmocka_unit_test(test_parser_stop),
        cmocka_unit_test(test_parser_mutations),
        cmocka_unit_test(test_parser_streams),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
