#!/bin/sh
# The arm64 NEON kernels against the scalar oracle: the cross-compiled
# check_kernels (runtime/kernels/kernels.mk) run under qemu-user.
O=${NQ_BUILD:-build}
bin=$O/arm64/check_kernels
if ! command -v qemu-aarch64-static >/dev/null 2>&1; then
	echo "skip: qemu-aarch64-static is not installed (Debian: qemu-user-static)"
	exit 77
fi
if [ ! -x "$bin" ]; then
	echo "skip: $bin not built (aarch64-linux-gnu-gcc missing; Debian: gcc-aarch64-linux-gnu)"
	exit 77
fi
out=$(qemu-aarch64-static "$bin" 2>&1)
rc=$?
echo "$out" | grep -v '^SKIP .*: \(avx2\|avx512\):' | tail -n 20
if echo "$out" | grep -q 'neon: '; then
	echo "FAIL: the NEON table was skipped on arm64"
	exit 1
fi
if [ $rc -ne 0 ] || ! echo "$out" | grep -q 'Checks: [0-9]*, Failures: 0, Errors: 0'; then
	echo "FAIL: NEON kernels differ from the oracle under qemu-aarch64"
	exit 1
fi
exit 0
