#!/bin/sh
# fuzz/build.sh [OUTDIR] — builds the libFuzzer targets (default: build-fuzz/).
#
# Compiles lib/*.c, tools/dumpfmt.c and the targets directly with clang,
# AddressSanitizer + UndefinedBehaviorSanitizer (every UB report aborts) and
# libFuzzer; no meson involved, so the top-level build stays as it is.
# Objects are rebuilt when their source or any header is newer.
#
#   OUTDIR/fuzz_file fuzz_ops fuzz_dump fuzz_lock   the targets
#   OUTDIR/make_corpus                             writes fuzz/corpus/ (no sanitizers)
#
# Environment: CC (default clang), FUZZ_CFLAGS (extra flags).
set -eu
cd "$(dirname "$0")/.."
out=${1:-build-fuzz}
CC=${CC:-clang}
TARGETS="fuzz_file fuzz_ops fuzz_dump fuzz_lock"
mkdir -p "$out/obj" "$out/obj-plain"

XXH_CFLAGS=$(pkg-config --cflags libxxhash 2>/dev/null || true)
XXH_LIBS=$(pkg-config --libs libxxhash 2>/dev/null || echo -lxxhash)
BASE="-std=gnu11 -g -O2 -D_GNU_SOURCE -fno-omit-frame-pointer -Wall -Wextra -Iinclude -Ilib -Itools -Ifuzz $XXH_CFLAGS ${FUZZ_CFLAGS:-}"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=all"
LIBS="$XXH_LIBS -lpthread"
HEADERS="include/keel.h lib/*.h tools/dumpfmt.h fuzz/fuzz.h"

# stale OBJ SRC: is OBJ missing or older than SRC or a header?
stale() {
    [ -f "$1" ] || return 0
    for h in "$2" $HEADERS; do
        [ "$h" -nt "$1" ] && return 0
    done
    return 1
}

compile() { # DIR FLAGS... SRC: compiles SRC into DIR, prints the object
    dir=$1
    src=$2
    shift 2
    o="$dir/$(basename "$src" .c).o"
    if stale "$o" "$src"; then
        $CC $BASE "$@" -c "$src" -o "$o" >&2
    fi
    echo "$o"
}

# The library twice: with comparison tracing (-fsanitize-coverage=trace-cmp,
# part of fuzzer-no-link), and without it for fuzz_ops.  fuzz_ops's input
# is opcodes and selectors, never the keys, values or page fields that lib/
# compares, so those traces cannot guide its mutations; they were 30-40 %
# of its CPU time.  Edge coverage of lib/ and the comparisons of fuzz_ops.c
# itself stay.  The file, dump and lock targets compare input bytes directly
# and keep everything.
objs=""
objs_notc=""
mkdir -p "$out/obj-notc"
for f in lib/*.c tools/dumpfmt.c fuzz/common.c; do
    objs="$objs $(compile "$out/obj" "$f" $SAN -fsanitize=fuzzer-no-link)"
    objs_notc="$objs_notc $(compile "$out/obj-notc" "$f" $SAN -fsanitize=fuzzer-no-link -fno-sanitize-coverage=trace-cmp)"
done
for t in $TARGETS; do
    o=$(compile "$out/obj" "fuzz/$t.c" $SAN -fsanitize=fuzzer-no-link)
    lib=$objs
    [ "$t" = fuzz_ops ] && lib=$objs_notc
    newest=$(ls -t $lib "$o" | head -n 1)
    if [ ! -f "$out/$t" ] || [ "$newest" -nt "$out/$t" ]; then
        $CC $SAN -fsanitize=fuzzer $o $lib $LIBS -o "$out/$t"
    fi
done

# make_corpus: a plain build (it only writes files)
pobjs=""
for f in lib/*.c tools/dumpfmt.c fuzz/common.c fuzz/make_corpus.c; do
    pobjs="$pobjs $(compile "$out/obj-plain" "$f")"
done
$CC $pobjs $LIBS -o "$out/make_corpus"
echo "fuzz targets built in $out: $TARGETS"
