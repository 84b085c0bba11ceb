/*
 * txn_batch.c — a Transaction's many-key and whole-bucket calls: get_many,
 * put_many, purge, stat, buckets, create_bucket, drop_bucket, is_dupsort.
 *
 * Contract:
 *   - get_many and put_many convert every argument before the keel call
 *     (so a bad one raises with nothing written), and run it without the
 *     GIL when there are many keys (the txn is busy meanwhile).
 *   - put_many takes a mapping (its items()) or an iterable of (key, value)
 *     tuples or lists; keel_put_many writes all or nothing.
 *   - purge runs without the GIL.  Bucket names come back as str (bytes that
 *     are not UTF-8 with surrogate escapes, so they round-trip).
 *   - create_bucket(dupsort=True) makes a DUPSORT bucket; an existing bucket
 *     of the other kind raises IncompatibleError (as keel_bucket_open does),
 *     one of the same kind answers False.
 */
#include <stdlib.h>
#include <string.h>

#include "keelpy.h"

#define NOGIL_MIN 256 /* keys from which a batch call drops the GIL */

/* The converted keys (and values) of a batch, and what holds their memory. */
struct batch {
    Py_ssize_t n;
    kp_bytes *held; /* 2n when values too */
    keel_val *keys, *vals;
};

static void batch_free(struct batch *bt, Py_ssize_t converted)
{
    for (Py_ssize_t i = 0; i < converted; i++)
        kp_bytes_release(&bt->held[i]);
    PyMem_Free(bt->held);
    PyMem_Free(bt->keys);
}

static int batch_alloc(struct batch *bt, Py_ssize_t n, int with_vals)
{
    bt->n = n;
    bt->held = PyMem_Calloc((size_t)(with_vals ? 2 * n : n) + 1, sizeof *bt->held);
    bt->keys = PyMem_Calloc((size_t)(with_vals ? 2 * n : n) + 1, sizeof *bt->keys);
    bt->vals = bt->keys + n;
    if (!bt->held || !bt->keys) {
        batch_free(bt, 0);
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* Runs keel's get_many or put_many, without the GIL for a big batch. */
static int batch_run(TxnObject *t, keel_bucket b, struct batch *bt, int put)
{
    int rc, nogil = bt->n >= NOGIL_MIN;
    if (!nogil)
        return put ? keel_put_many(t->txn, b, bt->keys, bt->vals, (size_t)bt->n, 0)
                   : keel_get_many(t->txn, b, bt->keys, bt->vals, (size_t)bt->n);
    t->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    rc = put ? keel_put_many(t->txn, b, bt->keys, bt->vals, (size_t)bt->n, 0)
             : keel_get_many(t->txn, b, bt->keys, bt->vals, (size_t)bt->n);
    Py_END_ALLOW_THREADS
    t->busy = 0;
    return rc;
}

PyObject *kp_txn_get_many(TxnObject *t, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"keys", "bucket", NULL};
    PyObject *a[2], *seq, *out = NULL;
    struct batch bt;
    keel_bucket b;
    int rc = 0, tries = 0;
    if (kp_args("get_many", args, nargs, kwnames, names, 1, 1, a) || kp_txn_usable(t))
        return NULL;
    if (PyUnicode_Check(a[0]) || PyBytes_Check(a[0]))
        return PyErr_Format(PyExc_TypeError, "get_many() takes an iterable of keys, not one key");
    if (!(seq = PySequence_Fast(a[0], "get_many() takes an iterable of keys")))
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), i = 0;
    PyObject **items = PySequence_Fast_ITEMS(seq);
    if (batch_alloc(&bt, n, 1))
        goto done_seq;
    for (; i < n; i++) {
        if (kp_bytes_get(items[i], &bt.held[i], "key"))
            goto done;
        bt.keys[i] = bt.held[i].v;
    }
    do {
        if ((rc = kp_bucket(t, a[1], 0, &b)))
            break;
        rc = n ? batch_run(t, b, &bt, 0) : 0;
    } while (kp_bucket_stale(t, a[1], rc, &tries));
    if (rc == KP_ERR || (rc && rc != KP_ABSENT && !kp_raise(rc)))
        goto done;
    if (!(out = PyList_New(n)))
        goto done;
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *v = (rc == KP_ABSENT || !bt.vals[j].data) ? Py_NewRef(Py_None) : kp_value(t, bt.vals[j]);
        if (!v) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, j, v);
    }
done:
    batch_free(&bt, i);
done_seq:
    Py_DECREF(seq);
    return out;
}

/* The pairs of put_many's argument as a sequence of 2-item tuples or lists. */
static PyObject *pairs_of(PyObject *o)
{
    if (PyDict_Check(o))
        return PyDict_Items(o);
    if (PyMapping_Check(o) && !PySequence_Check(o) && PyObject_HasAttrString(o, "items")) {
        PyObject *items = PyMapping_Items(o), *seq;
        if (!items)
            return NULL;
        seq = PySequence_Fast(items, "items() must give a sequence");
        Py_DECREF(items);
        return seq;
    }
    return PySequence_Fast(o, "put_many() takes a mapping or an iterable of (key, value) pairs");
}

PyObject *kp_txn_put_many(TxnObject *t, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"pairs", "bucket", NULL};
    PyObject *a[2], *seq;
    struct batch bt;
    keel_bucket b;
    int rc = KP_ERR, tries = 0;
    if (kp_args("put_many", args, nargs, kwnames, names, 1, 1, a) || kp_txn_usable(t))
        return NULL;
    if (!t->write)
        return kp_raise_msg(KEEL_READONLY, "a write in a read transaction (begin(write=True))");
    if (!(seq = pairs_of(a[0])))
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), i = 0;
    if (batch_alloc(&bt, n, 1))
        goto done_seq;
    for (; i < n; i++) {
        PyObject *p = PySequence_Fast_GET_ITEM(seq, i);
        if (!(PyTuple_Check(p) || PyList_Check(p)) || PySequence_Fast_GET_SIZE(p) != 2) {
            PyErr_SetString(PyExc_TypeError, "put_many() takes (key, value) pairs");
            goto done;
        }
        if (kp_bytes_get(PySequence_Fast_GET_ITEM(p, 0), &bt.held[2 * i], "key"))
            goto done;
        if (kp_bytes_get(PySequence_Fast_GET_ITEM(p, 1), &bt.held[2 * i + 1], "value")) {
            kp_bytes_release(&bt.held[2 * i]);
            goto done;
        }
        bt.keys[i] = bt.held[2 * i].v;
        bt.vals[i] = bt.held[2 * i + 1].v;
    }
    do {
        if ((rc = kp_bucket(t, a[1], 1, &b)))
            break;
        rc = n ? batch_run(t, b, &bt, 1) : 0;
    } while (kp_bucket_stale(t, a[1], rc, &tries));
    if (rc && rc != KP_ERR)
        kp_raise(rc);
done:
    batch_free(&bt, 2 * i);
done_seq:
    Py_DECREF(seq);
    return rc ? NULL : Py_NewRef(Py_None);
}

PyObject *kp_txn_purge(TxnObject *t, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"max", NULL};
    PyObject *a[1];
    uint64_t max = 0;
    size_t purged = 0;
    int rc;
    if (kp_args("purge", args, nargs, kwnames, names, 1, 0, a) || kp_txn_usable(t) ||
        kp_size(a[0], "max", SIZE_MAX, &max))
        return NULL;
    if (!a[0] || a[0] == Py_None)
        max = SIZE_MAX;
    t->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    rc = keel_purge(t->txn, (size_t)max, &purged);
    Py_END_ALLOW_THREADS
    t->busy = 0;
    return rc ? kp_raise(rc) : PyLong_FromSize_t(purged);
}

PyObject *kp_txn_stat(TxnObject *t, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"bucket", NULL};
    PyObject *a[1];
    keel_bucket b;
    keel_stat st;
    int rc, tries = 0;
    if (kp_args("stat", args, nargs, kwnames, names, 1, 0, a) || kp_txn_usable(t))
        return NULL;
    do {
        if ((rc = kp_bucket(t, a[0], 0, &b)))
            break;
        rc = keel_bucket_stat(t->txn, b, &st);
    } while (kp_bucket_stale(t, a[0], rc, &tries));
    if (rc == KP_ERR)
        return NULL;
    if (rc)
        return kp_raise(rc == KP_ABSENT ? KEEL_NOTFOUND : rc);
    return Py_BuildValue("{sIsIsKsKsKsK}", "page_size", st.page_size, "depth", st.depth, "entries",
                         (unsigned long long)st.entries, "branch_pages", (unsigned long long)st.branch_pages,
                         "leaf_pages", (unsigned long long)st.leaf_pages, "overflow_pages",
                         (unsigned long long)st.overflow_pages);
}

static int list_one(const char *name, void *ctx)
{
    PyObject *s = PyUnicode_DecodeUTF8(name, (Py_ssize_t)strlen(name), "surrogateescape");
    int rc = (!s || PyList_Append(ctx, s) < 0) ? 1 : 0;
    Py_XDECREF(s);
    return rc;
}

PyObject *kp_txn_buckets(TxnObject *t, PyObject *unused)
{
    (void)unused;
    if (kp_txn_usable(t))
        return NULL;
    PyObject *list = PyList_New(0);
    if (!list)
        return NULL;
    int rc = keel_bucket_list(t->txn, list_one, list);
    if (rc) {
        Py_DECREF(list);
        return rc == 1 ? NULL : kp_raise(rc);
    }
    return list;
}

PyObject *kp_txn_create_bucket(TxnObject *t, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"name", "dupsort", NULL};
    PyObject *a[2];
    keel_bucket b;
    const char *cname;
    if (kp_args("create_bucket", args, nargs, kwnames, names, 1, 1, a) || kp_txn_usable(t))
        return NULL;
    PyObject *name = a[0];
    int dupsort = kp_bool(a[1], 0);
    if (dupsort < 0 || kp_name(name, &cname))
        return NULL;
    if (!t->write)
        return kp_raise_msg(KEEL_READONLY, "a write in a read transaction (begin(write=True))");
    unsigned kind = dupsort ? KEEL_DUPSORT : 0;
    int rc = keel_bucket_open(t->txn, cname, 0, &b);
    int created = rc == KEEL_NOTFOUND;
    if (created || !rc) /* present: keel checks the kind */
        rc = keel_bucket_open(t->txn, cname, KEEL_CREATE | kind, &b);
    if (rc)
        return kp_raise(rc);
    PyObject *v = PyLong_FromUnsignedLong(b);
    if (!v || PyDict_SetItem(t->db->buckets, name, v) < 0) {
        Py_XDECREF(v);
        return NULL;
    }
    Py_DECREF(v);
    return Py_NewRef(created ? Py_True : Py_False);
}

PyObject *kp_txn_drop_bucket(TxnObject *t, PyObject *name)
{
    keel_bucket b;
    int rc, tries = 0;
    if (kp_txn_usable(t))
        return NULL;
    if (!t->write)
        return kp_raise_msg(KEEL_READONLY, "a write in a read transaction (begin(write=True))");
    do {
        if ((rc = kp_bucket(t, name, 0, &b)))
            break;
        rc = keel_bucket_drop(t->txn, b);
    } while (kp_bucket_stale(t, name, rc, &tries));
    if (rc == KP_ERR)
        return NULL;
    if (rc == KP_ABSENT || rc == KEEL_NOTFOUND)
        return Py_NewRef(Py_False);
    return rc ? kp_raise(rc) : Py_NewRef(Py_True);
}

PyObject *kp_txn_is_dupsort(TxnObject *t, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"bucket", NULL};
    PyObject *a[1];
    keel_bucket b;
    unsigned flags = 0;
    int rc, tries = 0;
    if (kp_args("is_dupsort", args, nargs, kwnames, names, 1, 0, a) || kp_txn_usable(t))
        return NULL;
    do {
        if ((rc = kp_bucket(t, a[0], 0, &b)))
            break;
        rc = keel_bucket_flags(t->txn, b, &flags);
    } while (kp_bucket_stale(t, a[0], rc, &tries));
    if (rc == KP_ERR)
        return NULL;
    if (rc)
        return kp_raise(rc == KP_ABSENT ? KEEL_NOTFOUND : rc);
    return PyBool_FromLong((flags & KEEL_DUPSORT) != 0);
}
