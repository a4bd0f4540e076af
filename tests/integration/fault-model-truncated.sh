#!/bin/sh
# Fault: the model file changed under a running `nestquant serve`.
#  1. Replaced (a new file renamed over the path, as `convert -o` and
#     package managers do): the server keeps the old inode mapped and must
#     go on answering, the same answers as before.
#  2. Truncated in place (truncate -s 4096): every mapped plane past 4 KiB
#     is gone and the next read of one raises SIGBUS.  The server catches it
#     (the fault address is inside the model mapping), says so on stderr,
#     removes its socket and exits with status 3; dying of the signal, a
#     hang or a silent exit fails.  A server that survives also passes.
# Exit 0 pass, 77 skip (last line says why), other = fail.
set -u

O=${O:-build}
NQ=${NESTQUANT:-${NQ_BUILD:-$O}/nestquant}
case $NQ in /*) ;; *) NQ=$(pwd)/$NQ ;; esac
MODEL=${NQ_FAULT_MODEL:-models/resnet-small.onnx}
TMP=$(mktemp -d /var/tmp/nqtest-fault-truncated.XXXXXX)
M=$TMP/m.nq
S=$TMP/s.sock
SERVER=

skip() { echo "$1"; exit 77; }
fail() { echo "FAIL: $*"; [ -f "$TMP/serve.err" ] && tail -n 5 "$TMP/serve.err"; exit 1; }
cleanup() {
	[ -z "$SERVER" ] || kill -KILL "$SERVER" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

[ -x "$NQ" ] || fail "no nestquant binary at $NQ"
[ -f "$MODEL" ] || skip "no $MODEL (make models)"
"$NQ" convert "$MODEL" -o "$M" --calib none --calib-count 16 >/dev/null 2>"$TMP/err" ||
	fail "convert: $(cat "$TMP/err")"
"$NQ" run "$M" --data fashion-mnist:0 >/dev/null 2>&1 || skip "Fashion-MNIST test set not available"

start() {
	"$NQ" serve "$M" --socket "$S" --signal none >"$TMP/ready.out" 2>"$TMP/serve.err" &
	SERVER=$!
	t=0
	until grep -q '"event":"ready"' "$TMP/ready.out" 2>/dev/null; do
		kill -0 $SERVER 2>/dev/null || fail "serve did not start"
		sleep 0.05
		t=$((t + 1))
		[ $t -lt 200 ] || fail "serve not ready after 10 s"
	done
}
ask() { "$NQ" query --socket "$S" --data fashion-mnist:test:0-3 2>"$TMP/q.err" | sed 's/"seq":[0-9]*,//; s/,"latency_us":[0-9]*//'; }

# ---- 1. replaced -------------------------------------------------------------
start
ask >"$TMP/a0" || fail "query: $(cat "$TMP/q.err")"
[ "$(grep -c '"ok":true' "$TMP/a0")" -eq 4 ] || fail "answers: $(cat "$TMP/a0")"
head -c "$(stat -c %s "$M")" /dev/zero >"$TMP/new.nq" && mv "$TMP/new.nq" "$M" || fail "replace"
ask >"$TMP/a1" || fail "query after the replace: $(cat "$TMP/q.err")"
cmp -s "$TMP/a0" "$TMP/a1" || fail "answers changed after the file was replaced: $(diff "$TMP/a0" "$TMP/a1" | head -n 4)"
kill -TERM $SERVER; wait $SERVER || fail "serve exited $? on SIGTERM"
SERVER=

# ---- 2. truncated ----------------------------------------------------------------
"$NQ" convert "$MODEL" -o "$M" --calib none --calib-count 16 >/dev/null 2>&1 || fail "convert"
start
ask >"$TMP/a0" || fail "query: $(cat "$TMP/q.err")"
truncate -s 4096 "$M" || fail "truncate"
ask >"$TMP/a1"
sleep 0.3
if kill -0 $SERVER 2>/dev/null; then
	"$NQ" query --socket "$S" --status >/dev/null 2>&1 || fail "server alive but not answering"
	kill -TERM $SERVER; wait $SERVER
	SERVER=
	echo "fault-model-truncated: ok (replaced: served on; truncated: survived: $(head -c 200 "$TMP/a1"))"
	exit 0
fi
wait $SERVER
rc=$?
SERVER=
[ $rc -eq 3 ] || fail "serve exited with status $rc after the truncation (expected 3: model changed)"
grep -q "was truncated or overwritten in place" "$TMP/serve.err" ||
	fail "no clear message on stderr: $(tail -n 2 "$TMP/serve.err")"
[ ! -e "$S" ] || fail "the socket $S was left behind"
echo "fault-model-truncated: ok (replaced: served on; truncated: exit 3 with '$(tail -n 1 "$TMP/serve.err" | cut -c1-80)...')"
