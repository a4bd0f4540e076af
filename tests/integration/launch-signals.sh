#!/bin/sh
# Pressure signals under `nestquant launch`, as root, with real memory cgroups:
#  1. auto selection names the active source and why each better one is not
#     available (kmod: no /dev/nestquant; bpf: monitor not loaded);
#  2. PSI: a trigger on the launched cgroup's memory.pressure fires when a
#     file reader thrashes inside a 32 MiB limit (skipped if PSI is absent);
#  3. BPF: with the monitor loaded, the launcher registers the cgroup, the
#     controller inside gets memcg-reclaim events (kernel timestamps) and the
#     policy logs down decisions while the reader runs and up decisions after
#     the hold time once it stops; the cgroup is unregistered at exit.
# Exit 0 pass, 77 skip (last line says why), other = fail.
set -u

O=${O:-build}
NQ=${NESTQUANT:-${NQ_BUILD:-$O}/nestquant}
case $NQ in /*) ;; *) NQ=$(pwd)/$NQ ;; esac
TMP=$(mktemp -d /var/tmp/nqtest-launch-signals.XXXXXX)
PIN=/sys/fs/bpf/nqtest-launch-$$
NOPIN=/sys/fs/bpf/nqtest-launch-none-$$
notes=

skip() { echo "$1"; exit 77; }
fail() { echo "FAIL: $*"; for f in "$TMP"/*.err "$TMP"/*.jsonl; do [ -f "$f" ] && sed "s|^|  $(basename "$f"): |" "$f" | tail -n 15; done; exit 1; }
cleanup() {
	"$NQ" monitor unload --pin-dir "$PIN" >/dev/null 2>&1
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

[ "$(id -u)" -eq 0 ] || skip "needs root (creates memory cgroups, loads BPF)"
[ -x "$NQ" ] || fail "no nestquant binary at $NQ"
grep -qw memory /proc/cgroups || skip "the kernel has no memory cgroup controller"

# A file bigger than the limit, written inside the cgroup (so its page cache
# is charged there) and read over and over: memcg reclaim and refault stalls.
# Runs until DIR/stop exists or SECONDS have passed (args: DIR SECONDS).
READER='f=$1/big; dd if=/dev/zero of=$f bs=1M count=96 2>/dev/null
	end=$(($(date +%s) + $2))
	while [ ! -e $1/stop ] && [ $(date +%s) -lt $end ]; do cat $f >/dev/null; done
	rm -f $f'

# ---- 1. auto selection and its reasons ------------------------------------
[ ! -e /dev/nestquant ] || notes="$notes (/dev/nestquant exists: kmod clause not checked)"
NQ_MONITOR_PIN_DIR=$NOPIN "$NQ" launch -q --memory-max 64M --signal auto -- \
	"$NQ" pressure --events --duration 0.2 >"$TMP/auto.out" 2>"$TMP/auto.err" ||
	fail "auto: exit $?"
start=$(grep '"event":"start"' "$TMP/auto.out")
[ -n "$start" ] || fail "auto: no start line: $(cat "$TMP/auto.out")"
if [ ! -e /dev/nestquant ]; then
	echo "$start" | grep -q 'kmod: nestquant.ko not loaded (/dev/nestquant missing)' ||
		fail "auto: no kmod reason: $start"
fi
echo "$start" | grep -q "bpf: monitor not loaded ($NOPIN missing; run \`nestquant monitor load\`)" ||
	fail "auto: no bpf reason: $start"
if [ -e /proc/pressure/memory ]; then
	echo "$start" | grep -q '"source":"psi"' || fail "auto did not fall back to psi: $start"
	echo "$start" | grep -q 'psi: active (/sys/fs/cgroup/[^ ]*memory.pressure' ||
		fail "psi is not on the launched cgroup's own memory.pressure: $start"
fi
echo "ok: auto: $(echo "$start" | sed 's/.*"selection":"\([^"]*\)".*/\1/')"

# An explicit source that cannot open is an error, not a silent fallback.
out=$(NQ_MONITOR_PIN_DIR=$NOPIN "$NQ" pressure --signal bpf --events --duration 0.1 2>&1) &&
	fail "--signal bpf without a monitor succeeded"
echo "$out" | grep -q "signal source bpf: monitor not loaded" || fail "explicit bpf: $out"

# ---- 2. PSI trigger fires under a memory hog --------------------------------
if [ ! -e /proc/pressure/memory ]; then
	notes="$notes (PSI part skipped: /proc/pressure/memory missing, kernel without PSI)"
else
	# 20 ms of stall per 2 s: the window unprivileged triggers may use too.
	printf 'psi_some=20ms\npsi_window=2s\n' >"$TMP/psi.policy"
	"$NQ" launch -q --memory-max 32M --signal psi --policy "$TMP/psi.policy" -- sh -c "
		\"$NQ\" pressure --events --count 1 --duration 30 >\"$TMP/psi.out\" & p=\$!
		sleep 0.3
		sh -c '$READER' reader \"$TMP\" 30 & r=\$!
		wait \$p; rc=\$?; touch \"$TMP/stop\"; wait \$r; exit \$rc" 2>"$TMP/psi.err" ||
		fail "psi: exit $?"
	rm -f "$TMP/stop"
	grep -q '"source":"psi"' "$TMP/psi.out" || fail "psi: not the psi source: $(cat "$TMP/psi.out")"
	ev=$(grep '"event":"pressure"' "$TMP/psi.out")
	echo "$ev" | grep -q '"cause":"psi_some"' || fail "psi trigger did not fire within 30 s"
	echo "ok: PSI trigger fired: $ev"
fi

# ---- 3. BPF events drive the policy --------------------------------------------
out=$("$NQ" monitor load --pin-dir "$PIN" 2>&1)
if [ $? -ne 0 ]; then
	notes="$notes (BPF part skipped: monitor cannot load here: $out)"
else
	# Only reclaim onset may move it (usage cannot exceed 100 % of the limit),
	# and the hog's leftover cache must not keep it down (low = 100 %).
	printf 'high=100%%\nlow=100%%\nhold=1s\nmin_interval=100ms\nsample=50ms\n' >"$TMP/bpf.policy"
	"$NQ" launch --memory-max 32M --pin-dir "$PIN" --policy "$TMP/bpf.policy" \
		--policy-log "$TMP/decisions.jsonl" -- sh -c "
		\"$NQ\" pressure --levels 3 --level-bytes 4M,6M,8M --duration 6 & p=\$!
		sleep 0.5
		for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
			grep -q '\"source\"' \"$TMP/decisions.jsonl\" 2>/dev/null && break; sleep 0.1
		done
		\"$NQ\" monitor status --pin-dir \"$PIN\" >\"$TMP/status.inside\"
		sh -c '$READER' reader \"$TMP\" 2
		wait \$p" 2>"$TMP/bpf.err" || fail "bpf: exit $?"
	grep -q "registered with the BPF monitor ($PIN)" "$TMP/bpf.err" || fail "not registered"
	grep -q "watched cgroups: [1-9]" "$TMP/status.inside" ||
		fail "monitor status inside shows no watched cgroup: $(cat "$TMP/status.inside")"
	log=$TMP/decisions.jsonl
	grep -q '"event":"start".*"source":"bpf"' "$log" || fail "controller did not use bpf"
	down=$(grep '"direction":"down"' "$log" | head -n 1)
	echo "$down" | grep -q '"cause":"memcg_reclaim"' || fail "no memcg_reclaim down decision"
	echo "$down" | grep -q '"kernel_time":true' || fail "down decision without kernel time"
	echo "$down" | grep -q '"from":2,"to":1' || fail "first down is not one step 2->1: $down"
	grep '"direction":"down"' "$log" | grep -q '"from":1,"to":0' || fail "no second step 1->0"
	grep -q '"cause":"hold_expired","direction":"up"' "$log" || fail "no up after the hold"
	# The up decision came at least the hold time after the last pressure.
	up=$(grep '"direction":"up"' "$log" | head -n 1)
	ev=$(echo "$up" | sed 's/.*"event_ns":\([0-9]*\).*/\1/')
	dec=$(echo "$up" | sed 's/.*"decided_ns":\([0-9]*\).*/\1/')
	[ $((dec - ev)) -ge 1000000000 ] || fail "up $((dec - ev)) ns after pressure, hold is 1 s"
	# Decisions never closer than min_interval (100 ms).
	prev=0
	for t in $(grep '"event":"switch"' "$log" | sed 's/.*"decided_ns":\([0-9]*\).*/\1/'); do
		[ $prev -eq 0 ] || [ $((t - prev)) -ge 100000000 ] ||
			fail "two decisions $((t - prev)) ns apart (min_interval 100 ms)"
		prev=$t
	done
	lat=$(echo "$down" | sed 's/.*"onset_to_done_ns":\([0-9]*\).*/\1/')
	"$NQ" monitor status --pin-dir "$PIN" >"$TMP/status.after"
	grep -q "watched cgroups: 0" "$TMP/status.after" ||
		fail "cgroup still watched after exit: $(cat "$TMP/status.after")"
	echo "ok: bpf: $(grep -c '"event":"switch"' "$log") decisions; first reclaim event ->" \
		"simulated switch done in $lat ns; unregistered at exit"
fi
echo "launch-signals: all passed$notes"
