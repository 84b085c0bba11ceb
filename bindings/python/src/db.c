/*
 * db.c — keel.open() and the Database type.
 *
 * Contract:
 *   - keel.open() maps its keywords onto keel_options and opens the file
 *     without the GIL (opening takes file locks).  verify=True passes
 *     KEEL_VERIFY when keel.h defines it, else raises ValueError.
 *   - close() ends the database's live transactions (aborting them) and
 *     closes the handle; it is idempotent.  Read snapshots pinned by
 *     exported buffers (keelpy.h) delay keel_close until they are released.
 *     A Database collected while open warns with ResourceWarning (not in a
 *     forked child, which merely inherited it) and closes.
 *   - get/put/delete/incr/cas each run their own transaction through the
 *     keel_db_* one-call forms; the writing ones run without the GIL (they
 *     wait for the writer lock and sync).  put with nx or keepttl, which
 *     keel_db_put lacks, runs a Transaction's put and commits it; so do put
 *     with dupdata=False, delete with a value, and a put or delete that
 *     keel_db_* refuses with KEEL_INCOMPATIBLE (they open the bucket with
 *     KEEL_CREATE, which names a plain bucket: a DUPSORT one is refused).
 *   - stat(), readers(), copy() and check() wrap their keel calls; copy and
 *     check run without the GIL.
 */
#include <stdlib.h>
#include <unistd.h>

#include "keelpy.h"

int kp_db_usable(DbObject *d)
{
    if (!d->db || d->closing) {
        PyErr_SetString(PyExc_ValueError, "the keel database is closed");
        return -1;
    }
    return 0;
}

/* Bucket keyword: NULL for None or absent, else the checked C name. */
static int bucket_cname(PyObject *o, const char **name)
{
    *name = NULL;
    return (!o || o == Py_None) ? 0 : kp_name(o, name);
}

static int sync_flags(PyObject *o, unsigned *flags)
{
    if (!o)
        return 0;
    if (!PyUnicode_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "sync must be 'full', 'meta' or 'none'");
        return -1;
    }
    if (PyUnicode_CompareWithASCIIString(o, "full") == 0)
        return 0;
    if (PyUnicode_CompareWithASCIIString(o, "meta") == 0) {
        *flags |= KEEL_NOMETASYNC;
        return 0;
    }
    if (PyUnicode_CompareWithASCIIString(o, "none") == 0) {
        *flags |= KEEL_NOSYNC;
        return 0;
    }
    PyErr_SetString(PyExc_ValueError, "sync must be 'full', 'meta' or 'none'");
    return -1;
}

enum { O_PATH, O_READONLY, O_SYNC, O_PAGE, O_READERS, O_SIZE, O_VERIFY, O_CLOCK, O_PURGE, O_LAG, O_MODE, O_N };

static int fill_options(PyObject **a, keel_options *o, DbObject *d)
{
    uint64_t v;
    int ro = kp_bool(a[O_READONLY], 0), verify = kp_bool(a[O_VERIFY], 0);
    if (ro < 0 || verify < 0 || sync_flags(a[O_SYNC], &o->flags))
        return -1;
    if (ro)
        o->flags |= KEEL_RDONLY;
    if (verify) {
#ifdef KEEL_VERIFY
        o->flags |= KEEL_VERIFY;
#else
        PyErr_SetString(PyExc_ValueError,
                        "verify=True needs a keel library with KEEL_VERIFY (page checksums); this one has none");
        return -1;
#endif
    }
    if (kp_size(a[O_PAGE], "page_size", KEEL_MAX_PAGE_SIZE, &v))
        return -1;
    o->page_size = (uint32_t)v;
    if (kp_size(a[O_READERS], "max_readers", UINT32_MAX, &v))
        return -1;
    o->max_readers = (uint32_t)v;
    if (kp_size(a[O_SIZE], "max_size", UINT64_MAX, &o->max_size) ||
        kp_size(a[O_LAG], "max_reader_lag", UINT64_MAX, &o->max_reader_lag) ||
        kp_size(a[O_MODE], "mode", 07777, &v))
        return -1;
    o->mode = (unsigned)v;
    if (a[O_PURGE] && a[O_PURGE] != Py_None) {
        long n = PyLong_AsLong(a[O_PURGE]);
        if (n == -1 && PyErr_Occurred())
            return -1;
        if (n < -1 || n > INT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "purge_per_commit must be -1 (none) .. 2**31-1 (0 = default)");
            return -1;
        }
        o->purge_per_commit = (int32_t)n;
    }
    if (a[O_CLOCK] && a[O_CLOCK] != Py_None) {
        if (!PyCallable_Check(a[O_CLOCK])) {
            PyErr_SetString(PyExc_TypeError, "clock must be a callable returning seconds since the epoch");
            return -1;
        }
        Py_INCREF(a[O_CLOCK]);
        d->clock = a[O_CLOCK];
        o->clock = kp_clock;
        o->clock_ctx = d;
    }
    return 0;
}

const char kp_open_doc[] =
    "open(path, *, readonly=False, sync='full', page_size=None, max_readers=None,\n"
    "     max_size=None, verify=False, clock=None, purge_per_commit=None,\n"
    "     max_reader_lag=None, mode=None) -> Database\n\n"
    "Open (or create) the keel database at path; its lock file is path + '-lock'.\n"
    "sync: 'full' (durable commits), 'meta' (a crash may lose the last commits),\n"
    "'none' (never sync).  page_size applies at creation.  clock: a callable\n"
    "returning seconds since the epoch (like time.time), read once per txn for TTLs.";

PyObject *kp_open(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    (void)self;
    static const char *const names[] = {"path", "readonly", "sync", "page_size", "max_readers", "max_size",
                                        "verify", "clock", "purge_per_commit", "max_reader_lag", "mode", NULL};
    PyObject *a[O_N], *bpath = NULL;
    if (kp_args("open", args, nargs, kwnames, names, 1, 1, a) || !PyUnicode_FSConverter(a[O_PATH], &bpath))
        return NULL;
    DbObject *d = PyObject_GC_New(DbObject, &Db_Type);
    if (!d) {
        Py_DECREF(bpath);
        return NULL;
    }
    d->db = NULL;
    d->closing = 0;
    d->pinned = 0;
    d->nogil_calls = 0;
    d->pid = (long)getpid();
    d->path = d->clock = d->weakreflist = NULL;
    d->clock_exc[0] = d->clock_exc[1] = d->clock_exc[2] = NULL;
    d->txns = NULL;
    d->buckets = PyDict_New();
    PyObject_GC_Track(d);
    keel_options o = {0};
    if (!d->buckets || fill_options(a, &o, d) || !(d->path = PyUnicode_DecodeFSDefault(PyBytes_AS_STRING(bpath))))
        goto fail;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = keel_open(PyBytes_AS_STRING(bpath), &o, &d->db);
    Py_END_ALLOW_THREADS
    if (rc) {
        d->db = NULL;
        kp_raise(rc);
        goto fail;
    }
    Py_DECREF(bpath);
    return (PyObject *)d;
fail:
    Py_DECREF(bpath);
    d->closing = 1;
    Py_DECREF(d);
    return NULL;
}

/* Called when a pinned txn's keel txn ended: finish a close that waited. */
void kp_db_unpinned(DbObject *d)
{
    if (--d->pinned == 0 && d->closing && d->db) {
        keel_close(d->db);
        d->db = NULL;
    }
}

static int db_close(DbObject *d)
{
    if (!d->db || d->closing)
        return 0;
    int busy = d->nogil_calls > 0;
    for (TxnObject *t = d->txns; t; t = t->next)
        busy |= t->busy;
    if (busy)
        return (kp_raise_msg(KEEL_BUSY, "a call on this database is running in another thread"), -1);
    while (d->txns) {
        TxnObject *t = d->txns;
        Py_INCREF(t);
        int rc = kp_txn_end(t, 0);
        Py_DECREF(t);
        if (rc)
            return -1;
    }
    d->closing = 1;
    if (!d->pinned) {
        keel_close(d->db);
        d->db = NULL;
    }
    return 0;
}

static PyObject *db_close_m(DbObject *d, PyObject *unused)
{
    (void)unused;
    return db_close(d) ? NULL : Py_NewRef(Py_None);
}

static PyObject *db_enter(DbObject *d, PyObject *unused)
{
    (void)unused;
    return kp_db_usable(d) ? NULL : Py_NewRef(d);
}

static PyObject *db_exit(DbObject *d, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    return db_close(d) ? NULL : Py_NewRef(Py_False);
}

static PyObject *db_begin(DbObject *d, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"write", "buffers", NULL};
    PyObject *a[2];
    if (nargs == 0 && !kwnames)
        return kp_db_usable(d) ? NULL : kp_txn_new(d, 0, 0);
    if (kp_args("begin", args, nargs, kwnames, names, 2, 0, a))
        return NULL;
    int w = kp_bool(a[0], 0), b = kp_bool(a[1], 0);
    if (w < 0 || b < 0 || kp_db_usable(d))
        return NULL;
    return kp_txn_new(d, w, b);
}

static PyObject *db_get(DbObject *d, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"key", "default", "bucket", NULL};
    PyObject *a[3];
    const char *bucket;
    kp_bytes key;
    if (kp_args("get", args, nargs, kwnames, names, 2, 1, a) || kp_db_usable(d) || bucket_cname(a[2], &bucket) ||
        kp_bytes_get(a[0], &key, "key"))
        return NULL;
    void *copy;
    size_t len;
    int rc = keel_db_get(d->db, bucket, key.v, &copy, &len);
    kp_bytes_release(&key);
    if (kp_clock_error(d)) {
        free(rc ? NULL : copy);
        return NULL;
    }
    if (rc == KEEL_NOTFOUND)
        return Py_NewRef(a[1] ? a[1] : Py_None);
    if (rc)
        return kp_raise(rc);
    PyObject *r = PyBytes_FromStringAndSize(copy, (Py_ssize_t)len);
    free(copy);
    return r;
}

/* Runs txn.NAME(*args) in a write txn of its own and commits it. */
static PyObject *in_own_txn(DbObject *d, const char *name, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    PyObject *t = kp_txn_new(d, 1, 0);
    if (!t)
        return NULL;
    Py_ssize_t n = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *stack[8];
    PyObject *meth = n < 8 ? PyObject_GetAttrString(t, name) : NULL;
    if (n >= 8 && !PyErr_Occurred())
        PyErr_Format(PyExc_TypeError, "%s() takes at most 7 arguments", name);
    PyObject *r = NULL;
    if (meth) {
        for (Py_ssize_t i = 0; i < n; i++)
            stack[i] = args[i];
        r = PyObject_Vectorcall(meth, stack, (size_t)nargs, kwnames);
        Py_DECREF(meth);
    }
    if (kp_txn_end((TxnObject *)t, r != NULL) && r)
        Py_CLEAR(r);
    Py_DECREF(t);
    return r;
}

static PyObject *db_put(DbObject *d, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"key", "value", "bucket", "ttl", "nx", "keepttl", "dupdata", NULL};
    PyObject *a[7];
    const char *bucket;
    int64_t ttl = 0;
    if (kp_args("put", args, nargs, kwnames, names, 2, 2, a) || kp_db_usable(d))
        return NULL;
    int nx = kp_bool(a[4], 0), keep = kp_bool(a[5], 0), dupdata = kp_bool(a[6], 1);
    if (nx < 0 || keep < 0 || dupdata < 0)
        return NULL;
    if (nx || keep || !dupdata)
        return in_own_txn(d, "put", args, nargs, kwnames);
    if (bucket_cname(a[2], &bucket) || (a[3] && a[3] != Py_None && kp_ms(a[3], "ttl", &ttl)))
        return NULL;
    kp_bytes key, val;
    if (kp_bytes_get(a[0], &key, "key"))
        return NULL;
    if (kp_bytes_get(a[1], &val, "value")) {
        kp_bytes_release(&key);
        return NULL;
    }
    int rc;
    d->nogil_calls++;
    Py_BEGIN_ALLOW_THREADS
    rc = keel_db_put(d->db, bucket, key.v, val.v, ttl);
    Py_END_ALLOW_THREADS
    d->nogil_calls--;
    kp_bytes_release(&key);
    kp_bytes_release(&val);
    if (kp_clock_error(d))
        return NULL;
    if (rc == KEEL_INCOMPATIBLE && bucket) /* a DUPSORT bucket */
        return in_own_txn(d, "put", args, nargs, kwnames);
    return rc ? kp_raise(rc) : Py_NewRef(Py_True);
}

static PyObject *db_delete(DbObject *d, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"key", "value", "bucket", NULL};
    PyObject *a[3];
    const char *bucket;
    kp_bytes key;
    if (kp_args("delete", args, nargs, kwnames, names, 2, 1, a) || kp_db_usable(d))
        return NULL;
    if (a[1] && a[1] != Py_None)
        return in_own_txn(d, "delete", args, nargs, kwnames);
    if (bucket_cname(a[2], &bucket) || kp_bytes_get(a[0], &key, "key"))
        return NULL;
    int rc;
    d->nogil_calls++;
    Py_BEGIN_ALLOW_THREADS
    rc = keel_db_del(d->db, bucket, key.v);
    Py_END_ALLOW_THREADS
    d->nogil_calls--;
    kp_bytes_release(&key);
    if (kp_clock_error(d))
        return NULL;
    if (rc == KEEL_NOTFOUND)
        return Py_NewRef(Py_False);
    if (rc == KEEL_INCOMPATIBLE && bucket) /* a DUPSORT bucket */
        return in_own_txn(d, "delete", args, nargs, kwnames);
    return rc ? kp_raise(rc) : Py_NewRef(Py_True);
}

static PyObject *db_incr(DbObject *d, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"key", "delta", "bucket", NULL};
    PyObject *a[3];
    const char *bucket;
    kp_bytes key;
    long long delta = 1;
    if (kp_args("incr", args, nargs, kwnames, names, 2, 1, a) || kp_db_usable(d) || bucket_cname(a[2], &bucket))
        return NULL;
    if (a[1] && (delta = PyLong_AsLongLong(a[1])) == -1 && PyErr_Occurred())
        return NULL;
    if (kp_bytes_get(a[0], &key, "key"))
        return NULL;
    int64_t result = 0;
    int rc;
    d->nogil_calls++;
    Py_BEGIN_ALLOW_THREADS
    rc = keel_db_incr(d->db, bucket, key.v, (int64_t)delta, &result);
    Py_END_ALLOW_THREADS
    d->nogil_calls--;
    kp_bytes_release(&key);
    if (kp_clock_error(d))
        return NULL;
    return rc ? kp_raise(rc) : PyLong_FromLongLong(result);
}

static PyObject *db_cas(DbObject *d, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"key", "expected", "new", "bucket", NULL};
    PyObject *a[4];
    const char *bucket;
    kp_bytes key, exp = {.held = 0}, val;
    if (kp_args("cas", args, nargs, kwnames, names, 3, 3, a) || kp_db_usable(d) || bucket_cname(a[3], &bucket) ||
        kp_bytes_get(a[0], &key, "key"))
        return NULL;
    int have_exp = a[1] != Py_None;
    if ((have_exp && kp_bytes_get(a[1], &exp, "expected")) || kp_bytes_get(a[2], &val, "new")) {
        kp_bytes_release(&key);
        kp_bytes_release(&exp);
        return NULL;
    }
    int rc;
    d->nogil_calls++;
    Py_BEGIN_ALLOW_THREADS
    rc = keel_db_cas(d->db, bucket, key.v, have_exp ? &exp.v : NULL, val.v);
    Py_END_ALLOW_THREADS
    d->nogil_calls--;
    kp_bytes_release(&key);
    kp_bytes_release(&exp);
    kp_bytes_release(&val);
    if (kp_clock_error(d))
        return NULL;
    if (rc == KEEL_MISMATCH)
        return Py_NewRef(Py_False);
    return rc ? kp_raise(rc) : Py_NewRef(Py_True);
}


static int db_traverse(DbObject *d, visitproc visit, void *arg)
{
    Py_VISIT(d->clock);
    Py_VISIT(d->buckets);
    return 0;
}

static int db_clear(DbObject *d)
{
    Py_CLEAR(d->clock); /* kp_clock falls back to the system's time */
    return 0;
}

static void db_finalize(DbObject *d)
{
    if (!d->db || d->closing)
        return;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (d->pid == (long)getpid() &&
        PyErr_ResourceWarning((PyObject *)d, 1, "unclosed keel database %R", d->path) < 0)
        PyErr_WriteUnraisable((PyObject *)d);
    if (db_close(d) < 0)
        PyErr_WriteUnraisable((PyObject *)d);
    PyErr_Restore(et, ev, tb);
}

static void db_dealloc(DbObject *d)
{
    if (PyObject_CallFinalizerFromDealloc((PyObject *)d) < 0)
        return;
    PyObject_GC_UnTrack(d);
    if (d->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)d);
    if (d->db)
        keel_close(d->db);
    for (int i = 0; i < 3; i++)
        Py_XDECREF(d->clock_exc[i]);
    Py_XDECREF(d->clock);
    Py_XDECREF(d->buckets);
    Py_XDECREF(d->path);
    PyObject_GC_Del(d);
}

static PyObject *db_repr(DbObject *d)
{
    return PyUnicode_FromFormat("<keel.Database %R %s>", d->path ? d->path : Py_None,
                                d->db && !d->closing ? "open" : "closed");
}

static PyObject *db_get_closed(DbObject *d, void *unused)
{
    (void)unused;
    return PyBool_FromLong(!d->db || d->closing);
}

static PyObject *db_get_path(DbObject *d, void *unused)
{
    (void)unused;
    return Py_NewRef(d->path ? d->path : Py_None);
}

static PyObject *db_get_max_key_size(DbObject *d, void *unused)
{
    (void)unused;
    return kp_db_usable(d) ? NULL : PyLong_FromSize_t(keel_max_key_size(d->db));
}

static PyObject *db_get_max_pair_size(DbObject *d, void *unused)
{
    (void)unused;
    return kp_db_usable(d) ? NULL : PyLong_FromSize_t(keel_max_pair_size(d->db));
}

static PyGetSetDef db_getset[] = {
    {"closed", (getter)db_get_closed, NULL, "True once close() ran.", NULL},
    {"path", (getter)db_get_path, NULL, "The path given to open().", NULL},
    {"max_key_size", (getter)db_get_max_key_size, NULL, "The longest key this database takes (bytes).", NULL},
    {"max_pair_size", (getter)db_get_max_pair_size, NULL,
     "A dupsort bucket's limit on len(key) + len(value), each zero byte of the key counted twice.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

#define FAST (METH_FASTCALL | METH_KEYWORDS)
#define M(name, fn, flags, doc) {name, (PyCFunction)(void (*)(void))fn, flags, doc}
static PyMethodDef db_methods[] = {
    M("close", db_close_m, METH_NOARGS,
      "close()\n\nAbort the open transactions and close the database (again: no-op)."),
    M("begin", db_begin, FAST,
      "begin(write=False, buffers=False) -> Transaction\n\n"
      "A read txn (a snapshot; never waits) or, with write=True, the write txn (waits\n"
      "for the writer lock without holding the GIL).  Used with `with`, a write txn\n"
      "commits on normal exit and aborts on an exception.  buffers=True (read txns):\n"
      "values and keys are memoryviews into the map, valid until the txn ends."),
    M("get", db_get, FAST, "get(key, default=None, *, bucket=None) -> bytes\n\nRead one key in a txn of its own."),
    M("put", db_put, FAST,
      "put(key, value, *, bucket=None, ttl=None, nx=False, keepttl=False, dupdata=True) -> bool\n\n"
      "Write one key in a txn of its own (committed).  False: nx and the key exists, or\n"
      "dupdata=False and the pair exists (a dupsort bucket)."),
    M("delete", db_delete, FAST,
      "delete(key, value=None, *, bucket=None) -> bool\n\n"
      "Delete one key (with value: one pair) in a txn of its own."),
    M("incr", db_incr, FAST,
      "incr(key, delta=1, *, bucket=None) -> int\n\nAdd to a decimal counter in a txn of its own."),
    M("cas", db_cas, FAST,
      "cas(key, expected, new, *, bucket=None) -> bool\n\n"
      "Compare-and-swap in a txn of its own; expected None = the key must be absent."),
    M("stat", kp_db_stat, METH_NOARGS, "stat() -> dict\n\nPage size, depth, entries and page counts of the file."),
    M("readers", kp_db_readers, METH_NOARGS,
      "readers() -> list of dict\n\nThe read txns open on the database: pid, txnid, lag (commits), age (s)."),
    M("copy", kp_db_copy, FAST,
      "copy(path, compact=False)\n\nA consistent copy of the newest snapshot into a new file."),
    M("check", kp_db_check, METH_NOARGS,
      "check() -> list of str\n\nWalk the newest snapshot; the problems found (empty: sound)."),
    M("__enter__", db_enter, METH_NOARGS, NULL),
    M("__exit__", db_exit, METH_FASTCALL, NULL),
    {NULL, NULL, 0, NULL},
};

PyTypeObject Db_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "keel.Database",
    .tp_basicsize = sizeof(DbObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "An open keel database: see keel.open().",
    .tp_dealloc = (destructor)db_dealloc,
    .tp_finalize = (destructor)db_finalize,
    .tp_traverse = (traverseproc)db_traverse,
    .tp_clear = (inquiry)db_clear,
    .tp_repr = (reprfunc)db_repr,
    .tp_weaklistoffset = offsetof(DbObject, weakreflist),
    .tp_methods = db_methods,
    .tp_getset = db_getset,
};
