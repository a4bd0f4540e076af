#!/bin/sh
# `nestquant run` and `nestquant eval` end to end on a real .nq file (the
# format library's sample model: Quantize, Conv, depthwise Conv, GAP,
# Flatten, Gemm with s8 logits, Dequantize): top-5 output, levels by bit
# width and by name, bad level refused, JSON summaries, every kernel table
# this build has gives the same answers as the scalar oracle.
# Exit 0 pass, 77 skip (last line says why), other = fail.
set -u

O=${O:-build}
B=${NQ_BUILD:-$O}
NQ=${NESTQUANT:-$B/nestquant}
GEN=$B/tests/tools/write-sample-nq
PY=/usr/bin/python3
TMP=$(mktemp -d /tmp/nqtest-run-eval.XXXXXX)
trap 'rm -rf "$TMP"' EXIT INT TERM

skip() { echo "$1"; exit 77; }
fail() { echo "FAIL: $*"; [ -f "$TMP/out" ] && tail -n 20 "$TMP/out"; exit 1; }

[ -x "$NQ" ] || fail "no $NQ"
[ -x "$GEN" ] || skip "no $GEN (make check-build builds it)"
$PY -c 'import numpy' 2>/dev/null || skip "needs numpy in $PY to write .npy inputs"

"$GEN" "$TMP/m.nq" --levels 4,6,8 || fail "write-sample-nq"
$PY - "$TMP" <<'PYEOF' || fail "writing inputs"
import sys, numpy as np
d = sys.argv[1]
rng = np.random.default_rng(3)
x = rng.integers(0, 256, size=(6, 3, 16, 16)).astype(np.float32)
np.save(d + "/x.npy", x)
np.save(d + "/x1.npy", x[:1])
np.save(d + "/y.npy", np.arange(6, dtype=np.int64) % 10)
PYEOF

"$NQ" run "$TMP/m.nq" --input "$TMP/x1.npy" >"$TMP/out" 2>&1 || fail "run"
grep -q '^input 0: level 2 (8-bit weights)' "$TMP/out" || fail "run: default level is not the full one"
[ "$(grep -c '^  [1-5]\. class' "$TMP/out")" -eq 5 ] || fail "run: no top-5"

"$NQ" run "$TMP/m.nq" --input "$TMP/x.npy" --level part --json >"$TMP/out" 2>&1 || fail "run --json"
[ "$(grep -c '"level": 0, "bits": 4' "$TMP/out")" -eq 6 ] || fail "run --json: 6 items at level 0 expected"

if "$NQ" run "$TMP/m.nq" --input "$TMP/x1.npy" --level 5 >"$TMP/out" 2>&1; then
	fail "--level 5 accepted on a 4|6|8 model"
fi
grep -q 'level 5' "$TMP/out" || fail "--level 5: message does not name the level"

for lv in 4 6 8; do
	"$NQ" eval "$TMP/m.nq" --data "$TMP/x.npy" --labels "$TMP/y.npy" --level $lv --json \
		>"$TMP/eval-$lv" 2>"$TMP/out" || fail "eval --level $lv"
	grep -q "\"bits\": $lv, .*\"count\": 6" "$TMP/eval-$lv" || fail "eval --level $lv: $(cat "$TMP/eval-$lv")"
done
"$NQ" eval "$TMP/m.nq" --data "$TMP/x.npy" --labels "$TMP/y.npy" --limit 2 --json >"$TMP/out" 2>&1 ||
	fail "eval --limit"
grep -q '"count": 2' "$TMP/out" || fail "eval --limit 2 did not stop at 2"

# Every kernel table in this build answers exactly as the scalar oracle.
NQ_ISA=scalar "$NQ" run "$TMP/m.nq" --input "$TMP/x.npy" --json >"$TMP/scalar" 2>&1 || fail "scalar run"
for isa in avx2 avx512 neon; do
	if NQ_ISA=$isa "$NQ" run "$TMP/m.nq" --input "$TMP/x.npy" --json >"$TMP/$isa" 2>"$TMP/out"; then
		cmp -s "$TMP/scalar" "$TMP/$isa" || fail "$isa kernels disagree with scalar"
		echo "  $isa: identical to scalar"
	else
		grep -q "NQ_ISA=$isa" "$TMP/out" || fail "NQ_ISA=$isa failed without saying why"
	fi
done
echo "run/eval CLI: ok"
exit 0
