# kmod/ — nestquant.ko (Kbuild at the top level: obj-m += kmod/).
#   make kmod [KVER=...|KDIR=...]	build kmod/nestquant.ko for one kernel
#   make check-kmod			build + test it in Debian's 6.1 and 6.12
#					kernels under qemu (scripts/check-kmod.sh)
.PHONY: check-kmod
check-kmod:
	$(Q)O=$(O) scripts/check-kmod.sh
