# SPDX-License-Identifier: MIT
# Sourced first by the fault tests that run `nestquant launch -- nestquant
# serve` as root: where the binaries are, and the helpers they share.
#
# Sets NQ and TOOLS; defines skip MSG (exit 77), fail MSG (prints the tail
# of every log in $TMP, exit 1), wait_for FILE PATTERN TENTHS and
# serve_started, which waits for serve's ready line in $TMP/serve.out and
# sets SPID, CG (its memory cgroup) and PSI (its memory.pressure file, empty
# when none) from the server's environment.

O=${O:-build}
NQ=${NESTQUANT:-${NQ_BUILD:-$O}/nestquant}
case $NQ in /*) ;; *) NQ=$(pwd)/$NQ ;; esac
TOOLS=${NQ_TOOLS:-$(dirname "$NQ")/tests/tools}

skip() { echo "$1"; exit 77; }
fail() {
	echo "FAIL: $*"
	for f in "$TMP"/*.err "$TMP"/*.jsonl "$TMP"/*.out; do
		[ -f "$f" ] && sed "s|^|  $(basename "$f"): |" "$f" | tail -n 12
	done
	exit 1
}

# wait_for FILE PATTERN TENTHS: until a line of FILE matches.
wait_for() {
	t=0
	until grep -q "$2" "$1" 2>/dev/null; do
		[ $t -lt "$3" ] || return 1
		sleep 0.1
		t=$((t + 1))
	done
}

serve_started() {
	wait_for "$TMP/serve.out" '"event":"ready"' 100 || fail "serve under launch did not start"
	SPID=$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' "$TMP/serve.out")
	CG=$(tr '\0' '\n' <"/proc/$SPID/environ" | sed -n 's/^NQ_CGROUP=//p')
	PSI=$(tr '\0' '\n' <"/proc/$SPID/environ" | sed -n 's/^NQ_PSI_PATH=//p')
	[ -d "$CG" ] || fail "no cgroup for serve ($CG)"
}
