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

PKGS="meson ninja-build gcc pkg-config libcmocka-dev libxxhash-dev lmdb-utils"

FUZZ_PKGS="clang libclang-rt-14-dev" # clang 14 and its libFuzzer runtime (Debian 12)

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

case "${1:-}" in
demo)
    install_missing
    build build
    db="${TMPDIR:-/tmp}/keel-demo-$$.db"
    ./build/tools/keel-example "$db"
    rm -f "$db" "$db-lock"
    ;;
test)
    install_missing
    build build
    meson test -C build --print-errorlogs
    build build-san -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
    meson test -C build-san --print-errorlogs
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
