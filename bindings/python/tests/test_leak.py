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
