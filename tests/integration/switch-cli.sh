#!/bin/sh
# `nestquant switch`: status after a switch (JSON numbers that must agree
# with the file), graded budgets, clear errors for bad requests, and `hold`
# sharing one page cache between processes.
set -u
O=${NQ_BUILD:-${O:-build}}
NQ=$O/nestquant
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

command -v jq >/dev/null 2>&1 || { echo "jq is not installed (needed to check the JSON)"; exit 77; }
"$O/tests/tools/write-sample-nq" "$tmp/m.nq" --levels 4,6,8 || fail "write-sample-nq"

# Full: every region cached and mapped; down to 4 bits: the upper regions go.
j=$("$NQ" switch status "$tmp/m.nq" --level 8 --json) || fail "status --level 8 exited $?"
[ "$(echo "$j" | jq '.level')" = 2 ] || fail "level 8 is not level 2: $j"
[ "$(echo "$j" | jq '.bits')" = 8 ] || fail "bits: $j"
[ "$(echo "$j" | jq '[.regions[] | .mapped == .bytes] | all')" = true ] || fail "not all mapped: $j"
j=$("$NQ" switch status "$tmp/m.nq" --level 4 --json) || fail "status --level 4 exited $?"
[ "$(echo "$j" | jq '.level')" = 0 ] || fail "level 4: $j"
[ "$(echo "$j" | jq '[.regions[1:][] | .mapped + .usable] | add')" = 0 ] || fail "upper regions still there: $j"
[ "$(echo "$j" | jq '.switch.bytes_unmapped == ([.regions[1:][].bytes] | add)')" = true ] ||
	fail "unmapped bytes do not match the regions: $j"
[ "$(echo "$j" | jq '.switch.release_ns <= .switch.total_ns')" = true ] || fail "times: $j"

# A budget at the floor: every layer at level 0, nominal level unchanged.
floor=$(echo "$j" | jq '.floor')
j=$("$NQ" switch status "$tmp/m.nq" --budget "$floor" --json) || fail "status --budget exited $?"
[ "$(echo "$j" | jq '.level')" = 2 ] || fail "budget changed the level: $j"
[ "$(echo "$j" | jq '.layers_degraded == .layers')" = true ] || fail "budget at the floor: $j"
[ "$(echo "$j" | jq '.budget')" = "$floor" ] || fail "budget not reported: $j"

# Bad requests.
"$NQ" switch status "$tmp/m.nq" --budget $((floor - 1)) 2>"$tmp/err" && fail "budget below the floor accepted"
grep -q "below the always-resident floor of $floor bytes" "$tmp/err" || fail "budget message: $(cat "$tmp/err")"
"$NQ" switch status "$tmp/m.nq" --level 5 2>"$tmp/err" && fail "level 5 accepted"
grep -q "no such level" "$tmp/err" || fail "level message: $(cat "$tmp/err")"
"$NQ" switch status "$tmp/m.nq" --pagein fast 2>"$tmp/err" && fail "unknown method accepted"
grep -q "unknown method" "$tmp/err" || fail "method message: $(cat "$tmp/err")"
"$NQ" switch status "$tmp/m.nq" --no-uring --json | jq -e '.io | startswith("plain madvise/pread")' >/dev/null ||
	fail "--no-uring did not select the fallback"

# Two holders share the file's pages: each maps them, the cache holds one copy.
"$NQ" switch hold "$tmp/m.nq" --level 8 >"$tmp/h1" &
p1=$!
"$NQ" switch hold "$tmp/m.nq" --level 8 >"$tmp/h2" &
p2=$!
t=0
until grep -q ready "$tmp/h1" && grep -q ready "$tmp/h2"; do
	sleep 0.1
	t=$((t + 1))
	[ $t -lt 300 ] || { kill $p1 $p2; fail "hold never got ready"; }
done
grep -q "^ready $p1 level 2$" "$tmp/h1" || fail "hold output: $(cat "$tmp/h1")"
for p in $p1 $p2; do
	pss=$(awk '$1 == "Pss:" { print $2 }' "/proc/$p/smaps_rollup")
	rss=$(awk '$1 == "Rss:" { print $2 }' "/proc/$p/smaps_rollup")
	[ "$pss" -lt "$rss" ] || fail "process $p: PSS $pss kB is not below RSS $rss kB"
done
kill -TERM $p1 $p2
wait $p1 || fail "hold exited $? on SIGTERM"
wait $p2 || true
echo "switch-cli: ok"
