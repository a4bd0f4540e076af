#!/bin/sh
# A short libFuzzer run of every fuzz target inside `make check`
# (FUZZ_SMOKE_SECONDS each, default 5), seeded with the committed corpus, so
# every crash ever found and committed as a regression file is replayed.  The
# long runs are `make fuzz` (FUZZ_SECONDS).  Skips when clang cannot link
# libFuzzer (Debian: libclang-rt-14-dev).
set -u
O=${NQ_BUILD:-${O:-build}}
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
command -v clang >/dev/null 2>&1 || { echo "clang is not installed"; exit 77; }
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' >"$probe/p.c"
if ! clang -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" >"$probe/log" 2>&1; then
	cat "$probe/log"
	echo "clang cannot link libFuzzer here (install libclang-rt-14-dev)"
	exit 77
fi
# A make of its own: the parent's jobserver is not ours to use.
exec env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS make -s --no-print-directory O="$O" \
	FUZZ_SMOKE_SECONDS="${FUZZ_SMOKE_SECONDS:-5}" fuzz-smoke
