#!/bin/sh
# `nestquant serve` and `nestquant query` without memory pressure:
#  1. the socket: mode 0600 (0660 with --group), an existing non-socket path
#     is refused, a second server on a live socket is refused, a stale socket
#     is replaced, SIGTERM removes it and exits 0;
#  2. answers: every answer's class, top-5 and probabilities equal
#     `nestquant run --level L` for the level the answer reports, under
#     --concurrency 4 against 2 worker threads; --level part serves level 0;
#  3. the protocol is strict: garbled and oversize requests get an error
#     answer and the connection is closed; a bad index gets an error and the
#     connection goes on; status reports the counters;
#  4. as root, an unprivileged user (nobody) is refused a 0600 socket with a
#     message saying why, and served through a 0660 socket of its group; an
#     unprivileged `serve --signal bpf` is refused cleanly by a root-only
#     monitor, and `--signal auto` says why it fell back.
# Exit 0 pass, 77 skip (last line says why), other = fail.
set -u

O=${O:-build}
NQ=${NESTQUANT:-${NQ_BUILD:-$O}/nestquant}
case $NQ in /*) ;; *) NQ=$(pwd)/$NQ ;; esac
MLP=$(dirname "$NQ")/tests/tools/write-mlp-nq
TMP=$(mktemp -d /var/tmp/nqtest-serve-protocol.XXXXXX)
PIN=/sys/fs/bpf/nqtest-serve-$$
SERVER=
notes=

skip() { echo "$1"; exit 77; }
fail() {
	echo "FAIL: $*"
	for f in "$TMP"/*.err; do [ -f "$f" ] && sed "s|^|  $(basename "$f"): |" "$f" | tail -n 8; done
	exit 1
}
stop_server() {
	[ -n "$SERVER" ] || return 0
	kill -TERM "$SERVER" 2>/dev/null
	wait "$SERVER"
	rc=$?
	SERVER=
	return $rc
}
cleanup() {
	[ -z "$SERVER" ] || kill -KILL "$SERVER" 2>/dev/null
	[ "$(id -u)" -ne 0 ] || "$NQ" monitor unload --pin-dir "$PIN" >/dev/null 2>&1
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

[ -x "$NQ" ] || fail "no nestquant binary at $NQ"
[ -x "$MLP" ] || fail "no $MLP (make check-build builds it)"
"$MLP" "$TMP/m.nq" --hidden 256 || fail "write-mlp-nq"

# start_server ARGS...: serve $TMP/m.nq, wait for the ready line.
start_server() {
	"$NQ" serve "$TMP/m.nq" "$@" >"$TMP/ready.out" 2>"$TMP/serve.err" &
	SERVER=$!
	for _ in $(seq 100); do
		grep -q '"event":"ready"' "$TMP/ready.out" 2>/dev/null && return 0
		kill -0 "$SERVER" 2>/dev/null || { wait "$SERVER"; SERVER=; return 1; }
		sleep 0.05
	done
	fail "serve not ready after 5 s"
}

S=$TMP/s.sock
# ---- 1. the socket ---------------------------------------------------------------
start_server --socket "$S" --signal none --threads 2 || fail "serve did not start"
[ "$(stat -c %a "$S")" = 600 ] || fail "socket mode $(stat -c %a "$S"), expected 600"
out=$("$NQ" serve "$TMP/m.nq" --socket "$S" --signal none 2>&1) && fail "second server started"
echo "$out" | grep -q "another server is listening there" || fail "second server: $out"
: >"$TMP/plain"
out=$("$NQ" serve "$TMP/m.nq" --socket "$TMP/plain" --signal none 2>&1) &&
	fail "serve replaced a regular file"
echo "$out" | grep -q "exists and is not a socket: refusing to replace it" || fail "plain: $out"
echo "ok: socket 0600, live socket and regular file refused"

# ---- 2. answers equal `nestquant run` at the level reported --------------------------
DATA=yes
"$NQ" run "$TMP/m.nq" --data fashion-mnist:0 --json >/dev/null 2>"$TMP/data.err" || DATA=
if [ -n "$DATA" ]; then
	scripts/expected-answers.sh "$NQ" "$TMP/m.nq" 8 >"$TMP/expect"
	[ "$(wc -l <"$TMP/expect")" -eq 16 ] || fail "expected answers: $(cat "$TMP/expect")"
	sum=$("$NQ" query --socket "$S" --data fashion-mnist:test:0-7 --count 64 --concurrency 4 \
		--expect "$TMP/expect" -q) || fail "query under concurrency: $sum"
	echo "$sum" | grep -q '"requests":64,"ok":64,"errors":0,"checked":64,"wrong":0' ||
		fail "concurrent answers: $sum"
	echo "$sum" | grep -q '"per_level":\[0,64,' || fail "not served at the full level: $sum"
	echo "ok: 64 answers from 4 connections equal nestquant run at level 1"
	# SIGINT ends a load early, as its end would: answered, logged, summarised.
	"$NQ" query --socket "$S" --data fashion-mnist:test:0-7 --duration 60 --rate 50 \
		--concurrency 2 --expect "$TMP/expect" --log "$TMP/load.jsonl" -q \
		>"$TMP/load.out" 2>"$TMP/load.err" &
	q=$!
	sleep 1
	kill -INT $q
	t0=$(date +%s)
	wait $q || fail "query stopped by SIGINT: exit $?: $(cat "$TMP/load.err")"
	[ $(( $(date +%s) - t0 )) -le 5 ] || fail "query took over 5 s to stop after SIGINT"
	n=$(sed -n 's/.*"requests":\([0-9]*\),"ok":\([0-9]*\),"errors":0,.*"wrong":0.*/\1 \2/p' "$TMP/load.out")
	set -- $n
	[ $# -eq 2 ] && [ "$1" -ge 10 ] && [ "$1" -le 200 ] && [ "$1" -eq "$2" ] ||
		fail "summary after SIGINT: $(cat "$TMP/load.out")"
	[ "$(grep -c '"ok":true' "$TMP/load.jsonl")" -eq "$1" ] ||
		fail "log after SIGINT: $(wc -l <"$TMP/load.jsonl") lines for $1 requests"
	echo "ok: SIGINT ended a 60 s load after $1 answers, every one logged and checked"
else
	notes="$notes (answer checks skipped: $(tail -n 1 "$TMP/data.err"))"
fi

# ---- 3. strict protocol ---------------------------------------------------------------
printf 'status\nnpy 99999999\nstatus\n' >"$TMP/oversize"
out=$("$NQ" query --socket "$S" --raw-request "$TMP/oversize")
[ "$(echo "$out" | wc -l)" -eq 2 ] || fail "oversize: connection not closed after the error: $out"
echo "$out" | sed -n 2p | grep -q '"ok":false,"error":"npy: 99999999 bytes declared, at most [0-9]* accepted"' ||
	fail "oversize: $out"
printf 'stat\001us\n' >"$TMP/garbled"
out=$("$NQ" query --socket "$S" --raw-request "$TMP/garbled")
echo "$out" | grep -q '"ok":false,"error":"header byte 4 is 0x01' || fail "garbled: $out"
head -c 300 /dev/zero | tr '\0' 'a' >"$TMP/long"
out=$("$NQ" query --socket "$S" --raw-request "$TMP/long")
echo "$out" | grep -q 'header line longer than 255 bytes' || fail "long header: $out"
printf 'npy 3\nabcstatus\n' >"$TMP/badnpy"
out=$("$NQ" query --socket "$S" --raw-request "$TMP/badnpy")
[ "$(echo "$out" | wc -l)" -eq 2 ] || fail "bad npy content must not close the connection: $out"
echo "$out" | head -n 1 | grep -q '"ok":false' || fail "bad npy accepted: $out"
if [ -n "$DATA" ]; then
	printf 'data fashion-mnist:test:10000\ndata fashion-mnist:test:3\n' >"$TMP/range"
	out=$("$NQ" query --socket "$S" --raw-request "$TMP/range")
	echo "$out" | head -n 1 | grep -q 'index 10000 out of range (the test split has 10000 images)' ||
		fail "out of range: $out"
	echo "$out" | sed -n 2p | grep -q '"ok":true,.*"label":' || fail "after a bad index: $out"
fi
out=$("$NQ" query --socket "$S" --status) || fail "status: $out"
echo "$out" | grep -q '"level":1,"bits":8,"levels":\[6,8\]' || fail "status: $out"
echo "$out" | grep -q '"autoswitch":null' || fail "--signal none but autoswitch on: $out"
echo "ok: oversize, garbled and long headers closed with an error; bad content answered"

stop_server || fail "serve exited $? on SIGTERM"
[ ! -e "$S" ] || fail "socket left behind after SIGTERM"
grep -q "stopping after" "$TMP/serve.err" || fail "no stop note"
# A stale socket (its server is gone) is replaced.
"$NQ" serve "$TMP/m.nq" --socket "$S" --signal none >/dev/null 2>&1 & pid=$!
sleep 0.5
kill -KILL $pid; wait $pid 2>/dev/null
[ -S "$S" ] || fail "no stale socket to test with"
start_server --socket "$S" --signal none --level part || fail "stale socket not replaced"
out=$("$NQ" query --socket "$S" --status)
echo "$out" | grep -q '"level":0,"bits":6' || fail "--level part: $out"
stop_server || fail "serve exited $?"
echo "ok: SIGTERM removes the socket, a stale one is replaced, --level part serves level 0"

# ---- 4. an unprivileged user --------------------------------------------------------------
if [ "$(id -u)" -ne 0 ] || ! id nobody >/dev/null 2>&1 || ! command -v setpriv >/dev/null; then
	notes="$notes (unprivileged part skipped: needs root, user nobody and setpriv)"
else
	chmod 755 "$TMP"
	chmod 644 "$TMP/m.nq"
	AS_NOBODY="setpriv --reuid=nobody --regid=nogroup --clear-groups --"
	start_server --socket "$S" --signal none || fail "serve"
	out=$($AS_NOBODY "$NQ" query --socket "$S" --status 2>&1); rc=$?
	[ $rc -eq 3 ] || fail "nobody on a 0600 root socket: exit $rc: $out"
	echo "$out" | grep -q "Permission denied (the socket's mode or group does not let this user in)" ||
		fail "refusal does not say why: $out"
	stop_server
	start_server --socket "$S" --signal none --group nogroup || fail "serve --group"
	[ "$(stat -c '%a %G' "$S")" = "660 nogroup" ] || fail "--group: $(stat -c '%a %G' "$S")"
	$AS_NOBODY "$NQ" query --socket "$S" --status >/dev/null 2>&1 || fail "nobody refused by a 0660 socket of its group"
	stop_server
	echo "ok: nobody refused by 0600 (saying why), served through 0660 --group nogroup"

	# --rt-priority: every inference thread SCHED_FIFO at N (policy 1 in
	# /proc/PID/task/TID/stat field 41, priority field 40), the switching
	# thread at N + 1, the main thread back to normal; refused unprivileged.
	start_server --socket "$S" --signal psi --rt-priority 3 || fail "serve --rt-priority 3"
	grep -q '"rt_priority":3' "$TMP/ready.out" || fail "ready line: $(cat "$TMP/ready.out")"
	pol=$(for t in /proc/$SERVER/task/*; do
		echo "$(cat "$t/comm") $(cut -d' ' -f40,41 "$t/stat")"
	done | sort | uniq -c | tr -s ' ' | tr '\n' ';')
	echo "$pol" | grep -q "^ 1 nestquant 0 0;" || fail "main thread not back to normal: $pol"
	[ "$(echo "$pol" | tr ';' '\n' | grep -c ' nq-serve-[0-9]* 3 1$')" -eq 2 ] ||
		fail "serve workers not SCHED_FIFO 3: $pol"
	if [ "$(nproc)" -gt 1 ]; then
		echo "$pol" | grep -q ' nq-pool-[0-9]* 3 1;' || fail "no SCHED_FIFO 3 pool thread: $pol"
		echo "$pol" | tr ';' '\n' | grep ' nq-pool-' | grep -vq ' 3 1$' &&
			fail "a session pool thread is not SCHED_FIFO 3: $pol"
	fi
	if grep -q "signal source psi" "$TMP/serve.err"; then
		echo "$pol" | grep -q " 1 nq-switch 4 1;" || fail "switching thread not SCHED_FIFO 4: $pol"
	else
		notes="$notes (no PSI here: switching thread priority not checked)"
	fi
	stop_server
	out=$($AS_NOBODY "$NQ" serve "$TMP/m.nq" --socket "$TMP/rt.sock" --signal none \
		--rt-priority 3 2>&1) && fail "unprivileged serve --rt-priority started"
	echo "$out" | grep -q "rt-priority 3: .*CAP_SYS_NICE or an RLIMIT_RTPRIO of at least 3 (this process has 0" ||
		fail "--rt-priority refusal does not say why: $out"
	[ ! -e "$TMP/rt.sock" ] || fail "refused serve left its socket"
	echo "ok: --rt-priority 3: workers and pool threads SCHED_FIFO 3, switching 4; nobody refused, saying why"

	if out=$("$NQ" monitor load --pin-dir "$PIN" 2>&1); then
		out=$(NQ_MONITOR_PIN_DIR=$PIN $AS_NOBODY "$NQ" serve "$TMP/m.nq" --socket "$TMP/n.sock" \
			--signal bpf 2>&1) && fail "unprivileged serve --signal bpf started on a 0600 monitor"
		echo "$out" | grep -q "nestquant serve: .*bpf" || fail "bpf refusal: $out"
		echo "$out" | grep -qi "permission\|not allowed\|EACCES\|EPERM" || fail "bpf refusal does not say why: $out"
		mkdir "$TMP/nobody" && chown nobody "$TMP/nobody"
		NQ_MONITOR_PIN_DIR=$PIN $AS_NOBODY "$NQ" serve "$TMP/m.nq" --socket "$TMP/nobody/n.sock" \
			--signal auto >"$TMP/auto.out" 2>"$TMP/auto.err" & pid=$!
		for _ in $(seq 100); do grep -q ready "$TMP/auto.out" 2>/dev/null && break; sleep 0.05; done
		grep -q '"event":"ready"' "$TMP/auto.out" || fail "unprivileged serve --signal auto did not start"
		kill -TERM $pid; wait $pid || fail "unprivileged serve exited $?"
		grep -q "switching on pressure, signal source [a-z]* — .*bpf: permission denied" "$TMP/auto.err" ||
			fail "auto as nobody does not say why bpf was not used: $(cat "$TMP/auto.err")"
		echo "ok: unprivileged: --signal bpf refused ($(echo "$out" | tail -n 1 | cut -c1-100)...);" \
			"auto: $(grep -o 'signal source [a-z]*' "$TMP/auto.err" | head -n 1)"
	else
		notes="$notes (monitor part skipped: $out)"
	fi
fi
# ---- 5. any program linked with the library switches under the launcher ------------------
if [ "$(id -u)" -eq 0 ] && grep -qw memory /proc/cgroups; then
	"$NQ" launch -q --memory-max 128M --no-monitor --policy-log "$TMP/env.jsonl" -- \
		"$NQ" run "$TMP/m.nq" --input tests/corpus/npy/f32-2x3.npy >/dev/null 2>&1
	grep -q '"event":"start".*"levels":2,"level":1' "$TMP/env.jsonl" 2>/dev/null ||
		fail "nestquant run under launch did not start autoswitch: $(cat "$TMP/env.jsonl" 2>/dev/null)"
	NQ_AUTOSWITCH=0 "$NQ" launch -q --memory-max 128M --no-monitor --policy-log "$TMP/off.jsonl" -- \
		"$NQ" run "$TMP/m.nq" --input tests/corpus/npy/f32-2x3.npy >/dev/null 2>&1
	[ ! -s "$TMP/off.jsonl" ] || fail "NQ_AUTOSWITCH=0 did not turn autoswitch off"
	echo "ok: a plain program under launch starts autoswitch from the environment; NQ_AUTOSWITCH=0 stops it"
fi
echo "serve-protocol: all passed$notes"
