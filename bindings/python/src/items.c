/*
 * items.c — the Items iterator of txn.items().
 *
 * Contract:
 *   - It yields the (key, value) pairs with keys in [lower, upper): lower is
 *     the larger of start and prefix, upper the smaller of stop and the
 *     first key past every key with the prefix (none if the prefix is all
 *     0xff bytes).  Ascending, or descending with reverse=True.
 *   - In a read txn (an unchanging snapshot) it reads ahead up to BATCH
 *     entries at a time without the GIL (the txn is busy meanwhile), then
 *     makes their objects; in a write txn it reads one entry per step, so
 *     changes made while iterating are seen as a cursor sees them.
 *   - A bucket that does not exist yields nothing.  The txn's end stops it
 *     with TxnError at its next read.
 */
#include <string.h>

#include "keelpy.h"

#define BATCH 64

typedef struct {
    PyObject_HEAD
    CursorObject *cur;    /* NULL: an absent bucket */
    PyObject *lower, *upper; /* bytes or NULL */
    int reverse, started, done;
    int n, next;          /* entries read ahead, and the next to yield */
    keel_val keys[BATCH], vals[BATCH];
} ItemsObject;

static int cmp(keel_val a, PyObject *b)
{
    size_t bl = (size_t)PyBytes_GET_SIZE(b);
    int c = memcmp(a.data, PyBytes_AS_STRING(b), a.len < bl ? a.len : bl);
    return c ? c : (a.len > bl) - (a.len < bl);
}

static keel_val val_of(PyObject *b)
{
    return (keel_val){PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b)};
}

/* Places the cursor on the first entry to yield. */
static int position(ItemsObject *it, keel_val *k, keel_val *v)
{
    keel_cursor *c = it->cur->c;
    if (!it->reverse)
        return it->lower ? keel_cursor_seek(c, val_of(it->lower), k, v) : keel_cursor_first(c, k, v);
    if (!it->upper)
        return keel_cursor_last(c, k, v);
    int rc = keel_cursor_seek(c, val_of(it->upper), k, v);
    if (rc == KEEL_NOTFOUND)
        return keel_cursor_last(c, k, v);
    return rc ? rc : keel_cursor_prev(c, k, v);
}

/* Reads up to max entries ahead; touches no Python object but the bounds. */
static int read_ahead(ItemsObject *it, int max)
{
    keel_val k, v;
    it->n = it->next = 0;
    while (it->n < max) {
        int rc;
        if (!it->started) {
            it->started = 1;
            rc = position(it, &k, &v);
        } else {
            rc = it->reverse ? keel_cursor_prev(it->cur->c, &k, &v) : keel_cursor_next(it->cur->c, &k, &v);
        }
        if (rc == KEEL_NOTFOUND || (!rc && ((it->lower && cmp(k, it->lower) < 0) ||
                                            (it->upper && cmp(k, it->upper) >= 0)))) {
            it->done = 1;
            return 0;
        }
        if (rc)
            return rc;
        it->keys[it->n] = k;
        it->vals[it->n++] = v;
    }
    return 0;
}

static PyObject *items_next(ItemsObject *it)
{
    if (it->next < it->n) {
        if (kp_cursor_usable(it->cur))
            return NULL;
        int i = it->next++;
        return kp_pair(it->cur->txn, it->keys[i], it->vals[i]);
    }
    if (it->done || !it->cur)
        return NULL;
    if (kp_cursor_usable(it->cur))
        return NULL;
    TxnObject *t = it->cur->txn;
    int rc;
    if (t->write) {
        rc = read_ahead(it, 1);
    } else {
        t->busy = 1;
        Py_BEGIN_ALLOW_THREADS
        rc = read_ahead(it, BATCH);
        Py_END_ALLOW_THREADS
        t->busy = 0;
    }
    if (rc)
        return kp_raise(rc);
    if (it->n == 0)
        return NULL;
    it->next = 1;
    return kp_pair(t, it->keys[0], it->vals[0]);
}

/* The first key past every key that starts with prefix; NULL (no error) if none. */
static PyObject *past_prefix(PyObject *prefix)
{
    Py_ssize_t n = PyBytes_GET_SIZE(prefix);
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(prefix);
    while (n > 0 && p[n - 1] == 0xff)
        n--;
    if (n == 0)
        return NULL;
    /* a fresh object to write into: FromStringAndSize(p, 1) would answer
     * CPython's shared one-byte bytes, and the increment would change it */
    PyObject *r = PyBytes_FromStringAndSize(NULL, n);
    if (r) {
        unsigned char *q = (unsigned char *)PyBytes_AS_STRING(r);
        memcpy(q, p, (size_t)n);
        q[n - 1]++;
    }
    return r;
}

/* A bound argument as bytes (a copy of any other bytes-like); NULL for None. */
static int bound(PyObject *o, const char *what, PyObject **out)
{
    kp_bytes b;
    *out = NULL;
    if (!o || o == Py_None)
        return 0;
    if (kp_bytes_get(o, &b, what))
        return -1;
    *out = PyBytes_FromStringAndSize(b.v.data, (Py_ssize_t)b.v.len);
    kp_bytes_release(&b);
    return *out ? 0 : -1;
}

/* lower = max(start, prefix), upper = min(stop, past_prefix(prefix)). */
static int bounds(ItemsObject *it, PyObject *start, PyObject *stop, PyObject *prefix)
{
    PyObject *lo, *hi, *pre, *past = NULL;
    if (bound(start, "start", &lo) || bound(stop, "stop", &hi))
        return -1; /* lo leaks nothing: the caller frees it->lower/upper */
    it->lower = lo;
    it->upper = hi;
    if (bound(prefix, "prefix", &pre))
        return -1;
    if (!pre)
        return 0;
    if (!(past = past_prefix(pre)) && PyErr_Occurred()) {
        Py_DECREF(pre);
        return -1;
    }
    if (!it->lower || cmp(val_of(pre), it->lower) > 0)
        Py_XSETREF(it->lower, Py_NewRef(pre));
    if (past && (!it->upper || cmp(val_of(past), it->upper) < 0))
        Py_XSETREF(it->upper, Py_NewRef(past));
    Py_DECREF(pre);
    Py_XDECREF(past);
    return 0;
}

PyObject *kp_txn_items(TxnObject *t, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"bucket", "start", "stop", "prefix", "reverse", NULL};
    PyObject *a[5];
    int absent;
    if (kp_args("items", args, nargs, kwnames, names, 0, 0, a) || kp_txn_usable(t))
        return NULL;
    int reverse = kp_bool(a[4], 0);
    if (reverse < 0)
        return NULL;
    ItemsObject *it = PyObject_New(ItemsObject, &Items_Type);
    if (!it)
        return NULL;
    it->cur = NULL;
    it->lower = it->upper = NULL;
    it->reverse = reverse;
    it->started = it->done = it->n = it->next = 0;
    if (bounds(it, a[1], a[2], a[3]) || (!(it->cur = kp_cursor_open(t, a[0], &absent)) && !absent)) {
        Py_DECREF(it);
        return NULL;
    }
    return (PyObject *)it;
}

static void items_dealloc(ItemsObject *it)
{
    Py_XDECREF(it->cur);
    Py_XDECREF(it->lower);
    Py_XDECREF(it->upper);
    PyObject_Free(it);
}

PyTypeObject Items_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "keel.Items",
    .tp_basicsize = sizeof(ItemsObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An iterator of (key, value) pairs: see Transaction.items().",
    .tp_dealloc = (destructor)items_dealloc,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)items_next,
};
