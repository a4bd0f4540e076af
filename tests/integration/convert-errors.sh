#!/bin/sh
# `nestquant convert` from the command line: a good conversion with --json,
# and every way it can fail leaving no output (and no temporary) behind:
# an unsupported op (named with its node), a bad option (exit 2), missing
# calibration data, and SIGINT in the middle of a conversion (exit 130, an
# existing output untouched).
set -u
O=${NQ_BUILD:-${O:-build}}
NQ=$O/nestquant
SRC=${NQ_SRCDIR:-.}
MODEL=$SRC/tests/data/tiny_cnn.onnx
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
nothing_left() { # no output file and no writer temporary ".NAME.XXXXXX"
	[ ! -e "$tmp/$1" ] || fail "$1 exists after a failed conversion"
	[ -z "$(ls -A "$tmp" | grep '^\.')" ] || fail "temporary left: $(ls -A "$tmp")"
}
command -v python3 >/dev/null 2>&1 || { echo "python3 is not installed (needed to check the JSON)"; exit 77; }

# A good conversion, JSON summary with the numbers the file has.
"$NQ" convert "$MODEL" -o "$tmp/ok.nq" --levels 8,6,4 --calib none --json >"$tmp/ok.json" \
	|| fail "convert exited $?"
python3 - "$tmp/ok.json" "$tmp/ok.nq" <<'PY' || fail "JSON summary"
import json, os, sys
j = json.load(open(sys.argv[1]))
assert j["file_size"] == os.path.getsize(sys.argv[2]), j["file_size"]
assert j["levels"] == [8, 6, 4], j["levels"]
assert abs(j["bits_per_weight"] - 10.0) < 1e-9, j["bits_per_weight"]   # 4 + 3 + 3
assert abs(j["level_bits_per_weight"]["4"] - 4.0) < 1e-9
assert len(j["layers"]) == 5 and j["layers"][0]["plane_bits"] == [4, 3, 3]
for l in j["layers"]:
    s = l["sqnr_db"]
    assert s["8"] > s["6"] > s["4"] > 5, s
assert j["seconds"]["total"] > 0
PY
"$NQ" info "$tmp/ok.nq" | grep -q 'convert.levels *8,6,4' || fail "levels not in the metadata"

# Plane order: 16 x 4 panels for layers with groups = 1, rows for the
# grouped one; --plane-layout rows stores rows everywhere, and both files
# give the same outputs at every level.
"$NQ" convert "$MODEL" -o "$tmp/rows.nq" --levels 8,6,4 --calib none --plane-layout rows \
	--quiet || fail "convert --plane-layout rows exited $?"
"$NQ" info "$tmp/ok.nq" --json >"$tmp/ok.info" || fail "info --json"
"$NQ" info "$tmp/rows.nq" --json >"$tmp/rows.info" || fail "info --json"
python3 - "$tmp/ok.info" "$tmp/rows.info" "$tmp/x.npy" <<'PY' || fail "plane layouts"
import json, random, struct, sys
auto, rows = (json.load(open(p)) for p in sys.argv[1:3])
assert any(l["groups"] != 1 for l in auto["layers"])
for l in auto["layers"]:
    want = "panel16x4" if l["groups"] == 1 else "rows"
    for p in l["planes"]:
        assert p["layout"] == want, (l["name"], p)
        assert (p["row_stride"] == 0) == (want == "panel16x4"), (l["name"], p)
assert all(p["layout"] == "rows" for l in rows["layers"] for p in l["planes"])
# Two inputs of 13 x 13 raw pixels, as a .npy.
random.seed(5)
hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 169), }"
hdr += " " * (63 - (10 + len(hdr)) % 64) + "\n"
with open(sys.argv[3], "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode())
    f.write(struct.pack("<338f", *[random.random() * 255 for _ in range(338)]))
PY
for L in 8 6 4; do
	"$NQ" run "$tmp/ok.nq" --input "$tmp/x.npy" --level $L --json >"$tmp/a.out" || fail "run panel level $L"
	"$NQ" run "$tmp/rows.nq" --input "$tmp/x.npy" --level $L --json >"$tmp/b.out" || fail "run rows level $L"
	cmp -s "$tmp/a.out" "$tmp/b.out" || fail "level $L: panel and row files differ"
done
"$NQ" convert "$MODEL" -o "$tmp/o.nq" --plane-layout diagonal 2>"$tmp/err"
[ $? -eq 2 ] || fail "bad --plane-layout: exit not 2"
grep -q "diagonal" "$tmp/err" || fail "bad --plane-layout not named"

# Unsupported operator: patch op_type "Conv" -> "Cosh" (same length) in a copy.
python3 - "$MODEL" "$tmp/bad.onnx" <<'PY'
import sys
b = open(sys.argv[1], "rb").read()
i = b.index(b"\x22\x04Conv")
open(sys.argv[2], "wb").write(b[:i + 2] + b"Cosh" + b[i + 6:])
PY
"$NQ" convert "$tmp/bad.onnx" -o "$tmp/bad.nq" --calib none 2>"$tmp/err"
rc=$?
[ $rc -eq 1 ] || fail "unsupported op: exit $rc, want 1"
grep -q "Cosh" "$tmp/err" && grep -q "/c1/Conv" "$tmp/err" \
	|| fail "error does not name the node and op: $(cat "$tmp/err")"
nothing_left bad.nq

# Not an ONNX file at all.
echo "hello" >"$tmp/text.onnx"
"$NQ" convert "$tmp/text.onnx" -o "$tmp/text.nq" --calib none 2>"$tmp/err"
[ $? -eq 1 ] || fail "garbage input accepted"
nothing_left text.nq

# Bad options: usage error, exit 2.
"$NQ" convert "$MODEL" -o "$tmp/o.nq" --rounding sideways 2>"$tmp/err"
[ $? -eq 2 ] || fail "bad --rounding: exit not 2"
grep -q "sideways" "$tmp/err" || fail "bad --rounding not named"
"$NQ" convert "$MODEL" -o "$tmp/o.nq" --levels 8,9 2>/dev/null
[ $? -eq 2 ] || fail "bad --levels: exit not 2"
"$NQ" convert "$MODEL" 2>/dev/null
[ $? -eq 2 ] || fail "missing -o: exit not 2"
nothing_left o.nq

# Missing calibration data.
"$NQ" convert "$MODEL" -o "$tmp/c.nq" --calib-data "$tmp/nope.npy" 2>"$tmp/err"
[ $? -eq 1 ] || fail "missing --calib-data: exit not 1"
grep -q "nope.npy" "$tmp/err" || fail "missing file not named"
nothing_left c.nq

# SIGINT during a long calibration: exit 130, the old output is untouched.
cp "$tmp/ok.nq" "$tmp/keep.nq"
"$NQ" convert "$MODEL" -o "$tmp/keep.nq" --calib none --calib-count 200000 --threads 1 \
	2>"$tmp/err" &
pid=$!
sleep 1
kill -INT $pid
wait $pid
rc=$?
[ $rc -eq 130 ] || fail "SIGINT: exit $rc, want 130 ($(cat "$tmp/err"))"
grep -q "interrupted" "$tmp/err" || fail "SIGINT: no message"
cmp -s "$tmp/ok.nq" "$tmp/keep.nq" || fail "SIGINT: the existing output changed"
[ -z "$(ls -A "$tmp" | grep '^\.')" ] || fail "SIGINT: temporary left"
echo "convert-errors: all checks passed"
