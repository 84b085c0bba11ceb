"""Error mapping (every keel code has its class) and bad input (never a crash)."""
import errno
import math

import pytest

import keel

CODES = {
    "NOTFOUND": ("NotFoundError", KeyError), "EXISTS": ("ExistsError", None),
    "CORRUPTED": ("CorruptedError", None), "INVALID": ("InvalidError", None),
    "VERSION": ("VersionError", None), "FULL": ("FullError", None),
    "READERS_FULL": ("ReadersFullError", None), "BADVALSIZE": ("BadValueSizeError", ValueError),
    "READONLY": ("ReadonlyError", None), "BADTXN": ("TxnError", None), "PANIC": ("PanicError", None),
    "BADARG": ("BadArgumentError", ValueError), "BADBUCKET": ("BucketError", None),
    "BADCURSOR": ("CursorError", None), "BUSY": ("BusyError", None), "BADFLAGS": ("BadFlagsError", ValueError),
    "BADNAME": ("BadNameError", ValueError), "LOCKFILE": ("LockFileError", None),
    "FORKED": ("ForkedError", None), "NOMEM": ("NoMemoryError", MemoryError),
    "MISMATCH": ("MismatchError", None), "NOTNUMBER": ("NotNumberError", ValueError),
    "OVERFLOW": ("IntOverflowError", OverflowError), "LOCKPATH": ("LockPathError", None),
    "MAPSIZE": ("MapSizeError", None), "ADDRSPACE": ("AddressSpaceError", None),
    "LAGGED": ("LaggedError", None), "INCOMPATIBLE": ("IncompatibleError", None),
}


def test_every_code_has_a_class():
    assert len(CODES) == 28
    for cname, (cls_name, std) in CODES.items():
        code = getattr(keel, cname)
        assert -30827 <= code <= -30800
        cls = getattr(keel, cls_name)
        assert issubclass(cls, keel.Error)
        if std:
            assert issubclass(cls, std)
        assert cls.__module__ == "keel"
        assert keel.strerror(code).startswith("KEEL_" + cname)
    assert issubclass(keel.FileSystemError, OSError) and issubclass(keel.FileSystemError, keel.Error)
    for name in ("CorruptedError", "FullError", "ReadersFullError", "ReadonlyError", "BusyError",
                 "VersionError", "InvalidError"):  # the names the contract fixes
        assert issubclass(getattr(keel, name), keel.Error)


def test_codes_are_on_the_exceptions(db, path, tmp_path):
    with db.begin(write=True) as txn:
        txn.put(b"s", b"abc")
        with pytest.raises(keel.NotNumberError) as e:
            txn.incr(b"s")
        assert e.value.code == keel.NOTNUMBER and "KEEL_NOTNUMBER" in str(e.value)
        txn.put(b"big", b"9223372036854775807")
        with pytest.raises(keel.IntOverflowError) as e:
            txn.incr(b"big")
        assert e.value.code == keel.OVERFLOW
        with pytest.raises(keel.BadValueSizeError) as e:
            txn.put(b"", b"x")
        assert e.value.code == keel.BADVALSIZE
        with pytest.raises(ValueError):
            txn.put(b"k" * (db.max_key_size + 1), b"x")
        with pytest.raises(keel.BusyError) as e:
            db.begin(write=True)  # this thread holds the write txn
        assert e.value.code == keel.BUSY
    with db.begin() as txn:
        with pytest.raises(keel.ReadonlyError) as e:
            txn.put(b"a", b"b")
        assert e.value.code == keel.READONLY
        for call in (lambda: txn.delete(b"a"), lambda: txn.incr(b"a"), lambda: txn.put_many({}),
                     lambda: txn.create_bucket("x"), lambda: txn.drop_bucket("x"),
                     lambda: txn.expire(b"a", 1), lambda: txn.persist(b"a"), lambda: txn.cas(b"a", None, b"")):
            with pytest.raises(keel.ReadonlyError):
                call()
    with pytest.raises(keel.FileSystemError) as e:
        keel.open(str(tmp_path / "no" / "such" / "dir.db"))
    assert e.value.errno == errno.ENOENT and e.value.code == errno.ENOENT
    with pytest.raises(keel.FileSystemError):
        keel.open(str(tmp_path / "missing.db"), readonly=True)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a keel file" * 1000)
    with pytest.raises(keel.InvalidError) as e:
        keel.open(str(junk))
    assert e.value.code == keel.INVALID and "junk.db" in str(e.value)


def test_readers_full(path):
    with keel.open(path, max_readers=1) as db:
        db.put(b"a", b"1")
        t1 = db.begin()
        with pytest.raises(keel.ReadersFullError):
            db.begin()
        t1.abort()
        with db.begin() as t2:
            assert t2.get(b"a") == b"1"


def test_corrupted(path):
    with keel.open(path) as db:
        with db.begin(write=True) as txn:
            for i in range(3000):
                txn.put(b"%06d" % i, b"x" * 100)
        page = db.stat()["page_size"]
    with open(path, "r+b") as f:  # garble every page past the two metas
        size = f.seek(0, 2)
        for off in range(2 * page, size, page):
            f.seek(off + 16)
            f.write(b"\xa5" * 64)
    with keel.open(path) as db:
        with pytest.raises(keel.CorruptedError) as e:
            with db.begin() as txn:
                list(txn.items())
        assert e.value.code == keel.CORRUPTED
        assert db.check() != []


def test_str_keys_and_values_are_type_errors(db):
    with db.begin(write=True) as txn:
        for call in (lambda: txn.put("k", b"v"), lambda: txn.put(b"k", "v"), lambda: txn.get("k"),
                     lambda: txn.delete("k"), lambda: txn.incr("k"), lambda: txn.cas(b"k", "x", b"y"),
                     lambda: txn.ttl("k"), lambda: txn.expire("k", 1), lambda: txn.get_many(["k"]),
                     lambda: txn.put_many({"k": b"v"}), lambda: txn.items(start="a"),
                     lambda: txn.items(prefix="a"), lambda: txn.cursor().seek("a"),
                     lambda: db.put("k", b"v"), lambda: db.get("k")):
            with pytest.raises(TypeError):
                call()


BAD_KEYS = [None, 1, 1.5, [b"a"], object(), {"a": 1}, memoryview(b"abcd")[::2]]


@pytest.mark.parametrize("bad", BAD_KEYS, ids=repr)
def test_bad_keys(db, bad):
    with db.begin(write=True) as txn:
        with pytest.raises(TypeError):
            txn.put(bad, b"v")
        with pytest.raises(TypeError):
            txn.put(b"k", bad)
        with pytest.raises(TypeError):
            txn.get(bad)
    with pytest.raises(TypeError):
        db.get(bad)


def test_bad_arguments(db, path):
    with pytest.raises(TypeError):
        keel.open()
    with pytest.raises(TypeError):
        keel.open(path, bogus=1)
    with pytest.raises(TypeError):
        keel.open(path, False)  # readonly is keyword-only
    with pytest.raises(ValueError):
        keel.open(path, sync="sometimes")
    with pytest.raises(TypeError):
        keel.open(path, sync=1)
    with pytest.raises(ValueError):
        keel.open(path, page_size=-1)
    with pytest.raises(TypeError):
        keel.open(path, page_size="big")
    with pytest.raises(keel.Error):
        keel.open(path + "2", page_size=5000)  # not a power of two
    with pytest.raises(TypeError):
        keel.open(path, clock=5)
    with pytest.raises(TypeError):
        keel.open(123.5)
    with pytest.raises(ValueError):
        db.begin(write=True, buffers=True)
    with db.begin(write=True) as txn:
        with pytest.raises(TypeError):
            txn.get()
        with pytest.raises(TypeError):
            txn.get(b"a", None, None)
        with pytest.raises(TypeError):
            txn.get(b"a", key=b"b")
        with pytest.raises(TypeError):
            txn.put(b"a", b"b", c=1)
        for ttl in (0, -1, math.nan, -math.inf, math.inf, 1e300, 2**70):
            with pytest.raises((ValueError, OverflowError)):
                txn.put(b"a", b"b", ttl=ttl)
        with pytest.raises(TypeError):
            txn.put(b"a", b"b", ttl="5")
        with pytest.raises(OverflowError):
            txn.incr(b"n", 2**64)
        with pytest.raises(TypeError):
            txn.incr(b"n", "1")
        for name in (1, ["x"]):
            with pytest.raises(TypeError):
                txn.put(b"a", b"b", bucket=name)
        for name in ("", "a\0b", "x" * 256):
            with pytest.raises(ValueError):
                txn.put(b"a", b"b", bucket=name)
        with pytest.raises(ValueError):
            txn.purge(-1)
        with pytest.raises(TypeError):
            txn.put_many(5)
        with pytest.raises(TypeError):
            txn.items(1)
    with pytest.raises(TypeError):
        db.copy(None)


def test_ended_and_closed_objects_raise(path):
    db = keel.open(path)
    txn = db.begin(write=True)
    c = txn.cursor()
    it = txn.items()
    db.close()  # aborts the open txn
    assert txn.ended
    with pytest.raises(keel.TxnError):
        txn.get(b"a")
    with pytest.raises(keel.TxnError):
        c.next()
    with pytest.raises(keel.TxnError):
        next(it)
    for call in (db.stat, db.readers, db.check, lambda: db.put(b"a", b"b"), lambda: db.copy(path + ".c")):
        with pytest.raises(ValueError):
            call()
