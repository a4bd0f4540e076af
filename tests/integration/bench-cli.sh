#!/bin/sh
# `nestquant bench` on a real .nq file (the format library's sample model):
# the statistics are consistent with the samples they come from, levels are
# measured in the order asked, bad arguments are refused, and the --serve
# protocol that `make bench-infer` drives (run / out / input / errors) answers
# as documented, on the input it was given.
# Exit 0 pass, 77 skip (last line says why), other = fail.
set -u

O=${O:-build}
B=${NQ_BUILD:-$O}
NQ=${NESTQUANT:-$B/nestquant}
GEN=$B/tests/tools/write-sample-nq
PY=/usr/bin/python3
TMP=$(mktemp -d /tmp/nqtest-bench.XXXXXX)
trap 'rm -rf "$TMP"' EXIT INT TERM

skip() { echo "$1"; exit 77; }
fail() { echo "FAIL: $*"; [ -f "$TMP/out" ] && tail -n 20 "$TMP/out"; exit 1; }

[ -x "$NQ" ] || fail "no $NQ"
[ -x "$GEN" ] || skip "no $GEN (make check-build builds it)"
[ -x "$PY" ] || skip "needs $PY to read the JSON output"
"$NQ" bench --help >/dev/null 2>&1 || fail "no bench verb in $NQ"

"$GEN" "$TMP/m.nq" --levels 4,6,8 || fail "write-sample-nq"

# --json: two levels in the order given, every number derived from the samples.
"$NQ" bench "$TMP/m.nq" --level 8,6 --iters 7 --warmup 1 --threads 1 --json >"$TMP/j" 2>"$TMP/out" ||
	fail "bench --json"
$PY - "$TMP/j" <<'PYEOF' || fail "bench --json: $(cat "$TMP/j")"
import json, math, sys
d = json.load(open(sys.argv[1]))
assert d["iters"] == 7 and d["warmup"] == 1, d
assert d["threads_requested"] == 1, d
assert d["input_shape"] == [1, 3, 16, 16] and d["output_shape"] == [1, 10], d
assert [l["bits"] for l in d["levels"]] == [4, 6, 8], d["levels"]
assert d["isa"], "no isa"
r = d["results"]
assert [x["bits"] for x in r] == [8, 6] and [x["level"] for x in r] == [2, 1], r
for x in r:
    s = sorted(x["samples_ms"])
    assert len(s) == 7 and s[0] > 0, s
    assert math.isclose(x["median_ms"], s[3], rel_tol=1e-6), (x["median_ms"], s)
    assert x["p99_ms"] == x["max_ms"] == s[-1], x          # nearest rank, n < 100
    assert x["min_ms"] == s[0], x
    assert math.isclose(x["mean_ms"], sum(s) / 7, rel_tol=1e-4, abs_tol=2e-6), x
    assert math.isclose(x["throughput_per_s"], 1e3 / x["mean_ms"], rel_tol=1e-3), x
    assert 0 < x["cores_used"] <= 1024, x
PYEOF

# Human output: one row per level; 'all' means every level, highest first.
"$NQ" bench "$TMP/m.nq" --level all --iters 3 >"$TMP/out" 2>&1 || fail "bench --level all"
[ "$(grep -cE '^ +[0-9]+ +[0-9]+ +[0-9.]+ ' "$TMP/out")" -eq 3 ] || fail "--level all: 3 rows expected"
grep -A1 'median ms' "$TMP/out" | tail -n 1 | grep -qE '^ +2 +8 ' || fail "--level all: level 2 first"

# Refusals.
"$NQ" bench "$TMP/m.nq" --level 5 >"$TMP/out" 2>&1 && fail "--level 5 accepted on a 4|6|8 model"
grep -q 'level 5' "$TMP/out" || fail "--level 5: message does not name the level"
"$NQ" bench "$TMP/m.nq" --iters 0 >"$TMP/out" 2>&1
[ $? -eq 2 ] || fail "--iters 0 not refused with status 2"
"$NQ" bench "$TMP/m.nq" --iters 3x >"$TMP/out" 2>&1
[ $? -eq 2 ] || fail "--iters 3x not refused with status 2"
"$NQ" bench "$TMP/no-such.nq" >"$TMP/out" 2>&1 && fail "a missing model file accepted"

# --serve: an input whose top class we know from `nestquant run`.
$PY - "$TMP" <<'PYEOF' || fail "writing inputs"
import struct, sys
d = sys.argv[1]
def npy(path, vals, shape):
    dims = ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "")
    h = "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % dims
    h += " " * (63 - (10 + len(h)) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode())
        f.write(struct.pack("<%df" % len(vals), *vals))
vals = [float((i * 37 + 11) % 256) for i in range(3 * 16 * 16)]
npy(d + "/x.npy", vals, (1, 3, 16, 16))
npy(d + "/short.npy", vals[:100], (100,))
PYEOF
"$NQ" run "$TMP/m.nq" --input "$TMP/x.npy" --level 6 --json >"$TMP/run" 2>&1 || fail "run"
top=$(sed -n 's/.*"top": \[{"class": \([0-9]*\).*/\1/p' "$TMP/run")
[ -n "$top" ] || fail "run --json gave no top class: $(cat "$TMP/run")"

printf 'run 8 4\ninput %s\nout 6\nrun 5 1\ninput %s\nbogus\nrun part 2\ncpu\nquit\nrun 8 1\n' \
	"$TMP/x.npy" "$TMP/short.npy" |
	"$NQ" bench "$TMP/m.nq" --serve >"$TMP/serve" 2>"$TMP/out" || fail "bench --serve"
$PY - "$TMP/serve" "$top" <<'PYEOF' || fail "bench --serve: $(cat "$TMP/serve")"
import json, sys
lines = open(sys.argv[1]).read().splitlines()
top = int(sys.argv[2])
assert len(lines) == 9, lines                    # header + 8 answers; nothing after quit
info = json.loads(lines[0])
assert info["output_shape"] == [1, 10] and len(info["levels"]) == 3, info
ok = lines[1].split()
assert ok[0] == "ok" and len(ok) == 5 and all(float(v) > 0 for v in ok[1:]), lines[1]
assert lines[2] == "ok", lines[2]
out = [float(v) for v in lines[3].split()[1:]]
assert lines[3].startswith("ok ") and len(out) == 10, lines[3]
assert max(range(10), key=lambda i: (out[i], -i)) == top, (out, top)
assert lines[4] == "err no level 5", lines[4]
assert lines[5].startswith("err ") and "short.npy" in lines[5], lines[5]
assert lines[6].startswith("err unknown command"), lines[6]
ok = lines[7].split()
assert ok[0] == "ok" and len(ok) == 3, lines[7]
cpu = lines[8].split()
assert cpu[0] == "ok" and len(cpu) == 2 and float(cpu[1]) > 0, lines[8]
PYEOF
grep -q 'want 768 float32 values' "$TMP/out" || fail "short input: stderr does not say what is wanted"

echo "bench CLI: ok"
exit 0
