"""buffers=True: memoryviews into the map, valid until the txn ends, then
released; a buffer still exported elsewhere keeps its snapshot alive."""
import gc

import pytest

import keel
from conftest import fill


def test_views_read_like_bytes(db):
    keys = fill(db, 10)
    with db.begin(buffers=True) as txn:
        assert txn.buffers
        v = txn.get(keys[3])
        assert isinstance(v, memoryview) and v.readonly
        assert bytes(v) == b"v3" and v == b"v3" and v.tobytes() == b"v3"
        got = list(txn.items())
        assert all(isinstance(k, memoryview) and isinstance(x, memoryview) for k, x in got)
        assert [bytes(k) for k, _ in got] == keys
        assert [bytes(x) for x in txn.get_many(keys[:2])] == [b"v0", b"v1"]
        c = txn.cursor()
        c.first()
        assert bytes(c.key) == keys[0] and bytes(c.value) == b"v0"
        assert txn.get(b"missing") is None
        with pytest.raises(TypeError):
            v[0] = 1  # read-only
    with pytest.raises(ValueError):
        bytes(v)  # released at the txn's end
    with pytest.raises(ValueError):
        v[0]
    with pytest.raises(ValueError):
        got[0][1].tobytes()


def test_a_view_after_abort_or_close_raises(path):
    db = keel.open(path)
    db.put(b"a", b"1")
    txn = db.begin(buffers=True)
    v = txn.get(b"a")
    txn.abort()
    with pytest.raises(ValueError):
        len(v)
    txn = db.begin(buffers=True)
    v = txn.get(b"a")
    db.close()
    with pytest.raises(ValueError):
        v.tobytes()


def test_a_slice_outliving_the_txn_pins_its_snapshot(db):
    db.put(b"a", b"hello")
    with db.begin(buffers=True) as txn:
        v = txn.get(b"a")
        part = v[1:4]  # shares v's buffer
    with pytest.raises(ValueError):
        v.tobytes()
    assert txn.ended and "still held" in repr(txn)
    assert len(db.readers()) == 1  # the snapshot stays registered
    for i in range(200):  # writers go on; the pinned pages are kept
        db.put(b"a", b"%d" % i * 50)
    assert part.tobytes() == b"ell"
    del part
    gc.collect()
    assert db.readers() == []
    assert "ended" in repr(txn)


def test_close_waits_for_pinned_snapshots(path):
    db = keel.open(path)
    db.put(b"a", b"hello")
    txn = db.begin(buffers=True)
    part = txn.get(b"a")[:2]
    db.close()
    assert db.closed
    assert part.tobytes() == b"he"  # the map is still there
    del part
    gc.collect()
    with keel.open(path) as again:
        assert again.get(b"a") == b"hello"


def test_many_views_in_one_txn_do_not_pile_up(db):
    fill(db, 3000)
    with db.begin(buffers=True) as txn:
        n = 0
        for k, v in txn.items():
            n += len(v)
        assert n > 0
        assert len(txn.get_many([b"k00001"] * 10)) == 10


def test_txn_is_not_a_buffer(db):
    with db.begin(buffers=True) as txn:
        with pytest.raises(BufferError):
            memoryview(txn)


def test_dropped_txn_with_views_is_collected(db):
    db.put(b"a", b"1")
    txn = db.begin(buffers=True)
    v = txn.get(b"a")
    del txn, v  # a cycle: the txn lists its views, each view holds the txn
    gc.collect()
    assert db.readers() == []
