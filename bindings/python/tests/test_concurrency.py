"""Threads, processes, fork, and the ResourceWarning of an unclosed database."""
import gc
import multiprocessing
import os
import threading
import time
import warnings

import pytest

import keel


def writer_loop(db, rounds):
    """Each commit sets a and b to the same counter: readers must never see them differ."""
    for i in range(rounds):
        with db.begin(write=True) as txn:
            txn.put(b"a", b"%d" % i)
            txn.put(b"b", b"%d" % i)
            txn.put(b"pad%d" % (i % 50), b"x" * 100)


def check_snapshots(db, seconds):
    """Read txns until the time is up; returns how many, raises if one saw half a commit."""
    n = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with db.begin() as txn:
            a, b = txn.get(b"a"), txn.get(b"b")
            if a != b:
                raise AssertionError(f"torn snapshot: a={a} b={b}")
            sum(1 for _ in txn.items(prefix=b"pad"))
        n += 1
    return n


def test_read_txns_in_threads_while_one_writes(db):
    db.put(b"a", b"-1")
    db.put(b"b", b"-1")
    errors, counts = [], []

    def reader():
        try:
            counts.append(check_snapshots(db, 1.0))
        except Exception as e:  # reported below
            errors.append(e)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in readers:
        t.start()
    writer_loop(db, 300)
    for t in readers:
        t.join()
    assert errors == []
    assert len(counts) == 4 and all(c > 0 for c in counts)
    assert db.get(b"a") == b"299"


def test_write_txns_from_threads_take_turns(db):
    def bump():
        for _ in range(100):
            with db.begin(write=True) as txn:
                txn.incr(b"n")

    ts = [threading.Thread(target=bump) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert db.get(b"n") == b"400"


def test_a_txn_may_move_between_threads(db):
    txn = db.begin(write=True)
    txn.put(b"a", b"1")
    done = []

    def finish():
        txn.put(b"b", b"2")
        txn.commit()
        done.append(True)

    t = threading.Thread(target=finish)
    t.start()
    t.join()
    assert done == [True]
    assert db.get(b"a") == b"1" and db.get(b"b") == b"2"


def test_a_txn_busy_in_another_thread_raises_busy(db):
    with db.begin(write=True) as w:
        w.put_many([(b"%08d" % i, b"v" * 20) for i in range(20000)])
    txn = db.begin()
    stop = threading.Event()
    seen = {"busy": 0, "other": []}

    def scan():  # drops the GIL for each batch of entries
        for _ in range(20):
            for _ in txn.items():
                pass
        stop.set()

    t = threading.Thread(target=scan)
    t.start()
    while not stop.is_set():
        try:
            txn.get(b"00000001")
        except keel.BusyError as e:
            assert e.code == keel.BUSY and "another thread" in str(e)
            seen["busy"] += 1
        except Exception as e:
            seen["other"].append(e)
    t.join()
    assert seen["other"] == []
    txn.abort()


def _reader_process(path, seconds, q):
    try:
        with keel.open(path) as db:
            q.put(("ok", check_snapshots(db, seconds)))
    except BaseException as e:
        q.put(("error", repr(e)))


def test_processes_read_while_one_writes(db, path):
    db.put(b"a", b"-1")
    db.put(b"b", b"-1")
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_reader_process, args=(path, 2.0, q)) for _ in range(3)]
    for p in procs:
        p.start()
    seen_other_readers = False
    deadline = time.monotonic() + 30
    i = 0
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        writer_loop(db, 5)
        i += 1
        if any(r["pid"] != os.getpid() for r in db.readers()):
            seen_other_readers = True
    results = [q.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert [kind for kind, _ in results] == ["ok"] * 3, results
    assert all(n > 0 for _, n in results)
    assert seen_other_readers  # readers() lists the other processes' snapshots
    assert i > 0


def test_fork_child_gets_forked_error_and_can_reopen(db, path):
    db.put(b"a", b"1")
    txn = db.begin()
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status, never return into pytest
        status = 1
        try:
            try:
                db.get(b"a")
                status = 2
            except keel.ForkedError as e:
                assert e.code == keel.FORKED and "fork" in str(e)
            try:
                txn.get(b"a")
                status = 3
            except keel.ForkedError:
                pass
            try:
                db.begin()
                status = 4
            except keel.ForkedError:
                pass
            txn.abort()
            db.close()  # frees the child's copy only
            with keel.open(path) as again:
                assert again.get(b"a") == b"1"
                again.put(b"child", b"%d" % os.getpid())
            if status == 1:
                status = 0
        except BaseException:
            status = 5
        os._exit(status)
    _, st = os.waitpid(pid, 0)
    assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0
    assert txn.get(b"a") == b"1"  # the parent's objects are untouched
    txn.abort()
    assert db.get(b"child") == b"%d" % pid


def test_unclosed_database_warns(path):
    db = keel.open(path)
    db.put(b"a", b"1")
    with pytest.warns(ResourceWarning, match="unclosed keel database"):
        del db
        gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with keel.open(path) as db:  # the file was closed: it opens again
            assert db.get(b"a") == b"1"


def test_unclosed_database_with_open_txn(path):
    db = keel.open(path)
    txn = db.begin(write=True)
    txn.put(b"a", b"1")
    with pytest.warns(ResourceWarning):
        del db, txn  # the txn goes first (aborted), then the database
        gc.collect()
    with keel.open(path) as db:
        assert db.get(b"a") is None


def test_close_while_another_thread_waits_for_the_writer_lock(db):
    w = db.begin(write=True)
    got = []

    def second_writer():
        with db.begin(write=True) as txn:  # waits without the GIL
            txn.put(b"second", b"1")
        got.append(True)

    t = threading.Thread(target=second_writer)
    t.start()
    time.sleep(0.2)
    with pytest.raises(keel.BusyError, match="another thread"):
        db.close()  # would free the handle under the waiting thread
    assert not db.closed
    w.put(b"first", b"1")
    w.commit()
    t.join()
    assert got == [True]
    assert db.get(b"first") == b"1" and db.get(b"second") == b"1"
