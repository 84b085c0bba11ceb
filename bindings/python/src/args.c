/*
 * args.c — argument parsing for the binding's vectorcall methods.
 *
 * Contract:
 *   - kp_args matches positional arguments and keywords to a method's
 *     parameter names without allocating; parameters past npos are
 *     keyword-only.  Errors are TypeErrors naming the method.
 *   - Keys and values are bytes-like (the buffer protocol); a str is a
 *     TypeError.  Held buffers are released with kp_bytes_release.
 *   - Numbers out of range are ValueErrors (or OverflowErrors from Python's
 *     own conversion); nothing here crashes on any object.
 */
#include <math.h>
#include <string.h>

#include "keelpy.h"

static Py_ssize_t find_name(const char *const *names, PyObject *kw)
{
    for (Py_ssize_t i = 0; names[i]; i++)
        if (PyUnicode_CompareWithASCIIString(kw, names[i]) == 0)
            return i;
    return -1;
}

int kp_args(const char *fn, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
            const char *const *names, Py_ssize_t npos, Py_ssize_t nreq, PyObject **out)
{
    Py_ssize_t n = 0;
    while (names[n])
        n++;
    if (nargs > npos) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd positional argument%s (%zd given)", fn,
                     npos, npos == 1 ? "" : "s", nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        out[i] = i < nargs ? args[i] : NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t j = 0; j < nkw; j++) {
        PyObject *kw = PyTuple_GET_ITEM(kwnames, j);
        Py_ssize_t i = find_name(names, kw);
        if (i < 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fn, kw);
            return -1;
        }
        if (out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fn, names[i]);
            return -1;
        }
        out[i] = args[nargs + j];
    }
    for (Py_ssize_t i = 0; i < nreq; i++)
        if (!out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fn, names[i]);
            return -1;
        }
    return 0;
}

int kp_bytes_slow(PyObject *o, kp_bytes *b, const char *what)
{
    b->held = 0;
    if (PyUnicode_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be bytes-like, not str (encode it)", what);
        return -1;
    }
    if (!PyObject_CheckBuffer(o) || PyObject_GetBuffer(o, &b->buf, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s must be a contiguous bytes-like object, not %.100s", what,
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    b->held = 1;
    b->v.data = b->buf.buf;
    b->v.len = (size_t)b->buf.len;
    return 0;
}

int kp_name(PyObject *o, const char **name)
{
    Py_ssize_t len;
    const char *s;
    if (PyUnicode_Check(o)) {
        if (!(s = PyUnicode_AsUTF8AndSize(o, &len)))
            return -1;
    } else if (PyBytes_Check(o)) {
        s = PyBytes_AS_STRING(o);
        len = PyBytes_GET_SIZE(o);
    } else {
        PyErr_Format(PyExc_TypeError, "a bucket name is str or bytes, not %.100s", Py_TYPE(o)->tp_name);
        return -1;
    }
    if ((size_t)len != strlen(s)) {
        PyErr_SetString(PyExc_ValueError, "a bucket name cannot contain a NUL character");
        return -1;
    }
    if (len == 0 || len > KEEL_MAX_BUCKET_NAME) {
        PyErr_Format(PyExc_ValueError, "a bucket name is 1 to %d bytes long", KEEL_MAX_BUCKET_NAME);
        return -1;
    }
    *name = s;
    return 0;
}

int kp_bool(PyObject *o, int dflt)
{
    return o ? PyObject_IsTrue(o) : dflt;
}

/* Seconds (int or float, > 0) to whole milliseconds, rounded up so that a
 * tiny positive time still expires later than now. */
int kp_ms(PyObject *o, const char *what, int64_t *ms)
{
    if (PyLong_Check(o)) {
        int overflow;
        long long s = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (s == -1 && PyErr_Occurred())
            return -1;
        if (overflow > 0 || s > INT64_MAX / 1000) {
            PyErr_Format(PyExc_OverflowError, "%s is too large", what);
            return -1;
        }
        if (overflow < 0 || s <= 0)
            goto not_positive;
        *ms = (int64_t)s * 1000;
        return 0;
    }
    double s = PyFloat_AsDouble(o);
    if (s == -1.0 && PyErr_Occurred()) {
        PyErr_Format(PyExc_TypeError, "%s must be a number of seconds, not %.100s", what,
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    if (!(s > 0)) /* also NaN */
        goto not_positive;
    double m = ceil(s * 1000.0);
    if (!(m < 9.2e18)) {
        PyErr_Format(PyExc_OverflowError, "%s is too large", what);
        return -1;
    }
    *ms = (int64_t)m;
    return 0;
not_positive:
    PyErr_Format(PyExc_ValueError, "%s must be a positive number of seconds", what);
    return -1;
}

int kp_size(PyObject *o, const char *what, uint64_t max, uint64_t *out)
{
    *out = 0;
    if (!o || o == Py_None)
        return 0;
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int or None, not %.100s", what, Py_TYPE(o)->tp_name);
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s must be between 0 and %llu", what, (unsigned long long)max);
        return -1;
    }
    if (v > max) {
        PyErr_Format(PyExc_ValueError, "%s must be between 0 and %llu", what, (unsigned long long)max);
        return -1;
    }
    *out = v;
    return 0;
}
