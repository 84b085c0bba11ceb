/*
 * module.c — the `keel` module: its exception classes, the mapping from
 * keel's error codes to them, the clock trampoline, and module setup.
 *
 * Contract:
 *   - Every KEEL_* code has its own class, all under keel.Error (with .code,
 *     the keel code); the ones that are also a standard error derive from it
 *     too (NotFoundError is a KeyError, BadValueSizeError a ValueError...).
 *     A positive code (errno) is FileSystemError, an OSError.  keel.NOTFOUND
 *     etc. are the codes.
 *   - A message is keel_strerror(), then keel_error_detail() when it says more.
 *   - kp_clock runs the Db's Python clock with the GIL taken (it may be
 *     called from a call that released it).  An exception it raises is kept
 *     on the Db and raised by kp_clock_error after the keel call; meanwhile
 *     keel gets the system's time.
 */
#include <string.h>
#include <time.h>

#include "keelpy.h"

PyObject *KeelError;
PyObject *kp_str_release;
static PyObject *FileSystemError;

#define FIRST_CODE KEEL_NOTFOUND
#define LAST_CODE KEEL_INCOMPATIBLE
#define NCODES (FIRST_CODE - LAST_CODE + 1)
static PyObject *classes[NCODES];

#define K(code) KEEL_##code, #code
static const struct {
    int code;
    const char *cname; /* KEEL_<cname>: the module's constant keel.<cname> */
    const char *name;
    int std; /* 0 none, 1 KeyError, 2 ValueError, 3 MemoryError, 4 OverflowError */
    const char *doc;
} kinds[] = {
    {K(NOTFOUND), "NotFoundError", 1, "A key or bucket was not found."},
    {K(EXISTS), "ExistsError", 0, "The key exists."},
    {K(CORRUPTED), "CorruptedError", 0, "The database file is damaged."},
    {K(INVALID), "InvalidError", 0, "The file is not a keel database."},
    {K(VERSION), "VersionError", 0, "A keel file of another format version."},
    {K(FULL), "FullError", 0, "The disk or the address reservation is full."},
    {K(READERS_FULL), "ReadersFullError", 0, "Every reader slot is taken (see max_readers)."},
    {K(BADVALSIZE), "BadValueSizeError", 2, "A key empty or too long, or a value too long."},
    {K(READONLY), "ReadonlyError", 0, "A write in a read transaction or a read-only database."},
    {K(BADTXN), "TxnError", 0, "The transaction has ended, failed, or is used wrongly."},
    {K(PANIC), "PanicError", 0, "A sync failed: close the database and open it again."},
    {K(BADARG), "BadArgumentError", 2, "A meaningless argument."},
    {K(BADBUCKET), "BucketError", 0, "A bucket handle that names no open bucket."},
    {K(BADCURSOR), "CursorError", 0, "A closed cursor, or one not positioned."},
    {K(BUSY), "BusyError", 0, "A write txn is already open in this thread, or the txn is in use."},
    {K(BADFLAGS), "BadFlagsError", 2, "Unknown or contradictory options."},
    {K(BADNAME), "BadNameError", 2, "A bucket name empty or longer than 255 bytes."},
    {K(LOCKFILE), "LockFileError", 0, "The lock file is not a keel lock file or is damaged."},
    {K(FORKED), "ForkedError", 0, "A handle inherited across fork(): open the database again."},
    {K(NOMEM), "NoMemoryError", 3, "Out of memory."},
    {K(MISMATCH), "MismatchError", 0, "Compare-and-swap: the value differs."},
    {K(NOTNUMBER), "NotNumberError", 2, "Increment: the value is not a decimal integer."},
    {K(OVERFLOW), "IntOverflowError", 4, "Increment or deadline: the result does not fit in int64."},
    {K(LOCKPATH), "LockPathError", 0, "The database is in use through another lock file."},
    {K(MAPSIZE), "MapSizeError", 0, "The file has grown past this handle's map (max_size): reopen."},
    {K(ADDRSPACE), "AddressSpaceError", 0, "The address space for the map cannot be reserved."},
    {K(LAGGED), "LaggedError", 0, "A read txn fell too far behind (max_reader_lag): begin a new one."},
    {K(INCOMPATIBLE), "IncompatibleError", 0,
     "The bucket's kind does not allow this (cas/incr in a dupsort bucket), or a bucket created as the other kind."},
};

PyObject *kp_raise_msg(int rc, const char *msg)
{
    PyObject *cls, *exc;
    if (rc > 0) {
        cls = FileSystemError;
        exc = PyObject_CallFunction(cls, "is", rc, msg);
    } else {
        cls = (rc <= FIRST_CODE && rc >= LAST_CODE) ? classes[FIRST_CODE - rc] : NULL;
        if (!cls) /* a code newer than this table */
            cls = KeelError;
        exc = PyObject_CallFunction(cls, "s", msg);
    }
    if (!exc)
        return NULL;
    PyObject *code = PyLong_FromLong(rc);
    if (!code || PyObject_SetAttrString(exc, "code", code) < 0) {
        Py_XDECREF(code);
        Py_DECREF(exc);
        return NULL;
    }
    Py_DECREF(code);
    PyErr_SetObject(cls, exc);
    Py_DECREF(exc);
    return NULL;
}

PyObject *kp_raise(int rc)
{
    const char *detail = keel_error_detail();
    const char *what = keel_strerror(rc);
    if (!detail || !*detail)
        return kp_raise_msg(rc, what);
    PyObject *s = PyUnicode_FromFormat("%s: %s", what, detail);
    if (!s)
        return NULL;
    const char *m = PyUnicode_AsUTF8(s);
    if (m)
        kp_raise_msg(rc, m);
    Py_DECREF(s);
    return NULL;
}

static int64_t system_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Seconds since the epoch from the Python clock, as keel's milliseconds. */
int64_t kp_clock(void *ctx)
{
    DbObject *d = ctx;
    PyGILState_STATE g = PyGILState_Ensure();
    int64_t ms = -1;
    PyObject *r = d->clock ? PyObject_CallNoArgs(d->clock) : NULL;
    if (!d->clock)
        PyErr_SetString(PyExc_RuntimeError, "the clock was cleared");
    if (r) {
        double s = PyFloat_AsDouble(r);
        Py_DECREF(r);
        if (!(s == -1.0 && PyErr_Occurred())) {
            if (s >= 0 && s < 9.2e15)
                ms = (int64_t)(s * 1000.0);
            else
                PyErr_SetString(PyExc_ValueError, "the clock must return seconds since the epoch (>= 0)");
        }
    }
    if (ms < 0) {
        if (!d->clock_exc[0])
            PyErr_Fetch(&d->clock_exc[0], &d->clock_exc[1], &d->clock_exc[2]);
        PyErr_Clear();
        ms = system_ms();
    }
    PyGILState_Release(g);
    return ms;
}

int kp_clock_error(DbObject *d)
{
    if (!d->clock_exc[0])
        return 0;
    PyErr_Restore(d->clock_exc[0], d->clock_exc[1], d->clock_exc[2]);
    d->clock_exc[0] = d->clock_exc[1] = d->clock_exc[2] = NULL;
    return -1;
}

static PyObject *strerror_fn(PyObject *self, PyObject *arg)
{
    (void)self;
    int overflow;
    long code = PyLong_AsLongAndOverflow(arg, &overflow);
    if (code == -1 && PyErr_Occurred())
        return NULL;
    if (overflow || code < INT32_MIN || code > INT32_MAX)
        return PyUnicode_FromString("unknown error");
    return PyUnicode_FromString(keel_strerror((int)code));
}

PyObject *kp_open(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
extern const char kp_open_doc[];

static PyMethodDef module_methods[] = {
    {"open", (PyCFunction)(void (*)(void))kp_open, METH_FASTCALL | METH_KEYWORDS, kp_open_doc},
    {"strerror", strerror_fn, METH_O, "strerror(code) -> str\n\nkeel's name for an error code (or errno)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "keel",
    .m_doc = "keel: an embedded, transactional key-value database (copy-on-write B+tree,\n"
             "one memory-mapped file, MVCC, a TTL per key, buckets).\n\n"
             "    import keel\n"
             "    with keel.open('app.db') as db:\n"
             "        with db.begin(write=True) as txn:\n"
             "            txn.put(b'alice', b'admin', bucket='users', ttl=3600)\n"
             "        print(db.get(b'alice', bucket='users'))\n\n"
             "See doc/python.md for the reference.",
    .m_size = -1,
    .m_methods = module_methods,
};

static PyObject *std_base(int std)
{
    switch (std) {
    case 1: return PyExc_KeyError;
    case 2: return PyExc_ValueError;
    case 3: return PyExc_MemoryError;
    case 4: return PyExc_OverflowError;
    default: return NULL;
    }
}

static int add_class(PyObject *m, const char *name, const char *doc, PyObject *base, PyObject **out)
{
    char qual[64];
    snprintf(qual, sizeof qual, "keel.%s", name);
    *out = PyErr_NewExceptionWithDoc(qual, doc, base, NULL);
    if (!*out)
        return -1;
    Py_INCREF(*out);
    return PyModule_AddObject(m, name, *out) < 0 ? (Py_DECREF(*out), -1) : 0;
}

static int add_errors(PyObject *m)
{
    if (add_class(m, "Error", "keel's errors; .code is the keel error code (or errno).", NULL, &KeelError))
        return -1;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        PyObject *std = std_base(kinds[i].std);
        PyObject *bases = std ? PyTuple_Pack(2, KeelError, std) : PyTuple_Pack(1, KeelError);
        if (!bases)
            return -1;
        int rc = add_class(m, kinds[i].name, kinds[i].doc, bases, &classes[FIRST_CODE - kinds[i].code]);
        Py_DECREF(bases);
        if (rc)
            return -1;
    }
    PyObject *bases = PyTuple_Pack(2, KeelError, PyExc_OSError);
    if (!bases)
        return -1;
    int rc = add_class(m, "FileSystemError", "The operating system failed (errno in .errno and .code).",
                       bases, &FileSystemError);
    Py_DECREF(bases);
    return rc;
}

static int add_constants(PyObject *m)
{
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (PyModule_AddIntConstant(m, kinds[i].cname, kinds[i].code) < 0)
            return -1;
    }
    if (PyModule_AddStringConstant(m, "__version__", "0.1.0") < 0 ||
        PyModule_AddIntConstant(m, "MAX_VALUE_SIZE", (long)KEEL_MAX_VALUE_SIZE) < 0)
        return -1;
#ifdef KEEL_VERIFY
    return PyModule_AddIntConstant(m, "HAVE_VERIFY", 1);
#else
    return PyModule_AddIntConstant(m, "HAVE_VERIFY", 0);
#endif
}

PyMODINIT_FUNC PyInit_keel(void)
{
    PyTypeObject *types[] = {&Db_Type, &Txn_Type, &Cursor_Type, &Items_Type};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (PyType_Ready(types[i]) < 0)
            return NULL;
    if (!kp_str_release && !(kp_str_release = PyUnicode_InternFromString("release")))
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (!m)
        return NULL;
    if (add_errors(m) || add_constants(m))
        goto fail;
    const char *names[] = {"Database", "Transaction", "Cursor", "Items"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        Py_INCREF(types[i]);
        if (PyModule_AddObject(m, names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(types[i]);
            goto fail;
        }
    }
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
