#!/bin/sh
# Fault: BPF monitor unavailable, and unloaded while clients listen.
#  1. No monitor pinned: `--signal auto` falls back to PSI and its start
#     line says why bpf was not used; `--signal bpf` fails naming the
#     missing pin directory and the command that loads it.
#  2. Monitor loaded, two raw clients listening (`monitor events --cgroup`
#     and `pressure --signal bpf --events`), then `monitor unload`: neither
#     may crash or spin.  The kernel tells them nothing (their map fds keep
#     the ring alive), so each looks at the pins: `monitor events` ends
#     within ~1 s with exit 3 and a message naming the unload; `pressure`
#     (an explicit --signal bpf, so no fallback) prints a "source" line
#     saying the monitor is gone and runs on to its duration.  (serve and
#     launch under `--signal auto` fall back to PSI: fault-monitor-unloaded.sh.)
# Exit 0 pass, 77 skip (last line says why), other = fail.
set -u

O=${O:-build}
NQ=${NESTQUANT:-${NQ_BUILD:-$O}/nestquant}
PIN=/sys/fs/bpf/nqtest-fault-bpf-$$
TMP=$(mktemp -d /var/tmp/nqtest-fault-bpf.XXXXXX)
CG=
BG=

skip() { echo "$1"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }
cleanup() {
	for p in $BG; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	"$NQ" monitor unload --pin-dir "$PIN" >/dev/null 2>&1
	[ -n "$CG" ] && rmdir "$CG" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

[ -x "$NQ" ] || fail "no nestquant binary at $NQ"
[ "$(id -u)" -eq 0 ] || skip "needs root (loads the BPF monitor, makes a memory cgroup)"

# ---- 1. no monitor ---------------------------------------------------------
"$NQ" pressure --signal auto --pin-dir "$PIN" --events --count 1 --duration 1 \
	>"$TMP/auto.out" 2>"$TMP/auto.err"
rc=$?
if grep -q '"source":"psi"' "$TMP/auto.out"; then
	grep '"event":"start"' "$TMP/auto.out" | grep -q "bpf: monitor not loaded ($PIN missing" ||
		fail "auto did not say why bpf is unavailable: $(head -c 600 "$TMP/auto.out")"
	[ $rc -eq 0 ] || fail "pressure --signal auto exited $rc: $(cat "$TMP/auto.err")"
else
	grep -q "bpf: monitor not loaded ($PIN missing" "$TMP/auto.out" "$TMP/auto.err" ||
		fail "auto without PSI did not say why bpf is unavailable: $(cat "$TMP/auto.out" "$TMP/auto.err")"
	echo "note: PSI unavailable here too; auto chose: $(head -c 200 "$TMP/auto.out")"
fi
"$NQ" pressure --signal bpf --pin-dir "$PIN" --events --count 1 --duration 1 \
	>"$TMP/bpf.out" 2>"$TMP/bpf.err" && fail "--signal bpf without a monitor succeeded"
grep -q "monitor not loaded ($PIN missing; run \`nestquant monitor load\`)" "$TMP/bpf.err" ||
	fail "--signal bpf message: $(cat "$TMP/bpf.err")"

# ---- 2. unloaded under its clients -----------------------------------------
out=$("$NQ" monitor load --pin-dir "$PIN" 2>&1) || skip "BPF monitor cannot load here: $out"
if [ -d /sys/fs/cgroup/memory ] && [ ! -f /sys/fs/cgroup/cgroup.controllers ]; then
	CG=/sys/fs/cgroup/memory/nqtest-fault-bpf-$$
else
	CG=/sys/fs/cgroup/nqtest-fault-bpf-$$
fi
mkdir "$CG" || fail "cannot make $CG"

"$NQ" monitor events --pin-dir "$PIN" --cgroup "$CG" --timeout 6 >"$TMP/ev.out" 2>"$TMP/ev.err" &
EV=$!
"$NQ" pressure --signal bpf --pin-dir "$PIN" --cgroup "$CG" --events --duration 6 \
	>"$TMP/pr.out" 2>"$TMP/pr.err" &
PR=$!
BG="$EV $PR"
t=0
until grep -q listening "$TMP/ev.err" && grep -q '"source":"bpf"' "$TMP/pr.out"; do
	sleep 0.1
	t=$((t + 1))
	[ $t -lt 50 ] || fail "clients did not start: $(cat "$TMP/ev.err" "$TMP/pr.out" "$TMP/pr.err")"
done
"$NQ" monitor unload --pin-dir "$PIN" >/dev/null || fail "unload with clients attached"
[ -e "$PIN" ] && fail "$PIN still there after unload"
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
c0=$(ticks $PR)
sleep 2
kill -0 $PR 2>/dev/null || fail "pressure died after the unload: $(cat "$TMP/pr.err")"
c1=$(ticks $PR)
# 2 s of wall time is 200 ticks at USER_HZ 100; a spinning client burns ~all.
[ $((c1 - c0)) -lt 20 ] || fail "clients burnt $((c1 - c0)) ticks in 2 s after the unload (spinning)"
wait $EV; rc=$?
[ $rc -eq 3 ] || fail "monitor events exited $rc after the unload (want 3): $(cat "$TMP/ev.err")"
grep -q "unloaded" "$TMP/ev.err" || fail "monitor events did not say the monitor was unloaded: $(cat "$TMP/ev.err")"
wait $PR; rc=$?
[ $rc -eq 0 ] || fail "pressure exited $rc after the unload: $(cat "$TMP/pr.err")"
grep -q '"event":"source".*BPF monitor unloaded' "$TMP/pr.out" ||
	fail "pressure --events printed no source line for the unload: $(cat "$TMP/pr.out")"
BG=
echo "fault-bpf: ok (monitor events ended with exit 3 naming the unload; pressure reported it and ran on, $((c1 - c0)) ticks in 2 s)"
