/*
 * txn_ops.c — a Transaction's one-key calls: get, put, delete, incr, cas,
 * ttl, expire, persist, get_all, count.
 *
 * Contract:
 *   - Each parses its arguments (txn.get(key) alone takes a shortcut: the
 *     hot path), checks the txn is usable, and runs its keel call on the
 *     bucket's handle, looking a stale handle up once more (txn.c).
 *   - Writes in a read txn raise ReadonlyError before anything else.
 *   - "Absent" answers are values, not exceptions: get -> default,
 *     put(nx=True) -> False, delete/expire/persist -> False, cas -> False on
 *     a mismatch; ttl of an absent key raises NotFoundError (a KeyError).
 *   - DUPSORT buckets: put(dupdata=False) is KEEL_NODUPDATA (False if the
 *     pair is there), delete(key, value) is keel_del_value; get answers the
 *     key's first value, get_all all of them and count how many (a cursor
 *     of their own: seek_key, then next_dup); cas and incr raise
 *     IncompatibleError (keel's answer).
 */
#include "keelpy.h"

/* Runs CALL on bucket handle b of BUCKET (created when CREATE), again once
 * if the cached handle was stale; rc is the result (KP_ERR, KP_ABSENT or keel's). */
#define ON_BUCKET(t, bucket, create, b, rc, CALL)                  \
    do {                                                           \
        int tries_ = 0;                                            \
        do {                                                       \
            if (((rc) = kp_bucket((t), (bucket), (create), &(b)))) \
                break;                                             \
            (rc) = (CALL);                                         \
        } while (kp_bucket_stale((t), (bucket), (rc), &tries_));   \
    } while (0)

/* What a write call answers: True, or False for the "absent" code, or raises. */
static PyObject *write_result(int rc, int false_code)
{
    if (rc == 0)
        return Py_NewRef(Py_True);
    if (rc == KP_ERR)
        return NULL;
    if (rc == false_code || rc == KP_ABSENT)
        return Py_NewRef(Py_False);
    return kp_raise(rc);
}

static int writable(TxnObject *t)
{
    if (kp_txn_usable(t))
        return -1;
    if (!t->write) {
        kp_raise_msg(KEEL_READONLY, "a write in a read transaction (begin(write=True))");
        return -1;
    }
    return 0;
}

PyObject *kp_txn_get(TxnObject *t, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"key", "default", "bucket", NULL};
    PyObject *a[3] = {NULL, NULL, NULL};
    kp_bytes key;
    keel_val v;
    keel_bucket b;
    int rc;
    if (nargs == 1 && !kwnames)
        a[0] = args[0];
    else if (kp_args("get", args, nargs, kwnames, names, 2, 1, a))
        return NULL;
    if (kp_txn_usable(t) || kp_bytes_get(a[0], &key, "key"))
        return NULL;
    ON_BUCKET(t, a[2], 0, b, rc, keel_get(t->txn, b, key.v, &v));
    kp_bytes_release(&key);
    if (rc == 0)
        return kp_value(t, v);
    if (rc == KP_ERR)
        return NULL;
    if (rc == KP_ABSENT || rc == KEEL_NOTFOUND)
        return Py_NewRef(a[1] ? a[1] : Py_None);
    return kp_raise(rc);
}

PyObject *kp_txn_put(TxnObject *t, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"key", "value", "bucket", "ttl", "nx", "keepttl", "dupdata", NULL};
    PyObject *a[7] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    kp_bytes key, val;
    keel_bucket b;
    int64_t ttl = 0;
    int rc;
    if (nargs == 2 && !kwnames) {
        a[0] = args[0];
        a[1] = args[1];
    } else if (kp_args("put", args, nargs, kwnames, names, 2, 2, a))
        return NULL;
    int nx = kp_bool(a[4], 0), keep = kp_bool(a[5], 0), dupdata = kp_bool(a[6], 1);
    if (nx < 0 || keep < 0 || dupdata < 0 || writable(t) || (a[3] && a[3] != Py_None && kp_ms(a[3], "ttl", &ttl)))
        return NULL;
    if (ttl && keep) {
        PyErr_SetString(PyExc_ValueError, "put() takes ttl or keepttl=True, not both");
        return NULL;
    }
    if (kp_bytes_get(a[0], &key, "key"))
        return NULL;
    if (kp_bytes_get(a[1], &val, "value")) {
        kp_bytes_release(&key);
        return NULL;
    }
    unsigned flags = (nx ? KEEL_NOOVERWRITE : 0) | (keep ? KEEL_KEEPTTL : 0) | (dupdata ? 0 : KEEL_NODUPDATA);
    if (ttl)
        ON_BUCKET(t, a[2], 1, b, rc, keel_put_ttl(t->txn, b, key.v, val.v, ttl, flags));
    else
        ON_BUCKET(t, a[2], 1, b, rc, keel_put(t->txn, b, key.v, val.v, flags));
    kp_bytes_release(&key);
    kp_bytes_release(&val);
    return write_result(rc, KEEL_EXISTS);
}

/* The parsing every key-only write shares: (key, *, bucket=None). */
static int key_args(TxnObject *t, const char *fn, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                    PyObject **bucket, kp_bytes *key)
{
    static const char *const names[] = {"key", "bucket", NULL};
    PyObject *a[2];
    if (kp_args(fn, args, nargs, kwnames, names, 1, 1, a) || writable(t) || kp_bytes_get(a[0], key, "key"))
        return -1;
    *bucket = a[1];
    return 0;
}

PyObject *kp_txn_delete(TxnObject *t, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"key", "value", "bucket", NULL};
    PyObject *a[3];
    kp_bytes key, val;
    keel_bucket b;
    int rc;
    if (kp_args("delete", args, nargs, kwnames, names, 2, 1, a) || writable(t) || kp_bytes_get(a[0], &key, "key"))
        return NULL;
    if (!a[1] || a[1] == Py_None) {
        ON_BUCKET(t, a[2], 0, b, rc, keel_del(t->txn, b, key.v));
    } else {
        if (kp_bytes_get(a[1], &val, "value")) {
            kp_bytes_release(&key);
            return NULL;
        }
        ON_BUCKET(t, a[2], 0, b, rc, keel_del_value(t->txn, b, key.v, val.v));
        kp_bytes_release(&val);
    }
    kp_bytes_release(&key);
    return write_result(rc, KEEL_NOTFOUND);
}

PyObject *kp_txn_persist(TxnObject *t, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *bucket;
    kp_bytes key;
    keel_bucket b;
    int rc;
    if (key_args(t, "persist", args, nargs, kwnames, &bucket, &key))
        return NULL;
    ON_BUCKET(t, bucket, 0, b, rc, keel_persist(t->txn, b, key.v));
    kp_bytes_release(&key);
    return write_result(rc, KEEL_NOTFOUND);
}

PyObject *kp_txn_expire(TxnObject *t, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"key", "seconds", "bucket", NULL};
    PyObject *a[3];
    kp_bytes key;
    keel_bucket b;
    int64_t ms;
    int rc;
    if (kp_args("expire", args, nargs, kwnames, names, 2, 2, a) || writable(t) || kp_ms(a[1], "seconds", &ms) ||
        kp_bytes_get(a[0], &key, "key"))
        return NULL;
    ON_BUCKET(t, a[2], 0, b, rc, keel_expire(t->txn, b, key.v, ms));
    kp_bytes_release(&key);
    return write_result(rc, KEEL_NOTFOUND);
}

PyObject *kp_txn_incr(TxnObject *t, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"key", "delta", "bucket", NULL};
    PyObject *a[3];
    kp_bytes key;
    keel_bucket b;
    long long delta = 1;
    int64_t result = 0;
    int rc;
    if (kp_args("incr", args, nargs, kwnames, names, 2, 1, a) || writable(t))
        return NULL;
    if (a[1] && (delta = PyLong_AsLongLong(a[1])) == -1 && PyErr_Occurred())
        return NULL;
    if (kp_bytes_get(a[0], &key, "key"))
        return NULL;
    ON_BUCKET(t, a[2], 1, b, rc, keel_incr(t->txn, b, key.v, (int64_t)delta, &result));
    kp_bytes_release(&key);
    if (rc == KP_ERR)
        return NULL;
    return rc ? kp_raise(rc) : PyLong_FromLongLong(result);
}

PyObject *kp_txn_cas(TxnObject *t, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"key", "expected", "new", "bucket", NULL};
    PyObject *a[4];
    kp_bytes key, exp = {.held = 0}, val;
    keel_bucket b;
    int rc;
    if (kp_args("cas", args, nargs, kwnames, names, 3, 3, a) || writable(t) || kp_bytes_get(a[0], &key, "key"))
        return NULL;
    int have_exp = a[1] != Py_None;
    if ((have_exp && kp_bytes_get(a[1], &exp, "expected")) || kp_bytes_get(a[2], &val, "new")) {
        kp_bytes_release(&key);
        kp_bytes_release(&exp);
        return NULL;
    }
    ON_BUCKET(t, a[3], 1, b, rc, keel_cas(t->txn, b, key.v, have_exp ? &exp.v : NULL, val.v));
    kp_bytes_release(&key);
    kp_bytes_release(&exp);
    kp_bytes_release(&val);
    return write_result(rc, KEEL_MISMATCH);
}

PyObject *kp_txn_ttl(TxnObject *t, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"key", "bucket", NULL};
    PyObject *a[2];
    kp_bytes key;
    keel_bucket b;
    int64_t left = 0;
    int rc;
    if (kp_args("ttl", args, nargs, kwnames, names, 1, 1, a) || kp_txn_usable(t) || kp_bytes_get(a[0], &key, "key"))
        return NULL;
    ON_BUCKET(t, a[1], 0, b, rc, keel_ttl(t->txn, b, key.v, &left));
    kp_bytes_release(&key);
    if (rc == KP_ERR)
        return NULL;
    if (rc == KP_ABSENT)
        rc = KEEL_NOTFOUND;
    if (rc)
        return kp_raise(rc);
    return left < 0 ? Py_NewRef(Py_None) : PyFloat_FromDouble((double)left / 1000.0);
}

/* The values of key through a keel cursor of its own: into list (when not
 * NULL) and *n.  0, KEEL_NOTFOUND (absent), KP_ERR or keel's code. */
static int key_values(TxnObject *t, keel_bucket b, keel_val key, PyObject *list, uint64_t *n)
{
    keel_cursor *c;
    keel_val k, v;
    int rc = keel_cursor_open(t->txn, b, &c);
    *n = 0;
    if (rc)
        return rc;
    if (!list) {
        if (!(rc = keel_cursor_seek_key(c, key, &v)))
            rc = keel_cursor_count(c, n);
    } else {
        for (rc = keel_cursor_seek_key(c, key, &v); !rc; rc = keel_cursor_next_dup(c, &k, &v)) {
            PyObject *o = kp_value(t, v);
            if (!o || PyList_Append(list, o) < 0) {
                Py_XDECREF(o);
                rc = KP_ERR;
                break;
            }
            Py_DECREF(o);
            ++*n;
        }
        if (rc == KEEL_NOTFOUND && *n) /* past the key's last value */
            rc = 0;
    }
    keel_cursor_close(c);
    return rc;
}

/* get_all (list) and count (no list): the parsing and the answer they share. */
static PyObject *values_call(TxnObject *t, const char *fn, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames, int want_list)
{
    static const char *const names[] = {"key", "bucket", NULL};
    PyObject *a[2], *list = NULL;
    kp_bytes key;
    keel_bucket b;
    uint64_t n = 0;
    int rc;
    if (kp_args(fn, args, nargs, kwnames, names, 1, 1, a) || kp_txn_usable(t) || kp_bytes_get(a[0], &key, "key"))
        return NULL;
    if (want_list && !(list = PyList_New(0))) {
        kp_bytes_release(&key);
        return NULL;
    }
    ON_BUCKET(t, a[1], 0, b, rc, key_values(t, b, key.v, list, &n)); /* a stale handle: before any value */
    kp_bytes_release(&key);
    if (rc == KP_ABSENT || rc == KEEL_NOTFOUND)
        rc = 0;
    if (rc) {
        Py_XDECREF(list);
        return rc == KP_ERR ? NULL : kp_raise(rc);
    }
    return want_list ? list : PyLong_FromUnsignedLongLong(n);
}

PyObject *kp_txn_get_all(TxnObject *t, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return values_call(t, "get_all", args, nargs, kwnames, 1);
}

PyObject *kp_txn_count(TxnObject *t, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return values_call(t, "count", args, nargs, kwnames, 0);
}
