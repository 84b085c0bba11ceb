/*
 * cursor.c — the Cursor type (txn.cursor()).
 *
 * Contract:
 *   - A Cursor walks one bucket: first/last/seek/next/prev answer whether it
 *     is positioned on an entry (keel's rules: stepping past an end stays
 *     put); key/value/item read the current entry (None when unpositioned);
 *     delete() removes it.  Iterating a cursor yields (key, value) from the
 *     current entry (or the first, if unpositioned) onwards.
 *   - DUPSORT buckets: the cursor visits every (key, value) pair in order;
 *     seek_key/seek_pair/next_dup/prev_dup/next_key/prev_key answer as the
 *     moves above (next_dup/prev_dup: False when unpositioned too), count()
 *     the current key's values (0 when unpositioned).  In a plain bucket a
 *     key has one value.
 *   - The txn's end closes the keel cursor (txn.c); the Cursor then raises
 *     TxnError.  A nested txn's cursors end with it; its parent's cursors
 *     raise TxnError while the child lives, then work again.
 */
#include <string.h>

#include "keelpy.h"

int kp_cursor_usable(CursorObject *c)
{
    if (!c->c) {
        kp_raise_msg(KEEL_BADTXN, "the cursor is closed (its transaction ended)");
        return -1;
    }
    return kp_txn_usable(c->txn);
}

void kp_cursor_close(CursorObject *c)
{
    if (!c->c)
        return;
    keel_cursor_close(c->c);
    c->c = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        c->txn->cursors = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

/* A cursor on bucket, or NULL: *absent tells a missing bucket from an error. */
CursorObject *kp_cursor_open(TxnObject *t, PyObject *bucket, int *absent)
{
    keel_cursor *kc = NULL;
    keel_bucket b;
    int rc, tries = 0;
    *absent = 0;
    do {
        if ((rc = kp_bucket(t, bucket, 0, &b)))
            break;
        rc = keel_cursor_open(t->txn, b, &kc);
    } while (kp_bucket_stale(t, bucket, rc, &tries));
    if (rc == KP_ABSENT || rc == KEEL_NOTFOUND) {
        *absent = 1;
        return NULL;
    }
    if (rc)
        return rc == KP_ERR ? NULL : (kp_raise(rc), NULL);
    CursorObject *c = PyObject_New(CursorObject, &Cursor_Type);
    if (!c) {
        keel_cursor_close(kc);
        return NULL;
    }
    c->c = kc;
    Py_INCREF(t);
    c->txn = t;
    c->fresh = 1;
    c->prev = NULL;
    c->next = t->cursors;
    if (t->cursors)
        t->cursors->prev = c;
    t->cursors = c;
    return c;
}

PyObject *kp_txn_cursor(TxnObject *t, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"bucket", NULL};
    PyObject *a[1];
    int absent;
    if (kp_args("cursor", args, nargs, kwnames, names, 1, 0, a) || kp_txn_usable(t))
        return NULL;
    CursorObject *c = kp_cursor_open(t, a[0], &absent);
    if (absent)
        return kp_raise_msg(KEEL_NOTFOUND, "no such bucket");
    return (PyObject *)c;
}

PyObject *kp_pair(TxnObject *t, keel_val k, keel_val v)
{
    PyObject *key = kp_value(t, k), *val = key ? kp_value(t, v) : NULL;
    if (!val) {
        Py_XDECREF(key);
        return NULL;
    }
    PyObject *p = PyTuple_New(2);
    if (!p) {
        Py_DECREF(key);
        Py_DECREF(val);
        return NULL;
    }
    PyTuple_SET_ITEM(p, 0, key);
    PyTuple_SET_ITEM(p, 1, val);
    return p;
}

/* True/False for a move that found an entry or not; raises otherwise. */
static PyObject *moved(int rc)
{
    if (rc == 0)
        return Py_NewRef(Py_True);
    if (rc == KEEL_NOTFOUND)
        return Py_NewRef(Py_False);
    return kp_raise(rc);
}

typedef int (*move_fn)(keel_cursor *, keel_val *, keel_val *);

static PyObject *cursor_move(CursorObject *c, move_fn fn)
{
    keel_val k, v;
    return kp_cursor_usable(c) ? NULL : moved(fn(c->c, &k, &v));
}

static PyObject *cursor_first(CursorObject *c, PyObject *u) { (void)u; return cursor_move(c, keel_cursor_first); }
static PyObject *cursor_last(CursorObject *c, PyObject *u) { (void)u; return cursor_move(c, keel_cursor_last); }
static PyObject *cursor_next_m(CursorObject *c, PyObject *u) { (void)u; return cursor_move(c, keel_cursor_next); }
static PyObject *cursor_prev(CursorObject *c, PyObject *u) { (void)u; return cursor_move(c, keel_cursor_prev); }

static PyObject *cursor_seek(CursorObject *c, PyObject *key)
{
    kp_bytes kb;
    keel_val k, v;
    if (kp_cursor_usable(c) || kp_bytes_get(key, &kb, "key"))
        return NULL;
    int rc = keel_cursor_seek(c->c, kb.v, &k, &v);
    kp_bytes_release(&kb);
    return moved(rc);
}

static PyObject *cursor_seek_key(CursorObject *c, PyObject *key)
{
    kp_bytes kb;
    keel_val v;
    if (kp_cursor_usable(c) || kp_bytes_get(key, &kb, "key"))
        return NULL;
    int rc = keel_cursor_seek_key(c->c, kb.v, &v);
    kp_bytes_release(&kb);
    return moved(rc);
}

static PyObject *cursor_seek_pair(CursorObject *c, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"key", "value", NULL};
    PyObject *a[2];
    kp_bytes kb, vb;
    keel_val k, v;
    if (kp_args("seek_pair", args, nargs, kwnames, names, 2, 2, a) || kp_cursor_usable(c) ||
        kp_bytes_get(a[0], &kb, "key"))
        return NULL;
    if (kp_bytes_get(a[1], &vb, "value")) {
        kp_bytes_release(&kb);
        return NULL;
    }
    int rc = keel_cursor_seek_pair(c->c, kb.v, vb.v, &k, &v);
    kp_bytes_release(&kb);
    kp_bytes_release(&vb);
    return moved(rc);
}

/* next_dup/prev_dup: an unpositioned cursor has no key, so no next value. */
static PyObject *cursor_move_dup(CursorObject *c, move_fn fn)
{
    keel_val k, v;
    if (kp_cursor_usable(c))
        return NULL;
    int rc = fn(c->c, &k, &v);
    return moved(rc == KEEL_BADCURSOR ? KEEL_NOTFOUND : rc);
}

static PyObject *cursor_next_dup(CursorObject *c, PyObject *u) { (void)u; return cursor_move_dup(c, keel_cursor_next_dup); }
static PyObject *cursor_prev_dup(CursorObject *c, PyObject *u) { (void)u; return cursor_move_dup(c, keel_cursor_prev_dup); }
static PyObject *cursor_next_key(CursorObject *c, PyObject *u) { (void)u; return cursor_move(c, keel_cursor_next_key); }
static PyObject *cursor_prev_key(CursorObject *c, PyObject *u) { (void)u; return cursor_move(c, keel_cursor_prev_key); }

static PyObject *cursor_count(CursorObject *c, PyObject *u)
{
    (void)u;
    uint64_t n = 0;
    if (kp_cursor_usable(c))
        return NULL;
    int rc = keel_cursor_count(c->c, &n);
    if (rc == KEEL_BADCURSOR || rc == KEEL_NOTFOUND)
        return PyLong_FromLong(0);
    return rc ? kp_raise(rc) : PyLong_FromUnsignedLongLong(n);
}

static PyObject *cursor_delete(CursorObject *c, PyObject *u)
{
    (void)u;
    if (kp_cursor_usable(c))
        return NULL;
    int rc = keel_cursor_del(c->c);
    if (rc == KEEL_BADCURSOR)
        return Py_NewRef(Py_False); /* not positioned */
    return rc ? kp_raise(rc) : Py_NewRef(Py_True);
}

static PyObject *cursor_close_m(CursorObject *c, PyObject *u)
{
    (void)u;
    kp_cursor_close(c);
    return Py_NewRef(Py_None);
}

/* The current entry: 0 = key (1 value, 2 pair); None when not positioned. */
static PyObject *cursor_current(CursorObject *c, void *which)
{
    keel_val k, v;
    if (kp_cursor_usable(c))
        return NULL;
    int rc = keel_cursor_current(c->c, &k, &v);
    if (rc == KEEL_BADCURSOR || rc == KEEL_NOTFOUND)
        return Py_NewRef(Py_None);
    if (rc)
        return kp_raise(rc);
    switch ((int)(intptr_t)which) {
    case 0: return kp_value(c->txn, k);
    case 1: return kp_value(c->txn, v);
    default: return kp_pair(c->txn, k, v);
    }
}

static PyObject *cursor_expires_at(CursorObject *c, void *unused)
{
    (void)unused;
    int64_t at;
    if (kp_cursor_usable(c))
        return NULL;
    int rc = keel_cursor_expiry(c->c, &at);
    if (rc == KEEL_BADCURSOR || rc == KEEL_NOTFOUND)
        return Py_NewRef(Py_None);
    if (rc)
        return kp_raise(rc);
    return at ? PyFloat_FromDouble((double)at / 1000.0) : Py_NewRef(Py_None);
}

static PyObject *cursor_iter(CursorObject *c)
{
    c->fresh = 1;
    return Py_NewRef(c);
}

static PyObject *cursor_iternext(CursorObject *c)
{
    keel_val k, v;
    int rc;
    if (kp_cursor_usable(c))
        return NULL;
    if (c->fresh) {
        c->fresh = 0;
        rc = keel_cursor_current(c->c, &k, &v);
        if (rc == KEEL_BADCURSOR)
            rc = keel_cursor_next(c->c, &k, &v); /* unpositioned: the first */
    } else {
        rc = keel_cursor_next(c->c, &k, &v);
    }
    if (rc == KEEL_NOTFOUND)
        return NULL;
    return rc ? kp_raise(rc) : kp_pair(c->txn, k, v);
}

static void cursor_dealloc(CursorObject *c)
{
    kp_cursor_close(c);
    Py_DECREF(c->txn);
    PyObject_Free(c);
}

#define M(name, fn, flags, doc) {name, (PyCFunction)(void (*)(void))fn, flags, doc}
static PyMethodDef cursor_methods[] = {
    M("first", cursor_first, METH_NOARGS, "first() -> bool\n\nMove to the first entry; False if the bucket is empty."),
    M("last", cursor_last, METH_NOARGS, "last() -> bool\n\nMove to the last entry; False if the bucket is empty."),
    M("seek", cursor_seek, METH_O, "seek(key) -> bool\n\nMove to the first entry >= key; False if there is none."),
    M("next", cursor_next_m, METH_NOARGS,
      "next() -> bool\n\nMove to the next entry (unpositioned: the first); False at the end (stays put)."),
    M("prev", cursor_prev, METH_NOARGS,
      "prev() -> bool\n\nMove to the previous entry (unpositioned: the last); False at the start (stays put)."),
    M("seek_key", cursor_seek_key, METH_O,
      "seek_key(key) -> bool\n\nMove to exactly key (its first value); False (unpositioned) if absent."),
    M("seek_pair", cursor_seek_pair, METH_FASTCALL | METH_KEYWORDS,
      "seek_pair(key, value) -> bool\n\nMove to key's first value >= value; False (unpositioned) if none."),
    M("next_dup", cursor_next_dup, METH_NOARGS,
      "next_dup() -> bool\n\nMove to the current key's next value; False at its last (stays put) or unpositioned."),
    M("prev_dup", cursor_prev_dup, METH_NOARGS,
      "prev_dup() -> bool\n\nMove to the current key's previous value; False at its first (stays put) or unpositioned."),
    M("next_key", cursor_next_key, METH_NOARGS,
      "next_key() -> bool\n\nMove to the next key's first value (unpositioned: the first); False at the end."),
    M("prev_key", cursor_prev_key, METH_NOARGS,
      "prev_key() -> bool\n\nMove to the previous key's last value (unpositioned: the last); False at the start."),
    M("count", cursor_count, METH_NOARGS,
      "count() -> int\n\nThe number of values of the current key (1 in a plain bucket; 0 if unpositioned)."),
    M("delete", cursor_delete, METH_NOARGS,
      "delete() -> bool\n\nDelete the current entry (in a dupsort bucket: the current pair; next() then gives\n"
      "the following one); False if unpositioned."),
    M("close", cursor_close_m, METH_NOARGS, "close()\n\nClose the cursor (the txn's end closes it too)."),
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef cursor_getset[] = {
    {"key", (getter)cursor_current, NULL, "The current key, or None if unpositioned.", (void *)0},
    {"value", (getter)cursor_current, NULL, "The current value, or None if unpositioned.", (void *)1},
    {"item", (getter)cursor_current, NULL, "The current (key, value), or None if unpositioned.", (void *)2},
    {"expires_at", (getter)cursor_expires_at, NULL,
     "The current entry's expiry (seconds since the epoch), or None.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject Cursor_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "keel.Cursor",
    .tp_basicsize = sizeof(CursorObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A position in one bucket of a transaction: see Transaction.cursor().",
    .tp_dealloc = (destructor)cursor_dealloc,
    .tp_iter = (getiterfunc)cursor_iter,
    .tp_iternext = (iternextfunc)cursor_iternext,
    .tp_methods = cursor_methods,
    .tp_getset = cursor_getset,
};
