#!/bin/sh
# Time `nestquant convert` on the ImageNet-shaped ResNet-18 with random weights
# (models/cache/resnet18.onnx from `make bench-models`), SQuant rounding,
# levels 8|6, data-free calibration (uniform noise: there is no ImageNet here),
# and write docs/bench-convert.json.  Target (issue 3): <= 60 s on 2 cores.
#
#   O=build scripts/bench-convert.sh [MODEL.onnx]
#   CALIB_COUNT (default 32), THREADS (default 2), OUT (default docs/bench-convert.json)
set -eu
O=${O:-build}
MODEL=${1:-models/cache/resnet18.onnx}
CALIB_COUNT=${CALIB_COUNT:-32}
THREADS=${THREADS:-2}
OUT=${OUT:-docs/bench-convert.json}
[ -f "$MODEL" ] || { echo "bench-convert: $MODEL is missing; run 'make bench-models BENCH_MODELS=resnet18' first" >&2; exit 1; }
work=$O/bench-convert
mkdir -p "$work"
"$O/nestquant" convert "$MODEL" -o "$work/resnet18.nq" --levels 8,6 --rounding squant \
	--calib none --calib-count "$CALIB_COUNT" --threads "$THREADS" --json >"$work/summary.json"
/usr/bin/python3 - "$work/summary.json" "$OUT" "$MODEL" "$CALIB_COUNT" "$THREADS" <<'PY'
import datetime, json, os, platform, sys
s = json.load(open(sys.argv[1]))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
load = open("/proc/loadavg").read().split()[0]
total = s["seconds"]["total"]
r = {
    "benchmark": "nestquant convert, ImageNet-shaped ResNet-18 (random weights)",
    "command": f"nestquant convert {os.path.basename(sys.argv[3])} --levels 8,6 --rounding squant "
               f"--calib none --calib-count {sys.argv[4]} --threads {sys.argv[5]}",
    "date": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
    "host": {"cpu": cpu, "cpus": os.cpu_count(), "machine": platform.machine(), "loadavg_1min_at_end": float(load)},
    "weights": s["weights"], "layers": len(s["layers"]), "file_size": s["file_size"],
    "seconds": s["seconds"],
    "target_seconds": 60, "pass": total <= 60,
}
json.dump(r, open(sys.argv[2], "w"), indent=2)
open(sys.argv[2], "a").write("\n")
print(f"bench-convert: {total:.1f} s total (load {s['seconds']['load']:.1f}, calibrate "
      f"{s['seconds']['calibrate']:.1f}, quantize {s['seconds']['quantize']:.1f}, write "
      f"{s['seconds']['write']:.1f}); target 60 s: {'PASS' if r['pass'] else 'MISS'} -> {sys.argv[2]}")
PY
