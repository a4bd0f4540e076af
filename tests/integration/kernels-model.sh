#!/bin/sh
# A whole network, every kernel table this CPU can run x 1, 2 and 3 threads:
# the ResNet in models/ converted with three nested levels (8|6|4), run on
# Fashion-MNIST test images at every level; every output must equal the
# scalar oracle's on one thread (the JSON prints each probability), run with
# every ADD as its own node ($NQ_FUSE=0): the runs under test fuse the
# network's 4 residual ADDs into their convs, and must not change a byte.
# Exit 0 pass, 77 skip (last line says why), other = fail.
set -u

O=${O:-build}
B=${NQ_BUILD:-$O}
NQ=${NESTQUANT:-$B/nestquant}
SRC=${NQ_SRCDIR:-.}
TMP=$(mktemp -d /tmp/nqtest-kernels-model.XXXXXX)
trap 'rm -rf "$TMP"' EXIT INT TERM

skip() { echo "$1"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

[ -x "$NQ" ] || fail "no $NQ"
"$NQ" run --help >/dev/null 2>&1 || skip "this build has no 'nestquant run'"
"$NQ" convert "$SRC/models/resnet-small.onnx" -o "$TMP/m.nq" --levels 8,6,4 \
	>"$TMP/convert.log" 2>&1 || { tail -n 5 "$TMP/convert.log"; fail "convert"; }
NQ_ISA=scalar "$NQ" run "$TMP/m.nq" --data fashion-mnist:0 >/dev/null 2>&1 ||
	skip "no Fashion-MNIST test set (Debian: dataset-fashion-mnist)"

fused=$("$NQ" bench "$TMP/m.nq" --iters 1 --warmup 0 --json 2>&1 |
	sed -n 's/.*"fused_adds": \([0-9]*\).*/\1/p')
[ "$fused" = 4 ] || fail "expected the 4 residual ADDs fused, bench says '$fused'"
n=0
for level in 8 6 4; do
	for item in 0 7 123; do
		NQ_FUSE=0 NQ_ISA=scalar NQ_THREADS=1 "$NQ" run "$TMP/m.nq" --data fashion-mnist:$item \
			--level $level --json >"$TMP/ref" 2>&1 || fail "scalar run, level $level"
		for isa in scalar avx2 avx512 neon; do
			NQ_ISA=$isa "$NQ" run "$TMP/m.nq" --data fashion-mnist:0 >/dev/null 2>&1 || continue
			for t in 1 2 3; do
				NQ_ISA=$isa NQ_THREADS=$t "$NQ" run "$TMP/m.nq" --data fashion-mnist:$item \
					--level $level --json >"$TMP/out" 2>&1 || fail "$isa, $t threads, level $level"
				cmp -s "$TMP/ref" "$TMP/out" ||
					fail "$isa with $t threads differs from scalar at level $level, image $item: $(cat "$TMP/out")"
				n=$((n + 1))
			done
		done
	done
done
echo "$n runs identical to the scalar oracle"
