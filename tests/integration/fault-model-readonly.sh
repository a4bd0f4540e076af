#!/bin/sh
# The runtime never writes the model file.  The model is made 0444 and, where
# the file system supports it, immutable (chattr +i); then `switch status`
# down and up, `switch bench` cycles with every page-in and drop method, and
# a `serve` at each level answering queries.  Checked: every command
# succeeds, the server's descriptors and mappings of the model are read-only
# (/proc/PID/fdinfo flags, /proc/PID/maps permissions), and the file's mtime,
# ctime and sha256 are unchanged.
# Exit 0 pass, 77 skip (last line says why), other = fail.
set -u

O=${O:-build}
NQ=${NESTQUANT:-${NQ_BUILD:-$O}/nestquant}
case $NQ in /*) ;; *) NQ=$(pwd)/$NQ ;; esac
MODEL=${NQ_FAULT_MODEL:-models/resnet-small.onnx}
TMP=$(mktemp -d /var/tmp/nqtest-fault-readonly.XXXXXX)
M=$TMP/m.nq
SERVER=
IMM=

skip() { echo "$1"; exit 77; }
fail() { echo "FAIL: $*"; [ -f "$TMP/serve.err" ] && tail -n 5 "$TMP/serve.err"; exit 1; }
cleanup() {
	[ -z "$SERVER" ] || kill -KILL "$SERVER" 2>/dev/null
	[ -n "$IMM" ] && chattr -i "$M" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

[ -x "$NQ" ] || fail "no nestquant binary at $NQ"
[ -f "$MODEL" ] || skip "no $MODEL (make models)"
"$NQ" convert "$MODEL" -o "$M" --calib none --calib-count 16 >/dev/null 2>"$TMP/err" ||
	fail "convert: $(cat "$TMP/err")"
chmod 0444 "$M" || fail "chmod"
[ "$(id -u)" -eq 0 ] && command -v chattr >/dev/null 2>&1 && chattr +i "$M" 2>/dev/null && IMM=1
sleep 0.02	# a write would move mtime past this
stamp() { stat -c '%Y.%y %Z.%z' "$M"; sha256sum <"$M"; }
before=$(stamp)

for lv in part full part full; do
	"$NQ" switch status "$M" --level $lv --json >/dev/null 2>"$TMP/err" ||
		fail "switch status --level $lv: $(cat "$TMP/err")"
done
for p in populate willneed read pread; do
	for d in dontneed pageout unmap; do
		"$NQ" switch bench "$M" --nq-only --cycles 2 --pagein $p --drop $d >/dev/null 2>"$TMP/err" ||
			fail "switch bench --pagein $p --drop $d: $(cat "$TMP/err")"
	done
done

# serve at each level; inspect its descriptors and mappings of the model.
for lv in part full; do
	S=$TMP/s.sock
	"$NQ" serve "$M" --socket "$S" --signal none --level $lv >"$TMP/ready.out" 2>"$TMP/serve.err" &
	SERVER=$!
	t=0
	until grep -q '"event":"ready"' "$TMP/ready.out" 2>/dev/null; do
		kill -0 $SERVER 2>/dev/null || fail "serve --level $lv did not start"
		sleep 0.05
		t=$((t + 1))
		[ $t -lt 200 ] || fail "serve not ready after 10 s"
	done
	if "$NQ" query --socket "$S" --data fashion-mnist:test:0-3 >"$TMP/q.out" 2>"$TMP/q.err"; then
		[ "$(grep -c '"top"' "$TMP/q.out")" -eq 4 ] || fail "answers: $(cat "$TMP/q.out")"
	else
		"$NQ" query --socket "$S" --status >/dev/null 2>"$TMP/q.err" || fail "query: $(cat "$TMP/q.err")"
	fi
	nfd=0
	for fd in /proc/$SERVER/fd/*; do
		[ "$(readlink "$fd")" = "$M" ] || continue
		nfd=$((nfd + 1))
		flags=$(awk '$1 == "flags:" { print $2 }' "/proc/$SERVER/fdinfo/${fd##*/}")
		[ $((0$flags & 3)) -eq 0 ] || fail "serve holds $M open with flags $flags (not O_RDONLY)"
	done
	[ $nfd -ge 1 ] || fail "serve holds no descriptor of $M"
	grep -F " $M" "/proc/$SERVER/maps" | awk '{ print $2 }' | grep -q w &&
		fail "serve maps $M writable: $(grep -F " $M" "/proc/$SERVER/maps")"
	kill -TERM $SERVER
	wait $SERVER || fail "serve exited $? on SIGTERM"
	SERVER=
done

after=$(stamp)
[ "$before" = "$after" ] || fail "model changed: before '$before' after '$after'"
echo "fault-model-readonly: ok (0444${IMM:+ and immutable}; mtime, ctime, sha256 unchanged)"
