#!/bin/sh
# fuzz/run.sh TARGET SECONDS [libFuzzer options...]
#
# Builds the targets (fuzz/build.sh) and runs one of fuzz_file, fuzz_ops,
# fuzz_dump, fuzz_lock for SECONDS, one process (the machine is shared).
# Long runs: nice -n 19 fuzz/run.sh fuzz_ops 14400.  Extra options go to
# libFuzzer, e.g. -runs=12000000 to stop after that many executions.
#
#   build-fuzz/corpus/TARGET      the growing corpus (seeded from fuzz/corpus/TARGET, kept between runs)
#   build-fuzz/artifacts/TARGET/  crash-*, leak-*, timeout-*, oom-* inputs
#   build-fuzz/logs/TARGET.log    libFuzzer's output (FUZZ_LOG=FILE: elsewhere)
#
# Both cores: start it twice with -runs=N/2 and a FUZZ_LOG for the second;
# each process picks up what the other adds to the corpus (libFuzzer's -reload).
#
# A finding: fix it, then copy the input to fuzz/regress/TARGET/ (a name
# saying what it was) so that test_fuzz_replay replays it in every
# `meson test` from then on.  Replay one input: build-fuzz/TARGET FILE.
# Exit status: 0 when the run ended without a finding.
set -eu
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: fuzz/run.sh fuzz_file|fuzz_ops|fuzz_dump|fuzz_lock SECONDS [libFuzzer options]" >&2; exit 2; }
t=$1
secs=$2
shift 2
case $t in
fuzz_file) maxlen=200000 ;; # seeds reach 128 KiB (16 KiB pages)
fuzz_ops) maxlen=512 ;; # about 100 operations: ~1 ms a run (fuzz_ops.c, "What one input may cost")
fuzz_dump) maxlen=8192 ;;
fuzz_lock) maxlen=16384 ;;
*) echo "unknown target $t" >&2; exit 2 ;;
esac
out=${FUZZ_OUT:-build-fuzz}
fuzz/build.sh "$out" >/dev/null
mkdir -p "$out/corpus/$t" "$out/artifacts/$t" "$out/logs"
dict=""
[ -f "fuzz/$t.dict" ] && dict="-dict=fuzz/$t.dict"
log=${FUZZ_LOG:-$out/logs/$t.log} # FUZZ_LOG: a second process on the same corpus needs its own
echo "fuzz/run.sh: $t for ${secs}s (log: $log)"
set +e
# The allocator keeps freed memory instead of returning it to the kernel, and
# its quarantine (of freed blocks, to catch use after free) is 32 MB, not 256:
# each return was a madvise and a TLB flush on both cores, and the runs spent
# a third of their time there (perf); a corpus replays 28-30 % faster.
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1:allocator_release_to_os_interval_ms=-1:quarantine_size_mb=32} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
"$out/$t" "$out/corpus/$t" "fuzz/corpus/$t" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2560 \
    -max_len="$maxlen" -artifact_prefix="$out/artifacts/$t/" -print_final_stats=1 $dict "$@" >"$log" 2>&1
rc=$?
set -e
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
corp=$(grep -o 'corp: [0-9]*/[0-9]*[a-zA-Z]*' "$log" | tail -n 1)
# "Done N runs in S second(s)": the real duration (a -runs=N limit may end it early)
took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
rate=""
[ -n "$execs" ] && [ -n "$took" ] && [ "$took" -gt 0 ] && rate=", $((execs / took)) exec/s"
echo "fuzz/run.sh: $t: ${execs:-?} executions in ${took:-?}s$rate, $cov, $corp, exit $rc"
if [ $rc -ne 0 ]; then
    grep -m 5 -E 'ERROR|runtime error|fuzz check failed|Test unit written' "$log" >&2 || true
    echo "fuzz/run.sh: $t found something: see $log and $out/artifacts/$t/" >&2
fi
exit $rc
