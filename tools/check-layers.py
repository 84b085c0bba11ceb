#!/usr/bin/env python3
"""Checks that no call between lib/'s files goes against the layer order
that lib/internal.h's opening comment states (the one place it is written).

    tools/check-layers.py LIBKEEL_INTERNAL_A

Reads the symbols each object file defines and uses (nm).  A layer may call
layers to its left; the one stated loop, btree <-> space, is allowed for
the functions internal.h lists under "space.c: allocation (what btree.c
calls)".  Names on one rank ("ops, api, db") are one layer and may call
each other.  error.c (keel_strerror, CORRUPT's record) and os.c's table serve
every layer.  And one write path: the steps of a write (spill, mark the
bucket dirty, move the expiry entry, poison the txn, and the tree operations
only user data gets) are called from kv.c alone, and from dup.c, whose
DUPSORT tree operations kv.c calls between a write's steps.  Exit status 1 and one
line per call against either rule."""
import os, re, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
header = open(os.path.join(HERE, '..', 'lib', 'internal.h')).read()
comment = header[:header.index('*/')]
order_text = ''
lines = [l.lstrip(' *') for l in comment.splitlines()]
start = next(i for i, l in enumerate(lines) if 'point one way' in l) + 1
while not lines[start]:
    start += 1
for line in lines[start:]:  # the picture, up to the next blank line
    if not line:
        break
    order_text += ' ' + line.split('(')[0]
ranks = {}
for rank, group in enumerate(re.split(r'\s*->\s*', order_text.strip())):
    for name in re.split(r'[,\s]+', group.strip()):
        if name:
            ranks[name] = rank
FILE_LAYER = {'freelist': 'space', 'copy': 'api', 'check': 'api', 'salvage': 'api', 'hash_avx2': 'hash'}
alloc = header[header.index('space.c: allocation (what btree.c calls)'):]
alloc = alloc[:alloc.index('/* ----')]
LOOP = set(re.findall(r'\b(page_\w+)\(', alloc))

lib = sys.argv[1]
out = subprocess.run(['nm', '-A', lib], capture_output=True, text=True, check=True).stdout
defined, used = {}, {}
for line in out.splitlines():
    m = re.match(r'.*/(\w+)\.c\.o:\s*(?:[0-9a-f]+)?\s+(\w)\s+(\S+)$', line)
    if not m:
        continue
    obj, kind, sym = m.groups()
    if kind == 'U':
        used.setdefault(obj, set()).add(sym)
    elif kind in 'TDBR':
        defined[sym] = obj
WRITE_PATH = {'pager_maybe_spill', 'bucket_mark_dirty', 'expiry_update', 'poison', 'bt_del_live', 'bt_set_expiry',
              'bt_update_value'}
bad = 0
for obj, syms in sorted(used.items()):
    for sym in sorted(syms & WRITE_PATH):
        if obj not in ('kv', 'dup'):
            print(f'{obj}.c -> {sym}: a step of the write path outside kv.c')
            bad += 1
    for sym in sorted(syms):
        callee = defined.get(sym)
        if not callee or callee == obj or callee in ('error', 'os'):
            continue
        a, b = FILE_LAYER.get(obj, obj), FILE_LAYER.get(callee, callee)
        if a == b:
            continue
        if a not in ranks or b not in ranks:
            print(f'{obj}.c -> {callee}.c ({sym}): a file the order does not name')
            bad += 1
        elif ranks[b] > ranks[a] and not (a == 'btree' and b == 'space' and sym in LOOP):
            print(f'{obj}.c -> {callee}.c ({sym}): against the order')
            bad += 1
print(f'{len(ranks)} layers, {sum(map(len, used.values()))} symbols used, {bad} calls against the order')
sys.exit(1 if bad else 0)
