/*
 * txn.c — the Transaction type: life cycle, buckets, buffers, and the
 * single-key calls.
 *
 * Contract:
 *   - A Transaction is LIVE from db.begin() until commit(), abort(), the end
 *     of its `with` block, or db.close(); then every call raises TxnError
 *     (abort() is a no-op).  Ending closes its cursors.  A write txn begins
 *     without the GIL (it may wait for the writer lock) and commits without
 *     it (commits sync); calls that drop the GIL mark the txn busy.
 *   - Buckets are named by str or bytes (None: the default bucket).  Handles
 *     are cached on the Database by name; a cached handle that keel calls
 *     stale (KEEL_BADBUCKET: dropped, or absent from this snapshot) is
 *     forgotten and looked up once more.  Reading a bucket that does not
 *     exist reads an empty bucket; writing one creates it.
 *   - Values (and keys, from scans) are bytes, or with buffers=True
 *     memoryviews exported by the txn itself (keelpy.h).
 *   - A write txn's nested txn (txn.nested(), keel_begin_nested) is a
 *     Transaction too: it sees the parent's changes; its commit hands them
 *     to the parent (with the GIL: it writes nothing), its abort drops them.
 *     While it lives, every call on the parent raises TxnError and so does
 *     the parent's commit(), which ends nothing; the parent's abort (or
 *     db.close()) aborts the child first.  The `with` block of a parent
 *     that ends normally with a child still live aborts both, then raises
 *     TxnError.
 *   - Buckets that exist are opened without KEEL_CREATE, so that a write
 *     reaches a DUPSORT bucket too (keel's KEEL_CREATE names the plain kind).
 *   - The data calls live in txn_ops.c and txn_batch.c, scans in cursor.c.
 */
#include "keelpy.h"

int kp_txn_usable(TxnObject *t)
{
    if (t->state != TXN_LIVE) {
        kp_raise_msg(KEEL_BADTXN, "the transaction has ended");
        return -1;
    }
    if (t->busy) {
        kp_raise_msg(KEEL_BUSY, "the transaction is in use by another thread");
        return -1;
    }
    if (t->child) {
        kp_raise_msg(KEEL_BADTXN, "the transaction has a live nested transaction (end it first)");
        return -1;
    }
    return 0;
}

/* ---- buckets ---- */

int kp_bucket(TxnObject *t, PyObject *name, int create, keel_bucket *out)
{
    const char *cname;
    *out = KEEL_DEFAULT_BUCKET;
    if (!name || name == Py_None)
        return 0;
    if (!PyUnicode_Check(name) && !PyBytes_Check(name))
        return kp_name(name, &cname); /* the TypeError */
    PyObject *h = PyDict_GetItemWithError(t->db->buckets, name);
    if (h) {
        *out = (keel_bucket)PyLong_AsUnsignedLong(h);
        return 0;
    }
    if (PyErr_Occurred() || kp_name(name, &cname))
        return -1;
    int rc = keel_bucket_open(t->txn, cname, 0, out); /* either kind */
    if (rc == KEEL_NOTFOUND && create)
        rc = keel_bucket_open(t->txn, cname, KEEL_CREATE, out);
    else if (rc == KEEL_NOTFOUND)
        return KP_ABSENT;
    if (rc)
        return (kp_raise(rc), KP_ERR);
    PyObject *v = PyLong_FromUnsignedLong(*out);
    int err = !v || PyDict_SetItem(t->db->buckets, name, v) < 0;
    Py_XDECREF(v);
    return err ? -1 : 0;
}

int kp_bucket_stale(TxnObject *t, PyObject *name, int rc, int *tries)
{
    if (rc != KEEL_BADBUCKET || !name || name == Py_None || (*tries)++)
        return 0;
    if (PyDict_DelItem(t->db->buckets, name) < 0)
        PyErr_Clear();
    return 1;
}

/* ---- buffers ---- */

static int txn_getbuffer(TxnObject *t, Py_buffer *view, int flags)
{
    if (!t->pend_ready) {
        view->obj = NULL;
        PyErr_SetString(PyExc_BufferError, "a keel Transaction is not a buffer");
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)t, (void *)t->pend_buf, t->pend_len, 1, flags) < 0)
        return -1;
    t->exports++;
    return 0;
}

static void txn_releasebuffer(TxnObject *t, Py_buffer *view)
{
    (void)view;
    if (--t->exports == 0 && t->state == TXN_PINNED) {
        keel_abort(t->txn);
        t->txn = NULL;
        t->state = TXN_DONE;
        kp_db_unpinned(t->db);
    }
}

static PyBufferProcs txn_as_buffer = {(getbufferproc)txn_getbuffer, (releasebufferproc)txn_releasebuffer};

/* Drops the views nobody else holds any more, so a long scan's list stays short. */
static int prune_views(TxnObject *t)
{
    PyObject *kept = PyList_New(0);
    if (!kept)
        return -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(t->views); i++) {
        PyObject *mv = PyList_GET_ITEM(t->views, i);
        if (Py_REFCNT(mv) > 1 && PyList_Append(kept, mv) < 0) {
            Py_DECREF(kept);
            return -1;
        }
    }
    Py_SETREF(t->views, kept);
    t->views_limit = 2 * PyList_GET_SIZE(kept) + 64;
    return 0;
}

static PyObject *make_view(TxnObject *t, keel_val v)
{
    if (!t->views) {
        if (!(t->views = PyList_New(0)))
            return NULL;
        if (!PyObject_GC_IsTracked((PyObject *)t))
            PyObject_GC_Track(t); /* views may make a cycle with it */
    }
    if (PyList_GET_SIZE(t->views) >= t->views_limit && prune_views(t) < 0)
        return NULL;
    t->pend_buf = v.data;
    t->pend_len = (Py_ssize_t)v.len;
    t->pend_ready = 1;
    PyObject *mv = PyMemoryView_FromObject((PyObject *)t);
    t->pend_ready = 0;
    if (mv && PyList_Append(t->views, mv) < 0)
        Py_CLEAR(mv);
    return mv;
}

PyObject *kp_value(TxnObject *t, keel_val v)
{
    if (!t->buffers)
        return PyBytes_FromStringAndSize(v.data, (Py_ssize_t)v.len);
    return make_view(t, v);
}

/* Releases the memoryviews handed out; ones still exported elsewhere stay
 * valid (the snapshot is pinned) and are released by their holders. */
static void release_views(TxnObject *t)
{
    PyObject *views = t->views;
    if (!views)
        return;
    t->views = NULL;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(views); i++) {
        PyObject *mv = PyList_GET_ITEM(views, i);
        if (Py_REFCNT(mv) > 1) {
            PyObject *r = PyObject_CallMethodNoArgs(mv, kp_str_release);
            if (!r)
                PyErr_Clear();
            Py_XDECREF(r);
        }
    }
    Py_DECREF(views);
    PyErr_Restore(et, ev, tb);
}

/* ---- life cycle ---- */

/* Txn objects of ended txns, kept for the next begin: one txn per get
 * allocates no object memory.  They are untracked by the GC. */
#define SPARE_TXNS 16
static TxnObject *spare_txns[SPARE_TXNS];
static int n_spare_txns;

static void link_txn(TxnObject *t)
{
    DbObject *d = t->db;
    t->state = TXN_LIVE;
    t->next = d->txns;
    if (d->txns)
        d->txns->prev = t;
    d->txns = t;
}

PyObject *kp_txn_new(DbObject *d, int write, int buffers)
{
    if (buffers && write) {
        PyErr_SetString(PyExc_ValueError,
                        "buffers=True is for read transactions (a write txn's data move with each change)");
        return NULL;
    }
    TxnObject *t;
    if (n_spare_txns) {
        t = spare_txns[--n_spare_txns];
        PyObject_Init((PyObject *)t, &Txn_Type);
    } else if (!(t = PyObject_GC_New(TxnObject, &Txn_Type))) {
        return NULL;
    }
    t->txn = NULL;
    Py_INCREF(d);
    t->db = d;
    t->prev = t->next = NULL;
    t->parent = t->child = NULL;
    t->cursors = NULL;
    t->state = TXN_DONE;
    t->write = (char)write;
    t->buffers = (char)buffers;
    t->busy = t->pend_ready = 0;
    t->exports = 0;
    t->views = NULL;
    t->views_limit = 64;
    int rc;
    if (write) {
        d->nogil_calls++;
        Py_BEGIN_ALLOW_THREADS
        rc = keel_begin(d->db, 0, &t->txn);
        Py_END_ALLOW_THREADS
        d->nogil_calls--;
    } else {
        rc = keel_begin(d->db, KEEL_RDONLY, &t->txn);
    }
    if (rc || kp_clock_error(d)) {
        if (!rc)
            keel_abort(t->txn);
        t->txn = NULL;
        Py_DECREF(t);
        return rc ? kp_raise(rc) : NULL;
    }
    link_txn(t);
    return (PyObject *)t; /* tracked by the GC once it has views (make_view) */
}

static void unlink_txn(TxnObject *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else if (t->db->txns == t)
        t->db->txns = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->prev = t->next = NULL;
}

int kp_txn_end(TxnObject *t, int commit)
{
    if (t->state != TXN_LIVE) {
        if (commit)
            return kp_txn_usable(t);
        return 0;
    }
    if (t->busy)
        return kp_txn_usable(t);
    if (t->child) {
        if (commit) /* as keel_commit: refused, and nothing ends */
            return kp_txn_usable(t);
        if (kp_txn_end(t->child, 0)) /* a busy descendant: nothing ended */
            return -1;
    }
    while (t->cursors)
        kp_cursor_close(t->cursors);
    release_views(t);
    unlink_txn(t);
    keel_txn *txn = t->txn;
    if (t->parent) {
        t->parent->child = NULL;
        t->txn = NULL;
        t->state = TXN_DONE;
        if (!commit) {
            keel_abort(txn);
            return 0;
        }
        int rc = keel_commit(txn); /* hands the changes to the parent: no I/O */
        return rc ? (kp_raise(rc), -1) : 0;
    }
    if (commit && t->write) {
        t->txn = NULL;
        t->state = TXN_DONE;
        int rc;
        t->db->nogil_calls++;
        Py_BEGIN_ALLOW_THREADS
        rc = keel_commit(txn);
        Py_END_ALLOW_THREADS
        t->db->nogil_calls--;
        return rc ? (kp_raise(rc), -1) : 0;
    }
    if (t->exports > 0) {
        t->state = TXN_PINNED;
        t->db->pinned++;
        return 0;
    }
    t->txn = NULL;
    t->state = TXN_DONE;
    keel_abort(txn);
    return 0;
}

static PyObject *txn_nested(TxnObject *t, PyObject *unused)
{
    (void)unused;
    if (kp_txn_usable(t))
        return NULL;
    if (!t->write)
        return kp_raise_msg(KEEL_READONLY, "a nested transaction needs a write transaction");
    TxnObject *c;
    if (n_spare_txns) {
        c = spare_txns[--n_spare_txns];
        PyObject_Init((PyObject *)c, &Txn_Type);
    } else if (!(c = PyObject_GC_New(TxnObject, &Txn_Type))) {
        return NULL;
    }
    c->txn = NULL;
    c->db = (DbObject *)Py_NewRef(t->db);
    c->prev = c->next = NULL;
    c->parent = (TxnObject *)Py_NewRef(t);
    c->child = NULL;
    c->cursors = NULL;
    c->state = TXN_DONE;
    c->write = 1;
    c->buffers = c->busy = c->pend_ready = 0;
    c->exports = 0;
    c->views = NULL;
    c->views_limit = 64;
    int rc = keel_begin_nested(t->txn, &c->txn);
    if (rc) {
        c->txn = NULL;
        Py_DECREF(c);
        return kp_raise(rc);
    }
    link_txn(c);
    t->child = c;
    return (PyObject *)c;
}

static PyObject *txn_commit(TxnObject *t, PyObject *unused)
{
    (void)unused;
    return kp_txn_end(t, 1) ? NULL : Py_NewRef(Py_None);
}

static PyObject *txn_abort(TxnObject *t, PyObject *unused)
{
    (void)unused;
    return kp_txn_end(t, 0) ? NULL : Py_NewRef(Py_None);
}

static PyObject *txn_enter(TxnObject *t, PyObject *unused)
{
    (void)unused;
    return kp_txn_usable(t) ? NULL : Py_NewRef(t);
}

static PyObject *txn_exit(TxnObject *t, PyObject *const *args, Py_ssize_t nargs)
{
    int ok = nargs < 1 || args[0] == Py_None;
    if (t->state != TXN_LIVE)
        return Py_NewRef(Py_False);
    if (ok && t->write && t->child && !t->busy) { /* the block ended with a child left open */
        if (kp_txn_end(t, 0))
            return NULL;
        return kp_raise_msg(KEEL_BADTXN, "the block ended with a nested transaction still open: both aborted");
    }
    return kp_txn_end(t, ok && t->write) ? NULL : Py_NewRef(Py_False);
}

static int txn_traverse(TxnObject *t, visitproc visit, void *arg)
{
    Py_VISIT(t->db);
    Py_VISIT(t->parent);
    Py_VISIT(t->views);
    return 0;
}

static int txn_clear(TxnObject *t)
{
    Py_CLEAR(t->views); /* the cycle txn -> views -> memoryview -> txn */
    return 0;
}

static void txn_dealloc(TxnObject *t)
{
    PyObject_GC_UnTrack(t);
    if (t->state == TXN_LIVE) /* not busy: a busy call holds a reference */
        kp_txn_end(t, 0);
    else if (t->txn) { /* never: a pinned txn is referenced by its buffers */
        keel_abort(t->txn);
        kp_db_unpinned(t->db);
    }
    Py_CLEAR(t->views);
    Py_CLEAR(t->parent);
    Py_CLEAR(t->db);
    if (n_spare_txns < SPARE_TXNS)
        spare_txns[n_spare_txns++] = t;
    else
        PyObject_GC_Del(t);
}

static PyObject *txn_repr(TxnObject *t)
{
    static const char *const states[] = {"live", "ended (buffers still held)", "ended"};
    return PyUnicode_FromFormat("<keel.Transaction %s %s>", t->parent ? "nested" : t->write ? "write" : "read",
                                states[t->state]);
}

static PyObject *txn_get_id(TxnObject *t, void *unused)
{
    (void)unused;
    return kp_txn_usable(t) ? NULL : PyLong_FromUnsignedLongLong(keel_txn_id(t->txn));
}

static PyObject *txn_get_flag(TxnObject *t, void *which)
{
    switch ((int)(intptr_t)which) {
    case 0: return PyBool_FromLong(t->write);
    case 1: return PyBool_FromLong(t->buffers);
    default: return PyBool_FromLong(t->state != TXN_LIVE);
    }
}

static PyObject *txn_get_parent(TxnObject *t, void *unused)
{
    (void)unused;
    return Py_NewRef(t->parent ? (PyObject *)t->parent : Py_None);
}

static PyGetSetDef txn_getset[] = {
    {"id", (getter)txn_get_id, NULL, "The snapshot id (read txn) or the id being written (write txn).", NULL},
    {"write", (getter)txn_get_flag, NULL, "True for the write txn.", (void *)0},
    {"buffers", (getter)txn_get_flag, NULL, "True if reads answer memoryviews.", (void *)1},
    {"ended", (getter)txn_get_flag, NULL, "True once committed or aborted.", (void *)2},
    {"parent", (getter)txn_get_parent, NULL, "The parent of a nested txn, else None.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

#define FAST (METH_FASTCALL | METH_KEYWORDS)
#define M(name, fn, flags, doc) {name, (PyCFunction)(void (*)(void))fn, flags, doc}
static PyMethodDef txn_methods[] = {
    M("get", kp_txn_get, FAST,
      "get(key, default=None, *, bucket=None) -> bytes\n\nThe key's value, or default if absent or expired."),
    M("put", kp_txn_put, FAST,
      "put(key, value, *, bucket=None, ttl=None, nx=False, keepttl=False, dupdata=True) -> bool\n\n"
      "Store value under key.  ttl: seconds until it expires.  A plain put clears the\n"
      "key's expiry unless keepttl=True.  nx=True: only if absent (False if present).\n"
      "In a dupsort bucket: adds value to the key's values (the key's expiry is kept\n"
      "unless ttl is given); dupdata=False: False if the pair is already there."),
    M("delete", kp_txn_delete, FAST,
      "delete(key, value=None, *, bucket=None) -> bool\n\n"
      "Delete the key (in a dupsort bucket: with all its values); with value, only\n"
      "the pair (key, value) (a plain bucket: the key if its value is value).\n"
      "False if absent."),
    M("get_all", kp_txn_get_all, FAST,
      "get_all(key, *, bucket=None) -> list\n\n"
      "Every value of key in order (a dupsort bucket); [] if absent."),
    M("count", kp_txn_count, FAST,
      "count(key, *, bucket=None) -> int\n\nThe number of values of key (0 if absent; 1 in a plain bucket)."),
    M("incr", kp_txn_incr, FAST,
      "incr(key, delta=1, *, bucket=None) -> int\n\n"
      "Add delta to the decimal integer stored at key (absent = 0); keeps its expiry."),
    M("cas", kp_txn_cas, FAST,
      "cas(key, expected, new, *, bucket=None) -> bool\n\n"
      "Store new if the value is expected (None: if the key is absent); False otherwise."),
    M("ttl", kp_txn_ttl, FAST,
      "ttl(key, *, bucket=None) -> float or None\n\n"
      "Seconds until the key expires, None if it does not; NotFoundError (KeyError) if absent."),
    M("expire", kp_txn_expire, FAST,
      "expire(key, seconds, *, bucket=None) -> bool\n\nSet the key to expire in seconds; False if absent."),
    M("persist", kp_txn_persist, FAST, "persist(key, *, bucket=None) -> bool\n\nRemove the key's expiry; False if absent."),
    M("items", kp_txn_items, FAST,
      "items(*, bucket=None, start=None, stop=None, prefix=None, reverse=False) -> iterator\n\n"
      "(key, value) pairs in key order (descending with reverse=True), keys in\n"
      "[start, stop) that begin with prefix."),
    M("cursor", kp_txn_cursor, FAST, "cursor(bucket=None) -> Cursor\n\nA cursor over one bucket (NotFoundError if absent)."),
    M("get_many", kp_txn_get_many, FAST,
      "get_many(keys, *, bucket=None) -> list\n\nThe values of keys, None for each one absent."),
    M("put_many", kp_txn_put_many, FAST,
      "put_many(pairs, *, bucket=None)\n\nStore a mapping or an iterable of (key, value): all or nothing."),
    M("buckets", kp_txn_buckets, METH_NOARGS, "buckets() -> list of str\n\nThe named buckets, in name order."),
    M("create_bucket", kp_txn_create_bucket, FAST,
      "create_bucket(name, *, dupsort=False) -> bool\n\n"
      "Create the bucket; False if it exists.  dupsort=True: each key holds a sorted\n"
      "set of values.  IncompatibleError if it exists as the other kind."),
    M("is_dupsort", kp_txn_is_dupsort, FAST,
      "is_dupsort(bucket=None) -> bool\n\nTrue for a dupsort bucket (NotFoundError if absent)."),
    M("drop_bucket", kp_txn_drop_bucket, METH_O,
      "drop_bucket(name) -> bool\n\nRemove the bucket and its keys; False if absent."),
    M("purge", kp_txn_purge, FAST,
      "purge(max=None) -> int\n\nRemove up to max expired keys (all if None), oldest first; how many."),
    M("stat", kp_txn_stat, FAST, "stat(bucket=None) -> dict\n\nPage and entry counts of one bucket."),
    M("nested", txn_nested, METH_NOARGS,
      "nested() -> Transaction\n\n"
      "Begin a nested txn of this write txn (a savepoint): it sees this txn's changes;\n"
      "its commit hands its changes to this txn, its abort drops them.  Until it ends,\n"
      "calls on this txn raise TxnError.  Used with `with`, it commits on normal exit\n"
      "and aborts on an exception."),
    M("commit", txn_commit, METH_NOARGS,
      "commit()\n\nMake the write txn's changes durable (a read txn just ends)."),
    M("abort", txn_abort, METH_NOARGS, "abort()\n\nEnd the txn, dropping its changes (again: no-op)."),
    M("__enter__", txn_enter, METH_NOARGS, NULL),
    M("__exit__", txn_exit, METH_FASTCALL, NULL),
    {NULL, NULL, 0, NULL},
};

PyTypeObject Txn_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "keel.Transaction",
    .tp_basicsize = sizeof(TxnObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A keel transaction: see Database.begin().",
    .tp_dealloc = (destructor)txn_dealloc,
    .tp_traverse = (traverseproc)txn_traverse,
    .tp_clear = (inquiry)txn_clear,
    .tp_repr = (reprfunc)txn_repr,
    .tp_as_buffer = &txn_as_buffer,
    .tp_methods = txn_methods,
    .tp_getset = txn_getset,
};
