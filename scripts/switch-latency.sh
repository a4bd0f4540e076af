#!/bin/sh
# SPDX-License-Identifier: MIT
# Level-switching benchmark (`make bench-switch`): NestQuant's paging of the
# residual planes against the paper's baseline (separate INT8 and INT6 files,
# switching = release one model, load the other), side by side and
# interleaved in one process per model (`nestquant switch bench`).
#
#   scripts/switch-latency.sh          (normally through make)
#   scripts/switch-latency.sh pressure  the pressure path of issue 6: kernel
#            reclaim event -> switched and planes released, BPF vs PSI, under
#            `nestquant serve` (runs scripts/pressure-latency.sh; root)
#
# Environment (make passes them; defaults in brackets):
#   O              build folder [build]          NESTQUANT  the binary [$O/nestquant]
#   SWITCH_MODELS  torchvision ResNets [resnet18,resnet50,resnet101]
#   SWITCH_MODES   nested residual modes [exact,compact]
#   SWITCH_CYCLES  down+up cycles per model and mode [15]
#   SWITCH_PHASES  what to run, in order [models,bench,methods,share,report]
#   SWITCH_OUT     folder for performance.md, bench-switch.json/.png [docs]
#   SWITCH_LABEL   a note printed above the tables (e.g. "Smoke run")
#
# Phases.  Each writes JSON into $O/bench-switch/ and `report` turns every
# JSON there into the "Switching" section of docs/performance.md, the
# combined docs/bench-switch.json and docs/bench-switch.png.  To add a
# measurement (the pressure path of issue 6 does), add a phase_NAME
# function writing $work/NAME*.json, list it in SWITCH_PHASES, and teach
# scripts/switch-report.py to render it.
#   models   ONNX models (make bench-models for missing ones) and the four .nq
#            files per model: nested 8|6 exact and compact, standalone 8 and 6
#   bench    nestquant switch bench, per model and mode
#   methods  page-in methods compared (NestQuant side only, first model)
#   share    RSS/PSS of 1-4 processes holding the same .nq at each level
#   report   tables, JSON, PNG
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
if [ "${1:-}" = pressure ]; then
	shift
	exec scripts/pressure-latency.sh "$@"
fi
O=${O:-build}
NESTQUANT=${NESTQUANT:-$O/nestquant}
SWITCH_MODELS=${SWITCH_MODELS:-resnet18,resnet50,resnet101}
SWITCH_MODES=${SWITCH_MODES:-exact,compact}
SWITCH_CYCLES=${SWITCH_CYCLES:-15}
SWITCH_PHASES=${SWITCH_PHASES:-models,bench,methods,share,report}
SWITCH_OUT=${SWITCH_OUT:-docs}
SWITCH_LABEL=${SWITCH_LABEL:-}
MAKE=${MAKE:-make}
cache=models/cache
work=$O/bench-switch

say() { printf 'switch-latency: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
models() { echo "$SWITCH_MODELS" | tr ',' ' '; }
modes() { echo "$SWITCH_MODES" | tr ',' ' '; }

[ -x "$NESTQUANT" ] || die "$NESTQUANT is not built (run make O=$O first)"
"$NESTQUANT" switch --help >/dev/null 2>&1 || die "$NESTQUANT has no 'switch' verb"
mkdir -p "$work"

# Convert once per (model, variant); redone when the binary or the
# arguments change (a stamp file beside the output holds both).
convert() { # model variant args...
	m=$1 v=$2
	shift 2
	out=$work/$m-$v.nq
	stamp="$(cksum <"$NESTQUANT") $*"
	if [ -f "$out" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$stamp" ]; then
		return 0
	fi
	say "converting $m ($v: $*)"
	"$NESTQUANT" convert "$cache/$m.onnx" -o "$out" --calib none --calib-count 16 --input-scale 1 --quiet "$@" ||
		die "convert $m $v failed"
	printf '%s' "$stamp" >"$out.stamp"
}

phase_models() {
	missing=""
	for m in $(models); do
		[ -f "$cache/$m.onnx" ] || missing="$missing,$m"
	done
	if [ -n "$missing" ]; then
		say "exporting ${missing#,} (make bench-models)"
		$MAKE --no-print-directory -C "$top" bench-models BENCH_MODELS="${missing#,}" >&2
	fi
	for m in $(models); do
		convert "$m" exact --levels 8,6 --residual exact
		convert "$m" compact --levels 8,6 --residual compact
		convert "$m" int8 --levels 8
		convert "$m" int6 --levels 6
	done
}

phase_bench() {
	for m in $(models); do
		for mode in $(modes); do
			say "bench $m $mode ($SWITCH_CYCLES cycles)"
			"$NESTQUANT" switch bench "$work/$m-$mode.nq" --hi "$work/$m-int8.nq" \
				--lo "$work/$m-int6.nq" --cycles "$SWITCH_CYCLES" \
				>"$work/bench-$m-$mode.json.tmp"
			mv "$work/bench-$m-$mode.json.tmp" "$work/bench-$m-$mode.json"
		done
	done
}

# Page-in methods, cold and warm, on the first model's exact file.
phase_methods() {
	m=$(models | cut -d' ' -f1)
	for how in populate willneed read pread; do
		say "page-in method $how ($m)"
		"$NESTQUANT" switch bench "$work/$m-exact.nq" --nq-only --pagein "$how" \
			--cycles "$SWITCH_CYCLES" >"$work/methods-$m-$how.json.tmp"
		mv "$work/methods-$m-$how.json.tmp" "$work/methods-$m-$how.json"
	done
	say "page-in without io_uring (fallback)"
	"$NESTQUANT" switch bench "$work/$m-exact.nq" --nq-only --pagein read --no-uring \
		--cycles "$SWITCH_CYCLES" >"$work/methods-$m-nouring.json.tmp"
	mv "$work/methods-$m-nouring.json.tmp" "$work/methods-$m-nouring.json"
}

# RSS/PSS (smaps_rollup) of N processes holding the same file at one level.
smaps() { # pid field
	awk -v f="$2:" '$1 == f { print $2 * 1024 }' "/proc/$1/smaps_rollup"
}

phase_share() {
	m=$(models | cut -d' ' -f1)
	f=$work/$m-exact.nq
	out=$work/share-$m.json.tmp
	printf '{"model": "%s", "file_bytes": %s, "rows": [' "$f" "$(stat -c %s "$f")" >"$out"
	sep=""
	for level in part full; do
		for n in 1 2 3 4; do
			pids=""
			i=0
			while [ $i -lt "$n" ]; do
				"$NESTQUANT" switch hold "$f" --level "$level" >"$work/hold.$i.out" &
				pids="$pids $!"
				i=$((i + 1))
			done
			i=0
			while [ $i -lt "$n" ]; do
				t=0
				until grep -q ready "$work/hold.$i.out" 2>/dev/null; do
					sleep 0.1
					t=$((t + 1))
					[ $t -lt 1200 ] || die "nestquant switch hold did not get ready"
				done
				i=$((i + 1))
			done
			rss=0 pss=0 pssf=0 per=""
			for p in $pids; do
				r=$(smaps "$p" Rss) s=$(smaps "$p" Pss) sf=$(smaps "$p" Pss_File)
				rss=$((rss + r)) pss=$((pss + s)) pssf=$((pssf + ${sf:-0}))
				per="$per${per:+, }{\"pid\": $p, \"rss\": $r, \"pss\": $s, \"pss_file\": ${sf:-0}}"
			done
			printf '%s{"level": "%s", "processes": %d, "rss_total": %d, "pss_total": %d, "pss_file_total": %d, "per_process": [%s]}' \
				"$sep" "$level" "$n" "$rss" "$pss" "$pssf" "$per" >>"$out"
			sep=", "
			for p in $pids; do kill -TERM "$p"; done
			for p in $pids; do wait "$p" || true; done
			rm -f "$work"/hold.*.out
		done
	done
	printf ']}\n' >>"$out"
	mv "$out" "$work/share-$m.json"
}

phase_report() {
	/usr/bin/python3 scripts/switch-report.py --work "$work" --out "$SWITCH_OUT" \
		--label "$SWITCH_LABEL" --cycles "$SWITCH_CYCLES"
}

for phase in $(echo "$SWITCH_PHASES" | tr ',' ' '); do
	command -v "phase_$phase" >/dev/null 2>&1 || die "unknown phase '$phase'"
	"phase_$phase"
done
