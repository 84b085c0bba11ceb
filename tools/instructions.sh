#!/bin/sh
# Instruction counts (callgrind) of keel-bench's keel rows, one line per row:
# "<instructions> <row>".  Stable on a shared machine where wall times are
# not; compare two builds with the same N (doc/benchmarks.md).
#   tools/instructions.sh [BENCH-BINARY] [N] [ROW-SUBSTRING...]
set -eu
bench=${1:-build/tools/keel-bench}
n=${2:-20000}
[ $# -ge 2 ] && shift 2 || shift $#
dir=$(mktemp -d /dev/shm/keel-instr.XXXXXX)
trap 'rm -rf "$dir"' EXIT
if [ $# -eq 0 ]; then
    set -- "bulk load (random)" "individual commits" "batch commits" "random reads" "read txn per get" \
        "range reads" "full scan" "remove half" "bulk load (sorted)" "bulk load 4 KiB" "delete all" \
        "put with TTL" "purge expired" "bucket put, 1 per txn"
fi
first=1
for row in "$@"; do
    if [ $first = 1 ] && [ "$row" != "bulk load (random)" ]; then
        "$bench" -n "$n" -e keel -d "$dir" -w "bulk load (random)" >/dev/null # the file the read rows use
    fi
    first=0
    rm -f "$dir"/cg.*
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.%p" \
        "$bench" -n "$n" -e keel -d "$dir" -w "$row" >/dev/null 2>&1
    total=0
    for f in "$dir"/cg.*; do
        ir=$(sed -n 's/^summary: \([0-9]*\).*/\1/p' "$f")
        total=$((total + ${ir:-0}))
    done
    echo "$total $row"
done
