"""DUPSORT buckets: create_bucket(dupsort=True), put/get/get_all/count/delete,
the cursor's dup moves, TTLs on keys, and the calls the kind refuses."""
import pytest

import keel

D = "dups"


@pytest.fixture
def ddb(db):
    with db.begin(write=True) as txn:
        assert txn.create_bucket(D, dupsort=True) is True
    return db


def fill_dups(db):
    with db.begin(write=True) as txn:
        for k, vs in ((b"a", [b"1"]), (b"b", [b"3", b"1", b"2"]), (b"c", [b"z", b"y"])):
            for v in vs:
                assert txn.put(k, v, bucket=D) is True


def test_kind_is_fixed_at_creation(ddb):
    with ddb.begin(write=True) as txn:
        assert txn.is_dupsort(D) is True
        assert txn.create_bucket(D, dupsort=True) is False  # exists, same kind
        with pytest.raises(keel.IncompatibleError) as e:
            txn.create_bucket(D)  # exists as the other kind
        assert e.value.code == keel.INCOMPATIBLE and isinstance(e.value, keel.Error)
        assert txn.create_bucket("plain") is True
        assert txn.is_dupsort("plain") is False and txn.is_dupsort() is False
        with pytest.raises(keel.IncompatibleError):
            txn.create_bucket("plain", dupsort=True)
        with pytest.raises(keel.NotFoundError):
            txn.is_dupsort("absent")
        assert txn.create_bucket(b"bytes-name", dupsort=1) is True
        assert txn.is_dupsort(b"bytes-name") is True
    with ddb.begin() as txn:
        assert txn.is_dupsort(D) is True
        with pytest.raises(keel.ReadonlyError):
            txn.create_bucket("x", dupsort=True)


def test_kind_survives_reopen_and_writes_reach_it(path):
    with keel.open(path) as db:
        with db.begin(write=True) as txn:
            txn.create_bucket(D, dupsort=True)
            txn.put(b"k", b"1", bucket=D)
    with keel.open(path) as db:  # a fresh handle cache: the write opens the bucket as it is
        with db.begin(write=True) as txn:
            assert txn.put(b"k", b"2", bucket=D) is True
            assert txn.put_many([(b"k", b"0"), (b"j", b"9")], bucket=D) is None
        with db.begin() as txn:
            assert txn.is_dupsort(D)
            assert txn.get_all(b"k", bucket=D) == [b"0", b"1", b"2"]
            assert txn.stat(D)["entries"] == 4  # pairs


def test_put_get_get_all_count(ddb):
    fill_dups(ddb)
    with ddb.begin() as txn:
        assert txn.get(b"b", bucket=D) == b"1"  # the smallest value
        assert txn.get_all(b"b", bucket=D) == [b"1", b"2", b"3"]
        assert txn.get_all(b"c", bucket=D) == [b"y", b"z"]
        assert txn.get_all(b"nope", bucket=D) == []
        assert txn.get_all(b"a", bucket="absent-bucket") == []
        assert [txn.count(k, bucket=D) for k in (b"a", b"b", b"c", b"nope")] == [1, 3, 2, 0]
        assert txn.count(b"x", bucket="absent-bucket") == 0
        assert txn.get_many([b"b", b"c", b"nope"], bucket=D) == [b"1", b"y", None]
    with ddb.begin(write=True) as txn:
        assert txn.put(b"b", b"2", bucket=D) is True  # a pair already there: no change
        assert txn.put(b"b", b"2", bucket=D, dupdata=False) is False
        assert txn.put(b"b", b"4", bucket=D, dupdata=False) is True
        assert txn.put(b"b", b"5", bucket=D, nx=True) is False  # the key has values
        assert txn.put(b"new", b"5", bucket=D, nx=True) is True
        assert txn.get_all(b"b", bucket=D) == [b"1", b"2", b"3", b"4"]
        txn.put(b"e", b"", bucket=D)  # an empty value is a value
        assert txn.get_all(b"e", bucket=D) == [b""] and txn.count(b"e", bucket=D) == 1


def test_plain_buckets_answer_the_same_calls(db):
    with db.begin(write=True) as txn:
        txn.put(b"k", b"v")
        assert txn.get_all(b"k") == [b"v"] and txn.count(b"k") == 1
        assert txn.get_all(b"x") == [] and txn.count(b"x") == 0
        assert txn.put(b"k", b"w", dupdata=False) is True  # no pairs here: a plain overwrite
        assert txn.delete(b"k", b"v") is False  # the value differs
        assert txn.delete(b"k", b"w") is True
        assert txn.get(b"k") is None


def test_delete_key_or_pair(ddb):
    fill_dups(ddb)
    with ddb.begin(write=True) as txn:
        assert txn.delete(b"b", b"2", bucket=D) is True
        assert txn.delete(b"b", b"2", bucket=D) is False
        assert txn.delete(b"b", b"x" * 5000, bucket=D) is False  # too long to be there
        assert txn.get_all(b"b", bucket=D) == [b"1", b"3"]
        assert txn.delete(b"b", value=b"1", bucket=D) is True
        assert txn.delete(b"c", bucket=D) is True  # every value
        assert txn.get_all(b"c", bucket=D) == [] and txn.get(b"c", bucket=D) is None
        assert txn.delete(b"c", bucket=D) is False
        assert txn.delete(b"b", None, bucket=D) is True  # value None: the key
        assert [k for k, _ in txn.items(bucket=D)] == [b"a"]
        with pytest.raises(TypeError):
            txn.delete(b"a", "1", bucket=D)


def test_one_call_forms(ddb):
    assert ddb.put(b"k", b"2", bucket=D) is True
    assert ddb.put(b"k", b"1", bucket=D) is True
    assert ddb.put(b"k", b"1", bucket=D, dupdata=False) is False
    assert ddb.get(b"k", bucket=D) == b"1"
    assert ddb.delete(b"k", b"1", bucket=D) is True
    assert ddb.delete(b"k", b"1", bucket=D) is False
    assert ddb.get(b"k", bucket=D) == b"2"
    assert ddb.put(b"k", b"3", bucket=D, ttl=60) is True
    assert ddb.delete(b"k", bucket=D) is True
    assert ddb.get(b"k", bucket=D) is None
    with pytest.raises(keel.IncompatibleError):
        ddb.cas(b"k", None, b"1", bucket=D)
    with pytest.raises(keel.IncompatibleError):
        ddb.incr(b"n", bucket=D)
    assert ddb.put(b"p", b"1") is True and ddb.delete(b"p", b"2") is False and ddb.delete(b"p", b"1") is True


def test_cas_and_incr_are_refused(ddb):
    fill_dups(ddb)
    with ddb.begin(write=True) as txn:
        for call in (lambda: txn.cas(b"a", b"1", b"2", bucket=D), lambda: txn.cas(b"q", None, b"2", bucket=D),
                     lambda: txn.incr(b"n", bucket=D)):
            with pytest.raises(keel.IncompatibleError) as e:
                call()
            assert e.value.code == keel.INCOMPATIBLE
        assert txn.get_all(b"a", bucket=D) == [b"1"]  # nothing changed, the txn goes on
        txn.put(b"a", b"2", bucket=D)
    assert ddb.get(b"a", bucket=D) == b"1"
    with ddb.begin() as txn:
        assert txn.get_all(b"a", bucket=D) == [b"1", b"2"]


def test_pair_size_limit(ddb):
    m = ddb.max_pair_size
    assert m >= ddb.max_key_size + 18  # a key's first pair holds its count too
    with ddb.begin(write=True) as txn:
        txn.put(b"k", b"v" * (m - 1), bucket=D)
        with pytest.raises(keel.BadValueSizeError):
            txn.put(b"k", b"v" * m, bucket=D)
        with pytest.raises(keel.BadValueSizeError):
            txn.put(b"\0" * 10, b"v" * (m - 15), bucket=D)  # a key's zero bytes count twice
        txn.put(b"big", b"v" * 100000)  # the default bucket is plain: no pair limit


def test_iteration_visits_every_pair(ddb):
    fill_dups(ddb)
    want = [(b"a", b"1"), (b"b", b"1"), (b"b", b"2"), (b"b", b"3"), (b"c", b"y"), (b"c", b"z")]
    with ddb.begin() as txn:
        assert list(txn.items(bucket=D)) == want
        assert list(txn.items(bucket=D, reverse=True)) == want[::-1]
        assert list(txn.items(bucket=D, prefix=b"b")) == want[1:4]
        assert list(txn.items(bucket=D, start=b"b", stop=b"c", reverse=True)) == want[3:0:-1]
        assert list(txn.cursor(D)) == want
    with ddb.begin(buffers=True) as txn:
        assert [(bytes(k), bytes(v)) for k, v in txn.items(bucket=D)] == want
        assert [bytes(v) for v in txn.get_all(b"b", bucket=D)] == [b"1", b"2", b"3"]


def test_cursor_dup_moves(ddb):
    fill_dups(ddb)
    with ddb.begin() as txn:
        c = txn.cursor(D)
        assert c.count() == 0 and c.next_dup() is False and c.prev_dup() is False  # unpositioned
        assert c.seek_key(b"b") and c.item == (b"b", b"1") and c.count() == 3
        assert c.next_dup() and c.value == b"2"
        assert c.next_dup() and c.value == b"3"
        assert c.next_dup() is False and c.item == (b"b", b"3")  # stays on the last value
        assert c.prev_dup() and c.prev_dup() and c.value == b"1"
        assert c.prev_dup() is False and c.item == (b"b", b"1")
        assert c.next_key() and c.item == (b"c", b"y")
        assert c.next_key() is False and c.item == (b"c", b"y")
        assert c.prev_key() and c.item == (b"b", b"3")  # the previous key's last value
        assert c.prev_key() and c.item == (b"a", b"1") and c.count() == 1
        assert c.prev_key() is False
        assert c.seek_key(b"bb") is False and c.item is None and c.count() == 0  # unpositioned
        assert c.next_key() and c.item == (b"a", b"1")  # unpositioned: as next()
        assert c.seek_pair(b"b", b"15") and c.item == (b"b", b"2")
        assert c.seek_pair(b"b", b"2") and c.item == (b"b", b"2")
        assert c.seek_pair(b"b", b"4") is False and c.item is None
        assert c.seek_pair(key=b"c", value=b"") and c.item == (b"c", b"y")
        assert c.seek(b"bz") and c.item == (b"c", b"y")  # first pair with key >= b"bz"
        c.first()
        assert c.prev_key() is False
        c.last()
        assert c.item == (b"c", b"z") and c.count() == 2
        with pytest.raises(TypeError):
            c.seek_pair(b"b")
        with pytest.raises(TypeError):
            c.seek_key("b")


def test_cursor_delete_removes_one_pair(ddb):
    fill_dups(ddb)
    with ddb.begin(write=True) as txn:
        c = txn.cursor(D)
        assert c.seek_pair(b"b", b"2") and c.delete() is True
        assert c.next() and c.item == (b"b", b"3")
        assert txn.get_all(b"b", bucket=D) == [b"1", b"3"]
        assert c.seek_key(b"b") and c.count() == 2


def test_ttl_belongs_to_the_key(path):
    now = [1_700_000_000.0]
    with keel.open(path, clock=lambda: now[0]) as db:
        with db.begin(write=True) as txn:
            txn.create_bucket(D, dupsort=True)
            txn.put(b"k", b"1", bucket=D, ttl=10)
            txn.put(b"k", b"2", bucket=D)  # a plain put keeps the key's expiry here
            txn.put(b"p", b"1", bucket=D)
            assert txn.ttl(b"k", bucket=D) == 10.0 and txn.ttl(b"p", bucket=D) is None
            c = txn.cursor(D)
            assert c.seek_pair(b"k", b"2") and c.expires_at == now[0] + 10
        now[0] += 5
        with db.begin(write=True) as txn:
            txn.put(b"k", b"3", bucket=D, ttl=20)  # a new ttl moves every value's
            assert txn.ttl(b"k", bucket=D) == 20.0
            assert txn.expire(b"p", 1, bucket=D) is True
        now[0] += 10  # past the first ttl, not the second
        with db.begin() as txn:
            assert txn.get_all(b"k", bucket=D) == [b"1", b"2", b"3"]
            assert txn.get(b"p", bucket=D) is None and txn.count(b"p", bucket=D) == 0
        with db.begin(write=True) as txn:
            assert txn.persist(b"k", bucket=D) is True
        now[0] += 100
        with db.begin(write=True) as txn:
            assert txn.count(b"k", bucket=D) == 3 and txn.ttl(b"k", bucket=D) is None
            txn.put(b"t", b"a", bucket=D, ttl=1)
            txn.put(b"t", b"b", bucket=D)
        now[0] += 1
        with db.begin(write=True) as txn:
            assert txn.get_all(b"t", bucket=D) == [] and txn.count(b"t", bucket=D) == 0
            assert [k for k, _ in txn.items(bucket=D)] == [b"k"] * 3
            c = txn.cursor(D)
            assert c.seek_key(b"t") is False
            assert txn.put(b"t", b"c", bucket=D, nx=True) is True  # expired: absent
            assert txn.get_all(b"t", bucket=D) == [b"c"] and txn.ttl(b"t", bucket=D) is None


def test_drop_and_recreate_as_other_kind(ddb):
    fill_dups(ddb)
    with ddb.begin(write=True) as txn:
        assert txn.drop_bucket(D) is True
        assert txn.create_bucket(D) is True  # plain now
        txn.put(b"b", b"x", bucket=D)
        txn.put(b"b", b"y", bucket=D)
        assert txn.get_all(b"b", bucket=D) == [b"y"]
        assert txn.is_dupsort(D) is False
