/*
 * db_admin.c — the Database's whole-file calls: stat(), readers(), copy(),
 * check().
 *
 * Contract:
 *   - stat() is keel_db_stat as a dict; readers() is keel_db_readers as a
 *     list of dicts (age in seconds).
 *   - copy() and check() run without the GIL: a copy or a walk of a large
 *     file takes long.  check's report callback takes the GIL to append
 *     each problem to the list it returns.
 */
#include <stdlib.h>
#include <string.h>

#include "keelpy.h"

PyObject *kp_db_stat(DbObject *d, PyObject *unused)
{
    (void)unused;
    keel_stat st;
    if (kp_db_usable(d))
        return NULL;
    int rc = keel_db_stat(d->db, &st);
    if (kp_clock_error(d))
        return NULL;
    if (rc)
        return kp_raise(rc);
    return Py_BuildValue("{sIsIsKsKsKsKsKsKsK}", "page_size", st.page_size, "depth", st.depth, "entries",
                         (unsigned long long)st.entries, "branch_pages", (unsigned long long)st.branch_pages,
                         "leaf_pages", (unsigned long long)st.leaf_pages, "overflow_pages",
                         (unsigned long long)st.overflow_pages, "free_pages", (unsigned long long)st.free_pages,
                         "file_size", (unsigned long long)st.file_size, "last_txnid",
                         (unsigned long long)st.last_txnid);
}

PyObject *kp_db_readers(DbObject *d, PyObject *unused)
{
    (void)unused;
    if (kp_db_usable(d))
        return NULL;
    size_t max = 16, count = 0;
    keel_reader_info *info = NULL;
    int rc;
    for (;;) {
        keel_reader_info *n = realloc(info, max * sizeof *info);
        if (!n) {
            free(info);
            return PyErr_NoMemory();
        }
        info = n;
        rc = keel_db_readers(d->db, info, max, &count);
        if (rc || count <= max)
            break;
        max = count + 16;
    }
    PyObject *list = (rc || kp_clock_error(d)) ? NULL : PyList_New(0);
    for (size_t i = 0; list && i < count; i++) {
        PyObject *r = Py_BuildValue("{sisKsKsd}", "pid", (int)info[i].pid, "txnid",
                                    (unsigned long long)info[i].txnid, "lag", (unsigned long long)info[i].lag,
                                    "age", info[i].age_ms / 1000.0);
        if (!r || PyList_Append(list, r) < 0)
            Py_CLEAR(list);
        Py_XDECREF(r);
    }
    free(info);
    return rc && !PyErr_Occurred() ? kp_raise(rc) : list;
}

PyObject *kp_db_copy(DbObject *d, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"path", "compact", NULL};
    PyObject *a[2], *bpath;
    if (kp_args("copy", args, nargs, kwnames, names, 2, 1, a) || kp_db_usable(d))
        return NULL;
    int compact = kp_bool(a[1], 0);
    if (compact < 0 || !PyUnicode_FSConverter(a[0], &bpath))
        return NULL;
    int rc;
    d->nogil_calls++;
    Py_BEGIN_ALLOW_THREADS
    rc = keel_copy(d->db, PyBytes_AS_STRING(bpath), compact ? KEEL_COPY_COMPACT : 0);
    Py_END_ALLOW_THREADS
    d->nogil_calls--;
    Py_DECREF(bpath);
    if (kp_clock_error(d))
        return NULL;
    return rc ? kp_raise(rc) : Py_NewRef(Py_None);
}

struct report_ctx {
    PyObject *list;
    int failed;
};

static void report(void *ctx, const char *msg)
{
    struct report_ctx *r = ctx;
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *s = r->failed ? NULL : PyUnicode_DecodeUTF8(msg, (Py_ssize_t)strlen(msg), "replace");
    if (!r->failed && (!s || PyList_Append(r->list, s) < 0))
        r->failed = 1; /* the exception stays set for kp_db_check */
    Py_XDECREF(s);
    PyGILState_Release(g);
}

PyObject *kp_db_check(DbObject *d, PyObject *unused)
{
    (void)unused;
    if (kp_db_usable(d))
        return NULL;
    struct report_ctx r = {PyList_New(0), 0};
    if (!r.list)
        return NULL;
    uint64_t problems = 0;
    int rc;
    d->nogil_calls++;
    Py_BEGIN_ALLOW_THREADS
    rc = keel_check(d->db, report, &r, &problems);
    Py_END_ALLOW_THREADS
    d->nogil_calls--;
    if (r.failed || kp_clock_error(d)) {
        Py_DECREF(r.list);
        return NULL;
    }
    if (rc) {
        Py_DECREF(r.list);
        return kp_raise(rc);
    }
    return r.list;
}
