/*
 * test_field.c — keel as it is deployed, not as the other tests drive it:
 * real processes, real links and mounts, closed standard descriptors,
 * another PID namespace, full and read-only file systems, RLIMIT_FSIZE,
 * handles whose map is smaller than the file, readers left open.
 *
 *   symlink_shares      two processes writing through a symbolic link and
 *                       the real path share one lock: no increment is lost
 *   symlink_creates     a link to nothing: the database is made where it
 *                       points; a failed open removes the file, not the link
 *   second_path_refused a hard link, a bind mount (root) and a removed lock
 *                       file give KEEL_LOCKPATH while the db is in use
 *   stdio_closed        a process started with fd 2 (and with 0-2) closed:
 *                       its stderr output never lands in the database
 *   pid_namespace       a reader in another PID namespace (root, unshare)
 *                       keeps its snapshot while a writer commits
 *   commit_other_thread a write txn ended on another thread releases the
 *                       writer lock
 *   writers_many        processes with threads on one handle each write at
 *                       once, one writer killed holding the lock
 *   full_disk           a tmpfs that is full (root): clean errors, no SIGBUS
 *   file_size_limit     RLIMIT_FSIZE with SIGXFSZ ignored: KEEL_FULL, data intact
 *   map_smaller         a file larger than max_size opens and reads; growth
 *                       past the map answers KEEL_MAPSIZE
 *   nolock_readonly     KEEL_NOLOCK on a read-only mount (root); it and
 *                       writers exclude each other
 *   reader_lag          options.max_reader_lag ends a laggard (KEEL_LAGGED)
 *   foreign_files       zeros-only and foreign files are refused and leave no
 *                       lock file; max_size too large is KEEL_ADDRSPACE;
 *                       keel_db_readers forgets a killed reader at once
 *
 * Root-only parts print why they are skipped elsewhere.  KEEL_TEST_SCALE
 * multiplies the loop counts.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"

static char dir[512]; /* this test's directory */

static void make_dir(const char *name)
{
    const char *t = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/keel-field-%s-%d", t && *t ? t : "/tmp", name, (int)getpid());
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(mkdir(dir, 0755), 0);
}

static void remove_dir(void)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static const char *in_dir(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", dir, name);
    return buf;
}

static bool exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

static bool is_root(void) { return geteuid() == 0; }

/* A child's checks: exit 10 + line on failure, so the parent can say which. */
#define CHILD_CHECK(c)                                                                                \
    do {                                                                                              \
        if (!(c)) {                                                                                   \
            fprintf(stderr, "child %d: %s:%d: %s\n", (int)getpid(), __FILE__, __LINE__, #c);          \
            _exit(3);                                                                                 \
        }                                                                                             \
    } while (0)

static void wait_ok(pid_t pid, const char *what)
{
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (WIFSIGNALED(st))
        fail_msg("%s died of signal %d", what, WTERMSIG(st));
    if (WEXITSTATUS(st) != 0)
        fail_msg("%s exited with %d", what, WEXITSTATUS(st));
}

static int64_t get_counter(keel_db *db)
{
    void *v;
    size_t len;
    if (keel_db_get(db, NULL, tu_val("n"), &v, &len))
        return -1;
    char buf[32];
    snprintf(buf, sizeof buf, "%.*s", (int)len, (char *)v);
    free(v);
    return strtoll(buf, NULL, 10);
}

/* n read-modify-write increments of "n" through db, one write txn each:
 * a lost update or a second writer at once shows in the final count. */
static void increment_n(keel_db *db, int n)
{
    for (int i = 0; i < n; i++) {
        keel_txn *t;
        CHILD_CHECK(keel_begin(db, 0, &t) == 0);
        keel_val v;
        int64_t c = 0;
        if (keel_get(t, 0, tu_val("n"), &v) == 0) {
            char buf[32];
            snprintf(buf, sizeof buf, "%.*s", (int)v.len, (const char *)v.data);
            c = strtoll(buf, NULL, 10);
        }
        char out[32];
        int len = snprintf(out, sizeof out, "%lld", (long long)c + 1);
        CHILD_CHECK(keel_put(t, 0, tu_val("n"), (keel_val){out, (size_t)len}, 0) == 0);
        CHILD_CHECK(keel_commit(t) == 0);
    }
}

/* the same through a handle of its own on path */
static void increments(const char *path, int n)
{
    keel_db *db;
    keel_options o = {.flags = KEEL_NOSYNC};
    CHILD_CHECK(keel_open(path, &o, &db) == 0);
    increment_n(db, n);
    keel_close(db);
}

/* In a child: db checks clean. */
static void child_check_clean(keel_db *db)
{
    uint64_t problems = 9;
    CHILD_CHECK(keel_check(db, NULL, NULL, &problems) == 0 && problems == 0);
}

static void assert_clean(const char *path)
{
    keel_db *db;
    assert_int_equal(keel_open(path, NULL, &db), 0);
    uint64_t problems = 99;
    assert_int_equal(keel_check(db, NULL, NULL, &problems), 0);
    assert_int_equal(problems, 0);
    keel_close(db);
}

static void create_db(const char *path)
{
    keel_db *db;
    keel_options o = {.flags = KEEL_NOSYNC};
    assert_int_equal(keel_open(path, &o, &db), 0);
    assert_int_equal(keel_db_put(db, NULL, tu_val("n"), tu_val("0"), 0), 0);
    keel_close(db);
}

/* ---- one lock per database ------------------------------------------------ */

static void test_symlink_shares(void **state)
{
    (void)state;
    make_dir("symlink");
    char real[600], link[600], lock[700];
    in_dir(real, sizeof real, "real.db");
    in_dir(link, sizeof link, "link.db");
    create_db(real);
    assert_int_equal(symlink(real, link), 0);
    int n = 300 * (int)tu_scale();
    pid_t a = fork();
    if (a == 0) {
        increments(real, n);
        _exit(0);
    }
    pid_t b = fork();
    if (b == 0) {
        increments(link, n);
        _exit(0);
    }
    wait_ok(a, "writer through the real path");
    wait_ok(b, "writer through the link");
    snprintf(lock, sizeof lock, "%s-lock", link);
    assert_false(exists(lock)); /* the link's users took the real file's lock */
    keel_db *db;
    assert_int_equal(keel_open(link, NULL, &db), 0);
    assert_int_equal(get_counter(db), 2 * n); /* no increment lost */
    keel_close(db);
    assert_clean(real);
    remove_dir();
}

/* A database created through a symbolic link to nothing (relative, and a
 * chain of two into a subdirectory) is made where the link points, with its
 * lock file beside it; an open that fails after making it removes the file
 * it made, never the link. */
static void test_symlink_creates(void **state)
{
    (void)state;
    make_dir("symlink-create");
    char sub[600], real[600], link[600], chain[600], lock[700];
    assert_int_equal(mkdir(in_dir(sub, sizeof sub, "sub"), 0755), 0);
    in_dir(real, sizeof real, "sub/real.db");
    in_dir(link, sizeof link, "link.db");
    in_dir(chain, sizeof chain, "chain.db");
    assert_int_equal(symlink("sub/real.db", link), 0);
    assert_int_equal(symlink("link.db", chain), 0);
    keel_db *db;
    assert_int_equal(keel_open(chain, NULL, &db), 0);
    assert_int_equal(keel_db_put(db, NULL, tu_val("k"), tu_val("v"), 0), 0);
    keel_close(db);
    struct stat st;
    assert_int_equal(lstat(link, &st), 0);
    assert_true(S_ISLNK(st.st_mode)); /* the links stay links */
    assert_int_equal(lstat(real, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    snprintf(lock, sizeof lock, "%s-lock", real);
    assert_true(exists(lock));
    snprintf(lock, sizeof lock, "%s-lock", chain);
    assert_false(exists(lock));
    assert_int_equal(keel_open(real, NULL, &db), 0);
    void *v;
    size_t len;
    assert_int_equal(keel_db_get(db, NULL, tu_val("k"), &v, &len), 0);
    assert_memory_equal(v, "v", 1);
    free(v);
    keel_close(db);
    assert_clean(link);

    /* the lock file cannot be made (a directory holds its name) */
    char real2[600], link2[600];
    in_dir(real2, sizeof real2, "sub/real2.db");
    in_dir(link2, sizeof link2, "link2.db");
    assert_int_equal(symlink("sub/real2.db", link2), 0);
    snprintf(lock, sizeof lock, "%s-lock", real2);
    assert_int_equal(mkdir(lock, 0755), 0);
    assert_int_not_equal(keel_open(link2, NULL, &db), 0);
    assert_false(exists(real2)); /* the empty file it made is gone */
    assert_int_equal(lstat(link2, &st), 0);
    assert_true(S_ISLNK(st.st_mode));

    /* a link into a directory that does not exist: ENOENT, nothing made */
    char link3[600];
    in_dir(link3, sizeof link3, "link3.db");
    assert_int_equal(symlink("nodir/x.db", link3), 0);
    assert_int_equal(keel_open(link3, NULL, &db), ENOENT);
    remove_dir();
}

/* Opens path in a child while the parent holds it open: the child's result. */
static int open_in_child(const char *path, unsigned flags)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t kid = fork();
    if (kid == 0) {
        keel_db *db;
        keel_options o = {.flags = flags};
        int rc = keel_open(path, &o, &db);
        if (rc == KEEL_LOCKPATH)
            CHILD_CHECK(strstr(keel_error_detail(), "lock file") != NULL);
        if (rc == 0)
            keel_close(db);
        CHILD_CHECK(write(p[1], &rc, sizeof rc) == (ssize_t)sizeof rc);
        _exit(0);
    }
    close(p[1]);
    int rc = 1;
    assert_int_equal(read(p[0], &rc, sizeof rc), (ssize_t)sizeof rc);
    close(p[0]);
    wait_ok(kid, "opener");
    return rc;
}

static void test_second_path_refused(void **state)
{
    (void)state;
    make_dir("second");
    char real[600], hard[600], lock[700];
    in_dir(real, sizeof real, "real.db");
    in_dir(hard, sizeof hard, "hard.db");
    create_db(real);
    assert_int_equal(link(real, hard), 0);
    keel_db *db;
    assert_int_equal(keel_open(real, NULL, &db), 0);
    /* a hard link: another name, another lock file, the same inode */
    assert_int_equal(open_in_child(hard, 0), KEEL_LOCKPATH);
    assert_int_equal(open_in_child(hard, KEEL_RDONLY), KEEL_LOCKPATH);
    assert_int_equal(open_in_child(real, 0), 0); /* the right path still works */
    /* the lock file removed while the database is in use */
    snprintf(lock, sizeof lock, "%s-lock", real);
    assert_int_equal(unlink(lock), 0);
    assert_int_equal(open_in_child(real, 0), KEEL_LOCKPATH);
    keel_close(db);
    /* nobody uses it now: either name opens, one at a time */
    assert_int_equal(open_in_child(hard, 0), 0);
    assert_int_equal(open_in_child(real, 0), 0);

    /* Bind mounts.  Of the directory: the lock file comes along, so it is
     * shared.  Of the file alone into another directory: refused. */
    if (!is_root()) {
        print_message("second_path_refused: bind mounts skipped: not root\n");
    } else {
        char other[600], odir[600], ofile[700];
        in_dir(other, sizeof other, "mnt");
        in_dir(odir, sizeof odir, "other");
        snprintf(ofile, sizeof ofile, "%s/bound.db", odir);
        assert_int_equal(mkdir(other, 0755), 0);
        assert_int_equal(mkdir(odir, 0755), 0);
        close(open(ofile, O_WRONLY | O_CREAT, 0644));
        pid_t kid = fork();
        if (kid == 0) { /* a private mount namespace: nothing leaks if we die */
            if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
                mount(dir, other, NULL, MS_BIND, NULL) || mount(real, ofile, NULL, MS_BIND, NULL)) {
                fprintf(stderr, "second_path_refused: bind mounts skipped: %s\n", strerror(errno));
                _exit(0);
            }
            char via[700];
            snprintf(via, sizeof via, "%s/real.db", other);
            keel_db *d1;
            CHILD_CHECK(keel_open(real, NULL, &d1) == 0);
            CHILD_CHECK(open_in_child(via, 0) == 0);
            CHILD_CHECK(open_in_child(ofile, 0) == KEEL_LOCKPATH);
            keel_close(d1);
            CHILD_CHECK(open_in_child(ofile, 0) == 0);
            _exit(0);
        }
        wait_ok(kid, "bind mount namespace");
    }
    assert_clean(real);
    remove_dir();
}

/* ---- closed standard descriptors ------------------------------------------ */

static void stdio_closed_run(unsigned closed_mask)
{
    char path[600];
    in_dir(path, sizeof path, "stdio.db");
    pid_t kid = fork();
    if (kid == 0) {
        for (int fd = 0; fd <= 2; fd++)
            if (closed_mask & (1u << fd))
                close(fd);
        keel_db *db;
        if (keel_open(path, NULL, &db))
            _exit(5);
        for (int i = 0; i < 4; i++) { /* both meta pages hold commits */
            char v[16];
            int n = snprintf(v, sizeof v, "v%d", i);
            if (keel_db_put(db, NULL, tu_val("k"), (keel_val){v, (size_t)n}, 0))
                _exit(6);
        }
        /* what a daemon's log line does: lands wherever fd 1 and 2 point */
        static const char junk[] = "a message for the log that must not reach the database\n";
        for (int fd = 0; fd <= 2; fd++)
            (void)!write(fd, junk, sizeof junk - 1);
        fprintf(stderr, "%s", junk);
        fflush(stderr);
        keel_close(db);
        _exit(0);
    }
    wait_ok(kid, "process with closed descriptors");
    keel_db *db;
    assert_int_equal(keel_open(path, NULL, &db), 0);
    void *v;
    size_t len;
    assert_int_equal(keel_db_get(db, NULL, tu_val("k"), &v, &len), 0);
    assert_int_equal(len, 2);
    assert_memory_equal(v, "v3", 2); /* the last acknowledged commit */
    free(v);
    uint64_t problems = 9;
    assert_int_equal(keel_check(db, NULL, NULL, &problems), 0);
    assert_int_equal(problems, 0);
    keel_close(db);
    tu_remove(path);
}

static void test_stdio_closed(void **state)
{
    (void)state;
    make_dir("stdio");
    stdio_closed_run(4); /* 2>&- */
    stdio_closed_run(7); /* a daemon with all three closed */
    stdio_closed_run(3);
    remove_dir();
}

/* ---- another PID namespace ------------------------------------------------ */

static void test_pid_namespace(void **state)
{
    (void)state;
    if (!is_root()) {
        print_message("pid_namespace: skipped: unshare(CLONE_NEWPID) needs root\n");
        return;
    }
    make_dir("pidns");
    char path[600];
    in_dir(path, sizeof path, "ns.db");
    create_db(path);
    int ready[2], go[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(go), 0);
    pid_t kid = fork();
    if (kid == 0) {
        if (unshare(CLONE_NEWPID)) {
            fprintf(stderr, "pid_namespace: skipped: unshare: %s\n", strerror(errno));
            char no = 0;
            CHILD_CHECK(write(ready[1], &no, 1) == 1);
            _exit(0);
        }
        pid_t inner = fork(); /* pid 1 of the new namespace, which forks the reader */
        if (inner == 0) {
            CHILD_CHECK(getpid() == 1);
            /* The reader gets a pid number that names no process out here,
             * so a writer judging by pid numbers would call it dead. */
            FILE *f = fopen("/proc/sys/kernel/pid_max", "r");
            long max = 32768;
            if (f) {
                CHILD_CHECK(fscanf(f, "%ld", &max) == 1);
                fclose(f);
            }
            f = fopen("/proc/sys/kernel/ns_last_pid", "w");
            if (f) {
                fprintf(f, "%ld", max - 100);
                fclose(f);
            }
            pid_t reader = fork();
            if (reader != 0) {
                int st;
                CHILD_CHECK(waitpid(reader, &st, 0) == reader);
                _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 9);
            }
            keel_db *db;
            CHILD_CHECK(keel_open(path, NULL, &db) == 0);
            keel_txn *t;
            CHILD_CHECK(keel_begin(db, KEEL_RDONLY, &t) == 0);
            keel_val v;
            CHILD_CHECK(keel_get(t, 0, tu_val("n"), &v) == 0 && v.len == 1 && memcmp(v.data, "0", 1) == 0);
            char yes = 1;
            CHILD_CHECK(write(ready[1], &yes, 1) == 1);
            CHILD_CHECK(read(go[0], &yes, 1) == 1);
            /* the writer has committed many times: the snapshot is unchanged */
            CHILD_CHECK(keel_get(t, 0, tu_val("n"), &v) == 0 && v.len == 1 && memcmp(v.data, "0", 1) == 0);
            keel_abort(t);
            child_check_clean(db);
            keel_close(db);
            _exit(0);
        }
        int st;
        CHILD_CHECK(waitpid(inner, &st, 0) == inner);
        _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 9);
    }
    char yes = 0;
    assert_int_equal(read(ready[0], &yes, 1), 1);
    if (yes) {
        increments(path, 200 * (int)tu_scale()); /* each commit frees the pages of the last */
        assert_int_equal(write(go[1], &yes, 1), 1);
    }
    wait_ok(kid, "reader in another PID namespace");
    close(ready[0]);
    close(ready[1]);
    close(go[0]);
    close(go[1]);
    assert_clean(path);
    remove_dir();
}

/* ---- a write txn ended on another thread ---------------------------------- */

struct handoff {
    keel_txn *txn;
    bool abort;
    int rc;
};

static void *end_txn(void *arg)
{
    struct handoff *h = arg;
    if (h->abort)
        keel_abort(h->txn);
    else
        h->rc = keel_commit(h->txn);
    return NULL;
}

static void test_commit_other_thread(void **state)
{
    (void)state;
    make_dir("thread");
    char path[600];
    in_dir(path, sizeof path, "t.db");
    keel_db *db;
    keel_options o = {.flags = KEEL_NOSYNC};
    assert_int_equal(keel_open(path, &o, &db), 0);
    for (int round = 0; round < 4; round++) {
        struct handoff h = {.abort = round & 1, .rc = -1};
        assert_int_equal(keel_begin(db, 0, &h.txn), 0);
        assert_int_equal(keel_put(h.txn, 0, tu_val("k"), tu_val(round & 1 ? "aborted" : "committed"), 0), 0);
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, end_txn, &h), 0);
        assert_int_equal(pthread_join(th, NULL), 0);
        if (!h.abort)
            assert_int_equal(h.rc, 0);
        /* the lock is free: this thread, and another process, write again
         * (alarm: a hang fails the test instead of stalling the suite) */
        alarm(30);
        keel_txn *t;
        assert_int_equal(keel_begin(db, 0, &t), 0);
        keel_val v;
        assert_int_equal(keel_get(t, 0, tu_val("k"), &v), 0);
        assert_memory_equal(v.data, "committed", 9);
        keel_abort(t);
        pid_t kid = fork();
        if (kid == 0) {
            increments(path, 1);
            _exit(0);
        }
        wait_ok(kid, "writer after a hand-off");
        alarm(0);
    }
    /* a thread that began a write txn and begins another gets KEEL_BUSY */
    keel_txn *t, *t2;
    assert_int_equal(keel_begin(db, 0, &t), 0);
    assert_int_equal(keel_begin(db, 0, &t2), KEEL_BUSY);
    keel_abort(t);
    keel_close(db);
    assert_clean(path);
    remove_dir();
}

/* Several writer processes, each with threads sharing one handle, and one
 * writer killed while it holds the lock: every increment lands once, and
 * the others take the lock over from the dead one. */
struct inc_arg {
    keel_db *db;
    int n;
};

static void *inc_thread(void *p)
{
    struct inc_arg *a = p;
    increment_n(a->db, a->n);
    return NULL;
}

static void test_writers_many(void **state)
{
    (void)state;
    make_dir("writers");
    char path[600];
    in_dir(path, sizeof path, "w.db");
    create_db(path);
    enum { PROCS = 3, THREADS = 2 };
    int n = 200 * (int)tu_scale();
    int held[2];
    assert_int_equal(pipe(held), 0);
    pid_t dead = fork();
    if (dead == 0) { /* takes the writer lock and is killed holding it */
        keel_db *db;
        keel_options o = {.flags = KEEL_NOSYNC};
        CHILD_CHECK(keel_open(path, &o, &db) == 0);
        keel_txn *t;
        CHILD_CHECK(keel_begin(db, 0, &t) == 0);
        CHILD_CHECK(keel_put(t, 0, tu_val("n"), tu_val("-1000000"), 0) == 0);
        char one = 1;
        CHILD_CHECK(write(held[1], &one, 1) == 1);
        for (;;)
            pause();
    }
    char one;
    assert_int_equal(read(held[0], &one, 1), 1);
    pid_t kid[PROCS];
    for (int p = 0; p < PROCS; p++) {
        if ((kid[p] = fork()) == 0) {
            keel_db *db;
            keel_options o = {.flags = KEEL_NOSYNC};
            CHILD_CHECK(keel_open(path, &o, &db) == 0);
            pthread_t th[THREADS];
            struct inc_arg a = {db, n};
            for (int i = 0; i < THREADS; i++)
                CHILD_CHECK(pthread_create(&th[i], NULL, inc_thread, &a) == 0);
            for (int i = 0; i < THREADS; i++)
                pthread_join(th[i], NULL);
            keel_close(db);
            _exit(0);
        }
    }
    usleep(50000); /* they wait for the lock the doomed writer holds */
    kill(dead, SIGKILL);
    waitpid(dead, NULL, 0);
    alarm(120);
    for (int p = 0; p < PROCS; p++)
        wait_ok(kid[p], "writer process");
    alarm(0);
    keel_db *db;
    assert_int_equal(keel_open(path, NULL, &db), 0);
    assert_int_equal(get_counter(db), (int64_t)PROCS * THREADS * n);
    keel_close(db);
    close(held[0]);
    close(held[1]);
    assert_clean(path);
    remove_dir();
}

/* ---- full and read-only file systems --------------------------------------- */

/* A tmpfs of `size` at dir/name in a private mount namespace: call in a
 * child.  false (and a printed reason) where that cannot be had. */
static bool private_tmpfs(const char *mnt, const char *size)
{
    char opts[64];
    snprintf(opts, sizeof opts, "size=%s", size);
    if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
        mount("tmpfs", mnt, "tmpfs", 0, opts)) {
        fprintf(stderr, "tmpfs at %s: %s: skipped\n", mnt, strerror(errno));
        return false;
    }
    return true;
}

/* Fills the file system that holds `path` to the last byte. */
static void fill_up(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHILD_CHECK(fd >= 0);
    static char block[4096];
    while (write(fd, block, sizeof block) > 0)
        ;
    while (write(fd, block, 1) > 0)
        ;
    close(fd);
}

static void test_full_disk(void **state)
{
    (void)state;
    if (!is_root()) {
        print_message("full_disk: skipped: mounting a tmpfs needs root\n");
        return;
    }
    make_dir("full");
    char mnt[600];
    in_dir(mnt, sizeof mnt, "mnt");
    assert_int_equal(mkdir(mnt, 0755), 0);
    pid_t kid = fork();
    if (kid == 0) {
        if (!private_tmpfs(mnt, "2m"))
            _exit(0);
        char path[700], filler[700], lock[720];
        snprintf(path, sizeof path, "%s/full.db", mnt);
        snprintf(filler, sizeof filler, "%s/filler", mnt);
        snprintf(lock, sizeof lock, "%s-lock", path);
        keel_db *db;
        CHILD_CHECK(keel_open(path, NULL, &db) == 0);
        CHILD_CHECK(keel_db_put(db, NULL, tu_val("k"), tu_val("v"), 0) == 0);
        keel_close(db);
        CHILD_CHECK(unlink(lock) == 0);
        fill_up(filler);
        /* the lock file cannot get its blocks: an error, not SIGBUS */
        int rc = keel_open(path, NULL, &db);
        CHILD_CHECK(rc == ENOSPC || rc == KEEL_FULL);
        CHILD_CHECK(strstr(keel_error_detail(), "-lock") != NULL);
        keel_options ro = {.flags = KEEL_RDONLY | KEEL_NOLOCK};
        CHILD_CHECK(keel_open(path, &ro, &db) == 0); /* reading needs no space */
        void *v;
        size_t len;
        CHILD_CHECK(keel_db_get(db, NULL, tu_val("k"), &v, &len) == 0 && len == 1);
        free(v);
        keel_close(db);
        /* with a lock file, writes fill the disk and fail cleanly */
        CHILD_CHECK(unlink(filler) == 0);
        CHILD_CHECK(keel_open(path, NULL, &db) == 0);
        fill_up(filler);
        static char big[3000];
        memset(big, 'x', sizeof big);
        int i = 0;
        for (; i < 10000; i++) {
            char k[16];
            int n = snprintf(k, sizeof k, "k%05d", i);
            rc = keel_db_put(db, NULL, (keel_val){k, (size_t)n}, (keel_val){big, sizeof big}, 0);
            if (rc)
                break;
        }
        CHILD_CHECK(rc == KEEL_FULL);
        child_check_clean(db);
        keel_close(db);
        _exit(0);
    }
    wait_ok(kid, "full tmpfs");
    remove_dir();
}

static void test_file_size_limit(void **state)
{
    (void)state;
    make_dir("fsize");
    char path[600];
    in_dir(path, sizeof path, "limit.db");
    create_db(path);
    pid_t kid = fork();
    if (kid == 0) {
        /* what an embedding program under a file size limit must do: the
         * write then fails with EFBIG, which keel answers as KEEL_FULL */
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {4 << 20, 4 << 20};
        CHILD_CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0);
        keel_db *db;
        CHILD_CHECK(keel_open(path, NULL, &db) == 0);
        static char big[20000];
        memset(big, 'y', sizeof big);
        int rc = 0, i = 0;
        for (; i < 2000 && rc == 0; i++) {
            char k[16];
            int n = snprintf(k, sizeof k, "k%05d", i);
            rc = keel_db_put(db, NULL, (keel_val){k, (size_t)n}, (keel_val){big, sizeof big}, 0);
        }
        CHILD_CHECK(rc == KEEL_FULL);
        keel_close(db);
        _exit(0);
    }
    wait_ok(kid, "writer under RLIMIT_FSIZE");
    assert_clean(path);
    remove_dir();
}

/* ---- a map smaller than the file ------------------------------------------- */

static void test_map_smaller(void **state)
{
    (void)state;
    make_dir("map");
    char path[600];
    in_dir(path, sizeof path, "big.db");
    keel_db *big;
    keel_options o = {.flags = KEEL_NOSYNC};
    assert_int_equal(keel_open(path, &o, &big), 0);
    static char val[3000];
    memset(val, 'z', sizeof val);
    keel_txn *t;
    assert_int_equal(keel_begin(big, 0, &t), 0);
    for (int i = 0; i < 1200; i++) { /* about 5 MB */
        char k[16];
        int n = snprintf(k, sizeof k, "k%05d", i);
        assert_int_equal(keel_put(t, 0, (keel_val){k, (size_t)n}, (keel_val){val, sizeof val}, 0), 0);
    }
    assert_int_equal(keel_commit(t), 0);
    /* a handle that reserves 1 MiB: it maps the whole file anyway */
    keel_db *small;
    keel_options so = {.max_size = 1 << 20};
    assert_int_equal(keel_open(path, &so, &small), 0);
    assert_int_equal(keel_begin(small, KEEL_RDONLY, &t), 0);
    for (int i = 0; i < 1200; i += 7) {
        char k[16];
        int n = snprintf(k, sizeof k, "k%05d", i);
        keel_val v;
        assert_int_equal(keel_get(t, 0, (keel_val){k, (size_t)n}, &v), 0);
        assert_int_equal(v.len, sizeof val);
    }
    keel_abort(t);
    /* the big handle grows the file past the small one's map */
    assert_int_equal(keel_begin(big, 0, &t), 0);
    for (int i = 1200; i < 4000; i++) {
        char k[16];
        int n = snprintf(k, sizeof k, "k%05d", i);
        assert_int_equal(keel_put(t, 0, (keel_val){k, (size_t)n}, (keel_val){val, sizeof val}, 0), 0);
    }
    assert_int_equal(keel_commit(t), 0);
    assert_int_equal(keel_begin(small, KEEL_RDONLY, &t), KEEL_MAPSIZE);
    assert_int_equal(keel_begin(small, 0, &t), KEEL_MAPSIZE);
    keel_close(small);
    assert_int_equal(keel_open(path, &so, &small), 0); /* reopened: it maps the file again */
    assert_int_equal(keel_begin(small, KEEL_RDONLY, &t), 0);
    keel_val v;
    assert_int_equal(keel_get(t, 0, tu_val("k03999"), &v), 0);
    keel_abort(t);
    keel_close(small);
    keel_close(big);
    assert_clean(path);
    remove_dir();
}

/* ---- KEEL_NOLOCK ------------------------------------------------------------ */

static void test_nolock_readonly(void **state)
{
    (void)state;
    make_dir("nolock");
    char path[600], lock[700];
    in_dir(path, sizeof path, "ro.db");
    snprintf(lock, sizeof lock, "%s-lock", path);
    create_db(path);
    keel_db *db, *r;
    keel_options nl = {.flags = KEEL_RDONLY | KEEL_NOLOCK};
    keel_options bad = {.flags = KEEL_NOLOCK};
    assert_int_equal(keel_open(path, &bad, &db), KEEL_BADFLAGS); /* never for writing */
    /* a reader without a lock file and a writer exclude each other */
    assert_int_equal(keel_open(path, NULL, &db), 0);
    assert_int_equal(open_in_child(path, KEEL_RDONLY | KEEL_NOLOCK), KEEL_LOCKPATH);
    keel_close(db);
    assert_int_equal(keel_open(path, &nl, &r), 0);
    assert_int_equal(open_in_child(path, 0), KEEL_LOCKPATH);
    assert_int_equal(open_in_child(path, KEEL_RDONLY), 0); /* readers may share */
    assert_int_equal(open_in_child(path, KEEL_RDONLY | KEEL_NOLOCK), 0);
    keel_txn *t;
    assert_int_equal(keel_begin(r, KEEL_RDONLY, &t), 0);
    keel_val v;
    assert_int_equal(keel_get(t, 0, tu_val("n"), &v), 0);
    keel_abort(t);
    assert_int_equal(keel_begin(r, 0, &t), KEEL_READONLY);
    keel_close(r);

    if (!is_root()) {
        print_message("nolock_readonly: read-only mount skipped: not root\n");
        remove_dir();
        return;
    }
    /* on a read-only mount: the lock file cannot be made; KEEL_NOLOCK reads */
    assert_int_equal(unlink(lock), 0);
    char mnt[600];
    in_dir(mnt, sizeof mnt, "ro");
    assert_int_equal(mkdir(mnt, 0755), 0);
    pid_t kid = fork();
    if (kid == 0) {
        if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
            mount(dir, mnt, NULL, MS_BIND, NULL) || mount(NULL, mnt, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL)) {
            fprintf(stderr, "nolock_readonly: read-only bind mount skipped: %s\n", strerror(errno));
            _exit(0);
        }
        char via[700];
        snprintf(via, sizeof via, "%s/ro.db", mnt);
        keel_options ro = {.flags = KEEL_RDONLY};
        int rc = keel_open(via, &ro, &db);
        CHILD_CHECK(rc == EROFS);
        CHILD_CHECK(strstr(keel_error_detail(), "ro.db-lock") != NULL);
        CHILD_CHECK(keel_open(via, &nl, &db) == 0);
        void *val;
        size_t len;
        CHILD_CHECK(keel_db_get(db, NULL, tu_val("n"), &val, &len) == 0 && len == 1);
        free(val);
        child_check_clean(db);
        keel_close(db);
        _exit(0);
    }
    wait_ok(kid, "reader on a read-only mount");
    remove_dir();
}

/* ---- a reader left open ------------------------------------------------------ */

static void test_reader_lag(void **state)
{
    (void)state;
    make_dir("lag");
    char path[600];
    in_dir(path, sizeof path, "lag.db");
    keel_db *db;
    keel_options o = {.flags = KEEL_NOSYNC, .max_reader_lag = 10};
    assert_int_equal(keel_open(path, &o, &db), 0);
    assert_int_equal(keel_db_put(db, NULL, tu_val("k"), tu_val("0"), 0), 0);
    keel_txn *r;
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &r), 0);
    keel_val v;
    assert_int_equal(keel_get(r, 0, tu_val("k"), &v), 0);
    for (int i = 0; i < 8; i++) /* within the limit: kept */
        assert_int_equal(keel_db_put(db, NULL, tu_val("k"), tu_val("1"), 0), 0);
    assert_int_equal(keel_get(r, 0, tu_val("k"), &v), 0);
    assert_memory_equal(v.data, "0", 1);
    keel_reader_info ri[4];
    size_t n = 0;
    assert_int_equal(keel_db_readers(db, ri, 4, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ri[0].lag, 8);
    assert_true(ri[0].age_ms >= 0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(keel_db_put(db, NULL, tu_val("k"), tu_val("2"), 0), 0);
    assert_int_equal(keel_get(r, 0, tu_val("k"), &v), KEEL_LAGGED);
    keel_abort(r);
    assert_int_equal(keel_db_readers(db, ri, 4, &n), 0);
    assert_int_equal(n, 0);
    /* the laggard no longer pins pages: steady overwrites keep the file small */
    assert_int_equal(keel_begin(db, KEEL_RDONLY, &r), 0);
    struct stat st0, st1;
    assert_int_equal(stat(path, &st0), 0);
    static char val[2000];
    memset(val, 'q', sizeof val);
    for (int i = 0; i < 3000; i++)
        assert_int_equal(keel_db_put(db, NULL, tu_val("k"), (keel_val){val, sizeof val}, 0), 0);
    assert_int_equal(stat(path, &st1), 0);
    assert_true(st1.st_size <= st0.st_size + (4 << 20));
    assert_int_equal(keel_get(r, 0, tu_val("k"), &v), KEEL_LAGGED);
    keel_abort(r);
    keel_close(db);
    assert_clean(path);
    remove_dir();
}

/* ---- files that are not keel's, bad sizes, dead readers --------------------- */

static void test_foreign_files(void **state)
{
    (void)state;
    make_dir("foreign");
    char path[600], lock[700];
    in_dir(path, sizeof path, "zero.db");
    snprintf(lock, sizeof lock, "%s-lock", path);
    keel_db *db;
    static const size_t sizes[] = {4096, 8192, 100000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, (off_t)sizes[i]), 0);
        close(fd);
        assert_int_equal(keel_open(path, NULL, &db), KEEL_INVALID); /* never formatted */
        assert_non_null(strstr(keel_error_detail(), "zero.db"));
        assert_false(exists(lock)); /* and no lock file left behind */
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal((size_t)st.st_size, sizes[i]);
    }
    int fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "hello, not a database\n", 22), 22);
    close(fd);
    assert_int_equal(keel_open(path, NULL, &db), KEEL_INVALID);
    assert_false(exists(lock));
    unlink(path);

    /* a lock-file problem names the lock file */
    char lp[600], ll[700];
    in_dir(lp, sizeof lp, "x.db");
    snprintf(ll, sizeof ll, "%s-lock", lp);
    assert_int_equal(mkdir(ll, 0755), 0);
    assert_int_equal(keel_open(lp, NULL, &db), EISDIR);
    assert_non_null(strstr(keel_error_detail(), "x.db-lock"));
    assert_false(exists(lp)); /* the data file this open created went again */
    assert_int_equal(rmdir(ll), 0);

    /* an address-space reservation that cannot be had */
    keel_options huge = {.max_size = (uint64_t)1 << 50};
    assert_int_equal(keel_open(lp, &huge, &db), KEEL_ADDRSPACE);

    /* a killed reader leaves keel_db_readers at once, without a write */
    create_db(lp);
    assert_int_equal(keel_open(lp, NULL, &db), 0);
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t kid = fork();
    if (kid == 0) {
        keel_db *rdb;
        keel_txn *t;
        CHILD_CHECK(keel_open(lp, NULL, &rdb) == 0 && keel_begin(rdb, KEEL_RDONLY, &t) == 0);
        char one = 1;
        CHILD_CHECK(write(p[1], &one, 1) == 1);
        for (;;)
            pause();
    }
    char one;
    assert_int_equal(read(p[0], &one, 1), 1);
    size_t n = 0;
    assert_int_equal(keel_db_readers(db, NULL, 0, &n), 0);
    assert_int_equal(n, 1);
    kill(kid, SIGKILL);
    waitpid(kid, NULL, 0);
    assert_int_equal(keel_db_readers(db, NULL, 0, &n), 0);
    assert_int_equal(n, 0);
    close(p[0]);
    close(p[1]);
    keel_close(db);
    remove_dir();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_symlink_shares), cmocka_unit_test(test_symlink_creates),  cmocka_unit_test(test_second_path_refused),
        cmocka_unit_test(test_stdio_closed),    cmocka_unit_test(test_pid_namespace),
        cmocka_unit_test(test_commit_other_thread), cmocka_unit_test(test_writers_many),
        cmocka_unit_test(test_full_disk),
        cmocka_unit_test(test_file_size_limit), cmocka_unit_test(test_map_smaller),
        cmocka_unit_test(test_nolock_readonly), cmocka_unit_test(test_reader_lag),
        cmocka_unit_test(test_foreign_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
