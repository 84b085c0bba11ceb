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

fuzz_all() { # each fuzz target for KEEL_FUZZ_SECONDS, one after the other (fuzz/README.md)
    secs=${KEEL_FUZZ_SECONDS:-60}
    [ "$secs" -gt 0 ] || return 0
    PKGS="$PKGS $FUZZ_PKGS"
    install_missing
    for t in fuzz_file fuzz_ops fuzz_dump fuzz_lock; do
        fuzz/run.sh "$t" "$secs"
    done
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
