#!/bin/sh
# `nestquant eval --data FOLDER` on an ImageNet-style folder of PNGs made from
# 200 Fashion-MNIST test images (10 classes x 20, class folders named so that
# strcmp order is label order; some written as RGB PNGs with equal channels,
# which the 1-channel model averages back to the same grey value).  PNG is
# lossless and --resize 28 on 28x28 images is the identity, so top-1/top-5
# must equal `eval --data X.npy --labels Y.npy` on the same images exactly,
# at the full and the part level.  Also: the default resize (32, crop 28)
# still classifies, and a folder without class folders is refused.
# Exit 0 pass, 77 skip (last line says why), other = fail.
set -u

O=${O:-build}
B=${NQ_BUILD:-$O}
NQ=${NESTQUANT:-$B/nestquant}
PY=/usr/bin/python3
FM=${NQ_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
ONNX=models/resnet-small.onnx
TMP=$(mktemp -d /tmp/nqtest-eval-folder.XXXXXX)
trap 'rm -rf "$TMP"' EXIT INT TERM

skip() { echo "$1"; exit 77; }
fail() { echo "FAIL: $*"; [ -f "$TMP/out" ] && tail -n 20 "$TMP/out"; exit 1; }

[ -x "$NQ" ] || fail "no $NQ"
$PY -c 'import numpy' 2>/dev/null || skip "needs numpy in $PY"
[ -f "$FM/t10k-images-idx3-ubyte.gz" ] || skip "no Fashion-MNIST test set in $FM"
[ -f "$ONNX" ] || skip "no $ONNX"

$PY - "$FM" "$TMP" <<'PYEOF' || fail "writing the image folder"
import gzip, os, struct, sys, zlib
import numpy as np
fm, d = sys.argv[1], sys.argv[2]
with gzip.open(fm + "/t10k-images-idx3-ubyte.gz") as f:
    x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
with gzip.open(fm + "/t10k-labels-idx1-ubyte.gz") as f:
    y = np.frombuffer(f.read(), np.uint8, offset=8)
names = ["tshirt", "trouser", "pullover", "dress", "coat",
         "sandal", "shirt", "sneaker", "bag", "boot"]

def png(path, img):
    def chunk(t, b):
        c = t + b
        return struct.pack(">I", len(b)) + c + struct.pack(">I", zlib.crc32(c))
    h, w = img.shape[:2]
    ctype = 2 if img.ndim == 3 else 0
    raw = b"".join(b"\0" + img[r].tobytes() for r in range(h))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, ctype, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))

xs, ys = [], []
for c in range(10):
    cdir = "%s/set/%d_%s" % (d, c, names[c])
    os.makedirs(cdir)
    for k, i in enumerate(np.nonzero(y == c)[0][:20]):
        img = x[i]
        if k % 5 == 4:
            img = np.repeat(img[:, :, None], 3, axis=2)
        png("%s/%03d.png" % (cdir, k), np.ascontiguousarray(img))
        xs.append(x[i]); ys.append(c)
open(d + "/set/README.txt", "w").write("not an image, not a class\n")
np.save(d + "/x.npy", np.stack(xs)[:, None].astype(np.float32))
np.save(d + "/y.npy", np.array(ys, np.int64))
os.makedirs(d + "/empty/no-images")
PYEOF

"$NQ" convert "$ONNX" -o "$TMP/m.nq" --calib none --calib-count 16 --quiet >"$TMP/out" 2>&1 ||
	fail "convert"

j() { sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p" "$TMP/out"; }
for lv in full part; do
	"$NQ" eval "$TMP/m.nq" --data "$TMP/x.npy" --labels "$TMP/y.npy" --level $lv --json \
		>"$TMP/out" 2>&1 || fail "eval npy --level $lv"
	n1=$(j top1) n5=$(j top5) nc=$(j count)
	"$NQ" eval "$TMP/m.nq" --data "$TMP/set" --resize 28 --level $lv --json \
		>"$TMP/out" 2>&1 || fail "eval folder --level $lv"
	f1=$(j top1) f5=$(j top5) fc=$(j count)
	echo "level $lv: npy top-1 $n1 top-5 $n5 ($nc); folder top-1 $f1 top-5 $f5 ($fc)"
	[ "$nc" = 200 ] && [ "$fc" = 200 ] || fail "counts $nc / $fc, expected 200"
	[ "$n1" = "$f1" ] && [ "$n5" = "$f5" ] || fail "folder and npy disagree at level $lv"
	awk "BEGIN { exit !($f1 > 0.6) }" || fail "top-1 $f1 is too low to be a working model"
done

"$NQ" eval "$TMP/m.nq" --data "$TMP/set" --limit 30 --json >"$TMP/out" 2>&1 ||
	fail "eval folder, default resize"
d1=$(j top1)
echo "default resize (32, centre crop 28), first 30: top-1 $d1"
[ "$(j count)" = 30 ] || fail "--limit 30 gave $(j count) inputs"
awk "BEGIN { exit !($d1 > 0.3) }" || fail "default resize top-1 $d1"

"$NQ" eval "$TMP/m.nq" --data "$TMP/empty" >"$TMP/out" 2>&1 && fail "a folder without images was accepted"
grep -q 'no class folders' "$TMP/out" || fail "no clear error for an empty folder"
echo "eval-folder: ok"
