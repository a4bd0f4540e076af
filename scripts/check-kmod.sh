#!/bin/sh
# SPDX-License-Identifier: MIT
# make check-kmod: build nestquant.ko for Debian's own kernels and test it
# inside each of them, booted in qemu (TCG; this host's KVM hangs guests).
#
#   scripts/check-kmod.sh [KVER...]	default: the newest 6.1 and 6.12 kernels,
#					installing 6.12 from bookworm-backports
#
# Per kernel: the module is built (W=1, warnings fail the case) in
# $O/kmod/<kver>/src, the kernel's vmlinuz is decompressed once to
# $O/kmod/<kver>/vmlinux (booting the ELF saves ~5 s of xz per boot), and an
# initramfs carries busybox, tests/kmod/init, the module and the static test
# programs.  The guest prints RESULT lines; any FAIL fails this script.  A
# kernel that cannot be installed or booted is reported as SKIP with the
# reason.  Measurements go to $O/kmod/perf-<kver>.txt.
#
# Exit: 0 all ran cases passed, 1 a failure, 77 nothing could run.
set -u
# Run from make: the kernel build must not inherit our O= (its output dir).
unset MAKEFLAGS MFLAGS MAKELEVEL
cd "$(dirname "$0")/.."
O=${O:-build}
W=$O/kmod
QEMU_TIMEOUT=${QEMU_TIMEOUT:-180}
QEMU_CPU=${QEMU_CPU:-}		# guest CPU model (default: qemu64; e.g. max)
NQ_KMOD_APPEND=${NQ_KMOD_APPEND:-}	# extra guest command line, e.g. NQ_LRU_GEN=0
mkdir -p "$W"

npass=0 nfail=0 nskip=0 ran=0
say() { printf '%s\n' "$*"; }
verdict() {	# verdict KVER PASS|FAIL|SKIP NAME [DETAIL]
	case $2 in
	PASS) npass=$((npass + 1)) ;;
	FAIL) nfail=$((nfail + 1)) ;;
	SKIP) nskip=$((nskip + 1)) ;;
	esac
	printf '  %-4s %-14s %s%s\n' "$2" "$1" "$3" "${4:+ ($4)}"
}

# Packages: qemu, busybox-static, cpio, the stock kernel and headers.
if ! scripts/setup-deps.sh kmod >"$W/setup.log" 2>&1; then
	say "check-kmod: SKIP: cannot install the kmod packages: $(tail -n 1 "$W/setup.log")"
	exit 77
fi

newest() { ls -1 /lib/modules 2>/dev/null | grep -E "^$1" | sort -V | tail -n 1; }
if [ $# -eq 0 ]; then
	k61=$(newest '6\.1\.')
	if scripts/setup-kmod-backports.sh >"$W/backports.log" 2>&1; then
		k612=$(scripts/setup-kmod-backports.sh --kver)
	else
		k612=""
		verdict 6.12 SKIP kernel "bookworm-backports 6.12 not installable: $(tail -n 1 "$W/backports.log")"
	fi
	set -- $k61 $k612
fi
[ $# -gt 0 ] || { say "check-kmod: SKIP: no kernel with a build tree under /lib/modules"; exit 77; }

# Static guest programs (kernel-independent), built once.
CC=${CC:-cc}
mkdir -p "$W/bin"
if ! $CC -static -O2 -g -std=gnu11 -Wall -Wextra -D_GNU_SOURCE -iquote runtime -iquote common \
	-o "$W/bin/nq_kmod_test" tests/kmod/nq_kmod_test.c runtime/kmod_region.c \
	common/error.c -lpthread >"$W/bin/build.log" 2>&1 ||
   ! $CC -static -O2 -g -std=gnu11 -Wall -Wextra -D_GNU_SOURCE \
	-o "$W/bin/nq_pressure" tests/kmod/nq_pressure.c >>"$W/bin/build.log" 2>&1; then
	cat "$W/bin/build.log"
	say "check-kmod: FAIL: cannot build the guest test programs"
	exit 1
fi

# The runtime in the guest: a static program linked with libnestquant.a, a
# real model (models/resnet-small.onnx converted data-free; the synthetic
# sample model when the converter is missing) and the outputs of every level
# computed here with the scalar kernels, which the guest must reproduce.
runtime_ok=0
if make --no-print-directory -s O="$O" "$O/libnestquant.a" "$O/nestquant" \
	>"$W/bin/runtime-build.log" 2>&1 &&
   $CC -static -O2 -g -std=gnu11 -Wall -Wextra -D_GNU_SOURCE -Iruntime/include -iquote runtime \
	-o "$W/bin/nq_kmod_runtime" tests/kmod/nq_kmod_runtime.c "$O/libnestquant.a" \
	-luring -lbpf -lelf -lz -lpthread -lm >>"$W/bin/runtime-build.log" 2>&1; then
	model=$W/bin/model.nq
	if [ ! -s "$model" ] || [ models/resnet-small.onnx -nt "$model" ] || [ "$O/nestquant" -nt "$model" ]; then
		if ! "$O/nestquant" convert models/resnet-small.onnx -o "$model" --calib none \
			--quiet >>"$W/bin/runtime-build.log" 2>&1; then
			make --no-print-directory -s O="$O" "$O/tests/tools/write-sample-nq" \
				>>"$W/bin/runtime-build.log" 2>&1 &&
				"$O/tests/tools/write-sample-nq" "$model" >>"$W/bin/runtime-build.log" 2>&1
		fi
	fi
	if [ -s "$model" ] && NQ_ISA=scalar "$W/bin/nq_kmod_runtime" expect "$model" \
		"$W/bin/model.expect" >>"$W/bin/runtime-build.log" 2>&1; then
		strip -o "$W/bin/nq_kmod_runtime.stripped" "$W/bin/nq_kmod_runtime"
		runtime_ok=1
	fi
fi
if [ "$runtime_ok" -ne 1 ]; then
	verdict all FAIL runtime-build "$(tail -n 1 "$W/bin/runtime-build.log")"
fi

# The ELF inside a bzImage: the payload after the xz (6.1) or zstd (6.12)
# magic, decompressed; the decompressors stop at the payload's end.
extract_vmlinux() {
	for fmt in "xz:\3757zXZ\000" "zstd:\050\265\057\375"; do
		tool=${fmt%%:*}
		off=$(LC_ALL=C grep -abo "$(printf "${fmt#*:}")" "$1" 2>/dev/null | head -n 1 | cut -d: -f1)
		[ -n "$off" ] || continue
		tail -c +$((off + 1)) "$1" | $tool -dc 2>/dev/null >"$2.tmp"
		if [ "$(head -c 4 "$2.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
			mv "$2.tmp" "$2"
			return 0
		fi
	done
	rm -f "$2.tmp"
	return 1
}

for kver in "$@"; do
	kd=$W/$kver
	kdir=/lib/modules/$kver/build
	image=/boot/vmlinuz-$kver
	mkdir -p "$kd"
	if [ ! -d "$kdir" ] || [ ! -r "$image" ]; then
		verdict "$kver" SKIP kernel "no $kdir or $image"
		continue
	fi

	# Module, built out of the source tree so two kernels never share objects.
	rm -rf "$kd/src"
	mkdir -p "$kd/src/kmod"
	cp Kbuild "$kd/src/"
	cp kmod/Kbuild kmod/*.c kmod/*.h "$kd/src/kmod/"
	if ! make -C "$kdir" M="$(cd "$kd/src" && pwd)" W=1 modules >"$kd/build.log" 2>&1; then
		verdict "$kver" FAIL build "$(grep -m1 -E 'error' "$kd/build.log")"
		continue
	fi
	if grep -q 'warning:' "$kd/build.log"; then
		verdict "$kver" FAIL build-w1-clean "$(grep -m1 'warning:' "$kd/build.log")"
	else
		verdict "$kver" PASS build-w1-clean
	fi

	# vmlinux, extracted once per kernel image.
	if [ ! -s "$kd/vmlinux" ] || [ "$image" -nt "$kd/vmlinux" ]; then
		if ! extract_vmlinux "$image" "$kd/vmlinux"; then
			verdict "$kver" SKIP boot "cannot decompress $image"
			continue
		fi
	fi

	# initramfs
	root=$kd/initramfs
	rm -rf "$root"
	mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys" "$root/tmp"
	cp /bin/busybox "$root/bin/busybox"
	cp tests/kmod/init "$root/init"
	cp "$kd/src/kmod/nestquant.ko" "$root/"
	cp "$W/bin/nq_kmod_test" "$W/bin/nq_pressure" "$root/bin/"
	if [ "$runtime_ok" -eq 1 ]; then
		cp "$W/bin/nq_kmod_runtime.stripped" "$root/bin/nq_kmod_runtime"
		cp "$W/bin/model.nq" "$W/bin/model.expect" "$root/"
	fi
	mknod "$root/dev/console" c 5 1 2>/dev/null || true
	(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$kd/initramfs.cpio.gz"

	t0=$(date +%s)
	timeout "$QEMU_TIMEOUT" qemu-system-x86_64 -accel tcg ${QEMU_CPU:+-cpu $QEMU_CPU} -m 256M -smp 1 \
		-kernel "$kd/vmlinux" -initrd "$kd/initramfs.cpio.gz" \
		-append "console=ttyS0 panic=-1 quiet NQ_REGION_MB=32 $NQ_KMOD_APPEND" \
		-nographic -no-reboot -nodefaults -serial stdio -monitor none \
		</dev/null 2>&1 | tr -d '\r' >"$kd/guest.log"
	secs=$(( $(date +%s) - t0 ))
	ran=1

	grep '^RESULT ' "$kd/guest.log" >"$kd/results.txt"
	while read -r _ v name detail; do
		detail=${detail#(}
		verdict "$kver" "$v" "$name" "${detail%)}"
	done <"$kd/results.txt"
	if ! grep -q '^NQKMOD_END' "$kd/guest.log"; then
		verdict "$kver" FAIL guest-finished "no end marker after ${secs}s; see $kd/guest.log"
		tail -n 20 "$kd/guest.log" | sed 's/^/    /'
	fi
	{
		echo "# nestquant.ko measurements, guest kernel $kver (qemu TCG, 1 vCPU, 256 MiB)"
		echo "# $(date -u +%Y-%m-%dT%H:%MZ), host $(uname -r); boot + tests ${secs}s"
		echo "# guest: $(grep -m1 '^NQKMOD_LRU_GEN' "$kd/guest.log")${NQ_KMOD_APPEND:+, $NQ_KMOD_APPEND}"
		sed -n 's/^PERF //p' "$kd/guest.log"
	} >"$W/perf-$kver.txt"
done

say "check-kmod: $npass passed, $nfail failed, $nskip skipped (logs and perf-*.txt in $W/)"
[ "$nfail" -eq 0 ] || exit 1
[ "$ran" -eq 1 ] || exit 77
exit 0
