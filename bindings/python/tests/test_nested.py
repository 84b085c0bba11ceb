"""Nested write transactions (txn.nested()): commit hands the changes to the
parent, abort drops them, the parent refuses calls while a child lives, and
the objects' lifetimes (cursors, dropped references, db.close()) hold."""
import gc
import sys
import threading

import pytest

import keel


def test_commit_hands_changes_to_the_parent(db):
    db.put(b"base", b"0")
    with db.begin(write=True) as txn:
        txn.put(b"p", b"1")
        with txn.nested() as child:
            assert child.write and not child.buffers and not child.ended
            assert child.parent is txn and txn.parent is None
            assert child.get(b"p") == b"1"  # sees the parent's changes
            child.put(b"c", b"2")
            child.delete(b"base")
            assert repr(child) == "<keel.Transaction nested live>"
        assert child.ended and repr(child) == "<keel.Transaction nested ended>"
        assert txn.get(b"c") == b"2" and txn.get(b"base") is None
        with db.begin() as reader:  # nothing is written before the parent commits
            assert reader.get(b"c") is None and reader.get(b"base") == b"0"
    assert db.get(b"c") == b"2" and db.get(b"p") == b"1" and db.get(b"base") is None


def test_abort_leaves_the_parent_as_it_was(db):
    with db.begin(write=True) as txn:
        txn.put(b"k", b"parent", ttl=100)
        with pytest.raises(RuntimeError):
            with txn.nested() as child:
                child.put(b"k", b"child")
                child.put(b"x", b"1", bucket="made-in-child")
                child.persist(b"k")
                raise RuntimeError("boom")
        assert child.ended
        assert txn.get(b"k") == b"parent" and txn.ttl(b"k") > 99
        assert txn.buckets() == [] and txn.get(b"x", bucket="made-in-child") is None
        child = txn.nested()
        child.put(b"y", b"1", bucket="made-in-child")  # the cached handle went stale: looked up again
        child.abort()
        child.abort()  # again: a no-op
        assert txn.buckets() == []
        txn.put(b"z", b"1", bucket="made-in-child")
    with db.begin() as txn:
        assert txn.buckets() == ["made-in-child"] and txn.get(b"k") == b"parent"


def test_explicit_begin_commit_and_nesting_deeper(db):
    txn = db.begin(write=True)
    tid = txn.id
    a = txn.nested()
    a.put(b"a", b"1")
    b = a.nested()
    b.put(b"b", b"1")
    assert b.parent is a and a.parent is txn
    assert b.id == tid  # a child writes under its parent's id
    b.commit()
    c = a.nested()
    c.put(b"c", b"1")
    c.abort()
    a.commit()
    txn.commit()
    assert [db.get(k) for k in (b"a", b"b", b"c")] == [b"1", b"1", None]


def test_the_parent_refuses_while_a_child_lives(db):
    with db.begin(write=True) as txn:
        txn.put(b"k", b"v")
        cur = txn.cursor()
        assert cur.first()
        child = txn.nested()
        for call in (lambda: txn.get(b"k"), lambda: txn.put(b"a", b"b"), lambda: txn.delete(b"k"),
                     lambda: txn.items(), lambda: txn.cursor(), lambda: txn.buckets(), lambda: txn.nested(),
                     lambda: txn.id, lambda: cur.next(), lambda: cur.key, lambda: txn.stat()):
            with pytest.raises(keel.TxnError) as e:
                call()
            assert e.value.code == keel.BADTXN
        with pytest.raises(keel.TxnError):
            txn.commit()  # refused, and nothing ends
        assert not txn.ended and not child.ended
        child.put(b"k", b"w")
        child.commit()
        assert cur.key == b"k" and cur.value == b"w"  # the parent's cursor works again
        assert txn.get(b"k") == b"w"
    assert db.get(b"k") == b"w"


def test_read_txns_have_no_children(db):
    with db.begin() as txn:
        with pytest.raises(keel.ReadonlyError):
            txn.nested()
    with pytest.raises(keel.TxnError):
        txn.nested()  # ended


def test_child_writes_in_dupsort_and_buckets(db):
    with db.begin(write=True) as txn:
        with txn.nested() as child:
            assert child.create_bucket("d", dupsort=True)
            child.put(b"k", b"1", bucket="d")
            child.put(b"k", b"2", bucket="d")
        with txn.nested() as child:
            assert child.delete(b"k", b"1", bucket="d")
            child.abort()
        assert txn.get_all(b"k", bucket="d") == [b"1", b"2"]
        with txn.nested() as child:
            assert child.drop_bucket("d")
            child.abort()
        assert txn.is_dupsort("d")
    with db.begin() as txn:
        assert txn.get_all(b"k", bucket="d") == [b"1", b"2"]


def test_parent_abort_ends_the_children(db):
    txn = db.begin(write=True)
    child = txn.nested()
    grandchild = child.nested()
    grandchild.put(b"x", b"1")
    c = grandchild.cursor()
    txn.abort()
    assert txn.ended and child.ended and grandchild.ended
    with pytest.raises(keel.TxnError):
        grandchild.get(b"x")
    with pytest.raises(keel.TxnError):
        c.first()
    grandchild.abort()
    child.abort()
    with pytest.raises(keel.TxnError):
        child.commit()
    assert db.get(b"x") is None
    with db.begin(write=True) as txn:  # the writer lock was released
        txn.put(b"y", b"1")


def test_with_block_that_leaves_a_child_open_aborts_both(db):
    with pytest.raises(keel.TxnError):
        with db.begin(write=True) as txn:
            txn.put(b"p", b"1")
            child = txn.nested()
            child.put(b"c", b"1")
    assert txn.ended and child.ended
    assert db.get(b"p") is None and db.get(b"c") is None
    with pytest.raises(ValueError):  # an exception inside: both abort, it propagates
        with db.begin(write=True) as txn:
            txn.nested().put(b"c", b"1")
            raise ValueError
    assert txn.ended and db.get(b"c") is None


def test_cursors_of_a_finished_child(db):
    db.put(b"a", b"1")
    with db.begin(write=True) as txn:
        with txn.nested() as child:
            c = child.cursor()
            it = child.items()
            assert c.first() and c.item == (b"a", b"1")
        for call in (c.first, c.next, lambda: c.key, lambda: next(it), c.count):
            with pytest.raises(keel.TxnError):
                call()
        c.close()
        txn.put(b"b", b"2")
        del c, it
    assert db.get(b"b") == b"2"


def test_dropped_child_aborts_and_frees_the_parent(db):
    with db.begin(write=True) as txn:
        refs = sys.getrefcount(txn)
        child = txn.nested()
        child.put(b"c", b"1")
        assert sys.getrefcount(txn) == refs + 1  # the child holds its parent
        del child  # the last reference: the child aborts
        assert sys.getrefcount(txn) == refs
        assert txn.get(b"c") is None
        txn.put(b"p", b"1")
    assert db.get(b"p") == b"1"


def test_child_keeps_its_parent_alive(db):
    txn = db.begin(write=True)
    child = txn.nested()
    del txn
    gc.collect()
    parent = child.parent  # alive through the child
    assert not parent.ended
    child.put(b"c", b"1")
    child.commit()
    refs = sys.getrefcount(parent)
    del child  # an ended child lets go of its parent
    assert sys.getrefcount(parent) == refs - 1
    parent.commit()
    assert db.get(b"c") == b"1"


def test_db_close_ends_children(path):
    db = keel.open(path)
    txn = db.begin(write=True)
    child = txn.nested()
    grandchild = child.nested()
    c = grandchild.cursor()
    db.close()
    assert txn.ended and child.ended and grandchild.ended
    with pytest.raises(keel.TxnError):
        c.first()
    with keel.open(path) as db2:
        with db2.begin(write=True) as t2:
            t2.put(b"a", b"b")


def test_busy_child_blocks_the_parents_abort(db):
    with db.begin(write=True) as txn:
        child = txn.nested()
        child.put_many([(b"k%05d" % i, b"v") for i in range(300)])
        # while a child is busy in another thread (purge runs without the GIL),
        # the parent's abort raises BusyError and ends nothing; it ends both later
        started, release = threading.Event(), threading.Event()
        errors = []

        def worker():
            started.set()
            try:
                for _ in range(200):
                    child.purge()
            except keel.TxnError:  # the parent's abort ended it
                pass
            except Exception as e:  # pragma: no cover
                errors.append(e)
            release.set()

        t = threading.Thread(target=worker)
        t.start()
        started.wait()
        for _ in range(200):
            try:
                txn.abort()
                break
            except keel.BusyError:
                pass
        release.wait()
        t.join()
        assert not errors
        txn.abort()
        assert txn.ended and child.ended


def test_nested_depth_limit(db):
    with db.begin(write=True) as txn:
        chain = [txn]
        with pytest.raises(keel.Error):
            for _ in range(300):
                chain.append(chain[-1].nested())
        assert 200 < len(chain) <= 256
        chain[-1].put(b"deep", b"1")
        for t in reversed(chain[1:]):
            t.commit()
    assert db.get(b"deep") == b"1"
