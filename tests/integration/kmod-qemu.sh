#!/bin/sh
# The kernel-module tests inside real Debian kernels (6.1 and 6.12) booted in
# qemu: the same as `make check-kmod`, run as part of `make check` because
# this machine can run them (the host kernel itself cannot load modules).
# Exit 0 pass, 1 fail, 77 skip (the last line says why).
cd "$(dirname "$0")/../.."
case ${NQ_BUILD:-build} in
*san-*)
	echo "skipped under SAN: the guest programs are static and cannot carry the sanitizer runtime (plain make check runs them)"
	exit 77 ;;
esac
O=${NQ_BUILD:-build} scripts/check-kmod.sh
