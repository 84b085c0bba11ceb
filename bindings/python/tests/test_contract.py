"""The API contract of issue 21: every call, its arguments and its answers."""
import os

import pytest

import keel
from conftest import fill


def test_open_close_context(path):
    with keel.open(path) as db:
        assert not db.closed
        assert db.path == path
        assert db.max_key_size >= 1024
        assert "open" in repr(db)
    assert db.closed
    assert "closed" in repr(db)
    db.close()  # idempotent
    with pytest.raises(ValueError):
        db.begin()
    with pytest.raises(ValueError):
        db.get(b"k")
    assert os.path.exists(path) and os.path.exists(path + "-lock")


def test_open_options(tmp_path):
    p = str(tmp_path / "o.db")
    with keel.open(p, sync="none", page_size=8192, max_readers=10, max_size=1 << 30) as db:
        assert db.stat()["page_size"] == 8192
        db.put(b"a", b"1")
    with keel.open(p, sync="meta") as db:
        assert db.get(b"a") == b"1"
    with keel.open(tmp_path / "pathlike.db") as db:  # os.PathLike
        assert db.put(b"x", b"y")
    with keel.open(p, readonly=True) as db:
        assert db.get(b"a") == b"1"
        with pytest.raises(keel.ReadonlyError):
            db.put(b"b", b"2")
        with db.begin() as txn, pytest.raises(keel.ReadonlyError):
            txn.put(b"b", b"2")


def test_verify(path):
    if keel.HAVE_VERIFY:
        with keel.open(path, verify=True) as db:
            assert db.put(b"a", b"1")
    else:
        with pytest.raises(ValueError, match="KEEL_VERIFY"):
            keel.open(path, verify=True)
    with keel.open(path, verify=False) as db:
        assert db.stat()["entries"] >= 0


def test_verify_refuses_a_damaged_page(path):
    """A flipped bit in a value: returned as data without verify, an error with it."""
    assert keel.HAVE_VERIFY
    with keel.open(path, sync="none") as db:
        for i in range(2000):
            db.put(b"key%05d" % i, b"value-%05d-" % i + b"x" * 40)
    with open(path, "rb") as f:
        image = f.read()
    at = image.index(b"value-01234-") + 8
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(bytes([image[at] ^ 1]))
    with keel.open(path) as db:
        assert db.get(b"key01234") != b"value-01234-" + b"x" * 40
    with keel.open(path, verify=True) as db:
        with pytest.raises(keel.CorruptedError):
            db.get(b"key01234")
        assert db.get(b"key00001") == b"value-00001-" + b"x" * 40


def test_write_txn_commits_on_exit_and_aborts_on_exception(db):
    with db.begin(write=True) as txn:
        assert txn.write and not txn.buffers and not txn.ended
        assert txn.put(b"a", b"1") is True
    assert txn.ended
    with pytest.raises(RuntimeError):
        with db.begin(write=True) as txn:
            txn.put(b"a", b"2")
            raise RuntimeError("boom")
    assert db.get(b"a") == b"1"
    txn = db.begin(write=True)
    txn.put(b"b", b"3")
    txn.abort()
    txn.abort()  # again: no-op
    assert db.get(b"b") is None
    txn = db.begin(write=True)
    txn.put(b"b", b"3")
    txn.commit()
    assert db.get(b"b") == b"3"
    with pytest.raises(keel.TxnError):
        txn.commit()
    with pytest.raises(keel.TxnError):
        txn.get(b"b")


def test_commit_inside_with_block(db):
    with db.begin(write=True) as txn:
        txn.put(b"a", b"1")
        txn.commit()
    assert db.get(b"a") == b"1"


def test_read_txn_is_a_snapshot(db):
    db.put(b"a", b"1")
    with db.begin() as r:
        db.put(b"a", b"2")
        assert r.get(b"a") == b"1"
        with db.begin() as newer:
            assert r.id < newer.id
    assert db.get(b"a") == b"2"


def test_get_put_delete(db):
    with db.begin(write=True) as txn:
        assert txn.get(b"a") is None
        assert txn.get(b"a", b"dflt") == b"dflt"
        assert txn.get(b"a", default=7) == 7
        assert txn.put(b"a", b"1")
        assert txn.put(bytearray(b"b"), memoryview(b"2"))
        assert txn.get(memoryview(b"b")) == b"2"
        assert txn.put(b"a", b"x", nx=True) is False
        assert txn.get(b"a") == b"1"
        assert txn.put(b"c", b"", nx=True) is True
        assert txn.get(b"c") == b""
        assert txn.delete(b"c") is True
        assert txn.delete(b"c") is False
        assert txn.id > 0


def test_incr_cas(db):
    with db.begin(write=True) as txn:
        assert txn.incr(b"n") == 1
        assert txn.incr(b"n", 10) == 11
        assert txn.incr(b"n", delta=-20) == -9
        assert txn.get(b"n") == b"-9"
        assert txn.cas(b"n", b"-9", b"5") is True
        assert txn.cas(b"n", b"-9", b"6") is False
        assert txn.get(b"n") == b"5"
        assert txn.cas(b"new", None, b"v") is True
        assert txn.cas(b"new", None, b"w") is False
    assert db.incr(b"n") == 6
    assert db.incr(b"m", 3, bucket="ctr") == 3
    assert db.cas(b"n", b"6", b"7") is True
    assert db.cas(b"n", b"6", b"8") is False
    assert db.get(b"n") == b"7"


def test_ttl_expire_persist_realtime(db):
    with db.begin(write=True) as txn:
        txn.put(b"a", b"1", ttl=100)
        txn.put(b"b", b"2")
        left = txn.ttl(b"a")
        assert 99 < left <= 100
        assert txn.ttl(b"b") is None
        with pytest.raises(KeyError):
            txn.ttl(b"zz")
        with pytest.raises(keel.NotFoundError):
            txn.ttl(b"zz")
        assert txn.expire(b"b", 50.5) is True
        assert 50 < txn.ttl(b"b") <= 50.5
        assert txn.expire(b"zz", 5) is False
        assert txn.persist(b"b") is True
        assert txn.ttl(b"b") is None
        assert txn.persist(b"zz") is False
        txn.put(b"a", b"3", keepttl=True)
        assert txn.ttl(b"a") is not None
        txn.put(b"a", b"4")  # a plain put clears the expiry
        assert txn.ttl(b"a") is None
        with pytest.raises(ValueError):
            txn.put(b"a", b"5", ttl=5, keepttl=True)


def test_items(db):
    keys = fill(db, 50)
    with db.begin() as txn:
        assert [k for k, _ in txn.items()] == keys
        assert [k for k, _ in txn.items(reverse=True)] == keys[::-1]
        assert dict(txn.items())[b"k00007"] == b"v7"
        assert [k for k, _ in txn.items(start=b"k00010", stop=b"k00013")] == keys[10:13]
        assert [k for k, _ in txn.items(start=b"k00010", stop=b"k00013", reverse=True)] == keys[12:9:-1]
        assert [k for k, _ in txn.items(prefix=b"k0001")] == keys[10:20]
        assert [k for k, _ in txn.items(prefix=b"k0001", reverse=True)] == keys[19:9:-1]
        assert [k for k, _ in txn.items(prefix=b"k0001", start=b"k00015")] == keys[15:20]
        assert [k for k, _ in txn.items(prefix=b"k0001", stop=b"k00012", reverse=True)] == [keys[11], keys[10]]
        assert list(txn.items(prefix=b"zz")) == []
        assert list(txn.items(start=b"k00049\x00")) == []
        assert list(txn.items(bucket="nope")) == []
        assert list(txn.items(prefix=b"\xff")) == []


def test_items_prefix_of_ff_bytes(db):
    with db.begin(write=True) as txn:
        for k in (b"\xfe", b"\xff", b"\xff\x00", b"\xff\xff", b"\xff\xff\x01"):
            txn.put(k, b"")
        assert [k for k, _ in txn.items(prefix=b"\xff\xff")] == [b"\xff\xff", b"\xff\xff\x01"]
        assert [k for k, _ in txn.items(prefix=b"\xff", reverse=True)] == [
            b"\xff\xff\x01", b"\xff\xff", b"\xff\x00", b"\xff"]


def test_items_one_byte_prefix_leaves_bytes_alone(db):
    # CPython shares one bytes object per single byte: computing the bound past
    # a one-byte prefix must not write into it (it once turned b"b" into b"c")
    with db.begin(write=True) as txn:
        for k in (b"a", b"b", b"b1", b"c"):
            txn.put(k, b"")
        for p in (b"b", bytearray(b"b"), memoryview(b"b")):
            assert [k for k, _ in txn.items(prefix=p)] == [b"b", b"b1"]
    assert bytes([98]) == b"b" and b"b"[0] == 98 and bytes([99]) == b"c"


def test_items_in_write_txn_sees_changes(db):
    fill(db, 10)
    with db.begin(write=True) as txn:
        seen = []
        for k, _ in txn.items():
            seen.append(k)
            if k == b"k00002":
                txn.delete(b"k00003")
                txn.put(b"k00004a", b"new")
        assert b"k00003" not in seen and b"k00004a" in seen


def test_cursor(db):
    keys = fill(db, 5)
    with db.begin(write=True) as txn:
        c = txn.cursor()
        assert c.key is None and c.value is None and c.item is None
        assert c.first() and c.key == keys[0] and c.value == b"v0"
        assert c.next() and c.key == keys[1]
        assert c.prev() and c.prev() is False and c.key == keys[0]
        assert c.last() and c.item == (keys[4], b"v4")
        assert c.next() is False and c.key == keys[4]
        assert c.seek(b"k00002") and c.key == keys[2]
        assert c.seek(b"k000025") and c.key == keys[3]
        assert c.seek(b"zzz") is False and c.key is None
        assert c.expires_at is None
        c.seek(keys[1])
        assert list(c) == [(k, b"v%d" % (i + 1)) for i, k in enumerate(keys[1:])]
        c.seek(keys[2])
        assert c.delete() is True
        assert c.key == keys[3] or c.next() and c.key == keys[3]
        assert txn.get(keys[2]) is None
        c.close()
        c.close()
        with pytest.raises(keel.TxnError):
            c.first()
        fresh = txn.cursor()
        assert [k for k, _ in fresh] == [keys[0], keys[1], keys[3], keys[4]]
        with pytest.raises(keel.NotFoundError):
            txn.cursor("no-such-bucket")
        txn.put(b"x", b"1", bucket="b", ttl=10)
        cb = txn.cursor(bucket="b")
        assert cb.first() and cb.key == b"x" and cb.expires_at is not None
    with pytest.raises(keel.TxnError):
        cb.first()


def test_get_many_put_many(db):
    with db.begin(write=True) as txn:
        assert txn.put_many({b"a": b"1", b"b": b"2"}) is None
        txn.put_many([(b"c", b"3"), [bytearray(b"d"), memoryview(b"4")]], bucket="x")
        txn.put_many(((b"k%d" % i, b"%d" % i) for i in range(1000)))
        txn.put_many([])
        assert txn.get_many([b"a", b"zz", b"b"]) == [b"1", None, b"2"]
        assert txn.get_many([b"c", b"d"], bucket="x") == [b"3", b"4"]
        assert txn.get_many([b"c"], bucket="nope") == [None]
        assert txn.get_many([]) == []
        assert txn.get_many(b"k%d" % i for i in range(1000)) == [b"%d" % i for i in range(1000)]
        with pytest.raises(TypeError):
            txn.put_many([(b"e", b"5"), (b"f",)])
        with pytest.raises(TypeError):
            txn.put_many([(b"e", b"5"), ("f", b"6")])
        assert txn.get(b"e") is None  # all or nothing
        with pytest.raises(TypeError):
            txn.get_many(b"abc")


def test_buckets(db):
    with db.begin(write=True) as txn:
        assert txn.buckets() == []
        assert txn.create_bucket("users") is True
        assert txn.create_bucket("users") is False
        assert txn.create_bucket(b"bytes-name") is True
        txn.put(b"k", b"v", bucket="auto")  # writes create a missing bucket
        assert txn.buckets() == ["auto", "bytes-name", "users"]
        txn.put(b"alice", b"admin", bucket="users")
        assert txn.get(b"alice") is None
        assert txn.get(b"alice", bucket="users") == b"admin"
        assert txn.get(b"alice", bucket=b"users") == b"admin"
        assert txn.stat(bucket="users")["entries"] == 1
    with db.begin(write=True) as txn:
        assert txn.drop_bucket("users") is True
        assert txn.drop_bucket("users") is False
        assert txn.get(b"alice", bucket="users") is None
    with db.begin() as txn:
        assert txn.buckets() == ["auto", "bytes-name"]
        assert txn.get(b"alice", bucket="users") is None
    db.put(b"alice", b"again", bucket="users")  # a new bucket under the old name
    assert db.get(b"alice", bucket="users") == b"again"
    with db.begin() as txn:
        assert txn.get(b"alice", bucket="users") == b"again"


def test_bucket_handle_in_older_snapshot(db):
    old = db.begin()
    db.put(b"k", b"v", bucket="late")
    with db.begin() as txn:
        assert txn.get(b"k", bucket="late") == b"v"  # caches the handle
    assert old.get(b"k", bucket="late") is None  # absent from the older snapshot
    assert list(old.items(bucket="late")) == []
    old.abort()


def test_purge(path):
    now = [1000.0]
    with keel.open(path, clock=lambda: now[0], purge_per_commit=-1) as db:
        with db.begin(write=True) as txn:
            for i in range(10):
                txn.put(b"%d" % i, b"v", ttl=1)
        now[0] += 5
        with db.begin(write=True) as txn:
            assert txn.purge(max=3) == 3
            assert txn.purge() == 7
            assert txn.purge() == 0


def test_one_call_forms(db):
    assert db.put(b"a", b"1") is True
    assert db.get(b"a") == b"1"
    assert db.get(b"zz") is None
    assert db.get(b"zz", b"d") == b"d"
    assert db.put(b"a", b"2", nx=True) is False
    assert db.put(b"t", b"1", ttl=60) is True
    with db.begin() as txn:
        assert 59 < txn.ttl(b"t") <= 60
    assert db.put(b"t", b"2", keepttl=True) is True
    with db.begin() as txn:
        assert txn.ttl(b"t") is not None
    assert db.put(b"a", b"3", bucket="b") is True
    assert db.get(b"a", bucket="b") == b"3"
    assert db.get(b"a", bucket="nope") is None
    assert db.delete(b"a") is True
    assert db.delete(b"a") is False
    assert db.incr(b"n", 2) == 2


def test_stat_readers_copy_check(db, tmp_path):
    fill(db, 100)
    st = db.stat()
    assert st["entries"] == 100 and st["page_size"] == 4096
    assert set(st) == {"page_size", "depth", "entries", "branch_pages", "leaf_pages", "overflow_pages",
                       "free_pages", "file_size", "last_txnid"}
    assert db.readers() == []
    with db.begin() as txn:
        (r,) = db.readers()
        assert r["pid"] == os.getpid() and r["txnid"] == txn.id and r["lag"] == 0 and r["age"] >= 0
    for compact in (False, True):
        dest = str(tmp_path / f"copy{compact}.db")
        db.copy(dest, compact=compact)
        with keel.open(dest) as c:
            assert c.stat()["entries"] == 100
            assert c.check() == []
        with pytest.raises(keel.Error):
            db.copy(dest)  # must not exist
    assert db.check() == []


def test_help_and_docstrings():
    for obj in (keel.open, keel.Database.begin, keel.Transaction.put, keel.Transaction.items,
                keel.Cursor.seek, keel.Database.copy):
        assert obj.__doc__ and len(obj.__doc__) > 20
    assert "keel" in keel.__doc__
    stubs = os.path.join(os.path.dirname(__file__), "..", "keel-stubs", "__init__.pyi")
    text = open(stubs).read()
    for name in ("def open(", "class Database", "class Transaction", "class Cursor", "class Error"):
        assert name in text
    for name in dir(keel):
        if name.endswith("Error") and name != "Error":
            assert f"class {name}(" in text, name
    for cls in (keel.Database, keel.Transaction, keel.Cursor):  # every method and property
        body = text.split(f"class {cls.__name__}:")[1].split("\nclass ")[0]
        for name in dir(cls):
            if not name.startswith("_"):
                assert f"def {name}(" in body, f"{cls.__name__}.{name}"
    for name in dir(keel):
        if name.isupper() and not name.startswith("_"):
            assert f"\n{name}: int" in text, name


def test_strerror():
    assert "KEEL_NOTFOUND" in keel.strerror(keel.NOTFOUND)
    assert keel.strerror(2)
