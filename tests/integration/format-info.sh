#!/bin/sh
# `nestquant info` on a real file written by the format library: the text
# report, valid JSON with the right numbers, --verify, and the error format.
set -u
O=${NQ_BUILD:-${O:-build}}
NQ=$O/nestquant
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

command -v python3 >/dev/null 2>&1 || { echo "python3 is not installed (needed to check the JSON)"; exit 77; }
"$O/tests/tools/write-sample-nq" "$tmp/m.nq" --levels 4,6,8 || fail "write-sample-nq"

"$NQ" info "$tmp/m.nq" >"$tmp/text" || fail "info exited $?"
grep -q '^format: *1\.0 ' "$tmp/text" || fail "no format line"
grep -q 'levels (3)' "$tmp/text" || fail "no levels line"
grep -Eq '^ +0 +conv1 +conv +8x27 +3x3 g1 ' "$tmp/text" || fail "no conv1 row"

"$NQ" info --json --verify "$tmp/m.nq" >"$tmp/json" || fail "info --json exited $?"
python3 -m json.tool "$tmp/json" >/dev/null || fail "invalid JSON"
python3 - "$tmp/json" "$tmp/m.nq" <<'PY' || fail "JSON values"
import json, os, sys
j = json.load(open(sys.argv[1]))
size = os.path.getsize(sys.argv[2])
assert j["size"] == size, (j["size"], size)
assert j["regions_verified"] is True
bits = [l["bits"] for l in j["levels"]]
assert bits == [4, 6, 8], bits
# resident bytes: metadata + regions 0..k; the last level is the whole file
assert j["levels"][-1]["resident_bytes"] == size
for a, b in zip(j["levels"], j["levels"][1:]):
    assert b["resident_bytes"] == a["resident_bytes"] + b["region_bytes"]
    assert b["region_offset"] == a["region_offset"] + a["region_bytes"]
fc = [l for l in j["layers"] if l["name"] == "fc"][0]
assert (fc["op"], fc["oc"], fc["k"]) == ("gemm", 10, 8), fc
# plane 0 is 4-bit signed; exact residuals are 3 bits (2-bit steps + 1)
assert [(p["bits"], p["signed"]) for p in fc["planes"]] == [(4, True), (3, True), (3, True)]
assert fc["planes"][0]["bytes"] == 10 * 4   # ceil(8 * 4 / 8) per row
assert j["metadata"]["convert.levels"] == "8|6|4"
PY

bad=tests/corpus/format-bad
"$NQ" info "$bad/cycle.nq" >"$tmp/out" 2>"$tmp/err" && fail "cycle.nq accepted"
[ $? -eq 1 ] || fail "exit code for a bad file"
grep -qx "nestquant info: $bad/cycle.nq: node 1 (conv1): input tensor 3 is produced later (cycle)" "$tmp/err" ||
	fail "error line: $(cat "$tmp/err")"
"$NQ" info "$bad/region-checksum.nq" >/dev/null || fail "region-checksum.nq should open without --verify"
"$NQ" info --verify "$bad/region-checksum.nq" >/dev/null 2>"$tmp/err" && fail "--verify missed a bad region"
grep -q "level 1 region: checksum mismatch" "$tmp/err" || fail "verify message: $(cat "$tmp/err")"
"$NQ" info --bogus "$tmp/m.nq" 2>/dev/null; [ $? -eq 2 ] || fail "unknown option should exit 2"
echo "info: text, JSON and errors as expected"
