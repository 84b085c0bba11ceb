#!/bin/sh
# tools/run.sh — one entry point for a fresh Debian 12 machine (root or sudo).
#
#   tools/run.sh demo    install what is missing, build, run the example round trip
#   tools/run.sh test    install what is missing, build, run the whole test suite,
#                        then again under AddressSanitizer + UndefinedBehaviorSanitizer,
#                        then `tools/run.sh fuzz`
#   tools/run.sh fuzz    build the libFuzzer targets (fuzz/build.sh, clang) and run each
#                        for KEEL_FUZZ_SECONDS (default 60; 0 skips the fuzzing); their
#                        regression inputs replay in `meson test` (test_fuzz_replay)
#
# Environment: KEEL_TEST_SCALE=N multiplies the randomized tests' iteration
# counts (default 1); KEEL_SEED=N changes their seed.
set -eu
cd "$(dirname "$0")/.."

# liblmdb-dev: keel-bench compares with LMDB; lmdb-utils: test_cli's interoperability tests
# python3, binutils (nm): the layers test (tools/check-layers.py)
PKGS="meson ninja-build gcc pkg-config libcmocka-dev libxxhash-dev liblmdb-dev lmdb-utils python3 binutils"

FUZZ_PKGS="clang libclang-rt-14-dev" # clang 14 and its libFuzzer runtime (Debian 12)

# The Python binding (bindings/python, doc/python.md): build it into a venv
# that sees Debian's packages (PEP 668; pip offline, no build isolation) and
# run its pytest tests.  Debian's /usr/bin/python3, whatever is on PATH.
python_binding() {
    PKGS="$PKGS python3-dev python3-venv python3-mesonpy python3-pytest"
    install_missing
    rm -rf build-py/venv
    /usr/bin/python3 -m venv --system-site-packages build-py/venv
    build-py/venv/bin/pip install -q --no-build-isolation --no-index ./bindings/python
    (cd build-py && venv/bin/python -m pytest -q -p no:cacheprovider ../bindings/python/tests)
}

install_missing() {
    missing=""
    for p in $PKGS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "installing:$missing"
    $SUDO apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
}

build() { # build DIR [meson options...]
    dir=$1
    shift
    if [ ! -f "$dir/build.ninja" ]; then
        meson setup "$dir" "$@"
    fi
    ninja -C "$dir"
}

# Each fuzz target for KEEL_FUZZ_SECONDS, one after the other (fuzz/README.md).
# A finding is printed with the path of its input.  It fails the run only with
# KEEL_FUZZ_STRICT=1: a fresh random finding must not block landing other
# work, while every finding once kept in fuzz/regress/ fails `meson test`
# (test_fuzz_replay) for ever after.  See doc/testing.md.
fuzz_all() {
    secs=${KEEL_FUZZ_SECONDS:-60}
    [ "$secs" -gt 0 ] || return 0
    PKGS="$PKGS $FUZZ_PKGS"
    install_missing
    found=""
    for t in fuzz_file fuzz_ops fuzz_dump fuzz_lock; do
        fuzz/run.sh "$t" "$secs" || found="$found $t"
    done
    if [ -n "$found" ]; then
        echo "FUZZ FINDINGS in:$found (inputs under build-fuzz/artifacts/; fix and keep them in fuzz/regress/)" >&2
        [ "${KEEL_FUZZ_STRICT:-0}" = 1 ] && return 1
    fi
    return 0
}

# A shell session with the keel tool; stops at the first command that fails.
demo_session() {
    db=$1
    k=./build/tools/keel
    say() { printf '$ %s\n' "$*"; "$@"; }
    echo "--- the keel tool on $db"
    say $k put "$db" -s fruit apple red
    say $k put "$db" -s fruit banana yellow
    say $k put "$db" -s fruit cherry "dark red"
    say $k put "$db" -s session alice token-1 --ttl 3600
    say $k get "$db" -s fruit cherry
    say $k del "$db" -s fruit banana
    say $k incr "$db" visits 5
    say $k scan "$db" -s fruit
    say $k ttl "$db" -s session alice
    say $k dump -a -p -o "$db.txt" "$db"
    say $k load -f "$db.txt" "$db.copy"
    say $k scan "$db.copy" -s fruit
    say $k check "$db.copy"
    say $k stat "$db"
    [ "$($k get "$db" -s fruit banana 2>/dev/null)" = "" ] || { echo "banana should be gone" >&2; exit 1; }
    [ "$($k get "$db.copy" -s fruit apple)" = "red" ] || { echo "the loaded copy lost apple" >&2; exit 1; }
    echo "keel session OK: put, get, del, scan, dump | load, check, stat"
}

case "${1:-}" in
demo)
    install_missing
    build build
    db="${TMPDIR:-/tmp}/keel-demo-$$.db"
    ./build/tools/keel-example "$db"      # the C API: create, put, get, scan, delete, reopen
    rm -f "$db" "$db-lock"
    demo_session "$db"                    # the same round trip with the keel tool
    rm -f "$db" "$db-lock" "$db.copy" "$db.copy-lock" "$db.txt"
    ;;
test)
    install_missing
    build build
    # a build that found no cmocka has no tests, and an empty suite "passes"
    meson test -C build --list 2>/dev/null | grep -q test_model || { echo "no tests in build/: is libcmocka-dev installed?" >&2; exit 1; }
    meson test -C build --print-errorlogs
    build build-san -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
    meson test -C build-san --print-errorlogs
    python_binding
    fuzz_all
    ;;
fuzz)
    fuzz_all
    ;;
*)
    echo "usage: tools/run.sh demo|test|fuzz" >&2
    exit 2
    ;;
esac
