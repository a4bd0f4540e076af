#!/bin/sh
# Fault: the memory cgroup of `nestquant launch -- nestquant serve` removed
# while serving, as root, with a real memory cgroup (and the BPF monitor
# when it loads here).
#  1. rmdir while serve is inside: the kernel refuses (EBUSY); serve goes on.
#  2. An operator moves serve out and removes the cgroup: within a few
#     checks (every 500 ms) the policy log has a "source" line "memory cgroup
#     ... was removed"; the launcher says the cgroup was removed while CMD
#     runs; the monitor watches no cgroup any more (serve's subscription and
#     the launcher's registration both dropped, by id); serve does not spin
#     and answers right for the level it reports.
#  3. SIGTERM: the launcher (and serve) exit 0, the launcher saying there was
#     nothing left to remove; nothing is left behind (cgroup, its cgroup2
#     companion, socket, monitor entries).
#  4. The launcher's own cleanup racing: CMD moves itself out, removes its
#     cgroup and exits at once; the launcher exits with CMD's status.
# Exit 0 pass, 77 skip (last line says why), other = fail.
set -u

. "$(dirname "$0")/fault-lib.sh"
TMP=$(mktemp -d /var/tmp/nqtest-fault-cgroup.XXXXXX)
PIN=/sys/fs/bpf/nqtest-fault-cgroup-$$
LAUNCH=
BPF=
notes=

cleanup() {
	[ -z "$LAUNCH" ] || kill -TERM "$LAUNCH" 2>/dev/null
	wait 2>/dev/null
	[ -z "$BPF" ] || "$NQ" monitor unload --pin-dir "$PIN" >/dev/null 2>&1
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

[ "$(id -u)" -eq 0 ] || skip "needs root (creates memory cgroups, loads BPF)"
[ -x "$NQ" ] || fail "no nestquant binary at $NQ"
[ -x "$TOOLS/write-mlp-nq" ] || fail "no test tools in $TOOLS (make check-build)"
grep -qw memory /proc/cgroups || skip "the kernel has no memory cgroup controller"
if out=$("$NQ" monitor load --pin-dir "$PIN" 2>&1); then
	BPF=1
else
	notes="$notes (BPF monitor unavailable, its part not checked: $out)"
fi

watched() { "$NQ" monitor status --pin-dir "$PIN" | sed -n 's/^watched cgroups: \([0-9]*\).*/\1/p'; }
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

. "$(dirname "$0")/served-answers.sh"

# ---- 1. rmdir while serve is inside ----------------------------------------------
S=$TMP/s.sock
LOG=$TMP/decisions.jsonl
"$NQ" launch --memory-max 64M --pin-dir "$PIN" --signal auto --policy-log "$LOG" -- \
	"$NQ" serve "$M" --socket "$S" --threads 1 >"$TMP/serve.out" 2>"$TMP/serve.err" &
LAUNCH=$!
serve_started
if [ -n "$BPF" ]; then
	grep -q '"event":"start".*"source":"bpf"' "$LOG" || fail "serve is not on bpf"
	[ "$(watched)" -ge 1 ] || fail "the cgroup is not watched by the monitor"
fi
query_ok before
err=$(rmdir "$CG" 2>&1) && fail "rmdir of a populated cgroup succeeded"
echo "$err" | grep -q "Device or resource busy" || fail "rmdir: $err"
kill -0 "$SPID" 2>/dev/null || fail "serve died"
echo "ok: rmdir with serve inside refused: $err"

# ---- 2. moved out and removed -------------------------------------------------------
PARENT=$(dirname "$CG")
for p in $(cat "$CG/cgroup.procs"); do echo "$p" >"$PARENT/cgroup.procs" || fail "moving $p out"; done
rmdir "$CG" || fail "rmdir of the emptied cgroup"
wait_for "$LOG" '"event":"source".*memory cgroup [^ ]* was removed' 30 ||
	fail "no log line within 3 s of the removal"
line=$(grep '"event":"source"' "$LOG" | grep 'was removed' | head -n 1)
echo "$line" | grep -q "memory cgroup $CG was removed (No such file or directory)" ||
	fail "line does not name the cgroup: $line"
wait_for "$TMP/serve.err" "memory cgroup $CG was removed by someone else while CMD runs" 30 ||
	fail "the launcher did not notice"
if [ -n "$BPF" ]; then
	echo "$line" | grep -q "dropped from the BPF monitor's watch list" || fail "bpf: $line"
	w=$(watched)
	[ "$w" = 0 ] || fail "$w cgroups still watched after the removal: $("$NQ" monitor status --pin-dir "$PIN")"
fi
c0=$(ticks "$SPID")
sleep 2
c1=$(ticks "$SPID")
[ $((c1 - c0)) -lt 20 ] || fail "serve burnt $((c1 - c0)) ticks in 2 s idle after the removal (spinning)"
query_ok after-removal
echo "ok: $(echo "$line" | sed 's/.*"message":"\([^"]*\)".*/\1/')"

# ---- 3. the launcher ends cleanly ---------------------------------------------------
kill -TERM "$LAUNCH"
wait "$LAUNCH"
rc=$?
LAUNCH=
[ $rc -eq 0 ] || fail "launch exited $rc after the removal"
grep -q "memory cgroup $CG was removed by someone else while CMD runs" "$TMP/serve.err" ||
	fail "no launcher message"
if grep -q "nestquant launch: .*\(rmdir\|unregistering\)" "$TMP/serve.err"; then
	fail "cleanup complained: $(grep 'nestquant launch' "$TMP/serve.err")"
fi
[ ! -e "$CG" ] || fail "$CG is back"
[ -z "$PSI" ] || [ ! -e "$(dirname "$PSI")" ] || fail "cgroup2 companion $(dirname "$PSI") left behind"
[ ! -e "$S" ] || fail "socket left behind"
[ -z "$BPF" ] || [ "$(watched)" = 0 ] || fail "monitor entries left behind"
echo "ok: launcher exited 0, nothing left behind"

# ---- 4. CMD removes its own cgroup and exits at once --------------------------------
"$NQ" launch --memory-max 64M --pin-dir "$PIN" -- sh -c '
	cg=$NQ_CGROUP
	echo $$ >"$(dirname "$cg")/cgroup.procs" && rmdir "$cg" && exit 7' \
	>"$TMP/race.out" 2>"$TMP/race.err"
rc=$?
[ $rc -eq 7 ] || fail "race: launch exited $rc, CMD's status was 7"
grep -q "was removed by someone else" "$TMP/race.err" || fail "race: no message"
if grep -q "nestquant launch: .*\(rmdir\|unregistering\)" "$TMP/race.err"; then
	fail "race: cleanup complained: $(cat "$TMP/race.err")"
fi
[ -z "$BPF" ] || [ "$(watched)" = 0 ] || fail "race: monitor entries left behind"
echo "ok: launcher's cleanup after CMD removed the cgroup: $(grep 'was removed' "$TMP/race.err")"
echo "fault-cgroup-removed: all passed$notes"
