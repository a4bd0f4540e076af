# bpf/ — the CO-RE pressure monitor (libbpf skeletons).
#
#   make vmlinux-h        regenerate $(O)/gen/vmlinux.h from BTF (VMLINUX_BTF=...)
#   $(O)/bpf/monitor.bpf.o   the BPF object (clang -target bpf, DWARF stripped)
#   $(O)/gen/monitor.skel.h  its libbpf skeleton, included by runtime/monitor.c
#
# vmlinux.h is generated, not checked in: it is 135k lines that differ per
# kernel, and CO-RE makes a header from any BTF-enabled kernel good for all of
# them.  It is made once per build folder (the script prints which BTF it
# read); `make vmlinux-h` remakes it on purpose, never as a side effect.

BPFTOOL ?= bpftool
LLVM_STRIP ?= llvm-strip
VMLINUX_BTF ?= /sys/kernel/btf/vmlinux

# __TARGET_ARCH_* (for bpf_tracing.h) follows the machine $(CC) builds for.
BPF_TARGET_MACHINE := $(shell $(CC) -dumpmachine 2>/dev/null)
BPF_ARCH := $(strip \
	$(if $(filter x86_64-% i%86-%,$(BPF_TARGET_MACHINE)),x86,\
	$(if $(filter aarch64-%,$(BPF_TARGET_MACHINE)),arm64,\
	$(if $(filter arm-%,$(BPF_TARGET_MACHINE)),arm,\
	$(if $(filter riscv64-%,$(BPF_TARGET_MACHINE)),riscv,\
	$(if $(filter powerpc64%,$(BPF_TARGET_MACHINE)),powerpc,\
	$(if $(filter s390x-%,$(BPF_TARGET_MACHINE)),s390,x86)))))))

BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_$(BPF_ARCH) -Wall -Wno-unused-function \
	-I$(O)/gen -Ibpf

VMLINUX_H := $(O)/gen/vmlinux.h
MONITOR_BPF_O := $(O)/bpf/monitor.bpf.o
MONITOR_SKEL := $(O)/gen/monitor.skel.h

LIBNQ_SRCS += runtime/monitor.c runtime/monitor_load.c
LIBNQ_LIBS += -lbpf -lelf -lz
CLI_SRCS += runtime/cli/cmd_monitor.c
GENERATED += $(MONITOR_SKEL)
ALL_TARGETS += $(MONITOR_BPF_O)

.PHONY: vmlinux-h
vmlinux-h: | deps
	$(call msg,VMLINUX,$(VMLINUX_H))
	$(Q)VMLINUX_BTF=$(VMLINUX_BTF) BPFTOOL=$(BPFTOOL) scripts/gen-vmlinux-h.sh $(VMLINUX_H)

$(VMLINUX_H): | deps
	$(call msg,VMLINUX,$@)
	$(Q)VMLINUX_BTF=$(VMLINUX_BTF) BPFTOOL=$(BPFTOOL) scripts/gen-vmlinux-h.sh $@

$(MONITOR_BPF_O): bpf/monitor.bpf.c bpf/monitor.h $(VMLINUX_H) | deps
	$(call msg,BPF,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) $(BPF_CFLAGS) -c $< -o $@
	$(Q)$(LLVM_STRIP) -g $@

$(MONITOR_SKEL): $(MONITOR_BPF_O) bpf/bpf.mk
	$(call msg,GEN-SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< name monitor_bpf > $@.tmp && mv $@.tmp $@
