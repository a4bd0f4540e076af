#!/bin/sh
# `make install` into a temporary DESTDIR: the tree a packager would ship.
# Asserts every file, mode and symlink, the pc file, the systemd unit and the
# man page (one section per verb the CLI lists); then builds a program against
# the installed tree with pkg-config (shared, and static through
# Libs.private), runs it on tests/corpus/format-good/sample.nq and checks the
# level count it prints; builds and runs the installed example; uninstalls.
set -u
O=${NQ_BUILD:-${O:-build}}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

command -v pkg-config >/dev/null 2>&1 || { echo "pkg-config is not installed"; exit 77; }
if nm -D "$O/libnestquant.so" 2>/dev/null | grep -q '__asan_\|__ubsan_'; then
	echo "sanitizer build: programs linked against it need the sanitizer runtime (run it in a plain build)"
	exit 77
fi
root=$tmp/root
prefix=/usr/local
P=$root$prefix
# A make of its own: the parent's jobserver is not ours to use.
mk() { env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS make -s --no-print-directory O="$O" "$@"; }
mk install DESTDIR="$root" PREFIX=$prefix >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; fail "make install"; }

# --- the tree: every file with its mode, and nothing else -----------------
expect_mode() {	# MODE PATH
	[ -f "$P/$2" ] || fail "$2 is not installed"
	m=$(stat -c %a "$P/$2")
	[ "$m" = "$1" ] || fail "$2 has mode $m, expected $1"
}
expect_mode 755 bin/nestquant
expect_mode 755 lib/libnestquant.so.0.1.0
expect_mode 644 lib/libnestquant.a
expect_mode 644 include/nestquant.h
expect_mode 644 lib/pkgconfig/nestquant.pc
expect_mode 644 lib/nestquant/monitor.bpf.o
expect_mode 644 lib/systemd/system/nestquant-monitor.service
expect_mode 644 share/man/man1/nestquant.1
expect_mode 644 share/doc/nestquant/README.md
expect_mode 644 share/doc/nestquant/format/SPEC.md
expect_mode 644 share/doc/nestquant/examples/classify.c
[ "$(readlink "$P/lib/libnestquant.so.0")" = libnestquant.so.0.1.0 ] || fail "libnestquant.so.0 -> $(readlink "$P/lib/libnestquant.so.0")"
[ "$(readlink "$P/lib/libnestquant.so")" = libnestquant.so.0 ] || fail "libnestquant.so -> $(readlink "$P/lib/libnestquant.so")"
outside=$(cd "$root" && find . ! -type d | grep -v "^\.$prefix/" || true)
[ -z "$outside" ] || fail "files outside PREFIX: $outside"
extra=$(cd "$P" && find . ! -type d ! -path './share/doc/nestquant/*' | sort | grep -vxF -e ./bin/nestquant \
	-e ./lib/libnestquant.so.0.1.0 -e ./lib/libnestquant.so.0 -e ./lib/libnestquant.so \
	-e ./lib/libnestquant.a -e ./include/nestquant.h -e ./lib/pkgconfig/nestquant.pc \
	-e ./lib/nestquant/monitor.bpf.o -e ./lib/systemd/system/nestquant-monitor.service \
	-e ./share/man/man1/nestquant.1 || true)
[ -z "$extra" ] || fail "unexpected files: $extra"

# --- the shared library: soname, and only the public API exported ---------
if command -v readelf >/dev/null 2>&1; then
	readelf -d "$P/lib/libnestquant.so.0.1.0" | grep -q 'SONAME.*\[libnestquant\.so\.0\]' ||
		fail "soname is not libnestquant.so.0"
	hidden=$(nm -D --defined-only "$P/lib/libnestquant.so.0.1.0" | awk '{print $3}' |
		grep -v '^nq_' || true)
	[ -z "$hidden" ] || fail "exported symbols outside nq_*: $hidden"
	api=$(grep -c '^NQ_API' "$P/include/nestquant.h")
	nexp=$(nm -D --defined-only "$P/lib/libnestquant.so.0.1.0" | grep -c ' T nq_')
	[ "$nexp" -ge "$api" ] || fail "$nexp exported functions, the header declares $api"
fi

# --- pc file, unit, BPF object, man page ----------------------------------
pc=$P/lib/pkgconfig/nestquant.pc
grep -qx "prefix=$prefix" "$pc" || fail "pc: prefix"
grep -qx 'libdir=${prefix}/lib' "$pc" || fail "pc: libdir"
grep -qx 'includedir=${prefix}/include' "$pc" || fail "pc: includedir"
grep -qx 'Version: 0.1.0' "$pc" || fail "pc: Version"
grep -qx 'Libs: -L${libdir} -lnestquant' "$pc" || fail "pc: Libs"
grep -qx 'Cflags: -I${includedir}' "$pc" || fail "pc: Cflags"
for l in -lbpf -lelf -lz -lpthread -lm; do
	grep -q "^Libs.private:.* $l\( \|$\)" "$pc" || fail "pc: Libs.private lacks $l"
done
unit=$P/lib/systemd/system/nestquant-monitor.service
grep -qx "ExecStart=$prefix/bin/nestquant monitor load \$NQ_MONITOR_ARGS" "$unit" || fail "unit: ExecStart"
grep -qx "ExecStop=$prefix/bin/nestquant monitor unload" "$unit" || fail "unit: ExecStop"
if command -v systemd-analyze >/dev/null 2>&1; then
	systemd-analyze verify "$unit" 2>&1 | grep -v "nestquant.*No such file\|Command .* is not executable" |
		grep -i "error\|invalid" && fail "systemd-analyze verify"
fi
head -c 4 "$P/lib/nestquant/monitor.bpf.o" | od -An -c | grep -q 'E   L   F' || fail "monitor.bpf.o is not ELF"
verbs=$("$P/bin/nestquant" --help | sed -n '/^verbs:/,/^$/p' | sed -n 's/^  \([a-z][a-z0-9-]*\)  .*/\1/p')
[ -n "$verbs" ] || fail "nestquant --help lists no verbs"
for v in $verbs; do
	grep -qx ".SS nestquant $v" "$P/share/man/man1/nestquant.1" || fail "man page has no section for '$v'"
done
if command -v man >/dev/null 2>&1; then
	MANWIDTH=80 man -l "$P/share/man/man1/nestquant.1" 2>"$tmp/man.err" >"$tmp/man.txt" || fail "man -l"
	[ ! -s "$tmp/man.err" ] || { cat "$tmp/man.err"; fail "man page warnings"; }
	grep -q '^NAME' "$tmp/man.txt" || fail "man page renders without NAME"
fi

# --- a program built against the installed tree ---------------------------
cat >"$tmp/levels.c" <<'C'
#include <stdio.h>
#include <nestquant.h>
int main(int argc, char **argv)
{
	struct nq_model *m;

	if (argc != 2 || nq_model_open(argv[1], NULL, &m) < 0) {
		fprintf(stderr, "open: %s\n", nq_last_error());
		return 1;
	}
	printf("levels %u bits", nq_model_level_count(m));
	for (unsigned int i = 0; i < nq_model_level_count(m); i++)
		printf(" %d", nq_model_level_bits(m, i));
	printf("\n");
	nq_model_close(m);
	return 0;
}
C
export PKG_CONFIG_PATH=$P/lib/pkgconfig PKG_CONFIG_LIBDIR=$P/lib/pkgconfig
pc_args="--define-variable=prefix=$P nestquant"
[ "$(pkg-config --modversion nestquant)" = 0.1.0 ] || fail "pkg-config --modversion"
cflags=$(pkg-config --cflags $pc_args | sed "s/ *$//") && libs=$(pkg-config --libs $pc_args) || fail "pkg-config"
[ "$cflags" = "-I$P/include" ] || fail "pkg-config --cflags gave '$cflags'"
cc -Wall -Werror $cflags "$tmp/levels.c" -o "$tmp/levels" $libs || fail "build against the installed .so"
readelf -d "$tmp/levels" 2>/dev/null | grep -q 'NEEDED.*\[libnestquant\.so\.0\]' ||
	fail "the program does not need libnestquant.so.0"
sample=${NQ_SRCDIR:-.}/tests/corpus/format-good/sample.nq
out=$(LD_LIBRARY_PATH=$P/lib "$tmp/levels" "$sample") || fail "run (shared): $out"
[ "$out" = "levels 2 bits 6 8" ] || fail "shared build printed '$out', expected 'levels 2 bits 6 8'"

# Static: the sysroot form of the same pc file, libnestquant.a and Libs.private.
static_libs=$(PKG_CONFIG_SYSROOT_DIR=$root pkg-config --static --libs nestquant) || fail "pkg-config --static"
case $static_libs in *"-L$P/lib"*) ;; *) fail "sysroot pkg-config gave '$static_libs'" ;; esac
cc $(PKG_CONFIG_SYSROOT_DIR=$root pkg-config --cflags nestquant) "$tmp/levels.c" -o "$tmp/levels-static" \
	$(echo "$static_libs" | sed "s|-lnestquant|$P/lib/libnestquant.a|") || fail "static build from Libs.private"
readelf -d "$tmp/levels-static" | grep -q 'libnestquant' && fail "static build still needs libnestquant.so"
out=$("$tmp/levels-static" "$sample") || fail "run (static): $out"
[ "$out" = "levels 2 bits 6 8" ] || fail "static build printed '$out'"

# The installed example, as a user copies it.
cc -Wall $cflags "$P/share/doc/nestquant/examples/classify.c" -o "$tmp/classify" $libs || fail "build classify.c"
python3 - "$tmp/in.npy" <<'PY' || fail "write the input .npy"
import struct, sys
h = "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 3, 16, 16), }"
h += " " * ((64 - (10 + len(h) + 1) % 64) % 64) + "\n"
open(sys.argv[1], "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode() + bytes(i * 7 % 256 for i in range(768)))
PY
LD_LIBRARY_PATH=$P/lib "$tmp/classify" "$sample" "$tmp/in.npy" >"$tmp/classify.out" 2>&1 || { cat "$tmp/classify.out"; fail "classify"; }
grep -q '^.*: 2 levels' "$tmp/classify.out" || fail "classify: no level count"
[ "$(grep -c '^level [01] ([68]-bit): top-1 class [0-9]' "$tmp/classify.out")" = 2 ] || { cat "$tmp/classify.out"; fail "classify: no top-1 per level"; }

# --- uninstall leaves no file behind --------------------------------------
mk uninstall DESTDIR="$root" PREFIX=$prefix >"$tmp/uninstall.log" 2>&1 || { cat "$tmp/uninstall.log"; fail "make uninstall"; }
left=$(find "$root" ! -type d)
[ -z "$left" ] || fail "left after uninstall: $left"
echo "install tree: $(echo "$verbs" | wc -w) verbs in the man page, shared and static builds print '$out'"
