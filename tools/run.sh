#!/bin/sh
# tools/run.sh — one entry point for a fresh Debian 12 machine (root or sudo).
#
#   tools/run.sh demo    install what is missing, build, run the example round trip
#   tools/run.sh test    install what is missing, build, run the whole test suite,
#                        then again under AddressSanitizer + UndefinedBehaviorSanitizer
#
# Environment: KEEL_TEST_SCALE=N multiplies the randomized tests' iteration
# counts (default 1); KEEL_SEED=N changes their seed.
set -eu
cd "$(dirname "$0")/.."

PKGS="meson ninja-build gcc pkg-config libcmocka-dev libxxhash-dev lmdb-utils"

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
    ;;
*)
    echo "usage: tools/run.sh demo|test" >&2
    exit 2
    ;;
esac
