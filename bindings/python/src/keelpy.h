/*
 * keelpy.h — what the files of the keel Python binding share.
 *
 * Contract:
 *   - Three object types wrap keel's handles: Db (keel_db), Txn (keel_txn),
 *     Cursor (keel_cursor); Items is an iterator over a Cursor.  A Txn holds
 *     its Db, a Cursor its Txn (strong references), so a handle is never
 *     freed under an object that uses it.
 *   - db.close() and the end of a txn end what hangs below them: a Db keeps
 *     its live Txns on a list, a Txn its open Cursors, and ending closes
 *     them in C (the Python objects stay, and raise when used).
 *   - A Txn is busy while a call on it runs without the GIL; any other call
 *     on it meanwhile (from another thread) raises BusyError instead of
 *     racing (keel allows a txn on any thread, one at a time).  Calls on a
 *     Db without the GIL (write begin, commit, one-call writes, copy, check)
 *     are counted in nogil_calls: close() meanwhile raises BusyError.
 *   - A nested Txn (txn.nested()) holds its parent Txn (a strong reference);
 *     the parent points at its live child (borrowed: the child's end clears
 *     it).  While a child lives, the parent is unusable (TxnError) and cannot
 *     commit; ending the parent otherwise (abort, db.close()) ends the child
 *     first.  Children are on the Db's live list like any txn.
 *   - buffers=True (read txns): values are memoryviews whose exporter is the
 *     Txn.  Ending the txn releases the memoryviews it handed out; if
 *     buffers obtained from them are still held elsewhere, the keel read txn
 *     stays open (its snapshot pinned, Txn state PINNED) until the last is
 *     released, so no pointer into the map ever outlives its snapshot.
 */
#ifndef KEELPY_H
#define KEELPY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <keel.h>

typedef struct TxnObject TxnObject;
typedef struct CursorObject CursorObject;

typedef struct DbObject {
    PyObject_HEAD
    keel_db *db;          /* NULL once closed */
    int closing;          /* close() ran; pinned txns delay keel_close */
    Py_ssize_t pinned;    /* ended txns whose snapshot buffers still pin */
    int nogil_calls;      /* keel calls on it running without the GIL */
    long pid;             /* the process that opened it */
    PyObject *path;       /* str, for repr and warnings */
    PyObject *buckets;    /* dict: bucket name (str or bytes) -> handle (int) */
    PyObject *clock;      /* callable returning seconds since the epoch, or NULL */
    PyObject *clock_exc[3]; /* an exception the clock raised, until reported */
    TxnObject *txns;      /* live txns (a list through TxnObject.next) */
    PyObject *weakreflist;
} DbObject;

enum { TXN_LIVE, TXN_PINNED, TXN_DONE };

struct TxnObject {
    PyObject_HEAD
    keel_txn *txn;        /* open while LIVE or PINNED */
    DbObject *db;
    TxnObject *prev, *next; /* the db's live list */
    TxnObject *parent;      /* a nested txn's parent (strong), else NULL */
    TxnObject *child;       /* the live nested txn (borrowed), else NULL */
    CursorObject *cursors;  /* open cursors (a list through CursorObject.next) */
    int state;
    char write, buffers, busy, pend_ready;
    Py_ssize_t exports;     /* buffers handed out and not yet released */
    const void *pend_buf;   /* what the next buffer export points at */
    Py_ssize_t pend_len;
    PyObject *views;        /* list of memoryviews handed out, or NULL */
    Py_ssize_t views_limit; /* prune the list of dropped views past this */
};

struct CursorObject {
    PyObject_HEAD
    keel_cursor *c;         /* NULL once closed */
    TxnObject *txn;
    CursorObject *prev, *next;
    int fresh;              /* iteration starts at the current entry */
};

extern PyTypeObject Db_Type, Txn_Type, Cursor_Type, Items_Type;
extern PyObject *KeelError;

/* module.c */
PyObject *kp_raise(int rc);               /* sets the exception for a keel code or errno; NULL */
PyObject *kp_raise_msg(int rc, const char *msg);
int kp_clock_error(DbObject *d);          /* raises a pending clock exception: -1, else 0 */
int64_t kp_clock(void *ctx);              /* keel_options.clock for a Db with a clock */
extern PyObject *kp_str_release;

/* args.c */
int kp_args(const char *fn, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
            const char *const *names, Py_ssize_t npos, Py_ssize_t nreq, PyObject **out);
typedef struct {
    keel_val v;
    Py_buffer buf;
    int held;
} kp_bytes;
int kp_bytes_slow(PyObject *o, kp_bytes *b, const char *what);
static inline int kp_bytes_get(PyObject *o, kp_bytes *b, const char *what)
{
    if (PyBytes_CheckExact(o)) {
        b->v.data = PyBytes_AS_STRING(o);
        b->v.len = (size_t)PyBytes_GET_SIZE(o);
        b->held = 0;
        return 0;
    }
    return kp_bytes_slow(o, b, what);
}
static inline void kp_bytes_release(kp_bytes *b)
{
    if (b->held)
        PyBuffer_Release(&b->buf);
}
int kp_name(PyObject *o, const char **name);       /* bucket name: str or bytes, no NUL */
int kp_bool(PyObject *o, int dflt);                /* NULL -> dflt; -1 on error */
int kp_ms(PyObject *o, const char *what, int64_t *ms); /* seconds (> 0) -> ms */
int kp_size(PyObject *o, const char *what, uint64_t max, uint64_t *out); /* None/NULL -> 0 */

/* db.c, db_admin.c */
int kp_db_usable(DbObject *d);            /* 0, or -1 with ValueError: closed */
void kp_db_unpinned(DbObject *d);
PyObject *kp_db_stat(DbObject *d, PyObject *unused);
PyObject *kp_db_readers(DbObject *d, PyObject *unused);
PyObject *kp_db_copy(DbObject *d, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *kp_db_check(DbObject *d, PyObject *unused);

/* txn.c */
int kp_txn_usable(TxnObject *t);          /* 0, or -1 with an exception */
#define KP_ERR (-1)    /* an exception is set (keel's codes are <= -30800 or > 0) */
#define KP_ABSENT (-2) /* the bucket does not exist */
int kp_bucket(TxnObject *t, PyObject *name, int create, keel_bucket *out); /* 0, KP_ABSENT, KP_ERR */
int kp_bucket_stale(TxnObject *t, PyObject *name, int rc, int *tries);
PyObject *kp_value(TxnObject *t, keel_val v); /* bytes, or a memoryview (buffers=True) */
PyObject *kp_txn_new(DbObject *d, int write, int buffers);
int kp_txn_end(TxnObject *t, int commit); /* 0 or -1 */

#define KP_METHOD(fn) PyObject *fn(TxnObject *t, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
/* txn_ops.c */
KP_METHOD(kp_txn_get);
KP_METHOD(kp_txn_put);
KP_METHOD(kp_txn_delete);
KP_METHOD(kp_txn_incr);
KP_METHOD(kp_txn_cas);
KP_METHOD(kp_txn_ttl);
KP_METHOD(kp_txn_expire);
KP_METHOD(kp_txn_persist);
KP_METHOD(kp_txn_get_all);
KP_METHOD(kp_txn_count);
/* txn_batch.c */
KP_METHOD(kp_txn_get_many);
KP_METHOD(kp_txn_put_many);
KP_METHOD(kp_txn_purge);
KP_METHOD(kp_txn_items);
KP_METHOD(kp_txn_cursor);
KP_METHOD(kp_txn_stat);
PyObject *kp_txn_buckets(TxnObject *t, PyObject *unused);
KP_METHOD(kp_txn_create_bucket);
KP_METHOD(kp_txn_is_dupsort);
PyObject *kp_txn_drop_bucket(TxnObject *t, PyObject *name);

/* cursor.c */
CursorObject *kp_cursor_open(TxnObject *t, PyObject *bucket, int *absent); /* NULL: see *absent */
int kp_cursor_usable(CursorObject *c);
void kp_cursor_close(CursorObject *c);
PyObject *kp_pair(TxnObject *t, keel_val k, keel_val v); /* (key, value) */

#endif
