#!/bin/sh
# `nestquant monitor` end to end, as an operator and two client processes use it:
# load (idempotent, pins 0600), two `monitor events` processes each receiving the
# memcg reclaim events of a 64 MiB memory cgroup, persistent file watch counting
# evictions, unprivileged users refused (0600) or admitted (--group), unload.
# Exit 0 pass, 77 skip (last line says why), other = fail.
set -u

O=${O:-build}
NQ=${NESTQUANT:-${NQ_BUILD:-$O}/nestquant}
PIN=/sys/fs/bpf/nqtest-cli-$$
PIN2=/sys/fs/bpf/nqtest-cli-group-$$
TMP=$(mktemp -d /var/tmp/nqtest-monitor-cli.XXXXXX)
CG=
BG=

skip() { echo "$1"; exit 77; }
fail() { echo "FAIL: $*"; [ -f "$TMP/log" ] && tail -n 20 "$TMP/log"; exit 1; }

cleanup() {
	for p in $BG; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	"$NQ" monitor unload --pin-dir "$PIN" >/dev/null 2>&1
	"$NQ" monitor unload --pin-dir "$PIN2" >/dev/null 2>&1
	[ -n "$CG" ] && rmdir "$CG" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

[ "$(id -u)" -eq 0 ] || skip "needs root (loads BPF programs, makes a memory cgroup)"
[ -x "$NQ" ] || fail "no nestquant binary at $NQ"

# ---- load, idempotent, modes ------------------------------------------------
out=$("$NQ" monitor load --pin-dir "$PIN" 2>&1); rc=$?
if [ $rc -ne 0 ]; then
	case $out in
	*"loading the BPF programs"*|*"not a bpf filesystem"*|*tracefs*|*perf_event_open*)
		skip "BPF monitor cannot load here: $out" ;;
	esac
	fail "load: $out"
fi
echo "$out" | grep -q "loaded and pinned" || fail "load said: $out"
out=$("$NQ" monitor load --pin-dir "$PIN" 2>&1) || fail "second load failed: $out"
echo "$out" | grep -q "already loaded" || fail "second load said: $out"
[ "$(stat -c %a "$PIN")" = 700 ] || fail "pin dir mode $(stat -c %a "$PIN"), want 700"
for f in "$PIN"/*; do
	[ "$(stat -c %a "$f")" = 600 ] || fail "$f mode $(stat -c %a "$f"), want 600"
done
"$NQ" monitor status --pin-dir "$PIN" --json >"$TMP/status.json" || fail "status --json"
grep -q '"programs_attached":4' "$TMP/status.json" || fail "status: $(cat "$TMP/status.json")"

# ---- privilege messages -----------------------------------------------------
# A copy `nobody` can execute, wherever the build folder is.
NQX=$TMP/bin/nestquant
mkdir -p "$TMP/bin" && cp "$NQ" "$NQX" && chmod 755 "$TMP" "$TMP/bin" "$NQX" || fail "copying $NQ"
asnobody() { setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"; }
asnobody "$NQX" --help >/dev/null 2>&1 || fail "nobody cannot run $NQX"
out=$(asnobody "$NQX" monitor load --pin-dir "$PIN.x" 2>&1) && fail "nobody could load"
echo "$out" | grep -q "CAP_BPF" || fail "unprivileged load message: $out"
out=$(asnobody "$NQX" monitor events --pin-dir "$PIN" --global --timeout 1 2>&1) &&
	fail "nobody could open a 0600 monitor"
echo "$out" | grep -q "permission denied" || fail "unprivileged client message: $out"
echo "$out" | grep -q -- "--group" || fail "message does not say how to allow it: $out"

# ---- a memory cgroup and two client processes --------------------------------
if [ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ]; then
	CG=/sys/fs/cgroup/memory/nqtest-cli-$$
	mkdir "$CG" && echo $((64 << 20)) >"$CG/memory.limit_in_bytes" || fail "cgroup v1 setup"
elif [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw memory /sys/fs/cgroup/cgroup.controllers; then
	CG=/sys/fs/cgroup/nqtest-cli-$$
	mkdir "$CG" && echo $((64 << 20)) >"$CG/memory.max" || fail "cgroup v2 setup"
else
	skip "no memory cgroup controller (v1 or v2)"
fi
cgid=$(stat -c %i "$CG")
big=$TMP/big.bin
dd if=/dev/zero of="$big" bs=1M count=192 conv=fsync status=none || fail "writing $big"
dd if="$big" iflag=nocache count=0 status=none	# out of the cache: reads charge the cgroup

for c in a b; do
	"$NQ" monitor events --pin-dir "$PIN" --cgroup "$CG" --min-interval-us 0 --timeout 30 \
		>"$TMP/$c.json" 2>"$TMP/$c.err" &
	BG="$BG $!"
done
for i in $(seq 50); do
	grep -q listening "$TMP/a.err" 2>/dev/null && grep -q listening "$TMP/b.err" 2>/dev/null && break
	sleep 0.1
done
grep -q listening "$TMP/a.err" && grep -q listening "$TMP/b.err" || fail "clients did not start: $(cat "$TMP"/*.err)"
sh -c "echo \$\$ >'$CG/cgroup.procs' && exec cat '$big' >/dev/null" || fail "reader in $CG failed"
sleep 0.3
"$NQ" monitor status --pin-dir "$PIN" >"$TMP/log"
for p in $BG; do kill -INT "$p"; done
wait; BG=
for c in a b; do
	n=$(grep -c '"type":"memcg_reclaim"' "$TMP/$c.json")
	[ "$n" -gt 0 ] || fail "client $c got no memcg_reclaim event"
	grep '"type":"memcg_reclaim"' "$TMP/$c.json" | grep -v "\"cgroup_id\":$cgid," &&
		fail "client $c: event attributed to another cgroup than $cgid"
	echo "client $c: $n memcg_reclaim events for cgroup $cgid"
done
# Both clients got the same records (same kernel timestamps).
cut -d, -f2 "$TMP/a.json" >"$TMP/a.ts"; cut -d, -f2 "$TMP/b.json" >"$TMP/b.ts"
cmp -s "$TMP/a.ts" "$TMP/b.ts" || fail "the two clients received different events"
grep -q "delivered $n dropped 0" "$TMP/log" || fail "status while running: $(cat "$TMP/log")"
"$NQ" monitor status --pin-dir "$PIN" >"$TMP/log"
grep -q "$CG" "$TMP/log" && fail "cgroup still watched after its clients exited"
grep -q "clients: 0" "$TMP/log" || fail "client slots not released"

# ---- persistent watches --------------------------------------------------------
"$NQ" monitor watch-file --pin-dir "$PIN" "$big" >/dev/null || fail "watch-file"
"$NQ" monitor watch-cgroup --pin-dir "$PIN" "$CG" >/dev/null || fail "watch-cgroup"
cat "$big" >/dev/null
dd if="$big" iflag=nocache count=0 status=none
"$NQ" monitor status --pin-dir "$PIN" --json >"$TMP/status.json"
pages=$(sed -n 's/.*"pages_evicted":\([0-9]*\).*/\1/p' "$TMP/status.json")
[ "${pages:-0}" -gt 0 ] || fail "no evicted pages counted for $big: $(cat "$TMP/status.json")"
echo "watched file: $pages pages evicted counted"
grep -q '"persist":true' "$TMP/status.json" || fail "persistent watch missing"
"$NQ" monitor unwatch-file --pin-dir "$PIN" "$big" >/dev/null || fail "unwatch-file"
"$NQ" monitor unwatch-cgroup --pin-dir "$PIN" "$CG" >/dev/null || fail "unwatch-cgroup"
"$NQ" monitor status --pin-dir "$PIN" --json | grep -q '"cgroups":\[\],"files":\[\]' ||
	fail "watches left after unwatch"

# ---- group mode: an unprivileged member is a client ------------------------------
"$NQ" monitor load --pin-dir "$PIN2" --group nogroup >/dev/null || fail "load --group"
[ "$(stat -c '%a %G' "$PIN2")" = "750 nogroup" ] || fail "group pin dir: $(stat -c '%a %G' "$PIN2")"
[ "$(stat -c '%a %G' "$PIN2/ring00")" = "660 nogroup" ] || fail "group ring mode"
out=$(asnobody "$NQX" monitor events --pin-dir "$PIN2" --cgroup "$CG" --timeout 0.5 2>&1) ||
	fail "group member refused: $out"
echo "$out" | grep -q listening || fail "group member: $out"
"$NQ" monitor unload --pin-dir "$PIN2" >/dev/null || fail "unload group monitor"

# ---- unload ----------------------------------------------------------------------
out=$("$NQ" monitor unload --pin-dir "$PIN" 2>&1) || fail "unload: $out"
[ ! -e "$PIN" ] || fail "$PIN still exists after unload"
"$NQ" monitor status --pin-dir "$PIN" >/dev/null; rc=$?
[ $rc -eq 3 ] || fail "status after unload exit $rc, want 3"
out=$("$NQ" monitor unload --pin-dir "$PIN" 2>&1) || fail "second unload: $out"
echo "$out" | grep -q "not loaded" || fail "second unload said: $out"
echo "monitor-cli: all checks passed"
