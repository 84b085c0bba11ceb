#!/usr/bin/python3
"""bench.py -- the keel Python binding against py-lmdb (Debian's python3-lmdb).

Both run the same workloads in this one process, on fresh files, with the
same keys (24 random bytes, from one seed) and 150-byte values, as
tools/keel-bench.c does:

    1M puts in one txn         random-order puts, one commit
    1M random gets in one txn  every key once, shuffled
    one txn per get            begin / get / end, N/10 times
    iterate all                every (key, value) of the file, in order
    durable one-put txns       begin / put / commit with a full sync, D times

Each row prints seconds per engine and keel/lmdb = lmdb's time over keel's
(higher = keel faster), the median of the rounds.  Every row checks its
result (keys found, entries seen) and the run fails if one is wrong.

    python3 bench.py [-n 1000000] [-d 200] [-r 3] [--dir /tmp]
"""
import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

import keel
import lmdb

VALUE_SIZE = 150


class Keel:
    name = "keel"

    def __init__(self, path):
        self.db = keel.open(path)

    def put_all(self, keys, value):
        with self.db.begin(write=True) as txn:
            put = txn.put
            for k in keys:
                put(k, value)

    def get_all(self, keys):
        found = 0
        with self.db.begin() as txn:
            get = txn.get
            for k in keys:
                if get(k) is not None:
                    found += 1
        return found

    def txn_per_get(self, keys):
        found = 0
        begin = self.db.begin
        for k in keys:
            with begin() as txn:
                if txn.get(k) is not None:
                    found += 1
        return found

    def iterate(self):
        n = 0
        with self.db.begin() as txn:
            for _k, _v in txn.items():
                n += 1
        return n

    def durable_puts(self, keys, value):
        begin = self.db.begin
        for k in keys:
            with begin(write=True) as txn:
                txn.put(k, value)

    def close(self):
        self.db.close()


class Lmdb:
    name = "lmdb"

    def __init__(self, path):
        self.env = lmdb.open(path, subdir=False, map_size=1 << 36, max_dbs=0)

    def put_all(self, keys, value):
        with self.env.begin(write=True) as txn:
            put = txn.put
            for k in keys:
                put(k, value)

    def get_all(self, keys):
        found = 0
        with self.env.begin() as txn:
            get = txn.get
            for k in keys:
                if get(k) is not None:
                    found += 1
        return found

    def txn_per_get(self, keys):
        found = 0
        begin = self.env.begin
        for k in keys:
            with begin() as txn:
                if txn.get(k) is not None:
                    found += 1
        return found

    def iterate(self):
        n = 0
        with self.env.begin() as txn:
            for _k, _v in txn.cursor():
                n += 1
        return n

    def durable_puts(self, keys, value):
        begin = self.env.begin
        for k in keys:
            with begin(write=True) as txn:
                txn.put(k, value)

    def close(self):
        self.env.close()


def timed(fn, *args):
    t0 = time.perf_counter()
    r = fn(*args)
    return time.perf_counter() - t0, r


def check(what, got, want):
    if got != want:
        sys.exit(f"bench: {what}: got {got}, want {want}")


def one_engine(cls, work, keys, shuffled, per_get, durable):
    """Runs every row on a fresh file; returns {row: seconds}."""
    path = os.path.join(work, f"{cls.name}.db")
    e = cls(path)
    value = b"v" * VALUE_SIZE
    t = {}
    t["1M puts in one txn"], _ = timed(e.put_all, keys, value)
    t["1M random gets in one txn"], found = timed(e.get_all, shuffled)
    check(f"{cls.name} gets", found, len(keys))
    t["one txn per get"], found = timed(e.txn_per_get, per_get)
    check(f"{cls.name} txn per get", found, len(per_get))
    t["iterate all"], n = timed(e.iterate)
    check(f"{cls.name} iterate", n, len(keys))
    t["durable one-put txns"], _ = timed(e.durable_puts, durable, value)
    e.close()
    for f in os.listdir(work):
        os.unlink(os.path.join(work, f))
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="keys (default 1,000,000)")
    ap.add_argument("-d", type=int, default=200, help="durable one-put txns (default 200)")
    ap.add_argument("-r", type=int, default=3, help="rounds (default 3)")
    ap.add_argument("--dir", default="/tmp", help="where the files go (a real disk: commits sync)")
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    keys = list({rng.randbytes(24) for _ in range(a.n)})
    rng.shuffle(keys)
    shuffled = keys[:]
    rng.shuffle(shuffled)
    per_get = shuffled[: max(1, a.n // 10)]
    durable = [rng.randbytes(24) for _ in range(a.d)]
    print(f"keel {keel.__version__} vs py-lmdb {lmdb.__version__} (LMDB {'.'.join(map(str, lmdb.version()))}); "
          f"n={len(keys)}, txn-per-get={len(per_get)}, durable={a.d}, rounds={a.r}")
    times = {"keel": [], "lmdb": []}
    work = tempfile.mkdtemp(prefix="keel-bench-", dir=a.dir)
    try:
        for r in range(a.r):
            order = (Lmdb, Keel) if r % 2 == 0 else (Keel, Lmdb)
            for cls in order:
                times[cls.name].append(one_engine(cls, work, keys, shuffled, per_get, durable))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"| {'row':<26} | {'keel s':>8} | {'lmdb s':>8} | keel/lmdb | min-max |")
    print(f"|{'-' * 28}|{'-' * 10}|{'-' * 10}|-----------|---------|")
    for row in times["keel"][0]:
        k = [t[row] for t in times["keel"]]
        m = [t[row] for t in times["lmdb"]]
        ratios = [mi / ki for ki, mi in zip(k, m)]
        print(f"| {row:<26} | {statistics.median(k):8.3f} | {statistics.median(m):8.3f} | "
              f"{statistics.median(ratios):9.2f} | {min(ratios):.2f}-{max(ratios):.2f} |")


if __name__ == "__main__":
    main()
