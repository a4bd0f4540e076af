#!/bin/sh
# Fault: the BPF monitor unloaded while clients listen, as root, with a real
# memory cgroup.
#  1. `nestquant launch --signal auto -- nestquant serve M.nq` with the
#     monitor loaded (the server's autoswitch is on bpf).  `monitor unload`:
#     within a few checks (every 500 ms) the policy log has a "source" line
#     saying "BPF monitor unloaded (...); falling back to PSI (...)" with
#     source psi; the server keeps answering, every answer right for the
#     level it reports; pressure after the unload (a file reader thrashing
#     inside the cgroup's limit) is still acted on: a down decision whose
#     cause is a PSI trigger; `query --status` names psi.  `monitor load`
#     again: a "loaded again" line, source bpf, and status names bpf.  After serve exits the cgroup is no longer watched.
#  2. `--signal bpf` (explicit) through the same controller (`nestquant
#     pressure`): after the unload no fallback ("--signal bpf was asked for,
#     so no fallback"), source none, the process keeps running; a reload
#     re-attaches it.
# Exit 0 pass, 77 skip (last line says why), other = fail.
set -u

. "$(dirname "$0")/fault-lib.sh"
TMP=$(mktemp -d /var/tmp/nqtest-fault-monitor.XXXXXX)
PIN=/sys/fs/bpf/nqtest-fault-monitor-$$
LAUNCH=
PRESS=
notes=

cleanup() {
	touch "$TMP/stop" 2>/dev/null
	for p in $LAUNCH $PRESS; do kill -TERM "$p" 2>/dev/null; done
	wait 2>/dev/null
	"$NQ" monitor unload --pin-dir "$PIN" >/dev/null 2>&1
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

[ "$(id -u)" -eq 0 ] || skip "needs root (loads the BPF monitor, creates memory cgroups)"
[ -x "$NQ" ] || fail "no nestquant binary at $NQ"
[ -x "$TOOLS/write-mlp-nq" ] || fail "no test tools in $TOOLS (make check-build)"
grep -qw memory /proc/cgroups || skip "the kernel has no memory cgroup controller"
[ -e /proc/pressure/memory ] || skip "no PSI (/proc/pressure/memory missing): nothing to fall back to"
out=$("$NQ" monitor load --pin-dir "$PIN" 2>&1) || skip "BPF monitor cannot load here: $out"

. "$(dirname "$0")/served-answers.sh"

# unload_seen LOG WHO: unload the monitor; set `line` to LOG's first
# "source" line, which must come within 3 s.
unload_seen() {
	"$NQ" monitor unload --pin-dir "$PIN" >/dev/null || fail "$2: unload"
	wait_for "$1" '"event":"source"' 30 || fail "$2: no source line within 3 s of the unload"
	line=$(grep '"event":"source"' "$1" | head -n 1)
}

# ---- 1. serve under launch, auto ------------------------------------------------
# Only events move it down (usage never exceeds 100 %); PSI: 10 ms of stall
# per 2 s window (a window unprivileged triggers may use too).
printf 'high=100%%\nlow=100%%\nhold=60s\nmin_interval=100ms\nsample=100ms\npsi_some=10ms\npsi_window=2s\n' \
	>"$TMP/policy"
S=$TMP/s.sock
LOG=$TMP/decisions.jsonl
"$NQ" launch --memory-max 48M --pin-dir "$PIN" --signal auto --policy "$TMP/policy" \
	--policy-log "$LOG" -- "$NQ" serve "$M" --socket "$S" --threads 1 \
	>"$TMP/serve.out" 2>"$TMP/serve.err" &
LAUNCH=$!
serve_started
grep -q '"event":"start".*"source":"bpf"' "$LOG" || fail "serve's autoswitch is not on bpf"
query_ok before

unload_seen "$LOG" "serve attached"
echo "$line" | grep -q '"source":"psi"' || fail "source after the unload is not psi: $line"
echo "$line" | grep -q '"message":"BPF monitor unloaded (pin [^)]*ring[0-9]* is gone); falling back to PSI (' ||
	fail "the line does not name the loss and PSI: $line"
echo "ok: $(echo "$line" | sed 's/.*"message":"\([^"]*\)".*/\1/')"
kill -0 "$SPID" 2>/dev/null || fail "serve died after the unload"
query_ok after-unload

# Pressure after the unload: a 96 MiB file read over and over inside the
# 48 MiB cgroup; PSI must report the refault stalls and the policy go down.
# The reader joins serve's memory cgroup and, on v1, the companion cgroup2
# whose memory.pressure the PSI source watches (NQ_PSI_PATH).
PSICG=
[ -n "$PSI" ] && PSICG=$(dirname "$PSI")
sh -c 'echo $$ >"$1/cgroup.procs" || exit 1
	[ -z "$2" ] || echo $$ >"$2/cgroup.procs" || exit 1
	f=$3/big
	dd if=/dev/zero of="$f" bs=1M count=96 2>/dev/null
	end=$(($(date +%s) + 40))
	while [ ! -e "$3/stop" ] && [ "$(date +%s)" -lt $end ]; do cat "$f" >/dev/null; done
	rm -f "$f"' reader "$CG" "$PSICG" "$TMP" &
READER=$!
if wait_for "$LOG" '"event":"switch".*"source":"psi","cause":"psi_[a-z]*","direction":"down"' 400; then
	down=$(grep '"direction":"down"' "$LOG" | head -n 1)
	echo "ok: pressure after the unload acted on through PSI: $(echo "$down" |
		sed 's/.*"cause":"\([^"]*\)".*"from":\([0-9]*\),"to":\([0-9]*\).*/\1, level \2 -> \3/')"
else
	fail "no PSI-driven down decision within 40 s of pressure after the unload"
fi
touch "$TMP/stop"
wait $READER
query_ok under-psi
status=$("$NQ" query --socket "$S" --status) || fail "status: $status"
echo "$status" | grep -q '"level":0,' || fail "serve is not at level 0 after the PSI down: $status"
echo "$status" | grep -q '"autoswitch":{"source":"psi"' ||
	fail "serve's status does not name PSI as the source in force: $status"

# The monitor comes back: the server re-attaches to it.
"$NQ" monitor load --pin-dir "$PIN" >/dev/null || fail "reload"
wait_for "$LOG" 'BPF monitor loaded again' 30 || fail "no re-attach within 3 s of the reload"
grep 'BPF monitor loaded again' "$LOG" | grep -q '"source":"bpf"' ||
	fail "re-attach line without source bpf: $(grep 'loaded again' "$LOG")"
"$NQ" monitor status --pin-dir "$PIN" >"$TMP/status.out"
grep -q "watched cgroups: [1-9]" "$TMP/status.out" ||
	fail "the re-attached server watches no cgroup: $(cat "$TMP/status.out")"
query_ok after-reload
status=$("$NQ" query --socket "$S" --status) || fail "status: $status"
echo "$status" | grep -q '"autoswitch":{"source":"bpf"' ||
	fail "serve's status does not name BPF as the source after the reload: $status"
kill -TERM "$LAUNCH"
wait "$LAUNCH"
rc=$?
LAUNCH=
[ $rc -eq 0 ] || fail "serve (or its launcher) exited $rc after the unload/reload"
"$NQ" monitor status --pin-dir "$PIN" >"$TMP/status.out"
grep -q "watched cgroups: 0" "$TMP/status.out" ||
	fail "cgroup still watched after serve exited: $(cat "$TMP/status.out")"
echo "ok: serve re-attached to the reloaded monitor, answers right throughout"

# ---- 2. explicit --signal bpf: no fallback, re-attach -------------------------------
CG2=$(dirname "$CG")/nqtest-fault-monitor-$$
mkdir "$CG2" || fail "cannot make $CG2"
"$NQ" pressure --signal bpf --pin-dir "$PIN" --cgroup "$CG2" --duration 30 \
	--log "$TMP/explicit.jsonl" >"$TMP/explicit.out" 2>"$TMP/explicit.err" &
PRESS=$!
wait_for "$TMP/explicit.jsonl" '"event":"start".*"source":"bpf"' 50 || fail "explicit bpf did not start"
unload_seen "$TMP/explicit.jsonl" explicit
echo "$line" | grep -q '"source":"none"' || fail "explicit bpf fell back to something: $line"
echo "$line" | grep -q 'BPF monitor unloaded (.*); --signal bpf was asked for, so no fallback' ||
	fail "explicit: message: $line"
sleep 1
kill -0 $PRESS 2>/dev/null || fail "explicit bpf client died after the unload"
"$NQ" monitor load --pin-dir "$PIN" >/dev/null || fail "reload 2"
wait_for "$TMP/explicit.jsonl" 'BPF monitor loaded again.*' 30 || fail "explicit: no re-attach"
grep 'loaded again' "$TMP/explicit.jsonl" | grep -q '"source":"bpf"' || fail "explicit: re-attach not bpf"
kill -TERM $PRESS
wait $PRESS
rc=$?
PRESS=
[ $rc -eq 0 ] || fail "pressure --signal bpf exited $rc"
rmdir "$CG2"
echo "ok: explicit bpf: no fallback, kept running, re-attached after the reload"
echo "fault-monitor-unloaded: all passed$notes"
