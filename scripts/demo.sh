#!/bin/bash
# NestQuant's main job in one command (`make demo`; see docs/demo.md):
#
#   1. installs the Debian packages the demo needs (scripts/setup-deps.sh)
#   2. builds (make)
#   3. converts models/resnet-small.onnx into one nested 8|6 file, and into
#      standalone INT8 and INT6 files for the size comparison
#   4. evaluates both levels of the nested file on the Fashion-MNIST test set
#   5. loads the BPF pressure monitor (unless it is loaded already)
#   6. serves the model under a memory limit (`nestquant launch -- nestquant
#      serve`) with a steady stream of requests while a memory hog in the
#      same cgroup grows, holds and leaves; prints each switch as it happens
#   7. prints a summary (accuracy, sizes, switch latencies, answers) and draws
#      a timeline (PNG: memory use, level, events, answer latencies)
#
#   scripts/demo.sh [--quick] [--out DIR]
#
#   --quick     1,000 test images per level instead of 10,000, 128 calibration
#               images, one hog cycle (the smoke test; well under a minute)
#   --out DIR   where everything goes (default $O/demo)
#
# Environment: O (build folder, default build), NQ_MONITOR_PIN_DIR (bpffs pins,
# default /sys/fs/bpf/nestquant), NQ_DEMO_T0 (start time in ns since the epoch,
# set by `make demo` so the total includes the build), NQ_DEMO_BUILT=1 (skip
# the build step: make has just done it), NQ_DEMO_SIGNAL=psi (do not use the
# BPF monitor: show the PSI fallback).
#
# Needs root: it makes a memory cgroup and loads BPF programs.  Everything it
# starts is stopped on exit, also on Ctrl-C or an error: the server (and with it
# its cgroup), the load, the hog, the sampler; the monitor is unloaded only if
# this script loaded it.  Exit status 0 when the demo ran as described; 1 when
# a step failed (the message says which); 130 when interrupted.
set -u
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
O=${O:-build}
case $O in /*) ;; *) O=$ROOT/$O ;; esac
NQ=$O/nestquant
MEMHOG=$O/tests/tools/memhog
PIN=${NQ_MONITOR_PIN_DIR:-/sys/fs/bpf/nestquant}
ONNX=models/resnet-small.onnx
PY=/usr/bin/python3
QUICK=
OUT=

while [ $# -gt 0 ]; do
	case $1 in
	--quick) QUICK=1 ;;
	--out) OUT=${2:?--out needs a folder}; shift ;;
	-h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "demo: unknown option '$1' (see --help)" >&2; exit 2 ;;
	esac
	shift
done
OUT=${OUT:-$O/demo}
case $OUT in /*) ;; *) OUT=$ROOT/$OUT ;; esac

if [ -n "$QUICK" ]; then
	EVAL_N=1000 CALIB_N=128 CYCLES=1
else
	EVAL_N=10000 CALIB_N=512 CYCLES=2
fi
HOG_MIB=24		# anonymous memory the hog takes in the server's cgroup
HOG_STEP_MS=50		# it grows by 1 MiB every HOG_STEP_MS
HOG_HOLD=3		# seconds it holds the memory
HOG_PAUSE=4		# seconds between cycles (the policy's hold is 1 s)
RATE=50			# requests per second, two connections

# ---- output -------------------------------------------------------------------------
T_START=${NQ_DEMO_T0:-}
now_ns() { local t=$EPOCHREALTIME; echo "${t/./}000"; }
[ -n "$T_START" ] || T_START=$(now_ns)
TTY=
[ -t 1 ] && TTY=1
if [ -n "$TTY" ]; then
	B=$'\e[1m' D=$'\e[2m' R=$'\e[0m' RED=$'\e[31m' GRN=$'\e[32m' CLR=$'\r\e[K'
else
	B= D= R= RED= GRN= CLR=
fi
STEP=0
NSTEPS=7
step() { STEP=$((STEP + 1)); printf '\n%s[%d/%d] %s%s\n' "$B" $STEP $NSTEPS "$1" "$R"; }
say() { printf '      %s\n' "$*"; }
SPIN='|/-\'
SPIN_I=0
# progress TEXT: redraw the one status line (tty), or nothing.
progress() {
	[ -n "$TTY" ] || return 0
	SPIN_I=$(((SPIN_I + 1) % 4))
	printf '%s      %s %s' "$CLR" "${SPIN:$SPIN_I:1}" "$1"
}
progress_done() { [ -z "$TTY" ] || printf '%s' "$CLR"; }
# secs_since NS: seconds (one decimal) from NS (epoch ns) to now
secs_since() { awk -v a="$1" -v b="$(now_ns)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }
kib() { awk -v b="$1" 'BEGIN { printf "%d KiB", b / 1024 + 0.5 }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
# For awk programs: num("key"), the integer after "key": on the current line.
AWKNUM='function num(k) { return match($0, "\"" k "\":[0-9]+") ? substr($0, RSTART + length(k) + 3, RLENGTH - length(k) - 3) : "" } '
# json_num KEY <JSON: the first number after "KEY": (flat JSON, our own output)
json_num() { sed -n "s/.*\"$1\": *\(-\{0,1\}[0-9][0-9.e+-]*\).*/\1/p" | head -n 1; }

FAILED=
die() {
	progress_done
	printf '\n%sdemo: %s%s\n' "$RED" "$*" "$R" >&2
	FAILED=1
	exit 1
}

# ---- cleanup: everything this script started, whatever happened -------------------------
LAUNCH= QUERY= HOG= SAMPLER= BGJOBS= CG= LOADED_MONITOR=
cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	progress_done
	for p in $HOG $QUERY $SAMPLER $BGJOBS; do kill -TERM "$p" 2>/dev/null; done
	if [ -n "$LAUNCH" ]; then
		# SIGTERM reaches serve through the launcher, which then removes the cgroup.
		kill -TERM "$LAUNCH" 2>/dev/null
		for _ in $(seq 50); do kill -0 "$LAUNCH" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$LAUNCH" 2>/dev/null
	fi
	wait 2>/dev/null
	if [ -n "$CG" ] && [ -d "$CG" ]; then
		# The launcher did not get to it: kill what is left and remove it ourselves.
		for p in $(cat "$CG/cgroup.procs" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
		sleep 0.2
		rmdir "$CG" 2>/dev/null || echo "demo: could not remove the cgroup $CG" >&2
	fi
	if [ -n "$LOADED_MONITOR" ]; then
		"$NQ" monitor unload --pin-dir "$PIN" >/dev/null 2>&1 ||
			echo "demo: could not unload the monitor at $PIN" >&2
	fi
	if [ $rc -ne 0 ] && [ -z "$FAILED" ]; then
		printf '\n%sdemo: %s (exit %d); everything it started is stopped%s\n' "$RED" "$([ $rc -eq 130 ] && echo interrupted || echo stopped)" $rc "$R" >&2
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# bg_wait PID LABEL: wait for a background job, showing LABEL and the time.
bg_wait() {
	local t0
	t0=$(now_ns)
	while kill -0 "$1" 2>/dev/null; do
		progress "$2  $(secs_since "$t0") s"
		sleep 0.2
	done
	progress_done
	wait "$1"
}

printf '%sNestQuant demo%s — one model file, two precisions, switching under memory pressure\n' "$B" "$R"
[ -n "$QUICK" ] && printf '%s(quick: %d test images per level, %d calibration images, %d hog cycle)%s\n' \
	"$D" $EVAL_N $CALIB_N $CYCLES "$R"

# ---- 1. dependencies ----------------------------------------------------------------------
step "Dependencies"
[ "$(id -u)" -eq 0 ] || die "needs root: it makes a memory cgroup and loads BPF programs (sudo make demo)"
scripts/setup-deps.sh build demo || die "could not install the Debian packages (scripts/setup-deps.sh build demo)"
grep -qw memory /proc/cgroups || die "this kernel has no memory cgroup controller"
say "Debian packages present (scripts/setup-deps.sh build demo)"
[ -x $PY ] || die "no $PY (package python3)"

# ---- 2. build -------------------------------------------------------------------------------
step "Build"
if [ -n "${NQ_DEMO_BUILT:-}" ] && [ -x "$NQ" ] && [ -x "$MEMHOG" ]; then
	say "built by make: ${NQ#$ROOT/} ($(secs_since "$T_START") s since make started)"
else
	t=$(now_ns)
	${MAKE:-make} -s -j2 O="$O" all "$MEMHOG" >"${TMPDIR:-/tmp}/nq-demo-build.$$" 2>&1 &
	BGJOBS=$!
	bg_wait $BGJOBS "make -j2 O=${O#$ROOT/}" ||
		{ tail -n 20 "${TMPDIR:-/tmp}/nq-demo-build.$$" >&2; die "the build failed"; }
	BGJOBS=
	rm -f "${TMPDIR:-/tmp}/nq-demo-build.$$"
	say "${NQ#$ROOT/} built in $(secs_since "$t") s"
fi
mkdir -p "$OUT" || die "cannot make $OUT"
rm -f "$OUT"/*.jsonl "$OUT"/*.tsv "$OUT"/*.log "$OUT"/*.out "$OUT"/*.err "$OUT"/s.sock

# ---- 3. convert ------------------------------------------------------------------------------
step "Convert ($ONNX, FP32 → NestQuant 8|6)"
M=$OUT/resnet-small.nq
M8=$OUT/resnet-small-int8.nq
M6=$OUT/resnet-small-int6.nq
CACHE=$OUT/calib-$CALIB_N.cache
rm -f "$CACHE"	# calibrate afresh every time; the cache only serves the two files below
t=$(now_ns)
"$NQ" convert "$ONNX" -o "$M" --levels 8,6 --calib-count $CALIB_N --calib-cache "$CACHE" \
	--json >"$OUT/convert.json" 2>"$OUT/convert.err" &
BGJOBS=$!
bg_wait $BGJOBS "calibrating on $CALIB_N training images, quantizing, nesting" ||
	{ cat "$OUT/convert.err" >&2; die "convert failed"; }
BGJOBS=
say "$(basename "$M"): $(kib "$(stat -c %s "$M")"), SQuant-nested 8|6 ($CALIB_N calibration images, $(secs_since "$t") s)"
# The standalone files reuse the activation ranges just measured (same model,
# same calibration): only the weights are quantized again.
for l in 8 6; do
	f=$OUT/resnet-small-int$l.nq
	"$NQ" convert "$ONNX" -o "$f" --levels $l --calib-count $CALIB_N --calib-cache "$CACHE" \
		--quiet 2>"$OUT/convert-int$l.err" || { cat "$OUT/convert-int$l.err" >&2; die "convert --levels $l failed"; }
done
say "for comparison: $(basename "$M8") $(kib "$(stat -c %s "$M8")"), $(basename "$M6") $(kib "$(stat -c %s "$M6")") (--levels 8, --levels 6)"
"$NQ" info --json "$M" >"$OUT/info.json" || die "nestquant info failed"
level_bytes() { sed -n "s/.*\"level\": $1,.*\"resident_bytes\": \([0-9]*\).*/\1/p" "$OUT/info.json"; }
R0=$(level_bytes 0)
R1=$(level_bytes 1)
[ -n "$R0" ] && [ -n "$R1" ] && [ "$R1" -gt "$R0" ] || die "unexpected levels in $OUT/info.json"
RESIDUAL=$((R1 - R0))
say "serving needs $(kib $R0) at 6-bit, $(kib $R1) at 8-bit: a switch releases or pages in $(kib $RESIDUAL)"

# ---- 4. accuracy ------------------------------------------------------------------------------
step "Accuracy (Fashion-MNIST test set, $EVAL_N images, both levels at once)"
t=$(now_ns)
EVAL_PIDS=
for l in 8 6; do
	cmd="$NQ eval $M --data fashion-mnist --level $l --limit $EVAL_N --json"
	if command -v script >/dev/null; then
		# eval draws its progress only on a terminal: give it one, read it back.
		script -qfec "$cmd" "$OUT/eval-$l.log" </dev/null >/dev/null 2>&1 &
	else
		$cmd >"$OUT/eval-$l.log" 2>&1 &
	fi
	EVAL_PIDS="$EVAL_PIDS $!"
done
BGJOBS=$EVAL_PIDS
eval_done() { { tr '\r' '\n' <"$OUT/eval-$1.log"; } 2>/dev/null | sed -n 's|.* \([0-9]*\)/[0-9]*  top-1 *\([0-9.]*\)%.*|\1|p' | tail -n 1; }
while :; do
	alive=
	for p in $EVAL_PIDS; do kill -0 "$p" 2>/dev/null && alive=1; done
	[ -n "$alive" ] || break
	progress "8-bit $(eval_done 8 || true)/$EVAL_N   6-bit $(eval_done 6 || true)/$EVAL_N   $(secs_since "$t") s"
	sleep 0.3
done
progress_done
for p in $EVAL_PIDS; do wait "$p" || die "eval failed: $(tail -n 3 "$OUT"/eval-*.log | tr -d '\r')"; done
BGJOBS=
for l in 8 6; do
	tr -d '\r' <"$OUT/eval-$l.log" | grep '^{"model"' >"$OUT/eval-$l.json"
	n=$(json_num count <"$OUT/eval-$l.json")
	[ "$n" = "$EVAL_N" ] || die "eval at $l bits covered '$n' images, not $EVAL_N"
done
ACC8=$(json_num top1 <"$OUT/eval-8.json")
ACC6=$(json_num top1 <"$OUT/eval-6.json")
FP32=$(sed -n '/"resnet-small"/,/}/s/.*"fp32_top1_onnx": *\([0-9.]*\).*/\1/p' models/reference-accuracy.json)
pct() { awk -v a="$1" 'BEGIN { printf "%.2f %%", 100 * a }'; }
say "8-bit (full)  top-1 $(pct "$ACC8")    6-bit (part)  top-1 $(pct "$ACC6")    FP32 ONNX $(pct "${FP32:-0}")   ($(secs_since "$t") s)"

# ---- 5. monitor ------------------------------------------------------------------------------
step "BPF pressure monitor"
SIGNAL=${NQ_DEMO_SIGNAL:-bpf}	# NQ_DEMO_SIGNAL=psi: try the fallback
if [ "$SIGNAL" != bpf ]; then
	say "not used: NQ_DEMO_SIGNAL=$SIGNAL"
elif "$NQ" monitor status --pin-dir "$PIN" >/dev/null 2>&1; then
	say "already loaded at $PIN: using it, and leaving it loaded"
elif out=$("$NQ" monitor load --pin-dir "$PIN" 2>&1); then
	LOADED_MONITOR=1
	say "loaded and pinned at $PIN (memcg reclaim, kswapd, direct reclaim, page-cache evictions); unloaded at the end"
else
	SIGNAL=psi
	say "${RED}could not load it${R} ($out)"
	say "falling back to PSI (memory.pressure triggers): slower, but the demo still runs"
fi

# ---- 6. serve under pressure --------------------------------------------------------------
step "Serve under a memory limit, with a memory hog"
SOCK=$OUT/s.sock
wait_ready() {
	for _ in $(seq 300); do
		grep -q '"event":"ready"' "$1" 2>/dev/null && return 0
		kill -0 "$LAUNCH" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}
stop_server() {
	kill -TERM "$LAUNCH" 2>/dev/null
	wait "$LAUNCH"
	local rc=$?
	LAUNCH=
	[ -z "$CG" ] || [ ! -d "$CG" ] || die "the launcher left its cgroup $CG behind"
	CG=
	return $rc
}
server_cgroup() { tr '\0' '\n' <"/proc/$1/environ" | sed -n 's/^NQ_CGROUP=//p'; }
# Everything charged to the cgroup but the page cache: anon memory, and the
# kernel memory (page tables, sockets, slab) memcg charges too.
cg_usage() { cat "$1/memory.current" 2>/dev/null || cat "$1/memory.usage_in_bytes"; }
cg_nonfile() {
	if [ -f "$1/memory.current" ]; then
		echo $(( $(cat "$1/memory.current") - $(sed -n 's/^file //p' "$1/memory.stat") ))
	else
		echo $(( $(cat "$1/memory.usage_in_bytes") - $(sed -n 's/^total_cache //p' "$1/memory.stat") ))
	fi
}
oom_kills() { sed -n 's/^oom_kill //p' "$1/memory.events" "$1/memory.oom_control" 2>/dev/null | head -n 1; }
ITEMS="fashion-mnist:test:0-999"

# The server's own memory (without the model's page cache), measured warmed up
# in a roomy cgroup: the limit below is built from it.
t=$(now_ns)
"$NQ" launch -q --memory-max 512M --no-monitor --signal none --name "nestquant-demo-base-$$" -- \
	"$NQ" serve "$M" --socket "$SOCK" --signal none -q >"$OUT/base.out" 2>"$OUT/base.err" &
LAUNCH=$!
wait_ready "$OUT/base.out" || die "nestquant serve did not start: $(tail -n 3 "$OUT/base.err")"
SPID=$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' "$OUT/base.out")
CG=$(server_cgroup "$SPID")
"$NQ" query --socket "$SOCK" --data "$ITEMS" --count 200 --concurrency 2 -q >/dev/null ||
	die "the warm-up queries failed"
BASE=$(cg_nonfile "$CG")
stop_server || die "the measuring server exited with an error: $(tail -n 3 "$OUT/base.err")"
[ -n "$BASE" ] && [ "$BASE" -gt 0 ] || die "could not measure the server's memory"

# The limit: the server, the hog and the model at 6 bits, plus SLACK for the
# hog's own page tables and stack (~300 KiB) and for the cgroup's accounting,
# which charges in per-CPU batches of 64 pages (256 KiB here): figures read
# from it are good to about 0.5 MiB.  That is more than the 128 KiB a switch
# frees, so no hog can be sized to fit next to 6 bits and not next to 8.
# Instead the hog leaves 6 bits their room, and before growing it reads a
# 2 MiB file into the cgroup's page cache: at 8 bits that puts the cgroup
# over its limit, into reclaim; the kernel takes that clean cache first, not
# the model's planes.  The residual is what the switch adds.
SLACK=1048576
CUSHION_MIB=2
LIMIT=$(( (BASE + HOG_MIB * 1048576 + R0 + SLACK + 4095) / 4096 * 4096 ))
# (written back now: the kernel drops only clean pages from the cache)
dd if=/dev/zero of="$OUT/cushion" bs=1M count=$CUSHION_MIB conv=fsync 2>/dev/null
say "the server itself: $(mib $BASE) warmed up (measured in a roomy cgroup, $(secs_since "$t") s)"
say "limit $(mib $LIMIT) = server + hog $HOG_MIB MiB + model at 6 bits ($(kib $R0)) + $(kib $SLACK) slack"
say "  the slack is for the hog's page tables and the cgroup's accounting, which is good to ~0.5 MiB:"
say "  coarser than the $(kib $RESIDUAL) a switch frees. So the hog leaves 6 bits room, and first reads"
say "  a $CUSHION_MIB MiB file into the cgroup's page cache: at 8 bits that is over the limit -> reclaim"

if [ $SIGNAL = bpf ]; then
	# Only the kernel's reclaim events move it down.
	printf 'high=100%%\nhold=1s\nmin_interval=100ms\nsample=50ms\n' >"$OUT/policy"
else
	# PSI reports stalls, which a short reclaim may not cause: the usage
	# watermark (working set above 90 % of the limit) is the backstop.
	printf 'high=90%%\nhold=1s\nmin_interval=100ms\nsample=50ms\npsi_some=10ms\npsi_window=500ms\n' \
		>"$OUT/policy"
fi
LOG=$OUT/decisions.jsonl
# Drop the model file's cached pages, so the server's cgroup is charged for
# them (sync first: dirty pages are not dropped).
sync "$M"
dd if="$M" iflag=nocache count=0 2>/dev/null
"$NQ" launch -q --memory-max "$LIMIT" --pin-dir "$PIN" --signal $SIGNAL --policy "$OUT/policy" \
	--policy-log "$LOG" --name "nestquant-demo-$$" -- \
	"$NQ" serve "$M" --socket "$SOCK" --threads 2 >"$OUT/serve.out" 2>"$OUT/serve.err" &
LAUNCH=$!
wait_ready "$OUT/serve.out" || die "nestquant serve did not start: $(tail -n 3 "$OUT/serve.err")"
SPID=$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' "$OUT/serve.out")
CG=$(server_cgroup "$SPID")
START=$(head -n 1 "$LOG")
T0=$(echo "$START" | sed -n 's/.*"time_ns":\([0-9]*\).*/\1/p')
SOURCE=$(echo "$START" | sed -n 's/.*"source":"\([a-z]*\)".*/\1/p')
[ -n "$T0" ] || die "no start line in the policy log $LOG"
say "nestquant serve (pid $SPID) runs in cgroup ${CG##*/} at 8 bits; switching signal: $SOURCE"

# Sample the cgroup's memory every 50 ms on the same clock as the logs.
$PY - "$CG" "$OUT/memory.tsv" <<'EOF' &
import os, sys, time
cg, out = sys.argv[1], sys.argv[2]
cur = cg + ("/memory.current" if os.path.exists(cg + "/memory.current") else "/memory.usage_in_bytes")
with open(out, "w") as o:
    while True:
        try:
            u = int(open(cur).read())
        except (OSError, ValueError):
            break
        o.write("%d %d\n" % (time.monotonic_ns(), u))
        o.flush()
        time.sleep(0.05)
EOF
SAMPLER=$!

LEAD=2
DURATION=$(awk -v c=$CYCLES -v g="$HOG_MIB" -v s=$HOG_STEP_MS -v h=$HOG_HOLD -v p=$HOG_PAUSE -v l=$LEAD \
	'BEGIN { printf "%d", l + c * (g * s / 1000 + h + p) + 1 }')
"$NQ" query --socket "$SOCK" --data "$ITEMS" --duration "$DURATION" --rate $RATE --concurrency 2 \
	--log "$OUT/requests.jsonl" -q >"$OUT/answers.json" 2>"$OUT/query.err" &
QUERY=$!
say "answering $RATE requests/s (test images 0-999) for $DURATION s; the hog comes $CYCLES time(s)"
printf '\n      %s%8s  %-6s %-20s %s%s\n' "$D" time switch cause detail "$R"

# run_hog: CYCLES times, in the server's cgroup: (read the cushion file,) grow,
# hold, free, pause.  JSON lines on stdout (memhog's, and a "size" line).
run_hog() {
	local c use bytes
	for c in $(seq $CYCLES); do
		# The server's memory in this cgroup is not what it was in the roomy one
		# (allocator, socket buffers), so the hog is sized from what the cgroup
		# holds now (the server at 8 bits, under load): the limit less that,
		# plus the residual (8 -> 6 bits), less the slack.
		use=$(tail -n 10 "$OUT/memory.tsv" | cut -d' ' -f2 | sort -n | sed -n 5p)
		bytes=$((LIMIT - use + RESIDUAL - SLACK))
		[ "$bytes" -ge 1048576 ] || { echo "no room for a hog: the server uses $use of $LIMIT bytes" >&2; return 1; }
		echo "{\"hog\":\"size\",\"bytes\":$bytes,\"use\":$use}"
		dd if="$OUT/cushion" iflag=nocache count=0 2>/dev/null
		sh -c "echo \$\$ >'$CG/cgroup.procs' && exec cat '$OUT/cushion'" >/dev/null || return 1
		# The hog joins the server's cgroup, then becomes memhog (same pid).
		sh -c "echo \$\$ >'$CG/cgroup.procs' && exec '$MEMHOG' $(awk -v b=$bytes 'BEGIN { printf "%.6f", b / 1048576 }') \
			--step 1 --step-ms $HOG_STEP_MS --hold $HOG_HOLD --cycles 1" || return 1
		[ "$c" -eq $CYCLES ] || sleep $HOG_PAUSE
	done
}
HOG_STARTED= HOG_BYTES=0 HOG_USE=0
t_rel() { awk -v a="$1" -v b="$T0" 'BEGIN { printf "%6.1f s", (a - b) / 1e9 }'; }
ms() { awk -v n="$1" 'BEGIN { printf (n < 1e7 ? "%.2f ms" : "%.0f ms"), n / 1e6 }'; }
LEVEL_BITS=8
seen_dec=1 seen_hog=0
# show_new: print the switch decisions and hog phases logged since the last
# call, in time order, one line each.
show_new() {
	local n line buf= dir cause done_ns sw onset rel err from to arrow ph tn src
	n=$(wc -l <"$LOG")
	while [ "$seen_dec" -lt "$n" ]; do
		seen_dec=$((seen_dec + 1))
		line=$(sed -n "${seen_dec}p" "$LOG")
		case $line in *'"event":"switch"'*) ;; *) continue ;; esac
		dir=$(echo "$line" | sed -n 's/.*"direction":"\([a-z]*\)".*/\1/p')
		cause=$(echo "$line" | sed -n 's/.*"cause":"\([a-z_]*\)".*/\1/p')
		done_ns=$(echo "$line" | sed -n 's/.*"done_ns":\([0-9]*\).*/\1/p')
		sw=$(echo "$line" | sed -n 's/.*"switch_ns":\([0-9]*\).*/\1/p')
		onset=$(echo "$line" | sed -n 's/.*"onset_to_done_ns":\([0-9]*\).*/\1/p')
		rel=$(echo "$line" | sed -n 's/.*"bytes_released":\([0-9]*\).*/\1/p')
		from=$(echo "$line" | sed -n 's/.*"from":\([0-9]*\).*/\1/p')
		to=$(echo "$line" | sed -n 's/.*"to":\([0-9]*\).*/\1/p')
		err=$(echo "$line" | sed -n 's/.*"error":"\([^"]*\)".*/\1/p')
		: "${done_ns:=$(echo "$line" | sed -n 's/.*"decided_ns":\([0-9]*\).*/\1/p')}"
		from=$([ "$from" = 1 ] && echo 8 || echo 6)
		to=$([ "$to" = 1 ] && echo 8 || echo 6)
		case $cause in
		memcg_reclaim) cause="memcg reclaim" ;;
		hold_expired) cause="pressure over, fits" ;;
		*) cause=${cause//_/ } ;;
		esac
		if [ "$dir" = down ]; then arrow="$RED↓ $from→$to$R"; else arrow="$GRN↑ $from→$to$R"; fi
		if [ -n "$err" ]; then
			line=$(printf '%s  %s  %-20s %sFAILED: %s%s' "$(t_rel "$done_ns")" "$arrow" "$cause" "$RED" "$err" "$R")
		else
			LEVEL_BITS=$to
			if [ "$dir" = down ]; then
				case $line in *'"kernel_time":true'*) src="the kernel event" ;; *) src="the trigger" ;; esac
				line=$(printf '%s  %s  %-20s switched in %s (%s after %s), released %s' \
					"$(t_rel "$done_ns")" "$arrow" "$cause" "$(ms "$sw")" "$(ms "$onset")" "$src" "$(kib "$rel")")
			else
				line=$(printf '%s  %s  %-20s switched in %s, paged in %s' \
					"$(t_rel "$done_ns")" "$arrow" "$cause" "$(ms "$sw")" "$(kib $RESIDUAL)")
			fi
		fi
		buf+="$done_ns $line"$'\n'
	done
	if [ -f "$OUT/hog.log" ]; then
		n=$(wc -l <"$OUT/hog.log")
		while [ "$seen_hog" -lt "$n" ]; do
			seen_hog=$((seen_hog + 1))
			line=$(sed -n "${seen_hog}p" "$OUT/hog.log")
			ph=$(echo "$line" | sed -n 's/.*"hog":"\([a-z]*\)".*/\1/p')
			tn=$(echo "$line" | sed -n 's/.*"t_ns":\([0-9]*\).*/\1/p')
			if [ "$ph" = size ]; then
				HOG_BYTES=$(echo "$line" | sed -n 's/.*"bytes":\([0-9]*\).*/\1/p')
				HOG_USE=$(echo "$line" | sed -n 's/.*"use":\([0-9]*\).*/\1/p')
			fi
			[ -n "$tn" ] || continue
			case $ph in
			grow) line="hog starts taking $(mib $HOG_BYTES) (the server uses $(mib $HOG_USE) of $(mib $LIMIT))" ;;
			full) line="hog holds $(mib $HOG_BYTES)" ;;
			free) line="hog frees its memory" ;;
			*) continue ;;
			esac
			buf+="$tn $D$(t_rel "$tn")  ·      $line$R"$'\n'
		done
	fi
	[ -n "$buf" ] || return 0
	progress_done
	printf '%s' "$buf" | sort -n -k1,1 | cut -d' ' -f2- | sed 's/^/      /'
}
# status_line: elapsed time, memory, level, answers so far.
status_line() {
	local last use tn answers
	last=$(tail -n 1 "$OUT/memory.tsv" 2>/dev/null)
	tn=${last%% *}
	use=${last#* }
	answers=$( { wc -l <"$OUT/requests.jsonl"; } 2>/dev/null || echo 0)
	[ -n "$tn" ] || return 0
	progress "$(t_rel "$tn")  memory $(mib "$use") of $(mib $LIMIT)  level $LEVEL_BITS-bit  $answers answers"
}

tick=0
while kill -0 "$QUERY" 2>/dev/null; do
	if [ -z "$HOG_STARTED" ] && [ $tick -ge $((LEAD * 5)) ]; then
		run_hog >"$OUT/hog.log" 2>"$OUT/hog.err" &
		HOG=$!
		HOG_STARTED=1
	fi
	show_new
	status_line
	if [ -z "$TTY" ] && [ $((tick % 25)) -eq 24 ]; then
		last=$(tail -n 1 "$OUT/memory.tsv")
		printf '      %s  %s… memory %s, level %s-bit, %s answers so far%s\n' "$(t_rel "${last%% *}")" "$D" \
			"$(mib "${last#* }")" $LEVEL_BITS "$( { wc -l <"$OUT/requests.jsonl"; } 2>/dev/null)" "$R"
	fi
	tick=$((tick + 1))
	sleep 0.2
done
wait "$QUERY"
QUERY_RC=$?
QUERY=
if [ -n "$HOG" ]; then
	wait "$HOG"
	HOG_RC=$?
	HOG=
fi
show_new
progress_done
KILLS=$(oom_kills "$CG")
STATUS=$("$NQ" query --socket "$SOCK" --status 2>&1) || die "the server is gone after the pressure: $STATUS"
kill -TERM "$SAMPLER" 2>/dev/null
wait "$SAMPLER" 2>/dev/null
SAMPLER=
SERVE_CG=$CG
stop_server || die "nestquant serve (or its launcher) exited with an error: $(tail -n 3 "$OUT/serve.err")"
say "server stopped, cgroup ${SERVE_CG##*/} removed"
[ "${HOG_RC:-0}" -eq 0 ] || say "${RED}the hog exited with $HOG_RC (137: OOM-killed)${R}"

# ---- 7. summary and timeline ------------------------------------------------------------------
step "Summary"
# Switch latencies from the policy log: kernel event -> down switch done (with
# the residual planes released), and the switch itself (decision -> done).
stats() { sort -n | awk '{ v[NR] = $1 } END { if (NR) printf "%s %s %d", v[int((NR + 1) / 2)], v[NR], NR; else print "- - 0" }'; }
field() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }
grep '"event":"switch"' "$LOG" >"$OUT/switches.jsonl"
DOWN=$(grep -c '"direction":"down"' "$OUT/switches.jsonl")
UP=$(grep -c '"direction":"up"' "$OUT/switches.jsonl")
SWERR=$(grep -c '"error":' "$OUT/switches.jsonl")
read -r on50 onmax _ < <(grep '"direction":"down"' "$OUT/switches.jsonl" | field onset_to_done_ns | stats)
read -r dn50 _ _ < <(grep '"direction":"down"' "$OUT/switches.jsonl" | field switch_ns | stats)
read -r up50 upmax _ < <(grep '"direction":"up"' "$OUT/switches.jsonl" | field switch_ns | stats)
read -r rel50 _ _ < <(grep '"direction":"down"' "$OUT/switches.jsonl" | field bytes_released | stats)
msx() { [ "$1" = - ] && echo "–" || ms "$1"; }

# Answers: the load's summary, and each answer against the test set's label.
ANS=$(cat "$OUT/answers.json")
NREQ=$(echo "$ANS" | field requests)
NOK=$(echo "$ANS" | field ok)
NERR=$(echo "$ANS" | field errors)
P50=$(echo "$ANS" | sed -n 's/.*"p50_us":\([0-9.]*\).*/\1/p')
P99=$(echo "$ANS" | sed -n 's/.*"p99_us":\([0-9.]*\).*/\1/p')
PMAX=$(echo "$ANS" | sed -n 's/.*"max_us":\([0-9.]*\).*/\1/p')
read -r L6 L8 < <(echo "$ANS" | sed -n 's/.*"per_level":\[\([0-9]*\),\([0-9]*\),.*/\1 \2/p')
LABELS=${NQ_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}/t10k-labels-idx1-ubyte.gz
CORRECT=
if [ -f "$LABELS" ]; then
	CORRECT=$( { zcat "$LABELS" | tail -c +9 | od -An -v -tu1 -w1; echo END; cat "$OUT/requests.jsonl"; } |
		awk "$AWKNUM"'$1 == "END" { lab = 1; next }
		     !lab { label[n++] = $1 + 0; next }
		     /"ok":true/ { i = num("item") + 0
				   c = num("class") + 0
				   t++; r += (label[i] == c) }
		     END { if (t) printf "%.1f", 100 * r / t }')
fi

# The longest time without an answer (requests go out every 1000/RATE ms).
GAP=$(awk "$AWKNUM"'/"ok":true/ { print num("t_ns") + num("lat_ns") }' "$OUT/requests.jsonl" | sort -n |
	awk 'NR > 1 && $1 - p > g { g = $1 - p } { p = $1 } END { print g + 0 }')

S=$(stat -c %s "$M") S8=$(stat -c %s "$M8") S6=$(stat -c %s "$M6")
SAVED=$(awk -v a=$S -v b=$((S8 + S6)) 'BEGIN { printf "%.0f", 100 * (1 - a / b) }')
printf '      %s%-14s %-16s %-22s %s%s\n' "$B" level "top-1 ($EVAL_N)" "a file for it alone" "resident when serving" "$R"
printf '      %-14s %-16s %-22s %s\n' "8-bit (full)" "$(pct "$ACC8")" "$(kib $S8) (--levels 8)" "$(kib $R1)"
printf '      %-14s %-16s %-22s %s\n' "6-bit (part)" "$(pct "$ACC6")" "$(kib $S6) (--levels 6)" "$(kib $R0)"
[ -n "$FP32" ] && printf '      %-14s %-16s %s\n' "FP32 (ONNX)" "$(pct "$FP32")" "$(kib "$(stat -c %s $ONNX)")"
say "one nested 8|6 file: $(kib $S), against $(kib $((S8 + S6))) for the INT8 and INT6 files together (−$SAVED %)"
echo
us_ms() { ms "$(awk -v u="$1" 'BEGIN { print u * 1000 }')"; }
case $SOURCE in
bpf) src="kernel events from the BPF monitor" ;;
psi) src="PSI triggers" ;;
*) src="signal $SOURCE" ;;
esac
printf '      %-14s %s\n' "switches" "$DOWN down, $UP up, $SWERR failed ($src; limit $(mib $LIMIT))"
printf '        ↓ 8→6      %s\n' "$([ $SOURCE = bpf ] && echo "kernel event" || echo "trigger") → switch done: p50 $(msx "$on50"), max $(msx "$onmax") (the switch itself p50 $(msx "$dn50")); released $( [ "$rel50" = - ] && echo – || kib "$rel50")"
printf '        ↑ 6→8      %s\n' "once the pressure was over (≥ 1 s) and 8 bits fit again: the switch p50 $(msx "$up50"), max $(msx "$upmax")"
printf '      %-14s %s\n' "answers" "$NREQ in $DURATION s, $((NREQ - NOK)) failed: ${L8:-0} at 8 bits, ${L6:-0} at 6 bits${CORRECT:+; $CORRECT % right by the labels (images 0-999)}"
printf '      %-14s %s\n' "" "latency p50 $(us_ms "$P50"), p99 $(us_ms "$P99"), max $(us_ms "$PMAX"); longest time without an answer $(ms "$GAP")"
printf '      %-14s %s\n' "OOM kills" "${KILLS:-0}"

# The timeline: memory use, level, events, answers.
TL=$OUT/timeline
awk -v t0="$T0" '{ printf "%.3f %.3f\n", ($1 - t0) / 1e9, $2 / 1048576 }' "$OUT/memory.tsv" >"$TL-memory.dat"
END_S=$(tail -n 1 "$TL-memory.dat" | cut -d' ' -f1)
awk -v t0="$T0" -v e="$END_S" "$AWKNUM"'BEGIN { print 0, 8 }
	/"event":"switch"/ && !/"error":/ { t = (num("done_ns") - t0) / 1e9
		l = num("to") == 1 ? 8 : 6
		printf "%.3f %d\n", t, l }
	END { print e, "same" }' "$LOG" | awk '$2 == "same" { $2 = last } { print; last = $2 }' >"$TL-level.dat"
awk -v t0="$T0" "$AWKNUM"'/"ok":true/ { t = (num("t_ns") - t0) / 1e9
	l = num("lat_ns") / 1e6
	v = num("level")
	printf "%.3f %.3f %s\n", t, l, v == 1 ? 8 : 6 }' "$OUT/requests.jsonl" >"$TL-answers.dat"
{
	# Shade the time the hog held memory; a line at each switch.
	awk -v t0="$T0" "$AWKNUM"'/"hog":"grow"/ { g = (num("t_ns") - t0) / 1e9 }
		/"hog":"free"/ { f = (num("t_ns") - t0) / 1e9
			printf "set object rect from %.3f, graph 0 to %.3f, graph 1 behind fc rgb \"#eeeeee\" fs solid noborder\n", g, f }' \
		"$OUT/hog.log"
	awk -v t0="$T0" "$AWKNUM"'/"event":"switch"/ && !/"error":/ { t = (num("done_ns") - t0) / 1e9
		c = /"direction":"down"/ ? "#d62728" : "#2ca02c"
		printf "set arrow from %.3f, graph 0 to %.3f, graph 1 nohead lc rgb \"%s\" dt 2\n", t, t, c }' "$LOG"
} >"$TL-marks.gp"
LIMIT_MIB=$(awk -v l=$LIMIT 'BEGIN { printf "%.3f", l / 1048576 }')
gnuplot 2>"$OUT/gnuplot.err" <<GP || say "${RED}gnuplot failed: $(head -n 3 "$OUT/gnuplot.err")${R}"
set terminal pngcairo size 1000,660 font "DejaVu Sans,10"
set output "$TL.png"
set multiplot layout 2,1 title "NestQuant demo: resnet-small.nq (8|6) served under a $(mib $LIMIT) limit while a memory hog comes and goes\n{/*0.9 grey: hog present    red dashes: switch down to 6 bits    green dashes: switch up to 8 bits}"
load "$TL-marks.gp"
set lmargin 10
set rmargin 10
set xrange [0:$END_S]
set grid ytics lc rgb "#dddddd"
set key top right horizontal opaque
set ylabel "cgroup memory (MiB)"
set yrange [0:$LIMIT_MIB * 1.3]
set format x ""
set tmargin 3
set bmargin 1
plot "$TL-memory.dat" using 1:2 with lines lw 2 lc rgb "#1f77b4" title "memory use", \
     $LIMIT_MIB with lines lw 1.5 dt 3 lc rgb "#d62728" title "limit"
set format x "%g"
set xlabel "seconds since the server started"
set ylabel "answer latency (ms)"
set logscale y
set yrange [0.1:$(awk 'BEGIN { m = 1 } $2 > m { m = $2 } END { print m * 30 }' "$TL-answers.dat")]
set y2label "level (bits)"
set y2range [5:9.5]
set y2tics ("6" 6, "8" 8)
set ytics nomirror
set tmargin 1
set bmargin 3
plot "$TL-answers.dat" using 1:(\$3 == 8 ? \$2 : 1/0) with points pt 7 ps 0.3 lc rgb "#1f77b4" title "answer at 8 bits", \
     "$TL-answers.dat" using 1:(\$3 == 6 ? \$2 : 1/0) with points pt 7 ps 0.3 lc rgb "#ff7f0e" title "answer at 6 bits", \
     "$TL-level.dat" using 1:2 axes x1y2 with steps lw 3 lc rgb "#333333" title "level"
unset multiplot
GP
[ -s "$TL.png" ] && printf '      %-14s %s\n' "timeline" "${TL#$ROOT/}.png"
printf '      %-14s %s\n' "all data" "${OUT#$ROOT/}/"

TOTAL=$(secs_since "$T_START")
T=${TOTAL%.*}
printf '\n%sDone in %d min %02d s%s (%s s, from the start of make to here)\n' "$B" $((T / 60)) $((T % 60)) "$R" "$TOTAL"
# The demo has shown what it promises only if the server switched both ways
# and answered every request.
[ "$DOWN" -ge 1 ] && [ "$UP" -ge 1 ] && [ "$SWERR" -eq 0 ] || die "expected switches down and up without errors, saw $DOWN down, $UP up, $SWERR failed (see $LOG)"
[ "${KILLS:-0}" -eq 0 ] || die "the kernel's OOM killer struck $KILLS time(s) in the cgroup"
[ "$QUERY_RC" -eq 0 ] && [ "$NERR" -eq 0 ] || die "$NERR of $NREQ requests failed (see $OUT/answers.json, $OUT/query.err)"
