"""TTLs against a clock the test controls (keel.open(..., clock=callable))."""
import threading

import pytest

import keel


class Clock:
    """Seconds since the epoch, moved by hand; counts its calls."""

    def __init__(self, now=1_700_000_000.0):
        self.now = now
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def tdb(path, clock):
    with keel.open(path, clock=clock) as d:
        yield d


def test_expiry_follows_the_clock(tdb, clock):
    with tdb.begin(write=True) as txn:
        txn.put(b"a", b"1", ttl=10)
        txn.put(b"b", b"2", ttl=2.5)
        txn.put(b"c", b"3")
    with tdb.begin() as txn:
        assert txn.ttl(b"a") == 10.0 and txn.ttl(b"b") == 2.5 and txn.ttl(b"c") is None
    clock.now += 2.5
    with tdb.begin() as txn:
        assert txn.get(b"b") is None  # expiry <= now: gone
        assert txn.ttl(b"a") == 7.5
        assert [k for k, _ in txn.items()] == [b"a", b"c"]
    clock.now += 100
    with tdb.begin() as txn:
        assert txn.get(b"a") is None
        with pytest.raises(KeyError):
            txn.ttl(b"a")
        assert txn.get_many([b"a", b"b", b"c"]) == [None, None, b"3"]
    assert tdb.get(b"a") is None and tdb.get(b"c") == b"3"


def test_the_clock_is_read_once_per_txn(tdb, clock):
    tdb.put(b"a", b"1", ttl=1)
    with tdb.begin() as txn:
        calls = clock.calls
        clock.now += 10  # the txn keeps the time it began with
        assert txn.get(b"a") == b"1"
        assert list(txn.items()) == [(b"a", b"1")]
        assert clock.calls == calls
    assert tdb.get(b"a") is None


def test_expire_persist_incr_cas_keep_or_change_expiry(tdb, clock):
    with tdb.begin(write=True) as txn:
        txn.put(b"n", b"1", ttl=5)
        assert txn.incr(b"n") == 2 and txn.ttl(b"n") == 5.0  # incr keeps it
        assert txn.cas(b"n", b"2", b"7") and txn.ttl(b"n") == 5.0  # cas keeps it
        assert txn.expire(b"n", 60)
        assert txn.ttl(b"n") == 60.0
        txn.put(b"n", b"8", keepttl=True)
        assert txn.ttl(b"n") == 60.0
        assert txn.persist(b"n") and txn.ttl(b"n") is None
        txn.put(b"x", b"1", ttl=1, nx=True)
    clock.now += 1
    with tdb.begin(write=True) as txn:
        assert txn.put(b"x", b"again", nx=True) is True  # expired counts as absent
        assert txn.cas(b"gone", None, b"v")
    with tdb.begin() as txn:
        assert txn.get(b"x") == b"again" and txn.ttl(b"x") is None


def test_cursor_expires_at(tdb, clock):
    tdb.put(b"a", b"1", ttl=30)
    with tdb.begin() as txn:
        c = txn.cursor()
        assert c.first()
        assert c.expires_at == pytest.approx(clock.now + 30, abs=0.001)


def test_one_call_put_with_ttl(tdb, clock):
    assert tdb.put(b"s", b"tok", ttl=3600, bucket="sessions")
    clock.now += 3599
    assert tdb.get(b"s", bucket="sessions") == b"tok"
    clock.now += 1
    assert tdb.get(b"s", bucket="sessions") is None


def test_purge_counts_expired(path, clock):
    with keel.open(path, clock=clock, purge_per_commit=-1) as db:
        with db.begin(write=True) as txn:
            txn.put_many([(b"%03d" % i, b"v") for i in range(100)])
            for i in range(40):
                txn.expire(b"%03d" % i, 1 + i % 2)
        clock.now += 1
        with db.begin(write=True) as txn:
            assert txn.purge() == 20
        clock.now += 1
        with db.begin(write=True) as txn:
            assert txn.purge(max=5) == 5
            assert txn.purge() == 15
        assert db.stat()["entries"] == 60


def test_readers_age_uses_the_clock(tdb, clock):
    with tdb.begin():
        clock.now += 12
        (r,) = tdb.readers()
        assert r["age"] == pytest.approx(12.0, abs=0.01)


def test_a_failing_clock_raises_at_begin(path):
    state = {"fail": False}

    def clock():
        if state["fail"]:
            raise ZeroDivisionError("clock broke")
        return 1_000_000.0

    with keel.open(path, clock=clock) as db:
        db.put(b"a", b"1")
        state["fail"] = True
        with pytest.raises(ZeroDivisionError):
            db.begin()
        with pytest.raises(ZeroDivisionError):
            db.begin(write=True)
        with pytest.raises(ZeroDivisionError):
            db.get(b"a")
        state["fail"] = False
        assert db.get(b"a") == b"1"
        with db.begin(write=True) as txn:  # the writer lock was given back
            txn.put(b"b", b"2")


def test_a_clock_returning_garbage(path):
    with keel.open(path, clock=lambda: "noon") as db:
        with pytest.raises(TypeError):
            db.begin()
    with keel.open(path, clock=lambda: -5) as db:
        with pytest.raises(ValueError):
            db.begin()


def test_clock_called_from_a_write_begin_without_the_gil(path, clock):
    """A write begin releases the GIL; the clock takes it back (threads race here)."""
    with keel.open(path, clock=clock) as db:
        def writer(n):
            for i in range(50):
                with db.begin(write=True) as txn:
                    txn.incr(b"n")
        ts = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert db.get(b"n") == b"200"
        assert clock.calls >= 200
