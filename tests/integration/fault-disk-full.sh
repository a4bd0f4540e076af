#!/bin/sh
# Fault: the disk fills up during `nestquant convert`. On a 256 KiB tmpfs the
# 400 KiB output cannot fit: convert must fail naming ENOSPC, leave no
# output and no temporary file behind, and leave a file already at the
# output path byte-identical (the writer renames a temp file into place).
# Exit 0 pass, 77 skip (last line says why), other = fail.
set -u

O=${O:-build}
NQ=${NESTQUANT:-${NQ_BUILD:-$O}/nestquant}
MODEL=${NQ_FAULT_MODEL:-models/resnet-small.onnx}
TMP=$(mktemp -d /var/tmp/nqtest-fault-disk-full.XXXXXX)
MNT=$TMP/mnt

skip() { echo "$1"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }
cleanup() {
	mountpoint -q "$MNT" && umount "$MNT"
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

[ -x "$NQ" ] || fail "no nestquant binary at $NQ"
[ -f "$MODEL" ] || skip "no $MODEL (make models)"
[ "$(id -u)" -eq 0 ] || skip "needs root (mounts a tiny tmpfs)"
mkdir -p "$MNT"
mount -t tmpfs -o size=256k,mode=0755 nqfault "$MNT" 2>"$TMP/err" ||
	skip "cannot mount a tmpfs here: $(cat "$TMP/err")"

# Sanity: the output really is larger than the file system.
"$NQ" convert "$MODEL" -o "$TMP/ref.nq" --calib none --calib-count 16 >/dev/null 2>&1 ||
	fail "convert into $TMP failed"
[ "$(stat -c %s "$TMP/ref.nq")" -gt 262144 ] || skip "output fits in 256 KiB; the test needs a larger model"

# 1. No file at the path: none afterwards, no temp file.
"$NQ" convert "$MODEL" -o "$MNT/x.nq" --calib none --calib-count 16 >"$TMP/out" 2>"$TMP/err" &&
	fail "convert onto a full disk succeeded"
grep -q "No space left on device" "$TMP/err" || fail "message does not name ENOSPC: $(cat "$TMP/err")"
[ -z "$(ls -A "$MNT")" ] || fail "left behind: $(ls -A "$MNT")"

# 2. An existing file at the path stays as it was.
head -c 8192 /dev/urandom >"$MNT/x.nq"
sum=$(sha256sum <"$MNT/x.nq")
"$NQ" convert "$MODEL" -o "$MNT/x.nq" --calib none --calib-count 16 >"$TMP/out" 2>"$TMP/err" &&
	fail "convert over an existing file on a full disk succeeded"
grep -q "No space left on device" "$TMP/err" || fail "message does not name ENOSPC: $(cat "$TMP/err")"
[ "$(sha256sum <"$MNT/x.nq")" = "$sum" ] || fail "the existing x.nq changed"
[ "$(ls -A "$MNT")" = x.nq ] || fail "left behind: $(ls -A "$MNT")"
echo "fault-disk-full: ok ($(head -n 1 "$TMP/err"))"
