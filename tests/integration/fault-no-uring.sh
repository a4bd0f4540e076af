#!/bin/sh
# Fault: io_uring unavailable (kernel.io_uring_disabled=2). Switching must
# fall back to plain madvise/pread, say so, and still switch both ways with
# every page-in method; `nestquant run` must give the same top-5 at each
# level as with io_uring. The old sysctl value is restored on every exit.
# While this runs, io_uring is off for the whole machine: run it alone
# (make check runs the suites one after the other).
# Exit 0 pass, 77 skip (last line says why), other = fail.
set -u

O=${O:-build}
NQ=${NESTQUANT:-${NQ_BUILD:-$O}/nestquant}
MODEL=${NQ_FAULT_MODEL:-models/resnet-small.onnx}
SYSCTL=/proc/sys/kernel/io_uring_disabled
TMP=$(mktemp -d /var/tmp/nqtest-fault-no-uring.XXXXXX)
OLD=

skip() { echo "$1"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }
restore() { [ -n "$OLD" ] && echo "$OLD" >"$SYSCTL"; }
cleanup() {
	restore
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

[ -x "$NQ" ] || fail "no nestquant binary at $NQ"
command -v jq >/dev/null 2>&1 || skip "jq is not installed (needed to check the JSON)"
[ -f "$MODEL" ] || skip "no $MODEL (make models)"
[ -f "$SYSCTL" ] || skip "no $SYSCTL (kernel older than 6.6)"
[ "$(id -u)" -eq 0 ] || skip "needs root (sets $SYSCTL)"

"$NQ" convert "$MODEL" -o "$TMP/m.nq" --calib none --calib-count 16 >/dev/null 2>"$TMP/err" ||
	fail "convert: $(cat "$TMP/err")"
N=${NQ_FAULT_ITEMS:-3}
runs() {
	for lv in 6 8; do
		i=0
		while [ $i -lt "$N" ]; do
			"$NQ" run "$TMP/m.nq" --data fashion-mnist:$i --level $lv --json 2>"$TMP/err" ||
				return 1
			i=$((i + 1))
		done
	done
}
if ! runs >"$TMP/top.uring"; then
	grep -qi "fashion" "$TMP/err" && skip "Fashion-MNIST test set not available: $(cat "$TMP/err")"
	fail "run with io_uring: $(cat "$TMP/err")"
fi
io=$("$NQ" switch status "$TMP/m.nq" --level part --json | jq -r .io) || fail "switch status"
[ "$io" = io_uring ] || skip "io_uring is not in use even when enabled: $io"

OLD=$(cat "$SYSCTL")
echo 2 >"$SYSCTL" || skip "cannot write $SYSCTL"

# status says which path it took and why; down and up both work.
for lv in part full; do
	j=$("$NQ" switch status "$TMP/m.nq" --level $lv --json 2>"$TMP/err") ||
		fail "switch status --level $lv without io_uring: $(cat "$TMP/err")"
	echo "$j" | jq -e '.io | startswith("plain madvise/pread") and contains("io_uring_disabled")' >/dev/null ||
		fail "status does not report the fallback: $(echo "$j" | jq -c .io)"
	if [ $lv = full ]; then want='[.regions[] | .mapped == .bytes] | all'
	else want='.regions[0].mapped == .regions[0].bytes and ([.regions[1:][] | .mapped + .usable] | add) == 0'
	fi
	echo "$j" | jq -e "$want" >/dev/null || fail "level $lv: residency wrong: $j"
done
# Switch cycles (down, up cold, up warm) with each page-in method.
for m in populate willneed read pread; do
	"$NQ" switch bench "$TMP/m.nq" --nq-only --cycles 3 --pagein $m >"$TMP/b.json" 2>"$TMP/err" ||
		fail "switch bench --pagein $m without io_uring: $(cat "$TMP/err")"
	jq -e '(.io | startswith("plain madvise/pread")) and .cold_check_failures == 0
		and .nq_bytes_read_per_cycle == .residual_bytes
		and .nq_bytes_released_per_down == .residual_bytes' "$TMP/b.json" >/dev/null ||
		fail "switch bench --pagein $m: $(head -c 600 "$TMP/b.json")"
done
runs >"$TMP/top.plain" || fail "run without io_uring: $(cat "$TMP/err")"
restore
OLD=
cmp -s "$TMP/top.uring" "$TMP/top.plain" ||
	fail "top-5 differ without io_uring: $(diff "$TMP/top.uring" "$TMP/top.plain" | head -n 4)"
[ "$(wc -l <"$TMP/top.plain")" -eq $((2 * N)) ] || fail "expected $((2 * N)) answers"
echo "fault-no-uring: ok (io: $(echo "$j" | jq -r .io))"
