#!/bin/sh
# A short libFuzzer run of the .nq reader inside `make check` (the long one is
# `make fuzz`, FUZZ_SECONDS=60 by default).  Skips when clang cannot link
# libFuzzer (Debian: libclang-rt-14-dev).
set -u
O=${NQ_BUILD:-${O:-build}}
secs=${FUZZ_SMOKE_SECONDS:-15}
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
env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS make -s --no-print-directory O="$O" fuzz-build || exit 1
rm -rf "$O/fuzz/smoke"
exec tests/fuzz/run.sh "$O/fuzz/fuzz_nq_reader" "$secs" "$O/fuzz/smoke" \
	tests/corpus/format-good tests/corpus/format-bad
