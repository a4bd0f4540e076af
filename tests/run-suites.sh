#!/bin/sh
# Run the Check suites and integration scripts given on the command line and
# print one summary line per suite, what was skipped and why, and a total.
#
#   tests/run-suites.sh CHECK_BIN... -- INTEGRATION_SCRIPT...
#
# Integration scripts follow the automake convention: exit 0 = pass, 77 = skip
# (the last line of output says why), anything else = fail (output shown).
set -u
O=${O:-build}
export NQ_SRCDIR=${NQ_SRCDIR:-$(pwd)}
export NQ_BUILD=${NQ_BUILD:-$O}
logdir=$O/test-logs
mkdir -p "$logdir"
fail=0 total_pass=0 total_fail=0 total_skip=0

line() { printf '%-28s %s\n' "$1" "$2"; }

while [ $# -gt 0 ] && [ "$1" != -- ]; do
	bin=$1; shift
	name=$(basename "$bin")
	skiplog=$logdir/$name.skips
	: >"$skiplog"
	NQ_SKIP_LOG=$skiplog "$bin" >"$logdir/$name.log" 2>&1
	rc=$?
	sum=$(grep -E '^[0-9]+%: Checks: ' "$logdir/$name.log" | tail -n 1)
	checks=$(echo "$sum" | sed -n 's/.*Checks: \([0-9]*\).*/\1/p')
	nfail=$(echo "$sum" | sed -n 's/.*Failures: \([0-9]*\).*/\1/p')
	nerr=$(echo "$sum" | sed -n 's/.*Errors: \([0-9]*\).*/\1/p')
	nskip=$(grep -c '^SKIP ' "$skiplog")
	if [ -z "$checks" ]; then
		line "$name" "FAILED to run (exit $rc)"
		sed 's/^/    /' "$logdir/$name.log" | tail -n 30
		fail=1 total_fail=$((total_fail + 1))
		continue
	fi
	bad=$((nfail + nerr))
	pass=$((checks - bad - nskip))
	total_pass=$((total_pass + pass)) total_fail=$((total_fail + bad)) total_skip=$((total_skip + nskip))
	line "$name" "$pass passed, $bad failed, $nskip skipped"
	sed 's/^SKIP /    skipped /' "$skiplog"
	if [ "$bad" -ne 0 ] || [ "$rc" -ne 0 ]; then
		grep -E ':[EF]:' "$logdir/$name.log" | sed 's/^/    /'
		fail=1
	fi
done
[ $# -gt 0 ] && shift

for script in "$@"; do
	name=$(basename "$script" .sh)
	"$script" >"$logdir/$name.log" 2>&1
	rc=$?
	case $rc in
	0) line "$name" "passed"; total_pass=$((total_pass + 1)) ;;
	77) line "$name" "skipped: $(tail -n 1 "$logdir/$name.log")"; total_skip=$((total_skip + 1)) ;;
	*) line "$name" "FAILED (exit $rc)"; sed 's/^/    /' "$logdir/$name.log" | tail -n 40
	   fail=1 total_fail=$((total_fail + 1)) ;;
	esac
done

echo "total: $total_pass passed, $total_fail failed, $total_skip skipped (logs in $logdir)"
exit $fail
