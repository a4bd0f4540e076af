#!/bin/sh
# `nestquant launch` end to end as root: CMD runs in a fresh memory cgroup with
# the right limit and environment, the cgroup (and its PSI twin) is gone
# afterwards, exit status / signals / OOM kills are passed on and reported,
# SIGTERM to the launcher reaches CMD, leftovers are killed, errors are clear.
# Exit 0 pass, 77 skip (last line says why), other = fail.
set -u

O=${O:-build}
NQ=${NESTQUANT:-${NQ_BUILD:-$O}/nestquant}
TMP=$(mktemp -d /var/tmp/nqtest-launch-basic.XXXXXX)
NAME=nqtest-launch-$$

skip() { echo "$1"; exit 77; }
fail() { echo "FAIL: $*"; for f in "$TMP"/*.err; do [ -f "$f" ] && sed "s|^|  $(basename "$f"): |" "$f"; done; exit 1; }
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT INT TERM

[ "$(id -u)" -eq 0 ] || skip "needs root (creates memory cgroups)"
[ -x "$NQ" ] || fail "no nestquant binary at $NQ"
grep -qw memory /proc/cgroups || skip "the kernel has no memory cgroup controller"

# ---- a command sees its cgroup, limit and configuration ---------------------
printf 'hold=1s\nmin_interval=100ms\n' >"$TMP/policy"
"$NQ" launch --memory-max 48M --memory-high 40M --name "$NAME" --policy "$TMP/policy" \
	--signal psi --policy-log "$TMP/decisions.jsonl" --no-monitor -- \
	sh -c 'cat /proc/self/cgroup; env | grep "^NQ_" | sort; echo "limit=$(cat "$NQ_CGROUP/memory.max" 2>/dev/null || cat "$NQ_CGROUP/memory.limit_in_bytes")"' \
	>"$TMP/out" 2>"$TMP/1.err" || fail "launch exited $?"

CGDIR=$(sed -n 's/^NQ_CGROUP=//p' "$TMP/out")
VER=$(sed -n 's/^NQ_CGROUP_VERSION=//p' "$TMP/out")
[ -n "$CGDIR" ] || fail "no NQ_CGROUP in CMD's environment: $(cat "$TMP/out")"
case $CGDIR in */"$NAME") ;; *) fail "cgroup $CGDIR is not named $NAME" ;; esac
if [ "$VER" = 1 ]; then
	rel=${CGDIR#*/sys/fs/cgroup/memory}
	grep -Eq "^[0-9]+:([a-z_,]*,)?memory(,[a-z_,]*)?:$rel\$" "$TMP/out" ||
		fail "CMD is not in v1 memory cgroup $rel: $(grep memory "$TMP/out")"
	grep -q "soft_limit_in_bytes" "$TMP/1.err" || fail "no note that v1 has no memory.high"
else
	grep -q "^0::.*/$NAME\$" "$TMP/out" || fail "CMD is not in v2 cgroup $NAME"
fi
grep -qx "limit=$((48 * 1024 * 1024))" "$TMP/out" ||
	fail "limit inside: $(grep limit= "$TMP/out"), want $((48 * 1024 * 1024))"
grep -qx "NQ_MEMORY_MAX=$((48 * 1024 * 1024))" "$TMP/out" || fail "NQ_MEMORY_MAX wrong"
grep -qx "NQ_MEMORY_HIGH=$((40 * 1024 * 1024))" "$TMP/out" || fail "NQ_MEMORY_HIGH wrong"
grep -qx "NQ_SIGNAL=psi" "$TMP/out" || fail "NQ_SIGNAL not passed"
grep -qx "NQ_POLICY=$TMP/policy" "$TMP/out" || fail "NQ_POLICY not passed as an absolute path"
grep -qx "NQ_POLICY_LOG=$TMP/decisions.jsonl" "$TMP/out" || fail "NQ_POLICY_LOG not passed"
grep -qx "NQ_LAUNCH_NAME=$NAME" "$TMP/out" || fail "NQ_LAUNCH_NAME not passed"
[ ! -e "$CGDIR" ] || fail "cgroup $CGDIR still exists after CMD exited"
PSIDIR=$(sed -n 's/^NQ_PSI_PATH=//p' "$TMP/out")
if [ -n "$PSIDIR" ]; then
	[ ! -e "$(dirname "$PSIDIR")" ] || fail "PSI twin $(dirname "$PSIDIR") still exists"
	grep -q "^0::/.*$NAME\$" "$TMP/out" || fail "CMD is not in its cgroup2 PSI twin"
fi
echo "ok: CMD ran in $CGDIR (v$VER) with a 48 MiB limit; cgroup removed"

# ---- exit status, signals, OOM kill ----------------------------------------
"$NQ" launch -q --memory-max 16M -- sh -c 'exit 7' 2>"$TMP/2.err"
[ $? -eq 7 ] || fail "exit status 7 not passed through"
"$NQ" launch -q --memory-max 16M -- /nonexistent/cmd 2>"$TMP/3.err"
[ $? -eq 127 ] || fail "missing command: want exit 127"
grep -q "cannot run '/nonexistent/cmd': No such file or directory" "$TMP/3.err" ||
	fail "missing command message: $(cat "$TMP/3.err")"

# The shell itself grows past the limit: the cgroup's OOM killer takes it.
"$NQ" launch --memory-max 32M --no-monitor -- \
	sh -c 'x=$(head -c 200M /dev/zero | tr "\0" a); echo ${#x}' >/dev/null 2>"$TMP/4.err"
rc=$?
[ $rc -eq 137 ] || fail "OOM: exit $rc, want 137 (128 + SIGKILL)"
grep -q "was killed by signal 9 (KILL): the memory cgroup's OOM killer (oom_kill [1-9]" \
	"$TMP/4.err" || fail "OOM report: $(cat "$TMP/4.err")"
echo "ok: exit codes passed through; OOM kill reported: $(grep -o 'killed by.*' "$TMP/4.err")"

# ---- SIGTERM to the launcher reaches CMD; leftovers are killed -------------
"$NQ" launch -q --memory-max 16M --name "$NAME-sig" -- \
	sh -c 'trap "echo got-TERM; exit 3" TERM; sleep 600 & wait' >"$TMP/sig.out" 2>"$TMP/5.err" &
lp=$!
for i in $(seq 50); do
	d=$(find /sys/fs/cgroup -maxdepth 6 -type d -name "$NAME-sig" 2>/dev/null | head -n 1)
	[ -n "$d" ] && [ "$(wc -l <"$d/cgroup.procs")" -ge 2 ] && break
	sleep 0.1
done
[ -n "$d" ] || fail "launched cgroup $NAME-sig never appeared"
kill -TERM $lp
wait $lp
rc=$?
[ $rc -eq 3 ] || fail "after SIGTERM: exit $rc, want 3 (CMD's trap)"
grep -q got-TERM "$TMP/sig.out" || fail "CMD did not get SIGTERM"
[ ! -e "$d" ] || fail "cgroup $d left behind (the orphaned sleep was not killed?)"
echo "ok: SIGTERM forwarded, orphaned sleep killed, cgroup removed"

# ---- clear errors -----------------------------------------------------------
out=$("$NQ" launch --memory-max 10X -- true 2>&1) && fail "bad size accepted"
echo "$out" | grep -q "unknown unit" || fail "bad size message: $out"
out=$("$NQ" launch -- true 2>&1) && fail "missing --memory-max accepted"
echo "$out" | grep -q "memory-max is required" || fail "no --memory-max message: $out"
out=$("$NQ" launch --memory-max 8M --memory-high 9M -- true 2>&1) && fail "high > max accepted"
out=$("$NQ" launch --memory-max 8M --signal smoke -- true 2>&1) && fail "bad signal accepted"
echo "$out" | grep -q "unknown signal source 'smoke'" || fail "bad signal message: $out"
out=$(NQ_MONITOR_PIN_DIR=/sys/fs/bpf/nqtest-none-$$ "$NQ" launch --memory-max 8M --signal bpf -- true 2>&1)
[ $? -eq 125 ] || fail "--signal bpf without a monitor: want exit 125"
echo "$out" | grep -q "the BPF monitor is not loaded (/sys/fs/bpf/nqtest-none-$$ missing" ||
	fail "--signal bpf message: $out"
printf 'hold=forever\n' >"$TMP/bad.policy"
out=$("$NQ" launch --memory-max 8M --policy "$TMP/bad.policy" -- true 2>&1)
[ $? -eq 125 ] || fail "bad policy file: want exit 125"
echo "$out" | grep -q "bad.policy: line 1: bad value 'forever' for hold" || fail "policy message: $out"
out=$("$NQ" launch --memory-max 8M --parent /nonexistent -- true 2>&1) && fail "bad parent accepted"
echo "$out" | grep -q "/nonexistent" || fail "bad parent message: $out"
# An unprivileged user is told which path it may not create, and why.
NQX=$TMP/bin/nestquant
mkdir -p "$TMP/bin" && cp "$NQ" "$NQX" && chmod 755 "$TMP" "$TMP/bin" "$NQX"
if command -v setpriv >/dev/null; then
	out=$(setpriv --reuid=65534 --regid=65534 --clear-groups -- "$NQX" launch \
		--memory-max 8M --name "$NAME-nobody" -- true 2>&1) && fail "nobody could launch"
	echo "$out" | grep -q "cannot create cgroup .*$NAME-nobody: Permission denied (run as root" ||
		fail "unprivileged message: $out"
	echo "ok: unprivileged: $out"
fi
echo "launch-basic: all passed"
