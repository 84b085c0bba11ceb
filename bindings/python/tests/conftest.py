"""Shared fixtures of the keel binding's tests: a fresh database per test."""
import os

import pytest

import keel


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "t.db")


@pytest.fixture
def db(path):
    d = keel.open(path)
    yield d
    d.close()


def fill(db, n, bucket=None, prefix=b"k"):
    """Puts keys prefix + %05d -> b"v%d" and returns them in order."""
    keys = [prefix + b"%05d" % i for i in range(n)]
    with db.begin(write=True) as txn:
        for i, k in enumerate(keys):
            txn.put(k, b"v%d" % i, bucket=bucket)
    return keys


def open_fds():
    return len(os.listdir("/proc/self/fd"))
