#!/bin/sh
# Pressure -> switch, end to end, with `nestquant serve` under a steady request
# load inside `nestquant launch --memory-max X`, while a memory hog in the same
# cgroup grows, holds and leaves, PRESSURE_CYCLES times per case:
#
#   bpf    switching driven by the BPF monitor's memcg-reclaim events
#   psi    switching driven by a PSI trigger on the cgroup (same workload)
#   none   switching disabled (--signal none): the kernel evicts planes itself
#   calm   part-bit (--level part), no hog: the unpressured reference
#   parthog  part-bit, switching disabled, the same hog: what the hog costs a
#          server that is already at part-bit (no fault, no switch), i.e. the
#          floor that no switching can go below
#
# For every cycle the onset is the first memcg-reclaim event of the cgroup
# after the hog started growing, as a separate BPF client (`nestquant pressure
# --events`) saw it, with its kernel timestamp; the end is when the server's
# down switch finished (the policy log's done_ns, after the residual planes were
# released).  Both paths are timed against the same onset.  Also sampled:
# the cgroup's memory use, the server's major faults, OOM kills, every
# request's latency, level and whether its answer is the right one for that
# level.
#
# Needs root, a memory cgroup controller and the BPF monitor.  Knobs:
#   PRESSURE_MODELS   resnet-small,mobilenet (models/NAME.onnx, converted once
#                     into $O/pressure/) and/or mlp (tests/tools/write-mlp-nq,
#                     megabyte residual planes)   [resnet-small,mobilenet,mlp]
#   PRESSURE_CYCLES   hog cycles of the bpf case [20]; psi, none and parthog run
#                     half as many, calm runs as long as the bpf case
#   PRESSURE_ROUNDS   bpf, none, calm and parthog are interleaved: ROUNDS
#                     rounds, each running them (in an order that rotates) with
#                     1/ROUNDS of their cycles, so that a slow spell of this
#                     shared machine falls on all of them alike; the latency
#                     target is judged per round, bpf p99 / calm p99, median
#                     over the rounds [5].  psi runs once, after them.
#   PRESSURE_OUT      folder for performance.md, pressure.json, PNGs [docs]
#   PRESSURE_CASES    bpf,psi,none,calm,parthog
#   PRESSURE_HOG_NICE nice value of the hog in every case that has one [19]:
#                     it makes memory pressure, not CPU contention
#   PRESSURE_HOG_RATE MiB/s at which the file hog reads: 64 is about 1.5 times
#                     the cgroup's limit a second, so the cgroup reclaims all
#                     the time.  Faster, the hog's block I/O and copying
#                     themselves slow a part-bit server that never switches or
#                     faults (parthog): 1.6x at p99 unpaced (0, about 1.9
#                     GB/s here; 2 rounds, 2026-11-28), which measures
#                     contention for the CPU, not memory pressure   [64]
#   PRESSURE_RT       N > 0: every case runs `serve --rt-priority N` (inference
#                     threads SCHED_FIFO N, switching thread N + 1), so that the
#                     hog's CPU time cannot hold up an answer.  Off by default:
#                     a real-time server refaults its planes faster than the
#                     hog's reclaim can take them, and without switching (none,
#                     and psi until its window ends) memcg then OOM-kills the
#                     hog in its first cycle, which ends those cases   [0]
#   PRESSURE_LOCK     1: every case runs `serve --lock-resident` (the part-bit
#                     path's pages locked: the file's header and parameters,
#                     level 0's planes, code, stacks, arenas); 0: nothing
#                     locked   [1]
# Writes $O/pressure/<model>/<case>/r<round>/ (raw data), then scripts/pressure-report.py
# turns it into PRESSURE_OUT/pressure.json, the "Pressure → switch" section of
# PRESSURE_OUT/performance.md and PRESSURE_OUT/pressure-<model>.png.
set -u

O=${O:-build}
NQ=${NESTQUANT:-$O/nestquant}
case $NQ in /*) ;; *) NQ=$(pwd)/$NQ ;; esac
TOOLS=$(dirname "$NQ")/tests/tools
MODELS=${PRESSURE_MODELS:-resnet-small,mobilenet,mlp}
CYCLES=${PRESSURE_CYCLES:-20}
ROUNDS=${PRESSURE_ROUNDS:-5}
OUT=${PRESSURE_OUT:-docs}
CASES=${PRESSURE_CASES:-bpf,psi,none,calm,parthog}
HOG_MIB=${HOG_MIB:-24}
LOCK=${PRESSURE_LOCK:-1}
RT=${PRESSURE_RT:-0}
HOG_NICE=${PRESSURE_HOG_NICE:-19}
HOG_RATE=${PRESSURE_HOG_RATE:-64}
HOLD_MS=1000
WORK=$O/pressure
case $WORK in /*) ;; *) WORK=$(pwd)/$WORK ;; esac
PIN=/sys/fs/bpf/nqbench-pressure-$$
PY=/usr/bin/python3
LAUNCH=
BG=

die() { echo "pressure-latency: $*" >&2; exit 1; }
cleanup() {
	for p in $BG; do kill -TERM "$p" 2>/dev/null; done
	[ -z "$LAUNCH" ] || { kill -TERM "$LAUNCH" 2>/dev/null; wait "$LAUNCH" 2>/dev/null; }
	"$NQ" monitor unload --pin-dir "$PIN" >/dev/null 2>&1
}
trap cleanup EXIT INT TERM

[ "$(id -u)" -eq 0 ] || die "needs root (memory cgroups, BPF)"
built() { [ -x "$NQ" ] && [ -x "$TOOLS/memhog" ] && [ -x "$TOOLS/write-mlp-nq" ]; }
# What `make bench-pressure` builds first; run directly (scripts/switch-latency.sh
# pressure, as the README shows), build it here.
built || ${MAKE:-make} --no-print-directory O="$O" all "$O/tests/tools/memhog" \
	"$O/tests/tools/write-mlp-nq" >&2
built || die "build first: make O=$O all $O/tests/tools/memhog $O/tests/tools/write-mlp-nq"
# The dataset (requests), python3 (sampler, report) and gnuplot (PNGs): a
# machine that has only run `make` lacks them.
scripts/setup-deps.sh demo >&2 || die "could not install the Debian packages (scripts/setup-deps.sh demo)"
"$NQ" monitor load --pin-dir "$PIN" >/dev/null || die "the BPF monitor does not load here"
mkdir -p "$WORK" "$OUT"

# model_file NAME: path of the .nq, made when missing.
model_file() {
	f=$WORK/$1.nq
	if [ ! -f "$f" ]; then
		if [ "$1" = mlp ]; then
			"$TOOLS/write-mlp-nq" "$f" --hidden 2048 --levels 2,8 >&2 || return 1
		elif [ -f "models/$1.onnx" ]; then
			"$NQ" convert "models/$1.onnx" -o "$f" >&2 || return 1
		else
			return 1
		fi
	fi
	echo "$f"
}

wait_ready() {
	for _ in $(seq 300); do
		grep -q '"event":"ready"' "$1" 2>/dev/null && return 0
		kill -0 "$LAUNCH" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}
stop_launch() {
	kill -TERM "$LAUNCH" 2>/dev/null
	wait "$LAUNCH"
	LAUNCH=
}
serve_cgroup() { tr '\0' '\n' <"/proc/$1/environ" | sed -n 's/^NQ_CGROUP=//p'; }

# Sample every 50 ms: CLOCK_MONOTONIC ns, cgroup usage, server majflt.
SAMPLER='
import sys, time
cg, pid, out = sys.argv[1], sys.argv[2], sys.argv[3]
f = cg + ("/memory.current" if __import__("os").path.exists(cg + "/memory.current") else "/memory.usage_in_bytes")
with open(out, "w") as o:
    while True:
        try:
            u = int(open(f).read())
            st = open("/proc/%s/stat" % pid).read()
        except OSError:
            break
        majflt = int(st[st.rindex(")") + 2:].split()[9])
        o.write("%d %d %d\n" % (time.monotonic_ns(), u, majflt))
        o.flush()
        time.sleep(0.05)
'

# run_case MODEL FILE CASE X RATE CYCLES ROUND: data into $WORK/MODEL/CASE/rROUND.
# The load runs while the hog does (until HOLD_MS after it left, so that the
# switch back up is in); for calm, as long as the last bpf run took.
run_case() {
	name=$1 m=$2 case_=$3 x=$4 rate=$5 n=$6 round=$7
	d=$WORK/$name/$case_/r$round
	rm -rf "$d"
	mkdir -p "$d"
	S=$d/s.sock
	sig=bpf
	extra=
	[ "$LOCK" = 0 ] || extra=--lock-resident
	[ "$RT" = 0 ] || extra="$extra --rt-priority $RT"
	# Only the trigger under test moves it down (usage never exceeds 100 %).
	printf 'high=100%%\nhold=%dms\nmin_interval=100ms\nsample=50ms\n' $HOLD_MS >"$d/policy"
	case $case_ in
	psi) sig=psi; printf 'psi_some=10ms\npsi_window=500ms\n' >>"$d/policy" ;;
	none) sig=none ;;
	calm | parthog) sig=none; extra="$extra --level part" ;;
	esac
	dd if="$m" iflag=nocache count=0 2>/dev/null
	"$NQ" launch -q --memory-max "$x" --pin-dir "$PIN" --signal $sig --policy "$d/policy" \
		--policy-log "$d/decisions.jsonl" -- "$NQ" serve "$m" --socket "$S" --threads 2 \
		--signal $sig $extra >"$d/serve.out" 2>"$d/serve.err" &
	LAUNCH=$!
	wait_ready "$d/serve.out" || die "$name/$case_: serve did not start: $(cat "$d/serve.err")"
	spid=$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' "$d/serve.out")
	cg=$(serve_cgroup "$spid")
	"$NQ" pressure --events --signal bpf --cgroup "$cg" --pin-dir "$PIN" >"$d/events.jsonl" \
		2>"$d/events.err" &
	obs=$!
	$PY -c "$SAMPLER" "$cg" "$spid" "$d/memory.tsv" &
	smp=$!
	BG="$obs $smp"
	sleep 0.5
	# Warm up (the dataset, the planes), then the measured load.
	"$NQ" query --socket "$S" --data fashion-mnist:test:0-99 --count 20 -q >/dev/null
	# A bound only: the load is stopped (SIGINT: it answers what is in
	# flight and writes its summary) when the hog is done.
	"$NQ" query --socket "$S" --data fashion-mnist:test:0-99 --duration $((n * 10 + 60)) \
		--rate "$rate" --concurrency 2 --expect "$EXPECT" --log "$d/requests.jsonl" -q >"$d/summary.json" \
		2>"$d/query.err" &
	q=$!
	sleep 1
	if [ $case_ = calm ]; then
		sleep "$BPF_RUN_S"
		echo '{"hog":"none"}' >"$d/hog.log"
	else
		t0=$(date +%s.%N)
		sh -c "echo \$\$ >'$cg/cgroup.procs' && exec nice -n $HOG_NICE '$TOOLS/memhog' $HOG_MIB --step 1 \
			--step-ms 40 --hold 1.5 --cycles $n --pause $((HOLD_MS / 1000 + 1)) $HOGFILE" \
			>"$d/hog.log" 2>"$d/hog.err"
		echo "{\"hog_exit\":$?}" >>"$d/hog.log"
		sleep $((HOLD_MS / 1000 + 1))
		[ $case_ != bpf ] || BPF_RUN_S=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
	fi
	kill -INT $q
	wait $q
	if [ -f "$cg/memory.events" ]; then
		kills=$(sed -n 's/^oom_kill //p' "$cg/memory.events")
	else
		kills=$(sed -n 's/^oom_kill //p' "$cg/memory.oom_control")
	fi
	echo "{\"oom_kills\":${kills:-0},\"limit\":$x,\"hog_mib\":$HOG_MIB,\"rate\":$rate,\"cycles\":$n,\"lock_resident\":$LOCK,\"rt_priority\":$RT,\"hog_nice\":$HOG_NICE,\"hog_rate\":$HOG_RATE}" \
		>"$d/case.json"
	kill -TERM $obs $smp 2>/dev/null
	wait $obs $smp 2>/dev/null
	BG=
	stop_launch
	echo "  $name/$case_ round $round: $(cat "$d/summary.json")" >&2
}

for name in $(echo "$MODELS" | tr ',' ' '); do
	m=$(model_file "$name") || { echo "pressure-latency: $name: no model (skipped)" >&2; continue; }
	info=$("$NQ" info --json "$m")
	# Expected answers of the 100 items the load sends, at every level, from
	# `nestquant run`: each answer of every case is checked at the level it
	# reports.
	EXPECT=$WORK/$name/expect
	mkdir -p "$WORK/$name"
	if [ ! -s "$EXPECT" ] || [ "$EXPECT" -ot "$m" ]; then
		scripts/expected-answers.sh "$NQ" "$m" 100 >"$EXPECT.tmp"
		[ "$(wc -l <"$EXPECT.tmp")" -eq 200 ] || die "$name: expected answers: $(head -n 2 "$EXPECT.tmp")"
		mv "$EXPECT.tmp" "$EXPECT"
	fi
	r0=$(echo "$info" | sed -n 's/.*"level": 0,.*"resident_bytes": \([0-9]*\).*/\1/p')
	top=$(echo "$info" | grep -c '"resident_bytes"')
	r1=$(echo "$info" | sed -n "s/.*\"level\": $((top - 1)),.*\"resident_bytes\": \([0-9]*\).*/\1/p")
	# Baseline anon memory of the warmed-up server, without a tight limit.
	d=$WORK/$name/base
	mkdir -p "$d"
	"$NQ" launch -q --memory-max 1G --no-monitor --signal none -- "$NQ" serve "$m" \
		--socket "$d/s.sock" --signal none -q >"$d/serve.out" 2>"$d/serve.err" &
	LAUNCH=$!
	wait_ready "$d/serve.out" || die "$name: baseline serve did not start"
	"$NQ" query --socket "$d/s.sock" --data fashion-mnist:test:0-99 --count 40 --concurrency 2 -q \
		>"$d/summary.json"
	spid=$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' "$d/serve.out")
	cg=$(serve_cgroup "$spid")
	# Everything charged but the page cache: anon, and kernel memory (page
	# tables, sockets, slab), which memcg charges too.
	if [ -f "$cg/memory.current" ]; then
		anon=$(( $(cat "$cg/memory.current") - $(sed -n 's/^file //p' "$cg/memory.stat") ))
	else
		anon=$(( $(cat "$cg/memory.usage_in_bytes") - $(sed -n 's/^total_cache //p' "$cg/memory.stat") ))
	fi
	p50=$(sed 's/.*"p50_us":\([0-9.]*\).*/\1/' "$d/summary.json")
	stop_launch
	if [ $((r1 - r0)) -ge 2097152 ]; then
		# Megabytes of residual: an anonymous hog that fits beside part-bit, not full-bit.
		HOGFILE=
		hogkind=anon
		# (+ 512 KiB for the hog's own page tables and stack)
		x=$(( (anon + r1 + HOG_MIB * 1048576 + 524288 - (r1 - r0) / 4 + 4095) / 4096 * 4096 ))
	else
		# A residual below the cgroup's accounting noise: a page-cache hog (a file
		# twice the limit read over and over) keeps the cgroup reclaiming instead,
		# with no OOM risk as long as the cache has room to be reclaimed in: the
		# limit leaves 32 MiB above the full level (with 8 MiB, memcg v1 OOM-killed).
		hogkind=file
		x=$(( (anon + r1 + 32 * 1048576 + 4095) / 4096 * 4096 ))
		HOGFILE="--file $WORK/hog.dat"
		[ "$HOG_RATE" = 0 ] || HOGFILE="$HOGFILE --rate $HOG_RATE"
		[ -f "$WORK/hog.dat" ] && [ "$(stat -c %s "$WORK/hog.dat")" -ge $((2 * x)) ] ||
			dd if=/dev/zero of="$WORK/hog.dat" bs=1M count=$((2 * x / 1048576 + 1)) 2>/dev/null
	fi
	# Steady load at about a quarter of what two workers can do.
	rate=$(awk -v p="$p50" 'BEGIN { r = 2e6 / (p > 0 ? p : 1000) / 4; if (r > 100) r = 100; if (r < 2) r = 2; printf "%d", r }')
	echo "{\"model\":\"$name\",\"file\":\"$m\",\"resident\":[$r0,$r1],\"anon\":$anon,\"limit\":$x,\"rate\":$rate,\"p50_unloaded_us\":$p50,\"hog\":\"$hogkind\"}" \
		>"$WORK/$name/model.json"
	echo "pressure-latency: $name: anon $anon, resident $r0/$r1, --memory-max $x, $rate req/s" >&2
	rm -rf "$WORK/$name/bpf" "$WORK/$name/psi" "$WORK/$name/none" "$WORK/$name/calm"
	# Rounds of bpf, none, calm; the order rotates, so each follows each.
	per=$(( (CYCLES + ROUNDS - 1) / ROUNDS ))
	BPF_RUN_S=$((per * 4))	# until the first bpf run says
	order="bpf none calm parthog"
	for r in $(seq "$ROUNDS"); do
		for c in $order; do
			case ",$CASES," in *",$c,"*) ;; *) continue ;; esac
			n=$per
			case $c in none | parthog) n=$(( (per + 1) / 2 )) ;; esac
			run_case "$name" "$m" "$c" "$x" "$rate" "$n" "$r"
		done
		order="${order#* } ${order%% *}"
	done
	case ",$CASES," in
	*,psi,*) run_case "$name" "$m" psi "$x" "$rate" $(( (CYCLES + 1) / 2 )) 1 ;;
	esac
done
$PY scripts/pressure-report.py "$WORK" "$OUT"
