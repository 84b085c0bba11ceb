"""A leak check: open / put / get / iterate / close in a loop, with the
process's RSS and open descriptors stable.

KEEL_PY_LEAK_LOOPS sets the loop count (default 100,000; the issue's figure).
"""
import gc
import os

import keel
from conftest import open_fds


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def one_loop(path, i):
    db = keel.open(path, sync="none")
    with db.begin(write=True) as txn:
        txn.put(b"k%d" % (i % 100), b"v" * 100)
        txn.put(b"t", b"x", ttl=60, bucket="b")
        txn.incr(b"n")
    with db.begin() as txn:
        assert txn.get(b"k%d" % (i % 100)) == b"v" * 100
        n = sum(1 for _ in txn.items())
        c = txn.cursor("b")
        c.first()
    with db.begin(buffers=True) as txn:
        v = txn.get(b"n")
    assert db.get(b"n") is not None
    try:
        txn.get(b"x")
    except keel.TxnError:
        pass
    db.close()
    return n


def test_open_put_get_iterate_close_is_stable(tmp_path):
    loops = int(os.environ.get("KEEL_PY_LEAK_LOOPS", "100000"))
    path = str(tmp_path / "leak.db")
    warm = max(1, min(2000, loops // 10))
    for i in range(warm):
        one_loop(path, i)
    gc.collect()
    rss0, fds0 = rss_kib(), open_fds()
    for i in range(warm, loops):
        one_loop(path, i)
    gc.collect()
    rss1, fds1 = rss_kib(), open_fds()
    assert fds1 == fds0, f"descriptors {fds0} -> {fds1}"
    # a leak of even 64 bytes a loop shows as several MiB over 100,000 loops
    assert rss1 - rss0 < 4096, f"RSS grew {rss1 - rss0} KiB over {loops - warm} loops"
    with keel.open(path) as db:
        assert db.get(b"n") == b"%d" % loops


def dup_nested_loop(db, i):
    with db.begin(write=True) as txn:
        txn.put(b"k%d" % (i % 50), b"v%d" % (i % 7), bucket="d", ttl=60)
        with txn.nested() as child:
            child.put(b"k%d" % (i % 50), b"w", bucket="d")
            assert child.count(b"k%d" % (i % 50), bucket="d") >= 1
            c = child.cursor("d")
            c.seek_key(b"k%d" % (i % 50))
            c.next_dup()
        try:
            with txn.nested() as child:
                child.delete(b"k%d" % (i % 50), b"w", bucket="d")
                child.nested()  # left open: aborted with its parent
                raise KeyError
        except KeyError:
            pass
        child = txn.nested()
        child.cursor()
        del child  # aborts
        txn.get_all(b"k%d" % (i % 50), bucket="d")
        try:
            txn.cas(b"k", None, b"x", bucket="d")
        except keel.IncompatibleError:
            pass
    with db.begin(buffers=True) as txn:
        txn.get_all(b"k%d" % (i % 50), bucket="d")
        list(txn.items(bucket="d", prefix=b"k1"))


def test_dupsort_and_nested_calls_are_stable(tmp_path):
    loops = int(os.environ.get("KEEL_PY_LEAK_LOOPS", "100000")) // 10
    with keel.open(str(tmp_path / "leak2.db"), sync="none") as db:
        with db.begin(write=True) as txn:
            txn.create_bucket("d", dupsort=True)
        warm = max(1, min(500, loops // 10))
        for i in range(warm):
            dup_nested_loop(db, i)
        gc.collect()
        rss0 = rss_kib()
        for i in range(warm, loops):
            dup_nested_loop(db, i)
        gc.collect()
        rss1 = rss_kib()
    assert rss1 - rss0 < 2048, f"RSS grew {rss1 - rss0} KiB over {loops - warm} loops"
