#!/bin/sh
# Run one libFuzzer target for a while and report executions and crashes.
#
#   tests/fuzz/run.sh FUZZER SECONDS WORKDIR SEEDDIR...
#
# New inputs go to WORKDIR/corpus (the seed folders are only read), findings
# to WORKDIR/artifacts.  Exit 0 when nothing crashed.
set -u
bin=$1 secs=$2 work=$3
shift 3
name=$(basename "$bin")
mkdir -p "$work/corpus" "$work/artifacts"
log=$work/fuzz.log
"$bin" -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
	-artifact_prefix="$work/artifacts/" "$work/corpus" "$@" >"$log" 2>&1
rc=$?
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
crashes=$(find "$work/artifacts" -type f | wc -l)
corpus=$(find "$work/corpus" -type f | wc -l)
cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
echo "$name: ${execs:-0} executions in $secs s, $crashes crashes, ${cov:-cov: ?} edges, corpus $corpus inputs (exit $rc; log $log)"
if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
	grep -E 'ERROR|SUMMARY|runtime error' "$log" | head -n 20
	find "$work/artifacts" -type f | head -n 5
	exit 1
fi
