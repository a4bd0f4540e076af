#!/bin/sh
# Run one libFuzzer target for a while and report executions and crashes.
#
#   tests/fuzz/run.sh FUZZER SECONDS WORKDIR SEEDDIR...
#
# New inputs go to WORKDIR/corpus (the seed folders are only read), findings
# to WORKDIR/artifacts; tests/fuzz/<target>.dict, when present, is passed as
# libFuzzer's dictionary.  Exit 0 when nothing crashed.
set -u
bin=$1 secs=$2 work=$3
shift 3
name=$(basename "$bin")
mkdir -p "$work/corpus" "$work/artifacts"
log=$work/fuzz.log
# A dictionary of the format's keywords, when the target has one.
dict=$(dirname "$0")/${name#fuzz_}.dict
[ -f "$dict" ] && set -- -dict="$dict" "$@"
start=$(date +%s)
"$bin" -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
	-artifact_prefix="$work/artifacts/" "$work/corpus" "$@" >"$log" 2>&1
rc=$?
secs=$(( $(date +%s) - start ))
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
crashes=$(find "$work/artifacts" -type f | wc -l)
corpus=$(find "$work/corpus" -type f | wc -l)
eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
edges=$(sed -n 's/.*(\([0-9]*\) inline 8-bit counters).*/\1/p' "$log" | head -n 1)
echo "$name: ${execs:-0} executions in $secs s (${eps:-0}/s), $crashes crashes, ${cov:-cov: ?} of ${edges:-?} edges, corpus $corpus inputs, peak RSS ${rss:-?} MB (exit $rc; log $log)"
if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
	grep -E 'ERROR|SUMMARY|runtime error' "$log" | head -n 20
	find "$work/artifacts" -type f | head -n 5
	exit 1
fi
