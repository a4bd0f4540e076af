#!/bin/sh
# SPDX-License-Identifier: MIT
# NestQuant against ONNX Runtime, side by side in one run (`make bench-infer`).
#
#   scripts/bench-infer.sh        (normally through make; the environment sets it up)
#
# Environment (make passes them; defaults in brackets):
#   O              build folder holding the nestquant binary [build]
#   NESTQUANT      the binary [$O/nestquant]
#   BENCH_MODELS   torchvision ResNets [resnet18,resnet50,resnet101]
#   BENCH_RUNS     timed runs per engine [30]      BENCH_WARMUP  warm-up runs [5]
#   BENCH_THREADS  threads for both engines [2]    BENCH_GAP_MS  idle between turns [10]
#   BENCH_OUT      folder for performance.md and bench-infer.json [docs]
#   BENCH_LABEL    a note printed above the table (e.g. "Smoke run")
#   BENCH_CACHE    where NAME.onnx and NAME-int8.onnx are [models/cache]
#   NQ_CONVERT_ARGS  how the .nq files are made [--levels 8,6 --calib none --calib-count 16 --input-scale 1]
#                  (calibration runs the FP32 executor: 512 samples of ResNet-18
#                  take ~7 min here, and the timing does not depend on them)
#   NQ_ISA         forces NestQuant's kernels (scalar, avx2, avx512, ...)
#
# Steps: node and npm (Debian's, only when missing), ONNX Runtime from the
# committed scripts/peer/package-lock.json into $O/ort-peer (npm ci
# --ignore-scripts: its install script fetches GPU add-ons from a host we
# cannot reach; the CPU library is inside the package), the FP32 and INT8
# ONNX models (`make bench-models` for those missing), the .nq files
# (`nestquant convert`, redone when the converter or the arguments change), then
# scripts/peer/bench-infer.js measures and writes the report.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
O=${O:-build}
NESTQUANT=${NESTQUANT:-$O/nestquant}
BENCH_MODELS=${BENCH_MODELS:-resnet18,resnet50,resnet101}
BENCH_RUNS=${BENCH_RUNS:-30}
BENCH_WARMUP=${BENCH_WARMUP:-5}
BENCH_THREADS=${BENCH_THREADS:-2}
BENCH_GAP_MS=${BENCH_GAP_MS:-10}
BENCH_OUT=${BENCH_OUT:-docs}
BENCH_LABEL=${BENCH_LABEL:-}
NQ_CONVERT_ARGS=${NQ_CONVERT_ARGS:---levels 8,6 --calib none --calib-count 16 --input-scale 1}
MAKE=${MAKE:-make}
cache=${BENCH_CACHE:-models/cache}
peer=$O/ort-peer
work=$O/bench-infer

say() { printf 'bench-infer: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[ -x "$NESTQUANT" ] || die "$NESTQUANT is not built (run make O=$O first)"
"$NESTQUANT" bench --help >/dev/null 2>&1 || die "$NESTQUANT has no 'bench' verb"

# 1. node and npm.  Only when a command is missing: a machine with another
# vendor's nodejs (which bundles npm and conflicts with Debian's) is left alone.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	scripts/setup-deps.sh bench
fi

# 2. The peer, pinned by the lock file; reinstalled only when the lock changes.
mkdir -p "$peer" "$work"
if ! cmp -s scripts/peer/package-lock.json "$peer/package-lock.json" ||
   [ ! -f "$peer/node_modules/onnxruntime-node/package.json" ]; then
	say "installing onnxruntime-node into $peer"
	rm -f "$peer/package-lock.json"
	cp scripts/peer/package.json "$peer/package.json"
	cp scripts/peer/package-lock.json "$peer/package-lock.json.new"
	mv "$peer/package-lock.json.new" "$peer/package-lock.json"
	(cd "$peer" && ONNXRUNTIME_NODE_INSTALL=skip npm ci --ignore-scripts --no-audit --no-fund \
		--loglevel=error >&2) || { rm -f "$peer/package-lock.json"; die "npm ci failed"; }
fi

# 3. The ONNX models: ask models/models.mk for the missing ones only.
missing=""
for m in $(echo "$BENCH_MODELS" | tr ',' ' '); do
	[ -f "$cache/$m.onnx" ] && [ -f "$cache/$m-int8.onnx" ] || missing="$missing,$m"
done
if [ -n "$missing" ]; then
	[ "$cache" = models/cache ] || die "${missing#,}: not in $cache"
	say "exporting ${missing#,} (make bench-models)"
	$MAKE --no-print-directory -C "$top" bench-models BENCH_MODELS="${missing#,}" >&2
fi

# 4. The .nq files, converted from the same FP32 ONNX the peer runs.
for m in $(echo "$BENCH_MODELS" | tr ',' ' '); do
	nq=$work/$m.nq
	# Stale when the ONNX, the converter or the format writer is newer (not
	# merely the binary: it relinks whenever any runtime file changes).
	if [ ! -f "$nq" ] || [ -n "$(find "$cache/$m.onnx" -newer "$nq")" ] ||
	   [ -n "$(find "$O/libnqconvert.a" "$O/format" -name '*.[ao]' -newer "$nq" 2>/dev/null | head -n 1)" ] ||
	   [ "$(cat "$nq.args" 2>/dev/null)" != "$NQ_CONVERT_ARGS" ]; then
		say "converting $m ($NQ_CONVERT_ARGS)"
		# shellcheck disable=SC2086 # NQ_CONVERT_ARGS is a word list
		"$NESTQUANT" convert "$cache/$m.onnx" -o "$nq" $NQ_CONVERT_ARGS --quiet ||
			die "nestquant convert $cache/$m.onnx failed"
		printf '%s\n' "$NQ_CONVERT_ARGS" >"$nq.args"
	fi
done

# 5. Measure, interleaved, and write the report.
mkdir -p "$BENCH_OUT"
set -- --nestquant "$NESTQUANT" --ort "$peer/node_modules" --nq-dir "$work" --cache "$cache" \
	--models "$BENCH_MODELS" --runs "$BENCH_RUNS" --warmup "$BENCH_WARMUP" \
	--threads "$BENCH_THREADS" --gap-ms "$BENCH_GAP_MS" --work "$work" \
	--json "$BENCH_OUT/bench-infer.json" --doc "$BENCH_OUT/performance.md"
[ -z "$BENCH_LABEL" ] || set -- "$@" --label "$BENCH_LABEL"
exec node scripts/peer/bench-infer.js "$@"
